//! Pure coalescing state: pending users grouped per (app, room, reason), deduplicated, and the decision of which
//! group to cut into the next call.
//!
//! No clock, channel or I/O here: every method takes `now`, so the policy is
//! tested by table. The coalescer stage (`pipeline/coalescer.rs`) is the thin async loop around it.
//!
//! The policy, in order (see [`Coalescer::next`]):
//! 1. a group whose oldest user has waited `max_wait` goes first (bounded wait);
//! 2. else the oldest group holding a full call (`chunk_size` users);
//! 3. else, once input has paused for `linger`, the largest group: under light
//!    load a lone kick leaves within `linger`, and when prefetch is exhausted
//!    the token buys as many users as it can. While input is dense (a backlog
//!    streaming in) the pause must last `dense_linger`, so a scheduling hiccup
//!    in the stream is not taken for the end of it;
//! 4. else wait until one of those becomes true.
//!
//! The caller asks only when it holds a token, so coalescing goes on for as
//! long as tokens are short: under backlog calls fill to five.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Default pause in sparse input after which a partial group is sent: none.
/// Sparse input is a lone kick, and waiting for company that is not coming
/// only adds latency (the bench measured 2 ms of linger as +3 ms at the
/// median); a backlog is dense input and waits `DEFAULT_DENSE_LINGER`.
pub(crate) const DEFAULT_LINGER: Duration = Duration::ZERO;
/// Default pause required while input is dense: long enough to ride out a
/// stall in a streaming backlog, short against any group's wait.
pub(crate) const DEFAULT_DENSE_LINGER: Duration = Duration::from_millis(20);
/// Input whose last gap was shorter than this is dense (a backlog streaming
/// in); a lone kick every few milliseconds or slower is not.
pub(crate) const DEFAULT_DENSE_GAP: Duration = Duration::from_millis(10);
/// Default bound on how long a group's oldest user waits while fuller groups
/// are preferred. Long enough for full calls under a 50/s backlog, short
/// enough that a delivery is never held near the broker's consumer timeout.
pub(crate) const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(20);

/// Timing policy of the coalescer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Input pause after which partial groups may go.
    pub linger: Duration,
    /// The same pause while input is dense.
    pub dense_linger: Duration,
    /// Longest a group's oldest user waits before it goes first.
    pub max_wait: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            linger: DEFAULT_LINGER,
            dense_linger: DEFAULT_DENSE_LINGER,
            max_wait: DEFAULT_MAX_WAIT,
        }
    }
}

/// What the policy knows of the input stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Input {
    /// When input last arrived; `None` once input has ended (shutdown) or
    /// before any arrived.
    pub last: Option<Instant>,
    /// The gap before that arrival was under [`DEFAULT_DENSE_GAP`]: a backlog
    /// is streaming in.
    pub dense: bool,
}

/// Why no group is worth the AppId's next token now (see [`Coalescer::next_with_reason`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Nothing worth a token before this instant (or new input).
    WaitUntil(Instant),
    /// Nothing pending for this AppId.
    Idle,
}

/// Why a group was chosen, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Waited `max_wait`.
    Overdue,
    /// Holds a full call.
    Full,
    /// Input paused; the largest group.
    Largest,
}

impl Reason {
    /// Its name as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Full => "full",
            Reason::Largest => "largest",
            Reason::Overdue => "overdue",
        }
    }
}

/// Identifies a group inside one [`Coalescer`]; never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct GroupId(u64);

impl GroupId {
    /// A group id for other modules' tests.
    #[cfg(test)]
    pub(crate) fn for_tests(n: u64) -> Self {
        Self(n)
    }
}

/// The coalescing key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct GroupKey {
    /// AppId.
    pub app_id: u32,
    /// Room.
    pub room_id: Arc<str>,
    /// CustomReason; users with different reasons never share a call.
    pub reason: Option<Arc<str>>,
}

/// One user of a call and everyone waiting on it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ChunkUser<W> {
    /// The user id.
    pub user_id: Arc<str>,
    /// Every delivery that asked for this user (deduplicated into one call).
    pub waiters: Vec<W>,
}

/// A call's worth of users cut from one group.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Chunk<W> {
    /// The group's key.
    pub key: GroupKey,
    /// 1..=chunk_size distinct users, oldest first.
    pub users: Vec<ChunkUser<W>>,
}

struct Group<W> {
    key: GroupKey,
    /// Users in arrival order, with arrival time.
    order: VecDeque<(Arc<str>, Instant)>,
    /// Waiters per pending user. Invariant: same key set as `order`.
    waiters: HashMap<Arc<str>, Vec<W>>,
}

impl<W> Group<W> {
    fn oldest(&self) -> Instant {
        self.order.front().expect("an empty group is removed at once").1
    }

