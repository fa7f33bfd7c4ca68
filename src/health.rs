//! The worker's observable state (per shard: connected, consuming or standby; halted apps, ledger reachable)
//! and the HTTP server that serves `/metrics`, `/healthz`, `/readyz` and `/status` from it.

use crate::amqp::topology::Lane;
use crate::ratelimit::Gate;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

/// Default address of the metrics and health server: loopback, because
/// `/metrics` is for a local scraper or sidecar, not the internet.
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9464";

const LEDGER_OFF: u8 = 0;
const LEDGER_OK: u8 = 1;
const LEDGER_DOWN: u8 = 2;

/// Flags the stages set and the health server reads. All relaxed atomics:
/// each flag is independent and read only for reporting.
#[derive(Debug)]
pub(crate) struct Health {
    ledger: AtomicU8,
    /// What the worker is doing now (backlog, calls in flight, call rate).
    live: live::Live,
    shards: Vec<Arc<ShardState>>,
    progress: Counts,
    gate: Gate,
}

/// One served shard's part: each shard has its own broker session, lock and
/// consumers, so its own role.
#[derive(Debug, Default)]
pub(crate) struct ShardState {
    name: String,
    connected: AtomicBool,
    consuming: AtomicBool,
    standby: AtomicBool,
    in_flight: std::sync::atomic::AtomicUsize,
    taken: AtomicU64,
    queue_ready: AtomicU64,
    bulk_ready: AtomicU64,
    /// Deliveries of each lane (live, bulk) this worker holds unacked now.
    unacked: [std::sync::Arc<AtomicU64>; 2],
    /// The role last seen by [`ShardState::role_since`]'s bookkeeping, and
    /// since when (wall-clock milliseconds).
    last_role: AtomicU8,
    role_since_ms: std::sync::atomic::AtomicI64,
}

impl ShardState {
    /// The shard's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The shard's broker connection is up (or not).
    pub(crate) fn set_connected(&self, v: bool) {
        self.connected.store(v, Ordering::Relaxed);
    }

    /// The shard's consumers are active (or not).
    pub(crate) fn set_consuming(&self, v: bool) {
        self.consuming.store(v, Ordering::Relaxed);
        self.note_role();
    }

    /// Records when the role changed, for [`ShardState::role_since`].
    fn note_role(&self) {
        let now = self.role() as u8 + 1;
        if self.last_role.swap(now, Ordering::Relaxed) != now {
            self.role_since_ms
                .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
        }
    }

    /// When the shard took its current role (`None` before the first).
    pub(crate) fn role_since(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        match self.last_role.load(Ordering::Relaxed) {
            0 => None,
            _ => chrono::DateTime::from_timestamp_millis(self.role_since_ms.load(Ordering::Relaxed)),
        }
    }

    /// This process waits for the shard's lock (true) or holds it or is
    /// connecting (false). A standby is ready: waiting is its job.
    pub(crate) fn set_standby(&self, v: bool) {
        self.standby.store(v, Ordering::Relaxed);
        self.note_role();
    }

    /// Whether this process is the shard's standby now.
    pub(crate) fn is_standby(&self) -> bool {
        self.standby.load(Ordering::Relaxed)
    }

    /// Whether the shard's consumers are active.
    pub(crate) fn is_consuming(&self) -> bool {
        self.consuming.load(Ordering::Relaxed)
    }

    /// Whether the shard's broker connection is up.
    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Intake took a delivery.
    pub(crate) fn delivery_taken(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.taken.fetch_add(1, Ordering::Relaxed);
    }

    /// Deliveries taken since the process started (never decreases).
    pub(crate) fn taken_total(&self) -> u64 {
        self.taken.load(Ordering::Relaxed)
    }

