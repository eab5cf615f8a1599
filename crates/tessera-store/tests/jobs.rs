//! Jobs: round trips through the database, filters, the transition table (every legal and
//! illegal pair), compare-and-set with stale expectations, events, reasons, runtime and exit.

use tessera_store::{ExitInfo, JobEvent, JobFilter, JobState, Store, StoreError};

mod common;
use common::{OneSlice, new_job, placing_job, raw, slice, temp_store};

use JobState::{Cancelled, Failed, Lost, OomKilled, Placing, Queued, Running, Succeeded, TimedOut};

/// The lifecycle, written out independently of `JobState::can_transition_to`:
/// row = from, column = to, `y` = legal.
const TABLE: [(JobState, &str); 9] = [
    //             Q P R S F C T O L
    (Queued, /*  */ ". y . . y y . . ."),
    (Placing, /* */ "y . y . y y . . y"),
    (Running, /* */ "y . . y y y y y y"),
    (Succeeded, /**/ ". . . . . . . . ."),
    (Failed, /*  */ ". . . . . . . . ."),
    (Cancelled, /**/ ". . . . . . . . ."),
    (TimedOut, /**/ ". . . . . . . . ."),
    (OomKilled, /**/ ". . . . . . . . ."),
    (Lost, /*    */ ". . . . . . . . ."),
];

fn legal(from: JobState, to: JobState) -> bool {
    let (_, row) = TABLE.iter().find(|(s, _)| *s == from).unwrap();
    let col = JobState::ALL.iter().position(|&s| s == to).unwrap();
    row.split(' ').nth(col).unwrap() == "y"
}

/// A legal path from `queued` to `state`.
fn path_to(state: JobState) -> Vec<JobState> {
    match state {
        Queued => vec![],
        Placing => vec![Placing],
        Running => vec![Placing, Running],
        Succeeded => vec![Placing, Running, Succeeded],
        Failed => vec![Failed],
        Cancelled => vec![Cancelled],
        TimedOut => vec![Placing, Running, TimedOut],
        OomKilled => vec![Placing, Running, OomKilled],
        Lost => vec![Placing, Lost],
    }
}

fn job_in(store: &Store, state: JobState, n: u32) -> u64 {
    let id = store.insert_job(&new_job(n)).unwrap();
    let mut cur = Queued;
    for (i, next) in path_to(state).into_iter().enumerate() {
        store.transition(id, cur, next, &format!("step {i}"), 100 + i as u64).unwrap();
        cur = next;
    }
    assert_eq!(store.job(id).unwrap().unwrap().state, state);
    id
}

#[test]
fn insert_and_read_round_trip() {
    let (_dir, store) = temp_store();
    for n in 0..5 {
        let new = new_job(n);
        let id = store.insert_job(&new).unwrap();
        let rec = store.job(id).unwrap().unwrap();
        assert_eq!(rec.id, id);
        assert_eq!(
            (rec.user_uid, &rec.user_name, &rec.tenant, rec.priority),
            (new.user_uid, &new.user_name, &new.request.tenant, new.request.priority)
        );
        assert_eq!(rec.request, new.request);
        assert_eq!(rec.work, new.work);
        assert_eq!(rec.runs, 0);
        assert_eq!(rec.submitted_ms, new.submitted_ms);
        assert_eq!(rec.state, Queued);
        assert_eq!(rec.reason, "");
        assert_eq!((rec.started_ms, rec.ended_ms, &rec.exit), (None, None, &None));
        assert_eq!((&rec.job_dir, rec.shim_pid), (&None, None));
        assert!(store.events(id).unwrap().is_empty());
    }
    assert_eq!(store.job(999).unwrap(), None);
    assert_eq!(store.job(0).unwrap(), None);
    assert_eq!(store.job(u64::MAX).unwrap(), None);
}

