//! kickq's message headers: their names, how they are written on retries and dead letters, and how they are read
//! back (pure functions over `FieldTable`).
//!
//! None start with `x-`: that prefix belongs to the broker.

use chrono::{DateTime, SecondsFormat, Utc};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;
use std::collections::BTreeMap;

/// Dead letters: why (`validation`, `permanent`, `retries_exhausted`, `unknown_app`, `expired`).
pub const ERROR: &str = "kickq-error";
/// Dead letters: the API's code, when it answered one.
pub const CODE: &str = "kickq-code";
/// Dead letters: human-readable detail.
pub const DETAIL: &str = "kickq-detail";
/// API attempts made so far for the users in the body.
pub const ATTEMPTS: &str = "kickq-attempts";
/// The job id.
pub const JOB_ID: &str = "kickq-job-id";
/// Dead letters: when (RFC 3339).
pub const FAILED_AT: &str = "kickq-failed-at";
/// Retries: when the first attempt was made (RFC 3339); the retry budget's clock.
pub const FIRST_ATTEMPT_AT: &str = "kickq-first-attempt-at";
/// Retries: the last API code (absent after a transport failure).
pub const LAST_CODE: &str = "kickq-last-code";
/// Retries: set when a halt deferred these users.
pub const HALTED: &str = "kickq-halted";
/// Retries: rate answers (7, 206) so far; they do not count as attempts.
pub const RATE_LIMITED: &str = "kickq-rate-limited";
/// Retries: milliseconds these users spent held by a halt; the retry age does
/// not count them.
pub const HALTED_MS: &str = "kickq-halted-ms";
/// Replays: the dead-letter history of the message, one entry per replay.
pub const DLQ_HISTORY: &str = "kickq-dlq-history";
/// Times a job was forwarded from a shard that does not serve its app.
pub const FORWARDS: &str = "kickq-forwards";

/// Why a letter is dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadError {
    /// The message could not be used (JSON, types, limits).
    Validation,
    /// The API said no for good (e.g. code 2).
    Permanent,
    /// Retries ran out; `kickq-code` holds the last code.
    RetriesExhausted,
    /// The message names an AppId this worker has no secret for.
    UnknownApp,
    /// The broker dead-lettered it after too many deliveries (a poison message).
    DeliveryLimit,
    /// Its `not_after` had passed when the worker took it: no call was made.
    Expired,
}

impl DeadError {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadError::Validation => "validation",
            DeadError::Permanent => "permanent",
            DeadError::RetriesExhausted => "retries_exhausted",
            DeadError::UnknownApp => "unknown_app",
            DeadError::DeliveryLimit => "delivery_limit",
            DeadError::Expired => "expired",
        }
    }
}

/// What a dead letter says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The reason class, the `kickq-error` header.
    pub error: DeadError,
    /// The API's code, if any.
    pub code: Option<i64>,
    /// Human-readable detail.
    pub detail: String,
    /// Attempts made.
    pub attempts: u32,
    /// The job id, if known.
    pub job_id: Option<String>,
    /// When.
    pub failed_at: DateTime<Utc>,
}

/// The headers of a dead letter, on top of `keep` (the original's headers
/// minus any stale kickq ones).
pub fn dead_letter(keep: Option<&FieldTable>, dl: &DeadLetter) -> FieldTable {
    let mut t = strip_kickq(keep);
    put_str(&mut t, ERROR, dl.error.as_str());
    if let Some(code) = dl.code {
        t.insert(CODE.into(), AMQPValue::LongLongInt(code));
    }
    put_str(&mut t, DETAIL, &truncate(&dl.detail, 1024));
    t.insert(ATTEMPTS.into(), AMQPValue::LongLongInt(dl.attempts.into()));
    if let Some(job_id) = &dl.job_id {
        put_str(&mut t, JOB_ID, job_id);
    }
    put_str(&mut t, FAILED_AT, &rfc3339(dl.failed_at));
    t
}

