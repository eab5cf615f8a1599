//! `tessera mig layouts --gpu MODEL`: every maximal layout, so a layout can be chosen, not guessed.

use serde_json::json;
use tessera_mig::layout::instance_label;
use tessera_mig::{Planner, planner_for};

use super::{human, model_arg, plan::free_line, plan::layout_map, print_json, wanted_arg};
use crate::cli::Output;

pub fn run(output: Output, gpu: &str, profiles: &[String]) -> anyhow::Result<()> {
    let m = model_arg(gpu)?;
    let filter: Vec<u32> =
        profiles.iter().map(|p| wanted_arg(m, p).map(|w| w.profile_id)).collect::<anyhow::Result<_>>()?;
    let planner = planner_for(m).map_or_else(|| std::borrow::Cow::Owned(Planner::new(m)), std::borrow::Cow::Borrowed);
    let layouts = planner.maximal_layouts(if filter.is_empty() { None } else { Some(&filter) });
    if !human(output) {
        let list: Vec<serde_json::Value> = layouts
            .iter()
            .map(|l| {
                let r = planner.fragmentation(l).ok();
                json!({
                    "instances": l.iter().map(|i| super::plan::instance_json(m, i, false)).collect::<Vec<_>>(),
                    "unusable_compute_slices": r.as_ref().map(|r| r.unusable_compute_slices),
                    "free_units": r.as_ref().map(|r| r.free_units.clone()),
                })
            })
            .collect();
        print_json(&json!({"gpu": m.name, "count": layouts.len(), "layouts": list}));
        return Ok(());
    }
    println!(
        "{} maximal layouts of {} ({}):",
        layouts.len(),
        m.name,
        if filter.is_empty() { "all profiles".to_string() } else { profiles.join(", ") }
    );
    for (n, l) in layouts.iter().enumerate() {
        let r = planner.fragmentation(l).ok();
        // Said as `tessera mig gpus` and `plan` say it, where anything is left.
        let left = r
            .as_ref()
            .filter(|r| r.free_compute_slices > 0 || !r.stranded_units.is_empty())
            .map_or_else(String::new, |r| format!("   ({})", free_line(m, r)));
        let labels: Vec<String> = l.iter().map(|i| instance_label(m, i)).collect();
        println!("\n#{:<3} {}{left}", n + 1, labels.join(" "));
        print!(
            "{}",
            layout_map(m, l, |i| m.profile_by_id(i.profile_id).map_or_else(|| "?".into(), |p| p.name.clone()), 5)
        );
    }
    Ok(())
}
