//! `kickq check`: verifies a deployment before traffic (broker and credentials, queue arguments, database
//! and migrations, API credentials and clock) without declaring anything; one line per check, or one JSON
//! object. The verdicts are pure functions tested by table; `run` only gathers their inputs.

use super::flags::BrokerArgs;
use crate::amqp::topology::reply_code;
use crate::amqp::topology::{self, Lane, Names, DEFAULT_DELIVERY_LIMIT};
use crate::config::apps::{AppConfig, Apps};
use crate::config::file::ConfigFile;
use crate::config::{self, parse_duration, ZegoArgs};
use crate::zego::client::{ApiReply, TransportError, ZegoClient};
use crate::zego::codes::{classify_code, describe, Disposition};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::Connection;
use std::time::Duration;

/// Longer help of `kickq check`.
pub(crate) const LONG_ABOUT: &str = "Verify a deployment before traffic, declaring nothing.

Checks, one line each (ok, warn or FAIL, what, and the fix):
  broker     the broker is reachable and the credentials in KICKQ_AMQP_URL work;
  broker version  the RabbitMQ version (from the AMQP handshake; over TLS
             from KICKQ_MANAGEMENT_URL), with a warning for each known issue
             of its range (see the README's broker compatibility table);
  queue      each queue of the namespace that exists has the arguments kickq
             declares (a differing one is named, with both values); an absent
             queue is fine: `kickq run` declares it at start;
  dead policy  with KICKQ_MANAGEMENT_URL set: warns when a broker policy caps
             <namespace>.dead (delivery-limit, max-length, message-ttl, ...;
             AMQP cannot see policies, so without it this is not checked);
  database   with DATABASE_URL set: reachable, and every migration applied;
  api        one signed KickoutUser call for a room that cannot exist
             (kickq-check-<random>): the API's \"room gone\" answer proves the
             AppId, the secret and the clock without kicking anyone.

Exits 0 only if no check fails (warn does not fail). --json prints one object:
{\"ok\": bool, \"checks\": [{\"check\", \"status\", \"detail\", \"fix\"}]}.";

/// Time allowed to connect to the broker: a check should answer quickly,
/// and a broker that takes longer than this will trouble the worker too.
pub(crate) const BROKER_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// AMQP reply code of a declare whose arguments differ from the queue's.
const PRECONDITION_FAILED: u16 = 406;

/// `kickq check`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct CheckArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    zego: ZegoArgs,
    /// ZEGOCLOUD API base URL, as for `kickq run`.
    #[arg(long = "api-url", env = "ZEGO_API_URL", default_value = config::DEFAULT_API_URL)]
    api_url: String,
    /// The worker's delivery limit: `{ns}.requests` is expected to carry it.
    #[arg(long = "delivery-limit", env = "KICKQ_DELIVERY_LIMIT", default_value_t = DEFAULT_DELIVERY_LIMIT)]
    delivery_limit: u32,
    /// PostgreSQL URL of the audit ledger; unset skips the database check.
    #[arg(long = "database-url", env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Total timeout of the API call.
    #[arg(long = "http-timeout", env = "KICKQ_HTTP_TIMEOUT", default_value = config::duration_text(crate::zego::client::DEFAULT_HTTP_TIMEOUT), value_parser = parse_duration)]
    http_timeout: Duration,
    /// RabbitMQ management API base URL (e.g. http://127.0.0.1:15672; credentials in it, else the AMQP
    /// URL's), to see the policies on the dead queue; unset skips that check.
    #[arg(long = "management-url", env = "KICKQ_MANAGEMENT_URL", hide_env_values = true)]
    management_url: Option<String>,
    /// Print one JSON object instead of lines.
    #[arg(long)]
    json: bool,
}

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    /// Holds.
    Ok,
    /// Holds, with a remark; does not fail the check.
    Warn,
    /// Does not hold: the exit code is non-zero.
    Fail,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        }
    }
}

/// One check's result: one line of output, one element of `checks` in JSON.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Check {
    /// What was checked: `broker`, `queue <name>`, `database`, `api`.
    pub check: String,
    /// The verdict.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do about it (`null` when nothing).
    pub fix: Option<String>,
}

impl Check {
    fn new(check: impl Into<String>, status: Status, detail: impl Into<String>, fix: Option<&str>) -> Check {
        Check {
            check: check.into(),
            status,
            detail: detail.into(),
            fix: fix.map(str::to_owned),
        }
    }
}

