//! What to run: [`JobSpec`] (written by the daemon to `<job_dir>/spec.json`, read by the shim)
//! and [`RankSpec`], plus [`rank_env`], the standard per-rank environment.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::ExecError;

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
            if let Some(node) = rank.mem_node.filter(|&n| n > crate::binding::MAX_NODE) {
                return bad(format!("rank {}: NUMA node {node} is out of range", rank.rank));
            }
        }
        Ok(())
    }

    /// The rank with this number.
    pub fn rank(&self, rank: u32) -> Option<&RankSpec> {
        self.ranks.iter().find(|r| r.rank == rank)
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
/// * `CUDA_VISIBLE_DEVICES` and `NVIDIA_VISIBLE_DEVICES`: the rank's MIG UUIDs, comma-joined
///   (each given the `MIG-` prefix if it lacks it; empty when the rank has no GPU);
/// * `RANK`, `LOCAL_RANK` (= `RANK`: one node), `WORLD_SIZE`;
/// * `TESSERA_JOB_ID`, `TESSERA_RANK`, `TESSERA_WORLD_SIZE`;
/// * for an MPS client, `CUDA_MPS_PIPE_DIRECTORY`, `CUDA_MPS_LOG_DIRECTORY` and, when set,
///   `CUDA_MPS_ACTIVE_THREAD_PERCENTAGE` and `CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`.
pub fn rank_env(
    job_id: u64,
    rank: u32,
    world_size: u32,
    mig_uuids: &[String],
    mps: Option<&MpsClient>,
) -> Vec<(String, String)> {
    let devices = mig_uuids
        .iter()
        .map(|u| if u.starts_with("MIG-") { u.clone() } else { format!("MIG-{u}") })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> JobSpec {
        JobSpec {
            job_id: 7,
            argv: vec!["sh".into(), "-c".into(), "true".into()],
            env: vec![("PATH".into(), "/bin".into())],
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            groups: vec![0],
            ranks: vec![RankSpec { rank: 0, env: vec![], cpus: vec![0], mem_node: Some(0) }],
            time_limit_ms: None,
            kill_grace_ms: 100,
        }
    }

    #[test]
    fn rank_env_standard_set() {
        let env = rank_env(42, 1, 2, &["MIG-aaa".to_owned(), "bbb".to_owned()], None);
        let get = |k: &str| env.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!(get("CUDA_VISIBLE_DEVICES"), Some("MIG-aaa,MIG-bbb"));
        assert_eq!(get("NVIDIA_VISIBLE_DEVICES"), Some("MIG-aaa,MIG-bbb"));
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
        let s = spec();
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<JobSpec>(&text).unwrap(), s);
    }
}
