//! `kickq history`: who was kicked from a room, when, with which RequestId, as an aligned table or JSON.

use super::flags::DatabaseArgs;
use crate::ledger::query::{describe, parse_since, DEFAULT_LIMIT, MAX_LIMIT};
use crate::ledger::{HistoryQuery, HistoryRow};
use crate::table::escape;
use chrono::{DateTime, SecondsFormat, Utc};
use std::io::Write;

/// `kickq history [--room R] [--user U] [--job J] [--since T] [--limit N] [--json]`, at least one of room, user
/// and job.
#[derive(Debug, Clone, clap::Args)]
#[command(group = clap::ArgGroup::new("search").args(["room", "user", "job"]).required(true).multiple(true))]
pub(crate) struct HistoryArgs {
    /// The ledger database.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Only this room.
    #[arg(long, value_name = "ROOM_ID")]
    pub room: Option<String>,
    /// Only this user (without --room: in every room).
    #[arg(long, value_name = "USER_ID")]
    pub user: Option<String>,
    /// Only this job (without --room: in every room).
    #[arg(long, value_name = "JOB_ID")]
    pub job: Option<String>,
    /// Only rows at or after this time: RFC 3339 (2024-05-01T12:00:00Z) or an
    /// age such as 30m, 2h or 7d.
    #[arg(long, value_name = "TIME", value_parser = parse_since)]
    pub since: Option<DateTime<Utc>>,
    /// Most rows to show, newest first.
    #[arg(long, default_value_t = DEFAULT_LIMIT, value_parser = clap::value_parser!(i64).range(1..=MAX_LIMIT))]
    pub limit: i64,
    /// Print one JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl HistoryArgs {
    /// The ledger query these arguments ask for.
    pub(crate) fn query(&self) -> HistoryQuery {
        HistoryQuery {
            room_id: self.room.clone(),
            user_id: self.user.clone(),
            job_id: self.job.clone(),
            since: self.since,
            limit: self.limit,
        }
    }
}

