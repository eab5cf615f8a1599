//! The engine: one round of "look, decide, act", and the answers to API actions.
//!
//! A round reads the hardware (through the backend) and the durable state (the store), asks the
//! pure scheduler for decisions, and carries them out: reconfigurations are journalled before
//! their first step, slices are allocated in the store before a job starts, and a job's
//! supervisor (shim) is launched before the job is marked running. Every change to a job is a
//! compare-and-set transition in the store, so a job is never started twice. All of this is
//! blocking (SQLite, NVML, fork/exec): the async side calls it through `spawn_blocking`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tessera_exec::{JobSpec, LogStream, MpsClient, MpsControl, RankSpec, ShimState, rank_env};
use tessera_gpu::view::{GpuView as LiveGpu, node_view};
use tessera_gpu::{MigBackend, SimBackend};
use tessera_mig::layout::instance_label;
use tessera_mig::{CurrentInstance, Instance, Wanted, reconfigure};
use tessera_sched::{
    ClusterView, Decision, GpuView, HostNuma, InstanceView, JobRequest, Occupant, QueuedJob, RankPlacement, RunningJob,
    Scheduler, SchedulerConfig, Sharing, SliceQuota, Tenant,
};
use tessera_store::{Allocation, ExitInfo, JobFilter, JobRecord, JobState, NewJob, ReconfigOutcome, Store};

use crate::api::{Action, ApiError, Caller, LayoutBody, SubmitBody};
use crate::config::Config;

/// Milliseconds since the Unix epoch: the one clock the shell reads.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The node's GPUs, and the simulated node's extra hooks when that is what they are.
#[derive(Debug)]
pub enum NodeBackend {
    Sim(Box<SimBackend>),
    Other(Box<dyn MigBackend>),
}

impl NodeBackend {
    pub fn get(&self) -> &dyn MigBackend {
        match self {
            NodeBackend::Sim(s) => s.as_ref(),
            NodeBackend::Other(b) => b.as_ref(),
        }
    }
}

/// Everything a round needs, owned by one thread at a time.
pub struct Core {
    pub store: Store,
    pub backend: NodeBackend,
    pub scheduler: Scheduler,
    pub config: Config,
    pub state_dir: PathBuf,
    /// How to start a shim: the executable and the arguments before `--job-dir`.
    pub shim_exe: PathBuf,
    pub shim_args: Vec<String>,
    /// Starts shims, keeping a standby one ready so a launch is a pipe write.
    launcher: tessera_exec::Launcher,
    pub mps: Box<dyn MpsControl>,
    mps_started: BTreeSet<String>,
    drained: BTreeSet<u32>,
    /// Host CPUs the daemon may hand out, per host NUMA node (from the backend's device info).
    host_cpus: BTreeMap<u32, Vec<u32>>,
    /// Host memory per NUMA node, in MiB (sysfs; an equal share of /proc/meminfo where absent).
    host_mem_mib: BTreeMap<u32, u64>,
    /// The fair-share ledger as last saved in the store.
    saved_usage: String,
    saved_usage_ms: u64,
    /// The catalog models of the node's GPUs (they do not change while the daemon runs).
    models: Vec<&'static tessera_mig::GpuModel>,
    gpu_models: BTreeMap<u32, &'static tessera_mig::GpuModel>,
    /// The pending reason last written for each queued job, to write only changes.
    pending: BTreeMap<u64, String>,
    waiting: usize,
    last_round_ms: u64,
    /// The decoded request of each queued job (they never change once stored).
    requests: BTreeMap<u64, JobRequest>,
    /// Counts admin layout changes: a round decided before one is not carried out (its
    /// starts and plans may name instances that are gone), and the next round decides again.
    layout_epoch: u64,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core").field("state_dir", &self.state_dir).finish_non_exhaustive()
    }
}

/// What one round read, and the scheduler lent to it while it decides.
pub struct RoundInput {
    now: u64,
    changed: bool,
    live: Vec<LiveGpu>,
    cluster: ClusterView,
    queue: Vec<QueuedJob>,
    running: Vec<RunningJob>,
    scheduler: Scheduler,
    layout_epoch: u64,
    t0: std::time::Instant,
    t_read: std::time::Duration,
}

impl std::fmt::Debug for RoundInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoundInput").field("now", &self.now).field("queued", &self.queue.len()).finish_non_exhaustive()
    }
}

impl RoundInput {
    /// The pure part of the round: the scheduler's decisions.
    pub fn decide(&mut self) -> Vec<Decision> {
        self.scheduler.schedule(self.now, &self.cluster, &self.queue, &self.running)
    }
}

/// A job as the API shows it.
fn state_name(s: JobState) -> &'static str {
    s.as_str()
}

fn store_err(e: tessera_store::StoreError) -> ApiError {
    ApiError::internal(format!("store: {e}"))
}

pub fn scheduler_config(config: &Config) -> SchedulerConfig {
    SchedulerConfig {
        repartition: config.scheduler.repartition,
        backfill: config.scheduler.backfill,
        preemption: config.scheduler.preemption,
        time_slice_replicas: config.scheduler.time_slice_replicas,
        tenants: config
            .tenants
            .iter()
            .map(|t| Tenant {
                name: t.name.clone(),
                weight: t.weight,
                quota: t.quota.map(|q| SliceQuota { compute_slices: q.compute_slices, memory_slices: q.memory_slices }),
            })
            .collect(),
        ..SchedulerConfig::default()
    }
}

