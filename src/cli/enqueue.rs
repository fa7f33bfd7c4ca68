//! `kickq enqueue`: one job from flags (to the live lane), or a whole file of CSV / JSON Lines jobs (to the bulk
//! lane), validated, grouped and published with confirms; `--lane`, and a deadline from `--not-after` / `--ttl`; a checkpoint beside the file for `--resume`; the summary (text or `--json`); Ctrl-C
//! reports the exact line and exits 130.

use super::flags::BrokerArgs;
use super::progress::Progress;
use super::signals::Interrupted;
use crate::amqp::topology::{Lane, DEFAULT_DELIVERY_LIMIT};
use crate::bulk::checkpoint::{self, Checkpoint, CHECKPOINT_VERSION};
use crate::bulk::group::{as_published, job_id, Grouper, Message};
use crate::bulk::load::{
    check_prefix, detect_stream, prefix_of, run_tag, scan, LoadError, LoadOptions, Scanned, MAX_KEPT_INVALID,
};
use crate::bulk::parse::{Format, HeaderMode};
use crate::bulk::send::{send_in_order, Feed, SendError, SendReport, DEFAULT_WINDOW};
use crate::job::{self, IdCharset, KickRequest, Limits, DEFAULT_MAX_USERS_PER_MESSAGE};
use crate::producer::{Producer, ProducerConfig};
use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Users per message when `--group-size` is not given.
pub const DEFAULT_GROUP_SIZE: usize = 100;
/// Invalid lines printed before "... and N more".
pub const MAX_REPORTED_INVALID: usize = 20;
/// Messages the reading thread may have ready ahead of the publisher: enough
/// to keep it busy, few enough to keep memory small (at most 100 users each by default).
pub const FEED_DEPTH: usize = 1000;
/// Test hook: when set to K, the run behaves as if Ctrl-C arrived once K
/// messages were confirmed (tests use it to interrupt a run at a known point).
pub const STOP_AFTER_ENV: &str = "KICKQ_ENQUEUE_STOP_AFTER";
/// Least time between two checkpoint writes while confirms come in: one
/// atomic write a second costs nothing next to the publishing, and a kill -9
/// then resends at most a second of messages (with the same job ids). The
/// last write, at the end or on Ctrl-C, is exact.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// The long `--help` text of `kickq enqueue`.
pub const LONG_ABOUT: &str = "\
Publish kick jobs, persistent and confirmed: one job to the live lane
(<namespace>.requests), a file to the bulk lane (<namespace>.bulk), which the
worker serves with what live kicks leave of the rate; --lane live|bulk
overrides either.

One job: --room R --user U [--user U2 ...] [--reason T] [--job-id J].

Deadline: --not-after 2026-12-01T12:00:00Z, or --ttl 10m (now + 10 minutes,
taken once at start), sets not_after on every message published; a job
still queued after it is dead-lettered as expired instead of kicked. Without
either, a JSON Lines job keeps its own not_after.

Many: --file F (- reads stdin) of JSON Lines job messages, or CSV records
room_id,user_id[,reason]. A first CSV line whose fields are all column names
(room_id, user_id, reason) is a header and maps the columns by name, in any
order; --header / --no-header override. Every record is validated as the
worker would; one bad line publishes nothing unless --skip-invalid. Records
are grouped per (room, reason) into messages of up to --group-size users. A
line counts as enqueued once its message is confirmed.

Job ids: a record's own job_id is kept. Otherwise every message of one
(room, reason, AppId) group gets the id PREFIX:HASH, where PREFIX is
--job-id-prefix or, by default, the file name, a hash of its content and the
run's start time and nonce (bans.csv-1a2b3c4d-20261207T215501Z-9f3e). The job
id is the worker's idempotency key within KICKQ_DEDUPE_WINDOW (24 h): a
resume keeps the interrupted run's ids, so nobody is kicked twice; each new
run of the same file gets new ids, so it kicks again. For content
idempotency (the same file never kicks twice within the window), pass your
own --job-id-prefix, or job_id in JSON Lines.

A checkpoint beside the file (F.kickq-checkpoint, or --checkpoint PATH; stdin
needs --checkpoint) holds the input's hash, the group size, the job-id prefix
and the last confirmed line. Interrupted (Ctrl-C: exit 130, broker lost)?
The run prints \"confirmed through line N\"; rerun with --resume (the same
input, checked; the run's group size and ids), or --resume-from N+1: the
messages that start before that line are skipped, so nothing is lost or sent
twice. A plain run over an unfinished checkpoint is refused; --new-run sends
the whole input again as a new run.

