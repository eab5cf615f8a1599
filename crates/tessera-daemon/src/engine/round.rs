//! One scheduling round: look, decide, act.
//!
//! [`Engine::prepare_round`] (under the engine lock) collects jobs that ended, stops idle MPS
//! control daemons, reads the GPUs and the store, and lends the scheduler to a [`RoundInput`];
//! [`RoundInput::decide`] runs the pure scheduler without the lock (submissions and queries go
//! on meanwhile); [`Engine::finish_round`] (under the lock again) carries the decisions out.
//! Every change to a job is a compare-and-set in the store, so a job cancelled in between is
//! not started, and a round decided across an admin's layout change or a MIG mode switch is
//! not carried out.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tessera_exec::{StopReason, StopRequest};
use tessera_gpu::view::NodeView;
use tessera_mig::ReconfigurePlan;
use tessera_sched::{ClusterView, Decision, QueuedJob, RunningJob, Scheduler};
use tessera_store::{ExitInfo, JobState, JournalPlan, ReconfigOutcome};

use super::{Engine, EngineError};

/// What one round read, and the scheduler lent to it while it decides.
pub struct RoundInput {
    now: u64,
    changed: bool,
    live: NodeView,
    cluster: ClusterView,
    queue: Vec<QueuedJob>,
    running: Vec<RunningJob>,
    scheduler: Scheduler,
    layout_epoch: u64,
    t0: Instant,
    t_read: Duration,
    /// Queued jobs past `scheduler.queue_depth`, with why they wait: not decided on.
    beyond: Vec<(u64, String)>,
    /// Nothing the scheduler reads changed since the last round that decided: decide nothing.
    skip: bool,
}

/// What a round's decisions depend on that can change between rounds, cheap to read: the
/// active jobs (queued count and id range, placing and running ids), the layout epoch, the
/// drains and the health. Equal keys, and a recent full round, let a round skip deciding.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RoundKey {
    active: tessera_store::ActiveSummary,
    layout_epoch: u64,
    drains: Vec<String>,
    health: tessera_gpu::health::HealthTracker,
}

/// The longest a round skips deciding while nothing changed: time alone (fair-share decay,
/// backfill windows) is looked at again this often, as with the old 200 ms tick.
const FULL_ROUND_MS: u64 = 200;

impl std::fmt::Debug for RoundInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoundInput").field("now", &self.now).field("queued", &self.queue.len()).finish_non_exhaustive()
    }
}

impl RoundInput {
    /// The pure part of the round: the scheduler's decisions. Should the scheduler panic (a
    /// bug), the round decides nothing and the scheduler, with its fair-share ledger, still
    /// goes back to the engine.
    pub fn decide(&mut self) -> Vec<Decision> {
        if self.skip {
            return Vec::new();
        }
        let RoundInput { now, cluster, queue, running, scheduler, .. } = self;
        decide(scheduler, *now, cluster, queue, running).unwrap_or_default()
    }
}

/// The scheduler's decisions, or `None` should it panic (a bug): a round then decides nothing,
/// a dry run says it failed, and the daemon goes on.
pub(crate) fn decide(
    scheduler: &mut Scheduler,
    now: u64,
    cluster: &ClusterView,
    queue: &[QueuedJob],
    running: &[RunningJob],
) -> Option<Vec<Decision>> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scheduler.schedule(now, cluster, queue, running))).ok()
}

/// What the scheduler sees of the node now: the GPUs as they are, the running jobs, the
/// cluster view made of both, and the queue in order.
pub(crate) struct Sight {
    pub(crate) live: NodeView,
    pub(crate) running: Vec<RunningJob>,
    pub(crate) cluster: ClusterView,
    pub(crate) queue: Vec<QueuedJob>,
    /// Queued jobs past `scheduler.queue_depth`, with why they wait.
    pub(crate) beyond: Vec<(u64, String)>,
}

impl Engine {
    /// One whole round (tests and tools; the daemon splits it around the lock). Returns
    /// whether anything changed.
    pub fn round(&mut self) -> Result<bool, EngineError> {
        let mut input = self.prepare(true)?;
        let decisions = input.decide();
        Ok(self.finish_round(input, decisions))
    }

