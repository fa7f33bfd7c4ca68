//! Unit tests of `router`.

use super::*;
use crate::amqp::topology::Lane;
use crate::job::KickRequest;
use lapin::types::{AMQPValue, FieldTable};

fn job(attempts: u32, halted_before: bool, history: bool) -> Arc<Job> {
    lane_job(attempts, halted_before, history, Lane::Live)
}

fn lane_job(attempts: u32, halted_before: bool, history: bool, lane: Lane) -> Arc<Job> {
    let mut carried = FieldTable::default();
    if history {
        carried.insert(
            headers::DLQ_HISTORY.into(),
            AMQPValue::LongString("dead once: permanent".into()),
        );
    }
    Arc::new(Job {
        id: 1,
        request: KickRequest::new("r", ["a"]).with_job_id("j"),
        app_id: 1,
        lane,
        attempts,
        first_attempt_at: Some(Utc::now() - chrono::Duration::minutes(3)),
        rate_limited: 2,
        halted_for: Duration::from_secs(60),
        redelivered: false,
        halted_before,
        received_at: Utc::now() - chrono::Duration::seconds(30),
        carried,
    })
}

fn entry(job: Arc<Job>, action: Action) -> Entry {
    Entry {
        job,
        user: Arc::from("a"),
        action,
        code: Some(1),
        request_id: None,
        detail: "busy".into(),
    }
}

#[test]
fn messages_carry_budget_history_and_halt_mark_without_expiration() {
    let names = Names::new(
        "kq",
        &[Duration::from_secs(1), Duration::from_secs(5), Duration::from_secs(15)],
    );
    let defer = DeferQueue {
        index: 1,
        delay: Duration::from_secs(5),
    };
    let now = Utc::now();
    let transient = Action::Retry {
        attempts: 3,
        rate_limited: 2,
        kind: "transient",
    };
    let rated = Action::Retry {
        attempts: 2,
        rate_limited: 3,
        kind: "rate_limited",
    };
    #[derive(Clone)]
    struct Case {
        tag: Tag,
        action: Action,
        queue: &'static str,
        attempts: i64,
        rate_limited: i64,
        halted: bool,
        min_halted_ms: i64,
    }
    let cases = [
        Case {
            tag: Tag::Retry {
                attempts: 3,
                rate_limited: 2,
            },
            action: transient,
            queue: "kq.retry.15s",
            attempts: 3,
            rate_limited: 2,
            halted: true,
            min_halted_ms: 60_000,
        },
        Case {
            tag: Tag::Retry {
                attempts: 2,
                rate_limited: 3,
            },
            action: rated,
            queue: "kq.retry.1s",
            attempts: 2,
            rate_limited: 3,
            halted: true,
            min_halted_ms: 60_000,
        },
        Case {
            tag: Tag::Defer,
            action: Action::Defer,
            queue: "kq.retry.5s",
            attempts: 2,
            rate_limited: 2,
            halted: true,
            // 60 s before, 30 s held in the coalescer, 5 s in the delay queue.
            min_halted_ms: 94_900,
        },
        Case {
            tag: Tag::Dead(DeadError::Permanent, Some(2)),
            action: Action::DeadLetter(DeadError::Permanent),
            queue: "kq.dead",
            attempts: 3,
            rate_limited: 0,
            halted: false,
            min_halted_ms: 0,
        },
    ];
    // A bulk job's retries and deferrals return to the bulk lane.
    let cases = cases.into_iter().flat_map(|c| {
        let bulk = Case {
            queue: match c.queue {
                "kq.retry.15s" => "kq.bulk.retry.15s",
                "kq.retry.5s" => "kq.bulk.retry.5s",
                "kq.retry.1s" => "kq.bulk.retry.1s",
                other => other,
            },
            ..c.clone()
        };
        [(Lane::Live, c), (Lane::Bulk, bulk)]
    });
    for (lane, c) in cases {
        let e = entry(lane_job(2, true, true, lane), c.action);
        let (queue, props) = message_for(c.tag, &[&e], now, &names, &defer);
        assert_eq!(queue, c.queue, "{lane} {:?}", c.tag);
        assert!(props.expiration().is_none(), "{:?}: no per-message expiration", c.tag);
        let h = props.headers().as_ref();
        assert_eq!(
            headers::get_str(h, headers::DLQ_HISTORY).as_deref(),
            Some("dead once: permanent"),
            "{:?}: the dead-letter history rides along",
            c.tag
        );
        assert_eq!(headers::get_i64(h, headers::ATTEMPTS), Some(c.attempts), "{:?}", c.tag);
        if !matches!(c.tag, Tag::Dead(..)) {
            let st = headers::read_retry(h);
            assert_eq!(i64::from(st.rate_limited), c.rate_limited, "{:?}", c.tag);
            assert_eq!(st.halted, c.halted, "{:?}: the halt mark survives", c.tag);
            assert!(
                st.halted_for.as_millis() as i64 >= c.min_halted_ms,
                "{:?}: {:?}",
                c.tag,
                st.halted_for
            );
        }
    }
    // A job never halted is not marked halted by a retry.
    let e = entry(job(0, false, false), transient);
    let (_, props) = message_for(
        Tag::Retry {
            attempts: 1,
            rate_limited: 0,
        },
        &[&e],
        now,
        &names,
        &defer,
    );
    assert!(!headers::read_retry(props.headers().as_ref()).halted);
}
