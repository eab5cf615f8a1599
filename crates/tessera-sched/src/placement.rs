//! The working state of one scheduling round and the placement of one job on it.
//!
//! The round starts from the [`ClusterView`] and every decision is applied to this state, so
//! later decisions in the same round see what earlier ones took (instances, CPUs, memory,
//! repartition plans). A placement attempt works on a copy and is committed only when it
//! succeeds; a gang therefore takes all of its ranks or nothing.
//!
//! Placing one rank (or the two ranks of a `gpu_numa_local` job) on one GPU considers, in order
//! of preference (the cost's first element):
//!
//! 0. joining a shared instance it may share, or a free instance of exactly the profile it
//!    needs;
//! 1. creating the instance it needs in free space, destroying nothing (a repartition);
//! 2. the smallest larger free instance (best fit);
//! 3. reshaping idle instances: destroy the fewest, then keep the most usable free space.
//!
//! Ties go to the least waste (slices beyond what it needs), then to the GPU left with the
//! least reclaimable capacity (packing, so whole GPUs stay whole for large jobs), then to a GPU
//! whose host NUMA node has the CPUs, then to the lowest GPU index.

use std::collections::BTreeMap;

use tessera_mig::layout::{instance_label, unit_mask};
use tessera_mig::{
    CurrentInstance, GpuModel, Instance, Placement, Planner, Profile, ReconfigurePlan, Wanted, planner_for,
};

use crate::cluster::{ClusterView, InstanceView, JobId, Occupant, give_back_host_share, take_host_share};
use crate::job::{HostShare, PendingReason, RankStart, SlicePlacement};
use crate::request::{JobRequest, Need, NumaPolicy, RequestError, Sharing, effective_compute, profile_memory_mib};

/// Up to this many idle instances on one GPU, every subset is tried when choosing which to
/// destroy; above it, only "none" and "all".
const MAX_SUBSET_ENUM: usize = 10;

/// One instance in the working state.
#[derive(Debug, Clone)]
pub(crate) struct WInst {
    pub inst: Instance,
    /// `None`: a profile the model does not have; such an instance is never used.
    pub profile: Option<&'static tessera_mig::Profile>,
    pub mask: u32,
    pub occupants: Vec<Occupant>,
    /// To be created by a reconfiguration decided this round: not usable yet.
    pub planned: bool,
    /// Only this job may use it (a reconfiguration or preemption made room for it).
    pub held_for: Option<JobId>,
    /// An unhealthy instance gets no new work.
    pub healthy: bool,
}

impl WInst {
    /// The working copy of an instance of the view.
    pub fn from_view(model: &'static GpuModel, iv: &InstanceView) -> Self {
        let profile = model.profile_by_id(iv.instance.profile_id);
        WInst {
            inst: iv.instance,
            profile,
            mask: profile.map_or(0, |p| unit_mask(iv.instance.start, p.placement_size)),
            occupants: iv.occupants.clone(),
            planned: false,
            held_for: None,
            healthy: iv.healthy,
        }
    }

    pub fn compute(&self) -> u8 {
        self.profile.map_or(0, |p| p.compute_slices)
    }

    /// Compute slices of this instance that job `job` can neither take nor reshape: occupied,
    /// planned this round, held for another job, or on units reserved for another (`blocked`).
    pub fn busy_compute(&self, job: JobId, blocked: u32) -> u32 {
        let mine = self.held_for == Some(job);
        if !self.occupants.is_empty()
            || self.planned
            || self.held_for.is_some_and(|h| h != job)
            || (self.mask & blocked != 0 && !mine)
        {
            u32::from(self.compute())
        } else {
            0
        }
    }
}

/// One GPU in the working state.
#[derive(Debug, Clone)]
pub(crate) struct WGpu {
    pub gpu: u32,
    pub model: &'static GpuModel,
    pub numa_node: Option<u32>,
    pub healthy: bool,
    pub health_note: Option<String>,
    pub drained: bool,
    /// MIG is on (off: one whole-GPU instance, never reshaped).
    pub mig: bool,
    pub mig_capable: bool,
    pub reconfiguring: bool,
    pub insts: Vec<WInst>,
    /// The first job a reconfiguration of this GPU was decided for this round (later jobs may
    /// add to the same plan).
    pub planned_by: Option<JobId>,
    /// Idle instances that reconfiguration destroys.
    pub destroyed: Vec<Instance>,
    /// The layout obeys the MIG rules (otherwise it is never repartitioned).
    pub valid_layout: bool,
}

impl WGpu {
    pub fn label(&self, inst: &Instance) -> String {
        instance_label(self.model, inst)
    }

    /// `GPU 3`, or `GPU 3 (why it is unhealthy)` when the view says.
    pub fn health_label(&self) -> String {
        match &self.health_note {
            Some(n) => format!("GPU {} ({n})", self.gpu),
            None => format!("GPU {}", self.gpu),
        }
    }

    /// Compute slices job `job` could take or reshape here (see [`WInst::busy_compute`]).
    pub fn free_compute(&self, job: JobId, blocked: u32) -> u32 {
        let busy: u32 = self.insts.iter().map(|w| w.busy_compute(job, blocked)).sum();
        u32::from(self.model.compute_slices).saturating_sub(busy)
    }
}

/// Free CPUs (ascending) and memory of one host NUMA node.
#[derive(Debug, Clone)]
pub(crate) struct HostNode {
    pub cpus: Vec<u32>,
    pub mem: u64,
}

impl HostNode {
    /// See [`crate::HostNuma::take`].
    pub fn take(&mut self, cpus: &[u32], mem: u64) -> Vec<u32> {
        take_host_share(&mut self.cpus, &mut self.mem, cpus, mem)
    }

    /// See [`crate::HostNuma::give_back`].
    pub fn give_back(&mut self, cpus: &[u32], mem: u64) {
        give_back_host_share(&mut self.cpus, &mut self.mem, cpus, mem);
    }
}

/// The round's view of what is free.
#[derive(Debug, Clone)]
pub(crate) struct WState {
    pub gpus: Vec<WGpu>,
    pub host: BTreeMap<u32, HostNode>,
    /// MIG devices one process may use (the driver's rule).
    pub max_mig: u32,
}

