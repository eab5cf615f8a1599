//! The node agent's [`LayoutApplier`] on a real node: the daemon's engine, in the same process
//! (`tessera kube node-agent`).
//!
//! Reports come from the engine's published node state: every instance with the pod holding it
//! (from the Kubernetes front door's hold keys, `tessera_kube_core::holds`), and instances held
//! by anything else (a `tessera submit` job, a hold whose pod the kubelet has not listed yet)
//! marked busy. Changes go through the engine's own layout path ([`Action::Reach`]): planned with
//! busy instances kept, checked again under the engine lock, run through the reconfiguration
//! journal. Before asking, the applier plans every GPU itself on the same state, so a busy
//! instance in the way is answered as [`ApplyError::Blocked`] with the pod that holds it, and a
//! config that cannot be reached on one GPU changes no GPU.

use std::sync::Arc;

use tessera_daemon::api::Service;
use tessera_daemon::daemon::EngineHandle;
use tessera_daemon::engine::{Action, Caller, Door, EngineError, HeldSlice, NodeState, Reply};
use tessera_gpu::GpuView;
use tessera_kube_core::PodRef;
use tessera_kube_core::holds::{DOOR, pod_of_key};
use tessera_mig::{CurrentInstance, Instance, ReconfigureError, Wanted, reconfigure};
use tessera_migparted::{DeviceSummary, MigConfigFile, resolve};

use crate::annotations::{DesiredLayout, ReportedGpu, ReportedInstance, ReportedLayout};
use crate::node_agent::{Applied, ApplyError, LayoutApplier};

/// The engine behind the node agent.
pub struct EngineApplier {
    engine: Arc<EngineHandle>,
    caller: Caller,
}

impl std::fmt::Debug for EngineApplier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineApplier").field("caller", &self.caller.user).finish_non_exhaustive()
    }
}

impl EngineApplier {
    /// Applies layouts as the engine's internal admin `kubernetes`.
    pub fn new(engine: Arc<EngineHandle>) -> EngineApplier {
        let caller = Caller {
            uid: tessera_host::effective_uid(),
            gid: 0,
            user: DOOR.into(),
            tenant: String::new(),
            admin: true,
            door: Door::Internal,
        };
        EngineApplier { engine, caller }
    }

    async fn state(&self) -> Result<NodeState, ApplyError> {
        self.engine.node_state().await.map_err(|e| ApplyError::Failed(format!("reading the node: {e}")))
    }

    /// Plans every GPU's change on `state` (a refusal changes nothing), then asks the engine
    /// for each change in turn.
    async fn apply(&self, state: &NodeState, wanted: Vec<(u32, Wanted)>) -> Result<Applied, ApplyError> {
        let mut changes = Vec::new();
        for (gpu, w) in wanted {
            let view = gpu_of(state, gpu)?;
            if let Some(plan) = plan(state, view, &w)? {
                changes.push((gpu, w, plan));
            }
        }
        let mut applied = Applied::default();
        for (gpu, w, planned) in changes {
            match self.engine.act(self.caller.clone(), Action::Reach { gpu, wanted: w.clone() }).await {
                Ok(Reply::Layout(reply)) => {
                    applied.created += reply.steps.iter().filter(|s| s.starts_with("create")).count();
                    applied.destroyed += reply.steps.iter().filter(|s| s.starts_with("destroy")).count();
                }
                Ok(_) => return Err(ApplyError::Failed(format!("GPU {gpu}: the engine did not answer with a layout"))),
                Err(e) => return Err(self.refused(gpu, &w, planned, e).await),
            }
        }
        Ok(applied)
    }

    /// Why the engine refused: a busy instance in the way when the node changed since the plan
    /// (a pod allocated meanwhile), otherwise the engine's reason.
    async fn refused(&self, gpu: u32, wanted: &Wanted, planned: usize, e: EngineError) -> ApplyError {
        if let Ok(state) = self.state().await
            && let Ok(view) = gpu_of(&state, gpu)
            && let Err(blocked @ ApplyError::Blocked { .. }) = plan(&state, view, wanted)
        {
            return blocked;
        }
        ApplyError::Failed(format!("GPU {gpu}: the change ({planned} steps) was refused: {e}"))
    }
}

fn gpu_of(state: &NodeState, gpu: u32) -> Result<&GpuView, ApplyError> {
    state
        .gpus
        .iter()
        .find(|g| g.device.index == gpu)
        .ok_or_else(|| ApplyError::Failed(format!("the node has no GPU {gpu}")))
}

/// The holds on one instance of `gpu`.
fn holds_on<'a>(state: &'a NodeState, gpu: u32, i: &Instance) -> impl Iterator<Item = &'a HeldSlice> {
    state.held.iter().filter(move |h| h.gpu == gpu && h.profile_id == i.profile_id && h.start == i.start)
}

/// The pod holding an instance, when the hold is a named pod's.
fn pod_holding(state: &NodeState, gpu: u32, i: &Instance) -> Option<PodRef> {
    holds_on(state, gpu, i)
        .find_map(|h| h.external.as_ref().filter(|x| x.door == DOOR).and_then(|x| pod_of_key(&x.key)))
}

