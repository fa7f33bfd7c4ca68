//! The PostgreSQL audit ledger: job receipts, API calls and per-user outcomes, written in batches and read back for history, redelivery and pruning.
//!
//! The ledger answers "was user U kicked from room R, when, and with which
//! RequestId?". The worker acks a delivery only after its rows commit, so every
//! write goes through [`Ledger::write`]: one transaction per batch, one bulk
//! `INSERT ... SELECT FROM UNNEST(...)` per table, whatever the batch size (an
//! `INSERT` per row would cost a round trip each, and a multi-row `VALUES` list
//! runs into the 65,535 bind-parameter limit).
//!
//! Each SQL statement lives in exactly one private function below, next to the
//! index in `migrations/0001_ledger.sql` that serves it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::types::PgInterval;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow, Postgres};
use sqlx::types::Json;
use sqlx::{QueryBuilder, Row};
use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::ops::ControlFlow;
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
/// Rows one prune batch deletes at most, by default. Each batch is its own
/// statement and transaction, so the first prune of a 100 M-row table holds
/// no lock and no undeleted snapshot for hours, can be stopped between
/// batches losing nothing, and lets autovacuum keep up; 10,000 rows (a few
/// MB of WAL) keep a batch well under a second on modest hardware while the
/// round trips stay negligible.
pub const PRUNE_BATCH_ROWS: u64 = 10_000;
/// `application_name` the ledger's sessions show in `pg_stat_activity`, unless
/// the URL names another.
pub const APPLICATION_NAME: &str = "kickq";

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
fn sqlx_unavailable(e: &sqlx::Error) -> bool {
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
fn sqlstate_unavailable(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("53") || code.starts_with("57P") || code == "25006"
}

/// What one delivery, or several, leave in the ledger. Written atomically by
/// [`Ledger::write`]; an empty batch writes nothing and contacts nobody.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LedgerBatch {
    /// Job receipts, in arrival order.
    pub receipts: Vec<ReceiptRow>,
    /// API calls, in the order they started.
    pub calls: Vec<CallRow>,
    /// Per-user outcomes. Rows with the same `at` read back newest-last-written
    /// first, so push them in the order they happened.
    pub outcomes: Vec<OutcomeRow>,
}

impl LedgerBatch {
    /// True when the batch holds no row at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows in the batch, all tables together.
    pub fn len(&self) -> usize {
        self.receipts.len() + self.calls.len() + self.outcomes.len()
    }

    /// Moves `other`'s rows after this batch's rows, table by table.
    pub fn append(&mut self, mut other: LedgerBatch) {
        self.receipts.append(&mut other.receipts);
        self.calls.append(&mut other.calls);
        self.outcomes.append(&mut other.outcomes);
    }
}

/// One job as the worker received it (table `job_receipts`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReceiptRow {
    /// The job's idempotency key (the message's `job_id`, its AMQP
    /// `message_id`, or a generated one).
    pub job_id: String,
    /// AppId the job runs under (stored as `bigint`: a uint32 overflows int4).
    pub app_id: u32,
    /// Room to kick from.
    pub room_id: String,
    /// Users the job asked to kick, in message order.
    pub user_ids: Vec<String>,
    /// The `CustomReason`, if any; never `Some("")` for a validated job.
    pub reason: Option<String>,
    /// Deliveries of this job so far, this one included.
    pub attempts: u32,
    /// The broker's redelivered flag.
    pub redelivered: bool,
    /// When the worker received the delivery (stored to the microsecond).
    pub received_at: DateTime<Utc>,
}

/// One KickoutUser call and what came back (table `api_calls`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallRow {
    /// AppId the call was signed for.
    pub app_id: u32,
    /// Room of the call.
    pub room_id: String,
    /// Users in the call (at most five for a real call).
    pub user_ids: Vec<String>,
    /// `CustomReason` sent, if any.
    pub reason: Option<String>,
    /// 1 for the first try of these users, counting up on retries.
    pub attempt: u32,
    /// The API's return `Code`; `None` when no parseable body arrived.
    pub code: Option<i64>,
    /// The API's `Message`.
    pub message: Option<String>,
    /// The API's `RequestId`, the handle ZEGOCLOUD support asks for.
    pub request_id: Option<String>,
    /// HTTP status; `None` when the request never got a response.
    pub http_status: Option<u16>,
    /// Why no response arrived (connect error, timeout); `None` when one did.
    pub transport_error: Option<String>,
    /// Time from sending to the full response, stored truncated to the
    /// microsecond (and saturated at about 292,000 years).
    pub latency: Duration,
    /// When the request was sent.
    pub started_at: DateTime<Utc>,
}

/// What happened to one user of one job. `as_str` is the value stored in
/// `user_outcomes.outcome` and must match the table's CHECK constraint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UserOutcome {
    /// The API confirmed the kick.
    Kicked,
    /// The API said there was nothing to do (user not in the room); final.
    NothingToDo,
    /// Given up on and published to the dead-letter queue.
    DeadLettered,
    /// Processing halted (e.g. bad credentials) and later resumed for this user.
    HaltedThenResumed,
    /// A redelivery of a user already kicked for the same job_id; no call made.
    Skipped,
    /// A transient failure; the user was scheduled for another attempt.
    RetryScheduled,
}

impl UserOutcome {
    /// Every outcome, in declaration order.
    pub const ALL: [UserOutcome; 6] = [
        UserOutcome::Kicked,
        UserOutcome::NothingToDo,
        UserOutcome::DeadLettered,
        UserOutcome::HaltedThenResumed,
        UserOutcome::Skipped,
        UserOutcome::RetryScheduled,
    ];

