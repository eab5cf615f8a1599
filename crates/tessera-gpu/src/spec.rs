//! Node specs: the one-line description of a simulated GPU node, such as `8xH100-80GB,numa=2`.
//!
//! A spec names the GPUs (`<count>x<model>` groups joined by `+`, models as the catalog knows
//! them) and the host around them as `key=value` options. A group may name its boards' PCI
//! subsystem id after a `:` (`2xH100-80GB:0x16C110DE`: subsystem device `16C1`, subsystem vendor
//! `10DE`, what mig-parted's `device-filter` can match on); without one, a GPU reports its model's
//! device id as subsystem device with NVIDIA's vendor id (`0x233010DE` for an H100-80GB).
//!
//! * `numa=N`: host NUMA nodes (default 1); GPUs are spread evenly over them in index order.
//!   `numa=0` means "the platform does not say" (sysfs `numa_node` = -1).
//! * `cpus=N`: host logical CPUs (default 224, a DGX H100's 2 × 56 cores with two threads
//!   each), split evenly over the NUMA nodes (so a multiple of `numa`): node `k` has the
//!   contiguous ids `k·cpus/numa …`, the GPUs' `local_cpus`.
//! * `mem=SIZE`: host memory, with its unit (default `2TiB`, a DGX H100's), split evenly over
//!   the NUMA nodes ([`NodeSpec::memory_of_node`]).
//! * `mig=on|off`: the MIG mode every GPU starts in (default on).
//! * `mig-op-ms=N`: how long each GPU-instance create or destroy takes, in milliseconds
//!   (default 0). Real drivers take a fraction of a second; tests use it to catch the daemon
//!   in the middle of a reconfiguration.
//! * `gpu-reset=on|off`: whether a GPU can be reset (default on). `off` is a passthrough VM
//!   whose hypervisor does not expose the reset (NVIDIA's MIG guide): `nvidia-smi -r` is refused
//!   (`Not Supported`), and a MIG-mode change that needs a reset (A100, A30) stays pending until
//!   a reboot (`tessera mig reboot`), its activation status `NVML_ERROR_RESET_REQUIRED`.
//!
//! The host is the spec's, never the machine's that runs it: `8xH100-80GB,numa=2` (the default
//! node) is a DGX H100 with 224 CPUs and 2 TiB on two NUMA nodes wherever it runs. Everything a
//! simulated device reports is derived from the spec, deterministically: GPU UUIDs hash the
//! canonical spec and the index, PCI bus ids follow a DGX H100, minor numbers are the indices.
//! So two state files made from the same spec describe the same hardware.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tessera_mig::{GpuModel, catalog, catalog::closest};

use crate::backend::DeviceInfo;
use crate::ids;

/// Host logical CPUs when the spec does not say (a DGX H100: 2 × 56 cores, 2 threads each).
pub const DEFAULT_CPUS: u32 = 224;
/// Host memory when the spec does not say, in MiB (a DGX H100: 2 TiB).
pub const DEFAULT_MEM_MIB: u64 = 2 << 20;
/// Most host memory, in MiB (1 PiB).
pub const MAX_MEM_MIB: u64 = 1 << 30;
/// Most GPUs on one node (`/proc/driver/nvidia-caps/mig-minors` stops at `gpu31`).
pub const MAX_GPUS: u32 = 32;
/// Most host NUMA nodes.
pub const MAX_NUMA_NODES: u32 = 64;
/// Most host logical CPUs.
pub const MAX_CPUS: u32 = 8192;
/// The default node: a DGX H100.
pub const DEFAULT_SPEC: &str = "8xH100-80GB,numa=2";
const EXAMPLE: &str = "8xH100-80GB,numa=2,cpus=224,mem=2TiB or 2xA100-40GB+1xA30,numa=1,mig=off";
/// The options, for messages.
const OPTIONS: &str = "numa=N, cpus=N, mem=SIZE, mig=on|off, mig-op-ms=N and gpu-reset=on|off";

/// PCI buses of the eight GPUs of a DGX H100.
const DGX_H100_BUSES: [u8; 8] = [0x18, 0x2a, 0x3a, 0x5d, 0x9a, 0xab, 0xba, 0xdb];

