//! Opening a named broker connection to one node of a list (`KICKQ_AMQP_URL` may name several, comma-separated);
//! the URL (which holds the password) is a secret and is logged redacted.
//!
//! lapin takes one URI, so the node list is ours: each connect tries the
//! nodes in turn, starting at the node last reached (a reconnect after that
//! node died moves on at once: the refusal is immediate), and logs which node
//! it reached, by host and port only.

use crate::secret::Secret;
use lapin::{Connection, ConnectionProperties, ErrorKind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Longest wait for one node of a list before the next is tried: a node
/// that is down refuses at once, but one cut off by the network answers
/// nothing, and the others must not wait behind it. Not applied to a single
/// node, which has no other to try.
pub const NODE_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest wait for a connection's close to be answered. lapin ends its
/// I/O loop without answering a close it had queued when a channel closed
/// by a dropped handle races it (it reports that as a connection error), so
/// an unbounded close could hold a finished command forever; the socket goes
/// with the connection either way.
pub const CLOSE_WITHIN: Duration = Duration::from_secs(5);

/// Closes `conn` with `reason`, waiting at most [`CLOSE_WITHIN`]; what is
/// left unacknowledged on it returns to its queues as with any close.
pub async fn close(conn: &Connection, reason: &str) {
    let _ = tokio::time::timeout(CLOSE_WITHIN, conn.close(200, reason.into())).await;
}

/// The node of the list that the last connect reached (per process: every
/// caller shares one broker list).
static LAST_REACHED: AtomicUsize = AtomicUsize::new(0);

/// The nodes of `KICKQ_AMQP_URL`: comma-separated URLs. After the first, an
/// entry may be only `host:port`, taking the first URL's scheme, user,
/// password, vhost and options (so the password is written once). A comma
/// inside a password must be written `%2C`.
pub fn nodes(url: &str) -> Vec<String> {
    let mut parts = url.split(',').map(str::trim).filter(|p| !p.is_empty());
    let Some(first) = parts.next() else {
        return vec![url.to_owned()];
    };
    let base = url::Url::parse(first).ok();
    let mut out = vec![first.to_owned()];
    for p in parts {
        if p.contains("://") {
            out.push(p.to_owned());
            continue;
        }
        let joined = base.as_ref().and_then(|b| {
            let (host, port) = match p.rsplit_once(':') {
                Some((h, port)) => (h, Some(port.parse::<u16>().ok()?)),
                None => (p, None),
            };
            let mut u = b.clone();
            u.set_host(Some(host)).ok()?;
            u.set_port(port.or(b.port())).ok()?;
            Some(u.to_string())
        });
        // Unjoinable: passed on as written, and refused by the client there.
        out.push(joined.unwrap_or_else(|| p.to_owned()));
    }
    out
}

/// Whether a comma-separated list has an entry after the first with user
/// info but no scheme (`amqp://u:12,34@h`): a password with a raw comma,
/// which would be taken for two nodes.
pub fn has_split_password(url: &str) -> bool {
    url.split(',').skip(1).any(|p| p.contains('@') && !p.contains("://"))
}

/// `host:port` of a node URL, for logs and errors (never the password).
pub fn host_of(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .map(|u| {
            let known = match u.scheme() {
                "amqp" => Some(5672),
                "amqps" => Some(5671),
                _ => None,
            };
            let port = u.port().or(known).map(|p| format!(":{p}")).unwrap_or_default();
            format!("{}{port}", u.host_str().unwrap_or("?"))
        })
        .unwrap_or_else(|| "[unparseable url]".into())
}

/// Connects to the broker: to the first node of the list that answers,
/// trying them in turn from the one last reached. `name` shows in
/// `rabbitmqctl list_connections client_properties` and the management UI,
/// so an operator (or a test) can find and close exactly this connection.
/// The error is the last node's.
pub async fn connect(url: &Secret, name: &str) -> Result<Connection, lapin::Error> {
    connect_as(url, name, &[]).await
}

#[doc(hidden)] // The worker's, not the producer API's: it may change in any release.
/// Client property naming the namespace of a worker's session connection.
pub const NAMESPACE_PROPERTY: &str = "kickq-namespace";
#[doc(hidden)] // The worker's, not the producer API's: it may change in any release.
/// Client property naming the shard of a worker's session connection.
pub const SHARD_PROPERTY: &str = "kickq-shard";
#[doc(hidden)] // The worker's, not the producer API's: it may change in any release.
/// Client property naming the worker (its `KICKQ_CONNECTION_NAME`) on its
/// session's lease connection.
pub const WORKER_PROPERTY: &str = "kickq-worker";

/// Installs rustls's ring provider as the process default, once: lapin's TLS
/// (and the worker's HTTP client) need one chosen when more than one is
/// linked. Later calls do nothing.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[doc(hidden)] // The worker's, not the producer API's: it may change in any release.
/// [`connect`] with extra client properties (`(name, value)`), which the
/// management API shows with the connection: a worker session's lease
/// connection carries its namespace, shard and name ([`NAMESPACE_PROPERTY`],
/// [`SHARD_PROPERTY`], [`WORKER_PROPERTY`]), so the console can tell a shard's
/// standbys from other connections.
pub async fn connect_as(url: &Secret, name: &str, properties: &[(&str, &str)]) -> Result<Connection, lapin::Error> {
    install_crypto_provider();
    let nodes = nodes(url.expose());
    let n = nodes.len();
    let start = LAST_REACHED.load(Ordering::Relaxed) % n;
    let mut last_err = None;
    for k in 0..n {
        let i = (start + k) % n;
        let mut props = ConnectionProperties::default().with_connection_name(name.into());
        for (k, v) in properties {
            props = props.with_client_property((*k).into(), (*v).into());
        }
        let attempt = Connection::connect(&nodes[i], props);
        let result = if n == 1 {
            attempt.await
        } else {
            match tokio::time::timeout(NODE_CONNECT_TIMEOUT, attempt).await {
                Ok(r) => r,
                Err(_) => Err(lapin::Error::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {NODE_CONNECT_TIMEOUT:?}"),
                ))),
            }
        };
        match result {
            Ok(conn) => {
                if n > 1 {
                    let moved = LAST_REACHED.swap(i, Ordering::Relaxed) != i;
                    let node = host_of(&nodes[i]);
                    if moved || k > 0 {
                        tracing::info!(node = %node, index = i + 1, of = n, connection = name, "connected to broker node {node} ({} of {n})", i + 1);
                    } else {
                        tracing::debug!(node = %node, index = i + 1, of = n, connection = name, "connected to broker node {node}");
                    }
                }
                return Ok(conn);
            }
            Err(e) => {
                if n > 1 {
                    tracing::warn!(node = %host_of(&nodes[i]), index = i + 1, of = n, error = %describe(&e), "broker node did not answer; trying the next");
                }
                last_err = Some(e);
            }
        }
    }
    Err(last_err.expect("a list has at least one node"))
}

