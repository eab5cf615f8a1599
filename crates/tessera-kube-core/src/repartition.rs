//! Pending pods repartition GPUs: the controller's pure decision.
//!
//! [`decide`] takes the pods the scheduler could not place for lack of `nvidia.com/mig-*` or
//! `nvidia.com/gpu`, every GPU node's layout and which instances running pods hold, and returns
//! at most one layout change per GPU, which pod each new device is meant for, and why each other
//! pod cannot be helped. Time is an argument; the same input gives the same decision.
//!
//! The rules, in order:
//! - All pods are decided together. Those that have waited [`AGING_BOUND_MS`] (four hours) or
//!   more come first, oldest first; the others follow largest first (compute slices, then memory,
//!   then device count), oldest first within a size. Largest first keeps a stream of small pods
//!   from starving a large one; the bound keeps a stream of large pods from starving a small one.
//! - Free devices that exist are used before anything is changed: first every pod that free
//!   devices alone can hold, then the rest, which may still use free devices for part of a request.
//! - A change never destroys or moves a busy instance, nor a free instance another pod of this
//!   decision counts on: new instances go where [`tessera_mig::place`] puts them next to those,
//!   and the final change is planned by [`tessera_mig::reconfigure`], which refuses to touch busy
//!   instances. Idle instances nobody asked for may be destroyed to make room.
//! - Among the GPUs that could make a device, the one whose change strands the fewest compute
//!   slices (the planner's fragmentation measure: usable room before minus after, minus what the
//!   device takes) wins, then the one destroying fewest instances, then the tightest fit (the
//!   least usable room left, so empty GPUs stay whole for large pods), then node name and GPU index.
//! - A node carrying `nvidia.com/mig.config` is changed only when its config allows on-demand
//!   changes; its free devices are used either way.
//! - A `nvidia.com/gpu` pod may turn a MIG GPU whose instances are all idle into a whole GPU only
//!   when [`Policy::allow_mig_mode_changes`] is set. It is off by default: turning MIG off removes
//!   every MIG device of that GPU from the node, a MIG mode change on Ampere waits for a GPU reset
//!   (refused in passthrough VMs), and the daemon's own `mig_mode_switching` is off by default for
//!   the same reasons.
//!
//! Resource names come from [`ResourceName::mig`] (NVIDIA's rule) applied to the catalog's
//! profiles, so there is one mapping between names and profiles. Only GPU instances holding one
//! compute instance are devices here; the node agent's inventory is the authority on the rest.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use tessera_mig::layout::{ci_type_name, device_type_name};
use tessera_mig::planner::subsets_of_size;
use tessera_mig::{
    ComputeShape, CurrentInstance, GpuModel, Instance, Planner, Step, Wanted, WantedInstance, catalog, place,
    planner_for, reconfigure,
};

use crate::naming::{RESOURCE_PREFIX, ResourceName};

/// A pod the scheduler could not place for lack of GPU devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingPod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// When the pod was created, in milliseconds since the epoch (FIFO within a size).
    pub created_ms: u64,
    /// The pod's extended-resource requests (`nvidia.com/mig-1g.10gb` → 2). Resources outside
    /// `nvidia.com/` are the scheduler's business and ignored here.
    pub requests: BTreeMap<String, u32>,
}

impl PendingPod {
    /// The pod's identity.
    pub fn pod_ref(&self) -> PodRef {
        PodRef { namespace: self.namespace.clone(), name: self.name.clone(), uid: self.uid.clone() }
    }
}

/// A pod's identity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A GPU node as the controller sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeState {
    /// The Kubernetes node name.
    pub name: String,
    pub gpus: Vec<NodeGpu>,
    /// The node's `nvidia.com/mig.config` label, when it has one.
    pub mig_config: Option<MigConfigLabel>,
}

/// A node's `nvidia.com/mig.config` label and whether its config allows on-demand changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigConfigLabel {
    /// The config's name (the label's value).
    pub name: String,
    /// The config lets pending pods repartition the node's GPUs.
    pub allows_on_demand: bool,
}

/// One GPU of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeGpu {
    /// The GPU's index on the node.
    pub index: u32,
    /// The catalog model (`H100-80GB`); a GPU with MIG off may be a model the catalog lacks.
    pub model: String,
    pub mode: GpuMode,
    /// The node agent reports it unhealthy: its devices are not free and it is not changed.
    pub unhealthy: bool,
    /// Being drained: its devices are not free and it is not changed.
    pub draining: bool,
}

/// A GPU's MIG mode and what is on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum GpuMode {
    /// MIG on: its GPU instances, each with whether a running pod holds it.
    Mig { instances: Vec<CurrentInstance> },
    /// MIG off: one `nvidia.com/gpu` device, held by a running pod or not.
    Whole { busy: bool },
}

