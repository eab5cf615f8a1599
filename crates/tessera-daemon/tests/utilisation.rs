//! GPM utilisation end to end: the real engine on a simulated node with its health watcher
//! running (what `tessera serve` starts), the node's activity declared from outside (another
//! handle on the same state file, as a test or `tessera sim` would), and `GET /metrics` read
//! over the API: each MIG instance of a Hopper GPU (and a Hopper GPU with MIG off) shows the
//! activity of the last sample interval with dcgm-exporter's labels; an A100 shows nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_daemon::api::{Identity, Service, TokenUser};
use tessera_daemon::client::{Client, Endpoint};
use tessera_daemon::config::{Config, Tokens};
use tessera_daemon::daemon::EngineHandle;
use tessera_daemon::engine::{Engine, Paths, ShimCommand};
use tessera_daemon::wire::{GpuList, InstanceInfo, LayoutRequest};
use tessera_gpu::open::Node;
use tessera_gpu::sim::SimBackend;
use tessera_gpu::sim::activity::Activity;
use tessera_store::Store;

/// GPU 0 an H100 and GPU 1 an A100, both MIG on; GPU 2 an H100 whose MIG is turned off.
const SPEC: &str = "1xH100-80GB+1xA100-40GB+1xH100-80GB,numa=1,cpus=16";

/// How often the watcher probes, and so samples GPM.
const PROBE: Duration = Duration::from_millis(300);

/// A daemon's API over the real engine, with its health watcher, serving TCP until dropped.
struct Served {
    _dir: tempfile::TempDir,
    addr: String,
    /// The node as the test sees it (the same state file as the daemon's).
    sim: SimBackend,
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
    fn root(&self) -> Client {
        Client::new(Endpoint::Tcp { addr: self.addr.clone(), token: "r00t-token".into() })
    }

    fn metrics(&self) -> String {
        let reply = self.root().request::<()>("GET", "/metrics", None).unwrap();
        assert_eq!(reply.status, 200);
        String::from_utf8(reply.body).unwrap()
    }
}

fn serve() -> Served {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let spec: tessera_gpu::NodeSpec = SPEC.parse().unwrap();
    let node_file = state.join("sim-node.json");
    let sim = SimBackend::open(&node_file, Some(&spec)).unwrap();
    tessera_gpu::MigBackend::set_mig_mode(&sim, 2, false).unwrap();
    let store = Store::open(&state).unwrap();
    let paths = Paths {
        state_dir: state.clone(),
        output_dir: dir.path().join("output"),
        runtime_dir: dir.path().join("run"),
        dev_root: dir.path().join("dev"),
    };
    let shim = ShimCommand { exe: "/nonexistent/tessera".into(), args: vec!["shim".into()] };
    let mps = Box::new(tessera_exec::RecordingMps::new(state.join("mps.jsonl")));
    let mut engine =
        Engine::new(store, Arc::new(Node::Sim(Box::new(sim))), Config::default(), paths, shim, mps).unwrap();
    engine.recover().unwrap();
    let identity = Arc::new(Identity {
        tokens: Tokens::new(vec![("r00t-token".into(), TokenUser { uid: 0, gid: 0, name: "root".into() })]),
        config: Arc::new(Config::default()),
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let handle = Arc::new(EngineHandle::new(engine).unwrap());
            let rounds = handle.spawn_rounds(Duration::from_millis(50));
            let watcher = handle.watch_health(PROBE).unwrap();
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
            drop(watcher);
            rounds.abort();
        });
    });
    let addr = addr_rx.recv().unwrap();
    let sim = SimBackend::open(&node_file, None).unwrap();
    Served { _dir: dir, addr, sim, stop: Some(stop_tx), thread: Some(thread) }
}

/// The value of the one series of `name` whose labels include every one of `with`.
fn series(text: &str, name: &str, with: &[&str]) -> Option<f64> {
    let mut found = text.lines().filter(|l| {
        l.strip_prefix(name).is_some_and(|rest| rest.starts_with('{')) && with.iter().all(|w| l.contains(w))
    });
    let line = found.next()?;
    assert!(found.next().is_none(), "several {name} series with {with:?}:\n{text}");
    line.rsplit(' ').next()?.parse().ok()
}

