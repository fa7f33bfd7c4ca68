//! What the router publishes and records for each user's verdict, built without I/O: the retry, deferral and
//! dead-letter messages (queue and properties), the event trail of a delivery, and the ledger's outcome rows.

use crate::amqp::headers::{self, DeadError, DeadLetter};
use crate::amqp::publish::persistent_json;
use crate::amqp::topology::Names;
use crate::ledger::{OutcomeRow, UserOutcome};
use crate::outcome::event::{self, Finished, UserVerdict, Verdict};
use crate::outcome::plan::Action;
use crate::pipeline::stage::Job;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;

/// One user's verdict for one job, on its way to being made durable.
pub(super) struct Entry {
    pub(super) job: Arc<Job>,
    pub(super) user: Arc<str>,
    pub(super) action: Action,
    pub(super) code: Option<i64>,
    pub(super) request_id: Option<String>,
    pub(super) detail: String,
}

/// Entries of one job that travel in the same message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Tag {
    Done,
    Retry { attempts: u32, rate_limited: u32 },
    Defer,
    Dead(DeadError, Option<i64>),
}

/// Where users deferred by a halt go, and how long they stay there.
pub(super) struct DeferQueue {
    /// Index of the delay queue in either lane's list (both have the same delays).
    pub(super) index: usize,
    pub(super) delay: Duration,
}

/// The queue and properties of the message that carries one job's users of
/// one kind (`es` is not empty; all share the job and the tag).
///
/// Retries carry no per-message expiration: RabbitMQ expires messages only
/// at the head of a queue, so a jittered (shorter) expiration behind a longer
/// one waits anyway, and the jitter did nothing. The delay queue's own TTL
/// sets the delay; retries of one outage still spread, because their users
/// failed at different times, and the gate paces their return.
pub(super) fn message_for(
    tag: Tag,
    es: &[&Entry],
    now: DateTime<Utc>,
    names: &Names,
    defer: &DeferQueue,
) -> (String, lapin::BasicProperties) {
    let first = es[0];
    let job = &first.job;
    let job_id = job.job_id();
    let state = |attempts, rate_limited, halted_for| headers::RetryState {
        attempts,
        rate_limited,
        first_attempt_at: Some(job.first_attempt_at.unwrap_or(now)),
        halted_for,
        last_code: first.code,
        halted: job.halted_before,
    };
    match tag {
        Tag::Done => unreachable!("done entries publish nothing"),
        Tag::Retry { attempts, rate_limited } => {
            // A rate answer goes to the shortest delay: the gate's slow-down
            // already paces the AppId, and a longer wait only idles budget.
            let step = if attempts == job.attempts { 1 } else { attempts };
            let (_, queue) = names.retry_queue(job.lane, step);
            let h = headers::retry(&state(attempts, rate_limited, job.halted_for), job_id, &job.carried);
            (queue.clone(), persistent_json(Some(job_id), h))
        }
        Tag::Defer => {
            // Held in the coalescer since intake, then in the delay queue:
            // none of it counts against the retry age.
            let held = (now - job.received_at).to_std().unwrap_or_default() + defer.delay;
            let mut st = state(job.attempts, job.rate_limited, job.halted_for + held);
            st.first_attempt_at = job.first_attempt_at;
            st.halted = true;
            let h = headers::retry(&st, job_id, &job.carried);
            let (_, name) = &names.retries(job.lane)[defer.index];
            (name.clone(), persistent_json(Some(job_id), h))
        }
        Tag::Dead(error, code) => {
            let detail = dead_detail(code, &first.detail);
            let dl = DeadLetter {
                error,
                code,
                detail,
                attempts: job.attempts + 1,
                job_id: Some(job_id.to_owned()),
                failed_at: now,
            };
            let h = headers::dead_letter(Some(&job.carried), &dl);
            (names.dead.clone(), persistent_json(Some(job_id), h))
        }
    }
}

/// A dead letter's `kickq-detail`: the API's code and its meaning, then the detail.
pub(super) fn dead_detail(code: Option<i64>, detail: &str) -> String {
    match code {
        Some(c) => format!("code {c} ({}): {detail}", crate::zego::codes::describe(c)),
        None => detail.to_owned(),
    }
}

/// The start of a usable delivery's event record: its job, and its users
/// already done by the ledger's word.
pub(super) fn trail(namespace: &str, job: &Job, skipped: &[String]) -> Finished {
    Finished {
        namespace: namespace.to_owned(),
        job_id: Some(job.job_id().to_owned()),
        app_id: Some(job.app_id),
        room_id: Some(job.request.room_id.clone()),
        reason: job.request.reason.clone(),
        lane: job.lane.as_str(),
        attempts: job.attempts,
        rate_limited: job.rate_limited,
        halted_ms: job.halted_for.as_millis() as u64,
        users: skipped
            .iter()
            .map(|u| UserVerdict {
                user_id: u.clone(),
                verdict: Verdict::AlreadyDone,
                request_id: None,
            })
            .collect(),
        unusable: None,
        body_key: None,
    }
}

/// The event record of a delivery that could not be used: what can be read
/// of its body (room, reason, users, app) with the dead letter's error for
/// every user.
/// What is known of a delivery that could not be used.
pub(super) struct Unreadable<'a> {
    /// Its body, as it came.
    pub(super) body: &'a [u8],
    /// Its job id, if one could be read.
    pub(super) job_id: &'a Option<String>,
    /// Attempts already made for it.
    pub(super) attempts: u32,
    /// The lane it came from.
    pub(super) lane: crate::amqp::topology::Lane,
    /// The app its users count for when the body names none.
    pub(super) default_app: Option<u32>,
    /// Its dead letter's error and detail.
    pub(super) error: DeadError,
    /// The detail of that error.
    pub(super) detail: &'a str,
}

pub(super) fn unusable_trail(namespace: &str, u: &Unreadable<'_>) -> Finished {
    let Unreadable {
        body,
        job_id,
        attempts,
        lane,
        default_app,
        error,
        detail,
    } = *u;
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
    let users = v
        .get("user_ids")
        .and_then(|u| u.as_array())
        .map(|a| a.iter().filter_map(|u| u.as_str()).collect::<Vec<_>>())
        .unwrap_or_default();
    let app_id = v
        .get("app_id")
        .and_then(|a| a.as_u64())
        .and_then(|a| u32::try_from(a).ok())
        .or(default_app);
    Finished {
        namespace: namespace.to_owned(),
        job_id: job_id.clone(),
        app_id,
        room_id: text("room_id"),
        reason: text("reason"),
        lane: lane.as_str(),
        attempts,
        rate_limited: 0,
        halted_ms: 0,
        users: users
            .into_iter()
            .map(|u| UserVerdict {
                user_id: u.to_owned(),
                verdict: Verdict::DeadLettered {
                    error,
                    code: None,
                    detail: detail.to_owned(),
                },
                request_id: None,
            })
            .collect(),
        unusable: Some((error, detail.to_owned())),
        body_key: job_id.is_none().then(|| event::body_key(body)),
    }
}

/// The ledger row of one user's outcome for one job.
pub(super) fn outcome_row(
    job: &Job,
    user: &str,
    outcome: UserOutcome,
    code: Option<i64>,
    request_id: Option<String>,
    detail: Option<String>,
) -> OutcomeRow {
    OutcomeRow {
        job_id: job.job_id().to_owned(),
        app_id: job.app_id,
        room_id: job.request.room_id.clone(),
        user_id: user.to_owned(),
        reason: job.request.reason.clone(),
        outcome,
        code,
        request_id,
        detail,
        at: Utc::now(),
    }
}
