//! `kickq enqueue` as a user runs it (the real binary) against the real RabbitMQ: one job, JSON Lines, CSV
//! with and without a header (columns by name, quoting, BOM, CRLF), stdin, invalid lines with and without
//! `--skip-invalid`, dry runs (`--json`), the `--json` report, and interrupted bulk runs (exit 130) resumed by
//! line or from the checkpoint with nothing lost or repeated; `--lane` and the deadline flags.

use crate::common;

use common::*;
use kickq::job::{self, KickRequest, Limits};
use std::collections::BTreeMap;
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
        let _ = std::fs::remove_file(checkpoint_of(&self.0));
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// The default checkpoint of an input file.
fn checkpoint_of(file: &std::path::Path) -> PathBuf {
    let mut p = file.as_os_str().to_owned();
    p.push(".kickq-checkpoint");
    PathBuf::from(p)
}

/// Every message a file run published, with its AMQP message id, in order:
/// all in the bulk lane, none in the live one.
async fn published(broker: &Broker, ns: &Ns) -> Vec<(KickRequest, Option<String>)> {
    assert_eq!(
        broker.depth(&ns.names.requests).await,
        0,
        "a file goes to the bulk lane"
    );
    published_in(broker, &ns.names.bulk).await
}

/// Every message in `queue`, with its AMQP message id, in order.
async fn published_in(broker: &Broker, queue: &str) -> Vec<(KickRequest, Option<String>)> {
    broker
        .take_all(queue)
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
    assert_eq!(broker.depth(&ns.names.bulk).await, 0, "one job goes to the live lane");
    let got = published_in(&broker, &ns.names.requests).await;
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
    assert!(
        stdout.contains("lines 4: 0 header, 3 valid, 0 invalid, 1 blank (jsonl)"),
        "{stdout}"
    );
    assert!(stdout.contains("confirmed through line 4"), "{stdout}");
    let broker = Broker::connect().await;
    let got = published(&broker, &ns).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].0.user_ids, vec!["a", "b", "d"], "lines 1 and 4 share a message");
    let id = got[0].1.clone().unwrap();
    assert!(id.starts_with("jobs.jsonl-"), "{id}");
    assert!(
        id.ends_with(&kickq::testkit::group_job_id("", "r1", Some("spam"), None)[1..]),
        "the room's id: {id}"
    );
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

