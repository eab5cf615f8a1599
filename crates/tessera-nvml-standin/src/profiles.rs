//! Profiles as NVML names them: the `NVML_GPU_INSTANCE_PROFILE_*` index of every catalog profile,
//! profile names (`MIG 1g.10gb`, `MIG 1c.3g.40gb`), driver-version gating, and remaining capacity.
//!
//! `nvmlDeviceGetGpuInstanceProfileInfo` takes the *index* (0 = 1 slice, 7 = 1 slice REV1 `+me`,
//! 9 = 1 slice REV2 double memory, …) and returns the profile *id* (19, 20, 15, …). The catalog
//! records the index where the reference did; otherwise it follows from the profile's kind and
//! shape, the way nvml.h defines the constants.

use tessera_mig::catalog::ComputeInstanceProfile;
use tessera_mig::layout::unit_mask;
use tessera_mig::{GpuModel, Instance, Profile, validate};

/// The `NVML_GPU_INSTANCE_PROFILE_*` index of a profile: the catalog's `nvml_index`, else the one
/// its kind and shape imply (`tessera_mig`'s one rule, [`Profile::nvml_profile_index`]). `None`
/// for a shape nvml.h has no constant for.
pub fn nvml_index(p: &Profile) -> Option<u32> {
    p.nvml_profile_index()
}

/// The profile of `model` at an `NVML_GPU_INSTANCE_PROFILE_*` index.
pub fn profile_by_index(model: &GpuModel, index: u32) -> Option<&Profile> {
    model.profile_by_nvml_index(index)
}

/// `MIG 1g.10gb`: the `name` of `nvmlGpuInstanceProfileInfo_v2_t`.
pub fn gi_profile_name(p: &Profile) -> String {
    format!("MIG {}", p.name)
}

/// A compute instance's profile name: the GPU instance's when it takes every compute slice,
/// `<c>c.<gi>` otherwise (`1c.3g.40gb`), as `nvidia-smi mig -lcip` and CUDA print it.
pub fn ci_name(ci_slices: u8, gi: &Profile) -> String {
    if ci_slices == gi.compute_slices { gi.name.clone() } else { format!("{ci_slices}c.{}", gi.name) }
}

/// The major version of a driver version string (`580.65.06` → 580).
pub fn driver_major(version: &str) -> Option<u32> {
    let v = version.trim();
    if v.is_empty() || !v.split('.').all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_digit())) {
        return None;
    }
    v.split('.').next()?.parse().ok()
}

/// The driver branch a catalog `min_driver` text names first (`R525 (>= 525.85.12)` → 525).
pub fn min_driver_major(text: &str) -> Option<u32> {
    let bytes = text.as_bytes();
    (0..bytes.len()).find_map(|i| {
        if bytes[i] != b'R' || (i > 0 && bytes[i - 1].is_ascii_alphanumeric()) {
            return None;
        }
        let digits: String = text[i + 1..].chars().take_while(char::is_ascii_digit).collect();
        if digits.len() >= 3 { digits.parse().ok() } else { None }
    })
}

/// Whether a driver of major version `driver` offers the profile: absent when its catalog
/// `min_driver` names a later branch.
pub fn offered(p: &Profile, driver: u32) -> bool {
    p.min_driver.as_deref().and_then(min_driver_major).is_none_or(|min| min <= driver)
}

/// The CUDA driver version (`cuDriverGetVersion`, 1000·major + 10·minor) a driver branch ships.
pub fn cuda_version(driver: u32) -> i32 {
    const TABLE: &[(u32, i32)] = &[
        (580, 13000),
        (575, 12090),
        (570, 12080),
        (565, 12070),
        (560, 12060),
        (555, 12050),
        (550, 12040),
        (545, 12030),
        (535, 12020),
        (530, 12010),
        (525, 12000),
        (520, 11080),
        (515, 11070),
        (510, 11060),
        (495, 11050),
        (470, 11040),
        (465, 11030),
        (460, 11020),
        (455, 11010),
        (450, 11000),
    ];
    TABLE.iter().find(|(min, _)| driver >= *min).map_or(10020, |(_, cuda)| *cuda)
}

/// How many more instances of `p` fit next to `layout` (`nvmlDeviceGetGpuInstanceRemainingCapacity`).
///
/// Every placement of a profile has the same width on an aligned grid, so taking the lowest free
/// legal start again and again packs the most; per-profile, per-GPU and media-engine limits only
/// ever stop the packing earlier, which [`validate`] checks at each step.
pub fn gi_remaining_capacity(model: &GpuModel, layout: &[Instance], p: &Profile) -> u32 {
    let mut starts: Vec<u8> = p
        .placements
        .iter()
        .copied()
        .filter(|&s| u32::from(s) + u32::from(p.placement_size) <= u32::from(model.placement_units))
        .collect();
    starts.sort_unstable();
    let mut with = layout.to_vec();
    let mut count = 0;
    for start in starts {
        with.push(Instance::new(p.id, start));
        if validate(model, &with).is_empty() {
            count += 1;
        } else {
            with.pop();
        }
    }
    count
}

