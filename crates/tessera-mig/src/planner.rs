//! The partition planner: where new GPU instances go, how to get from one layout to another
//! without touching busy instances, which layouts exist, and how fragmented a GPU is.
//!
//! Everything works on bit masks over the model's placement units (at most 12), so a whole
//! search fits in a few cache lines. [`Planner::new`] precomputes, per set of occupied units,
//! how many compute slices could still be used, so that comparing candidate placements is a
//! table look-up.
//!
//! Choosing among valid placements: the planner keeps the free space as useful as possible,
//! ranked by (1) compute slices that can still be used, (2) the largest profile that still fits,
//! (3) how many instances of every profile still fit, and then the lowest starts. First fit is
//! what strands capacity (Project-HAMi/HAMi#2831); this is not first fit.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::catalog::{GpuModel, Profile, ProfileKind};
use crate::layout::{
    ComputeShape, Instance, Violation, WantedInstance, instance_label, mask_units, unit_mask, validate,
};

/// A legal `(profile, start)` pair with its unit mask.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    pidx: u8,
    start: u8,
    mask: u32,
}

/// What the search tracks about a partial layout.
#[derive(Debug, Clone, Copy)]
struct State {
    mask: u32,
    counts: [u8; MAX_PROFILES],
    instances: u8,
    compute: u8,
    ofa: u8,
    /// Number of instances that want media engines (not `-me`).
    media_users: u8,
    media_all: bool,
}

const MAX_PROFILES: usize = 24;

/// Precomputed tables for one GPU model. Cheap to keep, cheap to share; build one per model.
#[derive(Debug, Clone)]
pub struct Planner<'m> {
    model: &'m GpuModel,
    candidates: Vec<Candidate>,
    /// The same candidates grouped by profile index, each group ordered by start.
    by_profile: Vec<Vec<Candidate>>,
    /// `usable[occupied]`: most compute slices that can still be added (standard shapes).
    usable: Vec<u8>,
    /// `largest[occupied]`: (compute, memory) of the largest shape that still fits.
    largest: Vec<(u8, u8)>,
    /// `fit_sum[occupied]`: Σ over profiles of how many more instances fit (greedy, placements only).
    fit_sum: Vec<u8>,
}

/// A placement answer: the whole resulting layout and what is new in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Placement {
    /// The whole resulting layout, existing instances included, ordered by start.
    pub layout: Vec<Instance>,
    /// The instances the planner placed.
    pub placed: Vec<Instance>,
}

/// Why nothing could be placed, and the nearest thing that could.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaceError {
    /// A profile id the model does not have.
    #[error("{model} has no profile with id {profile_id}")]
    UnknownProfile { model: String, profile_id: u32 },
    /// The existing layout itself breaks the rules.
    #[error("the existing layout on {model} is not valid: {}", join_violations(.violations))]
    InvalidExisting { model: String, violations: Vec<Violation> },
    /// The wish does not fit.
    #[error("{reason}{}", alternative_text(.alternative))]
    Infeasible {
        model: String,
        reason: String,
        /// The nearest feasible wish, as profile names, with its placements.
        alternative: Option<Box<Alternative>>,
    },
}

/// A feasible wish close to an infeasible one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alternative {
    /// Profile names of the alternative wish (the new instances only).
    pub profiles: Vec<String>,
    /// Where they would go.
    pub placement: Placement,
    /// `4g.20gb + 3g.20gb fits`.
    pub summary: String,
}

fn alternative_text(alt: &Option<Box<Alternative>>) -> String {
    alt.as_ref().map(|a| format!("; {}", a.summary)).unwrap_or_default()
}

fn join_violations(v: &[Violation]) -> String {
    v.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// An instance on the GPU now, and whether work is running on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CurrentInstance {
    pub instance: Instance,
    /// Busy instances are never destroyed or moved.
    pub busy: bool,
    /// The driver's GPU instance id, when known (live key).
    pub gpu_instance_id: Option<u32>,
}

/// What a reconfiguration should reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    /// Exactly these instances at these placements.
    Layout(Vec<Instance>),
    /// These profiles, wherever they fit best; matching instances that exist are kept.
    Profiles(Vec<WantedInstance>),
}

/// One step of a reconfiguration, at an explicit placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Step {
    /// Destroy the compute instances of this GPU instance, then the GPU instance.
    Destroy { instance: Instance, gpu_instance_id: Option<u32> },
    /// Create this GPU instance at its placement, then its compute instance.
    Create { instance: Instance },
}

/// An ordered plan: every destroy, then every create. Each intermediate layout is valid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconfigurePlan {
    pub steps: Vec<Step>,
    /// The layout after the last step, ordered by start.
    pub target: Vec<Instance>,
    /// Instances left exactly as they are.
    pub unchanged: Vec<Instance>,
}

impl ReconfigurePlan {
    /// True when the GPU already has the wanted layout.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

/// A busy instance that stands in the way, named with its placement and GPU instance id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Blocker {
    pub instance: Instance,
    pub label: String,
    pub gpu_instance_id: Option<u32>,
}

