//! Outcome events, as pure functions: a finished delivery's outcome (kicked, retrying, partial, failed,
//! expired) from its users' verdicts, the event's stable id, its routing key and its CloudEvents 1.0 body.
//! No I/O: the router publishes what these return.

use crate::amqp::headers::DeadError;
use chrono::{DateTime, SecondsFormat, Utc};
use md5::{Digest, Md5};
use serde::Serialize;

/// The CloudEvents content type of an event body (structured mode).
pub(crate) const CONTENT_TYPE: &str = "application/cloudevents+json";
/// The prefix of every event's `type`: `com.kickq.job.kicked` and so on.
pub(crate) const TYPE_PREFIX: &str = "com.kickq.job.";
/// The routing-key app part of a delivery whose AppId could not be read.
pub(crate) const UNKNOWN_APP: &str = "unknown";

/// What became of one delivery, as a whole: the first word of the routing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Outcome {
    /// Every user kicked, found to need no kick, or already done for this job id.
    Kicked,
    /// Some users scheduled for a retry (or deferred by a halt), none dead-lettered.
    Retrying,
    /// Some users dead-lettered, not all.
    Partial,
    /// Every user dead-lettered, not all of them `expired`.
    Failed,
    /// Every user dead-lettered `expired` (or the delivery expired at intake).
    Expired,
}

impl Outcome {
    /// Every outcome, in the README's order.
    pub(crate) const ALL: [Outcome; 5] = [
        Outcome::Kicked,
        Outcome::Retrying,
        Outcome::Partial,
        Outcome::Failed,
        Outcome::Expired,
    ];

    /// The outcome's name: `kicked`, `retrying`, `partial`, `failed`, `expired`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Kicked => "kicked",
            Outcome::Retrying => "retrying",
            Outcome::Partial => "partial",
            Outcome::Failed => "failed",
            Outcome::Expired => "expired",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `--outcome` value that names no outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an outcome: use kicked, retrying, partial, failed or expired")]
pub(crate) struct UnknownOutcome(pub String);

impl std::str::FromStr for Outcome {
    type Err = UnknownOutcome;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Outcome::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| UnknownOutcome(s.to_owned()))
    }
}

/// One user's verdict in this delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Kicked by a call of this delivery.
    Kicked,
    /// The API said there was nothing to do (room gone, user not in it).
    NothingToDo,
    /// The ledger already showed this user done for this job id: no call.
    AlreadyDone,
    /// Published to a delay queue (a retry, or a deferral while halted).
    Retrying,
    /// Dead-lettered.
    DeadLettered {
        /// The dead letter's `kickq-error`.
        error: DeadError,
        /// The API's code, when it answered one.
        code: Option<i64>,
        /// The dead letter's detail (never a URL or a secret).
        detail: String,
    },
}

/// A user of the delivery and what became of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserVerdict {
    /// The user id.
    pub user_id: String,
    /// Their verdict.
    pub verdict: Verdict,
    /// The RequestId of the call that decided it, if a call did.
    pub request_id: Option<String>,
}

/// The delivery's outcome from its users' verdicts (the README's rule):
/// any user dead-lettered makes it `partial`, or `failed` when all are
/// (`expired` when all of those are `expired`: a mix of `expired` and other
/// errors is `failed`); otherwise any user retrying makes it `retrying`;
/// otherwise it is `kicked`.
pub(crate) fn outcome_of<'a>(verdicts: impl IntoIterator<Item = &'a Verdict>) -> Outcome {
    let (mut users, mut dead, mut expired, mut retrying) = (0usize, 0usize, 0usize, 0usize);
    for v in verdicts {
        users += 1;
        match v {
            Verdict::DeadLettered { error, .. } => {
                dead += 1;
                expired += usize::from(*error == DeadError::Expired);
            }
            Verdict::Retrying => retrying += 1,
            Verdict::Kicked | Verdict::NothingToDo | Verdict::AlreadyDone => {}
        }
    }
    match () {
        _ if dead > 0 && dead == users && expired == users => Outcome::Expired,
        _ if dead > 0 && dead == users => Outcome::Failed,
        _ if dead > 0 => Outcome::Partial,
        _ if retrying > 0 => Outcome::Retrying,
        _ => Outcome::Kicked,
    }
}

