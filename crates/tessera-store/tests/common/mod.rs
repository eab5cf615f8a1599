//! Helpers shared by the store's integration tests.

#![allow(dead_code)]

use std::path::Path;

use tessera_sched::{GpuRequest, JobRequest};
use tessera_store::{Allocation, JobState, NewJob, ProcessWork, SliceAllocation, Store, StoreError, Work};

/// A job with recognisable fields derived from `n`.
pub fn new_job(n: u32) -> NewJob {
    let mut request = JobRequest::new(GpuRequest::Profile { name: "1g.10gb".into() });
    request.ranks = n % 4 + 1;
    request.tenant = if n.is_multiple_of(2) { "even".into() } else { "odd".into() };
    request.priority = i32::try_from(n % 5).unwrap() - 2;
    request.time_limit_ms = Some(3_600_000);
    NewJob {
        user_uid: 1000 + n % 3,
        user_name: format!("user{}", n % 3),
        request,
        work: Work::Process(ProcessWork {
            command: vec!["/bin/sh".into(), "-c".into(), format!("echo {n} with \"quotes\" and ünïcode; exit 0")],
            env: vec![("A".into(), n.to_string()), ("EMPTY".into(), String::new())],
            cwd: format!("/home/user{}", n % 3),
            preempt_signal: None,
        }),
        submitted_ms: 1_700_000_000_000 + u64::from(n),
    }
}

/// A fresh store in a temporary directory (the directory lives as long as the guard).
pub fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

/// Inserts a job and moves it to `placing`.
pub fn placing_job(store: &Store, n: u32) -> u64 {
    let id = store.insert_job(&new_job(n)).unwrap();
    store.transition(id, JobState::Queued, JobState::Placing, "placed", 1).unwrap();
    id
}

/// A slice on GPU `gpu`.
pub fn slice(gpu: u32, profile_id: u32, start: u8, exclusive: bool) -> Allocation {
    Allocation {
        gpu_uuid: format!("GPU-{gpu:08x}-0000-0000-0000-000000000000"),
        gpu_index: gpu,
        profile_id,
        start,
        gpu_instance_id: None,
        compute_instance_id: None,
        mig_uuid: None,
        exclusive,
        numa_node: None,
        host: Vec::new(),
    }
}

/// A raw SQLite connection to the store's database (for hand-editing in tests).
pub fn raw(dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.join(tessera_store::DB_FILE)).unwrap()
}

/// A journal plan: destroy a 1g at 0, create a 3g at 4.
pub fn plan() -> tessera_store::JournalPlan {
    use tessera_mig::{Instance, Step};
    tessera_store::JournalPlan {
        steps: vec![
            Step::Destroy { instance: Instance::new(19, 0), gpu_instance_id: Some(9) },
            Step::Create { instance: Instance::new(9, 4) },
        ],
        target: vec![Instance::new(9, 4)],
        by: None,
        mig_mode: None,
    }
}

/// Live allocations as `(job, rank, allocation)` (every slice here is a rank's first).
pub fn live(store: &Store) -> Vec<(u64, u32, Allocation)> {
    store.live_allocations().unwrap().into_iter().map(|l| (l.job, l.rank, l.allocation)).collect()
}

/// One slice at a time, and releasing a job's slices, for the tests written against the old
/// single-slice `Store::allocate` and `Store::release` (both gone: the daemon allocates a job's
/// slices with `allocate_all` and releases them with its transitions).
pub trait OneSlice {
    /// `allocate_all` with one slice.
    fn allocate(&self, job: u64, rank: u32, slice: u32, alloc: &Allocation) -> Result<(), StoreError>;
    /// Releases every live allocation of `job` the way the daemon does (an active job is
    /// queued again, then placed again) and returns how many there were.
    fn release(&self, job: u64) -> Result<usize, StoreError>;
}

impl OneSlice for Store {
    fn allocate(&self, job: u64, rank: u32, slice: u32, alloc: &Allocation) -> Result<(), StoreError> {
        self.allocate_all(job, &[SliceAllocation { rank, slice, allocation: alloc.clone() }])
    }

    fn release(&self, job: u64) -> Result<usize, StoreError> {
        let state = self.job(job)?.ok_or(StoreError::JobNotFound { id: job })?.state;
        let live = self.live_allocations()?.iter().filter(|l| l.job == job).count();
        if state.is_active() {
            self.transition(job, state, JobState::Queued, "released", 1)?;
            self.transition(job, JobState::Queued, JobState::Placing, "placed", 1)?;
        }
        Ok(live)
    }
}
