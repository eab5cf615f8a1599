//! Carrying out a reconfiguration plan on one GPU, all or nothing.
//!
//! A [`ReconfigurePlan`] from `tessera-mig` lists destroys and creates at explicit placements.
//! [`execute_plan`] runs them in order: a destroy re-checks that the instance is still idle,
//! removes its compute instances and then the GPU instance; a create makes the GPU instance at its
//! placement (never the driver's default placement) and then its compute instances (one, or a
//! split's several, largest first as mig-parted makes them).
//!
//! If a step fails, the steps already done are undone in reverse (created instances destroyed,
//! destroyed ones recreated at the same placement with the same compute instances), and the error
//! says exactly what changed: nothing when the rollback succeeded, otherwise what remains applied.
//! Recreated instances are the same spec key but get new live keys (MIG device UUIDs).

use std::fmt;

use tessera_mig::layout::{ci_placements, device_type_name};
use tessera_mig::{ComputeShape, GpuModel, Instance, Profile, ReconfigurePlan, Step, catalog::ComputeInstanceProfile};

use crate::backend::{BackendError, GpuRef, MigBackend};

/// What a successful execution did, one human line per step.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExecutionReport {
    /// `destroyed 1g.10gb@6 (GPU instance 13)`, `created 3g.40gb@4 (GPU instance 2, MIG-…)`.
    pub steps_done: Vec<String>,
}

/// A plan that failed part-way, and what was done about it.
#[derive(Debug)]
pub struct ExecutionError {
    pub gpu: u32,
    /// `step 3 of 4: create 1g.5gb@5`.
    pub failed_step: String,
    pub cause: BackendError,
    /// True when the GPU is back to its layout before the plan.
    pub rolled_back: bool,
    /// What remains changed on the GPU (empty when `rolled_back`).
    pub changed: Vec<String>,
    /// Steps that were done and then undone, with how.
    pub undone: Vec<String>,
}

impl fmt::Display for ExecutionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GPU {}: {} failed: {}. ", self.gpu, self.failed_step, self.cause)?;
        if self.rolled_back {
            if self.undone.is_empty() {
                f.write_str("Nothing changed on the GPU: no step had been done.")
            } else {
                write!(
                    f,
                    "Nothing changed on the GPU: the {} step(s) already done were rolled back ({}); recreated \
                     instances have new MIG device UUIDs.",
                    self.undone.len(),
                    self.undone.join("; ")
                )
            }
        } else {
            write!(f, "The rollback did not fully succeed; the GPU was left changed: {}.", self.changed.join("; "))?;
            if !self.undone.is_empty() {
                write!(f, " Undone: {}.", self.undone.join("; "))?;
            }
            Ok(())
        }
    }
}

/// The cause is part of the message (with where the plan stopped and what was undone), so it is
/// not also a `source`: a report that prints the chain would say it twice.
impl std::error::Error for ExecutionError {}

/// A step that has been done, with what it takes to undo it.
#[derive(Debug)]
enum Done {
    Destroyed {
        instance: Instance,
        /// Compute instances it had: (profile id, start), by start.
        compute_instances: Vec<(u32, u8)>,
        line: String,
    },
    Created {
        gpu_instance_id: u32,
        line: String,
    },
}

/// A failed step: why, and anything it changed that it could not undo itself.
struct Failure {
    cause: BackendError,
    leftovers: Vec<String>,
}

impl From<BackendError> for Failure {
    fn from(cause: BackendError) -> Self {
        Failure { cause, leftovers: Vec::new() }
    }
}

struct Executor<'a> {
    backend: &'a dyn MigBackend,
    gpu: u32,
    gref: GpuRef,
    model: &'static GpuModel,
}

/// Run `plan` on GPU `gpu`; on failure roll back what was done and say what changed.
// The error is large, but it is built once, on a failure that stops the whole plan.
#[allow(clippy::result_large_err)]
pub fn execute_plan(
    backend: &dyn MigBackend,
    gpu: u32,
    plan: &ReconfigurePlan,
) -> Result<ExecutionReport, ExecutionError> {
    execute_plan_observed(backend, gpu, plan, &mut |_, _| {})
}

