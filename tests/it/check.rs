//! `kickq check` and `kickq status` through the binary, against the real broker and database and an
//! in-process mock-zego; and a worker's `/status`.

use crate::common;

use common::{kickq, mock, text, Broker, Ns, TestDb, APP_ID, SECRET};
use kickq::testkit::topology;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use std::time::Duration;

/// The mock answers the check's room as the real API does: room gone.
async fn api() -> kickq::mock_zego::MockZego {
    let m = mock(50).await;
    m.set_faults(vec![
        kickq::mock_zego::parse_fault("room=kickq-check-*,code=50001").unwrap()
    ]);
    m
}

fn env<'a>(api_url: &'a str, secret: &'a str, database: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("ZEGO_APP_ID", "1234567890"),
        ("ZEGO_SERVER_SECRET", secret),
        ("ZEGO_API_URL", api_url),
        ("DATABASE_URL", database),
    ]
}

/// Whether a queue exists (passive declare on a channel of its own).
async fn exists(b: &Broker, queue: &str) -> bool {
    let ch = b.conn.create_channel().await.unwrap();
    let opts = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    ch.queue_declare(queue.into(), opts, FieldTable::default())
        .await
        .is_ok()
}

#[tokio::test]
async fn a_sound_deployment_passes_every_check() {
    assert_eq!(APP_ID, 1234567890);
    let ns = Ns::new("check-ok");
    let b = Broker::connect().await;
    b.declare(&ns.names).await;
    let db = TestDb::migrated().await;
    let m = api().await;
    let url = m.base_url();
    let o = kickq(&ns, &["check"], &env(&url, SECRET, &db.url), None).await;
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2 + ns.names.all().len() + 2, "{out}");
    assert!(lines.iter().all(|l| l.starts_with("ok  ")), "{out}");
    // The version from the broker's own handshake (3.10 and 4.0, the tested
    // ones, have no known issue to warn about).
    assert!(lines[1].starts_with("ok    broker version: RabbitMQ "), "{out}");
    assert!(
        out.contains(
            "queue {}.requests: arguments as kickq declares them"
                .replace("{}", ns.name())
                .as_str()
        ),
        "{out}"
    );
    assert!(out.contains("database: reachable, every migration applied"), "{out}");
    assert!(
        out.contains("api: AppId, secret and clock accepted (code 50001"),
        "{out}"
    );
    assert!(m.kicked().is_empty(), "the check kicks nobody");

    let o = kickq(&ns, &["check", "--json"], &env(&url, SECRET, &db.url), None).await;
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("one JSON object");
    assert_eq!(v["ok"], true);
    let checks = v["checks"].as_array().unwrap();
    assert_eq!(checks.len(), lines.len());
    assert_eq!(checks[0]["check"], "broker");
    assert!(
        checks.iter().all(|c| c["status"] == "ok" && c["fix"].is_null()),
        "{out}"
    );
    db.drop_db().await;
}

#[tokio::test]
async fn a_wrong_secret_fails_the_api_check() {
    let ns = Ns::new("check-secret");
    let m = api().await;
    let url = m.base_url();
    let o = kickq(
        &ns,
        &["check"],
        &env(&url, "not-the-secret-0123456789abcdef0", ""),
        None,
    )
    .await;
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    let api = out
        .lines()
        .find(|l| l.contains(" api: "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(api.starts_with("FAIL  api: code 1000000"), "{api}");
    assert!(api.contains("fix: "), "{api}");
    assert!(
        out.lines()
            .filter(|l| !l.contains(" api: "))
            .all(|l| l.starts_with("ok")),
        "{out}"
    );
    assert!(err.contains("1 of"), "{err}");
}

#[tokio::test]
async fn a_queue_declared_with_other_arguments_is_named_with_both_values() {
    let ns = Ns::new("check-diff");
    let b = Broker::connect().await;
    let requests = ns.names.requests.clone();
    b.channel
        .queue_declare(
            requests.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            topology::requests_args(&ns.names, 5),
        )
        .await
        .unwrap();
    let m = api().await;
    let url = m.base_url();
    let o = kickq(&ns, &["check"], &env(&url, SECRET, ""), None).await;
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}{err}");
    let line = out
        .lines()
        .find(|l| l.contains(&format!("queue {requests}:")))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.starts_with(&format!(
            "FAIL  queue {requests}: argument x-delivery-limit is 5 on the broker, kickq declares 20"
        )),
        "{line}"
    );
    assert!(line.contains("fix: "), "{line}");
    // The same queue passes when the check is given the deployment's limit.
    let o = kickq(&ns, &["check", "--delivery-limit", "5"], &env(&url, SECRET, ""), None).await;
    assert!(o.status.success(), "{}", text(&o).0);
}

