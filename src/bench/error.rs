//! Why a bench scenario could not run to its end: `BenchError`.

/// Why a scenario could not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The broker refused or went away.
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    /// A publish was not confirmed.
    #[error("publish: {0}")]
    Publish(#[from] crate::amqp::publish::PublishError),
    /// The in-process mock could not start.
    #[error("mock-zego: {0}")]
    Mock(std::io::Error),
    /// The worker stopped with an error.
    #[error("worker: {0}")]
    Worker(#[from] crate::worker::WorkerError),
    /// The API client could not be built.
    #[error("client: {0}")]
    Client(#[from] crate::zego::client::ClientBuildError),
    /// PostgreSQL (the ledger run's database).
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The ledger could not be opened or migrated.
    #[error("ledger: {0}")]
    Ledger(#[from] crate::ledger::LedgerError),
    /// A child process or a file.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The file system's or process's error.
        source: std::io::Error,
    },
    /// A child process failed.
    #[error("{0}")]
    Child(String),
    /// Nothing happened for too long: the run is stuck.
    #[error("stalled: {0}")]
    Stalled(String),
    /// Something outside the run (e.g. another client closing broker
    /// connections) disturbed it: its figures would not stand.
    #[error("disturbed: {0}")]
    Disturbed(String),
    /// A task of the bench panicked or was cancelled.
    #[error("task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl BenchError {
    /// Whether running the scenario again may succeed: the broker connection
    /// was lost or closed under the run (a shared broker), or the run was
    /// disturbed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            BenchError::Broker(_) | BenchError::Publish(_) | BenchError::Disturbed(_)
        )
    }
}
