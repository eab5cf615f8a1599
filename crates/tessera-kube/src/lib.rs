//! Tessera's Kubernetes API side, the one crate with a Kubernetes client (`kube`, `k8s-openapi`).
//!
//! - [`node_agent`]: the node label workflow (`nvidia.com/mig.config` → `nvidia.com/mig.config.state`,
//!   the GPU operator's convention, applied incrementally), the controller's desired layouts, and
//!   the node's published report; the node's side is the [`LayoutApplier`] trait.
//! - [`controller`]: pending pods repartition GPUs, through the pure
//!   [`tessera_kube_core::decide`], with one leader ([`lease`]).
//! - [`engine`]: the [`LayoutApplier`] on a real node, the daemon's engine in the same process.
//! - [`dra`]: the DRA driver's API-server side: the node's ResourceSlices
//!   ([`run_slice_publisher`]) and the claims the kubelet prepares ([`claim_allocation`]).
//! - [`annotations`]: every label and annotation key, and Tessera's typed, versioned values.
//! - [`client`]: connecting to the API server.

pub mod annotations;
pub mod client;
pub mod controller;
pub mod dra;
pub mod engine;
mod error;
pub mod lease;
pub mod node_agent;

pub use annotations::{
    DesiredGpu, DesiredLayout, DesiredStatus, NodeReport, ReportedGpu, ReportedInstance, ReportedLayout,
};
pub use client::connect;
pub use controller::{ControllerSettings, pending_pod, run_controller};
pub use dra::{PublishSettings, claim_allocation, run_slice_publisher};
pub use engine::EngineApplier;
pub use error::KubeError;
/// The client [`connect`] gives, for callers that hold one without depending on `kube`.
pub use kube::Client;
pub use lease::{LeaderElector, LeaseSettings};
pub use node_agent::{AgentSettings, Applied, ApplyError, LayoutApplier, run_node_agent};
