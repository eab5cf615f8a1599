//! Dynamic Resource Allocation (KEP-4815, partitionable devices): the ResourceSlices one node's
//! driver publishes for its MIG-capable GPUs, as plain values.
//!
//! Per GPU one counter set `gpu-<i>-counters` holds the GPU's shared capacity, and every legal
//! MIG placement (each profile at each legal start unit) is a device that consumes its share.
//! The counters enforce the driver's placement rules, so the scheduler's first-fit allocator can
//! only pick sets of devices that form a valid layout ([`tessera_mig::validate`]):
//!
//! - `memory-slice-<k>` (value 1) per placement unit: two devices overlapping in a unit never
//!   both fit;
//! - `compute-slices` (the catalog has compute slices for every profile; SM counts are not in
//!   it for every model, so they are published as capacity only where known, never as a counter);
//! - `memory` (MiB), `gpu-instances` (the model's most GPU instances), `ofa` (optical-flow
//!   engines, which `+me` profiles own), `profile-<id>` where a profile's most instances is
//!   below its number of legal starts, and `media` where a `+me.all` profile exists (it takes
//!   all of it; every other profile that owns media takes one).
//!
//! The whole GPU is one more device that consumes every counter in full.
//!
//! **Order** ([`DraOrder::BestFitFromStart`], issue 13). The allocator visits devices in slice
//! and device order and takes the first that fits. Within a profile, devices are sorted across
//! the node's GPUs (1.35 device slices may hold any GPU's devices) so that the first fit is the
//! placement that strands the fewest compute slices by [`tessera_mig::Planner::fragmentation`]
//! (usable compute slices lost beyond the instance's own), then the one on the fullest GPU (least
//! usable room), then by GPU index and start unit. On an H100 this puts a `3g.40gb` at 4 on any
//! GPU before it puts one at 0 (which always strands a slice), and packs GPUs before it opens
//! empty ones. In the 1.34 shape a GPU's devices stay with its counter set, so GPUs are published
//! fullest first and best fit applies within each. Orders measured against it, and why this
//! one: `docs/evaluation/kubernetes.md` ("DRA: choosing the published order").
//!
//! **Shapes.** [`SliceShape::V1_34`] keeps each GPU's counter set in the slice with its devices
//! (at most 32 counters across the sets of a slice); [`SliceShape::V1_35`] publishes counters-only
//! slices first, then device slices. Every API limit is checked; one that cannot be met is a
//! [`DraError`] naming the GPU and the limit.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use tessera_mig::{GpuModel, Instance, ProfileKind};

/// Most devices in one slice when any device consumes counters.
pub const MAX_DEVICES_WITH_COUNTERS: usize = 64;
/// Most counters consumed by the devices of one slice, summed.
pub const MAX_CONSUMED_COUNTERS_PER_SLICE: usize = 2048;
/// Most counter sets in one slice.
pub const MAX_COUNTER_SETS_PER_SLICE: usize = 8;
/// Most counters in one counter set (and in one device's consumption of a set).
pub const MAX_COUNTERS_PER_SET: usize = 32;
/// Most counters across all sets of one slice in the 1.34 shape.
pub const MAX_COUNTERS_PER_SLICE_V1_34: usize = 32;
/// Most attributes plus capacities of one device.
pub const MAX_ATTRIBUTES_AND_CAPACITY: usize = 32;
/// Longest DNS label (device and counter-set names).
pub const MAX_NAME_LEN: usize = 63;

/// Attribute key of the GPU's host NUMA node.
pub const NUMA_NODE_ATTRIBUTE: &str = "resource.kubernetes.io/numaNode";
/// Attribute key of the GPU-internal NUMA node a placement lies in (GPUs that have them).
pub const GPU_NUMA_NODE_ATTRIBUTE: &str = "gpuNumaNode";

/// Which Kubernetes release's slice layout to publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SliceShape {
    /// Counter sets in the same slice as the devices that consume them.
    V1_34,
    /// Counters-only slices first, then device slices.
    V1_35,
}

