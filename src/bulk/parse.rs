//! One input line of `kickq enqueue --file`: format detection, the CSV field splitter, header recognition, and
//! turning a line into a validated job with the same `job::validate` the worker uses.

use crate::job::{self, InvalidJob, KickRequest, Limits};
use std::fmt;
use std::str::FromStr;

/// The two input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One job message (the README's JSON) per line.
    Jsonl,
    /// `room_id,user_id[,reason]` per line, with or without a header line.
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
pub fn detect(first_line: &str) -> Format {
    if strip_bom(first_line).trim_start().starts_with('{') {
        Format::Jsonl
    } else {
        Format::Csv
    }
}

fn strip_bom(s: &str) -> &str {
    s.strip_prefix('\u{feff}').unwrap_or(s)
}

/// Why a line is not a job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// The bytes are not UTF-8.
    #[error("not UTF-8")]
    NotUtf8,
    /// A CSV line that cannot be split into fields.
    #[error("bad CSV: {0}")]
    Csv(String),
    /// A CSV line with the wrong number of fields.
    #[error("expected room_id,user_id[,reason], got {0} field(s)")]
    FieldCount(usize),
    /// The job breaks a rule of the job message.
    #[error("{0}")]
    Invalid(#[from] InvalidJob),
}

/// What one line holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// Empty or whitespace only: skipped.
    Blank,
    /// The CSV header line.
    Header,
    /// A validated job.
    Job(KickRequest),
}

/// Parses lines in input order. It is stateful only in one way: the first
/// non-blank CSV line may be a header, later ones never are.
#[derive(Debug, Clone)]
pub struct LineParser {
    format: Format,
    limits: Limits,
    seen_content: bool,
}

impl LineParser {
    /// A parser for `format`, validating with `limits`.
    pub fn new(format: Format, limits: Limits) -> Self {
        Self {
            format,
            limits,
            seen_content: false,
        }
    }

    /// Parses one line, without its line terminator (a trailing `\r` is dropped).
    pub fn parse(&mut self, raw: &[u8]) -> Result<Line, LineError> {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = std::str::from_utf8(raw).map_err(|_| LineError::NotUtf8)?;
        let first = !self.seen_content;
        let text = if first { strip_bom(text) } else { text };
        if text.trim().is_empty() {
            return Ok(Line::Blank);
        }
        self.seen_content = true;
        match self.format {
            Format::Jsonl => Ok(Line::Job(job::parse(text.as_bytes(), &self.limits)?)),
            Format::Csv => {
                let fields = split_csv(text)?;
                if first && is_header(&fields) {
                    return Ok(Line::Header);
                }
                let (room, user, reason) = match fields.as_slice() {
                    [room, user] => (room, user, None),
                    [room, user, reason] => (room, user, Some(reason.clone())),
                    other => return Err(LineError::FieldCount(other.len())),
                };
                let mut job = KickRequest::new(room.clone(), [user.clone()]);
                job.reason = reason;
                Ok(Line::Job(job::validate(job, &self.limits)?))
            }
        }
    }
}

/// A header names its columns; any first line whose fields are all column
/// names is one, so `room,user` is never kicked as user "user" of room "room".
fn is_header(fields: &[String]) -> bool {
    let is = |field: &String, names: &[&str]| {
        let f = field.trim().to_ascii_lowercase();
        names.contains(&f.as_str())
    };
    const ROOM: &[&str] = &["room_id", "room", "roomid"];
    const USER: &[&str] = &["user_id", "user", "userid"];
    const REASON: &[&str] = &["reason", "custom_reason", "customreason"];
    match fields {
        [r, u] => is(r, ROOM) && is(u, USER),
        [r, u, why] => is(r, ROOM) && is(u, USER) && is(why, REASON),
        _ => false,
    }
}

