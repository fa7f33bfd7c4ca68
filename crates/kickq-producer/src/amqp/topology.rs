//! The queue topology: names under a namespace, and declaring every queue with every argument set explicitly
//! (RabbitMQ 3.x and 4.x differ in their defaults, and arguments cannot change once a queue exists).
//!
//! ```text
//! {ns}.leader.lease  the leadership lease: one token, single active consumer (quorum)
//! {ns}.leader.record the active worker's one-message record for the next holder (quorum)
//! {ns}.dead.lease   the `kickq dlq` pass lock: one token, single active consumer (quorum)
//! {ns}.dead.lock.record  that pass's one-message record (when it started, who; quorum)
//!
//! producers ──> {ns}.requests ──(worker)──> API                     (the live lane)
//!                  │   ▲    └─ delivery limit exceeded ──> {ns}.dead
//!                  │   └──── TTL expiry ── {ns}.retry.<delay> <── worker (retries, halts)
//!                  └─ worker (validation, permanent, retries exhausted, expired) ──> {ns}.dead
//!
//! worker (KICKQ_EVENTS=on) ──> {ns}.events (topic exchange) ──> whoever is bound (`<outcome>.<app_id>`)
//!
//! sweeps, replays ──> {ns}.bulk ──(worker)──> API                    (the bulk lane)
//!                       │   ▲    └─ delivery limit exceeded ──> {ns}.dead
//!                       │   └──── TTL expiry ── {ns}.bulk.retry.<delay> <── worker
//!                       └─ worker (as above) ──> {ns}.dead
//! ```
//!
//! With shards (`shard = "eu"` in `[[apps]]`), each shard has the job and
//! delay queues and the lock above under `{ns}.{shard}.` (`kickq.eu.requests`,
//! `kickq.eu.bulk`, `kickq.eu.retry.1s`, `kickq.eu.leader.lease`); the dead letters,
//! their lock and the events exchange stay one per namespace. Producers then
//! publish to the topic exchange `{ns}.jobs` with routing key
//! `<lane>.<app_id>` (`<lane>.default` for a job naming no app), bound from
//! the config to each app's shard:
//!
//! ```text
//! producers ──> {ns}.jobs ── live.<app of eu> ──> {ns}.eu.requests
//!                  (topic) ── bulk.<app of eu> ──> {ns}.eu.bulk
//!                          ── live.<app of us> ──> {ns}.us.requests   ...
//! ```
//!
//! Two lanes, two queues: RabbitMQ 3.x quorum queues have no message
//! priority (4.x priorities are coarse and version-dependent), so live kicks
//! get ahead of a bulk sweep by living in a queue of their own. A retry goes
//! back to its own lane through that lane's delay queues.

use crate::shards::{Routing, ShardName};
use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::Channel;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Deliveries of one message before the broker dead-letters it as poison.
/// Above the redeliveries a crash loop or a long broker outage can cause
/// (each kill or lost channel adds one), and the same as RabbitMQ 4's default.
pub const DEFAULT_DELIVERY_LIMIT: u32 = 20;
/// The dead-letter queue's own limit: effectively none, so that `kickq dlq
/// list`, which returns what it reads, can never wear a letter out.
pub const DEAD_DELIVERY_LIMIT: u32 = 1_000_000;
/// Default retry delays, one delay queue each: attempt n waits the n-th delay
/// (the last repeats). About 9 minutes over 8 attempts.
pub const DEFAULT_RETRY_DELAYS: &[Duration] = &[
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(15),
    Duration::from_secs(30),
    Duration::from_secs(60),
    Duration::from_secs(120),
    Duration::from_secs(300),
];

/// Which of the two job queues a message travels in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Lane {
    /// `{ns}.requests`: kicks that must happen now (`kickq enqueue` of one
    /// job, [`crate::producer::Producer::enqueue`]); the default.
    #[default]
    Live,
    /// `{ns}.bulk`: sweeps and replays (`kickq enqueue --file`,
    /// [`crate::producer::Producer::enqueue_many`], `kickq dlq replay`),
    /// served with the budget live kicks leave free.
    Bulk,
}

impl Lane {
    /// Both lanes, live first.
    pub const ALL: [Lane; 2] = [Lane::Live, Lane::Bulk];

    /// The lane's name: `live` or `bulk` (`--lane`).
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Live => "live",
            Lane::Bulk => "bulk",
        }
    }
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `--lane` value that is neither `live` nor `bulk`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a lane: use live or bulk")]
pub struct UnknownLane(pub String);

