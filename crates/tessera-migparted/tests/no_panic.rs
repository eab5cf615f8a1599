//! `parse` and `resolve` never panic on user input, and every error points inside the file.

use proptest::prelude::*;
use tessera_mig::catalog;
use tessera_migparted::{DeviceSummary, parse, resolve};

const VALID: &str = r#"version: v1
mig-configs:
  all-disabled:
    - devices: all
      mig-enabled: false
  custom-config:
    - devices: [0,1]
      mig-enabled: false
    - devices: [2,3]
      device-filter: ["0x20B010DE", "0x233010DE"]
      mig-enabled: true
      mig-devices:
        "1g.10gb": 2
        "1c.3g.40gb": 1
        "3g.20gb": 1
"#;

fn node() -> Vec<DeviceSummary> {
    let a100 = catalog().model("A100-40GB").unwrap();
    let h100 = catalog().model("H100-80GB").unwrap();
    vec![
        DeviceSummary { index: 0, pci_device_id: 0x20B0, pci_subsystem_id: 0, model: Some(a100) },
        DeviceSummary { index: 1, pci_device_id: 0x20B0, pci_subsystem_id: 0, model: Some(a100) },
        DeviceSummary { index: 2, pci_device_id: 0x2330, pci_subsystem_id: 0, model: Some(h100) },
        DeviceSummary { index: 3, pci_device_id: 0x20B0, pci_subsystem_id: 0, model: Some(a100) },
        DeviceSummary { index: 4, pci_device_id: 0x1234, pci_subsystem_id: 0, model: None },
    ]
}

fn check(text: &str) -> Result<(), TestCaseError> {
    let lines = u32::try_from(text.split('\n').count()).unwrap_or(u32::MAX);
    match parse(text, "f.yaml") {
        Err(e) => {
            prop_assert!(e.line >= 1 && e.line <= lines + 1, "{} in {} lines", e, lines);
            prop_assert!(e.column >= 1, "{}", e);
        }
        Ok(file) => {
            for name in file.config_names() {
                if let Err(e) = resolve(&file, name, &node()) {
                    prop_assert!(e.line >= 1 && e.line <= lines + 1, "{}", e);
                    prop_assert!(e.to_string().starts_with("f.yaml:"));
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Byte-level edits of a valid file: deletions, insertions of YAML-significant characters.
    #[test]
    fn edited_files_never_panic(edits in prop::collection::vec((0usize..400, 0usize..12, any::<bool>()), 1..6)) {
        const INSERTS: [&str; 12] = ["\t", " ", "\n", ":", "-", "[", "]", "{", "}", "\"", "&a", "*a"];
        let mut text: Vec<char> = VALID.chars().collect();
        for (at, what, delete) in edits {
            let at = at % (text.len() + 1);
            if delete && at < text.len() {
                text.remove(at);
            } else {
                for (i, c) in INSERTS[what].chars().enumerate() {
                    text.insert(at + i, c);
                }
            }
        }
        let text: String = text.into_iter().collect();
        check(&text)?;
    }

    /// Arbitrary short texts.
    #[test]
    fn arbitrary_text_never_panics(text in "[ -~\t\n]{0,200}") {
        check(&text)?;
    }

    /// Any counts, indices and names in an otherwise valid file.
    #[test]
    fn any_values_never_panic(
        index in any::<i64>(),
        count in any::<i64>(),
        name in "[0-9a-z.+-]{0,12}",
        filter in any::<u32>(),
    ) {
        let text = format!(
            "version: v1\nmig-configs:\n  x:\n    - devices: [{index}]\n      device-filter: \"0x{filter:08X}\"\n      mig-enabled: true\n      mig-devices:\n        \"{name}\": {count}\n"
        );
        check(&text)?;
    }
}
