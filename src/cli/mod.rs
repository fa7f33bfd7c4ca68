//! Subcommand glue: clap arguments and the `run` of each subcommand. The only place `anyhow` is used; everything below it returns typed errors.

pub mod bench;
pub mod check;
pub mod confirm;
pub mod demo;
pub mod dlq;
pub mod docs;
pub mod enqueue;
pub mod history;
pub mod ledger;
pub mod migrate;
pub mod mock_zego;
pub mod progress;
pub mod run;
pub mod signals;
pub mod status;

/// A command stopped by Ctrl-C: the binary exits 130, the shell convention.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;
