//! Where a rank may run and allocate: the rank's requested CPUs and NUMA node, reconciled with
//! what the shim itself is allowed (its cpuset), before anything is spawned.
//!
//! **CPUs.** The request is intersected with the shim's own affinity (`sched_getaffinity`), so
//! a rank is bound "within the daemon's own cpuset". CPUs outside it are dropped with a note; if
//! none is left, the rank is bound to the shim's whole set, with a note. An empty request binds
//! nothing (the rank inherits the shim's set).
//!
//! **Memory.** A node is *present* when it is in the shim's `Mems_allowed_list`
//! (`/proc/self/status`; without that line, `/sys/devices/system/node/has_memory`; without
//! either, the kernel has no NUMA support and no node is present). A present node is bound with
//! `set_mempolicy(MPOL_BIND)` in the child, and if that call fails (`ENOSYS`, `EPERM` from a
//! seccomp profile, `EINVAL`, anything) the rank does not start: a job that asked for local
//! memory never silently runs with remote memory. An absent node cannot be bound at all (the
//! kernel would answer `EINVAL`, a kernel without NUMA `ENOSYS`), so the rank runs unbound and
//! the status says so. This is the one case where a failed binding is not an error.

use std::collections::BTreeSet;

use crate::spec::RankSpec;
use tessera_host::{format_cpulist, parse_cpulist};

/// What the shim itself may use.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Allowed {
    /// The shim's CPU affinity; empty when it could not be read (then nothing is bound).
    pub cpus: BTreeSet<u32>,
    /// Memory nodes present for the shim (see the module docs).
    pub mems: BTreeSet<u32>,
}

impl Allowed {
    /// Reads the calling process's own sets. Failures leave a set empty and add a note.
    pub fn here() -> (Allowed, Vec<String>) {
        let mut notes = Vec::new();
        let cpus = match crate::sys::own_affinity() {
            Ok(mask) => mask.ids(),
            Err(e) => {
                notes.push(format!("cannot read the shim's CPU affinity (sched_getaffinity: {e}); CPUs not bound"));
                BTreeSet::new()
            }
        };
        let mems = match std::fs::read_to_string("/proc/self/status") {
            Ok(status) => match status_field(&status, "Mems_allowed_list") {
                Some(list) => parse_or_note(list, "Mems_allowed_list", &mut notes),
                None => sysfs_mems(&mut notes),
            },
            Err(_) => sysfs_mems(&mut notes),
        };
        (Allowed { cpus, mems }, notes)
    }
}

fn sysfs_mems(notes: &mut Vec<String>) -> BTreeSet<u32> {
    match std::fs::read_to_string("/sys/devices/system/node/has_memory") {
        Ok(text) => parse_or_note(&text, "/sys/devices/system/node/has_memory", notes),
        Err(_) => BTreeSet::new(),
    }
}

fn parse_or_note(list: &str, source: &str, notes: &mut Vec<String>) -> BTreeSet<u32> {
    parse_cpulist(list).unwrap_or_else(|e| {
        notes.push(format!("cannot parse {source}: {e}; memory not bound"));
        BTreeSet::new()
    })
}

/// The value of a `Key:\tvalue` line of `/proc/<pid>/status`.
pub(crate) fn status_field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status.lines().find_map(|line| line.strip_prefix(key)?.strip_prefix(':').map(str::trim))
}

/// The binding one rank gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankBinding {
    /// CPUs to bind to; `None` inherits.
    pub cpus: Option<BTreeSet<u32>>,
    /// Node to bind memory to; `None` leaves the default policy.
    pub mem_node: Option<u32>,
    /// What differs from the request, for `status.json`.
    pub notes: Vec<String>,
}

