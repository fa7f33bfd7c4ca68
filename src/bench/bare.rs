//! The bare consume-and-ack loop: the fastest any consumer of the queue could go on this broker, the yardstick
//! of the drain scenario. It consumes `n` messages with the given prefetch and acks each, nothing else.

use super::error::BenchError;
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::Connection;
use std::time::Duration;
use tokio::time::Instant;

/// Consumes and acks `n` messages from `queue`; returns the time from the
/// consume to the last ack, and the bytes seen (so the bodies are touched).
pub async fn consume_and_ack(
    conn: &Connection,
    queue: &str,
    n: u64,
    prefetch: u16,
) -> Result<(Duration, u64), BenchError> {
    let channel = conn.create_channel().await?;
    channel.basic_qos(prefetch, BasicQosOptions { global: false }).await?;
    let start = Instant::now();
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "kickq-bench-bare".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let (mut seen, mut bytes) = (0u64, 0u64);
    while seen < n {
        match tokio::time::timeout(Duration::from_secs(30), consumer.next()).await {
            Ok(Some(Ok(d))) => {
                bytes += d.data.len() as u64;
                d.acker.ack(BasicAckOptions::default()).await?;
                seen += 1;
            }
            Ok(Some(Err(e))) => return Err(e.into()),
            Ok(None) => return Err(BenchError::Stalled(format!("the consumer ended after {seen} of {n}"))),
            Err(_) => return Err(BenchError::Stalled(format!("no message for 30 s after {seen} of {n}"))),
        }
    }
    let took = start.elapsed();
    let _ = channel.close(200, "bare loop done".into()).await;
    Ok((took, bytes))
}
