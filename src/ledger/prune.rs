//! Retention: `kickq ledger prune` removes rows older than a cutoff, in bounded batches, and counts them for a dry run.

use super::error::*;
use super::handle::*;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::postgres::{PgConnection, PgPool};
use std::ops::ControlFlow;
use std::time::Duration;

/// Rows one prune batch deletes at most, by default. Each batch is its own
/// statement and transaction, so the first prune of a 100 M-row table holds
/// no lock and no undeleted snapshot for hours, can be stopped between
/// batches losing nothing, and lets autovacuum keep up; 10,000 rows (a few
/// MB of WAL) keep a batch well under a second on modest hardware while the
/// round trips stay negligible.
pub const PRUNE_BATCH_ROWS: u64 = 10_000;

/// Rows removed by [`Ledger::prune`] (or counted by [`Ledger::count_prunable`]), per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PruneCounts {
    /// Rows removed from `job_receipts`.
    pub receipts: u64,
    /// Rows removed from `api_calls`.
    pub calls: u64,
    /// Rows removed from `user_outcomes`.
    pub outcomes: u64,
}

/// A prune table, in the order [`Ledger::prune_batched`] empties them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PruneTable {
    /// `job_receipts`, by `received_at`.
    JobReceipts,
    /// `api_calls`, by `started_at`.
    ApiCalls,
    /// `user_outcomes`, by `at`.
    UserOutcomes,
}

impl PruneTable {
    /// Every table, in pruning order.
    pub const ALL: [PruneTable; 3] = [PruneTable::JobReceipts, PruneTable::ApiCalls, PruneTable::UserOutcomes];

    /// The table's name.
    pub fn as_str(self) -> &'static str {
        match self {
            PruneTable::JobReceipts => "job_receipts",
            PruneTable::ApiCalls => "api_calls",
            PruneTable::UserOutcomes => "user_outcomes",
        }
    }

    /// One batch: the oldest `$2` rows before `$1`, picked on the table's
    /// time index and deleted by primary key.
    pub fn delete_batch_sql(self) -> &'static str {
        match self {
            PruneTable::JobReceipts => {
                "DELETE FROM job_receipts WHERE id = ANY(ARRAY(
                     SELECT id FROM job_receipts WHERE received_at < $1 ORDER BY received_at LIMIT $2))"
            }
            PruneTable::ApiCalls => {
                "DELETE FROM api_calls WHERE id = ANY(ARRAY(
                     SELECT id FROM api_calls WHERE started_at < $1 ORDER BY started_at LIMIT $2))"
            }
            PruneTable::UserOutcomes => {
                "DELETE FROM user_outcomes WHERE id = ANY(ARRAY(
                     SELECT id FROM user_outcomes WHERE at < $1 ORDER BY at LIMIT $2))"
            }
        }
    }
}

impl PruneCounts {
    /// Rows of all three tables.
    pub fn total(&self) -> u64 {
        self.receipts + self.calls + self.outcomes
    }

    fn add(&mut self, table: PruneTable, n: u64) {
        match table {
            PruneTable::JobReceipts => self.receipts += n,
            PruneTable::ApiCalls => self.calls += n,
            PruneTable::UserOutcomes => self.outcomes += n,
        }
    }
}

/// What [`Ledger::prune_batched`] tells its callback after each committed batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneProgress {
    /// The table the batch deleted from.
    pub table: PruneTable,
    /// Rows that batch deleted.
    pub rows: u64,
    /// Batches committed so far, this one included.
    pub batches: u64,
    /// Rows removed so far, per table.
    pub removed: PruneCounts,
}

/// How a [`Ledger::prune_batched`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PruneRun {
    /// Rows removed, per table (every batch counted here committed).
    pub removed: PruneCounts,
    /// Batches committed.
    pub batches: u64,
    /// False when the callback stopped it before every old row was gone.
    pub complete: bool,
}

impl Ledger {
    /// Deletes every row older than `cutoff` (by `received_at`, `started_at`
    /// and `at`) from all three tables, in batches of [`PRUNE_BATCH_ROWS`]
    /// (see [`Ledger::prune_batched`]).
    pub async fn prune(&self, cutoff: DateTime<Utc>) -> Result<PruneCounts, LedgerError> {
        let run = self
            .prune_batched(cutoff, PRUNE_BATCH_ROWS, |_| ControlFlow::Continue(()))
            .await?;
        Ok(run.removed)
    }