--json prints the report as one JSON object, with the job ids it confirmed;
with --dry-run, the messages that would be published, one JSON line each.";

/// `kickq enqueue`: publish kick jobs to `{ns}.requests` or `{ns}.bulk` (see [`LONG_ABOUT`]).
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
    /// The queue to publish to: live (<ns>.requests) or bulk (<ns>.bulk).
    /// Default: live for one job, bulk for --file.
    #[arg(long, value_name = "live|bulk", value_parser = |s: &str| s.parse::<Lane>())]
    pub lane: Option<Lane>,
    /// Deadline of every message published (RFC 3339, e.g. 2026-12-01T12:00:00Z):
    /// still queued after it, a job is dead-lettered as expired.
    #[arg(long = "not-after", value_name = "TIME", value_parser = parse_not_after_flag)]
    pub not_after: Option<DateTime<Utc>>,
    /// Deadline as a time from now (e.g. 90s, 10m, 2h), taken once at start.
    #[arg(long, value_name = "DURATION", conflicts_with = "not_after", value_parser = crate::config::parse_duration)]
    pub ttl: Option<Duration>,
    /// Input format (default: detected from the first non-blank line).
    #[arg(long, value_name = "jsonl|csv", value_parser = |s: &str| s.parse::<Format>(), conflicts_with = "room")]
    pub format: Option<Format>,
    /// Publish the valid lines even if some are invalid (they are listed).
    #[arg(long = "skip-invalid", conflicts_with = "room")]
    pub skip_invalid: bool,
    /// Most users per message (default: 100, or --max-users-per-message if lower; never above it).
    #[arg(long = "group-size", value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub group_size: Option<u64>,
    /// Most user ids one message may carry: the worker's own setting (its
    /// messages above it are dead-lettered as validation), so it must match
    /// the worker's.
    #[arg(long = "max-users-per-message", env = "KICKQ_MAX_USERS_PER_MESSAGE", default_value_t = DEFAULT_MAX_USERS_PER_MESSAGE as u64, value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub max_users_per_message: u64,
    /// Skip the messages that start before this line (from "confirmed through line N": give N+1).
    #[arg(long = "resume-from", value_name = "LINE", value_parser = clap::value_parser!(u64).range(1..), conflicts_with_all = ["room", "resume"])]
    pub resume_from: Option<u64>,
    /// Continue the interrupted run from its checkpoint, under its job ids and group size (refused if the input changed).
    #[arg(long, conflicts_with = "room")]
    pub resume: bool,
    /// Send the whole input again as a new run (new job ids) although the checkpoint says an earlier run stopped.
    #[arg(long = "new-run", conflicts_with_all = ["room", "resume", "resume_from"])]
    pub new_run: bool,
    /// Checkpoint file (default: the input's path + .kickq-checkpoint; stdin has none unless given).
    #[arg(long, value_name = "PATH", conflicts_with = "room")]
    pub checkpoint: Option<PathBuf>,
    /// The first CSV line is a header (refused if it names an unknown column).
    #[arg(long, conflicts_with_all = ["room", "no_header"])]
    pub header: bool,
    /// The first CSV line is data, even if it looks like a header.
    #[arg(long = "no-header", conflicts_with = "room")]
    pub no_header: bool,
    /// Print the report as one JSON object on stdout (with --dry-run: each message, one JSON line).
    #[arg(long)]
    pub json: bool,
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
    /// `--header`, `--no-header`, or detection.
    pub fn header_mode(&self) -> HeaderMode {
        match (self.header, self.no_header) {
            (true, _) => HeaderMode::Present,
            (_, true) => HeaderMode::Absent,
            _ => HeaderMode::Detect,
        }
    }

    /// The validation limits: the worker's, from `--max-users-per-message` and `--id-charset`.
    pub fn limits(&self) -> Limits {
        Limits {
            max_users_per_message: usize::try_from(self.max_users_per_message).unwrap_or(usize::MAX),
            id_charset: self.id_charset,
        }
    }

    /// Where this run publishes: `--lane`, else bulk for a file, live for one job.
    pub fn lane(&self) -> Lane {
        self.lane.unwrap_or(match self.file {
            Some(_) => Lane::Bulk,
            None => Lane::Live,
        })
    }
}

/// `--not-after`: an RFC 3339 time.
fn parse_not_after_flag(raw: &str) -> Result<DateTime<Utc>, String> {
    job::parse_not_after(raw).map_err(|_| format!("{raw:?} is not an RFC 3339 time such as {}", job::NOT_AFTER_EXAMPLE))
}

