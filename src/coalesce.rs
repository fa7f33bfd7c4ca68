//! Pure coalescing state: pending users grouped per (app, room, reason), deduplicated, and the decision of which
//! group to cut into the next call.
//!
//! No clock, channel or I/O here: every method takes `now`, so the policy is
//! tested by table. [`driver`] is the thin async loop around it.
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
pub const DEFAULT_LINGER: Duration = Duration::ZERO;
/// Default pause required while input is dense: long enough to ride out a
/// stall in a streaming backlog, short against any group's wait.
pub const DEFAULT_DENSE_LINGER: Duration = Duration::from_millis(20);
/// Input whose last gap was shorter than this is dense (a backlog streaming
/// in); a lone kick every few milliseconds or slower is not.
pub const DEFAULT_DENSE_GAP: Duration = Duration::from_millis(10);
/// Default bound on how long a group's oldest user waits while fuller groups
/// are preferred. Long enough for full calls under a 50/s backlog, short
/// enough that a delivery is never held near the broker's consumer timeout.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(20);

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
pub struct Input {
    /// When input last arrived; `None` once input has ended (shutdown) or
    /// before any arrived.
    pub last: Option<Instant>,
    /// The gap before that arrival was under [`DEFAULT_DENSE_GAP`]: a backlog
    /// is streaming in.
    pub dense: bool,
}

/// Why no group is worth the AppId's next token now (see [`Coalescer::next_with_reason`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
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
pub struct GroupId(u64);

impl GroupId {
    /// A group id for other modules' tests.
    #[cfg(test)]
    pub(crate) fn for_tests(n: u64) -> Self {
        Self(n)
    }
}

/// The coalescing key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupKey {
    /// AppId.
    pub app_id: u32,
    /// Room.
    pub room_id: Arc<str>,
    /// CustomReason; users with different reasons never share a call.
    pub reason: Option<Arc<str>>,
}

/// One user of a call and everyone waiting on it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkUser<W> {
    /// The user id.
    pub user_id: Arc<str>,
    /// Every delivery that asked for this user (deduplicated into one call).
    pub waiters: Vec<W>,
}

/// A call's worth of users cut from one group.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk<W> {
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
pub struct Coalescer<W> {
    apps: HashMap<u32, AppGroups<W>>,
    policy: Policy,
    next_id: u64,
    users: usize,
}

impl<W: Clone> Coalescer<W> {
    /// An empty coalescer.
    pub fn new(policy: Policy) -> Self {
        Self {
            apps: HashMap::new(),
            policy,
            next_id: 0,
            users: 0,
        }
    }

