//! An admin's MIG layout change, in three steps so the planner never runs on a caller's input
//! under the engine lock: [`Engine::layout_prepare`] (locked: who may, bounded input, the
//! GPU's layout with busy instances marked), [`LayoutInput::plan`] (no lock: the planner), and
//! [`Engine::layout_apply`] (locked: the GPU must not have changed meanwhile; then the plan runs
//! through the reconfiguration journal). Busy instances (a process uses them, or a job holds
//! them) are never touched; a conflict names them.

use std::collections::BTreeSet;

use tessera_mig::layout::instance_label;
use tessera_mig::{CurrentInstance, GpuModel, Instance, ReconfigurePlan, Wanted, reconfigure};

use super::{Caller, Engine, EngineError};
use crate::wire::{LayoutReply, LayoutRequest, MAX_LAYOUT_ENTRIES};

/// What the planner needs, read under the lock.
#[derive(Debug, Clone)]
pub struct LayoutInput {
    gpu: u32,
    model: &'static GpuModel,
    current: Vec<CurrentInstance>,
    wanted: Wanted,
    dry_run: bool,
    epoch: u64,
    by: String,
    /// Who holds the GPU's instances (`1g.10gb@0: job 3, pod ns/p/c`), for a refusal.
    holders: Vec<String>,
}

/// A plan made from a [`LayoutInput`].
#[derive(Debug, Clone)]
pub struct LayoutPlan {
    input: LayoutInput,
    plan: ReconfigurePlan,
}

impl LayoutInput {
    /// The planner's plan (pure; run it without the engine lock).
    pub fn plan(self) -> Result<LayoutPlan, EngineError> {
        let gpu = self.gpu;
        let plan = reconfigure(self.model, &self.current, &self.wanted).map_err(|e| match e {
            tessera_mig::ReconfigureError::BusyInstancesBlock { .. } if !self.holders.is_empty() => {
                EngineError::Conflict(format!("GPU {gpu}: {e} (held: {})", self.holders.join("; ")))
            }
            tessera_mig::ReconfigureError::BusyInstancesBlock { .. } => {
                EngineError::Conflict(format!("GPU {gpu}: {e}"))
            }
            other => EngineError::cannot_run("instances", format!("GPU {gpu}: {other}")),
        })?;
        Ok(LayoutPlan { input: self, plan })
    }
}

impl Engine {
    /// The locked first step: checks, and the GPU's layout with busy instances marked.
    pub fn layout_prepare(
        &mut self,
        caller: &Caller,
        gpu: u32,
        req: LayoutRequest,
    ) -> Result<LayoutInput, EngineError> {
        let dry_run = req.dry_run;
        self.layout_prepare_with(caller, gpu, dry_run, |model| wanted_of(model, &req.instances))
    }

    /// [`Engine::layout_prepare`] for a front door that already holds the layout typed (the
    /// Kubernetes node agent's `nvidia.com/mig.config` and desired layouts).
    pub fn layout_prepare_wanted(
        &mut self,
        caller: &Caller,
        gpu: u32,
        wanted: Wanted,
    ) -> Result<LayoutInput, EngineError> {
        self.layout_prepare_with(caller, gpu, false, |_| Ok(wanted))
    }

