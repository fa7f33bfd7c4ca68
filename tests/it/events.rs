//! Outcome events end to end (real broker, in-process mock): one event per finished delivery with the right
//! outcome, none and no exchange with events off, and `kickq events tail` filtering by outcome.

use crate::common;

use common::*;
use futures_util::StreamExt;
use kickq::mock_zego::FaultRule;
use kickq::testkit::topology;
use lapin::options::{BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::Consumer;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

fn rules(text: &[&str]) -> Vec<FaultRule> {
    text.iter()
        .map(|t| kickq::mock_zego::fault_syntax::parse_fault(t).unwrap_or_else(|e| panic!("{t}: {e}")))
        .collect()
}

fn body(room: &str, users: &[&str], job_id: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"room_id": room, "user_ids": users, "job_id": job_id})).unwrap()
}

/// A server-named queue bound to every event of the namespace (`#`).
async fn bind_all(broker: &Broker, ns: &Ns) -> Consumer {
    topology::declare_events(&broker.channel, &ns.names).await.unwrap();
    let q = broker
        .channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    broker
        .channel
        .queue_bind(
            q.name().clone(),
            ns.names.events.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    broker
        .channel
        .basic_consume(
            q.name().clone(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap()
}

/// One received event: routing key, AMQP properties checked, body parsed.
struct Got {
    key: String,
    body: serde_json::Value,
}

async fn next_event(consumer: &mut Consumer, within: Duration) -> Option<Got> {
    let d = tokio::time::timeout(within, consumer.next()).await.ok()??.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&d.data).unwrap();
    let p = &d.properties;
    assert_eq!(
        p.content_type().as_ref().unwrap().as_str(),
        "application/cloudevents+json"
    );
    assert_eq!(p.message_id().as_ref().unwrap().as_str(), body["id"].as_str().unwrap());
    assert_eq!(p.kind().as_ref().unwrap().as_str(), body["type"].as_str().unwrap());
    assert!(p.timestamp().is_some());
    assert_eq!(p.delivery_mode(), &Some(2));
    Some(Got {
        key: d.routing_key.as_str().to_owned(),
        body,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_per_finished_delivery_with_its_outcome() {
    let ns = Ns::new("events");
    let mock = mock(50).await;
    mock.set_faults(rules(&[
        // The first call fails transiently: a retry, then a kick.
        "room=flaky-*,code=1,first=1",
        // Two users answered 2: split into one call each, the first of those 2 again.
        "room=partial-*,code=2,first=2",
        "room=bad-*,code=2",
    ]));
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let mut events = bind_all(&broker, &ns).await;
    let worker = spawn_worker(worker_config(&ns, &mock.base_url(), 50).with_events(true)).await;
    let q = &ns.names.requests;
    broker.publish_raw(q, &body("ok-1", &["a", "b"], "j-kicked")).await;
    broker.publish_raw(q, &body("flaky-1", &["f"], "j-flaky")).await;
    broker
        .publish_raw(q, &body("partial-1", &["p1", "p2"], "j-partial"))
        .await;
    broker.publish_raw(q, &body("bad-1", &["x"], "j-failed")).await;
    broker.publish_raw(q, b"room=1&user=victim").await;
    let past = serde_json::json!({"room_id": "late-1", "user_ids": ["l"], "job_id": "j-expired", "not_after": "2020-01-01T00:00:00Z"});
    broker.publish_raw(q, &serde_json::to_vec(&past).unwrap()).await;

    // 7 deliveries: 6 published, plus the retry of j-flaky.
    let mut got: Vec<Got> = Vec::new();
    while got.len() < 7 {
        match next_event(&mut events, Duration::from_secs(20)).await {
            Some(g) => got.push(g),
            None => panic!(
                "only {} of 7 events came: {:?}",
                got.len(),
                got.iter().map(|g| &g.key).collect::<Vec<_>>()
            ),
        }
    }
    // And no more: exactly one per finished delivery.
    assert!(
        next_event(&mut events, Duration::from_secs(2)).await.is_none(),
        "an extra event"
    );
    worker.stop().await;

    let mut by_job: BTreeMap<String, Vec<&Got>> = BTreeMap::new();
    for g in &got {
        let job = g.body["subject"].as_str().unwrap_or("(none)").to_owned();
        by_job.entry(job).or_default().push(g);
    }
    let app = APP_ID.to_string();
    let one = |job: &str| {
        let v = &by_job[job];
        assert_eq!(v.len(), 1, "{job}: {} events", v.len());
        v[0]
    };
    let k = one("j-kicked");
    assert_eq!(k.key, format!("kicked.{app}"));
    assert_eq!(k.body["type"], "com.kickq.job.kicked");
    assert_eq!(k.body["source"], format!("kickq/{}", ns.name()));
    assert_eq!(k.body["specversion"], "1.0");
    let mut kicked: Vec<String> = serde_json::from_value(k.body["data"]["users"]["kicked"].clone()).unwrap();
    kicked.sort();
    assert_eq!(kicked, ["a", "b"]);
    assert_eq!(k.body["data"]["room_id"], "ok-1");
    assert_eq!(k.body["data"]["lane"], "live");
    assert!(!k.body["data"]["request_ids"].as_array().unwrap().is_empty());

    let flaky = &by_job["j-flaky"];
    let keys: Vec<&str> = flaky.iter().map(|g| g.key.as_str()).collect();
    assert_eq!(
        keys,
        [format!("retrying.{app}"), format!("kicked.{app}")],
        "retry, then kick"
    );
    assert_eq!(flaky[0].body["data"]["users"]["retrying"], serde_json::json!(["f"]));
    assert_eq!(flaky[0].body["data"]["attempts"], 0);
    assert_eq!(flaky[1].body["data"]["attempts"], 1);
    assert_ne!(flaky[0].body["id"], flaky[1].body["id"]);

    let p = one("j-partial");
    assert_eq!(p.key, format!("partial.{app}"));
    let d = &p.body["data"]["users"];
    assert_eq!(d["kicked"].as_array().unwrap().len(), 1);
    assert_eq!(d["dead_lettered"][0]["error"], "permanent");
    assert_eq!(d["dead_lettered"][0]["code"], 2);

    let f = one("j-failed");
    assert_eq!(f.key, format!("failed.{app}"));
    assert_eq!(f.body["data"]["users"]["dead_lettered"][0]["user_id"], "x");

    let v = one("(none)");
    assert_eq!(v.key, "failed.unknown", "a body that is not JSON names no app");
    assert_eq!(v.body["data"]["error"]["error"], "validation");

    let e = one("j-expired");
    assert_eq!(e.key, format!("expired.{app}"), "the default app served it");
    assert_eq!(e.body["data"]["users"]["dead_lettered"][0]["error"], "expired");

    let ids: std::collections::BTreeSet<&str> = got.iter().map(|g| g.body["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 7, "every event has its own id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_off_declares_no_exchange_and_publishes_nothing() {
    let ns = Ns::new("events-off");
    let mock = mock(50).await;
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let worker = spawn_worker(worker_config(&ns, &mock.base_url(), 50)).await;
    broker.publish_raw(&ns.names.requests, &body("ok-1", &["a"], "j")).await;
    wait_for(Duration::from_secs(10), "the kick", || async {
        mock.kicked().len() == 1
    })
    .await;
    wait_for(Duration::from_secs(5), "the ack", || async {
        broker.depth(&ns.names.requests).await == 0
    })
    .await;
    let summary = worker.stop().await;
    assert_eq!(summary.tally.events, 0);
    assert!(summary.tally.acked >= 1);
    // A passive declare of a missing exchange closes its channel with 404.
    let ch = broker.conn.create_channel().await.unwrap();
    let err = ch
        .exchange_declare(
            ns.names.events.as_str().into(),
            lapin::ExchangeKind::Topic,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect_err("with events off the worker declares no exchange");
    assert_eq!(topology::reply_code(&err), Some(404), "{err}");
    // Cleanup deletes the exchange too, and a missing one is not an error.
    let ch = broker.conn.create_channel().await.unwrap();
    topology::delete_all(&ch, &ns.names)
        .await
        .expect("deleting a namespace without an events exchange");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_json_outcome_failed_prints_failed_events_only() {
    let ns = Ns::new("events-tail");
    let mock = mock(50).await;
    mock.set_faults(rules(&["room=bad-*,code=2"]));
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let mut tail = tokio::process::Command::new(env!("CARGO_BIN_EXE_kickq"))
        .args(["events", "tail", "--json", "--outcome", "failed"])
        .env("KICKQ_AMQP_URL", amqp_url())
        .env("KICKQ_NAMESPACE", ns.name())
        .env("KICKQ_RETRY_DELAYS", "200ms,400ms,800ms")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut err = tokio::io::BufReader::new(tail.stderr.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(20), err.next_line())
        .await
        .expect("the tail binds within 20 s")
        .unwrap()
        .unwrap_or_default();
    assert!(ready.contains("binding failed.*"), "{ready}");
    let mut out = tokio::io::BufReader::new(tail.stdout.take().unwrap()).lines();
    let worker = spawn_worker(worker_config(&ns, &mock.base_url(), 50).with_events(true)).await;
    broker
        .publish_raw(&ns.names.requests, &body("ok-1", &["a"], "j-ok"))
        .await;
    broker
        .publish_raw(&ns.names.requests, &body("bad-1", &["x"], "j-bad"))
        .await;
    broker
        .publish_raw(&ns.names.requests, &body("ok-2", &["b"], "j-ok-2"))
        .await;
    let line = tokio::time::timeout(Duration::from_secs(20), out.next_line())
        .await
        .expect("a failed event within 20 s")
        .unwrap()
        .expect("a line");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["type"], "com.kickq.job.failed");
    assert_eq!(v["subject"], "j-bad");
    wait_for(Duration::from_secs(10), "both kicks", || async {
        mock.kicked().len() == 2
    })
    .await;
    let summary = worker.stop().await;
    assert_eq!(summary.tally.events, 3, "three deliveries, three events");
    // Nothing more: the kicked events were not bound.
    let more = tokio::time::timeout(Duration::from_secs(1), out.next_line()).await;
    assert!(more.is_err(), "only the failed event is printed: {more:?}");
    // Ctrl-C exits 130.
    send_signal(tail.id().unwrap(), "INT");
    let status = tokio::time::timeout(Duration::from_secs(10), tail.wait())
        .await
        .expect("the tail exits on SIGINT")
        .unwrap();
    assert_eq!(status.code(), Some(130));
}

/// The job ids of every message in `queue`, read with a consumer that acks
/// nothing: closing its channel hands them all back.
async fn peek_job_ids(broker: &Broker, queue: &str) -> std::collections::BTreeSet<String> {
    let n = broker.depth(queue).await as usize;
    let ch = broker.conn.create_channel().await.unwrap();
    ch.basic_qos(n.clamp(1, 65535) as u16, Default::default())
        .await
        .unwrap();
    let mut consumer = ch
        .basic_consume(queue.into(), "".into(), Default::default(), FieldTable::default())
        .await
        .unwrap();
    let mut ids = std::collections::BTreeSet::new();
    while ids.len() < n {
        let d = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("a ready message arrives")
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&d.data).unwrap();
        ids.insert(v["job_id"].as_str().unwrap().to_owned());
    }
    let _ = ch.close(200, "".into()).await;
    ids
}

/// RELIABILITY.md: a `kickq run` child with `KICKQ_EVENTS=on`, killed with
/// SIGKILL mid-sweep and restarted: every job acked has its event, and
/// events repeated by the redelivery of what was in flight are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_mid_sweep_with_events_on_every_acked_job_has_its_event() {
    let ns = Ns::new("events-kill");
    let rate = 200;
    let mock = mock(rate).await;
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let mut events = bind_all(&broker, &ns).await;
    // 3,000 one-user jobs over 600 rooms, each with its own job id.
    let jobs = 3000;
    let bodies: Vec<Vec<u8>> = (0..jobs)
        .map(|n| body(&format!("room-{}", n % 600), &[&format!("u{n}")], &format!("j-{n}")))
        .collect();
    broker.publish_many(&ns.names.requests, &bodies).await;
    let collected = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, String, String)>::new()));
    let sink = collected.clone();
    let reader = tokio::spawn(async move {
        while let Some(g) = next_event(&mut events, Duration::from_secs(120)).await {
            let id = g.body["id"].as_str().unwrap().to_owned();
            let job = g.body["subject"].as_str().unwrap_or_default().to_owned();
            sink.lock().unwrap().push((id, job, g.key));
        }
    });
    let on = [("KICKQ_EVENTS", "on")];
    let mut first = spawn_binary_worker(&ns, &mock.base_url(), rate, &on);
    wait_for(Duration::from_secs(60), "a third of the sweep kicked", || async {
        mock.kicked().len() >= jobs / 3
    })
    .await;
    first.kill().unwrap();
    first.wait().unwrap();
    let kicked_at_kill = mock.kicked().len();
    // The broker returns the dead worker's unacked deliveries; what is not
    // in the queue then was acked. Read the queue without taking anything.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let events_at_kill: std::collections::BTreeSet<String> =
        collected.lock().unwrap().iter().map(|(_, j, _)| j.clone()).collect();
    let queued = peek_job_ids(&broker, &ns.names.requests).await;
    let acked_at_kill: Vec<String> = (0..jobs)
        .map(|n| format!("j-{n}"))
        .filter(|j| !queued.contains(j))
        .collect();
    let acked_without_event_at_kill = acked_at_kill.iter().filter(|j| !events_at_kill.contains(*j)).count();
    let events_at_kill = events_at_kill.len();
    let mut second = spawn_binary_worker(&ns, &mock.base_url(), rate, &on);
    let kicked_users = || {
        mock.kicked()
            .into_iter()
            .map(|k| k.user_id)
            .collect::<std::collections::BTreeSet<_>>()
    };
    wait_for(Duration::from_secs(120), "every user kicked", || async {
        kicked_users().len() == jobs
    })
    .await;
    wait_for(Duration::from_secs(60), "every delivery acked", || async {
        broker.depth(&ns.names.requests).await == 0
    })
    .await;
    let job_ids = || {
        collected
            .lock()
            .unwrap()
            .iter()
            .map(|(_, j, _)| j.clone())
            .collect::<std::collections::BTreeSet<_>>()
    };
    wait_for(Duration::from_secs(30), "an event for every job", || async {
        job_ids().len() == jobs
    })
    .await;
    Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status()
        .unwrap();
    assert!(second.wait().unwrap().success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    reader.abort();
    let got = collected.lock().unwrap().clone();
    let mut per_id: BTreeMap<&str, usize> = BTreeMap::new();
    let mut per_job: BTreeMap<&str, std::collections::BTreeSet<&str>> = BTreeMap::new();
    for (id, job, key) in &got {
        *per_id.entry(id).or_default() += 1;
        per_job.entry(job).or_default().insert(id);
        assert!(key.starts_with("kicked."), "{job}: {key}");
    }
    let duplicate_ids: usize = per_id.values().map(|n| n - 1).sum();
    let jobs_with_two_ids = per_job.values().filter(|ids| ids.len() > 1).count();
    let missing = (0..jobs)
        .filter(|n| !per_job.contains_key(format!("j-{n}").as_str()))
        .count();
    let repeated_kicks = mock.kicked().len() - jobs;
    eprintln!(
        "FIGURE events-kill9 jobs={jobs} kicked_at_kill={kicked_at_kill} events_at_kill={events_at_kill} acked_at_kill={} acked_without_event_at_kill={acked_without_event_at_kill} events={} distinct_ids={} duplicate_ids={duplicate_ids} jobs_with_two_ids={jobs_with_two_ids} acked_jobs_without_event={missing} repeated_kicks={repeated_kicks}",
        acked_at_kill.len(),
        got.len(),
        per_id.len()
    );
    assert!(
        !acked_at_kill.is_empty() && acked_at_kill.len() < jobs,
        "killed mid-sweep"
    );
    assert_eq!(acked_without_event_at_kill, 0, "an acked delivery always has its event");
    // Every job is acked (the queue is empty) and every job has its event.
    assert_eq!(missing, 0);
    // A redelivered job ends the same way: the same id, never a second one.
    assert_eq!(jobs_with_two_ids, 0);
    // Repeats are bounded by what was unacked at the kill.
    assert!(duplicate_ids <= jobs - events_at_kill, "{duplicate_ids}");
}

/// With the ledger on, a job published again after it was kicked is acked
/// without a call: its event says `kicked` with the users `already_done`,
/// and repeats the first event's id (the same outcome of the same message).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_already_done_by_the_ledger_repeats_its_kicked_event() {
    let db = TestDb::new().await;
    let ns = Ns::new("events-ledger");
    let mock = mock(50).await;
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let mut events = bind_all(&broker, &ns).await;
    let mut cfg = worker_config(&ns, &mock.base_url(), 50).with_events(true);
    cfg.database_url = Some(kickq::secret::Secret::new(db.url.clone()));
    let worker = spawn_worker(cfg).await;
    let job = body("r-1", &["a", "b"], "j-again");
    broker.publish_raw(&ns.names.requests, &job).await;
    let first = next_event(&mut events, Duration::from_secs(20))
        .await
        .expect("the first event");
    broker.publish_raw(&ns.names.requests, &job).await;
    let second = next_event(&mut events, Duration::from_secs(20))
        .await
        .expect("the second event");
    worker.stop().await;
    db.drop_db().await;
    assert_eq!(mock.kicked().len(), 2, "the second delivery made no call");
    assert_eq!(first.key, second.key);
    assert_eq!(first.body["data"]["users"]["kicked"].as_array().unwrap().len(), 2);
    let mut done: Vec<String> = serde_json::from_value(second.body["data"]["users"]["already_done"].clone()).unwrap();
    done.sort();
    assert_eq!(done, ["a", "b"]);
    assert_eq!(second.body["data"]["users"]["kicked"], serde_json::json!([]));
    assert_eq!(
        first.body["id"], second.body["id"],
        "the same outcome of the same message"
    );
}
