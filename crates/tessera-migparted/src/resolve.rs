//! Applying one named config to a node: which GPU gets which MIG devices.
//!
//! mig-parted's selection rules: an entry applies to a GPU when `devices` selects its index and,
//! with a `device-filter`, its PCI device id is listed. An index the node does not have is
//! skipped, as mig-parted does (one file serves 4- and 8-GPU nodes); [`Resolution::absent`]
//! names them so the caller can say so. GPUs no entry selects are [`Resolution::unmatched`]:
//! apply leaves them alone and assert fails on them, as mig-parted's do.
//! Tessera is stricter where mig-parted would fail late or silently: a GPU two entries claim, a
//! device type the GPU's model lacks, or MIG devices that cannot all be placed are errors here,
//! at the line of the file that causes them.

use std::collections::{BTreeMap, BTreeSet};

use tessera_mig::catalog::closest;
use tessera_mig::{ComputeShape, GpuModel, Planner, Profile, WantedInstance};

use crate::error::{ConfigError, ConfigErrorKind, Pos};
use crate::spec::{DeviceConfig, DeviceSelector, MigConfigFile};

/// More MIG devices than this on one GPU are refused without running the planner: no GPU holds
/// more than 8 GPU instances, and the planner's search for an alternative grows with the list.
const MAX_PLANNED_DEVICES: u64 = 16;

/// What `resolve` needs to know about one GPU of the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceSummary {
    /// The GPU index (`nvidia-smi -i`), as `devices: [..]` names it.
    pub index: u32,
    /// The PCI device id, as `device-filter` names it (`0x2330` for `0x233010DE`).
    pub pci_device_id: u16,
    /// The catalog model, when Tessera knows it.
    pub model: Option<&'static GpuModel>,
}

/// The MIG state one GPU should have under the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceTarget {
    pub index: u32,
    pub model: Option<&'static GpuModel>,
    pub mig_enabled: bool,
    /// The GPU instances to create, sorted by profile id then compute shape (empty when MIG is
    /// disabled). A `<C>c.<G>g.<GB>gb` device is its GI profile with `ComputeShape::Slices(C)`.
    pub wanted: Vec<WantedInstance>,
    /// The entry of the config this comes from.
    pub entry: Pos,
}

/// What one named config means on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The MIG state of each GPU the config selects, by index.
    pub targets: Vec<DeviceTarget>,
    /// GPU indices that entries name but the node lacks, ascending: skipped, as mig-parted does.
    pub absent: Vec<u32>,
    /// GPUs of the node that no entry selects, ascending: mig-parted's assert fails on them and
    /// its apply leaves them as they are.
    pub unmatched: Vec<u32>,
}

/// The MIG state of each GPU of the node that the config `config_name` selects, by index
/// ([`resolve_node`] without the skipped and unmatched indices).
pub fn resolve(
    file: &MigConfigFile,
    config_name: &str,
    devices: &[DeviceSummary],
) -> Result<Vec<DeviceTarget>, ConfigError> {
    resolve_node(file, config_name, devices).map(|r| r.targets)
}

/// The config `config_name` on a node with these GPUs: the targets, the absent indices the
/// config names and the GPUs it leaves unmatched.
pub fn resolve_node(
    file: &MigConfigFile,
    config_name: &str,
    devices: &[DeviceSummary],
) -> Result<Resolution, ConfigError> {
    let err = |pos: Pos, kind: ConfigErrorKind| ConfigError::new(&file.origin, pos, kind);
    let Some(config) = file.configs.get(config_name) else {
        let names = file.config_names();
        return Err(err(
            file.configs_pos,
            ConfigErrorKind::UnknownConfig {
                name: config_name.to_string(),
                known: names.iter().map(ToString::to_string).collect(),
                suggestions: closest(config_name, &names).into_iter().take(1).collect(),
            },
        ));
    };

    let present: BTreeSet<u32> = devices.iter().map(|d| d.index).collect();
    let absent: BTreeSet<u32> = config
        .entries
        .iter()
        .flat_map(|entry| match &entry.devices {
            DeviceSelector::Indices(list) => list.as_slice(),
            DeviceSelector::All => &[],
        })
        .filter(|i| !present.contains(i))
        .copied()
        .collect();

    let mut sorted: Vec<&DeviceSummary> = devices.iter().collect();
    sorted.sort_by_key(|d| d.index);
    let mut planners: Planners = BTreeMap::new();
    let mut targets = Vec::new();
    let mut unmatched = Vec::new();
    for gpu in sorted {
        let mut matching = config.entries.iter().filter(|e| e.applies_to(gpu.index, gpu.pci_device_id));
        let Some(entry) = matching.next() else {
            unmatched.push(gpu.index);
            continue;
        };
        if let Some(second) = matching.next() {
            return Err(err(
                second.pos,
                ConfigErrorKind::OverlappingEntries {
                    config: config_name.to_string(),
                    index: gpu.index,
                    first: entry.pos,
                    second: second.pos,
                },
            ));
        }
        targets.push(target(file, gpu, entry, &mut planners)?);
    }
    Ok(Resolution { targets, absent: absent.into_iter().collect(), unmatched })
}

/// One planner per model of the node (building one precomputes tables), by model name.
type Planners = BTreeMap<&'static str, Planner<'static>>;

