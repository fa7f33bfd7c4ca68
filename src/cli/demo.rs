//! `kickq demo`: the first command a newcomer runs. An in-process mock-zego with a few failing rooms, a sample
//! sweep enqueued in a namespace of its own, the real worker draining it, progress, a summary, and the cleanup
//! (with `--keep`, of every queue but the dead letters', to try `kickq dlq` on).

use crate::amqp::publish::{persistent_json, Publisher};
use crate::amqp::topology::{self, Names, DEFAULT_DELIVERY_LIMIT};
use crate::cli::flags::BrokerArgs;
use crate::config::Credentials;
use crate::mock_zego::{parse_fault, MockConfig, MockZego};
use crate::pipeline::coalescer::CoalescerConfig;
use crate::secret::Secret;
use crate::worker::WorkerConfig;
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use lapin::options::QueueDeleteOptions;
use lapin::types::FieldTable;
use lapin::Connection;
use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The demo's AppId and secret: the vendor documentation's example values,
/// known to the in-process mock only.
const DEMO_APP_ID: u32 = 1234567890;
const DEMO_SECRET: &str = "0123456789abcdef0123456789abcdef";
/// The API's documented limit; the demo shows kickq holding it.
const DEMO_RATE: u32 = 50;
/// Rooms and users of the sample sweep: 2,500 one-user kicks, about 12 s of calls at 50/s.
const ROOMS: usize = 100;
const USERS_PER_ROOM: usize = 25;
/// How long the demo waits before giving up (it should finish well before).
const DEMO_TIMEOUT: Duration = Duration::from_secs(120);

/// `kickq demo`: run a sample sweep against an in-process mock API.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DemoArgs {
    /// RabbitMQ URL (the demo uses its own queues, never `kickq.*`).
    #[arg(long = "amqp-url", env = "KICKQ_AMQP_URL", default_value = crate::config::DEFAULT_AMQP_URL, hide_env_values = true, hide_default_value = true)]
    amqp_url: String,
    /// Leave the demo's dead letters in <namespace>.dead (its other queues
    /// are deleted) and print the command that lists them.
    #[arg(long)]
    keep: bool,
    /// Serve the web console while the demo runs (and after its sweep, until
    /// Ctrl-C), and print its URL and a login token made for this run.
    #[arg(long)]
    console: bool,
    /// Where --console listens.
    #[arg(long = "console-addr", value_name = "HOST:PORT", default_value = crate::worker::DEMO_CONSOLE_ADDR)]
    console_addr: std::net::SocketAddr,
}

/// The demo's console: a fresh token in a file of its own (owner-only), deleted when the demo ends.
struct DemoConsole {
    config: crate::worker::ConsoleConfig,
    token: String,
}

impl DemoConsole {
    fn new(addr: std::net::SocketAddr, namespace: &str) -> anyhow::Result<DemoConsole> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let token = crate::access::tokens::random_token();
        let path = std::env::temp_dir().join(format!("{namespace}.console-token"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        writeln!(f, "{token}")?;
        Ok(DemoConsole {
            config: crate::worker::ConsoleConfig {
                addr,
                token_file: path,
                management_url: None,
            },
            token,
        })
    }
}

impl Drop for DemoConsole {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.config.token_file);
    }
}

/// One line of the sample: a kick job or, for the last few, input the worker must refuse.
fn sample() -> (Vec<Vec<u8>>, Expect) {
    let mut bodies = Vec::new();
    let mut expect = Expect::default();
    for r in 0..ROOMS {
        // A few rooms misbehave: 3 are gone (nothing to do), 2 are refused for
        // good (dead letters), 5 are flaky (retried, then kicked).
        let room = match r {
            0..=2 => format!("gone-{r}"),
            3..=4 => format!("banned-{r}"),
            5..=9 => format!("flaky-{r}"),
            _ => format!("room-{r}"),
        };
        for u in 0..USERS_PER_ROOM {
            let user = if r == 10 && u < 3 {
                format!("ghost-{u}")
            } else {
                format!("user-{r}-{u}")
            };
            let body = serde_json::json!({"room_id": room, "user_ids": [user], "reason": "demo sweep"});
            bodies.push(serde_json::to_vec(&body).expect("a json! value always serializes"));
            if room.starts_with("gone") || user.starts_with("ghost") {
                expect.nothing_to_do += 1;
            } else if room.starts_with("banned") {
                expect.dead_letters += 1;
            } else {
                expect.kicks.insert((room.clone(), user));
            }
        }
    }
    for bad in [
        &b"this is not json"[..],
        br#"{"room_id":"room-1","user_ids":[]}"#,
        br#"{"room_id":"room-1"}"#,
    ] {
        bodies.push(bad.to_vec());
        expect.dead_letters += 1;
    }
    (bodies, expect)
}

