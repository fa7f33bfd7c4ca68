//! One AppId's budget, pure (every method takes `now`): the sliding window and its places, the round-trip floor,
//! spacing, slow-down, halt and probes, and the chunk size. The rule and its proof are in the module docs.

use crate::zego::MAX_USERS_PER_CALL;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// Added to the 1-second window: (A1)'s margin in the module docs, the room
/// for a round-trip floor measured a little above the true one (the
/// fastest of a few hundred jittered samples) and for timers that wake late.
/// 20 ms costs 2% of peak throughput.
pub(crate) const WINDOW_MARGIN: Duration = Duration::from_millis(20);
/// How long a measured round trip stays in the floor ([`RttFloor`]). A floor
/// that is too low only costs throughput (places count later than they
/// need), so a long memory is safe; it is what lets the floor rise again
/// when the path to the gateway gets longer.
pub(crate) const RTT_MEMORY: Duration = Duration::from_secs(10);
/// Answers in [`RTT_MEMORY`] before the floor is used: the fastest of fewer
/// samples may stand well above the true fastest round trip (the sampling
/// error that [`WINDOW_MARGIN`] covers once there are this many). Four
/// seconds of calls at the documented rate.
pub(crate) const RTT_MIN_SAMPLES: usize = 200;

/// Where an answered call's place in the window goes (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Counting {
    /// From its estimated arrival at the gateway: the answer less the
    /// fastest recent round trip.
    #[default]
    Arrival,
    /// From its answer: safe without any estimate, and a window plus a whole
    /// round trip per token (the bench's baseline).
    Answer,
}

/// The fastest round trip among recent answers: a sliding-window minimum
/// (a monotonic queue), with the number of samples in the window.
#[derive(Debug, Default)]
pub(crate) struct RttFloor {
    /// (when measured, round trip), round trips increasing front to back.
    mins: VecDeque<(Instant, Duration)>,
    /// When each sample in the memory was measured, oldest first.
    samples: VecDeque<Instant>,
}

impl RttFloor {
    /// Adds a round trip measured at `now`.
    pub(crate) fn add(&mut self, rtt: Duration, now: Instant) {
        self.expire(now);
        while self.mins.back().is_some_and(|&(_, r)| r >= rtt) {
            self.mins.pop_back();
        }
        self.mins.push_back((now, rtt));
        self.samples.push_back(now);
    }

    fn expire(&mut self, now: Instant) {
        let old = |t: Instant| t + RTT_MEMORY <= now;
        while self.mins.front().is_some_and(|&(t, _)| old(t)) {
            self.mins.pop_front();
        }
        while self.samples.front().is_some_and(|&t| old(t)) {
            self.samples.pop_front();
        }
    }

    /// The floor at `now`: `None` with fewer than [`RTT_MIN_SAMPLES`] samples
    /// in memory.
    pub(crate) fn floor(&mut self, now: Instant) -> Option<Duration> {
        self.expire(now);
        (self.samples.len() >= RTT_MIN_SAMPLES)
            .then(|| self.mins.front().map(|&(_, r)| r))
            .flatten()
    }
}
/// The window every budget counts over: the API's second plus the margin.
pub(crate) const WINDOW: Duration = Duration::from_millis(1000 + WINDOW_MARGIN.as_millis() as u64);
/// How early a call may start against its even spacing: more than the
/// timer's 1 ms granularity, far less than the spacing at any sane rate.
pub(crate) const SPACING_TOLERANCE: Duration = Duration::from_millis(3);
/// Lowest fraction of the configured rate the slow-down may reach, so a burst
/// of rate answers never stops an AppId completely.
pub(crate) const MIN_RATE_FACTOR: f64 = 0.1;
/// How fast a slowed AppId recovers: this fraction of the configured rate per
/// second without a rate signal (full recovery from half speed in 5 s).
pub(crate) const RECOVERY_PER_SEC: f64 = 0.1;
/// Default interval between probe calls while an AppId is halted.
pub(crate) const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(30);
/// Successful calls after which a chunk size shrunk by 50011 grows by one
/// user again: one second of calls at the documented rate, so one stray
/// 50011 costs a few seconds of smaller calls, not a permanent factor of 2,
/// while an API that really wants fewer users answers 50011 again at once.
pub(crate) const GROW_AFTER_SUCCESSES: u32 = 50;

/// What the gate says when asked for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Grant {
    /// A call may start now; the start is recorded.
    Now,
    /// A probe call may start now: the AppId is halted and this one call tests
    /// whether the API accepts us again.
    Probe,
    /// No token before this instant.
    Later(Instant),
}

