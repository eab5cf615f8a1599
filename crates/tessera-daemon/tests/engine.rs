//! The engine through its actions, the way every front door drives it: a simulated node, a
//! temporary store, external work (so no process is started), and rounds run by hand. What is
//! asserted is what a front door reads back (`Reply`s and `EngineError`s), and what a restarted
//! engine finds in the store.

use std::path::Path;
use std::sync::Arc;

use tessera_daemon::config::Config;
use tessera_daemon::engine::{Action, Caller, Door, Engine, EngineError, Paths, Reply, ShimCommand};
use tessera_daemon::wire::{DrainRequest, JobQuery, JobView, LayoutRequest, LogQuery};
use tessera_exec::RecordingMps;
use tessera_gpu::open::Node;
use tessera_gpu::sim::SimBackend;
use tessera_sched::{GpuRequest, JobRequest, PinnedInstance};
use tessera_store::{ExitInfo, ExternalWork, JobState, Store, Work};

fn caller(uid: u32, name: &str, admin: bool) -> Caller {
    Caller { uid, gid: uid, user: name.to_string(), tenant: "default".to_string(), admin, door: Door::Internal }
}

fn alice() -> Caller {
    caller(1001, "alice", false)
}

fn bob() -> Caller {
    caller(1002, "bob", false)
}

fn root() -> Caller {
    caller(0, "root", true)
}

/// The store in `state`. A previous engine's standby supervisor is forked in the background;
/// until its exec fails the child holds the store's lock too, so a reopen waits for it.
fn open_store(state: &Path) -> Store {
    for _ in 0..200 {
        match Store::open(state) {
            Ok(s) => return s,
            Err(tessera_store::StoreError::Locked { .. }) => std::thread::sleep(std::time::Duration::from_millis(10)),
            Err(e) => panic!("store: {e}"),
        }
    }
    panic!("the store in {} stays locked", state.display())
}