/// What a retry message says about its users' budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryState {
    /// Failed attempts (`kickq-attempts`).
    pub attempts: u32,
    /// Rate answers (`kickq-rate-limited`).
    pub rate_limited: u32,
    /// The first attempt (`kickq-first-attempt-at`).
    pub first_attempt_at: Option<DateTime<Utc>>,
    /// Time held by halts (`kickq-halted-ms`).
    pub halted_for: std::time::Duration,
    /// The last API code (`kickq-last-code`).
    pub last_code: Option<i64>,
    /// Deferred by a halt now or before (`kickq-halted`).
    pub halted: bool,
}

/// The headers of a retry message, on top of `carried` (the dead-letter
/// history the job brought along).
pub fn retry(state: &RetryState, job_id: &str, carried: &FieldTable) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in carried.inner() {
        t.insert(k.clone(), v.clone());
    }
    t.insert(ATTEMPTS.into(), AMQPValue::LongLongInt(state.attempts.into()));
    if state.rate_limited > 0 {
        t.insert(RATE_LIMITED.into(), AMQPValue::LongLongInt(state.rate_limited.into()));
    }
    if let Some(at) = state.first_attempt_at {
        put_str(&mut t, FIRST_ATTEMPT_AT, &rfc3339(at));
    }
    if !state.halted_for.is_zero() {
        let ms = i64::try_from(state.halted_for.as_millis()).unwrap_or(i64::MAX);
        t.insert(HALTED_MS.into(), AMQPValue::LongLongInt(ms));
    }
    if let Some(code) = state.last_code {
        t.insert(LAST_CODE.into(), AMQPValue::LongLongInt(code));
    }
    if state.halted {
        t.insert(HALTED.into(), AMQPValue::Boolean(true));
    }
    put_str(&mut t, JOB_ID, job_id);
    t
}

/// Reads a retry message's budget headers (absent ones read as zero).
pub fn read_retry(headers: Option<&FieldTable>) -> RetryState {
    let count = |name| get_i64(headers, name).and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
    RetryState {
        attempts: count(ATTEMPTS),
        rate_limited: count(RATE_LIMITED),
        first_attempt_at: get_time(headers, FIRST_ATTEMPT_AT),
        halted_for: get_i64(headers, HALTED_MS)
            .and_then(|n| u64::try_from(n).ok())
            .map(std::time::Duration::from_millis)
            .unwrap_or_default(),
        last_code: get_i64(headers, LAST_CODE),
        halted: get_bool(headers, HALTED),
    }
}

fn strip_kickq(keep: Option<&FieldTable>) -> FieldTable {
    let mut t = FieldTable::default();
    if let Some(keep) = keep {
        for (k, v) in keep.inner() {
            let name = k.as_str();
            let ours = name.starts_with("kickq-") && name != DLQ_HISTORY;
            if !ours {
                t.insert(k.clone(), v.clone());
            }
        }
    }
    t
}

