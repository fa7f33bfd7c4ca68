//! Job deadlines end to end (`kickq run` in process, the real RabbitMQ, mock-zego): a job past its `not_after`
//! when the worker takes it is dead-lettered `expired` with its original bytes and costs no call; a job still in
//! time, and one with an unparseable `not_after` (`validation`), are judged as they should be.

use crate::common;

use common::*;
use kickq::testkit::headers::DeadError;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_its_not_after_is_dead_lettered_expired_without_a_call() {
    let ns = Ns::new("expired");
    let mock = mock(1000).await;
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    // Byte-exact bodies as another producer might write them (spacing, an
    // offset, a fraction): the dead letter must keep them as they are.
    let past = br#"{"room_id":"late-1", "user_ids":["a","b"], "not_after":"2020-01-01T12:00:00.5+02:00", "job_id":"late-job"}"#;
    let bad = br#"{"room_id":"late-2","user_ids":["c"],"not_after":"next tuesday"}"#;
    let future = serde_json::to_vec(&serde_json::json!({
        "room_id": "in-time",
        "user_ids": ["survivor"],
        "not_after": (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339(),
    }))
    .unwrap();
    broker.publish_raw(&ns.names.requests, past).await;
    broker.publish_raw(&ns.names.requests, bad).await;
    broker.publish_raw(&ns.names.requests, &future).await;
    let worker = spawn_worker(worker_config(&ns, &mock.base_url(), 1000)).await;
    wait_for(Duration::from_secs(20), "the job in time kicked", || async {
        !mock.kicked().is_empty()
    })
    .await;
    wait_for(Duration::from_secs(20), "both unusable jobs dead-lettered", || async {
        broker.depth(&ns.names.dead).await == 2 && broker.depth(&ns.names.requests).await == 0
    })
    .await;
    worker.stop().await;
    let dead = broker.drain(&ns.names.dead).await;
    assert_eq!(dead.len(), 2);
    let (body, props) = &dead[0];
    assert_eq!(body.as_slice(), past.as_slice(), "the original bytes");
    let info = dead_info(props);
    assert_eq!(info.error, DeadError::Expired);
    assert_eq!(info.job_id.as_deref(), Some("late-job"));
    assert!(
        info.detail.contains("not_after 2020-01-01T10:00:00.500Z had passed"),
        "{}",
        info.detail
    );
    assert_eq!(
        kickq::testkit::headers::get_str(props.headers().as_ref(), "kickq-error").as_deref(),
        Some("expired")
    );
    let (body, props) = &dead[1];
    assert_eq!(body.as_slice(), bad.as_slice());
    let info = dead_info(props);
    assert_eq!(info.error, DeadError::Validation);
    assert!(
        info.detail.contains("not_after must be an RFC 3339 time") && info.detail.contains("next tuesday"),
        "{}",
        info.detail
    );
    let calls = mock.calls();
    assert!(
        calls.iter().all(|c| c.user_ids == ["survivor"]),
        "no call for an expired or invalid job: {calls:?}"
    );
    assert_eq!(calls.len(), 1);
}

/// A job still in time when taken in, whose deadline passes while it waits
/// behind a sweep: expiry is checked again just before its call, so it is
/// dead-lettered `expired` and costs no call; the users of the sweep are all
/// kicked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_that_passes_while_waiting_is_caught_before_the_call() {
    let ns = Ns::new("expires-waiting");
    let rate = 20;
    let mock = mock(rate).await;
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    // 400 users in 80 full calls: four seconds at 20/s. Full groups go
    // first, so the late job's lone user waits until the sweep is done.
    let sweep: Vec<Vec<u8>> = (0..400)
        .map(|u| job(&format!("sweep-{}", u % 80), &[&format!("u{u}")], None))
        .collect();
    broker.publish_many(&ns.names.bulk, &sweep).await;
    let deadline = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let late = serde_json::to_vec(&serde_json::json!({
        "room_id": "late-room",
        "user_ids": ["late-user"],
        "not_after": deadline.to_rfc3339(),
        "job_id": "late-while-waiting",
    }))
    .unwrap();
    broker.publish_raw(&ns.names.bulk, &late).await;
    let worker = spawn_worker(worker_config(&ns, &mock.base_url(), rate)).await;
    wait_for(
        Duration::from_secs(60),
        "the sweep kicked and the late job dead-lettered",
        || async { mock.kicked().len() >= 400 && broker.depth(&ns.names.dead).await == 1 },
    )
    .await;
    worker.stop().await;
    let dead = broker.drain(&ns.names.dead).await;
    let (body, props) = &dead[0];
    // A user dead-lettered after intake travels in a message of its own
    // (the job's fields, its users of that outcome), as every dead letter
    // from an outcome does.
    let letter: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(letter["job_id"], "late-while-waiting");
    assert_eq!(letter["room_id"], "late-room");
    assert_eq!(letter["user_ids"], serde_json::json!(["late-user"]));
    let kept = chrono::DateTime::parse_from_rfc3339(letter["not_after"].as_str().unwrap()).unwrap();
    assert_eq!(kept, deadline, "the deadline rides along");
    let info = dead_info(props);
    assert_eq!(info.error, DeadError::Expired, "{}", info.detail);
    assert!(info.detail.contains("no call was made"), "{}", info.detail);
    assert!(
        mock.calls().iter().all(|c| c.room_id.as_deref() != Some("late-room")),
        "the expired user cost a call"
    );
}
