//! `tessera mig apply|assert`: mig-parted's config workflow, made incremental.
//!
//! mig-parted wipes every instance on a GPU whose layout differs and retries creation orders
//! (NVIDIA/mig-parted#119). Here every selected GPU is planned first, with explicit placements
//! and without touching busy instances; only if every GPU can be planned does anything change,
//! and then only what differs. A failed step is rolled back on its GPU, and the report says
//! exactly what changed. Which GPUs a config covers follows mig-parted (`docs/mig-parted.md`):
//! indices the node lacks are skipped with a note, assert fails on a GPU no entry selects, and
//! apply leaves such a GPU as it is. So do its arguments: `-f -`, `-c` implied by a one-config
//! file, `--mode-only`, `assert --valid-config`.

use std::collections::BTreeMap;

use anyhow::Context as _;
use serde_json::json;
use tessera_gpu::MigBackend;
use tessera_gpu::executor::execute_plan;
use tessera_gpu::view::{GpuView, node_view};
use tessera_mig::layout::{device_type_name, instance_label};
use tessera_mig::{GpuModel, ReconfigurePlan, Step, Wanted, reconfigure};
use tessera_migparted::{DeviceSummary, DeviceTarget, MigConfigFile, Resolution};

use super::hooks::{Applier, Hooks, apply_with_hooks};
use super::{human, print_json};
use crate::Refusal;
use crate::cli::{ApplyArgs, ConfigArgs, Global};
use crate::node;

/// What one GPU needs.
#[derive(Debug)]
struct GpuPlan {
    index: u32,
    model: Option<&'static GpuModel>,
    enable_mig: Option<bool>,
    plan: Option<ReconfigurePlan>,
    disable_after: bool,
}

impl GpuPlan {
    fn is_noop(&self) -> bool {
        self.enable_mig.is_none() && !self.disable_after && self.plan.as_ref().is_none_or(ReconfigurePlan::is_empty)
    }
}

/// The config file (`-f -`: standard input, as mig-parted reads it), where it came from, and
/// the selected config's name: `-c`, else the file's only config, as mig-parted selects it.
fn load(args: &ConfigArgs) -> anyhow::Result<(MigConfigFile, String, String)> {
    let (file, origin) = match &args.file {
        Some(path) if path.as_os_str() == "-" => {
            let origin = "standard input".to_string();
            let text = std::io::read_to_string(std::io::stdin()).context("reading the config from standard input")?;
            (tessera_migparted::parse(&text, &origin)?, origin)
        }
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let origin = path.display().to_string();
            (tessera_migparted::parse(&text, &origin)?, origin)
        }
        None => (tessera_migparted::builtin_config(), "built-in configs".into()),
    };
    let name = match (&args.name, file.configs.keys().collect::<Vec<_>>().as_slice()) {
        (Some(name), _) => name.clone(),
        (None, [only]) => (*only).clone(),
        (None, names) => {
            let shown: Vec<&str> = names.iter().take(6).map(|n| n.as_str()).collect();
            let more = if names.len() > shown.len() { ", …" } else { "" };
            anyhow::bail!(
                "-c/--selected-config (or MIG_PARTED_SELECTED_CONFIG) is required: {origin} holds {} configs ({}{more})",
                names.len(),
                shown.join(", ")
            )
        }
    };
    Ok((file, origin, name))
}

/// Resolve the selected config on the node; GPU indices the config names but the node lacks are
/// skipped as mig-parted skips them, with a note on stderr naming them.
fn resolve(file: &MigConfigFile, name: &str, views: &[GpuView]) -> anyhow::Result<Resolution> {
    let r = tessera_migparted::resolve_node(file, name, &summaries(views))?;
    if !r.absent.is_empty() {
        eprintln!(
            "tessera: config '{name}' names GPU(s) {} that this node lacks; skipped, as mig-parted does",
            index_list(&r.absent)
        );
    }
    Ok(r)
}

