//! Tessera's durable state: the daemon's jobs and every state transition, the MIG slices
//! allocated to job ranks, the reconfiguration journal and node metadata, in one SQLite
//! database (WAL, `synchronous=NORMAL`) in a state directory.
//!
//! The daemon may be killed with `kill -9` at any moment. Every operation that writes more than
//! one statement runs in one transaction, state changes are compare-and-set
//! ([`Store::transition`]), a slice can never be allocated twice ([`Store::allocate_all`]), and a
//! reconfiguration is journaled before its first step ([`Store::begin_reconfig`]), so after a
//! restart no job is lost or run twice, no slice is leaked or double-booked, and a half-done
//! reconfiguration can be resumed or rolled back.
//!
//! One process owns a state directory at a time: [`Store::open`] takes an exclusive lock on
//! `<dir>/tessera.lock` for the store's life (a second daemon gets [`StoreError::Locked`]).
//! The API is synchronous; the daemon calls it from one blocking thread.
//!
//! ```no_run
//! # fn main() -> Result<(), tessera_store::StoreError> {
//! use tessera_sched::{GpuRequest, JobRequest};
//! use tessera_store::{JobFilter, JobState, NewJob, ProcessWork, Store, Work};
//! let store = Store::open(std::path::Path::new("/var/lib/tessera"))?;
//! let id = store.insert_job(&NewJob {
//!     user_uid: 1000,
//!     user_name: "ada".into(),
//!     request: JobRequest::new(GpuRequest::Profile { name: "1g.10gb".into() }),
//!     work: Work::Process(ProcessWork {
//!         command: vec!["python".into(), "train.py".into()],
//!         env: vec![],
//!         cwd: "/home/ada".into(),
//!         preempt_signal: None,
//!     }),
//!     submitted_ms: 1_700_000_000_000,
//! })?;
//! store.transition(id, JobState::Queued, JobState::Placing, "placed", 1_700_000_000_100)?;
//! let queued = store.jobs(&JobFilter { states: vec![JobState::Queued], ..JobFilter::default() })?;
//! # let _ = queued;
//! # Ok(())
//! # }
//! ```

mod alloc;
mod error;
mod jobs;
mod journal;
mod node;
mod prune;
mod row;
mod schema;
mod store;
mod totals;
mod types;

pub use error::StoreError;
pub use jobs::ActiveSummary;
pub use node::{Drain, MpsServer};
pub use prune::{PrunePolicy, PruneReport};
pub use store::{DB_FILE, LOCK_FILE, Store};
pub use totals::{
    HistogramBounds, HistogramTotal, INF_BUCKET, MetricHistory, MetricTotals, MigOperationKey, ReconfigKey,
};
pub use types::{
    Allocation, AllocationRecord, ExitInfo, ExternalWork, JobEvent, JobFilter, JobRecord, JobState, JournalPlan,
    LiveAllocation, MigOperation, NewJob, ProcessWork, ReconfigOutcome, ReconfigRecord, SliceAllocation,
    UnknownJobState, Work,
};

/// Version 1's schema, exactly as the first Tessera created it: for tests that build a file to
/// migrate. Not a stable API.
#[doc(hidden)]
pub use schema::V1 as SCHEMA_V1_SQL;

/// The schema version this build of the store reads and writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = schema::SCHEMA_VERSION;
