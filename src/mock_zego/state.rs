//! What the mock remembers: every call, every kicked user, and the counters served at `/_mock/state`.

use super::window::SlidingWindow;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Totals since start or the last reset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Requests to the API endpoint, whatever their outcome.
    pub calls: u64,
    /// HTTP 200 answers by return code (rate-limited ones under 206).
    pub by_code: BTreeMap<i64, u64>,
    /// Answers of 206 from the rate limit (equal to `by_code[206]` unless a
    /// fault rule answers 206 too).
    pub rate_limited: u64,
    /// HTTP 500 answers from fault rules.
    pub http_errors: u64,
    /// Connections dropped without an answer by a reset rule.
    pub resets: u64,
    /// Calls held without an answer by a hang rule.
    pub hangs: u64,
    /// The most requests to the API endpoint that arrived within any 1-second
    /// sliding window, computed exactly from arrival times.
    pub max_calls_in_1s: u64,
    /// The same counts for each AppId, over the requests that passed its
    /// authentication; an AppId appears once a request for it does.
    #[serde(default)]
    pub by_app: BTreeMap<u32, AppCounters>,
}

/// One AppId's totals: requests signed for it that passed authentication.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppCounters {
    /// Authenticated requests, whatever their outcome.
    pub calls: u64,
    /// HTTP 200 answers by return code (rate-limited ones under 206).
    pub by_code: BTreeMap<i64, u64>,
    /// Answers of 206 from this AppId's rate limit.
    pub rate_limited: u64,
    /// HTTP 500 answers from fault rules.
    pub http_errors: u64,
    /// Connections dropped without an answer by a reset rule.
    pub resets: u64,
    /// Calls held without an answer by a hang rule.
    pub hangs: u64,
    /// The most authenticated requests within any 1-second sliding window:
    /// the figure this AppId's rate limit is checked against.
    pub max_calls_in_1s: u64,
}

/// One request to the API endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// Arrival, in milliseconds since the mock started, from a monotonic clock.
    pub at_ms: u64,
    /// The same arrival in microseconds, for latency figures finer than a
    /// millisecond (the bench maps it onto its own clock through
    /// [`super::MockZego::started`]).
    #[serde(default)]
    pub at_us: u64,
    /// The signed AppId; `None` when the call failed authentication.
    pub app_id: Option<u32>,
    /// `RoomId` as decoded; `None` when absent, empty or repeated.
    pub room_id: Option<String>,
    /// Every `UserId[]` value as decoded, in order.
    pub user_ids: Vec<String>,
    /// `CustomReason` as decoded; `None` when absent, empty or repeated.
    pub reason: Option<String>,
    /// The return code answered; `None` when there was no JSON answer (HTTP
    /// 500, reset, hang).
    pub code: Option<i64>,
    /// The HTTP status answered; `None` for a reset or a hang.
    pub http_status: Option<u16>,
}

/// One user kicked by a call answered with code 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kicked {
    /// The AppId the call was signed for.
    pub app_id: u32,
    /// The room.
    pub room_id: String,
    /// The user.
    pub user_id: String,
    /// The call's `CustomReason`.
    pub reason: Option<String>,
}

/// Everything `/_mock/calls` serves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallLog {
    /// Calls in the order they were decided.
    pub calls: Vec<CallRecord>,
    /// Kicks in the order they happened.
    pub kicked: Vec<Kicked>,
}

/// How a recorded call was answered, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// HTTP 200 JSON with this code.
    Code(i64),
    /// The rate limit's 206.
    RateLimited,
    /// HTTP 500.
    Http500,
    /// Connection dropped.
    Reset,
    /// Held until shutdown.
    Hang,
}

/// Adds one `answer` to the totals of `c`, a [`Counters`] or an
/// [`AppCounters`] (same field names).
macro_rules! tally {
    ($c:expr, $answer:expr) => {{
        let c = &mut $c;
        match $answer {
            Answer::Code(code) => *c.by_code.entry(code).or_default() += 1,
            Answer::RateLimited => {
                c.rate_limited += 1;
                *c.by_code.entry(super::verify::RATE_LIMITED).or_default() += 1;
            }
            Answer::Http500 => c.http_errors += 1,
            Answer::Reset => c.resets += 1,
            Answer::Hang => c.hangs += 1,
        }
    }};
}

/// The records and counters. Not synchronised: the mock keeps it under its one lock.
#[derive(Debug)]
pub struct Records {
    counters: Counters,
    log: CallLog,
    arrivals: SlidingWindow,
}

impl Default for Records {
    fn default() -> Self {
        Self {
            counters: Counters::default(),
            log: CallLog::default(),
            arrivals: SlidingWindow::new(Duration::from_secs(1)),
        }
    }
}

impl Records {
    /// Counts a request arriving at `now` (monotonic, non-decreasing) and
    /// returns its `at_ms`.
    pub fn arrive(&mut self, now: Duration) -> u64 {
        self.counters.calls += 1;
        let in_window = self.arrivals.record(now) as u64;
        self.counters.max_calls_in_1s = self.counters.max_calls_in_1s.max(in_window);
        u64::try_from(now.as_millis()).unwrap_or(u64::MAX)
    }

