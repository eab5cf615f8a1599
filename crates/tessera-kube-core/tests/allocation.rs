//! `GetPreferredAllocation` and `Allocate`: tables for the choices and the answers, and property
//! tests for the preference's invariants.

mod common;

use std::collections::BTreeSet;

use common::{config, gi, health, node, views};
use proptest::prelude::*;
use tessera_gpu::view::GpuView;
use tessera_kube_core::{AllocError, AllocateOptions, Inventory, allocate, preferred_allocation};

const MIXED: &str = "version: v1\nflags:\n  migStrategy: mixed\n";

fn ids_of(inv: &Inventory, resource: &str) -> Vec<String> {
    inv.resources
        .iter()
        .find(|(r, _)| r.as_str() == resource)
        .map(|(_, d)| d.iter().map(|d| d.id.clone()).collect())
        .unwrap_or_default()
}

fn gpu_of(inv: &Inventory, id: &str) -> u32 {
    inv.device(id).unwrap().1.gpu_index
}

/// Two H100s on two NUMA nodes, each with 1g.10gb at 0..=3 and a 3g.40gb at 4, busy on
/// `busy_gpu`. Taking a 1g.10gb on the other GPU would cost it its 7g room (the largest profile
/// that fits drops to 3g); on `busy_gpu` it costs only 4g → 2g.
fn two_numa_busy(busy_gpu: u32) -> (Vec<GpuView>, Inventory) {
    let b = node("2xH100-80GB,mig=on,numa=2");
    for g in 0..2 {
        for s in 0..4 {
            gi(&b, g, "1g.10gb", s, &[]);
        }
    }
    gi(&b, 1 - busy_gpu, "3g.40gb", 4, &[]);
    let busy = gi(&b, busy_gpu, "3g.40gb", 4, &[]);
    let ci = tessera_gpu::MigBackend::compute_instances(&b, busy_gpu, busy).unwrap()[0].id;
    b.attach_process(busy_gpu, busy, ci, 99, "train").unwrap();
    let v = views(&b);
    let inv = common::inventory(&config(MIXED), &v, &health(&[], &[]), &[]);
    (v, inv)
}

fn two_numa() -> (Vec<GpuView>, Inventory) {
    two_numa_busy(1)
}

#[test]
fn preference_keeps_numa_then_room_then_id() {
    let (v, inv) = two_numa();
    let all = ids_of(&inv, "nvidia.com/mig-1g.10gb");
    let on = |g: u32| all.iter().filter(|id| gpu_of(&inv, id) == g).cloned().collect::<Vec<_>>();
    // Must include one on GPU 0: the others come from GPU 0 (same NUMA node) first.
    let got = preferred_allocation(&all, &on(0)[..1], 3, &inv, &v).unwrap();
    assert_eq!(got.iter().map(|id| gpu_of(&inv, id)).collect::<Vec<_>>(), [0, 0, 0]);
    assert_eq!(got[0], on(0)[0]);
    // Must include one on GPU 1: the rest stay on GPU 1 while it has some.
    let got = preferred_allocation(&all, &on(1)[..1], 5, &inv, &v).unwrap();
    assert_eq!(got.iter().map(|id| gpu_of(&inv, id)).collect::<Vec<_>>(), [1, 1, 1, 1, 0]);
    // Free choice of 2: both on one NUMA node, and on the GPU whose other half is busy anyway,
    // so the other keeps its room (whichever GPU that is, whatever the IDs' order).
    for busy in [0, 1] {
        let (v, inv) = two_numa_busy(busy);
        let all = ids_of(&inv, "nvidia.com/mig-1g.10gb");
        let got = preferred_allocation(&all, &[], 2, &inv, &v).unwrap();
        assert_eq!(got.iter().map(|id| gpu_of(&inv, id)).collect::<Vec<_>>(), [busy, busy]);
    }
    // Unknown, must-include not available, too few.
    assert_eq!(
        preferred_allocation(&["MIG-nope".to_string()], &[], 1, &inv, &v),
        Err(AllocError::UnknownDevice { id: "MIG-nope".to_string() })
    );
    assert!(matches!(
        preferred_allocation(&all[1..], &all[..1], 1, &inv, &v),
        Err(AllocError::MustIncludeUnavailable { .. })
    ));
    assert_eq!(preferred_allocation(&all, &[], 9, &inv, &v), Err(AllocError::NotEnough { size: 9, usable: 8 }));
}

