//! What an operator sees, through the real binary: errors that name the host and the setting once, a worker
//! whose log says what it does (start line, dead letters, progress) and whose clean stop logs no ERROR, and
//! ledger commands that say how to fix an unmigrated or unreachable database.

use crate::common;

use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn kickq_bin(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kickq"));
    cmd.args(args).env_remove("RUST_LOG").env_remove("DATABASE_URL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run kickq");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn broker_errors_name_the_host_and_the_setting_once() {
    let (code, _, err) = kickq_bin(
        &["enqueue", "--room", "r", "--user", "a"],
        &[("KICKQ_AMQP_URL", "amqp://guest:hunter2@127.0.0.1:1/%2f")],
    );
    assert_eq!(code, 1, "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(
        lines[0].contains("127.0.0.1:1") && lines[0].contains("KICKQ_AMQP_URL"),
        "{err}"
    );
    assert_eq!(lines[0].matches("refused").count(), 1, "the cause once: {err}");
    assert!(!err.contains("hunter2"), "{err}");

    let mut url = url::Url::parse(&amqp_url()).unwrap();
    url.set_password(Some("certainly-not-the-password")).unwrap();
    let (code, _, err) = kickq_bin(&["dlq", "list"], &[("KICKQ_AMQP_URL", url.as_str())]);
    assert_eq!(code, 1, "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(
        lines[0].contains("refused the user name or password of KICKQ_AMQP_URL"),
        "{err}"
    );
    assert!(!err.contains("certainly-not"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_a_wrong_password_says_so_each_time_and_still_stops_cleanly() {
    let ns = Ns::new("op-auth");
    let mock = mock(50).await;
    let mut url = url::Url::parse(&amqp_url()).unwrap();
    url.set_password(Some("certainly-not-the-password")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_kickq"))
        .arg("run")
        .env("KICKQ_AMQP_URL", url.as_str())
        .env("ZEGO_APP_ID", APP_ID.to_string())
        .env("ZEGO_SERVER_SECRET", SECRET)
        .env("ZEGO_API_URL", mock.base_url())
        .env("KICKQ_NAMESPACE", ns.name())
        .env("KICKQ_METRICS_ADDR", "0")
        .env("KICKQ_LOG_FORMAT", "json")
        .env_remove("RUST_LOG")
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "a stop is a clean exit: {err}");
    let refusals: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("cannot open a broker session") && l.contains("\"level\":\"ERROR\""))
        .collect();
    assert!(!refusals.is_empty(), "an ERROR line names the problem: {err}");
    assert!(
        refusals
            .iter()
            .all(|l| l.contains("refused the user name or password of KICKQ_AMQP_URL")),
        "{err}"
    );
    assert!(
        !err.contains("broker session lost"),
        "a session that never opened was not lost: {err}"
    );
    assert!(!err.contains("certainly-not"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_says_what_the_worker_did_and_a_clean_stop_logs_no_error() {
    let ns = Ns::new("op-log");
    let mock = mock(50).await;
    mock.set_faults(vec![kickq::mock_zego::parse_fault("room=bad-*,code=2").unwrap()]);
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let delays: Vec<String> = TEST_RETRY_DELAYS
        .iter()
        .map(|d| format!("{}ms", d.as_millis()))
        .collect();
    let child = Command::new(env!("CARGO_BIN_EXE_kickq"))
        .arg("run")
        .env("KICKQ_AMQP_URL", amqp_url())
        .env("ZEGO_APP_ID", APP_ID.to_string())
        .env("ZEGO_SERVER_SECRET", SECRET)
        .env("ZEGO_API_URL", mock.base_url())
        .env("KICKQ_NAMESPACE", ns.name())
        .env("KICKQ_RETRY_DELAYS", delays.join(","))
        .env("KICKQ_METRICS_ADDR", "0")
        .env("KICKQ_LOG_FORMAT", "json")
        // An explicit filter: the default one would hide lapin entirely; this
        // checks that a clean stop needs no hiding of real errors.
        .env("RUST_LOG", "info")
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    broker
        .publish_many(
            &ns.names.requests,
            &[
                job("good-1", &["a", "b"], None),
                br#"{"room_id":"bad-1","user_ids":["x"],"job_id":"job-bad"}"#.to_vec(),
                br#"{"room_id":"late-1","user_ids":["y","z"],"job_id":"job-late","not_after":"2020-01-01T00:00:00Z"}"#
                    .to_vec(),
                br#"{"room_id":"","user_ids":["w"],"job_id":"job-invalid"}"#.to_vec(),
            ],
        )
        .await;
    wait_for(
        Duration::from_secs(20),
        "the good users kicked and the others dead",
        || async { mock.kicked().len() == 2 && broker.depth(&ns.names.dead).await == 3 },
    )
    .await;
    // One progress line comes every 10 s while there was work.
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(11)).await;
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    let line = |needle: &str| err.lines().find(|l| l.contains(needle)).map(str::to_owned);
    let start = line("kickq worker starting").expect("a start line");
    assert!(start.contains("\"apps\":1"), "{start}");
    let app = line("serving app").expect("a line per app served");
    assert!(
        app.contains(&mock.base_url()) && app.contains("not the production default") && app.contains("1234567890"),
        "{app}"
    );
    assert!(line("this worker is active").is_some(), "the role: {err}");
    let dead = line("\"message\":\"dead-lettered\"").expect("one WARN line per dead letter");
    for part in [
        "\"level\":\"WARN\"",
        "bad-1",
        "job-bad",
        "\"error\":\"permanent\"",
        "\"code\":2",
        "x",
    ] {
        assert!(dead.contains(part), "{part} in {dead}");
    }
    // Its users are a JSON array, not a string holding one.
    let dead_event: serde_json::Value = serde_json::from_str(&dead).unwrap();
    assert_eq!(dead_event["users"], serde_json::json!(["x"]), "{dead}");
    // An expired job says so, with its room, users and deadline; an
    // unusable one says why in words, never in Rust's debug text.
    let late = line("expired job").expect("a line for the expired job");
    for part in ["job-late", "late-1", "2020-01-01T00:00:00.000Z"] {
        assert!(late.contains(part), "{part} in {late}");
    }
    let late_event: serde_json::Value = serde_json::from_str(&late).unwrap();
    assert_eq!(late_event["users"], serde_json::json!(["y", "z"]), "{late}");
    let invalid = line("unusable message").expect("a line for the invalid job");
    assert!(invalid.contains("\"reason\":\"invalid job: room_id"), "{invalid}");
    assert!(
        !err.contains("Expired(") && !err.contains("Validation("),
        "debug text in the log: {err}"
    );
    let progress = line("progress over the last 10s").expect("a progress line");
    for part in [
        "\"kicked\":2",
        "\"dead_lettered\":1",
        "\"unusable_messages\":2",
        "\"limit_per_s\":50",
        "\"calls\":2",
    ] {
        assert!(progress.contains(part), "{part} in {progress}");
    }
    let errors: Vec<&str> = err.lines().filter(|l| l.contains("\"level\":\"ERROR\"")).collect();
    assert!(errors.is_empty(), "a clean stop logs no ERROR: {errors:?}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_commands_say_how_to_fix_the_database() {
    let db = TestDb::new().await;
    let (code, _, err) = kickq_bin(&["history", "--room", "r"], &[("DATABASE_URL", db.url.as_str())]);
    assert_eq!(code, 1);
    assert!(
        err.contains("is not migrated") && err.contains("run `kickq migrate`"),
        "{err}"
    );
    let (code, _, err) = kickq_bin(&["migrate"], &[("DATABASE_URL", db.url.as_str())]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = kickq_bin(&["migrate"], &[("DATABASE_URL", db.url.as_str())]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("_sqlx_migrations"), "sqlx's notice is not shown: {err}");
    let (code, out, err) = kickq_bin(
        &["history", "--room", "r", "--json"],
        &[("DATABASE_URL", db.url.as_str())],
    );
    assert_eq!((code, out.trim()), (0, "[]"), "{err}");
    let (code, _, err) = kickq_bin(
        &["history", "--room", "r"],
        &[("DATABASE_URL", "postgres://u:hunter2@127.0.0.1:1/nowhere")],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot reach PostgreSQL at") && err.contains("127.0.0.1:1"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    db.drop_db().await;
}