impl WState {
    /// GPUs ordered by index (a repeated index keeps its first entry); CPUs de-duplicated.
    pub fn from_view(view: &ClusterView) -> Self {
        let mut gpus: Vec<WGpu> = Vec::new();
        let mut order: Vec<&crate::cluster::GpuView> = view.gpus.iter().collect();
        order.sort_by_key(|g| g.gpu);
        for g in order {
            if gpus.iter().any(|w| w.gpu == g.gpu) {
                continue;
            }
            let layout: Vec<Instance> = g.instances.iter().map(|i| i.instance).collect();
            let insts = g.instances.iter().map(|iv| WInst::from_view(g.model, iv)).collect();
            gpus.push(WGpu {
                gpu: g.gpu,
                model: g.model,
                numa_node: g.numa_node,
                healthy: g.healthy,
                health_note: g.health_note.clone(),
                drained: g.drained,
                mig: g.mig,
                mig_capable: g.mig_capable,
                reconfiguring: g.reconfiguring,
                insts,
                planned_by: None,
                destroyed: Vec::new(),
                valid_layout: tessera_mig::validate(g.model, &layout).is_empty(),
            });
        }
        let mut host: BTreeMap<u32, HostNode> = BTreeMap::new();
        let mut seen = std::collections::BTreeSet::new();
        let mut nodes: Vec<&crate::cluster::HostNuma> = view.host.iter().collect();
        nodes.sort_by_key(|h| h.node);
        for h in nodes {
            if host.contains_key(&h.node) {
                continue;
            }
            let mut cpus: Vec<u32> = h.free_cpus.iter().copied().filter(|c| seen.insert(*c)).collect();
            cpus.sort_unstable();
            host.insert(h.node, HostNode { cpus, mem: h.free_mem_mib });
        }
        WState { gpus, host, max_mig: view.max_mig_devices_per_process.max(1) }
    }

    pub fn pos_of(&self, gpu: u32) -> Option<usize> {
        self.gpus.iter().position(|g| g.gpu == gpu)
    }

    /// The host shares of these slices back to the nodes they name; a node the state does not
    /// have is never invented.
    pub fn give_back_host<'a>(&mut self, slices: impl IntoIterator<Item = &'a SlicePlacement>) {
        for h in slices.into_iter().flat_map(|s| s.host.iter()) {
            if let Some(node) = self.host.get_mut(&h.node) {
                node.give_back(&h.cpus, h.mem_mib);
            }
        }
    }
}

/// The planner of every GPU position: the process-wide planner of each catalog model, a fresh
/// one for any other model.
pub(crate) struct Planners {
    owned: Vec<Planner<'static>>,
    /// Per GPU position: the catalog planner, or an index into `owned`.
    by_gpu: Vec<Result<&'static Planner<'static>, usize>>,
}

impl Planners {
    pub fn new(st: &WState) -> Self {
        let mut owned = Vec::new();
        let by_gpu = st
            .gpus
            .iter()
            .map(|g| {
                planner_for(g.model).ok_or_else(|| {
                    owned.push(Planner::new(g.model));
                    owned.len() - 1
                })
            })
            .collect();
        Planners { owned, by_gpu }
    }

    /// One planner per GPU position, for [`Ctx::planners`].
    pub fn refs(&self) -> Vec<&Planner<'static>> {
        self.by_gpu
            .iter()
            .filter_map(|p| match p {
                Ok(p) => Some(*p),
                Err(i) => self.owned.get(*i),
            })
            .collect()
    }
}

/// Per GPU position: what one placement unit of `req` needs on that GPU's model (`None`: nothing
/// there fits it), resolved once per model; and the first resolution error, to explain a
/// request nothing fits.
pub(crate) fn needs_per_gpu(req: &JobRequest, gpus: &[WGpu]) -> (Vec<Option<Vec<Need>>>, Option<RequestError>) {
    let mut seen: Vec<(*const GpuModel, Result<Vec<Need>, RequestError>)> = Vec::new();
    let mut first_err = None;
    let mut out = Vec::with_capacity(gpus.len());
    for g in gpus {
        let key: *const GpuModel = g.model;
        let res = match seen.iter().find(|(k, _)| std::ptr::eq(*k, key)) {
            Some((_, r)) => r.clone(),
            None => {
                let r = req.needs(g.model);
                seen.push((key, r.clone()));
                r
            }
        };
        match res {
            Ok(n) => out.push(Some(n)),
            Err(e) => {
                first_err.get_or_insert(e);
                out.push(None);
            }
        }
    }
    (out, first_err)
}

/// The least a job can be charged against its tenant's quota, in milli-slices (compute,
/// memory): every placement unit on its smallest fitting profiles of the cheapest healthy GPU
/// that fits it. A start always charges at least this much, so a tenant whose quota (less what
/// it holds) is below it cannot start the job; with no healthy GPU that fits, 0.
pub(crate) fn min_charge(req: &JobRequest, gpus: &[WGpu], needs: &[Option<Vec<Need>>], replicas: u32) -> (u64, u64) {
    let per_unit = needs
        .iter()
        .zip(gpus)
        .filter(|(_, g)| g.healthy)
        .filter_map(|(n, g)| {
            n.as_ref().map(|n| {
                n.iter().fold((0u64, 0u64), |acc, x| {
                    let c = g
                        .model
                        .profile_by_id(x.min_profile)
                        .map_or((0, 0), |p| charge_milli(p, &req.sharing, replicas));
                    (acc.0 + c.0, acc.1 + c.1)
                })
            })
        })
        .min()
        .unwrap_or((0, 0));
    let units = u64::from(req.placement_units());
    (per_unit.0.saturating_mul(units), per_unit.1.saturating_mul(units))
}

/// Milli-slices (compute, memory) a job is charged for holding an instance: all of it when
/// exclusive, its active-thread share under MPS, one replica's share when time-sliced.
pub(crate) fn charge_milli(p: &Profile, sharing: &Sharing, replicas: u32) -> (u64, u64) {
    let c = u64::from(p.compute_slices) * 1000;
    let m = u64::from(p.memory_slices) * 1000;
    match sharing {
        Sharing::Exclusive => (c, m),
        Sharing::Mps { active_thread_pct, .. } => {
            let pct = u64::from((*active_thread_pct).min(100));
            (c * pct / 100, m * pct / 100)
        }
        Sharing::TimeSlice => {
            let r = u64::from(replicas.max(1));
            (c.div_ceil(r), m.div_ceil(r))
        }
    }
}

/// Everything an attempt needs to know about the job and the rules of this attempt.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub id: JobId,
    /// The uid the job runs as.
    pub user: u32,
    pub req: &'a JobRequest,
    /// Per GPU position: what one rank needs on that GPU's model (`None`: nothing fits there).
    pub needs: &'a [Option<Vec<Need>>],
    pub planners: &'a [&'a Planner<'static>],
    pub replicas: u32,
    pub repartition: bool,
    /// Per GPU position: placement units this job may not use (a reservation).
    pub blocked: &'a [u32],
    /// Milli-slices (compute, memory) the tenant may still take.
    pub budget: Option<(u64, u64)>,
    /// Ignore CPUs and host memory (what-if attempts for reservations).
    pub ignore_host: bool,
}

