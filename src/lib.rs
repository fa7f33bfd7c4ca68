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
//! zego/         signature, HTTP client, return-code classifier
//! mock_zego/    the strict stand-in for the real API
//! cli/          subcommand glue (arguments, run functions); anyhow allowed here only
//! ```

pub mod cli;
pub mod config;
pub mod job;
pub mod mock_zego;
pub mod secret;
pub mod zego;
