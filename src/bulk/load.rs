//! From the whole input to the messages: detect the format, parse and validate every line, collect the invalid
//! ones with their line numbers, group the rest, and derive the default job-id prefix from the input itself.
//!
//! The whole input is read before anything is published: that is what lets
//! one bad line stop the run with nothing published.

use super::group::{Grouper, Message};
use super::parse::{detect, Format, Line, LineError, LineParser};
use crate::job::{Limits, MAX_JOB_ID_BYTES};
use md5::{Digest, Md5};

/// Longest job-id prefix: leaves room for `:{line}.{part}` within the 128-byte job id.
pub const MAX_PREFIX_BYTES: usize = MAX_JOB_ID_BYTES - 28;

/// The input, judged and grouped.
#[derive(Debug)]
pub struct Loaded {
    /// The format used (given or detected).
    pub format: Format,
    /// Physical lines in the input (the last line number).
    pub lines: u64,
    /// Lines that held a valid job.
    pub valid: u64,
    /// Invalid lines, ascending, with why.
    pub invalid: Vec<(u64, LineError)>,
    /// Messages in publish order.
    pub messages: Vec<Message>,
    /// User ids over all messages.
    pub users: u64,
}

/// Splits `input` into lines and judges each with `format` (detected from the
/// first non-blank line when `None`), grouping valid jobs `group_size` users
/// to a message. Lines are numbered from 1; a final line without a newline
/// counts.
pub fn load(input: &[u8], format: Option<Format>, group_size: usize, limits: Limits) -> Loaded {
    let mut lines: Vec<&[u8]> = input.split(|b| *b == b'\n').collect();
    if input.is_empty() || input.ends_with(b"\n") {
        // `split` yields an empty piece after the last newline; it is not a line.
        lines.pop();
    }
    let format = format.unwrap_or_else(|| {
        lines
            .iter()
            .filter_map(|l| std::str::from_utf8(l).ok())
            .find(|l| !l.trim().is_empty())
            .map_or(Format::Csv, detect)
    });
    let mut parser = LineParser::new(format, limits);
    let mut grouper = Grouper::new(group_size);
    let (mut valid, mut users, mut invalid) = (0, 0, Vec::new());
    for (i, raw) in lines.iter().enumerate() {
        let n = i as u64 + 1;
        match parser.parse(raw) {
            Ok(Line::Job(job)) => {
                valid += 1;
                users += job.user_ids.len() as u64;
                grouper.push(n, job);
            }
            Ok(Line::Blank | Line::Header) => {}
            Err(e) => invalid.push((n, e)),
        }
    }
    Loaded {
        format,
        lines: lines.len() as u64,
        valid,
        invalid,
        messages: grouper.finish(),
        users,
    }
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

    #[test]
    fn loads_csv_and_counts() {
        let input = b"room_id,user_id,reason\nr1,u1\n\nr2,u2,spam\nr1,u3\nbad\nr1,\n";
        let l = load(input, None, 100, Limits::default());
        assert_eq!(l.format, Format::Csv);
        assert_eq!((l.lines, l.valid, l.users), (7, 3, 3));
        let bad: Vec<u64> = l.invalid.iter().map(|(n, _)| *n).collect();
        assert_eq!(bad, vec![6, 7]);
        let shape: Vec<(u64, Vec<u64>)> = l.messages.iter().map(|m| (m.first_line, m.lines.clone())).collect();
        assert_eq!(shape, vec![(2, vec![2, 5]), (4, vec![4])]);
    }

    #[test]
    fn detects_jsonl_and_honours_a_forced_format() {
        let input = b"\n{\"room_id\":\"r\",\"user_ids\":[\"a\",\"b\"]}\r\n{\"room_id\":\"r\",\"user_ids\":[\"c\"]}";
        let l = load(input, None, 100, Limits::default());
        assert_eq!((l.format, l.lines, l.valid, l.users), (Format::Jsonl, 3, 2, 3));
        assert_eq!(l.messages.len(), 1);
        assert_eq!(l.messages[0].lines, vec![2, 3]);
        let forced = load(input, Some(Format::Csv), 100, Limits::default());
        assert_eq!(forced.invalid.len(), 2);
    }

    #[test]
    fn empty_input_has_no_lines() {
        for input in [&b""[..], b"\n\n"] {
            let l = load(input, None, 100, Limits::default());
            assert_eq!((l.valid, l.messages.len()), (0, 0));
        }
        assert_eq!(load(b"", None, 1, Limits::default()).lines, 0);
        assert_eq!(load(b"\n\n", None, 1, Limits::default()).lines, 2);
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
