//! The pure decisions the router applies to results: per user, what happens next ([`plan`]); per delivery,
//! which users are still unresolved ([`book`]); per finished delivery, its outcome event ([`event`]). No I/O, no async.

pub(crate) mod book;
pub(crate) mod event;
pub(crate) mod plan;
