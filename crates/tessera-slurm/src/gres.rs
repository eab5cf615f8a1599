//! Slurm's GRES lists as scontrol writes them: a node's `Gres=` and `GresUsed=`, a job's
//! per-node `GRES=` detail, and a job's `TresPerNode=` request.
//!
//! `gpu:1g.10gb:3(S:0)` is three GPUs of Type `1g.10gb` near socket 0; `gpu:1g.10gb:1(IDX:0-2,5)`
//! names the GRES indices held; `gpu:2` has no Type. `(null)`, `N/A` and the empty text are no
//! GRES at all. TresPerNode is `gres:gpu:1g.10gb:1` before Slurm 23.02 and `gres/gpu:1g.10gb=1`
//! from 23.02 on; both are read, with other TRES (`cpu=2`) left out.

use serde::{Deserialize, Serialize};

/// One GRES item: name, Type, count and, where scontrol says, the indices held.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GresCount {
    /// The GRES name (`gpu`, `mps`, `shard`).
    pub name: String,
    /// The Type (`1g.10gb`); `None` when the item has none.
    pub kind: Option<String>,
    pub count: u64,
    /// The GRES indices from `(IDX:...)`; `Some(vec![])` for `(IDX:N/A)`, `None` when not given.
    pub indices: Option<Vec<u32>>,
}

/// Why a GRES item cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("GRES item '{item}': {reason}")]
pub struct GresError {
    pub item: String,
    pub reason: String,
}

fn err(item: &str, reason: impl Into<String>) -> GresError {
    GresError { item: item.to_string(), reason: reason.into() }
}

/// What scontrol writes for "none".
fn is_none_text(s: &str) -> bool {
    matches!(s, "" | "(null)" | "N/A" | "none" | "(none)")
}

/// Read a node's `Gres=`/`GresUsed=` or a job's detail `GRES=`.
pub fn parse_gres_list(s: &str) -> Result<Vec<GresCount>, GresError> {
    let s = s.trim();
    if is_none_text(s) {
        return Ok(Vec::new());
    }
    split_top_level(s).into_iter().map(parse_item).collect()
}

/// Read a job's `TresPerNode=`: its `gres:`/`gres/` items; other TRES are left out.
pub fn parse_tres_per_node(s: &str) -> Result<Vec<GresCount>, GresError> {
    let s = s.trim();
    if is_none_text(s) {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for item in split_top_level(s) {
        if let Some(rest) = item.strip_prefix("gres/") {
            // 23.02+: `gres/gpu:1g.10gb=1`, `gres/gpu=2`, `gres/gpu`.
            let (spec, count) = match rest.split_once('=') {
                Some((spec, count)) => (spec, parse_count(count).map_err(|r| err(item, r))?),
                None => (rest, 1),
            };
            let (name, kind) = match spec.split_once(':') {
                Some((name, kind)) => (name, Some(kind)),
                None => (spec, None),
            };
            out.push(gres(item, name, kind, count, None)?);
        } else if let Some(rest) = item.strip_prefix("gres:") {
            // Before 23.02: `gres:gpu:1g.10gb:1`, `gres:gpu:2`, `gres:mps:50`.
            out.push(parse_colon_form(item, rest, None)?);
        }
    }
    Ok(out)
}

/// Split at commas outside parentheses (`gpu:a:1(IDX:0,2),gpu:b:1`).
fn split_top_level(s: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                items.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(s[start..].trim());
    items
}

/// `name[:type][:count][(annotation)]`.
fn parse_item(item: &str) -> Result<GresCount, GresError> {
    let (body, annotation) = match item.strip_suffix(')') {
        // `gpu:(null)`: the Type, not an annotation.
        Some(_) if item.ends_with(":(null)") => (item, None),
        Some(inner) => {
            // The annotation's `(`: the last one not inside a `(null)` Type.
            let open = inner.rfind('(').ok_or_else(|| err(item, "a ')' without '('"))?;
            (&inner[..open], Some(&inner[open + 1..]))
        }
        None => (item, None),
    };
    let indices = match annotation {
        None => None,
        Some(a) => parse_annotation(item, a)?,
    };
    parse_colon_form(item, body, indices)
}

/// The part after `name` is `type:count`, `count` or `type`; a count missing is 1, or the
/// number of indices held when they are given.
fn parse_colon_form(item: &str, body: &str, indices: Option<Vec<u32>>) -> Result<GresCount, GresError> {
    let parts: Vec<&str> = body.split(':').collect();
    let implied = indices.as_ref().map_or(1, |i| i.len() as u64);
    let (name, kind, count) = match parts.as_slice() {
        [name] => (*name, None, implied),
        [name, one] => match parse_count(one) {
            Ok(count) => (*name, None, count),
            Err(_) => (*name, Some(*one), implied),
        },
        [name, kind, count] => (*name, Some(*kind), parse_count(count).map_err(|r| err(item, r))?),
        _ => return Err(err(item, "expected 'name[:type][:count]'")),
    };
    gres(item, name, kind, count, indices)
}

fn gres(
    item: &str,
    name: &str,
    kind: Option<&str>,
    count: u64,
    indices: Option<Vec<u32>>,
) -> Result<GresCount, GresError> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(err(item, format!("'{name}' is not a GRES name")));
    }
    let kind = match kind {
        None | Some("(null)") => None,
        Some("") => return Err(err(item, "an empty Type")),
        Some(k) => Some(k.to_string()),
    };
    Ok(GresCount { name: name.to_string(), kind, count, indices })
}

/// A count, with Slurm's binary suffixes (`1K` is 1024).
fn parse_count(s: &str) -> Result<u64, String> {
    let (digits, factor) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1u64 << 10),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 1 << 20),
        Some(b'g' | b'G') => (&s[..s.len() - 1], 1 << 30),
        Some(b't' | b'T') => (&s[..s.len() - 1], 1 << 40),
        Some(b'p' | b'P') => (&s[..s.len() - 1], 1 << 50),
        _ => (s, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("'{s}' is not a count"));
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .ok_or_else(|| format!("the count '{s}' is too large"))
}

/// `IDX:0-2,5` → the indices; `IDX:N/A` → none held; `S:0-1` (sockets) and other annotations
/// say nothing about indices.
fn parse_annotation(item: &str, a: &str) -> Result<Option<Vec<u32>>, GresError> {
    let Some(list) = a.strip_prefix("IDX:") else {
        return Ok(None);
    };
    if is_none_text(list) {
        return Ok(Some(Vec::new()));
    }
    let mut out = Vec::new();
    for part in list.split(',') {
        let number = |t: &str| t.parse::<u32>().map_err(|_| err(item, format!("'{part}' is not an index or a range")));
        match part.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (number(lo)?, number(hi)?);
                if lo > hi {
                    return Err(err(item, format!("the range '{part}' runs backwards")));
                }
                // A node has few GRES: a range longer than any node's is not scontrol's.
                if hi - lo >= MAX_RANGE {
                    return Err(err(item, format!("the range '{part}' is longer than {MAX_RANGE}")));
                }
                out.extend(lo..=hi);
            }
            None => out.push(number(part)?),
        }
    }
    Ok(Some(out))
}

/// The longest index range read, far above any node's GRES count.
const MAX_RANGE: u32 = 65_536;
