//! `kickq dlq list|replay|purge`: the dead-letter queue's arguments, the confirmation prompt, progress and
//! summaries; the passes themselves are in `crate::dlq`.

use super::confirm::{ask, Answer, ConfirmArgs, Consent};
use super::flags::BrokerArgs;
use super::progress::Progress;
use super::signals::Interrupted;
use crate::amqp::connect::connect;
use crate::amqp::headers::DeadError;
use crate::amqp::topology::{Lane, Names};
use crate::dlq::format::{format_table, to_json, LetterCounts};
use crate::dlq::letter::{parse_error, Filter};
use crate::dlq::pass::{peek, peek_until, replay_spacing, sweep, Action, SweepConfig, SweepEnd};
use crate::dlq::pass_lock as lock;
use crate::dlq::words::{prompt, summary, DEFAULT_LIST_LIMIT};
use crate::ledger::query::parse_since;
use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use lapin::Connection;
use std::io::{IsTerminal, Write};
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// Test hook: when set to K, `dlq replay` and `dlq purge` stop as a crash
/// would once K letters are settled, leaving the ones in flight unsettled.
pub(crate) const STOP_AFTER_ENV: &str = "KICKQ_DLQ_STOP_AFTER";

/// The long `--help` text of `kickq dlq`.
pub(crate) const LONG_ABOUT: &str = "\
Inspect and act on <namespace>.dead.

list reads letters without consuming them: they stay in the queue, in order
(each is re-appended to the tail, then removed from the head, so a broker
delivery-limit never wears one out).
replay moves the matching letters back to the bulk lane, <namespace>.bulk
(--lane live: <namespace>.requests), attempts reset, the death recorded in
the kickq-dlq-history header; purge removes them.
Both make one pass over the letters present when they start: a matching
letter is removed only after its replay is confirmed, and every other letter
is re-appended to the tail of the queue first, so the rest keep their order
and an interruption loses nothing (at most the letters in flight are left
duplicated; the summary says how many). Safe while workers run.

One pass runs at a time per namespace (lease queue <namespace>.dead.lease),
and never while a prompt waits for its answer: a second list, replay or
purge waits its turn up to --wait (30s), then fails with \"another dlq pass
is running (since ...)\" and changes nothing.

Validation letters (bodies that were not valid jobs) are replayed as they
are: unless the input was fixed elsewhere they are dead-lettered again. So
are expired letters: their not_after has passed, and stays passed.

Without --yes, replay and purge first count the matching letters, then ask
on a terminal (elsewhere they refuse). --json prints the counts as one JSON
object and never prompts. Ctrl-C stops between letters, prints the summary
and exits 130.";

/// `kickq dlq`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DlqArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: DlqCommand,
}

/// The `kickq dlq` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub(crate) enum DlqCommand {
    /// Show dead letters as a table (or JSON), without consuming them.
    List(ListArgs),
    /// Move matching letters back to the bulk lane, or --lane live (validation letters go back as they are).
    Replay(ReplayArgs),
    /// Remove matching letters.
    Purge(PurgeArgs),
}

/// Which letters: every condition given must hold.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct FilterArgs {
    /// Only letters dead for this reason: validation, permanent, retries_exhausted, unknown_app,
    /// delivery_limit, expired.
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
    /// Only letters of this AppId (a job naming no app is the default app's: the config file's, else ZEGO_APP_ID).
    #[arg(long, value_name = "APP_ID")]
    pub app: Option<u32>,
}

impl FilterArgs {
    /// The filter these arguments ask for, with the default app a job naming none belongs to.
    pub(crate) fn filter_with(&self, default_app: Option<u32>) -> Filter {
        Filter {
            error: self.error,
            code: self.code,
            room: self.room.clone(),
            since: self.since,
            app: self.app,
            default_app,
            keys: Default::default(),
        }
    }
}

/// `kickq dlq list`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ListArgs {
    /// Broker and namespace.
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// --wait.
    #[command(flatten)]
    pub wait: WaitArgs,
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
pub(crate) struct ReplayArgs {
    /// Broker and namespace.
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// --wait.
    #[command(flatten)]
    pub wait: WaitArgs,
    /// Which letters.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Most letters to replay (the other matching ones stay).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// Most replays per second, 0.01 to 10000 (the worker's pace is the API's; this spares the queue).
    #[arg(long, value_name = "MSGS_PER_SEC", value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// The lane to replay into: bulk (<ns>.bulk, the default: a replay must
    /// not delay live kicks) or live (<ns>.requests).
    #[arg(long, value_name = "live|bulk", default_value_t = Lane::Bulk, value_parser = |s: &str| s.parse::<Lane>())]
    pub lane: Lane,
    /// --dry-run, --yes, --json.
    #[command(flatten)]
    pub confirm: ConfirmArgs,
}

