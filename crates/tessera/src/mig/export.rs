//! `tessera mig export` and `generate-config`: the node's MIG state, and the configs its GPUs
//! support, written as mig-parted config files (YAML, or mig-parted's JSON).
//!
//! Export counts compute instances as mig-parted does (`"1c.3g.20gb": 3` is one 3g.20gb GPU
//! instance with three 1-slice compute instances) and says on stderr what its format cannot hold.

use std::collections::BTreeMap;

use anyhow::Context as _;
use tessera_gpu::view::{GpuView, node_view};
use tessera_mig::layout::device_type_name;
use tessera_migparted::ExportDevice;

use super::human;
use crate::cli::{ExportArgs, ExportFormat, Global};
use crate::node;

pub fn export(global: &Global, args: &ExportArgs) -> anyhow::Result<()> {
    let config_name = args.config_label.as_str();
    let node = node::open(global)?;
    let views = node_view(node.backend())?;
    let mut devices: Vec<ExportDevice> = Vec::with_capacity(views.len());
    for v in &views {
        let (device_types, notes) = exported_device_types(v);
        for note in notes {
            eprintln!("tessera: GPU {}: {note}", v.device.index);
        }
        devices.push(ExportDevice { index: v.device.index, mig_enabled: v.mig.current, device_types });
    }
    match export_format(global, args) {
        ExportFormat::Yaml => print!("{}", tessera_migparted::export(&devices, config_name)),
        ExportFormat::Json => println!("{}", tessera_migparted::export_config(&devices, config_name).to_json()),
    }
    Ok(())
}

/// A GPU's device types as mig-parted's export counts them (every compute instance by its own
/// type: three 1-slice compute instances in a 3g.20gb are `"1c.3g.20gb": 3`), and what the export
/// cannot say: a GPU instance with no compute instance (left out: mig-parted's format has no
/// name for it) and GPU instances that mig-parted's grouping would not make again of the counts.
fn exported_device_types(v: &GpuView) -> (Vec<(String, u32)>, Vec<String>) {
    use tessera_mig::ComputeShape;
    use tessera_mig::layout::shape_type_name;

    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    let mut notes = Vec::new();
    let mut gis: Vec<(&tessera_mig::Profile, Vec<u8>)> = Vec::new();
    if !v.mig.current {
        return (Vec::new(), notes);
    }
    for i in &v.instances {
        if i.compute_instances.is_empty() {
            notes.push(format!(
                "{}@{} (GPU instance {}) has no compute instance, which mig-parted's format cannot express; left \
                 out of the export",
                i.profile_name, i.instance.start, i.gpu_instance_id
            ));
            continue;
        }
        let profile = v.model.and_then(|m| m.profile_by_id(i.instance.profile_id));
        let names: Vec<String> = match (profile, i.instance.compute) {
            (Some(p), compute @ (ComputeShape::Full | ComputeShape::Slices(_) | ComputeShape::Split(_))) => {
                tessera_migparted::compute_instance_types(p, compute)
            }
            _ => {
                // A profile the catalog lacks, or compute instances no split describes: each
                // by its size, as mig-parted names them.
                let gi_slices = match (profile, i.instance.compute) {
                    (Some(p), _) => p.compute_slices,
                    (None, ComputeShape::Full) => i.compute_instances.first().map_or(0, |c| c.placement.size),
                    (None, _) => 0,
                };
                i.compute_instances
                    .iter()
                    .map(|c| shape_type_name(&i.profile_name, gi_slices, ComputeShape::Slices(c.placement.size)))
                    .collect()
            }
        };
        for name in names {
            *counts.entry(name).or_insert(0) += 1;
        }
        if let Some(p) = profile {
            gis.push((p, i.compute_instances.iter().map(|c| c.placement.size).collect()));
        }
    }
    if let Some(m) = v.model
        && let Some(made) = tessera_migparted::regrouped(m, &gis)
    {
        let have: Vec<String> =
            v.instances.iter().filter(|i| !i.compute_instances.is_empty()).map(|i| super::device_type(v, i)).collect();
        let made: Vec<String> =
            made.iter().filter_map(|w| m.profile_by_id(w.profile_id).map(|p| device_type_name(p, w.compute))).collect();
        notes.push(format!(
            "its GPU instances ({}) export as compute-instance counts that mig-parted (and `tessera mig apply`) \
             group into other GPU instances ({}); applying this export changes the GPU",
            have.join("; "),
            made.join("; ")
        ));
    }
    (counts.into_iter().collect(), notes)
}

/// `--output-format` (`MIG_PARTED_OUTPUT_FORMAT`), else JSON with `-o json`, else YAML.
fn export_format(global: &Global, args: &ExportArgs) -> ExportFormat {
    args.output_format.unwrap_or(if human(global.output) { ExportFormat::Yaml } else { ExportFormat::Json })
}

/// `generate-config`: the configs the node's GPUs support ([`tessera_migparted::generate_config`]),
/// in YAML, or JSON (`--output-format json`, or `-o json` without it), to `output_file` or stdout.
pub fn generate_config(
    global: &Global,
    output_file: Option<&std::path::Path>,
    format: Option<ExportFormat>,
) -> anyhow::Result<()> {
    let node = node::open(global)?;
    let views = node_view(node.backend())?;
    let file = tessera_migparted::generate_config(&super::config::summaries(&views))?;
    let format = format.unwrap_or(if human(global.output) { ExportFormat::Yaml } else { ExportFormat::Json });
    let text = match format {
        ExportFormat::Yaml => file.to_yaml(),
        ExportFormat::Json => format!("{}\n", file.to_json()),
    };
    match output_file {
        Some(path) => std::fs::write(path, text).with_context(|| format!("writing {}", path.display())),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}