#[test]
fn extreme_values_round_trip() {
    let (_dir, store) = temp_store();
    let mut new = new_job(1);
    new.user_uid = u32::MAX;
    new.request.priority = i32::MIN;
    new.submitted_ms = i64::MAX as u64;
    new.work = tessera_store::Work::Process(tessera_store::ProcessWork {
        command: vec![String::new(), "\0nul\n".into()],
        env: vec![],
        cwd: String::new(),
        preempt_signal: Some(10),
    });
    let id = store.insert_job(&new).unwrap();
    let rec = store.job(id).unwrap().unwrap();
    assert_eq!((rec.user_uid, rec.priority, rec.submitted_ms), (u32::MAX, i32::MIN, i64::MAX as u64));
    assert_eq!((&rec.work, &rec.request), (&new.work, &new.request));

    new.submitted_ms = u64::MAX;
    let err = store.insert_job(&new).unwrap_err();
    assert!(matches!(err, StoreError::OutOfRange { what: "submitted_ms", .. }), "{err}");
    let err = store.transition(id, Queued, Placing, "x", u64::MAX).unwrap_err();
    assert!(matches!(err, StoreError::OutOfRange { what: "at_ms", .. }), "{err}");
    assert_eq!(store.job(id).unwrap().unwrap().state, Queued);
}

#[test]
fn ids_are_monotonic_and_never_reused() {
    let (dir, store) = temp_store();
    let ids: Vec<u64> = (0..3).map(|n| store.insert_job(&new_job(n)).unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    // Even if the newest row disappears, its id is not handed out again.
    raw(dir.path()).execute("DELETE FROM jobs WHERE id = ?1", [ids[2] as i64]).unwrap();
    let next = store.insert_job(&new_job(9)).unwrap();
    assert!(next > ids[2], "{next} after {ids:?}");
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert!(store.insert_job(&new_job(10)).unwrap() > next);
}

#[test]
fn transition_table_every_pair() {
    let (_dir, store) = temp_store();
    let mut n = 0;
    let mut legal_count = 0;
    for from in JobState::ALL {
        for to in JobState::ALL {
            assert_eq!(from.can_transition_to(to), legal(from, to), "{from} -> {to}");
            n += 1;
            let id = job_in(&store, from, n);
            let before = store.events(id).unwrap();
            let result = store.transition(id, from, to, "table", 1_000);
            let rec = store.job(id).unwrap().unwrap();
            let after = store.events(id).unwrap();
            if legal(from, to) {
                legal_count += 1;
                result.unwrap_or_else(|e| panic!("{from} -> {to}: {e}"));
                assert_eq!(rec.state, to);
                assert_eq!(rec.reason, "table");
                assert_eq!(after.len(), before.len() + 1);
                assert_eq!(after.last().unwrap(), &JobEvent { from, to, reason: "table".into(), at_ms: 1_000 });
                assert_eq!(rec.ended_ms.is_some(), to.is_terminal(), "{from} -> {to}");
            } else {
                match result {
                    Err(StoreError::IllegalTransition { id: eid, from: f, to: t }) => {
                        assert_eq!((eid, f, t), (id, from, to));
                    }
                    other => panic!("{from} -> {to}: expected IllegalTransition, got {other:?}"),
                }
                assert_eq!(rec.state, from, "refused transition changed nothing");
                assert_eq!(after, before);
            }
        }
    }
    assert_eq!(n, 81);
    assert_eq!(legal_count, 15);
    // `finish` follows the same table, restricted to terminal targets.
    for from in JobState::ALL {
        for to in JobState::ALL {
            n += 1;
            let id = job_in(&store, from, n);
            let r = store.finish(id, from, to, "fin", ExitInfo::default(), 5);
            assert_eq!(r.is_ok(), legal(from, to) && to.is_terminal(), "finish {from} -> {to}: {r:?}");
            if r.is_err() {
                assert!(matches!(r, Err(StoreError::IllegalTransition { .. })), "{r:?}");
                assert_eq!(store.job(id).unwrap().unwrap().exit, None);
            }
        }
    }
}

#[test]
fn compare_and_set_refuses_stale_expectations() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // A second handle on the same directory is refused outright...
    assert!(matches!(Store::open(dir.path()), Err(StoreError::Locked { .. })));
    // ...so two actors share one handle, each acting on its own (possibly stale) snapshot.
    let id = job_in(&store, Running, 1);
    let seen_by_reaper = store.job(id).unwrap().unwrap().state;
    let seen_by_cancel = store.job(id).unwrap().unwrap().state;
    store.transition(id, seen_by_cancel, Cancelled, "cancelled by user", 10).unwrap();
    let err = store
        .finish(id, seen_by_reaper, Succeeded, "exit 0", ExitInfo { code: Some(0), ..ExitInfo::default() }, 11)
        .unwrap_err();
    match err {
        StoreError::StaleState { id: eid, expected, actual } => {
            assert_eq!((eid, expected, actual), (id, Running, Cancelled));
        }
        other => panic!("expected StaleState, got {other:?}"),
    }
    assert_eq!(err_text(&store, id, Running), format!("job {id} is cancelled, not running"));
    let rec = store.job(id).unwrap().unwrap();
    assert_eq!((rec.state, rec.exit, rec.ended_ms), (Cancelled, None, Some(10)));
    let events = store.events(id).unwrap();
    assert_eq!(events.iter().filter(|e| e.to.is_terminal()).count(), 1);

    // The same transition is never applied twice, across a reopen as well.
    let q = store.insert_job(&new_job(2)).unwrap();
    store.transition(q, Queued, Placing, "placed", 1).unwrap();
    assert!(matches!(
        store.transition(q, Queued, Placing, "placed again", 2),
        Err(StoreError::StaleState { expected: Queued, actual: Placing, .. })
    ));
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert!(matches!(
        store.transition(q, Queued, Placing, "after restart", 3),
        Err(StoreError::StaleState { expected: Queued, actual: Placing, .. })
    ));
    assert_eq!(store.events(q).unwrap().len(), 1);
    // Unknown ids.
    for bad in [0, 999, u64::MAX] {
        assert!(matches!(
            store.transition(bad, Queued, Placing, "x", 1),
            Err(StoreError::JobNotFound { id }) if id == bad
        ));
        assert!(matches!(store.events(bad), Err(StoreError::JobNotFound { .. })));
    }
}