/// `kickq dlq purge`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct PurgeArgs {
    /// Broker and namespace.
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// --wait.
    #[command(flatten)]
    pub wait: WaitArgs,
    /// Which letters.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Most letters to remove (the other matching ones stay).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// --dry-run, --yes, --json.
    #[command(flatten)]
    pub confirm: ConfirmArgs,
}

/// How long a pass waits in line for another by default ([`WaitArgs`]).
pub(crate) const DEFAULT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a pass waits in line for the one before it. The default, 30 s:
/// reads and sweeps of a few thousand letters take seconds, so two
/// operators and the console take turns instead of refusing each other.
#[derive(Debug, Clone, Copy, clap::Args)]
pub(crate) struct WaitArgs {
    /// How long to wait for another dlq pass (an operator's, the console's)
    /// to end before giving up with who runs it; at least 2s.
    #[arg(long, value_name = "DURATION", default_value = crate::config::duration_text(DEFAULT_WAIT), value_parser = crate::config::parse_duration)]
    pub wait: std::time::Duration,
}

/// How `replay` and `purge` run, beyond what they do to which letters.
#[derive(Debug, Clone, Copy)]
struct ActOptions {
    limit: Option<u64>,
    confirm: ConfirmArgs,
    wait: std::time::Duration,
}

/// With shards in the config file: each app's (and the default app's) queue
/// of `lane` in its shard, so a replay goes straight to the shard that
/// serves the letter's app.
fn shard_queues(
    file: Option<&crate::config::file::ConfigFile>,
    names: &crate::amqp::topology::Names,
    lane: crate::amqp::topology::Lane,
) -> anyhow::Result<Vec<(Option<u32>, String)>> {
    let routing = crate::config::apps::file_routing(file)?;
    Ok(crate::dlq::pass::replay_targets(routing.as_ref(), names, lane))
}

/// The default app that `--app` matches letters naming no app against: the
/// config file's, else `ZEGO_APP_ID` (the one app of a worker without a file),
/// as the worker itself resolves a job that names none.
fn default_app(file: Option<&crate::config::file::ConfigFile>) -> anyhow::Result<Option<u32>> {
    Ok(match crate::config::apps::file_routing(file)? {
        Some(r) => r.default_app(),
        None => std::env::var("ZEGO_APP_ID").ok().and_then(|v| v.trim().parse().ok()),
    })
}

/// Runs `kickq dlq`.
pub(crate) async fn run(args: DlqArgs, file: Option<&crate::config::file::ConfigFile>) -> anyhow::Result<()> {
    let default_app = default_app(file)?;
    match args.command {
        DlqCommand::List(a) => list(a, default_app).await,
        DlqCommand::Replay(a) => {
            let (url, names) = a.broker.resolve()?;
            let action = Action::Replay {
                to: names.queue(a.lane).to_owned(),
                rate: a.rate,
                by_app: shard_queues(file, &names, a.lane)?,
            };
            let opts = ActOptions {
                limit: a.limit,
                confirm: a.confirm,
                wait: a.wait.wait,
            };
            act(&url, &names, action, a.filter.filter_with(default_app), opts).await
        }
        DlqCommand::Purge(a) => {
            let (url, names) = a.broker.resolve()?;
            let opts = ActOptions {
                limit: a.limit,
                confirm: a.confirm,
                wait: a.wait.wait,
            };
            act(&url, &names, Action::Purge, a.filter.filter_with(default_app), opts).await
        }
    }
}

/// `--rate`: a number within the bounds the pass accepts, checked before
/// anything is read or sent.
pub(crate) fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s.parse().map_err(|_| format!("not a number: {s:?}"))?;
    replay_spacing(rate).map_err(|e| e.to_string())?;
    Ok(rate)
}

