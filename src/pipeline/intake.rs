//! Intake: consume from the shard's lane queues, decode and validate each delivery, register it with the router,
//! and hand its users to the coalescer. Unusable input goes straight to the router for dead-lettering, and a job
//! of an app another shard serves goes to the router to be forwarded there.

use crate::amqp::delivery::Delivery;
use crate::amqp::headers;
use crate::amqp::topology::Lane;
use crate::config::apps::{Apps, Selected};
use crate::config::shards::{Elsewhere, Routing};
use crate::health::ShardState;
use crate::job::{self, Limits};
use crate::ledger::Ledger;
use crate::pipeline::stage::{Job, JobIn, RouterInput, Unusable};
use chrono::{DateTime, Utc};
use futures_util::{FutureExt, StreamExt};
use lapin::options::BasicCancelOptions;
use lapin::{BasicProperties, Channel, Consumer};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Forwards after which a job that still reached a shard not serving its
/// app is dead-lettered (`unknown_app`) instead of forwarded again: one
/// forward is a misrouted publish, more mean the workers disagree.
pub(crate) const MAX_FORWARDS: u32 = 3;

/// What intake needs to judge a message.
#[derive(Debug, Clone)]
pub(crate) struct IntakeConfig {
    /// The apps served; a message naming another (or none, with no default
    /// app) is `unknown_app`.
    pub apps: Arc<Apps>,
    /// Validation limits.
    pub limits: Limits,
    /// The lane this intake consumes; its jobs' retries return to it.
    pub lane: Lane,
    /// Which shard serves each app of the deployment.
    pub routing: Arc<Routing>,
    /// The shard this intake consumes for.
    pub shard: Arc<ShardState>,
    /// Its name, as a shard name (where a misrouted job is judged from).
    pub here: crate::config::shards::ShardName,
}

impl IntakeConfig {
    /// Where a job this shard has no app for belongs: another shard that
    /// serves its app (or the default app, for a job naming none), or
    /// nowhere (then it is dead-lettered as unusable).
    pub(crate) fn elsewhere(&self, why: &Unusable) -> Elsewhere {
        match why {
            Unusable::UnknownApp(app) => self.routing.elsewhere(&self.here, Some(*app)),
            Unusable::NoApp => self.routing.elsewhere(&self.here, None),
            Unusable::Validation(_) | Unusable::Expired(_) | Unusable::Misrouted { .. } => Elsewhere::Nowhere,
        }
    }
}

/// Why intake stopped.
#[derive(Debug)]
pub(crate) enum IntakeEnd {
    /// Asked to stop (shutdown); the consumer was cancelled.
    Stopped,
    /// The broker cancelled the consumer (queue deleted, node down).
    Cancelled,
    /// The channel or connection failed.
    Broker(lapin::Error),
    /// A later stage is gone.
    DownstreamClosed,
    /// The ledger failed for good (not an outage): the worker must stop.
    Ledger(crate::ledger::LedgerError),
}

/// Decodes a delivery into a [`Job`], or says why it cannot be used (with
/// whatever job id and attempt count could be read, for the dead letter).
/// A job whose `not_after` is before `now` is [`Unusable::Expired`].
pub(crate) fn decode(
    body: &[u8],
    props: &BasicProperties,
    redelivered: bool,
    cfg: &IntakeConfig,
    id: u64,
    now: DateTime<Utc>,
) -> Result<Job, (Unusable, Option<String>, u32)> {
    let h = props.headers().as_ref();
    let spent = headers::read_retry(h);
    let attempts = spent.attempts;
    let message_id = props
        .message_id()
        .as_ref()
        .map(|m| m.as_str().to_owned())
        .filter(|m| !m.is_empty() && m.len() <= job::MAX_JOB_ID_BYTES && !m.chars().any(char::is_control));
    let mut request = match job::parse(body, &cfg.limits) {
        Ok(r) => r,
        Err(e) => {
            let job_id = headers::get_str(h, headers::JOB_ID).or(message_id);
            return Err((Unusable::Validation(e.to_string()), job_id, attempts));
        }
    };
    if request.job_id.is_none() {
        request.job_id = Some(message_id.unwrap_or_else(job::generate_job_id));
    }
    let app_id = match cfg.apps.select(request.app_id) {
        Selected::App(id) => id,
        Selected::Unknown(id) => return Err((Unusable::UnknownApp(id), request.job_id, attempts)),
        Selected::NoDefault => return Err((Unusable::NoApp, request.job_id, attempts)),
    };
    if let Some(deadline) = request.not_after.filter(|_| request.expired_at(now)) {
        tracing::warn!(
            delivery = id,
            job_id = request.job_id.as_deref().unwrap_or(""),
            app_id,
            room = %request.room_id,
            users = %serde_json::to_string(&request.user_ids).unwrap_or_default(),
            not_after = %headers::rfc3339(deadline),
            "expired job: its not_after passed before it could be called; dead-lettering it"
        );
        return Err((Unusable::Expired(deadline), request.job_id, attempts));
    }
    Ok(Job {
        id,
        app_id,
        lane: cfg.lane,
        attempts,
        first_attempt_at: spent.first_attempt_at,
        rate_limited: spent.rate_limited,
        halted_for: spent.halted_for,
        redelivered: redelivered || headers::delivery_count(h) > 0,
        halted_before: spent.halted,
        received_at: now,
        carried: headers::carried(h),
        request,
    })
}