    fn layout_prepare_with(
        &mut self,
        caller: &Caller,
        gpu: u32,
        dry_run: bool,
        wanted: impl FnOnce(&'static GpuModel) -> Result<Wanted, EngineError>,
    ) -> Result<LayoutInput, EngineError> {
        if !caller.admin {
            return Err(EngineError::Forbidden("only admins change MIG layouts".into()));
        }
        let view = tessera_gpu::gpu_view(self.backend(), gpu).map_err(|e| EngineError::NotFound(e.to_string()))?;
        let Some(model) = view.model else {
            return Err(EngineError::Conflict(format!("GPU {gpu} ({}) is not in the catalog", view.device.name)));
        };
        if !view.mig.current {
            return Err(EngineError::Conflict(format!("GPU {gpu} has MIG off: turn it on first (tessera mig apply)")));
        }
        let wanted = wanted(model)?;
        // Busy: a process uses it, or a job holds it (it may not have started its processes yet;
        // a pod's hold has none of Tessera's).
        let allocations: Vec<_> =
            self.store.live_allocations()?.into_iter().filter(|a| a.allocation.gpu_index == gpu).collect();
        let held: BTreeSet<(u32, u8)> =
            allocations.iter().map(|a| (a.allocation.profile_id, a.allocation.start)).collect();
        let mut holders = Vec::new();
        for a in &allocations {
            let at = instance_label(model, &Instance::new(a.allocation.profile_id, a.allocation.start));
            let whose = match self.store.job(a.job)?.map(|r| r.work) {
                Some(tessera_store::Work::External(x)) => format!("job {} ({} {})", a.job, x.door, x.key),
                _ => format!("job {}", a.job),
            };
            holders.push(format!("{at} by {whose}"));
        }
        let mut current = view.current();
        for c in &mut current {
            c.busy |= held.contains(&(c.instance.profile_id, c.instance.start));
        }
        Ok(LayoutInput {
            gpu,
            model,
            current,
            wanted,
            dry_run,
            epoch: self.layout_epoch,
            by: caller.user.clone(),
            holders,
        })
    }

    /// The locked last step: the GPU must be as it was when planned; then the plan runs.
    pub fn layout_apply(&mut self, caller: &Caller, p: LayoutPlan) -> Result<LayoutReply, EngineError> {
        let LayoutPlan { input, plan } = p;
        let gpu = input.gpu;
        let label = |i: &Instance| instance_label(input.model, i);
        let steps = step_lines(&plan, label);
        let layout: Vec<String> = plan.target.iter().map(label).collect();
        if input.dry_run || plan.steps.is_empty() {
            return Ok(LayoutReply { gpu, dry_run: input.dry_run, steps, layout, changed: false });
        }
        // Nothing may have moved while the planner ran without the lock.
        let again = self.layout_prepare(caller, gpu, LayoutRequest { instances: Vec::new(), dry_run: true })?;
        if again.epoch != input.epoch || again.current != input.current {
            return Err(EngineError::Conflict(format!("GPU {gpu} changed while the layout was planned; ask again")));
        }
        self.layout_epoch += 1;
        self.seen = None;
        match self.execute_journalled(gpu, &plan, Some(input.by.clone()), None, None) {
            Ok(()) => Ok(LayoutReply { gpu, dry_run: false, steps, layout, changed: true }),
            Err(e) => Err(EngineError::Conflict(format!("GPU {gpu}: the layout change failed: {e}"))),
        }
    }
}

impl Engine {
    /// [`Action::SubmitMaking`](super::Action::SubmitMaking): every pinned instance missing on a
    /// MIG GPU is made at its placement first (nothing else on the GPU moves: the target is the
    /// current layout plus it, and an overlap is refused by the planner, naming it); then the
    /// job is queued. When the submission is refused, what was made for it is destroyed again.
    pub(crate) fn submit_making(
        &mut self,
        caller: &Caller,
        request: tessera_sched::JobRequest,
        work: tessera_store::Work,
    ) -> Result<crate::wire::SubmitReply, EngineError> {
        if !caller.admin {
            return Err(EngineError::Forbidden("only admins make MIG instances for pinned work".into()));
        }
        let mut made: Vec<(u32, Instance)> = Vec::new();
        for pin in &request.pin {
            let view =
                tessera_gpu::gpu_view(self.backend(), pin.gpu).map_err(|e| EngineError::NotFound(e.to_string()))?;
            if !view.mig.current || view.instances.iter().any(|i| pin.is(pin.gpu, &i.instance)) {
                continue;
            }
            let mut layout = view.layout();
            let instance = Instance::new(pin.profile_id, pin.start);
            layout.push(instance);
            let made_one = self
                .layout_prepare_wanted(caller, pin.gpu, Wanted::Layout(layout))
                .and_then(LayoutInput::plan)
                .and_then(|plan| self.layout_apply(caller, plan));
            match made_one {
                Ok(_) => made.push((pin.gpu, instance)),
                Err(e) => {
                    self.undo_made(caller, &made);
                    return Err(e);
                }
            }
        }
        let submitted = self.submit_work(caller, request, work);
        if submitted.is_err() {
            self.undo_made(caller, &made);
        }
        submitted
    }

