//! mig-parted's config file in JSON, as its `export -o json` and `generate-config -o json` write
//! it (Go's `encoding/json` over `api/spec/v1.Spec`): the same field names, order and indents, so
//! tools that read mig-parted's JSON read Tessera's.

use std::collections::BTreeMap;

use crate::spec::{DeviceSelector, MigConfigFile};

impl MigConfigFile {
    /// The file as mig-parted writes it in JSON (`export -o json`, `generate-config -o json`): its
    /// `v1.Spec` with the same field names and order, two-space indents, no final newline.
    pub fn to_json(&self) -> String {
        let file = self;
        #[derive(serde::Serialize)]
        struct Spec<'a> {
            version: &'a str,
            #[serde(rename = "mig-configs")]
            mig_configs: BTreeMap<&'a str, Vec<Entry<'a>>>,
        }
        #[derive(serde::Serialize)]
        struct Entry<'a> {
            #[serde(rename = "device-filter", skip_serializing_if = "Vec::is_empty")]
            device_filter: Vec<String>,
            devices: Devices,
            #[serde(rename = "mig-enabled")]
            mig_enabled: bool,
            #[serde(rename = "mig-devices")]
            mig_devices: BTreeMap<&'a str, u32>,
        }
        #[derive(serde::Serialize)]
        #[serde(untagged)]
        enum Devices {
            All(&'static str),
            Indices(Vec<u32>),
        }
        let spec = Spec {
            version: &file.version,
            mig_configs: file
                .configs
                .iter()
                .map(|(name, config)| {
                    let entries = config
                        .entries
                        .iter()
                        .map(|e| Entry {
                            device_filter: e.device_filter.iter().map(ToString::to_string).collect(),
                            devices: match &e.devices {
                                DeviceSelector::All => Devices::All("all"),
                                DeviceSelector::Indices(list) => Devices::Indices(list.clone()),
                            },
                            mig_enabled: e.mig_enabled,
                            mig_devices: e.mig_devices.iter().map(|(t, n)| (t.as_str(), *n)).collect(),
                        })
                        .collect();
                    (name.as_str(), entries)
                })
                .collect(),
        };
        serde_json::to_string_pretty(&spec).unwrap_or_default()
    }
}
