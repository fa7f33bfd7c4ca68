//! Everything that talks AMQP: connecting, the queue topology, the leadership lock, consuming, publishing with confirms, the
//! delivery handle and kickq's headers.

pub mod connect;
pub mod delivery;
pub mod headers;
pub mod lock;
pub mod publish;
pub mod topology;
pub(crate) mod version;