/// What the controller may do beyond changing MIG layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Policy {
    /// Turn a MIG GPU whose instances are all idle into a whole GPU for a `nvidia.com/gpu` pod.
    /// Off by default: it removes every MIG device of the GPU, and on Ampere the change waits
    /// for a GPU reset.
    pub allow_mig_mode_changes: bool,
}

/// What [`decide`] returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// At most one per GPU, ordered by node name and GPU index.
    pub changes: Vec<NodeLayoutChange>,
    /// The pods that free or new devices can hold, in the order they were decided.
    pub placed: Vec<PodPlacement>,
    /// The pods nothing can be done for, with the reason, ordered by namespace, name and uid.
    pub unplaceable: Vec<Unplaceable>,
    /// GPUs (or whole nodes) left out because their state cannot be used, with the reason.
    pub ignored: Vec<IgnoredGpu>,
}

/// One GPU's new layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeLayoutChange {
    pub node: String,
    pub gpu: u32,
    pub model: String,
    /// Turn MIG off (the GPU becomes one whole device); the target layout is then empty.
    pub disable_mig: bool,
    /// On Ampere a MIG mode change waits for a GPU reset.
    pub needs_gpu_reset: bool,
    /// The whole layout to reach, at explicit placements, ordered by start.
    pub target: Vec<Instance>,
    /// Instances to create, as the planner orders them.
    pub creates: Vec<Instance>,
    /// Idle instances to destroy, as the planner orders them.
    pub destroys: Vec<Instance>,
    /// The pods the new devices are meant for.
    pub for_pods: Vec<PodRef>,
}

/// Where a pod's devices are meant to come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodPlacement {
    pub pod: PodRef,
    pub node: String,
    pub devices: Vec<DeviceChoice>,
    /// How long the pod has waited at the decision's time.
    pub waited_ms: u64,
}

impl PodPlacement {
    /// True when some device is made by a change (the pod waits for it).
    pub fn needs_change(&self) -> bool {
        self.devices.iter().any(|d| d.created)
    }
}

/// One device of a placed pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceChoice {
    pub resource: String,
    pub gpu: u32,
    /// The MIG instance; `None` for a whole GPU.
    pub instance: Option<Instance>,
    /// Made by this decision's change on the GPU.
    pub created: bool,
}

/// A pod nothing can be done for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unplaceable {
    pub pod: PodRef,
    pub reason: UnplaceableReason,
    pub waited_ms: u64,
}

/// Why a pod cannot be helped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum UnplaceableReason {
    #[error("it requests no nvidia.com/gpu or nvidia.com/mig-* device")]
    NoDeviceRequest,
    #[error("requests.{resource}: not a whole-GPU or MIG resource that GPUs are repartitioned for")]
    UnsupportedResource { resource: String },
    #[error("requests.{resource}: no GPU model in Tessera's catalog has this MIG device")]
    UnknownDevice { resource: String },
    #[error("it asks for {asked} GPU devices but the largest node can hold at most {most}")]
    TooManyDevices { asked: u64, most: u64 },
    #[error("another pending pod has the same uid '{uid}'")]
    DuplicateUid { uid: String },
    #[error("there are no GPU nodes")]
    NoNodes,
    #[error("no node can hold it: {}", refusal_list(.refusals))]
    NoNode { refusals: Vec<NodeRefusal> },
    #[error("the planner refused the change on node {node} GPU {gpu}: {detail}")]
    PlannerRefused { node: String, gpu: u32, detail: String },
}

fn refusal_list(r: &[NodeRefusal]) -> String {
    r.iter().map(|r| format!("{}: {}", r.node, r.why)).collect::<Vec<_>>().join("; ")
}

/// Why one node cannot hold a pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeRefusal {
    pub node: String,
    pub why: NodeRefusalKind,
}

/// Why one node cannot hold a pod, for the first of its devices that does not fit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NodeRefusalKind {
    #[error("no GPU that is healthy and not draining")]
    NoUsableGpu,
    #[error("no GPU here offers {resource}")]
    NoSuchDevice { resource: String },
    #[error("no free {resource}, and its nvidia.com/mig.config={config} does not allow on-demand changes")]
    ConfigFixed { resource: String, config: String },
    #[error("no free {resource}, and no GPU can make one without touching a busy instance ({detail})")]
    NoRoom { resource: String, detail: String },
    #[error(
        "no free nvidia.com/gpu; GPU {gpus} could become one, but turning MIG off is not allowed \
         (Policy::allow_mig_mode_changes): it removes every MIG device of the GPU and on Ampere waits for a GPU reset"
    )]
    MigModeChangeOff { gpus: String },
    #[error("no free nvidia.com/gpu, and no MIG GPU whose instances are all idle")]
    NoIdleGpu,
}

/// A GPU (or, without `gpu`, a whole node) left out of the decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IgnoredGpu {
    pub node: String,
    pub gpu: Option<u32>,
    pub reason: String,
}

/// The resource name of `nvidia.com/gpu`.
fn whole_resource() -> String {
    ResourceName::gpu().as_str().to_string()
}

