//! A Slurm job's slices: `Prolog=`, `Epilog=` and `TaskProlog=`.
//!
//! The prolog (root, before the job starts) turns the GPU indices Slurm gave the job
//! (`SLURM_JOB_GPUS`) into instances through the GRES index map, holds them in the daemon as
//! external work of door `slurm` (key `job/<id>/<user>`: never reconfigured, never given to
//! anything else, fenced on a fault), starts one MPS control daemon per instance as the job's
//! user when Slurm gave it MPS shares (`CUDA_MPS_ACTIVE_THREAD_PERCENTAGE` is set), and writes
//! what the tasks need to `<runtime_dir>/jobs/<id>.json`. The task prolog (the job's user,
//! before each task) prints the task's MIG UUIDs as `CUDA_VISIBLE_DEVICES` (Slurm before 25.11
//! exports indices), the MPS directories, and binds the task (its parent process, which is
//! about to exec the task) to the CPUs of its GPU's NUMA node within what Slurm allowed it. The
//! epilog (root, after the job, killed or not) stops the MPS daemons, releases the holds,
//! including any an interrupted prolog left, and removes the job's files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use tessera_daemon::wire::{GpuList, JobQuery, ReleaseRequest, WorkRequest};
use tessera_exec::mps::{MpsControl, NvidiaMps, RecordingMps, RunAs};
use tessera_host::files::{WriteOptions, write_atomic};
use tessera_sched::{GpuRequest, JobRequest, PinnedInstance, Sharing};
use tessera_store::JobState;

use super::Ctx;
use super::sync::read_map;

/// The front door's name in the daemon.
pub const DOOR: &str = "slurm";

/// How long the prolog waits for the daemon to start holding the slices.
const HOLD_TIMEOUT: Duration = Duration::from_secs(20);

/// What the prolog leaves for the task prolog and the epilog.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobFile {
    pub slurm_job: u64,
    pub user: String,
    pub uid: u32,
    /// The daemon's jobs holding the slices (one per GPU).
    pub holds: Vec<u64>,
    pub slices: Vec<JobSlice>,
}

/// One slice of the job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobSlice {
    /// Slurm's GPU index.
    pub index: u32,
    pub gpu: u32,
    pub profile: String,
    /// The CUDA device: the MIG UUID, or the GPU's UUID with MIG off.
    pub device: String,
    pub numa_node: Option<u32>,
    /// This machine's CPUs local to the GPU.
    pub local_cpus: Option<String>,
    /// The MPS control daemon's pipe and log directories, for `--gres=mps` jobs.
    pub mps_pipe: Option<PathBuf>,
    pub mps_log: Option<PathBuf>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn job_id() -> anyhow::Result<u64> {
    let id = env("SLURM_JOB_ID").context("SLURM_JOB_ID is not set: run by Slurm as Prolog=, Epilog= or TaskProlog=")?;
    id.parse().with_context(|| format!("SLURM_JOB_ID={id} is not a job id"))
}

/// Indices in Slurm's list form (`0,2-3`).
fn indices(list: &str) -> anyhow::Result<Vec<u32>> {
    let set = tessera_host::parse_cpulist(list).with_context(|| format!("GPU indices '{list}'"))?;
    Ok(set.into_iter().collect())
}

fn job_file(ctx: &Ctx, id: u64) -> PathBuf {
    ctx.cfg.runtime_dir.join("jobs").join(format!("{id}.json"))
}

fn mps_dir(ctx: &Ctx, id: u64) -> PathBuf {
    ctx.cfg.runtime_dir.join("mps").join(id.to_string())
}

/// The MPS control the daemon would use on this node: NVIDIA's program on real GPUs, the
/// recording stand-in on the simulated node (its log beside the job files).
fn mps_control(ctx: &Ctx, gpus: &GpuList) -> Box<dyn MpsControl> {
    if gpus.backend == "sim" {
        Box::new(RecordingMps::new(ctx.cfg.runtime_dir.join("mps-commands.jsonl")))
    } else {
        Box::new(NvidiaMps::new(ctx.cfg.mps_control.clone()))
    }
}