/// Why one GPU could not take a rank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Block {
    Unhealthy,
    Drained,
    Reconfiguring,
    /// MIG is off on the GPU and the request names a MIG profile.
    MigOff,
    /// The rank would see more MIG devices than the driver lets one process use.
    MigPerProcess {
        limit: u32,
    },
    /// No profile of the GPU's model satisfies the request.
    NoProfile,
    /// No free instance fits and no repartition makes one.
    NoRoom {
        /// Compute slices not held by busy, held, reserved or planned instances.
        free: u8,
        need: u8,
        /// Labels of idle instances that could be reshaped.
        idle: Vec<String>,
        /// Compute slices of those idle instances.
        idle_compute: u8,
        /// Label of the profile it needs.
        profile: String,
        repartition: bool,
        /// Some units are reserved for another job.
        reserved: bool,
        /// Unhealthy instances that would have fitted.
        unhealthy: Vec<String>,
    },
    /// Only instances beyond the tenant's quota would fit.
    Quota,
    /// The host NUMA node lacks CPUs or memory.
    Host {
        node: Option<u32>,
        free_cpus: usize,
        free_mem: u64,
        cpus: u64,
        mem: u64,
    },
    /// The planner refused a plan (should not happen on a valid layout).
    Plan(String),
}

/// Why a job could not be placed: the rank that failed and each GPU's reason.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub rank: u32,
    pub blocks: Vec<(usize, Block)>,
}

/// A successful attempt.
#[derive(Debug, Clone)]
pub(crate) struct Placed {
    /// One entry per slice, rank-major: GPU position (not index), rank, the slice.
    pub ranks: Vec<(usize, u32, SlicePlacement)>,
    /// Reconfigurations needed first (GPU position, the GPU's whole plan for this round, from
    /// the layout at the start of the round).
    pub plans: Vec<(usize, ReconfigurePlan)>,
    /// The milli-slices taken.
    pub charge: (u64, u64),
}

impl Placed {
    pub fn starts_now(&self) -> bool {
        self.plans.is_empty()
    }

    /// The slices grouped by rank, as a start decision lists them.
    pub fn rank_starts(&self) -> Vec<RankStart> {
        let mut out: Vec<RankStart> = Vec::new();
        for (_, rank, slice) in &self.ranks {
            match out.last_mut() {
                Some(r) if r.rank == *rank => r.slices.push(slice.clone()),
                _ => out.push(RankStart { rank: *rank, slices: vec![slice.clone()] }),
            }
        }
        out
    }
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    need: Need,
    /// GPU NUMA node the instance must sit in.
    numa: Option<u8>,
    rank: u32,
    /// Index of the instance within its rank.
    index: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    Fresh,
    /// Join a shared instance with this load (Σ percentage or replicas in use).
    Join(u32),
}

#[derive(Debug, Clone)]
enum Pick {
    Existing(usize),
    Create(Instance),
}

#[derive(Debug, Clone)]
struct HostPick {
    /// What each rank of the group takes, per host NUMA node.
    per_rank: Vec<Vec<HostShare>>,
    numa_node: Option<u32>,
    /// (node, cpus, memory) to take.
    take: Vec<(u32, Vec<u32>, u64)>,
    far: u8,
}

/// Class, idle instances destroyed, MIG devices for a multi-GPU rank (no peer-to-peer),
/// waste, away from the rank's other GPUs' NUMA node, reclaimable compute left, host far, GPU.
type Cost = (u8, usize, u8, u32, u8, u8, u8, usize);
/// How a free instance ranks for a slot: class, join first, size, load (most first), start.
type PickKey = (u8, u8, u8, u8, u64, std::cmp::Reverse<u32>, u8);
/// Picks for every slot, instances to destroy, and the option's class.
type RawOption = (Vec<(Slot, Pick)>, Vec<usize>, u8);
/// (rank, index in rank, GPU position, instance, the rank's host shares, NUMA node).
type Entry = (u32, usize, usize, Instance, Vec<HostShare>, Option<u32>);

#[derive(Debug, Clone)]
struct GroupOption {
    g: usize,
    cost: Cost,
    picks: Vec<(Slot, Pick)>,
    destroy: Vec<usize>,
    host: Option<HostPick>,
    charge: (u64, u64),
}

fn use_kind(ctx: &Ctx<'_>, model: &GpuModel, w: &WInst, blocked: u32) -> Option<Use> {
    // What is held for this job is its own, whatever else is reserved.
    let blocked = if w.held_for == Some(ctx.id) { 0 } else { blocked };
    if w.planned || w.profile.is_none() || !w.healthy || w.mask & blocked != 0 {
        return None;
    }
    if w.held_for.is_some_and(|h| h != ctx.id) {
        return None;
    }
    if w.occupants.is_empty() {
        return Some(Use::Fresh);
    }
    let sharing = ctx.req.sharing;
    let pinned = !ctx.req.pin.is_empty();
    // Pinned holds share only with pinned holds (`Occupant::pinned`): the other system counts
    // and advertises the shares of an instance its holds occupy.
    if !sharing.is_shared()
        || w.occupants.iter().any(|o| o.job == ctx.id || !sharing.compatible_with(&o.sharing) || o.pinned != pinned)
        || w.held_for.is_some()
    {
        return None;
    }
    // A pinned share (a replica another system handed out, such as the kubelet's) was bounded
    // there: it joins compatible pinned holds whatever `time_slice_replicas` says, and its MPS
    // share is that system's to size and serve (Tessera runs no control daemon for it).
    if pinned {
        return Some(Use::Join(u32::try_from(w.occupants.len()).unwrap_or(u32::MAX)));
    }
    // An MPS control daemon serves one user: another user's jobs wait for another share.
    if matches!(sharing, Sharing::Mps { .. }) && w.occupants.iter().any(|o| o.user != ctx.user) {
        return None;
    }
    match sharing {
        Sharing::Mps { active_thread_pct, pinned_mem_mib } => {
            let mut pct = u32::from(active_thread_pct);
            let mut pinned = pinned_mem_mib.unwrap_or(0);
            for o in &w.occupants {
                if let Sharing::Mps { active_thread_pct: p, pinned_mem_mib: m } = o.sharing {
                    pct += u32::from(p);
                    pinned = pinned.saturating_add(m.unwrap_or(0));
                }
            }
            let mem = w.profile.map_or(0, |p| profile_memory_mib(model, p));
            (pct <= 100 && pinned <= mem).then_some(Use::Join(pct))
        }
        Sharing::TimeSlice => {
            let n = u32::try_from(w.occupants.len()).unwrap_or(u32::MAX);
            (n < ctx.replicas).then_some(Use::Join(n))
        }
        Sharing::Exclusive => None,
    }
}

