//! `tessera mig profiles --gpu MODEL`: what `nvidia-smi mig -lgip` and `-lgipp` show, from the
//! catalog, with what was inferred rather than read marked.

use serde_json::json;
use tessera_mig::Profile;

use super::{human, model_arg, print_json};
use crate::cli::Output;
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
