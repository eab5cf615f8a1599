//! The GPU backend seam: the [`MigBackend`] trait (shaped after NVML's MIG API), the simulated
//! GPU node ([`SimBackend`]), the NVML backend ([`nvml::NvmlBackend`]), the read model the CLI
//! and daemon show ([`view`]), the plan executor ([`executor`]), Xid health ([`health`]),
//! catalog drift ([`drift`]), the conformance suite every backend must pass ([`conformance`]) and
//! the one place a backend is chosen ([`open`]).
//!
//! **Architecture invariant:** this is the only crate that knows NVML. Everything above it talks
//! to `&dyn MigBackend`; plans come from the pure `tessera-mig` crate and are executed here at
//! explicit placements, never at the driver's default placement.

pub mod backend;
pub mod conformance;
pub mod drift;
pub mod executor;
pub mod health;
pub mod ids;
pub mod nvml;
pub mod open;
pub mod sim;
pub mod spec;
pub mod statefile;
pub mod view;

#[cfg(test)]
mod testing;

pub use backend::{
    BackendError, BackendKind, ComputeInstanceInfo, DeviceInfo, FailedGpu, GpmMetric, GpmMetrics, GpuInstanceInfo,
    GpuInstanceProfileInfo, GpuObservation, GpuRef, MigBackend, MigMode, PlacementRange, ProcessInfo, RecoveryAction,
    device_by_index,
};
pub use executor::{ExecutionError, ExecutionReport, ensure_mig_mode, execute_plan, execute_plan_observed};
pub use health::{Health, HealthReport, HealthTracker, Observation, Recovery, Severity, XidClass, XidEvent, classify};
pub use nvml::NvmlBackend;
pub use open::{BackendChoice, Node, OpenError, OpenOptions, Opened};
pub use sim::SimBackend;
pub use spec::{GpuGroup, NodeSpec, SpecError};
pub use view::{GpuView, LiveInstance, NodeView, gpu_view, node_view, node_view_partial};
