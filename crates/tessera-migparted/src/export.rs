//! Writing a node's current MIG state as a mig-parted config (mig-parted's `export` verb).
//!
//! GPUs with identical state share one entry (`devices: [..]`, or `all` when every GPU is in
//! it), so the output reads like a hand-written config. It parses back with [`crate::parse`] and
//! resolves with [`crate::resolve`] to the same state; the crate's tests check that round trip.
//!
//! Device types are counted as mig-parted's `GetMigConfig` counts them: every compute instance
//! of every GPU instance by its own type ([`compute_instance_types`]), so a 3g.20gb GPU
//! instance with three 1-slice compute instances is `"1c.3g.20gb": 3`. Where mig-parted's
//! grouping would read the counts back as other GPU instances, [`regrouped`] says which.

use std::collections::BTreeMap;

use tessera_mig::layout::ci_type_name;
use tessera_mig::{ComputeShape, GpuModel, Profile, WantedInstance};

use crate::error::Pos;
use crate::resolve::group_compute_instances;
use crate::spec::{DeviceConfig, DeviceSelector, MigConfigFile, NamedConfig, VERSION};

/// The mig-parted device type of each compute instance of a `profile` GPU instance of shape
/// `compute`, largest first: `["3g.20gb"]`, `["1c.3g.20gb"; 3]`; none for `Other`.
pub fn compute_instance_types(profile: &Profile, compute: ComputeShape) -> Vec<String> {
    compute.ci_sizes(profile.compute_slices).unwrap_or_default().into_iter().map(|c| ci_type_name(profile, c)).collect()
}

/// The GPU instances mig-parted's grouping makes of the compute instances of `instances` (each
/// GPU instance's profile and its compute instances' sizes; those without any are left out, as
/// their export leaves them out), when they are not `instances` again (in any order): applying
/// the export would then change the GPU. `None` when the export reads back as it is.
pub fn regrouped(model: &GpuModel, instances: &[(&Profile, Vec<u8>)]) -> Option<Vec<WantedInstance>> {
    let mut have: Vec<WantedInstance> = Vec::new();
    let mut cis: Vec<(&Profile, u8)> = Vec::new();
    for (p, sizes) in instances.iter().filter(|(_, sizes)| !sizes.is_empty()) {
        let compute = ComputeShape::from_sizes(p.compute_slices, sizes).unwrap_or(ComputeShape::Other);
        let compute = match compute {
            ComputeShape::Split(s) if tessera_mig::layout::ci_placements(model, p, s.as_slice()).is_err() => {
                ComputeShape::Other
            }
            c => c,
        };
        have.push(WantedInstance { profile_id: p.id, compute });
        cis.extend(sizes.iter().map(|&c| (*p, c)));
    }
    let mut made = group_compute_instances(model, &cis);
    have.sort();
    made.sort();
    (made != have).then_some(made)
}

/// One GPU's current MIG state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportDevice {
    pub index: u32,
    pub mig_enabled: bool,
    /// Device types and counts (`3g.40gb`, `1c.3g.40gb`; see `tessera_mig::layout::device_type_name`).
    /// Repeated names are added up, zero counts dropped; ignored when MIG is disabled.
    pub device_types: Vec<(String, u32)>,
}

/// The current state of `devices` as a mig-parted config file with one config, `config_name`.
pub fn export(devices: &[ExportDevice], config_name: &str) -> String {
    export_config(devices, config_name).to_yaml()
}

/// A GPU's MIG state as exported: MIG on or off, and its device types with counts.
type State = (bool, Vec<(String, u32)>);

/// The same as [`export`], as a parsed structure (locations are unknown: `Pos::START`).
pub fn export_config(devices: &[ExportDevice], config_name: &str) -> MigConfigFile {
    let mut sorted: Vec<&ExportDevice> = devices.iter().collect();
    sorted.sort_by_key(|d| d.index);
    // Groups of identical state, in order of their lowest index.
    let mut groups: Vec<(State, Vec<u32>)> = Vec::new();
    for d in sorted {
        let state = (d.mig_enabled, normalized(d));
        match groups.iter_mut().find(|(s, _)| *s == state) {
            Some((_, indices)) => {
                if !indices.contains(&d.index) {
                    indices.push(d.index);
                }
            }
            None => groups.push((state, vec![d.index])),
        }
    }
    let entries: Vec<DeviceConfig> = if groups.is_empty() {
        vec![DeviceConfig::disabled(DeviceSelector::Indices(Vec::new()))]
    } else {
        let single = groups.len() == 1;
        groups
            .into_iter()
            .map(|((enabled, types), indices)| {
                let selector = if single { DeviceSelector::All } else { DeviceSelector::Indices(indices) };
                if enabled { DeviceConfig::enabled(selector, types) } else { DeviceConfig::disabled(selector) }
            })
            .collect()
    };
    let mut configs = BTreeMap::new();
    configs.insert(config_name.to_string(), NamedConfig { pos: Pos::START, entries });
    MigConfigFile { origin: "<export>".to_string(), version: VERSION.to_string(), configs_pos: Pos::START, configs }
}

fn normalized(d: &ExportDevice) -> Vec<(String, u32)> {
    if !d.mig_enabled {
        return Vec::new();
    }
    let mut merged: BTreeMap<&str, u32> = BTreeMap::new();
    for (name, count) in &d.device_types {
        let slot = merged.entry(name.as_str()).or_default();
        *slot = slot.saturating_add(*count);
    }
    merged.into_iter().filter(|(_, n)| *n > 0).map(|(name, n)| (name.to_string(), n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_identical_gpus() {
        let devices = vec![
            ExportDevice { index: 1, mig_enabled: true, device_types: vec![("3g.40gb".into(), 2)] },
            ExportDevice {
                index: 0,
                mig_enabled: true,
                device_types: vec![("3g.40gb".into(), 1), ("3g.40gb".into(), 1)],
            },
            ExportDevice { index: 2, mig_enabled: false, device_types: vec![] },
        ];
        let yaml = export(&devices, "current");
        assert_eq!(
            yaml,
            "version: v1\nmig-configs:\n  current:\n    - devices: [0, 1]\n      mig-enabled: true\n      mig-devices:\n        \"3g.40gb\": 2\n    - devices: [2]\n      mig-enabled: false\n"
        );
    }

    #[test]
    fn all_when_one_group() {
        let devices = vec![
            ExportDevice { index: 0, mig_enabled: true, device_types: vec![] },
            ExportDevice { index: 1, mig_enabled: true, device_types: vec![("1g.10gb".into(), 0)] },
        ];
        let yaml = export(&devices, "current");
        assert!(yaml.contains("- devices: all\n      mig-enabled: true\n      mig-devices: {}\n"), "{yaml}");
    }
}
