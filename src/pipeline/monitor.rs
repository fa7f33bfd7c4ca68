//! The side tasks of an active session: the queue watchdog that turns a silently dropped or starved consumer
//! into a reconnect, and the periodic progress line.

use crate::amqp::connect::describe;
use crate::health::{Health, ShardState};
use lapin::types::FieldTable;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How often the session checks that its queue still exists, still has
/// consumers, and is not holding ready messages while we hold none. The
/// broker should cancel our consumer when the queue is deleted, but RabbitMQ
/// 3.10 leaves a consumer registered and starved when a quorum queue is
/// deleted and at once re-declared; this check turns that silence into a
/// reconnect. Only the active worker runs it: a standby holds no consumer.
const WATCHDOG_INTERVAL: Duration = Duration::from_secs(5);
/// How often the worker logs its progress line while there is work: often
/// enough to follow a sweep, rare enough that a day's log stays readable.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(10);
/// Aborts a task when the session that spawned it ends, however it ends.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Logs one INFO line every [`PROGRESS_INTERVAL`] while there is work (so an
/// operator can tell from the logs alone what the worker did, without one
/// line per retry), and one when a slowed AppId is back at its full rate.
pub(crate) async fn report_progress(health: Arc<Health>, rate: u32) {
    let mut last = health.progress();
    let mut slowed: std::collections::BTreeSet<u32> = Default::default();
    let mut beat = tokio::time::interval(PROGRESS_INTERVAL);
    beat.tick().await;
    loop {
        beat.tick().await;
        let now = health.progress();
        let d = now.since(&last);
        last = now;
        if d.busy() {
            let secs = PROGRESS_INTERVAL.as_secs_f64();
            tracing::info!(
                kicked = d.kicked,
                nothing_to_do = d.nothing_to_do,
                retried = d.retried,
                deferred_by_halt = d.deferred,
                dead_lettered = d.dead_lettered,
                unusable_messages = d.unusable,
                skipped = d.skipped,
                calls = d.calls,
                calls_per_s = (d.calls as f64 / secs * 10.0).round() / 10.0,
                limit_per_s = rate,
                pending_users = d.pending_users,
                backlog = d.queue_ready + d.bulk_ready,
                live_ready = d.queue_ready,
                bulk_ready = d.bulk_ready,
                live_unacked = d.live_unacked,
                bulk_unacked = d.bulk_unacked,
                "progress over the last {}s",
                PROGRESS_INTERVAL.as_secs()
            );
        }
        for (app, factor) in health.gate().factors(Instant::now()) {
            if factor < 1.0 {
                slowed.insert(app);
            } else if slowed.remove(&app) {
                tracing::info!(app_id = app, "rate back to the full limit after a slow-down");
            }
        }
    }
}

/// The queues a session watches: its live lane (the watchdog's), and the
/// bulk lane and dead letters, whose depths it only reports.
pub(crate) struct Watched {
    /// The live lane's queue.
    pub(crate) live: String,
    /// The bulk lane's queue.
    pub(crate) bulk: String,
    /// The dead-letter queue.
    pub(crate) dead: String,
}

/// Returns (a reason) once the queue is gone, has no consumer left, or has
/// held ready messages over two checks while this worker held none: the
/// broker dropped or starved our consumer without a word, and only a new
/// session (re-declare, re-consume) brings it back.
pub(crate) async fn watch_queue(channel: lapin::Channel, queues: Watched, health: Arc<ShardState>) -> String {
    let queue = queues.live;
    use lapin::options::QueueDeclareOptions;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let mut starved_checks = 0;
    let mut taken = health.taken_total();
    loop {
        tokio::time::sleep(WATCHDOG_INTERVAL).await;
        let check = channel.queue_declare(queue.as_str().into(), passive, FieldTable::default());
        match tokio::time::timeout(WATCHDOG_INTERVAL * 2, check).await {
            Ok(Ok(q)) if q.consumer_count() == 0 => return format!("queue {queue} has no consumer: ours was dropped"),
            Ok(Ok(q)) => {
                // Starved: ready messages, none held, and none taken since the
                // last check. A worker draining at full speed takes more
                // between checks even when it holds none at the instant.
                let now_taken = health.taken_total();
                let starved = q.message_count() > 0 && health.in_flight() == 0 && now_taken == taken;
                taken = now_taken;
                starved_checks = if starved { starved_checks + 1 } else { 0 };
                if starved_checks >= 2 {
                    return format!(
                        "queue {queue} holds {} ready messages but none reach us",
                        q.message_count()
                    );
                }
                health.set_queue_ready(q.message_count());
                crate::metrics::queue_ready(&queue, q.message_count());
                let unacked = |lane| health.unacked(lane).load(std::sync::atomic::Ordering::Relaxed);
                crate::metrics::queue_unacked(&queue, unacked(crate::amqp::topology::Lane::Live));
                crate::metrics::queue_unacked(&queues.bulk, unacked(crate::amqp::topology::Lane::Bulk));
                tracing::trace!(queue = %queue, ready = q.message_count(), "queue check ok");
                // The other queues' depths, for the progress line and the
                // metrics (a failed read here ends nothing: the live queue's
                // check is the watchdog).
                for (name, is_bulk) in [(&queues.bulk, true), (&queues.dead, false)] {
                    let read = channel.queue_declare(name.as_str().into(), passive, FieldTable::default());
                    if let Ok(Ok(q)) = tokio::time::timeout(WATCHDOG_INTERVAL, read).await {
                        crate::metrics::queue_ready(name, q.message_count());
                        if is_bulk {
                            health.set_bulk_ready(q.message_count());
                        }
                    }
                }
            }
            Ok(Err(e)) => return format!("queue {queue} check failed: {}", describe(&e)),
            Err(_) => return format!("queue {queue} check got no answer in {:?}", WATCHDOG_INTERVAL * 2),
        }
    }
}
