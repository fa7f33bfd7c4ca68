//! Who may use kickq's HTTP doors (the intake and the console): the token files (`tokens.rs`: named tokens,
//! their strength, re-reading, constant-time checks) and the throttle of failed authentications per client
//! address (`throttle.rs`). Both front ends sit over this; neither imports the other.

pub(crate) mod throttle;
pub(crate) mod tokens;

pub(crate) use tokens::TokenError;
