//! One record of `kickq enqueue --file`: format detection, the CSV header (columns by name, or the fixed order
//! without one), turning a record into a validated job with the same `job::validate` the worker uses, and
//! saying what is wrong in the file's own words (`column user_id is empty`).

use crate::job::{self, InvalidJob, KickRequest, Limits};
use std::fmt;
use std::str::FromStr;

/// The two input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// One job message (the README's JSON) per line.
    Jsonl,
    /// `room_id,user_id[,reason]` per record, or any order under a header.
    Csv,
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "jsonl" | "ndjson" | "json" => Ok(Format::Jsonl),
            "csv" => Ok(Format::Csv),
            other => Err(format!("{other:?} is not a format (use jsonl or csv)")),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Jsonl => "jsonl",
            Format::Csv => "csv",
        })
    }
}

/// Guesses the format from the first non-blank line: a job message is a JSON
/// object, and no room id of a CSV line starts with `{` in practice (give
/// `--format csv` if yours do).
pub(crate) fn detect(first_line: &str) -> Format {
    if strip_bom(first_line).trim_start().starts_with('{') {
        Format::Jsonl
    } else {
        Format::Csv
    }
}

/// The UTF-8 byte order mark some spreadsheets write first.
pub(crate) const BOM: &str = "\u{feff}";

fn strip_bom(s: &str) -> &str {
    s.strip_prefix(BOM).unwrap_or(s)
}

/// Whether the first non-blank CSV record is a header (`--header`, `--no-header`, or neither).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum HeaderMode {
    /// A header iff every field of the first record is a column name.
    #[default]
    Detect,
    /// The first record is a header (`--header`).
    Present,
    /// The first record is data (`--no-header`).
    Absent,
}

/// A CSV column kickq knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Column {
    /// `room_id` (also `room`, `roomid`).
    RoomId,
    /// `user_id` (also `user`, `userid`).
    UserId,
    /// `reason` (also `custom_reason`, `customreason`).
    Reason,
    /// `not_after`: a deadline, known so that a header naming it is refused as not supported yet.
    NotAfter,
}

impl Column {
    /// The name the README and error lines use.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Column::RoomId => "room_id",
            Column::UserId => "user_id",
            Column::Reason => "reason",
            Column::NotAfter => "not_after",
        }
    }

    /// The column a header field names: its name or an alias, ignoring case and surrounding spaces.
    pub(crate) fn named(field: &str) -> Option<Column> {
        match field.trim().to_ascii_lowercase().as_str() {
            "room_id" | "room" | "roomid" => Some(Column::RoomId),
            "user_id" | "user" | "userid" => Some(Column::UserId),
            "reason" | "custom_reason" | "customreason" => Some(Column::Reason),
            "not_after" => Some(Column::NotAfter),
            _ => None,
        }
    }
}

impl fmt::Display for Column {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a header line refuses the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HeaderError {
    /// A field that names no column.
    #[error("column {0:?} is unknown (known: room_id, user_id, reason)")]
    Unknown(String),
    /// A column kickq knows but cannot use yet.
    #[error("column {0} is not supported yet")]
    NotSupported(Column),
    /// A required column is absent.
    #[error("column {0} is missing")]
    Missing(Column),
    /// A column named twice.
    #[error("column {0} is named twice")]
    Duplicate(Column),
    /// The header is not UTF-8.
    #[error("not UTF-8")]
    NotUtf8,
}

/// Where each column is in a record, from the header (or the fixed order without one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Columns {
    room: usize,
    user: usize,
    reason: Option<usize>,
    /// Fields the header names: a record may have fewer (the rest empty), not more.
    width: usize,
}