fn index_list(indices: &[u32]) -> String {
    indices.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

pub(super) fn summaries(views: &[GpuView]) -> Vec<DeviceSummary> {
    views
        .iter()
        .map(|v| DeviceSummary {
            index: v.device.index,
            pci_device_id: v.device.pci_device_id,
            pci_subsystem_id: v.device.pci_subsystem_id,
            model: v.model,
        })
        .collect()
}

fn step_line(m: &GpuModel, s: &Step) -> String {
    match s {
        Step::Destroy { instance, gpu_instance_id } => match gpu_instance_id {
            Some(id) => format!("destroy {} (GPU instance {id})", instance_label(m, instance)),
            None => format!("destroy {}", instance_label(m, instance)),
        },
        Step::Create { instance } => {
            let p = m.profile_by_id(instance.profile_id);
            format!(
                "create  {} at {}:{}",
                p.map_or_else(|| instance.profile_id.to_string(), |p| device_type_name(p, instance.compute)),
                instance.start,
                p.map_or(0, |p| p.placement_size)
            )
        }
    }
}

/// Why a GPU cannot be planned: the planner's reason, and for busy instances in the way, the
/// processes that use them ([`super::mode::busy_instance_words`]).
fn reconfigure_refusal(backend: &dyn MigBackend, v: &GpuView, e: &tessera_mig::ReconfigureError) -> String {
    let tessera_mig::ReconfigureError::BusyInstancesBlock { blockers, .. } = e else { return e.to_string() };
    let users: Vec<String> = blockers
        .iter()
        .filter_map(|b| v.instances.iter().find(|i| Some(i.gpu_instance_id) == b.gpu_instance_id && i.busy))
        .map(|i| super::mode::busy_instance_words(backend, i))
        .collect();
    if users.is_empty() { e.to_string() } else { format!("{e}; {}", users.join("; ")) }
}

/// Plan every targeted GPU; collect every failure rather than stopping at the first.
/// With `mode_only`, a GPU whose config enables MIG gets only the mode, not its MIG devices.
/// A GPU whose MIG mode must change while processes use it is refused here, naming them, so
/// nothing (not even a hook) runs ([`super::mode::busy_gpu`], the check `apply_modes` makes).
fn plan_all(
    backend: &dyn MigBackend,
    views: &[GpuView],
    targets: &[DeviceTarget],
    mode_only: bool,
) -> Result<Vec<GpuPlan>, Vec<String>> {
    let mut plans: Vec<GpuPlan> = Vec::new();
    let mut errors = Vec::new();
    for t in targets {
        let Some(v) = views.iter().find(|v| v.device.index == t.index) else {
            errors.push(format!("GPU {}: not on this node", t.index));
            continue;
        };
        let Some(m) = v.model else {
            errors.push(format!("GPU {} ({}): not in the GPU catalog", t.index, v.device.name));
            continue;
        };
        let current = v.current();
        if t.mig_enabled && mode_only {
            let enable = (!v.mig.current || !v.mig.pending).then_some(true);
            plans.push(GpuPlan {
                index: t.index,
                model: Some(m),
                enable_mig: enable,
                plan: None,
                disable_after: false,
            });
        } else if t.mig_enabled {
            let enable = (!v.mig.current || !v.mig.pending).then_some(true);
            match reconfigure(m, &current, &Wanted::Profiles(t.wanted.clone())) {
                Ok(plan) => plans.push(GpuPlan {
                    index: t.index,
                    model: Some(m),
                    enable_mig: enable,
                    plan: Some(plan),
                    disable_after: false,
                }),
                Err(e) => errors.push(format!("GPU {} ({}): {}", t.index, m.name, reconfigure_refusal(backend, v, &e))),
            }
        } else if v.mig.current || v.mig.pending {
            match reconfigure(m, &current, &Wanted::Layout(Vec::new())) {
                Ok(plan) => plans.push(GpuPlan {
                    index: t.index,
                    model: Some(m),
                    enable_mig: None,
                    plan: Some(plan),
                    disable_after: true,
                }),
                Err(e) => errors.push(format!(
                    "GPU {} ({}): cannot disable MIG: {}",
                    t.index,
                    m.name,
                    reconfigure_refusal(backend, v, &e)
                )),
            }
        } else {
            plans.push(GpuPlan { index: t.index, model: Some(m), enable_mig: None, plan: None, disable_after: false });
        }
        if let Some(p) = plans.last().filter(|p| p.index == t.index && mode_changes(p)) {
            match super::mode::busy_gpu(backend, v.device.gpu_ref()) {
                Ok(None) => {}
                Ok(Some(busy)) => errors.push(format!("GPU {}: cannot change its MIG mode: {busy}", p.index)),
                Err(e) => errors.push(format!("GPU {}: cannot list its processes: {e}", p.index)),
            }
        }
    }
    if errors.is_empty() { Ok(plans) } else { Err(errors) }
}

fn plan_json(p: &GpuPlan) -> serde_json::Value {
    let steps: Vec<String> = match (p.model, &p.plan) {
        (Some(m), Some(plan)) => plan.steps.iter().map(|s| step_line(m, s)).collect(),
        _ => Vec::new(),
    };
    json!({
        "gpu": p.index,
        "model": p.model.map(|m| m.name.clone()),
        "enable_mig": p.enable_mig == Some(true),
        "disable_mig": p.disable_after,
        "steps": steps,
        "target": p.model.zip(p.plan.as_ref()).map(|(m, plan)| plan.target.iter().map(|i| instance_label(m, i)).collect::<Vec<_>>()),
        "unchanged": p.plan.as_ref().map_or(0, |plan| plan.unchanged.len()),
    })
}

/// The plan of one GPU in a few lines: steps of one kind and profile share a line.
fn plan_lines(p: &GpuPlan) -> Vec<String> {
    let mut lines = Vec::new();
    if p.is_noop() {
        return vec!["already as configured".to_string()];
    }
    if p.enable_mig == Some(true) {
        lines.push("enable MIG mode".to_string());
    }
    if let (Some(m), Some(plan)) = (p.model, &p.plan) {
        // (verb, profile name) -> placements, in step order.
        let mut groups: Vec<((&str, String), Vec<String>)> = Vec::new();
        for s in &plan.steps {
            let (verb, inst, gi) = match s {
                Step::Destroy { instance, gpu_instance_id } => ("destroy", instance, *gpu_instance_id),
                Step::Create { instance } => ("create ", instance, None),
            };
            let prof = m.profile_by_id(inst.profile_id);
            let name = prof.map_or_else(|| inst.profile_id.to_string(), |p| device_type_name(p, inst.compute));
            let size = prof.map_or(0, |p| p.placement_size);
            let at = match gi {
                Some(id) => format!("{}:{size} (GI {id})", inst.start),
                None => format!("{}:{size}", inst.start),
            };
            match groups.last_mut() {
                Some((key, v)) if key.0 == verb && key.1 == name => v.push(at),
                _ => groups.push(((verb, name), vec![at])),
            }
        }
        for ((verb, name), at) in groups {
            let count = if at.len() > 1 { format!("{}× ", at.len()) } else { String::new() };
            lines.push(format!("{verb} {count}{name} at {}", at.join(", ")));
        }
        if !plan.unchanged.is_empty() {
            let kept: Vec<String> = plan.unchanged.iter().map(|i| instance_label(m, i)).collect();
            lines.push(format!("keep    {}", kept.join(" ")));
        }
    }
    if p.disable_after {
        lines.push("disable MIG mode".to_string());
    }
    lines
}

/// Print every GPU's plan; neighbouring GPUs with the same model and plan share one heading.
fn print_plans(plans: &[GpuPlan], out: &mut dyn std::io::Write) {
    let mut i = 0;
    while i < plans.len() {
        let lines = plan_lines(&plans[i]);
        let model = plans[i].model.map(|m| m.name.as_str());
        let mut j = i;
        while j + 1 < plans.len()
            && plans[j + 1].index == plans[j].index + 1
            && plans[j + 1].model.map(|m| m.name.as_str()) == model
            && plan_lines(&plans[j + 1]) == lines
        {
            j += 1;
        }
        let gpus = if i == j {
            format!("GPU {}", plans[i].index)
        } else {
            format!("GPUs {}-{}", plans[i].index, plans[j].index)
        };
        let model = model.unwrap_or("?");
        if let [one] = lines.as_slice() {
            let _ = writeln!(out, "{gpus} ({model}): {one}");
        } else {
            let _ = writeln!(out, "{gpus} ({model}):");
            for l in &lines {
                let _ = writeln!(out, "  {l}");
            }
        }
        i = j + 1;
    }
}

/// Whose words a command speaks: Tessera's own (`tessera mig …`), or mig-parted's
/// (`nvidia-mig-parted …`: its success lines on stdout, the rest on stderr only with `debug`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Voice {
    Tessera,
    MigParted { debug: bool },
}

