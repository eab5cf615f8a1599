//! Reads without the engine. Listing jobs, showing one, its logs, the GPUs and their health
//! are answered from a read-only connection to the store and from what the engine last
//! published (health, drains, the last round's time), so they never wait for the engine's lock:
//! a round that reconfigures MIG holds it for seconds (a GPU-instance create is ~1 s per step on
//! an H100), and an operator's `tessera jobs` must answer meanwhile.
//!
//! Invariant: everything a reader shows was committed to the store or published by the engine;
//! a reader never writes and never calls anything that changes the GPUs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use tessera_gpu::health::HealthTracker;
use tessera_gpu::open::Node;
use tessera_store::{Drain, ExternalWork, Store, Work};

use super::{Action, Caller, EngineError, NodeFacts, Reply};

/// What the engine publishes for readers after every change: the parts of its state that are
/// not in the store.
#[derive(Debug, Clone)]
pub struct Published {
    pub health: HealthTracker,
    pub drains: BTreeMap<String, Drain>,
    /// When the last scheduling round ran (ms since the epoch).
    pub last_round_ms: u64,
    /// How long it took, in µs (read, decide and act; 0 before the first round).
    pub last_round_us: u64,
}

/// Answers the read actions ([`Action::is_read`]); one thread at a time uses it (its store
/// connection is `Send`, not `Sync`), alongside the engine.
pub struct Reader {
    pub(crate) store: Store,
    pub(crate) node: Arc<Node>,
    pub(crate) facts: NodeFacts,
    /// How jobs are isolated (cgroups), as the engine found it at start.
    pub(crate) isolation: String,
    /// The configured tenants' names (`default` first).
    pub(crate) tenants: Vec<String>,
    /// The configured quotas, tenant → (compute slices, memory slices).
    pub(crate) quotas: BTreeMap<String, (u32, u32)>,
    pub(crate) shared: Arc<RwLock<Published>>,
    /// GPM utilisation, as the health watcher's sampler last took it.
    pub(crate) utilisation: crate::utilisation::Utilisation,
}

/// The node as a front door advertises it (the Kubernetes device plugin): the GPUs as they are,
/// the health the engine tracks, what no new work may take (drained GPUs, GPUs with a
/// reconfiguration under way), and which job holds each instance, so a door offers only what
/// its own work may take.
#[derive(Debug, Clone)]
pub struct NodeState {
    pub gpus: Vec<tessera_gpu::GpuView>,
    pub health: tessera_gpu::health::HealthReport,
    /// Drained GPUs, by index.
    pub drained: BTreeSet<u32>,
    /// GPUs with a reconfiguration under way (the journal's open entries), by index.
    pub reconfiguring: BTreeSet<u32>,
    /// Every live allocation.
    pub held: Vec<HeldSlice>,
}

/// An instance (or, MIG off, a whole GPU) a job holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldSlice {
    pub gpu: u32,
    pub profile_id: u32,
    pub start: u8,
    pub job: u64,
    /// The front door and key of external work; `None` for Tessera's own processes.
    pub external: Option<ExternalWork>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").field("store", &self.store.path()).finish_non_exhaustive()
    }
}

impl Reader {
    /// The backend, for reading the GPUs' layouts (reading them does not wait for a running
    /// reconfiguration: the driver's work happens outside the backend's own locks).
    pub(crate) fn backend(&self) -> &dyn tessera_gpu::MigBackend {
        self.node.backend()
    }

