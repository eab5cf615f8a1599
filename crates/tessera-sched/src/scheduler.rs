//! The scheduler: one round turns the cluster, the queue and the running jobs into decisions.
//!
//! # Order
//!
//! Jobs are taken by priority (high first). Within one priority, the next job comes from the
//! tenant with the smallest fair-share key, `(decayed usage + usage projected for this round's
//! starts) / weight` (ties by tenant name), and each tenant's jobs go by submit time, then id.
//! A start projects its slices × its expected run (at most one half-life; one half-life when
//! unknown), so free capacity within one round is shared out progressively rather than all
//! going to whoever was lowest when the round began; from the next round on, only real usage
//! counts.
//!
//! # Fair share
//!
//! Usage is compute slices × milliseconds. Every round, before deciding, the scheduler charges
//! each running job's tenant for the slices it holds × the time since the previous round (or
//! since the job started, if later); a shared instance is charged by share (MPS: its active
//! thread percentage; time-slicing: one replica's share). Usage decays with a half-life of
//! `fair_share_half_life_ms`. [`Scheduler::charge`] adds usage by hand.
//!
//! # Quotas
//!
//! A tenant's quota counts the compute and memory slices of the instances its running jobs and
//! this round's starts hold (shared instances by share, as above). A job that would take the
//! tenant past either limit waits with [`PendingReason::Quota`].
//!
//! # Reservation and backfill
//!
//! The first job in the order that cannot start for want of room (capacity, fragmentation, or
//! capacity taken this round) gets the round's one reservation: the placement units where it
//! can start soonest, found by replaying the expected ends of the running jobs (start + runtime
//! estimate, capped by the time limit; unknown without either). The reservation is kept across
//! rounds until the job starts or leaves the queue; only a job of strictly higher priority
//! takes it over. While it stands, no other job of the same or lower priority may use those
//! units, unless backfill is on, the reservation's start time is known, and the job's own
//! expected run (estimate, else time limit) ends by then. Jobs of higher priority ignore it.
//!
//! # Preemption
//!
//! With `preemption` on, a job that cannot start looks at running jobs of strictly lower
//! priority that allow requeueing (`requeue`, the default; the daemon stops them and queues
//! them again) (lowest first, then the most recently started; at most 32), takes them away one by
//! one until it would fit, then keeps only those it really needs. It gets a
//! [`Decision::Preempt`] for each and waits with [`PendingReason::Priority`]; their room is
//! held for it until they are gone.
//!
//! # Reasons
//!
//! A job that waits gets the reason that names its real blocker ([`PendingReason`]): a GPU
//! with a slice for it whose host NUMA node lacks CPUs or memory says `host_cpus` or
//! `host_memory`, not `fragmentation`; see `scheduler/reasons.rs` for the order.
//!
//! # MIG modes
//!
//! A GPU with MIG off is one whole-GPU instance (see [`crate::cluster`]): it serves whole-GPU,
//! memory- and compute-sized requests, never a named MIG profile, and is never repartitioned. A
//! rank sees all its devices in one process, so it may hold more than one MIG device only where
//! the driver allows (`ClusterView::max_mig_devices_per_process`); a rank of several whole GPUs
//! prefers GPUs with MIG off (MIG devices have no peer-to-peer) on one host NUMA node. With
//! `mig_mode_switching`, see `scheduler/mode.rs`.
//!
//! # Two phases
//!
//! A job that fits only after a repartition gets a [`Decision::Reconfigure`] for each GPU
//! involved and a [`PendingReason::Reconfiguring`] pending decision. There is at most one plan
//! per GPU per round, from the layout at the start of the round: when several jobs need the
//! same GPU reshaped, the plan grows to serve them all and `for_job` names the first. Everything
//! a job will use is then held for it: the daemon applies the plan (marking the GPU
//! `reconfiguring` from the moment it takes the decision until the plan is done or abandoned),
//! and in a later round the new instances are free and the job starts there. A hold is dropped
//! when the job leaves the queue, when the plan's instances do not appear (the daemon gave up),
//! or when the job still cannot start once they have.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use tessera_mig::{Instance, Planner, Step};

mod mode;
mod preempt;
mod reasons;
mod reserve;

use crate::cluster::{ClusterView, JobId, SliceQuota, Tenant};
use crate::fairshare::Ledger;
use crate::job::{Decision, PendingReason, QueuedJob, RunningJob};
use crate::placement::{
    Ctx, Failure, Placed, Planners, WState, attempt, charge_milli, min_charge, needs_per_gpu, pin_conflict,
};
use crate::request::{GpuRequest, JobRequest, Need, NumaPolicy, Sharing, profile_name};