/// An instance that exists on the GPU now, with its MIG UUID where known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DraInstance {
    /// The GPU instance's profile and placement.
    pub instance: Instance,
    /// `MIG-...` UUID, when the backend reported it.
    pub mig_uuid: Option<String>,
    /// Who uses it.
    pub held_by: InstanceUse,
}

/// Who uses an instance that exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceUse {
    /// Nobody: made by an admin, mig-parted or an earlier job. Adopted: its own device is
    /// published (a claim allocated it takes it as it is), every device overlapping it is not,
    /// and it is never destroyed.
    Idle,
    /// A DRA claim this driver prepared: the allocator counts it against the counters itself.
    Claim,
    /// Something else holds it (the daemon's own job, a device-plugin pod): no device that
    /// overlaps it is published, and what it takes is taken off the GPU's counters.
    Other,
}

/// One GPU of the node, as the driver sees it.
#[derive(Debug, Clone)]
pub struct DraGpu {
    /// The GPU's index on the node.
    pub index: u32,
    /// `GPU-...` UUID.
    pub uuid: String,
    /// Its catalog model.
    pub model: &'static GpuModel,
    /// Host NUMA node, when known.
    pub numa_node: Option<u32>,
    /// Whether MIG mode is on; with it off only the whole GPU is published (the driver does
    /// not change MIG modes).
    pub mig_enabled: bool,
    /// Instances that exist now (the current layout).
    pub instances: Vec<DraInstance>,
}

/// The pool's identity: one pool per node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DraPool {
    /// `spec.driver`, e.g. `gpu.nvidia.com`.
    pub driver: String,
    /// The node's name; also the pool's name.
    pub node_name: String,
    /// The pool's generation (bump on every change).
    pub generation: i64,
    /// Which release's slice layout.
    pub shape: SliceShape,
}

/// Why the slices could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DraError {
    /// A GPU's counters or devices break an API limit that splitting cannot meet.
    #[error("GPU {gpu} ({model}): {what} is {count}, above the limit of {limit}")]
    Limit { gpu: u32, model: String, what: &'static str, count: usize, limit: usize },
    /// Two devices or counter sets would get the same name.
    #[error("GPU {gpu}: the name '{name}' is not unique in the pool")]
    DuplicateName { gpu: u32, name: String },
    /// A name is not a DNS label.
    #[error("GPU {gpu}: '{name}' is not a DNS label (lowercase alphanumerics and '-', at most 63)")]
    BadName { gpu: u32, name: String },
}

/// A counter's value: a Kubernetes quantity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Counter {
    /// The quantity, e.g. `81559Mi` or `7`.
    pub value: String,
}

/// A capacity's value: a Kubernetes quantity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    /// The quantity.
    pub value: String,
}

/// A device attribute value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Attribute {
    /// `{string: ...}`.
    String(String),
    /// `{int: ...}`.
    Int(i64),
}

/// `sharedCounters[]`: one GPU's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterSet {
    /// DNS label, unique in the pool.
    pub name: String,
    /// Counter name to its total.
    pub counters: BTreeMap<String, Counter>,
}

/// `consumesCounters[]`: what a device takes from one counter set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceCounterConsumption {
    /// The counter set's name.
    pub counter_set: String,
    /// Counter name to the amount taken.
    pub counters: BTreeMap<String, Counter>,
}

/// `devices[]`: one allocatable device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    /// DNS label, unique in the pool.
    pub name: String,
    /// Attributes by (possibly qualified) name.
    pub attributes: BTreeMap<String, Attribute>,
    /// Capacities by name.
    pub capacity: BTreeMap<String, Capacity>,
    /// Counters the device consumes.
    pub consumes_counters: Vec<DeviceCounterConsumption>,
}

/// `spec.pool`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourcePool {
    /// The pool's name (the node's).
    pub name: String,
    /// The pool's generation.
    pub generation: i64,
    /// How many slices the pool has.
    pub resource_slice_count: i64,
}

