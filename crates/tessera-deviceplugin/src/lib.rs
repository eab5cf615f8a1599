//! The kubelet device plugin (API v1beta1) over gRPC: the shell around `tessera-kube-core`.
//!
//! - [`api`]: the kubelet's messages and services, generated at build time from
//!   `proto/deviceplugin/v1beta1/api.proto` by protox and tonic (no `protoc`).
//! - [`source`]: the seam that feeds the plugin ([`NodeSnapshot`]s on a `watch` channel) and
//!   [`BackendSource`], which reads a `MigBackend` node at an interval, health included.
//! - [`plugin`]: [`run`], one endpoint per resource name, registration, re-registration when the
//!   kubelet restarts, the CDI spec file ([`cdi_file`]).
//! - [`endpoint`]: the `DevicePlugin` service of one resource.
//! - [`uds`]: gRPC over Unix sockets, for the plugin and for whoever talks to it (the kubelet
//!   stand-in in the tests).
//!
//! The gRPC and HTTP/2 dependencies live in this crate only.

/// The kubelet's device plugin API, generated at build time from
/// `proto/deviceplugin/v1beta1/api.proto`.
#[allow(missing_debug_implementations, clippy::all, clippy::pedantic)]
pub mod api {
    tonic::include_proto!("v1beta1");
}

pub mod cdi_file;
pub mod endpoint;
mod error;
pub mod plugin;
pub mod registration;
pub mod source;
pub mod uds;

pub use cdi_file::{CdiFile, DEFAULT_CDI_DIR, cdi_file_name};
pub use error::PluginError;
pub use plugin::{DEFAULT_DEVICE_PLUGIN_DIR, PluginOptions, endpoint_file_name, run};
pub use registration::{API_VERSION, KUBELET_SOCKET, register};
pub use source::{BackendSource, BackendSourceOptions, NodeSnapshot};
