//! The ledger's own tests against a real PostgreSQL (an integration test: `cargo test --lib` needs no database): `#[sqlx::test]` reads `DATABASE_URL` and gives each test a fresh database with the migrations applied.

use chrono::{DateTime, TimeZone, Utc};
use kickq::testkit::ledger::*;
use sqlx::postgres::types::PgInterval;
use sqlx::postgres::PgPool;
use sqlx::postgres::{PgPoolOptions, PgRow};
use sqlx::Row;
use std::borrow::Cow;
use std::collections::HashSet;
use std::ops::ControlFlow;
use std::time::Duration;

/// A fixed instant plus `secs` seconds and `micros` microseconds: whole
/// microseconds, so rows compare equal after a round trip.
fn t(secs: i64, micros: u32) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + secs, micros * 1000).unwrap()
}

/// A dedupe window that reaches back to the rows of [`t`].
const YEARS: std::time::Duration = std::time::Duration::from_secs(20 * 365 * 86_400);

/// A done user counts only within the dedupe window (by the database's
/// clock): a job id re-sent after it kicks again.
#[sqlx::test(migrations = "./migrations")]
async fn done_users_count_only_within_the_dedupe_window(pool: PgPool) {
    let now = Utc::now();
    let ago = |h: i64| now - chrono::Duration::hours(h);
    Ledger::from_pool(pool.clone())
        .write(&LedgerBatch {
            outcomes: vec![
                outcome("j", "r", "hour-ago", UserOutcome::Kicked, ago(1)),
                outcome("j", "r", "yesterday", UserOutcome::Kicked, ago(25)),
                outcome("j", "r", "last-week", UserOutcome::NothingToDo, ago(24 * 7)),
            ],
            ..Default::default()
        })
        .await
        .unwrap();
    let ask: Vec<String> = ["hour-ago", "yesterday", "last-week"].map(String::from).to_vec();
    let hours = |h: u64| std::time::Duration::from_secs(h * 3600);
    // (window, users still done)
    let table: [(Option<std::time::Duration>, &[&str]); 4] = [
        (None, &["hour-ago"]),
        (Some(hours(2)), &["hour-ago"]),
        (Some(hours(48)), &["hour-ago", "yesterday"]),
        (Some(hours(24 * 8)), &["hour-ago", "yesterday", "last-week"]),
    ];
    for (window, want) in table {
        let ledger = match window {
            None => Ledger::from_pool(pool.clone()),
            Some(w) => Ledger::from_pool(pool.clone()).with_dedupe_window(w),
        };
        let want: HashSet<String> = want.iter().map(|s| s.to_string()).collect();
        assert_eq!(ledger.kicked_users("j", "r", &ask).await.unwrap(), want, "{window:?}");
        assert_eq!(
            ledger.done_users(&[("j", "r", &ask)]).await.unwrap()[0],
            want,
            "{window:?}"
        );
    }
}

fn outcome(job: &str, room: &str, user: &str, outcome: UserOutcome, at: DateTime<Utc>) -> OutcomeRow {
    OutcomeRow {
        job_id: job.into(),
        app_id: u32::MAX,
        room_id: room.into(),
        user_id: user.into(),
        reason: Some("spam".into()),
        outcome,
        code: Some(0),
        request_id: Some(format!("req-{job}-{user}")),
        detail: None,
        at,
    }
}

fn receipt(job: &str, room: &str, users: &[&str], at: DateTime<Utc>) -> ReceiptRow {
    ReceiptRow {
        job_id: job.into(),
        app_id: u32::MAX,
        room_id: room.into(),
        user_ids: users.iter().map(|u| u.to_string()).collect(),
        reason: None,
        attempts: 1,
        redelivered: false,
        received_at: at,
    }
}

fn call(room: &str, users: &[&str], at: DateTime<Utc>) -> CallRow {
    CallRow {
        app_id: 1234567890,
        room_id: room.into(),
        user_ids: users.iter().map(|u| u.to_string()).collect(),
        reason: Some("spam".into()),
        attempt: 1,
        code: Some(0),
        message: Some("success".into()),
        request_id: Some("req-call".into()),
        http_status: Some(200),
        transport_error: None,
        latency: Duration::from_nanos(12_345_678),
        started_at: at,
    }
}

fn query(room: &str) -> HistoryQuery {
    HistoryQuery {
        room_id: Some(room.into()),
        user_id: None,
        job_id: None,
        since: None,
        limit: 50,
    }
}

