//! `kickq enqueue`'s flags: the arguments, the long help, and the checks of a deadline and a group size.

use super::super::flags::BrokerArgs;
use crate::amqp::topology::{Lane, DEFAULT_DELIVERY_LIMIT};
use crate::bulk::parse::{Format, HeaderMode};
use crate::job::{self, IdCharset, Limits, DEFAULT_MAX_USERS_PER_MESSAGE};
use chrono::{DateTime, Utc};
use std::path::PathBuf;
use std::time::Duration;

/// Users per message when `--group-size` is not given.
pub(super) const DEFAULT_GROUP_SIZE: usize = 100;

/// The long `--help` text of `kickq enqueue`.
pub(crate) const LONG_ABOUT: &str = "\
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
pub(crate) struct EnqueueArgs {
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
    #[arg(long = "id-charset", env = "KICKQ_ID_CHARSET", value_name = "vendor|any", default_value_t = IdCharset::default(), value_parser = |s: &str| s.parse::<IdCharset>())]
    pub id_charset: IdCharset,
}

impl EnqueueArgs {
    /// `--header`, `--no-header`, or detection.
    pub(crate) fn header_mode(&self) -> HeaderMode {
        match (self.header, self.no_header) {
            (true, _) => HeaderMode::Present,
            (_, true) => HeaderMode::Absent,
            _ => HeaderMode::Detect,
        }
    }

    /// The validation limits: the worker's, from `--max-users-per-message` and `--id-charset`.
    pub(crate) fn limits(&self) -> Limits {
        Limits {
            max_users_per_message: usize::try_from(self.max_users_per_message).unwrap_or(usize::MAX),
            id_charset: self.id_charset,
        }
    }

    /// Where this run publishes: `--lane`, else bulk for a file, live for one job.
    pub(crate) fn lane(&self) -> Lane {
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
pub(crate) struct TtlTooLong(pub Duration);

/// The deadline a run sets on every message: `--not-after` as given, or
/// `now` + `--ttl` (taken once, so every message of a run shares it), or none
/// (each job keeps its own). clap keeps the two flags apart.
pub(crate) fn deadline(
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
pub(crate) struct GroupSizeError {
    /// The size asked for.
    pub asked: u64,
    /// The worker's limit.
    pub limit: usize,
}

/// The users per message of a run: `asked` if given and within the worker's
/// `limit`, refused above it (the worker would dead-letter every full
/// message); without it [`DEFAULT_GROUP_SIZE`], lowered to `limit` if that is
/// smaller.
pub(crate) fn group_size(asked: Option<u64>, limit: usize) -> Result<usize, GroupSizeError> {
    let limit = limit.max(1);
    match asked {
        None => Ok(DEFAULT_GROUP_SIZE.min(limit)),
        Some(n) if n > limit as u64 => Err(GroupSizeError { asked: n, limit }),
        Some(n) => Ok(n as usize),
    }
}
