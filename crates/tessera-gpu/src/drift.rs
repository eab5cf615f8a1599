//! Drift between Tessera's catalog and what a GPU's driver reports.
//!
//! The driver is the final word at run time (profiles change names and sizes with firmware and
//! appear with new drivers); the catalog is the cross-check. [`catalog_drift`] lists, in plain
//! lines, every GPU-instance profile or placement the driver reports that the catalog does not
//! know or describes differently, and every catalog profile the driver does not offer (saying
//! when the driver is older than the catalog's `min_driver` for it). Memory sizes are compared
//! loosely (firmware moves them by a few percent); SM and engine counts, which the catalog
//! partly infers, are not compared.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use tessera_mig::{GpuModel, Profile};

use crate::backend::{BackendError, GpuInstanceProfileInfo, MigBackend, PlacementRange};

/// A driver version such as `550.90.07`, or a catalog minimum such as `R470`, compared
/// component by component (`470` is older than `470.42.01`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DriverVersion(Vec<u32>);

impl DriverVersion {
    /// `550.90.07`, `R470`, `r525`; `None` if there is no leading number.
    pub fn parse(text: &str) -> Option<DriverVersion> {
        let t = text.trim();
        let t = t.strip_prefix(['R', 'r']).unwrap_or(t);
        let parts: Vec<u32> = t.split('.').map_while(|p| p.trim().parse().ok()).collect();
        (!parts.is_empty()).then_some(DriverVersion(parts))
    }

    /// The version a catalog `min_driver` text asks for: `R525 (>= 525.85.12)` gives the exact
    /// version in parentheses, `R470` gives 470.
    pub fn required_by(min_driver: &str) -> Option<DriverVersion> {
        if let Some((_, rest)) = min_driver.split_once(">=")
            && let Some(v) = DriverVersion::parse(rest.trim_end_matches(|c: char| !c.is_ascii_digit()))
        {
            return Some(v);
        }
        DriverVersion::parse(min_driver.split_whitespace().next().unwrap_or(""))
    }
}

impl PartialOrd for DriverVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for DriverVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.cmp(&other.0)
    }
}

impl fmt::Display for DriverVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join("."))
    }
}

/// Whether a driver (`nvmlSystemGetDriverVersion`) is older than a profile's `min_driver`:
/// `Some(true)` older, `Some(false)` new enough, `None` when either does not parse.
pub fn driver_older_than(driver: &str, min_driver: &str) -> Option<bool> {
    Some(DriverVersion::parse(driver)? < DriverVersion::required_by(min_driver)?)
}

/// A profile name without the `MIG ` prefix some drivers put on it.
pub fn bare_profile_name(name: &str) -> &str {
    let n = name.trim();
    n.strip_prefix("MIG ").unwrap_or(n)
}

fn name_matches(catalog: &Profile, driver: &str) -> bool {
    let d = bare_profile_name(driver);
    catalog.name.eq_ignore_ascii_case(d) || catalog.aka.iter().any(|a| a.eq_ignore_ascii_case(d))
}

fn starts(placements: &[PlacementRange]) -> String {
    let s: Vec<String> = placements.iter().map(|p| p.start.to_string()).collect();
    format!("{{{}}}", s.join(","))
}

/// The differences between a model's catalog entry and the driver's profiles and placements
/// (`placements` by profile id; a profile missing from it is not compared for placements).
/// `driver_version` words the lines about profiles the driver lacks.
pub fn profile_drift(
    model: &GpuModel,
    driver: &[GpuInstanceProfileInfo],
    placements: &BTreeMap<u32, Vec<PlacementRange>>,
    driver_version: Option<&str>,
) -> Vec<String> {
    let mut out = Vec::new();
    for d in driver {
        let dname = bare_profile_name(&d.name);
        let Some(c) = model.profile_by_id(d.id) else {
            out.push(format!(
                "profile {} ({dname}): reported by the driver, unknown to the catalog of {}; the driver's data is used",
                d.id, model.name
            ));
            continue;
        };
        let mut diffs = Vec::new();
        if !name_matches(c, &d.name) {
            diffs.push(format!("name {dname} (catalog {})", c.name));
        }
        if d.compute_slices != c.compute_slices {
            diffs.push(format!("{} compute slices (catalog {})", d.compute_slices, c.compute_slices));
        }
        if d.max_count != c.max_count {
            diffs.push(format!("at most {} instances (catalog {})", d.max_count, c.max_count));
        }
        if let Some(mib) = c.memory_mib
            && mib > 0
            && d.memory_mib.abs_diff(mib) * 20 > mib
        {
            diffs.push(format!("{} MiB (catalog {mib} MiB)", d.memory_mib));
        }
        if let Some(got) = placements.get(&d.id) {
            let mut got = got.clone();
            got.sort_unstable();
            let mut want: Vec<PlacementRange> =
                c.placements.iter().map(|&start| PlacementRange { start, size: c.placement_size }).collect();
            want.sort_unstable();
            if got != want {
                let size = got.first().map_or(String::new(), |p| format!(":{}", p.size));
                diffs.push(format!(
                    "placements {}{size} (catalog {}:{})",
                    starts(&got),
                    starts(&want),
                    c.placement_size
                ));
            }
        }
        if !diffs.is_empty() {
            out.push(format!("profile {} ({}): {}", d.id, c.name, diffs.join(", ")));
        }
    }
    for c in &model.profiles {
        if driver.iter().any(|d| d.id == c.id) {
            continue;
        }
        let why = match (&c.min_driver, driver_version) {
            (Some(min), Some(v)) if driver_older_than(v, min) == Some(true) => {
                format!("the driver ({v}) is older than the {min} it needs")
            }
            (Some(min), _) => format!("the catalog says it needs {min}"),
            (None, _) => "not offered on this GPU or firmware".to_string(),
        };
        out.push(format!(
            "profile {} ({}): in the catalog of {}, not reported by the driver ({why})",
            c.id, c.name, model.name
        ));
    }
    out
}

