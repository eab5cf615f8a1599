//! Kubernetes replay: who provides the MIG devices pending pods wait for.
//!
//! Pods arrive, each asking for `count` devices of one MIG profile (`nvidia.com/mig-<profile>`).
//! The default scheduler binds a pod, oldest first, to a node with enough free advertised devices
//! (the least allocated such node, then the first by name; the kubelet takes the free devices in
//! GPU-index and placement order); the rest pend. Three ways of providing the devices, replayed on
//! the same arrivals:
//!
//! - [`KubePolicy::MigManager`]: NVIDIA's mig-manager. Every GPU keeps the layout its node's
//!   `nvidia.com/mig.config` label gives it; nothing changes on demand. The configuration is the
//!   best one found for the trace on a **tuning** split and reported on a **held-out** split.
//! - [`KubePolicy::DraFirstFit`]: NVIDIA's DRA driver with DynamicMIG. Every profile × placement
//!   is a device, sorted by name (`gpu-<minor>-mig-<profile>-<id>-<start>`); the scheduler takes,
//!   on the node it picks, the first device whose placement is still free. The driver creates the
//!   instance when the pod is prepared (the MIG operation time) and destroys it when the pod ends.
//! - [`KubePolicy::DraTessera`]: the same first fit over the devices in the planner's preference
//!   (`tessera_kube_core::dra::placement_order`: within a profile, the placement that leaves the
//!   most room first; Tessera's published order before issue 13's comparison), recomputed at
//!   every change.
//! - [`KubePolicy::DraAlloc`] and [`KubePolicy::DraAllocTessera`]: the same driver modelled through
//!   its published ResourceSlices (`tessera_kube_core::dra::resource_slices` for the node's claimed
//!   instances) and kube-scheduler's structured allocator ([`crate::dra_alloc::first_fit`]: slice
//!   and device order, the first device whose counters fit), over NVIDIA's name order or over
//!   Tessera's published order (`tessera_kube_core::dra::DraOrder::default`).
//! - [`KubePolicy::DraAllocOrder`]: the allocator over Tessera's slices in another
//!   `tessera_kube_core::dra::DraOrder` (`room`, `room-from-end`, `fits`,
//!   `fits-largest-first`, `fullest-gpu-first`, `best-fit`, `best-fit-from-start`), to compare orders.
//! - [`KubePolicy::Tessera`]: Tessera's controller (`tessera-kube`'s). Every batch window,
//!   [`tessera_kube_core::decide`] runs on the pending pods no change is already under way for and
//!   on the nodes no change is under way on; each change keeps its GPU out of use for the MIG
//!   operation time, then its new devices are advertised and the default scheduler binds
//!   whichever pods fit.
//!
//! A GPU runs one MIG operation at a time, each taking `reconfig_cost_s` (the simulator's cost of
//! one reconfiguration). Metrics: pod wait (bind-to-start included), utilisation of compute slices
//! (running pods), and stranded capacity (the planner's fragmentation measure: free compute slices
//! no profile can use next to the instances pods hold), both time-weighted over the window.
//! Method and results: `docs/evaluation/kubernetes.md`. Pure: no clock, no I/O.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::fmt;
use std::rc::Rc;
use std::str::FromStr;

use serde::Serialize;
use tessera_kube_core::dra::{
    DraGpu, DraInstance, DraOrder, DraPool, InstanceUse, SliceShape, resource_slices_in_order,
};
use tessera_kube_core::dra_claim::{DeviceTarget, device_target};
use tessera_kube_core::{GpuMode, NodeGpu, NodeState, PendingPod, Policy, ResourceName, decide};
use tessera_mig::{ComputeShape, CurrentInstance, GpuModel, Instance, ProfileKind, planner_for, validate};
use tessera_sim::rng::Rng;
use tessera_sim::stats::{Estimate, mean, percentile_sorted};
use tessera_sim::trace::Job;

use crate::dra_alloc::{Pool, Want, nvidia_order};
use crate::migbench::{MigBenchTraceSpec, migbench_trace_pods};
use crate::report::window_range;
use crate::spec::{ClusterSpec, compute_slices_for, resolve_layout, static_candidates};

/// What can go wrong in a Kubernetes replay.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KubeError {
    #[error(
        "policy '{spec}': {reason}; valid policies: mig-manager, mig-manager:<layout> (e.g. mig-manager:3g+2g+2g), dra, dra-tessera, dra-alloc, dra-alloc-tessera, dra-alloc-order:<order> (e.g. dra-alloc-order:best-fit), tessera"
    )]
    Policy { spec: String, reason: String },
    #[error("workload '{spec}': {reason}; valid workloads: openb, migbench")]
    Workload { spec: String, reason: String },
    #[error("invalid configuration: `{field}` {reason}")]
    Config { field: &'static str, reason: String },
    #[error("pod '{pod}': {reason}")]
    Pod { pod: String, reason: String },
    #[error(transparent)]
    Layout(#[from] crate::TimeError),
}

/// The device orders `dra-alloc-order:<name>` compares, by name.
const DRA_ORDERS: [(&str, DraOrder); 7] = [
    ("room", DraOrder::Room),
    ("room-from-end", DraOrder::RoomFromEnd),
    ("fits", DraOrder::Fits),
    ("fits-largest-first", DraOrder::FitsLargestFirst),
    ("fullest-gpu-first", DraOrder::FullestGpuFirst),
    ("best-fit", DraOrder::BestFit),
    ("best-fit-from-start", DraOrder::BestFitFromStart),
];

fn dra_order_name(o: DraOrder) -> &'static str {
    DRA_ORDERS.iter().find(|(_, x)| *x == o).map_or("?", |(n, _)| n)
}

/// How the MIG devices come to exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubePolicy {
    /// mig-manager: fixed layouts; `None`: the best configuration for the trace, searched on the
    /// tuning split; `Some(l)`: layout `l` on every GPU.
    MigManager { layout: Option<Vec<String>> },
    /// NVIDIA's DRA driver (DynamicMIG): first fit over profile × placement sorted by name.
    DraFirstFit,
    /// The same first fit over Tessera's DRA publication order (issue 13).
    DraTessera,
    /// kube-scheduler's structured allocator over the node's published slices, devices in
    /// NVIDIA's name order (issue 13).
    DraAlloc,
    /// The same allocator over the slices in the order Tessera's DRA driver publishes them.
    DraAllocTessera,
    /// The same allocator over Tessera's slices in another device order, to compare orders
    /// (`dra-alloc-order:<order>`, e.g. `dra-alloc-order:best-fit`; valid orders in the parse error).
    DraAllocOrder(DraOrder),
    /// Tessera's controller: `decide` every batch window.
    Tessera,
}

impl fmt::Display for KubePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KubePolicy::MigManager { layout: None } => f.write_str("mig-manager"),
            KubePolicy::MigManager { layout: Some(l) } => write!(f, "mig-manager:{}", l.join("+")),
            KubePolicy::DraFirstFit => f.write_str("dra"),
            KubePolicy::DraTessera => f.write_str("dra-tessera"),
            KubePolicy::DraAlloc => f.write_str("dra-alloc"),
            KubePolicy::DraAllocTessera => f.write_str("dra-alloc-tessera"),
            KubePolicy::DraAllocOrder(o) => write!(f, "dra-alloc-order:{}", dra_order_name(*o)),
            KubePolicy::Tessera => f.write_str("tessera"),
        }
    }
}