/// The state of one AppId's budget.
///
/// Invariants: `starts` holds at most `limit` instants, oldest first, all
/// within the last window; `factor` is in `[MIN_RATE_FACTOR, 1]`;
/// `chunk_size` is in `1..=MAX_USERS_PER_CALL`.
#[derive(Debug)]
pub(crate) struct AppBudget {
    limit: u32,
    window: Duration,
    starts: VecDeque<Instant>,
    /// Theoretical start of the next evenly spaced call (GCRA).
    last_start: Option<Instant>,
    factor: f64,
    factor_updated: Instant,
    last_slow_down: Option<Instant>,
    /// The code of the last rate answer that slowed it down.
    slow_down_code: i64,
    halt: Option<Halt>,
    probe_interval: Duration,
    chunk_size: usize,
    /// Successes since the chunk size last changed (see [`GROW_AFTER_SUCCESSES`]).
    successes_at_size: u32,
    /// No call before this instant: set when this process takes the
    /// leadership lock, from what the previous holder left (see `leadership`).
    not_before: Option<Instant>,
    /// No call from this instant on: the end of this process's leadership
    /// lease (see `leadership`); `None` where no lease governs the budget
    /// (the bench's bare runs, tests of the gate alone).
    lease_until: Option<Instant>,
    /// Where an answered call's place goes.
    counting: Counting,
    /// The fastest recent round trip, for [`Counting::Arrival`].
    pub(super) rtt: RttFloor,
    /// Tokens spent by the gate's callers ([`Gate::take`], [`Gate::acquire`])
    /// whose calls have not come back yet: their places stay in the window
    /// however long they take (a call slower than a window may reach the
    /// gateway late), until [`AppBudget::sent`] or [`UNANSWERED_AFTER`].
    in_flight: Vec<Instant>,
}

/// After this long an in-flight token that was never reported (its call
/// abandoned: a session that ended mid-call) stops holding its place. Far
/// above any call's life (the HTTP client's total timeout, 10 s by default).
pub(crate) const UNANSWERED_AFTER: Duration = Duration::from_secs(60);

/// How soon a budget whose next place is held by a call still in flight
/// after a whole window is asked again: that call's answer frees it.
pub(crate) const IN_FLIGHT_RECHECK: Duration = Duration::from_millis(20);

/// How soon a budget whose lease has run out is asked again: a renewal that
/// comes back late extends the lease, and the coalescer then goes on.
pub(crate) const LEASE_RECHECK: Duration = Duration::from_millis(20);

/// How far, why and since when an AppId runs below its rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Slowed {
    /// The fraction of its rate it runs at now.
    pub factor: f64,
    /// The rate answer's code (7 or 206).
    pub code: i64,
    /// When the last rate answer halved its rate.
    pub since: Instant,
}

/// Why and since when an AppId is halted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Halt {
    /// The API code that halted it.
    pub code: i64,
    /// When the halt began.
    pub since: Instant,
    /// Earliest time of the next probe call.
    pub next_probe: Instant,
    /// When the halt was last logged, so the log stays at one line per interval.
    pub logged_at: Option<Instant>,
}

impl AppBudget {
    /// A budget of `limit` calls per window (`limit` ≥ 1).
    pub(crate) fn new(limit: u32, probe_interval: Duration, now: Instant) -> Self {
        assert!(
            limit >= 1,
            "a rate limit of 0 would never grant a call; config validation rejects it"
        );
        Self {
            limit,
            window: WINDOW,
            starts: VecDeque::with_capacity(limit as usize),
            last_start: None,
            factor: 1.0,
            factor_updated: now,
            last_slow_down: None,
            slow_down_code: 0,
            halt: None,
            probe_interval,
            chunk_size: MAX_USERS_PER_CALL,
            successes_at_size: 0,
            not_before: None,
            lease_until: None,
            counting: Counting::default(),
            rtt: RttFloor::default(),
            in_flight: Vec::new(),
        }
    }

    /// The call of the token spent at `granted` is in flight: its place
    /// stays in the window until it comes back ([`AppBudget::sent`]).
    pub(crate) fn track(&mut self, granted: Instant) {
        self.in_flight.push(granted);
    }

    /// Counts answered calls as `counting` says (the default is
    /// [`Counting::Arrival`]).
    pub(crate) fn with_counting(mut self, counting: Counting) -> Self {
        self.counting = counting;
        self
    }

