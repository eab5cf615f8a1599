//! The API's requests and replies, as typed structs shared by the engine (which builds them),
//! the HTTP layer (which sends them), the client and the CLI (which read them). Nothing on
//! either side reads a reply by string key. Every request body refuses unknown fields.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
pub use tessera_sched::JobRequest;
pub use tessera_store::{ExternalWork, JobState};

pub use crate::http::{ErrorBody, ErrorDetail};

/// `POST /v1/jobs`: a job of processes Tessera runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// Program and arguments, e.g. `["python", "train.py"]`.
    pub command: Vec<String>,
    /// Environment for the job (names as `execve` takes them: no `=`, no NUL).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory (absolute, existing, searchable by the user).
    pub cwd: String,
    /// What the job needs: GPU, ranks, sharing, CPUs, memory, tenant, priority, runtime
    /// estimate and limit, whether it may be requeued.
    pub resources: JobRequest,
    /// The signal a preempted job gets before SIGKILL (`SIGTERM` by default), by name
    /// (`SIGUSR1`, `USR1`) or number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preempt_signal: Option<String>,
}

/// The reply to a submission (201).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitReply {
    pub id: u64,
}

/// `GET /v1/jobs`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct JobQuery {
    /// Only jobs in these states (every state when empty).
    pub states: Vec<JobState>,
    /// Every user's jobs (admins only).
    pub all: bool,
}

/// A list of jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobList {
    pub jobs: Vec<JobView>,
}

/// One job as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    pub id: u64,
    pub user: String,
    pub uid: u32,
    pub tenant: String,
    pub priority: i32,
    pub state: JobState,
    /// Why it is in its state; while queued, why it waits (`capacity: …`, `host_memory: …`).
    pub reason: String,
    /// Processes Tessera runs: the command line. `None` for external work.
    pub command: Option<Vec<String>>,
    pub cwd: Option<String>,
    /// Work another front door runs (a pod, a Slurm job).
    pub external: Option<ExternalWork>,
    pub submitted_ms: u64,
    pub started_ms: Option<u64>,
    pub ended_ms: Option<u64>,
    /// What it asked for.
    pub resources: JobRequest,
    /// How many times it was started (above 1: it was requeued).
    pub runs: u32,
    /// Where its ranks run (its current or last run).
    pub ranks: Vec<RankView>,
    pub exit: Option<ExitView>,
    /// Every state change, oldest first (`GET /v1/jobs/{id}` only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<EventView>,
}

impl JobView {
    /// Whether the job has ended.
    pub fn ended(&self) -> bool {
        self.state.is_terminal()
    }
}

/// One rank: its devices, CPUs, NUMA node and memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RankView {
    pub rank: u32,
    /// What its process sees in `CUDA_VISIBLE_DEVICES`.
    pub devices: Vec<String>,
    /// Its CPUs, in the kernel's list format (`0-3,8`); `None` when not bound.
    pub cpus: Option<String>,
    /// The host NUMA node its memory is bound to.
    pub numa_node: Option<u32>,
    pub mem_mib: u64,
    pub slices: Vec<SliceView>,
}

/// One slice of a rank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceView {
    pub gpu: u32,
    pub gpu_uuid: String,
    /// MIG on: the instance's profile; MIG off: the model's full profile (the whole GPU).
    pub profile: Option<String>,
    pub profile_id: u32,
    pub start: u8,
    /// `false`: a GPU with MIG off, used whole.
    pub mig: bool,
    pub gpu_instance_id: Option<u32>,
    pub mig_uuid: Option<String>,
    pub exclusive: bool,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitView {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub failed_rank: Option<u32>,
    pub detail: String,
}

/// One state change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventView {
    pub from: JobState,
    pub to: JobState,
    pub reason: String,
    pub at_ms: u64,
}

/// The reply to a cancel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelReply {
    pub id: u64,
    pub state: CancelState,
}

/// What a cancel did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelState {
    /// It had not started: it is cancelled now.
    Cancelled,
    /// Its ranks are being stopped; it ends `cancelled` once they are gone.
    Cancelling,
}

impl std::fmt::Display for CancelState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CancelState::Cancelled => "cancelled",
            CancelState::Cancelling => "cancelling",
        })
    }
}