/// How the scheduler behaves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    /// Reshape idle capacity (create and destroy idle instances) to fit waiting jobs.
    pub repartition: bool,
    /// Let jobs that end before a reservation starts use its units.
    pub backfill: bool,
    /// Stop lower-priority jobs to make room for higher ones.
    pub preemption: bool,
    /// Jobs that may share one time-sliced instance.
    pub time_slice_replicas: u32,
    /// Fair-share usage halves every this many milliseconds.
    pub fair_share_half_life_ms: u64,
    pub tenants: Vec<Tenant>,
    /// Weight of a tenant not listed in `tenants` (no quota).
    pub default_tenant_weight: f64,
    /// Switch an idle GPU's MIG mode when a job could never start on the modes the GPUs have
    /// (a MIG profile on a node with MIG off, several whole GPUs where the driver lets a
    /// process use one MIG device).
    pub mig_mode_switching: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            repartition: true,
            backfill: true,
            preemption: false,
            time_slice_replicas: 4,
            fair_share_half_life_ms: 3_600_000,
            tenants: Vec::new(),
            default_tenant_weight: 1.0,
            mig_mode_switching: false,
        }
    }
}

/// What is wrong with a [`SchedulerConfig`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("tenant '{tenant}': weight {weight} must be a finite number above 0")]
    Weight { tenant: String, weight: String },
    #[error("tenant '{tenant}' is listed more than once")]
    DuplicateTenant { tenant: String },
    #[error("tenant name must not be empty")]
    EmptyTenant,
    #[error("default_tenant_weight {weight} must be a finite number above 0")]
    DefaultWeight { weight: String },
    #[error("time_slice_replicas must be at least 1")]
    TimeSliceReplicas,
}

fn good_weight(w: f64) -> bool {
    w.is_finite() && w > 0.0
}

impl SchedulerConfig {
    /// Check the configuration; [`Scheduler::new`] also accepts a bad one, using weight 1 for a
    /// bad weight and 1 replica for 0.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut seen = BTreeSet::new();
        for t in &self.tenants {
            if t.name.trim().is_empty() {
                return Err(ConfigError::EmptyTenant);
            }
            if !seen.insert(t.name.as_str()) {
                return Err(ConfigError::DuplicateTenant { tenant: t.name.clone() });
            }
            if !good_weight(t.weight) {
                return Err(ConfigError::Weight { tenant: t.name.clone(), weight: t.weight.to_string() });
            }
        }
        if !good_weight(self.default_tenant_weight) {
            return Err(ConfigError::DefaultWeight { weight: self.default_tenant_weight.to_string() });
        }
        if self.time_slice_replicas == 0 {
            return Err(ConfigError::TimeSliceReplicas);
        }
        Ok(())
    }

    /// A tenant's weight and quota (the first entry of that name; defaults otherwise).
    pub fn tenant(&self, name: &str) -> (f64, Option<SliceQuota>) {
        let default = if good_weight(self.default_tenant_weight) { self.default_tenant_weight } else { 1.0 };
        match self.tenants.iter().find(|t| t.name == name) {
            Some(t) => (if good_weight(t.weight) { t.weight } else { default }, t.quota),
            None => (default, None),
        }
    }
}

/// Slices a tenant holds (shared instances counted by share).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Holding {
    pub compute_slices: f64,
    pub memory_slices: f64,
}

/// The slices each tenant's jobs hold, as quotas count them (jobs on GPUs or instances the
/// cluster view does not have count nothing).
pub fn holdings(cluster: &ClusterView, jobs: &[RunningJob], time_slice_replicas: u32) -> BTreeMap<String, Holding> {
    let mut out: BTreeMap<String, Holding> = BTreeMap::new();
    for j in jobs {
        let (c, m) = job_charge(cluster, j, time_slice_replicas);
        let h = out.entry(j.request.tenant.clone()).or_default();
        h.compute_slices += c as f64 / 1000.0;
        h.memory_slices += m as f64 / 1000.0;
    }
    out
}

