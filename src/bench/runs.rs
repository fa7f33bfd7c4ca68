//! One measured run of a consumer against the mock: kickq in-process (`worker::run`, the product's defaults) or
//! the baseline, from its start until the mock has kicked every expected pair, then a graceful stop. Times come
//! from the mock's call records, mapped onto this process's monotonic clock.

use super::baseline::{self, BaselineConfig};
use super::env::{BenchEnv, BENCH_APP_ID, BENCH_SECRET};
use super::error::BenchError;
use super::wait::{kicked_pairs, until_kicked};
use super::workload::Pair;
use crate::amqp::topology::Names;
use crate::mock_zego::{CallRecord, Counters, MockZego};
use crate::secret::Secret;
use crate::worker::WorkerConfig;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long calls may stand still before a run counts as stuck.
pub const STALL: Duration = Duration::from_secs(60);

/// Which consumer a run measures.
#[derive(Debug, Clone)]
pub enum Consumer {
    /// kickq's worker with this configuration.
    Kickq(Box<WorkerConfig>),
    /// The baseline, at this rate.
    Baseline {
        /// Calls per second.
        rate: u32,
    },
}

/// What one run did.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// When the consumer was started.
    pub start: Instant,
    /// From the start to the arrival of the last call that kicked someone.
    pub wall: Duration,
    /// The mock's counters for this run.
    pub counters: Counters,
    /// Every call of this run.
    pub calls: Vec<CallRecord>,
    /// Distinct pairs kicked.
    pub kicked: HashSet<Pair>,
    /// Messages acked: those published less those left in the queue after
    /// the consumer stopped (its unacked deliveries return to the queue).
    pub acked: u64,
    /// Messages the consumer itself says it acked (kickq's `RunSummary`).
    pub reported_acked: u64,
}

/// The instant a call arrived at the mock.
pub fn arrival(mock: &MockZego, call: &CallRecord) -> Instant {
    mock.started() + Duration::from_micros(call.at_us)
}

/// The arrival of the first call for each room among `calls`.
pub fn first_arrivals<'a>(mock: &MockZego, calls: &'a [CallRecord]) -> HashMap<&'a str, Instant> {
    let mut first: HashMap<&str, Instant> = HashMap::new();
    for c in calls {
        if let Some(room) = c.room_id.as_deref() {
            let at = arrival(mock, c);
            first.entry(room).and_modify(|t| *t = (*t).min(at)).or_insert(at);
        }
    }
    first
}

/// Resets the mock, starts the consumer on `names`, waits for `expected` to be
/// kicked, stops it, and collects the figures. The `published` messages must
/// already be queued.
pub async fn measure(
    env: &BenchEnv,
    names: &Names,
    mock: &MockZego,
    consumer: Consumer,
    expected: &HashSet<Pair>,
    min_calls: u64,
    published: u64,
) -> Result<RunResult, BenchError> {
    let running = start(env, names, mock, consumer).await;
    let (running, waited) = running.until(until_kicked(mock, expected, min_calls, STALL)).await?;
    let stopped = running.stop().await;
    waited?;
    let (start, reported) = stopped?;
    let left = queue_depth(env, &names.requests).await?;
    let mut r = collect(mock, start, published.saturating_sub(left));
    r.reported_acked = reported;
    Ok(r)
}

/// Messages ready in `queue` (a passive declare).
pub async fn queue_depth(env: &BenchEnv, queue: &str) -> Result<u64, BenchError> {
    let conn = env.connect("depth").await?;
    let q = crate::amqp::topology::inspect(&conn, queue).await;
    crate::amqp::connect::close(&conn, "depth read").await;
    Ok(q?.map_or(0, |q| u64::from(q.ready)))
}

/// A consumer started by [`start`].
pub struct Running {
    start: Instant,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<u64, BenchError>>,
}

/// Resets the mock and starts a consumer on `names`.
pub async fn start(env: &BenchEnv, names: &Names, mock: &MockZego, consumer: Consumer) -> Running {
    mock.reset();
    let stop = CancellationToken::new();
    let start = Instant::now();
    let task = match consumer {
        Consumer::Kickq(cfg) => {
            let token = stop.clone();
            tokio::spawn(async move {
                let summary = crate::worker::run(*cfg, token).await?;
                if summary.reconnects > 0 {
                    return Err(BenchError::Disturbed(format!(
                        "kickq's broker session was lost {} time(s) during the run",
                        summary.reconnects
                    )));
                }
                Ok(summary.tally.acked)
            })
        }
        Consumer::Baseline { rate } => {
            let cfg = BaselineConfig {
                amqp_url: env.settings().amqp_url.clone(),
                names: names.clone(),
                api_url: mock.base_url(),
                app_id: BENCH_APP_ID,
                secret: Secret::new(BENCH_SECRET),
                rate,
                prefetch: crate::worker::DEFAULT_PREFETCH,
                max_in_flight: crate::pipeline::dispatch::DEFAULT_MAX_IN_FLIGHT,
            };
            let token = stop.clone();
            tokio::spawn(async move { Ok(baseline::run(cfg, token).await?.acked) })
        }
    };
    Running { start, stop, task }
}

impl Running {
    /// Waits for `f`, unless the consumer ends first (its error, or
    /// [`BenchError::Disturbed`] if it ended cleanly by itself).
    pub async fn until<T>(mut self, f: impl std::future::Future<Output = T>) -> Result<(Running, T), BenchError> {
        tokio::select! {
            v = f => Ok((self, v)),
            ended = &mut self.task => match ended? {
                Err(e) => Err(e),
                Ok(_) => Err(BenchError::Disturbed("the consumer stopped by itself mid-run".into())),
            },
        }
    }

    /// When it was started.
    pub fn started(&self) -> Instant {
        self.start
    }

    /// Stops it gracefully; its start and the messages it acked.
    pub async fn stop(self) -> Result<(Instant, u64), BenchError> {
        self.stop.cancel();
        let acked = self.task.await??;
        Ok((self.start, acked))
    }
}

/// When the last call that kicked someone (code 0) reached the mock, on the
/// bench's clock; `start` when none did.
pub fn last_kick(mock: &MockZego, calls: &[crate::mock_zego::CallRecord], start: Instant) -> Instant {
    calls
        .iter()
        .filter(|c| c.code == Some(0))
        .map(|c| arrival(mock, c))
        .max()
        .unwrap_or(start)
}

/// The run's figures from the mock, for a consumer started at `start` that acked `acked` messages.
pub fn collect(mock: &MockZego, start: Instant, acked: u64) -> RunResult {
    let calls = mock.calls();
    let last = last_kick(mock, &calls, start);
    RunResult {
        start,
        wall: last.saturating_duration_since(start),
        counters: mock.counters(),
        kicked: kicked_pairs(mock),
        calls,
        acked,
        reported_acked: acked,
    }
}