/// The resource an instance is advertised as, when it is one device (one compute instance).
pub fn instance_resource(model: &GpuModel, instance: &Instance) -> Option<String> {
    let p = model.profile_by_id(instance.profile_id)?;
    let name = match instance.compute {
        ComputeShape::Full | ComputeShape::Slices(_) => device_type_name(p, instance.compute),
        ComputeShape::Split(_) | ComputeShape::Other => return None,
    };
    ResourceName::mig(&name).ok().map(String::from)
}

/// The instance to create on `model` for a device of `resource`, when the model has one.
pub fn wanted_for_resource(model: &GpuModel, resource: &str) -> Option<WantedInstance> {
    let is = |name: &str| ResourceName::mig(name).is_ok_and(|r| r.as_str() == resource);
    for p in &model.profiles {
        if is(&p.name) {
            return Some(WantedInstance::new(p.id));
        }
        for ci in model.compute_instance_profiles(p.compute_slices) {
            if ci.compute_slices < p.compute_slices && is(&ci_type_name(p, ci.compute_slices)) {
                return Some(WantedInstance { profile_id: p.id, compute: ComputeShape::Slices(ci.compute_slices) });
            }
        }
    }
    None
}

impl NodeState {
    /// The devices no running pod holds, per resource, on GPUs that are healthy and not draining.
    pub fn free_devices(&self) -> BTreeMap<String, u32> {
        let mut out: BTreeMap<String, u32> = BTreeMap::new();
        for g in self.gpus.iter().filter(|g| !g.unhealthy && !g.draining) {
            match &g.mode {
                GpuMode::Whole { busy: false } => *out.entry(whole_resource()).or_default() += 1,
                GpuMode::Whole { busy: true } => {}
                GpuMode::Mig { instances } => {
                    let Ok(model) = catalog().model(&g.model) else { continue };
                    for c in instances.iter().filter(|c| !c.busy) {
                        if let Some(r) = instance_resource(model, &c.instance) {
                            *out.entry(r).or_default() += 1;
                        }
                    }
                }
            }
        }
        out
    }
}

/// The nodes as they will be once `changes` are made: new instances idle, the rest as they were.
pub fn apply_changes(nodes: &[NodeState], changes: &[NodeLayoutChange]) -> Vec<NodeState> {
    let mut out = nodes.to_vec();
    for ch in changes {
        let Some(node) = out.iter_mut().find(|n| n.name == ch.node) else { continue };
        let Some(gpu) = node.gpus.iter_mut().find(|g| g.index == ch.gpu) else { continue };
        if ch.disable_mig {
            gpu.mode = GpuMode::Whole { busy: false };
            continue;
        }
        let before = match &gpu.mode {
            GpuMode::Mig { instances } => instances.clone(),
            GpuMode::Whole { .. } => Vec::new(),
        };
        let instances = ch
            .target
            .iter()
            .map(|t| {
                before.iter().find(|c| c.instance == *t).copied().unwrap_or(CurrentInstance {
                    instance: *t,
                    busy: false,
                    gpu_instance_id: None,
                })
            })
            .collect();
        gpu.mode = GpuMode::Mig { instances };
    }
    out
}

/// One device a pod wants.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Want {
    Whole,
    Mig(String),
}

impl Want {
    fn resource(&self) -> String {
        match self {
            Want::Whole => whole_resource(),
            Want::Mig(r) => r.clone(),
        }
    }
}

/// Compute slices and memory (GB) of a device of `resource` on the first catalog model that has
/// one; a whole GPU counts as more than any MIG device.
fn device_size(want: &Want) -> Option<(u32, u64)> {
    match want {
        Want::Whole => Some((u32::from(u8::MAX), u64::MAX / 64)),
        Want::Mig(r) => catalog().models.iter().find_map(|m| {
            let w = wanted_for_resource(m, r)?;
            let p = m.profile_by_id(w.profile_id)?;
            let compute = match w.compute {
                ComputeShape::Slices(c) => c,
                _ => p.compute_slices,
            };
            Some((u32::from(compute), p.name_gb().unwrap_or(0)))
        }),
    }
}

/// A pending pod read for the decision.
#[derive(Debug, Clone)]
struct Job {
    pod: PodRef,
    created_ms: u64,
    /// Largest first.
    wants: Vec<Want>,
    size: (u32, u64, usize),
}

/// The working state of one GPU.
#[derive(Debug, Clone)]
struct WGpu {
    index: u32,
    /// Healthy and not draining.
    usable: bool,
    kind: WKind,
}

#[derive(Debug, Clone)]
enum WKind {
    Whole {
        busy: bool,
        claimed: bool,
    },
    Mig {
        model: &'static GpuModel,
        planner: &'static Planner<'static>,
        original: Vec<CurrentInstance>,
        /// The layout this decision aims at (the original until a pod changes it).
        target: Vec<Instance>,
        /// Target instances that must stay: busy ones, and those pods of this decision count on.
        held: BTreeSet<Instance>,
        /// Target instances this decision creates.
        created: BTreeSet<Instance>,
        /// MIG is to be turned off for a whole-GPU pod.
        disable: bool,
        /// A device was claimed on the GPU as it is (so it must not be turned whole).
        claimed_any: bool,
    },
}

