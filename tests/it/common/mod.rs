//! Shared test helpers: the broker and database to use (the machine's services named by `KICKQ_TEST_*`, else
//! testcontainers), unique namespaces that delete their queues, an in-process mock-zego, publishing and reading
//! queues, and polling.
#![allow(dead_code)]

use futures_util::StreamExt;
use kickq::mock_zego::{MockConfig, MockZego};
use kickq::secret::Secret;
use kickq::testkit::headers;
use kickq::testkit::publish::{persistent_json, Publisher};
use kickq::testkit::topology::{self, Names};
use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

pub(crate) const APP_ID: u32 = 1234567890;
pub(crate) const SECRET: &str = "0123456789abcdef0123456789abcdef";
/// The second app of the several-app tests, with its own secret.
pub(crate) const APP_B: u32 = 987654321;
pub(crate) const SECRET_B: &str = "fedcba9876543210fedcba9876543210";

/// The broker: `KICKQ_TEST_AMQP_URL`, else a RabbitMQ container started once
/// per test binary and left for the reaper.
pub(crate) fn amqp_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| match std::env::var("KICKQ_TEST_AMQP_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => start_container(|| async {
            use testcontainers_modules::testcontainers::runners::AsyncRunner;
            let c = testcontainers_modules::rabbitmq::RabbitMq::default()
                .start()
                .await
                .expect("KICKQ_TEST_AMQP_URL is unset and no Docker engine could start RabbitMQ");
            let port = c.get_host_port_ipv4(5672).await.expect("container exposes 5672");
            std::mem::forget(c);
            format!("amqp://guest:guest@127.0.0.1:{port}/%2f")
        }),
    })
    .clone()
}

/// PostgreSQL: `KICKQ_TEST_DATABASE_URL`, else a container.
pub(crate) fn database_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| match std::env::var("KICKQ_TEST_DATABASE_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => start_container(|| async {
            use testcontainers_modules::testcontainers::runners::AsyncRunner;
            let c = testcontainers_modules::postgres::Postgres::default()
                .start()
                .await
                .expect("KICKQ_TEST_DATABASE_URL is unset and no Docker engine could start PostgreSQL");
            let port = c.get_host_port_ipv4(5432).await.expect("container exposes 5432");
            std::mem::forget(c);
            format!("postgres://postgres:postgres@127.0.0.1:{port}/postgres")
        }),
    })
    .clone()
}

fn start_container<F, Fut>(f: F) -> String
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = String>,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f())
    })
    .join()
    .expect("container start thread")
}

/// A fresh database for one test, dropped by [`TestDb::drop_db`].
pub(crate) struct TestDb {
    pub url: String,
    admin: String,
    name: String,
}

impl TestDb {
    pub(crate) async fn new() -> TestDb {
        let admin = database_url();
        let name = format!(
            "kickq_test_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let pool = sqlx::PgPool::connect(&admin)
            .await
            .expect("connect to the test PostgreSQL");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        let mut url = url::Url::parse(&admin).unwrap();
        url.set_path(&format!("/{name}"));
        TestDb {
            url: url.to_string(),
            admin,
            name,
        }
    }

    /// A fresh database with every migration applied.
    pub(crate) async fn migrated() -> TestDb {
        let db = TestDb::new().await;
        kickq::testkit::ledger::Ledger::connect(&db.url)
            .await
            .unwrap()
            .migrate()
            .await
            .unwrap();
        db
    }

    pub(crate) async fn drop_db(self) {
        let pool = sqlx::PgPool::connect(&self.admin).await.unwrap();
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
            .execute(&pool)
            .await;
        pool.close().await;
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Retry delays short enough for tests.
pub(crate) const TEST_RETRY_DELAYS: &[Duration] = &[
    Duration::from_millis(200),
    Duration::from_millis(400),
    Duration::from_millis(800),
];

/// A unique namespace whose queues are deleted when it drops (even when the
/// test panics), because the broker outlives every run.
pub(crate) struct Ns {
    pub names: Names,
    /// Shards whose queues are deleted too (see [`Ns::shard`]).
    shards: std::sync::Mutex<Vec<Names>>,
}

impl Ns {
    pub(crate) fn new(tag: &str) -> Ns {
        let ns = format!(
            "kqt-{tag}-{}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            rand::random::<u16>()
        );
        Ns {
            names: Names::new(&ns, TEST_RETRY_DELAYS),
            shards: Default::default(),
        }
    }

    /// Deletes these names' queues when it drops (names made elsewhere).
    pub(crate) fn for_names(names: Names) -> Ns {
        Ns {
            names,
            shards: Default::default(),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.names.namespace
    }

    /// The queue names of `shard` in this namespace, deleted with it.
    pub(crate) fn shard(&self, shard: &str) -> Names {
        let names = self
            .names
            .for_shard(&kickq::config::shards::ShardName::parse(shard).unwrap());
        self.shards.lock().unwrap().push(names.clone());
        names
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        // The namespace's token files (see `token_file`).
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("{}-tokens", self.name())));
        let mut all = vec![self.names.clone()];
        all.extend(self.shards.lock().unwrap().drain(..));
        let url = amqp_url();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(conn) = Connection::connect(&url, ConnectionProperties::default()).await {
                    if let Ok(ch) = conn.create_channel().await {
                        for names in &all {
                            let _ = topology::delete_all(&ch, names).await;
                        }
                    }
                    let _ = conn.close(200, "test cleanup".into()).await;
                }
            })
        })
        .join();
    }
}

