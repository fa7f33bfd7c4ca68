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
//!
//! One file per concern: `handle.rs` (the handle: pool, connect, migrations), `error.rs` (what failed, and whether waiting helps),
//! `rows.rs` (what is written), `write.rs` (the batched writes), `read.rs`
//! (history and the redelivery skip), `prune.rs` (retention), `idempotency.rs` (the HTTP intake's keys), `query.rs` (a
//! history question in words). The tests that need PostgreSQL are an
//! integration test, `tests/it/ledger_store.rs`, against the database named
//! by `DATABASE_URL` (read by `#[sqlx::test]`, which makes a fresh database
//! per test), so `cargo test --lib` needs none.

pub(crate) mod error;
mod handle;
mod idempotency;
pub(crate) mod prune;
pub(crate) mod query;
pub(crate) mod read;
mod rows;
pub(crate) mod write;

pub use error::LedgerError;
pub use handle::{Ledger, PendingMigration, ACQUIRE_TIMEOUT, APPLICATION_NAME, DEFAULT_DEDUPE_WINDOW, MAX_CONNECTIONS};
pub use idempotency::IdempotencyRow;
pub use prune::{prune_cutoff, PruneCounts, PruneProgress, PruneRun, PruneTable, PRUNE_BATCH_ROWS};
pub use read::{HistoryQuery, HistoryRow};
pub use rows::{CallRow, LedgerBatch, OutcomeRow, ReceiptRow, UnknownOutcome, UserOutcome};