impl WGpu {
    fn changed(&self) -> bool {
        match &self.kind {
            WKind::Whole { .. } => false,
            WKind::Mig { target, original, disable, .. } => {
                *disable || target.len() != original.len() || original.iter().any(|c| !target.contains(&c.instance))
            }
        }
    }
}

#[derive(Debug, Clone)]
struct WNode {
    name: String,
    /// `Some(config)` when a `nvidia.com/mig.config` label forbids changes.
    fixed_by: Option<String>,
    gpus: Vec<WGpu>,
}

/// A way to make one device on one GPU.
#[derive(Debug, Clone)]
struct Choice {
    gpu: usize,
    /// Compute slices the change makes unusable beyond what the device takes.
    stranded: u32,
    destroyed: u32,
    /// Usable compute slices left on the GPU (lower is a tighter fit).
    room_after: u32,
    target: Vec<Instance>,
    new: Option<Instance>,
    disable: bool,
}

impl Choice {
    fn key(&self) -> (u32, u32, u32, usize) {
        (self.stranded, self.destroyed, self.room_after, self.gpu)
    }
}

/// How long a pending pod may wait before it goes ahead of every pod that has waited less,
/// whatever their sizes. Below it pods are decided largest first; past it, oldest first, so a
/// stream of larger pods delays a small one by at most this long before the small one is first
/// for the room that frees up. Four hours: on the tuning seeds of `tessera sim kube`
/// (`docs/evaluation/kubernetes.md`), bounds of 1 and 2 hours decided as oldest first does and 4
/// and 8 hours as largest first does on openb, while on MIGBench-style traces every bound differed
/// from largest first by under 2% of mean wait.
pub const AGING_BOUND_MS: u64 = 4 * 60 * 60 * 1000;

/// Where a pod comes in the decision: those that have waited [`AGING_BOUND_MS`] first, oldest
/// first; then the others largest first (compute slices, memory, device count), oldest first
/// within a size; then namespace, name and uid.
fn order_key(job: &Job, now_ms: u64) -> (bool, Reverse<(u32, u64, usize)>, u64, PodRef) {
    let aged = now_ms.saturating_sub(job.created_ms) >= AGING_BOUND_MS;
    let size = if aged { (0, 0, 0) } else { job.size };
    (!aged, Reverse(size), job.created_ms, job.pod.clone())
}

/// Usable compute slices next to `held` (0 when the layout is not valid).
fn usable(planner: &Planner<'_>, held: &BTreeSet<Instance>) -> u32 {
    let layout: Vec<Instance> = held.iter().copied().collect();
    planner.fragmentation(&layout).map_or(0, |f| u32::from(f.usable_compute_slices))
}

