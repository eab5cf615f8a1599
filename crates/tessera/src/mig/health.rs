//! `tessera mig health`: Xid events classified after NVIDIA's catalog, an observation of every
//! GPU (the probe), and the health of every GPU and GPU instance that follows, kept between runs
//! in a state file. Each fault recovers the way the catalog says (a reset, a reboot, or a quiet
//! period; `tessera_gpu::health` has the rules), never by waiting alone when it needs a reset.
//! Exit 1 while a GPU or instance is unhealthy.
//!
//! `tessera mig health clear GPU` records an admin's clear in the same state file.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;
use tessera_gpu::health::{Health, HealthTracker, Observation, XidEvent, classify};
use tessera_gpu::view::node_view_partial;

use super::{human, print_json};
use crate::Refusal;
use crate::cli::Global;
use crate::node::{self, Node};
use crate::render::Table;

/// One health change, as it happened.
struct Change {
    at_ms: u64,
    what: String,
    health: Health,
}

/// Where health is kept: `--health-state`, else next to the simulated node's state
/// (`sim-node.json` → `sim-node.health.json`), else `$XDG_STATE_HOME/tessera/health.json`.
fn state_path(node: &Node, given: Option<PathBuf>) -> PathBuf {
    if let Some(p) = given {
        return p;
    }
    match node.sim_state() {
        Some(sim) => {
            let stem = sim.file_stem().map_or_else(|| "sim-node".into(), |s| s.to_string_lossy().into_owned());
            sim.with_file_name(format!("{stem}.health.json"))
        }
        None => node::state_home().join("tessera").join("health.json"),
    }
}

/// The stored tracker, or a fresh one when there is none yet; with `quiet_ms` when given.
fn load(path: &Path, quiet_ms: Option<u64>) -> anyhow::Result<HealthTracker> {
    let mut tracker = match fs::read_to_string(path) {
        Ok(text) => serde_json::from_str::<HealthTracker>(&text).with_context(|| {
            format!("health state {}: not readable; remove it to start over (it forgets past faults)", path.display())
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => HealthTracker::default(),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("reading health state {}", path.display()))),
    };
    if let Some(ms) = quiet_ms {
        tracker.set_recovery_quiet_ms(ms);
    }
    Ok(tracker)
}

/// Write the tracker atomically (a temporary file renamed over the old one).
fn save(path: &Path, tracker: &HealthTracker) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(tracker).context("serializing the health state")?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.write_all(b"\n")?;
        drop(f);
        fs::rename(&tmp, path)
    };
    write().with_context(|| format!("writing health state {}", path.display()))
}

/// Every GPU's and every known instance's health, labelled.
fn snapshot(tracker: &HealthTracker, gpus: &BTreeMap<u32, BTreeSet<u32>>) -> Vec<(String, Health)> {
    let report = tracker.report();
    let mut out = Vec::new();
    for (gpu, live) in gpus {
        out.push((format!("GPU {gpu}"), tracker.gpu_health(*gpu)));
        let faulted = report.gpus.iter().filter(|g| g.gpu == *gpu).flat_map(|g| g.instances.iter());
        let all: BTreeSet<u32> = live.iter().copied().chain(faulted.map(|i| i.gpu_instance_id)).collect();
        for gi in all {
            out.push((format!("GPU {gpu} GPU instance {gi}"), tracker.instance_health(*gpu, gi)));
        }
    }
    out
}

