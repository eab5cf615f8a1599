//! The driver's default placement: where a GPU instance lands when it is created without one
//! (`nvidia-smi mig -cgi 9`, `nvmlDeviceCreateGpuInstance`).
//!
//! NVIDIA does not document the rule. The simulated node uses one that reproduces every
//! documented example (A100-40GB `-cgi 19,19,14,9`, `9,19,14,19`, `14,19,19,19,19,19`,
//! `19,14,5`; RTX PRO 6000 `4 × 1g.24gb` and `2g.48gb,1g.24gb,1g.24gb`):
//!
//! > Among the profile's legal placements where the resulting layout is valid, choose the one
//! > that makes the fewest currently-creatable `(profile, start)` pairs of the GPU uncreatable,
//! > counting the new placement itself; break ties by the lowest start.
//!
//! A pair is *creatable* when adding that one instance to the layout breaks no rule of
//! [`tessera_mig::validate`] (placement, overlap, per-profile and per-GPU counts, media engines).
//! Adding an instance only ever removes creatable pairs, so "fewest made uncreatable" is "most
//! left creatable". This is what puts small instances at the high end and makes creation order
//! matter, which is why Tessera itself always creates at explicit placements.

use tessera_mig::{GpuModel, Instance, Profile, validate};

/// Whether `profile` may start at `start` on this model's grid.
fn on_grid(model: &GpuModel, profile: &Profile, start: u8) -> bool {
    u32::from(start) + u32::from(profile.placement_size) <= u32::from(model.placement_units)
}

/// Whether adding `candidate` to `layout` keeps it valid.
pub fn fits(model: &GpuModel, layout: &[Instance], candidate: Instance) -> bool {
    let mut with = layout.to_vec();
    with.push(candidate);
    validate(model, &with).is_empty()
}

/// How many `(profile, start)` pairs could be created next to `layout`.
pub fn creatable_pairs(model: &GpuModel, layout: &[Instance]) -> usize {
    model
        .profiles
        .iter()
        .flat_map(|p| p.placements.iter().filter(|&&s| on_grid(model, p, s)).map(|&s| Instance::new(p.id, s)))
        .filter(|&c| fits(model, layout, c))
        .count()
}

/// The start the driver would choose for `profile` next to `layout`, or `None` when no legal
/// placement is free ("Insufficient Resources").
pub fn default_placement(model: &GpuModel, layout: &[Instance], profile: &Profile) -> Option<u8> {
    let mut best: Option<(usize, u8)> = None;
    let mut starts: Vec<u8> = profile.placements.iter().copied().filter(|&s| on_grid(model, profile, s)).collect();
    starts.sort_unstable();
    for start in starts {
        let candidate = Instance::new(profile.id, start);
        if !fits(model, layout, candidate) {
            continue;
        }
        let mut with = layout.to_vec();
        with.push(candidate);
        let left = creatable_pairs(model, &with);
        // Strictly more left creatable wins, so ties keep the lowest start.
        if best.is_none_or(|(b, _)| left > b) {
            best = Some((left, start));
        }
    }
    best.map(|(_, s)| s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_mig::catalog;

    /// Run `-cgi ids` with default placements; `None` where creation fails.
    fn cgi(model: &str, ids: &[u32]) -> Vec<Option<u8>> {
        let m = catalog().model(model).unwrap();
        let mut layout = Vec::new();
        ids.iter()
            .map(|&id| {
                let p = m.profile_by_id(id).unwrap();
                let s = default_placement(m, &layout, p);
                if let Some(s) = s {
                    layout.push(Instance::new(id, s));
                }
                s
            })
            .collect()
    }

    #[test]
    fn nvidia_documented_a100_examples() {
        assert_eq!(cgi("A100-40GB", &[19, 19, 14, 9]), [Some(6), Some(4), Some(0), None]);
        assert_eq!(cgi("A100-40GB", &[9, 19, 14, 19]), [Some(4), Some(0), Some(2), Some(1)]);
        assert_eq!(cgi("A100-40GB", &[14, 19, 19, 19, 19, 19]), [Some(4), Some(6), Some(0), Some(1), Some(2), Some(3)]);
        assert_eq!(cgi("A100-40GB", &[19, 14, 5]), [Some(6), Some(4), Some(0)]);
    }

    #[test]
    fn rtx_pro_6000_examples() {
        assert_eq!(cgi("RTX-PRO-6000", &[14, 14, 14, 14]), [Some(0), Some(3), Some(6), Some(9)]);
        assert_eq!(cgi("RTX-PRO-6000", &[5, 14, 14]), [Some(0), Some(6), Some(9)]);
    }

    #[test]
    fn full_gpu_blocks_everything() {
        let m = catalog().model("H100-80GB").unwrap();
        let full = [Instance::new(0, 0)];
        assert_eq!(creatable_pairs(m, &full), 0);
        assert!(m.profiles.iter().all(|p| default_placement(m, &full, p).is_none()));
    }
}
