//! Shards: apps served by named shards with queues and a leadership lock of their own. Three `kickq run`
//! processes over two shards (one active per shard, a `kill -9` hands only that shard to its standby), jobs
//! routed by the `{ns}.jobs` exchange, a job in the wrong shard's queue forwarded there, and a shard's bad
//! credentials halting that shard's app only.

use crate::common;

use common::*;
use kickq::config::apps::{AppConfig, Apps};
use kickq::config::shards::{Routing, ShardName};
use kickq::config::Credentials;
use kickq::job::KickRequest;
use kickq::mock_zego::MockZego;
use kickq::producer::{Producer, ProducerConfig};
use kickq::secret::Secret;
use std::time::Duration;

/// A secret the mock does not hold for APP_ID: calls signed with it answer 100000005.
const WRONG: &str = "ffffffffffffffffffffffffffffffff";

fn shard(name: &str) -> ShardName {
    ShardName::parse(name).unwrap()
}

/// APP_ID in shard eu, APP_B in shard us (and the default app).
fn routing() -> Routing {
    Routing::new([(APP_ID, shard("eu")), (APP_B, shard("us"))], Some(APP_B))
}

/// Calls the mock received for `app`, in arrival order (ms since it started).
fn arrivals(mock: &MockZego, app: u32) -> Vec<u64> {
    mock.calls()
        .iter()
        .filter(|c| c.app_id == Some(app))
        .map(|c| c.at_ms)
        .collect()
}

/// The longest gap between consecutive calls in `times` that lie within [from, to].
fn longest_gap(times: &[u64], from: u64, to: u64) -> u64 {
    let inside: Vec<u64> = times.iter().copied().filter(|t| (from..=to).contains(t)).collect();
    inside.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(u64::MAX)
}

/// Milliseconds since the mock started, on the mock's clock.
fn mock_ms(mock: &MockZego) -> u64 {
    mock.started().elapsed().as_millis() as u64
}

/// `/status` of a child worker, as JSON (`None` while it does not answer).
async fn status(port: u16) -> Option<serde_json::Value> {
    kickq::zego::install_crypto_provider();
    let r = reqwest::get(format!("http://127.0.0.1:{port}/status")).await.ok()?;
    serde_json::from_str(&r.text().await.ok()?).ok()
}

