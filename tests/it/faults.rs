//! The fault and security suite: the real `kickq` binary under SIGKILL storms, API outages, credential and
//! clock faults, rate bursts, hostile input, poison messages, a standby taking over, and (run alone, with
//! `--ignored`) broker restarts, closed connections and PostgreSQL outages.
//!
//! After every scenario each requested (job, user) is counted as kicked, nothing to do, dead-lettered, lost
//! or duplicated; lost must be 0. Every child runs at `RUST_LOG=debug`, and its whole output is scanned for
//! the secret, any `Signature` value and the AMQP password. Figures are printed as `FIGURE` lines, gathered
//! into RELIABILITY.md.

use crate::common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child worker whose stdout and stderr go to a file, so that the
/// leakage check can read every line it wrote.
struct Worker {
    child: Child,
    log: PathBuf,
}

fn log_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "kickq-fault-{tag}-{}-{}.log",
        std::process::id(),
        rand::random::<u32>()
    ))
}

fn start(ns: &Ns, api: &str, rate: u32, extra: &[(&str, &str)], tag: &str) -> Worker {
    let log = log_path(tag);
    let file = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kickq"));
    cmd.arg("run")
        .env("KICKQ_AMQP_URL", amqp_url())
        .env("ZEGO_APP_ID", APP_ID.to_string())
        .env("ZEGO_SERVER_SECRET", SECRET)
        .env("ZEGO_API_URL", api)
        .env("KICKQ_NAMESPACE", ns.name())
        .env("KICKQ_RATE", rate.to_string())
        .env("KICKQ_ALLOW_RATE_ABOVE_DOCUMENTED", "true")
        .env("KICKQ_RETRY_DELAYS", "200ms,400ms,800ms")
        .env("KICKQ_PROBE_INTERVAL", "300ms")
        .env("KICKQ_DRAIN_DEADLINE", "2s")
        .env("KICKQ_METRICS_ADDR", "0")
        .env("KICKQ_CONNECTION_NAME", format!("{}-{tag}", ns.name()))
        .env("KICKQ_LOG_FORMAT", "json")
        .env(
            "RUST_LOG",
            std::env::var("KICKQ_TEST_CHILD_LOG").unwrap_or_else(|_| "debug".into()),
        )
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    Worker {
        child: cmd.spawn().expect("spawn kickq"),
        log,
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // A failed test must not leave a worker running against the shared broker.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Worker {
    fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn term(&mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        self.child.wait().unwrap()
    }

    /// Asserts no secret reached the log, and that `ps` never showed one.
    fn assert_clean(&self, amqp_password: &str) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert_no_secret(&text, amqp_password, &self.log);
        let _ = std::fs::remove_file(&self.log);
    }
}

fn assert_no_secret(text: &str, amqp_password: &str, what: &std::path::Path) {
    assert!(
        !text.contains(SECRET),
        "the ServerSecret leaked into {}",
        what.display()
    );
    assert!(
        !text.contains("Signature="),
        "a signed URL leaked into {}",
        what.display()
    );
    assert!(
        !text.contains(&format!(":{amqp_password}@")),
        "the AMQP password leaked into {}",
        what.display()
    );
    for line in text.lines() {
        // A signature is 32 lower-case hex characters; nothing we log is.
        let hexrun = line
            .split(|c: char| !c.is_ascii_hexdigit())
            .any(|w| w.len() == 32 && w.chars().all(|c| c.is_ascii_digit() || c.is_ascii_lowercase()));
        assert!(!hexrun, "a 32-hex value (a signature?) in {}: {line}", what.display());
    }
}

/// The (room, user) pairs kicked, with how often.
fn kicks(mock: &kickq::mock_zego::MockZego) -> BTreeMap<(String, String), usize> {
    let mut m = BTreeMap::new();
    for k in mock.kicked() {
        *m.entry((k.room_id, k.user_id)).or_insert(0) += 1;
    }
    m
}

struct Account {
    kicked: usize,
    duplicated: usize,
    dead: usize,
    lost: usize,
}

/// Counts every requested pair as kicked, dead-lettered or lost.
async fn account(
    mock: &kickq::mock_zego::MockZego,
    broker: &Broker,
    ns: &Ns,
    want: &BTreeSet<(String, String)>,
) -> Account {
    let k = kicks(mock);
    let mut dead_pairs = BTreeSet::new();
    for (body, _) in broker.drain(&ns.names.dead).await {
        if let Ok(job) = serde_json::from_slice::<kickq::job::KickRequest>(&body) {
            for u in job.user_ids {
                dead_pairs.insert((job.room_id.clone(), u));
            }
        }
    }
    let kicked = want.iter().filter(|p| k.contains_key(*p)).count();
    let dead = want
        .iter()
        .filter(|p| !k.contains_key(*p) && dead_pairs.contains(*p))
        .count();
    Account {
        kicked,
        duplicated: k.values().map(|n| n - 1).sum(),
        dead,
        lost: want.len() - kicked - dead,
    }
}

fn sweep(rooms: usize, per_room: usize) -> (Vec<Vec<u8>>, BTreeSet<(String, String)>) {
    let mut bodies = Vec::new();
    let mut want = BTreeSet::new();
    for r in 0..rooms {
        for u in 0..per_room {
            let (room, user) = (format!("room-{r}"), format!("u{r}-{u}"));
            bodies.push(job(&room, &[&user], None));
            want.insert((room, user));
        }
    }
    (bodies, want)
}

async fn all_kicked(mock: &kickq::mock_zego::MockZego, want: &BTreeSet<(String, String)>) -> bool {
    let k = kicks(mock);
    want.iter().all(|p| k.contains_key(p))
}

