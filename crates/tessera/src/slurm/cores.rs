//! Slurm's core numbers for a set of this machine's CPUs.
//!
//! gres.conf's `Cores=` names cores in Slurm's abstract numbering, not CPU ids: cores are
//! numbered socket by socket, in the order of their `core_id` within the socket, hyperthreads
//! of a core sharing its number. The kernel's topology files (`physical_package_id`,
//! `core_id` of every CPU) give that order.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each CPU's Slurm core number.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CoreTopology {
    core_of_cpu: BTreeMap<u32, u32>,
}

impl CoreTopology {
    /// From `(cpu, package, core_id)` of every CPU.
    pub fn from_cpus(cpus: &[(u32, u32, u32)]) -> CoreTopology {
        let cores: BTreeSet<(u32, u32)> = cpus.iter().map(|&(_, p, c)| (p, c)).collect();
        let index: BTreeMap<(u32, u32), u32> =
            cores.into_iter().enumerate().map(|(i, k)| (k, u32::try_from(i).unwrap_or(u32::MAX))).collect();
        CoreTopology { core_of_cpu: cpus.iter().map(|&(cpu, p, c)| (cpu, index[&(p, c)])).collect() }
    }

    /// This machine's, from `/sys/devices/system/cpu` (empty when it cannot be read: then no
    /// `Cores=` is written).
    pub fn read() -> CoreTopology {
        Self::read_from(Path::new("/sys/devices/system/cpu"))
    }

    fn read_from(root: &Path) -> CoreTopology {
        let Ok(entries) = std::fs::read_dir(root) else { return CoreTopology::default() };
        let mut cpus = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(cpu) = name.strip_prefix("cpu").and_then(|n| n.parse::<u32>().ok()) else { continue };
            let read = |f: &str| {
                std::fs::read_to_string(e.path().join("topology").join(f))
                    .ok()
                    .and_then(|t| t.trim().parse::<u32>().ok())
            };
            if let (Some(p), Some(c)) = (read("physical_package_id"), read("core_id")) {
                cpus.push((cpu, p, c));
            }
        }
        CoreTopology::from_cpus(&cpus)
    }

    /// Slurm's core list (`0-3,8`) of the cores `cpus` belong to; `None` when a CPU is unknown
    /// or the set is empty.
    pub fn slurm_cores(&self, cpus: &BTreeSet<u32>) -> Option<String> {
        let cores: Option<BTreeSet<u32>> = cpus.iter().map(|c| self.core_of_cpu.get(c).copied()).collect();
        let cores = cores.filter(|c| !c.is_empty())?;
        Some(tessera_host::format_cpulist(&cores))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyperthreads_share_a_core_and_sockets_come_in_order() {
        // Two sockets of two cores, two threads each, numbered as Linux does on Intel: threads
        // of a core are `n` and `n + 4`.
        let cpus = [(0, 0, 0), (1, 0, 1), (2, 1, 0), (3, 1, 1), (4, 0, 0), (5, 0, 1), (6, 1, 0), (7, 1, 1)];
        let t = CoreTopology::from_cpus(&cpus);
        let set = |v: &[u32]| v.iter().copied().collect::<BTreeSet<u32>>();
        assert_eq!(t.slurm_cores(&set(&[0, 1, 4, 5])).as_deref(), Some("0-1"));
        assert_eq!(t.slurm_cores(&set(&[2, 6])).as_deref(), Some("2"));
        assert_eq!(t.slurm_cores(&set(&[9])), None);
        assert_eq!(t.slurm_cores(&set(&[])), None);
    }
}
