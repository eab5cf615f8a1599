//! The plugin: one gRPC server per resource name on a Unix socket in the device-plugins
//! directory, each registered with the kubelet; endpoints started and stopped as resource names
//! appear and vanish; every endpoint created and registered again when the kubelet restarts; the
//! CDI spec kept in step.
//!
//! The kubelet restart is seen by polling, once per [`PluginOptions::watch_interval`]:
//! `kubelet.sock` is another file (or appeared), or one of our sockets is gone (the kubelet
//! empties the directory when it starts). An endpoint whose registration fails is terminated,
//! as the API asks, and tried again at the kubelet's next restart.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tessera_kube_core::{AllocateOptions, PluginConfig, ResourceName};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;

use crate::api::device_plugin_server::DevicePluginServer;
use crate::cdi_file::{CdiFile, DEFAULT_CDI_DIR};
use crate::endpoint::ResourceService;
use crate::error::PluginError;
use crate::registration::{KUBELET_SOCKET, register};
use crate::source::NodeSnapshot;
use crate::uds::{FileId, bind, file_id, remove_if_same};

/// Where the kubelet looks for device plugins.
pub const DEFAULT_DEVICE_PLUGIN_DIR: &str = "/var/lib/kubelet/device-plugins";
/// How long a stopping endpoint has to close its connections.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How the plugin runs.
#[derive(Debug, Clone)]
pub struct PluginOptions {
    /// The kubelet's device-plugins directory: `kubelet.sock` and the plugin's sockets.
    pub device_plugin_dir: PathBuf,
    /// Where the CDI spec is written.
    pub cdi_dir: PathBuf,
    /// NVIDIA's plugin config (strategy, sharing, device list strategy), for `Allocate`.
    pub config: PluginConfig,
    /// How often the kubelet's socket and ours are checked.
    pub watch_interval: Duration,
    /// Inside the daemon: `Allocate` makes the engine hold the devices for the pod (shared
    /// replicas as the door's plugin config, the same as `config`, says).
    pub door: Option<Holder>,
}

/// The front door `Allocate` holds devices through, and the PodResources loop to wake after an
/// allocation (the kubelet lists the pod once `Allocate` returned).
#[derive(Debug, Clone)]
pub struct Holder {
    pub door: Arc<crate::door::KubeDoor>,
    pub nudge: Arc<tokio::sync::Notify>,
}

impl PluginOptions {
    /// The kubelet's and the container runtimes' default directories, checked every second.
    pub fn new(config: PluginConfig) -> Self {
        PluginOptions {
            device_plugin_dir: PathBuf::from(DEFAULT_DEVICE_PLUGIN_DIR),
            cdi_dir: PathBuf::from(DEFAULT_CDI_DIR),
            config,
            watch_interval: Duration::from_secs(1),
            door: None,
        }
    }
}

/// The endpoint's socket file name for `resource`, unique per resource name:
/// `nvidia.com/mig-1g.10gb` → `tessera-mig-1g.10gb.sock`; a name in another domain keeps it
/// (`example.com/gpu` → `tessera-example.com_gpu.sock`).
pub fn endpoint_file_name(resource: &ResourceName) -> String {
    let name = resource.as_str();
    let short = name.strip_prefix("nvidia.com/").map_or_else(|| name.replace('/', "_"), str::to_string);
    format!("tessera-{short}.sock")
}

/// Runs the plugin until `shutdown` completes (then every endpoint stops and the CDI spec is
/// removed) or the snapshot channel closes ([`PluginError::SourceStopped`]). An error to start
/// with: the CDI spec cannot be written.
pub async fn run(
    options: PluginOptions,
    mut snapshots: watch::Receiver<Arc<NodeSnapshot>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), PluginError> {
    let current = snapshots.borrow_and_update().clone();
    let mut plugin = Plugin {
        kubelet: options.device_plugin_dir.join(KUBELET_SOCKET),
        kubelet_id: None,
        alloc: Arc::new(AllocateOptions { config: options.config.clone() }),
        cdi: CdiFile::new(&options.cdi_dir),
        endpoints: BTreeMap::new(),
        current,
        snapshots: snapshots.clone(),
        options,
    };
    plugin.cdi.write(&plugin.current.inventory)?;
    plugin.kubelet_id = file_id(&plugin.kubelet);
    plugin.start_all().await;
    let mut tick = tokio::time::interval(plugin.options.watch_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let outcome = loop {
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            changed = snapshots.changed() => {
                if changed.is_err() {
                    break Err(PluginError::SourceStopped);
                }
                let next = snapshots.borrow_and_update().clone();
                plugin.update(next).await;
            }
            _ = tick.tick() => plugin.check_kubelet().await,
        }
    };
    plugin.stop_all().await;
    plugin.cdi.remove()?;
    outcome
}

/// A running endpoint.
#[derive(Debug)]
struct Running {
    socket: PathBuf,
    socket_id: Option<FileId>,
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
}