/// `spec` of one ResourceSlice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceSliceSpec {
    /// The driver's name.
    pub driver: String,
    /// The node the devices are on.
    pub node_name: String,
    /// The pool this slice belongs to.
    pub pool: ResourcePool,
    /// Counter sets (empty in a 1.35 device slice).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared_counters: Vec<CounterSet>,
    /// Devices (empty in a 1.35 counters-only slice).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<Device>,
}

/// One ResourceSlice (only its spec; the shell adds metadata).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceSlice {
    /// The slice's spec.
    pub spec: ResourceSliceSpec,
}

/// Counters consumed by the devices of a slice, summed.
pub fn consumed_counters(devices: &[Device]) -> usize {
    devices.iter().flat_map(|d| &d.consumes_counters).map(|c| c.counters.len()).sum()
}

/// Counter-set name of GPU `index`.
pub fn counter_set_name(index: u32) -> String {
    format!("gpu-{index}-counters")
}

/// A profile name as part of a DNS label: `1g.10gb+me` → `1g-10gb-with-me`, `1g.5gb-me` → `1g-5gb-me`.
pub fn profile_label(profile: &str) -> String {
    let s = profile.to_ascii_lowercase().replace('+', "-with-");
    let mut out = String::new();
    for c in s.chars() {
        let c = if c.is_ascii_alphanumeric() { c } else { '-' };
        if c == '-' && (out.is_empty() || out.ends_with('-')) {
            continue;
        }
        out.push(c);
    }
    out.trim_end_matches('-').to_string()
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Counters in their native units (memory in MiB, everything else a count), written as
/// quantities only when published ([`quantities`]).
type Amounts = BTreeMap<String, u64>;

/// `amounts` as the API's quantities: `memory` in `Mi`, the rest plain numbers.
fn quantities(amounts: &Amounts) -> BTreeMap<String, Counter> {
    amounts
        .iter()
        .map(|(name, n)| {
            let value = if name == "memory" { format!("{n}Mi") } else { n.to_string() };
            (name.clone(), Counter { value })
        })
        .collect()
}

/// A GPU's devices and its counter set, before they are split into slices.
struct GpuDevices {
    set: CounterSet,
    devices: Vec<Device>,
}

/// Devices (in published order) and the counter set of one GPU.
fn gpu_devices(gpu: &DraGpu, order: DraOrder) -> Result<GpuDevices, DraError> {
    let model = gpu.model;
    let limit = |what: &'static str, count: usize, limit: usize| DraError::Limit {
        gpu: gpu.index,
        model: model.name.clone(),
        what,
        count,
        limit,
    };
    let set_name = counter_set_name(gpu.index);
    let units = model.placement_units;
    let media_all = model.profiles.iter().any(|p| p.kind == ProfileKind::MediaAll);
    let media_total = u64::from(model.max_gpu_instances);

    // The counter set: the GPU's totals.
    let mut totals: Amounts = BTreeMap::new();
    totals.insert("memory".to_string(), model.total_memory_mib());
    totals.insert("compute-slices".to_string(), u64::from(model.compute_slices));
    totals.insert("gpu-instances".to_string(), u64::from(model.max_gpu_instances));
    totals.insert("ofa".to_string(), u64::from(model.ofa_engines));
    if media_all {
        totals.insert("media".to_string(), media_total);
    }
    for k in 0..units {
        totals.insert(format!("memory-slice-{k}"), 1);
    }
    for p in &model.profiles {
        if usize::from(p.max_count) < p.placements.len() {
            totals.insert(format!("profile-{}", p.id), u64::from(p.max_count));
        }
    }
    if totals.len() > MAX_COUNTERS_PER_SET {
        return Err(limit("counters in its counter set", totals.len(), MAX_COUNTERS_PER_SET));
    }
    // What instances held by others take is not the allocator's to give.
    let mut left = totals.clone();
    for i in gpu.instances.iter().filter(|i| i.held_by == InstanceUse::Other) {
        if let Some(p) = model.profile_by_id(i.instance.profile_id) {
            for (name, take) in profile_take(model, p, i.instance.start, &totals) {
                if let Some(n) = left.get_mut(&name) {
                    *n = n.saturating_sub(take);
                }
            }
        }
    }
    let counters = quantities(&left);
    let set = CounterSet { name: set_name.clone(), counters };

    let base_attributes = |kind: &str| {
        let mut a = BTreeMap::new();
        a.insert("type".to_string(), Attribute::String(kind.to_string()));
        a.insert("parentUUID".to_string(), Attribute::String(gpu.uuid.clone()));
        a.insert("model".to_string(), Attribute::String(model.name.clone()));
        a.insert("index".to_string(), Attribute::Int(i64::from(gpu.index)));
        if let Some(n) = gpu.numa_node {
            a.insert(NUMA_NODE_ATTRIBUTE.to_string(), Attribute::Int(i64::from(n)));
        }
        a
    };

    let mut devices = Vec::new();
    // Instances not prepared for a claim: their placements are not the allocator's.
    let foreign: Vec<&DraInstance> = gpu.instances.iter().filter(|i| i.held_by != InstanceUse::Claim).collect();
    let overlaps_foreign = |profile: &tessera_mig::Profile, start: u8| {
        foreign.iter().any(|f| {
            let own =
                f.held_by == InstanceUse::Idle && f.instance.profile_id == profile.id && f.instance.start == start;
            !own && model.profile_by_id(f.instance.profile_id).is_some_and(|fp| {
                let (a0, a1) = (start, start.saturating_add(profile.placement_size));
                let (b0, b1) = (f.instance.start, f.instance.start.saturating_add(fp.placement_size));
                a0 < b1 && b0 < a1
            })
        })
    };
    // The whole GPU: every counter in full (on a MIG GPU, its full-size instance).
    if foreign.is_empty() {
        let mut attributes = base_attributes("gpu");
        attributes.insert("uuid".to_string(), Attribute::String(gpu.uuid.clone()));
        let mut capacity = BTreeMap::new();
        capacity.insert("memory".to_string(), Capacity { value: format!("{}Mi", model.total_memory_mib()) });
        if let Some(sm) = model.sm_count {
            capacity.insert("multiprocessors".to_string(), Capacity { value: sm.to_string() });
        }
        devices.push(Device {
            name: format!("gpu-{}", gpu.index),
            attributes,
            capacity,
            consumes_counters: vec![DeviceCounterConsumption {
                counter_set: set_name.clone(),
                counters: set.counters.clone(),
            }],
        });
    }
    if !gpu.mig_enabled {
        return finish(gpu, set, devices);
    }

    let current: Vec<Instance> = gpu.instances.iter().map(|i| i.instance).collect();

    for p in &model.profiles {
        let label = profile_label(&p.name);
        let memory = model.profile_memory_mib(p);
        for start in placement_order_in(model, &current, p, order) {
            if overlaps_foreign(p, start) {
                continue;
            }
            let mut attributes = base_attributes("mig");
            attributes.insert("profile".to_string(), Attribute::String(p.name.clone()));
            attributes.insert("placementStart".to_string(), Attribute::Int(i64::from(start)));
            attributes.insert("placementSize".to_string(), Attribute::Int(i64::from(p.placement_size)));
            if let Some(n) = model.gpu_numa_node(start, p.placement_size) {
                attributes.insert(GPU_NUMA_NODE_ATTRIBUTE.to_string(), Attribute::Int(i64::from(n)));
            }
            if let Some(uuid) = gpu
                .instances
                .iter()
                .find(|i| i.instance.profile_id == p.id && i.instance.start == start)
                .and_then(|i| i.mig_uuid.clone())
            {
                attributes.insert("uuid".to_string(), Attribute::String(uuid));
            }
            let mut capacity = BTreeMap::new();
            capacity.insert("memory".to_string(), Capacity { value: format!("{memory}Mi") });
            capacity.insert("compute-slices".to_string(), Capacity { value: p.compute_slices.to_string() });
            if let Some(sm) = p.sm_count {
                capacity.insert("multiprocessors".to_string(), Capacity { value: sm.to_string() });
            }
            let take = quantities(&profile_take(model, p, start, &totals));
            if take.len() > MAX_COUNTERS_PER_SET {
                return Err(limit("counters one device consumes", take.len(), MAX_COUNTERS_PER_SET));
            }
            devices.push(Device {
                name: format!("gpu-{}-{label}-p{start}", gpu.index),
                attributes,
                capacity,
                consumes_counters: vec![DeviceCounterConsumption { counter_set: set_name.clone(), counters: take }],
            });
        }
    }
    finish(gpu, set, devices)
}