fn slots_for(ctx: &Ctx<'_>, g: usize, ranks: &[u32], numa_pair: bool) -> Option<Vec<Slot>> {
    let needs = ctx.needs.get(g)?.as_ref()?;
    if numa_pair {
        let need = *needs.first()?;
        Some(
            ranks
                .iter()
                .enumerate()
                .map(|(i, &rank)| Slot { need, numa: u8::try_from(i).ok(), rank, index: 0 })
                .collect(),
        )
    } else {
        let rank = *ranks.first()?;
        Some(needs.iter().enumerate().map(|(index, &need)| Slot { need, numa: None, rank, index }).collect())
    }
}

/// Splits what a group takes (per node: CPUs, memory) into each rank's shares, in order:
/// rank 0 gets the first `per_cpus` CPUs and `per_mem` MiB, and so on.
fn split_take(take: &[(u32, Vec<u32>, u64)], nranks: usize, per_cpus: usize, per_mem: u64) -> Vec<Vec<HostShare>> {
    let cpus: Vec<(u32, u32)> = take.iter().flat_map(|(n, c, _)| c.iter().map(move |c| (*n, *c))).collect();
    let mut mem_left: Vec<(u32, u64)> = take.iter().map(|(n, _, m)| (*n, *m)).collect();
    let share = |shares: &mut Vec<HostShare>, node: u32| -> usize {
        match shares.iter().position(|h| h.node == node) {
            Some(i) => i,
            None => {
                shares.push(HostShare { node, cpus: Vec::new(), mem_mib: 0 });
                shares.len() - 1
            }
        }
    };
    (0..nranks)
        .map(|r| {
            let mut shares: Vec<HostShare> = Vec::new();
            for &(node, cpu) in cpus.iter().skip(r.saturating_mul(per_cpus)).take(per_cpus) {
                let i = share(&mut shares, node);
                shares[i].cpus.push(cpu);
            }
            let mut want = per_mem;
            for (node, left) in &mut mem_left {
                if want == 0 {
                    break;
                }
                let m = (*left).min(want);
                if m > 0 {
                    let i = share(&mut shares, *node);
                    shares[i].mem_mib += m;
                    *left -= m;
                    want -= m;
                }
            }
            shares
        })
        .collect()
}

fn host_pick(
    req: &JobRequest,
    first_unit: u32,
    gpu_numa: Option<u32>,
    nranks: usize,
    host: &BTreeMap<u32, HostNode>,
) -> Result<HostPick, Block> {
    // Every placement of a group takes the same share (groups of several are gpu_numa_local
    // pairs, whose ranks hold one GPU each).
    let unit = first_unit;
    let per = usize::try_from(req.unit_cpus(unit)).unwrap_or(usize::MAX);
    let per_mem = req.unit_mem_mib(unit);
    let cpus = per.saturating_mul(nranks);
    let mem = per_mem.saturating_mul(nranks as u64);
    let pick = |take: Vec<(u32, Vec<u32>, u64)>, numa_node: Option<u32>, far: u8| HostPick {
        per_rank: split_take(&take, nranks, per, per_mem),
        numa_node,
        take,
        far,
    };
    let bind_unknown = matches!(req.numa, NumaPolicy::Any);
    if cpus == 0 && mem == 0 {
        return Ok(HostPick { per_rank: vec![Vec::new(); nranks], numa_node: gpu_numa, take: Vec::new(), far: 0 });
    }
    let fits = |n: &HostNode| n.cpus.len() >= cpus && n.mem >= mem;
    let take_one =
        |node: u32, n: &HostNode| -> (u32, Vec<u32>, u64) { (node, n.cpus.iter().take(cpus).copied().collect(), mem) };
    if let (NumaPolicy::Local, Some(node)) = (req.numa, gpu_numa) {
        return match host.get(&node) {
            Some(n) if fits(n) => Ok(pick(vec![take_one(node, n)], Some(node), 0)),
            other => Err(Block::Host {
                node: Some(node),
                free_cpus: other.map_or(0, |n| n.cpus.len()),
                free_mem: other.map_or(0, |n| n.mem),
                cpus: cpus as u64,
                mem,
            }),
        };
    }
    // Any node: the GPU's own first, then the roomiest single node, then spread.
    if let Some(node) = gpu_numa
        && let Some(n) = host.get(&node)
        && fits(n)
    {
        return Ok(pick(vec![take_one(node, n)], Some(node), 0));
    }
    let mut nodes: Vec<(&u32, &HostNode)> = host.iter().collect();
    nodes.sort_by_key(|(id, n)| (std::cmp::Reverse(n.cpus.len()), std::cmp::Reverse(n.mem), **id));
    if let Some((id, n)) = nodes.iter().find(|(_, n)| fits(n)) {
        let numa_node = if bind_unknown || gpu_numa.is_some() { Some(**id) } else { None };
        return Ok(pick(vec![take_one(**id, n)], numa_node, u8::from(gpu_numa.is_some())));
    }
    let total_cpus: usize = host.values().map(|n| n.cpus.len()).sum();
    let total_mem: u64 = host.values().map(|n| n.mem).sum();
    if total_cpus < cpus || total_mem < mem {
        return Err(Block::Host { node: None, free_cpus: total_cpus, free_mem: total_mem, cpus: cpus as u64, mem });
    }
    let mut need_c = cpus;
    let mut need_m = mem;
    let mut take = Vec::new();
    for (id, n) in host {
        let c: Vec<u32> = n.cpus.iter().take(need_c).copied().collect();
        let m = n.mem.min(need_m);
        need_c -= c.len();
        need_m -= m;
        if !c.is_empty() || m > 0 {
            take.push((*id, c, m));
        }
    }
    Ok(pick(take, None, 1))
}