impl FromStr for KubePolicy {
    type Err = KubeError;

    fn from_str(s: &str) -> Result<Self, KubeError> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "mig-manager" => Ok(KubePolicy::MigManager { layout: None }),
            "dra" => Ok(KubePolicy::DraFirstFit),
            "dra-tessera" => Ok(KubePolicy::DraTessera),
            "dra-alloc" => Ok(KubePolicy::DraAlloc),
            "dra-alloc-tessera" => Ok(KubePolicy::DraAllocTessera),
            "tessera" => Ok(KubePolicy::Tessera),
            _ => {
                if let Some(o) = t.strip_prefix("dra-alloc-order:") {
                    return DRA_ORDERS
                        .iter()
                        .find(|(n, _)| *n == o)
                        .map(|&(_, o)| KubePolicy::DraAllocOrder(o))
                        .ok_or_else(|| KubeError::Policy {
                            spec: s.to_string(),
                            reason: format!(
                                "unknown device order; valid orders: {}",
                                DRA_ORDERS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                            ),
                        });
                }
                let Some(l) = t.strip_prefix("mig-manager:") else {
                    return Err(KubeError::Policy { spec: s.to_string(), reason: "unknown policy".into() });
                };
                let names: Vec<String> = l.split('+').map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect();
                if names.is_empty() {
                    return Err(KubeError::Policy { spec: s.to_string(), reason: "empty layout".into() });
                }
                Ok(KubePolicy::MigManager { layout: Some(names) })
            }
        }
    }
}

/// One pod: `count` devices of one MIG profile for `runtime_s` once it starts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KubePod {
    pub id: String,
    pub submit_s: f64,
    pub runtime_s: f64,
    /// A profile of the cluster's GPU model (`3g.40gb`).
    pub profile: String,
    pub count: u32,
}

/// openb jobs as pods on `model`: a job of `c` compute slices (`gpu_milli` rounded up, as the
/// time-driven replay does) asks for the smallest standard profile with at least `c` slices and,
/// when `gpu_mem_mib` is known, that much memory; a gang asks for `num_gpu` full-GPU profiles.
/// The pod runs for the trace's duration. Returns the pods and how many jobs asked for no GPU.
pub fn pods_from_jobs(jobs: &[Job], model: &GpuModel) -> Result<(Vec<KubePod>, usize), KubeError> {
    let mut pods = Vec::new();
    let mut excluded = 0;
    for j in jobs {
        if j.num_gpu == 0 {
            excluded += 1;
            continue;
        }
        let c = if j.num_gpu > 1 { model.compute_slices } else { compute_slices_for(j.gpu_milli, model) };
        let profile = model
            .profiles
            .iter()
            .filter(|p| p.kind == ProfileKind::Standard && p.compute_slices >= c)
            .filter(|p| j.gpu_mem_mib == 0 || p.memory_mib.is_none_or(|m| m >= j.gpu_mem_mib))
            .min_by_key(|p| (p.compute_slices, p.memory_slices, p.id))
            .ok_or_else(|| KubeError::Pod {
                pod: j.id.clone(),
                reason: format!("no {} profile has {c} compute slices and {} MiB", model.name, j.gpu_mem_mib),
            })?;
        if !(j.duration_s.is_finite() && j.duration_s > 0.0 && j.submit_s.is_finite()) {
            return Err(KubeError::Pod {
                pod: j.id.clone(),
                reason: "needs a finite submit time and a duration above 0".into(),
            });
        }
        pods.push(KubePod {
            id: j.id.clone(),
            submit_s: j.submit_s.max(0.0),
            runtime_s: j.duration_s,
            profile: profile.name.clone(),
            count: j.num_gpu,
        });
    }
    pods.sort_by(|a, b| a.submit_s.total_cmp(&b.submit_s));
    Ok((pods, excluded))
}

/// The MIGBench-style workload as reconstructed (`docs/evaluation/kubernetes.md`): what MIGBench
/// published (500 jobs, profiles `1g.10gb`, `2g.20gb`, `3g.40gb`, `7g.80gb`, offered load 1.40
/// of the cluster's compute slices) and what it did not, assumed: each job one device, profiles
/// uniform, Poisson arrivals, exponential running times of mean `mean_runtime_s`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MigBenchSpec {
    pub jobs: usize,
    pub load: f64,
    pub mean_runtime_s: f64,
    pub profiles: Vec<String>,
}

impl Default for MigBenchSpec {
    fn default() -> Self {
        MigBenchSpec {
            jobs: 500,
            load: 1.4,
            mean_runtime_s: 1800.0,
            profiles: ["1g.10gb", "2g.20gb", "3g.40gb", "7g.80gb"].map(String::from).to_vec(),
        }
    }
}

/// One MIGBench-style trace for `gpus` GPUs of `model`, drawn from `seed`.
pub fn migbench_pods(spec: &MigBenchSpec, model: &GpuModel, gpus: u32, seed: u64) -> Result<Vec<KubePod>, KubeError> {
    let mut slices = Vec::new();
    for p in &spec.profiles {
        let prof =
            model.profile(p).map_err(|e| KubeError::Config { field: "migbench.profiles", reason: e.to_string() })?;
        slices.push(f64::from(prof.compute_slices));
    }
    if slices.is_empty() || spec.jobs == 0 || !(spec.load > 0.0 && spec.mean_runtime_s > 0.0) {
        return Err(KubeError::Config {
            field: "migbench",
            reason: "needs profiles, jobs, a load and a mean running time above 0".into(),
        });
    }
    let capacity = f64::from(gpus) * f64::from(model.compute_slices);
    let rate = spec.load * capacity / (mean(&slices) * spec.mean_runtime_s);
    let mut rng = Rng::new(seed);
    let mut t = 0.0;
    let mut pods = Vec::with_capacity(spec.jobs);
    for i in 0..spec.jobs {
        t += rng.exp(1.0 / rate);
        let k = rng.below(spec.profiles.len() as u64) as usize;
        pods.push(KubePod {
            id: format!("mb-{seed}-{i}"),
            submit_s: t,
            runtime_s: rng.exp(spec.mean_runtime_s).max(1.0),
            profile: spec.profiles[k].clone(),
            count: 1,
        });
    }
    Ok(pods)
}

/// The workload of a run.
#[derive(Debug, Clone, PartialEq)]
pub enum KubeWorkload {
    /// A fixed trace: the first half of its pods by arrival is the tuning split, the second half
    /// the held-out split; each seed jitters the held-out arrivals.
    Trace { name: String, pods: Vec<KubePod> },
    /// MIGBench-style traces: seed `s` draws the held-out trace, seed `1000 + s` of the first
    /// seed the tuning trace.
    MigBench(MigBenchSpec),
    /// MIGBench's own generator ([`crate::migbench`]): seed `s` draws the held-out trace as
    /// MIGBench's generator draws seed `s` (its published run is seed 20260914), seed `1000 + s`
    /// of the first seed the tuning trace.
    MigBenchTrace(MigBenchTraceSpec),
}

