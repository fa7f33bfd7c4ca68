//! `Idempotency-Key` of the HTTP intake: the key's rules, the pure decision (fresh, replay, conflict), and where
//! keys are kept (the ledger when it is on, else a bounded map in memory).

use crate::ledger::{IdempotencyRow, Ledger, LedgerError};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

/// How long a key answers with its first job ids: a day covers any client's
/// retry schedule, and keeps the ledger's table small.
pub(super) const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Longest key accepted: room for any UUID or ULID with a prefix.
pub(super) const MAX_KEY_BYTES: usize = 255;
/// Most keys kept in memory without the ledger; past it (or past
/// [`MEMORY_JOB_IDS`]) the oldest key is forgotten first (a retry after that
/// publishes again).
pub(crate) const DEFAULT_MEMORY_KEYS: usize = 100_000;
/// Most job ids kept in memory over all keys: one 1 MiB body may hold tens of
/// thousands of jobs, so the key count alone would not bound memory. A
/// million ids of at most 128 bytes is at most about 150 MB, and far less
/// for the usual 36-byte UUIDs.
pub(super) const MEMORY_JOB_IDS: usize = 1_000_000;
/// Same-key requests wait for each other on one of this many locks (picked
/// by the key's hash), so a retry racing its original publishes nothing twice.
pub(crate) const KEY_LOCKS: usize = 64;

/// A key the intake refuses (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Idempotency-Key must be 1 to {MAX_KEY_BYTES} visible ASCII characters")]
pub(crate) struct BadKey;

/// The key of an `Idempotency-Key` header value, checked.
pub(crate) fn parse_key(raw: &[u8]) -> Result<String, BadKey> {
    let ok = !raw.is_empty() && raw.len() <= MAX_KEY_BYTES && raw.iter().all(|b| (0x21..=0x7e).contains(b));
    match ok {
        true => Ok(String::from_utf8(raw.to_vec()).expect("visible ASCII is UTF-8")),
        false => Err(BadKey),
    }
}

/// What a request is compared by: its lane and its body, byte for byte.
pub(crate) fn request_hash(lane: &str, body: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(lane.as_bytes());
    h.update([0u8]);
    h.update(body);
    h.finalize().to_vec()
}

/// What to do with a request whose key was seen (or not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Unknown key, or known past the window: publish.
    Fresh,
    /// The same request again: answer these job ids, publish nothing.
    Replay(Vec<String>),
    /// The key was used for another request (422).
    Conflict,
}

/// The decision for a request hashing to `hash`, given what is stored under its key. Pure.
pub(crate) fn decide(stored: Option<&IdempotencyRow>, hash: &[u8], now: DateTime<Utc>) -> Decision {
    match stored {
        Some(row) if now.signed_duration_since(row.created_at) < window() => {
            if row.body_sha256 == hash {
                Decision::Replay(row.job_ids.clone())
            } else {
                Decision::Conflict
            }
        }
        _ => Decision::Fresh,
    }
}

fn window() -> chrono::Duration {
    chrono::Duration::from_std(IDEMPOTENCY_WINDOW).expect("a day fits")
}

/// Keys kept in memory, oldest first out.
#[derive(Debug)]
pub(crate) struct Memory {
    cap: usize,
    rows: HashMap<String, IdempotencyRow>,
    order: VecDeque<String>,
    /// Job ids held over all rows (bounded by [`MEMORY_JOB_IDS`]).
    ids: usize,
}

impl Memory {
    pub(crate) fn new(cap: usize) -> Memory {
        Memory {
            cap: cap.max(1),
            rows: HashMap::new(),
            order: VecDeque::new(),
            ids: 0,
        }
    }

    fn get(&self, key: &str) -> Option<IdempotencyRow> {
        self.rows.get(key).cloned()
    }

    fn put(&mut self, key: &str, row: IdempotencyRow, now: DateTime<Utc>) {
        // A key stored again (past its window) takes the newest place.
        if let Some(old) = self.rows.remove(key) {
            self.ids -= old.job_ids.len();
            self.order.retain(|k| k != key);
        }
        let cutoff = now - window();
        while let Some(oldest) = self.order.front() {
            let expired = self.rows.get(oldest).is_none_or(|r| r.created_at < cutoff);
            let full = self.rows.len() >= self.cap || self.ids + row.job_ids.len() > MEMORY_JOB_IDS;
            if !expired && !full {
                break;
            }
            let oldest = self.order.pop_front().expect("front was Some");
            if let Some(gone) = self.rows.remove(&oldest) {
                self.ids -= gone.job_ids.len();
            }
        }
        self.ids += row.job_ids.len();
        self.rows.insert(key.to_owned(), row);
        self.order.push_back(key.to_owned());
    }
}

/// Where keys live.
#[derive(Debug)]
pub(crate) enum Store {
    /// In this process only: lost at restart, not shared between workers.
    Memory(Mutex<Memory>),
    /// In the ledger's `http_idempotency` table, shared by every worker of the namespace.
    Ledger { ledger: Ledger, namespace: String },
}

