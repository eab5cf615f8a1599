//! Resource names as NVIDIA's device plugin makes them, and the part of its config file that
//! decides them (`version: v1`, `flags.migStrategy`, `flags.plugin.deviceListStrategy`,
//! `sharing.timeSlicing` / `sharing.mps`).
//!
//! NVIDIA's rules (`internal/rm/rm.go` `AddDefaultResourcesToConfig`, `api/config/v1`): every
//! whole GPU is `nvidia.com/gpu`; with `mixed`, a MIG device is `nvidia.com/mig-<profile>` with
//! `+` written `.` (`1g.10gb+me` → `nvidia.com/mig-1g.10gb.me`, `1g.20gb+me.all` →
//! `nvidia.com/mig-1g.20gb.me.all`, `1g.20gb-me` → `nvidia.com/mig-1g.20gb-me`); with `single`
//! every MIG device is `nvidia.com/gpu`. A shared resource renamed by default is `<name>.shared`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The resource-name prefix NVIDIA's plugin uses (`ResourceNamePrefix`).
pub const RESOURCE_PREFIX: &str = "nvidia.com";
/// The suffix of a shared resource renamed by default (`DefaultSharedResourceNameSuffix`).
pub const SHARED_SUFFIX: &str = ".shared";
/// NVIDIA's limit on a fully-qualified resource name (`MaxResourceNameLength`).
pub const MAX_RESOURCE_NAME_LEN: usize = 63;

/// A Kubernetes extended-resource name, `nvidia.com/mig-1g.10gb`: a DNS-subdomain prefix, `/`, and
/// a name that is itself a DNS subdomain, 63 characters at most in all (NVIDIA's limit).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ResourceName(String);

/// Why a text is not a resource name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid resource name '{name}': {reason}")]
pub struct NameError {
    pub name: String,
    pub reason: String,
}

/// How MIG devices are advertised (`flags.migStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MigStrategy {
    /// MIG devices are not advertised; every GPU is `nvidia.com/gpu` (NVIDIA's default).
    #[default]
    None,
    /// Every MIG device is `nvidia.com/gpu`; the node's MIG devices must all be alike.
    Single,
    /// Each MIG profile is its own resource, `nvidia.com/mig-<profile>`.
    Mixed,
}

/// How the plugin names devices to the container runtime (`flags.plugin.deviceListStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DeviceListStrategy {
    /// `NVIDIA_VISIBLE_DEVICES=<uuids>` (NVIDIA's default).
    #[serde(rename = "envvar")]
    EnvVar,
    /// Mounts under `/var/run/nvidia-container-devices/<uuid>`.
    #[serde(rename = "volume-mounts")]
    VolumeMounts,
    /// CDI device names in annotations.
    #[serde(rename = "cdi-annotations")]
    CdiAnnotations,
    /// CDI device names in the CRI `cdi_devices` field.
    #[serde(rename = "cdi-cri")]
    CdiCri,
}

/// Which sharing is active (NVIDIA's `Sharing.SharingStrategy`): MPS when it replicates any
/// resource, else time-slicing when it does, else none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SharingStrategy {
    None,
    TimeSlicing,
    Mps,
}

/// One entry of `sharing.<kind>.resources`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicatedResource {
    pub name: ResourceName,
    /// The name the replicas are advertised under: `<name>.shared` with `renameByDefault`, else
    /// none (NVIDIA's plugin ignores a custom `rename`, and shares every device of the resource
    /// whatever `devices` says; both are read and reported in [`PluginConfig::warnings`]).
    pub rename: Option<ResourceName>,
    /// At least 2.
    pub replicas: u32,
}

/// `sharing.timeSlicing` or `sharing.mps`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReplicatedResources {
    pub rename_by_default: bool,
    /// Refuse a request for more than one replica (default: false for time-slicing, true for MPS).
    pub fail_requests_greater_than_one: bool,
    pub resources: Vec<ReplicatedResource>,
}

/// `sharing`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SharingConfig {
    pub time_slicing: Option<ReplicatedResources>,
    pub mps: Option<ReplicatedResources>,
}

/// The parts of NVIDIA's device-plugin config file that decide names, sharing and allocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginConfig {
    pub mig_strategy: MigStrategy,
    /// Never empty; `[EnvVar]` by default.
    pub device_list_strategy: Vec<DeviceListStrategy>,
    /// `flags.mpsRoot`: where the MPS control daemons keep their pipes and logs
    /// (`/run/nvidia/mps` by default).
    pub mps_root: String,
    /// `flags.plugin.passDeviceSpecs`: answer `Allocate` with the device nodes. NVIDIA's default is
    /// false (nvidia-container-runtime adds them); Tessera's is true, so a pod works under a
    /// runtime without NVIDIA's hook too.
    pub pass_device_specs: bool,
    /// `flags.plugin.cdiAnnotationPrefix` (`cdi.k8s.io/`).
    pub cdi_annotation_prefix: String,
    pub sharing: SharingConfig,
    /// Fields read but without effect, as in NVIDIA's plugin, each at `file:line:column`.
    pub warnings: Vec<String>,
}

