//! What feeds the plugin: a `watch` channel of [`NodeSnapshot`]s (the seam), filled either by
//! [`EngineSource`], from the daemon's engine (the node agent), or by [`BackendSource`], which
//! reads a [`MigBackend`] node at an interval (the plugin alone). The plugin does not care which.
//!
//! `EngineSource` advertises what a pod may take: every instance except those the daemon's own
//! jobs (or another front door's) hold; GPUs that are drained or being reconfigured as
//! draining (never preferred nor allocated); health as the engine tracks it. It reads the engine's
//! state at every change notice and at an interval (health changes send none), so every change
//! the engine makes reaches `ListAndWatch` without a restart.
//! `BackendSource` tracks health as the CLI's `tessera mig health` does: Xid events from the
//! backend and one observation of each GPU per poll into a [`HealthTracker`], so an Xid makes a
//! device `Unhealthy` and its recovery (a quiet period, a reset, a reboot) makes it `Healthy`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tessera_daemon::daemon::EngineHandle;
use tessera_daemon::engine::{HeldSlice, NodeState};
use tessera_gpu::health::{DEFAULT_RECOVERY_QUIET_MS, HealthTracker};
use tessera_gpu::{GpuView, MigBackend, Observation, node_view_partial};
use tessera_kube_core::{Inventory, NodeInput, PluginConfig, build_inventory};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::PluginError;

/// The node as the plugin advertises it: every resource's devices, and the GPUs they come from
/// (`GetPreferredAllocation` weighs the layouts).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeSnapshot {
    pub inventory: Inventory,
    pub gpus: Vec<GpuView>,
}

/// How [`BackendSource`] reads the node.
#[derive(Debug, Clone)]
pub struct BackendSourceOptions {
    /// Strategy and sharing, as NVIDIA's plugin config says.
    pub config: PluginConfig,
    /// How often the node is read.
    pub interval: Duration,
    /// How long a GPU must stay quiet before a quiet fault (e.g. Xid 94) clears.
    pub recovery_quiet_ms: u64,
}

impl BackendSourceOptions {
    /// The node read every second; quiet faults clear after the health tracker's default period.
    pub fn new(config: PluginConfig) -> Self {
        BackendSourceOptions { config, interval: Duration::from_secs(1), recovery_quiet_ms: DEFAULT_RECOVERY_QUIET_MS }
    }
}

/// Reads a node through its backend at an interval and publishes a [`NodeSnapshot`] whenever it
/// changes. Stops when dropped.
#[derive(Debug)]
pub struct BackendSource {
    rx: watch::Receiver<Arc<NodeSnapshot>>,
    task: JoinHandle<()>,
}

impl BackendSource {
    /// Reads the node once (an error if it cannot be read or advertised), then keeps reading it.
    pub async fn start(
        backend: Arc<dyn MigBackend>,
        options: BackendSourceOptions,
    ) -> Result<BackendSource, PluginError> {
        let mut poller =
            Poller { backend, tracker: HealthTracker::new(options.recovery_quiet_ms), config: options.config };
        let (first, mut poller) = tokio::task::spawn_blocking(move || (poller.poll(), poller))
            .await
            .map_err(|_| PluginError::SourceStopped)?;
        let (tx, rx) = watch::channel(Arc::new(first?));
        let interval = options.interval;
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    () = tx.closed() => return,
                    _ = tick.tick() => {}
                }
                let Ok((read, p)) = tokio::task::spawn_blocking(move || (poller.poll(), poller)).await else {
                    return;
                };
                poller = p;
                publish(&tx, read);
            }
        });
        Ok(BackendSource { rx, task })
    }

    /// A receiver of the snapshots (the plugin's input).
    pub fn receiver(&self) -> watch::Receiver<Arc<NodeSnapshot>> {
        self.rx.clone()
    }
}

/// Hand a fresh read to the plugin when it differs from the last one. A failed read keeps the
/// last snapshot: a node that cannot be read now is not a node without devices.
fn publish<E: std::fmt::Display>(tx: &watch::Sender<Arc<NodeSnapshot>>, read: Result<NodeSnapshot, E>) {
    match read {
        Ok(snapshot) => {
            tx.send_if_modified(|current| {
                let changed = **current != snapshot;
                if changed {
                    *current = Arc::new(snapshot);
                }
                changed
            });
        }
        Err(e) => tracing::warn!("device plugin: {e}"),
    }
}

