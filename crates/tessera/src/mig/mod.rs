//! `tessera mig …`: the MIG commands. Each file is one command or a family of them.

mod config;
mod gpus;
mod health;
mod layouts;
mod plan;
mod profiles;
mod sim;

use std::collections::BTreeMap;

use anyhow::{Context as _, bail};
use tessera_gpu::view::{GpuView, LiveInstance};
use tessera_mig::layout::device_type_name;
use tessera_mig::{ComputeShape, GpuModel, Instance, WantedInstance, catalog};

use crate::cli::{Global, HealthCommand, MigCommand, Output};

pub fn run(global: &Global, cmd: MigCommand) -> anyhow::Result<()> {
    match cmd {
        MigCommand::Gpus => gpus::run(global),
        MigCommand::Profiles { gpu: Some(gpu) } => profiles::run(global.output, &gpu),
        MigCommand::Profiles { gpu: None } => profiles::run_node(global),
        MigCommand::Plan { gpu, existing, per_gpu_numa, profiles } => {
            plan::run(global.output, &gpu, &existing, per_gpu_numa, &profiles)
        }
        MigCommand::Layouts { gpu, profiles } => layouts::run(global.output, &gpu, &profiles),
        MigCommand::Apply { config, dry_run } => config::apply(global, &config, dry_run),
        MigCommand::Assert { config, valid_config } => config::assert(global, &config, valid_config),
        MigCommand::Export { config_name } => config::export(global, &config_name),
        MigCommand::Health { watch, recovery_quiet, health_state, command: None } => {
            health::run(global, watch, recovery_quiet, health_state)
        }
        MigCommand::Health {
            recovery_quiet, health_state, command: Some(HealthCommand::Clear { gpu, by }), ..
        } => health::clear(global, gpu, by, recovery_quiet, health_state),
        MigCommand::Xid { gpu, xid, gpu_instance, compute_instance } => {
            sim::xid(global, gpu, xid, gpu_instance, compute_instance)
        }
        MigCommand::Reset { gpu } => sim::reset(global, gpu),
        MigCommand::Reboot => sim::reboot(global),
        MigCommand::Busy { target, pid } => sim::busy(global, &target, pid),
        MigCommand::Idle { target } => sim::idle(global, &target),
    }
}

/// The catalog model named on the command line (`--gpu`).
pub fn model_arg(query: &str) -> anyhow::Result<&'static GpuModel> {
    catalog().model(query).with_context(|| format!("--gpu '{query}'"))
}

/// A profile on the command line: a name (`3g.40gb`), an id (`9`), or a compute split of a
/// profile in mig-parted's terms (`1c.3g.40gb`).
pub fn wanted_arg(model: &GpuModel, text: &str) -> anyhow::Result<WantedInstance> {
    Ok(model.wanted_instance(text)?)
}

/// `PROFILE@START` on the command line.
pub fn instance_arg(model: &GpuModel, text: &str) -> anyhow::Result<Instance> {
    if !text.contains('@') {
        bail!("--existing '{text}': write PROFILE@START, e.g. 3g.40gb@4");
    }
    let (wanted, start) = model.instance_spec(text).with_context(|| format!("--existing '{text}'"))?;
    let start = start.unwrap_or(0);
    Ok(Instance { profile_id: wanted.profile_id, start, compute: wanted.compute })
}

/// A GPU instance's device type, the one spelling `tessera mig gpus` and `tessera mig export`
/// share: mig-parted's (`3g.40gb`; `1c.3g.40gb` for one smaller compute instance), and for what
/// mig-parted cannot express, several compute instances in one GPU instance, each kind with its
/// count (`1c.3g.40gb ×3`, `1c.3g.40gb ×2 + 2c.3g.40gb`), or none (`3g.40gb (no compute
/// instance)`).
pub fn device_type(v: &GpuView, i: &LiveInstance) -> String {
    let profile = v.model.and_then(|m| m.profile_by_id(i.instance.profile_id));
    match (i.instance.compute, profile) {
        (ComputeShape::Other, _) => {
            if i.compute_instances.is_empty() {
                return format!("{} (no compute instance)", i.profile_name);
            }
            let whole = profile.map(|p| p.compute_slices);
            let mut sizes: BTreeMap<u8, usize> = BTreeMap::new();
            for c in &i.compute_instances {
                *sizes.entry(c.placement.size).or_default() += 1;
            }
            sizes
                .into_iter()
                .map(|(size, n)| {
                    let name = compute_instance_type(&i.profile_name, size, whole);
                    if n == 1 { name } else { format!("{name} ×{n}") }
                })
                .collect::<Vec<_>>()
                .join(" + ")
        }
        (compute, Some(p)) => device_type_name(p, compute),
        (ComputeShape::Slices(c), None) => format!("{c}c.{}", i.profile_name),
        (ComputeShape::Full, None) => i.profile_name.clone(),
    }
}

/// A compute instance's type: its GPU instance's profile when it takes all `whole` compute
/// slices, else `{size}c.{profile}` (`1c.3g.40gb`).
pub fn compute_instance_type(profile: &str, size: u8, whole: Option<u8>) -> String {
    if Some(size) == whole { profile.to_string() } else { format!("{size}c.{profile}") }
}

/// Print JSON (for `-o json`).
pub fn print_json(value: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()));
}

/// Whether the human form is wanted.
pub fn human(output: Output) -> bool {
    output == Output::Table
}
