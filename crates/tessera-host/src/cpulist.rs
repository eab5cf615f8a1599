//! The kernel's list format for CPU and memory-node sets (`0-3,8,10-11`), as used by
//! `/proc/<pid>/status` (`Cpus_allowed_list`, `Mems_allowed_list`), cpuset files and sysfs
//! (`/sys/devices/system/node/online`, `…/local_cpulist`).
//!
//! Parsing is strict (no empty items, no reversed ranges, no signs) and bounded: ids above
//! [`MAX_ID`] are refused, so a request naming CPU 4 000 000 000 cannot make Tessera allocate a
//! huge bit mask. Printing gives the canonical form (sorted, ranges merged), so
//! `format(parse(s))` is the kernel's own spelling of the same set.

use std::collections::BTreeSet;

/// A CPU or node list that does not parse: the text, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CPU/node list `{input}`: {reason}")]
pub struct CpuListError {
    pub input: String,
    pub reason: String,
}

/// The largest CPU or node id accepted (the kernel's own `NR_CPUS` limit is 8192).
pub const MAX_ID: u32 = 65_535;

/// Parses a list such as `0-3,8,10-11` into a set. Whitespace around the whole list (the
/// trailing newline of a sysfs file) is ignored; an empty list is the empty set.
pub fn parse_cpulist(input: &str) -> Result<BTreeSet<u32>, CpuListError> {
    let bad = |reason: String| CpuListError { input: input.to_owned(), reason };
    let mut set = BTreeSet::new();
    let text = input.trim();
    if text.is_empty() {
        return Ok(set);
    }
    for item in text.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(bad("empty item".to_owned()));
        }
        let (lo, hi) = match item.split_once('-') {
            Some((a, b)) => (parse_id(a).map_err(&bad)?, parse_id(b).map_err(&bad)?),
            None => {
                let id = parse_id(item).map_err(&bad)?;
                (id, id)
            }
        };
        if lo > hi {
            return Err(bad(format!("range {item} runs backwards")));
        }
        set.extend(lo..=hi);
    }
    Ok(set)
}

fn parse_id(text: &str) -> Result<u32, String> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{text}` is not a CPU number"));
    }
    match text.parse::<u32>() {
        Ok(id) if id <= MAX_ID => Ok(id),
        _ => Err(format!("`{text}` is above the largest id Tessera accepts ({MAX_ID})")),
    }
}

/// Prints a set in canonical list form: ascending, consecutive ids merged into `a-b` ranges.
pub fn format_cpulist<'a>(ids: impl IntoIterator<Item = &'a u32>) -> String {
    let mut sorted: Vec<u32> = ids.into_iter().copied().collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            end += 1;
            i += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}-{end}"));
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_kernel_forms() {
        let set = parse_cpulist("0-3,8,10-11\n").unwrap();
        assert_eq!(set.into_iter().collect::<Vec<_>>(), vec![0, 1, 2, 3, 8, 10, 11]);
        assert!(parse_cpulist("").unwrap().is_empty());
        assert!(parse_cpulist(" \n").unwrap().is_empty());
        assert_eq!(parse_cpulist("5").unwrap().into_iter().collect::<Vec<_>>(), vec![5]);
        assert_eq!(parse_cpulist("2-2").unwrap().into_iter().collect::<Vec<_>>(), vec![2]);
    }

    #[test]
    fn refuses_malformed_lists() {
        for bad in ["1,", ",1", "1,,2", "3-1", "-1", "1-", "a", "1-b", "+1", "0x3", "70000", "0-4000000000", "1 2"] {
            let err = parse_cpulist(bad).unwrap_err();
            assert_eq!(err.input, bad, "{bad}: {err}");
            assert!(err.to_string().contains(bad.trim()), "{bad}: {err}");
        }
    }

    #[test]
    fn prints_canonical_form() {
        assert_eq!(format_cpulist(&[11, 0, 1, 2, 3, 8, 10, 3]), "0-3,8,10-11");
        assert_eq!(format_cpulist(&[]), "");
        assert_eq!(format_cpulist(&[7]), "7");
        assert_eq!(format_cpulist(&[1, 3, 5]), "1,3,5");
    }

    proptest! {
        #[test]
        fn round_trip(ids in proptest::collection::btree_set(0u32..300, 0..64)) {
            let text = format_cpulist(&ids);
            let back = parse_cpulist(&text).unwrap();
            prop_assert_eq!(&back, &ids);
            // Canonical: printing the parsed set gives the same text again.
            prop_assert_eq!(format_cpulist(&back), text);
        }

        #[test]
        fn never_panics(text in "[0-9,\\- ]{0,24}") {
            let _ = parse_cpulist(&text);
        }
    }
}
