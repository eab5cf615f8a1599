//! What one GPU can still take, in the two modes of the experiment, behind one small interface.
//!
//! The simulator keeps every GPU as a `u16` state and asks three questions of it: how much is free
//! (in milli-GPU, the unit FGD measures everything in), can a request go there, and what is the
//! state afterwards. This module answers them:
//!
//! - **Milli-GPU sharing** (FGD's setting): the state is the unallocated milli-GPU (0–1000), a
//!   request is a milli-GPU amount and fits when that much is left.
//! - **MIG**: the state is an interned layout (the GPU instances on the GPU), a request is a MIG
//!   profile, and it fits when `tessera_mig`'s planner finds a legal placement next to the
//!   instances already there (instances are created on demand and never move, since pods never
//!   depart). Every layout reachable from an empty GPU with the profiles in use is enumerated
//!   once, up front, by asking the planner, so the simulation itself is table look-ups.
//!
//! Sharing requests map onto MIG profiles by rounding up to the smallest profile whose compute
//! fraction (compute slices / the model's compute slices) covers `gpu_milli / 1000`.

use std::collections::HashMap;

use tessera_mig::{GpuModel, Instance, Planner, ProfileKind, WantedInstance};

use crate::PackError;

/// Milli-GPU in one GPU.
pub const MILLI: u32 = 1000;

/// A MIG profile a request can be rounded to.
#[derive(Debug, Clone, PartialEq)]
pub struct MigProfile {
    pub id: u32,
    pub name: String,
    pub compute_slices: u8,
    /// The profile's compute fraction in milli-GPU (`1000 × slices / model slices`).
    pub milli: f64,
}

/// The enumerated MIG layouts of one model.
#[derive(Debug, Clone)]
pub struct MigTable {
    pub model: String,
    pub compute_slices: u8,
    /// The standard profiles requests round to, ascending by compute slices.
    pub profiles: Vec<MigProfile>,
    /// `layouts[state]`: the instances on a GPU in that state (state 0 is the empty GPU).
    pub layouts: Vec<Vec<Instance>>,
    /// `used[state]`: compute slices allocated.
    pub used: Vec<u8>,
    /// `next[state * profiles + p]`: the state after placing profile `p`, or `NONE`.
    next: Vec<u16>,
    /// `count[state * profiles + p]`: how many more instances of profile `p` alone fit.
    count: Vec<u8>,
}

const NONE: u16 = u16::MAX;

/// The per-GPU rules of a mode.
#[derive(Debug, Clone)]
pub enum GpuRules {
    Shared,
    Mig(Box<MigTable>),
}

impl GpuRules {
    /// The state of an empty GPU.
    pub fn empty(&self) -> u16 {
        match self {
            GpuRules::Shared => MILLI as u16,
            GpuRules::Mig(_) => 0,
        }
    }

    /// Unallocated capacity in milli-GPU (MIG: unallocated compute slices as a fraction of 1000).
    #[inline]
    pub fn free(&self, s: u16) -> f64 {
        match self {
            GpuRules::Shared => f64::from(s),
            GpuRules::Mig(t) => {
                f64::from(t.compute_slices - t.used[usize::from(s)]) * f64::from(MILLI) / f64::from(t.compute_slices)
            }
        }
    }

    /// Whether nothing is allocated on the GPU.
    #[inline]
    pub fn is_empty(&self, s: u16) -> bool {
        s == self.empty()
    }

    /// Whether a request `unit` (milli-GPU, or a profile index) can go on a GPU in state `s`.
    #[inline]
    pub fn fits(&self, s: u16, unit: u16) -> bool {
        match self {
            GpuRules::Shared => s >= unit,
            GpuRules::Mig(t) => t.next[usize::from(s) * t.profiles.len() + usize::from(unit)] != NONE,
        }
    }

    /// The state after placing `unit`; `None` when it does not fit.
    #[inline]
    pub fn after(&self, s: u16, unit: u16) -> Option<u16> {
        match self {
            GpuRules::Shared => s.checked_sub(unit),
            GpuRules::Mig(t) => {
                let n = t.next[usize::from(s) * t.profiles.len() + usize::from(unit)];
                (n != NONE).then_some(n)
            }
        }
    }

    /// The capacity on a GPU in state `s` that requests of `unit` alone could still use, in
    /// milli-GPU: how many of them fit, times their size.
    #[inline]
    pub fn usable_for(&self, s: u16, unit: u16) -> f64 {
        match self {
            GpuRules::Shared => s.checked_div(unit).map_or(0.0, |k| f64::from(k * unit)),
            GpuRules::Mig(t) => {
                let np = t.profiles.len();
                f64::from(t.count[usize::from(s) * np + usize::from(unit)]) * t.profiles[usize::from(unit)].milli
            }
        }
    }