impl FromStr for Lane {
    type Err = UnknownLane;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "live" => Ok(Lane::Live),
            "bulk" => Ok(Lane::Bulk),
            other => Err(UnknownLane(other.to_owned())),
        }
    }
}

/// Every queue name of one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The prefix of every queue name (`KICKQ_NAMESPACE`, `kickq` by default).
    pub namespace: String,
    /// The live lane: where producers publish jobs by default.
    pub requests: String,
    /// The bulk lane: sweeps and replays.
    pub bulk: String,
    /// Dead letters.
    pub dead: String,
    /// Delay queues of the live lane, shortest first, each with its delay;
    /// expired messages return to `requests`.
    pub retry: Vec<(Duration, String)>,
    /// Delay queues of the bulk lane (the same delays); expired messages
    /// return to `bulk`.
    pub bulk_retry: Vec<(Duration, String)>,
    /// The leadership lease: a quorum queue with single active consumer
    /// holding one token, which only the active worker receives (see
    /// `crate::leadership`).
    pub leader: String,
    /// The active worker's one-message record for its successor.
    pub leader_state: String,
    /// The dead-letter pass lock: a lease queue as `leader` is (quorum,
    /// single active consumer, one token), whose token only the running
    /// `kickq dlq` pass receives.
    pub dead_lease: String,
    /// That pass's one-message record (its start), for a second operator.
    pub dead_lock_state: String,
    /// The durable topic exchange of outcome events (declared only with
    /// `KICKQ_EVENTS=on`, or by `kickq events tail`).
    pub events: String,
    /// The shard these job queues and this lock belong to
    /// ([`crate::shards::DEFAULT_SHARD`]: the unsharded names).
    pub shard: String,
    /// The durable topic exchange producers publish jobs to once the config
    /// has shards: routing key `<lane>.<app_id>`.
    pub jobs: String,
}

impl Names {
    /// Names for a namespace and a set of retry delays. The delay is part of
    /// the name because a queue's TTL cannot change once declared.
    pub fn new(namespace: &str, retry_delays: &[Duration]) -> Self {
        Self {
            namespace: namespace.to_owned(),
            requests: format!("{namespace}.requests"),
            bulk: format!("{namespace}.bulk"),
            dead: format!("{namespace}.dead"),
            leader: format!("{namespace}.leader.lease"),
            leader_state: format!("{namespace}.leader.record"),
            dead_lease: format!("{namespace}.dead.lease"),
            dead_lock_state: format!("{namespace}.dead.lock.record"),
            events: format!("{namespace}.events"),
            shard: crate::shards::DEFAULT_SHARD.to_owned(),
            jobs: format!("{namespace}.jobs"),
            retry: retry_delays
                .iter()
                .map(|d| (*d, format!("{namespace}.retry.{}", delay_label(*d))))
                .collect(),
            bulk_retry: retry_delays
                .iter()
                .map(|d| (*d, format!("{namespace}.bulk.retry.{}", delay_label(*d))))
                .collect(),
        }
    }

    /// The names of `shard` in this namespace: its job and delay queues and
    /// its lock under `{ns}.{shard}.`; dead letters, their lock, events and
    /// the jobs exchange stay the namespace's. The default shard's names are
    /// the unsharded ones.
    pub fn for_shard(&self, shard: &ShardName) -> Names {
        let base = Names::new(&self.namespace, &self.retry.iter().map(|(d, _)| *d).collect::<Vec<_>>());
        if shard.is_default() {
            return base;
        }
        let sharded = Names::new(
            &format!("{}.{shard}", self.namespace),
            &base.retry.iter().map(|(d, _)| *d).collect::<Vec<_>>(),
        );
        Names {
            requests: sharded.requests,
            bulk: sharded.bulk,
            retry: sharded.retry,
            bulk_retry: sharded.bulk_retry,
            leader: sharded.leader,
            leader_state: sharded.leader_state,
            shard: shard.as_str().to_owned(),
            ..base
        }
    }

    /// The job queue of `lane`: `{ns}.requests` or `{ns}.bulk`.
    pub fn queue(&self, lane: Lane) -> &str {
        match lane {
            Lane::Live => &self.requests,
            Lane::Bulk => &self.bulk,
        }
    }

    /// The delay queues of `lane`, shortest first.
    pub fn retries(&self, lane: Lane) -> &[(Duration, String)] {
        match lane {
            Lane::Live => &self.retry,
            Lane::Bulk => &self.bulk_retry,
        }
    }

