//! External work through the HTTP API, the way `tessera slurm` drives it: the real engine on a
//! simulated node behind the real router, callers by TCP token (root, an admin; nobody, not).
//! `POST /v1/work` holds a pinned instance for another system's work, `GET /v1/gpus` shows who
//! holds it and the device numbers a cgroup needs, `POST /v1/jobs/{id}/release` gives it back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_daemon::api::{Identity, Service, TokenUser};
use tessera_daemon::client::{Client, ClientError, Endpoint};
use tessera_daemon::config::{Config, Tokens};
use tessera_daemon::daemon::EngineHandle;
use tessera_daemon::engine::{Engine, Paths, ShimCommand};
use tessera_daemon::wire::{GpuList, InstanceInfo, JobView, LayoutRequest, ReleaseRequest, WorkRequest};
use tessera_gpu::open::Node;
use tessera_gpu::sim::SimBackend;
use tessera_sched::{GpuRequest, JobRequest, PinnedInstance};
use tessera_store::{JobState, Store};

const SPEC: &str = "2xH100-80GB,numa=2,cpus=32";

/// A daemon's API over the real engine, serving TCP until dropped.
struct Served {
    _dir: tempfile::TempDir,
    addr: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Served {
    fn client(&self, token: &str) -> Client {
        Client::new(Endpoint::Tcp { addr: self.addr.clone(), token: token.into() })
    }

    fn root(&self) -> Client {
        self.client("r00t-token")
    }

    fn nobody(&self) -> Client {
        self.client("n0body-token")
    }
}

fn serve() -> Served {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let spec: tessera_gpu::NodeSpec = SPEC.parse().unwrap();
    let sim = SimBackend::open(&state.join("sim-node.json"), Some(&spec)).unwrap();
    let store = Store::open(&state).unwrap();
    let paths = Paths {
        state_dir: state.clone(),
        output_dir: dir.path().join("output"),
        runtime_dir: dir.path().join("run"),
        dev_root: dir.path().join("dev"),
    };
    // External work starts no supervisor.
    let shim = ShimCommand { exe: "/nonexistent/tessera".into(), args: vec!["shim".into()] };
    let mps = Box::new(tessera_exec::RecordingMps::new(state.join("mps.jsonl")));
    let mut engine =
        Engine::new(store, Arc::new(Node::Sim(Box::new(sim))), Config::default(), paths, shim, mps).unwrap();
    engine.recover().unwrap();
    let identity = Arc::new(Identity {
        tokens: Tokens::new(vec![
            ("r00t-token".into(), TokenUser { uid: 0, gid: 0, name: "root".into() }),
            ("n0body-token".into(), TokenUser { uid: 65534, gid: 65534, name: "nobody".into() }),
        ]),
        config: Arc::new(Config::default()),
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let handle = Arc::new(EngineHandle::new(engine).unwrap());
            let rounds = handle.spawn_rounds(Duration::from_millis(50));
            let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(tcp.local_addr().unwrap().to_string()).unwrap();
            let unix = tessera_daemon::server::bind_unix(&state.join("t.sock")).unwrap();
            let service: Arc<dyn Service> = handle;
            let app = tessera_daemon::api::router(service, identity);
            tessera_daemon::server::serve(app, unix, Some(tcp), Default::default(), async {
                let _ = stop_rx.await;
            })
            .await
            .unwrap();
            rounds.abort();
        });
    });
    let addr = addr_rx.recv().unwrap();
    Served { _dir: dir, addr, stop: Some(stop_tx), thread: Some(thread) }
}

