//! Publishing a scenario's messages fast: persistent, on confirm-mode channels, with many confirms in flight
//! at once, and every one of them awaited before the count is returned.

use super::error::BenchError;
use crate::amqp::publish::{persistent_json, Publisher};
use lapin::types::FieldTable;
use lapin::Connection;

/// Unconfirmed publishes allowed per channel: enough to keep the broker busy,
/// few enough that a refusal is noticed within a fraction of a second.
pub const CONFIRM_WINDOW: usize = 4096;

/// Publishes every body to `queue` through the default exchange on one
/// channel, pipelined; returns how many were confirmed.
pub async fn publish_all(
    conn: &Connection,
    queue: &str,
    bodies: impl IntoIterator<Item = Vec<u8>>,
) -> Result<u64, BenchError> {
    let publisher = Publisher::open(conn).await?;
    let messages = bodies
        .into_iter()
        .map(|body| (queue, body, persistent_json(None, FieldTable::default())));
    let n = publisher.publish_all(CONFIRM_WINDOW, messages).await?;
    let _ = publisher.channel().close(200, "published".into()).await;
    Ok(n)
}

/// Publishes `count` generated bodies over `channels` channels at once
/// (body `i` from `make(i)`), for the million-message scenarios.
pub async fn publish_generated(
    conn: &Connection,
    queue: &str,
    count: usize,
    channels: usize,
    make: impl Fn(usize) -> Vec<u8> + Clone,
) -> Result<u64, BenchError> {
    let channels = channels.max(1);
    let tasks = (0..channels).map(|c| {
        let make = make.clone();
        async move {
            let bodies = (c..count).step_by(channels).map(make);
            publish_all(conn, queue, bodies).await
        }
    });
    let counts = futures_util::future::try_join_all(tasks).await?;
    Ok(counts.into_iter().sum())
}
