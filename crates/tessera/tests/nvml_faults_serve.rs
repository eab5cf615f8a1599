//! NVML faults across a whole scheduling run of the daemon: `tessera serve --backend nvml` over
//! the stand-in `libnvidia-ml.so` (crates/tessera-nvml-standin), with jobs whose profiles force the
//! GPU to be repartitioned (3g, 4g, 7g, then 1g on an A100). The stand-in's census lists the NVML
//! functions such a run calls; each is then failed once, at its first and at its last call of the
//! census, with each return code nvml.h documents as plausible for it (see
//! `tessera_nvml_standin::faults::plausible_codes`). After every fault:
//! * the daemon is still up and answering;
//! * the layout it reports is exactly what the node has (the stand-in's simulated node), and the
//!   planner accepts that layout as valid;
//! * every job either ran or ended with a reason; and after a restart without the fault, the same
//!   work submitted again all runs: nothing was left half-made in the way. A fault the health
//!   probe sees (the recovery-action read, `nvmlDeviceGetFieldValues`, failing) quarantines the
//!   GPU for 60 s by design; the rerun then clears it as an admin would (`admin health clear`).
//!
//! `TESSERA_FAULT_SWEEP=full` tries every code at every call site; the default keeps CI bounded:
//! every code at the first and last call of the functions that change the GPU (create, destroy,
//! MIG mode), and `UNKNOWN` and `GPU_IS_LOST` at the first and last call of the rest.

mod common;

use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::Daemon;
use serde_json::Value;
use tessera_nvml_standin::faults::{census_counts, sweep_codes};

const SPEC: &str = "1xA100-40GB,numa=1";
const DRIVER: &str = "580.65.06";
/// The work of one scheduling run: each profile needs the layout changed.
const WORK: [&str; 4] = ["3g.20gb", "4g.20gb", "7g.40gb", "1g.5gb"];
/// Daemons run side by side (each in its own directory): they mostly wait.
const WORKERS: usize = 4;
/// How many faults left the GPU quarantined by the health probe.
static QUARANTINED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn daemon(env: &[(&str, &str)]) -> Daemon {
    // A serve daemon, not started: the node-agent constructor is the one that leaves it unstarted.
    let mut d = Daemon::unstarted_node_agent(SPEC, "");
    d.subcommand = vec!["serve".into()];
    d.nvml_driver = Some(DRIVER.into());
    d.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    d.spawn();
    d
}

/// Submit the work; the job ids.
fn submit(d: &Daemon) -> Vec<u64> {
    WORK.iter().map(|p| d.submit(&["--profile", p, "--", "true"])).collect()
}

/// Wait for each job to end (`None`: it did not within the time).
fn outcome(d: &Daemon, ids: &[u64], secs: u64) -> Vec<(u64, Option<Value>)> {
    ids.iter()
        .map(|&id| {
            let (_, out, _) = d.cli(&["-o", "json", "wait", &id.to_string(), "--timeout", &format!("{secs}s")]);
            let j: Option<Value> = serde_json::from_str(&out).ok();
            let ended = j.filter(|j| ["succeeded", "failed", "cancelled"].contains(&j["state"].as_str().unwrap_or("")));
            (id, ended)
        })
        .collect()
}

