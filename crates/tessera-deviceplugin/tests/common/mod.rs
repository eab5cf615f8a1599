//! The fixture: a simulated node (a `SimBackend` state file), the plugin fed by a
//! `BackendSource` over it, and the kubelet stand-in, all in one temporary directory.

pub mod kubelet;
pub mod podresources;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tessera_deviceplugin::{BackendSource, BackendSourceOptions, PluginError, PluginOptions};
use tessera_gpu::{ComputeInstanceInfo, GpuInstanceInfo, MigBackend, NodeSpec, SimBackend};
use tessera_kube_core::{DeviceListStrategy, MigStrategy, PluginConfig};
use tessera_mig::layout::ci_profile_of;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use kubelet::Kubelet;

/// How long a test waits for something the plugin should do within a few polls.
pub const WAIT: Duration = Duration::from_secs(10);
/// How often the source reads the node and the plugin checks the kubelet, in tests.
pub const POLL: Duration = Duration::from_millis(50);
/// The quiet period after which an Xid 94 clears, in tests.
pub const QUIET_MS: u64 = 300;

/// The plugin under test and everything around it.
#[derive(Debug)]
pub struct Node {
    pub dir: tempfile::TempDir,
    pub sim: Arc<SimBackend>,
    pub kubelet: Kubelet,
    source: Option<BackendSource>,
    shutdown: Option<oneshot::Sender<()>>,
    plugin: Option<JoinHandle<Result<(), PluginError>>>,
}

/// NVIDIA's `mixed` strategy (a resource per MIG profile), devices named to the runtime both as
/// `NVIDIA_VISIBLE_DEVICES` and as CDI names in the CRI field.
pub fn mixed() -> PluginConfig {
    PluginConfig {
        mig_strategy: MigStrategy::Mixed,
        device_list_strategy: vec![DeviceListStrategy::EnvVar, DeviceListStrategy::CdiCri],
        ..PluginConfig::default()
    }
}

impl Node {
    /// A simulated node of `spec` with `layout` (`(gpu, profile)` GPU instances, each with one
    /// full compute instance), the kubelet stand-in, and the plugin started.
    pub async fn start(spec: &str, layout: &[(u32, &str)]) -> Node {
        Node::start_with(spec, layout, true).await
    }

    /// [`Node::start`], the kubelet down (no `kubelet.sock`) when `kubelet_up` is false.
    pub async fn start_with(spec: &str, layout: &[(u32, &str)], kubelet_up: bool) -> Node {
        let dir = tempfile::tempdir().expect("a temporary directory");
        for sub in ["device-plugins", "cdi"] {
            std::fs::create_dir(dir.path().join(sub)).expect("creating a directory");
        }
        let spec = NodeSpec::parse(spec).expect("a node spec");
        let sim = Arc::new(SimBackend::open(&dir.path().join("node.json"), Some(&spec)).expect("the simulated node"));
        for (gpu, profile) in layout {
            add_instance(&sim, *gpu, profile);
        }
        let mut kubelet = Kubelet::start(&dir.path().join("device-plugins"));
        if !kubelet_up {
            kubelet.down().await;
        }
        let mut node = Node { dir, sim, kubelet, source: None, shutdown: None, plugin: None };
        node.start_plugin().await;
        node
    }

    pub fn plugin_dir(&self) -> PathBuf {
        self.dir.path().join("device-plugins")
    }

    pub fn cdi_dir(&self) -> PathBuf {
        self.dir.path().join("cdi")
    }

    async fn start_plugin(&mut self) {
        let backend: Arc<dyn MigBackend> = self.sim.clone();
        let options = BackendSourceOptions { config: mixed(), interval: POLL, recovery_quiet_ms: QUIET_MS };
        let source = BackendSource::start(backend, options).await.expect("reading the simulated node");
        let options = PluginOptions {
            device_plugin_dir: self.plugin_dir(),
            cdi_dir: self.cdi_dir(),
            config: mixed(),
            watch_interval: POLL,
            door: None,
        };
        let (tx, rx) = oneshot::channel();
        let plugin = tokio::spawn(tessera_deviceplugin::run(options, source.receiver(), async move {
            let _ = rx.await;
        }));
        self.source = Some(source);
        self.shutdown = Some(tx);
        self.plugin = Some(plugin);
    }

    /// Stops the plugin and returns how it ended.
    pub async fn stop_plugin(&mut self) -> Result<(), PluginError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let plugin = self.plugin.take().expect("the plugin runs");
        tokio::time::timeout(WAIT, plugin).await.expect("the plugin stops in time").expect("the plugin task")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(p) = self.plugin.take() {
            p.abort();
        }
    }
}

/// Creates a `profile` GPU instance on `gpu` at the driver's default placement, with one compute
/// instance spanning it.
pub fn add_instance(sim: &SimBackend, gpu: u32, profile: &str) -> (GpuInstanceInfo, ComputeInstanceInfo) {
    let device = sim.devices().expect("devices").into_iter().find(|d| d.index == gpu).expect("the GPU");
    let model = device.model().expect("a catalog model");
    let p = model.profile(profile).expect("a profile of the model");
    let ci = ci_profile_of(model, p, p.compute_slices).expect("a full compute-instance profile");
    let gi = sim.create_gpu_instance(gpu, p.id, None).expect("creating the GPU instance");
    let ci = sim.create_compute_instance(gpu, gi.id, ci.id).expect("creating the compute instance");
    (gi, ci)
}

/// Destroys GPU instance `gi` of `gpu` and its compute instances.
pub fn remove_instance(sim: &SimBackend, gpu: u32, gi: u32) {
    for ci in sim.compute_instances(gpu, gi).expect("compute instances") {
        sim.destroy_compute_instance(gpu, gi, ci.id).expect("destroying a compute instance");
    }
    sim.destroy_gpu_instance(gpu, gi).expect("destroying the GPU instance");
}
