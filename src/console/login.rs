//! The login form (its own CSRF token, carried by a short-lived cookie until the login), the login that
//! trades a token of the token file for a session cookie, and the logout.

use super::auth::{cookie, random_token, set_cookie, LOGIN_COOKIE, SESSION_COOKIE, SESSION_TTL};
use super::state::{field, forbidden, form_pairs, Access, St};
use crate::access::throttle::Verdict;
use axum::body::Bytes;
use axum::http::header::{LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use maud::{html, DOCTYPE};
use std::time::Duration;
use subtle::ConstantTimeEq;

/// How long the login form's CSRF cookie lives: enough to paste a token.
const LOGIN_FORM_TTL: Duration = Duration::from_secs(15 * 60);

fn login_page(csrf: &str, error: Option<&str>) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { (super::layout::head_common("Log in")) }
            body.login {
                main {
                    form.card method="post" action="/login" {
                        h1 { "kickq " span { "console" } }
                        p { "Paste a token of the console's token file." }
                        @if let Some(e) = error { p.notice.bad { (e) } }
                        input type="hidden" name="csrf" value=(csrf);
                        label for="token" { "Token" }
                        input #token type="password" name="token" autocomplete="current-password" autofocus required;
                        button type="submit" { "Log in" }
                    }
                }
            }
        }
    }
    .into_string()
}

fn with_login_cookie(status: StatusCode, csrf: &str, secure: bool, error: Option<&str>) -> Response {
    (
        status,
        [(SET_COOKIE, set_cookie(LOGIN_COOKIE, csrf, LOGIN_FORM_TTL, secure))],
        Html(login_page(csrf, error)),
    )
        .into_response()
}

/// `GET /login`: the form, with a fresh CSRF token in a hidden field and a cookie.
pub(crate) async fn form(st: St) -> Response {
    with_login_cookie(StatusCode::OK, &random_token(), st.0.auth.secure, None)
}

/// `POST /login`: a token of the file opens a session (303 to the overview);
/// a wrong one answers 401 with the form again. The token is compared in
/// constant time (SHA-256, then `subtle`).
pub(crate) async fn login(st: St, client: crate::serve::Client, headers: HeaderMap, body: Bytes) -> Response {
    let console = st.0;
    let now = std::time::Instant::now();
    if let Verdict::Refuse(wait) = console.auth.throttle.check(client.ip(), now) {
        tracing::warn!(%client, "console: login refused unread (too many failed logins from this address)");
        return super::state::too_many_failures(wait);
    }
    let pairs = form_pairs(&body);
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    let presented = field(&pairs, "csrf").unwrap_or_default();
    if expected.is_empty() || !bool::from(expected.as_bytes().ct_eq(presented.as_bytes())) {
        return forbidden();
    }
    let token = field(&pairs, "token").unwrap_or_default();
    let Some(id) = console.auth.token_id(token) else {
        if console.auth.tokens_usable() {
            console.auth.throttle.failed(client.ip(), now);
        }
        tracing::warn!(%client, "console: login refused (wrong token)");
        return with_login_cookie(
            StatusCode::UNAUTHORIZED,
            &random_token(),
            console.auth.secure,
            Some("That token is not in the token file."),
        );
    };
    let (value, access) = console.auth.open(now, id);
    tracing::info!(session = %access.who(), %client, "console: logged in");
    let secure = console.auth.secure;
    let mut resp = (StatusCode::SEE_OTHER, [(LOCATION, "/")]).into_response();
    let h = resp.headers_mut();
    for c in [
        set_cookie(SESSION_COOKIE, &value, SESSION_TTL, secure),
        set_cookie(LOGIN_COOKIE, "", Duration::ZERO, secure),
    ] {
        h.append(SET_COOKIE, c.parse().expect("a cookie of hex and ASCII"));
    }
    resp
}

/// `POST /logout` (CSRF-checked): ends the session and clears its cookie.
pub(crate) async fn logout(
    st: St,
    access: Access,
    client: crate::serve::Client,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let pairs = form_pairs(&body);
    if !access.csrf_ok(field(&pairs, "csrf")) {
        return forbidden();
    }
    if let Some(c) = cookie(&headers, SESSION_COOKIE) {
        st.0.auth.close(c);
    }
    tracing::info!(session = %access.who(), %client, "console: logged out");
    (
        StatusCode::SEE_OTHER,
        [
            (LOCATION, "/login".to_owned()),
            (
                SET_COOKIE,
                set_cookie(SESSION_COOKIE, "", Duration::ZERO, st.0.auth.secure),
            ),
        ],
    )
        .into_response()
}
