//! The HTTP client for KickoutUser: builds the signed request, sends it once, and turns the answer into an `ApiReply` or a `TransportError`.
//!
//! Nothing this file returns or logs may carry the request URL: it holds the
//! signature, which authorises calls for ten minutes.

use super::sign::{new_nonce, signature};
use crate::secret::Secret;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use url::{Host, Url};

/// Largest response body read. The API's JSON answer is under a kilobyte; a
/// larger body is not that answer, and reading it all would let a broken
/// gateway make the worker buffer megabytes.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Longest `RequestId` kept, in bytes. The vendor's ids are a few dozen
/// ASCII bytes, so a real one is always kept whole. A body of up to
/// [`MAX_BODY_BYTES`] could carry one of 64 KiB, and the ledger's btree index
/// on `api_calls.request_id` refuses entries over about 2.7 KB (SQLSTATE
/// 54000): the write would fail for good and the delivery never be acked.
/// 128 bytes bounds what a broken gateway puts in the ledger and the logs.
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// The setting that names the base URL, quoted in build errors.
const API_URL_SETTING: &str = "ZEGO_API_URL";

/// Default HTTP connect timeout for API calls: a TCP and TLS handshake take
/// two to three round trips, 1.2 s at a 400 ms round trip; 3 s leaves room
/// for a retransmitted SYN on a far, lossy path.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Default total timeout per API call: 25 round trips at 400 ms, long enough
/// for a slow gateway, short enough that a hung call frees its slot quickly.
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// TCP keep-alive probes on API connections: well within the idle timeouts
/// of common NATs and load balancers (60 s and more).
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// Connections a worker opens to each app's gateway at start
/// ([`ZegoClient::warm_up`]): with HTTP/1.1, the calls in flight at 50 per
/// second and an 80 ms round trip; more open as calls need them. With
/// HTTP/2 they are one.
pub const WARM_CONNECTIONS: usize = 4;

/// Most body bytes a warm-up answer is read for (an `OPTIONS` answer is
/// empty or a short error page).
const WARM_UP_BODY_BYTES: usize = 16 * 1024;

/// What [`ZegoClient::warm_up`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmUp {
    /// Requests the gateway answered (with any status).
    pub answered: usize,
    /// The HTTP version of the first answer (`HTTP/2.0`, `HTTP/1.1`).
    pub http: Option<String>,
    /// How long it took.
    pub took: Duration,
}

/// Everything [`ZegoClient::new`] needs.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Base URL such as `https://rtc-api.zego.im`. Must be `https://`, or
    /// `http://` to a loopback host (the in-process mock); no query, fragment
    /// or user info.
    pub base_url: String,
    /// AppId every call is signed for.
    pub app_id: u32,
    /// ServerSecret the calls are signed with.
    pub secret: Secret,
    /// Longest wait for the TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Longest wait for a whole call, connection through body.
    pub total_timeout: Duration,
}

/// Why a client could not be built. `Display` names the setting and never
/// holds the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientBuildError {
    /// The base URL is unusable.
    #[error("{API_URL_SETTING} is invalid: {0}")]
    BaseUrl(String),
    /// The HTTP stack refused its configuration.
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
}

/// A KickoutUser client. Cloning is cheap and clones share one connection pool.
#[derive(Clone)]
pub struct ZegoClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// The base URL with a path ending in `/` and no query: the request URL is
    /// this plus the query.
    endpoint: Url,
    app_id: u32,
    secret: Secret,
}

impl std::fmt::Debug for ZegoClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZegoClient")
            .field("endpoint", &self.inner.endpoint.as_str())
            .field("app_id", &self.inner.app_id)
            .finish_non_exhaustive()
    }
}

/// The outcome of one call, with when it started and how long it took.
#[derive(Debug, Clone)]
pub struct CallResult {
    /// The API's answer, or why there was none.
    pub result: Result<ApiReply, TransportError>,
    /// Wall-clock time the call was signed and sent (its `Timestamp`).
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// Time from signing to the end of the body or the failure, from a
    /// monotonic clock.
    pub latency: Duration,
}