impl Voice {
    /// Whether hooks' output and progress are shown: `-v` for Tessera, `-d` for mig-parted.
    pub(super) fn debug(self, global: &Global) -> bool {
        match self {
            Voice::Tessera => global.verbose,
            Voice::MigParted { debug } => debug,
        }
    }
}

/// The `MIG_PARTED_*` variable of each of `apply`'s flags with its value, as mig-parted gives
/// them to hooks (its `GetHooksEnvsMap`: every flag with a variable, `%v`-formatted; the selected
/// config is the one in effect, also when the file's only config implies it).
fn apply_flags_env(args: &ApplyArgs, name: &str) -> BTreeMap<String, String> {
    let path = |p: &Option<std::path::PathBuf>| p.as_ref().map_or_else(String::new, |p| p.display().to_string());
    [
        ("MIG_PARTED_CONFIG_FILE", path(&args.config.file)),
        ("MIG_PARTED_SELECTED_CONFIG", name.to_string()),
        ("MIG_PARTED_HOOKS_FILE", path(&args.hooks_file)),
        ("MIG_PARTED_SKIP_RESET", args.skip_reset.to_string()),
        ("MIG_PARTED_MODE_CHANGE_ONLY", args.config.mode_only.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The two phases of an apply over plans made before either starts.
struct PlannedApply<'a> {
    backend: &'a dyn MigBackend,
    name: &'a str,
    plans: &'a [GpuPlan],
    /// What changed so far, `GPU n: …`, for the report and for a failure's message.
    done: Vec<String>,
    /// Leave a MIG-mode change that needs a GPU reset pending (`--skip-reset`).
    skip_reset: bool,
}

impl PlannedApply<'_> {
    /// Run `step` on each GPU of `gpus`; a failure names the GPU and what changed before it.
    fn each(
        &mut self,
        gpus: impl Fn(&GpuPlan) -> bool,
        step: impl Fn(&dyn MigBackend, &GpuPlan) -> anyhow::Result<Vec<String>>,
    ) -> anyhow::Result<()> {
        for p in self.plans.iter().filter(|p| gpus(p)) {
            match step(self.backend, p) {
                Ok(lines) => self.done.extend(lines.into_iter().map(|l| format!("GPU {}: {l}", p.index))),
                Err(e) => {
                    let before = if self.done.is_empty() {
                        "No other GPU was changed.".to_string()
                    } else {
                        format!("Changes that remain on GPUs done before it:\n  {}", self.done.join("\n  "))
                    };
                    return Err(
                        Refusal(format!("apply '{}' failed on GPU {}: {e:#}\n{before}", self.name, p.index)).into()
                    );
                }
            }
        }
        Ok(())
    }
}

/// A GPU whose MIG mode changes: MIG enabled, or its instances destroyed and MIG disabled.
fn mode_changes(p: &GpuPlan) -> bool {
    p.enable_mig.is_some() || p.disable_after
}

/// A GPU whose MIG devices change (one being disabled is the mode phase's).
fn config_changes(p: &GpuPlan) -> bool {
    !p.disable_after && p.plan.as_ref().is_some_and(|plan| !plan.is_empty())
}

impl Applier for PlannedApply<'_> {
    fn mode_applied(&mut self) -> anyhow::Result<bool> {
        Ok(!self.plans.iter().any(mode_changes))
    }

    /// The mode phase is [`super::mode::apply_modes`]: busy GPUs refused before any change,
    /// instances cleared before MIG is turned off, pending changes reset after every mode is set.
    fn apply_mode(&mut self) -> anyhow::Result<()> {
        let changes: Vec<(u32, bool)> =
            self.plans.iter().filter(|p| mode_changes(p)).map(|p| (p.index, !p.disable_after)).collect();
        match super::mode::apply_modes(self.backend, &changes, self.skip_reset) {
            Ok(report) => {
                if report.pending() {
                    for line in report.lines().iter().filter(|l| l.contains(" is pending: ")) {
                        eprintln!("tessera: {line}");
                    }
                }
                self.done.extend(report.lines());
                Ok(())
            }
            Err(e) => {
                let lines = e.report().map(super::mode::ModeReport::lines).unwrap_or_default();
                self.done.extend(lines.iter().cloned());
                let what = if lines.is_empty() { String::new() } else { format!("\n  {}", lines.join("\n  ")) };
                Err(Refusal(format!("apply '{}': {e}{what}", self.name)).into())
            }
        }
    }

    fn config_applied(&mut self) -> anyhow::Result<bool> {
        Ok(!self.plans.iter().any(config_changes))
    }

    fn apply_config(&mut self) -> anyhow::Result<()> {
        // A MIG-mode change left pending (`--skip-reset`, or a refused reset) means no MIG
        // device can be made yet; mig-parted fails there too ("error asserting MIG enabled").
        let waiting: Vec<u32> = self
            .plans
            .iter()
            .filter(|p| config_changes(p))
            .filter(|p| self.backend.mig_mode(p.index).is_ok_and(|m| !m.current))
            .map(|p| p.index)
            .collect();
        if !waiting.is_empty() {
            return Err(Refusal(format!(
                "apply '{}': MIG is not enabled yet on GPU(s) {} (the mode change waits for a GPU reset), so \
                 their MIG devices cannot be made; apply again without --skip-reset, or reset the GPU(s) or \
                 reboot, then apply",
                self.name,
                index_list(&waiting)
            ))
            .into());
        }
        self.each(config_changes, |backend, p| match &p.plan {
            Some(plan) => Ok(execute_plan(backend, p.index, plan)?.steps_done),
            None => Ok(Vec::new()),
        })
    }
}

