//! The one wrapper for credentials: the ZEGOCLOUD ServerSecret and anything else that must never be printed.

use secrecy::{ExposeSecret, SecretString};
use std::fmt;

/// A credential. `Debug` and `Display` print `[redacted]`, so a secret can sit
/// inside any config or error type without leaking through `{:?}` or a log line.
/// The value lives in the `secrecy` crate's `SecretString`, which zeroes its
/// memory when dropped; this wrapper keeps kickq's one `[redacted]` text
/// (secrecy's own `Debug` prints its type name) and the `expose` name.
///
/// Invariant: the only way to read the value is [`Secret::expose`], and the
/// only callers are the signer, the connections and the mock's verifier.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    /// The raw value, for signing only. Never pass it to a formatter.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_never_shows_the_value() {
        let s = Secret::new("0123456789abcdef0123456789abcdef");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some([redacted])");
        assert_eq!(s.expose(), "0123456789abcdef0123456789abcdef");
    }
}