#[test]
fn preference_never_takes_a_device_about_to_be_reconfigured() {
    let b = node("1xH100-80GB,mig=on");
    let gis: Vec<u32> = (0..4).map(|s| gi(&b, 0, "1g.10gb", s, &[])).collect();
    let v = views(&b);
    let inv = common::inventory(&config(MIXED), &v, &health(&[(0, gis[1])], &[]), &[(0, gis[0])]);
    let all = ids_of(&inv, "nvidia.com/mig-1g.10gb");
    let got = preferred_allocation(&all, &[], 2, &inv, &v).unwrap();
    for id in &got {
        let d = inv.device(id).unwrap().1;
        assert!(!d.draining && d.health == tessera_kube_core::DeviceHealth::Healthy, "{id}");
    }
    assert_eq!(preferred_allocation(&all, &[], 3, &inv, &v), Err(AllocError::NotEnough { size: 3, usable: 2 }));
}

#[test]
fn allocate_answers_as_nvidia_plugin_does() {
    let (_, inv) = two_numa();
    let ids = ids_of(&inv, "nvidia.com/mig-1g.10gb");
    let c = config(MIXED);
    let a = allocate(&ids[..2], &inv, &AllocateOptions { config: c.clone() }).unwrap();
    assert_eq!(a.envs.get("NVIDIA_VISIBLE_DEVICES"), Some(&ids[..2].join(",")));
    let paths: Vec<&str> = a.devices.iter().map(|d| d.container_path.as_str()).collect();
    for d in ids[..2].iter().flat_map(|id| &inv.device(id).unwrap().1.device_nodes) {
        assert!(paths.contains(&d.container_path.as_str()), "{paths:?}");
    }
    for p in ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"] {
        assert!(paths.contains(&p), "{paths:?}");
    }
    assert!(a.cdi_devices.is_empty() && a.annotations.is_empty());

    // CDI only: names, no environment or device nodes.
    let cdi = config(
        "version: v1\nflags:\n  migStrategy: mixed\n  plugin:\n    deviceListStrategy: [cdi-cri, cdi-annotations]\n",
    );
    let a = allocate(&ids[..1], &inv, &AllocateOptions { config: cdi }).unwrap();
    assert_eq!(a.cdi_devices, [format!("tessera.dev/gpu={}", ids[0])]);
    assert_eq!(
        a.annotations.get(&format!("cdi.k8s.io/tessera-device-plugin_{}", ids[0])),
        Some(&format!("tessera.dev/gpu={}", ids[0]))
    );
    assert!(a.envs.is_empty() && a.devices.is_empty());

    // Errors name the device.
    let e = allocate(&["GPU-nope".to_string()], &inv, &AllocateOptions { config: c.clone() }).unwrap_err();
    assert_eq!(e.to_string(), "unknown device 'GPU-nope': this node does not advertise it");
    let other = ids_of(&inv, "nvidia.com/mig-3g.40gb");
    let e = allocate(&[ids[0].clone(), other[0].clone()], &inv, &AllocateOptions { config: c }).unwrap_err();
    assert!(matches!(e, AllocError::MixedResources { .. }), "{e}");
}

#[test]
fn allocate_refuses_unhealthy_and_reconfiguring_devices() {
    let b = node("1xH100-80GB,mig=on");
    let g0 = gi(&b, 0, "1g.10gb", 0, &[]);
    let g1 = gi(&b, 0, "1g.10gb", 1, &[]);
    let inv = common::inventory(&config(MIXED), &views(&b), &health(&[(0, g0)], &[]), &[(0, g1)]);
    let ids = ids_of(&inv, "nvidia.com/mig-1g.10gb");
    let opts = AllocateOptions { config: config(MIXED) };
    for id in &ids {
        let d = inv.device(id).unwrap().1;
        let e = allocate(std::slice::from_ref(id), &inv, &opts).unwrap_err();
        let want = if d.gpu_instance_id == Some(g0) {
            AllocError::Unhealthy { id: id.clone() }
        } else {
            AllocError::Draining { id: id.clone() }
        };
        assert_eq!(e, want);
    }
}

