//! Leadership of a shard: the lease that makes at most one worker active (its rules and their proof), the
//! record the active worker leaves its successor, and the pure decision of how long a new holder waits before
//! its first call.
//!
//! # The lease
//!
//! Each shard has a lease queue `{ns}.leader.lease`: a quorum queue with
//! single active consumer (SAC), holding one token message. Every worker of
//! the shard consumes it with a prefetch of 1; the broker delivers to the
//! active consumer only, so the worker that receives the token is the
//! candidate leader, and the others, waiting consumers, are standbys holding
//! no deliveries. The holder renews every [`RENEW_INTERVAL`]: it hands the
//! token back (`basic.nack` with requeue; every [`REPLACE_AFTER`] deliveries
//! it publishes a fresh token and acks the old one instead, so that the
//! token's delivery count and the queue's Raft log stay small) and waits for
//! the next delivery. The lease runs [`LEASE`] from the instant the renewal
//! was sent, once its delivery has come back; no call starts after it ends
//! (the gate refuses tokens, and the session ends, so its deliveries go back
//! to the queue). Nothing here rests on exclusive queues, whose records of a
//! lost node RabbitMQ 4.2 with Khepri keeps until the node returns.
//!
//! # Why at most one worker calls at any instant
//!
//! Assumptions: quorum queue semantics as in `rabbit_fifo` from 3.10 to 4.2
//! (a delivery goes only to the active consumer; the active consumer
//! changes only when it cancels, its channel closes, or the queue's leader
//! sees its node down (`noconnection`), and then the next consumer is
//! activated and receives the token); each host's monotonic clock runs at
//! the rate of real time (drift of parts per million, far inside the
//! margins); and `LEASE < WINDOW`-sized margins hold as written below.
//!
//! 1. A delivery after a renewal sent at `s` proves that the queue's leader
//!    processed that renewal and still saw this worker as its active
//!    consumer at some instant `q >= s` (prefetch 1: no other delivery can
//!    be on its way while the token is held).
//! 2. The holder A calls only while `now < s + LEASE` for the latest such `s`.
//! 3. A new holder B is activated at `T`, after the queue stopped seeing A as
//!    active, so `T > q >= s` for A's last proven renewal: A's last call
//!    starts before `T + LEASE`.
//! 4. B receives the token at `R >= T` and makes its first call at
//!    `R + LEASE + WINDOW` or later ([`takeover_hold`]). So B's first call is
//!    at least one rate window after A's last, and the two never overlap.
//!
//! A partition that cuts A's broker node off: A's renewals get no answer, so
//! A stops within `LEASE`, while the others take at least the cluster's
//! failure detection (`net_ticktime`, 45 to 75 s by default) to activate B.
//! A worker killed with `kill -9`: its socket closes, the broker returns the
//! token at once, and B calls `LEASE + WINDOW` later (1.77 s).
//!
//! # Why a record
//!
//! A graceful stop need not cost its successor the full hold. The holder
//! keeps its record in `{ns}.leader.record` (`x-max-length` 1): `active`
//! when it takes the token and every 250 ms after; on a graceful release,
//! once its last call has returned, the instant from which no call can share
//! a window with any of its own, before it lets the token go. A release
//! record is true of its writer whoever reads it, because the writer makes
//! no call after writing it. A new holder takes (consumes) the record when
//! it is activated and writes its own `active` one, refreshed, so a release
//! speaks for a later holder only if it landed after that holder's last
//! refresh and that holder then died without releasing, within 250 ms (a
//! release whose writer's lease connection dropped mid-write; the residual
//! risk is that narrow, and the Released hold never exceeds one window past
//! the release's own last call).
//!
//! Times in the record are wall-clock milliseconds, because two processes
//! share no monotonic clock. Hosts of one deployment are expected to run NTP;
//! the hold is capped at [`MAX_HOLD`] so a skewed clock can delay a takeover
//! by at most that, never for ever.

use crate::ratelimit::WINDOW;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long a confirmed renewal keeps the lease: far below the cluster's
/// failure detection (net_ticktime, 60 s by default), so a worker cut off
/// from the lease queue stops long before anyone else is activated; short
/// enough that a takeover after `kill -9` holds `LEASE + WINDOW`, under 2 s.
pub(crate) const LEASE: Duration = Duration::from_millis(750);
/// How often the holder renews: five renewals per lease, so a renewal whose
/// round trip takes up to `LEASE - RENEW_INTERVAL` (600 ms: a broker busy
/// with a fsync or a GC pause) costs nothing.
pub(crate) const RENEW_INTERVAL: Duration = Duration::from_millis(150);
/// Deliveries of one token after which a renewal publishes a fresh token
/// (and acks the old one) instead of handing it back: about 45 s of
/// renewals. It keeps the token far below any delivery limit, and lets the
/// quorum queue truncate its log (a message that never leaves holds it).
/// While publishing is blocked (a broker alarm) renewals hand the token back.
pub(crate) const REPLACE_AFTER: i64 = 300;
/// How long a standby waits for the token before it says it stands by.
pub(crate) const STANDBY_AFTER: Duration = Duration::from_millis(300);
/// Longest hold a record can impose, and the hold when nothing is known of
/// the previous holder: its lease, then a window.
pub(crate) const MAX_HOLD: Duration = Duration::from_millis(LEASE.as_millis() as u64 + WINDOW.as_millis() as u64);

