//! `kickq ledger prune` (its consent, dry run and reports), and the `--database-url` argument shared by every
//! subcommand that opens the audit ledger.

use super::confirm::{ask, Answer, ConfirmArgs, Consent};
use super::flags::DatabaseArgs;
use super::progress::Progress;
use super::signals::Interrupted;
use crate::amqp::headers::rfc3339;
use crate::config::parse_duration;
use crate::ledger::{prune_cutoff, PruneCounts, PruneRun, PRUNE_BATCH_ROWS};
use anyhow::bail;
use chrono::{DateTime, Utc};
use std::io::IsTerminal;
use std::ops::ControlFlow;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Test hook: when set to K, `ledger prune` stops after K batches exactly as
/// Ctrl-C between batches would.
pub(crate) const PRUNE_STOP_AFTER_ENV: &str = "KICKQ_PRUNE_STOP_AFTER";

/// `kickq ledger ...`: maintenance of the audit ledger.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct LedgerArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: LedgerCommand,
}

/// The `kickq ledger` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub(crate) enum LedgerCommand {
    /// Delete receipts, API calls and outcomes older than a retention period.
    Prune(PruneArgs),
}

/// `kickq ledger prune --older-than AGE`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct PruneArgs {
    /// The ledger database.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Delete rows older than this age: 90d, 12h, 30m, 45s. A unit is
    /// required, because a bare 90 would mean 90 seconds and delete nearly
    /// everything.
    #[arg(long = "older-than", value_name = "AGE", value_parser = parse_age)]
    pub older_than: Duration,
    /// Rows deleted per batch, each batch its own transaction; Ctrl-C stops
    /// between batches.
    #[arg(long = "batch-rows", value_name = "N", default_value_t = PRUNE_BATCH_ROWS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_rows: u64,
    /// --dry-run, --yes, --json.
    #[command(flatten)]
    pub confirm: ConfirmArgs,
}

/// Parses a retention age; unlike [`parse_duration`] it refuses a bare number.
pub(crate) fn parse_age(raw: &str) -> Result<Duration, String> {
    let trimmed = raw.trim();
    if !trimmed.is_empty() && trimmed.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!("{raw:?} has no unit; write e.g. {trimmed}d or {trimmed}h"));
    }
    parse_duration(raw)
}

/// Runs `kickq ledger ...`.
pub(crate) async fn run(args: LedgerArgs) -> anyhow::Result<()> {
    match args.command {
        LedgerCommand::Prune(prune) => run_prune(prune).await,
    }
}