/// An engine over `spec` with its state in `dir` (a second call on the same `dir` is a restart).
fn engine(dir: &Path, spec: &str, config: Config) -> Engine {
    let spec: tessera_gpu::NodeSpec = spec.parse().expect("node spec");
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let sim = SimBackend::open(&state.join("sim-node.json"), Some(&spec)).expect("simulated node");
    let store = open_store(&state);
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

fn external(key: &str) -> Work {
    Work::External(ExternalWork { door: "test".into(), key: key.into() })
}

fn submit(e: &mut Engine, who: &Caller, request: JobRequest, key: &str) -> Result<u64, EngineError> {
    match e.act(who, Action::SubmitWork { request, work: external(key) })? {
        Reply::Submitted(s) => Ok(s.id),
        other => panic!("unexpected reply {other:?}"),
    }
}

fn job(e: &mut Engine, who: &Caller, id: u64) -> JobView {
    match e.act(who, Action::GetJob { id }).expect("get job") {
        Reply::Job(j) => *j,
        other => panic!("unexpected reply {other:?}"),
    }
}

/// Rounds until one changes nothing (a repartition takes one round, the start the next).
fn settle(e: &mut Engine) {
    for _ in 0..5 {
        if !e.round().unwrap() {
            return;
        }
    }
}

fn profile(name: &str) -> JobRequest {
    JobRequest::new(GpuRequest::Profile { name: name.into() })
}

fn ok_exit(detail: &str) -> ExitInfo {
    ExitInfo { code: Some(0), signal: None, failed_rank: None, detail: detail.into() }
}

#[test]
fn external_work_is_placed_read_back_and_released() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = engine(dir.path(), "1xH100-80GB,numa=1,cpus=16", Config::default());
    let mut req = profile("3g.40gb");
    req.cpus = 4;
    let id = submit(&mut e, &alice(), req, "pod-a").unwrap();
    assert_eq!(job(&mut e, &alice(), id).state, JobState::Queued);
    settle(&mut e);
    let j = job(&mut e, &alice(), id);
    assert_eq!(j.state, JobState::Running, "{j:?}");
    assert_eq!(j.external.as_ref().map(|x| x.key.as_str()), Some("pod-a"));
    assert_eq!(j.ranks.len(), 1);
    let rank = &j.ranks[0];
    assert_eq!(rank.slices[0].profile.as_deref(), Some("3g.40gb"));
    assert!(rank.devices[0].starts_with("MIG-"), "{:?}", rank.devices);
    let cpus = tessera_host::parse_cpulist(rank.cpus.as_deref().expect("bound")).unwrap();
    assert_eq!(cpus.len(), 4);
    // The slice is the job's: the GPU list says so.
    let Reply::Gpus(gpus) = e.act(&alice(), Action::Gpus).unwrap() else { panic!() };
    let text = serde_json::to_string(&gpus).unwrap();
    assert!(text.contains(&rank.devices[0]), "{text}");

    // Another user can neither see nor release it.
    assert!(matches!(e.act(&bob(), Action::GetJob { id }), Err(EngineError::NotFound(_) | EngineError::Forbidden(_))));
    assert!(matches!(
        e.act(&bob(), Action::Release { id, exit: ok_exit("x"), succeeded: true }),
        Err(EngineError::NotFound(_) | EngineError::Forbidden(_))
    ));
    let Reply::Job(done) =
        e.act(&alice(), Action::Release { id, exit: ok_exit("pod ended"), succeeded: true }).unwrap()
    else {
        panic!()
    };
    assert_eq!(done.state, JobState::Succeeded);
    // Released twice: a conflict, not a second transition.
    assert!(matches!(
        e.act(&alice(), Action::Release { id, exit: ok_exit("again"), succeeded: false }),
        Err(EngineError::Conflict(_))
    ));
    // The slice is free: the next job gets the same instance.
    let id2 = submit(&mut e, &bob(), profile("7g.80gb"), "pod-b").unwrap();
    settle(&mut e);
    assert_eq!(job(&mut e, &bob(), id2).state, JobState::Running);
}

#[test]
fn what_can_never_run_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = engine(dir.path(), "1xA100-40GB,numa=1,cpus=16", Config::default());
    let cases: Vec<(JobRequest, &str)> = vec![
        ({ profile("2g.10gb").tap(|r| r.cpus = 1000) }, "resources.cpus"),
        ({ profile("2g.10gb").tap(|r| r.ranks = 100) }, "resources.ranks"),
        (profile("3g.40gb"), "resources.gpu"),
        (JobRequest::new(GpuRequest::WholeGpu).tap(|r| r.gpus_per_rank = 2), "resources.gpus_per_rank"),
    ];
    for (req, field) in cases {
        match submit(&mut e, &alice(), req.clone(), "k") {
            Err(EngineError::CannotRun { field: f, message }) => {
                assert_eq!(f, field, "{message}");
                assert!(!message.is_empty());
            }
            other => panic!("{req:?}: expected a refusal naming {field}, got {other:?}"),
        }
    }
    // Above the priority ceiling: only admins.
    let high = profile("1g.5gb").tap(|r| r.priority = 1000);
    assert!(matches!(submit(&mut e, &alice(), high.clone(), "k"), Err(EngineError::Forbidden(_))));
    assert!(submit(&mut e, &root(), high, "k").is_ok());
    // Nothing refused was queued.
    let Reply::Jobs(all) =
        e.act(&root(), Action::ListJobs(JobQuery { all: true, history: true, ..JobQuery::default() })).unwrap()
    else {
        panic!()
    };
    assert_eq!(all.jobs.len(), 1, "{all:?}");
}

