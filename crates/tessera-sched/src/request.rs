//! Job requests: what one job needs (a GPU slice per rank, how it shares it, CPU cores and host
//! memory, tenant and priority), how a request is checked ([`JobRequest::validate`]) and how its
//! GPU need becomes MIG profiles on one GPU model ([`JobRequest::resolve`]).
//!
//! Resolution rules (per rank, per GPU model; only standard profiles, never `+me`, `+gfx`,
//! `-me` or `+me.all`, are chosen for an amount):
//!
//! - `Memory { mib }`: the smallest profile whose memory is at least `mib` MiB. The memory is the
//!   catalog's exact figure (an H100's `1g.10gb` has 9,984 MiB, so 10 GiB = 10,240 MiB needs a
//!   `1g.20gb`); where the catalog has no figure it is estimated from the model's other profiles.
//! - `ComputeSlices { slices }`: the smallest profile with at least that many compute slices
//!   (fewest memory slices among equals).
//! - `Profile { name }`: exactly that profile (name, `aka` name or profile id, case-insensitive).
//! - `WholeGpu`: the model's full profile (`7g.80gb` on an H100, `4g.96gb` on an RTX PRO 6000).
//! - `Instances(list)`: one instance per entry, all on the same GPU (they must fit one GPU).
//!
//! An instance *fits* a need when it is at least as large as the amount asked (a larger free
//! instance can serve a `Memory` or `ComputeSlices` need), or is exactly the profile asked for
//! `Profile` and `WholeGpu`. An MPS job's pinned memory must also fit the instance.

use serde::{Deserialize, Serialize};
use tessera_mig::{ComputeShape, GpuModel, Instance, Profile, ProfileKind, WantedInstance};

/// The most ranks one job may ask for.
pub const MAX_RANKS: u32 = 4096;
/// The most instances one rank may ask for.
pub const MAX_INSTANCES_PER_RANK: usize = 16;

/// What GPU capacity one rank needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum GpuRequest {
    /// At least this much GPU memory, in MiB: the smallest profile with that much.
    Memory { mib: u64 },
    /// At least this many compute slices: the smallest profile with that many.
    ComputeSlices { slices: u8 },
    /// Exactly this profile, by name (resolved per GPU model).
    Profile { name: String },
    /// The whole GPU: the model's full profile.
    WholeGpu,
    /// Several instances on one GPU, one per entry (entries may not be lists themselves).
    Instances(Vec<GpuRequest>),
}

/// How a job uses its instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Sharing {
    /// The instance is the job's alone (the default).
    #[default]
    Exclusive,
    /// An MPS client of the instance: jobs share it while the sum of their active-thread
    /// percentages is at most 100 and the sum of their pinned memory limits fits the instance's
    /// memory. A client without a pinned limit reserves no memory.
    Mps {
        active_thread_pct: u8,
        #[serde(default)]
        pinned_mem_mib: Option<u64>,
    },
    /// Time-sliced: up to `SchedulerConfig::time_slice_replicas` jobs share the instance.
    TimeSlice,
}

impl Sharing {
    /// Whether a job with this sharing may join an instance already used by `other`.
    pub fn compatible_with(&self, other: &Sharing) -> bool {
        matches!((self, other), (Sharing::Mps { .. }, Sharing::Mps { .. }) | (Sharing::TimeSlice, Sharing::TimeSlice))
    }

    /// Whether the instance can be shared at all.
    pub fn is_shared(&self) -> bool {
        !matches!(self, Sharing::Exclusive)
    }
}

/// Where a job's CPU cores and host memory come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NumaPolicy {
    /// From the host NUMA node of the rank's GPU (the default). Where the GPU's node is unknown,
    /// from any node, and memory is not bound.
    #[default]
    Local,
    /// From any node: the GPU's own node when it has room, else one node with room, else spread.
    Any,
}

