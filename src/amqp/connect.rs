//! Opening a named broker connection; the URL (which holds the password) is a secret and is logged redacted.

use crate::secret::Secret;
use lapin::{Connection, ConnectionProperties};

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
