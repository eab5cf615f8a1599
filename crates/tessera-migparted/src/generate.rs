//! `generate-config`: the named configs a node's GPUs support, built by mig-parted's rules
//! (`pkg/mig/builder/builder.go` and `balanced.go`) from the catalog models of its GPUs.
//!
//! * `all-disabled` and `all-enabled` (MIG on, no devices), always.
//! * `all-balanced`: per PCI device id, two of the 1g, one of the 2g and (on a 7-slice GPU) one of
//!   the 3g profile without attributes, each the one with the most instances; a device id that
//!   lacks one of them gets no entry, and the config is left out when none has one.
//! * `all-<profile>` (`+` written `.`, so `all-1g.10gb.me`) for every GPU-instance profile, each
//!   GPU filled with its model's maximum count; device ids with different maxima get entries of
//!   their own, ascending by count.
//!
//! Entries name their device ids in `device-filter` only when the node has more than one.

use std::collections::{BTreeMap, BTreeSet};

use tessera_mig::{GpuModel, Profile};

use crate::error::Pos;
use crate::resolve::DeviceSummary;
use crate::spec::{DeviceConfig, DeviceFilter, DeviceSelector, MigConfigFile, NamedConfig, VERSION};

/// The origin a generated file names.
pub const GENERATED_ORIGIN: &str = "<generate-config>";

/// Why no config can be generated for the node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenerateError {
    /// No GPU of the node is a MIG-capable model Tessera knows.
    #[error(
        "no MIG-capable GPU found: none of the node's {gpus} GPU(s) is a model with MIG profiles in Tessera's catalog{}",
        unknown_ids(.unknown)
    )]
    NoMigCapableGpus { gpus: usize, unknown: Vec<u16> },
}

fn unknown_ids(ids: &[u16]) -> String {
    if ids.is_empty() {
        return String::new();
    }
    let ids: Vec<String> = ids.iter().map(|d| format!("0x{d:04X}")).collect();
    format!(" (unknown PCI device ids: {})", ids.join(", "))
}

/// mig-parted's `all-balanced` mix: instances per profile size (1g, 2g, 3g), by the GPU's
/// largest profile size (7 or 4 slices).
fn balanced_formula(total_slices: u8) -> Option<&'static [(u8, u32)]> {
    match total_slices {
        7 => Some(&[(1, 2), (2, 1), (3, 1)]),
        4 => Some(&[(1, 2), (2, 1)]),
        _ => None,
    }
}

/// The named configs the node's GPUs support, as mig-parted's `generate-config` writes them.
/// GPUs whose model Tessera does not know, or that have no MIG profiles, are left out, as
/// mig-parted leaves out GPUs that are not MIG-capable.
pub fn generate_config(devices: &[DeviceSummary]) -> Result<MigConfigFile, GenerateError> {
    // One model per device id; mig-parted keys everything by device id.
    let by_id: BTreeMap<u16, &'static GpuModel> = devices
        .iter()
        .filter_map(|d| d.model.filter(|m| !m.profiles.is_empty()).map(|m| (d.pci_device_id, m)))
        .collect();
    if by_id.is_empty() {
        let unknown: BTreeSet<u16> = devices.iter().filter(|d| d.model.is_none()).map(|d| d.pci_device_id).collect();
        return Err(GenerateError::NoMigCapableGpus { gpus: devices.len(), unknown: unknown.into_iter().collect() });
    }
    let filtered = by_id.len() > 1;
    let entry = |ids: &[u16], mig_devices: Vec<(String, u32)>| {
        let mut e = DeviceConfig::enabled(DeviceSelector::All, mig_devices);
        if filtered {
            e.device_filter = ids.iter().map(|d| DeviceFilter::device(*d)).collect();
            e.device_filter_pos = vec![Pos::START; ids.len()];
        }
        e
    };

    let mut configs: BTreeMap<String, Vec<DeviceConfig>> = BTreeMap::new();
    configs.insert("all-disabled".into(), vec![DeviceConfig::disabled(DeviceSelector::All)]);
    configs.insert("all-enabled".into(), vec![DeviceConfig::enabled(DeviceSelector::All, Vec::new())]);

    let balanced: Vec<DeviceConfig> =
        by_id.iter().filter_map(|(id, model)| balanced_devices(model).map(|d| entry(&[*id], d))).collect();
    if !balanced.is_empty() {
        configs.insert("all-balanced".into(), balanced);
    }

    // Profile name → max count → device ids.
    let mut per_profile: BTreeMap<&str, BTreeMap<u8, Vec<u16>>> = BTreeMap::new();
    for (id, model) in &by_id {
        for p in &model.profiles {
            per_profile.entry(p.name.as_str()).or_default().entry(p.max_count).or_default().push(*id);
        }
    }
    for (profile, by_count) in per_profile {
        let entries =
            by_count.iter().map(|(count, ids)| entry(ids, vec![(profile.to_string(), u32::from(*count))])).collect();
        configs.insert(format!("all-{}", profile.replace('+', ".")), entries);
    }

    Ok(MigConfigFile {
        origin: GENERATED_ORIGIN.to_string(),
        version: VERSION.to_string(),
        configs_pos: Pos::START,
        configs: configs.into_iter().map(|(name, entries)| (name, NamedConfig { pos: Pos::START, entries })).collect(),
    })
}

/// The `all-balanced` devices of one model, sorted by name as mig-parted writes them; `None`
/// when the model lacks a profile the mix needs.
fn balanced_devices(model: &GpuModel) -> Option<Vec<(String, u32)>> {
    let base: Vec<&Profile> = {
        let mut v: Vec<&Profile> = model.profiles.iter().filter(|p| !p.name.contains(['+', '-'])).collect();
        // NVML's order, in which mig-parted meets them (the first of equal counts is kept).
        v.sort_by_key(|p| p.nvml_index.unwrap_or(u32::MAX));
        v
    };
    let total = base.iter().map(|p| p.compute_slices).max()?;
    let mut out = Vec::new();
    for (slices, count) in balanced_formula(total)? {
        let mut best: Option<&Profile> = None;
        for p in base.iter().filter(|p| p.compute_slices == *slices) {
            if best.is_none_or(|b| p.max_count > b.max_count) {
                best = Some(p);
            }
        }
        out.push((best?.name.clone(), *count));
    }
    out.sort();
    Some(out)
}
