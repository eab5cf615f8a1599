//! The Kubernetes front door into the engine: the devices the kubelet allocates to a container
//! are held by the engine for that pod, and given back when the kubelet no longer lists them.
//!
//! The device plugin API never says which pod an `Allocate` is for. So [`KubeDoor::hold`] holds
//! the devices under a provisional key (`allocated:<ids>`): external work submitted through the
//! front-door seam, pinned to exactly those instances, and answered only once the engine holds
//! them. [`KubeDoor::reconcile`], run on every read of the kubelet's PodResources `List`, then
//! names each hold after the container the kubelet lists with its devices
//! (`<namespace>/<pod>/<container>`), releases holds whose devices the kubelet no longer lists
//! (the pod ended), and holds what the kubelet lists that the engine does not hold (adopted: the
//! engine lost them, e.g. a new state directory). A pod's instances are thereby busy to the
//! engine: never reconfigured, never given to the daemon's own jobs.
//!
//! Shared replicas (`<id>::<n>`, NVIDIA's `sharing.timeSlicing` / `sharing.mps`) are held too:
//! each device a container has replicas of is one hold of its instance (or whole GPU), shared
//! time-sliced, or under MPS with the share NVIDIA's plugin gives a replica (100/replicas
//! percent of the threads, 1/replicas of the memory pinned). Several pods' holds share the
//! instance; the kubelet bounds how many. A provisional hold is matched to its container by the
//! exact replica IDs its `Allocate` gave, so two pods on one instance are never confused.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tessera_daemon::api::Service;
use tessera_daemon::engine::{Action, Caller, EngineError, Reply};
use tessera_daemon::wire::{JobQuery, JobView};
use tessera_gpu::GpuView;
use tessera_gpu::health::HealthTracker;
use tessera_kube_core::inventory::base_id;
use tessera_kube_core::{NodeInput, PluginConfig, SharingStrategy, build_inventory};
use tessera_sched::{GpuRequest, JobRequest, PinnedInstance, Sharing, full_profile};
use tessera_store::{ExitInfo, ExternalWork, JobState, Work};

/// The door's name in the engine, and how a provisional hold's key begins: one format with the
/// node agent that reads the keys back (`tessera_kube_core::holds`).
pub use tessera_kube_core::holds::{DOOR, PROVISIONAL};

/// The containers the kubelet lists with this node's devices: `<namespace>/<pod>/<container>` →
/// device IDs.
pub type Listed = BTreeMap<String, BTreeSet<String>>;

/// One hold a container's devices make: instances of one GPU, each with what a request for it
/// asks, and how they are shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedHold {
    pub pins: Vec<(PinnedInstance, GpuRequest)>,
    /// Exclusive for plain devices; a replica's sharing for a shared device.
    pub sharing: Sharing,
    /// The device IDs it stands for, as the kubelet gave them (a replica's with its `::<n>`).
    pub ids: BTreeSet<String>,
}

/// Why devices could not be held.
#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    /// A device this node does not have (any more).
    #[error("device '{0}' is not on this node")]
    UnknownDevice(String),
    /// The engine refused the hold (another job holds the instance, an unhealthy GPU, …).
    #[error("{0}")]
    Engine(#[from] EngineError),
    /// The engine accepted the hold but could not give the instances in time.
    #[error("the node could not hold {devices} within {seconds} s: {reason}")]
    NotHeld { devices: String, seconds: u64, reason: String },
}

/// What one reconciliation did: holds named after their pod, released, adopted (job, key).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    pub named: Vec<(u64, String)>,
    pub released: Vec<(u64, String)>,
    pub adopted: Vec<(u64, String)>,
}

/// The door: the engine's seam, and who the holds belong to.
pub struct KubeDoor {
    service: Arc<dyn Service>,
    caller: Caller,
    tenant: String,
    /// How long `Allocate` waits for the engine to hold the devices.
    pub hold_timeout: Duration,
    /// How long a provisional hold waits for the kubelet to list its pod before it is released
    /// (the container was never created).
    pub provisional_grace: Duration,
    /// NVIDIA's plugin configuration, the one the plugin advertises with: its sharing says how
    /// replicas are held.
    plugin_config: PluginConfig,
}

impl std::fmt::Debug for KubeDoor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeDoor").field("caller", &self.caller).field("tenant", &self.tenant).finish_non_exhaustive()
    }
}

/// `allocated:<id>,<id>` for the devices of one `Allocate`.
pub fn provisional_key(ids: &[String]) -> String {
    let mut sorted: Vec<&str> = ids.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    format!("{PROVISIONAL}{}", sorted.join(","))
}

