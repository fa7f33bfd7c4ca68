//! From the whole input to the messages: detect the format, read every record (CSV through the `csv` crate:
//! quoting, BOM, CRLF; JSON Lines by line), map a CSV header's columns, validate, collect the invalid records
//! with their line numbers, group the rest, and derive the default job-id prefix and the input hash.
//!
//! The whole input is read before anything is published: that is what lets
//! one bad line stop the run with nothing published.

use super::group::{Grouper, Message};
use super::parse::{
    csv_job, detect, header_decision, jsonl_job, Columns, Format, HeaderError, HeaderMode, LineError, BOM,
};
use crate::job::{KickRequest, Limits, MAX_JOB_ID_BYTES};
use md5::{Digest, Md5};

/// Longest job-id prefix: leaves room for `:{line}.{part}` within the 128-byte job id.
pub const MAX_PREFIX_BYTES: usize = MAX_JOB_ID_BYTES - 28;

/// How to read the input.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// The format, or `None` to detect it from the first non-blank line.
    pub format: Option<Format>,
    /// Whether a CSV input opens with a header.
    pub header: HeaderMode,
    /// Most users per message.
    pub group_size: usize,
    /// The worker's validation limits.
    pub limits: Limits,
}

impl LoadOptions {
    /// Detected format and header, `group_size` users a message, the default limits.
    pub fn new(group_size: usize) -> Self {
        Self {
            format: None,
            header: HeaderMode::Detect,
            group_size,
            limits: Limits::default(),
        }
    }
}

/// The input, judged and grouped.
#[derive(Debug)]
pub struct Loaded {
    /// The format used (given or detected).
    pub format: Format,
    /// Physical lines in the input (the last line number).
    pub lines: u64,
    /// Header lines (0 or 1).
    pub header: u64,
    /// Blank lines.
    pub blank: u64,
    /// Records that held a valid job.
    pub valid: u64,
    /// Invalid records, ascending, with why, by the line they start on.
    pub invalid: Vec<(u64, LineError)>,
    /// Messages in publish order.
    pub messages: Vec<Message>,
    /// User ids over all messages.
    pub users: u64,
}

/// Why an input is refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The header line names columns that cannot be used.
    #[error("line {line}: header: {source}")]
    Header {
        /// Its line.
        line: u64,
        /// What is wrong with it.
        source: HeaderError,
    },
}