/// What one instance of `p` at `start` takes from its GPU's counters (`totals`: the GPU's set,
/// to know which per-profile counters it has).
fn profile_take(model: &GpuModel, p: &tessera_mig::Profile, start: u8, totals: &Amounts) -> Amounts {
    let media_all = model.profiles.iter().any(|p| p.kind == ProfileKind::MediaAll);
    let mut take = BTreeMap::new();
    take.insert("memory".to_string(), model.profile_memory_mib(p));
    take.insert("compute-slices".to_string(), u64::from(p.compute_slices));
    take.insert("gpu-instances".to_string(), 1);
    if p.ofa_engines > 0 {
        take.insert("ofa".to_string(), u64::from(p.ofa_engines));
    }
    if media_all && !p.is_no_media() {
        let n = if p.kind == ProfileKind::MediaAll { u64::from(model.max_gpu_instances) } else { 1 };
        take.insert("media".to_string(), n);
    }
    for k in start..start.saturating_add(p.placement_size).min(model.placement_units) {
        take.insert(format!("memory-slice-{k}"), 1);
    }
    if totals.contains_key(&format!("profile-{}", p.id)) {
        take.insert(format!("profile-{}", p.id), 1);
    }
    take
}

/// The limits every device of a GPU must meet, checked once its devices are chosen.
fn finish(gpu: &DraGpu, set: CounterSet, devices: Vec<Device>) -> Result<GpuDevices, DraError> {
    let limit = |what: &'static str, count: usize, limit: usize| DraError::Limit {
        gpu: gpu.index,
        model: gpu.model.name.clone(),
        what,
        count,
        limit,
    };
    for d in &devices {
        let n = d.attributes.len() + d.capacity.len();
        if n > MAX_ATTRIBUTES_AND_CAPACITY {
            return Err(limit("attributes plus capacities of one device", n, MAX_ATTRIBUTES_AND_CAPACITY));
        }
        if !is_dns_label(&d.name) {
            return Err(DraError::BadName { gpu: gpu.index, name: d.name.clone() });
        }
        if consumed_counters(std::slice::from_ref(d)) > MAX_CONSUMED_COUNTERS_PER_SLICE {
            return Err(limit(
                "counters one device consumes",
                consumed_counters(std::slice::from_ref(d)),
                MAX_CONSUMED_COUNTERS_PER_SLICE,
            ));
        }
    }
    if !is_dns_label(&set.name) {
        return Err(DraError::BadName { gpu: gpu.index, name: set.name.clone() });
    }
    Ok(GpuDevices { set, devices })
}

