//! Applying one named config to a node: which GPU gets which MIG devices.
//!
//! mig-parted's selection rules: an entry applies to a GPU when `devices` selects its index and,
//! with a `device-filter`, its PCI device id (and, where the filter names one, its board's
//! subsystem id) is listed. An index the node does not have is
//! skipped, as mig-parted does (one file serves 4- and 8-GPU nodes); [`Resolution::absent`]
//! names them so the caller can say so. GPUs no entry selects are [`Resolution::unmatched`]:
//! apply leaves them alone and assert fails on them, as mig-parted's do.
//! Tessera is stricter where mig-parted would fail late or silently: a GPU two entries claim, a
//! device type the GPU's model lacks, or MIG devices that cannot all be placed are errors here,
//! at the line of the file that causes them.

use std::collections::{BTreeMap, BTreeSet};

use tessera_mig::catalog::closest;
use tessera_mig::layout::{ci_placements, device_type_name};
use tessera_mig::{ComputeShape, GpuModel, Planner, Profile, WantedInstance};

use crate::error::{ConfigError, ConfigErrorKind, Pos};
use crate::spec::{DeviceConfig, DeviceSelector, MigConfigFile};

/// What `resolve` needs to know about one GPU of the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceSummary {
    /// The GPU index (`nvidia-smi -i`), as `devices: [..]` names it.
    pub index: u32,
    /// The PCI device id, as `device-filter` names it (`0x2330` for `0x233010DE`).
    pub pci_device_id: u16,
    /// The board's PCI subsystem id, `(subsystem device << 16) | subsystem vendor` as NVML's
    /// `pciSubSystemId` gives it (`0x16C110DE`); a `device-filter` with `:` matches on it. 0 when
    /// unknown, which only a filter naming subsystem 0 matches, as in mig-parted.
    pub pci_subsystem_id: u32,
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
    /// disabled): the config's compute instances grouped into GPU instances as mig-parted groups
    /// them ([`group_compute_instances`]), so `"1c.3g.20gb": 3` is one 3g.20gb GPU instance
    /// with `ComputeShape::Split([1, 1, 1])`, and a lone `1c.3g.20gb` is `Slices(1)`.
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
        let mut matching =
            config.entries.iter().filter(|e| e.applies_to(gpu.index, gpu.pci_device_id, gpu.pci_subsystem_id));
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
    // Every compute instance asked for, as (GPU-instance profile, compute slices).
    let mut asked: Vec<(&'static Profile, u8, u64)> = Vec::new();
    for (i, (name, count)) in entry.mig_devices.iter().enumerate() {
        let (profile, compute) =
            device_type(model, gpu.index, name).map_err(|kind| err(entry.mig_device_pos(i), kind))?;
        let slices = match compute {
            ComputeShape::Slices(c) => c,
            _ => profile.compute_slices,
        };
        asked.push((profile, slices, u64::from(*count)));
    }
    let total: u64 = asked.iter().map(|(_, _, n)| n).sum();
    // Each MIG device is a compute instance of at least one compute slice.
    if total > u64::from(model.compute_slices) {
        return Err(err(
            entry.pos,
            ConfigErrorKind::Infeasible {
                index: gpu.index,
                model: model.name.clone(),
                detail: format!(
                    "{total} MIG devices asked but one {} holds at most {} (each is a compute instance of at least \
                     one of its {} compute slices)",
                    model.name, model.compute_slices, model.compute_slices
                ),
            },
        ));
    }
    let cis: Vec<(&Profile, u8)> =
        asked.iter().flat_map(|(p, c, n)| std::iter::repeat_n((*p, *c), usize::try_from(*n).unwrap_or(0))).collect();
    let mut wanted = group_compute_instances(model, &cis);
    if !wanted.is_empty() {
        let planner = planners.entry(model.name.as_str()).or_insert_with(|| Planner::new(model));
        planner.place(&wanted, &[]).map_err(|e| {
            let grouped = wanted.len() < cis.len();
            let detail = if grouped {
                let gis: Vec<String> = wanted
                    .iter()
                    .filter_map(|w| model.profile_by_id(w.profile_id).map(|p| device_type_name(p, w.compute)))
                    .collect();
                format!(
                    "{e}; as mig-parted groups them, the {} compute instances make {} GPU instances: {}",
                    cis.len(),
                    wanted.len(),
                    gis.join("; ")
                )
            } else {
                e.to_string()
            };
            err(entry.pos, ConfigErrorKind::Infeasible { index: gpu.index, model: model.name.clone(), detail })
        })?;
    }
    wanted.sort();
    out.wanted = wanted;
    Ok(out)
}