async fn count(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A pool to a port nobody listens on, failing fast.
fn dead_ledger() -> Ledger {
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(300))
        .connect_lazy("postgres://postgres@127.0.0.1:1/postgres")
        .unwrap();
    Ledger::from_pool(pool)
}

#[test]
fn outcome_names_round_trip() {
    for o in UserOutcome::ALL {
        assert_eq!(o.as_str().parse::<UserOutcome>().unwrap(), o);
        assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
    }
    assert_eq!(UserOutcome::NothingToDo.as_str(), "nothing_to_do");
    assert_eq!("Kicked".parse::<UserOutcome>(), Err(UnknownOutcome("Kicked".into())));
}

#[test]
fn batch_len_and_append() {
    let mut a = LedgerBatch::default();
    assert!(a.is_empty());
    a.outcomes.push(outcome("j", "r", "u", UserOutcome::Kicked, t(0, 0)));
    let b = LedgerBatch {
        receipts: vec![receipt("j", "r", &["u"], t(0, 0))],
        calls: vec![call("r", &["u"], t(0, 0)), call("r", &["v"], t(1, 0))],
        outcomes: vec![outcome("j", "r", "v", UserOutcome::Skipped, t(1, 0))],
    };
    a.append(b);
    assert_eq!(a.len(), 5);
    assert!(!a.is_empty());
    assert_eq!(a.outcomes[1].user_id, "v", "appended rows go after existing ones");
    assert_eq!(a.calls[1].user_ids, vec!["v"]);
}

#[test]
fn text_and_interval_conversions() {
    assert!(matches!(pg_text("plain"), Cow::Borrowed("plain")));
    assert_eq!(pg_text("a\0b"), "a\u{FFFD}b");
    assert_eq!(pg_interval(Duration::from_nanos(1_999)).microseconds, 1);
    assert_eq!(pg_interval(Duration::MAX).microseconds, i64::MAX);
}

#[test]
fn sqlstates_classify() {
    for code in ["08006", "08001", "53300", "53100", "57P01", "57P03", "25006"] {
        assert!(sqlstate_unavailable(code), "{code}");
    }
    // Permanent: retrying the same statement fails the same way. 54000
    // (program_limit_exceeded) is what an over-long index entry raises.
    for code in ["42P01", "23505", "23514", "22021", "22001", "54000", "40P01", "57014"] {
        assert!(!sqlstate_unavailable(code), "{code}");
    }
}

