//! The job message (`KickRequest`) and its validation, shared by the worker, `kickq enqueue` and the producer API.
//!
//! Everything that decides whether a job is usable lives here as pure functions,
//! so the worker and the producers can never disagree about what is valid.

use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt;

/// Longest `room_id`, in bytes (the API's own limit on room ids).
pub const MAX_ROOM_ID_BYTES: usize = 128;
/// Longest user id, in bytes (the API's own limit on user ids).
pub const MAX_USER_ID_BYTES: usize = 64;
/// Longest `reason`, in bytes: the API rejects a `CustomReason` over 256 bytes.
pub const MAX_REASON_BYTES: usize = 256;
/// Longest `job_id`, in bytes: long enough for any UUID or ULID plus a prefix.
pub const MAX_JOB_ID_BYTES: usize = 128;
/// Default cap on users in one message. A message is held unacked until all its
/// users are resolved, so an unbounded list would pin the delivery for minutes.
pub const DEFAULT_MAX_USERS_PER_MESSAGE: usize = 1000;
/// Largest body the worker will try to parse. A valid message with 1,000 users of
/// 64 bytes, every byte escaped as `\uXXXX`, stays well under this; anything
/// larger is rejected before parsing so that a hostile 20 MiB body costs nothing.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// A validated kick job: kick `user_ids` from `room_id` of `app_id`.
///
/// Invariants (enforced by [`validate`], the only constructor used on input):
/// `room_id` is 1..=128 bytes, `user_ids` holds 1..=limit distinct ids of
/// 1..=64 bytes, `reason` is at most 256 bytes and never empty, `job_id` is
/// 1..=128 bytes; no id holds a control character.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KickRequest {
    /// Room to kick from.
    pub room_id: String,
    /// Users to kick, distinct, in the order first given.
    pub user_ids: Vec<String>,
    /// Optional `CustomReason`, passed to the API and part of the coalescing key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// AppId; `None` means the worker's configured one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<u32>,
    /// Idempotency key of the job; retries and dead letters keep it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
}

/// Limits that are configuration rather than API facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most users one message may carry.
    pub max_users_per_message: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_users_per_message: DEFAULT_MAX_USERS_PER_MESSAGE,
        }
    }
}

/// Why a job cannot be used. The `Display` text is what goes into a dead
/// letter's `kickq-detail` header and into `kickq enqueue`'s error lines.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidJob {
    /// The body is larger than [`MAX_MESSAGE_BYTES`].
    #[error("body is {0} bytes, more than the {MAX_MESSAGE_BYTES} allowed")]
    TooLarge(usize),
    /// Not JSON, not UTF-8, or fields of the wrong type.
    #[error("not a job message: {0}")]
    Malformed(String),
    /// `room_id` is empty or too long.
    #[error("room_id must be 1 to {MAX_ROOM_ID_BYTES} bytes, got {0}")]
    RoomIdLength(usize),
    /// `user_ids` is empty.
    #[error("user_ids is empty")]
    NoUsers,
    /// `user_ids` is longer than the configured limit.
    #[error("user_ids has {count} ids, more than the {max} allowed")]
    TooManyUsers {
        /// Ids in the message.
        count: usize,
        /// The configured limit.
        max: usize,
    },
    /// One user id is empty or too long.
    #[error("user_ids[{index}] must be 1 to {MAX_USER_ID_BYTES} bytes, got {len}")]
    UserIdLength {
        /// Position in the list.
        index: usize,
        /// Its length in bytes.
        len: usize,
    },
    /// `reason` is too long.
    #[error("reason must be at most {MAX_REASON_BYTES} bytes, got {0}")]
    ReasonLength(usize),
    /// `job_id` is empty or too long.
    #[error("job_id must be 1 to {MAX_JOB_ID_BYTES} bytes, got {0}")]
    JobIdLength(usize),
    /// An id holds a control character.
    #[error("{field} holds a control character")]
    ControlCharacter {
        /// Which field, e.g. `room_id` or `user_ids[3]`.
        field: String,
    },
}

/// Parses and validates a message body. Unknown fields are ignored; duplicate
/// user ids are folded into one, keeping the first position.
pub fn parse(body: &[u8], limits: &Limits) -> Result<KickRequest, InvalidJob> {
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(InvalidJob::TooLarge(body.len()));
    }
    // Checked whole, not only where serde looks: an unknown field's bytes are
    // skipped unchecked, and the dead letter promises valid input is JSON.
    let text = std::str::from_utf8(body).map_err(|e| InvalidJob::Malformed(format!("not UTF-8: {e}")))?;
    // serde would also read a struct from a JSON array (`["r", ["a"]]`); a job
    // message is an object.
    if !text.trim_start().starts_with('{') {
        return Err(InvalidJob::Malformed("a job message is a JSON object".into()));
    }
    let raw: KickRequest = serde_json::from_str(text).map_err(|e| InvalidJob::Malformed(e.to_string()))?;
    validate(raw, limits)
}