/// A `--ttl` that reaches past the last time chrono can hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--ttl {0:?} reaches too far ahead")]
pub struct TtlTooLong(pub Duration);

/// The deadline a run sets on every message: `--not-after` as given, or
/// `now` + `--ttl` (taken once, so every message of a run shares it), or none
/// (each job keeps its own). clap keeps the two flags apart.
pub fn deadline(
    not_after: Option<DateTime<Utc>>,
    ttl: Option<Duration>,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, TtlTooLong> {
    match (not_after, ttl) {
        (Some(t), _) => Ok(Some(t)),
        (None, Some(ttl)) => chrono::Duration::from_std(ttl)
            .ok()
            .and_then(|d| now.checked_add_signed(d))
            .map(Some)
            .ok_or(TtlTooLong(ttl)),
        (None, None) => Ok(None),
    }
}

/// A `--group-size` the worker would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "--group-size {asked} is above the worker's limit of {limit} users a message \
     (--max-users-per-message, KICKQ_MAX_USERS_PER_MESSAGE): every message would be dead-lettered \
     as validation; give --group-size {limit} or less"
)]
pub struct GroupSizeError {
    /// The size asked for.
    pub asked: u64,
    /// The worker's limit.
    pub limit: usize,
}

/// The users per message of a run: `asked` if given and within the worker's
/// `limit`, refused above it (the worker would dead-letter every full
/// message); without it [`DEFAULT_GROUP_SIZE`], lowered to `limit` if that is
/// smaller.
pub fn group_size(asked: Option<u64>, limit: usize) -> Result<usize, GroupSizeError> {
    let limit = limit.max(1);
    match asked {
        None => Ok(DEFAULT_GROUP_SIZE.min(limit)),
        Some(n) if n > limit as u64 => Err(GroupSizeError { asked: n, limit }),
        Some(n) => Ok(n as usize),
    }
}