/// `mig apply` (and `nvidia-mig-parted apply`): plan every selected GPU of both phases, refuse
/// before anything runs if one cannot be planned, then run the phases between the hooks.
pub fn apply(global: &Global, args: &ApplyArgs, dry_run: bool, voice: Voice) -> anyhow::Result<()> {
    let (file, origin, name) = load(&args.config)?;
    let debug = voice.debug(global);
    // Read (and so checked) on a dry run too, where no hook runs.
    let hooks = Hooks::load(args.hooks_file.as_deref(), apply_flags_env(args, &name), debug)?;
    let node = node::open(global)?;
    let backend = node.backend();
    let views = node_view(backend)?;
    let Resolution { targets, unmatched, .. } = resolve(&file, &name, &views)?;
    // mig-parted's apply walks only the GPUs an entry selects and leaves the others as they are;
    // so does this one, saying so (its assert then fails on them).
    if !unmatched.is_empty() {
        eprintln!(
            "tessera: no entry of '{}' selects GPU(s) {}; left as they are (`mig assert` fails on them)",
            name,
            index_list(&unmatched)
        );
    }
    let plans = match plan_all(backend, &views, &targets, args.config.mode_only) {
        Ok(p) => p,
        Err(errors) => {
            return Err(Refusal(format!(
                "cannot apply '{}' from {origin}; nothing was changed:\n  {}",
                name,
                errors.join("\n  ")
            ))
            .into());
        }
    };
    let heading =
        format!("{} '{}' from {origin} on {}:", if dry_run { "Plan for" } else { "Applying" }, name, node.description);
    match voice {
        Voice::Tessera if human(global.output) => {
            println!("{heading}");
            print_plans(&plans, &mut std::io::stdout().lock());
        }
        Voice::MigParted { debug: true } => {
            eprintln!("{heading}");
            print_plans(&plans, &mut std::io::stderr().lock());
        }
        _ => {}
    }
    if dry_run {
        if !human(global.output) {
            print_json(
                &json!({"config": name, "dry_run": true, "gpus": plans.iter().map(plan_json).collect::<Vec<_>>()}),
            );
        }
        return Ok(());
    }
    let mut applier =
        PlannedApply { backend, name: &name, plans: &plans, done: Vec::new(), skip_reset: args.skip_reset };
    apply_with_hooks(&hooks, args.config.mode_only, &mut applier)?;
    let done = applier.done;
    match voice {
        Voice::MigParted { .. } => println!("MIG configuration applied successfully"),
        Voice::Tessera if human(global.output) => {
            if done.is_empty() {
                println!("Nothing to change: the node already matches '{}'.", name);
            } else {
                let created = done.iter().filter(|l| l.contains(": created ")).count();
                let destroyed = done.iter().filter(|l| l.contains(": destroyed ")).count();
                println!(
                    "Applied: {created} GPU instance(s) created, {destroyed} destroyed, on {} GPU(s). \
                     `tessera mig gpus` shows the result.",
                    plans.iter().filter(|p| !p.is_noop()).count()
                );
            }
        }
        Voice::Tessera => print_json(
            &json!({"config": name, "dry_run": false, "gpus": plans.iter().map(plan_json).collect::<Vec<_>>(), "done": done}),
        ),
    }
    Ok(())
}