/// The text output: one line per check.
pub(crate) fn render(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        out.push_str(&format!("{:<4}  {}: {}", c.status.label(), c.check, c.detail));
        if let Some(fix) = &c.fix {
            out.push_str(&format!("; fix: {fix}"));
        }
        out.push('\n');
    }
    out
}

/// True when no check failed.
pub(crate) fn passed(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.status != Status::Fail)
}

/// The `--json` output.
pub(crate) fn to_json(checks: &[Check]) -> serde_json::Value {
    serde_json::json!({"ok": passed(checks), "checks": checks})
}

/// One argument that differs, from the broker's PRECONDITION_FAILED text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ArgDiff {
    /// The argument (`x-delivery-limit`, or `durable`).
    pub arg: String,
    /// What kickq declares (`None`: kickq does not set it).
    pub expected: Option<String>,
    /// What the queue has (`None`: not set).
    pub actual: Option<String>,
}

/// Reads RabbitMQ's "inequivalent arg 'A' for queue 'Q' in vhost 'V':
/// received X but current is Y", where a value is `none`, `'v'` or `the value
/// 'v' of type 't'`. `None` for any other text.
pub(crate) fn parse_inequivalent(text: &str) -> Option<ArgDiff> {
    let rest = text.split("inequivalent arg '").nth(1)?;
    let (arg, rest) = rest.split_once('\'')?;
    let rest = rest.split_once("received ")?.1;
    let (received, current) = rest.split_once(" but current is ")?;
    fn value(v: &str) -> Option<String> {
        let v = v.trim().trim_start_matches("the value ");
        if v == "none" {
            return None;
        }
        match v.strip_prefix('\'').and_then(|s| s.split_once('\'')) {
            Some((inner, _)) => Some(inner.to_owned()),
            None => Some(v.to_owned()),
        }
    }
    Some(ArgDiff {
        arg: arg.to_owned(),
        expected: value(received),
        actual: value(current),
    })
}

/// The verdict on an existing queue whose redeclare with kickq's arguments
/// answered `text` (a PRECONDITION_FAILED).
pub(crate) fn queue_mismatch(queue: &str, text: &str) -> Check {
    let fix = "drain the queue (kickq dlq, or a consumer), delete it and let `kickq run` declare it; or set the kickq setting that matches it (KICKQ_DELIVERY_LIMIT, KICKQ_RETRY_DELAYS, KICKQ_NAMESPACE)";
    let detail = match parse_inequivalent(text) {
        Some(d) => format!(
            "argument {} is {} on the broker, kickq declares {} (the broker names the first difference only)",
            d.arg,
            d.actual.as_deref().unwrap_or("unset"),
            d.expected.as_deref().unwrap_or("none"),
        ),
        None => format!("arguments differ from kickq's: {text}"),
    };
    Check::new(format!("queue {queue}"), Status::Fail, detail, Some(fix))
}

/// The verdict on the API's answer to the check call.
pub(crate) fn api_verdict(result: &Result<ApiReply, TransportError>) -> Check {
    let name = "api";
    let reply = match result {
        Ok(r) => r,
        Err(e) => {
            return Check::new(
                name,
                Status::Fail,
                format!("no answer: {e}"),
                Some("check ZEGO_API_URL, DNS, the network and any proxy between here and the API"),
            )
        }
    };
    let code = reply.code;
    let meaning = describe(code);
    let request = if reply.request_id.is_empty() {
        String::new()
    } else {
        format!(", RequestId {}", reply.request_id)
    };
    match classify_code(code, 1) {
        Disposition::NothingToDo | Disposition::Kicked => Check::new(
            name,
            Status::Ok,
            format!("AppId, secret and clock accepted (code {code}: {meaning}{request})"),
            None,
        ),
        Disposition::RateLimited => Check::new(
            name,
            Status::Warn,
            format!("rate-limited (code {code}: {meaning}{request}): the credentials were not proven"),
            Some("run the check again when traffic is lower"),
        ),
        Disposition::Halt => Check::new(
            name,
            Status::Fail,
            format!("code {code}: {meaning}{request}"),
            Some(halt_fix(code)),
        ),
        _ => Check::new(
            name,
            Status::Fail,
            format!("unexpected answer, code {code}: {meaning}{request}"),
            Some("retry; if it persists, ask ZEGOCLOUD support with the RequestId"),
        ),
    }
}

