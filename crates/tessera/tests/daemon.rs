//! The daemon end to end: the real `tessera serve` on a simulated node, real job processes,
//! the real CLI. Each test has its own state directory and socket.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{Daemon, read};

#[test]
fn a_job_runs_on_its_own_slice_with_the_right_environment_and_binding() {
    let d = Daemon::start("1xA100-40GB,numa=1");
    let out = d.dir.path().join("seen.txt");
    let script = format!(
        "env > {o}.env; grep -E 'Cpus_allowed_list|Mems_allowed_list' /proc/self/status > {o}.status; cat /proc/self/numa_maps | head -1 > {o}.numa",
        o = out.display()
    );
    // The GPU starts empty: the scheduler creates the slice.
    let id = d.submit(&["--profile", "3g.20gb", "--cpus", "1", "--", "sh", "-c", &script]);
    let j = d.wait(id);
    assert_eq!(j["state"], "succeeded", "{j}");
    let env = read(&PathBuf::from(format!("{}.env", out.display())));
    let mig = env.lines().find_map(|l| l.strip_prefix("CUDA_VISIBLE_DEVICES=")).unwrap_or_else(|| panic!("{env}"));
    assert!(mig.starts_with("MIG-"), "{mig}");
    assert!(env.contains(&format!("NVIDIA_VISIBLE_DEVICES={mig}")), "{env}");
    for v in ["RANK=0", "WORLD_SIZE=1", "LOCAL_RANK=0", &format!("TESSERA_JOB_ID={id}")] {
        assert!(env.lines().any(|l| l == v), "{v} missing:\n{env}");
    }
    let status = read(&PathBuf::from(format!("{}.status", out.display())));
    assert!(status.contains("Cpus_allowed_list"), "{status}");
    let full = d.job(id);
    assert_eq!(full["ranks"][0]["slices"][0]["profile"], "3g.20gb");
    assert_eq!(full["ranks"][0]["slices"][0]["mig_uuid"], mig);
    assert_eq!(full["ranks"][0]["devices"][0], mig);
    assert!(full["ranks"][0]["cpus"].is_string(), "the rank's CPU binding is shown: {full}");
    let states: Vec<&str> = full["events"].as_array().unwrap().iter().map(|e| e["to"].as_str().unwrap()).collect();
    assert_eq!(states, ["placing", "running", "succeeded"]);
    // Logs, and another user's job is not theirs.
    let id = d.submit(&["--compute-slices", "1", "--", "echo", "hello from tessera"]);
    d.wait(id);
    assert_eq!(d.ok(&["logs", &id.to_string()]), "hello from tessera\n");
    let other = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_tessera"))
        .arg("--socket")
        .arg(d.socket())
        .args(["job", &id.to_string()])
        .output();
    if let Ok(o) = other
        && tessera_host::effective_uid() == 0
    {
        assert_eq!(o.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&o.stderr).contains("belongs to another user"), "{o:?}");
    }
}

#[test]
fn ranks_gang_up_cancel_and_time_limits_work() {
    let d = Daemon::start("1xH100-80GB,numa=1");
    let id = d.submit(&[
        "--profile",
        "2g.20gb",
        "--ranks",
        "2",
        "--gpu-numa-local",
        "--",
        "sh",
        "-c",
        "echo rank $RANK of $WORLD_SIZE on $CUDA_VISIBLE_DEVICES",
    ]);
    let j = d.wait(id);
    assert_eq!(j["state"], "succeeded", "{j}");
    let full = d.job(id);
    let ranks = full["ranks"].as_array().unwrap();
    assert_eq!(ranks.len(), 2);
    let rank_ids: Vec<u64> = ranks.iter().map(|r| r["rank"].as_u64().unwrap()).collect();
    assert_eq!(rank_ids, [0, 1]);
    assert_ne!(ranks[0]["devices"], ranks[1]["devices"]);
    let starts: Vec<u64> = ranks.iter().map(|r| r["slices"][0]["start"].as_u64().unwrap()).collect();
    assert!(starts.iter().any(|s| *s < 4) && starts.iter().any(|s| *s >= 4), "one rank per GPU NUMA node: {starts:?}");
    assert_eq!(
        d.ok(&["logs", &id.to_string(), "--rank", "1"]).split_whitespace().take(4).collect::<Vec<_>>(),
        ["rank", "1", "of", "2"]
    );

    // More whole GPUs than the node has: refused at once.
    let (code, _, err) = d.cli(&["submit", "--gpus", "2", "--", "true"]);
    assert_eq!(code, 1);
    assert!(err.contains("2 GPUs of 7g.80gb at once") && err.contains("HTTP 422"), "{err}");
    let long = d.submit(&["--compute-slices", "1", "--", "sleep", "30"]);
    let t0 = Instant::now();
    while d.job(long)["state"] != "running" && t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    d.ok(&["cancel", &long.to_string()]);
    assert_eq!(d.wait(long)["state"], "cancelled");

    let limited = d.submit(&["--compute-slices", "1", "--time-limit", "1s", "--", "sleep", "30"]);
    let j = d.wait(limited);
    assert_eq!(j["state"], "timed_out", "{j}");

    let failing = d.submit(&["--compute-slices", "1", "--", "sh", "-c", "exit 3"]);
    let j = d.wait(failing);
    assert_eq!((j["state"].as_str(), j["exit"]["code"].as_i64()), (Some("failed"), Some(3)), "{j}");

    // Impossible and malformed requests are refused with the reason; the daemon stays up.
    let (code, _, err) = d.cli(&["submit", "--gpu-mem", "500GiB", "--", "true"]);
    assert_eq!(code, 1);
    assert!(err.contains("no GPU on this node can run it"), "{err}");
    // More host memory than the node has: refused at once, naming the limit.
    let (code, _, err) = d.cli(&["submit", "--compute-slices", "1", "--mem", "64TiB", "--", "true"]);
    assert_eq!(code, 1);
    assert!(err.contains("--mem: ") && err.contains("65536 GiB") && err.contains("HTTP 422"), "{err}");
    let (code, _, err) = d.cli(&["job", "999999"]);
    assert_eq!(code, 1);
    assert!(err.contains("no job 999999"), "{err}");
    d.ok(&["jobs"]);
}

