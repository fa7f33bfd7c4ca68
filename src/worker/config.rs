//! The worker's settings, validated: [`WorkerConfig`], its defaults, and what each shard's sessions get of it.

use super::error::WorkerError;
use crate::amqp::topology::Names;
use crate::config::apps::{AppConfig, Apps};
use crate::config::shards::{Routing, ShardName};
use crate::config::Credentials;
use crate::console::ConsoleConfig;
use crate::http_intake::IntakeConfig;
use crate::job::Limits;
use crate::outcome::plan::Budget;
use crate::pipeline::coalescer::CoalescerConfig;
use crate::pipeline::SessionConfig;
use crate::secret::Secret;
use crate::zego::client::ZegoClient;
use crate::zego::clients::Clients;
use std::net::SocketAddr;
use std::time::Duration;

/// Default unacked messages the broker may push to this worker. Coalescing
/// can only fold users it can see: on a shuffled sweep over 1,000 rooms a
/// window of 20,000 one-user messages gives calls within 1% of the minimum,
/// where 10,000 gives 10% more calls. Memory is about prefetch x message size.
pub const DEFAULT_PREFETCH: u16 = 20_000;
/// Default unacked bulk messages. A sweep of one-user messages over many
/// rooms still fills calls of five from a window this size, and a window of
/// `kickq enqueue --file` messages (100 users of one room each) is 100,000
/// users: 400 s of calls at 50/s, far from the broker's 30-minute consumer
/// timeout (see [`WorkerConfig::effective_bulk_prefetch`]).
pub const DEFAULT_BULK_PREFETCH: u16 = 1_000;
/// Users per message the bulk window is sized for: what `kickq enqueue
/// --file` writes by default.
pub const BULK_SIZED_FOR_USERS: usize = 100;
/// Most work a full bulk window may hold, at the slowest app's rate with five
/// users a call, for messages of [`BULK_SIZED_FOR_USERS`]: a third of the
/// broker's 30-minute consumer timeout, so no bulk delivery nears it even
/// while live traffic takes some of the tokens.
pub const BULK_WINDOW_WORK: Duration = Duration::from_secs(600);
/// Outcome events are off by default: a deployment that does not consume
/// them publishes nothing more, and declares no exchange.
pub const DEFAULT_EVENTS: bool = false;
/// Everything `kickq run` needs, validated.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Broker URL (holds the password, hence a secret).
    pub amqp_url: Secret,
    /// Connection name shown by the broker.
    pub connection_name: String,
    /// The apps served: each AppId's secret, rate and API host, and the
    /// default app of jobs that name none.
    pub apps: Apps,
    /// Queue names.
    pub names: Names,
    /// Unacked live messages the broker may push.
    pub prefetch: u16,
    /// Unacked bulk messages the broker may push (bounded further by
    /// [`WorkerConfig::effective_bulk_prefetch`]).
    pub bulk_prefetch: u16,
    /// Deliveries before the broker dead-letters a message as poison.
    pub delivery_limit: u32,
    /// Validation limits.
    pub limits: Limits,
    /// Coalescer timings.
    pub coalescer: CoalescerConfig,
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
    /// Where the rate window counts an answered call from (the default,
    /// [`crate::ratelimit::Counting::Arrival`]: its estimated arrival at the
    /// gateway; the bench's baseline counts from the answer).
    pub rate_counting: crate::ratelimit::Counting,
    /// PostgreSQL URL; `None` runs without a ledger.
    pub database_url: Option<Secret>,
    /// How long the ledger's record of a done (job id, room, user) makes a
    /// redelivery of it a skip (`KICKQ_DEDUPE_WINDOW`).
    pub dedupe_window: Duration,
    /// Metrics and health server address; `None` turns it off.
    pub metrics_addr: Option<SocketAddr>,
    /// Publish one outcome event per finished delivery to `<ns>.events`,
    /// confirmed before its ack (`KICKQ_EVENTS`).
    pub events: bool,
    /// The HTTP intake (`POST /v1/kicks`); `None` (the default) turns it off.
    pub http_intake: Option<IntakeConfig>,
    /// The web console (`KICKQ_CONSOLE_ADDR`); `None` (the default) turns it off.
    pub console: Option<ConsoleConfig>,
    /// Which shard serves each app of the whole deployment, including apps
    /// of shards this worker does not serve (the config file's `[[apps]]`);
    /// `None`: the apps above are the whole deployment.
    pub routing: Option<Routing>,
}

impl WorkerConfig {
    /// The worker of `credentials`' AppId (its only app, so also the default)
    /// on the queues `names` of the broker at `amqp_url`, with every other
    /// setting at `kickq run`'s default: ZEGOCLOUD's production API at the
    /// documented rate, no ledger, no metrics server. Add apps with
    /// [`WorkerConfig::with_app`]. Change the rest with the `with_*` setters or struct
    /// update syntax (`WorkerConfig { prefetch: 100, ..WorkerConfig::new(..) }`).
    pub fn new(amqp_url: Secret, names: Names, credentials: Credentials) -> Self {
        Self::for_apps(amqp_url, names, Apps::single(AppConfig::new(credentials)))
    }