/// Reconciles a rank's request with what the shim is allowed (rules in the module docs).
pub fn plan_binding(rank: &RankSpec, allowed: &Allowed) -> RankBinding {
    let mut notes = Vec::new();
    let r = rank.rank;
    let cpus = if rank.cpus.is_empty() || allowed.cpus.is_empty() {
        if !rank.cpus.is_empty() {
            notes.push(format!(
                "rank {r}: the shim's CPU set is unknown; CPUs {} not bound",
                format_cpulist(&rank.cpus)
            ));
        }
        None
    } else {
        let requested: BTreeSet<u32> = rank.cpus.iter().copied().collect();
        let inside: BTreeSet<u32> = requested.intersection(&allowed.cpus).copied().collect();
        let outside: BTreeSet<u32> = requested.difference(&allowed.cpus).copied().collect();
        if inside.is_empty() {
            notes.push(format!(
                "rank {r}: none of CPUs {} is in the shim's allowed set {}; bound to {} instead",
                format_cpulist(&requested),
                format_cpulist(&allowed.cpus),
                format_cpulist(&allowed.cpus)
            ));
            Some(allowed.cpus.clone())
        } else {
            if !outside.is_empty() {
                notes.push(format!(
                    "rank {r}: CPUs {} are outside the shim's allowed set {}; bound to {}",
                    format_cpulist(&outside),
                    format_cpulist(&allowed.cpus),
                    format_cpulist(&inside)
                ));
            }
            Some(inside)
        }
    };
    let mem_node = match rank.mem_node {
        Some(node) if allowed.mems.contains(&node) => Some(node),
        Some(node) => {
            let have = if allowed.mems.is_empty() { "none".to_owned() } else { format_cpulist(&allowed.mems) };
            notes.push(format!("rank {r}: NUMA node {node} is absent here (memory nodes: {have}); memory not bound"));
            None
        }
        None => None,
    };
    RankBinding { cpus, mem_node, notes }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rank(cpus: &[u32], mem_node: Option<u32>) -> RankSpec {
        RankSpec { rank: 3, env: vec![], cpus: cpus.to_vec(), mem_node }
    }

    fn allowed(cpus: &[u32], mems: &[u32]) -> Allowed {
        Allowed { cpus: cpus.iter().copied().collect(), mems: mems.iter().copied().collect() }
    }

    #[test]
    fn inside_the_cpuset_binds_as_asked() {
        let b = plan_binding(&rank(&[2, 3], Some(1)), &allowed(&[0, 1, 2, 3], &[0, 1]));
        assert_eq!(b, RankBinding { cpus: Some(BTreeSet::from([2, 3])), mem_node: Some(1), notes: vec![] });
    }

    #[test]
    fn partly_outside_keeps_the_intersection() {
        let b = plan_binding(&rank(&[1, 2, 3], None), &allowed(&[0, 1], &[0]));
        assert_eq!(b.cpus, Some(BTreeSet::from([1])));
        assert_eq!(b.notes, vec!["rank 3: CPUs 2-3 are outside the shim's allowed set 0-1; bound to 1"]);
    }

    #[test]
    fn entirely_outside_falls_back_to_the_shims_set() {
        let b = plan_binding(&rank(&[8, 9], None), &allowed(&[0, 1], &[0]));
        assert_eq!(b.cpus, Some(BTreeSet::from([0, 1])));
        assert_eq!(b.notes, vec!["rank 3: none of CPUs 8-9 is in the shim's allowed set 0-1; bound to 0-1 instead"]);
    }

    #[test]
    fn no_request_binds_nothing() {
        let b = plan_binding(&rank(&[], None), &allowed(&[0, 1], &[0]));
        assert_eq!(b, RankBinding { cpus: None, mem_node: None, notes: vec![] });
    }

    #[test]
    fn absent_node_is_reported_not_bound() {
        let b = plan_binding(&rank(&[], Some(7)), &allowed(&[0, 1], &[0]));
        assert_eq!(b.mem_node, None);
        assert_eq!(b.notes, vec!["rank 3: NUMA node 7 is absent here (memory nodes: 0); memory not bound"]);
        let b = plan_binding(&rank(&[], Some(0)), &allowed(&[0, 1], &[]));
        assert_eq!(b.notes, vec!["rank 3: NUMA node 0 is absent here (memory nodes: none); memory not bound"]);
    }

    #[test]
    fn unknown_cpuset_binds_nothing() {
        let b = plan_binding(&rank(&[0], None), &allowed(&[], &[0]));
        assert_eq!(b.cpus, None);
        assert_eq!(b.notes.len(), 1);
    }

    #[test]
    fn reads_status_fields() {
        let status = "Name:\tsh\nCpus_allowed_list:\t0-1\nMems_allowed_list:\t0\n";
        assert_eq!(status_field(status, "Mems_allowed_list"), Some("0"));
        assert_eq!(status_field(status, "Cpus_allowed_list"), Some("0-1"));
        assert_eq!(status_field(status, "Cpus_allowed"), None);
    }

    #[test]
    fn here_reads_this_process() {
        let (a, _notes) = Allowed::here();
        assert!(!a.cpus.is_empty());
    }
}
