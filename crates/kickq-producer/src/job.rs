//! The job message (`KickRequest`) and its validation, shared by the worker, `kickq enqueue` and the producer API.
//!
//! Everything that decides whether a job is usable lives here as pure functions,
//! so the worker and the producers can never disagree about what is valid.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

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
/// 1..=128 bytes; no id holds a control character, and with
/// [`IdCharset::Vendor`] (the default) `room_id` and every user id hold only
/// [`VENDOR_ID_CHARS`].
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
    /// Deadline: a job still queued after this instant is dead-lettered
    /// `expired` instead of spending budget (see [`KickRequest::expired_at`]).
    /// On the wire an RFC 3339 string such as `2026-12-01T12:00:00Z`;
    /// anything else fails validation.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "not_after_to_str",
        deserialize_with = "not_after_from_str"
    )]
    pub not_after: Option<DateTime<Utc>>,
}

/// An example deadline for messages and docs.
pub const NOT_AFTER_EXAMPLE: &str = "2026-12-01T12:00:00Z";

/// Writes `not_after` as RFC 3339 in UTC, with a fraction only when it has one.
fn not_after_to_str<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        None => s.serialize_none(),
    }
}

/// Reads `not_after` strictly as RFC 3339 (any offset, kept as UTC); the
/// error names the field and the value, so a dead letter's reason says it.
fn not_after_from_str<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    let raw: Option<String> = Option::deserialize(d)?;
    raw.map(|raw| {
        parse_not_after(&raw).map_err(|_| {
            serde::de::Error::custom(format!(
                "not_after must be an RFC 3339 time such as {NOT_AFTER_EXAMPLE}, got {raw:?}"
            ))
        })
    })
    .transpose()
}

/// Parses an RFC 3339 time (as `not_after` and `--not-after` take it) into UTC.
pub fn parse_not_after(raw: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(raw.trim()).map(|t| t.with_timezone(&Utc))
}

/// The characters ZEGOCLOUD allows in a user id and in a room id besides
/// ASCII digits and English letters, as one string for messages and docs.
///
/// - User ids: the SDK reference of `ZegoUser.userID` ("User ID, a utf8
///   string with a maximum length of 64 bytes or less. [...] Only support
///   numbers, English characters and '~', '!', '@', '#', '$', '%', '^', '&',
///   '*', '(', ')', '_', '+', '=', '-', '`', ';', '’', ',', '.', '<', '>',
///   '/', '\\'", e.g. the React Native SDK's ZegoUser page,
///   <https://unpkg.com/zego-express-engine-reactnative@3.20.2/docs/classes/_zegoexpressdefines_.zegouser.html>;
///   some other platforms' pages leave '/' out of the same sentence).
/// - Room ids: the SDK reference of `loginRoom`, page "loginRoom method",
///   <https://zegocloud.com/unique-api/express-video-sdk/en/dart_flutter/zego_express_engine/ZegoExpressEngineRoom/loginRoom.html>
///   (parameter `roomID`: "Room ID, a string of up to 128 bytes in length.
///   Caution: 1. room ID is defined by yourself. 2. Only support numbers,
///   English characters and '~', '!', '@', '#', '$', '%', '^', '&', '*', '(',
///   ')', '_', '+', '=', '-', '`', ';', '’', ',', '.', '<', '>', '/', '\\'.
///   3. If you need to communicate with the Web SDK, please do not use
///   '%'."). The same list appears on the roomID parameter of the SDK's
///   other room and IM calls.
///
/// Both lists are the same. (The SDK's error 1002012, "room ID contains
/// invalid characters", words a shorter list without '’' and '/'; kickq
/// follows the parameter reference.) The pages render the apostrophe as a
/// typographic '’'; it is the ASCII `'` (the only one a keyboard-typed id
/// holds), and the typographic one is refused. '%' stays allowed: the Web SDK
/// note is advice to apps, and KickoutUser is a server API.
pub const VENDOR_ID_CHARS: &str = "~!@#$%^&*()_+=-`;',.<>/\\";

