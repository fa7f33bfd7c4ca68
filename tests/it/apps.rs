//! Several apps in one worker against one mock-zego serving two AppIds: each app holds its own rate, and one
//! app halted (wrong secret) or slow (its calls take seconds) never slows the other.

use crate::common;

use common::*;
use kickq::config::apps::AppConfig;
use kickq::config::Credentials;
use kickq::mock_zego::MockZego;
use kickq::secret::Secret;
use std::time::Duration;

/// A secret the mock does not hold for APP_ID: calls signed with it answer 100000005.
const WRONG: &str = "ffffffffffffffffffffffffffffffff";

/// Jobs of one user each: `users` users over `rooms` rooms, for `app`.
fn jobs(app: u32, prefix: &str, rooms: usize, users: usize) -> Vec<Vec<u8>> {
    (0..users)
        .map(|u| {
            serde_json::to_vec(&serde_json::json!({
                "room_id": format!("{prefix}-{}", u % rooms),
                "user_ids": [format!("u{u}")],
                "app_id": app,
            }))
            .unwrap()
        })
        .collect()
}

/// A worker serving both apps, the first with `secret_a`.
fn config(ns: &Ns, mock: &MockZego, rate: u32, secret_a: &str) -> kickq::worker::WorkerConfig {
    let mut cfg = worker_config(ns, &mock.base_url(), rate).with_app(AppConfig {
        rate,
        api_url: mock.base_url(),
        ..AppConfig::new(Credentials {
            app_id: APP_B,
            secret: Secret::new(SECRET_B),
        })
    });
    cfg.apps.iter_mut().filter(|a| a.app_id() == APP_ID).for_each(|a| {
        a.credentials.secret = Secret::new(secret_a);
    });
    cfg
}

/// Arrival times (ms) of the calls that authenticated as `app`.
fn arrivals(mock: &MockZego, app: u32) -> Vec<u64> {
    mock.calls()
        .iter()
        .filter(|c| c.app_id == Some(app))
        .map(|c| c.at_ms)
        .collect()
}

fn kicked_of(mock: &MockZego, prefix: &str) -> usize {
    mock.kicked().iter().filter(|k| k.room_id.starts_with(prefix)).count()
}

/// Two apps with a backlog each: both run at their own full rate at the same
/// time, and neither ever goes over its own limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_apps_hold_their_own_rates_side_by_side() {
    let ns = Ns::new("apps-rates");
    let rate = 20;
    let mock = two_app_mock(rate, &[]).await;
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    // 300 users in 20 rooms per app: 60 full calls, three seconds at 20/s.
    let mut bodies = jobs(APP_ID, "a", 20, 300);
    bodies.extend(jobs(APP_B, "b", 20, 300));
    broker.publish_many(&ns.names.requests, &bodies).await;
    let worker = spawn_worker(config(&ns, &mock, rate, SECRET)).await;
    wait_for(Duration::from_secs(60), "every user of both apps kicked", || async {
        kicked_of(&mock, "a-") >= 300 && kicked_of(&mock, "b-") >= 300
    })
    .await;
    worker.stop().await;

    let counters = mock.counters();
    let (a, b) = (arrivals(&mock, APP_ID), arrivals(&mock, APP_B));
    eprintln!(
        "app A: {} calls, busiest second {}; app B: {} calls, busiest second {}; 206 answers {}",
        a.len(),
        busiest_second(&a),
        b.len(),
        busiest_second(&b),
        counters.rate_limited
    );
    assert_eq!(counters.rate_limited, 0, "no app went over its limit: {counters:?}");
    for (name, times) in [("A", &a), ("B", &b)] {
        assert!(busiest_second(times) <= rate as usize, "app {name} over its rate");
        assert!(
            busiest_second(times) >= rate as usize - 2,
            "app {name} never reached its rate: {}",
            busiest_second(times)
        );
    }
    // Side by side, not one after the other: the two backlogs overlap for
    // most of their length (one after the other, they would not overlap).
    let overlap = a
        .last()
        .unwrap()
        .min(b.last().unwrap())
        .saturating_sub(*a.first().unwrap().max(b.first().unwrap()));
    assert!(
        overlap >= 1500,
        "the apps ran one after the other: overlap {overlap} ms"
    );
}

