//! Valid mig-parted files parse to what they say, and apply to a node as mig-parted would.

use tessera_mig::{ComputeShape, WantedInstance, catalog};
use tessera_migparted::{DeviceFilter, DeviceSelector, DeviceSummary, Pos, parse, resolve, resolve_node};

/// The example from mig-parted's README, with a filtered entry and a compute-instance device.
const CUSTOM: &str = r#"version: v1
mig-configs:
  all-disabled:
    - devices: all
      mig-enabled: false

  custom-config:
    - devices: [0,1,2,3]
      mig-enabled: false
    - devices: [4,5]
      mig-enabled: true
      mig-devices:
        "1g.10gb": 2
        "2g.20gb": 1
        "3g.40gb": 1
    - devices: [6,7]
      device-filter: ["0x233010DE", "0x232410DE"]   # H100-80GB
      mig-enabled: true
      mig-devices:
        "1c.3g.40gb": 2
        "7g.80gb": 0
"#;

#[test]
fn parses_the_mig_parted_example() {
    let file = parse(CUSTOM, "custom.yaml").unwrap();
    assert_eq!(file.origin, "custom.yaml");
    assert_eq!(file.version, "v1");
    assert_eq!(file.config_names(), vec!["all-disabled", "custom-config"]);
    assert_eq!(file.configs_pos, Pos::new(2, 1));
    let custom = &file.configs["custom-config"];
    assert_eq!(custom.pos, Pos::new(7, 3));
    assert_eq!(custom.entries.len(), 3);
    let [off, mixed, filtered] = &custom.entries[..] else { panic!() };
    assert_eq!(off.devices, DeviceSelector::Indices(vec![0, 1, 2, 3]));
    assert_eq!(off.pos, Pos::new(8, 7));
    assert_eq!(off.devices_pos, Pos::new(8, 16));
    assert!(!off.mig_enabled && off.mig_devices.is_empty());
    assert_eq!(
        mixed.mig_devices,
        vec![("1g.10gb".to_string(), 2), ("2g.20gb".to_string(), 1), ("3g.40gb".to_string(), 1)]
    );
    assert_eq!(mixed.mig_devices_pos, vec![Pos::new(13, 9), Pos::new(14, 9), Pos::new(15, 9)]);
    assert_eq!(filtered.device_filter, vec![DeviceFilter::device(0x2330), DeviceFilter::device(0x2324)]);
    assert_eq!(filtered.device_filter_pos, vec![Pos::new(17, 23), Pos::new(17, 37)]);
    assert_eq!(filtered.mig_devices, vec![("1c.3g.40gb".to_string(), 2), ("7g.80gb".to_string(), 0)]);
}

#[test]
fn resolves_the_example_on_an_h100_node() {
    let file = parse(CUSTOM, "custom.yaml").unwrap();
    let h100 = catalog().model("H100-80GB").unwrap();
    let node: Vec<DeviceSummary> = (0..8)
        .map(|index| DeviceSummary { index, pci_device_id: 0x2330, pci_subsystem_id: 0, model: Some(h100) })
        .collect();
    let targets = resolve(&file, "custom-config", &node).unwrap();
    assert_eq!(targets.iter().map(|t| t.index).collect::<Vec<_>>(), (0..8).collect::<Vec<_>>());
    assert!(targets[..4].iter().all(|t| !t.mig_enabled && t.wanted.is_empty() && t.entry == Pos::new(8, 7)));
    let id = |name: &str| h100.profile(name).unwrap().id;
    let mut mixed = vec![
        WantedInstance::new(id("1g.10gb")),
        WantedInstance::new(id("1g.10gb")),
        WantedInstance::new(id("2g.20gb")),
        WantedInstance::new(id("3g.40gb")),
    ];
    mixed.sort();
    assert_eq!(targets[4].wanted, mixed);
    assert_eq!(targets[4].entry, Pos::new(10, 7));
    // `"1c.3g.40gb": 2` is two compute instances in one 3g.40gb, as mig-parted groups them.
    let split = ComputeShape::Split(tessera_mig::layout::CiSizes::new(&[1, 1]).unwrap());
    assert_eq!(targets[7].wanted, vec![WantedInstance { profile_id: id("3g.40gb"), compute: split }]);
    assert_eq!(targets[7].model.map(|m| m.name.as_str()), Some("H100-80GB"));
}

