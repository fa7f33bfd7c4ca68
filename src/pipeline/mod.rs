//! `kickq run`'s pipeline, one file per stage in flow order, and this file, the composition root of one
//! broker session: its connections, the leadership lease, the bounded channels, the stage tasks, their
//! supervision and a bounded stop.
//!
//! ```text
//! lease ─> intake ──JobIn──> coalescer ──Dispatch──> dispatch ──Outcome──> router ──ack──> broker
//!           └────────────── Received / Unusable ──────────────────────────┘
//! ```
//!
//! The files, in the order data flows: `lease.rs` (take the leadership lease,
//! hold the first call, renew the lease, release it last), `intake.rs`,
//! `coalescer.rs`, `dispatch.rs`, `router.rs`; `stage.rs` holds the messages
//! between stages, and `monitor.rs` the session's side tasks (queue watchdog,
//! progress line). Only this file and `worker.rs` see every stage.
//!
//! A session is three connections: one that consumes (and acks), one that
//! publishes (retries, dead letters, the leader record, a fresh lease token
//! now and then), and one for the leadership lease, whose renewals must
//! never queue behind job deliveries. RabbitMQ blocks every connection that publishes during a
//! memory or disk alarm; kept apart, acks of kicked users go on through an
//! alarm. Everything consumed in a session belongs to it: when the broker goes
//! away the session is dropped whole (its unacked deliveries return to the
//! queue) and a new one starts.
//!
//! Shutdown: intake stops, the coalescer sends what tokens allow until the
//! drain deadline, the router acks what is done; then the session writes its
//! release record and lets the lease go, last, so a standby never calls while
//! this worker's calls are in flight. A lease that is not renewed in time
//! ends the session like a lost connection: no call starts after it, and the
//! deliveries go back to the queue.

pub(crate) mod coalescer;
pub(crate) mod dispatch;
pub(crate) mod intake;
pub(crate) mod lease;
pub(crate) mod monitor;
pub(crate) mod router;
pub(crate) mod slots;
pub(crate) mod stage;

use crate::amqp::connect::{connect, describe, explain};
use crate::amqp::publish::Publisher;
use crate::amqp::topology::Names;
use crate::amqp::topology::{self, Lane};
use crate::config::apps::Apps;
use crate::config::shards::Routing;
use crate::health::{Health, ShardState};
use crate::job::Limits;
use crate::ledger::Ledger;
use crate::ledger::LedgerError;
use crate::outcome::plan::Budget;
use crate::ratelimit::Gate;
use crate::secret::Secret;
use coalescer::CoalescerConfig;
use dispatch::KickApi;
use intake::{IntakeConfig, IntakeEnd};
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::Connection;
use router::{RouterConfig, RouterEnd, SessionTally};
use stage::LedgerWrites;
use stage::CLOSE_STEP;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Capacity of the stage channels: deep enough to smooth bursts, small enough
/// that backpressure reaches the broker within a fraction of a second.
const STAGE_CHANNEL: usize = 1024;
/// How one session ended, for the run loop to act on.
pub(crate) enum SessionEnd {
    /// Stopped on request; the run ends.
    Shutdown,
    /// The session never opened: the broker is away or refused us.
    NotOpened(crate::amqp::connect::ConnectError),
    /// The broker connection or a stage failed; reconnect.
    Lost(String),
    /// The ledger failed in a way waiting will not fix; the run ends with it.
    Fatal(LedgerError),
}

/// Time past the drain deadline that a graceful stop may take: the last
/// answers, the last ledger write and acks, the release record.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// What one shard's sessions need of the worker's settings: the broker, the
/// shard's names and apps, and each stage's settings. The worker composes it
/// (`WorkerConfig::session`); the front ends' settings (intake, console,
/// metrics) are not part of it.
#[derive(Debug, Clone)]
pub(crate) struct SessionConfig {
    /// Broker URL (a node list); a secret.
    pub(crate) amqp_url: Secret,
    /// The connection name of this shard's worker (the lease's tag base).
    pub(crate) connection_name: String,
    /// The apps this shard serves.
    pub(crate) apps: Apps,
    /// This shard's queue names.
    pub(crate) names: Names,
    /// Unacked deliveries per consumer of the live lane.
    pub(crate) prefetch: u16,
    /// Unacked deliveries per consumer of the bulk lane (as sized for the apps' rate).
    pub(crate) bulk_prefetch: u16,
    /// Deliveries before the broker dead-letters a message as poison.
    pub(crate) delivery_limit: u32,
    /// What a job may hold.
    pub(crate) limits: Limits,
    /// The coalescer's settings.
    pub(crate) coalescer: CoalescerConfig,
    /// The retry budget of a user.
    pub(crate) budget: Budget,
    /// Calls in flight per app.
    pub(crate) max_in_flight: usize,
    /// Probe interval of a halted app.
    pub(crate) probe_interval: Duration,
    /// How often a halt's ERROR line repeats.
    pub(crate) halt_log_interval: Duration,
    /// Whether outcome events are published.
    pub(crate) events: bool,
}