#[tokio::test]
async fn absent_queues_pass_and_stay_absent() {
    let ns = Ns::new("check-absent");
    let b = Broker::connect().await;
    let m = api().await;
    let url = m.base_url();
    let o = kickq(&ns, &["check"], &env(&url, SECRET, ""), None).await;
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    for q in ns.names.all() {
        assert!(
            out.contains(&format!("ok    queue {q}: absent: declared by `kickq run` at start")),
            "{q}: {out}"
        );
        assert!(!exists(&b, q).await, "the check declared {q}");
    }
    assert!(out.contains("database: DATABASE_URL unset"), "{out}");
}

#[tokio::test]
async fn an_unreachable_broker_and_an_unmigrated_database_fail() {
    let ns = Ns::new("check-down");
    let db = TestDb::new().await;
    let m = api().await;
    let url = m.base_url();
    let mut e = env(&url, SECRET, &db.url);
    e.push(("KICKQ_AMQP_URL", "amqp://guest:wrong-password@127.0.0.1:5672/%2f"));
    let o = kickq(&ns, &["check", "--json"], &e, None).await;
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}{err}");
    assert!(
        !out.contains("wrong-password") && !err.contains("wrong-password"),
        "{out}{err}"
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], false);
    let by = |name: &str| {
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == name)
            .cloned()
    };
    assert_eq!(by("broker").unwrap()["status"], "fail", "{out}");
    let database = by("database").unwrap();
    assert_eq!(database["status"], "fail", "{out}");
    assert!(database["fix"].as_str().unwrap().contains("kickq migrate"), "{out}");
    assert_eq!(by("api").unwrap()["status"], "ok", "{out}");
    db.drop_db().await;
}

#[tokio::test]
async fn status_shows_queues_and_the_active_worker() {
    let ns = Ns::new("status");
    let m = mock(50).await;
    let mut cfg = common::worker_config(&ns, &m.base_url(), 50);
    cfg.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    let w = common::spawn_worker(cfg).await;
    let addr = w.metrics_addr.expect("the metrics server is on");
    let worker = format!("http://{addr}");
    let http = reqwest::Client::new();
    let status = || async {
        http.get(format!("{worker}/status"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .map(|b| serde_json::from_slice::<serde_json::Value>(&b).unwrap())
            .unwrap()
    };
    common::wait_for(Duration::from_secs(20), "the worker to be active", || async {
        status().await["role"] == "active"
    })
    .await;
    let b = Broker::connect().await;
    b.publish_raw(&ns.names.requests, &common::job("room-s", &["u1", "u2"], None))
        .await;
    common::wait_for(Duration::from_secs(20), "the kick", || async { m.kicked().len() == 2 }).await;
    // The mock records the kick before its answer reaches the worker, which
    // counts the call only then.
    common::wait_for(Duration::from_secs(20), "the answered call counted", || async {
        status().await["calls_per_sec"].as_f64().unwrap_or(0.0) > 0.0
    })
    .await;
    let s = status().await;
    assert_eq!(s["apps"], serde_json::json!([APP_ID]), "{s}");
    assert_eq!(s["connected"], true, "{s}");
    assert!(s["halted"].as_array().unwrap().is_empty(), "{s}");
    assert!(s["calls_per_sec"].as_f64().unwrap() > 0.0, "{s}");
    for key in [
        "pending_users",
        "pending_groups",
        "calls_in_flight",
        "deliveries_in_flight",
    ] {
        assert!(s[key].is_number(), "{key}: {s}");
    }
    b.publish_raw(&ns.names.dead, b"{}").await;

    let o = kickq(
        &ns,
        &[
            "status",
            "--json",
            "--worker",
            &worker,
            "--worker",
            "http://127.0.0.1:1",
        ],
        &[],
        None,
    )
    .await;
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["namespace"], ns.name());
    assert_eq!(v["leader_held"], true, "{out}");
    let queues = v["queues"].as_array().unwrap();
    assert_eq!(
        queues.len(),
        3 + ns.names.retry.len() + ns.names.bulk_retry.len(),
        "{out}"
    );
    assert!(
        queues
            .iter()
            .any(|q| q["queue"] == ns.names.bulk.as_str() && q["kind"] == "bulk"),
        "{out}"
    );
    assert_eq!(queues[0]["kind"], "requests");
    assert_eq!(queues[0]["consumers"], 1, "{out}");
    let dead = queues.last().unwrap();
    assert_eq!(
        (dead["kind"].as_str(), dead["ready"].as_u64()),
        (Some("dead"), Some(1)),
        "{out}"
    );
    assert_eq!(v["workers"][0]["status"]["role"], "active", "{out}");
    assert!(
        v["workers"][1]["status"].is_null() && v["workers"][1]["error"].is_string(),
        "{out}"
    );

    let o = kickq(&ns, &["status", "--worker", &worker], &[], None).await;
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(
        out.starts_with(&format!("namespace {}: leadership lock held", ns.name())),
        "{out}"
    );
    let row = out
        .lines()
        .find(|l| l.starts_with(&worker))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains(" active ") && row.contains(&APP_ID.to_string()), "{row}");
    w.stop().await;

    let o = kickq(
        &ns,
        &["status", "--metrics-addr", "0"],
        &[("KICKQ_AMQP_URL", "amqp://guest:x@127.0.0.1:1/%2f")],
        None,
    )
    .await;
    assert!(!o.status.success(), "an unreachable broker fails status");
    // It says where it looked and which setting named it, as enqueue does,
    // and never the password.
    let (_, stderr) = text(&o);
    assert!(
        stderr.contains("cannot reach the broker at 127.0.0.1:1 (KICKQ_AMQP_URL)"),
        "{stderr}"
    );
    assert!(!stderr.contains("guest:x"), "{stderr}");
}

