//! Bulk enqueue (`kickq enqueue --file`): reading job lines (CSV or JSON Lines), validating every one, grouping
//! them into messages, and publishing those in order so that an interrupted run resumes with nothing lost or
//! repeated.
//!
//! ```text
//! parse.rs   one line: format detection, CSV splitting, header, validation
//! load.rs    the whole input: lines -> invalid lines + messages; job-id prefix
//! group.rs   messages per (room, reason), first-line order, resume arithmetic
//! send.rs    publishing in order with a bounded window; the confirmed prefix
//! ```

pub mod group;
pub mod load;
pub mod parse;
pub mod send;
