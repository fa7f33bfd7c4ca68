//! The producer API against the real RabbitMQ: it declares the queues itself, publishes persistent confirmed
//! jobs with the job id as message id, and publishes nothing from a batch that holds an invalid job.

mod common;

use common::*;
use kickq::job::{self, InvalidJob, KickRequest, Limits};
use kickq::producer::{Producer, ProducerConfig, ProducerError};
use kickq::secret::Secret;

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
    let _also_delete = Ns {
        names: defaults.clone(),
    };
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
    assert_eq!(p.enqueue_many(jobs).await.unwrap(), 2500);
    p.close().await.unwrap();
    let broker = Broker::connect().await;
    let rooms: Vec<String> = broker
        .take_all(&ns.names.requests)
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
}
