//! Shards: which shard serves each app (`shard = "eu"` in `[[apps]]`), the routing key of a job on `{ns}.jobs`,
//! and where a job that reached the wrong shard belongs. Pure; the config file and the worker's apps build it.
//!
//! A shard is a set of apps with queues of their own (`{ns}.{shard}.requests`,
//! `{ns}.{shard}.bulk`, their delay queues) and a leadership lock of its own,
//! so each shard has exactly one active worker. Apps without a `shard` are in
//! the shard [`DEFAULT_SHARD`], whose queues are the unsharded names
//! (`{ns}.requests`), so a deployment without shards is unchanged.

use std::collections::BTreeMap;
use std::fmt;

/// The shard of apps that name none. Its queues are `{ns}.requests` and
/// `{ns}.bulk`, as before shards existed.
pub const DEFAULT_SHARD: &str = "default";
/// Longest shard name: it is part of every queue name of the shard, and queue
/// names are at most 255 bytes.
pub const MAX_SHARD_NAME: usize = 32;
/// The routing key word of a job that names no `app_id` (AppIds are numbers,
/// so it cannot clash): it is bound to the default app's shard.
pub const DEFAULT_APP_KEY: &str = "default";

/// Names a shard may not take: `{ns}.<name>.` would clash with the
/// namespace's own queues (shard `bulk`'s `kickq.bulk.retry.1s` is the
/// default shard's bulk delay queue; shard `leader`'s record is
/// `kickq.leader.record`).
pub const RESERVED: &[&str] = &["bulk", "dead", "events", "jobs", "leader", "requests", "retry"];

/// A validated shard name: 1 to [`MAX_SHARD_NAME`] of `a-z`, `0-9`, `-`, `_`,
/// starting with a letter or digit (it becomes part of queue names), and
/// none of [`RESERVED`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardName(String);

/// A shard name that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a shard name: use 1 to 32 of a-z, 0-9, '-' and '_', starting with a letter or digit, other than bulk, dead, events, jobs, leader, requests and retry")]
pub struct BadShardName(pub String);

impl ShardName {
    /// Validates a name.
    pub fn parse(s: &str) -> Result<Self, BadShardName> {
        let ok = !s.is_empty()
            && s.len() <= MAX_SHARD_NAME
            && s.bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            && !RESERVED.contains(&s);
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(BadShardName(s.to_owned()))
        }
    }

    /// The default shard.
    pub fn default_shard() -> Self {
        Self(DEFAULT_SHARD.to_owned())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is [`DEFAULT_SHARD`].
    pub fn is_default(&self) -> bool {
        self.0 == DEFAULT_SHARD
    }
}

impl Default for ShardName {
    fn default() -> Self {
        Self::default_shard()
    }
}

impl fmt::Display for ShardName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which shard serves each app of the deployment: every app of the config
/// file, including those of shards this process does not serve (their
/// secrets are not needed to route to them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routing {
    apps: BTreeMap<u32, ShardName>,
    default_app: Option<u32>,
}

/// Where a job that intake could not serve belongs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Elsewhere {
    /// Its app is served by this other shard: forward it there.
    Shard(ShardName),
    /// No shard of the deployment serves it (dead-letter it as before).
    Nowhere,
}

impl Routing {
    /// A routing table from (AppId, shard) pairs and the default app.
    pub fn new(apps: impl IntoIterator<Item = (u32, ShardName)>, default_app: Option<u32>) -> Self {
        Self {
            apps: apps.into_iter().collect(),
            default_app,
        }
    }

    /// Whether any app is in a shard other than the default: then producers
    /// publish to `{ns}.jobs` and workers bind it.
    pub fn is_sharded(&self) -> bool {
        self.apps.values().any(|s| !s.is_default())
    }

    /// Every shard, each once, in name order.
    pub fn shards(&self) -> Vec<ShardName> {
        let mut v: Vec<ShardName> = self.apps.values().cloned().collect();
        v.sort();
        v.dedup();
        v
    }

    /// The shard of an app, if the deployment has it.
    pub fn shard_of(&self, app_id: u32) -> Option<&ShardName> {
        self.apps.get(&app_id)
    }

    /// The app of jobs that name none.
    pub fn default_app(&self) -> Option<u32> {
        self.default_app
    }

