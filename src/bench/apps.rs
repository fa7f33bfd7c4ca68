//! The apps scenario: N apps at L calls/s each in ONE `kickq run` child (a config file listing them under
//! `[[apps]]`, secrets by `secret_env`) against one mock serving every AppId, each app with a backlog of full
//! calls; aggregate and per-app calls/s against the ideal N × L, each app's busiest second, 206 answers, and
//! the worker's CPU seconds per 1,000 calls and peak RSS.

use super::child;
use super::env::{app_credentials, BenchEnv};
use super::error::BenchError;
use super::figures::{quantile, tally, Accounting, Figure, Report, Target};
use super::publish::publish_generated;
use super::runs::{last_kick, queue_depth, STALL};
use super::wait::{kicked_pairs, until_kicked};
use super::workload;
use crate::amqp::topology::Names;
use crate::mock_zego::MockZego;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

/// Apps at once by default (`--apps`): the "20 apps in one worker".
pub const APPS: usize = 20;
/// Most apps `--apps` accepts: every AppId stays a uint32 above the bench's,
/// and the child's config file stays small.
pub const MAX_APPS: usize = 1000;
/// Full calls of backlog per app at scale 1: 20 s of each app's budget at 50/s.
pub const CALLS_PER_APP: usize = 1000;
/// Channels publishing the backlog at once.
pub const PUBLISH_CHANNELS: usize = 4;
/// Target: aggregate calls/s / (N × L).
pub const TARGET_AGGREGATE: f64 = 0.97;
/// Prefix of the variables that hold each app's ServerSecret for the child.
const SECRET_ENV_PREFIX: &str = "KQBENCH_SECRET_";

/// Runs the scenario, or reports it skipped without a `kickq` binary.
pub async fn run(env: &BenchEnv) -> Result<Report, BenchError> {
    let Some(exe) = env.settings().exe.clone() else {
        return Ok(Report::skipped("apps", "no kickq binary to run as a child"));
    };
    let rate = env.settings().rate;
    let n_apps = env.settings().apps.clamp(1, MAX_APPS);
    let per_app = env.scaled(CALLS_PER_APP, 5);
    let total = n_apps * per_app;
    let expected = workload::pairs(&(0..total).map(|k| kick(k, n_apps)).collect::<Vec<_>>());
    let minimum = workload::minimum_calls(&expected);
    let mock = env.mock_apps(rate, n_apps).await?;
    let file = std::env::temp_dir().join(format!(
        "kickq-bench-apps-{}-{:04x}.toml",
        std::process::id(),
        rand::random::<u16>()
    ));
    let measured = env
        .scoped("apps", |names| {
            let (mock, expected, exe, file) = (&mock, &expected, &exe, &file);
            async move {
                let conn = env.connect("apps").await?;
                publish_generated(&conn, &names.requests, total, PUBLISH_CHANNELS, move |k| {
                    kick(k, n_apps).body_for(app_credentials(k % n_apps).app_id)
                })
                .await?;
                crate::amqp::connect::close(&conn, "apps published").await;
                write_config(file, n_apps, rate, &mock.base_url())?;
                let work = Work {
                    n_apps,
                    expected,
                    minimum,
                    published: total as u64,
                };
                drain_with_child(env, &names, mock, exe, file, work).await
            }
        })
        .await;
    let _ = std::fs::remove_file(&file);
    let m = measured?;

    let app_ids: Vec<u32> = (0..n_apps).map(|i| app_credentials(i).app_id).collect();
    let rates = app_rates(&m.calls, &app_ids, rate);
    let ideal = (n_apps as f64) * f64::from(rate);
    let mut per_app_eff: Vec<f64> = rates.per_app.iter().map(|c| c / f64::from(rate)).collect();
    per_app_eff.sort_by(f64::total_cmp);
    let busiest = app_ids
        .iter()
        .map(|id| m.counters.by_app.get(id).map_or(0, |a| a.max_calls_in_1s))
        .max()
        .unwrap_or(0);
    let mut r = Report::new("apps");
    r.param("apps", n_apps);
    r.param("rate", rate);
    r.param("scale", env.settings().scale);
    r.param("calls_per_app", per_app);
    r.param("messages", total);
    r.figures
        .push(Figure::new("aggregate calls/s (baseline: N x L)", rates.aggregate).vs(ideal));
    r.figures.push(
        Figure::new("aggregate calls/s / (N x L)", rates.aggregate / ideal).target(Target::AtLeast(TARGET_AGGREGATE)),
    );
    r.figures
        .push(Figure::new("min app calls/s / L", quantile(&per_app_eff, 0.0)));
    r.figures
        .push(Figure::new("median app calls/s / L", quantile(&per_app_eff, 0.5)));
    r.figures.push(
        Figure::new(format!("busiest 1 s of any app (L={rate})"), busiest as f64)
            .target(Target::AtMost(f64::from(rate))),
    );
    r.figures
        .push(Figure::new("206 answers", m.counters.rate_limited as f64).target(Target::AtMost(0.0)));
    r.figures.push(Figure::new("calls", m.counters.calls as f64));
    r.figures.push(Figure::new("minimum calls", minimum as f64));
    r.figures.push(
        Figure::new("wall, child start to last call (s)", m.wall.as_secs_f64()).vs(per_app as f64 / f64::from(rate)),
    );
    r.figures.push(Figure::new(
        "worker CPU s per 1,000 calls",
        m.cpu.as_secs_f64() * 1000.0 / m.counters.calls.max(1) as f64,
    ));
    r.figures.push(Figure::new("worker CPU (s)", m.cpu.as_secs_f64()));
    r.figures
        .push(Figure::new("peak RSS, VmHWM (MiB)", m.peak.hwm_kib as f64 / 1024.0));
    let (kk, ku) = tally(&expected, &m.kicked);
    r.accounting = Some(Accounting {
        messages: total as u64,
        expected: expected.len() as u64,
        kickq_kicked: kk,
        kickq_unexpected: ku,
        kickq_acked: Some((total as u64).saturating_sub(m.left_in_queue)),
        ..Accounting::default()
    });
    r.notes.push(format!(
        "worker: one `kickq --config <file> run` child serving {n_apps} apps ([[apps]] with secret_env, rate {rate} each), ended with {}; the backlog is {per_app} messages of 5 users per app in the live lane, published interleaved before the child starts",
        m.exit
    ));
    r.notes.push(
        "baseline: the ideal, N x L calls/s (no naive run: N single-app processes would be heavier than the scenario); the wall's baseline column is the ideal per-app time, calls per app / L"
            .into(),
    );
    r.notes.push(
        "calls/s = calls / (first to last call's arrival + 1 / L), per app and over all apps (a run paced exactly at L scores L); CPU = the child's user + system time from /proc/<pid>/stat (10 ms ticks), start-up and intake included"
            .into(),
    );
    Ok(r)
}

