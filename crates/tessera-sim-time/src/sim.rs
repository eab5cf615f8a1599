//! The event loop: one policy, one seed, in virtual time.
//!
//! Events are arrivals, finishes and the ends of reconfigurations; starts and the beginnings of
//! reconfigurations happen in rounds. At every instant where something happened, in order:
//!
//! 1. arrivals join the global queue; finished jobs leave their instances; GPUs whose
//!    reconfiguration is done take the plan's target layout;
//! 2. every node whose reconfiguration finished runs a round of its own [`Scheduler`] over the
//!    jobs bound to it (they start on the instances made for them);
//! 3. the dispatcher walks the global queue in fair-share-then-FIFO order and offers each job to
//!    the nodes an index says can take it, best fit first (the node with the least free compute
//!    that fits), calling that node's `Scheduler::schedule` with the node's view, the jobs bound
//!    to it plus the offered job, and its running jobs. A `Start` starts the job; a
//!    `Reconfigure` marks the GPU `reconfiguring` for the reconfiguration cost and binds the job
//!    to the node until the new instances exist; a `Pending` leaves it queued (next node). A
//!    job shape (request) that no node takes is skipped for the rest of the round.
//!
//! Nothing sleeps: time jumps from event to event.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};

use tessera_mig::{GpuModel, Instance, ProfileKind};
use tessera_sched::{
    ClusterView, Decision, GpuRequest, GpuView, HostNuma, InstanceView, JobRequest, MIG_DEVICES_PER_PROCESS_R570,
    Occupant, PendingReason, QueuedJob, RankStart, RunningJob, Scheduler, SchedulerConfig, Sharing, SlicePlacement,
};

use crate::buckets::TimeBuckets;
use crate::spec::{ClusterSpec, PolicySpec, compute_only, compute_slices_for, resolve_layout};
use crate::speed::interpolate;

/// Offers per job per round before its shape is skipped.
const MAX_OFFERS: usize = 8;
/// Buckets of the utilisation series over the measurement window.
pub(crate) const SERIES_BUCKETS: usize = 240;
/// The dispatcher's fair-share half-life (the core's default), in seconds.
const HALF_LIFE_S: f64 = 3600.0;
/// Most compute slices any model has (for the per-threshold sums).
const MAX_C: usize = 16;

/// One job, ready for the loop.
#[derive(Debug, Clone)]
pub(crate) struct SimJob {
    pub submit: f64,
    /// Running time on a whole GPU.
    pub duration: f64,
    pub tenant: u16,
    pub num_gpu: u32,
    pub milli: u32,
    pub mem_mib: u64,
    /// Host CPUs and host memory (MiB) per rank.
    pub cpus: u32,
    pub host_mib: u64,
    /// Speeds at 1, 2, 3, 4, 7 slices of 7.
    pub curve: [f64; 5],
}

/// Knobs of one run.
#[derive(Debug, Clone)]
pub(crate) struct SimParams {
    pub reconfig_cost_s: f64,
    pub mps_slowdown: f64,
    pub mps_max_milli: u32,
    /// Measurement window in time: [from, to).
    pub window: (f64, f64),
    /// Dynamic MIG: a job that cannot start on its slice may start on the smallest slice that
    /// keeps this fraction of its speed (0: never).
    pub compact_speed: f64,
    /// A job refused for this long gets a node drained for it (no other job starts there).
    pub reserve_after_s: f64,
    /// Dynamic MIG: a job alone in the queue while less than this fraction of the compute is
    /// allocated first tries a whole GPU (0: never).
    pub expand_below: f64,
    /// Host CPUs and memory (MiB) per GPU of a node, split over two host NUMA nodes (GPUs in
    /// index order); 0 CPUs: the host is not modelled and jobs ask for no CPUs or memory.
    pub host_cpus_per_gpu: u32,
    pub host_mem_mib_per_gpu: u64,
}

/// The host of a node with `gpus` GPUs: two NUMA nodes (one with a single GPU), each with its
/// share of the CPUs and memory.
fn host_of(gpus: u32, cpus_per_gpu: u32, mem_per_gpu: u64) -> Vec<HostNuma> {
    let numa = gpus.clamp(1, 2);
    let per_cpus = cpus_per_gpu * gpus / numa;
    let per_mem = mem_per_gpu * u64::from(gpus) / u64::from(numa);
    (0..numa)
        .map(|k| HostNuma { node: k, free_cpus: (k * per_cpus..(k + 1) * per_cpus).collect(), free_mem_mib: per_mem })
        .collect()
}

/// What one job did.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct JobRecord {
    pub start: Option<f64>,
    pub finish: Option<f64>,
    /// GPU-seconds allocated (compute fraction × time).
    pub gpu_s: f64,
}

/// What one run produced.
#[derive(Debug, Clone, Default)]
pub(crate) struct SimOutput {
    pub records: Vec<JobRecord>,
    /// Jobs that can never start on this cluster (request does not fit any node).
    pub unplaceable: u64,
    pub reconfigurations: u64,
    /// Time averages over the window.
    pub utilization: f64,
    pub busy_utilization: f64,
    pub unusable_fraction: f64,
    pub util_series: Vec<(f64, f64)>,
    /// Invariant violations found while running (empty when all is well).
    pub violations: Vec<String>,
}

/// A policy resolved on a cluster: initial layouts per model and how jobs become requests.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub spec: PolicySpec,
    /// Static layout names (for `static`).
    pub layout: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Time(f64);

