//! kickq drains "kick these users from this room" jobs from RabbitMQ and calls
//! ZEGOCLOUD's KickoutUser API for them: coalesced into calls of at most five
//! users, paced by a per-AppId rate limit, routed by the API's return code, and
//! never lost.
//!
//! Producers written in Rust enqueue jobs with [`producer::Producer`] (see its
//! module for a runnable example); everyone else publishes the JSON job message
//! described in the README.
//!
//! # Public API
//!
//! [`producer`] (enqueue jobs: [`producer::Producer`], [`job::KickRequest`]),
//! [`worker`] (`kickq run` as a library call), [`zego`] (the signed client and
//! the return-code table, usable on their own), [`mock_zego`] (the strict
//! stand-in, for your own tests), [`config`], [`job`] (the job message and its
//! rules) and [`secret`]. Everything else is private to the crate; the binary
//! is [`cli::main`].
//!
//! # Layout
//!
//! ```text
//! main.rs        the binary: calls cli::main, nothing else
//! lib.rs         the public API and this map
//! job.rs         KickRequest and its validation (worker, enqueue, producer API)
//! config/        shared settings validated into types: mod.rs, file.rs (the config file), apps.rs (the apps served),
//!                shards.rs (which shard serves each app, routing keys, where a misrouted job belongs)
//! secret.rs      the credential wrapper whose Debug prints [redacted]
//! zego/          sign, client, clients (one per AppId), codes: the vendor API, usable on its own
//! worker.rs      `kickq run` as a library call: WorkerConfig, the run loop (one session loop per shard), reconnects
//! pipeline/      one broker session of one shard of `kickq run`, a file per stage in flow order:
//!   mod.rs         composition root: connections, channels, stage tasks, supervision, stop
//!   lock.rs        take the leadership lease (standby until then), the takeover hold, renew it, release last
//!   intake.rs      deliveries of each lane -> JobIn (decode, validate, select the app, expire, ledger skip);
//!                  another shard's job -> the router, to forward
//!   coalescer.rs   the async loop around two coalesce::Coalescers (live first, then bulk); expires, spends tokens
//!   slots.rs       call slots per app, handed to each call
//!   dispatch.rs    chunks -> calls; reports each result to the gate
//!   router.rs      outcomes -> acks, retries, dead letters, forwards, ledger rows, events (the only place that acks)
//!   stage.rs       the messages between stages, and the ledger backpressure signal
//!   monitor.rs     queue watchdog and progress line
//! coalesce.rs    the pure Coalescer: groups, dedupe, which chunk next; no async, no metrics
//! outcome/       the router's pure decisions: plan.rs (per user), book.rs (per delivery), event.rs (outcome events)
//! ratelimit/     the per-AppId gate: window, spacing, slow-down, halt, chunk size; report/plan/take
//! leadership.rs  the leadership lease (its rules and their proof), the record, and the pure takeover hold
//! amqp/          transport only: connect (a node list), topology (shards, the jobs exchange), lock (the lease, the dlq pass lock), publish with
//!                confirms, delivery, headers, version (the broker's, and its known issues)
//! ledger/        mod.rs (handle, pool, migrations), error.rs, rows.rs, write.rs, read.rs, prune.rs, tests.rs
//! producer.rs    the producer API: connect, declare, enqueue confirmed jobs with stable ids
//! bulk/          kickq enqueue --file: parse, validate, group, publish in order, checkpoint
//! dlq/           kickq dlq: pass lock, read, filter, show, replay and purge dead letters
//! mock_zego/     the strict stand-in for the real API
//! bench/         `kickq bench` (the `bench` feature, on by default): scenarios, the naive baseline, figures and targets
//! access/        who may use the HTTP doors: tokens.rs (token files: named tokens, strength, constant-time checks),
//!                throttle.rs (failed authentications per client address); used by the intake and the console
//! http_intake/   `kickq run`'s POST /v1/kicks: mod.rs (settings, listener), limit.rs
//!                (per-token rate cap), batch.rs (the body's jobs), idempotency.rs (keys: ledger or memory),
//!                publisher.rs (its own confirmed broker connection), handler.rs (the endpoint)
//! console/       `kickq run`'s web console (KICKQ_CONSOLE_ADDR): mod.rs (settings, routes, the auth gate), auth.rs
//!                (tokens, sessions, CSRF), source.rs (what pages read: health, gate, broker, dlq passes, ledger),
//!                fleet.rs (workers from the management API), chart.rs (inline SVG), layout.rs, login.rs, one file
//!                per page (overview.rs, dead.rs, history.rs, workers.rs), assets/ (style.css, vendored htmx)
//! health.rs      what the worker reports (read only; each shard's role) and the /metrics, /healthz, /readyz, /status server
//! serve.rs       serving the HTTP listeners (health, intake, console): header, idle and body timeouts, a connection cap
//! metrics.rs     every metric name and label
//! table.rs       aligned plain-text tables for operator commands
//! cli/           main (parse, logging, exit codes), one file per subcommand, settings.rs (the config file as clap
//!                defaults), print_config.rs, confirmation, signals
//! ```

/// The commit this build was made from (`git rev-parse --short HEAD`, or the
/// `KICKQ_GIT_SHA` build argument), `unknown` when neither was available.
pub const GIT_SHA: &str = env!("KICKQ_GIT_SHA");
/// What `kickq --version` prints after the name: `0.1.0 (abc1234)`.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("KICKQ_GIT_SHA"), ")");

pub mod cli;
pub use kickq_producer::{job, producer, secret};
pub mod config;
pub mod mock_zego;
pub mod worker;
pub mod zego;

pub(crate) mod access;
pub(crate) mod amqp;
#[cfg(feature = "bench")]
pub(crate) mod bench;
pub(crate) mod bulk;
pub(crate) mod coalesce;
pub(crate) mod console;
pub(crate) mod dlq;
pub(crate) mod health;
pub(crate) mod http_intake;
pub(crate) mod leadership;
pub(crate) mod ledger;
pub(crate) mod metrics;
pub(crate) mod outcome;
pub(crate) mod pipeline;
pub(crate) mod ratelimit;
pub(crate) mod serve;
pub(crate) mod table;

/// Internals the integration tests in `tests/` reach for (queue names and
/// headers, the ledger, the bench, metric names). Not part of the API: it
/// may change in any release.
#[doc(hidden)]
pub mod testkit {
    pub use crate::amqp::{headers, publish, topology};
    pub use crate::bulk::group::group_job_id;
    pub use crate::coalesce::Reason;
    pub use crate::health::DEFAULT_METRICS_ADDR;
    /// The benchmark, for its smoke test.
    #[cfg(feature = "bench")]
    pub mod bench {
        pub use crate::bench::*;
    }
    /// The ledger, for tests that read it back, and its SQL for the tests
    /// of the ledger itself against PostgreSQL (`tests/it/ledger_store.rs`).
    pub mod ledger {
        pub use crate::ledger::error::sqlstate_unavailable;
        pub use crate::ledger::prune::earliest_cutoff;
        pub use crate::ledger::read::{history_sql, DONE_USERS_BATCH_SQL, DONE_USERS_SQL};
        pub use crate::ledger::write::{pg_interval, pg_text};
        pub use crate::ledger::*;
    }
    /// The API client's limits, for the ledger's tests.
    pub use crate::zego::client::MAX_REQUEST_ID_BYTES;
    /// Metric names and recorders, checked against the dashboard.
    pub mod metrics {
        pub use crate::metrics::*;
    }
}
