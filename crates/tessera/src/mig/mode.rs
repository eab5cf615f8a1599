//! MIG-mode changes for `mig apply` and `mig restore`, in mig-parted's order
//! (`cmd/nvidia-mig-parted/apply/mode.go`): every GPU to change is checked for processes
//! **before any GPU changes** (a refusal names each process and its GPU); then, GPU by GPU, the
//! instances of a GPU whose MIG is turned off are cleared, and the mode is set; last, the GPUs
//! whose change stays pending (Ampere: until a GPU reset) are reset, unless `skip_reset`. A
//! reset that is refused leaves the change pending, and the report says so per GPU, with what
//! to do. Unlike mig-parted, which resets every GPU of the node (`nvidia-smi -r`), only the GPUs
//! with a pending change are reset, through [`MigBackend::reset_gpu`].

use std::fmt;

use serde::Serialize;
use tessera_gpu::{BackendError, GpuRef, MigBackend, MigMode, ProcessInfo};

/// What happened to one GPU's MIG mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModeOutcome {
    /// It already was the wanted mode.
    Unchanged,
    /// The mode changed without a reset.
    Changed,
    /// The mode changed at the GPU reset that followed.
    ChangedByReset,
    /// The change waits for a GPU reset (or a reboot); `reason` says why and what to do.
    Pending { reason: String },
}

/// One GPU's mode change.
#[derive(Debug, Clone, Serialize)]
pub struct GpuMode {
    pub gpu: u32,
    pub uuid: Option<String>,
    pub enabled: bool,
    /// The mode after the change (`current` and `pending`).
    pub mode: MigMode,
    pub outcome: ModeOutcome,
    /// GPU instances destroyed before MIG was turned off, labelled (`3g.40gb@4`).
    pub cleared: Vec<String>,
}

/// Every GPU's mode change, in the order asked.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ModeReport {
    pub gpus: Vec<GpuMode>,
}

impl ModeReport {
    /// Whether some GPU's change is still pending.
    pub fn pending(&self) -> bool {
        self.gpus.iter().any(|g| matches!(g.outcome, ModeOutcome::Pending { .. }))
    }

    /// One line per GPU that changed or waits, as `tessera mig apply` prints them.
    pub fn lines(&self) -> Vec<String> {
        let word = |on: bool| if on { "enabled" } else { "disabled" };
        let mut out = Vec::new();
        for g in &self.gpus {
            for c in &g.cleared {
                out.push(format!("GPU {}: destroyed {c} (MIG is turned off)", g.gpu));
            }
            match &g.outcome {
                ModeOutcome::Unchanged => {}
                ModeOutcome::Changed => out.push(format!("GPU {}: {} MIG mode", g.gpu, word(g.enabled))),
                ModeOutcome::ChangedByReset => {
                    out.push(format!("GPU {}: {} MIG mode (the GPU was reset)", g.gpu, word(g.enabled)))
                }
                ModeOutcome::Pending { reason } => {
                    out.push(format!("GPU {}: MIG mode {} is pending: {reason}", g.gpu, word(g.enabled)))
                }
            }
        }
        out
    }
}

/// A GPU that processes use, with them.
#[derive(Debug, Clone)]
pub struct BusyGpu {
    pub gpu: GpuRef,
    pub processes: Vec<ProcessInfo>,
    /// Each process's user, where known (same order).
    pub users: Vec<Option<String>>,
}

impl fmt::Display for BusyGpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is used by {}", self.gpu, process_words(&self.processes, &self.users))
    }
}

