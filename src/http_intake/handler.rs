//! `POST /v1/kicks`: authenticate, rate-cap, read the capped body, validate every job, answer a replayed
//! `Idempotency-Key`, publish with confirms, answer 202 with the job ids; every refusal as a JSON `{"error"}`.

use super::batch::{parse_batch, BatchError};
use super::idempotency::{decide, parse_key, request_hash, Decision, Store, KEY_LOCKS};
use super::limit::{Limiter, Verdict};
use super::publisher::IntakePublisher;
use crate::access::tokens::{bearer, Known, Tokens};
use crate::amqp::topology::Lane;
use crate::job::Limits;
use crate::ledger::IdempotencyRow;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

/// `Retry-After` of a 503: a broker restart or a failover takes seconds.
pub(crate) const RETRY_AFTER_UNAVAILABLE: Duration = Duration::from_secs(5);
/// The OpenAPI 3.1 document of the endpoint (`docs/openapi.json`), served at `/v1/openapi.json`.
pub(crate) const OPENAPI: &str = include_str!("../../docs/openapi.json");

/// Everything a request needs, shared by all of them.
pub(crate) struct Intake {
    pub(crate) tokens: Tokens,
    pub(crate) limiter: Limiter,
    /// Failed authentications per client address.
    pub(crate) throttle: crate::access::throttle::Throttle,
    pub(crate) store: Store,
    pub(crate) publisher: IntakePublisher,
    pub(crate) limits: Limits,
    pub(crate) max_bytes: usize,
    pub(crate) key_locks: Vec<tokio::sync::Mutex<()>>,
    /// With shards: which shard serves each app. A job whose app no shard
    /// serves is refused (400) rather than returned by the broker, which a
    /// client would see as a 503 and retry for ever.
    pub(crate) routing: Option<crate::config::shards::Routing>,
}

/// The first job (by index) whose app no shard serves, with that app.
pub(crate) fn unrouted(
    routing: Option<&crate::config::shards::Routing>,
    jobs: &[crate::job::KickRequest],
) -> Option<(usize, Option<u32>)> {
    let routing = routing?;
    jobs.iter()
        .enumerate()
        .find(|(_, j)| routing.shard_for(j.app_id).is_none())
        .map(|(i, j)| (i, j.app_id))
}

/// A refusal: the status, the `{"error": ...}` body, and maybe a `Retry-After`.
fn refuse(status: StatusCode, error: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": error.to_string() }))).into_response()
}

fn with_retry_after(mut r: Response, wait: Duration) -> Response {
    // Whole seconds, rounded up, at least one.
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    r
}

/// The lane of `?lane=` (live when absent).
fn lane_of(query: &HashMap<String, String>) -> Result<Lane, String> {
    match query.get("lane") {
        None => Ok(Lane::Live),
        Some(raw) => raw.parse::<Lane>().map_err(|e| format!("lane: {e}")),
    }
}

