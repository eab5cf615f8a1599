//! The node as the DRA plugin reads it from the engine's state ([`NodeState`]), as pure
//! functions: the GPUs the driver publishes ([`dra_gpus`]), where an allocated device lies and
//! whether its instance exists ([`resolve`]), the device nodes a held device needs
//! ([`device_nodes`]) and its health ([`device_health`]).

use tessera_daemon::engine::{HeldSlice, NodeState};
use tessera_gpu::GpuView;
use tessera_gpu::health::Health;
use tessera_kube_core::DeviceNode;
use tessera_kube_core::dra::{DraGpu, DraInstance, InstanceUse};
use tessera_kube_core::dra_claim::DeviceTarget;
use tessera_mig::Instance;
use tessera_sched::full_profile;

use super::DRA_DOOR;

/// Every GPU of a known model, as the driver publishes it: each instance held by a claim of
/// this driver (`Claim`), by any other job (`Other`), or by nobody (`Idle`); a GPU with MIG off
/// that a job holds whole has its full-size profile at 0 as that job's instance.
pub fn dra_gpus(state: &NodeState) -> Vec<DraGpu> {
    let use_of = |gpu: u32, profile_id: u32, start: u8| {
        let mut holders = state.held.iter().filter(|h| h.gpu == gpu && h.profile_id == profile_id && h.start == start);
        let first: Option<&HeldSlice> = holders.next();
        match first {
            None => InstanceUse::Idle,
            Some(h) if is_claim(h) && holders.all(is_claim) => InstanceUse::Claim,
            Some(_) => InstanceUse::Other,
        }
    };
    let mut gpus: Vec<DraGpu> = state
        .gpus
        .iter()
        .filter_map(|g| {
            let model = g.model?;
            let gpu = g.device.index;
            let instances = if g.mig.current {
                g.instances
                    .iter()
                    .map(|i| DraInstance {
                        instance: i.instance,
                        mig_uuid: i.compute_instances.first().map(|c| c.uuid.clone()),
                        held_by: use_of(gpu, i.instance.profile_id, i.instance.start),
                    })
                    .collect()
            } else {
                full_profile(model)
                    .map(|full| (full.id, use_of(gpu, full.id, 0)))
                    .filter(|(_, held_by)| *held_by != InstanceUse::Idle)
                    .map(|(id, held_by)| DraInstance { instance: Instance::new(id, 0), mig_uuid: None, held_by })
                    .into_iter()
                    .collect()
            };
            Some(DraGpu {
                index: gpu,
                uuid: g.device.uuid.clone(),
                model,
                numa_node: g.device.numa_node,
                mig_enabled: g.mig.current,
                instances,
            })
        })
        .collect();
    gpus.sort_by_key(|g| g.index);
    gpus
}

fn is_claim(h: &HeldSlice) -> bool {
    h.external.as_ref().is_some_and(|x| x.door == DRA_DOOR)
}

/// Whether two publications are the same (`DraGpu` has no equality of its own: its model is a
/// catalog reference, compared by name).
pub fn same_gpus(a: &[DraGpu], b: &[DraGpu]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.index == y.index
                && x.uuid == y.uuid
                && x.model.name == y.model.name
                && x.numa_node == y.numa_node
                && x.mig_enabled == y.mig_enabled
                && x.instances == y.instances
        })
}

/// Where an allocated device lies and what the engine is asked to hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub gpu: u32,
    pub profile_id: u32,
    pub start: u8,
    /// The profile (`None`: a whole GPU with MIG off).
    pub profile: Option<String>,
    /// Whether the instance exists now (a whole GPU with MIG off always does).
    pub exists: bool,
}

/// The GPU and instance of `target` on the node as it is now, or why it cannot be held.
pub fn resolve(target: DeviceTarget, state: &NodeState) -> Result<Target, String> {
    let gpu = target.gpu();
    let g = gpu_of(state, gpu)?;
    let model = g.model.ok_or_else(|| format!("GPU {gpu} ({}) is not a model Tessera knows", g.device.name))?;
    let (profile_id, start) = match target {
        DeviceTarget::WholeGpu { .. } => {
            let full = full_profile(model).ok_or_else(|| format!("{} has no full-size profile", model.name))?;
            if !g.mig.current {
                return Ok(Target { gpu, profile_id: full.id, start: 0, profile: None, exists: true });
            }
            (full.id, 0)
        }
        DeviceTarget::Mig { profile_id, start, .. } => {
            if !g.mig.current {
                return Err(format!("GPU {gpu} has MIG off (the driver does not change MIG modes)"));
            }
            (profile_id, start)
        }
    };
    let profile =
        model.profile_by_id(profile_id).ok_or_else(|| format!("{} has no profile {profile_id}", model.name))?;
    let exists = g.instances.iter().any(|i| i.instance.profile_id == profile_id && i.instance.start == start);
    Ok(Target { gpu, profile_id, start, profile: Some(profile.name.clone()), exists })
}

