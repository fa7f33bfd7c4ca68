//! Who may use the console: the token file's tokens (checked in constant time by the HTTP intake's `Tokens`),
//! the sessions a login opens (cookie `kickq_console`, `HttpOnly`, `SameSite=Strict`, `Secure` unless on
//! loopback), the CSRF token of every state-changing form, and `Authorization: Bearer` for scripts.
//!
//! Sessions live in this process's memory only: a restart logs everyone out,
//! which is the safe side for a tool that can purge dead letters. Only the
//! SHA-256 of a session's cookie is kept, so a memory dump holds no usable
//! cookie, and the log names a session by a short label derived from it.

use crate::access::throttle::Throttle;
use crate::access::tokens::{bearer, Known, TokenId, Tokens};
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub(crate) const SESSION_COOKIE: &str = "kickq_console";
/// The cookie that carries the login form's CSRF token until the login.
pub(crate) const LOGIN_COOKIE: &str = "kickq_console_login";
/// How long a session lasts after its login: a working day. A console left
/// open overnight asks for the token again.
pub(crate) const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Most sessions kept at once; past it the oldest is dropped. A bound on
/// the memory a stream of logins can take.
pub(crate) const MAX_SESSIONS: usize = 1_000;

/// How a request is authenticated. `Debug` leaves out the CSRF token.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Access {
    /// A bearer token (a script), by its name: no cookie, so no CSRF to
    /// check.
    Bearer(String),
    /// A logged-in browser session.
    Session {
        /// The session's name in the log (not its cookie).
        label: String,
        /// The name of the token that opened it.
        token: String,
        /// The token its forms must carry.
        csrf: String,
    },
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Access::Bearer(token) => write!(f, "Bearer({token})"),
            Access::Session { label, token, .. } => write!(f, "Session({label}, token {token}, csrf [redacted])"),
        }
    }
}

impl Access {
    /// Who did it, for the log, by the token's name (never the secret):
    /// `session 1a2b3c4d of token ops-alice` or `bearer token ci-bot`.
    pub(crate) fn who(&self) -> String {
        match self {
            Access::Bearer(token) => format!("bearer token {token}"),
            Access::Session { label, token, .. } => format!("session {label} of token {token}"),
        }
    }

    /// Whether a form's `csrf` field is right: always for a bearer token,
    /// else equal (in constant time) to the session's.
    pub(crate) fn csrf_ok(&self, presented: Option<&str>) -> bool {
        match self {
            Access::Bearer(_) => true,
            Access::Session { csrf, .. } => presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(csrf.as_bytes()))),
        }
    }

    /// The CSRF token to put in forms (empty for a bearer token).
    pub(crate) fn csrf(&self) -> &str {
        match self {
            Access::Bearer(_) => "",
            Access::Session { csrf, .. } => csrf,
        }
    }
}

struct Session {
    /// The token that opened it: the session ends when that token leaves
    /// the token file.
    token: TokenId,
    /// That token's name.
    name: String,
    label: String,
    csrf: String,
    opened: Instant,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("label", &self.label)
            .field("token", &self.name)
            .field("csrf", &"[redacted]")
            .field("opened", &self.opened)
            .finish()
    }
}

/// The tokens and the open sessions.
#[derive(Debug)]
pub(crate) struct Auth {
    tokens: Tokens,
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    /// Failed logins and bearer tokens per client address.
    pub(crate) throttle: Throttle,
    /// Whether cookies get `Secure` (not on loopback).
    pub secure: bool,
}