impl Columns {
    /// Maps a header's fields to columns, refusing unknown, unsupported, duplicate and missing ones.
    pub(crate) fn from_header(fields: &[&str]) -> Result<Columns, HeaderError> {
        let (mut room, mut user, mut reason) = (None, None, None);
        for (i, field) in fields.iter().enumerate() {
            let column = Column::named(field).ok_or_else(|| HeaderError::Unknown(field.trim().to_owned()))?;
            let slot = match column {
                Column::RoomId => &mut room,
                Column::UserId => &mut user,
                Column::Reason => &mut reason,
                Column::NotAfter => return Err(HeaderError::NotSupported(column)),
            };
            if slot.replace(i).is_some() {
                return Err(HeaderError::Duplicate(column));
            }
        }
        Ok(Columns {
            room: room.ok_or(HeaderError::Missing(Column::RoomId))?,
            user: user.ok_or(HeaderError::Missing(Column::UserId))?,
            reason,
            width: fields.len(),
        })
    }
}

/// Whether the first non-blank record is a header, and its columns if so.
/// Detection never guesses from ids: the record is a header iff every field
/// is a column name; if only some are, the file is refused (naming the first
/// unknown field) rather than kicking `user_id` from room `room_id`.
pub(crate) fn header_decision(fields: &[&str], mode: HeaderMode) -> Result<Option<Columns>, HeaderError> {
    match mode {
        HeaderMode::Absent => Ok(None),
        HeaderMode::Present => Columns::from_header(fields).map(Some),
        HeaderMode::Detect => {
            let known = fields.iter().filter(|f| Column::named(f).is_some()).count();
            if known == 0 {
                Ok(None)
            } else {
                Columns::from_header(fields).map(Some)
            }
        }
    }
}

/// Why a record is not a job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LineError {
    /// The bytes are not UTF-8.
    #[error("not UTF-8")]
    NotUtf8,
    /// A record without a header with the wrong number of fields.
    #[error("expected room_id,user_id[,reason], got {0} field(s)")]
    FieldCount(usize),
    /// A record with more fields than its header names.
    #[error("{got} fields, but the header names {width} columns")]
    Wider {
        /// Fields in the record.
        got: usize,
        /// Columns of the header.
        width: usize,
    },
    /// A CSV field breaks a rule of the job message, said of its column.
    #[error("column {column} {problem}")]
    Column {
        /// The column.
        column: Column,
        /// What is wrong with it: `is empty`, `must be 1 to 64 bytes, got 65`, ...
        problem: String,
    },
    /// A JSON Lines job message breaks a rule (said of its JSON fields).
    #[error("{0}")]
    Invalid(#[from] InvalidJob),
}

/// Says a validation error of a CSV record in the file's words: the column,
/// not the job message field (`column user_id is empty`, not
/// `user_ids[0] must be 1 to 64 bytes, got 0`).
pub(crate) fn column_error(e: InvalidJob) -> LineError {
    let empty = |column| LineError::Column {
        column,
        problem: "is empty".into(),
    };
    match e {
        InvalidJob::RoomIdLength(0) | InvalidJob::NoUsers => {
            return empty(if matches!(e, InvalidJob::NoUsers) {
                Column::UserId
            } else {
                Column::RoomId
            })
        }
        InvalidJob::UserIdLength { len: 0, .. } => return empty(Column::UserId),
        _ => {}
    }
    let text = e.to_string();
    let Some((field, rest)) = text.split_once(' ') else {
        return LineError::Invalid(e);
    };
    let column = match field {
        "room_id" => Column::RoomId,
        "reason" => Column::Reason,
        f if f.starts_with("user_ids[") => Column::UserId,
        _ => return LineError::Invalid(e),
    };
    LineError::Column {
        column,
        problem: rest.to_owned(),
    }
}

/// The job of one CSV record (fields already unquoted and trimmed): by the
/// header's columns, or `room_id,user_id[,reason]` without one. An empty
/// reason is no reason.
pub(crate) fn csv_job(fields: &[&str], columns: Option<&Columns>, limits: &Limits) -> Result<KickRequest, LineError> {
    let (room, user, reason) = match columns {
        None => match fields {
            [room, user] => (*room, *user, ""),
            [room, user, reason] => (*room, *user, *reason),
            other => return Err(LineError::FieldCount(other.len())),
        },
        Some(c) => {
            if fields.len() > c.width {
                return Err(LineError::Wider {
                    got: fields.len(),
                    width: c.width,
                });
            }
            let at = |i: usize| fields.get(i).copied().unwrap_or("");
            (at(c.room), at(c.user), c.reason.map_or("", at))
        }
    };
    let mut job = KickRequest::new(room, [user]);
    job.reason = (!reason.is_empty()).then(|| reason.to_owned());
    job::validate(job, limits).map_err(column_error)
}