fn job_charge(cluster: &ClusterView, j: &RunningJob, replicas: u32) -> (u64, u64) {
    j.slices().fold((0, 0), |acc, r| {
        let c = cluster
            .gpu(r.gpu)
            .and_then(|g| g.model.profile_by_id(r.instance.profile_id))
            .map_or((0, 0), |p| charge_milli(p, &j.request.sharing, replicas));
        (acc.0 + c.0, acc.1 + c.1)
    })
}

/// What the scheduler shows of its reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReservationView {
    pub job: JobId,
    /// The GPUs (and their placement units, as a bit mask) held for it.
    pub units: Vec<(u32, u32)>,
    /// When it is expected to start; `None` when unknown.
    pub start_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HoldKind {
    Reconfigure,
    Preempt { victims: Vec<JobId> },
}

/// Instances kept for one queued job across rounds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hold {
    kind: HoldKind,
    entries: Vec<(u32, Instance)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Reservation {
    job: JobId,
    priority: i32,
    at: Option<u64>,
    /// (GPU index, unit mask).
    units: Vec<(u32, u32)>,
    label: String,
}

/// The scheduler. Its state between rounds: fair-share usage, the instances held for jobs
/// waiting on a reconfiguration or preemption, and the reservation.
#[derive(Debug, Clone)]
pub struct Scheduler {
    config: SchedulerConfig,
    ledger: Ledger,
    last_round_ms: Option<u64>,
    holds: BTreeMap<JobId, Hold>,
    reservation: Option<Reservation>,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Self {
        let ledger = Ledger::new(config.fair_share_half_life_ms);
        Scheduler { config, ledger, last_round_ms: None, holds: BTreeMap::new(), reservation: None }
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// Add `slice_ms` (compute slices × milliseconds) to a tenant's fair-share usage at `now_ms`.
    pub fn charge(&mut self, tenant: &str, slice_ms: f64, now_ms: u64) {
        self.ledger.charge(tenant, slice_ms, now_ms);
    }

    /// A tenant's decayed usage (slice-ms) as of the last round or charge.
    pub fn usage(&self, tenant: &str) -> f64 {
        self.ledger.usage(tenant)
    }

    /// Every tenant's decayed usage.
    pub fn usages(&self) -> &BTreeMap<String, f64> {
        self.ledger.all()
    }

    /// The current reservation, if any.
    pub fn reservation(&self) -> Option<ReservationView> {
        self.reservation.as_ref().map(|r| ReservationView { job: r.job, units: r.units.clone(), start_ms: r.at })
    }

    fn replicas(&self) -> u32 {
        self.config.time_slice_replicas.max(1)
    }

    /// Charge running jobs for the time since the previous round.
    fn account(&mut self, now_ms: u64, cluster: &ClusterView, running: &[RunningJob]) {
        self.ledger.decay_to(now_ms);
        let since = self.last_round_ms;
        if since.is_some_and(|l| now_ms < l) {
            return;
        }
        let replicas = self.replicas();
        for r in running {
            let from = since.map_or(r.started_ms, |l| l.max(r.started_ms));
            let elapsed = now_ms.saturating_sub(from);
            if elapsed == 0 {
                continue;
            }
            let slices = job_charge(cluster, r, replicas).0 as f64 / 1000.0;
            self.ledger.charge(&r.request.tenant, slices * elapsed as f64, now_ms);
        }
        self.last_round_ms = Some(now_ms);
    }

    /// One round: a decision for every queued job (exactly one `Start` or `Pending` each; a
    /// job may also get `Reconfigure` and `Preempt` decisions, before its `Pending`).
    /// A job id repeated in the queue is decided once.
    pub fn schedule(
        &mut self,
        now_ms: u64,
        cluster: &ClusterView,
        queue: &[QueuedJob],
        running: &[RunningJob],
    ) -> Vec<Decision> {
        self.account(now_ms, cluster, running);
        let st = WState::from_view(cluster);
        let planners = Planners::new(&st);
        let planner_refs = planners.refs();
        let queued: BTreeSet<JobId> = queue.iter().map(|q| q.id).collect();
        let reservation = self.reservation.take().filter(|r| queued.contains(&r.job));
        let holds = std::mem::take(&mut self.holds);
        let mut round = Round {
            cfg: &self.config,
            ledger: &self.ledger,
            now: now_ms,
            cluster,
            running,
            replicas: self.config.time_slice_replicas.max(1),
            planners: &planner_refs,
            st0: st.clone(),
            st,
            version: 0,
            held_milli: BTreeMap::new(),
            projected: BTreeMap::new(),
            holds: BTreeMap::new(),
            new_holds: BTreeMap::new(),
            reservation,
            ends: BTreeMap::new(),
            cache: BTreeMap::new(),
            start_cache: BTreeMap::new(),
            decided: Vec::new(),
            victims: BTreeSet::new(),
            decisions: Vec::new(),
            renewed: false,
            had_hold: false,
            round_started: Vec::new(),
        };
        round.prepare(holds, &queued);
        round.run(queue);
        let Round { new_holds, reservation, decisions, .. } = round;
        self.holds = new_holds;
        self.reservation = reservation;
        decisions
    }
}

/// What one placement attempt's result depends on besides the state.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct CacheKey {
    gpu: GpuRequest,
    ranks: u32,
    gpus_per_rank: u32,
    numa_local: bool,
    sharing: Sharing,
    cpus: u32,
    mem: u64,
    numa: NumaPolicy,
    blocked: Vec<u32>,
    budget: Option<(u64, u64)>,
    /// 0: the current state (at `version`); 1: the round's starting state.
    mode: u8,
    version: u64,
}

