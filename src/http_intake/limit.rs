//! The per-token request rate cap of the HTTP intake: a token bucket per token (pure [`take`], tested by table),
//! and the map of buckets the handler asks.

use crate::access::tokens::TokenId;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token's bucket: requests it may still make at once, as of `at` (time
/// since the limiter started). It refills at the rate and holds at most one
/// second of it, so a client may burst a second's worth, then keeps the rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Bucket {
    tokens: f64,
    at: Duration,
}

/// Whether one request may go now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// It may.
    Allow,
    /// Not before this wait (the `Retry-After`, rounded up to a second by the handler).
    Deny(Duration),
}

/// Takes one request from `bucket` (none yet: a full one) at `now`, for
/// `rate` requests a second. Pure.
pub(crate) fn take(bucket: Option<Bucket>, now: Duration, rate: u32) -> (Bucket, Verdict) {
    let rate = f64::from(rate.max(1));
    let b = bucket.unwrap_or(Bucket { tokens: rate, at: now });
    let elapsed = now.saturating_sub(b.at).as_secs_f64();
    let tokens = (b.tokens + elapsed * rate).min(rate);
    if tokens >= 1.0 {
        (
            Bucket {
                tokens: tokens - 1.0,
                at: now,
            },
            Verdict::Allow,
        )
    } else {
        let wait = Duration::from_secs_f64((1.0 - tokens) / rate);
        (Bucket { tokens, at: now }, Verdict::Deny(wait))
    }
}

/// Most buckets kept: one a token that was used. Past it the full (idle)
/// ones are dropped, which forgets nothing (a full bucket is a new one).
const MAX_BUCKETS: usize = 1024;

/// The buckets of every token, for `rate` requests a second each.
#[derive(Debug)]
pub(crate) struct Limiter {
    rate: u32,
    start: Instant,
    buckets: Mutex<HashMap<TokenId, Bucket>>,
}

impl Limiter {
    pub(crate) fn new(rate: u32) -> Limiter {
        Limiter {
            rate,
            start: Instant::now(),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// One request of `token`, now.
    pub(crate) fn check(&self, token: &TokenId) -> Verdict {
        let now = self.start.elapsed();
        let mut buckets = self.buckets.lock().expect("no panic holds the bucket lock");
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(token) {
            let rate = self.rate;
            buckets.retain(|_, b| take(Some(*b), now, rate).0.tokens < f64::from(rate.max(1)) - 1.0);
        }
        let (bucket, verdict) = take(buckets.get(token).copied(), now, self.rate);
        buckets.insert(*token, bucket);
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Requests at the given times (ms) at 2/s: the verdicts.
    #[test]
    fn bucket_by_table() {
        let deny = |n| Verdict::Deny(ms(n));
        let cases: &[(u32, &[u64], &[Verdict])] = &[
            // A burst of the rate passes, the next waits for a token.
            (2, &[0, 0, 0], &[Verdict::Allow, Verdict::Allow, deny(500)]),
            // Half a second refills one.
            (2, &[0, 0, 500], &[Verdict::Allow, Verdict::Allow, Verdict::Allow]),
            (2, &[0, 0, 250], &[Verdict::Allow, Verdict::Allow, deny(250)]),
            // A denied request costs nothing: the wait keeps shrinking.
            (
                2,
                &[0, 0, 100, 400, 510],
                &[Verdict::Allow, Verdict::Allow, deny(400), deny(100), Verdict::Allow],
            ),
            // Idle time never banks more than one second's worth.
            (
                2,
                &[0, 10_000, 10_000, 10_000],
                &[Verdict::Allow, Verdict::Allow, Verdict::Allow, deny(500)],
            ),
            (
                1,
                &[0, 0, 999, 1010],
                &[Verdict::Allow, deny(1000), deny(1), Verdict::Allow],
            ),
        ];
        for (rate, times, want) in cases {
            let mut bucket = None;
            let got: Vec<Verdict> = times
                .iter()
                .map(|t| {
                    let (b, v) = take(bucket, ms(*t), *rate);
                    bucket = Some(b);
                    match v {
                        // Float arithmetic: compare to the millisecond.
                        Verdict::Deny(d) => Verdict::Deny(ms((d.as_secs_f64() * 1000.0).round() as u64)),
                        v => v,
                    }
                })
                .collect();
            assert_eq!(&got, want, "rate {rate}, times {times:?}");
        }
    }

    #[test]
    fn tokens_have_buckets_of_their_own() {
        let l = Limiter::new(1);
        assert_eq!(l.check(&[1; 32]), Verdict::Allow);
        assert!(matches!(l.check(&[1; 32]), Verdict::Deny(_)));
        assert_eq!(l.check(&[2; 32]), Verdict::Allow);
    }
}
