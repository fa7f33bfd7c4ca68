//! Broker policies that cap the dead queue (`delivery-limit`, `max-length`, `message-ttl`, ...), read from
//! the RabbitMQ management API (AMQP cannot see policies), and the verdict `kickq check` prints about them.

use serde_json::Value;
use std::time::Duration;

/// Time allowed for the management API's answer: it is one small JSON
/// document, and `kickq check` must answer quickly.
pub(crate) const MANAGEMENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Policy keys that cap the dead queue, each with what it does to the letters.
/// RabbitMQ applies the lower of a policy's value and kickq's argument.
const CAPS: &[(&str, &str)] = &[
    (
        "delivery-limit",
        "a letter handed back that many times is dropped (kickq dlq never hands one back; other tools may)",
    ),
    (
        "max-length",
        "once full, dead-lettering is refused (reject-publish) and workers keep their poison messages",
    ),
    (
        "max-length-bytes",
        "once full, dead-lettering is refused (reject-publish) and workers keep their poison messages",
    ),
    ("message-ttl", "letters older than that are deleted"),
    (
        "expires",
        "the queue and every letter in it are deleted after that long unused",
    ),
];

/// What the management API said of the dead queue.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reply {
    /// HTTP 200 with the queue's JSON.
    Queue(Value),
    /// Another HTTP status.
    Status(u16),
    /// No answer: why.
    Unreachable(String),
}

/// The verdict: `None` when nothing caps the queue, else each cap found as
/// `key value (effect)`, with the policy's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The queue does not exist (yet).
    Absent,
    /// No policy, or none that caps it.
    Uncapped(Option<String>),
    /// Policy name (or names) and the caps it sets.
    Capped(String, Vec<String>),
    /// The API could not be read: why.
    Unknown(String),
    /// The queue's document carries no policy fields: RabbitMQ before 4.2.5
    /// leaves out `policy` and `effective_policy_definition` when metrics
    /// collection is disabled (the direction 4.x takes), so whether a policy
    /// caps the queue cannot be told. Never taken for "no policy".
    Unreported,
}

/// Judges the management API's reply about a queue.
pub(crate) fn verdict(reply: &Reply) -> Verdict {
    let q = match reply {
        Reply::Queue(q) => q,
        Reply::Status(404) => return Verdict::Absent,
        Reply::Status(401) => return Verdict::Unknown("the management API refused the credentials (401)".into()),
        Reply::Status(s) => return Verdict::Unknown(format!("the management API answered HTTP {s}")),
        Reply::Unreachable(why) => return Verdict::Unknown(format!("cannot reach the management API: {why}")),
    };
    if q.get("policy").is_none() && q.get("effective_policy_definition").is_none() {
        return Verdict::Unreported;
    }
    let names: Vec<&str> = ["policy", "operator_policy"]
        .iter()
        .filter_map(|k| q[*k].as_str().filter(|s| !s.is_empty()))
        .collect();
    let def = &q["effective_policy_definition"];
    let caps: Vec<String> = CAPS
        .iter()
        .filter_map(|(key, effect)| def.get(*key).map(|v| format!("{key} {v} ({effect})")))
        .collect();
    let name = (!names.is_empty()).then(|| names.join(", "));
    if caps.is_empty() {
        Verdict::Uncapped(name)
    } else {
        Verdict::Capped(name.unwrap_or_else(|| "a policy".into()), caps)
    }
}

