//! `kickq run` as a library call: the worker's settings ([`WorkerConfig`]), and the run loop that opens the
//! metrics server and the ledger, then, for each shard served, runs one broker session after another (see
//! `pipeline`) with jittered reconnects until shutdown. Shards run side by side, each with its own lock, so
//! one shard's standby or outage never pauses another.
//!
//! The gate, the API client and the ledger outlive sessions, so the rate
//! limit holds across a reconnect. The whole stop is bounded by the drain
//! deadline plus [`SHUTDOWN_GRACE`] and [`CLOSE_BUDGET`] ([`stop_bound`]),
//! whatever PostgreSQL or the API do: past it the session is cut, and what
//! was not acked returns to the queue.

pub use crate::amqp::topology::Names;
pub use crate::coalesce::Policy;
pub use crate::console::{ConsoleConfig, ConsoleError};
// The front ends' defaults, for the CLI that configures them through the worker.
pub(crate) use crate::console::DEMO_CONSOLE_ADDR;
pub use crate::http_intake::{IntakeConfig, IntakeError};
pub(crate) use crate::http_intake::{
    DEFAULT_MAX_BYTES as DEFAULT_INTAKE_MAX_BYTES, DEFAULT_RATE as DEFAULT_INTAKE_RATE,
};
pub use crate::serve::Bounds as ListenerBounds;

use crate::config::shards::ShardName;
use crate::health::Health;
use crate::ledger::{Ledger, LedgerError};
pub use crate::outcome::plan::Budget;
pub use crate::pipeline::coalescer::CoalescerConfig;
use crate::pipeline::dispatch::KickApi;
use crate::pipeline::router::SessionTally;
use crate::pipeline::{session, SessionEnd, Shared};
use crate::ratelimit::Gate;
use crate::secret::Secret;
use crate::zego::clients::Clients;
use backon::{BackoffBuilder, ExponentialBuilder};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Reconnect backoff: first delay, and the cap. Jittered (full jitter on top
/// of the exponential step), so a fleet that lost the same broker does not
/// come back in lock-step.
const RECONNECT_FIRST: Duration = Duration::from_millis(200);
const RECONNECT_MAX: Duration = Duration::from_secs(30);
/// A session that lived this long resets the backoff.
const HEALTHY_SESSION: Duration = Duration::from_secs(30);
pub use crate::pipeline::SHUTDOWN_GRACE;
/// What all closing steps together may add to the drain deadline and the
/// grace before the stop is cut short (see [`stop_bound`]).
pub const CLOSE_BUDGET: Duration = Duration::from_secs(3);

/// What a run did, summed over its sessions.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RunSummary {
    /// Router tallies.
    pub tally: SessionTally,
    /// Sessions started after the first.
    pub reconnects: u64,
}

/// Runs the worker until `shutdown` fires; then drains and returns.
pub async fn run(cfg: WorkerConfig, shutdown: CancellationToken) -> Result<RunSummary, WorkerError> {
    Worker::bind(cfg).await?.run(shutdown).await
}

/// A worker whose metrics server is listening, not yet running: lets a
/// caller that asked for port 0 learn the address before the run starts.
pub struct Worker<A = Clients> {
    cfg: WorkerConfig,
    api: Arc<A>,
    gate: Gate,
    health: Arc<Health>,
    metrics_addr: Option<SocketAddr>,
    intake_addr: Option<SocketAddr>,
    console_addr: Option<SocketAddr>,
    server_stop: CancellationToken,
}

impl Worker<Clients> {
    /// Builds one API client per app from `cfg` and binds the metrics server
    /// (if `cfg.metrics_addr` is set).
    pub async fn bind(cfg: WorkerConfig) -> Result<Self, WorkerError> {
        let clients = cfg.clients()?;
        clients.warm_up_in_background();
        Self::bind_with_api(cfg, Arc::new(clients)).await
    }
}