/// The holds behind device IDs (MIG device UUIDs, or GPU UUIDs with MIG off, or replicas
/// `<id>::<n>` of either): the plain devices of one GPU are one exclusive hold; the replicas of
/// one device are one shared hold of it, shared as `config` says ([`replica_sharing`]). Plain
/// holds first, then shared ones, each by GPU and instance.
pub fn pins_for(ids: &[String], gpus: &[GpuView], config: &PluginConfig) -> Result<Vec<PlannedHold>, HoldError> {
    let mut exclusive: BTreeMap<u32, PlannedHold> = BTreeMap::new();
    let mut shared: BTreeMap<(u32, PinnedInstance), PlannedHold> = BTreeMap::new();
    for id in ids {
        let base = base_id(id);
        let (gpu, pin, request) = instance_of(base, gpus).ok_or_else(|| HoldError::UnknownDevice(id.clone()))?;
        if base == id {
            let hold = exclusive.entry(gpu).or_insert_with(|| PlannedHold {
                pins: Vec::new(),
                sharing: Sharing::Exclusive,
                ids: BTreeSet::new(),
            });
            hold.pins.push((pin, request));
            hold.ids.insert(id.clone());
        } else {
            let sharing = replica_sharing(id, gpus, config);
            let hold = shared.entry((gpu, pin)).or_insert_with(|| PlannedHold {
                pins: vec![(pin, request)],
                sharing,
                ids: BTreeSet::new(),
            });
            hold.ids.insert(id.clone());
        }
    }
    Ok(exclusive.into_values().chain(shared.into_values()).collect())
}

/// How a replica is shared: under MPS (the config's strategy) with the share NVIDIA's plugin
/// gives each replica of its device (`tessera_kube_core::allocate`: 100/replicas percent of
/// the threads, the device's memory/replicas pinned), otherwise time-sliced. A replica the
/// configuration does not advertise (an older configuration's) is held time-sliced: its
/// instance stays busy while the pod runs.
pub fn replica_sharing(id: &str, gpus: &[GpuView], config: &PluginConfig) -> Sharing {
    if config.sharing.strategy() != SharingStrategy::Mps {
        return Sharing::TimeSlice;
    }
    let health = HealthTracker::default().report();
    let input =
        NodeInput { gpus, health: &health, reconfiguring: &BTreeSet::new(), reconfiguring_gpus: &BTreeSet::new() };
    let inventory = match build_inventory(config, &input) {
        Ok(inventory) => inventory,
        Err(e) => {
            tracing::warn!("kubernetes: {id} is held time-sliced: the node's devices cannot be listed: {e}");
            return Sharing::TimeSlice;
        }
    };
    match inventory.device(id) {
        Some((_, d)) if d.replicas > 1 => {
            let replicas = d.replicas;
            let pct = u8::try_from((100 / replicas).clamp(1, 100)).unwrap_or(100);
            let pinned_mem_mib = d.memory_mib.map(|m| m / u64::from(replicas)).filter(|m| *m > 0);
            Sharing::Mps { active_thread_pct: pct, pinned_mem_mib }
        }
        _ => Sharing::TimeSlice,
    }
}

/// Whether a device ID (a replica's too) names a device of this node.
pub fn is_device_of(id: &str, gpus: &[GpuView]) -> bool {
    instance_of(id.split("::").next().unwrap_or(id), gpus).is_some()
}

/// The instance a device ID names on this node.
fn instance_of(id: &str, gpus: &[GpuView]) -> Option<(u32, PinnedInstance, GpuRequest)> {
    gpus.iter().find_map(|g| {
        let gpu = g.device.index;
        if !g.mig.current {
            if g.device.uuid != id {
                return None;
            }
            let full = full_profile(g.model?)?;
            return Some((gpu, PinnedInstance { gpu, profile_id: full.id, start: 0 }, GpuRequest::WholeGpu));
        }
        g.instances.iter().find(|i| i.compute_instances.iter().any(|c| c.uuid == id)).map(|i| {
            let pin = PinnedInstance { gpu, profile_id: i.instance.profile_id, start: i.instance.start };
            (gpu, pin, GpuRequest::Profile { name: i.profile_name.clone() })
        })
    })
}

/// The device IDs a running hold has: its slices' MIG devices, or whole GPUs.
fn held_devices(job: &JobView) -> BTreeSet<String> {
    job.ranks.iter().flat_map(|r| &r.slices).map(|s| s.mig_uuid.clone().unwrap_or_else(|| s.gpu_uuid.clone())).collect()
}

