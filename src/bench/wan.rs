//! The wan scenario (issue #26): the sweep's pacing with the API far away (50, 200 and 400 ms round trips, with
//! jitter, at the mock), kickq counting each call from its estimated arrival beside kickq counting it from its
//! answer (the old rule: the baseline), and live-kick latency at light load at 200 ms.

use super::env::BenchEnv;
use super::error::BenchError;
use super::figures::{quantile, tally, Accounting, Figure, Report, Target};
use super::publish::publish_all;
use super::runs::{collect, first_arrivals, measure, queue_depth, start, Consumer, RunResult, STALL};
use super::sweep::{summary_note, DUPLICATES, USERS_PER_ROOM};
use super::wait::until_kicked;
use super::workload::{self, Kick, Pair};
use crate::amqp::publish::{persistent_json, Publisher};
use crate::amqp::topology::Names;
use crate::mock_zego::{Distance, MockZego};
use crate::ratelimit::Counting;
use lapin::types::FieldTable;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Rooms of the sweep at scale 1: 5,000 users, 1,000 full calls, 20 s at 50 calls/s.
pub const ROOMS: usize = 250;
/// The distances: (one-way ms, jitter ms each way); round trips 50, 200, 400 ms.
pub const DISTANCES: [(u64, u64); 3] = [(25, 5), (100, 20), (200, 40)];
/// The distance of the live-latency runs (200 ms round trip).
pub const LIVE_DISTANCE: (u64, u64) = (100, 20);
/// Live kicks at scale 1 (10 s at one per [`LIVE_INTERVAL`]).
pub const LIVE_KICKS: usize = 100;
/// Time between live kicks: light load, the budget always has room.
pub const LIVE_INTERVAL: Duration = super::light::INTERVAL;
/// Target: steady calls/s / L at 200 ms round trip.
pub const TARGET_RATE_200: f64 = 0.95;
/// Target: steady calls/s / L at 400 ms round trip.
pub const TARGET_RATE_400: f64 = 0.92;
/// Target: live p50 at most the round trip plus this, ms.
pub const TARGET_LIVE_SLACK_MS: f64 = 15.0;
/// Fraction of a run's calls left out at each end of the steady rate (ramp up, tail).
pub const EDGE: f64 = 0.1;
/// The warm-up kick's room in the live runs.
const WARM_UP_ROOM: &str = "wan-warmup";

/// One distance's two sweeps.
struct AtDistance {
    rtt_ms: u64,
    ours: RunResult,
    base: RunResult,
}

/// One live run's latencies (ms, sorted) and what it kicked.
struct Live {
    latencies: Vec<f64>,
    kicked: HashSet<Pair>,
    acked: u64,
}

fn distance((one_way, jitter): (u64, u64)) -> Result<Distance, BenchError> {
    Distance::new(one_way, jitter).map_err(|e| BenchError::Mock(std::io::Error::other(e)))
}