    /// Every (AppId, shard), by AppId.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &ShardName)> {
        self.apps.iter().map(|(a, s)| (*a, s))
    }

    /// The shard that serves a job naming `job_app` (or none: the default app).
    pub fn shard_for(&self, job_app: Option<u32>) -> Option<&ShardName> {
        job_app.or(self.default_app).and_then(|a| self.shard_of(a))
    }

    /// Where a job that `here` does not serve belongs: the shard of its app
    /// (or of the default app, when it names none), unless that is `here`
    /// itself or no shard has it.
    pub fn elsewhere(&self, here: &ShardName, job_app: Option<u32>) -> Elsewhere {
        match self.shard_for(job_app) {
            Some(s) if s != here => Elsewhere::Shard(s.clone()),
            _ => Elsewhere::Nowhere,
        }
    }

    /// The routing key of a job on `{ns}.jobs`: `<lane>.<app_id>`, or
    /// `<lane>.default` for a job that names no app.
    pub fn routing_key(lane: &str, job_app: Option<u32>) -> String {
        match job_app {
            Some(a) => format!("{lane}.{a}"),
            None => format!("{lane}.{DEFAULT_APP_KEY}"),
        }
    }

    /// The binding keys that lead to `shard`'s queue of `lane`: one per app
    /// of the shard, and `<lane>.default` if the default app is one of them.
    pub fn keys_of(&self, shard: &ShardName, lane: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .apps
            .iter()
            .filter(|(_, s)| *s == shard)
            .map(|(a, _)| Self::routing_key(lane, Some(*a)))
            .collect();
        if self.default_app.and_then(|a| self.shard_of(a)) == Some(shard) {
            keys.push(Self::routing_key(lane, None));
        }
        keys
    }

    /// Every binding key of the deployment for `lane` (each app, and the
    /// default if there is one): a worker unbinds each from the shards it
    /// does not lead to, so an app moved between shards is not delivered twice.
    pub fn all_keys(&self, lane: &str) -> Vec<String> {
        let mut keys: Vec<String> = self.apps.keys().map(|a| Self::routing_key(lane, Some(*a))).collect();
        if self.default_app.is_some() {
            keys.push(Self::routing_key(lane, None));
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(name: &str) -> ShardName {
        ShardName::parse(name).unwrap()
    }

    #[test]
    fn shard_names_by_table() {
        for (raw, ok) in [
            ("eu", true),
            ("us-east_2", true),
            ("0a", true),
            ("default", true),
            ("", false),
            ("EU", false),
            ("-eu", false),
            ("e.u", false),
            ("eu ", false),
            (&"x".repeat(33), false),
            (&"x".repeat(32), true),
            ("bulk", false),
            ("leader", false),
            ("retry", false),
            ("bulk2", true),
        ] {
            assert_eq!(ShardName::parse(raw).is_ok(), ok, "{raw:?}");
        }
        assert!(ShardName::default().is_default());
        assert!(ShardName::parse("EU").unwrap_err().to_string().contains("\"EU\""));
    }

    #[test]
    fn jobs_route_to_their_apps_shard_by_table() {
        let r = Routing::new([(1, s("eu")), (2, s("us")), (3, s("default"))], Some(2));
        assert!(r.is_sharded());
        assert_eq!(r.shards(), vec![s("default"), s("eu"), s("us")]);
        // (here, the job's app, where it belongs)
        let cases = [
            ("eu", Some(1), Elsewhere::Nowhere),
            ("eu", Some(2), Elsewhere::Shard(s("us"))),
            ("us", Some(1), Elsewhere::Shard(s("eu"))),
            ("eu", None, Elsewhere::Shard(s("us"))),
            ("us", None, Elsewhere::Nowhere),
            ("default", Some(1), Elsewhere::Shard(s("eu"))),
            ("eu", Some(3), Elsewhere::Shard(s("default"))),
            ("eu", Some(99), Elsewhere::Nowhere),
        ];
        for (here, app, want) in cases {
            assert_eq!(r.elsewhere(&s(here), app), want, "{here} {app:?}");
        }
        let none = Routing::new([(1, s("eu"))], None);
        assert_eq!(none.elsewhere(&s("default"), None), Elsewhere::Nowhere);
        assert!(!Routing::new([(1, s("default"))], Some(1)).is_sharded());
    }

    #[test]
    fn binding_keys_by_table() {
        let r = Routing::new([(1, s("eu")), (2, s("us")), (7, s("eu"))], Some(2));
        assert_eq!(Routing::routing_key("live", Some(1)), "live.1");
        assert_eq!(Routing::routing_key("bulk", None), "bulk.default");
        assert_eq!(r.keys_of(&s("eu"), "live"), vec!["live.1", "live.7"]);
        assert_eq!(r.keys_of(&s("us"), "bulk"), vec!["bulk.2", "bulk.default"]);
        assert!(r.keys_of(&s("default"), "live").is_empty());
        assert_eq!(r.all_keys("live"), vec!["live.1", "live.2", "live.7", "live.default"]);
    }
}