/// A compute instance that exists, as far as capacity is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CiSlot {
    pub profile_id: u32,
    pub start: u8,
    pub size: u8,
}

/// How many more compute instances of `cp` fit in a GPU instance of `gi_slices` compute slices
/// holding `existing` (`nvmlGpuInstanceGetComputeInstanceRemainingCapacity`), by the simulated
/// node's rules: per-profile maximum, compute slices, lowest free legal placement, 8 ids.
pub fn ci_remaining_capacity(gi_slices: u8, existing: &[CiSlot], cp: &ComputeInstanceProfile) -> u32 {
    const MAX_CI_IDS: usize = 8;
    let mut occupied = existing.iter().fold(0u32, |m, c| m | unit_mask(c.start, c.size));
    let mut used: u32 = existing.iter().map(|c| u32::from(c.size)).sum();
    let mut same = existing.iter().filter(|c| c.profile_id == cp.id).count();
    let mut total = existing.len();
    let mut starts = cp.placements.clone();
    starts.sort_unstable();
    let mut count = 0;
    for s in starts {
        let fits_grid = u32::from(s) + u32::from(cp.placement_size) <= u32::from(gi_slices);
        let mask = unit_mask(s, cp.placement_size);
        if !fits_grid
            || mask & occupied != 0
            || same >= usize::from(cp.max_count)
            || used + u32::from(cp.compute_slices) > u32::from(gi_slices)
            || total >= MAX_CI_IDS
        {
            continue;
        }
        occupied |= mask;
        used += u32::from(cp.compute_slices);
        same += 1;
        total += 1;
        count += 1;
    }
    count
}

#[cfg(test)]
mod tests {
    use nvml_wrapper_sys::bindings::*;

    use super::*;
    use tessera_mig::catalog;

    #[test]
    fn every_catalog_profile_has_a_distinct_index() {
        for m in &catalog().models {
            let mut seen = std::collections::BTreeMap::new();
            for p in &m.profiles {
                let i = nvml_index(p).unwrap_or_else(|| panic!("{} {} has no NVML index", m.name, p.name));
                assert!(i < NVML_GPU_INSTANCE_PROFILE_COUNT, "{} {}: {i}", m.name, p.name);
                if let Some(other) = seen.insert(i, &p.name) {
                    panic!("{}: {} and {} share index {i}", m.name, other, p.name);
                }
                assert_eq!(profile_by_index(m, i).map(|q| q.id), Some(p.id), "{} {}", m.name, p.name);
            }
        }
    }

    #[test]
    fn tessera_mig_indices_are_nvml_h_constants() {
        use tessera_mig::catalog::nvml_gi_index as t;
        let pairs = [
            (t::SLICE_1, NVML_GPU_INSTANCE_PROFILE_1_SLICE),
            (t::SLICE_2, NVML_GPU_INSTANCE_PROFILE_2_SLICE),
            (t::SLICE_3, NVML_GPU_INSTANCE_PROFILE_3_SLICE),
            (t::SLICE_4, NVML_GPU_INSTANCE_PROFILE_4_SLICE),
            (t::SLICE_7, NVML_GPU_INSTANCE_PROFILE_7_SLICE),
            (t::SLICE_8, NVML_GPU_INSTANCE_PROFILE_8_SLICE),
            (t::SLICE_6, NVML_GPU_INSTANCE_PROFILE_6_SLICE),
            (t::SLICE_1_REV1, NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1),
            (t::SLICE_2_REV1, NVML_GPU_INSTANCE_PROFILE_2_SLICE_REV1),
            (t::SLICE_1_REV2, NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV2),
            (t::SLICE_1_GFX, NVML_GPU_INSTANCE_PROFILE_1_SLICE_GFX),
            (t::SLICE_2_GFX, NVML_GPU_INSTANCE_PROFILE_2_SLICE_GFX),
            (t::SLICE_4_GFX, NVML_GPU_INSTANCE_PROFILE_4_SLICE_GFX),
            (t::SLICE_1_NO_ME, NVML_GPU_INSTANCE_PROFILE_1_SLICE_NO_ME),
            (t::SLICE_2_NO_ME, NVML_GPU_INSTANCE_PROFILE_2_SLICE_NO_ME),
            (t::SLICE_1_ALL_ME, NVML_GPU_INSTANCE_PROFILE_1_SLICE_ALL_ME),
            (t::SLICE_2_ALL_ME, NVML_GPU_INSTANCE_PROFILE_2_SLICE_ALL_ME),
        ];
        for (ours, nvml) in pairs {
            assert_eq!(ours, nvml);
        }
    }

