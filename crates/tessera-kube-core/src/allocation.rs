//! `GetPreferredAllocation` and `Allocate` as pure decisions over an [`Inventory`].
//!
//! The preference keeps a container on one host NUMA node and, among the devices that do, takes
//! the one that costs the node least usable MIG room, by the planner's own measure
//! ([`tessera_mig::Planner::fragmentation`]: the compute slices instances could still use, then
//! the largest profile that still fits). A GPU instance counts as taken when a process runs in
//! it, when its devices are allocated (not in `available`), or when it is chosen; free GPU
//! instances are room the controller may repartition. An instance of another resource counts as
//! taken only when a process runs in it: the kubelet tells each resource's plugin only about its
//! own devices.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use tessera_gpu::view::GpuView;
use tessera_mig::planner_for;

use crate::cdi;
use crate::inventory::{DeviceHealth, DeviceNode, Inventory, PluginDevice, base_id};
use crate::naming::{DeviceListStrategy, PluginConfig, ResourceName, SharingStrategy};

/// The environment variable naming the devices for the NVIDIA container runtime.
pub const VISIBLE_DEVICES_ENV: &str = "NVIDIA_VISIBLE_DEVICES";
/// `volume-mounts`: where the runtime finds the device list in the container.
pub const VOLUME_MOUNTS_ROOT: &str = "/var/run/nvidia-container-devices";
/// `volume-mounts`: what each device's mount points at on the host.
pub const VOLUME_MOUNTS_HOST_PATH: &str = "/dev/null";
/// Where an MPS root is mounted in the container (NVIDIA's `mps.ContainerRoot`).
pub const MPS_CONTAINER_ROOT: &str = "/mps";
/// Device nodes every CUDA container needs besides its GPUs'.
pub const CONTROL_DEVICES: [&str; 3] = ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"];
/// The plugin's name in CDI annotation keys.
pub const CDI_ANNOTATION_PLUGIN: &str = "tessera-device-plugin";

/// A mount a container needs (MPS's pipe directory, `volume-mounts`' device list).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Mount {
    pub container_path: String,
    pub host_path: String,
    pub read_only: bool,
}

/// What the plugin answers for one container.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContainerAllocation {
    pub envs: BTreeMap<String, String>,
    pub devices: Vec<DeviceNode>,
    pub mounts: Vec<Mount>,
    /// Fully-qualified CDI device names (`tessera.dev/gpu=<id>`), with `cdi-cri`.
    pub cdi_devices: Vec<String>,
    /// CDI annotations, with `cdi-annotations`.
    pub annotations: BTreeMap<String, String>,
}

/// How to answer `Allocate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocateOptions {
    pub config: PluginConfig,
}

/// Why a request cannot be allocated or preferred.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("unknown device '{id}': this node does not advertise it")]
    UnknownDevice { id: String },
    #[error("device '{id}' is unhealthy")]
    Unhealthy { id: String },
    #[error("device '{id}' is about to be reconfigured")]
    Draining { id: String },
    #[error("devices '{first}' ({first_resource}) and '{other}' ({other_resource}) are not of one resource")]
    MixedResources { first: String, first_resource: ResourceName, other: String, other_resource: ResourceName },
    #[error("must-include device '{id}' is not among the available devices")]
    MustIncludeUnavailable { id: String },
    #[error("device '{id}' is listed twice")]
    Duplicate { id: String },
    #[error("asked for {size} devices but {must_include} must be included")]
    SizeBelowMustInclude { size: usize, must_include: usize },
    #[error("asked for {size} devices but only {usable} of the available ones can be used")]
    NotEnough { size: usize, usable: usize },
    #[error("maximum request size for shared resources is 1; found {found}")]
    SharedRequestTooLarge { found: usize },
    #[error("no devices requested")]
    Empty,
}