    /// The router finished (acked or returned) a delivery.
    pub(crate) fn delivery_finished(&self) {
        let _ = self
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Deliveries taken and not yet finished in this session.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// A new session starts: nothing of the old one is in flight any more.
    pub(crate) fn reset_in_flight(&self) {
        self.in_flight.store(0, Ordering::Relaxed);
    }

    /// The count of `lane`'s deliveries this shard holds unacked, for each
    /// delivery to hold its place in ([`crate::amqp::delivery::Held`]).
    pub(crate) fn unacked(&self, lane: Lane) -> std::sync::Arc<AtomicU64> {
        self.unacked[lane_index(lane)].clone()
    }

    /// Messages ready in the live queue at the last check.
    pub(crate) fn set_queue_ready(&self, n: u32) {
        self.queue_ready.store(n.into(), Ordering::Relaxed);
    }

    /// Messages ready in the shard's bulk queue, as the last check saw them.
    pub(crate) fn set_bulk_ready(&self, n: u32) {
        self.bulk_ready.store(n.into(), Ordering::Relaxed);
    }

    /// Its role now.
    pub(crate) fn role(&self) -> Role {
        role(self.is_standby(), self.is_consuming())
    }

    /// Clears the session flags (between sessions).
    pub(crate) fn session_ended(&self) {
        self.set_connected(false);
        self.set_consuming(false);
        self.set_standby(false);
    }
}

/// What the worker did, counted for the periodic progress line (the metrics
/// carry the same; these are readable in-process).
#[derive(Debug, Default)]
struct Counts {
    kicked: AtomicU64,
    nothing_to_do: AtomicU64,
    retried: AtomicU64,
    deferred: AtomicU64,
    dead_lettered: AtomicU64,
    /// Messages dead-lettered whole, before any call (invalid, expired, of no
    /// app served): their users are not counted above.
    unusable: AtomicU64,
    skipped: AtomicU64,
    calls: AtomicU64,
    pending_users: AtomicU64,
    /// The same by lane (live, bulk), for the console.
    lanes: [LaneCounts; 2],
}

#[derive(Debug, Default)]
struct LaneCounts {
    kicked: AtomicU64,
    dead_lettered: AtomicU64,
    pending_users: AtomicU64,
}

/// A lane's users since start (kicked, dead-lettered) and waiting in the
/// coalescer now.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LaneProgress {
    /// Users kicked.
    pub kicked: u64,
    /// Users dead-lettered.
    pub dead_lettered: u64,
    /// Users waiting in the coalescer now.
    pub pending_users: u64,
}

fn lane_index(lane: Lane) -> usize {
    match lane {
        Lane::Live => 0,
        Lane::Bulk => 1,
    }
}

/// A reading of the progress counters (totals since start, and the pending
/// users and queue backlog now).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Progress {
    /// Users kicked.
    pub kicked: u64,
    /// Users with nothing to do (room gone, not in the room).
    pub nothing_to_do: u64,
    /// Users scheduled for a retry (an attempt failed).
    pub retried: u64,
    /// Users handed back while their AppId was halted (no attempt of
    /// theirs failed: a halt is not a retry).
    pub deferred: u64,
    /// Users dead-lettered.
    pub dead_lettered: u64,
    /// Messages dead-lettered whole before any call (invalid, expired, of no
    /// app served).
    pub unusable: u64,
    /// Users skipped because the ledger shows them done for their job id.
    pub skipped: u64,
    /// API calls answered.
    pub calls: u64,
    /// Users waiting in the coalescer now.
    pub pending_users: u64,
    /// Messages ready in the live queues at the last check.
    pub queue_ready: u64,
    /// Messages ready in the bulk queues at the last check.
    pub bulk_ready: u64,
    /// Live deliveries this worker holds unacked now.
    pub live_unacked: u64,
    /// Bulk deliveries this worker holds unacked now.
    pub bulk_unacked: u64,
}

impl Progress {
    /// What happened between `earlier` and `self` (totals subtracted; the
    /// gauges are `self`'s).
    pub(crate) fn since(&self, earlier: &Progress) -> Progress {
        Progress {
            kicked: self.kicked - earlier.kicked,
            nothing_to_do: self.nothing_to_do - earlier.nothing_to_do,
            retried: self.retried - earlier.retried,
            deferred: self.deferred - earlier.deferred,
            dead_lettered: self.dead_lettered - earlier.dead_lettered,
            unusable: self.unusable - earlier.unusable,
            skipped: self.skipped - earlier.skipped,
            calls: self.calls - earlier.calls,
            pending_users: self.pending_users,
            queue_ready: self.queue_ready,
            bulk_ready: self.bulk_ready,
            live_unacked: self.live_unacked,
            bulk_unacked: self.bulk_unacked,
        }
    }

    /// Whether there is anything to report: work done, or work waiting.
    pub(crate) fn busy(&self) -> bool {
        self.kicked
            + self.nothing_to_do
            + self.retried
            + self.deferred
            + self.dead_lettered
            + self.unusable
            + self.skipped
            + self.calls
            + self.pending_users
            + self.queue_ready
            + self.bulk_ready
            > 0
    }
}

