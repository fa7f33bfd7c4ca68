//! `kickq enqueue`: one job from flags, or a whole file of CSV / JSON Lines jobs, validated, grouped and
//! published with confirms; Ctrl-C or a broker loss reports the exact line to `--resume-from`.

use super::progress::Progress;
use super::run::BrokerArgs;
use crate::amqp::topology::DEFAULT_DELIVERY_LIMIT;
use crate::bulk::group::{confirmed_through, skipped, Message};
use crate::bulk::load::{check_prefix, default_prefix, load, Loaded};
use crate::bulk::parse::Format;
use crate::bulk::send::{send_in_order, SendReport, DEFAULT_WINDOW};
use crate::job::{self, IdCharset, KickRequest, Limits, DEFAULT_MAX_USERS_PER_MESSAGE};
use crate::producer::{Producer, ProducerConfig};
use anyhow::{bail, Context};
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Users per message when `--group-size` is not given.
pub const DEFAULT_GROUP_SIZE: usize = 100;
/// Invalid lines printed before "... and N more".
pub const MAX_REPORTED_INVALID: usize = 20;
/// Test hook: when set to K, the run behaves as if Ctrl-C arrived once K
/// messages were confirmed (tests use it to interrupt a run at a known point).
pub const STOP_AFTER_ENV: &str = "KICKQ_ENQUEUE_STOP_AFTER";

/// The long `--help` text of `kickq enqueue`.
pub const LONG_ABOUT: &str = "\
Publish kick jobs to <namespace>.requests, persistent and confirmed.

One job: --room R --user U [--user U2 ...] [--reason T] [--job-id J].

Many: --file F (- reads stdin) of JSON Lines job messages, or CSV lines
room_id,user_id[,reason] with an optional header line. Every line is
validated as the worker would; one bad line publishes nothing unless
--skip-invalid. Lines are grouped per (room, reason) into messages of up to
--group-size users; each message's job id is derived from the input
(--job-id-prefix, default: file name and a hash of the content) and its
first line. A line counts as enqueued once its message is confirmed.

Interrupted (Ctrl-C, broker lost)? The run prints \"confirmed through line N\".
Rerun with the same input, the same --group-size and --resume-from N+1:
the input is grouped again the same way and the messages that start before
that line are skipped, so nothing is lost or sent twice.";

/// `kickq enqueue`: publish kick jobs to `{ns}.requests` (see [`LONG_ABOUT`]).
#[derive(Debug, Clone, clap::Args)]
pub struct EnqueueArgs {
    /// Broker and namespace.
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Room to kick from (one job).
    #[arg(
        long,
        value_name = "ROOM_ID",
        required_unless_present = "file",
        conflicts_with = "file",
        requires = "users"
    )]
    pub room: Option<String>,
    /// A user to kick (one job); repeat for several.
    #[arg(long = "user", value_name = "USER_ID", conflicts_with = "file")]
    pub users: Vec<String>,
    /// CustomReason of the one job.
    #[arg(long, value_name = "TEXT", conflicts_with = "file")]
    pub reason: Option<String>,
    /// Job id of the one job (default: a random one, printed).
    #[arg(long = "job-id", value_name = "JOB_ID", conflicts_with = "file")]
    pub job_id: Option<String>,
    /// File of jobs, one per line; - reads stdin.
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Input format (default: detected from the first non-blank line).
    #[arg(long, value_name = "jsonl|csv", value_parser = |s: &str| s.parse::<Format>(), conflicts_with = "room")]
    pub format: Option<Format>,
    /// Publish the valid lines even if some are invalid (they are listed).
    #[arg(long = "skip-invalid", conflicts_with = "room")]
    pub skip_invalid: bool,
    /// Most users per message.
    #[arg(long = "group-size", default_value_t = DEFAULT_GROUP_SIZE as u64, value_parser = clap::value_parser!(u64).range(1..=DEFAULT_MAX_USERS_PER_MESSAGE as u64), value_name = "N")]
    pub group_size: u64,
    /// Skip the messages that start before this line (from "confirmed through line N": give N+1).
    #[arg(long = "resume-from", value_name = "LINE", value_parser = clap::value_parser!(u64).range(1..), conflicts_with = "room")]
    pub resume_from: Option<u64>,
    /// Prefix of the derived job ids (default: file name and a hash of the content).
    #[arg(long = "job-id-prefix", value_name = "PREFIX", conflicts_with = "room")]
    pub job_id_prefix: Option<String>,
    /// Validate and count; connect to nothing, publish nothing.
    #[arg(long = "dry-run")]
    pub dry_run: bool,
    /// `x-delivery-limit` used if this command declares the queues first (must match the worker's).
    #[arg(long = "delivery-limit", env = "KICKQ_DELIVERY_LIMIT", default_value_t = DEFAULT_DELIVERY_LIMIT, value_name = "N")]
    pub delivery_limit: u32,
    /// Characters room_id and user ids may hold: vendor (ZEGOCLOUD's
    /// documented set: digits, letters and ~!@#$%^&*()_+=-`;',.<>/\) or any
    /// (every character but control characters); must match the worker's.
    #[arg(long = "id-charset", env = "KICKQ_ID_CHARSET", value_name = "vendor|any", default_value = "vendor", value_parser = |s: &str| s.parse::<IdCharset>())]
    pub id_charset: IdCharset,
}

