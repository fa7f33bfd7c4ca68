//! The baseline: the worker most teams would write first. It consumes the same queue with lapin, makes one call
//! per message (split into fives), takes its tokens from the same gate as kickq (`Gate`/`AppBudget`), never
//! coalesces across messages, and acks each message after its calls. Bench code, not product.

use super::error::BenchError;
use crate::amqp::connect::connect;
use crate::amqp::topology::Names;
use crate::job::{self, Limits};
use crate::ratelimit::{Gate, DEFAULT_PROBE_INTERVAL};
use crate::secret::Secret;
use crate::zego::client::{ClientConfig, ZegoClient};
use crate::zego::MAX_USERS_PER_CALL;
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Attempts per call before the baseline gives up on its users (it only
/// retries rate answers and transport failures; the bench's mock sends no
/// other failure).
const MAX_ATTEMPTS: u32 = 5;
/// Pause before retrying a failed call.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// What the baseline needs.
#[derive(Debug, Clone)]
pub struct BaselineConfig {
    /// The broker.
    pub amqp_url: Secret,
    /// The queues (it consumes `requests`).
    pub names: Names,
    /// The API base URL.
    pub api_url: String,
    /// The AppId.
    pub app_id: u32,
    /// Its secret.
    pub secret: Secret,
    /// Calls per second (the same gate as kickq).
    pub rate: u32,
    /// Unacked messages the broker may push.
    pub prefetch: u16,
    /// Messages handled at once.
    pub max_in_flight: usize,
}

/// What a baseline run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BaselineSummary {
    /// Messages acked.
    pub acked: u64,
    /// API calls made.
    pub calls: u64,
    /// Users given up on.
    pub failed_users: u64,
    /// Messages that were not valid jobs (acked and dropped).
    pub invalid: u64,
}

#[derive(Default)]
struct Stats {
    acked: AtomicU64,
    calls: AtomicU64,
    failed_users: AtomicU64,
    invalid: AtomicU64,
}

/// Consumes until `shutdown` fires, then finishes the messages in hand.
pub async fn run(cfg: BaselineConfig, shutdown: CancellationToken) -> Result<BaselineSummary, BenchError> {
    let client = ZegoClient::new(ClientConfig {
        base_url: cfg.api_url.clone(),
        app_id: cfg.app_id,
        secret: cfg.secret.clone(),
        connect_timeout: crate::zego::client::DEFAULT_CONNECT_TIMEOUT,
        total_timeout: crate::zego::client::DEFAULT_HTTP_TIMEOUT,
    })?;
    let gate = Gate::new(cfg.rate, DEFAULT_PROBE_INTERVAL);
    let conn = connect(&cfg.amqp_url, &format!("kickq-bench-baseline-{}", cfg.names.namespace)).await?;
    let channel = conn.create_channel().await?;
    channel
        .basic_qos(cfg.prefetch, BasicQosOptions { global: false })
        .await?;
    let mut consumer = channel
        .basic_consume(
            cfg.names.requests.as_str().into(),
            "kickq-bench-baseline".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let slots = Arc::new(Semaphore::new(cfg.max_in_flight.max(1)));
    let stats = Arc::new(Stats::default());
    let tracker = TaskTracker::new();
    let mut failure = None;
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let delivery = tokio::select! {
            _ = shutdown.cancelled() => break,
            d = consumer.next() => d,
        };
        match delivery {
            None => break,
            Some(Err(e)) => {
                failure = Some(e);
                break;
            }
            Some(Ok(d)) => {
                let (client, gate, stats) = (client.clone(), gate.clone(), stats.clone());
                tracker.spawn(handle(d, permit, client, gate, stats, cfg.app_id));
            }
        }
    }
    tracker.close();
    tracker.wait().await;
    let _ = channel.close(200, "baseline done".into()).await;
    crate::amqp::connect::close(&conn, "baseline done").await;
    if let Some(e) = failure {
        return Err(e.into());
    }
    Ok(BaselineSummary {
        acked: stats.acked.load(Ordering::Relaxed),
        calls: stats.calls.load(Ordering::Relaxed),
        failed_users: stats.failed_users.load(Ordering::Relaxed),
        invalid: stats.invalid.load(Ordering::Relaxed),
    })
}

async fn handle(
    d: Delivery,
    _permit: OwnedSemaphorePermit,
    client: ZegoClient,
    gate: Gate,
    stats: Arc<Stats>,
    app_id: u32,
) {
    match job::parse(&d.data, &Limits::default()) {
        Err(_) => {
            stats.invalid.fetch_add(1, Ordering::Relaxed);
        }
        Ok(job) => {
            for chunk in job.user_ids.chunks(MAX_USERS_PER_CALL) {
                if !call(
                    &client,
                    &gate,
                    &stats,
                    app_id,
                    &job.room_id,
                    chunk,
                    job.reason.as_deref(),
                )
                .await
                {
                    stats.failed_users.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
            }
        }
    }
    if d.acker.ack(BasicAckOptions::default()).await.is_ok() {
        stats.acked.fetch_add(1, Ordering::Relaxed);
    }
}

/// One chunk's call, retried on rate answers and transport failures; true when kicked.
async fn call(
    client: &ZegoClient,
    gate: &Gate,
    stats: &Stats,
    app_id: u32,
    room: &str,
    users: &[String],
    reason: Option<&str>,
) -> bool {
    for _ in 0..MAX_ATTEMPTS {
        let Some(granted) = gate.acquire(app_id).await else {
            return false;
        };
        stats.calls.fetch_add(1, Ordering::Relaxed);
        let result = client.kickout(room, users, reason).await;
        // The same gate as kickq's, told when each call came back.
        gate.report(
            app_id,
            crate::ratelimit::Feedback::Answered {
                granted,
                answered: crate::pipeline::dispatch::answered_by_gateway(&result.result),
            },
            tokio::time::Instant::now(),
            Duration::ZERO,
        );
        match result.result {
            Ok(reply) if reply.code == 0 => return true,
            Ok(reply) if reply.code == 7 || reply.code == 206 => {
                gate.report(
                    app_id,
                    crate::ratelimit::Feedback::RateLimited(reply.code),
                    tokio::time::Instant::now(),
                    Duration::ZERO,
                );
            }
            Ok(_) => return false,
            Err(_) => tokio::time::sleep(RETRY_PAUSE).await,
        }
    }
    false
}
