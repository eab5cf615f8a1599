//! The DRA tests' fixture: the daemon (`tessera_daemon::daemon::run_with`, its engine, rounds
//! and health watcher) on a simulated node in a temporary directory, with the test as its front
//! door; the DRA plugin in a runtime of its own (so a test can crash it: every task of it gone
//! at once, as with a killed process); an in-memory `ClaimSource`; and a kubelet stand-in that
//! speaks the real protocols over the plugin's Unix sockets: it registers as the plugin
//! watcher does, then prepares and unprepares claims (v1 or v1beta1) and follows the health
//! stream.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tessera_daemon::config::{Config, Tokens};
use tessera_daemon::daemon::{DaemonError, EngineHandle, FrontDoor, ServeOptions, run_with};
use tessera_daemon::engine::{Action, Caller, Door, Reply, ShimCommand};
use tessera_daemon::wire::{GpuList, JobQuery, JobView};
use tessera_deviceplugin::dra::api::health::NodeWatchResourcesRequest;
use tessera_deviceplugin::dra::api::health::dra_resource_health_client::DraResourceHealthClient;
use tessera_deviceplugin::dra::api::registration::registration_client::RegistrationClient;
use tessera_deviceplugin::dra::api::registration::{InfoRequest, PluginInfo, RegistrationStatus};
use tessera_deviceplugin::dra::api::{v1, v1beta1};
use tessera_deviceplugin::dra::{BoxFuture, ClaimSource, DraDriver, DraError, DraOptions};
use tessera_deviceplugin::uds::unix_channel;
use tessera_gpu::{BackendChoice, OpenOptions, SimBackend};
use tessera_kube_core::dra::DraGpu;
use tessera_kube_core::dra_claim::{AllocatedDevice, ClaimAllocation, ClaimRef};
use tokio::sync::{oneshot, watch};
use tonic::transport::Channel;

pub const WAIT: Duration = Duration::from_secs(20);
pub const DRIVER: &str = "gpu.tessera.dev";
pub const NODE: &str = "node-a";
const PASSED: &str = "the test body passed";

pub fn root() -> Caller {
    Caller { uid: 0, gid: 0, user: "root".into(), tenant: "default".into(), admin: true, door: Door::Internal }
}

/// Allocations by claim UID, as the API server would hold them.
#[derive(Debug, Default)]
pub struct Claims(Mutex<HashMap<String, ClaimAllocation>>);

impl Claims {
    pub fn set(&self, uid: &str, allocation: ClaimAllocation) {
        self.0.lock().unwrap().insert(uid.to_string(), allocation);
    }
}

impl ClaimSource for Claims {
    fn allocation<'a>(&'a self, claim: &'a ClaimRef) -> BoxFuture<'a, Result<ClaimAllocation, String>> {
        let found = self.0.lock().unwrap().get(&claim.uid).cloned();
        Box::pin(async move { found.ok_or_else(|| format!("no ResourceClaim {claim}")) })
    }
}

/// One allocated device of this driver on this node.
pub fn device(request: &str, name: &str) -> AllocatedDevice {
    AllocatedDevice {
        request: request.into(),
        driver: DRIVER.into(),
        pool: NODE.into(),
        device: name.into(),
        share_id: None,
    }
}

pub fn claim(uid: &str) -> ClaimRef {
    ClaimRef { namespace: "ns".into(), name: format!("claim-{uid}"), uid: uid.into() }
}

/// What a test body gets.
pub struct Ctx {
    pub dir: PathBuf,
    pub engine: Arc<EngineHandle>,
    /// Another handle on the simulated node's state file (to inject faults).
    pub sim: SimBackend,
    pub claims: Arc<Claims>,
    pub options: DraOptions,
}

