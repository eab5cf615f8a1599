//! The kubelet device plugin (API v1beta1) and the DRA kubelet plugin (DRA API v1 and v1beta1)
//! over gRPC: the shell around `tessera-kube-core`.
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
//! - [`door`]: the Kubernetes front door into the engine: `Allocate` makes the engine hold the
//!   devices for the pod, PodResources ([`podresources`]) names, releases and adopts the holds.
//! - [`agent`]: [`run_agent`], the plugin inside the daemon (`tessera kube node-agent`), fed by
//!   [`EngineSource`] from the engine's published state.
//! - [`mps`]: with `sharing.mps`, one MPS control daemon per MPS-shared resource
//!   ([`MpsDaemons`]), kept in step with the advertised inventory, as NVIDIA's
//!   `mps-control-daemon` runs them.
//! - [`dra`]: the DRA kubelet plugin ([`dra::DraDriver`]): registration with the plugin
//!   watcher, `NodePrepareResources`/`NodeUnprepareResources` holding each allocated device
//!   through the engine (making a missing MIG instance at its placement, destroying it again on
//!   unprepare), a crash-safe checkpoint, per-claim CDI specs and MPS control daemons, device
//!   health streamed to the kubelet, and the GPUs to publish as ResourceSlices.
//!
//! The gRPC and HTTP/2 dependencies live in this crate only.

/// The kubelet's device plugin API, generated at build time from
/// `proto/deviceplugin/v1beta1/api.proto`.
#[allow(missing_debug_implementations, clippy::all, clippy::pedantic)]
pub mod api {
    tonic::include_proto!("v1beta1");
}

/// The kubelet's PodResources API (v1), generated at build time from
/// `proto/podresources/v1/api.proto`.
#[allow(missing_debug_implementations, clippy::all, clippy::pedantic)]
pub mod podresources_api {
    tonic::include_proto!("v1");
}

pub mod agent;
pub mod cdi_file;
pub mod door;
pub mod dra;
pub mod endpoint;
mod error;
pub mod mps;
pub mod plugin;
pub mod podresources;
pub mod registration;
pub mod source;
pub mod uds;

pub use agent::{AgentOptions, DEFAULT_POD_RESOURCES_SOCKET, run_agent};
pub use cdi_file::{CdiFile, DEFAULT_CDI_DIR, cdi_file_name};
pub use door::KubeDoor;
pub use error::PluginError;
pub use mps::{DaemonSpec, MpsDaemons, daemon_specs};
pub use plugin::{DEFAULT_DEVICE_PLUGIN_DIR, PluginOptions, endpoint_file_name, run};
pub use registration::{API_VERSION, KUBELET_SOCKET, register};
pub use source::{BackendSource, BackendSourceOptions, EngineSource, NodeSnapshot};
