//! Preparing one claim (see the module header of [`super`] for the order of steps and why):
//! the checkpoint first, then the engine's holds (found again by the claim's UID, or submitted
//! with the instances made at their placements), then the CDI spec and, for MPS, the claim's
//! control daemon, then `Prepared`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tessera_daemon::engine::{Action, Caller, EngineError, NodeState, Reply};
use tessera_daemon::wire::{JobQuery, JobView};
use tessera_exec::{MpsControl, RunAs};
use tessera_kube_core::dra_claim::{ClaimRef, ClaimSharing, claim_sharing, device_target};
use tessera_sched::{GpuRequest, JobRequest, Sharing};
use tessera_store::{ExternalWork, JobState, Work};
use tokio::sync::{Mutex, OwnedMutexGuard, watch};

use super::cdi::{HeldDevice, MpsMounts, cdi_device_name, claim_spec, qualified, spec_file_name, write_spec};
use super::checkpoint::{CheckpointFile, ClaimDevice, ClaimEntry, ClaimPhase};
use super::error::PrepareError;
use super::node::{device_nodes, dra_gpus, resolve};
use super::{ClaimSource, DRA_DOOR, DraEngine, DraOptions};

/// How often a prepare looks at a job it waits for, besides the engine's change notices.
const JOB_POLL: Duration = Duration::from_millis(50);

/// The plugin's state, shared by its services and its watcher.
pub(crate) struct Driver {
    pub engine: Arc<dyn DraEngine>,
    pub caller: Caller,
    pub tenant: String,
    pub claims: Arc<dyn ClaimSource>,
    pub mps: Arc<dyn MpsControl>,
    pub options: DraOptions,
    pub checkpoint: Mutex<CheckpointFile>,
    /// One lock per claim being worked on: a claim is prepared or unprepared by one call at a
    /// time (the kubelet may retry while a call still runs); other claims go on beside it.
    locks: std::sync::Mutex<BTreeMap<String, Arc<Mutex<()>>>>,
    /// Moves whenever the checkpoint's claims change (the health stream follows them).
    pub changed: watch::Sender<u64>,
}

/// A claim's MPS directories: `<mps_root>/<uid>/{pipe,log,shm}`.
pub(crate) struct MpsDirs {
    pub base: PathBuf,
    pub pipe: PathBuf,
    pub log: PathBuf,
    pub shm: PathBuf,
}

impl Driver {
    pub fn new(
        engine: Arc<dyn DraEngine>,
        caller: Caller,
        tenant: String,
        claims: Arc<dyn ClaimSource>,
        mps: Arc<dyn MpsControl>,
        options: DraOptions,
        checkpoint: CheckpointFile,
    ) -> Driver {
        Driver {
            engine,
            caller,
            tenant,
            claims,
            mps,
            options,
            checkpoint: Mutex::new(checkpoint),
            locks: std::sync::Mutex::new(BTreeMap::new()),
            changed: watch::channel(0).0,
        }
    }