/// A broker error as a log-safe string: lapin's errors never carry the URL,
/// but they are passed through here so that stays true in one place.
pub fn describe(err: &lapin::Error) -> String {
    let s = err.to_string();
    if s.contains("amqp://") || s.contains("amqps://") {
        "broker error (detail withheld: it named the URL)".into()
    } else {
        s
    }
}

/// Why a broker connection could not be opened, in the operator's terms: the
/// host (never the password), what went wrong once, and the setting to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// Nothing answered (refused, unreachable, DNS, TLS).
    #[error("cannot reach the broker at {host} (KICKQ_AMQP_URL): {detail}; is RabbitMQ running there?")]
    Unreachable {
        /// `host:port` from the URL.
        host: String,
        /// The operating system's or TLS library's reason, once.
        detail: String,
    },
    /// The broker refused the login.
    #[error("the broker at {host} refused the user name or password of KICKQ_AMQP_URL")]
    LoginRefused {
        /// `host:port` from the URL.
        host: String,
    },
    /// The vhost does not exist or the user may not use it.
    #[error("the broker at {host} refused the vhost {vhost:?} (the path of KICKQ_AMQP_URL): {detail}")]
    Vhost {
        /// `host:port` from the URL.
        host: String,
        /// The vhost named by the URL.
        vhost: String,
        /// The broker's words.
        detail: String,
    },
    /// Anything else the broker or the client said.
    #[error("cannot connect to the broker at {host} (KICKQ_AMQP_URL): {detail}")]
    Other {
        /// `host:port` from the URL.
        host: String,
        /// The client's error, once.
        detail: String,
    },
}

