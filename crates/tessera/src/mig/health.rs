//! `tessera mig health`: Xid events classified after NVIDIA's catalog, an observation of every
//! GPU (the probe), and the health of every GPU and GPU instance that follows, kept between runs
//! in a state file. Each fault recovers the way the catalog says (a reset, a reboot, or a quiet
//! period; `tessera_gpu::health` has the rules), never by waiting alone when it needs a reset.
//! Exit 1 while a GPU or instance is unhealthy.
//!
//! `tessera mig health clear GPU` records an admin's clear in the same state file.
//!
//! The state file is changed only under its lock ([`tessera_gpu::statefile`]), read, changed and
//! written back at once; `--watch` takes the lock for each round of observations and events, not
//! for the whole watch, so a `clear` made meanwhile is read back, never overwritten.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use serde_json::json;
use tessera_gpu::health::{Health, HealthTracker, Observation, XidEvent, classify};
use tessera_gpu::statefile;
use tessera_gpu::view::node_view_partial;

use super::{human, print_json};
use crate::Refusal;
use crate::cli::Global;
use crate::node::{self, Node};
use crate::render::Table;

/// How an admin clears a GPU here (the daemon's own is `tessera admin health clear`).
const CLEAR_COMMAND: &str = "tessera mig health clear";

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

/// `--watch` or `--recovery-quiet` as a duration.
fn seconds(flag: &str, value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value).map_err(|e| anyhow!("{flag} {value}: not a number of seconds, 0 or more ({e})"))
}

/// The health state file.
struct StateFile {
    path: PathBuf,
    /// The quiet period this command runs with.
    quiet_ms: u64,
}

impl StateFile {
    /// The stored tracker, or a fresh one when there is none yet (and whether there was one),
    /// with this command's quiet period and clear command. Without the lock: the file is only
    /// ever replaced whole.
    fn load(&self) -> anyhow::Result<(HealthTracker, bool)> {
        let path = &self.path;
        let (mut tracker, existed) = match fs::read_to_string(path) {
            Ok(text) => (
                HealthTracker::restore(&text, self.quiet_ms).with_context(|| {
                    format!(
                        "health state {}: not readable; remove it to start over (it forgets past faults)",
                        path.display()
                    )
                })?,
                true,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (HealthTracker::new(self.quiet_ms), false),
            Err(e) => return Err(anyhow::Error::new(e).context(format!("reading health state {}", path.display()))),
        };
        tracker.set_clear_command(CLEAR_COMMAND);
        Ok((tracker, existed))
    }

    /// Under the file's lock: the stored tracker (with whatever another command saved since,
    /// e.g. a clear), changed by `f`, written back if it changed (or was not there yet).
    fn update<T>(&self, f: impl FnOnce(&mut HealthTracker) -> T) -> anyhow::Result<(HealthTracker, T)> {
        let path = &self.path;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let _lock = statefile::lock(path).context("locking the health state")?;
        let (mut tracker, existed) = self.load()?;
        let before = tracker.clone();
        let out = f(&mut tracker);
        if !existed || tracker != before {
            save(path, &tracker)?;
        }
        Ok((tracker, out))
    }
}

/// Write the tracker atomically (the caller holds the lock).
fn save(path: &Path, tracker: &HealthTracker) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(tracker).context("serializing the health state")?;
    text.push('\n');
    statefile::write_atomic(path, text.as_bytes()).context("writing the health state")
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
    let watch = seconds("--watch", watch_s)?;
    let quiet = seconds("--recovery-quiet", quiet_s)?;
    let node = node::open(global)?;
    let backend = node.backend();
    let file = StateFile {
        path: state_path(&node, health_state),
        quiet_ms: u64::try_from(quiet.as_millis()).unwrap_or(u64::MAX),
    };
    // The node as far as it answers: a GPU that does not is still watched (and unhealthy).
    let view = node_view_partial(backend)?;
    let mut ids: Vec<(u32, String)> = view.gpus.iter().map(|v| (v.device.index, v.device.uuid.clone())).collect();
    ids.extend(view.failed.iter().filter_map(|f| Some((f.gpu.index, f.gpu.uuid.clone()?))));
    let mut gpus: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
    for v in &view.gpus {
        gpus.insert(v.device.index, v.instances.iter().map(|i| i.gpu_instance_id).collect());
    }
    for f in &view.failed {
        gpus.entry(f.gpu.index).or_default();
    }
    let (mut tracker, _) = file.load()?;
    tracker.reconcile_ids(&ids);
    let start = Instant::now();
    let mut events: Vec<(u64, XidEvent)> = Vec::new();
    let mut changes: Vec<Change> = Vec::new();
    let mut before = snapshot(&tracker, &gpus);
    loop {
        // The probe: each GPU observed (reset count, recovery action, boot id), or not answering.
        let probed_ms = tessera_host::now_ms();
        let observations: Vec<(u32, Observation)> =
            gpus.keys().map(|&gpu| (gpu, Observation::from_result(backend.observe(gpu)))).collect();
        let left = watch.saturating_sub(start.elapsed());
        let wait_ms = u32::try_from(left.as_millis().min(250)).unwrap_or(250);
        let new = backend.wait_xid_events(wait_ms)?;
        let now_ms = tessera_host::now_ms();
        // Into what is stored now: a clear made since the last round is kept.
        (tracker, ()) = file.update(|t| {
            t.reconcile_ids(&ids);
            t.observe_all(&observations, probed_ms);
            for e in &new {
                t.record(e, now_ms);
            }
        })?;
        for e in &new {
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
    let path = &file.path;
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
pub fn clear(
    global: &Global,
    gpu: u32,
    by: Option<String>,
    quiet_s: f64,
    health_state: Option<PathBuf>,
) -> anyhow::Result<()> {
    let quiet = seconds("--recovery-quiet", quiet_s)?;
    let node = node::open(global)?;
    let file = StateFile {
        path: state_path(&node, health_state),
        quiet_ms: u64::try_from(quiet.as_millis()).unwrap_or(u64::MAX),
    };
    let path = &file.path;
    let by = by.unwrap_or_else(|| tessera_host::users::user_name(tessera_host::effective_uid()));
    let (tracker, had) = file.update(|t| {
        let had = t.troubled_gpus().contains(&gpu);
        if had {
            t.clear(gpu, &by, tessera_host::now_ms());
        }
        had
    })?;
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