/// 1: SIGKILL every ~second, ten times, restarting each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f01_sigkill_storm_loses_nothing() {
    let ns = Ns::new("f01");
    let rate = 300;
    let mock = mock(rate).await;
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let (bodies, want) = sweep(2000, 5);
    broker.publish_many(&ns.names.requests, &bodies).await;
    let mut logs = Vec::new();
    for round in 0..10 {
        let mut w = start(&ns, &mock.base_url(), rate, &[], &format!("r{round}"));
        tokio::time::sleep(Duration::from_millis(1200 + rand::random::<u64>() % 800)).await;
        w.kill9();
        logs.push(w);
    }
    let mut last = start(&ns, &mock.base_url(), rate, &[], "final");
    wait_for(Duration::from_secs(120), "every user kicked after the storm", || {
        all_kicked(&mock, &want)
    })
    .await;
    wait_for(Duration::from_secs(30), "drained", || async {
        broker.depth(&ns.names.requests).await == 0
    })
    .await;
    assert!(last.term().success());
    let a = account(&mock, &broker, &ns, &want).await;
    eprintln!(
        "FIGURE f01 users={} kicked={} dead={} lost={} duplicates={}",
        want.len(),
        a.kicked,
        a.dead,
        a.lost,
        a.duplicated
    );
    assert_eq!(a.lost, 0);
    assert_eq!(a.dead, 0);
    // Each kill can repeat at most what was in flight: 100 call slots of 5.
    assert!(a.duplicated <= 10 * 100 * 5, "{} duplicates", a.duplicated);
    for w in logs.iter().chain([&last]) {
        w.assert_clean("guest");
    }
}

/// 4: the queue deleted and re-declared under a running worker. Run alone:
/// RabbitMQ 3.10 can crash its at-least-once dead-letter supervisor when a
/// young quorum queue is deleted, which would break every other test; the
/// guard restores the broker afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "disturbs the shared broker: run alone with --ignored --test-threads=1"]
async fn f04_deleted_queue_is_consumed_again() {
    let _restore = BrokerGuard;
    let ns = Ns::new("f04");
    let mock = mock(1000).await;
    let broker = Broker::connect().await;
    let mut w = start(&ns, &mock.base_url(), 1000, &[], "w");
    wait_for(Duration::from_secs(20), "the worker declared its queues", || async {
        let ch = broker.conn.create_channel().await.unwrap();
        let ok = ch
            .queue_declare(
                ns.names.requests.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .is_ok();
        let _ = ch.close(200, "".into()).await;
        ok
    })
    .await;
    // Let the queue's dead-letter worker settle before pulling the queue away.
    tokio::time::sleep(Duration::from_secs(3)).await;
    broker
        .channel
        .queue_delete(ns.names.requests.as_str().into(), Default::default())
        .await
        .unwrap();
    let deleted_at = Instant::now();
    // An operator's re-declare comes a moment later. (Re-declaring within
    // milliseconds of the delete races the broker's cancel notification on
    // RabbitMQ 3.10: the consumer is left registered to the new queue but
    // never fed. RELIABILITY.md says so.) Whoever declares first, the worker
    // on reconnect or the operator, wins; the arguments are the same.
    tokio::time::sleep(Duration::from_secs(1)).await;
    broker.declare(&ns.names).await;
    broker
        .publish_raw(&ns.names.requests, &job("after-delete", &["u1"], None))
        .await;
    wait_for(Duration::from_secs(30), "a kick after the queue came back", || async {
        !mock.kicked().is_empty()
    })
    .await;
    eprintln!(
        "FIGURE f04 consuming_again_after_ms={}",
        deleted_at.elapsed().as_millis()
    );
    assert!(w.term().success());
    w.assert_clean("guest");
}

/// 5: the API down for 60 s (HTTP 500, hangs, code 1), then back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f05_api_outage_dead_letters_nothing() {
    let ns = Ns::new("f05");
    let mock = mock(1000).await;
    mock.set_faults(
        ["room=room-0*,http500", "room=room-1*,hang", "room=*,code=1"]
            .iter()
            .map(|f| kickq::mock_zego::parse_fault(f).unwrap())
            .collect(),
    );
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let (bodies, want) = sweep(30, 10);
    broker.publish_many(&ns.names.requests, &bodies).await;
    // The child declares delay queues of its own delays: delete them too.
    let _also_delete = Ns::for_names(kickq::testkit::topology::Names::new(
        ns.name(),
        &[1, 2, 4, 8, 16, 30].map(Duration::from_secs),
    ));
    let extra = [
        ("KICKQ_RETRY_DELAYS", "1s,2s,4s,8s,16s,30s"),
        ("KICKQ_HTTP_TIMEOUT", "2s"),
        ("KICKQ_MAX_ATTEMPTS", "8"),
    ];
    let mut w = start(&ns, &mock.base_url(), 1000, &extra, "w");
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(mock.kicked().is_empty());
    assert_eq!(broker.depth(&ns.names.dead).await, 0, "an outage dead-letters nothing");
    mock.set_faults(Vec::new());
    let back = Instant::now();
    wait_for(Duration::from_secs(90), "everything kicked after the outage", || {
        all_kicked(&mock, &want)
    })
    .await;
    let drain = back.elapsed();
    assert!(w.term().success());
    let a = account(&mock, &broker, &ns, &want).await;
    eprintln!(
        "FIGURE f05 users={} outage_s=60 drain_after_outage_ms={} dead={} lost={}",
        want.len(),
        drain.as_millis(),
        a.dead,
        a.lost
    );
    assert_eq!((a.lost, a.dead), (0, 0));
    w.assert_clean("guest");
}

