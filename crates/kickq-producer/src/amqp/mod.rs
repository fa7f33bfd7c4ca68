//! The AMQP a producer needs: connecting to a node list, the queue topology and its names, publishing with confirms.

pub mod connect;
pub mod publish;
pub mod topology;