#[test]
fn a_failed_gpu_gets_no_work_until_cleared_and_drains_survive_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let spec = "2xH100-80GB,numa=1,cpus=16,mig=off";
    let mut e = engine(dir.path(), spec, Config::default());
    // GPU 0 has a double-bit ECC error (a reset is needed); GPU 1 is drained by an admin.
    e.node().sim().unwrap().raise_xid(0, 48, None, None).unwrap();
    let events = e.node().backend().wait_xid_events(10).unwrap();
    e.health_events(&events, tessera_host::now_ms());
    let drain = DrainRequest { reason: "bad fan".into() };
    assert!(matches!(
        e.act(&alice(), Action::Drain { gpu: 1, drain: true, request: drain.clone() }),
        Err(EngineError::Forbidden(_))
    ));
    e.act(&root(), Action::Drain { gpu: 1, drain: true, request: drain }).unwrap();

    let id = submit(&mut e, &alice(), JobRequest::new(GpuRequest::WholeGpu), "p").unwrap();
    settle(&mut e);
    let j = job(&mut e, &alice(), id);
    assert_eq!(j.state, JobState::Queued);
    assert!(j.reason.starts_with("health:") && j.reason.contains("Xid 48"), "{}", j.reason);

    // A restart keeps both the fault and the drain.
    drop(e);
    let mut e = engine(dir.path(), spec, Config::default());
    settle(&mut e);
    assert_eq!(job(&mut e, &alice(), id).state, JobState::Queued);
    let Reply::Health(h) = e.act(&alice(), Action::Health).unwrap() else { panic!() };
    let text = serde_json::to_string(&h).unwrap();
    assert!(text.contains("48"), "{text}");
    // The metrics count the Xid, by GPU and code, across the restart.
    let Reply::Metrics(m) = e.act(&alice(), Action::Metrics).unwrap() else { panic!() };
    assert_eq!(m.xids, vec![tessera_daemon::wire::XidCount { gpu: 0, xid: 48, count: 1 }]);

    // Undrain GPU 1: the job runs there, whole (MIG off), never on the failed GPU 0.
    e.act(&root(), Action::Drain { gpu: 1, drain: false, request: DrainRequest { reason: String::new() } }).unwrap();
    settle(&mut e);
    let j = job(&mut e, &alice(), id);
    assert_eq!(j.state, JobState::Running, "{}", j.reason);
    assert_eq!(j.ranks[0].slices[0].gpu, 1);
    assert!(!j.ranks[0].slices[0].mig);
    assert!(j.ranks[0].devices[0].starts_with("GPU-"), "{:?}", j.ranks[0].devices);
    // Clearing health is for admins.
    assert!(matches!(e.act(&alice(), Action::HealthClear { gpu: 0 }), Err(EngineError::Forbidden(_))));
}

/// Saved health that cannot be read (another version, a damaged row) fences every GPU: what
/// was unhealthy is unknown, so nothing is trusted until an admin undrains.
#[test]
fn unreadable_saved_health_drains_every_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let spec = "2xH100-80GB,numa=1,cpus=16,mig=off";
    drop(engine(dir.path(), spec, Config::default()));
    let store = open_store(&dir.path().join("state"));
    store.set_meta("health", "{\"version\": 99}").unwrap();
    drop(store);
    let mut e = engine(dir.path(), spec, Config::default());
    let id = submit(&mut e, &alice(), JobRequest::new(GpuRequest::WholeGpu), "p").unwrap();
    settle(&mut e);
    let j = job(&mut e, &alice(), id);
    assert_eq!(j.state, JobState::Queued, "{}", j.reason);
    let Reply::Gpus(gpus) = e.act(&alice(), Action::Gpus).unwrap() else { panic!() };
    assert!(gpus.gpus.iter().all(|g| g.drained.as_ref().is_some_and(|d| d.reason.contains("unreadable"))), "{gpus:?}");
    e.act(&root(), Action::Drain { gpu: 0, drain: false, request: DrainRequest { reason: String::new() } }).unwrap();
    settle(&mut e);
    assert_eq!(job(&mut e, &alice(), id).state, JobState::Running);
}

