//! The pure decision of what to do with one user's result: done, retry later, defer (halt), or dead-letter.

use crate::amqp::headers::DeadError;
use crate::zego::codes::{Disposition, RetryKind};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// Default most API attempts for a user before dead-lettering `retries_exhausted`.
pub(crate) const DEFAULT_MAX_ATTEMPTS: u32 = 8;
/// Default most attempts when the API answers a code we do not know: such a
/// code may be permanent, so it gets a short budget before a human looks.
pub(crate) const DEFAULT_MAX_UNKNOWN_ATTEMPTS: u32 = 3;
/// Default longest time from a user's first attempt to giving up, not
/// counting time spent halted.
pub(crate) const DEFAULT_MAX_RETRY_AGE: Duration = Duration::from_secs(15 * 60);
/// Default most rate answers (7, 206) for a user before dead-lettering
/// `retries_exhausted`. A rate answer says nothing about the call, so it does
/// not spend `max_attempts`; the gate's slow-down is the response to it. This
/// cap only stops a mis-set rate from looping for ever: at the shortest
/// delay it allows minutes of rate answers.
pub(crate) const DEFAULT_MAX_RATE_LIMITED: u32 = 100;

/// The retry budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Most attempts in all.
    pub max_attempts: u32,
    /// Most attempts when the last code was unknown.
    pub max_unknown_attempts: u32,
    /// Longest from first attempt to giving up, time halted excluded.
    pub max_age: Duration,
    /// Most rate answers (counted apart from attempts).
    pub max_rate_limited: u32,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            max_unknown_attempts: DEFAULT_MAX_UNKNOWN_ATTEMPTS,
            max_age: DEFAULT_MAX_RETRY_AGE,
            max_rate_limited: DEFAULT_MAX_RATE_LIMITED,
        }
    }
}

/// What a user's job has spent so far (from its retry headers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Spent {
    /// Failed API attempts (`kickq-attempts`); rate answers are not among them.
    pub attempts: u32,
    /// Rate answers (`kickq-rate-limited`).
    pub rate_limited: u32,
    /// When the first attempt was (None: this delivery makes it).
    pub first_attempt_at: Option<DateTime<Utc>>,
    /// Time these users spent held by a halt (`kickq-halted-ms`): it does not
    /// count against `max_age`.
    pub halted_for: Duration,
}

impl Spent {
    /// Time since the first attempt, minus time halted.
    pub(crate) fn age(&self, now: DateTime<Utc>) -> Duration {
        let since = self
            .first_attempt_at
            .map_or(Duration::ZERO, |t| (now - t).to_std().unwrap_or_default());
        since.saturating_sub(self.halted_for)
    }
}

/// What to do with a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Resolved: kicked.
    Kicked,
    /// Resolved: nothing to do (room gone, user not in it).
    NothingToDo,
    /// Publish to a delay queue with these counts in its headers.
    Retry {
        /// Failed attempts so far, this one included if it counts.
        attempts: u32,
        /// Rate answers so far, this one included if it was one.
        rate_limited: u32,
        /// Metric label.
        kind: &'static str,
    },
    /// The AppId is halted: hand the user back unchanged (attempts not raised).
    Defer,
    /// Publish to the dead-letter queue.
    DeadLetter(DeadError),
}