    fn undo_made(&mut self, caller: &Caller, made: &[(u32, Instance)]) {
        for (gpu, instance) in made {
            if let Err(e) = self.destroy_idle(caller, *gpu, *instance) {
                tracing::warn!("GPU {gpu}: an instance made for a refused submission stays: {e}");
            }
        }
    }

    /// [`Action::DestroyIdle`](super::Action::DestroyIdle): the GPU's layout less `instance`,
    /// through the layout path (busy instances refused, naming who holds them).
    pub(crate) fn destroy_idle(
        &mut self,
        caller: &Caller,
        gpu: u32,
        instance: Instance,
    ) -> Result<LayoutReply, EngineError> {
        if !caller.admin {
            return Err(EngineError::Forbidden("only admins change MIG layouts".into()));
        }
        let view = tessera_gpu::gpu_view(self.backend(), gpu).map_err(|e| EngineError::NotFound(e.to_string()))?;
        let same = |i: &Instance| i.profile_id == instance.profile_id && i.start == instance.start;
        let layout = view.layout();
        if !view.mig.current || !layout.iter().any(same) {
            let labels = view.layout().iter().map(|i| instance_label_of(&view, i)).collect();
            return Ok(LayoutReply { gpu, dry_run: false, steps: Vec::new(), layout: labels, changed: false });
        }
        let target: Vec<Instance> = layout.into_iter().filter(|i| !same(i)).collect();
        let plan = self.layout_prepare_wanted(caller, gpu, Wanted::Layout(target))?.plan()?;
        self.layout_apply(caller, plan)
    }
}

fn instance_label_of(view: &tessera_gpu::GpuView, i: &Instance) -> String {
    view.model.map_or_else(|| format!("{}@{}", i.profile_id, i.start), |m| instance_label(m, i))
}

/// A plan's steps as people read them: `destroy 1g.10gb@6`, `create 3g.40gb@0`.
pub(crate) fn step_lines(plan: &tessera_mig::ReconfigurePlan, label: impl Fn(&Instance) -> String) -> Vec<String> {
    plan.steps
        .iter()
        .map(|s| match s {
            tessera_mig::Step::Destroy { instance, .. } => format!("destroy {}", label(instance)),
            tessera_mig::Step::Create { instance } => format!("create {}", label(instance)),
        })
        .collect()
}

/// The layout a request's text asks for: every entry placed (`3g.40gb@4`) or none.
fn wanted_of(model: &GpuModel, instances: &[String]) -> Result<Wanted, EngineError> {
    if instances.len() > MAX_LAYOUT_ENTRIES {
        return Err(EngineError::invalid(
            "instances",
            format!("lists {} instances; a GPU has at most {MAX_LAYOUT_ENTRIES}", instances.len()),
        ));
    }
    let mut specs = Vec::new();
    for (i, text) in instances.iter().enumerate() {
        // A name this model lacks (or a start it has not) can never be made here: 422, as a
        // submission's unknown profile is.
        let spec =
            model.instance_spec(text).map_err(|e| EngineError::cannot_run(format!("instances[{i}]"), e.to_string()))?;
        specs.push(spec);
    }
    let placed = specs.iter().filter(|(_, start)| start.is_some()).count();
    if placed == 0 {
        Ok(Wanted::Profiles(specs.iter().map(|(w, _)| *w).collect()))
    } else if placed == specs.len() {
        Ok(Wanted::Layout(
            specs
                .iter()
                .map(|(w, start)| Instance { profile_id: w.profile_id, start: start.unwrap_or(0), compute: w.compute })
                .collect(),
        ))
    } else {
        Err(EngineError::invalid("instances", "give a start (PROFILE@START) for every instance or for none"))
    }
}
