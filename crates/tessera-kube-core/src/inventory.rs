//! What each resource advertises: from the node's GPUs (`GpuView`s), their health as the daemon
//! tracks it, and the instances about to be reconfigured, to NVIDIA-style plugin devices.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use tessera_gpu::health::HealthReport;
use tessera_gpu::view::GpuView;

use crate::naming::{MigStrategy, NameError, PluginConfig, ResourceName, SharingStrategy};

/// A GPU instance on the node: the GPU's index and the driver's GPU-instance id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct InstanceKey {
    pub gpu: u32,
    pub gpu_instance_id: u32,
}

/// What the inventory is built from.
#[derive(Debug, Clone, Copy)]
pub struct NodeInput<'a> {
    pub gpus: &'a [GpuView],
    /// The daemon's health report (`HealthTracker::report`); a GPU it does not list is healthy.
    pub health: &'a HealthReport,
    /// GPU instances about to be reconfigured: advertised as draining and never preferred.
    pub reconfiguring: &'a BTreeSet<InstanceKey>,
    /// Whole GPUs about to be reconfigured (their MIG mode or every instance).
    pub reconfiguring_gpus: &'a BTreeSet<u32>,
}

/// A device's health as the kubelet sees it (`Healthy` / `Unhealthy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DeviceHealth {
    Healthy,
    Unhealthy,
}

/// A device node a container needs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeviceNode {
    pub container_path: String,
    pub host_path: String,
    /// cgroup permissions, `rw` or `rwm`.
    pub permissions: String,
}

/// One device a resource advertises.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginDevice {
    /// What the kubelet allocates: the MIG UUID or the GPU UUID, `::<n>` for a replica.
    pub id: String,
    pub health: DeviceHealth,
    /// The host NUMA node; `None` = no affinity.
    pub numa_node: Option<i64>,
    pub gpu_index: u32,
    pub gpu_uuid: String,
    /// The MIG device's UUID, for a MIG device.
    pub mig_uuid: Option<String>,
    /// The MIG profile as NVIDIA writes it (`1g.10gb`, `1c.3g.20gb`, `1g.10gb+me`).
    pub profile: Option<String>,
    /// The GPU instance, for a MIG device.
    pub gpu_instance_id: Option<u32>,
    /// GPU-internal NUMA node (for later; none today).
    pub gpu_numa_node: Option<i64>,
    /// Memory of the device (the GPU's, or the MIG profile's), when known: MPS's pinned-memory
    /// limit is a share of it.
    pub memory_mib: Option<u64>,
    pub device_nodes: Vec<DeviceNode>,
    /// About to be reconfigured: still advertised, never preferred or allocated.
    pub draining: bool,
    /// The replica count when shared, else 1.
    pub replicas: u32,
}

/// What each resource advertises, in a deterministic order (resources by name, devices by ID).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Inventory {
    pub resources: BTreeMap<ResourceName, Vec<PluginDevice>>,
}

/// How an inventory changed: which resources the plugin registers, unregisters, or resends.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct InventoryDiff {
    pub appeared: Vec<ResourceName>,
    pub vanished: Vec<ResourceName>,
    pub changed: Vec<ResourceName>,
}

/// Why a node cannot be advertised under the configured strategy (NVIDIA's plugin refuses the
/// same nodes, with the same reasons).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InventoryError {
    /// `single` needs every GPU with MIG on or every GPU with MIG off.
    #[error(
        "mig-strategy single: all GPUs on the node must have the same MIG mode, but GPU {mig_on} has MIG on and GPU \
         {mig_off} has MIG off (use 'mixed', or set one MIG mode)"
    )]
    SingleMixedModes { mig_on: u32, mig_off: u32 },
    /// `single` needs every MIG GPU to have MIG devices.
    #[error("mig-strategy single: GPU {gpu} has MIG on but no MIG devices")]
    SingleNoDevices { gpu: u32 },
    /// `single` needs every MIG device alike.
    #[error(
        "mig-strategy single: more than one MIG device type on the node: {first} (GPU {first_gpu}) and {other} \
         (GPU {other_gpu}); use 'mixed', or make them alike"
    )]
    SingleNotUniform { first: String, first_gpu: u32, other: String, other_gpu: u32 },
    /// MPS shares whole GPUs only.
    #[error("MPS sharing is not supported for MIG devices ({resource} on GPU {gpu}), as in NVIDIA's plugin")]
    MpsOnMig { resource: ResourceName, gpu: u32 },
    /// A MIG device without the capability device nodes a container needs to use it.
    #[error(
        "GPU {gpu}, GPU instance {gpu_instance_id}: no /dev/nvidia-caps minor for {what} (is \
         /proc/driver/nvidia-caps/mig-minors readable?)"
    )]
    NoCapsMinor { gpu: u32, gpu_instance_id: u32, what: String },
    /// A name the rules make that Kubernetes would refuse.
    #[error("GPU {gpu}: {source}")]
    Name { gpu: u32, source: NameError },
}

