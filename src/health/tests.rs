//! Unit tests of `health`.

use super::*;
use std::time::Duration;

#[test]
fn progress_counts_by_outcome_and_diffs() {
    let h = Health::new(Gate::new(50, Duration::from_secs(30)), false);
    assert!(!h.progress().busy());
    h.count_users(Lane::Live, "kicked", 3);
    h.count_users(Lane::Bulk, "retry_scheduled", 1);
    h.count_users(Lane::Live, "deferred", 1);
    h.count_users(Lane::Bulk, "dead_lettered", 2);
    h.count_users(Lane::Live, "unknown-label", 9);
    h.count_calls(2);
    let first = h.progress();
    assert_eq!(
        (
            first.kicked,
            first.retried,
            first.deferred,
            first.dead_lettered,
            first.calls
        ),
        (3, 1, 1, 2, 2),
        "a deferral by a halt is not a retry"
    );
    h.count_users(Lane::Bulk, "kicked", 1);
    h.set_pending_users(3, 4);
    let d = h.progress().since(&first);
    assert_eq!((d.kicked, d.retried, d.calls, d.pending_users), (1, 0, 0, 7));
    assert!(d.busy());
    let (live, bulk) = (h.lane_progress(Lane::Live), h.lane_progress(Lane::Bulk));
    assert_eq!((live.kicked, live.dead_lettered, live.pending_users), (3, 0, 3));
    assert_eq!((bulk.kicked, bulk.dead_lettered, bulk.pending_users), (1, 2, 4));
    h.set_pending_users(0, 0);
    assert!(
        !h.progress().since(&h.progress()).busy(),
        "nothing done, nothing waiting"
    );
}

#[test]
fn role_table() {
    for (standby, consuming, want) in [
        (false, false, Role::Connecting),
        (false, true, Role::Active),
        (true, false, Role::Standby),
        (true, true, Role::Standby),
    ] {
        assert_eq!(
            role(standby, consuming),
            want,
            "standby {standby}, consuming {consuming}"
        );
    }
}

#[tokio::test]
async fn status_reports_role_apps_and_halts() {
    let gate = Gate::new(50, Duration::from_secs(30));
    let h = Health::new(gate.clone(), false);
    let s = h.status();
    assert_eq!(s.role, Role::Connecting);
    assert!(s.apps.is_empty() && s.halted.is_empty());
    let d = h.shard("default").unwrap();
    d.set_connected(true);
    d.set_consuming(true);
    d.delivery_taken();
    gate.report(
        7,
        crate::ratelimit::Feedback::Halt(100000004),
        tokio::time::Instant::now(),
        Duration::ZERO,
    );
    gate.plan(3, tokio::time::Instant::now());
    let s = h.status();
    assert_eq!(s.role, Role::Active);
    assert_eq!(s.apps, vec![3, 7]);
    assert_eq!(s.deliveries_in_flight, 1);
    assert_eq!(s.halted.len(), 1);
    assert_eq!((s.halted[0].app_id, s.halted[0].code), (7, 100000004));
    assert!(s.halted[0].meaning.contains("clock"), "{:?}", s.halted[0]);
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["role"], "active");
    assert_eq!(json["halted"][0]["code"], 100000004);
    assert_eq!(
        json["not_ready"].as_array().unwrap().len(),
        0,
        "a halt is no readiness failure"
    );
    assert_eq!(json["degraded"].as_array().unwrap().len(), 1);
    d.set_standby(true);
    assert_eq!(h.status().role, Role::Standby);
    assert_eq!(h.status().shards[0].role, Role::Standby);
    let since = d.role_since().expect("a role was taken");
    d.set_standby(true);
    assert_eq!(d.role_since(), Some(since), "the same role keeps its start");
    assert!(Health::new(gate, false)
        .shard("default")
        .unwrap()
        .role_since()
        .is_none());
}

/// Two shards: active when one is; each shard's reasons named.
#[test]
fn shards_report_their_own_role() {
    let h = Health::for_shards(Gate::new(50, Duration::from_secs(30)), false, &["eu", "us"]);
    let (eu, us) = (h.shard("eu").unwrap(), h.shard("us").unwrap());
    eu.set_connected(true);
    eu.set_consuming(true);
    us.set_connected(true);
    us.set_standby(true);
    let s = h.status();
    assert_eq!(s.role, Role::Active);
    assert_eq!(
        s.shards.iter().map(|x| (x.shard.as_str(), x.role)).collect::<Vec<_>>(),
        vec![("eu", Role::Active), ("us", Role::Standby)]
    );
    assert!(h.not_ready().is_empty(), "{:?}", h.not_ready());
    us.session_ended();
    assert_eq!(
        h.not_ready(),
        vec!["broker: not connected (shard us)", "consumer: not consuming (shard us)"]
    );
    eu.delivery_taken();
    us.delivery_taken();
    assert_eq!(h.in_flight(), 2);
    assert!(h.shard("asia").is_none());
}

#[test]
fn readiness_names_every_failing_reason() {
    let gate = Gate::new(50, Duration::from_secs(30));
    let h = Health::new(gate.clone(), true);
    let why = h.not_ready();
    assert!(why.iter().any(|w| w.starts_with("broker")), "{why:?}");
    assert!(why.iter().any(|w| w.starts_with("consumer")), "{why:?}");
    let d = h.shard("default").unwrap();
    d.set_connected(true);
    d.set_consuming(true);
    assert!(h.not_ready().is_empty());
    // A ledger down and a halt degrade the worker; it still serves.
    h.set_ledger_ok(false);
    gate.report(
        7,
        crate::ratelimit::Feedback::Halt(100000005),
        tokio::time::Instant::now(),
        Duration::ZERO,
    );
    assert!(h.not_ready().is_empty(), "{:?}", h.not_ready());
    let degraded = h.degraded();
    assert_eq!(degraded.len(), 2, "{degraded:?}");
    assert!(degraded[0].contains("100000005"), "{degraded:?}");
    assert!(degraded[1].starts_with("ledger"), "{degraded:?}");
    h.set_ledger_ok(true);
    d.set_consuming(false);
    d.set_standby(true);
    assert!(
        h.not_ready().is_empty(),
        "a standby needs no consumer: {:?}",
        h.not_ready()
    );
    d.set_standby(false);
    assert_eq!(h.not_ready(), vec!["consumer: not consuming"]);
    let off = Health::new(gate, false);
    off.set_ledger_ok(false);
    assert!(!off.degraded().iter().any(|w| w.starts_with("ledger")));
}