/// 6: a wrong secret, then a clock outside the window: halted, nothing
/// dead-lettered, still ready (/status names the halt); resumes with
/// nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f06_credential_and_clock_faults_halt_then_resume() {
    for (tag, fault) in [("secret", 0), ("clock", 1)] {
        let ns = Ns::new("f06");
        let mock = mock(1000).await;
        match fault {
            0 => mock.set_secret(kickq::secret::Secret::new("not-the-secret-0000000000000000")),
            _ => mock.set_clock_offset(11 * 60),
        }
        let broker = Broker::connect().await;
        broker.declare(&ns.names).await;
        let (bodies, want) = sweep(10, 5);
        broker.publish_many(&ns.names.requests, &bodies).await;
        let port = 20000 + rand::random::<u16>() % 20000;
        let addr = format!("127.0.0.1:{port}");
        let mut w = start(
            &ns,
            &mock.base_url(),
            1000,
            &[("KICKQ_METRICS_ADDR", addr.as_str())],
            tag,
        );
        let code = if fault == 0 { 100000005 } else { 100000004 };
        wait_for(Duration::from_secs(20), "the halting code", || async {
            mock.calls().iter().any(|c| c.code == Some(code))
        })
        .await;
        // Halted but serving: readiness holds, /status names the halt.
        let ready = http_get(&format!("http://{addr}/readyz")).await;
        assert_eq!(ready.0, 200, "{ready:?}");
        let status = http_get(&format!("http://{addr}/status")).await;
        assert!(
            status.1.contains("\"degraded\":[\"halted") && status.1.contains(&code.to_string()),
            "{status:?}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(broker.depth(&ns.names.dead).await, 0);
        let halted_calls = mock.calls().len();
        match fault {
            0 => mock.set_secret(kickq::secret::Secret::new(SECRET)),
            _ => mock.set_clock_offset(0),
        }
        let fixed = Instant::now();
        wait_for(Duration::from_secs(60), "everything kicked after the fix", || {
            all_kicked(&mock, &want)
        })
        .await;
        let resumed = fixed.elapsed();
        wait_for(Duration::from_secs(10), "ready again", || async {
            http_get(&format!("http://{addr}/readyz")).await.0 == 200
        })
        .await;
        assert!(w.term().success());
        let a = account(&mock, &broker, &ns, &want).await;
        eprintln!(
            "FIGURE f06 fault={tag} calls_while_halted={halted_calls} resumed_after_fix_ms={} dead={} lost={}",
            resumed.as_millis(),
            a.dead,
            a.lost
        );
        assert_eq!((a.lost, a.dead), (0, 0));
        w.assert_clean("guest");
    }
}

async fn http_get(url: &str) -> (u16, String) {
    kickq::zego::client::install_crypto_provider();
    match reqwest::get(url).await {
        Ok(r) => {
            let s = r.status().as_u16();
            (s, r.text().await.unwrap_or_default())
        }
        Err(_) => (0, String::new()),
    }
}

/// 7: bursts of 7 and 206 answers: the bucket slows down, no retry storm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f07_rate_answers_slow_the_bucket_without_a_storm() {
    let ns = Ns::new("f07");
    let rate = 200;
    let mock = mock(rate).await;
    mock.set_faults(
        ["room=*,code=206,first=40", "room=*,code=7,first=40"]
            .iter()
            .map(|f| kickq::mock_zego::parse_fault(f).unwrap())
            .collect(),
    );
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let (bodies, want) = sweep(400, 5);
    broker.publish_many(&ns.names.requests, &bodies).await;
    // The child declares delay queues of its own delays: delete them too.
    let _also_delete = Ns::for_names(kickq::testkit::topology::Names::new(
        ns.name(),
        &[500, 1000, 2000, 4000].map(Duration::from_millis),
    ));
    let extra = [("KICKQ_MAX_ATTEMPTS", "8"), ("KICKQ_RETRY_DELAYS", "500ms,1s,2s,4s")];
    let mut w = start(&ns, &mock.base_url(), rate, &extra, "w");
    wait_for(Duration::from_secs(60), "everything kicked", || {
        all_kicked(&mock, &want)
    })
    .await;
    assert!(w.term().success());
    let calls = mock.calls();
    // Calls per second while the rate answers came, against the configured rate.
    let limited: Vec<u64> = calls
        .iter()
        .filter(|c| matches!(c.code, Some(7) | Some(206)))
        .map(|c| c.at_ms)
        .collect();
    let (first, last) = (limited[0], *limited.last().unwrap());
    let after: Vec<&kickq::mock_zego::CallRecord> = calls
        .iter()
        .filter(|c| c.at_ms > last && c.at_ms <= last + 1000)
        .collect();
    let burst_rate = limited.len() as f64 * 1000.0 / (last - first).max(1) as f64;
    eprintln!(
        "FIGURE f07 rate={rate} rate_answers={} burst_calls_per_s={burst_rate:.0} calls_in_the_second_after={} total_calls={} max_in_1s={}",
        limited.len(),
        after.len(),
        calls.len(),
        mock.counters().max_calls_in_1s
    );
    assert!(
        (after.len() as u32) < rate,
        "the bucket slowed down: {} calls in the second after",
        after.len()
    );
    assert!(mock.counters().max_calls_in_1s <= rate as u64);
    let a = account(&mock, &broker, &ns, &want).await;
    assert_eq!((a.lost, a.dead), (0, 0));
    // No storm: every user cost at most a few calls.
    assert!(calls.len() <= want.len() / 5 + 80 + 100, "{} calls", calls.len());
    w.assert_clean("guest");
}

/// 8: a hostile corpus: each dead-lettered verbatim with its reason, and the
/// mock never sees a user that was not asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f08_hostile_input_is_dead_lettered_verbatim() {
    let ns = Ns::new("f08");
    let mock = mock(1000).await;
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let thousand: Vec<String> = (0..1001).map(|i| format!("u{i}")).collect();
    let thousand: Vec<&str> = thousand.iter().map(String::as_str).collect();
    let bad: Vec<Vec<u8>> = vec![
        b"{not json".to_vec(),
        br#"{"room_id":["r"],"user_ids":["a"]}"#.to_vec(),
        br#"{"room_id":"r","user_ids":[]}"#.to_vec(),
        job("r", &thousand, None),
        job("r", &[&"y".repeat(65)], None),
        job("r", &["tab\there"], None),
        b"\xff\xfe\xfd".to_vec(),
        // Far over a job's 1 MiB cap, and under RabbitMQ 4's 16 MiB
        // max_message_size (3.x allows 128 MiB), so every broker takes it.
        vec![b'x'; 12 * 1024 * 1024],
        // Hostile ids outside ZEGOCLOUD's id set (KICKQ_ID_CHARSET=vendor).
        job("hostile", &["a&UserId[]=victim"], None),
        job("hostile", &["x=y", "with space"], None),
        job("hostile", &["é漢字"], None),
        job("hostile room", &["x=y"], None),
    ];
    let good = [
        job("hostile", &["a&UserId%5B%5D=victim"], None),
        job(
            "hostile",
            &["x=y", "p+q", "100%", "#frag", "semi;colon", "..\\/'`<>"],
            None,
        ),
        job("hostile", &["x=y", "x=y"], None),
    ];
    for b in bad.iter().chain(good.iter()) {
        broker.publish_raw(&ns.names.requests, b).await;
    }
    let mut w = start(&ns, &mock.base_url(), 1000, &[], "w");
    let asked: BTreeSet<&str> = [
        "a&UserId%5B%5D=victim",
        "x=y",
        "p+q",
        "100%",
        "#frag",
        "semi;colon",
        "..\\/'`<>",
    ]
    .into();
    wait_for(Duration::from_secs(30), "hostile-but-valid users kicked", || async {
        mock.kicked().len() >= asked.len()
    })
    .await;
    wait_for(Duration::from_secs(30), "every bad message dead-lettered", || async {
        broker.depth(&ns.names.dead).await as usize == bad.len()
    })
    .await;
    assert!(w.term().success());
    let seen: BTreeSet<String> = mock.calls().into_iter().flat_map(|c| c.user_ids).collect();
    assert_eq!(
        seen,
        asked.iter().map(|s| s.to_string()).collect(),
        "the mock saw only the users asked for"
    );
    let letters = broker.drain(&ns.names.dead).await;
    for (want_body, (body, props)) in bad.iter().zip(letters.iter()) {
        assert_eq!(body, want_body, "verbatim");
        assert_eq!(dead_info(props).error, kickq::testkit::headers::DeadError::Validation);
    }
    for (_, props) in &letters[letters.len() - 4..] {
        let detail = dead_info(props).detail;
        assert!(detail.contains("outside ZEGOCLOUD's"), "{detail}");
    }
    eprintln!(
        "FIGURE f08 hostile_messages={} dead_lettered_verbatim={} panics=0",
        bad.len(),
        letters.len()
    );
    w.assert_clean("guest");
}