/// What to change for a halting code.
fn halt_fix(code: i64) -> &'static str {
    match code {
        100000004 => "sync this host's clock (NTP): the signature carries the time",
        3 | 100000005 => "check ZEGO_SERVER_SECRET (or ZEGO_SERVER_SECRET_FILE) is this AppId's ServerSecret",
        100000001 | 100000010 => "check ZEGO_APP_ID is the AppId of the ServerSecret",
        _ => "check ZEGO_APP_ID, ZEGO_API_URL and the app's configuration in the ZEGOCLOUD console",
    }
}

/// Runs every check and prints them; fails (exit 1) if any check failed.
pub(crate) async fn run(args: CheckArgs, file: Option<&ConfigFile>) -> anyhow::Result<()> {
    let mut checks = Vec::new();
    checks.extend(broker_checks(&args, file).await);
    checks.push(database_check(args.database_url.as_deref()).await);
    checks.extend(api_checks(&args, file).await);
    if args.json {
        println!("{}", to_json(&checks));
    } else {
        print!("{}", render(&checks));
    }
    if passed(&checks) {
        Ok(())
    } else {
        let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
        anyhow::bail!("check: {failed} of {} checks failed", checks.len())
    }
}

async fn broker_checks(args: &CheckArgs, file: Option<&ConfigFile>) -> Vec<Check> {
    // With shards in the config file, every shard's queues (the default
    // shard's only if an app is in it).
    let shards = match crate::config::apps::file_shards(file) {
        Ok(shards) => shards,
        Err(e) => {
            return vec![Check::new(
                "config",
                Status::Fail,
                e.to_string(),
                Some("fix the config file's [[apps]]"),
            )]
        }
    };
    let (url, names) = match args.broker.resolve() {
        Ok(v) => v,
        Err(e) => {
            return vec![Check::new(
                "broker",
                Status::Fail,
                e.to_string(),
                Some("fix the setting it names"),
            )]
        }
    };
    let shown = config::redact_url(url.expose());
    let conn = match tokio::time::timeout(
        BROKER_CONNECT_TIMEOUT,
        crate::amqp::connect::connect(&url, "kickq-check"),
    )
    .await
    {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            return vec![Check::new(
                "broker",
                Status::Fail,
                format!("cannot connect to {shown}: {}", crate::amqp::connect::describe(&e)),
                Some("check the host, port, vhost, user and password of KICKQ_AMQP_URL"),
            )]
        }
        Err(_) => {
            return vec![Check::new(
                "broker",
                Status::Fail,
                format!("no answer from {shown} within {}s", BROKER_CONNECT_TIMEOUT.as_secs()),
                Some("check the host and port of KICKQ_AMQP_URL and the firewall"),
            )]
        }
    };
    let mut checks = vec![Check::new("broker", Status::Ok, format!("connected to {shown}"), None)];
    let first = crate::amqp::connect::nodes(url.expose())
        .into_iter()
        .next()
        .unwrap_or_default();
    let mut found = crate::amqp::version::probe(&first).await;
    if let (Ok(None), Some(base)) = (&found, &args.management_url) {
        found = crate::amqp::version::from_management(base, url.expose()).await;
    }
    checks.push(version_check(&found));
    for (name, expected) in expected_queues(&names, &shards, args.delivery_limit) {
        checks.push(queue_check(&conn, &name, expected).await);
    }
    if let Some(base) = &args.management_url {
        let reply = crate::dlq::policy::fetch(base, url.expose(), &names.dead).await;
        checks.push(dead_policy(&names.dead, &crate::dlq::policy::verdict(&reply)));
    }
    crate::amqp::connect::close(&conn, "kickq check done").await;
    checks
}

/// Every durable queue of the namespace (each shard's lanes, lease and record)
/// with the arguments kickq declares it with.
fn expected_queues(
    names: &Names,
    shards: &[crate::config::shards::ShardName],
    delivery_limit: u32,
) -> Vec<(String, FieldTable)> {
    let mut v = Vec::new();
    for (i, shard) in shards.iter().enumerate() {
        let names = &names.for_shard(shard);
        v.push((names.requests.clone(), topology::requests_args(names, delivery_limit)));
        if i == 0 {
            v.push((names.dead.clone(), topology::dead_args()));
        }
        v.push((names.leader.clone(), topology::lease_args()));
        v.push((names.leader_state.clone(), topology::leader_state_args()));
        if i == 0 {
            v.push((names.dead_lease.clone(), topology::lease_args()));
            v.push((names.dead_lock_state.clone(), topology::leader_state_args()));
        }
        for (delay, name) in &names.retry {
            v.push((name.clone(), topology::retry_args(names, Lane::Live, *delay)));
        }
        v.push((names.bulk.clone(), topology::requests_args(names, delivery_limit)));
        for (delay, name) in &names.bulk_retry {
            v.push((name.clone(), topology::retry_args(names, Lane::Bulk, *delay)));
        }
    }
    v
}