/// Decide which GPUs to repartition for `pending`. Pure and deterministic; `now_ms` only says
/// how long each pod has waited.
pub fn decide(pending: &[PendingPod], nodes: &[NodeState], policy: &Policy, now_ms: u64) -> Decision {
    let mut ignored = Vec::new();
    let mut wnodes = read_nodes(nodes, &mut ignored);
    let mut unplaceable = Vec::new();
    let waited = |created: u64| now_ms.saturating_sub(created);

    // Most devices any node could hold: a bound on a request before any work is done for it.
    let most: u64 = wnodes
        .iter()
        .map(|n| {
            n.gpus
                .iter()
                .map(|g| match &g.kind {
                    WKind::Whole { .. } => 1u64,
                    WKind::Mig { model, .. } => u64::from(model.max_gpu_instances).max(1),
                })
                .sum::<u64>()
        })
        .max()
        .unwrap_or(0);

    let mut jobs: Vec<Job> = Vec::new();
    let mut uids: BTreeSet<&str> = BTreeSet::new();
    for p in pending {
        let refuse = |reason| Unplaceable { pod: p.pod_ref(), reason, waited_ms: waited(p.created_ms) };
        if !uids.insert(p.uid.as_str()) {
            unplaceable.push(refuse(UnplaceableReason::DuplicateUid { uid: p.uid.clone() }));
            continue;
        }
        match read_pod(p, most) {
            Ok(job) => jobs.push(job),
            Err(reason) => unplaceable.push(refuse(reason)),
        }
    }
    jobs.sort_by_cached_key(|j| order_key(j, now_ms));

    // Pass 1: pods that free devices alone can hold.
    let mut placed: Vec<(usize, PodPlacement)> = Vec::new();
    let mut rest: Vec<usize> = Vec::new();
    for (j, job) in jobs.iter().enumerate() {
        let found = wnodes.iter().enumerate().find_map(|(n, node)| {
            let mut trial = node.clone();
            free_only(&mut trial, &job.wants).map(|devices| (n, trial, devices))
        });
        match found {
            Some((n, trial, devices)) => {
                wnodes[n] = trial;
                let node = wnodes[n].name.clone();
                placed
                    .push((j, PodPlacement { pod: job.pod.clone(), node, devices, waited_ms: waited(job.created_ms) }));
            }
            None => rest.push(j),
        }
    }

    // Pass 2: the rest, changing layouts where free devices do not suffice.
    let mut new_for: BTreeMap<(usize, usize), Vec<PodRef>> = BTreeMap::new();
    for j in rest {
        let job = &jobs[j];
        if wnodes.is_empty() {
            unplaceable.push(Unplaceable {
                pod: job.pod.clone(),
                reason: UnplaceableReason::NoNodes,
                waited_ms: waited(job.created_ms),
            });
            continue;
        }
        let mut best: Option<(NodePlan, usize, WNode)> = None;
        let mut refusals = Vec::new();
        for (n, node) in wnodes.iter().enumerate() {
            let mut trial = node.clone();
            match with_changes(&mut trial, &job.wants, policy) {
                Ok(plan) => {
                    if best.as_ref().is_none_or(|(b, ..)| plan.key < b.key) {
                        best = Some((plan, n, trial));
                    }
                }
                Err(why) => refusals.push(NodeRefusal { node: node.name.clone(), why }),
            }
        }
        match best {
            Some((NodePlan { devices, touched, .. }, n, trial)) => {
                wnodes[n] = trial;
                for g in touched {
                    new_for.entry((n, g)).or_default().push(job.pod.clone());
                }
                let node = wnodes[n].name.clone();
                placed
                    .push((j, PodPlacement { pod: job.pod.clone(), node, devices, waited_ms: waited(job.created_ms) }));
            }
            None => unplaceable.push(Unplaceable {
                pod: job.pod.clone(),
                reason: UnplaceableReason::NoNode { refusals },
                waited_ms: waited(job.created_ms),
            }),
        }
    }

    // Each changed GPU's change, planned from its real layout by the planner.
    let mut changes = Vec::new();
    let mut refused: BTreeMap<(String, u32), String> = BTreeMap::new();
    for (n, node) in wnodes.iter().enumerate() {
        for (g, gpu) in node.gpus.iter().enumerate() {
            if !gpu.changed() {
                continue;
            }
            let WKind::Mig { model, original, target, disable, .. } = &gpu.kind else { continue };
            match reconfigure(model, original, &Wanted::Layout(target.clone())) {
                Ok(plan) => changes.push(NodeLayoutChange {
                    node: node.name.clone(),
                    gpu: gpu.index,
                    model: model.name.clone(),
                    disable_mig: *disable,
                    needs_gpu_reset: *disable && model.mig_enable_requires_gpu_reset == Some(true),
                    creates: plan
                        .steps
                        .iter()
                        .filter_map(|s| match s {
                            Step::Create { instance } => Some(*instance),
                            Step::Destroy { .. } => None,
                        })
                        .collect(),
                    destroys: plan
                        .steps
                        .iter()
                        .filter_map(|s| match s {
                            Step::Destroy { instance, .. } => Some(*instance),
                            Step::Create { .. } => None,
                        })
                        .collect(),
                    target: plan.target,
                    for_pods: new_for.get(&(n, g)).cloned().unwrap_or_default(),
                }),
                Err(e) => {
                    refused.insert((node.name.clone(), gpu.index), e.to_string());
                }
            }
        }
    }
    // A change the planner refused makes none of its devices: its pods cannot be placed.
    let mut kept = Vec::new();
    for (j, pl) in placed {
        let hit = pl
            .devices
            .iter()
            .find_map(|d| refused.get(&(pl.node.clone(), d.gpu)).filter(|_| d.created).map(|e| (d.gpu, e.clone())));
        match hit {
            Some((gpu, detail)) => unplaceable.push(Unplaceable {
                pod: pl.pod.clone(),
                reason: UnplaceableReason::PlannerRefused { node: pl.node.clone(), gpu, detail },
                waited_ms: waited(jobs[j].created_ms),
            }),
            None => kept.push(pl),
        }
    }
    changes.sort_by(|a, b| (&a.node, a.gpu).cmp(&(&b.node, b.gpu)));
    unplaceable.sort_by(|a, b| a.pod.cmp(&b.pod));
    Decision { changes, placed: kept, unplaceable, ignored }
}

