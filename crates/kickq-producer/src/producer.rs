//! The producer API: connect, declare the queues, and enqueue validated jobs as persistent, confirmed messages.
//!
//! A job counts as enqueued only once the broker has confirmed it, so an `Ok`
//! from [`Producer::enqueue`] means the job survives a broker restart. Jobs are
//! checked by the same [`job::validate`] the worker uses, with the worker's
//! limits ([`Limits::from_env`]): a job the producer accepts is never
//! dead-lettered as `validation`.
//!
//! Jobs go to one of two lanes ([`Lane`]): [`Producer::enqueue`] (and
//! [`Producer::send`]) publish to the live lane, `{ns}.requests`, for kicks
//! that must happen now; [`Producer::enqueue_many`] publishes to the bulk
//! lane, `{ns}.bulk`, which the worker serves with the budget live kicks
//! leave free, so a sweep never delays a live kick. The `_to` variants take
//! the lane. A deadline is part of the job ([`KickRequest::not_after`]).
//!
//! Every job leaves with a job id: the caller's, or one made here (a UUID v7),
//! written into the body and the AMQP `message_id` and returned. A redelivered
//! job therefore keeps its id, and with the ledger on the worker skips the
//! users it already kicked for it.
//!
//! ```no_run
//! use kickq_producer::job::KickRequest;
//! use kickq_producer::producer::{Lane, Producer, ProducerError};
//!
//! # async fn demo() -> Result<(), ProducerError> {
//! let producer = Producer::connect("amqp://guest:guest@127.0.0.1:5672/%2f", "kickq").await?;
//! // One job: returns its id once the broker has it on disk.
//! let id = producer.enqueue(KickRequest::new("room-42", ["u1", "u2"]).with_reason("spam")).await?;
//! println!("enqueued {id}");
//! // Many jobs (to the bulk lane): all are validated first (one bad job publishes nothing), then pipelined.
//! let sweep: Vec<KickRequest> = (0..1000).map(|i| KickRequest::new(format!("room-{i}"), ["u1"])).collect();
//! match producer.enqueue_many(sweep.clone()).await {
//!     Ok(ids) => assert_eq!(ids.len(), 1000),
//!     Err(ProducerError::Partial(p)) => {
//!         // The first p.confirmed.len() jobs are stored. Resend the rest, the
//!         // jobs in doubt under the ids they were sent with.
//!         producer.enqueue_many(p.resume(sweep)).await?;
//!     }
//!     Err(e) => return Err(e),
//! }
//! // A batch that must not wait behind sweeps goes to the live lane.
//! producer.enqueue_many_to(Lane::Live, [KickRequest::new("room-7", ["u9"])]).await?;
//! producer.close().await?;
//! # Ok(())
//! # }
//! ```

use crate::amqp::connect::connect;
use crate::amqp::publish::{persistent_json, Pending, PublishError, Publisher};
pub use crate::amqp::topology::Lane;
use crate::amqp::topology::{self, Names, DEFAULT_DELIVERY_LIMIT, DEFAULT_RETRY_DELAYS};
use crate::job::{self, InvalidJob, KickRequest, Limits, LimitsError};
use crate::secret::Secret;
pub use crate::shards::Routing;
use lapin::types::FieldTable;
use lapin::Connection;
use std::collections::VecDeque;