/// Every job succeeded, and each left exactly one "run" line in its own file under `marks`.
fn every_job_succeeded_once(d: &Daemon, ids: &[u64], marks: &Path) {
    for id in ids {
        let j = d.wait(*id);
        assert_eq!(j["state"], "succeeded", "job {id}: {j}");
    }
    for e in std::fs::read_dir(marks).unwrap() {
        let p = e.unwrap().path();
        assert_eq!(read(&p), "run\n", "{} ran more than once", p.display());
    }
    assert_eq!(std::fs::read_dir(marks).unwrap().count(), ids.len());
}

/// Admins change MIG layouts through the daemon: plans keep matching instances, never touch a
/// busy one (the refusal names it), a dry run changes nothing, and bad input gets a clear error.
#[test]
fn admins_change_layouts_and_busy_instances_stay() {
    let d = Daemon::start("1xA100-40GB,numa=1");
    let layout = |d: &Daemon| -> Vec<String> {
        let v: Value = serde_json::from_str(&d.ok(&["-o", "json", "gpus"])).unwrap();
        v["gpus"][0]["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["profile"].as_str().unwrap().to_string())
            .collect()
    };
    let out = d.ok(&["admin", "layout", "0", "3g.20gb,2g.10gb,2g.10gb"]);
    assert!(out.contains("did create 3g.20gb"), "{out}");
    let mut now = layout(&d);
    now.sort();
    assert_eq!(now, ["2g.10gb", "2g.10gb", "3g.20gb"]);

    let long = d.submit(&["--profile", "3g.20gb", "--", "sleep", "30"]);
    let t0 = Instant::now();
    while d.job(long)["state"] != "running" && t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    // The whole GPU would need the busy 3g.20gb: refused, naming it; nothing changes.
    let (code, _, err) = d.cli(&["admin", "layout", "0", "7g.40gb"]);
    assert_eq!(code, 1);
    assert!(err.contains("busy") && err.contains("3g.20gb"), "{err}");
    assert_eq!(layout(&d).len(), 3);
    // A dry run says what would happen and does nothing.
    let out = d.ok(&["admin", "layout", "0", "3g.20gb,1g.5gb,1g.5gb,1g.5gb", "--dry-run"]);
    assert!(out.contains("would destroy 2g.10gb") && out.contains("would create 1g.5gb"), "{out}");
    assert_eq!(layout(&d).len(), 3);
    // Reshaping only the idle part keeps the busy instance and its job.
    d.ok(&["admin", "layout", "0", "3g.20gb,1g.5gb,1g.5gb,1g.5gb"]);
    let mut now = layout(&d);
    now.sort();
    assert_eq!(now, ["1g.5gb", "1g.5gb", "1g.5gb", "3g.20gb"]);
    let j = d.job(long);
    assert_eq!(j["state"], "running", "{j}\n{}", d.log());

    let (code, _, err) = d.cli(&["admin", "layout", "0", "5g.99gb"]);
    assert_eq!(code, 1);
    assert!(err.contains("instances[0]") && err.contains("unknown MIG profile '5g.99gb'"), "{err}");
    let (code, _, err) = d.cli(&["admin", "layout", "0", "3g.20gb@0,1g.5gb"]);
    assert_eq!(code, 1);
    assert!(err.contains("every instance or for none"), "{err}");
    let (code, _, err) = d.cli(&["admin", "layout", "7", "1g.5gb"]);
    assert_eq!(code, 1);
    assert!(err.contains("GPU 7") || err.contains("no GPU"), "{err}");
    let other = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_tessera"))
        .arg("--socket")
        .arg(d.socket())
        .args(["admin", "layout", "0", "none"])
        .output();
    if let Ok(o) = other
        && tessera_host::effective_uid() == 0
    {
        assert_eq!(o.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&o.stderr).contains("only admins change MIG layouts"), "{o:?}");
    }
    d.ok(&["cancel", &long.to_string()]);
    assert_eq!(d.wait(long)["state"], "cancelled");
    // Now idle: everything can go.
    d.ok(&["admin", "layout", "0", "none"]);
    assert!(layout(&d).is_empty());
}

