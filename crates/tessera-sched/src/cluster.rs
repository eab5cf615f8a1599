//! What the scheduler sees of the node each round: every GPU with its model, health, host NUMA
//! node, MIG instances and who occupies them, the free CPUs and memory of every host NUMA node,
//! and the tenants with their weights and quotas.
//!
//! An instance with occupants is *busy*: it is never destroyed or moved, and only jobs with a
//! compatible sharing mode (MPS with MPS of the same user, time-slicing with time-slicing) may
//! join it, pinned holds only pinned ones and the scheduler's own jobs only its own
//! ([`Occupant::pinned`]).
//!
//! A GPU with MIG off is shown as one instance of its model's full profile at placement 0: the
//! whole GPU. It is never repartitioned, serves whole-GPU and memory/compute-sized requests
//! (never an explicit MIG profile), and its process sees `GPU-<uuid>`, not a MIG device.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tessera_mig::{GpuModel, Instance};

use crate::job::HostShare;
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

    /// Takes the CPUs and memory of `shares` (a slice's or a job's host shares, as a `Start`
    /// gives them) from the host nodes they name, as the view changes when a job starts. A share
    /// on a node this view does not have is ignored (a node is never invented). Returns the
    /// `(node, cpu)` pairs that were not free (taken twice: a broken invariant for the caller to
    /// report).
    pub fn take_host<'a>(&mut self, shares: impl IntoIterator<Item = &'a HostShare>) -> Vec<(u32, u32)> {
        let mut not_free = Vec::new();
        for share in shares {
            if let Some(h) = self.host.iter_mut().find(|h| h.node == share.node) {
                not_free.extend(h.take(&share.cpus, share.mem_mib).into_iter().map(|c| (share.node, c)));
            }
        }
        not_free
    }

    /// Gives the CPUs and memory of `shares` back to the host nodes they name, as the view
    /// changes when a job ends. A share on a node this view does not have is ignored.
    pub fn give_back_host<'a>(&mut self, shares: impl IntoIterator<Item = &'a HostShare>) {
        for share in shares {
            if let Some(h) = self.host.iter_mut().find(|h| h.node == share.node) {
                h.give_back(&share.cpus, share.mem_mib);
            }
        }
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

impl HostNuma {
    /// Takes `cpus` and `mem_mib` from what is free here (memory stops at 0). Returns the CPUs
    /// of `cpus` that were not free.
    pub fn take(&mut self, cpus: &[u32], mem_mib: u64) -> Vec<u32> {
        take_host_share(&mut self.free_cpus, &mut self.free_mem_mib, cpus, mem_mib)
    }

    /// Gives `cpus` (each once; the list stays ascending) and `mem_mib` back to what is free
    /// here.
    pub fn give_back(&mut self, cpus: &[u32], mem_mib: u64) {
        give_back_host_share(&mut self.free_cpus, &mut self.free_mem_mib, cpus, mem_mib);
    }
}

/// The one definition of taking a host share from a node's free CPUs and memory (the view's
/// [`HostNuma`] and the round's working state alike). Returns the CPUs that were not free.
pub(crate) fn take_host_share(free_cpus: &mut Vec<u32>, free_mem: &mut u64, cpus: &[u32], mem: u64) -> Vec<u32> {
    let mut not_free = Vec::new();
    for c in cpus {
        match free_cpus.iter().position(|x| x == c) {
            Some(p) => {
                free_cpus.remove(p);
            }
            None => not_free.push(*c),
        }
    }
    *free_mem = free_mem.saturating_sub(mem);
    not_free
}

/// The one definition of giving a host share back: CPUs not already free are added (the list
/// kept ascending), memory added (saturating).
pub(crate) fn give_back_host_share(free_cpus: &mut Vec<u32>, free_mem: &mut u64, cpus: &[u32], mem: u64) {
    let before = free_cpus.len();
    for c in cpus {
        if !free_cpus.contains(c) {
            free_cpus.push(*c);
        }
    }
    if free_cpus.len() != before {
        free_cpus.sort_unstable();
    }
    *free_mem = free_mem.saturating_add(mem);
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
        g.set_mig(false);
        g
    }

    /// Shows the GPU in the other MIG mode with nothing on it: MIG on with no instances, or MIG
    /// off as one idle whole-GPU instance (none for a model without a full profile).
    pub fn set_mig(&mut self, on: bool) {
        self.mig = on;
        self.instances = if on { Vec::new() } else { InstanceView::whole_gpu(self.model).into_iter().collect() };
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

    /// The idle instance that stands for a whole GPU with MIG off: the model's full profile at
    /// placement 0 (`None` for a model without one).
    pub fn whole_gpu(model: &GpuModel) -> Option<Self> {
        crate::request::full_profile(model).map(|p| InstanceView::idle(Instance::new(p.id, 0)))
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
    /// A pinned hold ([`crate::JobRequest::pin`]: a front door's, on instances another system
    /// gave away). Pinned and unpinned jobs never share an instance: the other system counts
    /// and advertises the instance's shares, so a job the scheduler placed there would take one
    /// it does not know of, and a pinned share would join a job it does not bound.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pinned: bool,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> ClusterView {
        ClusterView {
            host: vec![HostNuma { node: 0, free_cpus: vec![0, 1, 2, 3], free_mem_mib: 100 }],
            ..ClusterView::default()
        }
    }

    #[test]
    fn host_shares_are_taken_and_given_back_on_known_nodes_only() {
        let mut v = view();
        let shares =
            [HostShare { node: 0, cpus: vec![1, 3], mem_mib: 40 }, HostShare { node: 7, cpus: vec![9], mem_mib: 5 }];
        assert!(v.take_host(&shares).is_empty());
        assert_eq!(v.host, vec![HostNuma { node: 0, free_cpus: vec![0, 2], free_mem_mib: 60 }]);
        // Taken twice: reported, memory never below 0.
        let again = [HostShare { node: 0, cpus: vec![3, 0], mem_mib: 1000 }];
        assert_eq!(v.take_host(&again), vec![(0, 3)]);
        assert_eq!(v.host[0].free_mem_mib, 0);
        v.give_back_host(&again);
        v.give_back_host(&shares);
        v.give_back_host(&shares);
        // Each CPU once, ascending; node 7 never appears.
        assert_eq!(v.host, vec![HostNuma { node: 0, free_cpus: vec![0, 1, 2, 3], free_mem_mib: 1080 }]);
    }

    #[test]
    fn a_whole_gpu_is_its_full_profile_at_zero() {
        let m = tessera_mig::catalog().model("H100-80GB").unwrap();
        let g = GpuView::whole(3, m);
        assert!(!g.mig);
        assert_eq!(g.instances, InstanceView::whole_gpu(m).into_iter().collect::<Vec<_>>());
        assert_eq!(g.instances[0].instance.start, 0);
        let mut on = g.clone();
        on.set_mig(true);
        assert!(on.mig && on.instances.is_empty());
    }
}
