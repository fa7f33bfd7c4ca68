//! How `kickq dlq` shows letters and results: `list` as an aligned table for people or a JSON array for
//! scripts; the counts of `replay` and `purge` (and of their dry runs) as one JSON object.

use super::letter::Letter;
use super::pass::{Peeked, SweepReport};
use crate::amqp::headers::rfc3339;
use crate::table::escape;
use serde_json::{json, Value};

/// Most user ids shown in the table's USERS column before "…".
pub(crate) const SHOWN_USERS: usize = 3;
/// Longest DETAIL cell, in chars.
pub(crate) const MAX_DETAIL_CHARS: usize = 80;

const HEADER: [&str; 8] = ["#", "ROOM", "USERS", "ERROR", "CODE", "ATTEMPTS", "FAILED_AT", "DETAIL"];

/// The table: a header and one line per letter, columns aligned, missing
/// values as `-`. USERS is the count and the first ids; a body that is not a
/// job message is shown (lossy, cut) after the detail. Control characters are
/// escaped so a hostile id cannot drive the terminal.
pub(crate) fn format_table(letters: &[Letter]) -> String {
    let mut rows: Vec<[String; 8]> = vec![HEADER.map(String::from)];
    rows.extend(letters.iter().map(|l| {
        let users = match &l.job {
            Some(j) => {
                let mut shown: Vec<&str> = j.user_ids.iter().take(SHOWN_USERS).map(String::as_str).collect();
                if j.user_ids.len() > SHOWN_USERS {
                    shown.push("…");
                }
                format!("{} ({})", j.user_ids.len(), shown.join(","))
            }
            None => "-".into(),
        };
        let mut detail = cut(&l.detail, MAX_DETAIL_CHARS);
        if let Some(body) = &l.body_preview {
            detail.push_str(" | body: ");
            detail.push_str(&cut(body, MAX_DETAIL_CHARS));
        }
        [
            l.position.to_string(),
            l.room().unwrap_or("-").to_owned(),
            users,
            l.error.as_str().to_owned(),
            l.code.map_or_else(|| "-".into(), |c| c.to_string()),
            l.attempts.to_string(),
            l.failed_at.map_or_else(|| "-".into(), rfc3339),
            detail,
        ]
        .map(|cell| escape(&cell))
    }));
    crate::table::render(&rows)
}

/// The JSON array: every field of every letter, full user lists, times in RFC 3339.
pub(crate) fn to_json(letters: &[Letter]) -> Value {
    Value::Array(
        letters
            .iter()
            .map(|l| {
                json!({
                    "position": l.position,
                    "key": l.key,
                    "app_id": l.app_id(),
                    "error": l.error.as_str(),
                    "code": l.code,
                    "detail": l.detail,
                    "attempts": l.attempts,
                    "job_id": l.job_id,
                    "failed_at": l.failed_at.map(rfc3339),
                    "room_id": l.job.as_ref().map(|j| &j.room_id),
                    "user_ids": l.job.as_ref().map(|j| &j.user_ids),
                    "reason": l.job.as_ref().and_then(|j| j.reason.as_ref()),
                    "body": l.body_preview,
                    "replays": l.replays,
                })
            })
            .collect(),
    )
}

/// The counts of a replay or purge, real or dry, as `--json` prints them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LetterCounts {
    /// Ready letters when the pass started.
    pub depth: u64,
    /// Letters read.
    pub examined: u64,
    /// Letters read that match the filters.
    pub matched: u64,
    /// Letters replayed or purged (would be, in a dry run).
    pub taken: u64,
    /// Letters of the pass that stay in the dead queue: re-appended, or never
    /// read (a `--limit` reached before any letter had to move, an interruption).
    pub kept: u64,
    /// Letters in flight when the pass stopped (still in the dead queue, maybe
    /// also replayed or re-appended).
    pub in_doubt: u64,
    /// Nothing was changed.
    pub dry_run: bool,
}

impl LetterCounts {
    /// The counts of a sweep.
    pub(crate) fn of_sweep(r: &SweepReport) -> Self {
        Self {
            depth: r.depth,
            examined: r.examined,
            matched: r.matched,
            taken: r.taken,
            kept: r.kept + r.unread,
            in_doubt: r.in_flight,
            dry_run: false,
        }
    }

    /// What a sweep would do, from a peek with the same filter and limit.
    pub(crate) fn of_dry_run(p: &Peeked) -> Self {
        let taken = p.letters.len() as u64;
        Self {
            depth: p.depth,
            examined: p.scanned,
            matched: p.matched,
            taken,
            kept: p.scanned - taken,
            in_doubt: 0,
            dry_run: true,
        }
    }

    /// The `--json` object, on one line with its keys in the documented
    /// order; `taken_as` names the taken count (`replayed`, `purged`).
    pub(crate) fn to_json(self, taken_as: &'static str) -> String {
        format!(
            "{{\"depth\":{},\"examined\":{},\"matched\":{},\"{taken_as}\":{},\"kept\":{},\"in_doubt\":{},\"dry_run\":{}}}",
            self.depth, self.examined, self.matched, self.taken, self.kept, self.in_doubt, self.dry_run
        )
    }
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut t: String = s.chars().take(max).collect();
    t.push('…');
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amqp::headers::DeadError;
    use crate::job::KickRequest;
    use chrono::{TimeZone, Utc};

