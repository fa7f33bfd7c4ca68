//! What one worker is doing now, for its `/status` and its console: users and groups waiting in the coalescer,
//! calls in flight, calls per second, and each app's calls of the last minutes. Each `Health` has its own, so two
//! workers in one process (tests, the bench) never mix their numbers; the Prometheus gauges stay process-wide.

use crate::metrics::{SecondBuckets, CALL_RATE_WINDOW, CALL_SERIES_WINDOW};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Mutex;
use tokio::time::Instant;

const WINDOW_SECS: usize = CALL_RATE_WINDOW.as_secs() as usize;
const SERIES_SECS: usize = CALL_SERIES_WINDOW.as_secs() as usize;

/// A worker's backlog, calls in flight and call rate now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Snapshot {
    /// Users waiting in the coalescer.
    pub pending_users: usize,
    /// Groups waiting in the coalescer.
    pub pending_groups: usize,
    /// Calls started and not yet answered.
    pub calls_in_flight: i64,
    /// API calls answered (or failed) in the last [`CALL_RATE_WINDOW`], per second.
    pub calls_per_sec: f64,
}

/// A call in flight, counted until dropped ([`Live::call_started`]).
pub(crate) struct InFlight<'a>(&'a Live);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.calls_in_flight.fetch_sub(1, Ordering::Relaxed);
        crate::metrics::calls_in_flight(-1.0);
    }
}

/// The live figures of one worker (see the module docs).
#[derive(Debug)]
pub(crate) struct Live {
    pending_users: AtomicUsize,
    pending_groups: AtomicUsize,
    calls_in_flight: AtomicI64,
    calls: Mutex<SecondBuckets<WINDOW_SECS>>,
    app_calls: Mutex<BTreeMap<u32, SecondBuckets<SERIES_SECS>>>,
    started: Instant,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            pending_users: AtomicUsize::new(0),
            pending_groups: AtomicUsize::new(0),
            calls_in_flight: AtomicI64::new(0),
            calls: Mutex::new(SecondBuckets::new()),
            app_calls: Mutex::new(BTreeMap::new()),
            started: Instant::now(),
        }
    }
}

impl Live {
    fn now_sec(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// The coalescer's backlog now.
    pub(crate) fn set_pending(&self, users: usize, groups: usize) {
        self.pending_users.store(users, Ordering::Relaxed);
        self.pending_groups.store(groups, Ordering::Relaxed);
        crate::metrics::pending(users, groups);
    }

    /// A call went out: it is in flight until the guard is dropped (when
    /// its chunk is done, or dropped at a stop).
    pub(crate) fn call_started(&self) -> InFlight<'_> {
        self.calls_in_flight.fetch_add(1, Ordering::Relaxed);
        crate::metrics::calls_in_flight(1.0);
        InFlight(self)
    }

    /// `n` calls of `app_id` came back (answered, or failed in transport):
    /// they count in the call rate and in the app's series.
    pub(crate) fn calls_answered(&self, app_id: u32, n: usize) {
        let sec = self.now_sec();
        if let Ok(mut w) = self.calls.lock() {
            (0..n).for_each(|_| w.record(sec));
        }
        if let Ok(mut m) = self.app_calls.lock() {
            let b = m.entry(app_id).or_default();
            (0..n).for_each(|_| b.record(sec));
        }
    }

    /// The backlog, calls in flight and call rate now.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let calls = self.calls.lock().map(|w| w.count(self.now_sec())).unwrap_or(0);
        // Within the first minute, average over the time the worker has run.
        let span = self.started.elapsed().min(CALL_RATE_WINDOW).as_secs_f64().max(1.0);
        Snapshot {
            pending_users: self.pending_users.load(Ordering::Relaxed),
            pending_groups: self.pending_groups.load(Ordering::Relaxed),
            calls_in_flight: self.calls_in_flight.load(Ordering::Relaxed),
            calls_per_sec: calls as f64 / span,
        }
    }

    /// An AppId's calls answered in each second of the last
    /// [`CALL_SERIES_WINDOW`], oldest first (the current second last; every
    /// value 0 for an AppId that made none).
    pub(crate) fn app_call_series(&self, app_id: u32) -> Vec<u64> {
        let now = self.now_sec();
        self.app_calls
            .lock()
            .ok()
            .and_then(|m| m.get(&app_id).map(|b| b.series(now)))
            .unwrap_or_else(|| vec![0; SERIES_SECS])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn two_workers_keep_their_own_numbers() {
        let (a, b) = (Live::default(), Live::default());
        a.set_pending(7, 2);
        let held = a.call_started();
        drop(a.call_started());
        a.calls_answered(1, 1);
        drop(b.call_started());
        b.calls_answered(2, 2);
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        let (sa, sb) = (a.snapshot(), b.snapshot());
        assert_eq!((sa.pending_users, sa.pending_groups, sa.calls_in_flight), (7, 2, 1));
        assert_eq!((sb.pending_users, sb.pending_groups, sb.calls_in_flight), (0, 0, 0));
        assert_eq!((sa.calls_per_sec, sb.calls_per_sec), (1.0, 2.0));
        assert_eq!(a.app_call_series(1).iter().sum::<u64>(), 1);
        assert_eq!(a.app_call_series(2).iter().sum::<u64>(), 0);
        assert_eq!(b.app_call_series(2).iter().sum::<u64>(), 2);
        assert_eq!(b.app_call_series(2).len(), SERIES_SECS);
        drop(held);
        assert_eq!(a.snapshot().calls_in_flight, 0, "a dropped call leaves the count");
    }
}
