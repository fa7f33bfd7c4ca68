//! Why a ledger call failed, classified: unavailable (wait and retry) or permanent (stop and say what to fix).

use sqlx::migrate::MigrateError;

/// Why a ledger call failed. `Display` never includes the database URL, so it
/// can be logged and printed as is.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// PostgreSQL cannot be reached or refuses work for now: connect or I/O
    /// failure, pool timeout, server shutdown, too many connections, disk full,
    /// read-only standby. The worker pauses and retries. Whether a failed
    /// `COMMIT` landed is unknown, so a retried [`Ledger::write`] may record
    /// rows twice; readers tolerate duplicates.
    #[error("ledger database unavailable: {0}")]
    Unavailable(sqlx::Error),
    /// The database URL cannot be parsed; nothing was contacted.
    #[error("invalid ledger database URL: {0}")]
    InvalidUrl(sqlx::Error),
    /// A statement failed for a reason retrying will not fix by itself
    /// (missing table, constraint, decoding). Nothing of the call committed.
    #[error("ledger query failed: {0}")]
    Query(sqlx::Error),
    /// Applying migrations failed; the failing migration was rolled back.
    #[error("ledger migration failed: {0}")]
    Migrate(MigrateError),
}

impl LedgerError {
    /// True when the database is unreachable or refusing work, i.e. when the
    /// right reaction is to pause and retry the same call later.
    pub fn is_unavailable(&self) -> bool {
        match self {
            LedgerError::Unavailable(_) => true,
            LedgerError::Migrate(MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _)) => {
                sqlx_unavailable(e)
            }
            LedgerError::Migrate(_) | LedgerError::InvalidUrl(_) | LedgerError::Query(_) => false,
        }
    }
}

impl From<sqlx::Error> for LedgerError {
    fn from(e: sqlx::Error) -> Self {
        if sqlx_unavailable(&e) {
            LedgerError::Unavailable(e)
        } else {
            LedgerError::Query(e)
        }
    }
}

impl From<MigrateError> for LedgerError {
    fn from(e: MigrateError) -> Self {
        LedgerError::Migrate(e)
    }
}

/// Whether an sqlx error means "the database is not available right now".
pub(super) fn sqlx_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| sqlstate_unavailable(&code)),
        _ => false,
    }
}

/// SQLSTATEs after which the same statement can succeed once the server
/// recovers: class 08 (connection exception), class 53 (insufficient
/// resources: too many connections, disk full, out of memory), 57P01..57P05
/// (admin or crash shutdown, cannot connect now, idle session timeout) and
/// 25006 (read-only transaction: a failover left us on a standby).
pub fn sqlstate_unavailable(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("53") || code.starts_with("57P") || code == "25006"
}