fn err_text(store: &Store, id: u64, from: JobState) -> String {
    store.transition(id, from, Lost, "probe", 1).unwrap_err().to_string()
}

#[test]
fn pending_reason_runtime_and_exit() {
    let (_dir, store) = temp_store();
    let id = store.insert_job(&new_job(1)).unwrap();
    store.set_pending_reason(id, "capacity").unwrap();
    store.set_pending_reason(id, "capacity").unwrap(); // unchanged: fine
    assert_eq!(store.job(id).unwrap().unwrap().reason, "capacity");
    assert!(store.events(id).unwrap().is_empty(), "a pending reason is not an event");
    assert!(matches!(
        store.set_runtime(id, "/d", 1, 2),
        Err(StoreError::StaleState { expected: Placing, actual: Queued, .. })
    ));

    store.transition(id, Queued, Placing, "placed", 10).unwrap();
    assert!(matches!(
        store.set_pending_reason(id, "quota"),
        Err(StoreError::StaleState { expected: Queued, actual: Placing, .. })
    ));
    assert_eq!(store.job(id).unwrap().unwrap().reason, "placed");
    store.set_runtime(id, "/var/lib/tessera/jobs/1", 4321, 20).unwrap();
    store.transition(id, Placing, Running, "started", 20).unwrap();
    let rec = store.job(id).unwrap().unwrap();
    assert_eq!(
        (rec.job_dir.as_deref(), rec.shim_pid, rec.started_ms),
        (Some("/var/lib/tessera/jobs/1"), Some(4321), Some(20))
    );

    let exit = ExitInfo { code: None, signal: Some(9), failed_rank: Some(3), detail: "OOM".into() };
    store.finish(id, Running, Failed, "rank 3 killed", exit.clone(), 31).unwrap();
    let rec = store.job(id).unwrap().unwrap();
    assert_eq!((rec.exit.as_ref(), rec.ended_ms, rec.state), (Some(&exit), Some(31), Failed));

    let f = job_in(&store, Running, 2);
    let exit = ExitInfo { code: Some(0), ..ExitInfo::default() };
    store.finish(f, Running, Succeeded, "exit 0", exit.clone(), 50).unwrap();
    let rec = store.job(f).unwrap().unwrap();
    assert_eq!((rec.state, rec.exit, rec.ended_ms), (Succeeded, Some(exit), Some(50)));
    assert_eq!(store.events(f).unwrap().last().unwrap().to, Succeeded);

    for bad in [0, 999] {
        assert!(matches!(store.set_pending_reason(bad, "x"), Err(StoreError::JobNotFound { .. })));
        assert!(matches!(store.set_runtime(bad, "x", 1, 1), Err(StoreError::JobNotFound { .. })));
        assert!(matches!(
            store.finish(bad, Running, Failed, "x", ExitInfo::default(), 1),
            Err(StoreError::JobNotFound { .. })
        ));
    }
}

