//! The backlog scenario: 1,000,000 queued messages drained by `kickq run` as a child process, whose peak RSS
//! (the kernel's VmHWM, and the largest VmRSS sampled) is the figure.

use super::child::{self, Memory};
use super::env::{BenchEnv, BENCH_APP_ID, BENCH_SECRET};
use super::error::BenchError;
use super::figures::{tally, Accounting, Figure, Report, Target};
use super::publish::publish_generated;
use super::runs::{collect, queue_depth, STALL};
use super::wait::until_kicked;
use super::workload;
use crate::amqp::topology::Names;
use crate::mock_zego::MockZego;
use std::collections::HashSet;
use std::path::Path;
use std::time::Instant;

/// Messages at scale 1.
pub const MESSAGES: usize = 1_000_000;
/// Rooms the messages are spread over, in turn.
pub const ROOMS: usize = 10_000;
/// Channels publishing at once.
pub const PUBLISH_CHANNELS: usize = 4;
/// Target: peak RSS, MiB.
pub const TARGET_PEAK_MIB: f64 = 150.0;

/// Runs the scenario, or reports it skipped without a `kickq` binary.
pub async fn run(env: &BenchEnv) -> Result<Report, BenchError> {
    let Some(exe) = env.settings().exe.clone() else {
        return Ok(Report::skipped("backlog", "no kickq binary to run as a child"));
    };
    let n = env.scaled(MESSAGES, 10);
    let rooms = ROOMS.min(n);
    let mock = env.mock(0).await?;
    let expected: HashSet<workload::Pair> = (0..n)
        .map(|i| workload::backlog_kick(i, rooms))
        .flat_map(|k| k.users.into_iter().map(move |u| (k.room.clone(), u)))
        .collect();
    let minimum = workload::minimum_calls(&expected);
    let measured = env
        .scoped("backlog", |names| {
            let (mock, expected, exe) = (&mock, &expected, &exe);
            let work = Workload {
                n,
                rooms,
                expected,
                minimum,
            };
            async move { drain_with_child(env, &names, mock, exe, work).await }
        })
        .await?;
    let mib = |kib: u64| kib as f64 / 1024.0;
    let mut r = Report::new("backlog");
    r.param("scale", env.settings().scale);
    r.param("messages", n);
    r.param("rooms", rooms);
    r.param("prefetch", crate::worker::DEFAULT_PREFETCH);
    r.figures
        .push(Figure::new("peak RSS, VmHWM (MiB)", mib(measured.peak.hwm_kib)).target(Target::AtMost(TARGET_PEAK_MIB)));
    r.figures
        .push(Figure::new("largest VmRSS sampled (MiB)", mib(measured.peak.rss_kib)));
    r.figures.push(Figure::new(
        "publish (messages/s)",
        n as f64 / measured.publish_secs.max(1e-9),
    ));
    r.figures.push(Figure::new(
        "drain (messages/s)",
        n as f64 / measured.drain_secs.max(1e-9),
    ));
    r.figures.push(Figure::new("calls", measured.calls as f64));
    let (kk, ku) = tally(&expected, &measured.kicked);
    r.accounting = Some(Accounting {
        messages: n as u64,
        expected: expected.len() as u64,
        kickq_kicked: kk,
        kickq_unexpected: ku,
        kickq_acked: Some((n as u64).saturating_sub(measured.left_in_queue)),
        ..Accounting::default()
    });
    r.notes.push(format!(
        "worker: `kickq run` as a child, API unlimited, ended with {}; no baseline RSS (it runs in-process: a second million-message run as a child would double the scenario)",
        measured.exit
    ));
    Ok(r)
}

struct Measured {
    peak: Memory,
    publish_secs: f64,
    drain_secs: f64,
    calls: u64,
    kicked: HashSet<workload::Pair>,
    left_in_queue: u64,
    exit: String,
}

/// The backlog a run drains: `n` messages over `rooms` rooms, the kicks they
/// ask for, and the fewest calls that make them.
#[derive(Clone, Copy)]
struct Workload<'a> {
    n: usize,
    rooms: usize,
    expected: &'a HashSet<workload::Pair>,
    minimum: u64,
}

async fn drain_with_child(
    env: &BenchEnv,
    names: &Names,
    mock: &MockZego,
    exe: &Path,
    work: Workload<'_>,
) -> Result<Measured, BenchError> {
    let Workload {
        n,
        rooms,
        expected,
        minimum,
    } = work;
    let conn = env.connect("backlog").await?;
    let t = Instant::now();
    publish_generated(&conn, &names.requests, n, PUBLISH_CHANNELS, move |i| {
        workload::backlog_kick(i, rooms).body()
    })
    .await?;
    let publish_secs = t.elapsed().as_secs_f64();
    mock.reset();
    let vars = [
        ("KICKQ_AMQP_URL", env.settings().amqp_url.expose().to_owned()),
        ("KICKQ_NAMESPACE", names.namespace.clone()),
        ("KICKQ_RETRY_DELAYS", super::env::retry_delays_setting(names)),
        ("ZEGO_APP_ID", BENCH_APP_ID.to_string()),
        ("ZEGO_SERVER_SECRET", BENCH_SECRET.to_owned()),
        ("ZEGO_API_URL", mock.base_url()),
        ("KICKQ_RATE", super::drain::UNLIMITED_RATE.to_string()),
        ("KICKQ_ALLOW_RATE_ABOVE_DOCUMENTED", "true".to_owned()),
        ("KICKQ_METRICS_ADDR", "0".to_owned()),
        (
            "KICKQ_CONNECTION_NAME",
            format!("kickq-bench-child-{}", names.namespace),
        ),
        ("KICKQ_LOG_FORMAT", "pretty".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ];
    let start = Instant::now();
    let mut worker = child::spawn(exe, &["run"], &vars)?;
    let waited = until_kicked(mock, expected, minimum, STALL).await;
    let peak = worker.peak();
    let early_exit = worker.try_exit()?;
    let status = worker.terminate().await?;
    waited?;
    let run = collect(mock, start, 0);
    let left = queue_depth(env, &names.requests).await?;
    crate::amqp::connect::close(&conn, "backlog done").await;
    Ok(Measured {
        peak,
        publish_secs,
        drain_secs: run.wall.as_secs_f64(),
        calls: run.counters.calls,
        kicked: run.kicked,
        left_in_queue: left,
        exit: match early_exit {
            Some(s) => format!("{s} before the drain ended"),
            None => status.to_string(),
        },
    })
}