/// What identifies one delivery's outcome: the same message finishing the
/// same way again (a redelivery after a crash) gets the same event id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdParts<'a> {
    /// `KICKQ_NAMESPACE`.
    pub namespace: &'a str,
    /// The job id; for a delivery without one, the hex MD5 of its body.
    pub job_key: &'a str,
    /// `kickq-attempts` of the delivery.
    pub attempts: u32,
    /// `kickq-rate-limited` of the delivery.
    pub rate_limited: u32,
    /// `kickq-halted-ms` of the delivery.
    pub halted_ms: u64,
    /// The delivery's users (any order).
    pub users: Vec<&'a str>,
    /// The outcome.
    pub outcome: Outcome,
}

/// The event id: a name-based UUID (version 3, MD5) of the [`IdParts`],
/// each part on its own line and the users sorted. The headers in it change
/// with every retry and deferral (a rate answer raises `kickq-rate-limited`,
/// a deferral `kickq-halted-ms`), so each delivery of a job has its own id,
/// and a redelivery of the same message that ends the same way repeats it.
pub(crate) fn event_id(p: &IdParts<'_>) -> String {
    let mut users = p.users.clone();
    users.sort_unstable();
    let mut h = Md5::new();
    for part in [
        "kickq-event",
        p.namespace,
        p.job_key,
        &p.attempts.to_string(),
        &p.rate_limited.to_string(),
        &p.halted_ms.to_string(),
        p.outcome.as_str(),
    ] {
        h.update(part.as_bytes());
        h.update(b"\n");
    }
    for u in users {
        h.update(u.as_bytes());
        h.update(b"\0");
    }
    let bytes: [u8; 16] = h.finalize().into();
    uuid::Builder::from_md5_bytes(bytes).into_uuid().to_string()
}

/// The hex MD5 of a body: the job key of a delivery without a job id.
pub(crate) fn body_key(body: &[u8]) -> String {
    hex::encode(Md5::digest(body))
}

/// Everything an event says about a delivery, gathered by the router.
#[derive(Debug, Clone)]
pub(crate) struct Finished {
    /// `KICKQ_NAMESPACE`.
    pub namespace: String,
    /// The job id, when one could be read.
    pub job_id: Option<String>,
    /// The AppId, when one could be read.
    pub app_id: Option<u32>,
    /// The room, when it could be read.
    pub room_id: Option<String>,
    /// The job's reason.
    pub reason: Option<String>,
    /// `live` or `bulk`.
    pub lane: &'static str,
    /// Failed API attempts before this delivery (`kickq-attempts`).
    pub attempts: u32,
    /// Rate answers before this delivery (`kickq-rate-limited`).
    pub rate_limited: u32,
    /// Time held by halts before this delivery (`kickq-halted-ms`).
    pub halted_ms: u64,
    /// Each user's verdict, in the job's order.
    pub users: Vec<UserVerdict>,
    /// For a delivery that could not be used at all: why (its dead letter's error and detail).
    pub unusable: Option<(DeadError, String)>,
    /// Only for a delivery without a job id: the hex MD5 of its body.
    pub body_key: Option<String>,
}

/// A rendered event: where it goes and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    /// `<outcome>.<app_id>` (app `unknown` when none could be read).
    pub routing_key: String,
    /// The CloudEvents id (also the AMQP message id).
    pub id: String,
    /// `com.kickq.job.<outcome>` (also the AMQP type).
    pub event_type: String,
    /// The outcome.
    pub outcome: Outcome,
    /// When it was rendered (also the AMQP timestamp).
    pub time: DateTime<Utc>,
    /// The structured CloudEvents JSON.
    pub body: Vec<u8>,
}

#[derive(Serialize)]
struct CloudEvent<'a> {
    specversion: &'static str,
    id: &'a str,
    source: String,
    #[serde(rename = "type")]
    event_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
    time: String,
    datacontenttype: &'static str,
    data: Data<'a>,
}

#[derive(Serialize)]
struct Data<'a> {
    outcome: Outcome,
    job_id: Option<&'a str>,
    app_id: Option<u32>,
    room_id: Option<&'a str>,
    reason: Option<&'a str>,
    lane: &'static str,
    attempts: u32,
    users: Users<'a>,
    request_ids: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Failure<'a>>,
}