impl Eq for Time {}
impl PartialOrd for Time {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Time {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Finish { job: u32, version: u32 },
    ReconfigDone { node: u32, gpu: u32 },
}

/// A distinct request: what the index and the skip-ahead work on.
#[derive(Debug, Clone)]
struct Shape {
    request: JobRequest,
    ranks: u32,
    mps_pct: Option<u8>,
    /// Per model (index into `models`): (accepts by profile index, min profile index, min compute).
    per_model: Vec<Option<ShapeModel>>,
    /// Min compute slices on the first model (for the unusable-capacity threshold).
    min_compute: u8,
}

#[derive(Debug, Clone)]
struct ShapeModel {
    accepts: Vec<bool>,
    min_pidx: usize,
}

#[derive(Debug, Clone, Default)]
struct GpuCaps {
    /// Per shape: ranks that idle (or joinable MPS) instances could take now.
    a: Vec<u8>,
    /// Per shape: ranks a repartition of the idle space could make room for.
    b: Vec<u8>,
    free: u8,
    usable: [u8; MAX_C],
}

#[derive(Debug)]
struct Node {
    sched: Scheduler,
    view: ClusterView,
    running: Vec<RunningJob>,
    bound: Vec<u32>,
    targets: Vec<Option<Vec<Instance>>>,
    model_idx: Vec<usize>,
    caps: Vec<GpuCaps>,
    dirty: Vec<bool>,
    listed: bool,
    free_key: u32,
    in_a: Vec<bool>,
    in_any: Vec<bool>,
}

#[derive(Debug, Clone, Default)]
struct JobState {
    node: u32,
    slices: Vec<SlicePlacement>,
    rate: f64,
    alone: f64,
    remaining: f64,
    last: f64,
    version: u32,
    alloc: f64,
    shared: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Offer {
    Started,
    Bound,
    Refused,
}

/// Per (model, busy layout): profiles placeable around it and the compute usable by threshold.
type CapCache = HashMap<(usize, Vec<Instance>), (Vec<u8>, [u8; MAX_C])>;

struct Sim<'a> {
    jobs: &'a [SimJob],
    tenants: &'a [String],
    params: &'a SimParams,
    repartition: bool,
    models: Vec<&'static GpuModel>,
    maximal: Vec<Vec<Vec<Instance>>>,
    shapes: Vec<Shape>,
    job_shape: Vec<Option<u32>>,
    /// The shape a job is offered, bound or running as (its own, or its compact fallback).
    cur_shape: Vec<Option<u32>>,
    /// Queue class of each job (its shape and fallback) and each class's pair.
    class_of: Vec<Option<usize>>,
    class_shapes: Vec<(u32, Option<u32>)>,
    nodes: Vec<Node>,
    tier_a: Vec<BTreeSet<(u32, u32)>>,
    tier_any: Vec<BTreeSet<(u32, u32)>>,
    queues: Vec<Vec<VecDeque<u32>>>,
    queued_per_shape: Vec<u64>,
    queued: u64,
    state: Vec<JobState>,
    records: Vec<JobRecord>,
    heap: BinaryHeap<Reverse<(Time, u64, Ev)>>,
    seq: u64,
    now: f64,
    cache: CapCache,
    usage: Vec<f64>,
    held: Vec<f64>,
    ledger_at: f64,
    // Metrics.
    total_slices: f64,
    alloc: f64,
    busy: f64,
    free_total: u64,
    usable_total: [u64; MAX_C],
    acc_util: f64,
    acc_busy: f64,
    acc_unusable: f64,
    series: TimeBuckets,
    reconfigs: u64,
    reconfiguring_nodes: Vec<u32>,
    dirty_nodes: Vec<u32>,
    /// (job, node): the node is kept for the job until it starts.
    reserved: Option<(u32, u32)>,
    expand: Option<u32>,
    violations: Vec<String>,
}

fn model_index(models: &mut Vec<&'static GpuModel>, m: &'static GpuModel) -> usize {
    match models.iter().position(|x| std::ptr::eq(*x, m)) {
        Some(i) => i,
        None => {
            models.push(m);
            models.len() - 1
        }
    }
}

fn full_layout(model: &GpuModel) -> Vec<Instance> {
    tessera_sched::full_profile(model)
        .and_then(|p| tessera_mig::place(model, &[tessera_mig::WantedInstance::new(p.id)], &[]).ok())
        .map(|p| p.layout)
        .unwrap_or_default()
}

fn standard_ids(model: &GpuModel) -> Vec<u32> {
    model.profiles.iter().filter(|p| p.kind == ProfileKind::Standard).map(|p| p.id).collect()
}

/// The GPU request for `c` compute slices and `mem` MiB (0: unknown) on `model`, preferring
/// the forms a larger free instance can also serve.
fn gpu_request(c: u8, mem: u64, model: &GpuModel) -> Option<GpuRequest> {
    let by_compute = GpuRequest::ComputeSlices { slices: c };
    if mem == 0 {
        return Some(by_compute);
    }
    let resolved = |g: &GpuRequest| {
        JobRequest::new(g.clone())
            .resolve(model)
            .ok()
            .and_then(|w| w.first().and_then(|w| model.profile_by_id(w.profile_id)).cloned())
    };
    if let Some(p) = resolved(&by_compute)
        && tessera_sched::profile_memory_mib(model, &p) >= mem
    {
        return Some(by_compute);
    }
    let by_mem = GpuRequest::Memory { mib: mem };
    if let Some(p) = resolved(&by_mem)
        && p.compute_slices >= c
    {
        return Some(by_mem);
    }
    model
        .profiles
        .iter()
        .filter(|p| {
            p.kind == ProfileKind::Standard
                && p.compute_slices >= c
                && tessera_sched::profile_memory_mib(model, p) >= mem
        })
        .min_by_key(|p| (p.compute_slices, p.memory_slices, p.id))
        .map(|p| GpuRequest::Profile { name: p.name.clone() })
}

/// The exact profile a request resolves to on `model`: under dynamic MIG a job asks for its
/// smallest fitting slice by name, so the core reshapes idle capacity to that size instead of
/// handing it a larger idle instance.
fn exact(g: GpuRequest, model: &GpuModel) -> Option<GpuRequest> {
    let w = JobRequest::new(g).resolve(model).ok()?;
    let p = model.profile_by_id(w.first()?.profile_id)?;
    Some(GpuRequest::Profile { name: p.name.clone() })
}

/// A request written for `m0` as it reads on `model`: a profile named on `m0` becomes `model`'s
/// standard profile with the same compute slices (fewest memory slices with at least as much
/// memory, else the largest memory); other forms are model-independent.
fn for_model(req: &JobRequest, m0: &GpuModel, model: &GpuModel) -> JobRequest {
    let GpuRequest::Profile { name } = &req.gpu else { return req.clone() };
    if std::ptr::eq(m0, model) || model.profile(name).is_ok_and(|p| p.kind == ProfileKind::Standard) {
        return req.clone();
    }
    let Ok(p0) = m0.profile(name) else { return req.clone() };
    let mem0 = tessera_sched::profile_memory_mib(m0, p0);
    let same: Vec<&tessera_mig::Profile> = model
        .profiles
        .iter()
        .filter(|p| p.kind == ProfileKind::Standard && p.compute_slices == p0.compute_slices)
        .collect();
    let pick = same
        .iter()
        .filter(|p| tessera_sched::profile_memory_mib(model, p) >= mem0)
        .min_by_key(|p| (p.memory_slices, p.id))
        .or_else(|| same.iter().max_by_key(|p| (p.memory_slices, p.id)));
    let mut r = req.clone();
    if let Some(p) = pick {
        r.gpu = GpuRequest::Profile { name: p.name.clone() };
    }
    r
}

/// The request a job makes under a policy (`None`: it cannot be expressed on `model`).
pub(crate) fn request_for(
    job: &SimJob,
    policy: &PolicySpec,
    model: &GpuModel,
    static_cap: u8,
    mps_max_milli: u32,
    tenant: &str,
) -> Option<JobRequest> {
    let total = model.compute_slices.max(1);
    let ranks = job.num_gpu.max(1);
    let c = if ranks > 1 { total } else { compute_slices_for(job.milli, model) };
    let (gpu, sharing) = match policy {
        PolicySpec::Whole => (GpuRequest::WholeGpu, Sharing::Exclusive),
        PolicySpec::Mps => {
            if ranks == 1 && job.milli < 1000 {
                let pct = u8::try_from(job.milli.div_ceil(10).clamp(1, 100)).unwrap_or(100);
                (GpuRequest::WholeGpu, Sharing::Mps { active_thread_pct: pct, pinned_mem_mib: None })
            } else {
                (GpuRequest::WholeGpu, Sharing::Exclusive)
            }
        }
        PolicySpec::Static { .. } => (gpu_request(c.min(static_cap.max(1)), job.mem_mib, model)?, Sharing::Exclusive),
        PolicySpec::Dynamic => (exact(gpu_request(c, job.mem_mib, model)?, model)?, Sharing::Exclusive),
        PolicySpec::DynamicMps => {
            if ranks == 1 && job.milli <= mps_max_milli && job.mem_mib == 0 {
                let c2 = compute_slices_for((job.milli * 2).min(1000), model);
                let pct = (100.0 * f64::from(job.milli) * f64::from(total) / (1000.0 * f64::from(c2))).round();
                let pct = u8::try_from((pct as u32).clamp(1, 100)).unwrap_or(100);
                let gpu = exact(GpuRequest::ComputeSlices { slices: c2 }, model)?;
                (gpu, Sharing::Mps { active_thread_pct: pct, pinned_mem_mib: None })
            } else {
                (exact(gpu_request(c, job.mem_mib, model)?, model)?, Sharing::Exclusive)
            }
        }
    };
    let mut r = JobRequest::new(gpu);
    r.ranks = ranks;
    r.sharing = sharing;
    r.tenant = tenant.to_string();
    Some(r)
}

/// The distinct requests of a run, with what the index needs of each.
struct ShapeTable<'m> {
    models: &'m [&'static GpuModel],
    m0: &'static GpuModel,
    max_per_node: u32,
    shapes: Vec<Shape>,
    ids: BTreeMap<(GpuRequest, u32, Sharing), u32>,
}

