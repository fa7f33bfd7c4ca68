//! `kill -9` of the real `kickq` binary mid-run, then a restart: nothing is lost, and repeated kicks are
//! bounded by what was in flight.

use crate::common;

use common::*;
use std::collections::BTreeSet;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_run_then_restart_loses_nothing() {
    let ns = Ns::new("kill");
    let mock = mock(200).await;
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let bodies: Vec<Vec<u8>> = (0..2000)
        .map(|i| job(&format!("room-{}", i % 400), &[&format!("u{i}")], None))
        .collect();
    broker.publish_many(&ns.names.requests, &bodies).await;
    let mut child = spawn_binary_worker(&ns, &mock.base_url(), 200, &[]);
    wait_for(Duration::from_secs(30), "some kicks", || async {
        mock.kicked().len() >= 300
    })
    .await;
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    let at_kill = mock.kicked().len();
    let mut child = spawn_binary_worker(&ns, &mock.base_url(), 200, &[]);
    let want: BTreeSet<String> = (0..2000).map(|i| format!("u{i}")).collect();
    wait_for(Duration::from_secs(60), "every user kicked", || async {
        let got: BTreeSet<String> = mock.kicked().into_iter().map(|k| k.user_id).collect();
        got.is_superset(&want)
    })
    .await;
    wait_for(Duration::from_secs(20), "drained", || async {
        broker.depth(&ns.names.requests).await == 0
    })
    .await;
    // SIGTERM: a clean exit with status 0.
    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit after SIGTERM: {status}");
    let kicks = mock.kicked().len();
    let duplicates = kicks - want.len();
    eprintln!("kill -9 after {at_kill} kicks: {duplicates} users kicked twice");
    assert_eq!(broker.depth(&ns.names.dead).await, 0, "nothing dead-lettered");
    // Repeats come only from calls in flight at the kill: bounded by the call
    // slots times five users.
    assert!(duplicates <= 100 * 5, "{duplicates} repeated kicks");
}

/// Jobs made by the producer API without a job id, the ledger on, `kill -9`
/// mid-job, then a restart: the redelivered jobs keep the id the producer gave
/// them, so the ledger skips every user already kicked. Before producer-made
/// ids, intake gave each redelivery a fresh id and every user of the killed
/// jobs was kicked again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_made_jobs_are_not_kicked_again_after_a_crash_with_the_ledger_on() {
    use kickq::job::KickRequest;
    use kickq::producer::{Lane, Producer, ProducerConfig};
    let ns = Ns::new("kill-ids");
    let db = TestDb::new().await;
    let rate = 100;
    let mock = mock(rate).await;
    // Four jobs of 250 users, one room each: the kill after 300 kicks finds
    // at least one job part done and unacked.
    let jobs: Vec<KickRequest> = (0..4)
        .map(|j| KickRequest::new(format!("room-{j}"), (0..250).map(|u| format!("j{j}u{u}"))))
        .collect();
    let want: BTreeSet<String> = jobs.iter().flat_map(|j| j.user_ids.clone()).collect();
    let producer = Producer::connect_with(
        &kickq::secret::Secret::new(amqp_url()),
        ProducerConfig {
            names: ns.names.clone(),
            ..ProducerConfig::new(ns.name())
        },
    )
    .await
    .unwrap();
    // The live lane: the queue this test drains and watches.
    let ids = producer.enqueue_many_to(Lane::Live, jobs).await.unwrap();
    producer.close().await.unwrap();
    assert_eq!(ids.len(), 4);
    // Two calls in flight: at most ten users are in calls the kill cuts short.
    let ledger = [("DATABASE_URL", db.url.as_str()), ("KICKQ_MAX_IN_FLIGHT", "2")];
    let mut child = spawn_binary_worker(&ns, &mock.base_url(), rate, &ledger);
    wait_for(Duration::from_secs(60), "some kicks", || async {
        mock.kicked().len() >= 300
    })
    .await;
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    let at_kill = mock.kicked().len();
    assert!(at_kill < want.len(), "killed mid-run: {at_kill} kicks");
    let mut child = spawn_binary_worker(&ns, &mock.base_url(), rate, &ledger);
    let broker = Broker::connect().await;
    wait_for(Duration::from_secs(90), "every user kicked", || async {
        let got: BTreeSet<String> = mock.kicked().into_iter().map(|k| k.user_id).collect();
        got.is_superset(&want)
    })
    .await;
    wait_for(Duration::from_secs(30), "drained", || async {
        broker.depth(&ns.names.requests).await == 0
    })
    .await;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    let duplicates = mock.kicked().len() - want.len();
    eprintln!("kill -9 after {at_kill} kicks: {duplicates} users kicked twice");
    db.drop_db().await;
    assert!(status.success(), "exit after SIGTERM: {status}");
    assert_eq!(broker.depth(&ns.names.dead).await, 0, "nothing dead-lettered");
    // Only users whose calls were in flight at the kill, or whose rows were
    // not yet committed, are kicked again. A fresh id per delivery kicks again
    // every user of the unfinished jobs: 50 or more after 300 kicks.
    assert!(
        duplicates <= 20,
        "{duplicates} repeated kicks after {at_kill} before the kill"
    );
}
