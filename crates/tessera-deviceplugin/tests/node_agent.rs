//! The node agent's front door, in process over real Unix sockets: the daemon's engine (its
//! rounds running) on a simulated node, the plugin fed from it, the kubelet stand-in calling
//! `Allocate`, and a PodResources stand-in saying which pod holds what.

#[allow(dead_code)]
#[path = "common/kubelet.rs"]
mod kubelet;
#[path = "common/podresources.rs"]
mod podresources;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kubelet::Kubelet;
use podresources::{Held, PodResourcesStandIn};
use tessera_daemon::api::Service;
use tessera_daemon::config::Config;
use tessera_daemon::daemon::EngineHandle;
use tessera_daemon::engine::{Action, Caller, Door, Engine, Paths, Reply, ShimCommand};
use tessera_daemon::wire::{GpuList, JobView, LayoutRequest};
use tessera_deviceplugin::{AgentOptions, KubeDoor, PluginOptions, run_agent};
use tessera_exec::RecordingMps;
use tessera_gpu::open::Node;
use tessera_gpu::sim::SimBackend;
use tessera_kube_core::{DeviceListStrategy, MigStrategy, PluginConfig};
use tessera_sched::{GpuRequest, JobRequest, Sharing};
use tessera_store::{ExitInfo, ExternalWork, JobState, Store, Work};
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(10);
const RESOURCE: &str = "nvidia.com/mig-1g.10gb";

fn root() -> Caller {
    Caller { uid: 0, gid: 0, user: "root".into(), tenant: "default".into(), admin: true, door: Door::Internal }
}

/// An engine on one simulated H100 cut into two 1g.10gb instances, its state in `dir`.
fn engine(dir: &Path) -> Engine {
    engine_on(dir, "1xH100-80GB,numa=1,cpus=16", Some(&["1g.10gb@0", "1g.10gb@1"]), Config::default())
}

/// An engine with `config` on the simulated node `spec`, GPU 0 cut into `layout` (MIG on), its
/// state in `dir`.
fn engine_on(dir: &Path, spec: &str, layout: Option<&[&str]>, config: Config) -> Engine {
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
    if let Some(layout) = layout {
        let request = LayoutRequest { instances: layout.iter().map(|s| s.to_string()).collect(), dry_run: false };
        e.act(&root(), Action::Layout { gpu: 0, request }).expect("layout");
    }
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

/// The node agent running beside an engine, with both stand-ins.
struct Agent {
    engine: Arc<EngineHandle>,
    kubelet: Kubelet,
    pods: PodResourcesStandIn,
    stop: watch::Sender<bool>,
    agent: tokio::task::JoinHandle<Result<(), tessera_deviceplugin::PluginError>>,
    _rounds: tokio::task::JoinHandle<()>,
}

impl Agent {
    /// Runs the engine's rounds and the node agent with `config` (NVIDIA's plugin config).
    fn start(dir: &Path, engine: Engine, config: PluginConfig) -> Agent {
        for sub in ["device-plugins", "cdi"] {
            std::fs::create_dir(dir.join(sub)).unwrap();
        }
        let engine = Arc::new(EngineHandle::new(engine).expect("engine handle"));
        let rounds = engine.spawn_rounds(Duration::from_millis(50));
        let kubelet = Kubelet::start(&dir.join("device-plugins"));
        let pods = PodResourcesStandIn::start(&dir.join("pod-resources.sock"));
        let mut plugin = PluginOptions::new(config);
        plugin.device_plugin_dir = dir.join("device-plugins");
        plugin.cdi_dir = dir.join("cdi");
        plugin.watch_interval = Duration::from_millis(50);
        let options = AgentOptions {
            plugin,
            pod_resources: pods.socket.clone(),
            interval: Duration::from_millis(100),
            tenant: "default".into(),
        };
        let (stop, stopped) = watch::channel(false);
        let agent = tokio::spawn(run_agent(engine.clone(), options, stopped));
        Agent { engine, kubelet, pods, stop, agent, _rounds: rounds }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(WAIT, self.agent).await.expect("the agent stops").expect("joined").expect("no error");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocations_are_held_for_their_pods_released_and_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let config = PluginConfig {
        mig_strategy: MigStrategy::Mixed,
        device_list_strategy: vec![DeviceListStrategy::EnvVar],
        ..PluginConfig::default()
    };
    let a = Agent::start(dir.path(), engine(dir.path()), config);
    let (engine, kubelet, pods) = (&a.engine, &a.kubelet, &a.pods);

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
    let (pod_job, key) = holder(engine, &d0).await.expect("held once Allocate answered");
    assert!(key.starts_with("allocated:"), "{key}");

    // The daemon's own job for that profile gets the other instance, which is no longer offered.
    let request = JobRequest::new(GpuRequest::Profile { name: "1g.10gb".into() });
    let work = Work::External(ExternalWork { door: "test".into(), key: "own".into() });
    engine.act(root(), Action::SubmitWork { request, work }).await.expect("submit");
    eventually("the daemon's job on the other instance", || async { holder(engine, &d1).await }).await;
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
        holder(engine, &d0).await.filter(|(j, k)| *j == pod_job && k == "ns/pod-a/main")
    })
    .await;

    // The pod ends: the kubelet no longer lists it, and the hold is released.
    pods.set(Vec::new());
    eventually("the hold released", || async { holder(engine, &d0).await.is_none().then_some(()) }).await;

    // Devices the kubelet lists that the engine does not hold are adopted for their pod.
    pods.set(vec![Held::new("ns/pod-b/main", RESOURCE, &[&d0])]);
    eventually("the device adopted", || async { holder(engine, &d0).await.filter(|(_, k)| k == "ns/pod-b/main") })
        .await;

    a.stop().await;
}