/// Delay between ledger lookups while PostgreSQL is away.
const LEDGER_RETRY: Duration = Duration::from_secs(1);

/// Most deliveries looked up in the ledger with one statement. Intake takes
/// what lapin already holds, up to this many, so a backlog costs one round
/// trip per batch and a lone job waits for nothing.
const LOOKUP_BATCH: usize = 256;

/// What intake runs with, built by the composition root (`pipeline/mod.rs`).
pub(crate) struct Context {
    /// The consuming channel: every delivery handle acks on it.
    pub channel: Channel,
    /// The consumer on the lane's queue (`{ns}.requests` or `{ns}.bulk`).
    pub consumer: Consumer,
    /// How to judge a message.
    pub cfg: IntakeConfig,
    /// The ledger, for the redelivery skip (users already done for a job id).
    pub ledger: Option<Ledger>,
    /// Jobs and their users to coalesce.
    pub to_coalescer: mpsc::Sender<JobIn>,
    /// Deliveries to register (or dead-letter, if unusable) with the router.
    pub to_router: mpsc::Sender<RouterInput>,
    /// Process-unique delivery ids, shared by every session of the run.
    pub ids: Arc<AtomicU64>,
    /// Where intake reports (consuming, deliveries taken).
    pub shard: Arc<ShardState>,
    /// Fires at shutdown: stop consuming, hand on what was taken.
    pub stop: CancellationToken,
}

/// Runs every lane's intake at once: ends with `Stopped` once all have
/// stopped, or with the first other end (the session then cuts the rest).
pub(crate) async fn run_lanes(lanes: Vec<Context>) -> IntakeEnd {
    let mut running: futures_util::stream::FuturesUnordered<_> = lanes.into_iter().map(run).collect();
    while let Some(end) = running.next().await {
        if !matches!(end, IntakeEnd::Stopped) {
            return end;
        }
    }
    IntakeEnd::Stopped
}

