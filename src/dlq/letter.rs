//! What a dead letter says about itself (read from its body and headers), and the filters of `kickq dlq`.

use crate::amqp::headers::{self, DeadError};
use crate::job::KickRequest;
use chrono::{DateTime, Utc};
use lapin::types::{AMQPValue, FieldTable};

/// Longest body excerpt kept for a letter whose body is not a job message.
pub(crate) const MAX_PREVIEW_BYTES: usize = 200;

/// One dead letter as `kickq dlq` shows and filters it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Letter {
    /// 1-based position in the dead queue when it was read.
    pub position: u64,
    /// Why it is dead; `delivery_limit` for letters the broker dead-lettered itself.
    pub error: DeadError,
    /// The API's code, if it answered one.
    pub code: Option<i64>,
    /// Human-readable reason.
    pub detail: String,
    /// API attempts made.
    pub attempts: u32,
    /// The job id (header, else the body's).
    pub job_id: Option<String>,
    /// When it died: `kickq-failed-at`, else the broker's `x-death` time; `None` if neither is there.
    pub failed_at: Option<DateTime<Utc>>,
    /// The body as a job message, if it is one (read leniently: not validated).
    pub job: Option<KickRequest>,
    /// For any other body: its bytes, lossy UTF-8, cut at [`MAX_PREVIEW_BYTES`].
    pub body_preview: Option<String>,
    /// Times it was replayed before (entries of `kickq-dlq-history`).
    pub replays: usize,
    /// What tells this letter from the others (a digest of its body and
    /// kickq headers; identical copies share it), for selecting letters.
    pub key: String,
    /// The whole body as lossy UTF-8, cut at [`MAX_BODY_SHOWN`] bytes.
    pub body: String,
    /// Every header as `(name, text)`.
    pub headers: Vec<(String, String)>,
}

/// Longest body a letter keeps for showing (the console).
pub(crate) const MAX_BODY_SHOWN: usize = 16 * 1024;

impl Letter {
    /// Reads a letter from its body and headers.
    pub(crate) fn read(position: u64, body: &[u8], h: Option<&FieldTable>) -> Letter {
        let dl = headers::read_dead_letter(h);
        let job: Option<KickRequest> = serde_json::from_slice(body).ok();
        let body_preview = job.is_none().then(|| preview(body));
        let failed_at = headers::get_time(h, headers::FAILED_AT).or_else(|| x_death_time(h));
        let key = key_of(body, &dl, failed_at);
        let shown = &body[..body.len().min(MAX_BODY_SHOWN)];
        Letter {
            key,
            body: String::from_utf8_lossy(shown).into_owned(),
            headers: headers::lines(h),
            position,
            error: dl.error,
            code: dl.code,
            detail: dl.detail,
            attempts: dl.attempts,
            job_id: dl.job_id.or_else(|| job.as_ref().and_then(|j| j.job_id.clone())),
            failed_at,
            job,
            body_preview,
            replays: history_len(h),
        }
    }

    /// The AppId its job names, if the body is a job message that names one.
    pub(crate) fn app_id(&self) -> Option<u32> {
        self.job.as_ref().and_then(|j| j.app_id)
    }

    /// The room, if the body is a job message.
    pub(crate) fn room(&self) -> Option<&str> {
        self.job.as_ref().map(|j| j.room_id.as_str())
    }
}

/// The first 8 bytes of SHA-256 over the body and what kickq wrote of the
/// death, in hex.
fn key_of(body: &[u8], dl: &headers::DeadLetter, failed_at: Option<DateTime<Utc>>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(body);
    h.update([0]);
    h.update(dl.error.as_str());
    h.update([0]);
    h.update(dl.detail.as_bytes());
    h.update([0]);
    h.update(
        failed_at
            .map(|t| t.timestamp_millis())
            .unwrap_or_default()
            .to_le_bytes(),
    );
    hex::encode(&h.finalize()[..8])
}

/// `body` as lossy UTF-8, cut on a char boundary.
pub(crate) fn preview(body: &[u8]) -> String {
    let cut = &body[..body.len().min(MAX_PREVIEW_BYTES)];
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if body.len() > MAX_PREVIEW_BYTES {
        s.push('…');
    }
    s
}

/// The time of the most recent `x-death` entry (the broker puts it first).
fn x_death_time(h: Option<&FieldTable>) -> Option<DateTime<Utc>> {
    let AMQPValue::FieldArray(deaths) = h?.inner().get("x-death")? else {
        return None;
    };
    deaths.as_slice().iter().find_map(|d| match d {
        AMQPValue::FieldTable(t) => match t.inner().get("time")? {
            AMQPValue::Timestamp(secs) => DateTime::from_timestamp(i64::try_from(*secs).ok()?, 0),
            _ => None,
        },
        _ => None,
    })
}

fn history_len(h: Option<&FieldTable>) -> usize {
    match h.and_then(|h| h.inner().get(headers::DLQ_HISTORY)) {
        Some(AMQPValue::FieldArray(a)) => a.as_slice().len(),
        Some(_) => 1,
        None => 0,
    }
}

