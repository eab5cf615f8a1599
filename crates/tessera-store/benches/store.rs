//! Store speed targets (issue #4), run with `cargo bench -p tessera-store`. Each bench uses a
//! real database in a temporary directory (WAL, `synchronous=NORMAL`, as the daemon runs it).
//!
//! - `insert_job`: one submission (a realistic request, argv and a 30-variable environment).
//!   Target: at least 2,000 per second, i.e. under 500 µs each.
//! - `open_and_list_1000_queued`: `Store::open` of an existing directory plus
//!   `jobs(queued)` returning 1,000 jobs, as the daemon does at start-up. Target: under 50 ms.
//! - `job_lifecycle`: submit, place, allocate, run and finish one job (five transactions).

use std::hint::black_box;

use tessera_sched::{GpuRequest, JobRequest};
use tessera_store::{Allocation, ExitInfo, JobFilter, JobState, NewJob, ProcessWork, SliceAllocation, Store, Work};

fn main() {
    divan::main();
}

fn sample_job(n: u32) -> NewJob {
    let mut request = JobRequest::new(GpuRequest::Profile { name: "1g.10gb".into() });
    request.tenant = format!("tenant{}", n % 3);
    request.time_limit_ms = Some(3_600_000);
    request.runtime_estimate_ms = Some(1_800_000);
    request.cpus = 4;
    request.mem_mib = 16_384;
    NewJob {
        user_uid: 1000 + n % 7,
        user_name: format!("user{}", n % 7),
        request,
        work: Work::Process(ProcessWork {
            command: vec!["python3".into(), "train.py".into(), "--epochs".into(), "10".into()],
            env: (0..30).map(|i| (format!("VARIABLE_{i}"), format!("/some/path/value/{i}/{n}"))).collect(),
            cwd: "/home/user/project".into(),
            preempt_signal: None,
        }),
        submitted_ms: 1_700_000_000_000 + u64::from(n),
    }
}

/// Target: ≥ 2,000 submissions/s (< 500 µs each).
#[divan::bench]
fn insert_job(b: divan::Bencher) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let job = sample_job(1);
    b.counter(divan::counter::ItemsCount::new(1usize)).bench_local(|| store.insert_job(black_box(&job)).unwrap());
}

/// Target: < 50 ms. Open an existing state directory and read its 1,000 queued jobs (among
/// 1,000 finished ones).
#[divan::bench(sample_count = 30)]
fn open_and_list_1000_queued(b: divan::Bencher) {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        for n in 0..2_000 {
            let id = store.insert_job(&sample_job(n)).unwrap();
            if n % 2 == 1 {
                store.transition(id, JobState::Queued, JobState::Cancelled, "cancelled", 1).unwrap();
            }
        }
    }
    let queued = JobFilter { states: vec![JobState::Queued], ..JobFilter::default() };
    b.bench_local(|| {
        let store = Store::open(black_box(dir.path())).unwrap();
        let jobs = store.jobs(&queued).unwrap();
        assert_eq!(jobs.len(), 1_000);
        jobs
    });
}

/// One job through its whole life: insert, placing, allocate, running, finish.
#[divan::bench]
fn job_lifecycle(b: divan::Bencher) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let job = sample_job(1);
    let slice = Allocation {
        gpu_uuid: "GPU-0".into(),
        gpu_index: 0,
        profile_id: 19,
        start: 0,
        gpu_instance_id: Some(1),
        compute_instance_id: Some(0),
        mig_uuid: Some("MIG-0".into()),
        exclusive: true,
        numa_node: Some(0),
        host: Vec::new(),
    };
    b.counter(divan::counter::ItemsCount::new(1usize)).bench_local(|| {
        let id = store.insert_job(&job).unwrap();
        store.transition(id, JobState::Queued, JobState::Placing, "placed", 2).unwrap();
        store.allocate_all(id, &[SliceAllocation { rank: 0, slice: 0, allocation: slice.clone() }]).unwrap();
        store.transition(id, JobState::Placing, JobState::Running, "started", 3).unwrap();
        let exit = ExitInfo { code: Some(0), ..ExitInfo::default() };
        store.finish(id, JobState::Running, JobState::Succeeded, "exit 0", exit, 4).unwrap();
    });
}