/// How a run is set up.
#[derive(Debug, Clone, PartialEq)]
pub struct KubeConfig {
    /// One GPU model.
    pub cluster: ClusterSpec,
    pub policies: Vec<KubePolicy>,
    pub seeds: Vec<u64>,
    /// Seconds one MIG operation (a layout change, or one instance's creation) takes.
    pub reconfig_cost_s: f64,
    /// Tessera's controller runs `decide` at every multiple of this (virtual seconds).
    pub batch_window_s: f64,
    /// Fraction of pods (by arrival) left out of the metrics at each end.
    pub warmup_fraction: f64,
    /// Trace workloads: each seed moves every held-out arrival by up to ± this many seconds.
    pub arrival_jitter_s: f64,
    /// Most replays of the tuning split the mig-manager search may spend.
    pub search_budget: usize,
}

impl KubeConfig {
    /// Defaults: seeds 1–5, 30 s per MIG operation, a 2 s batch window, 10% warm-up and
    /// cool-down, ±60 s jitter, a 2,000-replay search budget.
    pub fn new(cluster: ClusterSpec, policies: Vec<KubePolicy>) -> Self {
        KubeConfig {
            cluster,
            policies,
            seeds: vec![1, 2, 3, 4, 5],
            reconfig_cost_s: 30.0,
            batch_window_s: 2.0,
            warmup_fraction: 0.1,
            arrival_jitter_s: 60.0,
            search_budget: 2000,
        }
    }

    fn validate(&self) -> Result<&'static GpuModel, KubeError> {
        let bad = |field, reason: &str| Err(KubeError::Config { field, reason: reason.to_string() });
        if self.policies.is_empty() {
            return bad("policies", "must name at least one policy");
        }
        if self.seeds.is_empty() {
            return bad("seeds", "must list at least one seed");
        }
        if !(self.reconfig_cost_s.is_finite() && self.reconfig_cost_s >= 0.0) {
            return bad("reconfig_cost_s", "must be 0 or more seconds");
        }
        if !(self.batch_window_s.is_finite() && self.batch_window_s > 0.0) {
            return bad("batch_window_s", "must be above 0 seconds");
        }
        if !(self.warmup_fraction.is_finite() && (0.0..0.5).contains(&self.warmup_fraction)) {
            return bad("warmup_fraction", "must be in [0, 0.5)");
        }
        if !(self.arrival_jitter_s.is_finite() && self.arrival_jitter_s >= 0.0) {
            return bad("arrival_jitter_s", "must be 0 or more seconds");
        }
        let Some(model) = self.cluster.first_model() else { return bad("cluster", "has no GPUs") };
        if self.cluster.groups.iter().any(|g| !std::ptr::eq(g.model, model)) {
            return bad("cluster", "must have one GPU model (resource names are per profile of a model)");
        }
        Ok(model)
    }
}

/// One policy under one seed, over the held-out window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KubeSeedMetrics {
    pub seed: u64,
    pub wait_mean_s: f64,
    pub wait_p95_s: f64,
    /// Compute slices of running pods ÷ all, time-weighted.
    pub utilization: f64,
    /// The same while some pod is pending (unbound), time-weighted over that time only.
    pub utilization_backlogged: f64,
    /// Free compute slices no profile can use next to the held instances ÷ all, time-weighted.
    pub stranded: f64,
    /// MIG operations over the whole replay: layout changes (Tessera) or instance creations (DRA).
    pub mig_operations: u64,
    /// Measured pods that never started.
    pub unstarted: u64,
    /// Mean wait of the measured pods that started, per request (`3g.40gb`, `7g.80gb×2`).
    pub wait_mean_by_request_s: BTreeMap<String, f64>,
}

/// One policy over all seeds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KubePolicyReport {
    pub policy: String,
    /// mig-manager: the configuration, as `count×layout` per distinct GPU layout.
    pub config: Option<String>,
    pub wait_mean_s: Estimate,
    pub wait_p95_s: Estimate,
    pub utilization: Estimate,
    pub utilization_backlogged: Estimate,
    pub stranded: Estimate,
    pub mig_operations: Estimate,
    pub unstarted: u64,
    pub per_seed: Vec<KubeSeedMetrics>,
}

/// What the mig-manager search did on the tuning split.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StaticSearch {
    pub tuning_pods: usize,
    pub replays: usize,
    /// The greedy start (from the tuning split's demand per profile) and its tuning mean wait.
    pub start: String,
    pub start_wait_mean_s: f64,
    pub best: String,
    pub best_wait_mean_s: f64,
    pub best_unstarted: u64,
}

/// A whole run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KubeReport {
    pub workload: String,
    pub cluster: String,
    pub gpus: u32,
    pub held_out_pods: usize,
    pub tuning_pods: usize,
    pub seeds: Vec<u64>,
    pub reconfig_cost_s: f64,
    pub batch_window_s: f64,
    pub static_search: Option<StaticSearch>,
    pub policies: Vec<KubePolicyReport>,
}

/// A pod ready for the loop.
#[derive(Debug, Clone)]
struct SPod {
    submit: f64,
    runtime: f64,
    profile_id: u32,
    /// Index into the distinct (profile, count) shapes.
    shape: usize,
    count: u32,
    resource: String,
    /// `3g.40gb`, or `7g.80gb×2` for several devices.
    label: String,
}

/// The devices a pod holds: (GPU, instance).
type Picks = Vec<(usize, Instance)>;

/// How the loop provides devices.
#[derive(Debug, Clone)]
enum Mode {
    /// Fixed layouts, one per GPU in cluster order.
    Static(Vec<Vec<Instance>>),
    /// DRA first fit; `true`: over Tessera's publication order, `false`: by name.
    Dra(bool),
    /// The structured allocator over the published slices; `Some(order)`: Tessera's slices in
    /// that order, `None`: NVIDIA's order.
    DraAlloc(Option<DraOrder>),
    Tessera,
}

#[derive(Debug, Clone)]
struct Slot {
    inst: Instance,
    pod: Option<u32>,
}

#[derive(Debug, Clone)]
struct Gpu {
    index: u32,
    slots: Vec<Slot>,
    /// The end of the MIG operation under way (or the last one).
    op_until: f64,
    /// Tessera: the layout the change under way reaches, and the pods it is for.
    target: Option<Vec<Instance>>,
    covers: Vec<u32>,
    unusable: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Finish(u32),
    ChangeDone(u32),
    Start(u32),
}

/// One replay's raw output.
#[derive(Debug, Clone, Default)]
struct Out {
    starts: Vec<Option<f64>>,
    utilization: f64,
    utilization_backlogged: f64,
    stranded: f64,
    mig_operations: u64,
    violations: Vec<String>,
}

struct Loop<'a> {
    model: &'static GpuModel,
    pods: &'a [SPod],
    cost: f64,
    window: (f64, f64),
    gpus: Vec<Gpu>,
    nodes: Vec<Vec<usize>>,
    names: Vec<String>,
    pending: BTreeSet<u32>,
    /// Tessera: changes under way for each pod.
    covered: Vec<u16>,
    devices: Vec<Picks>,
    events: BinaryHeap<Reverse<(u64, Ev)>>,
    out: Out,
    /// DRA: instances exist only while a pod holds them.
    dra: bool,
    /// DRA: first fit over Tessera's publication order rather than by name.
    tessera_order: bool,
    /// The structured allocator over the published slices, when that is the model.
    alloc: Option<AllocModel>,
    last: f64,
    running_slices: f64,
    unusable_total: f64,
    util_int: f64,
    unusable_int: f64,
    /// Time with some pod pending, and the running slices integrated over it.
    backlog_time: f64,
    backlog_util_int: f64,
}