/// Device types on a GPU as mig-parted counts them: `{"1g.10gb": 2, "3g.40gb": 1}`, each
/// spelled as `tessera mig gpus` shows it ([`super::device_type`]).
fn device_types(v: &GpuView) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for i in &v.instances {
        *out.entry(super::device_type(v, i)).or_insert(0) += 1;
    }
    out
}

/// `valid_config`: only the file and the selected config's presence, as mig-parted's
/// `--valid-config`. `args.mode_only`: only the MIG mode of the GPUs the config selects (mig-parted
/// asks no coverage of the node then).
pub fn assert(global: &Global, args: &ConfigArgs, valid_config: bool, voice: Voice) -> anyhow::Result<()> {
    let (file, origin, name) = load(args)?;
    if valid_config {
        // On a node of no GPUs, only the config's presence (and the file's form) is checked.
        tessera_migparted::resolve_node(&file, &name, &[])?;
        if let Voice::MigParted { .. } = voice {
            println!("Selected MIG configuration is valid");
        } else if human(global.output) {
            println!("The selected config '{name}' in {origin} is valid.");
        } else {
            print_json(&json!({"config": name, "valid": true}));
        }
        return Ok(());
    }
    let node = node::open(global)?;
    let views = node_view(node.backend())?;
    let Resolution { targets, unmatched, .. } = resolve(&file, &name, &views)?;
    // mig-parted's assert requires every GPU of the node to be matched by an entry (not with
    // --mode-only, which walks only the GPUs the config selects).
    let mut differences: Vec<(u32, String)> = if args.mode_only {
        Vec::new()
    } else {
        unmatched
            .iter()
            .map(|&i| (i, format!("GPU {i}: no entry of '{name}' selects it (every GPU must be matched)")))
            .collect()
    };
    for t in &targets {
        let Some(v) = views.iter().find(|v| v.device.index == t.index) else { continue };
        if v.mig.current != t.mig_enabled {
            differences.push((
                t.index,
                format!(
                    "GPU {}: MIG mode is {} but the config wants it {}",
                    t.index,
                    v.mig,
                    if t.mig_enabled { "enabled" } else { "disabled" }
                ),
            ));
            continue;
        }
        if !t.mig_enabled || args.mode_only {
            continue;
        }
        let mut want: BTreeMap<String, u32> = BTreeMap::new();
        if let Some(m) = t.model {
            for w in &t.wanted {
                if let Some(p) = m.profile_by_id(w.profile_id) {
                    *want.entry(device_type_name(p, w.compute)).or_insert(0) += 1;
                }
            }
        }
        let have = device_types(v);
        if have != want {
            let fmt = |m: &BTreeMap<String, u32>| {
                if m.is_empty() {
                    "nothing".to_string()
                } else {
                    m.iter().map(|(k, n)| format!("{n}×{k}")).collect::<Vec<_>>().join(", ")
                }
            };
            differences
                .push((t.index, format!("GPU {}: has {} but the config wants {}", t.index, fmt(&have), fmt(&want))));
        }
    }
    differences.sort();
    let differences: Vec<String> = differences.into_iter().map(|(_, d)| d).collect();
    if let Voice::MigParted { .. } = voice {
        // mig-parted's lines (`cmd/nvidia-mig-parted/assert/assert.go`); the differences before.
        if differences.is_empty() {
            println!(
                "{}",
                if args.mode_only {
                    "Selected MIG mode settings from configuration currently applied"
                } else {
                    "Selected MIG configuration currently applied"
                }
            );
            return Ok(());
        }
        eprintln!("The node does not match '{}' from {origin}:\n  {}", name, differences.join("\n  "));
        return Err(Refusal("Assertion failure: selected configuration not currently applied".to_string()).into());
    }
    if !human(global.output) {
        print_json(&json!({"config": name, "matches": differences.is_empty(), "differences": differences}));
    }
    if differences.is_empty() {
        if human(global.output) {
            println!("The node matches '{}' from {origin} ({} GPU(s) checked).", name, targets.len());
        }
        Ok(())
    } else {
        Err(Refusal(format!("The node does not match '{}' from {origin}:\n  {}", name, differences.join("\n  ")))
            .into())
    }
}