/// A slice being filled.
#[derive(Default)]
struct Draft {
    sets: Vec<CounterSet>,
    devices: Vec<Device>,
}

impl Draft {
    fn counters(&self) -> usize {
        self.sets.iter().map(|s| s.counters.len()).sum()
    }
}

/// The node's ResourceSlices, in the order the allocator should visit them ([`DraOrder::default`]).
///
/// Pure: the same GPUs give the same slices. Errors name the GPU and the limit it breaks.
pub fn resource_slices(pool: &DraPool, gpus: &[DraGpu]) -> Result<Vec<ResourceSlice>, DraError> {
    resource_slices_in_order(pool, gpus, DraOrder::default())
}

/// [`resource_slices`] with the devices in `order` (to compare orders; the published one is
/// [`DraOrder::default`]).
pub fn resource_slices_in_order(
    pool: &DraPool,
    gpus: &[DraGpu],
    order: DraOrder,
) -> Result<Vec<ResourceSlice>, DraError> {
    let mut per_gpu = Vec::new();
    let mut names = BTreeSet::new();
    // GPUs in the order their devices are visited: by index, or the fullest first.
    let mut gpus: Vec<&DraGpu> = gpus.iter().collect();
    let best_fit = matches!(order, DraOrder::BestFit | DraOrder::BestFitFromStart);
    if best_fit || order == DraOrder::FullestGpuFirst {
        gpus.sort_by_key(|g| (std::cmp::Reverse(used_compute(g)), g.index));
    }
    for gpu in gpus {
        let g = gpu_devices(gpu, order)?;
        for name in std::iter::once(&g.set.name).chain(g.devices.iter().map(|d| &d.name)) {
            if !names.insert(name.clone()) {
                return Err(DraError::DuplicateName { gpu: gpu.index, name: name.clone() });
            }
        }
        per_gpu.push((gpu, g));
    }

    let mut drafts: Vec<Draft> = Vec::new();
    match pool.shape {
        SliceShape::V1_34 => {
            // Each GPU's set travels with its devices; pack whole GPUs while every limit holds.
            let mut cur = Draft::default();
            for (gpu, g) in per_gpu {
                let lim = |what, count, limit| DraError::Limit {
                    gpu: gpu.index,
                    model: gpu.model.name.clone(),
                    what,
                    count,
                    limit,
                };
                let alone = [
                    ("counters in one 1.34 slice", g.set.counters.len(), MAX_COUNTERS_PER_SLICE_V1_34),
                    ("devices in one slice", g.devices.len(), MAX_DEVICES_WITH_COUNTERS),
                    ("counters consumed in one slice", consumed_counters(&g.devices), MAX_CONSUMED_COUNTERS_PER_SLICE),
                ];
                if let Some((what, count, limit)) = alone.into_iter().find(|(_, c, l)| c > l) {
                    return Err(lim(what, count, limit));
                }
                let fits = cur.sets.len() < MAX_COUNTER_SETS_PER_SLICE
                    && cur.counters() + g.set.counters.len() <= MAX_COUNTERS_PER_SLICE_V1_34
                    && cur.devices.len() + g.devices.len() <= MAX_DEVICES_WITH_COUNTERS
                    && consumed_counters(&cur.devices) + consumed_counters(&g.devices)
                        <= MAX_CONSUMED_COUNTERS_PER_SLICE;
                if !fits {
                    drafts.push(std::mem::take(&mut cur));
                }
                cur.sets.push(g.set);
                let mut devices = g.devices;
                if best_fit {
                    // The GPU's counter set travels with its devices: best fit within the GPU.
                    devices.sort_by_cached_key(|d| best_fit_key(gpu, d, order));
                }
                cur.devices.extend(devices);
            }
            if !cur.sets.is_empty() {
                drafts.push(cur);
            }
        }
        SliceShape::V1_35 => {
            let mut sets = Vec::new();
            let mut devices = Vec::new();
            let mut keys = Vec::new();
            for (gpu, g) in per_gpu {
                if best_fit {
                    keys.extend(g.devices.iter().map(|d| best_fit_key(gpu, d, order)));
                }
                sets.push(g.set);
                devices.extend(g.devices);
            }
            if best_fit {
                // Profile by profile across the node's GPUs (a 1.35 device slice may hold any
                // GPU's devices): the placement that strands least first, then the fullest GPU.
                let mut keyed: Vec<_> = keys.into_iter().zip(devices).collect();
                keyed.sort_by(|a, b| a.0.cmp(&b.0));
                devices = keyed.into_iter().map(|(_, d)| d).collect();
            }
            for chunk in sets.chunks(MAX_COUNTER_SETS_PER_SLICE) {
                drafts.push(Draft { sets: chunk.to_vec(), devices: Vec::new() });
            }
            let mut cur = Draft::default();
            for d in devices {
                let n = consumed_counters(std::slice::from_ref(&d));
                if cur.devices.len() + 1 > MAX_DEVICES_WITH_COUNTERS
                    || consumed_counters(&cur.devices) + n > MAX_CONSUMED_COUNTERS_PER_SLICE
                {
                    drafts.push(std::mem::take(&mut cur));
                }
                cur.devices.push(d);
            }
            if !cur.devices.is_empty() {
                drafts.push(cur);
            }
        }
    }

    let count = i64::try_from(drafts.len()).unwrap_or(i64::MAX);
    Ok(drafts
        .into_iter()
        .map(|d| ResourceSlice {
            spec: ResourceSliceSpec {
                driver: pool.driver.clone(),
                node_name: pool.node_name.clone(),
                pool: ResourcePool {
                    name: pool.node_name.clone(),
                    generation: pool.generation,
                    resource_slice_count: count,
                },
                shared_counters: d.sets,
                devices: d.devices,
            },
        })
        .collect())
}

