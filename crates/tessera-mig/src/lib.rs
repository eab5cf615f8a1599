//! Tessera's exact MIG model: the GPU catalog, layouts and their rules, and the partition planner.
//!
//! **Architecture invariant:** this crate is pure. It does no I/O, spawns nothing, has no async
//! and reads no clock; everything it knows comes in as arguments or from the catalog embedded at
//! build time. The daemon, the CLI and the simulator all plan through it, so a plan shown by
//! `tessera mig plan` is exactly the plan the daemon would execute.
//!
//! Start with [`catalog::catalog`] to find a [`GpuModel`], then build a [`Planner`] for it.

pub mod catalog;
pub mod layout;
pub mod planner;

pub use catalog::{CatalogError, GpuModel, Profile, ProfileKind, catalog};
pub use layout::{ComputeShape, Instance, Violation, WantedInstance, validate};
pub use planner::{
    CurrentInstance, FragmentationReport, PlaceError, Placement, Planner, ProfileFit, ReconfigureError,
    ReconfigurePlan, Step, Wanted, place, planner_for, reconfigure,
};
