//! A strict sliding-window counter over monotonic arrival times, for the mock's rate limit and its peak-rate statistic.

use std::collections::VecDeque;
use std::time::Duration;

/// Counts arrivals in the trailing `span`, exactly: no buckets, so a burst that
/// straddles a second boundary is seen whole.
///
/// Invariant: arrivals are recorded in non-decreasing order (callers take the
/// time under the same lock that records it), so the queue stays sorted and
/// everything older than `now - span` sits at its front.
#[derive(Debug, Clone)]
pub(super) struct SlidingWindow {
    span: Duration,
    arrivals: VecDeque<Duration>,
}

impl SlidingWindow {
    /// An empty window of length `span`.
    pub(super) fn new(span: Duration) -> Self {
        Self {
            span,
            arrivals: VecDeque::new(),
        }
    }

    /// Records an arrival at `now` (time since a fixed origin) and returns how
    /// many arrivals fall in `(now - span, now]`, this one included. An
    /// arrival exactly `span` earlier is outside the window.
    pub(super) fn record(&mut self, now: Duration) -> usize {
        if let Some(cutoff) = now.checked_sub(self.span) {
            while self.arrivals.front().is_some_and(|&t| t <= cutoff) {
                self.arrivals.pop_front();
            }
        }
        self.arrivals.push_back(now);
        self.arrivals.len()
    }

    /// Forgets every arrival.
    pub(super) fn clear(&mut self) {
        self.arrivals.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn counts_by_table() {
        // (arrival ms, expected count in the trailing second after recording it)
        let table: &[(u64, usize)] = &[
            (0, 1),
            (0, 2),
            (500, 3),
            (999, 4),
            (1000, 3),  // the two at 0 are exactly one second old: out
            (1499, 4),  // 500, 999, 1000 and this one
            (1500, 4),  // 500 is exactly one second old: out
            (2499, 2),  // 1500 and this one
            (2500, 2),  // 1500 out: 2499 and this one
            (10000, 1), // everything expired
        ];
        let mut w = SlidingWindow::new(Duration::from_secs(1));
        for &(at, expected) in table {
            assert_eq!(w.record(ms(at)), expected, "arrival at {at} ms");
        }
    }

    #[test]
    fn fifty_one_in_one_second_is_seen_across_a_boundary() {
        let mut w = SlidingWindow::new(Duration::from_secs(1));
        let counts: Vec<usize> = (0..51).map(|i| w.record(ms(500 + i * 19))).collect();
        assert_eq!(
            counts.last(),
            Some(&51),
            "arrivals from 500 ms to 1450 ms are within one second"
        );
    }

    #[test]
    fn clear_forgets() {
        let mut w = SlidingWindow::new(Duration::from_secs(1));
        w.record(ms(1));
        w.record(ms(2));
        w.clear();
        assert_eq!(w.record(ms(3)), 1);
    }
}
