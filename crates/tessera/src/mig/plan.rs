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
        "free": free_line(m, r),
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

/// What a layout leaves free, in one line, said the same way whatever the layout: the free
/// compute slices, how many of them a profile could still use, and what would fit, largest
/// first, each alternative alone (`free: 3 compute slices (room for 1× 3g.40gb or 1× 2g.20gb
/// or 3× 1g.10gb)`); empty placement units no profile can use are named, so a map showing them
/// empty never contradicts it.
pub fn free_line(m: &GpuModel, r: &FragmentationReport) -> String {
    let n = r.free_compute_slices;
    let slices = if n == 1 { "1 compute slice".to_string() } else { format!("{n} compute slices") };
    let mut fits: Vec<((u8, u8), String)> = r
        .fits
        .iter()
        .filter(|f| f.count > 0)
        .map(|f| {
            let size = m.profile_by_id(f.profile_id).map_or((0, 0), |p| (p.compute_slices, p.memory_slices));
            (size, format!("{}× {}", f.count, f.profile))
        })
        .collect();
    // Largest first (compute, then memory); the catalog's order among equals.
    fits.sort_by_key(|(size, _)| std::cmp::Reverse(*size));
    let room = fits.into_iter().map(|(_, f)| f).collect::<Vec<_>>().join(" or ");
    let mut line = match r.usable_compute_slices {
        _ if n == 0 => "free: none".to_string(),
        0 => format!("free: {slices}, but no profile fits where {}", if n == 1 { "it is" } else { "they are" }),
        u if u == n => format!("free: {slices} (room for {room})"),
        u => format!("free: {slices}, {u} of them usable (room for {room})"),
    };
    if let [units @ .., last] = r.stranded_units.as_slice() {
        let (word, list) = match units {
            [] => ("unit", last.to_string()),
            _ => ("units", format!("{} and {last}", units.iter().map(u8::to_string).collect::<Vec<_>>().join(", "))),
        };
        line.push_str(&format!(
            "; {word} {list} {} empty but no profile can use {}",
            if units.is_empty() { "is" } else { "are" },
            if units.is_empty() { "it" } else { "them" }
        ));
    }
    line
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
    println!("{}", free_line(m, r));
}
