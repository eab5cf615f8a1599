//! Layouts: the GPU instances on one GPU, and the rules a layout must obey.
//!
//! A GPU instance is a placement `[start, start + size)` on the model's one-dimensional grid of
//! placement units. A layout is valid when every placement is legal for its profile, no two
//! overlap, no profile exceeds its maximum count, the GPU's instance limit holds, and the media
//! engines are not over-committed (one OFA: at most one `+me`; `+me.all` admits only `-me`).
//! `validate` names every violation instead of stopping at the first.
//!
//! A GPU instance holds one compute instance (`Full`, or `Slices(c)`) or several (`Split`, as
//! mig-parted's `"1c.3g.20gb": 3` makes them); [`ci_placements`] is the one model of where the
//! driver puts them: each in turn at the lowest free legal placement of its profile.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::catalog::{ComputeInstanceProfile, GpuModel, Profile, ProfileKind};

/// How the compute side of a GPU instance is split, as far as Tessera plans it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ComputeShape {
    /// One compute instance spanning the whole GPU instance (what `nvidia-smi mig -cgi … -C` makes).
    #[default]
    Full,
    /// One compute instance of this many compute slices (`1c.3g.20gb` is `Slices(1)` in a 3g).
    Slices(u8),
    /// Two or more compute instances, created largest first (mig-parted's `"1c.3g.20gb": 3` is
    /// `Split([1, 1, 1])` in one 3g). One compute instance is always `Full` or `Slices`.
    Split(CiSizes),
    /// Anything else found on hardware: no compute instance, or several that no split describes
    /// (see [`ComputeShape::from_sizes`]). Never equal to a wish.
    Other,
}

impl ComputeShape {
    /// The one shape of a GPU instance of `gi_slices` compute slices holding compute instances
    /// of these sizes (in any order): `Full` or `Slices` for one, `Split` for several; `None`
    /// for none, a zero size, or more than [`MAX_SPLIT`].
    pub fn from_sizes(gi_slices: u8, sizes: &[u8]) -> Option<ComputeShape> {
        match sizes {
            [] => None,
            [0] => None,
            [c] if *c == gi_slices => Some(ComputeShape::Full),
            [c] => Some(ComputeShape::Slices(*c)),
            many => CiSizes::new(many).ok().map(ComputeShape::Split),
        }
    }

    /// The sizes of the compute instances this shape makes in a GPU instance of `gi_slices`
    /// compute slices, in the order they are created (largest first); `None` for `Other`.
    pub fn ci_sizes(self, gi_slices: u8) -> Option<Vec<u8>> {
        match self {
            ComputeShape::Full => Some(vec![gi_slices]),
            ComputeShape::Slices(c) => Some(vec![c]),
            ComputeShape::Split(s) => Some(s.as_slice().to_vec()),
            ComputeShape::Other => None,
        }
    }
}

/// Most compute instances one GPU instance can hold: a 7-slice GPU instance holds at most seven.
pub const MAX_SPLIT: usize = 8;

/// The compute-instance sizes of a split GPU instance: between 2 and [`MAX_SPLIT`] of them, each
/// at least 1, largest first (mig-parted's order). Serialized as a list, `[2, 1]`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "Vec<u8>", into = "Vec<u8>")]
pub struct CiSizes {
    /// The sizes, largest first, padded with zeros.
    sizes: [u8; MAX_SPLIT],
    len: u8,
}

impl CiSizes {
    /// The split of these sizes (in any order; stored largest first).
    pub fn new(sizes: &[u8]) -> Result<CiSizes, String> {
        if sizes.len() < 2 || sizes.len() > MAX_SPLIT {
            return Err(format!(
                "a compute split holds 2 to {MAX_SPLIT} compute instances, not {} ({sizes:?})",
                sizes.len()
            ));
        }
        if sizes.contains(&0) {
            return Err(format!("a compute instance has at least one compute slice ({sizes:?})"));
        }
        let mut out = [0u8; MAX_SPLIT];
        out[..sizes.len()].copy_from_slice(sizes);
        out[..sizes.len()].sort_unstable_by(|a, b| b.cmp(a));
        // `sizes.len()` is at most MAX_SPLIT (8), so it fits a u8.
        Ok(CiSizes { sizes: out, len: u8::try_from(sizes.len()).unwrap_or(u8::MAX) })
    }

