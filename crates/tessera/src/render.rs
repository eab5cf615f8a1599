//! Human output: aligned tables, the text slice map, and the rules every view follows: text
//! a user supplied (command lines, reasons, names) is printed with its control characters
//! escaped ([`escape`]), and a table fits the terminal ([`terminal_width`], [`Table::fit`]).
//!
//! Only the binary knows how things look; the library crates hand over data.

use std::borrow::Cow;
use std::fmt::Write as _;

use tessera_host::text::needs_escape;
use unicode_width::{UnicodeWidthChar as _, UnicodeWidthStr as _};

/// `text` with every control character written out (`\n`, `\t`, `\r`, `\x1b`, `\u{202e}`), so
/// nothing a user submitted can rewrite the terminal of whoever reads it.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if needs_escape(c) && u32::from(c) < 0x100 => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// JSON text (as `serde_json` writes it) with every character [`escape`] would write out
/// given as a `\uXXXX` escape: `serde_json` escapes C0 controls only, so DEL, C1 controls
/// (`\u{9b}` is a CSI to many terminals) and Unicode's invisible and bidirectional controls
/// in a user's command line would otherwise reach the terminal of whoever reads `-o json`.
/// Outside strings JSON has only spaces and newlines, which are kept: the text parses to the
/// same value.
pub fn escape_json(json: &str) -> Cow<'_, str> {
    if !json.chars().any(|c| c != '\n' && needs_escape(c)) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if c != '\n' && needs_escape(c) {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{:04x}", u);
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// How wide output may be: `COLUMNS` when set, else the terminal's width when standard output
/// is one, else 80.
pub fn terminal_width() -> usize {
    if let Some(n) = std::env::var("COLUMNS").ok().and_then(|v| v.trim().parse::<usize>().ok()).filter(|n| *n > 0) {
        return n;
    }
    terminal_size::terminal_size_of(std::io::stdout()).map_or(80, |(w, _)| usize::from(w.0).max(1))
}

/// `text` cut to at most `width` columns, ending in `…` when cut.
pub fn cut(text: &str, width: usize) -> Cow<'_, str> {
    if text.width() <= width {
        return Cow::Borrowed(text);
    }
    if width == 0 {
        return Cow::Borrowed("");
    }
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = c.width().unwrap_or(0);
        if used + w > width - 1 {
            break;
        }
        out.push(c);
        used += w;
    }
    out.push('…');
    Cow::Owned(out)
}

/// A plain aligned table: a header row and data rows, columns separated by two spaces. Every
/// cell is [`escape`]d.
#[derive(Debug, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Table { headers: headers.iter().map(|h| (*h).to_string()).collect(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells.into_iter().map(|c| escape(&c).into_owned()).collect());
    }

    /// Render with `indent` spaces before every line.
    pub fn render(&self, indent: usize) -> String {
        self.render_widths(indent, &self.natural_widths(), usize::MAX)
    }

    /// Render within `width` columns: the columns in `flexible` (most often a reason or a
    /// command line) give up room first, widest first, down to their header's width, their
    /// cells cut with `…`; should the other columns alone be too wide, every line is cut.
    pub fn fit(&self, indent: usize, width: usize, flexible: &[usize]) -> String {
        let mut widths = self.natural_widths();
        let cols = widths.len();
        let total = |w: &[usize]| indent + w.iter().sum::<usize>() + 2 * cols.saturating_sub(1);
        let floor = |i: usize| self.headers[i].width().max(3);
        let mut over = total(&widths).saturating_sub(width);
        while over > 0 {
            let Some(i) =
                flexible.iter().copied().filter(|&i| i < cols && widths[i] > floor(i)).max_by_key(|&i| widths[i])
            else {
                break;
            };
            widths[i] -= 1;
            over -= 1;
        }
        self.render_widths(indent, &widths, width)
    }

    fn natural_widths(&self) -> Vec<usize> {
        let cols = self.headers.len();
        let mut width = vec![0usize; cols];
        for r in std::iter::once(&self.headers).chain(self.rows.iter()) {
            for (i, c) in r.iter().enumerate().take(cols) {
                width[i] = width[i].max(c.width());
            }
        }
        width
    }

    fn render_widths(&self, indent: usize, widths: &[usize], line_width: usize) -> String {
        let cols = self.headers.len();
        let mut out = String::new();
        for r in std::iter::once(&self.headers).chain(self.rows.iter()) {
            let mut line = " ".repeat(indent);
            for (i, c) in r.iter().enumerate().take(cols) {
                let c = cut(c, widths[i]);
                line.push_str(&c);
                if i + 1 < cols {
                    line.push_str(&" ".repeat(widths[i].saturating_sub(c.width()) + 2));
                }
            }
            let line = line.trim_end();
            out.push_str(&cut(line, line_width));
            out.push('\n');
        }
        out
    }
}

