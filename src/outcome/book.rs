//! Per-delivery bookkeeping: which of a delivery's users are still unresolved. A delivery is acked only when
//! this set is empty.

use std::collections::HashSet;
use std::sync::Arc;

/// The unresolved users of one delivery, with whatever finishes it (`D`: the
/// delivery handle in the worker, a plain value in tests).
///
/// Invariant: `unresolved` only ever shrinks, and holds only users of the job.
#[derive(Debug)]
pub(crate) struct Book<D> {
    handle: D,
    unresolved: HashSet<Arc<str>>,
}

impl<D> Book<D> {
    /// A book for `users`, minus those already done (`skipped`).
    pub(crate) fn new<'a>(handle: D, users: impl IntoIterator<Item = &'a String>, skipped: &[String]) -> Self {
        let unresolved = users
            .into_iter()
            .filter(|u| !skipped.contains(u))
            .map(|u| Arc::from(u.as_str()))
            .collect();
        Self { handle, unresolved }
    }

    /// Marks a user resolved; false if it was not pending (a duplicate
    /// result, or a user of another delivery).
    pub(crate) fn resolve(&mut self, user: &str) -> bool {
        self.unresolved.remove(user)
    }

    /// Whether `user` still awaits a verdict.
    pub(crate) fn is_pending(&self, user: &str) -> bool {
        self.unresolved.contains(user)
    }

    /// True when every user is resolved.
    pub(crate) fn is_done(&self) -> bool {
        self.unresolved.is_empty()
    }

    /// Gives up the handle (to ack it).
    pub(crate) fn into_handle(self) -> D {
        self.handle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_each_user_once_and_ignores_strangers() {
        let users: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let mut b = Book::new(7u8, &users, &["b".to_string()]);
        assert!(b.is_pending("a") && b.is_pending("c"));
        assert!(!b.is_pending("b"), "skipped users start resolved");
        assert!(b.resolve("a"));
        assert!(!b.resolve("a"), "second verdict for the same user is ignored");
        assert!(!b.resolve("zed"));
        assert!(!b.is_done());
        assert!(b.resolve("c"));
        assert!(b.is_done());
        assert_eq!(b.into_handle(), 7);
    }

    #[test]
    fn all_skipped_is_done_at_once() {
        let users = vec!["a".to_string()];
        assert!(Book::new((), &users, &users).is_done());
    }
}