struct Round<'a> {
    cfg: &'a SchedulerConfig,
    ledger: &'a Ledger,
    now: u64,
    cluster: &'a ClusterView,
    running: &'a [RunningJob],
    replicas: u32,
    planners: &'a [&'a Planner<'static>],
    st: WState,
    /// The state at the start of the round (after holds).
    st0: WState,
    /// Bumped at every commit to `st`.
    version: u64,
    held_milli: BTreeMap<String, (u64, u64)>,
    /// Usage the round's starts will add (slices × expected run, at most one half-life).
    projected: BTreeMap<String, f64>,
    holds: BTreeMap<JobId, Hold>,
    new_holds: BTreeMap<JobId, Hold>,
    reservation: Option<Reservation>,
    /// Expected end of every running job and of this round's starts (`u64::MAX`: unknown).
    ends: BTreeMap<JobId, u64>,
    /// Failed attempts by what they depend on (an identical job fails the same way until the
    /// state changes), and whether attempts on the round's starting state succeeded.
    cache: BTreeMap<CacheKey, Failure>,
    start_cache: BTreeMap<CacheKey, bool>,
    /// (job, priority) of every start or reconfiguration decided this round.
    decided: Vec<(JobId, i32)>,
    victims: BTreeSet<JobId>,
    decisions: Vec<Decision>,
    /// The job being decided renewed its reservation.
    renewed: bool,
    /// The job being decided had instances held for it at the start of the round.
    had_hold: bool,
    /// Jobs started this round, as they will run.
    round_started: Vec<RunningJob>,
}