impl ShapeTable<'_> {
    /// The id of a request's shape; `None` when no node of the cluster can ever run it.
    fn intern(&mut self, req: JobRequest) -> Option<u32> {
        let key = (req.gpu.clone(), req.ranks, req.sharing);
        if let Some(id) = self.ids.get(&key) {
            return Some(*id);
        }
        let per_model: Vec<Option<ShapeModel>> = self
            .models
            .iter()
            .map(|m| {
                let req = for_model(&req, self.m0, m);
                let w = req.resolve(m).ok()?;
                let min_pidx = m.profile_index(w.first()?.profile_id)?;
                let accepts = m
                    .profiles
                    .iter()
                    .map(|p| p.kind == ProfileKind::Standard && req.fits_instance(m, 0, &Instance::new(p.id, 0)))
                    .collect();
                Some(ShapeModel { accepts, min_pidx })
            })
            .collect();
        if req.ranks > self.max_per_node || per_model.iter().all(Option::is_none) {
            return None;
        }
        let min_compute = per_model
            .first()
            .and_then(|s| s.as_ref())
            .and_then(|s| self.m0.profiles.get(s.min_pidx))
            .map_or(1, |p| p.compute_slices);
        let mps_pct = match req.sharing {
            Sharing::Mps { active_thread_pct, .. } => Some(active_thread_pct),
            _ => None,
        };
        let id = u32::try_from(self.shapes.len()).unwrap_or(u32::MAX);
        self.shapes.push(Shape { ranks: req.ranks, request: req, mps_pct, per_model, min_compute });
        self.ids.insert(key, id);
        Some(id)
    }
}

/// Dynamic MIG's fallback when a job cannot start on its requested slice: the smallest profile
/// on which the job still runs at `compact_speed` of its speed on the requested slice (speeds
/// from its model class's curve); every rank of a gang the same. Jobs with unknown memory only.
fn compact_request(job: &SimJob, model: &GpuModel, compact_speed: f64) -> Option<JobRequest> {
    if job.mem_mib > 0 {
        return None;
    }
    let total = f64::from(model.compute_slices.max(1));
    let want = if job.num_gpu > 1 { model.compute_slices } else { compute_slices_for(job.milli, model) };
    let full = interpolate(&job.curve, f64::from(want) / total);
    let c = (1..=want).find(|c| interpolate(&job.curve, f64::from(*c) / total) >= compact_speed * full)?;
    let mut r = JobRequest::new(exact(GpuRequest::ComputeSlices { slices: c }, model)?);
    r.ranks = job.num_gpu.max(1);
    r.tenant = "t".into();
    Some(r)
}

