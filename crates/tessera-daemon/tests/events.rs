//! `Action::Events` (`GET /v1/events`, the web view's recent events) against a real engine on a
//! simulated node: a job's submission, start and end, a layout change and a drain come back
//! newest first; a user sees their own jobs' events and every GPU's, an admin every job's.

use std::path::Path;
use std::sync::Arc;

use tessera_daemon::config::Config;
use tessera_daemon::engine::{Action, Caller, Door, Engine, Paths, Reply, ShimCommand};
use tessera_daemon::wire::{DrainRequest, EventQuery, LayoutRequest, NodeEvent, NodeEventKind};
use tessera_exec::RecordingMps;
use tessera_gpu::open::Node;
use tessera_gpu::sim::SimBackend;
use tessera_sched::{GpuRequest, JobRequest};
use tessera_store::{ExitInfo, ExternalWork, Store, Work};

fn caller(uid: u32, name: &str, admin: bool) -> Caller {
    Caller { uid, gid: uid, user: name.to_string(), tenant: "default".to_string(), admin, door: Door::Internal }
}

fn engine(dir: &Path) -> Engine {
    let spec: tessera_gpu::NodeSpec = "2xH100-80GB,numa=1,cpus=16".parse().unwrap();
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let sim = SimBackend::open(&state.join("sim-node.json"), Some(&spec)).unwrap();
    let store = Store::open(&state).unwrap();
    let paths = Paths {
        state_dir: state.clone(),
        output_dir: dir.join("output"),
        runtime_dir: dir.join("run"),
        dev_root: dir.join("dev"),
    };
    let shim = ShimCommand { exe: "/nonexistent/tessera".into(), args: vec!["shim".into()] };
    let mps = Box::new(RecordingMps::new(state.join("mps.jsonl")));
    let mut e =
        Engine::new(store, Arc::new(Node::Sim(Box::new(sim))), Config::default(), paths, shim, mps).expect("engine");
    e.recover().unwrap();
    e
}

fn submit(e: &mut Engine, who: &Caller, profile: &str, key: &str) -> u64 {
    let request = JobRequest::new(GpuRequest::Profile { name: profile.into() });
    let work = Work::External(ExternalWork { door: "test".into(), key: key.into() });
    match e.act(who, Action::SubmitWork { request, work }).unwrap() {
        Reply::Submitted(s) => s.id,
        other => panic!("{other:?}"),
    }
}

fn events(e: &mut Engine, who: &Caller, limit: Option<u32>) -> Vec<NodeEvent> {
    match e.act(who, Action::Events(EventQuery { since_ms: None, limit })).unwrap() {
        Reply::Events(list) => list.events,
        other => panic!("{other:?}"),
    }
}

#[test]
fn events_are_newest_first_and_jobs_are_seen_as_the_job_list_sees_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = engine(dir.path());
    let (alice, bob, root) = (caller(1001, "alice", false), caller(1002, "bob", false), caller(0, "root", true));
    let request = LayoutRequest { instances: vec!["3g.40gb@0".into(), "3g.40gb@4".into()], dry_run: false };
    e.act(&root, Action::Layout { gpu: 1, request }).unwrap();
    let a = submit(&mut e, &alice, "3g.40gb", "a");
    let b = submit(&mut e, &bob, "3g.40gb", "b");
    for _ in 0..5 {
        if !e.round().unwrap() {
            break;
        }
    }
    let exit = ExitInfo { code: Some(0), signal: None, failed_rank: None, detail: "done".into() };
    e.act(&alice, Action::Release { id: a, exit, succeeded: true }).unwrap();
    e.act(&root, Action::Drain { gpu: 0, drain: true, request: DrainRequest { reason: "<maintenance>".into() } })
        .unwrap();

    let seen = events(&mut e, &alice, None);
    let kinds = |job: u64| -> Vec<NodeEventKind> {
        let mut k: Vec<NodeEventKind> = seen.iter().filter(|x| x.job == Some(job)).map(|x| x.kind).collect();
        k.reverse();
        k
    };
    assert_eq!(
        kinds(a),
        [NodeEventKind::JobSubmitted, NodeEventKind::JobStarted, NodeEventKind::JobEnded],
        "{seen:#?}"
    );
    assert!(kinds(b).is_empty(), "alice does not see bob's job: {seen:#?}");
    let layout = seen.iter().find(|x| x.kind == NodeEventKind::Layout && x.gpu == Some(1)).expect("the layout change");
    assert!(layout.text.contains("layout now 3g.40gb@0, 3g.40gb@4") && layout.text.contains("by root"), "{layout:?}");
    let drain = seen.iter().find(|x| x.kind == NodeEventKind::Drained).expect("the drain");
    assert_eq!(drain.text, "GPU 0 drained by root: <maintenance>");
    assert!(seen.windows(2).all(|w| w[0].at_ms >= w[1].at_ms), "newest first");
    let ended = seen.iter().find(|x| x.kind == NodeEventKind::JobEnded).unwrap();
    assert_eq!(ended.text, format!("job {a} (alice) succeeded: done"));

    let all = events(&mut e, &root, None);
    assert!(all.iter().any(|x| x.job == Some(b) && x.kind == NodeEventKind::JobStarted), "an admin sees every job");
    assert_eq!(events(&mut e, &root, Some(2)).len(), 2, "the limit");
    let later = tessera_host::now_ms() + 60_000;
    match e.act(&root, Action::Events(EventQuery { since_ms: Some(later), limit: None })).unwrap() {
        Reply::Events(list) => assert!(list.events.is_empty(), "{list:?}"),
        other => panic!("{other:?}"),
    }
}
