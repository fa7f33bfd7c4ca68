//! The dead-letter pass lock: the token of `{ns}.dead.lease` (the leadership lease's primitive: a quorum
//! queue with single active consumer, so it holds on every broker version and metadata store, through a
//! partition), its keeper, the holder's record in `{ns}.dead.lock.record` (when it started, who), and what a
//! second operator is told.

use crate::amqp::headers::rfc3339;
use crate::amqp::lease::{Lease, LeaseError};
use crate::amqp::publish::{persistent_json, PublishError, Publisher};
use crate::amqp::topology::{leader_state_args, Names};
use chrono::{DateTime, Utc};
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The least time a pass waits for the lock's token: a free lock's token
/// comes within one round trip to the broker (milliseconds); this leaves a
/// slow broker room, so that a free lock is rarely called held.
pub(crate) const FREE_LOCK_WAIT: Duration = Duration::from_secs(2);

/// How often a held lock is renewed (its token handed back and received
/// again): far within the broker's consumer timeout (30 min by default),
/// which would otherwise close a long replay's lock channel and hand the
/// token to the next pass.
pub(crate) const RENEW_EVERY: Duration = Duration::from_secs(20);

/// A renewal that is not answered within this ends the pass: its broker
/// node is cut off (or the connection gone), and the queue may have given
/// the token to another pass.
pub(crate) const RENEW_WITHIN: Duration = Duration::from_secs(10);

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LockError {
    /// Another connection holds it.
    #[error("{}", held_message(.0))]
    Held(Holder),
    /// The channel or connection failed.
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    /// The record was not confirmed.
    #[error("{0}")]
    Publish(#[from] PublishError),
    /// The lease queue refused or cancelled the subscription.
    #[error("dlq pass lock: {0}")]
    Lease(#[from] LeaseError),
    /// Stopped (Ctrl-C) while waiting in line.
    #[error("interrupted while waiting for another dlq pass to end; nothing changed")]
    Interrupted,
}

/// What the holder of the lock recorded, as far as it could be read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Holder {
    /// When its pass started.
    pub since: Option<DateTime<Utc>>,
    /// Who runs it: `host pid N`.
    pub by: Option<String>,
}

/// What a pass waiting in line is told about the one before it.
pub(crate) fn running_message(h: &Holder) -> String {
    let since = h.since.map_or_else(|| "unknown".to_owned(), rfc3339);
    let by = h.by.as_deref().map(|b| format!(", by {b}")).unwrap_or_default();
    format!("another dlq pass is running (since {since}{by})")
}

/// The line a second operator gets.
pub(crate) fn held_message(h: &Holder) -> String {
    format!("{}; nothing changed: try again when it ends", running_message(h))
}

/// The record's body: one JSON object.
pub(crate) fn record_body(since: DateTime<Utc>, by: &str) -> Vec<u8> {
    serde_json::json!({"since": rfc3339(since), "by": by})
        .to_string()
        .into_bytes()
}

/// Reads a record body; anything unreadable is an unknown holder.
pub(crate) fn read_record(body: &[u8]) -> Holder {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    Holder {
        since: v["since"]
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc)),
        by: v["by"].as_str().map(str::to_owned),
    }
}

/// Proof that this process holds the pass lock. A keeper task renews it;
/// when a renewal goes unanswered it cancels [`PassLock::stop`] and
/// [`PassLock::is_lost`] turns true. [`PassLock::release`] lets it go; it
/// also goes when the connection it was taken on closes, and when its
/// process dies.
pub(crate) struct PassLock {
    stop: CancellationToken,
    lost: Arc<AtomicBool>,
    release: CancellationToken,
    keeper: Option<tokio::task::JoinHandle<()>>,
}

impl PassLock {
    /// Cancelled when the pass must stop: the `stop` given to [`take`] was
    /// cancelled (Ctrl-C), or the lock may be someone else's now.
    pub(crate) fn stop(&self) -> &CancellationToken {
        &self.stop
    }

