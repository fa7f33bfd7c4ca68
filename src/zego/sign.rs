//! The API's signature scheme (version 2.0) and the per-call nonce.

use crate::secret::Secret;
use md5::{Digest, Md5};

/// `Signature` for one call: lower-case hex md5 of the decimal AppId, the
/// nonce, the ServerSecret and the decimal Unix timestamp, concatenated with
/// nothing between them, as the vendor specifies for `SignatureVersion=2.0`.
///
/// The result is always 32 lower-case hex characters. It authorises one call
/// for ten minutes, so it is as sensitive as a short-lived credential: it must
/// not be logged or put in an error either.
pub fn signature(app_id: u32, nonce: &str, secret: &Secret, timestamp: i64) -> String {
    let mut md5 = Md5::new();
    md5.update(app_id.to_string().as_bytes());
    md5.update(nonce.as_bytes());
    md5.update(secret.expose().as_bytes());
    md5.update(timestamp.to_string().as_bytes());
    hex::encode(md5.finalize())
}

/// A fresh `SignatureNonce`: 8 bytes from the thread-local CSPRNG, hex encoded,
/// so always 16 lower-case hex characters. A predictable nonce would let a
/// captured request be replayed within its ten-minute window.
pub fn new_nonce() -> String {
    let bytes: [u8; 8] = rand::random();
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer() {
        let secret = Secret::new("0123456789abcdef0123456789abcdef");
        assert_eq!(
            signature(1234567890, "fedcba9876543210", &secret, 1700000000),
            "1b6c68851e55d855894f16c527f97093"
        );
    }

    #[test]
    fn every_input_changes_the_signature() {
        let secret = Secret::new("0123456789abcdef0123456789abcdef");
        let base = signature(1234567890, "fedcba9876543210", &secret, 1700000000);
        let variants = [
            signature(1234567891, "fedcba9876543210", &secret, 1700000000),
            signature(1234567890, "fedcba9876543211", &secret, 1700000000),
            signature(1234567890, "fedcba9876543210", &Secret::new("x"), 1700000000),
            signature(1234567890, "fedcba9876543210", &secret, 1700000001),
        ];
        for v in variants {
            assert_ne!(v, base);
        }
    }

    #[test]
    fn nonce_is_16_lower_hex_and_fresh() {
        let a = new_nonce();
        let b = new_nonce();
        for n in [&a, &b] {
            assert_eq!(n.len(), 16, "{n}");
            assert!(n.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')), "{n}");
        }
        assert_ne!(a, b, "two nonces from a CSPRNG collide with probability 2^-64");
    }
}
