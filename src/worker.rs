//! The composition root of `kickq run`: builds the stages and the bounded channels between them, supervises one
//! broker session at a time, reconnects with backoff, and owns shutdown.
//!
//! ```text
//! lock ─> intake ──JobIn──> coalescer ──Dispatch──> dispatcher ──Outcome──> router ──ack──> broker
//!           └────────────── Received / Unusable ─────────────────────────────┘
//! ```
//!
//! A session is two connections: one that holds the leadership lock and
//! consumes (and acks), and one that publishes (retries, dead letters, the
//! leader record). RabbitMQ blocks every connection that publishes during a
//! memory or disk alarm; kept apart, acks of kicked users go on through an
//! alarm. A session first takes the lock (see `leadership`): until then it is
//! a standby and holds no deliveries. Everything consumed in a session
//! belongs to it: when the broker goes away the session is dropped whole (its
//! unacked deliveries return to the queue) and a new one starts. The gate,
//! the API client and the ledger outlive sessions, so the rate limit holds
//! across a reconnect.
//!
//! Shutdown: intake stops, the coalescer sends what tokens allow until the
//! drain deadline, the router acks what is done; then the worker writes its
//! release record and lets the lock go, last, so a standby never calls while
//! this worker's calls are in flight. The whole stop is bounded by the drain
//! deadline plus [`SHUTDOWN_GRACE`], whatever PostgreSQL or the API do: past
//! it the session is cut, and what was not acked returns to the queue.

use crate::amqp::connect::{connect, describe, explain};
use crate::amqp::intake::{self, IntakeConfig, IntakeEnd};
use crate::amqp::lock::{self, Lock};
use crate::amqp::publish::{PublishError, Publisher};
use crate::amqp::topology::{self, Names};
use crate::coalesce::driver::{self, DriverConfig};
use crate::config::Credentials;
use crate::dispatch::{self, KickApi};
use crate::health::Health;
use crate::job::Limits;
use crate::leadership::{self, Record};
use crate::ledger::{Ledger, LedgerError};
use crate::outcome::plan::Budget;
use crate::outcome::{self, RouterConfig, RouterEnd, Tally};
use crate::ratelimit::{Gate, WINDOW};
use crate::secret::Secret;
use crate::zego::client::{ClientConfig, ZegoClient};
use backon::{BackoffBuilder, ExponentialBuilder};
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::Connection;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Default unacked messages the broker may push to this worker. Coalescing
/// can only fold users it can see: on a shuffled sweep over 1,000 rooms a
/// window of 20,000 one-user messages gives calls within 1% of the minimum,
/// where 10,000 gives 10% more calls. Memory is about prefetch x message size.
pub const DEFAULT_PREFETCH: u16 = 20_000;
/// Capacity of the stage channels: deep enough to smooth bursts, small enough
/// that backpressure reaches the broker within a fraction of a second.
const STAGE_CHANNEL: usize = 1024;
/// Reconnect backoff: first delay, and the cap. Jittered (full jitter on top
/// of the exponential step), so a fleet that lost the same broker does not
/// come back in lock-step.
const RECONNECT_FIRST: Duration = Duration::from_millis(200);
const RECONNECT_MAX: Duration = Duration::from_secs(30);
/// A session that lived this long resets the backoff.
const HEALTHY_SESSION: Duration = Duration::from_secs(30);
/// How often the session checks that its queue still exists, still has
/// consumers, and is not holding ready messages while we hold none. The
/// broker should cancel our consumer when the queue is deleted, but RabbitMQ
/// 3.10 leaves a consumer registered and starved when a quorum queue is
/// deleted and at once re-declared; this check turns that silence into a
/// reconnect. Only the active worker runs it: a standby holds no consumer.
const WATCHDOG_INTERVAL: Duration = Duration::from_secs(5);
/// How often the worker logs its progress line while there is work: often
/// enough to follow a sweep, rare enough that a day's log stays readable.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(10);
/// Time past the drain deadline that a graceful stop may take: the last
/// answers, the last ledger write and acks, the release record.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Longest wait for each closing step (release record, lock, connections),
/// so an unresponsive broker cannot hold the exit.
const CLOSE_STEP: Duration = Duration::from_secs(1);
/// What all closing steps together may add to the drain deadline and the
/// grace before the stop is cut short (see [`stop_bound`]).
pub const CLOSE_BUDGET: Duration = Duration::from_secs(3);

