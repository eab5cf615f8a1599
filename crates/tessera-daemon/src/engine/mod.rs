//! The engine: the node's one owner of jobs, slices and GPU health. It takes [`Action`]s from
//! the front doors (see [`action`]) and answers with typed [`Reply`]s or an [`EngineError`];
//! it runs scheduling rounds ([`round`]) and recovers after a restart ([`recover`]).
//!
//! Module map:
//! * [`action`]: the seam — [`Caller`], [`Action`], [`Reply`].
//! * `admission`: what a submission must satisfy (the request, `execve` and `chdir` checks,
//!   the priority ceiling, honest capacity checks through `tessera_sched::admit`).
//! * `view`: the node's facts (GPUs, models, host CPUs and memory) and the scheduler's view of
//!   the node each round, built from the backend and the store.
//! * [`round`]: one round — collect what ended, decide (without the lock), carry out.
//! * `launch`: starting a job: its slices in the store, its supervisor, its cgroup, MPS.
//! * `collect`: what a job's outcome means (ended, requeued, lost).
//! * [`recover`]: after a restart — half-done reconfigurations, jobs whose launch was cut
//!   short, MPS control daemons.
//! * `health`: Xid events and probes into the health tracker (persisted), fencing, stopping
//!   jobs on a failed GPU.
//! * `layout`: an admin's layout change, planned without the lock.
//! * `mps`: MPS control daemons per instance and user.
//! * `queries`: the typed views of jobs, GPUs and health; cancels (who asked is kept).
//! * `dry_run`: what a submission would get now, acting on nothing.
//! * [`reader`]: those views answered without the engine's lock, from a read-only store
//!   connection and what the engine publishes after each change; and the node as a front door
//!   advertises it (`NodeState`: GPUs, health, drains, reconfigurations, who holds what).
//!
//! Everything here blocks (SQLite, NVML, fork/exec); the async side (`daemon.rs`) calls it on
//! blocking threads, one at a time under a lock, except the pure decision of a round and the
//! planning of an admin's layout.

pub mod action;
mod admission;
mod collect;
mod dry_run;
mod error;
mod events;
mod health;
mod launch;
pub mod layout;
mod mps;
mod prune;
mod queries;
mod reader;
pub mod recover;
pub mod round;
mod view;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

pub use action::{Action, Caller, Door, Reply};
pub use admission::{WorkCheck, check_work, process_work};
pub use error::EngineError;
pub use layout::LayoutInput;
pub use reader::{HeldSlice, NodeState, Published, Reader};
use tessera_exec::{CgroupSupport, MpsControl};
use tessera_gpu::health::HealthTracker;
use tessera_gpu::open::Node;
use tessera_sched::{JobRequest, Scheduler, SchedulerConfig, SliceQuota, Tenant};
use tessera_store::{Drain, Store};
pub use view::NodeFacts;

use crate::config::Config;

/// Where the engine keeps things.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The state directory: the database, job directories (private to the daemon).
    pub state_dir: PathBuf,
    /// Job output, one directory per job (its own filesystem, ideally).
    pub output_dir: PathBuf,
    /// MPS pipe and log directories (reachable by job users).
    pub runtime_dir: PathBuf,
    /// Where the NVIDIA device nodes are.
    pub dev_root: PathBuf,
}

impl Paths {
    /// `<state>/jobs/<id>`.
    pub fn job_root(&self, id: u64) -> PathBuf {
        self.state_dir.join("jobs").join(id.to_string())
    }

    /// `<state>/jobs/<id>/run-<n>`: each run (a requeued job runs again) has its own.
    pub fn run_dir(&self, id: u64, run: u32) -> PathBuf {
        self.job_root(id).join(format!("run-{run}"))
    }

    /// `<output>/<id>`: every run of a job appends to the same logs.
    pub fn output_of(&self, id: u64) -> PathBuf {
        self.output_dir.join(id.to_string())
    }
}

/// How the engine starts supervisors.
#[derive(Debug, Clone)]
pub struct ShimCommand {
    /// Usually the `tessera` binary itself.
    pub exe: PathBuf,
    /// Arguments before `--job-dir` (`shim`).
    pub args: Vec<String>,
}

