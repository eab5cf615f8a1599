//! What keeps the daemon fast and bounded under load, through the engine's actions: listings
//! come in pages with a cursor, rounds decide on each tenant's first `scheduler.queue_depth`
//! queued jobs, and finished jobs are pruned as `[store]` says while active ones never are.

use std::path::Path;
use std::sync::Arc;

use tessera_daemon::config::Config;
use tessera_daemon::engine::{Action, Caller, Door, Engine, Paths, Reply, ShimCommand};
use tessera_daemon::wire::{JobList, JobQuery};
use tessera_exec::RecordingMps;
use tessera_gpu::open::Node;
use tessera_gpu::sim::SimBackend;
use tessera_sched::{GpuRequest, JobRequest};
use tessera_store::{ExitInfo, ExternalWork, JobState, Store, Work};

fn alice() -> Caller {
    Caller { uid: 1001, gid: 1001, user: "alice".into(), tenant: "default".into(), admin: false, door: Door::Internal }
}

fn engine(dir: &Path, spec: &str, config: Config) -> Engine {
    let spec: tessera_gpu::NodeSpec = spec.parse().expect("node spec");
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let sim = SimBackend::open(&state.join("sim-node.json"), Some(&spec)).expect("simulated node");
    let store = Store::open(&state).expect("store");
    let paths = Paths {
        state_dir: state.clone(),
        output_dir: dir.join("output"),
        runtime_dir: dir.join("run"),
        dev_root: dir.join("dev"),
    };
    let shim = ShimCommand { exe: "/nonexistent/tessera".into(), args: vec!["shim".into()] };
    let mps = Box::new(RecordingMps::new(state.join("mps.jsonl")));
    let mut e = Engine::new(store, Arc::new(Node::Sim(Box::new(sim))), config, paths, shim, mps).expect("engine");
    e.recover().expect("recover");
    e
}

fn submit(e: &mut Engine, profile: &str, key: &str) -> u64 {
    let request = JobRequest::new(GpuRequest::Profile { name: profile.into() });
    let work = Work::External(ExternalWork { door: "test".into(), key: key.into() });
    match e.act(&alice(), Action::SubmitWork { request, work }).expect("submit") {
        Reply::Submitted(s) => s.id,
        other => panic!("unexpected reply {other:?}"),
    }
}

fn page(e: &mut Engine, q: JobQuery) -> JobList {
    match e.act(&alice(), Action::ListJobs(q)).expect("list") {
        Reply::Jobs(l) => l,
        other => panic!("unexpected reply {other:?}"),
    }
}

fn settle(e: &mut Engine) {
    for _ in 0..5 {
        if !e.round().unwrap() {
            return;
        }
    }
}

fn release(e: &mut Engine, id: u64) {
    let exit = ExitInfo { code: Some(0), signal: None, failed_rank: None, detail: "done".into() };
    e.act(&alice(), Action::Release { id, exit, succeeded: true }).expect("release");
}

#[test]
fn listings_come_in_pages_that_a_cursor_walks_in_id_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = engine(dir.path(), "1xH100-80GB,numa=1,cpus=16", Config::default());
    // Queued jobs that cannot all start: 25 whole GPUs' worth on one GPU.
    let ids: Vec<u64> = (0..25).map(|n| submit(&mut e, "7g.80gb", &format!("w{n}"))).collect();
    let mut seen = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let l = page(&mut e, JobQuery { limit: Some(10), after, ..JobQuery::default() });
        pages += 1;
        assert!(l.jobs.len() <= 10);
        seen.extend(l.jobs.iter().map(|j| j.id));
        match l.next {
            Some(next) => {
                assert_eq!(Some(&next), seen.last(), "the cursor is the page's last id");
                after = Some(next);
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ids);
    // A page that ends exactly at the last job says so: no cursor.
    let l = page(&mut e, JobQuery { limit: Some(25), ..JobQuery::default() });
    assert_eq!((l.jobs.len(), l.next), (25, None));
    // In the daemon's own process, no limit means every job.
    assert_eq!(page(&mut e, JobQuery::default()).jobs.len(), 25);
}

#[test]
fn a_round_decides_on_each_tenants_first_queued_jobs_and_the_rest_follow() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.scheduler.queue_depth = 2;
    let mut e = engine(dir.path(), "1xH100-80GB,numa=1,cpus=16", config);
    let ids: Vec<u64> = (0..5).map(|n| submit(&mut e, "7g.80gb", &format!("w{n}"))).collect();
    settle(&mut e);
    let reason = |e: &mut Engine, id: u64| {
        let l = page(e, JobQuery { states: JobState::ALL.to_vec(), ..JobQuery::default() });
        let j = l.jobs.into_iter().find(|j| j.id == id).unwrap();
        (j.state, j.reason)
    };
    assert_eq!(reason(&mut e, ids[0]).0, JobState::Running);
    // The next two were decided on (they wait for capacity); the last two wait behind them.
    for &id in &ids[1..3] {
        let (state, why) = reason(&mut e, id);
        assert_eq!(state, JobState::Queued);
        assert!(!why.contains("queue_depth"), "job {id}: {why}");
    }
    for &id in &ids[3..] {
        let (state, why) = reason(&mut e, id);
        assert_eq!(state, JobState::Queued);
        assert!(why.starts_with("priority: behind the first 2 queued jobs"), "job {id}: {why}");
    }
    // Each runs in its turn.
    for w in ids.windows(2) {
        release(&mut e, w[0]);
        settle(&mut e);
        assert_eq!(reason(&mut e, w[1]).0, JobState::Running, "job {} after {}", w[1], w[0]);
    }
}

#[test]
fn finished_jobs_are_pruned_as_configured_and_active_ones_never() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    // Keep the three newest finished jobs, whatever their age; look every round.
    config.store.keep_finished_ms = 0;
    config.store.max_finished_jobs = 3;
    config.store.prune_interval_ms = 100;
    let mut e = engine(dir.path(), "1xH100-80GB,numa=1,cpus=16", config);
    let mut finished = Vec::new();
    for n in 0..8 {
        let id = submit(&mut e, "1g.10gb", &format!("w{n}"));
        settle(&mut e);
        release(&mut e, id);
        // A pruned job's output directory goes with it.
        std::fs::create_dir_all(dir.path().join("output").join(id.to_string())).unwrap();
        finished.push(id);
    }
    let running = submit(&mut e, "1g.10gb", "live");
    let queued = submit(&mut e, "7g.80gb", "waits");
    std::thread::sleep(std::time::Duration::from_millis(150));
    settle(&mut e);
    let all = page(&mut e, JobQuery { history: true, ..JobQuery::default() });
    let left: Vec<u64> = all.jobs.iter().map(|j| j.id).collect();
    let mut want = finished[5..].to_vec();
    want.extend([running, queued]);
    assert_eq!(left, want, "the three newest finished jobs and the active ones");
    // The directories go on a thread of their own.
    let t0 = std::time::Instant::now();
    for id in &finished[..5] {
        while dir.path().join("output").join(id.to_string()).exists() {
            assert!(t0.elapsed().as_secs() < 10, "job {id}'s output is still there");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    for id in &finished[5..] {
        assert!(dir.path().join("output").join(id.to_string()).exists(), "job {id}'s output is kept");
    }
    let states: Vec<JobState> = all.jobs.iter().map(|j| j.state).collect();
    assert_eq!(states[3..], [JobState::Running, JobState::Queued]);
    // Ids keep increasing after a prune.
    assert!(submit(&mut e, "1g.10gb", "after") > queued);
}