/// Most publishes [`Producer::enqueue_many`] keeps unconfirmed at once, by
/// default ([`ProducerConfig::max_in_flight`]): enough to keep the broker
/// busy, few enough that a failure leaves little in doubt.
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
        /// The namespace whose queues were refused (`KICKQ_NAMESPACE`).
        namespace: String,
        /// The broker's refusal (usually PRECONDITION_FAILED: other arguments).
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
    /// `KICKQ_MAX_USERS_PER_MESSAGE` or `KICKQ_ID_CHARSET` does not parse
    /// ([`Producer::connect`] reads them, as the worker does).
    #[error(transparent)]
    Limits(#[from] LimitsError),
    /// The broker did not confirm the publish of [`Producer::enqueue`]: the
    /// job may or may not be stored. Enqueue it again with the same job id.
    #[error("publish failed: {0}")]
    Publish(#[from] PublishError),
    /// [`Producer::enqueue_many`] stopped at a failed publish or confirm: a
    /// prefix of the batch is stored, the jobs after it are in doubt, the
    /// rest were never published.
    #[error(transparent)]
    Partial(Box<PartialEnqueue>),
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
    /// `x-delivery-limit` of `{ns}.requests` and `{ns}.bulk` (the worker's `KICKQ_DELIVERY_LIMIT`).
    pub delivery_limit: u32,
    /// Broker connection name, shown by `rabbitmqctl list_connections`.
    pub connection_name: String,
    /// Validation limits: must be the worker's, or jobs it refuses are dead-lettered.
    pub limits: Limits,
    /// Most publishes [`Producer::enqueue_many`] keeps unconfirmed, and so the
    /// most jobs in doubt after a broker failure ([`MAX_IN_FLIGHT`] by default).
    pub max_in_flight: usize,
    /// With shards: which shard serves each app (the config file's
    /// `[[apps]]`). Jobs then go to the topic exchange `{ns}.jobs` with
    /// routing key `<lane>.<app_id>` (`<lane>.default` for a job naming
    /// none), which the producer declares and binds like the worker; a job
    /// whose app no shard serves is returned and refused. `None`: straight
    /// to `{ns}.requests` or `{ns}.bulk`.
    pub routing: Option<Routing>,
}

impl ProducerConfig {
    /// The defaults of `kickq run` for `namespace`, ignoring the environment.
    pub fn new(namespace: &str) -> Self {
        Self {
            names: Names::new(namespace, DEFAULT_RETRY_DELAYS),
            delivery_limit: DEFAULT_DELIVERY_LIMIT,
            connection_name: format!("kickq-producer-{}", std::process::id()),
            limits: Limits::default(),
            max_in_flight: MAX_IN_FLIGHT,
            routing: None,
        }
    }

    /// [`ProducerConfig::new`] with the worker's validation limits read from
    /// this process's environment ([`Limits::from_env`]).
    pub fn from_env(namespace: &str) -> Result<Self, LimitsError> {
        Ok(Self {
            limits: Limits::from_env()?,
            ..Self::new(namespace)
        })
    }
}

/// What an interrupted [`Producer::enqueue_many`] left, in batch order:
/// `confirmed` jobs stored, then `in_doubt` jobs sent but not confirmed (the
/// broker may or may not have them), then jobs never published.
///
/// To finish the batch, enqueue [`PartialEnqueue::resume`] of it: every job
/// not confirmed, the jobs in doubt under the ids they were sent with. A job
/// in doubt that was stored is then queued twice with one id, and the worker
/// kicks its users once if the ledger is on (`KICKQ_DATABASE_URL`); without
/// the ledger they may be kicked twice (KickoutUser is idempotent: a second
/// kick of a user already out does nothing).
#[derive(Debug, thiserror::Error)]
#[error(
    "{} job(s) confirmed, {} in doubt (sent, not confirmed), the rest not published: {source}",
    confirmed.len(),
    in_doubt.len()
)]
pub struct PartialEnqueue {
    /// Ids of the stored jobs: the first `confirmed.len()` of the batch.
    pub confirmed: Vec<String>,
    /// Ids of the jobs that follow them, sent but not confirmed.
    pub in_doubt: Vec<String>,
    /// Why the batch stopped.
    #[source]
    pub source: PublishError,
}

impl PartialEnqueue {
    /// The jobs of `batch` (the batch given to `enqueue_many`, in the same
    /// order) that still need enqueueing: those in doubt with the ids they
    /// were sent with, then those never published. Jobs that already had a
    /// job id keep it either way.
    pub fn resume(&self, batch: impl IntoIterator<Item = KickRequest>) -> Vec<KickRequest> {
        let mut ids = self.in_doubt.iter();
        batch
            .into_iter()
            .skip(self.confirmed.len())
            .map(|job| match ids.next() {
                Some(id) => job.with_job_id(id.clone()),
                None => job,
            })
            .collect()
    }
}

