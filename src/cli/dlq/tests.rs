//! Unit tests of `dlq`.

use super::*;
use crate::dlq::pass::SweepReport;
use clap::Parser;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    dlq: DlqArgs,
}

#[test]
fn filters_parse_into_the_filter() {
    let cli = Cli::try_parse_from([
        "t",
        "replay",
        "--error",
        "retries_exhausted",
        "--code",
        "-1",
        "--room",
        "r",
        "--since",
        "2024-05-01T00:00:00Z",
        "--app",
        "42",
        "--rate",
        "5",
        "--yes",
    ])
    .unwrap();
    let DlqCommand::Replay(a) = cli.dlq.command else {
        panic!("replay")
    };
    let f = a.filter.filter_with(None);
    assert_eq!(f.error, Some(DeadError::RetriesExhausted));
    assert_eq!(f.code, Some(-1));
    assert_eq!(f.room.as_deref(), Some("r"));
    assert!(f.since.is_some());
    assert_eq!(f.app, Some(42));
    assert_eq!(a.filter.filter_with(Some(9)).default_app, Some(9));
    assert_eq!(a.rate, Some(5.0));
    assert_eq!(a.lane, Lane::Bulk, "replays go to bulk unless told");
    assert!(a.confirm.yes && !a.confirm.dry_run);
    let lane = |argv: &[&str]| match Cli::try_parse_from(argv).map(|c| c.dlq.command) {
        Ok(DlqCommand::Replay(a)) => Some(a.lane),
        _ => None,
    };
    assert_eq!(lane(&["t", "replay", "--lane", "live"]), Some(Lane::Live));
    assert_eq!(lane(&["t", "replay", "--lane", "bulk"]), Some(Lane::Bulk));
    assert_eq!(lane(&["t", "replay", "--lane", "requests"]), None);
    assert!(
        Cli::try_parse_from(["t", "purge", "--lane", "live"]).is_err(),
        "purge has no lane"
    );
    assert_eq!(
        Cli::try_parse_from(["t", "list", "--error", "expired"])
            .map(|c| match c.dlq.command {
                DlqCommand::List(l) => l.filter.filter_with(None).error,
                _ => None,
            })
            .ok(),
        Some(Some(DeadError::Expired))
    );
    let DlqCommand::List(l) = Cli::try_parse_from(["t", "list"]).unwrap().dlq.command else {
        panic!("list")
    };
    assert_eq!(l.limit, DEFAULT_LIST_LIMIT);
    for bad in [
        &["t", "list", "--error", "nope"][..],
        &["t", "list", "--limit", "0"],
        &["t", "purge", "--since", "yesterday"],
    ] {
        assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
    }
}

fn report(taken: u64, kept: u64, unread: u64, in_flight: u64, end: SweepEnd) -> SweepReport {
    SweepReport {
        depth: 10,
        examined: 10 - unread,
        matched: taken,
        taken,
        kept,
        unread,
        in_flight,
        end,
    }
}

#[test]
fn summary_counts_every_letter_that_stays() {
    let cases = [
        (
            report(4, 6, 0, 0, SweepEnd::Done),
            "examined 10 of 10 letter(s) in q.dead (every letter): replayed 4, kept 6 in order; 1.0s",
        ),
        (
            report(2, 0, 8, 0, SweepEnd::Done),
            "examined 2 of 10 letter(s) in q.dead (every letter): replayed 2, kept 8 in order (8 not read: the \
             limit was reached); 1.0s",
        ),
        (
            report(2, 1, 7, 0, SweepEnd::Cancelled),
            "examined 3 of 10 letter(s) in q.dead (every letter): replayed 2, kept 8 (7 not examined); 1.0s",
        ),
        (
            report(3, 7, 0, 0, SweepEnd::Cancelled),
            "examined 10 of 10 letter(s) in q.dead (every letter): replayed 3, kept 7; 1.0s",
        ),
    ];
    for (r, want) in cases {
        assert_eq!(summary(&r, "q.dead", "replayed", &Filter::default(), 1.0), want);
    }
    let r = report(4, 4, 0, 2, SweepEnd::Abandoned);
    let s = summary(&r, "q.dead", "purged", &Filter::default(), 1.0);
    assert!(s.contains("kept 4;") && s.contains("2 letter(s) were in flight"), "{s}");
    let r = report(4, 6, 0, 0, SweepEnd::Done);
    assert!(!summary(&r, "q.dead", "purged", &Filter::default(), 1.0).contains("in flight"));
}

#[test]
fn the_prompt_counts_the_letters_it_would_take() {
    let f = Filter {
        room: Some("r1".into()),
        ..Filter::default()
    };
    assert_eq!(
        prompt("replay", 20, 40, "q.dead", &f),
        "replay 20 of 40 letter(s) in q.dead (matching room \"r1\")?"
    );
}

#[test]
fn json_is_a_flag_of_replay_and_purge() {
    let DlqCommand::Purge(p) = Cli::try_parse_from(["t", "purge", "--json", "--yes"])
        .unwrap()
        .dlq
        .command
    else {
        panic!("purge")
    };
    assert!(p.confirm.json && p.confirm.yes);
    let DlqCommand::Replay(r) = Cli::try_parse_from(["t", "replay", "--json", "--dry-run"])
        .unwrap()
        .dlq
        .command
    else {
        panic!("replay")
    };
    assert!(r.confirm.json && r.confirm.dry_run);
}