    /// A user taken out of `order`, with its waiters taken out too.
    fn chunk_user(&mut self, user_id: Arc<str>) -> ChunkUser<W> {
        let waiters = self
            .waiters
            .remove(&user_id)
            .expect("order and waiters hold the same users");
        ChunkUser { user_id, waiters }
    }
}

/// Per-AppId groups and the indexes the policy reads.
///
/// Invariant: every group is non-empty and appears exactly once in `by_age`
/// (keyed by its oldest user's arrival) and in `by_size`, and in `full` iff it
/// holds at least `chunk_size` users.
struct AppGroups<W> {
    groups: HashMap<GroupId, Group<W>>,
    ids: HashMap<GroupKey, GroupId>,
    by_age: BTreeSet<(Instant, GroupId)>,
    by_size: BTreeSet<(Reverse<usize>, Instant, GroupId)>,
    full: BTreeSet<(Instant, GroupId)>,
    chunk_size: usize,
    users: usize,
}

impl<W> AppGroups<W> {
    fn new(chunk_size: usize) -> Self {
        Self {
            groups: HashMap::new(),
            ids: HashMap::new(),
            by_age: BTreeSet::new(),
            by_size: BTreeSet::new(),
            full: BTreeSet::new(),
            chunk_size,
            users: 0,
        }
    }

    fn unindex(&mut self, id: GroupId) {
        let g = &self.groups[&id];
        let (age, size) = (g.oldest(), g.order.len());
        self.by_age.remove(&(age, id));
        self.by_size.remove(&(Reverse(size), age, id));
        self.full.remove(&(age, id));
    }

    /// After `removed` users left group `id` (unindexed): drops the group if
    /// it is empty, else indexes it again. Returns its key.
    fn after_removal(&mut self, id: GroupId, removed: usize) -> GroupKey {
        let group = &self.groups[&id];
        let key = group.key.clone();
        if group.order.is_empty() {
            self.groups.remove(&id);
            self.ids.remove(&key);
        } else {
            self.index(id);
        }
        self.users -= removed;
        key
    }

    fn index(&mut self, id: GroupId) {
        let g = &self.groups[&id];
        let (age, size) = (g.oldest(), g.order.len());
        self.by_age.insert((age, id));
        self.by_size.insert((Reverse(size), age, id));
        if size >= self.chunk_size {
            self.full.insert((age, id));
        }
    }
}

/// The pending users of every AppId. `W` is what waits on a user: the
/// worker uses a shared handle to the delivery, tests use plain numbers.
pub(crate) struct Coalescer<W> {
    apps: HashMap<u32, AppGroups<W>>,
    policy: Policy,
    next_id: u64,
    users: usize,
}

impl<W: Clone> Coalescer<W> {
    /// An empty coalescer.
    pub(crate) fn new(policy: Policy) -> Self {
        Self {
            apps: HashMap::new(),
            policy,
            next_id: 0,
            users: 0,
        }
    }

    /// Adds a delivery's users. A user already pending in the same group gets
    /// one more waiter instead of a second place in a call.
    pub(crate) fn add(&mut self, key: GroupKey, users: impl IntoIterator<Item = Arc<str>>, waiter: W, now: Instant) {
        let app = self
            .apps
            .entry(key.app_id)
            .or_insert_with(|| AppGroups::new(crate::zego::MAX_USERS_PER_CALL));
        let id = match app.ids.get(&key) {
            Some(id) => {
                let id = *id;
                app.unindex(id);
                id
            }
            None => {
                let id = GroupId(self.next_id);
                self.next_id += 1;
                app.ids.insert(key.clone(), id);
                app.groups.insert(
                    id,
                    Group {
                        key,
                        order: VecDeque::new(),
                        waiters: HashMap::new(),
                    },
                );
                id
            }
        };
        let group = app.groups.get_mut(&id).expect("group inserted or found just above");
        let mut added = 0;
        for user in users {
            match group.waiters.get_mut(&user) {
                Some(ws) => ws.push(waiter.clone()),
                None => {
                    group.waiters.insert(user.clone(), vec![waiter.clone()]);
                    group.order.push_back((user, now));
                    added += 1;
                }
            }
        }
        app.users += added;
        self.users += added;
        if group.order.is_empty() {
            // Only possible when `users` was empty: drop the shell again.
            let key = group.key.clone();
            app.groups.remove(&id);
            app.ids.remove(&key);
        } else {
            app.index(id);
        }
    }

