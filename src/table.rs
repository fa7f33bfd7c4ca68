//! Plain-text tables for the operator commands (`kickq history`, `kickq dlq list`): aligned columns, and the
//! one way ids are shown safely everywhere (tables, console pages, log lines): control characters and invisible
//! bidirectional or format characters escaped, so a hostile id can neither drive a terminal nor be spoofed.

/// Renders rows (the first is the header) as columns two spaces apart; the
/// last column is not padded, so no line ends in spaces.
pub(crate) fn render<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            if i + 1 < N {
                line.extend(std::iter::repeat_n(' ', w - cell.chars().count()));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Whether `c` is shown as an escape: a control character, or an
/// invisible character that reorders, hides or breaks text (bidirectional
/// embeddings, overrides and isolates, directional marks, zero-width
/// characters, line and paragraph separators, the soft hyphen, the
/// byte-order mark, interlinear annotations, tag characters), with which a
/// displayed id could pass for another (`u\u{202e}1resu` shows as "uresu1").
pub(crate) fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00ad}'
                | '\u{061c}'
                | '\u{180e}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2069}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffb}'
                | '\u{e0000}'..='\u{e007f}'
        )
}

/// `s` with every [`is_unsafe`] character written as an escape (`\n`,
/// `\u{1b}`, `\u{202e}`).
pub(crate) fn escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if is_unsafe(c) {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A writer that passes log lines on with every [`is_unsafe`] character
/// that is not ASCII written as an escape, so an id in a log line cannot
/// reorder what an operator reads: `\u202e` in JSON lines (a JSON escape,
/// valid there since JSON holds non-ASCII text only within strings),
/// `\u{202e}` in pretty ones. ASCII control characters are left to the
/// log format (JSON escapes them; the pretty format is for a terminal). A
/// log event reaches it in one write, so a character is never split
/// between two.
pub(crate) struct SafeLines<W> {
    /// Where the lines go.
    pub inner: W,
    /// Whether the lines are JSON.
    pub json: bool,
}

/// The log fields that hold a list of ids. An event records them as a JSON
/// array in a string (`users = %serde_json::to_string(&ids)`), since
/// `tracing` has no list values without its unstable `valuable` support;
/// JSON lines carry them as the array itself, so a log reader gets
/// `"users":["a","b"]`.
const ARRAY_FIELDS: [&str; 1] = ["users"];

/// A JSON log line with every [`ARRAY_FIELDS`] field that holds a JSON
/// array in a string written as that array, or `None` when the line has
/// no such field. The line is edited in place, so its keys keep their
/// order: `"users":"[` cannot occur inside a JSON string (its quotes would
/// be escaped there), so where it occurs it is that field.
fn lift_arrays(line: &str) -> Option<String> {
    let mut out = line.to_owned();
    let mut lifted = false;
    for field in ARRAY_FIELDS {
        let key = format!("\"{field}\":");
        let Some(at) = out.find(&format!("{key}\"[")) else {
            continue;
        };
        let value_at = at + key.len();
        let mut values = serde_json::Deserializer::from_str(&out[value_at..]).into_iter::<String>();
        let Some(Ok(text)) = values.next() else { continue };
        let value_end = value_at + values.byte_offset();
        let Ok(list) = serde_json::from_str::<Vec<serde_json::Value>>(&text) else {
            continue;
        };
        let Ok(array) = serde_json::to_string(&list) else {
            continue;
        };
        out.replace_range(value_at..value_end, &array);
        lifted = true;
    }
    lifted.then_some(out)
}

impl<W: std::io::Write> std::io::Write for SafeLines<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let lifted = if self.json {
            std::str::from_utf8(buf).ok().and_then(lift_arrays)
        } else {
            None
        };
        let buf_in = buf;
        let buf = lifted.as_deref().map_or(buf_in, str::as_bytes);
        let written = buf_in.len();
        match std::str::from_utf8(buf) {
            Ok(text) if text.chars().any(|c| !c.is_ascii() && is_unsafe(c)) => {
                let mut out = String::with_capacity(text.len() + 16);
                for c in text.chars() {
                    match (!c.is_ascii() && is_unsafe(c), self.json) {
                        // JSON escapes are UTF-16 units: a pair beyond the BMP.
                        (true, true) => {
                            for unit in c.encode_utf16(&mut [0; 2]) {
                                out.push_str(&format!("\\u{unit:04x}"));
                            }
                        }
                        (true, false) => out.push_str(&c.escape_unicode().to_string()),
                        (false, _) => out.push(c),
                    }
                }
                self.inner.write_all(out.as_bytes())?;
                Ok(written)
            }
            _ => self.inner.write_all(buf).map(|()| written),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_carry_id_lists_as_arrays() {
        let cases = [
            (
                r#"{"level":"WARN","users":"[\"a\",\"b\"]","message":"dead-lettered"}"#,
                r#"{"level":"WARN","users":["a","b"],"message":"dead-lettered"}"#,
            ),
            // Not a list: left as it was.
            (
                r#"{"users":"[not json","message":"m"}"#,
                r#"{"users":"[not json","message":"m"}"#,
            ),
            (r#"{"users":3,"message":"m"}"#, r#"{"users":3,"message":"m"}"#),
            // Another field holding the same text is left alone.
            (r#"{"room":"[\"a\"]"}"#, r#"{"room":"[\"a\"]"}"#),
        ];
        for (line, shown) in cases {
            let mut out = SafeLines {
                inner: Vec::new(),
                json: true,
            };
            std::io::Write::write_all(&mut out, format!("{line}\n").as_bytes()).unwrap();
            // Byte for byte: the keys keep their order.
            assert_eq!(String::from_utf8(out.inner).unwrap(), format!("{shown}\n"), "{line}");
        }
        // Pretty lines are never touched.
        let mut out = SafeLines {
            inner: Vec::new(),
            json: false,
        };
        std::io::Write::write_all(&mut out, b"users=[\"a\"]\n").unwrap();
        assert_eq!(out.inner, b"users=[\"a\"]\n");
    }

    #[test]
    fn aligns_columns_and_escapes_control_characters() {
        let rows = [
            ["a".to_string(), "long header".to_string(), "x".to_string()],
            ["wide cell".to_string(), "b".to_string(), "".to_string()],
        ];
        assert_eq!(render(&rows), "a          long header  x\nwide cell  b\n");
        assert_eq!(escape("evil\n\u{1b}[2J"), "evil\\n\\u{1b}[2J");
    }

    #[test]
    fn bidi_and_invisible_characters_are_escaped_by_table() {
        let cases = [
            ("plain-id_1", "plain-id_1"),
            ("u\u{202e}1resu", "u\\u{202e}1resu"),
            ("a\u{2066}b\u{2069}", "a\\u{2066}b\\u{2069}"),
            ("zero\u{200b}width", "zero\\u{200b}width"),
            ("\u{feff}bom", "\\u{feff}bom"),
            ("mark\u{200f}", "mark\\u{200f}"),
            ("line\u{2028}sep", "line\\u{2028}sep"),
            ("soft\u{ad}hyphen", "soft\\u{ad}hyphen"),
            ("tag\u{e0041}", "tag\\u{e0041}"),
            ("é中文", "é中文"),
        ];
        for (id, shown) in cases {
            assert_eq!(escape(id), shown, "{id:?}");
        }
    }

    #[test]
    fn log_lines_reach_the_writer_without_bidi_characters() {
        use std::io::Write;
        let line = "{\"room\":\"r\u{202e}1\",\"é\":1}\n";
        let mut json = SafeLines {
            inner: Vec::new(),
            json: true,
        };
        json.write_all(line.as_bytes()).unwrap();
        json.write_all(b"plain\n").unwrap();
        let out = String::from_utf8(json.inner).unwrap();
        assert_eq!(out, "{\"room\":\"r\\u202e1\",\"é\":1}\nplain\n");
        // Still JSON, meaning the same id.
        let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
        assert_eq!(v["room"], "r\u{202e}1");
        let mut tag = SafeLines {
            inner: Vec::new(),
            json: true,
        };
        tag.write_all("{\"u\":\"a\u{e0041}\"}".as_bytes()).unwrap();
        let out = String::from_utf8(tag.inner).unwrap();
        assert_eq!(out, "{\"u\":\"a\\udb40\\udc41\"}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["u"], "a\u{e0041}");
        let mut pretty = SafeLines {
            inner: Vec::new(),
            json: false,
        };
        pretty.write_all("room=r\u{202e}1\n".as_bytes()).unwrap();
        assert_eq!(String::from_utf8(pretty.inner).unwrap(), "room=r\\u{202e}1\n");
    }
}