/// What every session of one run shares.
pub(crate) struct Shared<A> {
    /// The validated settings of this shard's sessions.
    pub(crate) cfg: SessionConfig,
    /// The per-AppId budgets; they outlive sessions.
    pub(crate) gate: Gate,
    /// The API client (or the bench's and tests' stand-ins).
    pub(crate) api: Arc<A>,
    /// The audit ledger, if on.
    pub(crate) ledger: Option<Ledger>,
    /// What the worker reports (read by /readyz, /status, the progress line).
    pub(crate) health: Arc<Health>,
    /// This shard's part of it (role, deliveries in flight).
    pub(crate) shard: Arc<ShardState>,
    /// The shard these sessions serve.
    pub(crate) here: crate::config::shards::ShardName,
    /// Which shard serves each app of the deployment: where a job that this
    /// shard does not serve is forwarded.
    pub(crate) routing: Arc<Routing>,
    /// Process-unique delivery ids.
    pub(crate) ids: Arc<AtomicU64>,
    /// Fires once, on SIGTERM or SIGINT (or a test's stop).
    pub(crate) shutdown: CancellationToken,
}

impl<A> Shared<A> {
    /// The AppIds this shard serves: its takeover hold and its release
    /// record are theirs only.
    pub(crate) fn app_ids(&self) -> Vec<u32> {
        self.cfg.apps.iter().map(|a| a.app_id()).collect()
    }

    /// What the lease steps need of this shard (see [`lease::Seat`]).
    fn seat(&self) -> lease::Seat<'_> {
        lease::Seat {
            names: &self.cfg.names,
            connection_name: &self.cfg.connection_name,
            shard: &self.shard,
            gate: &self.gate,
            apps: self.app_ids(),
            shutdown: &self.shutdown,
        }
    }
}

/// Closes a connection, bounded by [`CLOSE_STEP`]. Unacked deliveries of its
/// channels return to the queue.
async fn close(conn: &Connection) {
    let _ = tokio::time::timeout(CLOSE_STEP, conn.close(200, "bye".into())).await;
}

pub(crate) async fn session<A: KickApi>(shared: &Shared<A>, n: u64) -> (SessionEnd, SessionTally) {
    let cfg = &shared.cfg;
    let conn = match connect(&cfg.amqp_url, &cfg.connection_name).await {
        Ok(c) => c,
        Err(e) => {
            return (
                SessionEnd::NotOpened(explain(&cfg.amqp_url, &e)),
                SessionTally::default(),
            )
        }
    };
    let publish_conn = match connect(&cfg.amqp_url, &format!("{}-publish", cfg.connection_name)).await {
        Ok(c) => c,
        Err(e) => {
            close(&conn).await;
            return (
                SessionEnd::NotOpened(explain(&cfg.amqp_url, &e)),
                SessionTally::default(),
            );
        }
    };
    // The lease has a connection of its own: its renewals never wait behind
    // a prefetch window of job deliveries on the consuming connection (a
    // backlog of thousands fills it at the start of a session).
    // It carries the worker's namespace, shard and name, so the console tells
    // a shard's workers, and which of them holds the lease, from the
    // management API's connection list.
    let properties = [
        (crate::amqp::connect::NAMESPACE_PROPERTY, cfg.names.namespace.as_str()),
        (crate::amqp::connect::SHARD_PROPERTY, shared.here.as_str()),
        (crate::amqp::connect::WORKER_PROPERTY, cfg.connection_name.as_str()),
    ];
    let lease_name = format!("{}-lease", cfg.connection_name);
    let lease_conn = match crate::amqp::connect::connect_as(&cfg.amqp_url, &lease_name, &properties).await {
        Ok(c) => c,
        Err(e) => {
            close(&conn).await;
            close(&publish_conn).await;
            return (
                SessionEnd::NotOpened(explain(&cfg.amqp_url, &e)),
                SessionTally::default(),
            );
        }
    };
    let conns = Conns {
        consume: &conn,
        publish: &publish_conn,
        lease: &lease_conn,
    };
    let (end, tally) = active_session(shared, n, conns).await;
    close(&conn).await;
    close(&publish_conn).await;
    close(&lease_conn).await;
    (end, tally)
}

