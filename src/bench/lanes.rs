//! The lanes scenario: live-kick latency (publish to the call's arrival at the mock, as light load measures it)
//! with the app idle and while a bulk sweep saturates its budget, for kickq's two lanes and for the naive
//! one-FIFO-queue design (the baseline consumer on one queue holding the sweep, then the kicks), and the share
//! of the budget the sweep still gets during the live traffic.

use super::env::BenchEnv;
use super::error::BenchError;
use super::figures::{quantile, tally, Accounting, Figure, Report, Target};
use super::publish::publish_all;
use super::runs::{first_arrivals, queue_depth, start, Consumer, STALL};
use super::workload::{self, Kick, Pair};
use crate::amqp::publish::{persistent_json, Publisher};
use crate::amqp::topology::{Lane, Names};
use crate::mock_zego::{CallRecord, Counters, MockZego};
use lapin::options::QueuePurgeOptions;
use lapin::types::FieldTable;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Live kicks at scale 1 (30 s of live traffic).
pub const KICKS: usize = 300;
/// Time between live kicks.
pub const INTERVAL: Duration = super::light::INTERVAL;
/// The sweep's size in seconds of the app's budget at scale 1: 80 s of full
/// calls (20,000 users at 50/s), so that it still has work well after the 30 s
/// of live traffic and its start.
pub const SWEEP_SECONDS: f64 = 80.0;
/// Time the sweep runs alone, after the warm-up kick, before the first live
/// kick: the budget is then saturated, past any start-up burst.
pub const SETTLE: Duration = Duration::from_secs(1);
/// How long past the last live publish kickq may take to have called for
/// every live kick (it needs milliseconds; more is a failure the accounting shows).
pub const KICKQ_GRACE: Duration = Duration::from_secs(10);
/// How long past the last live publish the baseline is waited for: a FIFO
/// queue serves the kicks only after the whole sweep ahead of them, minutes
/// at scale 1, so it is stopped then and its unserved kicks count as timed out.
pub const BASELINE_GRACE: Duration = Duration::from_secs(5);
/// kickq's drain deadline at each run's stop: the sweep's users in hand then
/// need not be sent (the sweep is purged afterwards); the product's 10 s
/// would only lengthen the scenario.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(1);
/// Target: p99 live latency during the sweep, in token intervals (1 / L).
pub const TARGET_P99_TOKENS: f64 = 3.0;
/// Target: calls per second during the live traffic (live and bulk), / L.
pub const TARGET_BUDGET_USED: f64 = 0.95;
/// How often the mock's kick log is read while waiting for kicks.
const POLL: Duration = Duration::from_millis(100);
/// The warm-up kick's room.
const WARM_UP_ROOM: &str = "lanes-warmup";