/// How the devices of a profile are ordered for the allocator's first fit (issue 13: which
/// order makes kube-scheduler's first fit pack best). Within a GPU every order ranks a
/// profile's starts by a room measure of the layout the placement leaves (larger first), then
/// by start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DraOrder {
    /// The planner's room ([`crate::allocation::room_left`]: usable compute slices, then the
    /// largest profile that still fits), ties to the lowest start; GPUs by index.
    Room,
    /// The planner's room, ties to the highest start; GPUs by index.
    RoomFromEnd,
    /// The planner's `fits` report: for every profile, how many instances of it alone still
    /// fit, weighted by its compute slices and summed; GPUs by index.
    Fits,
    /// The `fits` report compared profile by profile, from the largest profile down (most
    /// compute slices, then most memory slices); GPUs by index.
    FitsLargestFirst,
    /// The planner's room within a GPU; GPUs the fullest first (most compute slices taken),
    /// then by index.
    FullestGpuFirst,
    /// Across the node's GPUs, profile by profile: the placement that strands the fewest
    /// compute slices (usable room lost beyond its own), then on the GPU with the least usable
    /// room left, then the planner's room after it, then GPU index and start. The 1.34 shape
    /// keeps a GPU's devices with its counter set, so there GPUs go the fullest first.
    BestFit,
    /// The published order: [`DraOrder::BestFit`] without the room measure. Across the node's
    /// GPUs, profile by profile: the placement that strands the fewest compute slices, then on
    /// the GPU with the least usable room left, then GPU index and start (the lowest start, as
    /// NVIDIA's names order them within a GPU).
    #[default]
    BestFitFromStart,
}