    /// Waits for the claim's turn.
    pub async fn lock(&self, uid: &str) -> OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            // Locks nobody holds or waits for are dropped as others are taken.
            locks.retain(|_, l| Arc::strong_count(l) > 1);
            locks.entry(uid.to_string()).or_default().clone()
        };
        lock.lock_owned().await
    }

    pub async fn act(&self, action: Action) -> Result<Reply, EngineError> {
        self.engine.act(self.caller.clone(), action).await
    }

    pub async fn job(&self, id: u64) -> Result<JobView, EngineError> {
        match self.act(Action::GetJob { id }).await? {
            Reply::Job(j) => Ok(*j),
            _ => Err(EngineError::Internal(format!("the engine did not answer job {id} with a job"))),
        }
    }

    /// The claim's active holds (door `dra`, key = its UID), newest first.
    pub async fn claim_jobs(&self, uid: &str) -> Result<Vec<JobView>, EngineError> {
        let query = JobQuery { all: true, ..JobQuery::default() };
        match self.act(Action::ListJobs(query)).await? {
            Reply::Jobs(list) => {
                let mut jobs: Vec<JobView> = list
                    .jobs
                    .into_iter()
                    .filter(|j| j.external.as_ref().is_some_and(|x| x.door == DRA_DOOR && x.key == uid))
                    .collect();
                jobs.sort_by_key(|j| std::cmp::Reverse(j.id));
                Ok(jobs)
            }
            _ => Err(EngineError::Internal("the engine did not answer a job list with jobs".into())),
        }
    }

    pub fn mps_dirs(&self, uid: &str) -> MpsDirs {
        let base = self.options.mps_root.join(uid);
        MpsDirs { pipe: base.join("pipe"), log: base.join("log"), shm: base.join("shm"), base }
    }

    pub fn spec_path(&self, uid: &str) -> PathBuf {
        self.options.cdi_dir.join(spec_file_name(&self.options.cdi_kind(), uid))
    }

    /// Records `entry` in the checkpoint, and tells the watcher.
    pub async fn record(&self, entry: ClaimEntry) -> Result<(), String> {
        self.checkpoint.lock().await.put(entry)?;
        self.changed.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Prepares `claim`: its devices as the kubelet is answered, or why not.
    pub async fn prepare(&self, claim: &ClaimRef) -> Result<Vec<ClaimDevice>, PrepareError> {
        let _turn = self.lock(&claim.uid).await;
        let node = |what: &str| {
            let (claim, what) = (claim.clone(), what.to_string());
            move |problem: String| PrepareError::Node { claim, what, problem }
        };
        let recorded = self.checkpoint.lock().await.get(&claim.uid).cloned();
        let mut entry = match recorded {
            Some(e) if e.phase == ClaimPhase::Prepared => return Ok(e.devices),
            // An earlier try was interrupted: finish it with what it recorded (above all, which
            // instances it made).
            Some(e) => e,
            None => {
                let Some(entry) = self.plan(claim).await? else { return Ok(Vec::new()) };
                self.record(entry.clone()).await.map_err(node("writing the checkpoint"))?;
                entry
            }
        };
        self.hold(&mut entry).await?;
        let state = self.engine.node_state().await.map_err(|e| node("reading the node")(e.to_string()))?;
        let mps = entry.devices.iter().any(|d| matches!(d.sharing, ClaimSharing::Mps { .. }));
        let dirs = self.mps_dirs(&claim.uid);
        self.write_cdi(&mut entry, &state, mps.then_some(&dirs)).map_err(node("the CDI spec"))?;
        if mps {
            self.start_mps(&entry, &dirs).await.map_err(node("the MPS control daemon"))?;
            entry.mps_pipe_dir = Some(dirs.pipe);
        }
        entry.phase = ClaimPhase::Prepared;
        self.record(entry.clone()).await.map_err(node("writing the checkpoint"))?;
        tracing::info!(
            "DRA: claim {claim} prepared: {}",
            entry.devices.iter().map(describe).collect::<Vec<_>>().join(", ")
        );
        Ok(entry.devices)
    }

    /// The claim's devices of this driver on this node, each placed on the node as it is now;
    /// `None` when it has none here.
    async fn plan(&self, claim: &ClaimRef) -> Result<Option<ClaimEntry>, PrepareError> {
        let allocation = self
            .claims
            .allocation(claim)
            .await
            .map_err(|message| PrepareError::Allocation { claim: claim.clone(), message })?;
        let driver = self.options.driver.as_str();
        let ours: Vec<_> =
            allocation.devices.iter().filter(|d| d.driver == driver && d.pool == self.options.node_name).collect();
        if ours.is_empty() {
            return Ok(None);
        }
        let state = self.engine.node_state().await.map_err(|e| PrepareError::Node {
            claim: claim.clone(),
            what: "reading the node".into(),
            problem: e.to_string(),
        })?;
        let gpus = dra_gpus(&state);
        let mut devices = Vec::new();
        for d in ours {
            let refuse =
                |problem: String| PrepareError::Device { claim: claim.clone(), device: d.device.clone(), problem };
            let target = device_target(&d.device, &gpus).map_err(|e| refuse(e.to_string()))?;
            let t = resolve(target, &state).map_err(refuse)?;
            if let Some(h) = state.held.iter().find(|h| {
                (h.gpu, h.profile_id, h.start) == (t.gpu, t.profile_id, t.start)
                    && !h.external.as_ref().is_some_and(|x| x.door == DRA_DOOR && x.key == claim.uid)
            }) {
                return Err(refuse(format!("its instance is held by job {}", h.job)));
            }
            let sharing = claim_sharing(&allocation.config, driver, &d.request)
                .map_err(|source| PrepareError::Config { claim: claim.clone(), request: d.request.clone(), source })?;
            devices.push(ClaimDevice {
                request: d.request.clone(),
                pool: d.pool.clone(),
                device: d.device.clone(),
                share_id: d.share_id.clone(),
                gpu: t.gpu,
                profile_id: t.profile_id,
                start: t.start,
                profile: t.profile,
                made: !t.exists,
                sharing,
                job: None,
                uuid: None,
                gpu_instance_id: None,
                cdi_id: None,
            });
        }
        Ok(Some(ClaimEntry {
            claim: claim.clone(),
            phase: ClaimPhase::Preparing,
            devices,
            run_as_user: allocation.run_as_user,
            mps_pipe_dir: None,
        }))
    }

    /// Makes the engine hold every device (a hold an earlier try submitted is taken as it is)
    /// and waits until it does; fills in each device's job, UUID and GPU instance.
    async fn hold(&self, entry: &mut ClaimEntry) -> Result<(), PrepareError> {
        let claim = entry.claim.clone();
        let engine = |device: &str| {
            let (claim, device) = (claim.clone(), device.to_string());
            move |source: EngineError| PrepareError::Engine { claim, device, source }
        };
        let first = entry.devices.first().map_or(String::new(), |d| d.device.clone());
        let jobs = self.claim_jobs(&claim.uid).await.map_err(engine(&first))?;
        let mut ids = Vec::new();
        for d in &entry.devices {
            let pin = d.pin();
            let found = jobs
                .iter()
                .filter(|j| j.resources.pin == [pin])
                .max_by_key(|j| (j.state == JobState::Running, j.id))
                .map(|j| j.id);
            let id = match found {
                Some(id) => id,
                None => self.submit(&claim, d).await.map_err(engine(&d.device))?,
            };
            ids.push(id);
        }
        let now = tokio::time::Instant::now();
        // A timeout too large to add is as good as none.
        let deadline = now.checked_add(self.options.hold_timeout).unwrap_or(now + Duration::from_secs(86_400 * 365));
        for (d, id) in entry.devices.iter_mut().zip(ids) {
            let job = self.wait_running(&claim, &d.device, id, deadline).await?;
            let slice = job.ranks.first().and_then(|r| r.slices.first()).ok_or_else(|| PrepareError::Device {
                claim: claim.clone(),
                device: d.device.clone(),
                problem: format!("job {id} runs on no slice"),
            })?;
            d.job = Some(id);
            d.uuid = Some(slice.mig_uuid.clone().unwrap_or_else(|| slice.gpu_uuid.clone()));
            d.gpu_instance_id = slice.gpu_instance_id;
        }
        Ok(())
    }

    /// Submits the hold of one device, making its instance first when it does not exist.
    async fn submit(&self, claim: &ClaimRef, d: &ClaimDevice) -> Result<u64, EngineError> {
        let gpu = match &d.profile {
            Some(name) => GpuRequest::Profile { name: name.clone() },
            None => GpuRequest::WholeGpu,
        };
        let mut request = JobRequest::new(gpu);
        request.pin = vec![d.pin()];
        // The claim holds its device alone; its containers share it among themselves (MPS,
        // time slicing) on the node, not through the engine.
        request.sharing = Sharing::Exclusive;
        request.requeue = false;
        request.tenant.clone_from(&self.tenant);
        let work = Work::External(ExternalWork { door: DRA_DOOR.to_string(), key: claim.uid.clone() });
        match self.act(Action::SubmitMaking { request, work }).await? {
            Reply::Submitted(s) => Ok(s.id),
            _ => Err(EngineError::Internal("the engine did not answer a submission with its id".into())),
        }
    }

    /// Waits until job `id` runs; one that ends or is still waiting at `deadline` fails the
    /// prepare (a waiting one is cancelled: the kubelet's retry submits again).
    async fn wait_running(
        &self,
        claim: &ClaimRef,
        device: &str,
        id: u64,
        deadline: tokio::time::Instant,
    ) -> Result<JobView, PrepareError> {
        let mut changes = self.engine.changes();
        loop {
            let job = self.job(id).await.map_err(|source| PrepareError::Engine {
                claim: claim.clone(),
                device: device.to_string(),
                source,
            })?;
            if job.state == JobState::Running {
                return Ok(job);
            }
            let ended = job.state.is_terminal();
            if ended || tokio::time::Instant::now() >= deadline {
                if !ended && let Err(e) = self.act(Action::Cancel { id }).await {
                    tracing::warn!("DRA: cancelling job {id} of claim {claim}: {e}");
                }
                return Err(PrepareError::NotHeld {
                    claim: claim.clone(),
                    device: device.to_string(),
                    seconds: self.options.hold_timeout.as_secs(),
                    reason: format!("job {id} is {}: {}", job.state, job.reason),
                });
            }
            let _ = tokio::time::timeout(JOB_POLL, changes.changed()).await;
        }
    }

    /// Writes the claim's CDI spec and each device's CDI ID.
    fn write_cdi(&self, entry: &mut ClaimEntry, state: &NodeState, mps: Option<&MpsDirs>) -> Result<(), String> {
        let uid = entry.claim.uid.clone();
        let kind = self.options.cdi_kind();
        let mut held = Vec::new();
        for d in &entry.devices {
            let uuid = d.uuid.clone().unwrap_or_default();
            let mig_uuid = d.gpu_instance_id.map(|_| uuid.as_str());
            let nodes =
                device_nodes(state, d.gpu, d.gpu_instance_id, mig_uuid).map_err(|e| format!("{}: {e}", d.device))?;
            held.push(HeldDevice { device: d.device.clone(), uuid, nodes });
        }
        let mounts = mps.map(|m| MpsMounts { pipe_dir: m.pipe.clone(), shm_dir: m.shm.clone() });
        let spec = claim_spec(&kind, &uid, &held, mounts.as_ref());
        write_spec(&self.options.cdi_dir, &spec_file_name(&kind, &uid), &spec)?;
        for d in &mut entry.devices {
            d.cdi_id = Some(qualified(&kind, &cdi_device_name(&uid, &d.device)));
        }
        Ok(())
    }

    /// Starts the claim's MPS control daemon over its MPS-shared devices, as the claim's user
    /// (root when the pod names none), with the configuration's defaults: the smallest
    /// active-thread percentage any of its requests asks, and each device's pinned memory
    /// limit. A daemon an interrupted try left at the pipe directory is quit first.
    async fn start_mps(&self, entry: &ClaimEntry, dirs: &MpsDirs) -> Result<(), String> {
        let mut devices = Vec::new();
        let mut pct: Option<u8> = None;
        let mut pinned = Vec::new();
        for d in &entry.devices {
            if let ClaimSharing::Mps { active_thread_pct, pinned_mem_mib } = d.sharing {
                let uuid = d.uuid.clone().unwrap_or_default();
                pct = match (pct, active_thread_pct) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                if let Some(mib) = pinned_mem_mib {
                    pinned.push((uuid.clone(), mib));
                }
                devices.push(uuid);
            }
        }
        let (mps, uid) = (self.mps.clone(), entry.run_as_user);
        let (base, pipe, log, shm) = (dirs.base.clone(), dirs.pipe.clone(), dirs.log.clone(), dirs.shm.clone());
        tokio::task::spawn_blocking(move || {
            let user = run_as(uid)?;
            make_dir(&base, 0o755)?;
            make_dir(&shm, 0o1777)?;
            if mps.is_running(&pipe) {
                mps.quit(&pipe).map_err(|e| e.to_string())?;
            }
            mps.start(&devices.join(","), &pipe, &log, &user).map_err(|e| e.to_string())?;
            let defaults = (|| {
                if let Some(p) = pct {
                    mps.set_default_active_thread_percentage(&pipe, u32::from(p))?;
                }
                for (uuid, mib) in &pinned {
                    mps.set_default_device_pinned_mem_limit(&pipe, uuid, *mib)?;
                }
                Ok::<(), tessera_exec::ExecError>(())
            })();
            if let Err(e) = defaults {
                let _ = mps.quit(&pipe);
                return Err(e.to_string());
            }
            Ok(())
        })
        .await
        .map_err(|e| format!("the MPS task: {e}"))?
    }
}

/// Who a claim's MPS control daemon runs as: the pod's user (its groups from the name service
/// when it has an entry there; otherwise a group of its own number), or this process (root).
fn run_as(uid: Option<u32>) -> Result<RunAs, String> {
    let Some(uid) = uid else {
        return Ok(RunAs {
            uid: tessera_host::effective_uid(),
            gid: tessera_host::effective_gid(),
            groups: Vec::new(),
        });
    };
    match tessera_host::user_by_uid(uid) {
        Ok(Some(user)) => Ok(RunAs::from(&user)),
        Ok(None) => Ok(RunAs { uid, gid: uid, groups: Vec::new() }),
        Err(e) => Err(format!("looking up uid {uid}: {e}")),
    }
}

fn make_dir(dir: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(|e| format!("{}: {e}", dir.display()))
}

/// `gpu-0-1g-10gb-p3 (job 7, MIG-…)` for the log.
fn describe(d: &ClaimDevice) -> String {
    let job = d.job.map_or_else(String::new, |j| format!("job {j}, "));
    format!("{} ({job}{}{})", d.device, d.uuid.as_deref().unwrap_or("?"), if d.made { ", made" } else { "" })
}