#[derive(Default)]
struct Expect {
    kicks: BTreeSet<(String, String)>,
    nothing_to_do: usize,
    dead_letters: usize,
}

/// Runs the demo.
pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let namespace = format!("kickq-demo-{}", std::process::id());
    let broker = BrokerArgs {
        amqp_url: args.amqp_url.clone(),
        namespace,
        retry_delays: "500ms,1s,2s".into(),
    };
    let (url, names) = broker.resolve()?;
    let conn = match crate::amqp::connect::connect(&url, "kickq-demo").await {
        Ok(c) => c,
        Err(e) => match crate::amqp::connect::explain(&url, &e) {
            e @ crate::amqp::connect::ConnectError::Unreachable { .. } => anyhow::bail!(
                "no RabbitMQ at {}: start the local service (rabbitmq-server -detached) or `docker compose up -d rabbitmq`, or set KICKQ_AMQP_URL ({e})",
                crate::config::redact_url(url.expose())
            ),
            e => anyhow::bail!("{e}"),
        },
    };
    let publisher = Publisher::open(&conn).await?;
    topology::declare(publisher.channel(), &names, DEFAULT_DELIVERY_LIMIT).await?;
    let console = match args.console {
        true => Some(DemoConsole::new(args.console_addr, &names.namespace)?),
        false => None,
    };
    let result = demo(&url, &names, &conn, &publisher, console.as_ref()).await;
    drop(console);
    // Clean up whatever happened; --keep spares the dead letters only once the demo succeeded.
    let keep = args.keep && result.is_ok();
    let deleted = delete_queues(publisher.channel(), &names, keep).await;
    crate::amqp::connect::close(&conn, "demo done").await;
    deleted.context("deleting the demo's queues")?;
    result?;
    if keep {
        println!(
            "The demo's dead letters stay in {}; its other queues are deleted. See them with:",
            names.dead
        );
        let env_url = std::env::var("KICKQ_AMQP_URL").ok();
        println!(
            "  {}",
            list_command(&names.namespace, &args.amqp_url, env_url.as_deref())
        );
        println!("and delete the queues it and `kickq dlq` leave when done:");
        for queue in kept_queues(&names) {
            println!("  rabbitmqctl delete_queue {queue}");
        }
    } else {
        println!(
            "The demo's queues ({}.*) are deleted now; `kickq demo --keep` leaves its dead letters to try `kickq dlq` on.",
            names.namespace
        );
    }
    Ok(())
}

/// The queues a `--keep` demo leaves, with those a `kickq dlq` pass on them
/// declares (its lease and its record).
fn kept_queues(names: &Names) -> [&str; 3] {
    [&names.dead, &names.dead_lease, &names.dead_lock_state]
}

/// The `kickq dlq list` command that shows the demo's dead letters. The URL
/// holds a password, so it is never printed: when the demo's came neither
/// from the environment (`env_url`) nor the default, the command says to pass it again.
fn list_command(namespace: &str, amqp_url: &str, env_url: Option<&str>) -> String {
    let url = if env_url == Some(amqp_url) || amqp_url == crate::config::DEFAULT_AMQP_URL {
        ""
    } else {
        " --amqp-url <the URL given to the demo>"
    };
    format!("kickq dlq list --namespace {namespace}{url}")
}

