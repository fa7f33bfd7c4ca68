//! The outcome router: the only module that acknowledges deliveries. It turns each user's result into done,
//! a retry message, a deferral or a dead letter (publisher-confirmed), writes the ledger rows, and acks a
//! delivery once all of its users are resolved and everything they caused is durable.

pub mod book;
pub mod plan;

use crate::amqp::delivery::{Acked, Delivery};
use crate::amqp::headers::{self, DeadError, DeadLetter};
use crate::amqp::publish::{persistent_json, Pending, PublishError, Publisher};
use crate::amqp::topology::Names;
use crate::health::Health;
use crate::ledger::{CallRow, Ledger, LedgerBatch, OutcomeRow, ReceiptRow, UserOutcome};
use crate::stage::{ChunkOutcome, Job, RouterInput, Unusable};
use book::Book;
use chrono::{DateTime, Utc};
use plan::{plan, Action, Budget};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Default most ledger rows per batch write.
pub const DEFAULT_LEDGER_BATCH_ROWS: usize = 2000;
/// Default longest a ledger row waits for its batch: bounds the ack latency
/// the ledger adds under load (at light load a batch is written as soon as
/// the router's input is empty).
pub const DEFAULT_LEDGER_LINGER: Duration = Duration::from_millis(50);
/// Pause between ledger write attempts while PostgreSQL is away.
const LEDGER_RETRY: Duration = Duration::from_secs(1);

/// The router's settings.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Queue names (retry delays, dead letters).
    pub names: Names,
    /// The retry budget.
    pub budget: Budget,
    /// Most ledger rows per write.
    pub ledger_batch_rows: usize,
    /// Longest a row waits for its batch.
    pub ledger_linger: Duration,
    /// Delay before users deferred by a halt come back (rounded up to a delay queue).
    pub defer_delay: Duration,
}

/// Why the router stopped.
#[derive(Debug)]
pub enum RouterEnd {
    /// Its input closed and everything was flushed.
    Drained,
    /// A publish or the ledger failed for good in this session; unacked
    /// deliveries will come again.
    Broker(PublishError),
    /// The session was aborted.
    Aborted,
}

/// Tallies for the end-of-run summary and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Deliveries acked.
    pub acked: u64,
    /// Acks that did not land (the message will come again).
    pub ack_failed: u64,
    /// Dead letters published.
    pub dead_letters: u64,
    /// Retry messages published (including deferrals).
    pub retries: u64,
}

/// One user's verdict for one job, on its way to being made durable.
struct Entry {
    job: Arc<Job>,
    user: Arc<str>,
    action: Action,
    code: Option<i64>,
    request_id: Option<String>,
    detail: String,
}

/// Entries of one job that travel in the same message.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Tag {
    Done,
    Retry(u32),
    Defer,
    Dead(DeadError, Option<i64>),
}

struct Router {
    cfg: RouterConfig,
    publisher: Publisher,
    ledger: Option<Ledger>,
    health: Arc<Health>,
    books: HashMap<u64, Book<Delivery>>,
    ready: Vec<Delivery>,
    rows: LedgerBatch,
    rows_since: Option<Instant>,
    tally: Tally,
    defer_queue: String,
}

