//! What stops the worker: `WorkerError`.

use crate::console::ConsoleError;
use crate::http_intake::IntakeError;
use crate::ledger::LedgerError;
use std::net::SocketAddr;

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
        /// `KICKQ_METRICS_ADDR` as configured.
        addr: SocketAddr,
        /// The operating system's refusal (address in use, no permission).
        source: std::io::Error,
    },
    /// The ledger failed for a reason that waiting will not fix (a bad
    /// DATABASE_URL, authentication, a missing table or permission, a
    /// constraint): the worker stops rather than hold every ack for ever.
    #[error("audit ledger: {0} (check DATABASE_URL, or run `kickq migrate`)")]
    Ledger(LedgerError),
    /// The HTTP intake cannot start (no usable token file, the address taken).
    #[error(transparent)]
    HttpIntake(#[from] IntakeError),
    /// The web console could not start.
    #[error(transparent)]
    Console(#[from] ConsoleError),
}
