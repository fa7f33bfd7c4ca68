//! The light-load scenario: one kick every 100 ms for 30 s, and the latency from publish (the bench's clock) to
//! the call's arrival at the mock (the mock's clock, mapped onto the same monotonic clock), for kickq and the
//! baseline.

use super::env::BenchEnv;
use super::error::BenchError;
use super::figures::{quantile, tally, Accounting, Figure, Report, Target};
use super::runs::{collect, first_arrivals, queue_depth, start, Consumer, STALL};
use super::wait::until_kicked;
use super::workload::{self, Kick};
use crate::amqp::publish::{persistent_json, Publisher};
use crate::amqp::topology::Names;
use crate::mock_zego::MockZego;
use lapin::types::FieldTable;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Kicks at scale 1.
pub const KICKS: usize = 300;
/// Time between kicks.
pub const INTERVAL: Duration = Duration::from_millis(100);
/// Target: median latency, ms.
pub const TARGET_P50_MS: f64 = 5.0;
/// Target: 99th percentile latency, ms.
pub const TARGET_P99_MS: f64 = 25.0;

/// One consumer's latencies, in ms, sorted, and its run.
struct Measured {
    latencies: Vec<f64>,
    kicked: HashSet<workload::Pair>,
    acked: u64,
}

/// Runs the scenario.
pub async fn run(env: &BenchEnv) -> Result<Report, BenchError> {
    let rate = env.settings().rate;
    let n = env.scaled(KICKS, 5);
    let mock = env.mock(rate).await?;
    let (k, b) = env
        .scoped("light", |names| {
            let mock = &mock;
            async move {
                let cfg = env.worker_config(&names, &mock.base_url(), rate);
                let k = paced(env, &names, mock, Consumer::Kickq(Box::new(cfg)), n).await?;
                let b = paced(env, &names, mock, Consumer::Baseline { rate }, n).await?;
                Ok((k, b))
            }
        })
        .await?;
    let expected = workload::pairs(&kicks(n));
    let mut r = Report::new("light");
    r.param("rate", rate);
    r.param("scale", env.settings().scale);
    r.param("kicks", n);
    r.param("interval_ms", INTERVAL.as_millis());
    let q = |m: &Measured, p: f64| quantile(&m.latencies, p);
    r.figures.push(
        Figure::new("p50 publish to call (ms)", q(&k, 0.5))
            .vs(q(&b, 0.5))
            .target(Target::AtMost(TARGET_P50_MS)),
    );
    r.figures.push(
        Figure::new("p99 publish to call (ms)", q(&k, 0.99))
            .vs(q(&b, 0.99))
            .target(Target::AtMost(TARGET_P99_MS)),
    );
    r.figures
        .push(Figure::new("max publish to call (ms)", q(&k, 1.0)).vs(q(&b, 1.0)));
    let (kk, ku) = tally(&expected, &k.kicked);
    let (bk, bu) = tally(&expected, &b.kicked);
    r.accounting = Some(Accounting {
        messages: n as u64,
        expected: expected.len() as u64,
        kickq_kicked: kk,
        kickq_unexpected: ku,
        kickq_acked: Some(k.acked),
        baseline_kicked: Some(bk),
        baseline_unexpected: Some(bu),
        baseline_acked: Some(b.acked),
        same_set: Some(k.kicked == b.kicked),
    });
    r.notes.push(
        "latency = publish (taken just before basic.publish) to the call's arrival at the mock; a warm-up kick first"
            .into(),
    );
    Ok(r)
}

fn kicks(n: usize) -> Vec<Kick> {
    (0..n).map(workload::light_kick).collect()
}

/// Starts the consumer, warms it up with one kick, then publishes `n` kicks
/// `INTERVAL` apart and waits for all of them.
async fn paced(
    env: &BenchEnv,
    names: &Names,
    mock: &MockZego,
    consumer: Consumer,
    n: usize,
) -> Result<Measured, BenchError> {
    let conn = env.connect("light").await?;
    let publisher = Publisher::open(&conn).await?;
    let running = start(env, names, mock, consumer).await;
    let work = async {
        let warm = Kick {
            room: "light-warmup".into(),
            users: vec!["w".into()],
        };
        publisher
            .publish(
                &names.requests,
                &warm.body(),
                persistent_json(None, FieldTable::default()),
            )
            .await?;
        until_kicked(mock, &workload::pairs([&warm]), 1, STALL).await?;
        let all = kicks(n);
        let mut sent_at: HashMap<String, Instant> = HashMap::with_capacity(n);
        let mut pending = Vec::with_capacity(n);
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for kick in &all {
            tick.tick().await;
            let body = kick.body();
            sent_at.insert(kick.room.clone(), Instant::now());
            pending.push(
                publisher
                    .send(&names.requests, &body, persistent_json(None, FieldTable::default()))
                    .await?,
            );
        }
        for p in pending {
            p.confirmed().await?;
        }
        until_kicked(mock, &workload::pairs(&all), n as u64, STALL).await?;
        Ok::<_, BenchError>(sent_at)
    };
    let (running, outcome) = running.until(work).await?;
    let stopped = running.stop().await;
    crate::amqp::connect::close(&conn, "light done").await;
    let sent_at = outcome?;
    let (started, _) = stopped?;
    let left = queue_depth(env, &names.requests).await?;
    let run = collect(mock, started, (n as u64 + 1).saturating_sub(left));
    let first = first_arrivals(mock, &run.calls);
    let mut latencies: Vec<f64> = sent_at
        .iter()
        .filter_map(|(room, sent)| first.get(room.as_str()).map(|at| at.saturating_duration_since(*sent)))
        .map(|d| d.as_secs_f64() * 1000.0)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let mut kicked = run.kicked;
    kicked.retain(|(room, _)| room != "light-warmup");
    Ok(Measured {
        latencies,
        kicked,
        // The warm-up message is acked too.
        acked: run.acked.saturating_sub(1),
    })
}