/// The allocator model's state: per node, its published pool (`None`: to be republished) and the
/// devices of its allocated claims; per pod, the node and devices its claim holds.
struct AllocModel {
    tessera_order: Option<DraOrder>,
    pools: Vec<Option<Rc<Pool>>>,
    allocated: Vec<Vec<String>>,
    held: Vec<(usize, Vec<String>)>,
    generation: i64,
}

fn slices_of(model: &GpuModel, i: &Instance) -> u8 {
    slices_of_id(model, i.profile_id)
}

fn slices_of_id(model: &GpuModel, profile_id: u32) -> u8 {
    model.profile_by_id(profile_id).map_or(0, |p| p.compute_slices)
}

/// One compute instance over the whole GPU instance: what the device plugin advertises.
fn whole_ci(i: &Instance) -> bool {
    matches!(i.compute, ComputeShape::Full)
}

impl Loop<'_> {
    fn at(&mut self, t: f64, ev: Ev) {
        self.events.push(Reverse((t.max(0.0).to_bits(), ev)));
    }

    /// Integrate the time-weighted measures up to `t`.
    fn advance(&mut self, t: f64) {
        let (from, to) = self.window;
        let a = self.last.max(from);
        let b = t.min(to);
        if b > a {
            self.util_int += self.running_slices * (b - a);
            self.unusable_int += self.unusable_total * (b - a);
            if !self.pending.is_empty() {
                self.backlog_time += b - a;
                self.backlog_util_int += self.running_slices * (b - a);
            }
        }
        self.last = t;
    }

    fn refresh_unusable(&mut self, g: usize) {
        let held: Vec<Instance> = self.gpus[g].slots.iter().filter(|s| s.pod.is_some()).map(|s| s.inst).collect();
        let u =
            planner_for(self.model).and_then(|p| p.fragmentation(&held).ok()).map_or(0, |f| f.unusable_compute_slices);
        self.unusable_total += f64::from(u) - f64::from(self.gpus[g].unusable);
        self.gpus[g].unusable = u;
    }

    fn node_alloc(&self, n: usize) -> u32 {
        self.nodes[n]
            .iter()
            .flat_map(|&g| self.gpus[g].slots.iter())
            .filter(|s| s.pod.is_some())
            .map(|s| u32::from(slices_of(self.model, &s.inst)))
            .sum()
    }

    fn start(&mut self, p: u32, t: f64) {
        let pod = &self.pods[p as usize];
        self.out.starts[p as usize] = Some(t);
        self.running_slices += f64::from(pod.count) * f64::from(slices_of_id(self.model, pod.profile_id));
        self.at(t + pod.runtime, Ev::Finish(p));
    }

    /// Static and Tessera: the default scheduler binds pending pods to free advertised devices.
    fn bind_free(&mut self, t: f64) {
        let mut failed = BTreeSet::new();
        let pending: Vec<u32> = self.pending.iter().copied().collect();
        for p in pending {
            let pod = &self.pods[p as usize];
            if failed.contains(&pod.shape) {
                continue;
            }
            let mut best: Option<(u32, usize)> = None;
            for n in 0..self.nodes.len() {
                let free = self.nodes[n]
                    .iter()
                    .filter(|&&g| self.gpus[g].op_until <= t)
                    .flat_map(|&g| self.gpus[g].slots.iter())
                    .filter(|s| s.pod.is_none() && s.inst.profile_id == pod.profile_id && whole_ci(&s.inst))
                    .count();
                if free >= pod.count as usize {
                    let key = self.node_alloc(n);
                    if best.is_none_or(|(k, _)| key < k) {
                        best = Some((key, n));
                    }
                }
            }
            let Some((_, n)) = best else {
                failed.insert(pod.shape);
                continue;
            };
            let (count, pid) = (pod.count as usize, pod.profile_id);
            let mut picks = Vec::new();
            for &g in &self.nodes[n] {
                if self.gpus[g].op_until > t {
                    continue;
                }
                for s in self.gpus[g].slots.iter_mut() {
                    if picks.len() < count && s.pod.is_none() && s.inst.profile_id == pid && whole_ci(&s.inst) {
                        s.pod = Some(p);
                        picks.push((g, s.inst));
                    }
                }
            }
            for g in picks.iter().map(|x| x.0).collect::<BTreeSet<_>>() {
                self.refresh_unusable(g);
            }
            self.devices[p as usize] = picks;
            self.pending.remove(&p);
            self.start(p, t);
        }
    }

    /// DRA: first fit over profile × placement sorted by name on the least allocated node that
    /// can hold the claim; the instance is created when the pod is prepared.
    fn bind_dra(&mut self, t: f64) {
        let mut failed = BTreeSet::new();
        let pending: Vec<u32> = self.pending.iter().copied().collect();
        for p in pending {
            let pod = &self.pods[p as usize];
            if failed.contains(&pod.shape) {
                continue;
            }
            let Some(prof) = self.model.profile_by_id(pod.profile_id) else { continue };
            let mut best: Option<(u32, usize, Picks)> = None;
            for n in 0..self.nodes.len() {
                // First fit, device by device, on a copy of the node's layouts.
                let mut layouts: Vec<Vec<Instance>> =
                    self.nodes[n].iter().map(|&g| self.gpus[g].slots.iter().map(|s| s.inst).collect()).collect();
                let mut picks = Vec::new();
                'device: for _ in 0..pod.count {
                    for (k, &g) in self.nodes[n].iter().enumerate() {
                        let starts = if self.tessera_order {
                            tessera_kube_core::dra::placement_order(self.model, &layouts[k], prof)
                        } else {
                            prof.placements.clone()
                        };
                        for start in starts {
                            let inst = Instance::new(prof.id, start);
                            layouts[k].push(inst);
                            if validate(self.model, &layouts[k]).is_empty() {
                                picks.push((g, inst));
                                continue 'device;
                            }
                            layouts[k].pop();
                        }
                    }
                    break;
                }
                if picks.len() == pod.count as usize {
                    let key = self.node_alloc(n);
                    if best.as_ref().is_none_or(|(k, ..)| key < *k) {
                        best = Some((key, n, picks));
                    }
                }
            }
            let Some((_, _, picks)) = best else {
                failed.insert(pod.shape);
                continue;
            };
            let mut ready = t;
            for &(g, inst) in &picks {
                let gpu = &mut self.gpus[g];
                gpu.slots.push(Slot { inst, pod: Some(p) });
                gpu.op_until = gpu.op_until.max(t) + self.cost;
                ready = ready.max(gpu.op_until);
                self.out.mig_operations += 1;
                self.refresh_unusable(g);
            }
            self.devices[p as usize] = picks;
            self.pending.remove(&p);
            if ready > t {
                self.at(ready, Ev::Start(p));
            } else {
                self.start(p, t);
            }
        }
    }

    /// Node `n`'s GPUs as its DRA driver sees them: every instance is a prepared claim's.
    fn dra_gpus(&self, n: usize) -> Vec<DraGpu> {
        self.nodes[n]
            .iter()
            .map(|&g| DraGpu {
                index: self.gpus[g].index,
                uuid: format!("GPU-sim-{n}-{}", self.gpus[g].index),
                model: self.model,
                numa_node: None,
                mig_enabled: true,
                instances: self.gpus[g]
                    .slots
                    .iter()
                    .map(|s| DraInstance { instance: s.inst, mig_uuid: None, held_by: InstanceUse::Claim })
                    .collect(),
            })
            .collect()
    }

    /// Node `n`'s pool as published now: Tessera's slices for its claimed instances, in Tessera's
    /// order or NVIDIA's; republished after every change on the node.
    fn node_pool(&mut self, n: usize) -> Result<Rc<Pool>, String> {
        let Some(a) = self.alloc.as_ref() else { return Err("no allocator model".into()) };
        if let Some(p) = &a.pools[n] {
            return Ok(Rc::clone(p));
        }
        let (tessera_order, generation) = (a.tessera_order, a.generation);
        let pool = DraPool {
            driver: "gpu.tessera.dev".into(),
            node_name: self.names[n].clone(),
            generation,
            shape: SliceShape::V1_35,
        };
        let mut slices = resource_slices_in_order(&pool, &self.dra_gpus(n), tessera_order.unwrap_or_default())
            .map_err(|e| format!("{}: {e}", self.names[n]))?;
        if tessera_order.is_none() {
            slices = nvidia_order(&slices).map_err(|e| format!("{}: {e}", self.names[n]))?;
        }
        let pool = Rc::new(Pool::new(&slices).map_err(|e| format!("{}: {e}", self.names[n]))?);
        if let Some(a) = self.alloc.as_mut() {
            a.generation += 1;
            a.pools[n] = Some(Rc::clone(&pool));
        }
        Ok(pool)
    }

    /// The structured allocator: pods oldest first; on every node, the claim's devices one by one
    /// by [`Pool::first_fit`] against the devices of the node's allocated claims; the least
    /// allocated node that holds the whole claim wins. The driver creates each instance when the
    /// pod is prepared (one MIG operation, queued on its GPU) and destroys it when the pod ends.
    fn bind_alloc(&mut self, t: f64) {
        let mut failed = BTreeSet::new();
        let pending: Vec<u32> = self.pending.iter().copied().collect();
        for p in pending {
            let pod = &self.pods[p as usize];
            if failed.contains(&pod.shape) {
                continue;
            }
            let Some(prof) = self.model.profile_by_id(pod.profile_id) else { continue };
            let (count, shape, want) = (pod.count as usize, pod.shape, prof.name.clone());
            let mut best: Option<(u32, usize, Vec<String>)> = None;
            for n in 0..self.nodes.len() {
                let pool = match self.node_pool(n) {
                    Ok(pool) => pool,
                    Err(e) => {
                        self.out.violations.push(e);
                        continue;
                    }
                };
                let mut allocated = self.alloc.as_ref().map(|a| a.allocated[n].clone()).unwrap_or_default();
                let mut picks = Vec::new();
                while picks.len() < count {
                    match pool.first_fit(&allocated, Want::Profile(&want)) {
                        Ok(Some(d)) => {
                            allocated.push(d.to_string());
                            picks.push(d.to_string());
                        }
                        Ok(None) => break,
                        Err(e) => {
                            self.out.violations.push(format!("{}: {e}", self.names[n]));
                            break;
                        }
                    }
                }
                if picks.len() == count {
                    let key = self.node_alloc(n);
                    if best.as_ref().is_none_or(|(k, ..)| key < *k) {
                        best = Some((key, n, picks));
                    }
                }
            }
            let Some((_, n, names)) = best else {
                failed.insert(shape);
                continue;
            };
            let gpus = self.dra_gpus(n);
            let mut picks: Picks = Vec::new();
            for d in &names {
                let target = device_target(d, &gpus);
                let Ok(DeviceTarget::Mig { gpu, profile_id, start }) = target else {
                    self.out.violations.push(format!("device {d} is not a MIG placement: {target:?}"));
                    continue;
                };
                let Some(&g) = self.nodes[n].iter().find(|&&g| self.gpus[g].index == gpu) else { continue };
                picks.push((g, Instance::new(profile_id, start)));
            }
            let mut ready = t;
            for &(g, inst) in &picks {
                let gpu = &mut self.gpus[g];
                gpu.slots.push(Slot { inst, pod: Some(p) });
                let layout: Vec<Instance> = gpu.slots.iter().map(|s| s.inst).collect();
                if let Some(v) = validate(self.model, &layout).first() {
                    self.out.violations.push(format!("the allocator made GPU {} invalid: {v}", gpu.index));
                }
                gpu.op_until = gpu.op_until.max(t) + self.cost;
                ready = ready.max(gpu.op_until);
                self.out.mig_operations += 1;
                self.refresh_unusable(g);
            }
            if let Some(a) = self.alloc.as_mut() {
                a.allocated[n].extend(names.iter().cloned());
                a.pools[n] = None;
                a.held[p as usize] = (n, names);
            }
            self.devices[p as usize] = picks;
            self.pending.remove(&p);
            if ready > t {
                self.at(ready, Ev::Start(p));
            } else {
                self.start(p, t);
            }
        }
    }

    /// Tessera's controller: `decide` on the pending pods no change is under way for.
    fn control(&mut self, t: f64) {
        let pending: Vec<PendingPod> = self
            .pending
            .iter()
            .filter(|&&p| self.covered[p as usize] == 0)
            .map(|&p| {
                let pod = &self.pods[p as usize];
                PendingPod {
                    namespace: "sim".into(),
                    name: format!("pod-{p}"),
                    uid: p.to_string(),
                    created_ms: (pod.submit * 1000.0) as u64,
                    requests: BTreeMap::from([(pod.resource.clone(), pod.count)]),
                }
            })
            .collect();
        if pending.is_empty() {
            return;
        }
        // A node whose change is under way is left out, as the controller leaves out a node whose
        // agent has not applied the last desired layout (the pods it is for are covered).
        let nodes: Vec<NodeState> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, gs)| gs.iter().all(|&g| self.gpus[g].op_until <= t))
            .map(|(n, gs)| NodeState {
                name: self.names[n].clone(),
                gpus: gs
                    .iter()
                    .map(|&g| NodeGpu {
                        index: self.gpus[g].index,
                        model: self.model.name.clone(),
                        mode: GpuMode::Mig {
                            instances: self.gpus[g]
                                .slots
                                .iter()
                                .map(|s| CurrentInstance {
                                    instance: s.inst,
                                    busy: s.pod.is_some(),
                                    gpu_instance_id: None,
                                })
                                .collect(),
                        },
                        unhealthy: false,
                        draining: false,
                    })
                    .collect(),
                mig_config: None,
            })
            .collect();
        let d = decide(&pending, &nodes, &Policy::default(), (t * 1000.0) as u64);
        for ch in d.changes {
            let Some(n) = self.names.iter().position(|x| *x == ch.node) else { continue };
            let Some(&g) = self.nodes[n].iter().find(|&&g| self.gpus[g].index == ch.gpu) else { continue };
            if self.gpus[g].op_until > t || ch.disable_mig {
                self.out.violations.push(format!("a change on {} GPU {} while one is under way", ch.node, ch.gpu));
                continue;
            }
            self.gpus[g].op_until = t + self.cost;
            self.gpus[g].target = Some(ch.target.clone());
            for pod in &ch.for_pods {
                if let Ok(p) = pod.uid.parse::<u32>() {
                    self.covered[p as usize] += 1;
                    self.gpus[g].covers.push(p);
                }
            }
            self.out.mig_operations += 1;
            self.at(t + self.cost, Ev::ChangeDone(g as u32));
        }
    }

    fn finish(&mut self, p: u32) {
        let pod = &self.pods[p as usize];
        self.running_slices -= f64::from(pod.count) * f64::from(slices_of_id(self.model, pod.profile_id));
        let devices = std::mem::take(&mut self.devices[p as usize]);
        let dra = self.dra;
        for (g, inst) in devices {
            let slots = &mut self.gpus[g].slots;
            if let Some(k) = slots.iter().position(|s| s.inst == inst && s.pod == Some(p)) {
                if dra {
                    // Unprepare destroys the instance.
                    slots.remove(k);
                } else {
                    slots[k].pod = None;
                }
            }
            self.refresh_unusable(g);
        }
        if let Some(a) = self.alloc.as_mut() {
            let (n, names) = std::mem::take(&mut a.held[p as usize]);
            if !names.is_empty() {
                a.allocated[n].retain(|d| !names.contains(d));
                a.pools[n] = None;
            }
        }
    }

    fn change_done(&mut self, g: usize) {
        let Some(target) = self.gpus[g].target.take() else { return };
        let old = std::mem::take(&mut self.gpus[g].slots);
        for s in old.iter().filter(|s| s.pod.is_some()) {
            if !target.contains(&s.inst) {
                self.out.violations.push(format!("a change on GPU {} removed a busy instance", self.gpus[g].index));
            }
        }
        self.gpus[g].slots = target
            .iter()
            .map(|i| Slot { inst: *i, pod: old.iter().find(|s| s.inst == *i).and_then(|s| s.pod) })
            .collect();
        for p in std::mem::take(&mut self.gpus[g].covers) {
            self.covered[p as usize] = self.covered[p as usize].saturating_sub(1);
        }
        self.refresh_unusable(g);
    }
}