/// One occupied stretch of the placement grid.
#[derive(Debug, Clone)]
pub struct Slice {
    pub start: u8,
    pub size: u8,
    pub label: String,
}

/// How many columns one placement unit gets in a slice map by default: enough that the smallest
/// profile's block holds a 7-column label (`1g.10gb`) between its brackets.
pub fn map_cell_width(smallest_size: u8) -> usize {
    usize::from(9u8.div_ceil(smallest_size.max(1))).max(2)
}

/// One stretch of a slice map's line: an instance's block, or one free unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapBlock {
    /// Its first placement unit.
    pub start: u8,
    /// How many placement units it covers.
    pub size: u8,
    /// Its first column, counted from where the map's units begin.
    pub col: usize,
    /// How many columns it takes.
    pub width: usize,
    /// The instance drawn there (its index in the slices given); `None`: a free unit.
    pub slice: Option<usize>,
}

/// The geometry every slice map follows (`tessera mig gpus`, `tessera top`): unit `u` begins at
/// column `u × cell`; an instance is one block over `[start, start + size)`, a free unit a block
/// of its own, left to right.
pub fn map_blocks(units: u8, cell: usize, slices: &[Slice]) -> Vec<MapBlock> {
    let mut blocks = Vec::new();
    let mut u = 0u8;
    while u < units {
        let (size, slice) = match slices.iter().position(|s| s.start == u && s.size > 0) {
            Some(i) => (slices[i].size, Some(i)),
            None => (1, None),
        };
        blocks.push(MapBlock { start: u, size, col: usize::from(u) * cell, width: cell * usize::from(size), slice });
        u = u.saturating_add(size);
    }
    blocks
}

/// An instance's block `width` columns wide: `[label]`, the label cut with `…` or padded.
pub fn map_block_text(label: &str, width: usize) -> String {
    let inner = width.saturating_sub(2);
    let label = cut(label, inner);
    format!("[{label}{}]", " ".repeat(inner.saturating_sub(label.width())))
}

/// A free unit `width` columns wide: ` ··· `.
pub fn map_free_text(width: usize) -> String {
    match width {
        0..=2 => format!("{:<width$}", "·"),
        _ => format!(" {} ", "·".repeat(width - 2)),
    }
}

/// The unit numbers over a map whose units are `cell` columns wide; a number that would run
/// into the one before it is left out.
pub fn map_units_text(units: u8, cell: usize) -> String {
    let mut head = String::new();
    for u in 0..units {
        let col = usize::from(u) * cell;
        if u == 0 || head.len() < col {
            head.push_str(&" ".repeat(col - head.len()));
            let _ = write!(head, "{u}");
        }
    }
    head
}

/// A two-line map of the placement grid: unit numbers, then `[label]` per instance and `·` for
/// free units. Every unit gets the same width ([`map_cell_width`]), laid out by [`map_blocks`].
pub fn slice_map(units: u8, smallest_size: u8, slices: &[Slice], indent: usize) -> String {
    let cell = map_cell_width(smallest_size);
    let pad = " ".repeat(indent);
    let head = format!("{pad}unit  {}", map_units_text(units, cell));
    let mut body = format!("{pad}      ");
    for b in map_blocks(units, cell, slices) {
        match b.slice {
            Some(i) => body.push_str(&map_block_text(&slices[i].label, b.width)),
            None => body.push_str(&map_free_text(b.width)),
        }
    }
    format!("{}\n{}\n", head.trim_end(), body.trim_end())
}