/// New instances for `creates` next to `existing`, avoiding `blocked` units.
fn create(
    planner: &Planner<'static>,
    existing: &[Instance],
    creates: &[Slot],
    numa_pair: bool,
    blocked: u32,
) -> Option<Placement> {
    let model = planner.model();
    let overlaps = |pl: &Placement| {
        pl.placed.iter().any(|i| {
            model.profile_by_id(i.profile_id).is_some_and(|p| unit_mask(i.start, p.placement_size) & blocked != 0)
        })
    };
    if numa_pair {
        let first = creates.first()?;
        return planner.place_per_gpu_numa(first.need.min_profile, existing).ok().filter(|pl| !overlaps(pl));
    }
    let wanted: Vec<tessera_mig::WantedInstance> =
        creates.iter().map(|s| tessera_mig::WantedInstance::new(s.need.min_profile)).collect();
    match planner.place(&wanted, existing) {
        Ok(pl) if !overlaps(&pl) => Some(pl),
        Ok(_) if creates.len() == 1 => {
            // The planner's favourite start is reserved: try every other legal start.
            let p = model.profile_by_id(creates[0].need.min_profile)?;
            let mut best: Option<(u8, Placement)> = None;
            for &start in &p.placements {
                if unit_mask(start, p.placement_size) & blocked != 0 {
                    continue;
                }
                let inst = Instance::new(p.id, start);
                let mut layout: Vec<Instance> = existing.to_vec();
                layout.push(inst);
                if !tessera_mig::validate(model, &layout).is_empty() {
                    continue;
                }
                layout.sort_by_key(|i| (i.start, i.profile_id));
                let usable = planner.fragmentation(&layout).map_or(0, |f| f.usable_compute_slices);
                if best.as_ref().is_none_or(|(u, _)| usable > *u) {
                    best = Some((usable, Placement { layout, placed: vec![inst] }));
                }
            }
            best.map(|(_, pl)| pl)
        }
        _ => None,
    }
}

/// Which idle instances to destroy (fewest first, then the most usable space left) so that
/// `creates` fit next to `fixed`. Returns positions in `removable` and the new instances.
fn plan_create(
    planner: &Planner<'static>,
    fixed: &[Instance],
    removable: &[Instance],
    creates: &[Slot],
    numa_pair: bool,
    blocked: u32,
) -> Option<(Vec<usize>, Vec<Instance>)> {
    let model = planner.model();
    let compute = |i: &Instance| model.profile_by_id(i.profile_id).map_or(0u32, |p| u32::from(p.compute_slices));
    let fixed_compute: u32 = fixed.iter().map(compute).sum();
    let need: u32 = creates.iter().map(|s| u32::from(s.need.min_compute)).sum();
    if fixed_compute + need > u32::from(model.compute_slices) {
        return None;
    }
    // If it does not fit with every idle instance gone, it does not fit at all.
    let all_gone = create(planner, fixed, creates, numa_pair, blocked)?;
    let n = removable.len();
    if n == 0 {
        return Some((Vec::new(), all_gone.placed));
    }
    let sizes: Vec<usize> = if n <= MAX_SUBSET_ENUM { (0..=n).collect() } else { vec![0, n] };
    for k in sizes {
        let mut sets = Vec::new();
        sets.extend(tessera_mig::planner::subsets_of_size(n, k));
        let mut found: Vec<(Vec<usize>, Placement)> = Vec::new();
        for destroy in sets {
            let kept: Vec<Instance> = (0..n).filter(|i| !destroy.contains(i)).map(|i| removable[i]).collect();
            let kept_compute: u32 = kept.iter().map(compute).sum();
            if fixed_compute + kept_compute + need > u32::from(model.compute_slices) {
                continue;
            }
            let mut existing = fixed.to_vec();
            existing.extend(kept);
            if let Some(pl) = create(planner, &existing, creates, numa_pair, blocked) {
                found.push((destroy, pl));
            }
        }
        if found.len() > 1 {
            let usable = |pl: &Placement| planner.fragmentation(&pl.layout).map_or(0, |f| f.usable_compute_slices);
            let mut best = 0;
            let mut best_u = usable(&found[0].1);
            for (i, (_, pl)) in found.iter().enumerate().skip(1) {
                let u = usable(pl);
                if u > best_u {
                    best = i;
                    best_u = u;
                }
            }
            let (d, pl) = found.swap_remove(best);
            return Some((d, pl.placed));
        }
        if let Some((d, pl)) = found.pop() {
            return Some((d, pl.placed));
        }
    }
    None
}

fn sub_budget(budget: Option<(u64, u64)>, charge: (u64, u64)) -> Option<Option<(u64, u64)>> {
    match budget {
        None => Some(None),
        Some((c, m)) => Some(Some((c.checked_sub(charge.0)?, m.checked_sub(charge.1)?))),
    }
}

/// The best way to place one group (a rank, or both ranks of a `gpu_numa_local` job) on GPU `g`.
/// What the GPUs already chosen for one rank mean for the next one: a process sees every
/// device of its rank, and the driver limits MIG devices per process.
#[derive(Debug, Clone, Copy, Default)]
struct RankSoFar {
    /// MIG devices the rank already has.
    mig: u32,
    /// GPUs with MIG off the rank already has.
    whole: u32,
    /// The host NUMA node of the rank's first GPU, once it has one.
    first_numa: Option<Option<u32>>,
}

