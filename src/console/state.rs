//! What every console handler shares: the `Console` state, the `Access` extractor (the auth gate), the refresh
//! period, and the answers and form helpers the pages use.

pub(crate) use super::auth::Access;
use crate::access::throttle::Verdict;
use axum::extract::{FromRequestParts, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use std::sync::Arc;

/// Seconds between the overview's refreshes: often enough to watch a sweep,
/// rare enough that an open tab costs the broker nothing to speak of (one
/// passive declare per queue each time).
pub(crate) const REFRESH_SECS: u64 = 3;

/// What every handler shares.
#[derive(Debug)]
pub(crate) struct Console {
    /// Tokens and sessions.
    pub auth: super::auth::Auth,
    /// What the pages read.
    pub source: super::source::Source,
}

/// The answer to an address that failed to authenticate too often lately:
/// 429, with how long until its window ends.
pub(crate) fn too_many_failures(wait: std::time::Duration) -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, wait.as_secs().max(1).to_string())],
        "too many failed logins or tokens from this address: try again later\n",
    )
        .into_response()
}

/// The console's state as handlers receive it.
pub(crate) type Shared = Arc<Console>;

impl FromRequestParts<Shared> for Access {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, Self::Rejection> {
        let client = crate::serve::Client::of(parts);
        let now = std::time::Instant::now();
        // Only a token is throttled: a session's 256-bit cookie is no
        // guess, and an operator behind the same proxy as a guesser keeps
        // working.
        let bearer = parts.headers.contains_key(header::AUTHORIZATION);
        if let (true, Verdict::Refuse(wait)) = (bearer, state.auth.throttle.check(client.ip(), now)) {
            tracing::warn!(%client, "console: 429 (too many failed logins or tokens from this address)");
            return Err(too_many_failures(wait));
        }
        if let Some(a) = state.auth.access(&parts.headers, now, client) {
            return Ok(a);
        }
        if parts.headers.contains_key(header::AUTHORIZATION) {
            tracing::warn!(%client, "console: 401 (wrong bearer token)");
        }
        // A browser goes to the login form; a script gets 401.
        let html = parts
            .headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"));
        if html && parts.method == axum::http::Method::GET {
            return Err(Redirect::to("/login").into_response());
        }
        // The overview's htmx refresh after the session ended: htmx swaps
        // nothing on a 401, but follows HX-Redirect, so the page goes to the
        // login instead of showing figures that no longer move.
        if parts.headers.contains_key("hx-request") {
            return Err((
                StatusCode::UNAUTHORIZED,
                [("hx-redirect", "/login")],
                "the session ended: log in again\n",
            )
                .into_response());
        }
        Err((
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "log in at /login, or send Authorization: Bearer <token>\n",
        )
            .into_response())
    }
}

/// The answer to a state-changing form whose CSRF token is missing or wrong.
pub(crate) fn forbidden() -> Response {
    (
        StatusCode::FORBIDDEN,
        "the form's CSRF token is missing or wrong: reload the page and try again\n",
    )
        .into_response()
}

/// A form body or query string as `(name, value)` pairs, repeated names
/// kept (the dead letters' checkboxes).
pub(crate) fn form_pairs(raw: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw).into_owned().collect()
}

/// The first value of `name` in `pairs`, trimmed, `None` when absent or empty.
pub(crate) fn field<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// `State` re-exported for the page modules.
pub(crate) type St = State<Shared>;
