//! The ledger's handle: `Ledger` (its pool, its dedupe window), connecting, migrating and checking migrations.

use super::error::*;
use serde::Serialize;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::Row;
use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The embedded migrations (`migrations/*.sql`); `build.rs` makes cargo rebuild
/// when they change.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Most connections one process holds: the worker writes one batch at a time
/// and reads a little on redelivery, so a few are plenty and leave room for
/// other clients of a small PostgreSQL.
pub const MAX_CONNECTIONS: u32 = 4;
/// How long a statement waits for a free or new connection before the call
/// fails as [`LedgerError::Unavailable`].
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// `application_name` the ledger's sessions show in `pg_stat_activity`, unless
/// the URL names another.
pub const APPLICATION_NAME: &str = "kickq";

/// A migration embedded in the binary that the database has not applied yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingMigration {
    /// Its version (the number the file name starts with).
    pub version: i64,
    /// Its description (the rest of the file name).
    pub description: String,
}

/// Handle to the ledger database. Cheap to clone: clones share one pool of at
/// most [`MAX_CONNECTIONS`] connections.
#[derive(Clone)]
pub struct Ledger {
    pub(super) pool: PgPool,
    pub(super) dedupe_window: Duration,
}

/// How long a done (job id, room, user) makes a redelivery of that job id
/// skip the user, by default: a day, as common idempotency-key windows
/// keep a key. Long enough for any redelivery, retry or resumed run of one
/// sweep; short enough that a daily ban list re-sent under the same ids
/// kicks a user who rejoined.
pub const DEFAULT_DEDUPE_WINDOW: Duration = Duration::from_secs(24 * 3600);

impl fmt::Debug for Ledger {
    // By hand so that no connect option (the password among them) is printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ledger")
            .field("pool_size", &self.pool.size())
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// Builds a pool for `url` without connecting: the first statement
    /// connects, so a down database surfaces as [`LedgerError::Unavailable`]
    /// from that statement (call [`Ledger::ping`] to check at startup). Fails
    /// only on an unparseable URL.
    pub async fn connect(url: &str) -> Result<Ledger, LedgerError> {
        let mut options = PgConnectOptions::from_str(url).map_err(LedgerError::InvalidUrl)?;
        if options.get_application_name().is_none() {
            options = options.application_name(APPLICATION_NAME);
        }
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options);
        Ok(Ledger {
            pool,
            dedupe_window: DEFAULT_DEDUPE_WINDOW,
        })
    }

    /// Wraps an existing pool (tests, or a caller that tunes its own).
    pub fn from_pool(pool: PgPool) -> Ledger {
        Ledger {
            pool,
            dedupe_window: DEFAULT_DEDUPE_WINDOW,
        }
    }

    /// The same ledger, whose done lookups ([`Ledger::kicked_users`],
    /// [`Ledger::done_users`]) see only outcomes written within `window`
    /// of the database's clock.
    pub fn with_dedupe_window(mut self, window: Duration) -> Ledger {
        self.dedupe_window = window;
        self
    }

    /// Applies every embedded migration the database lacks. Safe to run from
    /// several processes at once: sqlx serialises them with an advisory lock.
    pub async fn migrate(&self) -> Result<(), LedgerError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// Embedded migrations not yet applied, oldest first (all of them on a
    /// database that never ran [`Ledger::migrate`]).
    pub async fn pending_migrations(&self) -> Result<Vec<PendingMigration>, LedgerError> {
        let applied = select_applied_versions(&self.pool).await?;
        Ok(MIGRATOR
            .iter()
            .filter(|m| !applied.contains(&m.version))
            .map(|m| PendingMigration {
                version: m.version,
                description: m.description.to_string(),
            })
            .collect())
    }

    /// Round trip to the database: Ok means a connection works right now.
    pub async fn ping(&self) -> Result<(), LedgerError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// Versions recorded as applied. A database that never ran the migrator has
/// no `_sqlx_migrations` table (SQLSTATE 42P01): nothing is applied there.
async fn select_applied_versions(pool: &PgPool) -> Result<HashSet<i64>, sqlx::Error> {
    match sqlx::query("SELECT version FROM _sqlx_migrations WHERE success")
        .fetch_all(pool)
        .await
    {
        Ok(rows) => rows.iter().map(|r| r.try_get("version")).collect(),
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P01") => Ok(HashSet::new()),
        Err(e) => Err(e),
    }
}