/// Compute slices the instances on `gpu` take.
fn used_compute(gpu: &DraGpu) -> u32 {
    gpu.instances
        .iter()
        .filter_map(|i| gpu.model.profile_by_id(i.instance.profile_id))
        .map(|p| u32::from(p.compute_slices))
        .sum()
}

/// Where a device goes in [`DraOrder::BestFit`]: the whole GPUs first, then by profile, the
/// compute slices its placement strands, the usable room of its GPU before, the room after
/// (larger first), GPU index and start. A device whose placement is not legal now goes last of
/// its profile (the allocator's counters skip it anyway).
type BestFitKey = (String, bool, u32, u32, std::cmp::Reverse<(u32, u32)>, u32, i64);

fn best_fit_key(gpu: &DraGpu, d: &Device, order: DraOrder) -> BestFitKey {
    let int = |k: &str| match d.attributes.get(k) {
        Some(Attribute::Int(v)) => *v,
        _ => 0,
    };
    let profile = match (d.attributes.get("type"), d.attributes.get("profile")) {
        (Some(Attribute::String(t)), Some(Attribute::String(p))) if t == "mig" => p.clone(),
        _ => return (String::new(), false, 0, 0, std::cmp::Reverse((0, 0)), gpu.index, 0),
    };
    let start = int("placementStart");
    let model = gpu.model;
    let current: Vec<Instance> = gpu.instances.iter().map(|i| i.instance).collect();
    let before = crate::allocation::room_left(model, &current);
    let Some((p, s)) = model.profile(&profile).ok().zip(u8::try_from(start).ok()) else {
        return (profile, true, 0, 0, std::cmp::Reverse((0, 0)), gpu.index, start);
    };
    let mut after = current.clone();
    if !after.iter().any(|i| i.profile_id == p.id && i.start == s) {
        after.push(Instance::new(p.id, s));
    }
    let legal = tessera_mig::validate(model, &after).is_empty();
    let mut room = crate::allocation::room_left(model, &after);
    let stranded = before.0.saturating_sub(room.0).saturating_sub(u32::from(p.compute_slices));
    if order == DraOrder::BestFitFromStart {
        room = (0, 0);
    }
    (profile, !legal, stranded, before.0, std::cmp::Reverse(room), gpu.index, start)
}