/// Decides for one user of one job, from what the job had `spent` before
/// this delivery.
pub(crate) fn plan(disposition: Disposition, spent: &Spent, now: DateTime<Utc>, budget: &Budget) -> Action {
    let failed_attempt = spent.attempts + 1;
    let retry = |max: u32, kind: &'static str| {
        if failed_attempt >= max || spent.age(now) >= budget.max_age {
            Action::DeadLetter(DeadError::RetriesExhausted)
        } else {
            Action::Retry {
                attempts: failed_attempt,
                rate_limited: spent.rate_limited,
                kind,
            }
        }
    };
    match disposition {
        Disposition::Kicked => Action::Kicked,
        Disposition::NothingToDo => Action::NothingToDo,
        Disposition::Retry(RetryKind::Transient) => retry(budget.max_attempts, "transient"),
        Disposition::Retry(RetryKind::UnknownCode) => retry(budget.max_unknown_attempts, "unknown_code"),
        Disposition::RateLimited if spent.rate_limited + 1 >= budget.max_rate_limited => {
            Action::DeadLetter(DeadError::RetriesExhausted)
        }
        Disposition::RateLimited => Action::Retry {
            attempts: spent.attempts,
            rate_limited: spent.rate_limited + 1,
            kind: "rate_limited",
        },
        Disposition::DeadLetter => Action::DeadLetter(DeadError::Permanent),
        Disposition::Halt => Action::Defer,
        // The dispatcher resolves these with further calls; one reaching here
        // is treated as a plain retry rather than lost.
        Disposition::SplitUsers | Disposition::ShrinkChunk => retry(budget.max_attempts, "transient"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spent_at(
        now: DateTime<Utc>,
        attempts: u32,
        rate_limited: u32,
        first_min_ago: Option<i64>,
        halted_min: u64,
    ) -> Spent {
        Spent {
            attempts,
            rate_limited,
            first_attempt_at: first_min_ago.map(|m| now - chrono::Duration::minutes(m)),
            halted_for: Duration::from_secs(halted_min * 60),
        }
    }

    #[test]
    fn decision_table() {
        let now = Utc::now();
        let spent = |a, r, f, h| spent_at(now, a, r, f, h);
        let b = Budget::default();
        use Action::*;
        let retry = |attempts, rate_limited, kind| Retry {
            attempts,
            rate_limited,
            kind,
        };
        let transient = Disposition::Retry(RetryKind::Transient);
        let cases: Vec<(Disposition, Spent, Action)> = vec![
            (Disposition::Kicked, spent(0, 0, None, 0), Kicked),
            (Disposition::NothingToDo, spent(3, 0, Some(1), 0), NothingToDo),
            (transient, spent(0, 0, None, 0), retry(1, 0, "transient")),
            (transient, spent(6, 0, Some(5), 0), retry(7, 0, "transient")),
            (
                transient,
                spent(7, 0, Some(5), 0),
                DeadLetter(DeadError::RetriesExhausted),
            ),
            (
                transient,
                spent(2, 0, Some(15), 0),
                DeadLetter(DeadError::RetriesExhausted),
            ),
            // One transient failure, then a 20-minute halt, then another
            // transient failure: the halt does not count, so it is retried.
            (transient, spent(1, 0, Some(21), 20), retry(2, 0, "transient")),
            (
                transient,
                spent(1, 0, Some(36), 20),
                DeadLetter(DeadError::RetriesExhausted),
            ),
            (
                Disposition::Retry(RetryKind::UnknownCode),
                spent(1, 0, Some(1), 0),
                retry(2, 0, "unknown_code"),
            ),
            (
                Disposition::Retry(RetryKind::UnknownCode),
                spent(2, 0, Some(1), 0),
                DeadLetter(DeadError::RetriesExhausted),
            ),
            // Rate answers spend their own cap, not attempts, and not age.
            (
                Disposition::RateLimited,
                spent(0, 0, None, 0),
                retry(0, 1, "rate_limited"),
            ),
            (
                Disposition::RateLimited,
                spent(7, 20, Some(30), 0),
                retry(7, 21, "rate_limited"),
            ),
            (
                Disposition::RateLimited,
                spent(0, DEFAULT_MAX_RATE_LIMITED - 1, None, 0),
                DeadLetter(DeadError::RetriesExhausted),
            ),
            // After many rate answers, a transient failure still has its attempts.
            (transient, spent(0, 40, Some(1), 0), retry(1, 40, "transient")),
            (
                Disposition::DeadLetter,
                spent(0, 0, None, 0),
                DeadLetter(DeadError::Permanent),
            ),
            (Disposition::Halt, spent(5, 0, Some(14), 0), Defer),
            (Disposition::Halt, spent(50, 0, Some(500), 0), Defer),
        ];
        for (d, sp, want) in cases {
            assert_eq!(plan(d, &sp, now, &b), want, "{d:?} after {sp:?}");
        }
    }

    #[test]
    fn age_excludes_time_halted_and_never_underflows() {
        let now = Utc::now();
        let spent = |a, r, f, h| spent_at(now, a, r, f, h);
        assert_eq!(spent(0, 0, None, 0).age(now), Duration::ZERO);
        let a = spent(1, 0, Some(30), 20).age(now);
        assert!(a >= Duration::from_secs(599) && a <= Duration::from_secs(601), "{a:?}");
        assert_eq!(spent(1, 0, Some(5), 20).age(now), Duration::ZERO);
    }
}
