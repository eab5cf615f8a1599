//! What the scheduler sees of the node each round: every GPU with its model, health, host NUMA
//! node, MIG instances and who occupies them, the free CPUs and memory of every host NUMA node,
//! and the tenants with their weights and quotas.
//!
//! An instance with occupants is *busy*: it is never destroyed or moved, and only jobs with a
//! compatible sharing mode (MPS with MPS of the same user, time-slicing with time-slicing) may
//! join it.
//!
//! A GPU with MIG off is shown as one instance of its model's full profile at placement 0: the
//! whole GPU. It is never repartitioned, serves whole-GPU and memory/compute-sized requests
//! (never an explicit MIG profile), and its process sees `GPU-<uuid>`, not a MIG device.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tessera_mig::{GpuModel, Instance};

use crate::request::Sharing;

/// A job's id (from the store).
pub type JobId = u64;

/// The node as the scheduler sees it at the start of a round.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterView {
    pub gpus: Vec<GpuView>,
    /// Free CPUs and memory per host NUMA node (what running jobs do not hold).
    #[serde(default)]
    pub host: Vec<HostNuma>,
    /// How many MIG devices one process may use, by the driver: 64 from R570 on (one compute
    /// instance per GPU instance, several GPU instances), 1 before (and then a process that
    /// sees a MIG device sees no GPU with MIG off). See `mig-hardware.md`, "UUIDs and CUDA
    /// enumeration".
    #[serde(default = "default_mig_per_process")]
    pub max_mig_devices_per_process: u32,
}

/// MIG devices one process may use from driver R570 on.
pub const MIG_DEVICES_PER_PROCESS_R570: u32 = 64;

fn default_mig_per_process() -> u32 {
    MIG_DEVICES_PER_PROCESS_R570
}

impl Default for ClusterView {
    fn default() -> Self {
        ClusterView { gpus: Vec::new(), host: Vec::new(), max_mig_devices_per_process: MIG_DEVICES_PER_PROCESS_R570 }
    }
}

impl ClusterView {
    /// The GPU with this index.
    pub fn gpu(&self, gpu: u32) -> Option<&GpuView> {
        self.gpus.iter().find(|g| g.gpu == gpu)
    }
}

/// Free resources of one host NUMA node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostNuma {
    pub node: u32,
    pub free_cpus: Vec<u32>,
    pub free_mem_mib: u64,
}

fn model_name<S: Serializer>(model: &&'static GpuModel, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&model.name)
}

fn model_by_name<'de, D: Deserializer<'de>>(d: D) -> Result<&'static GpuModel, D::Error> {
    let name = String::deserialize(d)?;
    tessera_mig::catalog().model(&name).map_err(serde::de::Error::custom)
}

/// One GPU.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuView {
    /// The GPU's index on the node.
    pub gpu: u32,
    /// Its model (in JSON, a catalog model's name).
    #[serde(serialize_with = "model_name", deserialize_with = "model_by_name")]
    pub model: &'static GpuModel,
    /// The host NUMA node it is attached to, when known.
    #[serde(default)]
    pub numa_node: Option<u32>,
    /// Unhealthy GPUs are not used.
    #[serde(default = "yes")]
    pub healthy: bool,
    /// Why it is unhealthy (an Xid and what it waits for), for pending reasons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_note: Option<String>,
    /// An admin drained it: no new work.
    #[serde(default)]
    pub drained: bool,
    /// MIG is on. Off: `instances` is the whole GPU (the full profile at 0), never reshaped.
    #[serde(default = "yes")]
    pub mig: bool,
    /// The GPU can switch MIG on (for `mig_mode_switching`).
    #[serde(default = "yes")]
    pub mig_capable: bool,
    /// A reconfiguration is being applied: nothing on this GPU is used until it is done.
    #[serde(default)]
    pub reconfiguring: bool,
    #[serde(default)]
    pub instances: Vec<InstanceView>,
}

fn yes() -> bool {
    true
}

impl GpuView {
    /// A healthy GPU with no instances and an unknown host NUMA node.
    pub fn new(gpu: u32, model: &'static GpuModel) -> Self {
        GpuView {
            gpu,
            model,
            numa_node: None,
            healthy: true,
            health_note: None,
            drained: false,
            mig: true,
            mig_capable: true,
            reconfiguring: false,
            instances: Vec::new(),
        }
    }

    /// A healthy GPU with MIG off: one idle instance of the model's full profile, the whole GPU.
    pub fn whole(gpu: u32, model: &'static GpuModel) -> Self {
        let mut g = GpuView::new(gpu, model);
        g.mig = false;
        if let Some(p) = crate::request::full_profile(model) {
            g.instances = vec![InstanceView::idle(Instance::new(p.id, 0))];
        }
        g
    }
}

/// One MIG instance and the jobs on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceView {
    pub instance: Instance,
    #[serde(default)]
    pub occupants: Vec<Occupant>,
    /// An unhealthy instance (a contained Xid) gets no new work.
    #[serde(default = "yes")]
    pub healthy: bool,
}

impl InstanceView {
    /// An idle instance.
    pub fn idle(instance: Instance) -> Self {
        InstanceView { instance, occupants: Vec::new(), healthy: true }
    }

    /// Whether any job is on it.
    pub fn is_busy(&self) -> bool {
        !self.occupants.is_empty()
    }
}

/// A job on an instance and how it shares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Occupant {
    pub job: JobId,
    pub sharing: Sharing,
    /// The uid the job runs as (an MPS share serves one user at a time).
    #[serde(default)]
    pub user: u32,
}

/// A tenant: a weight for fair share and an optional quota.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tenant {
    pub name: String,
    /// Relative share (above 0): a tenant of weight 3 gets three times the slice-time of one of
    /// weight 1 when both have work waiting.
    pub weight: f64,
    #[serde(default)]
    pub quota: Option<SliceQuota>,
}

/// The most a tenant's running jobs may hold at once, in slices of the instances they use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SliceQuota {
    pub compute_slices: u32,
    pub memory_slices: u32,
}
