//! The worker's AMQP: the lease primitive (leadership and the dlq pass lock), the delivery handle, kickq's headers and
//! the broker's version; connecting, the topology and publishing with confirms are the producer crate's, re-exported
//! here under the same paths.

pub(crate) mod delivery;
pub mod headers;
pub(crate) mod lease;
pub(crate) mod version;

// The transport a producer needs lives in the producer crate; the worker
// uses the same modules under the same paths.
pub(crate) use kickq_producer::amqp::{connect, publish, topology};
