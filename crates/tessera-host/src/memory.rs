//! Host memory: how much each NUMA node of this machine has, for deciding how much `--mem` a
//! node can give, and memory sizes as people write them (`2TiB`, `64GiB`, `80GB`).
//!
//! Per node from `/sys/devices/system/node/node<N>/meminfo` where every node asked about exists
//! there; otherwise (a kernel without NUMA support) an equal share of `/proc/meminfo`'s total.
//! A simulated node never uses this machine's memory: its spec says its own (`mem=2TiB`).
//!
//! Sizes ([`parse_size_mib`]) take a unit, always, in any case (`10gb` as MIG profile names
//! write it): decimal `kB`/`KB`, `MB`, `GB`, `TB` (powers of 1000, as disks and NVIDIA's profile
//! names count: a 1g.10gb's 9,984 MiB is at least `10GB`) or binary `KiB`, `MiB`, `GiB`, `TiB`
//! (powers of 1024: `10GiB` is 10,240 MiB). The CLI's `--mem`, `--gpu-mem` and `--mps-mem` and the
//! simulated node's `mem=` read sizes here. A bare number, or a one-letter unit (`64G`: Slurm means GiB, others GB), is
//! refused with the forms accepted. [`format_mib`] prints a size back in the largest binary
//! unit that holds it exactly, so `parse_size_mib(&format_mib(n)) == Ok(n)`.

use std::collections::BTreeMap;
use std::path::Path;

/// The forms a size takes, for messages.
pub const SIZE_FORMS: &str =
    "MB, GB, TB (decimal: 10GB is 10^10 bytes) or MiB, GiB, TiB (binary: 10GiB is 10×2^30 bytes), e.g. 64GiB or 2TiB";

/// The largest size accepted, in MiB (1 EiB: larger than any machine).
pub const MAX_SIZE_MIB: u64 = 1 << 40;

/// A size that does not parse: the text, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{input}' {reason}")]
pub struct SizeError {
    pub input: String,
    pub reason: String,
}

/// Mebibytes (rounded up) from a size with its unit (see the module header for the units).
pub fn parse_size_mib(text: &str) -> Result<u64, SizeError> {
    let bad = |reason: String| SizeError { input: text.to_owned(), reason };
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| bad(format!("is not a size; write {SIZE_FORMS}")))?;
    let bytes_per_unit: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" => return Err(bad(format!("has no unit; write {SIZE_FORMS}"))),
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "k" | "m" | "g" | "t" => {
            let u = unit.trim();
            let up = u.to_ascii_uppercase();
            return Err(bad(format!(
                "has the unit '{u}', which could mean {up}B (decimal) or {up}iB (binary); write {num}{up}B or {num}{up}iB"
            )));
        }
        _ => return Err(bad(format!("has an unknown unit '{}'; write {SIZE_FORMS}", unit.trim()))),
    };
    let mib = (value * bytes_per_unit / (1024.0 * 1024.0)).ceil();
    if !(mib.is_finite() && value > 0.0) {
        return Err(bad("is not a positive size".to_owned()));
    }
    if mib > MAX_SIZE_MIB as f64 {
        return Err(bad("is larger than any machine".to_owned()));
    }
    // A whole, positive number of MiB no larger than MAX_SIZE_MIB: exact as a u64.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(mib as u64)
}

/// A size in MiB in the largest binary unit that holds it exactly: `2TiB`, `96GiB`, `1500MiB`.
pub fn format_mib(mib: u64) -> String {
    const UNITS: [(u64, &str); 2] = [(1 << 20, "TiB"), (1 << 10, "GiB")];
    for (per, unit) in UNITS {
        if mib >= per && mib.is_multiple_of(per) {
            return format!("{}{unit}", mib / per);
        }
    }
    format!("{mib}MiB")
}

/// `MemTotal:` of a meminfo text, in KiB.
fn mem_total_kib(text: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.contains("MemTotal:"))
        .and_then(|l| l.split_whitespace().rev().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
}

/// MiB of memory on each of `nodes`, read under `root` (normally `/`).
pub fn numa_memory_mib_at(root: &Path, nodes: &[u32]) -> BTreeMap<u32, u64> {
    let total =
        std::fs::read_to_string(root.join("proc/meminfo")).ok().and_then(|t| mem_total_kib(&t)).unwrap_or(0) / 1024;
    let share = total / u64::try_from(nodes.len().max(1)).unwrap_or(1);
    let own: Vec<Option<u64>> = nodes
        .iter()
        .map(|n| {
            std::fs::read_to_string(root.join(format!("sys/devices/system/node/node{n}/meminfo")))
                .ok()
                .and_then(|t| mem_total_kib(&t))
                .map(|k| k / 1024)
        })
        .collect();
    // Either every node is real (use sysfs) or the layout is not this machine's (share the total).
    let all_real = own.iter().all(Option::is_some);
    nodes.iter().zip(own).map(|(n, o)| (*n, if all_real { o.unwrap_or(share) } else { share })).collect()
}

/// MiB of memory on each of `nodes` of this machine.
pub fn numa_memory_mib(nodes: &[u32]) -> BTreeMap<u32, u64> {
    numa_memory_mib_at(Path::new("/"), nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_a_unit() {
        let table: &[(&str, u64)] = &[
            ("2TiB", 2 << 20),
            ("64GiB", 64 << 10),
            ("1.5TiB", 3 << 19),
            ("512MiB", 512),
            (" 10GB ", 9537),
            ("1TB", 953_675),
            ("1KiB", 1),
        ];
        for (text, mib) in table {
            assert_eq!(parse_size_mib(text), Ok(*mib), "{text}");
        }
        let bad: &[(&str, &str)] = &[
            ("abc", "'abc' is not a size"),
            ("64", "'64' has no unit"),
            ("64G", "could mean GB (decimal) or GiB (binary)"),
            ("64GiBs", "unknown unit 'GiBs'"),
            ("0GiB", "not a positive size"),
            ("99999999TiB", "larger than any machine"),
            ("", "is not a size"),
        ];
        for (text, needle) in bad {
            let e = parse_size_mib(text).expect_err(text).to_string();
            assert!(e.contains(needle), "{text:?}: {e:?} lacks {needle:?}");
        }
    }

    #[test]
    fn sizes_print_in_the_largest_exact_unit() {
        for (mib, text) in [(2u64 << 20, "2TiB"), (96 << 10, "96GiB"), (1500, "1500MiB"), (1536 << 10, "1536GiB")] {
            assert_eq!(format_mib(mib), text);
            assert_eq!(parse_size_mib(text), Ok(mib));
        }
    }

    #[test]
    fn sysfs_when_every_node_is_there_else_a_share() {
        let dir = std::env::temp_dir().join(format!("tessera-host-mem-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("proc")).unwrap();
        std::fs::create_dir_all(dir.join("sys/devices/system/node/node0")).unwrap();
        std::fs::write(dir.join("proc/meminfo"), "MemTotal:       4194304 kB\nMemFree: 1 kB\n").unwrap();
        std::fs::write(dir.join("sys/devices/system/node/node0/meminfo"), "Node 0 MemTotal:       2097152 kB\n")
            .unwrap();
        assert_eq!(numa_memory_mib_at(&dir, &[0]), BTreeMap::from([(0, 2048)]));
        assert_eq!(numa_memory_mib_at(&dir, &[0, 1]), BTreeMap::from([(0, 2048), (1, 2048)]));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
