//! The simulated node's test-rig commands: `tessera mig busy|idle GPU:GI` put a (simulated)
//! process on a GPU instance, or end it, to see that busy instances are never touched;
//! `tessera mig xid` raises an Xid error; `tessera mig reset GPU` and `tessera mig reboot` are
//! the recoveries a fault may wait for.

use anyhow::{Context as _, bail};
use serde_json::json;
use tessera_gpu::view::gpu_view;

use super::{human, print_json};
use crate::cli::Global;
use crate::node;

fn target(text: &str) -> anyhow::Result<(u32, u32)> {
    let Some((gpu, gi)) = text.split_once(':') else {
        bail!("'{text}': write GPU:GI, e.g. 0:2 for GPU instance 2 of GPU 0");
    };
    let gpu = gpu.trim().parse().with_context(|| format!("'{text}': GPU index '{gpu}' is not a number"))?;
    let gi = gi.trim().parse().with_context(|| format!("'{text}': GPU instance id '{gi}' is not a number"))?;
    Ok((gpu, gi))
}

pub fn busy(global: &Global, text: &str, pid: u32) -> anyhow::Result<()> {
    let (gpu, gi) = target(text)?;
    let node = node::open(global)?;
    let view = gpu_view(node.backend(), gpu)?;
    let Some(inst) = view.instances.iter().find(|i| i.gpu_instance_id == gi) else {
        let ids: Vec<String> = view.instances.iter().map(|i| i.gpu_instance_id.to_string()).collect();
        bail!(
            "GPU {gpu} has no GPU instance {gi} (it has: {})",
            if ids.is_empty() { "none".into() } else { ids.join(", ") }
        );
    };
    let Some(ci) = inst.compute_instances.first() else {
        bail!("GPU {gpu} GPU instance {gi} has no compute instance for a process to run in");
    };
    node.sim("tessera mig busy")?.attach_process(gpu, gi, ci.id, pid, "simulated-job")?;
    if human(global.output) {
        println!("GPU {gpu} GPU instance {gi} ({}) is now busy: pid {pid}", inst.profile_name);
    } else {
        print_json(&json!({"gpu": gpu, "gpu_instance_id": gi, "pid": pid, "busy": true}));
    }
    Ok(())
}

pub fn idle(global: &Global, text: &str) -> anyhow::Result<()> {
    let (gpu, gi) = target(text)?;
    let node = node::open(global)?;
    let view = gpu_view(node.backend(), gpu)?;
    let Some(inst) = view.instances.iter().find(|i| i.gpu_instance_id == gi) else {
        bail!("GPU {gpu} has no GPU instance {gi}");
    };
    for p in &inst.processes {
        node.sim("tessera mig idle")?.detach_process(gpu, p.pid)?;
    }
    if human(global.output) {
        println!(
            "GPU {gpu} GPU instance {gi} ({}) is idle ({} process(es) ended)",
            inst.profile_name,
            inst.processes.len()
        );
    } else {
        print_json(&json!({"gpu": gpu, "gpu_instance_id": gi, "busy": false, "ended": inst.processes.len()}));
    }
    Ok(())
}

pub fn xid(global: &Global, gpu: u32, xid: u64, gi: Option<u32>, ci: Option<u32>) -> anyhow::Result<()> {
    let node = node::open(global)?;
    node.sim("tessera mig xid")?.raise_xid(gpu, xid, gi, ci)?;
    let class = tessera_gpu::health::classify(xid);
    if human(global.output) {
        let effect = match class.recovery {
            tessera_gpu::Recovery::None => "no health change".to_string(),
            r => format!("it needs {r}"),
        };
        println!("raised Xid {xid} ({}, {}) on GPU {gpu}: {effect}", class.name, class.severity);
    } else {
        print_json(&json!({"gpu": gpu, "xid": xid, "gpu_instance_id": gi, "compute_instance_id": ci,
                           "severity": class.severity, "recovery": class.recovery}));
    }
    Ok(())
}

pub fn reset(global: &Global, gpu: u32) -> anyhow::Result<()> {
    let node = node::open(global)?;
    let sim = node.sim("tessera mig reset")?;
    sim.reset_gpu(gpu)?;
    let obs = node.backend().observe(gpu)?;
    if human(global.output) {
        println!("GPU {gpu} was reset (resets so far: {})", obs.reset_count.unwrap_or(0));
    } else {
        print_json(&json!({"gpu": gpu, "reset": true, "observation": obs}));
    }
    Ok(())
}

pub fn reboot(global: &Global) -> anyhow::Result<()> {
    let node = node::open(global)?;
    let sim = node.sim("tessera mig reboot")?;
    sim.reboot()?;
    let boot_id = sim.boot_id()?;
    if human(global.output) {
        println!("the simulated node was rebooted (boot id {boot_id})");
    } else {
        print_json(&json!({"rebooted": true, "boot_id": boot_id}));
    }
    Ok(())
}
