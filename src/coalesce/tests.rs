//! Unit tests of `coalesce`.

use super::*;

fn key(room: &str) -> GroupKey {
    GroupKey {
        app_id: 1,
        room_id: room.into(),
        reason: None,
    }
}
fn users(ids: &[&str]) -> Vec<Arc<str>> {
    ids.iter().map(|u| Arc::from(*u)).collect()
}
fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
fn policy() -> Policy {
    Policy {
        linger: ms(5),
        dense_linger: ms(20),
        max_wait: ms(1000),
    }
}

#[test]
fn decision_table() {
    let t0 = Instant::now();
    struct Case {
        name: &'static str,
        setup: Vec<(&'static str, Vec<&'static str>, u64)>,
        now: u64,
        /// Negative: the same instant, but the input is dense.
        last_input: Option<i64>,
        expect: Result<(&'static str, Reason), Option<u64>>,
    }
    let cases = vec![
        Case {
            name: "empty",
            setup: vec![],
            now: 0,
            last_input: None,
            expect: Err(None),
        },
        Case {
            name: "lone user, input idle",
            setup: vec![("r", vec!["a"], 0)],
            now: 0,
            last_input: None,
            expect: Ok(("r", Reason::Largest)),
        },
        Case {
            name: "lone user, input flowing",
            setup: vec![("r", vec!["a"], 0)],
            now: 1,
            last_input: Some(0),
            expect: Err(Some(5)),
        },
        Case {
            name: "lone user after linger",
            setup: vec![("r", vec!["a"], 0)],
            now: 5,
            last_input: Some(0),
            expect: Ok(("r", Reason::Largest)),
        },
        Case {
            name: "full group goes at once",
            setup: vec![("p", vec!["x"], 0), ("r", vec!["a", "b", "c", "d", "e"], 1)],
            now: 1,
            last_input: Some(1),
            expect: Ok(("r", Reason::Full)),
        },
        Case {
            name: "oldest full group first",
            setup: vec![
                ("r", vec!["a", "b", "c", "d", "e"], 2),
                ("s", vec!["a", "b", "c", "d", "e"], 1),
            ],
            now: 3,
            last_input: Some(3),
            expect: Ok(("s", Reason::Full)),
        },
        Case {
            name: "largest partial when idle",
            setup: vec![("p", vec!["x"], 0), ("r", vec!["a", "b", "c"], 1)],
            now: 50,
            last_input: Some(1),
            expect: Ok(("r", Reason::Largest)),
        },
        Case {
            name: "overdue beats full",
            setup: vec![("p", vec!["x"], 0), ("r", vec!["a", "b", "c", "d", "e"], 900)],
            now: 1000,
            last_input: Some(999),
            expect: Ok(("p", Reason::Overdue)),
        },
        Case {
            name: "dense input waits the longer linger",
            setup: vec![("r", vec!["a"], 0)],
            now: 10,
            last_input: Some(-5),
            expect: Err(Some(25)),
        },
        Case {
            name: "dense input, long pause",
            setup: vec![("r", vec!["a"], 0)],
            now: 25,
            last_input: Some(-5),
            expect: Ok(("r", Reason::Largest)),
        },
        Case {
            name: "wait until overdue if sooner than linger",
            setup: vec![("p", vec!["x"], 0)],
            now: 998,
            last_input: Some(997),
            expect: Err(Some(1000)),
        },
    ];
    for case in cases {
        let mut c = Coalescer::new(policy());
        let mut ids = HashMap::new();
        for (room, us, at) in &case.setup {
            c.add(key(room), users(us), 0u32, t0 + ms(*at));
            ids.insert(*room, c.apps[&1].ids[&key(room)]);
        }
        let input = Input {
            last: case.last_input.map(|t| t0 + ms(t.unsigned_abs())),
            dense: case.last_input.is_some_and(|t| t < 0),
        };
        let got = c.next_with_reason(1, t0 + ms(case.now), input);
        let want = match case.expect {
            Ok((room, why)) => Ok((ids[room], why)),
            Err(None) => Err(Next::Idle),
            Err(Some(at)) => Err(Next::WaitUntil(t0 + ms(at))),
        };
        assert_eq!(got, want, "{}", case.name);
    }
}

#[test]
fn dedupes_within_a_group_and_keeps_every_waiter() {
    let t0 = Instant::now();
    let mut c = Coalescer::new(policy());
    c.add(key("r"), users(&["a", "b"]), 1u32, t0);
    c.add(key("r"), users(&["b", "c"]), 2u32, t0);
    c.add(key("s"), users(&["b"]), 3u32, t0);
    assert_eq!(c.pending_users(), 4);
    assert_eq!(c.pending_groups(), 2);
    let Ok((id, _)) = c.next_with_reason(1, t0 + ms(10), Input::default()) else {
        panic!()
    };
    let chunk = c.take(1, id).unwrap();
    assert_eq!(chunk.key.room_id.as_ref(), "r");
    let got: Vec<(&str, Vec<u32>)> = chunk
        .users
        .iter()
        .map(|u| (u.user_id.as_ref(), u.waiters.clone()))
        .collect();
    assert_eq!(got, vec![("a", vec![1]), ("b", vec![1, 2]), ("c", vec![2])]);
    assert_eq!(c.pending_users(), 1);
}

#[test]
fn reasons_and_apps_never_share_a_call() {
    let t0 = Instant::now();
    let mut c = Coalescer::new(policy());
    let spam = GroupKey {
        reason: Some("spam".into()),
        ..key("r")
    };
    let other_app = GroupKey { app_id: 2, ..key("r") };
    c.add(key("r"), users(&["a"]), 0u32, t0);
    c.add(spam, users(&["b"]), 0u32, t0);
    c.add(other_app, users(&["c"]), 0u32, t0);
    assert_eq!(c.pending_groups(), 3);
    let mut apps: Vec<u32> = c.apps().collect();
    apps.sort();
    assert_eq!(apps, vec![1, 2]);
}

#[test]
fn take_cuts_chunk_size_oldest_first_and_reindexes() {
    let t0 = Instant::now();
    let mut c = Coalescer::new(policy());
    let seven: Vec<String> = (0..7).map(|i| format!("u{i}")).collect();
    c.add(key("r"), seven.iter().map(|s| Arc::from(s.as_str())), 0u32, t0);
    let Ok((id, _)) = c.next_with_reason(
        1,
        t0,
        Input {
            last: Some(t0),
            dense: false,
        },
    ) else {
        panic!("a full group goes at once")
    };
    let first = c.take(1, id).unwrap();
    assert_eq!(first.users.len(), 5);
    assert_eq!(first.users[0].user_id.as_ref(), "u0");
    assert!(
        matches!(
            c.next_with_reason(
                1,
                t0,
                Input {
                    last: Some(t0),
                    dense: false
                }
            ),
            Err(Next::WaitUntil(_))
        ),
        "two left: not full"
    );
    c.set_chunk_size(1, 2);
    let Ok((id, _)) = c.next_with_reason(
        1,
        t0,
        Input {
            last: Some(t0),
            dense: false,
        },
    ) else {
        panic!("full at the new size")
    };
    assert_eq!(c.take(1, id).unwrap().users.len(), 2);
    assert_eq!(c.pending_users(), 0);
    assert_eq!(c.next_with_reason(1, t0, Input::default()), Err(Next::Idle));
}

#[test]
fn overdue_names_groups_past_an_age() {
    let t0 = Instant::now();
    let mut c = Coalescer::new(policy());
    c.add(key("r"), users(&["a"]), 0u32, t0);
    assert_eq!(c.overdue(1, t0 + ms(10), ms(20)), None);
    assert!(c.overdue(1, t0 + ms(20), ms(20)).is_some());
}

/// The sweep shape from the worker issue, at the pure level: 1,000 rooms x
/// 20 users, shuffled one-user messages with 10% duplicates, a window of
/// pending messages like prefetch, and a token whenever the policy asks.
#[test]
fn shuffled_sweep_needs_close_to_the_minimum_calls() {
    use rand::seq::{IndexedRandom, SliceRandom};
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut msgs: Vec<(usize, usize)> = (0..1000).flat_map(|r| (0..20).map(move |u| (r, u))).collect();
    let dups: Vec<(usize, usize)> = msgs.choose_multiple(&mut rng, 2000).copied().collect();
    msgs.extend(dups);
    msgs.shuffle(&mut rng);
    let names: Vec<String> = (0..1000).map(|r| format!("room{r}")).collect();
    // The worker's default prefetch: with a smaller window, duplicates of
    // users already sent arrive too late to fold (10,000 gives 1.10 x).
    let prefetch = 20_000;
    let mut c = Coalescer::new(Policy::default());
    let mut it = msgs.into_iter();
    let mut in_flight = 0usize;
    let mut calls = 0usize;
    let t = Instant::now();
    loop {
        // Input fills the prefetch window; each call frees its users' messages.
        while in_flight < prefetch {
            let Some((r, u)) = it.next() else { break };
            c.add(key(&names[r]), [Arc::from(format!("u{u}").as_str())], 0u32, t);
            in_flight += 1;
        }
        // The window is full or the input ended: input is idle.
        match c.next_with_reason(1, t, Input::default()) {
            Ok((id, _)) => {
                let chunk = c.take(1, id).unwrap();
                in_flight -= chunk.users.iter().map(|u| u.waiters.len()).sum::<usize>();
                calls += 1;
            }
            Err(Next::Idle) => break,
            Err(Next::WaitUntil(_)) => unreachable!("input is idle"),
        }
    }
    let minimum = 1000 * 4;
    assert!(
        calls as f64 <= minimum as f64 * 1.05,
        "{calls} calls, minimum {minimum}"
    );
}
/// Expired users leave the next call; those behind them move up and are
/// judged too; a user with one waiter still in time stays.
#[test]
fn expired_users_leave_the_next_call() {
    let t0 = Instant::now();
    let mut c: Coalescer<u32> = Coalescer::new(policy());
    // Waiter 9 is expired, every other is not.
    c.add(key("r"), users(&["a", "b", "c"]), 9, t0);
    c.add(key("r"), users(&["d", "e", "f", "g"]), 1, t0);
    c.add(key("r"), users(&["a"]), 2, t0); // a has a waiter in time
    c.add(key("r"), users(&["h"]), 9, t0);
    let (id, _) = c.next_with_reason(1, t0, Input::default()).unwrap();
    let gone = c.remove_expired(1, id, |w| *w == 9).unwrap();
    let names: Vec<&str> = gone.users.iter().map(|u| &*u.user_id).collect();
    assert_eq!(names, ["b", "c"], "a stays for waiter 2; h is not in the next call");
    assert_eq!(c.pending_users(), 6);
    let call = c.take(1, id).unwrap();
    let names: Vec<&str> = call.users.iter().map(|u| &*u.user_id).collect();
    assert_eq!(names, ["a", "d", "e", "f", "g"]);
    // h is now at the front: judged on the next call.
    assert!(c.remove_expired(1, id, |w| *w == 9).is_some());
    assert_eq!(c.pending_users(), 0);
    assert!(c.take(1, id).is_none(), "the emptied group is gone");
    c.add(key("s"), users(&["x"]), 1, t0);
    let (id, _) = c.next_with_reason(1, t0, Input::default()).unwrap();
    assert!(
        c.remove_expired(1, id, |w| *w == 9).is_none(),
        "nothing expired: nothing removed"
    );
}
