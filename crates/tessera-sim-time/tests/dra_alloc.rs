//! The structured-allocator model over Tessera's published ResourceSlices: quantities, first fit
//! by hand on one H100 (Tessera's best fit against NVIDIA's name order), NVIDIA's order over the same devices, errors that name the device, and a
//! property over random arrivals and departures on H100-80GB, A100-40GB and A30-24GB nodes:
//! whatever the allocator picks is a legal layout that a simulated node makes, and it finds room
//! whenever a legal placement exists.

use std::collections::BTreeMap;

use proptest::prelude::*;
use tessera_gpu::{MigBackend, NodeSpec, SimBackend};
use tessera_kube_core::dra::{
    DraGpu, DraInstance, DraPool, InstanceUse, ResourceSlice, SliceShape, placement_order, resource_slices,
};
use tessera_kube_core::dra_claim::{DeviceTarget, device_target};
use tessera_mig::{GpuModel, Instance, ProfileKind, catalog, validate};
use tessera_sim_time::dra_alloc::{AllocError, Pool, Want, first_fit, nvidia_name, nvidia_order, parse_quantity};

fn model(name: &str) -> &'static GpuModel {
    catalog().model(name).unwrap()
}

/// `n` GPUs of `model` with the instances of allocated claims.
fn gpus(model: &'static GpuModel, n: u32, held: &[(u32, Instance)]) -> Vec<DraGpu> {
    (0..n)
        .map(|index| DraGpu {
            index,
            uuid: format!("GPU-{index}"),
            model,
            numa_node: None,
            mig_enabled: true,
            instances: held
                .iter()
                .filter(|(g, _)| *g == index)
                .map(|(_, i)| DraInstance { instance: *i, mig_uuid: None, held_by: InstanceUse::Claim })
                .collect(),
        })
        .collect()
}

