//! `kickq run`'s web console (`KICKQ_CONSOLE_ADDR`): its settings, the listener, the routes and the
//! authentication gate in front of every page.
//!
//! ```text
//! mod.rs       settings, bind, routes, security headers
//! state.rs     what handlers share: Console, the Access extractor (the auth gate), form helpers
//! auth.rs      tokens, sessions, cookies, CSRF
//! source.rs    what the pages read (health, gate, metrics, broker, dlq passes, ledger)
//! fleet.rs     each shard's workers from the management API
//! chart.rs     the inline SVG line of calls per second
//! layout.rs    the page shell: head, navigation, logout, styles
//! login.rs     the login form, login and logout
//! overview.rs  per app rate and state, per lane users, queue depths (refreshed by htmx, or a meta refresh)
//! dead.rs      dead letters: filter, show, replay or purge with a counted confirmation
//! history.rs   the ledger: by room, user or job
//! workers.rs   each shard's active worker and standbys
//! assets/      style.css and htmx.min.js (vendored htmx 2, 0BSD), embedded in the binary
//! ```
//!
//! The pages are rendered on the server (maud) and work without JavaScript;
//! htmx only refreshes the overview's live part in place. Nothing is fetched
//! from elsewhere at run time, and the Content-Security-Policy says so.

pub(crate) mod auth;
pub(crate) mod chart;
pub(crate) mod dead;
pub(crate) mod fleet;
pub(crate) mod history;
pub(crate) mod layout;
pub(crate) mod login;
pub(crate) mod overview;
pub(crate) mod source;
pub(crate) mod state;
pub(crate) mod workers;

use crate::access::tokens::Tokens;
use axum::http::header::{self, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub(crate) use state::{Console, Shared};

/// The console's address in `kickq demo --console`: next to the metrics
/// server's 9464, on loopback.
pub(crate) const DEMO_CONSOLE_ADDR: &str = "127.0.0.1:9465";

/// The console's settings.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its tokens, one a line (`KICKQ_CONSOLE_TOKEN_FILE`; never the HTTP intake's).
    pub token_file: PathBuf,
    /// The RabbitMQ management API (`KICKQ_MANAGEMENT_URL`), for the workers page's connection list.
    pub management_url: Option<crate::secret::Secret>,
}

/// Why the console cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The token file cannot be used.
    #[error("console token file (KICKQ_CONSOLE_TOKEN_FILE): {0}")]
    /// (Not a `source`: the message holds it already, so a chain of
    /// causes does not print it twice.)
    Tokens(crate::access::TokenError),
    /// The address cannot be bound.
    #[error("console: cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The operating system's refusal.
        source: std::io::Error,
    },
}

impl From<crate::access::TokenError> for ConsoleError {
    fn from(e: crate::access::TokenError) -> Self {
        ConsoleError::Tokens(e)
    }
}

const STYLE: &str = include_str!("assets/style.css");
const HTMX: &str = include_str!("assets/htmx.min.js");

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// Headers on every answer: nothing from elsewhere, no framing, no caching
/// of pages that show dead letters.
async fn security_headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let asset = req.uri().path().starts_with("/assets/");
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !asset {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// The routes.
pub(crate) fn router(console: Shared) -> Router {
    Router::new()
        .route("/", get(overview::page))
        .route("/live", get(overview::live))
        .route("/dead", get(dead::page))
        .route("/dead/confirm", post(dead::confirm))
        .route("/dead/act", post(dead::act))
        .route("/history", get(history::page))
        .route("/workers", get(workers::page))
        .route("/login", get(login::form).post(login::login))
        .route("/logout", post(login::logout))
        .route("/assets/style.css", get(|| async { asset("text/css", STYLE) }))
        .route("/assets/htmx.min.js", get(|| async { asset("text/javascript", HTMX) }))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(console)
}

/// Whether cookies of a console on `addr` need `Secure`: everywhere but
/// loopback, where a browser talks plain HTTP to the machine itself.
pub(crate) fn secure_cookies(addr: SocketAddr) -> bool {
    !addr.ip().is_loopback()
}

/// Reads the tokens, binds the listener, and returns its address and the
/// server to spawn (it stops when `shutdown` resolves).
pub(crate) async fn bind(
    cfg: &ConsoleConfig,
    source: source::Source,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, impl Future<Output = std::io::Result<()>>), ConsoleError> {
    let tokens = Tokens::load_for(&cfg.token_file, "console")?;
    let console = Arc::new(Console {
        auth: auth::Auth::new(tokens, secure_cookies(cfg.addr)),
        source,
    });
    let listener = tokio::net::TcpListener::bind(cfg.addr)
        .await
        .map_err(|source| ConsoleError::Bind { addr: cfg.addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ConsoleError::Bind { addr: cfg.addr, source })?;
    let app = router(console);
    Ok((local, async move {
        crate::serve::serve(listener, app, crate::serve::Bounds::default(), "console", shutdown).await
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use state::{field, form_pairs};

    #[test]
    fn forms_keep_repeated_fields() {
        let p = form_pairs(b"key=a&key=b&room=+r%201+&empty=");
        assert_eq!(
            p.iter()
                .filter(|(k, _)| k == "key")
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>(),
            vec!["a", "b"]
        );
        assert_eq!(field(&p, "room"), Some("r 1"));
        assert_eq!(field(&p, "empty"), None);
        assert_eq!(field(&p, "absent"), None);
    }

    #[test]
    fn secure_cookies_off_loopback_only() {
        for (addr, want) in [
            ("127.0.0.1:9465", false),
            ("[::1]:9465", false),
            ("0.0.0.0:9465", true),
            ("10.0.0.5:9465", true),
        ] {
            assert_eq!(secure_cookies(addr.parse().unwrap()), want, "{addr}");
        }
    }
}