/// Runs until the input closes (then flushes, acks what is done and returns
/// the rest to the queue) or the session fails.
pub async fn run(
    mut input: mpsc::Receiver<RouterInput>,
    publisher: Publisher,
    ledger: Option<Ledger>,
    health: Arc<Health>,
    cfg: RouterConfig,
    abort: CancellationToken,
) -> (RouterEnd, Tally) {
    let defer_queue = cfg
        .names
        .retry
        .iter()
        .find(|(d, _)| *d >= cfg.defer_delay)
        .or(cfg.names.retry.last())
        .expect("there is always at least one delay queue")
        .1
        .clone();
    let mut r = Router {
        cfg,
        publisher,
        ledger,
        health,
        books: HashMap::new(),
        ready: Vec::new(),
        rows: LedgerBatch::default(),
        rows_since: None,
        tally: Tally::default(),
        defer_queue,
    };
    let end = loop {
        let flush_at = r.rows_since.map(|t| t + r.cfg.ledger_linger);
        let msg = tokio::select! {
            biased;
            _ = abort.cancelled() => break RouterEnd::Aborted,
            msg = input.recv() => msg,
            _ = sleep_until_opt(flush_at) => {
                if let Err(end) = r.flush(&abort).await { break end; }
                continue;
            }
        };
        let Some(msg) = msg else {
            if let Err(end) = r.flush(&abort).await {
                break end;
            }
            r.return_unfinished().await;
            break RouterEnd::Drained;
        };
        if let Err(e) = r.handle(msg).await {
            break RouterEnd::Broker(e);
        }
        let batch_full = r.rows.len() >= r.cfg.ledger_batch_rows;
        if r.ledger.is_none() || batch_full || input.is_empty() {
            if let Err(end) = r.flush(&abort).await {
                break end;
            }
        }
    };
    (end, r.tally)
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Router {
    async fn handle(&mut self, msg: RouterInput) -> Result<(), PublishError> {
        match msg {
            RouterInput::Received { delivery, job, skipped } => {
                self.received(delivery, job, skipped);
                Ok(())
            }
            RouterInput::Unusable {
                delivery,
                body,
                why,
                job_id,
                attempts,
            } => self.unusable(delivery, body, why, job_id, attempts).await,
            RouterInput::Outcome(outcome) => self.outcome(outcome).await,
        }
    }

    fn received(&mut self, delivery: Delivery, job: Arc<Job>, skipped: Vec<String>) {
        if self.ledger.is_some() {
            self.note_rows();
            self.rows.receipts.push(ReceiptRow {
                job_id: job.job_id().to_owned(),
                app_id: job.app_id,
                room_id: job.request.room_id.clone(),
                user_ids: job.request.user_ids.clone(),
                reason: job.request.reason.clone(),
                attempts: job.attempts,
                redelivered: job.redelivered,
                received_at: job.received_at,
            });
            for user in &skipped {
                self.rows.outcomes.push(outcome_row(
                    &job,
                    user,
                    UserOutcome::Skipped,
                    None,
                    None,
                    Some("already kicked for this job_id".into()),
                ));
            }
        }
        if !skipped.is_empty() {
            crate::metrics::users("skipped", skipped.len() as u64);
        }
        let book = Book::new(delivery, &job.request.user_ids, &skipped);
        if book.is_done() {
            self.ready.push(book.into_handle());
        } else {
            self.books.insert(job.id, book);
        }
    }

    async fn unusable(
        &mut self,
        delivery: Delivery,
        body: Vec<u8>,
        why: Unusable,
        job_id: Option<String>,
        attempts: u32,
    ) -> Result<(), PublishError> {
        let (error, detail) = match why {
            Unusable::Validation(d) => (DeadError::Validation, d),
            Unusable::UnknownApp(app) => (
                DeadError::UnknownApp,
                format!("no secret for AppId {app} in this worker"),
            ),
        };
        let dl = DeadLetter {
            error,
            code: None,
            detail,
            attempts,
            job_id: job_id.clone(),
            failed_at: Utc::now(),
        };
        let props = persistent_json(job_id.as_deref(), headers::dead_letter(None, &dl));
        self.publisher.publish(&self.cfg.names.dead, &body, props).await?;
        crate::metrics::dead_letter(error.as_str());
        self.tally.dead_letters += 1;
        self.ready.push(delivery);
        Ok(())
    }

    async fn outcome(&mut self, outcome: ChunkOutcome) -> Result<(), PublishError> {
        let now = Utc::now();
        if self.ledger.is_some() && !outcome.calls.is_empty() {
            self.note_rows();
            for c in &outcome.calls {
                self.rows.calls.push(CallRow {
                    app_id: outcome.key.app_id,
                    room_id: outcome.key.room_id.to_string(),
                    user_ids: c.user_ids.clone(),
                    reason: outcome.key.reason.as_deref().map(str::to_owned),
                    attempt: c.attempt,
                    code: c.code,
                    message: c.message.clone(),
                    request_id: c.request_id.clone(),
                    http_status: c.http_status,
                    transport_error: c.transport_error.clone(),
                    latency: c.latency,
                    started_at: c.started_at,
                });
            }
        }
        let mut entries = Vec::new();
        for u in outcome.users {
            for job in u.waiters {
                // A job whose book is gone belongs to a lost channel: the
                // broker delivers it again, so nothing is published for it.
                if !self.books.get(&job.id).is_some_and(|b| b.is_pending(&u.user_id)) {
                    continue;
                }
                let action = plan(u.disposition, job.attempts, job.first_attempt_at, now, &self.cfg.budget);
                entries.push(Entry {
                    job,
                    user: u.user_id.clone(),
                    action,
                    code: u.code,
                    request_id: u.request_id.clone(),
                    detail: u.detail.clone(),
                });
            }
        }
        self.publish_for(&entries, now).await?;
        for e in entries {
            self.settle(e);
        }
        Ok(())
    }

    /// Publishes every retry, deferral and dead letter the entries call for,
    /// one message per (job, kind), pipelined, then waits for every confirm.
    async fn publish_for(&mut self, entries: &[Entry], now: DateTime<Utc>) -> Result<(), PublishError> {
        let mut groups: HashMap<(u64, Tag), Vec<&Entry>> = HashMap::new();
        for e in entries {
            let tag = match e.action {
                Action::Kicked | Action::NothingToDo => Tag::Done,
                Action::Retry { failed_attempt, .. } => Tag::Retry(failed_attempt),
                Action::Defer => Tag::Defer,
                Action::DeadLetter(err) => Tag::Dead(err, e.code),
            };
            if tag != Tag::Done {
                groups.entry((e.job.id, tag)).or_default().push(e);
            }
        }
        let mut pending: Vec<Pending> = Vec::with_capacity(groups.len());
        for ((_, tag), es) in groups {
            let job = &es[0].job;
            let users: Vec<String> = es.iter().map(|e| e.user.to_string()).collect();
            let body = job.request.with_users(users).to_body();
            let job_id = job.job_id();
            let last = es[0];
            let (queue, props) = match tag {
                Tag::Done => unreachable!("done entries are filtered out above"),
                Tag::Retry(failed_attempt) => {
                    let (delay, queue) = self.cfg.names.retry_for(failed_attempt);
                    let h = headers::retry(
                        failed_attempt,
                        Some(job.first_attempt_at.unwrap_or(now)),
                        last.code,
                        false,
                        job_id,
                    );
                    let kind = match last.action {
                        Action::Retry { kind, .. } => kind,
                        _ => "transient",
                    };
                    crate::metrics::retry(kind);
                    (
                        queue.clone(),
                        persistent_json(Some(job_id), h).with_expiration(jittered(*delay).into()),
                    )
                }
                Tag::Defer => {
                    crate::metrics::retry("halted");
                    let mut h = headers::retry(job.attempts, job.first_attempt_at, last.code, true, job_id);
                    carry(&mut h, &job.carried);
                    (self.defer_queue.clone(), persistent_json(Some(job_id), h))
                }
                Tag::Dead(error, code) => {
                    crate::metrics::dead_letter(error.as_str());
                    let detail = match code {
                        Some(c) => format!("code {c} ({}): {}", crate::zego::codes::describe(c), last.detail),
                        None => last.detail.clone(),
                    };
                    let dl = DeadLetter {
                        error,
                        code,
                        detail,
                        attempts: job.attempts + 1,
                        job_id: Some(job_id.to_owned()),
                        failed_at: now,
                    };
                    (
                        self.cfg.names.dead.clone(),
                        persistent_json(Some(job_id), headers::dead_letter(None, &dl)),
                    )
                }
            };
            if matches!(tag, Tag::Dead(..)) {
                self.tally.dead_letters += 1;
            } else {
                self.tally.retries += 1;
            }
            pending.push(self.publisher.send(&queue, &body, props).await?);
        }
        for p in pending {
            p.confirmed().await?;
        }
        Ok(())
    }

    /// Resolves an entry's user in its job's book (its message, if any, is
    /// confirmed), records the ledger row, and readies the delivery when done.
    fn settle(&mut self, e: Entry) {
        let (label, ledger_outcome) = match e.action {
            Action::Kicked if e.job.halted_before => ("kicked", UserOutcome::HaltedThenResumed),
            Action::Kicked => ("kicked", UserOutcome::Kicked),
            Action::NothingToDo => ("nothing_to_do", UserOutcome::NothingToDo),
            Action::Retry { .. } => ("retry_scheduled", UserOutcome::RetryScheduled),
            Action::Defer => ("deferred", UserOutcome::RetryScheduled),
            Action::DeadLetter(_) => ("dead_lettered", UserOutcome::DeadLettered),
        };
        crate::metrics::users(label, 1);
        if self.ledger.is_some() {
            self.note_rows();
            let detail = match e.action {
                Action::Defer => Some(format!("deferred while halted: {}", e.detail)),
                _ if e.detail.is_empty() => None,
                _ => Some(e.detail.clone()),
            };
            self.rows.outcomes.push(outcome_row(
                &e.job,
                &e.user,
                ledger_outcome,
                e.code,
                e.request_id.clone(),
                detail,
            ));
        }
        let done = match self.books.get_mut(&e.job.id) {
            Some(book) => {
                book.resolve(&e.user);
                book.is_done()
            }
            None => false,
        };
        if done {
            let book = self.books.remove(&e.job.id).expect("book looked up just above");
            self.ready.push(book.into_handle());
        }
    }

    fn note_rows(&mut self) {
        self.rows_since.get_or_insert_with(Instant::now);
    }

    /// Writes pending ledger rows (waiting out a PostgreSQL outage), then
    /// acks every delivery that is done.
    async fn flush(&mut self, abort: &CancellationToken) -> Result<(), RouterEnd> {
        if let Some(ledger) = &self.ledger {
            if !self.rows.is_empty() {
                loop {
                    match ledger.write(&self.rows).await {
                        Ok(()) => {
                            crate::metrics::ledger_write(true);
                            self.health.set_ledger_ok(true);
                            break;
                        }
                        Err(e) => {
                            crate::metrics::ledger_write(false);
                            self.health.set_ledger_ok(false);
                            tracing::warn!(error = %e, rows = self.rows.len(), waiting_acks = self.ready.len(), "ledger write failed; holding acks until PostgreSQL is back");
                            tokio::select! {
                                _ = abort.cancelled() => return Err(RouterEnd::Aborted),
                                _ = tokio::time::sleep(LEDGER_RETRY) => {}
                            }
                        }
                    }
                }
                self.rows = LedgerBatch::default();
            }
            self.rows_since = None;
        }
        for d in self.ready.drain(..) {
            self.health.delivery_finished();
            match d.ack().await {
                Ok(Acked::Done) => self.tally.acked += 1,
                Ok(Acked::WillRedeliver) => {
                    self.tally.ack_failed += 1;
                    crate::metrics::ack_failure("stale");
                }
                Err(e) => {
                    self.tally.ack_failed += 1;
                    crate::metrics::ack_failure("error");
                    tracing::warn!(error = %crate::amqp::connect::describe(&e), "ack failed; the message will be delivered again");
                }
            }
        }
        Ok(())
    }

    /// At shutdown: hands every unfinished delivery back to the queue now
    /// rather than at channel close, so the next worker sees it at once.
    async fn return_unfinished(&mut self) {
        let n = self.books.len();
        for (_, book) in self.books.drain() {
            self.health.delivery_finished();
            let _ = book.into_handle().requeue().await;
        }
        if n > 0 {
            tracing::info!(deliveries = n, "returned unfinished deliveries to the queue");
        }
    }
}

fn carry(into: &mut lapin::types::FieldTable, carried: &lapin::types::FieldTable) {
    for (k, v) in carried.inner() {
        into.insert(k.clone(), v.clone());
    }
}

fn outcome_row(
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

/// A delay between half and all of `delay`, in milliseconds, as the AMQP
/// `expiration` property. Jitter spreads retries of one outage over time; the
/// delay queue's own TTL (the full delay) bounds it from above.
fn jittered(delay: Duration) -> String {
    let ms = delay.as_millis() as u64;
    let low = ms / 2;
    let v = if ms > low {
        low + rand::random::<u64>() % (ms - low + 1)
    } else {
        ms
    };
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_between_half_and_full() {
        for _ in 0..1000 {
            let v: u64 = jittered(Duration::from_secs(5)).parse().unwrap();
            assert!((2500..=5000).contains(&v), "{v}");
        }
        assert_eq!(jittered(Duration::ZERO), "0");
    }
}
