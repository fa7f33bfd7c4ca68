//! The drain scenario: 100,000 messages of 1 to 5 users with the API unlimited and instant; kickq's users per
//! second against the bare consume-and-ack loop's on the same broker, same messages, same prefetch. A third run
//! puts kickq on an in-process API without HTTP, to tell the pipeline's cost from the HTTP round trips'.

use super::bare::consume_and_ack;
use super::env::BenchEnv;
use super::error::BenchError;
use super::figures::{tally, Accounting, Figure, Report, Target};
use super::null_api::NullApi;
use super::publish::publish_all;
use super::runs::{measure, queue_depth, Consumer, STALL};
use super::workload::{self, Kick};
use crate::amqp::topology::Names;
use crate::worker::{WorkerConfig, DEFAULT_PREFETCH};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Messages at scale 1.
pub const MESSAGES: usize = 100_000;
/// Messages per room (so a room gathers about 30 users across messages).
pub const MESSAGES_PER_ROOM: usize = 10;
/// The worker's rate: far above anything reachable, so the API never limits.
pub const UNLIMITED_RATE: u32 = 100_000;
/// Target: kickq's users per second / the bare loop's.
pub const TARGET_RATIO: f64 = 0.5;

/// Runs the scenario.
pub async fn run(env: &BenchEnv) -> Result<Report, BenchError> {
    let n = env.scaled(MESSAGES, 10);
    let rooms = (n / MESSAGES_PER_ROOM).max(1);
    let kicks = workload::mixed(n, rooms);
    let expected = workload::pairs(&kicks);
    let users = workload::users(&kicks);
    let minimum = workload::minimum_calls(&expected);
    let bodies: Vec<Vec<u8>> = kicks.iter().map(Kick::body).collect();
    let mock = env.mock(0).await?;
    let (k, bare, null) = env
        .scoped("drain", |names| {
            let (bodies, expected, mock) = (&bodies, &expected, &mock);
            async move {
                let conn = env.connect("drain").await?;
                publish_all(&conn, &names.requests, bodies.iter().cloned()).await?;
                let cfg = env.worker_config(&names, &mock.base_url(), UNLIMITED_RATE);
                let k = measure(
                    env,
                    &names,
                    mock,
                    Consumer::Kickq(Box::new(cfg)),
                    expected,
                    minimum,
                    n as u64,
                )
                .await?;
                publish_all(&conn, &names.requests, bodies.iter().cloned()).await?;
                let bare = consume_and_ack(&conn, &names.requests, n as u64, DEFAULT_PREFETCH).await?;
                publish_all(&conn, &names.requests, bodies.iter().cloned()).await?;
                let cfg = env.worker_config(&names, &mock.base_url(), UNLIMITED_RATE);
                let null = without_http(env, &names, cfg, expected, n as u64).await?;
                crate::amqp::connect::close(&conn, "drain done").await;
                Ok((k, bare.0, null))
            }
        })
        .await?;
    let ups = |secs: f64| users as f64 / secs.max(1e-9);
    let (k_ups, b_ups) = (ups(k.wall.as_secs_f64()), ups(bare.as_secs_f64()));
    let mut r = Report::new("drain");
    r.param("scale", env.settings().scale);
    r.param("messages", n);
    r.param("users", users);
    r.param("rooms", rooms);
    r.param("prefetch", DEFAULT_PREFETCH);
    r.figures
        .push(Figure::new("users/s (baseline: bare loop)", k_ups).vs(b_ups));
    r.figures
        .push(Figure::new("kickq / bare loop", k_ups / b_ups.max(1e-9)).target(Target::AtLeast(TARGET_RATIO)));
    r.figures
        .push(Figure::new("wall (s) (baseline: bare loop)", k.wall.as_secs_f64()).vs(bare.as_secs_f64()));
    r.figures
        .push(Figure::new("users/s, API in-process, no HTTP", ups(null.wall.as_secs_f64())).vs(b_ups));
    r.figures.push(Figure::new("calls", k.counters.calls as f64));
    r.figures.push(Figure::new("minimum calls", minimum as f64));
    let (kk, ku) = tally(&expected, &k.kicked);
    r.accounting = Some(Accounting {
        messages: n as u64,
        expected: expected.len() as u64,
        kickq_kicked: kk,
        kickq_unexpected: ku,
        kickq_acked: Some(k.acked.min(null.acked)),
        ..Accounting::default()
    });
    if null.kicked != k.kicked {
        r.notes.push("the no-HTTP run kicked a different set of pairs".into());
        if let Some(a) = r.accounting.as_mut() {
            a.kickq_unexpected += 1;
        }
    }
    super::sweep::summary_note(&mut r, &k);
    r.notes.push(
        "mock unlimited and instant; kickq at rate 100000; the bare loop consumes the same messages with the same prefetch and acks each".into(),
    );
    Ok(r)
}

/// kickq's run on the no-HTTP API.
struct NullRun {
    wall: Duration,
    kicked: HashSet<workload::Pair>,
    acked: u64,
}

/// Runs kickq on [`NullApi`] until it has kicked `expected`, then stops it.
async fn without_http(
    env: &BenchEnv,
    names: &Names,
    cfg: WorkerConfig,
    expected: &HashSet<workload::Pair>,
    published: u64,
) -> Result<NullRun, BenchError> {
    let api = Arc::new(NullApi::default());
    let stop = CancellationToken::new();
    let start = Instant::now();
    let (worker_api, worker_stop) = (api.clone(), stop.clone());
    let mut task = tokio::spawn(async move {
        crate::worker::Worker::bind_with_api(cfg, worker_api)
            .await?
            .run(worker_stop)
            .await
    });
    let mut last = (0, Instant::now());
    let finished = loop {
        tokio::select! {
            ended = &mut task => break Some(ended),
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        if api.kicked_count() >= expected.len() {
            break None;
        }
        let calls = api.calls();
        if calls != last.0 {
            last = (calls, Instant::now());
        } else if last.1.elapsed() > STALL {
            stop.cancel();
            return Err(BenchError::Stalled(format!(
                "no call for {STALL:?} after {calls} calls (no-HTTP run)"
            )));
        }
    };
    stop.cancel();
    let summary = match finished {
        Some(ended) => ended??,
        None => task.await??,
    };
    if summary.reconnects > 0 {
        return Err(BenchError::Disturbed(
            "kickq's broker session was lost (no-HTTP run)".into(),
        ));
    }
    let left = queue_depth(env, &names.requests).await?;
    Ok(NullRun {
        wall: api.last_call().unwrap_or(start).saturating_duration_since(start),
        kicked: api.kicked(),
        acked: published.saturating_sub(left),
    })
}