/// `count` GPUs of one model.
#[derive(Debug, Clone, Copy)]
pub struct GpuGroup {
    pub count: u32,
    pub model: &'static GpuModel,
    /// The boards' PCI subsystem id as the spec gives it (`:0x16C110DE`); `None`: the model's
    /// default ([`default_subsystem_id`]).
    pub subsystem: Option<u32>,
}

impl GpuGroup {
    /// The PCI subsystem id each GPU of the group reports.
    pub fn subsystem_id(&self) -> u32 {
        self.subsystem.unwrap_or_else(|| default_subsystem_id(self.model))
    }

    fn same_boards(&self, other: &GpuGroup) -> bool {
        self.model.name == other.model.name && self.subsystem == other.subsystem
    }
}

/// The PCI subsystem id a simulated GPU reports when the spec names none: an NVIDIA-built board
/// whose subsystem device is the model's device id (`0x233010DE` for an H100-80GB).
pub fn default_subsystem_id(model: &GpuModel) -> u32 {
    let device = model.pci_device_id_values().next().unwrap_or(0);
    (u32::from(device) << 16) | 0x10DE
}

impl PartialEq for GpuGroup {
    fn eq(&self, other: &Self) -> bool {
        self.count == other.count && self.same_boards(other)
    }
}

impl Eq for GpuGroup {}

/// A parsed node spec. Build one with [`NodeSpec::parse`] (or `str::parse`); `Display` gives the
/// canonical form back, and parsing that yields an equal spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    groups: Vec<GpuGroup>,
    numa_nodes: u32,
    cpus: u32,
    mem_mib: u64,
    mig: bool,
    mig_op_ms: u32,
    gpu_reset: bool,
}

/// What is wrong with a node spec; every message names the offending part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("empty node spec; expected something like '{EXAMPLE}'")]
    Empty,
    /// A `<count>x<model>` group that does not parse.
    #[error("bad GPU group '{part}' in the node spec: {reason}")]
    BadGroup { part: String, reason: String },
    /// A model the catalog does not know.
    #[error("unknown GPU model '{model}' in '{part}'{}", did_you_mean(.suggestions))]
    UnknownModel { part: String, model: String, suggestions: Vec<String> },
    /// An option other than those in [`OPTIONS`].
    #[error("unknown option '{key}' in '{part}'{}; the options are {OPTIONS}", did_you_mean(.suggestions))]
    UnknownOption { part: String, key: String, suggestions: Vec<String> },
    /// An option whose value does not parse or is out of range.
    #[error("bad option '{part}' in the node spec: {reason}")]
    BadOption { part: String, reason: String },
    /// The same option twice.
    #[error("option '{key}' is given twice in the node spec")]
    DuplicateOption { key: String },
    /// More GPUs than a node can have.
    #[error("the node spec has {count} GPUs but a node has at most {MAX_GPUS}")]
    TooManyGpus { count: u64 },
    /// CPUs that do not split evenly over the NUMA nodes.
    #[error("cpus={cpus} does not split evenly over numa={numa} NUMA nodes; give a multiple of {numa}, e.g. cpus={}", round_up(*.cpus, *.numa))]
    UnevenCpus { cpus: u32, numa: u32 },
    /// Less memory than one MiB per NUMA node.
    #[error("mem={mem} is less than 1MiB for each of the numa={numa} NUMA nodes")]
    TooLittleMemory { mem: String, numa: u32 },
}

/// The multiple of `of` at or above `n` (`of` > 0).
fn round_up(n: u32, of: u32) -> u32 {
    n.div_ceil(of.max(1)).saturating_mul(of.max(1))
}

fn did_you_mean(s: &[String]) -> String {
    match s {
        [] => String::new(),
        [one] => format!(" (did you mean '{one}'?)"),
        many => format!(" (did you mean one of: {}?)", many.join(", ")),
    }
}