/// The API's answer: an HTTP 200 whose body is the JSON
/// `{"Code", "Message", "RequestId"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiReply {
    /// Return code; 0 is success.
    pub code: i64,
    /// The API's text for the code (may be empty).
    pub message: String,
    /// The API's id for the request, for vendor support (may be empty), as
    /// [`bound_request_id`] keeps it: at most [`MAX_REQUEST_ID_BYTES`].
    pub request_id: String,
    /// Always 200: anything else is a [`TransportError`].
    pub http_status: u16,
}

/// No API answer was obtained. Neither `Display` nor `Debug` ever holds the
/// URL, the signature or the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The connect or total timeout elapsed.
    #[error("timed out")]
    Timeout,
    /// No connection could be made.
    #[error("connect failed: {0}")]
    Connect(String),
    /// An HTTP status other than 200 and not a redirect.
    #[error("HTTP status {0}")]
    HttpStatus(u16),
    /// HTTP 200 (or the given status) with a body that is not the API's JSON.
    #[error("HTTP {http_status} body is not the API's JSON answer")]
    NotJson {
        /// Status of the response.
        http_status: u16,
    },
    /// A 3xx. Never followed: following would resend the signed URL to
    /// wherever the `Location` points.
    #[error("HTTP redirect {0} refused")]
    Redirect(u16),
    /// The connection failed mid-call (reset, closed early, protocol error).
    #[error("request failed: {0}")]
    Other(String),
}

pub use kickq_producer::amqp::connect::install_crypto_provider;

/// The wire shape of the API's answer.
#[derive(serde::Deserialize)]
struct WireReply {
    #[serde(rename = "Code")]
    code: i64,
    #[serde(rename = "Message", default)]
    message: String,
    /// Raw bytes, not `String`: a `String` would refuse the whole answer
    /// over a lone `\uD800` escape or invalid UTF-8 in the id alone, and a
    /// call that kicked would look like a transport failure.
    #[serde(rename = "RequestId", default, deserialize_with = "raw_string")]
    request_id: Vec<u8>,
}

/// A JSON string's bytes, escapes decoded, not checked for UTF-8 (serde_json
/// turns a lone surrogate escape into its WTF-8 bytes).
fn raw_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    struct Raw;
    impl serde::de::Visitor<'_> for Raw {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string")
        }
        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
            Ok(v.as_bytes().to_vec())
        }
    }
    d.deserialize_bytes(Raw)
}

/// A `RequestId` as kept, from its raw bytes: invalid UTF-8 and control
/// characters (C0, DEL, C1: NUL cannot be stored, and the others would be
/// printed raw by `kickq history`) each become U+FFFD, then the text is cut
/// to at most [`MAX_REQUEST_ID_BYTES`] on a character boundary. The flag
/// says the result differs from the raw value (the caller logs that value).
pub fn bound_request_id(raw: &[u8]) -> (String, bool) {
    let text = String::from_utf8_lossy(raw);
    let mut changed = matches!(text, std::borrow::Cow::Owned(_));
    let mut kept = String::with_capacity(text.len().min(MAX_REQUEST_ID_BYTES));
    for c in text.chars() {
        let c = if c.is_control() {
            changed = true;
            char::REPLACEMENT_CHARACTER
        } else {
            c
        };
        if kept.len() + c.len_utf8() > MAX_REQUEST_ID_BYTES {
            changed = true;
            break;
        }
        kept.push(c);
    }
    (kept, changed)
}

