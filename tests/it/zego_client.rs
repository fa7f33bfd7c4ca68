//! The real `ZegoClient` against the real in-process `MockZego`: encoding, the mock's strictness, rate limiting, transport failures and secrecy of errors.

use axum::http::{header, StatusCode};
use axum::routing::get;
use axum::Router;
use futures_util::future::join_all;
use kickq::job::IdCharset;
use kickq::mock_zego::{FaultEffect, FaultRule, MockConfig, MockZego};
use kickq::secret::Secret;
use kickq::zego::{classify, signature, CallResult, ClientConfig, Disposition, RetryKind, TransportError, ZegoClient};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const APP: u32 = 1234567890;
const SECRET: &str = "0123456789abcdef0123456789abcdef";
const RETRY: Disposition = Disposition::Retry(RetryKind::Transient);

async fn mock(rate_limit: u32) -> MockZego {
    mock_with(rate_limit, IdCharset::Vendor).await
}

async fn mock_with(rate_limit: u32, id_charset: IdCharset) -> MockZego {
    let cfg = MockConfig {
        app_id: APP,
        secret: Secret::new(SECRET),
        apps: Vec::new(),
        rate_limit,
        faults: vec![],
        clock_offset_secs: 0,
        id_charset,
        distance: Default::default(),
    };
    MockZego::start(cfg, "127.0.0.1:0".parse().unwrap()).await.unwrap()
}

fn client_with(base: &str, total_timeout: Duration) -> ZegoClient {
    ZegoClient::new(ClientConfig {
        base_url: base.to_owned(),
        app_id: APP,
        secret: Secret::new(SECRET),
        connect_timeout: Duration::from_secs(2),
        total_timeout,
    })
    .unwrap()
}

fn client(base: &str) -> ZegoClient {
    client_with(base, Duration::from_secs(10))
}

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// Fails if any text a caller could log holds the secret or a signature.
fn assert_clean(call: &CallResult) {
    for text in [
        format!("{call:?}"),
        call.result.as_ref().err().map(ToString::to_string).unwrap_or_default(),
    ] {
        assert!(!text.contains(SECRET), "secret leaked: {text}");
        assert!(!text.contains("Signature"), "signed URL leaked: {text}");
        assert!(!text.contains("KickoutUser"), "request URL leaked: {text}");
    }
}

fn code(call: &CallResult) -> i64 {
    assert_clean(call);
    call.result
        .as_ref()
        .unwrap_or_else(|e| panic!("expected an API answer, got {e:?}"))
        .code
}

fn transport(call: &CallResult) -> TransportError {
    assert_clean(call);
    call.result.clone().expect_err("expected a transport failure")
}

/// Sends `hostile` in calls of four to `mock` and checks that each id
/// arrived as exactly one `UserId[]`, with the room and reason intact.
async fn assert_hostile_ids_arrive_intact(mock: &MockZego, room: &str, hostile: &[String]) {
    let c = client(&mock.base_url());
    let reason = "spam & abuse; 100% = bad #ban é";
    for chunk in hostile.chunks(4) {
        let call = c.kickout(room, chunk, Some(reason)).await;
        assert_eq!(code(&call), 0);
        assert_eq!(call.result.as_ref().unwrap().http_status, 200);
        assert!(call.result.as_ref().unwrap().request_id.starts_with("mock-"));
    }
    let calls = mock.calls();
    assert_eq!(calls.len(), hostile.len().div_ceil(4));
    for (record, chunk) in calls.iter().zip(hostile.chunks(4)) {
        assert_eq!(record.user_ids, chunk, "each id arrives as exactly one UserId[]");
        assert_eq!(record.room_id.as_deref(), Some(room));
        assert_eq!(record.reason.as_deref(), Some(reason));
        assert_eq!(record.app_id, Some(APP));
    }
    let kicked: BTreeSet<String> = mock.kicked().into_iter().map(|k| k.user_id).collect();
    assert_eq!(kicked, hostile.iter().cloned().collect::<BTreeSet<_>>());
    assert!(!kicked.contains("victim"));
    assert!(mock
        .kicked()
        .iter()
        .all(|k| k.room_id == room && k.reason.as_deref() == Some(reason)));
}