/// Runs the scenario.
pub async fn run(env: &BenchEnv) -> Result<Report, BenchError> {
    let rate = env.settings().rate;
    let n = env.scaled(KICKS, 5);
    let bulk_n = env.scaled((SWEEP_SECONDS * f64::from(rate)).round() as usize, 1);
    let live: Vec<Kick> = (0..n).map(workload::live_kick).collect();
    let bulk: Vec<Kick> = (0..bulk_n).map(workload::bulk_kick).collect();
    let bodies: Vec<Vec<u8>> = bulk.iter().map(Kick::body).collect();
    let mock = env.mock(rate).await?;
    let (idle, swept, base) = env
        .scoped("lanes", |names| {
            let (mock, live, bodies) = (&mock, &live, &bodies);
            async move {
                let kickq = |names: &Names| {
                    let mut cfg = env.worker_config(names, &mock.base_url(), rate);
                    cfg.coalescer.drain_deadline = DRAIN_DEADLINE;
                    Consumer::Kickq(Box::new(cfg))
                };
                let live_q = names.queue(Lane::Live).to_owned();
                let idle = paced(
                    env,
                    &names,
                    mock,
                    kickq(&names),
                    live,
                    Pace::kickq(&live_q, Duration::ZERO),
                )
                .await?;
                let conn = env.connect("lanes").await?;
                publish_all(&conn, &names.bulk, bodies.iter().cloned()).await?;
                let swept = paced(env, &names, mock, kickq(&names), live, Pace::kickq(&live_q, SETTLE)).await?;
                let ch = conn.create_channel().await?;
                ch.queue_purge(names.bulk.as_str().into(), QueuePurgeOptions::default())
                    .await?;
                // The naive design: one queue, the sweep first, then the live kicks behind it.
                publish_all(&conn, &names.requests, bodies.iter().cloned()).await?;
                let base = paced(
                    env,
                    &names,
                    mock,
                    Consumer::Baseline { rate },
                    live,
                    Pace {
                        queue: &names.requests,
                        warm_up: false,
                        settle: SETTLE,
                        grace: BASELINE_GRACE,
                    },
                )
                .await?;
                crate::amqp::connect::close(&conn, "lanes done").await;
                Ok((idle, swept, base))
            }
        })
        .await?;

    let token_ms = 1000.0 / f64::from(rate);
    let mut r = Report::new("lanes");
    r.param("rate", rate);
    r.param("scale", env.settings().scale);
    r.param("kicks", n);
    r.param("interval_ms", INTERVAL.as_millis());
    r.param("sweep_users", workload::users(&bulk));
    let q = |m: &Paced, p: f64| quantile(&m.latencies, p);
    r.figures.push(Figure::new("p50 live, no sweep (ms)", q(&idle, 0.5)));
    r.figures.push(Figure::new("p99 live, no sweep (ms)", q(&idle, 0.99)));
    r.figures
        .push(Figure::new("p50 live, during sweep (ms)", q(&swept, 0.5)).vs(q(&base, 0.5)));
    r.figures.push(
        Figure::new("p99 live, during sweep (ms)", q(&swept, 0.99))
            .vs(q(&base, 0.99))
            .target(Target::AtMost(TARGET_P99_TOKENS * token_ms)),
    );
    r.figures
        .push(Figure::new("max live, during sweep (ms)", q(&swept, 1.0)).vs(q(&base, 1.0)));
    r.figures
        .push(Figure::new("live kicks served, during sweep", swept.served as f64).vs(base.served as f64));
    let (k_rates, b_rates) = (swept.window_rates(), base.window_rates());
    r.figures.push(
        Figure::new("calls/s during live traffic / L", k_rates.all / f64::from(rate))
            .vs(b_rates.all / f64::from(rate))
            .target(Target::AtLeast(TARGET_BUDGET_USED)),
    );
    r.figures
        .push(Figure::new("sweep calls/s during live traffic", k_rates.bulk).vs(b_rates.bulk));
    r.figures.push(Figure::new(
        "sweep users left at stop",
        (swept.bulk_left * crate::zego::MAX_USERS_PER_CALL as u64) as f64,
    ));
    r.figures.push(
        Figure::new(
            "206 answers",
            (idle.counters.rate_limited + swept.counters.rate_limited) as f64,
        )
        .vs(base.counters.rate_limited as f64)
        .target(Target::AtMost(0.0)),
    );

    let expected = workload::pairs(&live);
    let mut requested = workload::pairs(&bulk);
    requested.extend(expected.iter().cloned());
    requested.insert((WARM_UP_ROOM.to_owned(), "w".to_owned()));
    let live_kicked = |m: &Paced| tally(&expected, &m.kicked).0;
    let unrequested = |m: &Paced| m.kicked.iter().filter(|p| !requested.contains(*p)).count() as u64;
    r.accounting = Some(Accounting {
        messages: n as u64,
        expected: expected.len() as u64,
        kickq_kicked: live_kicked(&idle).min(live_kicked(&swept)),
        kickq_unexpected: unrequested(&idle) + unrequested(&swept),
        kickq_acked: Some(idle.live_acked.min(swept.live_acked)),
        ..Accounting::default()
    });
    r.notes.push(
        "latency = publish (just before basic.publish) to the first call's arrival at the mock for the kick's room; kickq has a warm-up kick first; accounting covers kickq's live kicks in both of its runs (sweep users are counted only as requested)"
            .into(),
    );
    r.notes.push(
        "kickq: live kicks in <ns>.requests (the live lane), the sweep in <ns>.bulk; baseline: the bench's naive consumer (one call per message, same gate) on the one queue <ns>.requests holding the same sweep, then the same live kicks; the baseline has no no-sweep run (light load measures it)"
            .into(),
    );
    let unserved = n - base.served;
    if unserved > 0 {
        r.notes.push(format!(
            "baseline: {unserved} of {n} live kicks not served {} s after the last one was published (it was stopped then); each counts as publish to that moment, so its during-sweep latencies are lower bounds (p99 > {:.1} s, timed out); a FIFO queue serves them after the {} sweep calls ahead, {:.0} s at L",
            BASELINE_GRACE.as_secs(),
            q(&base, 0.99) / 1000.0,
            bulk_n,
            bulk_n as f64 / f64::from(rate)
        ));
    }
    if swept.bulk_left == 0 {
        r.notes.push(
            "the sweep ran out before kickq was stopped: its during-sweep figures may not hold a saturated budget"
                .into(),
        );
    }
    r.notes.push(format!(
        "calls/s during live traffic = calls arriving between the first and the last live publish / that time ({:.1} s for kickq); live kicks take 1000 / {} ms = {:.0} calls/s of it, the sweep the rest",
        k_rates.secs,
        INTERVAL.as_millis(),
        1000.0 / INTERVAL.as_millis() as f64
    ));
    Ok(r)
}