/// `%`-encodes a path segment of the management API (a vhost or queue name).
pub(crate) fn encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The vhost of an AMQP URL: its path, `%`-decoded; `/` when empty.
pub(crate) fn vhost_of(amqp_url: &url::Url) -> String {
    let raw = amqp_url.path().strip_prefix('/').unwrap_or(amqp_url.path());
    if raw.is_empty() {
        return "/".into();
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| std::str::from_utf8(&bytes[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Asks the management API at `base` about `queue` in the AMQP URL's vhost,
/// with the management URL's credentials, else the AMQP URL's.
pub(crate) async fn fetch(base: &str, amqp_url: &str, queue: &str) -> Reply {
    get(base, amqp_url, |vhost| {
        format!("queues/{}/{}", encode_segment(vhost), encode_segment(queue))
    })
    .await
}

/// GETs `/api/<path>` of the management API at `base` (`path` made from the
/// AMQP URL's vhost), with the management URL's credentials, else the AMQP
/// URL's. The JSON answer comes back as [`Reply::Queue`].
pub(crate) async fn get(base: &str, amqp_url: &str, path: impl FnOnce(&str) -> String) -> Reply {
    let (Ok(mut base), Ok(amqp)) = (url::Url::parse(base), url::Url::parse(amqp_url)) else {
        return Reply::Unreachable("KICKQ_MANAGEMENT_URL is not a URL".into());
    };
    let (user, password) = if base.username().is_empty() {
        (decoded(amqp.username()), amqp.password().map(decoded))
    } else {
        (decoded(base.username()), base.password().map(decoded))
    };
    let _ = base.set_username("");
    let _ = base.set_password(None);
    let at = format!("{}/api/{}", base.as_str().trim_end_matches('/'), path(&vhost_of(&amqp)));
    let http = match reqwest::Client::builder()
        .timeout(MANAGEMENT_TIMEOUT)
        .no_proxy()
        .build()
    {
        Ok(h) => h,
        Err(e) => return Reply::Unreachable(e.to_string()),
    };
    let mut req = http.get(&at);
    if !user.is_empty() {
        req = req.basic_auth(user, password);
    }
    match req.send().await {
        Ok(r) if r.status().is_success() => match r.bytes().await.map(|b| serde_json::from_slice::<Value>(&b)) {
            Ok(Ok(v)) => Reply::Queue(v),
            _ => Reply::Unreachable("unreadable answer".into()),
        },
        Ok(r) => Reply::Status(r.status().as_u16()),
        Err(e) => Reply::Unreachable(short(&e)),
    }
}

fn decoded(s: &str) -> String {
    let u = url::Url::parse(&format!("x://h/{s}")).ok();
    u.map(|u| vhost_of(&u)).unwrap_or_else(|| s.to_owned())
}

fn short(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection refused or unreachable".into()
    } else {
        "request failed".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn caps_are_named_with_their_effect() {
        let q = |policy: Value, def: Value| Reply::Queue(json!({"policy": policy, "effective_policy_definition": def}));
        let cases = [
            (Reply::Status(404), Verdict::Absent),
            (q(Value::Null, json!([])), Verdict::Uncapped(None)),
            (
                q(json!("ha"), json!({"ha-mode": "all"})),
                Verdict::Uncapped(Some("ha".into())),
            ),
            (
                q(json!("cap"), json!({"delivery-limit": 5})),
                Verdict::Capped(
                    "cap".into(),
                    vec![
                        "delivery-limit 5 (a letter handed back that many times is dropped (kickq dlq never hands \
                          one back; other tools may))"
                            .into(),
                    ],
                ),
            ),
        ];
        for (reply, want) in cases {
            assert_eq!(verdict(&reply), want, "{reply:?}");
        }
        // Metrics collection off (RabbitMQ before 4.2.5): no policy fields at
        // all is not "no policy"; a policy field alone still counts.
        assert_eq!(
            verdict(&Reply::Queue(json!({"name": "kickq.dead", "vhost": "/"}))),
            Verdict::Unreported
        );
        assert_eq!(
            verdict(&Reply::Queue(json!({"name": "kickq.dead", "policy": null}))),
            Verdict::Uncapped(None)
        );
        let Verdict::Capped(name, caps) = verdict(&Reply::Queue(json!({
            "policy": "p", "operator_policy": "op",
            "effective_policy_definition": {"max-length": 10, "message-ttl": 60000}
        }))) else {
            panic!("capped")
        };
        assert_eq!(name, "p, op");
        assert!(
            caps[0].starts_with("max-length 10 (") && caps[1].starts_with("message-ttl 60000 ("),
            "{caps:?}"
        );
        for (reply, want) in [
            (Reply::Status(401), "refused the credentials"),
            (Reply::Status(500), "HTTP 500"),
            (
                Reply::Unreachable("timed out".into()),
                "cannot reach the management API: timed out",
            ),
        ] {
            assert!(
                matches!(verdict(&reply), Verdict::Unknown(w) if w.contains(want)),
                "{reply:?}"
            );
        }
    }

    #[test]
    fn vhosts_and_names_are_encoded_for_the_api_path() {
        for (url, vhost) in [
            ("amqp://u:p@h:5672", "/"),
            ("amqp://u:p@h:5672/", "/"),
            ("amqp://u:p@h:5672/%2f", "/"),
            ("amqp://u:p@h:5672/prod", "prod"),
            ("amqp://u:p@h:5672/a%2Fb", "a/b"),
        ] {
            assert_eq!(vhost_of(&url::Url::parse(url).unwrap()), vhost, "{url}");
        }
        assert_eq!(encode_segment("/"), "%2F");
        assert_eq!(encode_segment("kickq.dead"), "kickq.dead");
        assert_eq!(encode_segment("a b/c"), "a%20b%2Fc");
    }
}
