//! What a DRA claim asks of this node, as plain values: the devices the scheduler allocated
//! (`ResourceClaim.status.allocation`), which of them are this driver's, and the opaque
//! configuration that selects how they are shared.
//!
//! The kubelet's `NodePrepareResources` names a claim only (namespace, name, UID); the shell
//! reads its allocation from the API server into a [`ClaimAllocation`], and everything after
//! that is decided here: [`device_target`] maps a published device name back to a GPU and a
//! placement, and [`claim_sharing`] reads the opaque configuration (class first, then the
//! claim's own, the last that applies winning, as the DRA API orders them).
//!
//! The opaque configuration follows NVIDIA's driver's shape so a claim written for one reads
//! naturally for the other:
//!
//! ```yaml
//! apiVersion: gpu.tessera.dev/v1
//! kind: MigDeviceConfig            # or GpuConfig
//! sharing:
//!   strategy: MPS                  # Exclusive (default) | TimeSlicing | MPS
//!   mpsConfig:
//!     defaultActiveThreadPercentage: 50
//!     defaultPinnedDeviceMemoryLimit: 10Gi
//! ```

use serde::{Deserialize, Serialize};
use tessera_mig::GpuModel;

use crate::dra::{DraGpu, profile_label};

/// The API group of the driver's opaque configuration.
pub const CONFIG_API_VERSION: &str = "gpu.tessera.dev/v1";

/// The claim the kubelet names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClaimRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl std::fmt::Display for ClaimRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} ({})", self.namespace, self.name, self.uid)
    }
}

/// One allocated device (`status.allocation.devices.results[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocatedDevice {
    /// The request it satisfies (`<request>` or `<request>/<subrequest>`).
    pub request: String,
    pub driver: String,
    pub pool: String,
    pub device: String,
    /// Set when the device allows several allocations (consumable capacity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_id: Option<String>,
}

/// Where a configuration came from; claim configuration overrides class configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigSource {
    FromClass,
    FromClaim,
}

/// One opaque configuration entry (`status.allocation.devices.config[]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimConfig {
    pub source: ConfigSource,
    /// The requests it applies to; empty: all of them.
    pub requests: Vec<String>,
    /// The driver it is for (others' are ignored).
    pub driver: String,
    /// `opaque.parameters`, as JSON.
    pub parameters: serde_json::Value,
}

/// A claim's allocation as the API server holds it, and who will use it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ClaimAllocation {
    pub devices: Vec<AllocatedDevice>,
    pub config: Vec<ClaimConfig>,
    /// The user the reserving pod's containers run as (`securityContext.runAsUser`), when the
    /// pod says; an MPS control daemon for the claim runs as this user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_user: Option<u32>,
}

/// What a published device name stands for on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceTarget {
    /// `gpu-<i>`: the whole GPU (on a MIG GPU: its full-size instance).
    WholeGpu { gpu: u32 },
    /// `gpu-<i>-<profile>-p<start>`: one GPU instance at one placement.
    Mig { gpu: u32, profile_id: u32, start: u8 },
}

impl DeviceTarget {
    pub fn gpu(&self) -> u32 {
        match *self {
            DeviceTarget::WholeGpu { gpu } | DeviceTarget::Mig { gpu, .. } => gpu,
        }
    }
}

/// Why a claim cannot be prepared as allocated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// A device name this node does not publish.
    #[error("device '{device}' is not a device of this node's pool")]
    UnknownDevice { device: String },
    /// An opaque configuration for this driver that cannot be read.
    #[error("config[{index}] ({from:?}): {problem}")]
    BadConfig { index: usize, from: ConfigSource, problem: String },
}

/// The GPU and placement a published device name stands for, on `gpus` (the names
/// [`crate::dra::resource_slices`] gives: `gpu-<i>` and `gpu-<i>-<profile label>-p<start>`).
pub fn device_target(name: &str, gpus: &[DraGpu]) -> Result<DeviceTarget, ClaimError> {
    let unknown = || ClaimError::UnknownDevice { device: name.to_string() };
    let rest = name.strip_prefix("gpu-").ok_or_else(unknown)?;
    let (index, tail) = match rest.split_once('-') {
        Some((i, t)) => (i, Some(t)),
        None => (rest, None),
    };
    let gpu: u32 = index.parse().map_err(|_| unknown())?;
    let g = gpus.iter().find(|g| g.index == gpu).ok_or_else(unknown)?;
    let Some(tail) = tail else { return Ok(DeviceTarget::WholeGpu { gpu }) };
    let (label, start) = tail.rsplit_once("-p").ok_or_else(unknown)?;
    let start: u8 = start.parse().map_err(|_| unknown())?;
    let profile = profile_with_label(g.model, label).ok_or_else(unknown)?;
    if !profile.placements.contains(&start) {
        return Err(unknown());
    }
    Ok(DeviceTarget::Mig { gpu, profile_id: profile.id, start })
}