#[tokio::test]
async fn hostile_ids_in_the_vendor_set_reach_the_mock_intact_one_user_each() {
    // Every character here is in ZEGOCLOUD's id set; most of them mean
    // something to a query string or a path.
    let hostile = ids(&[
        "a&UserId%5B%5D=victim",
        "x=y",
        "p+q",
        "100%",
        "#frag",
        "semi;colon",
        "..\\/'`<>,.",
        "~!@$^*()_-",
    ]);
    let mock = mock(0).await;
    assert_hostile_ids_arrive_intact(&mock, "room&RoomId=other#1%20", &hostile).await;
}

#[tokio::test]
async fn hostile_ids_outside_the_vendor_set_reach_an_any_charset_mock_intact() {
    let hostile = ids(&["a&UserId[]=victim", "with space", "é漢字", "q?x:y|z\"{}"]);
    let mock = mock_with(0, IdCharset::Any).await;
    assert_hostile_ids_arrive_intact(&mock, "room&RoomId=other #1", &hostile).await;
}

#[tokio::test]
async fn ids_outside_the_vendor_set_are_an_input_parameter_error() {
    let mock = mock(0).await;
    let c = client(&mock.base_url());
    let call = c.kickout("r", &ids(&["good", "with space😀"]), None).await;
    assert_eq!(code(&call), 2);
    assert_eq!(classify(&call.result, 2), Disposition::SplitUsers);
    let call = c.kickout("r", &ids(&["with space😀"]), None).await;
    assert_eq!(code(&call), 2);
    assert_eq!(classify(&call.result, 1), Disposition::DeadLetter);
    assert_eq!(code(&c.kickout("r", &ids(&["a[0]"]), None).await), 2);
    assert_eq!(
        code(&c.kickout("room 1", &ids(&["good"]), None).await),
        2,
        "room ids too"
    );
    assert!(mock.kicked().is_empty());
    assert_eq!(code(&c.kickout("r", &ids(&["good"]), None).await), 0);
    mock.set_id_charset(IdCharset::Any);
    assert_eq!(code(&c.kickout("room 1", &ids(&["with space😀"]), None).await), 0);
    let kicked: Vec<String> = mock.kicked().into_iter().map(|k| k.user_id).collect();
    assert_eq!(kicked, ["good", "with space😀"]);
}