/// Whether `c` may appear in a ZEGOCLOUD user or room id: an ASCII digit, an
/// English letter, or one of [`VENDOR_ID_CHARS`].
pub fn is_vendor_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || VENDOR_ID_CHARS.contains(c)
}

/// Which characters `room_id` and user ids may hold (`KICKQ_ID_CHARSET`).
/// Control characters are refused under either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdCharset {
    /// ZEGOCLOUD's documented set (see [`VENDOR_ID_CHARS`]): an id outside
    /// it is dead-lettered `validation` instead of costing a call that the
    /// API answers with code 2.
    #[default]
    Vendor,
    /// Any character but a control character (the rule before issue #10),
    /// for an app whose ids the API is known to take beyond its documented set.
    Any,
}

impl IdCharset {
    /// The setting's value: `vendor` or `any`.
    pub fn as_str(self) -> &'static str {
        match self {
            IdCharset::Vendor => "vendor",
            IdCharset::Any => "any",
        }
    }

    /// The first character of `id` this set refuses, if any.
    pub fn first_refused(self, id: &str) -> Option<char> {
        match self {
            IdCharset::Vendor => id.chars().find(|&c| !is_vendor_id_char(c)),
            IdCharset::Any => id.chars().find(|c| c.is_control()),
        }
    }
}

impl fmt::Display for IdCharset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `KICKQ_ID_CHARSET` value that is neither `vendor` nor `any`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an id charset: use vendor or any")]
pub struct UnknownIdCharset(pub String);

impl FromStr for IdCharset {
    type Err = UnknownIdCharset;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "vendor" => Ok(IdCharset::Vendor),
            "any" => Ok(IdCharset::Any),
            other => Err(UnknownIdCharset(other.to_owned())),
        }
    }
}

/// Limits that are configuration rather than API facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most users one message may carry.
    pub max_users_per_message: usize,
    /// Characters allowed in `room_id` and user ids.
    pub id_charset: IdCharset,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_users_per_message: DEFAULT_MAX_USERS_PER_MESSAGE,
            id_charset: IdCharset::default(),
        }
    }
}

/// The variable that sets [`Limits::max_users_per_message`], read by `kickq run`,
/// `kickq enqueue` and [`Limits::from_env`].
pub const MAX_USERS_VAR: &str = "KICKQ_MAX_USERS_PER_MESSAGE";
/// The variable that sets [`Limits::id_charset`].
pub const ID_CHARSET_VAR: &str = "KICKQ_ID_CHARSET";

/// A limits variable that does not parse; the message names the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    /// `KICKQ_MAX_USERS_PER_MESSAGE` is not a whole number of at least 1.
    #[error("{MAX_USERS_VAR}={0:?}: expected a whole number of at least 1")]
    MaxUsers(String),
    /// `KICKQ_ID_CHARSET` is neither `vendor` nor `any`.
    #[error("{ID_CHARSET_VAR}: {0}")]
    IdCharset(#[from] UnknownIdCharset),
}

impl Limits {
    /// The limits the worker of this environment applies: `KICKQ_MAX_USERS_PER_MESSAGE`
    /// and `KICKQ_ID_CHARSET`, each defaulting as in `kickq run`. A producer that
    /// validates with these never publishes a job that worker dead-letters as
    /// `validation`.
    pub fn from_env() -> Result<Limits, LimitsError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`Limits::from_env`] over any source of variables (blank counts as unset).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Limits, LimitsError> {
        let set = |name| var(name).filter(|v: &String| !v.trim().is_empty());
        let mut limits = Limits::default();
        if let Some(v) = set(MAX_USERS_VAR) {
            limits.max_users_per_message = match v.trim().parse::<usize>() {
                Ok(n) if n >= 1 => n,
                _ => return Err(LimitsError::MaxUsers(v)),
            };
        }
        if let Some(v) = set(ID_CHARSET_VAR) {
            limits.id_charset = v.trim().parse()?;
        }
        Ok(limits)
    }
}