/// How every refusal names processes (one place): `pid 4711 (python, user bob), pid 12 (x)`;
/// `users` in the same order, each where known.
pub fn process_words(processes: &[ProcessInfo], users: &[Option<String>]) -> String {
    processes
        .iter()
        .enumerate()
        .map(|(i, p)| match users.get(i).and_then(Option::as_ref) {
            Some(u) => format!("pid {} ({}, user {u})", p.pid, p.name),
            None => format!("pid {} ({})", p.pid, p.name),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The processes that use `gpu` (with their users), `None` when none does: what keeps its MIG
/// mode from changing. `apply_modes` asks it of every GPU to change, and `apply` and `restore`
/// ask it while they plan, so a refusal comes before anything (a hook included) runs.
pub fn busy_gpu(backend: &dyn MigBackend, gpu: GpuRef) -> Result<Option<BusyGpu>, BackendError> {
    let processes = backend.processes(gpu.index)?;
    if processes.is_empty() {
        return Ok(None);
    }
    let users = processes.iter().map(|p| user_of(backend, p.pid)).collect();
    Ok(Some(BusyGpu { gpu, processes, users }))
}

/// A busy GPU instance as a refusal names it: `3g.40gb@4 (GPU instance 2) is used by pid 4242
/// (python)`.
pub fn busy_instance_words(backend: &dyn MigBackend, instance: &tessera_gpu::view::LiveInstance) -> String {
    let users: Vec<Option<String>> = instance.processes.iter().map(|p| user_of(backend, p.pid)).collect();
    let who = if instance.processes.is_empty() {
        "a process".to_string()
    } else {
        process_words(&instance.processes, &users)
    };
    format!("{} (GPU instance {}) is used by {who}", instance.label(), instance.gpu_instance_id)
}

fn busy_list(busy: &[BusyGpu]) -> String {
    busy.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// Why the MIG modes could not be set as asked.
#[derive(Debug, thiserror::Error)]
pub enum ModeError {
    /// Processes use a GPU whose mode must change: nothing was changed on any GPU.
    #[error(
        "cannot change the MIG mode while processes use the GPU; nothing was changed on any GPU: {}; stop them and \
         apply again",
        busy_list(.busy)
    )]
    Busy { busy: Vec<BusyGpu> },
    /// A backend call failed on a GPU; `report` has what was done before it.
    #[error("GPU {gpu}: {doing}: {source}")]
    Backend {
        gpu: u32,
        doing: String,
        #[source]
        source: Box<BackendError>,
        report: Box<ModeReport>,
    },
    /// A GPU's change needs a reset that failed: the change is pending on the GPUs `report` names.
    #[error("the MIG mode change is pending on GPU(s) {}: a GPU reset is needed and failed", gpu_list(.report))]
    ResetFailed { report: Box<ModeReport> },
}

fn gpu_list(r: &ModeReport) -> String {
    r.gpus
        .iter()
        .filter(|g| matches!(g.outcome, ModeOutcome::Pending { .. }))
        .map(|g| g.gpu.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl ModeError {
    /// What was done before the failure (empty for [`ModeError::Busy`]).
    pub fn report(&self) -> Option<&ModeReport> {
        match self {
            ModeError::Busy { .. } => None,
            ModeError::Backend { report, .. } | ModeError::ResetFailed { report } => Some(report.as_ref()),
        }
    }
}

/// The user running `pid`, where the backend's pids are this host's (NVML); `None` otherwise.
fn user_of(backend: &dyn MigBackend, pid: u32) -> Option<String> {
    if backend.kind() != tessera_gpu::BackendKind::Nvml {
        return None;
    }
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(format!("/proc/{pid}")).ok()?);
    Some(tessera_host::users::user_name(uid))
}

/// Set each `(gpu, enabled)` MIG mode; see the module header for the order. `skip_reset`:
/// leave a change that needs a reset pending (mig-parted's `--skip-reset`), reported, not an
/// error. A GPU whose change stays pending after a refused or failed reset makes it
/// [`ModeError::ResetFailed`].
pub fn apply_modes(
    backend: &dyn MigBackend,
    changes: &[(u32, bool)],
    skip_reset: bool,
) -> Result<ModeReport, ModeError> {
    let fail = |gpu: u32, doing: &str, source: BackendError, report: &ModeReport| ModeError::Backend {
        gpu,
        doing: doing.to_string(),
        source: Box::new(source),
        report: Box::new(report.clone()),
    };
    let mut report = ModeReport::default();
    // 1. Read every GPU; refuse before any change if one to change is in use.
    let devices = backend.devices_partial().map_err(|e| fail(0, "list the GPUs", e, &report))?;
    let gpu_ref =
        |gpu: u32| devices.iter().find_map(|d| d.as_ref().ok().filter(|d| d.index == gpu).map(|d| d.gpu_ref()));
    let mut before = Vec::new();
    let mut busy = Vec::new();
    for &(gpu, enabled) in changes {
        let mode = backend.mig_mode(gpu).map_err(|e| fail(gpu, "read its MIG mode", e, &report))?;
        let needed = mode.current != enabled || mode.pending != enabled;
        if needed {
            let gref = gpu_ref(gpu).unwrap_or_else(|| GpuRef::index(gpu));
            if let Some(b) = busy_gpu(backend, gref).map_err(|e| fail(gpu, "list its processes", e, &report))? {
                busy.push(b);
            }
        }
        before.push((gpu, enabled, mode, needed));
    }
    if !busy.is_empty() {
        return Err(ModeError::Busy { busy });
    }
    // 2. Clear what turning MIG off needs cleared, then set each mode.
    let mut to_reset = Vec::new();
    for (gpu, enabled, mode, needed) in before {
        let uuid = gpu_ref(gpu).and_then(|g| g.uuid);
        if !needed {
            report.gpus.push(GpuMode { gpu, uuid, enabled, mode, outcome: ModeOutcome::Unchanged, cleared: vec![] });
            continue;
        }
        let mut cleared = Vec::new();
        if !enabled && mode.current {
            cleared = clear_gpu(backend, gpu).map_err(|e| fail(gpu, "clear its MIG devices", e, &report))?;
        }
        let after = backend.set_mig_mode(gpu, enabled).map_err(|e| fail(gpu, "set its MIG mode", e, &report))?;
        let outcome = if after.current == enabled {
            ModeOutcome::Changed
        } else {
            to_reset.push(report.gpus.len());
            ModeOutcome::Pending { reason: pending_hint(gpu, skip_reset) }
        };
        report.gpus.push(GpuMode { gpu, uuid, enabled, mode: after, outcome, cleared });
    }
    if skip_reset || to_reset.is_empty() {
        return Ok(report);
    }
    // 3. mig-parted resets after every mode is set.
    let mut failed = false;
    for i in to_reset {
        let gpu = report.gpus[i].gpu;
        let enabled = report.gpus[i].enabled;
        let result = backend.reset_gpu(gpu).and_then(|()| backend.mig_mode(gpu));
        match result {
            Ok(mode) if mode.current == enabled => {
                report.gpus[i].mode = mode;
                report.gpus[i].outcome = ModeOutcome::ChangedByReset;
            }
            Ok(mode) => {
                failed = true;
                report.gpus[i].mode = mode;
                report.gpus[i].outcome =
                    ModeOutcome::Pending { reason: format!("the GPU was reset but its MIG mode is still {mode}") };
            }
            Err(e) => {
                failed = true;
                let todo = match e {
                    BackendError::NotSupported { .. } => "this platform cannot reset the GPU; reboot the node (or VM)",
                    BackendError::InUse { .. } => {
                        "stop what uses the GPU and apply again (`--mode-only` changes the mode alone)"
                    }
                    _ => "reset the GPU (`nvidia-smi -r`) or reboot the node",
                };
                report.gpus[i].outcome = ModeOutcome::Pending { reason: format!("the GPU reset failed: {e}; {todo}") };
            }
        }
    }
    if failed { Err(ModeError::ResetFailed { report: Box::new(report) }) } else { Ok(report) }
}

/// What to do about a change left pending before any reset.
fn pending_hint(gpu: u32, skip_reset: bool) -> String {
    if skip_reset {
        format!(
            "it takes effect at a GPU reset, skipped as asked (--skip-reset); apply again without \
             --skip-reset (`--mode-only` changes the mode alone) to reset GPU {gpu}, or reboot"
        )
    } else {
        "it takes effect at a GPU reset".to_string()
    }
}

/// Destroy every compute and GPU instance of `gpu` (mig-parted's `ClearMigConfig`), compute
/// instances first; the labels of the GPU instances destroyed. The caller made sure no process
/// uses the GPU, and the backend refuses to destroy a busy instance anyway.
fn clear_gpu(backend: &dyn MigBackend, gpu: u32) -> Result<Vec<String>, BackendError> {
    let mut cleared = Vec::new();
    let profiles = backend.gpu_instance_profiles(gpu)?;
    for gi in backend.gpu_instances(gpu)? {
        for ci in backend.compute_instances(gpu, gi.id)? {
            backend.destroy_compute_instance(gpu, gi.id, ci.id)?;
        }
        backend.destroy_gpu_instance(gpu, gi.id)?;
        let name = profiles
            .iter()
            .find(|p| p.id == gi.profile_id)
            .map_or_else(|| gi.profile_id.to_string(), |p| p.name.clone());
        cleared.push(format!("{name}@{}", gi.placement.start));
    }
    Ok(cleared)
}

#[cfg(test)]
mod tests {
    use tessera_gpu::{NodeSpec, SimBackend};

    use super::*;

    fn node(spec: &str) -> SimBackend {
        SimBackend::in_memory(&NodeSpec::parse(spec).unwrap())
    }

    #[test]
    fn an_a100_is_reset_after_every_mode_is_set_an_h100_is_not() {
        let b = node("1xA100-40GB+1xH100-80GB,mig=off");
        let r = apply_modes(&b, &[(0, true), (1, true)], false).unwrap();
        assert_eq!(r.gpus[0].outcome, ModeOutcome::ChangedByReset);
        assert_eq!(r.gpus[1].outcome, ModeOutcome::Changed);
        assert_eq!(b.observe(0).unwrap().reset_count, Some(1));
        assert_eq!(b.observe(1).unwrap().reset_count, Some(0));
        // Again: nothing to do.
        let r = apply_modes(&b, &[(0, true), (1, true)], false).unwrap();
        assert!(r.gpus.iter().all(|g| g.outcome == ModeOutcome::Unchanged), "{r:?}");
        assert!(r.lines().is_empty());
    }

    #[test]
    fn skip_reset_leaves_it_pending_and_a_second_run_resets() {
        let b = node("1xA30,mig=off");
        let r = apply_modes(&b, &[(0, true)], true).unwrap();
        assert!(r.pending());
        assert!(r.lines()[0].contains("--skip-reset"), "{:?}", r.lines());
        assert_eq!(b.mig_mode(0).unwrap(), MigMode { current: false, pending: true });
        let r = apply_modes(&b, &[(0, true)], false).unwrap();
        assert_eq!(r.gpus[0].outcome, ModeOutcome::ChangedByReset);
        assert!(b.mig_mode(0).unwrap().current);
    }

    #[test]
    fn a_busy_gpu_refuses_before_any_gpu_changes() {
        let b = node("2xH100-80GB,mig=off");
        b.attach_gpu_process(1, 4711, "python").unwrap();
        let e = apply_modes(&b, &[(0, true), (1, true)], false).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("pid 4711 (python)") && msg.contains("GPU 1"), "{msg}");
        assert!(msg.contains("nothing was changed"), "{msg}");
        assert!(!b.mig_mode(0).unwrap().current && !b.mig_mode(0).unwrap().pending, "GPU 0 was changed");
    }

    #[test]
    fn disabling_clears_the_instances_first() {
        let b = node("1xH100-80GB");
        let gi = b.create_gpu_instance(0, 9, Some(4)).unwrap();
        b.create_compute_instance(0, gi.id, 2).unwrap();
        let r = apply_modes(&b, &[(0, false)], false).unwrap();
        assert_eq!(r.gpus[0].cleared, ["3g.40gb@4"]);
        assert_eq!(r.gpus[0].outcome, ModeOutcome::Changed);
        assert!(!b.mig_mode(0).unwrap().current);
    }

    #[test]
    fn a_refused_reset_is_an_error_naming_the_pending_gpu() {
        let b = node("1xA100-40GB,mig=off,gpu-reset=off");
        let e = apply_modes(&b, &[(0, true)], false).unwrap_err();
        let ModeError::ResetFailed { report } = &e else { panic!("{e}") };
        let line = &report.lines()[0];
        assert!(line.contains("pending") && line.contains("reboot"), "{line}");
        assert_eq!(b.mig_mode(0).unwrap(), MigMode { current: false, pending: true });
        // With --skip-reset the same state is success.
        assert!(apply_modes(&b, &[(0, true)], true).unwrap().pending());
    }
}