impl NodeSpec {
    /// Parse `8xH100-80GB,numa=2`, `2xA100-40GB+1xA30,numa=1,cpus=64,mem=512GiB,mig=off`, …
    pub fn parse(text: &str) -> Result<NodeSpec, SpecError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(SpecError::Empty);
        }
        let mut parts = text.split(',');
        let gpus = parts.next().unwrap_or_default();
        let mut groups: Vec<GpuGroup> = Vec::new();
        for part in gpus.split('+') {
            let g = parse_group(part)?;
            match groups.last_mut() {
                Some(last) if last.same_boards(&g) => last.count += g.count,
                _ => groups.push(g),
            }
        }
        let total: u64 = groups.iter().map(|g| u64::from(g.count)).sum();
        if total > u64::from(MAX_GPUS) {
            return Err(SpecError::TooManyGpus { count: total });
        }
        let (mut numa, mut cpus, mut mem, mut mig, mut op_ms, mut reset) = (None, None, None, None, None, None);
        for part in parts {
            let part = part.trim();
            let Some((key, value)) = part.split_once('=') else {
                return Err(SpecError::BadOption {
                    part: part.to_string(),
                    reason: format!("expected key=value ({OPTIONS})"),
                });
            };
            let (key, value) = (key.trim().to_ascii_lowercase(), value.trim());
            let slot_taken = match key.as_str() {
                "numa" => numa.replace(parse_number(part, value, 0, MAX_NUMA_NODES)?).is_some(),
                "cpus" => cpus.replace(parse_number(part, value, 1, MAX_CPUS)?).is_some(),
                "mem" => mem.replace(parse_mem(part, value)?).is_some(),
                "mig" => mig.replace(parse_switch(part, value)?).is_some(),
                "mig-op-ms" => op_ms.replace(parse_number(part, value, 0, 60_000)?).is_some(),
                "gpu-reset" => reset.replace(parse_switch(part, value)?).is_some(),
                _ => {
                    return Err(SpecError::UnknownOption {
                        part: part.to_string(),
                        suggestions: closest(&key, &["numa", "cpus", "mem", "mig", "mig-op-ms", "gpu-reset"]),
                        key,
                    });
                }
            };
            if slot_taken {
                return Err(SpecError::DuplicateOption { key });
            }
        }
        let numa_nodes = numa.unwrap_or(1);
        let cpus = cpus.unwrap_or(DEFAULT_CPUS);
        if numa_nodes > 0 && !cpus.is_multiple_of(numa_nodes) {
            return Err(SpecError::UnevenCpus { cpus, numa: numa_nodes });
        }
        let mem_mib = mem.unwrap_or(DEFAULT_MEM_MIB);
        if mem_mib < u64::from(numa_nodes) {
            return Err(SpecError::TooLittleMemory { mem: tessera_host::format_mib(mem_mib), numa: numa_nodes });
        }
        Ok(NodeSpec {
            groups,
            numa_nodes,
            cpus,
            mem_mib,
            mig: mig.unwrap_or(true),
            mig_op_ms: op_ms.unwrap_or(0),
            gpu_reset: reset.unwrap_or(true),
        })
    }

    /// The GPU groups, in index order.
    pub fn groups(&self) -> &[GpuGroup] {
        &self.groups
    }

    /// Host NUMA nodes; 0 when unknown.
    pub fn numa_nodes(&self) -> u32 {
        self.numa_nodes
    }

    /// Host logical CPUs.
    pub fn cpus(&self) -> u32 {
        self.cpus
    }

    /// Host memory, in MiB.
    pub fn memory_mib(&self) -> u64 {
        self.mem_mib
    }

    /// The host's NUMA nodes by number: `0 … numa-1`, or just `0` when NUMA is unknown
    /// (`numa=0`), which then holds every CPU and all memory.
    pub fn host_nodes(&self) -> std::ops::Range<u32> {
        0..self.numa_nodes.max(1)
    }

    /// Host memory of NUMA node `node`, in MiB: an even share, the first nodes taking what does
    /// not divide; all of it when NUMA is unknown; 0 for a node the host does not have.
    pub fn memory_of_node(&self, node: u32) -> u64 {
        let nodes = u64::from(self.numa_nodes.max(1));
        let node = u64::from(node);
        if node >= nodes {
            return 0;
        }
        self.mem_mib / nodes + u64::from(node < self.mem_mib % nodes)
    }

    /// The MIG mode the GPUs start in.
    pub fn mig_enabled(&self) -> bool {
        self.mig
    }

    /// How long each GPU-instance create or destroy takes, in milliseconds.
    pub fn mig_op_ms(&self) -> u32 {
        self.mig_op_ms
    }

    /// Whether a GPU can be reset (`gpu-reset=off`: a passthrough VM's, which cannot).
    pub fn gpu_reset(&self) -> bool {
        self.gpu_reset
    }

    /// Number of GPUs.
    pub fn gpu_count(&self) -> u32 {
        self.groups.iter().map(|g| g.count).sum()
    }

    /// The model of every GPU, by index.
    pub fn models(&self) -> Vec<&'static GpuModel> {
        self.groups.iter().flat_map(|g| std::iter::repeat_n(g.model, g.count as usize)).collect()
    }

    /// The host NUMA node of GPU `index`, `None` when the spec says `numa=0`.
    pub fn numa_node_of(&self, index: u32) -> Option<u32> {
        if self.numa_nodes == 0 {
            return None;
        }
        let n = u64::from(self.gpu_count().max(1));
        u32::try_from(u64::from(index) * u64::from(self.numa_nodes) / n).ok()
    }

    /// The host CPUs of a NUMA node (all of them when NUMA is unknown).
    pub fn cpus_of_node(&self, node: Option<u32>) -> Vec<u32> {
        let Some(node) = node.filter(|_| self.numa_nodes > 0) else {
            return (0..self.cpus).collect();
        };
        // `parse` makes the CPUs a multiple of the nodes.
        let per = self.cpus / self.numa_nodes;
        (node * per..(node + 1) * per).collect()
    }

    /// Every GPU as the driver would describe it.
    pub fn devices(&self) -> Vec<DeviceInfo> {
        let canonical = self.to_string();
        self.groups
            .iter()
            .flat_map(|g| std::iter::repeat_n(g, g.count as usize))
            .zip(0u32..)
            .map(|(group, index)| {
                let model = group.model;
                let numa_node = self.numa_node_of(index);
                DeviceInfo {
                    index,
                    minor_number: index,
                    uuid: ids::gpu_uuid(&format!("{canonical}/{index}")),
                    name: model.display_product_name().to_string(),
                    pci_bus_id: pci_bus_id(index),
                    pci_device_id: model.pci_device_id_values().next().unwrap_or(0),
                    pci_subsystem_id: group.subsystem_id(),
                    numa_node,
                    local_cpus: self.cpus_of_node(numa_node),
                    memory_total_mib: model.total_memory_mib(),
                }
            })
            .collect()
    }
}