pub(crate) async fn post_kicks(
    State(s): State<Arc<Intake>>,
    Query(query): Query<HashMap<String, String>>,
    client: crate::serve::Client,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // An address that failed too often lately is refused before any token
    // is compared.
    let now = std::time::Instant::now();
    if let crate::access::throttle::Verdict::Refuse(wait) = s.throttle.check(client.ip(), now) {
        tracing::warn!(%client, "http intake: 429 (too many failed authentications from this address)");
        drain_unauthenticated(&headers, body).await;
        return with_retry_after(
            refuse(
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed authentications from this address: try again later",
            ),
            wait,
        );
    }
    // Authentication first: nothing of an unauthenticated request is parsed or logged.
    let presented = bearer(headers.get(header::AUTHORIZATION).map(HeaderValue::as_bytes));
    let Some(token) = presented.and_then(|t| s.tokens.check(t)) else {
        // While no token is usable (the file broken), a refusal says nothing
        // about the client: it does not count against it.
        if presented.is_some() && s.tokens.usable() {
            s.throttle.failed(client.ip(), now);
        }
        tracing::info!(%client, "http intake: 401 (missing or unknown bearer token)");
        drain_unauthenticated(&headers, body).await;
        let mut r = refuse(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    };
    // Every line of this request names its token (never the secret).
    let span = tracing::info_span!("http_intake", token = %token.name, %client);
    tracing::Instrument::instrument(authenticated(s, query, headers, body, token), span).await
}

/// The rest of a request, once `token` has authenticated it.
async fn authenticated(
    s: Arc<Intake>,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: Body,
    token: Known,
) -> Response {
    if let Verdict::Deny(wait) = s.limiter.check(&token.id) {
        return with_retry_after(
            refuse(StatusCode::TOO_MANY_REQUESTS, "request rate of this token exceeded"),
            wait,
        );
    }
    let lane = match lane_of(&query) {
        Ok(l) => l,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e),
    };
    let key = match headers.get("idempotency-key").map(|v| parse_key(v.as_bytes())) {
        None => None,
        Some(Ok(k)) => Some(k),
        Some(Err(e)) => return refuse(StatusCode::BAD_REQUEST, e),
    };
    let too_large = || {
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {} bytes", s.max_bytes),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > s.max_bytes as u64) {
        return too_large();
    }
    let bytes = match axum::body::to_bytes(body, s.max_bytes).await {
        Ok(b) => b,
        Err(e) if is_length_limit(&e) => return too_large(),
        Err(e) if body_timed_out(&e) => {
            return refuse(
                StatusCode::REQUEST_TIMEOUT,
                "the body did not arrive in time: send it at once after the headers",
            )
        }
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("cannot read the body: {e}")),
    };
    let jobs = match parse_batch(&bytes, &s.limits) {
        Ok(j) => j,
        Err(e) => {
            let index = match &e {
                BatchError::Invalid { index, .. } => Some(*index),
                _ => None,
            };
            let mut body = json!({ "error": e.to_string() });
            if let Some(i) = index {
                body["index"] = json!(i);
            }
            return (StatusCode::BAD_REQUEST, Json(body)).into_response();
        }
    };
    if let Some((index, app)) = unrouted(s.routing.as_ref(), &jobs) {
        let error = match app {
            Some(a) => format!("job {index}: no shard of this deployment serves app_id {a}"),
            None => format!("job {index}: it names no app_id and this deployment has no default app"),
        };
        return (StatusCode::BAD_REQUEST, Json(json!({ "error": error, "index": index }))).into_response();
    }
    let Some(key) = key else {
        return publish(&s, lane, jobs).await.map_or_else(|r| r, accepted);
    };
    // A key belongs to the token that used it: another token's request with
    // the same key is another request, never its answer, never its conflict.
    let key = scoped_key(&token.name, &key);
    // Same-key requests go one at a time, so a retry racing its original
    // finds the original's answer.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    let _held = s.key_locks[(h.finish() as usize) % KEY_LOCKS].lock().await;
    let hash = request_hash(lane.as_str(), &bytes);
    let now = chrono::Utc::now();
    let stored = match s.store.get(&key, now).await {
        Ok(r) => r,
        Err(e) => return unavailable(format!("idempotency keys: {e}")),
    };
    match decide(stored.as_ref(), &hash, now) {
        Decision::Replay(ids) => {
            let mut r = accepted(ids);
            r.headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            r
        }
        Decision::Conflict => refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            "this Idempotency-Key was used within 24 hours for another request (another body or lane)",
        ),
        Decision::Fresh => {
            let ids = match publish(&s, lane, jobs).await {
                Ok(ids) => ids,
                Err(r) => return r,
            };
            let row = IdempotencyRow {
                body_sha256: hash,
                job_ids: ids.clone(),
                created_at: now,
            };
            if let Err(e) = s.store.put(&key, row, now).await {
                // The jobs are stored: say so, but a retry would publish them again.
                tracing::warn!("http intake: published, but the Idempotency-Key was not recorded: {e}");
            }
            accepted(ids)
        }
    }
}

/// Whether reading the body failed because the listener's body timeout
/// (`crate::serve::BODY_TIMEOUT`) passed.
fn body_timed_out(e: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<crate::serve::BodyTimeout>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// The stored form of an `Idempotency-Key`: the key within the scope of the
/// token that presented it, by the token's name (a bare token's name is the
/// first 8 bytes of its SHA-256, in hex: the token itself is never stored).
/// A token rotated under the same name keeps its keys.
fn scoped_key(token_name: &str, key: &str) -> String {
    format!("{token_name}:{key}")
}

/// Reads and discards a small unauthenticated body before its 401 is sent.
///
/// A server that answers before reading the body closes the connection
/// while the client is still writing, and the client then sees a broken pipe
/// or a reset instead of the 401 (which of the two depends on who is faster).
/// Draining a body of at most [`UNAUTHENTICATED_DRAIN_BYTES`], within
/// [`UNAUTHENTICATED_DRAIN_TIME`], lets a well-behaved client read its 401,
/// as hyper and most proxies do. A larger body (declared or sent) is not read
/// further: the connection is closed, and such a client may see the closed
/// connection rather than the 401. Either way nothing of it is published.
async fn drain_unauthenticated(headers: &HeaderMap, body: Body) {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > UNAUTHENTICATED_DRAIN_BYTES as u64) {
        return;
    }
    let read = axum::body::to_bytes(body, UNAUTHENTICATED_DRAIN_BYTES);
    let _ = tokio::time::timeout(UNAUTHENTICATED_DRAIN_TIME, read).await;
}

