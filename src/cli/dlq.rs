//! `kickq dlq list|replay|purge`: the dead-letter queue's arguments, the confirmation prompt, progress and
//! summaries; the passes themselves are in `crate::dlq`.

use super::history::parse_since;
use super::progress::Progress;
use super::run::BrokerArgs;
use crate::amqp::connect::connect;
use crate::amqp::headers::DeadError;
use crate::dlq::format::{format_table, to_json};
use crate::dlq::letter::{parse_error, Filter};
use crate::dlq::pass::{peek, sweep, Action, SweepConfig, SweepEnd, SweepReport};
use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use lapin::Connection;
use std::io::{BufRead, IsTerminal, Write};
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// Letters `dlq list` shows when `--limit` is not given.
pub const DEFAULT_LIST_LIMIT: usize = 100;
/// Test hook: when set to K, `dlq replay` and `dlq purge` stop as a crash
/// would once K letters are settled, leaving the ones in flight unsettled.
pub const STOP_AFTER_ENV: &str = "KICKQ_DLQ_STOP_AFTER";

/// The long `--help` text of `kickq dlq`.
pub const LONG_ABOUT: &str = "\
Inspect and act on <namespace>.dead.

list reads letters without consuming them: they stay in the queue, in order.
replay moves the matching letters back to <namespace>.requests (attempts reset,
the death recorded in the kickq-dlq-history header); purge removes them.
Both make one pass over the letters present when they start: a matching
letter is removed only after its replay is confirmed, and every other letter
is re-appended to the tail of the queue first, so the rest keep their order
and an interruption loses nothing (at most the letters in flight are left
duplicated; the summary says how many). Safe while workers run.

Validation letters (bodies that were not valid jobs) are replayed as they
are: unless the input was fixed elsewhere they are dead-lettered again.";

/// `kickq dlq`.
#[derive(Debug, Clone, clap::Args)]
pub struct DlqArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: DlqCommand,
}

/// The `kickq dlq` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DlqCommand {
    /// Show dead letters as a table (or JSON), without consuming them.
    List(ListArgs),
    /// Move matching letters back to the requests queue (validation letters go back as they are).
    Replay(ReplayArgs),
    /// Remove matching letters.
    Purge(PurgeArgs),
}

/// Which letters: every condition given must hold.
#[derive(Debug, Clone, clap::Args)]
pub struct FilterArgs {
    /// Only letters dead for this reason: validation, permanent, retries_exhausted, unknown_app,
    /// delivery_limit.
    #[arg(long, value_name = "ERROR", value_parser = parse_error)]
    pub error: Option<DeadError>,
    /// Only letters with this API code (kickq-code).
    #[arg(long, value_name = "CODE", allow_hyphen_values = true)]
    pub code: Option<i64>,
    /// Only letters of this room.
    #[arg(long, value_name = "ROOM_ID")]
    pub room: Option<String>,
    /// Only letters that failed at or after this time: RFC 3339 or an age such as 30m, 2h or 7d.
    #[arg(long, value_name = "TIME", value_parser = parse_since)]
    pub since: Option<DateTime<Utc>>,
}

impl FilterArgs {
    /// The filter these arguments ask for.
    pub fn filter(&self) -> Filter {
        Filter {
            error: self.error,
            code: self.code,
            room: self.room.clone(),
            since: self.since,
        }
    }
}

/// `kickq dlq list`.
#[derive(Debug, Clone, clap::Args)]
pub struct ListArgs {
    /// Broker and namespace.
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Which letters.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Most letters to show.
    #[arg(long, default_value_t = DEFAULT_LIST_LIMIT, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub limit: usize,
    /// Print one JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `kickq dlq replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// Broker and namespace.
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Which letters.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Most letters to replay (the other matching ones stay).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// Most replays per second (the worker's pace is the API's; this spares the queue).
    #[arg(long, value_name = "MSGS_PER_SEC")]
    pub rate: Option<f64>,
    /// Show what would be replayed; change nothing.
    #[arg(long = "dry-run")]
    pub dry_run: bool,
    /// Do not ask for confirmation (required when stdin is not a terminal).
    #[arg(long)]
    pub yes: bool,
}