    /// The sizes, largest first.
    pub fn as_slice(&self) -> &[u8] {
        &self.sizes[..usize::from(self.len).min(MAX_SPLIT)]
    }

    /// The compute slices the split uses.
    pub fn total(&self) -> u32 {
        self.as_slice().iter().map(|&c| u32::from(c)).sum()
    }
}

impl fmt::Debug for CiSizes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl TryFrom<Vec<u8>> for CiSizes {
    type Error = String;
    fn try_from(v: Vec<u8>) -> Result<Self, String> {
        CiSizes::new(&v)
    }
}

impl From<CiSizes> for Vec<u8> {
    fn from(s: CiSizes) -> Vec<u8> {
        s.as_slice().to_vec()
    }
}

/// One GPU instance at an explicit placement: the spec key of a MIG slice on its GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Instance {
    /// Profile id (`nvidia-smi mig -lgip` ID).
    pub profile_id: u32,
    /// First placement unit.
    pub start: u8,
    #[serde(default)]
    pub compute: ComputeShape,
}

impl Instance {
    pub fn new(profile_id: u32, start: u8) -> Self {
        Instance { profile_id, start, compute: ComputeShape::Full }
    }
}

/// What a user or the scheduler asks for: a profile (and optionally a compute split), no placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WantedInstance {
    pub profile_id: u32,
    #[serde(default)]
    pub compute: ComputeShape,
}

impl WantedInstance {
    pub fn new(profile_id: u32) -> Self {
        WantedInstance { profile_id, compute: ComputeShape::Full }
    }
}

impl From<Instance> for WantedInstance {
    fn from(i: Instance) -> Self {
        WantedInstance { profile_id: i.profile_id, compute: i.compute }
    }
}

/// The name of an instance's device type in mig-parted's terms: `3g.20gb`, or `1c.3g.20gb`;
/// a split names each compute instance's type with its count, largest first
/// (`2c.3g.20gb + 1c.3g.20gb`, `1c.3g.20gb ×3`).
pub fn device_type_name(profile: &Profile, compute: ComputeShape) -> String {
    shape_type_name(&profile.name, profile.compute_slices, compute)
}

/// [`device_type_name`] from a GPU-instance profile's name and compute slices alone (for a
/// profile the catalog lacks, `gi_slices` 0 names every compute instance `<C>c.<name>`).
pub fn shape_type_name(gi_name: &str, gi_slices: u8, compute: ComputeShape) -> String {
    let ci_name = |c: u8| if c == gi_slices { gi_name.to_string() } else { format!("{c}c.{gi_name}") };
    match compute {
        ComputeShape::Slices(c) => ci_name(c),
        ComputeShape::Split(s) => {
            let mut parts: Vec<(u8, usize)> = Vec::new();
            for &c in s.as_slice() {
                match parts.last_mut() {
                    Some((size, n)) if *size == c => *n += 1,
                    _ => parts.push((c, 1)),
                }
            }
            parts
                .into_iter()
                .map(|(c, n)| if n == 1 { ci_name(c) } else { format!("{} ×{n}", ci_name(c)) })
                .collect::<Vec<_>>()
                .join(" + ")
        }
        ComputeShape::Other => format!("{gi_name} (custom compute instances)"),
        ComputeShape::Full => gi_name.to_string(),
    }
}

/// The mig-parted name of one compute instance of `c` slices in a `profile` GPU instance:
/// `3g.20gb` when it spans the GPU instance, else `1c.3g.20gb`.
pub fn ci_type_name(profile: &Profile, c: u8) -> String {
    shape_type_name(&profile.name, profile.compute_slices, ComputeShape::Slices(c))
}

/// Why compute instances of given sizes cannot all be made in one GPU instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SplitProblem {
    /// The GPU instance has no compute-instance profile of this size.
    NoProfile { slices: u8, offered: Vec<u8> },
    /// More compute instances of one profile than a GPU instance allows.
    TooMany { slices: u8, count: usize, max: u8 },
    /// The sizes add up to more compute slices than the GPU instance has.
    TooManySlices { used: u32, max: u8 },
    /// Created in order, this one finds no free legal placement (the driver's rule: the lowest
    /// free placement of its profile).
    NoPlacement { slices: u8, taken: Vec<u8> },
}