/// Most bytes of an unauthenticated body read (and discarded) so that its
/// client sees the 401: a job or a small batch, never the 1 MiB cap, so a
/// client without a token cannot make the intake read much.
pub(crate) const UNAUTHENTICATED_DRAIN_BYTES: usize = 64 * 1024;
/// Longest wait for that body: a client on a slow link sends 64 KiB well
/// within it, and a client that stalls holds the request no longer.
pub(crate) const UNAUTHENTICATED_DRAIN_TIME: Duration = Duration::from_secs(2);

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.to_string().contains("length limit exceeded") {
            return true;
        }
        source = err.source();
    }
    false
}

fn accepted(ids: Vec<String>) -> Response {
    (StatusCode::ACCEPTED, Json(json!({ "job_ids": ids }))).into_response()
}

/// A 503. The detail (a broker host, a database error) goes to the log, not to the client.
fn unavailable(why: String) -> Response {
    tracing::warn!("http intake: 503: {why}");
    with_retry_after(
        refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "not accepted: the broker (or the ledger) is unavailable; send the same request again later",
        ),
        RETRY_AFTER_UNAVAILABLE,
    )
}

async fn publish(s: &Intake, lane: Lane, jobs: Vec<crate::job::KickRequest>) -> Result<Vec<String>, Response> {
    let n = jobs.len();
    match s.publisher.publish(lane, jobs).await {
        Ok(ids) => {
            tracing::info!(jobs = n, lane = %lane, "http intake: {n} job(s) published and confirmed");
            Ok(ids)
        }
        Err(e) => Err(unavailable(e.to_string())),
    }
}

/// `GET /v1/openapi.json`: the document in the repository, as built in.
pub(crate) async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        OPENAPI,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_no_shard_serves_is_found_by_index() {
        use crate::config::shards::{Routing, ShardName};
        let eu = ShardName::parse("eu").unwrap();
        let with_default = Routing::new([(1, eu.clone())], Some(1));
        let no_default = Routing::new([(1, eu)], None);
        let job = |app: Option<u32>| crate::job::KickRequest {
            app_id: app,
            ..crate::job::KickRequest::new("r", ["u"])
        };
        let jobs = [job(Some(1)), job(None), job(Some(7))];
        assert_eq!(unrouted(None, &jobs), None, "no shards: the worker judges");
        assert_eq!(unrouted(Some(&with_default), &jobs), Some((2, Some(7))));
        assert_eq!(unrouted(Some(&no_default), &jobs), Some((1, None)));
        assert_eq!(unrouted(Some(&with_default), &jobs[..2]), None);
    }

    #[test]
    fn lanes_by_table() {
        let q = |v: Option<&str>| {
            v.map(|v| HashMap::from([("lane".to_string(), v.to_string())]))
                .unwrap_or_default()
        };
        assert_eq!(lane_of(&q(None)), Ok(Lane::Live));
        assert_eq!(lane_of(&q(Some("live"))), Ok(Lane::Live));
        assert_eq!(lane_of(&q(Some("bulk"))), Ok(Lane::Bulk));
        assert_eq!(
            lane_of(&q(Some("fast"))),
            Err("lane: \"fast\" is not a lane: use live or bulk".into())
        );
    }

    #[test]
    fn retry_after_rounds_up_to_a_second() {
        let secs = |d| with_retry_after(Response::new(Body::empty()), d).headers()[header::RETRY_AFTER].clone();
        assert_eq!(secs(Duration::from_millis(1)), "1");
        assert_eq!(secs(Duration::ZERO), "1");
        assert_eq!(secs(Duration::from_millis(1500)), "2");
        assert_eq!(secs(Duration::from_secs(5)), "5");
    }
}