impl<A: KickApi> Worker<A> {
    /// [`Worker::bind`] with any [`KickApi`] (the bench's baseline and tests use this).
    pub async fn bind_with_api(cfg: WorkerConfig, api: Arc<A>) -> Result<Self, WorkerError> {
        let gate = Gate::with_limits(cfg.apps.iter().map(|a| (a.app_id(), a.rate)), cfg.probe_interval)
            .with_counting(cfg.rate_counting);
        let shards = cfg.shards();
        let shard_names: Vec<&str> = shards.iter().map(ShardName::as_str).collect();
        let health = Arc::new(Health::for_shards(
            gate.clone(),
            cfg.database_url.is_some(),
            &shard_names,
        ));
        let server_stop = CancellationToken::new();
        let mut metrics_addr = None;
        if let Some(addr) = cfg.metrics_addr {
            let handle = crate::metrics::install();
            for app in cfg.apps.iter() {
                crate::metrics::register_app(app.app_id(), app.rate);
            }
            for shard in &shards {
                crate::metrics::register_shard(shard.as_str());
            }
            // Forwards go to any shard of the deployment, served here or not.
            for shard in cfg.routing().shards() {
                crate::metrics::register_forwarded(shard.as_str());
            }
            let stop = server_stop.clone();
            let (local, serve) =
                crate::health::bind(addr, health.clone(), handle, async move { stop.cancelled().await })
                    .await
                    .map_err(|source| WorkerError::Metrics { addr, source })?;
            tracing::info!(addr = %local, "metrics and health on /metrics, /healthz, /readyz");
            metrics_addr = Some(local);
            tokio::spawn(serve);
        }
        let mut intake_addr = None;
        if let Some(intake) = &cfg.http_intake {
            let routing = cfg.routing();
            let producer = crate::producer::ProducerConfig {
                names: cfg.names.clone(),
                delivery_limit: cfg.delivery_limit,
                connection_name: format!("{}-http-intake", cfg.connection_name),
                limits: cfg.limits,
                max_in_flight: crate::producer::MAX_IN_FLIGHT,
                routing: routing.is_sharded().then_some(routing),
            };
            let stop = server_stop.clone();
            let (local, serve) = crate::http_intake::bind(
                intake,
                cfg.amqp_url.clone(),
                producer,
                cfg.database_url.as_ref(),
                async move { stop.cancelled().await },
            )
            .await
            // The metrics server, if any, stops too.
            .inspect_err(|_| server_stop.cancel())?;
            tracing::info!(addr = %local, "http intake on POST /v1/kicks (bearer tokens of KICKQ_HTTP_INTAKE_TOKEN_FILE)");
            intake_addr = Some(local);
            tokio::spawn(serve);
        }
        let mut console_addr = None;
        if let Some(console) = &cfg.console {
            let stop = server_stop.clone();
            let source = console_source(&cfg, &gate, &health, console).await;
            let (local, serve) = crate::console::bind(console, source, async move { stop.cancelled().await })
                .await
                .inspect_err(|_| server_stop.cancel())?;
            tracing::info!(addr = %local, "console on http://{local}/ (tokens of its token file)");
            console_addr = Some(local);
            tokio::spawn(serve);
        }
        Ok(Self {
            cfg,
            api,
            gate,
            health,
            metrics_addr,
            intake_addr,
            console_addr,
            server_stop,
        })
    }

    /// Where /metrics, /healthz, /readyz and /status are served, if anywhere.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Where the web console is served, if anywhere.
    pub fn console_addr(&self) -> Option<SocketAddr> {
        self.console_addr
    }

    /// Where the HTTP intake is served, if anywhere.
    pub fn intake_addr(&self) -> Option<SocketAddr> {
        self.intake_addr
    }

    /// Opens the ledger, then runs broker sessions until `shutdown` fires;
    /// drains and returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<RunSummary, WorkerError> {
        let Worker {
            cfg,
            api,
            gate,
            health,
            server_stop,
            ..
        } = self;
        let result = run_loop(cfg, api, gate, health, shutdown).await;
        server_stop.cancel();
        result
    }
}

