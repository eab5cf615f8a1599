//! `tessera mig checkpoint|restore` (and `nvidia-mig-parted checkpoint|restore`): mig-parted's
//! checkpoint file (`tessera_migparted::Checkpoint`), written atomically, and restored as
//! mig-parted restores it (`pkg/mig/state/state.go`, `cmd/nvidia-mig-parted/restore`), made
//! safe: GPUs are matched by UUID, every GPU is planned before anything changes, only what
//! differs changes, a busy instance is never destroyed (the refusal names its processes), and
//! the MIG mode comes first ([`super::mode::apply_modes`]; like mig-parted's restore, no
//! `--skip-reset`), then the exact GPU-instance placements and their compute instances, between
//! the hooks ([`super::hooks::apply_with_hooks`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;
use tessera_gpu::view::{GpuView, LiveInstance, gpu_view, node_view};
use tessera_gpu::{BackendError, GpuRef, MigBackend};
use tessera_host::files::{WriteOptions, write_atomic};
use tessera_migparted::{
    Checkpoint, CkptPlacement, ComputeInstanceState, DeviceState, GiTarget, GpuInstanceState, restore_targets,
};

use super::config::Voice;
use super::hooks::{Applier, Hooks, apply_with_hooks};
use super::{human, print_json};
use crate::Refusal;
use crate::cli::{CheckpointArgs, Global, RestoreArgs};
use crate::node;

/// `-f/--checkpoint-file` (or `MIG_PARTED_CHECKPOINT_FILE`), which both verbs require; the
/// message is mig-parted's.
fn checkpoint_file(args: &CheckpointArgs) -> anyhow::Result<&Path> {
    match &args.file {
        Some(p) if !p.as_os_str().is_empty() => Ok(p),
        _ => Err(Refusal(
            "missing required flags 'checkpoint-file': give -f/--checkpoint-file FILE (or MIG_PARTED_CHECKPOINT_FILE)"
                .to_string(),
        )
        .into()),
    }
}