/// A stand-in for the RabbitMQ management API: answers `GET /api/queues/%2F/<dead>`
/// as RabbitMQ does for a queue under a policy of `delivery-limit: 5`, and
/// remembers the path and the Authorization header it was asked with.
async fn fake_management(dead: &str) -> (String, std::sync::Arc<std::sync::Mutex<Vec<(String, bool)>>>) {
    fake_management_with(
        dead,
        serde_json::json!({
            "name": dead,
            "vhost": "/",
            "policy": "cap-dead",
            "operator_policy": null,
            "effective_policy_definition": {"delivery-limit": 5},
        }),
    )
    .await
}

/// [`fake_management`] answering the queue with `body`.
async fn fake_management_with(
    dead: &str,
    body: serde_json::Value,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<(String, bool)>>>) {
    use axum::http::{HeaderMap, Uri};
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (log, want) = (seen.clone(), format!("/api/queues/%2F/{dead}"));
    let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
        let (log, want, body) = (log.clone(), want.clone(), body.clone());
        async move {
            log.lock()
                .unwrap()
                .push((uri.path().to_owned(), headers.contains_key("authorization")));
            if uri.path() == want {
                (axum::http::StatusCode::OK, axum::Json(body))
            } else {
                (axum::http::StatusCode::NOT_FOUND, axum::Json(serde_json::json!({})))
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://guest:guest@{addr}"), seen)
}

#[tokio::test]
async fn a_policy_capping_the_dead_queue_is_a_warning() {
    let ns = Ns::new("check-cap");
    let (line, out, err, seen) = dead_policy_line(&ns, None).await;
    assert!(
        line.starts_with(&format!(
            "warn  dead policy {}: policy cap-dead caps it: delivery-limit 5 (",
            ns.names.dead
        )),
        "{line}"
    );
    assert!(line.contains("fix: "), "{line}");
    assert!(
        !out.contains("guest:guest") && !err.contains("guest:guest"),
        "{out}{err}"
    );
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [(format!("/api/queues/%2F/{}", ns.names.dead), true)]
    );
}

/// Runs `kickq check` against a stand-in management API answering the dead
/// queue with `body` (else the capping policy of [`fake_management`]), and
/// returns its `dead policy` line, its stdout and stderr, and what the
/// stand-in was asked. A warning never fails the check.
async fn dead_policy_line(
    ns: &Ns,
    body: Option<serde_json::Value>,
) -> (
    String,
    String,
    String,
    std::sync::Arc<std::sync::Mutex<Vec<(String, bool)>>>,
) {
    let b = Broker::connect().await;
    b.declare(&ns.names).await;
    let (management, seen) = match body {
        Some(body) => fake_management_with(&ns.names.dead, body).await,
        None => fake_management(&ns.names.dead).await,
    };
    let m = api().await;
    let url = m.base_url();
    let mut e = env(&url, SECRET, "");
    e.push(("KICKQ_MANAGEMENT_URL", &management));
    let o = kickq(ns, &["check"], &e, None).await;
    let (out, err) = text(&o);
    assert!(o.status.success(), "a warning does not fail the check: {out}{err}");
    let line = out
        .lines()
        .find(|l| l.contains(&format!("dead policy {}:", ns.names.dead)))
        .unwrap_or_else(|| panic!("no dead policy line: {out}"))
        .to_owned();
    (line, out, err, seen)
}

/// RabbitMQ before 4.2.5 with metrics collection disabled sends a queue's
/// document without `policy` or `effective_policy_definition`: that is no
/// evidence that no policy applies, so the line is a warning, never ok.
#[tokio::test]
async fn a_queue_document_without_policy_fields_is_unknown_not_ok() {
    let ns = Ns::new("check-nopolicy");
    let body = serde_json::json!({"name": ns.names.dead, "vhost": "/", "type": "quorum"});
    let (line, ..) = dead_policy_line(&ns, Some(body)).await;
    assert!(
        line.starts_with(&format!(
            "warn  dead policy {}: unknown: the management API reports no policy",
            ns.names.dead
        )),
        "{line}"
    );
    assert!(line.contains("rabbitmqctl list_policies"), "{line}");
}