/// The GPU instances mig-parted makes for these compute instances (GPU-instance profile,
/// compute slices), in the order it makes them. Its `SetMigConfig` sorts them as
/// `MigConfig.Flatten` does (GPU-instance compute slices descending, then compute-instance
/// slices descending, then attributes descending; Tessera then orders by profile id so that one
/// profile's compute instances stay together, where mig-parted's order is a map's) and walks the
/// list, adding each to the GPU instance made last while it has the same profile and the
/// compute instance still fits there (`tessera_mig::layout::ci_placements`: the driver's
/// placement rule), else making a new GPU instance.
pub fn group_compute_instances(model: &GpuModel, cis: &[(&Profile, u8)]) -> Vec<WantedInstance> {
    let attributes = |p: &Profile| p.name.split_once('+').map_or(String::new(), |(_, a)| a.to_string());
    let mut sorted: Vec<(&Profile, u8)> = cis.to_vec();
    sorted.sort_by(|(pa, ca), (pb, cb)| {
        (pb.compute_slices, cb, attributes(pb), std::cmp::Reverse(pb.id)).cmp(&(
            pa.compute_slices,
            ca,
            attributes(pa),
            std::cmp::Reverse(pa.id),
        ))
    });
    let mut groups: Vec<(&Profile, Vec<u8>)> = Vec::new();
    for (p, c) in sorted {
        if let Some((last, sizes)) = groups.last_mut()
            && last.id == p.id
        {
            let mut with = sizes.clone();
            with.push(c);
            if ci_placements(model, p, &with).is_ok() {
                *sizes = with;
                continue;
            }
        }
        groups.push((p, vec![c]));
    }
    groups
        .into_iter()
        .map(|(p, sizes)| WantedInstance {
            profile_id: p.id,
            compute: ComputeShape::from_sizes(p.compute_slices, &sizes).unwrap_or(ComputeShape::Other),
        })
        .collect()
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
    let whole = match gi_profile(model, name) {
        Ok(p) => return Ok((p, ComputeShape::Full)),
        Err(suggestions) => suggestions,
    };
    let Some((slices, rest)) = split_compute_prefix(name) else {
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

/// A GPU-instance profile by the exact name the GPU reports (`p.name`), as mig-parted matches
/// device types against the device's own profiles: not by numeric id, another case or an `aka`
/// alias (GB200's early-firmware `1g.24gb` is not its `1g.23gb`). On failure, the name meant.
fn gi_profile<'m>(model: &'m GpuModel, name: &str) -> Result<&'m Profile, Vec<String>> {
    if let Some(p) = model.profiles.iter().find(|p| p.name == name) {
        return Ok(p);
    }
    if let Ok(id) = name.parse::<u32>() {
        return Err(model.profile_by_id(id).map(|p| vec![p.name.clone()]).unwrap_or_default());
    }
    if let Ok(p) = model.profile(name) {
        return Err(vec![p.name.clone()]);
    }
    let names: Vec<&str> = model.profiles.iter().map(|p| p.name.as_str()).collect();
    Err(closest(name, &names).into_iter().take(1).collect())
}

