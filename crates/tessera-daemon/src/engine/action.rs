//! The one seam through which work and questions enter the engine: a [`Caller`] and an
//! [`Action`] in, a [`Reply`] or an [`crate::EngineError`] out. Every front door goes through
//! it: the HTTP API (`api.rs`), and the Kubernetes and Slurm front doors to come, which submit
//! [`Action::SubmitWork`] with [`Work::External`] (the pod or Slurm job runs the processes;
//! Tessera allocates and releases the slices) and end it with [`Action::Release`].

use tessera_mig::{Instance, Wanted};
use tessera_store::{ExitInfo, Work};

use crate::wire::{
    CancelReply, DrainReply, DrainRequest, DryRunReply, EventQuery, GpuList, HealthClearReply, HealthReply, JobList,
    JobQuery, JobRequest, JobView, LayoutReply, LayoutRequest, LogChunk, LogQuery, MetricsData, NodeEventList,
    SubmitReply, SubmitRequest,
};

/// Which front door a caller came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Door {
    /// The Unix socket: peer credentials say who.
    Socket,
    /// TCP with a bearer token: the token's user.
    Tcp,
    /// In-process front doors (Kubernetes, Slurm) and tests.
    Internal,
}

/// Who is calling: a local user (by NSS), their tenant, whether they are an admin.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub user: String,
    pub tenant: String,
    /// May change MIG layouts, drain GPUs, clear health, see every job, exceed the priority
    /// ceiling.
    pub admin: bool,
    pub door: Door,
}

/// Everything the engine can be asked to do. Each variant says who may do it.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Queue processes for the caller (the API's submission).
    Submit(SubmitRequest),
    /// What a submission would get now, queueing nothing (admission, then one scheduling
    /// decision on a copy of the scheduler); anyone may ask.
    DryRun(SubmitRequest),
    /// Queue work for the caller from any front door (processes or external work).
    SubmitWork { request: JobRequest, work: Work },
    /// The caller's jobs (every job for admins, with `all`).
    ListJobs(JobQuery),
    /// One job, if the caller owns it (admins: any).
    GetJob { id: u64 },
    /// Cancel a job the caller owns.
    Cancel { id: u64 },
    /// Admins: queue pinned external work for the caller, first making each pinned instance
    /// that does not exist at its placement (the Kubernetes scheduler chose it from the DRA
    /// devices), through the reconfiguration journal, in the same step: no round runs between
    /// the instance made and the job queued, and a round decides pinned jobs first. A pinned
    /// instance that exists is taken as it is (a retry finds what an earlier try made).
    SubmitMaking { request: JobRequest, work: Work },
    /// Admins: destroy one idle instance through the reconfiguration journal (a front door
    /// giving back what it made); one that is not there is already gone, and a busy one is
    /// refused, naming who holds it.
    DestroyIdle { gpu: u32, instance: Instance },
    /// External work ended (the front door that submitted it says how).
    Release { id: u64, exit: ExitInfo, succeeded: bool },
    /// A front door learned whom its live external work is for and names it so (`key`; the
    /// door stays): the kubelet lists the pod only after `Allocate` returned.
    NameWork { id: u64, key: String },
    /// A job's output, in the order it was written, from a cursor.
    Logs { id: u64, query: LogQuery },
    /// The job as it is now; the async side repeats it until the job ends or time runs out.
    Wait { id: u64, timeout_ms: u64 },
    /// The node's GPUs, instances and which job runs where.
    Gpus,
    /// Admins: stop (or resume) placing new work on a GPU.
    Drain { gpu: u32, drain: bool, request: DrainRequest },
    /// Admins: change a GPU's MIG layout; busy instances are never touched.
    Layout { gpu: u32, request: LayoutRequest },
    /// Admins: change a GPU's MIG layout to one a front door holds typed (the Kubernetes node
    /// agent's `nvidia.com/mig.config` and the controller's desired layouts); as [`Action::Layout`].
    Reach { gpu: u32, wanted: Wanted },
    /// Node health.
    Health,
    /// What `GET /metrics` shows (anyone: the same as `Gpus`, and job counts).
    Metrics,
    /// What happened lately, newest first: the caller's jobs (an admin's: every job) as
    /// `ListJobs` would show them, and every GPU's layout changes, Xid events and drains.
    Events(EventQuery),
    /// Admins: a GPU was reset or repaired; its faults clear at the next successful probe.
    HealthClear { gpu: u32 },
}

impl Action {
    /// Whether the action only reads: answered by the [`super::Reader`], never waiting for the
    /// engine (a round reconfiguring MIG holds it for seconds).
    pub fn is_read(&self) -> bool {
        matches!(
            self,
            Action::ListJobs(_)
                | Action::GetJob { .. }
                | Action::Wait { .. }
                | Action::Logs { .. }
                | Action::Gpus
                | Action::Health
                | Action::Metrics
                | Action::Events(_)
        )
    }

    /// Whether the action may change what a scheduling round decides.
    pub fn wakes_rounds(&self) -> bool {
        matches!(
            self,
            Action::Submit(_)
                | Action::SubmitWork { .. }
                | Action::SubmitMaking { .. }
                | Action::DestroyIdle { .. }
                | Action::Cancel { .. }
                | Action::Release { .. }
                | Action::Drain { .. }
                | Action::Layout { .. }
                | Action::Reach { .. }
                | Action::HealthClear { .. }
        )
    }
}

/// What an action answers.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum Reply {
    Submitted(SubmitReply),
    DryRun(DryRunReply),
    Jobs(JobList),
    Job(Box<JobView>),
    Cancel(CancelReply),
    Logs(LogChunk),
    Gpus(GpuList),
    Drain(DrainReply),
    Layout(LayoutReply),
    Health(Box<HealthReply>),
    HealthClear(HealthClearReply),
    Metrics(Box<MetricsData>),
    Events(NodeEventList),
}
