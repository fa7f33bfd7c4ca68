//! The HTTP intake of `kickq run` (`POST /v1/kicks`, `GET /v1/openapi.json`): its settings, and the composition of
//! the token check, the rate cap, the idempotency keys and the confirmed publisher into one axum listener.
//!
//! Tokens and the throttle of failed authentications are `crate::access`'s;
//! here: `limit.rs` (per-token rate cap), `batch.rs`
//! (the body's jobs), `idempotency.rs` (keys: ledger or memory),
//! `publisher.rs` (its own broker connection), `handler.rs` (the endpoint).

mod batch;
mod handler;
mod idempotency;
mod limit;
mod publisher;

pub(crate) use crate::access::TokenError;
pub(crate) use idempotency::DEFAULT_MEMORY_KEYS;

use crate::ledger::Ledger;
use crate::producer::ProducerConfig;
use crate::secret::Secret;
use axum::routing::{get, post};
use axum::Router;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Largest body accepted, by default (`KICKQ_HTTP_INTAKE_MAX_BYTES`): a
/// job message's own cap, so one request holds at least one full job; a
/// batch of 1 MiB is thousands of jobs.
pub(crate) const DEFAULT_MAX_BYTES: usize = 1024 * 1024;
/// Requests a second each token may make, by default
/// (`KICKQ_HTTP_INTAKE_RATE`), with a burst of one second's worth. A batch
/// carries many jobs, so a well-behaved client needs few requests; the cap
/// stops a looping one from filling the queue.
pub(crate) const DEFAULT_RATE: u32 = 20;

/// The HTTP intake's settings (`KICKQ_HTTP_INTAKE_*`). Authentication is
/// always on: there is no intake without a token file.
#[derive(Debug, Clone)]
pub struct IntakeConfig {
    /// Where to listen (`KICKQ_HTTP_INTAKE_ADDR`).
    pub addr: SocketAddr,
    /// The bearer tokens, one a line (`KICKQ_HTTP_INTAKE_TOKEN_FILE`).
    pub token_file: PathBuf,
    /// Largest body (`KICKQ_HTTP_INTAKE_MAX_BYTES`, [`DEFAULT_MAX_BYTES`]).
    pub max_bytes: usize,
    /// Requests a second per token (`KICKQ_HTTP_INTAKE_RATE`, [`DEFAULT_RATE`]).
    pub rate: u32,
    /// Idempotency keys kept in memory when the ledger is off ([`DEFAULT_MEMORY_KEYS`]).
    pub memory_keys: usize,
    /// The listener's timeouts and connection cap (defaults:
    /// [`crate::worker::ListenerBounds::default`]).
    pub listener: crate::serve::Bounds,
}

impl IntakeConfig {
    /// The intake on `addr` with the tokens of `token_file`, every other setting at its default.
    pub fn new(addr: SocketAddr, token_file: impl Into<PathBuf>) -> IntakeConfig {
        IntakeConfig {
            addr,
            token_file: token_file.into(),
            max_bytes: DEFAULT_MAX_BYTES,
            rate: DEFAULT_RATE,
            memory_keys: DEFAULT_MEMORY_KEYS,
            listener: crate::serve::Bounds::default(),
        }
    }
}

/// Why the intake cannot start (the worker does not start either).
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The token file is missing, unreadable or empty.
    #[error("KICKQ_HTTP_INTAKE_TOKEN_FILE: {0}")]
    /// (Not a `source`: the message holds it already, so a chain of
    /// causes does not print it twice.)
    Tokens(TokenError),
    /// The address could not be bound.
    #[error("KICKQ_HTTP_INTAKE_ADDR: cannot listen on {addr}: {source}")]
    Bind {
        /// As configured.
        addr: SocketAddr,
        /// The operating system's refusal.
        source: std::io::Error,
    },
}

impl From<TokenError> for IntakeError {
    fn from(e: TokenError) -> Self {
        IntakeError::Tokens(e)
    }
}

/// Reads the tokens, binds the listener, and returns its address and the
/// server to spawn (it stops when `shutdown` resolves). The broker is not
/// touched until the first request; `database_url` (the ledger's) keeps the
/// idempotency keys, else they live in memory.
pub(crate) async fn bind(
    cfg: &IntakeConfig,
    amqp_url: Secret,
    producer: ProducerConfig,
    database_url: Option<&Secret>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, impl Future<Output = std::io::Result<()>>), IntakeError> {
    let tokens = crate::access::tokens::Tokens::load(&cfg.token_file)?;
    let namespace = producer.names.namespace.clone();
    let store = match database_url.map(|u| Ledger::connect(u.expose())) {
        Some(ledger) => match ledger.await {
            Ok(ledger) => idempotency::Store::Ledger { ledger, namespace },
            // An unparseable URL: the worker's own ledger open says so and stops.
            Err(_) => idempotency::Store::Memory(Mutex::new(idempotency::Memory::new(cfg.memory_keys))),
        },
        None => idempotency::Store::Memory(Mutex::new(idempotency::Memory::new(cfg.memory_keys))),
    };
    let intake = Arc::new(handler::Intake {
        tokens,
        limiter: limit::Limiter::new(cfg.rate),
        throttle: crate::access::throttle::Throttle::default(),
        store,
        limits: producer.limits,
        routing: producer.routing.clone(),
        publisher: publisher::IntakePublisher::new(amqp_url, producer),
        max_bytes: cfg.max_bytes,
        key_locks: (0..idempotency::KEY_LOCKS)
            .map(|_| tokio::sync::Mutex::new(()))
            .collect(),
    });
    let app = Router::new()
        .route("/v1/kicks", post(handler::post_kicks))
        .route("/v1/openapi.json", get(handler::openapi))
        // The handler enforces max_bytes itself, after authentication.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(intake);
    let listener = tokio::net::TcpListener::bind(cfg.addr)
        .await
        .map_err(|source| IntakeError::Bind { addr: cfg.addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| IntakeError::Bind { addr: cfg.addr, source })?;
    let bounds = cfg.listener;
    Ok((local, async move {
        crate::serve::serve(listener, app, bounds, "http intake", shutdown).await
    }))
}
