//! From an input stream to valid jobs, with bounded memory: detect the format, read every record (CSV through the
//! `csv` crate: quoting, BOM, CRLF; JSON Lines by line), map a CSV header's columns, validate, count, hash, and
//! keep the first invalid records with their line numbers; the default job-id prefix and the input hash.
//!
//! A run reads its input twice: once to judge every line (so one bad line
//! stops the run with nothing published), once to group and publish. Neither
//! pass keeps more than one record, a read buffer and the first
//! [`MAX_KEPT_INVALID`] invalid lines.

#[cfg(test)]
use super::group::Message;
use super::parse::{
    csv_job, detect, header_decision, jsonl_job, Columns, Format, HeaderError, HeaderMode, LineError, BOM,
};
use crate::job::{KickRequest, Limits, MAX_JOB_ID_BYTES};
use chrono::{DateTime, Utc};
use md5::{Digest, Md5};
use std::io::{BufRead, BufReader, Read};

/// Longest job-id prefix: leaves room for `:{line}.{part}` within the 128-byte job id.
pub(crate) const MAX_PREFIX_BYTES: usize = MAX_JOB_ID_BYTES - 28;
/// Invalid lines kept with their reasons (the rest are only counted): the
/// most the report prints (100 with `--skip-invalid`).
pub(crate) const MAX_KEPT_INVALID: usize = 100;
/// Bytes of a CSV read window kept before the part already judged is dropped.
const WINDOW_KEEP: usize = 64 << 10;

/// How to read the input.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoadOptions {
    /// Whether a CSV input opens with a header.
    pub header: HeaderMode,
    /// Most users per message.
    pub group_size: usize,
    /// The worker's validation limits.
    pub limits: Limits,
    /// A deadline that replaces every record's own `not_after`
    /// (`--not-after`, `--ttl`); `None` keeps what each record says.
    pub not_after: Option<DateTime<Utc>>,
}

#[cfg(test)]
impl LoadOptions {
    /// Detected header, `group_size` users a message, the default limits, the records' own deadlines.
    pub(crate) fn new(group_size: usize) -> Self {
        Self {
            header: HeaderMode::Detect,
            group_size,
            limits: Limits::default(),
            not_after: None,
        }
    }
}

/// The input, judged: its counts, its hash, its first invalid lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scanned {
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
    /// Invalid records.
    pub invalid_count: u64,
    /// The first [`MAX_KEPT_INVALID`] invalid records, ascending, with why, by the line they start on.
    pub invalid: Vec<(u64, LineError)>,
    /// User ids over all valid records.
    pub users: u64,
    /// Hex MD5 of the whole input (see [`input_hash`]).
    pub md5: String,
}

/// The input, judged and grouped, every message in memory: what [`load`] returns.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct Loaded {
    /// The judgement.
    pub scanned: Scanned,
    /// Messages in publish order.
    pub messages: Vec<Message>,
}

/// Why an input is refused as a whole.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    /// The header line names columns that cannot be used.
    #[error("line {line}: header: {source}")]
    Header {
        /// Its line.
        line: u64,
        /// What is wrong with it.
        source: HeaderError,
    },
    /// Reading failed.
    #[error("reading the input: {0}")]
    Io(#[from] std::io::Error),
}

/// Guesses the format of a stream from its first non-blank UTF-8 line (see [`detect`]); CSV if none.
pub(crate) fn detect_stream<R: BufRead>(mut input: R) -> std::io::Result<Format> {
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(Format::Csv);
        }
        if let Ok(text) = std::str::from_utf8(&line) {
            if !text.trim().is_empty() {
                return Ok(detect(text));
            }
        }
    }
}

/// A reader that hashes and counts lines of what passes through it, drops a
/// leading BOM if asked, and keeps the bytes from `base` on (the CSV loop
/// finds where records start in them).
struct Tap<R> {
    inner: R,
    md5: Md5,
    newlines: u64,
    read: u64,
    last: Option<u8>,
    strip_bom: bool,
    keep: bool,
    window: Vec<u8>,
    base: usize,
    /// Bytes read ahead while looking for a BOM, not yet handed out.
    pending: Vec<u8>,
}