impl Store {
    /// What is stored under `key`, if anything newer than the window.
    pub(crate) async fn get(&self, key: &str, now: DateTime<Utc>) -> Result<Option<IdempotencyRow>, LedgerError> {
        match self {
            Store::Memory(m) => Ok(m.lock().expect("no panic holds the key map").get(key)),
            Store::Ledger { ledger, namespace } => ledger.idempotency_get(namespace, key, now - window()).await,
        }
    }

    /// Records the answer of `key`.
    pub(crate) async fn put(&self, key: &str, row: IdempotencyRow, now: DateTime<Utc>) -> Result<(), LedgerError> {
        match self {
            Store::Memory(m) => {
                m.lock().expect("no panic holds the key map").put(key, row, now);
                Ok(())
            }
            Store::Ledger { ledger, namespace } => {
                ledger.idempotency_put(namespace, key, &row, now - window()).await?;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(hash: &[u8], ids: &[&str], at: DateTime<Utc>) -> IdempotencyRow {
        IdempotencyRow {
            body_sha256: hash.to_vec(),
            job_ids: ids.iter().map(|s| s.to_string()).collect(),
            created_at: at,
        }
    }

    #[test]
    fn decisions_by_table() {
        let now = DateTime::parse_from_rfc3339("2026-11-30T10:00:00Z").unwrap().to_utc();
        let hour = chrono::Duration::hours(1);
        let cases = [
            (None, b"h".as_slice(), Decision::Fresh),
            (
                Some(row(b"h", &["a", "b"], now - hour)),
                b"h",
                Decision::Replay(vec!["a".into(), "b".into()]),
            ),
            (Some(row(b"h", &["a"], now - hour)), b"other", Decision::Conflict),
            (
                Some(row(b"h", &["a"], now - hour * 23)),
                b"h",
                Decision::Replay(vec!["a".into()]),
            ),
            (Some(row(b"h", &["a"], now - hour * 24)), b"h", Decision::Fresh),
            (Some(row(b"h", &["a"], now - hour * 25)), b"other", Decision::Fresh),
        ];
        for (stored, hash, want) in cases {
            assert_eq!(decide(stored.as_ref(), hash, now), want, "{stored:?}");
        }
    }

    #[test]
    fn keys_by_table() {
        let long = "k".repeat(MAX_KEY_BYTES);
        let too_long = "k".repeat(MAX_KEY_BYTES + 1);
        let cases: &[(&[u8], bool)] = &[
            (b"0190c6d0-5a1b-7c3d-9e8f-0123456789ab", true),
            (long.as_bytes(), true),
            (too_long.as_bytes(), false),
            (b"", false),
            (b"a b", false),
            (b"a\tb", false),
            ("é".as_bytes(), false),
        ];
        for (raw, ok) in cases {
            assert_eq!(parse_key(raw).is_ok(), *ok, "{raw:?}");
        }
    }

    #[test]
    fn the_hash_covers_lane_and_body() {
        assert_eq!(request_hash("live", b"{}"), request_hash("live", b"{}"));
        assert_ne!(request_hash("live", b"{}"), request_hash("bulk", b"{}"));
        assert_ne!(request_hash("live", b"{}"), request_hash("live", b"{ }"));
    }

    #[test]
    fn memory_is_bounded_and_forgets_the_oldest_and_the_expired() {
        let now = Utc::now();
        let mut m = Memory::new(2);
        m.put("a", row(b"1", &["ja"], now), now);
        m.put("b", row(b"2", &["jb"], now), now);
        m.put("c", row(b"3", &["jc"], now), now);
        assert!(m.get("a").is_none(), "the oldest goes first");
        assert!(m.get("b").is_some() && m.get("c").is_some());
        let later = now + chrono::Duration::hours(25);
        m.put("d", row(b"4", &["jd"], later), later);
        assert!(
            m.get("b").is_none() && m.get("c").is_none(),
            "expired keys go on insert"
        );
        assert_eq!(m.get("d").unwrap().job_ids, vec!["jd".to_string()]);
        assert_eq!((m.rows.len(), m.order.len(), m.ids), (1, 1, 1));
        // Stored again, a key takes the newest place: the other goes first.
        m.put("e", row(b"5", &["je"], later), later);
        m.put("d", row(b"4", &["jd"], later), later);
        m.put("f", row(b"6", &["jf"], later), later);
        assert!(m.get("e").is_none() && m.get("d").is_some() && m.get("f").is_some());
    }

    /// The job ids held over all keys are bounded, not only the key count.
    #[test]
    fn memory_is_bounded_by_job_ids_too() {
        let now = Utc::now();
        let mut m = Memory::new(1000);
        let big: Vec<String> = (0..MEMORY_JOB_IDS / 2 + 1).map(|i| i.to_string()).collect();
        let big: Vec<&str> = big.iter().map(String::as_str).collect();
        m.put("a", row(b"1", &big, now), now);
        m.put("b", row(b"2", &big, now), now);
        assert!(m.get("a").is_none(), "two halves and one over do not fit");
        assert!(m.get("b").is_some());
        assert_eq!(m.ids, big.len());
    }
}