impl ZegoClient {
    /// Validates the base URL and builds the HTTP client (no redirects, the
    /// given timeouts). Installs the crypto provider.
    pub fn new(cfg: ClientConfig) -> Result<Self, ClientBuildError> {
        install_crypto_provider();
        let (endpoint, loopback_http) = endpoint(&cfg.base_url)?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .timeout(cfg.total_timeout)
            .redirect(reqwest::redirect::Policy::none())
            // Connections are reused (keep-alive; with HTTP/2, which ALPN
            // picks when the gateway offers it, every call shares one): a
            // far gateway's handshakes are paid once, not per call. The
            // probes keep idle connections (and NAT mappings) alive between
            // sweeps.
            .tcp_keepalive(TCP_KEEPALIVE)
            .user_agent(concat!("kickq/", env!("CARGO_PKG_VERSION")));
        if loopback_http {
            // A proxy would see the signed URL in clear, and a loopback
            // target never needs one.
            builder = builder.no_proxy();
        }
        let http = builder.build().map_err(|e| ClientBuildError::Http(error_chain(e)))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                endpoint,
                app_id: cfg.app_id,
                secret: cfg.secret,
            }),
        })
    }

    /// The AppId calls are signed for.
    pub fn app_id(&self) -> u32 {
        self.inner.app_id
    }

    /// Opens up to `connections` connections to the gateway before the first
    /// call needs one, so that the first calls of a far gateway do not each
    /// wait for a TCP and TLS handshake (two to three round trips). Sends
    /// that many `OPTIONS` requests to the endpoint at once: no `Action`, no
    /// AppId, no signature, so the gateway counts none against any AppId's
    /// rate, and the secret never travels. With HTTP/2 (ALPN) they share one
    /// connection, which every call then shares too; with HTTP/1.1 each
    /// stays in the pool for the calls (keep-alive).
    pub async fn warm_up(&self, connections: usize) -> WarmUp {
        let started = Instant::now();
        let one = || async {
            let response = self
                .inner
                .http
                .request(reqwest::Method::OPTIONS, self.inner.endpoint.clone())
                .send()
                .await
                .ok()?;
            let version = response.version();
            // Read to the end (a few KiB at most), so the connection goes
            // back to the pool; a longer body is dropped with its connection.
            let mut response = response;
            let mut read = 0usize;
            while let Ok(Some(chunk)) = response.chunk().await {
                read += chunk.len();
                if read > WARM_UP_BODY_BYTES {
                    break;
                }
            }
            Some(version)
        };
        let answers = futures_util::future::join_all((0..connections).map(|_| one())).await;
        let versions: Vec<reqwest::Version> = answers.into_iter().flatten().collect();
        WarmUp {
            answered: versions.len(),
            http: versions.first().map(|v| format!("{v:?}")),
            took: started.elapsed(),
        }
    }

    /// Sends one KickoutUser call, signed now with a fresh nonce. Sends
    /// `user_ids` as given, even more than the API's limit (the API answers
    /// 50011). Never retries; the caller classifies the result.
    pub async fn kickout(&self, room_id: &str, user_ids: &[String], reason: Option<&str>) -> CallResult {
        let started_at = chrono::Utc::now();
        let clock = Instant::now();
        let url = self.signed_url(room_id, user_ids, reason, started_at.timestamp());
        let result = self.send(url).await.map(|(reply, raw_id)| {
            if let Some(raw) = raw_id {
                // One line with the whole id as sent (escaped by `?`), since
                // the ledger keeps only its bounded form.
                tracing::warn!(
                    room = room_id,
                    users = ?user_ids,
                    code = reply.code,
                    request_id_bytes = raw.len(),
                    kept = %reply.request_id,
                    request_id = ?String::from_utf8_lossy(&raw),
                    "KickoutUser answered with an over-long or malformed RequestId; keeping {MAX_REQUEST_ID_BYTES} bytes at most"
                );
            }
            reply
        });
        let latency = clock.elapsed();
        let latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        match &result {
            Ok(reply) => tracing::debug!(
                room = room_id,
                users = user_ids.len(),
                code = reply.code,
                latency_ms,
                "KickoutUser answered"
            ),
            Err(err) => tracing::debug!(
                room = room_id,
                users = user_ids.len(),
                error = %err,
                latency_ms,
                "KickoutUser failed"
            ),
        }
        CallResult {
            result,
            started_at,
            latency,
        }
    }

    fn signed_url(&self, room_id: &str, user_ids: &[String], reason: Option<&str>, timestamp: i64) -> Url {
        let app_id = self.inner.app_id;
        let nonce = new_nonce();
        let sig = signature(app_id, &nonce, &self.inner.secret, timestamp);
        let mut url = self.inner.endpoint.clone();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("Action", "KickoutUser")
                .append_pair("AppId", &app_id.to_string())
                .append_pair("SignatureNonce", &nonce)
                .append_pair("Timestamp", &timestamp.to_string())
                .append_pair("Signature", &sig)
                .append_pair("SignatureVersion", "2.0")
                .append_pair("RoomId", room_id);
            for user in user_ids {
                q.append_pair("UserId[]", user);
            }
            if let Some(reason) = reason {
                q.append_pair("CustomReason", reason);
            }
        }
        url
    }

    /// Sends the call; on an answer, also the raw `RequestId` when
    /// [`bound_request_id`] changed it.
    async fn send(&self, url: Url) -> Result<(ApiReply, Option<Vec<u8>>), TransportError> {
        let mut response = self.inner.http.get(url).send().await.map_err(transport_error)?;
        let status = response.status();
        if status.is_redirection() {
            return Err(TransportError::Redirect(status.as_u16()));
        }
        if status != reqwest::StatusCode::OK {
            return Err(TransportError::HttpStatus(status.as_u16()));
        }
        let http_status = status.as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(TransportError::NotJson { http_status });
            }
            body.extend_from_slice(&chunk);
        }
        let wire: WireReply = serde_json::from_slice(&body).map_err(|_| TransportError::NotJson { http_status })?;
        let (request_id, changed) = bound_request_id(&wire.request_id);
        let reply = ApiReply {
            code: wire.code,
            message: wire.message,
            request_id,
            http_status,
        };
        Ok((reply, changed.then_some(wire.request_id)))
    }
}