/// `GetPreferredAllocation`: exactly `size` IDs from `available`, every `must_include` among
/// them, none unhealthy or about to be reconfigured. Devices on the must-include devices' host
/// NUMA nodes come first (without any, a NUMA node that can supply the whole request), then the
/// device whose GPU keeps the most usable room, then (replicas) the GPU with the fewest replicas
/// taken, as NVIDIA's `distributed` policy; ties by ID. The answer is in that choice order, the
/// must-include devices first.
pub fn preferred_allocation(
    available: &[String],
    must_include: &[String],
    size: usize,
    inventory: &Inventory,
    gpus: &[GpuView],
) -> Result<Vec<String>, AllocError> {
    if size < must_include.len() {
        return Err(AllocError::SizeBelowMustInclude { size, must_include: must_include.len() });
    }
    let mut seen = BTreeSet::new();
    let mut devices: BTreeMap<&str, &PluginDevice> = BTreeMap::new();
    for id in available {
        if !seen.insert(id.as_str()) {
            return Err(AllocError::Duplicate { id: id.clone() });
        }
        let (_, d) = inventory.device(id).ok_or_else(|| AllocError::UnknownDevice { id: id.clone() })?;
        devices.insert(id, d);
    }
    let mut chosen: Vec<&PluginDevice> = Vec::new();
    let mut must = BTreeSet::new();
    for id in must_include {
        let d = devices.get(id.as_str()).ok_or_else(|| AllocError::MustIncludeUnavailable { id: id.clone() })?;
        usable(d)?;
        if !must.insert(id.as_str()) {
            return Err(AllocError::Duplicate { id: id.clone() });
        }
        chosen.push(d);
    }
    let mut candidates: Vec<&PluginDevice> =
        devices.values().filter(|d| !must.contains(d.id.as_str()) && usable(d).is_ok()).copied().collect();
    let needed = size - chosen.len();
    if candidates.len() < needed {
        return Err(AllocError::NotEnough { size, usable: candidates.len() + chosen.len() });
    }
    let room = Room::new(gpus, inventory, &seen);
    for _ in 0..needed {
        let numa_ok = numa_preference(&chosen, &candidates, size - chosen.len());
        let taken = room.taken_with(&chosen);
        let best = candidates
            .iter()
            .enumerate()
            .min_by_key(|(_, d)| {
                let numa_penalty = u8::from(!numa_ok(d));
                let loss = room.loss(&taken, d);
                let replicas_taken = replicas_taken(inventory, &seen, &chosen, d);
                (numa_penalty, loss, replicas_taken, d.id.clone())
            })
            .map(|(i, _)| i);
        let Some(i) = best else { break };
        chosen.push(candidates.remove(i));
    }
    Ok(chosen.iter().map(|d| d.id.clone()).collect())
}

/// Whether a device may be handed out.
fn usable(d: &PluginDevice) -> Result<(), AllocError> {
    if d.health == DeviceHealth::Unhealthy {
        return Err(AllocError::Unhealthy { id: d.id.clone() });
    }
    if d.draining {
        return Err(AllocError::Draining { id: d.id.clone() });
    }
    Ok(())
}

/// Which candidates keep the allocation on one NUMA node: those on a node of the devices already
/// chosen; with none chosen, those on a node that can supply all `left` devices (when one can).
fn numa_preference<'a>(
    chosen: &[&PluginDevice],
    candidates: &[&PluginDevice],
    left: usize,
) -> impl Fn(&PluginDevice) -> bool + 'a {
    let chosen_nodes: BTreeSet<i64> = chosen.iter().filter_map(|d| d.numa_node).collect();
    let mut per_node: BTreeMap<i64, usize> = BTreeMap::new();
    for d in candidates {
        if let Some(n) = d.numa_node {
            *per_node.entry(n).or_default() += 1;
        }
    }
    let wanted: BTreeSet<i64> = if chosen_nodes.is_empty() {
        per_node.into_iter().filter(|(_, c)| *c >= left).map(|(n, _)| n).collect()
    } else {
        chosen_nodes
    };
    let any = wanted.is_empty();
    move |d: &PluginDevice| any || d.numa_node.is_none_or(|n| wanted.contains(&n))
}

/// How many replicas of `d`'s physical device are taken (not available, or chosen).
fn replicas_taken(
    inventory: &Inventory,
    available: &BTreeSet<&str>,
    chosen: &[&PluginDevice],
    d: &PluginDevice,
) -> usize {
    if d.replicas <= 1 {
        return 0;
    }
    let base = base_id(&d.id);
    let all = inventory.resources.values().flatten().filter(|x| base_id(&x.id) == base);
    let not_available = all.filter(|x| !available.contains(x.id.as_str())).count();
    not_available + chosen.iter().filter(|x| base_id(&x.id) == base).count()
}

/// The room `layout` leaves on a GPU of `model`, by the planner's fragmentation measure: the
/// compute slices instances could still use, then the compute slices of the largest profile that
/// still fits; `(0, 0)` where the planner cannot say. The one measure behind preferred
/// allocations and the order of published DRA devices.
pub(crate) fn room_left(model: &tessera_mig::GpuModel, layout: &[tessera_mig::Instance]) -> (u32, u32) {
    let Some(planner) = planner_for(model) else { return (0, 0) };
    let Ok(report) = planner.fragmentation(layout) else { return (0, 0) };
    let largest = report
        .fits
        .iter()
        .filter(|f| f.count > 0)
        .filter_map(|f| model.profile_by_id(f.profile_id))
        .map(|p| u32::from(p.compute_slices))
        .max()
        .unwrap_or(0);
    (u32::from(report.usable_compute_slices), largest)
}

