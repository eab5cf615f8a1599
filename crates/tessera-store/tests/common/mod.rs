//! Helpers shared by the store's integration tests.

#![allow(dead_code)]

use std::path::Path;

use tessera_store::{Allocation, JobState, NewJob, Store};

/// A job with recognisable fields derived from `n`.
pub fn new_job(n: u32) -> NewJob {
    NewJob {
        user_uid: 1000 + n % 3,
        user_name: format!("user{}", n % 3),
        tenant: if n.is_multiple_of(2) { "even".into() } else { "odd".into() },
        priority: i32::try_from(n % 5).unwrap() - 2,
        request: serde_json::json!({
            "ranks": [{"profile": "1g.10gb", "count": n % 4 + 1}],
            "time_limit_s": 3600,
            "note": format!("job {n} with \"quotes\" and ünïcode"),
        }),
        command: vec!["/bin/sh".into(), "-c".into(), format!("echo {n}; exit 0")],
        env: vec![("A".into(), n.to_string()), ("EMPTY".into(), String::new())],
        cwd: format!("/home/user{}", n % 3),
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
    }
}

/// A raw SQLite connection to the store's database (for hand-editing in tests).
pub fn raw(dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.join(tessera_store::DB_FILE)).unwrap()
}
