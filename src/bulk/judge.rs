//! The first pass over a bulk input: judge and group it without keeping the messages, and count what a start
//! line skips (`Judged`, `Start`).

use super::group::{Grouper, Message};
use super::load::{scan, LoadError, LoadOptions, Scanned};
use super::parse::Format;
use std::io::Read;

/// What the first pass found: the judgement, and the messages the whole
/// input makes and those a start line skips.
#[derive(Debug, Clone)]
pub(crate) struct Judged {
    /// Counts, hash, first invalid lines.
    pub scanned: Scanned,
    /// Messages of the whole input.
    pub messages: usize,
    /// Messages that start before the start line, and their users.
    pub skipped: (usize, u64),
    /// The first line of the first message not skipped, if any.
    pub first_todo: Option<u64>,
}

/// Judges and groups `input` without keeping the messages, counting those that start before `from`.
pub(crate) fn judge<R: Read>(input: R, format: Format, opts: &LoadOptions, from: u64) -> Result<Judged, LoadError> {
    let mut g = Grouper::counting(opts.group_size);
    let (mut messages, mut skipped, mut first_todo) = (0usize, (0usize, 0u64), None);
    let mut count = |m: Message, messages: &mut usize| {
        *messages += 1;
        if m.first_line < from {
            skipped.0 += 1;
            skipped.1 += m.job.user_ids.len() as u64;
        } else if first_todo.is_none() {
            first_todo = Some(m.first_line);
        }
    };
    let scanned = scan(input, format, opts, |line, job| {
        g.push(line, job);
        while let Some(m) = g.pop_ready() {
            count(m, &mut messages);
        }
        true
    })?;
    for m in g.finish() {
        count(m, &mut messages);
    }
    Ok(Judged {
        scanned,
        messages,
        skipped,
        first_todo,
    })
}

/// Where a run started: what it skipped and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Start {
    /// The first line not skipped.
    pub from: u64,
    /// Messages skipped (they start before `from`).
    pub skipped: usize,
    /// What said so: `--resume-from` or the checkpoint.
    pub by_checkpoint: bool,
}
