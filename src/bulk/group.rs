//! Grouping valid lines into messages: per (room, reason, AppId, job id, deadline), up to N users each, in the order of
//! each message's first line; deterministic job ids; and the "confirmed through line N" arithmetic of resumes.
//!
//! Messages are created in input order, so they are sorted by first line. A
//! run publishes them in that order and, once messages `0..k` are confirmed,
//! every line before message k's first line is confirmed. Grouping the same
//! input again yields the same messages, so `--resume-from L` skips exactly the
//! messages whose first line is before L: nothing is lost and nothing repeated.

use crate::job::KickRequest;
use std::collections::{HashMap, VecDeque};

/// One message to publish and the input lines it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    /// The line that opened it: its place in the publish order.
    pub first_line: u64,
    /// 0 unless one line's users were split over several messages: then the
    /// index among the messages opened by that line.
    pub part: u32,
    /// Every input line it holds users of, ascending.
    pub lines: Vec<u64>,
    /// The job; `job_id` is `None` unless the input gave one (see [`job_id`]).
    pub job: KickRequest,
}

/// What a message's users share: room, reason, AppId, job id and deadline
/// (users with different deadlines never share a message).
type Key = (
    String,
    Option<String>,
    Option<u32>,
    Option<String>,
    Option<chrono::DateTime<chrono::Utc>>,
);

/// Bytes of user ids, line numbers and group keys the grouper keeps before it
/// sends its oldest open message unfilled: about 1.4 M one-user lines of ids
/// like the bench's, which holds every open group of 1 M lines over 10,000
/// rooms (so grouping is as good as with no bound there) and keeps a run's
/// memory far below 200 MiB whatever the room count.
pub(crate) const MAX_BUFFERED_BYTES: usize = 96 << 20;
/// Open messages kept before the oldest is sent unfilled: ten times the
/// bench's 10,000 rooms, and about 60 MiB when every line is another room
/// (the slot, the map entry and their growth slack weigh more than the ids).
pub(crate) const MAX_OPEN_MESSAGES: usize = 100_000;
/// Accounted heap bytes of one user id besides its own bytes (`String` header and allocator slack).
const USER_OVERHEAD: usize = 48;
/// Accounted bytes of one open message besides its key's and users' bytes (its slot, its map entry, their slack).
const GROUP_OVERHEAD: usize = 512;

/// A message still taking users (or full, waiting for older ones to close).
#[derive(Debug)]
struct Open {
    message: Message,
    closed: bool,
    bytes: usize,
}

/// Builds messages from validated jobs fed in line order, keeping only the
/// open ones: a message leaves once it is full and every older one has left,
/// and when the open ones hold more than [`MAX_BUFFERED_BYTES`] or number more
/// than [`MAX_OPEN_MESSAGES`] the oldest is closed unfilled. Messages come out in publish order (ascending
/// `(first_line, part)`), and the same input always gives the same messages.
#[derive(Debug)]
pub(crate) struct Grouper {
    size: usize,
    max_bytes: usize,
    open: HashMap<Key, u64>,
    /// Messages by sequence number `base..`, oldest first.
    slots: VecDeque<Open>,
    base: u64,
    bytes: usize,
    ready: VecDeque<Message>,
    parts: (u64, u32),
    /// Whether user ids are kept (`false`: counted only, as empty strings, for a first pass).
    keep: bool,
}

impl Grouper {
    /// Messages of at most `size` users (at least 1), within [`MAX_BUFFERED_BYTES`].
    pub(crate) fn new(size: usize) -> Self {
        Self::bounded(size, MAX_BUFFERED_BYTES)
    }

    /// Messages of at most `size` users, the open ones holding at most about `max_bytes`.
    pub(crate) fn bounded(size: usize, max_bytes: usize) -> Self {
        Self {
            size: size.max(1),
            max_bytes,
            open: HashMap::new(),
            slots: VecDeque::new(),
            base: 0,
            bytes: 0,
            ready: VecDeque::new(),
            parts: (0, 0),
            keep: true,
        }
    }

    /// Like [`Grouper::new`], but the messages' user ids are empty strings:
    /// the same messages (the bounds count the real ids), for counting them
    /// at a fraction of the memory.
    pub(crate) fn counting(size: usize) -> Self {
        Self {
            keep: false,
            ..Self::new(size)
        }
    }

