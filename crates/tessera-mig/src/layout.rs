//! Layouts: the GPU instances on one GPU, and the rules a layout must obey.
//!
//! A GPU instance is a placement `[start, start + size)` on the model's one-dimensional grid of
//! placement units. A layout is valid when every placement is legal for its profile, no two
//! overlap, no profile exceeds its maximum count, the GPU's instance limit holds, and the media
//! engines are not over-committed (one OFA: at most one `+me`; `+me.all` admits only `-me`).
//! `validate` names every violation instead of stopping at the first.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::catalog::{GpuModel, Profile, ProfileKind};

/// How the compute side of a GPU instance is split, as far as Tessera plans it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ComputeShape {
    /// One compute instance spanning the whole GPU instance (what `nvidia-smi mig -cgi … -C` makes).
    #[default]
    Full,
    /// One compute instance of this many compute slices (`1c.3g.20gb` is `Slices(1)` in a 3g).
    Slices(u8),
    /// Anything else found on hardware: no compute instance, or several. Never equal to a wish.
    Other,
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

/// The name of an instance's device type in mig-parted's terms: `3g.20gb`, or `1c.3g.20gb`.
pub fn device_type_name(profile: &Profile, compute: ComputeShape) -> String {
    match compute {
        ComputeShape::Slices(c) if c != profile.compute_slices => format!("{c}c.{}", profile.name),
        ComputeShape::Other => format!("{} (custom compute instances)", profile.name),
        _ => profile.name.clone(),
    }
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
                if let ComputeShape::Slices(c) = inst.compute {
                    let legal = c == p.compute_slices
                        || model.compute_instance_profiles(p.compute_slices).iter().any(|ci| ci.compute_slices == c);
                    if !legal {
                        out.push(Violation::IllegalComputeShape { profile: p.name.clone(), compute_slices: c });
                    }
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
