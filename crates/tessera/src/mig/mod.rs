//! `tessera mig …`: the MIG commands. Each file is one command or a family of them.

mod checkpoint;
mod config;
mod export;
mod gpus;
mod health;
pub mod hooks;
mod layouts;
pub mod mode;
mod parted;
mod plan;
mod profiles;
mod sim;

pub use parted::run_mig_parted;

use anyhow::{Context as _, bail};
use tessera_gpu::view::{GpuView, LiveInstance};
use tessera_mig::layout::{CiSizes, shape_type_name};
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
        MigCommand::Apply { apply, dry_run } => config::apply(global, &apply, dry_run, config::Voice::Tessera),
        MigCommand::Assert { config, valid_config } => {
            config::assert(global, &config, valid_config, config::Voice::Tessera)
        }
        MigCommand::Export { export } => export::export(global, &export),
        MigCommand::Checkpoint { checkpoint } => checkpoint::checkpoint(global, &checkpoint, config::Voice::Tessera),
        MigCommand::Restore { restore } => checkpoint::restore(global, &restore, config::Voice::Tessera),
        MigCommand::GenerateConfig { output_file, output_format } => {
            export::generate_config(global, output_file.as_deref(), output_format)
        }
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

/// A GPU instance's device type, the one spelling `tessera mig gpus` and `tessera mig assert`
/// share: mig-parted's (`3g.40gb`; `1c.3g.40gb` for one smaller compute instance), and for
/// several compute instances in one GPU instance each kind with its count, largest first
/// (`1c.3g.40gb ×3`, `2c.3g.40gb + 1c.3g.40gb`: `tessera_mig::layout::device_type_name`), or
/// none (`3g.40gb (no compute instance)`).
pub fn device_type(v: &GpuView, i: &LiveInstance) -> String {
    let profile = v.model.and_then(|m| m.profile_by_id(i.instance.profile_id));
    let gi_slices = profile.map_or(0, |p| p.compute_slices);
    match i.instance.compute {
        ComputeShape::Other if i.compute_instances.is_empty() => {
            format!("{} (no compute instance)", i.profile_name)
        }
        ComputeShape::Other => {
            // Several compute instances that no split describes: their sizes all the same.
            let mut sizes: Vec<u8> = i.compute_instances.iter().map(|c| c.placement.size).collect();
            sizes.sort_unstable_by(|a, b| b.cmp(a));
            match CiSizes::new(&sizes) {
                Ok(split) => shape_type_name(&i.profile_name, gi_slices, ComputeShape::Split(split)),
                Err(_) => format!("{} (custom compute instances)", i.profile_name),
            }
        }
        compute => shape_type_name(&i.profile_name, gi_slices, compute),
    }
}

/// A compute instance's type: its GPU instance's profile when it takes all `whole` compute
/// slices, else `{size}c.{profile}` (`1c.3g.40gb`).
pub fn compute_instance_type(profile: &str, size: u8, whole: Option<u8>) -> String {
    shape_type_name(profile, whole.unwrap_or(0), ComputeShape::Slices(size))
}

/// Print JSON (for `-o json`).
pub fn print_json(value: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()));
}

/// Whether the human form is wanted.
pub fn human(output: Output) -> bool {
    output == Output::Table
}