#[tokio::test]
async fn mock_refuses_what_the_vendor_refuses() {
    let mock = mock(0).await;
    let c = client(&mock.base_url());
    let one = ids(&["u1"]);

    mock.set_secret(Secret::new("a-rotated-secret"));
    let call = c.kickout("r", &one, None).await;
    assert_eq!(code(&call), 100000005);
    assert_eq!(classify(&call.result, 1), Disposition::Halt);
    mock.set_secret(Secret::new(SECRET));

    for offset in [11 * 60, -11 * 60] {
        mock.set_clock_offset(offset);
        let call = c.kickout("r", &one, None).await;
        assert_eq!(code(&call), 100000004, "clock offset {offset}");
        assert_eq!(classify(&call.result, 1), Disposition::Halt);
    }
    mock.set_clock_offset(0);

    let six = ids(&["1", "2", "3", "4", "5", "6"]);
    let call = c.kickout("r", &six, None).await;
    assert_eq!(code(&call), 50011);
    assert_eq!(classify(&call.result, 6), Disposition::ShrinkChunk);
    assert_eq!(
        mock.calls().last().unwrap().user_ids,
        six,
        "the client sends what it is given"
    );

    let call = c.kickout("r", &one, Some(&"x".repeat(257))).await;
    assert_eq!(code(&call), 2);
    assert_eq!(classify(&call.result, 1), Disposition::DeadLetter);
    let call = c.kickout("r", &one, Some(&"é".repeat(128))).await;
    assert_eq!(code(&call), 0, "256 bytes is allowed");

    let wrong_app = ZegoClient::new(ClientConfig {
        base_url: mock.base_url(),
        app_id: 42,
        secret: Secret::new(SECRET),
        connect_timeout: Duration::from_secs(2),
        total_timeout: Duration::from_secs(10),
    })
    .unwrap();
    assert_eq!(code(&wrong_app.kickout("r", &one, None).await), 100000010);

    assert_eq!(mock.kicked().len(), 1, "only the one valid call kicked anybody");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_51st_call_in_a_second_is_rate_limited() {
    let mock = mock(50).await;
    let c = client(&mock.base_url());
    let users: Vec<Vec<String>> = (0..51).map(|i| vec![format!("u{i}")]).collect();
    let calls = join_all(users.iter().map(|u| c.kickout("busy", u, None))).await;
    let codes: Vec<i64> = calls.iter().map(code).collect();
    assert_eq!(codes.iter().filter(|&&c| c == 206).count(), 1, "{codes:?}");
    assert_eq!(codes.iter().filter(|&&c| c == 0).count(), 50, "{codes:?}");
    let counters = mock.counters();
    assert_eq!(counters.rate_limited, 1);
    assert_eq!(counters.calls, 51);
    assert_eq!(counters.max_calls_in_1s, 51);
    let limited = calls.iter().find(|c| code(c) == 206).unwrap();
    assert_eq!(classify(&limited.result, 1), Disposition::RateLimited);
    assert_eq!(mock.kicked().len(), 50);
}

#[tokio::test]
async fn transport_failures_are_transient() {
    let mock = mock(0).await;
    mock.set_faults(vec![
        FaultRule::new("boom-*", FaultEffect::Http500),
        FaultRule::new("hang-*", FaultEffect::Hang),
        FaultRule::new("reset-*", FaultEffect::Reset),
    ]);
    let one = ids(&["u"]);
    let c = client_with(&mock.base_url(), Duration::from_millis(500));

    let call = c.kickout("boom-1", &one, None).await;
    assert_eq!(transport(&call), TransportError::HttpStatus(500));
    assert_eq!(classify(&call.result, 1), RETRY);

    let call = c.kickout("hang-1", &one, None).await;
    assert_eq!(transport(&call), TransportError::Timeout);
    assert_eq!(classify(&call.result, 1), RETRY);

    let call = c.kickout("reset-1", &one, None).await;
    let err = transport(&call);
    assert!(
        matches!(err, TransportError::Other(_) | TransportError::Connect(_)),
        "{err:?}"
    );
    assert_eq!(classify(&call.result, 1), RETRY);

    let counters = mock.counters();
    assert_eq!((counters.http_errors, counters.hangs, counters.resets), (1, 1, 1));
    assert!(mock.kicked().is_empty());
    // Shutdown must release the hanging call; the bound only keeps a broken
    // shutdown from hanging the test run.
    tokio::time::timeout(Duration::from_secs(10), mock.shutdown())
        .await
        .expect("shutdown releases hanging calls");
}

#[tokio::test]
async fn reset_sends_no_http_response_at_all() {
    let mock = mock(0).await;
    mock.set_faults(vec![FaultRule::new("reset-*", FaultEffect::Reset)]);
    let nonce = "00112233aabbccdd";
    let ts = chrono::Utc::now().timestamp();
    let sig = signature(APP, nonce, &Secret::new(SECRET), ts);
    let query = format!(
        "Action=KickoutUser&AppId={APP}&SignatureNonce={nonce}&Timestamp={ts}&Signature={sig}&SignatureVersion=2.0&RoomId=reset-1&UserId%5B%5D=u"
    );
    let mut tcp = tokio::net::TcpStream::connect(mock.addr()).await.unwrap();
    tcp.write_all(format!("GET /?{query} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    // The bound keeps a mock that answers and keeps the connection open from
    // hanging the run; the assertions below are what decide.
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut got))
        .await
        .expect("the mock closed the connection");
    assert!(got.is_empty(), "got a response: {:?}", String::from_utf8_lossy(&got));
    if let Err(err) = read {
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    }
    assert_eq!(mock.counters().resets, 1, "the request reached the reset rule");
}

/// Serves `router` on a loopback port; the task ends with the test runtime.
async fn spawn_server(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    base
}

#[tokio::test]
async fn redirects_are_refused_not_followed_and_non_json_is_a_transport_failure() {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let target = spawn_server(Router::new().fallback(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        async { r#"{"Code":0,"Message":"","RequestId":"x"}"# }
    }))
    .await;
    let location = format!("{target}/stolen");
    let redirector = spawn_server(Router::new().route(
        "/",
        get(move || async move { (StatusCode::FOUND, [(header::LOCATION, location)]) }),
    ))
    .await;
    let one = ids(&["u"]);

    let call = client(&redirector).kickout("r", &one, None).await;
    assert_eq!(transport(&call), TransportError::Redirect(302));
    assert_eq!(classify(&call.result, 1), RETRY);
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the signed URL was resent to the redirect target"
    );

    let html = spawn_server(Router::new().route("/", get(|| async { axum::response::Html("<html>ok</html>") }))).await;
    let call = client(&html).kickout("r", &one, None).await;
    assert_eq!(transport(&call), TransportError::NotJson { http_status: 200 });
    assert_eq!(classify(&call.result, 1), RETRY);

    let missing = spawn_server(Router::new()).await;
    let call = client(&missing).kickout("r", &one, None).await;
    assert_eq!(transport(&call), TransportError::HttpStatus(404));

    // The target itself answers valid JSON, so the client really parses it.
    assert_eq!(code(&client(&target).kickout("r", &one, None).await), 0);
}