/// The number of steps reaching `wanted` takes (`None`: nothing to do), or why it cannot be
/// reached: the GPU's instances with every held one busy, planned by Tessera's planner.
fn plan(state: &NodeState, view: &GpuView, wanted: &Wanted) -> Result<Option<usize>, ApplyError> {
    let gpu = view.device.index;
    let Some(model) = view.model else {
        return Err(ApplyError::Failed(format!("GPU {gpu} ({}) is not a model Tessera knows", view.device.name)));
    };
    if !view.mig.current {
        return Err(ApplyError::Failed(format!(
            "GPU {gpu} has MIG off; the node agent changes layouts, not MIG modes (turn MIG on with \
             `tessera mig apply` on the node, or with the GPU operator's driver settings)"
        )));
    }
    let current: Vec<CurrentInstance> = view
        .current()
        .into_iter()
        .map(|mut c| {
            c.busy |= holds_on(state, gpu, &c.instance).next().is_some();
            c
        })
        .collect();
    match reconfigure(model, &current, wanted) {
        Ok(p) if p.steps.is_empty() => Ok(None),
        Ok(p) => Ok(Some(p.steps.len())),
        Err(ReconfigureError::BusyInstancesBlock { blockers, .. }) => {
            let b = blockers.first().map(|b| b.instance);
            let instance = b.map(|i| crate::annotations::instance_label(&model.name, &i)).unwrap_or_default();
            Err(ApplyError::Blocked { gpu, instance, holder: b.and_then(|i| pod_holding(state, gpu, &i)) })
        }
        Err(e) => Err(ApplyError::Failed(format!("GPU {gpu}: {e}"))),
    }
}

/// The node as the controller reads it.
pub fn report_of(state: &NodeState) -> Vec<ReportedGpu> {
    state
        .gpus
        .iter()
        .map(|g| {
            let gpu = g.device.index;
            let health = state.health.gpus.iter().find(|h| h.gpu == gpu);
            let layout = if g.mig.current {
                ReportedLayout::Mig {
                    instances: g
                        .instances
                        .iter()
                        .map(|i| {
                            let holder = pod_holding(state, gpu, &i.instance);
                            let held = holds_on(state, gpu, &i.instance).next().is_some();
                            ReportedInstance {
                                instance: i.instance,
                                gpu_instance_id: Some(i.gpu_instance_id),
                                busy: holder.is_none() && (held || i.busy),
                                holder,
                            }
                        })
                        .collect(),
                }
            } else {
                let mut held = state.held.iter().filter(|h| h.gpu == gpu);
                let holder = held
                    .clone()
                    .find_map(|h| h.external.as_ref().filter(|x| x.door == DOOR).and_then(|x| pod_of_key(&x.key)));
                ReportedLayout::Whole { busy: holder.is_none() && held.next().is_some(), holder }
            };
            ReportedGpu {
                index: gpu,
                model: g.model.map_or_else(|| g.device.name.clone(), |m| m.name.clone()),
                unhealthy: health.is_some_and(|h| h.health.is_unhealthy()),
                draining: state.drained.contains(&gpu) || state.reconfiguring.contains(&gpu),
                layout,
            }
        })
        .collect()
}

impl LayoutApplier for EngineApplier {
    async fn report(&self) -> Result<Vec<ReportedGpu>, ApplyError> {
        Ok(report_of(&self.state().await?))
    }

    async fn apply_config(&self, file: &MigConfigFile, name: &str) -> Result<Applied, ApplyError> {
        let state = self.state().await?;
        let devices: Vec<DeviceSummary> = state
            .gpus
            .iter()
            .map(|g| DeviceSummary {
                index: g.device.index,
                pci_device_id: g.device.pci_device_id,
                pci_subsystem_id: g.device.pci_subsystem_id,
                model: g.model,
            })
            .collect();
        let targets = resolve(file, name, &devices).map_err(|e| ApplyError::Failed(e.to_string()))?;
        let mut wanted = Vec::new();
        for t in targets {
            let view = gpu_of(&state, t.index)?;
            if t.mig_enabled != view.mig.current {
                return Err(ApplyError::Failed(format!(
                    "GPU {}: the config wants MIG {}, the GPU has it {}; the node agent changes layouts, \
                     not MIG modes (a mode change needs the GPU idle and, on some GPUs, a reset: use \
                     `tessera mig apply` on the node)",
                    t.index,
                    on_off(t.mig_enabled),
                    on_off(view.mig.current)
                )));
            }
            if t.mig_enabled {
                wanted.push((t.index, Wanted::Profiles(t.wanted)));
            }
        }
        self.apply(&state, wanted).await
    }

    async fn apply_layout(&self, desired: &DesiredLayout) -> Result<Applied, ApplyError> {
        let state = self.state().await?;
        let mut wanted = Vec::new();
        for g in &desired.gpus {
            let view = gpu_of(&state, g.index)?;
            let model = view.model.map(|m| m.name.as_str());
            if model != Some(g.model.as_str()) {
                return Err(ApplyError::Failed(format!(
                    "GPU {}: the desired layout is for a {}, the GPU is a {}",
                    g.index,
                    g.model,
                    model.unwrap_or(&view.device.name)
                )));
            }
            if g.disable_mig {
                return Err(ApplyError::Failed(format!(
                    "GPU {}: turning MIG off is not done by the node agent (a mode change needs the GPU \
                     idle and, on some GPUs, a reset: use `tessera mig apply` on the node)",
                    g.index
                )));
            }
            wanted.push((g.index, Wanted::Layout(g.target.clone())));
        }
        self.apply(&state, wanted).await
    }
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}