/// Which output stream of a rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    #[default]
    Stdout,
    Stderr,
}

impl Stream {
    /// As the API's `stream` parameter writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

impl std::str::FromStr for Stream {
    type Err = String;

    fn from_str(s: &str) -> Result<Stream, String> {
        [Stream::Stdout, Stream::Stderr]
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| format!("'{s}': use stdout or stderr"))
    }
}

/// Bytes of a rank's log (`GET /v1/jobs/{id}/logs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogChunk {
    /// The bytes, as UTF-8 (invalid sequences replaced).
    pub data: String,
    /// Ask from here next time.
    pub next_offset: u64,
    /// The job has ended: no more bytes will come once `data` is empty.
    pub job_ended: bool,
}

/// The node's GPUs (`GET /v1/gpus`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuList {
    /// `nvml` or `sim`.
    pub backend: String,
    pub gpus: Vec<GpuInfo>,
}

/// One GPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuInfo {
    pub index: u32,
    pub name: String,
    pub uuid: String,
    /// The catalog model, when known.
    pub model: Option<String>,
    pub numa_node: Option<u32>,
    /// MIG mode in force.
    pub mig: bool,
    /// Why no new work goes to it, when an admin drained it.
    pub drained: Option<DrainView>,
    /// `healthy`, `degraded: …` or `unhealthy: …`.
    pub health: String,
    pub instances: Vec<InstanceInfo>,
}

/// One GPU instance (or, MIG off, the whole GPU) and the jobs on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    pub gpu_instance_id: Option<u32>,
    pub profile: String,
    pub profile_id: u32,
    pub start: u8,
    pub size: u8,
    pub jobs: Vec<u64>,
    pub mig_uuid: Option<String>,
    pub healthy: bool,
}

/// A drain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainView {
    pub by: String,
    pub reason: String,
    pub at_ms: u64,
}

/// `POST /v1/gpus/{gpu}/drain` (the body is optional).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainRequest {
    #[serde(default)]
    pub reason: String,
}

/// The reply to a drain or undrain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainReply {
    pub gpu: u32,
    pub drained: bool,
}

/// The most instances one layout request may list (no GPU has more than 16 placement units).
pub const MAX_LAYOUT_ENTRIES: usize = 32;

/// `POST /v1/gpus/{gpu}/layout`: a MIG layout change, for admins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutRequest {
    /// The instances the GPU should have: `3g.40gb` (wherever it fits best; matching instances
    /// are kept) or `3g.40gb@4` (at that placement; then every entry gives one), or a compute
    /// split `1c.3g.40gb`. An empty list removes every idle instance. At most
    /// [`MAX_LAYOUT_ENTRIES`].
    pub instances: Vec<String>,
    /// Only plan: say what would change, change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// The reply to a layout change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutReply {
    pub gpu: u32,
    pub dry_run: bool,
    /// `destroy 2g.20gb@4`, `create 1g.10gb@6`, …
    pub steps: Vec<String>,
    /// The layout after the change.
    pub layout: Vec<String>,
    pub changed: bool,
}

/// Node health (`GET /v1/health`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReply {
    pub backend: String,
    /// Jobs by state.
    pub jobs: BTreeMap<String, u64>,
    pub last_round_ms: u64,
    /// Per GPU: health, its instances' health, the last Xid events, drains.
    pub gpus: Vec<GpuHealthView>,
    /// What isolation this machine gives jobs (cgroup v1/v2 and its controllers).
    pub isolation: String,
}

/// One GPU's health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuHealthView {
    pub index: u32,
    pub uuid: Option<String>,
    /// The health tracker's verdict (`state`: healthy, degraded, unhealthy; with the reason,
    /// since when and what it waits for).
    pub health: tessera_gpu::health::Health,
    pub instances: Vec<tessera_gpu::health::InstanceHealthReport>,
    pub events: Vec<tessera_gpu::health::RecordedEvent>,
    pub last_cleared: Option<tessera_gpu::health::Cleared>,
    pub drained: Option<DrainView>,
}

/// `POST /v1/gpus/{gpu}/health/clear`: an admin says a GPU was reset or repaired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthClearReply {
    pub gpu: u32,
    /// The GPU's health after the clear (a fault clears at the next successful probe).
    pub health: tessera_gpu::health::Health,
}
