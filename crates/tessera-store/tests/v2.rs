//! Schema version 2: a version-1 database migrates with its jobs intact, job ids stay above
//! what was handed out, a rank's slices are allocated all together or not at all, and drains
//! and MPS control daemons survive a reopen.

mod common;

use common::{placing_job, raw, slice, temp_store};
use tessera_store::{Drain, JobState, MpsServer, ProcessWork, SliceAllocation, Store, StoreError, Work};

/// A version-1 file: the real version-1 schema, then `rows`, then version 1's pragmas.
fn v1_file(dir: &std::path::Path, rows: &str) {
    let c = raw(dir);
    c.execute_batch(tessera_store::SCHEMA_V1_SQL).unwrap();
    c.execute_batch(rows).unwrap();
    c.execute_batch("PRAGMA application_id = 1413829459; PRAGMA user_version = 1;").unwrap();
}

/// What a version-1 daemon left: a finished job placed once, a job requeued and placed again,
/// a job still queued; their transitions, a released allocation of each run, and the journal
/// (an open reconfiguration with one step done; its plan as version 1 wrote it).
fn v1_rows() -> String {
    let plan = serde_json::to_string(&common::plan()).unwrap();
    V1_ROWS.replace("PLAN", &plan)
}

const V1_ROWS: &str = r#"
INSERT INTO jobs (id, user_uid, user_name, tenant, priority, request, command, env, cwd, submitted_ms, state, reason)
    VALUES (7, 1000, 'ada', 'ml', 3, '{"gpu": {"profile": {"name": "1g.10gb"}}, "tenant": "ml", "priority": 3}',
            '["python", "train.py"]', '[["A", "1"]]', '/home/ada', 5, 'succeeded', 'done');
INSERT INTO jobs (id, user_uid, user_name, tenant, priority, request, command, env, cwd, submitted_ms, state, reason)
    VALUES (8, 1001, 'bob', 'ml', 0, '{"gpu": {"profile": {"name": "1g.10gb"}}}',
            '["sleep", "1"]', '[]', '/home/bob', 10, 'failed', 'rank 0 failed');
INSERT INTO jobs (id, user_uid, user_name, tenant, priority, request, command, env, cwd, submitted_ms, state, reason)
    VALUES (9, 1001, 'bob', 'ml', 0, '{"gpu": {"profile": {"name": "1g.10gb"}}}',
            '["true"]', '[]', '/home/bob', 11, 'queued', 'capacity');
INSERT INTO job_events (job_id, from_state, to_state, reason, at_ms) VALUES
    (7, 'queued', 'placing', 'x', 6), (7, 'placing', 'running', 'started', 7),
    (7, 'running', 'succeeded', 'done', 9),
    (8, 'queued', 'placing', 'placed', 20), (8, 'placing', 'running', 'started', 21),
    (8, 'running', 'queued', 'preempted', 30), (8, 'queued', 'placing', 'placed', 40),
    (8, 'placing', 'running', 'started', 41), (8, 'running', 'failed', 'rank 0 failed', 50);
INSERT INTO allocations (job_id, rank, gpu_uuid, gpu_index, profile_id, start, exclusive, allocated_ms, released_at)
    VALUES (7, 0, 'GPU-0', 0, 19, 3, 1, 6, 9),
           (8, 0, 'GPU-0', 0, 19, 0, 1, 20, 30),
           (8, 0, 'GPU-1', 1, 19, 2, 1, 40, 50);
INSERT INTO reconfigs (id, gpu_uuid, gpu_index, plan, for_job, state, created_ms)
    VALUES (3, 'GPU-0', 0, 'PLAN', 7, 'open', 5);
INSERT INTO reconfig_steps (reconfig_id, step_index, done_at, result) VALUES (3, 0, 6, '"destroyed gi 9"');
DELETE FROM jobs WHERE id = 99;
UPDATE sqlite_sequence SET seq = 41 WHERE name = 'jobs';
"#;