fn eval_gpu(
    ctx: &Ctx<'_>,
    st: &WState,
    g: usize,
    ranks: &[u32],
    numa_pair: bool,
    budget: Option<(u64, u64)>,
    so_far: RankSoFar,
) -> Result<GroupOption, Block> {
    let gpu = &st.gpus[g];
    if !gpu.healthy {
        return Err(Block::Unhealthy);
    }
    if gpu.drained {
        return Err(Block::Drained);
    }
    if gpu.reconfiguring {
        return Err(Block::Reconfiguring);
    }
    let Some(slots) = slots_for(ctx, g, ranks, numa_pair) else { return Err(Block::NoProfile) };
    if !gpu.mig && slots.iter().any(|s| s.need.mig_only) {
        return Err(Block::MigOff);
    }
    // Slices per process on this GPU (a NUMA pair is two processes of one slice each).
    let per_process = if numa_pair { 1 } else { u32::try_from(slots.len()).unwrap_or(u32::MAX) };
    if gpu.mig {
        let mig = so_far.mig.saturating_add(per_process);
        // Before R570 a process sees one MIG device, and then no GPU with MIG off.
        if mig > st.max_mig || (st.max_mig <= 1 && so_far.whole > 0) {
            return Err(Block::MigPerProcess { limit: st.max_mig });
        }
    } else if st.max_mig <= 1 && so_far.mig > 0 {
        return Err(Block::MigPerProcess { limit: st.max_mig });
    }
    let multi_gpu = ctx.req.gpus_per_rank > 1;
    let p2p = u8::from(multi_gpu && gpu.mig);
    let away = u8::from(so_far.first_numa.is_some_and(|first| first != gpu.numa_node));
    let model = gpu.model;
    let blocked = ctx.blocked.get(g).copied().unwrap_or(0);
    // A pinned request may use its own instances only.
    let uses: Vec<Option<Use>> = gpu
        .insts
        .iter()
        .map(|w| if ctx.req.may_use(gpu.gpu, &w.inst) { use_kind(ctx, model, w, blocked) } else { None })
        .collect();
    let mem_of = |p: &Profile| profile_memory_mib(model, p);

    // Free instances, best fit per slot, the largest needs choosing first; should that leave a
    // slot without an instance (a larger need took the only one a narrower need accepts), the
    // most constrained slots choose first instead.
    let candidates = |slot: &Slot| -> usize {
        gpu.insts
            .iter()
            .enumerate()
            .filter(|(ii, w)| {
                uses[*ii].is_some()
                    && w.profile.is_some_and(|p| {
                        slot.need.accepts(model, p, w.inst.compute)
                            && slot
                                .numa
                                .is_none_or(|node| model.gpu_numa_node(w.inst.start, p.placement_size) == Some(node))
                    })
            })
            .count()
    };
    let mut by_size: Vec<usize> = (0..slots.len()).collect();
    by_size.sort_by_key(|&i| {
        (std::cmp::Reverse(slots[i].need.min_compute), std::cmp::Reverse(slots[i].need.min_memory_slices), i)
    });
    let mut by_constraint = by_size.clone();
    by_constraint.sort_by_key(|&i| candidates(&slots[i]));
    let mut chosen: Vec<Option<(usize, u8)>> = Vec::new();
    for order in [by_size, by_constraint] {
        chosen = vec![None; slots.len()];
        let mut used = vec![false; gpu.insts.len()];
        for &si in &order {
            let slot = &slots[si];
            let mut best: Option<(PickKey, usize)> = None;
            for (ii, w) in gpu.insts.iter().enumerate() {
                let (Some(u), Some(p)) = (uses[ii], w.profile) else { continue };
                if used[ii] || !slot.need.accepts(model, p, w.inst.compute) {
                    continue;
                }
                if let Some(node) = slot.numa
                    && model.gpu_numa_node(w.inst.start, p.placement_size) != Some(node)
                {
                    continue;
                }
                let exact = effective_compute(p, w.inst.compute) == slot.need.min_compute
                    && p.memory_slices == slot.need.min_memory_slices;
                let (class, join, load) = match u {
                    Use::Join(load) => (0, 0, load),
                    Use::Fresh => (if exact { 0 } else { 2 }, 1, 0),
                };
                let key =
                    (class, join, p.compute_slices, p.memory_slices, mem_of(p), std::cmp::Reverse(load), w.inst.start);
                if best.as_ref().is_none_or(|(k, _)| key < *k) {
                    best = Some((key, ii));
                }
            }
            if let Some((key, ii)) = best {
                used[ii] = true;
                chosen[si] = Some((ii, key.0));
            }
        }
        if chosen.iter().all(Option::is_some) {
            break;
        }
    }

    let charge_of = |picks: &[(Slot, Pick)]| -> (u64, u64) {
        picks.iter().fold((0, 0), |acc, (_, pick)| {
            let p = match pick {
                Pick::Existing(ii) => gpu.insts[*ii].profile,
                Pick::Create(i) => model.profile_by_id(i.profile_id),
            };
            let c = p.map_or((0, 0), |p| charge_milli(p, &ctx.req.sharing, ctx.replicas));
            (acc.0 + c.0, acc.1 + c.1)
        })
    };
    let waste_of = |picks: &[(Slot, Pick)]| -> u32 {
        picks
            .iter()
            .map(|(s, pick)| {
                let p = match pick {
                    Pick::Existing(ii) => gpu.insts[*ii].profile,
                    Pick::Create(i) => model.profile_by_id(i.profile_id),
                };
                p.map_or(0, |p| {
                    u32::from(p.compute_slices.saturating_sub(s.need.min_compute)) * 100
                        + u32::from(p.memory_slices.saturating_sub(s.need.min_memory_slices))
                })
            })
            .sum()
    };
    // Compute slices still reclaimable on the GPU after the choice (smaller packs tighter).
    let reclaimable_after = |picks: &[(Slot, Pick)]| -> u8 {
        let mut busy: u32 = gpu.insts.iter().map(|w| w.busy_compute(ctx.id, blocked)).sum();
        for (_, pick) in picks {
            match pick {
                Pick::Existing(ii) => {
                    let w = &gpu.insts[*ii];
                    if w.occupants.is_empty() {
                        busy += u32::from(w.compute());
                    }
                }
                Pick::Create(i) => {
                    busy += model.profile_by_id(i.profile_id).map_or(0, |p| u32::from(p.compute_slices));
                }
            }
        }
        u8::try_from(u32::from(model.compute_slices).saturating_sub(busy)).unwrap_or(u8::MAX)
    };

    let mut options: Vec<RawOption> = Vec::new();
    if chosen.iter().all(Option::is_some) {
        let picks: Vec<(Slot, Pick)> =
            slots.iter().zip(&chosen).filter_map(|(s, c)| c.map(|(ii, _)| (*s, Pick::Existing(ii)))).collect();
        let class = chosen.iter().filter_map(|c| c.map(|(_, k)| k)).max().unwrap_or(0);
        options.push((picks, Vec::new(), class));
    }
    let needs_create = numa_pair || chosen.iter().any(|c| !matches!(c, Some((_, 0))));
    if ctx.repartition && ctx.req.pin.is_empty() && gpu.mig && gpu.valid_layout && needs_create {
        // Keep exact picks (never for a NUMA pair: both are created by the NUMA search).
        let keep: Vec<Option<usize>> = if numa_pair {
            vec![None; slots.len()]
        } else {
            chosen.iter().map(|c| c.and_then(|(ii, k)| (k == 0).then_some(ii))).collect()
        };
        let kept_idx: Vec<usize> = keep.iter().flatten().copied().collect();
        let creates: Vec<Slot> = slots.iter().zip(&keep).filter(|(_, k)| k.is_none()).map(|(s, _)| *s).collect();
        let removable: Vec<usize> =
            (0..gpu.insts.len()).filter(|&ii| !kept_idx.contains(&ii) && uses[ii] == Some(Use::Fresh)).collect();
        let fixed: Vec<Instance> =
            (0..gpu.insts.len()).filter(|ii| !removable.contains(ii)).map(|ii| gpu.insts[ii].inst).collect();
        let removable_insts: Vec<Instance> = removable.iter().map(|&ii| gpu.insts[ii].inst).collect();
        if let Some((destroy_pos, placed)) =
            plan_create(ctx.planners[g], &fixed, &removable_insts, &creates, numa_pair, blocked)
        {
            let destroy: Vec<usize> = destroy_pos.iter().map(|&p| removable[p]).collect();
            let mut free_new: Vec<Instance> = placed;
            let mut picks = Vec::new();
            let mut ok = true;
            for (s, k) in slots.iter().zip(&keep) {
                match k {
                    Some(ii) => picks.push((*s, Pick::Existing(*ii))),
                    None => {
                        let pos = free_new.iter().position(|i| {
                            i.profile_id == s.need.min_profile
                                && s.numa.is_none_or(|n| {
                                    model
                                        .profile_by_id(i.profile_id)
                                        .is_some_and(|p| model.gpu_numa_node(i.start, p.placement_size) == Some(n))
                                })
                        });
                        match pos {
                            Some(pos) => picks.push((*s, Pick::Create(free_new.remove(pos)))),
                            None => ok = false,
                        }
                    }
                }
            }
            if ok {
                let class = if destroy.is_empty() { 1 } else { 3 };
                options.push((picks, destroy, class));
            }
        }
    }

    let mut over_budget = false;
    let mut best: Option<GroupOption> = None;
    let mut host: Option<Result<HostPick, Block>> = None;
    for (picks, destroy, class) in options {
        let charge = charge_of(&picks);
        if sub_budget(budget, charge).is_none() {
            over_budget = true;
            continue;
        }
        let hp = if ctx.ignore_host {
            None
        } else {
            let h = host.get_or_insert_with(|| {
                host_pick(ctx.req, ranks.first().copied().unwrap_or(0), gpu.numa_node, ranks.len(), &st.host)
            });
            match h {
                Ok(h) => Some(h.clone()),
                Err(b) => return Err(b.clone()),
            }
        };
        let cost: Cost = (
            class,
            destroy.len(),
            p2p,
            waste_of(&picks),
            away,
            reclaimable_after(&picks),
            hp.as_ref().map_or(0, |h| h.far),
            g,
        );
        if best.as_ref().is_none_or(|b| cost < b.cost) {
            best = Some(GroupOption { g, cost, picks, destroy, host: hp, charge });
        }
    }
    if let Some(b) = best {
        return Ok(b);
    }
    if over_budget {
        return Err(Block::Quota);
    }
    let need: u32 = slots.iter().map(|s| u32::from(s.need.min_compute)).sum();
    let free = u8::try_from(gpu.free_compute(ctx.id, blocked)).unwrap_or(u8::MAX);
    let mut profile =
        slots.iter().map(|s| crate::request::profile_name(model, s.need.min_profile)).collect::<Vec<_>>().join(" + ");
    if numa_pair {
        profile = format!("{profile} in each GPU NUMA node");
    }
    Err(Block::NoRoom {
        free,
        need: u8::try_from(need).unwrap_or(u8::MAX),
        idle: gpu
            .insts
            .iter()
            .zip(&uses)
            .filter(|(_, u)| **u == Some(Use::Fresh))
            .map(|(w, _)| gpu.label(&w.inst))
            .collect(),
        idle_compute: u8::try_from(
            gpu.insts
                .iter()
                .zip(&uses)
                .filter(|(_, u)| **u == Some(Use::Fresh))
                .map(|(w, _)| u32::from(w.compute()))
                .sum::<u32>(),
        )
        .unwrap_or(u8::MAX),
        profile,
        repartition: ctx.repartition && gpu.mig,
        reserved: blocked != 0,
        unhealthy: gpu
            .insts
            .iter()
            .filter(|w| {
                !w.healthy
                    && w.occupants.is_empty()
                    && w.profile.is_some_and(|p| slots.iter().any(|s| s.need.accepts(model, p, w.inst.compute)))
            })
            .map(|w| gpu.label(&w.inst))
            .collect(),
    })
}