    /// The policy's choice for the AppId's next token (see the module docs):
    /// the group to cut a call from and why, or why none.
    pub(crate) fn next_with_reason(&self, app_id: u32, now: Instant, input: Input) -> Result<(GroupId, Reason), Next> {
        let Some(app) = self.apps.get(&app_id) else {
            return Err(Next::Idle);
        };
        let Some(&(oldest, oldest_id)) = app.by_age.first() else {
            return Err(Next::Idle);
        };
        let overdue_at = oldest + self.policy.max_wait;
        if overdue_at <= now {
            return Ok((oldest_id, Reason::Overdue));
        }
        if let Some(&(_, id)) = app.full.first() {
            return Ok((id, Reason::Full));
        }
        let linger = if input.dense {
            self.policy.dense_linger
        } else {
            self.policy.linger
        };
        let idle_at = input.last.map_or(now, |t| t + linger);
        if idle_at <= now {
            let &(_, _, id) = app.by_size.first().expect("by_size indexes the same groups as by_age");
            return Ok((id, Reason::Largest));
        }
        Err(Next::WaitUntil(idle_at.min(overdue_at)))
    }

    /// Groups older than `age`, oldest first: what a halted AppId must hand
    /// back to the broker rather than hold past the consumer timeout.
    pub(crate) fn overdue(&self, app_id: u32, now: Instant, age: Duration) -> Option<GroupId> {
        let app = self.apps.get(&app_id)?;
        let &(oldest, id) = app.by_age.first()?;
        (oldest + age <= now).then_some(id)
    }

    /// Cuts up to the AppId's chunk size of users, oldest first, from a group.
    pub(crate) fn take(&mut self, app_id: u32, id: GroupId) -> Option<Chunk<W>> {
        let app = self.apps.get_mut(&app_id)?;
        if !app.groups.contains_key(&id) {
            return None;
        }
        app.unindex(id);
        let max = app.chunk_size;
        let group = app.groups.get_mut(&id).expect("presence checked above");
        let n = max.min(group.order.len());
        let order: Vec<Arc<str>> = group.order.drain(..n).map(|(user_id, _)| user_id).collect();
        let users: Vec<ChunkUser<W>> = order.into_iter().map(|u| group.chunk_user(u)).collect();
        let key = app.after_removal(id, users.len());
        self.users -= users.len();
        Some(Chunk { key, users })
    }

    /// Takes out of the group's next call (its first `chunk_size` users)
    /// every user whose waiters all say they are `expired`, and returns them
    /// as one chunk; `None` when there are none. Users behind them move up
    /// and are judged in turn, so the next [`Coalescer::take`] cuts a call of
    /// live users only. Costs the call's size plus the users removed.
    pub(crate) fn remove_expired(
        &mut self,
        app_id: u32,
        id: GroupId,
        expired: impl Fn(&W) -> bool,
    ) -> Option<Chunk<W>> {
        let app = self.apps.get_mut(&app_id)?;
        let group = app.groups.get(&id)?;
        let dead = |g: &Group<W>, u: &Arc<str>| g.waiters.get(u).is_some_and(|ws| ws.iter().all(&expired));
        let window = app.chunk_size.min(group.order.len());
        if !group.order.iter().take(window).any(|(u, _)| dead(group, u)) {
            return None;
        }
        app.unindex(id);
        let chunk_size = app.chunk_size;
        let group = app.groups.get_mut(&id).expect("presence checked above");
        let mut out = Vec::new();
        let mut i = 0;
        while i < chunk_size.min(group.order.len()) {
            if dead(group, &group.order[i].0) {
                let (user_id, _) = group.order.remove(i).expect("index in range");
                out.push(group.chunk_user(user_id));
            } else {
                i += 1;
            }
        }
        let key = app.after_removal(id, out.len());
        self.users -= out.len();
        Some(Chunk { key, users: out })
    }

    /// Sets the AppId's users per call (after a 50011) and re-indexes.
    pub(crate) fn set_chunk_size(&mut self, app_id: u32, chunk_size: usize) {
        let app = self.apps.entry(app_id).or_insert_with(|| AppGroups::new(chunk_size));
        if app.chunk_size == chunk_size {
            return;
        }
        app.chunk_size = chunk_size.max(1);
        let ids: Vec<GroupId> = app.groups.keys().copied().collect();
        for id in ids {
            app.unindex(id);
            app.index(id);
        }
    }

    /// Pending users of one AppId.
    pub(crate) fn app_users(&self, app_id: u32) -> usize {
        self.apps.get(&app_id).map_or(0, |a| a.users)
    }

    /// AppIds that have pending users.
    pub(crate) fn apps(&self) -> impl Iterator<Item = u32> + '_ {
        self.apps.iter().filter(|(_, a)| a.users > 0).map(|(id, _)| *id)
    }

    /// Pending users, all AppIds.
    pub(crate) fn pending_users(&self) -> usize {
        self.users
    }

    /// Pending groups, all AppIds.
    pub(crate) fn pending_groups(&self) -> usize {
        self.apps.values().map(|a| a.groups.len()).sum()
    }
}

#[cfg(test)]
mod tests;
