//! The messages that flow between the worker's stages: intake -> coalescer -> dispatcher -> outcome router.
//!
//! Kept apart from the stages so that each stage imports only the types it
//! sends or receives, never the stage that receives them.

use crate::amqp::delivery::Delivery;
use crate::amqp::topology::Lane;
use crate::coalesce::Chunk;
use crate::job::KickRequest;
use crate::ledger::CallRow;
use crate::zego::codes::Disposition;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;

/// Longest wait for each closing step of a session (release record, lock,
/// connections, the router's last acks), so an unresponsive broker cannot
/// hold the exit.
pub(crate) const CLOSE_STEP: Duration = Duration::from_secs(1);

/// A consumed, validated job, shared by every stage that holds some of its users.
///
/// Invariant: `request` passed validation and `request.job_id` is `Some`.
#[derive(Debug)]
pub(crate) struct Job {
    /// Unique within this process; keys the router's books.
    pub id: u64,
    /// The validated message, with `job_id` filled in.
    pub request: KickRequest,
    /// The AppId it is for (the message's, or the default app).
    pub app_id: u32,
    /// The lane it came from; its retries and deferrals return to it.
    pub lane: Lane,
    /// API attempts already made for these users before this delivery
    /// (the `kickq-attempts` header of a retry; 0 for a fresh job).
    pub attempts: u32,
    /// When the first attempt for these users was made, if any: the retry
    /// budget's clock survives restarts because it rides in a header.
    pub first_attempt_at: Option<DateTime<Utc>>,
    /// Rate answers so far (`kickq-rate-limited`), apart from `attempts`.
    pub rate_limited: u32,
    /// Time these users were held by halts (`kickq-halted-ms`).
    pub halted_for: std::time::Duration,
    /// The broker says it delivered this message before.
    pub redelivered: bool,
    /// These users were deferred by a halt before (ledger: halted_then_resumed).
    pub halted_before: bool,
    /// When intake took it.
    pub received_at: DateTime<Utc>,
    /// Headers that must follow these users into any retry or dead letter
    /// (the `kickq-dlq-history` of a replayed message).
    pub carried: lapin::types::FieldTable,
}

impl Job {
    /// What the job had spent before this delivery, for the retry plan.
    pub(crate) fn spent(&self) -> crate::outcome::plan::Spent {
        crate::outcome::plan::Spent {
            attempts: self.attempts,
            rate_limited: self.rate_limited,
            first_attempt_at: self.first_attempt_at,
            halted_for: self.halted_for,
        }
    }

    /// The job id (always present after intake).
    pub(crate) fn job_id(&self) -> &str {
        self.request
            .job_id
            .as_deref()
            .expect("intake fills job_id before a Job is built")
    }
}

/// Intake -> coalescer: users of a job that still need a call.
#[derive(Debug)]
pub(crate) struct JobIn {
    /// The job.
    pub job: Arc<Job>,
    /// Its users minus those the ledger shows as already kicked.
    pub users: Vec<Arc<str>>,
}

/// Why a delivery could not be used at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unusable {
    /// Failed validation; the text is the reason.
    Validation(String),
    /// Names an AppId this worker has no secret for.
    UnknownApp(u32),
    /// Names no AppId, and no app is the default.
    NoApp,
    /// Its `not_after` (this instant) had passed when intake took it.
    Expired(DateTime<Utc>),
    /// Forwarded this many times already, and again at a shard not serving
    /// its app (the one it would go to next is `to`): the workers' configs
    /// disagree on the app's shard.
    Misrouted {
        /// The shard this worker would forward it to.
        to: String,
        /// Forwards so far.
        forwards: u32,
    },
}

/// What an operator reads in the log: the reason in words, never Rust's
/// debug text.
impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unusable::Validation(why) => write!(f, "invalid job: {why}"),
            Unusable::UnknownApp(app) => write!(f, "app_id {app} is not one this worker serves"),
            Unusable::NoApp => f.write_str("the job names no app_id and this worker has no default app"),
            Unusable::Expired(at) => write!(f, "expired: its not_after {} had passed", crate::amqp::headers::rfc3339(*at)),
            Unusable::Misrouted { to, forwards } => write!(
                f,
                "forwarded {forwards} time(s) and bound for shard {to} again: the workers' configs disagree on its app's shard"
            ),
        }
    }
}