impl Health {
    /// What the worker is doing now: the coalescer and the dispatcher report
    /// to it; `/status` and the console read it.
    pub(crate) fn live(&self) -> &live::Live {
        &self.live
    }

    /// A fresh state for a worker using `gate`, serving the default shard.
    #[cfg(test)]
    pub(crate) fn new(gate: Gate, ledger_on: bool) -> Self {
        Self::for_shards(gate, ledger_on, &[crate::config::shards::DEFAULT_SHARD])
    }

    /// A fresh state for a worker using `gate`, serving `shards`.
    pub(crate) fn for_shards(gate: Gate, ledger_on: bool, shards: &[&str]) -> Self {
        Self {
            ledger: AtomicU8::new(if ledger_on { LEDGER_DOWN } else { LEDGER_OFF }),
            live: live::Live::default(),
            shards: shards
                .iter()
                .map(|name| {
                    Arc::new(ShardState {
                        name: (*name).to_owned(),
                        ..ShardState::default()
                    })
                })
                .collect(),
            progress: Counts::default(),
            gate,
        }
    }

    /// The state of a served shard (`None` if this worker does not serve it).
    pub(crate) fn shard(&self, name: &str) -> Option<Arc<ShardState>> {
        self.shards.iter().find(|s| s.name == name).cloned()
    }

    /// Whether no shard is active and every one waits for its lock.
    pub(crate) fn is_standby(&self) -> bool {
        self.shards.iter().all(|s| s.is_standby())
    }