/// `kickq dlq purge`.
#[derive(Debug, Clone, clap::Args)]
pub struct PurgeArgs {
    /// Broker and namespace.
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Which letters.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Most letters to remove (the other matching ones stay).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// Show what would be removed; change nothing.
    #[arg(long = "dry-run")]
    pub dry_run: bool,
    /// Do not ask for confirmation (required when stdin is not a terminal).
    #[arg(long)]
    pub yes: bool,
}

/// Runs `kickq dlq`.
pub async fn run(args: DlqArgs) -> anyhow::Result<()> {
    match args.command {
        DlqCommand::List(a) => list(a).await,
        DlqCommand::Replay(a) => {
            if let Some(rate) = a.rate {
                if !(rate.is_finite() && rate > 0.0) {
                    bail!("--rate must be a positive number of messages per second");
                }
            }
            let (url, names) = a.broker.resolve()?;
            let action = Action::Replay {
                to: names.requests.clone(),
                rate: a.rate,
            };
            act(&url, &names.dead, action, a.filter.filter(), a.limit, a.dry_run, a.yes).await
        }
        DlqCommand::Purge(a) => {
            let (url, names) = a.broker.resolve()?;
            act(
                &url,
                &names.dead,
                Action::Purge,
                a.filter.filter(),
                a.limit,
                a.dry_run,
                a.yes,
            )
            .await
        }
    }
}

async fn open(url: &crate::secret::Secret) -> anyhow::Result<Connection> {
    connect(url, &format!("kickq-dlq-{}", std::process::id()))
        .await
        .map_err(|e| anyhow::Error::msg(crate::amqp::connect::explain(url, &e).to_string()))
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let (url, names) = args.broker.resolve()?;
    let conn = open(&url).await?;
    let filter = args.filter.filter();
    let total = crate::dlq::pass::depth(&conn, &names.dead).await?;
    let mut progress = Progress::new("list", "letters", total.into());
    let peeked = peek(&conn, &names.dead, &filter, Some(args.limit), |n| progress.inc(n)).await;
    progress.finish();
    let peeked = peeked?;
    let _ = conn.close(200, "listed".into()).await;
    let text = if args.json {
        format!("{}\n", to_json(&peeked.letters))
    } else {
        format_table(&peeked.letters)
    };
    if !args.json || !peeked.letters.is_empty() {
        write_stdout(&text)?;
    }
    let shown = if peeked.matched > peeked.letters.len() as u64 {
        format!("; showing the first {} (--limit)", peeked.letters.len())
    } else {
        String::new()
    };
    eprintln!(
        "{} of {} letter(s) in {} match {}{shown}",
        peeked.matched,
        peeked.scanned,
        names.dead,
        filter.describe()
    );
    Ok(())
}

