//! The scheduler's inputs and outputs about jobs: a job waiting ([`QueuedJob`]) or holding its
//! slices ([`RunningJob`]), where each rank runs ([`RankStart`], made of [`SlicePlacement`]s),
//! and what a round decides ([`Decision`], with a [`PendingReason`] for every job that waits).
//!
//! These types are shared by everyone who drives the core: the daemon keeps them in its store
//! (a rank's slices, CPUs and memory are recorded exactly as decided), the simulator replays
//! them, and the tests read them.

use std::fmt;

use serde::{Deserialize, Serialize};
use tessera_mig::{Instance, ReconfigurePlan};

use crate::cluster::JobId;
use crate::request::JobRequest;

/// A job waiting to start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueuedJob {
    pub id: JobId,
    pub request: JobRequest,
    pub submitted_ms: u64,
    /// The uid the job runs as: an MPS share serves one user at a time.
    #[serde(default)]
    pub user: u32,
}

/// A job that holds its slices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunningJob {
    pub id: JobId,
    pub request: JobRequest,
    pub started_ms: u64,
    pub ranks: Vec<RankStart>,
    /// The uid the job runs as.
    #[serde(default)]
    pub user: u32,
}

impl RunningJob {
    /// Every slice of every rank.
    pub fn slices(&self) -> impl Iterator<Item = &SlicePlacement> {
        self.ranks.iter().flat_map(|r| r.slices.iter())
    }
}

/// What a slice takes from one host NUMA node: CPUs and memory.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostShare {
    pub node: u32,
    pub cpus: Vec<u32>,
    pub mem_mib: u64,
}

/// One slice of a rank: a MIG instance (or a whole GPU with MIG off, as its one full-size
/// instance), the host NUMA node to bind the rank's memory to (`None`: do not bind), and the
/// CPUs and memory it takes from each host NUMA node (normally one: the GPU's own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlicePlacement {
    pub gpu: u32,
    pub instance: Instance,
    pub numa_node: Option<u32>,
    #[serde(default)]
    pub host: Vec<HostShare>,
}

impl SlicePlacement {
    /// A slice with no host share.
    pub fn new(gpu: u32, instance: Instance) -> Self {
        SlicePlacement { gpu, instance, numa_node: None, host: Vec::new() }
    }

    /// The CPUs the slice brings, ascending.
    pub fn cpus(&self) -> Vec<u32> {
        let mut cpus: Vec<u32> = self.host.iter().flat_map(|h| h.cpus.iter().copied()).collect();
        cpus.sort_unstable();
        cpus
    }
}

/// Where one process (rank) of a job runs: its slices, in the order of the request (a list of
/// instances on one GPU, or `gpus_per_rank` whole GPUs), each with its share of the rank's CPUs
/// and memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RankStart {
    /// 0-based rank within the job.
    pub rank: u32,
    pub slices: Vec<SlicePlacement>,
}

impl RankStart {
    /// The rank's CPUs: those of all its slices, ascending.
    pub fn cpus(&self) -> Vec<u32> {
        let mut cpus: Vec<u32> = self.slices.iter().flat_map(SlicePlacement::cpus).collect();
        cpus.sort_unstable();
        cpus.dedup();
        cpus
    }

    /// The host NUMA node to bind the rank's memory to: the node of its slices when they all
    /// share one, `None` otherwise (or when unknown).
    pub fn numa_node(&self) -> Option<u32> {
        let first = self.slices.first()?.numa_node?;
        self.slices.iter().all(|s| s.numa_node == Some(first)).then_some(first)
    }

    /// Host memory the rank takes, in MiB (the daemon's memory limit for it).
    pub fn mem_mib(&self) -> u64 {
        self.slices.iter().flat_map(|s| s.host.iter()).map(|h| h.mem_mib).sum()
    }

    /// The GPUs the rank uses, in slice order, without repeats.
    pub fn gpus(&self) -> Vec<u32> {
        let mut out: Vec<u32> = Vec::new();
        for s in &self.slices {
            if !out.contains(&s.gpu) {
                out.push(s.gpu);
            }
        }
        out
    }
}

/// Why a job waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PendingReason {
    /// Not enough free GPU slices (or GPUs of the kind it needs).
    Capacity,
    /// The tenant's quota would be exceeded.
    Quota,
    /// Enough slices are free, but no legal placement of the profile exists among them.
    Fragmentation,
    /// A reconfiguration is in progress (for this job, or on a GPU it could use).
    Reconfiguring,
    /// The room it fits is held for a bigger job, and it cannot finish before that one starts.
    Reserved,
    /// Higher-priority work took the room, or lower-priority work is being preempted for it.
    Priority,
    /// Only unhealthy GPUs or instances could host it.
    Health,
    /// A GPU has room, but its host NUMA node (or the host) lacks free CPUs.
    HostCpus,
    /// A GPU has room, but its host NUMA node (or the host) lacks free memory.
    HostMemory,
}

impl PendingReason {
    /// Every reason, for tables and documentation.
    pub const ALL: [PendingReason; 9] = [
        PendingReason::Capacity,
        PendingReason::Quota,
        PendingReason::Fragmentation,
        PendingReason::Reconfiguring,
        PendingReason::Reserved,
        PendingReason::Priority,
        PendingReason::Health,
        PendingReason::HostCpus,
        PendingReason::HostMemory,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            PendingReason::Capacity => "capacity",
            PendingReason::Quota => "quota",
            PendingReason::Fragmentation => "fragmentation",
            PendingReason::Reconfiguring => "reconfiguring",
            PendingReason::Reserved => "reserved",
            PendingReason::Priority => "priority",
            PendingReason::Health => "health",
            PendingReason::HostCpus => "host_cpus",
            PendingReason::HostMemory => "host_memory",
        }
    }
}

impl fmt::Display for PendingReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the daemon (or the simulator) should do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Start the job now: each rank on its slices, with its CPUs and memory.
    Start { job: JobId, ranks: Vec<RankStart> },
    /// Reconfigure a GPU (only idle instances are destroyed) so that `for_job` (and perhaps
    /// other jobs waiting with reason `reconfiguring` this round) can start.
    Reconfigure { gpu: u32, plan: ReconfigurePlan, for_job: JobId },
    /// Turn an idle GPU's MIG mode on or off so that `for_job` can start
    /// (`SchedulerConfig::mig_mode_switching`).
    SetMigMode { gpu: u32, enabled: bool, for_job: JobId },
    /// Stop `job` to make room for the higher-priority `for_job`.
    Preempt { job: JobId, for_job: JobId },
    /// The job waits.
    Pending { job: JobId, reason: PendingReason, detail: String },
}

impl Decision {
    /// The queued job this decision answers (`for_job` for reconfigure, mode switch and preempt).
    pub fn job(&self) -> JobId {
        match self {
            Decision::Start { job, .. } | Decision::Pending { job, .. } => *job,
            Decision::Reconfigure { for_job, .. }
            | Decision::SetMigMode { for_job, .. }
            | Decision::Preempt { for_job, .. } => *for_job,
        }
    }
}