    /// Whether the lock was lost (a renewal went unanswered).
    pub(crate) fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// Stops renewing and lets the lock go: the lease channel and the
    /// keeper's publisher channel are closed when this returns (the next
    /// pass in line gets the token), so the caller may close the connection.
    /// Every pass releases before it closes the connection the lock was
    /// taken on.
    pub(crate) async fn release(mut self) {
        self.release.cancel();
        if let Some(keeper) = self.keeper.take() {
            let _ = keeper.await;
        }
    }
}

impl Drop for PassLock {
    fn drop(&mut self) {
        self.release.cancel();
    }
}

/// Takes the pass lock on `conn`, waiting in line up to `wait` (at least
/// [`FREE_LOCK_WAIT`]) for the pass before it, and records the start; or
/// says who holds it. `on_wait` runs once, after [`FREE_LOCK_WAIT`], when the
/// lock is still held (to tell the operator why nothing happens). The
/// lock's [`PassLock::stop`] is a child of `stop`.
pub(crate) async fn take(
    conn: &Connection,
    names: &Names,
    wait: Duration,
    stop: &CancellationToken,
    on_wait: impl FnOnce(&Holder),
) -> Result<PassLock, LockError> {
    let publisher = Publisher::open(conn).await?;
    let tag = format!("kickq-dlq-{}-{}", host(), std::process::id());
    let mut lease = crate::amqp::lease::subscribe(conn, &publisher, &names.dead_lease, &tag).await?;
    let deadline = tokio::time::Instant::now() + wait.max(FREE_LOCK_WAIT);
    let mut on_wait = Some(on_wait);
    loop {
        let step = (tokio::time::Instant::now() + FREE_LOCK_WAIT).min(deadline);
        tokio::select! {
            got = tokio::time::timeout_at(step, lease.receive()) => match got {
                Ok(Ok(())) => break,
                Ok(Err(e)) => {
                    close_both(lease, &publisher, "dlq pass lock not taken").await;
                    return Err(e.into());
                }
                Err(_) if tokio::time::Instant::now() >= deadline => {
                    close_both(lease, &publisher, "dlq pass lock held").await;
                    return Err(LockError::Held(read_holder(conn, names).await.unwrap_or_default()));
                }
                Err(_) => {
                    if let Some(f) = on_wait.take() {
                        f(&read_holder(conn, names).await.unwrap_or_default());
                    }
                }
            },
            () = stop.cancelled() => {
                close_both(lease, &publisher, "interrupted").await;
                return Err(LockError::Interrupted);
            }
        }
    }
    // The record: on a failure the lock is let go, its channels closed.
    let recorded = async {
        let channel = conn.create_channel().await?;
        declare_state(&channel, names).await?;
        let _ = channel.close(200, "declared".into()).await;
        let by = format!("{} pid {}", host(), std::process::id());
        publisher
            .publish(
                &names.dead_lock_state,
                &record_body(Utc::now(), &by),
                persistent_json(None, FieldTable::default()),
            )
            .await?;
        Ok::<(), LockError>(())
    };
    if let Err(e) = recorded.await {
        close_both(lease, &publisher, "dlq pass record not written").await;
        return Err(e);
    }
    let pass_stop = stop.child_token();
    let lost = Arc::new(AtomicBool::new(false));
    let release = CancellationToken::new();
    let keeper = tokio::spawn(keep(
        lease,
        publisher,
        names.dead_lease.clone(),
        Keeper {
            stop: pass_stop.clone(),
            lost: lost.clone(),
            release: release.clone(),
        },
    ));
    Ok(PassLock {
        stop: pass_stop,
        lost,
        release,
        keeper: Some(keeper),
    })
}

/// Lets `lease` go and closes `publisher`'s channel, each bounded by
/// [`crate::amqp::connect::CLOSE_WITHIN`] (a broker that stopped answering
/// is the case a lost lock comes from).
async fn close_both(lease: Lease, publisher: &Publisher, reason: &str) {
    let within = crate::amqp::connect::CLOSE_WITHIN;
    let _ = tokio::time::timeout(within, lease.release()).await;
    let _ = tokio::time::timeout(within, publisher.channel().close(200, reason.into())).await;
}