/// A passive declare to see whether the queue exists; only if it does, an
/// active declare with kickq's arguments on a throwaway channel, which the
/// broker answers PRECONDITION_FAILED when they differ (an active declare of
/// an absent queue would create it, so it is never sent for one).
async fn queue_check(conn: &Connection, queue: &str, expected: FieldTable) -> Check {
    let name = format!("queue {queue}");
    let fail = |e: &lapin::Error| {
        Check::new(
            &name,
            Status::Fail,
            format!("cannot inspect: {}", crate::amqp::connect::describe(e)),
            Some("check the user's configure permission on the vhost"),
        )
    };
    let found = match crate::amqp::topology::inspect(conn, queue).await {
        Ok(Some(q)) => q,
        Ok(None) => return Check::new(&name, Status::Ok, "absent: declared by `kickq run` at start", None),
        Err(e) => return fail(&e),
    };
    let active = async {
        let ch = conn.create_channel().await?;
        let r = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                expected,
            )
            .await;
        if r.is_ok() {
            let _ = ch.close(200, "".into()).await;
        }
        r
    };
    match active.await {
        Ok(_) => Check::new(
            &name,
            Status::Ok,
            format!(
                "arguments as kickq declares them ({} ready, {} consumers)",
                found.ready, found.consumers
            ),
            None,
        ),
        Err(e) if reply_code(&e) == Some(PRECONDITION_FAILED) => queue_mismatch(queue, &e.to_string()),
        Err(e) => fail(&e),
    }
}

/// The `broker version` line: the version, and a warning for each known
/// issue of its range ([`crate::amqp::version::notes`]).
pub(crate) fn version_check(found: &Result<Option<(String, String)>, String>) -> Check {
    let name = "broker version";
    match found {
        Ok(Some((product, version))) => {
            let notes = crate::amqp::version::notes(version);
            if notes.is_empty() {
                Check::new(name, Status::Ok, format!("{product} {version}"), None)
            } else {
                let issues: Vec<&str> = notes.iter().map(|n| n.issue).collect();
                let fixes: Vec<&str> = notes.iter().map(|n| n.fix).collect();
                Check::new(
                    name,
                    Status::Warn,
                    format!("{product} {version}: {}", issues.join("; ")),
                    Some(&fixes.join("; ")),
                )
            }
        }
        Ok(None) => Check::new(
            name,
            Status::Warn,
            "unknown: a TLS broker's handshake is not read",
            Some("set KICKQ_MANAGEMENT_URL to read the version from the management API"),
        ),
        Err(why) => Check::new(name, Status::Warn, format!("unknown: {why}"), None),
    }
}

/// The `dead policy` line: a policy capping the dead queue is a warning.
pub(crate) fn dead_policy(dead: &str, v: &crate::dlq::policy::Verdict) -> Check {
    use crate::dlq::policy::Verdict;
    let name = format!("dead policy {dead}");
    match v {
        Verdict::Absent => Check::new(name, Status::Ok, "absent: no policy to read", None),
        Verdict::Uncapped(None) => Check::new(name, Status::Ok, "no policy applies", None),
        Verdict::Uncapped(Some(p)) => Check::new(name, Status::Ok, format!("policy {p} does not cap it"), None),
        Verdict::Capped(p, caps) => Check::new(
            name,
            Status::Warn,
            format!("policy {p} caps it: {}", caps.join("; ")),
            Some("remove these keys from the policy, or exclude the dead queue from its pattern"),
        ),
        Verdict::Unknown(why) => Check::new(
            name,
            Status::Warn,
            format!("policies not checked: {why}"),
            Some("check KICKQ_MANAGEMENT_URL and that the management plugin is enabled"),
        ),
        Verdict::Unreported => Check::new(
            name,
            Status::Warn,
            "unknown: the management API reports no policy for the queue (metrics collection disabled, \
             RabbitMQ before 4.2.5)",
            Some(
                "run `rabbitmqctl list_policies` and check that no policy matching the dead queue sets \
                 delivery-limit, max-length, max-length-bytes, message-ttl or expires",
            ),
        ),
    }
}