/// Run one policy over `jobs` (sorted by submit time) on `cluster`.
pub(crate) fn simulate(
    jobs: &[SimJob],
    tenants: &[String],
    cluster: &ClusterSpec,
    policy: &Resolved,
    params: &SimParams,
    progress: &mut dyn FnMut(u64),
) -> Result<SimOutput, crate::TimeError> {
    let mut models: Vec<&'static GpuModel> = Vec::new();
    for g in &cluster.groups {
        model_index(&mut models, g.model);
    }
    let repartition = policy.spec.repartition();
    // Initial layout per model.
    let mut initial: Vec<Vec<Instance>> = Vec::new();
    let mut caps_static: Vec<u8> = Vec::new();
    for (k, m) in models.iter().enumerate() {
        let layout = match (&policy.spec, &policy.layout) {
            (PolicySpec::Whole | PolicySpec::Mps, _) => full_layout(m),
            // The layout's names are the first model's; the others read them by compute size.
            (PolicySpec::Static { .. }, Some(names)) if k == 0 => resolve_layout(m, names)?,
            (PolicySpec::Static { .. }, Some(names)) => {
                resolve_layout(m, &names.iter().map(|n| compute_only(n)).collect::<Vec<_>>())?
            }
            (PolicySpec::Static { .. }, None) => {
                return Err(crate::TimeError::Config {
                    field: "policies",
                    reason: "a static policy needs a layout at this point".into(),
                });
            }
            _ => Vec::new(),
        };
        let cap = layout
            .iter()
            .filter_map(|i| m.profile_by_id(i.profile_id))
            .map(|p| p.compute_slices)
            .max()
            .unwrap_or(m.compute_slices);
        caps_static.push(cap);
        initial.push(layout);
    }
    let maximal: Vec<Vec<Vec<Instance>>> = models
        .iter()
        .map(|m| {
            let ids = standard_ids(m);
            match tessera_mig::planner_for(m) {
                Some(p) => p.maximal_layouts(Some(&ids)),
                None => tessera_mig::Planner::new(m).maximal_layouts(Some(&ids)),
            }
        })
        .collect();

    // Shapes.
    let Some(m0) = models.first().copied() else {
        return Err(crate::TimeError::Config { field: "cluster", reason: "has no GPUs".into() });
    };
    let cap0 = caps_static.first().copied().unwrap_or(m0.compute_slices);
    let mut table = ShapeTable {
        models: &models,
        m0,
        max_per_node: cluster.max_gpus_per_node(),
        shapes: Vec::new(),
        ids: BTreeMap::new(),
    };
    let mut job_shape = Vec::with_capacity(jobs.len());
    let mut job_alt = Vec::with_capacity(jobs.len());
    let mut unplaceable = 0u64;
    for job in jobs {
        let id = request_for(job, &policy.spec, m0, cap0, params.mps_max_milli, "t").and_then(|r| table.intern(r));
        let alt = match id {
            Some(_) if repartition && params.compact_speed > 0.0 => {
                compact_request(job, m0, params.compact_speed).and_then(|r| table.intern(r))
            }
            _ => None,
        };
        if id.is_none() {
            unplaceable += 1;
        }
        job_shape.push(id);
        job_alt.push(if alt == id { None } else { alt });
    }
    // The whole-GPU shape a lone single-rank job may take while the cluster is mostly idle.
    let expand = if repartition && params.expand_below > 0.0 {
        exact(GpuRequest::WholeGpu, m0).and_then(|g| {
            let mut r = JobRequest::new(g);
            r.tenant = "t".into();
            table.intern(r)
        })
    } else {
        None
    };
    let shapes = table.shapes;
    let mut classes: BTreeMap<(u32, Option<u32>), usize> = BTreeMap::new();
    let mut class_of = Vec::with_capacity(jobs.len());
    for (s, a) in job_shape.iter().zip(&job_alt) {
        class_of.push(s.map(|s| {
            let n = classes.len();
            *classes.entry((s, *a)).or_insert(n)
        }));
    }
    let mut class_shapes = vec![(0u32, None); classes.len()];
    for (k, v) in &classes {
        class_shapes[*v] = *k;
    }

    // Nodes.
    let mut nodes = Vec::new();
    let sched_cfg = SchedulerConfig { repartition, preemption: false, ..SchedulerConfig::default() };
    for g in &cluster.groups {
        let mi = model_index(&mut models, g.model);
        for _ in 0..g.nodes {
            let host_on = params.host_cpus_per_gpu > 0;
            let numa = g.gpus_per_node.clamp(1, 2);
            let gpus: Vec<GpuView> = (0..g.gpus_per_node)
                .map(|i| {
                    let mut v = GpuView::new(i, g.model);
                    v.instances = initial[mi].iter().map(|x| InstanceView::idle(*x)).collect();
                    if host_on {
                        v.numa_node = Some(i * numa / g.gpus_per_node.max(1));
                    }
                    v
                })
                .collect();
            let n = gpus.len();
            let host = if host_on {
                host_of(g.gpus_per_node, params.host_cpus_per_gpu, params.host_mem_mib_per_gpu)
            } else {
                Vec::new()
            };
            nodes.push(Node {
                sched: Scheduler::new(sched_cfg.clone()),
                view: ClusterView { gpus, host, max_mig_devices_per_process: MIG_DEVICES_PER_PROCESS_R570 },
                running: Vec::new(),
                bound: Vec::new(),
                targets: vec![None; n],
                model_idx: vec![mi; n],
                caps: vec![GpuCaps::default(); n],
                dirty: vec![true; n],
                listed: false,
                free_key: 0,
                in_a: vec![false; shapes.len()],
                in_any: vec![false; shapes.len()],
            });
        }
    }
    let total_slices: f64 =
        cluster.groups.iter().map(|g| f64::from(g.nodes * g.gpus_per_node) * f64::from(g.model.compute_slices)).sum();
    let ns = shapes.len();
    let mut sim = Sim {
        jobs,
        tenants,
        params,
        repartition,
        models,
        maximal,
        cur_shape: job_shape.clone(),
        job_shape,
        class_of,
        nodes,
        tier_a: vec![BTreeSet::new(); ns],
        tier_any: vec![BTreeSet::new(); ns],
        queues: vec![vec![VecDeque::new(); class_shapes.len()]; tenants.len()],
        class_shapes,
        queued_per_shape: vec![0; ns],
        queued: 0,
        shapes,
        state: vec![JobState::default(); jobs.len()],
        records: vec![JobRecord::default(); jobs.len()],
        heap: BinaryHeap::new(),
        seq: 0,
        now: 0.0,
        cache: HashMap::new(),
        usage: vec![0.0; tenants.len()],
        held: vec![0.0; tenants.len()],
        ledger_at: 0.0,
        total_slices,
        alloc: 0.0,
        busy: 0.0,
        free_total: 0,
        usable_total: [0; MAX_C],
        acc_util: 0.0,
        acc_busy: 0.0,
        acc_unusable: 0.0,
        series: TimeBuckets::new(params.window.0, params.window.1, SERIES_BUCKETS),
        reconfigs: 0,
        reconfiguring_nodes: Vec::new(),
        dirty_nodes: Vec::new(),
        reserved: None,
        expand,
        violations: Vec::new(),
    };
    for n in 0..sim.nodes.len() {
        sim.refresh(n);
    }
    sim.run(progress);
    let (w0, w1) = params.window;
    let span = (w1 - w0).max(f64::MIN_POSITIVE);
    let util_series =
        sim.series.means().into_iter().map(|(t, v)| (t, v / sim.total_slices.max(f64::MIN_POSITIVE))).collect();
    let denom = (span * sim.total_slices).max(f64::MIN_POSITIVE);
    Ok(SimOutput {
        records: sim.records,
        unplaceable,
        reconfigurations: sim.reconfigs,
        utilization: sim.acc_util / denom,
        busy_utilization: sim.acc_busy / denom,
        unusable_fraction: sim.acc_unusable / denom,
        util_series,
        violations: sim.violations,
    })
}

fn ms(t: f64) -> u64 {
    if t <= 0.0 { 0 } else { (t * 1000.0).round() as u64 }
}

