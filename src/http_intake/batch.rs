//! The body of `POST /v1/kicks`: one job message or a JSON array of them, each checked by `job::parse`, the
//! worker's own rules, so the 400 says what `kickq enqueue` would.

use crate::job::{self, InvalidJob, KickRequest, Limits};

/// Why a body is refused (400), nothing of it published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BatchError {
    /// Neither an object nor an array, or not JSON at all.
    #[error("the body must be a job message or a JSON array of them: {0}")]
    NotJobs(String),
    /// `[]`.
    #[error("the body is an empty array: give at least one job")]
    Empty,
    /// One element breaks the job message rules (the producer API's wording).
    #[error("job {index} is invalid: {error}")]
    Invalid {
        /// Its position in the array (0 for a single object).
        index: usize,
        /// What is wrong with it.
        error: InvalidJob,
    },
}

/// The validated jobs of `body`, in order; the first bad element refuses all.
pub(crate) fn parse_batch(body: &[u8], limits: &Limits) -> Result<Vec<KickRequest>, BatchError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        Some(b'{') => job::parse(body, limits)
            .map(|j| vec![j])
            .map_err(|error| BatchError::Invalid { index: 0, error }),
        Some(b'[') => {
            // Each element as the bytes that were sent, not re-serialized: a
            // duplicate key, the byte cap and error positions are judged on
            // what the client wrote, exactly as over AMQP.
            let elements: Vec<&serde_json::value::RawValue> =
                serde_json::from_slice(body).map_err(|e| BatchError::NotJobs(e.to_string()))?;
            if elements.is_empty() {
                return Err(BatchError::Empty);
            }
            elements
                .iter()
                .enumerate()
                .map(|(index, element)| {
                    job::parse(element.get().as_bytes(), limits).map_err(|error| BatchError::Invalid { index, error })
                })
                .collect()
        }
        _ => Err(BatchError::NotJobs("expected { or [".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_by_table() {
        let limits = Limits::default();
        let ok = |n: usize| Ok::<usize, String>(n);
        let cases: &[(&str, Result<usize, String>)] = &[
            (r#"{"room_id":"r","user_ids":["a"]}"#, ok(1)),
            (r#"  [{"room_id":"r","user_ids":["a"]},{"room_id":"r2","user_ids":["b","c"],"reason":"spam"}]"#, ok(2)),
            ("[]", Err("the body is an empty array: give at least one job".into())),
            (r#"[{"room_id":"r","user_ids":["a"]},{"room_id":"r","user_ids":[]}]"#, Err("job 1 is invalid: user_ids is empty".into())),
            (r#"[{"room_id":"r","user_ids":["a"]}, 7]"#, Err("job 1 is invalid: not a job message: a job message is a JSON object".into())),
            (r#"{"room_id":"","user_ids":["a"]}"#, Err("job 0 is invalid: room_id must be 1 to 128 bytes, got 0".into())),
            (r#"[{"room_id":"r","user_ids":["a"],"not_after":"soon"}]"#, Err("job 0 is invalid: not a job message: not_after must be an RFC 3339 time such as 2026-12-01T12:00:00Z, got \"soon\" at line 1 column 51".into())),
            ("7", Err("the body must be a job message or a JSON array of them: expected { or [".into())),
            // A duplicate key is refused in an array as it is alone (and over AMQP).
            (r#"[{"room_id":"a","room_id":"b","user_ids":["u"]}]"#, Err("job 0 is invalid: not a job message: duplicate field `room_id` at line 1 column 24".into())),
            ("", Err("the body must be a job message or a JSON array of them: expected { or [".into())),
        ];
        for (body, want) in cases {
            let got = parse_batch(body.as_bytes(), &limits)
                .map(|v| v.len())
                .map_err(|e| e.to_string());
            assert_eq!(&got, want, "{body}");
        }
        assert!(matches!(parse_batch(b"[1,", &limits), Err(BatchError::NotJobs(_))));
    }
}