/// Why a reconfiguration cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReconfigureError {
    #[error("{model} has no profile with id {profile_id}")]
    UnknownProfile { model: String, profile_id: u32 },
    /// The wanted layout breaks the rules whatever is running.
    #[error("the wanted layout is not possible on {model}: {reason}")]
    Infeasible { model: String, reason: String },
    /// Busy instances would have to be destroyed or moved.
    #[error("busy instance(s) block the wanted layout on {model}: {}; {reason}", blocker_list(.blockers))]
    BusyInstancesBlock { model: String, blockers: Vec<Blocker>, reason: String },
}

fn blocker_list(b: &[Blocker]) -> String {
    b.iter()
        .map(|b| match b.gpu_instance_id {
            Some(id) => format!("{} (GPU instance {id})", b.label),
            None => b.label.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// How many more instances of one profile fit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProfileFit {
    pub profile: String,
    pub profile_id: u32,
    pub count: u8,
}

/// Free and unusable capacity of one layout, as numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FragmentationReport {
    /// Placement units no instance occupies.
    pub free_units: Vec<u8>,
    /// Free placement units that no profile can occupy any more.
    pub stranded_units: Vec<u8>,
    /// Compute slices not used by an instance.
    pub free_compute_slices: u8,
    /// Most compute slices that instances could still use, over every way to fill the GPU.
    pub usable_compute_slices: u8,
    /// Free compute slices that no profile can use any more (`free - usable`).
    pub unusable_compute_slices: u8,
    /// For each profile, how many more instances of it alone would fit.
    pub fits: Vec<ProfileFit>,
}

/// A wish inside the search: a profile, a compute split, and perhaps a NUMA node it must sit in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Want {
    pidx: u8,
    compute: ComputeShape,
    numa: Option<u8>,
}

/// A feasible alternative wish during the search: its size key, the wish, and its placement.
type AltCandidate = ((u32, u32, usize), Vec<Want>, Vec<(Want, Candidate)>);

/// Score of the free space a layout leaves; larger is better.
type Score = (u8, (u8, u8), u8);

impl<'m> Planner<'m> {
    /// Precompute the tables for `model`.
    pub fn new(model: &'m GpuModel) -> Self {
        let mut candidates = Vec::new();
        for (pidx, p) in model.profiles.iter().enumerate().take(MAX_PROFILES) {
            for &start in &p.placements {
                if u32::from(start) + u32::from(p.placement_size) <= u32::from(model.placement_units) {
                    candidates.push(Candidate {
                        pidx: u8::try_from(pidx).unwrap_or(u8::MAX),
                        start,
                        mask: unit_mask(start, p.placement_size),
                    });
                }
            }
        }
        // Largest first, then by start: the order the search tries candidates in.
        candidates.sort_by(|a, b| {
            let pa = &model.profiles[usize::from(a.pidx)];
            let pb = &model.profiles[usize::from(b.pidx)];
            pb.placement_size.cmp(&pa.placement_size).then(a.pidx.cmp(&b.pidx)).then(a.start.cmp(&b.start))
        });
        let units = u32::from(model.placement_units.min(16));
        let size = 1usize << units;
        // Shapes: one representative candidate list of profiles that want nothing special.
        let shape_cands: Vec<Candidate> = candidates
            .iter()
            .copied()
            .filter(|c| {
                matches!(model.profiles[usize::from(c.pidx)].kind, ProfileKind::Standard | ProfileKind::Graphics)
            })
            .collect();
        let mut usable = vec![0u8; size];
        let mut largest = vec![(0u8, 0u8); size];
        let mut fit_sum = vec![0u8; size];
        // Process masks from full to empty so that `usable[mask | c]` is known when needed.
        for mask in (0..size).rev() {
            let m = u32::try_from(mask).unwrap_or(u32::MAX);
            let mut best = 0u8;
            let mut big = (0u8, 0u8);
            for c in &shape_cands {
                if c.mask & m == 0 {
                    let p = &model.profiles[usize::from(c.pidx)];
                    let next = usize::try_from(m | c.mask).unwrap_or(0);
                    best = best.max(p.compute_slices.saturating_add(usable[next]));
                    big = big.max((p.compute_slices, p.memory_slices));
                }
            }
            usable[mask] = best;
            largest[mask] = big;
            let mut sum = 0u8;
            for (pidx, p) in model.profiles.iter().enumerate() {
                if !matches!(p.kind, ProfileKind::Standard | ProfileKind::Graphics) {
                    continue;
                }
                let mut occ = m;
                let mut n = 0u8;
                for c in shape_cands.iter().filter(|c| usize::from(c.pidx) == pidx) {
                    if c.mask & occ == 0 && n < p.max_count {
                        occ |= c.mask;
                        n += 1;
                    }
                }
                sum = sum.saturating_add(n);
            }
            fit_sum[mask] = sum;
        }
        let mut by_profile = vec![Vec::new(); model.profiles.len()];
        for c in &candidates {
            by_profile[usize::from(c.pidx)].push(*c);
        }
        Planner { model, candidates, by_profile, usable, largest, fit_sum }
    }