/// App A's secret is wrong: A halts (probes only, nothing dead-lettered,
/// nothing lost) while B goes on at its full rate; once A's secret is
/// right again, A's users are kicked too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halted_app_never_slows_the_other() {
    let ns = Ns::new("apps-halt");
    let rate = 20;
    let mock = two_app_mock(rate, &[]).await;
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let mut bodies = jobs(APP_ID, "a", 10, 1500);
    bodies.extend(jobs(APP_B, "b", 20, 300));
    broker.publish_many(&ns.names.requests, &bodies).await;
    // A's 1,500 jobs come first and the window is 1,200: were the halted app
    // to hold everything it was given, B's jobs would wait behind them.
    let cfg = kickq::worker::WorkerConfig {
        prefetch: 1200,
        ..config(&ns, &mock, rate, WRONG)
    };
    let worker = spawn_worker(cfg).await;
    wait_for(Duration::from_secs(60), "every user of app B kicked", || async {
        kicked_of(&mock, "b-") >= 300
    })
    .await;
    let b = arrivals(&mock, APP_B);
    let refused = mock.calls().iter().filter(|c| c.code == Some(100000005)).count();
    eprintln!(
        "app B: {} calls, busiest second {}; app A: {refused} refused calls (probes)",
        b.len(),
        busiest_second(&b)
    );
    assert_eq!(kicked_of(&mock, "a-"), 0, "app A is halted");
    // B's calls start while A is halted, not after A's held users reach
    // max_hold (10 s in the test configuration) and go back to the broker.
    let first_refused = mock
        .calls()
        .iter()
        .find(|c| c.code == Some(100000005))
        .map(|c| c.at_ms)
        .unwrap();
    let waited = b.first().unwrap().saturating_sub(first_refused);
    eprintln!("app B's first call {waited} ms after app A's halt");
    assert!(
        waited < 5000,
        "app B waited {waited} ms behind the halted app's held jobs"
    );
    assert!(
        busiest_second(&b) >= rate as usize - 2,
        "app B slowed: {}",
        busiest_second(&b)
    );
    let span = b.last().unwrap() - b.first().unwrap();
    assert!(
        span <= 6000,
        "app B slowed by the halted app: {} calls took {span} ms",
        b.len()
    );
    let span_s = (b.last().unwrap() - b.first().unwrap()) as f64 / 1000.0;
    // The halted app spends only probes: one at the halt, then one per
    // probe interval (300 ms in the test configuration).
    assert!(
        (refused as f64) <= 2.0 + (span_s + 1.0) / 0.3,
        "app A kept calling while halted: {refused} refused calls in {span_s:.1} s"
    );
    assert_eq!(broker.depth(&ns.names.dead).await, 0, "a halt dead-letters nothing");

    // Fix A's secret at the mock's side: A's next probe succeeds and A resumes.
    mock.set_app_secret(APP_ID, Secret::new(WRONG)).unwrap();
    wait_for(
        Duration::from_secs(90),
        "every user of app A kicked after the fix",
        || async { kicked_of(&mock, "a-") >= 1500 },
    )
    .await;
    worker.stop().await;
    assert_eq!(broker.depth(&ns.names.dead).await, 0);
}

/// App A's calls take 2 s each: they hold A's call slots only, and B's calls
/// keep their full rate (with shared slots, A's backlog would take them all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_app_keeps_to_its_own_call_slots() {
    let ns = Ns::new("apps-slow");
    let rate = 20;
    let mock = two_app_mock(rate, &["room=a-*,latency=2s"]).await;
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let mut bodies = jobs(APP_ID, "a", 40, 200);
    bodies.extend(jobs(APP_B, "b", 20, 300));
    broker.publish_many(&ns.names.requests, &bodies).await;
    let cfg = kickq::worker::WorkerConfig {
        max_in_flight: 4,
        http_timeout: Duration::from_secs(5),
        ..config(&ns, &mock, rate, SECRET)
    };
    let worker = spawn_worker(cfg).await;
    wait_for(Duration::from_secs(60), "every user of app B kicked", || async {
        kicked_of(&mock, "b-") >= 300
    })
    .await;
    let b = arrivals(&mock, APP_B);
    let a = arrivals(&mock, APP_ID);
    eprintln!(
        "app B: {} calls, busiest second {}, span {:?}; app A so far: {} calls at {:?}",
        b.len(),
        busiest_second(&b),
        (b.first(), b.last()),
        a.len(),
        &a[..a.len().min(12)]
    );
    // At its rate, B's 60 calls take 3 s. Four slots shared with A's
    // 2-second calls would allow B about two calls a second: 20 s or more.
    let span = b.last().unwrap() - b.first().unwrap();
    assert!(
        span <= 6000,
        "app B slowed by A's slow calls: {} calls took {span} ms",
        b.len()
    );
    wait_for(Duration::from_secs(60), "every user of app A kicked", || async {
        kicked_of(&mock, "a-") >= 200
    })
    .await;
    worker.stop().await;
}