/// Apply a chosen option to the state; returns (slot, instance) for every pick.
fn apply(ctx: &Ctx<'_>, st: &mut WState, o: &GroupOption) -> Vec<(Slot, Instance)> {
    let occupant = Occupant { job: ctx.id, sharing: ctx.req.sharing, user: ctx.user, pinned: !ctx.req.pin.is_empty() };
    let gpu = &mut st.gpus[o.g];
    let mut out = Vec::new();
    for (slot, pick) in &o.picks {
        match pick {
            Pick::Existing(ii) => {
                gpu.insts[*ii].occupants.push(occupant);
                out.push((*slot, gpu.insts[*ii].inst));
            }
            Pick::Create(inst) => out.push((*slot, *inst)),
        }
    }
    let mut destroy = o.destroy.clone();
    destroy.sort_unstable_by(|a, b| b.cmp(a));
    for ii in destroy {
        let w = gpu.insts.remove(ii);
        gpu.destroyed.push(w.inst);
    }
    for (_, pick) in &o.picks {
        if let Pick::Create(inst) = pick {
            let profile = gpu.model.profile_by_id(inst.profile_id);
            gpu.insts.push(WInst {
                inst: *inst,
                profile,
                mask: profile.map_or(0, |p| unit_mask(inst.start, p.placement_size)),
                occupants: vec![occupant],
                planned: true,
                held_for: Some(ctx.id),
                healthy: true,
            });
            gpu.planned_by.get_or_insert(ctx.id);
        }
    }
    if let Some(h) = &o.host {
        for (node, cpus, mem) in &h.take {
            if let Some(n) = st.host.get_mut(node) {
                n.take(cpus, *mem);
            }
        }
    }
    out
}

