//! The first and last steps of an active session: wait for the leadership lock as a standby, hold the first
//! call for the takeover, keep the leader record fresh, and release the lock last. The pure takeover rule is `crate::leadership`; the broker side is `crate::amqp::lock`.

use super::{Shared, CLOSE_STEP};
use crate::amqp::connect::describe;
use crate::amqp::lock::{self, Lock};
use crate::amqp::publish::{PublishError, Publisher};
use crate::amqp::topology::Names;
use crate::leadership::{self, Record};
use crate::ratelimit::WINDOW;
use lapin::Connection;
use tokio_util::sync::CancellationToken;

/// How waiting for the lock ended.
pub(crate) enum Leadership {
    /// The lock is ours and the record says we are active; the gate holds
    /// the first call until `hold_at`.
    Taken {
        /// The lock, released last by [`release`].
        lock: Lock,
        /// When the first call may go (the takeover hold).
        hold_at: tokio::time::Instant,
    },
    /// Stopped on request while standing by.
    Shutdown,
    /// The broker connection failed.
    Lost(String),
}

/// Waits for the leadership lock, as a standby holding no deliveries; once
/// it is ours, reads what the previous holder left, holds the gate until the
/// previous holder's window is over (`leadership::takeover_hold`) and writes
/// our own record.
pub(crate) async fn take<A>(shared: &Shared<A>, conn: &Connection, publisher: &Publisher) -> Leadership {
    let names = &shared.cfg.names;
    let mut contended = false;
    let lock = loop {
        match lock::try_take(conn, names).await {
            Ok(Some(lock)) => break lock,
            Ok(None) => {
                if !contended {
                    shared.shard.set_standby(true);
                    crate::metrics::active(&names.shard, false);
                    tracing::info!(shard = %names.shard, lock = %names.leader, role = "standby", "another worker holds the leadership lock; standing by, holding no deliveries");
                }
                contended = true;
            }
            Err(e) => return Leadership::Lost(format!("leadership lock: {}", describe(&e))),
        }
        tokio::select! {
            _ = shared.shutdown.cancelled() => return Leadership::Shutdown,
            _ = tokio::time::sleep(leadership::LOCK_RETRY) => {}
        }
    };
    // Active from here. What the previous holder left says when our first
    // call may go; our own window (the gate outlives sessions) holds too.
    let record = match lock.take_record(names).await {
        Ok(r) => r,
        Err(e) => return Leadership::Lost(format!("leader record: {}", describe(&e))),
    };
    let now_ms = leadership::now_ms();
    let (hold_ms, reason) = leadership::takeover_hold(record, now_ms, contended);
    let hold_at = leadership::instant_of(hold_ms, now_ms);
    shared.gate.hold_apps_until(&shared.app_ids(), hold_at);
    if let Err(e) = lock::write_record(publisher, names, Record::Active { at_ms: now_ms }).await {
        return Leadership::Lost(format!("leader record: {e}"));
    }
    shared.shard.set_standby(false);
    crate::metrics::active(&names.shard, true);
    crate::metrics::takeover(reason.as_str());
    tracing::info!(
        shard = %names.shard,
        lock = %names.leader,
        role = "active",
        first_call_in_ms = (hold_ms - now_ms).max(0),
        hold = reason.as_str(),
        "took the leadership lock; this worker is active"
    );
    Leadership::Taken { lock, hold_at }
}

/// The last step of a graceful stop, once every call has returned and while
/// the lock is still ours: say when our window frees, then let the lock go.
/// (With the connection gone, the lock went with it and a successor may
/// have written its own record: the caller does not call this then.)
pub(crate) async fn release(
    shared: &Shared<impl Sized>,
    lock: Lock,
    publisher: &Publisher,
    hold_at: tokio::time::Instant,
) {
    let now = leadership::now_ms();
    let last = shared
        .gate
        .last_call_of(&shared.app_ids())
        .map_or(now, |t| leadership::ms_of(t + WINDOW, now));
    let free_at_ms = last.max(leadership::ms_of(hold_at, now));
    let release = lock::write_record(publisher, &shared.cfg.names, Record::Released { free_at_ms });
    match tokio::time::timeout(CLOSE_STEP, release).await {
        Ok(Ok(())) => {
            let _ = tokio::time::timeout(CLOSE_STEP, lock.release()).await;
            tracing::info!(shard = %shared.cfg.names.shard, free_in_ms = (free_at_ms - now).max(0), "released the leadership lock");
        }
        _ => tracing::warn!("could not write the release record; the next worker waits a full window"),
    }
}

/// Keeps the leader record fresh until `stop`; returns why it could not.
pub(crate) async fn refresh_record(publisher: Publisher, names: Names, stop: CancellationToken) -> String {
    // A fixed beat: a slow confirm does not push the next refresh back.
    let mut beat = tokio::time::interval(leadership::REFRESH_INTERVAL);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    beat.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return String::new(),
            _ = beat.tick() => {}
        }
        let record = Record::Active {
            at_ms: leadership::now_ms(),
        };
        match lock::write_record(&publisher, &names, record).await {
            Ok(()) => {}
            // A broker alarm blocks publishing for as long as it lasts; acks
            // go on over the other connection, so the session stays. A
            // successor that finds the record stale waits a full window.
            Err(PublishError::ConfirmTimeout(after)) => {
                tracing::warn!(
                    after_ms = after.as_millis() as u64,
                    "leader record not confirmed (broker alarm?); still active, trying again"
                );
            }
            Err(e) => return format!("leader record: {e}"),
        }
    }
}