/// Which id [`InvalidJob::OutsideIdCharset`] is about, for its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    /// `room_id`.
    Room,
    /// One of `user_ids`.
    User,
}

impl fmt::Display for IdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdKind::Room => "room",
            IdKind::User => "user",
        })
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
    /// `room_id` or a user id holds a character outside ZEGOCLOUD's set
    /// ([`IdCharset::Vendor`]).
    #[error(
        "{field} has a character outside ZEGOCLOUD's {kind} id set (digits, letters and {VENDOR_ID_CHARS}): {found:?}"
    )]
    OutsideIdCharset {
        /// Which field, e.g. `room_id` or `user_ids[3]`.
        field: String,
        /// Room or user id.
        kind: IdKind,
        /// The first character outside the set.
        found: char,
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
    check_id(
        "room_id",
        &job.room_id,
        MAX_ROOM_ID_BYTES,
        InvalidJob::RoomIdLength,
        Some((IdKind::Room, limits.id_charset)),
    )?;
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
        check_id(
            &format!("user_ids[{index}]"),
            user,
            MAX_USER_ID_BYTES,
            |len| InvalidJob::UserIdLength { index, len },
            Some((IdKind::User, limits.id_charset)),
        )?;
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
        // A job id never reaches the API, so only its length and control
        // characters matter.
        check_id("job_id", job_id, MAX_JOB_ID_BYTES, InvalidJob::JobIdLength, None)?;
    }
    dedupe(&mut job.user_ids);
    Ok(job)
}

/// Checks one id: its length, then control characters, then (for ids sent
/// to the API) the configured charset.
fn check_id(
    field: &str,
    value: &str,
    max: usize,
    length_error: impl FnOnce(usize) -> InvalidJob,
    charset: Option<(IdKind, IdCharset)>,
) -> Result<(), InvalidJob> {
    if value.is_empty() || value.len() > max {
        return Err(length_error(value.len()));
    }
    if value.chars().any(char::is_control) {
        return Err(InvalidJob::ControlCharacter {
            field: field.to_owned(),
        });
    }
    if let Some((kind, set)) = charset {
        if let Some(found) = set.first_refused(value) {
            return Err(InvalidJob::OutsideIdCharset {
                field: field.to_owned(),
                kind,
                found,
            });
        }
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
            not_after: None,
        }
    }

    /// Whether the job's deadline has passed at `now`: true once `now` is
    /// after `not_after` (the deadline itself is still in time); never for a
    /// job without one.
    pub fn expired_at(&self, now: DateTime<Utc>) -> bool {
        self.not_after.is_some_and(|deadline| now > deadline)
    }

    /// The same job with a deadline ([`KickRequest::not_after`]).
    pub fn with_not_after(mut self, deadline: DateTime<Utc>) -> Self {
        self.not_after = Some(deadline);
        self
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

    /// A job for `users` of this job's room, reason, app, job id and
    /// deadline: the body of a retry or a dead letter that carries exactly
    /// those users.
    pub fn with_users(&self, users: Vec<String>) -> KickRequest {
        KickRequest {
            room_id: self.room_id.clone(),
            user_ids: users,
            reason: self.reason.clone(),
            app_id: self.app_id,
            job_id: self.job_id.clone(),
            not_after: self.not_after,
        }
    }

    /// The JSON body, as producers publish it.
    pub fn to_body(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("KickRequest has only strings, integers and a time, which always serialize")
    }
}

impl fmt::Display for KickRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "room {:?}, {} user(s)", self.room_id, self.user_ids.len())
    }
}

/// A fresh job id: a UUID version 7 in its usual dashed form. The producer
/// gives one to every job that has none, so a redelivery keeps its id and the
/// ledger's skip matches it; intake gives one to a message from another
/// producer that carries neither `job_id` nor an AMQP `message_id`. Version 7
/// starts with the time, so ids of one sweep sort together in the ledger's
/// index, and the dashes keep it from looking like a 32-hex-character
/// signature in a log.
pub fn generate_job_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests;