/// A job sent by [`Producer::send`], not yet known to be stored.
#[derive(Debug)]
pub struct Sent {
    /// The job's id (the caller's, or the one made for it).
    pub job_id: String,
    /// Resolves once the broker confirms the job.
    pub pending: Pending,
}

impl Sent {
    /// Waits for the broker's confirm; returns the job id once it is stored.
    pub async fn confirmed(self) -> Result<String, PublishError> {
        self.pending.confirmed().await?;
        Ok(self.job_id)
    }
}

/// A connection that publishes jobs to `{ns}.requests` (live) or `{ns}.bulk`.
///
/// Invariant: the topology of its namespace (both lanes) was declared when it connected, so
/// a publish can only be returned as unroutable if someone deleted the queue.
pub struct Producer {
    conn: Connection,
    publisher: Publisher,
    cfg: ProducerConfig,
}

impl Producer {
    /// Connects with the worker's defaults and the worker's limits from the
    /// environment ([`ProducerConfig::from_env`]), and declares the
    /// namespace's queues (idempotent), so a producer may start before any worker.
    pub async fn connect(url: &str, namespace: &str) -> Result<Producer, ProducerError> {
        Self::connect_with(&Secret::new(url), ProducerConfig::from_env(namespace)?).await
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
        let declared = match &cfg.routing {
            Some(routing) => topology::declare_routing(&channel, &cfg.names, routing, cfg.delivery_limit).await,
            None => topology::declare(&channel, &cfg.names, cfg.delivery_limit)
                .await
                .map(|_| ()),
        };
        declared.map_err(|source| ProducerError::Topology {
            namespace: cfg.names.namespace.clone(),
            source,
        })?;
        let _ = channel.close(200, "declared".into()).await;
        Ok(Producer { conn, publisher, cfg })
    }

    /// Whether the connection is still open (the HTTP intake reconnects when not).
    pub fn is_connected(&self) -> bool {
        self.conn.status().connected()
    }

    /// Whether jobs go through `{ns}.jobs` by app (the config has shards).
    pub fn routes_by_shard(&self) -> bool {
        self.cfg.routing.is_some()
    }

    /// The queue names this producer publishes to.
    pub fn names(&self) -> &Names {
        &self.cfg.names
    }

    /// Validates `job`, gives it a job id if it has none, and publishes it to
    /// the live lane (`{ns}.requests`); returns the job id once the broker
    /// confirmed it. [`Producer::enqueue_to`] chooses the lane.
    pub async fn enqueue(&self, job: KickRequest) -> Result<String, ProducerError> {
        self.enqueue_to(Lane::Live, job).await
    }

    /// [`Producer::enqueue`] to `lane`.
    pub async fn enqueue_to(&self, lane: Lane, job: KickRequest) -> Result<String, ProducerError> {
        Ok(self.send_to(lane, job).await?.confirmed().await?)
    }

    /// Validates `job`, gives it a job id if it has none, and sends it to the
    /// live lane without waiting: await [`Sent::confirmed`] to know it is
    /// durable. Callers that keep their own window of publishes in flight use
    /// this or [`Producer::send_to`].
    pub async fn send(&self, job: KickRequest) -> Result<Sent, ProducerError> {
        self.send_to(Lane::Live, job).await
    }

    /// [`Producer::send`] to `lane` (`kickq enqueue --file` sends to bulk this way).
    pub async fn send_to(&self, lane: Lane, job: KickRequest) -> Result<Sent, ProducerError> {
        let job = self
            .prepare(job)
            .map_err(|error| ProducerError::Invalid { index: 0, error })?;
        Ok(self.send_valid(lane, job).await?)
    }

    /// Validates every job first (one invalid job publishes nothing) and gives
    /// each without an id a fresh one, then publishes them in order to the
    /// **bulk** lane (`{ns}.bulk`: a batch is a sweep, and must not delay live
    /// kicks) with up to [`ProducerConfig::max_in_flight`] unconfirmed.
    /// Returns the job ids, in batch order, once all are confirmed, or
    /// [`ProducerError::Partial`] saying which are stored and which in doubt.
    /// [`Producer::enqueue_many_to`] chooses the lane.
    pub async fn enqueue_many(
        &self,
        jobs: impl IntoIterator<Item = KickRequest>,
    ) -> Result<Vec<String>, ProducerError> {
        self.enqueue_many_to(Lane::Bulk, jobs).await
    }