fn default_ranks() -> u32 {
    1
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

fn default_tenant() -> String {
    "default".to_string()
}

/// One job's request, as the daemon's API receives it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// The GPU capacity one rank needs.
    pub gpu: GpuRequest,
    /// Processes started together (a gang), each with its own instance(s). At least 1.
    #[serde(default = "default_ranks")]
    pub ranks: u32,
    /// Whole GPUs each rank holds (Slurm's `--gres=gpu:N`): the rank's process sees all of
    /// them. Above 1 only with `gpu = whole_gpu`; its CPUs and memory are split over them.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub gpus_per_rank: u32,
    /// Place the two ranks one per GPU-internal NUMA node of one GPU (NVIDIA's localisation).
    #[serde(default)]
    pub gpu_numa_local: bool,
    #[serde(default)]
    pub sharing: Sharing,
    /// CPU cores per rank.
    #[serde(default)]
    pub cpus: u32,
    /// Host memory per rank, in MiB.
    #[serde(default)]
    pub mem_mib: u64,
    #[serde(default)]
    pub numa: NumaPolicy,
    #[serde(default = "default_tenant")]
    pub tenant: String,
    /// Higher runs first.
    #[serde(default)]
    pub priority: i32,
    /// How long the job is expected to run; lets it backfill ahead of a reservation.
    #[serde(default)]
    pub runtime_estimate_ms: Option<u64>,
    /// The job is stopped after this long.
    #[serde(default)]
    pub time_limit_ms: Option<u64>,
    /// The job may be stopped and queued again (preemption, a failed GPU). `false`: it is
    /// never preempted, and a GPU failure ends it.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub requeue: bool,
    /// Exactly these existing instances, for its one rank: a front door's pin on instances
    /// another system already gave away (the kubelet allocated them to a pod). The job takes
    /// them and nothing else; nothing is created, destroyed, reserved or preempted for it, and
    /// it is decided before any other job of its round. Exclusive, it needs them free; shared
    /// (time-sliced or MPS: a replica the other system hands out), it joins whatever compatible
    /// jobs share them, however many (that system bounds its replicas, not
    /// `time_slice_replicas`, and MPS shares are its to size). Empty: placed by the scheduler.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pin: Vec<PinnedInstance>,
}

/// One existing instance a pinned request takes: its GPU and its spec key (profile id and
/// first placement unit; MIG off, the model's full profile at 0 is the whole GPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedInstance {
    pub gpu: u32,
    pub profile_id: u32,
    pub start: u8,
}

impl PinnedInstance {
    /// Whether it is `instance` on GPU `gpu`.
    pub fn is(&self, gpu: u32, instance: &Instance) -> bool {
        self.gpu == gpu && self.profile_id == instance.profile_id && self.start == instance.start
    }
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// What is wrong with a request, naming the field, or why it cannot be met on a GPU model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// A field has a value the scheduler cannot accept.
    #[error("invalid job request: `{field}` {reason}")]
    Invalid { field: &'static str, reason: String },
    /// No profile of the model is large enough.
    #[error("no MIG profile of {model} has {wanted}; the largest: {}", closest.join(", "))]
    NoProfileFits { model: String, wanted: String, closest: Vec<String> },
    /// The model has no profile of that name.
    #[error("unknown MIG profile '{name}' for {model}{}", did_you_mean_list(suggestions))]
    UnknownProfile { model: String, name: String, suggestions: Vec<String> },
    /// The instances one rank asks for do not fit together on one GPU of the model.
    #[error("one rank needs {} but they do not fit together on one {model}: {reason}", profiles.join(" + "))]
    RankDoesNotFit { model: String, profiles: Vec<String>, reason: String },
    /// `gpu_numa_local` cannot be honoured on the model.
    #[error("gpu_numa_local on {model}: {reason}")]
    NumaLocal { model: String, reason: String },
}

impl RequestError {
    /// The request field the error is about.
    pub fn field(&self) -> &'static str {
        match self {
            RequestError::Invalid { field, .. } => field,
            RequestError::NumaLocal { .. } => "gpu_numa_local",
            RequestError::NoProfileFits { .. }
            | RequestError::UnknownProfile { .. }
            | RequestError::RankDoesNotFit { .. } => "gpu",
        }
    }
}

