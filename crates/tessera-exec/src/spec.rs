//! What to run and how to stop it: [`JobSpec`] (written by the daemon to `<job_dir>/spec.json`,
//! read by the shim), [`RankSpec`], the cgroup [`Isolation`] a job asks for, the
//! [`StopRequest`] the daemon leaves in `stop.json`, plus [`rank_env`], the standard per-rank
//! environment. Every field added after the first release has a serde default, so a spec
//! written by an older daemon still reads.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::ExecError;

/// The largest NUMA node id accepted in a spec.
pub const MAX_NODE: u32 = 4095;

/// One rank (one process tree) of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RankSpec {
    /// 0-based, unique within the job. Rank 0 logs to `stdout.log`, others to
    /// `rank-N.stdout.log`.
    pub rank: u32,
    /// This rank's environment (see [`rank_env`]); applied after the user's and wins over it.
    pub env: Vec<(String, String)>,
    /// Host CPUs to bind to (`sched_setaffinity`); empty means "inherit the shim's".
    #[serde(default)]
    pub cpus: Vec<u32>,
    /// Host NUMA node to bind memory to (`set_mempolicy(MPOL_BIND)`); `None` means no binding.
    #[serde(default)]
    pub mem_node: Option<u32>,
}

/// What to run for one job. Serialised to `<job_dir>/spec.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub job_id: u64,
    /// Program and arguments; `argv[0]` is looked up in the user's `PATH` (or `/bin:/usr/bin`).
    pub argv: Vec<String>,
    /// The user's environment. The shim does not pass its own (the daemon's) environment on.
    pub env: Vec<(String, String)>,
    /// Working directory, absolute; entered after switching to the user.
    pub cwd: PathBuf,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, primary first (the user's groups as NSS gives them); empty means
    /// just `gid`.
    #[serde(default)]
    pub groups: Vec<u32>,
    pub ranks: Vec<RankSpec>,
    /// Wall-clock limit from the start of the ranks; `None` means no limit.
    #[serde(default)]
    pub time_limit_ms: Option<u64>,
    /// How long to wait between SIGTERM and SIGKILL when stopping ranks.
    pub kill_grace_ms: u64,
    /// The attempt number, 1-based (a requeued job runs again in a fresh job directory,
    /// `<state>/jobs/<id>/run-<n>`); for messages. Absent in old specs: 1.
    #[serde(default = "first_run")]
    pub run: u32,
    /// Where the ranks' logs go (`stdout.log`, `rank-N.stderr.log`, …), absolute; `None` means
    /// the job directory. Several runs of a job share it: logs are appended to.
    #[serde(default)]
    pub output_dir: Option<PathBuf>,
    /// The most bytes of output (all ranks, both streams) this run may write; the rest is read
    /// and discarded. `None` means no limit.
    #[serde(default)]
    pub output_limit_bytes: Option<u64>,
    /// cgroup isolation (memory limit, cpuset, device access); `None` means none.
    #[serde(default)]
    pub isolation: Option<Isolation>,
}

fn first_run() -> u32 {
    1
}

/// The cgroup a job's ranks run in (see [`crate::cgroup`]): `<mount>/<parent>/<name>` in each
/// hierarchy used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Isolation {
    /// The parent cgroup, one path component (e.g. `tessera`); created when missing.
    pub parent: String,
    /// This run's cgroup, one path component (e.g. `job-42-run-1`).
    pub name: String,
    /// Memory limit (swap included where the kernel accounts it); `None` means none.
    #[serde(default)]
    pub memory_limit_bytes: Option<u64>,
    /// cpuset CPUs; empty means "not restricted".
    #[serde(default)]
    pub cpus: Vec<u32>,
    /// cpuset memory nodes; empty means "not restricted".
    #[serde(default)]
    pub mems: Vec<u32>,
    /// Device access; `None` leaves devices alone.
    #[serde(default)]
    pub devices: Option<DeviceAccess>,
    /// When a part cannot be applied (not root, no cgroup file system, a controller missing):
    /// `true` fails the job before any rank starts, `false` runs it without that part and
    /// says so in the outcome's notes.
    #[serde(default)]
    pub required: bool,
}