    /// The capacity a request `unit` takes on one GPU, in milli-GPU.
    pub fn unit_milli(&self, unit: u16) -> f64 {
        match self {
            GpuRules::Shared => f64::from(unit),
            GpuRules::Mig(t) => t.profiles[usize::from(unit)].milli,
        }
    }

    /// The request unit of `gpu_milli` per GPU (1–1000).
    pub fn unit_of(&self, gpu_milli: u32) -> u16 {
        match self {
            GpuRules::Shared => gpu_milli.min(MILLI) as u16,
            GpuRules::Mig(t) => t.round(gpu_milli),
        }
    }

    /// The unit a whole GPU takes.
    pub fn whole(&self) -> u16 {
        self.unit_of(MILLI)
    }
}

impl MigTable {
    /// Enumerate every layout of `model` reachable by placing its rounding profiles one at a time.
    pub fn build(model: &GpuModel, planner: &Planner<'_>) -> Result<MigTable, PackError> {
        let profiles = rounding_profiles(model)?;
        let mut index: HashMap<Vec<Instance>, u16> = HashMap::new();
        let mut layouts: Vec<Vec<Instance>> = vec![Vec::new()];
        index.insert(Vec::new(), 0);
        let mut next: Vec<u16> = Vec::new();
        let mut i = 0;
        while i < layouts.len() {
            let current = layouts[i].clone();
            for p in &profiles {
                let n = match planner.place(&[WantedInstance::new(p.id)], &current) {
                    Ok(placement) => {
                        let mut layout = placement.layout;
                        layout.sort();
                        match index.get(&layout) {
                            Some(&id) => id,
                            None => {
                                let id = u16::try_from(layouts.len())
                                    .ok()
                                    .filter(|&id| id < NONE)
                                    .ok_or_else(|| PackError::TooManyLayouts { model: model.name.clone() })?;
                                index.insert(layout.clone(), id);
                                layouts.push(layout);
                                id
                            }
                        }
                    }
                    Err(_) => NONE,
                };
                next.push(n);
            }
            i += 1;
        }
        let used = layouts
            .iter()
            .map(|l| {
                l.iter()
                    .filter_map(|inst| model.profile_by_id(inst.profile_id))
                    .map(|p| p.compute_slices)
                    .fold(0u8, u8::saturating_add)
            })
            .collect();
        let np = profiles.len();
        let mut count = vec![0u8; next.len()];
        for st in 0..layouts.len() {
            for p in 0..np {
                let mut c = 0u8;
                let mut cur = st;
                while next[cur * np + p] != NONE {
                    cur = usize::from(next[cur * np + p]);
                    c = c.saturating_add(1);
                }
                count[st * np + p] = c;
            }
        }
        Ok(MigTable {
            model: model.name.clone(),
            compute_slices: model.compute_slices,
            profiles,
            layouts,
            used,
            next,
            count,
        })
    }

    /// Index of the smallest profile whose compute fraction covers `gpu_milli`.
    pub fn round(&self, gpu_milli: u32) -> u16 {
        let full = u32::from(self.compute_slices);
        let idx = self
            .profiles
            .iter()
            .position(|p| u32::from(p.compute_slices) * MILLI >= gpu_milli.min(MILLI) * full)
            .unwrap_or(self.profiles.len() - 1);
        idx as u16
    }
}