fn did_you_mean_list(suggestions: &[String]) -> String {
    match suggestions {
        [] => String::new(),
        [one] => format!(" (did you mean '{one}'?)"),
        many => format!(" (did you mean one of: {}?)", many.join(", ")),
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> RequestError {
    RequestError::Invalid { field, reason: reason.into() }
}

/// `10 GiB`, `9.75 GiB`, `512 MiB`.
pub fn fmt_mib(mib: u64) -> String {
    if mib >= 1024 {
        let gib = mib as f64 / 1024.0;
        let s = format!("{gib:.2}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        format!("{s} GiB")
    } else {
        format!("{mib} MiB")
    }
}

/// A profile's memory in MiB: the catalog's figure, or an estimate from the model's other
/// profiles (smallest MiB per memory slice), its total memory, or the profile name's `NNgb`.
pub fn profile_memory_mib(model: &GpuModel, profile: &Profile) -> u64 {
    if let Some(m) = profile.memory_mib {
        return m;
    }
    let slices = u64::from(profile.memory_slices);
    let per_slice = model
        .profiles
        .iter()
        .filter_map(|p| p.memory_mib.map(|m| m / u64::from(p.memory_slices.max(1))))
        .min()
        .or_else(|| model.memory_total_mib.map(|t| t / u64::from(model.memory_slices.max(1))));
    if let Some(per) = per_slice {
        return per.saturating_mul(slices);
    }
    // `3g.135gb` → 135 GB, taken as 135,000 MiB (below 135 GiB, so never an over-estimate).
    profile
        .name
        .split('.')
        .nth(1)
        .and_then(|s| s.trim_end_matches(|c: char| !c.is_ascii_digit()).parse::<u64>().ok())
        .map_or(0, |gb| gb.saturating_mul(1000))
}

/// The compute slices an instance offers a job: its one compute instance's. A GPU instance split
/// into several compute instances (or holding none) offers nothing: a job is given one CUDA
/// device, the first compute instance of its GPU instance (`tessera-daemon`'s launch), so the
/// others would sit unseen beside it; such instances are left to whoever made them.
pub(crate) fn effective_compute(profile: &Profile, shape: ComputeShape) -> u8 {
    match shape {
        ComputeShape::Full => profile.compute_slices,
        ComputeShape::Slices(c) => c.min(profile.compute_slices),
        ComputeShape::Split(_) | ComputeShape::Other => 0,
    }
}

#[cfg(test)]
mod effective_compute_tests {
    use tessera_mig::layout::CiSizes;

    use super::*;

    #[test]
    fn only_one_compute_instance_serves_a_job() {
        let m = tessera_mig::catalog().model("A100-40GB").unwrap();
        let p = m.profile("3g.20gb").unwrap();
        let split = ComputeShape::Split(CiSizes::new(&[1, 1, 1]).unwrap());
        let cases = [(ComputeShape::Full, 3), (ComputeShape::Slices(1), 1), (split, 0), (ComputeShape::Other, 0)];
        for (shape, want) in cases {
            assert_eq!(effective_compute(p, shape), want, "{shape:?}");
        }
        let need = Need {
            kind: NeedKind::AtLeastCompute(1),
            pinned_mib: None,
            min_profile: p.id,
            min_compute: 1,
            min_memory_slices: 1,
            mig_only: true,
        };
        assert!(need.accepts(m, p, ComputeShape::Slices(1)));
        assert!(!need.accepts(m, p, split));
    }
}

fn is_standard(p: &Profile) -> bool {
    p.kind == ProfileKind::Standard
}

/// The full profile of a model: all compute and memory slices.
pub fn full_profile(model: &GpuModel) -> Option<&Profile> {
    model
        .profiles
        .iter()
        .filter(|p| is_standard(p))
        .find(|p| p.compute_slices == model.compute_slices && p.memory_slices == model.memory_slices)
        .or_else(|| {
            model.profiles.iter().filter(|p| is_standard(p)).max_by_key(|p| (p.compute_slices, p.memory_slices))
        })
}

/// What one instance of a rank must offer, resolved on one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum NeedKind {
    AtLeastMemory(u64),
    AtLeastCompute(u8),
    Exact(u32),
}

/// One instance a rank needs on one model: what it must offer, and the smallest profile that does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Need {
    pub kind: NeedKind,
    /// MPS pinned memory that must fit the instance.
    pub pinned_mib: Option<u64>,
    /// The smallest profile that satisfies the need (what a repartition creates).
    pub min_profile: u32,
    pub min_compute: u8,
    pub min_memory_slices: u8,
    /// An explicit MIG profile: only a MIG instance serves it, never a GPU with MIG off.
    pub mig_only: bool,
}

impl Need {
    /// Whether a profile (with a compute split) satisfies the need.
    pub fn accepts(&self, model: &GpuModel, profile: &Profile, shape: ComputeShape) -> bool {
        let compute = effective_compute(profile, shape);
        if compute == 0 {
            return false;
        }
        let mem = profile_memory_mib(model, profile);
        if self.pinned_mib.is_some_and(|p| p > mem) {
            return false;
        }
        match self.kind {
            NeedKind::AtLeastMemory(mib) => mem >= mib,
            NeedKind::AtLeastCompute(s) => compute >= s,
            NeedKind::Exact(id) => profile.id == id && compute == profile.compute_slices,
        }
    }
}

impl JobRequest {
    /// A single-rank exclusive request of `gpu` for tenant `default`, no CPUs, priority 0.
    pub fn new(gpu: GpuRequest) -> Self {
        JobRequest {
            gpu,
            ranks: 1,
            gpus_per_rank: 1,
            gpu_numa_local: false,
            sharing: Sharing::Exclusive,
            cpus: 0,
            mem_mib: 0,
            numa: NumaPolicy::Local,
            tenant: default_tenant(),
            priority: 0,
            runtime_estimate_ms: None,
            time_limit_ms: None,
            requeue: true,
            pin: Vec::new(),
        }
    }

    /// Whether the request is pinned to `instance` on GPU `gpu` (always, for an unpinned one).
    pub(crate) fn may_use(&self, gpu: u32, instance: &Instance) -> bool {
        self.pin.is_empty() || self.pin.iter().any(|p| p.is(gpu, instance))
    }

    /// Check the request on its own (no GPU model involved); the error names the field.
    pub fn validate(&self) -> Result<(), RequestError> {
        if self.ranks == 0 {
            return Err(invalid("ranks", "must be at least 1"));
        }
        if self.ranks > MAX_RANKS {
            return Err(invalid("ranks", format!("is {} but at most {MAX_RANKS} are allowed", self.ranks)));
        }
        validate_gpu(&self.gpu, false)?;
        if self.gpus_per_rank == 0 {
            return Err(invalid("gpus_per_rank", "must be at least 1"));
        }
        if self.gpus_per_rank > 1 {
            if !matches!(self.gpu, GpuRequest::WholeGpu) {
                return Err(invalid(
                    "gpus_per_rank",
                    format!(
                        "is {}: several GPUs per rank are whole GPUs (gpu = whole_gpu); a rank's MIG instances share one GPU",
                        self.gpus_per_rank
                    ),
                ));
            }
            if u64::from(self.ranks) * u64::from(self.gpus_per_rank) > u64::from(MAX_RANKS) {
                return Err(invalid(
                    "gpus_per_rank",
                    format!(
                        "{} ranks × {} GPUs is more than the {MAX_RANKS} placements a job may have",
                        self.ranks, self.gpus_per_rank
                    ),
                ));
            }
        }
        if self.gpu_numa_local {
            if self.ranks != 2 {
                return Err(invalid(
                    "gpu_numa_local",
                    format!(
                        "places one rank in each of a GPU's 2 NUMA nodes, so it needs ranks = 2, not {}",
                        self.ranks
                    ),
                ));
            }
            if matches!(self.gpu, GpuRequest::Instances(_)) {
                return Err(invalid("gpu_numa_local", "needs a single-instance gpu request, not a list of instances"));
            }
            if matches!(self.gpu, GpuRequest::WholeGpu) {
                return Err(invalid("gpu_numa_local", "cannot place a whole GPU inside one GPU NUMA node"));
            }
        }
        if let Sharing::Mps { active_thread_pct, pinned_mem_mib } = self.sharing {
            if !(1..=100).contains(&active_thread_pct) {
                return Err(invalid(
                    "sharing.mps.active_thread_pct",
                    format!("is {active_thread_pct}; must be 1..=100"),
                ));
            }
            if pinned_mem_mib == Some(0) {
                return Err(invalid("sharing.mps.pinned_mem_mib", "must be above 0 when given"));
            }
            if matches!(self.gpu, GpuRequest::Instances(_)) {
                return Err(invalid(
                    "sharing",
                    "MPS shares one instance; it cannot be combined with a list of instances",
                ));
            }
        }
        if self.tenant.trim().is_empty() {
            return Err(invalid("tenant", "must not be empty"));
        }
        if self.runtime_estimate_ms == Some(0) {
            return Err(invalid("runtime_estimate_ms", "must be above 0 when given"));
        }
        if self.time_limit_ms == Some(0) {
            return Err(invalid("time_limit_ms", "must be above 0 when given"));
        }
        self.validate_pin()
    }

    /// A pin names the instances of one rank on one GPU, each once, exactly as many as `gpu`
    /// asks for, held exclusively or shared (time-sliced, MPS).
    fn validate_pin(&self) -> Result<(), RequestError> {
        let Some(first) = self.pin.first() else { return Ok(()) };
        if self.ranks != 1 || self.gpus_per_rank != 1 || self.gpu_numa_local {
            return Err(invalid(
                "pin",
                "pins the instances of one rank: ranks and gpus_per_rank must be 1, without gpu_numa_local",
            ));
        }
        let wanted = self.instances_per_rank();
        if self.pin.len() != wanted {
            return Err(invalid("pin", format!("names {} instances but `gpu` asks for {wanted}", self.pin.len())));
        }
        if let Some(other) = self.pin.iter().find(|p| p.gpu != first.gpu) {
            return Err(invalid(
                "pin",
                format!(
                    "names instances on GPU {} and GPU {}; one rank's instances are on one GPU",
                    first.gpu, other.gpu
                ),
            ));
        }
        for (i, p) in self.pin.iter().enumerate() {
            if self.pin[..i].contains(p) {
                return Err(invalid(
                    "pin",
                    format!("names GPU {}'s instance of profile {} at {} twice", p.gpu, p.profile_id, p.start),
                ));
            }
        }
        Ok(())
    }

    /// The profiles one rank needs on `model` (the smallest that satisfy the request).
    pub fn resolve(&self, model: &GpuModel) -> Result<Vec<WantedInstance>, RequestError> {
        Ok(self.needs(model)?.iter().map(|n| WantedInstance::new(n.min_profile)).collect())
    }

    /// Whether `instance` on a GPU of `model` can serve entry `slot` of one rank's instances
    /// (`slot` is 0 unless the request is a list of instances).
    pub fn fits_instance(&self, model: &GpuModel, slot: usize, instance: &Instance) -> bool {
        let Ok(needs) = self.needs(model) else { return false };
        let (Some(need), Some(profile)) = (needs.get(slot), model.profile_by_id(instance.profile_id)) else {
            return false;
        };
        need.accepts(model, profile, instance.compute)
    }

    /// How long the job is expected to hold its GPU: its estimate, capped by its time limit.
    pub fn expected_duration_ms(&self) -> Option<u64> {
        match (self.runtime_estimate_ms, self.time_limit_ms) {
            (Some(e), Some(l)) => Some(e.min(l)),
            (e, l) => e.or(l),
        }
    }

    /// Number of instances one rank needs (on all its GPUs).
    pub fn instances_per_rank(&self) -> usize {
        let per_gpu = match &self.gpu {
            GpuRequest::Instances(list) => list.len(),
            _ => 1,
        };
        per_gpu * self.gpus_per_rank.max(1) as usize
    }

    /// Placements the scheduler makes, each on one GPU: `ranks × gpus_per_rank`. Placement
    /// `u` belongs to rank `u / gpus_per_rank`.
    pub fn placement_units(&self) -> u32 {
        self.ranks.saturating_mul(self.gpus_per_rank.max(1))
    }

    /// The CPUs placement `unit` takes: the rank's CPUs split over its GPUs.
    pub fn unit_cpus(&self, unit: u32) -> u32 {
        let g = self.gpus_per_rank.max(1);
        self.cpus / g + u32::from(unit % g < self.cpus % g)
    }

    /// The host memory placement `unit` takes, in MiB: the rank's memory split over its GPUs.
    pub fn unit_mem_mib(&self, unit: u32) -> u64 {
        let g = u64::from(self.gpus_per_rank.max(1));
        self.mem_mib / g + u64::from(u64::from(unit) % g < self.mem_mib % g)
    }

    /// The needs of one rank on `model`, validated.
    pub(crate) fn needs(&self, model: &GpuModel) -> Result<Vec<Need>, RequestError> {
        self.validate()?;
        let pinned = match self.sharing {
            Sharing::Mps { pinned_mem_mib, .. } => pinned_mem_mib,
            _ => None,
        };
        let needs: Vec<Need> = match &self.gpu {
            GpuRequest::Instances(list) => {
                list.iter().map(|g| resolve_one(model, g, pinned)).collect::<Result<Vec<_>, _>>()?
            }
            g => vec![resolve_one(model, g, pinned)?],
        };
        if needs.len() > 1 {
            let wanted: Vec<WantedInstance> = needs.iter().map(|n| WantedInstance::new(n.min_profile)).collect();
            if let Err(e) = tessera_mig::place(model, &wanted, &[]) {
                let profiles = needs.iter().map(|n| profile_name(model, n.min_profile)).collect();
                return Err(RequestError::RankDoesNotFit {
                    model: model.name.clone(),
                    profiles,
                    reason: e.to_string(),
                });
            }
        }
        if self.gpu_numa_local {
            let nodes = model.gpu_numa.as_ref().map_or(0, |n| n.nodes);
            if u32::from(nodes) != self.ranks {
                return Err(RequestError::NumaLocal {
                    model: model.name.clone(),
                    reason: format!(
                        "the model has {nodes} known GPU NUMA node(s) but the job has {} ranks",
                        self.ranks
                    ),
                });
            }
            if let Some(need) = needs.first()
                && let Err(e) = per_numa_place(model, need.min_profile, &[])
            {
                return Err(RequestError::NumaLocal { model: model.name.clone(), reason: e.to_string() });
            }
        }
        Ok(needs)
    }
}

pub(crate) fn per_numa_place(
    model: &GpuModel,
    profile_id: u32,
    existing: &[Instance],
) -> Result<tessera_mig::Placement, tessera_mig::PlaceError> {
    match tessera_mig::planner_for(model) {
        Some(p) => p.place_per_gpu_numa(profile_id, existing),
        None => tessera_mig::Planner::new(model).place_per_gpu_numa(profile_id, existing),
    }
}

pub(crate) fn profile_name(model: &GpuModel, id: u32) -> String {
    model.profile_by_id(id).map_or_else(|| format!("profile#{id}"), |p| p.name.clone())
}

fn validate_gpu(gpu: &GpuRequest, nested: bool) -> Result<(), RequestError> {
    match gpu {
        GpuRequest::Memory { mib: 0 } => Err(invalid("gpu.memory.mib", "must be above 0")),
        GpuRequest::ComputeSlices { slices: 0 } => Err(invalid("gpu.compute_slices.slices", "must be above 0")),
        GpuRequest::Profile { name } if name.trim().is_empty() => {
            Err(invalid("gpu.profile.name", "must name a MIG profile"))
        }
        GpuRequest::Instances(_) if nested => {
            Err(invalid("gpu.instances", "may not contain another list of instances"))
        }
        GpuRequest::Instances(list) => {
            if list.is_empty() {
                return Err(invalid("gpu.instances", "must list at least one instance"));
            }
            if list.len() > MAX_INSTANCES_PER_RANK {
                return Err(invalid(
                    "gpu.instances",
                    format!("lists {} instances but one GPU has at most {MAX_INSTANCES_PER_RANK}", list.len()),
                ));
            }
            list.iter().try_for_each(|g| validate_gpu(g, true))
        }
        _ => Ok(()),
    }
}

fn need_of(kind: NeedKind, pinned: Option<u64>, p: &Profile) -> Need {
    Need {
        kind,
        pinned_mib: pinned,
        min_profile: p.id,
        min_compute: p.compute_slices,
        min_memory_slices: p.memory_slices,
        mig_only: false,
    }
}

/// The largest standard profiles, for error messages: `7g.80gb (79.25 GiB, 7 compute slices)`.
fn largest(model: &GpuModel) -> Vec<String> {
    let mut v: Vec<&Profile> = model.profiles.iter().filter(|p| is_standard(p)).collect();
    v.sort_by_key(|p| std::cmp::Reverse((profile_memory_mib(model, p), p.compute_slices)));
    v.iter()
        .take(2)
        .map(|p| format!("{} ({}, {} compute slices)", p.name, fmt_mib(profile_memory_mib(model, p)), p.compute_slices))
        .collect()
}

fn resolve_one(model: &GpuModel, gpu: &GpuRequest, pinned: Option<u64>) -> Result<Need, RequestError> {
    let pinned_ok = |p: &Profile| pinned.is_none_or(|m| profile_memory_mib(model, p) >= m);
    match gpu {
        GpuRequest::Memory { mib } => {
            let need_mem = (*mib).max(pinned.unwrap_or(0));
            model
                .profiles
                .iter()
                .filter(|p| is_standard(p) && profile_memory_mib(model, p) >= need_mem)
                .min_by_key(|p| (profile_memory_mib(model, p), p.compute_slices, p.memory_slices, p.id))
                .map(|p| need_of(NeedKind::AtLeastMemory(*mib), pinned, p))
                .ok_or_else(|| RequestError::NoProfileFits {
                    model: model.name.clone(),
                    wanted: format!("{} of GPU memory", fmt_mib(need_mem)),
                    closest: largest(model),
                })
        }
        GpuRequest::ComputeSlices { slices } => model
            .profiles
            .iter()
            .filter(|p| is_standard(p) && p.compute_slices >= *slices && pinned_ok(p))
            .min_by_key(|p| (p.compute_slices, p.memory_slices, profile_memory_mib(model, p), p.id))
            .map(|p| need_of(NeedKind::AtLeastCompute(*slices), pinned, p))
            .ok_or_else(|| RequestError::NoProfileFits {
                model: model.name.clone(),
                wanted: match pinned {
                    Some(m) => format!("{slices} compute slices and {} of memory", fmt_mib(m)),
                    None => format!("{slices} compute slices"),
                },
                closest: largest(model),
            }),
        GpuRequest::Profile { name } => {
            let p = model.profile(name).map_err(|e| match e {
                tessera_mig::CatalogError::UnknownProfile { suggestions, .. } => {
                    RequestError::UnknownProfile { model: model.name.clone(), name: name.clone(), suggestions }
                }
                other => invalid("gpu.profile.name", other.to_string()),
            })?;
            if !pinned_ok(p) {
                return Err(RequestError::NoProfileFits {
                    model: model.name.clone(),
                    wanted: format!("{} of memory in {}", fmt_mib(pinned.unwrap_or(0)), p.name),
                    closest: vec![format!("{} ({})", p.name, fmt_mib(profile_memory_mib(model, p)))],
                });
            }
            Ok(Need { mig_only: true, ..need_of(NeedKind::Exact(p.id), pinned, p) })
        }
        GpuRequest::WholeGpu => {
            let p = full_profile(model).ok_or_else(|| RequestError::NoProfileFits {
                model: model.name.clone(),
                wanted: "a whole-GPU profile".into(),
                closest: Vec::new(),
            })?;
            if !pinned_ok(p) {
                return Err(RequestError::NoProfileFits {
                    model: model.name.clone(),
                    wanted: format!("{} of memory", fmt_mib(pinned.unwrap_or(0))),
                    closest: largest(model),
                });
            }
            Ok(need_of(NeedKind::Exact(p.id), pinned, p))
        }
        GpuRequest::Instances(_) => Err(invalid("gpu.instances", "may not contain another list of instances")),
    }
}
