//! The built-in configs are NVIDIA's `config-default.yaml` and mean on every catalog model what
//! they mean to mig-parted; `device-filter` values with a subsystem id match only their board.

use std::collections::BTreeMap;

use serde::Deserialize;
use tessera_mig::{GpuModel, WantedInstance, catalog};
use tessera_migparted::{
    BUILTIN_ORIGIN, ConfigErrorKind, DeviceFilter, DeviceSelector, DeviceSummary, builtin_config, builtin_config_yaml,
    parse, resolve, resolve_node,
};

/// NVIDIA's file, as the crate embeds it.
const NVIDIA_FILE: &str = include_str!("../data/nvidia-config-default.yaml");

// ---------------------------------------------------------------------------------------------
// An independent reading of NVIDIA's file (serde structs, not Tessera's parser) and of
// mig-parted's selection: `api/spec/v1/helpers.go` (MatchesDeviceFilter, MatchesDevices) and
// `pkg/types/device.go` (DeviceID.Matches), then each device type looked up by its exact name.

#[derive(Deserialize)]
struct NvidiaFile {
    version: String,
    #[serde(rename = "mig-configs")]
    mig_configs: BTreeMap<String, Vec<NvidiaEntry>>,
}

#[derive(Deserialize)]
struct NvidiaEntry {
    #[serde(rename = "device-filter", default)]
    device_filter: Option<OneOrMany>,
    devices: Devices,
    #[serde(rename = "mig-enabled")]
    mig_enabled: bool,
    #[serde(rename = "mig-devices", default)]
    mig_devices: BTreeMap<String, u32>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Devices {
    All(String),
    Indices(Vec<u32>),
}

/// A GPU as mig-parted's `util.GetGPUDeviceIDs` sees it.
#[derive(Clone, Copy)]
struct Gpu {
    index: u32,
    device: u16,
    subsystem: u32,
    model: &'static GpuModel,
}

/// `0xDDDDVVVV[:0xSSSSWWWW]` against a GPU, as `DeviceID.Matches`.
fn filter_matches(filter: &str, gpu: &Gpu) -> bool {
    let hex = |s: &str| u32::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
    let (primary, subsystem) = match filter.split_once(':') {
        Some((p, s)) => (p, Some(hex(s))),
        None => (filter, None),
    };
    hex(primary) == (u32::from(gpu.device) << 16 | 0x10DE) && subsystem.is_none_or(|s| s == gpu.subsystem)
}

fn entry_selects(entry: &NvidiaEntry, gpu: &Gpu) -> bool {
    let filters: Vec<&str> = match &entry.device_filter {
        None => Vec::new(),
        Some(OneOrMany::One(s)) if s.is_empty() => Vec::new(),
        Some(OneOrMany::One(s)) => vec![s],
        Some(OneOrMany::Many(v)) => v.iter().map(String::as_str).collect(),
    };
    let by_filter = filters.is_empty() || filters.iter().any(|f| filter_matches(f, gpu));
    let by_index = match &entry.devices {
        Devices::All(s) => s == "all",
        Devices::Indices(list) => list.contains(&gpu.index),
    };
    by_filter && by_index
}

/// What mig-parted does with one GPU under one config.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expected {
    /// No entry selects it (apply leaves it alone, assert fails on it).
    Unmatched,
    /// A device type the GPU's model does not have: mig-parted fails the config.
    NoSuchProfile(String),
    /// MIG on or off with these GPU instances (whole compute), sorted.
    Target { mig_enabled: bool, wanted: Vec<WantedInstance> },
}

fn expected(entries: &[NvidiaEntry], gpu: &Gpu) -> Expected {
    let selecting: Vec<&NvidiaEntry> = entries.iter().filter(|e| entry_selects(e, gpu)).collect();
    let [entry] = selecting[..] else {
        assert!(selecting.is_empty(), "NVIDIA's file selects GPU {} twice", gpu.index);
        return Expected::Unmatched;
    };
    let mut wanted = Vec::new();
    if entry.mig_enabled {
        for (name, count) in &entry.mig_devices {
            let Some(profile) = gpu.model.profiles.iter().find(|p| p.name == *name) else {
                return Expected::NoSuchProfile(name.clone());
            };
            wanted.extend(std::iter::repeat_n(WantedInstance::new(profile.id), *count as usize));
        }
    }
    wanted.sort();
    Expected::Target { mig_enabled: entry.mig_enabled, wanted }
}

