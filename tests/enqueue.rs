//! `kickq enqueue` as a user runs it (the real binary) against the real RabbitMQ: one job, JSON Lines, CSV
//! with and without a header, stdin, invalid lines with and without `--skip-invalid`, dry runs, and an
//! interrupted bulk run resumed with nothing lost or repeated.

mod common;

use common::*;
use kickq::job::{self, KickRequest, Limits};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// A file in the temp directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(ns: &Ns, name: &str, content: &[u8]) -> TempFile {
        let dir = std::env::temp_dir().join(ns.name());
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        TempFile(path)
    }

    fn arg(&self) -> &str {
        self.0.to_str().expect("temp paths are UTF-8")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Every message in the requests queue, with its AMQP message id, in order.
async fn published(broker: &Broker, ns: &Ns) -> Vec<(KickRequest, Option<String>)> {
    broker
        .take_all(&ns.names.requests)
        .await
        .into_iter()
        .map(|(body, props)| {
            let job = job::parse(&body, &Limits::default()).expect("published bodies are valid jobs");
            assert_eq!(*props.delivery_mode(), Some(2), "persistent");
            (job, props.message_id().as_ref().map(|m| m.to_string()))
        })
        .collect()
}

type Kick = (String, String, Option<String>);

fn kicks(jobs: &[(KickRequest, Option<String>)]) -> Vec<Kick> {
    jobs.iter()
        .flat_map(|(j, _)| {
            j.user_ids
                .iter()
                .map(move |u| (j.room_id.clone(), u.clone(), j.reason.clone()))
        })
        .collect()
}

fn sorted(mut v: Vec<Kick>) -> Vec<Kick> {
    v.sort();
    v
}

/// `got` holds every kick of `want` exactly once (the difference is printed, not the lists).
fn assert_exactly_once(got: Vec<Kick>, want: Vec<Kick>) {
    let mut count: BTreeMap<Kick, i64> = BTreeMap::new();
    for kick in got {
        *count.entry(kick).or_default() += 1;
    }
    for kick in want {
        *count.entry(kick).or_default() -= 1;
    }
    let extra: Vec<_> = count.iter().filter(|(_, n)| **n > 0).take(5).collect();
    let missing: Vec<_> = count.iter().filter(|(_, n)| **n < 0).take(5).collect();
    let (n_extra, n_missing) = (
        count.values().filter(|n| **n > 0).count(),
        count.values().filter(|n| **n < 0).count(),
    );
    assert!(
        n_extra == 0 && n_missing == 0,
        "{n_extra} repeated or unexpected, e.g. {extra:?}; {n_missing} missing, e.g. {missing:?}"
    );
}

fn k(room: &str, user: &str, reason: Option<&str>) -> Kick {
    (room.into(), user.into(), reason.map(String::from))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_single_job() {
    let ns = Ns::new("enq-one");
    let out = kickq(
        &ns,
        &[
            "enqueue", "--room", "room-1", "--user", "a", "--user", "b", "--reason", "spam", "--job-id", "mod-1",
        ],
        &[],
        None,
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("enqueued job mod-1"), "{stdout}");
    let broker = Broker::connect().await;
    let got = published(&broker, &ns).await;
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].0,
        KickRequest::new("room-1", ["a", "b"])
            .with_reason("spam")
            .with_job_id("mod-1")
    );
    assert_eq!(got[0].1.as_deref(), Some("mod-1"), "message id = job id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_jsonl_file_keeps_job_ids_and_groups_the_rest() {
    let ns = Ns::new("enq-jsonl");
    let file = TempFile::new(
        &ns,
        "jobs.jsonl",
        br#"{"room_id":"r1","user_ids":["a","b"],"reason":"spam"}
{"room_id":"r2","user_ids":["c"],"job_id":"given-1"}

{"room_id":"r1","user_ids":["d"],"reason":"spam"}
"#,
    );
    let out = kickq(&ns, &["enqueue", "--file", file.arg()], &[], None).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("lines read 4, valid 3, invalid 0 (jsonl)"), "{stdout}");
    assert!(stdout.contains("confirmed through line 4"), "{stdout}");
    let broker = Broker::connect().await;
    let got = published(&broker, &ns).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].0.user_ids, vec!["a", "b", "d"], "lines 1 and 4 share a message");
    let id = got[0].1.clone().unwrap();
    assert!(id.starts_with("jobs.jsonl-") && id.ends_with(":1"), "{id}");
    assert_eq!(got[0].0.job_id.as_deref(), Some(id.as_str()));
    assert_eq!(got[1].0.job_id.as_deref(), Some("given-1"));
    assert_eq!(got[1].1.as_deref(), Some("given-1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_csv_with_and_without_header() {
    let ns = Ns::new("enq-csv");
    let with = TempFile::new(
        &ns,
        "with.csv",
        b"room_id,user_id,reason\r\nr1,u1,spam\r\nr1,u2,\"spam\"\r\nr2,u3,\"a, b\"\r\nr1,u4\r\n",
    );
    let without = TempFile::new(&ns, "without.csv", b"r9,x1\nr9,x2,");
    for (file, lines) in [(&with, 5), (&without, 2)] {
        let out = kickq(&ns, &["enqueue", "--file", file.arg(), "--group-size", "2"], &[], None).await;
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stdout}{stderr}");
        assert!(stdout.contains(&format!("confirmed through line {lines}")), "{stdout}");
    }
    let broker = Broker::connect().await;
    let got = published(&broker, &ns).await;
    assert_eq!(
        sorted(kicks(&got)),
        sorted(vec![
            k("r1", "u1", Some("spam")),
            k("r1", "u2", Some("spam")),
            k("r2", "u3", Some("a, b")),
            k("r1", "u4", None),
            k("r9", "x1", None),
            k("r9", "x2", None),
        ])
    );
    let sizes: Vec<usize> = got.iter().map(|(j, _)| j.user_ids.len()).collect();
    assert_eq!(
        sizes,
        vec![2, 1, 1, 2],
        "(r1, spam) x2, (r2, a b), (r1, none), (r9, none) x2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_reads_stdin() {
    let ns = Ns::new("enq-stdin");
    let out = kickq(&ns, &["enqueue", "--file", "-"], &[], Some(b"r1,u1\nr1,u2\n")).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let broker = Broker::connect().await;
    let got = published(&broker, &ns).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0.user_ids, vec!["u1", "u2"]);
    assert!(got[0].1.as_deref().unwrap().starts_with("stdin-"), "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_line_publishes_nothing_unless_skipped() {
    let ns = Ns::new("enq-bad");
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let input = b"r1,u1\nr1,u2\nr1,\nr2,u3\n";
    let out = kickq(&ns, &["enqueue", "--file", "-"], &[], Some(input)).await;
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains("line 3: user_ids[0] must be 1 to 64 bytes, got 0"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was published"), "{stderr}");
    assert_eq!(broker.depth(&ns.names.requests).await, 0);

    let out = kickq(&ns, &["enqueue", "--file", "-", "--skip-invalid"], &[], Some(input)).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains("line 3: user_ids[0] must be 1 to 64 bytes, got 0 (skipped)"),
        "{stderr}"
    );
    assert!(stdout.contains("lines read 4, valid 3, invalid 1"), "{stdout}");
    let got = published(&broker, &ns).await;
    assert_eq!(
        sorted(kicks(&got)),
        vec![k("r1", "u1", None), k("r1", "u2", None), k("r2", "u3", None)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_connects_to_nothing() {
    let ns = Ns::new("enq-dry");
    // No broker listens there: a dry run must not try it.
    let nowhere = [("KICKQ_AMQP_URL", "amqp://nobody:nothing@127.0.0.1:1/%2f")];
    let out = kickq(
        &ns,
        &["enqueue", "--file", "-", "--dry-run", "--group-size", "1"],
        &nowhere,
        Some(b"r1,u1\nr1,u2\nr3,u3\n"),
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("messages 3, users 3"), "{stdout}");
    let out = kickq(
        &ns,
        &["enqueue", "--file", "-", "--dry-run"],
        &nowhere,
        Some(b"r1,u1\nr1,\n"),
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(
        !out.status.success(),
        "an invalid line fails a dry run too: {stdout}{stderr}"
    );
    assert!(stderr.contains("line 2"), "{stderr}");

    let out = kickq(
        &ns,
        &["enqueue", "--room", "r", "--user", "u", "--dry-run"],
        &nowhere,
        None,
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("dry run: nothing published"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_outside_the_vendor_set_are_refused_unless_the_charset_is_any() {
    let ns = Ns::new("enq-charset");
    let nowhere = ("KICKQ_AMQP_URL", "amqp://nobody:nothing@127.0.0.1:1/%2f");
    let input: &[u8] = "r1,u1\nr1,with space\nr1,é\nr1,a&b=c%d\n".as_bytes();
    let out = kickq(&ns, &["enqueue", "--file", "-", "--dry-run"], &[nowhere], Some(input)).await;
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains("line 2: user_ids[0] has a character outside ZEGOCLOUD's user id set"),
        "{stderr}"
    );
    assert!(stderr.contains("line 3: user_ids[0]"), "{stderr}");
    assert!(!stderr.contains("line 4"), "a&b=c%d is in the set: {stderr}");
    let dry: &[&str] = &["enqueue", "--file", "-", "--dry-run"];
    let dry_any: &[&str] = &["enqueue", "--file", "-", "--dry-run", "--id-charset", "any"];
    let env_any = [nowhere, ("KICKQ_ID_CHARSET", "any")];
    let loose = [(dry, &env_any[..]), (dry_any, &env_any[..1])];
    for (args, env) in loose {
        let out = kickq(&ns, args, env, Some(input)).await;
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{env:?} {args:?}: {stdout}{stderr}");
        assert!(stdout.contains("valid 4, invalid 0"), "{stdout}");
    }
    let out = kickq(
        &ns,
        &["enqueue", "--room", "room 1", "--user", "u", "--dry-run"],
        &[nowhere],
        None,
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("room_id has a character outside"), "{stderr}");
}

/// Lines of a sweep with interleaved rooms, so that messages cover lines far apart.
fn sweep(lines: usize, rooms: usize) -> (Vec<u8>, Vec<Kick>) {
    let mut csv = b"room_id,user_id\n".to_vec();
    let mut want = Vec::with_capacity(lines);
    for i in 0..lines {
        let room = format!("room-{}", (i * 7919) % rooms);
        let user = format!("user-{i}");
        csv.extend_from_slice(format!("{room},{user}\n").as_bytes());
        want.push((room, user, None));
    }
    (csv, want)
}

fn confirmed_through(stdout: &str) -> u64 {
    let at = stdout
        .find("confirmed through line ")
        .expect("the summary names the line")
        + 23;
    stdout[at..].split_whitespace().next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_run_resumes_with_nothing_lost_or_repeated() {
    let ns = Ns::new("enq-resume");
    let (csv, want) = sweep(12_000, 400);
    let file = TempFile::new(&ns, "sweep.csv", &csv);
    let args = ["enqueue", "--file", file.arg(), "--group-size", "2"];

    let out = kickq(&ns, &args, &[("KICKQ_ENQUEUE_STOP_AFTER", "50")], None).await;
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "an interrupted run fails: {stdout}{stderr}");
    let through = confirmed_through(&stdout);
    assert!(through > 1 && through < 12_000, "stopped midway: {stdout}");
    assert!(stderr.contains(&format!("--resume-from {}", through + 1)), "{stderr}");
    let broker = Broker::connect().await;
    let first = published(&broker, &ns).await;
    let covered: BTreeSet<u64> = first
        .iter()
        .flat_map(|(j, _)| {
            j.user_ids
                .iter()
                .map(|u| u["user-".len()..].parse::<u64>().unwrap() + 2)
        })
        .collect();
    assert!(
        (2..=through).all(|line| covered.contains(&line)),
        "every line up to {through} is in"
    );

    let resume = (through + 1).to_string();
    let mut again = args.to_vec();
    again.extend(["--resume-from", &resume]);
    let out = kickq(&ns, &again, &[], None).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("confirmed through line 12001"), "{stdout}");
    let second = published(&broker, &ns).await;

    let all: Vec<_> = first.iter().chain(&second).cloned().collect();
    assert_exactly_once(kicks(&all), want);
    let mut ids: BTreeMap<String, usize> = BTreeMap::new();
    for (j, id) in &all {
        assert_eq!(j.job_id, *id);
        *ids.entry(id.clone().unwrap()).or_default() += 1;
    }
    assert!(ids.values().all(|n| *n == 1), "job ids are unique across both runs");
    assert!(
        ids.keys().all(|id| id.starts_with("sweep.csv-")),
        "derived from the file"
    );
}