impl fmt::Display for SplitProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SplitProblem::NoProfile { slices, offered } => {
                let list: Vec<String> = offered.iter().map(|c| format!("{c}c")).collect();
                write!(
                    f,
                    "no compute instance of {slices} slice(s) (it offers {})",
                    if list.is_empty() { "none".to_string() } else { list.join(", ") }
                )
            }
            SplitProblem::TooMany { slices, count, max } => {
                write!(f, "{count} compute instances of {slices} slice(s) but at most {max}")
            }
            SplitProblem::TooManySlices { used, max } => {
                write!(f, "{used} compute slices asked but it has {max}")
            }
            SplitProblem::NoPlacement { slices, taken } => write!(
                f,
                "no free placement for a compute instance of {slices} slice(s) once compute slices {} are taken",
                fmt_units(taken)
            ),
        }
    }
}

/// The compute-instance profile a compute instance of `slices` slices gets in a `profile` GPU
/// instance: the default one of that size, else the first.
pub fn ci_profile_of<'m>(model: &'m GpuModel, profile: &Profile, slices: u8) -> Option<&'m ComputeInstanceProfile> {
    let offered = model.compute_instance_profiles(profile.compute_slices);
    offered
        .iter()
        .find(|c| c.compute_slices == slices && c.default)
        .or_else(|| offered.iter().find(|c| c.compute_slices == slices))
}

/// Where compute instances of `sizes`, created in that order in a `profile` GPU instance, end
/// up: each gets its profile ([`ci_profile_of`]) and the lowest legal placement that is free
/// and inside the GPU instance, as the driver assigns them. Checks each profile's `max_count`
/// and the GPU instance's compute slices.
pub fn ci_placements<'m>(
    model: &'m GpuModel,
    profile: &Profile,
    sizes: &[u8],
) -> Result<Vec<(&'m ComputeInstanceProfile, u8)>, SplitProblem> {
    let mut profiles: Vec<&ComputeInstanceProfile> = Vec::with_capacity(sizes.len());
    for &c in sizes {
        let Some(cp) = ci_profile_of(model, profile, c) else {
            let mut offered: Vec<u8> =
                model.compute_instance_profiles(profile.compute_slices).iter().map(|p| p.compute_slices).collect();
            offered.sort_unstable();
            offered.dedup();
            return Err(SplitProblem::NoProfile { slices: c, offered });
        };
        profiles.push(cp);
    }
    for (cp, &c) in profiles.iter().zip(sizes) {
        let count = profiles.iter().filter(|p| p.id == cp.id).count();
        if count > usize::from(cp.max_count) {
            return Err(SplitProblem::TooMany { slices: c, count, max: cp.max_count });
        }
    }
    let used: u32 = sizes.iter().map(|&c| u32::from(c)).sum();
    if used > u32::from(profile.compute_slices) {
        return Err(SplitProblem::TooManySlices { used, max: profile.compute_slices });
    }
    let mut out: Vec<(&ComputeInstanceProfile, u8)> = Vec::with_capacity(sizes.len());
    let mut occupied = 0u32;
    for (cp, &c) in profiles.into_iter().zip(sizes) {
        let mut starts = cp.placements.clone();
        starts.sort_unstable();
        let start = starts
            .into_iter()
            .filter(|&s| u32::from(s) + u32::from(cp.placement_size) <= u32::from(profile.compute_slices))
            .find(|&s| unit_mask(s, cp.placement_size) & occupied == 0)
            .ok_or_else(|| SplitProblem::NoPlacement { slices: c, taken: mask_units(occupied) })?;
        occupied |= unit_mask(start, cp.placement_size);
        out.push((cp, start));
    }
    Ok(out)
}