/// Whether the config is meant for the model: an entry names one of its device ids, or a
/// `devices: all` entry without a filter asks only for profiles the model has.
fn meant_for(entries: &[NvidiaEntry], model: &'static GpuModel) -> bool {
    entries.iter().any(|e| {
        let ids: Vec<&str> = match &e.device_filter {
            Some(OneOrMany::One(s)) => vec![s.as_str()],
            Some(OneOrMany::Many(v)) => v.iter().map(String::as_str).collect(),
            None => Vec::new(),
        };
        if ids.is_empty() {
            e.mig_enabled
                && !e.mig_devices.is_empty()
                && e.mig_devices.keys().all(|n| model.profiles.iter().any(|p| p.name == *n))
        } else {
            model
                .pci_device_id_values()
                .any(|d| ids.iter().any(|f| filter_matches(f, &Gpu { index: 0, device: d, subsystem: 0, model })))
        }
    })
}

fn node_of(model: &'static GpuModel) -> Vec<Gpu> {
    model.pci_device_id_values().zip(0..).map(|(device, index)| Gpu { index, device, subsystem: 0, model }).collect()
}

fn summaries(gpus: &[Gpu]) -> Vec<DeviceSummary> {
    gpus.iter()
        .map(|g| DeviceSummary {
            index: g.index,
            pci_device_id: g.device,
            pci_subsystem_id: g.subsystem,
            model: Some(g.model),
        })
        .collect()
}

/// For every catalog model with PCI ids (one GPU per device id) and every config of NVIDIA's
/// file: Tessera's built-in resolves to what mig-parted with NVIDIA's file does, refusing where it
/// fails; and every config meant for a model is feasible on it.
#[test]
fn builtin_configs_mean_what_nvidia_file_means_on_every_model() {
    let nvidia: NvidiaFile = serde_saphyr::from_str(NVIDIA_FILE).unwrap();
    assert_eq!(nvidia.version, "v1");
    let builtin = builtin_config();
    assert_eq!(
        builtin.config_names(),
        nvidia.mig_configs.keys().map(String::as_str).collect::<Vec<_>>(),
        "the built-in configs are NVIDIA's"
    );
    let (mut combinations, mut meant, mut applicable, mut refused, mut unselected) = (0, 0, 0, 0, 0);
    let mut problems = Vec::new();
    for model in catalog().models.iter().filter(|m| m.pci_device_id_values().next().is_some()) {
        let gpus = node_of(model);
        let node = summaries(&gpus);
        for (name, entries) in &nvidia.mig_configs {
            combinations += 1;
            let want: Vec<Expected> = gpus.iter().map(|g| expected(entries, g)).collect();
            let got = resolve_node(&builtin, name, &node);
            let what = format!("{name} on {} ({:?})", model.name, model.pci_device_ids);
            if let Some(Expected::NoSuchProfile(profile)) =
                want.iter().find(|w| matches!(w, Expected::NoSuchProfile(_)))
            {
                refused += 1;
                match got {
                    Err(e) if matches!(*e.kind, ConfigErrorKind::UnknownProfile { .. }) => {}
                    Err(e) => {
                        problems.push(format!("{what}: mig-parted fails ('{profile}' is not a profile), Tessera: {e}"))
                    }
                    Ok(r) => {
                        let targets: Vec<(u32, usize)> = r.targets.iter().map(|t| (t.index, t.wanted.len())).collect();
                        problems.push(format!(
                            "{what}: mig-parted fails ('{profile}' is not a profile), Tessera applies (GPU, instances) {targets:?}"
                        ));
                    }
                }
                continue;
            }
            let resolution = match got {
                Ok(r) => r,
                Err(e) => {
                    problems.push(format!("{what}: mig-parted applies {want:?}, Tessera refuses: {e}"));
                    continue;
                }
            };
            let want_unmatched: Vec<u32> =
                gpus.iter().zip(&want).filter(|(_, w)| **w == Expected::Unmatched).map(|(g, _)| g.index).collect();
            if resolution.unmatched != want_unmatched {
                problems.push(format!("{what}: unmatched {:?}, mig-parted {want_unmatched:?}", resolution.unmatched));
            }
            let got_targets: BTreeMap<u32, Expected> = resolution
                .targets
                .iter()
                .map(|t| {
                    let mut wanted = t.wanted.clone();
                    wanted.sort();
                    (t.index, Expected::Target { mig_enabled: t.mig_enabled, wanted })
                })
                .collect();
            let want_targets: BTreeMap<u32, Expected> = gpus
                .iter()
                .zip(&want)
                .filter(|(_, w)| **w != Expected::Unmatched)
                .map(|(g, w)| (g.index, w.clone()))
                .collect();
            if got_targets != want_targets {
                problems.push(format!("{what}: Tessera {got_targets:?}, mig-parted {want_targets:?}"));
            }
            if want_targets.is_empty() {
                unselected += 1;
            } else {
                applicable += 1;
            }
            if meant_for(entries, model) {
                meant += 1;
                if want_targets.is_empty() {
                    problems.push(format!("{what}: meant for the model but selects none of its GPUs"));
                }
            }
        }
    }
    println!(
        "{combinations} (model, config) combinations: {applicable} applicable ({meant} meant for the model, all \
         feasible), {refused} refused (a device type the model lacks), {unselected} selecting no GPU of the model"
    );
    assert!(problems.is_empty(), "{} disagreements:\n{}", problems.len(), problems.join("\n"));
    assert_eq!(combinations, applicable + refused + unselected);
    assert!(meant > 60 && refused > 500, "{meant} meant, {refused} refused");
}

