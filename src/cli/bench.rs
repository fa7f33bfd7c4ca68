//! `kickq bench`: its arguments, and running the chosen scenarios with cleanup on error or signal, printing a
//! table (and, with `--json`, one JSON object per scenario).

use crate::bench::{BenchEnv, BenchSettings, Report, Scenario};
use crate::cli::flags::BrokerArgs;
use crate::config::DEFAULT_RATE;
use crate::secret::Secret;
use anyhow::{bail, Context};
use std::io::Write;
use tokio_util::sync::CancellationToken;

/// Default PostgreSQL the bench creates and drops the ledger run's database through.
pub(crate) const DEFAULT_BENCH_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Measure kickq against a baseline on the local broker and an in-process
/// strict mock-zego; every figure comes with the baseline's and their ratio
/// from the same run, and the target beside it.
///
/// Scenarios: sweep (coalescing and pacing of 20,000 shuffled one-user
/// messages under the API limit, and again with the audit ledger), light
/// (latency at one kick per 100 ms), drain (users per second with the API
/// unlimited, against a bare consume-and-ack loop), backlog (peak RSS of
/// `kickq run` draining a million messages), enqueue (`kickq enqueue`
/// lines per second), lanes (live-kick latency while a bulk sweep saturates
/// the budget, against one FIFO queue), apps (N apps at their rates in one
/// `kickq run`, against N × L), wan (the sweep with the API 50, 200 and
/// 400 ms away, the rate window counting calls from their estimated arrival
/// against counting from the answer, and live-kick latency at 200 ms). Each
/// runs in a namespace of its own, deleted at the end.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct BenchArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    /// Which scenario to run.
    #[arg(long, value_enum, default_value_t = ScenarioArg::All)]
    scenario: ScenarioArg,
    /// The API limit L in calls per second: the mock's limit and the workers' rate.
    #[arg(long, default_value_t = DEFAULT_RATE)]
    rate: u32,
    /// Fraction of each scenario's full size, for quick runs (e.g. 0.1).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Apps of the apps scenario, each at the rate L, in one worker.
    #[arg(long, default_value_t = crate::bench::apps::APPS, value_parser = apps_count)]
    apps: usize,
    /// Print one JSON object per scenario, one per line, on stdout (the table goes to stderr).
    #[arg(long)]
    json: bool,
    /// PostgreSQL URL through which the sweep's ledger run creates and drops a
    /// database of its own; empty skips that run.
    #[arg(long = "database-url", env = "KICKQ_BENCH_DATABASE_URL", default_value = DEFAULT_BENCH_DATABASE_URL, hide_env_values = true)]
    database_url: String,
}

/// `--scenario`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ScenarioArg {
    /// Every scenario in turn.
    All,
    /// Coalescing and pacing under the limit (and with the ledger).
    Sweep,
    /// Latency under light load.
    Light,
    /// Throughput with the API unlimited.
    Drain,
    /// Peak memory draining a million messages.
    Backlog,
    /// `kickq enqueue` throughput.
    Enqueue,
    /// Live-kick latency while a bulk sweep saturates the budget.
    Lanes,
    /// Many apps at their rates in one worker.
    Apps,
    /// The sweep and live kicks with the API 50 to 400 ms away (round trip).
    Wan,
}

impl ScenarioArg {
    fn scenarios(self) -> Vec<Scenario> {
        match self {
            ScenarioArg::All => Scenario::ALL.to_vec(),
            ScenarioArg::Sweep => vec![Scenario::Sweep],
            ScenarioArg::Light => vec![Scenario::Light],
            ScenarioArg::Drain => vec![Scenario::Drain],
            ScenarioArg::Backlog => vec![Scenario::Backlog],
            ScenarioArg::Enqueue => vec![Scenario::Enqueue],
            ScenarioArg::Lanes => vec![Scenario::Lanes],
            ScenarioArg::Apps => vec![Scenario::Apps],
            ScenarioArg::Wan => vec![Scenario::Wan],
        }
    }
}

/// `--apps`: 1 to [`crate::bench::apps::MAX_APPS`].
fn apps_count(s: &str) -> Result<usize, String> {
    let max = crate::bench::apps::MAX_APPS;
    match s.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("must be a whole number from 1 to {max}")),
    }
}

/// Runs the chosen scenarios; fails if any could not run or lost track of a user.
pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.rate == 0 {
        bail!("--rate must be at least 1");
    }
    if !(args.scale.is_finite() && args.scale > 0.0) {
        bail!("--scale must be a positive number");
    }
    let (amqp_url, names) = args.broker.resolve()?;
    let settings = BenchSettings {
        amqp_url,
        namespace_prefix: names.namespace,
        database_url: Some(args.database_url.clone())
            .filter(|u| !u.is_empty())
            .map(Secret::new),
        rate: args.rate,
        scale: args.scale,
        exe: std::env::current_exe().ok(),
        apps: args.apps,
    };
    let env = BenchEnv::new(settings);
    let stop = CancellationToken::new();
    tokio::spawn(crate::cli::signals::cancel_on_signal(stop.clone()));
    let mut problems = Vec::new();
    let all = async {
        for s in args.scenario.scenarios() {
            match run_with_retries(s, &env).await {
                Ok(report) => {
                    print(&report, args.json);
                    if report.accounting.as_ref().is_some_and(|a| !a.ok()) {
                        problems.push(format!("{}: accounting failed", s.name()));
                    }
                }
                Err(e) => {
                    eprintln!("kickq bench: {} failed: {e}", s.name());
                    problems.push(format!("{}: {e}", s.name()));
                }
            }
        }
    };
    let interrupted = tokio::select! {
        () = all => false,
        () = stop.cancelled() => true,
    };
    env.cleanup()
        .await
        .context("deleting the bench's namespaces and databases")?;
    if interrupted {
        bail!("interrupted; the bench's queues and databases were deleted");
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    Ok(())
}

/// Runs a scenario, again (in a fresh namespace) when a transient failure
/// such as a connection closed by another client of the shared broker
/// stopped it; the report says how many attempts it took.
async fn run_with_retries(s: Scenario, env: &BenchEnv) -> Result<Report, crate::bench::BenchError> {
    let mut attempt = 1;
    loop {
        match s.run(env).await {
            Ok(mut report) => {
                if attempt > 1 {
                    report
                        .notes
                        .push(format!("attempt {attempt}: earlier attempts failed transiently"));
                }
                return Ok(report);
            }
            Err(e) if e.is_transient() && attempt < ATTEMPTS => {
                eprintln!(
                    "kickq bench: {} attempt {attempt} failed ({e}); running it again",
                    s.name()
                );
                // Whatever the failed attempt left behind goes first.
                let _ = env.cleanup().await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Attempts per scenario.
const ATTEMPTS: u32 = 3;

fn print(report: &Report, json: bool) {
    let table = report.table();
    if json {
        eprintln!("{table}");
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", report.json());
        let _ = out.flush();
    } else {
        println!("{table}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apps_count_is_bounded() {
        let cases: &[(&str, Option<usize>)] = &[
            ("1", Some(1)),
            ("20", Some(20)),
            ("1000", Some(1000)),
            ("0", None),
            ("1001", None),
            ("-3", None),
            ("two", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(apps_count(text).ok(), *want, "{text:?}");
        }
    }
}
