//! Unit tests of `ratelimit`.

use super::*;
use crate::zego::MAX_USERS_PER_CALL;
use std::time::Duration;
use tokio::time::Instant;

#[test]
fn a_call_that_leaves_late_holds_its_place_in_the_window_from_then() {
    let t0 = Instant::now();
    let mut b = AppBudget::new(2, Duration::from_secs(30), t0);
    assert_eq!(b.try_acquire(t0), Grant::Now);
    let second = t0 + WINDOW / 2;
    assert_eq!(b.try_acquire(second), Grant::Now);
    // The first call's task only starts 60 ms after its token.
    b.sent(t0, t0 + ms(60), false);
    assert_eq!(b.peek(t0 + WINDOW), Grant::Later(t0 + ms(60) + WINDOW));
    // Once it leaves the window, there is room for one more.
    assert_eq!(b.peek(t0 + ms(60) + WINDOW), Grant::Now);
    // Kept in order: a later send of the newer call moves it past nothing.
    b.sent(second, second + ms(5), false);
    assert_eq!(b.last_call(), Some(second + ms(5)));
    // A token no longer in the window, or a send "before" its token, changes nothing.
    b.sent(t0 - ms(5000), t0, false);
    b.sent(second + ms(5), second, false);
    assert_eq!(b.last_call(), Some(second + ms(5)));
}