/// Runs `kickq history`.
pub(crate) async fn run(args: HistoryArgs) -> anyhow::Result<()> {
    let ledger = args.database.ready_ledger().await?;
    let rows = ledger.history(&args.query()).await?;
    let text = if args.json {
        let mut json = serde_json::to_string(&rows)?;
        json.push('\n');
        json
    } else if rows.is_empty() {
        eprintln!("no ledger rows match {}", describe(&args.query()));
        return Ok(());
    } else {
        format_table(&rows, args.room.is_none())
    };
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        // `kickq history ... | head` closing the pipe early is not a failure.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// The history table: a header and one line per row, columns aligned, in the
/// order given (the ledger returns newest first), with a ROOM column when the
/// rows may come from several rooms. Missing values print as `-`; control
/// characters are escaped so a hostile reason cannot drive the terminal.
/// Alignment counts chars, so wide (CJK) ids may skew it.
pub(crate) fn format_table(rows: &[HistoryRow], rooms: bool) -> String {
    const HEADER: [&str; 8] = [
        "TIME",
        "ROOM",
        "USER",
        "OUTCOME",
        "CODE",
        "REQUEST_ID",
        "JOB_ID",
        "REASON",
    ];
    let opt = |s: &Option<String>| s.as_deref().map_or_else(|| "-".to_owned(), escape);
    let mut table: Vec<[String; 8]> = vec![HEADER.map(String::from)];
    table.extend(rows.iter().map(|r| {
        [
            r.at.to_rfc3339_opts(SecondsFormat::Millis, true),
            escape(&r.room_id),
            escape(&r.user_id),
            r.outcome.as_str().to_owned(),
            r.code.map_or_else(|| "-".to_owned(), |c| c.to_string()),
            opt(&r.request_id),
            escape(&r.job_id),
            opt(&r.reason),
        ]
    }));
    if !rooms {
        let without: Vec<[String; 7]> = table
            .into_iter()
            .map(|[t, _, u, o, c, q, j, r]| [t, u, o, c, q, j, r])
            .collect();
        return crate::table::render(&without);
    }
    crate::table::render(&table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::UserOutcome;
    use chrono::TimeZone;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        history: HistoryArgs,
    }

    fn row(
        user: &str,
        outcome: UserOutcome,
        code: Option<i64>,
        request_id: Option<&str>,
        reason: Option<&str>,
    ) -> HistoryRow {
        HistoryRow {
            at: Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap(),
            room_id: "room".into(),
            user_id: user.into(),
            job_id: "job-1".into(),
            outcome,
            code,
            request_id: request_id.map(String::from),
            reason: reason.map(String::from),
            detail: None,
        }
    }

    #[test]
    fn table_is_aligned_with_dashes_for_missing_values() {
        let rows = [
            row("alice", UserOutcome::Kicked, Some(0), Some("req-123"), Some("spam")),
            row(
                "bob-the-long",
                UserOutcome::DeadLettered,
                Some(1_000_000_001),
                None,
                None,
            ),
        ];
        let expected = "\
TIME                      USER          OUTCOME        CODE        REQUEST_ID  JOB_ID  REASON
2024-05-01T12:00:00.000Z  alice         kicked         0           req-123     job-1   spam
2024-05-01T12:00:00.000Z  bob-the-long  dead_lettered  1000000001  -           job-1   -
";
        assert_eq!(format_table(&rows, false), expected);
        assert!(format_table(&rows, true).starts_with("TIME                      ROOM  USER"));
    }

    #[test]
    fn table_escapes_control_characters() {
        let rows = [row("u", UserOutcome::Skipped, None, None, Some("evil\n\u{1b}[2J"))];
        let table = format_table(&rows, false);
        assert_eq!(table.lines().count(), 2, "{table}");
        assert!(table.ends_with("evil\\n\\u{1b}[2J\n"), "{table}");
    }

    #[test]
    fn arguments_parse_into_the_query() {
        let cli = Cli::try_parse_from([
            "t",
            "--room",
            "r",
            "--user",
            "u",
            "--job",
            "j",
            "--since",
            "2024-05-01T00:00:00Z",
            "--json",
        ])
        .unwrap();
        let q = cli.history.query();
        assert_eq!(q.room_id.as_deref(), Some("r"));
        assert_eq!(q.user_id.as_deref(), Some("u"));
        assert_eq!(q.job_id.as_deref(), Some("j"));
        assert_eq!(q.since, Some(Utc.with_ymd_and_hms(2024, 5, 1, 0, 0, 0).unwrap()));
        assert_eq!(q.limit, DEFAULT_LIMIT);
        assert!(cli.history.json);
        assert_eq!(
            Cli::try_parse_from(["t", "--room", "r", "--limit", "5"])
                .unwrap()
                .history
                .limit,
            5
        );
        assert!(Cli::try_parse_from(["t", "--room", "r", "--limit", "0"]).is_err());
        assert!(
            Cli::try_parse_from(["t", "--since", "2h"]).is_err(),
            "a room, user or job is required"
        );
        let by_user = Cli::try_parse_from(["t", "--user", "u"]).unwrap().history.query();
        assert_eq!((by_user.room_id, by_user.user_id.as_deref()), (None, Some("u")));
        assert_eq!(
            describe(&cli.history.query()),
            "room \"r\", user \"u\", job \"j\", since 2024-05-01T00:00:00Z"
        );
    }

    #[test]
    fn json_is_one_array_with_snake_case_outcomes() {
        let rows = [row("alice", UserOutcome::NothingToDo, Some(0), Some("req"), None)];
        let v: serde_json::Value = serde_json::from_str(&serde_json::to_string(&rows).unwrap()).unwrap();
        assert_eq!(v[0]["outcome"], "nothing_to_do");
        assert_eq!(v[0]["request_id"], "req");
        assert_eq!(v[0]["at"], "2024-05-01T12:00:00Z");
        assert_eq!(v.as_array().unwrap().len(), 1);
    }
}