/// NVIDIA's plugin config: `mixed`, each 1g.10gb time-sliced six ways (more than the engine's
/// own `time_slice_replicas`, 4).
const TIME_SLICED: &str = "version: v1
flags:
  migStrategy: mixed
sharing:
  timeSlicing:
    resources:
    - name: nvidia.com/mig-1g.10gb
      replicas: 6
";

/// NVIDIA's plugin config: whole GPUs under MPS four ways, as `nvidia.com/gpu.shared`.
const MPS: &str = "version: v1
flags:
  migStrategy: none
sharing:
  mps:
    renameByDefault: true
    resources:
    - name: nvidia.com/gpu
      replicas: 4
";
const MPS_RESOURCE: &str = "nvidia.com/gpu.shared";

/// Every job on the instance whose MIG device is `id` (`None`: GPU 0, whole), with its external
/// key, by job.
async fn holders(engine: &EngineHandle, id: Option<&str>) -> Vec<(u64, String)> {
    let g = gpus(engine).await;
    let inst = match id {
        Some(id) => g.gpus[0].instances.iter().find(|i| i.mig_uuid.as_deref() == Some(id)),
        None => g.gpus[0].instances.first(),
    }
    .expect("the instance");
    let mut out: Vec<(u64, String)> = inst
        .occupants
        .iter()
        .map(|o| (o.job, o.external.as_ref().map(|x| x.key.clone()).unwrap_or_default()))
        .collect();
    out.sort();
    out
}

async fn job(engine: &EngineHandle, id: u64) -> JobView {
    match engine.act(root(), Action::GetJob { id }).await.expect("job") {
        Reply::Job(j) => *j,
        other => panic!("unexpected reply {other:?}"),
    }
}

