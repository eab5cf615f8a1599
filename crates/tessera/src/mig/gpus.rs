//! `tessera mig gpus`: the node's GPUs, their MIG mode, instances and a slice map.
//!
//! Every GPU instance goes by its device type as `tessera mig export` writes it (so a compute
//! split shows: `1c.3g.40gb`, `1c.3g.40gb ×3`), each of its compute instances on its own row;
//! what is left is said in one line ([`free_line`]) whatever the layout.

use serde_json::json;
use tessera_gpu::view::{GpuView, node_view_partial};
use tessera_mig::planner_for;

use super::{compute_instance_type, device_type, human, plan::free_line, plan::layout_map, print_json};
use crate::Refusal;
use crate::cli::Global;
use crate::node;
use crate::render::{Table, ranges};

pub fn run(global: &Global) -> anyhow::Result<()> {
    let node = node::open(global)?;
    // A GPU that does not answer is listed as such; it does not hide the others.
    let view = node_view_partial(node.backend())?;
    let views = &view.gpus;
    if !human(global.output) {
        print_json(&json!({
            "backend": node.backend().kind().to_string(),
            "node": node.description,
            "host": node.node.sim().map(|s| {
                let spec = s.spec();
                json!({"cpus": spec.cpus(), "memory_mib": spec.memory_mib(), "numa_nodes": spec.numa_nodes()})
            }),
            "gpus": views.iter().map(gpu_json).collect::<Vec<_>>(),
            "unreachable": view.failed,
        }));
    } else {
        println!("{}: {} GPU(s)", node.description, views.len() + view.failed.len());
        if let Some(sim) = node.node.sim() {
            println!("{}", sim_host_line(sim.spec()));
        }
        for v in views {
            println!();
            print_gpu(v);
        }
        for f in &view.failed {
            println!();
            println!("{}  does not answer: {}", f.gpu, f.error);
        }
    }
    match view.failed.len() {
        0 => Ok(()),
        n => {
            let why: Vec<String> = view.failed.iter().map(ToString::to_string).collect();
            Err(Refusal(format!("{n} GPU(s) do not answer: {}", why.join("; "))).into())
        }
    }
}

/// The simulated node's host, which is its spec's and never this machine's.
fn sim_host_line(spec: &tessera_gpu::NodeSpec) -> String {
    let nodes = match spec.numa_nodes() {
        0 => "NUMA unknown".to_string(),
        1 => "1 NUMA node".to_string(),
        n => format!("{n} NUMA nodes"),
    };
    format!(
        "host: {} CPUs and {} of memory on {nodes} (simulated, not this machine's)",
        spec.cpus(),
        tessera_host::format_mib(spec.memory_mib())
    )
}

fn layout_of(v: &GpuView) -> Vec<tessera_mig::Instance> {
    v.instances.iter().map(|i| i.instance).collect()
}

