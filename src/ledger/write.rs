//! Writing a batch in one transaction, one `INSERT ... SELECT FROM UNNEST(...)` per table, with text made safe for PostgreSQL.

use super::error::*;
use super::handle::*;
use super::rows::*;
use sqlx::postgres::types::PgInterval;
use sqlx::postgres::PgConnection;
use sqlx::types::Json;
use std::borrow::Cow;
use std::time::Duration;

impl Ledger {
    /// Writes the whole batch in one transaction: all rows commit or none do.
    /// An empty batch returns at once without touching the database.
    pub async fn write(&self, batch: &LedgerBatch) -> Result<(), LedgerError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        if !batch.receipts.is_empty() {
            insert_receipts(&mut tx, &batch.receipts).await?;
        }
        if !batch.calls.is_empty() {
            insert_calls(&mut tx, &batch.calls).await?;
        }
        if !batch.outcomes.is_empty() {
            insert_outcomes(&mut tx, &batch.outcomes).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Text as PostgreSQL can store it: NUL becomes U+FFFD. `text` rejects NUL,
/// and one such byte in a reason or an API message must not make a batch
/// fail forever (its delivery would never be acked). Borrowed when clean.
pub fn pg_text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

pub(super) fn pg_opt_text(s: &Option<String>) -> Option<Cow<'_, str>> {
    s.as_deref().map(pg_text)
}

/// A `RequestId` as stored: bounded by
/// [`crate::zego::client::bound_request_id`] (the client already bounds what
/// it returns; this covers every other writer), since an entry over about
/// 2.7 KB fails the `api_calls_request_id` index (SQLSTATE 54000) and with
/// it the whole batch, for good. Borrowed when already within bounds.
pub(super) fn pg_request_id(s: &Option<String>) -> Option<Cow<'_, str>> {
    s.as_deref()
        .map(|id| match crate::zego::client::bound_request_id(id.as_bytes()) {
            (_, false) => Cow::Borrowed(id),
            (kept, true) => Cow::Owned(kept),
        })
}

/// A user list as one `jsonb` value, so a per-row `text[]` fits in an
/// `UNNEST` column (PostgreSQL has no arrays of arrays of varying length).
pub(super) fn pg_text_list(users: &[String]) -> Json<Vec<Cow<'_, str>>> {
    Json(users.iter().map(|u| pg_text(u)).collect())
}

/// A latency as `interval`: truncated to microseconds, because sqlx refuses
/// to encode a `Duration` with leftover nanoseconds (every measured one has
/// them), and saturated rather than failing the batch.
pub fn pg_interval(d: Duration) -> PgInterval {
    PgInterval {
        months: 0,
        days: 0,
        microseconds: i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
    }
}

/// Bulk insert of receipts. `WITH ORDINALITY ... ORDER BY` keeps ids in batch
/// order; the user list travels as `jsonb` and is rebuilt in order.
pub(super) async fn insert_receipts(conn: &mut PgConnection, rows: &[ReceiptRow]) -> Result<u64, sqlx::Error> {
    const SQL: &str = "
        INSERT INTO job_receipts
            (job_id, app_id, room_id, user_ids, reason, attempts, redelivered, received_at)
        SELECT r.job_id, r.app_id, r.room_id,
               ARRAY(SELECT u.id FROM jsonb_array_elements_text(r.users) WITH ORDINALITY AS u(id, n)
                     ORDER BY u.n),
               r.reason, r.attempts, r.redelivered, r.received_at
        FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::jsonb[], $5::text[], $6::int8[],
                    $7::bool[], $8::timestamptz[])
             WITH ORDINALITY
             AS r(job_id, app_id, room_id, users, reason, attempts, redelivered, received_at, n)
        ORDER BY r.n";
    let done = sqlx::query(SQL)
        .bind(rows.iter().map(|r| pg_text(&r.job_id)).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| i64::from(r.app_id)).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| pg_text(&r.room_id)).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| pg_text_list(&r.user_ids)).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| pg_opt_text(&r.reason)).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| i64::from(r.attempts)).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.redelivered).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.received_at).collect::<Vec<_>>())
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}