/// The translation of the daemon's config into the scheduler's.
pub fn scheduler_config(config: &Config) -> SchedulerConfig {
    SchedulerConfig {
        repartition: config.scheduler.repartition,
        backfill: config.scheduler.backfill,
        preemption: config.scheduler.preemption,
        time_slice_replicas: config.scheduler.time_slice_replicas,
        mig_mode_switching: config.scheduler.mig_mode_switching,
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

/// Everything a round and an action need, owned by one thread at a time.
pub struct Engine {
    pub(crate) store: Store,
    pub(crate) node: Arc<Node>,
    pub(crate) facts: NodeFacts,
    pub(crate) scheduler: Scheduler,
    pub(crate) config: Config,
    pub(crate) paths: Paths,
    pub(crate) launcher: tessera_exec::Launcher,
    pub(crate) mps: Arc<dyn MpsControl>,
    pub(crate) health: HealthTracker,
    /// The health tracker as last saved in the store.
    pub(crate) health_saved: String,
    /// Drained GPUs by UUID (kept in the store).
    pub(crate) drains: BTreeMap<String, Drain>,
    pub(crate) cgroups: CgroupSupport,
    /// The fair-share ledger as last saved in the store.
    saved_usage: String,
    saved_usage_ms: u64,
    /// The pending reason last written for each queued job, to write only changes.
    pending: BTreeMap<u64, String>,
    waiting: usize,
    last_round_ms: u64,
    /// How long the last round took, in µs.
    last_round_us: u64,
    /// When the store was last pruned (ms since the epoch), and whether more was due then.
    pub(crate) pruned_ms: u64,
    pub(crate) prune_more: bool,
    /// What the last round that decided saw, and when it ran: a round that would see the same
    /// soon after decides nothing.
    pub(crate) decided: Option<round::RoundKey>,
    pub(crate) decided_ms: u64,
    /// The decoded request and user of each queued or running job (they never change).
    requests: BTreeMap<u64, (JobRequest, u32)>,
    /// Counts admin layout changes and mode switches: a round decided before one is not carried
    /// out, and an admin's plan made before one is made again.
    pub(crate) layout_epoch: u64,
    /// The GPUs as the last round read them, while nothing reshaped them since: admission's
    /// picture of MIG modes and layouts without reading the GPUs on every submission.
    pub(crate) seen: Option<tessera_gpu::view::NodeView>,
    /// `jobs.preempt_signal`, as a number (checked when the configuration was loaded).
    pub(crate) preempt_signal: i32,
    /// This state directory's own tag (kept in the store), in names that must not clash with
    /// another daemon's on the same machine (job cgroups).
    pub(crate) tag: String,
    /// The engine's own reader (its read-only connection), for the views it answers with, and
    /// what it publishes to every reader.
    pub(crate) reader: Reader,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("paths", &self.paths).finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine over an open store and node. Reads the node's facts, the saved fair-share
    /// ledger, drains and health.
    pub fn new(
        store: Store,
        node: Arc<Node>,
        config: Config,
        paths: Paths,
        shim: ShimCommand,
        mps: Box<dyn MpsControl>,
    ) -> Result<Engine, EngineError> {
        let sc = scheduler_config(&config);
        sc.validate().map_err(|e| EngineError::Internal(format!("scheduler configuration: {e}")))?;
        let known: Vec<tessera_gpu::DeviceInfo> =
            store.get_meta("devices")?.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
        let (facts, remember) = NodeFacts::read(&node, &known)?;
        if let Some(devices) = remember
            && let Ok(text) = serde_json::to_string(&devices)
        {
            store.set_meta("devices", &text)?;
        }
        let mut scheduler = Scheduler::new(sc);
        // Fair share survives restarts: the ledger is saved in the store after each round.
        let saved_usage = store.get_meta("fair_share_usage")?.unwrap_or_default();
        if let Ok(usage) = serde_json::from_str::<BTreeMap<String, f64>>(&saved_usage) {
            let now = tessera_host::now_ms();
            for (tenant, slice_ms) in usage {
                scheduler.charge(&tenant, slice_ms, now);
            }
        }
        let health_saved = store.get_meta("health")?.unwrap_or_default();
        let mut health = if health_saved.is_empty() {
            HealthTracker::new(config.health.recovery_quiet_ms)
        } else {
            match HealthTracker::restore(&health_saved, config.health.recovery_quiet_ms) {
                Ok(h) => h,
                Err(e) => {
                    // What was unhealthy is unknown: fence every GPU (a drain, kept in the
                    // store) until an admin has looked, rather than trust them all.
                    let reason = format!(
                        "the saved GPU health is unreadable ({e}); check the GPUs, then `tessera admin undrain`"
                    );
                    tracing::error!("{reason}; every GPU is drained");
                    for g in &facts.gpus {
                        store.set_drain(&Drain {
                            gpu_uuid: g.uuid.clone(),
                            gpu_index: g.index,
                            by: "tessera".into(),
                            reason: reason.clone(),
                            at_ms: tessera_host::now_ms(),
                        })?;
                    }
                    HealthTracker::new(config.health.recovery_quiet_ms)
                }
            }
        };
        health.set_clear_command("tessera admin health clear");
        health.reconcile_ids(&facts.ids());
        let drains: BTreeMap<String, Drain> = store.drains()?.into_iter().map(|d| (d.gpu_uuid.clone(), d)).collect();
        let launcher = tessera_exec::Launcher::new(shim.exe, shim.args, true);
        let tag = match store.get_meta("tag")? {
            Some(t) => t,
            None => {
                let seed = tessera_host::now_ms() ^ (u64::from(std::process::id()) << 32);
                let t = format!("{:08x}", (seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32);
                store.set_meta("tag", &t)?;
                t
            }
        };
        let preempt_signal = crate::signals::parse_signal(&config.jobs.preempt_signal)
            .map_err(|e| EngineError::Internal(format!("jobs.preempt_signal: {e}")))?;
        let cgroups = tessera_exec::cgroup_support();
        let shared = Arc::new(RwLock::new(Published {
            health: health.clone(),
            drains: drains.clone(),
            last_round_ms: 0,
            last_round_us: 0,
        }));
        let reader = Reader {
            store: store.read_only()?,
            node: node.clone(),
            facts: facts.clone(),
            isolation: cgroups.to_string(),
            tenants: config.tenant_names().into_iter().map(str::to_owned).collect(),
            quotas: config
                .tenants
                .iter()
                .filter_map(|t| t.quota.map(|q| (t.name.clone(), (q.compute_slices, q.memory_slices))))
                .collect(),
            shared,
            utilisation: crate::utilisation::Utilisation::default(),
        };
        Ok(Engine {
            store,
            node,
            facts,
            scheduler,
            config,
            paths,
            launcher,
            mps: Arc::from(mps),
            health,
            health_saved,
            drains,
            cgroups,
            saved_usage,
            saved_usage_ms: 0,
            pending: BTreeMap::new(),
            waiting: 0,
            last_round_ms: 0,
            last_round_us: 0,
            pruned_ms: 0,
            prune_more: false,
            decided: None,
            decided_ms: 0,
            requests: BTreeMap::new(),
            layout_epoch: 0,
            seen: None,
            preempt_signal,
            tag,
            reader,
        })
    }

    /// Publishes what readers show beside the store (health, drains, the last round's time).
    /// Called after every change to them; cheap (a few GPUs' worth of state).
    pub fn publish(&self) {
        let published = Published {
            health: self.health.clone(),
            drains: self.drains.clone(),
            last_round_ms: self.last_round_ms,
            last_round_us: self.last_round_us,
        };
        *self.reader.shared.write().unwrap_or_else(std::sync::PoisonError::into_inner) = published;
    }

    /// A reader of its own for another thread: a new read-only connection to the store, sharing
    /// what this engine publishes.
    pub fn reader(&self) -> Result<Reader, EngineError> {
        Ok(Reader {
            store: self.store.read_only()?,
            node: self.node.clone(),
            facts: self.facts.clone(),
            isolation: self.reader.isolation.clone(),
            tenants: self.reader.tenants.clone(),
            quotas: self.reader.quotas.clone(),
            shared: self.reader.shared.clone(),
            utilisation: self.reader.utilisation.clone(),
        })
    }

    /// The backend.
    pub(crate) fn backend(&self) -> &dyn tessera_gpu::MigBackend {
        self.node.backend()
    }

    /// A shared handle on the node, for the health watcher.
    pub fn node(&self) -> Arc<Node> {
        self.node.clone()
    }

    /// Where GPM utilisation readings go for every reader (the health watcher's sampler fills it).
    pub fn utilisation(&self) -> crate::utilisation::Utilisation {
        self.reader.utilisation.clone()
    }

    /// Jobs left waiting after the last round.
    pub fn queued_after_round(&self) -> usize {
        self.waiting
    }

    /// The state directory.
    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// Answers an action that does not wait (`Wait` answers the job as it is now; the async
    /// side repeats it). Layout changes are planned here too; the async side uses
    /// [`Engine::layout_prepare`] and friends to plan without holding the engine.
    pub fn act(&mut self, caller: &Caller, action: Action) -> Result<Reply, EngineError> {
        match action {
            Action::Submit(body) => self.submit(caller, body).map(Reply::Submitted),
            Action::DryRun(body) => {
                let (request, work) = process_work(body)?;
                let checked = check_work(&work, caller, self.config.jobs.max_exec_bytes);
                self.dry_run_checked(caller, request, work, checked).map(Reply::DryRun)
            }
            Action::SubmitWork { request, work } => self.submit_work(caller, request, work).map(Reply::Submitted),
            Action::SubmitMaking { request, work } => self.submit_making(caller, request, work).map(Reply::Submitted),
            Action::DestroyIdle { gpu, instance } => self.destroy_idle(caller, gpu, instance).map(Reply::Layout),
            read @ (Action::ListJobs(_)
            | Action::GetJob { .. }
            | Action::Wait { .. }
            | Action::Logs { .. }
            | Action::Gpus
            | Action::Health
            | Action::Metrics
            | Action::Events(_)) => {
                self.publish();
                self.reader.read(caller, read)
            }
            Action::Cancel { id } => self.cancel(caller, id).map(Reply::Cancel),
            Action::Release { id, exit, succeeded } => {
                self.release(caller, id, exit, succeeded).map(|v| Reply::Job(Box::new(v)))
            }
            Action::NameWork { id, key } => self.name_work(caller, id, key).map(|v| Reply::Job(Box::new(v))),
            Action::Drain { gpu, drain, request } => self.drain(caller, gpu, drain, &request).map(Reply::Drain),
            Action::Layout { gpu, request } => {
                let input = self.layout_prepare(caller, gpu, request)?;
                self.layout_apply(caller, input.plan()?).map(Reply::Layout)
            }
            Action::Reach { gpu, wanted } => {
                let input = self.layout_prepare_wanted(caller, gpu, wanted)?;
                self.layout_apply(caller, input.plan()?).map(Reply::Layout)
            }
            Action::HealthClear { gpu } => self.health_clear(caller, gpu).map(Reply::HealthClear),
        }
    }

    /// The request (and user) of a job, decoded once.
    pub(crate) fn request_of(&mut self, id: u64) -> Result<(JobRequest, u32), EngineError> {
        if let Some(r) = self.requests.get(&id) {
            return Ok(r.clone());
        }
        let rec = self.store.job(id)?.ok_or_else(|| EngineError::NotFound(format!("no job {id}")))?;
        let r = (rec.request.clone(), rec.user_uid);
        self.requests.insert(id, r.clone());
        Ok(r)
    }
}

/// Whether a directory name is a job id (`jobs/<id>`, `output/<id>`).
pub(crate) fn job_id_of(name: &std::ffi::OsStr) -> Option<u64> {
    name.to_str().and_then(|n| n.parse::<u64>().ok())
}

/// The highest job id among the directories under `dir` (0 when none).
pub fn highest_job_dir(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().and_then(|e| job_id_of(&e.file_name()))).max().unwrap_or(0))
        .unwrap_or(0)
}

impl From<&Drain> for crate::wire::DrainView {
    fn from(d: &Drain) -> Self {
        crate::wire::DrainView { by: d.by.clone(), reason: d.reason.clone(), at_ms: d.at_ms }
    }
}