fn put_str(t: &mut FieldTable, name: &str, value: &str) {
    t.insert(
        ShortString::from(name),
        AMQPValue::LongString(LongString::from(value.as_bytes().to_vec())),
    );
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A header value as text, for showing a letter: strings as they are, times
/// in RFC 3339, arrays and tables spelled out.
pub fn display(value: &AMQPValue) -> String {
    match value {
        AMQPValue::LongString(v) => String::from_utf8_lossy(v.as_bytes()).into_owned(),
        AMQPValue::ShortString(v) => v.as_str().to_owned(),
        AMQPValue::Timestamp(secs) => i64::try_from(*secs)
            .ok()
            .and_then(|s| DateTime::from_timestamp(s, 0))
            .map_or_else(|| secs.to_string(), rfc3339),
        AMQPValue::FieldArray(a) => {
            let items: Vec<String> = a.as_slice().iter().map(display).collect();
            format!("[{}]", items.join(", "))
        }
        AMQPValue::FieldTable(t) => {
            let items: Vec<String> = t
                .inner()
                .iter()
                .map(|(k, v)| format!("{}: {}", k.as_str(), display(v)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        AMQPValue::ByteArray(b) => String::from_utf8_lossy(b.as_slice()).into_owned(),
        other => match serde_json::to_value(other) {
            Ok(serde_json::Value::Object(m)) => m.values().next().map_or_else(String::new, |v| v.to_string()),
            Ok(v) => v.to_string(),
            Err(_) => format!("{other:?}"),
        },
    }
}

/// Every header of a message as `(name, text)`, in the table's order (by name).
pub fn lines(headers: Option<&FieldTable>) -> Vec<(String, String)> {
    headers.map_or_else(Vec::new, |h| {
        h.inner()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), display(v)))
            .collect()
    })
}

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The headers a job carries into its retries and dead letters: its
/// dead-letter history, so a replayed message that fails again keeps it.
pub fn carried(headers: Option<&FieldTable>) -> FieldTable {
    let mut t = FieldTable::default();
    if let Some(v) = headers.and_then(|h| h.inner().get(DLQ_HISTORY)) {
        t.insert(DLQ_HISTORY.into(), v.clone());
    }
    t
}

/// Reads an integer header written by any client (AMQP has eight integer types,
/// and some clients send numbers as strings).
pub fn get_i64(headers: Option<&FieldTable>, name: &str) -> Option<i64> {
    let v = headers?.inner().get(name)?;
    match v {
        AMQPValue::ShortShortInt(n) => Some((*n).into()),
        AMQPValue::ShortShortUInt(n) => Some((*n).into()),
        AMQPValue::ShortInt(n) => Some((*n).into()),
        AMQPValue::ShortUInt(n) => Some((*n).into()),
        AMQPValue::LongInt(n) => Some((*n).into()),
        AMQPValue::LongUInt(n) => Some((*n).into()),
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::Timestamp(n) => i64::try_from(*n).ok(),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.trim().parse().ok(),
        AMQPValue::ShortString(s) => s.as_str().trim().parse().ok(),
        _ => None,
    }
}

/// Reads a string header.
pub fn get_str(headers: Option<&FieldTable>, name: &str) -> Option<String> {
    match headers?.inner().get(name)? {
        AMQPValue::LongString(s) => String::from_utf8(s.as_bytes().to_vec()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// Reads a boolean header.
pub fn get_bool(headers: Option<&FieldTable>, name: &str) -> bool {
    matches!(
        headers.and_then(|h| h.inner().get(name)),
        Some(AMQPValue::Boolean(true))
    )
}

/// Reads an RFC 3339 time header.
pub fn get_time(headers: Option<&FieldTable>, name: &str) -> Option<DateTime<Utc>> {
    let s = get_str(headers, name)?;
    DateTime::parse_from_rfc3339(&s).ok().map(|t| t.with_timezone(&Utc))
}

/// How often a job was forwarded between shards (0 when never).
pub fn forwards(headers: Option<&FieldTable>) -> u32 {
    get_i64(headers, FORWARDS)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0)
}

/// The properties of a job forwarded to another shard: the original's
/// (as [`reappend_properties`]), with [`FORWARDS`] one higher.
pub fn forward_properties(orig: &BasicProperties) -> BasicProperties {
    let mut p = reappend_properties(orig);
    let mut h = p.headers().clone().unwrap_or_default();
    h.insert(
        FORWARDS.into(),
        AMQPValue::LongLongInt((forwards(orig.headers().as_ref()) + 1).into()),
    );
    p = p.with_headers(h);
    p
}

/// The quorum queue's delivery count (`x-delivery-count`): how often the
/// broker delivered this message before.
pub fn delivery_count(headers: Option<&FieldTable>) -> u32 {
    get_i64(headers, "x-delivery-count")
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0)
}

/// Reads a dead letter's own description. A letter the broker dead-lettered
/// itself (delivery limit) has no kickq headers; its `x-first-death-reason`
/// says why.
pub fn read_dead_letter(headers: Option<&FieldTable>) -> DeadLetter {
    let error = match get_str(headers, ERROR).as_deref() {
        Some("validation") => DeadError::Validation,
        Some("permanent") => DeadError::Permanent,
        Some("retries_exhausted") => DeadError::RetriesExhausted,
        Some("unknown_app") => DeadError::UnknownApp,
        Some("delivery_limit") => DeadError::DeliveryLimit,
        Some("expired") => DeadError::Expired,
        _ => DeadError::DeliveryLimit,
    };
    let detail = get_str(headers, DETAIL).unwrap_or_else(|| match get_str(headers, "x-first-death-reason") {
        Some(reason) => format!("dead-lettered by the broker: {reason}"),
        None => "dead-lettered by the broker".into(),
    });
    DeadLetter {
        error,
        code: get_i64(headers, CODE),
        detail,
        attempts: get_i64(headers, ATTEMPTS)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0),
        job_id: get_str(headers, JOB_ID),
        failed_at: get_time(headers, FAILED_AT).unwrap_or_else(Utc::now),
    }
}

/// The properties of a message republished unchanged (a letter put back at
/// the tail of the dead queue, a job forwarded to its shard): the original's,
/// minus `x-delivery-count` (the broker's count of this copy's deliveries).
pub fn reappend_properties(orig: &BasicProperties) -> BasicProperties {
    copy_properties(orig, without_delivery_count(orig))
}

/// The properties of a letter put back at the tail of the dead queue by a
/// `kickq dlq` pass: [`reappend_properties`] without the priority.
///
/// From RabbitMQ 4.0 a quorum queue serves a message of priority above 4
/// ahead of the others (`rabbit_fifo_q`: high first, and every third
/// dequeue the older of the two heads). A pass reads the queue once over its
/// starting depth and re-appends each letter it keeps; a copy that kept a
/// high priority would come round again before letters not read yet (listed
/// twice, others never examined). A copy of normal priority is newer than
/// every letter not read yet, so it is served after all of them, whatever
/// priority those carry (a producer's priority stays on a letter that the
/// broker dead-lettered).
pub fn letter_reappend_properties(orig: &BasicProperties) -> BasicProperties {
    copy(orig, without_delivery_count(orig), false)
}

/// The original's headers minus `x-delivery-count` (the broker's count of
/// this copy's deliveries).
fn without_delivery_count(orig: &BasicProperties) -> FieldTable {
    let kept: BTreeMap<ShortString, AMQPValue> = orig
        .headers()
        .as_ref()
        .map(|h| h.inner().clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k.as_str() != "x-delivery-count")
        .collect();
    FieldTable::from(kept)
}

/// The original's properties with `headers`, persistent. `expiration` is
/// dropped (a replay must not expire on the way), and so are `user-id` (the
/// broker rejects a user id other than the publisher's) and `cluster-id`.
pub fn copy_properties(orig: &BasicProperties, headers: FieldTable) -> BasicProperties {
    copy(orig, headers, true)
}

fn copy(orig: &BasicProperties, headers: FieldTable, keep_priority: bool) -> BasicProperties {
    let mut p = BasicProperties::default().with_delivery_mode(2).with_headers(headers);
    if let Some(v) = orig.content_type() {
        p = p.with_content_type(v.clone());
    }
    if let Some(v) = orig.content_encoding() {
        p = p.with_content_encoding(v.clone());
    }
    if let Some(v) = orig.priority().filter(|_| keep_priority) {
        p = p.with_priority(v);
    }
    if let Some(v) = orig.correlation_id() {
        p = p.with_correlation_id(v.clone());
    }
    if let Some(v) = orig.reply_to() {
        p = p.with_reply_to(v.clone());
    }
    if let Some(v) = orig.message_id() {
        p = p.with_message_id(v.clone());
    }
    if let Some(v) = orig.timestamp() {
        p = p.with_timestamp(*v);
    }
    if let Some(v) = orig.kind() {
        p = p.with_type(v.clone());
    }
    if let Some(v) = orig.app_id() {
        p = p.with_app_id(v.clone());
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_headers_round_trip_and_drop_stale_ones() {
        let mut original = FieldTable::default();
        original.insert("kickq-error".into(), AMQPValue::LongString("stale".into()));
        original.insert("trace-id".into(), AMQPValue::LongString("t1".into()));
        let at = DateTime::parse_from_rfc3339("2026-11-25T10:00:00.123Z")
            .unwrap()
            .with_timezone(&Utc);
        let dl = DeadLetter {
            error: DeadError::RetriesExhausted,
            code: Some(1),
            detail: "server busy".into(),
            attempts: 8,
            job_id: Some("j1".into()),
            failed_at: at,
        };
        let t = dead_letter(Some(&original), &dl);
        assert_eq!(
            get_str(Some(&t), "trace-id").as_deref(),
            Some("t1"),
            "foreign headers are kept"
        );
        assert_eq!(
            get_str(Some(&t), FAILED_AT).as_deref(),
            Some("2026-11-25T10:00:00.123Z")
        );
        assert!(t.inner().keys().all(|k| !k.as_str().starts_with("x-")));
        assert_eq!(read_dead_letter(Some(&t)), dl);
    }

    #[test]
    fn every_error_reads_back_from_its_header() {
        for error in [
            DeadError::Validation,
            DeadError::Permanent,
            DeadError::RetriesExhausted,
            DeadError::UnknownApp,
            DeadError::DeliveryLimit,
            DeadError::Expired,
        ] {
            let mut t = FieldTable::default();
            put_str(&mut t, ERROR, error.as_str());
            assert_eq!(read_dead_letter(Some(&t)).error, error, "{}", error.as_str());
        }
        assert_eq!(DeadError::Expired.as_str(), "expired");
    }

    #[test]
    fn integers_of_every_width_and_strings_read_as_numbers() {
        let mut t = FieldTable::default();
        t.insert("a".into(), AMQPValue::ShortShortUInt(3));
        t.insert("b".into(), AMQPValue::LongInt(-4));
        t.insert("c".into(), AMQPValue::LongString("17".into()));
        t.insert("d".into(), AMQPValue::Boolean(true));
        assert_eq!(get_i64(Some(&t), "a"), Some(3));
        assert_eq!(get_i64(Some(&t), "b"), Some(-4));
        assert_eq!(get_i64(Some(&t), "c"), Some(17));
        assert_eq!(get_i64(Some(&t), "d"), None);
        assert_eq!(get_i64(None, "a"), None);
        assert!(get_bool(Some(&t), "d"));
    }

    #[test]
    fn broker_dead_letters_read_as_delivery_limit() {
        let mut t = FieldTable::default();
        t.insert(
            "x-first-death-reason".into(),
            AMQPValue::LongString("delivery_limit".into()),
        );
        let dl = read_dead_letter(Some(&t));
        assert_eq!(dl.error, DeadError::DeliveryLimit);
        assert!(dl.detail.contains("delivery_limit"));
    }

    #[test]
    fn retry_headers_carry_the_budget_and_the_history() {
        let at = DateTime::parse_from_rfc3339("2026-11-25T10:00:00.123Z")
            .unwrap()
            .with_timezone(&Utc);
        let state = RetryState {
            attempts: 3,
            rate_limited: 12,
            first_attempt_at: Some(at),
            halted_for: std::time::Duration::from_millis(1_200_000),
            last_code: Some(1),
            halted: true,
        };
        let mut carried = FieldTable::default();
        carried.insert(DLQ_HISTORY.into(), AMQPValue::LongString("died once".into()));
        let t = retry(&state, "j", &carried);
        assert_eq!(read_retry(Some(&t)), state);
        assert_eq!(get_str(Some(&t), DLQ_HISTORY).as_deref(), Some("died once"));
        assert_eq!(get_str(Some(&t), JOB_ID).as_deref(), Some("j"));
        assert_eq!(read_retry(None), RetryState::default());
        let fresh = retry(&RetryState::default(), "j", &FieldTable::default());
        assert!(!fresh.inner().contains_key(RATE_LIMITED) && !fresh.inner().contains_key(HALTED_MS));
    }

    #[test]
    fn long_detail_is_cut_on_a_char_boundary() {
        let s = "é".repeat(1000);
        let t = truncate(&s, 1023);
        assert!(t.len() <= 1023 + "…".len());
    }
}