/// `tessera slurm prolog`.
pub fn prolog(ctx: &Ctx) -> anyhow::Result<()> {
    let id = job_id()?;
    let Some(list) = env("SLURM_JOB_GPUS") else { return Ok(()) };
    let user = env("SLURM_JOB_USER").context("SLURM_JOB_USER is not set")?;
    let uid: u32 = env("SLURM_JOB_UID").context("SLURM_JOB_UID is not set")?.parse().context("SLURM_JOB_UID")?;
    let mps_pct = env("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE")
        .map(|p| p.parse::<u8>().with_context(|| format!("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE={p}")))
        .transpose()?;
    let path = job_file(ctx, id);
    if let Ok(bytes) = std::fs::read(&path)
        && let Ok(old) = serde_json::from_slice::<JobFile>(&bytes)
    {
        // A prolog run again for the same job (slurmd retried): its holds are still live.
        let live = old.holds.iter().all(|h| ctx.client.job(*h).is_ok_and(|j| j.state == JobState::Running));
        if live {
            return Ok(());
        }
        release_all(ctx, id, &old.holds);
    }
    let map = read_map(ctx)?.with_context(|| {
        format!("no GRES index map at {}: run `tessera slurm sync` on this node", ctx.map_path().display())
    })?;
    let gpus = crate::jobs::ok(ctx.client.gpus())?;
    let mut slices = Vec::new();
    let mut per_gpu: BTreeMap<u32, Vec<(PinnedInstance, GpuRequest)>> = BTreeMap::new();
    for index in indices(&list)? {
        let r = map.records.get(index as usize).with_context(|| {
            format!("Slurm gave job {id} GPU index {index}, but the GRES map has {} records", map.records.len())
        })?;
        let g = gpus.gpus.iter().find(|g| g.index == r.gpu).with_context(|| format!("GPU {} is gone", r.gpu))?;
        let inst = match &r.mig_uuid {
            Some(uuid) => g.instances.iter().find(|i| i.mig_uuid.as_deref() == Some(uuid)),
            None => g.instances.first().filter(|_| !g.mig),
        }
        .with_context(|| {
            format!(
                "GPU index {index} ({} on GPU {} at {}) is not on the node any more: the GRES map is stale; run \
                 `tessera slurm sync`",
                r.profile, r.gpu, r.start
            )
        })?;
        let want =
            if r.mig_uuid.is_some() { GpuRequest::Profile { name: r.profile.clone() } } else { GpuRequest::WholeGpu };
        per_gpu
            .entry(r.gpu)
            .or_default()
            .push((PinnedInstance { gpu: r.gpu, profile_id: inst.profile_id, start: inst.start }, want));
        slices.push(JobSlice {
            index,
            gpu: r.gpu,
            profile: r.profile.clone(),
            device: r.mig_uuid.clone().unwrap_or_else(|| g.uuid.clone()),
            numa_node: g.numa_node,
            local_cpus: g.local_cpus.clone(),
            mps_pipe: None,
            mps_log: None,
        });
    }
    let mut file = JobFile { slurm_job: id, user: user.clone(), uid, holds: Vec::new(), slices };
    match hold_and_start(ctx, &gpus, id, &user, uid, mps_pct, per_gpu, &mut file) {
        Ok(()) => {
            let dir = path.parent().unwrap_or(Path::new("/"));
            public_dir(dir)?;
            write_atomic(&path, &serde_json::to_vec_pretty(&file)?, WriteOptions { mode: 0o644, sync: false })
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(())
        }
        Err(e) => {
            stop_mps(ctx, &gpus, &file);
            release_all(ctx, id, &file.holds);
            let _ = std::fs::remove_dir_all(mps_dir(ctx, id));
            Err(e)
        }
    }
}

/// A directory every user may read and search (the task prolog runs as the job's user).
fn public_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("setting the mode of {}", dir.display()))
}

