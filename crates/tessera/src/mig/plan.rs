//! `tessera mig plan`: explicit placements for profiles on a GPU model, checked before any
//! hardware is touched (what mig-parted#100 asks for).

use serde_json::json;
use tessera_mig::layout::device_type_name;
use tessera_mig::{FragmentationReport, GpuModel, Instance, PlaceError, Placement, planner_for};

use super::{human, instance_arg, model_arg, print_json, wanted_arg};
use crate::Refusal;
use crate::cli::Output;
use crate::render::{Slice, Table, slice_map};

pub fn run(
    output: Output,
    gpu: &str,
    existing: &[String],
    per_gpu_numa: bool,
    profiles: &[String],
) -> anyhow::Result<()> {
    let m = model_arg(gpu)?;
    let planner = planner_for(m)
        .map_or_else(|| std::borrow::Cow::Owned(tessera_mig::Planner::new(m)), std::borrow::Cow::Borrowed);
    let existing: Vec<Instance> = existing.iter().map(|e| instance_arg(m, e)).collect::<anyhow::Result<_>>()?;
    let wanted = profiles.iter().map(|p| wanted_arg(m, p)).collect::<anyhow::Result<Vec<_>>>()?;
    let result = if per_gpu_numa {
        let [one] = wanted.as_slice() else {
            anyhow::bail!("--per-gpu-numa takes exactly one profile, placed once in each GPU NUMA node");
        };
        planner.place_per_gpu_numa(one.profile_id, &existing)
    } else {
        planner.place(&wanted, &existing)
    };
    match result {
        Ok(placement) => {
            let report = planner.fragmentation(&placement.layout).map_err(|v| {
                anyhow::anyhow!(
                    "internal: planned layout is invalid: {}",
                    v.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
                )
            })?;
            if human(output) {
                print_human(m, &placement, &report);
            } else {
                print_json(&plan_json(m, &placement, &report));
            }
            Ok(())
        }
        Err(err) => {
            if !human(output) {
                let alt = match &err {
                    PlaceError::Infeasible { alternative: Some(a), .. } => {
                        let report = planner.fragmentation(&a.placement.layout).ok();
                        report.map(|r| plan_json(m, &a.placement, &r))
                    }
                    _ => None,
                };
                print_json(&json!({"gpu": m.name, "feasible": false, "reason": err.to_string(), "alternative": alt}));
            }
            Err(Refusal(format!("not feasible on {}: {err}", m.name)).into())
        }
    }
}

pub fn instance_json(m: &GpuModel, i: &Instance, new: bool) -> serde_json::Value {
    let p = m.profile_by_id(i.profile_id);
    let size = p.map_or(0, |p| p.placement_size);
    json!({
        "profile": p.map_or_else(|| format!("profile#{}", i.profile_id), |p| device_type_name(p, i.compute)),
        "profile_id": i.profile_id,
        "start": i.start,
        "size": size,
        "compute_slices": p.map(|p| p.compute_slices),
        "memory_mib": p.and_then(|p| p.memory_mib),
        "gpu_numa_node": m.gpu_numa_node(i.start, size),
        "new": new,
    })
}

fn plan_json(m: &GpuModel, placement: &Placement, r: &FragmentationReport) -> serde_json::Value {
    json!({
        "gpu": m.name,
        "feasible": true,
        "instances": placement.layout.iter().map(|i| instance_json(m, i, placement.placed.contains(i))).collect::<Vec<_>>(),
        "free_units": r.free_units,
        "stranded_units": r.stranded_units,
        "free_compute_slices": r.free_compute_slices,
        "usable_compute_slices": r.usable_compute_slices,
        "unusable_compute_slices": r.unusable_compute_slices,
        "fits": r.fits.iter().filter(|f| f.count > 0).map(|f| json!({"profile": f.profile, "profile_id": f.profile_id, "count": f.count})).collect::<Vec<_>>(),
    })
}

/// The slice map of a layout: one `[label]` per instance.
pub fn layout_map(m: &GpuModel, layout: &[Instance], label: impl Fn(&Instance) -> String, indent: usize) -> String {
    let slices: Vec<Slice> = layout
        .iter()
        .map(|i| Slice {
            start: i.start,
            size: m.profile_by_id(i.profile_id).map_or(1, |p| p.placement_size),
            label: label(i),
        })
        .collect();
    let smallest = m.profiles.iter().map(|p| p.placement_size).min().unwrap_or(1);
    slice_map(m.placement_units, smallest, &slices, indent)
}

pub fn fragmentation_lines(r: &FragmentationReport) -> String {
    let fits: Vec<String> =
        r.fits.iter().filter(|f| f.count > 0).map(|f| format!("{}×{}", f.count, f.profile)).collect();
    format!(
        "free units: {}   stranded: {}   compute slices: {} free, {} usable, {} unusable\nstill fits (each alone): {}\n",
        if r.free_units.is_empty() { "none".into() } else { tessera_mig::layout::fmt_units(&r.free_units) },
        if r.stranded_units.is_empty() { "none".into() } else { tessera_mig::layout::fmt_units(&r.stranded_units) },
        r.free_compute_slices,
        r.usable_compute_slices,
        r.unusable_compute_slices,
        if fits.is_empty() { "nothing".into() } else { fits.join(", ") }
    )
}

fn print_human(m: &GpuModel, placement: &Placement, r: &FragmentationReport) {
    println!("Plan for {} ({} placement units):", m.name, m.placement_units);
    let mut t = Table::new(&["PROFILE", "ID", "PLACEMENT", "GPU NUMA", "MEMORY", ""]);
    for i in &placement.layout {
        let p = m.profile_by_id(i.profile_id);
        let size = p.map_or(0, |p| p.placement_size);
        t.row(vec![
            p.map_or_else(|| i.profile_id.to_string(), |p| device_type_name(p, i.compute)),
            i.profile_id.to_string(),
            format!("{}:{}", i.start, size),
            m.gpu_numa_node(i.start, size).map_or("both".into(), |n| n.to_string()),
            p.and_then(|p| p.memory_mib).map_or("-".into(), |v| format!("{v} MiB")),
            if placement.placed.contains(i) { "new".into() } else { "existing".into() },
        ]);
    }
    print!("{}", t.render(2));
    println!();
    print!(
        "{}",
        layout_map(
            m,
            &placement.layout,
            |i| m.profile_by_id(i.profile_id).map_or_else(|| "?".into(), |p| device_type_name(p, i.compute)),
            2
        )
    );
    println!();
    print!("{}", fragmentation_lines(r));
}
