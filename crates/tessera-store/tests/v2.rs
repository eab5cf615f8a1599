//! Schema version 2: a version-1 database migrates with its jobs intact, job ids stay above
//! what was handed out, a rank's slices are allocated all together or not at all, and drains
//! and MPS control daemons survive a reopen.

mod common;

use common::{placing_job, raw, slice, temp_store};
use tessera_store::{Drain, JobState, MpsServer, ProcessWork, SliceAllocation, Store, StoreError, Work};

/// Version 1's tables, as the first Tessera wrote them (copied from the migration).
const V1_JOBS: &str = r#"
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, user_uid INTEGER NOT NULL, user_name TEXT NOT NULL,
    tenant TEXT NOT NULL, priority INTEGER NOT NULL, request TEXT NOT NULL, command TEXT NOT NULL,
    env TEXT NOT NULL, cwd TEXT NOT NULL, submitted_ms INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'placing', 'running', 'succeeded', 'failed',
        'cancelled', 'timed_out', 'lost')),
    reason TEXT NOT NULL DEFAULT '', started_ms INTEGER, ended_ms INTEGER, exit_code INTEGER,
    exit_signal INTEGER, exit_failed_rank INTEGER, exit_detail TEXT, job_dir TEXT, shim_pid INTEGER
) STRICT;
CREATE TABLE job_events (id INTEGER PRIMARY KEY, job_id INTEGER NOT NULL REFERENCES jobs (id),
    from_state TEXT NOT NULL, to_state TEXT NOT NULL, reason TEXT NOT NULL, at_ms INTEGER NOT NULL) STRICT;
CREATE TABLE allocations (id INTEGER PRIMARY KEY, job_id INTEGER NOT NULL REFERENCES jobs (id),
    rank INTEGER NOT NULL, gpu_uuid TEXT NOT NULL, gpu_index INTEGER NOT NULL, profile_id INTEGER NOT NULL,
    start INTEGER NOT NULL, gpu_instance_id INTEGER, compute_instance_id INTEGER, mig_uuid TEXT,
    exclusive INTEGER NOT NULL CHECK (exclusive IN (0, 1)), allocated_ms INTEGER NOT NULL, released_at INTEGER) STRICT;
CREATE UNIQUE INDEX allocations_live_rank ON allocations (job_id, rank) WHERE released_at IS NULL;
CREATE TABLE reconfigs (id INTEGER PRIMARY KEY AUTOINCREMENT, gpu_uuid TEXT NOT NULL,
    gpu_index INTEGER NOT NULL, plan TEXT NOT NULL, for_job INTEGER REFERENCES jobs (id),
    state TEXT NOT NULL, created_ms INTEGER NOT NULL, finished_ms INTEGER, outcome TEXT, outcome_detail TEXT) STRICT;
CREATE TABLE reconfig_steps (reconfig_id INTEGER NOT NULL REFERENCES reconfigs (id),
    step_index INTEGER NOT NULL, done_at INTEGER NOT NULL, result TEXT NOT NULL,
    PRIMARY KEY (reconfig_id, step_index)) STRICT, WITHOUT ROWID;
CREATE TABLE meta (key TEXT NOT NULL PRIMARY KEY, value TEXT NOT NULL) STRICT, WITHOUT ROWID;
INSERT INTO jobs (id, user_uid, user_name, tenant, priority, request, command, env, cwd, submitted_ms, state, reason)
    VALUES (7, 1000, 'ada', 'ml', 3, '{"gpu": {"profile": {"name": "1g.10gb"}}, "tenant": "ml", "priority": 3}',
            '["python", "train.py"]', '[["A", "1"]]', '/home/ada', 5, 'succeeded', 'done');
INSERT INTO job_events (job_id, from_state, to_state, reason, at_ms) VALUES (7, 'queued', 'placing', 'x', 6);
DELETE FROM jobs WHERE id = 99;
INSERT INTO sqlite_sequence (name, seq) SELECT 'jobs', 41 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'jobs');
UPDATE sqlite_sequence SET seq = 41 WHERE name = 'jobs';
PRAGMA application_id = 1413829459;
PRAGMA user_version = 1;
"#;