impl EnqueueArgs {
    /// The validation limits: the worker's defaults with `--id-charset`.
    pub fn limits(&self) -> Limits {
        Limits {
            id_charset: self.id_charset,
            ..Limits::default()
        }
    }
}

/// Runs `kickq enqueue`.
pub async fn run(args: EnqueueArgs) -> anyhow::Result<()> {
    match &args.file {
        Some(path) => bulk(&args, path).await,
        None => single(&args).await,
    }
}

async fn connect(args: &EnqueueArgs) -> anyhow::Result<Producer> {
    let (url, names) = args.broker.resolve()?;
    let cfg = ProducerConfig {
        names,
        delivery_limit: args.delivery_limit,
        connection_name: format!("kickq-enqueue-{}", std::process::id()),
        limits: args.limits(),
    };
    Ok(Producer::connect_with(&url, cfg).await?)
}

async fn single(args: &EnqueueArgs) -> anyhow::Result<()> {
    let room = args.room.clone().context("--room or --file is required")?;
    let mut request = KickRequest::new(room, args.users.iter().cloned());
    request.reason = args.reason.clone();
    request.job_id = Some(args.job_id.clone().unwrap_or_else(job::generate_job_id));
    let request = job::validate(request, &args.limits()).context("invalid job")?;
    let job_id = request.job_id.clone().unwrap_or_default();
    if args.dry_run {
        println!("valid: job {job_id}, {request} (dry run: nothing published)");
        return Ok(());
    }
    let producer = connect(args).await?;
    let summary = format!("enqueued job {job_id}: {request}");
    producer.enqueue(request).await?;
    producer.close().await?;
    println!("{summary}");
    Ok(())
}

fn read_input(path: &PathBuf) -> anyhow::Result<(String, Vec<u8>)> {
    let mut bytes = Vec::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .lock()
            .read_to_end(&mut bytes)
            .context("reading stdin")?;
        return Ok(("stdin".into(), bytes));
    }
    bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "input".into());
    Ok((name, bytes))
}