/// Each shard's role in a `/status` body: `[("eu", "active"), ...]`.
fn roles(status: &serde_json::Value) -> Vec<(String, String)> {
    status["shards"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        s["shard"].as_str().unwrap().to_owned(),
                        s["role"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A config file for both apps in their shards, against `mock`.
fn config_file(ns: &Ns, mock: &MockZego, dir: &std::path::Path) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("kickq.toml");
    std::fs::write(
        &path,
        format!(
            "namespace = \"{ns}\"\n\n[[apps]]\napp_id = {APP_ID}\nsecret_env = \"KQ_TEST_SHARD_SECRET_EU\"\napi_url = \"{url}\"\nshard = \"eu\"\n\n[[apps]]\napp_id = {APP_B}\nsecret_env = \"KQ_TEST_SHARD_SECRET_US\"\napi_url = \"{url}\"\nshard = \"us\"\ndefault = true\n",
            ns = ns.name(),
            url = mock.base_url(),
        ),
    )
    .unwrap();
    path.display().to_string()
}

/// One `kickq run --shards <shards>` child with the config file.
fn spawn_shard_worker(
    ns: &Ns,
    mock: &MockZego,
    config: &str,
    shards: &str,
    name: &str,
    port: u16,
) -> std::process::Child {
    let port = port.to_string();
    let name = format!("{}-{name}", ns.name());
    spawn_binary_worker(
        ns,
        &mock.base_url(),
        50,
        &[
            ("KICKQ_CONFIG", config),
            ("KICKQ_SHARDS", shards),
            ("KQ_TEST_SHARD_SECRET_EU", SECRET),
            ("KQ_TEST_SHARD_SECRET_US", SECRET_B),
            ("ZEGO_APP_ID", ""),
            ("ZEGO_SERVER_SECRET", ""),
            ("KICKQ_METRICS_ADDR", &format!("127.0.0.1:{port}")),
            ("KICKQ_CONNECTION_NAME", &name),
        ],
    )
}

/// Three workers over two shards: w1 serves eu, w2 serves us, w3 both (the
/// hot standby of each). Each shard has exactly one active worker. A
/// backlog of both apps goes through the `{ns}.jobs` exchange; `kill -9` of
/// w1 mid-backlog hands eu to w3 within 2 s, while us never pauses (its
/// calls go on at 50/s); nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_shard_worker_hands_only_its_shard_to_the_standby() {
    let ns = Ns::new("shards-kill");
    let eu = ns.shard("eu");
    let us = ns.shard("us");
    let mock = two_app_mock(50, &[]).await;
    let dir = std::env::temp_dir().join(format!("kickq-shards-kill-{}", std::process::id()));
    let config = config_file(&ns, &mock, &dir);
    let (p1, p2) = (free_port(), free_port());
    let mut w1 = ChildGuard(spawn_shard_worker(&ns, &mock, &config, "eu", "w1", p1));
    let mut w2 = ChildGuard(spawn_shard_worker(&ns, &mock, &config, "us", "w2", p2));
    let role_of = |port| async move { status(port).await.map(|s| roles(&s)).unwrap_or_default() };
    let active = |shard: &str| vec![(shard.to_owned(), "active".to_owned())];
    wait_for(Duration::from_secs(20), "w1 active for eu, w2 for us", || async {
        role_of(p1).await == active("eu") && role_of(p2).await == active("us")
    })
    .await;
    // Its port is picked only now: picked with the others, another test
    // of the parallel suite bound it during the wait above once (w3 exited
    // with "Address already in use").
    let p3 = free_port();
    let mut w3 = ChildGuard(spawn_shard_worker(&ns, &mock, &config, "eu,us", "w3", p3));
    let standby = vec![
        ("eu".to_owned(), "standby".to_owned()),
        ("us".to_owned(), "standby".to_owned()),
    ];
    wait_for(Duration::from_secs(20), "w3 the standby of both shards", || async {
        role_of(p3).await == standby
    })
    .await;
    let broker = Broker::connect().await;
    for names in [&eu, &us] {
        for queue in [&names.requests, &names.bulk] {
            assert_eq!(
                consumers(&broker, queue).await,
                1,
                "{queue}: only the active worker consumes"
            );
        }
    }
    assert_eq!(
        consumers(&broker, &ns.names.requests).await,
        0,
        "no app is in the default shard"
    );

    // A backlog of 400 one-user jobs in rooms of their own for each app,
    // through the exchange: 8 s of calls at 50/s each, so both workers call
    // at the full rate whatever the publisher does. w1 dies 3 s in.
    let producer = Producer::connect_with(
        &Secret::new(amqp_url()),
        ProducerConfig {
            routing: Some(routing()),
            // The test's delays: the namespace's cleanup deletes these queues.
            names: ns.names.clone(),
            ..ProducerConfig::new(ns.name())
        },
    )
    .await
    .unwrap();
    let per_app = 400;
    let mut jobs = Vec::new();
    for i in 0..per_app {
        for (app, tag) in [(APP_ID, "eu"), (APP_B, "us")] {
            let mut job = KickRequest::new(format!("{tag}-room-{i}"), [format!("{tag}-user-{i}")]);
            job.app_id = Some(app);
            jobs.push(job);
        }
    }
    producer
        .enqueue_many_to(kickq::producer::Lane::Live, jobs)
        .await
        .unwrap();
    producer.close().await.unwrap();
    wait_for(Duration::from_secs(10), "both apps calling", || async {
        !arrivals(&mock, APP_ID).is_empty() && !arrivals(&mock, APP_B).is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    w1.0.kill().unwrap();
    let kill_ms = mock_ms(&mock);
    wait_for(Duration::from_secs(30), "every job of both apps kicked", || async {
        let kicked = mock.kicked();
        kicked.len() >= 2 * per_app
    })
    .await;
    let _ = w1.0.wait();
    let s3 = status(p3).await.expect("w3 answers");
    assert_eq!(
        roles(&s3),
        vec![
            ("eu".to_owned(), "active".to_owned()),
            ("us".to_owned(), "standby".to_owned())
        ],
        "w3 took eu only"
    );
    for child in [&w2, &w3] {
        send_signal(child.0.id(), "TERM");
    }
    let (s2, s3) = (w2.0.wait().unwrap(), w3.0.wait().unwrap());
    let _ = std::fs::remove_dir_all(&dir);
    assert!(s2.success() && s3.success(), "{s2:?} {s3:?}");

    let (a, b) = (arrivals(&mock, APP_ID), arrivals(&mock, APP_B));
    let first_after = a
        .iter()
        .copied()
        .find(|t| *t > kill_ms)
        .expect("eu calls after the kill");
    let last_before = a
        .iter()
        .copied()
        .filter(|t| *t <= kill_ms)
        .max()
        .expect("eu calls before the kill");
    let handover = first_after - kill_ms;
    // A call w1 sent just before the kill may land after it: the handover
    // is the longest pause in eu's calls around the kill, which holds the
    // takeover's one-window hold.
    let eu_gap = longest_gap(&a, kill_ms.saturating_sub(1000), kill_ms + 3000);
    // us's calls from a second before the kill to 2 s after it: its
    // backlog lasts longer, so a pause there is the worker's.
    let us_gap = longest_gap(&b, kill_ms.saturating_sub(1000), kill_ms + 2000);
    eprintln!(
        "shard handover: eu's last call {} ms before the kill, first call {handover} ms after it (w3), longest eu pause {eu_gap} ms; \
         us's longest gap between calls from 1 s before the kill to 2 s after it: {us_gap} ms; \
         calls eu {} us {}, kicked {}",
        kill_ms - last_before,
        a.len(),
        b.len(),
        mock.kicked().len()
    );
    // The takeover holds 1,770 ms from the token (the dead holder's 750 ms
    // lease and a window): the pause must hold at least that. Above it, the
    // broker noticing the closed socket and a loaded 2-core machine's
    // scheduling: the upper bounds catch a stuck takeover, and the figure
    // (1.8 s on a quiet machine) goes to the README.
    assert!(handover <= 1770 + 3000, "eu resumed {handover} ms after the kill");
    assert!(
        (1770..=1770 + 3000).contains(&eu_gap),
        "eu's longest pause around the kill was {eu_gap} ms: the handover (with its 1,770 ms hold) must be in it"
    );
    assert!(us_gap <= 500, "us paused {us_gap} ms around eu's handover");
    let kicked: std::collections::BTreeSet<String> = mock.kicked().into_iter().map(|k| k.user_id).collect();
    for i in 0..per_app {
        for tag in ["eu", "us"] {
            assert!(kicked.contains(&format!("{tag}-user-{i}")), "{tag}-user-{i} was lost");
        }
    }
    let by_room_app: Vec<(String, Option<u32>)> = mock
        .calls()
        .into_iter()
        .map(|c| (c.room_id.unwrap_or_default(), c.app_id))
        .collect();
    assert!(
        by_room_app
            .iter()
            .all(|(room, app)| (room.starts_with("eu-") && *app == Some(APP_ID))
                || (room.starts_with("us-") && *app == Some(APP_B))),
        "every call was made for its own app"
    );
    assert_eq!(mock.counters().rate_limited, 0, "no second over the limit");
}

/// Consumers on a queue (passive declare).
async fn consumers(broker: &Broker, queue: &str) -> u32 {
    kickq::testkit::topology::inspect(&broker.conn, queue)
        .await
        .unwrap()
        .map_or(0, |q| q.consumers)
}

/// Two in-process workers, one per shard. A job of us's app published
/// straight to eu's queue, and a job naming no app (the default app is in
/// us), are forwarded to us's queue and kicked there with us's app; nothing
/// is dead-lettered for it. A job of an app no shard serves is dead-lettered
/// `unknown_app` as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_in_the_wrong_shards_queue_is_forwarded_and_kicked_there() {
    let ns = Ns::new("shards-forward");
    let eu = ns.shard("eu");
    let us = ns.shard("us");
    let mock = two_app_mock(50, &[]).await;
    let shard_worker = |app: u32, secret: &str, name: &str| {
        let apps = Apps::new(
            vec![AppConfig {
                api_url: mock.base_url(),
                ..AppConfig::new(Credentials {
                    app_id: app,
                    secret: Secret::new(secret),
                })
                .in_shard(shard(name))
            }],
            None,
        )
        .unwrap();
        kickq::worker::WorkerConfig {
            apps,
            routing: Some(routing()),
            ..worker_config(&ns, &mock.base_url(), 50).with_connection_name(format!("{}-{name}", ns.name()))
        }
    };
    let w_eu = spawn_worker(shard_worker(APP_ID, SECRET, "eu")).await;
    let w_us = spawn_worker(shard_worker(APP_B, SECRET_B, "us")).await;
    let broker = Broker::connect().await;
    wait_for(Duration::from_secs(10), "both shards consuming", || async {
        consumers(&broker, &eu.requests).await == 1 && consumers(&broker, &us.requests).await == 1
    })
    .await;
    let for_us = serde_json::to_vec(
        &serde_json::json!({"room_id": "us-room", "user_ids": ["u1"], "app_id": APP_B, "job_id": "fwd-1"}),
    )
    .unwrap();
    let no_app = job("default-room", &["d1"], None);
    let unknown = br#"{"room_id":"nowhere","user_ids":["z"],"app_id":424242}"#.to_vec();
    broker
        .publish_many(&eu.requests, &[for_us, no_app, unknown.clone()])
        .await;
    broker.publish_raw(&eu.bulk, &job("bulk-room", &["b1"], None)).await;
    // A job already forwarded 3 times (workers disagreeing on its shard) is
    // dead-lettered rather than handed on again.
    let looping =
        serde_json::to_vec(&serde_json::json!({"room_id": "loop-room", "user_ids": ["l1"], "app_id": APP_B})).unwrap();
    let mut forwarded = lapin::types::FieldTable::default();
    forwarded.insert("kickq-forwards".into(), lapin::types::AMQPValue::LongLongInt(3));
    broker
        .publisher
        .publish(
            &eu.requests,
            &looping,
            kickq::testkit::publish::persistent_json(None, forwarded),
        )
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(15),
        "the forwarded jobs kicked, the unknown and the looping one dead",
        || async { mock.kicked().len() >= 3 && broker.depth(&ns.names.dead).await == 2 },
    )
    .await;
    let eu_summary = w_eu.stop().await;
    let us_summary = w_us.stop().await;
    let kicked: std::collections::BTreeMap<String, u32> =
        mock.kicked().into_iter().map(|k| (k.room_id, k.app_id)).collect();
    for room in ["us-room", "default-room", "bulk-room"] {
        assert_eq!(
            kicked.get(room),
            Some(&APP_B),
            "{room} kicked with us's app: {kicked:?}"
        );
    }
    assert_eq!(
        mock.calls().iter().filter(|c| c.app_id == Some(APP_ID)).count(),
        0,
        "nothing was called from the wrong shard"
    );
    assert_eq!(eu_summary.tally.forwarded, 3, "{eu_summary:?}");
    assert_eq!(us_summary.tally.forwarded, 0, "{us_summary:?}");
    let dead = broker.drain(&ns.names.dead).await;
    assert_eq!(dead.len(), 2);
    let of = |body: &[u8]| {
        dead.iter()
            .find(|(b, _)| b.as_slice() == body)
            .map(|(_, p)| dead_info(p))
    };
    let unknown_info = of(&unknown).expect("the unknown app's job, verbatim");
    assert_eq!(unknown_info.error, kickq::testkit::headers::DeadError::UnknownApp);
    let loop_info = of(&looping).expect("the looping job, verbatim");
    assert_eq!(loop_info.error, kickq::testkit::headers::DeadError::UnknownApp);
    assert!(loop_info.detail.contains("forwarded 3 times"), "{}", loop_info.detail);
    assert!(!mock.kicked().iter().any(|k| k.room_id == "loop-room"));
    for q in [&eu.requests, &eu.bulk, &us.requests, &us.bulk] {
        assert_eq!(broker.depth(q).await, 0, "{q} drained");
    }
}

/// One worker serving both shards; eu's app has a wrong secret. eu's app
/// halts (probes only, nothing dead-lettered) while us's app goes on at its
/// rate; /status names eu's app as halted and both shards active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_of_one_shards_app_halt_that_app_only() {
    let ns = Ns::new("shards-halt");
    let eu = ns.shard("eu");
    let us = ns.shard("us");
    let rate = 20;
    let mock = two_app_mock(rate, &[]).await;
    let app = |id: u32, secret: &str, name: &str| AppConfig {
        api_url: mock.base_url(),
        rate,
        ..AppConfig::new(Credentials {
            app_id: id,
            secret: Secret::new(secret),
        })
        .in_shard(shard(name))
    };
    let cfg = kickq::worker::WorkerConfig {
        apps: Apps::new(vec![app(APP_ID, WRONG, "eu"), app(APP_B, SECRET_B, "us")], Some(APP_B)).unwrap(),
        ..worker_config(&ns, &mock.base_url(), rate)
    };
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let worker = kickq::worker::Worker::bind(cfg.with_metrics(addr)).await.unwrap();
    let metrics = worker.metrics_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(worker.run(stop.clone()));
    let broker = Broker::connect().await;
    let body = |app: u32, tag: &str, i: usize| {
        serde_json::to_vec(&serde_json::json!({"room_id": format!("{tag}-{}", i % 10), "user_ids": [format!("{tag}-{i}")], "app_id": app})).unwrap()
    };
    let eu_jobs: Vec<Vec<u8>> = (0..100).map(|i| body(APP_ID, "eu", i)).collect();
    let us_jobs: Vec<Vec<u8>> = (0..300).map(|i| body(APP_B, "us", i)).collect();
    wait_for(Duration::from_secs(10), "both shards consuming", || async {
        consumers(&broker, &eu.requests).await == 1 && consumers(&broker, &us.requests).await == 1
    })
    .await;
    let t0 = mock_ms(&mock);
    broker.publish_many(&eu.requests, &eu_jobs).await;
    broker.publish_many(&us.requests, &us_jobs).await;
    wait_for(Duration::from_secs(20), "every us user kicked", || async {
        mock.kicked().iter().filter(|k| k.app_id == APP_B).count() >= 300
    })
    .await;
    let took = mock_ms(&mock) - t0;
    kickq::zego::install_crypto_provider();
    let status: serde_json::Value = serde_json::from_str(
        &reqwest::get(format!("http://{metrics}/status"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    stop.cancel();
    let _ = run.await.unwrap();
    let b = arrivals(&mock, APP_B);
    // eu's calls fail authentication, so the mock records no AppId for them.
    let eu_calls: Vec<u64> = mock
        .calls()
        .iter()
        .filter(|c| c.app_id != Some(APP_B))
        .map(|c| c.at_ms)
        .collect();
    eprintln!(
        "us's 300 users (60 calls at {rate}/s) took {took} ms with eu halted; eu made {} calls (probes)",
        eu_calls.len()
    );
    assert!(
        took <= 6000,
        "us took {took} ms: its app was slowed by eu's halt (ideal about 3 s)"
    );
    assert!(b.len() >= 60);
    assert!(!eu_calls.is_empty(), "eu called once, and halted");
    // One call halts it; then a probe every 300 ms (the test's probe
    // interval) until the worker stopped, a few calls racing the halt.
    let probes = (mock_ms(&mock) - t0) as usize / 300 + 8;
    assert!(
        eu_calls.len() <= probes,
        "eu only probes while halted: {} calls, at most {probes} expected",
        eu_calls.len()
    );
    assert_eq!(mock.kicked().iter().filter(|k| k.app_id == APP_ID).count(), 0);
    let halted: Vec<u64> = status["halted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["app_id"].as_u64().unwrap())
        .collect();
    assert_eq!(halted, vec![APP_ID as u64], "{status}");
    assert_eq!(
        roles(&status),
        vec![
            ("eu".to_owned(), "active".to_owned()),
            ("us".to_owned(), "active".to_owned())
        ]
    );
    assert_eq!(
        broker.depth(&ns.names.dead).await,
        0,
        "nothing dead-lettered for a halt"
    );
}

/// The command line with shards in the config file: `enqueue` routes by app
/// through `{ns}.jobs` (and refuses an app no shard serves, storing nothing);
/// `status` lists every shard's queues and lock; `run --print-config
/// --shards eu` needs only eu's secret and prints the shard; `dlq replay`
/// sends a letter to its app's shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_routes_by_shard() {
    let ns = Ns::new("shards-cli");
    let eu = ns.shard("eu");
    let us = ns.shard("us");
    let mock = two_app_mock(50, &[]).await;
    let dir = std::env::temp_dir().join(format!("kickq-shards-cli-{}", std::process::id()));
    let config = config_file(&ns, &mock, &dir);
    let with_config = |args: &[&str]| {
        let mut v = vec!["--config", config.as_str()];
        v.extend_from_slice(args);
        v.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>, env: Vec<(&'static str, &'static str)>, stdin: Option<Vec<u8>>| {
        let ns = &ns;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            kickq(ns, &args, &env, stdin.as_deref()).await
        }
    };
    let lines = format!(
        "{{\"room_id\":\"eu-r\",\"user_ids\":[\"e1\"],\"app_id\":{APP_ID}}}\n{{\"room_id\":\"us-r\",\"user_ids\":[\"u1\"],\"app_id\":{APP_B}}}\n"
    );
    let jobs_file = dir.join("jobs.jsonl");
    std::fs::write(&jobs_file, lines).unwrap();
    let jobs_path = jobs_file.display().to_string();
    let out = run(with_config(&["enqueue", "--file", &jobs_path]), vec![], None).await;
    assert!(out.status.success(), "{:?}", text(&out));
    let out = run(
        with_config(&["enqueue", "--room", "no-app", "--user", "d1"]),
        vec![],
        None,
    )
    .await;
    assert!(out.status.success(), "{:?}", text(&out));
    let broker = Broker::connect().await;
    for (queue, want) in [(&eu.bulk, 1), (&us.bulk, 1), (&us.requests, 1), (&eu.requests, 0)] {
        assert_eq!(broker.depth(queue).await, want, "{queue}");
    }
    let unknown = "{\"room_id\":\"x\",\"user_ids\":[\"z\"],\"app_id\":424242}\n";
    let unknown_file = dir.join("unknown.jsonl");
    std::fs::write(&unknown_file, unknown).unwrap();
    let unknown_path = unknown_file.display().to_string();
    let out = run(
        with_config(&["enqueue", "--file", &unknown_path, "--lane", "live"]),
        vec![],
        None,
    )
    .await;
    let (_, err) = text(&out);
    assert!(!out.status.success(), "an app no shard serves is refused");
    assert!(
        err.contains("no queue took the message") && err.contains("live.424242"),
        "{err}"
    );
    assert_eq!(
        (broker.depth(&eu.requests).await, broker.depth(&us.requests).await),
        (0, 1),
        "stored nowhere"
    );

    let out = run(with_config(&["status", "--json", "--metrics-addr", "0"]), vec![], None).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let leaders: Vec<&str> = report["leaders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["shard"].as_str().unwrap())
        .collect();
    assert_eq!(leaders, ["eu", "us"]);
    let queues: Vec<&str> = report["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["queue"].as_str().unwrap())
        .collect();
    for q in [&eu.requests, &eu.bulk, &us.requests, &ns.names.dead] {
        assert!(queues.contains(&q.as_str()), "{q} in {queues:?}");
    }

    let out = run(
        with_config(&["run", "--print-config", "--shards", "eu"]),
        vec![("KQ_TEST_SHARD_SECRET_EU", SECRET)],
        None,
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "us's secret is not needed to serve eu: {stderr}");
    assert!(
        stdout.contains("shard = \"eu\"") && stdout.contains("shards = [\"eu\"]"),
        "{stdout}"
    );
    assert!(
        !stdout.contains(&APP_B.to_string()),
        "us's app is not served here: {stdout}"
    );
    let out = run(
        with_config(&["run", "--print-config", "--shards", "asia"]),
        vec![("KQ_TEST_SHARD_SECRET_EU", SECRET)],
        None,
    )
    .await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("no app is in shard asia"), "{stderr}");

    let letter = format!("{{\"room_id\":\"replayed\",\"user_ids\":[\"r1\"],\"app_id\":{APP_ID}}}");
    broker.publish_raw(&ns.names.dead, letter.as_bytes()).await;
    let out = run(
        with_config(&["dlq", "replay", "--room", "replayed", "--yes"]),
        vec![],
        None,
    )
    .await;
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(broker.depth(&eu.bulk).await, 2, "the letter went to eu's bulk lane");
    assert_eq!(broker.depth(&ns.names.dead).await, 0);
    let _ = std::fs::remove_dir_all(&dir);
}