async fn database_check(url: Option<&str>) -> Check {
    let name = "database";
    let Some(url) = url.filter(|u| !u.trim().is_empty()) else {
        return Check::new(
            name,
            Status::Ok,
            "DATABASE_URL unset: kickq runs without the audit ledger",
            None,
        );
    };
    let ledger = match crate::ledger::Ledger::connect(url).await {
        Ok(l) => l,
        Err(e) => return Check::new(name, Status::Fail, e.to_string(), Some("fix DATABASE_URL")),
    };
    if let Err(e) = ledger.ping().await {
        return Check::new(
            name,
            Status::Fail,
            format!("unreachable: {e}"),
            Some("check the host, port, database, user and password of DATABASE_URL"),
        );
    }
    match ledger.pending_migrations().await {
        Ok(p) if p.is_empty() => Check::new(name, Status::Ok, "reachable, every migration applied", None),
        Ok(p) => {
            let versions: Vec<String> = p
                .iter()
                .map(|m| format!("{:04} {}", m.version, m.description))
                .collect();
            Check::new(
                name,
                Status::Fail,
                format!("{} migration(s) not applied: {}", p.len(), versions.join(", ")),
                Some("run `kickq migrate` (or start `kickq run`, which applies them)"),
            )
        }
        Err(e) => Check::new(name, Status::Fail, format!("cannot read the migrations: {e}"), None),
    }
}

/// One API check per app: `api` for a single app, `api <app_id>` for each of several.
async fn api_checks(args: &CheckArgs, file: Option<&ConfigFile>) -> Vec<Check> {
    let file_apps = file.map_or(&[][..], |f| &f.apps[..]);
    let apps = match Apps::resolve(&args.zego, file_apps, config::DEFAULT_RATE, &args.api_url) {
        Ok(a) => a,
        Err(e) => {
            return vec![Check::new(
                "api",
                Status::Fail,
                e.to_string(),
                Some("set it as for `kickq run`"),
            )]
        }
    };
    let several = apps.len() > 1;
    let mut checks = Vec::new();
    for app in apps.iter() {
        let mut check = api_check(app, args.http_timeout).await;
        if several {
            check.check = format!("api {}", app.app_id());
        }
        checks.push(check);
    }
    checks
}