    /// Users reached an outcome (the router's labels: `kicked`,
    /// `nothing_to_do`, `retry_scheduled`, `deferred`, `dead_lettered`,
    /// `skipped`).
    pub(crate) fn count_users(&self, lane: Lane, outcome: &str, n: u64) {
        let c = &self.progress;
        let by_lane = &c.lanes[lane_index(lane)];
        match outcome {
            "kicked" => by_lane.kicked.fetch_add(n, Ordering::Relaxed),
            "dead_lettered" => by_lane.dead_lettered.fetch_add(n, Ordering::Relaxed),
            _ => 0,
        };
        let counter = match outcome {
            "kicked" => &c.kicked,
            "nothing_to_do" => &c.nothing_to_do,
            "retry_scheduled" => &c.retried,
            "deferred" => &c.deferred,
            "dead_lettered" => &c.dead_lettered,
            "skipped" => &c.skipped,
            _ => return,
        };
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Messages were dead-lettered whole, before any call (invalid,
    /// expired, of no app this worker serves).
    pub(crate) fn count_unusable(&self, n: u64) {
        self.progress.unusable.fetch_add(n, Ordering::Relaxed);
    }

    /// API calls were answered.
    pub(crate) fn count_calls(&self, n: u64) {
        self.progress.calls.fetch_add(n, Ordering::Relaxed);
    }

    /// Users waiting in the coalescer now, in the live and the bulk lane.
    pub(crate) fn set_pending_users(&self, live: usize, bulk: usize) {
        let c = &self.progress;
        c.pending_users.store((live + bulk) as u64, Ordering::Relaxed);
        c.lanes[0].pending_users.store(live as u64, Ordering::Relaxed);
        c.lanes[1].pending_users.store(bulk as u64, Ordering::Relaxed);
    }

    /// A lane's users kicked and dead-lettered since start, and waiting now.
    pub(crate) fn lane_progress(&self, lane: Lane) -> LaneProgress {
        let c = &self.progress.lanes[lane_index(lane)];
        LaneProgress {
            kicked: c.kicked.load(Ordering::Relaxed),
            dead_lettered: c.dead_lettered.load(Ordering::Relaxed),
            pending_users: c.pending_users.load(Ordering::Relaxed),
        }
    }

    /// Deliveries of `lane` this worker holds unacked now, over its shards.
    pub(crate) fn unacked_of(&self, lane: Lane) -> u64 {
        self.shards
            .iter()
            .map(|s| s.unacked[lane_index(lane)].load(Ordering::Relaxed))
            .sum()
    }

    /// The progress counters now.
    pub(crate) fn progress(&self) -> Progress {
        let c = &self.progress;
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Progress {
            kicked: r(&c.kicked),
            nothing_to_do: r(&c.nothing_to_do),
            retried: r(&c.retried),
            deferred: r(&c.deferred),
            dead_lettered: r(&c.dead_lettered),
            unusable: r(&c.unusable),
            skipped: r(&c.skipped),
            calls: r(&c.calls),
            pending_users: r(&c.pending_users),
            queue_ready: self.shards.iter().map(|s| r(&s.queue_ready)).sum(),
            bulk_ready: self.shards.iter().map(|s| r(&s.bulk_ready)).sum(),
            live_unacked: self.shards.iter().map(|s| r(&s.unacked[0])).sum(),
            bulk_unacked: self.shards.iter().map(|s| r(&s.unacked[1])).sum(),
        }
    }

    /// The gate this state reports on.
    pub(crate) fn gate(&self) -> &Gate {
        &self.gate
    }

    /// Deliveries taken and not yet finished, over every shard.
    pub(crate) fn in_flight(&self) -> usize {
        self.shards.iter().map(|s| s.in_flight()).sum()
    }

    /// The last ledger operation succeeded (or not). Ignored when the ledger is off.
    pub(crate) fn set_ledger_ok(&self, ok: bool) {
        if self.ledger.load(Ordering::Relaxed) != LEDGER_OFF {
            self.ledger
                .store(if ok { LEDGER_OK } else { LEDGER_DOWN }, Ordering::Relaxed);
        }
    }

    /// The ledger is on and its last write failed: new calls must wait, since
    /// Every reason the worker cannot serve (`/readyz` fails): a shard not
    /// connected, or neither consuming nor standing by. Empty when ready.
    pub(crate) fn not_ready(&self) -> Vec<String> {
        let mut why = Vec::new();
        let named = self.shards.len() > 1
            || self
                .shards
                .iter()
                .any(|s| s.name != crate::config::shards::DEFAULT_SHARD);
        for s in &self.shards {
            let of = if named {
                format!(" (shard {})", s.name)
            } else {
                String::new()
            };
            if !s.is_connected() {
                why.push(format!("broker: not connected{of}"));
            }
            if !s.is_consuming() && !s.is_standby() {
                why.push(format!("consumer: not consuming{of}"));
            }
        }
        why
    }

    /// What keeps this worker from kicking though it can serve: halted
    /// AppIds and an unreachable ledger. Not readiness (`/readyz` stays 200):
    /// taking the process out of service would close its HTTP intake and
    /// console just when operators need them, and fix nothing; `/status`,
    /// the metrics and the alert rules report these.
    pub(crate) fn degraded(&self) -> Vec<String> {
        let mut why = Vec::new();
        for (app, halt) in self.gate.halted_apps() {
            why.push(format!(
                "halted: AppId {app} answered code {} ({}); probing",
                halt.code,
                crate::zego::codes::describe(halt.code)
            ));
        }
        if self.ledger.load(Ordering::Relaxed) == LEDGER_DOWN {
            why.push("ledger: PostgreSQL unreachable".to_owned());
        }
        why
    }
}

impl Health {
    /// Whether every shard's broker connection is up.
    pub(crate) fn is_connected(&self) -> bool {
        self.shards.iter().all(|s| s.is_connected())
    }

    /// Whether some shard is active (holds its lock and consumes).
    pub(crate) fn is_consuming(&self) -> bool {
        self.shards.iter().any(|s| s.is_consuming())
    }

    /// What `/status` returns: this worker's role, apps, halts, backlog and calls.
    pub(crate) fn status(&self) -> WorkerStatus {
        let now = tokio::time::Instant::now();
        let wall = chrono::Utc::now();
        let m = self.live.snapshot();
        WorkerStatus {
            version: crate::VERSION.to_owned(),
            role: role(self.is_standby(), self.is_consuming()),
            connected: self.is_connected(),
            apps: self.gate.app_ids(),
            halted: self
                .gate
                .halted_apps()
                .into_iter()
                .map(|(app_id, h)| {
                    let age = now.saturating_duration_since(h.since);
                    HaltStatus {
                        app_id,
                        code: h.code,
                        meaning: crate::zego::codes::describe(h.code).to_owned(),
                        since: (wall - chrono::Duration::from_std(age).unwrap_or_default())
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        for_secs: age.as_secs(),
                    }
                })
                .collect(),
            pending_users: m.pending_users,
            pending_groups: m.pending_groups,
            calls_in_flight: m.calls_in_flight,
            deliveries_in_flight: self.in_flight(),
            live_unacked: self.unacked_of(Lane::Live),
            bulk_unacked: self.unacked_of(Lane::Bulk),
            calls_per_sec: m.calls_per_sec,
            not_ready: self.not_ready(),
            degraded: self.degraded(),
            shards: self
                .shards
                .iter()
                .map(|s| ShardStatus {
                    shard: s.name.clone(),
                    role: s.role(),
                    connected: s.is_connected(),
                })
                .collect(),
        }
    }
}

/// A worker's role in its namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Role {
    /// Holds the leadership lease and consumes.
    Active,
    /// Waits for the leadership lease.
    Standby,
    /// Neither yet (connecting, declaring, or between sessions).
    Connecting,
}

impl Role {
    /// The JSON and table label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::Active => "active",
            Role::Standby => "standby",
            Role::Connecting => "connecting",
        }
    }
}

