//! The delivery handle: the one thing that can acknowledge a consumed message. Finishing it consumes it, so a
//! delivery is acked at most once by construction.

use lapin::options::{BasicAckOptions, BasicRejectOptions};
use lapin::Acker;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// One count of a held delivery (taken, not yet finished): the count goes
/// up when it is made and down when it is dropped, however the delivery
/// ends (acked, handed back, or dropped with its session).
#[derive(Debug)]
pub(crate) struct Held(Arc<AtomicU64>);

impl Held {
    /// Counts one more delivery in `count`.
    pub(crate) fn new(count: Arc<AtomicU64>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Held(count)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }
}

/// What became of an ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acked {
    /// The broker has it: the message is gone from the queue.
    Done,
    /// The channel it came on is gone (or it was already finished): the broker
    /// will deliver the message again. Counted, never an error.
    WillRedeliver,
}

/// A consumed message awaiting its verdict.
///
/// Invariant: only the outcome router holds these, and only it finishes them.
#[derive(Debug)]
pub(crate) struct Delivery {
    id: u64,
    acker: Acker,
    /// Its place in its lane's count of unacked deliveries.
    _held: Option<Held>,
}

impl Delivery {
    /// Wraps lapin's acker; `id` is unique within the process.
    pub(crate) fn new(id: u64, acker: Acker) -> Self {
        Self { id, acker, _held: None }
    }

    /// The same delivery, counted in `held` until it is finished or dropped.
    pub(crate) fn counted(mut self, held: Held) -> Self {
        self._held = Some(held);
        self
    }

    /// The process-unique id.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Acks on the channel the message came on.
    pub(crate) async fn ack(self) -> Result<Acked, lapin::Error> {
        match self.acker.ack(BasicAckOptions::default()).await? {
            true => Ok(Acked::Done),
            false => Ok(Acked::WillRedeliver),
        }
    }

    /// Hands the message back to the queue at once (shutdown).
    pub(crate) async fn requeue(self) -> Result<Acked, lapin::Error> {
        match self.acker.reject(BasicRejectOptions { requeue: true }).await? {
            true => Ok(Acked::Done),
            false => Ok(Acked::WillRedeliver),
        }
    }
}