    /// The delay queue of `lane` for the attempt that just failed (1-based);
    /// the last delay repeats. Its messages return to [`Names::queue`] of the
    /// same lane.
    pub fn retry_queue(&self, lane: Lane, failed_attempt: u32) -> &(Duration, String) {
        let queues = self.retries(lane);
        let i = (failed_attempt.max(1) as usize - 1).min(queues.len() - 1);
        &queues[i]
    }

    /// [`Names::retry_queue`] of the live lane.
    pub fn retry_for(&self, failed_attempt: u32) -> &(Duration, String) {
        self.retry_queue(Lane::Live, failed_attempt)
    }

    /// Every durable queue name.
    pub fn all(&self) -> Vec<&str> {
        let mut v = vec![
            self.requests.as_str(),
            self.dead.as_str(),
            self.leader.as_str(),
            self.leader_state.as_str(),
        ];
        v.extend(self.retry.iter().map(|(_, n)| n.as_str()));
        v.push(self.dead_lease.as_str());
        v.push(self.dead_lock_state.as_str());
        v.push(self.bulk.as_str());
        v.extend(self.bulk_retry.iter().map(|(_, n)| n.as_str()));
        v
    }
}

fn delay_label(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

fn s(v: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(v.as_bytes().to_vec()))
}

/// Arguments of `{ns}.requests`, and the same of `{ns}.bulk` (both lanes
/// dead-letter to `{ns}.dead` and have one active consumer).
pub fn requests_args(names: &Names, delivery_limit: u32) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert("x-queue-type".into(), s("quorum"));
    t.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(delivery_limit.into()));
    t.insert("x-dead-letter-exchange".into(), s(""));
    t.insert("x-dead-letter-routing-key".into(), s(&names.dead));
    // At-least-once dead-lettering needs reject-publish overflow; without it
    // the broker may drop a poison message on its way to the dead queue.
    t.insert("x-dead-letter-strategy".into(), s("at-least-once"));
    t.insert("x-overflow".into(), s("reject-publish"));
    // Two workers must never double an AppId's rate.
    t.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    t
}

/// Arguments of `{ns}.dead`.
pub fn dead_args() -> FieldTable {
    let mut t = FieldTable::default();
    t.insert("x-queue-type".into(), s("quorum"));
    t.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(DEAD_DELIVERY_LIMIT.into()),
    );
    t.insert("x-overflow".into(), s("reject-publish"));
    t
}

/// Arguments of a delay queue of `lane`: nobody consumes it; messages expire
/// back into that lane's queue (`{ns}.requests` or `{ns}.bulk`). No delivery
/// limit, on purpose: nothing is ever delivered from it, so none (3.x) and
/// RabbitMQ 4's default of 20 are the same.
pub fn retry_args(names: &Names, lane: Lane, delay: Duration) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert("x-queue-type".into(), s("quorum"));
    t.insert("x-message-ttl".into(), AMQPValue::LongLongInt(delay.as_millis() as i64));
    t.insert("x-dead-letter-exchange".into(), s(""));
    t.insert("x-dead-letter-routing-key".into(), s(names.queue(lane)));
    t.insert("x-dead-letter-strategy".into(), s("at-least-once"));
    t.insert("x-overflow".into(), s("reject-publish"));
    t
}