/// A connection and a confirm-mode publisher for test-side work.
pub(crate) struct Broker {
    pub conn: Connection,
    pub publisher: Publisher,
    pub channel: Channel,
}

impl Broker {
    pub(crate) async fn connect() -> Broker {
        let conn = Connection::connect(
            &amqp_url(),
            ConnectionProperties::default().with_connection_name("kickq-test-side".into()),
        )
        .await
        .expect("connect to the test broker");
        let publisher = Publisher::open(&conn).await.unwrap();
        let channel = conn.create_channel().await.unwrap();
        Broker {
            conn,
            publisher,
            channel,
        }
    }

    /// Declares the namespace's topology as the worker would.
    pub(crate) async fn declare(&self, names: &Names) {
        topology::declare(&self.channel, names, topology::DEFAULT_DELIVERY_LIMIT)
            .await
            .unwrap();
    }

    /// Publishes a raw body, persistent, confirmed. A nack means the broker
    /// did not store it (RabbitMQ 3.10 nacks now and then into a quorum queue
    /// declared a moment ago): the message is sent again, as any producer
    /// would, at most three times.
    pub(crate) async fn publish_raw(&self, queue: &str, body: &[u8]) {
        for attempt in 1..=3 {
            match self
                .publisher
                .publish(queue, body, persistent_json(None, FieldTable::default()))
                .await
            {
                Ok(()) => return,
                Err(kickq::testkit::publish::PublishError::Nacked) if attempt < 3 => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("publishing to {queue}: {e}"),
            }
        }
    }

    /// Publishes many bodies, pipelined, then waits for every confirm.
    pub(crate) async fn publish_many(&self, queue: &str, bodies: &[Vec<u8>]) {
        let messages = bodies
            .iter()
            .map(|b| (queue, b, persistent_json(None, FieldTable::default())));
        let n = self
            .publisher
            .publish_all(kickq::testkit::publish::PUBLISH_WINDOW, messages)
            .await
            .unwrap();
        assert_eq!(n, bodies.len() as u64);
    }

    /// Messages ready in a queue (passive declare).
    pub(crate) async fn depth(&self, queue: &str) -> u32 {
        let ch = self.conn.create_channel().await.unwrap();
        let q = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let _ = ch.close(200, "".into()).await;
        q.message_count()
    }

    /// Takes every message from a queue (acking them): body and properties.
    pub(crate) async fn drain(&self, queue: &str) -> Vec<(Vec<u8>, BasicProperties)> {
        let mut out = Vec::new();
        while let Some(m) = self
            .channel
            .basic_get(queue.into(), BasicGetOptions::default())
            .await
            .unwrap()
        {
            m.delivery.acker.ack(BasicAckOptions::default()).await.unwrap();
            out.push((m.delivery.data.clone(), m.delivery.properties.clone()));
        }
        out
    }
}