impl<R: Read> Tap<R> {
    fn new(inner: R, strip_bom: bool, keep: bool) -> Self {
        Self {
            inner,
            md5: Md5::new(),
            newlines: 0,
            read: 0,
            last: None,
            strip_bom,
            keep,
            window: Vec::new(),
            base: 0,
            pending: Vec::new(),
        }
    }

    /// Lines seen: a final line without a newline counts.
    fn lines(&self) -> u64 {
        self.newlines + u64::from(self.last.is_some_and(|b| b != b'\n'))
    }

    /// The kept bytes from `offset` (post-BOM) on.
    fn from(&self, offset: usize) -> &[u8] {
        &self.window[offset.saturating_sub(self.base).min(self.window.len())..]
    }

    /// Drops the kept bytes before `offset` once enough have piled up.
    fn forget_before(&mut self, offset: usize) {
        let n = offset.saturating_sub(self.base).min(self.window.len());
        if n >= WINDOW_KEEP {
            self.window.drain(..n);
            self.base += n;
        }
    }
}

impl<R: Read> Tap<R> {
    /// Reads from the inner reader, hashing and counting.
    fn pull(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let got = &buf[..n];
        self.md5.update(got);
        self.newlines += got.iter().filter(|b| **b == b'\n').count() as u64;
        if let Some(b) = got.last() {
            self.last = Some(*b);
        }
        self.read += n as u64;
        Ok(n)
    }
}

impl<R: Read> Read for Tap<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.strip_bom {
            // The first bytes, gathered over as many reads as it takes, then dropped if they are a BOM.
            self.strip_bom = false;
            let mut head = [0u8; 3];
            let mut have = 0;
            while have < head.len() {
                let n = self.pull(&mut head[have..])?;
                if n == 0 {
                    break;
                }
                have += n;
            }
            if head[..have] != *BOM.as_bytes() {
                self.pending.extend_from_slice(&head[..have]);
            }
        }
        let n = if self.pending.is_empty() {
            self.pull(buf)?
        } else {
            let n = self.pending.len().min(buf.len());
            buf[..n].copy_from_slice(&self.pending[..n]);
            self.pending.drain(..n);
            n
        };
        if self.keep {
            self.window.extend_from_slice(&buf[..n]);
        }
        Ok(n)
    }
}