#[doc(hidden)] // The worker's, not the producer API's: it may change in any release.
/// Arguments of `{ns}.leader.record` and `{ns}.dead.lock.record`: a quorum
/// queue that keeps only the newest record (a new one pushes the old out at
/// the head). Quorum, not classic: a durable classic queue is unusable while
/// its one home node is down (`NOT_FOUND - home node ... is down`), which
/// would stop every worker of a cluster that lost that node from starting a
/// session; a quorum queue goes on with a majority of its members. (Until
/// 0.1 these were the classic `{ns}.leader.state` and `{ns}.dead.lock.state`:
/// new names, because a queue's type cannot change once declared. A
/// successor that finds no record waits a full window, so an upgrade that
/// mixes old and new workers is safe.)
///
/// No delivery limit, on purpose: a record is read by taking it (`basic.get`
/// without ack; `kickq dlq` puts its copy back by publishing it again), never
/// handed back, so no read counts a delivery, and RabbitMQ 4's default of 20
/// never applies. (Arguments cannot change once a queue exists: setting one
/// now would refuse every deployment's existing record queue.)
pub fn leader_state_args() -> FieldTable {
    let mut t = FieldTable::default();
    t.insert("x-queue-type".into(), s("quorum"));
    t.insert("x-max-length".into(), AMQPValue::LongLongInt(1));
    t.insert("x-overflow".into(), s("drop-head"));
    t
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

#[doc(hidden)] // The worker's, not the producer API's: it may change in any release.
/// Deliveries of a lease token before the broker drops it: never reached,
/// since a renewal replaces a token delivered `REPLACE_AFTER` times (the
/// worker's leadership rules), and set on purpose (RabbitMQ 4 would apply
/// 20, and 3.x none).
pub const LEASE_DELIVERY_LIMIT: u32 = 1_000_000;

#[doc(hidden)] // The worker's, not the producer API's: it may change in any release.
/// Arguments of `{ns}.leader.lease`: a quorum queue (Raft-replicated: the
/// active consumer changes only as its leader decides) with single active
/// consumer. `x-consumer-disconnected-timeout` (RabbitMQ 4.3+; earlier
/// versions ignore it) makes the queue give up a consumer on a node it lost
/// at once rather than after 4.3's default of 60 s, so failover stays within
/// the cluster's failure detection.
pub fn lease_args() -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from(&b"quorum"[..])),
    );
    t.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    t.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(LEASE_DELIVERY_LIMIT.into()),
    );
    t.insert("x-consumer-disconnected-timeout".into(), AMQPValue::LongLongInt(0));
    t
}

/// Declares every queue of both lanes (idempotent: the same arguments
/// redeclare silently). Returns the number of messages ready in `{ns}.requests`.
pub async fn declare(channel: &Channel, names: &Names, delivery_limit: u32) -> Result<u32, lapin::Error> {
    channel
        .queue_declare(names.dead.as_str().into(), durable(), dead_args())
        .await?;
    channel
        .queue_declare(names.leader_state.as_str().into(), durable(), leader_state_args())
        .await?;
    channel
        .queue_declare(names.dead_lock_state.as_str().into(), durable(), leader_state_args())
        .await?;
    channel
        .queue_declare(names.dead_lease.as_str().into(), durable(), lease_args())
        .await?;
    for lane in Lane::ALL {
        for (delay, name) in names.retries(lane) {
            channel
                .queue_declare(name.as_str().into(), durable(), retry_args(names, lane, *delay))
                .await?;
        }
    }
    channel
        .queue_declare(
            names.bulk.as_str().into(),
            durable(),
            requests_args(names, delivery_limit),
        )
        .await?;
    let q = channel
        .queue_declare(
            names.requests.as_str().into(),
            durable(),
            requests_args(names, delivery_limit),
        )
        .await?;
    Ok(q.message_count())
}

