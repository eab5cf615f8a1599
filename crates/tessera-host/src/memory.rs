//! Host memory per NUMA node, for deciding how much `--mem` a node can give.
//!
//! From `/sys/devices/system/node/node<N>/meminfo` where every node asked about exists there;
//! otherwise (a simulated node's NUMA layout on a machine without it) an equal share of
//! `/proc/meminfo`'s total. The simulated node may also say its memory itself, which the
//! daemon prefers.

use std::collections::BTreeMap;
use std::path::Path;

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