    /// The model this planner plans for.
    pub fn model(&self) -> &'m GpuModel {
        self.model
    }

    fn profile(&self, pidx: u8) -> &'m Profile {
        &self.model.profiles[usize::from(pidx)]
    }

    fn pidx_of(&self, profile_id: u32) -> Option<u8> {
        self.model.profile_index(profile_id).and_then(|i| u8::try_from(i).ok())
    }

    fn empty_state(&self) -> State {
        State { mask: 0, counts: [0; MAX_PROFILES], instances: 0, compute: 0, ofa: 0, media_users: 0, media_all: false }
    }

    fn can_add(&self, s: &State, c: &Candidate) -> bool {
        let p = self.profile(c.pidx);
        if s.mask & c.mask != 0
            || s.counts[usize::from(c.pidx)] >= p.max_count
            || s.instances >= self.model.max_gpu_instances
            || s.compute.saturating_add(p.compute_slices) > self.model.compute_slices
            || s.ofa.saturating_add(p.ofa_engines) > self.model.ofa_engines
        {
            return false;
        }
        if p.kind == ProfileKind::MediaAll && s.media_users > 0 {
            return false;
        }
        if s.media_all && !p.is_no_media() {
            return false;
        }
        true
    }

    fn add(&self, s: &State, c: &Candidate) -> State {
        let p = self.profile(c.pidx);
        let mut n = *s;
        n.mask |= c.mask;
        n.counts[usize::from(c.pidx)] += 1;
        n.instances += 1;
        n.compute += p.compute_slices;
        n.ofa += p.ofa_engines;
        if !p.is_no_media() {
            n.media_users += 1;
        }
        if p.kind == ProfileKind::MediaAll {
            n.media_all = true;
        }
        n
    }

    fn score(&self, s: &State) -> Score {
        let m = usize::try_from(s.mask).unwrap_or(0);
        (self.usable[m], self.largest[m], self.fit_sum[m])
    }

    /// Build the search state of an existing layout, or say what is wrong with it.
    fn state_of(&self, layout: &[Instance]) -> Result<State, Vec<Violation>> {
        let violations = validate(self.model, layout);
        if !violations.is_empty() {
            return Err(violations);
        }
        let mut s = self.empty_state();
        for inst in layout {
            let pidx = self
                .pidx_of(inst.profile_id)
                .ok_or_else(|| vec![Violation::UnknownProfile { profile_id: inst.profile_id }])?;
            let c =
                Candidate { pidx, start: inst.start, mask: unit_mask(inst.start, self.profile(pidx).placement_size) };
            s = self.add(&s, &c);
        }
        Ok(s)
    }

    fn fits_numa(&self, c: &Candidate, numa: Option<u8>) -> bool {
        match numa {
            None => true,
            Some(n) => self.model.gpu_numa_node(c.start, self.profile(c.pidx).placement_size) == Some(n),
        }
    }

    /// Best assignment of `wants` (sorted) on top of `base`: the chosen candidates, or None.
    fn search(&self, base: &State, wants: &[Want]) -> Option<Vec<(Want, Candidate)>> {
        let mut best: Option<(Score, Vec<(Want, Candidate)>)> = None;
        let mut chosen: Vec<(Want, Candidate)> = Vec::with_capacity(wants.len());
        self.dfs(base, wants, 0, &mut chosen, &mut best);
        best.map(|(_, v)| v)
    }

    fn dfs(
        &self,
        s: &State,
        wants: &[Want],
        i: usize,
        chosen: &mut Vec<(Want, Candidate)>,
        best: &mut Option<(Score, Vec<(Want, Candidate)>)>,
    ) {
        let Some(w) = wants.get(i) else {
            let sc = self.score(s);
            if best.as_ref().is_none_or(|(b, _)| sc > *b) {
                *best = Some((sc, chosen.clone()));
            }
            return;
        };
        // Identical consecutive wishes take increasing starts: no permutations of the same set.
        let min_start = match (i.checked_sub(1).and_then(|j| chosen.get(j)), wants.get(i.wrapping_sub(1))) {
            (Some((pw, pc)), Some(_)) if pw == w => Some(pc.start),
            _ => None,
        };
        // How many identical wishes, this one included, still need a later start.
        let run = wants[i..].iter().take_while(|x| *x == w).count();
        let group = &self.by_profile[usize::from(w.pidx)];
        for (j, c) in group.iter().enumerate() {
            if group.len() - j < run {
                break; // not enough later starts left for the identical wishes
            }
            if min_start.is_some_and(|m| c.start <= m) || !self.fits_numa(c, w.numa) || !self.can_add(s, c) {
                continue;
            }
            let n = self.add(s, c);
            chosen.push((*w, *c));
            self.dfs(&n, wants, i + 1, chosen, best);
            chosen.pop();
        }
    }

    fn sort_wants(&self, wants: &mut [Want]) {
        wants.sort_by(|a, b| {
            let pa = self.profile(a.pidx);
            let pb = self.profile(b.pidx);
            pb.placement_size.cmp(&pa.placement_size).then(pa.placements.len().cmp(&pb.placements.len())).then(a.cmp(b))
        });
    }

    fn wants_of(&self, wanted: &[WantedInstance]) -> Result<Vec<Want>, u32> {
        wanted
            .iter()
            .map(|w| {
                self.pidx_of(w.profile_id).map(|pidx| Want { pidx, compute: w.compute, numa: None }).ok_or(w.profile_id)
            })
            .collect()
    }

    fn assemble(&self, existing: &[Instance], chosen: &[(Want, Candidate)]) -> Placement {
        let placed: Vec<Instance> = chosen
            .iter()
            .map(|(w, c)| Instance { profile_id: self.profile(c.pidx).id, start: c.start, compute: w.compute })
            .collect();
        let mut layout: Vec<Instance> = existing.iter().copied().chain(placed.iter().copied()).collect();
        layout.sort_by_key(|i| (i.start, i.profile_id));
        let mut placed = placed;
        placed.sort_by_key(|i| (i.start, i.profile_id));
        Placement { layout, placed }
    }

    /// Place `wanted` next to `existing` without moving anything that exists.
    pub fn place(&self, wanted: &[WantedInstance], existing: &[Instance]) -> Result<Placement, PlaceError> {
        let base = self
            .state_of(existing)
            .map_err(|violations| PlaceError::InvalidExisting { model: self.model.name.clone(), violations })?;
        let mut wants = self
            .wants_of(wanted)
            .map_err(|profile_id| PlaceError::UnknownProfile { model: self.model.name.clone(), profile_id })?;
        self.sort_wants(&mut wants);
        if let Some(chosen) = self.search(&base, &wants) {
            return Ok(self.assemble(existing, &chosen));
        }
        Err(PlaceError::Infeasible {
            model: self.model.name.clone(),
            reason: self.explain(&base, existing, &wants),
            alternative: self.alternative(&base, existing, &wants),
        })
    }

    /// NVIDIA's NUMA localisation: one instance of `profile_id` inside each GPU-internal NUMA node.
    pub fn place_per_gpu_numa(&self, profile_id: u32, existing: &[Instance]) -> Result<Placement, PlaceError> {
        let model = self.model.name.clone();
        let pidx = self.pidx_of(profile_id).ok_or(PlaceError::UnknownProfile { model: model.clone(), profile_id })?;
        let Some(numa) = self.model.gpu_numa.as_ref() else {
            return Err(PlaceError::Infeasible {
                model: model.clone(),
                reason: format!("{model} has no known GPU-internal NUMA nodes, so there is nothing to localise to"),
                alternative: None,
            });
        };
        let p = self.profile(pidx);
        if !p.placements.iter().any(|&s| self.model.gpu_numa_node(s, p.placement_size).is_some()) {
            let fitting: Vec<&str> = self
                .model
                .profiles
                .iter()
                .filter(|q| q.kind == ProfileKind::Standard)
                .filter(|q| q.placements.iter().any(|&s| self.model.gpu_numa_node(s, q.placement_size).is_some()))
                .map(|q| q.name.as_str())
                .collect();
            return Err(PlaceError::Infeasible {
                model: model.clone(),
                reason: format!(
                    "{} spans both GPU NUMA nodes of {model}; profiles that fit inside one node: {}",
                    p.name,
                    fitting.join(", ")
                ),
                alternative: None,
            });
        }
        let base = self
            .state_of(existing)
            .map_err(|violations| PlaceError::InvalidExisting { model: model.clone(), violations })?;
        if let Some(placement) = self.per_numa_search(&base, existing, pidx, numa.nodes) {
            return Ok(placement);
        }
        let mut reason = format!("cannot place one {} in each of the {} GPU NUMA nodes of {model}", p.name, numa.nodes);
        if p.max_count < numa.nodes {
            reason.push_str(&format!(": at most {} per GPU", p.max_count));
        } else if !existing.is_empty() {
            reason.push_str(": the existing instances leave no free placement inside every node");
        }
        // Nearest alternative: the largest strictly smaller standard profile that fits per node.
        let alternative = self.smaller_standard(p).into_iter().find_map(|qidx| {
            let q = self.profile(qidx);
            self.per_numa_search(&base, existing, qidx, numa.nodes).map(|placement| Alternative {
                profiles: vec![q.name.clone(); usize::from(numa.nodes)],
                summary: format!("one {} per GPU NUMA node fits", q.name),
                placement,
            })
        });
        Err(PlaceError::Infeasible { model, reason, alternative: alternative.map(Box::new) })
    }

    fn per_numa_search(&self, base: &State, existing: &[Instance], pidx: u8, nodes: u8) -> Option<Placement> {
        let mut wants: Vec<Want> =
            (0..nodes).map(|n| Want { pidx, compute: ComputeShape::Full, numa: Some(n) }).collect();
        self.sort_wants(&mut wants);
        self.search(base, &wants).map(|chosen| self.assemble(existing, &chosen))
    }

    /// Say, in the domain's words, why `wants` cannot join `existing`.
    fn explain(&self, base: &State, existing: &[Instance], wants: &[Want]) -> String {
        // 1. Per-profile limits.
        let mut per: BTreeMap<u8, usize> = BTreeMap::new();
        for w in wants {
            *per.entry(w.pidx).or_default() += 1;
        }
        for (&pidx, &n) in &per {
            let p = self.profile(pidx);
            let have = usize::from(base.counts[usize::from(pidx)]);
            if n + have > usize::from(p.max_count) {
                let already = if have > 0 { format!(" ({have} already exist)") } else { String::new() };
                if p.placements.len() == 1 && p.max_count == 1 {
                    return format!(
                        "{} {} both need start {} (its only placement){already}",
                        count_word(n + have),
                        p.name,
                        p.placements[0]
                    );
                }
                return format!(
                    "{} × {} asked but at most {} fit on one {}{already}",
                    n, p.name, p.max_count, self.model.name
                );
            }
        }
        // 2. Media engines.
        let ofa: u32 =
            wants.iter().map(|w| u32::from(self.profile(w.pidx).ofa_engines)).sum::<u32>() + u32::from(base.ofa);
        if ofa > u32::from(self.model.ofa_engines) {
            return format!(
                "{} has {} optical-flow engine(s) and each +me (or full) instance takes one: at most one +me instance per GPU",
                self.model.name, self.model.ofa_engines
            );
        }
        let media_all = wants.iter().any(|w| self.profile(w.pidx).kind == ProfileKind::MediaAll) || base.media_all;
        let media_users =
            wants.iter().filter(|w| !self.profile(w.pidx).is_no_media()).count() + usize::from(base.media_users);
        if media_all && media_users > 1 {
            return "a +me.all instance takes every media engine; only -me profiles can share the GPU with it"
                .to_string();
        }
        // 3. Capacity.
        let need_compute: u32 = wants.iter().map(|w| u32::from(self.profile(w.pidx).compute_slices)).sum();
        let free_compute = u32::from(self.model.compute_slices.saturating_sub(base.compute));
        let need_units: u32 = wants.iter().map(|w| u32::from(self.profile(w.pidx).placement_size)).sum();
        let free_units = u32::from(self.model.placement_units) - base.mask.count_ones();
        if need_compute > free_compute {
            return format!(
                "needs {need_compute} compute slices but only {free_compute} of {} are free",
                self.model.compute_slices
            );
        }
        if need_units > free_units {
            return format!(
                "needs {need_units} placement units but only {free_units} of {} are free",
                self.model.placement_units
            );
        }
        let instances = wants.len() + usize::from(base.instances);
        if instances > usize::from(self.model.max_gpu_instances) {
            return format!("{instances} GPU instances but at most {} per GPU", self.model.max_gpu_instances);
        }
        // 4. Placement conflict: find the first wish that cannot be placed after the others.
        let mut placed_state = *base;
        let mut placed_names: Vec<String> = existing.iter().map(|i| instance_label(self.model, i)).collect();
        for (i, w) in wants.iter().enumerate() {
            let rest = &wants[i..];
            match self.search(&placed_state, &rest[..1]) {
                Some(ch) if self.search(&placed_state, rest).is_some() || i + 1 < wants.len() => {
                    let (_, c) = ch[0];
                    placed_state = self.add(&placed_state, &c);
                    placed_names.push(format!("{}@{}", self.profile(c.pidx).name, c.start));
                }
                _ => {
                    let p = self.profile(w.pidx);
                    let blocking: Vec<String> = placed_names.clone();
                    return format!(
                        "{} needs start {} (size {}), but those units are taken by {}",
                        p.name,
                        p.placements.iter().map(u8::to_string).collect::<Vec<_>>().join(" or "),
                        p.placement_size,
                        if blocking.is_empty() { "nothing else".to_string() } else { blocking.join(", ") }
                    );
                }
            }
        }
        "no arrangement of the wanted profiles fits the free placement units".to_string()
    }

    /// The nearest feasible wish: drop or shrink as few instances as possible, keeping as many
    /// compute slices as possible.
    fn alternative(&self, base: &State, existing: &[Instance], wants: &[Want]) -> Option<Box<Alternative>> {
        let mut frontier: Vec<Vec<Want>> = vec![wants.to_vec()];
        let mut seen: std::collections::BTreeSet<Vec<Want>> = std::collections::BTreeSet::new();
        for _depth in 0..3 {
            let mut next: Vec<Vec<Want>> = Vec::new();
            for ws in &frontier {
                for i in 0..ws.len() {
                    for repl in self.smaller_options(ws[i]) {
                        let mut v = ws.clone();
                        match repl {
                            Some(r) => v[i] = r,
                            None => {
                                v.remove(i);
                            }
                        }
                        self.sort_wants(&mut v);
                        if !v.is_empty() && seen.insert(v.clone()) {
                            next.push(v);
                        }
                    }
                }
            }
            let mut best: Option<AltCandidate> = None;
            for ws in &next {
                if let Some(ch) = self.search(base, ws) {
                    let key = (
                        ws.iter().map(|w| u32::from(self.profile(w.pidx).compute_slices)).sum::<u32>(),
                        ws.iter().map(|w| u32::from(self.profile(w.pidx).memory_slices)).sum::<u32>(),
                        ws.len(),
                    );
                    if best.as_ref().is_none_or(|(k, _, _)| key > *k) {
                        best = Some((key, ws.clone(), ch));
                    }
                }
            }
            if let Some((_, ws, ch)) = best {
                let names: Vec<String> = ws.iter().map(|w| self.profile(w.pidx).name.clone()).collect();
                let mut all: Vec<String> = existing.iter().map(|i| instance_label(self.model, i)).collect();
                all.extend(names.iter().cloned());
                let summary = if existing.is_empty() {
                    format!("{} fits", names.join(" + "))
                } else {
                    format!("{} fits next to the existing instances", names.join(" + "))
                };
                return Some(Box::new(Alternative {
                    profiles: names,
                    placement: self.assemble(existing, &ch),
                    summary,
                }));
            }
            frontier = next;
            if frontier.len() > 4096 {
                break;
            }
        }
        None
    }

    /// Standard profiles strictly smaller than `p` (by compute, then memory), largest first.
    fn smaller_standard(&self, p: &Profile) -> Vec<u8> {
        let mut out: Vec<u8> = (0..self.model.profiles.len())
            .filter_map(|i| u8::try_from(i).ok())
            .filter(|&i| {
                let q = self.profile(i);
                q.kind == ProfileKind::Standard
                    && (q.compute_slices, q.memory_slices) < (p.compute_slices, p.memory_slices)
            })
            .collect();
        out.sort_by_key(|&i| std::cmp::Reverse((self.profile(i).compute_slices, self.profile(i).memory_slices)));
        out
    }

    /// Ways to make one wish smaller: a smaller standard profile, or dropping it (None).
    fn smaller_options(&self, w: Want) -> Vec<Option<Want>> {
        let mut out: Vec<Option<Want>> = self
            .smaller_standard(self.profile(w.pidx))
            .into_iter()
            .map(|pidx| Some(Want { pidx, compute: ComputeShape::Full, numa: w.numa }))
            .collect();
        out.push(None);
        out
    }

    /// Plan the steps from `current` to `wanted`, never touching a busy instance.
    pub fn reconfigure(
        &self,
        current: &[CurrentInstance],
        wanted: &Wanted,
    ) -> Result<ReconfigurePlan, ReconfigureError> {
        let model = self.model.name.clone();
        let cur_layout: Vec<Instance> = current.iter().map(|c| c.instance).collect();
        if let Some(v) = validate(self.model, &cur_layout).into_iter().next() {
            return Err(ReconfigureError::Infeasible {
                model,
                reason: format!("the current layout is not valid: {v}"),
            });
        }
        match wanted {
            Wanted::Layout(target) => self.reconfigure_to_layout(current, target),
            Wanted::Profiles(profiles) => self.reconfigure_to_profiles(current, profiles),
        }
    }

    fn blocker(&self, c: &CurrentInstance) -> Blocker {
        Blocker {
            instance: c.instance,
            label: instance_label(self.model, &c.instance),
            gpu_instance_id: c.gpu_instance_id,
        }
    }

    fn reconfigure_to_layout(
        &self,
        current: &[CurrentInstance],
        target: &[Instance],
    ) -> Result<ReconfigurePlan, ReconfigureError> {
        let model = self.model.name.clone();
        let violations = validate(self.model, target);
        if !violations.is_empty() {
            return Err(ReconfigureError::Infeasible { model, reason: join_violations(&violations) });
        }
        let mut remaining: Vec<Instance> = target.to_vec();
        let mut unchanged = Vec::new();
        let mut destroys = Vec::new();
        let mut blockers = Vec::new();
        for c in current {
            if let Some(pos) = remaining.iter().position(|t| *t == c.instance) {
                remaining.remove(pos);
                unchanged.push(c.instance);
            } else if c.busy {
                blockers.push(self.blocker(c));
            } else {
                destroys.push(*c);
            }
        }
        if !blockers.is_empty() {
            return Err(ReconfigureError::BusyInstancesBlock {
                model,
                blockers,
                reason: "they are not part of the wanted layout and busy instances are never destroyed".into(),
            });
        }
        Ok(self.make_plan(destroys, remaining, unchanged))
    }

    fn make_plan(
        &self,
        destroys: Vec<CurrentInstance>,
        creates: Vec<Instance>,
        unchanged: Vec<Instance>,
    ) -> ReconfigurePlan {
        let size = |i: &Instance| self.model.profile_by_id(i.profile_id).map_or(0, |p| p.placement_size);
        let mut destroys = destroys;
        destroys.sort_by_key(|c| (std::cmp::Reverse(size(&c.instance)), c.instance.start));
        let mut creates = creates;
        creates.sort_by_key(|i| (std::cmp::Reverse(size(i)), i.start));
        let mut target: Vec<Instance> = unchanged.iter().chain(creates.iter()).copied().collect();
        target.sort_by_key(|i| (i.start, i.profile_id));
        let mut unchanged = unchanged;
        unchanged.sort_by_key(|i| (i.start, i.profile_id));
        let steps = destroys
            .iter()
            .map(|c| Step::Destroy { instance: c.instance, gpu_instance_id: c.gpu_instance_id })
            .chain(creates.iter().map(|i| Step::Create { instance: *i }))
            .collect();
        ReconfigurePlan { steps, target, unchanged }
    }

    fn reconfigure_to_profiles(
        &self,
        current: &[CurrentInstance],
        wanted: &[WantedInstance],
    ) -> Result<ReconfigurePlan, ReconfigureError> {
        let model = self.model.name.clone();
        for w in wanted {
            if self.pidx_of(w.profile_id).is_none() {
                return Err(ReconfigureError::UnknownProfile { model, profile_id: w.profile_id });
            }
        }
        // The wish on its own must be possible.
        if let Err(e) = self.place(wanted, &[]) {
            let reason = match e {
                PlaceError::Infeasible { reason, alternative, .. } => {
                    format!("{reason}{}", alternative_text(&alternative))
                }
                other => other.to_string(),
            };
            return Err(ReconfigureError::Infeasible { model, reason });
        }
        let busy: Vec<&CurrentInstance> = current.iter().filter(|c| c.busy).collect();
        let idle: Vec<&CurrentInstance> = current.iter().filter(|c| !c.busy).collect();
        // Busy instances stay; they must be part of the wish.
        let mut rest: Vec<WantedInstance> = wanted.to_vec();
        let mut extra_busy = Vec::new();
        for b in &busy {
            let w = WantedInstance::from(b.instance);
            match rest.iter().position(|r| *r == w) {
                Some(pos) => {
                    rest.remove(pos);
                }
                None => extra_busy.push(self.blocker(b)),
            }
        }
        if !extra_busy.is_empty() {
            return Err(ReconfigureError::BusyInstancesBlock {
                model,
                blockers: extra_busy,
                reason: "the wanted profiles do not include them and busy instances are never destroyed".into(),
            });
        }
        let busy_layout: Vec<Instance> = busy.iter().map(|c| c.instance).collect();
        // Keep as many idle instances as possible (fewest steps), then the most useful free space.
        let keepable: Vec<usize> =
            (0..idle.len()).filter(|&i| rest.contains(&WantedInstance::from(idle[i].instance))).collect();
        let n = keepable.len().min(16);
        for keep_n in (0..=n).rev() {
            let mut best: Option<(Score, Vec<usize>, Placement)> = None;
            for subset in subsets_of_size(n, keep_n) {
                let kept: Vec<usize> = subset.iter().map(|&k| keepable[k]).collect();
                let mut still = rest.clone();
                let mut ok = true;
                for &k in &kept {
                    let w = WantedInstance::from(idle[k].instance);
                    match still.iter().position(|r| *r == w) {
                        Some(pos) => {
                            still.remove(pos);
                        }
                        None => ok = false,
                    }
                }
                if !ok {
                    continue;
                }
                let mut existing = busy_layout.clone();
                existing.extend(kept.iter().map(|&k| idle[k].instance));
                if let Ok(pl) = self.place(&still, &existing) {
                    let st = self.state_of(&pl.layout).ok();
                    let sc = st.map_or((0, (0, 0), 0), |s| self.score(&s));
                    if best.as_ref().is_none_or(|(b, _, _)| sc > *b) {
                        best = Some((sc, kept, pl));
                    }
                }
            }
            if let Some((_, kept, pl)) = best {
                let destroys: Vec<CurrentInstance> =
                    (0..idle.len()).filter(|i| !kept.contains(i)).map(|i| *idle[i]).collect();
                let mut unchanged = busy_layout.clone();
                unchanged.extend(kept.iter().map(|&k| idle[k].instance));
                return Ok(self.make_plan(destroys, pl.placed, unchanged));
            }
        }
        // Not possible around the busy instances: name the fewest that block it.
        for size in 1..=busy.len() {
            for subset in subsets_of_size(busy.len(), size) {
                let fixed: Vec<Instance> =
                    (0..busy.len()).filter(|i| !subset.contains(i)).map(|i| busy[i].instance).collect();
                let mut still = wanted.to_vec();
                for f in &fixed {
                    if let Some(pos) = still.iter().position(|r| *r == WantedInstance::from(*f)) {
                        still.remove(pos);
                    }
                }
                if self.place(&still, &fixed).is_ok() {
                    let blockers: Vec<Blocker> = subset.iter().map(|&i| self.blocker(busy[i])).collect();
                    return Err(ReconfigureError::BusyInstancesBlock {
                        model,
                        blockers,
                        reason: "the wanted profiles fit only if these were moved, and busy instances are never moved"
                            .into(),
                    });
                }
            }
        }
        Err(ReconfigureError::Infeasible {
            model,
            reason: "the wanted profiles do not fit next to the busy instances".into(),
        })
    }

    /// Free and unusable capacity of `layout`.
    pub fn fragmentation(&self, layout: &[Instance]) -> Result<FragmentationReport, Vec<Violation>> {
        let s = self.state_of(layout)?;
        let all = unit_mask(0, self.model.placement_units);
        let free_mask = all & !s.mask;
        let usable = self.best_fill(&s);
        let mut covered = 0u32;
        for c in &self.candidates {
            if self.can_add(&s, c) {
                covered |= c.mask;
            }
        }
        let fits = self
            .model
            .profiles
            .iter()
            .enumerate()
            .map(|(pidx, p)| {
                let mut st = s;
                let mut n = 0u8;
                for c in self.candidates.iter().filter(|c| usize::from(c.pidx) == pidx) {
                    if self.can_add(&st, c) {
                        st = self.add(&st, c);
                        n += 1;
                    }
                }
                ProfileFit { profile: p.name.clone(), profile_id: p.id, count: n }
            })
            .collect();
        let free_compute = self.model.compute_slices.saturating_sub(s.compute);
        Ok(FragmentationReport {
            free_units: mask_units(free_mask),
            stranded_units: mask_units(free_mask & !covered),
            free_compute_slices: free_compute,
            usable_compute_slices: usable,
            unusable_compute_slices: free_compute.saturating_sub(usable),
            fits,
        })
    }

    /// Most compute slices that can still be added, with every rule applied (exact search).
    fn best_fill(&self, s: &State) -> u8 {
        fn go(pl: &Planner<'_>, s: &State, from: usize) -> u8 {
            let mut best = 0u8;
            for (i, c) in pl.candidates.iter().enumerate().skip(from) {
                if pl.can_add(s, c) {
                    let n = pl.add(s, c);
                    best = best.max(pl.profile(c.pidx).compute_slices + go(pl, &n, i + 1));
                }
            }
            best
        }
        go(self, s, 0)
    }

    /// Every maximal layout (no further instance fits), over the profiles `filter` allows
    /// (all profiles when `None`). Layouts are ordered by start.
    pub fn maximal_layouts(&self, filter: Option<&[u32]>) -> Vec<Vec<Instance>> {
        let cands: Vec<Candidate> = self
            .candidates
            .iter()
            .copied()
            .filter(|c| filter.is_none_or(|f| f.contains(&self.profile(c.pidx).id)))
            .collect();
        let mut out = Vec::new();
        let mut chosen = Vec::new();
        self.enumerate(&cands, &self.empty_state(), 0, &mut chosen, &mut out);
        out.sort();
        out
    }

    fn enumerate(
        &self,
        cands: &[Candidate],
        s: &State,
        from: usize,
        chosen: &mut Vec<Candidate>,
        out: &mut Vec<Vec<Instance>>,
    ) {
        let mut extended = false;
        for (i, c) in cands.iter().enumerate() {
            if !self.can_add(s, c) {
                continue;
            }
            if i < from {
                // Something earlier still fits: this branch is not maximal, and the layout with it
                // is reached from another branch.
                extended = true;
                continue;
            }
            extended = true;
            let n = self.add(s, c);
            chosen.push(*c);
            self.enumerate(cands, &n, i + 1, chosen, out);
            chosen.pop();
        }
        if !extended && !chosen.is_empty() {
            let mut layout: Vec<Instance> =
                chosen.iter().map(|c| Instance::new(self.profile(c.pidx).id, c.start)).collect();
            layout.sort_by_key(|i| (i.start, i.profile_id));
            out.push(layout);
        }
    }
}