/// The room measure `order` ranks a layout by (larger is more room).
fn room_measure(model: &GpuModel, layout: &[Instance], order: DraOrder) -> Vec<u32> {
    match order {
        DraOrder::Room
        | DraOrder::RoomFromEnd
        | DraOrder::FullestGpuFirst
        | DraOrder::BestFit
        | DraOrder::BestFitFromStart => {
            let (usable, largest) = crate::allocation::room_left(model, layout);
            vec![usable, largest]
        }
        DraOrder::Fits | DraOrder::FitsLargestFirst => {
            let Some(report) = tessera_mig::planner_for(model).and_then(|p| p.fragmentation(layout).ok()) else {
                return Vec::new();
            };
            let mut fits: Vec<(u8, u8, u32)> = report
                .fits
                .iter()
                .filter_map(|f| model.profile_by_id(f.profile_id).map(|p| (p, f.count)))
                .map(|(p, n)| (p.compute_slices, p.memory_slices, u32::from(n)))
                .collect();
            if order == DraOrder::Fits {
                vec![fits.iter().map(|&(c, _, n)| u32::from(c) * n).sum()]
            } else {
                fits.sort_by_key(|&(c, m, _)| std::cmp::Reverse((c, m)));
                fits.into_iter().map(|(_, _, n)| n).collect()
            }
        }
    }
}

/// The order in which `profile`'s legal starts are published on a GPU whose layout is
/// `current`, under `order`'s room measure (see [`DraOrder`]); [`placement_order`] is the
/// published one.
pub fn placement_order_in(
    model: &GpuModel,
    current: &[Instance],
    profile: &tessera_mig::Profile,
    order: DraOrder,
) -> Vec<u8> {
    let room = |inst: Instance| -> Vec<u32> {
        let mut layout = current.to_vec();
        if !layout.iter().any(|i| i.profile_id == inst.profile_id && i.start == inst.start) {
            layout.push(inst);
        }
        room_measure(model, &layout, order)
    };
    let from_end = order == DraOrder::RoomFromEnd;
    let mut starts: Vec<(std::cmp::Reverse<Vec<u32>>, i16, u8)> = profile
        .placements
        .iter()
        .map(|&s| {
            (
                std::cmp::Reverse(room(Instance::new(profile.id, s))),
                if from_end { -i16::from(s) } else { i16::from(s) },
                s,
            )
        })
        .collect();
    starts.sort();
    starts.into_iter().map(|(_, _, s)| s).collect()
}

/// The planner's preference among a profile's legal starts on a GPU whose layout is `current`:
/// the start that leaves the most room first ([`crate::allocation::room_left`]: usable compute
/// slices, then the largest profile that still fits), then by start unit. This was the published
/// order before issue 13's comparison ([`DraOrder::Room`]); the placement-level simulator model
/// `dra-tessera` still uses it.
pub fn placement_order(model: &GpuModel, current: &[Instance], profile: &tessera_mig::Profile) -> Vec<u8> {
    let room = |inst: Instance| -> (u32, u32) {
        let mut layout = current.to_vec();
        if !layout.iter().any(|i| i.profile_id == inst.profile_id && i.start == inst.start) {
            layout.push(inst);
        }
        crate::allocation::room_left(model, &layout)
    };
    let mut starts: Vec<(std::cmp::Reverse<(u32, u32)>, u8)> =
        profile.placements.iter().map(|&s| (std::cmp::Reverse(room(Instance::new(profile.id, s))), s)).collect();
    starts.sort();
    starts.into_iter().map(|(_, s)| s).collect()
}