/// Which character devices a job may open: a device whose major number is guarded may be opened
/// only if it is listed in `allow`; every other device stays allowed (`/dev/null`, ttys,
/// InfiniBand, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceAccess {
    /// Character-device majors under guard (see [`crate::nvidia_majors`]).
    pub guarded_majors: Vec<u32>,
    /// Guarded device nodes this job may open (see [`crate::device_number`]).
    pub allow: Vec<DeviceNumber>,
}

/// A device number, as `stat`'s `st_rdev` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeviceNumber {
    pub major: u32,
    pub minor: u32,
}

/// The largest major number Linux has (12 bits).
pub const MAX_MAJOR: u32 = (1 << 12) - 1;
/// The largest minor number Linux has (20 bits).
pub const MAX_MINOR: u32 = (1 << 20) - 1;

/// Why the daemon stops a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// A user or admin cancelled it: the job ends `cancelled`.
    Cancel,
    /// The scheduler needs its resources: the job ends `preempted` (and may be requeued).
    Preempt,
    /// Its GPU or instance became unhealthy: the job ends `cancelled`.
    Health,
}

/// `stop.json`: how the shim is to stop the job (see [`crate::stop`]). The shim sends `signal`
/// to every rank's process group, waits `grace_ms`, then sends `SIGKILL`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopRequest {
    pub reason: StopReason,
    /// The first signal to the ranks (e.g. `SIGTERM`, or `SIGUSR1` for a checkpointing job).
    pub signal: i32,
    pub grace_ms: u64,
    /// One human sentence for the outcome (may be empty).
    #[serde(default)]
    pub detail: String,
}

/// The largest signal number Linux has (`SIGRTMAX`).
pub const MAX_SIGNAL: i32 = 64;

impl StopRequest {
    /// What is wrong with it, if anything: a signal the kernel does not have.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=MAX_SIGNAL).contains(&self.signal) {
            return Err(format!("signal {} is not a signal number (1-{MAX_SIGNAL})", self.signal));
        }
        Ok(())
    }
}

impl JobSpec {
    /// Checks everything that would otherwise fail half-way through a launch.
    pub fn validate(&self) -> Result<(), ExecError> {
        let bad = |reason: String| Err(ExecError::InvalidSpec { job_id: self.job_id, reason });
        if self.argv.is_empty() || self.argv[0].is_empty() {
            return bad("argv is empty".to_owned());
        }
        if let Some(arg) = self.argv.iter().find(|a| a.contains('\0')) {
            return bad(format!("argument {arg:?} contains a NUL byte"));
        }
        if !self.cwd.is_absolute() {
            return bad(format!("cwd {} is not absolute", self.cwd.display()));
        }
        if self.cwd.as_os_str().as_encoded_bytes().contains(&0) {
            return bad("cwd contains a NUL byte".to_owned());
        }
        check_env(&self.env).or_else(|reason| bad(format!("environment: {reason}")))?;
        if self.ranks.is_empty() {
            return bad("the job has no ranks".to_owned());
        }
        let mut seen = BTreeSet::new();
        for rank in &self.ranks {
            if !seen.insert(rank.rank) {
                return bad(format!("rank {} appears twice", rank.rank));
            }
            check_env(&rank.env).or_else(|reason| bad(format!("rank {} environment: {reason}", rank.rank)))?;
            if let Some(cpu) = rank.cpus.iter().find(|&&c| c > tessera_host::MAX_ID) {
                return bad(format!("rank {}: CPU {cpu} is out of range", rank.rank));
            }
            if let Some(node) = rank.mem_node.filter(|&n| n > MAX_NODE) {
                return bad(format!("rank {}: NUMA node {node} is out of range", rank.rank));
            }
        }
        if let Some(dir) = &self.output_dir {
            if !dir.is_absolute() {
                return bad(format!("output_dir {} is not absolute", dir.display()));
            }
            if dir.as_os_str().as_encoded_bytes().contains(&0) {
                return bad("output_dir contains a NUL byte".to_owned());
            }
        }
        if let Some(iso) = &self.isolation {
            iso.check().or_else(|reason| bad(format!("isolation: {reason}")))?;
        }
        Ok(())
    }

    /// The directory the ranks' logs are in: `output_dir`, or the job directory.
    pub fn log_dir(&self, job_dir: &Path) -> PathBuf {
        self.output_dir.clone().unwrap_or_else(|| job_dir.to_path_buf())
    }

    /// The rank with this number.
    pub fn rank(&self, rank: u32) -> Option<&RankSpec> {
        self.ranks.iter().find(|r| r.rank == rank)
    }
}