/// Judges every record of `input` in `format`, calling `each(line, job)` for
/// each valid one in line order; `each` returning `false` stops the reading
/// (the counts then cover only what was read). Lines are numbered from 1; a
/// final line without a newline counts; a CSV record with a quoted line break
/// counts at the line it starts on.
pub(crate) fn scan<R: Read>(
    input: R,
    format: Format,
    opts: &LoadOptions,
    mut each: impl FnMut(u64, KickRequest) -> bool,
) -> Result<Scanned, LoadError> {
    let mut out = Scanned {
        format,
        lines: 0,
        header: 0,
        blank: 0,
        valid: 0,
        invalid_count: 0,
        invalid: Vec::new(),
        users: 0,
        md5: String::new(),
    };
    let mut take = |out: &mut Scanned, line: u64, job: Result<Option<KickRequest>, LineError>| match job {
        Ok(Some(mut job)) => {
            out.valid += 1;
            out.users += job.user_ids.len() as u64;
            if opts.not_after.is_some() {
                job.not_after = opts.not_after;
            }
            each(line, job)
        }
        Ok(None) => {
            out.blank += 1;
            true
        }
        Err(e) => {
            out.invalid_count += 1;
            if out.invalid.len() < MAX_KEPT_INVALID {
                out.invalid.push((line, e));
            }
            true
        }
    };
    let tap = match format {
        Format::Jsonl => {
            let mut reader = BufReader::with_capacity(64 << 10, Tap::new(input, false, false));
            let (mut raw, mut line) = (Vec::new(), 0u64);
            loop {
                raw.clear();
                if reader.read_until(b'\n', &mut raw)? == 0 {
                    break;
                }
                line += 1;
                let piece = raw.strip_suffix(b"\n").unwrap_or(&raw);
                if !take(&mut out, line, jsonl_job(piece, line == 1, &opts.limits)) {
                    break;
                }
            }
            reader.into_inner()
        }
        Format::Csv => {
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .trim(csv::Trim::All)
                .buffer_capacity(64 << 10)
                .from_reader(Tap::new(input, true, true));
            let mut record = csv::ByteRecord::new();
            let mut columns: Option<Columns> = None;
            let mut first = true;
            // The line a record starts on, counted here: the csv crate's own count lags at CRLF and blank lines.
            let (mut cursor, mut newlines) = (0usize, 0u64);
            loop {
                let more = match reader.read_byte_record(&mut record) {
                    Ok(more) => more,
                    Err(e) => match e.into_kind() {
                        csv::ErrorKind::Io(e) => return Err(e.into()),
                        // With `flexible`, nothing else fails; such an error ends the input where it is.
                        _ => false,
                    },
                };
                if !more {
                    break;
                }
                let tap = reader.get_ref();
                let at = record.position().map_or(cursor, |p| p.byte() as usize).max(cursor);
                // The position may point at the terminator before the record, or at skipped empty lines.
                let start = at + tap.from(at).iter().take_while(|b| matches!(b, b'\r' | b'\n')).count();
                let between = &tap.from(cursor)[..start - cursor];
                newlines += between.iter().filter(|b| **b == b'\n').count() as u64;
                cursor = start;
                reader.get_mut().forget_before(cursor);
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
                if !take(
                    &mut out,
                    line,
                    csv_job(&fields, columns.as_ref(), &opts.limits).map(Some),
                ) {
                    break;
                }
            }
            reader.into_inner()
        }
    };
    let mut tap = tap;
    // Whatever the parser left unread still counts and hashes (it reads to the end unless stopped).
    std::io::copy(&mut tap, &mut std::io::sink())?;
    out.lines = tap.lines();
    out.md5 = hex::encode(tap.md5.finalize());
    if format == Format::Csv {
        // Lines holding no record: blank ones and the continuations of quoted line breaks.
        out.blank = out.lines.saturating_sub(out.header + out.valid + out.invalid_count);
    }
    Ok(out)
}

/// Judges and groups a whole input held in memory, the format detected: the
/// reference the streaming readings are tested against.
#[cfg(test)]
pub(crate) fn load(input: &[u8], opts: LoadOptions) -> Result<Loaded, LoadError> {
    load_as(input, None, opts)
}

/// [`load`] in `format`, or detected when `None`.
#[cfg(test)]
pub(crate) fn load_as(input: &[u8], format: Option<Format>, opts: LoadOptions) -> Result<Loaded, LoadError> {
    let format = match format {
        Some(f) => f,
        None => detect_stream(input)?,
    };
    let mut grouper = super::group::Grouper::new(opts.group_size);
    let scanned = scan(input, format, &opts, |line, job| {
        grouper.push(line, job);
        true
    })?;
    Ok(Loaded {
        scanned,
        messages: grouper.finish(),
    })
}

/// The hash a checkpoint keeps of its input: the full hex MD5 (the one the
/// default job-id prefix shortens), so that a changed file is refused.
#[cfg(test)]
pub(crate) fn input_hash(input: &[u8]) -> String {
    hex::encode(Md5::digest(input))
}

/// The default job-id prefix of a run that is not a resume: the input's
/// name (file name, or `stdin`), the first 8 hex digits of its MD5 and the
/// run's tag ([`run_tag`]). A resume takes its checkpoint's prefix instead,
/// so its ids are the interrupted run's; a new run of the same input gets
/// new ids, so a ledger-backed worker kicks again.
#[cfg(test)]
pub(crate) fn default_prefix(name: &str, input: &[u8], run: &str) -> String {
    prefix_of(name, &input_hash(input), run)
}

