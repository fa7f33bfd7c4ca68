//! kickq drains "kick these users from this room" jobs from RabbitMQ and calls
//! ZEGOCLOUD's KickoutUser API for them: coalesced into calls of at most five
//! users, paced by a per-AppId rate limit, routed by the API's return code, and
//! never lost.
//!
//! Producers written in Rust enqueue jobs with [`producer::Producer`] (see its
//! module for a runnable example); everyone else publishes the JSON job message
//! described in the README.
//!
//! # Layout
//!
//! ```text
//! secret.rs      the credential wrapper whose Debug prints [redacted]
//! config.rs      shared settings, validated into types
//! job.rs         KickRequest and its validation (worker, enqueue, producer API)
//! producer.rs    the producer API: connect, declare, enqueue confirmed jobs
//! bulk/          kickq enqueue --file: parse (csv crate, header by name), validate, group, publish in
//!                order, checkpoint for --resume
//! dlq/           kickq dlq: read, filter, show, replay and purge dead letters
//! stage.rs       the messages that flow between stages
//! amqp/          connect, topology, lock (leadership on the broker), intake, publish (confirms),
//!                delivery handle, headers
//! leadership.rs  the leadership record and the takeover hold: how long a new active worker waits
//! coalesce/      pure grouping state and policy; driver.rs is its async loop
//! ratelimit.rs   per-AppId sliding-window budget, slow-down, halt, chunk size
//! dispatch.rs    runs calls, splits on 50002, shrinks on 50011, feeds the gate
//! zego/          signature, HTTP client, return-code classifier
//! outcome/       the router: the only place that acks; book.rs, plan.rs
//! ledger.rs      the PostgreSQL audit ledger, one function per statement
//! metrics.rs     every metric name and label
//! table.rs       aligned plain-text tables for operator commands
//! health.rs      readiness state and the /metrics, /healthz, /readyz, /status server
//! worker.rs      composition root of `kickq run`: channels, sessions, shutdown
//! mock_zego/     the strict stand-in for the real API
//! bench/         `kickq bench`: scenarios, the naive baseline, figures and targets
//! cli/           one file per subcommand (check, status, completions and man page too), the
//!                confirmation rule and signals
//! ```

/// The commit this build was made from (`git rev-parse --short HEAD`, or the
/// `KICKQ_GIT_SHA` build argument), `unknown` when neither was available.
pub const GIT_SHA: &str = env!("KICKQ_GIT_SHA");
/// What `kickq --version` prints after the name: `0.1.0 (abc1234)`.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("KICKQ_GIT_SHA"), ")");

pub mod amqp;
pub mod bench;
pub mod bulk;
pub mod cli;
pub mod coalesce;
pub mod config;
pub mod dlq;
pub mod health;
pub mod job;
pub mod leadership;
pub mod ledger;
pub mod metrics;
pub mod mock_zego;
pub mod outcome;
pub mod pipeline;
pub mod producer;
pub mod ratelimit;
pub mod secret;
pub mod table;
pub mod worker;
pub mod zego;