impl Broker {
    /// Takes every ready message from a queue with a consumer (acking them),
    /// in queue order: `{ns}.requests` has single active consumer, which
    /// refuses `basic.get`. The prefetch stays small because RabbitMQ 3.x
    /// quorum queues can drop acks still queued in the channel when it closes
    /// (rabbitmq-server#10327), which would hand the messages out again.
    pub(crate) async fn take_all(&self, queue: &str) -> Vec<(Vec<u8>, BasicProperties)> {
        let n = self.depth(queue).await as usize;
        let ch = self.conn.create_channel().await.unwrap();
        ch.basic_qos(16, Default::default()).await.unwrap();
        let mut consumer = ch
            .basic_consume(queue.into(), "".into(), Default::default(), FieldTable::default())
            .await
            .unwrap();
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let d = tokio::time::timeout(Duration::from_secs(10), consumer.next())
                .await
                .expect("a ready message arrives")
                .expect("the consumer is open")
                .expect("a delivery");
            d.acker.ack(BasicAckOptions::default()).await.unwrap();
            out.push((d.data, d.properties));
        }
        let _ = ch.close(200, "".into()).await;
        out
    }
}

/// Reads a dead letter's kickq headers.
pub(crate) fn dead_info(props: &BasicProperties) -> headers::DeadLetter {
    headers::read_dead_letter(props.headers().as_ref())
}

/// A job body.
pub(crate) fn job(room: &str, users: &[&str], reason: Option<&str>) -> Vec<u8> {
    let mut v = serde_json::json!({"room_id": room, "user_ids": users});
    if let Some(r) = reason {
        v["reason"] = r.into();
    }
    serde_json::to_vec(&v).unwrap()
}