pub fn run(global: &Global, watch_s: f64, quiet_s: f64, health_state: Option<PathBuf>) -> anyhow::Result<()> {
    if !watch_s.is_finite() || watch_s < 0.0 || !quiet_s.is_finite() || quiet_s < 0.0 {
        anyhow::bail!("--watch and --recovery-quiet take a number of seconds, 0 or more");
    }
    let node = node::open(global)?;
    let backend = node.backend();
    let path = state_path(&node, health_state);
    let mut tracker = load(&path, Some((quiet_s * 1000.0) as u64))?;
    // The node as far as it answers: a GPU that does not is still watched (and unhealthy).
    let view = node_view_partial(backend)?;
    let mut ids: Vec<(u32, String)> = view.gpus.iter().map(|v| (v.device.index, v.device.uuid.clone())).collect();
    ids.extend(view.failed.iter().filter_map(|f| Some((f.gpu.index, f.gpu.uuid.clone()?))));
    tracker.reconcile_ids(&ids);
    let mut gpus: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
    for v in &view.gpus {
        gpus.insert(v.device.index, v.instances.iter().map(|i| i.gpu_instance_id).collect());
    }
    for f in &view.failed {
        gpus.entry(f.gpu.index).or_default();
    }
    let start = Instant::now();
    let watch = Duration::from_secs_f64(watch_s);
    let mut events: Vec<(u64, XidEvent)> = Vec::new();
    let mut changes: Vec<Change> = Vec::new();
    let mut before = snapshot(&tracker, &gpus);
    loop {
        // The probe: each GPU observed (reset count, recovery action, boot id), or not answering.
        let now_ms = tessera_host::now_ms();
        let observations: Vec<(u32, Observation)> = gpus
            .keys()
            .map(|&gpu| match backend.observe(gpu) {
                Ok(o) => (gpu, Observation::answered(&o)),
                Err(_) => (gpu, Observation::failed()),
            })
            .collect();
        tracker.observe_all(&observations, now_ms);
        let left = watch.saturating_sub(start.elapsed());
        let wait_ms = u32::try_from(left.as_millis().min(250)).unwrap_or(250);
        let new = backend.wait_xid_events(wait_ms)?;
        let now_ms = tessera_host::now_ms();
        for e in &new {
            tracker.record(e, now_ms);
            events.push((now_ms, *e));
            gpus.entry(e.gpu).or_default();
        }
        let after = snapshot(&tracker, &gpus);
        for (what, new) in &after {
            let old = before.iter().find(|(w, _)| w == what).map(|(_, h)| h);
            if old != Some(new) && !(old.is_none() && new.is_healthy()) {
                if human(global.output) && watch_s > 0.0 {
                    println!("{:>7.1}s  {what}: {new}", start.elapsed().as_secs_f64());
                }
                changes.push(Change { at_ms: now_ms, what: what.clone(), health: new.clone() });
            }
        }
        before = after;
        if start.elapsed() >= watch {
            break;
        }
    }
    save(&path, &tracker)?;
    let final_state = snapshot(&tracker, &gpus);
    let report = tracker.report();
    let unhealthy = final_state.iter().filter(|(_, h)| h.is_unhealthy()).count();
    if !human(global.output) {
        print_json(&json!({
            "node": node.description,
            "health_state": path.display().to_string(),
            "events": events.iter().map(|(at, e)| {
                let c = classify(e.xid);
                json!({"at_ms": at, "gpu": e.gpu, "xid": e.xid, "gpu_instance_id": e.gpu_instance_id,
                       "compute_instance_id": e.compute_instance_id, "name": c.name, "severity": c.severity,
                       "recovery": c.recovery, "action": c.action})
            }).collect::<Vec<_>>(),
            "changes": changes.iter().map(|c| json!({"at_ms": c.at_ms, "what": c.what, "health": c.health})).collect::<Vec<_>>(),
            "health": final_state.iter().map(|(what, h)| json!({"what": what, "health": h})).collect::<Vec<_>>(),
            "unreachable": view.failed,
            "unhealthy": unhealthy,
            "report": report,
        }));
    } else {
        print_human(&final_state, &events, &view.failed, gpus.len(), watch_s);
        if unhealthy > 0 {
            println!();
            println!(
                "Once a GPU is reset or repaired, `tessera mig health clear GPU` records it here (health state {}).",
                path.display()
            );
        }
    }
    if unhealthy > 0 {
        return Err(Refusal(format!("{unhealthy} GPU(s) or GPU instance(s) unhealthy")).into());
    }
    Ok(())
}

fn print_human(
    state: &[(String, Health)],
    events: &[(u64, XidEvent)],
    failed: &[tessera_gpu::FailedGpu],
    gpus: usize,
    watch_s: f64,
) {
    if events.is_empty() {
        println!("No Xid events{}.", if watch_s > 0.0 { format!(" in {watch_s} s") } else { " pending".to_string() });
    } else {
        let mut t = Table::new(&["GPU", "GI", "CI", "XID", "NAME", "SEVERITY", "RECOVERY", "ACTION"]);
        for (_, e) in events {
            let c = classify(e.xid);
            t.row(vec![
                e.gpu.to_string(),
                e.gpu_instance_id.map_or("-".into(), |v| v.to_string()),
                e.compute_instance_id.map_or("-".into(), |v| v.to_string()),
                e.xid.to_string(),
                c.name.to_string(),
                c.severity.to_string(),
                c.recovery.to_string(),
                c.action.to_string(),
            ]);
        }
        print!("{}", t.render(0));
    }
    for f in failed {
        println!("{}: does not answer: {}", f.gpu, f.error);
    }
    let troubled: Vec<&(String, Health)> = state.iter().filter(|(_, h)| !h.is_healthy()).collect();
    if troubled.is_empty() {
        println!("All {gpus} GPU(s) and their instances are healthy.");
    } else {
        for (what, h) in troubled {
            println!("{what}: {h}");
        }
    }
}

/// `tessera mig health clear GPU`: an admin says the GPU was reset or repaired.
pub fn clear(global: &Global, gpu: u32, by: Option<String>, health_state: Option<PathBuf>) -> anyhow::Result<()> {
    let node = node::open(global)?;
    let path = state_path(&node, health_state);
    let mut tracker = load(&path, None)?;
    let by = by.unwrap_or_else(|| tessera_host::users::user_name(tessera_host::effective_uid()));
    let had = tracker.troubled_gpus().contains(&gpu);
    if had {
        tracker.clear(gpu, &by, tessera_host::now_ms());
        save(&path, &tracker)?;
    }
    if human(global.output) {
        if had {
            println!(
                "GPU {gpu}: its faults count as recovered ({by}); the next successful probe (`tessera mig health`) \
                 clears them."
            );
        } else {
            println!("GPU {gpu} has no fault to clear (health state {}).", path.display());
        }
    } else {
        print_json(&json!({"gpu": gpu, "cleared": had, "by": by, "health_state": path.display().to_string(),
                           "health": tracker.gpu_health(gpu)}));
    }
    Ok(())
}