    /// The first half of a round: collect finished jobs and read everything the scheduler needs.
    /// When nothing the scheduler reads changed since the last round that decided (a job ended,
    /// was queued, cancelled or started; a layout, drain or health change), and that round is
    /// less than [`FULL_ROUND_MS`] old, the round decides nothing: a short `scheduler.tick_ms`
    /// then notices jobs that ended soon without deciding over the whole queue each time.
    pub fn prepare_round(&mut self) -> Result<RoundInput, EngineError> {
        self.prepare(false)
    }

    fn round_key(&self) -> Result<RoundKey, EngineError> {
        Ok(RoundKey {
            active: self.store.active_summary()?,
            layout_epoch: self.layout_epoch,
            drains: self.drains.keys().cloned().collect(),
            health: self.health.clone(),
        })
    }

    fn prepare(&mut self, force: bool) -> Result<RoundInput, EngineError> {
        let t0 = Instant::now();
        let now = tessera_host::now_ms();
        let mut changed = self.collect_finished(now)? > 0;
        changed |= self.stop_idle_mps();
        let key = self.round_key()?;
        let placeholder = Scheduler::new(self.scheduler.config().clone());
        if !force
            && !changed
            && self.decided.as_ref() == Some(&key)
            && now.saturating_sub(self.decided_ms) < FULL_ROUND_MS
            && let Some(live) = self.seen.take()
        {
            self.last_round_ms = now;
            let scheduler = std::mem::replace(&mut self.scheduler, placeholder);
            return Ok(RoundInput {
                now,
                changed: false,
                live,
                cluster: ClusterView::default(),
                queue: Vec::new(),
                running: Vec::new(),
                scheduler,
                layout_epoch: self.layout_epoch,
                t0,
                t_read: t0.elapsed(),
                beyond: Vec::new(),
                skip: true,
            });
        }
        let Sight { live, running, cluster, queue, beyond } = self.sight()?;
        let keep: BTreeSet<u64> =
            queue.iter().map(|q| q.id).chain(beyond.iter().map(|b| b.0)).chain(running.iter().map(|r| r.id)).collect();
        self.requests.retain(|id, _| keep.contains(id));
        self.pending.retain(|id, _| keep.contains(id));
        self.last_round_ms = now;
        self.decided = Some(key);
        self.decided_ms = now;
        let scheduler = std::mem::replace(&mut self.scheduler, placeholder);
        Ok(RoundInput {
            now,
            changed,
            live,
            cluster,
            queue,
            running,
            scheduler,
            layout_epoch: self.layout_epoch,
            t0,
            t_read: t0.elapsed(),
            beyond,
            skip: false,
        })
    }

