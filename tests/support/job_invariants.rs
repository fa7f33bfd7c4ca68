//! What must hold for every body `kickq_producer::job::parse` accepts or refuses; shared by the fuzz target
//! (`fuzz/fuzz_targets/parse_job.rs`) and `tests/it/fuzz_corpus.rs` through `#[path]`, so a finding and its
//! regression test check exactly the same things.

use kickq_producer::job::{
    parse, IdCharset, InvalidJob, KickRequest, Limits, MAX_JOB_ID_BYTES, MAX_MESSAGE_BYTES, MAX_REASON_BYTES,
    MAX_ROOM_ID_BYTES, MAX_USER_ID_BYTES,
};
use std::collections::HashSet;

/// The fields of the body that the job must reproduce, read without validation.
#[derive(serde::Deserialize)]
struct RawJob {
    room_id: String,
    user_ids: Vec<String>,
    #[serde(default)]
    reason: Option<String>,
}

/// Parses `body` with the default limits, checks every invariant, and returns
/// the result. Panics, naming the broken invariant, if one does not hold.
pub(super) fn parse_and_check(body: &[u8]) -> Result<KickRequest, InvalidJob> {
    let limits = Limits::default();
    let result = parse(body, &limits);
    match &result {
        Ok(job) => check_accepted(body, job, &limits),
        Err(err) => check_refused(body, err),
    }
    result
}

/// ZEGOCLOUD's id set, written out again rather than taken from
/// `kickq_producer::job`, so that a change to the rule there shows up here.
const VENDOR_PUNCTUATION: &str = "~!@#$%^&*()_+=-`;',.<>/\\";

fn check_id(field: &str, value: &str, max: usize) {
    assert!(
        !value.is_empty() && value.len() <= max,
        "{field} is {} bytes, outside 1..={max}",
        value.len()
    );
    assert!(
        !value.chars().any(char::is_control),
        "{field} holds a control character: {value:?}"
    );
}

/// An id the API is sent (room and user ids, not job ids).
fn check_api_id(field: &str, value: &str, max: usize, charset: IdCharset) {
    check_id(field, value, max);
    if charset == IdCharset::Vendor {
        assert!(
            value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || VENDOR_PUNCTUATION.contains(c)),
            "{field} holds a character outside the vendor's id set: {value:?}"
        );
    }
}

/// Checks a job that `parse` accepted from `body`.
pub(super) fn check_accepted(body: &[u8], job: &KickRequest, limits: &Limits) {
    assert!(
        body.len() <= MAX_MESSAGE_BYTES,
        "accepted a body of {} bytes",
        body.len()
    );
    check_api_id("room_id", &job.room_id, MAX_ROOM_ID_BYTES, limits.id_charset);
    let n = job.user_ids.len();
    assert!(
        (1..=limits.max_users_per_message).contains(&n),
        "{n} user ids, outside 1..={}",
        limits.max_users_per_message
    );
    let mut seen = HashSet::new();
    for (i, user) in job.user_ids.iter().enumerate() {
        check_api_id(&format!("user_ids[{i}]"), user, MAX_USER_ID_BYTES, limits.id_charset);
        assert!(seen.insert(user.as_str()), "user_ids[{i}] {user:?} is a duplicate");
    }
    if let Some(reason) = &job.reason {
        assert!(!reason.is_empty(), "an empty reason must become None");
        assert!(reason.len() <= MAX_REASON_BYTES, "reason is {} bytes", reason.len());
    }
    if let Some(job_id) = &job.job_id {
        check_id("job_id", job_id, MAX_JOB_ID_BYTES);
    }

    // The job says what the body said: same room, the body's users with later
    // duplicates folded (first position kept), the same reason ("" is none).
    // (A typed view, not serde_json::Value: Value refuses numbers like 1e400
    // in unknown fields, which parse rightly ignores.)
    let raw: RawJob = serde_json::from_slice(body).expect("an accepted body reads as a job");
    assert_eq!(raw.room_id, job.room_id, "room_id changed");
    let mut first = HashSet::new();
    let expected: Vec<&String> = raw.user_ids.iter().filter(|u| first.insert(*u)).collect();
    assert_eq!(
        job.user_ids.iter().collect::<Vec<_>>(),
        expected,
        "user_ids are not the body's, deduplicated in order"
    );
    let raw_reason = raw.reason.filter(|r| !r.is_empty());
    assert_eq!(job.reason, raw_reason, "reason changed");

    // What the worker republishes (retries, dead letters) parses back to the same job.
    let again = parse(&job.to_body(), limits).unwrap_or_else(|e| panic!("to_body() does not parse back: {e}"));
    assert_eq!(&again, job, "to_body() does not round-trip");
}

fn check_refused(body: &[u8], err: &InvalidJob) {
    assert_eq!(
        matches!(err, InvalidJob::TooLarge(_)),
        body.len() > MAX_MESSAGE_BYTES,
        "TooLarge must be exactly the bodies over {MAX_MESSAGE_BYTES} bytes"
    );
    // The text goes into a dead letter's kickq-detail header.
    assert!(!err.to_string().is_empty(), "an error without a reason");
}