    /// The snake_case name, as stored and as printed.
    pub fn as_str(self) -> &'static str {
        match self {
            UserOutcome::Kicked => "kicked",
            UserOutcome::NothingToDo => "nothing_to_do",
            UserOutcome::DeadLettered => "dead_lettered",
            UserOutcome::HaltedThenResumed => "halted_then_resumed",
            UserOutcome::Skipped => "skipped",
            UserOutcome::RetryScheduled => "retry_scheduled",
        }
    }
}

impl fmt::Display for UserOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not one of the [`UserOutcome`] names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown outcome {0:?}")]
pub struct UnknownOutcome(pub String);

impl FromStr for UserOutcome {
    type Err = UnknownOutcome;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UserOutcome::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| UnknownOutcome(s.to_owned()))
    }
}

/// One user's outcome within one job (table `user_outcomes`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutcomeRow {
    /// The job's idempotency key.
    pub job_id: String,
    /// AppId of the job.
    pub app_id: u32,
    /// Room of the job.
    pub room_id: String,
    /// The user this row is about.
    pub user_id: String,
    /// The job's `CustomReason`, if any.
    pub reason: Option<String>,
    /// What happened.
    pub outcome: UserOutcome,
    /// The API return code behind the outcome, if a call was made.
    pub code: Option<i64>,
    /// The `RequestId` of that call, if any.
    pub request_id: Option<String>,
    /// Free-text context (dead-letter cause, halt reason, ...).
    pub detail: Option<String>,
    /// When the outcome was decided (stored to the microsecond).
    pub at: DateTime<Utc>,
}

/// Which outcome rows [`Ledger::history`] returns: those of `room_id`,
/// narrowed by every filter that is `Some`.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryQuery {
    /// Room to look in; required because every history index starts with it.
    pub room_id: String,
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
    fn delete_batch_sql(self) -> &'static str {
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
    pool: PgPool,
}

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
        Ok(Ledger { pool })
    }

    /// Wraps an existing pool (tests, or a caller that tunes its own).
    pub fn from_pool(pool: PgPool) -> Ledger {
        Ledger { pool }
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
        Ok(select_done_users(&self.pool, job_id, room_id, users).await?)
    }

    /// [`Ledger::kicked_users`] for many jobs in one statement: for each
    /// (job id, room id, users), the users already done. Intake calls it once
    /// per batch of deliveries, so checking every delivery costs one round
    /// trip per batch, not one per message.
    pub async fn done_users(&self, jobs: &[(&str, &str, &[String])]) -> Result<Vec<HashSet<String>>, LedgerError> {
        Ok(select_done_users_batch(&self.pool, jobs).await?)
    }

    /// Outcome rows matching `q`, newest first (rows of the same instant:
    /// last written first), at most `q.limit` of them.
    pub async fn history(&self, q: &HistoryQuery) -> Result<Vec<HistoryRow>, LedgerError> {
        Ok(select_history(&self.pool, q).await?)
    }

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
fn earliest_cutoff() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("0001-01-01T00:00:00Z")
        .expect("a literal RFC 3339 timestamp parses")
        .with_timezone(&Utc)
}

/// Text as PostgreSQL can store it: NUL becomes U+FFFD. `text` rejects NUL,
/// and one such byte in a reason or an API message must not make a batch
/// fail forever (its delivery would never be acked). Borrowed when clean.
fn pg_text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

fn pg_opt_text(s: &Option<String>) -> Option<Cow<'_, str>> {
    s.as_deref().map(pg_text)
}

/// A `RequestId` as stored: bounded by
/// [`crate::zego::client::bound_request_id`] (the client already bounds what
/// it returns; this covers every other writer), since an entry over about
/// 2.7 KB fails the `api_calls_request_id` index (SQLSTATE 54000) and with
/// it the whole batch, for good. Borrowed when already within bounds.
fn pg_request_id(s: &Option<String>) -> Option<Cow<'_, str>> {
    s.as_deref()
        .map(|id| match crate::zego::client::bound_request_id(id.as_bytes()) {
            (_, false) => Cow::Borrowed(id),
            (kept, true) => Cow::Owned(kept),
        })
}

/// A user list as one `jsonb` value, so a per-row `text[]` fits in an
/// `UNNEST` column (PostgreSQL has no arrays of arrays of varying length).
fn pg_text_list(users: &[String]) -> Json<Vec<Cow<'_, str>>> {
    Json(users.iter().map(|u| pg_text(u)).collect())
}

/// A latency as `interval`: truncated to microseconds, because sqlx refuses
/// to encode a `Duration` with leftover nanoseconds (every measured one has
/// them), and saturated rather than failing the batch.
fn pg_interval(d: Duration) -> PgInterval {
    PgInterval {
        months: 0,
        days: 0,
        microseconds: i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
    }
}