fn target(
    file: &MigConfigFile,
    gpu: &DeviceSummary,
    entry: &DeviceConfig,
    planners: &mut Planners,
) -> Result<DeviceTarget, ConfigError> {
    let err = |pos: Pos, kind: ConfigErrorKind| ConfigError::new(&file.origin, pos, kind);
    let mut out = DeviceTarget {
        index: gpu.index,
        model: gpu.model,
        mig_enabled: entry.mig_enabled,
        wanted: Vec::new(),
        entry: entry.pos,
    };
    if !entry.mig_enabled {
        return Ok(out);
    }
    let Some(model) = gpu.model else {
        return Err(err(
            entry.pos,
            ConfigErrorKind::UnknownModel { index: gpu.index, pci_device_id: gpu.pci_device_id },
        ));
    };
    let mut counts: BTreeMap<WantedInstance, u64> = BTreeMap::new();
    for (i, (name, count)) in entry.mig_devices.iter().enumerate() {
        let (profile, compute) =
            device_type(model, gpu.index, name).map_err(|kind| err(entry.mig_device_pos(i), kind))?;
        *counts.entry(WantedInstance { profile_id: profile.id, compute }).or_default() += u64::from(*count);
    }
    let total: u64 = counts.values().sum();
    if total > MAX_PLANNED_DEVICES {
        return Err(err(
            entry.pos,
            ConfigErrorKind::Infeasible {
                index: gpu.index,
                model: model.name.clone(),
                detail: format!(
                    "{total} MIG devices asked but one {} holds at most {} GPU instances",
                    model.name, model.max_gpu_instances
                ),
            },
        ));
    }
    let wanted: Vec<WantedInstance> =
        counts.iter().flat_map(|(w, n)| std::iter::repeat_n(*w, usize::try_from(*n).unwrap_or(0))).collect();
    if !wanted.is_empty() {
        let planner = planners.entry(model.name.as_str()).or_insert_with(|| Planner::new(model));
        planner.place(&wanted, &[]).map_err(|e| {
            err(
                entry.pos,
                ConfigErrorKind::Infeasible { index: gpu.index, model: model.name.clone(), detail: e.to_string() },
            )
        })?;
    }
    out.wanted = wanted;
    Ok(out)
}

/// A `mig-devices` key on a model: `3g.40gb` (a GPU instance with one full compute instance) or
/// `1c.3g.40gb` (a 3g GPU instance with one compute instance of 1 slice).
pub fn device_type<'m>(
    model: &'m GpuModel,
    index: u32,
    name: &str,
) -> Result<(&'m Profile, ComputeShape), ConfigErrorKind> {
    let unknown = |suggestions: Vec<String>| ConfigErrorKind::UnknownProfile {
        index,
        model: model.name.clone(),
        name: name.to_string(),
        suggestions,
    };
    let trimmed = name.trim();
    let whole = match gi_profile(model, trimmed) {
        Ok(p) => return Ok((p, ComputeShape::Full)),
        Err(suggestions) => suggestions,
    };
    let Some((slices, rest)) = split_compute_prefix(trimmed) else {
        return Err(unknown(whole));
    };
    let profile =
        gi_profile(model, rest).map_err(|s| unknown(s.into_iter().map(|p| format!("{slices}c.{p}")).collect()))?;
    if slices == u32::from(profile.compute_slices) {
        return Ok((profile, ComputeShape::Full));
    }
    let mut offered: Vec<u8> =
        model.compute_instance_profiles(profile.compute_slices).iter().map(|ci| ci.compute_slices).collect();
    offered.push(profile.compute_slices);
    offered.sort_unstable();
    offered.dedup();
    match u8::try_from(slices) {
        Ok(c) if c > 0 && offered.contains(&c) => Ok((profile, ComputeShape::Slices(c))),
        _ => Err(ConfigErrorKind::BadComputeSlices {
            index,
            model: model.name.clone(),
            name: name.to_string(),
            profile: profile.name.clone(),
            slices,
            offered,
        }),
    }
}

/// A GPU-instance profile by name (not by numeric id: mig-parted names device types); on
/// failure, the closest profile name.
fn gi_profile<'m>(model: &'m GpuModel, name: &str) -> Result<&'m Profile, Vec<String>> {
    if let Ok(id) = name.parse::<u32>() {
        return Err(model.profile_by_id(id).map(|p| vec![p.name.clone()]).unwrap_or_default());
    }
    model.profile(name).map_err(|_| {
        let names: Vec<&str> = model.profiles.iter().map(|p| p.name.as_str()).collect();
        closest(name, &names).into_iter().take(1).collect()
    })
}

/// `1c.3g.40gb` → `(1, "3g.40gb")`.
fn split_compute_prefix(name: &str) -> Option<(u32, &str)> {
    let (head, rest) = name.split_once('.')?;
    let digits = head.strip_suffix('c').or_else(|| head.strip_suffix('C'))?;
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some((digits.parse().ok()?, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compute_prefix() {
        assert_eq!(split_compute_prefix("1c.3g.40gb"), Some((1, "3g.40gb")));
        assert_eq!(split_compute_prefix("3g.40gb"), None);
        assert_eq!(split_compute_prefix("c.3g.40gb"), None);
    }

    #[test]
    fn device_types_on_a100() {
        let a100 = tessera_mig::catalog().model("A100-40GB").unwrap();
        let (p, c) = device_type(a100, 0, "1c.4g.20gb").unwrap();
        assert_eq!((p.name.as_str(), c), ("4g.20gb", ComputeShape::Slices(1)));
        let (p, c) = device_type(a100, 0, "4c.4g.20gb").unwrap();
        assert_eq!((p.name.as_str(), c), ("4g.20gb", ComputeShape::Full));
        assert!(matches!(device_type(a100, 0, "3c.4g.20gb"), Err(ConfigErrorKind::BadComputeSlices { .. })));
        let e = device_type(a100, 0, "9").unwrap_err().to_string();
        assert!(e.contains("did you mean '3g.20gb'"), "{e}");
        let e = device_type(a100, 0, "1c.3g.20g").unwrap_err().to_string();
        assert!(e.contains("did you mean '1c.3g.20gb'"), "{e}");
    }
}
