//! Human output: aligned tables and the text slice map, in the spirit of `nvidia-smi mig`.
//!
//! Only the binary knows how things look; the library crates hand over data.

use std::fmt::Write as _;

/// A plain aligned table: a header row and data rows, columns separated by two spaces.
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
        self.rows.push(cells);
    }

    /// Render with `indent` spaces before every line.
    pub fn render(&self, indent: usize) -> String {
        let cols = self.headers.len();
        let mut width = vec![0usize; cols];
        for r in std::iter::once(&self.headers).chain(self.rows.iter()) {
            for (i, c) in r.iter().enumerate().take(cols) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        for r in std::iter::once(&self.headers).chain(self.rows.iter()) {
            let mut line = " ".repeat(indent);
            for (i, c) in r.iter().enumerate().take(cols) {
                line.push_str(c);
                if i + 1 < cols {
                    line.push_str(&" ".repeat(width[i] - c.chars().count() + 2));
                }
            }
            out.push_str(line.trim_end());
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

/// A two-line map of the placement grid: unit numbers, then `[label]` per instance and `·` for
/// free units. Every unit gets the same width, chosen so the smallest profile's label fits.
pub fn slice_map(units: u8, smallest_size: u8, slices: &[Slice], indent: usize) -> String {
    let cell = usize::from(9u8.div_ceil(smallest_size.max(1))).max(2);
    let pad = " ".repeat(indent);
    let mut head = format!("{pad}unit  ");
    for u in 0..units {
        let _ = write!(head, "{:<cell$}", u);
    }
    let mut body = format!("{pad}      ");
    let mut u = 0u8;
    while u < units {
        match slices.iter().find(|s| s.start == u) {
            Some(s) if s.size > 0 => {
                let inner = cell * usize::from(s.size) - 2;
                let mut label: String = s.label.chars().take(inner).collect();
                if s.label.chars().count() > inner && inner > 1 {
                    label = s.label.chars().take(inner - 1).collect::<String>() + "…";
                }
                let _ = write!(body, "[{label:<inner$}]");
                u = u.saturating_add(s.size);
            }
            _ => {
                let dots = "·".repeat(cell.saturating_sub(2).max(1));
                let _ = write!(body, " {dots:<w$} ", w = cell.saturating_sub(2));
                u += 1;
            }
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