/// One advertised physical device before sharing: its resource and the device.
struct Base {
    resource: ResourceName,
    device: PluginDevice,
    /// For `single`'s uniformity check: the model and the MIG profile.
    kind: Option<String>,
}

/// The NVIDIA MIG profile name of a compute instance of `ci_slices` in a GPU instance of
/// `gi_slices` named `gi_name`: `3g.20gb` when it spans it, else `1c.3g.20gb`
/// (go-nvlib's `MigProfileInfo.String`).
pub fn mig_profile_name(gi_name: &str, gi_slices: u8, ci_slices: u8) -> String {
    if gi_slices == 0 || ci_slices == gi_slices { gi_name.to_string() } else { format!("{ci_slices}c.{gi_name}") }
}

fn dev(path: String) -> DeviceNode {
    DeviceNode { container_path: path.clone(), host_path: path, permissions: "rw".to_string() }
}

fn is_unhealthy_gpu(report: &HealthReport, gpu: u32) -> bool {
    report.gpus.iter().any(|g| g.gpu == gpu && g.health.is_unhealthy())
}

/// An instance is unhealthy when its GPU is, or a fault was contained to it (the tracker's rule).
fn is_unhealthy_instance(report: &HealthReport, key: InstanceKey) -> bool {
    report.gpus.iter().filter(|g| g.gpu == key.gpu).any(|g| {
        g.health.is_unhealthy()
            || g.instances.iter().any(|i| i.gpu_instance_id == key.gpu_instance_id && i.health.is_unhealthy())
    })
}

fn health_of(unhealthy: bool) -> DeviceHealth {
    if unhealthy { DeviceHealth::Unhealthy } else { DeviceHealth::Healthy }
}

/// Build the inventory: whole GPUs as `nvidia.com/gpu` (every GPU with `none`, GPUs with MIG off
/// otherwise), one device per compute instance (NVIDIA's MIG device) with `single` and `mixed`,
/// then sharing: every device of a replicated resource becomes `replicas` devices `<id>::<n>`,
/// under `<name>.shared` when renamed.
///
/// A compute instance smaller than its GPU instance (`1c.3g.20gb`) is advertised with `mixed` as
/// `nvidia.com/mig-1c.3g.20gb` by NVIDIA's naming rule; NVIDIA's plugin itself registers names
/// only for profiles whose compute instance spans the GPU instance and refuses a node with such a
/// device, where Tessera advertises it (it makes such layouts on purpose).
pub fn build_inventory(config: &PluginConfig, input: &NodeInput<'_>) -> Result<Inventory, InventoryError> {
    let mut gpus: Vec<&GpuView> = input.gpus.iter().collect();
    gpus.sort_by_key(|g| g.device.index);
    let strategy = config.mig_strategy;
    if strategy == MigStrategy::Single {
        let on = gpus.iter().find(|g| g.mig.current);
        let off = gpus.iter().find(|g| !g.mig.current);
        if let (Some(on), Some(off)) = (on, off) {
            return Err(InventoryError::SingleMixedModes { mig_on: on.device.index, mig_off: off.device.index });
        }
    }
    let mut bases: Vec<Base> = Vec::new();
    for g in &gpus {
        let index = g.device.index;
        let numa_node = g.device.numa_node.map(i64::from);
        let gpu_node = dev(format!("/dev/nvidia{}", g.device.minor_number));
        let gpu_draining = input.reconfiguring_gpus.contains(&index);
        if !g.mig.current || strategy == MigStrategy::None {
            let draining = gpu_draining || input.reconfiguring.iter().any(|k| k.gpu == index);
            bases.push(Base {
                resource: ResourceName::gpu(),
                device: PluginDevice {
                    id: g.device.uuid.clone(),
                    health: health_of(is_unhealthy_gpu(input.health, index)),
                    numa_node,
                    gpu_index: index,
                    gpu_uuid: g.device.uuid.clone(),
                    mig_uuid: None,
                    profile: None,
                    gpu_instance_id: None,
                    gpu_numa_node: None,
                    memory_mib: Some(g.device.memory_total_mib),
                    device_nodes: vec![gpu_node],
                    draining,
                    replicas: 1,
                },
                kind: None,
            });
            continue;
        }
        let mut any = false;
        for inst in &g.instances {
            let key = InstanceKey { gpu: index, gpu_instance_id: inst.gpu_instance_id };
            let gi_slices = g
                .model
                .and_then(|m| m.profile_by_id(inst.instance.profile_id))
                .map(|p| p.compute_slices)
                .or(match inst.compute_instances.as_slice() {
                    [only] => Some(only.placement.size),
                    _ => None,
                })
                .unwrap_or(0);
            let mut cis: Vec<_> = inst.compute_instances.iter().collect();
            cis.sort_by_key(|c| (c.placement.start, c.id));
            for ci in cis {
                any = true;
                let profile = mig_profile_name(&inst.profile_name, gi_slices, ci.placement.size);
                let resource = match strategy {
                    MigStrategy::Mixed => {
                        ResourceName::mig(&profile).map_err(|source| InventoryError::Name { gpu: index, source })?
                    }
                    MigStrategy::Single | MigStrategy::None => ResourceName::gpu(),
                };
                let no_minor = |what: String| InventoryError::NoCapsMinor {
                    gpu: index,
                    gpu_instance_id: inst.gpu_instance_id,
                    what,
                };
                let gi_minor = inst.caps_minor.ok_or_else(|| no_minor("the GPU instance".to_string()))?;
                let ci_minor = ci.caps_minor.ok_or_else(|| no_minor(format!("compute instance {}", ci.id)))?;
                let model = g.model.map_or(g.device.name.as_str(), |m| m.name.as_str());
                bases.push(Base {
                    resource,
                    device: PluginDevice {
                        id: ci.uuid.clone(),
                        health: health_of(is_unhealthy_instance(input.health, key)),
                        numa_node,
                        gpu_index: index,
                        gpu_uuid: g.device.uuid.clone(),
                        mig_uuid: Some(ci.uuid.clone()),
                        profile: Some(profile.clone()),
                        gpu_instance_id: Some(inst.gpu_instance_id),
                        gpu_numa_node: None,
                        memory_mib: g
                            .model
                            .and_then(|m| m.profile_by_id(inst.instance.profile_id))
                            .and_then(|p| p.memory_mib),
                        device_nodes: vec![
                            gpu_node.clone(),
                            dev(format!("/dev/nvidia-caps/nvidia-cap{gi_minor}")),
                            dev(format!("/dev/nvidia-caps/nvidia-cap{ci_minor}")),
                        ],
                        draining: gpu_draining || input.reconfiguring.contains(&key),
                        replicas: 1,
                    },
                    kind: Some(format!("{profile} on {model}")),
                });
            }
        }
        if !any && strategy == MigStrategy::Single {
            return Err(InventoryError::SingleNoDevices { gpu: index });
        }
    }
    if strategy == MigStrategy::Single {
        let mut kinds = bases.iter().filter_map(|b| b.kind.as_ref().map(|k| (k, b.device.gpu_index)));
        if let Some((first, first_gpu)) = kinds.next()
            && let Some((other, other_gpu)) = kinds.find(|(k, _)| *k != first)
        {
            return Err(InventoryError::SingleNotUniform {
                first: first.clone(),
                first_gpu,
                other: other.clone(),
                other_gpu,
            });
        }
    }
    share(config, bases)
}