#[test]
fn feedback_is_the_one_door_and_plan_the_one_read() {
    let gate = Gate::new(50, Duration::from_secs(30));
    let now = Instant::now();
    let log = Duration::from_secs(60);
    let cases: &[(Feedback, Changed, usize, bool)] = &[
        (Feedback::Succeeded, Changed::Nothing, 5, false),
        (Feedback::Shrink, Changed::ChunkSize(2), 2, false),
        (Feedback::Shrink, Changed::ChunkSize(1), 1, false),
        (Feedback::RateLimited(7), Changed::Slowed(0.5), 1, false),
        (
            Feedback::Halt(100000004),
            Changed::Halted {
                code: 100000004,
                log: true,
            },
            1,
            true,
        ),
        (
            Feedback::Halt(100000004),
            Changed::Halted {
                code: 100000004,
                log: false,
            },
            1,
            true,
        ),
    ];
    for (i, (feedback, want, users, halted)) in cases.iter().enumerate() {
        let got = gate.report(9, *feedback, now, log);
        assert_eq!(got, *want, "case {i}: {feedback:?}");
        let plan = gate.plan(9, now);
        assert_eq!(
            (plan.users_per_call, plan.halted),
            (*users, *halted),
            "case {i}: {feedback:?}"
        );
    }
    assert!(matches!(gate.report(9, Feedback::Resumed, now, log), Changed::Resumed(h) if h.code == 100000004));
    assert!(!gate.plan(9, now).halted);
    assert_eq!(
        gate.report(9, Feedback::Resumed, now, log),
        Changed::Nothing,
        "nothing to resume"
    );
    // Another AppId is untouched by all of it.
    let other = gate.plan(10, now);
    assert_eq!(
        (other.users_per_call, other.halted, other.next_token),
        (5, false, Grant::Now)
    );
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn never_more_than_limit_in_any_window() {
    let t0 = Instant::now();
    let mut b = AppBudget::new(50, DEFAULT_PROBE_INTERVAL, t0);
    let mut starts = Vec::new();
    let mut now = t0;
    // Greedy caller: asks every millisecond for 5 seconds.
    for _ in 0..5000 {
        if b.try_acquire(now) == Grant::Now {
            starts.push(now);
        }
        now += ms(1);
    }
    let window = Duration::from_secs(1) + WINDOW_MARGIN;
    for (i, s) in starts.iter().enumerate() {
        let in_window = starts[i..].iter().take_while(|t| **t < *s + window).count();
        assert!(in_window <= 50, "{in_window} calls in the window starting at call {i}");
    }
    // It sustains at least 97% of the rate: 5 s at 50/s.
    assert!(starts.len() >= 243, "only {} calls in 5 s", starts.len());
}

#[test]
fn later_names_the_instant_a_slot_frees() {
    let t0 = Instant::now();
    let mut b = AppBudget::new(2, DEFAULT_PROBE_INTERVAL, t0);
    let window = Duration::from_secs(1) + WINDOW_MARGIN;
    let spacing = window / 2;
    assert_eq!(b.try_acquire(t0), Grant::Now);
    let tol = SPACING_TOLERANCE;
    assert_eq!(
        b.try_acquire(t0 + ms(100)),
        Grant::Later(t0 + spacing - tol),
        "calls are spaced"
    );
    assert_eq!(b.try_acquire(t0 + spacing - tol), Grant::Now);
    assert_eq!(
        b.try_acquire(t0 + spacing + ms(1)),
        Grant::Later(t0 + window),
        "window full"
    );
    assert_eq!(b.try_acquire(t0 + window), Grant::Now);
    assert_eq!(b.peek(t0 + window), Grant::Later(t0 + spacing - tol + window));
}

#[test]
fn slow_down_halves_once_per_window_and_recovers() {
    let t0 = Instant::now();
    let mut b = AppBudget::new(50, DEFAULT_PROBE_INTERVAL, t0);
    assert_eq!(b.slowed(t0), None, "full rate");
    assert!(b.slow_down(7, t0));
    assert!(!b.slow_down(206, t0 + ms(10)), "a burst of answers is one signal");
    let s = b.slowed(t0 + ms(10)).expect("slowed");
    assert_eq!(
        (s.code, s.since),
        (206, t0),
        "the last answer's code, the halving's time"
    );
    assert_eq!(b.effective_limit(t0 + ms(10)), 25);
    assert!(b.slow_down(7, t0 + Duration::from_secs(2)));
    // 0.5 + 2 s * 0.1 = 0.7, halved = 0.35
    assert!((b.factor(t0 + Duration::from_secs(2)) - 0.35).abs() < 1e-9);
    assert_eq!(b.factor(t0 + Duration::from_secs(20)), 1.0);
    assert_eq!(b.slowed(t0 + Duration::from_secs(20)), None, "recovered");
    // A reading with an earlier instant counts no interval twice.
    let mut c = AppBudget::new(50, DEFAULT_PROBE_INTERVAL, t0);
    c.slow_down(7, t0 + Duration::from_secs(1));
    let before = c.slowed(t0 + Duration::from_secs(2)).unwrap().factor;
    assert_eq!(c.factor(t0), 0.5, "an earlier instant changes nothing");
    assert_eq!(c.slowed(t0 + Duration::from_secs(2)).unwrap().factor, before);
    assert!((before - 0.6).abs() < 1e-9, "{before}");
    for i in 0..20 {
        b.slow_down(7, t0 + Duration::from_secs(30 + 2 * i));
    }
    assert!(b.factor(t0 + Duration::from_secs(68)) >= MIN_RATE_FACTOR);
    assert!(b.effective_limit(t0 + Duration::from_secs(68)) >= 1);
}

#[test]
fn halt_allows_only_probes_and_resume_clears_it() {
    let t0 = Instant::now();
    let mut b = AppBudget::new(50, Duration::from_secs(5), t0);
    assert!(b.halt(100000005, t0));
    assert!(!b.halt(100000005, t0 + ms(1)), "already halted");
    assert_eq!(b.try_acquire(t0 + ms(2)), Grant::Later(t0 + Duration::from_secs(5)));
    assert_eq!(b.try_acquire(t0 + Duration::from_secs(5)), Grant::Probe);
    assert_eq!(
        b.try_acquire(t0 + Duration::from_secs(6)),
        Grant::Later(t0 + Duration::from_secs(10)),
        "one probe per interval"
    );
    assert!(b.should_log_halt(t0, Duration::from_secs(60)));
    assert!(!b.should_log_halt(t0 + Duration::from_secs(59), Duration::from_secs(60)));
    assert!(b.should_log_halt(t0 + Duration::from_secs(60), Duration::from_secs(60)));
    assert_eq!(b.resume().map(|h| h.code), Some(100000005));
    assert_eq!(b.try_acquire(t0 + Duration::from_secs(7)), Grant::Now);
}

#[test]
fn a_budget_held_for_a_window_waits_one_window() {
    let t0 = Instant::now();
    let window = Duration::from_secs(1) + WINDOW_MARGIN;
    let mut b = AppBudget::new(50, DEFAULT_PROBE_INTERVAL, t0);
    b.hold_until(t0 + window);
    assert_eq!(b.try_acquire(t0), Grant::Later(t0 + window));
    assert_eq!(b.try_acquire(t0 + window), Grant::Now);
}

#[test]
fn no_call_is_granted_on_a_lease_that_ran_out_not_even_a_probe() {
    let t0 = Instant::now();
    let mut b = AppBudget::new(50, DEFAULT_PROBE_INTERVAL, t0);
    b.lease_until(Some(t0 + ms(750)));
    assert_eq!(b.try_acquire(t0), Grant::Now, "within the lease");
    assert_eq!(
        b.try_acquire(t0 + ms(750)),
        Grant::Later(t0 + ms(750) + LEASE_RECHECK),
        "at its end: asked again soon"
    );
    assert_eq!(b.last_call(), Some(t0), "nothing recorded for the refusal");
    // A renewal that came back extends it: calls go on.
    b.lease_until(Some(t0 + ms(1500)));
    assert_eq!(b.try_acquire(t0 + ms(800)), Grant::Now);
    // A halted AppId's probe waits for the lease too.
    b.halt(100000005, t0 + ms(800));
    b.lease_until(Some(t0 + ms(900)));
    let later = t0 + ms(800) + DEFAULT_PROBE_INTERVAL;
    assert_eq!(b.try_acquire(later), Grant::Later(later + LEASE_RECHECK));
    b.lease_until(None);
    assert_eq!(b.try_acquire(later), Grant::Probe, "no lease governs it");
}

#[test]
fn a_hold_delays_the_first_call_and_then_spacing_resumes() {
    let t0 = Instant::now();
    let mut b = AppBudget::new(50, DEFAULT_PROBE_INTERVAL, t0);
    b.hold_until(t0 + ms(300));
    b.hold_until(t0 + ms(100));
    assert_eq!(b.try_acquire(t0), Grant::Later(t0 + ms(300)), "the later hold wins");
    assert_eq!(b.try_acquire(t0 + ms(300)), Grant::Now);
    assert_eq!(b.last_call(), Some(t0 + ms(300)));
    let spacing = (Duration::from_secs(1) + WINDOW_MARGIN) / 50;
    assert_eq!(
        b.try_acquire(t0 + ms(301)),
        Grant::Later(t0 + ms(300) + spacing - SPACING_TOLERANCE)
    );
}

#[test]
fn a_fresh_budget_calls_at_once() {
    let t0 = Instant::now();
    let mut b = AppBudget::new(50, DEFAULT_PROBE_INTERVAL, t0);
    assert_eq!(
        b.try_acquire(t0),
        Grant::Now,
        "the hold comes from leadership, not creation"
    );
}

#[test]
fn chunk_size_grows_back_after_successes() {
    let mut b = AppBudget::new(50, DEFAULT_PROBE_INTERVAL, Instant::now());
    assert_eq!(b.succeeded(), None, "full size never grows");
    assert_eq!(b.shrink(), 2);
    let mut grew = Vec::new();
    for i in 1..=3 * GROW_AFTER_SUCCESSES {
        if let Some(size) = b.succeeded() {
            grew.push((i, size));
        }
    }
    let n = GROW_AFTER_SUCCESSES;
    assert_eq!(grew, vec![(n, 3), (2 * n, 4), (3 * n, 5)]);
    assert_eq!(b.chunk_size(), MAX_USERS_PER_CALL);
    assert_eq!(b.shrink(), 2);
    for _ in 0..n - 1 {
        b.succeeded();
    }
    assert_eq!(b.shrink(), 1, "a second 50011 before growing halves again");
    assert_eq!(b.succeeded(), None, "the count restarts after a shrink");
}

#[test]
fn a_shards_hold_and_last_call_are_its_apps_only() {
    let t0 = Instant::now();
    let gate = Gate::with_limits([(1, 50), (2, 50)], DEFAULT_PROBE_INTERVAL);
    gate.hold_apps_until(&[1], t0 + ms(500));
    assert_eq!(
        gate.take(1, t0),
        Grant::Later(t0 + ms(500)),
        "held: its shard was taken over"
    );
    assert_eq!(gate.take(2, t0), Grant::Now, "another shard's app is not held");
    assert_eq!(gate.last_call_of(&[1]), None);
    assert_eq!(gate.last_call_of(&[1, 2]), Some(t0));
    assert_eq!(gate.last_call_of(&[2]), Some(t0));
}

#[tokio::test(start_paused = true)]
async fn a_hold_reaches_an_app_before_its_first_call() {
    let gate = Gate::new(50, Duration::from_secs(30));
    let t0 = Instant::now();
    gate.hold_apps_until(&[2], t0 + ms(500));
    assert_eq!(gate.last_call_of(&[2]), None);
    gate.acquire(2).await.unwrap();
    assert_eq!(gate.last_call_of(&[2]), Some(t0 + ms(500)));
}

#[test]
fn shrink_halves_down_to_one() {
    let mut b = AppBudget::new(50, DEFAULT_PROBE_INTERVAL, Instant::now());
    assert_eq!(b.chunk_size(), 5);
    assert_eq!(b.shrink(), 2);
    assert_eq!(b.shrink(), 1);
    assert_eq!(b.shrink(), 1);
}

#[tokio::test(start_paused = true)]
async fn acquire_waits_on_the_paused_clock_and_refuses_when_halted() {
    let gate = Gate::new(2, Duration::from_secs(30));
    let t0 = Instant::now();
    for _ in 0..3 {
        gate.acquire(9).await.unwrap();
    }
    assert!(
        Instant::now() - t0 >= Duration::from_secs(1),
        "third token waits for the window"
    );
    gate.with(9, |b| b.halt(3, Instant::now()));
    assert_eq!(gate.acquire(9).await, None);
    assert_eq!(gate.halted_apps().len(), 1);
}

/// Each app has its own limit and its own window: one app spending all of
/// its tokens, or halted, leaves another's untouched.
#[test]
fn apps_have_their_own_limits_windows_and_halts() {
    let gate = Gate::with_limits([(1, 2), (2, 3)], Duration::from_secs(30));
    let t0 = Instant::now();
    // Tokens granted over one window, asked every millisecond; each call
    // comes back a millisecond after its token.
    let taken = |app| {
        (0..1000)
            .filter(|ms| {
                let at = t0 + Duration::from_millis(*ms);
                let granted = gate.take(app, at) == Grant::Now;
                if granted {
                    let answered = Feedback::Answered {
                        granted: at,
                        answered: true,
                    };
                    gate.report(app, answered, at + Duration::from_millis(1), Duration::ZERO);
                }
                granted
            })
            .count()
    };
    assert_eq!(taken(1), 2);
    assert_eq!(taken(2), 3);
    assert_eq!(
        gate.limit(7),
        crate::config::DEFAULT_RATE,
        "an app not listed gets the documented rate"
    );
    gate.report(1, Feedback::Halt(100000005), t0, Duration::from_secs(60));
    assert!(gate.plan(1, t0).halted);
    assert!(!gate.plan(2, t0).halted);
    let later = t0 + 2 * WINDOW;
    assert_eq!(gate.take(2, later), Grant::Now, "app 2 goes on while app 1 is halted");
}
