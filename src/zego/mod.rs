//! The ZEGOCLOUD KickoutUser client side: request signing, the HTTP client (one per AppId in `clients.rs`)
//! and the return-code classifier.

pub mod client;
pub mod clients;
pub mod codes;
pub mod sign;

pub use client::{
    install_crypto_provider, ApiReply, CallResult, ClientBuildError, ClientConfig, TransportError, ZegoClient,
};
pub use codes::{classify, classify_code, describe, Disposition, RetryKind};
pub use sign::{new_nonce, signature};