impl Core {
    #[allow(clippy::too_many_arguments)] // Every field is a distinct collaborator of the engine.
    pub fn new(
        store: Store,
        backend: NodeBackend,
        config: Config,
        state_dir: PathBuf,
        shim_exe: PathBuf,
        shim_args: Vec<String>,
        mps: Box<dyn MpsControl>,
    ) -> Result<Core, String> {
        let sc = scheduler_config(&config);
        sc.validate().map_err(|e| format!("scheduler configuration: {e}"))?;
        let mut host_cpus: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        let devices = backend.get().devices().map_err(|e| format!("listing GPUs: {e}"))?;
        let models = devices.iter().filter_map(|d| d.model()).collect();
        let gpu_models = devices.iter().filter_map(|d| d.model().map(|m| (d.index, m))).collect();
        for d in devices {
            let node = d.numa_node.unwrap_or(0);
            let e = host_cpus.entry(node).or_default();
            e.extend(d.local_cpus.iter().copied());
            e.sort_unstable();
            e.dedup();
        }
        let host_mem_mib = host_memory(&host_cpus.keys().copied().collect::<Vec<_>>());
        let mut scheduler = Scheduler::new(sc);
        // Fair share survives restarts: the ledger is saved in the store after each round.
        let saved_usage = store.get_meta("fair_share_usage").ok().flatten().unwrap_or_default();
        if let Ok(usage) = serde_json::from_str::<BTreeMap<String, f64>>(&saved_usage) {
            let now = now_ms();
            for (tenant, slice_ms) in usage {
                scheduler.charge(&tenant, slice_ms, now);
            }
        }
        Ok(Core {
            store,
            backend,
            scheduler,
            config,
            state_dir,
            launcher: tessera_exec::Launcher::new(shim_exe.clone(), shim_args.clone(), true),
            shim_exe,
            shim_args,
            mps,
            mps_started: BTreeSet::new(),
            drained: BTreeSet::new(),
            host_cpus,
            host_mem_mib,
            saved_usage,
            saved_usage_ms: 0,
            models,
            gpu_models,
            pending: BTreeMap::new(),
            waiting: 0,
            layout_epoch: 0,
            requests: BTreeMap::new(),
            last_round_ms: 0,
        })
    }

    fn job_dir(&self, id: u64) -> PathBuf {
        self.state_dir.join("jobs").join(id.to_string())
    }

    fn request_of(rec: &JobRecord) -> Result<JobRequest, String> {
        serde_json::from_value(rec.request.clone())
            .map_err(|e| format!("stored request of job {} is unreadable: {e}", rec.id))
    }

    /// The scheduler's view of what runs: placing and running jobs with their slices.
    fn running_jobs(&self, live: &[LiveGpu]) -> Result<Vec<RunningJob>, String> {
        let allocs = self.store.live_allocations().map_err(|e| e.to_string())?;
        let mut by_job: BTreeMap<u64, Vec<(u32, Allocation)>> = BTreeMap::new();
        for (job, rank, a) in allocs {
            by_job.entry(job).or_default().push((rank, a));
        }
        let recs = self
            .store
            .jobs(&JobFilter { states: vec![JobState::Placing, JobState::Running], ..JobFilter::default() })
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for rec in recs {
            let request = Self::request_of(&rec)?;
            let mut ranks: Vec<(u32, RankPlacement)> = by_job
                .remove(&rec.id)
                .unwrap_or_default()
                .into_iter()
                .map(|(rank, a)| {
                    let numa = live.iter().find(|g| g.device.uuid == a.gpu_uuid).and_then(|g| g.device.numa_node);
                    (
                        rank,
                        RankPlacement {
                            gpu: a.gpu_index,
                            instance: Instance::new(a.profile_id, a.start),
                            cpus: Vec::new(),
                            numa_node: numa,
                        },
                    )
                })
                .collect();
            ranks.sort_by_key(|r| r.0);
            // CPUs are per rank (spec.json); a rank's first placement carries them.
            let cpus = self.job_cpus(rec.id);
            let per_rank = request.instances_per_rank().max(1);
            let mut ranks: Vec<RankPlacement> = ranks.into_iter().map(|r| r.1).collect();
            for (slot, r) in ranks.iter_mut().enumerate() {
                if slot % per_rank == 0 {
                    r.cpus = cpus.get(slot / per_rank).cloned().unwrap_or_default();
                }
            }
            out.push(RunningJob { id: rec.id, request, started_ms: rec.started_ms.unwrap_or(rec.submitted_ms), ranks });
        }
        Ok(out)
    }