/// 9: a message that fails on every delivery. No input crashes kickq (the
/// corpus and the fuzz target say so), so a consumer that returns it
/// stands in for a crashing one: the delivery limit dead-letters it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f09_poison_message_is_dead_lettered_by_the_delivery_limit() {
    use futures_util::StreamExt;
    use lapin::options::{BasicConsumeOptions, BasicRejectOptions};
    let ns = Ns::new("f09");
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    broker
        .publish_raw(&ns.names.requests, &job("poison", &["p"], None))
        .await;
    broker.publish_raw(&ns.names.requests, &job("fine", &["f"], None)).await;
    let ch = broker.conn.create_channel().await.unwrap();
    ch.basic_qos(1, Default::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume(
            ns.names.requests.as_str().into(),
            "crasher".into(),
            BasicConsumeOptions::default(),
            Default::default(),
        )
        .await
        .unwrap();
    let mut deliveries = 0;
    let mut fine = 0;
    while (fine == 0 || broker.depth(&ns.names.dead).await == 0) && deliveries < 100 {
        let d = tokio::time::timeout(Duration::from_secs(5), consumer.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        deliveries += 1;
        if d.data.windows(6).any(|w| w == b"poison") {
            d.acker.reject(BasicRejectOptions { requeue: true }).await.unwrap();
        } else {
            fine += 1;
            d.acker.ack(Default::default()).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = ch.close(200, "".into()).await;
    let letters = broker.drain(&ns.names.dead).await;
    assert_eq!(letters.len(), 1);
    let info = dead_info(&letters[0].1);
    assert_eq!(
        info.error,
        kickq::testkit::headers::DeadError::DeliveryLimit,
        "{info:?}"
    );
    let poison_deliveries = deliveries - fine;
    eprintln!("FIGURE f09 deliveries_before_dead_letter={poison_deliveries} collateral_messages_lost=0 other_messages_done={fine}");
    assert_eq!(
        poison_deliveries, 21,
        "the first delivery plus the 20 the delivery limit allows"
    );
    assert_eq!(fine, 1, "the other message was handled once");
}

/// 11: two workers on one queue; the active one killed; the standby takes
/// over within seconds and the AppId's rate is never exceeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "counts calls per second at the in-process mock to the call, which a loaded test process blurs: run alone with --ignored --test-threads=1"]
async fn f11_standby_takes_over_without_exceeding_the_rate() {
    let rate = 100;
    let f = kill_the_active_worker("f11", rate, sweep(1000, 5), &[], 200, Duration::from_secs(2)).await;
    eprintln!(
        "FIGURE f11 takeover_ms={} max_in_1s={} limit={rate} rate_limited={} lost={} duplicates={}",
        f.takeover.as_millis(),
        f.max_in_1s,
        f.rate_limited,
        f.lost,
        f.duplicated
    );
    assert!(f.takeover < Duration::from_secs(10));
    assert!(f.max_in_1s <= rate as u64, "{} calls in one second", f.max_in_1s);
    assert_eq!(f.rate_limited, 0);
    assert_eq!(f.lost, 0);
}

/// What a failover run saw.
struct Failover {
    takeover: Duration,
    standby_reconnects: usize,
    standby_said_so: bool,
    most_consumers: u64,
    backlog_at_kill: u64,
    max_in_1s: u64,
    rate_limited: u64,
    lost: usize,
    duplicated: usize,
}

/// Worker A drains `jobs`; once it kicked `kicks_first` users, worker B
/// starts and waits `standby` as a standby; then A gets `kill -9`. Returns
/// the time from the kill to B's first call and the accounting once every
/// user is kicked.
async fn kill_the_active_worker(
    tag: &str,
    rate: u32,
    (bodies, want): (Vec<Vec<u8>>, BTreeSet<(String, String)>),
    extra: &[(&str, &str)],
    kicks_first: usize,
    standby: Duration,
) -> Failover {
    let ns = Ns::new(tag);
    let mock = mock(rate).await;
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    broker.publish_many(&ns.names.requests, &bodies).await;
    let mut a = start(&ns, &mock.base_url(), rate, extra, "a");
    wait_for(Duration::from_secs(20), "A kicking", || async {
        mock.kicked().len() >= kicks_first
    })
    .await;
    let mut b = start(&ns, &mock.base_url(), rate, extra, "b");
    let waited = Instant::now();
    let mut most_consumers = 0;
    loop {
        most_consumers = most_consumers.max(consumers(&ns.names.requests));
        if waited.elapsed() >= standby {
            break;
        }
        tokio::time::sleep(standby.min(Duration::from_secs(5))).await;
    }
    let backlog_at_kill = queue_messages(&ns.names.requests);
    let standby_reconnects = b.log_lines("broker session lost");
    a.kill9();
    let before = mock.calls().len();
    let takeover = next_call(&mock, before, Duration::from_secs(30)).await;
    wait_for(Duration::from_secs(90), "every user kicked", || {
        all_kicked(&mock, &want)
    })
    .await;
    assert!(b.term().success());
    let c = mock.counters();
    let acc = account(&mock, &broker, &ns, &want).await;
    let standby_said_so = b.log_lines("standing by") >= 1;
    a.assert_clean("guest");
    b.assert_clean("guest");
    Failover {
        takeover,
        standby_reconnects,
        standby_said_so,
        most_consumers,
        backlog_at_kill,
        max_in_1s: c.max_calls_in_1s,
        rate_limited: c.rate_limited,
        lost: acc.lost,
        duplicated: acc.duplicated,
    }
}

/// 12: secrets stay out of the process list and of a panic's output, with a
/// broker user whose password is distinctive enough to search for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f12_no_secret_in_ps_or_logs() {
    let user = format!("kickq-leak-{}", rand::random::<u32>());
    let password = format!("pw{}xq", rand::random::<u64>());
    let ctl = |args: &[&str]| rabbitmqctl_command().args(args).output().unwrap().status.success();
    assert!(ctl(&["add_user", &user, &password]));
    assert!(ctl(&["set_permissions", "-p", "/", &user, ".*", ".*", ".*"]));
    let ns = Ns::new("f12");
    let mock = mock(1000).await;
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    broker.publish_raw(&ns.names.requests, &job("r", &["u"], None)).await;
    // The broker under test, with this user's credentials.
    let mut url = url::Url::parse(&amqp_url()).unwrap();
    url.set_username(&user).unwrap();
    url.set_password(Some(&password)).unwrap();
    let url = url.to_string();
    let mut w = start(&ns, &mock.base_url(), 1000, &[("KICKQ_AMQP_URL", url.as_str())], "leak");
    wait_for(Duration::from_secs(20), "a kick", || async {
        !mock.kicked().is_empty()
    })
    .await;
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    assert!(!ps.contains(SECRET) && !ps.contains(&password), "a secret shows in ps");
    // A wrong secret makes every call fail: the log must still not carry it.
    mock.set_secret(kickq::secret::Secret::new("rotated-secret-000000000000000000"));
    broker.publish_raw(&ns.names.requests, &job("r", &["v"], None)).await;
    wait_for(Duration::from_secs(20), "a signature error", || async {
        mock.calls().iter().any(|c| c.code == Some(100000005))
    })
    .await;
    assert!(w.term().success());
    w.assert_clean(&password);
    // What a panic would print (the whole validated configuration) is
    // covered by worker::tests::the_configuration_prints_no_secret.
    assert!(ctl(&["delete_user", &user]));
    eprintln!("FIGURE f12 leaks=0 (logs at debug, ps)");
}

/// Runs `rabbitmqctl` with arguments; true on success.
fn rabbitmqctl(args: &[&str]) -> bool {
    rabbitmqctl_command()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Leaves the broker running and healthy, even when the test fails: starts
/// the app, and restarts it if RabbitMQ 3.10's dead-letter supervisor died.
struct BrokerGuard;

impl Drop for BrokerGuard {
    fn drop(&mut self) {
        rabbitmqctl(&["start_app"]);
        let out = rabbitmqctl_command()
            .args(["eval", "whereis(rabbit_fifo_dlx_sup)."])
            .output();
        if out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("undefined")) {
            rabbitmqctl(&["stop_app"]);
            rabbitmqctl(&["start_app"]);
        }
        rabbitmqctl(&["await_startup"]);
    }
}

/// Messages in a queue, ready and unacked together.
fn queue_messages(queue: &str) -> u64 {
    let out = rabbitmqctl_command()
        .args(["list_queues", "--quiet", "--no-table-headers", "name", "messages"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(queue).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or(0)
}

/// Leaves PostgreSQL running, even when the test fails.
struct PostgresGuard;

fn pg_ctl(action: &str) -> bool {
    let version = std::fs::read_dir("/etc/postgresql")
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .unwrap_or_default();
    // Fast mode: a smart stop would wait for our pooled sessions to end, and
    // PostgreSQL would keep serving them.
    Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", "-m", "fast", &version, "main", action])
        .status()
        .is_ok_and(|s| s.success())
}

impl Drop for PostgresGuard {
    fn drop(&mut self) {
        pg_ctl("start");
    }
}

/// Runs a sweep through a broker disruption: kicks start, `disrupt` runs,
/// and the worker must resume by itself and lose nothing. Returns the time
/// from the end of the disruption to the next calls, and the accounting.
async fn through_disruption(
    tag: &str,
    users: usize,
    disrupt: impl FnOnce(),
    check_prefetch: bool,
) -> (Duration, Account) {
    let ns = Ns::new(tag);
    let rate = 200;
    let mock = mock(rate).await;
    let (bodies, want) = sweep(users / 5, 5);
    {
        let broker = Broker::connect().await;
        broker.declare(&ns.names).await;
        broker.publish_many(&ns.names.requests, &bodies).await;
    }
    let mut w = start(&ns, &mock.base_url(), rate, &[], "w");
    wait_for(Duration::from_secs(30), "some kicks", || async {
        mock.kicked().len() >= users / 5
    })
    .await;
    disrupt();
    let disrupted = Instant::now();
    let before = mock.calls().len();
    wait_for(Duration::from_secs(60), "calls again after the disruption", || async {
        mock.calls().len() > before + 5
    })
    .await;
    let resume = disrupted.elapsed();
    wait_for(Duration::from_secs(90), "every user kicked", || {
        all_kicked(&mock, &want)
    })
    .await;
    if check_prefetch {
        let out = rabbitmqctl_command()
            .args(["list_consumers", "--quiet", "queue_name", "prefetch_count"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let line = text
            .lines()
            .find(|l| l.starts_with(&ns.names.requests))
            .unwrap_or_default()
            .to_string();
        assert!(
            line.ends_with("20000"),
            "prefetch applied again after the reconnect: {line:?}"
        );
    }
    assert!(w.term().success());
    let broker = Broker::connect().await;
    let a = account(&mock, &broker, &ns, &want).await;
    w.assert_clean("guest");
    (resume, a)
}

/// 2: the broker's app stopped and started under load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "disturbs the shared broker: run alone with --ignored --test-threads=1"]
async fn f02_broker_restart_under_load() {
    let _restore = BrokerGuard;
    let restart = || {
        assert!(rabbitmqctl(&["stop_app"]));
        std::thread::sleep(Duration::from_secs(3));
        assert!(rabbitmqctl(&["start_app"]));
    };
    let (resume, a) = through_disruption("f02", 5000, restart, true).await;
    eprintln!(
        "FIGURE f02 users=5000 resume_after_restart_ms={} lost={} dead={} duplicates={}",
        resume.as_millis(),
        a.lost,
        a.dead,
        a.duplicated
    );
    assert_eq!((a.lost, a.dead), (0, 0));
}

/// 3: every connection force-closed by the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "disturbs the shared broker: run alone with --ignored --test-threads=1"]
async fn f03_all_connections_closed() {
    let _restore = BrokerGuard;
    let close = || assert!(rabbitmqctl(&["close_all_connections", "kickq fault suite"]));
    let (resume, a) = through_disruption("f03", 3000, close, false).await;
    eprintln!(
        "FIGURE f03 users=3000 resume_after_close_ms={} lost={} dead={} duplicates={}",
        resume.as_millis(),
        a.lost,
        a.dead,
        a.duplicated
    );
    assert_eq!((a.lost, a.dead), (0, 0));
}

/// 10: PostgreSQL stopped for 30 s with the ledger on: dispatch pauses,
/// nothing is acked before its rows commit, and the worker resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stops the shared PostgreSQL: run alone with --ignored --test-threads=1"]
async fn f10_postgres_outage_pauses_and_resumes() {
    let _restore = PostgresGuard;
    let db = TestDb::new().await;
    let ns = Ns::new("f10");
    let rate = 20;
    let mock = mock(rate).await;
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let (bodies, want) = sweep(600, 5);
    broker.publish_many(&ns.names.requests, &bodies).await;
    let mut w = start(&ns, &mock.base_url(), rate, &[("DATABASE_URL", db.url.as_str())], "w");
    wait_for(Duration::from_secs(30), "some kicks", || async {
        mock.kicked().len() >= 300
    })
    .await;
    assert!(pg_ctl("stop"));
    let stopped = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let paused_at = mock.calls().len();
    let held_at = queue_messages(&ns.names.requests);
    tokio::time::sleep(Duration::from_secs(20)).await;
    let during = mock.calls().len() - paused_at;
    let held = queue_messages(&ns.names.requests);
    assert!(
        during <= 5,
        "dispatch paused: {during} calls in the last 20 s of the outage"
    );
    assert!(
        held > 0 && held == held_at,
        "nothing acked during the outage: {held_at} then {held} messages held"
    );
    assert!(pg_ctl("start"));
    let restarted = Instant::now();
    wait_for(
        Duration::from_secs(120),
        "every user kicked after PostgreSQL is back",
        || all_kicked(&mock, &want),
    )
    .await;
    wait_for(Duration::from_secs(30), "drained", || async {
        broker.depth(&ns.names.requests).await == 0
    })
    .await;
    let resumed = restarted.elapsed();
    assert!(w.term().success());
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let recorded: i64 = sqlx::query_scalar("select count(distinct (room_id, user_id)) from user_outcomes where outcome in ('kicked','halted_then_resumed')")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    let a = account(&mock, &broker, &ns, &want).await;
    eprintln!(
        "FIGURE f10 users={} outage_s={} calls_during_outage={during} drained_after_restart_ms={} ledger_users={recorded} lost={}",
        want.len(),
        (restarted - stopped).as_secs(),
        resumed.as_millis(),
        a.lost
    );
    assert_eq!(a.lost, 0);
    assert_eq!(recorded as usize, want.len(), "every kick is in the ledger");
    w.assert_clean("guest");
    db.drop_db().await;
}

/// Consumers of a queue, as the broker counts them.
fn consumers(queue: &str) -> u64 {
    let out = rabbitmqctl_command()
        .args(["list_queues", "--quiet", "--no-table-headers", "name", "consumers"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            let mut it = l.split_whitespace();
            (it.next() == Some(queue)).then(|| it.next().and_then(|n| n.parse().ok()))?
        })
        .unwrap_or(0)
}

impl Worker {
    /// Lines of this worker's log that contain `needle`.
    fn log_lines(&self, needle: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Sends SIGTERM without waiting.
    fn signal_term(&self) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
    }
}

/// Waits for the mock to see more than `before` calls; returns how long that took.
async fn next_call(mock: &kickq::mock_zego::MockZego, before: usize, limit: Duration) -> Duration {
    let t = Instant::now();
    while mock.calls().len() <= before {
        assert!(t.elapsed() < limit, "no call within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    t.elapsed()
}

/// 13: a standby under a backlog deeper than the prefetch, for a minute, then
/// `kill -9` of the active worker. The standby never takes itself for a
/// starved consumer (it holds none: it waits for the leadership lock), and
/// it calls within 2 s of the kill, its one-window wait included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "counts calls per second at the in-process mock to the call, which a loaded test process blurs: run alone with --ignored --test-threads=1"]
async fn f13_standby_under_a_deep_backlog_stays_and_takes_over_fast() {
    let rate = 50;
    let standby = Duration::from_secs(60);
    // One user per room: one call per message, so the backlog lasts.
    let prefetch = [("KICKQ_PREFETCH", "500")];
    let f = kill_the_active_worker("f13", rate, sweep(4000, 1), &prefetch, 50, standby).await;
    eprintln!(
        "FIGURE f13 standby_s={} backlog_at_kill={} prefetch=500 standby_reconnects={} most_consumers={} takeover_ms={} max_in_1s={} limit={rate} rate_limited={} lost={} duplicates={}",
        standby.as_secs(),
        f.backlog_at_kill,
        f.standby_reconnects,
        f.most_consumers,
        f.takeover.as_millis(),
        f.max_in_1s,
        f.rate_limited,
        f.lost,
        f.duplicated
    );
    assert!(f.standby_said_so, "B said it was a standby");
    assert_eq!(f.standby_reconnects, 0, "the standby never reconnected");
    assert_eq!(f.most_consumers, 1, "only the active worker consumes");
    assert!(
        f.backlog_at_kill > 500,
        "the backlog ({}) was deeper than the prefetch",
        f.backlog_at_kill
    );
    // The takeover is the 1.77 s hold (the lease, 750 ms, and a window, 1.02 s)
    // plus the broker noticing the closed socket and the standby being
    // scheduled: milliseconds on a quiet machine (1.78 to 1.79 s measured),
    // more on a loaded 2-core one. The bound keeps a stuck takeover from
    // passing, not the figure, which goes to RELIABILITY.md.
    assert!(
        f.takeover < Duration::from_millis(1770) + Duration::from_secs(3),
        "calls resumed {:?} after the kill",
        f.takeover
    );
    assert!(f.max_in_1s <= rate as u64, "{} calls in one second", f.max_in_1s);
    assert_eq!(f.rate_limited, 0);
    assert_eq!(f.lost, 0);
}

/// 14: SIGTERM to the active worker mid-sweep while a standby waits: the
/// outgoing worker releases the lock only after its last call returned, so
/// no second ever carries more than the limit; it exits 0 within its drain
/// deadline plus the grace, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "counts calls per second at the in-process mock to the call, which a loaded test process blurs: run alone with --ignored --test-threads=1"]
async fn f14_sigterm_hands_over_without_two_workers_calling() {
    let ns = Ns::new("f14");
    let rate = 50;
    let mock = mock(rate).await;
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let (bodies, want) = sweep(1500, 1);
    broker.publish_many(&ns.names.requests, &bodies).await;
    let mut a = start(&ns, &mock.base_url(), rate, &[], "a");
    wait_for(Duration::from_secs(20), "A kicking", || async {
        mock.kicked().len() >= 100
    })
    .await;
    let mut b = start(&ns, &mock.base_url(), rate, &[], "b");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stopping = Instant::now();
    let status = a.term();
    let exit = stopping.elapsed();
    let before = mock.calls().len();
    let handover = next_call(&mock, before, Duration::from_secs(10)).await;
    wait_for(Duration::from_secs(60), "every user kicked", || {
        all_kicked(&mock, &want)
    })
    .await;
    assert!(b.term().success());
    let c = mock.counters();
    {
        let calls = mock.calls();
        let us: Vec<u64> = calls.iter().filter(|c| c.app_id.is_some()).map(|c| c.at_us).collect();
        for i in 0..us.len().saturating_sub(rate as usize) {
            if us[i + rate as usize] - us[i] < 1_000_000 {
                eprintln!(
                    "DENSE window from call {i}: first {} us, 51st {} us (span {} us); A's last call index {}, at {} us; gaps head {:?} tail {:?}",
                    us[i],
                    us[i + rate as usize],
                    us[i + rate as usize] - us[i],
                    before.saturating_sub(1),
                    calls.get(before.saturating_sub(1)).map_or(0, |c| c.at_us),
                    us[i..i + 5].windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>(),
                    us[i + rate as usize - 4..=i + rate as usize].windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>(),
                );
            }
        }
    }
    let acc = account(&mock, &broker, &ns, &want).await;
    eprintln!(
        "FIGURE f14 exit_ms={} drain_deadline_ms=2000 handover_ms={} max_in_1s={} limit={rate} rate_limited={} lost={} duplicates={}",
        exit.as_millis(),
        handover.as_millis(),
        c.max_calls_in_1s,
        c.rate_limited,
        acc.lost,
        acc.duplicated
    );
    assert!(status.success(), "A exits 0: {status:?}");
    assert!(exit < Duration::from_secs(2 + 2 + 3), "A took {exit:?} to stop");
    assert!(
        c.max_calls_in_1s <= rate as u64,
        "{} calls in one second",
        c.max_calls_in_1s
    );
    assert_eq!(c.rate_limited, 0);
    assert_eq!(acc.lost, 0);
    assert!(
        a.log_lines("released the leadership lease") == 1,
        "A released the lease"
    );
    a.assert_clean("guest");
    b.assert_clean("guest");
}

/// 15: a worker started after a graceful stop, on a system idle for a
/// second, calls at once: the release record says the last window has
/// passed, so it does not wait the full window a fresh process used to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f15_first_call_after_a_graceful_stop_is_not_held() {
    let ns = Ns::new("f15");
    let rate = 50;
    let mock = mock(rate).await;
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let mut a = start(&ns, &mock.base_url(), rate, &[], "a");
    broker
        .publish_many(&ns.names.requests, &[job("r1", &["u1"], None)])
        .await;
    wait_for(Duration::from_secs(10), "the first kick", || async {
        mock.kicked().len() == 1
    })
    .await;
    assert!(a.term().success());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut b = start(&ns, &mock.base_url(), rate, &[], "b");
    wait_for(Duration::from_secs(10), "B consuming", || async {
        consumers(&ns.names.requests) == 1
    })
    .await;
    let published = Instant::now();
    broker
        .publish_many(&ns.names.requests, &[job("r2", &["u2"], None)])
        .await;
    wait_for(Duration::from_secs(10), "the second kick", || async {
        mock.kicked().len() == 2
    })
    .await;
    let latency = published.elapsed();
    assert!(b.term().success());
    eprintln!(
        "FIGURE f15 publish_to_kick_ms={} (a full window is 1020)",
        latency.as_millis()
    );
    assert_eq!(b.log_lines("\"hold\":\"released\""), 1, "B read A's release record");
    assert!(
        latency < Duration::from_millis(800),
        "the first call came {latency:?} after the job: it waited a window it did not need"
    );
    a.assert_clean("guest");
    b.assert_clean("guest");
}

/// 16: a second SIGTERM exits at once, with code 130, acking nothing more;
/// the held delivery returns to the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f16_a_second_signal_exits_at_once() {
    let ns = Ns::new("f16");
    let mock = mock(50).await;
    mock.set_faults(vec![kickq::mock_zego::fault_syntax::parse_fault(
        "room=slow-*,latency=30s",
    )
    .unwrap()]);
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    broker
        .publish_many(&ns.names.requests, &[job("slow-1", &["u"], None)])
        .await;
    let extra = [("KICKQ_DRAIN_DEADLINE", "20s"), ("KICKQ_HTTP_TIMEOUT", "60s")];
    let mut w = start(&ns, &mock.base_url(), 50, &extra, "w");
    wait_for(Duration::from_secs(10), "the delivery held", || async {
        broker.depth(&ns.names.requests).await == 0 && queue_messages(&ns.names.requests) == 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    w.signal_term();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(w.child.try_wait().unwrap().is_none(), "the first signal starts a drain");
    let second = Instant::now();
    w.signal_term();
    let status = w.child.wait().unwrap();
    let took = second.elapsed();
    eprintln!(
        "FIGURE f16 exit_after_second_signal_ms={} code={:?}",
        took.as_millis(),
        status.code()
    );
    assert_eq!(status.code(), Some(130));
    assert!(took < Duration::from_secs(2), "exited {took:?} after the second signal");
    wait_for(Duration::from_secs(10), "the delivery back in the queue", || async {
        broker.depth(&ns.names.requests).await == 1
    })
    .await;
    w.assert_clean("guest");
}

/// 17: PostgreSQL stopped mid-sweep with the ledger on, then SIGTERM: the
/// worker ends within its drain deadline plus the grace, exit 0; a worker
/// started after PostgreSQL is back loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stops the shared PostgreSQL: run alone with --ignored --test-threads=1"]
async fn f17_sigterm_with_postgres_down_ends_within_the_deadline() {
    let _restore = PostgresGuard;
    let db = TestDb::new().await;
    let ns = Ns::new("f17");
    let rate = 50;
    let mock = mock(rate).await;
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let (bodies, want) = sweep(400, 5);
    broker.publish_many(&ns.names.requests, &bodies).await;
    let ledger = [("DATABASE_URL", db.url.as_str())];
    let mut w = start(&ns, &mock.base_url(), rate, &ledger, "w");
    wait_for(Duration::from_secs(30), "some kicks", || async {
        mock.kicked().len() >= 300
    })
    .await;
    assert!(pg_ctl("stop"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stopping = Instant::now();
    let status = w.term();
    let exit = stopping.elapsed();
    assert!(pg_ctl("start"));
    let mut w2 = start(&ns, &mock.base_url(), rate, &ledger, "w2");
    wait_for(Duration::from_secs(120), "every user kicked after the restart", || {
        all_kicked(&mock, &want)
    })
    .await;
    wait_for(Duration::from_secs(30), "drained", || async {
        broker.depth(&ns.names.requests).await == 0
    })
    .await;
    assert!(w2.term().success());
    let a = account(&mock, &broker, &ns, &want).await;
    eprintln!(
        "FIGURE f17 exit_ms={} drain_deadline_ms=2000 lost={} dead={} duplicates={}",
        exit.as_millis(),
        a.lost,
        a.dead,
        a.duplicated
    );
    assert!(status.success(), "{status:?}");
    assert!(exit < Duration::from_secs(2 + 2 + 3), "the stop took {exit:?}");
    assert_eq!((a.lost, a.dead), (0, 0));
    w.assert_clean("guest");
    w2.assert_clean("guest");
    db.drop_db().await;
}

/// Restores RabbitMQ's memory watermark, even when the test fails.
struct WatermarkGuard(String);

impl Drop for WatermarkGuard {
    fn drop(&mut self) {
        rabbitmqctl(&["set_vm_memory_high_watermark", &self.0]);
    }
}

/// The broker's relative memory watermark now (RabbitMQ's default is 0.4).
fn watermark() -> String {
    let out = rabbitmqctl_command()
        .args(["eval", "vm_memory_monitor:get_vm_memory_high_watermark()."])
        .output()
        .unwrap();
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if v.parse::<f64>().is_ok() {
        v
    } else {
        "0.4".into()
    }
}

/// 18: a memory alarm for 20 s mid-sweep. The broker blocks every
/// connection that publishes; kickq consumes and acks on a connection that
/// never publishes, so acks of kicked users go on, nothing is lost, and no
/// delivery nears the poison limit. The prefetch is small (100), so the
/// worker can only go on kicking during the alarm if its acks land: with
/// acks stalled, deliveries stop after 100 unacked messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "raises a memory alarm on the shared broker: run alone with --ignored --test-threads=1"]
async fn f18_memory_alarm_keeps_acks_flowing() {
    let restore = WatermarkGuard(watermark());
    let ns = Ns::new("f18");
    let rate = 100;
    let mock = mock(rate).await;
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let (bodies, want) = sweep(3000, 1);
    broker.publish_many(&ns.names.requests, &bodies).await;
    let prefetch = 100;
    let mut w = start(&ns, &mock.base_url(), rate, &[("KICKQ_PREFETCH", "100")], "w");
    wait_for(Duration::from_secs(30), "some kicks", || async {
        mock.kicked().len() >= 200
    })
    .await;
    assert!(rabbitmqctl(&["set_vm_memory_high_watermark", "0.000001"]));
    let alarm = Instant::now();
    let kicked_before = mock.kicked().len();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let kicked_during = mock.kicked().len() - kicked_before;
    assert!(rabbitmqctl(&["set_vm_memory_high_watermark", &restore.0]));
    let alarm_s = alarm.elapsed().as_secs();
    wait_for(Duration::from_secs(90), "every user kicked after the alarm", || {
        all_kicked(&mock, &want)
    })
    .await;
    wait_for(Duration::from_secs(30), "drained", || async {
        broker.depth(&ns.names.requests).await == 0
    })
    .await;
    let reconnects = w.log_lines("broker session lost");
    assert!(w.term().success());
    let a = account(&mock, &broker, &ns, &want).await;
    eprintln!(
        "FIGURE f18 alarm_s={alarm_s} prefetch={prefetch} kicks_during_alarm={kicked_during} reconnects={reconnects} lost={} dead={} duplicates={}",
        a.lost,
        a.dead,
        a.duplicated
    );
    assert_eq!((a.lost, a.dead), (0, 0), "nothing lost, nothing dead-lettered");
    assert_eq!(reconnects, 0, "the alarm cost no session");
    assert!(
        kicked_during >= 5 * prefetch,
        "acks went on during the alarm: {kicked_during} kicks with a prefetch of {prefetch}"
    );
    w.assert_clean("guest");
}