/// The usable MIG room of the node's GPUs, by the planner's fragmentation measure.
struct Room<'a> {
    gpus: BTreeMap<u32, &'a GpuView>,
    /// GPU instances taken before this request: busy, or with a device advertised but not available.
    taken: BTreeSet<(u32, u32)>,
}

impl<'a> Room<'a> {
    fn new(gpus: &'a [GpuView], inventory: &Inventory, available: &BTreeSet<&str>) -> Self {
        let mut taken = BTreeSet::new();
        for g in gpus {
            for i in g.instances.iter().filter(|i| i.busy) {
                taken.insert((g.device.index, i.gpu_instance_id));
            }
        }
        // The kubelet lists only this resource's free devices: its other devices are allocated.
        // Other resources' instances count as free unless a process runs in them.
        let resources = inventory.resources.values().filter(|ds| ds.iter().any(|d| available.contains(d.id.as_str())));
        for d in resources.flatten() {
            if let Some(gi) = d.gpu_instance_id
                && !available.contains(d.id.as_str())
            {
                taken.insert((d.gpu_index, gi));
            }
        }
        Room { gpus: gpus.iter().map(|g| (g.device.index, g)).collect(), taken }
    }

    fn taken_with(&self, chosen: &[&PluginDevice]) -> BTreeSet<(u32, u32)> {
        let mut t = self.taken.clone();
        t.extend(chosen.iter().filter_map(|d| d.gpu_instance_id.map(|gi| (d.gpu_index, gi))));
        t
    }

    /// The room left on `gpu` with the `taken` GPU instances in place: the compute slices
    /// instances could still use, and the compute slices of the largest profile that still fits.
    fn usable(&self, gpu: u32, taken: &BTreeSet<(u32, u32)>) -> (u32, u32) {
        let Some(g) = self.gpus.get(&gpu) else { return (0, 0) };
        let Some(model) = g.model else { return (0, 0) };
        let layout: Vec<_> =
            g.instances.iter().filter(|i| taken.contains(&(gpu, i.gpu_instance_id))).map(|i| i.instance).collect();
        room_left(model, &layout)
    }

    /// What taking `d` costs its GPU: usable compute slices lost, then largest-profile slices lost.
    fn loss(&self, taken: &BTreeSet<(u32, u32)>, d: &PluginDevice) -> (u32, u32) {
        let Some(gi) = d.gpu_instance_id else { return (0, 0) };
        if taken.contains(&(d.gpu_index, gi)) {
            return (0, 0);
        }
        let before = self.usable(d.gpu_index, taken);
        let mut after = taken.clone();
        after.insert((d.gpu_index, gi));
        let after = self.usable(d.gpu_index, &after);
        (before.0.saturating_sub(after.0), before.1.saturating_sub(after.1))
    }
}

