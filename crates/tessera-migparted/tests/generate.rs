//! `generate_config` gives what mig-parted's `generate-config` (`pkg/mig/builder`) gives for the
//! same GPUs. The expected files are written as mig-parted writes them (gopkg.in/yaml.v2 of its
//! `v1.Spec`), read from its builder and `builder_test.go`.

use tessera_mig::catalog;
use tessera_migparted::{DeviceSummary, GenerateError, generate_config, parse, resolve_node};

fn node(gpus: &[(&str, u16)]) -> Vec<DeviceSummary> {
    gpus.iter()
        .zip(0..)
        .map(|((model, id), index)| DeviceSummary {
            index,
            pci_device_id: *id,
            pci_subsystem_id: 0,
            model: Some(catalog().model(model).unwrap()),
        })
        .collect()
}

/// The generated file equals mig-parted's (compared as parsed, in Tessera's writing), parses
/// back, and every config it holds applies to the node it was generated for: feasibly on each GPU
/// it selects, and the base configs and `all-balanced` on every GPU.
fn check(gpus: &[DeviceSummary], mig_parted: &str) {
    let generated = generate_config(gpus).unwrap();
    let expected = parse(mig_parted, "mig-parted.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(generated.to_yaml(), expected.to_yaml());
    let text = generated.to_yaml();
    let again = parse(&text, "generated.yaml").unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(again.to_yaml(), text);
    for name in generated.config_names() {
        let r = resolve_node(&generated, name, gpus).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!r.targets.is_empty(), "{name} selects no GPU");
        if ["all-disabled", "all-enabled", "all-balanced"].contains(&name) {
            assert!(r.unmatched.is_empty(), "{name} leaves GPUs {:?} alone", r.unmatched);
        }
    }
}

#[test]
fn eight_h100s() {
    let gpus = node(&[("H100-80GB", 0x2330); 8]);
    check(
        &gpus,
        r#"mig-configs:
  all-1g.10gb:
  - devices: all
    mig-enabled: true
    mig-devices:
      1g.10gb: 7
  all-1g.10gb.me:
  - devices: all
    mig-enabled: true
    mig-devices:
      1g.10gb+me: 1
  all-1g.20gb:
  - devices: all
    mig-enabled: true
    mig-devices:
      1g.20gb: 4
  all-2g.20gb:
  - devices: all
    mig-enabled: true
    mig-devices:
      2g.20gb: 3
  all-3g.40gb:
  - devices: all
    mig-enabled: true
    mig-devices:
      3g.40gb: 2
  all-4g.40gb:
  - devices: all
    mig-enabled: true
    mig-devices:
      4g.40gb: 1
  all-7g.80gb:
  - devices: all
    mig-enabled: true
    mig-devices:
      7g.80gb: 1
  all-balanced:
  - devices: all
    mig-enabled: true
    mig-devices:
      1g.10gb: 2
      2g.20gb: 1
      3g.40gb: 1
  all-disabled:
  - devices: all
    mig-enabled: false
    mig-devices: {}
  all-enabled:
  - devices: all
    mig-enabled: true
    mig-devices: {}
version: v1
"#,
    );
}