async fn bulk(args: &EnqueueArgs, path: &PathBuf) -> anyhow::Result<()> {
    let started = Instant::now();
    // Checked before reading, so that a bad setting fails fast even on a large file.
    args.broker.resolve()?;
    if let Some(p) = &args.job_id_prefix {
        check_prefix(p).map_err(|e| anyhow::anyhow!("--job-id-prefix {e}"))?;
    }
    let stop = CancellationToken::new();
    tokio::spawn(crate::cli::signals::cancel_on_signal(stop.clone()));

    let (name, bytes) = read_input(path)?;
    let loaded = load(&bytes, args.format, args.group_size as usize, args.limits());
    let prefix = args
        .job_id_prefix
        .clone()
        .unwrap_or_else(|| default_prefix(&name, &bytes));
    drop(bytes);
    report_invalid(&loaded, args.skip_invalid);
    if let Some((line, why)) = loaded.invalid.first() {
        if !args.skip_invalid {
            bail!(
                "{} invalid line(s), the first is line {line}: {why}; nothing was published \
                 (fix them, or pass --skip-invalid to publish the valid lines)",
                loaded.invalid.len()
            );
        }
    }
    let resume_from = args.resume_from.unwrap_or(1);
    if resume_from > loaded.lines + 1 {
        bail!(
            "--resume-from {resume_from} is past the end of the input ({} lines)",
            loaded.lines
        );
    }
    let skip = skipped(&loaded.messages, resume_from);
    let todo = &loaded.messages[skip..];
    let todo_users: u64 = todo.iter().map(|m| m.job.user_ids.len() as u64).sum();
    if args.dry_run {
        println!(
            "{}",
            summary(
                &loaded,
                skip,
                todo.len(),
                todo_users,
                started.elapsed(),
                "dry run: nothing published"
            )
        );
        return Ok(());
    }
    if stop.is_cancelled() {
        bail!("interrupted before publishing: nothing was enqueued");
    }

    let producer = connect(args).await?;
    let through = Arc::new(AtomicU64::new(confirmed_through(&loaded.messages, skip, loaded.lines)));
    exit_on_second_signal(stop.clone(), through.clone());
    let stop_after = std::env::var(STOP_AFTER_ENV).ok().and_then(|v| v.parse::<usize>().ok());
    let mut progress = Progress::new("enqueue", "users", todo_users);
    let mut done = 0usize;
    let report = send_in_order(&producer, &prefix, todo, DEFAULT_WINDOW, &stop, |m: &Message| {
        done += 1;
        progress.inc(m.job.user_ids.len() as u64);
        through.store(
            confirmed_through(&loaded.messages, skip + done, loaded.lines),
            Ordering::SeqCst,
        );
        if stop_after == Some(done) {
            stop.cancel();
        }
    })
    .await;
    progress.finish();
    if report.failure.is_none() {
        producer.close().await?;
    }
    finish(&loaded, skip, todo, &report, started.elapsed())
}

fn finish(
    loaded: &Loaded,
    skip: usize,
    todo: &[Message],
    report: &SendReport,
    elapsed: Duration,
) -> anyhow::Result<()> {
    let users: u64 = todo[..report.confirmed]
        .iter()
        .map(|m| m.job.user_ids.len() as u64)
        .sum();
    let through = confirmed_through(&loaded.messages, skip + report.confirmed, loaded.lines);
    let status = format!("confirmed through line {through}");
    println!("{}", summary(loaded, skip, report.confirmed, users, elapsed, &status));
    if let Some(e) = &report.failure {
        bail!(
            "{e}; confirmed through line {through}; {} message(s) were in flight and may or may not be stored: \
             rerun with --resume-from {} to send the rest (the same job ids, so a ledger-backed worker skips \
             users it already kicked)",
            report.in_doubt,
            through + 1
        );
    }
    if report.stopped {
        bail!(
            "interrupted: confirmed through line {through} of {}; rerun with --resume-from {} \
             (same input, same --group-size) to continue",
            loaded.lines,
            through + 1
        );
    }
    Ok(())
}

/// After the first Ctrl-C the run finishes its messages in flight; a second
/// one exits at once, still saying where a rerun must resume.
fn exit_on_second_signal(stop: CancellationToken, through: Arc<AtomicU64>) {
    tokio::spawn(async move {
        stop.cancelled().await;
        if tokio::signal::ctrl_c().await.is_ok() {
            let n = through.load(Ordering::SeqCst);
            eprintln!(
                "kickq: interrupted again: confirmed through line {n}; messages in flight may or may not be stored; \
                 rerun with --resume-from {}",
                n + 1
            );
            std::process::exit(130);
        }
    });
}