fn profile_with_label<'m>(model: &'m GpuModel, label: &str) -> Option<&'m tessera_mig::Profile> {
    model.profiles.iter().find(|p| profile_label(&p.name) == label)
}

/// How a claim's device is shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ClaimSharing {
    /// The claim's pods alone, no sharing mechanism.
    #[default]
    Exclusive,
    /// The claim's containers take turns (the driver's default time slice).
    TimeSlicing,
    /// An MPS control daemon for the claim, with these defaults.
    Mps {
        /// `set_default_active_thread_percentage` (1-100).
        active_thread_pct: Option<u8>,
        /// `set_default_device_pinned_mem_limit`, MiB.
        pinned_mem_mib: Option<u64>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct OpaqueConfig {
    api_version: String,
    kind: String,
    #[serde(default)]
    sharing: Option<OpaqueSharing>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct OpaqueSharing {
    strategy: String,
    #[serde(default)]
    time_slicing_config: Option<serde_json::Value>,
    #[serde(default)]
    mps_config: Option<OpaqueMps>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct OpaqueMps {
    #[serde(default)]
    default_active_thread_percentage: Option<i64>,
    #[serde(default)]
    default_pinned_device_memory_limit: Option<String>,
}

/// The sharing `request` of a claim gets from its allocation's configuration for `driver`:
/// class configuration first, then the claim's, in order, the last that applies to the request
/// winning; none: exclusive. Another driver's configuration is not read.
pub fn claim_sharing(configs: &[ClaimConfig], driver: &str, request: &str) -> Result<ClaimSharing, ClaimError> {
    let mut ordered: Vec<(usize, &ClaimConfig)> = configs.iter().enumerate().collect();
    ordered.sort_by_key(|(i, c)| (c.source == ConfigSource::FromClaim, *i));
    let parent = request.split('/').next().unwrap_or(request);
    let mut sharing = ClaimSharing::Exclusive;
    for (index, c) in ordered {
        if c.driver != driver {
            continue;
        }
        if !c.requests.is_empty() && !c.requests.iter().any(|r| r == request || r == parent) {
            continue;
        }
        sharing =
            parse_sharing(&c.parameters).map_err(|problem| ClaimError::BadConfig { index, from: c.source, problem })?;
    }
    Ok(sharing)
}

/// One opaque configuration's sharing; the problem names the field.
pub fn parse_sharing(parameters: &serde_json::Value) -> Result<ClaimSharing, String> {
    let config: OpaqueConfig = serde_json::from_value(parameters.clone()).map_err(|e| format!("parameters: {e}"))?;
    if config.api_version != CONFIG_API_VERSION {
        return Err(format!("apiVersion: '{}' is not {CONFIG_API_VERSION}", config.api_version));
    }
    if config.kind != "MigDeviceConfig" && config.kind != "GpuConfig" {
        return Err(format!("kind: '{}' is neither MigDeviceConfig nor GpuConfig", config.kind));
    }
    let Some(sharing) = config.sharing else { return Ok(ClaimSharing::Exclusive) };
    match sharing.strategy.as_str() {
        "Exclusive" | "TimeSlicing" if sharing.mps_config.is_some() => {
            Err(format!("sharing.mpsConfig: given with strategy {}, not MPS", sharing.strategy))
        }
        "Exclusive" => Ok(ClaimSharing::Exclusive),
        "TimeSlicing" => Ok(ClaimSharing::TimeSlicing),
        "MPS" if sharing.time_slicing_config.is_some() => {
            Err("sharing.timeSlicingConfig: given with strategy MPS".to_string())
        }
        "MPS" => {
            let mps = sharing.mps_config.unwrap_or(OpaqueMps {
                default_active_thread_percentage: None,
                default_pinned_device_memory_limit: None,
            });
            let active_thread_pct = match mps.default_active_thread_percentage {
                None => None,
                Some(p) if (1..=100).contains(&p) => u8::try_from(p).ok(),
                Some(p) => {
                    return Err(format!(
                        "sharing.mpsConfig.defaultActiveThreadPercentage: {p} is not between 1 and 100"
                    ));
                }
            };
            let pinned_mem_mib = match mps.default_pinned_device_memory_limit {
                None => None,
                Some(q) => Some(
                    quantity_mib(&q)
                        .map_err(|e| format!("sharing.mpsConfig.defaultPinnedDeviceMemoryLimit: '{q}' {e}"))?,
                ),
            };
            Ok(ClaimSharing::Mps { active_thread_pct, pinned_mem_mib })
        }
        other => Err(format!("sharing.strategy: '{other}' is not Exclusive, TimeSlicing or MPS")),
    }
}

/// A Kubernetes memory quantity (`10Gi`, `512Mi`, `1G`, `1500M`, bytes) in whole MiB, above 0
/// ([`crate::quantity::parse_quantity`] reads it).
fn quantity_mib(q: &str) -> Result<u64, String> {
    let nano = crate::quantity::parse_quantity(q).map_err(|e| format!("is not a quantity: {}", e.reason))?;
    let mib = nano / 1_000_000_000 / (1 << 20);
    if nano < 0 {
        return Err("is negative".to_string());
    }
    if mib == 0 {
        return Err("is below 1 MiB".to_string());
    }
    u64::try_from(mib).map_err(|_| "is too large".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(source: ConfigSource, requests: &[&str], parameters: serde_json::Value) -> ClaimConfig {
        ClaimConfig {
            source,
            requests: requests.iter().map(|s| s.to_string()).collect(),
            driver: "gpu.tessera.dev".into(),
            parameters,
        }
    }

    fn mps(pct: i64) -> serde_json::Value {
        json!({"apiVersion": CONFIG_API_VERSION, "kind": "MigDeviceConfig",
               "sharing": {"strategy": "MPS", "mpsConfig": {"defaultActiveThreadPercentage": pct,
                           "defaultPinnedDeviceMemoryLimit": "10Gi"}}})
    }

    #[test]
    fn claim_configuration_overrides_class_configuration_per_request() {
        let ts = json!({"apiVersion": CONFIG_API_VERSION, "kind": "GpuConfig", "sharing": {"strategy": "TimeSlicing"}});
        let configs = vec![cfg(ConfigSource::FromClaim, &["a"], mps(50)), cfg(ConfigSource::FromClass, &[], ts)];
        let d = "gpu.tessera.dev";
        assert_eq!(
            claim_sharing(&configs, d, "a").unwrap(),
            ClaimSharing::Mps { active_thread_pct: Some(50), pinned_mem_mib: Some(10240) }
        );
        assert_eq!(claim_sharing(&configs, d, "a/sub").unwrap(), claim_sharing(&configs, d, "a").unwrap());
        assert_eq!(claim_sharing(&configs, d, "b").unwrap(), ClaimSharing::TimeSlicing);
        assert_eq!(claim_sharing(&configs, "gpu.nvidia.com", "a").unwrap(), ClaimSharing::Exclusive);
    }

    #[test]
    fn bad_configuration_names_the_entry_and_field() {
        let cases = [
            (json!({"apiVersion": "v9", "kind": "GpuConfig"}), "apiVersion"),
            (json!({"apiVersion": CONFIG_API_VERSION, "kind": "Pod"}), "kind"),
            (mps(0), "defaultActiveThreadPercentage"),
            (mps(101), "defaultActiveThreadPercentage"),
            (
                json!({"apiVersion": CONFIG_API_VERSION, "kind": "GpuConfig", "sharing": {"strategy": "Spatial"}}),
                "sharing.strategy",
            ),
            (
                json!({"apiVersion": CONFIG_API_VERSION, "kind": "GpuConfig",
                       "sharing": {"strategy": "MPS", "mpsConfig": {"defaultPinnedDeviceMemoryLimit": "10Qi"}}}),
                "defaultPinnedDeviceMemoryLimit",
            ),
            (
                json!({"apiVersion": CONFIG_API_VERSION, "kind": "GpuConfig",
                       "sharing": {"strategy": "TimeSlicing", "mpsConfig": {}}}),
                "mpsConfig",
            ),
            (json!({"apiVersion": CONFIG_API_VERSION, "kind": "GpuConfig", "sharng": {}}), "sharng"),
        ];
        for (params, field) in cases {
            let e = claim_sharing(&[cfg(ConfigSource::FromClaim, &[], params.clone())], "gpu.tessera.dev", "r")
                .unwrap_err();
            let text = e.to_string();
            assert!(text.starts_with("config[0] (FromClaim)"), "{text}");
            assert!(text.contains(field), "{params}: {text}");
        }
    }

    #[test]
    fn quantities_in_mib() {
        assert_eq!(quantity_mib("10Gi"), Ok(10240));
        assert_eq!(quantity_mib("512Mi"), Ok(512));
        assert_eq!(quantity_mib("2G"), Ok(1907));
        assert!(quantity_mib("1Ki").is_err());
        assert!(quantity_mib("x").is_err());
    }
}