impl Default for NodeSpec {
    /// A DGX-H100-like node: 8 × H100 80GB on 2 host NUMA nodes, 224 CPUs, 2 TiB, MIG on.
    fn default() -> Self {
        // The catalog is embedded and `tests::default_spec_is_dgx_h100` checks the model is in it.
        #[allow(clippy::expect_used)]
        NodeSpec::parse(DEFAULT_SPEC).expect("the embedded catalog has H100-80GB")
    }
}

impl fmt::Display for NodeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let groups: Vec<String> = self
            .groups
            .iter()
            .map(|g| match g.subsystem {
                Some(s) => format!("{}x{}:0x{s:08X}", g.count, g.model.name),
                None => format!("{}x{}", g.count, g.model.name),
            })
            .collect();
        write!(f, "{},numa={}", groups.join("+"), self.numa_nodes)?;
        if self.cpus != DEFAULT_CPUS {
            write!(f, ",cpus={}", self.cpus)?;
        }
        if self.mem_mib != DEFAULT_MEM_MIB {
            write!(f, ",mem={}", tessera_host::format_mib(self.mem_mib))?;
        }
        if !self.mig {
            f.write_str(",mig=off")?;
        }
        if self.mig_op_ms != 0 {
            write!(f, ",mig-op-ms={}", self.mig_op_ms)?;
        }
        if !self.gpu_reset {
            f.write_str(",gpu-reset=off")?;
        }
        Ok(())
    }
}

impl FromStr for NodeSpec {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NodeSpec::parse(s)
    }
}

