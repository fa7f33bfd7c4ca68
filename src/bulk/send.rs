//! Publishing a bulk run's messages in order with a bounded window of unconfirmed publishes, stopping only
//! between lines when asked, and reporting the confirmed prefix.

use super::group::{as_published, Message};
use crate::amqp::publish::Pending;
use crate::amqp::topology::Lane;
use crate::producer::{Producer, ProducerError};
use std::collections::VecDeque;
use tokio::sync::mpsc::Receiver;
use tokio_util::sync::CancellationToken;

/// Unconfirmed publishes kept in flight: enough to hide the confirm round trip
/// (and the quorum queue's fsync) behind the following publishes.
pub(crate) const DEFAULT_WINDOW: usize = 1000;

/// One item of the feed a run publishes: a message, or the end of the input
/// (sent only once the whole input was read as judged; a feed that closes
/// without it broke).
pub(crate) type Feed = Option<Message>;

/// Why a run ended early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// The broker refused or went away.
    #[error(transparent)]
    Producer(#[from] ProducerError),
    /// The feed of messages closed before the end of the input (reading it failed).
    #[error("the input could not be read to its end")]
    FeedBroken,
}

/// How a run ended.
#[derive(Debug)]
pub(crate) struct SendReport {
    /// Messages confirmed: always a prefix of the feed.
    pub confirmed: usize,
    /// Users in them.
    pub users: u64,
    /// Every line up to this one is in a confirmed message (or holds no job).
    pub confirmed_through: u64,
    /// Messages sent after that prefix and not known to be confirmed (only
    /// after a failure): the broker may or may not have stored them.
    pub in_doubt: usize,
    /// A stop was asked for and honoured before the last message.
    pub stopped: bool,
    /// The failure that ended the run early, if any.
    pub failure: Option<SendError>,
}

/// What follows the messages in flight.
enum Next {
    Message(Message),
    End,
    Broken,
}

/// The line every line before which is confirmed once every message before
/// `next` is: its first line minus one, `last_line` at the end, `at_least`
/// (already established) if the feed broke.
fn through_before(next: &Next, at_least: u64, last_line: u64) -> u64 {
    match next {
        Next::Message(m) => m.first_line - 1,
        Next::End => last_line,
        Next::Broken => at_least,
    }
}

async fn pull(feed: &mut Receiver<Feed>) -> Next {
    match feed.recv().await {
        Some(Some(m)) => Next::Message(m),
        Some(None) => Next::End,
        None => Next::Broken,
    }
}

/// Where and how a run publishes: the settings of [`send_in_order`].
#[derive(Clone, Copy)]
pub(crate) struct Sending<'a> {
    /// The confirmed publisher.
    pub producer: &'a Producer,
    /// The lane the messages go to.
    pub lane: Lane,
    /// The job-id prefix of messages without a job id of their own.
    pub prefix: &'a str,
    /// The input's last line.
    pub last_line: u64,
    /// Most messages unconfirmed at once.
    pub window: usize,
    /// Fires on Ctrl-C: sending stops at the next boundary between lines.
    pub stop: &'a CancellationToken,
}

/// Publishes the messages of `feed` to `lane` in order (they come in `(first_line,
/// part)` order), message ids from `prefix` where a message has no job id of
/// its own, with at most `window` unconfirmed; `last_line` is the input's.
/// `on_confirmed` sees each message once it is confirmed, in order, with the
/// line confirmed through. When `stop` fires, sending stops at the next
/// boundary between lines and what is in flight is awaited, so the confirmed
/// messages are exactly a prefix covering whole lines.
pub(crate) async fn send_in_order(
    run: Sending<'_>,
    feed: &mut Receiver<Feed>,
    mut on_confirmed: impl FnMut(&Message, u64),
) -> SendReport {
    let Sending {
        producer,
        lane,
        prefix,
        last_line,
        window,
        stop,
    } = run;
    let window = window.max(1);
    let mut in_flight: VecDeque<(Message, Pending)> = VecDeque::new();
    let mut next = pull(feed).await;
    let mut report = SendReport {
        confirmed: 0,
        users: 0,
        confirmed_through: through_before(&next, 0, last_line),
        in_doubt: 0,
        stopped: false,
        failure: None,
    };
    let (mut last_sent, mut sent): (Option<u64>, usize) = (None, 0);
    loop {
        let sendable = match &next {
            Next::Message(m) => Some(m.first_line),
            _ => None,
        };
        if let Some(first) = sendable {
            // Never between two parts of one line.
            if stop.is_cancelled() && last_sent != Some(first) {
                report.stopped = true;
                break;
            }
        }
        if sendable.is_none() || in_flight.len() >= window {
            let Some((m, pending)) = in_flight.pop_front() else {
                break;
            };
            match pending.confirmed().await {
                Ok(()) => {
                    report.confirmed += 1;
                    report.users += m.job.user_ids.len() as u64;
                    report.confirmed_through = match in_flight.front() {
                        Some((after, _)) => after.first_line - 1,
                        None => through_before(&next, m.first_line - 1, last_line),
                    };
                    on_confirmed(&m, report.confirmed_through);
                }
                Err(e) => {
                    report.failure = Some(ProducerError::from(e).into());
                    break;
                }
            }
            continue;
        }
        let Next::Message(m) = std::mem::replace(&mut next, Next::Broken) else {
            unreachable!("sendable")
        };
        match producer
            .send_to(lane, as_published(prefix, &m))
            .await
            .map(|sent| sent.pending)
        {
            Ok(pending) => {
                last_sent = Some(m.first_line);
                sent += 1;
                in_flight.push_back((m, pending));
                next = pull(feed).await;
            }
            Err(e) => {
                report.failure = Some(e.into());
                break;
            }
        }
    }
    if report.failure.is_none() {
        while let Some((m, pending)) = in_flight.pop_front() {
            match pending.confirmed().await {
                Ok(()) => {
                    report.confirmed += 1;
                    report.users += m.job.user_ids.len() as u64;
                    report.confirmed_through = match in_flight.front() {
                        Some((after, _)) => after.first_line - 1,
                        None => through_before(&next, m.first_line - 1, last_line),
                    };
                    on_confirmed(&m, report.confirmed_through);
                }
                Err(e) => {
                    report.failure = Some(ProducerError::from(e).into());
                    break;
                }
            }
        }
    }
    if report.failure.is_none() && !report.stopped && matches!(next, Next::Broken) {
        report.failure = Some(SendError::FeedBroken);
    }
    report.in_doubt = sent - report.confirmed;
    report
}