/// A100-80GB, H100 and A30 on one node: device filters; the A100 and the H100 share profiles with
/// equal maxima, so one entry names both; each device id has its own `all-balanced` entry, the
/// A30's with mig-parted's 4-slice mix.
#[test]
fn a_mixed_node() {
    let gpus = node(&[
        ("A100-80GB", 0x20B5),
        ("A100-80GB", 0x20B5),
        ("H100-80GB", 0x2330),
        ("H100-80GB", 0x2330),
        ("A30-24GB", 0x20B7),
    ]);
    check(
        &gpus,
        r#"mig-configs:
  all-1g.6gb:
  - device-filter: ["0x20B710DE"]
    devices: all
    mig-enabled: true
    mig-devices:
      1g.6gb: 4
  all-1g.6gb.me:
  - device-filter: ["0x20B710DE"]
    devices: all
    mig-enabled: true
    mig-devices:
      1g.6gb+me: 1
  all-1g.10gb:
  - device-filter: ["0x20B510DE", "0x233010DE"]
    devices: all
    mig-enabled: true
    mig-devices:
      1g.10gb: 7
  all-1g.10gb.me:
  - device-filter: ["0x20B510DE", "0x233010DE"]
    devices: all
    mig-enabled: true
    mig-devices:
      1g.10gb+me: 1
  all-1g.20gb:
  - device-filter: ["0x20B510DE", "0x233010DE"]
    devices: all
    mig-enabled: true
    mig-devices:
      1g.20gb: 4
  all-2g.12gb:
  - device-filter: ["0x20B710DE"]
    devices: all
    mig-enabled: true
    mig-devices:
      2g.12gb: 2
  all-2g.12gb.me:
  - device-filter: ["0x20B710DE"]
    devices: all
    mig-enabled: true
    mig-devices:
      2g.12gb+me: 1
  all-2g.20gb:
  - device-filter: ["0x20B510DE", "0x233010DE"]
    devices: all
    mig-enabled: true
    mig-devices:
      2g.20gb: 3
  all-3g.40gb:
  - device-filter: ["0x20B510DE", "0x233010DE"]
    devices: all
    mig-enabled: true
    mig-devices:
      3g.40gb: 2
  all-4g.24gb:
  - device-filter: ["0x20B710DE"]
    devices: all
    mig-enabled: true
    mig-devices:
      4g.24gb: 1
  all-4g.40gb:
  - device-filter: ["0x20B510DE", "0x233010DE"]
    devices: all
    mig-enabled: true
    mig-devices:
      4g.40gb: 1
  all-7g.80gb:
  - device-filter: ["0x20B510DE", "0x233010DE"]
    devices: all
    mig-enabled: true
    mig-devices:
      7g.80gb: 1
  all-balanced:
  - device-filter: ["0x20B510DE"]
    devices: all
    mig-enabled: true
    mig-devices:
      1g.10gb: 2
      2g.20gb: 1
      3g.40gb: 1
  - device-filter: ["0x20B710DE"]
    devices: all
    mig-enabled: true
    mig-devices:
      1g.6gb: 2
      2g.12gb: 1
  - device-filter: ["0x233010DE"]
    devices: all
    mig-enabled: true
    mig-devices:
      1g.10gb: 2
      2g.20gb: 1
      3g.40gb: 1
  all-disabled:
  - devices: all
    mig-enabled: false
    mig-devices: {}
  all-enabled:
  - devices: all
    mig-enabled: true
    mig-devices: {}
version: v1
"#,
    );
}

/// One profile with different maxima on two models: one entry per maximum, ascending
/// (`builder_test.go`, "same profile different max counts creates multiple entries").
#[test]
fn one_profile_with_two_maxima() {
    let gpus = node(&[("H100-80GB", 0x2330), ("A100-40GB", 0x20B0)]);
    let file = generate_config(&gpus).unwrap();
    type Entry = (Vec<String>, Vec<(String, u32)>);
    let entries: Vec<Entry> = file.configs["all-1g.10gb"]
        .entries
        .iter()
        .map(|e| (e.device_filter.iter().map(ToString::to_string).collect(), e.mig_devices.clone()))
        .collect();
    assert_eq!(
        entries,
        [
            (vec!["0x20B010DE".to_string()], vec![("1g.10gb".to_string(), 4)]),
            (vec!["0x233010DE".to_string()], vec![("1g.10gb".to_string(), 7)]),
        ]
    );
}

/// The RTX PRO 6000's attribute profiles become configs of their own (`+` written `.`), and its
/// `all-balanced` is the 4-slice mix of its profiles without attributes.
#[test]
fn attribute_profiles_and_the_four_slice_mix() {
    let file = generate_config(&node(&[("RTX-PRO-6000", 0x2BB5)])).unwrap();
    for (name, device, count) in [
        ("all-1g.24gb.me.all", "1g.24gb+me.all", 1),
        ("all-1g.24gb-me", "1g.24gb-me", 4),
        ("all-4g.96gb.gfx", "4g.96gb+gfx", 1),
    ] {
        assert_eq!(file.configs[name].entries[0].mig_devices, [(device.to_string(), count)], "{name}");
    }
    let balanced = &file.configs["all-balanced"].entries;
    assert_eq!(balanced[0].mig_devices, [("1g.24gb".to_string(), 2), ("2g.48gb".to_string(), 1)]);
}

#[test]
fn a_node_without_mig_capable_gpus_is_refused() {
    let gpus = [DeviceSummary { index: 0, pci_device_id: 0x1EB8, pci_subsystem_id: 0, model: None }];
    let e = generate_config(&gpus).unwrap_err();
    assert_eq!(e, GenerateError::NoMigCapableGpus { gpus: 1, unknown: vec![0x1EB8] });
    assert!(e.to_string().contains("no MIG-capable GPU") && e.to_string().contains("0x1EB8"), "{e}");
}