    /// [`WorkerConfig::new`] for validated apps (the config file's `[[apps]]`).
    pub fn for_apps(amqp_url: Secret, names: Names, apps: Apps) -> Self {
        Self {
            amqp_url,
            connection_name: format!("kickq-worker-{}", std::process::id()),
            apps,
            names,
            prefetch: DEFAULT_PREFETCH,
            bulk_prefetch: DEFAULT_BULK_PREFETCH,
            delivery_limit: crate::amqp::topology::DEFAULT_DELIVERY_LIMIT,
            limits: Limits::default(),
            coalescer: CoalescerConfig::default(),
            budget: Budget::default(),
            max_in_flight: crate::pipeline::dispatch::DEFAULT_MAX_IN_FLIGHT,
            probe_interval: crate::ratelimit::DEFAULT_PROBE_INTERVAL,
            halt_log_interval: crate::pipeline::dispatch::DEFAULT_HALT_LOG_INTERVAL,
            connect_timeout: crate::zego::client::DEFAULT_CONNECT_TIMEOUT,
            http_timeout: crate::zego::client::DEFAULT_HTTP_TIMEOUT,
            rate_counting: crate::ratelimit::Counting::default(),
            database_url: None,
            dedupe_window: crate::ledger::DEFAULT_DEDUPE_WINDOW,
            metrics_addr: None,
            events: DEFAULT_EVENTS,
            http_intake: None,
            console: None,
            routing: None,
        }
    }

    /// Which shard serves each app of the deployment.
    pub fn routing(&self) -> Routing {
        self.routing.clone().unwrap_or_else(|| self.apps.routing())
    }

    /// The shards this worker serves: those of its apps.
    pub fn shards(&self) -> Vec<ShardName> {
        self.apps.shards()
    }

    /// The settings of one shard's sessions: its queue names, its apps, and
    /// connections named `<name>-<shard>` (the default shard's keep the
    /// worker's name).
    pub(super) fn session(&self, shard: &ShardName) -> SessionConfig {
        let mut apps = self.apps.clone();
        if let Some(mut of_shard) = self.apps.of_shard(shard) {
            // The deployment's default app, wherever it is served: a shard's
            // one app is not the default just for being alone there.
            of_shard.keep_default(self.routing().default_app());
            apps = of_shard;
        }
        let connection_name = if shard.is_default() {
            self.connection_name.clone()
        } else {
            format!("{}-{shard}", self.connection_name)
        };
        SessionConfig {
            amqp_url: self.amqp_url.clone(),
            connection_name,
            names: self.names.for_shard(shard),
            prefetch: self.prefetch,
            bulk_prefetch: self.effective_bulk_prefetch(),
            delivery_limit: self.delivery_limit,
            limits: self.limits,
            coalescer: self.coalescer,
            budget: self.budget,
            max_in_flight: self.max_in_flight,
            probe_interval: self.probe_interval,
            halt_log_interval: self.halt_log_interval,
            events: self.events,
            apps,
        }
    }

    /// One API client per app, built as the run builds them (`--print-config`
    /// builds them too, to validate each `api_url`).
    pub fn clients(&self) -> Result<Clients, WorkerError> {
        let mut clients = Clients::default();
        for app in self.apps.iter() {
            let client = ZegoClient::new(app.client_config(self.connect_timeout, self.http_timeout))
                .map_err(|e| WorkerError::Client(format!("app {}: {e}", app.app_id())))?;
            clients.insert(client);
        }
        Ok(clients)
    }

    /// The bulk prefetch in use: `bulk_prefetch`, lowered so that a full
    /// window of messages of [`BULK_SIZED_FOR_USERS`] users (or fewer, if
    /// `KICKQ_MAX_USERS_PER_MESSAGE` is lower) is at most
    /// [`BULK_WINDOW_WORK`] of calls at the slowest app's rate.
    pub fn effective_bulk_prefetch(&self) -> u16 {
        let per_message = BULK_SIZED_FOR_USERS.min(self.limits.max_users_per_message.max(1));
        let messages = (self.users_in(BULK_WINDOW_WORK) / per_message).clamp(1, u16::MAX as usize);
        self.bulk_prefetch.min(messages as u16).max(1)
    }

    /// Users the slowest app kicks in `d` at full rate, five a call.
    fn users_in(&self, d: Duration) -> usize {
        let rate = self
            .apps
            .iter()
            .map(|a| a.rate)
            .min()
            .unwrap_or(crate::config::DEFAULT_RATE);
        d.as_secs() as usize * rate as usize * crate::zego::MAX_USERS_PER_CALL
    }

    /// Every app's calls go to this base URL (a regional host, or a mock-zego).
    pub fn with_api_url(mut self, api_url: impl Into<String>) -> Self {
        let api_url = api_url.into();
        self.apps.iter_mut().for_each(|a| a.api_url = api_url.clone());
        self
    }

    /// Calls per second for every app.
    pub fn with_rate(mut self, rate: u32) -> Self {
        self.apps.iter_mut().for_each(|a| a.rate = rate);
        self
    }

    /// Serves one more app (or replaces the one with its AppId).
    pub fn with_app(mut self, app: AppConfig) -> Self {
        self.apps.insert(app);
        self
    }

    /// The broker shows the worker's connections under this name.
    pub fn with_connection_name(mut self, name: impl Into<String>) -> Self {
        self.connection_name = name.into();
        self
    }

    /// Records every job, call and outcome in the ledger at this PostgreSQL URL.
    pub fn with_ledger(mut self, database_url: Secret) -> Self {
        self.database_url = Some(database_url);
        self
    }

    /// Publishes outcome events to `<ns>.events` (see the README's Outcome events).
    pub fn with_events(mut self, on: bool) -> Self {
        self.events = on;
        self
    }

    /// Serves the web console as `console` says.
    pub fn with_console(mut self, console: ConsoleConfig) -> Self {
        self.console = Some(console);
        self
    }

    /// Serves the HTTP intake (`POST /v1/kicks`) as `intake` says.
    pub fn with_http_intake(mut self, intake: IntakeConfig) -> Self {
        self.http_intake = Some(intake);
        self
    }

    /// Serves /metrics, /healthz, /readyz and /status on this address.
    pub fn with_metrics(mut self, addr: SocketAddr) -> Self {
        self.metrics_addr = Some(addr);
        self
    }
}
