//! Tests of the rate window's arrival rule (module docs of `ratelimit`) against a simulated gateway far away:
//! injected round trips and jitter, a greedy caller on a stepped clock, and the gateway's strict count of
//! arrivals in every 1-second window.

use super::*;
use std::time::Duration;
use tokio::time::Instant;

/// A small deterministic generator (xorshift), so every case replays the
/// same draws.
struct Draws(u64);

impl Draws {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One stretch of the path: each leg `one_way` ± `jitter` (uniform) ms.
#[derive(Clone, Copy)]
struct Path {
    one_way: f64,
    jitter: f64,
    secs: u64,
}

/// What the gateway saw.
struct Seen {
    /// Most arrivals in any 1-second window.
    busiest: usize,
    /// Calls per second over the run, after the first `settle` seconds.
    per_sec: f64,
}

/// A greedy caller with an endless backlog asks every millisecond; each
/// call reaches the gateway one leg after its token and is answered one leg
/// later. Every `no_answer_every`-th call gets no answer (reported at the
/// moment its answer would have come, as a failure).
fn run(counting: Counting, paths: &[Path], seed: u64, no_answer_every: Option<usize>) -> Seen {
    run_with(counting, paths, seed, no_answer_every, None)
}

/// [`run`], where every `slow_every`-th call's request takes 1.5 s more to
/// reach the gateway (a call slower than a window).
fn run_with(
    counting: Counting,
    paths: &[Path],
    seed: u64,
    no_answer_every: Option<usize>,
    slow_every: Option<usize>,
) -> Seen {
    let t0 = Instant::now();
    let mut b = AppBudget::new(50, DEFAULT_PROBE_INTERVAL, t0).with_counting(counting);
    let mut draws = Draws(seed);
    let mut arrivals: Vec<Duration> = Vec::new();
    // (granted, answer at, answered)
    let mut in_flight: Vec<(Instant, Instant, bool)> = Vec::new();
    let total: u64 = paths.iter().map(|p| p.secs).sum();
    let mut calls = 0usize;
    let mut counted_from = None;
    for step in 0..total * 1000 {
        let now = t0 + Duration::from_millis(step);
        let elapsed_s = step / 1000;
        let mut acc = 0;
        let path = *paths
            .iter()
            .find(|p| {
                acc += p.secs;
                elapsed_s < acc
            })
            .expect("within the run");
        in_flight.sort_by_key(|c| c.1);
        while in_flight.first().is_some_and(|c| c.1 <= now) {
            let (granted, at, answered) = in_flight.remove(0);
            b.sent(granted, at, answered);
        }
        while b.try_acquire(now) == Grant::Now {
            b.track(now);
            let mut leg =
                || Duration::from_secs_f64((path.one_way + path.jitter * (2.0 * draws.unit() - 1.0)) / 1000.0);
            let (mut out, back) = (leg(), leg());
            calls += 1;
            if slow_every.is_some_and(|n| calls.is_multiple_of(n)) {
                out += Duration::from_millis(1500);
            }
            let answered = no_answer_every.is_none_or(|n| !calls.is_multiple_of(n));
            arrivals.push(now - t0 + out);
            in_flight.push((now, now + out + back, answered));
            if step >= 10_000 && counted_from.is_none() {
                counted_from = Some((step, arrivals.len()));
            }
        }
    }
    arrivals.sort();
    let busiest = (0..arrivals.len())
        .map(|i| {
            arrivals[i..]
                .iter()
                .take_while(|&&g| g < arrivals[i] + Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0);
    let (from_step, from_calls) = counted_from.expect("runs past 10 s");
    let per_sec = (arrivals.len() - from_calls) as f64 / ((total * 1000 - from_step) as f64 / 1000.0);
    Seen { busiest, per_sec }
}

fn path(one_way: f64, jitter: f64, secs: u64) -> Path {
    Path { one_way, jitter, secs }
}

/// (case, counting, path stretches, every n-th call unanswered, least calls/s)
type Case<'a> = (&'a str, Counting, &'a [Path], Option<usize>, f64);

#[test]
fn a_gateway_that_counts_arrivals_never_sees_more_than_the_limit_by_table() {
    let cases: &[Case] = &[
        ("loopback", Counting::Arrival, &[path(0.3, 0.2, 40)], None, 47.5),
        (
            "50 ms ± 5 each way",
            Counting::Arrival,
            &[path(25.0, 5.0, 40)],
            None,
            47.0,
        ),
        (
            "200 ms ± 20 each way",
            Counting::Arrival,
            &[path(100.0, 20.0, 40)],
            None,
            46.5,
        ),
        (
            "400 ms ± 40 each way",
            Counting::Arrival,
            &[path(200.0, 40.0, 40)],
            None,
            44.5,
        ),
        (
            "400 ms, jitter as large as the leg",
            Counting::Arrival,
            &[path(200.0, 200.0, 40)],
            None,
            30.0,
        ),
        // The path gets longer: the old floor is too low for a while (places
        // count later than they need), never too high.
        (
            "50 then 400 ms",
            Counting::Arrival,
            &[path(25.0, 5.0, 20), path(200.0, 40.0, 40)],
            None,
            43.0,
        ),
        // The path gets shorter by less than the margin: (A1) still holds.
        // (A path that shortens by more within a round trip breaks (A1) until
        // the first fast answer lowers the floor: `ratelimit`'s docs.)
        (
            "200 then 185 ms",
            Counting::Arrival,
            &[path(100.0, 20.0, 20), path(92.5, 20.0, 40)],
            None,
            45.0,
        ),
        // Calls without an answer count from their failure, as before.
        (
            "200 ms, every 7th call unanswered",
            Counting::Arrival,
            &[path(100.0, 20.0, 40)],
            Some(7),
            45.0,
        ),
        (
            "every call unanswered: no floor",
            Counting::Arrival,
            &[path(100.0, 20.0, 40)],
            Some(1),
            39.0,
        ),
        // The baseline: a window plus a whole round trip per token.
        (
            "answer counting, 200 ms",
            Counting::Answer,
            &[path(100.0, 20.0, 40)],
            None,
            39.0,
        ),
        (
            "answer counting, 400 ms",
            Counting::Answer,
            &[path(200.0, 40.0, 40)],
            None,
            33.0,
        ),
    ];
    for (i, (case, counting, paths, no_answer, least)) in cases.iter().enumerate() {
        for seed in 0..3u64 {
            let seen = run(
                *counting,
                paths,
                0x9E37_79B9_7F4A_7C15 ^ (i as u64 * 7919 + seed),
                *no_answer,
            );
            eprintln!("{case}: busiest {}, {:.2} calls/s", seen.busiest, seen.per_sec);
            assert!(seen.busiest <= 50, "{case}: {} arrivals in one second", seen.busiest);
            assert!(
                seen.per_sec >= *least,
                "{case}: {:.1} calls/s, expected at least {least}",
                seen.per_sec
            );
        }
    }
    // Calls slower than a window (their requests reach the gateway 1.5 s
    // late) keep their places until they come back.
    for seed in 0..3u64 {
        let seen = run_with(Counting::Arrival, &[path(100.0, 20.0, 40)], 11 + seed, None, Some(25));
        assert!(
            seen.busiest <= 50,
            "slow calls: {} arrivals in one second",
            seen.busiest
        );
    }
    // The gain: at 200 ms the arrival rule spends what the answer rule gives away.
    let far = [path(100.0, 20.0, 40)];
    let ours = run(Counting::Arrival, &far, 7, None).per_sec;
    let baseline = run(Counting::Answer, &far, 7, None).per_sec;
    assert!(
        ours > baseline * 1.12,
        "arrival {ours:.1}/s against answer {baseline:.1}/s"
    );
}

#[test]
fn the_floor_is_the_fastest_recent_round_trip_once_it_has_enough_samples() {
    let t0 = Instant::now();
    let mut f = RttFloor::default();
    let ms = |n: u64| Duration::from_millis(n);
    for i in 0..RTT_MIN_SAMPLES as u64 - 1 {
        f.add(ms(200 + i % 7), t0 + ms(i * 20));
    }
    let t = t0 + ms(RTT_MIN_SAMPLES as u64 * 20);
    assert_eq!(f.floor(t), None, "too few samples: the answer counts");
    f.add(ms(230), t);
    assert_eq!(f.floor(t), Some(ms(200)));
    // A faster sample lowers it at once.
    f.add(ms(150), t + ms(1));
    assert_eq!(f.floor(t + ms(1)), Some(ms(150)));
    // Forgotten after the memory: the samples are gone, so no floor.
    assert_eq!(f.floor(t + ms(1) + RTT_MEMORY), None);
}

#[test]
fn an_answered_call_moves_to_its_estimated_arrival_never_before_its_token() {
    let t0 = Instant::now();
    let ms = |n: u64| Duration::from_millis(n);
    let mut b = AppBudget::new(1, DEFAULT_PROBE_INTERVAL, t0);
    // Enough samples of 100 ms for a floor.
    for i in 0..RTT_MIN_SAMPLES as u64 {
        b.rtt.add(ms(100), t0 + ms(i));
    }
    let s = t0 + ms(1000);
    assert_eq!(b.try_acquire(s), Grant::Now);
    // Answered 180 ms later: it reached the gateway by 80 ms after its token.
    b.sent(s, s + ms(180), true);
    assert_eq!(b.last_call(), Some(s + ms(80)));
    assert_eq!(b.peek(s + ms(80)), Grant::Later(s + ms(80) + WINDOW));
    // Unanswered: from the failure itself.
    let mut c = AppBudget::new(1, DEFAULT_PROBE_INTERVAL, t0);
    assert_eq!(c.try_acquire(s), Grant::Now);
    c.sent(s, s + ms(180), false);
    assert_eq!(c.last_call(), Some(s + ms(180)));
    // Answer counting ignores the floor.
    let mut d = AppBudget::new(1, DEFAULT_PROBE_INTERVAL, t0).with_counting(Counting::Answer);
    for i in 0..RTT_MIN_SAMPLES as u64 {
        d.rtt.add(ms(100), t0 + ms(i));
    }
    assert_eq!(d.try_acquire(s), Grant::Now);
    d.sent(s, s + ms(180), true);
    assert_eq!(d.last_call(), Some(s + ms(180)));
}

#[test]
fn a_call_in_flight_keeps_its_place_until_it_comes_back() {
    let t0 = Instant::now();
    let ms = |n: u64| Duration::from_millis(n);
    let mut b = AppBudget::new(1, DEFAULT_PROBE_INTERVAL, t0);
    assert_eq!(b.try_acquire(t0), Grant::Now);
    b.track(t0);
    // A window later the call is still out: its place is not free.
    let later = t0 + WINDOW + ms(5);
    assert_eq!(b.peek(later), Grant::Later(later + IN_FLIGHT_RECHECK));
    // It comes back 1.5 s after its token: counted from then (no floor yet).
    b.sent(t0, t0 + ms(1500), true);
    assert_eq!(b.peek(t0 + ms(1500)), Grant::Later(t0 + ms(1500) + WINDOW));
    // A token never reported (its call abandoned) holds its place only for
    // UNANSWERED_AFTER.
    let mut c = AppBudget::new(1, DEFAULT_PROBE_INTERVAL, t0);
    assert_eq!(c.try_acquire(t0), Grant::Now);
    c.track(t0);
    assert!(matches!(c.peek(t0 + ms(30_000)), Grant::Later(_)));
    assert_eq!(c.peek(t0 + UNANSWERED_AFTER), Grant::Now);
}
