//! The producer API: connect, declare the queues, and enqueue validated jobs as persistent, confirmed messages.
//!
//! A job counts as enqueued only once the broker has confirmed it, so an `Ok`
//! from [`Producer::enqueue`] means the job survives a broker restart. Jobs are
//! checked by the same [`job::validate`] the worker uses: a job the producer
//! accepts is never dead-lettered as `validation`.
//!
//! ```no_run
//! use kickq::job::KickRequest;
//! use kickq::producer::Producer;
//!
//! # async fn demo() -> Result<(), kickq::producer::ProducerError> {
//! let producer = Producer::connect("amqp://guest:guest@127.0.0.1:5672/%2f", "kickq").await?;
//! // One job: returns once the broker has it on disk.
//! producer
//!     .enqueue(KickRequest::new("room-42", ["u1", "u2"]).with_reason("spam").with_job_id("mod-7781"))
//!     .await?;
//! // Many jobs: all are validated first (one bad job publishes nothing), then pipelined.
//! let sweep = (0..1000).map(|i| KickRequest::new(format!("room-{i}"), ["u1"]));
//! let n = producer.enqueue_many(sweep).await?;
//! assert_eq!(n, 1000);
//! producer.close().await?;
//! # Ok(())
//! # }
//! ```

use crate::amqp::connect::connect;
use crate::amqp::publish::{persistent_json, Pending, PublishError, Publisher};
use crate::amqp::topology::{self, Names, DEFAULT_DELIVERY_LIMIT, DEFAULT_RETRY_DELAYS};
use crate::job::{self, InvalidJob, KickRequest, Limits};
use crate::secret::Secret;
use lapin::types::FieldTable;
use lapin::Connection;
use std::collections::VecDeque;

/// Most publishes [`Producer::enqueue_many`] keeps unconfirmed at once: enough
/// to keep the broker busy, few enough that a failure leaves little in doubt.
pub const MAX_IN_FLIGHT: usize = 1000;

/// Why a job was not enqueued.
#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    /// The broker could not be reached or refused the login (the error
    /// names the host and the setting to fix).
    #[error(transparent)]
    Unreachable(crate::amqp::connect::ConnectError),
    /// A channel could not be opened on the new connection.
    #[error("cannot open a channel on the broker connection: {0}")]
    Connect(#[source] lapin::Error),
    /// The queues could not be declared. A queue declared earlier with other
    /// arguments (another delivery limit or retry delays) cannot be redeclared.
    #[error(
        "cannot declare the queues of namespace {namespace:?} (were they declared with another \
         KICKQ_DELIVERY_LIMIT?): {source}"
    )]
    Topology {
        /// The namespace.
        namespace: String,
        /// The broker's answer.
        #[source]
        source: lapin::Error,
    },
    /// A job breaks the job message rules; nothing of its batch was published.
    #[error("job {index} is invalid: {error}")]
    Invalid {
        /// Position of the job in the batch (0 for [`Producer::enqueue`]).
        index: usize,
        /// What is wrong with it.
        #[source]
        error: InvalidJob,
    },
    /// The broker did not confirm a publish: it may or may not have stored it.
    #[error("publish failed: {0}")]
    Publish(#[from] PublishError),
    /// Closing the connection failed (everything before was confirmed).
    #[error("closing the connection: {0}")]
    Close(#[source] lapin::Error),
}

/// How a [`Producer`] connects: queue names and the arguments it declares them
/// with, which must equal the worker's (a queue's arguments are fixed when it is
/// first declared).
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Queue names of the namespace.
    pub names: Names,
    /// `x-delivery-limit` of `{ns}.requests` (the worker's `KICKQ_DELIVERY_LIMIT`).
    pub delivery_limit: u32,
    /// Broker connection name, shown by `rabbitmqctl list_connections`.
    pub connection_name: String,
    /// Validation limits; the default is what the worker accepts by default.
    pub limits: Limits,
}

impl ProducerConfig {
    /// The defaults of `kickq run` for `namespace`.
    pub fn new(namespace: &str) -> Self {
        Self {
            names: Names::new(namespace, DEFAULT_RETRY_DELAYS),
            delivery_limit: DEFAULT_DELIVERY_LIMIT,
            connection_name: format!("kickq-producer-{}", std::process::id()),
            limits: Limits::default(),
        }
    }
}