    /// What the scheduler sees now ([`Sight`]), read from the GPUs and the store; a round and a
    /// dry run decide on the same.
    pub(crate) fn sight(&mut self) -> Result<Sight, EngineError> {
        let live = tessera_gpu::view::node_view_partial(self.backend())
            .map_err(|e| EngineError::Internal(format!("reading the GPUs: {e}")))?;
        let running = self.running_jobs()?;
        let cluster = self.cluster_view(&live, &running);
        let queued = self.store.queued_ids()?;
        // Each tenant's first `queue_depth` jobs by priority, then age, are decided on.
        let mut order: Vec<(&str, i32, u64, u64)> = Vec::with_capacity(queued.len());
        for &(id, _) in &queued {
            if !self.requests.contains_key(&id) && self.request_of(id).is_err() {
                continue;
            }
        }
        for &(id, submitted_ms) in &queued {
            if let Some((r, _)) = self.requests.get(&id) {
                order.push((r.tenant.as_str(), r.priority, submitted_ms, id));
            }
        }
        order.sort_by(|a, b| a.0.cmp(b.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)).then(a.3.cmp(&b.3)));
        let depth = self.config.scheduler.queue_depth as usize;
        let mut chosen: BTreeSet<u64> = BTreeSet::new();
        let mut beyond = Vec::new();
        let mut seen_in_tenant = 0usize;
        let mut tenant: Option<&str> = None;
        for &(t, _, _, id) in &order {
            if tenant != Some(t) {
                tenant = Some(t);
                seen_in_tenant = 0;
            }
            seen_in_tenant += 1;
            if seen_in_tenant <= depth {
                chosen.insert(id);
            } else {
                let tenant = if t.is_empty() { "default" } else { t };
                beyond.push((
                    id,
                    format!(
                        "priority: behind the first {depth} queued jobs of tenant {tenant}, which rounds decide on first (scheduler.queue_depth)"
                    ),
                ));
            }
        }
        drop(order);
        let mut queue = Vec::with_capacity(chosen.len() + 1);
        for (id, submitted_ms) in queued {
            if !chosen.contains(&id) {
                continue;
            }
            let Some((request, user)) = self.requests.get(&id).cloned() else { continue };
            queue.push(QueuedJob { id, request, submitted_ms, user });
        }
        Ok(Sight { live, running, cluster, queue, beyond })
    }

    /// The second half of a round: take the scheduler back and carry out its decisions.
    pub fn finish_round(&mut self, input: RoundInput, decisions: Vec<Decision>) -> bool {
        let RoundInput {
            now,
            mut changed,
            live,
            queue,
            running,
            scheduler,
            layout_epoch,
            t0,
            t_read,
            beyond,
            skip,
            ..
        } = input;
        self.scheduler = scheduler;
        if skip {
            // The GPUs as last read, lent to the skipped round, are still what they were.
            if layout_epoch == self.layout_epoch {
                self.seen = Some(live);
            }
            self.last_round_us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.prune_if_due(now);
            return changed;
        }
        for (job, text) in beyond {
            if self.pending.get(&job) != Some(&text) {
                let _ = self.store.set_pending_reason(job, &text);
                self.pending.insert(job, text);
            }
        }
        if layout_epoch != self.layout_epoch {
            // A layout changed while this round decided: decide again on what is there.
            self.seen = None;
            return true;
        }
        let mut reshaped = false;
        let t_sched = t0.elapsed();
        self.waiting = decisions.iter().filter(|d| matches!(d, Decision::Pending { .. })).count();
        for d in decisions {
            match d {
                Decision::Pending { job, reason, detail } => {
                    let text = format!("{reason}: {detail}");
                    if self.pending.get(&job) != Some(&text) {
                        let _ = self.store.set_pending_reason(job, &text);
                        self.pending.insert(job, text);
                    }
                }
                Decision::Reconfigure { gpu, plan, for_job } => {
                    changed = true;
                    reshaped = true;
                    if let Err(e) = self.execute_journalled(gpu, &plan, None, Some(for_job), None) {
                        let _ =
                            self.store.set_pending_reason(for_job, &format!("reconfiguring: GPU {gpu} failed: {e}"));
                    }
                }
                Decision::SetMigMode { gpu, enabled, for_job } => {
                    changed = true;
                    reshaped = true;
                    self.layout_epoch += 1;
                    if let Err(e) = self.switch_mig_mode(gpu, enabled, Some(for_job)) {
                        let word = if enabled { "on" } else { "off" };
                        let _ = self.store.set_pending_reason(
                            for_job,
                            &format!("reconfiguring: turning MIG {word} on GPU {gpu} failed: {e}"),
                        );
                    }
                }
                Decision::Start { job, ranks } => {
                    changed = true;
                    if queue.iter().any(|q| q.id == job) {
                        self.start(job, &ranks, &live);
                    }
                }
                Decision::Preempt { job, for_job } => {
                    changed = true;
                    self.preempt(job, for_job);
                }
            }
        }
        self.seen = (!reshaped).then_some(live);
        // Save the fair-share ledger every few seconds (a crash loses at most that much usage).
        if now.saturating_sub(self.saved_usage_ms) >= 5_000 {
            let usage = serde_json::to_string(self.scheduler.usages()).unwrap_or_default();
            if usage != self.saved_usage && self.store.set_meta("fair_share_usage", &usage).is_ok() {
                self.saved_usage = usage;
            }
            self.saved_usage_ms = now;
        }
        self.prune_if_due(now);
        self.last_round_us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
        tracing::trace!(
            "round: read {:?}, schedule {:?}, act {:?} ({} queued, {} running)",
            t_read,
            t_sched.saturating_sub(t_read),
            t0.elapsed().saturating_sub(t_sched),
            queue.len(),
            running.len()
        );
        changed
    }

    /// Stops a lower-priority job to make room: its preemption signal, a grace period, then
    /// SIGKILL; its supervisor records `preempted` and the job is queued again.
    fn preempt(&mut self, job: u64, for_job: u64) {
        let Ok(Some(rec)) = self.store.job(job) else { return };
        let Some(dir) = rec.job_dir.clone() else { return };
        let signal = rec.work.process().and_then(|p| p.preempt_signal).unwrap_or(self.preempt_signal);
        let for_priority = self.requests.get(&for_job).map_or(0, |r| r.0.priority);
        let request = StopRequest {
            reason: StopReason::Preempt,
            signal,
            grace_ms: self.config.jobs.preempt_grace_ms,
            detail: format!("preempted by job {for_job} (priority {for_priority})"),
        };
        if let Err(e) = tessera_exec::stop(std::path::Path::new(&dir), &request) {
            tracing::error!(job, "preempting job {job} for job {for_job}: {e}");
        }
    }

    /// Carries out a plan through the reconfiguration journal: begun, each step marked as soon
    /// as it is done, then finished as completed, rolled back or abandoned. With `mig_mode`,
    /// the GPU's MIG mode is switched after the plan's steps (see [`Engine::switch_mig_mode`]).
    pub(crate) fn execute_journalled(
        &mut self,
        gpu: u32,
        plan: &ReconfigurePlan,
        by: Option<String>,
        for_job: Option<u64>,
        mig_mode: Option<bool>,
    ) -> Result<(), String> {
        self.seen = None;
        let uuid = self.facts.gpu(gpu).map(|g| g.uuid.clone()).ok_or_else(|| format!("no GPU {gpu}"))?;
        let journal = JournalPlan { steps: plan.steps.clone(), target: plan.target.clone(), by, mig_mode };
        let id = self
            .store
            .begin_reconfig(&uuid, gpu, &journal, for_job, tessera_host::now_ms())
            .map_err(|e| format!("cannot write the reconfiguration journal: {e}"))?;
        tracing::info!(
            gpu,
            journal = id,
            "reconfiguring GPU {gpu}: {} step(s){}{}{}",
            plan.steps.len(),
            for_job.map_or_else(String::new, |j| format!(" for job {j}")),
            journal.by.as_deref().map_or_else(String::new, |b| format!(" by {b}")),
            journal.mig_mode.map_or("", |on| if on { ", then MIG mode on" } else { ", then MIG mode off" })
        );
        let result = self.run_journal(id, gpu, plan, mig_mode);
        let outcome = match &result {
            Ok(()) => ReconfigOutcome::Completed,
            Err((true, _)) => ReconfigOutcome::RolledBack,
            Err((false, detail)) => ReconfigOutcome::Abandoned { detail: detail.clone() },
        };
        match &result {
            Ok(()) => tracing::info!(gpu, journal = id, "reconfigured GPU {gpu}"),
            Err((rolled_back, e)) => tracing::error!(
                gpu,
                journal = id,
                "reconfiguring GPU {gpu} failed ({}): {e}",
                if *rolled_back { "rolled back" } else { "abandoned" }
            ),
        }
        let _ = self.store.finish_reconfig(id, outcome, tessera_host::now_ms());
        result.map_err(|(_, e)| e)
    }

    /// The steps of journal entry `id`; `Err((rolled_back, why))`.
    fn run_journal(
        &mut self,
        id: u64,
        gpu: u32,
        plan: &ReconfigurePlan,
        mig_mode: Option<bool>,
    ) -> Result<(), (bool, String)> {
        let store = &self.store;
        let mut mark = |k: usize, line: &str| {
            tracing::info!(gpu, journal = id, step = k, "GPU {gpu}: {line}");
            let _ = store.step_done(id, u32::try_from(k).unwrap_or(u32::MAX), line, tessera_host::now_ms());
        };
        if !plan.steps.is_empty() {
            tessera_gpu::execute_plan_observed(self.node.backend(), gpu, plan, &mut mark)
                .map_err(|e| (e.rolled_back, e.to_string()))?;
        }
        // Instances created anew are healthy again (an instance Xid is cured by recreating).
        self.instances_recreated(gpu, plan);
        if let Some(enabled) = mig_mode {
            self.set_mode_now(gpu, enabled).map_err(|e| (false, e))?;
        }
        Ok(())
    }

    /// Turns an idle GPU's MIG mode on or off, journalled: its idle instances are destroyed
    /// first, then the mode is set; a GPU whose model needs a reset for it (A100, A30) is reset.
    pub(crate) fn switch_mig_mode(&mut self, gpu: u32, enabled: bool, for_job: Option<u64>) -> Result<(), String> {
        self.seen = None;
        let view = tessera_gpu::gpu_view(self.backend(), gpu).map_err(|e| e.to_string())?;
        if view.instances.iter().any(|i| i.busy) {
            return Err(format!("GPU {gpu} has instances in use"));
        }
        let plan = if enabled { empty_plan() } else { clear_plan(&view)? };
        self.execute_journalled(gpu, &plan, None, for_job, Some(enabled))
    }

    /// Sets the MIG mode of an idle GPU with no instances, resetting it when its model needs a
    /// reset for the change to take effect.
    pub(crate) fn set_mode_now(&mut self, gpu: u32, enabled: bool) -> Result<(), String> {
        let backend = self.node.backend();
        let mode = match backend.set_mig_mode(gpu, enabled) {
            Ok(m) => m,
            Err(tessera_gpu::BackendError::InUse { what, .. }) => return Err(format!("GPU {gpu}: {what}")),
            Err(e) => return Err(e.to_string()),
        };
        if mode.current == enabled {
            return Ok(());
        }
        // The driver keeps the change pending until the GPU is reset.
        self.reset_gpu(gpu)?;
        let mode = backend.mig_mode(gpu).map_err(|e| e.to_string())?;
        if mode.current != enabled {
            return Err(format!("GPU {gpu}: MIG mode is still {mode} after a reset"));
        }
        Ok(())
    }

    /// Resets an idle GPU through the backend ([`tessera_gpu::MigBackend::reset_gpu`]: the
    /// simulated node's reset, or `nvidia-smi --gpu-reset -i N` on real GPUs).
    pub(crate) fn reset_gpu(&self, gpu: u32) -> Result<(), String> {
        self.node.backend().reset_gpu(gpu).map_err(|e| e.to_string())
    }

    /// Ends a job that can no longer run as decided (its instance vanished, its launch
    /// failed for good).
    pub(crate) fn fail_job(&mut self, id: u64, from: JobState, reason: &str) {
        let exit = ExitInfo { code: None, signal: None, failed_rank: None, detail: reason.to_owned() };
        tracing::warn!(job = id, "job {id} ended failed: {reason}");
        let _ = self.store.finish(id, from, JobState::Failed, reason, exit, tessera_host::now_ms());
    }
}

/// A plan that changes no instance.
pub(crate) fn empty_plan() -> ReconfigurePlan {
    ReconfigurePlan { steps: Vec::new(), target: Vec::new(), unchanged: Vec::new() }
}

/// The plan that destroys every instance of a GPU with MIG on (before MIG is turned off).
pub(crate) fn clear_plan(view: &tessera_gpu::GpuView) -> Result<ReconfigurePlan, String> {
    match view.model {
        Some(model) if view.mig.current && !view.instances.is_empty() => {
            tessera_mig::reconfigure(model, &view.current(), &tessera_mig::Wanted::Layout(Vec::new()))
                .map_err(|e| format!("GPU {}: {e}", view.device.index))
        }
        _ => Ok(empty_plan()),
    }
}