    /// Counts a request that passed `app_id`'s authentication, with
    /// `in_window` of them (this one included) in its trailing second.
    pub fn authenticated(&mut self, app_id: u32, in_window: usize) {
        let c = self.counters.by_app.entry(app_id).or_default();
        c.calls += 1;
        c.max_calls_in_1s = c.max_calls_in_1s.max(in_window as u64);
    }

    /// Stores a decided call; `record.code` and `record.http_status` must
    /// agree with `answer`, and `record.app_id` is set only for a call that
    /// passed [`Records::authenticated`].
    pub fn record(&mut self, record: CallRecord, answer: Answer) {
        tally!(self.counters, answer);
        if let Some(app_id) = record.app_id {
            tally!(self.counters.by_app.entry(app_id).or_default(), answer);
        }
        self.log.calls.push(record);
    }

    /// Stores the users kicked by a successful call signed for `app_id`.
    pub fn kick(&mut self, app_id: u32, room_id: &str, user_ids: &[String], reason: Option<&str>) {
        self.log.kicked.extend(user_ids.iter().map(|u| Kicked {
            app_id,
            room_id: room_id.to_owned(),
            user_id: u.clone(),
            reason: reason.map(str::to_owned),
        }));
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> Counters {
        self.counters.clone()
    }

    /// A snapshot of the log.
    pub fn log(&self) -> &CallLog {
        &self.log
    }

    /// Forgets everything.
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(code: Option<i64>, http_status: Option<u16>) -> CallRecord {
        CallRecord {
            at_ms: 0,
            at_us: 0,
            app_id: Some(1),
            room_id: Some("r".into()),
            user_ids: vec!["u".into()],
            reason: None,
            code,
            http_status,
        }
    }

    #[test]
    fn counters_follow_answers() {
        let mut r = Records::default();
        for (i, answer) in [
            Answer::Code(0),
            Answer::Code(0),
            Answer::Code(50002),
            Answer::RateLimited,
            Answer::Http500,
            Answer::Reset,
            Answer::Hang,
        ]
        .into_iter()
        .enumerate()
        {
            r.arrive(Duration::from_millis(i as u64 * 100));
            r.record(record(None, None), answer);
        }
        r.kick(1, "r", &["a".into(), "b".into()], Some("x"));
        let c = r.counters();
        assert_eq!(c.calls, 7);
        assert_eq!(c.by_code, BTreeMap::from([(0, 2), (206, 1), (50002, 1)]));
        assert_eq!((c.rate_limited, c.http_errors, c.resets, c.hangs), (1, 1, 1, 1));
        assert_eq!(c.max_calls_in_1s, 7);
        assert_eq!(r.log().calls.len(), 7);
        assert_eq!(r.log().kicked[1].user_id, "b");
        assert_eq!(r.log().kicked[1].app_id, 1);
        assert_eq!(c.by_app[&1].by_code, c.by_code, "every record is for AppId 1");
        r.reset();
        assert_eq!(r.counters(), Counters::default());
        assert!(r.log().kicked.is_empty());
    }

    #[test]
    fn per_app_counters_follow_authenticated_calls_only() {
        let mut r = Records::default();
        let for_app = |app_id: Option<u32>| CallRecord {
            app_id,
            ..record(None, None)
        };
        r.arrive(Duration::ZERO);
        r.authenticated(1, 1);
        r.record(for_app(Some(1)), Answer::Code(0));
        r.arrive(Duration::ZERO);
        r.authenticated(1, 2);
        r.record(for_app(Some(1)), Answer::RateLimited);
        r.arrive(Duration::ZERO);
        r.authenticated(2, 1);
        r.record(for_app(Some(2)), Answer::Http500);
        r.arrive(Duration::ZERO);
        r.record(for_app(None), Answer::Code(100000005));
        let c = r.counters();
        assert_eq!((c.calls, c.max_calls_in_1s), (4, 4));
        let one = &c.by_app[&1];
        assert_eq!((one.calls, one.rate_limited, one.max_calls_in_1s), (2, 1, 2));
        assert_eq!(one.by_code, BTreeMap::from([(0, 1), (206, 1)]));
        let two = &c.by_app[&2];
        assert_eq!((two.calls, two.http_errors, two.max_calls_in_1s), (1, 1, 1));
        assert!(two.by_code.is_empty());
        assert_eq!(c.by_app.len(), 2, "the unauthenticated call is in no app");
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains(r#""by_app":{"1":{"calls":2"#), "{json}");
        assert_eq!(serde_json::from_str::<Counters>(&json).unwrap(), c);
    }

    #[test]
    fn peak_rate_is_the_busiest_second() {
        let mut r = Records::default();
        // 3 in the first second, then 5 between 1.5 s and 2.4 s, then 1.
        for ms in [0, 300, 600, 1500, 1700, 1900, 2100, 2400, 5000] {
            r.arrive(Duration::from_millis(ms));
        }
        assert_eq!(r.counters().max_calls_in_1s, 5);
        assert_eq!(r.arrive(Duration::from_millis(5001)), 5001);
    }

    #[test]
    fn counters_json_round_trips() {
        let mut c = Counters::default();
        c.by_code.insert(100000005, 2);
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains(r#""100000005":2"#), "{json}");
        assert_eq!(serde_json::from_str::<Counters>(&json).unwrap(), c);
    }
}