/// The binary with a config file: two apps (one secret by variable, one by
/// file), the second the default. A job names its app, a job without one
/// goes to the default app, and a job for an app not in the file is
/// dead-lettered `unknown_app` with its original bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_the_apps_of_its_config_file() {
    let ns = Ns::new("apps-file");
    let mock = two_app_mock(50, &[]).await;
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let dir = std::env::temp_dir().join(format!("kickq-apps-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret_file = dir.join("zego-b");
    std::fs::write(&secret_file, format!("{SECRET_B}\n")).unwrap();
    let config = dir.join("kickq.toml");
    std::fs::write(
        &config,
        format!(
            "namespace = \"{ns}\"\nprefetch = 500\n\n[[apps]]\napp_id = {APP_ID}\nsecret_env = \"KQ_TEST_APPS_SECRET_A\"\napi_url = \"{url}\"\n\n[[apps]]\napp_id = {APP_B}\nsecret_file = \"{file}\"\napi_url = \"{url}\"\ndefault = true\n",
            ns = ns.name(),
            url = mock.base_url(),
            file = secret_file.display(),
        ),
    )
    .unwrap();
    let config_path = config.display().to_string();
    let unknown = br#"{"room_id":"nowhere","user_ids":["z"],"app_id":424242,"job_id":"unknown-app-job"}"#;
    broker
        .publish_many(
            &ns.names.requests,
            &[
                serde_json::to_vec(&serde_json::json!({"room_id": "for-a", "user_ids": ["a1"], "app_id": APP_ID}))
                    .unwrap(),
                job("for-default", &["d1"], None),
                unknown.to_vec(),
            ],
        )
        .await;
    // The file's apps replace ZEGO_APP_ID, which the helper sets: unset it.
    let mut child = spawn_binary_worker(
        &ns,
        &mock.base_url(),
        50,
        &[
            ("KICKQ_CONFIG", config_path.as_str()),
            ("KQ_TEST_APPS_SECRET_A", SECRET),
            ("ZEGO_APP_ID", ""),
        ],
    );
    wait_for(
        Duration::from_secs(20),
        "both jobs kicked and the unknown one dead",
        || async { mock.kicked().len() >= 2 && broker.depth(&ns.names.dead).await == 1 },
    )
    .await;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(status.success(), "{status:?}");
    let by_room: std::collections::BTreeMap<String, u32> =
        mock.kicked().into_iter().map(|k| (k.room_id, k.app_id)).collect();
    assert_eq!(by_room.get("for-a"), Some(&APP_ID), "{by_room:?}");
    assert_eq!(
        by_room.get("for-default"),
        Some(&APP_B),
        "a job without app_id goes to the default app"
    );
    let dead = broker.drain(&ns.names.dead).await;
    assert_eq!(dead[0].0.as_slice(), unknown.as_slice());
    let info = dead_info(&dead[0].1);
    assert_eq!(
        info.error,
        kickq::testkit::headers::DeadError::UnknownApp,
        "{}",
        info.detail
    );
}

/// A halt's ERROR line says what to check for its code: for a signature
/// error (100000005), the ServerSecret, by the settings that hold it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halt_says_what_to_check_for_its_code() {
    let ns = Ns::new("apps-halt-hint");
    let mock = mock(50).await;
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    broker
        .publish_many(&ns.names.requests, &[job("room-h", &["u1"], None)])
        .await;
    let (_child, rx) = spawn_binary_worker_logging(
        &ns,
        &mock.base_url(),
        50,
        &[("ZEGO_SERVER_SECRET", WRONG), ("RUST_LOG", "info")],
        &["API rejects this AppId", "progress over the last"],
    );
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("an ERROR line for the halt");
    assert!(line.contains(r#""code":100000005"#), "{line}");
    assert!(
        line.contains(r#""check":"check the ServerSecret (ZEGO_SERVER_SECRET or the app's secret_env)"#),
        "{line}"
    );
    assert!(!line.contains(WRONG), "never the secret: {line}");
    // The progress line counts the user handed back by the halt (at each
    // probe, here every 300 ms) as deferred, not as retried: no attempt of
    // theirs failed.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let progress = std::iter::from_fn(|| {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        rx.recv_timeout(left).ok()
    })
    .find(|l| l.contains("progress over the last"))
    .expect("a progress line");
    let v: serde_json::Value = serde_json::from_str(&progress).unwrap();
    assert_eq!(v["retried"], 0, "{progress}");
    assert!(v["deferred_by_halt"].as_u64().unwrap() > 0, "{progress}");
}