/// The nodes as the decision works on them, sorted by name; what cannot be used goes to `ignored`.
fn read_nodes(nodes: &[NodeState], ignored: &mut Vec<IgnoredGpu>) -> Vec<WNode> {
    let mut sorted: Vec<&NodeState> = nodes.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out: Vec<WNode> = Vec::new();
    for node in sorted {
        if out.last().is_some_and(|n| n.name == node.name) {
            ignored.push(IgnoredGpu {
                node: node.name.clone(),
                gpu: None,
                reason: "a second node of the same name: only the first is used".into(),
            });
            continue;
        }
        let fixed_by = node.mig_config.as_ref().filter(|c| !c.allows_on_demand).map(|c| c.name.clone());
        let mut gpus: Vec<WGpu> = Vec::new();
        let mut sorted_gpus: Vec<&NodeGpu> = node.gpus.iter().collect();
        sorted_gpus.sort_by_key(|g| g.index);
        for g in sorted_gpus {
            let ignore = |reason: String| IgnoredGpu { node: node.name.clone(), gpu: Some(g.index), reason };
            if gpus.last().is_some_and(|w| w.index == g.index) {
                ignored.push(ignore("a second GPU of the same index: only the first is used".into()));
                continue;
            }
            let usable = !g.unhealthy && !g.draining;
            let kind = match &g.mode {
                GpuMode::Whole { busy } => WKind::Whole { busy: *busy, claimed: false },
                GpuMode::Mig { instances } => {
                    let Ok(model) = catalog().model(&g.model) else {
                        ignored.push(ignore(format!("MIG is on but '{}' is not a catalog model", g.model)));
                        continue;
                    };
                    let Some(planner) = planner_for(model) else {
                        ignored.push(ignore(format!("no planner for {}", model.name)));
                        continue;
                    };
                    let target: Vec<Instance> = instances.iter().map(|c| c.instance).collect();
                    let violations = tessera_mig::validate(model, &target);
                    if let Some(v) = violations.first() {
                        ignored.push(ignore(format!("its layout is not valid on {}: {v}", model.name)));
                        continue;
                    }
                    WKind::Mig {
                        model,
                        planner,
                        original: instances.clone(),
                        held: instances.iter().filter(|c| c.busy).map(|c| c.instance).collect(),
                        target,
                        created: BTreeSet::new(),
                        disable: false,
                        claimed_any: false,
                    }
                }
            };
            gpus.push(WGpu { index: g.index, usable, kind });
        }
        out.push(WNode { name: node.name.clone(), fixed_by, gpus });
    }
    out
}

/// A pending pod's wanted devices, largest first, or why it cannot be helped.
fn read_pod(p: &PendingPod, most: u64) -> Result<Job, UnplaceableReason> {
    let mig_prefix = format!("{RESOURCE_PREFIX}/mig-");
    let vendor_prefix = format!("{RESOURCE_PREFIX}/");
    let whole = whole_resource();
    let mut counted: Vec<(Want, u32)> = Vec::new();
    for (resource, &count) in &p.requests {
        if count == 0 {
            continue;
        }
        let want = if *resource == whole {
            Want::Whole
        } else if resource.starts_with(&mig_prefix) {
            let want = Want::Mig(resource.clone());
            if device_size(&want).is_none() {
                return Err(UnplaceableReason::UnknownDevice { resource: resource.clone() });
            }
            want
        } else if resource.starts_with(&vendor_prefix) {
            return Err(UnplaceableReason::UnsupportedResource { resource: resource.clone() });
        } else {
            continue;
        };
        counted.push((want, count));
    }
    let asked: u64 = counted.iter().map(|(_, c)| u64::from(*c)).sum();
    if asked == 0 {
        return Err(UnplaceableReason::NoDeviceRequest);
    }
    if asked > most {
        return Err(UnplaceableReason::TooManyDevices { asked, most });
    }
    let mut wants: Vec<(Want, (u32, u64))> = Vec::new();
    for (want, count) in counted {
        let size = device_size(&want).unwrap_or((0, 0));
        for _ in 0..count {
            wants.push((want.clone(), size));
        }
    }
    wants.sort_by(|a, b| (Reverse(a.1), &a.0).cmp(&(Reverse(b.1), &b.0)));
    let size = wants
        .iter()
        .fold((0u32, 0u64, wants.len()), |(c, m, n), (_, (wc, wm))| (c.saturating_add(*wc), m.saturating_add(*wm), n));
    Ok(Job { pod: p.pod_ref(), created_ms: p.created_ms, wants: wants.into_iter().map(|(w, _)| w).collect(), size })
}

/// Claim a free device for `want` on the node, if one exists.
fn claim_free(node: &mut WNode, want: &Want) -> Option<DeviceChoice> {
    for gpu in node.gpus.iter_mut().filter(|g| g.usable) {
        match (&mut gpu.kind, want) {
            (WKind::Whole { busy: false, claimed }, Want::Whole) if !*claimed => {
                *claimed = true;
                return Some(DeviceChoice {
                    resource: whole_resource(),
                    gpu: gpu.index,
                    instance: None,
                    created: false,
                });
            }
            (WKind::Mig { model, target, held, disable: false, claimed_any, .. }, Want::Mig(resource)) => {
                let free = target
                    .iter()
                    .find(|i| !held.contains(i) && instance_resource(model, i).as_ref() == Some(resource))
                    .copied();
                if let Some(i) = free {
                    held.insert(i);
                    *claimed_any = true;
                    return Some(DeviceChoice {
                        resource: resource.clone(),
                        gpu: gpu.index,
                        instance: Some(i),
                        created: false,
                    });
                }
            }
            _ => {}
        }
    }
    None
}