fn report_invalid(loaded: &Loaded, skipping: bool) {
    let shown = if skipping { 100 } else { MAX_REPORTED_INVALID };
    for (line, why) in loaded.invalid.iter().take(shown) {
        eprintln!("line {line}: {why}{}", if skipping { " (skipped)" } else { "" });
    }
    if loaded.invalid.len() > shown {
        eprintln!("... and {} more invalid line(s)", loaded.invalid.len() - shown);
    }
}

/// The end-of-run summary: what was read, judged and published.
pub fn summary(
    loaded: &Loaded,
    skipped: usize,
    messages: usize,
    users: u64,
    elapsed: Duration,
    status: &str,
) -> String {
    let secs = elapsed.as_secs_f64().max(1e-3);
    let mut text = format!(
        "lines read {}, valid {}, invalid {} ({})\nmessages {messages}, users {users}",
        loaded.lines,
        loaded.valid,
        loaded.invalid.len(),
        loaded.format
    );
    if skipped > 0 {
        text.push_str(&format!(" (skipped {skipped} message(s) before --resume-from)"));
    }
    text.push_str(&format!(
        "\nelapsed {:.1}s, {:.0} lines/s\n{status}",
        elapsed.as_secs_f64(),
        loaded.lines as f64 / secs
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        enqueue: EnqueueArgs,
    }

    #[test]
    fn single_and_bulk_arguments_exclude_each_other() {
        let ok = |argv: &[&str]| Cli::try_parse_from(argv).map(|c| c.enqueue);
        let one = ok(&["t", "--room", "r", "--user", "a", "--user", "b", "--reason", "x"]).unwrap();
        assert_eq!(one.users, vec!["a", "b"]);
        assert_eq!(one.group_size, DEFAULT_GROUP_SIZE as u64);
        assert!(ok(&["t", "--file", "-", "--resume-from", "7", "--group-size", "5"]).is_ok());
        assert_eq!(
            ok(&["t", "--file", "-", "--format", "csv"]).unwrap().format,
            Some(Format::Csv)
        );
        for bad in [
            &["t"][..],
            &["t", "--room", "r"],
            &["t", "--file", "f", "--room", "r", "--user", "u"],
            &["t", "--file", "f", "--group-size", "0"],
            &["t", "--file", "f", "--group-size", "1001"],
            &["t", "--file", "f", "--resume-from", "0"],
            &["t", "--room", "r", "--user", "u", "--skip-invalid"],
            &["t", "--file", "-", "--format", "xml"],
        ] {
            assert!(ok(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn id_charset_flag_sets_the_limits() {
        let limits = |argv: &[&str]| Cli::try_parse_from(argv).map(|c| c.enqueue.limits());
        assert_eq!(limits(&["t", "--file", "-"]).unwrap(), Limits::default());
        let any = limits(&["t", "--file", "-", "--id-charset", "any"]).unwrap();
        assert_eq!(any.id_charset, IdCharset::Any);
        assert_eq!(any.max_users_per_message, DEFAULT_MAX_USERS_PER_MESSAGE);
        assert!(limits(&["t", "--file", "-", "--id-charset", "loose"]).is_err());
    }

    #[test]
    fn summary_names_every_count() {
        let loaded = load(b"r,a\nr,b\nbad\n", None, 100, Limits::default());
        let text = summary(&loaded, 0, 1, 2, Duration::from_secs(2), "confirmed through line 3");
        assert_eq!(
            text,
            "lines read 3, valid 2, invalid 1 (csv)\nmessages 1, users 2\nelapsed 2.0s, 2 lines/s\nconfirmed through line 3"
        );
        let resumed = summary(&loaded, 4, 0, 0, Duration::ZERO, "x");
        assert!(
            resumed.contains("(skipped 4 message(s) before --resume-from)"),
            "{resumed}"
        );
    }
}
