//! What a bulk run of `kickq enqueue` tells its user: the summary (text or `--json`), the invalid lines, and the
//! flags of a rerun that continues it.

use super::args::EnqueueArgs;
use crate::bulk::checkpoint::Keeper;
use crate::bulk::judge::{Judged, Start};
use crate::bulk::load::{Scanned, MAX_KEPT_INVALID};
use crate::bulk::send::{SendError, SendReport};
use crate::cli::signals::Interrupted;
use anyhow::bail;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub(super) fn finish(
    args: &EnqueueArgs,
    run: &Run<'_>,
    sent: &SendReport,
    read_error: Option<anyhow::Error>,
    keeper: Option<Arc<Mutex<Keeper>>>,
    job_ids: Vec<String>,
) -> anyhow::Result<()> {
    let judged = run.judged;
    let through = sent.confirmed_through;
    let lines = judged.scanned.lines;
    let outcome = match (&sent.failure, sent.stopped) {
        (Some(_), _) => EnqueueEnd::Failed,
        (None, true) => EnqueueEnd::Interrupted,
        (None, false) => EnqueueEnd::Complete,
    };
    let mut cp_error = None;
    let cp_path = keeper.as_ref().map(|k| {
        let mut k = k.lock().expect("the checkpoint lock is never poisoned");
        if let Err(e) = k.save(through, outcome == EnqueueEnd::Complete) {
            cp_error = Some(e);
        }
        k.path.clone()
    });
    let mut report = EnqueueSummary::new(run, outcome, (sent.confirmed, sent.users), through, cp_path.as_deref());
    report.in_doubt = sent.in_doubt;
    report.job_ids = job_ids;
    match args.json {
        true => println!("{}", serde_json::to_string(&report)?),
        false => println!("{}", report.text(&format!("confirmed through line {through}"))),
    }
    // --resume-from names the run's prefix and group size too: without a
    // checkpoint nothing else would give the rerun this run's job ids.
    let resume_from = resume_from_flags(through + 1, run.prefix, run.group_size);
    if let Some(e) = cp_error {
        eprintln!("kickq: warning: {e}; resume with {resume_from}");
    }
    let rerun = match &cp_path {
        Some(_) => format!("--resume (or {resume_from})"),
        None => resume_from,
    };
    if let Some(e) = &sent.failure {
        let e = match (e, read_error) {
            (SendError::FeedBroken, Some(read)) => format!("{read:#}"),
            (e, _) => e.to_string(),
        };
        bail!(
            "{e}; confirmed through line {through}; {} message(s) were in flight and may or may not be stored: \
             rerun with {rerun} to send the rest (the same job ids, so a ledger-backed worker skips \
             users it already kicked)",
            sent.in_doubt,
        );
    }
    if sent.stopped {
        eprintln!(
            "kickq: interrupted: confirmed through line {through} of {lines}; rerun with {rerun} \
             (same input, same --group-size) to continue",
        );
        return Err(Interrupted.into());
    }
    Ok(())
}

/// The flags of a rerun that continues this run from `line` under its job
/// ids: `--resume-from N --job-id-prefix 'P' --group-size G`.
pub(super) fn resume_from_flags(line: u64, prefix: &str, group_size: usize) -> String {
    format!(
        "--resume-from {line} --job-id-prefix='{}' --group-size {group_size}",
        prefix.replace('\'', "'\\''")
    )
}

pub(super) fn report_invalid(scanned: &Scanned, skipping: bool) {
    let shown = if skipping {
        MAX_KEPT_INVALID
    } else {
        MAX_REPORTED_INVALID
    };
    for (line, why) in scanned.invalid.iter().take(shown) {
        eprintln!("line {line}: {why}{}", if skipping { " (skipped)" } else { "" });
    }
    if scanned.invalid_count > shown as u64 {
        eprintln!("... and {} more invalid line(s)", scanned.invalid_count - shown as u64);
    }
}

/// How a bulk run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum EnqueueEnd {
    /// Every message confirmed.
    Complete,
    /// Stopped by Ctrl-C after the confirmed prefix.
    Interrupted,
    /// The broker failed; messages in flight are in doubt.
    Failed,
    /// `--dry-run`: nothing published.
    DryRun,
}