/// Declares the events exchange: a durable topic exchange, so a consumer
/// binds `failed.#` or `*.<app_id>` (idempotent).
pub async fn declare_events(channel: &Channel, names: &Names) -> Result<(), lapin::Error> {
    channel
        .exchange_declare(
            names.events.as_str().into(),
            lapin::ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
}

/// Declares the queues of every shard of `routing`, the jobs exchange, and
/// its bindings: each app's `live.<app_id>` and `bulk.<app_id>` (and
/// `<lane>.default` for the default app) to its shard's lane queue, and
/// unbinds each key from every other shard's queue, so an app moved to
/// another shard is not delivered to both (idempotent). `names` is the
/// namespace's (any shard's).
pub async fn declare_routing(
    channel: &Channel,
    names: &Names,
    routing: &Routing,
    delivery_limit: u32,
) -> Result<(), lapin::Error> {
    channel
        .exchange_declare(
            names.jobs.as_str().into(),
            lapin::ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    for shard in routing.shards() {
        let shard_names = names.for_shard(&shard);
        declare(channel, &shard_names, delivery_limit).await?;
        for lane in Lane::ALL {
            let queue = shard_names.queue(lane);
            let mine = routing.keys_of(&shard, lane.as_str());
            for key in routing.all_keys(lane.as_str()) {
                if mine.contains(&key) {
                    channel
                        .queue_bind(
                            queue.into(),
                            names.jobs.as_str().into(),
                            key.as_str().into(),
                            QueueBindOptions::default(),
                            FieldTable::default(),
                        )
                        .await?;
                } else {
                    channel
                        .queue_unbind(
                            queue.into(),
                            names.jobs.as_str().into(),
                            key.as_str().into(),
                            FieldTable::default(),
                        )
                        .await?;
                }
            }
        }
    }
    Ok(())
}

#[doc(hidden)] // The worker's, not the producer API's: it may change in any release.
/// What a passive declare says of an existing queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueState {
    /// Messages ready.
    pub ready: u32,
    /// Consumers registered.
    pub consumers: u32,
}

/// AMQP's reply code for a queue that does not exist.
const NOT_FOUND: u16 = 404;

#[doc(hidden)] // The worker's, not the producer API's: it may change in any release.
/// Looks at `queue` without declaring it: a passive declare on a throwaway
/// channel (a missing queue closes the channel it was asked on). `Ok(None)`
/// when there is no such queue.
pub async fn inspect(conn: &lapin::Connection, queue: &str) -> Result<Option<QueueState>, lapin::Error> {
    let ch = conn.create_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    match ch.queue_declare(queue.into(), passive, FieldTable::default()).await {
        Ok(q) => {
            let _ = ch.close(200, "".into()).await;
            Ok(Some(QueueState {
                ready: q.message_count(),
                consumers: q.consumer_count(),
            }))
        }
        Err(e) if reply_code(&e) == Some(NOT_FOUND) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The AMQP reply code of a broker refusal, if the error is one.
pub fn reply_code(e: &lapin::Error) -> Option<u16> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(p) => Some(p.get_id()),
        _ => None,
    }
}

#[doc(hidden)] // The worker's, not the producer API's: it may change in any release.
/// Deletes every queue of the namespace, and its events exchange (the demo,
/// bench and tests clean up with this; deleting what does not exist is not
/// an error). Returns how many messages went with the queues.
pub async fn delete_all(channel: &Channel, names: &Names) -> Result<u32, lapin::Error> {
    let mut n = 0;
    for name in names.all() {
        n += channel.queue_delete(name.into(), QueueDeleteOptions::default()).await?;
    }
    channel
        .exchange_delete(names.events.as_str().into(), ExchangeDeleteOptions::default())
        .await?;
    channel
        .exchange_delete(names.jobs.as_str().into(), ExchangeDeleteOptions::default())
        .await?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_namespace() {
        let n = Names::new("kickq", DEFAULT_RETRY_DELAYS);
        assert_eq!(n.requests, "kickq.requests");
        assert_eq!(n.dead, "kickq.dead");
        assert_eq!(n.retry[0].1, "kickq.retry.1s");
        assert_eq!(
            Names::new("t", &[Duration::from_millis(250)]).retry[0].1,
            "t.retry.250ms"
        );
        assert_eq!(n.retry_for(1).0, Duration::from_secs(1));
        assert_eq!(n.retry_for(2).0, Duration::from_secs(5));
        assert_eq!(n.retry_for(99).0, Duration::from_secs(300));
        assert_eq!(n.all().len(), 21);
        assert_eq!(n.dead_lease, "kickq.dead.lease");
        assert_eq!(n.dead_lock_state, "kickq.dead.lock.record");
        assert_eq!(n.leader, "kickq.leader.lease");
        assert_eq!(n.leader_state, "kickq.leader.record");
        assert_eq!(n.events, "kickq.events");
        assert!(!n.all().contains(&"kickq.events"), "an exchange, not a queue");
    }

    #[test]
    fn shards_have_their_own_job_queues_and_lock_and_share_the_rest() {
        let n = Names::new("kickq", DEFAULT_RETRY_DELAYS);
        let eu = n.for_shard(&ShardName::parse("eu").unwrap());
        assert_eq!(eu.requests, "kickq.eu.requests");
        assert_eq!(eu.bulk, "kickq.eu.bulk");
        assert_eq!(eu.retry[0].1, "kickq.eu.retry.1s");
        assert_eq!(eu.bulk_retry[6].1, "kickq.eu.bulk.retry.300s");
        assert_eq!(eu.leader, "kickq.eu.leader.lease");
        assert_eq!(eu.leader_state, "kickq.eu.leader.record");
        assert_eq!(eu.shard, "eu");
        for (shared, of_eu) in [
            (&n.dead, &eu.dead),
            (&n.dead_lease, &eu.dead_lease),
            (&n.events, &eu.events),
            (&n.jobs, &eu.jobs),
            (&n.namespace, &eu.namespace),
        ] {
            assert_eq!(shared, of_eu);
        }
        assert_eq!(eu.jobs, "kickq.jobs");
        assert_eq!(
            n.for_shard(&ShardName::default()),
            n,
            "the default shard is the unsharded names"
        );
        assert_eq!(eu.for_shard(&ShardName::default()), n, "from any shard's names");
        let back = retry_args(&eu, Lane::Bulk, Duration::from_secs(1));
        assert_eq!(back.inner()["x-dead-letter-routing-key"], s("kickq.eu.bulk"));
        assert_eq!(
            requests_args(&eu, 20).inner()["x-dead-letter-routing-key"],
            s("kickq.dead")
        );
    }

    #[test]
    fn each_lane_has_its_queue_and_its_own_delay_queues() {
        let n = Names::new("kickq", DEFAULT_RETRY_DELAYS);
        // (lane, failed attempt, job queue, delay queue, delay)
        let cases: &[(Lane, u32, &str, &str, u64)] = &[
            (Lane::Live, 0, "kickq.requests", "kickq.retry.1s", 1),
            (Lane::Live, 1, "kickq.requests", "kickq.retry.1s", 1),
            (Lane::Live, 3, "kickq.requests", "kickq.retry.15s", 15),
            (Lane::Live, 99, "kickq.requests", "kickq.retry.300s", 300),
            (Lane::Bulk, 0, "kickq.bulk", "kickq.bulk.retry.1s", 1),
            (Lane::Bulk, 2, "kickq.bulk", "kickq.bulk.retry.5s", 5),
            (Lane::Bulk, 7, "kickq.bulk", "kickq.bulk.retry.300s", 300),
            (Lane::Bulk, 99, "kickq.bulk", "kickq.bulk.retry.300s", 300),
        ];
        for &(lane, attempt, queue, retry, secs) in cases {
            assert_eq!(n.queue(lane), queue, "{lane}");
            let (delay, name) = n.retry_queue(lane, attempt);
            assert_eq!(
                (name.as_str(), *delay),
                (retry, Duration::from_secs(secs)),
                "{lane} {attempt}"
            );
            let back = retry_args(&n, lane, *delay);
            assert_eq!(
                back.inner()["x-dead-letter-routing-key"],
                s(queue),
                "{retry} returns to its lane"
            );
        }
        assert_eq!(n.retry_for(3), n.retry_queue(Lane::Live, 3));
        let all = n.all();
        for name in ["kickq.bulk", "kickq.bulk.retry.1s", "kickq.bulk.retry.300s"] {
            assert!(all.contains(&name), "{name}");
        }
        let mut distinct = all.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), all.len(), "no queue listed twice");
    }

    #[test]
    fn lanes_parse_by_table() {
        let cases: &[(&str, Result<Lane, UnknownLane>)] = &[
            ("live", Ok(Lane::Live)),
            ("bulk", Ok(Lane::Bulk)),
            ("Live", Err(UnknownLane("Live".into()))),
            (" bulk", Err(UnknownLane(" bulk".into()))),
            ("requests", Err(UnknownLane("requests".into()))),
            ("", Err(UnknownLane("".into()))),
        ];
        for (raw, want) in cases {
            assert_eq!(&raw.parse::<Lane>(), want, "{raw:?}");
        }
        for lane in Lane::ALL {
            assert_eq!(lane.to_string().parse::<Lane>(), Ok(lane));
        }
        assert_eq!(Lane::default(), Lane::Live);
        assert_eq!(
            "x".parse::<Lane>().unwrap_err().to_string(),
            "\"x\" is not a lane: use live or bulk"
        );
    }

    #[test]
    fn every_argument_is_explicit() {
        let n = Names::new("kickq", DEFAULT_RETRY_DELAYS);
        let r = requests_args(&n, 20);
        for key in [
            "x-queue-type",
            "x-delivery-limit",
            "x-dead-letter-exchange",
            "x-dead-letter-routing-key",
            "x-dead-letter-strategy",
            "x-overflow",
            "x-single-active-consumer",
        ] {
            assert!(r.inner().contains_key(key), "{key}");
        }
        assert_eq!(r.inner()["x-dead-letter-routing-key"], s("kickq.dead"));
        assert_eq!(r.inner()["x-single-active-consumer"], AMQPValue::Boolean(true));
        let d = retry_args(&n, Lane::Live, Duration::from_secs(5));
        assert_eq!(d.inner()["x-message-ttl"], AMQPValue::LongLongInt(5000));
        assert_eq!(d.inner()["x-dead-letter-routing-key"], s("kickq.requests"));
        assert!(dead_args().inner().contains_key("x-delivery-limit"));
    }
}
