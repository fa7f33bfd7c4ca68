//! `kickq status`: queue depths and consumers from the broker (passive declares: nothing is created), and
//! each reachable worker's `/status` (role, apps, halts, backlog, calls/s), as tables or one JSON object.

use super::flags::BrokerArgs;
use crate::amqp::topology::Names;
use crate::health::WorkerStatus;
use crate::table::{escape, render as table};
use lapin::Connection;
use std::time::Duration;

/// Longer help of `kickq status`.
pub(crate) const LONG_ABOUT: &str = "Show the namespace's queues and workers.

From the broker (passive declares: nothing is created): messages ready and
consumers of the requests (live), bulk, retry and dead queues, and whether a worker holds
the leadership lock. From each --worker URL (a worker's KICKQ_METRICS_ADDR;
default: this environment's KICKQ_METRICS_ADDR), its /status: active or
standby, AppIds, halts, pending users, calls in flight and calls per second
over the last minute. An unreachable worker is shown as such and does not
fail the command; an unreachable broker does.

--json prints one object:
{\"namespace\", \"leader_held\", \"leaders\": [{\"shard\", \"held\"}], \"queues\": [{\"queue\",
\"kind\", \"exists\", \"ready\", \"consumers\"}], \"workers\": [{\"url\", \"status\", \"error\"}]},
where status is the worker's /status body (see the README) or null. With shards in the
config file, every shard's queues and lock are listed.";

/// Time allowed for one worker's `/status`: it answers from memory, so
/// anything slower is a worker in trouble, and the command must not hang on it.
pub(crate) const WORKER_TIMEOUT: Duration = Duration::from_secs(3);
/// Time allowed to connect to the broker.
pub(crate) const BROKER_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// `kickq status`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    /// Base URL of a worker's metrics server, e.g. http://10.0.0.5:9464
    /// (repeat for each worker). Default: http:// and KICKQ_METRICS_ADDR.
    #[arg(long = "worker", value_name = "URL")]
    workers: Vec<String>,
    /// The metrics address the default --worker is made from.
    #[arg(long = "metrics-addr", env = "KICKQ_METRICS_ADDR", default_value = crate::health::DEFAULT_METRICS_ADDR)]
    metrics_addr: String,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
}

/// One queue's figures.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct QueueRow {
    /// The queue name.
    pub queue: String,
    /// `requests`, `retry`, `bulk`, `bulk_retry` or `dead`.
    pub kind: &'static str,
    /// Whether it exists (`kickq run` declares it at start).
    pub exists: bool,
    /// Messages ready (null when absent).
    pub ready: Option<u32>,
    /// Consumers (null when absent).
    pub consumers: Option<u32>,
}

/// One worker's `/status`, or why it could not be read.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub(crate) struct WorkerRow {
    /// The base URL asked.
    pub url: String,
    /// Its `/status` body.
    pub status: Option<WorkerStatus>,
    /// Why there is none.
    pub error: Option<String>,
}

/// Everything `kickq status` shows; its JSON form is the `--json` output.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub(crate) struct StatusReport {
    /// The namespace reported on (`KICKQ_NAMESPACE`).
    pub namespace: String,
    /// Whether every shard's lock is held now (`{ns}.leader` without shards).
    pub leader_held: bool,
    /// Each shard's lock (one, `default`, without shards).
    pub leaders: Vec<LeaderRow>,
    /// Requests, retry (shortest first) and dead queues.
    pub queues: Vec<QueueRow>,
    /// Each worker asked.
    pub workers: Vec<WorkerRow>,
}

/// One shard's leadership lock.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct LeaderRow {
    /// The shard (`default` for apps without one).
    pub shard: String,
    /// Whether a worker holds its lock now.
    pub held: bool,
}

/// The worker URLs to ask: those given, else the one made from the metrics
/// address (none when it is `0`, off). A wildcard host is asked on loopback.
pub(crate) fn worker_urls(given: &[String], metrics_addr: &str) -> Vec<String> {
    if !given.is_empty() {
        return given.iter().map(|u| u.trim_end_matches('/').to_owned()).collect();
    }
    match metrics_addr.trim() {
        "" | "0" => Vec::new(),
        a => {
            let a = a
                .strip_prefix("0.0.0.0:")
                .map(|port| format!("127.0.0.1:{port}"))
                .or_else(|| a.strip_prefix("[::]:").map(|port| format!("[::1]:{port}")))
                .unwrap_or_else(|| a.to_owned());
            vec![format!("http://{a}")]
        }
    }
}

