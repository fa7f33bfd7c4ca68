//! Lanes end to end: a live kick reaches the API within a few token intervals while a bulk sweep saturates the
//! app's budget, the sweep still gets every token live traffic leaves, and both lanes are consumed by the one
//! process that holds the leadership lock.

use crate::common;

use common::*;
use std::time::{Duration, Instant};

/// When the mock received the call for `room`, on the test's clock.
fn arrival(mock: &kickq::mock_zego::MockZego, room: &str) -> Option<Instant> {
    mock.calls()
        .iter()
        .find(|c| c.room_id.as_deref() == Some(room) && c.code == Some(0))
        .map(|c| mock.started() + Duration::from_micros(c.at_us))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_kicks_go_ahead_of_a_saturating_sweep() {
    let ns = Ns::new("lanes");
    let rate = 20;
    let mock = mock(rate).await;
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let worker = spawn_worker(worker_config(&ns, &mock.base_url(), rate)).await;
    // A warm-up kick: a fresh worker holds its first call for one window
    // when no earlier holder left a record (see README, Scaling).
    broker
        .publish_raw(&ns.names.requests, &job("warm-up", &["w"], None))
        .await;
    wait_for(Duration::from_secs(10), "the warm-up kick", || async {
        arrival(&mock, "warm-up").is_some()
    })
    .await;
    // Five live kicks with no sweep, for comparison.
    let mut idle = Vec::new();
    for i in 0..5 {
        let room = format!("idle-{i}");
        let sent = Instant::now();
        broker
            .publish_raw(&ns.names.requests, &job(&room, &["abuser"], None))
            .await;
        wait_for(Duration::from_secs(10), "the idle live kick", || async {
            arrival(&mock, &room).is_some()
        })
        .await;
        idle.push(arrival(&mock, &room).unwrap().saturating_duration_since(sent));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    idle.sort();
    eprintln!("live kick latency without a sweep: {idle:?}");
    assert!(*idle.last().unwrap() < Duration::from_secs(1), "{idle:?}");
    // 2,000 users in full calls of five: 400 calls, 20 s at 20/s.
    let sweep: Vec<Vec<u8>> = (0..2000)
        .map(|u| job(&format!("sweep-{}", u % 200), &[&format!("u{u}")], None))
        .collect();
    broker.publish_many(&ns.names.bulk, &sweep).await;
    wait_for(Duration::from_secs(20), "the sweep at full rate", || async {
        mock.counters().calls >= 6 + 2 * rate as u64
    })
    .await;
    // Ten live kicks, 300 ms apart, while the sweep saturates the budget.
    let mut latencies = Vec::new();
    for i in 0..10 {
        let room = format!("live-{i}");
        let sent = Instant::now();
        broker
            .publish_raw(&ns.names.requests, &job(&room, &["abuser"], None))
            .await;
        wait_for(Duration::from_secs(10), "the live kick", || async {
            arrival(&mock, &room).is_some()
        })
        .await;
        latencies.push(arrival(&mock, &room).unwrap().saturating_duration_since(sent));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let sweep_calls_then = mock
        .calls()
        .iter()
        .filter(|c| c.room_id.as_deref().is_some_and(|r| r.starts_with("sweep-")))
        .count();
    latencies.sort();
    eprintln!("live kick latency during the sweep: {latencies:?}; sweep calls so far {sweep_calls_then} of 400");
    assert!(
        sweep_calls_then < 400,
        "the sweep was over before the live kicks: the test measured nothing"
    );
    // Three token intervals at 20/s are 150 ms; one second leaves room for a
    // loaded machine, and is twenty times less than waiting behind the sweep.
    assert!(
        *latencies.last().unwrap() < Duration::from_secs(1),
        "a live kick waited behind the sweep: {latencies:?}"
    );
    wait_for(Duration::from_secs(60), "the sweep done", || async {
        mock.kicked().iter().filter(|k| k.room_id.starts_with("sweep-")).count() >= 2000
    })
    .await;
    worker.stop().await;
    let counters = mock.counters();
    assert_eq!(counters.rate_limited, 0, "{counters:?}");
    assert!(counters.max_calls_in_1s <= rate as u64, "{counters:?}");
}

/// With a standby worker beside the active one, both lanes' consumers are
/// on the active one's connections only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_lanes_are_consumed_by_the_lock_holder_only() {
    let ns = Ns::new("lanes-owner");
    let mock = mock(50).await;
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let first =
        spawn_worker(worker_config(&ns, &mock.base_url(), 50).with_connection_name(format!("{}-one", ns.name()))).await;
    wait_for(Duration::from_secs(10), "the first worker consuming", || async {
        consumers(&ns.names.requests) == 1 && consumers(&ns.names.bulk) == 1
    })
    .await;
    let second =
        spawn_worker(worker_config(&ns, &mock.base_url(), 50).with_connection_name(format!("{}-two", ns.name()))).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let owners = queue_consumer_connections(&[&ns.names.requests, &ns.names.bulk]);
    eprintln!("consumers: {owners:?}");
    assert_eq!(owners.len(), 2, "one consumer per lane: {owners:?}");
    assert!(
        owners.iter().all(|o| o.contains(&format!("{}-one", ns.name()))),
        "{owners:?}"
    );
    // Kicks published to either lane are served.
    broker
        .publish_raw(&ns.names.requests, &job("r-live", &["a"], None))
        .await;
    broker.publish_raw(&ns.names.bulk, &job("r-bulk", &["b"], None)).await;
    wait_for(Duration::from_secs(10), "both kicked", || async {
        mock.kicked().len() >= 2
    })
    .await;
    first.stop().await;
    second.stop().await;
}

/// Consumers of a queue now (`rabbitmqctl list_consumers`).
fn consumers(queue: &str) -> usize {
    queue_consumer_connections(&[queue]).len()
}

/// The consumer tags (`<connection name>-<lane>-<session>`) of every
/// consumer on these queues, each after its queue's name.
fn queue_consumer_connections(queues: &[&str]) -> Vec<String> {
    let out = rabbitmqctl_command()
        .args([
            "list_consumers",
            "-q",
            "--no-table-headers",
            "queue_name",
            "consumer_tag",
        ])
        .output()
        .expect("rabbitmqctl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(q, _)| queues.contains(q))
        .map(|(q, tag)| format!("{q} {tag}"))
        .collect()
}