/// What the keeper signals and listens to.
struct Keeper {
    stop: CancellationToken,
    lost: Arc<AtomicBool>,
    release: CancellationToken,
}

/// Renews the held lock every [`RENEW_EVERY`] until released; on a renewal
/// not answered within [`RENEW_WITHIN`], marks it lost and stops the pass.
async fn keep(mut lease: Lease, publisher: Publisher, queue: String, k: Keeper) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(RENEW_EVERY) => {}
            () = k.release.cancelled() => {
                // Both channels are closed here, answered (or given up
                // after CLOSE_WITHIN), before the caller closes the
                // connection: a channel closed by a dropped handle while the
                // connection closes makes lapin end its I/O loop and leave
                // the connection's close unanswered. Closing the lease
                // channel hands the token on.
                close_both(lease, &publisher, "dlq pass done").await;
                return;
            }
        }
        let renewal = async {
            lease.send_renewal(&publisher, RENEW_WITHIN).await?;
            lease.receive().await
        };
        let failed = match tokio::time::timeout(RENEW_WITHIN, renewal).await {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {}s", RENEW_WITHIN.as_secs()),
        };
        tracing::warn!(lease = %queue, error = %failed, "the dlq pass lock was lost; stopping the pass");
        k.lost.store(true, Ordering::Relaxed);
        k.stop.cancel();
        close_both(lease, &publisher, "dlq pass lock lost").await;
        return;
    }
}

async fn declare_state(channel: &Channel, names: &Names) -> Result<(), lapin::Error> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(names.dead_lock_state.as_str().into(), durable, leader_state_args())
        .await?;
    Ok(())
}

/// Reads the holder's record and puts it back: taken (no ack needed) and
/// published again, confirmed. A record handed back (`nack` with requeue)
/// would count a delivery each time, and RabbitMQ 4 drops a message after
/// 20 (its default delivery limit, which this queue, declared before 4.0,
/// does not set): a busy pass refused to twenty operators would lose its
/// record. The copy goes to the tail of a one-message queue: if a new pass
/// wrote its record in the instant between, the older copy wins, and a
/// refusal names the pass before; the record only ever informs.
async fn read_holder(conn: &Connection, names: &Names) -> Result<Holder, LockError> {
    let ch = conn.create_channel().await?;
    declare_state(&ch, names).await?;
    let got = ch
        .basic_get(names.dead_lock_state.as_str().into(), BasicGetOptions { no_ack: true })
        .await?;
    let holder = match got {
        Some(m) => {
            let publisher = Publisher::open(conn).await?;
            publisher
                .publish(
                    &names.dead_lock_state,
                    &m.delivery.data,
                    persistent_json(None, FieldTable::default()),
                )
                .await?;
            let _ = publisher.channel().close(200, "record put back".into()).await;
            read_record(&m.delivery.data)
        }
        None => Holder::default(),
    };
    let _ = ch.close(200, "read".into()).await;
    Ok(holder)
}

fn host() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown host".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_round_trips_and_says_who_and_since_when() {
        let t = DateTime::parse_from_rfc3339("2024-05-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let h = read_record(&record_body(t, "box pid 7"));
        assert_eq!(
            h,
            Holder {
                since: Some(t),
                by: Some("box pid 7".into())
            }
        );
        let cases = [
            (
                h,
                "another dlq pass is running (since 2024-05-01T10:00:00.000Z, by box pid 7)",
            ),
            (read_record(b"not json"), "another dlq pass is running (since unknown)"),
            (Holder::default(), "another dlq pass is running (since unknown)"),
        ];
        for (h, want) in cases {
            let got = held_message(&h);
            assert!(got.starts_with(want), "{got}");
            assert!(got.ends_with("nothing changed: try again when it ends"), "{got}");
        }
    }
}