/// Runs `kickq enqueue`.
pub async fn run(args: EnqueueArgs, file: Option<&crate::config::file::ConfigFile>) -> anyhow::Result<()> {
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

/// What the first pass found: the judgement, and the messages the whole
/// input makes and those a start line skips.
#[derive(Debug, Clone)]
pub struct Judged {
    /// Counts, hash, first invalid lines.
    pub scanned: Scanned,
    /// Messages of the whole input.
    pub messages: usize,
    /// Messages that start before the start line, and their users.
    pub skipped: (usize, u64),
    /// The first line of the first message not skipped, if any.
    pub first_todo: Option<u64>,
}

/// Judges and groups `input` without keeping the messages, counting those that start before `from`.
pub fn judge<R: Read>(input: R, format: Format, opts: &LoadOptions, from: u64) -> Result<Judged, LoadError> {
    let mut g = Grouper::counting(opts.group_size);
    let (mut messages, mut skipped, mut first_todo) = (0usize, (0usize, 0u64), None);
    let mut count = |m: Message, messages: &mut usize| {
        *messages += 1;
        if m.first_line < from {
            skipped.0 += 1;
            skipped.1 += m.job.user_ids.len() as u64;
        } else if first_todo.is_none() {
            first_todo = Some(m.first_line);
        }
    };
    let scanned = scan(input, format, opts, |line, job| {
        g.push(line, job);
        while let Some(m) = g.pop_ready() {
            count(m, &mut messages);
        }
        true
    })?;
    for m in g.finish() {
        count(m, &mut messages);
    }
    Ok(Judged {
        scanned,
        messages,
        skipped,
        first_todo,
    })
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

/// Where a run started: what it skipped and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    /// The first line not skipped.
    pub from: u64,
    /// Messages skipped (they start before `from`).
    pub skipped: usize,
    /// What said so: `--resume-from` or the checkpoint.
    pub by_checkpoint: bool,
}

/// The checkpoint a run keeps: where, and its fields as of the last confirm.
struct Keeper {
    path: PathBuf,
    cp: Checkpoint,
    last_write: Instant,
}

impl Keeper {
    fn save(&mut self, through: u64, complete: bool) -> Result<(), checkpoint::CheckpointError> {
        self.cp.confirmed_through = through;
        self.cp.complete = complete;
        self.last_write = Instant::now();
        checkpoint::write(&self.path, &self.cp)
    }

    /// Saves at most every [`CHECKPOINT_INTERVAL`]; a failure is a warning (the final save reports).
    fn tick(&mut self, through: u64) {
        if self.last_write.elapsed() >= CHECKPOINT_INTERVAL {
            if let Err(e) = self.save(through, false) {
                tracing::warn!(error = %e, "could not update the checkpoint");
            }
        }
    }
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
        let report = Report::new(&run, Outcome::DryRun, (todo_messages, todo_users), scanned.lines, None);
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
    let stop_after = std::env::var(STOP_AFTER_ENV).ok().and_then(|v| v.parse::<usize>().ok());
    rewind(&mut file)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel(FEED_DEPTH);
    let md5 = scanned.md5.clone();
    let reader = tokio::task::spawn_blocking(move || feed_messages(file, format, opts, from, md5, tx));
    let mut progress = Progress::new("enqueue", "users", todo_users);
    let mut done = 0usize;
    let mut ids = JobIds::default();
    let report = send_in_order(
        &producer,
        args.lane(),
        &prefix,
        &mut rx,
        scanned.lines,
        DEFAULT_WINDOW,
        &stop,
        |m: &Message, now: u64| {
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
        },
    )
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

fn finish(
    args: &EnqueueArgs,
    run: &Run<'_>,
    sent: &SendReport,
    read_error: Option<anyhow::Error>,
    keeper: Option<Arc<Mutex<Keeper>>>,
    job_ids: Vec<String>,
) -> anyhow::Result<()> {
    let judged = run.judged;
    let through = sent.confirmed_through;
    let lines = judged.scanned.lines;
    let outcome = match (&sent.failure, sent.stopped) {
        (Some(_), _) => Outcome::Failed,
        (None, true) => Outcome::Interrupted,
        (None, false) => Outcome::Complete,
    };
    let mut cp_error = None;
    let cp_path = keeper.as_ref().map(|k| {
        let mut k = k.lock().expect("the checkpoint lock is never poisoned");
        if let Err(e) = k.save(through, outcome == Outcome::Complete) {
            cp_error = Some(e);
        }
        k.path.clone()
    });
    let mut report = Report::new(run, outcome, (sent.confirmed, sent.users), through, cp_path.as_deref());
    report.in_doubt = sent.in_doubt;
    report.job_ids = job_ids;
    match args.json {
        true => println!("{}", serde_json::to_string(&report)?),
        false => println!("{}", report.text(&format!("confirmed through line {through}"))),
    }
    // --resume-from names the run's prefix and group size too: without a
    // checkpoint nothing else would give the rerun this run's job ids.
    let resume_from = resume_from_flags(through + 1, run.prefix, run.group_size);
    if let Some(e) = cp_error {
        eprintln!("kickq: warning: {e}; resume with {resume_from}");
    }
    let rerun = match &cp_path {
        Some(_) => format!("--resume (or {resume_from})"),
        None => resume_from,
    };
    if let Some(e) = &sent.failure {
        let e = match (e, read_error) {
            (SendError::FeedBroken, Some(read)) => format!("{read:#}"),
            (e, _) => e.to_string(),
        };
        bail!(
            "{e}; confirmed through line {through}; {} message(s) were in flight and may or may not be stored: \
             rerun with {rerun} to send the rest (the same job ids, so a ledger-backed worker skips \
             users it already kicked)",
            sent.in_doubt,
        );
    }
    if sent.stopped {
        eprintln!(
            "kickq: interrupted: confirmed through line {through} of {lines}; rerun with {rerun} \
             (same input, same --group-size) to continue",
        );
        return Err(Interrupted.into());
    }
    Ok(())
}

/// The flags of a rerun that continues this run from `line` under its job
/// ids: `--resume-from N --job-id-prefix 'P' --group-size G`.
fn resume_from_flags(line: u64, prefix: &str, group_size: usize) -> String {
    format!(
        "--resume-from {line} --job-id-prefix='{}' --group-size {group_size}",
        prefix.replace('\'', "'\\''")
    )
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

fn report_invalid(scanned: &Scanned, skipping: bool) {
    let shown = if skipping {
        MAX_KEPT_INVALID
    } else {
        MAX_REPORTED_INVALID
    };
    for (line, why) in scanned.invalid.iter().take(shown) {
        eprintln!("line {line}: {why}{}", if skipping { " (skipped)" } else { "" });
    }
    if scanned.invalid_count > shown as u64 {
        eprintln!("... and {} more invalid line(s)", scanned.invalid_count - shown as u64);
    }
}

/// How a bulk run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every message confirmed.
    Complete,
    /// Stopped by Ctrl-C after the confirmed prefix.
    Interrupted,
    /// The broker failed; messages in flight are in doubt.
    Failed,
    /// `--dry-run`: nothing published.
    DryRun,
}

/// The report of a bulk run: the `--json` object (its fields are the README's
/// contract) and the text summary.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Report {
    /// How the run ended.
    pub status: Outcome,
    /// `csv` or `jsonl`.
    pub format: String,
    /// Physical lines.
    pub lines: u64,
    /// Header lines (0 or 1).
    pub header: u64,
    /// Lines holding no record.
    pub blank: u64,
    /// Valid records.
    pub valid: u64,
    /// Invalid records.
    pub invalid: usize,
    /// Messages the whole input makes.
    pub messages: usize,
    /// Users over those messages.
    pub users: u64,
    /// Messages skipped as confirmed by an earlier run.
    pub skipped_messages: usize,
    /// The first line not skipped.
    pub resume_from: u64,
    /// What decided the skip: `none`, `resume_from` (the flag) or `checkpoint`.
    pub skipped_by: &'static str,
    /// Messages published and confirmed by this run (with --dry-run: that would be).
    pub published_messages: usize,
    /// Users in them.
    pub published_users: u64,
    /// The distinct job ids of the confirmed messages, in the order first
    /// confirmed (one per room, reason and AppId of the run, or the input's
    /// own): what `kickq history --job` looks up. Empty on a dry run, whose
    /// `--json` prints each message with its id.
    pub job_ids: Vec<String>,
    /// Every line up to this one is in a confirmed message.
    pub confirmed_through: u64,
    /// Messages sent but not known to be stored (after a broker failure).
    pub in_doubt: usize,
    /// Prefix of the derived job ids.
    pub job_id_prefix: String,
    /// The checkpoint written, if any.
    pub checkpoint: Option<String>,
    /// Wall time of the run.
    pub elapsed_ms: u64,
}

/// What every report of one run shares: the judged input, where the run
/// started, its job-id prefix and its start time.
#[derive(Clone, Copy)]
pub struct Run<'a> {
    /// The first reading's verdict on the input.
    pub judged: &'a Judged,
    /// Where the run started (what a resume skipped).
    pub start: Start,
    /// The prefix of the derived job ids.
    pub prefix: &'a str,
    /// The run's group size.
    pub group_size: usize,
    /// When the run started, for `elapsed_ms`.
    pub started: Instant,
}

