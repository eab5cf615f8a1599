//! The DRA ResourceSlice model: device counts, unique names, API limits, and a first-fit
//! allocator over the published order that must only ever pick valid MIG layouts.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use tessera_kube_core::dra::{
    Attribute, Device, DraError, DraGpu, DraInstance, DraPool, InstanceUse, MAX_ATTRIBUTES_AND_CAPACITY,
    MAX_CONSUMED_COUNTERS_PER_SLICE, MAX_COUNTER_SETS_PER_SLICE, MAX_COUNTERS_PER_SET, MAX_COUNTERS_PER_SLICE_V1_34,
    MAX_DEVICES_WITH_COUNTERS, ResourceSlice, SliceShape, consumed_counters, resource_slices,
};
use tessera_mig::{GpuModel, Instance, catalog, validate};

fn model(name: &str) -> &'static GpuModel {
    catalog().model(name).expect("catalog model")
}

fn gpu(index: u32, model: &'static GpuModel, instances: Vec<DraInstance>) -> DraGpu {
    DraGpu { index, uuid: format!("GPU-{index:04}"), model, numa_node: Some(index % 2), mig_enabled: true, instances }
}

fn pool(shape: SliceShape) -> DraPool {
    DraPool { driver: "gpu.nvidia.com".into(), node_name: "node-a".into(), generation: 7, shape }
}

fn devices(slices: &[ResourceSlice]) -> Vec<&Device> {
    slices.iter().flat_map(|s| &s.spec.devices).collect()
}

fn check_limits(slices: &[ResourceSlice], shape: SliceShape) {
    for s in slices {
        assert_eq!(s.spec.pool.resource_slice_count, slices.len() as i64);
        assert_eq!(s.spec.pool.generation, 7);
        assert!(s.spec.devices.len() <= MAX_DEVICES_WITH_COUNTERS);
        assert!(consumed_counters(&s.spec.devices) <= MAX_CONSUMED_COUNTERS_PER_SLICE);
        assert!(s.spec.shared_counters.len() <= MAX_COUNTER_SETS_PER_SLICE);
        for set in &s.spec.shared_counters {
            assert!(set.counters.len() <= MAX_COUNTERS_PER_SET);
        }
        for d in &s.spec.devices {
            assert!(d.attributes.len() + d.capacity.len() <= MAX_ATTRIBUTES_AND_CAPACITY);
            assert!(d.consumes_counters.len() <= 2);
            assert!(d.name.len() <= 63);
        }
        match shape {
            SliceShape::V1_34 => {
                let n: usize = s.spec.shared_counters.iter().map(|c| c.counters.len()).sum();
                assert!(n <= MAX_COUNTERS_PER_SLICE_V1_34);
                // Every consumed set lives in the same slice.
                let here: BTreeSet<&str> = s.spec.shared_counters.iter().map(|c| c.name.as_str()).collect();
                for d in &s.spec.devices {
                    for c in &d.consumes_counters {
                        assert!(here.contains(c.counter_set.as_str()), "{} refers to a set elsewhere", d.name);
                    }
                }
            }
            SliceShape::V1_35 => {
                assert!(s.spec.shared_counters.is_empty() || s.spec.devices.is_empty());
            }
        }
    }
}

#[test]
fn device_counts_names_and_limits() {
    // (model, GPUs on the node)
    let table = [("H100-80GB", 1), ("H100-80GB", 8), ("A100-40GB", 1), ("A100-40GB", 4)];
    for (name, n) in table {
        let m = model(name);
        let per_gpu: usize = m.profiles.iter().map(|p| p.placements.len()).sum::<usize>() + 1;
        for shape in [SliceShape::V1_34, SliceShape::V1_35] {
            let gpus: Vec<DraGpu> = (0..n).map(|i| gpu(i, m, vec![])).collect();
            let slices = resource_slices(&pool(shape), &gpus).expect("slices");
            let ds = devices(&slices);
            assert_eq!(ds.len(), per_gpu * n as usize, "{name} x{n} {shape:?}");
            let names: BTreeSet<&str> = ds.iter().map(|d| d.name.as_str()).collect();
            assert_eq!(names.len(), ds.len(), "names unique");
            check_limits(&slices, shape);
        }
    }
}

