//! Tessera's scheduler core: job requests, tenants, quotas, weighted fair share, placement onto
//! MIG instances, repartitioning of idle capacity, reservations with backfill, preemption, and
//! a reason for every job that waits.
//!
//! The daemon and the simulator call [`Scheduler::schedule`] once a round with the cluster as it
//! is ([`ClusterView`]), the queue and the running jobs; it answers with [`Decision`]s, which the
//! caller carries out. Start with [`JobRequest`] and [`Scheduler`].
//!
//! Invariants (checked by the property tests in `tests/`):
//!
//! - **Pure.** No I/O, no clock (time is the `now_ms` argument), no randomness, no async; the
//!   only dependency among Tessera's crates is `tessera-mig`. The same scheduler state and the
//!   same input give the same decisions (ordered maps everywhere, no hash iteration).
//! - **One answer per job.** Every queued job (each distinct id) gets exactly one
//!   [`Decision::Start`] or [`Decision::Pending`] per round; `Reconfigure` and `Preempt`
//!   decisions come in addition, before the pending decision of the job they serve.
//! - **Nothing taken twice.** Within a round every decision sees what earlier ones took: an
//!   exclusive instance goes to one job, shared instances stay within their MPS and time-slice
//!   limits, a CPU goes to one rank, host memory and quotas are never over-committed.
//! - **Busy instances are never touched.** A reconfiguration plan only destroys instances with
//!   no occupants that nothing else in the round uses; plans come from `tessera-mig`'s planner,
//!   so every intermediate layout is valid. At most one plan per GPU per round, and none for a
//!   GPU that is unhealthy or already being reconfigured.
//! - **Starts are real.** Every instance in a `Start` exists in the cluster view, is on a
//!   healthy GPU that is not being reconfigured, and fits the job's request.
//! - **Pins are exact.** A pinned request (a front door's, for instances the kubelet already
//!   gave a pod) starts on exactly its instances or waits naming who holds them; it is decided
//!   first in its round and never reshapes, reserves or preempts.
//! - **Gangs are all or nothing.** A job with several ranks starts all of them or none.
//! - **Quotas hold.** A start never takes a tenant past its quota of compute or memory slices.
//! - **Admission is honest.** [`admit`] refuses exactly the requests no idle state of the node
//!   could place (same placement code) and those whose smallest charge is above their
//!   tenant's quota (the scheduler's own quota check), naming the field and the limit.

mod admission;
mod fairshare;
mod placement;

pub mod cluster;
pub mod job;
pub mod request;
pub mod scheduler;

pub use admission::{Unsatisfiable, admit};
pub use cluster::{
    ClusterView, GpuView, HostNuma, InstanceView, JobId, MIG_DEVICES_PER_PROCESS_R570, Occupant, SliceQuota, Tenant,
};
pub use job::{Decision, HostShare, PendingReason, QueuedJob, RankStart, RunningJob, SlicePlacement};
pub use request::{
    GpuRequest, JobRequest, MAX_INSTANCES_PER_RANK, MAX_RANKS, NumaPolicy, PinnedInstance, RequestError, Sharing,
    fmt_mib, full_profile, profile_memory_mib,
};
pub use scheduler::{ConfigError, Holding, ReservationView, Scheduler, SchedulerConfig, holdings};