/// All of `wants` from the node's free devices, or None (the node is then left half-claimed:
/// callers work on a copy).
fn free_only(node: &mut WNode, wants: &[Want]) -> Option<Vec<DeviceChoice>> {
    wants.iter().map(|w| claim_free(node, w)).collect()
}

/// How a node would hold one pod.
#[derive(Debug, Clone)]
struct NodePlan {
    /// New devices, compute slices stranded, instances destroyed, usable room left: lower is better.
    key: (u32, u32, u32, u32),
    devices: Vec<DeviceChoice>,
    /// Positions of the GPUs changed for the pod.
    touched: Vec<usize>,
}

/// All of `wants` on the node, from free devices first and changes for the rest.
fn with_changes(node: &mut WNode, wants: &[Want], policy: &Policy) -> Result<NodePlan, NodeRefusalKind> {
    if !node.gpus.iter().any(|g| g.usable) {
        return Err(NodeRefusalKind::NoUsableGpu);
    }
    let mut devices = Vec::new();
    let mut touched = Vec::new();
    let mut key = (0u32, 0u32, 0u32, 0u32);
    for want in wants {
        if let Some(d) = claim_free(node, want) {
            devices.push(d);
            continue;
        }
        let opt = best_option(node, want, policy)?;
        let gpu = &mut node.gpus[opt.gpu];
        let index = gpu.index;
        if let WKind::Mig { target, held, created, disable, .. } = &mut gpu.kind {
            *target = opt.target.clone();
            *disable = opt.disable;
            if let Some(i) = opt.new {
                held.insert(i);
                created.insert(i);
            }
        }
        key = (key.0 + 1, key.1 + opt.stranded, key.2 + opt.destroyed, key.3 + opt.room_after);
        if !touched.contains(&opt.gpu) {
            touched.push(opt.gpu);
        }
        devices.push(DeviceChoice { resource: want.resource(), gpu: index, instance: opt.new, created: true });
    }
    Ok(NodePlan { key, devices, touched })
}

/// The best change on the node that makes one device of `want`.
fn best_option(node: &WNode, want: &Want, policy: &Policy) -> Result<Choice, NodeRefusalKind> {
    let resource = want.resource();
    let usable: Vec<(usize, &WGpu)> = node.gpus.iter().enumerate().filter(|(_, g)| g.usable).collect();
    match want {
        Want::Mig(r) => {
            let offering: Vec<(usize, &WGpu, WantedInstance)> = usable
                .iter()
                .filter_map(|&(i, g)| match &g.kind {
                    WKind::Mig { model, disable: false, .. } => wanted_for_resource(model, r).map(|w| (i, g, w)),
                    _ => None,
                })
                .collect();
            if offering.is_empty() {
                return Err(NodeRefusalKind::NoSuchDevice { resource });
            }
            if let Some(config) = &node.fixed_by {
                return Err(NodeRefusalKind::ConfigFixed { resource, config: config.clone() });
            }
            let mut best: Option<Choice> = None;
            let mut details = Vec::new();
            for (i, g, w) in offering {
                match mig_option(i, g, w) {
                    Ok(o) => {
                        if best.as_ref().is_none_or(|b| o.key() < b.key()) {
                            best = Some(o);
                        }
                    }
                    Err(e) => details.push(format!("GPU {}: {e}", g.index)),
                }
            }
            best.ok_or(NodeRefusalKind::NoRoom { resource, detail: details.join("; ") })
        }
        Want::Whole => {
            let idle: Vec<(usize, &WGpu)> = usable
                .iter()
                .copied()
                .filter(|(_, g)| match &g.kind {
                    WKind::Mig { original, held, claimed_any, disable, .. } => {
                        !*disable
                            && !*claimed_any
                            && !g.changed()
                            && held.is_empty()
                            && original.iter().all(|c| !c.busy)
                    }
                    WKind::Whole { .. } => false,
                })
                .collect();
            if idle.is_empty() {
                return Err(NodeRefusalKind::NoIdleGpu);
            }
            if let Some(config) = &node.fixed_by {
                return Err(NodeRefusalKind::ConfigFixed { resource, config: config.clone() });
            }
            if !policy.allow_mig_mode_changes {
                let gpus = idle.iter().map(|(_, g)| g.index.to_string()).collect::<Vec<_>>().join(", ");
                return Err(NodeRefusalKind::MigModeChangeOff { gpus });
            }
            // The GPU with the fewest instances to destroy, then the lowest index.
            idle.iter()
                .map(|&(i, g)| {
                    let destroyed = match &g.kind {
                        WKind::Mig { original, .. } => u32::try_from(original.len()).unwrap_or(u32::MAX),
                        WKind::Whole { .. } => 0,
                    };
                    Choice {
                        gpu: i,
                        stranded: 0,
                        destroyed,
                        room_after: 0,
                        target: Vec::new(),
                        new: None,
                        disable: true,
                    }
                })
                .min_by_key(Choice::key)
                .ok_or(NodeRefusalKind::NoIdleGpu)
        }
    }
}