/// How one run paces its live kicks.
struct Pace<'a> {
    /// The queue they go to.
    queue: &'a str,
    /// Whether a warm-up kick goes first (and is waited for).
    warm_up: bool,
    /// Time between the start (or the warm-up) and the first live kick.
    settle: Duration,
    /// How long past the last publish every kick may take to be called for.
    grace: Duration,
}

impl<'a> Pace<'a> {
    fn kickq(queue: &'a str, settle: Duration) -> Self {
        Self {
            queue,
            warm_up: true,
            settle,
            grace: KICKQ_GRACE,
        }
    }
}

/// One run's live latencies and the calls around them.
struct Paced {
    /// In ms, sorted; an unserved kick counts as publish to the end of the wait.
    latencies: Vec<f64>,
    /// Live kicks called for within the grace.
    served: usize,
    /// The first and the last live publish, on the mock's clock (µs).
    window_us: (u64, u64),
    /// Every call of the run.
    calls: Vec<CallRecord>,
    counters: Counters,
    /// Every pair kicked in the run, the warm-up's and the sweep's included.
    kicked: HashSet<Pair>,
    /// Live messages acked (the warm-up excluded).
    live_acked: u64,
    /// Sweep messages still in the bulk queue after the stop.
    bulk_left: u64,
}

impl Paced {
    fn window_rates(&self) -> WindowRates {
        let calls: Vec<(u64, bool)> = self
            .calls
            .iter()
            .map(|c| {
                (
                    c.at_us,
                    c.room_id.as_deref().is_some_and(|r| r.starts_with("bulk-room-")),
                )
            })
            .collect();
        window_rates(&calls, self.window_us, INTERVAL)
    }
}

/// Calls per second within a window.
#[derive(Debug, Clone, Copy, PartialEq)]
struct WindowRates {
    /// Every call.
    all: f64,
    /// The sweep's calls.
    bulk: f64,
    /// The window's length.
    secs: f64,
}

/// Calls per second of `calls` (arrival in µs, whether it is the sweep's)
/// arriving within `window` (µs, both ends included), over the window's length
/// (at least `min_len`, so that one kick makes no division by zero).
fn window_rates(calls: &[(u64, bool)], window: (u64, u64), min_len: Duration) -> WindowRates {
    let (from, to) = window;
    let secs = (to.saturating_sub(from) as f64 / 1e6).max(min_len.as_secs_f64());
    let inside = calls.iter().filter(|(at, _)| (from..=to).contains(at));
    let (mut all, mut bulk) = (0u64, 0u64);
    for (_, is_bulk) in inside {
        all += 1;
        bulk += u64::from(*is_bulk);
    }
    WindowRates {
        all: all as f64 / secs,
        bulk: bulk as f64 / secs,
        secs,
    }
}

/// Latencies in ms, sorted: each sent kick's first call after its publish, or,
/// for a kick never called for, the time from its publish to `cutoff` (a
/// lower bound). Also how many were called for.
fn latencies(sent: &HashMap<String, Instant>, first: &HashMap<&str, Instant>, cutoff: Instant) -> (Vec<f64>, usize) {
    let mut served = 0;
    let mut out: Vec<f64> = sent
        .iter()
        .map(|(room, at)| {
            let end = match first.get(room.as_str()) {
                Some(call) => {
                    served += 1;
                    *call
                }
                None => cutoff,
            };
            end.saturating_duration_since(*at).as_secs_f64() * 1000.0
        })
        .collect();
    out.sort_by(f64::total_cmp);
    (out, served)
}