    /// Deletes the rows older than `cutoff`, table by table, at most
    /// `batch_rows` (at least 1) per batch, each batch one statement in its
    /// own transaction. After each committed batch `progress` sees the totals
    /// so far; `Break` stops before the next batch (what was deleted stays
    /// deleted and is reported). An error leaves earlier batches committed;
    /// a rerun picks up where it stopped.
    pub async fn prune_batched(
        &self,
        cutoff: DateTime<Utc>,
        batch_rows: u64,
        mut progress: impl FnMut(&PruneProgress) -> ControlFlow<()>,
    ) -> Result<PruneRun, LedgerError> {
        let limit = i64::try_from(batch_rows.max(1)).unwrap_or(i64::MAX);
        let mut run = PruneRun::default();
        for table in PruneTable::ALL {
            loop {
                let rows = delete_batch_before(&self.pool, table, cutoff, limit).await?;
                if rows == 0 {
                    break;
                }
                run.batches += 1;
                run.removed.add(table, rows);
                let seen = PruneProgress {
                    table,
                    rows,
                    batches: run.batches,
                    removed: run.removed,
                };
                if progress(&seen).is_break() {
                    return Ok(run);
                }
                if rows < limit as u64 {
                    break;
                }
            }
        }
        run.complete = true;
        Ok(run)
    }

    /// The rows [`Ledger::prune`] would delete for `cutoff`, counted in one
    /// read-only transaction (one snapshot for the three tables); nothing is
    /// deleted.
    pub async fn count_prunable(&self, cutoff: DateTime<Utc>) -> Result<PruneCounts, LedgerError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        let counts = PruneCounts {
            receipts: count_receipts_before(&mut tx, cutoff).await?,
            calls: count_calls_before(&mut tx, cutoff).await?,
            outcomes: count_outcomes_before(&mut tx, cutoff).await?,
        };
        tx.commit().await?;
        Ok(counts)
    }
}

/// The cutoff of a retention of `older_than` at `now`: rows before it go. An
/// age reaching before the year 1 gives the year 1, which matches no row.
pub fn prune_cutoff(now: DateTime<Utc>, older_than: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(older_than)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .filter(|c| *c >= earliest_cutoff())
        .unwrap_or_else(earliest_cutoff)
}

/// Year 1: older cutoffs cannot match any row a worker wrote, and chrono
/// dates before PostgreSQL's range would fail to encode.
pub fn earliest_cutoff() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("0001-01-01T00:00:00Z")
        .expect("a literal RFC 3339 timestamp parses")
        .with_timezone(&Utc)
}

/// One prune batch of `table` ([`PruneTable::delete_batch_sql`]): the
/// subselect walks the table's time index (`job_receipts_received_at`,
/// `api_calls_started_at`, `user_outcomes_at`) and the delete probes the
/// primary key. Autocommit: the batch is its own transaction.
pub(super) async fn delete_batch_before(
    pool: &PgPool,
    table: PruneTable,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(table.delete_batch_sql())
        .bind(cutoff)
        .bind(limit)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

/// A prune's dry run on `job_receipts`, served by `job_receipts_received_at`.
pub(super) async fn count_receipts_before(conn: &mut PgConnection, cutoff: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM job_receipts WHERE received_at < $1")
        .bind(cutoff)
        .fetch_one(conn)
        .await?;
    Ok(n.max(0) as u64)
}

/// A prune's dry run on `api_calls`, served by `api_calls_started_at`.
pub(super) async fn count_calls_before(conn: &mut PgConnection, cutoff: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM api_calls WHERE started_at < $1")
        .bind(cutoff)
        .fetch_one(conn)
        .await?;
    Ok(n.max(0) as u64)
}

/// A prune's dry run on `user_outcomes`, served by `user_outcomes_at`.
pub(super) async fn count_outcomes_before(conn: &mut PgConnection, cutoff: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM user_outcomes WHERE at < $1")
        .bind(cutoff)
        .fetch_one(conn)
        .await?;
    Ok(n.max(0) as u64)
}