/// Apply the sharing config (NVIDIA's `updateDeviceMapWithReplicas`, with every device of a
/// replicated resource shared).
fn share(config: &PluginConfig, bases: Vec<Base>) -> Result<Inventory, InventoryError> {
    let mps = config.sharing.strategy() == SharingStrategy::Mps;
    let replicated = config.sharing.replicated();
    let mut inv = Inventory::default();
    for b in bases {
        let rule = replicated.and_then(|r| r.resources.iter().find(|x| x.name == b.resource));
        match rule {
            None => inv.resources.entry(b.resource).or_default().push(b.device),
            Some(rule) => {
                if mps && b.device.mig_uuid.is_some() {
                    return Err(InventoryError::MpsOnMig { resource: b.resource, gpu: b.device.gpu_index });
                }
                let name = rule.rename.clone().unwrap_or(b.resource);
                let list = inv.resources.entry(name).or_default();
                for n in 0..rule.replicas {
                    let mut d = b.device.clone();
                    d.id = format!("{}{REPLICA_SEPARATOR}{n}", b.device.id);
                    d.replicas = rule.replicas;
                    list.push(d);
                }
            }
        }
    }
    for list in inv.resources.values_mut() {
        list.sort_by(|a, b| a.id.cmp(&b.id));
    }
    Ok(inv)
}

/// Between a device's ID and its replica number (`GPU-…::3`), as NVIDIA's `AnnotatedID`.
pub const REPLICA_SEPARATOR: &str = "::";

/// The physical device of a (possibly replica) ID: `GPU-…::3` → `GPU-…`.
pub fn base_id(id: &str) -> &str {
    id.split_once(REPLICA_SEPARATOR).map_or(id, |(b, _)| b)
}

impl Inventory {
    /// The device with this ID, with its resource.
    pub fn device(&self, id: &str) -> Option<(&ResourceName, &PluginDevice)> {
        self.resources.iter().find_map(|(r, ds)| ds.iter().find(|d| d.id == id).map(|d| (r, d)))
    }

    /// What changed from `old` to `self`.
    pub fn diff(&self, old: &Inventory) -> InventoryDiff {
        let mut d = InventoryDiff::default();
        for (name, devices) in &self.resources {
            match old.resources.get(name) {
                None => d.appeared.push(name.clone()),
                Some(o) if o != devices => d.changed.push(name.clone()),
                Some(_) => {}
            }
        }
        d.vanished = old.resources.keys().filter(|n| !self.resources.contains_key(*n)).cloned().collect();
        d
    }
}
