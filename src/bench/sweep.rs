//! The sweep scenario: 20,000 one-user messages over 1,000 rooms (20 users each), shuffled, 10% duplicates,
//! against an API limit L; kickq beside the baseline, then kickq again with the audit ledger on.

use super::env::BenchEnv;
use super::error::BenchError;
use super::figures::{tally, Accounting, Figure, Report, Target};
use super::publish::publish_all;
use super::runs::{measure, Consumer, RunResult};
use super::workload::{self, Kick};
use crate::ledger::Ledger;

/// Rooms at scale 1.
pub const ROOMS: usize = 1000;
/// Users per room.
pub const USERS_PER_ROOM: usize = 20;
/// Fraction of messages published twice.
pub const DUPLICATES: f64 = 0.1;
/// Target: minimum calls / calls made.
pub const TARGET_EFFICIENCY: f64 = 0.98;
/// Target: wall time / ideal (minimum / L).
pub const TARGET_WALL: f64 = 1.03;
/// Target: the sweep's wall with outcome events on over its wall with them
/// off (issue #15: events must not slow kicks).
pub const TARGET_EVENTS_WALL: f64 = 1.02;

/// Runs the sweep (and its ledger-on repeat when the bench has a database).
pub async fn run(env: &BenchEnv) -> Result<Report, BenchError> {
    let rate = env.settings().rate;
    let rooms = env.scaled(ROOMS, 1);
    let kicks = workload::sweep(rooms, USERS_PER_ROOM, DUPLICATES);
    let expected = workload::pairs(&kicks);
    let minimum = workload::minimum_calls(&expected);
    let bodies: Vec<Vec<u8>> = kicks.iter().map(Kick::body).collect();
    let mock = env.mock(rate).await?;

    let (k, b) = env
        .scoped("sweep", |names| {
            let (bodies, expected, mock) = (&bodies, &expected, &mock);
            async move {
                let conn = env.connect("publish").await?;
                publish_all(&conn, &names.requests, bodies.iter().cloned()).await?;
                let cfg = env.worker_config(&names, &mock.base_url(), rate);
                let n = bodies.len() as u64;
                let k = measure(env, &names, mock, Consumer::Kickq(Box::new(cfg)), expected, minimum, n).await?;
                publish_all(&conn, &names.requests, bodies.iter().cloned()).await?;
                let b = measure(env, &names, mock, Consumer::Baseline { rate }, expected, n, n).await?;
                crate::amqp::connect::close(&conn, "sweep published").await;
                Ok((k, b))
            }
        })
        .await?;

    let ledger = match env.create_database().await {
        Ok(None) => Err("no database URL".to_owned()),
        Err(e) => Err(format!("cannot create a database: {e}")),
        Ok(Some(db)) => {
            let run = env
                .scoped("sweep-ledger", |names| {
                    let (bodies, expected, mock, db) = (&bodies, &expected, &mock, &db);
                    async move {
                        // Migrations are applied before the clock starts, as
                        // `kickq migrate` would be in a deployment.
                        let l = Ledger::connect(db.expose()).await?;
                        l.migrate().await?;
                        let conn = env.connect("publish").await?;
                        publish_all(&conn, &names.requests, bodies.iter().cloned()).await?;
                        crate::amqp::connect::close(&conn, "sweep published").await;
                        let mut cfg = env.worker_config(&names, &mock.base_url(), rate);
                        cfg.database_url = Some(db.clone());
                        let n = bodies.len() as u64;
                        measure(env, &names, mock, Consumer::Kickq(Box::new(cfg)), expected, minimum, n).await
                    }
                })
                .await;
            let dropped = env.drop_databases().await;
            let run = run?;
            dropped?;
            Ok(run)
        }
    };

    // Outcome events on (KICKQ_EVENTS): one confirmed event per delivery
    // before its ack, to `<ns>.events`, with a queue bound to every event so
    // that they are routed and stored, as with a real consumer.
    let events = env
        .scoped("sweep-events", |names| {
            let (bodies, expected, mock) = (&bodies, &expected, &mock);
            async move {
                let conn = env.connect("publish").await?;
                let ch = conn.create_channel().await?;
                crate::amqp::topology::declare_events(&ch, &names).await?;
                let sink = format!("{}.bench-event-sink", names.namespace);
                // Exclusive to this connection: RabbitMQ 4.x deprecates
                // transient non-exclusive queues (refused by default from 4.3).
                ch.queue_declare(
                    sink.as_str().into(),
                    lapin::options::QueueDeclareOptions {
                        exclusive: true,
                        auto_delete: true,
                        ..Default::default()
                    },
                    lapin::types::FieldTable::default(),
                )
                .await?;
                ch.queue_bind(
                    sink.as_str().into(),
                    names.events.as_str().into(),
                    "#".into(),
                    Default::default(),
                    lapin::types::FieldTable::default(),
                )
                .await?;
                publish_all(&conn, &names.requests, bodies.iter().cloned()).await?;
                let mut cfg = env.worker_config(&names, &mock.base_url(), rate);
                cfg.events = true;
                let n = bodies.len() as u64;
                let run = measure(env, &names, mock, Consumer::Kickq(Box::new(cfg)), expected, minimum, n).await;
                let stored = ch
                    .queue_declare(
                        sink.as_str().into(),
                        lapin::options::QueueDeclareOptions {
                            passive: true,
                            ..Default::default()
                        },
                        lapin::types::FieldTable::default(),
                    )
                    .await
                    .map(|q| q.message_count());
                let _ = ch.queue_delete(sink.as_str().into(), Default::default()).await;
                crate::amqp::connect::close(&conn, "sweep published").await;
                Ok((run?, stored?))
            }
        })
        .await;

    let mut r = Report::new("sweep");
    r.param("rate", rate);
    r.param("scale", env.settings().scale);
    r.param("rooms", rooms);
    r.param("messages", kicks.len());
    r.param("users", expected.len());
    figures(&mut r, &k, &b, minimum, rate);
    let (kk, ku) = tally(&expected, &k.kicked);
    let (bk, bu) = tally(&expected, &b.kicked);
    let mut acc = Accounting {
        messages: kicks.len() as u64,
        expected: expected.len() as u64,
        kickq_kicked: kk,
        kickq_unexpected: ku,
        kickq_acked: Some(k.acked),
        baseline_kicked: Some(bk),
        baseline_unexpected: Some(bu),
        baseline_acked: Some(b.acked),
        same_set: Some(k.kicked == b.kicked),
    };
    match &ledger {
        Ok(l) => {
            let wall = |x: &RunResult| x.wall.as_secs_f64();
            r.figures
                .push(Figure::new("wall, ledger on vs off (s)", wall(l)).vs(wall(&k)));
            r.figures.push(
                Figure::new("efficiency, ledger on", minimum as f64 / l.counters.calls.max(1) as f64)
                    .target(Target::AtLeast(TARGET_EFFICIENCY)),
            );
            r.figures.push(
                Figure::new("206 answers, ledger on", l.counters.rate_limited as f64).target(Target::AtMost(0.0)),
            );
            // The ledger-on run is kickq too: its users count with kickq's.
            let (lk, lu) = tally(&expected, &l.kicked);
            acc.kickq_kicked = acc.kickq_kicked.min(lk);
            acc.kickq_unexpected += lu;
            if l.acked != k.acked {
                acc.kickq_acked = Some(l.acked.min(k.acked));
            }
            acc.same_set = Some(k.kicked == b.kicked && l.kicked == k.kicked);
            r.notes.push(
                "the ledger rows use the baseline column for the ledger-off kickq run; accounting covers both kickq runs"
                    .into(),
            );
        }
        Err(why) => r.notes.push(format!("ledger run skipped: {why}")),
    }
    match &events {
        Ok((e, stored)) => {
            let wall = |x: &RunResult| x.wall.as_secs_f64();
            r.figures
                .push(Figure::new("wall, events on vs off (s)", wall(e)).vs(wall(&k)));
            r.figures.push(
                Figure::new("wall events on / off", wall(e) / wall(&k).max(f64::EPSILON))
                    .target(Target::AtMost(TARGET_EVENTS_WALL)),
            );
            r.figures
                .push(Figure::new("events stored, events on", f64::from(*stored)));
            r.figures.push(
                Figure::new("206 answers, events on", e.counters.rate_limited as f64).target(Target::AtMost(0.0)),
            );
            let (ek, eu) = tally(&expected, &e.kicked);
            acc.kickq_kicked = acc.kickq_kicked.min(ek);
            acc.kickq_unexpected += eu;
            r.notes.push(format!(
                "events on: one confirmed event per delivery to a queue bound to '#' ({} messages, {stored} events stored)",
                kicks.len()
            ));
        }
        Err(e) => r.notes.push(format!("events run failed: {e}")),
    }
    r.accounting = Some(acc);
    summary_note(&mut r, &k);
    if let Ok(l) = &ledger {
        summary_note(&mut r, l);
    }
    r.notes.push(format!(
        "wall = consumer start to the last kicking call's arrival; ideal = minimum / L = {:.1} s",
        minimum as f64 / rate as f64
    ));
    Ok(r)
}