impl Drop for BackendSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The blocking part: one read of the node.
struct Poller {
    backend: Arc<dyn MigBackend>,
    tracker: HealthTracker,
    config: PluginConfig,
}

impl Poller {
    fn poll(&mut self) -> Result<NodeSnapshot, PluginError> {
        let backend = self.backend.as_ref();
        let node = node_view_partial(backend)?;
        let ids: Vec<(u32, String)> = node
            .gpus
            .iter()
            .map(|g| (g.device.index, g.device.uuid.clone()))
            .chain(node.failed.iter().filter_map(|f| f.gpu.uuid.clone().map(|u| (f.gpu.index, u))))
            .collect();
        self.tracker.reconcile_ids(&ids);
        let probed_ms = tessera_host::now_ms();
        let observations: Vec<(u32, Observation)> =
            ids.iter().map(|(gpu, _)| (*gpu, Observation::from_result(backend.observe(*gpu)))).collect();
        let events = backend.wait_xid_events(0)?;
        let now_ms = tessera_host::now_ms();
        self.tracker.observe_all(&observations, probed_ms);
        for e in &events {
            self.tracker.record(e, now_ms);
        }
        let health = self.tracker.report();
        let (reconfiguring, reconfiguring_gpus) = (BTreeSet::new(), BTreeSet::new());
        let input = NodeInput {
            gpus: &node.gpus,
            health: &health,
            reconfiguring: &reconfiguring,
            reconfiguring_gpus: &reconfiguring_gpus,
        };
        let inventory = build_inventory(&self.config, &input)?;
        Ok(NodeSnapshot { inventory, gpus: node.gpus })
    }
}

/// Fills the snapshot channel from the daemon's engine (see the module header). Stops when
/// dropped.
#[derive(Debug)]
pub struct EngineSource {
    rx: watch::Receiver<Arc<NodeSnapshot>>,
    task: JoinHandle<()>,
}

impl EngineSource {
    /// Reads the engine's state once (an error if it cannot be advertised), then at every change
    /// notice and every `interval`.
    pub async fn start(
        engine: Arc<EngineHandle>,
        config: PluginConfig,
        interval: Duration,
    ) -> Result<EngineSource, PluginError> {
        let first = engine_snapshot(&engine.node_state().await?, &config)?;
        let (tx, rx) = watch::channel(Arc::new(first));
        let mut changes = engine.changes();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tx.closed() => return,
                    changed = changes.changed() => if changed.is_err() { return },
                    () = tokio::time::sleep(interval) => {}
                }
                let read = match engine.node_state().await {
                    Ok(state) => engine_snapshot(&state, &config),
                    Err(e) => Err(e.into()),
                };
                publish(&tx, read);
            }
        });
        Ok(EngineSource { rx, task })
    }

    /// A receiver of the snapshots (the plugin's input).
    pub fn receiver(&self) -> watch::Receiver<Arc<NodeSnapshot>> {
        self.rx.clone()
    }
}

impl Drop for EngineSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the engine's state advertises (see the module header). The snapshot's `gpus` stay
/// whole: `GetPreferredAllocation` weighs the layouts as they are, and `Allocate` finds a pod's
/// instances in them.
pub fn engine_snapshot(state: &NodeState, config: &PluginConfig) -> Result<NodeSnapshot, PluginError> {
    let ours = |h: &HeldSlice| h.external.as_ref().is_some_and(|x| x.door == crate::door::DOOR);
    let mut offered = state.gpus.clone();
    // A GPU with MIG off that another job holds offers nothing; with MIG on, its held instances.
    offered.retain(|g| g.mig.current || !state.held.iter().any(|h| h.gpu == g.device.index && !ours(h)));
    for g in &mut offered {
        let gpu = g.device.index;
        g.instances.retain(|i| {
            !state.held.iter().any(|h| {
                h.gpu == gpu && h.profile_id == i.instance.profile_id && h.start == i.instance.start && !ours(h)
            })
        });
    }
    let reconfiguring_gpus: BTreeSet<u32> = state.drained.union(&state.reconfiguring).copied().collect();
    let input = NodeInput {
        gpus: &offered,
        health: &state.health,
        reconfiguring: &BTreeSet::new(),
        reconfiguring_gpus: &reconfiguring_gpus,
    };
    let inventory = build_inventory(config, &input)?;
    Ok(NodeSnapshot { inventory, gpus: state.gpus.clone() })
}
