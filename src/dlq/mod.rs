//! The dead-letter queue tools behind `kickq dlq`: reading letters, filtering and showing them, and the
//! passes that list, replay or purge them without ever losing one.
//!
//! ```text
//! letter.rs    a letter's own description; the filters
//! format.rs    the table and the JSON of `dlq list`
//! rewrite.rs   properties of a replay (history header) and of a re-append
//! pass.rs      peek (list: every letter re-appended) and sweep (replay / purge) over basic.get
//! pass_lock.rs {ns}.dead.lease: one pass at a time, and who holds it since when
//! policy.rs    broker policies that cap the dead queue (management API), for `kickq check`
//! words.rs     what a pass says: the confirmation question, the summary, the list's default limit
//! ```

pub(crate) mod format;
pub(crate) mod letter;
pub(crate) mod pass;
pub(crate) mod pass_lock;
pub(crate) mod policy;
pub(crate) mod rewrite;
pub(crate) mod words;
