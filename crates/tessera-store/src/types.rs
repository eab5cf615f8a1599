//! The records the store keeps: jobs and their states, transitions, allocations of MIG slices
//! and the reconfiguration journal. All of them serialize with serde; the daemon turns them
//! into its API's JSON.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tessera_mig::{Instance, Step};
use tessera_sched::{HostShare, JobRequest};

/// Where a job is in its life.
///
/// `queued → placing → running → succeeded | failed | cancelled | timed_out | oom_killed`, plus
/// `lost` (the job's supervisor died and its exit status is unknown). A running job may go back
/// to `queued` (preempted, or its GPU failed, and it allows requeueing). The legal moves are
/// [`JobState::can_transition_to`]; the store refuses every other one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for capacity; the job's `reason` says why.
    Queued,
    /// Chosen by the scheduler: slices are being allocated (and perhaps repartitioned) and the
    /// supervisor started.
    Placing,
    /// The supervisor runs the job.
    Running,
    /// Every rank exited 0.
    Succeeded,
    /// A rank failed, or the job could not be launched or can never run.
    Failed,
    /// Cancelled by its owner or an administrator.
    Cancelled,
    /// Stopped at its time limit.
    TimedOut,
    /// Killed by the kernel's OOM killer at its memory limit.
    OomKilled,
    /// Its supervisor vanished (for example with the node) and its outcome is unknown.
    Lost,
}

impl JobState {
    /// Every state, in lifecycle order.
    pub const ALL: [JobState; 9] = [
        JobState::Queued,
        JobState::Placing,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
        JobState::TimedOut,
        JobState::OomKilled,
        JobState::Lost,
    ];