#[test]
fn filtered_entries_leave_other_models_alone() {
    let file = parse(CUSTOM, "custom.yaml").unwrap();
    let a100 = catalog().model("A100-80GB").unwrap();
    let h100 = catalog().model("H100-80GB").unwrap();
    let node = vec![
        DeviceSummary { index: 0, pci_device_id: 0x20B2, pci_subsystem_id: 0, model: Some(a100) },
        DeviceSummary { index: 1, pci_device_id: 0x20B2, pci_subsystem_id: 0, model: Some(a100) },
        DeviceSummary { index: 2, pci_device_id: 0x20B2, pci_subsystem_id: 0, model: Some(a100) },
        DeviceSummary { index: 3, pci_device_id: 0x20B2, pci_subsystem_id: 0, model: Some(a100) },
        DeviceSummary { index: 4, pci_device_id: 0x20B2, pci_subsystem_id: 0, model: Some(a100) },
        DeviceSummary { index: 5, pci_device_id: 0x20B2, pci_subsystem_id: 0, model: Some(a100) },
        DeviceSummary { index: 6, pci_device_id: 0x20B2, pci_subsystem_id: 0, model: Some(a100) },
        DeviceSummary { index: 7, pci_device_id: 0x2324, pci_subsystem_id: 0, model: Some(h100) },
    ];
    let targets = resolve(&file, "custom-config", &node).unwrap();
    // GPU 6 is an A100: the H100-only entry does not apply, so it is left alone.
    assert_eq!(targets.iter().map(|t| t.index).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4, 5, 7]);
}

#[test]
fn one_c_in_a_4g_is_valid_on_a100() {
    let text = "version: v1\nmig-configs:\n  ci:\n    - devices: all\n      mig-enabled: true\n      mig-devices:\n        \"1c.4g.20gb\": 1\n        \"2c.3g.20gb\": 1\n";
    let file = parse(text, "ci.yaml").unwrap();
    let a100 = catalog().model("A100-40GB").unwrap();
    let node = [DeviceSummary { index: 0, pci_device_id: 0x20B0, pci_subsystem_id: 0, model: Some(a100) }];
    let targets = resolve(&file, "ci", &node).unwrap();
    let mut want = vec![
        WantedInstance { profile_id: a100.profile("4g.20gb").unwrap().id, compute: ComputeShape::Slices(1) },
        WantedInstance { profile_id: a100.profile("3g.20gb").unwrap().id, compute: ComputeShape::Slices(2) },
    ];
    want.sort();
    assert_eq!(targets[0].wanted, want);
}

#[test]
fn lenient_forms_mig_parted_accepts() {
    // A single-string device filter, `mig-devices: {}` and null with MIG disabled, an empty
    // device list, YAML 1.1 booleans, anchors and aliases.
    let text = r#"version: v1
mig-configs:
  base: &base
    - devices: all
      device-filter: "0x20B010DE"
      mig-enabled: yes
      mig-devices: {}
  off:
    - devices: all
      mig-enabled: false
      mig-devices: {}
  off-null:
    - devices: []
      mig-enabled: false
      mig-devices:
  copy: *base
  123:
    - devices: all
      mig-enabled: false
"#;
    let file = parse(text, "lenient.yaml").unwrap();
    assert_eq!(file.config_names(), vec!["123", "base", "copy", "off", "off-null"]);
    assert_eq!(file.configs["base"].entries[0].device_filter, vec![DeviceFilter::device(0x20B0)]);
    assert!(file.configs["base"].entries[0].mig_enabled);
    assert_eq!(file.configs["copy"].entries[0].device_filter, vec![DeviceFilter::device(0x20B0)]);
    // The copy's entry is where the alias is; its values are where they are written.
    assert_eq!(file.configs["copy"].entries[0].pos, Pos::new(16, 9));
    assert_eq!(file.configs["copy"].entries[0].devices_pos, Pos::new(4, 16));
    assert_eq!(file.configs["off-null"].entries[0].devices, DeviceSelector::Indices(vec![]));
    let a100 = catalog().model("A100-40GB").unwrap();
    let node = [DeviceSummary { index: 0, pci_device_id: 0x20B0, pci_subsystem_id: 0, model: Some(a100) }];
    let t = resolve(&file, "copy", &node).unwrap();
    assert!(t[0].mig_enabled && t[0].wanted.is_empty());
    assert!(resolve(&file, "off-null", &node).unwrap().is_empty());
}

#[test]
fn mig_disabled_on_an_unknown_gpu_is_fine() {
    let file = parse("version: v1\nmig-configs:\n  off:\n    - devices: all\n      mig-enabled: false\n", "x").unwrap();
    let node = [DeviceSummary { index: 0, pci_device_id: 0x1EB8, pci_subsystem_id: 0, model: None }];
    let t = resolve(&file, "off", &node).unwrap();
    assert_eq!(t.len(), 1);
    assert!(!t[0].mig_enabled && t[0].model.is_none());
}