/// Validates the base URL and turns it into the request endpoint; the flag
/// says it is plain HTTP to loopback.
fn endpoint(base: &str) -> Result<(Url, bool), ClientBuildError> {
    let bad = |why: &str| ClientBuildError::BaseUrl(why.to_owned());
    let mut url = Url::parse(base.trim()).map_err(|e| ClientBuildError::BaseUrl(format!("not a URL ({e})")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not hold user info"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must not hold a query or fragment"));
    }
    let loopback_http = match url.scheme() {
        "https" => false,
        "http" if url.host().as_ref().is_some_and(is_loopback) => true,
        "http" => return Err(bad("plain http:// is allowed only to a loopback host; use https://")),
        other => return Err(ClientBuildError::BaseUrl(format!("scheme {other}:// is not https://"))),
    };
    if url.host().is_none() {
        return Err(bad("has no host"));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok((url, loopback_http))
}

fn is_loopback(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        Host::Ipv4(ip) => Ipv4Addr::is_loopback(ip),
        Host::Ipv6(ip) => Ipv6Addr::is_loopback(ip),
    }
}

/// Maps a reqwest error without its URL.
fn transport_error(err: reqwest::Error) -> TransportError {
    if err.is_timeout() {
        TransportError::Timeout
    } else if err.is_connect() {
        TransportError::Connect(error_chain(err))
    } else {
        TransportError::Other(error_chain(err))
    }
}