/// The report of a bulk run: the `--json` object (its fields are the README's
/// contract) and the text summary.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub(super) struct EnqueueSummary {
    /// How the run ended.
    pub status: EnqueueEnd,
    /// `csv` or `jsonl`.
    pub format: String,
    /// Physical lines.
    pub lines: u64,
    /// Header lines (0 or 1).
    pub header: u64,
    /// Lines holding no record.
    pub blank: u64,
    /// Valid records.
    pub valid: u64,
    /// Invalid records.
    pub invalid: usize,
    /// Messages the whole input makes.
    pub messages: usize,
    /// Users over those messages.
    pub users: u64,
    /// Messages skipped as confirmed by an earlier run.
    pub skipped_messages: usize,
    /// The first line not skipped.
    pub resume_from: u64,
    /// What decided the skip: `none`, `resume_from` (the flag) or `checkpoint`.
    pub skipped_by: &'static str,
    /// Messages published and confirmed by this run (with --dry-run: that would be).
    pub published_messages: usize,
    /// Users in them.
    pub published_users: u64,
    /// The distinct job ids of the confirmed messages, in the order first
    /// confirmed (one per room, reason and AppId of the run, or the input's
    /// own): what `kickq history --job` looks up. Empty on a dry run, whose
    /// `--json` prints each message with its id.
    pub job_ids: Vec<String>,
    /// Every line up to this one is in a confirmed message.
    pub confirmed_through: u64,
    /// Messages sent but not known to be stored (after a broker failure).
    pub in_doubt: usize,
    /// Prefix of the derived job ids.
    pub job_id_prefix: String,
    /// The checkpoint written, if any.
    pub checkpoint: Option<String>,
    /// Wall time of the run.
    pub elapsed_ms: u64,
}

/// What every report of one run shares: the judged input, where the run
/// started, its job-id prefix and its start time.
#[derive(Clone, Copy)]
pub(super) struct Run<'a> {
    /// The first reading's verdict on the input.
    pub judged: &'a Judged,
    /// Where the run started (what a resume skipped).
    pub start: Start,
    /// The prefix of the derived job ids.
    pub prefix: &'a str,
    /// The run's group size.
    pub group_size: usize,
    /// When the run started, for `elapsed_ms`.
    pub started: Instant,
}

impl EnqueueSummary {
    /// A report of `published` (messages, users) of `run`, confirmed through line `through`.
    pub(super) fn new(
        run: &Run<'_>,
        status: EnqueueEnd,
        published: (usize, u64),
        through: u64,
        checkpoint: Option<&Path>,
    ) -> Self {
        let Run {
            judged,
            start,
            prefix,
            started,
            ..
        } = *run;
        let s = &judged.scanned;
        EnqueueSummary {
            status,
            format: s.format.to_string(),
            lines: s.lines,
            header: s.header,
            blank: s.blank,
            valid: s.valid,
            invalid: s.invalid_count as usize,
            messages: judged.messages,
            users: s.users,
            skipped_messages: start.skipped,
            resume_from: start.from,
            skipped_by: match (start.skipped, start.by_checkpoint) {
                (0, _) => "none",
                (_, true) => "checkpoint",
                (_, false) => "resume_from",
            },
            published_messages: published.0,
            published_users: published.1,
            job_ids: Vec::new(),
            confirmed_through: through,
            in_doubt: 0,
            job_id_prefix: prefix.to_owned(),
            checkpoint: checkpoint.map(|p| p.display().to_string()),
            elapsed_ms: started.elapsed().as_millis() as u64,
        }
    }

    /// The end-of-run summary for people, ending with `status`.
    pub(super) fn text(&self, status: &str) -> String {
        let secs = (self.elapsed_ms as f64 / 1000.0).max(1e-3);
        let mut text = format!(
            "lines {}: {} header, {} valid, {} invalid",
            self.lines, self.header, self.valid, self.invalid
        );
        if self.blank > 0 {
            text.push_str(&format!(", {} blank", self.blank));
        }
        text.push_str(&format!(
            " ({})\nmessages {}, users {}",
            self.format, self.published_messages, self.published_users
        ));
        match self.skipped_by {
            "checkpoint" => text.push_str(&format!(
                " (skipped {} message(s) before line {}, confirmed by the run the checkpoint recorded)",
                self.skipped_messages, self.resume_from
            )),
            "resume_from" => text.push_str(&format!(
                " (skipped {} message(s) before --resume-from {})",
                self.skipped_messages, self.resume_from
            )),
            _ => {}
        }
        text.push_str(&format!(
            "\nelapsed {:.1}s, {:.0} lines/s\n{status}",
            self.elapsed_ms as f64 / 1000.0,
            self.lines as f64 / secs
        ));
        text
    }
}

/// Invalid lines printed before "... and N more".
pub(crate) const MAX_REPORTED_INVALID: usize = 20;