impl Isolation {
    /// Names that are one plain path component, ids in range.
    pub fn check(&self) -> Result<(), String> {
        for (what, name) in [("parent", &self.parent), ("name", &self.name)] {
            let plain = name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'));
            if name.is_empty() || name == "." || name == ".." || !plain {
                return Err(format!("cgroup {what} {name:?} is not one plain path component ([A-Za-z0-9._@-]+)"));
            }
        }
        if self.memory_limit_bytes == Some(0) {
            return Err("a memory limit of 0 bytes".to_owned());
        }
        if let Some(cpu) = self.cpus.iter().find(|&&c| c > tessera_host::MAX_ID) {
            return Err(format!("CPU {cpu} is out of range"));
        }
        if let Some(node) = self.mems.iter().find(|&&n| n > MAX_NODE) {
            return Err(format!("NUMA node {node} is out of range"));
        }
        if let Some(devices) = &self.devices {
            if let Some(m) = devices.guarded_majors.iter().find(|&&m| m > MAX_MAJOR) {
                return Err(format!("device major {m} is out of range (0-{MAX_MAJOR})"));
            }
            if let Some(d) = devices.allow.iter().find(|d| d.major > MAX_MAJOR || d.minor > MAX_MINOR) {
                return Err(format!("device {}:{} is out of range", d.major, d.minor));
            }
        }
        Ok(())
    }
}

fn check_env(env: &[(String, String)]) -> Result<(), String> {
    for (key, value) in env {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(format!("invalid variable name {key:?}"));
        }
        if value.contains('\0') {
            return Err(format!("{key} contains a NUL byte"));
        }
    }
    Ok(())
}

/// The MPS side of a rank's environment: the rank is a client of the control daemon whose pipe
/// directory is `pipe_dir` (see [`crate::mps`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MpsClient {
    /// `CUDA_MPS_PIPE_DIRECTORY`; must match the control daemon's.
    pub pipe_dir: PathBuf,
    /// `CUDA_MPS_LOG_DIRECTORY`; must match the control daemon's.
    pub log_dir: PathBuf,
    /// `CUDA_MPS_ACTIVE_THREAD_PERCENTAGE` (client side, can only tighten the daemon's default).
    pub active_thread_percentage: Option<u32>,
    /// `CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`, in MiB, applied to every device the rank sees
    /// (`0=<n>M,1=<n>M,…`; device indices as the client sees them under `CUDA_VISIBLE_DEVICES`).
    pub pinned_device_mem_limit_mib: Option<u64>,
}

/// The standard environment of one rank:
///
/// * `CUDA_VISIBLE_DEVICES` and `NVIDIA_VISIBLE_DEVICES`: the rank's devices, comma-joined: MIG
///   device UUIDs (`MIG-…`; a bare UUID is given the `MIG-` prefix) and, for GPUs with MIG off,
///   GPU UUIDs (`GPU-…`, as given); empty when the rank has no GPU;
/// * `RANK`, `LOCAL_RANK` (= `RANK`: one node), `WORLD_SIZE`;
/// * `TESSERA_JOB_ID`, `TESSERA_RANK`, `TESSERA_WORLD_SIZE`;
/// * for an MPS client, `CUDA_MPS_PIPE_DIRECTORY`, `CUDA_MPS_LOG_DIRECTORY` and, when set,
///   `CUDA_MPS_ACTIVE_THREAD_PERCENTAGE` and `CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`.
pub fn rank_env(
    job_id: u64,
    rank: u32,
    world_size: u32,
    devices: &[String],
    mps: Option<&MpsClient>,
) -> Vec<(String, String)> {
    let mig_uuids = devices;
    let devices = devices
        .iter()
        .map(|u| if u.starts_with("MIG-") || u.starts_with("GPU-") { u.clone() } else { format!("MIG-{u}") })
        .collect::<Vec<_>>()
        .join(",");
    let mut env = vec![
        ("CUDA_VISIBLE_DEVICES".to_owned(), devices.clone()),
        ("NVIDIA_VISIBLE_DEVICES".to_owned(), devices),
        ("RANK".to_owned(), rank.to_string()),
        ("LOCAL_RANK".to_owned(), rank.to_string()),
        ("WORLD_SIZE".to_owned(), world_size.to_string()),
        ("TESSERA_JOB_ID".to_owned(), job_id.to_string()),
        ("TESSERA_RANK".to_owned(), rank.to_string()),
        ("TESSERA_WORLD_SIZE".to_owned(), world_size.to_string()),
    ];
    if let Some(mps) = mps {
        env.push(("CUDA_MPS_PIPE_DIRECTORY".to_owned(), mps.pipe_dir.display().to_string()));
        env.push(("CUDA_MPS_LOG_DIRECTORY".to_owned(), mps.log_dir.display().to_string()));
        if let Some(pct) = mps.active_thread_percentage {
            env.push(("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE".to_owned(), pct.to_string()));
        }
        if let Some(mib) = mps.pinned_device_mem_limit_mib {
            let count = mig_uuids.len().max(1);
            let limit = (0..count).map(|i| format!("{i}={mib}M")).collect::<Vec<_>>().join(",");
            env.push(("CUDA_MPS_PINNED_DEVICE_MEM_LIMIT".to_owned(), limit));
        }
    }
    env
}