#[test]
fn builtin_yaml_is_nvidia_file_with_a_header() {
    let text = builtin_config_yaml();
    assert_eq!(parse(text, BUILTIN_ORIGIN).unwrap(), builtin_config());
    let header_end = text.find("version: v1\n").unwrap();
    let header = &text[..header_end];
    assert!(header.lines().all(|l| l.starts_with('#')), "{header}");
    for fact in ["219e780dc4a5", "db0bb63ec534", "Apache License, Version 2.0", "default-mig-parted-config"] {
        assert!(header.contains(fact), "the header names {fact}");
    }
    assert_eq!(builtin_config().configs.len(), 81);
}

/// The cases the built-ins used to get wrong: a profile the GPU lacks is an error, and the
/// configs of newer boards create their instances.
#[test]
fn builtin_configs_behave_as_nvidia_file_on_named_boards() {
    let file = builtin_config();
    let node = |model: &str, device: u16| {
        let model = catalog().model(model).unwrap();
        summaries(&[Gpu { index: 0, device, subsystem: 0, model }])
    };
    let e = resolve(&file, "all-1g.5gb", &node("H100-80GB", 0x2330)).unwrap_err();
    assert!(matches!(*e.kind, ConfigErrorKind::UnknownProfile { .. }), "{e}");
    assert_eq!(e.origin, BUILTIN_ORIGIN);
    for (config, model, device, instances) in [
        ("all-1g.24gb", "RTX-PRO-6000", 0x2BB5, 4),
        ("all-1g.18gb.me", "GH200-144GB", 0x2348, 1),
        ("all-1g.23gb.me", "GB200-186GB", 0x2941, 1),
        ("all-1g.24gb.me", "RTX-PRO-6000", 0x2BB5, 1),
        ("all-1g.10gb", "A100-40GB", 0x20B0, 4),
        ("all-1g.10gb", "H100-80GB", 0x2330, 7),
    ] {
        let targets = resolve(&file, config, &node(model, device)).unwrap_or_else(|e| panic!("{config}: {e}"));
        assert_eq!(targets.len(), 1, "{config} on {model}");
        assert_eq!(targets[0].wanted.len(), instances, "{config} on {model}");
    }
}

#[test]
fn builtin_errors_point_into_the_builtin_text() {
    let e = resolve(&builtin_config(), "all-balance", &[]).unwrap_err();
    assert_eq!(e.origin, BUILTIN_ORIGIN);
    assert!(e.message.contains("did you mean 'all-balanced'?"), "{e}");
    assert_eq!((e.line, e.column), (17, 1), "the 'mig-configs' key below the header");
    let base = &builtin_config().configs["all-disabled"].entries;
    assert_eq!((base.len(), &base[0].devices, base[0].mig_enabled), (1, &DeviceSelector::All, false));
}

// ---------------------------------------------------------------------------------------------
// Subsystem-id device filters (mig-parted PR #435).

const BOARDS: &str = r#"version: v1
mig-configs:
  by-board:
    - device-filter: "0x233010DE:0x16C110DE"
      devices: all
      mig-enabled: true
      mig-devices:
        "1g.10gb": 7
    - device-filter: ["0x233010DE:0x16C010DE", "0x20B010DE"]
      devices: all
      mig-enabled: true
      mig-devices:
        "3g.40gb": 2
"#;

