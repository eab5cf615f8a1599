//! The CDI specification (CDI spec 0.6.0: `cdiVersion`, `kind`, `devices[].name`,
//! `devices[].containerEdits`, common `containerEdits`) for the advertised devices: one CDI device
//! per plugin device ID, with that device's nodes; the control nodes every CUDA container needs
//! are common edits. Serialised as pretty JSON in a fixed field and device order, so the same
//! inventory always gives the same bytes and the plugin rewrites the file only when it changes.

use serde::{Deserialize, Serialize};

use crate::allocation::control_device_nodes;
use crate::inventory::{DeviceNode, Inventory};

/// The CDI spec version written.
pub const CDI_VERSION: &str = "0.6.0";
/// The CDI kind: `tessera.dev/gpu`, not `nvidia.com/gpu`, which `nvidia-ctk cdi generate` writes
/// for the same GPUs; two specs of one kind with one device name would clash in the runtime's
/// registry.
pub const CDI_KIND: &str = "tessera.dev/gpu";

/// A CDI specification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CdiSpec {
    pub cdi_version: String,
    pub kind: String,
    pub devices: Vec<CdiDevice>,
    pub container_edits: ContainerEdits,
}

/// One CDI device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CdiDevice {
    pub name: String,
    pub container_edits: ContainerEdits,
}

/// CDI container edits.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerEdits {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_nodes: Vec<CdiDeviceNode>,
}

/// A CDI device node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CdiDeviceNode {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<String>,
}

impl From<&DeviceNode> for CdiDeviceNode {
    fn from(n: &DeviceNode) -> Self {
        CdiDeviceNode {
            path: n.container_path.clone(),
            host_path: (n.host_path != n.container_path).then(|| n.host_path.clone()),
            permissions: Some(n.permissions.clone()),
        }
    }
}

/// The fully-qualified CDI name of a device: `tessera.dev/gpu=<id>`.
pub fn qualified_name(id: &str) -> String {
    format!("{CDI_KIND}={id}")
}

/// The spec for every advertised device. An inventory without devices gives a spec without
/// devices, which runtimes refuse to load: the plugin removes the file instead
/// ([`CdiSpec::is_empty`]).
pub fn cdi_spec(inventory: &Inventory) -> CdiSpec {
    let mut devices: Vec<CdiDevice> = inventory
        .resources
        .values()
        .flatten()
        .map(|d| CdiDevice {
            name: d.id.clone(),
            container_edits: ContainerEdits {
                env: Vec::new(),
                device_nodes: d.device_nodes.iter().map(Into::into).collect(),
            },
        })
        .collect();
    devices.sort_by(|a, b| a.name.cmp(&b.name));
    CdiSpec {
        cdi_version: CDI_VERSION.to_string(),
        kind: CDI_KIND.to_string(),
        devices,
        container_edits: ContainerEdits {
            env: Vec::new(),
            device_nodes: control_device_nodes().iter().map(Into::into).collect(),
        },
    }
}

impl CdiSpec {
    /// The JSON the spec file holds: pretty, fields and devices in a fixed order, a final newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Whether the spec has no devices.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }
}
