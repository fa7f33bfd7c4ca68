//! Unit tests of `enqueue`.

use super::args::{TtlTooLong, DEFAULT_GROUP_SIZE};
use super::*;
use crate::amqp::topology::Lane;
use crate::bulk::parse::HeaderMode;
use crate::job::{IdCharset, Limits, DEFAULT_MAX_USERS_PER_MESSAGE};
use clap::Parser;
use std::time::Duration;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    enqueue: EnqueueArgs,
}

#[test]
fn single_and_bulk_arguments_exclude_each_other() {
    let ok = |argv: &[&str]| Cli::try_parse_from(argv).map(|c| c.enqueue);
    let one = ok(&["t", "--room", "r", "--user", "a", "--user", "b", "--reason", "x"]).unwrap();
    assert_eq!(one.users, vec!["a", "b"]);
    assert_eq!(one.group_size, None);
    assert_eq!(
        group_size(one.group_size, one.limits().max_users_per_message),
        Ok(DEFAULT_GROUP_SIZE)
    );
    assert!(ok(&["t", "--file", "-", "--resume-from", "7", "--group-size", "5"]).is_ok());
    assert_eq!(
        ok(&["t", "--file", "-", "--format", "csv"]).unwrap().format,
        Some(Format::Csv)
    );
    for bad in [
        &["t"][..],
        &["t", "--room", "r"],
        &["t", "--file", "f", "--room", "r", "--user", "u"],
        &["t", "--file", "f", "--group-size", "0"],
        &["t", "--file", "f", "--max-users-per-message", "0"],
        &["t", "--file", "f", "--resume-from", "0"],
        &["t", "--room", "r", "--user", "u", "--skip-invalid"],
        &["t", "--file", "-", "--format", "xml"],
    ] {
        assert!(ok(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn group_size_by_table_never_above_the_workers_limit() {
    // (--group-size, limit) -> size or refused
    for (asked, limit, want) in [
        (None, 1000, Some(100)),
        (None, 50, Some(50)),
        (None, 1, Some(1)),
        (Some(7), 50, Some(7)),
        (Some(50), 50, Some(50)),
        (Some(51), 50, None),
        (Some(1001), 1000, None),
        (Some(1500), 2000, Some(1500)),
    ] {
        assert_eq!(group_size(asked, limit).ok(), want, "{asked:?} {limit}");
    }
    let e = group_size(Some(100), 50).unwrap_err().to_string();
    assert!(
        e.starts_with("--group-size 100 is above the worker's limit of 50 users a message")
            && e.ends_with("give --group-size 50 or less")
            && !e.contains('\n'),
        "{e}"
    );
    let args = |argv: &[&str]| Cli::try_parse_from(argv).unwrap().enqueue;
    let low = args(&["t", "--file", "-", "--max-users-per-message", "50"]);
    assert_eq!(low.limits().max_users_per_message, 50);
    assert_eq!(
        group_size(low.group_size, low.limits().max_users_per_message),
        Ok(50),
        "the default adapts down"
    );
    let above = args(&[
        "t",
        "--file",
        "-",
        "--max-users-per-message",
        "50",
        "--group-size",
        "100",
    ]);
    assert!(group_size(above.group_size, above.limits().max_users_per_message).is_err());
}

#[test]
fn lane_defaults_to_live_for_one_job_and_bulk_for_a_file() {
    let lane = |argv: &[&str]| Cli::try_parse_from(argv).map(|c| c.enqueue.lane());
    let cases: &[(&[&str], Option<Lane>)] = &[
        (&["t", "--room", "r", "--user", "u"], Some(Lane::Live)),
        (&["t", "--room", "r", "--user", "u", "--lane", "bulk"], Some(Lane::Bulk)),
        (&["t", "--room", "r", "--user", "u", "--lane", "live"], Some(Lane::Live)),
        (&["t", "--file", "f"], Some(Lane::Bulk)),
        (&["t", "--file", "f", "--lane", "live"], Some(Lane::Live)),
        (&["t", "--file", "f", "--lane", "bulk"], Some(Lane::Bulk)),
        (&["t", "--file", "f", "--lane", "requests"], None),
        (&["t", "--file", "f", "--lane", "LIVE"], None),
    ];
    for (argv, want) in cases {
        assert_eq!(lane(argv).ok(), *want, "{argv:?}");
    }
}

#[test]
fn deadline_flags_by_table() {
    let t = |s: &str| job::parse_not_after(s).unwrap();
    let now = t("2026-11-30T10:00:00Z");
    let parsed =
        |argv: &[&str]| Cli::try_parse_from(argv).map(|c| deadline(c.enqueue.not_after, c.enqueue.ttl, now).unwrap());
    let cases: &[(&[&str], Option<Option<&str>>)] = &[
        (&["t", "--file", "f"], Some(None)),
        (
            &["t", "--file", "f", "--not-after", "2026-12-01T12:00:00Z"],
            Some(Some("2026-12-01T12:00:00Z")),
        ),
        (
            &[
                "t",
                "--room",
                "r",
                "--user",
                "u",
                "--not-after",
                "2026-12-01T13:00:00+01:00",
            ],
            Some(Some("2026-12-01T12:00:00Z")),
        ),
        (
            &["t", "--file", "f", "--ttl", "10m"],
            Some(Some("2026-11-30T10:10:00Z")),
        ),
        (
            &["t", "--file", "f", "--ttl", "90s"],
            Some(Some("2026-11-30T10:01:30Z")),
        ),
        (&["t", "--file", "f", "--ttl", "2h"], Some(Some("2026-11-30T12:00:00Z"))),
        (
            &[
                "t",
                "--file",
                "f",
                "--ttl",
                "10m",
                "--not-after",
                "2026-12-01T12:00:00Z",
            ],
            None,
        ),
        (&["t", "--file", "f", "--not-after", "tomorrow"], None),
        (&["t", "--file", "f", "--not-after", "2026-12-01"], None),
        (&["t", "--file", "f", "--ttl", "soon"], None),
    ];
    for (argv, want) in cases {
        let want = want.map(|w| w.map(t));
        assert_eq!(parsed(argv).ok(), want, "{argv:?}");
    }
    let e = Cli::try_parse_from(["t", "--file", "f", "--not-after", "tomorrow"]).unwrap_err();
    assert!(
        e.to_string()
            .contains("\"tomorrow\" is not an RFC 3339 time such as 2026-12-01T12:00:00Z"),
        "{e}"
    );
    assert_eq!(
        deadline(None, Some(Duration::from_secs(u64::MAX)), now),
        Err(TtlTooLong(Duration::from_secs(u64::MAX)))
    );
}

#[test]
fn id_charset_flag_sets_the_limits() {
    let limits = |argv: &[&str]| Cli::try_parse_from(argv).map(|c| c.enqueue.limits());
    assert_eq!(limits(&["t", "--file", "-"]).unwrap(), Limits::default());
    let any = limits(&["t", "--file", "-", "--id-charset", "any"]).unwrap();
    assert_eq!(any.id_charset, IdCharset::Any);
    assert_eq!(any.max_users_per_message, DEFAULT_MAX_USERS_PER_MESSAGE);
    assert!(limits(&["t", "--file", "-", "--id-charset", "loose"]).is_err());
}

#[test]
fn header_flags_exclude_each_other_and_the_resume_flags_too() {
    let mode = |argv: &[&str]| Cli::try_parse_from(argv).map(|c| c.enqueue.header_mode());
    assert_eq!(mode(&["t", "--file", "f"]).unwrap(), HeaderMode::Detect);
    assert_eq!(mode(&["t", "--file", "f", "--header"]).unwrap(), HeaderMode::Present);
    assert_eq!(mode(&["t", "--file", "f", "--no-header"]).unwrap(), HeaderMode::Absent);
    assert!(mode(&["t", "--file", "f", "--header", "--no-header"]).is_err());
    assert!(mode(&["t", "--file", "f", "--resume", "--resume-from", "3"]).is_err());
    assert!(mode(&["t", "--room", "r", "--user", "u", "--resume"]).is_err());
    assert!(mode(&["t", "--file", "-", "--resume", "--checkpoint", "c"]).is_ok());
}

fn report(input: &[u8], start: Start, published: (usize, u64)) -> EnqueueSummary {
    let opts = LoadOptions::new(100);
    let judged = judge(input, Format::Csv, &opts, start.from).unwrap();
    let messages = crate::bulk::load::load(input, opts).unwrap().messages;
    // Every line up to the next unconfirmed message's first line is confirmed.
    let through = messages
        .get(start.skipped + published.0)
        .map_or(judged.scanned.lines, |next| next.first_line - 1);
    let run = Run {
        judged: &judged,
        start,
        prefix: "p",
        group_size: 1,
        started: Instant::now(),
    };
    let mut r = EnqueueSummary::new(&run, EnqueueEnd::Complete, published, through, None);
    r.elapsed_ms = 2000;
    r
}

const NO_SKIP: Start = Start {
    from: 1,
    skipped: 0,
    by_checkpoint: false,
};

#[test]
fn summary_names_every_count() {
    let r = report(b"room_id,user_id\nr,a\nr,b\nbad\n", NO_SKIP, (1, 2));
    assert_eq!(
        r.text("confirmed through line 4"),
        "lines 4: 1 header, 2 valid, 1 invalid (csv)\nmessages 1, users 2\nelapsed 2.0s, 2 lines/s\nconfirmed through line 4"
    );
    let blank = report(b"r,a\n\nr,b\n", NO_SKIP, (1, 2)).text("x");
    assert!(
        blank.starts_with("lines 3: 0 header, 2 valid, 0 invalid, 1 blank (csv)"),
        "{blank}"
    );
    let by_flag = Start {
        from: 3,
        skipped: 1,
        by_checkpoint: false,
    };
    let resumed = report(b"r,a\nr2,b\nr3,c\n", by_flag, (2, 2));
    assert_eq!((resumed.skipped_by, resumed.confirmed_through), ("resume_from", 3));
    assert!(
        resumed
            .text("x")
            .contains("(skipped 1 message(s) before --resume-from 3)"),
        "{}",
        resumed.text("x")
    );
    let by_cp = report(
        b"r,a\nr2,b\nr3,c\n",
        Start {
            by_checkpoint: true,
            ..by_flag
        },
        (2, 2),
    );
    assert_eq!(by_cp.skipped_by, "checkpoint");
    assert!(by_cp
        .text("x")
        .contains("skipped 1 message(s) before line 3, confirmed by the run the checkpoint recorded"));
}

#[test]
fn the_json_report_has_its_documented_fields() {
    let r = report(b"room_id,user_id\nr,a\n", NO_SKIP, (1, 1));
    let v = serde_json::to_value(&r).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    let mut want = [
        "status",
        "format",
        "lines",
        "header",
        "blank",
        "valid",
        "invalid",
        "messages",
        "users",
        "skipped_messages",
        "resume_from",
        "skipped_by",
        "published_messages",
        "published_users",
        "job_ids",
        "confirmed_through",
        "in_doubt",
        "job_id_prefix",
        "checkpoint",
        "elapsed_ms",
    ];
    want.sort();
    assert_eq!(keys, want);
    assert_eq!(v["status"], "complete");
    assert_eq!(
        (v["header"].as_u64(), v["confirmed_through"].as_u64()),
        (Some(1), Some(2))
    );
}
