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

mod budget;
mod gate;
pub(crate) use budget::*;
pub(crate) use gate::*;

#[cfg(test)]
mod far_gateway_tests;
#[cfg(test)]
mod tests;
