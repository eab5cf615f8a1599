//! The pure core of Tessera under Slurm (issue 14): Slurm's GRES kept in step with the node's MIG
//! layout, and Slurm's pending jobs turned into the repartition decision's input.
//!
//! Values in, values out: no I/O, no clock, no processes. The shell (`crates/tessera/src/slurm/`)
//! runs scontrol, writes the files and restarts the daemons; what it reads and writes is decided
//! here, so it is tested as tables and properties without a Slurm cluster.
//!
//! - [`record`]: scontrol's one-line (`-o`) records as key/value pairs.
//! - [`gres`]: GRES lists (`Gres=`, `GresUsed=`, `GRES=`, `TresPerNode=`).
//! - [`layout`]: the gres.conf records Tessera writes, in an order that keeps the GRES indices
//!   running jobs hold, the node's `Gres=`, and the placeholder node for profiles not yet made.
//! - [`jobs`]: jobs and nodes as the agent needs them.
//! - [`pending`]: which pending jobs wait for slices, as pending pods for
//!   [`tessera_kube_core::repartition::decide`], and the drain reason that claims a node.

pub mod gres;
pub mod jobs;
pub mod layout;
pub mod pending;
pub mod record;

pub use gres::{GresCount, GresError, parse_gres_list, parse_tres_per_node};
pub use jobs::{JobError, SlurmJob, SlurmNode};
pub use layout::{
    FileStyle, GRES_CONF_HEADER, GresMap, LayoutError, MAX_SEARCHED_TYPES, OrderError, SliceKey, SliceRecord,
    group_by_type, node_gres, order_records, placeholder_node_line, render_gres_conf,
};
pub use pending::{
    CLAIM_PREFIX, JOB_NAMESPACE, WaitingJob, claim_reason, parse_claim, pending_requests, promised_slices,
    to_pending_pod,
};
pub use record::{ParseError, Record, parse_records};