/// Everything `kickq run` needs, validated.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Broker URL (holds the password, hence a secret).
    pub amqp_url: Secret,
    /// Connection name shown by the broker.
    pub connection_name: String,
    /// AppId and its secret.
    pub credentials: Credentials,
    /// API base URL.
    pub api_url: String,
    /// Calls per second per AppId.
    pub rate: u32,
    /// Queue names.
    pub names: Names,
    /// Unacked messages the broker may push.
    pub prefetch: u16,
    /// Deliveries before the broker dead-letters a message as poison.
    pub delivery_limit: u32,
    /// Validation limits.
    pub limits: Limits,
    /// Coalescer timings.
    pub driver: DriverConfig,
    /// Retry budget.
    pub budget: Budget,
    /// Most calls in flight.
    pub max_in_flight: usize,
    /// Interval between probe calls while halted.
    pub probe_interval: Duration,
    /// Interval between repeats of the halt log line.
    pub halt_log_interval: Duration,
    /// HTTP connect timeout.
    pub connect_timeout: Duration,
    /// HTTP total timeout per call.
    pub http_timeout: Duration,
    /// PostgreSQL URL; `None` runs without a ledger.
    pub database_url: Option<Secret>,
    /// Metrics and health server address; `None` turns it off.
    pub metrics_addr: Option<SocketAddr>,
}

/// A failure that stops the worker (the broker being away is not one: that
/// is retried for ever, loudly).
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The API client could not be built (e.g. a bad ZEGO_API_URL).
    #[error("{0}")]
    Client(String),
    /// The metrics server could not bind.
    #[error("KICKQ_METRICS_ADDR: cannot listen on {addr}: {source}")]
    Metrics {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The ledger failed for a reason that waiting will not fix (a bad
    /// DATABASE_URL, authentication, a missing table or permission, a
    /// constraint): the worker stops rather than hold every ack for ever.
    #[error("audit ledger: {0} (check DATABASE_URL, or run `kickq migrate`)")]
    Ledger(LedgerError),
}

/// What a run did, summed over its sessions.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RunSummary {
    /// Router tallies.
    pub tally: Tally,
    /// Sessions started after the first.
    pub reconnects: u64,
}

enum SessionEnd {
    Shutdown,
    /// The session never opened: the broker is away or refused us.
    NotOpened(crate::amqp::connect::ConnectError),
    Lost(String),
    Fatal(WorkerError),
}

/// What every session of one run shares.
struct Shared<A> {
    cfg: WorkerConfig,
    /// The per-AppId budgets; they outlive sessions.
    gate: Gate,
    api: Arc<A>,
    ledger: Option<Ledger>,
    health: Arc<Health>,
    /// Process-unique delivery ids.
    ids: Arc<AtomicU64>,
    shutdown: CancellationToken,
}

/// Runs the worker until `shutdown` fires; then drains and returns.
/// `on_ready` receives the metrics server's bound address (tests bind port 0).
pub async fn run(
    cfg: WorkerConfig,
    shutdown: CancellationToken,
    on_ready: Option<tokio::sync::oneshot::Sender<Option<SocketAddr>>>,
) -> Result<RunSummary, WorkerError> {
    let client = ZegoClient::new(ClientConfig {
        base_url: cfg.api_url.clone(),
        app_id: cfg.credentials.app_id,
        secret: cfg.credentials.secret.clone(),
        connect_timeout: cfg.connect_timeout,
        total_timeout: cfg.http_timeout,
    })
    .map_err(|e| WorkerError::Client(e.to_string()))?;
    run_with_api(cfg, Arc::new(client), shutdown, on_ready).await
}

fn reconnect_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(RECONNECT_FIRST)
        .with_max_delay(RECONNECT_MAX)
        .with_jitter()
        .without_max_times()
        .build()
}