/// One rank holds several whole GPUs (Slurm's --gres=gpu:2): one process sees both, with CPUs
/// from each GPU's NUMA node; two such ranks take four GPUs.
#[test]
fn one_rank_holds_several_whole_gpus() {
    let d = Daemon::start("4xH100-80GB,numa=2");
    let script = "echo $RANK $WORLD_SIZE $CUDA_VISIBLE_DEVICES; grep Cpus_allowed_list /proc/self/status";
    let id = d.submit(&["--gpus", "2", "--cpus", "2", "--", "sh", "-c", script]);
    let j = d.wait(id);
    assert_eq!(j["state"], "succeeded", "{j}");
    let out = d.ok(&["logs", &id.to_string()]);
    let first: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(&first[..2], ["0", "1"], "one rank: {out}");
    let devices: Vec<&str> = first[2].split(',').collect();
    assert_eq!(devices.len(), 2, "{out}");
    assert!(devices.iter().all(|d| d.starts_with("MIG-")) && devices[0] != devices[1], "{out}");
    let full = d.job(id);
    let ranks = full["ranks"].as_array().unwrap();
    assert_eq!(ranks.len(), 1, "one rank: {full}");
    let slices = ranks[0]["slices"].as_array().unwrap();
    assert_eq!(slices.len(), 2, "one slice per GPU: {full}");
    assert_ne!(slices[0]["gpu"], slices[1]["gpu"], "{full}");

    let id = d.submit(&["--gpus", "2", "--ranks", "2", "--", "sh", "-c", "echo $RANK $CUDA_VISIBLE_DEVICES"]);
    assert_eq!(d.wait(id)["state"], "succeeded");
    let full = d.job(id);
    let gpus: std::collections::BTreeSet<u64> = full["ranks"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["slices"].as_array().unwrap())
        .map(|s| s["gpu"].as_u64().unwrap())
        .collect();
    assert_eq!(gpus.len(), 4, "four distinct GPUs: {full}");
    for rank in 0..2 {
        let line = d.ok(&["logs", &id.to_string(), "--rank", &rank.to_string()]);
        assert_eq!(line.split_whitespace().next(), Some(rank.to_string().as_str()), "{line}");
        assert_eq!(line.split_whitespace().nth(1).unwrap().split(',').count(), 2, "{line}");
    }
}