/// A small spec for this crate's tests: `sh -c true` as root, `ranks` ranks on CPU 0 and memory
/// node 0.
#[cfg(test)]
pub(crate) fn sample_spec(ranks: u32) -> JobSpec {
    JobSpec {
        job_id: 7,
        argv: vec!["sh".into(), "-c".into(), "true".into()],
        env: vec![("PATH".into(), "/bin".into())],
        cwd: "/".into(),
        uid: 0,
        gid: 0,
        groups: vec![0],
        ranks: (0..ranks).map(|rank| RankSpec { rank, env: vec![], cpus: vec![0], mem_node: Some(0) }).collect(),
        time_limit_ms: None,
        kill_grace_ms: 100,
        run: 1,
        output_dir: None,
        output_limit_bytes: None,
        isolation: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> JobSpec {
        sample_spec(1)
    }

    fn isolation() -> Isolation {
        Isolation {
            parent: "tessera".into(),
            name: "job-7-run-1".into(),
            memory_limit_bytes: Some(1 << 20),
            cpus: vec![0],
            mems: vec![0],
            devices: Some(DeviceAccess {
                guarded_majors: vec![195],
                allow: vec![DeviceNumber { major: 195, minor: 0 }],
            }),
            required: true,
        }
    }

    #[test]
    fn rank_env_standard_set() {
        let env = rank_env(42, 1, 2, &["MIG-aaa".to_owned(), "bbb".to_owned(), "GPU-ccc".to_owned()], None);
        let get = |k: &str| env.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!(get("CUDA_VISIBLE_DEVICES"), Some("MIG-aaa,MIG-bbb,GPU-ccc"));
        assert_eq!(get("NVIDIA_VISIBLE_DEVICES"), Some("MIG-aaa,MIG-bbb,GPU-ccc"));
        assert_eq!(get("RANK"), Some("1"));
        assert_eq!(get("LOCAL_RANK"), Some("1"));
        assert_eq!(get("WORLD_SIZE"), Some("2"));
        assert_eq!(get("TESSERA_JOB_ID"), Some("42"));
        assert_eq!(get("TESSERA_RANK"), Some("1"));
        assert_eq!(get("TESSERA_WORLD_SIZE"), Some("2"));
        assert_eq!(get("CUDA_MPS_PIPE_DIRECTORY"), None);
    }

    #[test]
    fn rank_env_mps_client() {
        let mps = MpsClient {
            pipe_dir: "/run/tessera/mps/x/pipe".into(),
            log_dir: "/run/tessera/mps/x/log".into(),
            active_thread_percentage: Some(50),
            pinned_device_mem_limit_mib: Some(8192),
        };
        let env = rank_env(1, 0, 1, &["MIG-u".to_owned()], Some(&mps));
        let get = |k: &str| env.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!(get("CUDA_MPS_PIPE_DIRECTORY"), Some("/run/tessera/mps/x/pipe"));
        assert_eq!(get("CUDA_MPS_LOG_DIRECTORY"), Some("/run/tessera/mps/x/log"));
        assert_eq!(get("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"), Some("50"));
        assert_eq!(get("CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"), Some("0=8192M"));
        let bare = MpsClient { active_thread_percentage: None, pinned_device_mem_limit_mib: None, ..mps };
        let env = rank_env(1, 0, 1, &[], Some(&bare));
        assert!(env.iter().all(|(k, _)| k != "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"));
        assert!(env.iter().all(|(k, _)| k != "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"));
    }

    #[test]
    fn validate_catches_bad_specs() {
        assert!(spec().validate().is_ok());
        type Edit = Box<dyn Fn(&mut JobSpec)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("argv is empty", Box::new(|s| s.argv.clear())),
            ("NUL", Box::new(|s| s.argv.push("a\0b".into()))),
            ("not absolute", Box::new(|s| s.cwd = "rel".into())),
            ("no ranks", Box::new(|s| s.ranks.clear())),
            ("appears twice", Box::new(|s| s.ranks.push(s.ranks[0].clone()))),
            ("invalid variable name", Box::new(|s| s.env.push(("A=B".into(), "x".into())))),
            ("rank 0 environment", Box::new(|s| s.ranks[0].env.push((String::new(), "x".into())))),
            ("out of range", Box::new(|s| s.ranks[0].cpus.push(1 << 20))),
            ("NUMA node", Box::new(|s| s.ranks[0].mem_node = Some(1 << 20))),
            ("output_dir rel is not absolute", Box::new(|s| s.output_dir = Some("rel".into()))),
            (
                "cgroup parent \"..\"",
                Box::new(|s| s.isolation = Some(Isolation { parent: "..".into(), ..isolation() })),
            ),
            ("cgroup name \"a/b\"", Box::new(|s| s.isolation = Some(Isolation { name: "a/b".into(), ..isolation() }))),
            ("cgroup name \"\"", Box::new(|s| s.isolation = Some(Isolation { name: String::new(), ..isolation() }))),
            ("0 bytes", Box::new(|s| s.isolation = Some(Isolation { memory_limit_bytes: Some(0), ..isolation() }))),
            (
                "major 4096 is out of range",
                Box::new(|s| {
                    let devices = Some(DeviceAccess { guarded_majors: vec![4096], allow: vec![] });
                    s.isolation = Some(Isolation { devices, ..isolation() });
                }),
            ),
            (
                "device 195:1048576 is out of range",
                Box::new(|s| {
                    let allow = vec![DeviceNumber { major: 195, minor: 1 << 20 }];
                    let devices = Some(DeviceAccess { guarded_majors: vec![195], allow });
                    s.isolation = Some(Isolation { devices, ..isolation() });
                }),
            ),
        ];
        for (needle, edit) in cases {
            let mut s = spec();
            edit(&mut s);
            let err = s.validate().unwrap_err().to_string();
            assert!(err.contains(needle) && err.contains("job 7"), "{needle}: {err}");
        }
    }

    #[test]
    fn spec_json_round_trip() {
        let s = JobSpec { output_dir: Some("/out".into()), isolation: Some(isolation()), run: 3, ..spec() };
        assert!(s.validate().is_ok());
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<JobSpec>(&text).unwrap(), s);
    }

    /// A spec written before `run`, `output_dir`, `output_limit_bytes` and `isolation` existed.
    #[test]
    fn old_specs_still_read() {
        let mut v = serde_json::to_value(spec()).unwrap();
        for key in ["run", "output_dir", "output_limit_bytes", "isolation"] {
            v.as_object_mut().unwrap().remove(key);
        }
        let s: JobSpec = serde_json::from_value(v).unwrap();
        assert_eq!(s, spec());
        assert_eq!(s.log_dir(Path::new("/j")), Path::new("/j"));
        let s = JobSpec { output_dir: Some("/out".into()), ..s };
        assert_eq!(s.log_dir(Path::new("/j")), Path::new("/out"));
    }

    #[test]
    fn stop_requests_serialise_snake_case_and_check_the_signal() {
        let r = StopRequest { reason: StopReason::Preempt, signal: libc::SIGUSR1, grace_ms: 5, detail: "x".into() };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v, serde_json::json!({"reason": "preempt", "signal": 10, "grace_ms": 5, "detail": "x"}));
        assert!(r.check().is_ok());
        for bad in [0, -1, 65] {
            assert!(StopRequest { signal: bad, ..r.clone() }.check().is_err(), "{bad}");
        }
        let health: StopRequest = serde_json::from_str(r#"{"reason":"health","signal":15,"grace_ms":1}"#).unwrap();
        assert_eq!((health.reason, health.detail.as_str()), (StopReason::Health, ""));
    }
}