fn gpu_of(state: &NodeState, gpu: u32) -> Result<&GpuView, String> {
    state.gpus.iter().find(|g| g.device.index == gpu).ok_or_else(|| format!("GPU {gpu} is not on this node"))
}

/// The device nodes a held device needs: its GPU's, and with MIG its GPU and compute
/// instances' capability nodes (as the device plugin gives them).
pub fn device_nodes(
    state: &NodeState,
    gpu: u32,
    gpu_instance_id: Option<u32>,
    mig_uuid: Option<&str>,
) -> Result<Vec<DeviceNode>, String> {
    let g = gpu_of(state, gpu)?;
    let mut nodes = vec![node(format!("/dev/nvidia{}", g.device.minor_number))];
    let Some(gi) = gpu_instance_id else { return Ok(nodes) };
    let inst = g
        .instances
        .iter()
        .find(|i| i.gpu_instance_id == gi)
        .ok_or_else(|| format!("GPU {gpu} has no GPU instance {gi}"))?;
    let ci = inst
        .compute_instances
        .iter()
        .find(|c| Some(c.uuid.as_str()) == mig_uuid)
        .or_else(|| inst.compute_instances.first())
        .ok_or_else(|| format!("GPU {gpu} GPU instance {gi} has no compute instance"))?;
    let no_minor =
        |what: &str| format!("GPU {gpu} GPU instance {gi}: the driver publishes no capability minor of {what}");
    let gi_minor = inst.caps_minor.ok_or_else(|| no_minor("the GPU instance"))?;
    let ci_minor = ci.caps_minor.ok_or_else(|| no_minor("its compute instance"))?;
    nodes.push(node(format!("/dev/nvidia-caps/nvidia-cap{gi_minor}")));
    nodes.push(node(format!("/dev/nvidia-caps/nvidia-cap{ci_minor}")));
    Ok(nodes)
}

fn node(path: String) -> DeviceNode {
    DeviceNode { container_path: path.clone(), host_path: path, permissions: "rw".to_string() }
}

/// A device's health as the kubelet hears it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceHealthStatus {
    Healthy,
    Unhealthy,
    /// The GPU is no longer on the node.
    Unknown,
}

/// The kubelet's limit on a health message.
pub const MAX_HEALTH_MESSAGE: usize = 1024;

/// The health of a held device (its GPU, or its GPU instance with a fault of its own) and why,
/// from the engine's health tracker: unhealthy with the fencing reason and what it waits for;
/// healthy (a degraded GPU says why).
pub fn device_health(state: &NodeState, gpu: u32, gpu_instance_id: Option<u32>) -> (DeviceHealthStatus, String) {
    if gpu_of(state, gpu).is_err() {
        return (DeviceHealthStatus::Unknown, format!("GPU {gpu} is not on this node"));
    }
    let Some(report) = state.health.gpus.iter().find(|r| r.gpu == gpu) else {
        return (DeviceHealthStatus::Healthy, String::new());
    };
    let own = gpu_instance_id
        .and_then(|gi| report.instances.iter().find(|i| i.gpu_instance_id == gi && i.health.is_unhealthy()));
    let (status, message) = match (&report.health, own) {
        (Health::Unhealthy { reason, waiting_for, .. }, _) => {
            (DeviceHealthStatus::Unhealthy, format!("GPU {gpu}: {reason}; {waiting_for}"))
        }
        (_, Some(i)) => {
            (DeviceHealthStatus::Unhealthy, format!("GPU {gpu} GPU instance {}: {}", i.gpu_instance_id, i.health))
        }
        (Health::Degraded { reason }, None) => (DeviceHealthStatus::Healthy, format!("GPU {gpu} degraded: {reason}")),
        (Health::Healthy, None) => (DeviceHealthStatus::Healthy, String::new()),
    };
    (status, truncate(message))
}

/// At most [`MAX_HEALTH_MESSAGE`] characters, ending in `...` when cut (as the kubelet would).
fn truncate(message: String) -> String {
    if message.chars().count() <= MAX_HEALTH_MESSAGE {
        return message;
    }
    let mut cut: String = message.chars().take(MAX_HEALTH_MESSAGE - 3).collect();
    cut.push_str("...");
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_health_messages_are_cut_as_the_kubelet_cuts_them() {
        assert_eq!(truncate("short".into()), "short");
        let long = "x".repeat(2000);
        let cut = truncate(long);
        assert_eq!(cut.chars().count(), MAX_HEALTH_MESSAGE);
        assert!(cut.ends_with("..."));
    }
}