fn count_word(n: usize) -> String {
    match n {
        2 => "two".into(),
        3 => "three".into(),
        4 => "four".into(),
        n => n.to_string(),
    }
}

/// All `k`-element subsets of `0..n`, as index lists, in lexicographic order.
pub fn subsets_of_size(n: usize, k: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    let mut cur = Vec::with_capacity(k);
    fn go(start: usize, n: usize, k: usize, cur: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if cur.len() == k {
            out.push(cur.clone());
            return;
        }
        for i in start..n {
            if n - i < k - cur.len() {
                break;
            }
            cur.push(i);
            go(i + 1, n, k, cur, out);
            cur.pop();
        }
    }
    go(0, n, k, &mut cur, &mut out);
    out
}

/// The planner of a catalog model, built once and kept for the life of the process; `None` for a
/// model from outside the embedded catalog (a test fixture, an NVML-discovered one).
pub fn planner_for(model: &GpuModel) -> Option<&'static Planner<'static>> {
    static PLANNERS: std::sync::OnceLock<Vec<Planner<'static>>> = std::sync::OnceLock::new();
    let all = PLANNERS.get_or_init(|| crate::catalog().models.iter().map(Planner::new).collect());
    all.iter().find(|p| std::ptr::eq(p.model, model))
}

/// [`Planner::place`], with the cached planner for catalog models.
pub fn place(model: &GpuModel, wanted: &[WantedInstance], existing: &[Instance]) -> Result<Placement, PlaceError> {
    match planner_for(model) {
        Some(p) => p.place(wanted, existing),
        None => Planner::new(model).place(wanted, existing),
    }
}

/// [`Planner::reconfigure`], with the cached planner for catalog models.
pub fn reconfigure(
    model: &GpuModel,
    current: &[CurrentInstance],
    wanted: &Wanted,
) -> Result<ReconfigurePlan, ReconfigureError> {
    match planner_for(model) {
        Some(p) => p.reconfigure(current, wanted),
        None => Planner::new(model).reconfigure(current, wanted),
    }
}
