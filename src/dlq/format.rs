//! How `kickq dlq list` shows letters: an aligned table for people, a JSON array for scripts.

use super::letter::Letter;
use crate::amqp::headers::rfc3339;
use crate::table::escape;
use serde_json::{json, Value};

/// Most user ids shown in the table's USERS column before "…".
pub const SHOWN_USERS: usize = 3;
/// Longest DETAIL cell, in chars.
pub const MAX_DETAIL_CHARS: usize = 80;

const HEADER: [&str; 8] = ["#", "ROOM", "USERS", "ERROR", "CODE", "ATTEMPTS", "FAILED_AT", "DETAIL"];

/// The table: a header and one line per letter, columns aligned, missing
/// values as `-`. USERS is the count and the first ids; a body that is not a
/// job message is shown (lossy, cut) after the detail. Control characters are
/// escaped so a hostile id cannot drive the terminal.
pub fn format_table(letters: &[Letter]) -> String {
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
pub fn to_json(letters: &[Letter]) -> Value {
    Value::Array(
        letters
            .iter()
            .map(|l| {
                json!({
                    "position": l.position,
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
}
