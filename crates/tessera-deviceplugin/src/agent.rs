//! The node agent's device-plugin half, inside the daemon (`tessera kube node-agent`): the plugin
//! fed from the engine ([`EngineSource`]), `Allocate` holding devices through the [`KubeDoor`],
//! the kubelet's PodResources read every few seconds to name, release and adopt holds, and, with
//! `sharing.mps`, the MPS control daemons the pods' replicas need ([`MpsDaemons`], through the
//! engine's MPS control), adopted or started before the plugin registers (NVIDIA's plugin waits
//! for its MPS daemon too) and kept in step with every snapshot after.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tessera_daemon::daemon::EngineHandle;
use tessera_daemon::engine::{Caller, Door};
use tokio::sync::{Notify, watch};

use crate::door::{KubeDoor, Listed};
use crate::error::PluginError;
use crate::mps::{MpsDaemons, keep_in_step};
use crate::podresources::list_pod_devices;
use crate::source::{EngineSource, NodeSnapshot};
use crate::{PluginOptions, run};

/// Where the kubelet serves PodResources.
pub const DEFAULT_POD_RESOURCES_SOCKET: &str = "/var/lib/kubelet/pod-resources/kubelet.sock";

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub plugin: PluginOptions,
    /// The kubelet's PodResources socket.
    pub pod_resources: PathBuf,
    /// How often PodResources is read (and the engine's state, besides its change notices; and
    /// an MPS control daemon that failed is tried again).
    pub interval: Duration,
    /// The tenant pods' holds are charged to.
    pub tenant: String,
}

/// Runs the device plugin and the PodResources loop beside the engine until `stop` turns true.
pub async fn run_agent(
    engine: Arc<EngineHandle>,
    options: AgentOptions,
    mut stop: watch::Receiver<bool>,
) -> Result<(), PluginError> {
    let source = EngineSource::start(engine.clone(), options.plugin.config.clone(), options.interval).await?;
    let mps = if options.plugin.config.sharing.strategy() == tessera_kube_core::SharingStrategy::Mps {
        start_mps_daemons(&engine, &options, source.receiver()).await
    } else {
        None
    };
    let caller = Caller {
        uid: tessera_host::effective_uid(),
        gid: 0,
        user: "kubernetes".into(),
        tenant: options.tenant.clone(),
        admin: true,
        door: Door::Internal,
    };
    let door = Arc::new(KubeDoor::new(engine, caller, options.tenant.clone(), options.plugin.config.clone()));
    let nudge = Arc::new(Notify::new());
    let mut plugin_options = options.plugin.clone();
    plugin_options.door = Some(crate::plugin::Holder { door: door.clone(), nudge: nudge.clone() });
    let reconciler = tokio::spawn(watch_pod_resources(
        door,
        options.pod_resources.clone(),
        source.receiver(),
        options.interval,
        nudge,
    ));
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let ran = run(plugin_options, source.receiver(), shutdown).await;
    reconciler.abort();
    // The control daemons stay up for the pods (see `mps`): only their keeper stops.
    if let Some(keeper) = mps {
        keeper.abort();
    }
    ran
}

/// Adopts what a previous agent left and brings the control daemons in step with the first
/// snapshot, then keeps them so in a task of their own. A failure is logged and tried again.
async fn start_mps_daemons(
    engine: &EngineHandle,
    options: &AgentOptions,
    snapshots: watch::Receiver<Arc<NodeSnapshot>>,
) -> Option<tokio::task::JoinHandle<()>> {
    let mut daemons = MpsDaemons::new(engine.mps(), options.plugin.config.clone());
    let inventory = snapshots.borrow().inventory.clone();
    let first = tokio::task::spawn_blocking(move || {
        daemons.adopt();
        let in_step = daemons.reconcile(&inventory);
        (daemons, in_step)
    })
    .await;
    match first {
        Ok((daemons, in_step)) => Some(tokio::spawn(keep_in_step(daemons, snapshots, options.interval, in_step))),
        Err(e) => {
            tracing::error!("kubernetes: the MPS control daemons' first pass failed ({e}); none are kept");
            None
        }
    }
}

/// Reads PodResources every `interval` (and soon after each `Allocate`) and reconciles the holds.
async fn watch_pod_resources(
    door: Arc<KubeDoor>,
    socket: PathBuf,
    snapshots: watch::Receiver<Arc<NodeSnapshot>>,
    interval: Duration,
    nudge: Arc<Notify>,
) {
    let mut last_error: Option<String> = None;
    loop {
        let gpus = snapshots.borrow().gpus.clone();
        match list_pod_devices(&socket, &gpus).await {
            Ok(listed) => {
                if last_error.take().is_some() {
                    tracing::info!("kubernetes: {} answers again", socket.display());
                }
                reconcile(&door, &listed, &gpus).await;
            }
            Err(e) => {
                let text = e.to_string();
                if last_error.as_deref() != Some(&text) {
                    tracing::warn!("kubernetes: reading pod resources: {text}; holds stay as they are");
                    last_error = Some(text);
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = nudge.notified() => {}
        }
    }
}

async fn reconcile(door: &KubeDoor, listed: &Listed, gpus: &[tessera_gpu::GpuView]) {
    if let Err(e) = door.reconcile(listed, gpus, tessera_host::now_ms()).await {
        tracing::warn!("kubernetes: reconciling pod holds: {e}");
    }
}
