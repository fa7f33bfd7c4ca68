//! Everything that talks AMQP: connecting, the queue topology, the leadership lock, consuming, publishing with confirms, the
//! delivery handle and kickq's headers.

pub(crate) mod delivery;
pub mod headers;
pub(crate) mod lease;
pub(crate) mod version;

// The transport a producer needs lives in the producer crate; the worker
// uses the same modules under the same paths.
pub(crate) use kickq_producer::amqp::{connect, publish, topology};
