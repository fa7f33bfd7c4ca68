//! What a dead-letter pass says to the people who run it, in the terminal and in the console alike: the confirmation
//! question, the summary of a replay or purge, and how many letters a list shows by default.

use super::letter::Filter;
use super::pass::{SweepEnd, SweepReport};

/// Letters `dlq list` shows when `--limit` is not given.
pub(crate) const DEFAULT_LIST_LIMIT: usize = 100;

/// The confirmation question: how many letters it would take (the matching
/// ones, at most the limit) out of how many in the queue.
pub(crate) fn prompt(verb: &str, taking: u64, of: u64, dead: &str, filter: &Filter) -> String {
    format!(
        "{verb} {taking} of {of} letter(s) in {dead} (matching {})?",
        filter.describe()
    )
}

/// The summary after a replay or purge.
pub(crate) fn summary(r: &SweepReport, dead: &str, done: &str, filter: &Filter, secs: f64) -> String {
    let how = match (&r.end, r.unread) {
        (SweepEnd::Done, 0) => " in order".to_owned(),
        (SweepEnd::Done, n) => format!(" in order ({n} not read: the limit was reached)"),
        (SweepEnd::Cancelled, n) if n > 0 => format!(" ({n} not examined)"),
        _ => String::new(),
    };
    let mut s = format!(
        "examined {} of {} letter(s) in {dead} ({}): {done} {}, kept {}{how}; {:.1}s",
        r.examined,
        r.depth,
        filter.describe(),
        r.taken,
        r.kept + r.unread,
        secs
    );
    if r.in_flight > 0 {
        s.push_str(&format!(
            "\n{} letter(s) were in flight when it stopped: they are still in {dead} and may also have been {done} \
             or re-appended (duplicates)",
            r.in_flight
        ));
    }
    s
}
