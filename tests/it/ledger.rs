//! The audit ledger end to end: a worker with `DATABASE_URL` records every job, call and outcome in a fresh
//! PostgreSQL database; a retry of an already-kicked job skips those users; `kickq history` reads it back;
//! `kickq ledger prune` asks for `--yes`, counts in a dry run and reports in JSON.

use crate::common;

use common::*;
use kickq::secret::Secret;
use kickq::testkit::headers;
use kickq::testkit::publish::persistent_json;
use lapin::types::{AMQPValue, FieldTable};
use std::time::Duration;

async fn count(pool: &sqlx::PgPool, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_is_fully_recorded_and_history_reads_it_back() {
    let db = TestDb::new().await;
    let ns = Ns::new("ledger");
    let mock = mock(1000).await;
    mock.set_faults(vec![kickq::mock_zego::parse_fault("room=bad-*,code=2").unwrap()]);
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    for r in 0..10 {
        for u in 0..5 {
            bodies.push(job(&format!("room-{r}"), &[&format!("u{u}")], Some("spam")));
        }
    }
    bodies.push(job("bad-1", &["x1", "x2"], None));
    broker.publish_many(&ns.names.requests, &bodies).await;
    let mut cfg = worker_config(&ns, &mock.base_url(), 1000);
    cfg.database_url = Some(Secret::new(db.url.clone()));
    let worker = spawn_worker(cfg).await;
    wait_for(
        Duration::from_secs(30),
        "all kicked and the bad room dead-lettered",
        || async { mock.kicked().len() == 50 && broker.depth(&ns.names.dead).await == 1 },
    )
    .await;
    wait_for(Duration::from_secs(10), "drained", || async {
        broker.depth(&ns.names.requests).await == 0
    })
    .await;
    let summary = worker.stop().await;
    assert_eq!(summary.tally.acked, 51);

    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    assert_eq!(count(&pool, "select count(*) from job_receipts").await, 51);
    assert_eq!(
        count(&pool, "select count(*) from user_outcomes where outcome = 'kicked'").await,
        50
    );
    assert_eq!(
        count(
            &pool,
            "select count(*) from user_outcomes where outcome = 'dead_lettered'"
        )
        .await,
        2
    );
    assert_eq!(
        count(
            &pool,
            "select count(*) from user_outcomes where outcome = 'kicked' and (request_id is null or request_id = '')"
        )
        .await,
        0,
        "every kick carries the API's RequestId"
    );
    let calls = count(&pool, "select count(*) from api_calls").await;
    assert_eq!(calls as u64, mock.counters().calls, "one row per API call");
    pool.close().await;

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kickq"))
        .args(["history", "--room", "room-3", "--json"])
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 5, "{rows:?}");
    for row in &rows {
        assert_eq!(row["outcome"], "kicked");
        assert_eq!(row["room_id"], "room-3");
        assert_eq!(row["reason"], "spam");
        assert!(row["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    }
    let table = std::process::Command::new(env!("CARGO_BIN_EXE_kickq"))
        .args(["history", "--room", "bad-1", "--user", "x1"])
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("dead_lettered") && text.contains("x1") && !text.contains("x2"),
        "{text}"
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_of_a_kicked_job_skips_the_users_already_kicked() {
    let db = TestDb::new().await;
    let ns = Ns::new("skip");
    let mock = mock(1000).await;
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let first = br#"{"room_id":"r","user_ids":["a","b"],"job_id":"job-1"}"#;
    broker.publish_raw(&ns.names.requests, first).await;
    let mut cfg = worker_config(&ns, &mock.base_url(), 1000);
    cfg.database_url = Some(Secret::new(db.url.clone()));
    let worker = spawn_worker(cfg).await;
    wait_for(Duration::from_secs(20), "a and b kicked", || async {
        mock.kicked().len() == 2
    })
    .await;
    // The same job comes back as a retry (attempts > 0) carrying a, b and c.
    let mut h = FieldTable::default();
    h.insert(headers::ATTEMPTS.into(), AMQPValue::LongLongInt(1));
    let again = br#"{"room_id":"r","user_ids":["a","b","c"],"job_id":"job-1"}"#;
    broker
        .publisher
        .publish(&ns.names.requests, again, persistent_json(Some("job-1"), h))
        .await
        .unwrap();
    wait_for(Duration::from_secs(20), "c kicked", || async {
        mock.kicked().len() == 3
    })
    .await;
    wait_for(Duration::from_secs(10), "drained", || async {
        broker.depth(&ns.names.requests).await == 0
    })
    .await;
    worker.stop().await;
    let called: Vec<String> = mock.calls().into_iter().flat_map(|c| c.user_ids).collect();
    assert_eq!(
        called.iter().filter(|u| *u == "a").count(),
        1,
        "a is not called again: {called:?}"
    );
    assert_eq!(called.iter().filter(|u| *u == "c").count(), 1);
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let skipped: Vec<String> =
        sqlx::query_scalar("select user_id from user_outcomes where outcome = 'skipped' order by user_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(skipped, vec!["a", "b"]);
    pool.close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_that_cannot_work_stops_the_worker_with_one_clear_error() {
    let ns = Ns::new("ledger-bad");
    let mock = mock(1000).await;
    // A database that does not exist: permanent (3D000), not an outage.
    let mut missing = url::Url::parse(&database_url()).unwrap();
    missing.set_path("/kickq_no_such_database");
    let mut cfg = worker_config(&ns, &mock.base_url(), 1000);
    cfg.database_url = Some(Secret::new(missing.to_string()));
    let worker = spawn_worker(cfg).await;
    let err = tokio::time::timeout(Duration::from_secs(10), worker.handle)
        .await
        .expect("a permanent ledger error ends the worker at once, it does not wait")
        .unwrap()
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, kickq::worker::WorkerError::Ledger(_)), "{text}");
    assert!(text.contains("kickq_no_such_database"), "{text}");
    assert!(text.contains("DATABASE_URL"), "names the setting to fix: {text}");

    // A table gone mid-run (a permission or migration problem): the write is
    // refused for good; the worker stops and the delivery stays queued.
    let db = TestDb::new().await;
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let mut cfg = worker_config(&ns, &mock.base_url(), 1000);
    cfg.database_url = Some(Secret::new(db.url.clone()));
    let worker = spawn_worker(cfg).await;
    broker.publish_many(&ns.names.requests, &[job("r", &["a"], None)]).await;
    wait_for(Duration::from_secs(10), "the first kick", || async {
        mock.kicked().len() == 1
    })
    .await;
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    wait_for(Duration::from_secs(10), "its rows", || async {
        count(&pool, "select count(*) from user_outcomes").await == 1
    })
    .await;
    sqlx::query("DROP TABLE user_outcomes").execute(&pool).await.unwrap();
    pool.close().await;
    broker.publish_many(&ns.names.requests, &[job("r", &["b"], None)]).await;
    let err = tokio::time::timeout(Duration::from_secs(10), worker.handle)
        .await
        .expect("a permanent write error ends the worker")
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("user_outcomes"), "{err}");
    wait_for(
        Duration::from_secs(10),
        "the unacked delivery back in the queue",
        || async { broker.depth(&ns.names.requests).await == 1 },
    )
    .await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_job_published_again_kicks_no_one_twice() {
    // A rerun of the same enqueue: fresh deliveries (not redelivered, no
    // attempts) of job ids already done. The job id is the idempotency key.
    let db = TestDb::new().await;
    let ns = Ns::new("rerun");
    let mock = mock(1000).await;
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let jobs: Vec<Vec<u8>> = (0..20)
        .map(|i| {
            format!(
                r#"{{"room_id":"r{}","user_ids":["a{i}","b{i}"],"job_id":"sweep-{i}"}}"#,
                i % 4
            )
            .into_bytes()
        })
        .collect();
    broker.publish_many(&ns.names.requests, &jobs).await;
    let mut cfg = worker_config(&ns, &mock.base_url(), 1000);
    cfg.database_url = Some(Secret::new(db.url.clone()));
    let worker = spawn_worker(cfg).await;
    wait_for(Duration::from_secs(20), "every user kicked", || async {
        mock.kicked().len() == 40
    })
    .await;
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    wait_for(Duration::from_secs(10), "their rows", || async {
        count(&pool, "select count(*) from user_outcomes where outcome = 'kicked'").await == 40
    })
    .await;
    let calls_before = mock.calls().len();
    broker.publish_many(&ns.names.requests, &jobs).await;
    wait_for(Duration::from_secs(20), "the rerun skipped", || async {
        count(&pool, "select count(*) from user_outcomes where outcome = 'skipped'").await == 40
    })
    .await;
    wait_for(Duration::from_secs(10), "drained", || async {
        broker.depth(&ns.names.requests).await == 0
    })
    .await;
    worker.stop().await;
    assert_eq!(mock.calls().len(), calls_before, "the rerun made no call");
    assert_eq!(mock.kicked().len(), 40, "no one kicked twice");
    pool.close().await;
    db.drop_db().await;
}

/// Runs `kickq ledger prune` on the database with stdin closed (not a terminal).
fn prune(db: &TestDb, args: &[&str]) -> (std::process::Output, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kickq"))
        .args(["ledger", "prune"])
        .args(args)
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

/// Runs `kickq ledger prune` on a pseudo-terminal (util-linux `script`),
/// typing `input`: the only way to reach its prompt. Returns the terminal's text.
fn prune_on_a_terminal(db: &TestDb, args: &str, input: &[u8]) -> (std::process::ExitStatus, String) {
    use std::io::Write;
    let command = format!("{} ledger prune {args}", env!("CARGO_BIN_EXE_kickq"));
    let mut child = std::process::Command::new("script")
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("util-linux script runs");
    // Stdin stays open until the command is done: script ends the session at its EOF.
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}

async fn rows(pool: &sqlx::PgPool) -> [i64; 3] {
    [
        count(pool, "select count(*) from job_receipts").await,
        count(pool, "select count(*) from api_calls").await,
        count(pool, "select count(*) from user_outcomes").await,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_asks_for_yes_counts_in_a_dry_run_and_reports_json() {
    let db = TestDb::migrated().await;
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    for (days, n) in [(200, 2), (10, 1)] {
        for i in 0..n {
            sqlx::query(
                "insert into job_receipts (job_id, app_id, room_id, user_ids, attempts, redelivered, received_at) \
                 values ($1, 1, 'r', '{a}', 0, false, now() - make_interval(days => $2))",
            )
            .bind(format!("j{days}-{i}"))
            .bind(days)
            .execute(&pool)
            .await
            .unwrap();
        }
    }
    sqlx::query(
        "insert into api_calls (app_id, room_id, user_ids, attempt, latency, started_at) \
         values (1, 'r', '{a}', 0, '1 ms', now() - interval '200 days')",
    )
    .execute(&pool)
    .await
    .unwrap();
    for (user, days) in [("a", 200), ("b", 200), ("c", 200), ("d", 10)] {
        sqlx::query(
            "insert into user_outcomes (job_id, app_id, room_id, user_id, outcome, at) \
             values ('j', 1, 'r', $1, 'kicked', now() - make_interval(days => $2))",
        )
        .bind(user)
        .bind(days)
        .execute(&pool)
        .await
        .unwrap();
    }
    let before = [3, 1, 4];
    assert_eq!(rows(&pool).await, before);

    // Without --yes, off a terminal: one line, nothing deleted.
    for args in [&["--older-than", "90d"][..], &["--older-than", "90d", "--json"]] {
        let (out, stdout, stderr) = prune(&db, args);
        assert!(!out.status.success(), "{args:?}: {stdout}{stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(lines[0].contains("--yes") && lines[0].contains("--dry-run"), "{stderr}");
        assert!(stdout.is_empty(), "{stdout}");
        assert_eq!(rows(&pool).await, before, "{args:?}");
    }

    // On a terminal it counts the rows and asks; anything but y deletes nothing.
    let (status, screen) = prune_on_a_terminal(&db, "--older-than 90d", b"n\n");
    assert!(!status.success(), "{screen}");
    assert!(
        screen.contains("delete 6 row(s) older than ")
            && screen.contains("from the audit ledger (2 job_receipts, 1 api_calls, 3 user_outcomes)? [y/N]"),
        "{screen}"
    );
    assert!(screen.contains("not confirmed; nothing deleted"), "{screen}");
    assert_eq!(rows(&pool).await, before);

    let (out, stdout, stderr) = prune(&db, &["--older-than", "90d", "--dry-run"]);
    assert!(out.status.success(), "{stderr}");
    for line in [
        "would remove 2 rows from job_receipts",
        "would remove 1 rows from api_calls",
        "would remove 3 rows from user_outcomes",
        "nothing deleted",
    ] {
        assert!(stdout.contains(line), "{line}: {stdout}");
    }
    assert_eq!(rows(&pool).await, before, "a dry run deletes nothing");

    let (out, stdout, stderr) = prune(&db, &["--older-than", "90d", "--dry-run", "--json"]);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let cutoff = chrono::DateTime::parse_from_rfc3339(v["cutoff"].as_str().unwrap()).unwrap();
    let age = chrono::Utc::now().signed_duration_since(cutoff);
    assert!((age - chrono::Duration::days(90)).num_seconds().abs() < 60, "{v}");
    assert_eq!(
        v,
        serde_json::json!({
            "older_than_s": 90 * 86400,
            "cutoff": v["cutoff"],
            "job_receipts": 2,
            "api_calls": 1,
            "user_outcomes": 3,
            "dry_run": true,
            "batches": 0,
            "interrupted": false,
        })
    );
    assert_eq!(rows(&pool).await, before);

    let (out, stdout, stderr) = prune(&db, &["--older-than", "90d", "--yes", "--json"]);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (&v["job_receipts"], &v["api_calls"], &v["user_outcomes"], &v["dry_run"]),
        (&2.into(), &1.into(), &3.into(), &false.into()),
        "{v}"
    );
    assert_eq!(rows(&pool).await, [1, 0, 1]);

    let (out, stdout, stderr) = prune(&db, &["--older-than", "90d", "--yes"]);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("removed 0 rows from job_receipts"), "{stdout}");
    assert_eq!(rows(&pool).await, [1, 0, 1]);
    pool.close().await;
    db.drop_db().await;
}

/// A plain run of the same file again is a new run: it kicks again (a
/// daily ban list re-kicks a user who rejoined). A producer that wants the
/// same file never to kick twice names its ids (`--job-id-prefix`): then a
/// second run, even grouped otherwise, is skipped, since the ids name the
/// rooms, not the messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_run_of_a_file_kicks_again_and_a_named_one_does_not() {
    let db = TestDb::new().await;
    let ns = Ns::new("rerun-file");
    let mock = mock(1000).await;
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let mut cfg = worker_config(&ns, &mock.base_url(), 1000);
    cfg.database_url = Some(Secret::new(db.url.clone()));
    let worker = spawn_worker(cfg).await;
    let mut csv = String::from("room_id,user_id\n");
    for i in 0..30 {
        csv.push_str(&format!("room-{},u{i}\n", i % 3));
    }
    let path = std::env::temp_dir().join(format!("{}-sweep.csv", ns.name()));
    std::fs::write(&path, &csv).unwrap();
    let file = path.to_str().unwrap();
    let ckpt_path = std::env::temp_dir().join(format!("{}-sweep.ckpt", ns.name()));
    let ckpt = ckpt_path.to_str().unwrap();
    let run = |size: &'static str, prefix: Option<&'static str>| {
        let ns = &ns;
        async move {
            let mut args = vec!["enqueue", "--file", file, "--group-size", size, "--checkpoint", ckpt];
            if let Some(p) = prefix {
                args.extend(["--job-id-prefix", p]);
            }
            let out = kickq(ns, &args, &[], None).await;
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
    };
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let kicked_rows = |n: i64| {
        let pool = &pool;
        async move {
            wait_for(Duration::from_secs(20), "the run's kicks", || async {
                // The worker may not have made its tables yet: that is no row.
                sqlx::query_scalar::<_, i64>("select count(*) from user_outcomes where outcome = 'kicked'")
                    .fetch_one(pool)
                    .await
                    .unwrap_or(0)
                    == n
            })
            .await;
        }
    };
    run("4", None).await;
    kicked_rows(30).await;
    run("7", None).await;
    kicked_rows(60).await;
    assert_eq!(mock.kicked().len(), 60, "the new run kicked every user again");

    run("4", Some("bans-2026-12-07")).await;
    kicked_rows(90).await;
    let calls = mock.calls().len();
    run("7", Some("bans-2026-12-07")).await;
    wait_for(Duration::from_secs(20), "the named rerun skipped", || async {
        count(&pool, "select count(*) from user_outcomes where outcome = 'skipped'").await == 30
    })
    .await;
    worker.stop().await;
    assert_eq!(mock.calls().len(), calls, "the named rerun made no call");
    assert_eq!(mock.kicked().len(), 90, "no one kicked twice under one prefix");
    let _ = std::fs::remove_file(&ckpt_path);
    let _ = std::fs::remove_file(&path);
    pool.close().await;
    db.drop_db().await;
}

/// The job id is the idempotency key within `KICKQ_DEDUPE_WINDOW` only: the
/// same job re-sent after the window kicks again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_id_dedupes_only_within_the_window() {
    let db = TestDb::new().await;
    let ns = Ns::new("dedupe-window");
    let mock = mock(1000).await;
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let job = br#"{"room_id":"r","user_ids":["a","b"],"job_id":"daily-bans"}"#.to_vec();
    let mut cfg = worker_config(&ns, &mock.base_url(), 1000);
    cfg.database_url = Some(Secret::new(db.url.clone()));
    // Long enough that the second delivery is looked up within it on a
    // loaded machine; the third comes after it.
    cfg.dedupe_window = Duration::from_secs(10);
    let worker = spawn_worker(cfg).await;
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let outcomes = |outcome: &'static str, n: i64| {
        let pool = &pool;
        async move {
            let sql = format!("select count(*) from user_outcomes where outcome = '{outcome}'");
            wait_for(Duration::from_secs(20), outcome, || async {
                count(pool, &sql).await == n
            })
            .await;
        }
    };
    broker
        .publish_many(&ns.names.requests, std::slice::from_ref(&job))
        .await;
    wait_for(Duration::from_secs(20), "the kicks", || async {
        mock.kicked().len() == 2
    })
    .await;
    outcomes("kicked", 2).await;
    // Within the window: skipped.
    broker
        .publish_many(&ns.names.requests, std::slice::from_ref(&job))
        .await;
    outcomes("skipped", 2).await;
    assert_eq!(mock.kicked().len(), 2);
    // After it: kicked again.
    tokio::time::sleep(Duration::from_secs(11)).await;
    broker
        .publish_many(&ns.names.requests, std::slice::from_ref(&job))
        .await;
    outcomes("kicked", 4).await;
    worker.stop().await;
    assert_eq!(mock.kicked().len(), 4, "the job id no longer dedupes after the window");
    pool.close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4_kb_request_id_is_stored_as_a_128_byte_prefix_and_the_job_is_acked() {
    let db = TestDb::new().await;
    let ns = Ns::new("long-rid");
    let mock = mock(1000).await;
    mock.set_faults(vec![
        kickq::mock_zego::parse_fault("room=long-*,request_id_bytes=4096").unwrap()
    ]);
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    broker
        .publish_many(&ns.names.requests, &[job("long-1", &["a", "b"], None)])
        .await;
    let mut cfg = worker_config(&ns, &mock.base_url(), 1000);
    cfg.database_url = Some(Secret::new(db.url.clone()));
    let worker = spawn_worker(cfg).await;
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    wait_for(
        Duration::from_secs(30),
        "the call's rows, or the worker's end",
        || async {
            // The worker creates the tables at start: until then the count fails.
            let rows = sqlx::query_scalar::<_, i64>("select count(*) from user_outcomes")
                .fetch_one(&pool)
                .await
                .unwrap_or(0);
            worker.handle.is_finished() || rows == 2
        },
    )
    .await;
    assert!(
        !worker.handle.is_finished(),
        "the worker stopped: {:?}",
        worker.handle.await
    );
    wait_for(Duration::from_secs(10), "drained", || async {
        broker.depth(&ns.names.requests).await == 0
    })
    .await;
    let summary = worker.stop().await;
    assert_eq!(summary.tally.acked, 1, "the job is acked");
    assert_eq!(mock.kicked().len(), 2);
    assert_eq!(broker.depth(&ns.names.dead).await, 0);

    let call: (String, i64) = sqlx::query_as("select request_id, code from api_calls")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(call.0.len(), 128, "{}", call.0);
    assert!(
        call.0.starts_with("mock-"),
        "the prefix of what the API sent: {}",
        call.0
    );
    assert_eq!(call.1, 0);
    let outcomes: Vec<(String, String)> = sqlx::query_as("select outcome, request_id from user_outcomes")
        .fetch_all(&pool)
        .await
        .unwrap();
    for (outcome, request_id) in &outcomes {
        assert_eq!(outcome, "kicked");
        assert_eq!(request_id, &call.0, "outcomes carry the same stored RequestId");
    }
    pool.close().await;
    db.drop_db().await;
}

#[cfg(feature = "test-hooks")] // stops the command part-way through a test hook
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_goes_in_batches_and_a_stop_between_them_reports_what_went() {
    let db = TestDb::migrated().await;
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    sqlx::query(
        "insert into job_receipts (job_id, app_id, room_id, user_ids, attempts, redelivered, received_at) \
         select 'j' || i, 1, 'r', '{a}', 0, false, now() - make_interval(days => case when i = 0 then 1 else 200 end) \
         from generate_series(0, 7) as i",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "insert into user_outcomes (job_id, app_id, room_id, user_id, outcome, at) \
         select 'j', 1, 'r', 'u' || i, 'kicked', now() - make_interval(days => case when i = 0 then 1 else 200 end) \
         from generate_series(0, 5) as i",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(rows(&pool).await, [8, 0, 6]);
    let run = |stop_after: Option<&str>, extra: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kickq"));
        cmd.args(["ledger", "prune", "--older-than", "90d", "--yes", "--batch-rows", "2"])
            .args(extra)
            .env("DATABASE_URL", &db.url)
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null());
        if let Some(k) = stop_after {
            cmd.env("KICKQ_PRUNE_STOP_AFTER", k);
        }
        let out = cmd.output().unwrap();
        let (stdout, stderr) = text(&out);
        (out.status, stdout, stderr)
    };

    // Stopped after two batches, as Ctrl-C between them would: 4 receipts
    // gone and committed, reported, exit 130.
    let (status, stdout, stderr) = run(Some("2"), &["--json"]);
    assert_eq!(status.code(), Some(130), "{stdout}{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (
            &v["job_receipts"],
            &v["user_outcomes"],
            &v["batches"],
            &v["interrupted"]
        ),
        (&4.into(), &0.into(), &2.into(), &true.into()),
        "{v}"
    );
    assert!(stderr.contains("interrupted after 2 batch(es)"), "{stderr}");
    assert_eq!(rows(&pool).await, [4, 0, 6]);

    // A rerun finishes: 3 receipts in 2 batches, 5 outcomes in 3.
    let (status, stdout, stderr) = run(None, &[]);
    assert!(status.success(), "{stdout}{stderr}");
    for line in [
        "removed 3 rows from job_receipts",
        "removed 5 rows from user_outcomes",
        "in 5 batch(es) of at most 2 rows; done",
    ] {
        assert!(stdout.contains(line), "{line}: {stdout}");
    }
    assert_eq!(rows(&pool).await, [1, 0, 1], "only the recent rows are left");
    pool.close().await;
    db.drop_db().await;
}