async fn api_check(app: &AppConfig, http_timeout: Duration) -> Check {
    let client = match ZegoClient::new(app.client_config(crate::zego::client::DEFAULT_CONNECT_TIMEOUT, http_timeout)) {
        Ok(c) => c,
        Err(e) => return Check::new("api", Status::Fail, e.to_string(), Some("fix ZEGO_API_URL")),
    };
    let tag = format!("kickq-check-{:016x}", rand::random::<u64>());
    let call = client.kickout(&tag, std::slice::from_ref(&tag), None).await;
    api_verdict(&call.result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: i64) -> Result<ApiReply, TransportError> {
        Ok(ApiReply {
            code,
            message: String::new(),
            request_id: "r-1".into(),
            http_status: 200,
        })
    }

    #[test]
    fn version_lines_by_table() {
        let found = |v: &str| Ok(Some(("RabbitMQ".to_owned(), v.to_owned())));
        let c = version_check(&found("4.0.5"));
        assert_eq!(
            (c.status, c.detail.as_str(), c.fix),
            (Status::Ok, "RabbitMQ 4.0.5", None)
        );
        let c = version_check(&found("4.0.2"));
        assert_eq!(c.status, Status::Warn);
        assert!(
            c.detail.starts_with("RabbitMQ 4.0.2: 4.0.0 to 4.0.4 can crash"),
            "{}",
            c.detail
        );
        assert!(c.fix.unwrap().contains("4.0.5"));
        let c = version_check(&found("3.13.4"));
        assert!(c.detail.contains("x-death") && c.status == Status::Warn, "{}", c.detail);
        // 4.2's Khepri keeps a lost node's exclusive queues; kickq's locks
        // are leases, so there is nothing to warn about.
        let c = version_check(&found("4.2.1"));
        assert_eq!(c.status, Status::Ok, "{}", c.detail);
        let c = version_check(&Ok(None));
        assert_eq!(c.status, Status::Warn);
        assert!(c.fix.unwrap().contains("KICKQ_MANAGEMENT_URL"));
        let c = version_check(&Err("no connection.start within 5s".into()));
        assert_eq!(
            (c.status, c.detail.as_str()),
            (Status::Warn, "unknown: no connection.start within 5s")
        );
    }

    #[test]
    fn api_verdicts() {
        let table: &[(Result<ApiReply, TransportError>, Status, &str)] = &[
            (reply(50001), Status::Ok, "code 50001"),
            (reply(104), Status::Ok, "accepted"),
            (reply(5024), Status::Ok, "accepted"),
            (reply(0), Status::Ok, "accepted"),
            (reply(100000004), Status::Fail, "clock"),
            (reply(100000005), Status::Fail, "100000005"),
            (reply(3), Status::Fail, "code 3"),
            (reply(206), Status::Warn, "not proven"),
            (reply(1), Status::Fail, "unexpected"),
            (reply(424242), Status::Fail, "unknown code"),
            (Err(TransportError::Timeout), Status::Fail, "timed out"),
        ];
        for (result, status, needle) in table {
            let c = api_verdict(result);
            assert_eq!(c.status, *status, "{result:?}: {c:?}");
            assert!(c.detail.contains(needle), "{result:?}: {c:?}");
            assert_eq!(c.fix.is_some(), *status != Status::Ok, "{c:?}");
        }
        assert!(api_verdict(&reply(100000004)).fix.unwrap().contains("NTP"));
        assert!(api_verdict(&reply(100000005))
            .fix
            .unwrap()
            .contains("ZEGO_SERVER_SECRET"));
        assert!(api_verdict(&reply(0)).detail.contains("RequestId r-1"));
    }

    #[test]
    fn inequivalent_arguments_are_read() {
        /// (argument, expected, actual)
        type Want<'a> = Option<(&'a str, Option<&'a str>, Option<&'a str>)>;
        let table: &[(&str, Want)] = &[
            (
                "PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' for queue 'k.requests' in vhost '/': received the value '20' of type 'long' but current is the value '5' of type 'long'",
                Some(("x-delivery-limit", Some("20"), Some("5"))),
            ),
            (
                "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue 'k.retry.1s' in vhost '/': received the value '1000' of type 'long' but current is none",
                Some(("x-message-ttl", Some("1000"), None)),
            ),
            (
                "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'q' in vhost '/': received 'true' but current is 'false'",
                Some(("durable", Some("true"), Some("false"))),
            ),
            (
                "inequivalent arg 'x-max-length' for queue 'q' in vhost '/': received none but current is the value '9' of type 'long'",
                Some(("x-max-length", None, Some("9"))),
            ),
            ("PRECONDITION_FAILED - something else", None),
        ];
        for (text, want) in table {
            let got = parse_inequivalent(text);
            let want = want.map(|(a, e, c)| ArgDiff {
                arg: a.into(),
                expected: e.map(Into::into),
                actual: c.map(Into::into),
            });
            assert_eq!(got, want, "{text}");
        }
        let c = queue_mismatch("k.requests", table[0].0);
        assert_eq!(c.status, Status::Fail);
        assert!(
            c.detail
                .starts_with("argument x-delivery-limit is 5 on the broker, kickq declares 20"),
            "{c:?}"
        );
        let raw = queue_mismatch("q", "PRECONDITION_FAILED - something else");
        assert!(raw.detail.contains("something else"), "{raw:?}");
    }

    #[test]
    fn output_and_exit_follow_the_worst_check() {
        let ok = Check::new("broker", Status::Ok, "connected", None);
        let warn = Check::new("api", Status::Warn, "rate-limited", Some("later"));
        let fail = Check::new("database", Status::Fail, "down", Some("start it"));
        assert!(passed(&[ok.clone(), warn.clone()]));
        assert!(!passed(&[ok.clone(), fail.clone()]));
        assert_eq!(
            render(&[ok.clone(), warn, fail.clone()]),
            "ok    broker: connected\nwarn  api: rate-limited; fix: later\nFAIL  database: down; fix: start it\n"
        );
        let json = to_json(&[ok, fail]);
        assert_eq!(json["ok"], false);
        assert_eq!(json["checks"][0]["status"], "ok");
        assert_eq!(json["checks"][0]["fix"], serde_json::Value::Null);
        assert_eq!(json["checks"][1]["check"], "database");
        assert_eq!(json["checks"][1]["fix"], "start it");
    }
}