fn write_stdout(text: &str) -> anyhow::Result<()> {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        // `kickq dlq list | head` closing the pipe early is not a failure.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

fn verb(action: &Action) -> (&'static str, &'static str) {
    match action {
        Action::Replay { .. } => ("replay", "replayed"),
        Action::Purge => ("purge", "purged"),
    }
}

async fn act(
    url: &crate::secret::Secret,
    dead: &str,
    action: Action,
    filter: Filter,
    limit: Option<u64>,
    dry_run: bool,
    yes: bool,
) -> anyhow::Result<()> {
    let (verb, done) = verb(&action);
    let conn = open(url).await?;
    if dry_run {
        let peeked = peek(&conn, dead, &filter, limit.map(|l| l as usize), |_| {}).await?;
        let _ = conn.close(200, "dry run".into()).await;
        write_stdout(&format_table(&peeked.letters))?;
        println!(
            "dry run: would {verb} {} of {} letter(s) in {dead} ({}); nothing changed",
            peeked.letters.len(),
            peeked.scanned,
            filter.describe()
        );
        return Ok(());
    }
    let depth = crate::dlq::pass::depth(&conn, dead).await?;
    if !yes {
        confirm(&format!(
            "{verb} the letters of {dead} that match {} ({depth} letter(s) in the queue)?",
            filter.describe()
        ))?;
    }
    let stop = CancellationToken::new();
    tokio::spawn(crate::cli::signals::cancel_on_signal(stop.clone()));
    let cfg = SweepConfig {
        dead: dead.to_owned(),
        action,
        filter: filter.clone(),
        limit,
        abandon_after: std::env::var(STOP_AFTER_ENV).ok().and_then(|v| v.parse().ok()),
    };
    let started = Instant::now();
    let mut progress = Progress::new(verb, "letters", depth.into());
    let mut last = 0;
    let report = sweep(&conn, &cfg, &stop, |r| {
        let settled = r.taken + r.kept;
        progress.inc(settled - last);
        last = settled;
    })
    .await;
    progress.finish();
    println!(
        "{}",
        summary(&report, dead, done, &filter, started.elapsed().as_secs_f64())
    );
    match report.end {
        SweepEnd::Done => {
            let _ = conn.close(200, "done".into()).await;
            Ok(())
        }
        SweepEnd::Cancelled => {
            let _ = conn.close(200, "interrupted".into()).await;
            bail!("interrupted: the letters not yet examined were not touched; run it again to finish")
        }
        SweepEnd::Abandoned => {
            // The test hook plays a crash: leave without closing anything.
            eprintln!(
                "kickq: stopped by {STOP_AFTER_ENV} with {} letter(s) in flight",
                report.in_flight
            );
            std::process::exit(3);
        }
        SweepEnd::Failed(e) => Err(e).context(format!(
            "{} letter(s) were in flight: each is still in {dead} and may also have been {done} or re-appended",
            report.in_flight
        )),
    }
}

/// The summary after a replay or purge.
pub fn summary(r: &SweepReport, dead: &str, done: &str, filter: &Filter, secs: f64) -> String {
    let mut s = format!(
        "examined {} of {} letter(s) in {dead} ({}): {done} {}, kept {} in order; {:.1}s",
        r.examined,
        r.depth,
        filter.describe(),
        r.taken,
        r.kept,
        secs
    );
    if r.in_flight > 0 {
        s.push_str(&format!(
            "\n{} letter(s) were in flight when it stopped: they are still in {dead} and may also have been {done} \
             or re-appended (duplicates)",
            r.in_flight
        ));
    }
    s
}

/// Asks on the terminal; refuses when stdin is not one, since a script must
/// say `--yes` explicitly.
fn confirm(question: &str) -> anyhow::Result<()> {
    if !std::io::stdin().is_terminal() {
        bail!("refusing to change the dead-letter queue without --yes when stdin is not a terminal");
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        bail!("not confirmed; nothing changed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        dlq: DlqArgs,
    }

    #[test]
    fn filters_parse_into_the_filter() {
        let cli = Cli::try_parse_from([
            "t",
            "replay",
            "--error",
            "retries_exhausted",
            "--code",
            "-1",
            "--room",
            "r",
            "--since",
            "2024-05-01T00:00:00Z",
            "--rate",
            "5",
            "--yes",
        ])
        .unwrap();
        let DlqCommand::Replay(a) = cli.dlq.command else {
            panic!("replay")
        };
        let f = a.filter.filter();
        assert_eq!(f.error, Some(DeadError::RetriesExhausted));
        assert_eq!(f.code, Some(-1));
        assert_eq!(f.room.as_deref(), Some("r"));
        assert!(f.since.is_some());
        assert_eq!(a.rate, Some(5.0));
        assert!(a.yes && !a.dry_run);
        let DlqCommand::List(l) = Cli::try_parse_from(["t", "list"]).unwrap().dlq.command else {
            panic!("list")
        };
        assert_eq!(l.limit, DEFAULT_LIST_LIMIT);
        for bad in [
            &["t", "list", "--error", "nope"][..],
            &["t", "list", "--limit", "0"],
            &["t", "purge", "--since", "yesterday"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn summary_mentions_letters_in_flight_only_when_there_are_some() {
        let r = SweepReport {
            depth: 10,
            examined: 10,
            taken: 4,
            kept: 6,
            in_flight: 0,
            end: SweepEnd::Done,
        };
        let s = summary(&r, "q.dead", "replayed", &Filter::default(), 1.0);
        assert_eq!(
            s,
            "examined 10 of 10 letter(s) in q.dead (every letter): replayed 4, kept 6 in order; 1.0s"
        );
        let r = SweepReport { in_flight: 2, ..r };
        assert!(summary(&r, "q.dead", "purged", &Filter::default(), 1.0).contains("2 letter(s) were in flight"));
    }
}