/// Parses `--error`: the `kickq-error` values plus `delivery_limit`.
pub(crate) fn parse_error(raw: &str) -> Result<DeadError, String> {
    Ok(match raw.trim() {
        "validation" => DeadError::Validation,
        "permanent" => DeadError::Permanent,
        "retries_exhausted" => DeadError::RetriesExhausted,
        "unknown_app" => DeadError::UnknownApp,
        "delivery_limit" => DeadError::DeliveryLimit,
        "expired" => DeadError::Expired,
        other => {
            return Err(format!(
                "{other:?} is not an error (validation, permanent, retries_exhausted, unknown_app, delivery_limit, expired)"
            ))
        }
    })
}

/// Which letters a command applies to; every field given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Filter {
    /// Only letters dead for this reason.
    pub error: Option<DeadError>,
    /// Only letters with this API code.
    pub code: Option<i64>,
    /// Only letters of this room (never a letter whose body is not a job).
    pub room: Option<String>,
    /// Only letters that died at or after this time (never one of unknown time).
    pub since: Option<DateTime<Utc>>,
    /// Only letters of this AppId: the job names it, or names none and this
    /// is the default app (never a letter whose body is not a job).
    pub app: Option<u32>,
    /// The default app (the config file's), that a job naming no app belongs to.
    pub default_app: Option<u32>,
    /// Only these letters (by [`Letter::key`]); empty for any.
    pub keys: std::collections::BTreeSet<String>,
}

impl Filter {
    /// Whether `l` passes every condition.
    pub(crate) fn matches(&self, l: &Letter) -> bool {
        self.error.is_none_or(|e| e == l.error)
            && self.code.is_none_or(|c| Some(c) == l.code)
            && self.room.as_deref().is_none_or(|r| Some(r) == l.room())
            && self.since.is_none_or(|t| l.failed_at.is_some_and(|at| at >= t))
            && self
                .app
                .is_none_or(|a| l.job.as_ref().is_some_and(|j| j.app_id.or(self.default_app) == Some(a)))
            && (self.keys.is_empty() || self.keys.contains(&l.key))
    }

    /// The conditions in words, for prompts and summaries.
    pub(crate) fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(e) = self.error {
            parts.push(format!("error {}", e.as_str()));
        }
        if let Some(c) = self.code {
            parts.push(format!("code {c}"));
        }
        if let Some(r) = &self.room {
            parts.push(format!("room {r:?}"));
        }
        if let Some(t) = self.since {
            parts.push(format!("failed since {}", headers::rfc3339(t)));
        }
        if let Some(a) = self.app {
            parts.push(format!("app {a}"));
        }
        match (self.keys.len(), self.keys.first()) {
            (1, Some(k)) => parts.push(format!("letter {k}")),
            (0, _) => {}
            (n, _) => parts.push(format!("{n} selected letters")),
        }
        if parts.is_empty() {
            "every letter".into()
        } else {
            parts.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amqp::headers::DeadLetter;
    use chrono::TimeZone;
    use lapin::types::{FieldArray, LongString};

    fn at(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, h, 0, 0).unwrap()
    }

    fn letter(error: DeadError, code: Option<i64>, room: &str, failed_h: u32) -> Letter {
        let dl = DeadLetter {
            error,
            code,
            detail: "d".into(),
            attempts: 3,
            job_id: Some("j".into()),
            failed_at: at(failed_h),
        };
        let h = headers::dead_letter(None, &dl);
        Letter::read(1, &KickRequest::new(room, ["u"]).to_body(), Some(&h))
    }

    #[test]
    fn reads_kickq_letters() {
        let l = letter(DeadError::RetriesExhausted, Some(1), "r1", 10);
        assert_eq!(l.error, DeadError::RetriesExhausted);
        assert_eq!((l.code, l.attempts, l.replays), (Some(1), 3, 0));
        assert_eq!(l.room(), Some("r1"));
        assert_eq!(l.failed_at, Some(at(10)));
        assert_eq!(l.job_id.as_deref(), Some("j"));
        assert_eq!(l.body_preview, None);
    }