impl Sim<'_> {
    fn push(&mut self, t: f64, ev: Ev) {
        self.seq += 1;
        self.heap.push(Reverse((Time(t), self.seq, ev)));
    }

    fn run(&mut self, progress: &mut dyn FnMut(u64)) {
        let mut next_arrival = 0usize;
        let mut finished_since = 0u64;
        loop {
            let t_arr = self.jobs.get(next_arrival).map(|j| j.submit);
            let t_ev = self.heap.peek().map(|Reverse((t, _, _))| t.0);
            let t = match (t_arr, t_ev) {
                (Some(a), Some(e)) => a.min(e),
                (Some(a), None) => a,
                (None, Some(e)) => e,
                (None, None) => break,
            };
            self.advance(t);
            while next_arrival < self.jobs.len() && self.jobs[next_arrival].submit <= t {
                self.enqueue(u32::try_from(next_arrival).unwrap_or(u32::MAX));
                next_arrival += 1;
            }
            while let Some(Reverse((te, _, ev))) = self.heap.peek().copied() {
                if te.0 > t {
                    break;
                }
                self.heap.pop();
                match ev {
                    Ev::Finish { job, version } => {
                        if self.state[job as usize].version == version && self.records[job as usize].start.is_some() {
                            if self.records[job as usize].finish.is_some() {
                                self.violations.push(format!("job {job} finished twice"));
                            }
                            self.finish(job);
                            finished_since += 1;
                        }
                    }
                    Ev::ReconfigDone { node, gpu } => self.reconfig_done(node, gpu),
                }
            }
            self.refresh_dirty();
            let done: Vec<u32> = std::mem::take(&mut self.reconfiguring_nodes);
            for n in done {
                self.node_round(n as usize);
            }
            if self.queued > 0 {
                self.dispatch();
            }
            self.refresh_dirty();
            if finished_since >= 1024 {
                progress(finished_since);
                finished_since = 0;
            }
        }
        progress(finished_since);
    }

    /// Integrate the metrics from the previous instant to `t`.
    fn advance(&mut self, t: f64) {
        let (w0, w1) = self.params.window;
        let from = self.now.max(w0);
        let to = t.min(w1);
        if to > from {
            let dt = to - from;
            self.acc_util += self.alloc * dt;
            self.acc_busy += self.busy * dt;
            let c = self.queue_min_compute();
            let usable = self.usable_total[usize::from(c.max(1) - 1).min(MAX_C - 1)];
            self.acc_unusable += self.free_total.saturating_sub(usable) as f64 * dt;
            self.series.add(from, to, self.alloc);
        }
        if t > self.now {
            self.now = t;
        }
    }

    fn queue_min_compute(&self) -> u8 {
        self.queued_per_shape
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(s, _)| self.shapes[s].min_compute)
            .min()
            .unwrap_or(1)
    }

    fn enqueue(&mut self, j: u32) {
        let (Some(s), Some(class)) = (self.job_shape[j as usize], self.class_of[j as usize]) else { return };
        self.cur_shape[j as usize] = Some(s);
        let t = usize::from(self.jobs[j as usize].tenant);
        let q = &mut self.queues[t][class];
        let key = |x: &u32| (Time(self.jobs[*x as usize].submit), *x);
        let pos = q.partition_point(|x| key(x) < key(&j));
        q.insert(pos, j);
        self.queued_per_shape[s as usize] += 1;
        self.queued += 1;
    }

    fn dequeue(&mut self, j: u32) {
        let (Some(s), Some(class)) = (self.job_shape[j as usize], self.class_of[j as usize]) else { return };
        let t = usize::from(self.jobs[j as usize].tenant);
        let q = &mut self.queues[t][class];
        if let Some(pos) = q.iter().position(|x| *x == j) {
            q.remove(pos);
            self.queued_per_shape[s as usize] -= 1;
            self.queued -= 1;
        }
    }

    /// Bring every tenant's decayed usage (slice-seconds) to now.
    fn settle_ledger(&mut self) {
        let dt = self.now - self.ledger_at;
        if dt <= 0.0 {
            return;
        }
        let f = (-dt / HALF_LIFE_S).exp2();
        let gain = HALF_LIFE_S / std::f64::consts::LN_2 * (1.0 - f);
        for (u, h) in self.usage.iter_mut().zip(&self.held) {
            *u = *u * f + h * gain;
        }
        self.ledger_at = self.now;
    }

    fn dispatch(&mut self) {
        self.settle_ledger();
        let ns = self.shapes.len();
        let mut failed = vec![false; ns];
        let mut projected = vec![0.0f64; self.tenants.len()];
        loop {
            let mut pick: Option<(f64, usize, u32, usize)> = None;
            for (t, proj) in projected.iter().enumerate() {
                let head = (0..self.class_shapes.len())
                    .filter(|c| {
                        let (s, alt) = self.class_shapes[*c];
                        !failed[s as usize] || alt.is_some_and(|a| !failed[a as usize])
                    })
                    .filter_map(|c| self.queues[t][c].front().map(|j| (*j, c)))
                    .min_by(|a, b| {
                        self.jobs[a.0 as usize].submit.total_cmp(&self.jobs[b.0 as usize].submit).then(a.0.cmp(&b.0))
                    });
                let Some((j, s)) = head else { continue };
                let key = self.usage[t] + proj;
                let better = match &pick {
                    None => true,
                    Some((k, pt, _, _)) => key < *k || (key == *k && self.tenants[t] < self.tenants[*pt]),
                };
                if better {
                    pick = Some((key, t, j, s));
                }
            }
            let Some((_, t, j, c)) = pick else { break };
            let (s, alt) = self.class_shapes[c];
            let mut placed = false;
            let idle = self.alloc < self.params.expand_below * self.total_slices && self.queued == 1;
            let up = self.expand.filter(|e| {
                idle && *e != s && self.jobs[j as usize].num_gpu <= 1 && self.shapes[s as usize].mps_pct.is_none()
            });
            for shape in up.into_iter().chain(std::iter::once(s)).chain(alt) {
                if failed[shape as usize] {
                    continue;
                }
                if self.place(j, shape) {
                    placed = true;
                    break;
                }
                failed[shape as usize] = true;
            }
            if placed {
                self.dequeue(j);
                projected[t] += self.state[j as usize].alloc.max(1.0) * HALF_LIFE_S;
                if self.reserved.is_some_and(|(r, _)| r == j) {
                    self.reserved = None;
                }
            } else if self.reserved.is_none() && self.now - self.jobs[j as usize].submit >= self.params.reserve_after_s
            {
                self.reserve(j, s);
            }
        }
    }

    /// Keep a node for job `j` (of shape `s`): the node with the most free compute among those
    /// large enough, so it drains soonest.
    fn reserve(&mut self, j: u32, s: u32) {
        let ranks = self.shapes[s as usize].ranks as usize;
        let best = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.view.gpus.len() >= ranks)
            .max_by_key(|(i, n)| (n.free_key, Reverse(*i)))
            .map(|(i, _)| u32::try_from(i).unwrap_or(u32::MAX));
        if let Some(n) = best {
            self.reserved = Some((j, n));
        }
    }

    /// Offer a job to the nodes the index names; true when it started or was bound.
    fn place(&mut self, j: u32, s: u32) -> bool {
        let s = s as usize;
        let blocked = self.reserved.and_then(|(r, n)| (r != j).then_some(n));
        let mut cands: Vec<u32> =
            self.tier_a[s].iter().map(|(_, n)| *n).filter(|n| Some(*n) != blocked).take(MAX_OFFERS).collect();
        if cands.len() < MAX_OFFERS {
            for (_, n) in &self.tier_any[s] {
                if Some(*n) == blocked {
                    continue;
                }
                if cands.len() >= MAX_OFFERS {
                    break;
                }
                if !cands.contains(n) {
                    cands.push(*n);
                }
            }
        }
        self.cur_shape[j as usize] = u32::try_from(s).ok();
        for n in cands {
            match self.offer(n as usize, Some(j)) {
                Offer::Started | Offer::Bound => return true,
                Offer::Refused => {}
            }
        }
        false
    }

    /// Job `j` as node `n` sees it (its request in the node's GPU model's profile names).
    fn queued_job(&self, j: u32, n: usize) -> Option<QueuedJob> {
        let s = self.cur_shape[j as usize]?;
        let model = self.nodes.get(n).and_then(|nd| nd.view.gpus.first()).map(|g| g.model);
        let base = &self.shapes[s as usize].request;
        let mut request = match (model, self.models.first()) {
            (Some(m), Some(m0)) if !std::ptr::eq(m, *m0) => for_model(base, m0, m),
            _ => base.clone(),
        };
        request.tenant.clone_from(&self.tenants[usize::from(self.jobs[j as usize].tenant)]);
        if self.params.host_cpus_per_gpu > 0 {
            request.cpus = self.jobs[j as usize].cpus;
            request.mem_mib = self.jobs[j as usize].host_mib;
        }
        Some(QueuedJob { id: u64::from(j), request, submitted_ms: ms(self.jobs[j as usize].submit), user: 0 })
    }

    /// One round of node `n`'s scheduler over its bound jobs (and `offered`); carry out the
    /// decisions.
    fn offer(&mut self, n: usize, offered: Option<u32>) -> Offer {
        let mut queue: Vec<QueuedJob> = self.nodes[n].bound.iter().filter_map(|b| self.queued_job(*b, n)).collect();
        if let Some(j) = offered
            && let Some(q) = self.queued_job(j, n)
        {
            queue.push(q);
        }
        if queue.is_empty() {
            return Offer::Refused;
        }
        let now_ms = ms(self.now);
        let node = &mut self.nodes[n];
        let decisions = node.sched.schedule(now_ms, &node.view, &queue, &node.running);
        let mut started = Vec::new();
        let mut reconf = false;
        let mut pending: Vec<(u32, PendingReason)> = Vec::new();
        for d in decisions {
            match d {
                Decision::Start { job, ranks } => started.push((job, ranks)),
                Decision::Reconfigure { gpu, plan, .. } => {
                    reconf = true;
                    self.begin_reconfig(n, gpu, plan.target);
                }
                Decision::Pending { job, reason, .. } => pending.push((u32::try_from(job).unwrap_or(u32::MAX), reason)),
                Decision::Preempt { .. } | Decision::SetMigMode { .. } => {}
            }
        }
        let mut outcome = Offer::Refused;
        for (job, ranks) in started {
            let j = u32::try_from(job).unwrap_or(u32::MAX);
            self.nodes[n].bound.retain(|b| *b != j);
            self.start(n, j, ranks);
            if offered == Some(j) {
                outcome = Offer::Started;
            }
        }
        for (j, reason) in pending {
            let is_bound = self.nodes[n].bound.contains(&j);
            if is_bound {
                if reason != PendingReason::Reconfiguring {
                    self.nodes[n].bound.retain(|b| *b != j);
                    self.enqueue(j);
                }
            } else if offered == Some(j) && reason == PendingReason::Reconfiguring && reconf {
                self.nodes[n].bound.push(j);
                outcome = Offer::Bound;
            }
        }
        self.refresh_dirty();
        outcome
    }

    /// Note that GPU `g` of node `n` changed.
    fn mark(&mut self, n: usize, g: usize) {
        let node = &mut self.nodes[n];
        if let Some(d) = node.dirty.get_mut(g) {
            *d = true;
        }
        if !node.listed {
            node.listed = true;
            self.dirty_nodes.push(u32::try_from(n).unwrap_or(u32::MAX));
        }
    }

    fn refresh_dirty(&mut self) {
        let list = std::mem::take(&mut self.dirty_nodes);
        for n in list {
            self.nodes[n as usize].listed = false;
            self.refresh(n as usize);
        }
    }

    fn node_round(&mut self, n: usize) {
        if !self.nodes[n].bound.is_empty() {
            self.offer(n, None);
        }
    }

    fn begin_reconfig(&mut self, n: usize, gpu: u32, target: Vec<Instance>) {
        let node = &mut self.nodes[n];
        let Some(g) = node.view.gpus.iter().position(|x| x.gpu == gpu) else { return };
        node.view.gpus[g].reconfiguring = true;
        node.targets[g] = Some(target);
        self.mark(n, g);
        self.reconfigs += 1;
        let t = self.now + self.params.reconfig_cost_s;
        self.push(t, Ev::ReconfigDone { node: u32::try_from(n).unwrap_or(u32::MAX), gpu });
    }

    fn reconfig_done(&mut self, node: u32, gpu: u32) {
        let n = node as usize;
        let nd = &mut self.nodes[n];
        let Some(g) = nd.view.gpus.iter().position(|x| x.gpu == gpu) else { return };
        let Some(target) = nd.targets[g].take() else { return };
        let view = &mut nd.view.gpus[g];
        let mut old: Vec<InstanceView> = std::mem::take(&mut view.instances);
        let mut next: Vec<InstanceView> = Vec::with_capacity(target.len());
        for inst in target {
            let occ = match old.iter().position(|o| o.instance == inst) {
                Some(p) => old.swap_remove(p).occupants,
                None => Vec::new(),
            };
            next.push(InstanceView { instance: inst, occupants: occ, healthy: true });
        }
        for o in old {
            if o.is_busy() {
                self.violations.push(format!("node {n} GPU {gpu}: a reconfiguration removed busy instance {o:?}"));
                next.push(o);
            }
        }
        view.instances = next;
        view.reconfiguring = false;
        self.mark(n, g);
        if !self.reconfiguring_nodes.contains(&node) {
            self.reconfiguring_nodes.push(node);
        }
    }

    fn speed_on(&self, j: u32, model: &GpuModel, inst: &Instance, pct: Option<u8>) -> f64 {
        let total = f64::from(model.compute_slices.max(1));
        let c = model.profile_by_id(inst.profile_id).map_or(0.0, |p| f64::from(p.compute_slices));
        let mut f = c / total;
        if let Some(p) = pct {
            f *= f64::from(p) / 100.0;
        }
        interpolate(&self.jobs[j as usize].curve, f).max(1e-6)
    }

    fn start(&mut self, n: usize, j: u32, rank_starts: Vec<RankStart>) {
        let Some(s) = self.cur_shape[j as usize] else { return };
        let ranks: Vec<SlicePlacement> = rank_starts.iter().flat_map(|r| r.slices.iter().cloned()).collect();
        self.take_host(n, j, &ranks, true);
        if self.records[j as usize].start.is_some() {
            self.violations.push(format!("job {j} started twice"));
        }
        let shape = &self.shapes[s as usize];
        let sharing = shape.request.sharing;
        let pct = shape.mps_pct;
        let mut speed = f64::INFINITY;
        let mut alloc = 0.0;
        let mut shared_at: Option<(usize, usize)> = None;
        for r in &ranks {
            let node = &mut self.nodes[n];
            let Some(g) = node.view.gpus.iter().position(|x| x.gpu == r.gpu) else {
                self.violations.push(format!("job {j}: start on unknown GPU {}", r.gpu));
                continue;
            };
            let gv = &mut node.view.gpus[g];
            if gv.reconfiguring {
                self.violations.push(format!("job {j}: started on GPU {} while it is reconfiguring", r.gpu));
            }
            let model = gv.model;
            let Some(i) = gv.instances.iter().position(|x| x.instance == r.instance) else {
                self.violations.push(format!("job {j}: start on missing instance {:?}", r.instance));
                continue;
            };
            let inst = &mut gv.instances[i];
            let exclusive_conflict = inst.occupants.iter().any(|o| !o.sharing.is_shared()) || !sharing.is_shared();
            if !inst.occupants.is_empty() && exclusive_conflict {
                self.violations.push(format!("job {j}: instance {:?} on GPU {} double-booked", r.instance, r.gpu));
            }
            inst.occupants.push(Occupant { job: u64::from(j), sharing, user: 0, pinned: false });
            self.mark(n, g);
            let c = model.profile_by_id(r.instance.profile_id).map_or(0.0, |p| f64::from(p.compute_slices));
            alloc += c * pct.map_or(1.0, |p| f64::from(p) / 100.0);
            let inst_copy = r.instance;
            speed = speed.min(self.speed_on(j, model, &inst_copy, pct));
            if pct.is_some() {
                shared_at = Some((g, i));
            }
        }
        if !speed.is_finite() {
            speed = 1.0;
        }
        let now = self.now;
        let job = &self.jobs[j as usize];
        let tenant = usize::from(job.tenant);
        self.settle_ledger();
        self.held[tenant] += alloc;
        let request = self.queued_job(j, n).map(|q| q.request).unwrap_or_else(|| JobRequest::new(GpuRequest::WholeGpu));
        self.nodes[n].running.push(RunningJob {
            id: u64::from(j),
            request,
            started_ms: ms(now),
            ranks: rank_starts,
            user: 0,
        });
        self.records[j as usize].start = Some(now);
        let st = &mut self.state[j as usize];
        st.node = u32::try_from(n).unwrap_or(u32::MAX);
        st.slices = ranks;
        st.alone = speed;
        st.rate = 0.0;
        st.remaining = job.duration;
        st.last = now;
        st.alloc = alloc;
        st.shared = shared_at.is_some();
        self.alloc += alloc;
        match shared_at {
            Some((g, i)) => self.mps_refresh(n, g, i),
            None => self.set_rate(j, speed),
        }
    }

    /// Set a running job's rate from now on and schedule its finish.
    fn set_rate(&mut self, j: u32, rate: f64) {
        let now = self.now;
        let st = &mut self.state[j as usize];
        st.remaining = (st.remaining - st.rate * (now - st.last)).max(0.0);
        st.last = now;
        self.busy += st.alloc * (rate - st.rate);
        st.rate = rate;
        st.version = st.version.wrapping_add(1);
        let (v, rem) = (st.version, st.remaining);
        self.push(now + rem / rate.max(1e-9), Ev::Finish { job: j, version: v });
    }

    /// Re-rate every MPS client of an instance after its client count changed.
    fn mps_refresh(&mut self, n: usize, g: usize, i: usize) {
        let Some(inst) = self.nodes[n].view.gpus[g].instances.get(i) else { return };
        let clients: Vec<u32> = inst.occupants.iter().map(|o| u32::try_from(o.job).unwrap_or(u32::MAX)).collect();
        let k = clients.len().max(1) as f64;
        let slow = 1.0 + self.params.mps_slowdown * (k - 1.0);
        for c in clients {
            let alone = self.state[c as usize].alone;
            self.set_rate(c, alone / slow);
        }
    }

    fn finish(&mut self, j: u32) {
        let now = self.now;
        let st = std::mem::take(&mut self.state[j as usize]);
        let n = st.node as usize;
        let mut shared: Option<(usize, usize)> = None;
        for r in &st.slices {
            let node = &mut self.nodes[n];
            let Some(g) = node.view.gpus.iter().position(|x| x.gpu == r.gpu) else { continue };
            let gv = &mut node.view.gpus[g];
            if let Some(i) = gv.instances.iter().position(|x| x.instance == r.instance) {
                gv.instances[i].occupants.retain(|o| o.job != u64::from(j));
                if st.shared && !gv.instances[i].occupants.is_empty() {
                    shared = Some((g, i));
                }
            }
            self.mark(n, g);
        }
        self.take_host(n, j, &st.slices, false);
        self.nodes[n].running.retain(|r| r.id != u64::from(j));
        self.alloc -= st.alloc;
        self.busy -= st.alloc * st.rate;
        self.settle_ledger();
        let tenant = usize::from(self.jobs[j as usize].tenant);
        self.held[tenant] = (self.held[tenant] - st.alloc).max(0.0);
        let rec = &mut self.records[j as usize];
        rec.finish = Some(now);
        let start = rec.start.unwrap_or(now);
        let total = self
            .nodes
            .get(n)
            .and_then(|nd| nd.view.gpus.first())
            .map_or(7.0, |g| f64::from(g.model.compute_slices.max(1)));
        rec.gpu_s = st.alloc / total * (now - start);
        if let Some((g, i)) = shared {
            self.mps_refresh(n, g, i);
        }
    }

    /// Take (at start) or give back (at finish) the host CPUs and memory of job `j`'s slices on
    /// node `n`, as the daemon's view of the host would change: exactly the shares the
    /// scheduler gave each slice. A CPU taken twice is a broken invariant.
    fn take_host(&mut self, n: usize, j: u32, slices: &[SlicePlacement], take: bool) {
        if self.params.host_cpus_per_gpu == 0 {
            return;
        }
        let shares = slices.iter().flat_map(|s| s.host.iter());
        let view = &mut self.nodes[n].view;
        if take {
            for (node, c) in view.take_host(shares) {
                self.violations.push(format!("job {j}: CPU {c} (host node {node}) on node {n} taken twice"));
            }
        } else {
            view.give_back_host(shares);
        }
    }

    /// Recompute the dirty GPUs' capabilities and the node's place in the index.
    fn refresh(&mut self, n: usize) {
        let ns = self.shapes.len();
        for g in 0..self.nodes[n].view.gpus.len() {
            if !self.nodes[n].dirty[g] {
                continue;
            }
            self.nodes[n].dirty[g] = false;
            let caps = self.gpu_caps(n, g);
            let old = std::mem::replace(&mut self.nodes[n].caps[g], caps);
            let new = &self.nodes[n].caps[g];
            self.free_total = self.free_total + u64::from(new.free) - u64::from(old.free).min(self.free_total);
            for c in 0..MAX_C {
                self.usable_total[c] = self.usable_total[c] + u64::from(new.usable[c])
                    - u64::from(old.usable[c]).min(self.usable_total[c]);
            }
        }
        let node = &self.nodes[n];
        let free_key: u32 = node
            .view
            .gpus
            .iter()
            .zip(&node.caps)
            .filter(|(g, _)| !g.reconfiguring)
            .map(|(_, c)| u32::from(c.free))
            .sum();
        let old_key = node.free_key;
        let nid = u32::try_from(n).unwrap_or(u32::MAX);
        let mut member = Vec::with_capacity(ns);
        for s in 0..ns {
            let ranks = self.shapes[s].ranks as usize;
            let count_a: usize = node.caps.iter().map(|c| usize::from(c.a.get(s).copied().unwrap_or(0))).sum();
            let count_any: usize = node
                .caps
                .iter()
                .map(|c| usize::from(c.a.get(s).copied().unwrap_or(0).max(c.b.get(s).copied().unwrap_or(0))))
                .sum();
            let (ia, iany) = (count_a >= ranks, count_any >= ranks);
            member.push((ia, iany));
            let (was_a, was_any) = (node.in_a[s], node.in_any[s]);
            if was_a {
                self.tier_a[s].remove(&(old_key, nid));
            }
            if was_any {
                self.tier_any[s].remove(&(old_key, nid));
            }
            if ia {
                self.tier_a[s].insert((free_key, nid));
            }
            if iany {
                self.tier_any[s].insert((free_key, nid));
            }
        }
        let node = &mut self.nodes[n];
        for (s, (ia, iany)) in member.into_iter().enumerate() {
            node.in_a[s] = ia;
            node.in_any[s] = iany;
        }
        node.free_key = free_key;
    }

    fn gpu_caps(&mut self, n: usize, g: usize) -> GpuCaps {
        let ns = self.shapes.len();
        let mi = self.nodes[n].model_idx[g];
        let gv = &self.nodes[n].view.gpus[g];
        let model = gv.model;
        let mut busy: Vec<Instance> = gv.instances.iter().filter(|i| i.is_busy()).map(|i| i.instance).collect();
        busy.sort();
        let busy_compute: u32 =
            busy.iter().filter_map(|i| model.profile_by_id(i.profile_id)).map(|p| u32::from(p.compute_slices)).sum();
        let free = u8::try_from(u32::from(model.compute_slices).saturating_sub(busy_compute)).unwrap_or(0);
        let mut usable = [0u8; MAX_C];
        let placeable: Vec<u8>;
        if self.repartition {
            let key = (mi, busy);
            if !self.cache.contains_key(&key) {
                let v = self.compute_caps(mi, &key.1);
                self.cache.insert(key.clone(), v);
            }
            let (p, u) = self.cache.get(&key).cloned().unwrap_or_default();
            placeable = p;
            usable = u;
        } else {
            placeable = Vec::new();
            for iv in gv.instances.iter().filter(|i| !i.is_busy()) {
                let c = model.profile_by_id(iv.instance.profile_id).map_or(0, |p| p.compute_slices);
                for (t, u) in usable.iter_mut().enumerate() {
                    if usize::from(c) > t {
                        *u = u.saturating_add(c);
                    }
                }
            }
        }
        let gv = &self.nodes[n].view.gpus[g];
        let mut a = vec![0u8; ns];
        let mut b = vec![0u8; ns];
        if !gv.reconfiguring && gv.healthy {
            for s in 0..ns {
                let Some(sm) = self.shapes[s].per_model.get(mi).and_then(|x| x.as_ref()) else { continue };
                let pct = self.shapes[s].mps_pct;
                let count = gv.instances.iter().filter(|iv| {
                    let Some(pidx) = model.profile_index(iv.instance.profile_id) else { return false };
                    if !sm.accepts.get(pidx).copied().unwrap_or(false) {
                        return false;
                    }
                    if iv.occupants.is_empty() {
                        return true;
                    }
                    match pct {
                        Some(p) => {
                            let mut sum = u32::from(p);
                            for o in &iv.occupants {
                                match o.sharing {
                                    Sharing::Mps { active_thread_pct, .. } => sum += u32::from(active_thread_pct),
                                    _ => return false,
                                }
                            }
                            sum <= 100
                        }
                        None => false,
                    }
                });
                a[s] = u8::try_from(count.count()).unwrap_or(u8::MAX);
                b[s] = if self.repartition { placeable.get(sm.min_pidx).copied().unwrap_or(0) } else { 0 };
            }
        }
        GpuCaps { a, b, free, usable }
    }

    /// How many of each profile fit around `busy` (by profile index) and the compute usable by requests of
    /// at least `c` slices (index `c - 1`), over every maximal layout that keeps `busy`.
    fn compute_caps(&self, mi: usize, busy: &[Instance]) -> (Vec<u8>, [u8; MAX_C]) {
        let model = self.models[mi];
        let report = match tessera_mig::planner_for(model) {
            Some(p) => p.fragmentation(busy).ok(),
            None => tessera_mig::Planner::new(model).fragmentation(busy).ok(),
        };
        let placeable: Vec<u8> = model
            .profiles
            .iter()
            .map(|p| {
                if p.kind != ProfileKind::Standard {
                    return 0;
                }
                report.as_ref().and_then(|r| r.fits.iter().find(|f| f.profile_id == p.id)).map_or(0, |f| f.count)
            })
            .collect();
        let mut usable = [0u8; MAX_C];
        for layout in &self.maximal[mi] {
            if !busy.iter().all(|b| layout.contains(b)) {
                continue;
            }
            for (t, u) in usable.iter_mut().enumerate() {
                let sum: u32 = layout
                    .iter()
                    .filter(|i| !busy.contains(i))
                    .filter_map(|i| model.profile_by_id(i.profile_id))
                    .filter(|p| usize::from(p.compute_slices) > t)
                    .map(|p| u32::from(p.compute_slices))
                    .sum();
                *u = (*u).max(u8::try_from(sum).unwrap_or(u8::MAX));
            }
        }
        (placeable, usable)
    }
}
