//! Publishing a bulk run's messages in order with a bounded window of unconfirmed publishes, stopping only
//! between lines when asked, and reporting the confirmed prefix.

use super::group::{as_published, may_stop_after, Message};
use crate::amqp::publish::Pending;
use crate::producer::{Producer, ProducerError};
use std::collections::VecDeque;
use tokio_util::sync::CancellationToken;

/// Unconfirmed publishes kept in flight: enough to hide the confirm round trip
/// (and the quorum queue's fsync) behind the following publishes.
pub const DEFAULT_WINDOW: usize = 1000;

/// How a run ended.
#[derive(Debug)]
pub struct SendReport {
    /// Messages confirmed: always a prefix of the slice given.
    pub confirmed: usize,
    /// Messages sent after that prefix and not known to be confirmed (only
    /// after a failure): the broker may or may not have stored them.
    pub in_doubt: usize,
    /// A stop was asked for and honoured before the last message.
    pub stopped: bool,
    /// The failure that ended the run early, if any.
    pub failure: Option<ProducerError>,
}

/// Publishes `messages` in order, message ids from `prefix` where a message has
/// no job id of its own, with at most `window` unconfirmed. `on_confirmed` sees
/// each message once it is confirmed, in order. When `stop` fires, sending stops
/// at the next boundary between lines and what is in flight is awaited, so the
/// confirmed messages are exactly a prefix covering whole lines.
pub async fn send_in_order(
    producer: &Producer,
    prefix: &str,
    messages: &[Message],
    window: usize,
    stop: &CancellationToken,
    mut on_confirmed: impl FnMut(&Message),
) -> SendReport {
    let window = window.max(1);
    let mut in_flight: VecDeque<(usize, Pending)> = VecDeque::with_capacity(window.min(messages.len()));
    let (mut sent, mut confirmed) = (0usize, 0usize);
    let mut failure = None;
    let mut stopped = false;
    while sent < messages.len() {
        if stop.is_cancelled() && may_stop_after(messages, sent) {
            stopped = true;
            break;
        }
        if in_flight.len() >= window {
            let (i, pending) = in_flight.pop_front().expect("the window is full, so not empty");
            match pending.confirmed().await {
                Ok(()) => {
                    confirmed += 1;
                    on_confirmed(&messages[i]);
                }
                Err(e) => {
                    failure = Some(e.into());
                    break;
                }
            }
            continue;
        }
        let m = &messages[sent];
        match producer.send(as_published(prefix, m)).await.map(|sent| sent.pending) {
            Ok(pending) => {
                in_flight.push_back((sent, pending));
                sent += 1;
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    if failure.is_none() {
        while let Some((i, pending)) = in_flight.pop_front() {
            match pending.confirmed().await {
                Ok(()) => {
                    confirmed += 1;
                    on_confirmed(&messages[i]);
                }
                Err(e) => {
                    failure = Some(e.into());
                    break;
                }
            }
        }
    }
    SendReport {
        confirmed,
        in_doubt: sent - confirmed,
        stopped,
        failure,
    }
}
