//! Pruning: finished jobs go by age and by count, with their events and allocations; nothing
//! active, nothing an open reconfiguration names, and job ids keep increasing. Pages of a
//! listing are read through an index.

mod common;

use common::{OneSlice as _, new_job, plan, slice, temp_store};
use tessera_store::{
    ExitInfo, HistogramBounds, JobFilter, JobState, MetricTotals, PrunePolicy, ReconfigOutcome, Store,
};

use JobState::{Placing, Queued, Running, Succeeded};

/// A job that ran on a slice and succeeded, ending at `ended`.
fn finished(store: &Store, n: u32, ended: u64) -> u64 {
    let id = store.insert_job(&new_job(n)).unwrap();
    store.transition(id, Queued, Placing, "placed", ended - 2).unwrap();
    store.allocate(id, 0, 0, &slice(0, 19, (n % 7) as u8, true)).unwrap();
    store.transition(id, Placing, Running, "started", ended - 1).unwrap();
    store.finish(id, Running, Succeeded, "exit 0", ExitInfo { code: Some(0), ..Default::default() }, ended).unwrap();
    id
}

fn ids(store: &Store) -> Vec<u64> {
    store.jobs(&JobFilter::default()).unwrap().iter().map(|j| j.id).collect()
}

#[test]
fn prunes_by_age_and_count_and_keeps_what_is_live() {
    let (_dir, store) = temp_store();
    let old: Vec<u64> = (0..10).map(|n| finished(&store, n, 1_000 + u64::from(n))).collect();
    let queued_early = store.insert_job(&new_job(50)).unwrap();
    let running = store.insert_job(&new_job(51)).unwrap();
    store.transition(running, Queued, Placing, "placed", 5).unwrap();
    store.allocate(running, 0, 0, &slice(1, 19, 0, true)).unwrap();
    store.transition(running, Placing, Running, "started", 6).unwrap();
    // A finished job an open reconfiguration was made for: kept while the journal is open.
    let for_reconfig = finished(&store, 20, 1_500);
    let open = store.begin_reconfig("GPU-2", 2, &plan(), Some(for_reconfig), 1_400).unwrap();
    // A finished reconfiguration of an old job, and one recent.
    let done = store.begin_reconfig("GPU-3", 3, &plan(), Some(old[0]), 1_000).unwrap();
    store.finish_reconfig(done, ReconfigOutcome::Completed, 1_001).unwrap();
    let recent: Vec<u64> = (30..35).map(|n| finished(&store, n, 9_000 + u64::from(n))).collect();
    let (jobs_before, events_before, allocs_before) = store.row_counts().unwrap();
    assert_eq!(jobs_before, 18);

    // Nothing without a limit.
    let none = store.prune(&PrunePolicy { batch: 100, ..PrunePolicy::default() }).unwrap();
    assert!(none.jobs.is_empty());
    assert_eq!(ids(&store).len(), 18);

    // By age, in batches of 4: the ten old ones, nothing else.
    let policy = PrunePolicy { ended_before_ms: Some(5_000), keep_finished: None, batch: 4, ..PrunePolicy::default() };
    let mut gone = Vec::new();
    loop {
        let r = store.prune(&policy).unwrap();
        gone.extend(r.jobs.iter().copied());
        assert!(r.jobs.len() <= 4);
        if !r.more {
            break;
        }
    }
    assert_eq!(gone, old);
    let left = ids(&store);
    assert!(left.contains(&queued_early) && left.contains(&running) && left.contains(&for_reconfig));
    for id in &recent {
        assert!(left.contains(id));
    }
    let (jobs_after, events_after, allocs_after) = store.row_counts().unwrap();
    assert_eq!(jobs_after, 8);
    assert_eq!(events_before - events_after, 30, "three events per pruned job");
    assert_eq!(allocs_before - allocs_after, 10, "one allocation per pruned job");
    assert!(store.events(old[0]).is_err(), "a pruned job has no events left");
    assert!(store.job_allocations(old[0]).unwrap().is_empty());
    // The old finished reconfiguration is gone, the open one stays.
    assert!(store.reconfig(done).unwrap().is_none());
    assert_eq!(store.open_reconfigs().unwrap().iter().map(|r| r.id).collect::<Vec<_>>(), vec![open]);
    assert_eq!(store.live_allocations().unwrap().len(), 1, "the running job's slice is untouched");

    // By count: keep the two newest finished jobs (the one an open reconfiguration names is
    // kept whatever its place).
    let r = store
        .prune(&PrunePolicy { ended_before_ms: None, keep_finished: Some(2), batch: 100, ..PrunePolicy::default() })
        .unwrap();
    assert_eq!(r.jobs, recent[..3].to_vec());
    let left = ids(&store);
    assert_eq!(left, vec![queued_early, running, for_reconfig, recent[3], recent[4]]);

    // Once the reconfiguration ends, its job may go too; ids never go back.
    store.finish_reconfig(open, ReconfigOutcome::Completed, 1_600).unwrap();
    let r = store
        .prune(&PrunePolicy { ended_before_ms: Some(5_000), keep_finished: None, batch: 100, ..PrunePolicy::default() })
        .unwrap();
    assert_eq!(r.jobs, vec![for_reconfig]);
    let top = store.max_job_id().unwrap();
    let r = store
        .prune(&PrunePolicy {
            ended_before_ms: Some(u64::MAX >> 2),
            keep_finished: Some(0),
            batch: 100,
            ..PrunePolicy::default()
        })
        .unwrap();
    assert_eq!(r.jobs, recent[3..].to_vec());
    assert_eq!(ids(&store), vec![queued_early, running]);
    assert_eq!(store.max_job_id().unwrap(), top);
    let next = store.insert_job(&new_job(99)).unwrap();
    assert!(next > top, "ids keep increasing after a prune: {next} after {top}");
    store.integrity_check().unwrap();
}

