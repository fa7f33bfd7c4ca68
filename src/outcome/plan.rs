//! The pure decision of what to do with one user's result: done, retry later, defer (halt), or dead-letter.

use crate::amqp::headers::DeadError;
use crate::zego::codes::{Disposition, RetryKind};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// Default most API attempts for a user before dead-lettering `retries_exhausted`.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;
/// Default most attempts when the API answers a code we do not know: such a
/// code may be permanent, so it gets a short budget before a human looks.
pub const DEFAULT_MAX_UNKNOWN_ATTEMPTS: u32 = 3;
/// Default longest time from a user's first attempt to giving up.
pub const DEFAULT_MAX_RETRY_AGE: Duration = Duration::from_secs(15 * 60);

/// The retry budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Most attempts in all.
    pub max_attempts: u32,
    /// Most attempts when the last code was unknown.
    pub max_unknown_attempts: u32,
    /// Longest from first attempt to giving up.
    pub max_age: Duration,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            max_unknown_attempts: DEFAULT_MAX_UNKNOWN_ATTEMPTS,
            max_age: DEFAULT_MAX_RETRY_AGE,
        }
    }
}

/// What to do with a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Resolved: kicked.
    Kicked,
    /// Resolved: nothing to do (room gone, user not in it).
    NothingToDo,
    /// Publish to the delay queue for `failed_attempt` (1-based), with the
    /// attempt count raised to it.
    Retry {
        /// The attempt that just failed.
        failed_attempt: u32,
        /// Metric label.
        kind: &'static str,
    },
    /// The AppId is halted: hand the user back unchanged (attempts not raised).
    Defer,
    /// Publish to the dead-letter queue.
    DeadLetter(DeadError),
}

/// Decides for one user of one job. `attempts` is what the job had already
/// made; `first_attempt_at` is when its first attempt was (None: this was it).
pub fn plan(
    disposition: Disposition,
    attempts: u32,
    first_attempt_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    budget: &Budget,
) -> Action {
    let failed_attempt = attempts + 1;
    let retry = |max: u32, kind: &'static str| {
        let age = first_attempt_at.map_or(Duration::ZERO, |t| (now - t).to_std().unwrap_or_default());
        if failed_attempt >= max || age >= budget.max_age {
            Action::DeadLetter(DeadError::RetriesExhausted)
        } else {
            Action::Retry { failed_attempt, kind }
        }
    };
    match disposition {
        Disposition::Kicked => Action::Kicked,
        Disposition::NothingToDo => Action::NothingToDo,
        Disposition::Retry(RetryKind::Transient) => retry(budget.max_attempts, "transient"),
        Disposition::Retry(RetryKind::UnknownCode) => retry(budget.max_unknown_attempts, "unknown_code"),
        Disposition::RateLimited => retry(budget.max_attempts, "rate_limited"),
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

    #[test]
    fn decision_table() {
        let now = Utc::now();
        let b = Budget::default();
        let minutes = |m: i64| Some(now - chrono::Duration::minutes(m));
        use Action::*;
        let cases: Vec<(Disposition, u32, Option<DateTime<Utc>>, Action)> = vec![
            (Disposition::Kicked, 0, None, Kicked),
            (Disposition::NothingToDo, 3, minutes(1), NothingToDo),
            (
                Disposition::Retry(RetryKind::Transient),
                0,
                None,
                Retry {
                    failed_attempt: 1,
                    kind: "transient",
                },
            ),
            (
                Disposition::Retry(RetryKind::Transient),
                6,
                minutes(5),
                Retry {
                    failed_attempt: 7,
                    kind: "transient",
                },
            ),
            (
                Disposition::Retry(RetryKind::Transient),
                7,
                minutes(5),
                DeadLetter(DeadError::RetriesExhausted),
            ),
            (
                Disposition::Retry(RetryKind::Transient),
                2,
                minutes(15),
                DeadLetter(DeadError::RetriesExhausted),
            ),
            (
                Disposition::Retry(RetryKind::UnknownCode),
                1,
                minutes(1),
                Retry {
                    failed_attempt: 2,
                    kind: "unknown_code",
                },
            ),
            (
                Disposition::Retry(RetryKind::UnknownCode),
                2,
                minutes(1),
                DeadLetter(DeadError::RetriesExhausted),
            ),
            (
                Disposition::RateLimited,
                0,
                None,
                Retry {
                    failed_attempt: 1,
                    kind: "rate_limited",
                },
            ),
            (Disposition::DeadLetter, 0, None, DeadLetter(DeadError::Permanent)),
            (Disposition::Halt, 5, minutes(14), Defer),
            (Disposition::Halt, 50, minutes(500), Defer),
        ];
        for (d, attempts, first, want) in cases {
            assert_eq!(plan(d, attempts, first, now, &b), want, "{d:?} after {attempts}");
        }
    }
}
