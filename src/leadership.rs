//! Leadership of a namespace: the broker lock that makes exactly one worker active, the record the active
//! worker keeps for its successor, and the pure decision of how long a new holder waits before its first call.
//!
//! # Why a lock queue
//!
//! Single active consumer (SAC) alone cannot tell a standby that it is a
//! standby: AMQP 0-9-1 says nothing to the waiting consumer, so a standby
//! under a deep backlog looks exactly like a starved consumer, and it cannot
//! know when it took over (so it cannot prime its rate window at the right
//! moment). The lock is an exclusive, auto-delete queue `{ns}.leader`,
//! declared on the connection that consumes. The broker lets one connection
//! own it and answers `RESOURCE_LOCKED` (405) to every other; it deletes the
//! queue when its owner's connection goes, so a crash releases the lock as
//! soon as the broker sees the socket close. Only the holder consumes; the
//! others retry the declaration every [`LOCK_RETRY`] and hold no deliveries.
//! SAC stays on the queues as a second guard.
//!
//! # Why a record
//!
//! A new holder must not call before the previous holder's last window has
//! passed, or the AppId's rate doubles for a second. The holder keeps one
//! message in `{ns}.leader.record` (`x-max-length` 1): refreshed every
//! [`REFRESH_INTERVAL`] while active, and rewritten on a graceful release
//! with the instant its rate window frees. [`takeover_hold`] turns what the
//! successor finds there into the instant of its first call.
//!
//! Times in the record are wall-clock milliseconds, because two processes
//! share no monotonic clock. Hosts of one deployment are expected to run NTP;
//! the hold is capped at [`MAX_HOLD`] so a skewed clock can delay a takeover
//! by at most that, never for ever.

use crate::ratelimit::WINDOW;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How often a standby tries to take the lock. A crash is noticed by the
/// broker at once (the socket closes), so this is most of the takeover gap.
pub const LOCK_RETRY: Duration = Duration::from_millis(250);
/// How often the active worker refreshes its record. After a crash the
/// successor waits the last refresh plus this plus one window.
pub const REFRESH_INTERVAL: Duration = Duration::from_millis(250);
/// Longest hold a record can impose: one window and two refreshes past now.
pub const MAX_HOLD: Duration =
    Duration::from_millis(WINDOW.as_millis() as u64 + 2 * REFRESH_INTERVAL.as_millis() as u64);
/// A record of an active holder older than this, when the lock was just
/// held by someone, means the holder was alive but could not refresh (a
/// broker alarm blocks publishing): nothing is known of its last calls.
pub const STALE_AFTER: Duration = Duration::from_millis(3 * REFRESH_INTERVAL.as_millis() as u64);

/// What the holder of the lock last wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Record {
    /// The holder was active at `at_ms` and refreshing.
    Active {
        /// Wall-clock milliseconds of this refresh.
        at_ms: i64,
    },
    /// The holder released the lock after its last call had returned.
    Released {
        /// Wall-clock milliseconds from which a call cannot share a window
        /// with any call of the holder (its last call start plus a window,
        /// or the hold it inherited, whichever is later).
        free_at_ms: i64,
    },
}

impl Record {
    /// The JSON body of the record message.
    pub fn to_body(self) -> Vec<u8> {
        serde_json::to_vec(&self).expect("a record always serialises")
    }

    /// Reads a record body; `None` for anything else (it is then treated as
    /// no record: the full window).
    pub fn from_body(body: &[u8]) -> Option<Record> {
        serde_json::from_slice(body).ok()
    }
}

/// Why a new holder waits as long as it does (for the takeover log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldReason {
    /// No record: nothing is known of the last window, so a full one.
    NoRecord,
    /// A graceful release: until its window frees.
    Released,
    /// The holder crashed: its last refresh, one refresh interval and a window.
    Crashed,
    /// The holder was alive but its record stale: a full window from now.
    Stale,
}

impl HoldReason {
    /// The label in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            HoldReason::NoRecord => "no_record",
            HoldReason::Released => "released",
            HoldReason::Crashed => "crashed",
            HoldReason::Stale => "stale",
        }
    }
}

