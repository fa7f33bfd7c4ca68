//! The per-AppId call budget: a strict sliding-window limiter (one token per HTTP attempt, retries included),
//! slow-down on rate signals, halt with probes, and the AppId's chunk size.
//!
//! Why a sliding window and not a token bucket: the API's limit is "50 requests
//! per second for all rooms under one AppId", and the vendor (and our mock)
//! count it over any 1-second window. A bucket with burst B lets B + rate calls
//! through in one second after an idle spell; a window log of the last `limit`
//! call starts never does. The window is `1 s + WINDOW_MARGIN`, so network
//! jitter between our clock and the gateway's cannot squeeze 51 arrivals into
//! the gateway's second.
//!
//! Calls are also spaced evenly (`window / limit` apart) rather than let out
//! in a burst whenever the window frees: a burst of simultaneous requests
//! queues at the gateway and arrives compressed, which is exactly how a
//! sender that respects the window at send time still gets 206 answers.
//! Spacing costs nothing under backlog (the window allows no more anyway)
//! and keeps coalescing working, since tokens stay scarce.
//!
//! # Counting each call from its arrival at the gateway
//!
//! The gateway counts a call when it arrives; we see when we spent its
//! token (`s`, before the request leaves) and when its answer came back
//! (`a`). Its arrival `g` lies between them, on neither clock we can read.
//! Write `out = g - s` and `back = a - g` (each including whatever our own
//! host adds: a late task, a slow read), so a call's measured round trip is
//! `r = a - s = out + back`.
//!
//! *Rule* ([`Counting::Arrival`]). Once answered, a call holds its place in
//! the window from `a - r_min`, where `r_min` is the fastest round trip
//! measured among recent calls of the AppId ([`RttFloor`]): at least
//! [`RTT_MIN_SAMPLES`] answers within [`RTT_MEMORY`]. A call that got no
//! answer (a timeout, a transport error), or one answered before the floor
//! has enough samples, holds its place from `a` itself, the rule before this
//! one ([`Counting::Answer`]). Until its answer, a call holds its place from
//! its token `s`.
//!
//! *Claim.* At most `limit` calls of an AppId arrive at the gateway within
//! any one second, under the assumptions below.
//!
//! *Assumptions.* (A1) Any two calls' legs together take at least the floor
//! less the margin: `out_j + back_i >= r_min - WINDOW_MARGIN` (each leg is at
//! least its share of the fastest round trip seen, within the margin; the
//! margin also absorbs the floor's sampling error). (A2) The gateway's clock
//! and ours run at the same rate over a second. (A3) A call that gets no
//! answer (a timeout, a transport error) reached the gateway, if it did at
//! all, before its failure was reported (no request bytes still on the way
//! after the client gave up). Until a call comes back its place stays in the
//! window from its token, however long it takes ([`AppBudget::track`]; a
//! call never reported stops holding it after [`UNANSWERED_AFTER`]).
//!
//! *Proof.* The budget grants a token at `s_j` only when fewer than `limit`
//! places lie within the last window `W = 1 s + WINDOW_MARGIN`: every call
//! `i` whose place `p_i` is within `W` of `s_j` counts. So for the call `i`
//! whose place `j` takes over (the `limit`-th most recent), `s_j >= p_i + W`.
//! Its arrival `g_i <= a_i - back_i`, and `g_j >= s_j + out_j`, so
//! `g_j - g_i >= p_i + W - a_i + out_j + back_i`. With `p_i = a_i - r_min`
//! and (A1), `g_j - g_i >= W - WINDOW_MARGIN = 1 s`; with `p_i = a_i` (an
//! answer, no floor yet), `g_j - g_i >= W + out_j + back_i > 1 s`; with no
//! answer, (A3) gives `g_i <= a_i = p_i`, so `g_j - g_i >= W + out_j > 1 s`.
//! Each of the
//! `limit` places therefore carries at most one arrival in any second: no
//! second holds more than `limit`. A place moves only later (`a_i - r_min >=
//! s_i`, since `r_min <= r_i`), and a call in flight keeps its place, so
//! the window never frees a place early.
//!
//! *Where the assumptions bend.* (A1) is an assumption, not a measurement:
//! the floor is the fastest round trip *seen*, above the true fastest by a
//! sampling error that shrinks with the samples (a few ms for a few hundred
//! samples at ± 40 ms of jitter on each leg) and grows with the jitter; the
//! margin covers it for jitter up to about ± 40 ms a leg. A path that gets
//! faster by more than the margin breaks (A1) until the first fast answer
//! lowers the floor: the calls placed with the old floor may then put a
//! call or two over the limit within one window. The gateway answers those
//! 206; the AppId slows down and the calls are retried, nothing is lost. A
//! path that gets longer is safe: the old floor only makes places count
//! later.
//!
//! *Why this and not the answer alone.* Counting from the answer makes a
//! token reusable a window plus a whole round trip after it was spent: at
//! 200 ms that is a fifth of the budget. Counting from `a - r_min` gives
//! back the part of the round trip that is certain (the floor) and keeps
//! only the jitter above it: the budget's ceiling is `limit / (W + E[r -
//! r_min])`. No rule that keeps the claim for every jitter can do better
//! than paying the jitter once per window: pacing by send time with a
//! jitter-sized margin pays the outbound leg's whole range instead, the
//! same on average (BENCHMARKS.md, "Far from the gateway").
//!
//! A process does not know what the previous active worker spent in the last
//! window; `leadership` works that out when the lock is taken and holds the
//! budgets of the shard's apps until then ([`Gate::hold_apps_until`]). A budget itself starts free.
//!
//! The core ([`AppBudget`]) is pure: every method takes `now`. [`Gate`] wraps
//! it in a mutex for the coalescer and the dispatcher, and its async
//! [`Gate::acquire`] sleeps on tokio's clock, so tests run under
//! `tokio::time::pause`.