#[test]
fn leaving_the_active_states_releases_allocations() {
    let (_dir, store) = temp_store();
    // Requeued from placing, from running (preemption), and finished: all release.
    let a = placing_job(&store, 1);
    store.allocate(a, 0, 0, &slice(0, 19, 0, true)).unwrap();
    store.transition(a, Placing, Queued, "reconfiguring", 5).unwrap();
    assert!(store.live_allocations().unwrap().is_empty());
    assert_eq!(store.job_allocations(a).unwrap()[0].released_ms, Some(5));

    let b = placing_job(&store, 2);
    store.allocate(b, 0, 0, &slice(0, 19, 0, true)).unwrap();
    store.allocate(b, 1, 0, &slice(0, 19, 1, true)).unwrap();
    store.transition(b, Placing, Running, "started", 6).unwrap();
    assert_eq!(store.live_allocations().unwrap().len(), 2);
    store.finish(b, Running, Failed, "rank 1 failed", ExitInfo { code: Some(1), ..Default::default() }, 7).unwrap();
    assert!(store.live_allocations().unwrap().is_empty());
    assert!(store.job_allocations(b).unwrap().iter().all(|r| r.released_ms == Some(7)));
}

#[test]
fn filters_and_counts() {
    let (_dir, store) = temp_store();
    let mut all = Vec::new();
    for n in 0..45u32 {
        let state = JobState::ALL[(n % 9) as usize];
        all.push((job_in(&store, state, n), new_job(n), state));
    }
    let check = |filter: JobFilter| {
        let got: Vec<u64> = store.jobs(&filter).unwrap().iter().map(|r| r.id).collect();
        let mut want: Vec<u64> = all
            .iter()
            .filter(|(_, j, s)| {
                (filter.states.is_empty() || filter.states.contains(s))
                    && filter.user_uid.is_none_or(|u| u == j.user_uid)
                    && filter.tenant.as_ref().is_none_or(|t| *t == j.request.tenant)
            })
            .filter(|(id, _, _)| {
                let ended = store.job(*id).unwrap().unwrap().ended_ms;
                filter.ended_since_ms.is_none_or(|t| ended.is_none_or(|e| e >= t))
                    && filter.after_id.is_none_or(|a| *id > a)
            })
            .map(|(id, _, _)| *id)
            .collect();
        want.truncate(filter.limit.unwrap_or(usize::MAX));
        assert_eq!(got, want, "{filter:?}");
    };
    check(JobFilter::default());
    check(JobFilter { states: vec![Queued], ..Default::default() });
    check(JobFilter { states: vec![Running, Placing, Running], ..Default::default() });
    check(JobFilter { user_uid: Some(1001), ..Default::default() });
    check(JobFilter { tenant: Some("odd".into()), ..Default::default() });
    check(JobFilter { tenant: Some("nobody".into()), ..Default::default() });
    check(JobFilter { limit: Some(3), ..Default::default() });
    check(JobFilter { limit: Some(0), ..Default::default() });
    // Pages: every cursor, with and without other filters.
    for after in [0, 1, 7, 30, 44, 45, 1000] {
        check(JobFilter { after_id: Some(after), limit: Some(5), ..Default::default() });
        check(JobFilter { after_id: Some(after), user_uid: Some(1001), limit: Some(3), ..Default::default() });
        check(JobFilter { after_id: Some(after), states: vec![Queued, Running], limit: Some(2), ..Default::default() });
    }
    check(JobFilter {
        states: vec![Queued, Lost, Failed],
        user_uid: Some(1000),
        tenant: Some("even".into()),
        ended_since_ms: None,
        after_id: None,
        limit: Some(2),
    });
    // Jobs ended at 100 to 102 (their paths' lengths), and the active ones.
    let ended: Vec<u64> = all.iter().filter_map(|(id, _, _)| store.job(*id).unwrap().unwrap().ended_ms).collect();
    assert!(ended.contains(&100) && ended.contains(&102), "{ended:?}");
    for since in [0, 101, 102, u64::MAX] {
        check(JobFilter { ended_since_ms: Some(since), ..Default::default() });
        check(JobFilter { ended_since_ms: Some(since), limit: Some(4), ..Default::default() });
    }
    check(JobFilter { limit: Some(usize::MAX), ..Default::default() });

    let counts = store.count_by_state().unwrap();
    assert_eq!(counts.len(), 9);
    for s in JobState::ALL {
        assert_eq!(counts[&s], 5, "{s}");
    }
}