/// The wall-clock millisecond before which a new holder makes no call.
/// `contended` is true when this process saw the lock held (it was a
/// standby), so the previous holder was alive a moment ago.
pub fn takeover_hold(record: Option<Record>, now_ms: i64, contended: bool) -> (i64, HoldReason) {
    let window = WINDOW.as_millis() as i64;
    let refresh = REFRESH_INTERVAL.as_millis() as i64;
    let (at, reason) = match record {
        None => (now_ms + window, HoldReason::NoRecord),
        Some(Record::Released { free_at_ms }) => (free_at_ms, HoldReason::Released),
        Some(Record::Active { at_ms }) if contended && now_ms - at_ms > STALE_AFTER.as_millis() as i64 => {
            (now_ms + window, HoldReason::Stale)
        }
        // The lock was held a moment ago: the holder lived until about now,
        // and a refresh can land up to STALE_AFTER late, so count from the
        // earlier of the two safe bounds.
        Some(Record::Active { at_ms }) if contended => (
            (at_ms + STALE_AFTER.as_millis() as i64).min(now_ms) + window,
            HoldReason::Crashed,
        ),
        Some(Record::Active { at_ms }) => (at_ms + refresh + window, HoldReason::Crashed),
    };
    (at.min(now_ms + MAX_HOLD.as_millis() as i64), reason)
}

/// Wall-clock milliseconds now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Converts a wall-clock millisecond to an instant on tokio's clock.
pub fn instant_of(ms: i64, now_ms: i64) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    let ahead = ms - now_ms;
    if ahead > 0 {
        now + Duration::from_millis(ahead as u64)
    } else {
        now.checked_sub(Duration::from_millis(ahead.unsigned_abs()))
            .unwrap_or(now)
    }
}

/// Converts an instant on tokio's clock to wall-clock milliseconds.
pub fn ms_of(at: tokio::time::Instant, now_ms: i64) -> i64 {
    let now = tokio::time::Instant::now();
    if at >= now {
        now_ms + (at - now).as_millis() as i64
    } else {
        now_ms - (now - at).as_millis() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takeover_hold_table() {
        let now = 1_000_000;
        let w = WINDOW.as_millis() as i64;
        let r = REFRESH_INTERVAL.as_millis() as i64;
        let cap = now + MAX_HOLD.as_millis() as i64;
        use HoldReason::*;
        let cases: Vec<(Option<Record>, bool, i64, HoldReason)> = vec![
            (None, false, now + w, NoRecord),
            (None, true, now + w, NoRecord),
            // A graceful release long ago, or an idle system: no wait at all.
            (
                Some(Record::Released {
                    free_at_ms: now - 5_000,
                }),
                true,
                now - 5_000,
                Released,
            ),
            // A release mid-sweep: until the last call's window ends.
            (
                Some(Record::Released { free_at_ms: now + 700 }),
                true,
                now + 700,
                Released,
            ),
            // A crash a moment ago, seen by a standby: the holder lived until
            // about now, so a window from now.
            (Some(Record::Active { at_ms: now - 100 }), true, now + w, Crashed),
            (Some(Record::Active { at_ms: now - 700 }), true, now + w, Crashed),
            // The lock was free when we came: the holder died before we
            // started, after its last refresh: that, one interval, a window.
            (
                Some(Record::Active { at_ms: now - 100 }),
                false,
                now - 100 + r + w,
                Crashed,
            ),
            // A holder that died an hour ago (a fresh start after it): no wait.
            (
                Some(Record::Active { at_ms: now - 3_600_000 }),
                false,
                now - 3_600_000 + r + w,
                Crashed,
            ),
            // The lock was held just now but the record is old: refreshes
            // were blocked, so nothing is known: a full window.
            (Some(Record::Active { at_ms: now - 20_000 }), true, now + w, Stale),
            // A record from a clock far ahead is capped.
            (
                Some(Record::Released {
                    free_at_ms: now + 3_600_000,
                }),
                true,
                cap,
                Released,
            ),
            (Some(Record::Active { at_ms: now + 3_600_000 }), false, cap, Crashed),
        ];
        for (record, contended, want, reason) in cases {
            assert_eq!(
                takeover_hold(record, now, contended),
                (want, reason),
                "{record:?} contended={contended}"
            );
        }
    }

    #[test]
    fn records_round_trip_and_junk_is_no_record() {
        for r in [Record::Active { at_ms: 5 }, Record::Released { free_at_ms: 9 }] {
            assert_eq!(Record::from_body(&r.to_body()), Some(r));
        }
        assert_eq!(
            String::from_utf8(Record::Released { free_at_ms: 9 }.to_body()).unwrap(),
            r#"{"state":"released","free_at_ms":9}"#
        );
        assert_eq!(Record::from_body(b"{}"), None);
        assert_eq!(Record::from_body(b"\xff"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn wall_and_monotonic_clocks_convert_both_ways() {
        let now = 50_000;
        let later = instant_of(now + 300, now);
        assert_eq!(later - tokio::time::Instant::now(), Duration::from_millis(300));
        assert_eq!(ms_of(later, now), now + 300);
        tokio::time::advance(Duration::from_secs(1)).await;
        let earlier = instant_of(now - 200, now);
        assert_eq!(ms_of(earlier, now), now - 200);
    }
}