/// The error and its sources as one line. reqwest's own `Display` ends with
/// the URL, so it is stripped first; the sources (hyper, io) never hold one.
fn error_chain(err: reqwest::Error) -> String {
    let err = err.without_url();
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(base: &str) -> ClientConfig {
        ClientConfig {
            base_url: base.into(),
            app_id: 1234567890,
            secret: Secret::new("0123456789abcdef0123456789abcdef"),
            connect_timeout: Duration::from_secs(1),
            total_timeout: Duration::from_secs(2),
        }
    }

    #[test]
    fn request_id_bound_table() {
        let long_ascii = "a".repeat(4096);
        // 'é' is 2 bytes: 63 of them plus "ab" is 128 bytes; one more byte
        // would split the next 'é'.
        let accents = format!("a{}", "é".repeat(100));
        let cases: Vec<(&str, Vec<u8>, String, bool)> = vec![
            (
                "vendor-looking id",
                b"9f3c2a1b-0001".to_vec(),
                "9f3c2a1b-0001".into(),
                false,
            ),
            ("empty", Vec::new(), String::new(), false),
            ("exactly 128", vec![b'x'; 128], "x".repeat(128), false),
            ("129 is cut", vec![b'x'; 129], "x".repeat(128), true),
            (
                "4 KB is cut",
                long_ascii.clone().into_bytes(),
                long_ascii[..128].into(),
                true,
            ),
            (
                "cut on a char boundary",
                accents.clone().into_bytes(),
                format!("a{}", "é".repeat(63)),
                true,
            ),
            ("invalid UTF-8", b"ab\xffcd".to_vec(), "ab\u{FFFD}cd".into(), true),
            (
                "lone surrogate as serde_json hands it over",
                b"id-\xed\xa0\x80".to_vec(),
                "id-\u{FFFD}\u{FFFD}\u{FFFD}".into(),
                true,
            ),
            (
                "NUL and newline",
                b"a\0b\nc".to_vec(),
                "a\u{FFFD}b\u{FFFD}c".into(),
                true,
            ),
            ("C1 control", "a\u{85}b".as_bytes().to_vec(), "a\u{FFFD}b".into(), true),
            (
                "non-ASCII text is kept",
                "Zégo-漢字".as_bytes().to_vec(),
                "Zégo-漢字".into(),
                false,
            ),
        ];
        for (name, raw, want, changed) in cases {
            let got = bound_request_id(&raw);
            assert_eq!(got, (want, changed), "{name}");
            assert!(got.0.len() <= MAX_REQUEST_ID_BYTES, "{name}");
        }
        assert_eq!(accents.len(), 201);
    }

    #[test]
    fn wire_request_id_takes_odd_strings() {
        let parse = |body: &[u8]| {
            let w: WireReply = serde_json::from_slice(body).unwrap();
            bound_request_id(&w.request_id)
        };
        assert_eq!(parse(br#"{"Code":0,"RequestId":"r-1"}"#), ("r-1".into(), false));
        assert_eq!(parse(br#"{"Code":0}"#), (String::new(), false));
        assert_eq!(parse(br#"{"Code":0,"RequestId":"a\u00e9"}"#), ("a\u{e9}".into(), false));
        assert_eq!(
            parse(br#"{"Code":0,"RequestId":"x\ud800y"}"#),
            ("x\u{FFFD}\u{FFFD}\u{FFFD}y".into(), true),
            "a lone surrogate escape no longer voids the answer"
        );
        assert_eq!(
            parse(b"{\"Code\":0,\"RequestId\":\"a\xffb\"}"),
            ("a\u{FFFD}b".into(), true)
        );
        assert!(serde_json::from_slice::<WireReply>(br#"{"Code":0,"RequestId":7}"#).is_err());
    }

    #[test]
    fn base_url_table() {
        let accepted = [
            ("https://rtc-api.zego.im", "https://rtc-api.zego.im/"),
            ("https://rtc-api-sha.zego.im/", "https://rtc-api-sha.zego.im/"),
            ("https://gw.example/zego", "https://gw.example/zego/"),
            ("http://127.0.0.1:8085", "http://127.0.0.1:8085/"),
            ("http://127.9.9.9", "http://127.9.9.9/"),
            ("http://[::1]:9", "http://[::1]:9/"),
            ("http://localhost:1", "http://localhost:1/"),
            ("http://LOCALHOST:1", "http://localhost:1/"),
        ];
        for (base, want) in accepted {
            let (url, _) = endpoint(base).unwrap_or_else(|e| panic!("{base}: {e}"));
            assert_eq!(url.as_str(), want);
        }
        let rejected = [
            "http://rtc-api.zego.im",
            "http://10.0.0.1",
            "http://128.0.0.1",
            "http://localhost.evil.example",
            "http://[::2]",
            "ftp://127.0.0.1",
            "file:///etc/passwd",
            "rtc-api.zego.im",
            "",
            "https://user:pw@rtc-api.zego.im",
            "https://rtc-api.zego.im/?Action=x",
            "https://rtc-api.zego.im/#f",
        ];
        for base in rejected {
            let err = endpoint(base).expect_err(base).to_string();
            assert!(err.starts_with("ZEGO_API_URL is invalid"), "{base}: {err}");
        }
    }

    #[test]
    fn query_is_encoded_pair_by_pair() {
        let client = ZegoClient::new(config("http://127.0.0.1:1")).unwrap();
        let users = vec!["a&UserId[]=victim".to_owned(), "é 漢+%#;=".to_owned()];
        let url = client.signed_url("r&RoomId=x", &users, Some("spam & more"), 1700000000);
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "Action",
                "AppId",
                "SignatureNonce",
                "Timestamp",
                "Signature",
                "SignatureVersion",
                "RoomId",
                "UserId[]",
                "UserId[]",
                "CustomReason"
            ]
        );
        let get = |k: &str| pairs.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str()).unwrap();
        assert_eq!(get("RoomId"), "r&RoomId=x");
        assert_eq!(pairs[7].1, users[0]);
        assert_eq!(pairs[8].1, users[1]);
        assert_eq!(get("CustomReason"), "spam & more");
        let nonce = get("SignatureNonce");
        let secret = Secret::new("0123456789abcdef0123456789abcdef");
        assert_eq!(get("Signature"), signature(1234567890, nonce, &secret, 1700000000));
        assert_eq!(url.fragment(), None, "a # in a value must not start a fragment");
        let again = client.signed_url("r", &users, None, 1700000000);
        assert!(!again.as_str().contains(nonce), "every call gets a fresh nonce");
        assert!(!again.as_str().contains("CustomReason"));
    }

    #[test]
    fn no_error_text_carries_secret_or_signature() {
        let secret = "0123456789abcdef0123456789abcdef";
        let errors: Vec<Box<dyn std::fmt::Debug>> = vec![
            Box::new(TransportError::Timeout),
            Box::new(TransportError::Connect("tcp connect error".into())),
            Box::new(TransportError::HttpStatus(500)),
            Box::new(TransportError::NotJson { http_status: 200 }),
            Box::new(TransportError::Redirect(302)),
            Box::new(TransportError::Other("connection closed".into())),
            Box::new(ClientBuildError::BaseUrl("x".into())),
            Box::new(ClientBuildError::Http("x".into())),
            Box::new(ZegoClient::new(config("http://127.0.0.1:1")).unwrap()),
            Box::new(config("http://127.0.0.1:1")),
        ];
        for e in errors {
            let text = format!("{e:?}");
            assert!(!text.contains(secret), "{text}");
            assert!(!text.contains("Signature"), "{text}");
        }
        for e in [
            TransportError::Timeout,
            TransportError::Connect("c".into()),
            TransportError::HttpStatus(500),
            TransportError::NotJson { http_status: 200 },
            TransportError::Redirect(302),
            TransportError::Other("o".into()),
        ] {
            let text = e.to_string();
            assert!(!text.contains(secret) && !text.contains("Signature"), "{text}");
        }
    }

    #[tokio::test]
    async fn reqwest_errors_lose_their_url() {
        // A port nobody listens on: bind, note the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = ZegoClient::new(config(&format!("http://127.0.0.1:{port}"))).unwrap();
        let call = client.kickout("room", &["u".into()], Some("why")).await;
        let err = call.result.expect_err("nothing listens on the port");
        assert!(matches!(err, TransportError::Connect(_)), "{err:?}");
        for text in [err.to_string(), format!("{err:?}")] {
            assert!(!text.contains("Signature"), "{text}");
            assert!(!text.contains("0123456789abcdef"), "{text}");
            assert!(!text.contains("KickoutUser"), "{text}");
            assert!(!text.contains("127.0.0.1"), "{text}");
        }
    }
}