    /// [`Producer::enqueue_many`] to `lane`.
    pub async fn enqueue_many_to(
        &self,
        lane: Lane,
        jobs: impl IntoIterator<Item = KickRequest>,
    ) -> Result<Vec<String>, ProducerError> {
        let jobs = jobs
            .into_iter()
            .enumerate()
            .map(|(index, job)| {
                self.prepare(job)
                    .map_err(|error| ProducerError::Invalid { index, error })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let window = self.cfg.max_in_flight.max(1);
        let mut confirmed: Vec<String> = Vec::with_capacity(jobs.len());
        let mut in_flight: VecDeque<Sent> = VecDeque::with_capacity(window.min(jobs.len()));
        // The jobs in doubt, in batch order: the one whose confirm failed
        // (if any), those still in flight, then the one whose publish failed
        // (if any: it may have reached the broker before the channel broke).
        let partial = |confirmed,
                       failed_confirm: Option<String>,
                       in_flight: VecDeque<Sent>,
                       failed_send: Option<String>,
                       source| {
            let in_doubt = failed_confirm
                .into_iter()
                .chain(in_flight.into_iter().map(|s| s.job_id))
                .chain(failed_send)
                .collect();
            ProducerError::Partial(Box::new(PartialEnqueue {
                confirmed,
                in_doubt,
                source,
            }))
        };
        for job in jobs {
            if in_flight.len() >= window {
                let sent = in_flight.pop_front().expect("the window is full, so not empty");
                let id = sent.job_id.clone();
                match sent.confirmed().await {
                    Ok(id) => confirmed.push(id),
                    Err(e) => return Err(partial(confirmed, Some(id), in_flight, None, e)),
                }
            }
            let id = job.job_id.clone().expect("prepare gave every job an id");
            match self.send_valid(lane, job).await {
                Ok(sent) => in_flight.push_back(sent),
                Err(e) => return Err(partial(confirmed, None, in_flight, Some(id), e)),
            }
        }
        while let Some(sent) = in_flight.pop_front() {
            let id = sent.job_id.clone();
            match sent.confirmed().await {
                Ok(id) => confirmed.push(id),
                Err(e) => return Err(partial(confirmed, Some(id), in_flight, None, e)),
            }
        }
        Ok(confirmed)
    }

    /// Closes the connection. Everything enqueued before was already
    /// confirmed. A close the broker does not answer within
    /// [`crate::amqp::connect::CLOSE_WITHIN`] counts as done: the socket goes
    /// with the producer, and nothing is left to confirm.
    pub async fn close(self) -> Result<(), ProducerError> {
        let closing = self.conn.close(200, "producer closed".into());
        match tokio::time::timeout(crate::amqp::connect::CLOSE_WITHIN, closing).await {
            Ok(closed) => closed.map_err(ProducerError::Close),
            Err(_) => Ok(()),
        }
    }

    /// Validates `job` with the worker's limits and gives it an id if it has none.
    fn prepare(&self, job: KickRequest) -> Result<KickRequest, InvalidJob> {
        let mut job = job::validate(job, &self.cfg.limits)?;
        if job.job_id.is_none() {
            job.job_id = Some(job::generate_job_id());
        }
        Ok(job)
    }

    /// Publishes a prepared job to `lane` with its id in the body and as `message_id`.
    async fn send_valid(&self, lane: Lane, job: KickRequest) -> Result<Sent, PublishError> {
        let job_id = job.job_id.clone().expect("prepare gave the job an id");
        let props = persistent_json(Some(&job_id), FieldTable::default());
        let pending = match &self.cfg.routing {
            Some(_) => {
                let key = Routing::routing_key(lane.as_str(), job.app_id);
                self.publisher
                    .send_routed(&self.cfg.names.jobs, &key, &job.to_body(), props)
                    .await?
            }
            None => {
                self.publisher
                    .send(self.cfg.names.queue(lane), &job.to_body(), props)
                    .await?
            }
        };
        Ok(Sent { job_id, pending })
    }
}
