//! Starting a job the scheduler placed: `queued → placing`, every slice of every rank
//! allocated in one transaction (with its live key, NUMA node and host share), then either
//! `running` at once (external work: the front door's pod or Slurm job uses the slices) or the
//! job's supervisor launched in a fresh run directory with its spec — the user's identity from
//! NSS, each rank's devices, CPUs and memory node, MPS, and a cgroup with the job's CPUs,
//! memory limit and GPU device nodes — and `running` once a supervisor has claimed it.
//!
//! A launch no supervisor claimed is safe to repeat (the claim makes sure it never runs): the
//! job goes back to the queue, up to [`MAX_UNCLAIMED_LAUNCHES`] times.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use tessera_exec::{DeviceAccess, DeviceNumber, ExecError, Isolation, JobSpec, MpsClient, RankSpec, rank_env};
use tessera_gpu::view::NodeView;
use tessera_sched::{NumaPolicy, RankStart, Sharing, full_profile};
use tessera_store::{Allocation, JobRecord, JobState, SliceAllocation, Work};

use super::Engine;
use crate::config::Isolation as IsolationMode;

/// A job whose launch no supervisor claimed this many times fails instead of queueing again.
pub const MAX_UNCLAIMED_LAUNCHES: u32 = 3;
/// How the event of a launch no supervisor took ends (they are counted by it).
const UNCLAIMED_REQUEUED: &str = "; queued again";

/// One slice as it really is on the GPU.
struct LiveSlice {
    allocation: Allocation,
    /// What the rank's process sees (`MIG-…`, or `GPU-…` with MIG off).
    device: String,
    /// `GPU 0 3g.40gb@4`, `GPU 1 (whole)`.
    label: String,
    /// Device nodes it needs (`/dev/nvidia0`, `/dev/nvidia-caps/nvidia-cap21`).
    nodes: Vec<PathBuf>,
    gpu_instance_id: Option<u32>,
    compute_instance_id: Option<u32>,
}

enum LaunchError {
    /// Nothing ran: queue it again.
    Retry(String),
    /// It can never start as placed.
    Fail(String),
}

impl Engine {
    /// Starts job `id` on `ranks` (the scheduler's decision); any failure is recorded on the job.
    pub(crate) fn start(&mut self, id: u64, ranks: &[RankStart], live: &NodeView) {
        let now = tessera_host::now_ms();
        let Ok(Some(rec)) = self.store.job(id) else { return };
        if self.store.transition(id, JobState::Queued, JobState::Placing, "placing", now).is_err() {
            return;
        }
        let run = rec.runs + 1;
        match self.launch(&rec, run, ranks, live) {
            Ok(()) => {}
            Err(LaunchError::Retry(why)) => {
                // Launches no supervisor took, this one included (preemptions and requeues
                // after a failed GPU are other runs, and do not count).
                let unclaimed = 1 + self.store.events(id).map_or(0, |events| {
                    events
                        .iter()
                        .filter(|e| e.from == JobState::Placing && e.to == JobState::Queued)
                        .filter(|e| e.reason.ends_with(UNCLAIMED_REQUEUED))
                        .count()
                });
                if unclaimed < MAX_UNCLAIMED_LAUNCHES as usize {
                    let reason = format!("run {run} did not start ({why}){UNCLAIMED_REQUEUED}");
                    let _ =
                        self.store.transition(id, JobState::Placing, JobState::Queued, &reason, tessera_host::now_ms());
                } else {
                    self.fail_job(
                        id,
                        JobState::Placing,
                        &format!("its supervisor never took it, {unclaimed} times: {why}"),
                    );
                }
            }
            Err(LaunchError::Fail(why)) => self.fail_job(id, JobState::Placing, &why),
        }
    }