/// The role from the standby and consuming flags.
pub(crate) fn role(standby: bool, consuming: bool) -> Role {
    match (standby, consuming) {
        (true, _) => Role::Standby,
        (false, true) => Role::Active,
        (false, false) => Role::Connecting,
    }
}

/// One halted AppId in `/status`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct HaltStatus {
    /// The AppId.
    pub app_id: u32,
    /// The API code that halted it.
    pub code: i64,
    /// What the code means.
    pub meaning: String,
    /// When the halt began, RFC 3339 (UTC, whole seconds).
    pub since: String,
    /// Seconds since then.
    pub for_secs: u64,
}

/// The JSON body of `/status` (documented in the README; fields are only
/// ever added).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct WorkerStatus {
    /// `kickq --version`'s text: `0.1.0 (abc1234)`.
    pub version: String,
    /// Active, standby or connecting.
    pub role: Role,
    /// Whether the broker connection is up.
    pub connected: bool,
    /// AppIds this worker has a budget for (called or held since start).
    pub apps: Vec<u32>,
    /// Halted AppIds.
    pub halted: Vec<HaltStatus>,
    /// Users waiting in the coalescer.
    pub pending_users: usize,
    /// Groups waiting in the coalescer.
    pub pending_groups: usize,
    /// Calls sent and not yet answered.
    pub calls_in_flight: i64,
    /// Deliveries taken and not yet acked or returned.
    pub deliveries_in_flight: usize,
    /// Live-lane deliveries this worker holds unacked now (the broker's
    /// unacked count of `{ns}.requests` that is this worker's).
    #[serde(default)]
    pub live_unacked: u64,
    /// Bulk-lane deliveries this worker holds unacked now.
    #[serde(default)]
    pub bulk_unacked: u64,
    /// API calls per second over the last minute.
    pub calls_per_sec: f64,
    /// Every reason `/readyz` fails; empty when ready.
    pub not_ready: Vec<String>,
    /// What keeps it from kicking while ready: halts, the ledger.
    #[serde(default)]
    pub degraded: Vec<String>,
    /// Each served shard's role (`role` above is `active` when any shard is).
    #[serde(default)]
    pub shards: Vec<ShardStatus>,
}

/// One served shard in `/status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ShardStatus {
    /// The shard (`default` for apps without one).
    pub shard: String,
    /// Active, standby or connecting, for this shard.
    pub role: Role,
    /// Whether this shard's broker connection is up.
    pub connected: bool,
}

#[derive(Clone)]
struct AppState {
    health: Arc<Health>,
    metrics: PrometheusHandle,
}

/// The router: `/metrics`, `/healthz`, `/readyz`, `/status`.
pub(crate) fn router(health: Arc<Health>, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route(
            "/status",
            get(|State(s): State<AppState>| async move { Json(s.health.status()) }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AppState { health, metrics })
}

async fn render_metrics(State(s): State<AppState>) -> String {
    crate::metrics::halted_apps(s.health.gate.halted_apps().len());
    s.metrics.render()
}

async fn readyz(State(s): State<AppState>) -> (StatusCode, String) {
    let why = s.health.not_ready();
    if why.is_empty() {
        (StatusCode::OK, "ready\n".into())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, why.join("\n") + "\n")
    }
}

/// Binds the server; returns the bound address and the future that serves
/// until `shutdown` completes.
pub(crate) async fn bind(
    addr: SocketAddr,
    health: Arc<Health>,
    metrics: PrometheusHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, impl Future<Output = std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = router(health, metrics);
    Ok((local, async move {
        crate::serve::serve(listener, app, crate::serve::Bounds::default(), "metrics", shutdown).await
    }))
}

mod live;
pub(crate) use live::Live;

#[cfg(test)]
mod tests;