#[test]
fn a_version_1_database_migrates_with_its_jobs() {
    let dir = tempfile::tempdir().unwrap();
    v1_file(dir.path(), &v1_rows());
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
    assert_eq!(store.events(7).unwrap().len(), 3, "events still refer to the job");
    // Runs are counted from the transitions to placing, not guessed from the state.
    assert_eq!(store.job(8).unwrap().unwrap().runs, 2);
    assert_eq!(store.job(9).unwrap().unwrap().runs, 0);
    // Allocations keep their history, each in the run it belonged to.
    let a7 = store.job_allocations(7).unwrap();
    assert_eq!(
        a7.iter().map(|a| (a.rank, a.slice, a.run, a.released_ms)).collect::<Vec<_>>(),
        vec![(0, 0, 1, Some(9))]
    );
    let a8 = store.job_allocations(8).unwrap();
    let runs: Vec<(u32, u32)> = a8.iter().map(|a| (a.allocation.gpu_index, a.run)).collect();
    assert_eq!(runs, vec![(0, 1), (1, 2)]);
    assert!(store.live_allocations().unwrap().is_empty());
    // The journal reads back.
    let open = store.open_reconfigs().unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(
        (open[0].id, open[0].for_job, open[0].steps_done.clone()),
        (3, Some(7), vec![(0, "destroyed gi 9".to_string())])
    );
    assert_eq!(open[0].plan, common::plan());
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
fn the_id_high_water_mark_survives_a_migration_with_no_jobs_left() {
    let dir = tempfile::tempdir().unwrap();
    v1_file(
        dir.path(),
        "INSERT INTO jobs (id, user_uid, user_name, tenant, priority, request, command, env, cwd, submitted_ms, state)
             VALUES (41, 0, 'root', 'default', 0, '{}', '[]', '[]', '/', 1, 'queued');
         DELETE FROM jobs;",
    );
    {
        let c = raw(dir.path());
        let seq: i64 = c.query_row("SELECT seq FROM sqlite_sequence WHERE name = 'jobs'", [], |r| r.get(0)).unwrap();
        assert_eq!(seq, 41);
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.insert_job(&common::new_job(1)).unwrap(), 42);
}

#[test]
fn a_version_1_database_with_live_allocations_is_not_migrated() {
    let dir = tempfile::tempdir().unwrap();
    v1_file(
        dir.path(),
        &format!(
            "{}
             UPDATE jobs SET state = 'running' WHERE id = 8;
             INSERT INTO allocations (job_id, rank, gpu_uuid, gpu_index, profile_id, start, exclusive, allocated_ms)
                 VALUES (8, 1, 'GPU-1', 1, 19, 4, 1, 60);",
            v1_rows()
        ),
    );
    let err = Store::open(dir.path()).unwrap_err();
    assert!(
        matches!(&err, StoreError::LiveAllocationsAtUpgrade { found: 1, live: 1, jobs, .. } if jobs == &[8]),
        "{err:?}"
    );
    let text = err.to_string();
    for w in ["schema version 1", "1 live allocation", "finish (or drain the node) with the previous tessera"] {
        assert!(text.contains(w), "'{w}' missing from: {text}");
    }
    // Nothing changed: still version 1; once the job is released there, it migrates.
    let c = raw(dir.path());
    let v: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(v, 1);
    c.execute("UPDATE allocations SET released_at = 70 WHERE released_at IS NULL", []).unwrap();
    drop(c);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.job_allocations(8).unwrap().len(), 3);
}

#[test]
fn an_allocations_key_never_changes() {
    // A fresh file goes through both migrations, as an upgraded one does.
    let (dir, store) = temp_store();
    let a = placing_job(&store, 1);
    store.allocate_all(a, &[SliceAllocation { rank: 0, slice: 0, allocation: slice(0, 19, 0, true) }]).unwrap();
    let c = raw(dir.path());
    for column in ["job_id", "run", "rank", "slice", "gpu_uuid", "profile_id", "start", "exclusive"] {
        let value = if column == "gpu_uuid" { "'GPU-x'" } else { "5" };
        let err = c.execute(&format!("UPDATE allocations SET {column} = {value}"), []).unwrap_err();
        assert!(err.to_string().contains("cannot change"), "{column}: {err}");
    }
}

#[test]
fn a_failed_migration_reports_its_own_error() {
    let dir = tempfile::tempdir().unwrap();
    // A command that is not JSON: the migration to version 2 cannot convert it.
    v1_file(
        dir.path(),
        "INSERT INTO jobs (id, user_uid, user_name, tenant, priority, request, command, env, cwd, submitted_ms, state)
             VALUES (1, 0, 'root', 'default', 0, '{}', 'not json', '[]', '/', 1, 'queued');",
    );
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Migrate { version: 2, .. }), "{err:?}");
    assert!(err.to_string().contains("malformed JSON"), "{err}");
    let v: i64 = raw(dir.path()).query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(v, 1, "rolled back");
}

#[test]
fn allocations_name_their_run() {
    let (_dir, store) = temp_store();
    let b = placing_job(&store, 2);
    let one = |gpu| [SliceAllocation { rank: 0, slice: 0, allocation: slice(gpu, 19, 0, true) }];
    store.allocate_all(b, &one(0)).unwrap();
    assert_eq!(store.live_allocations().unwrap()[0].run, 1);
    store.transition(b, JobState::Placing, JobState::Queued, "requeued", 2).unwrap();
    store.transition(b, JobState::Queued, JobState::Placing, "placed", 3).unwrap();
    store.allocate_all(b, &one(1)).unwrap();
    let runs: Vec<(u32, u32, bool)> = store
        .job_allocations(b)
        .unwrap()
        .iter()
        .map(|r| (r.allocation.gpu_index, r.run, r.released_ms.is_none()))
        .collect();
    assert_eq!(runs, vec![(0, 1, false), (1, 2, true)]);
    assert_eq!(store.live_allocations().unwrap()[0].run, 2);
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
    store.allocate_all(a, &[SliceAllocation { rank: 0, slice: 0, allocation: slice(0, 19, 1, true) }]).unwrap();
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
