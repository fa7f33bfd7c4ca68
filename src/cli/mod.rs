//! Subcommand glue: clap arguments and the `run` of each subcommand. The only place `anyhow` is used; everything below it returns typed errors.

pub mod bench;
pub mod check;
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

/// A command was interrupted (Ctrl-C): `main` exits with code 130 for an
/// error whose root is this.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;
