//! Opening a named broker connection; the URL (which holds the password) is a secret and is logged redacted.

use crate::secret::Secret;
use lapin::{Connection, ConnectionProperties, ErrorKind};

/// Connects to the broker. `name` shows in `rabbitmqctl list_connections
/// client_properties` and the management UI, so an operator (or a test) can
/// find and close exactly this connection.
pub async fn connect(url: &Secret, name: &str) -> Result<Connection, lapin::Error> {
    crate::zego::client::install_crypto_provider();
    let props = ConnectionProperties::default().with_connection_name(name.into());
    Connection::connect(url.expose(), props).await
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

/// Turns a connect failure of `url` into a [`ConnectError`].
pub fn explain(url: &Secret, err: &lapin::Error) -> ConnectError {
    let parsed = url::Url::parse(url.expose()).ok();
    let host = parsed
        .as_ref()
        .map(|u| {
            let port = u.port_or_known_default().map(|p| format!(":{p}")).unwrap_or_default();
            format!("{}{port}", u.host_str().unwrap_or("?"))
        })
        .unwrap_or_else(|| "[unparseable url]".into());
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
    fn vhosts_decode_for_the_message() {
        assert_eq!(percent_decode("%2f"), "/");
        assert_eq!(percent_decode("prod"), "prod");
    }
}