/// A run's tag: when it started, to the second, and a random 16-bit nonce,
/// so that two runs of one input in the same second still differ
/// (`20261207T215501Z-9f3e`).
pub(crate) fn run_tag(started: DateTime<Utc>, nonce: u16) -> String {
    format!("{}-{nonce:04x}", started.format("%Y%m%dT%H%M%SZ"))
}

/// [`default_prefix`] from the input's hex MD5 and the run's tag; the name
/// is cut (on a character boundary) so that the prefix fits
/// [`MAX_PREFIX_BYTES`].
pub(crate) fn prefix_of(name: &str, digest: &str, run: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| if c.is_control() || c == ':' { '_' } else { c })
        .collect();
    let mut end = clean.len().min(MAX_PREFIX_BYTES - 10 - run.len());
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}-{}-{run}", &clean[..end], &digest[..8])
}

/// Checks a `--job-id-prefix`: 1 to [`MAX_PREFIX_BYTES`] bytes, no control characters.
pub(crate) fn check_prefix(prefix: &str) -> Result<(), String> {
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
    fn a_given_deadline_replaces_the_records_own_and_none_keeps_them() {
        let t = |s: &str| crate::job::parse_not_after(s).unwrap();
        let input = concat!(
            r#"{"room_id":"r","user_ids":["a"],"not_after":"2026-01-01T00:00:00Z"}"#,
            "\n",
            r#"{"room_id":"r","user_ids":["b"]}"#,
            "\n",
        )
        .as_bytes();
        // (given deadline, the deadlines of the records as scanned)
        let cases = [
            (None, vec![Some(t("2026-01-01T00:00:00Z")), None]),
            (
                Some(t("2026-12-01T12:00:00Z")),
                vec![Some(t("2026-12-01T12:00:00Z")), Some(t("2026-12-01T12:00:00Z"))],
            ),
        ];
        for (given, want) in cases {
            let opts = LoadOptions {
                not_after: given,
                ..opts(100)
            };
            let mut got = Vec::new();
            scan(input, Format::Jsonl, &opts, |_, job| {
                got.push(job.not_after);
                true
            })
            .unwrap();
            assert_eq!(got, want, "{given:?}");
        }
    }

    #[test]
    fn loads_csv_and_counts() {
        let input = b"room_id,user_id,reason\nr1,u1\n\nr2,u2,spam\nr1,u3\nbad\nr1,\n  \n";
        let l = load(input, opts(100)).unwrap();
        assert_eq!(l.scanned.format, Format::Csv);
        assert_eq!(
            (
                l.scanned.lines,
                l.scanned.header,
                l.scanned.blank,
                l.scanned.valid,
                l.scanned.users
            ),
            (8, 1, 2, 3, 3)
        );
        let bad: Vec<(u64, String)> = l.scanned.invalid.iter().map(|(n, e)| (*n, e.to_string())).collect();
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
        assert_eq!(
            (
                l.scanned.lines,
                l.scanned.header,
                l.scanned.valid,
                l.scanned.invalid.len()
            ),
            (5, 1, 3, 0)
        );
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
        assert_eq!(
            (l.scanned.header, l.scanned.valid),
            (0, 2),
            "--no-header: the first line is data"
        );
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
            (
                l.scanned.format,
                l.scanned.lines,
                l.scanned.valid,
                l.scanned.users,
                l.scanned.blank
            ),
            (Format::Jsonl, 3, 2, 3, 1)
        );
        assert_eq!(l.messages.len(), 1);
        assert_eq!(l.messages[0].lines, vec![2, 3]);
        assert_eq!(
            load_as(input, Some(Format::Csv), opts(100))
                .unwrap()
                .scanned
                .invalid
                .len(),
            2
        );
    }

    #[test]
    fn empty_input_has_no_lines() {
        for input in [&b""[..], b"\n\n"] {
            let l = load(input, opts(100)).unwrap();
            assert_eq!((l.scanned.valid, l.messages.len()), (0, 0));
        }
        assert_eq!(load(b"", opts(1)).unwrap().scanned.lines, 0);
        let two = load(b"\n\n", opts(1)).unwrap();
        assert_eq!((two.scanned.lines, two.scanned.blank), (2, 2));
    }

    /// A reader that hands out a few bytes at a time, as a pipe may.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn streams_a_long_input_in_small_reads_with_exact_line_numbers() {
        // Past the kept window many times over: CRLF, blank lines, a quoted line break, bad lines.
        let mut input = "\u{feff}room_id,user_id,reason\r\n".to_string();
        let mut bad = Vec::new();
        let mut line = 1u64;
        for i in 0..20_000u64 {
            line += 1;
            match i % 1000 {
                7 => {
                    input.push_str("r1,\r\n");
                    bad.push(line);
                }
                8 => {
                    input.push_str("\r\n");
                }
                9 => {
                    input.push_str(&format!("r2,u{i},\"two\nlines\"\n"));
                    line += 1;
                }
                _ => input.push_str(&format!("r{},u{i}\r\n", i % 3)),
            }
        }
        let bytes = input.as_bytes();
        for chunk in [1, 7, 4096] {
            let mut valid = 0u64;
            let got = scan(Trickle(bytes, chunk), Format::Csv, &opts(100), |_, _| {
                valid += 1;
                true
            })
            .unwrap();
            assert_eq!(got.lines, line, "chunk {chunk}");
            assert_eq!(got.md5, input_hash(bytes));
            assert_eq!((got.header, got.valid, got.invalid_count), (1, valid, 20));
            let lines: Vec<u64> = got.invalid.iter().map(|(n, _)| *n).collect();
            assert_eq!(lines, bad, "chunk {chunk}");
        }
        let whole = load(bytes, opts(100)).unwrap().scanned;
        assert_eq!(whole.lines, line);
        assert_eq!(whole.blank, 20 + 20, "blank lines and quoted continuations");
    }

    #[test]
    fn keeps_only_the_first_invalid_lines_and_counts_the_rest() {
        let input = "r,\n".repeat(MAX_KEPT_INVALID + 5);
        let l = load(input.as_bytes(), opts(100)).unwrap().scanned;
        assert_eq!(
            (l.invalid.len(), l.invalid_count),
            (MAX_KEPT_INVALID, MAX_KEPT_INVALID as u64 + 5)
        );
    }

    #[test]
    fn the_input_hash_is_the_full_md5() {
        assert_eq!(input_hash(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert!(default_prefix("f", b"", "t").contains(&input_hash(b"")[..8]));
    }

    #[test]
    fn prefixes_name_the_input_its_content_and_the_run() {
        let t = DateTime::parse_from_rfc3339("2026-12-07T21:55:01Z")
            .unwrap()
            .with_timezone(&Utc);
        let run = run_tag(t, 0x9f3e);
        assert_eq!(run, "20261207T215501Z-9f3e");
        let a = default_prefix("bans.csv", b"r,u\n", &run);
        assert_eq!(
            a,
            format!("bans.csv-{}-20261207T215501Z-9f3e", &input_hash(b"r,u\n")[..8])
        );
        assert_eq!(a, default_prefix("bans.csv", b"r,u\n", &run), "stable within a run");
        assert_ne!(a, default_prefix("bans.csv", b"r,v\n", &run), "content counts");
        assert_ne!(
            a,
            default_prefix("bans.csv", b"r,u\n", &run_tag(t, 1)),
            "each run has its own"
        );
        let long = default_prefix(&"é".repeat(200), b"", &run);
        assert!(long.len() <= MAX_PREFIX_BYTES && check_prefix(&long).is_ok(), "{long}");
        assert!(long.ends_with(&run), "{long}");
        assert_eq!(default_prefix("a:b\n", b"", &run).split('-').next(), Some("a_b_"));
        assert!(check_prefix("").is_err());
        assert!(check_prefix("a\tb").is_err());
        assert!(check_prefix(&"x".repeat(MAX_PREFIX_BYTES + 1)).is_err());
    }
}