/// The cluster's GPUs in order (node by node), the GPUs of each node, and the node names.
fn build_gpus(cluster: &ClusterSpec) -> (Vec<Gpu>, Vec<Vec<usize>>, Vec<String>) {
    let mut gpus = Vec::new();
    let mut nodes = Vec::new();
    let mut names = Vec::new();
    for grp in &cluster.groups {
        for _ in 0..grp.nodes {
            let n = nodes.len();
            let mut gs = Vec::new();
            for index in 0..grp.gpus_per_node {
                gs.push(gpus.len());
                gpus.push(Gpu {
                    index,
                    slots: Vec::new(),
                    op_until: 0.0,
                    target: None,
                    covers: Vec::new(),
                    unusable: 0,
                });
            }
            nodes.push(gs);
            names.push(format!("node-{n:04}"));
        }
    }
    (gpus, nodes, names)
}

/// Replay `pods` (sorted by arrival) under `mode`; time-weighted measures over `window`.
fn simulate(
    pods: &[SPod],
    cluster: &ClusterSpec,
    model: &'static GpuModel,
    mode: &Mode,
    cost: f64,
    batch: f64,
    window: (f64, f64),
) -> Out {
    let (mut gpus, nodes, names) = build_gpus(cluster);
    if let Mode::Static(layouts) = mode {
        for (gpu, l) in gpus.iter_mut().zip(layouts) {
            gpu.slots = l.iter().map(|i| Slot { inst: *i, pod: None }).collect();
        }
    }
    let tessera = matches!(mode, Mode::Tessera);
    let dra = matches!(mode, Mode::Dra(_));
    let tessera_order = matches!(mode, Mode::Dra(true));
    let alloc = match mode {
        Mode::DraAlloc(order) => Some(AllocModel {
            tessera_order: *order,
            pools: vec![None; nodes.len()],
            allocated: vec![Vec::new(); nodes.len()],
            held: vec![(0, Vec::new()); pods.len()],
            generation: 0,
        }),
        _ => None,
    };
    let dra = dra || alloc.is_some();
    let mut lp = Loop {
        model,
        pods,
        cost,
        window,
        gpus,
        nodes,
        names,
        pending: BTreeSet::new(),
        covered: vec![0; pods.len()],
        devices: vec![Vec::new(); pods.len()],
        events: BinaryHeap::new(),
        out: Out { starts: vec![None; pods.len()], ..Out::default() },
        dra,
        tessera_order,
        alloc,
        last: 0.0,
        running_slices: 0.0,
        unusable_total: 0.0,
        util_int: 0.0,
        unusable_int: 0.0,
        backlog_time: 0.0,
        backlog_util_int: 0.0,
    };
    let mut next = 0usize;
    let mut tick: Option<f64> = None;
    let mut dirty = false;
    loop {
        let mut t = f64::INFINITY;
        if let Some(p) = pods.get(next) {
            t = t.min(p.submit);
        }
        if let Some(Reverse((bits, _))) = lp.events.peek() {
            t = t.min(f64::from_bits(*bits));
        }
        if let Some(k) = tick {
            t = t.min(k);
        }
        if !t.is_finite() {
            break;
        }
        lp.advance(t);
        while let Some(&Reverse((bits, ev))) = lp.events.peek() {
            if f64::from_bits(bits) > t {
                break;
            }
            lp.events.pop();
            match ev {
                Ev::Finish(p) => lp.finish(p),
                Ev::ChangeDone(g) => lp.change_done(g as usize),
                Ev::Start(p) => lp.start(p, t),
            }
            dirty = true;
        }
        while let Some(p) = pods.get(next)
            && p.submit <= t
        {
            lp.pending.insert(next as u32);
            next += 1;
            dirty = true;
        }
        if lp.alloc.is_some() {
            lp.bind_alloc(t);
        } else if dra {
            lp.bind_dra(t);
        } else {
            lp.bind_free(t);
        }
        if tessera {
            if tick.is_some_and(|k| k <= t) {
                tick = None;
                lp.control(t);
                dirty = false;
            }
            if tick.is_none() && dirty && lp.pending.iter().any(|&p| lp.covered[p as usize] == 0) {
                tick = Some(((t / batch).floor() + 1.0) * batch);
            }
        }
    }
    let span = (window.1 - window.0).max(1e-9);
    let capacity: f64 = lp.gpus.len() as f64 * f64::from(model.compute_slices);
    lp.out.utilization = lp.util_int / (capacity * span);
    lp.out.stranded = lp.unusable_int / (capacity * span);
    lp.out.utilization_backlogged =
        if lp.backlog_time > 0.0 { lp.backlog_util_int / (capacity * lp.backlog_time) } else { 0.0 };
    lp.out
}

