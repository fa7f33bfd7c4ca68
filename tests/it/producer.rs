//! The producer API against the real RabbitMQ: it declares the queues itself, publishes persistent confirmed
//! jobs with a job id (the caller's or a made one) as message id, validates with the worker's limits, publishes
//! nothing from a batch that holds an invalid job, and reports a batch cut short by a nack; one job goes to the
//! live lane and a batch to the bulk lane unless the lane is given.

use crate::common;

use common::*;
use kickq::job::{self, InvalidJob, KickRequest, Limits};
use kickq::producer::{Lane, Producer, ProducerConfig, ProducerError};
use kickq::secret::Secret;
use std::time::Duration;

async fn producer(ns: &Ns) -> Producer {
    let cfg = ProducerConfig {
        names: ns.names.clone(),
        ..ProducerConfig::new(ns.name())
    };
    Producer::connect_with(&Secret::new(amqp_url()), cfg).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_declares_the_queues_and_publishes_one_persistent_job() {
    let ns = Ns::new("prod-one");
    let p = producer(&ns).await;
    let broker = Broker::connect().await;
    assert_eq!(
        broker.depth(&ns.names.dead).await,
        0,
        "the producer declared the dead queue too"
    );
    p.enqueue(
        KickRequest::new("room-1", ["a", "b", "a"])
            .with_reason("spam")
            .with_job_id("job-7"),
    )
    .await
    .unwrap();
    p.close().await.unwrap();

    let got = broker.take_all(&ns.names.requests).await;
    assert_eq!(got.len(), 1);
    let (body, props) = &got[0];
    let job = job::parse(body, &Limits::default()).unwrap();
    assert_eq!(job.user_ids, vec!["a", "b"], "validated: duplicates folded");
    assert_eq!(job.reason.as_deref(), Some("spam"));
    assert_eq!(job.job_id.as_deref(), Some("job-7"));
    assert_eq!(props.message_id().as_ref().map(|m| m.as_str()), Some("job-7"));
    assert_eq!(*props.delivery_mode(), Some(2), "persistent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_connect_uses_the_worker_defaults() {
    // `Producer::connect` declares the default retry delays; the namespace's
    // cleanup must delete those queues too.
    let ns = Ns::new("prod-defaults");
    let defaults = ProducerConfig::new(ns.name()).names;
    let _also_delete = Ns::for_names(defaults.clone());
    let p = Producer::connect(&amqp_url(), ns.name()).await.unwrap();
    p.enqueue(KickRequest::new("r", ["u"])).await.unwrap();
    assert_eq!(p.names(), &defaults);
    p.close().await.unwrap();
    let broker = Broker::connect().await;
    assert_eq!(broker.depth(&defaults.requests).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_many_publishes_every_job_in_order() {
    let ns = Ns::new("prod-many");
    let p = producer(&ns).await;
    let jobs: Vec<KickRequest> = (0..2500)
        .map(|i| KickRequest::new(format!("room-{i}"), [format!("u{i}")]))
        .collect();
    assert_eq!(p.enqueue_many(jobs).await.unwrap().len(), 2500);
    p.close().await.unwrap();
    let broker = Broker::connect().await;
    assert_eq!(
        broker.depth(&ns.names.requests).await,
        0,
        "a batch goes to the bulk lane"
    );
    let rooms: Vec<String> = broker
        .take_all(&ns.names.bulk)
        .await
        .iter()
        .map(|(b, _)| job::parse(b, &Limits::default()).unwrap().room_id)
        .collect();
    let want: Vec<String> = (0..2500).map(|i| format!("room-{i}")).collect();
    assert_eq!(rooms, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_job_publishes_nothing() {
    let ns = Ns::new("prod-invalid");
    let p = producer(&ns).await;
    let jobs = vec![
        KickRequest::new("r", ["a"]),
        KickRequest::new("r", ["b"]),
        KickRequest::new("r", [""]),
        KickRequest::new("r", ["c"]),
    ];
    match p.enqueue_many(jobs).await {
        Err(ProducerError::Invalid { index, error }) => {
            assert_eq!(index, 2);
            assert_eq!(error, InvalidJob::UserIdLength { index: 0, len: 0 });
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    let err = p.enqueue(KickRequest::new("", ["a"])).await.unwrap_err();
    assert!(err.to_string().contains("room_id must be 1 to 128 bytes"), "{err}");
    p.close().await.unwrap();
    let broker = Broker::connect().await;
    assert_eq!(broker.depth(&ns.names.requests).await, 0);
    assert_eq!(broker.depth(&ns.names.bulk).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_job_leaves_with_a_stable_id_in_body_and_message_id() {
    let ns = Ns::new("prod-ids");
    let p = producer(&ns).await;
    let one = p.enqueue(KickRequest::new("room-1", ["a"])).await.unwrap();
    let given = p
        .enqueue(KickRequest::new("room-2", ["b"]).with_job_id("mine-1"))
        .await
        .unwrap();
    let many = p
        .enqueue_many([KickRequest::new("room-3", ["c"]), KickRequest::new("room-4", ["d"])])
        .await
        .unwrap();
    p.close().await.unwrap();
    assert_eq!(given, "mine-1", "a caller's id is kept");
    assert_eq!(one.len(), 36, "made ids are UUIDs: {one}");
    let mut returned = vec![one.clone(), given, many[0].clone(), many[1].clone()];
    returned.sort();
    returned.dedup();
    assert_eq!(returned.len(), 4, "distinct ids");
    let broker = Broker::connect().await;
    let mut got = broker.take_all(&ns.names.requests).await;
    got.extend(broker.take_all(&ns.names.bulk).await);
    let ids: Vec<(String, String)> = got
        .iter()
        .map(|(b, props)| {
            let body_id = job::parse(b, &Limits::default()).unwrap().job_id.unwrap();
            let message_id = props.message_id().as_ref().unwrap().to_string();
            (body_id, message_id)
        })
        .collect();
    let want = vec![
        (one.clone(), one),
        ("mine-1".to_string(), "mine-1".to_string()),
        (many[0].clone(), many[0].clone()),
        (many[1].clone(), many[1].clone()),
    ];
    assert_eq!(ids, want, "the returned id is in the body and the message_id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_producer_validates_with_the_workers_limits() {
    let ns = Ns::new("prod-limits");
    let limits = Limits::from_vars(|v| (v == "KICKQ_MAX_USERS_PER_MESSAGE").then(|| "50".to_string())).unwrap();
    let cfg = ProducerConfig {
        names: ns.names.clone(),
        limits,
        ..ProducerConfig::new(ns.name())
    };
    let p = Producer::connect_with(&Secret::new(amqp_url()), cfg).await.unwrap();
    let big = KickRequest::new("room-1", (0..51).map(|i| format!("u{i}")));
    match p.enqueue(big).await {
        Err(ProducerError::Invalid { error, .. }) => {
            assert!(error.to_string().contains("50"), "{error}")
        }
        other => panic!("51 users with a worker limit of 50: {other:?}"),
    }
    p.enqueue(KickRequest::new("room-1", (0..50).map(|i| format!("u{i}"))))
        .await
        .unwrap();
    p.close().await.unwrap();
    let broker = Broker::connect().await;
    assert_eq!(broker.depth(&ns.names.requests).await, 1);
}

/// The lane is the caller's to choose: `_to` publishes where it is told, a
/// single job defaults to live, a batch to bulk, and both lanes' queues are
/// declared by the producer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_call_publishes_to_its_lane() {
    let ns = Ns::new("prod-lanes");
    let p = producer(&ns).await;
    let broker = Broker::connect().await;
    for q in [&ns.names.bulk, &ns.names.bulk_retry[0].1, &ns.names.requests] {
        assert_eq!(broker.depth(q).await, 0, "{q} declared by the producer");
    }
    let one_live = p.enqueue(KickRequest::new("live-1", ["a"])).await.unwrap();
    let one_bulk = p
        .enqueue_to(Lane::Bulk, KickRequest::new("bulk-1", ["b"]))
        .await
        .unwrap();
    let many_live = p
        .enqueue_many_to(Lane::Live, [KickRequest::new("live-2", ["c"])])
        .await
        .unwrap();
    let many_bulk = p.enqueue_many([KickRequest::new("bulk-2", ["d"])]).await.unwrap();
    let sent = p.send_to(Lane::Bulk, KickRequest::new("bulk-3", ["e"])).await.unwrap();
    let sent = sent.confirmed().await.unwrap();
    p.close().await.unwrap();
    let ids = |got: Vec<(Vec<u8>, lapin::BasicProperties)>| -> Vec<String> {
        got.iter()
            .map(|(b, _)| job::parse(b, &Limits::default()).unwrap().job_id.unwrap())
            .collect()
    };
    assert_eq!(
        ids(broker.take_all(&ns.names.requests).await),
        [one_live, many_live[0].clone()]
    );
    assert_eq!(
        ids(broker.take_all(&ns.names.bulk).await),
        [one_bulk, many_bulk[0].clone(), sent]
    );
}

/// Removes a broker policy when dropped, even when the test panics.
struct Policy(String);

impl Policy {
    fn set(name: &str, pattern: &str, definition: &str) -> Policy {
        let ok = rabbitmqctl_command()
            .args(["set_policy", "--apply-to", "queues", name, pattern, definition])
            .output()
            .expect("rabbitmqctl runs")
            .status
            .success();
        assert!(ok, "set policy {name}");
        Policy(name.to_owned())
    }
}

impl Drop for Policy {
    fn drop(&mut self) {
        let _ = rabbitmqctl_command().args(["clear_policy", &self.0]).output();
    }
}

/// Waits until `rabbitmqctl list_queues` shows `policy` on `queue` ("" for none).
async fn wait_for_policy(queue: &str, policy: &str) {
    wait_for(Duration::from_secs(20), "the policy applied", || async {
        let out = rabbitmqctl_command()
            .args(["list_queues", "-q", "--no-table-headers", "name", "policy"])
            .output()
            .expect("rabbitmqctl runs");
        String::from_utf8_lossy(&out.stdout).lines().any(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words.first() == Some(&queue) && words.get(1).copied().unwrap_or("") == policy
        })
    })
    .await;
}

/// A broker that nacks in the middle of a batch (a length limit with
/// reject-publish, by policy): `enqueue_many` says which jobs are stored and
/// which in doubt, and enqueueing `resume` of the batch completes it with
/// every job stored once. Before, the error carried no count: a caller could
/// only retry the whole batch, duplicating the stored prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nack_mid_batch_reports_the_stored_prefix_and_resume_completes_it() {
    let ns = Ns::new("prod-nack");
    let cfg = ProducerConfig {
        names: ns.names.clone(),
        max_in_flight: 4,
        ..ProducerConfig::new(ns.name())
    };
    let p = Producer::connect_with(&Secret::new(amqp_url()), cfg).await.unwrap();
    let policy_name = format!("{}-cap", ns.name());
    let _policy = Policy::set(
        &policy_name,
        &format!("^{}$", regex_escape(&ns.names.bulk)),
        r#"{"max-length":10,"overflow":"reject-publish"}"#,
    );
    wait_for_policy(&ns.names.bulk, &policy_name).await;
    let batch: Vec<KickRequest> = (0..30)
        .map(|i| KickRequest::new(format!("room-{i}"), [format!("u{i}")]))
        .collect();
    let partial = match p.enqueue_many(batch.clone()).await {
        Err(ProducerError::Partial(partial)) => partial,
        other => panic!("expected a partial enqueue, got {other:?}"),
    };
    // A quorum queue applies its length limit a little late: it takes ten or a few more.
    let took = partial.confirmed.len();
    assert!((10..20).contains(&took), "the queue took about ten: {partial}");
    assert!(
        !partial.in_doubt.is_empty() && partial.in_doubt.len() <= 5,
        "the nacked job and those in flight (window 4) are in doubt: {:?}",
        partial.in_doubt
    );
    assert!(
        partial.to_string().contains(&format!("{took} job(s) confirmed")),
        "{partial}"
    );
    let broker = Broker::connect().await;
    let stored: Vec<String> = broker
        .take_all(&ns.names.bulk)
        .await
        .iter()
        .map(|(b, _)| job::parse(b, &Limits::default()).unwrap().job_id.unwrap())
        .collect();
    assert_eq!(stored, partial.confirmed, "exactly the confirmed prefix is stored");
    // The queue is empty again, so the rest fits.
    drop(_policy);
    wait_for_policy(&ns.names.bulk, "").await;
    let rest = partial.resume(batch);
    assert_eq!(rest.len(), 30 - took);
    assert_eq!(rest[0].job_id.as_deref(), Some(partial.in_doubt[0].as_str()));
    let resumed = p.enqueue_many(rest).await.unwrap();
    p.close().await.unwrap();
    assert_eq!(
        &resumed[..partial.in_doubt.len()],
        &partial.in_doubt[..],
        "in-doubt jobs keep their ids"
    );
    let rooms: Vec<String> = broker
        .take_all(&ns.names.bulk)
        .await
        .iter()
        .map(|(b, _)| job::parse(b, &Limits::default()).unwrap().room_id)
        .collect();
    let want: Vec<String> = (took..30).map(|i| format!("room-{i}")).collect();
    assert_eq!(rooms, want, "the rest, once each, in order");
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| match c.is_ascii_alphanumeric() || c == '_' || c == '-' {
            true => vec![c],
            false => vec!['\\', c],
        })
        .collect()
}