/// Bulk insert of receipts. `WITH ORDINALITY ... ORDER BY` keeps ids in batch
/// order; the user list travels as `jsonb` and is rebuilt in order.
async fn insert_receipts(conn: &mut PgConnection, rows: &[ReceiptRow]) -> Result<u64, sqlx::Error> {
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
async fn insert_calls(conn: &mut PgConnection, rows: &[CallRow]) -> Result<u64, sqlx::Error> {
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
async fn insert_outcomes(conn: &mut PgConnection, rows: &[OutcomeRow]) -> Result<u64, sqlx::Error> {
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

/// The redelivery lookup. The outcome predicate is spelled exactly as the
/// partial index `user_outcomes_done` spells it, so the planner can use it.
const DONE_USERS_SQL: &str = "
    SELECT DISTINCT user_id FROM user_outcomes
    WHERE job_id = $1 AND room_id = $2 AND user_id = ANY($3::text[])
      AND outcome IN ('kicked', 'halted_then_resumed', 'nothing_to_do')";

/// The lookup for many jobs at once: one statement per intake batch, each
/// (job, room, user) triple probing the same partial index.
const DONE_USERS_BATCH_SQL: &str = "
    SELECT DISTINCT o.job_id, o.room_id, o.user_id
    FROM UNNEST($1::text[], $2::text[], $3::text[]) AS k(job_id, room_id, user_id)
    JOIN user_outcomes o
      ON o.job_id = k.job_id AND o.room_id = k.room_id AND o.user_id = k.user_id
    WHERE o.outcome IN ('kicked', 'halted_then_resumed', 'nothing_to_do')";

/// Runs [`DONE_USERS_BATCH_SQL`] for `jobs` (job id, room id, users); returns
/// each job's done users in the caller's spelling.
async fn select_done_users_batch(
    pool: &PgPool,
    jobs: &[(&str, &str, &[String])],
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
async fn select_done_users(
    pool: &PgPool,
    job_id: &str,
    room_id: &str,
    users: &[String],
) -> Result<HashSet<String>, sqlx::Error> {
    let rows = sqlx::query(DONE_USERS_SQL)
        .bind(pg_text(job_id))
        .bind(pg_text(room_id))
        .bind(users.iter().map(|u| pg_text(u)).collect::<Vec<_>>())
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
/// SQL, so each combination gets its own plan on the room or room+user index
/// instead of one generic plan full of `$n IS NULL OR ...`.
fn history_sql(q: &HistoryQuery) -> QueryBuilder<'_, Postgres> {
    let mut b = QueryBuilder::new(
        "SELECT at, room_id, user_id, job_id, outcome, code, request_id, reason, detail \
         FROM user_outcomes WHERE room_id = ",
    );
    b.push_bind(pg_text(&q.room_id));
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
async fn select_history(pool: &PgPool, q: &HistoryQuery) -> Result<Vec<HistoryRow>, sqlx::Error> {
    let rows = history_sql(q).build().fetch_all(pool).await?;
    rows.iter().map(history_row).collect()
}

fn history_row(row: &PgRow) -> Result<HistoryRow, sqlx::Error> {
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

/// One prune batch of `table` ([`PruneTable::delete_batch_sql`]): the
/// subselect walks the table's time index (`job_receipts_received_at`,
/// `api_calls_started_at`, `user_outcomes_at`) and the delete probes the
/// primary key. Autocommit: the batch is its own transaction.
async fn delete_batch_before(
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
async fn count_receipts_before(conn: &mut PgConnection, cutoff: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM job_receipts WHERE received_at < $1")
        .bind(cutoff)
        .fetch_one(conn)
        .await?;
    Ok(n.max(0) as u64)
}

/// A prune's dry run on `api_calls`, served by `api_calls_started_at`.
async fn count_calls_before(conn: &mut PgConnection, cutoff: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM api_calls WHERE started_at < $1")
        .bind(cutoff)
        .fetch_one(conn)
        .await?;
    Ok(n.max(0) as u64)
}

/// A prune's dry run on `user_outcomes`, served by `user_outcomes_at`.
async fn count_outcomes_before(conn: &mut PgConnection, cutoff: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM user_outcomes WHERE at < $1")
        .bind(cutoff)
        .fetch_one(conn)
        .await?;
    Ok(n.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// A fixed instant plus `secs` seconds and `micros` microseconds: whole
    /// microseconds, so rows compare equal after a round trip.
    fn t(secs: i64, micros: u32) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, micros * 1000).unwrap()
    }

    fn outcome(job: &str, room: &str, user: &str, outcome: UserOutcome, at: DateTime<Utc>) -> OutcomeRow {
        OutcomeRow {
            job_id: job.into(),
            app_id: u32::MAX,
            room_id: room.into(),
            user_id: user.into(),
            reason: Some("spam".into()),
            outcome,
            code: Some(0),
            request_id: Some(format!("req-{job}-{user}")),
            detail: None,
            at,
        }
    }

    fn receipt(job: &str, room: &str, users: &[&str], at: DateTime<Utc>) -> ReceiptRow {
        ReceiptRow {
            job_id: job.into(),
            app_id: u32::MAX,
            room_id: room.into(),
            user_ids: users.iter().map(|u| u.to_string()).collect(),
            reason: None,
            attempts: 1,
            redelivered: false,
            received_at: at,
        }
    }

    fn call(room: &str, users: &[&str], at: DateTime<Utc>) -> CallRow {
        CallRow {
            app_id: 1234567890,
            room_id: room.into(),
            user_ids: users.iter().map(|u| u.to_string()).collect(),
            reason: Some("spam".into()),
            attempt: 1,
            code: Some(0),
            message: Some("success".into()),
            request_id: Some("req-call".into()),
            http_status: Some(200),
            transport_error: None,
            latency: Duration::from_nanos(12_345_678),
            started_at: at,
        }
    }

    fn query(room: &str) -> HistoryQuery {
        HistoryQuery {
            room_id: room.into(),
            user_id: None,
            job_id: None,
            since: None,
            limit: 50,
        }
    }

    async fn count(pool: &PgPool, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(pool)
            .await
            .unwrap()
    }

    /// A pool to a port nobody listens on, failing fast.
    fn dead_ledger() -> Ledger {
        let pool = PgPoolOptions::new()
            .acquire_timeout(Duration::from_millis(300))
            .connect_lazy("postgres://postgres@127.0.0.1:1/postgres")
            .unwrap();
        Ledger::from_pool(pool)
    }

    #[test]
    fn outcome_names_round_trip() {
        for o in UserOutcome::ALL {
            assert_eq!(o.as_str().parse::<UserOutcome>().unwrap(), o);
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
        }
        assert_eq!(UserOutcome::NothingToDo.as_str(), "nothing_to_do");
        assert_eq!("Kicked".parse::<UserOutcome>(), Err(UnknownOutcome("Kicked".into())));
    }

    #[test]
    fn batch_len_and_append() {
        let mut a = LedgerBatch::default();
        assert!(a.is_empty());
        a.outcomes.push(outcome("j", "r", "u", UserOutcome::Kicked, t(0, 0)));
        let b = LedgerBatch {
            receipts: vec![receipt("j", "r", &["u"], t(0, 0))],
            calls: vec![call("r", &["u"], t(0, 0)), call("r", &["v"], t(1, 0))],
            outcomes: vec![outcome("j", "r", "v", UserOutcome::Skipped, t(1, 0))],
        };
        a.append(b);
        assert_eq!(a.len(), 5);
        assert!(!a.is_empty());
        assert_eq!(a.outcomes[1].user_id, "v", "appended rows go after existing ones");
        assert_eq!(a.calls[1].user_ids, vec!["v"]);
    }

    #[test]
    fn text_and_interval_conversions() {
        assert!(matches!(pg_text("plain"), Cow::Borrowed("plain")));
        assert_eq!(pg_text("a\0b"), "a\u{FFFD}b");
        assert_eq!(pg_interval(Duration::from_nanos(1_999)).microseconds, 1);
        assert_eq!(pg_interval(Duration::MAX).microseconds, i64::MAX);
    }

    #[test]
    fn sqlstates_classify() {
        for code in ["08006", "08001", "53300", "53100", "57P01", "57P03", "25006"] {
            assert!(sqlstate_unavailable(code), "{code}");
        }
        // Permanent: retrying the same statement fails the same way. 54000
        // (program_limit_exceeded) is what an over-long index entry raises.
        for code in ["42P01", "23505", "23514", "22021", "22001", "54000", "40P01", "57014"] {
            assert!(!sqlstate_unavailable(code), "{code}");
        }
    }

    #[sqlx::test(migrations = "./migrations")]
    async fn batch_round_trip_and_history_filters(pool: PgPool) {
        let ledger = Ledger::from_pool(pool.clone());
        let batch = LedgerBatch {
            receipts: vec![
                receipt("j1", "room", &["a", "b", "c"], t(0, 0)),
                receipt("j2", "room", &["a"], t(50, 0)),
            ],
            calls: vec![call("room", &["a", "b", "c"], t(1, 0))],
            outcomes: vec![
                outcome("j1", "room", "a", UserOutcome::Kicked, t(2, 1)),
                outcome("j1", "room", "b", UserOutcome::NothingToDo, t(3, 0)),
                OutcomeRow {
                    code: Some(1_000_000_001),
                    request_id: Some("req-dead".into()),
                    detail: Some("gave up".into()),
                    ..outcome("j1", "room", "c", UserOutcome::DeadLettered, t(4, 0))
                },
                outcome("j2", "room", "a", UserOutcome::Kicked, t(60, 0)),
                outcome("j3", "other-room", "a", UserOutcome::Kicked, t(70, 0)),
            ],
        };
        ledger.write(&batch).await.unwrap();
        assert_eq!(count(&pool, "job_receipts").await, 2);
        assert_eq!(count(&pool, "api_calls").await, 1);
        assert_eq!(count(&pool, "user_outcomes").await, 5);

        let (users, app_id, latency, status): (Vec<String>, i64, PgInterval, Option<i32>) =
            sqlx::query_as("SELECT user_ids, app_id, latency, http_status FROM api_calls")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(users, vec!["a", "b", "c"], "user order survives the jsonb trip");
        assert_eq!(app_id, 1234567890);
        assert_eq!(latency.microseconds, 12_345, "truncated, not refused");
        assert_eq!(status, Some(200));
        let (users, app_id): (Vec<String>, i64) =
            sqlx::query_as("SELECT user_ids, app_id FROM job_receipts WHERE job_id = 'j1'")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(users, vec!["a", "b", "c"]);
        assert_eq!(app_id, i64::from(u32::MAX), "a uint32 above i32::MAX fits");

        let all = ledger.history(&query("room")).await.unwrap();
        let seen: Vec<(&str, &str)> = all.iter().map(|r| (r.job_id.as_str(), r.user_id.as_str())).collect();
        assert_eq!(
            seen,
            vec![("j2", "a"), ("j1", "c"), ("j1", "b"), ("j1", "a")],
            "newest first, room only"
        );
        assert_eq!(
            all[1],
            HistoryRow {
                at: t(4, 0),
                room_id: "room".into(),
                user_id: "c".into(),
                job_id: "j1".into(),
                outcome: UserOutcome::DeadLettered,
                code: Some(1_000_000_001),
                request_id: Some("req-dead".into()),
                reason: Some("spam".into()),
                detail: Some("gave up".into()),
            }
        );
        assert_eq!(all[3].at, t(2, 1), "microseconds survive");

        let by_user = ledger
            .history(&HistoryQuery {
                user_id: Some("a".into()),
                ..query("room")
            })
            .await
            .unwrap();
        assert_eq!(
            by_user.iter().map(|r| r.job_id.as_str()).collect::<Vec<_>>(),
            vec!["j2", "j1"]
        );
        let by_job = ledger
            .history(&HistoryQuery {
                job_id: Some("j1".into()),
                ..query("room")
            })
            .await
            .unwrap();
        assert_eq!(
            by_job.iter().map(|r| r.user_id.as_str()).collect::<Vec<_>>(),
            vec!["c", "b", "a"]
        );
        let since = ledger
            .history(&HistoryQuery {
                since: Some(t(3, 0)),
                ..query("room")
            })
            .await
            .unwrap();
        assert_eq!(
            since.iter().map(|r| r.user_id.as_str()).collect::<Vec<_>>(),
            vec!["a", "c", "b"],
            "since is inclusive"
        );
        let limited = ledger
            .history(&HistoryQuery {
                limit: 2,
                ..query("room")
            })
            .await
            .unwrap();
        assert_eq!(limited, all[..2].to_vec());
        let combined = HistoryQuery {
            user_id: Some("a".into()),
            job_id: Some("j1".into()),
            since: Some(t(2, 0)),
            ..query("room")
        };
        assert_eq!(ledger.history(&combined).await.unwrap(), vec![all[3].clone()]);
        assert!(ledger
            .history(&HistoryQuery {
                limit: -1,
                ..query("room")
            })
            .await
            .unwrap()
            .is_empty());
        assert!(ledger.history(&query("nowhere")).await.unwrap().is_empty());
    }

    #[sqlx::test(migrations = "./migrations")]
    async fn every_outcome_passes_the_check_constraint(pool: PgPool) {
        let ledger = Ledger::from_pool(pool);
        let rows: Vec<OutcomeRow> = UserOutcome::ALL
            .iter()
            .enumerate()
            .map(|(i, o)| outcome("j", "r", &format!("u{i}"), *o, t(i as i64, 0)))
            .collect();
        ledger
            .write(&LedgerBatch {
                outcomes: rows,
                ..Default::default()
            })
            .await
            .unwrap();
        let back: Vec<UserOutcome> = ledger
            .history(&query("r"))
            .await
            .unwrap()
            .iter()
            .map(|r| r.outcome)
            .collect();
        let mut expected = UserOutcome::ALL.to_vec();
        expected.reverse();
        assert_eq!(back, expected);
    }

    #[sqlx::test(migrations = "./migrations")]
    async fn same_instant_reads_back_last_written_first(pool: PgPool) {
        let ledger = Ledger::from_pool(pool);
        let rows = ["a", "b", "c", "d"].map(|u| outcome("j", "r", u, UserOutcome::Kicked, t(0, 0)));
        ledger
            .write(&LedgerBatch {
                outcomes: rows.to_vec(),
                ..Default::default()
            })
            .await
            .unwrap();
        let back = ledger.history(&query("r")).await.unwrap();
        assert_eq!(
            back.iter().map(|r| r.user_id.as_str()).collect::<Vec<_>>(),
            vec!["d", "c", "b", "a"]
        );
    }

    #[sqlx::test(migrations = "./migrations")]
    async fn kicked_users_only_counts_final_outcomes_of_that_job_and_room(pool: PgPool) {
        let ledger = Ledger::from_pool(pool);
        let batch = LedgerBatch {
            outcomes: vec![
                outcome("j1", "r", "kicked", UserOutcome::Kicked, t(0, 0)),
                outcome("j1", "r", "absent", UserOutcome::NothingToDo, t(0, 0)),
                outcome("j1", "r", "dead", UserOutcome::DeadLettered, t(0, 0)),
                outcome("j1", "r", "retry", UserOutcome::RetryScheduled, t(0, 0)),
                outcome("j1", "r", "skipped", UserOutcome::Skipped, t(0, 0)),
                outcome("j1", "r", "halted", UserOutcome::HaltedThenResumed, t(0, 0)),
                outcome("j2", "r", "other-job", UserOutcome::Kicked, t(0, 0)),
                outcome("j1", "other-room", "other-room", UserOutcome::Kicked, t(0, 0)),
                // Retried then kicked: the later kick counts.
                outcome("j1", "r", "late", UserOutcome::RetryScheduled, t(0, 0)),
                outcome("j1", "r", "late", UserOutcome::Kicked, t(1, 0)),
                outcome("j1", "r", "nul\0id", UserOutcome::Kicked, t(1, 0)),
            ],
            ..Default::default()
        };
        ledger.write(&batch).await.unwrap();
        let ask: Vec<String> = [
            "kicked",
            "absent",
            "dead",
            "retry",
            "skipped",
            "halted",
            "other-job",
            "other-room",
            "late",
            "never",
            "nul\0id",
        ]
        .map(String::from)
        .to_vec();
        let done = ledger.kicked_users("j1", "r", &ask).await.unwrap();
        // A kick after a halt is a kick.
        let expected: HashSet<String> = ["kicked", "absent", "halted", "late", "nul\0id"]
            .map(String::from)
            .into();
        assert_eq!(done, expected);
        assert!(ledger.kicked_users("j1", "r", &[]).await.unwrap().is_empty());
        assert!(ledger.kicked_users("j9", "r", &ask).await.unwrap().is_empty());
        // The batch form answers the same, job by job.
        let other: Vec<String> = vec!["other-job".into(), "kicked".into()];
        let none: Vec<String> = Vec::new();
        let batch = ledger
            .done_users(&[
                ("j1", "r", &ask),
                ("j2", "r", &other),
                ("j9", "r", &ask),
                ("j1", "r", &none),
            ])
            .await
            .unwrap();
        assert_eq!(batch[0], expected);
        assert_eq!(batch[1], HashSet::from(["other-job".to_owned()]));
        assert!(batch[2].is_empty() && batch[3].is_empty());
        assert!(ledger.done_users(&[]).await.unwrap().is_empty());
    }

    #[sqlx::test(migrations = "./migrations")]
    async fn lookups_use_their_indexes(pool: PgPool) {
        // Tiny tables make seq scans cheapest; forbid them so the plan shows
        // whether an index *can* serve the exact SQL the ledger sends.
        let mut conn = pool.acquire().await.unwrap();
        sqlx::query("SET enable_seqscan = off")
            .execute(&mut *conn)
            .await
            .unwrap();
        let plan = |rows: Vec<PgRow>| {
            rows.iter()
                .map(|r| r.get::<String, _>(0))
                .collect::<Vec<_>>()
                .join("\n")
        };

        let rows = sqlx::query(&format!("EXPLAIN {DONE_USERS_SQL}"))
            .bind("j")
            .bind("r")
            .bind(vec!["a".to_string()])
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        let text = plan(rows);
        assert!(text.contains("user_outcomes_done"), "{text}");
        let rows = sqlx::query(&format!("EXPLAIN {DONE_USERS_BATCH_SQL}"))
            .bind(vec!["j".to_string(); 3])
            .bind(vec!["r".to_string(); 3])
            .bind(vec!["a".to_string(), "b".to_string(), "c".to_string()])
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        let text = plan(rows);
        assert!(
            text.contains("user_outcomes_done"),
            "the batch lookup probes the index: {text}"
        );

        for (q, index) in [
            (query("r"), "user_outcomes_room_at"),
            (
                HistoryQuery {
                    user_id: Some("u".into()),
                    ..query("r")
                },
                "user_outcomes_room_user_at",
            ),
        ] {
            let sql = format!("EXPLAIN {}", history_sql(&q).sql());
            let mut explain = sqlx::query(&sql).bind(q.room_id.as_str());
            if let Some(u) = &q.user_id {
                explain = explain.bind(u.as_str());
            }
            let text = plan(explain.bind(q.limit).fetch_all(&mut *conn).await.unwrap());
            assert!(text.contains(index), "{q:?}: {text}");
            assert!(!text.contains("Sort"), "the index gives the order: {text}");
        }
    }

    #[sqlx::test(migrations = "./migrations")]
    async fn prune_removes_only_old_rows(pool: PgPool) {
        let ledger = Ledger::from_pool(pool.clone());
        let now = Utc::now();
        let old = now - chrono::Duration::days(100);
        let recent = now - chrono::Duration::days(10);
        let batch = LedgerBatch {
            receipts: vec![receipt("old", "r", &["a"], old), receipt("new", "r", &["a"], recent)],
            calls: vec![
                call("r", &["a"], old),
                call("r", &["a"], old),
                call("r", &["a"], recent),
            ],
            outcomes: vec![
                outcome("old", "r", "a", UserOutcome::Kicked, old),
                outcome("old", "r", "b", UserOutcome::Kicked, old),
                outcome("old", "r", "c", UserOutcome::Kicked, old),
                outcome("new", "r", "a", UserOutcome::Kicked, recent),
            ],
        };
        ledger.write(&batch).await.unwrap();

        let days90 = || prune_cutoff(Utc::now(), Duration::from_secs(90 * 86400));
        let old_rows = PruneCounts {
            receipts: 1,
            calls: 2,
            outcomes: 3,
        };
        assert_eq!(ledger.count_prunable(days90()).await.unwrap(), old_rows);
        assert_eq!(
            ledger.count_prunable(days90()).await.unwrap(),
            old_rows,
            "counting deletes nothing"
        );
        assert_eq!(count(&pool, "user_outcomes").await, 4);
        let counts = ledger.prune(days90()).await.unwrap();
        assert_eq!(counts, old_rows);
        let left = ledger.history(&query("r")).await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].job_id, "new");
        assert_eq!(count(&pool, "job_receipts").await, 1);
        assert_eq!(count(&pool, "api_calls").await, 1);

        assert_eq!(ledger.prune(days90()).await.unwrap(), PruneCounts::default());
        assert_eq!(ledger.count_prunable(days90()).await.unwrap(), PruneCounts::default());
        assert_eq!(
            ledger.prune(prune_cutoff(Utc::now(), Duration::MAX)).await.unwrap(),
            PruneCounts::default(),
            "absurd ages delete nothing"
        );
        let all = ledger.prune(prune_cutoff(Utc::now(), Duration::ZERO)).await.unwrap();
        assert_eq!(
            all,
            PruneCounts {
                receipts: 1,
                calls: 1,
                outcomes: 1
            }
        );
    }

    #[sqlx::test(migrations = "./migrations")]
    async fn prune_works_in_batches_and_stops_between_them(pool: PgPool) {
        let ledger = Ledger::from_pool(pool.clone());
        let old = |i: i64| t(i, 0);
        let recent = Utc::now() - chrono::Duration::days(1);
        let batch = LedgerBatch {
            receipts: (0..7)
                .map(|i| receipt(&format!("old{i}"), "r", &["a"], old(i)))
                .chain([receipt("new", "r", &["a"], recent)])
                .collect(),
            calls: (0..3)
                .map(|i| call("r", &["a"], old(i)))
                .chain([call("r", &["a"], recent)])
                .collect(),
            outcomes: (0..5)
                .map(|i| outcome(&format!("old{i}"), "r", "a", UserOutcome::Kicked, old(i)))
                .chain([outcome("new", "r", "a", UserOutcome::Kicked, recent)])
                .collect(),
        };
        ledger.write(&batch).await.unwrap();
        let cutoff = prune_cutoff(Utc::now(), Duration::from_secs(30 * 86400));

        // Stopped after the third batch: 3 x 2 receipts, committed and reported.
        let mut seen = Vec::new();
        let stopped = ledger
            .prune_batched(cutoff, 2, |p| {
                seen.push(*p);
                if p.batches == 3 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .await
            .unwrap();
        assert_eq!(
            stopped,
            PruneRun {
                removed: PruneCounts {
                    receipts: 6,
                    calls: 0,
                    outcomes: 0
                },
                batches: 3,
                complete: false
            }
        );
        assert_eq!(seen.len(), 3);
        assert_eq!(count(&pool, "job_receipts").await, 2, "the stop lost nothing");

        // A rerun finishes: 1 receipt, 2+1 calls, 2+2+1 outcomes.
        let mut seen = Vec::new();
        let run = ledger
            .prune_batched(cutoff, 2, |p| {
                seen.push((p.table, p.rows, p.batches));
                ControlFlow::Continue(())
            })
            .await
            .unwrap();
        let want = PruneCounts {
            receipts: 1,
            calls: 3,
            outcomes: 5,
        };
        assert_eq!(
            run,
            PruneRun {
                removed: want,
                batches: 6,
                complete: true
            }
        );
        use PruneTable::*;
        assert_eq!(
            seen,
            [
                (JobReceipts, 1, 1),
                (ApiCalls, 2, 2),
                (ApiCalls, 1, 3),
                (UserOutcomes, 2, 4),
                (UserOutcomes, 2, 5),
                (UserOutcomes, 1, 6)
            ],
            "the callback saw each batch"
        );
        for table in ["job_receipts", "api_calls", "user_outcomes"] {
            assert_eq!(count(&pool, table).await, 1, "only the recent row is left in {table}");
        }
        let left = ledger.history(&query("r")).await.unwrap();
        assert_eq!(left[0].job_id, "new");

        // An exact multiple of the batch size ends with one empty probe.
        ledger
            .write(&LedgerBatch {
                calls: (0..4).map(|i| call("r", &["a"], old(i))).collect(),
                ..Default::default()
            })
            .await
            .unwrap();
        let run = ledger
            .prune_batched(cutoff, 2, |_| ControlFlow::Continue(()))
            .await
            .unwrap();
        assert_eq!((run.removed.calls, run.batches, run.complete), (4, 2, true));
        let run = ledger
            .prune_batched(cutoff, 0, |_| ControlFlow::Continue(()))
            .await
            .unwrap();
        assert_eq!(
            run,
            PruneRun {
                complete: true,
                ..PruneRun::default()
            },
            "nothing left; 0 counts as 1"
        );
    }

    #[sqlx::test(migrations = "./migrations")]
    async fn prune_batches_use_the_time_and_primary_key_indexes(pool: PgPool) {
        // Empty tables make seq scans, or a bitmap scan and a sort, cheapest;
        // forbid them so the plan shows that the indexes can serve a batch,
        // in order, as they will on a big table.
        let mut conn = pool.acquire().await.unwrap();
        for off in ["enable_seqscan", "enable_bitmapscan"] {
            sqlx::query(&format!("SET {off} = off"))
                .execute(&mut *conn)
                .await
                .unwrap();
        }
        for (table, index) in [
            (PruneTable::JobReceipts, "job_receipts_received_at"),
            (PruneTable::ApiCalls, "api_calls_started_at"),
            (PruneTable::UserOutcomes, "user_outcomes_at"),
        ] {
            let rows = sqlx::query(&format!("EXPLAIN {}", table.delete_batch_sql()))
                .bind(t(0, 0))
                .bind(10_000_i64)
                .fetch_all(&mut *conn)
                .await
                .unwrap();
            let text = rows
                .iter()
                .map(|r| r.get::<String, _>(0))
                .collect::<Vec<_>>()
                .join("\n");
            assert!(text.contains(index), "{table:?}: {text}");
            assert!(text.contains(&format!("{}_pkey", table.as_str())), "{table:?}: {text}");
            assert!(!text.contains("Sort"), "the index gives the order: {text}");
        }
    }

    #[test]
    fn prune_cutoffs_count_back_from_now_and_stop_at_the_year_1() {
        let now = t(0, 0);
        let year1 = earliest_cutoff();
        let cases = [
            (Duration::ZERO, now),
            (Duration::from_secs(86400), now - chrono::Duration::days(1)),
            (Duration::from_secs(90 * 86400), now - chrono::Duration::days(90)),
            (Duration::from_secs(3000 * 365 * 86400), year1),
            (Duration::MAX, year1),
        ];
        for (age, want) in cases {
            assert_eq!(prune_cutoff(now, age), want, "{age:?}");
        }
    }

    #[sqlx::test(migrations = "./migrations")]
    async fn empty_batch_is_a_no_op(pool: PgPool) {
        Ledger::from_pool(pool.clone())
            .write(&LedgerBatch::default())
            .await
            .unwrap();
        for table in ["job_receipts", "api_calls", "user_outcomes"] {
            assert_eq!(count(&pool, table).await, 0, "{table}");
        }
        // It does not even need a database.
        dead_ledger().write(&LedgerBatch::default()).await.unwrap();
    }

    #[sqlx::test(migrations = "./migrations")]
    async fn ten_thousand_outcomes_in_one_write(pool: PgPool) {
        let ledger = Ledger::from_pool(pool.clone());
        let outcomes: Vec<OutcomeRow> = (0..10_000)
            .map(|i| {
                let o = if i % 2 == 0 {
                    UserOutcome::Kicked
                } else {
                    UserOutcome::RetryScheduled
                };
                outcome(&format!("j{}", i % 10), "big", &format!("u{i}"), o, t(i, 0))
            })
            .collect();
        let batch = LedgerBatch {
            receipts: (0..10)
                .map(|j| receipt(&format!("j{j}"), "big", &["u"], t(0, 0)))
                .collect(),
            outcomes,
            ..Default::default()
        };
        ledger.write(&batch).await.unwrap();
        assert_eq!(count(&pool, "user_outcomes").await, 10_000);
        let newest = ledger
            .history(&HistoryQuery {
                limit: 3,
                ..query("big")
            })
            .await
            .unwrap();
        assert_eq!(
            newest.iter().map(|r| r.user_id.as_str()).collect::<Vec<_>>(),
            vec!["u9999", "u9998", "u9997"]
        );
        let users: Vec<String> = (0..10_000).map(|i| format!("u{i}")).collect();
        let done = ledger.kicked_users("j4", "big", &users).await.unwrap();
        assert_eq!(done.len(), 1000, "j4 holds u4, u14, ...; all even, all kicked");
        assert!(done.contains("u9994") && !done.contains("u9995"));
    }

    #[sqlx::test(migrations = "./migrations")]
    async fn nul_bytes_are_replaced_not_fatal(pool: PgPool) {
        let ledger = Ledger::from_pool(pool);
        let batch = LedgerBatch {
            receipts: vec![ReceiptRow {
                reason: Some("r\0".into()),
                ..receipt("j", "r", &["a\0"], t(0, 0))
            }],
            calls: vec![CallRow {
                message: Some("m\0".into()),
                ..call("r", &["a\0"], t(0, 0))
            }],
            outcomes: vec![OutcomeRow {
                detail: Some("d\0".into()),
                ..outcome("j", "r", "a", UserOutcome::Kicked, t(0, 0))
            }],
        };
        ledger.write(&batch).await.unwrap();
        let back = ledger.history(&query("r")).await.unwrap();
        assert_eq!(back[0].detail.as_deref(), Some("d\u{FFFD}"));
    }

    #[sqlx::test(migrations = "./migrations")]
    async fn a_4_kb_request_id_is_stored_as_its_first_128_bytes(pool: PgPool) {
        let ledger = Ledger::from_pool(pool.clone());
        // Random hex, as a real id would be: PostgreSQL compresses index
        // entries, so a repetitive 4 KB value would fit the index anyway.
        let long: String = (0..256).map(|_| hex::encode(rand::random::<[u8; 8]>())).collect();
        assert_eq!(long.len(), 4096);
        let batch = LedgerBatch {
            calls: vec![CallRow {
                request_id: Some(long.clone()),
                ..call("r", &["a"], t(0, 0))
            }],
            outcomes: vec![OutcomeRow {
                request_id: Some(long.clone()),
                ..outcome("j", "r", "a", UserOutcome::Kicked, t(0, 0))
            }],
            ..Default::default()
        };
        ledger.write(&batch).await.unwrap();
        let stored: String = sqlx::query_scalar("SELECT request_id FROM api_calls")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(stored, long[..crate::zego::client::MAX_REQUEST_ID_BYTES]);
        let back = ledger.history(&query("r")).await.unwrap();
        assert_eq!(back[0].request_id.as_deref(), Some(stored.as_str()));

        // What an unbounded value does to the index: a permanent error.
        let err = sqlx::query("INSERT INTO api_calls (app_id, room_id, user_ids, attempt, request_id, latency, started_at) VALUES (1, 'r', '{}', 1, $1, '0', now())")
            .bind(&long)
            .execute(&pool)
            .await
            .unwrap_err();
        let err = LedgerError::from(err);
        assert!(err.to_string().contains("api_calls_request_id"), "{err}");
        assert!(!err.is_unavailable(), "54000 is permanent, not an outage: {err}");
    }

    #[sqlx::test(migrations = "./migrations")]
    async fn a_failing_statement_rolls_back_the_whole_batch(pool: PgPool) {
        let ledger = Ledger::from_pool(pool.clone());
        sqlx::query("DROP TABLE api_calls").execute(&pool).await.unwrap();
        let batch = LedgerBatch {
            receipts: vec![receipt("j", "r", &["a"], t(0, 0))],
            calls: vec![call("r", &["a"], t(0, 0))],
            outcomes: vec![outcome("j", "r", "a", UserOutcome::Kicked, t(0, 0))],
        };
        let err = ledger.write(&batch).await.unwrap_err();
        assert!(matches!(err, LedgerError::Query(_)), "{err:?}");
        assert!(!err.is_unavailable(), "a SQL error is not an outage");
        assert_eq!(count(&pool, "job_receipts").await, 0, "receipts were rolled back");
    }

    #[sqlx::test(migrations = "./migrations")]
    async fn sql_errors_are_not_unavailable(pool: PgPool) {
        let ledger = Ledger::from_pool(pool.clone());
        sqlx::query("DROP TABLE user_outcomes").execute(&pool).await.unwrap();
        let err = ledger.history(&query("r")).await.unwrap_err();
        assert!(!err.is_unavailable(), "{err}");
        assert!(err.to_string().contains("user_outcomes"), "{err}");
        ledger.ping().await.unwrap();

        // Server-side outage codes, raised for real, are classified as outages.
        for (code, unavailable) in [("57P01", true), ("53300", true), ("23505", false)] {
            let sql = format!("DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '{code}'; END $$");
            let err = LedgerError::from(sqlx::query(&sql).execute(&pool).await.unwrap_err());
            assert_eq!(err.is_unavailable(), unavailable, "{code}: {err}");
        }
    }

    #[tokio::test]
    async fn closed_port_is_unavailable() {
        let ledger = dead_ledger();
        let err = ledger.ping().await.unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
        let batch = LedgerBatch {
            outcomes: vec![outcome("j", "r", "a", UserOutcome::Kicked, t(0, 0))],
            ..Default::default()
        };
        assert!(ledger.write(&batch).await.unwrap_err().is_unavailable());
        assert!(ledger
            .kicked_users("j", "r", &["a".into()])
            .await
            .unwrap_err()
            .is_unavailable());
        assert!(
            ledger.migrate().await.unwrap_err().is_unavailable(),
            "migrate wraps the outage"
        );
    }

    #[tokio::test]
    async fn connect_is_lazy_and_rejects_bad_urls() {
        let err = Ledger::connect("postgres://u:hunter2@127.0.0.1:notaport/db")
            .await
            .unwrap_err();
        assert!(matches!(err, LedgerError::InvalidUrl(_)), "{err:?}");
        assert!(!err.is_unavailable());
        assert!(!err.to_string().contains("hunter2"), "{err}");
        // Lazy: building a pool to a dead address succeeds; using it does not.
        let ledger = Ledger::connect("postgres://u:hunter2@127.0.0.1:1/db").await.unwrap();
        assert!(!format!("{ledger:?}").contains("hunter2"));
    }

    #[sqlx::test(migrations = false)]
    async fn migrate_applies_then_reports_nothing_pending(pool: PgPool) {
        let ledger = Ledger::from_pool(pool.clone());
        let pending = ledger.pending_migrations().await.unwrap();
        assert_eq!(
            pending,
            vec![
                PendingMigration {
                    version: 1,
                    description: "ledger".into()
                },
                PendingMigration {
                    version: 2,
                    description: "done includes halted then resumed".into()
                }
            ]
        );
        ledger.migrate().await.unwrap();
        assert!(ledger.pending_migrations().await.unwrap().is_empty());
        ledger.migrate().await.unwrap();
        assert_eq!(count(&pool, "user_outcomes").await, 0);
    }
}