    /// Allows calls only before `until` (`None`: no lease governs it). The
    /// leadership lease sets it at each confirmed renewal; a call is never
    /// granted on a lease that has run out, even a probe.
    pub(crate) fn lease_until(&mut self, until: Option<Instant>) {
        self.lease_until = until;
    }

    /// Makes no call start before `at` (later of this and any earlier hold).
    /// A process that takes over an AppId calls this with the instant the
    /// previous holder's last window ends, so the two never share a window.
    pub(crate) fn hold_until(&mut self, at: Instant) {
        self.not_before = Some(self.not_before.map_or(at, |t| t.max(at)));
    }

    /// The start of the most recent call, if any is still remembered.
    pub(crate) fn last_call(&self) -> Option<Instant> {
        self.starts.back().copied()
    }

    /// The slow-down factor at `now`, recovered since the last update;
    /// reads nothing but the budget, changes nothing.
    fn factor_at(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.factor_updated).as_secs_f64();
        (self.factor + elapsed * RECOVERY_PER_SEC).min(1.0)
    }

    /// Brings the factor up to `now`. An instant before the last update (a
    /// caller that read the clock earlier) changes nothing, so no interval
    /// is ever counted twice.
    fn recover(&mut self, now: Instant) {
        if now <= self.factor_updated {
            return;
        }
        self.factor = self.factor_at(now);
        self.factor_updated = now;
    }

    /// Calls allowed per window right now, after slow-down.
    pub(crate) fn effective_limit(&mut self, now: Instant) -> u32 {
        self.recover(now);
        ((self.limit as f64 * self.factor).floor() as u32).max(1)
    }

    fn prune(&mut self, now: Instant) {
        self.in_flight.retain(|&g| g + UNANSWERED_AFTER > now);
        let (window, in_flight) = (self.window, &self.in_flight);
        self.starts.retain(|&t| t + window > now || in_flight.contains(&t));
    }

    /// Looks without taking: when could a call start?
    pub(crate) fn peek(&mut self, now: Instant) -> Grant {
        self.prune(now);
        if self.lease_until.is_some_and(|end| now >= end) {
            return Grant::Later(now + LEASE_RECHECK);
        }
        if let Some(halt) = self.halt {
            let free_at = self.window_free_at(now);
            return if now >= halt.next_probe && free_at <= now {
                Grant::Probe
            } else {
                Grant::Later(halt.next_probe.max(free_at))
            };
        }
        let free_at = self.window_free_at(now);
        if free_at <= now {
            Grant::Now
        } else {
            Grant::Later(free_at)
        }
    }

    fn window_free_at(&mut self, now: Instant) -> Instant {
        let limit = self.effective_limit(now) as usize;
        let window_free = if self.starts.len() < limit {
            now
        } else {
            // The call that must leave the window before one more may enter;
            // one still in flight after a whole window leaves when it comes
            // back, which is not known yet.
            let leaves = self.starts[self.starts.len() - limit] + self.window;
            if leaves <= now {
                now + IN_FLIGHT_RECHECK
            } else {
                leaves
            }
        };
        // GCRA: `last_start` holds the theoretical time of the next call, so
        // a timer that wakes a millisecond late does not push every later
        // call back (1 ms granularity would cost 5% at 50/s).
        let spaced = self
            .last_start
            .map_or(now, |tat| tat.checked_sub(SPACING_TOLERANCE).unwrap_or(tat));
        let held = self.not_before.unwrap_or(now);
        window_free.max(spaced).max(held).max(now)
    }

    /// Takes a token if one is free now, recording the call start.
    pub(crate) fn try_acquire(&mut self, now: Instant) -> Grant {
        let grant = self.peek(now);
        match grant {
            Grant::Now => self.record(now),
            Grant::Probe => {
                self.record(now);
                if let Some(h) = &mut self.halt {
                    h.next_probe = now + self.probe_interval;
                }
            }
            Grant::Later(_) => {}
        }
        grant
    }

    fn record(&mut self, now: Instant) {
        let spacing = self.window / self.effective_limit(now);
        self.last_start = Some(self.last_start.map_or(now, |tat| tat.max(now)) + spacing);
        self.starts.push_back(now);
        // Keep memory bounded by the configured limit even after a slow-down
        // shrank the effective one: older entries can never matter again
        // (a call in flight keeps its place).
        while self.starts.len() > self.limit as usize {
            match self.starts.iter().position(|t| !self.in_flight.contains(t)) {
                Some(i) => {
                    self.starts.remove(i);
                }
                None => break,
            }
        }
    }

    /// The call whose token was spent at `granted` came back at `at`:
    /// `answered` when the gateway answered it (a round trip measured), not
    /// when it timed out or failed on the way. Its place in the window moves
    /// to its estimated arrival ([`Counting`], module docs), kept in order.
    /// A call whose place already left the window comes back into it when
    /// its new place is still within one. A "return" before its token
    /// changes nothing.
    pub(crate) fn sent(&mut self, granted: Instant, at: Instant, answered: bool) {
        if let Some(i) = self.in_flight.iter().position(|&g| g == granted) {
            self.in_flight.swap_remove(i);
        }
        if at < granted {
            return;
        }
        let place = match (self.counting, answered) {
            (Counting::Arrival, true) => {
                self.rtt.add(at - granted, at);
                let floor = self.rtt.floor(at).unwrap_or_default();
                at.checked_sub(floor).unwrap_or(at).max(granted)
            }
            _ => at,
        };
        let mut i = match self.starts.iter().rposition(|&t| t == granted) {
            Some(i) => i,
            None if place + self.window > at => {
                self.starts.push_back(place);
                self.starts.len() - 1
            }
            None => return,
        };
        self.starts[i] = place;
        while i + 1 < self.starts.len() && self.starts[i + 1] < self.starts[i] {
            self.starts.swap(i, i + 1);
            i += 1;
        }
        while i > 0 && self.starts[i - 1] > self.starts[i] {
            self.starts.swap(i, i - 1);
            i -= 1;
        }
    }

    /// A rate answer (7 or 206): halve the rate, at most once per window so a
    /// burst of answers to calls already in flight counts as one signal.
    pub(crate) fn slow_down(&mut self, code: i64, now: Instant) -> bool {
        self.recover(now);
        self.slow_down_code = code;
        if self
            .last_slow_down
            .is_some_and(|t| now.saturating_duration_since(t) < self.window)
        {
            return false;
        }
        self.factor = (self.factor * 0.5).max(MIN_RATE_FACTOR);
        self.last_slow_down = Some(now);
        true
    }

    /// Slowed down now: the factor, the last rate answer's code and when it
    /// came; `None` at the full rate.
    pub(crate) fn slowed(&self, now: Instant) -> Option<Slowed> {
        let factor = self.factor_at(now);
        let since = self.last_slow_down?;
        (factor < 1.0).then_some(Slowed {
            factor,
            code: self.slow_down_code,
            since,
        })
    }

    /// Current slow-down factor (1 = full configured rate).
    pub(crate) fn factor(&mut self, now: Instant) -> f64 {
        self.recover(now);
        self.factor
    }

    /// A halting answer: stop calling except for a probe every interval.
    /// Returns true when this call started the halt.
    pub(crate) fn halt(&mut self, code: i64, now: Instant) -> bool {
        match &mut self.halt {
            Some(h) => {
                h.code = code;
                false
            }
            None => {
                self.halt = Some(Halt {
                    code,
                    since: now,
                    next_probe: now + self.probe_interval,
                    logged_at: None,
                });
                true
            }
        }
    }

    /// A call was answered without a halting code: resume. Returns the halt
    /// that ended, if any.
    pub(crate) fn resume(&mut self) -> Option<Halt> {
        self.halt.take()
    }

    /// The current halt, if any.
    pub(crate) fn halted(&self) -> Option<Halt> {
        self.halt
    }

    /// True at most once per `interval` while halted: whether to log the halt now.
    pub(crate) fn should_log_halt(&mut self, now: Instant, interval: Duration) -> bool {
        match &mut self.halt {
            Some(h) if h.logged_at.is_none_or(|t| now.saturating_duration_since(t) >= interval) => {
                h.logged_at = Some(now);
                true
            }
            _ => false,
        }
    }

    /// Users per call for this AppId.
    pub(crate) fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// The API said the user list is too long (50011): halve the chunk size.
    pub(crate) fn shrink(&mut self) -> usize {
        self.chunk_size = (self.chunk_size / 2).max(1);
        self.successes_at_size = 0;
        self.chunk_size
    }

    /// A call succeeded: after [`GROW_AFTER_SUCCESSES`] of them at a shrunk
    /// size, one more user per call. Returns the new size when it grew.
    pub(crate) fn succeeded(&mut self) -> Option<usize> {
        if self.chunk_size >= MAX_USERS_PER_CALL {
            return None;
        }
        self.successes_at_size += 1;
        if self.successes_at_size < GROW_AFTER_SUCCESSES {
            return None;
        }
        self.successes_at_size = 0;
        self.chunk_size += 1;
        Some(self.chunk_size)
    }
}