    /// What the engine published last.
    pub(crate) fn published(&self) -> Published {
        self.shared.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The node as a front door advertises it ([`NodeState`]), from the GPUs, the store and
    /// what the engine published.
    pub fn node_state(&self) -> Result<NodeState, EngineError> {
        let published = self.published();
        let live = tessera_gpu::view::node_view_partial(self.backend())
            .map_err(|e| EngineError::Internal(format!("reading the GPUs: {e}")))?;
        let mut works: BTreeMap<u64, Option<ExternalWork>> = BTreeMap::new();
        let mut held = Vec::new();
        for a in self.store.live_allocations()? {
            let external = match works.get(&a.job) {
                Some(w) => w.clone(),
                None => {
                    let w = match self.store.job(a.job)?.map(|r| r.work) {
                        Some(Work::External(x)) => Some(x),
                        _ => None,
                    };
                    works.insert(a.job, w.clone());
                    w
                }
            };
            held.push(HeldSlice {
                gpu: a.allocation.gpu_index,
                profile_id: a.allocation.profile_id,
                start: a.allocation.start,
                job: a.job,
                external,
            });
        }
        let reconfiguring = self.store.open_reconfigs()?.into_iter().map(|r| r.gpu_index).collect();
        let drained =
            self.facts.gpus.iter().filter(|g| published.drains.contains_key(&g.uuid)).map(|g| g.index).collect();
        Ok(NodeState { gpus: live.gpus, health: published.health.report(), drained, reconfiguring, held })
    }

    /// What `GET /metrics` is rendered from.
    fn metrics(&self) -> Result<crate::wire::MetricsData, EngineError> {
        let gpus = self.gpus()?;
        let filter = tessera_store::JobFilter {
            states: vec![
                tessera_store::JobState::Queued,
                tessera_store::JobState::Placing,
                tessera_store::JobState::Running,
            ],
            ..tessera_store::JobFilter::default()
        };
        let mut counts: std::collections::BTreeMap<(String, String), (tessera_store::JobState, u64)> =
            std::collections::BTreeMap::new();
        let mut pending: std::collections::BTreeMap<(String, String), u64> = std::collections::BTreeMap::new();
        for j in self.store.jobs(&filter)? {
            let e = counts.entry((j.state.to_string(), j.tenant.clone())).or_insert((j.state, 0));
            e.1 += 1;
            if j.state == tessera_store::JobState::Queued {
                // The round writes `<code>: <detail>`; anything else is a job no round has decided.
                let code = j.reason.split(':').next().unwrap_or_default().trim();
                let code = tessera_sched::PendingReason::ALL
                    .iter()
                    .map(tessera_sched::PendingReason::as_str)
                    .find(|c| *c == code)
                    .unwrap_or("undecided");
                *pending.entry((code.to_owned(), j.tenant.clone())).or_default() += 1;
            }
        }
        let pending = pending
            .into_iter()
            .map(|((reason, tenant), count)| crate::wire::PendingCount { reason, tenant, count })
            .collect();
        let jobs = counts
            .into_iter()
            .map(|((_, tenant), (state, count))| crate::wire::JobCount { state, tenant, count })
            .collect();
        let hostname = tessera_host::hostname().unwrap_or_default();
        // History and the totals of what pruning deleted from it, from one snapshot.
        let tessera_store::MetricHistory { totals: pruned, waits, finished_reconfigs: finished, open_reconfigs } =
            self.store.metric_history()?;
        let mut operations: std::collections::BTreeMap<(u32, &'static str, &'static str), u64> =
            std::collections::BTreeMap::new();
        for r in finished.iter().chain(open_reconfigs.iter()) {
            for (op, ok) in r.operations() {
                *operations.entry((r.gpu_index, op.as_str(), if ok { "ok" } else { "failed" })).or_default() += 1;
            }
        }
        let mig_operations = operations
            .into_iter()
            .map(|((gpu, operation, outcome), count)| crate::wire::MigOperationCount {
                gpu,
                operation: operation.to_owned(),
                outcome: outcome.to_owned(),
                count,
            })
            .collect();
        let xids = self
            .published()
            .health
            .report()
            .gpus
            .iter()
            .flat_map(|g| {
                g.xid_counts.iter().map(|(xid, count)| crate::wire::XidCount { gpu: g.gpu, xid: *xid, count: *count })
            })
            .collect();
        let reconfigurations = finished
            .into_iter()
            .map(|r| crate::wire::ReconfigDone {
                gpu: r.gpu_index,
                gpu_uuid: r.gpu_uuid,
                outcome: match r.outcome {
                    Some(tessera_store::ReconfigOutcome::Completed) => "completed",
                    Some(tessera_store::ReconfigOutcome::RolledBack) => "rolled_back",
                    _ => "abandoned",
                }
                .to_owned(),
                duration_ms: r.finished_ms.unwrap_or(r.created_ms).saturating_sub(r.created_ms),
            })
            .collect();
        let fair_share =
            self.store.get_meta("fair_share_usage")?.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
        Ok(crate::wire::MetricsData {
            hostname,
            gpus,
            jobs,
            pending,
            waits,
            reconfigurations,
            fair_share,
            quotas: self.quotas.clone(),
            xids,
            mig_operations,
            utilisation: self.utilisation.current(tessera_host::now_ms()),
            pruned,
        })
    }

    /// Answers a read action; anything else is the engine's.
    pub fn read(&self, caller: &Caller, action: Action) -> Result<Reply, EngineError> {
        match action {
            Action::ListJobs(q) => self.list_jobs(caller, &q).map(Reply::Jobs),
            Action::GetJob { id } | Action::Wait { id, .. } => {
                let detail = matches!(action, Action::GetJob { .. });
                let rec = self.owned(caller, id)?;
                Ok(Reply::Job(Box::new(self.job_view(&rec, detail))))
            }
            Action::Logs { id, query } => self.logs(caller, id, &query).map(Reply::Logs),
            Action::Gpus => self.gpus().map(Reply::Gpus),
            Action::Health => self.health_reply().map(|h| Reply::Health(Box::new(h))),
            Action::Metrics => self.metrics().map(|m| Reply::Metrics(Box::new(m))),
            Action::Events(q) => self.events(caller, &q).map(Reply::Events),
            _ => Err(EngineError::Internal("the reader was given an action that is not a read".into())),
        }
    }
}