/// The daemon's report equals the node (it may take a round to notice a change).
fn reported_as_it_is(d: &Daemon, what: &str) -> Vec<(String, u64)> {
    let t0 = Instant::now();
    loop {
        let (code, out, err) = d.cli(&["-o", "json", "gpus"]);
        assert_eq!(code, 0, "{what}: the daemon does not answer: {err}\n{}", d.log());
        let seen = common::gpu0_layout(&serde_json::from_str(&out).unwrap());
        let real = d.standin_gpu0_layout();
        if seen == real {
            return real;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{what}: the daemon reports {seen:?}, the node has {real:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The planner accepts the layout.
fn valid(layout: &[(String, u64)], what: &str) {
    if layout.is_empty() {
        return;
    }
    let existing: Vec<String> = layout.iter().map(|(p, s)| format!("{p}@{s}")).collect();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["--backend", "sim", "--sim-state"])
        .arg(dir.path().join("s.json"))
        .args(["mig", "plan", "--gpu", "A100-40GB", "--existing", &existing.join(","), "1g.5gb"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("not valid"), "{what}: invalid layout left: {existing:?}: {err}");
}

/// The NVML calls of one fault-free scheduling run, by function, with their counts.
fn census() -> Vec<(String, u64)> {
    let dir = tempfile::tempdir().unwrap();
    let calls = dir.path().join("calls");
    let d = daemon(&[("TESSERA_STANDIN_CALLS", calls.to_str().unwrap())]);
    let ids = submit(&d);
    for (id, j) in outcome(&d, &ids, 60) {
        let j = j.unwrap_or_else(|| panic!("job {id} did not end without faults:\n{}", d.log()));
        assert_eq!(j["state"], "succeeded", "job {id} without faults: {j}\n{}", d.log());
    }
    valid(&reported_as_it_is(&d, "census"), "census");
    drop(d);
    census_counts(&std::fs::read_to_string(&calls).unwrap()).into_iter().collect()
}

/// One fault: the run under it, then the checks, then the rerun without it.
fn one(fault: &str) -> Result<(), String> {
    let d = daemon(&[("TESSERA_STANDIN_FAULTS", fault)]);
    let ids = submit(&d);
    let ended = outcome(&d, &ids, 20);
    for (id, j) in &ended {
        if let Some(j) = j
            && j["state"] != "succeeded"
        {
            let why = j.to_string();
            if !(why.contains("reason") || why.contains("error") || why.contains("message")) {
                return Err(format!("{fault}: job {id} ended {} without a reason: {j}", j["state"]));
            }
        }
    }
    let layout = reported_as_it_is(&d, fault);
    valid(&layout, fault);
    // The rerun: the same daemon state, restarted without the fault; the same work again.
    let mut d = d;
    d.stop();
    d.env.clear();
    d.spawn();
    // A fault the health probe saw quarantines the GPU (60 s without errors, a reboot, or an
    // admin's clear): the admin's clear, as the daemon's own message says.
    if d.log().contains("is now unhealthy") {
        QUARANTINED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (code, _, err) = d.cli(&["admin", "health", "clear", "0"]);
        if code != 0 {
            return Err(format!("{fault}: `admin health clear 0` failed: {err}"));
        }
    }
    // What the faulted run left unfinished finishes now, and the work submitted again runs.
    let again = submit(&d);
    let unfinished: Vec<u64> = ended.iter().filter(|(_, j)| j.is_none()).map(|(id, _)| *id).collect();
    for (id, j) in outcome(&d, &[again.as_slice(), unfinished.as_slice()].concat(), 60) {
        let j = j.ok_or_else(|| format!("{fault}: job {id} never ended after the rerun:\n{}", d.log()))?;
        if j["state"] != "succeeded" {
            return Err(format!("{fault}: job {id} after the rerun: {j}\n{}", d.log()));
        }
    }
    valid(&reported_as_it_is(&d, fault), fault);
    Ok(())
}

#[test]
fn every_nvml_function_of_a_scheduling_run_failed_with_each_code() {
    let t0 = Instant::now();
    let full = std::env::var("TESSERA_FAULT_SWEEP").is_ok_and(|v| v == "full");
    let census = census();
    assert!(census.iter().any(|(f, _)| f.contains("CreateGpuInstance")), "the work made no instance: {census:?}");
    let mut faults: Vec<String> = Vec::new();
    for (function, count) in &census {
        let mut calls = vec![1, *count];
        calls.dedup();
        let codes: Vec<&str> = sweep_codes(function, full);
        for nth in calls {
            for code in &codes {
                faults.push(format!("{function}:{nth}={code}"));
            }
        }
    }
    let total = faults.len();
    let queue = Mutex::new(faults);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| {
                loop {
                    let Some(fault) = queue.lock().unwrap().pop() else { break };
                    let r = std::panic::catch_unwind(|| one(&fault))
                        .unwrap_or_else(|p| Err(format!("{fault}: {}", panic_text(&p))));
                    if let Err(e) = r {
                        failures.lock().unwrap().push(e);
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    println!(
        "{} functions in the census, {total} faults, {} failed, {} quarantined the GPU, in {:.0?}",
        census.len(),
        failures.len(),
        QUARANTINED.load(std::sync::atomic::Ordering::Relaxed),
        t0.elapsed()
    );
    assert!(failures.is_empty(), "{} of {total} faults broke a promise:\n{}", failures.len(), failures.join("\n---\n"));
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()
}
