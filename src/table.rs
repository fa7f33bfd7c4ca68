//! Plain-text tables for the operator commands (`kickq history`, `kickq dlq list`): aligned columns, and cell
//! text with control characters escaped so a hostile id cannot drive the terminal.

/// Renders rows (the first is the header) as columns two spaces apart; the
/// last column is not padded, so no line ends in spaces.
pub fn render<const N: usize>(rows: &[[String; N]]) -> String {
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

/// `s` with control characters written as escapes (`\n`, `\u{1b}`).
pub fn escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns_and_escapes_control_characters() {
        let rows = [
            ["a".to_string(), "long header".to_string(), "x".to_string()],
            ["wide cell".to_string(), "b".to_string(), "".to_string()],
        ];
        assert_eq!(render(&rows), "a          long header  x\nwide cell  b\n");
        assert_eq!(escape("evil\n\u{1b}[2J"), "evil\\n\\u{1b}[2J");
    }
}