/// Runs `body` as the front door of a daemon on the simulated node `spec`; fails the test if
/// the body panics.
pub fn on_daemon<F, Fut>(spec: &str, body: F)
where
    F: FnOnce(Ctx) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let state = dir.join("state");
    let mut config = Config::default();
    config.health.probe_interval_ms = 100;
    let options = ServeOptions {
        state_dir: state.clone(),
        socket: dir.join("tessera.sock"),
        config,
        config_file: None,
        tokens: Tokens::default(),
        backend: OpenOptions {
            choice: BackendChoice::Sim,
            nvml_library: None,
            sim_spec: Some(spec.to_string()),
            sim_state: state.join("sim-node.json"),
        },
        shim: ShimCommand { exe: "/nonexistent/tessera".into(), args: vec!["shim".into()] },
        init: false,
    };
    let door: FrontDoor = Box::new(move |engine, _stop| {
        Box::pin(async move {
            let sim = SimBackend::open(&state.join("sim-node.json"), None).expect("the simulated node");
            let mut options = DraOptions::new(DRIVER, NODE);
            options.plugin_dir = dir.join("plugins").join(DRIVER);
            options.checkpoint = options.plugin_dir.join("checkpoint.json");
            options.registry_dir = dir.join("plugins_registry");
            options.cdi_dir = dir.join("cdi");
            options.mps_root = dir.join("mps");
            options.hold_timeout = Duration::from_secs(10);
            options.poll_interval = Duration::from_millis(100);
            let ctx = Ctx { dir, engine, sim, claims: Arc::default(), options };
            match tokio::spawn(body(ctx)).await {
                Ok(()) => Err(PASSED.to_string()),
                Err(e) => Err(match e.try_into_panic() {
                    Ok(p) => p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "a panic".into()),
                    Err(e) => e.to_string(),
                }),
            }
        })
    });
    match run_with(options, Some(door)) {
        Err(DaemonError::Setup(s)) if s.ends_with(PASSED) => {}
        Err(e) => panic!("{e}"),
        Ok(()) => panic!("the daemon stopped without the test's word"),
    }
    drop(tmp);
}

/// The plugin, in a runtime of its own.
pub struct Plugin {
    rt: Option<tokio::runtime::Runtime>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), DraError>>>,
    pub published: watch::Receiver<Arc<Vec<DraGpu>>>,
}

impl Plugin {
    pub async fn start(ctx: &Ctx) -> Plugin {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let (engine, claims, options) = (ctx.engine.clone(), ctx.claims.clone(), ctx.options.clone());
        let mps = ctx.engine.mps();
        let driver = rt
            .spawn(DraDriver::new(engine, root(), "default".into(), claims, mps, options))
            .await
            .expect("the plugin's start")
            .expect("the plugin starts");
        let published = driver.published();
        let (tx, rx) = oneshot::channel();
        let task = rt.spawn(driver.run(async move {
            let _ = rx.await;
        }));
        Plugin { rt: Some(rt), stop: Some(tx), task: Some(task), published }
    }