/// Whether the GPU has MIG at all (NVML answers `NOT_SUPPORTED` otherwise): mig-parted's
/// checkpoint lists only MIG-capable GPUs.
fn mig_capable(backend: &dyn MigBackend, gpu: u32) -> Result<bool, BackendError> {
    match backend.mig_mode(gpu) {
        Ok(_) => Ok(true),
        Err(BackendError::NotSupported { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The node's MIG state as a checkpoint: each MIG-capable GPU by UUID, with its MIG mode, its
/// GPU instances by NVML profile index then start (the order mig-parted walks them), and each
/// one's compute instances by placement (the order that recreates them where they are).
fn fetch(backend: &dyn MigBackend, views: &[GpuView]) -> anyhow::Result<Checkpoint> {
    let mut devices = Vec::new();
    for v in views {
        if !mig_capable(backend, v.device.index)? {
            continue;
        }
        let mut gpu_instances = Vec::new();
        for i in &v.instances {
            let index = v
                .model
                .and_then(|m| m.profile_by_id(i.instance.profile_id))
                .and_then(tessera_mig::Profile::nvml_profile_index)
                .with_context(|| {
                    format!(
                        "GPU {} ({}): {} has no NVML profile index in the GPU catalog, so it cannot be checkpointed",
                        v.device.index,
                        v.device.name,
                        i.label()
                    )
                })?;
            let mut cis = i.compute_instances.clone();
            cis.sort_by_key(|c| c.placement.start);
            gpu_instances.push(GpuInstanceState {
                profile_index: index,
                placement: CkptPlacement { start: u32::from(i.instance.start), size: u32::from(i.placement_size) },
                compute_instances: cis
                    .iter()
                    .map(|c| ComputeInstanceState {
                        profile_index: c.profile_id,
                        eng_profile_index: 0,
                        placement: Some(CkptPlacement {
                            start: u32::from(c.placement.start),
                            size: u32::from(c.placement.size),
                        }),
                    })
                    .collect(),
            });
        }
        gpu_instances.sort_by_key(|g| (g.profile_index, g.placement.start));
        devices.push(DeviceState { uuid: v.device.uuid.clone(), mig_enabled: v.mig.current, gpu_instances });
    }
    Ok(Checkpoint { devices })
}

/// `checkpoint -f FILE`: write the node's MIG state, replacing FILE atomically.
pub fn checkpoint(global: &Global, args: &CheckpointArgs, voice: Voice) -> anyhow::Result<()> {
    let path = checkpoint_file(args)?;
    let node = node::open(global)?;
    let backend = node.backend();
    let views = node_view(backend)?;
    let state = fetch(backend, &views)?;
    write_atomic(path, state.to_json().as_bytes(), WriteOptions::SHARED)
        .with_context(|| format!("writing the checkpoint file {}", path.display()))?;
    match voice {
        Voice::MigParted { .. } => println!("MIG configuration checkpointed successfully"),
        Voice::Tessera if human(global.output) => println!(
            "Checkpointed the MIG state of {} GPU(s) to {}; `tessera mig restore -f {}` restores it.",
            state.devices.len(),
            path.display(),
            path.display()
        ),
        Voice::Tessera => print_json(&serde_json::to_value(CheckpointReply {
            checkpoint_file: path.to_path_buf(),
            gpus: state.devices.iter().map(|d| d.uuid.clone()).collect(),
        })?),
    }
    Ok(())
}

#[derive(Serialize)]
struct CheckpointReply {
    checkpoint_file: PathBuf,
    gpus: Vec<String>,
}

#[derive(Serialize)]
struct RestoreReply {
    checkpoint_file: PathBuf,
    gpus: Vec<String>,
    done: Vec<String>,
}

/// What restoring one GPU takes, planned before anything changes.
#[derive(Debug)]
struct GpuRestore<'m> {
    gpu: GpuRef,
    /// The checkpoint's MIG mode.
    enable: bool,
    targets: Vec<GiTarget<'m>>,
    /// GPU instances to destroy (none is busy).
    destroy: Vec<LiveInstance>,
    /// GPU instances at the right place whose compute instances are redone as `targets[i]`'s.
    rebuild: Vec<(LiveInstance, usize)>,
    /// `targets` to create.
    create: Vec<usize>,
}

/// A GPU instance's compute instances as `(profile id, start)`, sorted.
fn live_ci_key(i: &LiveInstance) -> Vec<(u32, u8)> {
    let mut v: Vec<(u32, u8)> = i.compute_instances.iter().map(|c| (c.profile_id, c.placement.start)).collect();
    v.sort_unstable();
    v
}

/// Plan every checkpointed GPU; all problems at once, and nothing changed when there is one.
fn plan_restore(
    backend: &dyn MigBackend,
    views: &[GpuView],
    state: &Checkpoint,
    origin: &str,
    mode_only: bool,
) -> anyhow::Result<Vec<GpuRestore<'static>>> {
    let mut plans = Vec::new();
    let mut errors = Vec::new();
    for (n, d) in state.devices.iter().enumerate() {
        let Some(v) = views.iter().find(|v| v.device.uuid == d.uuid) else {
            let have: Vec<&str> = views.iter().map(|v| v.device.uuid.as_str()).collect();
            errors.push(format!(
                "{origin}: MigState.Devices[{n}].UUID: this node has no GPU {} (it has {})",
                d.uuid,
                if have.is_empty() { "none".to_string() } else { have.join(", ") }
            ));
            continue;
        };
        let gpu = v.device.gpu_ref();
        if !mig_capable(backend, v.device.index)? {
            errors.push(format!("{gpu}: does not support MIG (MigState.Devices[{n}])"));
            continue;
        }
        let Some(model) = v.model else {
            errors.push(format!("{gpu} ({}): not in the GPU catalog", v.device.name));
            continue;
        };
        let targets = match restore_targets(origin, n, d, model) {
            Ok(t) => t,
            Err(e) => {
                errors.push(format!("{gpu}: {e}"));
                continue;
            }
        };
        if v.mig.current != d.mig_enabled || v.mig.pending != d.mig_enabled {
            match super::mode::busy_gpu(backend, gpu.clone()) {
                Ok(None) => {}
                Ok(Some(busy)) => errors.push(format!("cannot change the MIG mode: {busy}")),
                Err(e) => errors.push(format!("{gpu}: cannot list its processes: {e}")),
            }
        }
        let mut plan =
            GpuRestore { gpu, enable: d.mig_enabled, targets, destroy: vec![], rebuild: vec![], create: vec![] };
        if d.mig_enabled && !mode_only {
            let mut used = vec![false; plan.targets.len()];
            for live in &v.instances {
                let at = plan.targets.iter().enumerate().position(|(k, t)| {
                    !used[k] && t.profile.id == live.instance.profile_id && t.start == live.instance.start
                });
                match at {
                    Some(k) => {
                        used[k] = true;
                        if plan.targets[k].ci_key() != live_ci_key(live) {
                            plan.rebuild.push((live.clone(), k));
                        } else {
                            continue;
                        }
                    }
                    None => plan.destroy.push(live.clone()),
                }
                if live.busy {
                    errors.push(format!(
                        "{}: cannot change {}: {}",
                        plan.gpu,
                        live.label(),
                        super::mode::busy_instance_words(backend, live)
                    ));
                }
            }
            plan.create = (0..plan.targets.len()).filter(|k| !used[*k]).collect();
        }
        plans.push(plan);
    }
    if errors.is_empty() {
        Ok(plans)
    } else {
        Err(Refusal(format!("cannot restore from {origin}; nothing was changed:\n  {}", errors.join("\n  "))).into())
    }
}

/// The two phases of a restore, over plans made before either starts. `mode_applied` and
/// `config_applied` compare the node with the checkpoint, as mig-parted's restore does.
struct Restorer<'a> {
    backend: &'a dyn MigBackend,
    origin: &'a str,
    plans: &'a [GpuRestore<'static>],
    done: Vec<String>,
}