impl KubeDoor {
    /// A door acting as `caller` (an admin: it sees and releases every hold), charging holds to
    /// `tenant`, holding replicas as `plugin_config` (NVIDIA's plugin configuration, the one the
    /// plugin advertises with) shares them.
    pub fn new(service: Arc<dyn Service>, caller: Caller, tenant: String, plugin_config: PluginConfig) -> KubeDoor {
        KubeDoor {
            service,
            caller,
            tenant,
            hold_timeout: Duration::from_secs(10),
            provisional_grace: Duration::from_secs(60),
            plugin_config,
        }
    }

    async fn act(&self, action: Action) -> Result<Reply, EngineError> {
        self.service.act(self.caller.clone(), action).await
    }

    async fn job(&self, id: u64) -> Result<JobView, EngineError> {
        match self.act(Action::GetJob { id }).await? {
            Reply::Job(j) => Ok(*j),
            _ => Err(EngineError::Internal(format!("the engine did not answer job {id} with a job"))),
        }
    }

    /// Holds the devices of one container (`key`: its name when known, else provisional), one
    /// hold per GPU for plain devices and one per device for shared replicas ([`pins_for`]),
    /// all or none; returns the holds' job ids. Answers once the engine holds them, or with why
    /// it cannot.
    pub async fn hold(&self, ids: &[String], gpus: &[GpuView], key: Option<&str>) -> Result<Vec<u64>, HoldError> {
        let groups = pins_for(ids, gpus, &self.plugin_config)?;
        let key = key.map_or_else(|| provisional_key(ids), str::to_string);
        let mut held = Vec::new();
        for group in groups {
            match self.hold_one(self.request(group), &key).await {
                Ok(id) => held.push(id),
                Err(e) => {
                    for id in held {
                        self.release(id, "the rest of its container's devices could not be held").await;
                    }
                    return Err(e);
                }
            }
        }
        Ok(held)
    }

    /// The request pinned to one hold's instances.
    fn request(&self, hold: PlannedHold) -> JobRequest {
        let (pin, mut wants): (Vec<PinnedInstance>, Vec<GpuRequest>) = hold.pins.into_iter().unzip();
        let gpu = match wants.len() {
            1 => wants.remove(0),
            _ => GpuRequest::Instances(wants),
        };
        let mut r = JobRequest::new(gpu);
        r.pin = pin;
        r.sharing = hold.sharing;
        r.tenant.clone_from(&self.tenant);
        r.requeue = false;
        r
    }

