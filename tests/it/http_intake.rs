//! The HTTP intake against a real broker and real HTTP: authentication (401, and no start without a token file),
//! a batch published and kicked, an invalid element publishing nothing, idempotent retries, the size cap, a
//! broker outage answered 503 (never 202), and the served OpenAPI document checked against the handler.

use crate::common;

use common::*;
use kickq::worker::{IntakeConfig, ListenerBounds, Worker};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

const TOKEN: &str = "intake-test-token-1-0123456789abcdef";

/// A token file holding a comment, a retired token line and TOKEN, in the
/// namespace's own directory (removed when the namespace drops).
fn intake_tokens(ns: &Ns) -> PathBuf {
    token_file(
        ns,
        &format!("# rotated weekly\n\nother-token-0123456789abcdef\n{TOKEN}\n"),
    )
    .1
}

/// A worker bound (not running, so nothing consumes) with its intake on a free port.
async fn intake(ns: &Ns, amqp: &str, tweak: impl FnOnce(&mut IntakeConfig)) -> (Worker, SocketAddr) {
    kickq::zego::client::install_crypto_provider();
    init_logs();
    let mut intake = IntakeConfig::new("127.0.0.1:0".parse().unwrap(), intake_tokens(ns));
    tweak(&mut intake);
    let mut cfg = worker_config(ns, "http://127.0.0.1:9", 1000).with_http_intake(intake);
    cfg.amqp_url = kickq::secret::Secret::new(amqp);
    let worker = Worker::bind(cfg).await.expect("the intake binds");
    let addr = worker.intake_addr().expect("the intake is on");
    (worker, addr)
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

async fn post(
    addr: SocketAddr,
    query: &str,
    token: Option<&str>,
    key: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> Reply {
    try_post(addr, query, token, key, body)
        .await
        .expect("the intake answers")
}

/// [`post`], with the client's error (a connection the server closed) as it came.
async fn try_post(
    addr: SocketAddr,
    query: &str,
    token: Option<&str>,
    key: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> Result<Reply, reqwest::Error> {
    let mut req = reqwest::Client::new()
        .post(format!("http://{addr}/v1/kicks{query}"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    let r = req.send().await?;
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let bytes = r.bytes().await?;
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {bytes:?}"));
    Ok(Reply { status, headers, body })
}

fn ids(r: &Reply) -> Vec<String> {
    r.body["job_ids"]
        .as_array()
        .unwrap_or_else(|| panic!("no job_ids: {}", r.body))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_valid_token_are_refused_and_the_document_needs_none() {
    let ns = Ns::new("http-auth");
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let (_worker, addr) = intake(&ns, &amqp_url(), |_| {}).await;
    let body = job("room-1", &["u1"], None);
    for token in [None, Some("wrong"), Some("intake-test-token"), Some("# rotated weekly")] {
        let r = post(addr, "", token, None, body.clone()).await;
        assert_eq!(r.status, 401, "{token:?}: {}", r.body);
        assert_eq!(r.headers["www-authenticate"], "Bearer");
        assert_eq!(r.body["error"], "a valid bearer token is required");
    }
    // A small body without a token is read and discarded before the 401, so
    // the client always gets to read the 401.
    let r = post(addr, "", None, None, vec![b' '; 32 * 1024]).await;
    assert_eq!(r.status, 401, "{}", r.body);
    // A body too large for the cap is refused as unauthenticated first and is
    // never read: the server answers 401 and closes the connection, and the
    // client sees either the 401 or the connection closed under its write,
    // whichever is faster. Never anything else.
    for declared in [true, false] {
        let big = vec![b' '; 2 * 1024 * 1024];
        let body = if declared {
            reqwest::Body::from(big)
        } else {
            // Chunked, no Content-Length: the drain stops at its cap.
            reqwest::Body::wrap_stream(futures_util::stream::iter([Ok::<_, std::io::Error>(big)]))
        };
        match try_post(addr, "", None, None, body).await {
            Ok(r) => assert_eq!(r.status, 401, "{}", r.body),
            Err(e) => assert!(
                e.is_request() || e.is_body(),
                "only a connection closed under the write may stand for the 401: {e:?}"
            ),
        }
    }
    assert_eq!(broker.depth(&ns.names.requests).await, 0, "nothing was published");
    // Both tokens of the file work.
    assert_eq!(
        post(addr, "", Some("other-token-0123456789abcdef"), None, body.clone())
            .await
            .status,
        202
    );
    assert_eq!(post(addr, "", Some(TOKEN), None, body).await.status, 202);
    let doc = reqwest::get(format!("http://{addr}/v1/openapi.json")).await.unwrap();
    assert_eq!(doc.status().as_u16(), 200);
    let served: Value = doc.json_bytes().await;
    let kept: Value = serde_json::from_str(include_str!("../../docs/openapi.json")).unwrap();
    assert_eq!(served, kept, "the served document is the one in docs/");
    assert_eq!(served["openapi"], "3.1.0");
}

trait JsonBytes {
    async fn json_bytes(self) -> Value;
}
impl JsonBytes for reqwest::Response {
    async fn json_bytes(self) -> Value {
        serde_json::from_slice(&self.bytes().await.unwrap()).unwrap()
    }
}

#[tokio::test]
async fn the_worker_refuses_to_start_without_a_token_file() {
    let ns = Ns::new("http-notoken");
    let base = [
        ("ZEGO_APP_ID", "1234567890"),
        ("ZEGO_SERVER_SECRET", SECRET),
        ("KICKQ_METRICS_ADDR", "0"),
        ("KICKQ_HTTP_INTAKE_ADDR", "127.0.0.1:0"),
    ];
    let out = kickq(&ns, &["run"], &base, None).await;
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("KICKQ_HTTP_INTAKE_TOKEN_FILE") && err.contains("required"),
        "{err}"
    );
    // A token file that does not exist, or holds no token, stops the start too.
    let (dir, empty) = token_file(&ns, "# no token yet\n\n");
    // Tokens weaker than 128 bits are refused when the file is read.
    let weak = dir.join("weak-tokens");
    std::fs::write(&weak, "ci:hunter2-pass\n").unwrap();
    for (path, says) in [
        ("/nonexistent/kickq-tokens", "cannot read"),
        (empty.to_str().unwrap(), "holds no usable token"),
        (weak.to_str().unwrap(), "holds no usable token"),
    ] {
        let mut env = base.to_vec();
        env.push(("KICKQ_HTTP_INTAKE_TOKEN_FILE", path));
        let out = tokio::time::timeout(Duration::from_secs(20), kickq(&ns, &["run"], &env, None))
            .await
            .expect("the start is refused at once");
        let (_, err) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("KICKQ_HTTP_INTAKE_TOKEN_FILE") && err.contains(says),
            "{err}"
        );
        if path == weak.to_str().unwrap() {
            assert!(
                err.contains("token refused: about 72 bits, fewer than 128") && err.contains(r#""token":"ci""#),
                "the line names the token and its strength: {err}"
            );
            assert!(!err.contains("hunter2-pass"), "never the secret: {err}");
        }
    }
}

/// Token files take `name:token` lines: a weak line is refused while the
/// others serve, and a token rotated under the same name keeps its
/// idempotency keys (they are scoped by the name, not the secret).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_have_names_weak_ones_are_refused_and_a_rotation_keeps_the_keys() {
    let ns = Ns::new("http-names");
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let (a, b) = ("0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210");
    // A file beside the one `intake` writes (`token_file`'s path).
    let path = token_file(&ns, "").0.join("named-tokens");
    std::fs::write(&path, format!("# producers\nci:{a}\nweak:hunter2hunter2\n")).unwrap();
    let tokens = path.clone();
    let (_worker, addr) = intake(&ns, &amqp_url(), move |c| c.token_file = tokens).await;
    let body = job("room-1", &["u1"], None);
    assert_eq!(
        post(addr, "", Some("hunter2hunter2"), None, body.clone()).await.status,
        401
    );
    let first = post(addr, "", Some(a), Some("nightly-1"), body.clone()).await;
    assert_eq!(first.status, 202, "{}", first.body);
    // ci's secret rotated: a new file renamed over the old one.
    let next = path.with_extension("next");
    std::fs::write(&next, format!("ci:{b}\n")).unwrap();
    std::fs::rename(&next, &path).unwrap();
    assert_eq!(
        post(addr, "", Some(a), None, body.clone()).await.status,
        401,
        "the old secret"
    );
    let again = post(addr, "", Some(b), Some("nightly-1"), body).await;
    assert_eq!(again.status, 202, "{}", again.body);
    assert_eq!(
        again.headers["idempotent-replayed"], "true",
        "the same name, the same keys"
    );
    assert_eq!(ids(&again), ids(&first));
    assert_eq!(broker.depth(&ns.names.requests).await, 1, "published once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_batch_is_published_with_confirms_and_kicked() {
    let ns = Ns::new("http-kick");
    let mock = mock(1000).await;
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let mut intake = IntakeConfig::new("127.0.0.1:0".parse().unwrap(), intake_tokens(&ns));
    intake.rate = 1000;
    let cfg = worker_config(&ns, &mock.base_url(), 1000).with_http_intake(intake);
    kickq::zego::client::install_crypto_provider();
    init_logs();
    let worker = Worker::bind(cfg).await.unwrap();
    let addr = worker.intake_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(worker.run(stop.clone()));
    let body = json!([
        {"room_id": "room-1", "user_ids": ["a", "b"], "reason": "spam", "job_id": "mine-1"},
        {"room_id": "room-2", "user_ids": ["c"]}
    ]);
    let r = post(addr, "", Some(TOKEN), None, serde_json::to_vec(&body).unwrap()).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let got = ids(&r);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], "mine-1", "the body's job id is kept");
    let v7 = uuid::Uuid::parse_str(&got[1]).expect("a job without an id gets a UUID");
    assert_eq!(v7.get_version_num(), 7);
    wait_for(Duration::from_secs(20), "the three users kicked", || async {
        let mut k: Vec<String> = mock.kicked().into_iter().map(|k| k.user_id).collect();
        k.sort();
        k == ["a", "b", "c"]
    })
    .await;
    stop.cancel();
    let summary = running.await.unwrap().unwrap();
    assert_eq!(summary.tally.acked, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_element_a_bad_lane_or_a_large_body_publishes_nothing() {
    let ns = Ns::new("http-invalid");
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let (_worker, addr) = intake(&ns, &amqp_url(), |c| {
        c.max_bytes = 4096;
        c.rate = 1000;
    })
    .await;
    let bad = json!([
        {"room_id": "room-1", "user_ids": ["a"]},
        {"room_id": "room-1", "user_ids": ["a"]},
        {"room_id": "room-1", "user_ids": ["a", ""]},
    ]);
    let r = post(addr, "", Some(TOKEN), None, serde_json::to_vec(&bad).unwrap()).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["index"], 2);
    // The producer API's and kickq enqueue's wording of the rule.
    assert_eq!(
        r.body["error"],
        "job 2 is invalid: user_ids[1] must be 1 to 64 bytes, got 0"
    );
    for (query, body, want) in [
        (
            "?lane=fast",
            job("r", &["a"], None),
            "lane: \"fast\" is not a lane: use live or bulk",
        ),
        ("", b"[]".to_vec(), "the body is an empty array: give at least one job"),
        (
            "",
            b"{\"room_id\": 7}".to_vec(),
            "job 0 is invalid: not a job message: invalid type: integer `7`, expected a string at line 1 column 13",
        ),
    ] {
        let r = post(addr, query, Some(TOKEN), None, body).await;
        assert_eq!((r.status, r.body["error"].as_str().unwrap()), (400, want));
    }
    // The size cap: 413 with or without a Content-Length.
    let big = serde_json::to_vec(&json!({"room_id": "r", "user_ids": ["a"], "reason": "x".repeat(5000)})).unwrap();
    let r = post(addr, "", Some(TOKEN), None, big.clone()).await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.body["error"], "the body is larger than 4096 bytes");
    assert_eq!(
        chunked_status(addr, &big).await,
        413,
        "streamed without a Content-Length"
    );
    assert_eq!(
        broker.depth(&ns.names.requests).await,
        0,
        "nothing of a refused request is published"
    );
    assert_eq!(broker.depth(&ns.names.bulk).await, 0);
    // ?lane=bulk goes to the bulk lane.
    let r = post(addr, "?lane=bulk", Some(TOKEN), None, job("r", &["a"], None)).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(
        (
            broker.depth(&ns.names.requests).await,
            broker.depth(&ns.names.bulk).await
        ),
        (0, 1)
    );
}

/// POSTs `body` in chunks (Transfer-Encoding: chunked, no Content-Length) over a raw connection: the status.
async fn chunked_status(addr: SocketAddr, body: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/kicks HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    for c in body.chunks(1000) {
        // The server may answer and close before the last chunk.
        if s.write_all(format!("{:x}\r\n", c.len()).as_bytes()).await.is_err()
            || s.write_all(c).await.is_err()
            || s.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply).await;
    let text = String::from_utf8_lossy(&reply);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_cap_answers_429_with_retry_after() {
    let ns = Ns::new("http-rate");
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let (_worker, addr) = intake(&ns, &amqp_url(), |c| c.rate = 2).await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let r = post(addr, "?lane=fast", Some(TOKEN), None, job("r", &["a"], None)).await;
        statuses.push(r.status);
        if r.status == 429 {
            assert_eq!(r.headers["retry-after"], "1");
        }
    }
    assert_eq!(statuses, [400, 400, 429], "a burst of the rate, then 429");
    // Another token has a bucket of its own.
    assert_eq!(
        post(
            addr,
            "?lane=fast",
            Some("other-token-0123456789abcdef"),
            None,
            job("r", &["a"], None)
        )
        .await
        .status,
        400
    );
}

async fn idempotent_retry(ns: &Ns, broker: &Broker, addr: SocketAddr) {
    let key = format!("key-{}", rand::random::<u64>());
    let body = serde_json::to_vec(&json!([
        {"room_id": "room-1", "user_ids": ["a"]},
        {"room_id": "room-2", "user_ids": ["b"]}
    ]))
    .unwrap();
    let first = post(addr, "", Some(TOKEN), Some(&key), body.clone()).await;
    assert_eq!(first.status, 202, "{}", first.body);
    assert!(first.headers.get("idempotent-replayed").is_none());
    let again = post(addr, "", Some(TOKEN), Some(&key), body.clone()).await;
    assert_eq!(again.status, 202, "{}", again.body);
    assert_eq!(ids(&again), ids(&first), "the same job ids");
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(broker.depth(&ns.names.requests).await, 2, "published once");
    // The same key with another body, or another lane: 422, nothing published.
    let other = post(addr, "", Some(TOKEN), Some(&key), job("room-3", &["c"], None)).await;
    assert_eq!(other.status, 422, "{}", other.body);
    let lane = post(addr, "?lane=bulk", Some(TOKEN), Some(&key), body).await;
    assert_eq!(lane.status, 422, "{}", lane.body);
    let bad = post(addr, "", Some(TOKEN), Some("has space"), job("r", &["a"], None)).await;
    assert_eq!(bad.status, 400);
    assert_eq!(broker.depth(&ns.names.requests).await, 2);
    assert_eq!(broker.depth(&ns.names.bulk).await, 0);
    // A key belongs to its token: another token's request with the same key
    // neither gets the first one's answer (its job ids) nor a conflict.
    let theirs = post(
        addr,
        "",
        Some("other-token-0123456789abcdef"),
        Some(&key),
        job("room-4", &["d"], None),
    )
    .await;
    assert_eq!(theirs.status, 202, "{}", theirs.body);
    assert!(theirs.headers.get("idempotent-replayed").is_none());
    assert_ne!(ids(&theirs), ids(&first));
    let same_body = post(
        addr,
        "",
        Some("other-token-0123456789abcdef"),
        Some(&key),
        body_of_first(),
    )
    .await;
    assert_eq!(same_body.status, 422, "the other token's key now holds its own request");
    let mine = post(addr, "", Some(TOKEN), Some(&key), body_of_first()).await;
    assert_eq!(ids(&mine), ids(&first), "the first token still gets its own answer");
    assert_eq!(broker.depth(&ns.names.requests).await, 3);
}

/// The two-job body `idempotent_retry` sends first.
fn body_of_first() -> Vec<u8> {
    serde_json::to_vec(&json!([
        {"room_id": "room-1", "user_ids": ["a"]},
        {"room_id": "room-2", "user_ids": ["b"]}
    ]))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_request_with_its_idempotency_key_publishes_nothing_again_in_memory() {
    let ns = Ns::new("http-idem-mem");
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let (_worker, addr) = intake(&ns, &amqp_url(), |c| c.rate = 1000).await;
    idempotent_retry(&ns, &broker, addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_request_with_its_idempotency_key_publishes_nothing_again_in_the_ledger() {
    let ns = Ns::new("http-idem-db");
    let db = TestDb::new().await;
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let ledger = kickq::testkit::ledger::Ledger::connect(&db.url).await.unwrap();
    ledger.migrate().await.unwrap();
    kickq::zego::client::install_crypto_provider();
    let mut intake_cfg = IntakeConfig::new("127.0.0.1:0".parse().unwrap(), intake_tokens(&ns));
    intake_cfg.rate = 1000;
    let cfg = worker_config(&ns, "http://127.0.0.1:9", 1000)
        .with_http_intake(intake_cfg.clone())
        .with_ledger(kickq::secret::Secret::new(db.url.clone()));
    let worker = Worker::bind(cfg.clone()).await.unwrap();
    let addr = worker.intake_addr().unwrap();
    idempotent_retry(&ns, &broker, addr).await;
    // The ledger's keys are shared: a second worker answers the first one's key.
    let key = "shared-key-1";
    let body = job("room-9", &["z"], None);
    let first = post(addr, "", Some(TOKEN), Some(key), body.clone()).await;
    let other = Worker::bind(cfg).await.unwrap();
    let again = post(other.intake_addr().unwrap(), "", Some(TOKEN), Some(key), body).await;
    assert_eq!((first.status, again.status), (202, 202));
    assert_eq!(ids(&first), ids(&again));
    // idempotent_retry's three, and this one once.
    assert_eq!(broker.depth(&ns.names.requests).await, 4);
    drop((worker, other));
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_is_answered_503_never_202() {
    let ns = Ns::new("http-down");
    // Nothing listens on port 1.
    let (_worker, addr) = intake(&ns, "amqp://guest:guest@127.0.0.1:1/%2f", |c| c.rate = 1000).await;
    for key in [None, Some("k-down")] {
        let r = post(addr, "", Some(TOKEN), key, job("r", &["a"], None)).await;
        assert_eq!(r.status, 503, "{}", r.body);
        assert_eq!(r.headers["retry-after"], "5");
        assert!(
            !r.body["error"].as_str().unwrap().contains("127.0.0.1"),
            "no broker detail to clients: {}",
            r.body
        );
    }
    // The connection closed by the broker: a 503 (or, if the publish won the race, a 202 that was confirmed), then
    // a reconnect on demand.
    let ns = Ns::new("http-closed");
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let (_worker, addr) = intake(&ns, &amqp_url(), |c| c.rate = 1000).await;
    assert_eq!(
        post(addr, "", Some(TOKEN), None, job("r", &["a"], None)).await.status,
        202
    );
    let name = format!("{}-worker-http-intake", ns.name());
    assert_eq!(close_connections_named(&name), 1, "the intake has its own connection");
    let mut seen = Vec::new();
    let mut accepted = 1;
    for _ in 0..20 {
        let r = post(addr, "", Some(TOKEN), None, job("r", &["a"], None)).await;
        assert!(matches!(r.status, 202 | 503), "{}: {}", r.status, r.body);
        if r.status == 202 {
            accepted += 1;
            if seen.contains(&503) {
                break;
            }
        }
        seen.push(r.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(*seen.last().unwrap_or(&202), 202);
    // Every 202 is in the queue: confirmed means stored.
    assert_eq!(broker.depth(&ns.names.requests).await, accepted);
}

/// What the document says `POST /v1/kicks` may answer, and the required fields of each answer's schema.
fn documented(doc: &Value) -> Vec<(u16, Vec<String>)> {
    let responses = doc["paths"]["/v1/kicks"]["post"]["responses"].as_object().unwrap();
    responses
        .iter()
        .map(|(code, r)| {
            let schema = &r["content"]["application/json"]["schema"]["$ref"];
            let name = schema.as_str().unwrap().trim_start_matches("#/components/schemas/");
            let required = doc["components"]["schemas"][name]["required"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect();
            (code.parse().unwrap(), required)
        })
        .collect()
}

/// A job within the document's Job schema (ids from the vendor set).
fn valid_job() -> impl Strategy<Value = Value> {
    let id =
        |max: usize| proptest::string::string_regex(&format!("[A-Za-z0-9~!@#$%^&*()_+=`;',.<>/-]{{1,{max}}}")).unwrap();
    (
        id(128),
        proptest::collection::vec(id(64), 1..5),
        proptest::option::of("[a-z ]{0,256}"),
        proptest::option::of(id(128)),
    )
        .prop_map(|(room, users, reason, job_id)| {
            let mut j = json!({"room_id": room, "user_ids": users});
            if let Some(r) = reason {
                j["reason"] = r.into();
            }
            if let Some(id) = job_id {
                j["job_id"] = id.into();
            }
            j
        })
}

/// A job that breaks exactly one of the schema's constraints.
fn invalid_job() -> impl Strategy<Value = Value> {
    (valid_job(), 0..6usize).prop_map(|(mut j, broken)| {
        match broken {
            0 => j["room_id"] = "".into(),
            1 => j["room_id"] = "r".repeat(129).into(),
            2 => j["user_ids"] = json!([]),
            3 => j["user_ids"] = json!(["u".repeat(65)]),
            4 => j["reason"] = "x".repeat(257).into(),
            _ => {
                j.as_object_mut().unwrap().remove("room_id");
            }
        }
        j
    })
}

#[test]
fn the_served_document_and_the_handler_agree() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ns = Ns::new("http-openapi");
    let (broker, worker, addr) = rt.block_on(async {
        let broker = Broker::connect().await;
        broker.declare(&ns.names).await;
        let (worker, addr) = intake(&ns, &amqp_url(), |c| c.rate = 10_000).await;
        (broker, worker, addr)
    });
    let doc: Value = rt.block_on(async {
        reqwest::get(format!("http://{addr}/v1/openapi.json"))
            .await
            .unwrap()
            .json_bytes()
            .await
    });
    let allowed = documented(&doc);
    let job_schema = &doc["components"]["schemas"]["Job"];
    assert_eq!(
        job_schema["properties"]["user_ids"]["items"]["maxLength"], 64,
        "the constraints generated from"
    );
    let published = std::sync::atomic::AtomicU32::new(0);
    let cases = (
        proptest::collection::vec(prop_oneof![valid_job(), invalid_job()], 1..4),
        any::<bool>(),
    );
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 48,
        ..ProptestConfig::default()
    });
    runner
        .run(&cases, |(jobs, as_array)| {
            let body = match (as_array, jobs.len()) {
                (false, 1) => jobs[0].clone(),
                _ => Value::Array(jobs.clone()),
            };
            let invalid = jobs.iter().position(|j| {
                let room = j["room_id"].as_str().unwrap_or("");
                let users = j["user_ids"].as_array().unwrap();
                room.is_empty()
                    || room.len() > 128
                    || users.is_empty()
                    || users.iter().any(|u| u.as_str().unwrap().len() > 64)
                    || j["reason"].as_str().is_some_and(|r| r.len() > 256)
            });
            let r = rt.block_on(post(addr, "", Some(TOKEN), None, serde_json::to_vec(&body).unwrap()));
            let (_, required) = allowed
                .iter()
                .find(|(code, _)| *code == r.status)
                .unwrap_or_else(|| panic!("{} is not a documented answer: {}", r.status, r.body));
            for field in required {
                prop_assert!(
                    r.body.get(field).is_some(),
                    "{}: {field} missing from {}",
                    r.status,
                    r.body
                );
            }
            match invalid {
                Some(i) => {
                    prop_assert_eq!(r.status, 400, "{}", r.body);
                    prop_assert_eq!(r.body["index"].as_u64(), Some(i as u64));
                    let prefix = format!("job {i} is invalid: ");
                    prop_assert!(r.body["error"].as_str().unwrap().starts_with(&prefix), "{}", r.body);
                }
                None => {
                    prop_assert_eq!(r.status, 202, "{}", r.body);
                    let ids = r.body["job_ids"].as_array().unwrap();
                    prop_assert_eq!(ids.len(), jobs.len());
                    for (id, j) in ids.iter().zip(&jobs) {
                        prop_assert!(id.is_string());
                        if let Some(given) = j.get("job_id") {
                            prop_assert_eq!(id, given);
                        }
                    }
                    published.fetch_add(jobs.len() as u32, std::sync::atomic::Ordering::Relaxed);
                }
            }
            Ok(())
        })
        .unwrap();
    let depth = rt.block_on(broker.depth(&ns.names.requests));
    assert_eq!(depth, published.into_inner(), "every 202 is queued, nothing else");
    drop(worker);
}

/// Revocation is real: a token removed from the file, an emptied file or a
/// removed one refuses at once (fail closed); a file that comes back serves
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_or_removed_token_file_revokes_every_token() {
    let ns = Ns::new("http-revoke");
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let path = intake_tokens(&ns);
    let tokens = path.clone();
    let (_worker, addr) = intake(&ns, &amqp_url(), move |c| c.token_file = tokens).await;
    let body = job("room-1", &["u1"], None);
    assert_eq!(post(addr, "", Some(TOKEN), None, body.clone()).await.status, 202);
    // The token leaves the file (a new file renamed over the old one).
    let next = path.with_extension("next");
    std::fs::write(&next, "other-token-0123456789abcdef\n").unwrap();
    std::fs::rename(&next, &path).unwrap();
    assert_eq!(post(addr, "", Some(TOKEN), None, body.clone()).await.status, 401);
    assert_eq!(
        post(addr, "", Some("other-token-0123456789abcdef"), None, body.clone())
            .await
            .status,
        202
    );
    // Emptied: every token refused.
    std::fs::write(&next, "# nobody\n").unwrap();
    std::fs::rename(&next, &path).unwrap();
    assert_eq!(
        post(addr, "", Some("other-token-0123456789abcdef"), None, body.clone())
            .await
            .status,
        401
    );
    // Removed: still refused (not the tokens of before).
    std::fs::remove_file(&path).unwrap();
    assert_eq!(
        post(addr, "", Some("other-token-0123456789abcdef"), None, body.clone())
            .await
            .status,
        401
    );
    // Back: served again.
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    assert_eq!(post(addr, "", Some(TOKEN), None, body).await.status, 202);
    assert_eq!(broker.depth(&ns.names.requests).await, 3);
}

/// Reads `stream` until the server closes it, at most `within`: what it
/// sent, or `None` if it was still open then.
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    match tokio::time::timeout(within, stream.read_to_end(&mut got)).await {
        Ok(_) => Some(got),
        Err(_) => None,
    }
}

/// The listener does not wait on slow clients: one that sends its headers
/// too slowly (slowloris) or nothing at all is cut off after the header
/// timeout, and one that drips its body gets 408 after the body timeout,
/// with nothing published. (A probe held connections over 130 s before.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_cut_off() {
    use tokio::io::AsyncWriteExt;
    let ns = Ns::new("http-slow");
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let bounds = ListenerBounds {
        header_read: Duration::from_secs(1),
        body: Duration::from_secs(1),
        ..ListenerBounds::default()
    };
    let (_worker, addr) = intake(&ns, &amqp_url(), move |c| c.listener = bounds).await;
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"POST /v1/kicks HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut drip = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/kicks HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n[{{\"room_id\""
    );
    drip.write_all(head.as_bytes()).await.unwrap();
    for (name, stream) in [("partial headers", &mut slow), ("nothing sent", &mut idle)] {
        let got = closed_within(stream, Duration::from_secs(10)).await;
        assert!(got.is_some(), "{name}: still open after 10 s (header timeout 1 s)");
    }
    let got = closed_within(&mut drip, Duration::from_secs(10))
        .await
        .expect("a dripped body is answered and the connection closed");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    // A body dripped a byte at a time never waits long between chunks: the
    // deadline is for the whole body.
    let mut dripper = tokio::net::TcpStream::connect(addr).await.unwrap();
    dripper.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let dripping = async {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if dripper.write_all(b" ").await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(6), dripping).await;
    let got = closed_within(&mut dripper, Duration::from_secs(5))
        .await
        .expect("the dripping client was answered and cut off");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 408"), "{got:?}");
    // The 408 came at the body deadline (1 s), not after the drip stopped
    // (6 s): a timeout per chunk would have waited that long.
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!(broker.depth(&ns.names.requests).await, 0);
    // A prompt client is served as before.
    assert_eq!(
        post(addr, "", Some(TOKEN), None, job("r", &["a"], None)).await.status,
        202
    );
}

/// At most its caps of connections are open at once, per client address
/// and in all: past either a connection is closed at once, unread (well
/// before the header timeout), and served again once a slot is free. (300
/// partial connections took 300 file descriptors before.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_connections_are_capped_per_client_and_in_all() {
    let ns = Ns::new("http-cap");
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let bounds = ListenerBounds {
        header_read: Duration::from_secs(30),
        max_connections: 3,
        max_per_client: 2,
        ..ListenerBounds::default()
    };
    let (_worker, addr) = intake(&ns, &amqp_url(), move |c| c.listener = bounds).await;
    // A connection from another loopback address (Linux routes 127/8 to lo).
    let from = |ip: &str| {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        async move {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(SocketAddr::new(ip, 0)).unwrap();
            socket.connect(addr).await.unwrap()
        }
    };
    // Let the listener take each connection before the next comes.
    let settle = || tokio::time::sleep(Duration::from_millis(300));
    let mut held = vec![from("127.0.0.1").await, from("127.0.0.1").await];
    settle().await;
    let mut third = from("127.0.0.1").await;
    let got = closed_within(&mut third, Duration::from_secs(10))
        .await
        .expect("a third from one address is closed at once, not after the 30 s header timeout");
    assert!(got.is_empty(), "closed unread: {}", String::from_utf8_lossy(&got));
    let mut other = from("127.0.0.2").await;
    assert!(
        closed_within(&mut other, Duration::from_secs(1)).await.is_none(),
        "another address still gets a connection"
    );
    held.push(other);
    settle().await;
    let mut fourth = from("127.0.0.3").await;
    let got = closed_within(&mut fourth, Duration::from_secs(10))
        .await
        .expect("a connection past the listener's cap is closed at once");
    assert!(got.is_empty(), "closed unread: {}", String::from_utf8_lossy(&got));
    drop(held.swap_remove(0));
    wait_for(Duration::from_secs(10), "a freed slot serves again", || async {
        matches!(
            try_post(addr, "", Some(TOKEN), None, job("r", &["a"], None)).await,
            Ok(r) if r.status == 202
        )
    })
    .await;
}

/// Wrong bearer tokens are throttled per client address: after ten, even
/// the right token is refused (429, with Retry-After) for the rest of the
/// minute, before any token is compared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_tokens_are_throttled_per_address() {
    let ns = Ns::new("http-throttle");
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let (_worker, addr) = intake(&ns, &amqp_url(), |_| {}).await;
    let body = job("r", &["a"], None);
    for i in 0..10 {
        let guess = format!("{TOKEN}-{i}");
        assert_eq!(
            post(addr, "", Some(&guess), None, body.clone()).await.status,
            401,
            "guess {i}"
        );
    }
    let r = post(addr, "", Some(TOKEN), None, body).await;
    assert_eq!(r.status, 429, "{}", r.body);
    let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    assert!(r.body["error"]
        .as_str()
        .unwrap()
        .contains("too many failed authentications"));
    assert_eq!(broker.depth(&ns.names.requests).await, 0);
}
