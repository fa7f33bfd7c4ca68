//! The HTTP intake's idempotency keys in the ledger (`http_idempotency`): look one up, record one, and drop the
//! rows past the window on every insert.

use super::error::*;
use super::handle::*;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgPool;
use sqlx::Row;

/// One recorded request: the hash of its lane and body, the job ids it was
/// answered with, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRow {
    /// SHA-256 of the lane and the body.
    pub body_sha256: Vec<u8>,
    /// The job ids of the 202, in body order.
    pub job_ids: Vec<String>,
    /// When the first request was answered.
    pub created_at: DateTime<Utc>,
}

impl Ledger {
    /// The row of `key` in `namespace` created at or after `since`, if any.
    pub async fn idempotency_get(
        &self,
        namespace: &str,
        key: &str,
        since: DateTime<Utc>,
    ) -> Result<Option<IdempotencyRow>, LedgerError> {
        Ok(select_idempotency(&self.pool, namespace, key, since).await?)
    }

    /// Records `key` (replacing a row older than `since`, keeping a newer
    /// one: the first answer wins) and deletes every row older than `since`.
    /// Returns the row now stored for the key.
    pub async fn idempotency_put(
        &self,
        namespace: &str,
        key: &str,
        row: &IdempotencyRow,
        since: DateTime<Utc>,
    ) -> Result<IdempotencyRow, LedgerError> {
        upsert_idempotency(&self.pool, namespace, key, row, since).await?;
        delete_idempotency_before(&self.pool, since).await?;
        Ok(select_idempotency(&self.pool, namespace, key, since)
            .await?
            .unwrap_or_else(|| row.clone()))
    }
}

async fn select_idempotency(
    pool: &PgPool,
    namespace: &str,
    key: &str,
    since: DateTime<Utc>,
) -> Result<Option<IdempotencyRow>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT body_sha256, job_ids, created_at FROM http_idempotency
         WHERE namespace = $1 AND key = $2 AND created_at >= $3",
    )
    .bind(namespace)
    .bind(key)
    .bind(since)
    .fetch_optional(pool)
    .await?;
    row.map(|r| {
        Ok(IdempotencyRow {
            body_sha256: r.try_get("body_sha256")?,
            job_ids: r.try_get("job_ids")?,
            created_at: r.try_get("created_at")?,
        })
    })
    .transpose()
}

async fn upsert_idempotency(
    pool: &PgPool,
    namespace: &str,
    key: &str,
    row: &IdempotencyRow,
    since: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO http_idempotency (namespace, key, body_sha256, job_ids, created_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (namespace, key) DO UPDATE
           SET body_sha256 = EXCLUDED.body_sha256, job_ids = EXCLUDED.job_ids, created_at = EXCLUDED.created_at
           WHERE http_idempotency.created_at < $6",
    )
    .bind(namespace)
    .bind(key)
    .bind(&row.body_sha256)
    .bind(&row.job_ids)
    .bind(row.created_at)
    .bind(since)
    .execute(pool)
    .await?;
    Ok(())
}

/// Served by `http_idempotency_created_at` (migrations/0003_http_idempotency.sql).
async fn delete_idempotency_before(pool: &PgPool, since: DateTime<Utc>) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM http_idempotency WHERE created_at < $1")
        .bind(since)
        .execute(pool)
        .await?;
    Ok(())
}