/// kill -9 aimed at reconfigurations: each GPU-instance change takes 120 ms on this node, and
/// the jobs keep asking for shapes the GPU does not have, so the daemon is mostly in the middle
/// of a plan when it dies. After each restart the journal is resumed or abandoned, the layout is
/// valid, and in the end every job ran exactly once.
#[test]
fn kill_9_during_reconfigurations_leaves_valid_layouts_and_loses_no_job() {
    let mut d = Daemon::start("1xA100-40GB,numa=1,mig-op-ms=120");
    let marks = d.dir.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    // A whole GPU, then seven 1g jobs: whichever layout is there, the next shape needs a plan
    // of up to eight steps (about a second at 120 ms a step).
    let mut ids = Vec::new();
    for round in 0..5u64 {
        for k in 0..8 {
            let f = marks.join(format!("{round}-{k}"));
            let cmd = format!("echo run >> {}; sleep 0.{}", f.display(), if k == 0 { 3 } else { 1 });
            let shape: &[&str] = if k == 0 { &["--profile", "7g.40gb"] } else { &["--profile", "1g.5gb"] };
            ids.push(d.submit(&[shape, &["--", "sh", "-c", &cmd]].concat()));
        }
        std::thread::sleep(Duration::from_millis(500 + 200 * round));
        d.kill9();
        d.spawn();
        // Whatever the kill interrupted, the GPU's layout is one the driver accepts.
        let (code, out, err) = d.cli(&["-o", "json", "gpus"]);
        assert_eq!(code, 0, "{out}{err}");
    }
    every_job_succeeded_once(&d, &ids, &marks);
    let log = d.log();
    assert!(
        log.contains("resumed reconfiguration") || log.contains("abandoned"),
        "no kill landed inside a reconfiguration; the test missed its aim:\n{log}"
    );
    // The simulated node's own checker: every layout valid.
    let state = d.state();
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["mig", "gpus", "-o", "json", "--backend", "sim", "--sim-state"])
        .arg(state.join("sim-node.json"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The daemon is killed with -9 while jobs run, and restarted: every job still finishes exactly
/// once, with its exit status known.
#[test]
fn kill_9_and_restart_loses_no_job_and_runs_none_twice() {
    let mut d = Daemon::start("1xA100-40GB,numa=1");
    let marks = d.dir.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let mut ids = Vec::new();
    for round in 0..3 {
        for k in 0..4 {
            let f = marks.join(format!("{round}-{k}"));
            let cmd = format!("echo run >> {}; sleep 0.{}", f.display(), 3 + k);
            ids.push(d.submit(&["--compute-slices", "1", "--", "sh", "-c", &cmd]));
        }
        std::thread::sleep(Duration::from_millis(150 * (round + 1)));
        d.kill9();
        d.spawn();
    }
    every_job_succeeded_once(&d, &ids, &marks);
}

/// Many short jobs of mixed sizes and sharing all finish, and no two exclusive jobs ever held the
/// same instance at the same time.
#[test]
fn three_hundred_mixed_jobs_all_finish_without_sharing_exclusive_slices() {
    let d = Daemon::start("2xA100-40GB,numa=2");
    let mut ids = Vec::new();
    for k in 0..300 {
        let args: Vec<&str> = match k % 6 {
            0 => vec!["--profile", "1g.5gb"],
            1 => vec!["--compute-slices", "2"],
            2 => vec!["--gpu-mem", "4GiB"],
            3 => vec!["--profile", "1g.5gb", "--mps", "25%"],
            4 => vec!["--profile", "1g.5gb", "--time-slice"],
            _ => vec!["--profile", "3g.20gb"],
        };
        let id = d.submit(&[&args[..], &["--", "true"]].concat());
        ids.push(id);
    }
    let mut intervals: Vec<(String, u64, u64, bool, u64)> = Vec::new();
    for id in &ids {
        let j = d.wait(*id);
        assert_eq!(j["state"], "succeeded", "job {id}: {j}");
        let full = d.job(*id);
        let (s, e) = (full["started_ms"].as_u64().unwrap(), full["ended_ms"].as_u64().unwrap());
        for r in full["ranks"].as_array().unwrap().iter().flat_map(|r| r["slices"].as_array().unwrap()) {
            let key = format!("{}/{}/{}", r["gpu_uuid"], r["profile_id"], r["start"]);
            intervals.push((key, s, e, r["exclusive"].as_bool().unwrap(), *id));
        }
    }
    for (i, a) in intervals.iter().enumerate() {
        for b in &intervals[i + 1..] {
            if a.0 == b.0 && (a.3 || b.3) {
                assert!(
                    a.2 <= b.1 || b.2 <= a.1,
                    "jobs {} and {} shared {} exclusively at the same time",
                    a.4,
                    b.4,
                    a.0
                );
            }
        }
    }
}

/// A round that creates a GPU instance holds the engine for the driver's time (here 8 s per
/// create): reads are answered meanwhile, from the store and what the engine published.
#[test]
fn reads_answer_while_a_mig_operation_runs() {
    let d = Daemon::start("1xA100-40GB,mig-op-ms=8000");
    let id = d.submit(&["--profile", "3g.20gb", "--", "true"]);
    // The instance exists on the node once the create is made; the daemon is then inside the
    // create's driver time, in the middle of its round.
    let t0 = Instant::now();
    while !d.sim(&["gpus", "-o", "json"]).contains("3g.20gb") {
        assert!(t0.elapsed() < Duration::from_secs(30), "the instance was never created\n{}", d.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    // Each read returns before the round ends: the job has not started when it does.
    let not_started = |j: &Value| j["state"] == "queued" || j["state"] == "placing";
    let j = d.job(id);
    assert!(not_started(&j), "the read waited for the MIG operation: {j}");
    assert!(d.ok(&["jobs"]).contains(&id.to_string()));
    d.ok(&["gpus"]);
    d.ok(&["admin", "health", "show"]);
    let j = d.job(id);
    assert!(not_started(&j), "a read waited for the MIG operation: {j}");
    assert_eq!(d.wait(id)["state"], "succeeded");
}
