//! The node agent's front door, in process over real Unix sockets: the daemon's engine (its
//! rounds running) on a simulated node, the plugin fed from it, the kubelet stand-in calling
//! `Allocate`, and a PodResources stand-in saying which pod holds what.

#[allow(dead_code)]
#[path = "common/kubelet.rs"]
mod kubelet;
#[path = "common/podresources.rs"]
mod podresources;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kubelet::Kubelet;
use podresources::{Held, PodResourcesStandIn};
use tessera_daemon::api::Service;
use tessera_daemon::config::Config;
use tessera_daemon::daemon::EngineHandle;
use tessera_daemon::engine::{Action, Caller, Door, Engine, Paths, Reply, ShimCommand};
use tessera_daemon::wire::{GpuList, LayoutRequest};
use tessera_deviceplugin::{AgentOptions, PluginOptions, run_agent};
use tessera_exec::RecordingMps;
use tessera_gpu::open::Node;
use tessera_gpu::sim::SimBackend;
use tessera_kube_core::{DeviceListStrategy, MigStrategy, PluginConfig};
use tessera_sched::{GpuRequest, JobRequest};
use tessera_store::{ExternalWork, Store, Work};
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(10);
const RESOURCE: &str = "nvidia.com/mig-1g.10gb";

fn root() -> Caller {
    Caller { uid: 0, gid: 0, user: "root".into(), tenant: "default".into(), admin: true, door: Door::Internal }
}

/// An engine on one simulated H100 cut into two 1g.10gb instances, its state in `dir`.
fn engine(dir: &Path) -> Engine {
    let spec: tessera_gpu::NodeSpec = "1xH100-80GB,numa=1,cpus=16".parse().expect("node spec");
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
    let mut e =
        Engine::new(store, Arc::new(Node::Sim(Box::new(sim))), Config::default(), paths, shim, mps).expect("engine");
    e.recover().expect("recover");
    let request = LayoutRequest { instances: vec!["1g.10gb@0".into(), "1g.10gb@1".into()], dry_run: false };
    e.act(&root(), Action::Layout { gpu: 0, request }).expect("layout");
    e
}

async fn gpus(engine: &EngineHandle) -> GpuList {
    match engine.act(root(), Action::Gpus).await.expect("gpus") {
        Reply::Gpus(g) => g,
        other => panic!("unexpected reply {other:?}"),
    }
}

/// Who holds the instance whose MIG device is `id`: (job, external key).
async fn holder(engine: &EngineHandle, id: &str) -> Option<(u64, String)> {
    let g = gpus(engine).await;
    let inst = g.gpus[0].instances.iter().find(|i| i.mig_uuid.as_deref() == Some(id)).expect("the instance");
    inst.occupants.first().map(|o| (o.job, o.external.as_ref().map(|x| x.key.clone()).unwrap_or_default()))
}

/// Polls `f` until it gives `Some`, at most [`WAIT`].
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(what: &str, mut f: impl FnMut() -> F) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(t) = f().await {
            return t;
        }
        assert!(tokio::time::Instant::now() < deadline, "waited {WAIT:?} for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocations_are_held_for_their_pods_released_and_adopted() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["device-plugins", "cdi"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
    }
    let engine = Arc::new(EngineHandle::new(engine(dir.path())).expect("engine handle"));
    let _rounds = engine.spawn_rounds(Duration::from_millis(50));
    let kubelet = Kubelet::start(&dir.path().join("device-plugins"));
    let pods = PodResourcesStandIn::start(&dir.path().join("pod-resources.sock"));
    let config = PluginConfig {
        mig_strategy: MigStrategy::Mixed,
        device_list_strategy: vec![DeviceListStrategy::EnvVar],
        ..PluginConfig::default()
    };
    let mut plugin = PluginOptions::new(config);
    plugin.device_plugin_dir = dir.path().join("device-plugins");
    plugin.cdi_dir = dir.path().join("cdi");
    plugin.watch_interval = Duration::from_millis(50);
    let options = AgentOptions {
        plugin,
        pod_resources: pods.socket.clone(),
        interval: Duration::from_millis(100),
        tenant: "default".into(),
    };
    let (stop, stopped) = watch::channel(false);
    let agent = tokio::spawn(run_agent(engine.clone(), options, stopped));

    // Both instances advertised.
    let ids: Vec<String> = kubelet
        .wait_for("both 1g.10gb devices", WAIT, |s| {
            let ds = s.resources.get(RESOURCE)?.devices()?;
            (ds.len() == 2).then(|| ds.iter().map(|d| d.id.clone()).collect())
        })
        .await;
    let (d0, d1) = (ids[0].clone(), ids[1].clone());

    // Allocate: the engine holds the device before the kubelet hears back.
    kubelet.allocate(RESOURCE, &[&d0]).await.expect("allocate");
    let (pod_job, key) = holder(&engine, &d0).await.expect("held once Allocate answered");
    assert!(key.starts_with("allocated:"), "{key}");

    // The daemon's own job for that profile gets the other instance, which is no longer offered.
    let request = JobRequest::new(GpuRequest::Profile { name: "1g.10gb".into() });
    let work = Work::External(ExternalWork { door: "test".into(), key: "own".into() });
    engine.act(root(), Action::SubmitWork { request, work }).await.expect("submit");
    eventually("the daemon's job on the other instance", || async { holder(&engine, &d1).await }).await;
    kubelet
        .wait_for("only the pod's device advertised", WAIT, |s| {
            let ds = s.resources.get(RESOURCE)?.devices()?;
            (ds.len() == 1 && ds[0].id == d0).then_some(())
        })
        .await;

    // A second pod cannot get the held device: refused naming the holder.
    let refused = kubelet.allocate(RESOURCE, &[&d0]).await.expect_err("held by the first pod");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains(&format!("held by job {pod_job}")), "{}", refused.message());

    // The kubelet lists the pod: the hold is named after it.
    pods.set(vec![Held::new("ns/pod-a/main", RESOURCE, &[&d0])]);
    eventually("the hold named after its pod", || async {
        holder(&engine, &d0).await.filter(|(j, k)| *j == pod_job && k == "ns/pod-a/main")
    })
    .await;

    // The pod ends: the kubelet no longer lists it, and the hold is released.
    pods.set(Vec::new());
    eventually("the hold released", || async { holder(&engine, &d0).await.is_none().then_some(()) }).await;

    // Devices the kubelet lists that the engine does not hold are adopted for their pod.
    pods.set(vec![Held::new("ns/pod-b/main", RESOURCE, &[&d0])]);
    eventually("the device adopted", || async { holder(&engine, &d0).await.filter(|(_, k)| k == "ns/pod-b/main") })
        .await;

    let _ = stop.send(true);
    tokio::time::timeout(WAIT, agent).await.expect("the agent stops").expect("joined").expect("no error");
}
