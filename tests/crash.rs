//! `kill -9` of the real `kickq` binary mid-run, then a restart: nothing is lost, and repeated kicks are
//! bounded by what was in flight.

mod common;

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