#[test]
fn names_and_attributes() {
    let m = model("H100-80GB");
    let p = m.profile("1g.10gb").unwrap();
    let inst =
        DraInstance { instance: Instance::new(p.id, 6), mig_uuid: Some("MIG-abc".into()), held_by: InstanceUse::Claim };
    let slices = resource_slices(&pool(SliceShape::V1_35), &[gpu(0, m, vec![inst])]).unwrap();
    let ds = devices(&slices);
    let d = ds.iter().find(|d| d.name == "gpu-0-1g-10gb-p6").expect("named device");
    assert_eq!(d.attributes.get("uuid"), Some(&Attribute::String("MIG-abc".into())));
    assert_eq!(d.attributes.get("resource.kubernetes.io/numaNode"), Some(&Attribute::Int(0)));
    assert_eq!(d.attributes.get("type"), Some(&Attribute::String("mig".into())));
    assert!(ds.iter().any(|d| d.name == "gpu-0"));
    let json = serde_json::to_value(&slices[0]).unwrap();
    assert!(json["spec"]["sharedCounters"][0]["counters"]["memory-slice-0"]["value"] == "1");
    let json = serde_json::to_value(&slices[1]).unwrap();
    assert!(json["spec"]["devices"][0]["consumesCounters"][0]["counterSet"] == "gpu-0-counters");
}

/// The published order is best fit across the node's GPUs. GPU 0 has a 3g.40gb at 4, GPU 1 a
/// 2g.20gb at 0, GPU 2 nothing. A 3g.40gb at 0 on an H100 always strands a compute slice, so the
/// first 3g.40gb that fits is GPU 1's at 4 (it strands nothing, and GPU 1 is fuller than GPU 2),
/// not GPU 0's at 0, which the old order (GPU by GPU) took. On that layout the next 1g.10gb goes
/// to the fullest GPU, GPU 1, at the lowest start that strands nothing (2). In the 1.34 shape a
/// GPU's devices stay with its counter set: the GPUs are published fullest first.
#[test]
fn first_fit_strands_least_on_the_fullest_gpu() {
    let m = model("H100-80GB");
    let claim = |p: &str, s: u8| DraInstance {
        instance: Instance::new(m.profile(p).unwrap().id, s),
        mig_uuid: None,
        held_by: InstanceUse::Claim,
    };
    let first = |gpus: &[DraGpu], allocated: &[&str], want: &str| {
        let slices = resource_slices(&pool(SliceShape::V1_35), gpus).unwrap();
        let mut ff = FirstFit::new(&slices);
        for name in allocated {
            ff.allocated(name);
        }
        ff.request(Some(want)).map(|d| d.name.clone())
    };
    let gpus = [gpu(0, m, vec![claim("3g.40gb", 4)]), gpu(1, m, vec![claim("2g.20gb", 0)]), gpu(2, m, vec![])];
    let allocated = ["gpu-0-3g-40gb-p4", "gpu-1-2g-20gb-p0"];
    assert_eq!(first(&gpus, &allocated, "3g.40gb").as_deref(), Some("gpu-1-3g-40gb-p4"));
    let gpus = [
        gpu(0, m, vec![claim("3g.40gb", 4)]),
        gpu(1, m, vec![claim("2g.20gb", 0), claim("3g.40gb", 4)]),
        gpu(2, m, vec![]),
    ];
    let allocated = ["gpu-0-3g-40gb-p4", "gpu-1-2g-20gb-p0", "gpu-1-3g-40gb-p4"];
    assert_eq!(first(&gpus, &allocated, "1g.10gb").as_deref(), Some("gpu-1-1g-10gb-p2"));
    assert_eq!(first(&gpus, &allocated, "3g.40gb").as_deref(), Some("gpu-2-3g-40gb-p4"));
    // On empty GPUs nothing strands: the lowest start of the first GPU, as NVIDIA's names order it.
    let empty = [gpu(0, m, vec![]), gpu(1, m, vec![])];
    assert_eq!(first(&empty, &[], "1g.10gb").as_deref(), Some("gpu-0-1g-10gb-p0"));
    assert_eq!(first(&empty, &[], "3g.40gb").as_deref(), Some("gpu-0-3g-40gb-p4"));
    // 1.34: the fullest GPU's slice first, best fit within it.
    let gpus = [gpu(0, m, vec![]), gpu(1, m, vec![claim("2g.20gb", 0)]), gpu(2, m, vec![claim("4g.40gb", 0)])];
    let slices = resource_slices(&pool(SliceShape::V1_34), &gpus).unwrap();
    let order: Vec<&str> = slices.iter().flat_map(|s| &s.spec.shared_counters).map(|c| c.name.as_str()).collect();
    assert_eq!(order, ["gpu-2-counters", "gpu-1-counters", "gpu-0-counters"]);
}

#[test]
fn too_many_gpus_for_one_slice_is_an_error_not_a_panic() {
    // In 1.34 every GPU's set travels with its devices; many GPUs just make more slices.
    let m = model("H100-80GB");
    let gpus: Vec<DraGpu> = (0..20).map(|i| gpu(i, m, vec![])).collect();
    let slices = resource_slices(&pool(SliceShape::V1_34), &gpus).unwrap();
    check_limits(&slices, SliceShape::V1_34);
    // Duplicate indexes make duplicate names: an error naming the GPU.
    let dup = [gpu(3, m, vec![]), gpu(3, m, vec![])];
    let err = resource_slices(&pool(SliceShape::V1_35), &dup).unwrap_err();
    assert!(matches!(err, DraError::DuplicateName { gpu: 3, .. }), "{err}");
}