/// The advertised replica IDs of `resource` once there are `n`, and their devices in order.
async fn replicas(kubelet: &Kubelet, resource: &str, n: usize) -> (Vec<String>, Vec<String>) {
    let ids: Vec<String> = kubelet
        .wait_for(&format!("{n} replicas of {resource}"), WAIT, |s| {
            let ds = s.resources.get(resource)?.devices()?;
            (ds.len() == n).then(|| ds.iter().map(|d| d.id.clone()).collect())
        })
        .await;
    let mut bases: Vec<String> = ids.iter().map(|i| i.split("::").next().unwrap().to_string()).collect();
    bases.dedup();
    (ids, bases)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_sliced_replicas_are_held_per_pod_and_keep_their_instance_busy() {
    let dir = tempfile::tempdir().unwrap();
    let config = tessera_kube_core::parse_config(TIME_SLICED, "config.yaml").expect("config");
    // Without repartitioning, a job that finds no free instance waits for one.
    let mut fixed = Config::default();
    fixed.scheduler.repartition = false;
    let engine = engine_on(dir.path(), "1xH100-80GB,numa=1,cpus=16", Some(&["1g.10gb@0", "1g.10gb@1"]), fixed);
    let a = Agent::start(dir.path(), engine, config);
    let (ids, bases) = replicas(&a.kubelet, RESOURCE, 12).await;
    let (d0, d1) = (bases[0].clone(), bases[1].clone());
    let r: Vec<&str> = ids.iter().filter(|i| i.starts_with(&format!("{d0}::"))).map(String::as_str).collect();

    // Five pods get replicas of d0 (pod b two of them): five holds, all time-sliced on the one
    // instance, more than the engine's own time_slice_replicas.
    let pods: [(&str, &[&str]); 5] = [
        ("ns/pod-a/main", &[r[0]]),
        ("ns/pod-b/main", &[r[1], r[2]]),
        ("ns/pod-c/main", &[r[3]]),
        ("ns/pod-d/main", &[r[4]]),
        ("ns/pod-e/main", &[r[5]]),
    ];
    for (_, devices) in pods {
        a.kubelet.allocate(RESOURCE, devices).await.expect("allocate a replica");
    }
    let held = holders(&a.engine, Some(&d0)).await;
    let provisional = |ds: &[&str]| {
        let mut sorted = ds.to_vec();
        sorted.sort_unstable();
        format!("allocated:{}", sorted.join(","))
    };
    let want: BTreeSet<String> = pods.iter().map(|(_, ds)| provisional(ds)).collect();
    assert_eq!(held.iter().map(|(_, k)| k.clone()).collect::<BTreeSet<_>>(), want, "{held:?}");
    for (id, _) in &held {
        let j = job(&a.engine, *id).await;
        assert_eq!(j.resources.sharing, Sharing::TimeSlice, "job {id}");
        assert_eq!(j.ranks[0].slices[0].mig_uuid.as_deref(), Some(d0.as_str()), "job {id}");
    }

    // PodResources names each hold after its pod, telling the two pods' replicas apart.
    a.pods.set(pods.iter().map(|(k, ds)| Held::new(k, RESOURCE, ds)).collect());
    let named = eventually("every hold named after its pod", || async {
        let h = holders(&a.engine, Some(&d0)).await;
        h.iter().all(|(_, k)| !k.starts_with("allocated:")).then_some(h)
    })
    .await;
    let keys: BTreeSet<&str> = named.iter().map(|(_, k)| k.as_str()).collect();
    assert_eq!(keys, pods.iter().map(|(k, _)| *k).collect::<BTreeSet<_>>());
    // Each hold is named after the container its replicas were allocated to.
    for (k, ds) in pods {
        let (id, _) = named.iter().find(|(_, key)| key == k).expect("named");
        let (_, key) = held.iter().find(|(j, _)| j == id).expect("the same job");
        assert_eq!(key, &provisional(ds), "{k}");
    }

    // An admin's layout change destroying the instance is refused, naming the pods.
    let g = gpus(&a.engine).await;
    let other = g.gpus[0].instances.iter().find(|i| i.mig_uuid.as_deref() == Some(d1.as_str())).expect("d1").start;
    let request = LayoutRequest { instances: vec![format!("1g.10gb@{other}")], dry_run: false };
    let refused = a.engine.act(root(), Action::Layout { gpu: 0, request }).await.expect_err("the pods' instance");
    for (k, _) in pods {
        assert!(refused.to_string().contains(k), "{k} missing from: {refused}");
    }

    // The daemon's exclusive jobs: the first gets the other instance (no longer advertised; the
    // pods' instance still is), the second never gets the pods' instance.
    let submit = |key: &str| {
        let request = JobRequest::new(GpuRequest::Profile { name: "1g.10gb".into() });
        let work = Work::External(ExternalWork { door: "test".into(), key: key.into() });
        Action::SubmitWork { request, work }
    };
    a.engine.act(root(), submit("own-1")).await.expect("submit");
    eventually("the daemon's job on the other instance", || async { holder(&a.engine, &d1).await }).await;
    a.kubelet
        .wait_for("only the pods' instance advertised", WAIT, |s| {
            let ds = s.resources.get(RESOURCE)?.devices()?;
            (ds.len() == 6 && ds.iter().all(|d| d.id.starts_with(&format!("{d0}::")))).then_some(())
        })
        .await;
    let second = match a.engine.act(root(), submit("own-2")).await.expect("submit") {
        Reply::Submitted(s) => s.id,
        other => panic!("unexpected reply {other:?}"),
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(job(&a.engine, second).await.state, JobState::Queued);
    assert_eq!(holders(&a.engine, Some(&d0)).await, named, "the pods' instance is theirs alone");

    // The pods end: their holds are released, and the waiting job gets the instance.
    a.pods.set(Vec::new());
    eventually("the pods' instance freed and given to the waiting job", || async {
        (holders(&a.engine, Some(&d0)).await == [(second, "own-2".to_string())]).then_some(())
    })
    .await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_time_sliced_job_never_joins_the_pods_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let config = tessera_kube_core::parse_config(TIME_SLICED, "config.yaml").expect("config");
    // The engine time-slices its own jobs four ways (the default) and may not repartition: a
    // time-sliced job would join the pods' instance (two holds, fewer than four) before it took
    // a fresh one.
    let mut fixed = Config::default();
    fixed.scheduler.repartition = false;
    assert!(fixed.scheduler.time_slice_replicas > 2);
    let engine = engine_on(dir.path(), "1xH100-80GB,numa=1,cpus=16", Some(&["1g.10gb@0", "1g.10gb@1"]), fixed);
    let a = Agent::start(dir.path(), engine, config.clone());
    let (ids, bases) = replicas(&a.kubelet, RESOURCE, 12).await;
    let (d0, d1) = (bases[0].clone(), bases[1].clone());
    let of = |d: &str| -> Vec<String> { ids.iter().filter(|i| i.starts_with(&format!("{d}::"))).cloned().collect() };
    let (r0, r1) = (of(&d0), of(&d1));

    // Two pods share d0.
    for r in &r0[..2] {
        a.kubelet.allocate(RESOURCE, &[r]).await.expect("allocate a replica");
    }
    let pods = holders(&a.engine, Some(&d0)).await;
    assert_eq!(pods.len(), 2, "{pods:?}");

    // Two time-sliced jobs of the daemon's own (as `tessera submit --share time-slice` makes
    // them): both on d1, never on the pods' instance, whose six replicas stay advertised.
    let submit = |key: &str| {
        let mut request = JobRequest::new(GpuRequest::Profile { name: "1g.10gb".into() });
        request.sharing = Sharing::TimeSlice;
        let work = Work::External(ExternalWork { door: "test".into(), key: key.into() });
        Action::SubmitWork { request, work }
    };
    for key in ["own-1", "own-2"] {
        a.engine.act(root(), submit(key)).await.expect("submit");
    }
    let own = eventually("both of the daemon's jobs on d1", || async {
        let h = holders(&a.engine, Some(&d1)).await;
        (h.len() == 2).then_some(h)
    })
    .await;
    assert_eq!(own.iter().map(|(_, k)| k.as_str()).collect::<Vec<_>>(), ["own-1", "own-2"]);
    assert_eq!(holders(&a.engine, Some(&d0)).await, pods, "the pods' instance is theirs alone");
    a.kubelet
        .wait_for("the pods' replicas advertised, d1's not", WAIT, |s| {
            let ds: BTreeSet<String> = s.resources.get(RESOURCE)?.devices()?.iter().map(|d| d.id.clone()).collect();
            (ds == r0.iter().cloned().collect::<BTreeSet<_>>()).then_some(())
        })
        .await;

    // A pod's replica of d1 (one the kubelet lists from before, say) is not held: a pod's share
    // never joins a job the scheduler placed. The plugin refuses it unadvertised; the door
    // itself, asked to adopt it, is refused naming the jobs.
    let door = KubeDoor::new(a.engine.clone(), root(), "default".into(), config);
    let gpus = a.engine.node_state().await.expect("node state").gpus;
    let refused = door.hold(&r1[..1], &gpus, Some("ns/pod-c/main")).await.expect_err("d1 is the daemon's");
    for (id, _) in &own {
        assert!(refused.to_string().contains(&format!("job {id} (time-sliced, not pinned)")), "{refused}");
    }
    assert_eq!(holders(&a.engine, Some(&d1)).await, own);
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mps_replicas_are_held_with_nvidias_share() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = tessera_kube_core::parse_config(MPS, "config.yaml").expect("config");
    config.mps_root = dir.path().join("mps").display().to_string();
    let engine = engine_on(dir.path(), "1xH100-80GB,numa=1,cpus=16,mig=off", None, Config::default());
    let a = Agent::start(dir.path(), engine, config);
    let (ids, _) = replicas(&a.kubelet, MPS_RESOURCE, 4).await;
    // The renamed resource's control daemon serves the pipe directory its pods are given.
    let started = mps_commands(dir.path());
    assert_eq!(started[0].0, "start");
    assert_eq!(
        started[0].2["CUDA_MPS_PIPE_DIRECTORY"],
        serde_json::json!(dir.path().join("mps/nvidia.com/gpu.shared/pipe"))
    );
    let memory = a.engine.node_state().await.expect("node state").gpus[0].device.memory_total_mib;
    let share = Sharing::Mps { active_thread_pct: 25, pinned_mem_mib: Some(memory / 4) };

    // Four pods, one replica each: four holds of the whole GPU, each with a quarter (together
    // they pin more than the 7g.80gb profile's memory; the kubelet bounds them, not the engine).
    let keys = ["ns/pod-a/main", "ns/pod-b/main", "ns/pod-c/main", "ns/pod-d/main"];
    for id in &ids {
        a.kubelet.allocate(MPS_RESOURCE, &[id]).await.expect("allocate a replica");
    }
    let held = holders(&a.engine, None).await;
    assert_eq!(held.len(), 4, "{held:?}");
    for (id, _) in &held {
        assert_eq!(job(&a.engine, *id).await.resources.sharing, share, "job {id}");
    }
    let listed = |which: &[usize]| -> Vec<Held> {
        which.iter().map(|&i| Held::new(keys[i], MPS_RESOURCE, &[ids[i].as_str()])).collect()
    };
    a.pods.set(listed(&[0, 1, 2, 3]));
    eventually("every hold named", || async {
        let h = holders(&a.engine, None).await;
        let named: BTreeSet<String> = h.iter().map(|(_, k)| k.clone()).collect();
        (named == keys.iter().map(|k| k.to_string()).collect()).then_some(())
    })
    .await;

    // Pod b ends: its hold alone is released. Pod e, listed with b's replica but never held,
    // is adopted with the same share.
    a.pods.set(listed(&[0, 2, 3]));
    eventually("pod b's hold released", || async { (holders(&a.engine, None).await.len() == 3).then_some(()) }).await;
    let mut with_e = listed(&[0, 2, 3]);
    with_e.push(Held::new("ns/pod-e/main", MPS_RESOURCE, &[ids[1].as_str()]));
    a.pods.set(with_e);
    let (e, _) = eventually("pod e adopted", || async {
        holders(&a.engine, None).await.into_iter().find(|(_, k)| k == "ns/pod-e/main")
    })
    .await;
    assert_eq!(job(&a.engine, e).await.resources.sharing, share);

    // A daemon job that wants the whole GPU exclusively waits; all pods gone, it gets it.
    let request = JobRequest::new(GpuRequest::WholeGpu);
    let work = Work::External(ExternalWork { door: "test".into(), key: "own".into() });
    a.engine.act(root(), Action::SubmitWork { request, work }).await.expect("submit");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(holders(&a.engine, None).await.len(), 4);
    a.pods.set(Vec::new());
    eventually("the GPU freed and given to the daemon's job", || async {
        let h = holders(&a.engine, None).await;
        (h.len() == 1 && h[0].1 == "own").then_some(())
    })
    .await;
    a.stop().await;
}

/// NVIDIA's plugin config: whole GPUs under MPS four ways, under their own name.
const MPS_GPU: &str = "version: v1
flags:
  migStrategy: none
sharing:
  mps:
    resources:
    - name: nvidia.com/gpu
      replicas: 4
";

/// The simulated node's recorded MPS commands: (op, the command or start's devices, the
/// environment), in order.
fn mps_commands(dir: &Path) -> Vec<(String, String, serde_json::Value)> {
    std::fs::read_to_string(dir.join("state/mps.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            let op = v["op"].as_str().expect("op").to_string();
            let what = if op == "start" { v["mig_uuid"].as_str() } else { v["stdin"].as_str() };
            (op, what.expect("a command").to_string(), v["env"].clone())
        })
        .collect()
}

/// With `sharing.mps`, the node agent runs one MPS control daemon for the shared resource, as
/// NVIDIA's plugin does: over both GPUs, at the pipe directory `Allocate` gives the pods, with a
/// quarter of the threads and of each GPU's memory; kept while a GPU fewer is advertised, quit
/// when the resource goes, started again when it comes back, left running when the agent stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mps_control_daemon_serves_the_shared_gpus() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = tessera_kube_core::parse_config(MPS_GPU, "config.yaml").expect("config");
    let root = dir.path().join("mps");
    config.mps_root = root.display().to_string();
    let engine = engine_on(dir.path(), "2xH100-80GB,numa=1,cpus=16,mig=off", None, Config::default());
    let a = Agent::start(dir.path(), engine, config);
    let (ids, _) = replicas(&a.kubelet, "nvidia.com/gpu", 8).await;
    let mut gpus = a.engine.node_state().await.expect("node state").gpus;
    gpus.sort_by_key(|g| g.device.index);
    let (u0, u1) = (gpus[0].device.uuid.clone(), gpus[1].device.uuid.clone());
    let quarter = |i: usize| gpus[i].device.memory_total_mib / 4;
    let pipe = root.join("nvidia.com/gpu/pipe");
    let env = |devices: &str| {
        serde_json::json!({
            "CUDA_VISIBLE_DEVICES": devices,
            "CUDA_MPS_PIPE_DIRECTORY": pipe,
            "CUDA_MPS_LOG_DIRECTORY": root.join("nvidia.com/gpu/log"),
        })
    };
    let both = format!("{u0},{u1}");
    let line = |op: &str, what: String, devices: &str| (op.to_string(), what, env(devices));

    // Started before the plugin registered: one control daemon over both GPUs, with NVIDIA's
    // defaults.
    let started = vec![
        line("start", both.clone(), &both),
        line("command", format!("set_default_device_pinned_mem_limit {u0} {}M", quarter(0)), &both),
        line("command", format!("set_default_device_pinned_mem_limit {u1} {}M", quarter(1)), &both),
        line("command", "set_default_active_thread_percentage 25".into(), &both),
    ];
    assert_eq!(mps_commands(dir.path()), started);
    assert!(quarter(0) > 0);

    // A pod's replica is given that pipe directory.
    let given = a.kubelet.allocate("nvidia.com/gpu", &[&ids[0]]).await.expect("allocate a replica");
    assert_eq!(given.envs["CUDA_MPS_PIPE_DIRECTORY"], "/mps/nvidia.com/gpu/pipe");
    assert!(given.mounts.iter().any(|m| Path::new(&m.host_path) == pipe), "{:?}", given.mounts);
    a.pods.set(vec![Held::new("ns/pod-a/main", "nvidia.com/gpu", &[&ids[0]])]);
    eventually("the pod's hold named", || async {
        holders_of(&a.engine).await.iter().any(|k| k == "ns/pod-a/main").then_some(())
    })
    .await;
    a.pods.set(Vec::new());
    eventually("the pod's hold released", || async { holders_of(&a.engine).await.is_empty().then_some(()) }).await;

    // One of Tessera's own jobs takes a GPU whole: a GPU fewer is advertised, the control daemon
    // stays (the pods on the other GPU keep their MPS server).
    let submit = |key: &str| {
        let request = JobRequest::new(GpuRequest::WholeGpu);
        let work = Work::External(ExternalWork { door: "test".into(), key: key.into() });
        Action::SubmitWork { request, work }
    };
    let first = match a.engine.act(root_caller(), submit("own-1")).await.expect("submit") {
        Reply::Submitted(s) => s.id,
        other => panic!("unexpected reply {other:?}"),
    };
    replicas(&a.kubelet, "nvidia.com/gpu", 4).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(mps_commands(dir.path()), started, "kept with a GPU fewer");

    // Another takes the other GPU: nothing is advertised, the control daemon is quit.
    a.engine.act(root_caller(), submit("own-2")).await.expect("submit");
    let quit = eventually("the control daemon quit", || async {
        let c = mps_commands(dir.path());
        (c.len() == 5).then_some(c)
    })
    .await;
    assert_eq!(quit[4], line("command", "quit".into(), &both));

    // The first job ends: its GPU is shared again, under a control daemon of its own.
    let ended = ExitInfo { code: Some(0), signal: None, failed_rank: None, detail: "done".into() };
    a.engine.act(root_caller(), Action::Release { id: first, exit: ended, succeeded: true }).await.expect("release");
    let again = eventually("the control daemon started again", || async {
        let c = mps_commands(dir.path());
        (c.len() == 8).then_some(c)
    })
    .await;
    let (i, freed) = if again[5].1 == u0 { (0, u0.clone()) } else { (1, u1.clone()) };
    assert_eq!(
        again[5..],
        [
            line("start", freed.clone(), &freed),
            line("command", format!("set_default_device_pinned_mem_limit {freed} {}M", quarter(i)), &freed),
            line("command", "set_default_active_thread_percentage 25".into(), &freed),
        ]
    );

    // The agent stops: the control daemon stays up for the pods, recorded for the next agent.
    a.stop().await;
    assert_eq!(mps_commands(dir.path()).len(), 8, "not quit on shutdown");
    assert!(root.join("nvidia.com/gpu").join(tessera_deviceplugin::mps::RECORD_FILE).is_file());
}

fn root_caller() -> Caller {
    root()
}

/// The external keys of every hold on the node.
async fn holders_of(engine: &EngineHandle) -> Vec<String> {
    let g = gpus(engine).await;
    g.gpus
        .iter()
        .flat_map(|gpu| &gpu.instances)
        .flat_map(|i| &i.occupants)
        .map(|o| o.external.as_ref().map(|x| x.key.clone()).unwrap_or_default())
        .collect()
}
