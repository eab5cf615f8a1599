//! Opening a state directory: the lock, pragmas, schema versions, and files that are not
//! (healthy) Tessera databases.

use std::io::Write;

use tessera_store::{DB_FILE, LOCK_FILE, SCHEMA_VERSION, Store, StoreError};

mod common;
use common::raw;

#[test]
fn creates_the_directory_and_sets_the_pragmas() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("a/b/state");
    let store = Store::open(&dir).unwrap();
    assert_eq!(store.path(), dir.join(DB_FILE));
    assert_eq!(store.lock_path(), dir.join(LOCK_FILE));
    assert!(dir.join(DB_FILE).is_file());
    let pid = std::fs::read_to_string(dir.join(LOCK_FILE)).unwrap();
    assert_eq!(pid.trim(), std::process::id().to_string());
    let conn = raw(&dir);
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    store.integrity_check().unwrap();
    // Opening again after a clean close keeps everything.
    let id = store.insert_job(&common::new_job(1)).unwrap();
    drop(store);
    let store = Store::open(&dir).unwrap();
    assert!(store.job(id).unwrap().is_some());
}

#[test]
fn a_second_store_on_the_directory_is_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let first = Store::open(dir.path()).unwrap();
    let id = first.insert_job(&common::new_job(1)).unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    match &err {
        StoreError::Locked { path } => assert_eq!(path, &dir.path().join(LOCK_FILE)),
        other => panic!("expected Locked, got {other:?}"),
    }
    assert!(err.to_string().contains("tessera.lock"), "{err}");
    // The refused open changed nothing.
    assert_eq!(first.job(id).unwrap().unwrap().id, id);
    drop(first);
    let second = Store::open(dir.path()).unwrap();
    assert!(second.job(id).unwrap().is_some());
}

#[test]
fn a_newer_schema_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    raw(dir.path()).pragma_update(None, "user_version", 99).unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    match &err {
        StoreError::SchemaTooNew { path, found, supported } => {
            assert_eq!((path, *found, *supported), (&dir.path().join(DB_FILE), 99, SCHEMA_VERSION));
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("schema version 99") && text.contains("newer tessera"), "{text}");
    // The refusal released the lock: fixing the file makes it open again.
    raw(dir.path()).pragma_update(None, "user_version", SCHEMA_VERSION).unwrap();
    Store::open(dir.path()).unwrap();
}

fn assert_corrupt(dir: &std::path::Path) {
    let err = Store::open(dir).unwrap_err();
    let path = dir.join(DB_FILE);
    assert!(matches!(&err, StoreError::Corrupt { path: p, .. } if *p == path), "{err:?}");
    assert!(err.to_string().contains(&path.display().to_string()), "{err}");
}

#[test]
fn a_file_that_is_not_a_database_is_an_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = std::fs::File::create(dir.path().join(DB_FILE)).unwrap();
    for i in 0..2048u32 {
        f.write_all(&i.wrapping_mul(2_654_435_761).to_le_bytes()).unwrap();
    }
    drop(f);
    assert_corrupt(dir.path());
}

#[test]
fn a_database_with_a_clobbered_header_is_an_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        for n in 0..50 {
            store.insert_job(&common::new_job(n)).unwrap();
        }
    }
    let path = dir.path().join(DB_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[..16].copy_from_slice(b"garbage garbage!");
    std::fs::write(&path, bytes).unwrap();
    assert_corrupt(dir.path());
}

#[test]
fn a_damaged_page_is_found_by_the_integrity_check() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        for n in 0..300 {
            store.insert_job(&common::new_job(n)).unwrap();
        }
    }
    let path = dir.path().join(DB_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let page = 4096;
    assert!(bytes.len() > 6 * page, "{}", bytes.len());
    // Scribble over the middle of a few b-tree pages (headers included).
    for p in 2..6 {
        for b in &mut bytes[p * page..p * page + 64] {
            *b = 0xA5;
        }
    }
    std::fs::write(&path, bytes).unwrap();
    // Depending on which pages were hit, open or a full read or the check reports it; never a
    // panic, and the error names the file.
    let path_text = path.display().to_string();
    match Store::open(dir.path()) {
        Err(e) => assert!(e.to_string().contains(&path_text), "{e}"),
        Ok(store) => {
            let check = store.integrity_check();
            let read = store.jobs(&tessera_store::JobFilter::default());
            let e = check.err().or(read.err()).expect("damage went unnoticed");
            assert!(e.to_string().contains(&path_text), "{e}");
        }
    }
}

#[test]
fn another_programs_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    raw(dir.path()).execute_batch("CREATE TABLE photos (id INTEGER PRIMARY KEY, blob BLOB);").unwrap();
    assert_corrupt(dir.path());

    let dir = tempfile::tempdir().unwrap();
    raw(dir.path()).pragma_update(None, "application_id", 0x1234).unwrap();
    assert_corrupt(dir.path());
}

#[test]
fn an_empty_file_becomes_a_database() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(DB_FILE), b"").unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.insert_job(&common::new_job(1)).unwrap();
}

#[test]
fn an_unusable_directory_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = Store::open(&file).unwrap_err();
    assert!(matches!(err, StoreError::CreateDir { .. }), "{err:?}");
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}

#[test]
fn store_is_send() {
    fn send<T: Send>() {}
    send::<Store>();
    send::<StoreError>();
}

#[test]
fn a_read_only_connection_reads_while_the_owner_writes_and_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let reader = store.read_only().unwrap();
    let id = store.insert_job(&common::new_job(1)).unwrap();
    // Committed writes are visible to the reader at once.
    assert!(reader.job(id).unwrap().is_some());
    // A reader answers while the owner holds a write transaction open.
    let conn = &raw(dir.path());
    conn.execute_batch("BEGIN IMMEDIATE; UPDATE jobs SET priority = 7;").unwrap();
    let started = std::time::Instant::now();
    assert!(reader.job(id).unwrap().is_some());
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "the reader waited for the writer");
    conn.execute_batch("ROLLBACK").unwrap();
    // It cannot write.
    assert!(reader.insert_job(&common::new_job(1)).is_err());
    // It shares the owner's hold on the directory: another store is still locked out after
    // the owner is gone and the reader remains.
    drop(store);
    assert!(matches!(Store::open(dir.path()), Err(StoreError::Locked { .. })));
    drop(reader);
    Store::open(dir.path()).unwrap();
}

#[test]
fn the_writer_leaves_one_whole_database_file_when_readers_outlive_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let reader = store.read_only().unwrap();
    let id = store.insert_job(&common::new_job(1)).unwrap();
    assert!(reader.job(id).unwrap().is_some());
    drop(store);
    drop(reader);
    // The WAL was folded in: without it the database still has the job.
    let wal = dir.path().join(format!("{DB_FILE}-wal"));
    assert!(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0) == 0, "the WAL was left behind");
    let _ = std::fs::remove_file(&wal);
    let store = Store::open(dir.path()).unwrap();
    assert!(store.job(id).unwrap().is_some());
}