/// Scrape until `done` says yes (or fail after a while, showing the last scrape).
fn until(s: &Served, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = s.metrics();
        if done(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "{what}: never happened; the last scrape:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn instance(gpus: &GpuList, gpu: usize, profile: &str) -> InstanceInfo {
    gpus.gpus[gpu].instances.iter().find(|i| i.profile == profile).cloned().unwrap_or_else(|| panic!("{gpus:?}"))
}

fn near(v: Option<f64>, want: f64) -> bool {
    v.is_some_and(|v| (v - want).abs() <= 0.03)
}

#[test]
fn metrics_show_each_instances_gpm_activity_and_nothing_for_an_a100() {
    let s = serve();
    let layout = |gpu: u32, instances: &[&str]| {
        let req = LayoutRequest { instances: instances.iter().map(|i| (*i).to_owned()).collect(), dry_run: false };
        s.root().layout(gpu, &req).unwrap();
    };
    layout(0, &["3g.40gb@4", "1g.10gb@0"]);
    layout(1, &["3g.20gb@4"]);
    let gpus = s.root().gpus().unwrap();
    let (busy, idle, a100) =
        (instance(&gpus, 0, "3g.40gb"), instance(&gpus, 0, "1g.10gb"), instance(&gpus, 1, "3g.20gb"));
    let gi = |i: &InstanceInfo| i.gpu_instance_id.unwrap();
    let work = Activity::new(0.6, 0.3, 0.4, 0.5);
    s.sim.set_activity(0, Some(gi(&busy)), &work).unwrap();
    s.sim.set_activity(1, Some(gi(&a100)), &Activity::new(1.0, 1.0, 1.0, 1.0)).unwrap();
    s.sim.set_activity(2, None, &Activity::new(0.2, 0.1, 0.0, 0.9)).unwrap();

    let uuid = |g: usize| format!("UUID=\"{}\"", gpus.gpus[g].uuid);
    let (uuid0, uuid1, uuid2) = (uuid(0), uuid(1), uuid(2));
    let busy_labels = [uuid0.as_str(), "GPU_I_PROFILE=\"3g.40gb\"", &format!("GPU_I_ID=\"{}\"", gi(&busy))];
    let idle_id = format!("GPU_I_ID=\"{}\"", gi(&idle));
    let idle_labels = [uuid0.as_str(), "GPU_I_PROFILE=\"1g.10gb\"", idle_id.as_str()];
    // Two samples make the first interval; wait for one that has all declared (the watcher may
    // have sampled before the declaration).
    let text = until(&s, "the busy instance's activity", |t| {
        near(series(t, "tessera_instance_sm_active", &busy_labels), 0.6)
            && near(series(t, "tessera_instance_sm_active", &[&uuid2]), 0.2)
    });
    for (metric, want) in [
        ("tessera_instance_sm_active", 0.6),
        ("tessera_instance_sm_occupancy", 0.3),
        ("tessera_instance_tensor_active", 0.4),
        ("tessera_instance_dram_active", 0.5),
        ("tessera_instance_fp64_active", 0.0),
    ] {
        let v = series(&text, metric, &busy_labels);
        assert!(near(v, want), "{metric} of the 3g.40gb: {v:?}, declared {want}:\n{text}");
    }
    assert!(near(series(&text, "tessera_instance_sm_active", &idle_labels), 0.0), "{text}");
    // dcgm-exporter's GPU labels on every series; the GPU with MIG off has no instance labels.
    let full = text.lines().find(|l| l.starts_with("tessera_instance_sm_active{") && l.contains(&uuid0)).unwrap();
    for label in ["gpu=\"0\"", "device=\"nvidia0\"", "modelName=\"NVIDIA H100 80GB HBM3\"", "Hostname="] {
        assert!(full.contains(label), "{label} missing: {full}");
    }
    let whole = text.lines().find(|l| l.starts_with("tessera_instance_dram_active{") && l.contains(&uuid2)).unwrap();
    assert!(
        !whole.contains("GPU_I_ID") && near(series(&text, "tessera_instance_dram_active", &[&uuid2]), 0.9),
        "{whole}"
    );
    // The A100 has no GPM: no series of it at all, and the rest of /metrics is there.
    for m in tessera_gpu::GpmMetric::ALL {
        let name = format!("tessera_instance_{}{{", m.name());
        assert!(!text.lines().any(|l| l.starts_with(&name) && l.contains(&uuid1)), "{name} of the A100:\n{text}");
    }
    assert_eq!(series(&text, "tessera_gpu_info", &[&uuid1]), Some(1.0), "{text}");
    assert!(text.contains("# HELP tessera_instance_sm_active ") && text.contains("DCGM_FI_PROF_SM_ACTIVE"), "{text}");

    // The values are the last interval's: the work stops, the next interval says so.
    s.sim.set_activity(0, Some(gi(&busy)), &Activity::IDLE).unwrap();
    until(&s, "the busy instance going idle", |t| near(series(t, "tessera_instance_sm_active", &busy_labels), 0.0));

    // An instance destroyed by a layout change has no series any more.
    layout(0, &["3g.40gb@4"]);
    until(&s, "the 1g.10gb's series going", |t| {
        series(t, "tessera_instance_sm_active", &idle_labels).is_none()
            && series(t, "tessera_instance_sm_active", &busy_labels).is_some()
    });
}