    fn letter(position: u64, job: Option<KickRequest>, error: DeadError, code: Option<i64>, detail: &str) -> Letter {
        Letter {
            position,
            error,
            code,
            detail: detail.into(),
            attempts: 2,
            job_id: Some("j".into()),
            failed_at: (position == 1).then(|| Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()),
            body_preview: job.is_none().then(|| "not json\n".into()),
            job,
            replays: 0,
            key: format!("{position:016x}"),
            body: String::new(),
            headers: Vec::new(),
        }
    }

    #[test]
    fn table_is_aligned_and_shows_bodies_that_are_not_jobs() {
        let rows = [
            letter(
                1,
                Some(KickRequest::new("room-1", ["a", "b", "c", "d"])),
                DeadError::RetriesExhausted,
                Some(1),
                "server busy",
            ),
            letter(2, None, DeadError::Validation, None, "not a job message"),
        ];
        let expected = "\
#  ROOM    USERS        ERROR              CODE  ATTEMPTS  FAILED_AT                 DETAIL
1  room-1  4 (a,b,c,…)  retries_exhausted  1     2         2024-05-01T12:00:00.000Z  server busy
2  -       -            validation         -     2         -                         not a job message | body: not json\\n
";
        assert_eq!(format_table(&rows), expected);
    }

    #[test]
    fn long_details_are_cut_and_control_characters_escaped() {
        let long = letter(
            3,
            Some(KickRequest::new("r\u{1b}", ["u"])),
            DeadError::Permanent,
            Some(2),
            &"x".repeat(200),
        );
        let table = format_table(&[long]);
        assert_eq!(table.lines().count(), 2, "{table}");
        assert!(table.contains("r\\u{1b}"), "{table}");
        assert!(table
            .lines()
            .nth(1)
            .unwrap()
            .ends_with(&format!("{}…", "x".repeat(MAX_DETAIL_CHARS))));
    }

    #[test]
    fn json_has_every_field() {
        let v = to_json(&[
            letter(
                1,
                Some(KickRequest::new("r", ["a"]).with_reason("spam")),
                DeadError::Permanent,
                Some(2),
                "no",
            ),
            letter(2, None, DeadError::DeliveryLimit, None, "broker"),
        ]);
        assert_eq!(v[0]["room_id"], "r");
        assert_eq!(v[0]["user_ids"], json!(["a"]));
        assert_eq!(v[0]["reason"], "spam");
        assert_eq!(v[0]["error"], "permanent");
        assert_eq!(v[0]["failed_at"], "2024-05-01T12:00:00.000Z");
        assert_eq!(v[0]["body"], Value::Null);
        assert_eq!(v[1]["room_id"], Value::Null);
        assert_eq!(v[1]["body"], "not json\n");
        assert_eq!(v[1]["error"], "delivery_limit");
        assert_eq!(v.as_array().unwrap().len(), 2);
    }

    fn sweep(examined: u64, matched: u64, taken: u64, kept: u64, unread: u64, in_flight: u64) -> SweepReport {
        SweepReport {
            depth: 10,
            examined,
            matched,
            taken,
            kept,
            unread,
            in_flight,
            end: crate::dlq::pass::SweepEnd::Done,
        }
    }

    #[test]
    fn tallies_count_unread_letters_as_kept() {
        // (report, kept, in_doubt)
        let cases = [
            (sweep(10, 4, 4, 6, 0, 0), 6, 0),
            (sweep(2, 2, 2, 0, 8, 0), 8, 0),
            (sweep(5, 3, 2, 3, 5, 0), 8, 0),
            (sweep(6, 6, 4, 0, 0, 2), 0, 2),
        ];
        for (r, kept, in_doubt) in cases {
            let t = LetterCounts::of_sweep(&r);
            assert_eq!(
                (t.kept, t.in_doubt, t.taken, t.dry_run),
                (kept, in_doubt, r.taken, false),
                "{r:?}"
            );
        }
        let peeked = Peeked {
            depth: 5,
            scanned: 5,
            matched: 3,
            letters: vec![letter(1, None, DeadError::Permanent, None, "x")],
        };
        let t = LetterCounts::of_dry_run(&peeked);
        assert_eq!((t.examined, t.matched, t.taken, t.kept, t.dry_run), (5, 3, 1, 4, true));
    }

    #[test]
    fn the_json_summary_has_a_fixed_shape() {
        let t = LetterCounts::of_sweep(&sweep(5, 3, 2, 3, 5, 1));
        assert_eq!(
            t.to_json("replayed"),
            r#"{"depth":10,"examined":5,"matched":3,"replayed":2,"kept":8,"in_doubt":1,"dry_run":false}"#
        );
        let v: Value = serde_json::from_str(&t.to_json("purged")).unwrap();
        assert_eq!(v["purged"], 2);
        assert_eq!(v.as_object().unwrap().len(), 7, "{v}");
    }
}