    fn live_slices(
        &self,
        id: u64,
        ranks: &[RankStart],
        live: &NodeView,
        exclusive: bool,
    ) -> Result<Vec<Vec<LiveSlice>>, String> {
        let mut out = Vec::new();
        for r in ranks {
            let mut slices = Vec::new();
            for s in &r.slices {
                let fact = self.facts.gpu(s.gpu).ok_or_else(|| format!("no GPU {}", s.gpu))?;
                let view = live
                    .gpus
                    .iter()
                    .find(|g| g.device.index == s.gpu)
                    .ok_or_else(|| format!("GPU {} does not answer", s.gpu))?;
                let gpu_node = self.paths.dev_root.join(format!("nvidia{}", fact.minor));
                let mut allocation = Allocation {
                    gpu_uuid: fact.uuid.clone(),
                    gpu_index: s.gpu,
                    profile_id: s.instance.profile_id,
                    start: s.instance.start,
                    gpu_instance_id: None,
                    compute_instance_id: None,
                    mig_uuid: None,
                    exclusive,
                    numa_node: s.numa_node,
                    host: s.host.clone(),
                };
                if fact.mig_in_force(view.mig.current) {
                    let inst = view
                        .instances
                        .iter()
                        .find(|i| {
                            i.instance.profile_id == s.instance.profile_id && i.instance.start == s.instance.start
                        })
                        .ok_or_else(|| {
                            format!("GPU {}: the planned instance at unit {} is not there", s.gpu, s.instance.start)
                        })?;
                    let ci = inst
                        .compute_instances
                        .first()
                        .ok_or_else(|| format!("GPU {}: {} has no compute instance", s.gpu, inst.label()))?;
                    allocation.gpu_instance_id = Some(inst.gpu_instance_id);
                    allocation.compute_instance_id = Some(ci.id);
                    allocation.mig_uuid = Some(ci.uuid.clone());
                    let mut nodes = vec![gpu_node];
                    let gi_minor = self
                        .backend()
                        .gpu_instances(s.gpu)
                        .ok()
                        .and_then(|gis| gis.into_iter().find(|g| g.id == inst.gpu_instance_id))
                        .and_then(|g| g.caps_minor);
                    for minor in [gi_minor, ci.caps_minor].into_iter().flatten() {
                        nodes.push(self.paths.dev_root.join("nvidia-caps").join(format!("nvidia-cap{minor}")));
                    }
                    slices.push(LiveSlice {
                        label: format!("GPU {} {}", s.gpu, inst.label()),
                        device: ci.uuid.clone(),
                        allocation,
                        nodes,
                        gpu_instance_id: Some(inst.gpu_instance_id),
                        compute_instance_id: Some(ci.id),
                    });
                } else {
                    if full_profile(fact.model).map(|p| p.id) != Some(s.instance.profile_id) {
                        return Err(format!("job {id}: GPU {} has MIG off and cannot hold {:?}", s.gpu, s.instance));
                    }
                    slices.push(LiveSlice {
                        label: format!("GPU {} (whole)", s.gpu),
                        device: fact.uuid.clone(),
                        allocation,
                        nodes: vec![gpu_node],
                        gpu_instance_id: None,
                        compute_instance_id: None,
                    });
                }
            }
            out.push(slices);
        }
        Ok(out)
    }