/// Runs the scenario.
pub async fn run(env: &BenchEnv) -> Result<Report, BenchError> {
    let rate = env.settings().rate;
    let rooms = env.scaled(ROOMS, 1);
    let kicks = workload::sweep(rooms, USERS_PER_ROOM, DUPLICATES);
    let expected = workload::pairs(&kicks);
    let minimum = workload::minimum_calls(&expected);
    let bodies: Vec<Vec<u8>> = kicks.iter().map(Kick::body).collect();
    let live: Vec<Kick> = (0..env.scaled(LIVE_KICKS, 5)).map(workload::live_kick).collect();
    let mock = env.mock(rate).await?;

    let (runs, live_ours, live_base) = env
        .scoped("wan", |names| {
            let (bodies, expected, mock, live) = (&bodies, &expected, &mock, &live);
            async move {
                let kickq = |counting: Counting| {
                    let mut cfg = env.worker_config(&names, &mock.base_url(), rate);
                    cfg.rate_counting = counting;
                    Consumer::Kickq(Box::new(cfg))
                };
                let conn = env.connect("publish").await?;
                let n = bodies.len() as u64;
                let mut runs = Vec::with_capacity(DISTANCES.len());
                for d in DISTANCES {
                    mock.set_distance(distance(d)?);
                    publish_all(&conn, &names.requests, bodies.iter().cloned()).await?;
                    let ours = measure(env, &names, mock, kickq(Counting::Arrival), expected, minimum, n).await?;
                    publish_all(&conn, &names.requests, bodies.iter().cloned()).await?;
                    let base = measure(env, &names, mock, kickq(Counting::Answer), expected, minimum, n).await?;
                    runs.push(AtDistance {
                        rtt_ms: 2 * d.0,
                        ours,
                        base,
                    });
                }
                crate::amqp::connect::close(&conn, "wan published").await;
                mock.set_distance(distance(LIVE_DISTANCE)?);
                let live_ours = paced(env, &names, mock, kickq(Counting::Arrival), live).await?;
                let live_base = paced(env, &names, mock, kickq(Counting::Answer), live).await?;
                mock.set_distance(Distance::default());
                Ok((runs, live_ours, live_base))
            }
        })
        .await?;

    let mut r = Report::new("wan");
    r.param("rate", rate);
    r.param("scale", env.settings().scale);
    r.param("rooms", rooms);
    r.param("messages", kicks.len());
    r.param("users", expected.len());
    r.param("live_kicks", live.len());
    let l = f64::from(rate);
    for d in &runs {
        let rtt = d.rtt_ms;
        let steady = |x: &RunResult| steady_rate(&arrivals_us(x)) / l;
        let mut f = Figure::new(format!("calls/s / L, mid 80%, {rtt}ms"), steady(&d.ours)).vs(steady(&d.base));
        if rtt == 200 {
            f = f.target(Target::AtLeast(TARGET_RATE_200));
        } else if rtt == 400 {
            f = f.target(Target::AtLeast(TARGET_RATE_400));
        }
        r.figures.push(f);
        let busiest = |x: &RunResult| x.counters.max_calls_in_1s as f64;
        r.figures.push(
            Figure::new(format!("busiest 1 s at mock, {rtt}ms"), busiest(&d.ours))
                .vs(busiest(&d.base))
                .target(Target::AtMost(l)),
        );
        let limited = |x: &RunResult| x.counters.rate_limited as f64;
        r.figures.push(
            Figure::new(format!("206 answers, {rtt}ms"), limited(&d.ours))
                .vs(limited(&d.base))
                .target(Target::AtMost(0.0)),
        );
        let wall = |x: &RunResult| x.wall.as_secs_f64();
        r.figures
            .push(Figure::new(format!("wall (s), {rtt}ms"), wall(&d.ours)).vs(wall(&d.base)));
        // Tokens that come sooner can also mean fewer users per call: the
        // users kicked per second is what a sweep feels.
        let calls = |x: &RunResult| x.calls.len() as f64;
        r.figures
            .push(Figure::new(format!("calls, {rtt}ms (minimum {minimum})"), calls(&d.ours)).vs(calls(&d.base)));
        let users_per_sec = |x: &RunResult| expected.len() as f64 / x.wall.as_secs_f64().max(f64::EPSILON);
        r.figures.push(
            Figure::new(format!("users/s over the wall, {rtt}ms"), users_per_sec(&d.ours)).vs(users_per_sec(&d.base)),
        );
    }
    let live_rtt = (2 * LIVE_DISTANCE.0) as f64;
    let q = |m: &Live, p: f64| quantile(&m.latencies, p);
    r.figures.push(
        Figure::new("live p50 publish→mock, 200ms (ms)", q(&live_ours, 0.5))
            .vs(q(&live_base, 0.5))
            .target(Target::AtMost(live_rtt + TARGET_LIVE_SLACK_MS)),
    );
    r.figures
        .push(Figure::new("live p99 publish→mock, 200ms (ms)", q(&live_ours, 0.99)).vs(q(&live_base, 0.99)));
    let live_expected = workload::pairs(&live);
    let served = |m: &Live| tally(&live_expected, &m.kicked).0 as f64;
    r.figures
        .push(Figure::new("live kicks served, 200ms", served(&live_ours)).vs(served(&live_base)));

    let mut acc = Accounting {
        messages: kicks.len() as u64,
        expected: expected.len() as u64,
        kickq_kicked: u64::MAX,
        kickq_acked: Some(u64::MAX),
        baseline_kicked: Some(u64::MAX),
        baseline_unexpected: Some(0),
        baseline_acked: Some(u64::MAX),
        same_set: Some(true),
        ..Accounting::default()
    };
    let first = runs.first().map(|d| &d.ours.kicked);
    for d in &runs {
        let (kk, ku) = tally(&expected, &d.ours.kicked);
        let (bk, bu) = tally(&expected, &d.base.kicked);
        acc.kickq_kicked = acc.kickq_kicked.min(kk);
        acc.kickq_unexpected += ku;
        acc.kickq_acked = acc.kickq_acked.map(|a| a.min(d.ours.acked));
        acc.baseline_kicked = acc.baseline_kicked.map(|k| k.min(bk));
        acc.baseline_unexpected = acc.baseline_unexpected.map(|u| u + bu);
        acc.baseline_acked = acc.baseline_acked.map(|a| a.min(d.base.acked));
        let same = Some(&d.ours.kicked) == first && Some(&d.base.kicked) == first;
        acc.same_set = acc.same_set.map(|s| s && same);
        summary_note(&mut r, &d.ours);
        summary_note(&mut r, &d.base);
    }
    r.accounting = Some(acc);
    let live_unexpected = |m: &Live| m.kicked.iter().filter(|p| !live_expected.contains(*p)).count();
    if live_unexpected(&live_ours) + live_unexpected(&live_base) > 0
        || live_ours.acked != live.len() as u64
        || live_base.acked != live.len() as u64
    {
        r.notes.push(format!(
            "live runs: {} and {} unrequested pairs kicked, {} and {} of {} acked (kickq, baseline)",
            live_unexpected(&live_ours),
            live_unexpected(&live_base),
            live_ours.acked,
            live_base.acked,
            live.len()
        ));
    }
    r.notes.push(format!(
        "kickq = rate window counting each call from its estimated arrival (answer less the fastest recent round trip); baseline = the same kickq counting from the answer (the old rule); the mock delays each leg by one-way ± uniform jitter: {}",
        DISTANCES
            .iter()
            .map(|(o, j)| format!("{o}±{j} ms"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    r.notes.push(format!(
        "calls/s / L, mid 80% = calls between the arrival of the run's call number {:.0}% and that of number {:.0}% (arrival order) / that time / L: ramp up and tail left out; busiest 1 s = most calls arriving at the mock in any sliding 1 s window (the mock's strict limit counts arrivals)",
        EDGE * 100.0,
        (1.0 - EDGE) * 100.0
    ));
    r.notes.push(format!(
        "live = {} one-user kicks {} ms apart to the live lane with nothing else queued (light load), {}±{} ms one way; latency = publish (just before basic.publish) to the call's arrival at the mock, where the user is kicked: it includes the outgoing leg (~{} ms), the answer takes another; a warm-up kick first",
        live.len(),
        LIVE_INTERVAL.as_millis(),
        LIVE_DISTANCE.0,
        LIVE_DISTANCE.1,
        LIVE_DISTANCE.0
    ));
    r.notes.push(
        "accounting: kickq's columns cover its three sweeps, the baseline's its three; the live kicks are counted by 'live kicks served'"
            .into(),
    );
    Ok(r)
}

/// The arrivals at the mock of a run's calls, in µs, sorted.
fn arrivals_us(run: &RunResult) -> Vec<u64> {
    let mut at: Vec<u64> = run.calls.iter().map(|c| c.at_us).collect();
    at.sort_unstable();
    at
}

/// Calls per second over the middle of sorted arrivals (µs): from the call
/// at [`EDGE`] of them to the one at 1 − [`EDGE`], the calls between / the
/// time between. 0 with fewer than two calls in that middle or no time.
fn steady_rate(sorted_us: &[u64]) -> f64 {
    let n = sorted_us.len();
    if n < 2 {
        return 0.0;
    }
    let lo = ((n as f64) * EDGE).floor() as usize;
    let hi = n - 1 - lo;
    if hi <= lo {
        return 0.0;
    }
    let secs = (sorted_us[hi] - sorted_us[lo]) as f64 / 1e6;
    if secs <= 0.0 {
        return 0.0;
    }
    (hi - lo) as f64 / secs
}

/// Starts the consumer, warms it up with one kick, publishes `live` one
/// [`LIVE_INTERVAL`] apart to the live lane, waits for all of them, stops it.
async fn paced(
    env: &BenchEnv,
    names: &Names,
    mock: &MockZego,
    consumer: Consumer,
    live: &[Kick],
) -> Result<Live, BenchError> {
    let conn = env.connect("wan-live").await?;
    let publisher = Publisher::open(&conn).await?;
    let running = start(env, names, mock, consumer).await;
    let props = || persistent_json(None, FieldTable::default());
    let work = async {
        let warm = Kick {
            room: WARM_UP_ROOM.into(),
            users: vec!["w".into()],
        };
        publisher.publish(&names.requests, &warm.body(), props()).await?;
        until_kicked(mock, &workload::pairs([&warm]), 1, STALL).await?;
        let mut sent_at: HashMap<String, Instant> = HashMap::with_capacity(live.len());
        let mut pending = Vec::with_capacity(live.len());
        let mut tick = tokio::time::interval(LIVE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for kick in live {
            tick.tick().await;
            let body = kick.body();
            sent_at.insert(kick.room.clone(), Instant::now());
            pending.push(publisher.send(&names.requests, &body, props()).await?);
        }
        for p in pending {
            p.confirmed().await?;
        }
        until_kicked(mock, &workload::pairs(live), live.len() as u64, STALL).await?;
        Ok::<_, BenchError>(sent_at)
    };
    let (running, outcome) = running.until(work).await?;
    let stopped = running.stop().await;
    crate::amqp::connect::close(&conn, "wan live done").await;
    let sent_at = outcome?;
    let (started, _) = stopped?;
    let left = queue_depth(env, &names.requests).await?;
    let run = collect(mock, started, (live.len() as u64 + 1).saturating_sub(left));
    let first = first_arrivals(mock, &run.calls);
    let mut latencies: Vec<f64> = sent_at
        .iter()
        .filter_map(|(room, sent)| first.get(room.as_str()).map(|at| at.saturating_duration_since(*sent)))
        .map(|d| d.as_secs_f64() * 1000.0)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let mut kicked = run.kicked;
    kicked.retain(|(room, _)| room != WARM_UP_ROOM);
    Ok(Live {
        latencies,
        kicked,
        // The warm-up message is acked too.
        acked: run.acked.saturating_sub(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_rate_leaves_out_both_ends() {
        // 10 calls: a slow start, 8 at 50/s, a late tail.
        let mut at = vec![0u64];
        at.extend((0..8).map(|i| 1_000_000 + i * 20_000));
        at.push(9_000_000);
        // EDGE 0.1 of 10 calls: from call 1 to call 8, 7 calls in 0.14 s.
        assert!((steady_rate(&at) - 50.0).abs() < 1e-9, "{}", steady_rate(&at));
        assert_eq!(steady_rate(&[]), 0.0);
        assert_eq!(steady_rate(&[5]), 0.0);
        assert_eq!(steady_rate(&[5, 5]), 0.0);
        assert!((steady_rate(&[0, 500_000]) - 2.0).abs() < 1e-9);
    }

    #[test]
    fn the_distances_are_valid() {
        for d in DISTANCES.into_iter().chain([LIVE_DISTANCE]) {
            assert!(distance(d).is_ok(), "{d:?}");
        }
    }
}
