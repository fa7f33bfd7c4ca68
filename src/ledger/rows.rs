//! The rows the worker writes: a batch of job receipts, API calls and per-user outcomes, and the outcome names.

use chrono::{DateTime, Utc};
use serde::Serialize;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// What one delivery, or several, leave in the ledger. Written atomically by
/// [`Ledger::write`]; an empty batch writes nothing and contacts nobody.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LedgerBatch {
    /// Job receipts, in arrival order.
    pub receipts: Vec<ReceiptRow>,
    /// API calls, in the order they started.
    pub calls: Vec<CallRow>,
    /// Per-user outcomes. Rows with the same `at` read back newest-last-written
    /// first, so push them in the order they happened.
    pub outcomes: Vec<OutcomeRow>,
}

impl LedgerBatch {
    /// True when the batch holds no row at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows in the batch, all tables together.
    pub fn len(&self) -> usize {
        self.receipts.len() + self.calls.len() + self.outcomes.len()
    }

    /// Moves `other`'s rows after this batch's rows, table by table.
    pub fn append(&mut self, mut other: LedgerBatch) {
        self.receipts.append(&mut other.receipts);
        self.calls.append(&mut other.calls);
        self.outcomes.append(&mut other.outcomes);
    }
}

/// One job as the worker received it (table `job_receipts`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReceiptRow {
    /// The job's idempotency key (the message's `job_id`, its AMQP
    /// `message_id`, or a generated one).
    pub job_id: String,
    /// AppId the job runs under (stored as `bigint`: a uint32 overflows int4).
    pub app_id: u32,
    /// Room to kick from.
    pub room_id: String,
    /// Users the job asked to kick, in message order.
    pub user_ids: Vec<String>,
    /// The `CustomReason`, if any; never `Some("")` for a validated job.
    pub reason: Option<String>,
    /// Deliveries of this job so far, this one included.
    pub attempts: u32,
    /// The broker's redelivered flag.
    pub redelivered: bool,
    /// When the worker received the delivery (stored to the microsecond).
    pub received_at: DateTime<Utc>,
}

/// One KickoutUser call and what came back (table `api_calls`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallRow {
    /// AppId the call was signed for.
    pub app_id: u32,
    /// Room of the call.
    pub room_id: String,
    /// Users in the call (at most five for a real call).
    pub user_ids: Vec<String>,
    /// `CustomReason` sent, if any.
    pub reason: Option<String>,
    /// 1 for the first try of these users, counting up on retries.
    pub attempt: u32,
    /// The API's return `Code`; `None` when no parseable body arrived.
    pub code: Option<i64>,
    /// The API's `Message`.
    pub message: Option<String>,
    /// The API's `RequestId`, the handle ZEGOCLOUD support asks for.
    pub request_id: Option<String>,
    /// HTTP status; `None` when the request never got a response.
    pub http_status: Option<u16>,
    /// Why no response arrived (connect error, timeout); `None` when one did.
    pub transport_error: Option<String>,
    /// Time from sending to the full response, stored truncated to the
    /// microsecond (and saturated at about 292,000 years).
    pub latency: Duration,
    /// When the request was sent.
    pub started_at: DateTime<Utc>,
}

/// What happened to one user of one job. `as_str` is the value stored in
/// `user_outcomes.outcome` and must match the table's CHECK constraint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UserOutcome {
    /// The API confirmed the kick.
    Kicked,
    /// The API said there was nothing to do (user not in the room); final.
    NothingToDo,
    /// Given up on and published to the dead-letter queue.
    DeadLettered,
    /// Processing halted (e.g. bad credentials) and later resumed for this user.
    HaltedThenResumed,
    /// A redelivery of a user already kicked for the same job_id; no call made.
    Skipped,
    /// A transient failure; the user was scheduled for another attempt.
    RetryScheduled,
}

impl UserOutcome {
    /// Every outcome, in declaration order.
    pub const ALL: [UserOutcome; 6] = [
        UserOutcome::Kicked,
        UserOutcome::NothingToDo,
        UserOutcome::DeadLettered,
        UserOutcome::HaltedThenResumed,
        UserOutcome::Skipped,
        UserOutcome::RetryScheduled,
    ];

    /// The snake_case name, as stored and as printed.
    pub fn as_str(self) -> &'static str {
        match self {
            UserOutcome::Kicked => "kicked",
            UserOutcome::NothingToDo => "nothing_to_do",
            UserOutcome::DeadLettered => "dead_lettered",
            UserOutcome::HaltedThenResumed => "halted_then_resumed",
            UserOutcome::Skipped => "skipped",
            UserOutcome::RetryScheduled => "retry_scheduled",
        }
    }
}

impl fmt::Display for UserOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not one of the [`UserOutcome`] names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown outcome {0:?}")]
pub struct UnknownOutcome(pub String);

impl FromStr for UserOutcome {
    type Err = UnknownOutcome;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UserOutcome::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| UnknownOutcome(s.to_owned()))
    }
}

/// One user's outcome within one job (table `user_outcomes`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutcomeRow {
    /// The job's idempotency key.
    pub job_id: String,
    /// AppId of the job.
    pub app_id: u32,
    /// Room of the job.
    pub room_id: String,
    /// The user this row is about.
    pub user_id: String,
    /// The job's `CustomReason`, if any.
    pub reason: Option<String>,
    /// What happened.
    pub outcome: UserOutcome,
    /// The API return code behind the outcome, if a call was made.
    pub code: Option<i64>,
    /// The `RequestId` of that call, if any.
    pub request_id: Option<String>,
    /// Free-text context (dead-letter cause, halt reason, ...).
    pub detail: Option<String>,
    /// When the outcome was decided (stored to the microsecond).
    pub at: DateTime<Utc>,
}
