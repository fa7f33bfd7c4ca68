//! `kickq dlq list|replay|purge` as a user runs them (the real binary) against the real RabbitMQ: filters,
//! listing without consuming, replay and purge keeping the rest in order (and counting it under `--limit`), the
//! history header, the confirmation rule and its prompt's count, `--json`, letters the broker dead-lettered
//! itself, interrupted replays (a crash, Ctrl-C) that lose nothing, and the lane a replay goes to.

use crate::common;

use chrono::{DateTime, TimeZone, Utc};
use common::*;
use futures_util::StreamExt;
use kickq::job::KickRequest;
use kickq::testkit::headers::{self, DeadError, DeadLetter, DLQ_HISTORY};
use kickq::testkit::publish::persistent_json;
use lapin::options::{BasicNackOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldArray, FieldTable};
use lapin::BasicProperties;
use std::time::Duration;

/// A letter to seed: its body (unique per letter) and what it died of.
struct Seed {
    body: Vec<u8>,
    error: DeadError,
    code: Option<i64>,
    failed_at: DateTime<Utc>,
    history: Option<AMQPValue>,
}

fn seed(tag: &str, room: &str, error: DeadError, code: Option<i64>) -> Seed {
    Seed {
        body: KickRequest::new(room, [tag]).with_job_id(tag).to_body(),
        error,
        code,
        failed_at: Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap(),
        history: None,
    }
}

async fn publish_letters(broker: &Broker, ns: &Ns, seeds: &[Seed]) {
    for s in seeds {
        let dl = DeadLetter {
            error: s.error,
            code: s.code,
            detail: format!("died of {}", s.error.as_str()),
            attempts: 8,
            job_id: None,
            failed_at: s.failed_at,
        };
        let mut h = headers::dead_letter(None, &dl);
        if let Some(v) = &s.history {
            h.insert(DLQ_HISTORY.into(), v.clone());
        }
        broker
            .publisher
            .publish(&ns.names.dead, &s.body, persistent_json(None, h))
            .await
            .unwrap();
    }
}

/// The user id (unique tag) of a letter body, or the body itself if it is not a job.
fn tag(body: &[u8]) -> String {
    match serde_json::from_slice::<KickRequest>(body) {
        Ok(j) => j.user_ids[0].clone(),
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    }
}

fn tags(msgs: &[(Vec<u8>, BasicProperties)]) -> Vec<String> {
    msgs.iter().map(|(b, _)| tag(b)).collect()
}

/// The first user of each letter `dlq list --json --limit <limit>` prints, in order.
async fn listed_users(ns: &Ns, limit: usize) -> Vec<String> {
    let out = kickq(ns, &["dlq", "list", "--json", "--limit", &limit.to_string()], &[], None).await;
    ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|l| l["user_ids"][0].as_str().unwrap().to_owned())
        .collect()
}

async fn wait_depth(broker: &Broker, queue: &str, n: u32) {
    wait_for(Duration::from_secs(10), &format!("{queue} to hold {n}"), || async {
        broker.depth(queue).await == n
    })
    .await;
}

