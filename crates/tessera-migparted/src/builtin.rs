//! The built-in configs: NVIDIA's own `config-default.yaml`, as mig-parted and the GPU operator
//! ship it, so that `-c all-1g.10gb` means on Tessera exactly what it means there.
//!
//! The file is data (`data/nvidia-config-default.yaml`, its header names the sources, commits
//! and licence), embedded at build time and read by the same strict parser as a user's file, so
//! errors about a built-in config point into it. Users who never wrote a config get these.

use std::sync::OnceLock;

use crate::spec::{MigConfigFile, parse};

/// The origin that errors about the built-in configs name.
pub const BUILTIN_ORIGIN: &str = "<built-in config-default.yaml>";

/// NVIDIA's `config-default.yaml` behind Tessera's header comment, as embedded.
const NVIDIA_CONFIG_DEFAULT: &str = include_str!("../data/nvidia-config-default.yaml");

/// The built-in configs as mig-parted YAML: NVIDIA's `config-default.yaml` with a header that
/// names where it comes from.
pub fn builtin_config_yaml() -> &'static str {
    NVIDIA_CONFIG_DEFAULT
}

/// The built-in configs, parsed from [`builtin_config_yaml`] so that errors point into that text.
pub fn builtin_config() -> MigConfigFile {
    static BUILTIN: OnceLock<MigConfigFile> = OnceLock::new();
    BUILTIN
        .get_or_init(|| {
            // The file is embedded at build time and no input reaches it; the `builtin` test
            // parses it on every commit.
            #[allow(clippy::expect_used)]
            parse(NVIDIA_CONFIG_DEFAULT, BUILTIN_ORIGIN).expect("the embedded config-default.yaml parses")
        })
        .clone()
}