/// Validates a job built in code (the producer API and `kickq enqueue` use this).
pub fn validate(mut job: KickRequest, limits: &Limits) -> Result<KickRequest, InvalidJob> {
    check_id("room_id", &job.room_id, MAX_ROOM_ID_BYTES, InvalidJob::RoomIdLength)?;
    if job.user_ids.is_empty() {
        return Err(InvalidJob::NoUsers);
    }
    if job.user_ids.len() > limits.max_users_per_message {
        return Err(InvalidJob::TooManyUsers {
            count: job.user_ids.len(),
            max: limits.max_users_per_message,
        });
    }
    for (index, user) in job.user_ids.iter().enumerate() {
        check_id(&format!("user_ids[{index}]"), user, MAX_USER_ID_BYTES, |len| {
            InvalidJob::UserIdLength { index, len }
        })?;
    }
    if let Some(reason) = &job.reason {
        if reason.len() > MAX_REASON_BYTES {
            return Err(InvalidJob::ReasonLength(reason.len()));
        }
    }
    if job.reason.as_deref() == Some("") {
        job.reason = None;
    }
    if let Some(job_id) = &job.job_id {
        check_id("job_id", job_id, MAX_JOB_ID_BYTES, InvalidJob::JobIdLength)?;
    }
    dedupe(&mut job.user_ids);
    Ok(job)
}

fn check_id(
    field: &str,
    value: &str,
    max: usize,
    length_error: impl FnOnce(usize) -> InvalidJob,
) -> Result<(), InvalidJob> {
    if value.is_empty() || value.len() > max {
        return Err(length_error(value.len()));
    }
    if value.chars().any(char::is_control) {
        return Err(InvalidJob::ControlCharacter {
            field: field.to_owned(),
        });
    }
    Ok(())
}

fn dedupe(users: &mut Vec<String>) {
    let mut seen = HashSet::with_capacity(users.len());
    users.retain(|u| seen.insert(u.clone()));
}

impl KickRequest {
    /// A job for `user_ids` of `room_id`, with no reason, AppId or job id
    /// (add them with the `with_*` methods). Not validated until published.
    pub fn new(room_id: impl Into<String>, user_ids: impl IntoIterator<Item = impl Into<String>>) -> Self {
        KickRequest {
            room_id: room_id.into(),
            user_ids: user_ids.into_iter().map(Into::into).collect(),
            reason: None,
            app_id: None,
            job_id: None,
        }
    }

    /// The same job with a `CustomReason`.
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// The same job with an idempotency key (also sent as the AMQP `message_id`).
    pub fn with_job_id(mut self, job_id: impl Into<String>) -> Self {
        self.job_id = Some(job_id.into());
        self
    }

    /// A job for `users` of this job's room, reason, app and job id: the body of
    /// a retry or a dead letter that carries exactly those users.
    pub fn with_users(&self, users: Vec<String>) -> KickRequest {
        KickRequest {
            room_id: self.room_id.clone(),
            user_ids: users,
            reason: self.reason.clone(),
            app_id: self.app_id,
            job_id: self.job_id.clone(),
        }
    }

    /// The JSON body, as producers publish it.
    pub fn to_body(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("KickRequest has only strings and integers, which always serialize")
    }
}

impl fmt::Display for KickRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "room {:?}, {} user(s)", self.room_id, self.user_ids.len())
    }
}