/// Runs intake until the consumer ends, the broker fails, or `stop` fires.
pub(crate) async fn run(cx: Context) -> IntakeEnd {
    let Context {
        channel,
        mut consumer,
        cfg,
        ledger,
        to_coalescer,
        to_router,
        ids,
        shard: health,
        stop,
    } = cx;
    health.set_consuming(true);
    let end = 'deliveries: loop {
        let next = tokio::select! {
            biased;
            _ = stop.cancelled() => {
                // Stop the broker pushing more; what lapin already buffered is
                // returned to the queue when the channel closes.
                let _ = channel.basic_cancel(consumer.tag(), BasicCancelOptions::default()).await;
                break IntakeEnd::Stopped;
            }
            next = consumer.next() => next,
        };
        let mut batch = match next {
            None => break IntakeEnd::Cancelled,
            Some(Err(e)) => break IntakeEnd::Broker(e),
            Some(Ok(d)) => vec![d],
        };
        // The stream's end, met while filling the batch: acted on once the
        // batch is handed on.
        let mut then_end = None;
        while batch.len() < LOOKUP_BATCH {
            match consumer.next().now_or_never() {
                Some(Some(Ok(d))) => batch.push(d),
                Some(None) => {
                    then_end = Some(IntakeEnd::Cancelled);
                    break;
                }
                Some(Some(Err(e))) => {
                    then_end = Some(IntakeEnd::Broker(e));
                    break;
                }
                None => break,
            }
        }
        let mut jobs: Vec<(Delivery, Job)> = Vec::with_capacity(batch.len());
        for delivery in batch {
            let id = ids.fetch_add(1, Ordering::Relaxed);
            health.delivery_taken();
            let handle = Delivery::new(id, delivery.acker.clone())
                .counted(crate::amqp::delivery::Held::new(health.unacked(cfg.lane)));
            let decoded = decode(
                &delivery.data,
                &delivery.properties,
                delivery.redelivered,
                &cfg,
                id,
                Utc::now(),
            );
            match decoded {
                Ok(job) => jobs.push((handle, job)),
                Err((why, job_id, attempts)) => {
                    let forwards = headers::forwards(delivery.properties.headers().as_ref());
                    // Workers that disagree on the app's shard (a config
                    // rollout) would hand it back and forth for ever.
                    let (why, elsewhere) = match cfg.elsewhere(&why) {
                        Elsewhere::Shard(to) if forwards >= MAX_FORWARDS => (
                            Unusable::Misrouted {
                                to: to.to_string(),
                                forwards,
                            },
                            Elsewhere::Nowhere,
                        ),
                        other => (why, other),
                    };
                    let input = match elsewhere {
                        Elsewhere::Shard(to) => {
                            tracing::info!(delivery = id, job_id = job_id.as_deref().unwrap_or(""), shard = %cfg.shard.name(), to_shard = %to, reason = %why, "job of an app another shard serves; forwarding it there");
                            RouterInput::Forward {
                                delivery: handle,
                                body: delivery.data,
                                properties: Box::new(delivery.properties),
                                to,
                                lane: cfg.lane,
                            }
                        }
                        Elsewhere::Nowhere => {
                            crate::metrics::message_consumed(false);
                            // An expired job has its own line, with its room and users.
                            if !matches!(why, Unusable::Expired(_)) {
                                tracing::warn!(delivery = id, job_id = job_id.as_deref().unwrap_or(""), reason = %why, "unusable message; dead-lettering it verbatim");
                            }
                            RouterInput::Unusable {
                                delivery: handle,
                                body: delivery.data,
                                why,
                                job_id,
                                attempts,
                                lane: cfg.lane,
                            }
                        }
                    };
                    match send(&to_router, input, &stop).await {
                        Sent::Ok => {}
                        Sent::Closed => break 'deliveries IntakeEnd::DownstreamClosed,
                        Sent::Stopped => break 'deliveries IntakeEnd::Stopped,
                    }
                }
            }
        }
        // A job id is an idempotency key: users already done for it, on any
        // delivery (a redelivery, a retry, or the same job published again),
        // are skipped.
        let skipped = match &ledger {
            Some(ledger) if !jobs.is_empty() => match already_done(ledger, &jobs, &stop).await {
                Ok(Some(s)) => s,
                Ok(None) => break IntakeEnd::Stopped,
                Err(e) => break IntakeEnd::Ledger(e),
            },
            _ => vec![Vec::new(); jobs.len()],
        };
        for ((handle, job), skipped) in jobs.into_iter().zip(skipped) {
            crate::metrics::message_consumed(true);
            if job.redelivered {
                crate::metrics::redelivery();
            }
            let users: Vec<Arc<str>> = job
                .request
                .user_ids
                .iter()
                .filter(|u| !skipped.contains(u))
                .map(|u| Arc::from(u.as_str()))
                .collect();
            let job = Arc::new(job);
            tracing::debug!(delivery = handle.id(), job_id = job.job_id(), room = %job.request.room_id, users = users.len(), skipped = skipped.len(), attempts = job.attempts, "job received");
            let received = RouterInput::Received {
                delivery: handle,
                job: job.clone(),
                skipped,
            };
            match send(&to_router, received, &stop).await {
                Sent::Ok => {}
                Sent::Closed => break 'deliveries IntakeEnd::DownstreamClosed,
                Sent::Stopped => break 'deliveries IntakeEnd::Stopped,
            }
            if !users.is_empty() {
                match send(&to_coalescer, JobIn { job, users }, &stop).await {
                    Sent::Ok => {}
                    Sent::Closed => break 'deliveries IntakeEnd::DownstreamClosed,
                    Sent::Stopped => break 'deliveries IntakeEnd::Stopped,
                }
            }
        }
        if let Some(end) = then_end {
            break end;
        }
    };
    health.set_consuming(false);
    end
}

enum Sent {
    Ok,
    Closed,
    Stopped,
}

/// Sends downstream, unless `stop` fires first: a full channel (a stalled
/// router) must never keep intake from seeing a shutdown. A message not sent
/// is dropped with its delivery unacked, so it returns to the queue.
async fn send<T>(to: &mpsc::Sender<T>, value: T, stop: &CancellationToken) -> Sent {
    tokio::select! {
        biased;
        sent = to.send(value) => if sent.is_ok() { Sent::Ok } else { Sent::Closed },
        _ = stop.cancelled() => Sent::Stopped,
    }
}