#[test]
fn a_filter_with_a_subsystem_matches_only_that_board() {
    let file = parse(BOARDS, "boards.yaml").unwrap();
    let entries = &file.configs["by-board"].entries;
    assert_eq!(entries[0].device_filter, vec![DeviceFilter { device: 0x2330, subsystem: Some(0x16C1_10DE) }]);
    let h100 = catalog().model("H100-80GB").unwrap();
    let gpu = |index, subsystem| Gpu { index, device: 0x2330, subsystem, model: h100 };
    // Boards 16C1 and 16C0 of one device id, another vendor's board, and one whose subsystem
    // NVML did not give.
    let node = summaries(&[gpu(0, 0x16C1_10DE), gpu(1, 0x16C0_10DE), gpu(2, 0x16C1_1028), gpu(3, 0)]);
    let r = resolve_node(&file, "by-board", &node).unwrap();
    let by_index: Vec<(u32, usize)> = r.targets.iter().map(|t| (t.index, t.wanted.len())).collect();
    assert_eq!(by_index, [(0, 7), (1, 2)]);
    assert_eq!(r.unmatched, [2, 3]);
    // Written back as read.
    let text = file.to_yaml();
    assert!(text.contains("device-filter: [\"0x233010DE:0x16C110DE\"]"), "{text}");
    let again = parse(&text, "again.yaml").unwrap();
    let filters = |f: &tessera_migparted::MigConfigFile| -> Vec<Vec<DeviceFilter>> {
        f.configs["by-board"].entries.iter().map(|e| e.device_filter.clone()).collect()
    };
    assert_eq!(filters(&again), filters(&file));
}

#[test]
fn malformed_subsystem_filters_are_refused_where_written() {
    for (filter, column, says) in [
        ("0x233010DE:0x16C110DE:0x1", 22, "has 2 ':'"),
        ("0x233010DE:16C1", 22, "subsystem id '16C1'"),
        ("0x233010DE:", 22, "subsystem id ''"),
        ("0x233010DG:0x16C110DE", 22, "is not a PCI id"),
    ] {
        let text = BOARDS.replace("\"0x233010DE:0x16C110DE\"", &format!("\"{filter}\""));
        let e = parse(&text, "boards.yaml").unwrap_err();
        assert_eq!((e.line, e.column), (4, column), "{filter}: {e}");
        assert!(e.message.contains(says) && e.message.contains(filter), "{filter}: {e}");
    }
    let text = BOARDS.replace("\"0x20B010DE\"", "\"0x20B010DE::\"");
    let e = parse(&text, "boards.yaml").unwrap_err();
    assert_eq!((e.line, e.column), (9, 48), "{e}");
}

/// The catalog's own named configs (read from NVIDIA's file when the catalog was made) agree with
/// NVIDIA's file on every device id, except where the catalog knows a device id that NVIDIA's
/// filtered entries leave out: there `-c` selects no GPU, with mig-parted and Tessera alike.
/// These are listed so that a new disagreement is seen.
#[test]
fn catalog_named_configs_agree_with_nvidia_file() {
    let nvidia: NvidiaFile = serde_saphyr::from_str(NVIDIA_FILE).unwrap();
    let mut left_out = Vec::new();
    for model in catalog().models.iter().filter(|m| m.pci_device_id_values().next().is_some()) {
        for (name, devices) in &model.named_configs {
            let entries = &nvidia.mig_configs[name];
            let mut wanted: Vec<WantedInstance> = devices
                .iter()
                .flat_map(|(p, c)| {
                    let id = model.profiles.iter().find(|q| q.name == *p).unwrap().id;
                    std::iter::repeat_n(WantedInstance::new(id), *c as usize)
                })
                .collect();
            wanted.sort();
            for gpu in node_of(model) {
                match expected(entries, &gpu) {
                    Expected::Unmatched => left_out.push(format!("{name} 0x{:04X} {}", gpu.device, model.name)),
                    w => assert_eq!(
                        w,
                        Expected::Target { mig_enabled: true, wanted: wanted.clone() },
                        "{name} on {}",
                        model.name
                    ),
                }
            }
        }
    }
    assert_eq!(
        left_out,
        [
            "all-balanced 0x2339 H100-94GB",
            "all-1g.35gb 0x233B H200-141GB",
            "all-balanced 0x2909 B200-180GB",
            "all-1g.35gb 0x31C3 GB300-278GB",
            "all-balanced 0x31C3 GB300-278GB",
            "all-balanced 0x2BB1 RTX-PRO-6000",
            "all-balanced 0x2BB4 RTX-PRO-6000",
        ]
    );
}