#[allow(clippy::too_many_arguments)]
fn hold_and_start(
    ctx: &Ctx,
    gpus: &GpuList,
    id: u64,
    user: &str,
    uid: u32,
    mps_pct: Option<u8>,
    per_gpu: BTreeMap<u32, Vec<(PinnedInstance, GpuRequest)>>,
    file: &mut JobFile,
) -> anyhow::Result<()> {
    let sharing = match mps_pct {
        Some(pct) => Sharing::Mps { active_thread_pct: pct.clamp(1, 100), pinned_mem_mib: None },
        None => Sharing::Exclusive,
    };
    for (gpu, items) in per_gpu {
        let (pin, mut wants): (Vec<PinnedInstance>, Vec<GpuRequest>) = items.into_iter().unzip();
        let want = if wants.len() == 1 { wants.remove(0) } else { GpuRequest::Instances(wants) };
        let mut request = JobRequest::new(want);
        request.pin = pin;
        request.sharing = sharing;
        request.tenant.clone_from(&ctx.cfg.tenant);
        request.requeue = false;
        let key = format!("job/{id}/{user}");
        let reply = crate::jobs::ok(ctx.client.submit_work(&WorkRequest { request, door: DOOR.into(), key }))?;
        file.holds.push(reply.id);
        wait_running(ctx, reply.id, gpu)?;
    }
    if let Some(pct) = mps_pct {
        let mps = mps_control(ctx, gpus);
        let who = tessera_host::user_by_uid(uid)
            .context("looking up the job's user")?
            .with_context(|| format!("uid {uid} ({user}) is not a user on this node"))?;
        for s in &mut file.slices {
            let base = mps_dir(ctx, id).join(&s.device);
            let (pipe, log) = (base.join("pipe"), base.join("log"));
            public_dir(&mps_dir(ctx, id))?;
            mps.start(&s.device, &pipe, &log, &RunAs::from(&who)).with_context(|| format!("MPS for {}", s.device))?;
            s.mps_pipe = Some(pipe.clone());
            s.mps_log = Some(log);
            mps.set_default_active_thread_percentage(&pipe, u32::from(pct.clamp(1, 100)))
                .with_context(|| format!("MPS thread percentage for {}", s.device))?;
        }
    }
    Ok(())
}

