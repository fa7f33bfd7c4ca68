//! The workers of each shard as the broker's management API sees them: every session's lease connection of
//! the namespace (client properties `kickq-namespace`, `kickq-shard`, `kickq-worker`), and which of them holds the shard's
//! leadership lease (the lease queue's active consumer). Read only when `KICKQ_MANAGEMENT_URL` is set: AMQP
//! alone tells whether the lease is held and how many consumers a queue has, not by whom.

use crate::amqp::connect::{NAMESPACE_PROPERTY, SHARD_PROPERTY, WORKER_PROPERTY};
use crate::dlq::policy::{encode_segment, get, Reply};
use crate::secret::Secret;
use chrono::{DateTime, Utc};
use serde_json::Value;

/// One worker session connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    /// Its connection name (`KICKQ_CONNECTION_NAME`, and the shard).
    pub name: String,
    /// Where it connects from.
    pub host: String,
    /// When it connected.
    pub since: Option<DateTime<Utc>>,
    /// Whether it holds the shard's lease (the active worker).
    pub active: bool,
}

/// Each shard's session connections, the active one first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Fleet {
    /// `(shard, members)`, in the order asked.
    pub shards: Vec<(String, Vec<Member>)>,
    /// What could not be told, one line each (a shard whose active worker the
    /// API does not name): shown above the list, never taken for "standby".
    pub warnings: Vec<String>,
}

/// Reads the namespace's connections and each lease's holder (`locks`:
/// `(shard, lease queue)`) from the management API at `base`.
pub(crate) async fn read(
    base: &Secret,
    amqp_url: &Secret,
    namespace: &str,
    locks: &[(String, String)],
) -> Result<Fleet, String> {
    let amqp = crate::amqp::connect::nodes(amqp_url.expose())
        .into_iter()
        .next()
        .unwrap_or_default();
    let base = base.expose();
    let connections = match get(base, &amqp, |vhost| {
        format!("vhosts/{}/connections", encode_segment(vhost))
    })
    .await
    {
        Reply::Queue(v) => v,
        Reply::Status(s) => return Err(format!("management API: HTTP {s} for the connection list")),
        Reply::Unreachable(why) => return Err(format!("management API: {why}")),
    };
    let mut owners = Vec::new();
    let mut warnings = Vec::new();
    for (shard, queue) in locks {
        let owner = match crate::dlq::policy::fetch(base, &amqp, queue).await {
            Reply::Queue(q) => match owner_of(&q) {
                Ok(o) => o,
                Err(why) => {
                    tracing::warn!(shard = %shard, queue = %queue, "console: the active worker is unknown: {why}");
                    warnings.push(format!("shard {shard}: which worker is active is unknown: {why}"));
                    None
                }
            },
            _ => None,
        };
        owners.push((shard.clone(), owner));
    }
    let mut fleet = fleet_of(&connections, namespace, &owners);
    fleet.warnings = warnings;
    Ok(fleet)
}

/// The broker's name of the connection whose consumer is the lease queue's
/// active one (`consumer_details[].active`, `channel_details.connection_name`):
/// `Ok(None)` when no consumer is active (nobody holds the lease); `Err` when
/// the document lists no consumers at all (metrics collection disabled, or
/// a RabbitMQ that leaves the field out), so the holder cannot be told.
pub(crate) fn owner_of(queue: &Value) -> Result<Option<String>, String> {
    let unknown =
        || "the management API lists no consumers of the lease queue (metrics collection disabled?)".to_owned();
    let Some(consumers) = queue.get("consumer_details").and_then(Value::as_array) else {
        return Err(unknown());
    };
    // An empty list while the queue counts consumers: the details are not collected.
    if consumers.is_empty() && queue["consumers"].as_u64().is_some_and(|n| n > 0) {
        return Err(unknown());
    }
    Ok(consumers
        .iter()
        .find(|c| c["active"].as_bool() == Some(true))
        .and_then(|c| c["channel_details"]["connection_name"].as_str())
        .map(String::from))
}