/// A fresh job id for a message that carries neither `job_id` nor an AMQP
/// `message_id`: a random UUID (version 4) in its usual dashed form, which
/// also keeps it from looking like a 32-hex-character signature in a log.
pub fn generate_job_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    #[test]
    fn accepts_minimal_and_full_messages() {
        let job = parse(br#"{"room_id":"r1","user_ids":["u1"]}"#, &limits()).unwrap();
        assert_eq!(job.room_id, "r1");
        assert_eq!(job.user_ids, vec!["u1"]);
        assert_eq!(job.reason, None);

        let job = parse(
            br#"{"room_id":"r","user_ids":["a","b","a"],"reason":"spam","app_id":7,"job_id":"j","extra":{"x":1}}"#,
            &limits(),
        )
        .unwrap();
        assert_eq!(job.user_ids, vec!["a", "b"], "duplicates fold, order kept");
        assert_eq!(job.reason.as_deref(), Some("spam"));
        assert_eq!(job.app_id, Some(7));
        assert_eq!(job.job_id.as_deref(), Some("j"));
    }

    #[test]
    fn empty_reason_is_no_reason() {
        let job = parse(br#"{"room_id":"r","user_ids":["a"],"reason":""}"#, &limits()).unwrap();
        assert_eq!(job.reason, None);
    }

    #[test]
    fn rejects_by_table() {
        let long = |n: usize| "x".repeat(n);
        let cases: Vec<(String, &str)> = vec![
            ("not json".into(), "not a job message"),
            ("[]".into(), "a job message is a JSON object"),
            (r#"["r",["a"]]"#.into(), "a job message is a JSON object"),
            (r#"{"user_ids":["a"]}"#.into(), "missing field `room_id`"),
            (r#"{"room_id":"r"}"#.into(), "missing field `user_ids`"),
            (r#"{"room_id":5,"user_ids":["a"]}"#.into(), "invalid type"),
            (r#"{"room_id":"r","user_ids":"a"}"#.into(), "invalid type"),
            (r#"{"room_id":"r","user_ids":[1]}"#.into(), "invalid type"),
            (
                r#"{"room_id":"r","user_ids":["a"],"app_id":-1}"#.into(),
                "invalid value",
            ),
            (
                r#"{"room_id":"r","user_ids":["a"],"app_id":4294967296}"#.into(),
                "invalid value",
            ),
            (
                r#"{"room_id":"","user_ids":["a"]}"#.into(),
                "room_id must be 1 to 128 bytes, got 0",
            ),
            (format!(r#"{{"room_id":"{}","user_ids":["a"]}}"#, long(129)), "got 129"),
            (r#"{"room_id":"r","user_ids":[]}"#.into(), "user_ids is empty"),
            (
                r#"{"room_id":"r","user_ids":[""]}"#.into(),
                "user_ids[0] must be 1 to 64 bytes, got 0",
            ),
            (
                format!(r#"{{"room_id":"r","user_ids":["a","{}"]}}"#, long(65)),
                "user_ids[1] must be 1 to 64 bytes, got 65",
            ),
            (
                r#"{"room_id":"r","user_ids":["a\nb"]}"#.into(),
                "user_ids[0] holds a control character",
            ),
            (
                r#"{"room_id":"r\u0000","user_ids":["a"]}"#.into(),
                "room_id holds a control character",
            ),
            (
                format!(r#"{{"room_id":"r","user_ids":["a"],"reason":"{}"}}"#, long(257)),
                "reason must be at most 256 bytes, got 257",
            ),
            (
                r#"{"room_id":"r","user_ids":["a"],"job_id":""}"#.into(),
                "job_id must be 1 to 128 bytes",
            ),
            (
                format!(r#"{{"room_id":"r","user_ids":["a"],"job_id":"{}"}}"#, long(129)),
                "job_id must be 1 to 128 bytes, got 129",
            ),
            (
                r#"{"room_id":"r","room_id":"s","user_ids":["a"]}"#.into(),
                "duplicate field",
            ),
        ];
        for (body, expected) in cases {
            let err = parse(body.as_bytes(), &limits()).expect_err(&body).to_string();
            assert!(err.contains(expected), "{body}: {err} should contain {expected}");
        }
    }

    #[test]
    fn rejects_non_utf8_and_oversized_bodies() {
        let err = parse(b"{\"room_id\":\"\xff\",\"user_ids\":[\"a\"]}", &limits()).unwrap_err();
        assert!(matches!(err, InvalidJob::Malformed(_)), "{err}");
        let hidden = parse(
            b"{\"room_id\":\"r\",\"user_ids\":[\"a\"],\"extra\":\"\xff\"}",
            &limits(),
        )
        .unwrap_err();
        assert!(hidden.to_string().contains("not UTF-8"), "{hidden}");
        let big = vec![b' '; MAX_MESSAGE_BYTES + 1];
        assert_eq!(
            parse(&big, &limits()).unwrap_err(),
            InvalidJob::TooLarge(MAX_MESSAGE_BYTES + 1)
        );
    }

    #[test]
    fn user_limit_is_configurable_and_boundaries_hold() {
        let users = |n: usize| (0..n).map(|i| format!("u{i}")).collect::<Vec<_>>();
        let job = |n| KickRequest {
            room_id: "r".into(),
            user_ids: users(n),
            reason: None,
            app_id: None,
            job_id: None,
        };
        assert!(validate(job(1000), &limits()).is_ok());
        assert_eq!(
            validate(job(1001), &limits()).unwrap_err(),
            InvalidJob::TooManyUsers { count: 1001, max: 1000 }
        );
        let small = Limits {
            max_users_per_message: 3,
        };
        assert!(validate(job(3), &small).is_ok());
        assert!(validate(job(4), &small).is_err());
        let edge = KickRequest {
            room_id: "r".repeat(128),
            user_ids: vec!["u".repeat(64)],
            reason: Some("x".repeat(256)),
            app_id: None,
            job_id: Some("j".repeat(128)),
        };
        assert!(validate(edge, &limits()).is_ok());
    }

    #[test]
    fn hostile_but_legal_ids_pass_untouched() {
        let body = r#"{"room_id":"r&x=1","user_ids":["a&UserId[]=victim","é 漢 %20+#;="]}"#;
        let job = parse(body.as_bytes(), &limits()).unwrap();
        assert_eq!(job.user_ids, vec!["a&UserId[]=victim", "é 漢 %20+#;="]);
    }

    #[test]
    fn round_trips_through_the_body() {
        let job = parse(
            br#"{"room_id":"r","user_ids":["a"],"reason":"x","job_id":"j"}"#,
            &limits(),
        )
        .unwrap();
        let again = parse(&job.with_users(vec!["b".into()]).to_body(), &limits()).unwrap();
        assert_eq!(again.user_ids, vec!["b"]);
        assert_eq!(again.job_id.as_deref(), Some("j"));
        assert_eq!(again.reason.as_deref(), Some("x"));
    }
}
