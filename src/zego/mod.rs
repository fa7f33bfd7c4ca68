//! The ZEGOCLOUD KickoutUser client side: request signing, the HTTP client (one per AppId in `clients.rs`)
//! and the return-code classifier.

/// Most users one KickoutUser call may carry: the API's documented maximum
/// (`UserId[]` holds 1 to 5 ids).
pub const MAX_USERS_PER_CALL: usize = 5;

pub mod client;
pub mod clients;
pub mod codes;
pub mod sign;

pub use client::{
    install_crypto_provider, ApiReply, CallResult, ClientBuildError, ClientConfig, TransportError, ZegoClient,
};
pub use codes::{classify, classify_code, describe, Disposition, RetryKind};
pub use sign::{new_nonce, signature};