pub(crate) fn fmt_slices(milli: u64) -> String {
    if milli.is_multiple_of(1000) {
        format!("{}", milli / 1000)
    } else {
        let s = format!("{:.2}", milli as f64 / 1000.0);
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// `45s`, `12m`, `3h05m`.
pub(crate) fn fmt_ms(ms: u64) -> String {
    let s = ms / 1000;
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m", s / 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

/// `3, 15, 12`, or `3, 15, 12, 24, 36 and 6 more`.
fn list_ids(ids: &[JobId]) -> String {
    let shown: Vec<String> = ids.iter().take(5).map(u64::to_string).collect();
    match ids.len() {
        n if n > 5 => format!("{} and {} more", shown.join(", "), n - 5),
        _ => shown.join(", "),
    }
}

impl<'a> Round<'a> {
    fn prepare(&mut self, holds: BTreeMap<JobId, Hold>, queued: &BTreeSet<JobId>) {
        for r in self.running {
            let (c, m) = job_charge(self.cluster, r, self.replicas);
            let e = self.held_milli.entry(r.request.tenant.clone()).or_default();
            *e = (e.0 + c, e.1 + m);
            let end = r
                .request
                .expected_duration_ms()
                .map_or(u64::MAX, |d| r.started_ms.saturating_add(d).max(self.now).min(u64::MAX - 1));
            self.ends.insert(r.id, end);
        }
        for (job, hold) in holds {
            if !queued.contains(&job) {
                continue;
            }
            let victims: &[JobId] = match &hold.kind {
                HoldKind::Preempt { victims } => victims,
                HoldKind::Reconfigure => &[],
            };
            let mut keep = true;
            let mut entries = Vec::new();
            for (gpu, inst) in &hold.entries {
                let Some(g) = self.st.pos_of(*gpu) else {
                    keep = false;
                    break;
                };
                if self.st.gpus[g].reconfiguring {
                    entries.push((*gpu, *inst));
                    continue;
                }
                match self.st.gpus[g].insts.iter_mut().find(|w| w.inst == *inst) {
                    Some(w) if w.occupants.iter().all(|o| victims.contains(&o.job)) => {
                        w.held_for = Some(job);
                        entries.push((*gpu, *inst));
                    }
                    Some(_) => {}
                    None if hold.kind == HoldKind::Reconfigure => {
                        keep = false;
                        break;
                    }
                    None => {}
                }
            }
            if keep {
                self.holds.insert(job, Hold { kind: hold.kind, entries });
            } else {
                // The plan was abandoned: release whatever was marked.
                for gpu in &mut self.st.gpus {
                    for w in &mut gpu.insts {
                        if w.held_for == Some(job) {
                            w.held_for = None;
                        }
                    }
                }
            }
        }
        self.st0 = self.st.clone();
    }

    fn fair_key(&self, tenant: &str) -> f64 {
        let (weight, _) = self.cfg.tenant(tenant);
        (self.ledger.usage(tenant) + self.projected.get(tenant).copied().unwrap_or(0.0)) / weight
    }

    fn run(&mut self, queue: &'a [QueuedJob]) {
        let mut seen = BTreeSet::new();
        // Pinned jobs first: their instances were given away before Tessera was asked (the
        // kubelet allocated them to a pod), so no other job may take them this round.
        for q in queue.iter().filter(|q| !q.request.pin.is_empty()) {
            if seen.insert(q.id) {
                self.decide(q);
            }
        }
        let mut levels: BTreeMap<Reverse<i32>, BTreeMap<&'a str, Vec<&'a QueuedJob>>> = BTreeMap::new();
        for q in queue {
            if seen.insert(q.id) {
                levels
                    .entry(Reverse(q.request.priority))
                    .or_default()
                    .entry(q.request.tenant.as_str())
                    .or_default()
                    .push(q);
            }
        }
        for (_, tenants) in levels {
            let mut tenants: BTreeMap<&str, VecDeque<&QueuedJob>> = tenants
                .into_iter()
                .map(|(t, mut v)| {
                    v.sort_by_key(|q| (q.submitted_ms, q.id));
                    (t, v.into())
                })
                .collect();
            loop {
                let next = tenants
                    .iter()
                    .filter(|(_, d)| !d.is_empty())
                    .map(|(t, _)| (self.fair_key(t), *t))
                    .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(b.1)));
                let Some((_, t)) = next else { break };
                let Some(job) = tenants.get_mut(t).and_then(VecDeque::pop_front) else { break };
                self.decide(job);
            }
        }
    }

    fn pending(&mut self, job: JobId, reason: PendingReason, detail: String) {
        self.decisions.push(Decision::Pending { job, reason, detail });
    }

    fn label(&self, req: &JobRequest, needs: &[Option<Vec<Need>>]) -> String {
        let Some((g, n)) = needs.iter().enumerate().find_map(|(g, n)| n.as_ref().map(|n| (g, n))) else {
            return "nothing this node offers".into();
        };
        let model = self.st.gpus[g].model;
        let one = n.iter().map(|x| profile_name(model, x.min_profile)).collect::<Vec<_>>().join(" + ");
        if req.gpu_numa_local {
            format!("2 × {one} (one per GPU NUMA node of one GPU)")
        } else if req.gpus_per_rank > 1 {
            let gpus = format!("{} GPUs ({one})", req.gpus_per_rank);
            if req.ranks > 1 { format!("{} ranks × {gpus}", req.ranks) } else { gpus }
        } else if req.ranks > 1 {
            format!("{} ranks × {one}", req.ranks)
        } else {
            one
        }
    }

    fn key(&self, ctx: &Ctx<'_>, mode: u8) -> CacheKey {
        let r = ctx.req;
        CacheKey {
            gpu: r.gpu.clone(),
            ranks: r.ranks,
            gpus_per_rank: r.gpus_per_rank,
            numa_local: r.gpu_numa_local,
            sharing: r.sharing,
            cpus: r.cpus,
            mem: r.mem_mib,
            numa: r.numa,
            blocked: ctx.blocked.to_vec(),
            budget: ctx.budget,
            mode,
            version: if mode == 1 { 0 } else { self.version },
        }
    }

    /// Whether the job would have fitted the round's starting state (cached per shape).
    fn fits_at_start(&mut self, ctx: &Ctx<'_>) -> bool {
        if self.had_hold {
            // Instances held for this job at the start make its answer its own.
            return attempt(ctx, &self.st0).is_ok();
        }
        let key = self.key(ctx, 1);
        if let Some(ok) = self.start_cache.get(&key) {
            return *ok;
        }
        let ok = attempt(ctx, &self.st0).is_ok();
        self.start_cache.insert(key, ok);
        ok
    }

    /// An attempt on the current state, with the failures of jobs without holds remembered (an
    /// identical job fails the same way until the state changes).
    fn try_place(&mut self, ctx: &Ctx<'_>, cacheable: bool) -> Result<(WState, Placed), Failure> {
        let key = cacheable.then(|| self.key(ctx, 0));
        if let Some(k) = &key
            && let Some(f) = self.cache.get(k)
        {
            return Err(f.clone());
        }
        let res = attempt(ctx, &self.st);
        if let (Err(f), Some(k)) = (&res, key) {
            self.cache.insert(k, f.clone());
        }
        res
    }

    /// Decide one job, then drop what it no longer needs: a reservation it did not renew and
    /// instances held for it that were not carried over.
    fn decide(&mut self, job: &QueuedJob) {
        self.renewed = false;
        self.had_hold = false;
        self.decide_inner(job);
        if !self.renewed && self.reservation.as_ref().is_some_and(|r| r.job == job.id) {
            self.reservation = None;
        }
        if !self.new_holds.contains_key(&job.id) {
            self.release_hold(job.id);
        }
    }

    fn decide_inner(&mut self, job: &QueuedJob) {
        let req = &job.request;
        if let Err(e) = req.validate() {
            self.pending(job.id, PendingReason::Capacity, format!("the request can never start as written: {e}"));
            return;
        }
        let (needs, err) = needs_per_gpu(req, &self.st.gpus);
        if needs.iter().all(Option::is_none) {
            let detail = match err {
                Some(e) if !self.st.gpus.is_empty() => format!("can never start on this node: {e}"),
                _ => "this node has no GPUs".to_string(),
            };
            self.pending(job.id, PendingReason::Capacity, detail);
            return;
        }
        let label = self.label(req, &needs);
        let candidates: Vec<&crate::placement::WGpu> = needs
            .iter()
            .zip(&self.st.gpus)
            .filter(|(n, g)| n.as_ref().is_some_and(|n| g.mig || n.iter().all(|x| !x.mig_only)))
            .map(|(_, g)| g)
            .collect();
        if !candidates.is_empty() && !candidates.iter().any(|g| g.healthy && !g.drained) {
            let sick: Vec<String> = candidates.iter().filter(|g| !g.healthy).map(|g| g.health_label()).collect();
            let (reason, detail) = if sick.is_empty() {
                let drained: Vec<String> = candidates.iter().map(|g| g.gpu.to_string()).collect();
                (
                    PendingReason::Capacity,
                    format!("needs {label}; every GPU that could host it is drained (GPU {})", drained.join(", ")),
                )
            } else {
                (PendingReason::Health, format!("needs {label}; only unhealthy {} could host it", sick.join(", ")))
            };
            self.pending(job.id, reason, detail);
            return;
        }

        // Instances held for it since an earlier round.
        let hold = self.holds.get(&job.id).cloned();
        if let Some(h) = &hold {
            if let HoldKind::Preempt { victims } = &h.kind {
                let still: Vec<JobId> = victims
                    .iter()
                    .copied()
                    .filter(|v| {
                        self.running.iter().any(|r| r.id == *v)
                            || self
                                .st
                                .gpus
                                .iter()
                                .any(|g| g.insts.iter().any(|w| w.occupants.iter().any(|o| o.job == *v)))
                    })
                    .collect();
                if !still.is_empty() {
                    self.new_holds.insert(job.id, h.clone());
                    self.pending(
                        job.id,
                        PendingReason::Priority,
                        format!(
                            "needs {label}; waiting for preempted lower-priority job(s) {} to stop (their room is held for it)",
                            list_ids(&still)
                        ),
                    );
                    return;
                }
            }
            let busy: Vec<u32> = h
                .entries
                .iter()
                .filter(|(gpu, _)| self.st.pos_of(*gpu).is_some_and(|g| self.st.gpus[g].reconfiguring))
                .map(|(gpu, _)| *gpu)
                .collect::<BTreeSet<u32>>()
                .into_iter()
                .collect();
            if !busy.is_empty() {
                self.new_holds.insert(job.id, h.clone());
                let gpus: Vec<String> = busy.iter().map(u32::to_string).collect();
                self.pending(
                    job.id,
                    PendingReason::Reconfiguring,
                    format!(
                        "needs {label}; GPU {} is being repartitioned for it; it starts there once that is done",
                        gpus.join(", ")
                    ),
                );
                return;
            }
        }

        // Quota.
        let (_, quota) = self.cfg.tenant(&req.tenant);
        let held = self.held_milli.get(&req.tenant).copied().unwrap_or((0, 0));
        let budget = quota.map(|q| {
            (
                (u64::from(q.compute_slices) * 1000).saturating_sub(held.0),
                (u64::from(q.memory_slices) * 1000).saturating_sub(held.1),
            )
        });
        if let Some(q) = quota {
            let least = min_charge(req, &self.st.gpus, &needs, self.replicas);
            let want = (held.0.saturating_add(least.0), held.1.saturating_add(least.1));
            let over = if want.0 > u64::from(q.compute_slices) * 1000 {
                Some(("compute", want.0, q.compute_slices))
            } else if want.1 > u64::from(q.memory_slices) * 1000 {
                Some(("memory", want.1, q.memory_slices))
            } else {
                None
            };
            if let Some((kind, would, limit)) = over {
                self.release_hold(job.id);
                self.pending(
                    job.id,
                    PendingReason::Quota,
                    format!(
                        "needs {label}; tenant {} would hold {} {kind} slices, quota {limit}",
                        req.tenant,
                        fmt_slices(would)
                    ),
                );
                return;
            }
        }

        let pinned = !req.pin.is_empty();
        // A pin is not held back by reservations: its instances are already its pod's.
        let blocked = if pinned { vec![0; self.st.gpus.len()] } else { self.blocked_for(job) };
        let planners = self.planners;
        let ctx = Ctx {
            id: job.id,
            user: job.user,
            req,
            needs: &needs,
            planners,
            replicas: self.replicas,
            repartition: self.cfg.repartition,
            blocked: &blocked,
            budget,
            ignore_host: false,
        };
        // Attempts are cached by shape, and a pin's answer is its own.
        let cacheable = hold.is_none() && !pinned;
        self.had_hold = hold.is_some();
        match self.try_place(&ctx, cacheable) {
            Ok((s, placed)) => {
                if placed.starts_now() {
                    self.commit_start(job, s, placed);
                } else {
                    self.commit_reconfigure(job, s, placed, &label);
                }
            }
            Err(fail) => {
                self.release_hold(job.id);
                if pinned {
                    // Never preempts, switches modes or reserves: it waits for its instances.
                    let (reason, why) = pin_conflict(req, &self.st, Some(job.id)).unwrap_or_else(|| {
                        let why = "they do not fit what it asks (the profile, or the host's CPUs and memory)";
                        (PendingReason::Capacity, why.to_string())
                    });
                    self.pending(job.id, reason, format!("needs {label} on its pinned instances; {why}"));
                    return;
                }
                if self.cfg.preemption && self.try_preempt(job, &ctx, &label) {
                    return;
                }
                if self.cfg.mig_mode_switching && self.try_switch_mode(job, &ctx, &label) {
                    return;
                }
                let (reason, mut detail) = self.classify(job, &ctx, &fail, &label);
                if matches!(
                    reason,
                    PendingReason::Capacity
                        | PendingReason::Fragmentation
                        | PendingReason::Priority
                        | PendingReason::HostCpus
                        | PendingReason::HostMemory
                ) {
                    let take = match &self.reservation {
                        None => true,
                        Some(r) => r.job == job.id || req.priority > r.priority,
                    };
                    if take && let Some(r) = self.compute_reservation(job, &ctx, &label) {
                        let gpus: Vec<String> = r.units.iter().map(|(g, _)| g.to_string()).collect();
                        let when = match r.at {
                            Some(t) if t > self.now => format!("expected in about {}", fmt_ms(t - self.now)),
                            Some(_) => "expected any moment".into(),
                            None => "start time unknown (running jobs there have no estimates)".into(),
                        };
                        detail.push_str(&format!("; room is reserved for it on GPU {} ({when})", gpus.join(", ")));
                        self.reservation = Some(r);
                        self.renewed = true;
                    }
                }
                self.pending(job.id, reason, detail);
            }
        }
    }

    /// Stop holding instances for a job (it started elsewhere, or gave up on them).
    fn release_hold(&mut self, job: JobId) {
        if self.holds.remove(&job).is_some() {
            for gpu in &mut self.st.gpus {
                for w in &mut gpu.insts {
                    if w.held_for == Some(job) && !w.planned {
                        w.held_for = None;
                    }
                }
            }
            self.version += 1;
        }
    }

    fn note_decided(&mut self, job: &QueuedJob) {
        self.decided.push((job.id, job.request.priority));
        if self.reservation.as_ref().is_some_and(|r| r.job == job.id) {
            self.reservation = None;
        }
        self.holds.remove(&job.id);
    }

    fn commit_start(&mut self, job: &QueuedJob, mut s: WState, placed: Placed) {
        // Instances held for this job that it did not use are free again.
        for gpu in &mut s.gpus {
            for w in &mut gpu.insts {
                if w.held_for == Some(job.id) && !w.planned {
                    w.held_for = None;
                }
            }
        }
        self.st = s;
        self.version += 1;
        let t = &job.request.tenant;
        let e = self.held_milli.entry(t.clone()).or_default();
        *e = (e.0 + placed.charge.0, e.1 + placed.charge.1);
        let hl = self.cfg.fair_share_half_life_ms.max(1);
        let run = job.request.expected_duration_ms().unwrap_or(hl).min(hl);
        *self.projected.entry(t.clone()).or_default() += placed.charge.0 as f64 / 1000.0 * run as f64;
        let end = job.request.expected_duration_ms().map_or(u64::MAX, |d| self.now.saturating_add(d).min(u64::MAX - 1));
        self.ends.insert(job.id, end);
        self.note_decided(job);
        let ranks = placed.rank_starts();
        self.round_started.push(RunningJob {
            id: job.id,
            request: job.request.clone(),
            started_ms: self.now,
            ranks: ranks.clone(),
            user: job.user,
        });
        self.decisions.push(Decision::Start { job: job.id, ranks });
    }

    fn commit_reconfigure(&mut self, job: &QueuedJob, mut s: WState, placed: Placed, label: &str) {
        // Not started yet: what it picked is held for it, its CPUs stay free.
        s.host = self.st.host.clone();
        for gpu in &mut s.gpus {
            for w in &mut gpu.insts {
                let before = w.occupants.len();
                w.occupants.retain(|o| o.job != job.id);
                if w.occupants.len() != before && w.occupants.is_empty() {
                    w.held_for = Some(job.id);
                }
            }
        }
        self.st = s;
        self.version += 1;
        self.note_decided(job);
        let mut parts = Vec::new();
        for (g, plan) in &placed.plans {
            let gpu_id = self.st.gpus[*g].gpu;
            // One plan per GPU per round: a later job extends the plan of an earlier one.
            let earlier = self.decisions.iter_mut().find_map(|d| match d {
                Decision::Reconfigure { gpu, plan, .. } if *gpu == gpu_id => Some(plan),
                _ => None,
            });
            let before: Vec<Step> = earlier.as_ref().map(|p| p.steps.clone()).unwrap_or_default();
            let gpu = &self.st.gpus[*g];
            let mut destroy = Vec::new();
            let mut create = Vec::new();
            for step in plan.steps.iter().filter(|s| !before.contains(s)) {
                match step {
                    Step::Destroy { instance, .. } => destroy.push(gpu.label(instance)),
                    Step::Create { instance } => create.push(gpu.label(instance)),
                }
            }
            let mut what = format!("GPU {gpu_id}");
            if !destroy.is_empty() {
                what.push_str(&format!(": destroy idle {}; create {}", destroy.join(", "), create.join(", ")));
            } else {
                what.push_str(&format!(": create {}", create.join(", ")));
            }
            parts.push(what);
            match earlier {
                Some(p) => *p = plan.clone(),
                None => self.decisions.push(Decision::Reconfigure { gpu: gpu_id, plan: plan.clone(), for_job: job.id }),
            }
        }
        let entries: Vec<(u32, Instance)> = placed.ranks.iter().map(|(_, _, r)| (r.gpu, r.instance)).collect();
        self.new_holds.insert(job.id, Hold { kind: HoldKind::Reconfigure, entries });
        self.pending(
            job.id,
            PendingReason::Reconfiguring,
            format!("needs {label}; repartitioning for it ({}); it starts there once that is done", parts.join("; ")),
        );
    }
}