fn ok(o: &std::process::Output) -> (String, String) {
    let (stdout, stderr) = text(o);
    assert!(o.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    (stdout, stderr)
}

/// Table rows (without the header) of `dlq list`.
fn rows(stdout: &str) -> Vec<&str> {
    stdout.lines().skip(1).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_letters_without_consuming_them() {
    let ns = Ns::new("dlq-list");
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let mut old = seed("t4", "r1", DeadError::RetriesExhausted, Some(1));
    old.failed_at = Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap();
    let seeds = vec![
        seed("t1", "r1", DeadError::Permanent, Some(2)),
        seed("t2", "r2", DeadError::RetriesExhausted, Some(1)),
        Seed {
            body: b"{\"room_id\": broken \x01".to_vec(),
            ..seed("t3", "-", DeadError::Validation, None)
        },
        old,
        seed("t5", "r3", DeadError::UnknownApp, None),
    ];
    publish_letters(&broker, &ns, &seeds).await;
    // A letter as the broker dead-letters it: no kickq headers.
    let mut h = FieldTable::default();
    h.insert(
        "x-first-death-reason".into(),
        AMQPValue::LongString("delivery_limit".into()),
    );
    broker
        .publisher
        .publish(
            &ns.names.dead,
            &KickRequest::new("r9", ["t6"]).to_body(),
            persistent_json(None, h),
        )
        .await
        .unwrap();

    let list = |args: &'static [&'static str]| {
        let ns = &ns;
        async move {
            let mut argv = vec!["dlq", "list"];
            argv.extend(args);
            let out = kickq(ns, &argv, &[], None).await;
            ok(&out).0
        }
    };
    let all = list(&[]).await;
    assert_eq!(rows(&all).len(), 6, "{all}");
    assert!(all.starts_with("#  ROOM"), "{all}");
    assert!(all.contains("permanent") && all.contains("1 (t1)"), "{all}");
    assert!(
        all.contains("| body: {\"room_id\": broken \\u{1}"),
        "bad bodies show lossy, escaped: {all}"
    );
    let broker_row = rows(&all)[5];
    assert!(broker_row.contains("delivery_limit"), "{broker_row}");

    let retries = list(&["--error", "retries_exhausted"]).await;
    let r: Vec<&str> = rows(&retries);
    assert_eq!(r.len(), 2, "{retries}");
    assert!(r[0].starts_with("2  r2") && r[1].starts_with("4  r1"), "{retries}");
    assert_eq!(rows(&list(&["--code", "2"]).await).len(), 1);
    assert_eq!(rows(&list(&["--room", "r1"]).await).len(), 2);
    assert_eq!(rows(&list(&["--error", "delivery_limit"]).await).len(), 1);
    let recent = list(&["--since", "2021-01-01T00:00:00Z"]).await;
    assert_eq!(
        rows(&recent).len(),
        4,
        "the 2020 letter and the one of unknown time are out: {recent}"
    );
    assert_eq!(rows(&list(&["--limit", "2"]).await).len(), 2);

    let json = list(&["--json", "--error", "validation"]).await;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["error"], "validation");
    assert_eq!(v[0]["position"], 3);
    assert!(v[0]["body"].as_str().unwrap().starts_with("{\"room_id\": broken"));

    wait_depth(&broker, &ns.names.dead, 6).await;
    let left = broker.drain(&ns.names.dead).await;
    assert_eq!(tags(&left)[..2], ["t1", "t2"]);
    assert_eq!(tags(&left)[3..], ["t4", "t5", "t6"], "same letters, same order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_many_letters_keeps_their_order() {
    // Past 32 unacked letters RabbitMQ 3.10 returns a closed channel's letters
    // in hash order; list hands them back itself, one by one.
    let ns = Ns::new("dlq-order");
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let seeds: Vec<Seed> = (0..100)
        .map(|i| seed(&format!("t{i}"), "r", DeadError::Permanent, Some(2)))
        .collect();
    publish_letters(&broker, &ns, &seeds).await;
    let want: Vec<String> = (0..100).map(|i| format!("t{i}")).collect();
    for args in [
        &["dlq", "list", "--json", "--limit", "1000"][..],
        &["dlq", "list", "--limit", "3"],
    ] {
        let out = kickq(&ns, args, &[], None).await;
        let (_, stderr) = ok(&out);
        assert!(stderr.contains("100 of 100 letter(s)"), "{stderr}");
    }
    let listed = listed_users(&ns, 1000).await;
    assert_eq!(listed, want, "the third listing sees the first order");
    wait_depth(&broker, &ns.names.dead, 100).await;
    assert_eq!(tags(&broker.drain(&ns.names.dead).await), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn letters_the_broker_dead_lettered_list_as_delivery_limit() {
    let ns = Ns::new("dlq-poison");
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    broker
        .publish_raw(&ns.names.requests, &KickRequest::new("r", ["poison"]).to_body())
        .await;
    // Play a crashing worker: take and return the message until the broker gives up on it.
    let ch = broker.conn.create_channel().await.unwrap();
    ch.basic_qos(1, BasicQosOptions::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume(
            ns.names.requests.as_str().into(),
            "".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    while broker.depth(&ns.names.dead).await == 0 {
        match tokio::time::timeout(Duration::from_secs(2), consumer.next()).await {
            Ok(Some(Ok(d))) => {
                d.acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
            Ok(other) => panic!("consumer ended: {other:?}"),
            Err(_) => {} // dead-lettered meanwhile; the loop condition sees it
        }
    }
    let _ = ch.close(200, "".into()).await;
    let out = kickq(&ns, &["dlq", "list", "--json"], &[], None).await;
    let (stdout, _) = ok(&out);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v[0]["error"], "delivery_limit", "{stdout}");
    assert_eq!(v[0]["room_id"], "r");
    assert!(v[0]["detail"].as_str().unwrap().contains("delivery_limit"), "{stdout}");
    assert!(v[0]["failed_at"].is_string(), "from x-death: {stdout}");
}

fn history_len(p: &BasicProperties) -> usize {
    match p.headers().as_ref().and_then(|h| h.inner().get(DLQ_HISTORY)) {
        Some(AMQPValue::FieldArray(a)) => a.as_slice().len(),
        _ => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_moves_matching_letters_and_keeps_the_rest_in_order() {
    let ns = Ns::new("dlq-replay");
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let mut seeds: Vec<Seed> = (0..40)
        .map(|i| {
            let room = if i % 2 == 0 { "r1" } else { "r2" };
            seed(&format!("t{i}"), room, DeadError::RetriesExhausted, Some(1))
        })
        .collect();
    let mut earlier = FieldTable::default();
    earlier.insert(
        "replayed-at".into(),
        AMQPValue::LongString("2024-01-01T00:00:00.000Z".into()),
    );
    seeds[2].history = Some(AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(
        earlier,
    )])));
    publish_letters(&broker, &ns, &seeds).await;

    let dry = kickq(&ns, &["dlq", "replay", "--room", "r1", "--dry-run"], &[], None).await;
    let (stdout, _) = ok(&dry);
    assert!(stdout.contains("would replay 20 of 40"), "{stdout}");
    wait_depth(&broker, &ns.names.dead, 40).await;
    assert_eq!(broker.depth(&ns.names.bulk).await, 0, "a dry run changes nothing");

    let out = kickq(&ns, &["dlq", "replay", "--room", "r1", "--yes"], &[], None).await;
    let (stdout, _) = ok(&out);
    assert!(stdout.contains("replayed 20, kept 20 in order"), "{stdout}");

    let evens: Vec<String> = (0..40).step_by(2).map(|i| format!("t{i}")).collect();
    let odds: Vec<String> = (1..40).step_by(2).map(|i| format!("t{i}")).collect();
    let replayed = broker.take_all(&ns.names.bulk).await;
    assert_eq!(tags(&replayed), evens);
    for (body, props) in &replayed {
        let h = props.headers().as_ref();
        assert_eq!(headers::get_i64(h, headers::ATTEMPTS), None, "attempts reset");
        assert_eq!(headers::get_str(h, headers::ERROR), None);
        assert!(
            h.unwrap().inner().keys().all(|k| !k.as_str().starts_with("x-")),
            "no broker bookkeeping"
        );
        let want = if tag(body) == "t2" { 2 } else { 1 };
        assert_eq!(history_len(props), want, "history of {}", tag(body));
    }
    wait_depth(&broker, &ns.names.dead, 20).await;
    let kept = broker.drain(&ns.names.dead).await;
    assert_eq!(tags(&kept), odds);
    for (_, props) in &kept {
        assert_eq!(
            headers::get_str(props.headers().as_ref(), headers::ERROR).as_deref(),
            Some("retries_exhausted"),
            "kept letters are unchanged"
        );
    }
}

/// Letters of a producer's priority (the broker keeps it when it dead-letters
/// a job): from RabbitMQ 4.0 a quorum queue serves priority above 4 first.
/// A pass that re-appended a letter with its priority met the copy again
/// before the letters it had not read (one listed twice, another missed);
/// re-appended without it, every pass reads each letter once, a filtered
/// replay moves every match, and what is kept has lost its priority. On
/// 3.x, which has no quorum priorities, the walk was always FIFO.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn letters_with_a_high_priority_are_each_read_once_per_pass() {
    let ns = Ns::new("dlq-priority");
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let plan: [(&str, &str, Option<u8>); 8] = [
        ("t0", "keep", None),
        ("t1", "move", Some(7)),
        ("t2", "keep", Some(7)),
        ("t3", "move", None),
        ("t4", "keep", Some(9)),
        ("t5", "move", Some(7)),
        ("t6", "keep", None),
        ("t7", "move", Some(5)),
    ];
    for (t, room, priority) in plan {
        let s = seed(t, room, DeadError::Permanent, Some(2));
        let dl = DeadLetter {
            error: s.error,
            code: s.code,
            detail: "died".into(),
            attempts: 1,
            job_id: None,
            failed_at: s.failed_at,
        };
        let mut props = persistent_json(None, headers::dead_letter(None, &dl));
        if let Some(p) = priority {
            props = props.with_priority(p);
        }
        broker.publisher.publish(&ns.names.dead, &s.body, props).await.unwrap();
    }
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let all: Vec<String> = plan.iter().map(|(t, _, _)| t.to_string()).collect();
    let mut last = Vec::new();
    for listing in 1..=3 {
        let listed = listed_users(&ns, 100).await;
        assert_eq!(sorted(listed.clone()), all, "listing {listing}: each letter once");
        if listing > 1 {
            // After one pass nothing keeps a priority: the walk is FIFO.
            assert_eq!(listed, last, "listing {listing} in the order of the one before");
        }
        last = listed;
        wait_depth(&broker, &ns.names.dead, 8).await;
    }
    let out = kickq(&ns, &["dlq", "replay", "--room", "move", "--yes"], &[], None).await;
    let (stdout, _) = ok(&out);
    assert!(stdout.contains("replayed 4, kept 4 in order"), "{stdout}");
    let moved = broker.take_all(&ns.names.bulk).await;
    assert_eq!(sorted(tags(&moved)), ["t1", "t3", "t5", "t7"]);
    wait_depth(&broker, &ns.names.dead, 4).await;
    let kept = broker.drain(&ns.names.dead).await;
    let keep: Vec<String> = last
        .into_iter()
        .filter(|t| !["t1", "t3", "t5", "t7"].contains(&t.as_str()))
        .collect();
    assert_eq!(tags(&kept), keep, "kept in the order they were listed");
    assert!(
        kept.iter().all(|(_, p)| p.priority().is_none()),
        "a letter a pass re-appended keeps no priority"
    );
}

/// A replay goes to the bulk lane unless `--lane live` says otherwise, and
/// `--error expired` picks the expired letters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_lands_in_bulk_by_default_and_in_live_with_lane_live() {
    let ns = Ns::new("dlq-lane");
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let seeds = vec![
        seed("t0", "r1", DeadError::Expired, None),
        seed("t1", "r1", DeadError::RetriesExhausted, Some(1)),
        seed("t2", "r2", DeadError::Expired, None),
    ];
    publish_letters(&broker, &ns, &seeds).await;
    wait_depth(&broker, &ns.names.dead, 3).await;
    let out = kickq(
        &ns,
        &["dlq", "replay", "--error", "expired", "--room", "r1", "--yes"],
        &[],
        None,
    )
    .await;
    let (stdout, _) = ok(&out);
    assert!(stdout.contains("replayed 1, kept 2 in order"), "{stdout}");
    assert_eq!(broker.depth(&ns.names.requests).await, 0, "not to the live lane");
    assert_eq!(tags(&broker.take_all(&ns.names.bulk).await), ["t0"]);
    let out = kickq(
        &ns,
        &["dlq", "replay", "--error", "expired", "--lane", "live", "--yes"],
        &[],
        None,
    )
    .await;
    let (stdout, _) = ok(&out);
    assert!(stdout.contains("replayed 1, kept 1 in order"), "{stdout}");
    assert_eq!(broker.depth(&ns.names.bulk).await, 0, "not to the bulk lane");
    assert_eq!(tags(&broker.take_all(&ns.names.requests).await), ["t2"]);
    wait_depth(&broker, &ns.names.dead, 1).await;
    assert_eq!(tags(&broker.drain(&ns.names.dead).await), ["t1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_removes_matching_letters_only() {
    let ns = Ns::new("dlq-purge");
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let seeds = vec![
        seed("t0", "r1", DeadError::Permanent, Some(2)),
        seed("t1", "r1", DeadError::RetriesExhausted, Some(1)),
        seed("t2", "r2", DeadError::Permanent, Some(2)),
        seed("t3", "r2", DeadError::RetriesExhausted, Some(5018)),
        seed("t4", "r3", DeadError::Permanent, Some(2)),
    ];
    publish_letters(&broker, &ns, &seeds).await;
    let out = kickq(&ns, &["dlq", "purge", "--error", "permanent", "--yes"], &[], None).await;
    let (stdout, _) = ok(&out);
    assert!(stdout.contains("purged 3, kept 2"), "{stdout}");
    wait_depth(&broker, &ns.names.dead, 2).await;

    let out = kickq(&ns, &["dlq", "purge", "--code", "5018", "--yes"], &[], None).await;
    let (stdout, _) = ok(&out);
    assert!(stdout.contains("purged 1, kept 1"), "{stdout}");
    wait_depth(&broker, &ns.names.dead, 1).await;
    assert_eq!(tags(&broker.drain(&ns.names.dead).await), ["t1"]);
    assert_eq!(broker.depth(&ns.names.bulk).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_and_purge_refuse_without_yes_when_stdin_is_not_a_terminal() {
    let ns = Ns::new("dlq-refuse");
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    publish_letters(&broker, &ns, &[seed("t0", "r", DeadError::Permanent, None)]).await;
    for cmd in ["replay", "purge"] {
        let out = kickq(&ns, &["dlq", cmd], &[], Some(b"y\n")).await;
        let (stdout, stderr) = text(&out);
        assert!(!out.status.success(), "{stdout}{stderr}");
        assert!(stderr.contains("without --yes"), "{stderr}");
    }
    wait_depth(&broker, &ns.names.dead, 1).await;
    assert_eq!(broker.depth(&ns.names.bulk).await, 0);
}

#[cfg(feature = "test-hooks")] // stops the command part-way through a test hook
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_replay_loses_no_letter() {
    let ns = Ns::new("dlq-crash");
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let n: u32 = 80;
    let seeds: Vec<Seed> = (0..n)
        .map(|i| {
            let error = if i.is_multiple_of(3) {
                DeadError::Permanent
            } else {
                DeadError::RetriesExhausted
            };
            seed(&format!("t{i}"), "r", error, None)
        })
        .collect();
    publish_letters(&broker, &ns, &seeds).await;

    let out = kickq(
        &ns,
        &["dlq", "replay", "--error", "retries_exhausted", "--yes"],
        &[("KICKQ_DLQ_STOP_AFTER", "20")],
        None,
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "the hook plays a crash: {stdout}{stderr}");
    let in_flight: usize = stderr
        .split("with ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("the process says how many were in flight: {stderr}"));
    assert!(in_flight > 0, "stopped mid-pass: {stderr}");

    // The broker returns the unsettled letters once it sees the connection gone.
    wait_for(Duration::from_secs(10), "every letter back or moved", || async {
        broker.depth(&ns.names.dead).await + broker.depth(&ns.names.bulk).await >= n
    })
    .await;
    let replayed = broker.take_all(&ns.names.bulk).await;
    let dead = broker.drain(&ns.names.dead).await;
    let mut seen: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for t in tags(&replayed).into_iter().chain(tags(&dead)) {
        *seen.entry(t).or_default() += 1;
    }
    let missing: Vec<String> = (0..n)
        .map(|i| format!("t{i}"))
        .filter(|t| !seen.contains_key(t))
        .collect();
    assert!(missing.is_empty(), "lost letters: {missing:?}");
    let duplicates: usize = seen.values().map(|c| c - 1).sum();
    assert!(
        duplicates <= in_flight,
        "{duplicates} duplicates, {in_flight} in flight"
    );
    assert_eq!(seen.len(), n as usize);
    assert!(replayed.len() >= 20, "the settled replays are in requests");
    for (body, _) in &replayed {
        let i: usize = tag(body)[1..].parse().unwrap();
        assert!(!i.is_multiple_of(3), "only matching letters were replayed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_letter_that_dies_again_after_retries_shows_both_deaths() {
    let ns = Ns::new("dlq-twice");
    let mock = common::mock(1000).await;
    // Busy for ever: every attempt is a transient failure, so the user goes
    // through the retry queues before it dies.
    mock.set_faults(vec![kickq::mock_zego::parse_fault("room=busy-*,code=1").unwrap()]);
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let mut cfg = worker_config(&ns, &mock.base_url(), 1000);
    cfg.budget.max_attempts = 2;
    let worker = spawn_worker(cfg).await;
    broker
        .publish_many(&ns.names.requests, &[job("busy-1", &["a"], None)])
        .await;
    wait_depth(&broker, &ns.names.dead, 1).await;
    for death in 1..=2 {
        // The live lane: the queue the worker of this test consumes.
        let out = kickq(&ns, &["dlq", "replay", "--yes", "--lane", "live"], &[], None).await;
        ok(&out);
        wait_for(Duration::from_secs(30), "the replayed letter dead again", || async {
            broker.depth(&ns.names.dead).await == 1 && broker.depth(&ns.names.requests).await == 0
        })
        .await;
        let letters = broker.drain(&ns.names.dead).await;
        assert_eq!(letters.len(), 1);
        let props = &letters[0].1;
        assert_eq!(
            history_len(props),
            death,
            "after replay {death} and a retry, the letter keeps every earlier death"
        );
        assert_eq!(
            headers::get_str(props.headers().as_ref(), headers::ERROR).as_deref(),
            Some("retries_exhausted")
        );
        broker
            .publisher
            .publish(&ns.names.dead, &letters[0].0, props.clone())
            .await
            .unwrap();
    }
    worker.stop().await;
}

/// Stdout as one JSON object.
fn json_of(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_with_a_limit_reports_every_letter_it_kept() {
    let ns = Ns::new("dlq-limit");
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let seeds = vec![
        seed("t0", "r", DeadError::Permanent, Some(2)),
        seed("t1", "r", DeadError::Permanent, Some(2)),
        seed("t2", "r", DeadError::Permanent, Some(2)),
        seed("t3", "r", DeadError::RetriesExhausted, Some(1)),
        seed("t4", "r", DeadError::Permanent, Some(2)),
    ];
    publish_letters(&broker, &ns, &seeds).await;
    // The limit is reached before any letter had to move: the other three
    // stay where they are, unread, and are kept all the same.
    let out = kickq(
        &ns,
        &["dlq", "purge", "--error", "permanent", "--limit", "2", "--yes"],
        &[],
        None,
    )
    .await;
    let (stdout, _) = ok(&out);
    assert!(stdout.contains("purged 2, kept 3 in order"), "{stdout}");
    wait_depth(&broker, &ns.names.dead, 3).await;

    // t2 goes; t3 is re-appended, t4 is read past the limit and re-appended.
    let out = kickq(&ns, &["dlq", "purge", "--limit", "1", "--yes", "--json"], &[], None).await;
    let v = json_of(&ok(&out).0);
    assert_eq!(
        v,
        serde_json::json!({"depth": 3, "examined": 1, "matched": 1, "purged": 1, "kept": 2, "in_doubt": 0, "dry_run": false}),
        "the first letter matches, so the pass stops there"
    );
    wait_depth(&broker, &ns.names.dead, 2).await;
    let out = kickq(
        &ns,
        &[
            "dlq",
            "purge",
            "--error",
            "permanent",
            "--limit",
            "1",
            "--yes",
            "--json",
        ],
        &[],
        None,
    )
    .await;
    let v = json_of(&ok(&out).0);
    assert_eq!(
        (v["examined"].as_u64(), v["purged"].as_u64(), v["kept"].as_u64()),
        (Some(2), Some(1), Some(1)),
        "{v}"
    );
    wait_depth(&broker, &ns.names.dead, 1).await;
    assert_eq!(tags(&broker.drain(&ns.names.dead).await), ["t3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_json_never_prompts_and_has_a_fixed_shape() {
    let ns = Ns::new("dlq-json");
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let seeds: Vec<Seed> = (0..6)
        .map(|i| {
            seed(
                &format!("t{i}"),
                if i < 4 { "r1" } else { "r2" },
                DeadError::Permanent,
                Some(2),
            )
        })
        .collect();
    publish_letters(&broker, &ns, &seeds).await;

    for cmd in ["replay", "purge"] {
        let out = kickq(&ns, &["dlq", cmd, "--json"], &[], None).await;
        let (stdout, stderr) = text(&out);
        assert!(!out.status.success(), "{stdout}{stderr}");
        assert!(stdout.is_empty(), "{stdout}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(
            lines[0].contains("--json never prompts") && lines[0].contains("--yes"),
            "{stderr}"
        );
    }
    let out = kickq(
        &ns,
        &["dlq", "replay", "--room", "r1", "--json", "--dry-run"],
        &[],
        None,
    )
    .await;
    assert_eq!(
        json_of(&ok(&out).0),
        serde_json::json!({"depth": 6, "examined": 6, "matched": 4, "replayed": 4, "kept": 2, "in_doubt": 0, "dry_run": true})
    );
    wait_depth(&broker, &ns.names.dead, 6).await;
    assert_eq!(broker.depth(&ns.names.bulk).await, 0);

    let out = kickq(
        &ns,
        &["dlq", "replay", "--room", "r1", "--limit", "3", "--json", "--yes"],
        &[],
        None,
    )
    .await;
    assert_eq!(
        json_of(&ok(&out).0),
        serde_json::json!({"depth": 6, "examined": 3, "matched": 3, "replayed": 3, "kept": 3, "in_doubt": 0, "dry_run": false}),
        "the limit is reached at the third letter with nothing moved: the pass stops there"
    );
    assert_eq!(tags(&broker.take_all(&ns.names.bulk).await), ["t0", "t1", "t2"]);
    wait_depth(&broker, &ns.names.dead, 3).await;
    assert_eq!(tags(&broker.drain(&ns.names.dead).await), ["t3", "t4", "t5"]);
}

/// Starts `kickq args` on a pseudo-terminal (util-linux `script`), with the
/// namespace's broker settings and piped stdin, stdout and stderr.
fn spawn_on_a_terminal(ns: &Ns, args: &str) -> tokio::process::Child {
    let command = format!("{} {args}", env!("CARGO_BIN_EXE_kickq"));
    tokio::process::Command::new("script")
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .env("KICKQ_AMQP_URL", amqp_url())
        .env("KICKQ_NAMESPACE", ns.name())
        .env("KICKQ_RETRY_DELAYS", "200ms,400ms,800ms")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("util-linux script runs")
}

/// Runs `kickq` on a pseudo-terminal (util-linux `script`), typing `input`:
/// the only way to reach the confirmation prompt. Returns the terminal's text.
async fn kickq_on_a_terminal(ns: &Ns, args: &str, input: &[u8]) -> (std::process::ExitStatus, String) {
    let mut child = spawn_on_a_terminal(ns, args);
    let mut stdin = child.stdin.take().unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stdin, input).await.unwrap();
    // Stdin stays open until the command is done: script ends the session at its EOF.
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the prompted command ends")
        .unwrap();
    drop(stdin);
    let (stdout, stderr) = text(&out);
    (out.status, format!("{stdout}{stderr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replay_prompt_counts_the_matching_letters_not_the_queue() {
    let ns = Ns::new("dlq-prompt");
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let seeds: Vec<Seed> = (0..40)
        .map(|i| {
            seed(
                &format!("t{i}"),
                if i % 4 == 0 { "r1" } else { "r2" },
                DeadError::Permanent,
                None,
            )
        })
        .collect();
    publish_letters(&broker, &ns, &seeds).await;
    let (status, screen) = kickq_on_a_terminal(&ns, "dlq replay --room r1", b"n\n").await;
    assert!(!status.success(), "{screen}");
    assert!(
        screen.contains(&format!(
            "replay 10 of 40 letter(s) in {} (matching room \"r1\")?",
            ns.names.dead
        )),
        "{screen}"
    );
    assert!(screen.contains("not confirmed; nothing changed"), "{screen}");
    wait_depth(&broker, &ns.names.dead, 40).await;
    assert_eq!(broker.depth(&ns.names.bulk).await, 0);

    let (status, screen) = kickq_on_a_terminal(&ns, "dlq replay --room r1 --limit 4", b"y\n").await;
    assert!(status.success(), "{screen}");
    assert!(screen.contains("replay 4 of 40 letter(s)"), "{screen}");
    assert!(screen.contains("replayed 4, kept 36"), "{screen}");
    assert_eq!(tags(&broker.take_all(&ns.names.bulk).await), ["t0", "t4", "t8", "t12"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_stopped_by_ctrl_c_stops_between_letters_and_exits_130() {
    let ns = Ns::new("dlq-sigint");
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let n = 40u32;
    let seeds: Vec<Seed> = (0..n)
        .map(|i| seed(&format!("t{i}"), "r", DeadError::Permanent, None))
        .collect();
    publish_letters(&broker, &ns, &seeds).await;
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kickq"))
        .args(["dlq", "replay", "--yes", "--json", "--rate", "4"])
        .env("KICKQ_AMQP_URL", amqp_url())
        .env("KICKQ_NAMESPACE", ns.name())
        .env("KICKQ_RETRY_DELAYS", "200ms,400ms,800ms")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(20), "the first replays", || async {
        broker.depth(&ns.names.bulk).await >= 2
    })
    .await;
    send_signal(child.id().unwrap(), "INT");
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("it stops soon after Ctrl-C")
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(130), "{stdout}{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    let v = json_of(&stdout);
    let replayed = v["replayed"].as_u64().unwrap();
    assert!(replayed >= 2 && replayed < u64::from(n), "{v}");
    assert_eq!(v["in_doubt"], 0, "it settles what is in flight before stopping: {v}");
    assert_eq!(replayed + v["kept"].as_u64().unwrap(), u64::from(n), "{v}");
    // Every letter is in exactly one place.
    wait_depth(&broker, &ns.names.dead, n - replayed as u32).await;
    let moved = broker.take_all(&ns.names.bulk).await;
    assert_eq!(moved.len() as u64, replayed);
    let left = broker.drain(&ns.names.dead).await;
    let mut all = tags(&moved);
    all.extend(tags(&left));
    all.sort();
    let mut want: Vec<String> = (0..n).map(|i| format!("t{i}")).collect();
    want.sort();
    assert_eq!(all, want);
}

/// A broker policy on one queue, cleared when it drops (even when the test
/// panics): policies outlive the queues they apply to.
struct Policy(String);

impl Policy {
    fn set(queue: &str, definition: &str) -> Policy {
        let name = format!("{queue}-policy");
        let pattern = format!("^{}$", queue.replace('.', "\\."));
        let status = rabbitmqctl_command()
            .args(["set_policy", "--apply-to", "queues", &name, &pattern, definition])
            .status()
            .expect("rabbitmqctl runs");
        assert!(status.success(), "set_policy {name}");
        Policy(name)
    }
}

impl Drop for Policy {
    fn drop(&mut self) {
        let _ = rabbitmqctl_command().args(["clear_policy", &self.0]).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_listings_under_a_delivery_limit_policy_keep_every_letter() {
    let ns = Ns::new("dlq-cap");
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let _policy = Policy::set(&ns.names.dead, r#"{"delivery-limit":5}"#);
    let seeds: Vec<Seed> = ["a", "b", "c"]
        .iter()
        .map(|t| seed(t, "r", DeadError::Permanent, None))
        .collect();
    publish_letters(&broker, &ns, &seeds).await;
    for i in 0..30 {
        let o = kickq(&ns, &["dlq", "list", "--json"], &[], None).await;
        let (stdout, stderr) = ok(&o);
        let listed: Vec<String> = if stdout.trim().is_empty() {
            Vec::new()
        } else {
            json_of(&stdout)
                .as_array()
                .unwrap_or_else(|| panic!("listing {i}: {stdout}{stderr}"))
                .iter()
                .map(|l| l["user_ids"][0].as_str().unwrap_or_default().to_owned())
                .collect()
        };
        assert_eq!(listed, ["a", "b", "c"], "listing {i}: {stderr}");
    }
    wait_depth(&broker, &ns.names.dead, 3).await;
    assert_eq!(tags(&broker.drain(&ns.names.dead).await), ["a", "b", "c"]);
}

/// Waits until some pass holds the namespace's dlq pass lock: its lease
/// queue has a consumer (the holder; a second pass only waits there for
/// `TAKE_WAIT`).
async fn wait_lock_held(broker: &Broker, ns: &Ns) {
    wait_for(Duration::from_secs(20), "a dlq pass to hold the lock", || async {
        let ch = broker.conn.create_channel().await.unwrap();
        let passive = lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let r = ch
            .queue_declare(ns.names.dead_lease.as_str().into(), passive, FieldTable::default())
            .await;
        matches!(r, Ok(q) if q.consumer_count() > 0)
    })
    .await;
}

/// RabbitMQ 4.2 with Khepri keeps a lost node's exclusive queues until the
/// node returns or is removed. Here another connection holds
/// `{ns}.dead.lock`, the exclusive queue that used to be the pass lock, as
/// such a record would: passes run all the same. (With the exclusive-queue
/// lock, every pass was refused until that node came back.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_do_not_rest_on_an_exclusive_queue_record() {
    let ns = Ns::new("dlq-khepri");
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let seeds: Vec<Seed> = (0..3)
        .map(|i| seed(&format!("t{i}"), "r", DeadError::Permanent, None))
        .collect();
    publish_letters(&broker, &ns, &seeds).await;
    let stale = broker.conn.create_channel().await.unwrap();
    stale
        .queue_declare(
            format!("{}.dead.lock", ns.name()).as_str().into(),
            lapin::options::QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("the stale record is taken");
    let o = kickq(&ns, &["dlq", "list", "--json"], &[], None).await;
    let (stdout, _) = ok(&o);
    assert_eq!(json_of(&stdout).as_array().map(Vec::len), Some(3), "{stdout}");
    let o = kickq(&ns, &["dlq", "purge", "--yes", "--room", "r"], &[], None).await;
    let (stdout, _) = ok(&o);
    assert!(stdout.contains("purged 3"), "{stdout}");
    wait_depth(&broker, &ns.names.dead, 0).await;
}

/// A prompt holds no lock: while one operator's replay waits at its
/// `[y/N]`, another lists the letters (the console's page reads them the same
/// way). The replay counted under the lock and let it go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_waiting_at_its_prompt_blocks_no_reader() {
    let ns = Ns::new("dlq-prompt");
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let seeds: Vec<Seed> = (0..20)
        .map(|i| seed(&format!("t{i}"), "r", DeadError::Permanent, None))
        .collect();
    publish_letters(&broker, &ns, &seeds).await;
    let mut first = spawn_on_a_terminal(&ns, "dlq replay");
    let mut answer = first.stdin.take().unwrap();
    // Two readers at once, while the replay counts and then waits for its
    // answer: each waits its turn for the lock, none is refused.
    let (a, b) = tokio::join!(
        kickq(&ns, &["dlq", "list", "--json"], &[], None),
        kickq(&ns, &["dlq", "list", "--json"], &[], None)
    );
    for o in [&a, &b] {
        let (stdout, _) = ok(o);
        assert_eq!(json_of(&stdout).as_array().map(Vec::len), Some(20), "{stdout}");
    }
    tokio::io::AsyncWriteExt::write_all(&mut answer, b"n\n").await.unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), first.wait_with_output())
        .await
        .expect("the replay ends")
        .unwrap();
    drop(answer);
    let (stdout, stderr) = text(&out);
    assert!(stdout.contains("replay 20 of 20 letter(s)"), "{stdout}{stderr}");
    assert_eq!(broker.depth(&ns.names.bulk).await, 0);
    wait_depth(&broker, &ns.names.dead, 20).await;
    let want: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
    assert_eq!(tags(&broker.drain(&ns.names.dead).await), want);
}

/// `kickq dlq replay --yes --rate 0.01` in the background: one replay per
/// 100 s, so it replays one letter and then holds the pass lock for the
/// whole test.
fn spawn_paced_replay(ns: &Ns) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_kickq"))
        .args(["dlq", "replay", "--yes", "--rate", "0.01"])
        .env("KICKQ_AMQP_URL", amqp_url())
        .env("KICKQ_NAMESPACE", ns.name())
        .env("KICKQ_RETRY_DELAYS", "200ms,400ms,800ms")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// A pass that runs (a replay paced at one letter per 100 s) holds the
/// lock: a pass that will not wait (`--wait 0s`: the 2 s a free lock may
/// take) is refused with who runs it, and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_pass_is_refused_while_one_runs_and_changes_nothing() {
    let ns = Ns::new("dlq-two");
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let seeds: Vec<Seed> = (0..20)
        .map(|i| seed(&format!("t{i}"), "r", DeadError::Permanent, None))
        .collect();
    publish_letters(&broker, &ns, &seeds).await;
    let first = spawn_paced_replay(&ns);
    wait_depth(&broker, &ns.names.bulk, 1).await;
    wait_lock_held(&broker, &ns).await;
    for args in [
        &["dlq", "purge", "--yes", "--wait", "0s"][..],
        &["dlq", "replay", "--yes", "--json", "--wait", "0s"],
        &["dlq", "list", "--wait", "0s"],
    ] {
        let o = kickq(&ns, args, &[], None).await;
        let (stdout, stderr) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {stdout}{stderr}");
        assert!(
            stderr.contains("another dlq pass is running (since 20") && stderr.contains(" pid "),
            "{args:?}: {stderr}"
        );
        assert!(!stdout.contains("examined"), "{args:?}: {stdout}");
    }
    // Reading the record never counts a delivery: on RabbitMQ 4 (a delivery
    // limit of 20 where none is set) a record handed back was dropped after
    // twenty refusals, and the later ones said "since unknown".
    for i in 0..22 {
        let o = kickq(&ns, &["dlq", "list", "--wait", "0s"], &[], None).await;
        let (_, stderr) = text(&o);
        assert!(
            stderr.contains("another dlq pass is running (since 20") && stderr.contains(" pid "),
            "refusal {}: {stderr}",
            i + 4
        );
    }
    assert_eq!(
        broker.depth(&ns.names.bulk).await,
        1,
        "only the running replay's first letter"
    );
    send_signal(first.id().unwrap(), "INT");
    let out = tokio::time::timeout(Duration::from_secs(30), first.wait_with_output())
        .await
        .expect("the first pass ends")
        .unwrap();
    assert_eq!(out.status.code(), Some(130), "{:?}", text(&out));
    // Once it has ended, the next pass runs.
    let o = kickq(&ns, &["dlq", "purge", "--yes", "--room", "none"], &[], None).await;
    let (stdout, _) = ok(&o);
    assert!(stdout.contains("examined 19 of 19"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_out_of_bounds_is_refused_before_any_replay() {
    let ns = Ns::new("dlq-rate-bounds");
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let seeds: Vec<Seed> = (0..3)
        .map(|i| seed(&format!("t{i}"), "r", DeadError::Permanent, None))
        .collect();
    publish_letters(&broker, &ns, &seeds).await;
    for rate in ["1e-300", "20000", "0"] {
        let o = kickq(&ns, &["dlq", "replay", "--yes", "--rate", rate], &[], None).await;
        let (stdout, stderr) = text(&o);
        assert_eq!(o.status.code(), Some(2), "--rate {rate}: {stdout}{stderr}");
        assert!(stderr.contains("between 0.01 and 10000"), "--rate {rate}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    assert_eq!(broker.depth(&ns.names.bulk).await, 0);
    wait_depth(&broker, &ns.names.dead, 3).await;
}

/// Messages of `queue` delivered and not yet acked, from `rabbitmqctl`.
fn unacked(queue: &str) -> Option<u64> {
    let out = rabbitmqctl_command()
        .args([
            "list_queues",
            "--no-table-headers",
            "--quiet",
            "name",
            "messages_unacknowledged",
        ])
        .output()
        .expect("rabbitmqctl runs");
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let mut f = l.split_whitespace();
        (f.next() == Some(queue))
            .then(|| f.next().and_then(|n| n.parse().ok()))
            .flatten()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_replay_acks_each_letter_at_once_and_stops_on_ctrl_c_while_waiting() {
    let ns = Ns::new("dlq-paced");
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let seeds: Vec<Seed> = (0..3)
        .map(|i| seed(&format!("t{i}"), "r", DeadError::Permanent, None))
        .collect();
    publish_letters(&broker, &ns, &seeds).await;
    // One replay per 100 s: the second is never due during the test.
    let child = spawn_paced_replay(&ns);
    wait_depth(&broker, &ns.names.bulk, 1).await;
    // The replayed letter is acked, and no other letter is held while waiting.
    wait_for(
        Duration::from_secs(20),
        "no letter of the dead queue unacked",
        || async { unacked(&ns.names.dead) == Some(0) },
    )
    .await;
    send_signal(child.id().unwrap(), "INT");
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("Ctrl-C stops the wait for the next replay")
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(130), "{stdout}{stderr}");
    assert!(
        stdout.contains("examined 1 of 3") && stdout.contains("replayed 1, kept 2 (2 not examined)"),
        "{stdout}{stderr}"
    );
    assert_eq!(tags(&broker.take_all(&ns.names.bulk).await), ["t0"]);
    wait_depth(&broker, &ns.names.dead, 2).await;
    assert_eq!(tags(&broker.drain(&ns.names.dead).await), ["t1", "t2"]);
}

/// `kickq dlq list` shows ids safely: a bidirectional override in a
/// letter's room or user id is printed as the escape `\u{202e}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_escapes_bidi_characters_in_ids() {
    let ns = Ns::new("dlq-bidi");
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let body = "{\"room_id\":\"room\u{202e}1\",\"user_ids\":[\"user\u{200f}2\"]}";
    broker.publish_many(&ns.names.dead, &[body.as_bytes().to_vec()]).await;
    let o = kickq(&ns, &["dlq", "list"], &[], None).await;
    let (stdout, _) = ok(&o);
    assert!(
        stdout.contains("room\\u{202e}1") && stdout.contains("user\\u{200f}2"),
        "{stdout}"
    );
    assert!(!stdout.contains('\u{202e}') && !stdout.contains('\u{200f}'), "{stdout}");
}
