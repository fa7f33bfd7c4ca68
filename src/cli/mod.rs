//! Subcommand glue: clap arguments and the `run` of each subcommand. The only place `anyhow` is used; everything below it returns typed errors.

pub mod bench;
pub mod demo;
pub mod dlq;
pub mod enqueue;
pub mod history;
pub mod ledger;
pub mod migrate;
pub mod mock_zego;
pub mod progress;
pub mod run;
pub mod signals;

/// A command interrupted by Ctrl-C: `main` exits 130 for it (the command prints its own account first).
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;