#[test]
fn a_page_is_read_through_an_index() {
    let (dir, store) = temp_store();
    for n in 0..30 {
        store.insert_job(&new_job(n)).unwrap();
    }
    let page = store.jobs(&JobFilter { after_id: Some(10), limit: Some(5), ..JobFilter::default() }).unwrap();
    assert_eq!(page.iter().map(|j| j.id).collect::<Vec<_>>(), vec![11, 12, 13, 14, 15]);
    let conn = common::raw(dir.path());
    let plan = |sql: &str| -> String {
        let mut st = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows: Vec<String> = st.query_map([], |r| r.get::<_, String>(3)).unwrap().map(Result::unwrap).collect();
        rows.join("; ")
    };
    // The listings the API makes: a user's active jobs, a tenant's, everyone's by state, everyone's.
    for sql in [
        "SELECT id FROM jobs WHERE state IN ('queued','placing','running') AND user_uid = 1000 AND id > 5 ORDER BY id LIMIT 501",
        "SELECT id FROM jobs WHERE user_uid = 1000 AND id > 5 ORDER BY id LIMIT 501",
        "SELECT id FROM jobs WHERE tenant = 'even' AND id > 5 ORDER BY id LIMIT 501",
        "SELECT id FROM jobs WHERE state IN ('queued','placing','running') AND id > 5 ORDER BY id LIMIT 501",
        "SELECT id FROM jobs WHERE id > 5 ORDER BY id LIMIT 501",
    ] {
        let p = plan(&sql.replace("SELECT id", "SELECT *"));
        assert!(p.contains("SEARCH jobs USING"), "not through an index: {sql}: {p}");
        // Everyone's jobs in some states: the state index's entries are sorted by id (not the
        // rows: they are read for the page only); every other listing reads its page in order.
        if !sql.contains("state IN") || sql.contains("user_uid") {
            assert!(!p.contains("TEMP B-TREE"), "a sort of every match for {sql}: {p}");
        }
    }
}

const BOUNDS: HistogramBounds =
    HistogramBounds { queue_wait_ms: &[1_000, 60_000, 3_600_000], reconfig_ms: &[10, 100, 1_000] };

/// Everything the metrics count from history: the totals of what was pruned plus what the
/// remaining rows give.
fn counted(store: &Store) -> MetricTotals {
    let h = store.metric_history().unwrap();
    let mut all = h.totals.clone();
    for (tenant, ms) in &h.waits {
        all.queue_wait.entry(tenant.clone()).or_default().observe(BOUNDS.queue_wait_ms, *ms);
    }
    for r in h.finished_reconfigs.iter().chain(&h.open_reconfigs) {
        all.count_reconfig(&BOUNDS, r);
    }
    all
}

