//! The composition root of `kickq run`: builds the stages and the bounded channels between them, supervises one
//! broker session at a time, reconnects with backoff, and owns shutdown.
//!
//! ```text
//! intake ──JobIn──> coalescer ──Dispatch──> dispatcher ──Outcome──> router ──ack──> broker
//!    └────────────── Received / Unusable ─────────────────────────────┘
//! ```
//!
//! A session is one connection. Everything consumed in a session belongs to
//! it: when the broker goes away the session is dropped whole (its unacked
//! deliveries return to the queue) and a new one starts. The gate, the API
//! client and the ledger outlive sessions, so the rate limit holds across a
//! reconnect.

use crate::amqp::connect::{connect, describe};
use crate::amqp::intake::{self, IntakeConfig, IntakeEnd};
use crate::amqp::publish::Publisher;
use crate::amqp::topology::{self, Names};
use crate::coalesce::driver::{self, DriverConfig};
use crate::config::Credentials;
use crate::dispatch::{self, KickApi};
use crate::health::Health;
use crate::job::Limits;
use crate::ledger::Ledger;
use crate::outcome::plan::Budget;
use crate::outcome::{self, RouterConfig, RouterEnd, Tally};
use crate::ratelimit::Gate;
use crate::secret::Secret;
use crate::zego::client::{ClientConfig, ZegoClient};
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