#[tokio::test]
async fn unsafe_base_urls_are_rejected() {
    for base in [
        "http://rtc-api.zego.im",
        "http://192.0.2.1:8085",
        "ftp://127.0.0.1",
        "rtc-api.zego.im",
    ] {
        let err = ZegoClient::new(ClientConfig {
            base_url: base.to_owned(),
            app_id: APP,
            secret: Secret::new(SECRET),
            connect_timeout: Duration::from_secs(1),
            total_timeout: Duration::from_secs(1),
        })
        .expect_err(base);
        let text = format!("{err} {err:?}");
        assert!(text.contains("ZEGO_API_URL"), "{base}: {text}");
        assert!(!text.contains(SECRET), "{text}");
    }
    assert!(ZegoClient::new(ClientConfig {
        base_url: "https://rtc-api.zego.im".into(),
        app_id: APP,
        secret: Secret::new(SECRET),
        connect_timeout: Duration::from_secs(1),
        total_timeout: Duration::from_secs(1),
    })
    .is_ok());
}

async fn get_json<T: serde::de::DeserializeOwned>(http: &reqwest::Client, url: &str) -> T {
    let body = http.get(url).send().await.unwrap().bytes().await.unwrap();
    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{url}: {e}: {body:?}"))
}

#[tokio::test]
async fn control_routes_over_http_with_serve() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let cfg = MockConfig {
        app_id: APP,
        secret: Secret::new(SECRET),
        apps: Vec::new(),
        rate_limit: 0,
        faults: vec![],
        clock_offset_secs: 0,
        id_charset: IdCharset::Vendor,
        distance: Default::default(),
    };
    let server = tokio::spawn(kickq::mock_zego::serve(cfg, listener, async {
        let _ = stopped.await;
    }));
    // reqwest is built without a crypto provider; ZegoClient::new installs
    // one, but this plain client may be built first.
    kickq::zego::install_crypto_provider();
    let http = reqwest::Client::new();
    let c = client(&base);

    let rules = r#"[{"room":"flaky-*","first":1,"effect":{"code":1}},{"effect":{"absent_users":"ghost-*"}}]"#;
    let res = http
        .post(format!("{base}/_mock/faults"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(rules)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let res = http
        .post(format!("{base}/_mock/faults"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(r#"[{"effect":"hang","probability":2}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400, "invalid rules are refused, the old ones kept");

    assert_eq!(code(&c.kickout("flaky-1", &ids(&["a"]), None).await), 1);
    assert_eq!(code(&c.kickout("flaky-1", &ids(&["a"]), None).await), 0);
    let call = c.kickout("r", &ids(&["b", "ghost-1"]), None).await;
    assert_eq!(code(&call), 50002);
    assert_eq!(classify(&call.result, 2), Disposition::SplitUsers);

    let state: serde_json::Value = get_json(&http, &format!("{base}/_mock/state")).await;
    assert_eq!(state["calls"], 3);
    assert_eq!(state["by_code"]["0"], 1);
    assert_eq!(state["by_code"]["1"], 1);
    assert_eq!(state["by_code"]["50002"], 1);
    let log: kickq::mock_zego::CallLog = get_json(&http, &format!("{base}/_mock/calls")).await;
    assert_eq!(log.calls.len(), 3);
    assert_eq!(log.kicked.len(), 1);
    assert_eq!(log.kicked[0].user_id, "a");
    assert!(log.calls.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));

    let res = http.post(format!("{base}/_mock/reset")).send().await.unwrap();
    assert_eq!(res.status(), 204);
    let state: kickq::mock_zego::Counters = get_json(&http, &format!("{base}/_mock/state")).await;
    assert_eq!(state, kickq::mock_zego::Counters::default());

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("serve returns after its shutdown future resolves")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_long_or_malformed_request_id_is_kept_bounded_and_the_answer_stands() {
    use kickq::zego::client::MAX_REQUEST_ID_BYTES;
    let mock = mock(0).await;
    mock.set_faults(vec![FaultRule::new("long-*", FaultEffect::RequestIdBytes(4096))]);
    let call = client(&mock.base_url()).kickout("long-1", &ids(&["a"]), None).await;
    assert_eq!(code(&call), 0, "a kick that answered 0 is a kick");
    let id = call.result.unwrap().request_id;
    assert_eq!(id.len(), MAX_REQUEST_ID_BYTES, "{id}");
    assert!(id.starts_with("mock-"), "{id}");
    assert_eq!(mock.kicked().len(), 1);

    // Oddities a JSON string can hold: a lone surrogate escape, a control
    // character; the answer is still the API's answer.
    let odd = spawn_server(Router::new().fallback(|| async {
        (
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"Code":0,"Message":"success","RequestId":"req-\ud800-\u0007-end"}"#,
        )
    }))
    .await;
    let call = client(&odd).kickout("r", &ids(&["a"]), None).await;
    assert_eq!(code(&call), 0);
    assert_eq!(
        call.result.unwrap().request_id,
        "req-\u{FFFD}\u{FFFD}\u{FFFD}-\u{FFFD}-end"
    );
}

/// mock-zego far away: the request waits one leg before the rate window
/// counts it (its recorded arrival), the answer another, so a call takes a
/// whole round trip; jitter larger than the leg is refused.
#[tokio::test]
async fn a_far_mock_counts_each_call_one_leg_after_it_was_sent_and_answers_a_leg_later() {
    let m = mock(50).await;
    m.set_distance(kickq::mock_zego::Distance::new(120, 0).unwrap());
    let c = client(&m.base_url());
    let sent = std::time::Instant::now();
    let call = c.kickout("far-room", &ids(&["u1"]), None).await;
    let took = sent.elapsed();
    assert_eq!(code(&call), 0);
    assert!(took >= Duration::from_millis(240), "the round trip took {took:?}");
    let arrived = m.started() + Duration::from_micros(m.calls()[0].at_us);
    let out = arrived.saturating_duration_since(sent);
    assert!(
        out >= Duration::from_millis(120) && out < took,
        "counted {out:?} after it was sent, answered after {took:?}"
    );
    assert!(kickq::mock_zego::Distance::new(10, 11).is_err());
    m.shutdown().await;
}

/// Opening connections ahead of the first call sends nothing the gateway
/// counts (no AppId, no signature): the mock logs no call and its rate
/// window stays empty.
#[tokio::test]
async fn warming_up_opens_connections_and_spends_no_call() {
    let m = mock(1).await;
    let c = client(&m.base_url());
    let w = c.warm_up(4).await;
    assert_eq!((w.answered, w.http.as_deref()), (4, Some("HTTP/1.1")), "{w:?}");
    assert!(m.calls().is_empty(), "{:?}", m.calls());
    // The one call a second the mock allows is still there.
    assert_eq!(code(&c.kickout("r", &ids(&["u1"]), None).await), 0);
    m.shutdown().await;
}
