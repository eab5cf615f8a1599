//! `tessera mig profiles --gpu MODEL`: what `nvidia-smi mig -lgip` and `-lgipp` show, from the
//! catalog, with what was inferred rather than read marked.

use serde_json::json;
use tessera_mig::Profile;

use super::{human, model_arg, print_json};
use crate::cli::{Global, Output};
use crate::node;
use crate::render::{Table, placements};

pub fn run(output: Output, gpu: &str) -> anyhow::Result<()> {
    let m = model_arg(gpu)?;
    if !human(output) {
        let profiles: Vec<serde_json::Value> = m
            .profiles
            .iter()
            .map(|p| {
                json!({
                    "name": p.name, "id": p.id, "nvml_index": p.nvml_index, "compute_slices": p.compute_slices,
                    "memory_slices": p.memory_slices, "memory_mib": p.memory_mib, "sm_count": p.sm_count,
                    "max_count": p.max_count, "placement_size": p.placement_size, "placements": p.placements,
                    "gpu_numa_nodes": p.placements.iter().map(|&s| m.gpu_numa_node(s, p.placement_size)).collect::<Vec<_>>(),
                    "media": p.media.map(|e| json!({"copy_engines": e.copy_engines, "nvdec": e.nvdec, "nvenc": e.nvenc, "jpeg": e.jpeg, "ofa": e.ofa})),
                    "inferred": p.inferred, "inferred_fields": p.inferred_fields,
                })
            })
            .collect();
        print_json(&json!({
            "gpu": m.name, "product_names": m.product_names, "architecture": m.architecture,
            "placement_units": m.placement_units, "compute_slices": m.compute_slices,
            "max_gpu_instances": m.max_gpu_instances, "memory_total_mib": m.memory_total_mib,
            "confidence": m.confidence.to_string(), "sources": m.sources, "profiles": profiles,
        }));
        return Ok(());
    }
    println!(
        "GPU instance profiles: {} ({}), {} placement units, {} compute slices, confidence {}",
        m.name,
        m.display_product_name(),
        m.placement_units,
        m.compute_slices,
        m.confidence
    );
    let mut t = Table::new(&[
        "ID",
        "NAME",
        "COUNT",
        "MEMORY",
        "SMs",
        "CE",
        "DEC",
        "ENC",
        "JPG",
        "OFA",
        "PLACEMENTS",
        "GPU NUMA",
    ]);
    let mut any_inferred = false;
    for p in &m.profiles {
        let mark = |field: &str| {
            if p.inferred || p.inferred_fields.iter().any(|f| f == field) { "*" } else { "" }
        };
        any_inferred |= p.inferred || !p.inferred_fields.is_empty();
        let engine = |v: Option<u32>| v.map_or("-".to_string(), |x| x.to_string());
        let media = p.media;
        t.row(vec![
            p.id.to_string(),
            p.name.clone(),
            p.max_count.to_string(),
            p.memory_mib.map_or("-".into(), |v| format!("{v} MiB{}", mark("memory_mib"))),
            p.sm_count.map_or("-".into(), |v| format!("{v}{}", mark("sm_count"))),
            engine(media.map(|e| e.copy_engines)),
            engine(media.map(|e| e.nvdec)),
            engine(media.map(|e| e.nvenc)),
            engine(media.map(|e| e.jpeg)),
            format!("{}{}", p.ofa_engines, mark("ofa_engines")),
            format!("{}{}", placements(&p.placements, p.placement_size), mark("placements")),
            numa_column(m, p),
        ]);
    }
    print!("{}", t.render(0));
    if any_inferred {
        println!("* inferred, not read from a driver (see `tessera mig profiles -o json` for the fields and sources)");
    }
    if let Some(numa) = &m.gpu_numa {
        println!(
            "GPU NUMA: the node of each placement ({} nodes{}); '-' spans both.",
            numa.nodes,
            if numa.inferred { ", inferred" } else { "" }
        );
    }
    Ok(())
}

fn numa_column(m: &tessera_mig::GpuModel, p: &Profile) -> String {
    if m.gpu_numa.is_none() {
        return "unknown".into();
    }
    p.placements
        .iter()
        .map(|&s| m.gpu_numa_node(s, p.placement_size).map_or("-".to_string(), |n| n.to_string()))
        .collect::<Vec<_>>()
        .join(",")
}

