//! A mock serving two AppIds, driven by the real `ZegoClient` for each: separate rate windows, separate secrets, and the AppId on every call and kick.

use futures_util::future::join_all;
use kickq::job::IdCharset;
use kickq::mock_zego::{MockApp, MockConfig, MockZego};
use kickq::secret::Secret;
use kickq::zego::{CallResult, ClientConfig, ZegoClient};
use std::time::Duration;

const APP_A: u32 = 1234567890;
const SECRET_A: &str = "0123456789abcdef0123456789abcdef";
const APP_B: u32 = 987654321;
const SECRET_B: &str = "fedcba9876543210fedcba9876543210";
/// Calls per AppId per sliding second.
const LIMIT: u32 = 5;

async fn two_app_mock() -> MockZego {
    let cfg = MockConfig {
        app_id: APP_A,
        secret: Secret::new(SECRET_A),
        apps: vec![MockApp {
            app_id: APP_B,
            secret: Secret::new(SECRET_B),
        }],
        rate_limit: LIMIT,
        faults: vec![],
        clock_offset_secs: 0,
        id_charset: IdCharset::Vendor,
        distance: Default::default(),
    };
    MockZego::start(cfg, "127.0.0.1:0".parse().unwrap()).await.unwrap()
}

fn client(mock: &MockZego, app_id: u32, secret: &str) -> ZegoClient {
    ZegoClient::new(ClientConfig {
        base_url: mock.base_url(),
        app_id,
        secret: Secret::new(secret),
        connect_timeout: Duration::from_secs(2),
        total_timeout: Duration::from_secs(10),
    })
    .unwrap()
}

fn code(call: &CallResult) -> i64 {
    call.result
        .as_ref()
        .map(|r| r.code)
        .unwrap_or_else(|e| panic!("no answer: {e}"))
}

async fn get_json(url: &str) -> serde_json::Value {
    let body = reqwest::get(url).await.unwrap().bytes().await.unwrap();
    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{url}: {e}: {body:?}"))
}

async fn burst(c: &ZegoClient, room: &str, n: usize) -> Vec<i64> {
    let users: Vec<Vec<String>> = (0..n).map(|i| vec![format!("u{i}")]).collect();
    join_all(users.iter().map(|u| c.kickout(room, u, None)))
        .await
        .iter()
        .map(code)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_app_at_its_limit_leaves_the_other_alone() {
    let mock = two_app_mock().await;
    let a = client(&mock, APP_A, SECRET_A);
    let b = client(&mock, APP_B, SECRET_B);

    let a_codes = burst(&a, "room-a", LIMIT as usize + 3).await;
    // A's window is now full; B's calls in the same second must all pass.
    let b_codes = burst(&b, "room-b", LIMIT as usize).await;

    let calls = mock.calls();
    let span_us = calls.last().unwrap().at_us - calls.first().unwrap().at_us;
    assert!(
        span_us < 1_000_000,
        "the calls spread over {span_us} µs: not one second, the test proves nothing"
    );
    assert_eq!(
        a_codes.iter().filter(|&&c| c == 0).count(),
        LIMIT as usize,
        "{a_codes:?}"
    );
    assert_eq!(a_codes.iter().filter(|&&c| c == 206).count(), 3, "{a_codes:?}");
    assert_eq!(b_codes, vec![0; LIMIT as usize], "B has a window of its own");

    let counters = mock.counters();
    assert_eq!(counters.rate_limited, 3);
    let (ca, cb) = (&counters.by_app[&APP_A], &counters.by_app[&APP_B]);
    assert_eq!((ca.calls, ca.rate_limited, ca.max_calls_in_1s), (8, 3, 8));
    assert_eq!((cb.calls, cb.rate_limited, cb.max_calls_in_1s), (5, 0, 5));

    let apps: Vec<Option<u32>> = calls.iter().map(|c| c.app_id).collect();
    assert_eq!(apps, [vec![Some(APP_A); 8], vec![Some(APP_B); 5]].concat());
    let kicked = mock.kicked();
    let room_and_app: Vec<(&str, u32)> = kicked.iter().map(|k| (k.room_id.as_str(), k.app_id)).collect();
    assert_eq!(
        room_and_app,
        [vec![("room-a", APP_A); 5], vec![("room-b", APP_B); 5]].concat()
    );
}

#[tokio::test]
async fn each_app_is_verified_against_its_own_secret() {
    let mock = two_app_mock().await;
    let one = vec!["u1".to_owned()];
    let cases = [
        ("A with A's secret", APP_A, SECRET_A, 0),
        ("B with B's secret", APP_B, SECRET_B, 0),
        ("A with B's secret", APP_A, SECRET_B, 100000005),
        ("B with A's secret", APP_B, SECRET_A, 100000005),
        ("an AppId the mock does not serve", 42, SECRET_A, 100000010),
    ];
    for (name, app_id, secret, want) in cases {
        let call = client(&mock, app_id, secret).kickout("r", &one, None).await;
        assert_eq!(code(&call), want, "{name}");
    }
    let kicked: Vec<u32> = mock.kicked().iter().map(|k| k.app_id).collect();
    assert_eq!(kicked, [APP_A, APP_B]);

    mock.set_app_secret(APP_B, Secret::new(SECRET_A)).unwrap();
    assert_eq!(
        code(&client(&mock, APP_B, SECRET_B).kickout("r", &one, None).await),
        100000005
    );
    assert_eq!(code(&client(&mock, APP_B, SECRET_A).kickout("r", &one, None).await), 0);
    assert_eq!(
        code(&client(&mock, APP_A, SECRET_A).kickout("r", &one, None).await),
        0,
        "A keeps its own secret"
    );
    assert!(mock.set_app_secret(42, Secret::new(SECRET_A)).is_err());

    kickq::zego::install_crypto_provider();
    let log = get_json(&format!("{}/_mock/calls", mock.base_url())).await;
    assert_eq!(log["kicked"][1]["app_id"], APP_B);
    assert_eq!(log["calls"][1]["app_id"], APP_B);
    assert!(
        log["calls"][2]["app_id"].is_null(),
        "a refused signature has no verified AppId"
    );
    let state = get_json(&format!("{}/_mock/state", mock.base_url())).await;
    assert_eq!(state["by_app"][APP_B.to_string()]["by_code"]["0"], 2);
}

#[tokio::test]
async fn an_app_id_given_twice_is_refused_at_start() {
    let cfg = MockConfig {
        app_id: APP_A,
        secret: Secret::new(SECRET_A),
        apps: vec![MockApp {
            app_id: APP_A,
            secret: Secret::new(SECRET_B),
        }],
        rate_limit: 0,
        faults: vec![],
        clock_offset_secs: 0,
        id_charset: IdCharset::Vendor,
        distance: Default::default(),
    };
    let err = MockZego::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .err()
        .unwrap();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert_eq!(err.to_string(), format!("AppId {APP_A} is configured twice"));
}