/// `x.tap(|x| …)`: a changed copy, for tables.
trait Tap: Sized {
    fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }
}
impl Tap for JobRequest {}

fn list(e: &mut Engine, who: &Caller, q: JobQuery) -> Result<Vec<u64>, EngineError> {
    match e.act(who, Action::ListJobs(q))? {
        Reply::Jobs(l) => Ok(l.jobs.iter().map(|j| j.id).collect()),
        other => panic!("unexpected reply {other:?}"),
    }
}

/// `GET /v1/jobs`: the caller's active jobs by default; history, a time bound and states on
/// request; another user's jobs, a tenant's or everyone's for admins only.
#[test]
fn job_lists_are_active_by_default_and_filtered_by_state_time_user_and_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = engine(dir.path(), "1xH100-80GB,numa=1,cpus=16", Config::default());
    let a1 = submit(&mut e, &alice(), profile("1g.10gb"), "a1").unwrap();
    let a2 = submit(&mut e, &alice(), profile("1g.10gb"), "a2").unwrap();
    let b1 = submit(&mut e, &bob(), profile("1g.10gb"), "b1").unwrap();
    let r1 = submit(&mut e, &root(), profile("1g.10gb"), "r1").unwrap();
    settle(&mut e);
    e.act(&alice(), Action::Release { id: a1, exit: ok_exit("done"), succeeded: true }).unwrap();
    let q = JobQuery::default;
    assert_eq!(list(&mut e, &alice(), q()).unwrap(), [a2], "active, own");
    assert_eq!(list(&mut e, &alice(), JobQuery { history: true, ..q() }).unwrap(), [a1, a2]);
    let states = vec![JobState::Succeeded];
    assert_eq!(list(&mut e, &alice(), JobQuery { states, ..q() }).unwrap(), [a1], "named states, ended or not");
    let later = tessera_host::now_ms() + 60_000;
    assert_eq!(list(&mut e, &alice(), JobQuery { since_ms: Some(later), ..q() }).unwrap(), [a2], "ended before");
    assert_eq!(list(&mut e, &alice(), JobQuery { since_ms: Some(0), ..q() }).unwrap(), [a1, a2]);
    assert_eq!(list(&mut e, &alice(), JobQuery { tenant: Some("default".into()), ..q() }).unwrap(), [a2]);
    // A tenant never configured is a mistake, named: 404, as no such job (the OpenAPI
    // document cannot know the tenants, so the schema-valid request must not be a 400).
    match list(&mut e, &alice(), JobQuery { tenant: Some("other".into()), ..q() }) {
        Err(EngineError::NotFound(message)) => {
            assert!(message.contains("tenant: no tenant 'other' is configured (tenants: default)"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(list(&mut e, &alice(), JobQuery { user: Some("alice".into()), ..q() }).unwrap(), [a2]);
    // Someone else's: admins only.
    for q in [JobQuery { all: true, ..q() }, JobQuery { user: Some("root".into()), ..q() }] {
        match list(&mut e, &alice(), q.clone()) {
            Err(EngineError::Forbidden(m)) => assert!(m.contains("only admins"), "{m}"),
            other => panic!("{q:?}: {other:?}"),
        }
    }
    assert_eq!(list(&mut e, &root(), JobQuery { all: true, ..q() }).unwrap(), [a2, b1, r1]);
    assert_eq!(list(&mut e, &root(), JobQuery { tenant: Some("default".into()), ..q() }).unwrap(), [a2, b1, r1]);
    assert_eq!(list(&mut e, &root(), JobQuery { user: Some("root".into()), ..q() }).unwrap(), [r1]);
    match list(&mut e, &root(), JobQuery { user: Some("no-such-user-here".into()), ..q() }) {
        Err(EngineError::NotFound(message)) => assert_eq!(message, "user: no user 'no-such-user-here' on this node"),
        other => panic!("{other:?}"),
    }
    // A name NSS cannot be asked about (schemathesis: `GET /v1/jobs?user=%006` was a 500).
    match list(&mut e, &root(), JobQuery { user: Some("a\0b".into()), ..q() }) {
        Err(EngineError::NotFound(message)) => assert_eq!(message, "user: no user 'a\\0b' on this node"),
        other => panic!("{other:?}"),
    }
}

/// What schemathesis found sending schema-valid requests the server refused with 400 (the
/// document cannot know a GPU model's profiles or a job's ranks): a layout naming a profile the
/// model lacks can never be made here (422, as a submission's unknown profile), and a rank the
/// job does not have is not found (404, as a job id).
#[test]
fn schema_valid_requests_the_node_cannot_satisfy_are_422_or_404_not_400() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = engine(dir.path(), "1xH100-80GB", Config::default());
    for bad in ["0g.0gb", "9g.99gb@0"] {
        match layout(&mut e, &[bad]) {
            Err(EngineError::CannotRun { field, message }) => {
                assert_eq!(field, "instances[0]");
                assert!(message.contains(&format!("'{}'", bad.split('@').next().unwrap())), "{message}");
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
    // Mixing placed and unplaced entries stays a 400: the document's schema says it too.
    assert!(matches!(layout(&mut e, &["3g.40gb@0", "1g.10gb"]), Err(EngineError::Invalid { .. })));

    let id = submit(&mut e, &alice(), profile("1g.10gb"), "k1").unwrap();
    let query = LogQuery { rank: Some(1_147_153_954), ..LogQuery::default() };
    match e.act(&alice(), Action::Logs { id, query }) {
        Err(EngineError::NotFound(message)) => {
            assert_eq!(message, format!("rank: job {id} has no rank 1147153954; its only rank is 0"))
        }
        other => panic!("{other:?}"),
    }
}

/// A dry run answers what a submission would get now and queues, starts and charges nothing;
/// it is refused as a submission would be.
#[test]
fn a_dry_run_decides_on_the_node_as_it_is_and_queues_nothing() {
    use tessera_daemon::wire::{DryRunVerdict, SubmitRequest};
    let dir = tempfile::tempdir().unwrap();
    let mut e = engine(dir.path(), "1xH100-80GB,numa=1,cpus=16", Config::default());
    let dry = |e: &mut Engine, who: &Caller, request: JobRequest| {
        let body = SubmitRequest {
            command: vec!["true".into()],
            env: [("PATH".to_string(), "/usr/bin:/bin".to_string())].into(),
            cwd: "/".into(),
            resources: request,
            preempt_signal: None,
        };
        match e.act(who, Action::DryRun(body)) {
            Ok(Reply::DryRun(r)) => Ok(r),
            Ok(other) => panic!("unexpected reply {other:?}"),
            Err(err) => Err(err),
        }
    };
    // An empty GPU: the instance must be made first.
    let mut req = JobRequest::new(GpuRequest::Memory { mib: 9537 });
    req.cpus = 2;
    let r = dry(&mut e, &alice(), req.clone()).unwrap();
    assert_eq!(r.verdict, DryRunVerdict::Reconfigure, "{r:?}");
    assert_eq!(r.profiles, ["H100-80GB: 1g.10gb"]);
    assert!(r.reconfigure[0].steps.iter().any(|s| s.starts_with("create 1g.10gb@")), "{r:?}");
    // Once a 1g.10gb is there and idle, it would start on it at once, with its CPUs.
    let id = submit(&mut e, &alice(), profile("1g.10gb"), "k").unwrap();
    settle(&mut e);
    e.act(&alice(), Action::Release { id, exit: ok_exit("done"), succeeded: true }).unwrap();
    let r = dry(&mut e, &alice(), req.clone()).unwrap();
    assert_eq!(r.verdict, DryRunVerdict::Start, "{r:?}");
    let rank = &r.ranks[0];
    assert_eq!((rank.cpu_count, rank.slices[0].profile.as_deref()), (2, Some("1g.10gb")), "{r:?}");
    assert!(rank.slices[0].gpu_instance_id.is_some() && rank.cpus.is_some(), "{r:?}");
    // A drained GPU: it would wait, and says why.
    e.act(&root(), Action::Drain { gpu: 0, drain: true, request: DrainRequest::default() }).unwrap();
    let r = dry(&mut e, &alice(), req.clone()).unwrap();
    assert_eq!(r.verdict, DryRunVerdict::Wait);
    assert!(r.reason.starts_with("capacity: ") && r.reason.contains("drained (GPU 0)"), "{r:?}");
    // Refused as a submission is, naming the field.
    let mut huge = req.clone();
    huge.cpus = 1000;
    assert!(
        matches!(dry(&mut e, &alice(), huge), Err(EngineError::CannotRun { field, .. }) if field == "resources.cpus")
    );
    // Nothing was queued.
    let all = list(&mut e, &root(), JobQuery { all: true, history: true, ..JobQuery::default() }).unwrap();
    assert_eq!(all, [id]);
}

/// A cancel records who asked; the job shows it.
#[test]
fn a_cancel_records_who_asked() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = engine(dir.path(), "1xH100-80GB,numa=1,cpus=16", Config::default());
    let queued = submit(&mut e, &alice(), profile("1g.10gb"), "q").unwrap();
    e.act(&root(), Action::Cancel { id: queued }).unwrap();
    let j = job(&mut e, &alice(), queued);
    assert_eq!((j.state, j.cancelled_by.as_deref()), (JobState::Cancelled, Some("root")));
    let placed = submit(&mut e, &alice(), profile("1g.10gb"), "p").unwrap();
    settle(&mut e);
    assert_eq!(job(&mut e, &alice(), placed).cancelled_by, None);
    e.act(&alice(), Action::Cancel { id: placed }).unwrap();
    assert_eq!(job(&mut e, &alice(), placed).cancelled_by.as_deref(), Some("alice"));
    // A second cancel of an ended job is refused and changes nothing.
    assert!(matches!(e.act(&root(), Action::Cancel { id: placed }), Err(EngineError::Conflict(_))));
    assert_eq!(job(&mut e, &alice(), placed).cancelled_by.as_deref(), Some("alice"));
}

/// A front door's request pinned to one existing instance (the kubelet gave it to a pod).
fn pinned(profile_name: &str, gpu: u32, profile_id: u32, start: u8) -> JobRequest {
    let mut r = profile(profile_name);
    r.pin = vec![PinnedInstance { gpu, profile_id, start }];
    r
}

fn layout(e: &mut Engine, instances: &[&str]) -> Result<Reply, EngineError> {
    let request = LayoutRequest { instances: instances.iter().map(|s| s.to_string()).collect(), dry_run: false };
    e.act(&root(), Action::Layout { gpu: 0, request })
}

#[test]
fn pinned_work_holds_exactly_its_instance_named_after_its_pod_and_blocks_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = engine(dir.path(), "1xH100-80GB,numa=1,cpus=16", Config::default());
    layout(&mut e, &["1g.10gb@0", "1g.10gb@1"]).unwrap();
    let Reply::Gpus(gpus) = e.act(&root(), Action::Gpus).unwrap() else { panic!() };
    let at0 = gpus.gpus[0].instances.iter().find(|i| i.start == 0).unwrap().clone();
    // The daemon's own job, queued first, would take the best fit at 0; the pod's pin wins it.
    let own = submit(&mut e, &alice(), profile("1g.10gb"), "own").unwrap();
    let pod = submit(&mut e, &root(), pinned("1g.10gb", 0, at0.profile_id, 0), "allocated:x").unwrap();
    settle(&mut e);
    let p = job(&mut e, &root(), pod);
    assert_eq!(p.state, JobState::Running, "{p:?}");
    assert_eq!(p.ranks[0].devices, [at0.mig_uuid.clone().unwrap()]);
    assert_eq!(job(&mut e, &alice(), own).ranks[0].slices[0].start, 1);

    // Named after its pod: the GPU list says who holds the instance.
    e.act(&root(), Action::NameWork { id: pod, key: "ns/pod-a/main".into() }).unwrap();
    let Reply::Gpus(gpus) = e.act(&root(), Action::Gpus).unwrap() else { panic!() };
    let held = gpus.gpus[0].instances.iter().find(|i| i.start == 0).unwrap();
    let external = held.occupants[0].external.as_ref().expect("external work");
    assert_eq!((external.door.as_str(), external.key.as_str()), ("test", "ns/pod-a/main"));
    // An unknown job cannot be named.
    assert!(matches!(e.act(&root(), Action::NameWork { id: 999, key: "x".into() }), Err(EngineError::NotFound(_))));

    // A second pin to it is refused, naming the holder.
    let again = submit(&mut e, &root(), pinned("1g.10gb", 0, at0.profile_id, 0), "allocated:y").unwrap_err();
    assert!(again.to_string().contains(&format!("held by job {pod}")), "{again}");
    assert!(again.to_string().starts_with("resources.pin"), "{again}");

    // An admin's layout that would destroy it is refused naming the pod.
    let refused = layout(&mut e, &["7g.80gb"]).unwrap_err();
    assert!(matches!(refused, EngineError::Conflict(_)), "{refused:?}");
    assert!(refused.to_string().contains("ns/pod-a/main"), "{refused}");

    // Released: the instance is free again.
    e.act(&root(), Action::Release { id: pod, exit: ok_exit("the pod ended"), succeeded: true }).unwrap();
    let Reply::Gpus(gpus) = e.act(&root(), Action::Gpus).unwrap() else { panic!() };
    assert!(gpus.gpus[0].instances.iter().find(|i| i.start == 0).unwrap().jobs.is_empty());
}

fn layout_of(e: &mut Engine) -> Vec<(u32, u8)> {
    let Reply::Gpus(gpus) = e.act(&root(), Action::Gpus).unwrap() else { panic!() };
    gpus.gpus[0].instances.iter().map(|i| (i.profile_id, i.start)).collect()
}

#[test]
fn pinned_work_makes_its_missing_instance_and_the_instance_is_destroyed_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = engine(dir.path(), "1xH100-80GB,numa=1,cpus=16", Config::default());
    layout(&mut e, &["3g.40gb@4"]).unwrap();
    let making = |e: &mut Engine, who: &Caller, r: JobRequest, key: &str| {
        e.act(who, Action::SubmitMaking { request: r, work: external(key) })
    };

    // Not an admin: refused, nothing made.
    let refused = making(&mut e, &alice(), pinned("1g.10gb", 0, 19, 0), "claim-a").unwrap_err();
    assert!(matches!(refused, EngineError::Forbidden(_)), "{refused:?}");
    assert_eq!(layout_of(&mut e), [(9, 4)]);

    // 1g.10gb@0 is made, nothing else moves, and the pinned job runs on it.
    let Reply::Submitted(s) = making(&mut e, &root(), pinned("1g.10gb", 0, 19, 0), "claim-a").unwrap() else {
        panic!()
    };
    let mut made = layout_of(&mut e);
    made.sort_unstable();
    assert_eq!(made, [(9, 4), (19, 0)]);
    settle(&mut e);
    let j = job(&mut e, &root(), s.id);
    assert_eq!(j.state, JobState::Running, "{j:?}");
    assert_eq!((j.ranks[0].slices[0].profile.as_deref(), j.ranks[0].slices[0].start), (Some("1g.10gb"), 0));

    // A placement over an existing instance is refused, and nothing changes.
    let overlap = making(&mut e, &root(), pinned("2g.20gb", 0, 14, 4), "claim-b").unwrap_err();
    assert!(overlap.to_string().contains("GPU 0"), "{overlap}");
    let mut after = layout_of(&mut e);
    after.sort_unstable();
    assert_eq!(after, made);

    // Held: it cannot be destroyed; released, it can, once; then it is already gone.
    let busy = e.act(&root(), Action::DestroyIdle { gpu: 0, instance: tessera_mig::Instance::new(19, 0) });
    assert!(matches!(busy, Err(EngineError::Conflict(_))), "{busy:?}");
    e.act(&root(), Action::Release { id: s.id, exit: ok_exit("claim unprepared"), succeeded: true }).unwrap();
    let Reply::Layout(gone) =
        e.act(&root(), Action::DestroyIdle { gpu: 0, instance: tessera_mig::Instance::new(19, 0) }).unwrap()
    else {
        panic!()
    };
    assert!(gone.changed, "{gone:?}");
    assert_eq!(layout_of(&mut e), [(9, 4)]);
    let Reply::Layout(again) =
        e.act(&root(), Action::DestroyIdle { gpu: 0, instance: tessera_mig::Instance::new(19, 0) }).unwrap()
    else {
        panic!()
    };
    assert!(!again.changed);
}

/// The series of `/metrics` that only ever count up (`_total`, `_count`, `_sum`, `_bucket`), by
/// their name and labels.
fn counted_series(e: &mut Engine) -> std::collections::BTreeMap<String, f64> {
    let Reply::Metrics(m) = e.act(&root(), Action::Metrics).unwrap() else { panic!() };
    tessera_daemon::metrics::render(&m)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let name = series.split('{').next()?;
            ["_total", "_count", "_sum", "_bucket"]
                .iter()
                .any(|s| name.ends_with(s))
                .then(|| (series.to_owned(), value.parse().expect("a number")))
        })
        .collect()
}