pub use crate::config::{ConfigError, ConfigErrorKind};

impl ResourceName {
    /// Validate a fully-qualified name (`nvidia.com/gpu`).
    pub fn parse(text: &str) -> Result<ResourceName, NameError> {
        let bad = |reason: String| NameError { name: text.to_string(), reason };
        if text.len() > MAX_RESOURCE_NAME_LEN {
            return Err(bad(format!("{} characters, more than {MAX_RESOURCE_NAME_LEN}", text.len())));
        }
        let Some((prefix, name)) = text.split_once('/') else {
            return Err(bad("expected '<domain>/<name>', such as 'nvidia.com/gpu'".to_string()));
        };
        if let Err(r) = check_dns_subdomain(prefix) {
            return Err(bad(format!("the prefix '{prefix}' {r}")));
        }
        if prefix == "kubernetes.io" || prefix.ends_with(".kubernetes.io") {
            return Err(bad("the 'kubernetes.io' domain is reserved for Kubernetes' own resources".to_string()));
        }
        if let Err(r) = check_dns_subdomain(name) {
            return Err(bad(format!("the name '{name}' {r}")));
        }
        Ok(ResourceName(text.to_string()))
    }

    /// `nvidia.com/<name>` for a name without a prefix, as NVIDIA's `NewResourceName` qualifies it.
    pub fn qualified(name: &str) -> Result<ResourceName, NameError> {
        if name.starts_with(&format!("{RESOURCE_PREFIX}/")) {
            ResourceName::parse(name)
        } else {
            ResourceName::parse(&format!("{RESOURCE_PREFIX}/{name}"))
        }
    }

    /// `nvidia.com/gpu`.
    pub fn gpu() -> ResourceName {
        ResourceName(format!("{RESOURCE_PREFIX}/gpu"))
    }

    /// `nvidia.com/mig-<profile>` with `+` written `.` (`1g.10gb+me` → `nvidia.com/mig-1g.10gb.me`).
    pub fn mig(profile: &str) -> Result<ResourceName, NameError> {
        ResourceName::qualified(&format!("mig-{}", profile.replace('+', ".")))
    }

    /// `<name>.shared`.
    pub fn shared(&self) -> Result<ResourceName, NameError> {
        ResourceName::parse(&format!("{}{SHARED_SUFFIX}", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ResourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ResourceName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        ResourceName::parse(&s)
    }
}

impl From<ResourceName> for String {
    fn from(r: ResourceName) -> String {
        r.0
    }
}

/// Kubernetes' `IsDNS1123Subdomain`: at most 253 characters of lower-case letters, digits, `-`
/// and `.`, each dot-separated label starting and ending with a letter or digit.
fn check_dns_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("is empty".to_string());
    }
    if s.len() > 253 {
        return Err("is longer than 253 characters".to_string());
    }
    if let Some(c) = s.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.')) {
        return Err(format!("has '{c}': only lower-case letters, digits, '-' and '.' are allowed (a DNS subdomain)"));
    }
    for label in s.split('.') {
        let ok_end = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
        if !ok_end(label.chars().next()) || !ok_end(label.chars().last()) {
            return Err("must start and end each '.'-separated part with a letter or digit".to_string());
        }
    }
    Ok(())
}

impl SharingConfig {
    /// The active sharing strategy, as NVIDIA decides it.
    pub fn strategy(&self) -> SharingStrategy {
        let replicated =
            |r: &Option<ReplicatedResources>| r.as_ref().is_some_and(|r| r.resources.iter().any(|x| x.replicas > 1));
        if replicated(&self.mps) {
            SharingStrategy::Mps
        } else if replicated(&self.time_slicing) {
            SharingStrategy::TimeSlicing
        } else {
            SharingStrategy::None
        }
    }

    /// The replicated resources in force: MPS's when `mps` is set, else time-slicing's.
    pub fn replicated(&self) -> Option<&ReplicatedResources> {
        self.mps.as_ref().or(self.time_slicing.as_ref())
    }
}

impl Default for PluginConfig {
    fn default() -> Self {
        PluginConfig {
            mig_strategy: MigStrategy::None,
            device_list_strategy: vec![DeviceListStrategy::EnvVar],
            mps_root: DEFAULT_MPS_ROOT.to_string(),
            pass_device_specs: true,
            cdi_annotation_prefix: DEFAULT_CDI_ANNOTATION_PREFIX.to_string(),
            sharing: SharingConfig::default(),
            warnings: Vec::new(),
        }
    }
}

/// NVIDIA's default CDI annotation prefix (the CDI package's `AnnotationPrefix`).
pub const DEFAULT_CDI_ANNOTATION_PREFIX: &str = "cdi.k8s.io/";

/// The MPS root NVIDIA's Helm chart sets (`--mps-root`; the plugin itself has no default).
pub const DEFAULT_MPS_ROOT: &str = "/run/nvidia/mps";

/// Parse NVIDIA's device-plugin config file (YAML). `origin` names the file in errors.
pub fn parse_config(text: &str, origin: &str) -> Result<PluginConfig, ConfigError> {
    crate::config::parse(text, origin)
}