impl ConnectError {
    /// A configuration mistake (credentials, vhost) rather than a broker
    /// that is away: waiting will not fix it.
    pub fn is_configuration(&self) -> bool {
        matches!(self, ConnectError::LoginRefused { .. } | ConnectError::Vhost { .. })
    }
}

/// Turns a connect failure of `url` (one node or a list) into a
/// [`ConnectError`]; a list names every node it tried.
pub fn explain(url: &Secret, err: &lapin::Error) -> ConnectError {
    let nodes = nodes(url.expose());
    let parsed = url::Url::parse(&nodes[0]).ok();
    let host = nodes.iter().map(|n| host_of(n)).collect::<Vec<_>>().join(", ");
    let vhost = parsed
        .as_ref()
        .map(|u| {
            let path = u.path().trim_start_matches('/');
            percent_decode(if path.is_empty() { "/" } else { path })
        })
        .unwrap_or_default();
    match err.kind() {
        ErrorKind::IOError(io) => ConnectError::Unreachable {
            host,
            detail: io.to_string(),
        },
        ErrorKind::ProtocolError(p) => {
            let text = p.get_message().as_str().to_owned();
            match p.get_id() {
                403 => ConnectError::LoginRefused { host },
                530 if text.contains("vhost") => ConnectError::Vhost {
                    host,
                    vhost,
                    detail: text,
                },
                _ => ConnectError::Other { host, detail: text },
            }
        }
        _ => ConnectError::Other {
            host,
            detail: describe(err),
        },
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("v={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refused_connections_name_the_host_and_the_setting_once() {
        let url = Secret::new("amqp://guest:hunter2@127.0.0.1:1/%2f".to_owned());
        let err = connect(&url, "kickq-test").await.unwrap_err();
        let e = explain(&url, &err);
        assert!(matches!(e, ConnectError::Unreachable { .. }), "{e:?}");
        assert!(!e.is_configuration());
        let text = e.to_string();
        assert!(
            text.contains("127.0.0.1:1") && text.contains("KICKQ_AMQP_URL"),
            "{text}"
        );
        assert_eq!(text.matches("refused").count(), 1, "the cause once: {text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn node_lists_by_table() {
        let cases: &[(&str, &[&str])] = &[
            ("amqp://u:p@h1:5672/%2f", &["amqp://u:p@h1:5672/%2f"]),
            (
                "amqp://u:p@h1:5701/%2f,amqp://u:p@h2:5702/%2f",
                &["amqp://u:p@h1:5701/%2f", "amqp://u:p@h2:5702/%2f"],
            ),
            (
                "amqp://u:p@h1:5701/vh?heartbeat=5, h2:5702 ,h3",
                &[
                    "amqp://u:p@h1:5701/vh?heartbeat=5",
                    "amqp://u:p@h2:5702/vh?heartbeat=5",
                    "amqp://u:p@h3:5701/vh?heartbeat=5",
                ],
            ),
            ("amqp://u:p@h1/%2f,,", &["amqp://u:p@h1/%2f"]),
        ];
        for (raw, want) in cases {
            assert_eq!(&nodes(raw), want, "{raw}");
        }
        assert_eq!(host_of("amqp://u:secret@10.0.0.2:5702/%2f"), "10.0.0.2:5702");
        for (raw, split) in [
            ("amqp://u:12,34@h/%2f", true),
            ("amqp://u:p@h1/%2f,u:p@h2", true),
            ("amqp://u:p@h1/%2f,h2:5672", false),
            ("amqp://u:p@h1/%2f,amqp://u:p@h2/%2f", false),
            ("amqp://u:p%2C1@h1/%2f", false),
        ] {
            assert_eq!(has_split_password(raw), split, "{raw}");
        }
        assert_eq!(host_of("amqps://u:secret@mq.example"), "mq.example:5671");
    }

    #[tokio::test]
    async fn a_list_is_tried_in_turn_and_the_error_names_every_node() {
        let url = Secret::new("amqp://guest:hunter2@127.0.0.1:1/%2f,127.0.0.1:2".to_owned());
        let err = connect(&url, "kickq-test").await.unwrap_err();
        let text = explain(&url, &err).to_string();
        assert!(text.contains("127.0.0.1:1, 127.0.0.1:2"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn vhosts_decode_for_the_message() {
        assert_eq!(percent_decode("%2f"), "/");
        assert_eq!(percent_decode("prod"), "prod");
    }
}
