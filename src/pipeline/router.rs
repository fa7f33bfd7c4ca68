//! The outcome router: the only module that acknowledges deliveries. It turns each user's result into done,
//! a retry message, a deferral or a dead letter (publisher-confirmed), writes the ledger rows, and acks a
//! delivery once all of its users are resolved and everything they caused is durable (with
//! `KICKQ_EVENTS=on`, its outcome event too).

use crate::amqp::delivery::{Acked, Delivery};
use crate::amqp::headers::{self, DeadError, DeadLetter};
use crate::amqp::publish::{persistent_json, PublishError, Publisher, PUBLISH_WINDOW};
use crate::amqp::topology::Names;
use crate::health::{Health, ShardState};
use crate::ledger::{Ledger, LedgerBatch, ReceiptRow, UserOutcome};
use crate::outcome::book::Book;
use crate::outcome::event::{self, Finished, UserVerdict, Verdict};
use crate::outcome::plan::{plan, Action, Budget};
use crate::pipeline::stage::{ChunkOutcome, Job, LedgerWrites, RouterInput, Unusable};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Default most ledger rows per batch write.
pub(crate) const DEFAULT_LEDGER_BATCH_ROWS: usize = 2000;
/// Default longest a ledger row waits for its batch: bounds the ack latency
/// the ledger adds under load (at light load a batch is written as soon as
/// the router's input is empty).
pub(crate) const DEFAULT_LEDGER_LINGER: Duration = Duration::from_millis(50);
/// Pause between ledger write attempts while PostgreSQL is away.
const LEDGER_RETRY: Duration = Duration::from_secs(1);

/// The router's settings.
#[derive(Debug, Clone)]
pub(crate) struct RouterConfig {
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
    /// Publish an outcome event per finished delivery to `names.events`
    /// before its ack (`KICKQ_EVENTS`).
    pub events: bool,
    /// The app of jobs that name none: the routing key of an event for a
    /// job that expired at intake without naming its app.
    pub default_app: Option<u32>,
}

/// Why the router stopped.
#[derive(Debug)]
pub(crate) enum RouterEnd {
    /// Its input closed and everything was flushed.
    Drained,
    /// A publish or the ledger failed for good in this session; unacked
    /// deliveries will come again.
    Broker(PublishError),
    /// The session was aborted.
    Aborted,
    /// The ledger refused the rows for a reason that waiting will not fix
    /// (a missing table or permission, a constraint): the worker stops, and
    /// the unacked deliveries return to the queue.
    Ledger(crate::ledger::LedgerError),
}

/// Tallies for the end-of-run summary and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SessionTally {
    /// Deliveries acked.
    pub acked: u64,
    /// Acks that did not land (the message will come again).
    pub ack_failed: u64,
    /// Dead letters published.
    pub dead_letters: u64,
    /// Retry messages published (including deferrals).
    pub retries: u64,
    /// Outcome events published (confirmed).
    pub events: u64,
    /// Jobs forwarded to the shard that serves their app (confirmed).
    pub forwarded: u64,
}

struct Router {
    cfg: RouterConfig,
    publisher: Publisher,
    ledger: Option<Ledger>,
    ledger_writes: watch::Sender<LedgerWrites>,
    health: Arc<Health>,
    shard: Arc<ShardState>,
    books: HashMap<u64, Book<Delivery>>,
    ready: Vec<Delivery>,
    rows: LedgerBatch,
    rows_since: Option<Instant>,
    tally: SessionTally,
    defer: DeferQueue,
    /// With events on: what each unfinished delivery's users became, by job
    /// id (empty, and never touched, with events off).
    trails: HashMap<u64, Finished>,
    /// Events of the deliveries in `ready`, published before their acks.
    events: Vec<event::Event>,
}

/// What the router runs with, built by the composition root (`pipeline/mod.rs`).
pub(crate) struct Context {
    /// Registrations from intake, outcomes from the dispatcher.
    pub input: mpsc::Receiver<RouterInput>,
    /// Confirmed publishes of retries and dead letters.
    pub publisher: Publisher,
    /// The audit ledger, if on: rows are committed before the ack.
    pub ledger: Option<Ledger>,
    /// Tells the coalescer whether ledger writes go through (backpressure).
    pub ledger_writes: watch::Sender<LedgerWrites>,
    /// Where the router reports its counts and the ledger's state.
    pub health: Arc<Health>,
    /// The shard's deliveries in flight.
    pub shard: Arc<ShardState>,
    /// Settings.
    pub cfg: RouterConfig,
    /// Fires when the session is gone: stop at once.
    pub abort: CancellationToken,
}