pub fn gpu_json(v: &GpuView) -> serde_json::Value {
    let frag = v.model.and_then(planner_for).and_then(|p| p.fragmentation(&layout_of(v)).ok());
    json!({
        "index": v.device.index,
        "uuid": v.device.uuid,
        "name": v.device.name,
        "model": v.model.map(|m| m.name.clone()),
        "pci_bus_id": v.device.pci_bus_id,
        "pci_device_id": format!("0x{:04X}", v.device.pci_device_id),
        "pci_subsystem_id": format!("0x{:08X}", v.device.pci_subsystem_id),
        "numa_node": v.device.numa_node,
        "local_cpus": ranges(&v.device.local_cpus),
        "memory_total_mib": v.device.memory_total_mib,
        "mig": {"current": v.mig.current, "pending": v.mig.pending},
        "instances": v.instances.iter().map(|i| json!({
            "gpu_instance_id": i.gpu_instance_id,
            "profile": i.profile_name,
            "device_type": device_type(v, i),
            "profile_id": i.instance.profile_id,
            "start": i.instance.start,
            "size": i.placement_size,
            "gpu_numa_node": v.model.and_then(|m| m.gpu_numa_node(i.instance.start, i.placement_size)),
            "busy": i.busy,
            "compute_instances": i.compute_instances.iter().map(|c| json!({
                "id": c.id, "profile_id": c.profile_id, "placement": c.placement.to_string(),
                "uuid": c.uuid, "caps_minor": c.caps_minor,
            })).collect::<Vec<_>>(),
            "processes": i.processes.iter().map(|p| json!({"pid": p.pid, "name": p.name})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "free_units": frag.as_ref().map(|r| r.free_units.clone()),
        "free_compute_slices": frag.as_ref().map(|r| r.free_compute_slices),
        "unusable_compute_slices": frag.as_ref().map(|r| r.unusable_compute_slices),
        "free": v.model.zip(frag.as_ref()).map(|(m, r)| free_line(m, r)),
    })
}

fn print_gpu(v: &GpuView) {
    let d = &v.device;
    println!("GPU {}  {}  ({})  {}", d.index, d.name, v.model.map_or("unknown model", |m| m.name.as_str()), d.uuid);
    println!(
        "  bus {}  NUMA {}  CPUs {}  MIG {}",
        d.pci_bus_id,
        d.numa_node.map_or("-".to_string(), |n| n.to_string()),
        ranges(&d.local_cpus),
        v.mig
    );
    if !v.mig.current {
        return;
    }
    let Some(m) = v.model else {
        println!("  (no catalog entry for this GPU: instances listed without a slice map)");
        return;
    };
    let layout = layout_of(v);
    println!();
    print!(
        "{}",
        layout_map(
            m,
            &layout,
            |inst| {
                let live = v.instances.iter().find(|l| l.instance == *inst);
                match live {
                    // Narrow slices show the device type alone; the table below has the ids.
                    Some(l)
                        if l.placement_size * 9 / m.profiles.iter().map(|p| p.placement_size).min().unwrap_or(1)
                            < 12 =>
                    {
                        format!("{}{}", if l.busy { "●" } else { "" }, device_type(v, l))
                    }
                    Some(l) => {
                        format!("{} GI{}{}", device_type(v, l), l.gpu_instance_id, if l.busy { " ●" } else { "" })
                    }
                    None => "?".into(),
                }
            },
            2
        )
    );
    if v.instances.is_empty() {
        println!("  no GPU instances");
    } else {
        let mut t = Table::new(&["GI", "CI", "PROFILE", "PLACEMENT", "GPU NUMA", "MIG DEVICE", "CAPS", "STATE"]);
        for i in &v.instances {
            let state = if i.busy {
                format!("busy: {}", i.processes.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))
            } else {
                "idle".into()
            };
            let numa = m.gpu_numa_node(i.instance.start, i.placement_size).map_or("both".into(), |n| n.to_string());
            if i.compute_instances.is_empty() {
                t.row(vec![
                    i.gpu_instance_id.to_string(),
                    "-".into(),
                    i.profile_name.clone(),
                    format!("{}:{}", i.instance.start, i.placement_size),
                    numa.clone(),
                    "(no compute instance)".into(),
                    "-".into(),
                    state.clone(),
                ]);
            }
            let gi_slices = m.profile_by_id(i.instance.profile_id).map(|p| p.compute_slices);
            for c in &i.compute_instances {
                // Each compute instance's own share of the GPU instance.
                let ci_type = compute_instance_type(&i.profile_name, c.placement.size, gi_slices);
                t.row(vec![
                    i.gpu_instance_id.to_string(),
                    c.id.to_string(),
                    ci_type,
                    format!("{}:{}", i.instance.start, i.placement_size),
                    numa.clone(),
                    c.uuid.clone(),
                    c.caps_minor.map_or_else(|| "-".to_string(), |m| m.to_string()),
                    state.clone(),
                ]);
            }
        }
        println!();
        print!("{}", t.render(2));
    }
    if let Some(r) = planner_for(m).and_then(|p| p.fragmentation(&layout).ok()) {
        println!();
        println!("  {}", free_line(m, &r));
    }
}
