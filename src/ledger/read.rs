//! Reading the ledger back: users already done for a job id (the redelivery skip) and `kickq history`.

use super::error::*;
use super::handle::*;
use super::rows::*;
use super::write::*;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::postgres::{PgPool, PgRow, Postgres};
use sqlx::{QueryBuilder, Row};
use std::collections::HashSet;
use std::time::Duration;

/// Which outcome rows [`Ledger::history`] returns: those matching every
/// filter that is `Some`. At least one of room, user and job must be given
/// (each has an index to start from); a query with none returns no rows.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryQuery {
    /// Only this room.
    pub room_id: Option<String>,
    /// Only this user.
    pub user_id: Option<String>,
    /// Only this job.
    pub job_id: Option<String>,
    /// Only rows with `at >= since`.
    pub since: Option<DateTime<Utc>>,
    /// Most rows returned; a negative limit counts as 0.
    pub limit: i64,
}

/// One outcome row as history shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryRow {
    /// When the outcome was decided.
    pub at: DateTime<Utc>,
    /// Room.
    pub room_id: String,
    /// User.
    pub user_id: String,
    /// Job's idempotency key.
    pub job_id: String,
    /// What happened.
    pub outcome: UserOutcome,
    /// API return code, if a call was made.
    pub code: Option<i64>,
    /// API `RequestId`, if a call was made.
    pub request_id: Option<String>,
    /// The job's `CustomReason`.
    pub reason: Option<String>,
    /// Free-text context.
    pub detail: Option<String>,
}

impl Ledger {
    /// The subset of `users` already recorded as `kicked` or `nothing_to_do`
    /// for `job_id` in `room_id`: on a redelivery the worker skips them. Other
    /// jobs' rows and other outcomes (dead_lettered, retry_scheduled, ...) do
    /// not count.
    pub async fn kicked_users(
        &self,
        job_id: &str,
        room_id: &str,
        users: &[String],
    ) -> Result<HashSet<String>, LedgerError> {
        if users.is_empty() {
            return Ok(HashSet::new());
        }
        Ok(select_done_users(&self.pool, job_id, room_id, users, self.dedupe_window).await?)
    }

    /// [`Ledger::kicked_users`] for many jobs in one statement: for each
    /// (job id, room id, users), the users already done. Intake calls it once
    /// per batch of deliveries, so checking every delivery costs one round
    /// trip per batch, not one per message.
    pub async fn done_users(&self, jobs: &[(&str, &str, &[String])]) -> Result<Vec<HashSet<String>>, LedgerError> {
        Ok(select_done_users_batch(&self.pool, jobs, self.dedupe_window).await?)
    }

    /// Outcome rows matching `q`, newest first (rows of the same instant:
    /// last written first), at most `q.limit` of them.
    pub async fn history(&self, q: &HistoryQuery) -> Result<Vec<HistoryRow>, LedgerError> {
        if q.room_id.is_none() && q.user_id.is_none() && q.job_id.is_none() {
            return Ok(Vec::new());
        }
        Ok(select_history(&self.pool, q).await?)
    }
}

/// The redelivery lookup. The outcome predicate is spelled exactly as the
/// partial index `user_outcomes_done` spells it, so the planner can use it.
pub const DONE_USERS_SQL: &str = "
    SELECT DISTINCT user_id FROM user_outcomes
    WHERE job_id = $1 AND room_id = $2 AND user_id = ANY($3::text[])
      AND outcome IN ('kicked', 'halted_then_resumed', 'nothing_to_do')
      AND at >= now() - make_interval(secs => $4)";

/// The lookup for many jobs at once: one statement per intake batch, each
/// (job, room, user) triple probing the same partial index.
pub const DONE_USERS_BATCH_SQL: &str = "
    SELECT DISTINCT o.job_id, o.room_id, o.user_id
    FROM UNNEST($1::text[], $2::text[], $3::text[]) AS k(job_id, room_id, user_id)
    JOIN user_outcomes o
      ON o.job_id = k.job_id AND o.room_id = k.room_id AND o.user_id = k.user_id
    WHERE o.outcome IN ('kicked', 'halted_then_resumed', 'nothing_to_do')
      AND o.at >= now() - make_interval(secs => $4)";