/// The best way to make one instance of `w` on a MIG GPU: next to what must stay, keeping each
/// subset of the idle instances nobody counts on, ranked by stranded slices, then destroys.
fn mig_option(i: usize, g: &WGpu, w: WantedInstance) -> Result<Choice, String> {
    let WKind::Mig { model, planner, target, held, .. } = &g.kind else {
        return Err("MIG is off".into());
    };
    let fixed: Vec<Instance> = target.iter().copied().filter(|t| held.contains(t)).collect();
    let optional: Vec<Instance> = target.iter().copied().filter(|t| !held.contains(t)).collect();
    let room_before = usable(planner, held);
    let taken = model.profile_by_id(w.profile_id).map_or(0, |p| u32::from(p.compute_slices));
    let mut rooms: BTreeMap<Instance, u32> = BTreeMap::new();
    let mut best: Option<Choice> = None;
    let mut last_error = String::new();
    for keep in (0..=optional.len()).rev() {
        for subset in subsets_of_size(optional.len(), keep) {
            let mut existing = fixed.clone();
            existing.extend(subset.iter().map(|&k| optional[k]));
            let placement = match place(model, &[w], &existing) {
                Ok(p) => p,
                Err(e) => {
                    last_error = e.to_string();
                    continue;
                }
            };
            let Some(&new) = placement.placed.first() else { continue };
            let room_after = *rooms.entry(new).or_insert_with(|| {
                let mut after = held.clone();
                after.insert(new);
                usable(planner, &after)
            });
            let o = Choice {
                gpu: i,
                stranded: room_before.saturating_sub(room_after).saturating_sub(taken),
                destroyed: u32::try_from(optional.len() - keep).unwrap_or(u32::MAX),
                room_after,
                target: placement.layout,
                new: Some(new),
                disable: false,
            };
            if best.as_ref().is_none_or(|b| o.key() < b.key()) {
                best = Some(o);
            }
        }
        // Nothing destroys fewer than this and strands nothing: no smaller subset can beat it.
        if best.as_ref().is_some_and(|b| b.stranded == 0) {
            break;
        }
    }
    best.ok_or(last_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(requests: &[(&str, u32)]) -> PendingPod {
        PendingPod {
            namespace: "ns".into(),
            name: "p".into(),
            uid: "u".into(),
            created_ms: 0,
            requests: requests.iter().map(|(r, c)| ((*r).to_string(), *c)).collect(),
        }
    }

    #[test]
    fn a_pod_wants_its_devices_largest_first_and_ignores_other_resources() {
        let job = read_pod(
            &pending(&[
                ("cpu", 8),
                ("nvidia.com/mig-1g.10gb", 2),
                ("nvidia.com/mig-3g.40gb", 1),
                ("nvidia.com/mig-2g.20gb", 0),
            ]),
            8,
        )
        .unwrap();
        let names: Vec<String> = job.wants.iter().map(Want::resource).collect();
        assert_eq!(names, ["nvidia.com/mig-3g.40gb", "nvidia.com/mig-1g.10gb", "nvidia.com/mig-1g.10gb"]);
        assert_eq!(job.size, (5, 60, 3));
        let whole = read_pod(&pending(&[("nvidia.com/gpu", 1)]), 8).unwrap();
        assert!(whole.size > job.size, "a whole GPU is larger than any MIG request");
    }

    #[test]
    fn a_new_instance_keeps_idle_ones_when_that_strands_nothing() {
        let model = catalog().model("H100-80GB").unwrap();
        let one = model.profile("1g.10gb").unwrap().id;
        let instances: Vec<CurrentInstance> = [0u8, 1]
            .iter()
            .map(|&s| CurrentInstance { instance: Instance::new(one, s), busy: false, gpu_instance_id: None })
            .collect();
        let nodes = [NodeState {
            name: "n".into(),
            gpus: vec![NodeGpu {
                index: 0,
                model: model.name.clone(),
                mode: GpuMode::Mig { instances },
                unhealthy: false,
                draining: false,
            }],
            mig_config: None,
        }];
        let mut ignored = Vec::new();
        let w = read_nodes(&nodes, &mut ignored);
        assert!(ignored.is_empty());
        let three = WantedInstance::new(model.profile("3g.40gb").unwrap().id);
        let c = mig_option(0, &w[0].gpus[0], three).unwrap();
        assert_eq!((c.stranded, c.destroyed), (0, 0));
        assert_eq!(c.new.map(|i| i.start), Some(4));
    }
}