/// With `--format` given nothing detects the format, so nothing rewound the
/// spooled stdin: it was read from its end, 0 lines, and the run failed
/// with "the input changed" (seen while writing the shards tests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_reads_stdin_with_a_format_given() {
    let ns = Ns::new("enq-stdin-fmt");
    let input = b"{\"room_id\":\"r1\",\"user_ids\":[\"u1\"]}\n{\"room_id\":\"r1\",\"user_ids\":[\"u2\"]}\n";
    let out = kickq(&ns, &["enqueue", "--file", "-", "--format", "jsonl"], &[], Some(input)).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("lines 2:"), "{stdout}");
    let broker = Broker::connect().await;
    let got = published(&broker, &ns).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0.user_ids, vec!["u1", "u2"]);
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
    assert!(stderr.contains("line 3: column user_id is empty"), "{stderr}");
    assert!(stderr.contains("nothing was published"), "{stderr}");
    assert_eq!(
        broker.depth(&ns.names.bulk).await + broker.depth(&ns.names.requests).await,
        0
    );

    let out = kickq(&ns, &["enqueue", "--file", "-", "--skip-invalid"], &[], Some(input)).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("line 3: column user_id is empty (skipped)"), "{stderr}");
    assert!(stdout.contains("lines 4: 0 header, 3 valid, 1 invalid"), "{stdout}");
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
        stderr.contains("line 2: column user_id has a character outside ZEGOCLOUD's user id set"),
        "{stderr}"
    );
    assert!(stderr.contains("line 3: column user_id"), "{stderr}");
    assert!(!stderr.contains("line 4"), "a&b=c%d is in the set: {stderr}");
    let dry: &[&str] = &["enqueue", "--file", "-", "--dry-run"];
    let dry_any: &[&str] = &["enqueue", "--file", "-", "--dry-run", "--id-charset", "any"];
    let env_any = [nowhere, ("KICKQ_ID_CHARSET", "any")];
    let loose = [(dry, &env_any[..]), (dry_any, &env_any[..1])];
    for (args, env) in loose {
        let out = kickq(&ns, args, env, Some(input)).await;
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{env:?} {args:?}: {stdout}{stderr}");
        assert!(stdout.contains("4 valid, 0 invalid"), "{stdout}");
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

#[cfg(feature = "test-hooks")] // stops the command part-way through a test hook
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_run_resumes_with_nothing_lost_or_repeated() {
    let ns = Ns::new("enq-resume");
    let (csv, want) = sweep(12_000, 400);
    let file = TempFile::new(&ns, "sweep.csv", &csv);
    let args = ["enqueue", "--file", file.arg(), "--group-size", "2"];

    let out = kickq(&ns, &args, &[("KICKQ_ENQUEUE_STOP_AFTER", "50")], None).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(130),
        "an interrupted run exits 130: {stdout}{stderr}"
    );
    let through = confirmed_through(&stdout);
    assert!(through > 1 && through < 12_000, "stopped midway: {stdout}");
    assert!(stderr.contains(&format!("--resume-from {}", through + 1)), "{stderr}");
    let broker = Broker::connect().await;
    let first = published(&broker, &ns).await;
    let covered: std::collections::BTreeSet<u64> = first
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
    // One job id per room and reason of the file, in both runs alike.
    let mut ids: BTreeMap<(String, Option<String>), std::collections::BTreeSet<String>> = BTreeMap::new();
    for (j, id) in &all {
        assert_eq!(j.job_id, *id);
        ids.entry((j.room_id.clone(), j.reason.clone()))
            .or_default()
            .insert(id.clone().unwrap());
    }
    assert!(ids.values().all(|s| s.len() == 1), "one id per group across both runs");
    let distinct: std::collections::BTreeSet<&String> = ids.values().flatten().collect();
    assert_eq!(distinct.len(), ids.len(), "groups never share an id");
    assert!(
        distinct.iter().all(|id| id.starts_with("sweep.csv-")),
        "derived from the file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_maps_columns_by_name_with_csv_quoting() {
    let ns = Ns::new("enq-header");
    let file = TempFile::new(
        &ns,
        "named.csv",
        "\u{feff}user_id,room_id,reason\r\nu1,r1,spam\r\nu2,r1,\"spam, again\"\r\n\"u3\",\"r2\",\"two\r\nlines\"\r\nu4,r2\r\n"
            .as_bytes(),
    );
    let out = kickq(&ns, &["enqueue", "--file", file.arg()], &[], None).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("lines 6: 1 header, 4 valid, 0 invalid"), "{stdout}");
    let broker = Broker::connect().await;
    let got = published(&broker, &ns).await;
    assert_eq!(
        sorted(kicks(&got)),
        sorted(vec![
            k("r1", "u1", Some("spam")),
            k("r1", "u2", Some("spam, again")),
            k("r2", "u3", Some("two\r\nlines")),
            k("r2", "u4", None),
        ]),
        "users are users and rooms are rooms; the header is no kick"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_or_missing_column_refuses_the_file_with_nothing_published() {
    let ns = Ns::new("enq-badhdr");
    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    for (input, want) in [
        (
            &b"room_id,user_id,note\nr1,u1,x\n"[..],
            "line 1: header: column \"note\" is unknown",
        ),
        (b"user_id,reason\nu1,x\n", "line 1: header: column room_id is missing"),
        (
            b"room_id,user_id,not_after\nr1,u1,2027-01-01\n",
            "column not_after is not supported yet",
        ),
        (b"r1,u1\nr1,u2\n", "line 1: header: column \"r1\" is unknown"),
    ] {
        let args: &[&str] = if input.starts_with(b"r1") {
            &["enqueue", "--file", "-", "--header"]
        } else {
            &["enqueue", "--file", "-"]
        };
        let out = kickq(&ns, args, &[], Some(input)).await;
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
        assert!(stderr.contains(want), "{want}: {stderr}");
        assert!(stderr.contains("nothing was published"), "{stderr}");
    }
    assert_eq!(
        broker.depth(&ns.names.bulk).await + broker.depth(&ns.names.requests).await,
        0
    );
}

/// The JSON lines of a `--dry-run --json` run, as job messages.
fn dry_jobs(stdout: &str) -> Vec<KickRequest> {
    stdout
        .lines()
        .map(|l| job::parse(l.as_bytes(), &Limits::default()).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_json_prints_the_messages_and_no_header_forces_data() {
    let ns = Ns::new("enq-dryjson");
    let nowhere = [("KICKQ_AMQP_URL", "amqp://nobody:nothing@127.0.0.1:1/%2f")];
    let input = b"room_id,user_id\nr1,u1\nr2,u2\n";
    let args = ["enqueue", "--file", "-", "--dry-run", "--json", "--job-id-prefix", "p"];
    let out = kickq(&ns, &args, &nowhere, Some(input)).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let jobs = dry_jobs(&stdout);
    assert_eq!(
        jobs,
        vec![
            KickRequest::new("r1", ["u1"]).with_job_id(kickq::testkit::group_job_id("p", "r1", None, None)),
            KickRequest::new("r2", ["u2"]).with_job_id(kickq::testkit::group_job_id("p", "r2", None, None))
        ],
        "only the messages on stdout: {stdout}"
    );
    assert!(stderr.contains("lines 3: 1 header, 2 valid, 0 invalid"), "{stderr}");

    let mut forced = args.to_vec();
    forced.push("--no-header");
    let out = kickq(&ns, &forced, &nowhere, Some(input)).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let rooms: Vec<String> = dry_jobs(&stdout).into_iter().map(|j| j.room_id).collect();
    assert_eq!(rooms, ["room_id", "r1", "r2"], "--no-header: the first line is data");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_report_counts_what_was_published() {
    let ns = Ns::new("enq-json");
    let input = b"room_id,user_id\nr1,u1\nr1,u2\nr2,\nr3,u3\n";
    let args = [
        "enqueue",
        "--file",
        "-",
        "--json",
        "--skip-invalid",
        "--group-size",
        "1",
    ];
    let out = kickq(&ns, &args, &[], Some(input)).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    let n = |k: &str| report[k].as_u64().unwrap_or_else(|| panic!("{k} in {report}"));
    assert_eq!(report["status"], "complete");
    assert_eq!(report["format"], "csv");
    assert_eq!(
        [
            n("lines"),
            n("header"),
            n("valid"),
            n("invalid"),
            n("published_messages"),
        ],
        [5, 1, 3, 1, 3]
    );
    assert_eq!((n("confirmed_through"), n("skipped_messages")), (5, 0));
    assert!(report["checkpoint"].is_null(), "stdin has no checkpoint unless given");
    let broker = Broker::connect().await;
    let got = published(&broker, &ns).await;
    assert_eq!(got.len(), 3);
    // The report lists the job ids (one per room here: r1's two messages
    // share one), so that a script can look up their history.
    let mut ids: Vec<String> = Vec::new();
    for (job, _) in &got {
        let id = job.job_id.clone().expect("every published job has an id");
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    assert_eq!(ids.len(), 2, "{got:?}");
    assert_eq!(report["job_ids"], serde_json::json!(ids), "{report}");
}

/// Each plain run of the same input is a new run with new job ids (the
/// ledger would skip a re-sent id within its window: a daily ban list sent
/// twice must kick twice); a resume keeps the interrupted run's ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_run_of_the_same_input_gets_new_job_ids() {
    let ns = Ns::new("enq-runs");
    let broker = Broker::connect().await;
    let input = b"r1,u1\nr2,u2\n";
    let mut runs = Vec::new();
    for _ in 0..2 {
        let out = kickq(&ns, &["enqueue", "--file", "-", "--json"], &[], Some(input)).await;
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stdout}{stderr}");
        let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        let got = published(&broker, &ns).await;
        let ids: Vec<String> = got.iter().map(|(j, _)| j.job_id.clone().unwrap()).collect();
        assert_eq!(report["job_ids"], serde_json::json!(ids), "{report}");
        assert!(ids.iter().all(|i| i.starts_with("stdin-")), "{ids:?}");
        runs.push(ids);
    }
    assert!(
        runs[0].iter().all(|id| !runs[1].contains(id)),
        "a second run shares no id with the first: {runs:?}"
    );
    // A producer that wants content idempotency names its ids.
    let mut fixed = Vec::new();
    for _ in 0..2 {
        let args = ["enqueue", "--file", "-", "--job-id-prefix", "bans-2026-12-07"];
        let out = kickq(&ns, &args, &[], Some(input)).await;
        assert!(out.status.success(), "{:?}", text(&out));
        let got = published(&broker, &ns).await;
        fixed.push(got.iter().map(|(j, _)| j.job_id.clone().unwrap()).collect::<Vec<_>>());
    }
    assert_eq!(fixed[0], fixed[1], "the same prefix, the same ids");
    assert!(fixed[0][0].starts_with("bans-2026-12-07:"), "{fixed:?}");
}

fn read_checkpoint(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("the checkpoint exists")).expect("the checkpoint is JSON")
}

#[cfg(feature = "test-hooks")] // stops the command part-way through a test hook
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_resumes_and_refuses_a_changed_file_or_group_size() {
    let ns = Ns::new("enq-cp");
    let (csv, want) = sweep(3_000, 100);
    let file = TempFile::new(&ns, "cp.csv", &csv);
    let cp = checkpoint_of(&file.0);
    let args = ["enqueue", "--file", file.arg(), "--group-size", "2"];
    let broker = Broker::connect().await;

    let out = kickq(&ns, &args, &[("KICKQ_ENQUEUE_STOP_AFTER", "40")], None).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(130), "{stdout}{stderr}");
    let through = confirmed_through(&stdout);
    assert!(through > 1 && through < 3_000, "{stdout}");
    let saved = read_checkpoint(&cp);
    assert_eq!(saved["confirmed_through"].as_u64(), Some(through), "{saved}");
    assert_eq!(
        (saved["group_size"].as_u64(), saved["complete"].as_bool()),
        (Some(2), Some(false))
    );
    assert!(stderr.contains("--resume"), "{stderr}");
    let first = published(&broker, &ns).await;

    // Refused, publishing nothing: another group size, and a plain run over the unfinished one.
    let mut other_size = args.to_vec();
    other_size[4] = "3";
    other_size.push("--resume");
    let plain = args.to_vec();
    for (argv, want_err) in [
        (&other_size, "was written with --group-size 2, not 3"),
        (&plain, "pass --resume to continue"),
        (&plain, "or --new-run to send the whole input again as a new run"),
    ] {
        let out = kickq(&ns, argv, &[], None).await;
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
        assert!(stderr.contains(want_err), "{want_err}: {stderr}");
    }
    assert_eq!(
        broker.depth(&ns.names.bulk).await + broker.depth(&ns.names.requests).await,
        0
    );

    // --resume alone takes the group size the checkpoint recorded.
    let resume = vec!["enqueue", "--file", file.arg(), "--resume"];
    let out = kickq(&ns, &resume, &[], None).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("confirmed through line 3001"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "before line {}, confirmed by the run the checkpoint recorded",
            through + 1
        )),
        "the summary says what was skipped: {stdout}"
    );
    assert_eq!(read_checkpoint(&cp)["complete"].as_bool(), Some(true));
    let second = published(&broker, &ns).await;
    assert!(
        second.iter().all(|(j, _)| j.user_ids.len() <= 2),
        "the recorded group size"
    );
    let prefix = |jobs: &[(KickRequest, Option<String>)]| -> Vec<String> {
        let mut p: Vec<String> = jobs
            .iter()
            .map(|(j, _)| j.job_id.clone().unwrap().split(':').next().unwrap().to_owned())
            .collect();
        p.dedup();
        p
    };
    assert_eq!(prefix(&first), prefix(&second), "the resume keeps the run's ids");
    assert_eq!(prefix(&first).len(), 1);
    let all: Vec<_> = first.iter().chain(&second).cloned().collect();
    assert_exactly_once(kicks(&all), want);

    // A changed file is refused.
    let mut changed = csv.clone();
    changed.extend_from_slice(b"room-1,late\n");
    std::fs::write(&file.0, &changed).unwrap();
    let out = kickq(&ns, &resume, &[], None).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("--resume: the input changed since the checkpoint"),
        "{stderr}"
    );
    assert_eq!(
        broker.depth(&ns.names.bulk).await + broker.depth(&ns.names.requests).await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_ctrl_c_exits_130_with_the_checkpoint_saved() {
    let ns = Ns::new("enq-sigint");
    let (csv, _) = sweep(100_000, 1_000);
    let file = TempFile::new(&ns, "sigint.csv", &csv);
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kickq"))
        .args(["enqueue", "--file", file.arg(), "--group-size", "1"])
        .env("KICKQ_AMQP_URL", amqp_url())
        .env("KICKQ_NAMESPACE", ns.name())
        .env("KICKQ_RETRY_DELAYS", "200ms,400ms,800ms")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let cp = checkpoint_of(&file.0);
    // Once the checkpoint exists, publishing has begun.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !cp.exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    send_signal(child.id().expect("running"), "INT");
    let out = child.wait_with_output().await.unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(130), "{stdout}{stderr}");
    let through = confirmed_through(&stdout);
    assert!(through < 100_001, "stopped before the end: {stdout}");
    assert!(
        stderr.contains("kickq: interrupted: confirmed through line"),
        "{stderr}"
    );
    let saved = read_checkpoint(&cp);
    assert_eq!(saved["confirmed_through"].as_u64(), Some(through), "{saved}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workers_user_limit_bounds_the_groups_and_refuses_a_larger_group_size() {
    let ns = Ns::new("enq-limit");
    let mut csv = b"room_id,user_id\n".to_vec();
    for i in 0..120 {
        csv.extend_from_slice(format!("room-1,user-{i}\n").as_bytes());
    }
    let file = TempFile::new(&ns, "one-room.csv", &csv);
    let worker_limit = [("KICKQ_MAX_USERS_PER_MESSAGE", "50")];
    // Above the worker's limit: one line, exit 2 (a usage error), nothing published.
    let out = kickq(
        &ns,
        &["enqueue", "--file", file.arg(), "--group-size", "100"],
        &worker_limit,
        None,
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("--group-size 100 is above the worker's limit of 50 users a message"),
        "{stderr}"
    );
    assert!(!checkpoint_of(&file.0).exists(), "refused before anything was written");
    // The default group size adapts down to the limit: 50 + 50 + 20.
    let out = kickq(&ns, &["enqueue", "--file", file.arg()], &worker_limit, None).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let broker = Broker::connect().await;
    let got = published(&broker, &ns).await;
    let sizes: Vec<usize> = got.iter().map(|(j, _)| j.user_ids.len()).collect();
    assert_eq!(sizes, vec![50, 50, 20]);
    let worker = Limits {
        max_users_per_message: 50,
        ..Limits::default()
    };
    for (j, _) in &got {
        let body = serde_json::to_vec(j).unwrap();
        assert!(job::parse(&body, &worker).is_ok(), "a worker at 50 accepts it: {j}");
    }
    let want: Vec<Kick> = (0..120).map(|i| k("room-1", &format!("user-{i}"), None)).collect();
    assert_exactly_once(kicks(&got), want);
}

/// `--lane` picks the queue: one job defaults to live, a file to bulk, and
/// the flag overrides either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lane_flag_chooses_the_queue() {
    let ns = Ns::new("enq-lane");
    let file = TempFile::new(&ns, "sweep.csv", b"r1,a\nr2,b\n");
    let broker = Broker::connect().await;
    let one = |lane: &'static str, id: &'static str| {
        let mut argv = vec!["enqueue", "--room", "r", "--user", "u", "--job-id", id];
        if !lane.is_empty() {
            argv.extend(["--lane", lane]);
        }
        argv
    };
    let file_run = |lane: &'static str| {
        let mut argv = vec!["enqueue", "--file", file.arg(), "--job-id-prefix", "p"];
        if !lane.is_empty() {
            argv.extend(["--lane", lane]);
        }
        argv
    };
    // (arguments, messages expected in requests, in bulk)
    let cases: Vec<(Vec<&str>, usize, usize)> = vec![
        (one("", "one-default"), 1, 0),
        (one("bulk", "one-bulk"), 0, 1),
        (one("live", "one-live"), 1, 0),
        (file_run(""), 0, 2),
        (file_run("live"), 2, 0),
        (file_run("bulk"), 0, 2),
    ];
    for (argv, live, bulk) in cases {
        let _ = std::fs::remove_file(checkpoint_of(&file.0));
        let out = kickq(&ns, &argv, &[], None).await;
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{argv:?}: {stdout}{stderr}");
        let got_live = published_in(&broker, &ns.names.requests).await;
        let got_bulk = published_in(&broker, &ns.names.bulk).await;
        assert_eq!((got_live.len(), got_bulk.len()), (live, bulk), "{argv:?}");
    }
    let bad = kickq(&ns, &["enqueue", "--file", file.arg(), "--lane", "fast"], &[], None).await;
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad).1);
    assert!(
        text(&bad).1.contains("\"fast\" is not a lane: use live or bulk"),
        "{}",
        text(&bad).1
    );
}