#[derive(Serialize, Default)]
struct Users<'a> {
    kicked: Vec<&'a str>,
    nothing_to_do: Vec<&'a str>,
    already_done: Vec<&'a str>,
    retrying: Vec<&'a str>,
    dead_lettered: Vec<DeadUser<'a>>,
}

#[derive(Serialize)]
struct DeadUser<'a> {
    user_id: &'a str,
    error: &'static str,
    code: Option<i64>,
    detail: &'a str,
    request_id: Option<&'a str>,
}

#[derive(Serialize)]
struct Failure<'a> {
    error: &'static str,
    detail: &'a str,
}

/// Renders the event of a finished delivery at `time`.
pub(crate) fn render(f: &Finished, time: DateTime<Utc>) -> Event {
    let outcome = match &f.unusable {
        Some((DeadError::Expired, _)) => Outcome::Expired,
        Some(_) => Outcome::Failed,
        None => outcome_of(f.users.iter().map(|u| &u.verdict)),
    };
    let job_key = f.job_id.as_deref().or(f.body_key.as_deref()).unwrap_or_default();
    let id = event_id(&IdParts {
        namespace: &f.namespace,
        job_key,
        attempts: f.attempts,
        rate_limited: f.rate_limited,
        halted_ms: f.halted_ms,
        users: f.users.iter().map(|u| u.user_id.as_str()).collect(),
        outcome,
    });
    let event_type = format!("{TYPE_PREFIX}{outcome}");
    let mut users = Users::default();
    let mut request_ids: Vec<&str> = Vec::new();
    for u in &f.users {
        if let Some(r) = u.request_id.as_deref() {
            if !request_ids.contains(&r) {
                request_ids.push(r);
            }
        }
        let id = u.user_id.as_str();
        match &u.verdict {
            Verdict::Kicked => users.kicked.push(id),
            Verdict::NothingToDo => users.nothing_to_do.push(id),
            Verdict::AlreadyDone => users.already_done.push(id),
            Verdict::Retrying => users.retrying.push(id),
            Verdict::DeadLettered { error, code, detail } => users.dead_lettered.push(DeadUser {
                user_id: id,
                error: error.as_str(),
                code: *code,
                detail,
                request_id: u.request_id.as_deref(),
            }),
        }
    }
    let ce = CloudEvent {
        specversion: "1.0",
        id: &id,
        source: format!("kickq/{}", f.namespace),
        event_type: &event_type,
        subject: f.job_id.as_deref(),
        time: time.to_rfc3339_opts(SecondsFormat::Millis, true),
        datacontenttype: "application/json",
        data: Data {
            outcome,
            job_id: f.job_id.as_deref(),
            app_id: f.app_id,
            room_id: f.room_id.as_deref(),
            reason: f.reason.as_deref(),
            lane: f.lane,
            attempts: f.attempts,
            users,
            request_ids,
            error: f.unusable.as_ref().map(|(e, d)| Failure {
                error: e.as_str(),
                detail: d,
            }),
        },
    };
    let body = serde_json::to_vec(&ce).expect("strings, numbers and lists always serialize");
    let app = f.app_id.map_or_else(|| UNKNOWN_APP.to_owned(), |a| a.to_string());
    Event {
        routing_key: format!("{outcome}.{app}"),
        id,
        event_type,
        outcome,
        time,
        body,
    }
}

/// The binding key of `kickq events tail`: `<outcome>.<app>`, `*` for
/// either left open (`#` when both are: every event).
pub(crate) fn binding_key(outcome: Option<Outcome>, app: Option<&str>) -> String {
    match (outcome, app) {
        (None, None) => "#".to_owned(),
        (o, a) => format!("{}.{}", o.map_or("*", Outcome::as_str), a.unwrap_or("*")),
    }
}

/// Properties of an outcome event: persistent, CloudEvents JSON, the event
/// id as the message id, its type, and its time (seconds, as AMQP has it).
pub(crate) fn properties(e: &Event) -> lapin::BasicProperties {
    lapin::BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(CONTENT_TYPE.into())
        .with_message_id(e.id.as_str().into())
        .with_type(e.event_type.as_str().into())
        .with_timestamp(e.time.timestamp().max(0) as u64)
}

#[cfg(test)]
mod tests;