/// Pure: groups the session connections of `namespace`'s shards (in the
/// order of `owners`), marking the owner of each shard's lock active.
pub(crate) fn fleet_of(connections: &Value, namespace: &str, owners: &[(String, Option<String>)]) -> Fleet {
    let list = connections.as_array().map(Vec::as_slice).unwrap_or_default();
    let mut shards = Vec::new();
    for (shard, owner) in owners {
        let mut members: Vec<Member> = list
            .iter()
            .filter(|c| {
                let props = &c["client_properties"];
                props[SHARD_PROPERTY].as_str() == Some(shard.as_str())
                    && props[NAMESPACE_PROPERTY].as_str() == Some(namespace)
            })
            .map(|c| {
                let broker_name = c["name"].as_str().unwrap_or_default();
                let props = &c["client_properties"];
                Member {
                    name: props[WORKER_PROPERTY]
                        .as_str()
                        .or(props["connection_name"].as_str())
                        .unwrap_or(broker_name)
                        .to_owned(),
                    host: c["peer_host"].as_str().unwrap_or("?").to_owned(),
                    since: c["connected_at"].as_i64().and_then(DateTime::from_timestamp_millis),
                    active: owner.as_deref() == Some(broker_name),
                }
            })
            .collect();
        members.sort_by_key(|m| (!m.active, m.since));
        shards.push((shard.clone(), members));
    }
    Fleet {
        shards,
        warnings: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conn(name: &str, broker: &str, ns: &str, shard: &str, at: i64) -> Value {
        json!({
            "name": broker,
            "peer_host": "10.0.0.5",
            "connected_at": at,
            "client_properties": {
                "connection_name": format!("{name}-lease"),
                "kickq-worker": name,
                "kickq-namespace": ns,
                "kickq-shard": shard
            }
        })
    }

    #[test]
    fn members_by_shard_with_the_lock_owner_active() {
        let conns = json!([
            conn("w1", "a:1 -> b:5672", "kickq", "default", 2_000),
            conn("w2", "a:2 -> b:5672", "kickq", "default", 1_000),
            conn("w3", "a:3 -> b:5672", "kickq", "eu", 3_000),
            conn("other", "a:4 -> b:5672", "elsewhere", "default", 500),
            json!({"name": "a:5 -> b:5672", "client_properties": {"connection_name": "kickq-dlq"}}),
        ]);
        let owners = [
            ("default".to_owned(), Some("a:1 -> b:5672".to_owned())),
            ("eu".to_owned(), None),
        ];
        let f = fleet_of(&conns, "kickq", &owners);
        let names = |i: usize| {
            f.shards[i]
                .1
                .iter()
                .map(|m| (m.name.as_str(), m.active))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(0),
            vec![("w1", true), ("w2", false)],
            "the owner first, then standbys"
        );
        assert_eq!(names(1), vec![("w3", false)], "a free lock: nobody active");
        assert_eq!(f.shards[0].1[0].since, DateTime::from_timestamp_millis(2_000));
        assert_eq!(f.shards[0].1[0].host, "10.0.0.5");
        assert_eq!(fleet_of(&json!({}), "kickq", &owners).shards[0].1, vec![]);
        let consumer =
            |active: bool, conn: &str| json!({"active": active, "channel_details": {"connection_name": conn}});
        assert_eq!(
            owner_of(&json!({"consumer_details": [consumer(false, "a:2 -> b:5672"), consumer(true, "a:1 -> b:5672")]})),
            Ok(Some("a:1 -> b:5672".to_owned()))
        );
        assert_eq!(
            owner_of(&json!({"consumer_details": [consumer(false, "a:2 -> b:5672")]})),
            Ok(None),
            "nobody holds it"
        );
        assert_eq!(owner_of(&json!({"consumer_details": [], "consumers": 0})), Ok(None));
        assert!(
            owner_of(&json!({"consumer_details": [], "consumers": 2})).is_err(),
            "consumers counted but not listed: unknown"
        );
        assert!(
            owner_of(&json!({"name": "kickq.leader.lease"})).is_err(),
            "no consumer list: unknown, not free"
        );
    }
}