/// Why a pinned request cannot take its instances in `st` (`None`: nothing there stops it):
/// a GPU or instance that is not there, unhealthy, drained or being reconfigured, or an
/// instance another job holds, named (a shared request joins pinned holds of compatible
/// sharing, so only the others are named, with their sharing, and `not pinned` for a job the
/// scheduler placed). `job`: the request's own job, once it has one. The one account of a
/// pin's conflicts, for the scheduler's pending reason and admission's refusal.
pub(crate) fn pin_conflict(req: &JobRequest, st: &WState, job: Option<JobId>) -> Option<(PendingReason, String)> {
    use PendingReason as R;
    for p in &req.pin {
        let Some(g) = st.pos_of(p.gpu) else {
            return Some((
                R::Capacity,
                format!("it is pinned to GPU {}, and there is no GPU {} on this node", p.gpu, p.gpu),
            ));
        };
        let gpu = &st.gpus[g];
        let label = gpu.label(&Instance::new(p.profile_id, p.start));
        let Some(w) = gpu.insts.iter().find(|w| p.is(gpu.gpu, &w.inst)) else {
            return Some((R::Capacity, format!("GPU {} has no {label}", gpu.gpu)));
        };
        let name = format!("GPU {} {label}", gpu.gpu);
        if !gpu.healthy {
            return Some((R::Health, format!("{name} is on an unhealthy GPU: {}", gpu.health_label())));
        }
        if !w.healthy {
            return Some((R::Health, format!("{name} is unhealthy")));
        }
        if gpu.reconfiguring || w.planned {
            return Some((R::Reconfiguring, format!("{name}: GPU {} is being reconfigured", gpu.gpu)));
        }
        if gpu.drained {
            return Some((R::Capacity, format!("{name}: GPU {} is drained", gpu.gpu)));
        }
        let shared = req.sharing.is_shared();
        let holders: Vec<String> = w
            .occupants
            .iter()
            .filter(|o| {
                Some(o.job) != job && !(o.job != 0 && o.pinned && shared && req.sharing.compatible_with(&o.sharing))
            })
            .map(|o| match o.job {
                0 => "a process Tessera did not start".to_string(),
                j if shared && !o.pinned => format!("job {j} ({}, not pinned)", sharing_label(&o.sharing)),
                j if shared => format!("job {j} ({})", sharing_label(&o.sharing)),
                j => format!("job {j}"),
            })
            .collect();
        if !holders.is_empty() {
            return Some((R::Capacity, format!("{name} is held by {}", holders.join(", "))));
        }
        if let Some(h) = w.held_for.filter(|h| Some(*h) != job) {
            return Some((R::Capacity, format!("{name} is held for job {h}")));
        }
    }
    None
}

/// `exclusive`, `time-sliced`, `MPS 25%` (a holder's sharing, when a shared pin cannot join it).
fn sharing_label(sharing: &Sharing) -> String {
    match sharing {
        Sharing::Exclusive => "exclusive".to_string(),
        Sharing::TimeSlice => "time-sliced".to_string(),
        Sharing::Mps { active_thread_pct, .. } => format!("MPS {active_thread_pct}%"),
    }
}

/// Place a whole job (all ranks or nothing) on a copy of `st`.
pub(crate) fn attempt(ctx: &Ctx<'_>, st: &WState) -> Result<(WState, Placed), Failure> {
    let mut s = st.clone();
    let mut budget = ctx.budget;
    let mut charge = (0u64, 0u64);
    let per_rank = ctx.req.gpus_per_rank.max(1);
    // Groups of placement units placed together; unit `u` belongs to rank `u / gpus_per_rank`.
    let groups: Vec<(Vec<u32>, bool)> = if ctx.req.gpu_numa_local {
        vec![((0..ctx.req.ranks).collect(), true)]
    } else {
        (0..ctx.req.placement_units()).map(|u| (vec![u], false)).collect()
    };
    let mut so_far: BTreeMap<u32, RankSoFar> = BTreeMap::new();
    let mut entries: Vec<Entry> = Vec::new();
    for (units, pair) in &groups {
        let rank = units.first().copied().unwrap_or(0) / per_rank;
        let before = if *pair { RankSoFar::default() } else { so_far.get(&rank).copied().unwrap_or_default() };
        let mut best: Option<GroupOption> = None;
        let mut blocks = Vec::new();
        for g in 0..s.gpus.len() {
            match eval_gpu(ctx, &s, g, units, *pair, budget, before) {
                Ok(o) => {
                    if best.as_ref().is_none_or(|b| o.cost < b.cost) {
                        best = Some(o);
                    }
                }
                Err(b) => blocks.push((g, b)),
            }
        }
        let Some(o) = best else {
            return Err(Failure { rank: units.first().copied().unwrap_or(0), blocks });
        };
        if let Some(b) = sub_budget(budget, o.charge) {
            budget = b;
        }
        charge = (charge.0 + o.charge.0, charge.1 + o.charge.1);
        let host = o.host.clone();
        let gpu = &s.gpus[o.g];
        let (gpu_numa, gpu_mig) = (gpu.numa_node, gpu.mig);
        if !*pair {
            let e = so_far.entry(rank).or_default();
            if gpu_mig {
                e.mig += u32::try_from(o.picks.len()).unwrap_or(u32::MAX);
            } else {
                e.whole += 1;
            }
            e.first_numa.get_or_insert(gpu_numa);
        }
        let placed = apply(ctx, &mut s, &o);
        for (slot, inst) in placed {
            let unit_pos = units.iter().position(|u| *u == slot.rank).unwrap_or(0);
            // A unit's CPUs and memory go with its first instance.
            let shares = if slot.index == 0 {
                host.as_ref().and_then(|h| h.per_rank.get(unit_pos).cloned()).unwrap_or_default()
            } else {
                Vec::new()
            };
            let numa = host.as_ref().map_or(gpu_numa, |h| h.numa_node);
            entries.push((slot.rank, slot.index, o.g, inst, shares, numa));
        }
    }
    entries.sort_by_key(|e| (e.0, e.1));
    let ranks: Vec<(usize, u32, SlicePlacement)> = entries
        .into_iter()
        .map(|(unit, _, g, instance, host, numa_node)| {
            let rank = if ctx.req.gpu_numa_local { unit } else { unit / per_rank };
            (g, rank, SlicePlacement { gpu: s.gpus[g].gpu, instance, numa_node, host })
        })
        .collect();
    let mut plans = Vec::new();
    for (g, gpu) in s.gpus.iter().enumerate() {
        let planned = |x: &WGpu| x.insts.iter().filter(|w| w.planned).count();
        if planned(gpu) == planned(&st.gpus[g]) && gpu.destroyed.len() == st.gpus[g].destroyed.len() {
            continue;
        }
        let current: Vec<CurrentInstance> = gpu
            .insts
            .iter()
            .filter(|w| !w.planned)
            .map(|w| CurrentInstance { instance: w.inst, busy: true, gpu_instance_id: None })
            .chain(gpu.destroyed.iter().map(|i| CurrentInstance { instance: *i, busy: false, gpu_instance_id: None }))
            .collect();
        let target: Vec<Instance> = gpu.insts.iter().map(|w| w.inst).collect();
        match ctx.planners[g].reconfigure(&current, &Wanted::Layout(target)) {
            Ok(plan) => plans.push((g, plan)),
            Err(e) => return Err(Failure { rank: 0, blocks: vec![(g, Block::Plan(e.to_string()))] }),
        }
    }
    Ok((s, Placed { ranks, plans, charge }))
}