/// A rule a layout breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Violation {
    /// The model has no profile with this id.
    UnknownProfile { profile_id: u32 },
    /// The start is not one of the profile's legal placements.
    IllegalStart { profile: String, start: u8, legal: Vec<u8> },
    /// Two instances share placement units.
    Overlap { first: String, second: String, units: Vec<u8> },
    /// More instances of a profile than the GPU allows.
    TooManyOfProfile { profile: String, count: usize, max: u8 },
    /// More GPU instances than the GPU allows.
    TooManyInstances { count: usize, max: u8 },
    /// More compute slices than the GPU has.
    TooManyComputeSlices { used: u32, max: u8 },
    /// The media engines (OFA) are over-committed: at most this many `+me`-style instances.
    MediaEngines { instances: Vec<String>, ofa_engines: u8 },
    /// A `+me.all` instance shares the GPU with instances that want media engines.
    MediaExclusive { exclusive: String, others: Vec<String> },
    /// A compute split the GPU instance does not offer.
    IllegalComputeShape { profile: String, compute_slices: u8 },
    /// Several compute instances that cannot all be made in the GPU instance.
    ComputeSplit { instance: String, problem: SplitProblem },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::UnknownProfile { profile_id } => {
                write!(f, "no profile with id {profile_id}")
            }
            Violation::IllegalStart { profile, start, legal } => {
                write!(f, "{profile} cannot start at unit {start}; legal starts are {}", fmt_units(legal))
            }
            Violation::Overlap { first, second, units } => {
                write!(f, "{first} and {second} overlap on placement unit(s) {}", fmt_units(units))
            }
            Violation::TooManyOfProfile { profile, count, max } => {
                write!(f, "{count} × {profile} but at most {max} per GPU")
            }
            Violation::TooManyInstances { count, max } => {
                write!(f, "{count} GPU instances but at most {max} per GPU")
            }
            Violation::TooManyComputeSlices { used, max } => {
                write!(f, "{used} compute slices used but the GPU has {max}")
            }
            Violation::MediaEngines { instances, ofa_engines } => write!(
                f,
                "{} each need the GPU's optical-flow engine but it has {ofa_engines} (at most one +me instance per GPU)",
                instances.join(" and ")
            ),
            Violation::MediaExclusive { exclusive, others } => write!(
                f,
                "{exclusive} takes every media engine, so only -me profiles may share the GPU, not {}",
                others.join(", ")
            ),
            Violation::IllegalComputeShape { profile, compute_slices } => {
                write!(f, "{profile} has no compute-instance profile of {compute_slices} slice(s)")
            }
            Violation::ComputeSplit { instance, problem } => write!(f, "{instance}: {problem}"),
        }
    }
}

/// `{0,4}` style.
pub fn fmt_units(units: &[u8]) -> String {
    let parts: Vec<String> = units.iter().map(u8::to_string).collect();
    format!("{{{}}}", parts.join(","))
}

/// Bit mask of the placement units `[start, start+size)`.
pub fn unit_mask(start: u8, size: u8) -> u32 {
    let size = u32::from(size).min(31);
    let bits = (1u32 << size) - 1;
    bits.checked_shl(u32::from(start)).unwrap_or(0)
}

/// Units set in a mask, ascending.
pub fn mask_units(mask: u32) -> Vec<u8> {
    (0u8..32).filter(|u| mask & (1u32 << u) != 0).collect()
}

/// Human label of an instance: `3g.20gb@4`.
pub fn instance_label(model: &GpuModel, inst: &Instance) -> String {
    match model.profile_by_id(inst.profile_id) {
        Some(p) if matches!(inst.compute, ComputeShape::Split(_)) => {
            format!("({})@{}", device_type_name(p, inst.compute), inst.start)
        }
        Some(p) => format!("{}@{}", device_type_name(p, inst.compute), inst.start),
        None => format!("profile#{}@{}", inst.profile_id, inst.start),
    }
}