    async fn hold_one(&self, request: JobRequest, key: &str) -> Result<u64, HoldError> {
        let devices = describe(&request);
        let work = Work::External(ExternalWork { door: DOOR.to_string(), key: key.to_string() });
        let id = match self.act(Action::SubmitWork { request, work }).await? {
            Reply::Submitted(s) => s.id,
            _ => return Err(EngineError::Internal("the engine did not answer a submission with its id".into()).into()),
        };
        let deadline = tokio::time::Instant::now() + self.hold_timeout;
        loop {
            let job = self.job(id).await?;
            if job.state == JobState::Running {
                tracing::info!("kubernetes: job {id} holds {devices} for {key}");
                return Ok(id);
            }
            let ended = job.state.is_terminal();
            if ended || tokio::time::Instant::now() >= deadline {
                if !ended {
                    let _ = self.act(Action::Cancel { id }).await;
                }
                return Err(HoldError::NotHeld { devices, seconds: self.hold_timeout.as_secs(), reason: job.reason });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Gives a hold back (logged when the engine refuses: it ended already).
    pub async fn release(&self, id: u64, why: &str) {
        let exit = ExitInfo { code: None, signal: None, failed_rank: None, detail: why.to_string() };
        if let Err(e) = self.act(Action::Release { id, exit, succeeded: true }).await {
            tracing::warn!("kubernetes: releasing job {id}: {e}");
        }
    }

    /// The door's holds that are running.
    async fn holds(&self) -> Result<Vec<JobView>, EngineError> {
        let query = JobQuery { all: true, states: vec![JobState::Running], ..JobQuery::default() };
        match self.act(Action::ListJobs(query)).await? {
            Reply::Jobs(list) => {
                Ok(list.jobs.into_iter().filter(|j| j.external.as_ref().is_some_and(|e| e.door == DOOR)).collect())
            }
            _ => Err(EngineError::Internal("the engine did not answer a job list with jobs".into())),
        }
    }

    /// Brings the holds in line with what the kubelet lists (see the module header). `now`:
    /// ms since the epoch.
    pub async fn reconcile(&self, listed: &Listed, gpus: &[GpuView], now_ms: u64) -> Result<Reconciled, EngineError> {
        let mut done = Reconciled::default();
        // The listed device IDs (replicas with their `::<n>`) some hold stands for.
        let mut covered: BTreeSet<String> = BTreeSet::new();
        for job in self.holds().await? {
            let Some(ext) = &job.external else { continue };
            let devices = held_devices(&job);
            if let Some(given) = ext.key.strip_prefix(PROVISIONAL) {
                // The IDs its `Allocate` gave on its instances: the container listing them owns it.
                let mine = on_devices(given.split(','), &devices);
                let owner = listed.iter().find(|(_, ds)| !mine.is_empty() && mine.is_subset(ds));
                if let Some((key, _)) = owner {
                    match self.act(Action::NameWork { id: job.id, key: key.clone() }).await {
                        Ok(_) => done.named.push((job.id, key.clone())),
                        Err(e) => tracing::warn!("kubernetes: naming job {} after {key}: {e}", job.id),
                    }
                    covered.extend(mine);
                } else if now_ms.saturating_sub(job.started_ms.unwrap_or(job.submitted_ms))
                    > u64::try_from(self.provisional_grace.as_millis()).unwrap_or(u64::MAX)
                {
                    let why = format!(
                        "the kubelet listed no container with {} within {} s of its allocation",
                        join(&devices),
                        self.provisional_grace.as_secs()
                    );
                    self.release(job.id, &why).await;
                    done.released.push((job.id, ext.key.clone()));
                } else {
                    covered.extend(mine);
                }
                continue;
            }
            match listed.get(&ext.key) {
                Some(ds) if !devices.is_empty() && devices.iter().all(|d| ds.iter().any(|x| base_id(x) == d)) => {
                    covered.extend(on_devices(ds.iter().map(String::as_str), &devices));
                }
                _ => {
                    let why = format!("the kubelet no longer lists {} with {}", ext.key, join(&devices));
                    tracing::info!("kubernetes: job {} ends: {why}", job.id);
                    self.release(job.id, &why).await;
                    done.released.push((job.id, ext.key.clone()));
                }
            }
        }
        for (key, ds) in listed {
            let missing: Vec<String> = ds.iter().filter(|d| !covered.contains(*d)).cloned().collect();
            if missing.is_empty() {
                continue;
            }
            match self.hold(&missing, gpus, Some(key)).await {
                Ok(ids) => {
                    for id in ids {
                        tracing::info!("kubernetes: job {id} adopts {} for {key}", missing.join(", "));
                        done.adopted.push((id, key.clone()));
                    }
                }
                Err(e) => {
                    tracing::warn!("kubernetes: {key} uses {}, which this node cannot hold: {e}", missing.join(", "))
                }
            }
        }
        Ok(done)
    }
}

/// Of `ids` (as the kubelet gives them), those on `devices` (a hold's MIG devices or GPUs).
fn on_devices<'a>(ids: impl IntoIterator<Item = &'a str>, devices: &BTreeSet<String>) -> BTreeSet<String> {
    ids.into_iter().filter(|id| devices.contains(base_id(id))).map(str::to_string).collect()
}

fn join(ids: &BTreeSet<String>) -> String {
    ids.iter().map(String::as_str).collect::<Vec<_>>().join(", ")
}

/// `GPU 0 1g.10gb@3` for the log and errors (`whole GPU 0` with MIG off), with its sharing
/// when shared (`, time-sliced`, `, MPS 25%`).
fn describe(request: &JobRequest) -> String {
    let sharing = match request.sharing {
        Sharing::Exclusive => String::new(),
        Sharing::TimeSlice => ", time-sliced".to_string(),
        Sharing::Mps { active_thread_pct, .. } => format!(", MPS {active_thread_pct}%"),
    };
    format!("{}{sharing}", describe_instances(request))
}

fn describe_instances(request: &JobRequest) -> String {
    let names: Vec<Option<&str>> = match &request.gpu {
        GpuRequest::Instances(list) => list.iter().map(profile_of).collect(),
        one => vec![profile_of(one)],
    };
    request
        .pin
        .iter()
        .zip(names.into_iter().chain(std::iter::repeat(None)))
        .map(|(p, name)| match name {
            Some(n) => format!("GPU {} {n}@{}", p.gpu, p.start),
            None => format!("whole GPU {}", p.gpu),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn profile_of(r: &GpuRequest) -> Option<&str> {
    match r {
        GpuRequest::Profile { name } => Some(name),
        _ => None,
    }
}
