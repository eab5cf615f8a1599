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
//! priority (lowest first, then the most recently started; at most 32), takes them away one by
//! one until it would fit, then keeps only those it really needs. It gets a
//! [`Decision::Preempt`] for each and waits with [`PendingReason::Priority`]; their room is
//! held for it until they are gone.
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
use std::fmt;

use serde::{Deserialize, Serialize};
use tessera_mig::layout::unit_mask;
use tessera_mig::{Instance, Planner, ReconfigurePlan, Step, planner_for};

use crate::cluster::{ClusterView, JobId, SliceQuota, Tenant};
use crate::engine::{Block, Ctx, Failure, Placed, WState, attempt, charge_milli};
use crate::fairshare::Ledger;
use crate::request::{GpuRequest, JobRequest, Need, NumaPolicy, RequestError, Sharing, fmt_mib, profile_name};

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

/// A job waiting to start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueuedJob {
    pub id: JobId,
    pub request: JobRequest,
    pub submitted_ms: u64,
}

/// A job that holds its instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunningJob {
    pub id: JobId,
    pub request: JobRequest,
    pub started_ms: u64,
    pub ranks: Vec<RankPlacement>,
}

/// Where one process of a job runs: one instance, its CPUs, and the host NUMA node to bind
/// memory to (`None`: do not bind).
///
/// A [`Decision::Start`] lists one entry per instance, rank-major: for a request of `k`
/// instances per rank, entries `r·k .. r·k+k` belong to rank `r`, all on one GPU, in the order
/// of the request's list; the rank's CPUs are split over its entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RankPlacement {
    pub gpu: u32,
    pub instance: Instance,
    pub cpus: Vec<u32>,
    pub numa_node: Option<u32>,
}

/// Why a job waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PendingReason {
    /// Not enough free GPU slices, CPUs or memory (or the request can never be met here).
    Capacity,
    /// The tenant's quota would be exceeded.
    Quota,
    /// Enough slices are free, but no legal placement of the profile exists among them.
    Fragmentation,
    /// A reconfiguration is in progress (for this job, or on a GPU it could use).
    Reconfiguring,
    /// The room it fits is held for a bigger job, and it cannot finish before that one starts.
    Reserved,
    /// Higher-priority work took the room, or lower-priority work is being preempted for it.
    Priority,
    /// Only unhealthy GPUs could host it.
    Health,
}

impl PendingReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            PendingReason::Capacity => "capacity",
            PendingReason::Quota => "quota",
            PendingReason::Fragmentation => "fragmentation",
            PendingReason::Reconfiguring => "reconfiguring",
            PendingReason::Reserved => "reserved",
            PendingReason::Priority => "priority",
            PendingReason::Health => "health",
        }
    }
}

impl fmt::Display for PendingReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the daemon (or the simulator) should do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Start the job on these instances now.
    Start { job: JobId, ranks: Vec<RankPlacement> },
    /// Reconfigure a GPU (only idle instances are destroyed) so that `for_job` (and perhaps
    /// other jobs waiting with reason `reconfiguring` this round) can start.
    Reconfigure { gpu: u32, plan: ReconfigurePlan, for_job: JobId },
    /// Stop `job` to make room for the higher-priority `for_job`.
    Preempt { job: JobId, for_job: JobId },
    /// The job waits.
    Pending { job: JobId, reason: PendingReason, detail: String },
}