/// The job of one JSON Lines line (without its `\n`; a trailing `\r` and, on
/// the first line, a BOM are dropped), or `None` for a blank line.
pub(crate) fn jsonl_job(raw: &[u8], first: bool, limits: &Limits) -> Result<Option<KickRequest>, LineError> {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    let text = std::str::from_utf8(raw).map_err(|_| LineError::NotUtf8)?;
    let text = if first { strip_bom(text) } else { text };
    if text.trim().is_empty() {
        return Ok(None);
    }
    Ok(Some(job::parse(text.as_bytes(), limits)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_by_first_line() {
        for (line, want) in [
            (r#"{"room_id":"r","user_ids":["u"]}"#, Format::Jsonl),
            ("  {", Format::Jsonl),
            ("\u{feff}{\"room_id\":1}", Format::Jsonl),
            ("room_id,user_id", Format::Csv),
            ("r1,u1,spam", Format::Csv),
            ("[1]", Format::Csv),
        ] {
            assert_eq!(detect(line), want, "{line:?}");
        }
    }

    fn cols(room: usize, user: usize, reason: Option<usize>, width: usize) -> Columns {
        Columns {
            room,
            user,
            reason,
            width,
        }
    }

    #[test]
    fn header_decisions_by_table() {
        use HeaderMode::*;
        type Row<'a> = (&'a [&'a str], HeaderMode, Result<Option<Columns>, HeaderError>);
        let table: &[Row] = &[
            (&["room_id", "user_id"], Detect, Ok(Some(cols(0, 1, None, 2)))),
            (
                &["user_id", "room_id", "reason"],
                Detect,
                Ok(Some(cols(1, 0, Some(2), 3))),
            ),
            (
                &[" Reason", "USER_ID ", "room"],
                Detect,
                Ok(Some(cols(2, 1, Some(0), 3))),
            ),
            (&["r1", "u1"], Detect, Ok(None)),
            (&["r1", "u1", "spam"], Detect, Ok(None)),
            (&["room_id", "user_id"], Absent, Ok(None)),
            (
                &["room_id", "user_id", "note"],
                Detect,
                Err(HeaderError::Unknown("note".into())),
            ),
            (&["r1", "u1"], Present, Err(HeaderError::Unknown("r1".into()))),
            (
                &["room_id", "reason"],
                Detect,
                Err(HeaderError::Missing(Column::UserId)),
            ),
            (&["user_id"], Present, Err(HeaderError::Missing(Column::RoomId))),
            (
                &["room_id", "user_id", "room"],
                Detect,
                Err(HeaderError::Duplicate(Column::RoomId)),
            ),
            (
                &["room_id", "user_id", "not_after"],
                Detect,
                Err(HeaderError::NotSupported(Column::NotAfter)),
            ),
        ];
        for (fields, mode, want) in table {
            assert_eq!(&header_decision(fields, *mode), want, "{fields:?} {mode:?}");
        }
        assert_eq!(
            HeaderError::Unknown("note".into()).to_string(),
            "column \"note\" is unknown (known: room_id, user_id, reason)"
        );
        assert_eq!(
            HeaderError::NotSupported(Column::NotAfter).to_string(),
            "column not_after is not supported yet"
        );
    }

    fn job(room: &str, user: &str, reason: Option<&str>) -> KickRequest {
        let mut j = KickRequest::new(room, [user]);
        j.reason = reason.map(String::from);
        j
    }

    #[test]
    fn csv_records_by_columns_or_fixed_order() {
        let by_name = cols(1, 0, Some(2), 3);
        type Row<'a> = (&'a [&'a str], Option<&'a Columns>, Result<KickRequest, &'a str>);
        let table: &[Row] = &[
            (&["r1", "u1"], None, Ok(job("r1", "u1", None))),
            (&["r1", "u1", "spam"], None, Ok(job("r1", "u1", Some("spam")))),
            (&["r1", "u1", ""], None, Ok(job("r1", "u1", None))),
            (&["u1", "r1", "a, b"], Some(&by_name), Ok(job("r1", "u1", Some("a, b")))),
            (&["u1", "r1"], Some(&by_name), Ok(job("r1", "u1", None))),
            (&["r1"], None, Err("expected room_id,user_id[,reason], got 1 field(s)")),
            (&["r1", "u1", "why", "x"], None, Err("got 4 field(s)")),
            (
                &["u1", "r1", "why", "x"],
                Some(&by_name),
                Err("4 fields, but the header names 3 columns"),
            ),
            (&["u1"], Some(&by_name), Err("column room_id is empty")),
            (&["r1", ""], None, Err("column user_id is empty")),
            (&["", "u1"], None, Err("column room_id is empty")),
        ];
        for (fields, columns, want) in table {
            let got = csv_job(fields, *columns, &Limits::default()).map_err(|e| e.to_string());
            match want {
                Ok(j) => assert_eq!(got.as_ref(), Ok(j), "{fields:?}"),
                Err(w) => {
                    let e = got.expect_err(w);
                    assert!(e.contains(w), "{fields:?}: {e} should contain {w}");
                }
            }
        }
    }

    #[test]
    fn validation_errors_speak_columns() {
        let long_user = "u".repeat(65);
        let long_reason = "x".repeat(300);
        let table: &[(&[&str], &str)] = &[
            (&["r1", &long_user], "column user_id must be 1 to 64 bytes, got 65"),
            (&["r\u{7}", "u"], "column room_id holds a control character"),
            (
                &["r", "with space"],
                "column user_id has a character outside ZEGOCLOUD's user id set",
            ),
            (
                &["r 1", "u"],
                "column room_id has a character outside ZEGOCLOUD's room id set",
            ),
            (
                &["r", "u", &long_reason],
                "column reason must be at most 256 bytes, got 300",
            ),
        ];
        for (fields, want) in table {
            let e = csv_job(fields, None, &Limits::default()).unwrap_err().to_string();
            assert!(e.starts_with(want), "{fields:?}: {e} should start with {want}");
        }
        assert_eq!(
            column_error(InvalidJob::Malformed("x".into())),
            LineError::Invalid(InvalidJob::Malformed("x".into())),
            "no column to name: said as is"
        );
    }

    #[test]
    fn jsonl_lines_are_job_messages() {
        let l = Limits::default();
        let got = jsonl_job(
            br#"{"room_id":"r","user_ids":["a","b","a"],"reason":"x","job_id":"j"}"#,
            false,
            &l,
        );
        let j = KickRequest::new("r", ["a", "b"]).with_reason("x").with_job_id("j");
        assert_eq!(got, Ok(Some(j)));
        assert_eq!(jsonl_job(b"  \r", false, &l), Ok(None));
        assert!(jsonl_job("\u{feff}{\"room_id\":\"r\",\"user_ids\":[\"a\"]}".as_bytes(), true, &l).is_ok());
        let missing = jsonl_job(br#"{"room_id":"r"}"#, false, &l).unwrap_err().to_string();
        assert!(missing.contains("missing field `user_ids`"), "{missing}");
        let csv = jsonl_job(b"r,u", false, &l).unwrap_err().to_string();
        assert!(csv.starts_with("not a job message"), "{csv}");
        assert_eq!(jsonl_job(b"\xff", false, &l), Err(LineError::NotUtf8));
    }

    #[test]
    fn formats_parse_from_flags() {
        assert_eq!("JSONL".parse::<Format>(), Ok(Format::Jsonl));
        assert_eq!("csv".parse::<Format>(), Ok(Format::Csv));
        assert!("xml".parse::<Format>().is_err());
    }
}