/// [`run`] with any [`KickApi`] (the bench's baseline and tests use this).
pub async fn run_with_api<A: KickApi>(
    cfg: WorkerConfig,
    api: Arc<A>,
    shutdown: CancellationToken,
    on_ready: Option<tokio::sync::oneshot::Sender<Option<SocketAddr>>>,
) -> Result<RunSummary, WorkerError> {
    let gate = Gate::new(cfg.rate, cfg.probe_interval);
    let health = Arc::new(Health::new(gate.clone(), cfg.database_url.is_some()));
    let server_stop = CancellationToken::new();
    let mut bound = None;
    if let Some(addr) = cfg.metrics_addr {
        let handle = crate::metrics::install();
        let stop = server_stop.clone();
        let (local, serve) = crate::health::bind(addr, health.clone(), handle, async move { stop.cancelled().await })
            .await
            .map_err(|source| WorkerError::Metrics { addr, source })?;
        tracing::info!(addr = %local, "metrics and health on /metrics, /healthz, /readyz");
        bound = Some(local);
        tokio::spawn(serve);
    }
    if let Some(tx) = on_ready {
        let _ = tx.send(bound);
    }
    let ledger = match &cfg.database_url {
        None => {
            tracing::info!("DATABASE_URL is not set: running without the audit ledger");
            None
        }
        Some(url) => match open_ledger(url, &health, &shutdown).await {
            Ok(Some(l)) => Some(l),
            Ok(None) => {
                server_stop.cancel();
                return Ok(RunSummary::default());
            }
            Err(e) => {
                server_stop.cancel();
                return Err(e);
            }
        },
    };
    let production = cfg.api_url.trim_end_matches('/') == crate::config::DEFAULT_API_URL;
    tracing::info!(
        app_id = cfg.credentials.app_id,
        rate = cfg.rate,
        namespace = %cfg.names.namespace,
        prefetch = cfg.prefetch,
        broker = %crate::config::redact_url(cfg.amqp_url.expose()),
        api = %cfg.api_url,
        api_is_production_default = production,
        "kickq worker starting against {} ({}); active or standby is decided by the leadership lock",
        cfg.api_url,
        if production { "ZEGOCLOUD's production API, the default" } else { "not the production default" }
    );
    let shared = Shared {
        cfg,
        gate,
        api,
        ledger,
        health,
        ids: Arc::new(AtomicU64::new(0)),
        shutdown,
    };
    let mut summary = RunSummary::default();
    let mut backoff = reconnect_backoff();
    let mut sessions = 0u64;
    let mut fatal = None;
    loop {
        if shared.shutdown.is_cancelled() {
            break;
        }
        if sessions > 0 {
            summary.reconnects += 1;
            crate::metrics::reconnect();
        }
        sessions += 1;
        let started = Instant::now();
        let bounded = async {
            shared.shutdown.cancelled().await;
            tokio::time::sleep(stop_bound(&shared.cfg)).await;
        };
        let (end, tally) = tokio::select! {
            ended = session(&shared, sessions) => ended,
            _ = bounded => {
                // A step outside the pipeline (connecting, declaring, the
                // takeover record) did not notice the stop in time. Dropping
                // the session drops its connections: unacked deliveries return.
                tracing::warn!(bound_ms = stop_bound(&shared.cfg).as_millis() as u64, "the stop overran its bound; leaving without finishing the session");
                (SessionEnd::Shutdown, Tally::default())
            }
        };
        add_tally(&mut summary.tally, tally);
        shared.health.set_connected(false);
        shared.health.set_consuming(false);
        shared.health.set_standby(false);
        crate::metrics::active(false);
        match end {
            SessionEnd::Shutdown => break,
            SessionEnd::Fatal(e) => {
                fatal = Some(e);
                break;
            }
            SessionEnd::NotOpened(e) => {
                let delay = backoff.next().unwrap_or(RECONNECT_MAX);
                if e.is_configuration() {
                    // Waiting will not fix it, but a fixed user or vhost
                    // needs no restart: say so loudly, each time.
                    tracing::error!(
                        retry_in_ms = delay.as_millis() as u64,
                        "cannot open a broker session: {e}"
                    );
                } else {
                    tracing::warn!(
                        retry_in_ms = delay.as_millis() as u64,
                        "cannot open a broker session: {e}"
                    );
                }
                tokio::select! {
                    _ = shared.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            SessionEnd::Lost(why) => {
                if started.elapsed() >= HEALTHY_SESSION {
                    backoff = reconnect_backoff();
                }
                let delay = backoff.next().unwrap_or(RECONNECT_MAX);
                tracing::warn!(reason = %why, retry_in_ms = delay.as_millis() as u64, "broker session lost; reconnecting");
                tokio::select! {
                    _ = shared.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    server_stop.cancel();
    tracing::info!(
        acked = summary.tally.acked,
        dead_letters = summary.tally.dead_letters,
        retries = summary.tally.retries,
        reconnects = summary.reconnects,
        "kickq worker stopped"
    );
    match fatal {
        Some(e) => Err(e),
        None => Ok(summary),
    }
}

/// Longest a stop may take from the signal: the drain deadline, the grace,
/// and the closing steps (release record, lock, connections).
pub fn stop_bound(cfg: &WorkerConfig) -> Duration {
    cfg.driver.drain_deadline + SHUTDOWN_GRACE + CLOSE_BUDGET
}

fn add_tally(sum: &mut Tally, t: Tally) {
    sum.acked += t.acked;
    sum.ack_failed += t.ack_failed;
    sum.dead_letters += t.dead_letters;
    sum.retries += t.retries;
}

/// Opens and migrates the ledger, waiting out an unreachable database;
/// `Ok(None)` if shut down meanwhile, `Err` for a permanent failure.
async fn open_ledger(
    url: &Secret,
    health: &Health,
    shutdown: &CancellationToken,
) -> Result<Option<Ledger>, WorkerError> {
    let mut backoff = reconnect_backoff();
    loop {
        let attempt = async {
            let l = Ledger::connect(url.expose()).await?;
            l.migrate().await?;
            Ok::<_, LedgerError>(l)
        };
        let attempt = tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            a = attempt => a,
        };
        match attempt {
            Ok(l) => {
                health.set_ledger_ok(true);
                tracing::info!("audit ledger on; migrations applied");
                return Ok(Some(l));
            }
            Err(e) if e.is_unavailable() => {
                let delay = backoff.next().unwrap_or(RECONNECT_MAX);
                tracing::warn!(error = %e, database = %crate::config::redact_url(url.expose()), retry_in_ms = delay.as_millis() as u64, "cannot reach the ledger's PostgreSQL yet (DATABASE_URL)");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            Err(e) => return Err(WorkerError::Ledger(e)),
        }
    }
}

/// Closes a connection, bounded by [`CLOSE_STEP`]. Unacked deliveries of its
/// channels return to the queue.
async fn close(conn: &Connection) {
    let _ = tokio::time::timeout(CLOSE_STEP, conn.close(200, "bye".into())).await;
}

enum Leadership {
    /// The lock is ours; `contended` when another process held it while we waited.
    Taken {
        lock: Lock,
        contended: bool,
    },
    Shutdown,
    Lost(String),
}

/// Waits for the leadership lock, as a standby holding no deliveries.
async fn take_lock(shared: &Shared<impl KickApi>, conn: &Connection) -> Leadership {
    let names = &shared.cfg.names;
    let mut contended = false;
    loop {
        match lock::try_take(conn, names).await {
            Ok(Some(lock)) => return Leadership::Taken { lock, contended },
            Ok(None) => {
                if !contended {
                    shared.health.set_standby(true);
                    crate::metrics::active(false);
                    tracing::info!(lock = %names.leader, role = "standby", "another worker holds the leadership lock; standing by, holding no deliveries");
                }
                contended = true;
            }
            Err(e) => return Leadership::Lost(format!("leadership lock: {}", describe(&e))),
        }
        tokio::select! {
            _ = shared.shutdown.cancelled() => return Leadership::Shutdown,
            _ = tokio::time::sleep(leadership::LOCK_RETRY) => {}
        }
    }
}

/// Keeps the leader record fresh until `stop`; returns why it could not.
async fn refresh_record(publisher: Publisher, names: Names, stop: CancellationToken) -> String {
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

async fn session<A: KickApi>(shared: &Shared<A>, n: u64) -> (SessionEnd, Tally) {
    let cfg = &shared.cfg;
    let conn = match connect(&cfg.amqp_url, &cfg.connection_name).await {
        Ok(c) => c,
        Err(e) => return (SessionEnd::NotOpened(explain(&cfg.amqp_url, &e)), Tally::default()),
    };
    let publish_conn = match connect(&cfg.amqp_url, &format!("{}-publish", cfg.connection_name)).await {
        Ok(c) => c,
        Err(e) => {
            close(&conn).await;
            return (SessionEnd::NotOpened(explain(&cfg.amqp_url, &e)), Tally::default());
        }
    };
    let (end, tally) = active_session(shared, n, &conn, &publish_conn).await;
    close(&conn).await;
    close(&publish_conn).await;
    (end, tally)
}

async fn active_session<A: KickApi>(
    shared: &Shared<A>,
    n: u64,
    conn: &Connection,
    publish_conn: &Connection,
) -> (SessionEnd, Tally) {
    let cfg = &shared.cfg;
    let health = &shared.health;
    let lost = |why: String| (SessionEnd::Lost(why), Tally::default());
    let declared = async {
        let publisher = Publisher::open(publish_conn).await?;
        topology::declare(publisher.channel(), &cfg.names, cfg.delivery_limit).await?;
        Ok::<_, lapin::Error>(publisher)
    };
    let publisher = match declared.await {
        Ok(p) => p,
        Err(e) => return lost(format!("setup: {}", describe(&e))),
    };
    health.set_connected(true);
    let (lock, contended) = match take_lock(shared, conn).await {
        Leadership::Taken { lock, contended } => (lock, contended),
        Leadership::Shutdown => return (SessionEnd::Shutdown, Tally::default()),
        Leadership::Lost(why) => return lost(why),
    };
    // Active from here. What the previous holder left says when our first
    // call may go; our own window (the gate outlives sessions) holds too.
    let record = match lock.take_record(&cfg.names).await {
        Ok(r) => r,
        Err(e) => return lost(format!("leader record: {}", describe(&e))),
    };
    let now_ms = leadership::now_ms();
    let (hold_ms, reason) = leadership::takeover_hold(record, now_ms, contended);
    let hold_at = leadership::instant_of(hold_ms, now_ms);
    shared.gate.hold_until(hold_at);
    if let Err(e) = lock::write_record(&publisher, &cfg.names, Record::Active { at_ms: now_ms }).await {
        return lost(format!("leader record: {e}"));
    }
    health.set_standby(false);
    crate::metrics::active(true);
    crate::metrics::takeover(reason.as_str());
    tracing::info!(
        lock = %cfg.names.leader,
        role = "active",
        first_call_in_ms = (hold_ms - now_ms).max(0),
        hold = reason.as_str(),
        "took the leadership lock; this worker is active"
    );

    let setup = async {
        let channel = conn.create_channel().await?;
        // Quorum queues refuse global QoS: the prefetch is per consumer.
        channel
            .basic_qos(cfg.prefetch, BasicQosOptions { global: false })
            .await?;
        let consumer = channel
            .basic_consume(
                cfg.names.requests.as_str().into(),
                format!("{}-{n}", cfg.connection_name).into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let watch_channel = conn.create_channel().await?;
        Ok::<_, lapin::Error>((channel, consumer, watch_channel))
    };
    let (channel, consumer, watch_channel) = match setup.await {
        Ok(v) => v,
        Err(e) => return lost(format!("setup: {}", describe(&e))),
    };
    health.reset_in_flight();
    tracing::info!(session = n, queue = %cfg.names.requests, "consuming");

    let (to_coalescer, coalescer_rx) = mpsc::channel(STAGE_CHANNEL);
    let (to_dispatcher, dispatcher_rx) = mpsc::channel(STAGE_CHANNEL);
    let (to_router, router_rx) = mpsc::channel(STAGE_CHANNEL);
    let stop_intake = shared.shutdown.child_token();
    let abort = CancellationToken::new();
    let slots = Arc::new(Semaphore::new(cfg.max_in_flight));
    let intake_cfg = IntakeConfig {
        app_id: cfg.credentials.app_id,
        limits: cfg.limits,
    };
    let mut intake = tokio::spawn(intake::run(
        channel.clone(),
        consumer,
        intake_cfg,
        shared.ledger.clone(),
        to_coalescer,
        to_router.clone(),
        shared.ids.clone(),
        health.clone(),
        stop_intake.clone(),
    ));
    tokio::spawn(driver::run(
        coalescer_rx,
        to_dispatcher,
        shared.gate.clone(),
        slots,
        cfg.driver,
        health.clone(),
        abort.clone(),
    ));
    tokio::spawn(dispatch::run(
        dispatcher_rx,
        to_router,
        shared.api.clone(),
        shared.gate.clone(),
        cfg.halt_log_interval,
        abort.clone(),
    ));
    let router_cfg = RouterConfig {
        names: cfg.names.clone(),
        budget: cfg.budget,
        ledger_batch_rows: outcome::DEFAULT_LEDGER_BATCH_ROWS,
        ledger_linger: outcome::DEFAULT_LEDGER_LINGER,
        defer_delay: cfg.probe_interval,
    };
    let mut router = tokio::spawn(outcome::run(
        router_rx,
        publisher.clone(),
        shared.ledger.clone(),
        health.clone(),
        router_cfg,
        abort.clone(),
    ));
    let stop_refresh = CancellationToken::new();
    let mut refresher = tokio::spawn(refresh_record(
        publisher.clone(),
        cfg.names.clone(),
        stop_refresh.clone(),
    ));
    let mut watchdog = tokio::spawn(watch_queue(watch_channel, cfg.names.requests.clone(), health.clone()));
    let reporter = tokio::spawn(report_progress(health.clone(), cfg.rate));

    let _reporter = AbortOnDrop(reporter);
    let cut = |abort: &CancellationToken, intake: &tokio::task::JoinHandle<IntakeEnd>| {
        abort.cancel();
        intake.abort();
    };
    let end = tokio::select! {
        lost = &mut watchdog => Some(lost.unwrap_or_else(|e| format!("watchdog task failed: {e}"))),
        why = &mut refresher => Some(why.unwrap_or_else(|e| format!("leader record task failed: {e}"))),
        ended = &mut intake => match ended {
            Ok(IntakeEnd::Stopped) => None,
            Ok(IntakeEnd::Cancelled) => Some("the broker cancelled the consumer (queue deleted or node down)".to_owned()),
            Ok(IntakeEnd::Broker(e)) => Some(format!("consumer: {}", describe(&e))),
            Ok(IntakeEnd::DownstreamClosed) => Some("a pipeline stage stopped".to_owned()),
            Ok(IntakeEnd::Ledger(e)) => {
                cut(&abort, &intake);
                watchdog.abort();
                stop_refresh.cancel();
                return (SessionEnd::Fatal(WorkerError::Ledger(e)), Tally::default());
            }
            Err(e) => Some(format!("intake task failed: {e}")),
        },
        ended = &mut router => {
            cut(&abort, &intake);
            watchdog.abort();
            stop_refresh.cancel();
            let (end, tally) = match ended {
                Ok((RouterEnd::Ledger(e), tally)) => (SessionEnd::Fatal(WorkerError::Ledger(e)), tally),
                // At shutdown this is the normal end; its tally counts either way.
                Ok((_, tally)) if shared.shutdown.is_cancelled() => (SessionEnd::Shutdown, tally),
                Ok((RouterEnd::Broker(e), tally)) => (SessionEnd::Lost(format!("publish: {e}")), tally),
                Ok((other, tally)) => (SessionEnd::Lost(format!("router stopped: {other:?}")), tally),
                Err(e) => (SessionEnd::Lost(format!("router task failed: {e}")), Tally::default()),
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
            let deadline = Instant::now() + cfg.driver.drain_deadline + SHUTDOWN_GRACE;
            // `drained`: every call returned and every delivery was settled.
            let (drained, tally) = match tokio::time::timeout_at(deadline, &mut router).await {
                Ok(Ok((RouterEnd::Drained, tally))) => (true, tally),
                Ok(Ok((_, tally))) => {
                    tracing::warn!("shutdown: the router stopped early; the rest returns to the queue");
                    cut(&abort, &intake);
                    (false, tally)
                }
                Ok(Err(_)) => (false, Tally::default()),
                Err(_) => {
                    tracing::warn!(
                        deadline_ms = (cfg.driver.drain_deadline + SHUTDOWN_GRACE).as_millis() as u64,
                        "shutdown drain overran its deadline; what was not acked returns to the queue"
                    );
                    cut(&abort, &intake);
                    let tally = match tokio::time::timeout(CLOSE_STEP, &mut router).await {
                        Ok(Ok((_, tally))) => tally,
                        _ => Tally::default(),
                    };
                    (false, tally)
                }
            };
            stop_refresh.cancel();
            let _ = tokio::time::timeout(CLOSE_STEP, &mut refresher).await;
            if drained && conn.status().connected() {
                // Every call has returned and the lock is still ours: say
                // when our window frees, then let the lock go, last. (With
                // the connection gone, the lock went with it and a successor
                // may have written its own record: leave that alone.)
                let now = leadership::now_ms();
                let last = shared
                    .gate
                    .last_call()
                    .map_or(now, |t| leadership::ms_of(t + WINDOW, now));
                let free_at_ms = last.max(leadership::ms_of(hold_at, now));
                let release = lock::write_record(&publisher, &cfg.names, Record::Released { free_at_ms });
                match tokio::time::timeout(CLOSE_STEP, release).await {
                    Ok(Ok(())) => {
                        let _ = tokio::time::timeout(CLOSE_STEP, lock.release()).await;
                        tracing::info!(free_in_ms = (free_at_ms - now).max(0), "released the leadership lock");
                    }
                    _ => tracing::warn!("could not write the release record; the next worker waits a full window"),
                }
            }
            (SessionEnd::Shutdown, tally)
        }
        Some(why) => {
            cut(&abort, &intake);
            stop_refresh.cancel();
            let tally = match tokio::time::timeout(Duration::from_secs(5), &mut router).await {
                Ok(Ok((_, tally))) => tally,
                _ => Tally::default(),
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
    (session_end, tally)
}

/// Aborts a task when the session that spawned it ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Logs one INFO line every [`PROGRESS_INTERVAL`] while there is work (so an
/// operator can tell from the logs alone what the worker did, without one
/// line per retry), and one when a slowed AppId is back at its full rate.
async fn report_progress(health: Arc<Health>, rate: u32) {
    let mut last = health.progress();
    let mut slowed: std::collections::BTreeSet<u32> = Default::default();
    let mut beat = tokio::time::interval(PROGRESS_INTERVAL);
    beat.tick().await;
    loop {
        beat.tick().await;
        let now = health.progress();
        let d = now.since(&last);
        last = now;
        if d.busy() {
            let secs = PROGRESS_INTERVAL.as_secs_f64();
            tracing::info!(
                kicked = d.kicked,
                nothing_to_do = d.nothing_to_do,
                retried = d.retried,
                dead_lettered = d.dead_lettered,
                skipped = d.skipped,
                calls = d.calls,
                calls_per_s = (d.calls as f64 / secs * 10.0).round() / 10.0,
                limit_per_s = rate,
                pending_users = d.pending_users,
                backlog = d.queue_ready,
                "progress over the last {}s",
                PROGRESS_INTERVAL.as_secs()
            );
        }
        for (app, factor) in health.gate().factors(Instant::now()) {
            if factor < 1.0 {
                slowed.insert(app);
            } else if slowed.remove(&app) {
                tracing::info!(app_id = app, "rate back to the full limit after a slow-down");
            }
        }
    }
}

/// Returns (a reason) once the queue is gone, has no consumer left, or has
/// held ready messages over two checks while this worker held none: the
/// broker dropped or starved our consumer without a word, and only a new
/// session (re-declare, re-consume) brings it back.
async fn watch_queue(channel: lapin::Channel, queue: String, health: Arc<Health>) -> String {
    use lapin::options::QueueDeclareOptions;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let mut starved_checks = 0;
    let mut taken = health.taken_total();
    loop {
        tokio::time::sleep(WATCHDOG_INTERVAL).await;
        let check = channel.queue_declare(queue.as_str().into(), passive, FieldTable::default());
        match tokio::time::timeout(WATCHDOG_INTERVAL * 2, check).await {
            Ok(Ok(q)) if q.consumer_count() == 0 => return format!("queue {queue} has no consumer: ours was dropped"),
            Ok(Ok(q)) => {
                // Starved: ready messages, none held, and none taken since the
                // last check. A worker draining at full speed takes more
                // between checks even when it holds none at the instant.
                let now_taken = health.taken_total();
                let starved = q.message_count() > 0 && health.in_flight() == 0 && now_taken == taken;
                taken = now_taken;
                starved_checks = if starved { starved_checks + 1 } else { 0 };
                if starved_checks >= 2 {
                    return format!(
                        "queue {queue} holds {} ready messages but none reach us",
                        q.message_count()
                    );
                }
                health.set_queue_ready(q.message_count());
                tracing::trace!(queue = %queue, ready = q.message_count(), "queue check ok");
            }
            Ok(Err(e)) => return format!("queue {queue} check failed: {}", describe(&e)),
            Err(_) => return format!("queue {queue} check got no answer in {:?}", WATCHDOG_INTERVAL * 2),
        }
    }
}