impl Serialize for NodeSpec {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NodeSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        NodeSpec::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn parse_group(part: &str) -> Result<GpuGroup, SpecError> {
    let trimmed = part.trim();
    if trimmed.is_empty() {
        return Err(SpecError::BadGroup {
            part: part.to_string(),
            reason: format!("empty GPU group; expected <count>x<model>, e.g. '{EXAMPLE}'"),
        });
    }
    let digits_end = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
    let (count, model_text) = if digits_end == 0 {
        (1, trimmed)
    } else {
        let rest = trimmed[digits_end..].trim_start();
        let Some(model_text) =
            rest.strip_prefix('x').or_else(|| rest.strip_prefix('X')).or_else(|| rest.strip_prefix('×'))
        else {
            return Err(SpecError::BadGroup {
                part: trimmed.to_string(),
                reason: "expected <count>x<model>, e.g. 8xH100-80GB".into(),
            });
        };
        let count: u32 = trimmed[..digits_end].parse().map_err(|_| SpecError::BadGroup {
            part: trimmed.to_string(),
            reason: format!("GPU count must be between 1 and {MAX_GPUS}"),
        })?;
        if count == 0 {
            return Err(SpecError::BadGroup {
                part: trimmed.to_string(),
                reason: format!("GPU count must be between 1 and {MAX_GPUS}"),
            });
        }
        (count, model_text.trim())
    };
    let (model_text, subsystem) = match model_text.split_once(':') {
        None => (model_text, None),
        Some((model_text, sub)) => (model_text.trim(), Some(parse_subsystem(trimmed, sub.trim())?)),
    };
    if model_text.is_empty() {
        return Err(SpecError::BadGroup { part: trimmed.to_string(), reason: "no GPU model after the count".into() });
    }
    let cat = catalog();
    match cat.model(model_text) {
        Ok(model) => Ok(GpuGroup { count, model, subsystem }),
        Err(_) => {
            let mut names: Vec<&str> = Vec::new();
            for m in &cat.models {
                names.push(&m.name);
                names.extend(m.short_names.iter().map(String::as_str));
            }
            Err(SpecError::UnknownModel {
                part: trimmed.to_string(),
                model: model_text.to_string(),
                suggestions: suggest_models(model_text, &names),
            })
        }
    }
}

/// `0x16C110DE` after a group's `:`: the subsystem device id, then the subsystem vendor id.
fn parse_subsystem(part: &str, text: &str) -> Result<u32, SpecError> {
    let hex = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")).unwrap_or_default();
    match u32::from_str_radix(hex, 16) {
        Ok(id) if !hex.is_empty() && hex.len() <= 8 && hex.chars().all(|c| c.is_ascii_hexdigit()) => Ok(id),
        _ => Err(SpecError::BadGroup {
            part: part.to_string(),
            reason: format!(
                "the PCI subsystem id after ':' must be hex such as 0x16C110DE (subsystem device 16C1, subsystem vendor 10DE), got '{text}'"
            ),
        }),
    }
}

/// Model names close to `query`; failing that, close once punctuation is ignored (`RTX6000`).
fn suggest_models(query: &str, names: &[&str]) -> Vec<String> {
    let direct = closest(query, names);
    if !direct.is_empty() {
        return direct;
    }
    let squash = |s: &str| s.chars().filter(char::is_ascii_alphanumeric).collect::<String>();
    let squashed: Vec<String> = names.iter().map(|n| squash(n)).collect();
    let refs: Vec<&str> = squashed.iter().map(String::as_str).collect();
    let mut out: Vec<String> = Vec::new();
    for hit in closest(&squash(query), &refs) {
        if let Some(i) = squashed.iter().position(|s| *s == hit)
            && !out.iter().any(|o| o == names[i])
        {
            out.push(names[i].to_string());
        }
    }
    out
}

fn parse_number(part: &str, value: &str, min: u32, max: u32) -> Result<u32, SpecError> {
    match value.parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(SpecError::BadOption {
            part: part.to_string(),
            reason: format!("expected a whole number from {min} to {max}, got '{value}'"),
        }),
    }
}