/// A connection that publishes jobs to `{ns}.requests`.
///
/// Invariant: the topology of its namespace was declared when it connected, so
/// a publish can only be returned as unroutable if someone deleted the queue.
pub struct Producer {
    conn: Connection,
    publisher: Publisher,
    cfg: ProducerConfig,
}

impl Producer {
    /// Connects with the worker's defaults and declares the namespace's queues
    /// (idempotent), so a producer may start before any worker.
    pub async fn connect(url: &str, namespace: &str) -> Result<Producer, ProducerError> {
        Self::connect_with(&Secret::new(url), ProducerConfig::new(namespace)).await
    }

    /// Connects with explicit settings and declares the namespace's queues.
    pub async fn connect_with(url: &Secret, cfg: ProducerConfig) -> Result<Producer, ProducerError> {
        let conn = connect(url, &cfg.connection_name)
            .await
            .map_err(|e| ProducerError::Unreachable(crate::amqp::connect::explain(url, &e)))?;
        let publisher = Publisher::open(&conn).await.map_err(ProducerError::Connect)?;
        // Declared on a throwaway channel: a refused declare closes its channel,
        // and the publisher's must stay usable for the error to be reported cleanly.
        let channel = conn.create_channel().await.map_err(ProducerError::Connect)?;
        topology::declare(&channel, &cfg.names, cfg.delivery_limit)
            .await
            .map_err(|source| ProducerError::Topology {
                namespace: cfg.names.namespace.clone(),
                source,
            })?;
        let _ = channel.close(200, "declared".into()).await;
        Ok(Producer { conn, publisher, cfg })
    }

    /// The queue names this producer publishes to.
    pub fn names(&self) -> &Names {
        &self.cfg.names
    }

    /// Validates `job` and publishes it; returns once the broker confirmed it.
    pub async fn enqueue(&self, job: KickRequest) -> Result<(), ProducerError> {
        self.send(job).await?.confirmed().await?;
        Ok(())
    }

    /// Validates `job` and sends it without waiting: await
    /// [`Pending::confirmed`] to know it is durable. Callers that keep their
    /// own window of publishes in flight (`kickq enqueue`) use this.
    pub async fn send(&self, job: KickRequest) -> Result<Pending, ProducerError> {
        let job = job::validate(job, &self.cfg.limits).map_err(|error| ProducerError::Invalid { index: 0, error })?;
        Ok(self.send_valid(&job).await?)
    }

    /// Validates every job first (one invalid job publishes nothing), then
    /// publishes them in order with up to [`MAX_IN_FLIGHT`] unconfirmed, and
    /// returns how many were confirmed: all of them, or an error.
    pub async fn enqueue_many(&self, jobs: impl IntoIterator<Item = KickRequest>) -> Result<usize, ProducerError> {
        let jobs = jobs
            .into_iter()
            .enumerate()
            .map(|(index, job)| {
                job::validate(job, &self.cfg.limits).map_err(|error| ProducerError::Invalid { index, error })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut in_flight: VecDeque<Pending> = VecDeque::with_capacity(MAX_IN_FLIGHT.min(jobs.len()));
        for job in &jobs {
            if in_flight.len() >= MAX_IN_FLIGHT {
                in_flight
                    .pop_front()
                    .expect("the window is full, so not empty")
                    .confirmed()
                    .await?;
            }
            in_flight.push_back(self.send_valid(job).await?);
        }
        for pending in in_flight {
            pending.confirmed().await?;
        }
        Ok(jobs.len())
    }

    /// Closes the connection. Everything enqueued before was already confirmed.
    pub async fn close(self) -> Result<(), ProducerError> {
        self.conn
            .close(200, "producer closed".into())
            .await
            .map_err(ProducerError::Close)
    }

    async fn send_valid(&self, job: &KickRequest) -> Result<Pending, PublishError> {
        let props = persistent_json(job.job_id.as_deref(), FieldTable::default());
        self.publisher
            .send(&self.cfg.names.requests, &job.to_body(), props)
            .await
    }
}
