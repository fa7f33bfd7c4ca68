//! `kickq enqueue`: one job from flags (to the live lane), or a whole file of CSV / JSON Lines jobs (to the bulk
//! lane), validated, grouped and published with confirms; `--lane`, and a deadline from `--not-after` / `--ttl`; a checkpoint beside the file for `--resume`; the summary (text or `--json`); Ctrl-C
//! reports the exact line and exits 130.

use super::progress::Progress;
use super::signals::Interrupted;
use crate::bulk::checkpoint::{self, Checkpoint, Keeper, CHECKPOINT_VERSION};
use crate::bulk::group::{as_published, job_id, Grouper, Message};
use crate::bulk::judge::{judge, Start};
use crate::bulk::load::{check_prefix, detect_stream, prefix_of, run_tag, scan, LoadOptions};
use crate::bulk::parse::Format;
use crate::bulk::send::{send_in_order, Feed, Sending, DEFAULT_WINDOW};
use crate::job::{self, KickRequest};
use crate::producer::{Producer, ProducerConfig};
use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// Messages the reading thread may have ready ahead of the publisher: enough
/// to keep it busy, few enough to keep memory small (at most 100 users each by default).
pub(crate) const FEED_DEPTH: usize = 1000;
/// Test hook: when set to K, the run behaves as if Ctrl-C arrived once K
/// messages were confirmed (tests use it to interrupt a run at a known point).
pub(crate) const STOP_AFTER_ENV: &str = "KICKQ_ENQUEUE_STOP_AFTER";

/// Runs `kickq enqueue`.
pub(crate) async fn run(args: EnqueueArgs, file: Option<&crate::config::file::ConfigFile>) -> anyhow::Result<()> {
    let not_after = deadline(args.not_after, args.ttl, Utc::now())?;
    match &args.file {
        Some(path) => bulk(&args, path, not_after, routing_of(file)?).await,
        None => single(&args, not_after, routing_of(file)?).await,
    }
}

/// The routing key a job goes out with, when the producer routes by shard.
fn producer_routing_key(producer: &Producer, lane: crate::amqp::topology::Lane, app: Option<u32>) -> Option<String> {
    producer
        .routes_by_shard()
        .then(|| crate::producer::Routing::routing_key(lane.as_str(), app))
}

/// The config file's shards, if it has any: jobs then go through `{ns}.jobs`.
fn routing_of(file: Option<&crate::config::file::ConfigFile>) -> anyhow::Result<Option<crate::producer::Routing>> {
    Ok(crate::config::apps::file_routing(file)?.filter(|r| r.is_sharded()))
}

async fn connect(args: &EnqueueArgs, routing: Option<crate::producer::Routing>) -> anyhow::Result<Producer> {
    let (url, names) = args.broker.resolve()?;
    let cfg = ProducerConfig {
        names,
        delivery_limit: args.delivery_limit,
        connection_name: format!("kickq-enqueue-{}", std::process::id()),
        limits: args.limits(),
        max_in_flight: crate::producer::MAX_IN_FLIGHT,
        routing,
    };
    Ok(Producer::connect_with(&url, cfg).await?)
}

async fn single(
    args: &EnqueueArgs,
    not_after: Option<DateTime<Utc>>,
    routing: Option<crate::producer::Routing>,
) -> anyhow::Result<()> {
    let room = args.room.clone().context("--room or --file is required")?;
    let mut request = KickRequest::new(room, args.users.iter().cloned());
    request.reason = args.reason.clone();
    request.not_after = not_after;
    request.job_id = Some(args.job_id.clone().unwrap_or_else(job::generate_job_id));
    let request = job::validate(request, &args.limits()).context("invalid job")?;
    let job_id = request.job_id.clone().unwrap_or_default();
    let body = serde_json::to_string(&request)?;
    if args.dry_run {
        match args.json {
            true => println!("{body}"),
            false => println!("valid: job {job_id}, {request} (dry run: nothing published)"),
        }
        return Ok(());
    }
    let producer = connect(args, routing).await?;
    let lane = args.lane();
    let to = match &producer_routing_key(&producer, lane, request.app_id) {
        Some(key) => format!("{} (routing key {key})", producer.names().jobs),
        None => producer.names().queue(lane).to_owned(),
    };
    let summary = format!("enqueued job {job_id} to {to}: {request}");
    producer.enqueue_to(lane, request).await?;
    producer.close().await?;
    match args.json {
        true => println!("{body}"),
        false => println!("{summary}"),
    }
    Ok(())
}