    /// Stops the plugin as a shutdown does: it must end without an error.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let ran = tokio::time::timeout(WAIT, self.task.take().unwrap()).await.expect("the plugin stops in time");
        ran.expect("the plugin task").expect("the plugin ends without an error");
    }

    /// Kills the plugin: every task of it ends where it is.
    pub fn crash(mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// The kubelet's side of the plugin.
pub struct Kubelet {
    pub info: PluginInfo,
    pub v1: v1::dra_plugin_client::DraPluginClient<Channel>,
    pub v1beta1: v1beta1::dra_plugin_client::DraPluginClient<Channel>,
    pub health: DraResourceHealthClient<Channel>,
}

impl Kubelet {
    /// Registers the plugin as the plugin watcher does: finds `<driver>-reg.sock` in the
    /// registry, asks who it is, checks it is a DRA plugin of `driver` serving the versions
    /// the kubelet speaks, connects to its endpoint and tells it it is registered.
    pub async fn register(registry: &Path) -> Kubelet {
        let socket = registry.join(format!("{DRIVER}-reg.sock"));
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut reg = loop {
            if socket.exists()
                && let Ok(channel) = unix_channel(&socket).await
            {
                break RegistrationClient::new(channel);
            }
            assert!(tokio::time::Instant::now() < deadline, "no registration socket at {}", socket.display());
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let info = reg.get_info(InfoRequest {}).await.expect("GetInfo").into_inner();
        assert_eq!(info.r#type, "DRAPlugin");
        assert_eq!(info.name, DRIVER);
        for v in ["v1.DRAPlugin", "v1beta1.DRAPlugin", "v1alpha1.DRAResourceHealth", "v1.DRAResourceHealth"] {
            assert!(info.supported_versions.iter().any(|s| s == v), "{v} in {:?}", info.supported_versions);
        }
        let channel = unix_channel(Path::new(&info.endpoint)).await.expect("connecting to the endpoint");
        reg.notify_registration_status(RegistrationStatus { plugin_registered: true, error: String::new() })
            .await
            .expect("NotifyRegistrationStatus");
        Kubelet {
            v1: v1::dra_plugin_client::DraPluginClient::new(channel.clone()),
            v1beta1: v1beta1::dra_plugin_client::DraPluginClient::new(channel.clone()),
            health: DraResourceHealthClient::new(channel),
            info,
        }
    }

    pub async fn prepare(&mut self, claims: &[&ClaimRef]) -> HashMap<String, v1::NodePrepareResourceResponse> {
        let request = v1::NodePrepareResourcesRequest { claims: claims.iter().map(|c| v1_claim(c)).collect() };
        let answer = self.v1.node_prepare_resources(request).await.expect("NodePrepareResources").into_inner();
        every_claim_answered(claims, &answer.claims);
        answer.claims
    }

    pub async fn unprepare(&mut self, claims: &[&ClaimRef]) -> HashMap<String, String> {
        let request = v1::NodeUnprepareResourcesRequest { claims: claims.iter().map(|c| v1_claim(c)).collect() };
        let answer = self.v1.node_unprepare_resources(request).await.expect("NodeUnprepareResources").into_inner();
        every_claim_answered(claims, &answer.claims);
        answer.claims.into_iter().map(|(k, v)| (k, v.error)).collect()
    }

    pub async fn prepare_v1beta1(
        &mut self,
        claims: &[&ClaimRef],
    ) -> HashMap<String, v1beta1::NodePrepareResourceResponse> {
        let request = v1beta1::NodePrepareResourcesRequest {
            claims: claims
                .iter()
                .map(|c| v1beta1::Claim { namespace: c.namespace.clone(), uid: c.uid.clone(), name: c.name.clone() })
                .collect(),
        };
        let answer = self.v1beta1.node_prepare_resources(request).await.expect("v1beta1 prepare").into_inner();
        every_claim_answered(claims, &answer.claims);
        answer.claims
    }

    pub async fn unprepare_v1beta1(&mut self, claims: &[&ClaimRef]) -> HashMap<String, String> {
        let request = v1beta1::NodeUnprepareResourcesRequest {
            claims: claims
                .iter()
                .map(|c| v1beta1::Claim { namespace: c.namespace.clone(), uid: c.uid.clone(), name: c.name.clone() })
                .collect(),
        };
        let answer = self.v1beta1.node_unprepare_resources(request).await.expect("v1beta1 unprepare").into_inner();
        every_claim_answered(claims, &answer.claims);
        answer.claims.into_iter().map(|(k, v)| (k, v.error)).collect()
    }

    pub async fn watch_health(
        &mut self,
    ) -> tonic::Streaming<tessera_deviceplugin::dra::api::health::NodeWatchResourcesResponse> {
        self.health.node_watch_resources(NodeWatchResourcesRequest {}).await.expect("NodeWatchResources").into_inner()
    }
}

fn v1_claim(c: &ClaimRef) -> v1::Claim {
    v1::Claim { namespace: c.namespace.clone(), uid: c.uid.clone(), name: c.name.clone() }
}

/// The API's rule: every claim of the request has its entry.
fn every_claim_answered<T>(claims: &[&ClaimRef], answer: &HashMap<String, T>) {
    for c in claims {
        assert!(answer.contains_key(&c.uid), "claim {c} has no answer");
    }
}

pub async fn gpus(engine: &EngineHandle) -> GpuList {
    use tessera_daemon::api::Service;
    match engine.act(root(), Action::Gpus).await.expect("gpus") {
        Reply::Gpus(g) => g,
        other => panic!("unexpected reply {other:?}"),
    }
}

/// GPU 0's instances: (profile, start, MIG UUID, the jobs on it).
pub async fn instances(engine: &EngineHandle) -> Vec<(String, u8, Option<String>, Vec<u64>)> {
    let mut out: Vec<_> = gpus(engine).await.gpus[0]
        .instances
        .iter()
        .map(|i| (i.profile.clone(), i.start, i.mig_uuid.clone(), i.jobs.clone()))
        .collect();
    out.sort();
    out
}

/// The active jobs of door `dra` with key `uid`.
pub async fn claim_jobs(engine: &EngineHandle, uid: &str) -> Vec<JobView> {
    use tessera_daemon::api::Service;
    match engine.act(root(), Action::ListJobs(JobQuery { all: true, ..JobQuery::default() })).await.expect("jobs") {
        Reply::Jobs(list) => list
            .jobs
            .into_iter()
            .filter(|j| j.external.as_ref().is_some_and(|x| x.door == "dra" && x.key == uid))
            .collect(),
        other => panic!("unexpected reply {other:?}"),
    }
}

/// Polls `f` until it gives `Some`, at most [`WAIT`].
pub async fn eventually<T, F: Future<Output = Option<T>>>(what: &str, mut f: impl FnMut() -> F) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(t) = f().await {
            return t;
        }
        assert!(tokio::time::Instant::now() < deadline, "waited {WAIT:?} for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