    /// Adds the users of the job on `line`. Lines must come in ascending order.
    pub(crate) fn push(&mut self, line: u64, job: KickRequest) {
        let key: Key = (job.room_id, job.reason, job.app_id, job.job_id, job.not_after);
        for user in job.user_ids {
            let seq = match self.open.get(&key) {
                Some(&seq) => seq,
                None => {
                    let part = if self.parts.0 == line { self.parts.1 + 1 } else { 0 };
                    self.parts = (line, part);
                    let bytes = GROUP_OVERHEAD
                        + 2 * (key.0.len()
                            + key.1.as_ref().map_or(0, String::len)
                            + key.3.as_ref().map_or(0, String::len));
                    self.bytes += bytes;
                    self.slots.push_back(Open {
                        message: Message {
                            first_line: line,
                            part,
                            lines: Vec::with_capacity(1),
                            job: KickRequest {
                                room_id: key.0.clone(),
                                user_ids: Vec::with_capacity(1),
                                reason: key.1.clone(),
                                app_id: key.2,
                                job_id: key.3.clone(),
                                not_after: key.4,
                            },
                        },
                        closed: false,
                        bytes,
                    });
                    let seq = self.base + self.slots.len() as u64 - 1;
                    self.open.insert(key.clone(), seq);
                    seq
                }
            };
            let slot = &mut self.slots[(seq - self.base) as usize];
            let m = &mut slot.message;
            let mut added = user.len() + USER_OVERHEAD;
            m.job.user_ids.push(if self.keep { user } else { String::new() });
            if m.lines.last() != Some(&line) {
                m.lines.push(line);
                added += 8;
            }
            slot.bytes += added;
            self.bytes += added;
            if m.job.user_ids.len() >= self.size {
                slot.closed = true;
                self.open.remove(&key);
            }
        }
        while self.bytes > self.max_bytes || self.open.len() > MAX_OPEN_MESSAGES {
            // The oldest message is open (closed ones at the front have left): close it unfilled.
            let Some(front) = self.slots.front_mut() else { break };
            front.closed = true;
            let j = &front.message.job;
            let key: Key = (
                j.room_id.clone(),
                j.reason.clone(),
                j.app_id,
                j.job_id.clone(),
                j.not_after,
            );
            self.open.remove(&key);
            self.release();
        }
        self.release();
    }

    /// Moves the closed messages at the front to the ready ones.
    fn release(&mut self) {
        while self.slots.front().is_some_and(|s| s.closed) {
            let s = self.slots.pop_front().expect("checked just above");
            self.base += 1;
            self.bytes -= s.bytes;
            self.ready.push_back(s.message);
        }
    }

    /// The next message ready to publish, in publish order.
    pub(crate) fn pop_ready(&mut self) -> Option<Message> {
        self.ready.pop_front()
    }

    /// Closes every open message (the input has ended): all are then ready.
    pub(crate) fn close_all(&mut self) {
        for s in &mut self.slots {
            s.closed = true;
        }
        self.open.clear();
        self.release();
    }

    /// Every message, in publish order (ascending `(first_line, part)`).
    pub(crate) fn finish(mut self) -> Vec<Message> {
        self.close_all();
        self.ready.into()
    }
}

/// The job id of a message without one of its own: `{prefix}:{g}`, where
/// `g` names the message's group (its room, reason and AppId) by a hash.
/// Every message of one group in one run shares the id, whatever the group
/// size: the job id is the worker's idempotency key (within its dedupe
/// window), so a resume of the run (with the ledger on) skips the users
/// already done, even from another `--resume-from`. The prefix names the
/// run (`crate::bulk::load::prefix_of`), so a new run kicks again.
pub(crate) fn job_id(prefix: &str, m: &Message) -> String {
    group_job_id(prefix, &m.job.room_id, m.job.reason.as_deref(), m.job.app_id)
}

/// [`job_id`] from the group's parts.
pub fn group_job_id(prefix: &str, room_id: &str, reason: Option<&str>, app_id: Option<u32>) -> String {
    use md5::{Digest, Md5};
    let mut h = Md5::new();
    h.update(room_id.as_bytes());
    h.update([0]);
    if let Some(r) = reason {
        h.update([1]);
        h.update(r.as_bytes());
    }
    h.update([0]);
    if let Some(a) = app_id {
        h.update(a.to_be_bytes());
    }
    let digest = h.finalize();
    format!("{prefix}:{}", hex::encode(&digest[..8]))
}

