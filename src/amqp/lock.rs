//! The leadership lock and record on the broker: taking `{ns}.leader` (exclusive, so `RESOURCE_LOCKED` means
//! another connection holds it), reading and writing `{ns}.leader.record`, and releasing the lock.

use crate::amqp::publish::{persistent_json, PublishError, Publisher};
use crate::amqp::topology::Names;
use crate::leadership::Record;
use lapin::options::{BasicGetOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ErrorKind};

/// AMQP's reply code for an exclusive queue that another connection owns.
const RESOURCE_LOCKED: u16 = 405;

/// The held lock: the channel it was declared on (the lock itself belongs to
/// the connection, and goes when it closes).
pub struct Lock {
    channel: Channel,
    queue: String,
}

/// Tries once to take the lock on `conn`. `Ok(None)`: another connection
/// holds it. A failed attempt costs a channel (the broker closes a channel
/// on a 405), so each attempt opens its own.
pub async fn try_take(conn: &Connection, names: &Names) -> Result<Option<Lock>, lapin::Error> {
    Ok(declare_exclusive(conn, &names.leader).await?.map(|channel| Lock {
        channel,
        queue: names.leader.clone(),
    }))
}

/// Declares `queue` exclusive and auto-delete on a channel of its own: the
/// lock pattern of the leader and of dlq passes. `Ok(Some(channel))`: this
/// connection owns it now (until it closes); `Ok(None)`: another connection
/// does (RESOURCE_LOCKED, which also closes the channel).
pub async fn declare_exclusive(conn: &Connection, queue: &str) -> Result<Option<Channel>, lapin::Error> {
    let channel = conn.create_channel().await?;
    let opts = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        durable: false,
        ..QueueDeclareOptions::default()
    };
    match channel.queue_declare(queue.into(), opts, FieldTable::default()).await {
        Ok(_) => Ok(Some(channel)),
        Err(e) if is_locked(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

fn is_locked(e: &lapin::Error) -> bool {
    matches!(e.kind(), ErrorKind::ProtocolError(p) if p.get_id() == RESOURCE_LOCKED)
}

impl Lock {
    /// Takes the record the previous holder left (it is replaced at once by
    /// ours, so taking it does no harm).
    pub async fn take_record(&self, names: &Names) -> Result<Option<Record>, lapin::Error> {
        let got = self
            .channel
            .basic_get(names.leader_state.as_str().into(), BasicGetOptions { no_ack: true })
            .await?;
        Ok(got.and_then(|m| Record::from_body(&m.delivery.data)))
    }

    /// Releases the lock: deletes the queue, so a standby's next attempt
    /// takes it without waiting for this connection to close.
    pub async fn release(self) -> Result<(), lapin::Error> {
        self.channel
            .queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
            .await?;
        Ok(())
    }
}

/// Writes the record, confirmed.
pub async fn write_record(publisher: &Publisher, names: &Names, record: Record) -> Result<(), PublishError> {
    publisher
        .publish(
            &names.leader_state,
            &record.to_body(),
            persistent_json(None, FieldTable::default()),
        )
        .await
}