/// `--not-after` and `--ttl` set `not_after` on every message; without them a
/// JSON Lines job keeps its own; the two flags exclude each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_flags_set_not_after_on_every_message() {
    let ns = Ns::new("enq-deadline");
    let t = |s: &str| job::parse_not_after(s).unwrap();
    let file = TempFile::new(
        &ns,
        "jobs.jsonl",
        br#"{"room_id":"r1","user_ids":["a"],"not_after":"2027-01-01T00:00:00Z"}
{"room_id":"r2","user_ids":["b"]}
"#,
    );
    let broker = Broker::connect().await;
    let deadlines = |got: &[(KickRequest, Option<String>)]| -> Vec<_> {
        got.iter().map(|(j, _)| (j.room_id.clone(), j.not_after)).collect()
    };
    let run = |extra: &'static [&'static str]| {
        let mut argv = vec!["enqueue", "--file", file.arg(), "--job-id-prefix", "p"];
        argv.extend(extra);
        argv
    };
    for (extra, want) in [
        (
            &[][..],
            vec![
                ("r1".to_string(), Some(t("2027-01-01T00:00:00Z"))),
                ("r2".to_string(), None),
            ],
        ),
        (
            &["--not-after", "2026-12-01T13:00:00+01:00"][..],
            vec![
                ("r1".to_string(), Some(t("2026-12-01T12:00:00Z"))),
                ("r2".to_string(), Some(t("2026-12-01T12:00:00Z"))),
            ],
        ),
    ] {
        let _ = std::fs::remove_file(checkpoint_of(&file.0));
        let out = kickq(&ns, &run(extra), &[], None).await;
        assert!(out.status.success(), "{extra:?}: {:?}", text(&out));
        assert_eq!(deadlines(&published(&broker, &ns).await), want, "{extra:?}");
    }
    let _ = std::fs::remove_file(checkpoint_of(&file.0));
    let before = chrono::Utc::now();
    let out = kickq(&ns, &run(&["--ttl", "10m"]), &[], None).await;
    let after = chrono::Utc::now();
    assert!(out.status.success(), "{:?}", text(&out));
    let got = published(&broker, &ns).await;
    assert_eq!(got.len(), 2);
    let ten = chrono::Duration::minutes(10);
    let first = got[0].0.not_after.expect("--ttl sets not_after");
    assert!(
        first >= before + ten - chrono::Duration::seconds(1) && first <= after + ten,
        "{first} is ten minutes after the start"
    );
    assert!(
        got.iter().all(|(j, _)| j.not_after == Some(first)),
        "one deadline for the run: {got:?}"
    );
    // One job, --ttl: live lane, with the deadline.
    let out = kickq(
        &ns,
        &["enqueue", "--room", "r", "--user", "u", "--ttl", "90s"],
        &[],
        None,
    )
    .await;
    assert!(out.status.success(), "{:?}", text(&out));
    let one = published_in(&broker, &ns.names.requests).await;
    let deadline = one[0].0.not_after.expect("--ttl on one job");
    let ninety = chrono::Duration::seconds(90);
    assert!(
        deadline >= before + ninety - chrono::Duration::seconds(1) && deadline <= chrono::Utc::now() + ninety,
        "{deadline} is 90 s after the start"
    );
    let both = kickq(
        &ns,
        &[
            "enqueue",
            "--file",
            file.arg(),
            "--ttl",
            "1m",
            "--not-after",
            "2026-12-01T12:00:00Z",
        ],
        &[],
        None,
    )
    .await;
    assert_eq!(both.status.code(), Some(2), "{}", text(&both).1);
    let bad = kickq(
        &ns,
        &["enqueue", "--file", file.arg(), "--not-after", "tomorrow"],
        &[],
        None,
    )
    .await;
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad).1.contains("is not an RFC 3339 time"), "{}", text(&bad).1);
    assert_eq!(broker.depth(&ns.names.bulk).await, 0, "refused runs publish nothing");
}