/// The job of a message as it is published: its job id derived with
/// [`job_id`] where the input gave none.
pub(crate) fn as_published(prefix: &str, m: &Message) -> KickRequest {
    let mut job = m.job.clone();
    if job.job_id.is_none() {
        job.job_id = Some(job_id(prefix, m));
    }
    job
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j(room: &str, users: &[&str], reason: Option<&str>) -> KickRequest {
        let mut k = KickRequest::new(room, users.iter().copied());
        k.reason = reason.map(String::from);
        k
    }

    /// A message's (first line, part, lines, room, users).
    type Shape = (u64, u32, Vec<u64>, String, Vec<String>);

    fn group(size: usize, input: Vec<(u64, KickRequest)>) -> Vec<Shape> {
        let mut g = Grouper::new(size);
        for (line, job) in input {
            g.push(line, job);
        }
        g.finish()
            .into_iter()
            .map(|m| (m.first_line, m.part, m.lines, m.job.room_id, m.job.user_ids))
            .collect()
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn groups_by_room_and_reason_up_to_size_in_first_line_order() {
        let got = group(
            2,
            vec![
                (1, j("a", &["u1"], None)),
                (2, j("b", &["u1"], None)),
                (3, j("a", &["u2"], None)),
                (4, j("a", &["u3"], None)),
                (5, j("a", &["u4"], Some("spam"))),
                (7, j("b", &["u2"], None)),
                (8, j("a", &["u5"], None)),
            ],
        );
        assert_eq!(
            got,
            vec![
                (1, 0, vec![1, 3], "a".into(), s(&["u1", "u2"])),
                (2, 0, vec![2, 7], "b".into(), s(&["u1", "u2"])),
                (4, 0, vec![4, 8], "a".into(), s(&["u3", "u5"])),
                (5, 0, vec![5], "a".into(), s(&["u4"])),
            ]
        );
    }

    #[test]
    fn a_full_buffer_closes_the_oldest_message_and_keeps_the_order() {
        let input = || {
            (1..=8u64)
                .map(|l| (l, j(if l % 2 == 0 { "b" } else { "a" }, &["u"], None)))
                .collect::<Vec<_>>()
        };
        // Unbounded: two messages; a bound of about two open messages' worth closes "a" early.
        let ungrouped = |max_bytes| {
            let mut g = Grouper::bounded(100, max_bytes);
            let mut out = Vec::new();
            for (line, job) in input() {
                g.push(line, job);
                while let Some(m) = g.pop_ready() {
                    out.push((m.first_line, m.job.user_ids.len()));
                }
            }
            out.extend(g.finish().iter().map(|m| (m.first_line, m.job.user_ids.len())));
            out
        };
        assert_eq!(ungrouped(usize::MAX), vec![(1, 4), (2, 4)]);
        let tight = 2 * (GROUP_OVERHEAD + 2) + 4 * (1 + USER_OVERHEAD + 8);
        let got = ungrouped(tight);
        assert!(got.len() > 2, "{got:?}");
        assert_eq!(got.iter().map(|m| m.1).sum::<usize>(), 8, "every user once");
        assert!(got.windows(2).all(|w| w[0].0 <= w[1].0), "publish order: {got:?}");
    }

    #[test]
    fn counting_makes_the_same_messages_without_the_ids() {
        let input: Vec<(u64, KickRequest)> = (1..=50u64)
            .map(|l| (l, j(&format!("r{}", l % 7), &["u1", "u22"], None)))
            .collect();
        let shape = |mut g: Grouper| {
            for (l, job) in input.clone() {
                g.push(l, job);
            }
            g.finish()
                .into_iter()
                .map(|m| (m.first_line, m.part, m.job.user_ids.len()))
                .collect::<Vec<_>>()
        };
        assert_eq!(shape(Grouper::counting(3)), shape(Grouper::new(3)));
        let mut g = Grouper::counting(3);
        g.push(1, j("a", &["u"], None));
        assert_eq!(g.finish()[0].job.user_ids, vec![String::new()]);
    }

    #[test]
    fn a_long_line_splits_into_parts() {
        let got = group(
            2,
            vec![
                (1, j("a", &["x"], None)),
                (2, j("a", &["u1", "u2", "u3", "u4"], None)),
                (3, j("a", &["y"], None)),
            ],
        );
        assert_eq!(
            got,
            vec![
                (1, 0, vec![1, 2], "a".into(), s(&["x", "u1"])),
                (2, 0, vec![2], "a".into(), s(&["u2", "u3"])),
                (2, 1, vec![2, 3], "a".into(), s(&["u4", "y"])),
            ]
        );
    }

    #[test]
    fn explicit_job_ids_and_app_ids_never_merge_with_others() {
        let mut with_id = j("a", &["u2"], None);
        with_id.job_id = Some("J".into());
        let mut with_app = j("a", &["u3"], None);
        with_app.app_id = Some(7);
        let mut g = Grouper::new(10);
        g.push(1, j("a", &["u1"], None));
        g.push(2, with_id);
        g.push(3, with_app);
        g.push(4, j("a", &["u4"], None));
        let m = g.finish();
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].job.user_ids, s(&["u1", "u4"]));
        assert_eq!(m[1].job.job_id.as_deref(), Some("J"));
        assert_eq!(m[2].job.app_id, Some(7));
    }

    #[test]
    fn users_with_different_deadlines_never_share_a_message() {
        let t = |s: &str| crate::job::parse_not_after(s).unwrap();
        let soon = j("a", &["u2"], None).with_not_after(t("2026-12-01T12:00:00Z"));
        let later = j("a", &["u3"], None).with_not_after(t("2026-12-02T12:00:00Z"));
        let mut g = Grouper::new(10);
        g.push(1, j("a", &["u1"], None));
        g.push(2, soon.clone());
        g.push(3, later);
        g.push(4, soon.with_users(vec!["u4".into()]));
        let m: Vec<_> = g
            .finish()
            .into_iter()
            .map(|m| (m.job.user_ids, m.job.not_after))
            .collect();
        assert_eq!(
            m,
            vec![
                (s(&["u1"]), None),
                (s(&["u2", "u4"]), Some(t("2026-12-01T12:00:00Z"))),
                (s(&["u3"]), Some(t("2026-12-02T12:00:00Z"))),
            ]
        );
    }

    #[test]
    fn job_ids_name_the_group_whatever_the_group_size() {
        let m = |first_line, part, room, reason| Message {
            first_line,
            part,
            lines: vec![first_line],
            job: j(room, &["u"], reason),
        };
        let a = job_id("bans.csv-0a1b2c3d", &m(17, 0, "a", None));
        assert!(
            a.starts_with("bans.csv-0a1b2c3d:") && a.len() == "bans.csv-0a1b2c3d:".len() + 16,
            "{a}"
        );
        assert_eq!(
            a,
            job_id("bans.csv-0a1b2c3d", &m(90, 2, "a", None)),
            "same group, same id"
        );
        assert_ne!(a, job_id("bans.csv-0a1b2c3d", &m(17, 0, "b", None)), "another room");
        assert_ne!(
            a,
            job_id("bans.csv-0a1b2c3d", &m(17, 0, "a", Some("spam"))),
            "another reason"
        );
        assert_ne!(
            job_id("p", &m(1, 0, "a", Some(""))),
            job_id("p", &m(1, 0, "a", None)),
            "an empty reason is not no reason"
        );
        assert_eq!(job_id("p", &m(1, 0, "a", None)), group_job_id("p", "a", None, None));
        // Grouping by 2 or by 3: the same ids.
        let input = || -> Vec<(u64, KickRequest)> {
            (1..=6u64)
                .map(|l| (l, j(if l % 2 == 0 { "x" } else { "y" }, &["u"], None)))
                .collect()
        };
        let ids = |size| {
            let mut g = Grouper::new(size);
            for (l, job) in input() {
                g.push(l, job);
            }
            g.finish()
                .iter()
                .map(|m| job_id("p", m))
                .collect::<std::collections::BTreeSet<_>>()
        };
        assert_eq!(ids(2), ids(3));
        assert_eq!(ids(2).len(), 2);
    }
}