fn amount(v: &str) -> u64 {
    v.trim_end_matches("Mi").parse().expect("quantity")
}

/// The scheduler's allocator: visit devices in slice and device order, take the first that
/// matches the profile and fits the remaining counters.
struct FirstFit<'a> {
    order: Vec<&'a Device>,
    left: BTreeMap<(String, String), u64>,
    taken: BTreeSet<&'a str>,
}

impl<'a> FirstFit<'a> {
    fn new(slices: &'a [ResourceSlice]) -> Self {
        let mut left = BTreeMap::new();
        for s in slices {
            for set in &s.spec.shared_counters {
                for (k, c) in &set.counters {
                    left.insert((set.name.clone(), k.clone()), amount(&c.value));
                }
            }
        }
        FirstFit { order: devices(slices), left, taken: BTreeSet::new() }
    }

    /// A device an allocated claim already holds: taken, and its counters taken off.
    fn allocated(&mut self, name: &str) {
        let d = *self.order.iter().find(|d| d.name == name).expect("a published device");
        for c in &d.consumes_counters {
            for (k, v) in &c.counters {
                *self.left.get_mut(&(c.counter_set.clone(), k.clone())).unwrap() -= amount(&v.value);
            }
        }
        self.taken.insert(&d.name);
    }

    fn request(&mut self, profile: Option<&str>) -> Option<&'a Device> {
        for &d in &self.order {
            if self.taken.contains(d.name.as_str()) {
                continue;
            }
            let matches = match profile {
                None => d.attributes.get("type") == Some(&Attribute::String("gpu".into())),
                Some(p) => d.attributes.get("profile") == Some(&Attribute::String(p.into())),
            };
            if !matches {
                continue;
            }
            let fits = d.consumes_counters.iter().all(|c| {
                c.counters.iter().all(|(k, v)| {
                    self.left.get(&(c.counter_set.clone(), k.clone())).is_some_and(|l| *l >= amount(&v.value))
                })
            });
            if fits {
                for c in &d.consumes_counters {
                    for (k, v) in &c.counters {
                        *self.left.get_mut(&(c.counter_set.clone(), k.clone())).unwrap() -= amount(&v.value);
                    }
                }
                self.taken.insert(&d.name);
                return Some(d);
            }
        }
        None
    }
}

fn models() -> Vec<&'static str> {
    vec!["H100-80GB", "A100-40GB", "A100-80GB", "A30-24GB"]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn first_fit_only_picks_valid_layouts(
        which in 0usize..4,
        shape in prop_oneof![Just(SliceShape::V1_34), Just(SliceShape::V1_35)],
        requests in proptest::collection::vec(0usize..64, 1..24),
    ) {
        let m = model(models()[which]);
        let gpus = [gpu(0, m, vec![]), gpu(1, m, vec![])];
        let slices = resource_slices(&pool(shape), &gpus).unwrap();
        let mut ff = FirstFit::new(&slices);
        let choices = m.profiles.len() + 1;
        for r in requests {
            let k = r % choices;
            let profile = m.profiles.get(k).map(|p| p.name.as_str());
            ff.request(profile);
        }
        for g in 0..2u32 {
            let uuid = format!("GPU-{g:04}");
            let mine: Vec<&Device> = ff.order.iter().copied()
                .filter(|d| ff.taken.contains(d.name.as_str()))
                .filter(|d| d.attributes.get("parentUUID") == Some(&Attribute::String(uuid.clone())))
                .collect();
            let whole = mine.iter().any(|d| d.attributes.get("type") == Some(&Attribute::String("gpu".into())));
            if whole {
                prop_assert_eq!(mine.len(), 1, "whole GPU {} shared with MIG devices", g);
                continue;
            }
            let layout: Vec<Instance> = mine.iter().map(|d| {
                let Some(Attribute::String(p)) = d.attributes.get("profile") else { unreachable!() };
                let Some(Attribute::Int(s)) = d.attributes.get("placementStart") else { unreachable!() };
                Instance::new(m.profile(p).unwrap().id, *s as u8)
            }).collect();
            let v = validate(m, &layout);
            prop_assert!(v.is_empty(), "{}: {:?} -> {:?}", m.name, layout, v);
        }
    }
}

#[test]
fn a_limit_that_cannot_be_met_names_the_gpu_and_the_limit() {
    // A made-up model with 30 placement units needs more than 32 counters in its set.
    let mut wide = model("H100-80GB").clone();
    wide.placement_units = 30;
    let wide: &'static GpuModel = Box::leak(Box::new(wide));
    for shape in [SliceShape::V1_34, SliceShape::V1_35] {
        let err = resource_slices(&pool(shape), &[gpu(5, wide, vec![])]).unwrap_err();
        let DraError::Limit { gpu, limit, .. } = &err else { panic!("{err}") };
        assert_eq!((*gpu, *limit), (5, MAX_COUNTERS_PER_SET));
        assert!(err.to_string().contains("GPU 5"), "{err}");
    }
}

