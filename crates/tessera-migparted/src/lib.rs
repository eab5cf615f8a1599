//! mig-parted's config format (`version: v1`), so users of NVIDIA's mig-parted keep their files.
//!
//! * [`parse`] reads a file strictly, as mig-parted's loader does, and every error names
//!   `file:line:column`.
//! * [`resolve`] applies one named config to a node's GPUs: which GPU gets which MIG devices,
//!   checked against the catalog model and the planner, so a config that cannot be applied is
//!   refused with the line that causes it.
//! * [`export`] writes the current state as a config; [`builtin_config`] is the equivalent of
//!   mig-parted's shipped `config-default.yaml`, generated from the catalog.
//!
//! The crate is pure like `tessera-mig`: text in, values out; reading files is the caller's job.

mod builtin;
mod error;
mod export;
mod node;
mod resolve;
mod spec;

pub use builtin::{BUILTIN_ORIGIN, builtin_config, builtin_config_yaml};
pub use error::{ConfigError, ConfigErrorKind, Pos};
pub use export::{ExportDevice, export, export_config};
pub use resolve::{DeviceSummary, DeviceTarget, Resolution, device_type, resolve, resolve_node};
pub use spec::{
    DeviceConfig, DeviceSelector, MigConfigFile, NVIDIA_VENDOR_ID, NamedConfig, VERSION, device_filter_string, parse,
};