/// Pods ready for the loop (sorted by arrival), with their shapes.
fn ready(pods: &[KubePod], model: &GpuModel) -> Result<Vec<SPod>, KubeError> {
    let mut shapes: Vec<(u32, u32)> = Vec::new();
    let mut out = Vec::with_capacity(pods.len());
    let mut sorted: Vec<&KubePod> = pods.iter().collect();
    sorted.sort_by(|a, b| a.submit_s.total_cmp(&b.submit_s));
    for p in sorted {
        let bad = |reason: String| KubeError::Pod { pod: p.id.clone(), reason };
        let prof = model.profile(&p.profile).map_err(|e| bad(e.to_string()))?;
        let resource = ResourceName::mig(&prof.name)
            .map_err(|e| bad(format!("profile '{}': {e}", prof.name)))?
            .as_str()
            .to_string();
        if p.count == 0 {
            return Err(bad("asks for 0 devices".into()));
        }
        let key = (prof.id, p.count);
        let shape = shapes.iter().position(|s| *s == key).unwrap_or_else(|| {
            shapes.push(key);
            shapes.len() - 1
        });
        out.push(SPod {
            submit: p.submit_s,
            runtime: p.runtime_s,
            profile_id: prof.id,
            shape,
            count: p.count,
            resource,
            label: if p.count > 1 { format!("{}×{}", prof.name, p.count) } else { prof.name.clone() },
        });
    }
    Ok(out)
}