#[derive(Debug)]
struct Plugin {
    options: PluginOptions,
    kubelet: PathBuf,
    /// `kubelet.sock` as last seen.
    kubelet_id: Option<FileId>,
    alloc: Arc<AllocateOptions>,
    cdi: CdiFile,
    snapshots: watch::Receiver<Arc<NodeSnapshot>>,
    current: Arc<NodeSnapshot>,
    endpoints: BTreeMap<ResourceName, Running>,
}

impl Plugin {
    /// A new snapshot: no endpoints for resources that vanished, the CDI spec, endpoints for
    /// resources that appeared (the open `ListAndWatch` streams resend changed lists themselves).
    async fn update(&mut self, next: Arc<NodeSnapshot>) {
        let diff = next.inventory.diff(&self.current.inventory);
        self.current = next;
        for r in &diff.vanished {
            tracing::info!("device plugin: {r} is no longer on the node; its endpoint stops");
            self.stop(r).await;
        }
        // The spec before the new endpoints: a device is in it before the kubelet can allocate it.
        if let Err(e) = self.cdi.write(&self.current.inventory) {
            tracing::warn!("device plugin: {e}");
        }
        for r in &diff.appeared {
            self.start(r).await;
        }
    }

    /// The kubelet restarted (its socket is another file), or our sockets were removed: create
    /// and register those endpoints again.
    async fn check_kubelet(&mut self) {
        let now = file_id(&self.kubelet);
        if now != self.kubelet_id {
            self.kubelet_id = now;
            if now.is_some() {
                tracing::info!(
                    "device plugin: {} is new (the kubelet restarted): registering again",
                    self.kubelet.display()
                );
                self.start_all().await;
            }
            return;
        }
        let gone: Vec<ResourceName> =
            self.endpoints.iter().filter(|(_, e)| file_id(&e.socket) != e.socket_id).map(|(r, _)| r.clone()).collect();
        for r in gone {
            tracing::info!("device plugin: the socket of {r} was removed: creating it and registering again");
            self.start(&r).await;
        }
    }

    async fn start_all(&mut self) {
        let resources: Vec<ResourceName> = self.current.inventory.resources.keys().cloned().collect();
        for r in &resources {
            self.start(r).await;
        }
    }

    /// Serves `resource` on its socket and registers it; an endpoint the kubelet does not take
    /// is stopped again.
    async fn start(&mut self, resource: &ResourceName) {
        self.stop(resource).await;
        let name = endpoint_file_name(resource);
        let socket = self.options.device_plugin_dir.join(&name);
        let listener = match bind(&socket) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("device plugin: serving {resource}: {e}");
                return;
            }
        };
        let socket_id = file_id(&socket);
        let (stop, stopped) = watch::channel(false);
        let service =
            ResourceService::new(resource.clone(), self.snapshots.clone(), self.alloc.clone(), stopped.clone())
                .holding_through(self.options.door.clone());
        let mut stopped = stopped;
        let server = tokio::spawn({
            let resource = resource.clone();
            async move {
                let served = tonic::transport::Server::builder()
                    .add_service(DevicePluginServer::new(service))
                    .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    })
                    .await;
                if let Err(e) = served {
                    tracing::warn!("device plugin: the endpoint of {resource} failed: {e}");
                }
            }
        });
        let running = Running { socket, socket_id, stop, server };
        match register(&self.kubelet, &name, resource).await {
            Ok(()) => {
                tracing::info!("device plugin: {resource} registered on {name}");
                self.endpoints.insert(resource.clone(), running);
            }
            Err(e) => {
                tracing::warn!("device plugin: {e}; its endpoint stops until the kubelet restarts");
                shut(running).await;
            }
        }
    }

    async fn stop(&mut self, resource: &ResourceName) {
        if let Some(running) = self.endpoints.remove(resource) {
            shut(running).await;
        }
    }

    async fn stop_all(&mut self) {
        let all = std::mem::take(&mut self.endpoints);
        for running in all.into_values() {
            shut(running).await;
        }
    }
}

/// Stops an endpoint: its streams end, its server closes, its socket goes.
async fn shut(running: Running) {
    let Running { socket, socket_id, stop, mut server } = running;
    let _ = stop.send(true);
    if tokio::time::timeout(STOP_GRACE, &mut server).await.is_err() {
        server.abort();
    }
    remove_if_same(&socket, socket_id);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_file_names_are_unique_per_resource() {
        let table = [
            ("nvidia.com/gpu", "tessera-gpu.sock"),
            ("nvidia.com/gpu.shared", "tessera-gpu.shared.sock"),
            ("nvidia.com/mig-1g.10gb", "tessera-mig-1g.10gb.sock"),
            ("nvidia.com/mig-1g.10gb.me", "tessera-mig-1g.10gb.me.sock"),
            ("nvidia.com/mig-1c.3g.40gb", "tessera-mig-1c.3g.40gb.sock"),
            ("example.com/gpu", "tessera-example.com_gpu.sock"),
        ];
        for (name, file) in table {
            let r = ResourceName::parse(name).unwrap();
            assert_eq!(endpoint_file_name(&r), file, "{name}");
        }
    }
}