/// What the console reads: this worker's health and gate, the deployment's
/// apps (those of other shards with their default rate, as far as this
/// worker knows them), its broker and its ledger.
async fn console_source(
    cfg: &WorkerConfig,
    gate: &Gate,
    health: &Arc<Health>,
    console: &ConsoleConfig,
) -> crate::console::source::Source {
    use crate::console::source::AppInfo;
    let routing = cfg.routing();
    let mut apps: Vec<AppInfo> = cfg
        .apps
        .iter()
        .map(|a| AppInfo {
            app_id: a.app_id(),
            rate: a.rate,
            shard: routing.shard_for(Some(a.app_id())).cloned().unwrap_or_default(),
            served_here: true,
        })
        .collect();
    for (app_id, shard) in routing.iter() {
        if !apps.iter().any(|a| a.app_id == app_id) {
            apps.push(AppInfo {
                app_id,
                rate: gate.limit(app_id),
                shard: shard.clone(),
                served_here: false,
            });
        }
    }
    apps.sort_by_key(|a| (!a.served_here, a.app_id));
    let ledger = match &cfg.database_url {
        // An unparseable URL: the worker's own ledger open says so and stops.
        Some(u) => crate::ledger::Ledger::connect(u.expose()).await.ok(),
        None => None,
    };
    crate::console::source::Source::new(crate::console::source::Parts {
        health: health.clone(),
        gate: gate.clone(),
        names: cfg.names.clone(),
        routing,
        apps,
        amqp_url: cfg.amqp_url.clone(),
        ledger,
        management: console.management_url.clone(),
        connection_name: format!("{}-console", cfg.connection_name),
    })
}

fn reconnect_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(RECONNECT_FIRST)
        .with_max_delay(RECONNECT_MAX)
        .with_jitter()
        .without_max_times()
        .build()
}

