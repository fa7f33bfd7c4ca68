//! The delivery handle: the one thing that can acknowledge a consumed message. Finishing it consumes it, so a
//! delivery is acked at most once by construction.

use lapin::options::{BasicAckOptions, BasicRejectOptions};
use lapin::Acker;

/// What became of an ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acked {
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
pub struct Delivery {
    id: u64,
    acker: Acker,
}

impl Delivery {
    /// Wraps lapin's acker; `id` is unique within the process.
    pub fn new(id: u64, acker: Acker) -> Self {
        Self { id, acker }
    }

    /// The process-unique id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Acks on the channel the message came on.
    pub async fn ack(self) -> Result<Acked, lapin::Error> {
        match self.acker.ack(BasicAckOptions::default()).await? {
            true => Ok(Acked::Done),
            false => Ok(Acked::WillRedeliver),
        }
    }

    /// Hands the message back to the queue at once (shutdown).
    pub async fn requeue(self) -> Result<Acked, lapin::Error> {
        match self.acker.reject(BasicRejectOptions { requeue: true }).await? {
            true => Ok(Acked::Done),
            false => Ok(Acked::WillRedeliver),
        }
    }
}