fn parse_mem(part: &str, value: &str) -> Result<u64, SpecError> {
    match tessera_host::parse_size_mib(value) {
        Ok(mib) if mib <= MAX_MEM_MIB => Ok(mib),
        Ok(_) => Err(SpecError::BadOption {
            part: part.to_string(),
            reason: format!("at most {} of host memory", tessera_host::format_mib(MAX_MEM_MIB)),
        }),
        Err(e) => Err(SpecError::BadOption { part: part.to_string(), reason: e.to_string() }),
    }
}

fn parse_switch(part: &str, value: &str) -> Result<bool, SpecError> {
    match value.to_ascii_lowercase().as_str() {
        "on" | "true" | "1" | "enabled" => Ok(true),
        "off" | "false" | "0" | "disabled" => Ok(false),
        _ => Err(SpecError::BadOption { part: part.to_string(), reason: format!("expected on or off, got '{value}'") }),
    }
}

/// `00000000:18:00.0` … as on a DGX H100; GPUs past the eighth repeat the buses in the next
/// PCI domain.
fn pci_bus_id(index: u32) -> String {
    let bus = DGX_H100_BUSES[(index % 8) as usize];
    format!("{:08X}:{bus:02X}:00.0", index / 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_spec_is_dgx_h100() {
        let s = NodeSpec::default();
        assert_eq!(s.to_string(), "8xH100-80GB,numa=2");
        assert_eq!(s.gpu_count(), 8);
        assert!(s.mig_enabled());
        let d = s.devices();
        let buses: Vec<&str> = d.iter().map(|d| d.pci_bus_id.as_str()).collect();
        assert_eq!(
            buses,
            [
                "00000000:18:00.0",
                "00000000:2A:00.0",
                "00000000:3A:00.0",
                "00000000:5D:00.0",
                "00000000:9A:00.0",
                "00000000:AB:00.0",
                "00000000:BA:00.0",
                "00000000:DB:00.0"
            ]
        );
        assert_eq!(d.iter().map(|d| d.numa_node).collect::<Vec<_>>(), [0, 0, 0, 0, 1, 1, 1, 1].map(Some));
        // A DGX H100's host, never the machine's: 2 × 56 cores with two threads, 2 TiB.
        assert_eq!(d[0].local_cpus, (0..112).collect::<Vec<u32>>());
        assert_eq!(d[7].local_cpus, (112..224).collect::<Vec<u32>>());
        assert_eq!((s.cpus(), s.memory_mib()), (224, 2 << 20));
        assert_eq!(s.host_nodes().map(|n| s.memory_of_node(n)).collect::<Vec<_>>(), [1 << 20, 1 << 20]);
        assert_eq!(s, NodeSpec::parse("8xH100-80GB,numa=2,cpus=224,mem=2TiB").unwrap());
        assert!(d.iter().all(|d| d.name == "NVIDIA H100 80GB HBM3" && d.pci_device_id == 0x2330));
        assert!(d.iter().zip(0u32..).all(|(d, i)| d.index == i && d.minor_number == i));
        let mut uuids: Vec<&str> = d.iter().map(|d| d.uuid.as_str()).collect();
        assert!(uuids.iter().all(|u| ids::is_uuid_with_prefix(u, "GPU-")));
        uuids.sort();
        uuids.dedup();
        assert_eq!(uuids.len(), 8);
        // Deterministic.
        assert_eq!(d, NodeSpec::default().devices());
    }

    #[test]
    fn subsystem_ids_by_group() {
        let s = NodeSpec::parse("1xH100-80GB:0x16C110DE+1xH100-80GB+1xA30").unwrap();
        let ids: Vec<(u16, u32)> = s.devices().iter().map(|d| (d.pci_device_id, d.pci_subsystem_id)).collect();
        assert_eq!(ids, [(0x2330, 0x16C1_10DE), (0x2330, 0x2330_10DE), (0x20B7, 0x20B7_10DE)]);
        // The UUIDs of a spec without subsystem ids do not change.
        assert_eq!(
            NodeSpec::parse("2xH100-80GB").unwrap().devices()[1].uuid,
            NodeSpec::parse("1xH100-80GB+1xH100-80GB").unwrap().devices()[1].uuid
        );
    }

    #[test]
    fn good_specs_and_their_canonical_form() {
        let table: &[(&str, &str)] = &[
            ("8xH100-80GB,numa=2", "8xH100-80GB,numa=2"),
            ("2xA100-40GB+1xA30,numa=1", "2xA100-40GB+1xA30-24GB,numa=1"),
            ("A30", "1xA30-24GB,numa=1"),
            (
                " 2 x a100-40gb + 1XH100 , NUMA = 2 , cpus=64, mig=OFF ",
                "2xA100-40GB+1xH100-80GB,numa=2,cpus=64,mig=off",
            ),
            ("1xA100-40GB+1xA100-40GB", "2xA100-40GB,numa=1"),
            ("1xA30,mig-op-ms=250", "1xA30-24GB,numa=1,mig-op-ms=250"),
            ("1xA100-40GB,gpu-reset=off,mig=off", "1xA100-40GB,numa=1,mig=off,gpu-reset=off"),
            ("4xRTX-PRO-6000,mig=on,cpus=224", "4xRTX-PRO-6000,numa=1"),
            ("4xRTX-PRO-6000,cpus=112,mem=2048GiB", "4xRTX-PRO-6000,numa=1,cpus=112"),
            ("8xH100-80GB,numa=2,mem=1.5TiB,cpus=224", "8xH100-80GB,numa=2,mem=1536GiB"),
            ("1xA30,mem=1000MiB", "1xA30-24GB,numa=1,mem=1000MiB"),
            ("1xA30,mem=64GB", "1xA30-24GB,numa=1,mem=61036MiB"),
            ("1xNVIDIA A100-SXM4-40GB", "1xA100-40GB,numa=1"),
            ("2x0x2330,numa=0", "2xH100-80GB,numa=0"),
            ("1xH100-80GB:0x16c110de+1xH100", "1xH100-80GB:0x16C110DE+1xH100-80GB,numa=1"),
            ("1xH100-80GB : 0x16C110DE+1xH100-80GB:0x16C110DE", "2xH100-80GB:0x16C110DE,numa=1"),
            (
                "1xA100-40GB+1xH100-80GB+1xA30-24GB+1xRTX-PRO-6000,numa=2,mig=on",
                "1xA100-40GB+1xH100-80GB+1xA30-24GB+1xRTX-PRO-6000,numa=2",
            ),
        ];
        for (input, canonical) in table {
            let s = NodeSpec::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(s.to_string(), *canonical, "{input}");
            assert_eq!(NodeSpec::parse(canonical).unwrap(), s, "{input} round trip");
        }
    }

    #[test]
    fn bad_specs_name_the_bad_part() {
        let table: &[(&str, &[&str])] = &[
            ("", &["empty node spec"]),
            ("8xH101-80GB", &["unknown GPU model 'H101-80GB'", "did you mean", "H100-80GB"]),
            ("2xA100-40GB+1xA3O", &["'1xA3O'", "A30"]),
            ("8xRTX6000", &["unknown GPU model 'RTX6000'", "RTX-PRO-6000"]),
            ("0xA30", &["'0xA30'", "between 1 and 32"]),
            ("8H100", &["'8H100'", "<count>x<model>"]),
            ("2xH100-80GB:16C110DE", &["'2xH100-80GB:16C110DE'", "subsystem id", "0x16C110DE", "got '16C110DE'"]),
            ("2xH100-80GB:0x116C110DE", &["subsystem id", "got '0x116C110DE'"]),
            ("2xH100-80GB:", &["subsystem id", "got ''"]),
            ("33xA30", &["33 GPUs", "at most 32"]),
            ("8xH100-80GB,numa=two", &["'numa=two'", "whole number"]),
            ("8xH100-80GB,numa", &["'numa'", "key=value"]),
            ("8xH100-80GB,nuam=2", &["unknown option 'nuam'", "did you mean 'numa'"]),
            ("8xH100-80GB,mig=maybe", &["'mig=maybe'", "on or off"]),
            ("8xH100-80GB,numa=2,numa=1", &["'numa' is given twice"]),
            ("8xH100-80GB,cpus=0", &["'cpus=0'", "whole number from 1"]),
            ("8xH100-80GB,numa=4,cpus=3", &["cpus=3", "numa=4", "multiple of 4", "cpus=4"]),
            ("8xH100-80GB,numa=2,cpus=225", &["cpus=225", "split evenly", "cpus=226"]),
            ("8xH100-80GB,mem=abc", &["'mem=abc'", "'abc' is not a size", "GiB"]),
            ("8xH100-80GB,mem=2048", &["'mem=2048'", "no unit"]),
            ("8xH100-80GB,mem=2T", &["'mem=2T'", "TB (decimal) or TiB"]),
            ("8xH100-80GB,mem=0GiB", &["'mem=0GiB'", "positive"]),
            ("8xH100-80GB,mem=2PiB", &["'mem=2PiB'", "unknown unit"]),
            ("8xH100-80GB,mem=4096TiB", &["'mem=4096TiB'", "at most 1024TiB"]),
            ("8xH100-80GB,numa=4,mem=2MiB", &["mem=2MiB", "numa=4"]),
            ("8xH100-80GB,mem=1TiB,mem=2TiB", &["'mem' is given twice"]),
            ("8xH100-80GB,memory=1TiB", &["unknown option 'memory'", "mem=SIZE"]),
            ("8xH100-80GB+", &["empty GPU group"]),
            ("4x", &["'4x'", "no GPU model"]),
            ("99999999999xA30", &["between 1 and 32"]),
        ];
        for (input, needles) in table {
            let e = NodeSpec::parse(input).expect_err(input).to_string();
            for n in *needles {
                assert!(e.contains(n), "{input:?}: {e:?} lacks {n:?}");
            }
        }
    }

    #[test]
    fn numa_spread_and_cpus() {
        let s = NodeSpec::parse("3xA30,numa=2,cpus=8,mem=3MiB").unwrap();
        let d = s.devices();
        assert_eq!(d.iter().map(|d| d.numa_node).collect::<Vec<_>>(), [Some(0), Some(0), Some(1)]);
        assert_eq!(d[0].local_cpus, [0, 1, 2, 3]);
        assert_eq!(d[2].local_cpus, [4, 5, 6, 7]);
        // Memory that does not divide: the first nodes take the rest.
        assert_eq!([s.memory_of_node(0), s.memory_of_node(1), s.memory_of_node(2)], [2, 1, 0]);
        let unknown = NodeSpec::parse("1xA30,numa=0,cpus=4").unwrap();
        let d = unknown.devices();
        assert_eq!(d[0].numa_node, None);
        assert_eq!(d[0].local_cpus, [0, 1, 2, 3]);
        // Unknown NUMA: one node 0 with every CPU and all memory.
        assert_eq!(unknown.host_nodes().collect::<Vec<_>>(), [0]);
        assert_eq!(unknown.memory_of_node(0), 2 << 20);
        let more_nodes_than_gpus = NodeSpec::parse("1xA30,numa=2").unwrap();
        assert_eq!(more_nodes_than_gpus.devices()[0].numa_node, Some(0));
    }

    #[test]
    fn devices_past_eight_and_uuids_depend_on_spec() {
        let s = NodeSpec::parse("10xA30").unwrap();
        let d = s.devices();
        assert_eq!(d[8].pci_bus_id, "00000001:18:00.0");
        assert_eq!(d[9].pci_bus_id, "00000001:2A:00.0");
        let other = NodeSpec::parse("10xA30,numa=2").unwrap().devices();
        assert_ne!(d[0].uuid, other[0].uuid);
    }

    #[test]
    fn memory_fallbacks() {
        for m in &catalog().models {
            assert!(m.total_memory_mib() > 0, "{}", m.name);
        }
    }

    #[test]
    fn serde_as_string() {
        let s = NodeSpec::parse("2xA30,numa=2").unwrap();
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(j, "\"2xA30-24GB,numa=2\"");
        assert_eq!(serde_json::from_str::<NodeSpec>(&j).unwrap(), s);
        assert!(serde_json::from_str::<NodeSpec>("\"9xNOPE\"").is_err());
    }
}