#[test]
fn a_version_1_database_migrates_with_its_jobs() {
    let dir = tempfile::tempdir().unwrap();
    {
        let c = raw(dir.path());
        c.execute_batch(V1_JOBS).unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let j = store.job(7).unwrap().unwrap();
    assert_eq!((j.user_name.as_str(), j.tenant.as_str(), j.priority, j.state), ("ada", "ml", 3, JobState::Succeeded));
    assert_eq!(
        j.work,
        Work::Process(ProcessWork {
            command: vec!["python".into(), "train.py".into()],
            env: vec![("A".into(), "1".into())],
            cwd: "/home/ada".into(),
            preempt_signal: None,
        })
    );
    assert_eq!(j.runs, 1);
    assert_eq!(store.events(7).unwrap().len(), 1, "events still refer to the job");
    // Ids continue above what version 1 handed out, and the new state is accepted.
    let id = store.insert_job(&common::new_job(1)).unwrap();
    assert_eq!(id, 42);
    store.transition(id, JobState::Queued, JobState::Placing, "p", 1).unwrap();
    store.transition(id, JobState::Placing, JobState::Running, "r", 2).unwrap();
    store.transition(id, JobState::Running, JobState::OomKilled, "oom", 3).unwrap();
    assert_eq!(store.job(id).unwrap().unwrap().runs, 1);
    store.integrity_check().unwrap();
}

#[test]
fn ids_stay_above_what_is_on_disk() {
    let (_dir, store) = temp_store();
    assert_eq!(store.max_job_id().unwrap(), 0);
    store.ensure_ids_above(500).unwrap();
    assert_eq!(store.insert_job(&common::new_job(1)).unwrap(), 501);
    store.ensure_ids_above(10).unwrap();
    assert_eq!(store.insert_job(&common::new_job(2)).unwrap(), 502, "never lowered");
    assert_eq!(store.max_job_id().unwrap(), 502);
}

#[test]
fn a_job_takes_all_its_slices_or_none() {
    let (_dir, store) = temp_store();
    let a = placing_job(&store, 1);
    store.allocate(a, 0, 0, &slice(0, 19, 1, true)).unwrap();
    let b = placing_job(&store, 2);
    let both = [
        SliceAllocation { rank: 0, slice: 0, allocation: slice(0, 19, 0, true) },
        SliceAllocation { rank: 0, slice: 1, allocation: slice(0, 19, 1, true) },
    ];
    let err = store.allocate_all(b, &both).unwrap_err();
    assert!(matches!(err, StoreError::AlreadyAllocated { holder_job, .. } if holder_job == a), "{err}");
    assert!(store.job_allocations(b).unwrap().is_empty(), "nothing of the refused gang was kept");
    let ok = [
        SliceAllocation { rank: 0, slice: 0, allocation: slice(0, 19, 0, true) },
        SliceAllocation { rank: 0, slice: 1, allocation: slice(0, 19, 2, true) },
        SliceAllocation { rank: 1, slice: 0, allocation: slice(1, 19, 0, true) },
    ];
    store.allocate_all(b, &ok).unwrap();
    let got: Vec<(u32, u32)> = store.job_allocations(b).unwrap().iter().map(|r| (r.rank, r.slice)).collect();
    assert_eq!(got, vec![(0, 0), (0, 1), (1, 0)]);
    // One run's allocations share one time (views tell runs apart by it).
    let times: std::collections::BTreeSet<u64> =
        store.job_allocations(b).unwrap().iter().map(|r| r.allocated_ms).collect();
    assert_eq!(times.len(), 1, "{times:?}");
}

#[test]
fn drains_and_mps_servers_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store
            .set_drain(&Drain {
                gpu_uuid: "GPU-5".into(),
                gpu_index: 5,
                by: "root".into(),
                reason: "fan".into(),
                at_ms: 9,
            })
            .unwrap();
        store
            .set_drain(&Drain {
                gpu_uuid: "GPU-2".into(),
                gpu_index: 2,
                by: "ops".into(),
                reason: String::new(),
                at_ms: 1,
            })
            .unwrap();
        store
            .add_mps_server(&MpsServer {
                mig_uuid: "MIG-a".into(),
                uid: 1000,
                gid: 1000,
                pipe_dir: "/run/tessera/mps/MIG-a-1000/pipe".into(),
                log_dir: "/run/tessera/mps/MIG-a-1000/log".into(),
                started_ms: 3,
            })
            .unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let drains: Vec<u32> = store.drains().unwrap().iter().map(|d| d.gpu_index).collect();
    assert_eq!(drains, vec![2, 5]);
    assert!(store.clear_drain("GPU-2").unwrap());
    assert!(!store.clear_drain("GPU-2").unwrap());
    assert_eq!(store.drains().unwrap().len(), 1);
    let mps = store.mps_servers().unwrap();
    assert_eq!((mps.len(), mps[0].uid), (1, 1000));
    store.remove_mps_server("MIG-a").unwrap();
    assert!(store.mps_servers().unwrap().is_empty());
}

#[test]
fn the_database_is_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let (dir, store) = temp_store();
    store.insert_job(&common::new_job(1)).unwrap();
    for name in ["tessera.db", "tessera.db-wal", "tessera.db-shm", "tessera.lock"] {
        let mode = std::fs::metadata(dir.path().join(name)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name}");
    }
}