    /// The snake_case name used in the database and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Placing => "placing",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::TimedOut => "timed_out",
            JobState::OomKilled => "oom_killed",
            JobState::Lost => "lost",
        }
    }

    /// Whether the job is over: nothing can move it out of this state.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded
                | JobState::Failed
                | JobState::Cancelled
                | JobState::TimedOut
                | JobState::OomKilled
                | JobState::Lost
        )
    }

    /// Whether the job may hold live allocations in this state (placing or running).
    pub fn is_active(self) -> bool {
        matches!(self, JobState::Placing | JobState::Running)
    }

    /// Whether `self → to` is a legal transition:
    ///
    /// - `queued → placing` (the scheduler chose it), `cancelled`, `failed` (it can never run
    ///   here, e.g. the node changed under it);
    /// - `placing → running`, `queued` (placement undone), `failed` (launch failed),
    ///   `cancelled`, `lost`;
    /// - `running → succeeded | failed | cancelled | timed_out | oom_killed | lost`, or
    ///   `queued` (preempted, or its GPU failed, and requeued);
    /// - nothing leaves a terminal state, and no state moves to itself.
    pub fn can_transition_to(self, to: JobState) -> bool {
        use JobState::{Cancelled, Failed, Lost, OomKilled, Placing, Queued, Running, Succeeded, TimedOut};
        matches!(
            (self, to),
            (Queued, Placing | Cancelled | Failed)
                | (Placing, Queued | Running | Failed | Cancelled | Lost)
                | (Running, Queued | Succeeded | Failed | Cancelled | TimedOut | OomKilled | Lost)
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job state name that is none of [`JobState::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown job state {0:?} (expected one of queued, placing, running, succeeded, failed, cancelled, timed_out, oom_killed, lost)"
)]
pub struct UnknownJobState(pub String);

impl FromStr for JobState {
    type Err = UnknownJobState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| UnknownJobState(s.to_owned()))
    }
}

/// What a job runs: processes Tessera starts and supervises, or work another system runs on
/// the slices Tessera gives it (a Kubernetes pod, a Slurm job), which Tessera only allocates and
/// releases. This is the front doors' seam: each front door submits one of these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Work {
    Process(ProcessWork),
    External(ExternalWork),
}

/// Processes Tessera starts, one per rank, as the job's user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessWork {
    /// argv.
    pub command: Vec<String>,
    /// Environment, in order.
    pub env: Vec<(String, String)>,
    /// Working directory (absolute).
    pub cwd: String,
    /// The signal a preempted job gets before SIGKILL (default SIGTERM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preempt_signal: Option<i32>,
}

/// Work another system runs: `door` names the front door (`kubernetes`, `slurm`), `key` its
/// handle (a pod UID, a Slurm job id), unique per door while the job lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalWork {
    pub door: String,
    pub key: String,
}

impl Work {
    /// The processes, for process work.
    pub fn process(&self) -> Option<&ProcessWork> {
        match self {
            Work::Process(p) => Some(p),
            Work::External(_) => None,
        }
    }
}

/// A job as submitted, before the store gives it an id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewJob {
    /// The submitting user's uid (from the socket's peer credentials, or the token's user).
    pub user_uid: u32,
    /// The submitting user's name.
    pub user_name: String,
    /// What it needs: the scheduler's request (tenant and priority included).
    pub request: JobRequest,
    /// What it runs.
    pub work: Work,
    /// Submission time, milliseconds since the Unix epoch.
    pub submitted_ms: u64,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ExitInfo {
    /// Exit code of the deciding rank, if it exited.
    pub code: Option<i32>,
    /// Signal that killed the deciding rank, if it was killed.
    pub signal: Option<i32>,
    /// The rank that failed first, for a failed multi-rank job.
    pub failed_rank: Option<u32>,
    /// Human-readable detail.
    pub detail: String,
}

/// A job as stored: everything of [`NewJob`] plus its id, state and runtime facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Assigned by SQLite: monotonic, never reused.
    pub id: u64,
    /// See [`NewJob::user_uid`].
    pub user_uid: u32,
    /// See [`NewJob::user_name`].
    pub user_name: String,
    /// The tenant charged (the request's).
    pub tenant: String,
    /// Higher runs first (the request's).
    pub priority: i32,
    /// See [`NewJob::request`].
    pub request: JobRequest,
    /// See [`NewJob::work`].
    pub work: Work,
    /// See [`NewJob::submitted_ms`].
    pub submitted_ms: u64,
    /// Current state.
    pub state: JobState,
    /// Why the job is in its state, or, while queued, why it waits (`capacity`, `quota`, ...).
    pub reason: String,
    /// When its supervisor started it.
    pub started_ms: Option<u64>,
    /// When it reached a terminal state.
    pub ended_ms: Option<u64>,
    /// How it ended, once known.
    pub exit: Option<ExitInfo>,
    /// The job directory the supervisor uses.
    pub job_dir: Option<String>,
    /// The supervisor's pid.
    pub shim_pid: Option<u32>,
    /// How many times it was started (`queued → placing`); above 1 it was requeued.
    pub runs: u32,
    /// Who asked for its cancellation, if anyone did (the first to ask).
    #[serde(default)]
    pub cancelled_by: Option<String>,
}

/// One stored state transition of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEvent {
    /// The state the job left.
    pub from: JobState,
    /// The state the job entered.
    pub to: JobState,
    /// Why.
    pub reason: String,
    /// When, milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// Which jobs [`crate::Store::jobs`] returns. The default returns every job.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct JobFilter {
    /// Only jobs in one of these states; empty means every state.
    pub states: Vec<JobState>,
    /// Only this user's jobs.
    pub user_uid: Option<u32>,
    /// Only this tenant's jobs.
    pub tenant: Option<String>,
    /// Only jobs that have not ended, or ended at or after this time (ms since the epoch).
    pub ended_since_ms: Option<u64>,
    /// Only jobs with a higher id than this (a page's cursor: the last id of the page before).
    #[serde(default)]
    pub after_id: Option<u64>,
    /// At most this many (the lowest ids).
    pub limit: Option<usize>,
}

/// A slice held by one rank of a job: a MIG instance, or a whole GPU with MIG off (its full
/// profile at 0, no GI/CI ids, no MIG UUID). The slice is named by its spec key
/// `(gpu_uuid, profile_id, start)`; the live key (GI id, CI id, MIG UUID) is recorded with it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Allocation {
    /// The GPU's UUID.
    pub gpu_uuid: String,
    /// The GPU's index on this node.
    pub gpu_index: u32,
    /// MIG profile id.
    pub profile_id: u32,
    /// Placement start.
    pub start: u8,
    /// GPU instance id, once the instance exists.
    pub gpu_instance_id: Option<u32>,
    /// Compute instance id, once the instance exists.
    pub compute_instance_id: Option<u32>,
    /// MIG device UUID, once the instance exists.
    pub mig_uuid: Option<String>,
    /// `true`: the rank owns the slice alone. `false`: shared (MPS) with other shared ranks.
    pub exclusive: bool,
    /// The host NUMA node the rank's memory is bound to for this slice.
    pub numa_node: Option<u32>,
    /// The CPUs and memory the slice brings, per host NUMA node.
    pub host: Vec<HostShare>,
}

/// One slice of a rank to allocate ([`crate::Store::allocate_all`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceAllocation {
    pub rank: u32,
    /// The slice's place among the rank's slices (0-based).
    pub slice: u32,
    pub allocation: Allocation,
}

/// A live allocation, as [`crate::Store::live_allocations`] returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveAllocation {
    pub job: u64,
    pub rank: u32,
    pub slice: u32,
    /// The job's run it belongs to (see [`AllocationRecord::run`]).
    pub run: u32,
    pub allocation: Allocation,
}

/// An allocation with its history, as [`crate::Store::job_allocations`] returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationRecord {
    /// The job's rank that holds (or held) the slice.
    pub rank: u32,
    /// The slice's place among the rank's slices (0-based).
    pub slice: u32,
    /// The slice.
    pub allocation: Allocation,
    /// When the allocation was made (the store's wall clock).
    pub allocated_ms: u64,
    /// When it was released; `None` while live.
    pub released_ms: Option<u64>,
    /// The job's run it belongs to: [`JobRecord::runs`] when it was allocated (1 for the first
    /// run, 2 once requeued and placed again, …). A run's allocations are those with its number.
    pub run: u32,
}

/// How a reconfiguration ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ReconfigOutcome {
    /// Every step was applied.
    Completed,
    /// A step failed and the applied ones were undone.
    RolledBack,
    /// Given up, neither completed nor rolled back (e.g. the GPU vanished).
    Abandoned {
        /// Why.
        detail: String,
    },
}

impl ReconfigOutcome {
    /// The name stored in the database.
    pub fn as_str(&self) -> &'static str {
        match self {
            ReconfigOutcome::Completed => "completed",
            ReconfigOutcome::RolledBack => "rolled_back",
            ReconfigOutcome::Abandoned { .. } => "abandoned",
        }
    }
}

/// A reconfiguration as the journal keeps it: the planner's steps at explicit placements and
/// the layout they lead to, or (with `mig_mode`) a MIG mode switch of an idle GPU, whose steps
/// destroy its idle instances first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalPlan {
    pub steps: Vec<Step>,
    pub target: Vec<Instance>,
    /// Who asked (an admin's layout change); `None` for the scheduler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// A MIG mode switch to this mode, after the steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mig_mode: Option<bool>,
}

/// One entry of the reconfiguration journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReconfigRecord {
    /// Journal id.
    pub id: u64,
    /// The GPU being repartitioned.
    pub gpu_uuid: String,
    /// Its index on this node.
    pub gpu_index: u32,
    /// The plan.
    pub plan: JournalPlan,
    /// The job the reconfiguration makes room for.
    pub for_job: Option<u64>,
    /// Steps applied so far, by step index (ascending), each with its result.
    pub steps_done: Vec<(u32, String)>,
    /// When the journal entry was written.
    pub created_ms: u64,
    /// When it finished; `None` while open.
    pub finished_ms: Option<u64>,
    /// How it finished; `None` while open.
    pub outcome: Option<ReconfigOutcome>,
}

/// A MIG operation a journal entry records: a plan step (destroying a GPU instance with its
/// compute instances, or creating one with its compute instance) or a MIG mode switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MigOperation {
    CreateGpuInstance,
    DestroyGpuInstance,
    SetMigMode,
}

impl MigOperation {
    /// The name metrics use.
    pub fn as_str(self) -> &'static str {
        match self {
            MigOperation::CreateGpuInstance => "create_gpu_instance",
            MigOperation::DestroyGpuInstance => "destroy_gpu_instance",
            MigOperation::SetMigMode => "set_mig_mode",
        }
    }
}

impl ReconfigRecord {
    /// The MIG operations this entry shows, each with whether it succeeded: every step marked
    /// done succeeded; in an entry that finished without completing, the first step not done
    /// failed (or, with every step done, the MIG mode switch). A completed entry's mode switch
    /// succeeded. Steps undone by a rollback are not journalled, so not counted; an open entry
    /// shows only its done steps.
    pub fn operations(&self) -> Vec<(MigOperation, bool)> {
        let op = |k: usize| match self.plan.steps.get(k) {
            Some(Step::Create { .. }) => MigOperation::CreateGpuInstance,
            Some(Step::Destroy { .. }) => MigOperation::DestroyGpuInstance,
            None => MigOperation::SetMigMode,
        };
        let done: std::collections::BTreeSet<usize> =
            self.steps_done.iter().filter_map(|(k, _)| usize::try_from(*k).ok()).collect();
        let mut ops: Vec<(MigOperation, bool)> = done.iter().map(|&k| (op(k), true)).collect();
        match &self.outcome {
            Some(ReconfigOutcome::Completed) if self.plan.mig_mode.is_some() => {
                ops.push((MigOperation::SetMigMode, true));
            }
            Some(ReconfigOutcome::RolledBack | ReconfigOutcome::Abandoned { .. }) => {
                match (0..self.plan.steps.len()).find(|k| !done.contains(k)) {
                    Some(k) => ops.push((op(k), false)),
                    None if self.plan.mig_mode.is_some() => ops.push((MigOperation::SetMigMode, false)),
                    None => {}
                }
            }
            _ => {}
        }
        ops
    }
}

#[cfg(test)]
mod operation_tests {
    use super::*;

    fn record(
        steps: &[bool],
        done: &[u32],
        outcome: Option<ReconfigOutcome>,
        mig_mode: Option<bool>,
    ) -> ReconfigRecord {
        let i = Instance::new(19, 0);
        let steps = steps
            .iter()
            .map(|create| {
                if *create {
                    Step::Create { instance: i }
                } else {
                    Step::Destroy { instance: i, gpu_instance_id: Some(1) }
                }
            })
            .collect();
        ReconfigRecord {
            id: 1,
            gpu_uuid: "GPU-x".into(),
            gpu_index: 0,
            plan: JournalPlan { steps, target: vec![], by: None, mig_mode },
            for_job: None,
            steps_done: done.iter().map(|k| (*k, String::new())).collect(),
            created_ms: 0,
            finished_ms: outcome.as_ref().map(|_| 1),
            outcome,
        }
    }

    #[test]
    fn a_journal_entry_says_which_mig_operations_ran_and_which_failed() {
        use MigOperation::*;
        let abandoned = || Some(ReconfigOutcome::Abandoned { detail: "gone".into() });
        let cases: Vec<(ReconfigRecord, Vec<(MigOperation, bool)>)> = vec![
            // destroy, create, create: all done.
            (
                record(&[false, true, true], &[0, 1, 2], Some(ReconfigOutcome::Completed), None),
                vec![(DestroyGpuInstance, true), (CreateGpuInstance, true), (CreateGpuInstance, true)],
            ),
            // The second create failed and was rolled back.
            (
                record(&[false, true, true], &[0, 1], Some(ReconfigOutcome::RolledBack), None),
                vec![(DestroyGpuInstance, true), (CreateGpuInstance, true), (CreateGpuInstance, false)],
            ),
            // Open: only what is done so far.
            (record(&[false, true], &[0], None, None), vec![(DestroyGpuInstance, true)]),
            // A mode switch after the destroys: completed, then failed.
            (
                record(&[false], &[0], Some(ReconfigOutcome::Completed), Some(false)),
                vec![(DestroyGpuInstance, true), (SetMigMode, true)],
            ),
            (record(&[false], &[0], abandoned(), Some(false)), vec![(DestroyGpuInstance, true), (SetMigMode, false)]),
            (record(&[], &[], abandoned(), Some(true)), vec![(SetMigMode, false)]),
        ];
        for (k, (r, want)) in cases.into_iter().enumerate() {
            assert_eq!(r.operations(), want, "case {k}");
        }
    }
}
