//! Failed authentications per client address (wrong bearer tokens at the intake and the console, wrong console
//! logins): past a few in a window, the address is refused (429) before any token is compared, until the window
//! ends.
//!
//! The decision is a pure function of the address's strikes and the time
//! ([`verdict`]), tested by table; [`Throttle`] keeps the strikes, bounded.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed authentications an address may make in one [`FAILURE_WINDOW`]:
/// enough for a person who mistypes or pastes an old token a few times,
/// far too few to guess a 128-bit token.
pub(crate) const MAX_FAILURES: u32 = 10;

/// The window over which failures count, from an address's first failure:
/// once it ends the address starts afresh.
pub(crate) const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Addresses whose strikes are kept at once; past it the oldest window is
/// forgotten first. A bound on the memory that a spread of addresses can
/// take.
pub(crate) const MAX_ADDRESSES: usize = 10_000;

/// One address's failures in its current window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Strikes {
    /// When the window began (its first failure).
    pub since: Instant,
    /// Failures in it.
    pub count: u32,
}

/// What to do with a request from an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Compare its token.
    Allow,
    /// Refuse it unread; the window ends after this.
    Refuse(Duration),
}

/// The verdict for an address with `strikes` at `now`.
pub(crate) fn verdict(strikes: Option<Strikes>, now: Instant) -> Verdict {
    match strikes {
        Some(s) if s.count >= MAX_FAILURES => {
            let ends = s.since + FAILURE_WINDOW;
            match ends.checked_duration_since(now) {
                Some(left) if !left.is_zero() => Verdict::Refuse(left),
                _ => Verdict::Allow,
            }
        }
        _ => Verdict::Allow,
    }
}

/// `strikes` after one more failure at `now`: a window that has ended
/// starts again.
pub(crate) fn strike(strikes: Option<Strikes>, now: Instant) -> Strikes {
    match strikes {
        Some(s) if now.saturating_duration_since(s.since) < FAILURE_WINDOW => Strikes {
            since: s.since,
            count: s.count.saturating_add(1),
        },
        _ => Strikes { since: now, count: 1 },
    }
}

/// The strikes of every address that failed lately.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    strikes: Mutex<HashMap<IpAddr, Strikes>>,
}

impl Throttle {
    /// The verdict for `ip` now (an unknown address is never refused).
    pub(crate) fn check(&self, ip: Option<IpAddr>, now: Instant) -> Verdict {
        let Some(ip) = ip else { return Verdict::Allow };
        let strikes = self.strikes.lock().expect("no panic holds the throttle lock");
        verdict(strikes.get(&ip).copied(), now)
    }

    /// Records a failed authentication from `ip`.
    pub(crate) fn failed(&self, ip: Option<IpAddr>, now: Instant) {
        let Some(ip) = ip else { return };
        let mut strikes = self.strikes.lock().expect("no panic holds the throttle lock");
        if strikes.len() >= MAX_ADDRESSES && !strikes.contains_key(&ip) {
            strikes.retain(|_, s| now.saturating_duration_since(s.since) < FAILURE_WINDOW);
            if strikes.len() >= MAX_ADDRESSES {
                if let Some(oldest) = strikes.iter().min_by_key(|(_, s)| s.since).map(|(k, _)| *k) {
                    strikes.remove(&oldest);
                }
            }
        }
        let next = strike(strikes.get(&ip).copied(), now);
        strikes.insert(ip, next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_by_table() {
        let t0 = Instant::now();
        let s = |count, ago: u64| Some(Strikes { since: t0, count }).map(|s| (s, t0 + Duration::from_secs(ago)));
        let cases = [
            (None, Verdict::Allow),
            (s(1, 0), Verdict::Allow),
            (s(MAX_FAILURES - 1, 5), Verdict::Allow),
            (s(MAX_FAILURES, 5), Verdict::Refuse(Duration::from_secs(55))),
            (s(MAX_FAILURES + 40, 59), Verdict::Refuse(Duration::from_secs(1))),
            (s(MAX_FAILURES, 60), Verdict::Allow),
            (s(MAX_FAILURES, 600), Verdict::Allow),
        ];
        for (case, want) in cases {
            let (strikes, now) = case.map_or((None, t0), |(s, now)| (Some(s), now));
            assert_eq!(verdict(strikes, now), want, "{strikes:?}");
        }
    }

    #[test]
    fn strikes_count_within_a_window_and_start_again_after_it() {
        let t0 = Instant::now();
        let first = strike(None, t0);
        assert_eq!(first, Strikes { since: t0, count: 1 });
        let second = strike(Some(first), t0 + Duration::from_secs(59));
        assert_eq!(second, Strikes { since: t0, count: 2 });
        let later = t0 + FAILURE_WINDOW;
        assert_eq!(strike(Some(second), later), Strikes { since: later, count: 1 });
    }

    #[test]
    fn an_address_is_refused_after_its_failures_and_others_are_not() {
        let th = Throttle::default();
        let t0 = Instant::now();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..MAX_FAILURES {
            assert_eq!(th.check(Some(a), t0), Verdict::Allow);
            th.failed(Some(a), t0);
        }
        assert!(matches!(th.check(Some(a), t0), Verdict::Refuse(_)));
        assert_eq!(th.check(Some(b), t0), Verdict::Allow);
        assert_eq!(th.check(None, t0), Verdict::Allow, "an unknown address is not refused");
        assert_eq!(th.check(Some(a), t0 + FAILURE_WINDOW), Verdict::Allow);
    }
}