#[allow(clippy::result_large_err)] // As `execute_plan`: the error carries the full report of what changed.
/// [`execute_plan`], telling `after_step(index, line)` about every step as soon as it is done,
/// so a caller can journal progress step by step.
pub fn execute_plan_observed(
    backend: &dyn MigBackend,
    gpu: u32,
    plan: &ReconfigurePlan,
    after_step: &mut dyn FnMut(usize, &str),
) -> Result<ExecutionReport, ExecutionError> {
    if plan.steps.is_empty() {
        return Ok(ExecutionReport::default());
    }
    let fail_early = |cause| ExecutionError {
        gpu,
        failed_step: "reading the GPU before the first step".into(),
        cause,
        rolled_back: true,
        changed: Vec::new(),
        undone: Vec::new(),
    };
    let ex = Executor::new(backend, gpu).map_err(fail_early)?;
    let total = plan.steps.len();
    let mut done: Vec<Done> = Vec::new();
    for (i, step) in plan.steps.iter().enumerate() {
        let result = match step {
            Step::Destroy { instance, gpu_instance_id } => ex.destroy(instance, *gpu_instance_id),
            Step::Create { instance } => ex.create(instance),
        };
        match result {
            Ok(d) => {
                let (Done::Destroyed { line, .. } | Done::Created { line, .. }) = &d;
                after_step(i, line);
                done.push(d);
            }
            Err(Failure { cause, leftovers }) => {
                let (undone, mut changed) = ex.roll_back(done);
                changed.splice(0..0, leftovers);
                return Err(ExecutionError {
                    gpu,
                    failed_step: format!("step {} of {total}: {}", i + 1, ex.step_label(step)),
                    cause,
                    rolled_back: changed.is_empty(),
                    changed,
                    undone,
                });
            }
        }
    }
    Ok(ExecutionReport {
        steps_done: done
            .into_iter()
            .map(|d| match d {
                Done::Destroyed { line, .. } | Done::Created { line, .. } => line,
            })
            .collect(),
    })
}

/// Make the GPU's MIG mode `enabled`; `Ok(true)` when it changed, `Ok(false)` when it already was.
/// A change the driver leaves pending (GPU in use, reset needed) is an `InUse` error.
pub fn ensure_mig_mode(backend: &dyn MigBackend, gpu: u32, enabled: bool) -> Result<bool, BackendError> {
    let mode = backend.mig_mode(gpu)?;
    if mode.current == enabled {
        if mode.pending != enabled {
            // Withdraw a change that was left pending.
            backend.set_mig_mode(gpu, enabled)?;
        }
        return Ok(false);
    }
    let after = backend.set_mig_mode(gpu, enabled)?;
    if after.current != enabled {
        let gpu_ref =
            backend.devices()?.into_iter().find(|d| d.index == gpu).map_or_else(|| GpuRef::index(gpu), |d| d.gpu_ref());
        return Err(BackendError::InUse {
            gpu: gpu_ref,
            what: format!("the MIG mode change is pending ({after}); it needs an idle GPU or a GPU reset"),
        });
    }
    Ok(true)
}

/// The compute-instance profiles that give `profile` the compute shape `shape`, in the order
/// they are created (largest first, as mig-parted creates them).
fn ci_profiles_for(
    model: &'static GpuModel,
    profile: &Profile,
    shape: ComputeShape,
) -> Result<Vec<&'static ComputeInstanceProfile>, String> {
    let Some(sizes) = shape.ci_sizes(profile.compute_slices) else {
        return Err(format!(
            "{} asks for custom compute instances, which a plan cannot create; ask for the full GPU instance, \
             one compute instance of a given size, or a split into several",
            profile.name
        ));
    };
    match ci_placements(model, profile, &sizes) {
        Ok(placed) => Ok(placed.into_iter().map(|(cp, _)| cp).collect()),
        Err(problem) => Err(format!("{} cannot hold {}: {problem}", profile.name, device_type_name(profile, shape))),
    }
}