#[test]
fn a_hand_edited_row_is_an_error_naming_path_table_and_row() {
    let (dir, store) = temp_store();
    let id = store.insert_job(&new_job(1)).unwrap();
    raw(dir.path()).execute("UPDATE jobs SET request = '{not json' WHERE id = ?1", [id as i64]).unwrap();
    let err = store.job(id).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::BadRow { table: "jobs", .. }), "{err:?}");
    assert!(text.contains(&store.path().display().to_string()), "{text}");
    assert!(text.contains(&format!("row {id}")) && text.contains("column request"), "{text}");
    assert!(store.jobs(&JobFilter::default()).is_err());

    let id2 = store.insert_job(&new_job(2)).unwrap();
    raw(dir.path()).execute("UPDATE jobs SET user_uid = -1 WHERE id = ?1", [id2 as i64]).unwrap();
    let text = store.job(id2).unwrap_err().to_string();
    assert!(text.contains("user_uid") && text.contains("-1 is out of range"), "{text}");
}

#[test]
fn queued_ids_lists_exactly_the_queued_jobs_with_their_submission_times() {
    let (_dir, store) = temp_store();
    let a = store.insert_job(&new_job(1)).unwrap();
    let b = placing_job(&store, 2);
    let c = store.insert_job(&new_job(3)).unwrap();
    let submitted = |id| store.job(id).unwrap().unwrap().submitted_ms;
    assert_eq!(store.queued_ids().unwrap(), vec![(a, submitted(a)), (c, submitted(c))]);
    store.transition(c, Queued, Cancelled, "cancelled", 10).unwrap();
    store.transition(b, Placing, Queued, "requeued", 11).unwrap();
    assert_eq!(store.queued_ids().unwrap(), vec![(a, submitted(a)), (b, submitted(b))]);
}

#[test]
fn who_cancelled_is_the_first_to_ask_and_survives_the_end() {
    let (_dir, store) = temp_store();
    let id = store.insert_job(&new_job(1)).unwrap();
    assert_eq!(store.job(id).unwrap().unwrap().cancelled_by, None);
    store.set_cancelled_by(id, "alice").unwrap();
    store.set_cancelled_by(id, "root").unwrap();
    let exit = ExitInfo { detail: "cancelled".into(), ..Default::default() };
    store.finish(id, Queued, Cancelled, "cancelled", exit, 5).unwrap();
    assert_eq!(store.job(id).unwrap().unwrap().cancelled_by.as_deref(), Some("alice"));
    assert!(matches!(store.set_cancelled_by(999, "bob"), Err(StoreError::JobNotFound { id: 999 })));
}
