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
//! [`job`] (the job message and its rules) and [`secret`] come from the
//! `kickq-producer` crate (`crates/kickq-producer`), which a producer links
//! on its own: lapin and serde, none of the worker's dependencies. This
//! crate adds [`worker`] (`kickq run` as a library call), [`zego`] (the signed
//! client and the return-code table, usable on their own), [`mock_zego`]
//! (the strict stand-in, for your own tests) and [`config`]. Everything else
//! is private to the crate; the binary is [`cli::main`].
//!
//! # Layout
//!
//! Front ends (`cli/`, `console/`, `http_intake/`) sit over the services
//! (`dlq/`, `bulk/`, `ledger/`, the producer crate, `worker`) and never import
//! each other; the stages of `pipeline/` never import its composition root.
//! `tests/it/layout.rs` checks both, and this map against the tree.
//!
//! ```text
//! main.rs        the binary: calls cli::main, nothing else
//! lib.rs         the public API and this map
//! config/        shared settings validated into types: mod.rs, file.rs (the config file), apps.rs (the apps served);
//!                which shard serves each app is the producer crate's `shards`
//! zego/          sign, client, clients (one per AppId), codes: the vendor API, usable on its own (MAX_USERS_PER_CALL)
//! worker.rs      `kickq run` as a library call: the run loop (one session loop per shard), reconnects, the servers;
//! worker/        config.rs (WorkerConfig, its defaults, each shard's SessionConfig), error.rs (WorkerError), tests.rs
//! pipeline/      one broker session of one shard of `kickq run`, a file per stage in flow order:
//!   mod.rs         composition root: SessionConfig, connections, channels, stage tasks, supervision, stop
//!   lease.rs       take the leadership lease (standby until then), the takeover hold, renew it, release last
//!   intake.rs      deliveries of each lane -> JobIn (decode, validate, select the app, expire, ledger skip);
//!                  another shard's job -> the router, to forward
//!   coalescer.rs   the async loop around two coalesce::Coalescers (live first, then bulk); expires, spends tokens
//!   slots.rs       call slots per app, handed to each call
//!   dispatch.rs    chunks -> calls; reports each result to the gate
//!   router.rs      outcomes -> acks, retries, dead letters, forwards, ledger rows, events (the only place that acks);
//!                  router/message.rs builds its messages, event trails and ledger rows without I/O
//!   stage.rs       the messages between stages, the ledger backpressure signal, CLOSE_STEP
//!   monitor.rs     queue watchdog and progress line
//! coalesce.rs    the pure Coalescer: groups, dedupe, which chunk next; no async, no metrics (tests in coalesce/tests.rs)
//! outcome/       the router's pure decisions: plan.rs (per user), book.rs (per delivery), event.rs (outcome events)
//! ratelimit/     the per-AppId gate: mod.rs (the rule and its proof), budget.rs (one AppId, pure), gate.rs (all of them,
//!                report/plan/take), tests.rs, far_gateway_tests.rs
//! leadership.rs  the leadership lease (its rules and their proof), the record, and the pure takeover hold
//! amqp/          the worker's transport: lease (the leadership lease and the dlq pass lock's primitive), delivery, headers, version (the broker's,
//!                and its known issues); connect, publish and topology are the producer crate's
//! ledger/        handle.rs (Ledger: pool, connect, migrations), error.rs, rows.rs, write.rs, read.rs, prune.rs, idempotency.rs,
//!                query.rs (a history question in words: limits, --since, describe); its tests against PostgreSQL are
//!                tests/it/ledger_store.rs
//! bulk/          kickq enqueue --file: parse, validate, group, judge (the first pass), publish in order, checkpoint
//! dlq/           kickq dlq: pass_lock.rs (one pass at a time), read, filter, show, replay and purge dead letters; words.rs (what a pass says)
//! mock_zego/     the strict stand-in for the real API: config.rs (what it serves), engine.rs, server.rs, state.rs, ...
//! bench/         `kickq bench` (the `bench` feature, on by default): scenarios, the naive baseline, figures, targets,
//!                error.rs (BenchError)
//! access/        who may use the HTTP doors: tokens.rs (token files: named tokens, strength, constant-time checks),
//!                throttle.rs (failed authentications per client address); used by the intake and the console
//! http_intake/   `kickq run`'s POST /v1/kicks: mod.rs (settings, listener), limit.rs
//!                (per-token rate cap), batch.rs (the body's jobs), idempotency.rs (keys: ledger or memory),
//!                publisher.rs (its own confirmed broker connection), handler.rs (the endpoint)
//! console/       `kickq run`'s web console (KICKQ_CONSOLE_ADDR): mod.rs (settings, routes), state.rs (what handlers
//!                share, the Access extractor: the auth gate, form helpers), auth.rs
//!                (tokens, sessions, CSRF), source.rs (what pages read: health, gate, broker, dlq passes, ledger),
//!                fleet.rs (workers from the management API), chart.rs (inline SVG), layout.rs, login.rs, one file
//!                per page (overview.rs, dead.rs, history.rs, workers.rs), assets/ (style.css, vendored htmx)
//! health.rs      what the worker reports (read only; each shard's role) and the /metrics, /healthz, /readyz, /status
//!                server (tests in health/tests.rs)
//! serve.rs       serving the HTTP listeners (health, intake, console): header, idle and body timeouts, a connection cap
//! metrics.rs     every metric name and label
//! table.rs       aligned plain-text tables for operator commands, and the log writer that escapes ids
//! cli/           main (parse, logging, exit codes), one file per subcommand (enqueue/ holds its args and report),
//!                flags.rs (BrokerArgs, DatabaseArgs), settings.rs (the config file as clap defaults),
//!                print_config.rs, confirmation, signals (Interrupted, test hooks)
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
    pub use crate::amqp::headers;
    pub use crate::bulk::group::group_job_id;
    pub use crate::coalesce::Reason;
    pub use crate::health::DEFAULT_METRICS_ADDR;
    pub use kickq_producer::amqp::{publish, topology};
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