impl Restorer<'_> {
    fn mode_differs(&self, p: &GpuRestore<'_>) -> anyhow::Result<bool> {
        let mode = self.backend.mig_mode(p.gpu.index)?;
        Ok(mode.current != p.enable || mode.pending != p.enable)
    }

    /// A failure on one GPU, with what changed before it.
    fn failed(&self, gpu: &GpuRef, e: &anyhow::Error) -> anyhow::Error {
        let before = if self.done.is_empty() {
            "Nothing else was changed.".to_string()
        } else {
            format!("Changes made before it:\n  {}", self.done.join("\n  "))
        };
        Refusal(format!("restore from {} failed on {gpu}: {e:#}\n{before}", self.origin)).into()
    }

    /// Create `t`'s compute instances in GPU instance `gi_id`, in order, each checked to land
    /// where the checkpoint has it.
    fn create_cis(&self, gpu: u32, gi_id: u32, t: &GiTarget<'_>) -> anyhow::Result<()> {
        for c in &t.compute_instances {
            let made = self.backend.create_compute_instance(gpu, gi_id, c.profile.id)?;
            if made.placement.start != c.start {
                anyhow::bail!(
                    "compute instance profile {} in {}@{} landed at slice {}, not at {} as the checkpoint has it",
                    c.profile.id,
                    t.profile.name,
                    t.start,
                    made.placement.start,
                    c.start
                );
            }
        }
        Ok(())
    }

    fn restore_gpu(&mut self, p: &GpuRestore<'static>) -> anyhow::Result<()> {
        let gpu = p.gpu.index;
        for live in &p.destroy {
            for ci in &live.compute_instances {
                self.backend.destroy_compute_instance(gpu, live.gpu_instance_id, ci.id)?;
            }
            self.backend.destroy_gpu_instance(gpu, live.gpu_instance_id)?;
            self.done.push(format!("GPU {gpu}: destroyed {}", live.label()));
        }
        for (live, k) in &p.rebuild {
            for ci in &live.compute_instances {
                self.backend.destroy_compute_instance(gpu, live.gpu_instance_id, ci.id)?;
            }
            self.create_cis(gpu, live.gpu_instance_id, &p.targets[*k])?;
            self.done.push(format!("GPU {gpu}: recreated the compute instances of {}", live.label()));
        }
        for &k in &p.create {
            let t = &p.targets[k];
            let gi = self.backend.create_gpu_instance(gpu, t.profile.id, Some(t.start))?;
            self.done.push(format!("GPU {gpu}: created {}@{}", t.profile.name, t.start));
            self.create_cis(gpu, gi.id, t)?;
        }
        Ok(())
    }
}