#[cfg(test)]
mod far_gateway_tests;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Added to the 1-second window: (A1)'s margin in the module docs, the room
/// for a round-trip floor measured a little above the true one (the
/// fastest of a few hundred jittered samples) and for timers that wake late.
/// 20 ms costs 2% of peak throughput.
pub const WINDOW_MARGIN: Duration = Duration::from_millis(20);
/// How long a measured round trip stays in the floor ([`RttFloor`]). A floor
/// that is too low only costs throughput (places count later than they
/// need), so a long memory is safe; it is what lets the floor rise again
/// when the path to the gateway gets longer.
pub const RTT_MEMORY: Duration = Duration::from_secs(10);
/// Answers in [`RTT_MEMORY`] before the floor is used: the fastest of fewer
/// samples may stand well above the true fastest round trip (the sampling
/// error that [`WINDOW_MARGIN`] covers once there are this many). Four
/// seconds of calls at the documented rate.
pub const RTT_MIN_SAMPLES: usize = 200;

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
pub struct RttFloor {
    /// (when measured, round trip), round trips increasing front to back.
    mins: VecDeque<(Instant, Duration)>,
    /// When each sample in the memory was measured, oldest first.
    samples: VecDeque<Instant>,
}

impl RttFloor {
    /// Adds a round trip measured at `now`.
    pub fn add(&mut self, rtt: Duration, now: Instant) {
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
    pub fn floor(&mut self, now: Instant) -> Option<Duration> {
        self.expire(now);
        (self.samples.len() >= RTT_MIN_SAMPLES)
            .then(|| self.mins.front().map(|&(_, r)| r))
            .flatten()
    }
}
/// The window every budget counts over: the API's second plus the margin.
pub const WINDOW: Duration = Duration::from_millis(1000 + WINDOW_MARGIN.as_millis() as u64);
/// How early a call may start against its even spacing: more than the
/// timer's 1 ms granularity, far less than the spacing at any sane rate.
pub const SPACING_TOLERANCE: Duration = Duration::from_millis(3);
/// Lowest fraction of the configured rate the slow-down may reach, so a burst
/// of rate answers never stops an AppId completely.
pub const MIN_RATE_FACTOR: f64 = 0.1;
/// How fast a slowed AppId recovers: this fraction of the configured rate per
/// second without a rate signal (full recovery from half speed in 5 s).
pub const RECOVERY_PER_SEC: f64 = 0.1;
/// Default interval between probe calls while an AppId is halted.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(30);
/// Most users one call may carry: the API's documented maximum.
pub const MAX_USERS_PER_CALL: usize = 5;
/// Successful calls after which a chunk size shrunk by 50011 grows by one
/// user again: one second of calls at the documented rate, so one stray
/// 50011 costs a few seconds of smaller calls, not a permanent factor of 2,
/// while an API that really wants fewer users answers 50011 again at once.
pub const GROW_AFTER_SUCCESSES: u32 = 50;

/// What the gate says when asked for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
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
pub struct AppBudget {
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
    rtt: RttFloor,
    /// Tokens spent by the gate's callers ([`Gate::take`], [`Gate::acquire`])
    /// whose calls have not come back yet: their places stay in the window
    /// however long they take (a call slower than a window may reach the
    /// gateway late), until [`AppBudget::sent`] or [`UNANSWERED_AFTER`].
    in_flight: Vec<Instant>,
}

/// After this long an in-flight token that was never reported (its call
/// abandoned: a session that ended mid-call) stops holding its place. Far
/// above any call's life (the HTTP client's total timeout, 10 s by default).
pub const UNANSWERED_AFTER: Duration = Duration::from_secs(60);

/// How soon a budget whose next place is held by a call still in flight
/// after a whole window is asked again: that call's answer frees it.
pub const IN_FLIGHT_RECHECK: Duration = Duration::from_millis(20);

/// How soon a budget whose lease has run out is asked again: a renewal that
/// comes back late extends the lease, and the coalescer then goes on.
pub const LEASE_RECHECK: Duration = Duration::from_millis(20);

/// How far, why and since when an AppId runs below its rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slowed {
    /// The fraction of its rate it runs at now.
    pub factor: f64,
    /// The rate answer's code (7 or 206).
    pub code: i64,
    /// When the last rate answer halved its rate.
    pub since: Instant,
}

