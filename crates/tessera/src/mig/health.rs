//! `tessera mig health`: Xid events classified after NVIDIA's catalog, and the health of every
//! GPU and GPU instance that follows from them. A fatal error marks a GPU and all its instances
//! unhealthy; they recover after a quiet period with successful probes (NVIDIA's device plugin
//! never recovers, k8s-device-plugin#189).

use std::time::{Duration, Instant};

use serde_json::json;
use tessera_gpu::health::{Health, HealthTracker, XidEvent, classify};
use tessera_gpu::view::node_view;

use super::{human, print_json};
use crate::cli::Global;
use crate::node;
use crate::render::Table;

/// One health change, as it happened.
struct Change {
    at_ms: u64,
    what: String,
    health: Health,
}

fn snapshot(tracker: &HealthTracker, gpus: &[(u32, Vec<u32>)]) -> Vec<(String, Health)> {
    let mut out = Vec::new();
    for (gpu, instances) in gpus {
        out.push((format!("GPU {gpu}"), tracker.gpu_health(*gpu)));
        for gi in instances {
            out.push((format!("GPU {gpu} GPU instance {gi}"), tracker.instance_health(*gpu, *gi)));
        }
    }
    out
}

pub fn run(global: &Global, watch_s: f64, quiet_s: f64) -> anyhow::Result<()> {
    if !watch_s.is_finite() || watch_s < 0.0 || !quiet_s.is_finite() || quiet_s < 0.0 {
        anyhow::bail!("--watch and --recovery-quiet take a number of seconds, 0 or more");
    }
    let node = node::open(global)?;
    let backend = node.backend();
    let views = node_view(backend)?;
    let gpus: Vec<(u32, Vec<u32>)> =
        views.iter().map(|v| (v.device.index, v.instances.iter().map(|i| i.gpu_instance_id).collect())).collect();
    let mut tracker = HealthTracker::new((quiet_s * 1000.0) as u64);
    let start = Instant::now();
    let watch = Duration::from_secs_f64(watch_s);
    let mut events: Vec<(u64, XidEvent)> = Vec::new();
    let mut changes: Vec<Change> = Vec::new();
    let mut before = snapshot(&tracker, &gpus);
    loop {
        let left = watch.saturating_sub(start.elapsed());
        let wait_ms = u32::try_from(left.as_millis().min(250)).unwrap_or(250);
        let new = backend.wait_xid_events(wait_ms)?;
        let now_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        for e in &new {
            tracker.record(e, now_ms);
            events.push((now_ms, *e));
        }
        for (gpu, _) in &gpus {
            let ok = backend.mig_mode(*gpu).is_ok();
            tracker.probe(*gpu, ok, now_ms);
        }
        let after = snapshot(&tracker, &gpus);
        for ((what, old), (_, new)) in before.iter().zip(after.iter()) {
            if old != new {
                if human(global.output) && watch_s > 0.0 {
                    println!("{:>7.1}s  {what}: {new}", now_ms as f64 / 1000.0);
                }
                changes.push(Change { at_ms: now_ms, what: what.clone(), health: new.clone() });
            }
        }
        before = after;
        if start.elapsed() >= watch {
            break;
        }
    }
    let final_state = snapshot(&tracker, &gpus);
    if !human(global.output) {
        print_json(&json!({
            "node": node.description,
            "events": events.iter().map(|(at, e)| {
                let c = classify(e.xid);
                json!({"at_ms": at, "gpu": e.gpu, "xid": e.xid, "gpu_instance_id": e.gpu_instance_id,
                       "compute_instance_id": e.compute_instance_id, "name": c.name, "severity": c.severity, "action": c.action})
            }).collect::<Vec<_>>(),
            "changes": changes.iter().map(|c| json!({"at_ms": c.at_ms, "what": c.what, "health": c.health})).collect::<Vec<_>>(),
            "health": final_state.iter().map(|(what, h)| json!({"what": what, "health": h})).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    if events.is_empty() {
        println!("No Xid events{}.", if watch_s > 0.0 { format!(" in {watch_s} s") } else { " pending".to_string() });
    } else {
        let mut t = Table::new(&["AT", "GPU", "GI", "CI", "XID", "NAME", "SEVERITY", "ACTION"]);
        for (at, e) in &events {
            let c = classify(e.xid);
            t.row(vec![
                format!("{:.1}s", *at as f64 / 1000.0),
                e.gpu.to_string(),
                e.gpu_instance_id.map_or("-".into(), |v| v.to_string()),
                e.compute_instance_id.map_or("-".into(), |v| v.to_string()),
                e.xid.to_string(),
                c.name.to_string(),
                c.severity.to_string(),
                c.action.to_string(),
            ]);
        }
        print!("{}", t.render(0));
    }
    let troubled: Vec<&(String, Health)> = final_state.iter().filter(|(_, h)| !h.is_healthy()).collect();
    if troubled.is_empty() {
        println!("All {} GPU(s) and their instances are healthy.", gpus.len());
    } else {
        for (what, h) in troubled {
            println!("{what}: {h}");
        }
    }
    Ok(())
}