/// Takes the pass lock on `conn`, waiting in line up to `wait` (saying so on
/// stderr after 2 s), or fails with the line that says who holds it.
async fn take_lock(
    conn: &Connection,
    names: &Names,
    wait: std::time::Duration,
    stop: &CancellationToken,
) -> anyhow::Result<lock::PassLock> {
    let on_wait = |h: &lock::Holder| {
        eprintln!(
            "kickq: {}; waiting up to {}s for it to end",
            lock::running_message(h),
            wait.max(lock::FREE_LOCK_WAIT).as_secs()
        );
    };
    match lock::take(conn, names, wait, stop, on_wait).await {
        Ok(l) => Ok(l),
        Err(lock::LockError::Interrupted) => {
            crate::amqp::connect::close(conn, "interrupted").await;
            eprintln!("kickq: interrupted while waiting for another dlq pass; nothing changed");
            Err(Interrupted.into())
        }
        Err(e) => {
            crate::amqp::connect::close(conn, "locked").await;
            Err(e.into())
        }
    }
}

async fn open(url: &crate::secret::Secret) -> anyhow::Result<Connection> {
    connect(url, &format!("kickq-dlq-{}", std::process::id()))
        .await
        .map_err(|e| anyhow::Error::msg(crate::amqp::connect::explain(url, &e).to_string()))
}