    /// Adds a delivery's users. A user already pending in the same group gets
    /// one more waiter instead of a second place in a call.
    pub fn add(&mut self, key: GroupKey, users: impl IntoIterator<Item = Arc<str>>, waiter: W, now: Instant) {
        let app = self
            .apps
            .entry(key.app_id)
            .or_insert_with(|| AppGroups::new(crate::ratelimit::MAX_USERS_PER_CALL));
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
    pub fn next_with_reason(&self, app_id: u32, now: Instant, input: Input) -> Result<(GroupId, Reason), Next> {
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
    pub fn overdue(&self, app_id: u32, now: Instant, age: Duration) -> Option<GroupId> {
        let app = self.apps.get(&app_id)?;
        let &(oldest, id) = app.by_age.first()?;
        (oldest + age <= now).then_some(id)
    }

    /// Cuts up to the AppId's chunk size of users, oldest first, from a group.
    pub fn take(&mut self, app_id: u32, id: GroupId) -> Option<Chunk<W>> {
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
    pub fn remove_expired(&mut self, app_id: u32, id: GroupId, expired: impl Fn(&W) -> bool) -> Option<Chunk<W>> {
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
    pub fn set_chunk_size(&mut self, app_id: u32, chunk_size: usize) {
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
    pub fn app_users(&self, app_id: u32) -> usize {
        self.apps.get(&app_id).map_or(0, |a| a.users)
    }

    /// AppIds that have pending users.
    pub fn apps(&self) -> impl Iterator<Item = u32> + '_ {
        self.apps.iter().filter(|(_, a)| a.users > 0).map(|(id, _)| *id)
    }

    /// Pending users, all AppIds.
    pub fn pending_users(&self) -> usize {
        self.users
    }

    /// Pending groups, all AppIds.
    pub fn pending_groups(&self) -> usize {
        self.apps.values().map(|a| a.groups.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(room: &str) -> GroupKey {
        GroupKey {
            app_id: 1,
            room_id: room.into(),
            reason: None,
        }
    }
    fn users(ids: &[&str]) -> Vec<Arc<str>> {
        ids.iter().map(|u| Arc::from(*u)).collect()
    }
    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }
    fn policy() -> Policy {
        Policy {
            linger: ms(5),
            dense_linger: ms(20),
            max_wait: ms(1000),
        }
    }

    #[test]
    fn decision_table() {
        let t0 = Instant::now();
        struct Case {
            name: &'static str,
            setup: Vec<(&'static str, Vec<&'static str>, u64)>,
            now: u64,
            /// Negative: the same instant, but the input is dense.
            last_input: Option<i64>,
            expect: Result<(&'static str, Reason), Option<u64>>,
        }
        let cases = vec![
            Case {
                name: "empty",
                setup: vec![],
                now: 0,
                last_input: None,
                expect: Err(None),
            },
            Case {
                name: "lone user, input idle",
                setup: vec![("r", vec!["a"], 0)],
                now: 0,
                last_input: None,
                expect: Ok(("r", Reason::Largest)),
            },
            Case {
                name: "lone user, input flowing",
                setup: vec![("r", vec!["a"], 0)],
                now: 1,
                last_input: Some(0),
                expect: Err(Some(5)),
            },
            Case {
                name: "lone user after linger",
                setup: vec![("r", vec!["a"], 0)],
                now: 5,
                last_input: Some(0),
                expect: Ok(("r", Reason::Largest)),
            },
            Case {
                name: "full group goes at once",
                setup: vec![("p", vec!["x"], 0), ("r", vec!["a", "b", "c", "d", "e"], 1)],
                now: 1,
                last_input: Some(1),
                expect: Ok(("r", Reason::Full)),
            },
            Case {
                name: "oldest full group first",
                setup: vec![
                    ("r", vec!["a", "b", "c", "d", "e"], 2),
                    ("s", vec!["a", "b", "c", "d", "e"], 1),
                ],
                now: 3,
                last_input: Some(3),
                expect: Ok(("s", Reason::Full)),
            },
            Case {
                name: "largest partial when idle",
                setup: vec![("p", vec!["x"], 0), ("r", vec!["a", "b", "c"], 1)],
                now: 50,
                last_input: Some(1),
                expect: Ok(("r", Reason::Largest)),
            },
            Case {
                name: "overdue beats full",
                setup: vec![("p", vec!["x"], 0), ("r", vec!["a", "b", "c", "d", "e"], 900)],
                now: 1000,
                last_input: Some(999),
                expect: Ok(("p", Reason::Overdue)),
            },
            Case {
                name: "dense input waits the longer linger",
                setup: vec![("r", vec!["a"], 0)],
                now: 10,
                last_input: Some(-5),
                expect: Err(Some(25)),
            },
            Case {
                name: "dense input, long pause",
                setup: vec![("r", vec!["a"], 0)],
                now: 25,
                last_input: Some(-5),
                expect: Ok(("r", Reason::Largest)),
            },
            Case {
                name: "wait until overdue if sooner than linger",
                setup: vec![("p", vec!["x"], 0)],
                now: 998,
                last_input: Some(997),
                expect: Err(Some(1000)),
            },
        ];
        for case in cases {
            let mut c = Coalescer::new(policy());
            let mut ids = HashMap::new();
            for (room, us, at) in &case.setup {
                c.add(key(room), users(us), 0u32, t0 + ms(*at));
                ids.insert(*room, c.apps[&1].ids[&key(room)]);
            }
            let input = Input {
                last: case.last_input.map(|t| t0 + ms(t.unsigned_abs())),
                dense: case.last_input.is_some_and(|t| t < 0),
            };
            let got = c.next_with_reason(1, t0 + ms(case.now), input);
            let want = match case.expect {
                Ok((room, why)) => Ok((ids[room], why)),
                Err(None) => Err(Next::Idle),
                Err(Some(at)) => Err(Next::WaitUntil(t0 + ms(at))),
            };
            assert_eq!(got, want, "{}", case.name);
        }
    }

    #[test]
    fn dedupes_within_a_group_and_keeps_every_waiter() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(policy());
        c.add(key("r"), users(&["a", "b"]), 1u32, t0);
        c.add(key("r"), users(&["b", "c"]), 2u32, t0);
        c.add(key("s"), users(&["b"]), 3u32, t0);
        assert_eq!(c.pending_users(), 4);
        assert_eq!(c.pending_groups(), 2);
        let Ok((id, _)) = c.next_with_reason(1, t0 + ms(10), Input::default()) else {
            panic!()
        };
        let chunk = c.take(1, id).unwrap();
        assert_eq!(chunk.key.room_id.as_ref(), "r");
        let got: Vec<(&str, Vec<u32>)> = chunk
            .users
            .iter()
            .map(|u| (u.user_id.as_ref(), u.waiters.clone()))
            .collect();
        assert_eq!(got, vec![("a", vec![1]), ("b", vec![1, 2]), ("c", vec![2])]);
        assert_eq!(c.pending_users(), 1);
    }

    #[test]
    fn reasons_and_apps_never_share_a_call() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(policy());
        let spam = GroupKey {
            reason: Some("spam".into()),
            ..key("r")
        };
        let other_app = GroupKey { app_id: 2, ..key("r") };
        c.add(key("r"), users(&["a"]), 0u32, t0);
        c.add(spam, users(&["b"]), 0u32, t0);
        c.add(other_app, users(&["c"]), 0u32, t0);
        assert_eq!(c.pending_groups(), 3);
        let mut apps: Vec<u32> = c.apps().collect();
        apps.sort();
        assert_eq!(apps, vec![1, 2]);
    }

    #[test]
    fn take_cuts_chunk_size_oldest_first_and_reindexes() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(policy());
        let seven: Vec<String> = (0..7).map(|i| format!("u{i}")).collect();
        c.add(key("r"), seven.iter().map(|s| Arc::from(s.as_str())), 0u32, t0);
        let Ok((id, _)) = c.next_with_reason(
            1,
            t0,
            Input {
                last: Some(t0),
                dense: false,
            },
        ) else {
            panic!("a full group goes at once")
        };
        let first = c.take(1, id).unwrap();
        assert_eq!(first.users.len(), 5);
        assert_eq!(first.users[0].user_id.as_ref(), "u0");
        assert!(
            matches!(
                c.next_with_reason(
                    1,
                    t0,
                    Input {
                        last: Some(t0),
                        dense: false
                    }
                ),
                Err(Next::WaitUntil(_))
            ),
            "two left: not full"
        );
        c.set_chunk_size(1, 2);
        let Ok((id, _)) = c.next_with_reason(
            1,
            t0,
            Input {
                last: Some(t0),
                dense: false,
            },
        ) else {
            panic!("full at the new size")
        };
        assert_eq!(c.take(1, id).unwrap().users.len(), 2);
        assert_eq!(c.pending_users(), 0);
        assert_eq!(c.next_with_reason(1, t0, Input::default()), Err(Next::Idle));
    }

    #[test]
    fn overdue_names_groups_past_an_age() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(policy());
        c.add(key("r"), users(&["a"]), 0u32, t0);
        assert_eq!(c.overdue(1, t0 + ms(10), ms(20)), None);
        assert!(c.overdue(1, t0 + ms(20), ms(20)).is_some());
    }

    /// The sweep shape from the worker issue, at the pure level: 1,000 rooms x
    /// 20 users, shuffled one-user messages with 10% duplicates, a window of
    /// pending messages like prefetch, and a token whenever the policy asks.
    #[test]
    fn shuffled_sweep_needs_close_to_the_minimum_calls() {
        use rand::seq::{IndexedRandom, SliceRandom};
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut msgs: Vec<(usize, usize)> = (0..1000).flat_map(|r| (0..20).map(move |u| (r, u))).collect();
        let dups: Vec<(usize, usize)> = msgs.choose_multiple(&mut rng, 2000).copied().collect();
        msgs.extend(dups);
        msgs.shuffle(&mut rng);
        let names: Vec<String> = (0..1000).map(|r| format!("room{r}")).collect();
        // The worker's default prefetch: with a smaller window, duplicates of
        // users already sent arrive too late to fold (10,000 gives 1.10 x).
        let prefetch = 20_000;
        let mut c = Coalescer::new(Policy::default());
        let mut it = msgs.into_iter();
        let mut in_flight = 0usize;
        let mut calls = 0usize;
        let t = Instant::now();
        loop {
            // Input fills the prefetch window; each call frees its users' messages.
            while in_flight < prefetch {
                let Some((r, u)) = it.next() else { break };
                c.add(key(&names[r]), [Arc::from(format!("u{u}").as_str())], 0u32, t);
                in_flight += 1;
            }
            // The window is full or the input ended: input is idle.
            match c.next_with_reason(1, t, Input::default()) {
                Ok((id, _)) => {
                    let chunk = c.take(1, id).unwrap();
                    in_flight -= chunk.users.iter().map(|u| u.waiters.len()).sum::<usize>();
                    calls += 1;
                }
                Err(Next::Idle) => break,
                Err(Next::WaitUntil(_)) => unreachable!("input is idle"),
            }
        }
        let minimum = 1000 * 4;
        assert!(
            calls as f64 <= minimum as f64 * 1.05,
            "{calls} calls, minimum {minimum}"
        );
    }
    /// Expired users leave the next call; those behind them move up and are
    /// judged too; a user with one waiter still in time stays.
    #[test]
    fn expired_users_leave_the_next_call() {
        let t0 = Instant::now();
        let mut c: Coalescer<u32> = Coalescer::new(policy());
        // Waiter 9 is expired, every other is not.
        c.add(key("r"), users(&["a", "b", "c"]), 9, t0);
        c.add(key("r"), users(&["d", "e", "f", "g"]), 1, t0);
        c.add(key("r"), users(&["a"]), 2, t0); // a has a waiter in time
        c.add(key("r"), users(&["h"]), 9, t0);
        let (id, _) = c.next_with_reason(1, t0, Input::default()).unwrap();
        let gone = c.remove_expired(1, id, |w| *w == 9).unwrap();
        let names: Vec<&str> = gone.users.iter().map(|u| &*u.user_id).collect();
        assert_eq!(names, ["b", "c"], "a stays for waiter 2; h is not in the next call");
        assert_eq!(c.pending_users(), 6);
        let call = c.take(1, id).unwrap();
        let names: Vec<&str> = call.users.iter().map(|u| &*u.user_id).collect();
        assert_eq!(names, ["a", "d", "e", "f", "g"]);
        // h is now at the front: judged on the next call.
        assert!(c.remove_expired(1, id, |w| *w == 9).is_some());
        assert_eq!(c.pending_users(), 0);
        assert!(c.take(1, id).is_none(), "the emptied group is gone");
        c.add(key("s"), users(&["x"]), 1, t0);
        let (id, _) = c.next_with_reason(1, t0, Input::default()).unwrap();
        assert!(
            c.remove_expired(1, id, |w| *w == 9).is_none(),
            "nothing expired: nothing removed"
        );
    }
}