    /// CPUs each rank of a running job was given (from its spec file).
    fn job_cpus(&self, id: u64) -> Vec<Vec<u32>> {
        let path = self.job_dir(id).join("spec.json");
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str::<JobSpec>(&t).ok())
            .map(|s| s.ranks.into_iter().map(|r| r.cpus).collect())
            .unwrap_or_default()
    }

    fn cluster_view(&self, live: &[LiveGpu], running: &[RunningJob]) -> ClusterView {
        let mut occupants: BTreeMap<(u32, u32, u8), Vec<Occupant>> = BTreeMap::new();
        for j in running {
            for r in &j.ranks {
                occupants
                    .entry((r.gpu, r.instance.profile_id, r.instance.start))
                    .or_default()
                    .push(Occupant { job: j.id, sharing: j.request.sharing });
            }
        }
        let mut gpus = Vec::new();
        for g in live {
            let Some(model) = g.model else { continue };
            if !g.mig.current {
                continue;
            }
            let instances = g
                .instances
                .iter()
                .map(|i| {
                    let mut occ = occupants
                        .get(&(g.device.index, i.instance.profile_id, i.instance.start))
                        .cloned()
                        .unwrap_or_default();
                    // Work Tessera did not start (another tool's process) makes an instance busy too.
                    if occ.is_empty() && i.busy {
                        occ.push(Occupant { job: 0, sharing: Sharing::Exclusive });
                    }
                    InstanceView { instance: i.instance, occupants: occ }
                })
                .collect();
            gpus.push(GpuView {
                gpu: g.device.index,
                model,
                numa_node: g.device.numa_node,
                healthy: !self.drained.contains(&g.device.index),
                reconfiguring: false,
                instances,
            });
        }
        let mut used: BTreeSet<u32> = BTreeSet::new();
        let mut used_mem: BTreeMap<u32, u64> = BTreeMap::new();
        for j in running {
            for r in &j.ranks {
                used.extend(r.cpus.iter().copied());
            }
            // Host memory is per rank, from the NUMA node of the rank's GPU.
            let mut seen_rank_nodes = 0usize;
            for r in &j.ranks {
                if seen_rank_nodes < usize::try_from(j.request.ranks).unwrap_or(usize::MAX) {
                    *used_mem.entry(r.numa_node.unwrap_or(0)).or_default() += j.request.mem_mib;
                    seen_rank_nodes += 1;
                }
            }
        }
        let host = self
            .host_cpus
            .iter()
            .map(|(node, cpus)| HostNuma {
                node: *node,
                free_cpus: cpus.iter().copied().filter(|c| !used.contains(c)).collect(),
                free_mem_mib: self
                    .host_mem_mib
                    .get(node)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(used_mem.get(node).copied().unwrap_or(0)),
            })
            .collect();
        ClusterView { gpus, host }
    }

    /// Collect the outcome of jobs whose shim has finished; mark lost ones.
    fn collect_finished(&mut self, now: u64) -> Result<usize, String> {
        let recs = self
            .store
            .jobs(&JobFilter { states: vec![JobState::Running], ..JobFilter::default() })
            .map_err(|e| e.to_string())?;
        let mut n = 0;
        for rec in recs {
            let dir = rec.job_dir.clone().map_or_else(|| self.job_dir(rec.id), PathBuf::from);
            let state = match tessera_exec::inspect(&dir, rec.id) {
                Ok(s) => s,
                Err(e) => ShimState::Lost { detail: e.to_string(), survivors: Vec::new() },
            };
            match state {
                ShimState::Running { .. } => continue,
                ShimState::Finished(outcome) => {
                    let to = match outcome.state {
                        tessera_exec::JobState::Succeeded => JobState::Succeeded,
                        tessera_exec::JobState::Failed => JobState::Failed,
                        tessera_exec::JobState::Cancelled => JobState::Cancelled,
                        tessera_exec::JobState::TimedOut => JobState::TimedOut,
                    };
                    let failed = outcome.failed_rank.and_then(|r| outcome.ranks.iter().find(|x| x.rank == r));
                    let first = outcome.ranks.first();
                    let exit = ExitInfo {
                        code: failed.or(first).and_then(|r| r.code),
                        signal: failed.or(first).and_then(|r| r.signal),
                        failed_rank: outcome.failed_rank,
                        detail: outcome.detail.clone(),
                    };
                    self.detach_sim(rec.id);
                    self.store
                        .finish(rec.id, JobState::Running, to, &outcome.detail, exit, now)
                        .map_err(|e| e.to_string())?;
                }
                ShimState::Lost { detail, .. } => {
                    let _ = tessera_exec::kill_orphans(&dir, rec.id);
                    self.detach_sim(rec.id);
                    let reason = format!("its supervisor died without recording an exit status: {detail}");
                    let exit = ExitInfo { code: None, signal: None, failed_rank: None, detail: reason.clone() };
                    self.store
                        .finish(rec.id, JobState::Running, JobState::Lost, &reason, exit, now)
                        .map_err(|e| e.to_string())?;
                }
            }
            n += 1;
        }
        Ok(n)
    }

    /// The simulated node shows a job's instances busy while it runs, as NVML would.
    fn attach_sim(&self, job: u64, gpu: u32, gi: u32, ci: u32, pid: u32) {
        if let NodeBackend::Sim(s) = &self.backend {
            let _ = s.attach_process(gpu, gi, ci, pid, &format!("tessera-job-{job}"));
        }
    }

    fn detach_sim(&self, job: u64) {
        let NodeBackend::Sim(s) = &self.backend else { return };
        let Ok(allocs) = self.store.job_allocations(job) else { return };
        let pid = self.store.job(job).ok().flatten().and_then(|r| r.shim_pid);
        for a in allocs {
            if let Some(pid) = pid {
                let _ = s.detach_process(a.allocation.gpu_index, pid);
            }
        }
    }

    /// Jobs left waiting after the last round.
    pub fn queued_after_round(&self) -> usize {
        self.waiting
    }

    /// One round: collect finished jobs, read the GPUs and the store, schedule, act. Returns
    /// whether anything changed (so the caller can run again soon).
    pub fn round(&mut self) -> Result<bool, String> {
        let mut input = self.prepare_round()?;
        let decisions = input.decide();
        Ok(self.finish_round(input, decisions))
    }

    /// The first half of a round: collect finished jobs and read everything the scheduler needs.
    /// The scheduler itself is lent to the returned input, so deciding can run without holding
    /// the engine (submissions and queries go on meanwhile); `finish_round` gives it back.
    pub fn prepare_round(&mut self) -> Result<RoundInput, String> {
        let t0 = std::time::Instant::now();
        let now = now_ms();
        let mut changed = self.collect_finished(now)? > 0;
        let backend = self.backend.get();
        let live = node_view(backend).map_err(|e| format!("reading the GPUs: {e}"))?;
        let running = self.running_jobs(&live)?;
        let cluster = self.cluster_view(&live, &running);
        // Requests never change once stored: each is read and decoded once, then cached.
        let queued = self.store.queued_ids().map_err(|e| e.to_string())?;
        let mut queue = Vec::with_capacity(queued.len());
        for (id, submitted_ms) in queued {
            let request = match self.requests.get(&id) {
                Some(r) => r.clone(),
                None => {
                    let Ok(Some(rec)) = self.store.job(id) else { continue };
                    match Self::request_of(&rec) {
                        Ok(r) => {
                            self.requests.insert(id, r.clone());
                            r
                        }
                        Err(reason) => {
                            let exit = ExitInfo { code: None, signal: None, failed_rank: None, detail: reason.clone() };
                            let _ = self.store.finish(id, JobState::Queued, JobState::Failed, &reason, exit, now);
                            changed = true;
                            continue;
                        }
                    }
                }
            };
            queue.push(QueuedJob { id, request, submitted_ms });
        }
        let ids: BTreeSet<u64> = queue.iter().map(|q| q.id).collect();
        self.requests.retain(|id, _| ids.contains(id));
        self.pending.retain(|id, _| ids.contains(id));
        self.last_round_ms = now;
        let placeholder = Scheduler::new(scheduler_config(&self.config));
        let scheduler = std::mem::replace(&mut self.scheduler, placeholder);
        let layout_epoch = self.layout_epoch;
        Ok(RoundInput {
            now,
            changed,
            live,
            cluster,
            queue,
            running,
            scheduler,
            layout_epoch,
            t0,
            t_read: t0.elapsed(),
        })
    }

    /// The second half of a round: take the scheduler back and carry out its decisions. Each one
    /// is checked again against the store (compare-and-set), so a job cancelled meanwhile is
    /// not started.
    pub fn finish_round(&mut self, input: RoundInput, decisions: Vec<Decision>) -> bool {
        let RoundInput { now, mut changed, live, queue, running, scheduler, layout_epoch, t0, t_read, .. } = input;
        self.scheduler = scheduler;
        if layout_epoch != self.layout_epoch {
            // An admin changed a layout while this round decided: decide again on what is there.
            return true;
        }
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
                    self.apply_reconfigure(&live, gpu, &plan, for_job, now);
                }
                Decision::Start { job, ranks } => {
                    changed = true;
                    if let Some(q) = queue.iter().find(|q| q.id == job)
                        && let Ok(Some(rec)) = self.store.job(job)
                    {
                        self.start(&rec, &q.request, &ranks, now);
                    }
                }
                Decision::Preempt { job, for_job } => {
                    changed = true;
                    let _ = self.store.set_meta(&format!("preempted/{job}"), &for_job.to_string());
                    let _ = tessera_exec::cancel(&self.job_dir(job));
                }
            }
        }
        // Save the fair-share ledger every few seconds (a crash loses at most that much usage).
        if now.saturating_sub(self.saved_usage_ms) >= 5_000 {
            let usage = serde_json::to_string(self.scheduler.usages()).unwrap_or_default();
            if usage != self.saved_usage && self.store.set_meta("fair_share_usage", &usage).is_ok() {
                self.saved_usage = usage;
            }
            self.saved_usage_ms = now;
        }
        if std::env::var_os("TESSERA_TRACE_ROUNDS").is_some() {
            eprintln!(
                "round: read {:?}, schedule {:?}, act {:?} ({} queued, {} running)",
                t_read,
                t_sched.saturating_sub(t_read),
                t0.elapsed().saturating_sub(t_sched),
                queue.len(),
                running.len()
            );
        }
        changed
    }

    fn apply_reconfigure(
        &mut self,
        live: &[LiveGpu],
        gpu: u32,
        plan: &tessera_mig::ReconfigurePlan,
        for_job: u64,
        now: u64,
    ) {
        let Some(g) = live.iter().find(|g| g.device.index == gpu) else { return };
        let plan_json = json!({"target": plan.target, "steps": plan.steps});
        if let Err(Some(e)) = self.execute_journalled(gpu, &g.device.uuid, plan, &plan_json, Some(for_job), now) {
            let _ = self.store.set_pending_reason(for_job, &format!("reconfiguring: GPU {gpu} failed: {e}"));
        }
    }

    /// Carries out a plan through the reconfiguration journal: begun, each step marked as soon
    /// as it is done, then finished as completed, rolled back or abandoned. `Err(None)`: the
    /// journal could not be begun, nothing was done; `Err(Some(why))`: the plan failed.
    fn execute_journalled(
        &self,
        gpu: u32,
        gpu_uuid: &str,
        plan: &tessera_mig::ReconfigurePlan,
        plan_json: &Value,
        for_job: Option<u64>,
        now: u64,
    ) -> Result<(), Option<String>> {
        let id = self.store.begin_reconfig(gpu_uuid, gpu, plan_json, for_job, now).map_err(|_| None)?;
        let store = &self.store;
        let mut mark = |k: usize, line: &str| {
            let _ = store.step_done(id, u32::try_from(k).unwrap_or(u32::MAX), &json!(line), now_ms());
        };
        match tessera_gpu::execute_plan_observed(self.backend.get(), gpu, plan, &mut mark) {
            Ok(_) => {
                let _ = self.store.finish_reconfig(id, ReconfigOutcome::Completed, now_ms());
                Ok(())
            }
            Err(e) => {
                let outcome = if e.rolled_back {
                    ReconfigOutcome::RolledBack
                } else {
                    ReconfigOutcome::Abandoned { detail: e.to_string() }
                };
                let _ = self.store.finish_reconfig(id, outcome, now_ms());
                Err(Some(e.to_string()))
            }
        }
    }

    /// Allocate, launch the shim, mark running. Any failure fails the job with the reason and
    /// releases its slices (the store does that in the same transaction).
    fn start(&mut self, rec: &JobRecord, request: &JobRequest, ranks: &[RankPlacement], now: u64) {
        let id = rec.id;
        if self.store.transition(id, JobState::Queued, JobState::Placing, "placing", now).is_err() {
            return;
        }
        match self.launch(rec, request, ranks, now) {
            Ok(()) => {}
            Err(reason) => {
                let exit = ExitInfo { code: None, signal: None, failed_rank: None, detail: reason.clone() };
                let _ = self.store.finish(id, JobState::Placing, JobState::Failed, &reason, exit, now_ms());
            }
        }
    }

    fn launch(
        &mut self,
        rec: &JobRecord,
        request: &JobRequest,
        ranks: &[RankPlacement],
        now: u64,
    ) -> Result<(), String> {
        let id = rec.id;
        let backend = self.backend.get();
        // The scheduler lists one placement per instance, rank by rank.
        let per_rank = request.instances_per_rank().max(1);
        let world = u32::try_from(ranks.len() / per_rank).unwrap_or(u32::MAX);
        let mut views: BTreeMap<u32, LiveGpu> = BTreeMap::new();
        let mut rank_specs = Vec::new();
        let mut attach = Vec::new();
        for (rank_index, chunk) in ranks.chunks(per_rank).enumerate() {
            let rank = u32::try_from(rank_index).unwrap_or(u32::MAX);
            let mut uuids = Vec::new();
            let mut cpus = Vec::new();
            let mut numa_node = None;
            let mut mps = None;
            for (j, r) in chunk.iter().enumerate() {
                let slot = u32::try_from(rank_index * per_rank + j).unwrap_or(u32::MAX);
                if let std::collections::btree_map::Entry::Vacant(e) = views.entry(r.gpu) {
                    e.insert(tessera_gpu::gpu_view(backend, r.gpu).map_err(|e| format!("reading GPU {}: {e}", r.gpu))?);
                }
                let view = &views[&r.gpu];
                let live = view
                    .instances
                    .iter()
                    .find(|i| i.instance.profile_id == r.instance.profile_id && i.instance.start == r.instance.start)
                    .ok_or_else(|| {
                        format!("GPU {}: the planned instance at unit {} is not there", r.gpu, r.instance.start)
                    })?;
                let ci = live
                    .compute_instances
                    .first()
                    .ok_or_else(|| format!("GPU {}: {} has no compute instance", r.gpu, live.label()))?;
                let alloc = Allocation {
                    gpu_uuid: view.device.uuid.clone(),
                    gpu_index: r.gpu,
                    profile_id: r.instance.profile_id,
                    start: r.instance.start,
                    gpu_instance_id: Some(live.gpu_instance_id),
                    compute_instance_id: Some(ci.id),
                    mig_uuid: Some(ci.uuid.clone()),
                    exclusive: matches!(request.sharing, Sharing::Exclusive),
                };
                self.store.allocate(id, slot, &alloc).map_err(|e| format!("allocating {}: {e}", live.label()))?;
                if let Sharing::Mps { active_thread_pct, pinned_mem_mib } = request.sharing {
                    let pipe = self.state_dir.join("mps").join(&ci.uuid).join("pipe");
                    let log = self.state_dir.join("mps").join(&ci.uuid).join("log");
                    if self.mps_started.insert(ci.uuid.clone()) {
                        self.mps
                            .start(&ci.uuid, &pipe, &log, rec.user_uid)
                            .map_err(|e| format!("starting MPS: {e}"))?;
                    }
                    mps = Some(MpsClient {
                        pipe_dir: pipe,
                        log_dir: log,
                        active_thread_percentage: Some(u32::from(active_thread_pct)),
                        pinned_device_mem_limit_mib: pinned_mem_mib,
                    });
                }
                uuids.push(ci.uuid.clone());
                cpus.extend(r.cpus.iter().copied());
                numa_node = numa_node.or(r.numa_node);
                attach.push((r.gpu, live.gpu_instance_id, ci.id));
            }
            let env = rank_env(id, rank, world, &uuids, mps.as_ref());
            rank_specs.push(RankSpec {
                rank,
                env,
                cpus,
                mem_node: if matches!(request.numa, tessera_sched::NumaPolicy::Local) { numa_node } else { None },
            });
        }
        let euid = tessera_host::effective_uid();
        let (uid, gid, groups) = if euid == 0 {
            match tessera_host::user_by_uid(rec.user_uid) {
                Ok(Some(u)) => (u.uid, u.gid, u.groups),
                _ => (rec.user_uid, rec.user_uid, vec![rec.user_uid]),
            }
        } else {
            (euid, tessera_host::effective_gid(), Vec::new())
        };
        let spec = JobSpec {
            job_id: id,
            argv: rec.command.clone(),
            env: rec.env.clone(),
            cwd: PathBuf::from(&rec.cwd),
            uid,
            gid,
            groups,
            ranks: rank_specs,
            time_limit_ms: request.time_limit_ms,
            kill_grace_ms: self.config.scheduler.kill_grace_ms,
        };
        let dir = self.job_dir(id);
        let pid = self.launcher.launch(&dir, &spec).map_err(|e| format!("starting the job: {e}"))?;
        self.store.set_runtime(id, &dir.display().to_string(), pid, now).map_err(|e| e.to_string())?;
        for (gpu, gi, ci) in attach {
            self.attach_sim(id, gpu, gi, ci, pid);
        }
        let placed: Vec<String> = ranks
            .iter()
            .map(|r| {
                let model = self.gpu_models.get(&r.gpu);
                model.map_or_else(
                    || format!("GPU {}", r.gpu),
                    |m| format!("GPU {} {}", r.gpu, instance_label(m, &r.instance)),
                )
            })
            .collect();
        self.store
            .transition(
                id,
                JobState::Placing,
                JobState::Running,
                &format!("running on {}", placed.join(", ")),
                now_ms(),
            )
            .map_err(|e| e.to_string())
    }

    /// After a restart: finish or resume half-done reconfigurations, adopt or settle jobs.
    pub fn recover(&mut self) -> Result<Vec<String>, String> {
        let mut notes = Vec::new();
        let now = now_ms();
        for r in self.store.open_reconfigs().map_err(|e| e.to_string())? {
            let target: Result<Vec<Instance>, _> = serde_json::from_value(r.plan["target"].clone());
            let outcome = match target {
                Ok(target) => {
                    let view = tessera_gpu::gpu_view(self.backend.get(), r.gpu_index).map_err(|e| e.to_string())?;
                    let current: Vec<CurrentInstance> = view.current();
                    match view.model.map(|m| reconfigure(m, &current, &Wanted::Layout(target))) {
                        Some(Ok(plan)) => match tessera_gpu::execute_plan(self.backend.get(), r.gpu_index, &plan) {
                            Ok(_) => {
                                notes.push(format!(
                                    "GPU {}: resumed reconfiguration {} ({} step(s) left)",
                                    r.gpu_index,
                                    r.id,
                                    plan.steps.len()
                                ));
                                ReconfigOutcome::Completed
                            }
                            Err(e) => ReconfigOutcome::Abandoned { detail: format!("resuming failed: {e}") },
                        },
                        Some(Err(e)) => ReconfigOutcome::Abandoned { detail: format!("cannot resume: {e}") },
                        None => ReconfigOutcome::Abandoned { detail: "GPU model unknown".into() },
                    }
                }
                Err(e) => ReconfigOutcome::Abandoned { detail: format!("unreadable plan: {e}") },
            };
            if let ReconfigOutcome::Abandoned { detail } = &outcome {
                notes.push(format!("GPU {}: reconfiguration {} abandoned: {detail}", r.gpu_index, r.id));
            }
            self.store.finish_reconfig(r.id, outcome, now).map_err(|e| e.to_string())?;
        }
        let active = self
            .store
            .jobs(&JobFilter { states: vec![JobState::Placing, JobState::Running], ..JobFilter::default() })
            .map_err(|e| e.to_string())?;
        for rec in active {
            let dir = rec.job_dir.clone().map_or_else(|| self.job_dir(rec.id), PathBuf::from);
            let launched = dir.join("shim.pid").exists();
            if rec.state == JobState::Placing && !launched {
                self.store
                    .transition(
                        rec.id,
                        JobState::Placing,
                        JobState::Queued,
                        "requeued after a daemon restart: it had not started",
                        now,
                    )
                    .map_err(|e| e.to_string())?;
                notes.push(format!("job {}: requeued (had not started)", rec.id));
                continue;
            }
            if rec.state == JobState::Placing {
                // Launched but not yet marked running: the shim owns it now.
                self.store
                    .transition(rec.id, JobState::Placing, JobState::Running, "adopted after a daemon restart", now)
                    .map_err(|e| e.to_string())?;
            }
            if let Ok(ShimState::Running { shim_pid }) = tessera_exec::inspect(&dir, rec.id) {
                notes.push(format!("job {}: adopted (shim pid {shim_pid})", rec.id));
            }
        }
        let n = self.collect_finished(now)?;
        if n > 0 {
            notes.push(format!("{n} job(s) ended while the daemon was down"));
        }
        Ok(notes)
    }

    // ---- API actions -------------------------------------------------------------------------

    fn job_json(&self, rec: &JobRecord, detail: bool) -> Value {
        // Allocations are per instance; a rank may hold several.
        let per_rank = Self::request_of(rec).map_or(1, |r| r.instances_per_rank().max(1));
        let rank_cpus = self.job_cpus(rec.id);
        let ranks: Vec<Value> = self
            .store
            .job_allocations(rec.id)
            .unwrap_or_default()
            .iter()
            .filter(|a| a.released_ms.is_none() || rec.state.is_terminal())
            .map(|a| {
                let model = self.gpu_models.get(&a.allocation.gpu_index);
                let rank = usize::try_from(a.rank).unwrap_or(usize::MAX) / per_rank;
                json!({
                    "rank": rank, "gpu": a.allocation.gpu_index, "gpu_uuid": a.allocation.gpu_uuid,
                    "cpus": rank_cpus.get(rank).map(tessera_host::format_cpulist),
                    "profile": model.and_then(|m| m.profile_by_id(a.allocation.profile_id)).map(|p| p.name.clone()),
                    "profile_id": a.allocation.profile_id, "start": a.allocation.start,
                    "gpu_instance_id": a.allocation.gpu_instance_id, "mig_uuid": a.allocation.mig_uuid,
                    "exclusive": a.allocation.exclusive,
                })
            })
            .collect();
        let mut v = json!({
            "id": rec.id, "user": rec.user_name, "uid": rec.user_uid, "tenant": rec.tenant, "priority": rec.priority,
            "state": state_name(rec.state), "reason": rec.reason, "command": rec.command, "cwd": rec.cwd,
            "submitted_ms": rec.submitted_ms, "started_ms": rec.started_ms, "ended_ms": rec.ended_ms,
            "resources": rec.request, "ranks": ranks,
            "exit": rec.exit.as_ref().map(|e| json!({"code": e.code, "signal": e.signal, "failed_rank": e.failed_rank, "detail": e.detail})),
        });
        if detail {
            v["events"] = json!(
                self.store
                    .events(rec.id)
                    .unwrap_or_default()
                    .iter()
                    .map(|e| json!({
                        "from": state_name(e.from), "to": state_name(e.to), "reason": e.reason, "at_ms": e.at_ms
                    }))
                    .collect::<Vec<_>>()
            );
        }
        v
    }

    fn owned(&self, caller: &Caller, id: u64) -> Result<JobRecord, ApiError> {
        let rec = self.store.job(id).map_err(store_err)?.ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
        if rec.user_uid != caller.uid && !caller.admin {
            return Err(ApiError::forbidden(format!("job {id} belongs to another user")));
        }
        Ok(rec)
    }

    /// Answer an action that does not wait. (`Wait` is handled by the async side.)
    pub fn act(&mut self, caller: &Caller, action: Action) -> Result<Value, ApiError> {
        match action {
            Action::Submit(body) => self.submit(caller, body),
            Action::ListJobs { states, all } => {
                if all && !caller.admin {
                    return Err(ApiError::forbidden("only admins list every user's jobs"));
                }
                let states = states
                    .iter()
                    .map(|s| {
                        s.parse::<JobState>().map_err(|_| ApiError::bad_request(format!("unknown job state '{s}'")))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let filter = JobFilter { states, user_uid: (!all).then_some(caller.uid), ..JobFilter::default() };
                let jobs = self.store.jobs(&filter).map_err(store_err)?;
                Ok(json!({"jobs": jobs.iter().map(|j| self.job_json(j, false)).collect::<Vec<_>>()}))
            }
            Action::GetJob { id } => {
                let rec = self.owned(caller, id)?;
                Ok(self.job_json(&rec, true))
            }
            Action::Cancel { id } => {
                let rec = self.owned(caller, id)?;
                let now = now_ms();
                match rec.state {
                    JobState::Queued => {
                        let exit = ExitInfo {
                            code: None,
                            signal: None,
                            failed_rank: None,
                            detail: format!("cancelled by {}", caller.user),
                        };
                        self.store
                            .finish(
                                id,
                                JobState::Queued,
                                JobState::Cancelled,
                                &format!("cancelled by {} before it started", caller.user),
                                exit,
                                now,
                            )
                            .map_err(|e| ApiError::conflict(e.to_string()))?;
                        Ok(json!({"id": id, "state": "cancelled"}))
                    }
                    JobState::Placing | JobState::Running => {
                        let dir = rec.job_dir.clone().map_or_else(|| self.job_dir(id), PathBuf::from);
                        tessera_exec::cancel(&dir)
                            .map_err(|e| ApiError::internal(format!("cancelling job {id}: {e}")))?;
                        Ok(json!({"id": id, "state": "cancelling"}))
                    }
                    s => Err(ApiError::conflict(format!("job {id} has already ended ({s})"))),
                }
            }
            Action::Logs { id, rank, stream, offset } => {
                let rec = self.owned(caller, id)?;
                let Some(dir) = rec.job_dir.clone() else {
                    return Ok(json!({"data": "", "next_offset": 0, "job_ended": rec.state.is_terminal()}));
                };
                let s = if stream == "stderr" { LogStream::Stderr } else { LogStream::Stdout };
                let (bytes, next) = tessera_exec::tail_stream(std::path::Path::new(&dir), rank, s, offset)
                    .map_err(|e| ApiError::not_found(format!("job {id} rank {rank}: {e}")))?;
                Ok(
                    json!({"data": String::from_utf8_lossy(&bytes), "next_offset": next, "job_ended": rec.state.is_terminal()}),
                )
            }
            Action::Wait { id, .. } => {
                let rec = self.owned(caller, id)?;
                Ok(self.job_json(&rec, false))
            }
            Action::Gpus => self.gpus_json(),
            Action::Drain { gpu, drain } => {
                if !caller.admin {
                    return Err(ApiError::forbidden("only admins drain GPUs"));
                }
                let n = self.backend.get().devices().map_err(|e| ApiError::internal(e.to_string()))?.len();
                if usize::try_from(gpu).unwrap_or(usize::MAX) >= n {
                    return Err(ApiError::not_found(format!("no GPU {gpu} (the node has {n})")));
                }
                if drain {
                    self.drained.insert(gpu);
                } else {
                    self.drained.remove(&gpu);
                }
                Ok(json!({"gpu": gpu, "drained": drain}))
            }
            Action::Layout { gpu, body } => self.change_layout(caller, gpu, body),
            Action::Health => {
                let counts = self.store.count_by_state().map_err(store_err)?;
                Ok(json!({
                    "backend": self.backend.get().kind().to_string(),
                    "jobs": counts.iter().map(|(k, v)| (k.as_str().to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
                    "drained": self.drained,
                    "last_round_ms": self.last_round_ms,
                }))
            }
        }
    }

    /// An admin's layout change: planned by the planner, which never touches a busy instance
    /// (one a job holds or a process uses), and carried out through the reconfiguration journal.
    fn change_layout(&mut self, caller: &Caller, gpu: u32, body: LayoutBody) -> Result<Value, ApiError> {
        if !caller.admin {
            return Err(ApiError::forbidden("only admins change MIG layouts"));
        }
        let backend = self.backend.get();
        let view = tessera_gpu::gpu_view(backend, gpu).map_err(|e| ApiError::not_found(e.to_string()))?;
        let Some(model) = view.model else {
            return Err(ApiError::conflict(format!("GPU {gpu} ({}) is not in the catalog", view.device.name)));
        };
        let mut specs = Vec::new();
        for (i, text) in body.instances.iter().enumerate() {
            let spec = model.instance_spec(text).map_err(|e| ApiError::bad_request(format!("instances[{i}]: {e}")))?;
            specs.push(spec);
        }
        let placed = specs.iter().filter(|(_, start)| start.is_some()).count();
        let wanted = if placed == 0 {
            Wanted::Profiles(specs.iter().map(|(w, _)| *w).collect())
        } else if placed == specs.len() {
            Wanted::Layout(
                specs
                    .iter()
                    .map(|(w, start)| Instance {
                        profile_id: w.profile_id,
                        start: start.unwrap_or(0),
                        compute: w.compute,
                    })
                    .collect(),
            )
        } else {
            return Err(ApiError::bad_request(
                "instances: give a start (PROFILE@START) for every instance or for none",
            ));
        };
        // Busy: a process uses it, or a job holds it (it may not have started its processes yet).
        let held: BTreeSet<(u32, u8)> = self
            .store
            .live_allocations()
            .map_err(store_err)?
            .into_iter()
            .filter(|(_, _, a)| a.gpu_index == gpu)
            .map(|(_, _, a)| (a.profile_id, a.start))
            .collect();
        let mut current = view.current();
        for c in &mut current {
            c.busy |= held.contains(&(c.instance.profile_id, c.instance.start));
        }
        let plan = reconfigure(model, &current, &wanted).map_err(|e| match e {
            tessera_mig::ReconfigureError::BusyInstancesBlock { .. } => ApiError::conflict(format!("GPU {gpu}: {e}")),
            other => ApiError::unprocessable(format!("GPU {gpu}: {other}")),
        })?;
        let label = |i: &Instance| instance_label(model, i);
        let steps: Vec<String> = plan
            .steps
            .iter()
            .map(|s| match s {
                tessera_mig::Step::Destroy { instance, .. } => format!("destroy {}", label(instance)),
                tessera_mig::Step::Create { instance } => format!("create {}", label(instance)),
            })
            .collect();
        let layout: Vec<String> = plan.target.iter().map(label).collect();
        if body.dry_run || plan.is_empty() {
            return Ok(
                json!({"gpu": gpu, "dry_run": body.dry_run, "steps": steps, "layout": layout, "changed": false}),
            );
        }
        let plan_json = json!({"target": plan.target, "steps": plan.steps, "by": caller.user});
        self.layout_epoch += 1;
        match self.execute_journalled(gpu, &view.device.uuid, &plan, &plan_json, None, now_ms()) {
            Ok(()) => Ok(json!({"gpu": gpu, "dry_run": false, "steps": steps, "layout": layout, "changed": true})),
            Err(None) => Err(ApiError::internal("cannot write the reconfiguration journal")),
            Err(Some(e)) => Err(ApiError::conflict(format!("GPU {gpu}: the layout change failed: {e}"))),
        }
    }

    fn submit(&mut self, caller: &Caller, body: SubmitBody) -> Result<Value, ApiError> {
        if body.command.is_empty() || body.command[0].is_empty() {
            return Err(ApiError::bad_request("command is empty"));
        }
        if !body.cwd.starts_with('/') {
            return Err(ApiError::bad_request(format!("cwd '{}' must be an absolute path", body.cwd)));
        }
        let mut request: JobRequest = serde_json::from_value(body.resources.clone())
            .map_err(|e| ApiError::bad_request(format!("resources: {e}")))?;
        if request.tenant.is_empty() {
            request.tenant = caller.tenant.clone();
        } else if request.tenant != caller.tenant && !caller.admin {
            return Err(ApiError::forbidden(format!(
                "user {} belongs to tenant '{}', not '{}'",
                caller.user, caller.tenant, request.tenant
            )));
        }
        request.validate().map_err(|e| ApiError::bad_request(format!("resources: {e}")))?;
        let mut why = Vec::new();
        if !self.models.iter().any(|m| match request.resolve(m) {
            Ok(_) => true,
            Err(e) => {
                why.push(e.to_string());
                false
            }
        }) {
            why.dedup();
            return Err(ApiError::unprocessable(format!("no GPU on this node can run it: {}", why.join("; "))));
        }
        let whole = matches!(request.gpu, tessera_sched::GpuRequest::WholeGpu) && !request.sharing.is_shared();
        if whole && request.placement_units() as usize > self.models.len() {
            return Err(ApiError::unprocessable(format!(
                "no GPU on this node can run it: it needs {} whole GPUs and this node has {}",
                request.placement_units(),
                self.models.len()
            )));
        }
        let job = NewJob {
            user_uid: caller.uid,
            user_name: caller.user.clone(),
            tenant: request.tenant.clone(),
            priority: request.priority,
            request: serde_json::to_value(&request).map_err(|e| ApiError::internal(e.to_string()))?,
            command: body.command,
            env: body.env.into_iter().collect(),
            cwd: body.cwd,
            submitted_ms: now_ms(),
        };
        let id = self.store.insert_job(&job).map_err(store_err)?;
        Ok(json!({"id": id}))
    }

    fn gpus_json(&self) -> Result<Value, ApiError> {
        let live = node_view(self.backend.get()).map_err(|e| ApiError::internal(e.to_string()))?;
        let allocs = self.store.live_allocations().map_err(store_err)?;
        let gpus: Vec<Value> = live
            .iter()
            .map(|g| {
                json!({
                    "index": g.device.index, "name": g.device.name, "uuid": g.device.uuid,
                    "model": g.model.map(|m| m.name.clone()), "numa_node": g.device.numa_node,
                    "mig": g.mig.current, "drained": self.drained.contains(&g.device.index),
                    "instances": g.instances.iter().map(|i| {
                        let jobs: Vec<u64> = allocs.iter()
                            .filter(|(_, _, a)| a.gpu_uuid == g.device.uuid && a.profile_id == i.instance.profile_id && a.start == i.instance.start)
                            .map(|(j, _, _)| *j).collect();
                        json!({"gpu_instance_id": i.gpu_instance_id, "profile": i.profile_name, "profile_id": i.instance.profile_id,
                               "start": i.instance.start, "size": i.placement_size, "jobs": jobs,
                               "mig_uuid": i.compute_instances.first().map(|c| c.uuid.clone())})
                    }).collect::<Vec<_>>(),
                })
            })
            .collect();
        Ok(json!({"backend": self.backend.get().kind().to_string(), "gpus": gpus}))
    }
}

/// MiB of memory on each host NUMA node: `/sys/devices/system/node/node<N>/meminfo`, or an equal
/// share of `/proc/meminfo`'s total for nodes the machine does not have (a simulated node's).
fn host_memory(nodes: &[u32]) -> BTreeMap<u32, u64> {
    let kb = |text: &str| {
        text.lines()
            .find(|l| l.contains("MemTotal:"))
            .and_then(|l| l.split_whitespace().rev().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| kb(&t)).unwrap_or(0) / 1024;
    let share = total / u64::try_from(nodes.len().max(1)).unwrap_or(1);
    let own: Vec<Option<u64>> = nodes
        .iter()
        .map(|n| {
            std::fs::read_to_string(format!("/sys/devices/system/node/node{n}/meminfo"))
                .ok()
                .and_then(|t| kb(&t))
                .map(|k| k / 1024)
        })
        .collect();
    // Either every node is real (use sysfs) or the node is simulated (share the machine's total).
    let all_real = own.iter().all(Option::is_some);
    nodes.iter().zip(own).map(|(n, o)| (*n, if all_real { o.unwrap_or(share) } else { share })).collect()
}
