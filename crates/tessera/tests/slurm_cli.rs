//! `tessera slurm`'s job programs as Slurm runs them, without a Slurm or a daemon: the names
//! `Prolog=`/`TaskProlog=` start the binary under, what the task prolog prints from the
//! prolog's job file, and the errors a misconfigured node gets. (Everything with a real Slurm is
//! `scripts/slurm-test.sh`.)

use std::path::Path;
use std::process::{Command, Output};

fn config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("tessera.toml");
    let text = format!(
        "[slurm]\nnode_name = \"gpu01\"\nstate_dir = \"{d}/lib\"\nruntime_dir = \"{d}/run\"\n",
        d = dir.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// The binary with only the environment given (Slurm gives its programs a small one).
fn run(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args).env_clear().env("PATH", "/usr/bin:/bin");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn slurm_runs_the_job_programs_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("tessera-slurm-task-prolog");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_tessera"), &link).unwrap();
    // Started as Slurm starts it, with no arguments: the task prolog, which needs the job's id.
    let out = run(&link, &[], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("SLURM_JOB_ID is not set"), "{}", text(&out.stderr));
}

#[test]
fn the_task_prolog_prints_the_steps_mig_uuids_and_mps_directories() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    std::fs::create_dir_all(dir.path().join("run/jobs")).unwrap();
    // What the prolog wrote for job 7: three slices, the last two shared through MPS.
    let job = serde_json::json!({
        "slurm_job": 7, "user": "alice", "uid": 1000, "holds": [3, 4],
        "slices": [
            {"index": 0, "gpu": 0, "profile": "1g.10gb", "device": "MIG-aaa", "numa_node": 0,
             "local_cpus": null, "mps_pipe": null, "mps_log": null},
            {"index": 2, "gpu": 1, "profile": "1g.10gb", "device": "MIG-bbb", "numa_node": 1,
             "local_cpus": null, "mps_pipe": "/run/t/mps/7/MIG-bbb/pipe", "mps_log": "/run/t/mps/7/MIG-bbb/log"},
            {"index": 3, "gpu": 1, "profile": "2g.20gb", "device": "MIG-ccc", "numa_node": 1,
             "local_cpus": null, "mps_pipe": null, "mps_log": null}
        ]
    });
    std::fs::write(dir.path().join("run/jobs/7.json"), job.to_string()).unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_tessera"));
    let cfg_arg = cfg.to_str().unwrap();
    // A step given indices 2 and 3 (Slurm's SLURM_STEP_GPUS) sees those slices, in that order.
    let out =
        run(bin, &["slurm", "task-prolog", "--config", cfg_arg], &[("SLURM_JOB_ID", "7"), ("SLURM_STEP_GPUS", "2-3")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "export CUDA_VISIBLE_DEVICES=MIG-bbb,MIG-ccc\n\
         export CUDA_MPS_PIPE_DIRECTORY=/run/t/mps/7/MIG-bbb/pipe\n\
         export CUDA_MPS_LOG_DIRECTORY=/run/t/mps/7/MIG-bbb/log\n\
         export TESSERA_NUMA_NODE=1\n"
    );
    // Without a step list, every slice of the job; on two NUMA nodes, no single node to name.
    let out = run(bin, &["slurm", "task-prolog", "--config", cfg_arg], &[("SLURM_JOB_ID", "7")]);
    assert!(text(&out.stdout).starts_with("export CUDA_VISIBLE_DEVICES=MIG-aaa,MIG-bbb,MIG-ccc\n"));
    assert!(!text(&out.stdout).contains("TESSERA_NUMA_NODE"));
    // A job without GPUs (no file): nothing to export, and no error.
    let out = run(bin, &["slurm", "task-prolog", "--config", cfg_arg], &[("SLURM_JOB_ID", "8")]);
    assert!(out.status.success() && out.stdout.is_empty(), "{}", text(&out.stderr));
}

#[test]
fn a_node_never_synced_is_told_what_to_run() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let bin = Path::new(env!("CARGO_BIN_EXE_tessera"));
    let env = [("SLURM_JOB_ID", "9"), ("SLURM_JOB_GPUS", "0"), ("SLURM_JOB_USER", "alice"), ("SLURM_JOB_UID", "1000")];
    let out = run(bin, &["slurm", "prolog", "--config", cfg.to_str().unwrap()], &env);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("no GRES index map at") && err.contains("run `tessera slurm sync`"), "{err}");
    // A job with no GPUs on the node needs nothing, synced or not.
    let out = run(bin, &["slurm", "prolog", "--config", cfg.to_str().unwrap()], &env[..1]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn a_mistake_in_the_slurm_section_names_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tessera.toml");
    std::fs::write(&path, "[slurm]\nfiles = \"many\"\n").unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_tessera"));
    let out = run(bin, &["slurm", "task-prolog", "--config", path.to_str().unwrap()], &[("SLURM_JOB_ID", "1")]);
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(err.contains("tessera.toml:2:9") && err.contains("slurm.files = 'many'"), "{err}");
}