/// Deletes the demo's queues: all of them, or all but the dead letters'.
async fn delete_queues(channel: &lapin::Channel, names: &Names, keep_dead: bool) -> Result<(), lapin::Error> {
    if !keep_dead {
        return topology::delete_all(channel, names).await.map(|_| ());
    }
    for name in names.all().into_iter().filter(|n| *n != names.dead) {
        channel.queue_delete(name.into(), QueueDeleteOptions::default()).await?;
    }
    Ok(())
}

async fn demo(
    url: &Secret,
    names: &Names,
    conn: &Connection,
    publisher: &Publisher,
    console: Option<&DemoConsole>,
) -> anyhow::Result<()> {
    let faults = [
        "room=gone-*,code=50001",
        "room=banned-*,code=2",
        "room=flaky-*,code=1,first=10",
        "users=ghost-*,absent",
    ]
    .iter()
    .map(|f| parse_fault(f).map_err(|e| anyhow::anyhow!("{e}")))
    .collect::<anyhow::Result<Vec<_>>>()?;
    let mock = MockZego::start(
        MockConfig {
            app_id: DEMO_APP_ID,
            secret: Secret::new(DEMO_SECRET),
            apps: Vec::new(),
            rate_limit: DEMO_RATE,
            faults,
            clock_offset_secs: 0,
            id_charset: crate::job::IdCharset::Vendor,
            distance: Default::default(),
        },
        "127.0.0.1:0".parse().expect("a literal socket address"),
    )
    .await
    .context("starting the in-process mock API")?;
    let (bodies, expect) = sample();
    println!(
        "kickq demo: mock API at {} (limit {DEMO_RATE} calls/s), queues {}.*",
        mock.base_url(),
        names.namespace
    );
    println!(
        "enqueueing {} messages: {} kicks over {ROOMS} rooms, with gone rooms, a refused room, flaky rooms, absent users and 3 malformed messages",
        bodies.len(),
        ROOMS * USERS_PER_ROOM
    );
    let messages = bodies
        .iter()
        .map(|b| (&names.requests, b, persistent_json(None, FieldTable::default())));
    publisher
        .publish_all(crate::amqp::publish::PUBLISH_WINDOW, messages)
        .await?;

    let stop = CancellationToken::new();
    let cfg = WorkerConfig {
        connection_name: format!("{}-worker", names.namespace),
        coalescer: CoalescerConfig {
            drain_deadline: Duration::from_secs(2),
            ..CoalescerConfig::default()
        },
        probe_interval: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        http_timeout: Duration::from_secs(5),
        ..WorkerConfig::new(
            url.clone(),
            names.clone(),
            Credentials {
                app_id: DEMO_APP_ID,
                secret: Secret::new(DEMO_SECRET),
            },
        )
        .with_api_url(mock.base_url())
        .with_rate(DEMO_RATE)
    };
    let cfg = WorkerConfig {
        console: console.map(|c| c.config.clone()),
        ..cfg
    };
    let started = Instant::now();
    let worker = crate::worker::Worker::bind(cfg).await?;
    let console_at = worker.console_addr();
    if let (Some(c), Some(addr)) = (console, console_at) {
        println!("console: http://{addr}/  login token for this run: {}", c.token);
        println!("  (made for this run; log in with it until the demo stops)");
    }
    let worker = tokio::spawn(worker.run(stop.clone()));

    let total = expect.kicks.len() as u64;
    let bar = if std::io::stdout().is_terminal() {
        let b = ProgressBar::new(total);
        b.set_style(
            ProgressStyle::with_template("{spinner} kicked {pos}/{len} [{bar:30}] {per_sec} ETA {eta}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let mut last_line = Instant::now();
    let check = publisher.channel();
    loop {
        let kicked: BTreeSet<(String, String)> = mock.kicked().into_iter().map(|k| (k.room_id, k.user_id)).collect();
        let done = kicked.intersection(&expect.kicks).count() as u64;
        bar.set_position(done);
        if bar.is_hidden() && last_line.elapsed() >= Duration::from_secs(2) {
            println!("  kicked {done}/{total}");
            last_line = Instant::now();
        }
        let dead = depth(check, &names.dead).await?;
        if done == total && dead as usize >= expect.dead_letters && depth(check, &names.requests).await? == 0 {
            break;
        }
        if started.elapsed() > DEMO_TIMEOUT {
            stop.cancel();
            anyhow::bail!("the demo did not finish within {DEMO_TIMEOUT:?}: {done}/{total} kicked");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    // The sweep's calls, before any the console's replays add.
    let counters = mock.counters();
    if let Some(addr) = console_at {
        println!(
            "sweep done in {:.1} s; the console stays up at http://{addr}/ until Ctrl-C, which stops the demo and deletes its queues",
            elapsed.as_secs_f64(),
        );
        let signalled = CancellationToken::new();
        tokio::spawn(crate::cli::signals::cancel_on_signal(signalled.clone()));
        signalled.cancelled().await;
    }
    stop.cancel();
    let summary = worker.await.context("worker task")??;

    let calls = counters.calls;
    // Read without consuming, so that --keep leaves them all.
    let peeked = crate::dlq::pass::peek(conn, &names.dead, &Default::default(), None, |_| {}).await?;
    let mut letters: BTreeMap<&'static str, usize> = BTreeMap::new();
    for l in &peeked.letters {
        *letters.entry(l.error.as_str()).or_insert(0) += 1;
    }
    println!();
    println!("done in {:.1} s", elapsed.as_secs_f64());
    println!("  users kicked          {}", expect.kicks.len());
    println!(
        "  nothing to do         {} (room gone or user not in it)",
        expect.nothing_to_do
    );
    println!(
        "  API calls             {calls}, against {} for one call per message ({:.1} users per call)",
        bodies.len() - 3,
        (expect.kicks.len() + expect.nothing_to_do + expect.dead_letters - 3) as f64 / calls.max(1) as f64
    );
    println!(
        "  calls per second      {:.1} achieved, limit {DEMO_RATE}; busiest second {} calls, {} rate-limit answers",
        calls as f64 / elapsed.as_secs_f64(),
        counters.max_calls_in_1s,
        counters.rate_limited
    );
    println!("  deliveries acked      {}", summary.tally.acked);
    println!("  dead letters          {}", letters.values().sum::<usize>());
    for (error, n) in &letters {
        println!("    {error:<20} {n}");
    }
    println!();
    println!("In a real deployment, inspect and replay dead letters with:");
    println!("  kickq dlq list                      # what failed and why");
    println!("  kickq dlq replay --error permanent  # after fixing the cause");
    mock.shutdown().await;
    Ok(())
}

async fn depth(channel: &lapin::Channel, queue: &str) -> anyhow::Result<u32> {
    let q = channel
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(q.message_count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_demo_names_every_queue_a_dlq_pass_leaves() {
        let names = Names::new("kickq-demo-7", &[std::time::Duration::from_secs(1)]);
        assert_eq!(
            kept_queues(&names),
            [
                "kickq-demo-7.dead",
                "kickq-demo-7.dead.lease",
                "kickq-demo-7.dead.lock.record"
            ]
        );
    }

    #[test]
    fn the_list_command_names_the_namespace_and_never_the_url() {
        let other = "amqp://u:secret@mq:5672/%2f";
        let cases = [
            (
                crate::config::DEFAULT_AMQP_URL,
                None,
                "kickq dlq list --namespace kickq-demo-7",
            ),
            (other, Some(other), "kickq dlq list --namespace kickq-demo-7"),
            (
                other,
                None,
                "kickq dlq list --namespace kickq-demo-7 --amqp-url <the URL given to the demo>",
            ),
            (
                other,
                Some("amqp://elsewhere"),
                "kickq dlq list --namespace kickq-demo-7 --amqp-url <the URL given to the demo>",
            ),
        ];
        for (url, env, want) in cases {
            assert_eq!(list_command("kickq-demo-7", url, env), want, "{url} {env:?}");
        }
    }
}