/// Message `k` of the backlog: apps in turn, so every app has work from the start.
fn kick(k: usize, n_apps: usize) -> workload::Kick {
    workload::app_kick(k % n_apps, k / n_apps)
}

/// Writes the child's config file: one `[[apps]]` entry per app, its secret
/// named by variable (never in the file).
fn write_config(file: &Path, n_apps: usize, rate: u32, api_url: &str) -> Result<(), BenchError> {
    std::fs::write(file, config_text(n_apps, rate, api_url)).map_err(|source| BenchError::Io {
        what: format!("writing {}", file.display()),
        source,
    })
}

/// The config file's text.
fn config_text(n_apps: usize, rate: u32, api_url: &str) -> String {
    let mut out = String::new();
    for i in 0..n_apps {
        let _ = write!(
            out,
            "[[apps]]\napp_id = {}\nsecret_env = \"{SECRET_ENV_PREFIX}{i}\"\nrate = {rate}\napi_url = \"{api_url}\"\n\n",
            app_credentials(i).app_id
        );
    }
    out
}

/// Calls per second, over all apps and per app.
#[derive(Debug, Clone, PartialEq)]
struct AppRates {
    /// Over every app's calls.
    aggregate: f64,
    /// Each app of `app_ids`, in order (0 for an app with no call).
    per_app: Vec<f64>,
}

/// Calls/s of calls given as (AppId, arrival in µs): the count over the time
/// from the first to the last arrival plus one token interval (1 / `rate`),
/// so that calls paced exactly at `rate` score `rate`; over all apps the
/// interval is 1 / (apps × `rate`). Calls for other AppIds are ignored.
fn rates_of(calls: &[(u32, u64)], app_ids: &[u32], rate: u32) -> AppRates {
    let cps = |times: &[u64], per_sec: f64| -> f64 {
        match (times.iter().min(), times.iter().max()) {
            (Some(first), Some(last)) => times.len() as f64 / ((last - first) as f64 / 1e6 + 1.0 / per_sec),
            _ => 0.0,
        }
    };
    let mut by_app: BTreeMap<u32, Vec<u64>> = app_ids.iter().map(|id| (*id, Vec::new())).collect();
    for (app, at) in calls {
        if let Some(v) = by_app.get_mut(app) {
            v.push(*at);
        }
    }
    let all: Vec<u64> = by_app.values().flatten().copied().collect();
    AppRates {
        aggregate: cps(&all, app_ids.len().max(1) as f64 * f64::from(rate)),
        per_app: app_ids.iter().map(|id| cps(&by_app[id], f64::from(rate))).collect(),
    }
}

/// [`rates_of`] over the mock's call records.
fn app_rates(calls: &[crate::mock_zego::CallRecord], app_ids: &[u32], rate: u32) -> AppRates {
    let calls: Vec<(u32, u64)> = calls.iter().filter_map(|c| c.app_id.map(|a| (a, c.at_us))).collect();
    rates_of(&calls, app_ids, rate)
}