impl Decision {
    /// The queued job this decision answers (`for_job` for reconfigure and preempt).
    pub fn job(&self) -> JobId {
        match self {
            Decision::Start { job, .. } | Decision::Pending { job, .. } => *job,
            Decision::Reconfigure { for_job, .. } | Decision::Preempt { for_job, .. } => *for_job,
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
    j.ranks.iter().fold((0, 0), |acc, r| {
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
        // The process-wide planner of each catalog model; a fresh one for any other model.
        let owned: Vec<Planner<'static>> =
            st.gpus.iter().filter(|g| planner_for(g.model).is_none()).map(|g| Planner::new(g.model)).collect();
        let mut next_owned = owned.iter();
        let planner_refs: Vec<&Planner<'static>> =
            st.gpus.iter().filter_map(|g| planner_for(g.model).or_else(|| next_owned.next())).collect();
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
            needs_cache: Vec::new(),
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
    /// Resolutions per (model, request) of the current job.
    needs_cache: Vec<(*const tessera_mig::GpuModel, Result<Vec<Need>, RequestError>)>,
}

/// When an instance is expected to be free for `job`: now (0) when idle, the latest expected
/// end of its occupants, or never (`u64::MAX`) when planned or held for another job.
fn release_of(w: &crate::engine::WInst, ends: &BTreeMap<JobId, u64>, job: JobId) -> u64 {
    if !w.occupants.is_empty() {
        w.occupants.iter().map(|o| ends.get(&o.job).copied().unwrap_or(u64::MAX)).max().unwrap_or(0)
    } else if w.planned || w.held_for.is_some_and(|h| h != job) {
        u64::MAX
    } else {
        0
    }
}

fn fmt_slices(milli: u64) -> String {
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

    fn needs_for(&mut self, req: &JobRequest) -> (Vec<Option<Vec<Need>>>, Option<RequestError>) {
        self.needs_cache.clear();
        let mut out = Vec::with_capacity(self.st.gpus.len());
        let mut first_err = None;
        for g in &self.st.gpus {
            let key: *const tessera_mig::GpuModel = g.model;
            let res = match self.needs_cache.iter().find(|(k, _)| std::ptr::eq(*k, key)) {
                Some((_, r)) => r.clone(),
                None => {
                    let r = req.needs(g.model);
                    self.needs_cache.push((key, r.clone()));
                    r
                }
            };
            match res {
                Ok(n) => out.push(Some(n)),
                Err(e) => {
                    first_err.get_or_insert(e);
                    out.push(None);
                }
            }
        }
        (out, first_err)
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

    fn blocked_for(&self, job: &QueuedJob) -> Vec<u32> {
        let mut out = vec![0u32; self.st.gpus.len()];
        let Some(r) = &self.reservation else { return out };
        if r.job == job.id || job.request.priority > r.priority {
            return out;
        }
        if self.backfill_ok(job, r) {
            return out;
        }
        for (gpu, mask) in &r.units {
            if let Some(g) = self.st.pos_of(*gpu) {
                out[g] |= *mask;
            }
        }
        out
    }

    fn backfill_ok(&self, job: &QueuedJob, r: &Reservation) -> bool {
        self.cfg.backfill
            && r.at.is_some_and(|t| job.request.expected_duration_ms().is_some_and(|d| self.now.saturating_add(d) <= t))
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
        let (needs, err) = self.needs_for(req);
        if needs.iter().all(Option::is_none) {
            let detail = match err {
                Some(e) if !self.st.gpus.is_empty() => format!("can never start on this node: {e}"),
                _ => "this node has no MIG GPUs".to_string(),
            };
            self.pending(job.id, PendingReason::Capacity, detail);
            return;
        }
        let label = self.label(req, &needs);
        if !needs.iter().zip(&self.st.gpus).any(|(n, g)| n.is_some() && g.healthy) {
            let bad: Vec<String> =
                needs.iter().zip(&self.st.gpus).filter(|(n, _)| n.is_some()).map(|(_, g)| g.gpu.to_string()).collect();
            self.pending(
                job.id,
                PendingReason::Health,
                format!("needs {label}; only unhealthy GPU(s) {} could host it", bad.join(", ")),
            );
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
            let min_charge = needs
                .iter()
                .zip(&self.st.gpus)
                .filter(|(_, g)| g.healthy)
                .filter_map(|(n, g)| {
                    n.as_ref().map(|n| {
                        n.iter().fold((0u64, 0u64), |acc, x| {
                            let c = g
                                .model
                                .profile_by_id(x.min_profile)
                                .map_or((0, 0), |p| charge_milli(p, &req.sharing, self.replicas));
                            (acc.0 + c.0, acc.1 + c.1)
                        })
                    })
                })
                .min()
                .unwrap_or((0, 0));
            let ranks = u64::from(req.placement_units());
            let want = (held.0 + min_charge.0 * ranks, held.1 + min_charge.1 * ranks);
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

        let blocked = self.blocked_for(job);
        let planners = self.planners;
        let ctx = Ctx {
            id: job.id,
            req,
            needs: &needs,
            planners,
            replicas: self.replicas,
            repartition: self.cfg.repartition,
            blocked: &blocked,
            budget,
            ignore_host: false,
        };
        let cacheable = hold.is_none();
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
                if self.cfg.preemption && self.try_preempt(job, &ctx, &label) {
                    return;
                }
                let (reason, mut detail) = self.classify(job, &ctx, &fail, &label);
                if matches!(reason, PendingReason::Capacity | PendingReason::Fragmentation | PendingReason::Priority) {
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
        self.decisions.push(Decision::Start { job: job.id, ranks: placed.ranks.into_iter().map(|(_, r)| r).collect() });
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
        let entries: Vec<(u32, Instance)> = placed.ranks.iter().map(|(_, r)| (r.gpu, r.instance)).collect();
        self.new_holds.insert(job.id, Hold { kind: HoldKind::Reconfigure, entries });
        self.pending(
            job.id,
            PendingReason::Reconfiguring,
            format!("needs {label}; repartitioning for it ({}); it starts there once that is done", parts.join("; ")),
        );
    }

    /// The state with these running jobs gone (their instances idle, their CPUs and memory free).
    fn without_jobs(&self, base: &WState, jobs: &[&RunningJob]) -> WState {
        let mut s = base.clone();
        let ids: BTreeSet<JobId> = jobs.iter().map(|j| j.id).collect();
        for gpu in &mut s.gpus {
            for w in &mut gpu.insts {
                w.occupants.retain(|o| !ids.contains(&o.job));
            }
        }
        for j in jobs {
            for r in &j.ranks {
                if let Some(node) = r.numa_node.and_then(|n| s.host.get_mut(&n)) {
                    for c in &r.cpus {
                        if !node.cpus.contains(c) {
                            node.cpus.push(*c);
                        }
                    }
                    node.cpus.sort_unstable();
                }
            }
            let per_rank = j.request.mem_mib;
            let mut ranks_seen = BTreeSet::new();
            for r in &j.ranks {
                if let Some(n) = r.numa_node
                    && ranks_seen.insert((r.gpu, r.instance))
                    && let Some(node) = s.host.get_mut(&n)
                {
                    node.mem = node.mem.saturating_add(per_rank / j.request.instances_per_rank().max(1) as u64);
                }
            }
        }
        s
    }

    /// Preempt lower-priority running jobs to make room, if that would let `job` start.
    fn try_preempt(&mut self, job: &QueuedJob, ctx: &Ctx<'_>, label: &str) -> bool {
        let prio = job.request.priority;
        let protected: BTreeSet<JobId> = self
            .holds
            .values()
            .chain(self.new_holds.values())
            .filter_map(|h| match &h.kind {
                HoldKind::Preempt { victims } => Some(victims.iter().copied()),
                HoldKind::Reconfigure => None,
            })
            .flatten()
            .collect();
        let mut candidates: Vec<&RunningJob> = self
            .running
            .iter()
            .filter(|r| r.request.priority < prio && !self.victims.contains(&r.id) && !protected.contains(&r.id))
            .collect();
        if candidates.is_empty() {
            return false;
        }
        candidates.sort_by_key(|r| (r.request.priority, Reverse(r.started_ms), Reverse(r.id)));
        candidates.truncate(32);
        let base = self.st.clone();
        let mut freed: Vec<&RunningJob> = Vec::new();
        let mut found = false;
        for v in candidates {
            freed.push(v);
            if attempt(ctx, &self.without_jobs(&base, &freed)).is_ok() {
                found = true;
                break;
            }
        }
        if !found {
            return false;
        }
        // Keep only the victims that are needed.
        let mut i = freed.len();
        while i > 0 && freed.len() > 1 {
            i -= 1;
            let mut trial = freed.clone();
            trial.remove(i);
            if attempt(ctx, &self.without_jobs(&base, &trial)).is_ok() {
                freed = trial;
            }
        }
        let Ok((_, placed)) = attempt(ctx, &self.without_jobs(&base, &freed)) else { return false };
        let victim_ids: Vec<JobId> = freed.iter().map(|v| v.id).collect();
        // Hold what it will use: the victims' instances on the GPUs it goes to, and the idle
        // instances it picked.
        let gpus: BTreeSet<usize> = placed.ranks.iter().map(|(g, _)| *g).collect();
        let picked: BTreeSet<(u32, Instance)> = placed.ranks.iter().map(|(_, r)| (r.gpu, r.instance)).collect();
        let mut entries = Vec::new();
        for &g in &gpus {
            let gpu = &mut self.st.gpus[g];
            let id = gpu.gpu;
            for w in &mut gpu.insts {
                let victims_only = !w.occupants.is_empty() && w.occupants.iter().all(|o| victim_ids.contains(&o.job));
                let idle_pick = w.occupants.is_empty() && picked.contains(&(id, w.inst));
                if (victims_only || idle_pick) && w.held_for.is_none() && !w.planned {
                    w.held_for = Some(job.id);
                    entries.push((id, w.inst));
                }
            }
        }
        self.version += 1;
        for v in &freed {
            self.victims.insert(v.id);
            self.decisions.push(Decision::Preempt { job: v.id, for_job: job.id });
        }
        self.decided.push((job.id, prio));
        self.new_holds.insert(job.id, Hold { kind: HoldKind::Preempt { victims: victim_ids.clone() }, entries });
        let named: Vec<String> = freed.iter().map(|v| format!("{} (priority {})", v.id, v.request.priority)).collect();
        self.pending(
            job.id,
            PendingReason::Priority,
            format!("needs {label}; preempting lower-priority job(s) {} to make room", named.join(", ")),
        );
        true
    }

    /// Whether GPU `g` has as many compute slices outside busy instances as one rank needs.
    fn room_ignoring_idle(&self, ctx: &Ctx<'_>, g: usize) -> bool {
        let gpu = &self.st.gpus[g];
        let Some(needs) = ctx.needs.get(g).and_then(Option::as_ref) else { return false };
        let need: u32 = needs.iter().map(|x| u32::from(x.min_compute)).sum();
        let busy: u32 = gpu.insts.iter().filter(|w| !w.occupants.is_empty()).map(|w| u32::from(w.compute())).sum();
        u32::from(gpu.model.compute_slices).saturating_sub(busy) >= need
    }

    /// The reason a job that could not be placed waits, and a sentence saying why.
    fn classify(&mut self, job: &QueuedJob, ctx: &Ctx<'_>, fail: &Failure, label: &str) -> (PendingReason, String) {
        let req = &job.request;
        // Held back by the reservation?
        if ctx.blocked.iter().any(|b| *b != 0) {
            let zeros = vec![0u32; ctx.blocked.len()];
            let free = Ctx { blocked: &zeros, ..*ctx };
            if self.try_place(&free, true).is_ok()
                && let Some(r) = &self.reservation
            {
                let gpus: Vec<String> = r.units.iter().map(|(g, _)| g.to_string()).collect();
                let why = if !self.cfg.backfill {
                    "backfill is off".to_string()
                } else {
                    match (r.at, req.expected_duration_ms()) {
                        (None, _) => "its start time is unknown, so nothing may run there ahead of it".to_string(),
                        (Some(_), None) => {
                            "this job has no runtime estimate or time limit, so it cannot backfill".into()
                        }
                        (Some(t), Some(d)) => format!(
                            "it should start in about {} and this job's {} would end after that",
                            fmt_ms(t.saturating_sub(self.now)),
                            fmt_ms(d)
                        ),
                    }
                };
                return (
                    PendingReason::Reserved,
                    format!(
                        "needs {label}; the room it fits on GPU {} is reserved for job {} ({}); {why}",
                        gpus.join(", "),
                        r.job,
                        r.label
                    ),
                );
            }
        }
        let blocks = &fail.blocks;
        if !blocks.is_empty()
            && blocks.iter().all(|(_, b)| matches!(b, Block::Unhealthy | Block::NoProfile))
            && blocks.iter().any(|(_, b)| *b == Block::Unhealthy)
        {
            let bad: Vec<String> = blocks
                .iter()
                .filter(|(_, b)| *b == Block::Unhealthy)
                .map(|(g, _)| self.st.gpus[*g].gpu.to_string())
                .collect();
            return (
                PendingReason::Health,
                format!("needs {label}; only unhealthy GPU(s) {} could host it", bad.join(", ")),
            );
        }
        // A reconfiguration in progress that may make room.
        for (g, b) in blocks {
            if *b == Block::Reconfiguring && self.room_ignoring_idle(ctx, *g) {
                return (
                    PendingReason::Reconfiguring,
                    format!(
                        "needs {label}; GPU {} is being repartitioned and may have room after",
                        self.st.gpus[*g].gpu
                    ),
                );
            }
        }
        // An unhealthy GPU that would have room.
        let sick: Vec<String> = blocks
            .iter()
            .filter(|(g, b)| *b == Block::Unhealthy && self.room_ignoring_idle(ctx, *g))
            .map(|(g, _)| self.st.gpus[*g].gpu.to_string())
            .collect();
        if !sick.is_empty() {
            return (
                PendingReason::Health,
                format!(
                    "needs {label}; GPU(s) {} are unhealthy and the healthy GPUs have no room for it",
                    sick.join(", ")
                ),
            );
        }
        // Taken this round by jobs ahead of it?
        if self.version > 0 && !self.decided.is_empty() && self.fits_at_start(ctx) {
            let higher: Vec<JobId> = self.decided.iter().filter(|(_, p)| *p > req.priority).map(|(j, _)| *j).collect();
            if !higher.is_empty() {
                return (
                    PendingReason::Priority,
                    format!(
                        "needs {label}; the room it fits was taken this round by higher-priority job(s) {}",
                        list_ids(&higher)
                    ),
                );
            }
            let ahead: Vec<JobId> = self.decided.iter().map(|(j, _)| *j).collect();
            return (
                PendingReason::Capacity,
                format!(
                    "needs {label}; the room it fits was taken this round by job(s) {}, ahead of it in fair-share order",
                    list_ids(&ahead)
                ),
            );
        }
        // Enough free slices, but no legal placement (with repartitioning off: enough slices
        // in idle instances, but none of a shape that fits).
        for (g, b) in blocks {
            if let Block::NoRoom { free, need, idle, idle_compute, profile, repartition, .. } = b {
                let gpu = self.st.gpus[*g].gpu;
                if *repartition && free >= need {
                    return (
                        PendingReason::Fragmentation,
                        format!(
                            "needs {label}; GPU {gpu} has {free} free compute slices but no legal placement for {profile} (fragmentation)"
                        ),
                    );
                }
                if !*repartition && idle_compute >= need {
                    return (
                        PendingReason::Fragmentation,
                        format!(
                            "needs {label}; GPU {gpu} has {idle_compute} compute slices in idle instances ({}) but none fits it, and repartitioning is off (fragmentation)",
                            idle.join(", ")
                        ),
                    );
                }
            }
        }
        for (g, b) in blocks {
            if let Block::Host { node, free_cpus, free_mem, cpus, mem } = b {
                let where_ = match node {
                    Some(n) => format!("GPU {}'s host NUMA node {n}", self.st.gpus[*g].gpu),
                    None => "the host".to_string(),
                };
                return (
                    PendingReason::Capacity,
                    format!(
                        "needs {label} with {cpus} CPUs and {} of memory ({}); {where_} has {free_cpus} free CPUs and {}",
                        fmt_mib(*mem),
                        match req.numa {
                            NumaPolicy::Local => "numa: local",
                            NumaPolicy::Any => "numa: any",
                        },
                        fmt_mib(*free_mem)
                    ),
                );
            }
        }
        if blocks.iter().any(|(_, b)| *b == Block::Quota) {
            return (
                PendingReason::Quota,
                format!("needs {label}; the free instances it fits would take tenant {} past its quota", req.tenant),
            );
        }
        let mut parts: Vec<String> = Vec::new();
        for (g, b) in blocks.iter().take(4) {
            let gpu = &self.st.gpus[*g];
            parts.push(match b {
                Block::NoRoom { free, idle_compute, repartition: true, .. } if idle_compute == free => {
                    format!("GPU {} has {free} of {} compute slices free", gpu.gpu, gpu.model.compute_slices)
                }
                Block::NoRoom { free, idle_compute, repartition: true, .. } => format!(
                    "GPU {} has {free} of {} compute slices free ({idle_compute} in idle instances)",
                    gpu.gpu, gpu.model.compute_slices
                ),
                Block::NoRoom { idle_compute, .. } => format!(
                    "GPU {} has {idle_compute} compute slices in free instances and repartitioning is off",
                    gpu.gpu
                ),
                Block::Unhealthy => format!("GPU {} is unhealthy", gpu.gpu),
                Block::Reconfiguring => format!("GPU {} is being repartitioned", gpu.gpu),
                Block::NoProfile => format!("GPU {} ({}) has no profile for it", gpu.gpu, gpu.model.name),
                Block::Plan(e) => format!("GPU {}: {e}", gpu.gpu),
                Block::Quota => format!("GPU {}: only instances beyond the tenant's quota fit", gpu.gpu),
                Block::Host { .. } => format!("GPU {}: its host NUMA node lacks CPUs or memory", gpu.gpu),
            });
        }
        if blocks.len() > 4 {
            parts.push(format!("{} more GPUs", blocks.len() - 4));
        }
        let rank =
            if req.ranks > 1 { format!(" for rank {}", fail.rank / req.gpus_per_rank.max(1)) } else { String::new() };
        (PendingReason::Capacity, format!("needs {label}; no room{rank}: {}", parts.join("; ")))
    }

    /// When and where the job could start soonest, replaying the expected ends of running jobs.
    fn compute_reservation(&mut self, job: &QueuedJob, ctx: &Ctx<'_>, label: &str) -> Option<Reservation> {
        let mut times: BTreeSet<u64> = BTreeSet::new();
        for gpu in &self.st.gpus {
            for w in &gpu.insts {
                times.insert(release_of(w, &self.ends, job.id));
            }
        }
        times.insert(self.now);
        times.insert(u64::MAX);
        let zeros = vec![0u32; ctx.blocked.len()];
        let what_if = Ctx { blocked: &zeros, budget: None, ignore_host: true, ..*ctx };
        for t in times {
            let mut hyp = self.st.clone();
            for gpu in &mut hyp.gpus {
                for w in &mut gpu.insts {
                    let r = release_of(w, &self.ends, job.id);
                    if r <= t && r != u64::MAX {
                        w.occupants.clear();
                        w.held_for = None;
                    }
                }
            }
            if t == u64::MAX {
                // Unknown ends: take the GPUs as if everything there had ended.
                for gpu in &mut hyp.gpus {
                    for w in &mut gpu.insts {
                        if !w.planned && w.held_for.is_none_or(|h| h == job.id) {
                            w.occupants.clear();
                            w.held_for = None;
                        }
                    }
                }
            }
            if let Ok((_, placed)) = attempt(&what_if, &hyp) {
                let mut units: BTreeMap<u32, u32> = BTreeMap::new();
                for (g, r) in &placed.ranks {
                    let model = self.st.gpus[*g].model;
                    if let Some(p) = model.profile_by_id(r.instance.profile_id) {
                        *units.entry(r.gpu).or_default() |= unit_mask(r.instance.start, p.placement_size);
                    }
                }
                return Some(Reservation {
                    job: job.id,
                    priority: job.request.priority,
                    at: (t != u64::MAX).then_some(t.max(self.now)),
                    units: units.into_iter().collect(),
                    label: format!("needs {label}"),
                });
            }
        }
        None
    }
}