/// Every arrival moved by a uniform amount within ± `jitter` seconds (never below 0).
fn jittered(pods: &[KubePod], jitter: f64, seed: u64) -> Vec<KubePod> {
    let mut rng = Rng::new(seed);
    let mut out: Vec<KubePod> = pods
        .iter()
        .map(|p| {
            let d = if jitter > 0.0 { (rng.next_f64() * 2.0 - 1.0) * jitter } else { 0.0 };
            KubePod { submit_s: (p.submit_s + d).max(0.0), ..p.clone() }
        })
        .collect();
    out.sort_by(|a, b| a.submit_s.total_cmp(&b.submit_s));
    out
}

/// The measured pods and the time window of a replay.
fn window_of(pods: &[SPod], warmup: f64) -> ((usize, usize), (f64, f64)) {
    let (lo, hi) = window_range(pods.len(), warmup);
    let from = pods.get(lo).map_or(0.0, |p| p.submit);
    let to = pods.get(hi.saturating_sub(1)).map_or(from, |p| p.submit).max(from + 1.0);
    ((lo, hi), (from, to))
}

/// One replay's metrics over its window.
fn metrics(seed: u64, pods: &[SPod], out: &Out, range: (usize, usize)) -> KubeSeedMetrics {
    let mut waits = Vec::new();
    let mut unstarted = 0;
    let mut by: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for (pod, start) in pods.iter().zip(&out.starts).take(range.1).skip(range.0) {
        match start {
            Some(s) => {
                waits.push(s - pod.submit);
                let e = by.entry(pod.label.clone()).or_default();
                *e = (e.0 + s - pod.submit, e.1 + 1.0);
            }
            None => unstarted += 1,
        }
    }
    waits.sort_by(f64::total_cmp);
    KubeSeedMetrics {
        seed,
        wait_mean_s: if waits.is_empty() { 0.0 } else { mean(&waits) },
        wait_p95_s: if waits.is_empty() { 0.0 } else { percentile_sorted(&waits, 95.0) },
        utilization: out.utilization,
        utilization_backlogged: out.utilization_backlogged,
        stranded: out.stranded,
        mig_operations: out.mig_operations,
        unstarted,
        wait_mean_by_request_s: by.into_iter().map(|(k, (sum, n))| (k, sum / n)).collect(),
    }
}

/// A mig-manager configuration: how many GPUs get each candidate layout.
fn expand(counts: &[usize], cands: &[(Vec<String>, Vec<Instance>)]) -> Vec<Vec<Instance>> {
    counts.iter().zip(cands).flat_map(|(&n, (_, l))| std::iter::repeat_n(l.clone(), n)).collect()
}