async fn run_loop<A: KickApi>(
    cfg: WorkerConfig,
    api: Arc<A>,
    gate: Gate,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> Result<RunSummary, WorkerError> {
    let ledger = match &cfg.database_url {
        None => {
            tracing::info!("DATABASE_URL is not set: running without the audit ledger");
            None
        }
        Some(url) => match open_ledger(url, &health, &shutdown).await? {
            Some(l) => Some(l.with_dedupe_window(cfg.dedupe_window)),
            None => return Ok(RunSummary::default()),
        },
    };
    tracing::info!(
        apps = cfg.apps.len(),
        default_app = cfg.apps.default_app(),
        namespace = %cfg.names.namespace,
        prefetch = cfg.prefetch,
        broker = %crate::config::redact_url(cfg.amqp_url.expose()),
        "kickq worker starting; active or standby is decided by the leadership lease"
    );
    for app in cfg.apps.iter() {
        let production = app.api_url.trim_end_matches('/') == crate::config::DEFAULT_API_URL;
        tracing::info!(
            app = app.app_id(),
            rate = app.rate,
            api = %app.api_url,
            api_is_production_default = production,
            secret_from = %app.secret_source,
            default = cfg.apps.default_app() == Some(app.app_id()),
            "serving app {} against {} ({})",
            app.app_id(),
            app.api_url,
            if production { "ZEGOCLOUD's production API, the default" } else { "not the production default" }
        );
    }
    if cfg.apps.default_app().is_none() {
        tracing::info!("no app is marked default: jobs that name no app_id are dead-lettered unknown_app");
    }
    let routing = Arc::new(cfg.routing());
    let shards = cfg.shards();
    if routing.is_sharded() {
        tracing::info!(
            serving = %crate::config::apps::names(&shards),
            deployment = %crate::config::apps::names(&routing.shards()),
            exchange = %cfg.names.jobs,
            "serving {} of the deployment's shards; each has its own lock, queues and standby",
            shards.len()
        );
    }
    let _reporter = crate::pipeline::monitor::AbortOnDrop(tokio::spawn(crate::pipeline::monitor::report_progress(
        health.clone(),
        cfg.apps.iter().map(|a| a.rate).sum(),
    )));
    // Cancelled by the shutdown, or by one shard's fatal failure (a ledger
    // that waiting will not fix), which stops every shard.
    let stop = shutdown.child_token();
    let ids = Arc::new(AtomicU64::new(0));
    let mut running = tokio::task::JoinSet::new();
    for shard in &shards {
        let shared = Shared {
            cfg: cfg.session(shard),
            gate: gate.clone(),
            api: api.clone(),
            ledger: ledger.clone(),
            shard: health.shard(shard.as_str()).expect("health has every served shard"),
            here: shard.clone(),
            health: health.clone(),
            routing: routing.clone(),
            ids: ids.clone(),
            shutdown: stop.clone(),
        };
        running.spawn(shard_loop(shared));
    }
    let mut summary = RunSummary::default();
    let mut fatal = None;
    while let Some(ended) = running.join_next().await {
        let (part, err) = match ended {
            Ok(v) => v,
            Err(e) => (
                RunSummary::default(),
                Some(WorkerError::Client(format!("a shard's task failed: {e}"))),
            ),
        };
        add_tally(&mut summary.tally, part.tally);
        summary.reconnects += part.reconnects;
        if let Some(e) = err {
            stop.cancel();
            fatal.get_or_insert(e);
        }
    }
    tracing::info!(
        acked = summary.tally.acked,
        dead_letters = summary.tally.dead_letters,
        retries = summary.tally.retries,
        events = summary.tally.events,
        forwarded = summary.tally.forwarded,
        reconnects = summary.reconnects,
        "kickq worker stopped"
    );
    match fatal {
        Some(e) => Err(e),
        None => Ok(summary),
    }
}

/// One shard's broker sessions, one after another with jittered reconnects,
/// until its stop fires or a failure waiting will not fix.
async fn shard_loop<A: KickApi>(shared: Shared<A>) -> (RunSummary, Option<WorkerError>) {
    let mut summary = RunSummary::default();
    let mut backoff = reconnect_backoff();
    let mut sessions = 0u64;
    let mut fatal = None;
    let shard = shared.cfg.names.shard.clone();
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
            tokio::time::sleep(bound_after_drain(shared.cfg.coalescer.drain_deadline)).await;
        };
        let (end, tally) = tokio::select! {
            ended = session(&shared, sessions) => ended,
            _ = bounded => {
                // A step outside the pipeline (connecting, declaring, the
                // takeover record) did not notice the stop in time. Dropping
                // the session drops its connections: unacked deliveries return.
                tracing::warn!(shard = %shard, bound_ms = bound_after_drain(shared.cfg.coalescer.drain_deadline).as_millis() as u64, "the stop overran its bound; leaving without finishing the session");
                (SessionEnd::Shutdown, SessionTally::default())
            }
        };
        add_tally(&mut summary.tally, tally);
        shared.shard.session_ended();
        crate::metrics::active(&shard, false);
        // The session's deliveries are gone with it: no unacked depth of
        // this worker's stays exported (a standby reports none).
        crate::metrics::queue_unacked(&shared.cfg.names.requests, 0);
        crate::metrics::queue_unacked(&shared.cfg.names.bulk, 0);
        match end {
            SessionEnd::Shutdown => break,
            SessionEnd::Fatal(e) => {
                fatal = Some(WorkerError::Ledger(e));
                break;
            }
            SessionEnd::NotOpened(e) => {
                let delay = backoff.next().unwrap_or(RECONNECT_MAX);
                if e.is_configuration() {
                    // Waiting will not fix it, but a fixed user or vhost
                    // needs no restart: say so loudly, each time.
                    tracing::error!(
                        shard = %shard,
                        retry_in_ms = delay.as_millis() as u64,
                        "cannot open a broker session: {e}"
                    );
                } else {
                    tracing::warn!(
                        shard = %shard,
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
                tracing::warn!(shard = %shard, reason = %why, retry_in_ms = delay.as_millis() as u64, "broker session lost; reconnecting");
                tokio::select! {
                    _ = shared.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    (summary, fatal)
}

/// Longest a stop may take from the signal: the drain deadline, the grace,
/// and the closing steps (release record, lock, connections).
pub fn stop_bound(cfg: &WorkerConfig) -> Duration {
    bound_after_drain(cfg.coalescer.drain_deadline)
}

/// [`stop_bound`] for a drain deadline.
fn bound_after_drain(drain_deadline: Duration) -> Duration {
    drain_deadline + SHUTDOWN_GRACE + CLOSE_BUDGET
}

fn add_tally(sum: &mut SessionTally, t: SessionTally) {
    sum.acked += t.acked;
    sum.ack_failed += t.ack_failed;
    sum.dead_letters += t.dead_letters;
    sum.retries += t.retries;
    sum.events += t.events;
    sum.forwarded += t.forwarded;
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

mod config;
mod error;
pub use config::{
    WorkerConfig, BULK_SIZED_FOR_USERS, BULK_WINDOW_WORK, DEFAULT_BULK_PREFETCH, DEFAULT_EVENTS, DEFAULT_PREFETCH,
};
pub use error::WorkerError;

#[cfg(test)]
mod tests;