/// Runs until the input closes (then flushes, acks what is done and returns
/// the rest to the queue) or the session fails.
pub(crate) async fn run(cx: Context) -> (RouterEnd, SessionTally) {
    let Context {
        mut input,
        publisher,
        ledger,
        ledger_writes,
        health,
        shard,
        cfg,
        abort,
    } = cx;
    // Both lanes have the same delays: the index names the queue in either.
    let retry = &cfg.names.retry;
    let index = retry
        .iter()
        .position(|(d, _)| *d >= cfg.defer_delay)
        .unwrap_or(retry.len() - 1);
    let defer = DeferQueue {
        index,
        delay: retry[index].0,
    };
    let mut r = Router {
        cfg,
        publisher,
        ledger,
        ledger_writes,
        health,
        shard,
        books: HashMap::new(),
        ready: Vec::new(),
        rows: LedgerBatch::default(),
        rows_since: None,
        tally: SessionTally::default(),
        defer,
        trails: HashMap::new(),
        events: Vec::new(),
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
                lane,
            } => self.unusable(delivery, body, why, job_id, attempts, lane).await,
            RouterInput::Forward {
                delivery,
                body,
                properties,
                to,
                lane,
            } => self.forward(delivery, body, properties, to, lane).await,
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
            crate::metrics::users(job.app_id, "skipped", skipped.len() as u64);
            self.health.count_users(job.lane, "skipped", skipped.len() as u64);
        }
        if self.cfg.events {
            self.trails
                .insert(job.id, trail(&self.cfg.names.namespace, &job, &skipped));
        }
        let book = Book::new(delivery, &job.request.user_ids, &skipped);
        if book.is_done() {
            self.finished(job.id, book.into_handle());
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
        lane: crate::amqp::topology::Lane,
    ) -> Result<(), PublishError> {
        let expired = matches!(why, Unusable::Expired(_));
        let (error, detail) = match why {
            Unusable::Validation(d) => (DeadError::Validation, d),
            Unusable::UnknownApp(app) => (
                DeadError::UnknownApp,
                format!("no secret for AppId {app} in this worker"),
            ),
            Unusable::Misrouted { to, forwards } => (
                DeadError::UnknownApp,
                format!(
                    "forwarded {forwards} times between shards and back at one that does not serve its app (next: shard {to}): the workers' configs disagree on the app's shard"
                ),
            ),
            Unusable::NoApp => (
                DeadError::UnknownApp,
                "the job names no app_id and this worker has no default app (mark one default = true)".to_owned(),
            ),
            Unusable::Expired(deadline) => (
                DeadError::Expired,
                format!(
                    "not_after {} had passed when the job was taken in; no call was made",
                    headers::rfc3339(deadline)
                ),
            ),
        };
        let event = self.cfg.events.then(|| {
            let default_app = self.cfg.default_app.filter(|_| expired);
            let f = unusable_trail(
                &self.cfg.names.namespace,
                &Unreadable {
                    body: &body,
                    job_id: &job_id,
                    attempts,
                    lane,
                    default_app,
                    error,
                    detail: &detail,
                },
            );
            event::render(&f, Utc::now())
        });
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
        self.health.count_unusable(1);
        self.tally.dead_letters += 1;
        self.events.extend(event);
        self.ready.push(delivery);
        Ok(())
    }

    /// A job of another shard's app: republished unchanged to that shard's
    /// queue of its lane, confirmed, and acked with the next batch. It spends
    /// nothing here and is never called from this shard.
    async fn forward(
        &mut self,
        delivery: Delivery,
        body: Vec<u8>,
        properties: Box<lapin::BasicProperties>,
        to: crate::config::shards::ShardName,
        lane: crate::amqp::topology::Lane,
    ) -> Result<(), PublishError> {
        let queue = self.cfg.names.for_shard(&to).queue(lane).to_owned();
        self.publisher
            .publish(&queue, &body, headers::forward_properties(&properties))
            .await?;
        crate::metrics::forwarded(to.as_str());
        self.tally.forwarded += 1;
        self.ready.push(delivery);
        Ok(())
    }

    async fn outcome(&mut self, outcome: ChunkOutcome) -> Result<(), PublishError> {
        let now = Utc::now();
        self.health.count_calls(outcome.calls.len() as u64);
        if self.ledger.is_some() && !outcome.calls.is_empty() {
            self.note_rows();
            self.rows.calls.extend(outcome.calls);
        }
        let mut entries = Vec::new();
        for u in outcome.users {
            for job in u.waiters {
                // A job whose book is gone belongs to a lost channel: the
                // broker delivers it again, so nothing is published for it.
                if !self.books.get(&job.id).is_some_and(|b| b.is_pending(&u.user_id)) {
                    continue;
                }
                let action = match u.expired {
                    true => Action::DeadLetter(DeadError::Expired),
                    false => plan(u.disposition, &job.spent(), now, &self.cfg.budget),
                };
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
                Action::Retry {
                    attempts, rate_limited, ..
                } => Tag::Retry { attempts, rate_limited },
                Action::Defer => Tag::Defer,
                Action::DeadLetter(err) => Tag::Dead(err, e.code),
            };
            if tag != Tag::Done {
                groups.entry((e.job.id, tag)).or_default().push(e);
            }
        }
        let mut messages = Vec::with_capacity(groups.len());
        for ((_, tag), es) in groups {
            let job = &es[0].job;
            let users: Vec<String> = es.iter().map(|e| e.user.to_string()).collect();
            let body = job.request.with_users(users).to_body();
            let (queue, props) = message_for(tag, &es, now, &self.cfg.names, &self.defer);
            match tag {
                Tag::Done => {}
                Tag::Retry { .. } => crate::metrics::retry(match es[0].action {
                    Action::Retry { kind, .. } => kind,
                    _ => "transient",
                }),
                Tag::Defer => crate::metrics::retry("halted"),
                Tag::Dead(error, code) => {
                    crate::metrics::dead_letter(error.as_str());
                    let users: Vec<&str> = es.iter().map(|e| &*e.user).collect();
                    tracing::warn!(
                        room = %job.request.room_id,
                        job_id = job.job_id(),
                        users = %serde_json::to_string(&users).unwrap_or_default(),
                        error = error.as_str(),
                        code,
                        detail = %es[0].detail,
                        "dead-lettered"
                    );
                }
            }
            if matches!(tag, Tag::Dead(..)) {
                self.tally.dead_letters += 1;
            } else {
                self.tally.retries += 1;
            }
            messages.push((queue, body, props));
        }
        self.publisher.publish_all(PUBLISH_WINDOW, messages).await?;
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
        crate::metrics::users(e.job.app_id, label, 1);
        self.health.count_users(e.job.lane, label, 1);
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
        let trail = match self.cfg.events {
            true => self.trails.get_mut(&e.job.id),
            false => None,
        };
        if let Some(trail) = trail {
            let verdict = match e.action {
                Action::Kicked => Verdict::Kicked,
                Action::NothingToDo => Verdict::NothingToDo,
                Action::Retry { .. } | Action::Defer => Verdict::Retrying,
                Action::DeadLetter(error) => Verdict::DeadLettered {
                    error,
                    code: e.code,
                    detail: dead_detail(e.code, &e.detail),
                },
            };
            trail.users.push(UserVerdict {
                user_id: e.user.to_string(),
                verdict,
                request_id: e.request_id.clone(),
            });
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
            self.finished(e.job.id, book.into_handle());
        }
    }

    /// Readies a finished delivery's ack, and renders its event if events are on.
    fn finished(&mut self, job: u64, delivery: Delivery) {
        if let Some(trail) = self.trails.remove(&job) {
            self.events.push(event::render(&trail, Utc::now()));
        }
        self.ready.push(delivery);
    }

    fn note_rows(&mut self) {
        self.rows_since.get_or_insert_with(Instant::now);
    }

    /// Writes pending ledger rows (waiting out a PostgreSQL outage), publishes
    /// the events of the deliveries that are done (confirmed), then acks them.
    async fn flush(&mut self, abort: &CancellationToken) -> Result<(), RouterEnd> {
        if let Some(ledger) = &self.ledger {
            if !self.rows.is_empty() {
                loop {
                    match ledger.write(&self.rows).await {
                        Ok(()) => {
                            crate::metrics::ledger_write(true);
                            self.health.set_ledger_ok(true);
                            self.ledger_writes.send_replace(LedgerWrites::Flowing);
                            break;
                        }
                        Err(e) if !e.is_unavailable() => {
                            crate::metrics::ledger_write(false);
                            tracing::error!(error = %e, rows = self.rows.len(), "ledger write failed for good; stopping (the unacked deliveries return to the queue)");
                            return Err(RouterEnd::Ledger(e));
                        }
                        Err(e) => {
                            crate::metrics::ledger_write(false);
                            self.health.set_ledger_ok(false);
                            self.ledger_writes.send_replace(LedgerWrites::Stalled);
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
        if !self.events.is_empty() {
            // Not mandatory: an event nobody is bound for is confirmed and
            // dropped by the broker, by design. Consumers come and go; kicks
            // must not wait for them, nor fail without them. A failed publish
            // ends the session like a failed retry publish: nothing here is
            // acked, so no delivery is acked without its event.
            let events = std::mem::take(&mut self.events);
            let n = events.len() as u64;
            let messages = events.into_iter().map(|e| {
                let props = crate::outcome::event::properties(&e);
                (e.routing_key, e.body, props)
            });
            self.publisher
                .broadcast_all(&self.cfg.names.events, PUBLISH_WINDOW, messages)
                .await
                .map_err(RouterEnd::Broker)?;
            self.tally.events += n;
        }
        for d in self.ready.drain(..) {
            self.shard.delivery_finished();
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
            self.shard.delivery_finished();
            let _ = book.into_handle().requeue().await;
        }
        if n > 0 {
            tracing::info!(deliveries = n, "returned unfinished deliveries to the queue");
        }
    }
}

mod message;
use message::{dead_detail, message_for, outcome_row, trail, unusable_trail, DeferQueue, Entry, Tag, Unreadable};

#[cfg(test)]
mod tests;