fn figures(r: &mut Report, k: &RunResult, b: &RunResult, minimum: u64, rate: u32) {
    let calls = |x: &RunResult| x.counters.calls as f64;
    let eff = |x: &RunResult| minimum as f64 / x.counters.calls.max(1) as f64;
    let ideal = minimum as f64 / rate as f64;
    let wall = |x: &RunResult| x.wall.as_secs_f64();
    r.figures.push(Figure::new("calls", calls(k)).vs(calls(b)));
    r.figures.push(Figure::new("minimum calls", minimum as f64));
    r.figures.push(
        Figure::new("efficiency (minimum / calls)", eff(k))
            .vs(eff(b))
            .target(Target::AtLeast(TARGET_EFFICIENCY)),
    );
    r.figures.push(Figure::new("wall (s)", wall(k)).vs(wall(b)));
    r.figures.push(
        Figure::new("wall / ideal", wall(k) / ideal)
            .vs(wall(b) / ideal)
            .target(Target::AtMost(TARGET_WALL)),
    );
    r.figures.push(
        Figure::new(
            format!("max calls in any 1 s (L={rate})"),
            k.counters.max_calls_in_1s as f64,
        )
        .vs(b.counters.max_calls_in_1s as f64),
    );
    r.figures.push(
        Figure::new("206 answers", k.counters.rate_limited as f64)
            .vs(b.counters.rate_limited as f64)
            .target(Target::AtMost(0.0)),
    );
}

/// Says so when the worker's own `RunSummary` disagrees with the queue.
pub fn summary_note(r: &mut Report, run: &RunResult) {
    if run.reported_acked != run.acked {
        r.notes.push(format!(
            "kickq's RunSummary reported {} acked where the queue shows {} (see BENCHMARKS.md: a shutdown race drops the last session's tally)",
            run.reported_acked, run.acked
        ));
    }
}
