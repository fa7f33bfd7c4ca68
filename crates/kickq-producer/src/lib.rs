//! Enqueue "kick these users from this room" jobs for a kickq worker: the
//! job message and its rules, job ids, the queue names, and publishing with
//! broker confirms.
//!
//! This crate is what a producer written in Rust links: lapin, serde and
//! their own dependencies, none of the worker's (no HTTP server, database or
//! terminal crates). The worker, the CLI, the console and the HTTP intake are
//! the `kickq` crate, which uses this one for the same message and names.
//!
//! Start at [`producer::Producer`] (its module has a runnable example) and
//! [`job::KickRequest`].
//!
//! # Layout
//!
//! ```text
//! lib.rs         this map
//! job.rs         KickRequest, its validation, limits and ids (tests in job/tests.rs)
//! secret.rs      the credential wrapper whose Debug prints [redacted]
//! shards.rs      which shard serves each app: routing keys, where a misrouted job belongs
//! amqp/          connect (a node list, bounded close), topology (queue names, declare), publish (confirms)
//! producer.rs    the producer API: connect, declare, enqueue confirmed jobs with stable ids
//! ```

pub mod amqp;
pub mod job;
pub mod producer;
pub mod secret;
pub mod shards;
