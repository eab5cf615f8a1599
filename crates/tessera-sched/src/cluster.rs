//! What the scheduler sees of the node each round: every GPU with its model, health, host NUMA
//! node, MIG instances and who occupies them, the free CPUs and memory of every host NUMA node,
//! and the tenants with their weights and quotas.
//!
//! An instance with occupants is *busy*: it is never destroyed or moved, and only jobs with a
//! compatible sharing mode (MPS with MPS, time-slicing with time-slicing) may join it.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tessera_mig::{GpuModel, Instance};

use crate::request::Sharing;

/// A job's id (from the store).
pub type JobId = u64;

/// The node as the scheduler sees it at the start of a round.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterView {
    pub gpus: Vec<GpuView>,
    /// Free CPUs and memory per host NUMA node (what running jobs do not hold).
    #[serde(default)]
    pub host: Vec<HostNuma>,
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
        GpuView { gpu, model, numa_node: None, healthy: true, reconfiguring: false, instances: Vec::new() }
    }
}

/// One MIG instance and the jobs on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceView {
    pub instance: Instance,
    #[serde(default)]
    pub occupants: Vec<Occupant>,
}

impl InstanceView {
    /// An idle instance.
    pub fn idle(instance: Instance) -> Self {
        InstanceView { instance, occupants: Vec::new() }
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
