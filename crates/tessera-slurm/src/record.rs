//! scontrol's one-line records (`scontrol show node -o`, `scontrol show job -o -d`) as ordered
//! key/value pairs.
//!
//! scontrol separates pairs by one space, but a few values (`Reason=`, `Command=`, `Comment=`,
//! `WorkDir=`, `StdOut=`) may hold spaces themselves. A pair therefore begins where a space is
//! followed by a key (`[A-Za-z][A-Za-z0-9_:/.]*`) and `=`; anything else, spaces included, belongs
//! to the value before. Keys may repeat (`-d` writes a `Nodes=`/`GRES=` group per allocated node),
//! so the pairs keep their order.

/// One line of scontrol's `-o` output.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    pub pairs: Vec<(String, String)>,
}

/// Why a line is not a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scontrol output line {line}: {reason}: '{excerpt}'")]
pub struct ParseError {
    /// 1-based line number in the text given.
    pub line: usize,
    /// The line's first characters.
    pub excerpt: String,
    pub reason: String,
}

/// What scontrol prints instead of records when there are none: no records, not an error.
const NOTHING_THERE: &[&str] = &["No jobs in the system", "No nodes in the system", "No partitions in the system"];

/// How many characters of a bad line an error quotes.
const EXCERPT_CHARS: usize = 60;

impl Record {
    /// The first value under `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Every value under `key`, in order.
    pub fn get_all(&self, key: &str) -> Vec<&str> {
        self.pairs.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect()
    }
}

/// One record per non-empty line of `-o` output. scontrol's "No jobs in the system" (and the
/// same for nodes and partitions) gives no record.
pub fn parse_records(text: &str) -> Result<Vec<Record>, ParseError> {
    let mut records = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || NOTHING_THERE.contains(&line) {
            continue;
        }
        records.push(parse_line(line).map_err(|reason| ParseError {
            line: i + 1,
            excerpt: line.chars().take(EXCERPT_CHARS).collect(),
            reason: reason.to_string(),
        })?);
    }
    Ok(records)
}

/// The length of the key at the start of `s` when `s` starts with `key=`.
fn key_len(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    if !bytes.first()?.is_ascii_alphabetic() {
        return None;
    }
    let len = bytes.iter().position(|&b| !(b.is_ascii_alphanumeric() || b"_:/.".contains(&b)))?;
    (bytes[len] == b'=').then_some(len)
}

fn parse_line(line: &str) -> Result<Record, &'static str> {
    if key_len(line).is_none() {
        return Err("expected 'Key=value' at the start");
    }
    // Where each pair starts: the line's start, and every space followed by `key=`.
    let mut starts = vec![0];
    starts.extend(line.match_indices(' ').map(|(i, _)| i + 1).filter(|&i| key_len(&line[i..]).is_some()));
    let mut pairs = Vec::with_capacity(starts.len());
    for (n, &start) in starts.iter().enumerate() {
        // Pairs after the first start one past a space: the value ends before it.
        let end = starts.get(n + 1).map_or(line.len(), |&next| next - 1);
        let pair = &line[start..end];
        let (key, value) = pair.split_once('=').ok_or("a pair without '='")?;
        // Spaces before the next pair are no part of the value (scontrol writes one).
        pairs.push((key.to_string(), value.trim_end_matches(' ').to_string()));
    }
    Ok(Record { pairs })
}