/// Judges every record of `input`, grouping valid jobs `group_size` users to
/// a message. Lines are numbered from 1; a final line without a newline
/// counts; a CSV record with a quoted line break counts at the line it starts on.
pub fn load(input: &[u8], opts: LoadOptions) -> Result<Loaded, LoadError> {
    let mut lines = input.split(|b| *b == b'\n').count() as u64;
    if input.is_empty() || input.ends_with(b"\n") {
        // `split` yields an empty piece after the last newline; it is not a line.
        lines -= 1;
    }
    let format = opts.format.unwrap_or_else(|| {
        input
            .split(|b| *b == b'\n')
            .filter_map(|l| std::str::from_utf8(l).ok())
            .find(|l| !l.trim().is_empty())
            .map_or(Format::Csv, detect)
    });
    let mut out = Loaded {
        format,
        lines,
        header: 0,
        blank: 0,
        valid: 0,
        invalid: Vec::new(),
        messages: Vec::new(),
        users: 0,
    };
    let mut grouper = Grouper::new(opts.group_size);
    let mut take = |out: &mut Loaded, line: u64, job: Result<Option<KickRequest>, LineError>| match job {
        Ok(Some(job)) => {
            out.valid += 1;
            out.users += job.user_ids.len() as u64;
            grouper.push(line, job);
        }
        Ok(None) => out.blank += 1,
        Err(e) => out.invalid.push((line, e)),
    };
    match format {
        Format::Jsonl => {
            let mut first = true;
            for (i, raw) in input.split(|b| *b == b'\n').take(lines as usize).enumerate() {
                take(&mut out, i as u64 + 1, jsonl_job(raw, first, &opts.limits));
                first = false;
            }
        }
        Format::Csv => {
            let body = input.strip_prefix(BOM.as_bytes()).unwrap_or(input);
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .trim(csv::Trim::All)
                .from_reader(body);
            let mut record = csv::ByteRecord::new();
            let mut columns: Option<Columns> = None;
            let mut first = true;
            // The line a record starts on, counted here: the csv crate's own count lags at CRLF and blank lines.
            let (mut cursor, mut newlines) = (0usize, 0u64);
            // Reading from a slice with `flexible` fails on nothing; an error ends the input where it is.
            while reader.read_byte_record(&mut record).unwrap_or(false) {
                let at = record.position().map_or(cursor, |p| p.byte() as usize).max(cursor);
                // The position may point at the terminator before the record, or at skipped empty lines.
                let start = at + body[at..].iter().take_while(|b| matches!(b, b'\r' | b'\n')).count();
                newlines += body[cursor..start].iter().filter(|b| **b == b'\n').count() as u64;
                cursor = start;
                let line = newlines + 1;
                let fields: Option<Vec<&str>> = record.iter().map(|f| std::str::from_utf8(f).ok()).collect();
                let Some(fields) = fields else {
                    if first && opts.header == HeaderMode::Present {
                        return Err(LoadError::Header {
                            line,
                            source: HeaderError::NotUtf8,
                        });
                    }
                    first = false;
                    take(&mut out, line, Err(LineError::NotUtf8));
                    continue;
                };
                if fields.iter().all(|f| f.is_empty()) {
                    // Whitespace only: the csv crate skips empty lines itself, so they are counted below.
                    continue;
                }
                if std::mem::take(&mut first) {
                    columns =
                        header_decision(&fields, opts.header).map_err(|source| LoadError::Header { line, source })?;
                    if columns.is_some() {
                        out.header = 1;
                        continue;
                    }
                }
                take(
                    &mut out,
                    line,
                    csv_job(&fields, columns.as_ref(), &opts.limits).map(Some),
                );
            }
            // Lines holding no record: blank ones and the continuations of quoted line breaks.
            out.blank = lines.saturating_sub(out.header + out.valid + out.invalid.len() as u64);
        }
    }
    out.messages = grouper.finish();
    Ok(out)
}

/// The hash a checkpoint keeps of its input: the full hex MD5 (the one the
/// default job-id prefix shortens), so that a changed file is refused.
pub fn input_hash(input: &[u8]) -> String {
    hex::encode(Md5::digest(input))
}

/// The default job-id prefix: the input's name (file name, or `stdin`) and the
/// first 8 hex digits of its MD5, so a rerun on the same input gets the same
/// ids while another file of the same name does not.
pub fn default_prefix(name: &str, input: &[u8]) -> String {
    let digest = hex::encode(Md5::digest(input));
    let clean: String = name
        .chars()
        .map(|c| if c.is_control() || c == ':' { '_' } else { c })
        .collect();
    let mut end = clean.len().min(MAX_PREFIX_BYTES - 9);
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}-{}", &clean[..end], &digest[..8])
}