async fn list(args: ListArgs, default_app: Option<u32>) -> anyhow::Result<()> {
    let (url, names) = args.broker.resolve()?;
    let conn = open(&url).await?;
    let filter = args.filter.filter_with(default_app);
    let total = crate::dlq::pass::depth(&conn, &names.dead).await?;
    let stop = CancellationToken::new();
    tokio::spawn(crate::cli::signals::cancel_on_signal(stop.clone()));
    let lock = take_lock(&conn, &names, args.wait.wait, &stop).await?;
    let mut progress = Progress::new("list", "letters", total.into());
    let (peeked, end) = peek_until(&conn, &names.dead, &filter, Some(args.limit), lock.stop(), |n| {
        progress.inc(n)
    })
    .await;
    let lost = lock.is_lost();
    lock.release().await;
    progress.finish();
    let cancelled = match end {
        SweepEnd::Failed(e) => return Err(e.into()),
        SweepEnd::Cancelled if lost => {
            crate::amqp::connect::close(&conn, "lock lost").await;
            bail!(
                "{LOCK_LOST} after {} of {} letter(s): none lost; the ones read are now behind the others",
                peeked.scanned,
                peeked.depth
            );
        }
        SweepEnd::Cancelled => true,
        _ => false,
    };
    crate::amqp::connect::close(&conn, "listed").await;
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
    if cancelled {
        eprintln!(
            "kickq: interrupted after {} of {} letter(s): none lost; the ones read are now behind the others",
            peeked.scanned, peeked.depth
        );
        return Err(Interrupted.into());
    }
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
    names: &Names,
    action: Action,
    filter: Filter,
    opts: ActOptions,
) -> anyhow::Result<()> {
    let (verb, done) = verb(&action);
    let consent = opts.confirm.consent(std::io::stdin().is_terminal());
    if let Consent::Refuse(why) = consent {
        bail!(why.message("the dead-letter queue"));
    }
    let dead = names.dead.as_str();
    let conn = open(url).await?;
    // Ctrl-C stops between steps: a wait in line, a count or a sweep
    // settles what is in flight.
    let stop = CancellationToken::new();
    tokio::spawn(crate::cli::signals::cancel_on_signal(stop.clone()));
    if opts.confirm.dry_run {
        let lock = take_lock(&conn, names, opts.wait, &stop).await?;
        let peeked = peek(&conn, dead, &filter, opts.limit.map(|l| l as usize), |_| {}).await;
        lock.release().await;
        let peeked = peeked?;
        crate::amqp::connect::close(&conn, "dry run").await;
        if opts.confirm.json {
            write_stdout(&format!("{}\n", LetterCounts::of_dry_run(&peeked).to_json(done)))?;
        } else {
            write_stdout(&format_table(&peeked.letters))?;
            println!(
                "dry run: would {verb} {} of {} letter(s) in {dead} ({}); nothing changed",
                peeked.letters.len(),
                peeked.scanned,
                filter.describe()
            );
        }
        return Ok(());
    }
    if consent == Consent::Ask {
        // Count the matching letters first, with the pass `dlq list` makes
        // (every letter re-appended in order), so the question is exact when
        // asked. The lock is let go for the question: nobody waits on an
        // operator's answer. The sweep takes it again and applies the
        // filter to each letter as it finds it, so letters that came or
        // went meanwhile are counted in its summary.
        // The count runs on a connection of its own, closed before the
        // question: closing it is what lets the lock go.
        let counting = open(url).await?;
        let lock = take_lock(&counting, names, opts.wait, &stop).await?;
        let total = crate::dlq::pass::depth(&counting, dead).await?;
        let mut progress = Progress::new("count", "letters", total.into());
        let (counted, end) = peek_until(&counting, dead, &filter, Some(0), lock.stop(), |n| progress.inc(n)).await;
        progress.finish();
        let lost = lock.is_lost();
        lock.release().await;
        crate::amqp::connect::close(&counting, "counted").await;
        match end {
            SweepEnd::Failed(e) => return Err(e.into()),
            SweepEnd::Cancelled if lost => {
                crate::amqp::connect::close(&conn, "lock lost").await;
                bail!("{LOCK_LOST} while counting; nothing changed");
            }
            SweepEnd::Cancelled => return interrupted_unchanged(conn).await,
            _ => {}
        }
        let n = opts.limit.map_or(counted.matched, |l| counted.matched.min(l));
        if n == 0 {
            crate::amqp::connect::close(&conn, "nothing to do").await;
            eprintln!(
                "none of the {} letter(s) in {dead} match {}; nothing to {verb}",
                counted.scanned,
                filter.describe()
            );
            return Ok(());
        }
        match ask(&prompt(verb, n, counted.scanned, dead, &filter), &stop).await? {
            Answer::Yes => {}
            Answer::No => {
                crate::amqp::connect::close(&conn, "not confirmed").await;
                bail!("not confirmed; nothing changed");
            }
            Answer::Interrupted => return interrupted_unchanged(conn).await,
        }
    }
    let lock = take_lock(&conn, names, opts.wait, &stop).await?;
    let depth = crate::dlq::pass::depth(&conn, dead).await?;
    let cfg = SweepConfig {
        dead: dead.to_owned(),
        action,
        filter: filter.clone(),
        limit: opts.limit,
        abandon_after: crate::cli::signals::test_hook(STOP_AFTER_ENV),
    };
    let started = Instant::now();
    let mut progress = Progress::new(verb, "letters", depth.into());
    let mut last = 0;
    let report = sweep(&conn, &cfg, lock.stop(), |r| {
        let settled = r.taken + r.kept;
        progress.inc(settled - last);
        last = settled;
    })
    .await;
    progress.finish();
    if opts.confirm.json {
        write_stdout(&format!("{}\n", LetterCounts::of_sweep(&report).to_json(done)))?;
    } else {
        println!(
            "{}",
            summary(&report, dead, done, &filter, started.elapsed().as_secs_f64())
        );
    }
    if let SweepEnd::Abandoned = report.end {
        play_crash(report.in_flight);
    }
    let lost = lock.is_lost();
    lock.release().await;
    match report.end {
        SweepEnd::Done => {
            crate::amqp::connect::close(&conn, "done").await;
            Ok(())
        }
        SweepEnd::Cancelled if lost => {
            crate::amqp::connect::close(&conn, "lock lost").await;
            bail!("{LOCK_LOST}: the letters not yet examined were not touched; run it again to finish")
        }
        SweepEnd::Cancelled => {
            crate::amqp::connect::close(&conn, "interrupted").await;
            eprintln!("kickq: interrupted: the letters not yet examined were not touched; run it again to finish");
            Err(Interrupted.into())
        }
        SweepEnd::Abandoned => play_crash(report.in_flight),
        SweepEnd::Failed(e) => Err(e).context(format!(
            "{} letter(s) were in flight: each is still in {dead} and may also have been {done} or re-appended",
            report.in_flight
        )),
    }
}

/// Why a pass stopped that nobody interrupted: its lock's renewal went
/// unanswered, so another pass may hold the lock now.
const LOCK_LOST: &str = "the dlq pass lock was lost (its renewal went unanswered: the broker node cut off or the connection gone), so the pass stopped";

/// The test hook ([`STOP_AFTER_ENV`]) plays a crash: the process leaves
/// without closing anything, the lock and the letters in flight included.
fn play_crash(in_flight: u64) -> ! {
    eprintln!("kickq: stopped by {STOP_AFTER_ENV} with {in_flight} letter(s) in flight");
    std::process::exit(3);
}

/// Ctrl-C before the sweep began.
async fn interrupted_unchanged(conn: Connection) -> anyhow::Result<()> {
    crate::amqp::connect::close(&conn, "interrupted").await;
    eprintln!("kickq: interrupted; nothing changed");
    Err(Interrupted.into())
}

#[cfg(test)]
mod tests;