    #[test]
    fn reads_broker_letters_and_bad_bodies() {
        let mut death = FieldTable::default();
        death.insert("time".into(), AMQPValue::Timestamp(at(7).timestamp() as u64));
        death.insert(
            "reason".into(),
            AMQPValue::LongString(LongString::from("delivery_limit")),
        );
        let mut h = FieldTable::default();
        h.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
        );
        h.insert(
            "x-first-death-reason".into(),
            AMQPValue::LongString(LongString::from("delivery_limit")),
        );
        let body = [b"\xff not json ".as_slice(), &[b'x'; 300]].concat();
        let l = Letter::read(4, &body, Some(&h));
        assert_eq!(l.error, DeadError::DeliveryLimit);
        assert_eq!(l.failed_at, Some(at(7)));
        assert_eq!(l.room(), None);
        let p = l.body_preview.unwrap();
        assert!(p.starts_with("\u{fffd} not json x") && p.ends_with('…'), "{p}");
        assert!(l.detail.contains("delivery_limit"));
        let bare = Letter::read(1, b"{}", None);
        assert_eq!((bare.error, bare.failed_at), (DeadError::DeliveryLimit, None));
    }

    #[test]
    fn filters_by_table() {
        let l = letter(DeadError::Permanent, Some(2), "r1", 10);
        let f = |error, code, room: Option<&str>, since: Option<u32>| Filter {
            error,
            code,
            room: room.map(String::from),
            since: since.map(at),
            ..Filter::default()
        };
        let cases = [
            (f(None, None, None, None), true),
            (f(Some(DeadError::Permanent), None, None, None), true),
            (f(Some(DeadError::Validation), None, None, None), false),
            (f(None, Some(2), None, None), true),
            (f(None, Some(3), None, None), false),
            (f(None, None, Some("r1"), None), true),
            (f(None, None, Some("r2"), None), false),
            (f(None, None, None, Some(10)), true),
            (f(None, None, None, Some(11)), false),
            (f(Some(DeadError::Permanent), Some(2), Some("r1"), Some(9)), true),
            (f(Some(DeadError::Permanent), Some(2), Some("r1"), Some(11)), false),
        ];
        for (filter, want) in cases {
            assert_eq!(filter.matches(&l), want, "{filter:?}");
        }
        let expired = letter(DeadError::Expired, None, "r1", 10);
        assert!(f(Some(DeadError::Expired), None, None, None).matches(&expired));
        assert!(!f(Some(DeadError::Expired), None, None, None).matches(&l));
        assert!(!f(Some(DeadError::Validation), None, None, None).matches(&expired));
        let unknown_time = Letter::read(1, b"x", None);
        assert!(!f(None, None, None, Some(0)).matches(&unknown_time));
        assert!(!f(None, None, Some("x"), None).matches(&unknown_time));
    }

    #[test]
    fn filters_by_app_and_selected_keys() {
        let mut named = KickRequest::new("r1", ["u"]);
        named.app_id = Some(7);
        let named = Letter::read(1, &named.to_body(), None);
        let unnamed = Letter::read(2, &KickRequest::new("r1", ["v"]).to_body(), None);
        let not_a_job = Letter::read(3, b"x", None);
        let app = |app, default_app| Filter {
            app: Some(app),
            default_app,
            ..Filter::default()
        };
        // (filter, matches named (app 7), unnamed, not a job)
        let cases = [
            (app(7, None), [true, false, false]),
            (app(7, Some(7)), [true, true, false]),
            (app(8, Some(8)), [false, true, false]),
            (app(8, None), [false, false, false]),
        ];
        for (filter, want) in cases {
            let got = [&named, &unnamed, &not_a_job].map(|l| filter.matches(l));
            assert_eq!(got, want, "{filter:?}");
        }
        assert_ne!(named.key, unnamed.key);
        assert_eq!(
            named.key,
            Letter::read(9, &named_body(), None).key,
            "the position is not part of the key"
        );
        let keys = |k: &[&str]| Filter {
            keys: k.iter().map(|s| s.to_string()).collect(),
            ..Filter::default()
        };
        assert!(keys(&[]).matches(&named));
        assert!(keys(&[&named.key]).matches(&named));
        assert!(!keys(&[&named.key]).matches(&unnamed));
        assert!(keys(&["0", &unnamed.key]).matches(&unnamed));
        assert_eq!(keys(&[&named.key]).describe(), format!("letter {}", named.key));
        assert_eq!(keys(&["a", "b"]).describe(), "2 selected letters");
        assert_eq!(app(7, None).describe(), "app 7");
        assert_eq!(named.app_id(), Some(7));
        assert!(named.body.contains("\"room_id\":\"r1\""), "{}", named.body);
    }

    fn named_body() -> Vec<u8> {
        let mut j = KickRequest::new("r1", ["u"]);
        j.app_id = Some(7);
        j.to_body()
    }

    #[test]
    fn describes_filters_and_parses_errors() {
        assert_eq!(Filter::default().describe(), "every letter");
        let f = Filter {
            error: Some(DeadError::RetriesExhausted),
            code: Some(1),
            room: Some("r".into()),
            since: Some(at(1)),
            ..Filter::default()
        };
        assert_eq!(
            f.describe(),
            "error retries_exhausted, code 1, room \"r\", failed since 2024-05-01T01:00:00.000Z"
        );
        for e in [
            DeadError::Validation,
            DeadError::Permanent,
            DeadError::RetriesExhausted,
            DeadError::UnknownApp,
            DeadError::DeliveryLimit,
            DeadError::Expired,
        ] {
            assert_eq!(parse_error(e.as_str()), Ok(e));
        }
        assert!(parse_error("retries-exhausted").is_err());
    }
}