impl<'a> Executor<'a> {
    fn new(backend: &'a dyn MigBackend, gpu: u32) -> Result<Self, BackendError> {
        let dev = crate::backend::device_by_index(backend, gpu)?;
        let Some(model) = dev.model() else {
            return Err(BackendError::NotSupported {
                gpu: dev.gpu_ref(),
                what: format!(
                    "'{}' (PCI device 0x{:04X}) is not in Tessera's GPU catalog, so plans cannot be executed on it",
                    dev.name, dev.pci_device_id
                ),
            });
        };
        Ok(Executor { backend, gpu, gref: dev.gpu_ref(), model })
    }

    fn label(&self, instance: &Instance) -> String {
        tessera_mig::layout::instance_label(self.model, instance)
    }

    fn step_label(&self, step: &Step) -> String {
        match step {
            Step::Destroy { instance, gpu_instance_id: Some(id) } => {
                format!("destroy {} (GPU instance {id})", self.label(instance))
            }
            Step::Destroy { instance, gpu_instance_id: None } => format!("destroy {}", self.label(instance)),
            Step::Create { instance } => format!("create {}", self.label(instance)),
        }
    }

    fn profile(&self, profile_id: u32) -> Result<&'static Profile, BackendError> {
        self.model.profile_by_id(profile_id).ok_or_else(|| BackendError::InvalidArgument {
            what: format!("{}: {} has no GPU instance profile {profile_id}", self.gref, self.model.name),
        })
    }

    fn destroy(&self, instance: &Instance, hint: Option<u32>) -> Result<Done, Failure> {
        let label = self.label(instance);
        let gis = self.backend.gpu_instances(self.gpu)?;
        let matches =
            |g: &&crate::GpuInstanceInfo| g.profile_id == instance.profile_id && g.placement.start == instance.start;
        let gi = hint
            .and_then(|id| gis.iter().filter(matches).find(|g| g.id == id))
            .or_else(|| gis.iter().find(matches))
            .ok_or_else(|| BackendError::NotFound {
                gpu: self.gref.clone(),
                what: format!("{label} is not on the GPU any more (was it changed behind Tessera's back?)"),
            })?;
        let busy: Vec<String> = self
            .backend
            .processes(self.gpu)?
            .iter()
            .filter(|p| p.gpu_instance_id == Some(gi.id))
            .map(ToString::to_string)
            .collect();
        if !busy.is_empty() {
            return Err(BackendError::InUse {
                gpu: self.gref.clone(),
                what: format!(
                    "{label} (GPU instance {}) became busy: used by {}; busy instances are never destroyed",
                    gi.id,
                    busy.join(", ")
                ),
            }
            .into());
        }
        let mut cis = self.backend.compute_instances(self.gpu, gi.id)?;
        cis.sort_by_key(|c| (c.placement.start, c.id));
        let saved: Vec<(u32, u8)> = cis.iter().map(|c| (c.profile_id, c.placement.start)).collect();
        let mut removed: Vec<(u32, u8)> = Vec::new();
        for ci in &cis {
            if let Err(cause) = self.backend.destroy_compute_instance(self.gpu, gi.id, ci.id) {
                return Err(self.undo_partial_destroy(gi.id, &label, &removed, cause));
            }
            removed.push((ci.profile_id, ci.placement.start));
        }
        if let Err(cause) = self.backend.destroy_gpu_instance(self.gpu, gi.id) {
            return Err(self.undo_partial_destroy(gi.id, &label, &removed, cause));
        }
        Ok(Done::Destroyed {
            instance: *instance,
            compute_instances: saved,
            line: format!("destroyed {label} (GPU instance {})", gi.id),
        })
    }

    /// A destroy that stopped after removing some compute instances: put them back.
    fn undo_partial_destroy(&self, gi_id: u32, label: &str, removed: &[(u32, u8)], cause: BackendError) -> Failure {
        let mut leftovers = Vec::new();
        for (profile_id, start) in removed {
            if let Err(e) = self.backend.create_compute_instance(self.gpu, gi_id, *profile_id) {
                leftovers.push(format!(
                    "destroyed the compute instance (profile {profile_id}) at compute slice {start} of {label} \
                     (GPU instance {gi_id}) and could not recreate it: {e}"
                ));
            }
        }
        Failure { cause, leftovers }
    }

    fn create(&self, instance: &Instance) -> Result<Done, Failure> {
        let label = self.label(instance);
        let profile = self.profile(instance.profile_id)?;
        let ci_profiles = ci_profiles_for(self.model, profile, instance.compute)
            .map_err(|what| BackendError::InvalidArgument { what: format!("{}: {what}", self.gref) })?;
        let gi = self.backend.create_gpu_instance(self.gpu, instance.profile_id, Some(instance.start))?;
        if gi.placement.start != instance.start {
            let cause = BackendError::InvalidArgument {
                what: format!(
                    "{}: asked for {label} but the backend created it at {} (GPU instance {})",
                    self.gref, gi.placement, gi.id
                ),
            };
            return Err(self.undo_partial_create(gi.id, &label, cause));
        }
        let mut uuids = Vec::with_capacity(ci_profiles.len());
        for ci_profile in ci_profiles {
            match self.backend.create_compute_instance(self.gpu, gi.id, ci_profile.id) {
                Ok(ci) => uuids.push(ci.uuid),
                Err(cause) => return Err(self.undo_partial_create(gi.id, &label, cause)),
            }
        }
        Ok(Done::Created {
            gpu_instance_id: gi.id,
            line: format!("created {label} (GPU instance {}, {})", gi.id, uuids.join(", ")),
        })
    }

    /// A create whose GPU instance exists but not all its compute instances: remove it again.
    fn undo_partial_create(&self, gi_id: u32, label: &str, cause: BackendError) -> Failure {
        match self.remove_instance(gi_id) {
            Ok(()) => Failure { cause, leftovers: Vec::new() },
            Err(e) => Failure {
                cause,
                leftovers: vec![format!(
                    "created {label} (GPU instance {gi_id}) without all its compute instances and could not remove \
                     it: {e}"
                )],
            },
        }
    }

    /// Destroy a GPU instance and every compute instance in it.
    fn remove_instance(&self, gi_id: u32) -> Result<(), BackendError> {
        for ci in self.backend.compute_instances(self.gpu, gi_id)? {
            self.backend.destroy_compute_instance(self.gpu, gi_id, ci.id)?;
        }
        self.backend.destroy_gpu_instance(self.gpu, gi_id)
    }

    /// Recreate a destroyed instance at its placement with its compute instances.
    fn recreate(&self, instance: &Instance, compute_instances: &[(u32, u8)]) -> Result<String, String> {
        let gi = self
            .backend
            .create_gpu_instance(self.gpu, instance.profile_id, Some(instance.start))
            .map_err(|e| format!("could not recreate it: {e}"))?;
        let mut uuids = Vec::new();
        for (profile_id, _) in compute_instances {
            match self.backend.create_compute_instance(self.gpu, gi.id, *profile_id) {
                Ok(ci) => uuids.push(ci.uuid),
                Err(e) => {
                    return Err(format!(
                        "recreated it as GPU instance {} but not its compute instance of profile {profile_id}: {e}",
                        gi.id
                    ));
                }
            }
        }
        Ok(if uuids.is_empty() {
            format!("recreated as GPU instance {}", gi.id)
        } else {
            format!("recreated as GPU instance {} ({})", gi.id, uuids.join(", "))
        })
    }

    /// Undo `done` in reverse. Returns (undone lines, lines of what remains changed).
    fn roll_back(&self, done: Vec<Done>) -> (Vec<String>, Vec<String>) {
        let mut undone = Vec::new();
        let mut changed = Vec::new();
        for d in done.into_iter().rev() {
            match d {
                Done::Created { gpu_instance_id, line } => match self.remove_instance(gpu_instance_id) {
                    Ok(()) => undone.push(format!("{line}: removed again")),
                    Err(e) => changed.push(format!("{line}: could not remove it again: {e}")),
                },
                Done::Destroyed { instance, compute_instances, line } => {
                    match self.recreate(&instance, &compute_instances) {
                        Ok(how) => undone.push(format!("{line}: {how}")),
                        Err(why) => changed.push(format!("{line}: {why}")),
                    }
                }
            }
        }
        undone.reverse();
        changed.reverse();
        (undone, changed)
    }
}

#[cfg(test)]
mod tests;