/// `--new-run` over an unfinished checkpoint sends the whole input again,
/// as a new run: new job ids, and a checkpoint of its own.
#[cfg(feature = "test-hooks")] // stops the command part-way through a test hook
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_run_sends_the_whole_input_again_under_new_ids() {
    let ns = Ns::new("enq-new-run");
    let (csv, want) = sweep(3_000, 100);
    let file = TempFile::new(&ns, "new-run.csv", &csv);
    let args = ["enqueue", "--file", file.arg(), "--group-size", "2"];
    let broker = Broker::connect().await;
    let out = kickq(&ns, &args, &[("KICKQ_ENQUEUE_STOP_AFTER", "40")], None).await;
    assert_eq!(out.status.code(), Some(130), "{:?}", text(&out));
    let first = published(&broker, &ns).await;
    assert!(!first.is_empty() && kicks(&first).len() < want.len());
    let mut new_run = args.to_vec();
    new_run.push("--new-run");
    let out = kickq(&ns, &new_run, &[], None).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let second = published(&broker, &ns).await;
    assert_exactly_once(kicks(&second), want);
    let id = |jobs: &[(KickRequest, Option<String>)]| jobs[0].0.job_id.clone().unwrap();
    assert_ne!(
        id(&first).split(':').next(),
        id(&second).split(':').next(),
        "a new run's prefix"
    );
    assert_eq!(
        read_checkpoint(&checkpoint_of(&file.0))["complete"].as_bool(),
        Some(true)
    );
    // --new-run and --resume exclude each other (a usage error).
    let mut both = new_run.clone();
    both.push("--resume");
    let out = kickq(&ns, &both, &[], None).await;
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
}

/// A checkpoint that cannot be read does not block `--new-run` (or
/// `--resume-from`), and is moved aside, not overwritten: it may be the only
/// record of an interrupted run's job ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_checkpoint_is_moved_aside_not_overwritten() {
    let ns = Ns::new("enq-cp-aside");
    let (csv, want) = sweep(20, 4);
    let file = TempFile::new(&ns, "aside.csv", &csv);
    let cp = checkpoint_of(&file.0);
    std::fs::write(&cp, b"{not a checkpoint").unwrap();
    let args = ["enqueue", "--file", file.arg(), "--new-run"];
    let out = kickq(&ns, &args, &[], None).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let aside = std::path::PathBuf::from(format!("{}.unreadable", cp.display()));
    assert!(
        stderr.contains("moved to") && stderr.contains(".unreadable"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&aside).unwrap(), b"{not a checkpoint");
    assert_eq!(
        read_checkpoint(&cp)["complete"].as_bool(),
        Some(true),
        "a checkpoint of its own"
    );
    let broker = Broker::connect().await;
    assert_exactly_once(kicks(&published(&broker, &ns).await), want);
    let _ = std::fs::remove_file(&aside);
}
