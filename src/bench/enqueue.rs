//! The enqueue scenario: 1,000,000 CSV lines through `kickq enqueue --file` as a child process, in lines per
//! second, beside the bench's own pipelined publisher sending the same lines as one-user messages, with the
//! child's peak RSS; and the peak RSS of dry runs over 10,000,000 lines in few rooms and in one room a line.
//! Skipped when this build has no `enqueue` subcommand.

use super::child;
use super::env::BenchEnv;
use super::error::BenchError;
use super::figures::{Figure, Report, Target};
use super::publish::publish_generated;
use super::runs::queue_depth;
use super::workload;
use crate::amqp::topology::Names;
use lapin::options::QueuePurgeOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

/// Lines at scale 1.
pub const LINES: usize = 1_000_000;
/// Rooms the lines are spread over.
pub const ROOMS: usize = 10_000;
/// Target: lines per second.
pub const TARGET_LINES_PER_SEC: f64 = 50_000.0;
/// Lines of the memory runs at scale 1.
pub const MEMORY_LINES: usize = 10_000_000;
/// Target: peak RSS of `kickq enqueue --file`, whatever the room count.
pub const TARGET_PEAK_RSS_MIB: f64 = 200.0;
/// What the report says when the subcommand is missing.
pub const NOT_AVAILABLE: &str = "kickq enqueue not available";