/// Whether a renewal replaces the token instead of handing it back: the
/// token has been delivered `delivery_count` times (the broker's
/// `x-delivery-count`, absent on a first delivery).
pub(crate) fn should_replace(delivery_count: Option<i64>) -> bool {
    delivery_count.is_some_and(|n| n >= REPLACE_AFTER)
}

/// What the holder of the lock last wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub(crate) enum Record {
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
    pub(crate) fn to_body(self) -> Vec<u8> {
        serde_json::to_vec(&self).expect("a record always serialises")
    }

    /// Reads a record body; `None` for anything else (it is then treated as
    /// no record: the full window).
    pub(crate) fn from_body(body: &[u8]) -> Option<Record> {
        serde_json::from_slice(body).ok()
    }
}

/// Why a new holder waits as long as it does (for the takeover log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HoldReason {
    /// No record: nothing is known of the last holder, so its lease and a window.
    NoRecord,
    /// A graceful release: until its window frees.
    Released,
    /// The previous holder was active and did not release (a crash, a lost
    /// connection, a partition): its lease and a window.
    Crashed,
}

impl HoldReason {
    /// The label in logs.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            HoldReason::NoRecord => "no_record",
            HoldReason::Released => "released",
            HoldReason::Crashed => "crashed",
        }
    }
}

/// The wall-clock millisecond before which a new holder, activated at
/// `now_ms`, makes no call, from the record it took.
pub(crate) fn takeover_hold(record: Option<Record>, now_ms: i64) -> (i64, HoldReason) {
    let full = now_ms + MAX_HOLD.as_millis() as i64;
    match record {
        None => (full, HoldReason::NoRecord),
        Some(Record::Released { free_at_ms }) => (free_at_ms.min(full), HoldReason::Released),
        Some(Record::Active { .. }) => (full, HoldReason::Crashed),
    }
}

/// Wall-clock milliseconds now.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Converts a wall-clock millisecond to an instant on tokio's clock.
pub(crate) fn instant_of(ms: i64, now_ms: i64) -> tokio::time::Instant {
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
pub(crate) fn ms_of(at: tokio::time::Instant, now_ms: i64) -> i64 {
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
        let full = now + LEASE.as_millis() as i64 + WINDOW.as_millis() as i64;
        use HoldReason::*;
        let cases: Vec<(Option<Record>, i64, HoldReason)> = vec![
            (None, full, NoRecord),
            // A graceful release long ago, or an idle system: no wait at all.
            (
                Some(Record::Released {
                    free_at_ms: now - 5_000,
                }),
                now - 5_000,
                Released,
            ),
            // A release mid-sweep: until the last call's window ends.
            (Some(Record::Released { free_at_ms: now + 700 }), now + 700, Released),
            // A holder that did not release, however fresh or old its
            // record: its lease may still run, then a window.
            (Some(Record::Active { at_ms: now - 100 }), full, Crashed),
            (Some(Record::Active { at_ms: now - 3_600_000 }), full, Crashed),
            // A record from a clock far ahead is capped.
            (
                Some(Record::Released {
                    free_at_ms: now + 3_600_000,
                }),
                full,
                Released,
            ),
        ];
        for (record, want, reason) in cases {
            assert_eq!(takeover_hold(record, now), (want, reason), "{record:?}");
        }
        assert_eq!(MAX_HOLD, Duration::from_millis(1770), "the hold after a crash");
        assert!(LEASE + WINDOW < Duration::from_secs(2), "kill -9 takeover within 2 s");
        assert!(RENEW_INTERVAL * 5 == LEASE);
    }

    #[test]
    fn a_token_is_replaced_once_it_was_delivered_often() {
        for (count, want) in [
            (None, false),
            (Some(1), false),
            (Some(REPLACE_AFTER - 1), false),
            (Some(REPLACE_AFTER), true),
            (Some(1_000_000), true),
        ] {
            assert_eq!(should_replace(count), want, "{count:?}");
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
