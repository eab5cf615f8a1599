//! The pure core of Tessera on Kubernetes, shared by the device plugin (`tessera-deviceplugin`)
//! and the controller that repartitions GPUs for pending pods.
//!
//! Values in, values out: no I/O, no async, no clock (time is an argument), no gRPC or Kubernetes
//! types. The gRPC shell turns these values into kubelet messages; keeping the decisions here lets
//! them be tested as tables and properties without a kubelet.
//!
//! - [`naming`]: resource names as NVIDIA's device plugin makes them, and its config file.
//! - [`inventory`]: from the node's GPUs and their health to what each resource advertises.
//! - [`allocation`]: `GetPreferredAllocation` and `Allocate` as decisions.
//! - [`cdi`]: the CDI specification for the advertised devices.
//! - [`dra`]: the ResourceSlices a DRA driver publishes for partitionable MIG devices.
//! - [`dra_claim`]: what a DRA claim asks of the node: its devices and their sharing.
//! - [`quantity`]: Kubernetes quantities, read exactly.
//! - [`holds`]: the keys under which the node's engine holds pods' devices.
//! - [`repartition`]: which GPUs to repartition for pending pods, as one pure decision.

pub mod allocation;
pub mod cdi;
mod config;
pub mod dra;
pub mod dra_claim;
pub mod holds;
pub mod inventory;
pub mod naming;
pub mod quantity;
pub mod repartition;

pub use allocation::{AllocError, AllocateOptions, ContainerAllocation, Mount, allocate, preferred_allocation};
pub use cdi::{CDI_KIND, CDI_VERSION, CdiDevice, CdiDeviceNode, CdiSpec, ContainerEdits, cdi_spec};
pub use inventory::{
    DeviceHealth, DeviceNode, InstanceKey, Inventory, InventoryDiff, InventoryError, NodeInput, PluginDevice,
    build_inventory,
};
pub use naming::{
    ConfigError, ConfigErrorKind, DeviceListStrategy, MigStrategy, NameError, PluginConfig, ReplicatedResource,
    ReplicatedResources, ResourceName, SharingConfig, SharingStrategy, parse_config,
};
pub use repartition::{
    Decision, DeviceChoice, GpuMode, IgnoredGpu, MigConfigLabel, NodeGpu, NodeLayoutChange, NodeRefusal,
    NodeRefusalKind, NodeState, PendingPod, PodPlacement, PodRef, Policy, Unplaceable, UnplaceableReason,
    apply_changes, decide,
};