/// Whether `exe` has an `enqueue` subcommand (its `--help` succeeds).
pub async fn available(exe: &Path) -> bool {
    tokio::process::Command::new(exe)
        .args(["enqueue", "--help"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// Runs the scenario, or reports it skipped.
pub async fn run(env: &BenchEnv) -> Result<Report, BenchError> {
    let Some(exe) = env.settings().exe.clone() else {
        return Ok(Report::skipped("enqueue", "no kickq binary to run as a child"));
    };
    if !available(&exe).await {
        return Ok(Report::skipped("enqueue", NOT_AVAILABLE));
    }
    let n = env.scaled(LINES, 10);
    let rooms = ROOMS.min(n);
    let file = std::env::temp_dir().join(format!(
        "kickq-bench-{}-{:04x}.csv",
        std::process::id(),
        rand::random::<u16>()
    ));
    write_csv(&file, n, rooms)?;
    let result = env
        .scoped("enqueue", |names| {
            let (exe, file) = (&exe, &file);
            async move { measure(env, &names, exe, file, n, rooms).await }
        })
        .await;
    let _ = std::fs::remove_file(&file);
    // The checkpoint `kickq enqueue --file` writes beside its input.
    let _ = std::fs::remove_file(crate::bulk::checkpoint::beside(&file));
    let (enqueue_secs, publish_secs, queued, exit, peak) = result?;
    // Memory on 10 M lines, few rooms and one room a line: a dry run with --json (stdout to /dev/null), which
    // makes both readings, the second one grouping every message; the publish window adds at most
    // DEFAULT_WINDOW messages, measured above on the published run.
    let big = env.scaled(MEMORY_LINES, 10);
    let mut memory = Vec::new();
    for (label, rooms) in [("few rooms", ROOMS.min(big)), ("distinct rooms", big)] {
        write_csv(&file, big, rooms)?;
        let path = file.to_string_lossy().into_owned();
        let child = child::spawn(
            &exe,
            &["enqueue", "--file", &path, "--dry-run", "--json"],
            &[("RUST_LOG", "warn".to_owned())],
        )?;
        let (status, hwm) = wait_with_peak(child).await?;
        let _ = std::fs::remove_file(&file);
        if !status.success() {
            return Err(BenchError::Child(format!(
                "kickq enqueue --dry-run ended with {status}"
            )));
        }
        memory.push((label, rooms, hwm));
    }
    let mut r = Report::new("enqueue");
    r.param("scale", env.settings().scale);
    r.param("lines", n);
    r.figures.push(
        Figure::new("lines/s (baseline: bench publisher)", n as f64 / enqueue_secs.max(1e-9))
            .vs(n as f64 / publish_secs.max(1e-9))
            .target(Target::AtLeast(TARGET_LINES_PER_SEC)),
    );
    r.figures.push(Figure::new("messages queued by enqueue", queued as f64));
    r.figures
        .push(Figure::new("peak RSS, VmHWM (MiB)", peak as f64 / 1024.0).target(Target::AtMost(TARGET_PEAK_RSS_MIB)));
    for (label, rooms, hwm) in &memory {
        r.figures.push(
            Figure::new(
                format!("peak RSS {big} lines, {label} ({rooms}), dry run --json (MiB)"),
                *hwm as f64 / 1024.0,
            )
            .target(Target::AtMost(TARGET_PEAK_RSS_MIB)),
        );
    }
    r.notes.push(format!(
        "`kickq enqueue --file` ended with {exit}; CSV `room_id,user_id` with a header; the baseline publishes one message per line, pipelined"
    ));
    Ok(r)
}

fn write_csv(path: &PathBuf, n: usize, rooms: usize) -> Result<(), BenchError> {
    let io = |source| BenchError::Io {
        what: format!("writing {}", path.display()),
        source,
    };
    let mut w = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    w.write_all(workload::CSV_HEADER.as_bytes()).map_err(io)?;
    for i in 0..n {
        w.write_all(workload::csv_line(i, rooms).as_bytes()).map_err(io)?;
    }
    w.flush().map_err(io)
}

async fn measure(
    env: &BenchEnv,
    names: &Names,
    exe: &Path,
    file: &Path,
    n: usize,
    rooms: usize,
) -> Result<(f64, f64, u64, String, u64), BenchError> {
    let vars = [
        ("KICKQ_AMQP_URL", env.settings().amqp_url.expose().to_owned()),
        ("KICKQ_NAMESPACE", names.namespace.clone()),
        ("KICKQ_RETRY_DELAYS", super::env::retry_delays_setting(names)),
        ("RUST_LOG", "warn".to_owned()),
    ];
    let path = file.to_string_lossy().into_owned();
    let t = Instant::now();
    let (status, peak) = wait_with_peak(child::spawn(exe, &["enqueue", "--file", &path], &vars)?).await?;
    let enqueue_secs = t.elapsed().as_secs_f64();
    if !status.success() {
        return Err(BenchError::Child(format!("kickq enqueue --file ended with {status}")));
    }
    // A file goes to the bulk lane; the baseline publishes to the same queue.
    let queued = queue_depth(env, &names.bulk).await?;
    let conn = env.connect("enqueue").await?;
    let ch = conn.create_channel().await?;
    ch.queue_purge(names.bulk.as_str().into(), QueuePurgeOptions::default())
        .await?;
    let t = Instant::now();
    publish_generated(&conn, &names.bulk, n, 1, move |i| {
        let line = workload::csv_line(i, rooms);
        let (room, user) = line.trim_end().split_once(',').unwrap_or_default();
        workload::Kick {
            room: room.to_owned(),
            users: vec![user.to_owned()],
        }
        .body()
    })
    .await?;
    let publish_secs = t.elapsed().as_secs_f64();
    crate::amqp::connect::close(&conn, "enqueue done").await;
    Ok((enqueue_secs, publish_secs, queued, status.to_string(), peak))
}

/// Waits for a child, sampling its memory until it exits: its exit and its peak VmHWM in KiB (the last
/// sample, at most 50 ms before the exit; the kernel's count cannot be read after the child is reaped).
async fn wait_with_peak(mut child: child::Sampled) -> Result<(std::process::ExitStatus, u64), BenchError> {
    loop {
        let peak = child.peak();
        if let Some(status) = child.try_exit()? {
            return Ok((status, peak.hwm_kib.max(child.peak().hwm_kib)));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