/// One driver-reported profile next to the catalog's view of it.
struct Compared {
    driver: tessera_gpu::GpuInstanceProfileInfo,
    placements: Vec<tessera_gpu::PlacementRange>,
    verdict: String,
}

fn compare(
    m: Option<&tessera_mig::GpuModel>,
    d: &tessera_gpu::GpuInstanceProfileInfo,
    driver: &[tessera_gpu::PlacementRange],
) -> String {
    let Some(m) = m else { return "no catalog model".into() };
    let Some(p) = m.profile_by_id(d.id) else { return "not in the catalog (driver wins)".into() };
    let mut diffs = Vec::new();
    let name = d.name.trim_start_matches("MIG ").to_string();
    if name != p.name && !p.aka.contains(&name) {
        diffs.push(format!("name {} vs catalog {}", name, p.name));
    }
    if d.max_count != p.max_count {
        diffs.push(format!("count {} vs {}", d.max_count, p.max_count));
    }
    let starts: Vec<u8> = driver.iter().map(|r| r.start).collect();
    if starts != p.placements || driver.iter().any(|r| r.size != p.placement_size) {
        diffs.push(format!(
            "placements {} vs {}",
            placements_text(driver),
            placements(&p.placements, p.placement_size)
        ));
    }
    if let Some(mib) = p.memory_mib
        && d.memory_mib != mib
    {
        diffs.push(format!("memory {} vs {} MiB", d.memory_mib, mib));
    }
    if diffs.is_empty() { "matches".into() } else { format!("differs: {}", diffs.join("; ")) }
}

fn placements_text(p: &[tessera_gpu::PlacementRange]) -> String {
    let starts: Vec<u8> = p.iter().map(|r| r.start).collect();
    placements(&starts, p.first().map_or(0, |r| r.size))
}

/// `tessera mig profiles` without `--gpu`: what the node's driver reports, checked against the catalog.
pub fn run_node(global: &Global) -> anyhow::Result<()> {
    let node = node::open(global)?;
    let backend = node.backend();
    let mut out = Vec::new();
    for dev in backend.devices()? {
        let model = dev.model();
        let mode = backend.mig_mode(dev.index)?;
        let profiles = if mode.current {
            let mut rows = Vec::new();
            for d in backend.gpu_instance_profiles(dev.index)? {
                let placements = backend.possible_placements(dev.index, d.id)?;
                let verdict = compare(model, &d, &placements);
                rows.push(Compared { driver: d, placements, verdict });
            }
            Some(rows)
        } else {
            None
        };
        out.push((dev, model, mode, profiles));
    }
    if !human(global.output) {
        print_json(&json!({
            "node": node.description,
            "gpus": out.iter().map(|(dev, model, mode, rows)| json!({
                "index": dev.index, "name": dev.name, "model": model.map(|m| m.name.clone()),
                "mig": {"current": mode.current, "pending": mode.pending},
                "profiles": rows.as_ref().map(|rows| rows.iter().map(|c| json!({
                    "id": c.driver.id, "name": c.driver.name, "max_count": c.driver.max_count,
                    "compute_slices": c.driver.compute_slices, "memory_mib": c.driver.memory_mib,
                    "sm_count": c.driver.sm_count,
                    "placements": c.placements.iter().map(|r| json!({"start": r.start, "size": r.size})).collect::<Vec<_>>(),
                    "catalog": c.verdict,
                })).collect::<Vec<_>>()),
            })).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    println!("GPU instance profiles as the driver reports them ({}):", node.description);
    for (dev, model, mode, rows) in &out {
        println!();
        println!(
            "GPU {}  {}  ({})  MIG {mode}",
            dev.index,
            dev.name,
            model.map_or("not in the catalog", |m| m.name.as_str())
        );
        let Some(rows) = rows else {
            println!("  MIG is disabled: the driver reports no profiles (Tessera does not change the mode here)");
            continue;
        };
        let mut t = Table::new(&["ID", "NAME", "COUNT", "MEMORY", "SMs", "PLACEMENTS", "CATALOG"]);
        for c in rows {
            t.row(vec![
                c.driver.id.to_string(),
                c.driver.name.trim_start_matches("MIG ").to_string(),
                c.driver.max_count.to_string(),
                format!("{} MiB", c.driver.memory_mib),
                c.driver.sm_count.to_string(),
                placements_text(&c.placements),
                c.verdict.clone(),
            ]);
        }
        print!("{}", t.render(2));
    }
    Ok(())
}
