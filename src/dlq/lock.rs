//! The dead-letter pass lock: the token of `{ns}.dead.lease` (the leadership lease's primitive: a quorum
//! queue with single active consumer, so it holds on every broker version and metadata store, through a
//! partition), its keeper, the holder's record in `{ns}.dead.lock.record` (when it started, who), and what a
//! second operator is told.

use crate::amqp::headers::rfc3339;
use crate::amqp::lock::{Lease, LeaseError};
use crate::amqp::publish::{persistent_json, PublishError, Publisher};
use crate::amqp::topology::{leader_state_args, Names};
use chrono::{DateTime, Utc};
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a pass waits for the lock's token before it says who holds
/// it. A free lock's token comes within one round trip to the broker
/// (milliseconds); a held one never comes while its holder runs. Generous,
/// so that a slow broker refuses a pass rarely (a refusal changes nothing),
/// and short enough for an operator to wait out.
pub const TAKE_WAIT: Duration = Duration::from_secs(2);

/// How often a held lock is renewed (its token handed back and received
/// again): far within the broker's consumer timeout (30 min by default),
/// which would otherwise close a long replay's lock channel and hand the
/// token to the next pass.
pub const RENEW_EVERY: Duration = Duration::from_secs(20);

/// A renewal that is not answered within this ends the pass: its broker
/// node is cut off (or the connection gone), and the queue may have given
/// the token to another pass.
pub const RENEW_WITHIN: Duration = Duration::from_secs(10);

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
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
}

/// What the holder of the lock recorded, as far as it could be read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holder {
    /// When its pass started.
    pub since: Option<DateTime<Utc>>,
    /// Who runs it: `host pid N`.
    pub by: Option<String>,
}

/// The line a second operator gets.
pub fn held_message(h: &Holder) -> String {
    let since = h.since.map_or_else(|| "unknown".to_owned(), rfc3339);
    let by = h.by.as_deref().map(|b| format!(", by {b}")).unwrap_or_default();
    format!("another dlq pass is running (since {since}{by}); nothing changed: try again when it ends")
}

/// The record's body: one JSON object.
pub fn record_body(since: DateTime<Utc>, by: &str) -> Vec<u8> {
    serde_json::json!({"since": rfc3339(since), "by": by})
        .to_string()
        .into_bytes()
}

/// Reads a record body; anything unreadable is an unknown holder.
pub fn read_record(body: &[u8]) -> Holder {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    Holder {
        since: v["since"]
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc)),
        by: v["by"].as_str().map(str::to_owned),
    }
}

/// Proof that this process holds the pass lock. A keeper task renews it
/// and cancels [`PassLock::lost`] when a renewal goes unanswered; dropped,
/// the lock goes (the lease channel closes and the token returns to the
/// queue), as it does when the holder's connection closes or its process
/// dies.
pub struct PassLock {
    lost: CancellationToken,
    keeper: tokio::task::JoinHandle<()>,
}

impl PassLock {
    /// Cancelled once the lock may be someone else's: a pass stops then.
    pub fn lost(&self) -> &CancellationToken {
        &self.lost
    }
}

impl Drop for PassLock {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// Takes the pass lock on `conn` and records the start, or says who holds it
/// (after [`TAKE_WAIT`] without the token).
pub async fn take(conn: &Connection, names: &Names) -> Result<PassLock, LockError> {
    let publisher = Publisher::open(conn).await?;
    let tag = format!("kickq-dlq-{}-{}", host(), std::process::id());
    let mut lease = crate::amqp::lock::subscribe(conn, &publisher, &names.dead_lease, &tag).await?;
    match tokio::time::timeout(TAKE_WAIT, lease.receive()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => {
            let _ = lease.release().await;
            return Err(LockError::Held(read_holder(conn, names).await.unwrap_or_default()));
        }
    }
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
    let lost = CancellationToken::new();
    let keeper = tokio::spawn(keep(lease, publisher, names.dead_lease.clone(), lost.clone()));
    Ok(PassLock { lost, keeper })
}

/// Renews the held lock every [`RENEW_EVERY`] until dropped; cancels `lost`
/// when a renewal is not answered within [`RENEW_WITHIN`].
async fn keep(mut lease: Lease, publisher: Publisher, queue: String, lost: CancellationToken) {
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        let renewal = async {
            lease.send_renewal(&publisher, RENEW_WITHIN).await?;
            lease.receive().await
        };
        match tokio::time::timeout(RENEW_WITHIN, renewal).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(lease = %queue, error = %e, "the dlq pass lock was lost; stopping the pass");
                break;
            }
            Err(_) => {
                tracing::warn!(lease = %queue, within_s = RENEW_WITHIN.as_secs(), "the dlq pass lock could not be renewed; stopping the pass");
                break;
            }
        }
    }
    lost.cancel();
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