/// `1c.3g.40gb` → `(1, "3g.40gb")`.
fn split_compute_prefix(name: &str) -> Option<(u32, &str)> {
    let (head, rest) = name.split_once('.')?;
    let digits = head.strip_suffix('c')?;
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

    /// A config's `mig-devices` on one GPU and the GPU instances mig-parted makes of them, each
    /// as `tessera mig gpus` names it.
    type Case = (&'static str, &'static [(&'static str, u32)], &'static [&'static str]);

    #[test]
    fn compute_instances_are_grouped_into_gpu_instances_as_mig_parted_groups_them() {
        let cases: &[Case] = &[
            // The MIG user guide's `-cci 0,0,0`: one GPU instance, three compute instances.
            ("A100-40GB", &[("1c.3g.20gb", 3)], &["1c.3g.20gb ×3"]),
            ("H100-80GB", &[("1c.7g.80gb", 7)], &["1c.7g.80gb ×7"]),
            ("A100-40GB", &[("2c.3g.20gb", 1), ("1c.3g.20gb", 1)], &["2c.3g.20gb + 1c.3g.20gb"]),
            // A full compute instance leaves no room: two GPU instances.
            ("A100-40GB", &[("3g.20gb", 2)], &["3g.20gb", "3g.20gb"]),
            ("H100-80GB", &[("3g.40gb", 1), ("1c.3g.40gb", 2)], &["1c.3g.40gb ×2", "3g.40gb"]),
            // Four 1-slice compute instances: a 3g holds three, the fourth starts another.
            ("A100-40GB", &[("1c.3g.20gb", 4)], &["1c.3g.20gb", "1c.3g.20gb ×3"]),
            // Largest first: the two 2c fill the 4g (at 0 and 2), so the 1c starts another.
            ("A100-40GB", &[("2c.4g.20gb", 2), ("1c.4g.20gb", 1)], &["1c.4g.20gb", "2c.4g.20gb ×2"]),
            // 3c@0 and 2c@4 leave no legal start for a second 2c (0, 2 and 4 are taken): only
            // the first ordering is tried, so it starts a second 7g (mig-parted would go on to
            // try 2c, 2c, 3c; see docs/mig-parted.md).
            ("H100-80GB", &[("3c.7g.80gb", 1), ("2c.7g.80gb", 2)], &["2c.7g.80gb", "3c.7g.80gb + 2c.7g.80gb"]),
            (
                "H100-80GB",
                &[("4c.7g.80gb", 1), ("2c.7g.80gb", 1), ("1c.7g.80gb", 1)],
                &["4c.7g.80gb + 2c.7g.80gb + 1c.7g.80gb"],
            ),
            // Other profiles never share a GPU instance.
            ("H100-80GB", &[("1c.2g.20gb", 2), ("1g.10gb", 3)], &["1g.10gb", "1g.10gb", "1g.10gb", "1c.2g.20gb ×2"]),
        ];
        for (model, devices, want) in cases {
            let m = tessera_mig::catalog().model(model).unwrap();
            let mut cis = Vec::new();
            for (name, n) in *devices {
                let (p, shape) = device_type(m, 0, name).unwrap();
                let c = match shape {
                    ComputeShape::Slices(c) => c,
                    _ => p.compute_slices,
                };
                cis.extend(std::iter::repeat_n((p, c), *n as usize));
            }
            let gis = group_compute_instances(m, &cis);
            let mut names: Vec<String> =
                gis.iter().map(|w| device_type_name(m.profile_by_id(w.profile_id).unwrap(), w.compute)).collect();
            names.sort();
            let mut want: Vec<String> = want.iter().map(ToString::to_string).collect();
            want.sort();
            assert_eq!(names, want, "{model} {devices:?}");
            // Every group is a shape the GPU instance can hold.
            for w in &gis {
                let start = m.profile_by_id(w.profile_id).unwrap().placements[0];
                let inst = tessera_mig::Instance { profile_id: w.profile_id, start, compute: w.compute };
                assert_eq!(tessera_mig::validate(m, &[inst]), [], "{model} {devices:?}");
            }
        }
    }

    #[test]
    fn profile_names_are_matched_exactly() {
        let gb200 = tessera_mig::catalog().model("GB200-186GB").unwrap();
        assert_eq!(device_type(gb200, 0, "1g.23gb").unwrap().0.name, "1g.23gb");
        assert_eq!(device_type(gb200, 0, "1g.23gb+me").unwrap().0.name, "1g.23gb+me");
        let a100 = tessera_mig::catalog().model("A100-40GB").unwrap();
        let cases: &[(&tessera_mig::GpuModel, &str, &str)] = &[
            // The early-firmware alias is not the GPU's name.
            (gb200, "1g.24gb", "did you mean '1g.23gb'"),
            (gb200, "1g.24gb+me", "did you mean '1g.23gb+me'"),
            (a100, "1g.5gb+ME", "did you mean '1g.5gb+me'"),
            (a100, "3G.20GB", "did you mean '3g.20gb'"),
            (a100, " 3g.20gb", "did you mean '3g.20gb'"),
            (a100, "1C.3g.20gb", "did you mean '3g.20gb'"),
        ];
        for (m, name, hint) in cases {
            let e = device_type(m, 0, name).unwrap_err();
            assert!(matches!(e, ConfigErrorKind::UnknownProfile { .. }), "{name}: {e}");
            assert!(e.to_string().contains(hint), "{name}: {e}");
        }
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