/// Starts the mock on a free loopback port.
pub(crate) async fn mock(rate_limit: u32) -> MockZego {
    MockZego::start(
        MockConfig {
            app_id: APP_ID,
            secret: Secret::new(SECRET),
            apps: Vec::new(),
            rate_limit,
            faults: Vec::new(),
            clock_offset_secs: 0,
            id_charset: kickq::job::IdCharset::Vendor,
            distance: Default::default(),
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .expect("mock-zego binds a loopback port")
}

/// A mock serving [`APP_ID`] and [`APP_B`], each with its own secret and
/// its own `rate` window, with these faults.
pub(crate) async fn two_app_mock(rate: u32, faults: &[&str]) -> MockZego {
    MockZego::start(
        MockConfig {
            app_id: APP_ID,
            secret: Secret::new(SECRET),
            apps: vec![kickq::mock_zego::MockApp {
                app_id: APP_B,
                secret: Secret::new(SECRET_B),
            }],
            rate_limit: rate,
            faults: faults
                .iter()
                .map(|f| kickq::mock_zego::fault_syntax::parse_fault(f).unwrap())
                .collect(),
            clock_offset_secs: 0,
            id_charset: kickq::job::IdCharset::Vendor,
            distance: Default::default(),
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap()
}

/// The most of `times` (sorted, ms) inside any one-second window.
pub(crate) fn busiest_second(times: &[u64]) -> usize {
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..times.len() {
        while times[hi] - times[lo] >= 1000 {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

/// Polls `f` every 50 ms until it returns true or `limit` passes.
pub(crate) async fn wait_for<F, Fut>(limit: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !f().await {
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Consumes a queue's next message with a consumer (for tests that watch a queue).
pub(crate) async fn next_message(channel: &Channel, queue: &str) -> Option<Vec<u8>> {
    let mut consumer = channel
        .basic_consume(queue.into(), "".into(), Default::default(), FieldTable::default())
        .await
        .ok()?;
    let d = tokio::time::timeout(Duration::from_secs(5), consumer.next())
        .await
        .ok()??
        .ok()?;
    d.acker.ack(BasicAckOptions::default()).await.ok()?;
    Some(d.data)
}

/// A worker configuration for tests: fast retries, short probes and drains.
pub(crate) fn worker_config(ns: &Ns, api_url: &str, rate: u32) -> kickq::worker::WorkerConfig {
    use kickq::worker::CoalescerConfig;
    kickq::worker::WorkerConfig {
        coalescer: CoalescerConfig {
            drain_deadline: Duration::from_secs(2),
            max_hold: Duration::from_secs(10),
            ..CoalescerConfig::default()
        },
        budget: kickq::worker::Budget {
            max_attempts: 4,
            max_unknown_attempts: 3,
            max_age: Duration::from_secs(120),
            max_rate_limited: 100,
        },
        probe_interval: Duration::from_millis(300),
        halt_log_interval: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(1),
        http_timeout: Duration::from_secs(2),
        ..kickq::worker::WorkerConfig::new(
            Secret::new(amqp_url()),
            ns.names.clone(),
            kickq::config::Credentials {
                app_id: APP_ID,
                secret: Secret::new(SECRET),
            },
        )
        .with_connection_name(format!("{}-worker", ns.name()))
        .with_api_url(api_url)
        .with_rate(rate)
    }
}

/// An in-process worker.
pub(crate) struct Running {
    pub stop: tokio_util::sync::CancellationToken,
    pub handle: tokio::task::JoinHandle<Result<kickq::worker::RunSummary, kickq::worker::WorkerError>>,
    pub metrics_addr: Option<std::net::SocketAddr>,
    pub console_addr: Option<std::net::SocketAddr>,
}

pub(crate) async fn spawn_worker(cfg: kickq::worker::WorkerConfig) -> Running {
    init_logs();
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = kickq::worker::Worker::bind(cfg).await.expect("the worker binds");
    let metrics_addr = worker.metrics_addr();
    let console_addr = worker.console_addr();
    let handle = tokio::spawn(worker.run(stop.clone()));
    Running {
        stop,
        handle,
        metrics_addr,
        console_addr,
    }
}

impl Running {
    /// Graceful stop, as on SIGTERM.
    pub(crate) async fn stop(self) -> kickq::worker::RunSummary {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("the worker stops within its drain deadline")
            .expect("worker task")
            .expect("worker result")
    }
}

/// `rabbitmqctl` of the broker under test: `KICKQ_TEST_RABBITMQCTL` (a
/// command line, split at whitespace, e.g. `bash tests/support/rabbitmq4.sh
/// ctl single rabbitmqctl` for the RabbitMQ 4.0 test bed), else the
/// machine's `rabbitmqctl`.
pub(crate) fn rabbitmqctl_command() -> std::process::Command {
    let line = std::env::var("KICKQ_TEST_RABBITMQCTL").unwrap_or_else(|_| "rabbitmqctl".into());
    let mut words = line.split_whitespace();
    let mut cmd = std::process::Command::new(words.next().unwrap_or("rabbitmqctl"));
    cmd.args(words).current_dir(env!("CARGO_MANIFEST_DIR"));
    cmd
}

/// Closes, through `rabbitmqctl`, exactly the broker connections whose
/// client-provided name is `name` (tests share one broker and run in
/// parallel). Returns how many were closed.
pub(crate) fn close_connections_named(name: &str) -> usize {
    let out = rabbitmqctl_command()
        .args([
            "list_connections",
            "--no-table-headers",
            "--quiet",
            "pid",
            "client_properties",
        ])
        .output()
        .expect("rabbitmqctl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let needle = format!("{{\"connection_name\",\"{name}\"}}");
    let mut closed = 0;
    if !text.contains(&needle) {
        eprintln!("no connection named {name} in:\n{text}");
    }
    for line in text.lines().filter(|l| l.contains(&needle)) {
        let pid = line.split('\t').next().unwrap_or_default().trim();
        let status = rabbitmqctl_command()
            .args(["close_connection", pid, "closed by a kickq test"])
            .status()
            .expect("rabbitmqctl runs");
        if status.success() {
            closed += 1;
        }
    }
    closed
}

/// Logs to the test's captured output, filtered by RUST_LOG (default: warn).
pub(crate) fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A free loopback port (for a child's server).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A directory of the namespace's own holding a token file with `tokens`:
/// `(dir, file)`; the namespace removes the directory when it drops.
pub(crate) fn token_file(ns: &Ns, tokens: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("{}-tokens", ns.name()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tokens");
    std::fs::write(&file, tokens).unwrap();
    (dir, file)
}

/// A `kickq run` child process, configured for tests through the environment
/// (never argv: the secret must not show in `ps`).
pub(crate) fn spawn_binary_worker(ns: &Ns, api_url: &str, rate: u32, extra: &[(&str, &str)]) -> std::process::Child {
    binary_worker(ns, api_url, rate, extra)
        .spawn()
        .expect("spawn the kickq binary")
}

/// The command [`spawn_binary_worker`] runs, to change before spawning it
/// (a test that reads the worker's log pipes its stderr).
pub(crate) fn binary_worker(ns: &Ns, api_url: &str, rate: u32, extra: &[(&str, &str)]) -> std::process::Command {
    let delays: Vec<String> = TEST_RETRY_DELAYS
        .iter()
        .map(|d| format!("{}ms", d.as_millis()))
        .collect();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kickq"));
    cmd.arg("run")
        .env("KICKQ_AMQP_URL", amqp_url())
        .env("ZEGO_APP_ID", APP_ID.to_string())
        .env("ZEGO_SERVER_SECRET", SECRET)
        .env("ZEGO_API_URL", api_url)
        .env("KICKQ_NAMESPACE", ns.name())
        .env("KICKQ_RATE", rate.to_string())
        .env("KICKQ_ALLOW_RATE_ABOVE_DOCUMENTED", "true")
        .env("KICKQ_RETRY_DELAYS", delays.join(","))
        .env("KICKQ_PROBE_INTERVAL", "300ms")
        .env("KICKQ_DRAIN_DEADLINE", "2s")
        .env("KICKQ_METRICS_ADDR", "0")
        .env("KICKQ_CONNECTION_NAME", format!("{}-bin", ns.name()))
        .env("KICKQ_LOG_FORMAT", "json")
        .env_remove("DATABASE_URL")
        .env(
            "RUST_LOG",
            std::env::var("KICKQ_TEST_CHILD_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(std::process::Stdio::null());
    // An empty value unsets the variable.
    for (k, v) in extra {
        match v.is_empty() {
            true => cmd.env_remove(k),
            false => cmd.env(k, v),
        };
    }
    cmd
}

/// A child process killed (SIGKILL) and reaped when dropped, so a failing
/// test leaves no worker running.
pub(crate) struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The binary worker of [`binary_worker`] with its stderr piped: the guard
/// and the receiving end of its log lines that hold `needle` (read on a
/// thread of their own, so the worker never blocks on a full pipe).
pub(crate) fn spawn_binary_worker_logging(
    ns: &Ns,
    api_url: &str,
    rate: u32,
    extra: &[(&str, &str)],
    needle: &'static [&'static str],
) -> (ChildGuard, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut cmd = binary_worker(ns, api_url, rate, extra);
    cmd.stderr(std::process::Stdio::piped());
    let mut child = ChildGuard(cmd.spawn().expect("spawn the kickq binary"));
    let stderr = child.0.stderr.take().expect("stderr is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if needle.iter().any(|n| line.contains(n)) && tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

/// Runs `kickq` with the namespace's broker settings and optional stdin.
pub(crate) async fn kickq(ns: &Ns, args: &[&str], env: &[(&str, &str)], stdin: Option<&[u8]>) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_kickq"));
    cmd.args(args)
        .env("KICKQ_AMQP_URL", amqp_url())
        .env("KICKQ_NAMESPACE", ns.name())
        // The test namespaces' delay queues, so that cleanup deletes every queue declared.
        .env("KICKQ_RETRY_DELAYS", "200ms,400ms,800ms")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.kill_on_drop(true).spawn().expect("the kickq binary starts");
    let mut input = child.stdin.take().expect("stdin is piped");
    if let Some(bytes) = stdin {
        tokio::io::AsyncWriteExt::write_all(&mut input, bytes).await.unwrap();
    }
    drop(input);
    // A command that hangs fails its test here, killed, instead of holding
    // the suite until CI's time runs out.
    tokio::time::timeout(COMMAND_WITHIN, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("kickq {args:?} did not end within {COMMAND_WITHIN:?}; killed"))
        .unwrap()
}

/// The longest a `kickq` command of a test may run ([`kickq`]): far above
/// any command's own waits (a dlq pass waits in line 30 s at most).
pub(crate) const COMMAND_WITHIN: Duration = Duration::from_secs(120);

/// A command's stdout and stderr as text.
pub(crate) fn text(o: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Sends `signal` (`INT`, `TERM`, ...) to the process `pid`, as Ctrl-C or a
/// service manager would, and asserts it was delivered.
pub(crate) fn send_signal(pid: u32, signal: &str) {
    let sent = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success(), "kill -{signal} {pid}");
}