    fn launch(&mut self, rec: &JobRecord, run: u32, ranks: &[RankStart], live: &NodeView) -> Result<(), LaunchError> {
        let id = rec.id;
        let request = rec.request.clone();
        let exclusive = matches!(request.sharing, Sharing::Exclusive);
        let slices = self.live_slices(id, ranks, live, exclusive).map_err(LaunchError::Fail)?;
        let allocations: Vec<SliceAllocation> = ranks
            .iter()
            .zip(&slices)
            .flat_map(|(r, ss)| {
                ss.iter().enumerate().map(move |(k, s)| SliceAllocation {
                    rank: r.rank,
                    slice: u32::try_from(k).unwrap_or(u32::MAX),
                    allocation: s.allocation.clone(),
                })
            })
            .collect();
        self.store
            .allocate_all(id, &allocations)
            .map_err(|e| LaunchError::Fail(format!("allocating its slices: {e}")))?;
        let placed: Vec<String> = slices.iter().flatten().map(|s| s.label.clone()).collect();
        let process = match &rec.work {
            Work::External(ext) => {
                let reason = format!("allocated {} to {} {}", placed.join(", "), ext.door, ext.key);
                tracing::info!(
                    job = id,
                    user = %rec.user_name,
                    tenant = %rec.tenant,
                    slices = %placed.join(", "),
                    "job {id} started (external, {} {}): user {}, tenant {}, on {}",
                    ext.door,
                    ext.key,
                    rec.user_name,
                    rec.tenant,
                    placed.join(", "),
                );
                self.store
                    .transition(id, JobState::Placing, JobState::Running, &reason, tessera_host::now_ms())
                    .map_err(|e| LaunchError::Fail(e.to_string()))?;
                return Ok(());
            }
            Work::Process(p) => p.clone(),
        };
        // Who it runs as: NSS's view of the user (primary group, supplementary groups).
        let euid = tessera_host::effective_uid();
        let user = if euid == 0 {
            tessera_host::user_by_uid(rec.user_uid)
                .map_err(|e| LaunchError::Fail(e.to_string()))?
                .ok_or_else(|| LaunchError::Fail(format!("uid {} is not a user on this node", rec.user_uid)))?
        } else {
            tessera_host::User {
                uid: euid,
                gid: tessera_host::effective_gid(),
                name: rec.user_name.clone(),
                home: PathBuf::from("/"),
                groups: Vec::new(),
            }
        };
        let world = u32::try_from(ranks.len()).unwrap_or(u32::MAX);
        let mut rank_specs = Vec::new();
        let mut attach = Vec::new();
        let mut all_nodes: BTreeSet<PathBuf> = BTreeSet::new();
        for (r, ss) in ranks.iter().zip(&slices) {
            let devices: Vec<String> = ss.iter().map(|s| s.device.clone()).collect();
            let mps = match request.sharing {
                Sharing::Mps { active_thread_pct, pinned_mem_mib } => {
                    let first = ss.first().ok_or_else(|| LaunchError::Fail("an MPS rank with no slice".into()))?;
                    let (pipe_dir, log_dir) =
                        self.ensure_mps(&first.device, &user).map_err(|e| LaunchError::Fail(format!("MPS: {e}")))?;
                    Some(MpsClient {
                        pipe_dir,
                        log_dir,
                        active_thread_percentage: Some(u32::from(active_thread_pct)),
                        pinned_device_mem_limit_mib: pinned_mem_mib,
                    })
                }
                _ => None,
            };
            // The scheduler's CPUs and NUMA node, on this machine (`HostBinding`: the simulated
            // node's are folded onto it, and the job is told the simulated ones).
            let (host_cpus, numa) = (r.cpus(), r.numa_node());
            let mut env = rank_env(id, r.rank, world, &devices, mps.as_ref());
            env.extend(self.facts.binding.env(&host_cpus, numa));
            rank_specs.push(RankSpec {
                rank: r.rank,
                env,
                cpus: self.facts.binding.cpus(&host_cpus),
                mem_node: if matches!(request.numa, NumaPolicy::Local) {
                    numa.and_then(|n| self.facts.binding.mem_node(n))
                } else {
                    None
                },
            });
            for s in ss {
                all_nodes.extend(s.nodes.iter().cloned());
                attach.push((s.allocation.gpu_index, s.gpu_instance_id, s.compute_instance_id));
            }
        }
        let mut env = process.env.clone();
        env.push(("TESSERA_RESTART_COUNT".into(), run.saturating_sub(1).to_string()));
        let isolation = self.isolation(id, run, ranks, &request, &all_nodes).map_err(LaunchError::Fail)?;
        let spec = JobSpec {
            job_id: id,
            argv: process.command.clone(),
            env,
            cwd: PathBuf::from(&process.cwd),
            uid: user.uid,
            gid: user.gid,
            groups: user.groups.clone(),
            ranks: rank_specs,
            time_limit_ms: request.time_limit_ms,
            kill_grace_ms: self.config.scheduler.kill_grace_ms,
            run,
            output_dir: Some(self.paths.output_of(id)),
            output_limit_bytes: Some(self.config.jobs.output_limit_mib.saturating_mul(1 << 20)),
            isolation,
        };
        let root = self.paths.job_root(id);
        private_dir(&root).map_err(|e| LaunchError::Fail(format!("creating {}: {e}", root.display())))?;
        let dir = self.paths.run_dir(id, run);
        let pid = match self.launcher.launch(&dir, &spec) {
            Ok(pid) => pid,
            Err(ExecError::NotStarted { detail, .. }) => return Err(LaunchError::Retry(detail)),
            Err(ExecError::AlreadyLaunched { .. }) => {
                return Err(LaunchError::Retry(format!(
                    "{} was already used; the next run gets its own",
                    dir.display()
                )));
            }
            Err(e) => return Err(LaunchError::Fail(format!("starting the job: {e}"))),
        };
        let now = tessera_host::now_ms();
        self.store
            .set_runtime(id, &dir.display().to_string(), pid, now)
            .map_err(|e| LaunchError::Fail(e.to_string()))?;
        if let Some(sim) = self.node.sim() {
            // The simulated node shows the job's instances busy while it runs, as NVML would.
            for (gpu, gi, ci) in attach {
                let name = format!("tessera-job-{id}");
                let _ = match (gi, ci) {
                    (Some(gi), Some(ci)) => sim.attach_process(gpu, gi, ci, pid, &name),
                    _ => sim.attach_gpu_process(gpu, pid, &name),
                };
            }
        }
        tracing::info!(
            job = id,
            run,
            user = %rec.user_name,
            tenant = %rec.tenant,
            slices = %placed.join(", "),
            pid,
            "job {id} started (run {run}): user {}, tenant {}, on {}",
            rec.user_name,
            rec.tenant,
            placed.join(", "),
        );
        self.store
            .transition(id, JobState::Placing, JobState::Running, &format!("running on {}", placed.join(", ")), now)
            .map_err(|e| LaunchError::Fail(e.to_string()))
    }

