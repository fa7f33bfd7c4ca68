//! Bulk enqueue (`kickq enqueue --file`): reading job lines (CSV or JSON Lines), validating every one, grouping
//! them into messages, and publishing those in order so that an interrupted run resumes with nothing lost or
//! repeated.
//!
//! ```text
//! parse.rs   one record: format detection, header columns, validation in the file's words
//! load.rs    the whole input (csv crate): records -> invalid lines + messages; prefix, hash
//! group.rs   messages per (room, reason), first-line order, resume arithmetic
//! send.rs    publishing in order with a bounded window; the confirmed prefix
//! judge.rs   the first pass: judge and group without keeping the messages, what a start line skips
//! checkpoint.rs  the resumable record of a run: input hash, group size, last confirmed line; its keeper
//! ```

pub(crate) mod checkpoint;
pub(crate) mod group;
pub(crate) mod judge;
pub(crate) mod load;
pub(crate) mod parse;
pub(crate) mod send;
