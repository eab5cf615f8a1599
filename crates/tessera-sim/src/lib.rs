//! Tessera's trace-driven simulator, shared parts: the inputs, the seeded generator, summary
//! statistics, the synthetic workload generator and the plots. The two protocols live in their
//! own crates: `tessera-sim-pack` (FGD's packing protocol) and `tessera-sim-time` (time-driven
//! replay through the daemon's scheduler core).
//!
//! - [`trace`]: Alibaba's openb node and pod lists, Tessera's native job CSV.
//! - [`rng`]: the seeded generator every random choice uses.
//! - [`stats`]: means with confidence intervals, percentiles, Jain's index.
//! - [`synth`]: synthetic workloads (Poisson arrivals, a size mix, durations).
//! - [`plot`]: line charts as SVG and PNG.
//!
//! Invariants: no wall clock, no sleeping, no I/O outside [`trace`]'s readers and [`plot`]'s
//! writers; the same inputs and seed give the same results.

pub mod plot;
pub mod rng;
pub mod stats;
pub mod synth;
pub mod trace;