/// Every rule the layout breaks; empty when valid.
pub fn validate(model: &GpuModel, layout: &[Instance]) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut known: Vec<(&Instance, &Profile)> = Vec::new();
    for inst in layout {
        match model.profile_by_id(inst.profile_id) {
            None => out.push(Violation::UnknownProfile { profile_id: inst.profile_id }),
            Some(p) => {
                if !p.placements.contains(&inst.start) {
                    out.push(Violation::IllegalStart {
                        profile: p.name.clone(),
                        start: inst.start,
                        legal: p.placements.clone(),
                    });
                }
                match inst.compute {
                    ComputeShape::Slices(c) => {
                        let legal = c == p.compute_slices
                            || model
                                .compute_instance_profiles(p.compute_slices)
                                .iter()
                                .any(|ci| ci.compute_slices == c);
                        if !legal {
                            out.push(Violation::IllegalComputeShape { profile: p.name.clone(), compute_slices: c });
                        }
                    }
                    ComputeShape::Split(s) => match ci_placements(model, p, s.as_slice()) {
                        Ok(_) => {}
                        Err(SplitProblem::NoProfile { slices, .. }) => {
                            out.push(Violation::IllegalComputeShape {
                                profile: p.name.clone(),
                                compute_slices: slices,
                            });
                        }
                        Err(problem) => {
                            out.push(Violation::ComputeSplit { instance: instance_label(model, inst), problem });
                        }
                    },
                    ComputeShape::Full | ComputeShape::Other => {}
                }
                known.push((inst, p));
            }
        }
    }
    for (i, (a, pa)) in known.iter().enumerate() {
        for (b, pb) in &known[i + 1..] {
            let overlap = unit_mask(a.start, pa.placement_size) & unit_mask(b.start, pb.placement_size);
            if overlap != 0 {
                out.push(Violation::Overlap {
                    first: instance_label(model, a),
                    second: instance_label(model, b),
                    units: mask_units(overlap),
                });
            }
        }
    }
    for p in &model.profiles {
        let count = known.iter().filter(|(_, q)| q.id == p.id).count();
        if count > usize::from(p.max_count) {
            out.push(Violation::TooManyOfProfile { profile: p.name.clone(), count, max: p.max_count });
        }
    }
    if layout.len() > usize::from(model.max_gpu_instances) {
        out.push(Violation::TooManyInstances { count: layout.len(), max: model.max_gpu_instances });
    }
    let used: u32 = known.iter().map(|(_, p)| u32::from(p.compute_slices)).sum();
    if used > u32::from(model.compute_slices) {
        out.push(Violation::TooManyComputeSlices { used, max: model.compute_slices });
    }
    let ofa: u32 = known.iter().map(|(_, p)| u32::from(p.ofa_engines)).sum();
    if ofa > u32::from(model.ofa_engines) {
        out.push(Violation::MediaEngines {
            instances: known.iter().filter(|(_, p)| p.ofa_engines > 0).map(|(i, _)| instance_label(model, i)).collect(),
            ofa_engines: model.ofa_engines,
        });
    }
    for (inst, p) in &known {
        if p.kind == ProfileKind::MediaAll {
            let others: Vec<String> = known
                .iter()
                .filter(|(o, q)| !std::ptr::eq(*o, *inst) && !q.is_no_media())
                .map(|(o, _)| instance_label(model, o))
                .collect();
            if !others.is_empty() {
                out.push(Violation::MediaExclusive { exclusive: instance_label(model, inst), others });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog;

    fn split(sizes: &[u8]) -> ComputeShape {
        ComputeShape::Split(CiSizes::new(sizes).unwrap())
    }

    /// (model, GI profile, CI sizes in creation order, the placements or the problem).
    type Case = (&'static str, &'static str, &'static [u8], Result<&'static [u8], &'static str>);

    #[test]
    fn compute_instances_are_placed_as_the_driver_places_them() {
        let cases: &[Case] = &[
            ("A100-40GB", "3g.20gb", &[1, 1, 1], Ok(&[0, 1, 2])),
            ("A100-40GB", "3g.20gb", &[2, 1], Ok(&[0, 2])),
            ("A100-40GB", "3g.20gb", &[1, 1, 1, 1], Err("4 compute instances of 1 slice(s) but at most 3")),
            ("A100-40GB", "3g.20gb", &[2, 2], Err("2 compute instances of 2 slice(s) but at most 1")),
            ("A100-40GB", "4g.20gb", &[2, 2], Ok(&[0, 2])),
            ("A100-40GB", "4g.20gb", &[3, 1], Err("no compute instance of 3 slice(s) (it offers 1c, 2c, 4c)")),
            ("H100-80GB", "7g.80gb", &[1, 1, 1, 1, 1, 1, 1], Ok(&[0, 1, 2, 3, 4, 5, 6])),
            ("H100-80GB", "7g.80gb", &[4, 3], Ok(&[0, 4])),
            ("H100-80GB", "7g.80gb", &[3, 3, 1], Ok(&[0, 4, 3])),
            ("H100-80GB", "7g.80gb", &[4, 2, 1], Ok(&[0, 4, 6])),
            // 3 + 2 + 2 slices fit the count, but the second 2c finds {0,2,4} all taken.
            (
                "H100-80GB",
                "7g.80gb",
                &[3, 2, 2],
                Err("no free placement for a compute instance of 2 slice(s) once compute slices {0,1,2,4,5} are taken"),
            ),
            ("H100-80GB", "7g.80gb", &[4, 4], Err("2 compute instances of 4 slice(s) but at most 1")),
            ("H100-80GB", "7g.80gb", &[3, 3, 2], Err("8 compute slices asked but it has 7")),
        ];
        for (model, gi, sizes, want) in cases {
            let m = catalog().model(model).unwrap();
            let p = m.profile(gi).unwrap();
            let got = ci_placements(m, p, sizes).map(|v| v.iter().map(|(_, s)| *s).collect::<Vec<u8>>());
            match want {
                Ok(starts) => assert_eq!(got.as_deref(), Ok(*starts), "{model} {gi} {sizes:?}"),
                Err(msg) => assert_eq!(got.unwrap_err().to_string(), *msg, "{model} {gi} {sizes:?}"),
            }
            // `validate` agrees.
            let inst = Instance { profile_id: p.id, start: p.placements[0], compute: split(sizes) };
            assert_eq!(validate(m, &[inst]).is_empty(), want.is_ok(), "{model} {gi} {sizes:?}");
        }
    }

    #[test]
    fn one_canonical_shape_per_set_of_compute_instances() {
        let cases: &[(u8, &[u8], Option<ComputeShape>)] = &[
            (3, &[], None),
            (3, &[0], None),
            (3, &[3], Some(ComputeShape::Full)),
            (3, &[1], Some(ComputeShape::Slices(1))),
            (3, &[1, 2], Some(split(&[2, 1]))),
            (3, &[1, 1, 1], Some(split(&[1, 1, 1]))),
            (7, &[1, 0], None),
            (7, &[1; 9], None),
        ];
        for (gi, sizes, want) in cases {
            assert_eq!(ComputeShape::from_sizes(*gi, sizes), *want, "{gi} {sizes:?}");
            if let Some(shape) = want {
                let mut sorted = sizes.to_vec();
                sorted.sort_unstable_by(|a, b| b.cmp(a));
                assert_eq!(shape.ci_sizes(*gi), Some(sorted));
            }
        }
        // Stored as a list, largest first; read back only in canonical form.
        let json = serde_json::to_string(&split(&[1, 2])).unwrap();
        assert_eq!(json, r#"{"split":[2,1]}"#);
        assert_eq!(serde_json::from_str::<ComputeShape>(r#"{"split":[1,2]}"#).unwrap(), split(&[2, 1]));
        assert!(serde_json::from_str::<ComputeShape>(r#"{"split":[1]}"#).is_err());
        assert!(serde_json::from_str::<ComputeShape>(r#"{"split":[1,0]}"#).is_err());
    }

    #[test]
    fn splits_are_named_in_mig_parted_terms() {
        let m = catalog().model("A100-40GB").unwrap();
        let p = m.profile("3g.20gb").unwrap();
        assert_eq!(device_type_name(p, split(&[1, 1, 1])), "1c.3g.20gb ×3");
        assert_eq!(device_type_name(p, split(&[1, 2])), "2c.3g.20gb + 1c.3g.20gb");
        let inst = Instance { profile_id: p.id, start: 4, compute: split(&[1, 1]) };
        assert_eq!(instance_label(m, &inst), "(1c.3g.20gb ×2)@4");
    }
}