/// Read a GPU's profiles and placements from `backend` and compare them with the catalog.
/// `driver_version` words lines about profiles the driver lacks (`NvmlBackend` passes its own).
pub fn catalog_drift(
    backend: &dyn MigBackend,
    gpu: u32,
    driver_version: Option<&str>,
) -> Result<Vec<String>, BackendError> {
    let dev = crate::backend::device_by_index(backend, gpu)?;
    let Some(model) = dev.model() else {
        return Ok(vec![format!(
            "'{}' (PCI device 0x{:04X}) is not in the catalog; its profiles are used as the driver reports them",
            dev.name, dev.pci_device_id
        )]);
    };
    let profiles = backend.gpu_instance_profiles(gpu)?;
    let mut placements = BTreeMap::new();
    for p in &profiles {
        placements.insert(p.id, backend.possible_placements(gpu, p.id)?);
    }
    Ok(profile_drift(model, &profiles, &placements, driver_version))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NodeSpec, SimBackend};

    #[test]
    fn versions_compare() {
        assert_eq!(driver_older_than("460.73.01", "R470"), Some(true));
        assert_eq!(driver_older_than("470.42.01", "R470"), Some(false));
        assert_eq!(driver_older_than("525.60.13", "R525 (>= 525.85.12)"), Some(true));
        assert_eq!(driver_older_than("525.85.12", "R525 (>= 525.85.12)"), Some(false));
        assert_eq!(driver_older_than("580.82.07", "R575 (>= 575.51.03)"), Some(false));
        assert_eq!(driver_older_than("unknown", "R470"), None);
        assert_eq!(DriverVersion::parse("550.90.07").unwrap().to_string(), "550.90.7");
    }

    #[test]
    fn the_simulated_node_does_not_drift() {
        let sim = SimBackend::in_memory(&NodeSpec::parse("1xA100-40GB+1xA30+1xRTX-PRO-6000,mig=on").unwrap());
        for gpu in 0..3 {
            assert_eq!(catalog_drift(&sim, gpu, Some("580.82.07")).unwrap(), Vec::<String>::new(), "GPU {gpu}");
        }
    }

    #[test]
    fn drift_is_listed() {
        let sim = SimBackend::in_memory(&NodeSpec::parse("1xA30,mig=on").unwrap());
        let model = tessera_mig::catalog().model("A30").unwrap();
        let mut profiles = sim.gpu_instance_profiles(0).unwrap();
        let mut placements = BTreeMap::new();
        for p in &profiles {
            placements.insert(p.id, sim.possible_placements(0, p.id).unwrap());
        }
        // An old driver without the +me profiles, a renamed profile, a new profile, moved placements.
        profiles.retain(|p| p.id != 21 && p.id != 6);
        let i = profiles.iter().position(|p| p.id == 14).unwrap();
        profiles[i].name = "MIG 1g.6gb".into();
        let j = profiles.iter().position(|p| p.id == 5).unwrap();
        profiles[j].name = "2g.11gb".into();
        profiles[j].max_count = 3;
        let mut new = profiles[i].clone();
        new.id = 77;
        new.name = "1g.3gb".into();
        profiles.push(new);
        placements.insert(0, vec![PlacementRange { start: 0, size: 4 }, PlacementRange { start: 2, size: 4 }]);
        let lines = profile_drift(model, &profiles, &placements, Some("460.73.01"));
        let text = lines.join("\n");
        assert_eq!(lines.len(), 5, "{text}");
        assert!(text.contains("profile 77 (1g.3gb): reported by the driver, unknown to the catalog"), "{text}");
        assert!(text.contains("profile 5 (2g.12gb): name 2g.11gb (catalog 2g.12gb), at most 3 instances"), "{text}");
        assert!(text.contains("profile 0 (4g.24gb): placements {0,2}:4 (catalog {0}:4)"), "{text}");
        assert!(text.contains("profile 21 (1g.6gb+me)") && text.contains("older than the R470"), "{text}");
        assert!(text.contains("profile 6 (2g.12gb+me)") && text.contains("R525"), "{text}");
        assert!(!text.contains("profile 14"), "the MIG prefix is not drift: {text}");
    }
}