    #[test]
    fn known_indices_and_ids() {
        let cat = catalog();
        let id_at = |model: &str, index: u32| profile_by_index(cat.model(model).unwrap(), index).map(|p| p.id);
        // A100-40GB, from nvidia-smi: 1g.5gb 19, 1g.5gb+me 20, 1g.10gb 15, 2g 14, 3g 9, 4g 5, 7g 0.
        let a100: Vec<Option<u32>> = [0, 7, 9, 1, 2, 3, 4].iter().map(|&i| id_at("A100-40GB", i)).collect();
        assert_eq!(a100, [19, 20, 15, 14, 9, 5, 0].map(Some));
        assert_eq!(id_at("A100-40GB", 5), None);
        assert_eq!(id_at("A100-40GB", 10), None);
        // A30: 1g.6gb 14, 1g.6gb+me 21, 2g.12gb 5, 2g.12gb+me 6, 4g.24gb 0.
        let a30: Vec<Option<u32>> = [0, 7, 1, 8, 3].iter().map(|&i| id_at("A30", i)).collect();
        assert_eq!(a30, [14, 21, 5, 6, 0].map(Some));
        // Profiles whose index is derived: GH200 144GB and B300 have none in the catalog.
        assert_eq!(id_at("GH200-144GB", 9), Some(15));
        assert_eq!(id_at("B300-269GB", 0), Some(19));
        assert_eq!(id_at("B300-269GB", 7), Some(20));
        let rtx = cat.model("RTX-PRO-6000").unwrap();
        for (index, name) in [(10, "1g.24gb+gfx"), (12, "4g.96gb+gfx"), (13, "1g.24gb-me"), (16, "2g.48gb+me.all")] {
            assert_eq!(profile_by_index(rtx, index).map(|p| p.name.as_str()), Some(name));
        }
    }

    #[test]
    fn driver_versions() {
        assert_eq!(driver_major("580.65.06"), Some(580));
        assert_eq!(driver_major("470"), Some(470));
        assert_eq!(driver_major("R470"), None);
        assert_eq!(driver_major("580..1"), None);
        assert_eq!(driver_major(""), None);
        assert_eq!(min_driver_major("R525 (>= 525.85.12)"), Some(525));
        assert_eq!(min_driver_major("R470"), Some(470));
        assert_eq!(min_driver_major("R525 per H100 row (GH200 not listed separately)"), Some(525));
        assert_eq!(min_driver_major("none"), None);
        let a100 = catalog().model("A100-40GB").unwrap();
        let p = |name: &str| a100.profile(name).unwrap();
        assert!(offered(p("1g.10gb"), 525) && !offered(p("1g.10gb"), 470));
        assert!(offered(p("1g.5gb+me"), 470) && !offered(p("1g.5gb+me"), 460));
        assert!(offered(p("3g.20gb"), 450));
        assert_eq!(cuda_version(580), 13000);
        assert_eq!(cuda_version(535), 12020);
        assert_eq!(cuda_version(400), 10020);
    }

    #[test]
    fn names() {
        let h100 = catalog().model("H100-80GB").unwrap();
        let p3 = h100.profile("3g.40gb").unwrap();
        assert_eq!(gi_profile_name(p3), "MIG 3g.40gb");
        assert_eq!(ci_name(1, p3), "1c.3g.40gb");
        assert_eq!(ci_name(3, p3), "3g.40gb");
    }

    #[test]
    fn remaining_capacity_follows_placement() {
        // H100: one 3g.40gb takes 1g.10gb from 7 to 3 at 0:4 and to 4 at 4:4 (mig-hardware.md §5).
        let h100 = catalog().model("H100-80GB").unwrap();
        let g1 = h100.profile("1g.10gb").unwrap();
        let g3 = h100.profile("3g.40gb").unwrap();
        assert_eq!(gi_remaining_capacity(h100, &[], g1), 7);
        assert_eq!(gi_remaining_capacity(h100, &[Instance::new(g3.id, 0)], g1), 3);
        assert_eq!(gi_remaining_capacity(h100, &[Instance::new(g3.id, 4)], g1), 4);
        assert_eq!(gi_remaining_capacity(h100, &[], g3), 2);
        let me = h100.profile("1g.10gb+me").unwrap();
        assert_eq!(gi_remaining_capacity(h100, &[], me), 1);
        assert_eq!(gi_remaining_capacity(h100, &[Instance::new(me.id, 0)], me), 0);
    }

    #[test]
    fn ci_capacity() {
        let h100 = catalog().model("H100-80GB").unwrap();
        let cps = h100.compute_instance_profiles(3);
        let c1 = cps.iter().find(|c| c.compute_slices == 1).unwrap();
        let c3 = cps.iter().find(|c| c.compute_slices == 3).unwrap();
        assert_eq!(ci_remaining_capacity(3, &[], c1), 3);
        assert_eq!(ci_remaining_capacity(3, &[], c3), 1);
        let one = [CiSlot { profile_id: c1.id, start: 0, size: 1 }];
        assert_eq!(ci_remaining_capacity(3, &one, c1), 2);
        assert_eq!(ci_remaining_capacity(3, &one, c3), 0);
    }
}