/// Checks a `--job-id-prefix`: 1 to [`MAX_PREFIX_BYTES`] bytes, no control characters.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() || prefix.len() > MAX_PREFIX_BYTES {
        return Err(format!("must be 1 to {MAX_PREFIX_BYTES} bytes"));
    }
    if prefix.chars().any(char::is_control) {
        return Err("holds a control character".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(group_size: usize) -> LoadOptions {
        LoadOptions::new(group_size)
    }

    #[test]
    fn loads_csv_and_counts() {
        let input = b"room_id,user_id,reason\nr1,u1\n\nr2,u2,spam\nr1,u3\nbad\nr1,\n  \n";
        let l = load(input, opts(100)).unwrap();
        assert_eq!(l.format, Format::Csv);
        assert_eq!((l.lines, l.header, l.blank, l.valid, l.users), (8, 1, 2, 3, 3));
        let bad: Vec<(u64, String)> = l.invalid.iter().map(|(n, e)| (*n, e.to_string())).collect();
        assert_eq!(
            bad,
            vec![
                (6, "column user_id is empty".into()),
                (7, "column user_id is empty".into())
            ]
        );
        let shape: Vec<(u64, Vec<u64>)> = l.messages.iter().map(|m| (m.first_line, m.lines.clone())).collect();
        assert_eq!(shape, vec![(2, vec![2, 5]), (4, vec![4])]);
    }

    #[test]
    fn a_header_maps_columns_by_name_and_quoting_is_csv() {
        let input = "\u{feff}user_id,room_id,reason\r\nu1,r1,\"a, b\"\r\nu2,r1,\"two\r\nlines\"\r\nu3,r2\r\n";
        let l = load(input.as_bytes(), opts(100)).unwrap();
        assert_eq!((l.lines, l.header, l.valid, l.invalid.len()), (5, 1, 3, 0));
        let got: Vec<(u64, &str, &str, Option<&str>)> = l
            .messages
            .iter()
            .map(|m| {
                (
                    m.first_line,
                    m.job.room_id.as_str(),
                    m.job.user_ids[0].as_str(),
                    m.job.reason.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (2, "r1", "u1", Some("a, b")),
                (3, "r1", "u2", Some("two\r\nlines")),
                (5, "r2", "u3", None)
            ]
        );
    }

    #[test]
    fn header_flags_and_bad_headers() {
        let input = b"room_id,user_id\nr1,u1\n";
        let mut no = opts(100);
        no.header = HeaderMode::Absent;
        let l = load(input, no).unwrap();
        assert_eq!((l.header, l.valid), (0, 2), "--no-header: the first line is data");
        assert_eq!(l.messages.len(), 2);
        let mut yes = opts(100);
        yes.header = HeaderMode::Present;
        let err = load(b"r1,u1\nr1,u2\n", yes).unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 1: header: column \"r1\" is unknown (known: room_id, user_id, reason)"
        );
        let err = load(b"\nroom_id,reason\nr1,x\n", opts(100)).unwrap_err();
        assert_eq!(err.to_string(), "line 2: header: column user_id is missing");
    }

    #[test]
    fn detects_jsonl_and_honours_a_forced_format() {
        let input = b"\n{\"room_id\":\"r\",\"user_ids\":[\"a\",\"b\"]}\r\n{\"room_id\":\"r\",\"user_ids\":[\"c\"]}";
        let l = load(input, opts(100)).unwrap();
        assert_eq!(
            (l.format, l.lines, l.valid, l.users, l.blank),
            (Format::Jsonl, 3, 2, 3, 1)
        );
        assert_eq!(l.messages.len(), 1);
        assert_eq!(l.messages[0].lines, vec![2, 3]);
        let mut csv = opts(100);
        csv.format = Some(Format::Csv);
        assert_eq!(load(input, csv).unwrap().invalid.len(), 2);
    }

    #[test]
    fn empty_input_has_no_lines() {
        for input in [&b""[..], b"\n\n"] {
            let l = load(input, opts(100)).unwrap();
            assert_eq!((l.valid, l.messages.len()), (0, 0));
        }
        assert_eq!(load(b"", opts(1)).unwrap().lines, 0);
        let two = load(b"\n\n", opts(1)).unwrap();
        assert_eq!((two.lines, two.blank), (2, 2));
    }

    #[test]
    fn the_input_hash_is_the_full_md5() {
        assert_eq!(input_hash(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert!(default_prefix("f", b"").ends_with(&input_hash(b"")[..8]));
    }

    #[test]
    fn prefixes_name_the_input_and_its_content() {
        let a = default_prefix("bans.csv", b"r,u\n");
        assert!(a.starts_with("bans.csv-") && a.len() == "bans.csv-".len() + 8, "{a}");
        assert_eq!(a, default_prefix("bans.csv", b"r,u\n"), "stable");
        assert_ne!(a, default_prefix("bans.csv", b"r,v\n"), "content counts");
        let long = default_prefix(&"é".repeat(200), b"");
        assert!(long.len() <= MAX_PREFIX_BYTES && check_prefix(&long).is_ok(), "{long}");
        assert_eq!(default_prefix("a:b\n", b"").split('-').next(), Some("a_b_"));
        assert!(check_prefix("").is_err());
        assert!(check_prefix("a\tb").is_err());
        assert!(check_prefix(&"x".repeat(MAX_PREFIX_BYTES + 1)).is_err());
    }
}
