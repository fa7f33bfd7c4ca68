//! kickq drains "kick these users from this room" jobs from RabbitMQ and calls
//! ZEGOCLOUD's KickoutUser API for them: coalesced into calls of at most five
//! users, paced by a per-AppId rate limit, routed by the API's return code, and
//! never lost.
//!
//! # Layout
//!
//! ```text
//! secret.rs     the credential wrapper whose Debug prints [redacted]
//! config.rs     shared settings, validated into types
//! job.rs        KickRequest and its validation (worker, enqueue, producer API)
//! ratelimit.rs  per-AppId sliding-window budget, slow-down, halt, chunk size
//! coalesce/     pure grouping state and policy; driver.rs is its async loop
//! ```

pub mod coalesce;
pub mod config;
pub mod job;
pub mod ratelimit;
pub mod secret;