/// Why and since when an AppId is halted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Halt {
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
    pub fn new(limit: u32, probe_interval: Duration, now: Instant) -> Self {
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
    pub fn track(&mut self, granted: Instant) {
        self.in_flight.push(granted);
    }

    /// Counts answered calls as `counting` says (the default is
    /// [`Counting::Arrival`]).
    pub fn with_counting(mut self, counting: Counting) -> Self {
        self.counting = counting;
        self
    }

    /// Allows calls only before `until` (`None`: no lease governs it). The
    /// leadership lease sets it at each confirmed renewal; a call is never
    /// granted on a lease that has run out, even a probe.
    pub fn lease_until(&mut self, until: Option<Instant>) {
        self.lease_until = until;
    }

    /// Makes no call start before `at` (later of this and any earlier hold).
    /// A process that takes over an AppId calls this with the instant the
    /// previous holder's last window ends, so the two never share a window.
    pub fn hold_until(&mut self, at: Instant) {
        self.not_before = Some(self.not_before.map_or(at, |t| t.max(at)));
    }

    /// The start of the most recent call, if any is still remembered.
    pub fn last_call(&self) -> Option<Instant> {
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
    pub fn effective_limit(&mut self, now: Instant) -> u32 {
        self.recover(now);
        ((self.limit as f64 * self.factor).floor() as u32).max(1)
    }

    fn prune(&mut self, now: Instant) {
        self.in_flight.retain(|&g| g + UNANSWERED_AFTER > now);
        let (window, in_flight) = (self.window, &self.in_flight);
        self.starts.retain(|&t| t + window > now || in_flight.contains(&t));
    }

    /// Looks without taking: when could a call start?
    pub fn peek(&mut self, now: Instant) -> Grant {
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
    pub fn try_acquire(&mut self, now: Instant) -> Grant {
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
    pub fn sent(&mut self, granted: Instant, at: Instant, answered: bool) {
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
    pub fn slow_down(&mut self, code: i64, now: Instant) -> bool {
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
    pub fn slowed(&self, now: Instant) -> Option<Slowed> {
        let factor = self.factor_at(now);
        let since = self.last_slow_down?;
        (factor < 1.0).then_some(Slowed {
            factor,
            code: self.slow_down_code,
            since,
        })
    }

    /// Current slow-down factor (1 = full configured rate).
    pub fn factor(&mut self, now: Instant) -> f64 {
        self.recover(now);
        self.factor
    }

    /// A halting answer: stop calling except for a probe every interval.
    /// Returns true when this call started the halt.
    pub fn halt(&mut self, code: i64, now: Instant) -> bool {
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
    pub fn resume(&mut self) -> Option<Halt> {
        self.halt.take()
    }

    /// The current halt, if any.
    pub fn halted(&self) -> Option<Halt> {
        self.halt
    }

    /// True at most once per `interval` while halted: whether to log the halt now.
    pub fn should_log_halt(&mut self, now: Instant, interval: Duration) -> bool {
        match &mut self.halt {
            Some(h) if h.logged_at.is_none_or(|t| now.saturating_duration_since(t) >= interval) => {
                h.logged_at = Some(now);
                true
            }
            _ => false,
        }
    }

    /// Users per call for this AppId.
    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// The API said the user list is too long (50011): halve the chunk size.
    pub fn shrink(&mut self) -> usize {
        self.chunk_size = (self.chunk_size / 2).max(1);
        self.successes_at_size = 0;
        self.chunk_size
    }

    /// A call succeeded: after [`GROW_AFTER_SUCCESSES`] of them at a shrunk
    /// size, one more user per call. Returns the new size when it grew.
    pub fn succeeded(&mut self) -> Option<usize> {
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

/// What the dispatcher tells the gate after a call: the one way results flow
/// back into pacing, chunk size and halt state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feedback {
    /// The call whose token was spent at `granted` came back now (the `now`
    /// of [`Gate::report`]). The API saw it at some moment between token and
    /// answer; the window counts it from its estimated arrival (the answer
    /// less the fastest recent round trip), or from the answer itself with no
    /// estimate yet or no answer (module docs: the rule and its proof).
    Answered {
        /// When its token was spent.
        granted: Instant,
        /// Whether the gateway answered (any HTTP answer): the round trip is
        /// a sample of the path. `false` for a timeout or a transport error,
        /// which count from now.
        answered: bool,
    },
    /// The API answered with a verdict past authentication (any code but a
    /// halt): the credentials and clock are good again.
    Resumed,
    /// The call kicked its users or found nothing to do: a step towards
    /// growing the chunk back after a shrink.
    Succeeded,
    /// A rate answer (7, 206, the code): slow this AppId down.
    RateLimited(i64),
    /// 50011, the user list is too long: fewer users per call.
    Shrink,
    /// Bad credentials or clock (the code): stop calling but for probes.
    Halt(i64),
}

/// What a [`Feedback`] changed, for the dispatcher's log line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Changed {
    /// Nothing an operator needs to hear about.
    Nothing,
    /// A halt ended (the halt it ended).
    Resumed(Halt),
    /// Users per call are now this many.
    ChunkSize(usize),
    /// The AppId now runs at this fraction of its rate.
    Slowed(f64),
    /// Halted with this code; `log` when the halt line is due (the first
    /// time, then once per interval).
    Halted {
        /// The API's code.
        code: i64,
        /// Whether to log the halt now.
        log: bool,
    },
}

/// The one read of an AppId's state the coalescer makes before cutting calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Most users in one call now (5, less after a 50011 shrink).
    pub users_per_call: usize,
    /// Whether a token is free now, or when the next one is.
    pub next_token: Grant,
    /// Whether the AppId is halted (only probes go).
    pub halted: bool,
}

/// Shared, thread-safe budgets of every AppId. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Gate {
    inner: Arc<Mutex<Budgets>>,
    /// The limit of an AppId not in `limits`.
    limit: u32,
    /// Per-AppId limits (each app's configured `rate`).
    limits: Arc<HashMap<u32, u32>>,
    probe_interval: Duration,
    /// Where every budget counts answered calls from.
    counting: Counting,
}

#[derive(Debug, Default)]
struct Budgets {
    apps: HashMap<u32, AppBudget>,
}

impl Gate {
    /// Budgets of `limit` calls per second for every AppId.
    pub fn new(limit: u32, probe_interval: Duration) -> Self {
        Self {
            inner: Arc::default(),
            limit,
            limits: Arc::default(),
            probe_interval,
            counting: Counting::default(),
        }
    }

    /// Budgets that count answered calls as `counting` says (the default is
    /// [`Counting::Arrival`]; the bench's baseline uses
    /// [`Counting::Answer`]). For a gate no budget was made in yet.
    pub fn with_counting(mut self, counting: Counting) -> Self {
        self.counting = counting;
        self
    }

    /// Budgets of each app's own limit; an AppId not listed gets the
    /// documented 50 (none reaches the gate: intake refuses unknown apps).
    pub fn with_limits(limits: impl IntoIterator<Item = (u32, u32)>, probe_interval: Duration) -> Self {
        Self {
            limits: Arc::new(limits.into_iter().collect()),
            ..Self::new(crate::config::DEFAULT_RATE, probe_interval)
        }
    }

    /// The calls per second an AppId is allowed.
    pub fn limit(&self, app_id: u32) -> u32 {
        self.limits.get(&app_id).copied().unwrap_or(self.limit)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Budgets> {
        self.inner
            .lock()
            .expect("the gate's mutex is never held across a panic")
    }

    /// Takes in what a call's result says about the AppId (see [`Feedback`]);
    /// returns what changed. The only way results reach the budget.
    pub fn report(&self, app_id: u32, feedback: Feedback, now: Instant, halt_log_interval: Duration) -> Changed {
        self.with(app_id, |b| match feedback {
            Feedback::Answered { granted, answered } => {
                b.sent(granted, now, answered);
                Changed::Nothing
            }
            Feedback::Resumed => b.resume().map_or(Changed::Nothing, Changed::Resumed),
            Feedback::Succeeded => b.succeeded().map_or(Changed::Nothing, Changed::ChunkSize),
            Feedback::Shrink => Changed::ChunkSize(b.shrink()),
            Feedback::RateLimited(code) => match b.slow_down(code, now) {
                true => Changed::Slowed(b.factor(now)),
                false => Changed::Nothing,
            },
            Feedback::Halt(code) => {
                b.halt(code, now);
                Changed::Halted {
                    code,
                    log: b.should_log_halt(now, halt_log_interval),
                }
            }
        })
    }

    /// Users per call, the next token and the halt state of an AppId now,
    /// read at once. Spends nothing.
    pub fn plan(&self, app_id: u32, now: Instant) -> Plan {
        self.with(app_id, |b| Plan {
            users_per_call: b.chunk_size(),
            next_token: b.peek(now),
            halted: b.halted().is_some(),
        })
    }

    /// Spends a token for a call now, if one is free ([`Grant::Now`]), or the
    /// probe of a halted AppId when it is due ([`Grant::Probe`]); else says
    /// when to ask again.
    pub fn take(&self, app_id: u32, now: Instant) -> Grant {
        self.with(app_id, |b| {
            let grant = b.try_acquire(now);
            if matches!(grant, Grant::Now | Grant::Probe) {
                b.track(now);
            }
            grant
        })
    }

    /// Runs `f` on the AppId's budget, creating it on first use (a shard's
    /// takeover hold creates the budgets of its apps, so a hold is never
    /// missed).
    fn with<R>(&self, app_id: u32, f: impl FnOnce(&mut AppBudget) -> R) -> R {
        let mut guard = self.lock();
        let budget = guard.apps.entry(app_id).or_insert_with(|| {
            AppBudget::new(self.limit(app_id), self.probe_interval, Instant::now()).with_counting(self.counting)
        });
        f(budget)
    }

    /// Holds these AppIds until `at`: called when this process becomes the
    /// active worker of the shard that serves them. Other AppIds (another
    /// shard's, with its own lock) are not held.
    pub fn hold_apps_until(&self, apps: &[u32], at: Instant) {
        for app in apps {
            self.with(*app, |b| b.hold_until(at));
        }
    }

    /// Allows calls of these AppIds only before `until`: the end of this
    /// process's leadership lease of the shard that serves them.
    pub fn lease_apps_until(&self, apps: &[u32], until: Option<Instant>) {
        for app in apps {
            self.with(*app, |b| b.lease_until(until));
        }
    }

    /// The start of the most recent call of these AppIds.
    pub fn last_call_of(&self, apps: &[u32]) -> Option<Instant> {
        let guard = self.lock();
        apps.iter().filter_map(|a| guard.apps.get(a)?.last_call()).max()
    }

    /// Waits for a token, or returns `None` at once if the AppId is halted:
    /// a caller that is not the coalescer (a split retry inside the
    /// dispatcher) must not spend the probe.
    /// Returns the instant the token was spent at, for [`Feedback::Answered`].
    pub async fn acquire(&self, app_id: u32) -> Option<Instant> {
        loop {
            let now = Instant::now();
            let grant = self.with(app_id, |b| {
                if b.halted().is_some() {
                    None
                } else {
                    let grant = b.try_acquire(now);
                    if matches!(grant, Grant::Now | Grant::Probe) {
                        b.track(now);
                    }
                    Some(grant)
                }
            });
            match grant {
                None => return None,
                Some(Grant::Now) | Some(Grant::Probe) => return Some(now),
                Some(Grant::Later(at)) => tokio::time::sleep_until(at).await,
            }
        }
    }

    /// Every AppId's slow-down factor now (1 = full rate), for reporting.
    pub fn factors(&self, now: Instant) -> Vec<(u32, f64)> {
        let mut guard = self.lock();
        let mut v: Vec<(u32, f64)> = guard.apps.iter_mut().map(|(app, b)| (*app, b.factor(now))).collect();
        v.sort_by_key(|(app, _)| *app);
        v
    }

    /// AppIds running below their rate now, in ascending order (for the
    /// console). Reads the budgets without changing them.
    pub fn slowed_apps(&self, now: Instant) -> Vec<(u32, Slowed)> {
        let guard = self.lock();
        let mut v: Vec<(u32, Slowed)> = guard
            .apps
            .iter()
            .filter_map(|(app, b)| b.slowed(now).map(|s| (*app, s)))
            .collect();
        v.sort_by_key(|(app, _)| *app);
        v
    }

    /// AppIds with a budget, in ascending order: those called (or held) since
    /// the process started (for `/status`).
    pub fn app_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.lock().apps.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Halted AppIds now (for readiness and metrics).
    pub fn halted_apps(&self) -> Vec<(u32, Halt)> {
        self.lock()
            .apps
            .iter()
            .filter_map(|(app, b)| b.halted().map(|h| (*app, h)))
            .collect()
    }
}

#[cfg(test)]
mod tests;
