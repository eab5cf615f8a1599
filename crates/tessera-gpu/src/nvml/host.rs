//! What the host says about a GPU where NVML does not: NUMA node and local CPUs from sysfs, the
//! `/dev/nvidia-caps` minors from `/proc/driver/nvidia-caps/mig-minors`, and process names from
//! `/proc/<pid>/comm`. Every root is configurable so tests can build a fake tree.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

/// sysfs's name of a PCI device (`0000:3b:00.0`) from NVML's bus id (`00000000:3B:00.0`):
/// lower case, the domain cut to 4 hex digits.
pub(crate) fn sysfs_bdf(nvml_bus_id: &str) -> Option<String> {
    let id = nvml_bus_id.trim().to_ascii_lowercase();
    let (domain, rest) = id.split_once(':')?;
    let domain = u32::from_str_radix(domain, 16).ok()?;
    let (bus, devfn) = rest.split_once(':')?;
    let (dev, func) = devfn.split_once('.')?;
    let ok = |s: &str, n: usize| s.len() == n && s.chars().all(|c| c.is_ascii_hexdigit());
    if !(ok(bus, 2) && ok(dev, 2) && ok(func, 1)) || domain > 0xffff {
        return None;
    }
    Some(format!("{domain:04x}:{bus}:{dev}.{func}"))
}

/// A kernel cpulist (`0-15,32-47`, `3`, empty) as CPU numbers; `None` if it does not parse.
pub(crate) fn parse_cpulist(text: &str) -> Option<Vec<u32>> {
    tessera_host::parse_cpulist(text).ok().map(|set| set.into_iter().collect())
}

/// Bits set in an NVML affinity mask (an array of `unsigned long`), lowest first.
pub(crate) fn mask_bits(words: &[std::ffi::c_ulong]) -> Vec<u32> {
    let width = std::ffi::c_ulong::BITS;
    let mut out = Vec::new();
    for (i, w) in words.iter().enumerate() {
        for bit in 0..width {
            if w >> bit & 1 == 1
                && let Some(n) =
                    u32::try_from(i).ok().and_then(|i| i.checked_mul(width)).and_then(|b| b.checked_add(bit))
            {
                out.push(n);
            }
        }
    }
    out
}

/// The node's boot id (`/proc/sys/kernel/random/boot_id`: a UUID that changes at every boot),
/// `None` if it cannot be read or is empty.
pub(crate) fn boot_id(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    Some(text.trim().to_string()).filter(|t| !t.is_empty())
}

/// `<sysfs>/bus/pci/devices/<bdf>/numa_node`: `None` for -1 (unknown), a missing file or junk.
pub(crate) fn sysfs_numa_node(sysfs_root: &Path, nvml_bus_id: &str) -> Option<u32> {
    let bdf = sysfs_bdf(nvml_bus_id)?;
    let text = fs::read_to_string(sysfs_root.join("bus/pci/devices").join(bdf).join("numa_node")).ok()?;
    let n: i64 = text.trim().parse().ok()?;
    u32::try_from(n).ok()
}

/// `<sysfs>/bus/pci/devices/<bdf>/local_cpulist`, if readable.
pub(crate) fn sysfs_local_cpus(sysfs_root: &Path, nvml_bus_id: &str) -> Option<Vec<u32>> {
    let bdf = sysfs_bdf(nvml_bus_id)?;
    let text = fs::read_to_string(sysfs_root.join("bus/pci/devices").join(bdf).join("local_cpulist")).ok()?;
    parse_cpulist(&text)
}

/// `/proc/driver/nvidia-caps/mig-minors`: capability name → device minor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MigMinors {
    minors: BTreeMap<String, u32>,
}

impl MigMinors {
    /// Parse the file's text; lines that are not `<name> <minor>` are skipped.
    pub(crate) fn parse(text: &str) -> MigMinors {
        let minors = text
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                let (name, minor, rest) = (words.next()?, words.next()?, words.next());
                if rest.is_some() {
                    return None;
                }
                Some((name.to_string(), minor.parse().ok()?))
            })
            .collect();
        MigMinors { minors }
    }

    /// Read the file; `None` if it does not exist or cannot be read (no MIG-capable driver).
    pub(crate) fn read(path: &Path) -> Option<MigMinors> {
        fs::read_to_string(path).ok().map(|t| MigMinors::parse(&t))
    }

    /// `gpu<minor>/gi<id>/access`.
    pub(crate) fn gpu_instance(&self, gpu_minor: u32, gi: u32) -> Option<u32> {
        self.minors.get(&format!("gpu{gpu_minor}/gi{gi}/access")).copied()
    }

    /// `gpu<minor>/gi<id>/ci<id>/access`.
    pub(crate) fn compute_instance(&self, gpu_minor: u32, gi: u32, ci: u32) -> Option<u32> {
        self.minors.get(&format!("gpu{gpu_minor}/gi{gi}/ci{ci}/access")).copied()
    }
}

