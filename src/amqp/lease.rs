//! The leadership lease and record on the broker: subscribing to `{ns}.leader.lease` (quorum, single active
//! consumer, one token), receiving, renewing and releasing the token, and reading and writing
//! `{ns}.leader.record`. The `kickq dlq` pass lock (`{ns}.dead.lease`) is the same primitive. The rules and
//! their proof are `crate::leadership`.

use crate::amqp::headers::get_i64;
use crate::amqp::publish::{persistent_json, PublishError, Publisher};
use crate::amqp::topology::{lease_args, Names, QueueState};
use crate::leadership::Record;
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};
use std::time::Duration;

/// The body of a lease token: it carries nothing, its delivery is the message.
const TOKEN: &[u8] = b"{\"token\":\"kickq leadership\"}";

/// Whether a worker holds the leadership lease `{ns}.leader.lease` now: some
/// worker consumes it (the active consumer holds the token; a spare token,
/// which a replacement that was confirmed late leaves, waits ready beside it,
/// so the ready count says nothing). A queue not declared yet, or one with
/// no consumer, is a lease nobody holds.
pub(crate) fn lease_held(state: Option<QueueState>) -> bool {
    state.is_some_and(|q| q.consumers > 0)
}

/// Why the lease was lost or could not be held.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LeaseError {
    /// The channel or connection failed.
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    /// The first token could not be published.
    #[error("{0}")]
    Publish(#[from] PublishError),
    /// The broker cancelled the lease consumer (queue deleted, node down).
    #[error("the broker cancelled the lease consumer")]
    Cancelled,
}

/// A worker's place in the lease queue: a waiting consumer until the token
/// comes, then its holder. Dropped or released, its channel closes and a held
/// token goes back to the queue, to the next consumer.
pub(crate) struct Lease {
    channel: Channel,
    consumer: Consumer,
    /// The token while held (boxed: a delivery is large, and a lease moves
    /// between tasks).
    held: Option<Box<Delivery>>,
}

/// Subscribes to the lease queue `queue` on `conn` (prefetch 1, so the
/// holder has the token and nothing else), and puts a token in when the queue
/// has neither a token nor a consumer that could hold one (its first use; two
/// workers starting at once may both put one: a second token only waits in
/// the queue, since the one active consumer holds one at a time).
pub(crate) async fn subscribe(
    conn: &Connection,
    publisher: &Publisher,
    queue: &str,
    tag: &str,
) -> Result<Lease, LeaseError> {
    let channel = conn.create_channel().await?;
    channel.basic_qos(1, BasicQosOptions { global: false }).await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let q = channel.queue_declare(queue.into(), durable, lease_args()).await?;
    if q.message_count() == 0 && q.consumer_count() == 0 {
        publisher
            .publish(queue, TOKEN, persistent_json(None, FieldTable::default()))
            .await?;
    }
    let consumer = channel
        .basic_consume(
            queue.into(),
            tag.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(Lease {
        channel,
        consumer,
        held: None,
    })
}

impl Lease {
    /// Waits for the next delivery of a token: this worker is the queue's
    /// active consumer when it returns `Ok`.
    pub(crate) async fn receive(&mut self) -> Result<(), LeaseError> {
        match self.consumer.next().await {
            Some(Ok(d)) => {
                self.held = Some(Box::new(d));
                Ok(())
            }
            Some(Err(e)) => Err(e.into()),
            None => Err(LeaseError::Cancelled),
        }
    }

    /// Sends a renewal: the held token goes back (`nack`, requeued) or, once
    /// it was delivered often ([`crate::leadership::should_replace`]), a fresh
    /// token is published (within `publish_within`, else it goes back after
    /// all) and the held one acked. The caller then awaits [`Lease::receive`]:
    /// the next delivery proves that the queue processed this renewal while
    /// this worker was its active consumer.
    pub(crate) async fn send_renewal(
        &mut self,
        publisher: &Publisher,
        publish_within: Duration,
    ) -> Result<(), LeaseError> {
        let Some(held) = self.held.take() else {
            return Ok(());
        };
        let count = get_i64(held.properties.headers().as_ref(), "x-delivery-count");
        if crate::leadership::should_replace(count) {
            let queue = self.consumer.queue();
            let fresh = publisher.publish(queue.as_str(), TOKEN, persistent_json(None, FieldTable::default()));
            if let Ok(Ok(())) = tokio::time::timeout(publish_within, fresh).await {
                held.acker.ack(BasicAckOptions::default()).await?;
                return Ok(());
            }
        }
        held.acker
            .nack(BasicNackOptions {
                requeue: true,
                multiple: false,
            })
            .await?;
        Ok(())
    }

    /// Takes the record the previous holder left (consumed, so that it never
    /// speaks for a later holder).
    pub(crate) async fn take_record(&self, names: &Names) -> Result<Option<Record>, lapin::Error> {
        let got = self
            .channel
            .basic_get(names.leader_state.as_str().into(), BasicGetOptions { no_ack: true })
            .await?;
        Ok(got.and_then(|m| Record::from_body(&m.delivery.data)))
    }

    /// Lets the token go: closes the lease channel, so the held token returns
    /// to the queue and the next consumer receives it at once.
    pub(crate) async fn release(self) -> Result<(), lapin::Error> {
        self.channel.close(200, "lease released".into()).await
    }
}

/// Writes the record, confirmed.
pub(crate) async fn write_record(publisher: &Publisher, names: &Names, record: Record) -> Result<(), PublishError> {
    publisher
        .publish(
            &names.leader_state,
            &record.to_body(),
            persistent_json(None, FieldTable::default()),
        )
        .await
}