/// `0-3,8,10-11` from a list of numbers.
pub fn ranges(values: &[u32]) -> String {
    let mut v = values.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let start = v[i];
        let mut end = start;
        while i + 1 < v.len() && v[i + 1] == end + 1 {
            i += 1;
            end = v[i];
        }
        out.push(if start == end { start.to_string() } else { format!("{start}-{end}") });
        i += 1;
    }
    if out.is_empty() { "-".to_string() } else { out.join(",") }
}

/// `{0,4}:4`, as `nvidia-smi mig -lgipp` writes placements.
pub fn placements(starts: &[u8], size: u8) -> String {
    format!("{}:{size}", tessera_mig::layout::fmt_units(starts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keeps_its_value_and_loses_its_terminal_controls() {
        let command = vec!["sh".to_string(), "x\u{1b}[2J\u{9b}31m\u{7f}\u{202e}\t\u{1F600}é".to_string()];
        let json = serde_json::to_string_pretty(&command).unwrap();
        let out = escape_json(&json);
        assert!(!out.chars().any(|c| c != '\n' && needs_escape(c)), "{out}");
        assert!(out.contains("\\u009b") && out.contains("\\u007f") && out.contains("\\u202e"), "{out}");
        assert_eq!(serde_json::from_str::<Vec<String>>(&out).unwrap(), command);
        let plain = serde_json::to_string_pretty(&["a", "é"]).unwrap();
        assert!(matches!(escape_json(&plain), Cow::Borrowed(_)));
    }

    #[test]
    fn control_characters_are_written_out() {
        let cases = [
            ("plain text", "plain text"),
            ("a\nb\tc\rd", "a\\nb\\tc\\rd"),
            ("\x1b]0;owned\x07\x1b[2J", "\\x1b]0;owned\\x07\\x1b[2J"),
            ("\u{9b}31m", "\\x9b31m"),
            ("\x7f", "\\x7f"),
            ("abc\u{202e}fdp.exe", "abc\\u{202e}fdp.exe"),
            // The other bidirectional marks, and the line and paragraph separators.
            ("a\u{61c}b\u{2067}c\u{2028}d\u{2029}", "a\\u{61c}b\\u{2067}c\\u{2028}d\\u{2029}"),
            ("naïve ✓ 日本", "naïve ✓ 日本"),
        ];
        for (text, want) in cases {
            assert_eq!(escape(text), want, "{text:?}");
        }
    }

    #[test]
    fn tables_fit_the_width() {
        let mut t = Table::new(&["ID", "STATE", "REASON"]);
        t.row(vec!["1".into(), "queued".into(), "capacity: no free 1g.10gb instance on any GPU".into()]);
        t.row(vec!["22".into(), "running\x1b[31m".into(), "日本語の理由がとても長い".into()]);
        let out = t.fit(0, 30, &[2]);
        assert_eq!(
            out,
            "ID  STATE            REASON\n1   queued           capacity…\n22  running\\x1b[31m  日本語の…\n"
        );
        for line in out.lines() {
            assert!(line.width() <= 30, "{line}");
        }
        // Too narrow even for the fixed columns: every line is cut.
        for line in t.fit(0, 12, &[2]).lines() {
            assert!(line.width() <= 12, "{line}");
        }
    }

    #[test]
    fn ranges_fold_runs() {
        assert_eq!(ranges(&[0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11");
        assert_eq!(ranges(&[]), "-");
    }

    #[test]
    fn slice_map_draws_instances_and_free_units() {
        let m = slice_map(
            8,
            1,
            &[
                Slice { start: 0, size: 4, label: "3g.40gb GI 1".into() },
                Slice { start: 4, size: 2, label: "2g.20gb GI 5".into() },
                Slice { start: 6, size: 1, label: "1g.10gb+me".into() },
            ],
            0,
        );
        assert_eq!(
            m,
            "unit  0        1        2        3        4        5        6        7\n      \
             [3g.40gb GI 1                      ][2g.20gb GI 5    ][1g.10g…] ·······"
                .to_string()
                + "\n"
        );
    }
}