/// Waits until the daemon holds `hold`'s slices (its next round), or says why not.
fn wait_running(ctx: &Ctx, hold: u64, gpu: u32) -> anyhow::Result<()> {
    let deadline = Instant::now() + HOLD_TIMEOUT;
    loop {
        let job = crate::jobs::ok(ctx.client.job(hold))?;
        if job.state == JobState::Running {
            return Ok(());
        }
        if job.ended() || Instant::now() >= deadline {
            bail!("the daemon did not hold GPU {gpu}'s slices for this job (its job {hold}: {})", job.reason);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stop_mps(ctx: &Ctx, gpus: &GpuList, file: &JobFile) {
    let mps = mps_control(ctx, gpus);
    for s in &file.slices {
        if let Some(pipe) = &s.mps_pipe
            && mps.is_running(pipe)
            && let Err(e) = mps.quit(pipe)
        {
            eprintln!("tessera slurm: stopping MPS for {}: {e}", s.device);
        }
    }
}

fn release_all(ctx: &Ctx, id: u64, holds: &[u64]) {
    for h in holds {
        let req = ReleaseRequest { succeeded: true, code: None, signal: None, detail: format!("Slurm job {id} ended") };
        if let Err(e) = ctx.client.release(*h, &req)
            && ctx.client.job(*h).map(|j| !j.ended()).unwrap_or(true)
        {
            eprintln!("tessera slurm: releasing hold {h} of job {id}: {e}");
        }
    }
}

/// `tessera slurm epilog`.
pub fn epilog(ctx: &Ctx) -> anyhow::Result<()> {
    let id = job_id()?;
    let path = job_file(ctx, id);
    let file = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice::<JobFile>(&b).ok());
    let gpus = crate::jobs::ok(ctx.client.gpus())?;
    if let Some(f) = &file {
        release_all(ctx, id, &f.holds);
    }
    // Holds an interrupted prolog made before it wrote the file.
    let query = JobQuery {
        all: true,
        states: vec![JobState::Queued, JobState::Placing, JobState::Running],
        ..JobQuery::default()
    };
    let prefix = format!("job/{id}/");
    let left: Vec<u64> = crate::jobs::ok(ctx.client.jobs(&query))?
        .jobs
        .into_iter()
        .filter(|j| j.external.as_ref().is_some_and(|x| x.door == DOOR && x.key.starts_with(&prefix)))
        .map(|j| j.id)
        .collect();
    release_all(ctx, id, &left);
    // MPS daemons an interrupted prolog started.
    let dir = mps_dir(ctx, id);
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mps = mps_control(ctx, &gpus);
        for e in entries.flatten() {
            let pipe = e.path().join("pipe");
            if mps.is_running(&pipe) {
                let _ = mps.quit(&pipe);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// `tessera slurm task-prolog`: prints `export NAME=value` lines, which Slurm applies to the task.
pub fn task_prolog(ctx: &Ctx) -> anyhow::Result<()> {
    let id = job_id()?;
    let path = job_file(ctx, id);
    let file: JobFile = match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).with_context(|| format!("reading {}", path.display()))?,
        // A job without GPUs.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    // The step's indices (Slurm sets both; the first is the step's own list).
    let step = env("SLURM_STEP_GPUS").or_else(|| env("CUDA_VISIBLE_DEVICES").filter(|v| !v.starts_with("MIG-")));
    let wanted: Vec<u32> = match step {
        Some(l) => indices(&l)?,
        None => file.slices.iter().map(|s| s.index).collect(),
    };
    let slices: Vec<&JobSlice> = wanted.iter().filter_map(|i| file.slices.iter().find(|s| s.index == *i)).collect();
    if slices.is_empty() {
        return Ok(());
    }
    let devices: Vec<&str> = slices.iter().map(|s| s.device.as_str()).collect();
    println!("export CUDA_VISIBLE_DEVICES={}", devices.join(","));
    if let Some(s) = slices.iter().find(|s| s.mps_pipe.is_some()) {
        if let Some(p) = &s.mps_pipe {
            println!("export CUDA_MPS_PIPE_DIRECTORY={}", p.display());
        }
        if let Some(l) = &s.mps_log {
            println!("export CUDA_MPS_LOG_DIRECTORY={}", l.display());
        }
    }
    let nodes: BTreeSet<u32> = slices.iter().filter_map(|s| s.numa_node).collect();
    if nodes.len() == 1 {
        println!("export TESSERA_NUMA_NODE={}", nodes.iter().next().copied().unwrap_or_default());
    }
    // The task is our parent: bind it to its GPUs' local CPUs within what Slurm allowed.
    let local: BTreeSet<u32> = slices
        .iter()
        .filter_map(|s| s.local_cpus.as_deref())
        .filter_map(|l| tessera_host::parse_cpulist(l).ok())
        .flatten()
        .collect();
    if !local.is_empty() {
        let parent = std::os::unix::process::parent_id();
        match crate::sys::affinity(parent) {
            Ok(allowed) => {
                let bind: BTreeSet<u32> = allowed.intersection(&local).copied().collect();
                if bind.is_empty() {
                    eprintln!(
                        "tessera slurm: job {id}: none of the CPUs Slurm gave this task ({}) is local to its GPU ({}); \
                         left as Slurm bound it (gres.conf Cores= with --gres-flags=enforce-binding avoids this)",
                        tessera_host::format_cpulist(&allowed),
                        tessera_host::format_cpulist(&local)
                    );
                } else if let Err(e) = crate::sys::set_affinity(parent, &bind) {
                    eprintln!(
                        "tessera slurm: job {id}: binding the task to CPUs {}: {e}",
                        tessera_host::format_cpulist(&bind)
                    );
                } else {
                    println!("export TESSERA_CPUS={}", tessera_host::format_cpulist(&bind));
                }
            }
            Err(e) => eprintln!("tessera slurm: job {id}: reading the task's CPUs: {e}"),
        }
    }
    Ok(())
}