    /// The job's cgroup: its CPUs and NUMA nodes, its memory as a limit, and only its own GPU
    /// device nodes (plus `nvidiactl` and `nvidia-uvm`) among NVIDIA's.
    fn isolation(
        &self,
        id: u64,
        run: u32,
        ranks: &[RankStart],
        request: &tessera_sched::JobRequest,
        nodes: &BTreeSet<PathBuf>,
    ) -> Result<Option<Isolation>, String> {
        let mode = self.config.jobs.isolation;
        if mode == IsolationMode::Off {
            return Ok(None);
        }
        let binding = &self.facts.binding;
        let cpus: BTreeSet<u32> = ranks.iter().flat_map(|r| binding.cpus(&r.cpus())).collect();
        let mems: BTreeSet<u32> = ranks
            .iter()
            .flat_map(|r| r.slices.iter())
            .flat_map(|s| s.host.iter().filter_map(|h| binding.mem_node(h.node)))
            .collect();
        let mem_mib: u64 = ranks.iter().map(RankStart::mem_mib).sum();
        let mut allow: Vec<DeviceNumber> = Vec::new();
        let dev = &self.paths.dev_root;
        for path in nodes.iter().cloned().chain([dev.join("nvidiactl"), dev.join("nvidia-uvm")]) {
            match tessera_exec::device_number(&path) {
                Ok(n) => allow.push(n),
                // Without the node (no driver, or a simulated GPU), only what NVIDIA fixes:
                // the GPUs' major 195 (nvidiactl is 195:255).
                Err(_) => {
                    if let Some(n) = fixed_number(&path) {
                        allow.push(n);
                    }
                }
            }
        }
        allow.sort_by_key(|d| (d.major, d.minor));
        allow.dedup();
        let mut guarded: BTreeSet<u32> = tessera_exec::nvidia_majors().into_iter().collect();
        guarded.extend(nvidia_node_majors(dev));
        Ok(Some(Isolation {
            parent: self.config.jobs.cgroup_parent.clone(),
            // The state directory's tag keeps two daemons' job 1 apart.
            name: format!("job-{id}-run-{run}.{}", self.tag),
            memory_limit_bytes: (mem_mib > 0 && request.mem_mib > 0).then(|| mem_mib.saturating_mul(1 << 20)),
            cpus: cpus.into_iter().collect(),
            mems: mems.into_iter().collect(),
            devices: Some(DeviceAccess { guarded_majors: guarded.into_iter().collect(), allow }),
            required: mode == IsolationMode::Required,
        }))
    }
}

/// The device numbers NVIDIA's driver fixes: `/dev/nvidiaN` is 195:N, `/dev/nvidiactl` 195:255.
fn fixed_number(path: &Path) -> Option<DeviceNumber> {
    let name = path.file_name()?.to_str()?;
    if name == "nvidiactl" {
        return Some(DeviceNumber { major: 195, minor: 255 });
    }
    let minor: u32 = name.strip_prefix("nvidia")?.parse().ok()?;
    Some(DeviceNumber { major: 195, minor })
}

/// The majors of the NVIDIA device nodes under `dev` (`nvidia*` and `nvidia-caps/*`): every one
/// of them is guarded, so a job reaches only the nodes it is allowed.
fn nvidia_node_majors(dev: &Path) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    let mut scan = |dir: &Path| {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_name().to_str().is_some_and(|n| n.starts_with("nvidia"))
                    && let Ok(n) = tessera_exec::device_number(&e.path())
                {
                    out.insert(n.major);
                }
            }
        }
    };
    scan(dev);
    scan(&dev.join("nvidia-caps"));
    out
}

/// Creates a directory (and its parents) private to the daemon (0700).
pub(crate) fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}