/// Waits until a call kicked someone in every one of `rooms`, or `limit`
/// passed; whether they all were.
async fn until_rooms_kicked(mock: &MockZego, rooms: &HashSet<String>, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let kicked: HashSet<String> = mock.kicked().into_iter().map(|k| k.room_id).collect();
        if rooms.iter().all(|r| kicked.contains(r)) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Starts the consumer, optionally warms it up with one kick, lets it settle,
/// publishes the live kicks `INTERVAL` apart to `pace.queue` and waits for
/// them (at most `pace.grace` past the last), then stops it. Whatever is
/// already queued (a sweep) is consumed alongside.
async fn paced(
    env: &BenchEnv,
    names: &Names,
    mock: &MockZego,
    consumer: Consumer,
    live: &[Kick],
    pace: Pace<'_>,
) -> Result<Paced, BenchError> {
    let conn = env.connect("lanes-live").await?;
    let publisher = Publisher::open(&conn).await?;
    let running = start(env, names, mock, consumer).await;
    let work = async {
        let props = || persistent_json(None, FieldTable::default());
        if pace.warm_up {
            let warm = Kick {
                room: WARM_UP_ROOM.into(),
                users: vec!["w".into()],
            };
            publisher.publish(pace.queue, &warm.body(), props()).await?;
            if !until_rooms_kicked(mock, &HashSet::from([warm.room.clone()]), STALL).await {
                return Err(BenchError::Stalled(format!(
                    "the warm-up kick was not called for in {STALL:?}"
                )));
            }
        }
        tokio::time::sleep(pace.settle).await;
        let mut sent_at: HashMap<String, Instant> = HashMap::with_capacity(live.len());
        let mut pending = Vec::with_capacity(live.len());
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut first, mut last) = (None, Instant::now());
        for kick in live {
            tick.tick().await;
            let body = kick.body();
            last = Instant::now();
            first.get_or_insert(last);
            sent_at.insert(kick.room.clone(), last);
            pending.push(publisher.send(pace.queue, &body, props()).await?);
        }
        for p in pending {
            p.confirmed().await?;
        }
        let rooms: HashSet<String> = live.iter().map(|k| k.room.clone()).collect();
        let limit = pace.grace.saturating_sub(last.elapsed());
        until_rooms_kicked(mock, &rooms, limit).await;
        Ok::<_, BenchError>((sent_at, (first.unwrap_or(last), last), Instant::now()))
    };
    let (running, outcome) = running.until(work).await?;
    let stopped = running.stop().await;
    crate::amqp::connect::close(&conn, "lanes live done").await;
    let (sent_at, (first, last), cutoff) = outcome?;
    stopped?;
    let live_left = queue_depth(env, pace.queue).await?;
    let bulk_left = queue_depth(env, &names.bulk).await?;
    let calls = mock.calls();
    let (latencies, served) = latencies(&sent_at, &first_arrivals(mock, &calls), cutoff);
    let on_mock = |t: Instant| t.saturating_duration_since(mock.started()).as_micros() as u64;
    let published = live.len() as u64 + u64::from(pace.warm_up);
    Ok(Paced {
        latencies,
        served,
        window_us: (on_mock(first), on_mock(last)),
        counters: mock.counters(),
        kicked: super::wait::kicked_pairs(mock),
        calls,
        // The warm-up message is acked too; on the one queue, the sweep's
        // messages ahead make this meaningless (the baseline is not accounted).
        live_acked: published
            .saturating_sub(live_left)
            .saturating_sub(u64::from(pace.warm_up)),
        bulk_left,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_rates_count_calls_inside_the_window() {
        let s = 1_000_000;
        let calls = [
            (0, true),
            (s, true),
            (s, false),
            (2 * s, true),
            (3 * s, false),
            (4 * s, true),
        ];
        let cases = [
            // window, minimum length, all, bulk, secs
            ((s, 3 * s), Duration::ZERO, 4.0 / 2.0, 2.0 / 2.0, 2.0),
            ((0, 4 * s), Duration::ZERO, 6.0 / 4.0, 4.0 / 4.0, 4.0),
            ((s, s), Duration::from_millis(100), 2.0 / 0.1, 1.0 / 0.1, 0.1),
            ((5 * s, 6 * s), Duration::ZERO, 0.0, 0.0, 1.0),
        ];
        for (window, min, all, bulk, secs) in cases {
            let w = window_rates(&calls, window, min);
            assert_eq!(w, WindowRates { all, bulk, secs }, "{window:?}");
        }
    }

    #[test]
    fn an_unserved_kick_counts_to_the_cutoff() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let sent: HashMap<String, Instant> = [("a", t0), ("b", t0 + ms(100)), ("c", t0 + ms(200))]
            .into_iter()
            .map(|(r, t)| (r.to_owned(), t))
            .collect();
        let first: HashMap<&str, Instant> = [("a", t0 + ms(20)), ("b", t0 + ms(105))].into_iter().collect();
        let (lat, served) = latencies(&sent, &first, t0 + ms(1200));
        assert_eq!(served, 2);
        let rounded: Vec<u64> = lat.iter().map(|v| v.round() as u64).collect();
        assert_eq!(rounded, [5, 20, 1000]);
        let (none, served) = latencies(&sent, &HashMap::new(), t0 + ms(300));
        assert_eq!(served, 0);
        assert_eq!(
            none.iter().map(|v| v.round() as u64).collect::<Vec<_>>(),
            [100, 200, 300]
        );
    }
}