/// The text output: the queues table, then the workers table.
pub(crate) fn render(r: &StatusReport) -> String {
    let state = |held: bool| if held { "held" } else { "free (no active worker)" };
    let mut out = match &r.leaders[..] {
        [one] if one.shard == crate::config::shards::DEFAULT_SHARD => format!(
            "namespace {}: leadership lock {}\n\n",
            escape(&r.namespace),
            state(one.held)
        ),
        many => {
            let locks: Vec<String> = many
                .iter()
                .map(|l| format!("shard {} {}", escape(&l.shard), state(l.held)))
                .collect();
            format!(
                "namespace {}: leadership locks: {}\n\n",
                escape(&r.namespace),
                locks.join(", ")
            )
        }
    };
    let dash = || "-".to_owned();
    let mut rows = vec![["queue", "ready", "consumers"].map(String::from)];
    for q in &r.queues {
        rows.push([
            escape(&q.queue),
            q.ready.map_or_else(|| "absent".into(), |n| n.to_string()),
            q.consumers.map_or_else(dash, |n| n.to_string()),
        ]);
    }
    out.push_str(&table(&rows));
    if r.workers.is_empty() {
        return out;
    }
    out.push('\n');
    let mut rows = vec![[
        "worker",
        "role",
        "apps",
        "halted",
        "pending users",
        "unacked live/bulk",
        "calls in flight",
        "calls/s (1m)",
    ]
    .map(String::from)];
    for w in &r.workers {
        rows.push(match (&w.status, &w.error) {
            (Some(s), _) => [
                escape(&w.url),
                role_text(s),
                if s.apps.is_empty() {
                    dash()
                } else {
                    s.apps.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
                },
                if s.halted.is_empty() {
                    dash()
                } else {
                    s.halted
                        .iter()
                        .map(|h| format!("{} code {} for {}s", h.app_id, h.code, h.for_secs))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
                s.pending_users.to_string(),
                format!("{}/{}", s.live_unacked, s.bulk_unacked),
                s.calls_in_flight.to_string(),
                format!("{:.1}", s.calls_per_sec),
            ],
            (None, e) => [
                escape(&w.url),
                format!("unreachable: {}", escape(e.as_deref().unwrap_or("no answer"))),
                dash(),
                dash(),
                dash(),
                dash(),
                dash(),
                dash(),
            ],
        });
    }
    out.push_str(&table(&rows));
    out
}

/// Runs `kickq status`.
pub(crate) async fn run(args: StatusArgs, file: Option<&crate::config::file::ConfigFile>) -> anyhow::Result<()> {
    let (url, names) = args.broker.resolve()?;
    let shards = crate::config::apps::file_shards(file)?;
    let conn = tokio::time::timeout(
        BROKER_CONNECT_TIMEOUT,
        crate::amqp::connect::connect(&url, "kickq-status"),
    )
    .await
    .map_err(|_| {
        anyhow::anyhow!(
            "cannot reach the broker at {} (KICKQ_AMQP_URL): no answer within {}s",
            crate::amqp::connect::nodes(url.expose())
                .iter()
                .map(|n| crate::amqp::connect::host_of(n))
                .collect::<Vec<_>>()
                .join(", "),
            BROKER_CONNECT_TIMEOUT.as_secs()
        )
    })?
    .map_err(|e| anyhow::Error::msg(crate::amqp::connect::explain(&url, &e).to_string()))?;
    let mut queues = Vec::new();
    for (queue, kind) in wanted_queues(&names, &shards) {
        let found = passive(&conn, &queue).await?;
        queues.push(QueueRow {
            exists: found.is_some(),
            ready: found.map(|f| f.0),
            consumers: found.map(|f| f.1),
            queue,
            kind,
        });
    }
    let mut leaders = Vec::new();
    for shard in &shards {
        let lease = crate::amqp::topology::inspect(&conn, &names.for_shard(shard).leader).await?;
        let held = crate::amqp::lease::lease_held(lease);
        leaders.push(LeaderRow {
            shard: shard.to_string(),
            held,
        });
    }
    let leader_held = leaders.iter().all(|l| l.held);
    crate::amqp::connect::close(&conn, "kickq status done").await;
    let workers = fetch_workers(&worker_urls(&args.workers, &args.metrics_addr)).await;
    let report = StatusReport {
        namespace: names.namespace.clone(),
        leader_held,
        leaders,
        queues,
        workers,
    };
    if args.json {
        println!("{}", serde_json::to_value(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

/// The queues `kickq status` shows, in order, with their kind: for each
/// shard the live lane and its delay queues, the bulk lane and its delay
/// queues; then the dead letters.
fn wanted_queues(names: &Names, shards: &[crate::config::shards::ShardName]) -> Vec<(String, &'static str)> {
    let mut wanted = Vec::new();
    for shard in shards {
        let names = names.for_shard(shard);
        wanted.push((names.requests.clone(), "requests"));
        wanted.extend(names.retry.iter().map(|(_, n)| (n.clone(), "retry")));
        wanted.push((names.bulk.clone(), "bulk"));
        wanted.extend(names.bulk_retry.iter().map(|(_, n)| (n.clone(), "bulk_retry")));
    }
    wanted.push((names.dead.clone(), "dead"));
    wanted
}

/// A worker's role: one word, or each shard's when it serves named shards
/// (`eu active, us standby`).
fn role_text(s: &WorkerStatus) -> String {
    match &s.shards[..] {
        [] => s.role.as_str().into(),
        [one] if one.shard == crate::config::shards::DEFAULT_SHARD => s.role.as_str().into(),
        many => many
            .iter()
            .map(|x| format!("{} {}", escape(&x.shard), x.role.as_str()))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// Ready messages and consumers of a queue; `None` when it does not exist.
async fn passive(conn: &Connection, queue: &str) -> Result<Option<(u32, u32)>, lapin::Error> {
    Ok(crate::amqp::topology::inspect(conn, queue)
        .await?
        .map(|q| (q.ready, q.consumers)))
}

async fn fetch_workers(urls: &[String]) -> Vec<WorkerRow> {
    crate::zego::client::install_crypto_provider();
    let http = match reqwest::Client::builder().timeout(WORKER_TIMEOUT).no_proxy().build() {
        Ok(c) => c,
        Err(e) => {
            return urls
                .iter()
                .map(|u| WorkerRow {
                    url: u.clone(),
                    status: None,
                    error: Some(e.to_string()),
                })
                .collect()
        }
    };
    let mut rows = Vec::new();
    for url in urls {
        let got = async {
            let resp = http.get(format!("{url}/status")).send().await.map_err(short)?;
            if !resp.status().is_success() {
                return Err(format!("HTTP {}", resp.status().as_u16()));
            }
            let body = resp.bytes().await.map_err(short)?;
            serde_json::from_slice::<WorkerStatus>(&body).map_err(|e| format!("not a kickq /status: {e}"))
        }
        .await;
        rows.push(match got {
            Ok(s) => WorkerRow {
                url: url.clone(),
                status: Some(s),
                error: None,
            },
            Err(e) => WorkerRow {
                url: url.clone(),
                status: None,
                error: Some(e),
            },
        });
    }
    rows
}

/// reqwest's error with its causes, which hold the useful part ("connection refused").
fn short(e: reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{HaltStatus, Role};

    #[test]
    fn worker_urls_table() {
        let table: &[(&[&str], &str, &[&str])] = &[
            (&[], "127.0.0.1:9464", &["http://127.0.0.1:9464"]),
            (&[], "0.0.0.0:9464", &["http://127.0.0.1:9464"]),
            (&[], "[::]:9464", &["http://[::1]:9464"]),
            (&[], "0", &[]),
            (&["http://a:1/", "http://b:2"], "0", &["http://a:1", "http://b:2"]),
        ];
        for (given, addr, want) in table {
            let given: Vec<String> = given.iter().map(|s| s.to_string()).collect();
            assert_eq!(worker_urls(&given, addr), *want, "{given:?} {addr}");
        }
    }

    #[test]
    fn renders_queues_and_workers() {
        let status = WorkerStatus {
            version: "0.1.0 (abc1234)".into(),
            role: Role::Active,
            connected: true,
            apps: vec![7, 9],
            halted: vec![HaltStatus {
                app_id: 9,
                code: 100000004,
                meaning: "x".into(),
                since: "2026-12-01T10:00:00Z".into(),
                for_secs: 42,
            }],
            pending_users: 12,
            pending_groups: 3,
            calls_in_flight: 2,
            deliveries_in_flight: 5,
            live_unacked: 5,
            bulk_unacked: 0,
            calls_per_sec: 48.04,
            not_ready: vec![],
            degraded: vec![],
            shards: vec![],
        };
        let r = StatusReport {
            namespace: "k".into(),
            leader_held: true,
            leaders: vec![LeaderRow {
                shard: "default".into(),
                held: true,
            }],
            queues: vec![
                QueueRow {
                    queue: "k.requests".into(),
                    kind: "requests",
                    exists: true,
                    ready: Some(10),
                    consumers: Some(2),
                },
                QueueRow {
                    queue: "k.dead".into(),
                    kind: "dead",
                    exists: false,
                    ready: None,
                    consumers: None,
                },
            ],
            workers: vec![
                WorkerRow {
                    url: "http://a:1".into(),
                    status: Some(status),
                    error: None,
                },
                WorkerRow {
                    url: "http://b:2".into(),
                    status: None,
                    error: Some("connection refused".into()),
                },
            ],
        };
        let text = render(&r);
        let want = "namespace k: leadership lock held

queue       ready   consumers
k.requests  10      2
k.dead      absent  -

worker      role                             apps  halted                    pending users  unacked live/bulk  calls in flight  calls/s (1m)
http://a:1  active                           7,9   9 code 100000004 for 42s  12             5/0                2                48.0
http://b:2  unreachable: connection refused  -     -                         -              -                  -                -
";
        assert_eq!(text, want);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["queues"][1]["ready"], serde_json::Value::Null);
        assert_eq!(json["workers"][0]["status"]["role"], "active");
        assert_eq!(json["workers"][1]["error"], "connection refused");
        assert_eq!(json["leader_held"], true);
    }

    #[test]
    fn both_lanes_and_their_delay_queues_are_shown() {
        let names = Names::new("k", &[Duration::from_secs(1), Duration::from_secs(5)]);
        let got = wanted_queues(&names, &[crate::config::shards::ShardName::default()]);
        let got: Vec<(&str, &str)> = got.iter().map(|(q, k)| (q.as_str(), *k)).collect();
        assert_eq!(
            got,
            [
                ("k.requests", "requests"),
                ("k.retry.1s", "retry"),
                ("k.retry.5s", "retry"),
                ("k.bulk", "bulk"),
                ("k.bulk.retry.1s", "bulk_retry"),
                ("k.bulk.retry.5s", "bulk_retry"),
                ("k.dead", "dead"),
            ]
        );
    }

    #[test]
    fn every_shard_is_shown_and_the_dead_letters_once() {
        let names = Names::new("k", &[Duration::from_secs(1)]);
        let shards: Vec<_> = ["default", "eu"]
            .iter()
            .map(|s| crate::config::shards::ShardName::parse(s).unwrap())
            .collect();
        let got = wanted_queues(&names, &shards);
        let got: Vec<&str> = got.iter().map(|(q, _)| q.as_str()).collect();
        assert_eq!(
            got,
            [
                "k.requests",
                "k.retry.1s",
                "k.bulk",
                "k.bulk.retry.1s",
                "k.eu.requests",
                "k.eu.retry.1s",
                "k.eu.bulk",
                "k.eu.bulk.retry.1s",
                "k.dead",
            ]
        );
        let status = |shards: Vec<crate::health::ShardStatus>| WorkerStatus {
            version: String::new(),
            role: Role::Active,
            connected: true,
            apps: vec![],
            halted: vec![],
            pending_users: 0,
            pending_groups: 0,
            calls_in_flight: 0,
            deliveries_in_flight: 0,
            live_unacked: 0,
            bulk_unacked: 0,
            calls_per_sec: 0.0,
            not_ready: vec![],
            degraded: vec![],
            shards,
        };
        let shard = |name: &str, role| crate::health::ShardStatus {
            shard: name.into(),
            role,
            connected: true,
        };
        assert_eq!(role_text(&status(vec![])), "active");
        assert_eq!(role_text(&status(vec![shard("default", Role::Active)])), "active");
        assert_eq!(
            role_text(&status(vec![shard("eu", Role::Active), shard("us", Role::Standby)])),
            "eu active, us standby"
        );
    }
}