/// For each job, its users that the ledger shows as done for its job id, in
/// the job's order. Waits (backpressure) while PostgreSQL is unreachable;
/// `Ok(None)` if stopped meanwhile; `Err` for a failure that waiting will
/// not fix.
async fn already_done(
    ledger: &Ledger,
    jobs: &[(Delivery, Job)],
    stop: &CancellationToken,
) -> Result<Option<Vec<Vec<String>>>, crate::ledger::LedgerError> {
    let keys: Vec<(&str, &str, &[String])> = jobs
        .iter()
        .map(|(_, j)| (j.job_id(), j.request.room_id.as_str(), j.request.user_ids.as_slice()))
        .collect();
    loop {
        match ledger.done_users(&keys).await {
            Ok(done) => {
                return Ok(Some(
                    jobs.iter()
                        .zip(done)
                        .map(|((_, j), d)| j.request.user_ids.iter().filter(|u| d.contains(*u)).cloned().collect())
                        .collect(),
                ));
            }
            Err(e) if !e.is_unavailable() => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "ledger unreachable; intake waits for it");
                tokio::select! {
                    _ = stop.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(LEDGER_RETRY) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{AMQPValue, FieldTable};

    fn cfg() -> IntakeConfig {
        IntakeConfig {
            apps: Arc::new(apps(&[42], Some(42))),
            limits: Limits::default(),
            lane: Lane::Live,
            routing: Arc::new(Routing::default()),
            shard: Arc::new(ShardState::default()),
            here: crate::config::shards::ShardName::default(),
        }
    }

    fn apps(ids: &[u32], default: Option<u32>) -> Apps {
        let list = ids
            .iter()
            .map(|id| {
                crate::config::apps::AppConfig::new(crate::config::Credentials {
                    app_id: *id,
                    secret: crate::secret::Secret::new("0123456789abcdef0123456789abcdef"),
                })
            })
            .collect();
        Apps::new(list, default).unwrap()
    }

    /// A job's app_id selects its app; none goes to the default app; an
    /// unknown one, or none without a default, is unusable.
    #[test]
    fn app_selection_by_table() {
        let props = BasicProperties::default();
        /// Apps served, the default, the body, and the app chosen or why none.
        type Case<'a> = (&'a [u32], Option<u32>, &'a [u8], Result<u32, Unusable>);
        let cases: &[Case] = &[
            (&[1, 2], Some(2), br#"{"room_id":"r","user_ids":["a"]}"#, Ok(2)),
            (
                &[1, 2],
                Some(2),
                br#"{"room_id":"r","user_ids":["a"],"app_id":1}"#,
                Ok(1),
            ),
            (
                &[1, 2],
                Some(2),
                br#"{"room_id":"r","user_ids":["a"],"app_id":3}"#,
                Err(Unusable::UnknownApp(3)),
            ),
            (
                &[1, 2],
                None,
                br#"{"room_id":"r","user_ids":["a"]}"#,
                Err(Unusable::NoApp),
            ),
            (&[1, 2], None, br#"{"room_id":"r","user_ids":["a"],"app_id":2}"#, Ok(2)),
            (&[5], None, br#"{"room_id":"r","user_ids":["a"]}"#, Ok(5)),
        ];
        for (ids, default, body, want) in cases {
            let cfg = IntakeConfig {
                apps: Arc::new(apps(ids, *default)),
                lane: Lane::Bulk,
                ..cfg()
            };
            let got = decode(body, &props, false, &cfg, 1, Utc::now())
                .map(|j| j.app_id)
                .map_err(|(why, _, _)| why);
            assert_eq!(&got, want, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn job_id_comes_from_body_then_message_id_then_is_generated() {
        let props = BasicProperties::default().with_message_id("m-1".into());
        let j = decode(
            br#"{"room_id":"r","user_ids":["a"],"job_id":"j"}"#,
            &props,
            false,
            &cfg(),
            1,
            Utc::now(),
        )
        .unwrap();
        assert_eq!(j.job_id(), "j");
        let j = decode(
            br#"{"room_id":"r","user_ids":["a"]}"#,
            &props,
            false,
            &cfg(),
            1,
            Utc::now(),
        )
        .unwrap();
        assert_eq!(j.job_id(), "m-1");
        let j = decode(
            br#"{"room_id":"r","user_ids":["a"]}"#,
            &BasicProperties::default(),
            false,
            &cfg(),
            1,
            Utc::now(),
        )
        .unwrap();
        assert_eq!(j.job_id().len(), 36);
        assert_eq!(j.app_id, 42);
    }

    #[test]
    fn unusable_table() {
        let props = BasicProperties::default();
        let cases: Vec<(&[u8], Unusable)> = vec![
            (
                b"nope",
                Unusable::Validation("not a job message: a job message is a JSON object".into()),
            ),
            (
                b"{nope",
                Unusable::Validation("not a job message: key must be a string at line 1 column 2".into()),
            ),
            (
                br#"{"room_id":"r","user_ids":["a"],"app_id":7}"#,
                Unusable::UnknownApp(7),
            ),
        ];
        for (body, want) in cases {
            let (got, _, _) = decode(body, &props, false, &cfg(), 1, Utc::now()).unwrap_err();
            assert_eq!(got, want);
        }
        let ok = decode(
            br#"{"room_id":"r","user_ids":["a"],"app_id":42}"#,
            &props,
            false,
            &cfg(),
            1,
            Utc::now(),
        );
        assert!(ok.is_ok(), "the configured AppId named explicitly is fine");
    }

    #[test]
    fn expiry_is_judged_against_the_given_clock_by_table() {
        let t = |s: &str| job::parse_not_after(s).unwrap();
        let props = BasicProperties::default().with_message_id("m-5".into());
        let body =
            |not_after: &str| format!(r#"{{"room_id":"r","user_ids":["a"],"not_after":"{not_after}"}}"#).into_bytes();
        let deadline = "2026-12-01T12:00:00Z";
        // (body, now, expected: None = usable)
        let cases: Vec<(Vec<u8>, &str, Option<Unusable>)> = vec![
            (body(deadline), "2026-12-01T11:00:00Z", None),
            (body(deadline), deadline, None),
            (
                body(deadline),
                "2026-12-01T12:00:00.001Z",
                Some(Unusable::Expired(t(deadline))),
            ),
            (
                body("2026-12-01T13:00:00+01:00"),
                "2026-12-02T00:00:00Z",
                Some(Unusable::Expired(t(deadline))),
            ),
            (
                br#"{"room_id":"r","user_ids":["a"]}"#.to_vec(),
                "2099-01-01T00:00:00Z",
                None,
            ),
            (
                body("soon"),
                "2026-12-01T11:00:00Z",
                Some(Unusable::Validation(
                    "not a job message: not_after must be an RFC 3339 time such as 2026-12-01T12:00:00Z, \
                     got \"soon\" at line 1 column 51"
                        .into(),
                )),
            ),
        ];
        for (body, now, want) in cases {
            let text = String::from_utf8_lossy(&body).into_owned();
            match (decode(&body, &props, false, &cfg(), 1, t(now)), want) {
                (Ok(job), None) => assert_eq!(job.received_at, t(now), "{text}"),
                (Err((got, job_id, _)), Some(want)) => {
                    assert_eq!(got, want, "{text} at {now}");
                    assert_eq!(job_id.as_deref(), Some("m-5"), "{text}: the dead letter keeps the id");
                }
                (got, want) => panic!("{text} at {now}: got {:?}, want {want:?}", got.map(|j| j.request)),
            }
        }
    }

    #[test]
    fn retry_headers_and_redelivery_are_read() {
        let mut h = FieldTable::default();
        h.insert(headers::ATTEMPTS.into(), AMQPValue::LongLongInt(3));
        h.insert(headers::HALTED.into(), AMQPValue::Boolean(true));
        h.insert("x-delivery-count".into(), AMQPValue::LongLongInt(1));
        h.insert(
            headers::DLQ_HISTORY.into(),
            AMQPValue::LongString("replayed once".into()),
        );
        h.insert("kickq-error".into(), AMQPValue::LongString("stale".into()));
        let props = BasicProperties::default().with_headers(h);
        let j = decode(
            br#"{"room_id":"r","user_ids":["a"]}"#,
            &props,
            false,
            &cfg(),
            1,
            Utc::now(),
        )
        .unwrap();
        assert_eq!(j.attempts, 3);
        assert!(j.halted_before);
        assert!(j.redelivered, "x-delivery-count > 0 means redelivered");
        let carried: Vec<&str> = j.carried.inner().keys().map(|k| k.as_str()).collect();
        assert_eq!(
            carried,
            vec![headers::DLQ_HISTORY],
            "only the dead-letter history rides along"
        );
    }

    #[test]
    fn job_id_of_an_unusable_message_is_kept_when_readable() {
        let props = BasicProperties::default().with_message_id("m-9".into());
        let (_, job_id, _) = decode(b"{", &props, false, &cfg(), 1, Utc::now()).unwrap_err();
        assert_eq!(job_id.as_deref(), Some("m-9"));
    }
}