/// Pruning deletes the rows the queue-wait and reconfiguration histograms and the
/// reconfiguration and MIG-operation counters are counted from: every such series keeps its
/// value across a prune (Prometheus reads a drop as a restart), and still counts up after.
#[test]
fn counters_never_go_down_when_history_is_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.store.keep_finished_ms = 1;
    config.store.max_finished_jobs = 1;
    // Pruned here by hand only.
    config.store.prune_interval_ms = u64::MAX / 4;
    let mut e = engine(dir.path(), "1xH100-80GB,numa=1,cpus=16", config);
    let run = |e: &mut Engine, n: usize| {
        let (who, p) = if n.is_multiple_of(2) { (alice(), "1g.10gb") } else { (bob(), "3g.40gb") };
        let id = submit(e, &who, profile(p), &format!("w{n}")).unwrap();
        settle(e);
        assert_eq!(job(e, &who, id).state, JobState::Running);
        e.act(&who, Action::Release { id, exit: ok_exit("done"), succeeded: true }).unwrap();
    };
    for n in 0..6 {
        run(&mut e, n);
    }
    let before = counted_series(&mut e);
    for name in ["tessera_queue_wait_seconds_count", "tessera_reconfigurations_total", "tessera_mig_operations_total"] {
        assert!(before.keys().any(|s| s.starts_with(name)), "no {name} in {before:#?}");
    }
    let report = e.prune(tessera_host::now_ms() + 60_000).unwrap();
    assert!(report.jobs.len() >= 5 && report.reconfigs > 0, "{report:?}");
    let after = counted_series(&mut e);
    for (series, v) in &before {
        assert_eq!(after.get(series), Some(v), "{series} after pruning {report:?}");
    }
    assert_eq!(after.len(), before.len(), "{after:#?}");
    // New history counts on top.
    run(&mut e, 6);
    let later = counted_series(&mut e);
    for (series, v) in &after {
        assert!(later.get(series).is_some_and(|l| l >= v), "{series} went from {v} to {:?}", later.get(series));
    }
    assert!(later.iter().any(|(s, v)| after.get(s) != Some(v)), "the new job counted nowhere");
}