/// A job of tenant `n % 2` that waited `wait` ms (if it started) and ended at `ended`.
fn waited(store: &Store, n: u32, wait: Option<u64>, ended: u64) -> u64 {
    let job = common::new_job(n);
    let submitted = job.submitted_ms;
    let id = store.insert_job(&job).unwrap();
    match wait {
        Some(w) => {
            store.transition(id, Queued, Placing, "placed", submitted + w).unwrap();
            store.transition(id, Placing, Running, "started", submitted + w).unwrap();
            store.finish(id, Running, Succeeded, "exit 0", ExitInfo::default(), ended).unwrap();
        }
        None => store.transition(id, Queued, JobState::Cancelled, "cancelled", ended).unwrap(),
    }
    id
}

/// A prune moves what it deletes into the metric totals, in every bucket, sum and count:
/// totals plus what remains is what the rows counted before.
#[test]
fn a_prune_keeps_what_the_metrics_counted() {
    let (_dir, store) = temp_store();
    let t0 = 1_700_000_000_000u64;
    // Waits in every bucket (the last above every bound), both tenants, and a job that never ran.
    let waits = [0, 1_000, 1_001, 59_999, 60_000, 3_600_000, 3_600_001, 7, 123_456];
    for (n, w) in waits.iter().enumerate() {
        waited(&store, u32::try_from(n).unwrap(), Some(*w), t0 + 10_000_000 + n as u64);
    }
    waited(&store, 40, None, t0 + 10_000_100);
    // Reconfigurations with every outcome and some applied steps, old (pruned) and recent (kept).
    for (i, (outcome, took)) in [
        (ReconfigOutcome::Completed, 5),
        (ReconfigOutcome::RolledBack, 100),
        (ReconfigOutcome::Abandoned { detail: "gone".into() }, 2_000),
        (ReconfigOutcome::Completed, 50),
    ]
    .into_iter()
    .enumerate()
    {
        let gpu = u32::try_from(i % 2).unwrap();
        let at = if i < 3 { 1_000 } else { t0 + 20_000_000 };
        let r = store.begin_reconfig(&format!("GPU-{gpu}"), gpu, &plan(), None, at).unwrap();
        store.step_done(r, 0, "destroyed", at + 1).unwrap();
        if i == 1 {
            store.step_done(r, 1, "created", at + 2).unwrap();
        }
        store.finish_reconfig(r, outcome, at + took).unwrap();
    }
    // One still open: its operations count, and it is never pruned.
    let open = store.begin_reconfig("GPU-2", 2, &plan(), None, 5).unwrap();
    store.step_done(open, 0, "destroyed", 6).unwrap();
    let before = counted(&store);
    assert!(store.metric_totals().unwrap().is_empty());
    assert_eq!(before.queue_wait.values().map(|h| h.count).sum::<u64>(), 9);
    assert_eq!(before.queue_wait["even"].buckets.get(&tessera_store::INF_BUCKET), Some(&1), "{before:?}");

    // Prune most jobs (by age) in small batches, then by count: totals plus the rest are
    // unchanged after every step.
    let policy = PrunePolicy { ended_before_ms: Some(t0 + 10_000_006), keep_finished: None, batch: 2, bounds: BOUNDS };
    loop {
        let r = store.prune(&policy).unwrap();
        assert_eq!(counted(&store), before, "after pruning {:?}", r.jobs);
        if !r.more {
            break;
        }
    }
    assert_eq!(store.finished_reconfigs().unwrap().len(), 1, "the recent reconfiguration is kept");
    let totals = store.metric_totals().unwrap();
    assert_eq!(totals.reconfigurations.values().sum::<u64>(), 3, "{totals:?}");
    assert_eq!(totals.reconfig_duration["abandoned"].sum_ms, 2_000);
    assert!(!totals.queue_wait.is_empty() && !totals.mig_operations.is_empty(), "{totals:?}");
    let r = store.prune(&PrunePolicy { keep_finished: Some(0), batch: 100, bounds: BOUNDS, ..PrunePolicy::default() });
    assert!(!r.unwrap().jobs.is_empty());
    assert_eq!(counted(&store), before);
    assert!(store.metric_history().unwrap().waits.is_empty());
    // The totals survive a reopen.
    let dir = _dir.path().to_path_buf();
    drop(store);
    let store = Store::open(&dir).unwrap();
    assert_eq!(counted(&store), before);
}
