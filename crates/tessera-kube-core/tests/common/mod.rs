//! Simulated nodes for the tests: GPUs laid out through `SimBackend`, read back as `GpuView`s
//! exactly as the device plugin reads a real node.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use tessera_gpu::health::{HealthReport, HealthTracker};
use tessera_gpu::view::{GpuView, node_view};
use tessera_gpu::{MigBackend, NodeSpec, SimBackend, XidEvent};
use tessera_kube_core::{InstanceKey, Inventory, NodeInput, PluginConfig, build_inventory, parse_config};

/// A node from a spec such as `2xH100-80GB,mig=on,numa=2`.
pub fn node(spec: &str) -> SimBackend {
    SimBackend::in_memory(&NodeSpec::parse(spec).unwrap())
}

/// Create a GPU instance of `profile` at `start` on `gpu`, split into compute instances of
/// `cis` slices (one spanning it when empty); returns its GPU-instance id.
pub fn gi(b: &SimBackend, gpu: u32, profile: &str, start: u8, cis: &[u8]) -> u32 {
    let model = b.devices().unwrap()[gpu as usize].model().unwrap();
    let p = model.profiles.iter().find(|p| p.name == profile).unwrap_or_else(|| panic!("no profile {profile}"));
    let g = b.create_gpu_instance(gpu, p.id, Some(start)).unwrap();
    let sizes = if cis.is_empty() { vec![p.compute_slices] } else { cis.to_vec() };
    for c in sizes {
        let ci = model.compute_instance_profiles(p.compute_slices).iter().find(|x| x.compute_slices == c).unwrap().id;
        b.create_compute_instance(gpu, g.id, ci).unwrap();
    }
    g.id
}

pub fn views(b: &SimBackend) -> Vec<GpuView> {
    node_view(b).unwrap()
}

/// A health report with an instance-contained fault (Xid 94) on each `(gpu, gi)` and a fatal one
/// (Xid 48) on each GPU in `gpus`.
pub fn health(instances: &[(u32, u32)], gpus: &[u32]) -> HealthReport {
    let mut t = HealthTracker::new(60_000);
    for &(gpu, gi) in instances {
        t.record(&XidEvent { gpu, xid: 94, gpu_instance_id: Some(gi), compute_instance_id: None }, 1);
    }
    for &gpu in gpus {
        t.record(&XidEvent { gpu, xid: 48, gpu_instance_id: None, compute_instance_id: None }, 1);
    }
    t.report()
}

pub fn config(yaml: &str) -> PluginConfig {
    parse_config(yaml, "config.yaml").unwrap()
}

pub fn inventory(config: &PluginConfig, gpus: &[GpuView], health: &HealthReport, reconf: &[(u32, u32)]) -> Inventory {
    let reconfiguring: BTreeSet<InstanceKey> =
        reconf.iter().map(|&(gpu, gpu_instance_id)| InstanceKey { gpu, gpu_instance_id }).collect();
    let input = NodeInput { gpus, health, reconfiguring: &reconfiguring, reconfiguring_gpus: &BTreeSet::new() };
    build_inventory(config, &input).unwrap()
}

/// The inventory in words: per resource, each device as `gpu0` or `gpu0/gi1:1g.10gb`, with
/// ` unhealthy`, ` draining`, `::n` for replicas; sorted (IDs are UUIDs).
pub fn summary(inv: &Inventory) -> BTreeMap<String, Vec<String>> {
    inv.resources
        .iter()
        .map(|(r, ds)| {
            let mut v: Vec<String> = ds
                .iter()
                .map(|d| {
                    let mut s = format!("gpu{}", d.gpu_index);
                    if let (Some(gi), Some(p)) = (d.gpu_instance_id, &d.profile) {
                        s.push_str(&format!("/gi{gi}:{p}"));
                    }
                    if let Some((_, n)) = d.id.split_once("::") {
                        s.push_str(&format!("::{n}"));
                    }
                    if d.health == tessera_kube_core::DeviceHealth::Unhealthy {
                        s.push_str(" unhealthy");
                    }
                    if d.draining {
                        s.push_str(" draining");
                    }
                    s
                })
                .collect();
            v.sort();
            (r.to_string(), v)
        })
        .collect()
}
