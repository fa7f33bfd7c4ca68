//! Call slots per app (`KICKQ_MAX_IN_FLIGHT` for each): one app's slow or hung calls hold only its own slots,
//! never another app's.
//!
//! The coalescer owns the semaphores and hands a [`Slot`] to each call; the
//! slot travels with the chunk and frees itself (and wakes the coalescer)
//! when the call's outcome has reached the router.

use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// One call's slot; dropping it frees the slot and wakes the coalescer.
#[derive(Debug)]
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    freed: Arc<Notify>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.freed.notify_one();
    }
}

/// Every app's slots. Owned by the coalescer.
#[derive(Debug)]
pub(crate) struct Slots {
    per_app: usize,
    by_app: HashMap<u32, Arc<Semaphore>>,
    freed: Arc<Notify>,
}

impl Slots {
    /// `per_app` slots for each app (at least one).
    pub(crate) fn new(per_app: usize) -> Self {
        Self {
            per_app: per_app.max(1),
            by_app: HashMap::new(),
            freed: Arc::new(Notify::new()),
        }
    }

    /// A free slot of the app, if it has one.
    pub(crate) fn try_take(&mut self, app_id: u32) -> Option<Slot> {
        let per_app = self.per_app;
        let sem = self
            .by_app
            .entry(app_id)
            .or_insert_with(|| Arc::new(Semaphore::new(per_app)));
        let permit = sem.clone().try_acquire_owned().ok()?;
        Some(Slot {
            _permit: permit,
            freed: self.freed.clone(),
        })
    }

    /// Resolves when some slot has been freed since the last time this
    /// resolved (a slot freed while nobody waited is not lost).
    pub(crate) async fn freed(&self) {
        self.freed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_app_out_of_slots_leaves_the_others_theirs() {
        let mut slots = Slots::new(2);
        let a: Vec<Slot> = (0..2).map(|_| slots.try_take(1).unwrap()).collect();
        assert!(slots.try_take(1).is_none(), "app 1 has used its two");
        let b = slots.try_take(2);
        assert!(b.is_some(), "app 2 still has its own");
        drop(a);
        tokio::time::timeout(std::time::Duration::from_secs(1), slots.freed())
            .await
            .expect("a freed slot wakes the waiter");
        assert!(slots.try_take(1).is_some());
    }
}