pub(crate) use crate::access::tokens::random_token;

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// A cookie's value in a request's `Cookie` headers.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim())
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite=Strict`, `Path=/`, `Secure`
/// when `secure`; `max_age` 0 clears it.
pub(crate) fn set_cookie(name: &str, value: &str, max_age: Duration, secure: bool) -> String {
    format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        max_age.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

impl Auth {
    /// The tokens of the token file and no session.
    pub(crate) fn new(tokens: Tokens, secure: bool) -> Auth {
        Auth {
            tokens,
            sessions: Mutex::new(HashMap::new()),
            throttle: Throttle::default(),
            secure,
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.sessions.lock().expect("no panic holds the session lock")
    }

    /// Which of the token file's tokens `token` is, if any (constant time).
    pub(crate) fn token_id(&self, token: &str) -> Option<Known> {
        self.tokens.check(token.trim().as_bytes())
    }

    /// Whether the token file has a usable token now.
    pub(crate) fn tokens_usable(&self) -> bool {
        self.tokens.usable()
    }

    /// Opens a session for the token `token`: its cookie value and its access.
    pub(crate) fn open(&self, now: Instant, token: Known) -> (String, Access) {
        let cookie = random_token();
        let d = digest(&cookie);
        let label = hex::encode(&d[..4]);
        let csrf = random_token();
        let mut sessions = self.sessions();
        sessions.retain(|_, s| now.saturating_duration_since(s.opened) < SESSION_TTL);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions.iter().min_by_key(|(_, s)| s.opened).map(|(k, _)| *k) {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(
            d,
            Session {
                token: token.id,
                name: token.name.clone(),
                label: label.clone(),
                csrf: csrf.clone(),
                opened: now,
            },
        );
        (
            cookie,
            Access::Session {
                label,
                token: token.name,
                csrf,
            },
        )
    }

    /// Ends the session of this cookie, if it is one.
    pub(crate) fn close(&self, cookie: &str) {
        self.sessions().remove(&digest(cookie));
    }

    /// How the request is authenticated, if at all: a bearer token of the
    /// file, else a live session's cookie. A wrong bearer token counts
    /// against `client` ([`Auth::throttle`]).
    pub(crate) fn access(&self, headers: &HeaderMap, now: Instant, client: crate::serve::Client) -> Option<Access> {
        if let Some(token) = bearer(headers.get(AUTHORIZATION).map(|v| v.as_bytes())) {
            let found = self.tokens.check(token).map(|k| Access::Bearer(k.name));
            if found.is_none() && self.tokens.usable() {
                self.throttle.failed(client.ip(), now);
            }
            return found;
        }
        let c = cookie(headers, SESSION_COOKIE)?;
        let key = digest(c);
        let token = self.sessions().get(&key)?.token;
        // A session lives only as long as the token that opened it.
        if !self.tokens.still_has(&token) {
            if let Some(s) = self.sessions().remove(&key) {
                tracing::info!(session = %s.label, "console: session ended: its token left the token file");
            }
            return None;
        }
        let sessions = self.sessions();
        let s = sessions.get(&key)?;
        (now.saturating_duration_since(s.opened) < SESSION_TTL).then(|| Access::Session {
            label: s.label.clone(),
            token: s.name.clone(),
            csrf: s.csrf.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn auth(dir: &std::path::Path) -> Auth {
        let f = dir.join("tokens");
        std::fs::write(&f, format!("# console\nops:{RIGHT}\n")).unwrap();
        Auth::new(Tokens::load(&f).unwrap(), false)
    }

    /// A request whose client address is not known (never throttled).
    const ANY: crate::serve::Client = crate::serve::Client(None);

    /// The test file's token (its name: `ops`).
    const RIGHT: &str = "right-token-0123456789abcdef";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn access_by_bearer_token_or_session_cookie() {
        let dir = std::env::temp_dir().join(format!("kickq-console-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = auth(&dir);
        let now = Instant::now();
        // (headers, expected access kind: None, Some(true) bearer, Some(false) session)
        assert_eq!(a.access(&headers(&[]), now, ANY), None);
        assert_eq!(
            a.access(&headers(&[("authorization", &format!("Bearer {RIGHT}"))]), now, ANY),
            Some(Access::Bearer("ops".into()))
        );
        for wrong in [
            "Bearer wrong".to_owned(),
            format!("Bearer {}", &RIGHT[..RIGHT.len() - 1]),
            format!("Bearer {RIGHT}2"),
            format!("Basic {RIGHT}"),
            "Bearer ops".to_owned(),
        ] {
            assert_eq!(
                a.access(&headers(&[("authorization", &wrong)]), now, ANY),
                None,
                "{wrong}"
            );
        }
        let id = a.token_id(&format!(" {RIGHT}\n")).expect("the file's token");
        assert!(a.token_id(&format!("{RIGHT}x")).is_none() && a.token_id("").is_none() && a.token_id("r").is_none());
        let (c, opened) = a.open(now, id);
        let cookie = format!("other=1; {SESSION_COOKIE}={c}");
        let got = a.access(&headers(&[("cookie", &cookie)]), now, ANY).expect("a session");
        assert_eq!(got, opened);
        assert!(matches!(got, Access::Session { .. }));
        assert_eq!(
            a.access(&headers(&[("cookie", &format!("{SESSION_COOKIE}={c}x"))]), now, ANY),
            None,
            "another cookie value"
        );
        assert_eq!(
            a.access(&headers(&[("cookie", &cookie)]), now + SESSION_TTL, ANY),
            None,
            "expired"
        );
        a.close(&c);
        assert_eq!(a.access(&headers(&[("cookie", &cookie)]), now, ANY), None, "logged out");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn removing_a_token_ends_the_sessions_it_opened() {
        let dir = std::env::temp_dir().join(format!("kickq-console-revoke-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("tokens");
        let (ta, tb) = ("token-a-0123456789abcdef", "token-b-0123456789abcdef");
        std::fs::write(&f, format!("{ta}\n{tb}\n")).unwrap();
        let a = Auth::new(Tokens::load(&f).unwrap(), false);
        let now = Instant::now();
        let (ca, _) = a.open(now, a.token_id(ta).unwrap());
        let (cb, _) = a.open(now, a.token_id(tb).unwrap());
        let h = |c: &str| headers(&[("cookie", &format!("{SESSION_COOKIE}={c}"))]);
        assert!(a.access(&h(&ca), now, ANY).is_some() && a.access(&h(&cb), now, ANY).is_some());
        // token-a revoked (a new file renamed over the old one).
        std::fs::write(dir.join("next"), format!("{tb}\n")).unwrap();
        std::fs::rename(dir.join("next"), &f).unwrap();
        assert_eq!(a.access(&h(&ca), now, ANY), None, "token-a's session ended");
        assert!(a.access(&h(&cb), now, ANY).is_some(), "token-b's goes on");
        // An emptied file ends every session.
        std::fs::write(&f, "").unwrap();
        assert_eq!(a.access(&h(&cb), now, ANY), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn debug_never_prints_a_csrf_token() {
        let s = Access::Session {
            label: "l1".into(),
            token: "ops".into(),
            csrf: "secret-csrf".into(),
        };
        assert_eq!(format!("{s:?}"), "Session(l1, token ops, csrf [redacted])");
        assert_eq!(s.who(), "session l1 of token ops");
        assert_eq!(Access::Bearer("ci".into()).who(), "bearer token ci");
        let dir = std::env::temp_dir().join(format!("kickq-console-debug-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = auth(&dir);
        let id = a.token_id(RIGHT).unwrap();
        let (cookie, Access::Session { csrf, .. }) = a.open(Instant::now(), id) else {
            panic!("a session")
        };
        let shown = format!("{a:?}");
        assert!(!shown.contains(&csrf) && !shown.contains(&cookie), "{shown}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn csrf_by_table() {
        let s = Access::Session {
            label: "l".into(),
            token: "t".into(),
            csrf: "abc".into(),
        };
        for (access, presented, want) in [
            (&s, Some("abc"), true),
            (&s, Some("abd"), false),
            (&s, Some("ab"), false),
            (&s, Some(""), false),
            (&s, None, false),
            (&Access::Bearer("t".into()), None, true),
        ] {
            assert_eq!(access.csrf_ok(presented), want, "{access:?} {presented:?}");
        }
    }

    #[test]
    fn cookies_are_strict_and_secure_off_loopback() {
        assert_eq!(
            set_cookie("a", "b", Duration::from_secs(60), true),
            "a=b; Path=/; HttpOnly; SameSite=Strict; Max-Age=60; Secure"
        );
        assert!(!set_cookie("a", "b", Duration::ZERO, false).contains("Secure"));
        let h = headers(&[("cookie", "x=1; kickq_console = v ; y=2")]);
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("v"));
        assert_eq!(cookie(&h, "z"), None);
        assert_ne!(random_token(), random_token());
        assert_eq!(random_token().len(), 64);
    }

    #[test]
    fn sessions_are_bounded() {
        let dir = std::env::temp_dir().join(format!("kickq-console-bound-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = auth(&dir);
        let t0 = Instant::now();
        let id = a.token_id(RIGHT).unwrap();
        let (first, _) = a.open(t0, id.clone());
        for i in 1..=MAX_SESSIONS {
            a.open(t0 + Duration::from_millis(i as u64), id.clone());
        }
        assert_eq!(a.sessions().len(), MAX_SESSIONS);
        let h = headers(&[("cookie", &format!("{SESSION_COOKIE}={first}"))]);
        assert_eq!(a.access(&h, t0, ANY), None, "the oldest went first");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
