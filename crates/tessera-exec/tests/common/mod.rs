//! Helpers shared by the end-to-end test binaries: job specs for `sh -c` scripts, waiting for
//! a job to finish, reading the job directory.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tessera_exec::{JobSpec, Outcome, RankSpec, ShimState, inspect, rank_env};
use tessera_host::{effective_gid, effective_uid, parse_cpulist};

pub const SHIM: &str = env!("CARGO_BIN_EXE_tessera-exec-shim");

pub fn rank(job_id: u64, n: u32, world: u32, cpus: Vec<u32>, mem_node: Option<u32>) -> RankSpec {
    RankSpec { rank: n, env: rank_env(job_id, n, world, &[format!("MIG-test-{job_id}-{n}")], None), cpus, mem_node }
}

pub fn spec(job_id: u64, script: &str, ranks: Vec<RankSpec>) -> JobSpec {
    JobSpec {
        job_id,
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        env: vec![("PATH".into(), "/usr/bin:/bin".into()), ("USER_VAR".into(), "hello world".into())],
        cwd: "/".into(),
        uid: effective_uid(),
        gid: effective_gid(),
        groups: Vec::new(),
        ranks,
        time_limit_ms: None,
        kill_grace_ms: 500,
        run: 1,
        output_dir: None,
        output_limit_bytes: None,
        isolation: None,
    }
}

pub fn one_rank(job_id: u64, script: &str) -> JobSpec {
    spec(job_id, script, vec![rank(job_id, 0, 1, vec![], None)])
}

pub fn wait_finished(dir: &Path, job_id: u64, timeout: Duration) -> Outcome {
    let deadline = Instant::now() + timeout;
    loop {
        let state = inspect(dir, job_id).unwrap();
        match state {
            ShimState::Finished(outcome) => return outcome,
            other if Instant::now() > deadline => {
                panic!("job {job_id} not finished after {timeout:?}: {other:?}; shim.log: {}", read(dir, "shim.log"))
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn read(dir: &Path, name: &str) -> String {
    fs::read_to_string(dir.join(name)).unwrap_or_default()
}

/// How many ranks `ranks.json` lists as started.
pub fn started_ranks(dir: &Path) -> usize {
    let text = read(dir, "ranks.json");
    serde_json::from_str::<serde_json::Value>(&text).ok().and_then(|v| v["ranks"].as_array().map(Vec::len)).unwrap_or(0)
}

pub fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.strip_prefix(key)).map(str::trim)
}

pub fn own_set(key: &str) -> BTreeSet<u32> {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    field(&status, key).map(|v| parse_cpulist(v.trim_start_matches(':')).unwrap()).unwrap_or_default()
}

pub fn job_dir(tmp: &tempfile::TempDir, name: &str) -> PathBuf {
    tmp.path().join(name)
}

/// A job directory with `spec.json` and nothing else: as the daemon leaves it when it dies
/// right after writing the spec, before any shim claimed the job.
pub fn prepare_job_dir(dir: &Path, spec: &JobSpec) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("spec.json"), serde_json::to_vec_pretty(spec).unwrap()).unwrap();
}

/// Whether `pid` is gone (or a zombie nobody reaped yet).
pub fn gone(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z "))
}

/// An executable shell script at `path`.
pub fn script(path: &Path, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, body).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
    path.to_path_buf()
}