impl Report {
    /// A report of `published` (messages, users) of `run`, confirmed through line `through`.
    pub fn new(
        run: &Run<'_>,
        status: Outcome,
        published: (usize, u64),
        through: u64,
        checkpoint: Option<&Path>,
    ) -> Self {
        let Run {
            judged,
            start,
            prefix,
            started,
            ..
        } = *run;
        let s = &judged.scanned;
        Report {
            status,
            format: s.format.to_string(),
            lines: s.lines,
            header: s.header,
            blank: s.blank,
            valid: s.valid,
            invalid: s.invalid_count as usize,
            messages: judged.messages,
            users: s.users,
            skipped_messages: start.skipped,
            resume_from: start.from,
            skipped_by: match (start.skipped, start.by_checkpoint) {
                (0, _) => "none",
                (_, true) => "checkpoint",
                (_, false) => "resume_from",
            },
            published_messages: published.0,
            published_users: published.1,
            job_ids: Vec::new(),
            confirmed_through: through,
            in_doubt: 0,
            job_id_prefix: prefix.to_owned(),
            checkpoint: checkpoint.map(|p| p.display().to_string()),
            elapsed_ms: started.elapsed().as_millis() as u64,
        }
    }

    /// The end-of-run summary for people, ending with `status`.
    pub fn text(&self, status: &str) -> String {
        let secs = (self.elapsed_ms as f64 / 1000.0).max(1e-3);
        let mut text = format!(
            "lines {}: {} header, {} valid, {} invalid",
            self.lines, self.header, self.valid, self.invalid
        );
        if self.blank > 0 {
            text.push_str(&format!(", {} blank", self.blank));
        }
        text.push_str(&format!(
            " ({})\nmessages {}, users {}",
            self.format, self.published_messages, self.published_users
        ));
        match self.skipped_by {
            "checkpoint" => text.push_str(&format!(
                " (skipped {} message(s) before line {}, confirmed by the run the checkpoint recorded)",
                self.skipped_messages, self.resume_from
            )),
            "resume_from" => text.push_str(&format!(
                " (skipped {} message(s) before --resume-from {})",
                self.skipped_messages, self.resume_from
            )),
            _ => {}
        }
        text.push_str(&format!(
            "\nelapsed {:.1}s, {:.0} lines/s\n{status}",
            self.elapsed_ms as f64 / 1000.0,
            self.lines as f64 / secs
        ));
        text
    }
}

#[cfg(test)]
mod tests;