/// Bulk insert of API calls, same shape as [`insert_receipts`].
pub(super) async fn insert_calls(conn: &mut PgConnection, rows: &[CallRow]) -> Result<u64, sqlx::Error> {
    const SQL: &str = "
        INSERT INTO api_calls
            (app_id, room_id, user_ids, reason, attempt, code, message, request_id, http_status,
             transport_error, latency, started_at)
        SELECT c.app_id, c.room_id,
               ARRAY(SELECT u.id FROM jsonb_array_elements_text(c.users) WITH ORDINALITY AS u(id, n)
                     ORDER BY u.n),
               c.reason, c.attempt, c.code, c.message, c.request_id, c.http_status,
               c.transport_error, c.latency, c.started_at
        FROM UNNEST($1::int8[], $2::text[], $3::jsonb[], $4::text[], $5::int8[], $6::int8[],
                    $7::text[], $8::text[], $9::int4[], $10::text[], $11::interval[],
                    $12::timestamptz[])
             WITH ORDINALITY
             AS c(app_id, room_id, users, reason, attempt, code, message, request_id, http_status,
                  transport_error, latency, started_at, n)
        ORDER BY c.n";
    let done = sqlx::query(SQL)
        .bind(rows.iter().map(|c| i64::from(c.app_id)).collect::<Vec<_>>())
        .bind(rows.iter().map(|c| pg_text(&c.room_id)).collect::<Vec<_>>())
        .bind(rows.iter().map(|c| pg_text_list(&c.user_ids)).collect::<Vec<_>>())
        .bind(rows.iter().map(|c| pg_opt_text(&c.reason)).collect::<Vec<_>>())
        .bind(rows.iter().map(|c| i64::from(c.attempt)).collect::<Vec<_>>())
        .bind(rows.iter().map(|c| c.code).collect::<Vec<_>>())
        .bind(rows.iter().map(|c| pg_opt_text(&c.message)).collect::<Vec<_>>())
        .bind(rows.iter().map(|c| pg_request_id(&c.request_id)).collect::<Vec<_>>())
        .bind(rows.iter().map(|c| c.http_status.map(i32::from)).collect::<Vec<_>>())
        .bind(rows.iter().map(|c| pg_opt_text(&c.transport_error)).collect::<Vec<_>>())
        .bind(rows.iter().map(|c| pg_interval(c.latency)).collect::<Vec<_>>())
        .bind(rows.iter().map(|c| c.started_at).collect::<Vec<_>>())
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}

/// Bulk insert of user outcomes, same shape as [`insert_receipts`].
pub(super) async fn insert_outcomes(conn: &mut PgConnection, rows: &[OutcomeRow]) -> Result<u64, sqlx::Error> {
    const SQL: &str = "
        INSERT INTO user_outcomes
            (job_id, app_id, room_id, user_id, reason, outcome, code, request_id, detail, at)
        SELECT o.job_id, o.app_id, o.room_id, o.user_id, o.reason, o.outcome, o.code,
               o.request_id, o.detail, o.at
        FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::text[],
                    $7::int8[], $8::text[], $9::text[], $10::timestamptz[])
             WITH ORDINALITY
             AS o(job_id, app_id, room_id, user_id, reason, outcome, code, request_id, detail, at, n)
        ORDER BY o.n";
    let done = sqlx::query(SQL)
        .bind(rows.iter().map(|o| pg_text(&o.job_id)).collect::<Vec<_>>())
        .bind(rows.iter().map(|o| i64::from(o.app_id)).collect::<Vec<_>>())
        .bind(rows.iter().map(|o| pg_text(&o.room_id)).collect::<Vec<_>>())
        .bind(rows.iter().map(|o| pg_text(&o.user_id)).collect::<Vec<_>>())
        .bind(rows.iter().map(|o| pg_opt_text(&o.reason)).collect::<Vec<_>>())
        .bind(rows.iter().map(|o| o.outcome.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|o| o.code).collect::<Vec<_>>())
        .bind(rows.iter().map(|o| pg_request_id(&o.request_id)).collect::<Vec<_>>())
        .bind(rows.iter().map(|o| pg_opt_text(&o.detail)).collect::<Vec<_>>())
        .bind(rows.iter().map(|o| o.at).collect::<Vec<_>>())
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}