/// `Allocate` for one container: every ID advertised, healthy and not about to be reconfigured,
/// all of one resource. What the answer holds follows NVIDIA's plugin: CDI names (`cdi-cri`,
/// `cdi-annotations`), MPS's pipe directory and its share of the GPU, and unless only CDI is used,
/// `NVIDIA_VISIBLE_DEVICES` (`envvar`; `volume-mounts` lists the devices as mounts instead) and,
/// with `passDeviceSpecs`, the device nodes.
pub fn allocate(
    ids: &[String],
    inventory: &Inventory,
    options: &AllocateOptions,
) -> Result<ContainerAllocation, AllocError> {
    let config = &options.config;
    let mut found: Vec<(&ResourceName, &PluginDevice)> = Vec::new();
    for id in ids {
        let (r, d) = inventory.device(id).ok_or_else(|| AllocError::UnknownDevice { id: id.clone() })?;
        usable(d)?;
        if let Some((fr, fd)) = found.first()
            && *fr != r
        {
            return Err(AllocError::MixedResources {
                first: fd.id.clone(),
                first_resource: (*fr).clone(),
                other: d.id.clone(),
                other_resource: r.clone(),
            });
        }
        if found.iter().any(|(_, x)| x.id == d.id) {
            return Err(AllocError::Duplicate { id: id.clone() });
        }
        found.push((r, d));
    }
    let Some((resource, _)) = found.first().copied() else {
        return Err(AllocError::Empty);
    };
    let sharing = config.sharing.strategy();
    let any_replica = found.iter().any(|(_, d)| d.replicas > 1);
    if any_replica
        && found.len() > 1
        && sharing != SharingStrategy::None
        && config.sharing.replicated().is_some_and(|r| r.fail_requests_greater_than_one)
    {
        return Err(AllocError::SharedRequestTooLarge { found: found.len() });
    }
    // One entry per physical device, in request order.
    let mut unique: Vec<&PluginDevice> = Vec::new();
    for (_, d) in &found {
        if !unique.iter().any(|u| base_id(&u.id) == base_id(&d.id)) {
            unique.push(d);
        }
    }
    let visible: Vec<&str> = unique.iter().map(|d| base_id(&d.id)).collect();
    let mut out = ContainerAllocation::default();
    let strategies = &config.device_list_strategy;
    let names: Vec<String> = visible.iter().map(|id| cdi::qualified_name(id)).collect();
    if strategies.contains(&DeviceListStrategy::CdiAnnotations) {
        out.annotations
            .insert(format!("{}{CDI_ANNOTATION_PLUGIN}_{}", config.cdi_annotation_prefix, visible[0]), names.join(","));
    }
    if strategies.contains(&DeviceListStrategy::CdiCri) {
        out.cdi_devices = names;
    }
    if sharing == SharingStrategy::Mps && any_replica {
        mps(&mut out, resource, &unique, config);
    }
    let all_cdi =
        strategies.iter().all(|s| matches!(s, DeviceListStrategy::CdiAnnotations | DeviceListStrategy::CdiCri));
    if all_cdi {
        return Ok(out);
    }
    if strategies.contains(&DeviceListStrategy::EnvVar) {
        out.envs.insert(VISIBLE_DEVICES_ENV.to_string(), visible.join(","));
    }
    if strategies.contains(&DeviceListStrategy::VolumeMounts) {
        out.envs.insert(VISIBLE_DEVICES_ENV.to_string(), VOLUME_MOUNTS_ROOT.to_string());
        for id in &visible {
            out.mounts.push(Mount {
                container_path: format!("{VOLUME_MOUNTS_ROOT}/{id}"),
                host_path: VOLUME_MOUNTS_HOST_PATH.to_string(),
                read_only: false,
            });
        }
    }
    if config.pass_device_specs {
        for d in &unique {
            for n in &d.device_nodes {
                if !out.devices.contains(n) {
                    out.devices.push(n.clone());
                }
            }
        }
        out.devices.extend(control_device_nodes());
    }
    Ok(out)
}

/// `/dev/nvidiactl`, `/dev/nvidia-uvm`, `/dev/nvidia-uvm-tools`.
pub fn control_device_nodes() -> Vec<DeviceNode> {
    CONTROL_DEVICES
        .iter()
        .map(|p| DeviceNode { container_path: p.to_string(), host_path: p.to_string(), permissions: "rw".to_string() })
        .collect()
}

/// MPS: the per-resource pipe directory and the shared memory directory, as NVIDIA's plugin mounts
/// them, and the client-side share of each GPU (the control daemon's defaults, which NVIDIA's
/// MPS daemon sets: 100/replicas percent of the threads, 1/replicas of the memory pinned).
fn mps(out: &mut ContainerAllocation, resource: &ResourceName, devices: &[&PluginDevice], config: &PluginConfig) {
    let pipe = format!("{MPS_CONTAINER_ROOT}/{resource}/pipe");
    out.envs.insert("CUDA_MPS_PIPE_DIRECTORY".to_string(), pipe.clone());
    out.mounts.push(Mount {
        container_path: pipe,
        host_path: format!("{}/{resource}/pipe", config.mps_root.trim_end_matches('/')),
        read_only: false,
    });
    out.mounts.push(Mount {
        container_path: "/dev/shm".to_string(),
        host_path: format!("{}/shm", config.mps_root.trim_end_matches('/')),
        read_only: false,
    });
    let replicas = devices.iter().map(|d| d.replicas).max().unwrap_or(1).max(1);
    out.envs.insert("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE".to_string(), (100 / replicas).to_string());
    let limits: Vec<String> = devices
        .iter()
        .enumerate()
        .filter_map(|(i, d)| d.memory_mib.map(|m| format!("{i}={}M", m / u64::from(d.replicas.max(1)))))
        .collect();
    if !limits.is_empty() {
        out.envs.insert("CUDA_MPS_PINNED_DEVICE_MEM_LIMIT".to_string(), limits.join(","));
    }
}