/// Splits one CSV line (RFC 4180 quoting: `"a,b"`, `""` for a quote). Spaces
/// around an unquoted field are dropped (spreadsheets add them after commas);
/// a quoted field is kept exactly. A record is one line: quoted line breaks are
/// not supported, so that line numbers stay line numbers.
pub fn split_csv(line: &str) -> Result<Vec<String>, LineError> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(' ' | '\t')) {
            chars.next();
        }
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(LineError::Csv("a quoted field is not closed".into())),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            while matches!(chars.peek(), Some(' ' | '\t')) {
                chars.next();
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(c) => return Err(LineError::Csv(format!("{c:?} after a closing quote"))),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field.trim_end_matches([' ', '\t']).to_owned());
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => return Err(LineError::Csv("a quote inside an unquoted field".into())),
                    Some(c) => field.push(c),
                }
            }
            fields.push(field.trim_end_matches([' ', '\t']).to_owned());
        }
    }
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

    #[test]
    fn splits_csv_by_table() {
        let ok: &[(&str, &[&str])] = &[
            ("a,b", &["a", "b"]),
            ("a, b ,c", &["a", "b", "c"]),
            (r#"a,"b, c""#, &["a", "b, c"]),
            (r#""a ""x"" b",c"#, &["a \"x\" b", "c"]),
            (r#" " a " , b"#, &[" a ", "b"]),
            ("a,,c", &["a", "", "c"]),
            ("a,b,", &["a", "b", ""]),
            (r#"a,"""#, &["a", ""]),
            ("é,漢", &["é", "漢"]),
        ];
        for (line, want) in ok {
            assert_eq!(split_csv(line).unwrap(), *want, "{line:?}");
        }
        for bad in [r#"a,"b"#, r#"a,"b"c"#, r#"a,b"c"#] {
            assert!(matches!(split_csv(bad), Err(LineError::Csv(_))), "{bad:?}");
        }
    }

    fn parse_all(format: Format, lines: &[&str]) -> Vec<Result<Line, String>> {
        let mut p = LineParser::new(format, Limits::default());
        lines
            .iter()
            .map(|l| p.parse(l.as_bytes()).map_err(|e| e.to_string()))
            .collect()
    }

    fn job(room: &str, user: &str, reason: Option<&str>) -> Line {
        let mut j = KickRequest::new(room, [user]);
        j.reason = reason.map(String::from);
        Line::Job(j)
    }

    #[test]
    fn csv_lines_with_and_without_header() {
        assert_eq!(
            parse_all(
                Format::Csv,
                &[
                    "",
                    "Room_ID, user_id ,reason",
                    "r1,u1,spam",
                    "r1,u2\r",
                    "room_id,user_id"
                ]
            ),
            vec![
                Ok(Line::Blank),
                Ok(Line::Header),
                Ok(job("r1", "u1", Some("spam"))),
                Ok(job("r1", "u2", None)),
                Ok(job("room_id", "user_id", None)),
            ],
            "only the first non-blank line can be a header"
        );
        assert_eq!(
            parse_all(Format::Csv, &["\u{feff}r1,u1", "r2,u2,"]),
            vec![Ok(job("r1", "u1", None)), Ok(job("r2", "u2", None))],
            "BOM dropped; an empty reason is no reason"
        );
        assert_eq!(parse_all(Format::Csv, &["room,user"]), vec![Ok(Line::Header)]);
    }

    #[test]
    fn bad_lines_say_why() {
        let got = parse_all(
            Format::Csv,
            &[
                "r1",
                "r1,u1,why,extra",
                "r1,",
                "r1,\"u",
                &format!("r1,{}", "u".repeat(65)),
                "r\u{7},u",
            ],
        );
        let want = [
            "expected room_id,user_id[,reason], got 1 field(s)",
            "got 4 field(s)",
            "user_ids[0] must be 1 to 64 bytes, got 0",
            "bad CSV: a quoted field is not closed",
            "user_ids[0] must be 1 to 64 bytes, got 65",
            "room_id holds a control character",
        ];
        for (g, w) in got.iter().zip(want) {
            let e = g.as_ref().expect_err(w);
            assert!(e.contains(w), "{e} should contain {w}");
        }
        let mut p = LineParser::new(Format::Csv, Limits::default());
        assert_eq!(p.parse(b"r,\xff"), Err(LineError::NotUtf8));
    }

    #[test]
    fn jsonl_lines_are_job_messages() {
        let got = parse_all(
            Format::Jsonl,
            &[
                r#"{"room_id":"r","user_ids":["a","b","a"],"reason":"x","job_id":"j"}"#,
                "  ",
                r#"{"room_id":"r"}"#,
                "r,u",
            ],
        );
        let mut j = KickRequest::new("r", ["a", "b"]).with_reason("x").with_job_id("j");
        j.app_id = None;
        assert_eq!(got[0], Ok(Line::Job(j)));
        assert_eq!(got[1], Ok(Line::Blank));
        assert!(got[2].as_ref().unwrap_err().contains("missing field `user_ids`"));
        assert!(got[3].as_ref().unwrap_err().starts_with("not a job message"));
    }

    #[test]
    fn formats_parse_from_flags() {
        assert_eq!("JSONL".parse::<Format>(), Ok(Format::Jsonl));
        assert_eq!("csv".parse::<Format>(), Ok(Format::Csv));
        assert!("xml".parse::<Format>().is_err());
    }
}
