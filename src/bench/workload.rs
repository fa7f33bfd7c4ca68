//! The messages of each scenario, generated from a fixed seed, and the accounting facts they imply (the
//! (room, user) pairs to kick, the fewest calls that can kick them). Pure.

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, HashSet};

/// Seed of every generated workload, so two runs publish the same messages.
pub const SEED: u64 = 0x006b_6963_6b71;

/// One kick job: a room and its users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kick {
    /// The room.
    pub room: String,
    /// The users, distinct.
    pub users: Vec<String>,
}

impl Kick {
    /// The job message's JSON body.
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"room_id": self.room, "user_ids": self.users}))
            .expect("a map of strings serialises")
    }

    /// The job message's JSON body, naming the app it belongs to (`app_id`).
    pub fn body_for(&self, app_id: u32) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"room_id": self.room, "user_ids": self.users, "app_id": app_id}))
            .expect("a map of strings and a number serialises")
    }
}

/// A (room, user) pair.
pub type Pair = (String, String);

/// The sweep: `rooms` rooms of `per_room` users, one user per message,
/// plus `dup_fraction` of them again, all shuffled.
pub fn sweep(rooms: usize, per_room: usize, dup_fraction: f64) -> Vec<Kick> {
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut msgs: Vec<Kick> = (0..rooms)
        .flat_map(|r| {
            (0..per_room).map(move |u| Kick {
                room: format!("sweep-room-{r}"),
                users: vec![format!("user-{u}")],
            })
        })
        .collect();
    let dups = (msgs.len() as f64 * dup_fraction).round() as usize;
    let extra: Vec<Kick> = msgs.choose_multiple(&mut rng, dups).cloned().collect();
    msgs.extend(extra);
    msgs.shuffle(&mut rng);
    msgs
}

/// `n` messages of 1 to 5 users each over `rooms` rooms; every user id is
/// unique, so every pair is kicked once and users = pairs.
pub fn mixed(n: usize, rooms: usize) -> Vec<Kick> {
    let mut rng = StdRng::seed_from_u64(SEED ^ 1);
    (0..n)
        .map(|i| {
            let room = format!("mixed-room-{}", rng.random_range(0..rooms.max(1)));
            let k = rng.random_range(1..=5);
            Kick {
                room,
                users: (0..k).map(|j| format!("m{i}-{j}")).collect(),
            }
        })
        .collect()
}

/// Message `i` of the backlog: one user, rooms in turn (generated on the fly:
/// a million messages need not sit in memory).
pub fn backlog_kick(i: usize, rooms: usize) -> Kick {
    Kick {
        room: format!("backlog-room-{}", i % rooms.max(1)),
        users: vec![format!("b{i}")],
    }
}

/// Light load's kick `i`: a room of its own, so no call ever waits for another.
pub fn light_kick(i: usize) -> Kick {
    Kick {
        room: format!("light-room-{i}"),
        users: vec![format!("l{i}")],
    }
}

/// The lanes scenario's live kick `i`: one user in a room of its own, as in light load.
pub fn live_kick(i: usize) -> Kick {
    Kick {
        room: format!("live-room-{i}"),
        users: vec![format!("v{i}")],
    }
}

/// The lanes scenario's bulk message `i`: a full call's worth of users
/// (five) in a room of its own, so the sweep's calls are full whatever the
/// bulk lane's prefetch.
pub fn bulk_kick(i: usize) -> Kick {
    Kick {
        room: format!("bulk-room-{i}"),
        users: (0..crate::zego::MAX_USERS_PER_CALL)
            .map(|u| format!("s{i}-{u}"))
            .collect(),
    }
}

/// The apps scenario's message `j` of app number `app` (0-based): a full
/// call's worth of users (five) in a room of its own.
pub fn app_kick(app: usize, j: usize) -> Kick {
    Kick {
        room: format!("app{app}-room-{j}"),
        users: (0..crate::zego::MAX_USERS_PER_CALL)
            .map(|u| format!("a{app}-{j}-{u}"))
            .collect(),
    }
}

/// Every distinct (room, user) pair of `kicks`.
pub fn pairs<'a>(kicks: impl IntoIterator<Item = &'a Kick>) -> HashSet<Pair> {
    kicks
        .into_iter()
        .flat_map(|k| k.users.iter().map(|u| (k.room.clone(), u.clone())))
        .collect()
}

/// Total users over all messages (duplicates counted).
pub fn users<'a>(kicks: impl IntoIterator<Item = &'a Kick>) -> u64 {
    kicks.into_iter().map(|k| k.users.len() as u64).sum()
}

/// The fewest calls that kick every pair: per room, ceil(distinct users / 5).
pub fn minimum_calls(pairs: &HashSet<Pair>) -> u64 {
    let mut per_room: HashMap<&str, u64> = HashMap::new();
    for (room, _) in pairs {
        *per_room.entry(room.as_str()).or_default() += 1;
    }
    per_room
        .values()
        .map(|n| n.div_ceil(crate::zego::MAX_USERS_PER_CALL as u64))
        .sum()
}

/// Line `i` of the enqueue scenario's CSV (`room_id,user_id`), header excluded.
pub fn csv_line(i: usize, rooms: usize) -> String {
    format!("csv-room-{},c{i}\n", i % rooms.max(1))
}

/// The CSV header line.
pub const CSV_HEADER: &str = "room_id,user_id\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_has_its_duplicates_and_minimum() {
        let s = sweep(10, 20, 0.1);
        assert_eq!(s.len(), 220);
        let p = pairs(&s);
        assert_eq!(p.len(), 200);
        assert_eq!(minimum_calls(&p), 40);
        assert_eq!(sweep(10, 20, 0.1), s, "seeded");
    }

    #[test]
    fn mixed_users_are_unique() {
        let m = mixed(100, 7);
        assert_eq!(pairs(&m).len() as u64, users(&m));
        assert!(m.iter().all(|k| (1..=5).contains(&k.users.len())));
        let body: serde_json::Value = serde_json::from_slice(&m[0].body()).unwrap();
        assert_eq!(body["room_id"], m[0].room.as_str());
    }

    #[test]
    fn lanes_and_apps_messages_are_full_calls_in_rooms_of_their_own() {
        let bulk: Vec<Kick> = (0..4).map(bulk_kick).collect();
        assert!(bulk.iter().all(|k| k.users.len() == 5));
        assert_eq!(minimum_calls(&pairs(&bulk)), 4, "one full call each");
        let live: Vec<Kick> = (0..3).map(live_kick).collect();
        assert!(pairs(&live).is_disjoint(&pairs(&bulk)));
        let apps: Vec<Kick> = (0..2).flat_map(|a| (0..3).map(move |j| app_kick(a, j))).collect();
        assert_eq!(pairs(&apps).len(), 30, "users distinct across apps");
        assert_eq!(minimum_calls(&pairs(&apps)), 6);
        let body: serde_json::Value = serde_json::from_slice(&apps[4].body_for(7)).unwrap();
        assert_eq!(body["app_id"], 7);
        assert_eq!(body["room_id"], "app1-room-1");
        assert_eq!(body["user_ids"].as_array().unwrap().len(), 5);
    }

    #[test]
    fn minimum_rounds_up_per_room() {
        let kicks = [
            Kick {
                room: "a".into(),
                users: vec!["1".into(), "2".into(), "3".into(), "4".into(), "5".into(), "6".into()],
            },
            Kick {
                room: "b".into(),
                users: vec!["1".into()],
            },
        ];
        assert_eq!(minimum_calls(&pairs(&kicks)), 3);
    }
}