/// The three connections of a session: consuming (and acking), publishing,
/// and the leadership lease.
#[derive(Clone, Copy)]
struct Conns<'a> {
    consume: &'a Connection,
    publish: &'a Connection,
    lease: &'a Connection,
}

async fn active_session<A: KickApi>(shared: &Shared<A>, n: u64, conns: Conns<'_>) -> (SessionEnd, SessionTally) {
    let Conns {
        consume: conn,
        publish: publish_conn,
        lease: lease_conn,
    } = conns;
    let cfg = &shared.cfg;
    let health = &shared.health;
    let lost = |why: String| (SessionEnd::Lost(why), SessionTally::default());
    let declared = async {
        let publisher = Publisher::open(publish_conn).await?;
        if shared.routing.is_sharded() {
            // Every shard's queues, the jobs exchange and its bindings: a
            // producer's job routes as soon as any worker has started.
            topology::declare_routing(publisher.channel(), &cfg.names, &shared.routing, cfg.delivery_limit).await?;
        } else {
            topology::declare(publisher.channel(), &cfg.names, cfg.delivery_limit).await?;
        }
        if cfg.events {
            topology::declare_events(publisher.channel(), &cfg.names).await?;
        }
        Ok::<_, lapin::Error>(publisher)
    };
    let publisher = match declared.await {
        Ok(p) => p,
        Err(e) => return lost(format!("setup: {}", describe(&e))),
    };
    shared.shard.set_connected(true);
    let (lease, hold_at, until) = match lease::take(&shared.seat(), lease_conn, &publisher).await {
        lease::Leadership::Taken { lease, hold_at, until } => (lease, hold_at, until),
        lease::Leadership::Shutdown => return (SessionEnd::Shutdown, SessionTally::default()),
        lease::Leadership::Lost(why) => return lost(why),
    };

    // One channel per lane, each with its own prefetch: a full bulk window
    // never stands in the way of a live delivery. Both are consumed by the
    // session that holds the lease, so the two lanes are always served by
    // the same process, with the one budget.
    let bulk_prefetch = cfg.bulk_prefetch;
    let consume = |lane: Lane, prefetch: u16| async move {
        let channel = conn.create_channel().await?;
        // Quorum queues refuse global QoS: the prefetch is per consumer.
        channel.basic_qos(prefetch, BasicQosOptions { global: false }).await?;
        let consumer = channel
            .basic_consume(
                cfg.names.queue(lane).into(),
                format!("{}-{lane}-{n}", cfg.connection_name).into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok::<_, lapin::Error>((channel, consumer))
    };
    let setup = async {
        let live = consume(Lane::Live, cfg.prefetch).await?;
        let bulk = consume(Lane::Bulk, bulk_prefetch).await?;
        let watch_channel = conn.create_channel().await?;
        Ok::<_, lapin::Error>((live, bulk, watch_channel))
    };
    let ((channel, consumer), (bulk_channel, bulk_consumer), watch_channel) = match setup.await {
        Ok(v) => v,
        Err(e) => return lost(format!("setup: {}", describe(&e))),
    };
    shared.shard.reset_in_flight();
    tracing::info!(
        session = n,
        shard = %cfg.names.shard,
        live = %cfg.names.requests,
        live_prefetch = cfg.prefetch,
        bulk = %cfg.names.bulk,
        bulk_prefetch,
        "consuming both lanes, live first"
    );

    let (to_coalescer, coalescer_rx) = mpsc::channel(STAGE_CHANNEL);
    let (bulk_to_coalescer, bulk_rx) = mpsc::channel(STAGE_CHANNEL);
    let (to_dispatcher, dispatcher_rx) = mpsc::channel(STAGE_CHANNEL);
    let (to_router, router_rx) = mpsc::channel(STAGE_CHANNEL);
    let stop_intake = shared.shutdown.child_token();
    let abort = CancellationToken::new();
    let slots = slots::Slots::new(cfg.max_in_flight);
    let apps = Arc::new(cfg.apps.clone());
    let intake_cfg = |lane| IntakeConfig {
        apps: apps.clone(),
        limits: cfg.limits,
        lane,
        routing: shared.routing.clone(),
        shard: shared.shard.clone(),
        here: shared.here.clone(),
    };
    let (ledger_writes, ledger_state) = watch::channel(LedgerWrites::Flowing);
    let lane_intake = |lane, channel: &lapin::Channel, consumer, to_coalescer| intake::Context {
        channel: channel.clone(),
        consumer,
        cfg: intake_cfg(lane),
        ledger: shared.ledger.clone(),
        to_coalescer,
        to_router: to_router.clone(),
        ids: shared.ids.clone(),
        shard: shared.shard.clone(),
        stop: stop_intake.clone(),
    };
    let mut intake = tokio::spawn(intake::run_lanes(vec![
        lane_intake(Lane::Live, &channel, consumer, to_coalescer),
        lane_intake(Lane::Bulk, &bulk_channel, bulk_consumer, bulk_to_coalescer),
    ]));
    tokio::spawn(coalescer::run(coalescer::Context {
        live: coalescer_rx,
        bulk: bulk_rx,
        output: to_dispatcher,
        gate: shared.gate.clone(),
        slots,
        cfg: cfg.coalescer,
        ledger: ledger_state,
        health: health.clone(),
        abort: abort.clone(),
    }));
    tokio::spawn(dispatch::run(
        dispatcher_rx,
        to_router,
        shared.api.clone(),
        shared.gate.clone(),
        shared.health.clone(),
        cfg.halt_log_interval,
        abort.clone(),
    ));
    let router_cfg = RouterConfig {
        names: cfg.names.clone(),
        budget: cfg.budget,
        ledger_batch_rows: router::DEFAULT_LEDGER_BATCH_ROWS,
        ledger_linger: router::DEFAULT_LEDGER_LINGER,
        defer_delay: cfg.probe_interval,
        events: cfg.events,
        default_app: cfg.apps.default_app(),
    };
    let mut router = tokio::spawn(router::run(router::Context {
        input: router_rx,
        publisher: publisher.clone(),
        ledger: shared.ledger.clone(),
        ledger_writes,
        health: health.clone(),
        shard: shared.shard.clone(),
        cfg: router_cfg,
        abort: abort.clone(),
    }));
    let stop_keeper = CancellationToken::new();
    let mut keeper = tokio::spawn(lease::keep(
        lease,
        publisher.clone(),
        shared.gate.clone(),
        shared.app_ids(),
        until,
        stop_keeper.clone(),
    ));
    // The active worker's record, refreshed: a release record that landed
    // late (its writer's lease connection dropped mid-write) is overwritten
    // within a refresh, so it never speaks for this holder.
    tokio::spawn(lease::refresh_record(
        publisher.clone(),
        cfg.names.clone(),
        stop_keeper.clone(),
    ));
    let mut watchdog = tokio::spawn(monitor::watch_queue(
        watch_channel,
        monitor::Watched {
            live: cfg.names.requests.clone(),
            bulk: cfg.names.bulk.clone(),
            dead: cfg.names.dead.clone(),
        },
        shared.shard.clone(),
    ));
    let cut = |abort: &CancellationToken, intake: &tokio::task::JoinHandle<IntakeEnd>| {
        abort.cancel();
        intake.abort();
    };
    let end = tokio::select! {
        lost = &mut watchdog => Some(lost.unwrap_or_else(|e| format!("watchdog task failed: {e}"))),
        kept = &mut keeper => Some(match kept {
            Ok(lease::KeepEnd::Lost(why)) => why,
            Ok(lease::KeepEnd::Stopped { .. }) => "the lease keeper stopped".to_owned(),
            Err(e) => format!("lease task failed: {e}"),
        }),
        ended = &mut intake => match ended {
            Ok(IntakeEnd::Stopped) => None,
            Ok(IntakeEnd::Cancelled) => Some("the broker cancelled the consumer (queue deleted or node down)".to_owned()),
            Ok(IntakeEnd::Broker(e)) => Some(format!("consumer: {}", describe(&e))),
            Ok(IntakeEnd::DownstreamClosed) => Some("a pipeline stage stopped".to_owned()),
            Ok(IntakeEnd::Ledger(e)) => {
                cut(&abort, &intake);
                watchdog.abort();
                stop_keeper.cancel();
                return (SessionEnd::Fatal(e), SessionTally::default());
            }
            Err(e) => Some(format!("intake task failed: {e}")),
        },
        ended = &mut router => {
            cut(&abort, &intake);
            watchdog.abort();
            stop_keeper.cancel();
            let (end, tally) = match ended {
                Ok((RouterEnd::Ledger(e), tally)) => (SessionEnd::Fatal(e), tally),
                // At shutdown this is the normal end; its tally counts either way.
                Ok((_, tally)) if shared.shutdown.is_cancelled() => (SessionEnd::Shutdown, tally),
                Ok((RouterEnd::Broker(e), tally)) => (SessionEnd::Lost(format!("publish: {e}")), tally),
                Ok((other, tally)) => (SessionEnd::Lost(format!("router stopped: {other:?}")), tally),
                Err(e) => (SessionEnd::Lost(format!("router task failed: {e}")), SessionTally::default()),
            };
            return (end, tally);
        }
        _ = shared.shutdown.cancelled() => None,
    };
    watchdog.abort();
    let (session_end, tally) = match end {
        None => {
            // Graceful: intake stops; the coalescer sends what tokens allow
            // until the drain deadline; the dispatcher finishes its calls; the
            // router acks. All of it within the deadline plus the grace.
            let deadline = Instant::now() + cfg.coalescer.drain_deadline + SHUTDOWN_GRACE;
            // `drained`: every call returned and every delivery was settled.
            let (drained, tally) = match tokio::time::timeout_at(deadline, &mut router).await {
                Ok(Ok((RouterEnd::Drained, tally))) => (true, tally),
                Ok(Ok((_, tally))) => {
                    tracing::warn!("shutdown: the router stopped early; the rest returns to the queue");
                    cut(&abort, &intake);
                    (false, tally)
                }
                Ok(Err(_)) => (false, SessionTally::default()),
                Err(_) => {
                    tracing::warn!(
                        deadline_ms = (cfg.coalescer.drain_deadline + SHUTDOWN_GRACE).as_millis() as u64,
                        "shutdown drain overran its deadline; what was not acked returns to the queue"
                    );
                    cut(&abort, &intake);
                    let tally = match tokio::time::timeout(CLOSE_STEP, &mut router).await {
                        Ok(Ok((_, tally))) => tally,
                        _ => SessionTally::default(),
                    };
                    (false, tally)
                }
            };
            stop_keeper.cancel();
            let kept = tokio::time::timeout(CLOSE_STEP, &mut keeper).await;
            if let (true, Ok(Ok(lease::KeepEnd::Stopped { lease, until }))) = (drained, kept) {
                if lease_conn.status().connected() {
                    // Every call has returned and the lease is still ours:
                    // say when our window frees, then let the token go,
                    // last. (With the connection gone, the token went with
                    // it and a successor may hold it already: no release
                    // record then, so it holds its full hold.)
                    lease::release(&shared.seat(), lease, until, &publisher, hold_at).await;
                }
            }
            (SessionEnd::Shutdown, tally)
        }
        Some(why) => {
            cut(&abort, &intake);
            stop_keeper.cancel();
            // The token goes back now, not after the router's wait: no
            // release record is written, so the successor holds its full
            // hold whatever this session's calls did.
            close(lease_conn).await;
            let tally = match tokio::time::timeout(Duration::from_secs(5), &mut router).await {
                Ok(Ok((_, tally))) => tally,
                _ => SessionTally::default(),
            };
            (SessionEnd::Lost(why), tally)
        }
    };
    // The consume channel is not closed on its own: RabbitMQ 3.10 can drop
    // acks still queued on a channel that closes (rabbitmq-server#10327),
    // and the bench saw those messages come back. Closing the connection
    // (the caller does, after this) lets the broker take every ack first.
    let _ = tokio::time::timeout(CLOSE_STEP, publisher.channel().close(200, "bye".into())).await;
    drop(channel);
    drop(bulk_channel);
    (session_end, tally)
}