/// Intake -> router.
#[derive(Debug)]
pub(crate) enum RouterInput {
    /// A usable delivery, registered before its users reach the coalescer, so
    /// the router always knows a delivery before any call result for it.
    Received {
        /// The handle that acks.
        delivery: Delivery,
        /// The job.
        job: Arc<Job>,
        /// Users the ledger already shows as kicked for this job id.
        skipped: Vec<String>,
    },
    /// A delivery to dead-letter verbatim.
    Unusable {
        /// The handle that acks.
        delivery: Delivery,
        /// The original body bytes.
        body: Vec<u8>,
        /// Why it cannot be used: the dead letter's reason.
        why: Unusable,
        /// The job id, when one could be read.
        job_id: Option<String>,
        /// Attempts header of the original, if any.
        attempts: u32,
        /// The lane it came from (for its outcome event).
        lane: Lane,
    },
    /// A job of an app that another shard serves: republish it unchanged to
    /// that shard's queue of the same lane, confirmed, then ack.
    Forward {
        /// The handle that acks.
        delivery: Delivery,
        /// The original body bytes.
        body: Vec<u8>,
        /// The original properties (kept, but for the broker's delivery count).
        properties: Box<lapin::BasicProperties>,
        /// The shard that serves its app.
        to: crate::config::shards::ShardName,
        /// Its lane, kept.
        lane: Lane,
    },
    /// Dispatcher -> router: what became of a chunk's users.
    Outcome(ChunkOutcome),
}

/// How the dispatcher should treat a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Call the API; the token was spent at this instant.
    Call(tokio::time::Instant),
    /// Do not call: the AppId is halted and these users have been held too
    /// long; hand them back to the broker unchanged.
    Defer,
    /// Do not call: every job waiting on these users is past its
    /// `not_after`; dead-letter them `expired`.
    Expired,
}

/// Coalescer -> dispatcher.
#[derive(Debug)]
pub(crate) struct Dispatch {
    /// The users to call for.
    pub chunk: Chunk<Arc<Job>>,
    /// Call or defer.
    pub mode: Mode,
    /// The concurrency slot this call holds; `None` for a deferral, which
    /// makes no call. Dropped when the outcome is handed to the router.
    pub slot: Option<crate::pipeline::slots::Slot>,
}

/// The final word of this round on one user of a chunk.
#[derive(Debug, Clone)]
pub(crate) struct UserResult {
    /// The user.
    pub user_id: Arc<str>,
    /// Every job that asked for this user.
    pub waiters: Vec<Arc<Job>>,
    /// Kicked, nothing to do, retry, rate limited, dead letter or halt
    /// (never Split/Shrink: the dispatcher resolves those itself).
    pub disposition: Disposition,
    /// The deciding API code, if the API answered.
    pub code: Option<i64>,
    /// The deciding call's RequestId.
    pub request_id: Option<String>,
    /// Human-readable detail: the API message or the transport failure.
    pub detail: String,
    /// Past every waiting job's `not_after` before its call: dead-lettered
    /// `expired`, no call made (`disposition` is then not used).
    pub expired: bool,
}

/// Dispatcher -> router: the users of one chunk and the calls made for them.
#[derive(Debug)]
pub(crate) struct ChunkOutcome {
    /// One entry per user of the chunk.
    pub users: Vec<UserResult>,
    /// Every HTTP attempt made (more than one after a split or shrink).
    pub calls: Vec<CallRow>,
}

/// The router's backpressure signal to the coalescer (a `watch` channel made
/// by the composition root): while ledger writes stall, calls made now could
/// not be recorded nor their deliveries acked, so the coalescer cuts none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LedgerWrites {
    /// Writes go through (or there is no ledger).
    Flowing,
    /// PostgreSQL is away; the router is waiting it out.
    Stalled,
}