/// `<proc>/<pid>/comm`, or `unknown`. (A process in another pid namespace than this one is not
/// found there: NVML reports host pids.)
pub(crate) fn process_name(proc_root: &Path, pid: u32) -> String {
    fs::read_to_string(proc_root.join(pid.to_string()).join("comm"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::ids::{ci_caps_minor, gi_caps_minor, mig_minors_text};

    #[test]
    fn bus_ids_map_to_sysfs_names() {
        assert_eq!(sysfs_bdf("00000000:3B:00.0").as_deref(), Some("0000:3b:00.0"));
        assert_eq!(sysfs_bdf("00000001:18:00.1").as_deref(), Some("0001:18:00.1"));
        assert_eq!(sysfs_bdf("0000:9a:00.0").as_deref(), Some("0000:9a:00.0"));
        assert_eq!(sysfs_bdf("garbage"), None);
        assert_eq!(sysfs_bdf("00000000:3B:00"), None);
        assert_eq!(sysfs_bdf("00010000:3B:00.0"), None);
    }

    #[test]
    fn boot_ids_are_read_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("boot_id");
        assert_eq!(boot_id(&p), None, "no file");
        std::fs::write(&p, "6e1b6b0c-5f0e-4a4f-9d5e-0a1b2c3d4e5f\n").unwrap();
        assert_eq!(boot_id(&p).as_deref(), Some("6e1b6b0c-5f0e-4a4f-9d5e-0a1b2c3d4e5f"));
        std::fs::write(&p, " \n").unwrap();
        assert_eq!(boot_id(&p), None, "empty");
    }

    #[test]
    fn cpulists_parse() {
        assert_eq!(parse_cpulist("0-3,8,10-11\n"), Some(vec![0, 1, 2, 3, 8, 10, 11]));
        assert_eq!(parse_cpulist(""), Some(vec![]));
        assert_eq!(parse_cpulist("3-1"), None);
        assert_eq!(parse_cpulist("a"), None);
    }

    #[test]
    fn masks_give_bits() {
        let width = std::ffi::c_ulong::BITS;
        assert_eq!(mask_bits(&[0b1011, 1]), vec![0, 1, 3, width]);
        assert!(mask_bits(&[0, 0]).is_empty());
    }

    #[test]
    fn sysfs_numa_and_cpus_from_a_fake_tree() {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("bus/pci/devices/0000:3b:00.0");
        fs::create_dir_all(&dev).unwrap();
        fs::write(dev.join("numa_node"), "1\n").unwrap();
        fs::write(dev.join("local_cpulist"), "56-59\n").unwrap();
        assert_eq!(sysfs_numa_node(dir.path(), "00000000:3B:00.0"), Some(1));
        assert_eq!(sysfs_local_cpus(dir.path(), "00000000:3B:00.0"), Some(vec![56, 57, 58, 59]));
        fs::write(dev.join("numa_node"), "-1\n").unwrap();
        assert_eq!(sysfs_numa_node(dir.path(), "00000000:3B:00.0"), None);
        assert_eq!(sysfs_numa_node(dir.path(), "00000000:18:00.0"), None);
    }

    #[test]
    fn mig_minors_parse_and_agree_with_the_formula() {
        let m = MigMinors::parse(&mig_minors_text(32));
        assert_eq!(m.gpu_instance(0, 1), Some(12));
        assert_eq!(m.compute_instance(0, 1, 0), Some(13));
        assert_eq!(m.compute_instance(31, 14, 7), Some(4322));
        for (gpu, gi, ci) in [(0, 0, 0), (3, 7, 2), (17, 14, 7)] {
            assert_eq!(m.gpu_instance(gpu, gi), Some(gi_caps_minor(gpu, gi)));
            assert_eq!(m.compute_instance(gpu, gi, ci), Some(ci_caps_minor(gpu, gi, ci)));
        }
        let odd = MigMinors::parse("config 1\nbroken line here\ngpu0/gi1/access x\n\ngpu0/gi2/access 21\n");
        assert_eq!(odd.gpu_instance(0, 1), None);
        assert_eq!(odd.gpu_instance(0, 2), Some(21));
        assert_eq!(MigMinors::read(Path::new("/nonexistent/mig-minors")), None);
    }

    #[test]
    fn process_names_fall_back() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("42")).unwrap();
        fs::write(dir.path().join("42/comm"), "python3\n").unwrap();
        assert_eq!(process_name(dir.path(), 42), "python3");
        assert_eq!(process_name(dir.path(), 43), "unknown");
    }

    proptest! {
        #[test]
        fn cpulist_round_trips(mut cpus in prop::collection::btree_set(0u32..512, 0..40)) {
            let list: Vec<u32> = std::mem::take(&mut cpus).into_iter().collect();
            // Render as ranges.
            let mut parts = Vec::new();
            let mut i = 0;
            while i < list.len() {
                let mut j = i;
                while j + 1 < list.len() && list[j + 1] == list[j] + 1 {
                    j += 1;
                }
                parts.push(if i == j { list[i].to_string() } else { format!("{}-{}", list[i], list[j]) });
                i = j + 1;
            }
            prop_assert_eq!(parse_cpulist(&parts.join(",")), Some(list));
        }
    }
}