/// A GPU's instances as `(profile id, start, compute instances)`, sorted.
type LayoutKey = Vec<(u32, u8, Vec<(u32, u8)>)>;

impl Applier for Restorer<'_> {
    fn mode_applied(&mut self) -> anyhow::Result<bool> {
        for p in self.plans {
            if self.mode_differs(p)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn apply_mode(&mut self) -> anyhow::Result<()> {
        let mut changes = Vec::new();
        for p in self.plans {
            if self.mode_differs(p)? {
                changes.push((p.gpu.index, p.enable));
            }
        }
        match super::mode::apply_modes(self.backend, &changes, false) {
            Ok(report) => {
                self.done.extend(report.lines());
                Ok(())
            }
            Err(e) => {
                let lines = e.report().map(super::mode::ModeReport::lines).unwrap_or_default();
                self.done.extend(lines.iter().cloned());
                let what = if lines.is_empty() { String::new() } else { format!("\n  {}", lines.join("\n  ")) };
                Err(Refusal(format!("restore from {}: {e}{what}", self.origin)).into())
            }
        }
    }

    fn config_applied(&mut self) -> anyhow::Result<bool> {
        for p in self.plans.iter().filter(|p| p.enable) {
            let v = gpu_view(self.backend, p.gpu.index)?;
            let mut have: LayoutKey =
                v.instances.iter().map(|i| (i.instance.profile_id, i.instance.start, live_ci_key(i))).collect();
            let mut want: LayoutKey = p.targets.iter().map(|t| (t.profile.id, t.start, t.ci_key())).collect();
            have.sort();
            want.sort();
            if have != want {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn apply_config(&mut self) -> anyhow::Result<()> {
        for p in self.plans.iter().filter(|p| p.enable) {
            if let Err(e) = self.restore_gpu(p) {
                return Err(self.failed(&p.gpu, &e));
            }
        }
        Ok(())
    }
}

/// The `MIG_PARTED_*` variable of each of `restore`'s flags, as mig-parted hands them to hooks.
fn restore_flags_env(args: &RestoreArgs) -> BTreeMap<String, String> {
    let path = |p: &Option<PathBuf>| p.as_ref().map_or_else(String::new, |p| p.display().to_string());
    [
        ("MIG_PARTED_CHECKPOINT_FILE", path(&args.checkpoint.file)),
        ("MIG_PARTED_HOOKS_FILE", path(&args.hooks_file)),
        ("MIG_PARTED_MODE_CHANGE_ONLY", args.mode_only.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// `restore -f FILE [-k HOOKS] [-m]`: make the node's checkpointed GPUs as the file has them.
pub fn restore(global: &Global, args: &RestoreArgs, voice: Voice) -> anyhow::Result<()> {
    let path = checkpoint_file(&args.checkpoint)?;
    let origin = path.display().to_string();
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading the checkpoint file {}", path.display()))?;
    let state = tessera_migparted::parse_checkpoint(&text, &origin)?;
    let hooks = Hooks::load(args.hooks_file.as_deref(), restore_flags_env(args), voice.debug(global))?;
    let node = node::open(global)?;
    let backend = node.backend();
    let views = node_view(backend)?;
    let plans = plan_restore(backend, &views, &state, &origin, args.mode_only)?;
    let mut restorer = Restorer { backend, origin: &origin, plans: &plans, done: Vec::new() };
    apply_with_hooks(&hooks, args.mode_only, &mut restorer)?;
    let done = restorer.done;
    match voice {
        Voice::MigParted { .. } => println!("MIG configuration restored successfully"),
        Voice::Tessera if human(global.output) => {
            for line in &done {
                println!("{line}");
            }
            if done.is_empty() {
                println!("Nothing to change: the node already matches {origin}.");
            } else {
                println!("Restored the MIG state of {} GPU(s) from {origin}.", plans.len());
            }
        }
        Voice::Tessera => print_json(&serde_json::to_value(RestoreReply {
            checkpoint_file: path.to_path_buf(),
            gpus: state.devices.iter().map(|d| d.uuid.clone()).collect(),
            done,
        })?),
    }
    Ok(())
}