fn refusal<T: std::fmt::Debug>(r: Result<T, ClientError>) -> (u16, String) {
    match r {
        Err(ClientError::Api { status, message, .. }) => (status, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// GPU 0's instance at `start`.
fn instance_at(gpus: &GpuList, start: u8) -> InstanceInfo {
    gpus.gpus[0].instances.iter().find(|i| i.start == start).cloned().unwrap_or_else(|| panic!("{gpus:?}"))
}

/// A Slurm job's request pinned to one instance of GPU 0.
fn slurm_work(at: &InstanceInfo, key: &str) -> WorkRequest {
    let mut request = JobRequest::new(GpuRequest::Profile { name: at.profile.clone() });
    request.pin = vec![PinnedInstance { gpu: 0, profile_id: at.profile_id, start: at.start }];
    WorkRequest { request, door: "slurm".into(), key: key.into() }
}

fn until_running(c: &Client, id: u64) -> JobView {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let j = c.job(id).unwrap();
        if j.state == JobState::Running {
            return j;
        }
        assert!(!j.ended() && Instant::now() < deadline, "job {id} does not run: {j:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn two_small_instances(s: &Served) -> GpuList {
    let layout = LayoutRequest { instances: vec!["1g.10gb@0".into(), "1g.10gb@1".into()], dry_run: false };
    s.root().layout(0, &layout).unwrap();
    s.root().gpus().unwrap()
}

#[test]
fn an_admin_holds_an_instance_for_slurm_and_releases_it() {
    let s = serve();
    let gpus = two_small_instances(&s);
    let at0 = instance_at(&gpus, 0);
    assert!(at0.jobs.is_empty(), "{at0:?}");

    // Created, as a submission is.
    let body = slurm_work(&at0, "4242");
    let raw = s.root().request("POST", "/v1/work", Some(&body)).unwrap();
    assert_eq!(raw.status, 201, "{}", String::from_utf8_lossy(&raw.body));
    let id = serde_json::from_slice::<serde_json::Value>(&raw.body).unwrap()["id"].as_u64().unwrap();

    let j = until_running(&s.root(), id);
    let ext = j.external.as_ref().expect("external work");
    assert_eq!((ext.door.as_str(), ext.key.as_str()), ("slurm", "4242"));
    assert_eq!(j.command, None, "nothing is run for it");
    assert_eq!(j.ranks[0].devices, [at0.mig_uuid.clone().unwrap()]);

    // The slice map says who holds it.
    let held = instance_at(&s.root().gpus().unwrap(), 0);
    assert_eq!(held.jobs, [id]);
    let ext = held.occupants[0].external.as_ref().expect("an external occupant");
    assert_eq!((ext.door.as_str(), ext.key.as_str()), ("slurm", "4242"));
    assert!(instance_at(&s.root().gpus().unwrap(), 1).jobs.is_empty());

    // Another user may not release it; a detail with a control character is refused.
    let (status, _) = refusal(s.nobody().release(id, &failed(1)));
    assert!(status == 403 || status == 404, "{status}");
    let bad = ReleaseRequest { detail: "epilog\x1b[31m".into(), ..failed(1) };
    let (status, message) = refusal(s.root().release(id, &bad));
    assert_eq!(status, 400, "{message}");
    assert!(message.starts_with("detail:"), "{message}");
    assert_eq!(s.root().job(id).unwrap().state, JobState::Running);

    // Released as failed: the job ends failed with the exit given, and the instance is free.
    let request = ReleaseRequest { detail: "slurm job 4242 ended: exit 3".into(), ..failed(3) };
    let done = s.root().release(id, &request).unwrap();
    assert_eq!(done.state, JobState::Failed, "{done:?}");
    let exit = done.exit.as_ref().expect("an exit");
    assert_eq!((exit.code, exit.detail.as_str()), (Some(3), "slurm job 4242 ended: exit 3"));
    assert_eq!(s.root().job(id).unwrap().state, JobState::Failed);
    let free = instance_at(&s.root().gpus().unwrap(), 0);
    assert!(free.jobs.is_empty() && free.occupants.is_empty(), "{free:?}");
    // Twice: a conflict.
    assert_eq!(refusal(s.root().release(id, &failed(3))).0, 409);

    // Held again and released as succeeded, without a detail: the reason says who released it.
    let id = s.root().submit_work(&slurm_work(&at0, "4243")).unwrap().id;
    until_running(&s.root(), id);
    let ok = ReleaseRequest { succeeded: true, code: Some(0), signal: None, detail: String::new() };
    let done = s.root().release(id, &ok).unwrap();
    assert_eq!((done.state, done.reason.as_str()), (JobState::Succeeded, "released by root"), "{done:?}");
    assert!(instance_at(&s.root().gpus().unwrap(), 0).jobs.is_empty());
}

/// A release of work that exited with `code`.
fn failed(code: i32) -> ReleaseRequest {
    ReleaseRequest { succeeded: false, code: Some(code), signal: None, detail: "ended".into() }
}

#[test]
fn only_admins_submit_external_work_and_door_and_key_are_checked() {
    let s = serve();
    let at0 = instance_at(&two_small_instances(&s), 0);

    let (status, message) = refusal(s.nobody().submit_work(&slurm_work(&at0, "1")));
    assert_eq!(status, 403, "{message}");
    assert!(message.contains("only admins submit external work"), "{message}");
    assert!(message.contains("nobody"), "{message}");

    let with = |door: &str, key: &str| WorkRequest { door: door.into(), key: key.into(), ..slurm_work(&at0, "x") };
    let long_door = "a".repeat(33);
    let long_key = "k".repeat(257);
    for (door, key, field) in [
        ("", "1", "door:"),
        ("Slurm", "1", "door:"),
        ("slurm job", "1", "door:"),
        ("slurm_x", "1", "door:"),
        (long_door.as_str(), "1", "door:"),
        ("kubernetes", "1", "door:"),
        ("slurm", "", "key:"),
        ("slurm", long_key.as_str(), "key:"),
        ("slurm", "42\n43", "key:"),
    ] {
        let (status, message) = refusal(s.root().submit_work(&with(door, key)));
        assert_eq!(status, 400, "{door:?} {key:?}: {message}");
        assert!(message.starts_with(field), "{door:?} {key:?}: {message}");
    }
    // The longest of each is fine.
    let id = s.root().submit_work(&with(&"a".repeat(32), &"k".repeat(256))).unwrap().id;
    until_running(&s.root(), id);

    // Unknown fields are refused.
    let mut body = serde_json::to_value(slurm_work(&at0, "1")).unwrap();
    body["colour"] = "red".into();
    let raw = s.root().request("POST", "/v1/work", Some(&body)).unwrap();
    assert_eq!(raw.status, 400);
    assert!(String::from_utf8_lossy(&raw.body).contains("unknown field `colour`"));
    // Nothing of it was queued: only the one job above.
    let all = s.root().jobs(&tessera_daemon::wire::JobQuery { all: true, ..Default::default() }).unwrap();
    assert_eq!(all.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), [id]);
}

#[test]
fn the_slice_map_gives_device_minors_and_this_machines_cpus_of_each_gpu() {
    let s = serve();
    let gpus = two_small_instances(&s);
    let spec: tessera_gpu::NodeSpec = SPEC.parse().unwrap();
    let (allowed, _) = tessera_exec::Allowed::here();
    let allowed: Vec<u32> = allowed.cpus.into_iter().collect();
    assert!(!allowed.is_empty(), "this machine's CPU affinity is unreadable");
    for g in &gpus.gpus {
        // The simulated GPU's minor is its index.
        let minor = g.minor.expect("a minor number");
        assert_eq!(minor, g.index);
        // The simulated NUMA node's CPUs, on this machine's CPUs.
        let node = g.numa_node.expect("a NUMA node");
        let mut here: Vec<u32> =
            spec.cpus_of_node(Some(node)).iter().map(|c| allowed[*c as usize % allowed.len()]).collect();
        here.sort_unstable();
        here.dedup();
        assert_eq!(g.local_cpus.as_deref(), Some(tessera_host::format_cpulist(&here).as_str()), "GPU {}", g.index);
    }
    assert_eq!(gpus.gpus[1].numa_node, Some(1));
    for i in &gpus.gpus[0].instances {
        let gi = i.gpu_instance_id.expect("a GPU instance");
        assert_eq!(i.gi_caps_minor, Some(tessera_gpu::ids::gi_caps_minor(0, gi)), "{i:?}");
        // Each made instance has one compute instance, id 0.
        assert_eq!(i.ci_caps_minor, Some(tessera_gpu::ids::ci_caps_minor(0, gi, 0)), "{i:?}");
    }
    // An old server's reply (without the new fields) still reads.
    let mut old = serde_json::to_value(&gpus).unwrap();
    for g in old["gpus"].as_array_mut().unwrap() {
        let g = g.as_object_mut().unwrap();
        g.remove("minor");
        g.remove("local_cpus");
        for i in g["instances"].as_array_mut().unwrap() {
            let i = i.as_object_mut().unwrap();
            i.remove("gi_caps_minor");
            i.remove("ci_caps_minor");
        }
    }
    let read: GpuList = serde_json::from_value(old).unwrap();
    assert_eq!(read.gpus[0].minor, None);
    assert_eq!(read.gpus[0].instances[0].gi_caps_minor, None);
}

/// The value of the first series of `name` whose line holds every one of `has`.
fn series(text: &str, name: &str, has: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| has.iter().all(|h| l.contains(h)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_say_what_the_slice_map_says() {
    let s = serve();
    let layout = LayoutRequest { instances: vec!["1g.10gb@0".into(), "3g.40gb@4".into()], dry_run: false };
    s.root().layout(0, &layout).unwrap();
    let before = s.root().gpus().unwrap();
    let id = s.root().submit_work(&slurm_work(&instance_at(&before, 0), "job/5/alice")).unwrap().id;
    until_running(&s.root(), id);
    let gpus = s.root().gpus().unwrap();
    // Anyone who may see the slice map may scrape (no token needed beyond the caller's own).
    let reply = s.nobody().request::<()>("GET", "/metrics", None).unwrap();
    assert_eq!(reply.status, 200);
    let text = String::from_utf8(reply.body).unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    for g in &gpus.gpus {
        let uuid = format!("UUID=\"{}\"", g.uuid);
        let model = format!("modelName=\"{}\"", g.name);
        assert_eq!(series(&text, "tessera_gpu_info", &[&uuid, &model, "mig=\"on\""]), Some(1.0), "{text}");
        assert_eq!(series(&text, "tessera_gpu_health", &[&uuid, "state=\"healthy\""]), Some(1.0));
        for i in &g.instances {
            let mig = format!("mig_uuid=\"{}\"", i.mig_uuid.clone().unwrap());
            let profile = format!("GPU_I_PROFILE=\"{}\"", i.profile);
            let gi = format!("GPU_I_ID=\"{}\"", i.gpu_instance_id.unwrap());
            assert_eq!(series(&text, "tessera_instance_info", &[&uuid, &mig, &profile, &gi]), Some(1.0), "{text}");
        }
    }
    let uuid0 = format!("UUID=\"{}\"", gpus.gpus[0].uuid);
    // The held 1g.10gb and who holds it, with the door's key.
    let job = format!("tessera_job=\"{id}\"");
    assert_eq!(
        series(
            &text,
            "tessera_instance_holder",
            &[&uuid0, "GPU_I_PROFILE=\"1g.10gb\"", &job, "door=\"slurm\"", "key=\"job/5/alice\""]
        ),
        Some(1.0),
        "{text}"
    );
    // GPU 0: the 1g.10gb is held (1 slice), the 3g.40gb idle (3); units 1-3 still take three 1g.
    let slices = |state: &str| series(&text, "tessera_gpu_compute_slices", &[&uuid0, &format!("state=\"{state}\"")]);
    assert_eq!(
        (slices("allocated"), slices("idle"), slices("usable"), slices("unusable")),
        (Some(1.0), Some(3.0), Some(3.0), Some(0.0))
    );
    let uuid1 = format!("UUID=\"{}\"", gpus.gpus[1].uuid);
    assert_eq!(series(&text, "tessera_gpu_compute_slices", &[&uuid1, "state=\"usable\""]), Some(7.0));
    // The node: both GPUs summed (GPU 1 has no instance).
    let node = |state: &str| series(&text, "tessera_node_compute_slices", &[&format!("state=\"{state}\"")]);
    assert_eq!(
        (node("allocated"), node("idle"), node("usable"), node("unusable")),
        (Some(1.0), Some(3.0), Some(10.0), Some(0.0))
    );
    // Memory: 3 of GPU 0's 8 (a 1g.10gb takes 1, a 3g.40gb 4) and all 8 of GPU 1.
    assert_eq!(series(&text, "tessera_node_memory_slices", &["state=\"unpartitioned\""]), Some(11.0));
    assert_eq!(series(&text, "tessera_instances", &[&uuid0, "GPU_I_PROFILE=\"3g.40gb\"", "state=\"idle\""]), Some(1.0));
    assert_eq!(series(&text, "tessera_jobs", &["state=\"running\"", "tenant=\"default\""]), Some(1.0));
    // What the tenant holds now (its quota's measure), and its usage once the ledger is saved.
    assert_eq!(series(&text, "tessera_tenant_slices", &["tenant=\"default\"", "kind=\"compute\""]), Some(1.0));
    assert_eq!(series(&text, "tessera_tenant_slices", &["tenant=\"default\"", "kind=\"memory\""]), Some(1.0));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let t = String::from_utf8(s.root().request::<()>("GET", "/metrics", None).unwrap().body).unwrap();
        if series(&t, "tessera_fair_share_usage_slice_seconds", &["tenant=\"default\""]).is_some_and(|v| v > 0.0) {
            break;
        }
        assert!(Instant::now() < deadline, "no fair-share usage for the running hold: {t}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The layout change is one completed reconfiguration of GPU 0; the hold, one start.
    assert_eq!(
        series(&text, "tessera_reconfigurations_total", &[&uuid0, "outcome=\"completed\""]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(series(&text, "tessera_reconfiguration_duration_seconds_count", &["outcome=\"completed\""]), Some(1.0));
    // Its two creates (GPU 0 had no instances), each a MIG operation that succeeded.
    assert_eq!(
        series(&text, "tessera_mig_operations_total", &[&uuid0, "operation=\"create_gpu_instance\"", "outcome=\"ok\""]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(series(&text, "tessera_mig_operations_total", &[&uuid0, "outcome=\"failed\""]), None);
    assert_eq!(series(&text, "tessera_queue_wait_seconds_count", &["tenant=\"default\""]), Some(1.0), "{text}");
    assert_eq!(series(&text, "tessera_queue_wait_seconds_bucket", &["tenant=\"default\"", "le=\"+Inf\""]), Some(1.0));
    // A second hold of the same instance waits; the metric's reason is the job's reason code.
    // Two ranks of a 3g.40gb and a 4g.40gb each need both GPUs whole, and GPU 0 holds the
    // 1g.10gb: the job waits (admission takes it: the idle node could run it).
    let two = GpuRequest::Instances(vec![
        GpuRequest::Profile { name: "3g.40gb".into() },
        GpuRequest::Profile { name: "4g.40gb".into() },
    ]);
    let mut request = JobRequest::new(two);
    request.ranks = 2;
    request.requeue = false;
    let work = WorkRequest { request, door: "slurm".into(), key: "job/6/bob".into() };
    let waiting = s.root().submit_work(&work).unwrap().id;
    let deadline = Instant::now() + Duration::from_secs(20);
    let reason = loop {
        let j = s.root().job(waiting).unwrap();
        if let Some((code, _)) = j.reason.split_once(':') {
            break code.trim().to_owned();
        }
        assert!(Instant::now() < deadline, "job {waiting} got no pending reason: {j:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = String::from_utf8(s.root().request::<()>("GET", "/metrics", None).unwrap().body).unwrap();
    assert_eq!(
        series(&text, "tessera_jobs_pending", &[&format!("reason=\"{reason}\""), "tenant=\"default\""]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(series(&text, "tessera_jobs", &["state=\"queued\""]), Some(1.0));
    s.root().cancel(waiting).unwrap();
    // Released: nobody holds it any more, and no job runs.
    s.root().release(id, &failed(0)).unwrap();
    let text = String::from_utf8(s.root().request::<()>("GET", "/metrics", None).unwrap().body).unwrap();
    assert_eq!(series(&text, "tessera_instance_holder", &[&job]), None, "{text}");
    assert_eq!(series(&text, "tessera_gpu_compute_slices", &[&uuid0, "state=\"allocated\""]), Some(0.0));
    assert_eq!(series(&text, "tessera_jobs", &["state=\"running\""]), None);
}
