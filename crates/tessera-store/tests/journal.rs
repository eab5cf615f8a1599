//! The reconfiguration journal: what a restarted daemon reads to resume or roll back, and the
//! refusals that keep it coherent. Plus node metadata.

use tessera_store::{ReconfigOutcome, Store, StoreError};

mod common;

#[test]
fn resume_data_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let plan = tessera_store::JournalPlan { by: Some("admin".into()), ..common::plan() };
    let (job, r1, r2, r3) = {
        let store = Store::open(dir.path()).unwrap();
        let job = store.insert_job(&common::new_job(1)).unwrap();
        let r1 = store.begin_reconfig("GPU-a", 0, &plan, Some(job), 100).unwrap();
        store.step_done(r1, 0, "{'destroyed': {'gi': 3}}", 101).unwrap();
        let r2 = store.begin_reconfig("GPU-b", 1, &common::plan(), None, 102).unwrap();
        let r3 = store.begin_reconfig("GPU-c", 2, &common::plan(), None, 103).unwrap();
        store.step_done(r3, 0, "null", 104).unwrap();
        store.finish_reconfig(r3, ReconfigOutcome::Completed, 105).unwrap();
        // Dropped here without finishing r1 and r2: as if the daemon were killed.
        (job, r1, r2, r3)
    };
    assert!(r1 < r2 && r2 < r3);
    let store = Store::open(dir.path()).unwrap();
    let open = store.open_reconfigs().unwrap();
    assert_eq!(open.len(), 2);
    let a = &open[0];
    assert_eq!((a.id, a.gpu_uuid.as_str(), a.gpu_index, a.for_job), (r1, "GPU-a", 0, Some(job)));
    assert_eq!(a.plan, plan);
    assert_eq!(a.steps_done, vec![(0, "{'destroyed': {'gi': 3}}".to_string())]);
    assert_eq!((a.created_ms, a.finished_ms, &a.outcome), (100, None, &None));
    assert_eq!((open[1].id, open[1].steps_done.len()), (r2, 0));

    // Resume r1: record the remaining step out of order of arrival, then close it.
    store.step_done(r1, 1, "{'created': {'gi': 5, 'ci': 0}}", 200).unwrap();
    let resumed = store.reconfig(r1).unwrap().unwrap();
    assert_eq!(resumed.steps_done.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![0, 1]);
    store.finish_reconfig(r1, ReconfigOutcome::RolledBack, 201).unwrap();
    store.finish_reconfig(r2, ReconfigOutcome::Abandoned { detail: "GPU-b is gone".into() }, 202).unwrap();
    assert!(store.open_reconfigs().unwrap().is_empty());
    let done = store.reconfig(r2).unwrap().unwrap();
    assert_eq!(done.outcome, Some(ReconfigOutcome::Abandoned { detail: "GPU-b is gone".into() }));
    assert_eq!(done.finished_ms, Some(202));
    assert_eq!(store.reconfig(r1).unwrap().unwrap().outcome, Some(ReconfigOutcome::RolledBack));
    assert_eq!(store.reconfig(r3).unwrap().unwrap().outcome, Some(ReconfigOutcome::Completed));
    assert_eq!(store.reconfig(999).unwrap(), None);
    assert_eq!(store.reconfig(0).unwrap(), None);
}

#[test]
fn journal_refusals() {
    let (_dir, store) = common::temp_store();
    let r = store.begin_reconfig("GPU-a", 0, &common::plan(), None, 1).unwrap();
    assert!(matches!(
        store.begin_reconfig("GPU-a", 0, &common::plan(), None, 2),
        Err(StoreError::ReconfigInProgress { open, .. }) if open == r
    ));
    assert!(matches!(
        store.begin_reconfig("GPU-z", 9, &common::plan(), Some(12345), 2),
        Err(StoreError::JobNotFound { id: 12345 })
    ));
    store.step_done(r, 3, "1", 2).unwrap();
    assert!(matches!(store.step_done(r, 3, "2", 3), Err(StoreError::StepRecorded { step: 3, .. })));
    assert!(matches!(store.step_done(77, 0, "2", 3), Err(StoreError::ReconfigNotFound { id: 77 })));
    store.finish_reconfig(r, ReconfigOutcome::Completed, 4).unwrap();
    assert!(matches!(store.step_done(r, 4, "2", 5), Err(StoreError::ReconfigFinished { .. })));
    assert!(matches!(
        store.finish_reconfig(r, ReconfigOutcome::RolledBack, 5),
        Err(StoreError::ReconfigFinished { .. })
    ));
    assert!(matches!(
        store.finish_reconfig(0, ReconfigOutcome::RolledBack, 5),
        Err(StoreError::ReconfigNotFound { id: 0 })
    ));
    // Once closed, the GPU may be reconfigured again.
    let again = store.begin_reconfig("GPU-a", 0, &common::plan(), None, 6).unwrap();
    assert!(again > r);
    assert!(matches!(store.step_done(again, 0, "null", u64::MAX), Err(StoreError::OutOfRange { what: "at_ms", .. })));
}

#[test]
fn node_metadata() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.get_meta("node_spec").unwrap(), None);
        store.set_meta("node_spec", "8xH100-80GB,numa=2").unwrap();
        store.set_meta("node_spec", "2xA100-40GB").unwrap();
        store.set_meta("", "empty key is a key").unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.get_meta("node_spec").unwrap().as_deref(), Some("2xA100-40GB"));
    assert_eq!(store.get_meta("").unwrap().as_deref(), Some("empty key is a key"));
}