fn slices(gpus: &[DraGpu], nvidia: bool) -> Vec<ResourceSlice> {
    let pool =
        DraPool { driver: "gpu.tessera.dev".into(), node_name: "n".into(), generation: 1, shape: SliceShape::V1_35 };
    let s = resource_slices(&pool, gpus).unwrap();
    if nvidia { nvidia_order(&s).unwrap() } else { s }
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn quantities_are_read_exactly() {
    let g = 1_000_000_000i128;
    assert_eq!(parse_quantity("1").unwrap(), g);
    assert_eq!(parse_quantity("10240Mi").unwrap(), 10_240 * (1 << 20) * g);
    assert_eq!(parse_quantity("1.5Gi").unwrap(), 3 * (1 << 29) * g);
    assert_eq!(parse_quantity("500m").unwrap(), g / 2);
    assert_eq!(parse_quantity("2k").unwrap(), 2_000 * g);
    assert_eq!(parse_quantity("1e3").unwrap(), 1_000 * g);
    assert_eq!(parse_quantity("0").unwrap(), 0);
    for bad in ["", "Mi", "1x", "1.2.3", "1e", "0.0000000001"] {
        assert!(matches!(parse_quantity(bad), Err(AllocError::Quantity { .. })), "{bad}");
    }
}

/// One H100, by hand. Tessera's order puts a 3g.40gb where it strands no compute slice (at 4: one
/// at 0 always strands one), NVIDIA's at the lowest start; a 1g.10gb strands nothing anywhere on
/// an empty GPU, so both put it at 0. A 7g.80gb takes every counter, so nothing else fits, and any
/// MIG device keeps the whole GPU out (it consumes every counter in full).
#[test]
fn first_fit_on_one_h100_by_hand() {
    let h100 = model("H100-80GB");
    let empty = gpus(h100, 1, &[]);
    let ours = first_fit(&slices(&empty, false), &[], Want::Profile("3g.40gb")).unwrap();
    assert_eq!(ours.as_deref(), Some("gpu-0-3g-40gb-p4"));
    let theirs = first_fit(&slices(&empty, true), &[], Want::Profile("3g.40gb")).unwrap();
    assert_eq!(theirs.as_deref(), Some("gpu-0-3g-40gb-p0"));
    for nvidia in [false, true] {
        let one = first_fit(&slices(&empty, nvidia), &[], Want::Profile("1g.10gb")).unwrap();
        assert_eq!(one.as_deref(), Some("gpu-0-1g-10gb-p0"), "nvidia order: {nvidia}");
    }
    // The planner's preference (the order published before) keeps the 4g.40gb's only start free.
    assert_ne!(placement_order(h100, &[], h100.profile("1g.10gb").unwrap())[0], 0);

    let s = slices(&empty, false);
    assert_eq!(first_fit(&s, &[], Want::WholeGpu).unwrap().as_deref(), Some("gpu-0"));
    let seven = names(&["gpu-0-7g-80gb-p0"]);
    assert_eq!(first_fit(&s, &seven, Want::Profile("1g.10gb")).unwrap(), None);
    assert_eq!(first_fit(&s, &seven, Want::WholeGpu).unwrap(), None);
    let one = names(&["gpu-0-1g-10gb-p6"]);
    assert_eq!(first_fit(&s, &one, Want::WholeGpu).unwrap(), None);
    assert_eq!(first_fit(&s, &names(&["gpu-0"]), Want::Profile("1g.10gb")).unwrap(), None);
    // Two 3g.40gb fill both halves; a third finds nothing, a 1g.10gb neither (7 GPCs, 8 slices).
    let two = names(&["gpu-0-3g-40gb-p0", "gpu-0-3g-40gb-p4"]);
    assert_eq!(first_fit(&s, &two, Want::Profile("3g.40gb")).unwrap(), None);
    assert_eq!(first_fit(&s, &two, Want::Profile("1g.10gb")).unwrap(), None);
    // A device already allocated is not given twice, and another GPU takes what one cannot.
    let two_gpus = slices(&gpus(h100, 2, &[]), true);
    assert_eq!(first_fit(&two_gpus, &seven, Want::Profile("7g.80gb")).unwrap().as_deref(), Some("gpu-1-7g-80gb-p0"));
}

#[test]
fn nvidias_order_is_the_same_devices_by_nvidias_names() {
    let h100 = model("H100-80GB");
    let g = gpus(h100, 2, &[]);
    let ours = slices(&g, false);
    let theirs = slices(&g, true);
    let all = |s: &[ResourceSlice]| {
        let mut v: Vec<_> = s.iter().flat_map(|x| &x.spec.devices).cloned().map(|d| (d.name.clone(), d)).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    assert_eq!(all(&ours), all(&theirs), "same devices, same counters");
    let sets = |s: &[ResourceSlice]| s.iter().flat_map(|x| x.spec.shared_counters.clone()).collect::<Vec<_>>();
    assert_eq!(sets(&ours), sets(&theirs));
    // Counter sets first, then one device slice per GPU sorted by NVIDIA's name.
    assert!(theirs[0].spec.devices.is_empty() && !theirs[0].spec.shared_counters.is_empty());
    let mut last = (0u32, String::new());
    for (k, d) in theirs.iter().flat_map(|s| &s.spec.devices).enumerate() {
        let n = nvidia_name(d).unwrap();
        if k > 0 {
            assert!(n > last, "{n:?} after {last:?}");
        }
        last = n;
    }
    assert!(theirs.iter().all(|s| s.spec.pool.resource_slice_count == theirs.len() as i64));
    let first = &theirs[1].spec.devices;
    assert_eq!(nvidia_name(&first[0]).unwrap().1, "gpu-0");
    assert_eq!(nvidia_name(&first[1]).unwrap().1, "gpu-0-mig-1g10gb-19-0");
}

#[test]
fn errors_name_the_device() {
    let h100 = model("H100-80GB");
    let mut s = slices(&gpus(h100, 1, &[]), false);
    let e = first_fit(&s, &names(&["gpu-0-9g-p0"]), Want::WholeGpu).unwrap_err();
    assert_eq!(e, AllocError::UnknownDevice { device: "gpu-0-9g-p0".into() });
    let d = s.iter_mut().flat_map(|x| x.spec.devices.iter_mut()).next().unwrap();
    d.consumes_counters[0].counter_set = "gpu-7-counters".into();
    let e = first_fit(&s, &[], Want::WholeGpu).unwrap_err().to_string();
    assert!(e.contains("gpu-0") && e.contains("gpu-7-counters"), "{e}");
    let mut s = slices(&gpus(h100, 1, &[]), false);
    let d = s.iter_mut().flat_map(|x| x.spec.devices.iter_mut()).next().unwrap();
    d.consumes_counters[0].counters.insert("warp-drive".into(), tessera_kube_core::dra::Counter { value: "1".into() });
    let e = Pool::new(&s).unwrap_err().to_string();
    assert!(e.contains("warp-drive"), "{e}");
}

/// The whole GPU as the instance it is on a MIG GPU: the full-size profile.
fn full_profile(model: &GpuModel) -> Instance {
    let p = model
        .profiles
        .iter()
        .filter(|p| p.kind == ProfileKind::Standard && p.placement_size == model.placement_units)
        .max_by_key(|p| p.compute_slices)
        .unwrap();
    Instance::new(p.id, 0)
}

/// Random arrivals (a profile of the model, or a whole GPU) and departures on a node of two GPUs.
fn run(model_name: &str, nvidia: bool, ops: &[(usize, bool)]) -> Result<(), TestCaseError> {
    let model = model(model_name);
    let dir = tempfile::tempdir().unwrap();
    let spec: NodeSpec = format!("2x{model_name}").parse().unwrap();
    let sim = SimBackend::open(&dir.path().join("sim-node.json"), Some(&spec)).unwrap();
    let wants: Vec<Option<&str>> =
        model.profiles.iter().map(|p| Some(p.name.as_str())).chain(std::iter::once(None)).collect();
    // Allocated devices: name -> (GPU, instance, whole GPU, GPU-instance id on the simulated node).
    let mut held: BTreeMap<String, (u32, Instance, bool, u32)> = BTreeMap::new();
    for &(x, arrive) in ops {
        if !arrive {
            if held.is_empty() {
                continue;
            }
            let name = held.keys().nth(x % held.len()).unwrap().clone();
            let (gpu, _, _, id) = held.remove(&name).unwrap();
            prop_assert!(sim.destroy_gpu_instance(gpu, id).is_ok());
            continue;
        }
        let want_name = wants[x % wants.len()];
        let want = want_name.map_or(Want::WholeGpu, Want::Profile);
        let instances: Vec<(u32, Instance)> = held.values().map(|(g, i, ..)| (*g, *i)).collect();
        let node = gpus(model, 2, &instances);
        let allocated: Vec<String> = held.keys().cloned().collect();
        let pick = first_fit(&slices(&node, nvidia), &allocated, want).unwrap();
        // Is there any legal room for the request (the oracle)?
        let layout = |gpu: u32| instances.iter().filter(|(g, _)| *g == gpu).map(|(_, i)| *i).collect::<Vec<_>>();
        let room = (0..2u32).any(|g| match want_name {
            None => layout(g).is_empty(),
            Some(p) => model.profile(p).unwrap().placements.iter().any(|&s| {
                let mut l = layout(g);
                l.push(Instance::new(model.profile(p).unwrap().id, s));
                validate(model, &l).is_empty()
            }),
        });
        let Some(name) = pick else {
            prop_assert!(!room, "{want:?} found no device although a legal placement exists");
            continue;
        };
        let (gpu, inst, whole) = match device_target(&name, &node).unwrap() {
            DeviceTarget::Mig { gpu, profile_id, start } => (gpu, Instance::new(profile_id, start), false),
            DeviceTarget::WholeGpu { gpu } => (gpu, full_profile(model), true),
        };
        match want_name {
            Some(p) => prop_assert_eq!(model.profile(p).unwrap().id, inst.profile_id),
            None => prop_assert!(whole),
        }
        let mut l = layout(gpu);
        l.push(inst);
        prop_assert!(validate(model, &l).is_empty(), "{name} makes GPU {gpu} invalid: {:?}", validate(model, &l));
        prop_assert!(!whole || l.len() == 1, "the whole GPU shares GPU {gpu}");
        let made = sim.create_gpu_instance(gpu, inst.profile_id, Some(inst.start));
        prop_assert!(made.is_ok(), "the simulated node refuses {name}: {:?}", made.err());
        held.insert(name, (gpu, inst, whole, made.unwrap().id));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn whatever_the_allocator_picks_is_a_legal_layout_the_node_makes(
        k in 0..3usize,
        nvidia in any::<bool>(),
        ops in proptest::collection::vec((0..1000usize, proptest::bool::weighted(0.7)), 1..40),
    ) {
        run(["H100-80GB", "A100-40GB", "A30-24GB"][k], nvidia, &ops)?;
    }
}