fn describe(counts: &[usize], cands: &[(Vec<String>, Vec<Instance>)]) -> String {
    counts
        .iter()
        .zip(cands)
        .filter(|(n, _)| **n > 0)
        .map(|(n, (names, _))| format!("{n}×{}", names.join("+")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The best mig-manager configuration for the tuning pods: a greedy start that covers each
/// profile's mean demand (device-seconds per second, weighted by compute slices), then steepest
/// descent over moves of one GPU from one candidate layout to another, scored by (measured pods
/// never started, mean wait) on the tuning replay, within `budget` replays.
fn search_static(
    tuning: &[SPod],
    cfg: &KubeConfig,
    model: &'static GpuModel,
    cands: &[(Vec<String>, Vec<Instance>)],
) -> (Vec<usize>, StaticSearch) {
    let gpus = cfg.cluster.gpus() as usize;
    let (range, window) = window_of(tuning, cfg.warmup_fraction);
    let span = (window.1 - window.0).max(1.0);
    let mut demand: BTreeMap<u32, f64> = BTreeMap::new();
    for p in tuning {
        *demand.entry(p.profile_id).or_default() += f64::from(p.count) * p.runtime / span;
    }
    let has = |c: &(Vec<String>, Vec<Instance>), pid: u32| c.1.iter().filter(|i| i.profile_id == pid).count() as f64;
    let mut supply: BTreeMap<u32, f64> = BTreeMap::new();
    let mut counts = vec![0usize; cands.len()];
    let mut scale = 1.0;
    for _ in 0..gpus {
        let score = |c: &(Vec<String>, Vec<Instance>), scale: f64| -> f64 {
            demand
                .iter()
                .map(|(&pid, &d)| {
                    let deficit = (d * scale - supply.get(&pid).copied().unwrap_or(0.0)).max(0.0);
                    has(c, pid).min(deficit) * f64::from(slices_of_id(model, pid))
                })
                .sum()
        };
        if cands.iter().all(|c| score(c, scale) <= 0.0) {
            scale *= 2.0;
        }
        let Some(k) = (0..cands.len())
            .max_by(|&a, &b| score(&cands[a], scale).total_cmp(&score(&cands[b], scale)).then(b.cmp(&a)))
        else {
            break;
        };
        counts[k] += 1;
        for &pid in demand.keys() {
            *supply.entry(pid).or_default() += has(&cands[k], pid);
        }
    }
    let replays = std::cell::Cell::new(0usize);
    let eval = |counts: &[usize]| -> (u64, f64) {
        replays.set(replays.get() + 1);
        let out = simulate(
            tuning,
            &cfg.cluster,
            model,
            &Mode::Static(expand(counts, cands)),
            cfg.reconfig_cost_s,
            cfg.batch_window_s,
            window,
        );
        let m = metrics(0, tuning, &out, range);
        (m.unstarted, m.wait_mean_s)
    };
    let better = |a: (u64, f64), b: (u64, f64)| a.0 < b.0 || (a.0 == b.0 && a.1 < b.1);
    let start = counts.clone();
    let start_score = eval(&counts);
    let mut score = start_score;
    loop {
        let mut best: Option<(Vec<usize>, (u64, f64))> = None;
        'moves: for from in 0..cands.len() {
            if counts[from] == 0 {
                continue;
            }
            for to in 0..cands.len() {
                if to == from {
                    continue;
                }
                if replays.get() >= cfg.search_budget {
                    break 'moves;
                }
                let mut c = counts.clone();
                c[from] -= 1;
                c[to] += 1;
                let s = eval(&c);
                if best.as_ref().is_none_or(|(_, b)| better(s, *b)) {
                    best = Some((c, s));
                }
            }
        }
        match best {
            Some((c, s)) if better(s, score) => {
                counts = c;
                score = s;
            }
            _ => break,
        }
    }
    let search = StaticSearch {
        tuning_pods: tuning.len(),
        replays: replays.get(),
        start: describe(&start, cands),
        start_wait_mean_s: start_score.1,
        best: describe(&counts, cands),
        best_wait_mean_s: score.1,
        best_unstarted: score.0,
    };
    (counts, search)
}

/// Replay the workload's held-out split under every policy and seed of `cfg`.
pub fn run_kube(cfg: &KubeConfig, workload: &KubeWorkload) -> Result<KubeReport, KubeError> {
    let model = cfg.validate()?;
    let gpus = cfg.cluster.gpus();
    let first_seed = cfg.seeds[0];
    let (name, tuning, held): (String, Vec<KubePod>, Vec<Vec<KubePod>>) = match workload {
        KubeWorkload::Trace { name, pods } => {
            if pods.len() < 4 {
                return Err(KubeError::Config {
                    field: "workload",
                    reason: format!("has {} pods; a tuning and a held-out split need at least 4", pods.len()),
                });
            }
            let mut sorted = pods.clone();
            sorted.sort_by(|a, b| a.submit_s.total_cmp(&b.submit_s));
            let (tune, rest) = sorted.split_at(sorted.len() / 2);
            let held = cfg.seeds.iter().map(|&s| jittered(rest, cfg.arrival_jitter_s, s)).collect();
            (name.clone(), jittered(tune, cfg.arrival_jitter_s, first_seed), held)
        }
        KubeWorkload::MigBench(spec) => {
            let held = cfg.seeds.iter().map(|&s| migbench_pods(spec, model, gpus, s)).collect::<Result<Vec<_>, _>>()?;
            ("migbench".to_string(), migbench_pods(spec, model, gpus, 1000 + first_seed)?, held)
        }
        KubeWorkload::MigBenchTrace(spec) => {
            let held =
                cfg.seeds.iter().map(|&s| migbench_trace_pods(spec, model, gpus, s)).collect::<Result<Vec<_>, _>>()?;
            ("migbench-gen".to_string(), migbench_trace_pods(spec, model, gpus, 1000 + first_seed)?, held)
        }
    };
    let tuning = ready(&tuning, model)?;
    let held: Vec<Vec<SPod>> = held.iter().map(|p| ready(p, model)).collect::<Result<_, _>>()?;

    let needs_search = cfg.policies.iter().any(|p| matches!(p, KubePolicy::MigManager { layout: None }));
    let mut static_search = None;
    let mut searched: Option<Vec<Vec<Instance>>> = None;
    let mut searched_name = None;
    if needs_search {
        let mut cands = Vec::new();
        for names in static_candidates(model) {
            let l = resolve_layout(model, &names)?;
            cands.push((names, l));
        }
        let (counts, s) = search_static(&tuning, cfg, model, &cands);
        searched = Some(expand(&counts, &cands));
        searched_name = Some(s.best.clone());
        static_search = Some(s);
    }

    let mut policies = Vec::new();
    for pol in &cfg.policies {
        let (mode, config) = match pol {
            KubePolicy::MigManager { layout: None } => {
                (Mode::Static(searched.clone().unwrap_or_default()), searched_name.clone())
            }
            KubePolicy::MigManager { layout: Some(names) } => {
                let l = resolve_layout(model, names)?;
                (Mode::Static(vec![l; gpus as usize]), Some(format!("{gpus}×{}", names.join("+"))))
            }
            KubePolicy::DraFirstFit => (Mode::Dra(false), None),
            KubePolicy::DraTessera => (Mode::Dra(true), None),
            KubePolicy::DraAlloc => (Mode::DraAlloc(None), None),
            KubePolicy::DraAllocTessera => (Mode::DraAlloc(Some(DraOrder::default())), None),
            KubePolicy::DraAllocOrder(o) => (Mode::DraAlloc(Some(*o)), None),
            KubePolicy::Tessera => (Mode::Tessera, None),
        };
        let mut per_seed = Vec::new();
        for (k, pods) in held.iter().enumerate() {
            let (range, window) = window_of(pods, cfg.warmup_fraction);
            let out = simulate(pods, &cfg.cluster, model, &mode, cfg.reconfig_cost_s, cfg.batch_window_s, window);
            if let Some(v) = out.violations.first() {
                return Err(KubeError::Config { field: "policy", reason: format!("{pol}: invariant broken: {v}") });
            }
            per_seed.push(metrics(cfg.seeds[k], pods, &out, range));
        }
        let est = |f: fn(&KubeSeedMetrics) -> f64| Estimate::of(&per_seed.iter().map(f).collect::<Vec<f64>>());
        policies.push(KubePolicyReport {
            policy: pol.to_string(),
            config,
            wait_mean_s: est(|m| m.wait_mean_s),
            wait_p95_s: est(|m| m.wait_p95_s),
            utilization: est(|m| m.utilization),
            utilization_backlogged: est(|m| m.utilization_backlogged),
            stranded: est(|m| m.stranded),
            mig_operations: est(|m| m.mig_operations as f64),
            unstarted: per_seed.iter().map(|m| m.unstarted).sum(),
            per_seed,
        });
    }
    Ok(KubeReport {
        workload: name,
        cluster: cfg.cluster.to_string(),
        gpus,
        held_out_pods: held.first().map_or(0, Vec::len),
        tuning_pods: tuning.len(),
        seeds: cfg.seeds.clone(),
        reconfig_cost_s: cfg.reconfig_cost_s,
        batch_window_s: cfg.batch_window_s,
        static_search,
        policies,
    })
}

/// The report as a text table.
pub fn render_kube_table(r: &KubeReport) -> String {
    let mut s = String::new();
    let seeds = r.seeds.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    s.push_str(&format!(
        "workload {} on {} ({} GPUs): {} held-out pods (tuning: {}), MIG operation {} s, batch window {} s, seeds {seeds}\n",
        r.workload, r.cluster, r.gpus, r.held_out_pods, r.tuning_pods, r.reconfig_cost_s, r.batch_window_s
    ));
    if let Some(x) = &r.static_search {
        s.push_str(&format!(
            "mig-manager search on the tuning split: {} replays; start {} (wait {:.0} s) -> best {} (wait {:.0} s, {} never started)\n",
            x.replays, x.start, x.start_wait_mean_s, x.best, x.best_wait_mean_s, x.best_unstarted
        ));
    }
    s.push_str("policy            wait mean (s)        wait p95 (s)          util            stranded       MIG ops    unstarted\n");
    for p in &r.policies {
        s.push_str(&format!(
            "{:<17} {:>9.0} ±{:<9.0} {:>9.0} ±{:<9.0} {:>6.1}% ±{:<5.1} {:>6.2}% ±{:<5.2} {:>8.0} {:>9}\n",
            p.policy,
            p.wait_mean_s.mean,
            p.wait_mean_s.ci95,
            p.wait_p95_s.mean,
            p.wait_p95_s.ci95,
            p.utilization.mean * 100.0,
            p.utilization.ci95 * 100.0,
            p.stranded.mean * 100.0,
            p.stranded.ci95 * 100.0,
            p.mig_operations.mean,
            p.unstarted
        ));
    }
    s
}