/// Default unacked messages the broker may push to this worker. Coalescing
/// can only fold users it can see: on a shuffled sweep over 1,000 rooms a
/// window of 20,000 one-user messages gives calls within 1% of the minimum,
/// where 10,000 gives 10% more calls. Memory is about prefetch x message size.
pub const DEFAULT_PREFETCH: u16 = 20_000;
/// Capacity of the stage channels: deep enough to smooth bursts, small enough
/// that backpressure reaches the broker within a fraction of a second.
const STAGE_CHANNEL: usize = 1024;
/// Reconnect backoff: first delay, and the cap.
const RECONNECT_FIRST: Duration = Duration::from_millis(200);
const RECONNECT_MAX: Duration = Duration::from_secs(30);
/// A session that lived this long resets the backoff.
const HEALTHY_SESSION: Duration = Duration::from_secs(30);
/// How often the session checks that its queue still exists, still has
/// consumers, and is not holding ready messages while we hold none. The
/// broker should cancel our consumer when the queue is deleted, but RabbitMQ
/// 3.10 leaves a consumer registered and starved when a quorum queue is
/// deleted and at once re-declared; this check turns that silence into a
/// reconnect.
const WATCHDOG_INTERVAL: Duration = Duration::from_secs(5);

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
    Lost(String),
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
            Some(l) => Some(l),
            None => {
                server_stop.cancel();
                return Ok(RunSummary::default());
            }
        },
    };
    tracing::info!(
        app_id = cfg.credentials.app_id,
        rate = cfg.rate,
        namespace = %cfg.names.namespace,
        prefetch = cfg.prefetch,
        broker = %crate::config::redact_url(cfg.amqp_url.expose()),
        "kickq worker starting"
    );
    let ids = Arc::new(AtomicU64::new(0));
    let mut summary = RunSummary::default();
    let mut delay = RECONNECT_FIRST;
    let mut sessions = 0u64;
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        if sessions > 0 {
            summary.reconnects += 1;
            crate::metrics::reconnect();
        }
        sessions += 1;
        let started = tokio::time::Instant::now();
        let (end, tally) = session(
            &cfg,
            sessions,
            &gate,
            api.clone(),
            ledger.clone(),
            health.clone(),
            ids.clone(),
            &shutdown,
        )
        .await;
        add_tally(&mut summary.tally, tally);
        health.set_connected(false);
        health.set_consuming(false);
        match end {
            SessionEnd::Shutdown => break,
            SessionEnd::Lost(why) => {
                if started.elapsed() >= HEALTHY_SESSION {
                    delay = RECONNECT_FIRST;
                }
                tracing::warn!(reason = %why, retry_in_ms = delay.as_millis() as u64, "broker session lost; reconnecting");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(RECONNECT_MAX);
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
    Ok(summary)
}

fn add_tally(sum: &mut Tally, t: Tally) {
    sum.acked += t.acked;
    sum.ack_failed += t.ack_failed;
    sum.dead_letters += t.dead_letters;
    sum.retries += t.retries;
}

async fn open_ledger(url: &Secret, health: &Health, shutdown: &CancellationToken) -> Option<Ledger> {
    let mut delay = RECONNECT_FIRST;
    loop {
        let attempt = async {
            let l = Ledger::connect(url.expose()).await?;
            l.migrate().await?;
            Ok::<_, crate::ledger::LedgerError>(l)
        };
        match attempt.await {
            Ok(l) => {
                health.set_ledger_ok(true);
                tracing::info!("audit ledger on; migrations applied");
                return Some(l);
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot open the ledger yet");
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(RECONNECT_MAX);
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn session<A: KickApi>(
    cfg: &WorkerConfig,
    n: u64,
    gate: &Gate,
    api: Arc<A>,
    ledger: Option<Ledger>,
    health: Arc<Health>,
    ids: Arc<AtomicU64>,
    shutdown: &CancellationToken,
) -> (SessionEnd, Tally) {
    let conn = match connect(&cfg.amqp_url, &cfg.connection_name).await {
        Ok(c) => c,
        Err(e) => return (SessionEnd::Lost(format!("connect: {}", describe(&e))), Tally::default()),
    };
    let setup = async {
        let publisher = Publisher::open(&conn).await?;
        let ready = topology::declare(publisher.channel(), &cfg.names, cfg.delivery_limit).await?;
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
        Ok::<_, lapin::Error>((publisher, channel, consumer, ready))
    };
    let (publisher, channel, consumer, ready) = match setup.await {
        Ok(v) => v,
        Err(e) => {
            let _ = conn.close(200, "setup failed".into()).await;
            return (SessionEnd::Lost(format!("setup: {}", describe(&e))), Tally::default());
        }
    };
    health.set_connected(true);
    health.reset_in_flight();
    tracing::info!(session = n, queue = %cfg.names.requests, ready, "consuming");

    let (to_coalescer, coalescer_rx) = mpsc::channel(STAGE_CHANNEL);
    let (to_dispatcher, dispatcher_rx) = mpsc::channel(STAGE_CHANNEL);
    let (to_router, router_rx) = mpsc::channel(STAGE_CHANNEL);
    let stop_intake = shutdown.child_token();
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
        ledger.clone(),
        to_coalescer,
        to_router.clone(),
        ids,
        health.clone(),
        stop_intake.clone(),
    ));
    tokio::spawn(driver::run(
        coalescer_rx,
        to_dispatcher,
        gate.clone(),
        slots,
        cfg.driver,
        health.clone(),
        abort.clone(),
    ));
    tokio::spawn(dispatch::run(
        dispatcher_rx,
        to_router,
        api,
        gate.clone(),
        cfg.halt_log_interval,
    ));
    let router_cfg = RouterConfig {
        names: cfg.names.clone(),
        budget: cfg.budget,
        ledger_batch_rows: outcome::DEFAULT_LEDGER_BATCH_ROWS,
        ledger_linger: outcome::DEFAULT_LEDGER_LINGER,
        defer_delay: cfg.probe_interval,
    };
    let publish_channel = publisher.channel().clone();
    let mut router = tokio::spawn(outcome::run(
        router_rx,
        publisher,
        ledger,
        health.clone(),
        router_cfg,
        abort.clone(),
    ));

    let watch_channel = match conn.create_channel().await {
        Ok(c) => c,
        Err(e) => {
            abort.cancel();
            stop_intake.cancel();
            return (
                SessionEnd::Lost(format!("watchdog channel: {}", describe(&e))),
                Tally::default(),
            );
        }
    };
    let mut watchdog = tokio::spawn(watch_queue(watch_channel, cfg.names.requests.clone(), health.clone()));
    let end = tokio::select! {
        lost = &mut watchdog => {
            stop_intake.cancel();
            Some(lost.unwrap_or_else(|e| format!("watchdog task failed: {e}")))
        }
        ended = &mut intake => match ended {
            Ok(IntakeEnd::Stopped) => None,
            Ok(IntakeEnd::Cancelled) => Some("the broker cancelled the consumer (queue deleted or node down)".to_owned()),
            Ok(IntakeEnd::Broker(e)) => Some(format!("consumer: {}", describe(&e))),
            Ok(IntakeEnd::DownstreamClosed) => Some("a pipeline stage stopped".to_owned()),
            Err(e) => Some(format!("intake task failed: {e}")),
        },
        ended = &mut router => {
            stop_intake.cancel();
            let (why, tally) = match ended {
                Ok((RouterEnd::Broker(e), tally)) => (format!("publish: {e}"), tally),
                Ok((other, tally)) => (format!("router stopped: {other:?}"), tally),
                Err(e) => (format!("router task failed: {e}"), Tally::default()),
            };
            abort.cancel();
            let _ = conn.close(200, "session lost".into()).await;
            // At shutdown this is the normal end; its tally counts either way.
            let end = if shutdown.is_cancelled() { SessionEnd::Shutdown } else { SessionEnd::Lost(why) };
            return (end, tally);
        }
    };
    watchdog.abort();
    let (session_end, tally) = match end {
        None => {
            // Graceful: intake stopped; the coalescer drains within its
            // deadline, the dispatcher finishes its calls, the router acks.
            let limit = cfg.driver.drain_deadline + cfg.http_timeout + Duration::from_secs(10);
            let tally = match tokio::time::timeout(limit, &mut router).await {
                Ok(Ok((_, tally))) => tally,
                _ => {
                    tracing::warn!("shutdown drain overran; the rest returns to the queue");
                    abort.cancel();
                    Tally::default()
                }
            };
            (SessionEnd::Shutdown, tally)
        }
        Some(why) => {
            abort.cancel();
            let tally = match tokio::time::timeout(Duration::from_secs(5), &mut router).await {
                Ok(Ok((_, tally))) => tally,
                _ => Tally::default(),
            };
            (SessionEnd::Lost(why), tally)
        }
    };
    // Close each channel and wait for the broker's word before closing the
    // connection: a channel closing on drop while the connection closes makes
    // lapin log a spurious connection error. Unacked deliveries return to
    // the queue.
    let _ = publish_channel.close(200, "bye".into()).await;
    // The consume channel is not closed on its own: RabbitMQ 3.10 can drop
    // acks still queued on a channel that closes (rabbitmq-server#10327),
    // and the bench saw those messages come back. Closing the connection
    // lets the broker take every ack first.
    drop(channel);
    let _ = conn.close(200, "bye".into()).await;
    (session_end, tally)
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
                tracing::trace!(queue = %queue, ready = q.message_count(), "queue check ok");
            }
            Ok(Err(e)) => return format!("queue {queue} check failed: {}", describe(&e)),
            Err(_) => return format!("queue {queue} check got no answer in {:?}", WATCHDOG_INTERVAL * 2),
        }
    }
}