#[test]
fn to_yaml_round_trips() {
    let file = parse(CUSTOM, "custom.yaml").unwrap();
    let again = parse(&file.to_yaml(), "custom.yaml").unwrap();
    assert_eq!(again.config_names(), file.config_names());
    for (name, config) in &file.configs {
        let other = &again.configs[name];
        assert_eq!(config.entries.len(), other.entries.len());
        for (a, b) in config.entries.iter().zip(&other.entries) {
            assert_eq!(
                (&a.devices, &a.device_filter, a.mig_enabled, &a.mig_devices),
                (&b.devices, &b.device_filter, b.mig_enabled, &b.mig_devices)
            );
        }
    }
}

/// mig-parted skips GPU indices the node lacks (one file serves 4- and 8-GPU nodes) and counts
/// the GPUs no entry selects, on which its assert fails: `(name, entries, targets, absent,
/// unmatched)` on a 4-GPU H100 node.
#[test]
fn absent_indices_are_skipped_and_unmatched_gpus_are_named() {
    type Case = (&'static str, &'static str, &'static [u32], &'static [u32], &'static [u32]);
    const CASES: &[Case] = &[
        ("all GPUs", "    - devices: all\n      mig-enabled: false\n", &[0, 1, 2, 3], &[], &[]),
        (
            "an 8-GPU file on a 4-GPU node",
            "    - devices: [0, 1, 2, 3]\n      mig-enabled: false\n    - devices: [4, 5, 6, 7]\n      mig-enabled: true\n      mig-devices: {\"1g.10gb\": 7}\n",
            &[0, 1, 2, 3],
            &[4, 5, 6, 7],
            &[],
        ),
        (
            "some GPUs absent, some unmatched",
            "    - devices: [1, 9]\n      mig-enabled: false\n    - devices: [3, 8, 9]\n      mig-enabled: false\n",
            &[1, 3],
            &[8, 9],
            &[0, 2],
        ),
        ("no GPU selected", "    - devices: [5]\n      mig-enabled: false\n", &[], &[5], &[0, 1, 2, 3]),
        (
            "a filter for another model",
            "    - devices: all\n      device-filter: \"0x20B010DE\"\n      mig-enabled: false\n",
            &[],
            &[],
            &[0, 1, 2, 3],
        ),
    ];
    let h100 = catalog().model("H100-80GB").unwrap();
    let node: Vec<DeviceSummary> = (0..4)
        .map(|index| DeviceSummary { index, pci_device_id: 0x2330, pci_subsystem_id: 0, model: Some(h100) })
        .collect();
    let mut failures = Vec::new();
    for &(name, entries, targets, absent, unmatched) in CASES {
        let file = parse(&format!("version: v1\nmig-configs:\n  c:\n{entries}"), "x.yaml").unwrap();
        match resolve_node(&file, "c", &node) {
            Ok(r) => {
                let got: Vec<u32> = r.targets.iter().map(|t| t.index).collect();
                if (got.as_slice(), r.absent.as_slice(), r.unmatched.as_slice()) != (targets, absent, unmatched) {
                    failures.push(format!(
                        "{name}: targets {got:?} absent {:?} unmatched {:?}, expected {targets:?} {absent:?} {unmatched:?}",
                        r.absent, r.unmatched
                    ));
                }
            }
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Device types written as mig-parted writes them parse; a count of 0 beside a non-zero one is
/// kept (only an all-zero `mig-devices` is refused).
#[test]
fn device_types_mig_parted_accepts_parse() {
    for (key, count) in [
        ("1g.10gb", 1),
        ("1c.3g.40gb", 2),
        ("1g.10gb+me", 1),
        ("1g.10gb-me", 1),
        ("1g.24gb+gfx,me", 1),
        ("7g.80gb", 0),
        ("4g.40gb", 1),
    ] {
        let yaml = format!(
            "version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: true\n      mig-devices:\n        \"{key}\": {count}\n        \"3g.40gb\": 1\n"
        );
        let file = parse(&yaml, "x.yaml").unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(file.configs["a"].entries[0].mig_devices[0], (key.to_string(), count));
    }
    let empty = "version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: true\n      mig-devices: {}\n";
    assert!(parse(empty, "x.yaml").unwrap().configs["a"].entries[0].mig_devices.is_empty());
}
