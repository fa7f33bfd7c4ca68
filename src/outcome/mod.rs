//! The pure decisions the router applies to results: per user, what happens next ([`plan`]); per delivery,
//! which users are still unresolved ([`book`]). No I/O, no async.

pub mod book;
pub mod plan;