fn names(slices: &[ResourceSlice]) -> BTreeSet<String> {
    devices(slices).iter().map(|d| d.name.clone()).collect()
}

fn counter(slices: &[ResourceSlice], name: &str) -> String {
    let set = slices.iter().flat_map(|s| &s.spec.shared_counters).next().expect("a counter set");
    set.counters[name].value.clone()
}

#[test]
fn an_idle_instance_is_adopted_as_its_own_device_and_nothing_overlapping_it_is_published() {
    let m = model("H100-80GB");
    let three = m.profile("3g.40gb").unwrap();
    let idle = DraInstance {
        instance: Instance::new(three.id, 4),
        mig_uuid: Some("MIG-a".into()),
        held_by: InstanceUse::Idle,
    };
    let slices = resource_slices(&pool(SliceShape::V1_35), &[gpu(0, m, vec![idle])]).unwrap();
    let ds = names(&slices);
    assert!(ds.contains("gpu-0-3g-40gb-p4"), "its own device");
    assert!(!ds.contains("gpu-0"), "the whole GPU would destroy it");
    assert!(!ds.contains("gpu-0-1g-10gb-p4") && !ds.contains("gpu-0-2g-20gb-p4"), "overlapping devices");
    assert!(ds.contains("gpu-0-1g-10gb-p0") && ds.contains("gpu-0-4g-40gb-p0"), "the free half");
    let own = devices(&slices).into_iter().find(|d| d.name == "gpu-0-3g-40gb-p4").unwrap();
    assert_eq!(own.attributes.get("uuid"), Some(&Attribute::String("MIG-a".into())));
    // Adopted, not taken: the counters stay whole, so a claim can allocate it.
    assert_eq!(counter(&slices, "gpu-instances"), "7");
}

#[test]
fn an_instance_another_holds_is_taken_off_the_counters() {
    let m = model("H100-80GB");
    let one = m.profile("1g.10gb").unwrap();
    let held = DraInstance { instance: Instance::new(one.id, 0), mig_uuid: None, held_by: InstanceUse::Other };
    let slices = resource_slices(&pool(SliceShape::V1_35), &[gpu(0, m, vec![held])]).unwrap();
    let ds = names(&slices);
    assert!(!ds.contains("gpu-0-1g-10gb-p0") && !ds.contains("gpu-0-7g-80gb-p0") && !ds.contains("gpu-0"));
    assert!(ds.contains("gpu-0-1g-10gb-p1"));
    assert_eq!(counter(&slices, "gpu-instances"), "6");
    assert_eq!(counter(&slices, "compute-slices"), "6");
    assert_eq!(counter(&slices, "memory-slice-0"), "0");
}

#[test]
fn a_gpu_with_mig_off_is_one_whole_device() {
    let m = model("H100-80GB");
    let mut g = gpu(0, m, Vec::new());
    g.mig_enabled = false;
    let slices = resource_slices(&pool(SliceShape::V1_35), &[g]).unwrap();
    assert_eq!(names(&slices), BTreeSet::from(["gpu-0".to_string()]));
}

#[test]
fn every_published_device_name_maps_back_to_its_placement() {
    use tessera_kube_core::dra_claim::{DeviceTarget, device_target};
    for name in models() {
        let m = model(name);
        let gpus = [gpu(0, m, Vec::new()), gpu(3, m, Vec::new())];
        let slices = resource_slices(&pool(SliceShape::V1_35), &gpus).unwrap();
        for d in devices(&slices) {
            let target = device_target(&d.name, &gpus).unwrap_or_else(|e| panic!("{name}: {e}"));
            match target {
                DeviceTarget::WholeGpu { gpu } => assert_eq!(d.name, format!("gpu-{gpu}")),
                DeviceTarget::Mig { gpu, profile_id, start } => {
                    let p = m.profile_by_id(profile_id).unwrap();
                    assert_eq!(d.attributes.get("profile"), Some(&Attribute::String(p.name.clone())));
                    assert_eq!(d.attributes.get("placementStart"), Some(&Attribute::Int(i64::from(start))));
                    assert_eq!(d.attributes.get("index"), Some(&Attribute::Int(i64::from(gpu))));
                }
            }
        }
        for bad in ["gpu-9", "gpu-0-1g-10gb-p99", "gpu-0-9g-1gb-p0", "cpu-0", "gpu-x", "gpu-0-p0"] {
            assert!(device_target(bad, &gpus).is_err(), "{bad}");
        }
    }
}
