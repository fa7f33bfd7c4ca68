//! Publishing with publisher confirms, for every sender (retries, dead letters, enqueue, replay, the producer
//! API): a message counts as published only once the broker confirmed it and did not return it.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection};
use lapin::{Confirmation, PublisherConfirm};
use std::time::Duration;

/// Longest wait for one confirm. A broker in a memory or disk alarm blocks
/// every publishing connection and sends no confirm until the alarm clears;
/// past this bound the sender gives up on the session (its unacked
/// deliveries return to the queue) instead of hanging for ever. Long enough
/// that a short alarm passes without a reconnect, since every reconnect
/// raises the delivery count of what was held.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// Default most publishes [`Publisher::publish_all`] keeps unconfirmed: enough to hide
/// the confirm round trip, few enough that a failure leaves little in doubt.
pub const PUBLISH_WINDOW: usize = 1000;

/// Why a publish did not become durable.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The channel or connection failed.
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    /// The broker refused it (e.g. a queue at its length limit with reject-publish).
    #[error("the broker refused the message (nack)")]
    Nacked,
    /// No queue of that name: the message was returned, not stored.
    #[error("no queue took the message (routing key {0}): it was returned")]
    Unroutable(String),
    /// No confirm came within [`CONFIRM_TIMEOUT`] (a broker alarm, a stuck
    /// connection): whether the broker has the message is unknown.
    #[error("no publisher confirm within {0:?} (is the broker in a memory or disk alarm?)")]
    ConfirmTimeout(Duration),
}

/// A channel in confirm mode. Publishes to queues are mandatory, so a
/// message to a missing queue comes back as an error instead of a silent
/// confirm; broadcasts to an exchange ([`Publisher::broadcast_all`]) are not.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
}

/// Where a publish goes.
enum Route<'a> {
    /// A queue by name, through the default exchange, mandatory.
    Queue,
    /// Through an exchange, mandatory: a message no binding takes comes back
    /// and fails (the jobs exchange of a sharded deployment).
    Exchange(&'a str),
    /// A topic exchange, not mandatory (see [`Publisher::broadcast_all`]).
    Broadcast(&'a str),
}

/// A publish on its way; [`Pending::confirmed`] waits for the broker's word.
pub struct Pending {
    confirm: PublisherConfirm,
    routing_key: String,
}

impl Publisher {
    /// Opens a channel in confirm mode.
    pub async fn open(conn: &Connection) -> Result<Self, lapin::Error> {
        let channel = conn.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Self { channel })
    }

    /// The underlying channel (for declaring queues on the same one).
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Sends one message to the default exchange; await the returned
    /// [`Pending`] to know it is durable. Sending several before awaiting
    /// any pipelines them.
    pub async fn send(&self, routing_key: &str, body: &[u8], props: BasicProperties) -> Result<Pending, PublishError> {
        self.send_via(&Route::Queue, routing_key, body, props).await
    }

    /// Sends through `exchange` with `routing_key`, mandatory: a message no
    /// binding takes is returned, and its confirm is
    /// [`PublishError::Unroutable`].
    pub async fn send_routed(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<Pending, PublishError> {
        self.send_via(&Route::Exchange(exchange), routing_key, body, props)
            .await
    }

    async fn send_via(
        &self,
        route: &Route<'_>,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<Pending, PublishError> {
        let (exchange, mandatory) = match route {
            Route::Queue => ("", true),
            Route::Exchange(exchange) => (*exchange, true),
            Route::Broadcast(exchange) => (*exchange, false),
        };
        let publish = self.channel.basic_publish(
            ShortString::from(exchange),
            ShortString::from(routing_key),
            BasicPublishOptions {
                mandatory,
                ..BasicPublishOptions::default()
            },
            body,
            props,
        );
        let confirm = tokio::time::timeout(CONFIRM_TIMEOUT, publish)
            .await
            .map_err(|_| PublishError::ConfirmTimeout(CONFIRM_TIMEOUT))??;
        let routing_key = match route {
            Route::Exchange(exchange) => format!("{routing_key} on {exchange}"),
            _ => routing_key.to_owned(),
        };
        Ok(Pending { confirm, routing_key })
    }

    /// Sends every message in order, pipelined with at most `window`
    /// unconfirmed ([`PUBLISH_WINDOW`] unless the caller knows better), and
    /// returns how many were confirmed: all of them, or the first error (the
    /// messages sent after the last confirmed one are in doubt).
    pub async fn publish_all<K, B>(
        &self,
        window: usize,
        messages: impl IntoIterator<Item = (K, B, BasicProperties)>,
    ) -> Result<u64, PublishError>
    where
        K: AsRef<str>,
        B: AsRef<[u8]>,
    {
        self.publish_all_via(&Route::Queue, window, messages).await
    }

    /// [`Publisher::publish_all`] to a topic `exchange` with `mandatory` off:
    /// for broadcasts (outcome events) that no consumer has to be bound to.
    /// The broker confirms a message it routed to no queue; that is the
    /// deliberate difference from every other publish.
    pub async fn broadcast_all<K, B>(
        &self,
        exchange: &str,
        window: usize,
        messages: impl IntoIterator<Item = (K, B, BasicProperties)>,
    ) -> Result<u64, PublishError>
    where
        K: AsRef<str>,
        B: AsRef<[u8]>,
    {
        self.publish_all_via(&Route::Broadcast(exchange), window, messages)
            .await
    }

    async fn publish_all_via<K, B>(
        &self,
        route: &Route<'_>,
        window: usize,
        messages: impl IntoIterator<Item = (K, B, BasicProperties)>,
    ) -> Result<u64, PublishError>
    where
        K: AsRef<str>,
        B: AsRef<[u8]>,
    {
        let mut in_flight: std::collections::VecDeque<Pending> = std::collections::VecDeque::new();
        let mut confirmed = 0u64;
        for (key, body, props) in messages {
            if in_flight.len() >= window.max(1) {
                in_flight.pop_front().expect("the window is full").confirmed().await?;
                confirmed += 1;
            }
            in_flight.push_back(self.send_via(route, key.as_ref(), body.as_ref(), props).await?);
        }
        for p in in_flight {
            p.confirmed().await?;
            confirmed += 1;
        }
        Ok(confirmed)
    }

    /// Sends and waits for the confirm.
    pub async fn publish(&self, routing_key: &str, body: &[u8], props: BasicProperties) -> Result<(), PublishError> {
        self.send(routing_key, body, props).await?.confirmed().await
    }
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("routing_key", &self.routing_key)
            .finish_non_exhaustive()
    }
}

impl Pending {
    /// Waits for the broker's confirm, at most [`CONFIRM_TIMEOUT`].
    pub async fn confirmed(self) -> Result<(), PublishError> {
        let confirmation = tokio::time::timeout(CONFIRM_TIMEOUT, self.confirm)
            .await
            .map_err(|_| PublishError::ConfirmTimeout(CONFIRM_TIMEOUT))??;
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) => Err(PublishError::Unroutable(self.routing_key)),
            Confirmation::Nack(_) => Err(PublishError::Nacked),
            Confirmation::NotRequested => {
                unreachable!("Publisher::open always puts the channel in confirm mode")
            }
        }
    }
}

/// Properties of every kickq message: persistent JSON with a message id.
pub fn persistent_json(message_id: Option<&str>, headers: FieldTable) -> BasicProperties {
    let mut p = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_headers(headers);
    if let Some(id) = message_id {
        p = p.with_message_id(id.into());
    }
    p
}