#[sqlx::test(migrations = "./migrations")]
async fn batch_round_trip_and_history_filters(pool: PgPool) {
    let ledger = Ledger::from_pool(pool.clone());
    let batch = LedgerBatch {
        receipts: vec![
            receipt("j1", "room", &["a", "b", "c"], t(0, 0)),
            receipt("j2", "room", &["a"], t(50, 0)),
        ],
        calls: vec![call("room", &["a", "b", "c"], t(1, 0))],
        outcomes: vec![
            outcome("j1", "room", "a", UserOutcome::Kicked, t(2, 1)),
            outcome("j1", "room", "b", UserOutcome::NothingToDo, t(3, 0)),
            OutcomeRow {
                code: Some(1_000_000_001),
                request_id: Some("req-dead".into()),
                detail: Some("gave up".into()),
                ..outcome("j1", "room", "c", UserOutcome::DeadLettered, t(4, 0))
            },
            outcome("j2", "room", "a", UserOutcome::Kicked, t(60, 0)),
            outcome("j3", "other-room", "a", UserOutcome::Kicked, t(70, 0)),
        ],
    };
    ledger.write(&batch).await.unwrap();
    assert_eq!(count(&pool, "job_receipts").await, 2);
    assert_eq!(count(&pool, "api_calls").await, 1);
    assert_eq!(count(&pool, "user_outcomes").await, 5);

    let (users, app_id, latency, status): (Vec<String>, i64, PgInterval, Option<i32>) =
        sqlx::query_as("SELECT user_ids, app_id, latency, http_status FROM api_calls")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(users, vec!["a", "b", "c"], "user order survives the jsonb trip");
    assert_eq!(app_id, 1234567890);
    assert_eq!(latency.microseconds, 12_345, "truncated, not refused");
    assert_eq!(status, Some(200));
    let (users, app_id): (Vec<String>, i64) =
        sqlx::query_as("SELECT user_ids, app_id FROM job_receipts WHERE job_id = 'j1'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(users, vec!["a", "b", "c"]);
    assert_eq!(app_id, i64::from(u32::MAX), "a uint32 above i32::MAX fits");

    let all = ledger.history(&query("room")).await.unwrap();
    let seen: Vec<(&str, &str)> = all.iter().map(|r| (r.job_id.as_str(), r.user_id.as_str())).collect();
    assert_eq!(
        seen,
        vec![("j2", "a"), ("j1", "c"), ("j1", "b"), ("j1", "a")],
        "newest first, room only"
    );
    assert_eq!(
        all[1],
        HistoryRow {
            at: t(4, 0),
            room_id: "room".into(),
            user_id: "c".into(),
            job_id: "j1".into(),
            outcome: UserOutcome::DeadLettered,
            code: Some(1_000_000_001),
            request_id: Some("req-dead".into()),
            reason: Some("spam".into()),
            detail: Some("gave up".into()),
        }
    );
    assert_eq!(all[3].at, t(2, 1), "microseconds survive");

    let by_user = ledger
        .history(&HistoryQuery {
            user_id: Some("a".into()),
            ..query("room")
        })
        .await
        .unwrap();
    assert_eq!(
        by_user.iter().map(|r| r.job_id.as_str()).collect::<Vec<_>>(),
        vec!["j2", "j1"]
    );
    let by_job = ledger
        .history(&HistoryQuery {
            job_id: Some("j1".into()),
            ..query("room")
        })
        .await
        .unwrap();
    assert_eq!(
        by_job.iter().map(|r| r.user_id.as_str()).collect::<Vec<_>>(),
        vec!["c", "b", "a"]
    );
    let since = ledger
        .history(&HistoryQuery {
            since: Some(t(3, 0)),
            ..query("room")
        })
        .await
        .unwrap();
    assert_eq!(
        since.iter().map(|r| r.user_id.as_str()).collect::<Vec<_>>(),
        vec!["a", "c", "b"],
        "since is inclusive"
    );
    let limited = ledger
        .history(&HistoryQuery {
            limit: 2,
            ..query("room")
        })
        .await
        .unwrap();
    assert_eq!(limited, all[..2].to_vec());
    let combined = HistoryQuery {
        user_id: Some("a".into()),
        job_id: Some("j1".into()),
        since: Some(t(2, 0)),
        ..query("room")
    };
    assert_eq!(ledger.history(&combined).await.unwrap(), vec![all[3].clone()]);
    assert!(ledger
        .history(&HistoryQuery {
            limit: -1,
            ..query("room")
        })
        .await
        .unwrap()
        .is_empty());
    assert!(ledger.history(&query("nowhere")).await.unwrap().is_empty());
    let anywhere = |user: Option<&str>, job: Option<&str>| HistoryQuery {
        room_id: None,
        user_id: user.map(String::from),
        job_id: job.map(String::from),
        ..query("")
    };
    let users = |rows: Vec<HistoryRow>| rows.into_iter().map(|r| (r.job_id, r.user_id)).collect::<Vec<_>>();
    let pair = |j: &str, u: &str| (j.to_owned(), u.to_owned());
    assert_eq!(
        users(ledger.history(&anywhere(Some("a"), None)).await.unwrap()),
        vec![pair("j3", "a"), pair("j2", "a"), pair("j1", "a")],
        "a user in any room"
    );
    assert_eq!(
        users(ledger.history(&anywhere(None, Some("j2"))).await.unwrap()),
        vec![pair("j2", "a")],
        "a job in any room"
    );
    assert!(
        ledger.history(&anywhere(None, None)).await.unwrap().is_empty(),
        "no room, user or job: nothing"
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn every_outcome_passes_the_check_constraint(pool: PgPool) {
    let ledger = Ledger::from_pool(pool);
    let rows: Vec<OutcomeRow> = UserOutcome::ALL
        .iter()
        .enumerate()
        .map(|(i, o)| outcome("j", "r", &format!("u{i}"), *o, t(i as i64, 0)))
        .collect();
    ledger
        .write(&LedgerBatch {
            outcomes: rows,
            ..Default::default()
        })
        .await
        .unwrap();
    let back: Vec<UserOutcome> = ledger
        .history(&query("r"))
        .await
        .unwrap()
        .iter()
        .map(|r| r.outcome)
        .collect();
    let mut expected = UserOutcome::ALL.to_vec();
    expected.reverse();
    assert_eq!(back, expected);
}

#[sqlx::test(migrations = "./migrations")]
async fn same_instant_reads_back_last_written_first(pool: PgPool) {
    let ledger = Ledger::from_pool(pool);
    let rows = ["a", "b", "c", "d"].map(|u| outcome("j", "r", u, UserOutcome::Kicked, t(0, 0)));
    ledger
        .write(&LedgerBatch {
            outcomes: rows.to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    let back = ledger.history(&query("r")).await.unwrap();
    assert_eq!(
        back.iter().map(|r| r.user_id.as_str()).collect::<Vec<_>>(),
        vec!["d", "c", "b", "a"]
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn kicked_users_only_counts_final_outcomes_of_that_job_and_room(pool: PgPool) {
    // The rows are of 2023 (`t`): a window that reaches them.
    let ledger = Ledger::from_pool(pool).with_dedupe_window(YEARS);
    let batch = LedgerBatch {
        outcomes: vec![
            outcome("j1", "r", "kicked", UserOutcome::Kicked, t(0, 0)),
            outcome("j1", "r", "absent", UserOutcome::NothingToDo, t(0, 0)),
            outcome("j1", "r", "dead", UserOutcome::DeadLettered, t(0, 0)),
            outcome("j1", "r", "retry", UserOutcome::RetryScheduled, t(0, 0)),
            outcome("j1", "r", "skipped", UserOutcome::Skipped, t(0, 0)),
            outcome("j1", "r", "halted", UserOutcome::HaltedThenResumed, t(0, 0)),
            outcome("j2", "r", "other-job", UserOutcome::Kicked, t(0, 0)),
            outcome("j1", "other-room", "other-room", UserOutcome::Kicked, t(0, 0)),
            // Retried then kicked: the later kick counts.
            outcome("j1", "r", "late", UserOutcome::RetryScheduled, t(0, 0)),
            outcome("j1", "r", "late", UserOutcome::Kicked, t(1, 0)),
            outcome("j1", "r", "nul\0id", UserOutcome::Kicked, t(1, 0)),
        ],
        ..Default::default()
    };
    ledger.write(&batch).await.unwrap();
    let ask: Vec<String> = [
        "kicked",
        "absent",
        "dead",
        "retry",
        "skipped",
        "halted",
        "other-job",
        "other-room",
        "late",
        "never",
        "nul\0id",
    ]
    .map(String::from)
    .to_vec();
    let done = ledger.kicked_users("j1", "r", &ask).await.unwrap();
    // A kick after a halt is a kick.
    let expected: HashSet<String> = ["kicked", "absent", "halted", "late", "nul\0id"]
        .map(String::from)
        .into();
    assert_eq!(done, expected);
    assert!(ledger.kicked_users("j1", "r", &[]).await.unwrap().is_empty());
    assert!(ledger.kicked_users("j9", "r", &ask).await.unwrap().is_empty());
    // The batch form answers the same, job by job.
    let other: Vec<String> = vec!["other-job".into(), "kicked".into()];
    let none: Vec<String> = Vec::new();
    let batch = ledger
        .done_users(&[
            ("j1", "r", &ask),
            ("j2", "r", &other),
            ("j9", "r", &ask),
            ("j1", "r", &none),
        ])
        .await
        .unwrap();
    assert_eq!(batch[0], expected);
    assert_eq!(batch[1], HashSet::from(["other-job".to_owned()]));
    assert!(batch[2].is_empty() && batch[3].is_empty());
    assert!(ledger.done_users(&[]).await.unwrap().is_empty());
}

#[sqlx::test(migrations = "./migrations")]
async fn lookups_use_their_indexes(pool: PgPool) {
    // Tiny tables make seq scans cheapest; forbid them so the plan shows
    // whether an index *can* serve the exact SQL the ledger sends.
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut *conn)
        .await
        .unwrap();
    let plan = |rows: Vec<PgRow>| {
        rows.iter()
            .map(|r| r.get::<String, _>(0))
            .collect::<Vec<_>>()
            .join("\n")
    };

    let rows = sqlx::query(&format!("EXPLAIN {DONE_USERS_SQL}"))
        .bind("j")
        .bind("r")
        .bind(vec!["a".to_string()])
        .bind(86_400.0_f64)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    let text = plan(rows);
    assert!(text.contains("user_outcomes_done"), "{text}");
    let rows = sqlx::query(&format!("EXPLAIN {DONE_USERS_BATCH_SQL}"))
        .bind(vec!["j".to_string(); 3])
        .bind(vec!["r".to_string(); 3])
        .bind(vec!["a".to_string(), "b".to_string(), "c".to_string()])
        .bind(86_400.0_f64)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    let text = plan(rows);
    assert!(
        text.contains("user_outcomes_done"),
        "the batch lookup probes the index: {text}"
    );

    let by_user = HistoryQuery {
        room_id: None,
        user_id: Some("u".into()),
        ..query("r")
    };
    // (query, the indexes that serve it in order: room+user may take either)
    for (q, indexes) in [
        (query("r"), &["user_outcomes_room_at"][..]),
        (
            HistoryQuery {
                user_id: Some("u".into()),
                ..query("r")
            },
            &["user_outcomes_room_user_at", "user_outcomes_user_at"],
        ),
        (by_user, &["user_outcomes_user_at"]),
    ] {
        let sql = format!("EXPLAIN {}", history_sql(&q).sql());
        let mut explain = sqlx::query(&sql);
        if let Some(r) = &q.room_id {
            explain = explain.bind(r.as_str());
        }
        if let Some(u) = &q.user_id {
            explain = explain.bind(u.as_str());
        }
        let text = plan(explain.bind(q.limit).fetch_all(&mut *conn).await.unwrap());
        assert!(indexes.iter().any(|i| text.contains(i)), "{q:?}: {text}");
        assert!(!text.contains("Sort"), "the index gives the order: {text}");
    }
}

#[sqlx::test(migrations = "./migrations")]
async fn prune_removes_only_old_rows(pool: PgPool) {
    let ledger = Ledger::from_pool(pool.clone());
    let now = Utc::now();
    let old = now - chrono::Duration::days(100);
    let recent = now - chrono::Duration::days(10);
    let batch = LedgerBatch {
        receipts: vec![receipt("old", "r", &["a"], old), receipt("new", "r", &["a"], recent)],
        calls: vec![
            call("r", &["a"], old),
            call("r", &["a"], old),
            call("r", &["a"], recent),
        ],
        outcomes: vec![
            outcome("old", "r", "a", UserOutcome::Kicked, old),
            outcome("old", "r", "b", UserOutcome::Kicked, old),
            outcome("old", "r", "c", UserOutcome::Kicked, old),
            outcome("new", "r", "a", UserOutcome::Kicked, recent),
        ],
    };
    ledger.write(&batch).await.unwrap();

    let days90 = || prune_cutoff(Utc::now(), Duration::from_secs(90 * 86400));
    let old_rows = PruneCounts {
        receipts: 1,
        calls: 2,
        outcomes: 3,
    };
    assert_eq!(ledger.count_prunable(days90()).await.unwrap(), old_rows);
    assert_eq!(
        ledger.count_prunable(days90()).await.unwrap(),
        old_rows,
        "counting deletes nothing"
    );
    assert_eq!(count(&pool, "user_outcomes").await, 4);
    let counts = ledger.prune(days90()).await.unwrap();
    assert_eq!(counts, old_rows);
    let left = ledger.history(&query("r")).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].job_id, "new");
    assert_eq!(count(&pool, "job_receipts").await, 1);
    assert_eq!(count(&pool, "api_calls").await, 1);

    assert_eq!(ledger.prune(days90()).await.unwrap(), PruneCounts::default());
    assert_eq!(ledger.count_prunable(days90()).await.unwrap(), PruneCounts::default());
    assert_eq!(
        ledger.prune(prune_cutoff(Utc::now(), Duration::MAX)).await.unwrap(),
        PruneCounts::default(),
        "absurd ages delete nothing"
    );
    let all = ledger.prune(prune_cutoff(Utc::now(), Duration::ZERO)).await.unwrap();
    assert_eq!(
        all,
        PruneCounts {
            receipts: 1,
            calls: 1,
            outcomes: 1
        }
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn prune_works_in_batches_and_stops_between_them(pool: PgPool) {
    let ledger = Ledger::from_pool(pool.clone());
    let old = |i: i64| t(i, 0);
    let recent = Utc::now() - chrono::Duration::days(1);
    let batch = LedgerBatch {
        receipts: (0..7)
            .map(|i| receipt(&format!("old{i}"), "r", &["a"], old(i)))
            .chain([receipt("new", "r", &["a"], recent)])
            .collect(),
        calls: (0..3)
            .map(|i| call("r", &["a"], old(i)))
            .chain([call("r", &["a"], recent)])
            .collect(),
        outcomes: (0..5)
            .map(|i| outcome(&format!("old{i}"), "r", "a", UserOutcome::Kicked, old(i)))
            .chain([outcome("new", "r", "a", UserOutcome::Kicked, recent)])
            .collect(),
    };
    ledger.write(&batch).await.unwrap();
    let cutoff = prune_cutoff(Utc::now(), Duration::from_secs(30 * 86400));

    // Stopped after the third batch: 3 x 2 receipts, committed and reported.
    let mut seen = Vec::new();
    let stopped = ledger
        .prune_batched(cutoff, 2, |p| {
            seen.push(*p);
            if p.batches == 3 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .await
        .unwrap();
    assert_eq!(
        stopped,
        PruneRun {
            removed: PruneCounts {
                receipts: 6,
                calls: 0,
                outcomes: 0
            },
            batches: 3,
            complete: false
        }
    );
    assert_eq!(seen.len(), 3);
    assert_eq!(count(&pool, "job_receipts").await, 2, "the stop lost nothing");

    // A rerun finishes: 1 receipt, 2+1 calls, 2+2+1 outcomes.
    let mut seen = Vec::new();
    let run = ledger
        .prune_batched(cutoff, 2, |p| {
            seen.push((p.table, p.rows, p.batches));
            ControlFlow::Continue(())
        })
        .await
        .unwrap();
    let want = PruneCounts {
        receipts: 1,
        calls: 3,
        outcomes: 5,
    };
    assert_eq!(
        run,
        PruneRun {
            removed: want,
            batches: 6,
            complete: true
        }
    );
    use PruneTable::*;
    assert_eq!(
        seen,
        [
            (JobReceipts, 1, 1),
            (ApiCalls, 2, 2),
            (ApiCalls, 1, 3),
            (UserOutcomes, 2, 4),
            (UserOutcomes, 2, 5),
            (UserOutcomes, 1, 6)
        ],
        "the callback saw each batch"
    );
    for table in ["job_receipts", "api_calls", "user_outcomes"] {
        assert_eq!(count(&pool, table).await, 1, "only the recent row is left in {table}");
    }
    let left = ledger.history(&query("r")).await.unwrap();
    assert_eq!(left[0].job_id, "new");

    // An exact multiple of the batch size ends with one empty probe.
    ledger
        .write(&LedgerBatch {
            calls: (0..4).map(|i| call("r", &["a"], old(i))).collect(),
            ..Default::default()
        })
        .await
        .unwrap();
    let run = ledger
        .prune_batched(cutoff, 2, |_| ControlFlow::Continue(()))
        .await
        .unwrap();
    assert_eq!((run.removed.calls, run.batches, run.complete), (4, 2, true));
    let run = ledger
        .prune_batched(cutoff, 0, |_| ControlFlow::Continue(()))
        .await
        .unwrap();
    assert_eq!(
        run,
        PruneRun {
            complete: true,
            ..PruneRun::default()
        },
        "nothing left; 0 counts as 1"
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn prune_batches_use_the_time_and_primary_key_indexes(pool: PgPool) {
    // Empty tables make seq scans, or a bitmap scan and a sort, cheapest;
    // forbid them so the plan shows that the indexes can serve a batch,
    // in order, as they will on a big table.
    let mut conn = pool.acquire().await.unwrap();
    for off in ["enable_seqscan", "enable_bitmapscan"] {
        sqlx::query(&format!("SET {off} = off"))
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    for (table, index) in [
        (PruneTable::JobReceipts, "job_receipts_received_at"),
        (PruneTable::ApiCalls, "api_calls_started_at"),
        (PruneTable::UserOutcomes, "user_outcomes_at"),
    ] {
        let rows = sqlx::query(&format!("EXPLAIN {}", table.delete_batch_sql()))
            .bind(t(0, 0))
            .bind(10_000_i64)
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        let text = rows
            .iter()
            .map(|r| r.get::<String, _>(0))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(text.contains(index), "{table:?}: {text}");
        assert!(text.contains(&format!("{}_pkey", table.as_str())), "{table:?}: {text}");
        assert!(!text.contains("Sort"), "the index gives the order: {text}");
    }
}

#[test]
fn prune_cutoffs_count_back_from_now_and_stop_at_the_year_1() {
    let now = t(0, 0);
    let year1 = earliest_cutoff();
    let cases = [
        (Duration::ZERO, now),
        (Duration::from_secs(86400), now - chrono::Duration::days(1)),
        (Duration::from_secs(90 * 86400), now - chrono::Duration::days(90)),
        (Duration::from_secs(3000 * 365 * 86400), year1),
        (Duration::MAX, year1),
    ];
    for (age, want) in cases {
        assert_eq!(prune_cutoff(now, age), want, "{age:?}");
    }
}

#[sqlx::test(migrations = "./migrations")]
async fn empty_batch_is_a_no_op(pool: PgPool) {
    Ledger::from_pool(pool.clone())
        .write(&LedgerBatch::default())
        .await
        .unwrap();
    for table in ["job_receipts", "api_calls", "user_outcomes"] {
        assert_eq!(count(&pool, table).await, 0, "{table}");
    }
    // It does not even need a database.
    dead_ledger().write(&LedgerBatch::default()).await.unwrap();
}

#[sqlx::test(migrations = "./migrations")]
async fn ten_thousand_outcomes_in_one_write(pool: PgPool) {
    let ledger = Ledger::from_pool(pool.clone()).with_dedupe_window(YEARS);
    let outcomes: Vec<OutcomeRow> = (0..10_000)
        .map(|i| {
            let o = if i % 2 == 0 {
                UserOutcome::Kicked
            } else {
                UserOutcome::RetryScheduled
            };
            outcome(&format!("j{}", i % 10), "big", &format!("u{i}"), o, t(i, 0))
        })
        .collect();
    let batch = LedgerBatch {
        receipts: (0..10)
            .map(|j| receipt(&format!("j{j}"), "big", &["u"], t(0, 0)))
            .collect(),
        outcomes,
        ..Default::default()
    };
    ledger.write(&batch).await.unwrap();
    assert_eq!(count(&pool, "user_outcomes").await, 10_000);
    let newest = ledger
        .history(&HistoryQuery {
            limit: 3,
            ..query("big")
        })
        .await
        .unwrap();
    assert_eq!(
        newest.iter().map(|r| r.user_id.as_str()).collect::<Vec<_>>(),
        vec!["u9999", "u9998", "u9997"]
    );
    let users: Vec<String> = (0..10_000).map(|i| format!("u{i}")).collect();
    let done = ledger.kicked_users("j4", "big", &users).await.unwrap();
    assert_eq!(done.len(), 1000, "j4 holds u4, u14, ...; all even, all kicked");
    assert!(done.contains("u9994") && !done.contains("u9995"));
}

#[sqlx::test(migrations = "./migrations")]
async fn nul_bytes_are_replaced_not_fatal(pool: PgPool) {
    let ledger = Ledger::from_pool(pool);
    let batch = LedgerBatch {
        receipts: vec![ReceiptRow {
            reason: Some("r\0".into()),
            ..receipt("j", "r", &["a\0"], t(0, 0))
        }],
        calls: vec![CallRow {
            message: Some("m\0".into()),
            ..call("r", &["a\0"], t(0, 0))
        }],
        outcomes: vec![OutcomeRow {
            detail: Some("d\0".into()),
            ..outcome("j", "r", "a", UserOutcome::Kicked, t(0, 0))
        }],
    };
    ledger.write(&batch).await.unwrap();
    let back = ledger.history(&query("r")).await.unwrap();
    assert_eq!(back[0].detail.as_deref(), Some("d\u{FFFD}"));
}

#[sqlx::test(migrations = "./migrations")]
async fn a_4_kb_request_id_is_stored_as_its_first_128_bytes(pool: PgPool) {
    let ledger = Ledger::from_pool(pool.clone());
    // Random hex, as a real id would be: PostgreSQL compresses index
    // entries, so a repetitive 4 KB value would fit the index anyway.
    let long: String = (0..256).map(|_| hex::encode(rand::random::<[u8; 8]>())).collect();
    assert_eq!(long.len(), 4096);
    let batch = LedgerBatch {
        calls: vec![CallRow {
            request_id: Some(long.clone()),
            ..call("r", &["a"], t(0, 0))
        }],
        outcomes: vec![OutcomeRow {
            request_id: Some(long.clone()),
            ..outcome("j", "r", "a", UserOutcome::Kicked, t(0, 0))
        }],
        ..Default::default()
    };
    ledger.write(&batch).await.unwrap();
    let stored: String = sqlx::query_scalar("SELECT request_id FROM api_calls")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, long[..kickq::testkit::MAX_REQUEST_ID_BYTES]);
    let back = ledger.history(&query("r")).await.unwrap();
    assert_eq!(back[0].request_id.as_deref(), Some(stored.as_str()));

    // What an unbounded value does to the index: a permanent error.
    let err = sqlx::query("INSERT INTO api_calls (app_id, room_id, user_ids, attempt, request_id, latency, started_at) VALUES (1, 'r', '{}', 1, $1, '0', now())")
        .bind(&long)
        .execute(&pool)
        .await
        .unwrap_err();
    let err = LedgerError::from(err);
    assert!(err.to_string().contains("api_calls_request_id"), "{err}");
    assert!(!err.is_unavailable(), "54000 is permanent, not an outage: {err}");
}

#[sqlx::test(migrations = "./migrations")]
async fn a_failing_statement_rolls_back_the_whole_batch(pool: PgPool) {
    let ledger = Ledger::from_pool(pool.clone());
    sqlx::query("DROP TABLE api_calls").execute(&pool).await.unwrap();
    let batch = LedgerBatch {
        receipts: vec![receipt("j", "r", &["a"], t(0, 0))],
        calls: vec![call("r", &["a"], t(0, 0))],
        outcomes: vec![outcome("j", "r", "a", UserOutcome::Kicked, t(0, 0))],
    };
    let err = ledger.write(&batch).await.unwrap_err();
    assert!(matches!(err, LedgerError::Query(_)), "{err:?}");
    assert!(!err.is_unavailable(), "a SQL error is not an outage");
    assert_eq!(count(&pool, "job_receipts").await, 0, "receipts were rolled back");
}

#[sqlx::test(migrations = "./migrations")]
async fn sql_errors_are_not_unavailable(pool: PgPool) {
    let ledger = Ledger::from_pool(pool.clone());
    sqlx::query("DROP TABLE user_outcomes").execute(&pool).await.unwrap();
    let err = ledger.history(&query("r")).await.unwrap_err();
    assert!(!err.is_unavailable(), "{err}");
    assert!(err.to_string().contains("user_outcomes"), "{err}");
    ledger.ping().await.unwrap();

    // Server-side outage codes, raised for real, are classified as outages.
    for (code, unavailable) in [("57P01", true), ("53300", true), ("23505", false)] {
        let sql = format!("DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '{code}'; END $$");
        let err = LedgerError::from(sqlx::query(&sql).execute(&pool).await.unwrap_err());
        assert_eq!(err.is_unavailable(), unavailable, "{code}: {err}");
    }
}

#[tokio::test]
async fn closed_port_is_unavailable() {
    let ledger = dead_ledger();
    let err = ledger.ping().await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    let batch = LedgerBatch {
        outcomes: vec![outcome("j", "r", "a", UserOutcome::Kicked, t(0, 0))],
        ..Default::default()
    };
    assert!(ledger.write(&batch).await.unwrap_err().is_unavailable());
    assert!(ledger
        .kicked_users("j", "r", &["a".into()])
        .await
        .unwrap_err()
        .is_unavailable());
    assert!(
        ledger.migrate().await.unwrap_err().is_unavailable(),
        "migrate wraps the outage"
    );
}

#[tokio::test]
async fn connect_is_lazy_and_rejects_bad_urls() {
    let err = Ledger::connect("postgres://u:hunter2@127.0.0.1:notaport/db")
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::InvalidUrl(_)), "{err:?}");
    assert!(!err.is_unavailable());
    assert!(!err.to_string().contains("hunter2"), "{err}");
    // Lazy: building a pool to a dead address succeeds; using it does not.
    let ledger = Ledger::connect("postgres://u:hunter2@127.0.0.1:1/db").await.unwrap();
    assert!(!format!("{ledger:?}").contains("hunter2"));
}

#[sqlx::test(migrations = false)]
async fn migrate_applies_then_reports_nothing_pending(pool: PgPool) {
    let ledger = Ledger::from_pool(pool.clone());
    let pending = ledger.pending_migrations().await.unwrap();
    assert_eq!(
        pending,
        vec![
            PendingMigration {
                version: 1,
                description: "ledger".into()
            },
            PendingMigration {
                version: 2,
                description: "done includes halted then resumed".into()
            },
            PendingMigration {
                version: 3,
                description: "http idempotency".into()
            },
            PendingMigration {
                version: 4,
                description: "history by user".into()
            }
        ]
    );
    ledger.migrate().await.unwrap();
    assert!(ledger.pending_migrations().await.unwrap().is_empty());
    ledger.migrate().await.unwrap();
    assert_eq!(count(&pool, "user_outcomes").await, 0);
}