/// An input opened for its two passes: a file, or stdin spooled to an
/// unlinked temp file (stdin cannot be read twice).
fn open_input(path: &Path) -> anyhow::Result<(String, std::fs::File)> {
    if path.as_os_str() == "-" {
        use std::os::unix::fs::OpenOptionsExt;
        let spool = std::env::temp_dir().join(format!(
            "kickq-stdin-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&spool)
            .with_context(|| format!("spooling stdin to {}", spool.display()))?;
        // Unlinked at once: the open file lives until the run ends, whatever happens.
        let _ = std::fs::remove_file(&spool);
        std::io::copy(&mut std::io::stdin().lock(), &mut file).context("reading stdin")?;
        // Read from the start: with --format given nothing else rewinds it.
        rewind(&mut file)?;
        return Ok(("stdin".into(), file));
    }
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "input".into());
    Ok((name, file))
}

fn rewind(file: &mut std::fs::File) -> anyhow::Result<()> {
    use std::io::Seek;
    file.rewind().context("rereading the input")?;
    Ok(())
}

/// The second pass: groups `input` again and feeds the messages that start
/// at or after `from` to `feed`, then the end marker if the input is the one
/// judged (same hash). Stops early when the receiver is gone.
fn feed_messages(
    input: std::fs::File,
    format: Format,
    opts: LoadOptions,
    from: u64,
    md5: String,
    feed: tokio::sync::mpsc::Sender<Feed>,
) -> anyhow::Result<()> {
    let mut g = Grouper::new(opts.group_size);
    let mut open = true;
    let scanned = scan(std::io::BufReader::new(input), format, &opts, |line, job| {
        g.push(line, job);
        while let Some(m) = g.pop_ready() {
            if m.first_line >= from && feed.blocking_send(Some(m)).is_err() {
                open = false;
            }
        }
        open
    })?;
    if !open {
        return Ok(());
    }
    for m in g.finish() {
        if m.first_line >= from && feed.blocking_send(Some(m)).is_err() {
            return Ok(());
        }
    }
    if scanned.md5 != md5 {
        bail!("the input changed while it was being published (its hash differs from the first reading)");
    }
    let _ = feed.blocking_send(None);
    Ok(())
}

async fn bulk(
    args: &EnqueueArgs,
    path: &Path,
    not_after: Option<DateTime<Utc>>,
    routing: Option<crate::producer::Routing>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let started_at = Utc::now();
    let stdin = path.as_os_str() == "-";
    let cp_path = match (&args.checkpoint, stdin) {
        (Some(p), _) => Some(p.clone()),
        (None, false) => Some(checkpoint::beside(path)),
        (None, true) if args.resume => bail!("--resume on stdin needs --checkpoint PATH"),
        (None, true) => None,
    };
    // The checkpoint is read first: a resume takes its group size and job-id
    // prefix, and the first pass counts what a resume skips; it is checked
    // against the input after.
    // --new-run and --resume-from do not need the checkpoint: one that
    // cannot be read is set aside (with a warning) rather than blocking them.
    let found = match &cp_path {
        Some(p) => match checkpoint::read(p) {
            Ok(found) => found,
            Err(e) if args.new_run || args.resume_from.is_some() => {
                // Kept aside, not overwritten: it may be the only record of
                // an interrupted run's job-id prefix.
                let aside = PathBuf::from(format!("{}.unreadable", p.display()));
                std::fs::rename(p, &aside).with_context(|| format!("setting {} aside", p.display()))?;
                eprintln!("kickq: warning: {e}; moved to {}", aside.display());
                None
            }
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    // Checked before reading, so that a bad setting fails fast even on a large file.
    // A group size the worker would refuse is a usage error (exit 2), said in one line.
    let from_checkpoint = args.group_size.is_none() && found.is_some() && (args.resume || args.resume_from.is_some());
    let asked = match (&found, args.group_size) {
        (Some(cp), None) if from_checkpoint => Some(cp.group_size),
        (_, asked) => asked,
    };
    let group_size = group_size(asked, args.limits().max_users_per_message)
        .map_err(|e| clap::Error::raw(clap::error::ErrorKind::ArgumentConflict, format!("{e}\n")))?;
    args.broker.resolve()?;
    if let Some(p) = &args.job_id_prefix {
        check_prefix(p).map_err(|e| anyhow::anyhow!("--job-id-prefix {e}"))?;
    }
    let stop = CancellationToken::new();
    tokio::spawn(crate::cli::signals::cancel_on_signal(stop.clone()));

    let (name, mut file) = open_input(path)?;
    let format = match args.format {
        Some(f) => f,
        None => {
            let f = detect_stream(std::io::BufReader::new(&file)).context("reading the input")?;
            rewind(&mut file)?;
            f
        }
    };
    let opts = LoadOptions {
        header: args.header_mode(),
        group_size,
        limits: args.limits(),
        not_after,
    };
    let planned_from = match (args.resume_from, &found) {
        (Some(n), _) => n,
        (None, Some(cp)) if args.resume => cp.resume_from(),
        _ => 1,
    };
    let judged = judge(std::io::BufReader::new(&file), format, &opts, planned_from)
        .map_err(|e| anyhow::anyhow!("{e}; nothing was published (pass --no-header if the first line is data)"))?;
    let scanned = &judged.scanned;
    // --resume-from takes the checkpoint's group size only for the input it
    // was written for (--resume refuses another input below).
    if let (true, Some(cp)) = (from_checkpoint && !args.resume, &found) {
        if cp.input_md5 != scanned.md5 {
            bail!(
                "--resume-from: the checkpoint at {} is of another input (its hash differs), so its group size \
                 does not apply: pass --group-size (and --job-id-prefix) of the run to continue; nothing was published",
                cp_path.as_deref().map_or_else(String::new, |p| p.display().to_string())
            );
        }
    }
    if format == Format::Jsonl && (args.header || args.no_header) {
        bail!("--header and --no-header apply to CSV input, not JSON Lines");
    }
    // A resume (--resume, or --resume-from over this input's checkpoint) is
    // the interrupted run: its ids. Anything else is a new run: new ids.
    let resuming = args.resume || args.resume_from.is_some();
    let prefix = match (&args.job_id_prefix, &found) {
        (Some(p), _) => p.clone(),
        (None, Some(cp)) if resuming && cp.input_md5 == scanned.md5 => cp.job_id_prefix.clone(),
        (None, _) => prefix_of(&name, &scanned.md5, &run_tag(started_at, rand::random())),
    };
    let fresh = Checkpoint {
        version: CHECKPOINT_VERSION,
        input_md5: scanned.md5.clone(),
        group_size: group_size as u64,
        job_id_prefix: prefix.clone(),
        lines: scanned.lines,
        confirmed_through: 0,
        complete: false,
    };
    report_invalid(scanned, args.skip_invalid);
    if let Some((line, why)) = scanned.invalid.first() {
        if !args.skip_invalid {
            bail!(
                "{} invalid line(s), the first is line {line}: {why}; nothing was published \
                 (fix them, or pass --skip-invalid to publish the valid lines)",
                scanned.invalid_count
            );
        }
    }
    let (from, by_checkpoint) = match (args.resume_from, &cp_path) {
        (Some(n), _) => (n, false),
        (None, Some(p)) => (
            checkpoint::start_line(found.as_ref(), &fresh, args.resume, args.new_run, p)?,
            args.resume,
        ),
        (None, None) => (1, false),
    };
    debug_assert_eq!(from, planned_from, "the first pass counted the skip of this start");
    if from > scanned.lines + 1 {
        bail!(
            "--resume-from {from} is past the end of the input ({} lines)",
            scanned.lines
        );
    }
    let start = Start {
        from,
        skipped: judged.skipped.0,
        by_checkpoint,
    };
    let todo_users = scanned.users - judged.skipped.1;
    let todo_messages = judged.messages - judged.skipped.0;
    let first_through = judged.first_todo.map_or(scanned.lines, |l| l - 1);
    if args.dry_run {
        if args.json {
            rewind(&mut file)?;
            let mut g = Grouper::new(group_size);
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let mut print = |m: Message| -> anyhow::Result<()> {
                if m.first_line >= from {
                    use std::io::Write;
                    writeln!(out, "{}", serde_json::to_string(&as_published(&prefix, &m))?)?;
                }
                Ok(())
            };
            let mut failed = None;
            scan(std::io::BufReader::new(&file), format, &opts, |line, job| {
                g.push(line, job);
                while let Some(m) = g.pop_ready() {
                    if let Err(e) = print(m) {
                        failed = Some(e);
                        return false;
                    }
                }
                true
            })?;
            if let Some(e) = failed {
                return Err(e);
            }
            for m in g.finish() {
                print(m)?;
            }
        }
        let run = Run {
            judged: &judged,
            start,
            prefix: &prefix,
            group_size,
            started,
        };
        let report = EnqueueSummary::new(
            &run,
            EnqueueEnd::DryRun,
            (todo_messages, todo_users),
            scanned.lines,
            None,
        );
        match args.json {
            true => eprintln!("{}", report.text("dry run: nothing published")),
            false => println!("{}", report.text("dry run: nothing published")),
        }
        return Ok(());
    }
    if stop.is_cancelled() {
        eprintln!("kickq: interrupted before publishing: nothing was enqueued");
        return Err(Interrupted.into());
    }

    let producer = connect(args, routing).await?;
    let keeper = match &cp_path {
        Some(p) => {
            let mut k = Keeper {
                path: p.clone(),
                cp: fresh,
                last_write: Instant::now(),
            };
            k.save(first_through, false)
                .context("writing the checkpoint before publishing (or pass --checkpoint PATH)")?;
            Some(Arc::new(Mutex::new(k)))
        }
        None => None,
    };
    let through = Arc::new(AtomicU64::new(first_through));
    exit_on_second_signal(
        stop.clone(),
        through.clone(),
        keeper.clone(),
        (prefix.clone(), group_size),
    );
    let stop_after = crate::cli::signals::test_hook::<usize>(STOP_AFTER_ENV);
    rewind(&mut file)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel(FEED_DEPTH);
    let md5 = scanned.md5.clone();
    let reader = tokio::task::spawn_blocking(move || feed_messages(file, format, opts, from, md5, tx));
    let mut progress = Progress::new("enqueue", "users", todo_users);
    let mut done = 0usize;
    let mut ids = JobIds::default();
    let sending = Sending {
        producer: &producer,
        lane: args.lane(),
        prefix: &prefix,
        last_line: scanned.lines,
        window: DEFAULT_WINDOW,
        stop: &stop,
    };
    let report = send_in_order(sending, &mut rx, |m: &Message, now: u64| {
        done += 1;
        ids.confirmed(&prefix, m);
        progress.inc(m.job.user_ids.len() as u64);
        through.store(now, Ordering::SeqCst);
        if let Some(k) = &keeper {
            k.lock().expect("the checkpoint lock is never poisoned").tick(now);
        }
        if stop_after == Some(done) {
            stop.cancel();
        }
    })
    .await;
    progress.finish();
    drop(rx);
    let read = reader.await.context("the input reader")?;
    if report.failure.is_none() {
        producer.close().await?;
    }
    let run = Run {
        judged: &judged,
        start,
        prefix: &prefix,
        group_size,
        started,
    };
    finish(args, &run, &report, read.err(), keeper, ids.0)
}

/// The distinct job ids of the confirmed messages, in the order first
/// confirmed.
#[derive(Default)]
struct JobIds(Vec<String>, std::collections::HashSet<String>);

impl JobIds {
    fn confirmed(&mut self, prefix: &str, m: &Message) {
        let id = m.job.job_id.clone().unwrap_or_else(|| job_id(prefix, m));
        if self.1.insert(id.clone()) {
            self.0.push(id);
        }
    }
}

/// After the first Ctrl-C the run finishes its messages in flight; a second
/// one exits at once (130), still saving the checkpoint and saying where a
/// rerun must resume.
fn exit_on_second_signal(
    stop: CancellationToken,
    through: Arc<AtomicU64>,
    keeper: Option<Arc<Mutex<Keeper>>>,
    run: (String, usize),
) {
    tokio::spawn(async move {
        stop.cancelled().await;
        if tokio::signal::ctrl_c().await.is_ok() {
            let n = through.load(Ordering::SeqCst);
            if let Some(k) = keeper {
                if let Ok(mut k) = k.lock() {
                    let _ = k.save(n, false);
                }
            }
            eprintln!(
                "kickq: interrupted again: confirmed through line {n}; messages in flight may or may not be stored; \
                 rerun with {}",
                resume_from_flags(n + 1, &run.0, run.1)
            );
            std::process::exit(crate::cli::signals::SECOND_SIGNAL_EXIT);
        }
    });
}

mod args;
mod report;
pub(crate) use args::{deadline, group_size, EnqueueArgs, LONG_ABOUT};
use report::{finish, report_invalid, resume_from_flags, EnqueueEnd, EnqueueSummary, Run};

#[cfg(test)]
mod tests;
