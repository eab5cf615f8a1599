//! mig-parted's config format (`version: v1`), so users of NVIDIA's mig-parted keep their files.
//!
//! * [`parse`] reads a file strictly, as mig-parted's loader does, and every error names
//!   `file:line:column`.
//! * [`resolve`] applies one named config to a node's GPUs: which GPU gets which MIG devices,
//!   checked against the catalog model and the planner, so a config that cannot be applied is
//!   refused with the line that causes it.
//! * [`export`] writes the current state as a config; [`builtin_config`] is NVIDIA's own
//!   `config-default.yaml` (embedded data); [`generate_config`] writes the configs a node's GPUs
//!   support, as mig-parted's `generate-config` does.
//! * [`parse_checkpoint`] and [`Checkpoint::to_json`] read and write mig-parted's checkpoint
//!   file (JSON, the node's MIG state); [`restore_targets`] checks one GPU's against its model.
//!
//! The crate is pure like `tessera-mig`: text in, values out; reading files is the caller's job.

mod builtin;
mod checkpoint;
mod error;
mod export;
mod generate;
mod hooks;
mod json;
pub mod node;
mod resolve;
mod spec;

pub use builtin::{BUILTIN_ORIGIN, builtin_config, builtin_config_yaml};
pub use checkpoint::{
    CHECKPOINT_VERSION, Checkpoint, CheckpointError, CiTarget, CkptPlacement, ComputeInstanceState, DeviceState,
    GiTarget, GpuInstanceState, parse_checkpoint, restore_targets,
};
pub use error::{ConfigError, ConfigErrorKind, Pos};
pub use export::{ExportDevice, compute_instance_types, export, export_config, regrouped};
pub use generate::{GENERATED_ORIGIN, GenerateError, generate_config};
pub use hooks::{HookEvent, HookSpec, HooksFile, hook_env, parse_hooks};
pub use resolve::{
    DeviceSummary, DeviceTarget, Resolution, device_type, group_compute_instances, resolve, resolve_node,
};
pub use spec::{
    DeviceConfig, DeviceFilter, DeviceSelector, MigConfigFile, NVIDIA_VENDOR_ID, NamedConfig, VERSION,
    device_filter_string, parse,
};