/// Runs [`DONE_USERS_BATCH_SQL`] for `jobs` (job id, room id, users); returns
/// each job's done users in the caller's spelling.
pub(super) async fn select_done_users_batch(
    pool: &PgPool,
    jobs: &[(&str, &str, &[String])],
    window: Duration,
) -> Result<Vec<HashSet<String>>, sqlx::Error> {
    let (mut job_ids, mut rooms, mut users) = (Vec::new(), Vec::new(), Vec::new());
    for (job, room, us) in jobs {
        for u in us.iter() {
            job_ids.push(pg_text(job));
            rooms.push(pg_text(room));
            users.push(pg_text(u));
        }
    }
    let mut out = vec![HashSet::new(); jobs.len()];
    if users.is_empty() {
        return Ok(out);
    }
    let rows = sqlx::query(DONE_USERS_BATCH_SQL)
        .bind(&job_ids)
        .bind(&rooms)
        .bind(&users)
        .bind(window.as_secs_f64())
        .fetch_all(pool)
        .await?;
    let mut stored: HashSet<(String, String, String)> = HashSet::with_capacity(rows.len());
    for r in &rows {
        stored.insert((r.try_get("job_id")?, r.try_get("room_id")?, r.try_get("user_id")?));
    }
    for (i, (job, room, us)) in jobs.iter().enumerate() {
        for u in us.iter() {
            let key = (
                pg_text(job).into_owned(),
                pg_text(room).into_owned(),
                pg_text(u).into_owned(),
            );
            if stored.contains(&key) {
                out[i].insert(u.clone());
            }
        }
    }
    Ok(out)
}

/// Runs [`DONE_USERS_SQL`]. Ids go through [`pg_text`] as they did when
/// written, so the lookup finds what the write stored.
pub(super) async fn select_done_users(
    pool: &PgPool,
    job_id: &str,
    room_id: &str,
    users: &[String],
    window: Duration,
) -> Result<HashSet<String>, sqlx::Error> {
    let rows = sqlx::query(DONE_USERS_SQL)
        .bind(pg_text(job_id))
        .bind(pg_text(room_id))
        .bind(users.iter().map(|u| pg_text(u)).collect::<Vec<_>>())
        .bind(window.as_secs_f64())
        .fetch_all(pool)
        .await?;
    let stored: HashSet<String> = rows.iter().map(|r| r.try_get("user_id")).collect::<Result<_, _>>()?;
    // Report the caller's spelling, so `contains` on its own ids works even
    // for an id whose NUL was replaced when stored.
    Ok(users
        .iter()
        .filter(|u| stored.contains(pg_text(u).as_ref()))
        .cloned()
        .collect())
}

/// The history statement for `q`. Only the filters that are set appear in the
/// SQL, so each combination gets its own plan on the room, room+user, user or
/// job index instead of one generic plan full of `$n IS NULL OR ...`.
pub fn history_sql(q: &HistoryQuery) -> QueryBuilder<'_, Postgres> {
    let mut b = QueryBuilder::new(
        "SELECT at, room_id, user_id, job_id, outcome, code, request_id, reason, detail \
         FROM user_outcomes WHERE true",
    );
    if let Some(room) = &q.room_id {
        b.push(" AND room_id = ").push_bind(pg_text(room));
    }
    if let Some(user) = &q.user_id {
        b.push(" AND user_id = ").push_bind(pg_text(user));
    }
    if let Some(job) = &q.job_id {
        b.push(" AND job_id = ").push_bind(pg_text(job));
    }
    if let Some(since) = q.since {
        b.push(" AND at >= ").push_bind(since);
    }
    b.push(" ORDER BY at DESC, id DESC LIMIT ").push_bind(q.limit.max(0));
    b
}

/// Runs [`history_sql`].
pub(super) async fn select_history(pool: &PgPool, q: &HistoryQuery) -> Result<Vec<HistoryRow>, sqlx::Error> {
    let rows = history_sql(q).build().fetch_all(pool).await?;
    rows.iter().map(history_row).collect()
}

pub(super) fn history_row(row: &PgRow) -> Result<HistoryRow, sqlx::Error> {
    let outcome: String = row.try_get("outcome")?;
    Ok(HistoryRow {
        at: row.try_get("at")?,
        room_id: row.try_get("room_id")?,
        user_id: row.try_get("user_id")?,
        job_id: row.try_get("job_id")?,
        outcome: outcome.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        code: row.try_get("code")?,
        request_id: row.try_get("request_id")?,
        reason: row.try_get("reason")?,
        detail: row.try_get("detail")?,
    })
}