/// The standard profiles of `model` a request can round to: per compute-slice count the one with
/// the least memory; the full-GPU profile must exist.
pub fn rounding_profiles(model: &GpuModel) -> Result<Vec<MigProfile>, PackError> {
    let mut best: Vec<&tessera_mig::Profile> = Vec::new();
    for p in model.profiles.iter().filter(|p| p.kind == ProfileKind::Standard && p.compute_slices > 0) {
        match best.iter_mut().find(|b| b.compute_slices == p.compute_slices) {
            Some(b) => {
                if (p.memory_slices, p.id) < (b.memory_slices, b.id) {
                    *b = p;
                }
            }
            None => best.push(p),
        }
    }
    best.sort_by_key(|p| p.compute_slices);
    if best.last().is_none_or(|p| p.compute_slices != model.compute_slices) {
        return Err(PackError::NoFullProfile { model: model.name.clone() });
    }
    Ok(best
        .into_iter()
        .map(|p| MigProfile {
            id: p.id,
            name: p.name.clone(),
            compute_slices: p.compute_slices,
            milli: f64::from(p.compute_slices) * f64::from(MILLI) / f64::from(model.compute_slices),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use tessera_mig::{catalog, planner_for, validate};

    use super::*;

    fn table(model: &str) -> MigTable {
        let m = catalog().model(model).unwrap();
        MigTable::build(m, planner_for(m).unwrap()).unwrap()
    }

    #[test]
    fn rounding_table_per_model() {
        // (model, gpu_milli, profile): the smallest profile whose compute fraction covers the request.
        let cases = [
            ("A100-40GB", 50, "1g.5gb"),
            ("A100-40GB", 140, "1g.5gb"),
            ("A100-40GB", 150, "2g.10gb"),
            ("A100-40GB", 280, "2g.10gb"),
            ("A100-40GB", 300, "3g.20gb"),
            ("A100-40GB", 470, "4g.20gb"),
            ("A100-40GB", 571, "4g.20gb"),
            ("A100-40GB", 650, "7g.40gb"),
            ("A100-40GB", 810, "7g.40gb"),
            ("A100-40GB", 1000, "7g.40gb"),
            ("A100-80GB", 140, "1g.10gb"),
            ("A100-80GB", 470, "4g.40gb"),
            ("A100-80GB", 810, "7g.80gb"),
            ("H100-80GB", 140, "1g.10gb"),
            ("H100-80GB", 230, "2g.20gb"),
            ("H100-80GB", 320, "3g.40gb"),
            ("H100-80GB", 470, "4g.40gb"),
            ("H100-80GB", 810, "7g.80gb"),
        ];
        for (model, milli, want) in cases {
            let t = table(model);
            let got = &t.profiles[usize::from(t.round(milli))].name;
            assert_eq!(got, want, "{model} {milli} milli-GPU");
        }
        let rules = GpuRules::Mig(Box::new(table("A100-40GB")));
        assert_eq!(rules.whole(), rules.unit_of(1000));
        assert!((rules.unit_milli(rules.unit_of(470)) - 4000.0 / 7.0).abs() < 1e-9);
    }

    #[test]
    fn every_enumerated_layout_is_valid_and_transitions_follow_the_rules() {
        for name in ["A100-40GB", "A100-80GB", "H100-80GB", "A30-24GB"] {
            let model = catalog().model(name).unwrap();
            let t = table(name);
            assert!(t.layouts[0].is_empty());
            // Reachable layouts with the rounding profiles: 55 on the A100/H100 geometry, 12 on A30.
            assert_eq!(t.layouts.len(), if name == "A30-24GB" { 12 } else { 55 }, "{name}");
            let rules = GpuRules::Mig(Box::new(t.clone()));
            for (s, layout) in t.layouts.iter().enumerate() {
                assert!(validate(model, layout).is_empty(), "{name}: {layout:?}");
                let s = s as u16;
                for p in 0..t.profiles.len() as u16 {
                    match rules.after(s, p) {
                        Some(n) => {
                            assert!(rules.fits(s, p));
                            // One instance more, of that profile, nothing moved.
                            let (a, b) = (&t.layouts[usize::from(s)], &t.layouts[usize::from(n)]);
                            assert_eq!(b.len(), a.len() + 1);
                            assert!(a.iter().all(|i| b.contains(i)));
                            assert!((rules.free(s) - rules.free(n) - rules.unit_milli(p)).abs() < 1e-9);
                        }
                        None => assert!(!rules.fits(s, p)),
                    }
                }
            }
        }
        let a100 = GpuRules::Mig(Box::new(table("A100-40GB")));
        let (g1, g3, g4, g7) = (a100.unit_of(100), a100.unit_of(400), a100.unit_of(500), a100.whole());
        assert_eq!(a100.usable_for(a100.empty(), g1), 7000.0 / 7.0);
        assert!(a100.fits(a100.empty(), g7));
        let after4 = a100.after(a100.empty(), g4).unwrap();
        assert!(!a100.fits(after4, g7) && !a100.fits(after4, g4) && a100.fits(after4, g3));
        // 3g next to 4g: the one slice left over is stranded (no placement unit free).
        let full = a100.after(after4, g3).unwrap();
        assert_eq!(a100.free(full), 0.0);
        let two3 = a100.after(a100.after(a100.empty(), g3).unwrap(), g3).unwrap();
        assert!((a100.free(two3) - 1000.0 / 7.0).abs() < 1e-9);
        assert!(!a100.fits(two3, g1), "the seventh slice has no free placement unit next to two 3g");
    }

    #[test]
    fn shared_rules() {
        let r = GpuRules::Shared;
        assert_eq!(r.empty(), 1000);
        assert!(r.fits(470, 470) && !r.fits(469, 470));
        assert_eq!(r.after(470, 470), Some(0));
        assert_eq!(r.after(100, 470), None);
        assert_eq!(r.usable_for(1000, 300), 900.0);
        assert_eq!(r.usable_for(200, 300), 0.0);
    }
}