async fn run_prune(args: PruneArgs) -> anyhow::Result<()> {
    let consent = args.confirm.consent(std::io::stdin().is_terminal());
    if let Consent::Refuse(why) = consent {
        bail!(why.message("the audit ledger"));
    }
    let ledger = args.database.ledger().await?;
    // One cutoff for the count, the question and the delete.
    let cutoff = prune_cutoff(Utc::now(), args.older_than);
    if args.confirm.dry_run {
        let counts = ledger.count_prunable(cutoff).await?;
        let run = PruneRun {
            removed: counts,
            batches: 0,
            complete: true,
        };
        print_prune(&args, cutoff, &run);
        return Ok(());
    }
    let would = if consent == Consent::Ask {
        let would = ledger.count_prunable(cutoff).await?;
        if would.total() == 0 {
            eprintln!(
                "no row of the audit ledger is older than {}; nothing to prune",
                rfc3339(cutoff)
            );
            return Ok(());
        }
        // Ctrl-C at the prompt ends the process (no handler): nothing is deleted.
        let never = CancellationToken::new();
        if ask(&prune_question(&would, cutoff), &never).await? != Answer::Yes {
            bail!("not confirmed; nothing deleted");
        }
        Some(would)
    } else {
        None
    };
    // From here on Ctrl-C stops between batches: each one committed is
    // reported, the rest stays for a rerun.
    let stop = CancellationToken::new();
    tokio::spawn(crate::cli::signals::cancel_on_signal(stop.clone()));
    let total = match would {
        Some(w) => w.total(),
        // The bar's total; one indexed count, stoppable like the batches.
        None => tokio::select! {
            c = ledger.count_prunable(cutoff) => c?.total(),
            _ = stop.cancelled() => {
                eprintln!("kickq: interrupted; nothing deleted");
                return Err(Interrupted.into());
            }
        },
    };
    let stop_after: Option<u64> = crate::cli::signals::test_hook(PRUNE_STOP_AFTER_ENV);
    let mut progress = Progress::new("prune", "rows", total);
    let run = ledger
        .prune_batched(cutoff, args.batch_rows, |p| {
            progress.inc(p.rows);
            if stop_after.is_some_and(|k| p.batches >= k) {
                stop.cancel();
            }
            if stop.is_cancelled() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .await;
    progress.finish();
    let run = run?;
    print_prune(&args, cutoff, &run);
    if !run.complete {
        eprintln!(
            "kickq: interrupted after {} batch(es); the rows removed are reported above, the rest are untouched: run it again to finish",
            run.batches
        );
        return Err(Interrupted.into());
    }
    Ok(())
}

fn print_prune(args: &PruneArgs, cutoff: DateTime<Utc>, run: &PruneRun) {
    let dry_run = args.confirm.dry_run;
    if args.confirm.json {
        println!("{}", prune_json(args.older_than, cutoff, run, dry_run));
    } else {
        print!("{}", prune_report(&run.removed, cutoff, dry_run));
        if !dry_run {
            println!("{}", batches_line(run, args.batch_rows));
        }
    }
}

/// The line after a prune's report: how many batches, and whether it finished.
pub(crate) fn batches_line(run: &PruneRun, batch_rows: u64) -> String {
    let end = if run.complete {
        "done"
    } else {
        "interrupted; the older rows left are untouched"
    };
    format!("in {} batch(es) of at most {batch_rows} rows; {end}", run.batches)
}

/// The confirmation question of `kickq ledger prune`.
pub(crate) fn prune_question(would: &PruneCounts, cutoff: DateTime<Utc>) -> String {
    format!(
        "delete {} row(s) older than {} from the audit ledger ({} job_receipts, {} api_calls, {} user_outcomes)?",
        would.total(),
        rfc3339(cutoff),
        would.receipts,
        would.calls,
        would.outcomes
    )
}

/// What `kickq ledger prune` prints: rows removed (or that would be, in a dry
/// run) per table, aligned, then the cutoff.
pub(crate) fn prune_report(counts: &PruneCounts, cutoff: DateTime<Utc>, dry_run: bool) -> String {
    let lines = [
        ("job_receipts", counts.receipts),
        ("api_calls", counts.calls),
        ("user_outcomes", counts.outcomes),
    ];
    let width = lines.iter().map(|(_, n)| n.to_string().len()).max().unwrap_or(1);
    let verb = if dry_run { "would remove" } else { "removed" };
    let mut out: String = lines
        .iter()
        .map(|(table, n)| format!("{verb} {n:>width$} rows from {table}\n"))
        .collect();
    let tail = if dry_run { "; dry run, nothing deleted" } else { "" };
    out.push_str(&format!("rows older than {}{tail}\n", rfc3339(cutoff)));
    out
}

/// The `--json` object of `kickq ledger prune`, keys in the documented order.
#[derive(Debug, serde::Serialize)]
struct PruneJson {
    older_than_s: u64,
    cutoff: String,
    job_receipts: u64,
    api_calls: u64,
    user_outcomes: u64,
    dry_run: bool,
    batches: u64,
    interrupted: bool,
}

/// The `--json` object of `kickq ledger prune`, on one line. `batches` and
/// `interrupted` came after the first six keys, which keep their meaning.
pub(crate) fn prune_json(older_than: Duration, cutoff: DateTime<Utc>, run: &PruneRun, dry_run: bool) -> String {
    let counts = &run.removed;
    let v = PruneJson {
        older_than_s: older_than.as_secs(),
        cutoff: rfc3339(cutoff),
        job_receipts: counts.receipts,
        api_calls: counts.calls,
        user_outcomes: counts.outcomes,
        dry_run,
        batches: run.batches,
        interrupted: !run.complete,
    };
    serde_json::to_string(&v).expect("a struct of numbers and strings always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: LedgerCommand,
    }

    #[test]
    fn ages_need_a_unit() {
        assert_eq!(parse_age("90d").unwrap(), Duration::from_secs(90 * 86400));
        assert_eq!(parse_age("12h").unwrap(), Duration::from_secs(12 * 3600));
        for bad in ["90", "1.5", "9x", ""] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
        assert!(parse_age("90").unwrap_err().contains("90d"));
    }

    #[test]
    fn prune_parses_and_requires_older_than() {
        let cli = Cli::try_parse_from([
            "t",
            "prune",
            "--older-than",
            "90d",
            "--database-url",
            "postgres://x@h/d",
        ])
        .unwrap();
        let LedgerCommand::Prune(p) = cli.command;
        assert_eq!(p.older_than, Duration::from_secs(90 * 86400));
        assert!(Cli::try_parse_from(["t", "prune"]).is_err());
        assert!(Cli::try_parse_from(["t", "prune", "--older-than", "90"]).is_err());
    }

    #[test]
    fn missing_url_names_the_variable() {
        let none = DatabaseArgs { database_url: None };
        assert_eq!(none.url().unwrap_err().to_string(), "DATABASE_URL is required");
        let blank = DatabaseArgs {
            database_url: Some("  ".into()),
        };
        assert!(blank.url().is_err());
    }

    #[test]
    fn the_password_never_shows() {
        let args = DatabaseArgs {
            database_url: Some("postgres://kickq:hunter2@db:5432/kickq?password=hunter3&sslmode=require".into()),
        };
        for shown in [args.display_url(), format!("{args:?}")] {
            assert!(!shown.contains("hunter"), "{shown}");
            assert!(shown.contains("db:5432/kickq"), "{shown}");
        }
        let url = Cli::command()
            .find_subcommand("prune")
            .unwrap()
            .get_arguments()
            .find(|a| a.get_id() == "database_url")
            .unwrap()
            .is_hide_env_values_set();
        assert!(url, "--help must not print DATABASE_URL's value");
    }

    fn cutoff() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-02-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    const COUNTS: PruneCounts = PruneCounts {
        receipts: 12,
        calls: 3,
        outcomes: 1500,
    };

    #[test]
    fn prune_report_is_aligned() {
        let cases = [
            (
                false,
                "removed   12 rows from job_receipts\nremoved    3 rows from api_calls\nremoved 1500 rows from user_outcomes\n\
                 rows older than 2024-02-01T00:00:00.000Z\n",
            ),
            (
                true,
                "would remove   12 rows from job_receipts\nwould remove    3 rows from api_calls\n\
                 would remove 1500 rows from user_outcomes\nrows older than 2024-02-01T00:00:00.000Z; dry run, nothing \
                 deleted\n",
            ),
        ];
        for (dry_run, want) in cases {
            assert_eq!(prune_report(&COUNTS, cutoff(), dry_run), want);
        }
    }

    #[test]
    fn prune_json_has_a_fixed_shape() {
        let dry = PruneRun {
            removed: COUNTS,
            batches: 0,
            complete: true,
        };
        assert_eq!(
            prune_json(Duration::from_secs(90 * 86400), cutoff(), &dry, true),
            r#"{"older_than_s":7776000,"cutoff":"2024-02-01T00:00:00.000Z","job_receipts":12,"api_calls":3,"user_outcomes":1500,"dry_run":true,"batches":0,"interrupted":false}"#
        );
        let stopped = PruneRun {
            batches: 4,
            complete: false,
            ..dry
        };
        assert!(prune_json(Duration::ZERO, cutoff(), &stopped, false)
            .ends_with(r#""dry_run":false,"batches":4,"interrupted":true}"#));
        assert_eq!(
            batches_line(&stopped, 10_000),
            "in 4 batch(es) of at most 10000 rows; interrupted; the older rows left are untouched"
        );
        assert_eq!(batches_line(&dry, 2), "in 0 batch(es) of at most 2 rows; done");
        assert_eq!(
            prune_question(&COUNTS, cutoff()),
            "delete 1515 row(s) older than 2024-02-01T00:00:00.000Z from the audit ledger (12 job_receipts, 3 \
             api_calls, 1500 user_outcomes)?"
        );
    }

    #[test]
    fn prune_takes_dry_run_yes_and_json() {
        let cli = Cli::try_parse_from(["t", "prune", "--older-than", "1d", "--dry-run", "--json", "--yes"]).unwrap();
        let LedgerCommand::Prune(p) = cli.command;
        assert!(p.confirm.dry_run && p.confirm.json && p.confirm.yes);
        let LedgerCommand::Prune(p) = Cli::try_parse_from(["t", "prune", "--older-than", "1d"])
            .unwrap()
            .command;
        assert!(!p.confirm.dry_run && !p.confirm.json && !p.confirm.yes);
        assert_eq!(p.batch_rows, PRUNE_BATCH_ROWS);
        let LedgerCommand::Prune(p) = Cli::try_parse_from(["t", "prune", "--older-than", "1d", "--batch-rows", "2"])
            .unwrap()
            .command;
        assert_eq!(p.batch_rows, 2);
        assert!(Cli::try_parse_from(["t", "prune", "--older-than", "1d", "--batch-rows", "0"]).is_err());
    }
}