/// What the child's run did.
struct Measured {
    calls: Vec<crate::mock_zego::CallRecord>,
    counters: crate::mock_zego::Counters,
    kicked: HashSet<workload::Pair>,
    wall: Duration,
    cpu: Duration,
    peak: child::Memory,
    left_in_queue: u64,
    exit: String,
}

/// The backlog the child drains.
#[derive(Clone, Copy)]
struct Work<'a> {
    n_apps: usize,
    expected: &'a HashSet<workload::Pair>,
    minimum: u64,
    published: u64,
}

async fn drain_with_child(
    env: &BenchEnv,
    names: &Names,
    mock: &MockZego,
    exe: &Path,
    file: &Path,
    work: Work<'_>,
) -> Result<Measured, BenchError> {
    mock.reset();
    let mut vars = vec![
        ("KICKQ_AMQP_URL".to_owned(), env.settings().amqp_url.expose().to_owned()),
        ("KICKQ_NAMESPACE".to_owned(), names.namespace.clone()),
        ("KICKQ_RETRY_DELAYS".to_owned(), super::env::retry_delays_setting(names)),
        ("KICKQ_ALLOW_RATE_ABOVE_DOCUMENTED".to_owned(), "true".to_owned()),
        ("KICKQ_METRICS_ADDR".to_owned(), "0".to_owned()),
        (
            "KICKQ_CONNECTION_NAME".to_owned(),
            format!("kickq-bench-child-{}", names.namespace),
        ),
        ("KICKQ_LOG_FORMAT".to_owned(), "pretty".to_owned()),
        ("RUST_LOG".to_owned(), "warn".to_owned()),
    ];
    for i in 0..work.n_apps {
        vars.push((
            format!("{SECRET_ENV_PREFIX}{i}"),
            app_credentials(i).secret.expose().to_owned(),
        ));
    }
    let vars: Vec<(&str, String)> = vars.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let path = file.to_string_lossy().into_owned();
    let start = Instant::now();
    let mut worker = child::spawn(exe, &["--config", &path, "run"], &vars)?;
    let cpu_before = worker.cpu();
    let waited = until_kicked(mock, work.expected, work.minimum, STALL).await;
    let cpu = worker.cpu().saturating_sub(cpu_before);
    let peak = worker.peak();
    let early_exit = worker.try_exit()?;
    let status = worker.terminate().await?;
    waited?;
    let calls = mock.calls();
    let last = last_kick(mock, &calls, start);
    let left = queue_depth(env, &names.requests).await?;
    Ok(Measured {
        counters: mock.counters(),
        kicked: kicked_pairs(mock),
        calls,
        wall: last.saturating_duration_since(start),
        cpu,
        peak,
        left_in_queue: left.min(work.published),
        exit: match early_exit {
            Some(s) => format!("{s} before the drain ended"),
            None => status.to_string(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_score_exact_pacing_at_the_rate() {
        let ms = 1000u64;
        // App 1: 5 calls 20 ms apart (exactly 50/s); app 2: 5 calls 40 ms apart
        // (25/s), starting 10 ms later; app 3: none; an unknown app is ignored.
        let mut calls: Vec<(u32, u64)> = (0..5).map(|i| (1, i * 20 * ms)).collect();
        calls.extend((0..5).map(|i| (2, 10 * ms + i * 40 * ms)));
        calls.push((9, 0));
        let cases: &[(&[u32], f64, &[f64])] = &[
            (&[1], 50.0, &[50.0]),
            (&[1, 2], 10.0 / (0.17 + 0.01), &[50.0, 5.0 / (0.16 + 0.02)]),
            (
                &[1, 2, 3],
                10.0 / (0.17 + 1.0 / 150.0),
                &[50.0, 5.0 / (0.16 + 0.02), 0.0],
            ),
            (&[3], 0.0, &[0.0]),
        ];
        for (ids, aggregate, per_app) in cases {
            let r = rates_of(&calls, ids, 50);
            assert!((r.aggregate - aggregate).abs() < 1e-9, "{ids:?}: {r:?}");
            assert_eq!(r.per_app.len(), per_app.len());
            for (got, want) in r.per_app.iter().zip(per_app.iter()) {
                assert!((got - want).abs() < 1e-9, "{ids:?}: {r:?}");
            }
        }
    }

    #[test]
    fn the_config_file_lists_every_app_without_a_secret() {
        let text = config_text(3, 50, "http://127.0.0.1:9");
        let parsed: toml::Value = toml::from_str(&text).expect("valid TOML");
        let apps = parsed["apps"].as_array().expect("[[apps]]");
        assert_eq!(apps.len(), 3);
        assert_eq!(
            apps[2]["app_id"].as_integer(),
            Some(i64::from(app_credentials(2).app_id))
        );
        assert_eq!(apps[2]["secret_env"].as_str(), Some("KQBENCH_SECRET_2"));
        assert_eq!(apps[0]["rate"].as_integer(), Some(50));
        for i in 0..3 {
            assert!(
                !text.contains(app_credentials(i).secret.expose()),
                "no secret in the file"
            );
        }
    }
}