#[test]
fn shared_devices_mps_and_time_slicing() {
    let b = node("2xH100-80GB,mig=off");
    let v = views(&b);
    let mps = config(
        "version: v1\nflags:\n  mpsRoot: /run/nvidia/mps\nsharing:\n  mps:\n    resources:\n    - name: nvidia.com/gpu\n      replicas: 4\n",
    );
    let inv = common::inventory(&mps, &v, &health(&[], &[]), &[]);
    let ids = ids_of(&inv, "nvidia.com/gpu");
    assert_eq!(ids.len(), 8);
    let a = allocate(&ids[..1], &inv, &AllocateOptions { config: mps.clone() }).unwrap();
    let base = ids[0].split_once("::").unwrap().0;
    assert_eq!(a.envs["NVIDIA_VISIBLE_DEVICES"], base);
    assert_eq!(a.envs["CUDA_MPS_PIPE_DIRECTORY"], "/mps/nvidia.com/gpu/pipe");
    assert_eq!(a.envs["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"], "25");
    assert_eq!(a.envs["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"], format!("0={}M", v[0].device.memory_total_mib / 4));
    let mounts: Vec<(&str, &str)> =
        a.mounts.iter().map(|m| (m.container_path.as_str(), m.host_path.as_str())).collect();
    assert_eq!(
        mounts,
        [("/mps/nvidia.com/gpu/pipe", "/run/nvidia/mps/nvidia.com/gpu/pipe"), ("/dev/shm", "/run/nvidia/mps/shm")]
    );
    // MPS refuses more than one replica by default.
    assert_eq!(
        allocate(&ids[..2], &inv, &AllocateOptions { config: mps }),
        Err(AllocError::SharedRequestTooLarge { found: 2 })
    );
    // Time-slicing allows it: two replicas of one GPU are that GPU once.
    let ts = config(
        "version: v1\nsharing:\n  timeSlicing:\n    resources:\n    - name: nvidia.com/gpu\n      replicas: 4\n",
    );
    let inv = common::inventory(&ts, &v, &health(&[], &[]), &[]);
    let same: Vec<String> =
        ids_of(&inv, "nvidia.com/gpu").into_iter().filter(|id| id.starts_with(base)).take(2).collect();
    let a = allocate(&same, &inv, &AllocateOptions { config: ts.clone() }).unwrap();
    assert_eq!(a.envs["NVIDIA_VISIBLE_DEVICES"], base);
    assert!(!a.envs.contains_key("CUDA_MPS_PIPE_DIRECTORY"));
    // Preference spreads replicas over GPUs (NVIDIA's distributed policy).
    let all = ids_of(&inv, "nvidia.com/gpu");
    let got = preferred_allocation(&all, &[], 2, &inv, &v).unwrap();
    assert_ne!(gpu_of(&inv, &got[0]), gpu_of(&inv, &got[1]), "{got:?}");
}

/// Two H100s over two NUMA nodes, each with `1g.10gb` at units 0..=3 (`single`: all
/// `nvidia.com/gpu`); per instance, whether it is unhealthy and whether it is about to be
/// reconfigured.
fn random_node(layout: &[(bool, bool)]) -> (Vec<GpuView>, Inventory) {
    let b = node("2xH100-80GB,mig=on,numa=2");
    let mut unhealthy = Vec::new();
    let mut reconf = Vec::new();
    for (i, &(sick, moving)) in layout.iter().enumerate() {
        let g = (i / 4) as u32;
        let id = gi(&b, g, "1g.10gb", (i % 4) as u8, &[]);
        if sick {
            unhealthy.push((g, id));
        }
        if moving {
            reconf.push((g, id));
        }
    }
    let v = views(&b);
    let single = config("version: v1\nflags:\n  migStrategy: single\n");
    let inv = common::inventory(&single, &v, &health(&unhealthy, &[]), &reconf);
    (v, inv)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn preferred_allocation_invariants(
        layout in proptest::collection::vec((proptest::bool::weighted(0.2), proptest::bool::weighted(0.2)), 8),
        avail_mask in any::<u16>(),
        must_mask in any::<u16>(),
        size in 0usize..9,
    ) {
        let (v, inv) = random_node(&layout);
        let all: Vec<String> = inv.resources.values().flatten().map(|d| d.id.clone()).collect();
        let available: Vec<String> = all.iter().enumerate().filter(|(i, _)| avail_mask & (1 << i) != 0).map(|(_, id)| id.clone()).collect();
        let usable = |id: &String| { let d = inv.device(id).unwrap().1; !d.draining && d.health == tessera_kube_core::DeviceHealth::Healthy };
        let must: Vec<String> = available.iter().enumerate().filter(|(i, id)| must_mask & (1 << i) != 0 && usable(id)).map(|(_, id)| id.clone()).take(size).collect();
        match preferred_allocation(&available, &must, size, &inv, &v) {
            Ok(got) => {
                prop_assert_eq!(got.len(), size);
                let set: BTreeSet<&String> = got.iter().collect();
                prop_assert_eq!(set.len(), size, "no duplicates");
                for m in &must { prop_assert!(got.contains(m), "includes {}", m); }
                for id in &got {
                    prop_assert!(available.contains(id), "only available: {}", id);
                    prop_assert!(usable(id), "never reconfiguring or unhealthy: {}", id);
                }
            }
            Err(AllocError::NotEnough { usable: n, .. }) => {
                prop_assert!(available.iter().filter(|id| usable(id)).count() < size);
                prop_assert_eq!(n, available.iter().filter(|id| usable(id)).count());
            }
            Err(e) => prop_assert!(false, "unexpected error {}", e),
        }
    }
}
