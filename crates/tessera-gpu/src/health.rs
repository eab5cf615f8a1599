//! GPU and MIG-instance health from Xid errors: a classification table, and a tracker that
//! recovers each fault the way NVIDIA's Xid catalog says it must be recovered.
//!
//! Pure: no I/O, no clock. Events come from [`crate::MigBackend::wait_xid_events`],
//! observations from [`crate::MigBackend::observe`] (its success is the health probe), and the
//! time (milliseconds on any clock that does not go back while the tracker lives; the CLI and
//! the daemon use wall-clock milliseconds, since the tracker is stored between runs) is passed
//! in by the caller.
//!
//! # The Xid table
//!
//! After NVIDIA's Xid catalog (<https://docs.nvidia.com/deploy/xid-errors/analyzing-xid-catalog.html>,
//! its "Resolution Bucket (Immediate Action)" column: `RESTART_APP`, `RESET_GPU`, `RESTART_BM`
//! (reboot the bare-metal node), `IGNORE`; and "Xid 154 linkage"), reduced to what a MIG manager
//! must do. Each class carries the [`Recovery`] that clears it:
//!
//! | severity | Xids | recovery | effect |
//! |---|---|---|---|
//! | [`Severity::Application`] | 8, 13, 31, 32, 43, 45, 68, 69, 109 | [`Recovery::None`] | the job's own fault (`RESTART_APP`); no health change |
//! | [`Severity::Informational`] | 56, 63, 121 | [`Recovery::None`] | logged, no health change (63: a row remap is pending; it takes effect at the next reset) |
//! | [`Severity::Instance`] | 94 (contained ECC error, `RESTART_APP` in the GPU instance) | [`Recovery::Quiet`] | the GPU instance named in the event is unhealthy until it is recreated, or quiet; without a GPU instance (MIG off) the GPU is |
//! | [`Severity::GpuFatal`] | 38, 48, 57, 58, 61, 62, 64, 74, 92, 95, 110, 119, 120, 140, 143 | [`Recovery::ResetGpu`] | `RESET_GPU`: the GPU and every instance on it are unhealthy until the GPU is reset |
//! | [`Severity::GpuFatal`] | 79 (fallen off the bus) | [`Recovery::RebootNode`] | `RESTART_BM`: unhealthy until the node reboots |
//! | [`Severity::GpuFatal`] | 154 (GPU recovery action changed) | what the driver's recovery action says | [`Recovery::ResetGpu`] until an observation shows the action; `NODE_REBOOT` makes it [`Recovery::RebootNode`] |
//! | [`Severity::Unknown`] | anything else | [`Recovery::Quiet`] | the GPU is *degraded*: reported, not fenced |
//!
//! # Recovery
//!
//! A fault remembers the GPU's reset count and the node's boot id as last observed when it was
//! raised, and clears on a successful probe ([`Observation::probe_ok`]) once what it needs has
//! happened since:
//!
//! * [`Recovery::Quiet`]: the tracker's quiet period ([`HealthTracker::new`]) without a new event,
//!   or any reset or reboot (both are stronger than waiting);
//! * [`Recovery::ResetGpu`]: a reset: the reset count grew, the boot id changed, or the driver's
//!   recovery action went back to `NONE` after asking for something;
//! * [`Recovery::RebootNode`]: a reboot: the boot id changed.
//!
//! [`HealthTracker::clear`] (an admin says the GPU was reset or repaired) counts as the reset or
//! reboot; the next successful probe then clears. A failed probe never clears anything: it keeps
//! a fault that waits for a reset or reboot, and otherwise raises a quiet fault of its own.
//! While the driver's recovery action asks for a reset (or a reboot), that is a fault too,
//! whether or not the Xid was seen, and no earlier reset, reboot or clear counts for it: the
//! driver wins.
//!
//! NVML has no reset counter ([`GpuObservation::reset_count`] is `None` on real GPUs): there a
//! reset shows only as the driver's recovery action going back to `NONE`. A fault that needs a
//! reset on a GPU with no reset count seen and no recovery action asked for therefore waits for a
//! reboot or an admin's clear, and its waiting message says so. The message names the command an
//! admin clears with ([`HealthTracker::set_clear_command`]: the daemon's and the CLI's differ). The node's boot id is the node's: a GPU that does not answer takes it from the
//! others ([`HealthTracker::observe_all`] feeds the GPUs that answered first).
//!
//! NVIDIA's device plugin marks a device unhealthy for good (k8s-device-plugin#189); here every
//! fault recovers once its recovery happened. A parent GPU's fatal error makes every instance
//! on it unhealthy, which NVIDIA's DRA driver does not do (dra-driver-nvidia-gpu#1316).
//!
//! # Stored form
//!
//! The tracker is `Serialize + Deserialize` (the daemon keeps it in its database, the CLI in a
//! state file) as `{"version": 1, "recovery_quiet_ms": …, "gpus": [{"index": …, "uuid": …,
//! "faults": […], "degraded": …, "instances": […], "events": […], "seen": {…},
//! "last_cleared": …}]}`. Another `version` is refused, never misread ([`HealthTracker::restore`]).
//! The clear command is the caller's, not stored.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use serde::{Deserialize, Serialize};

#[cfg(test)]
use crate::backend::DeviceInfo;
pub use crate::backend::XidEvent;
use crate::backend::{BackendError, GpuObservation, RecoveryAction};

/// The version of the stored form this build writes and reads.
pub const STATE_VERSION: u32 = 1;
/// How many events are kept per GPU.
pub const EVENTS_KEPT: usize = 20;

/// What an Xid means for health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The application's own fault: no health change.
    Application,
    /// Contained to one GPU instance: that instance is unhealthy.
    Instance,
    /// The whole GPU (and every instance on it) is unhealthy.
    GpuFatal,
    /// Worth logging, no health change.
    Informational,
    /// Not in the table: the GPU is degraded (reported, not fenced).
    Unknown,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Application => "application",
            Severity::Instance => "instance",
            Severity::GpuFatal => "gpu-fatal",
            Severity::Informational => "informational",
            Severity::Unknown => "unknown",
        })
    }
}

/// What clears a fault, weakest first (so `max` is the stronger need).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recovery {
    /// No fault: the application's error, or an informational event.
    None,
    /// Clears after the tracker's quiet period without events plus a successful probe
    /// (or any reset or reboot): unknown Xids (degraded), contained instance errors (94), failed
    /// probes.
    Quiet,
    /// Clears only after a GPU reset (or a reboot, or an admin's clear) and a successful probe.
    ResetGpu,
    /// Clears only after a node reboot (or an admin's clear) and a successful probe.
    RebootNode,
}

impl fmt::Display for Recovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Recovery::None => "none",
            Recovery::Quiet => "a quiet period",
            Recovery::ResetGpu => "a GPU reset",
            Recovery::RebootNode => "a node reboot",
        })
    }
}

impl Recovery {
    /// What the driver's recovery action needs; `None` for `NONE`.
    pub fn for_action(action: RecoveryAction) -> Recovery {
        match action {
            RecoveryAction::None => Recovery::None,
            RecoveryAction::GpuReset | RecoveryAction::DrainP2p | RecoveryAction::DrainAndReset => Recovery::ResetGpu,
            RecoveryAction::NodeReboot => Recovery::RebootNode,
        }
    }
}

/// An Xid, what it is called and what to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct XidClass {
    pub xid: u64,
    pub name: &'static str,
    pub severity: Severity,
    /// What clears the fault it raises.
    pub recovery: Recovery,
    pub action: &'static str,
}

const RESTART_APP: &str = "restart the application";
const RESET_GPU: &str = "drain the GPU and reset it (nvidia-smi -r)";
const HARDWARE: &str = "drain the GPU, reset it, and have the hardware checked if it recurs";

use Recovery as R;
use Severity as S;

/// The table (source: NVIDIA's Xid catalog, see the module header). Sorted by Xid.
const XIDS: &[(u64, &str, Severity, Recovery, &str)] = &[
    (8, "GPU stopped processing", S::Application, R::None, RESTART_APP),
    (13, "Graphics Engine Exception", S::Application, R::None, RESTART_APP),
    (31, "GPU memory page fault", S::Application, R::None, RESTART_APP),
    (32, "Invalid or corrupted push buffer stream", S::Application, R::None, RESTART_APP),
    (38, "Driver firmware error", S::GpuFatal, R::ResetGpu, RESET_GPU),
    (43, "GPU stopped processing", S::Application, R::None, RESTART_APP),
    (45, "Preemptive cleanup, due to previous errors", S::Application, R::None, "none: a side effect of another error"),
    (48, "Double Bit ECC Error", S::GpuFatal, R::ResetGpu, RESET_GPU),
    (56, "Display Engine error", S::Informational, R::None, "none"),
    (57, "Error programming video memory interface", S::GpuFatal, R::ResetGpu, HARDWARE),
    (58, "Unstable video memory interface detected", S::GpuFatal, R::ResetGpu, HARDWARE),
    (61, "Internal micro-controller breakpoint/warning", S::GpuFatal, R::ResetGpu, RESET_GPU),
    (62, "Internal micro-controller halt", S::GpuFatal, R::ResetGpu, RESET_GPU),
    (
        63,
        "ECC page retirement or row remapping recording event",
        S::Informational,
        R::None,
        "reset the GPU when convenient so the remapping takes effect",
    ),
    (64, "ECC page retirement or row remapper recording failure", S::GpuFatal, R::ResetGpu, HARDWARE),
    (68, "NVDEC0 Exception", S::Application, R::None, RESTART_APP),
    (69, "Graphics Engine class error", S::Application, R::None, RESTART_APP),
    (74, "NVLink Error", S::GpuFatal, R::ResetGpu, "drain the GPU, reset it and check the NVLink connections"),
    (
        79,
        "GPU has fallen off the bus",
        S::GpuFatal,
        R::RebootNode,
        "drain the node and reboot it; check the GPU's power and seating",
    ),
    (92, "High single-bit ECC error rate", S::GpuFatal, R::ResetGpu, HARDWARE),
    (94, "Contained ECC error", S::Instance, R::Quiet, "restart the applications in the affected GPU instance"),
    (95, "Uncontained ECC error", S::GpuFatal, R::ResetGpu, RESET_GPU),
    (109, "Context Switch Timeout Error", S::Application, R::None, RESTART_APP),
    (110, "Security Fault Error", S::GpuFatal, R::ResetGpu, RESET_GPU),
    (119, "GSP RPC Timeout", S::GpuFatal, R::ResetGpu, RESET_GPU),
    (120, "GSP Error", S::GpuFatal, R::ResetGpu, RESET_GPU),
    (121, "C2C Link corrected error", S::Informational, R::None, "none"),
    (140, "Unrecovered ECC Error", S::GpuFatal, R::ResetGpu, RESET_GPU),
    (143, "GPU Initialization Failure", S::GpuFatal, R::ResetGpu, RESET_GPU),
    (
        154,
        "GPU Recovery Action Changed",
        S::GpuFatal,
        R::ResetGpu,
        "follow the driver's recovery action (nvidia-smi -q: GPU Recovery Action)",
    ),
];

/// What an Xid means. Xids not in the table are [`Severity::Unknown`], recovered by a quiet
/// period.
pub fn classify(xid: u64) -> XidClass {
    match XIDS.binary_search_by_key(&xid, |row| row.0) {
        Ok(i) => {
            let (xid, name, severity, recovery, action) = XIDS[i];
            XidClass { xid, name, severity, recovery, action }
        }
        Err(_) => XidClass {
            xid,
            name: "not in Tessera's Xid table",
            severity: Severity::Unknown,
            recovery: Recovery::Quiet,
            action: "look it up in NVIDIA's Xid catalog; the GPU is reported degraded, not fenced",
        },
    }
}

/// How healthy a GPU or a GPU instance is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Health {
    Healthy,
    /// Usable, with a caveat worth reporting (an unknown Xid, or one unhealthy instance).
    Degraded {
        reason: String,
    },
    /// Not to be used until it recovers.
    Unhealthy {
        reason: String,
        since_ms: u64,
        /// What clears it.
        needs: Recovery,
        /// What it waits for, in a sentence: "waiting for a GPU reset (nvidia-smi -r -i 5) or
        /// `tessera admin health clear 5`" (the clear command is the tracker's
        /// [`HealthTracker::set_clear_command`]).
        waiting_for: String,
    },
}

impl Health {
    pub fn is_healthy(&self) -> bool {
        matches!(self, Health::Healthy)
    }

    pub fn is_unhealthy(&self) -> bool {
        matches!(self, Health::Unhealthy { .. })
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Health::Healthy => f.write_str("healthy"),
            Health::Degraded { reason } => write!(f, "degraded: {reason}"),
            Health::Unhealthy { reason, waiting_for, .. } => write!(f, "unhealthy: {reason}; {waiting_for}"),
        }
    }
}

/// One observation of a GPU, for [`HealthTracker::observe`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Observation {
    /// The GPU answered (the observe call succeeded).
    pub probe_ok: bool,
    pub reset_count: Option<u64>,
    pub boot_id: Option<String>,
    pub recovery_action: Option<RecoveryAction>,
}

impl Observation {
    /// A GPU that answered with `o`.
    pub fn answered(o: &GpuObservation) -> Observation {
        Observation {
            probe_ok: true,
            reset_count: o.reset_count,
            boot_id: o.boot_id.clone(),
            recovery_action: o.recovery_action,
        }
    }

    /// A GPU that did not answer.
    pub fn failed() -> Observation {
        Observation::default()
    }

    /// What a probe's result shows: [`Observation::answered`] for
    /// [`crate::MigBackend::observe`]'s answer, [`Observation::failed`] for its error.
    pub fn from_result(result: Result<GpuObservation, BackendError>) -> Observation {
        match result {
            Ok(o) => Observation {
                probe_ok: true,
                reset_count: o.reset_count,
                boot_id: o.boot_id,
                recovery_action: o.recovery_action,
            },
            Err(_) => Observation::failed(),
        }
    }
}

/// What was last observed of a GPU.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Seen {
    pub reset_count: Option<u64>,
    pub boot_id: Option<String>,
    pub recovery_action: Option<RecoveryAction>,
}

/// An Xid's class as recorded with the event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedClass {
    pub severity: Severity,
    pub name: String,
    pub recovery: Recovery,
}

/// One event as the tracker recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedEvent {
    pub at_ms: u64,
    pub event: XidEvent,
    pub class: RecordedClass,
}

/// What cleared a GPU's last fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cleared {
    pub at_ms: u64,
    /// The fault's reason.
    pub fault: String,
    /// What cleared it: "a GPU reset (reset count 3 → 4)", "admin alice", …
    pub by: String,
}

/// A fault in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Fault {
    reason: String,
    since_ms: u64,
    /// The last event (or failed probe) that raised it.
    last_ms: u64,
    /// [`Recovery::Quiet`], [`Recovery::ResetGpu`] or [`Recovery::RebootNode`].
    needs: Recovery,
    /// The GPU's reset count as last observed when it was raised.
    #[serde(default)]
    reset_count: Option<u64>,
    /// The node's boot id as last observed when it was raised.
    #[serde(default)]
    boot_id: Option<String>,
    /// A recovery action other than `NONE` the driver asked for since it was raised.
    #[serde(default)]
    driver_asked: Option<RecoveryAction>,
    /// An admin's clear: counts as the reset or reboot; the next successful probe clears.
    #[serde(default)]
    cleared_by: Option<String>,
}

impl Fault {
    /// A fault raised now, when the GPU was last seen as `seen` and the node's boot was
    /// `node_boot` (the boot id is the node's: another GPU's observation tells it too).
    fn new(reason: String, needs: Recovery, now_ms: u64, seen: &Seen, node_boot: Option<&String>) -> Fault {
        Fault {
            reason,
            since_ms: now_ms,
            last_ms: now_ms,
            needs,
            reset_count: seen.reset_count,
            boot_id: node_boot.or(seen.boot_id.as_ref()).cloned(),
            driver_asked: seen.recovery_action.filter(|a| *a != RecoveryAction::None),
            cleared_by: None,
        }
    }

    /// The same kind of fault again: it needs its recovery again, counted from now.
    fn again(&mut self, reason: String, now_ms: u64, seen: &Seen, node_boot: Option<&String>) {
        let since = self.since_ms;
        *self = Fault::new(reason, self.needs, now_ms.max(self.last_ms), seen, node_boot);
        self.since_ms = since;
    }

    /// What of its recovery an observation shows, if anything (a successful probe is assumed).
    fn recovered_by(&self, obs: &Observation, now_ms: u64, quiet_ms: u64) -> Option<String> {
        if let Some(by) = &self.cleared_by {
            return Some(by.clone());
        }
        let rebooted = matches!((&self.boot_id, &obs.boot_id), (Some(a), Some(b)) if a != b);
        if rebooted {
            return Some("a node reboot (the boot id changed)".into());
        }
        if self.needs == Recovery::RebootNode {
            return None;
        }
        if let (Some(a), Some(b)) = (self.reset_count, obs.reset_count)
            && b > a
        {
            return Some(format!("a GPU reset (reset count {a} → {b})"));
        }
        if let Some(asked) = self.driver_asked
            && obs.recovery_action == Some(RecoveryAction::None)
        {
            return Some(format!("the driver's recovery action went from {asked} back to none"));
        }
        if self.needs == Recovery::Quiet && now_ms >= self.last_ms && now_ms - self.last_ms >= quiet_ms {
            return Some(format!("{} ms without new errors and a successful probe", now_ms - self.last_ms));
        }
        None
    }

    /// Take in what an observation shows that the fault must remember.
    fn note(&mut self, obs: &Observation) {
        if self.reset_count.is_none() {
            self.reset_count = obs.reset_count;
        }
        if self.boot_id.is_none() {
            self.boot_id = obs.boot_id.clone();
        }
        if let Some(a) = obs.recovery_action.filter(|a| *a != RecoveryAction::None) {
            self.driver_asked = Some(a);
        }
    }

    /// Whether a GPU reset can show as such: the reset count was seen, or the driver asked for a
    /// recovery (its action going back to `NONE` is the reset).
    fn reset_visible(&self) -> bool {
        self.reset_count.is_some() || self.driver_asked.is_some()
    }

    /// What the fault waits for, in a sentence; `clear` names an admin's clear of GPU `gpu`.
    fn waiting_for(&self, gpu: u32, quiet_ms: u64, clear: &str) -> String {
        if let Some(by) = &self.cleared_by {
            return format!("cleared by {by}; waiting for a successful health probe");
        }
        match (self.needs, self.driver_asked) {
            (Recovery::RebootNode, _) => format!("waiting for a node reboot or {clear}"),
            (Recovery::ResetGpu, Some(RecoveryAction::DrainP2p)) => format!(
                "waiting for the driver's recovery action (drain peer-to-peer traffic) to clear, a GPU reset \
                 (nvidia-smi -r -i {gpu}) or {clear}"
            ),
            (Recovery::ResetGpu, _) if !self.reset_visible() => format!(
                "waiting for a node reboot or {clear}: the driver reports no reset count for this GPU and asked \
                 for no recovery action, so a GPU reset (nvidia-smi -r -i {gpu}) is not seen; clear it once the \
                 GPU is reset"
            ),
            (Recovery::ResetGpu, _) => format!("waiting for a GPU reset (nvidia-smi -r -i {gpu}) or {clear}"),
            _ if !self.reset_visible() => format!(
                "waiting for {} s without new errors and a successful health probe, a node reboot or {clear}",
                quiet_ms.div_ceil(1000)
            ),
            _ => format!(
                "waiting for {} s without new errors and a successful health probe, a GPU reset or {clear}",
                quiet_ms.div_ceil(1000)
            ),
        }
    }
}

/// One GPU's record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct GpuState {
    #[serde(default)]
    uuid: Option<String>,
    /// Faults that fence the GPU and every instance on it: at most one per `needs`, by `needs`.
    #[serde(default)]
    faults: Vec<Fault>,
    /// An unknown Xid.
    #[serde(default)]
    degraded: Option<Fault>,
    /// Unhealthy GPU instances, by GPU-instance id.
    #[serde(default, with = "instance_faults")]
    instances: BTreeMap<u32, Fault>,
    #[serde(default)]
    events: VecDeque<RecordedEvent>,
    #[serde(default)]
    seen: Seen,
    #[serde(default)]
    last_cleared: Option<Cleared>,
    /// Xid events seen, by Xid code, since the tracker first saw this GPU (a counter: never
    /// decreases while the GPU is the same one).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", with = "xid_counts")]
    xid_counts: BTreeMap<u64, u64>,
}

/// `xid_counts` as a list of `[xid, count]` (the GPU's state is flattened into its stored entry,
/// where a map with number keys does not read back).
mod xid_counts {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(m: &BTreeMap<u64, u64>, s: S) -> Result<S::Ok, S::Error> {
        m.iter().map(|(k, v)| (*k, *v)).collect::<Vec<(u64, u64)>>().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<u64, u64>, D::Error> {
        Ok(Vec::<(u64, u64)>::deserialize(d)?.into_iter().collect())
    }
}

/// `instances` as a list of `{"gpu_instance_id": …, "fault": …}`.
mod instance_faults {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Fault;

    #[derive(Serialize, Deserialize)]
    struct Entry {
        gpu_instance_id: u32,
        fault: Fault,
    }

    pub fn serialize<S: Serializer>(m: &BTreeMap<u32, Fault>, s: S) -> Result<S::Ok, S::Error> {
        let v: Vec<Entry> = m.iter().map(|(k, f)| Entry { gpu_instance_id: *k, fault: f.clone() }).collect();
        v.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<u32, Fault>, D::Error> {
        Ok(Vec::<Entry>::deserialize(d)?.into_iter().map(|e| (e.gpu_instance_id, e.fault)).collect())
    }
}

impl GpuState {
    fn raise(&mut self, needs: Recovery, reason: String, now_ms: u64, node_boot: Option<&String>) {
        match self.faults.iter_mut().find(|f| f.needs == needs) {
            Some(f) => f.again(reason, now_ms, &self.seen, node_boot),
            None => {
                self.faults.push(Fault::new(reason, needs, now_ms, &self.seen, node_boot));
                self.faults.sort_by_key(|f| f.needs);
            }
        }
    }

    fn raise_slot(slot: &mut Option<Fault>, reason: String, now_ms: u64, seen: &Seen, node_boot: Option<&String>) {
        match slot {
            Some(f) => f.again(reason, now_ms, seen, node_boot),
            None => *slot = Some(Fault::new(reason, Recovery::Quiet, now_ms, seen, node_boot)),
        }
    }

    fn has_faults(&self) -> bool {
        !self.faults.is_empty() || self.degraded.is_some() || !self.instances.is_empty()
    }

    /// The fault that decides the GPU's health: the strongest need not yet cleared by an admin,
    /// else the strongest.
    fn primary(&self) -> Option<&Fault> {
        self.faults
            .iter()
            .filter(|f| f.cleared_by.is_none())
            .max_by_key(|f| f.needs)
            .or_else(|| self.faults.iter().max_by_key(|f| f.needs))
    }

    fn push_event(&mut self, e: RecordedEvent) {
        self.events.push_back(e);
        while self.events.len() > EVENTS_KEPT {
            self.events.pop_front();
        }
    }
}

/// Health of every GPU and GPU instance, from Xid events and observations. See the module
/// header for the rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Stored", into = "Stored")]
pub struct HealthTracker {
    recovery_quiet_ms: u64,
    /// The node's boot id as last observed (through any GPU).
    boot_id: Option<String>,
    gpus: BTreeMap<u32, GpuState>,
    /// The command an admin clears a GPU with, without the GPU (not stored: the caller's).
    clear_command: Option<String>,
}

/// The stored form (see the module header).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    version: u32,
    recovery_quiet_ms: u64,
    #[serde(default)]
    boot_id: Option<String>,
    #[serde(default)]
    gpus: Vec<StoredGpu>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredGpu {
    index: u32,
    #[serde(flatten)]
    state: GpuState,
}

impl From<HealthTracker> for Stored {
    fn from(t: HealthTracker) -> Stored {
        Stored {
            version: STATE_VERSION,
            recovery_quiet_ms: t.recovery_quiet_ms,
            boot_id: t.boot_id,
            gpus: t.gpus.into_iter().map(|(index, state)| StoredGpu { index, state }).collect(),
        }
    }
}

impl TryFrom<Stored> for HealthTracker {
    type Error = String;

    fn try_from(s: Stored) -> Result<HealthTracker, String> {
        if s.version != STATE_VERSION {
            return Err(format!(
                "health state version {} is not the version this build reads ({STATE_VERSION})",
                s.version
            ));
        }
        let mut gpus = BTreeMap::new();
        for StoredGpu { index, mut state } in s.gpus {
            // Keep the invariant: at most one fault per need, by need.
            state.faults.sort_by_key(|f| f.needs);
            state.faults.dedup_by_key(|f| f.needs);
            state.faults.retain(|f| f.needs != Recovery::None);
            if gpus.insert(index, state).is_some() {
                return Err(format!("health state lists GPU {index} twice"));
            }
        }
        Ok(HealthTracker { recovery_quiet_ms: s.recovery_quiet_ms, boot_id: s.boot_id, gpus, clear_command: None })
    }
}

/// Why a stored tracker cannot be restored ([`HealthTracker::restore`]).
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Another version of the stored form.
    #[error("health state version {found} is not the version this build reads ({STATE_VERSION})")]
    Version { found: u64 },
    /// Not the stored form (not JSON, or fields missing or wrong).
    #[error("health state is not readable: {source}")]
    Unreadable {
        #[source]
        source: serde_json::Error,
    },
}

/// How long a GPU must stay quiet before a successful probe clears a quiet fault, by default.
pub const DEFAULT_RECOVERY_QUIET_MS: u64 = 60_000;

impl Default for HealthTracker {
    fn default() -> Self {
        HealthTracker::new(DEFAULT_RECOVERY_QUIET_MS)
    }
}

/// Every GPU's health, for the API and `-o json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    pub version: u32,
    pub recovery_quiet_ms: u64,
    pub gpus: Vec<GpuHealthReport>,
}

/// One GPU in a [`HealthReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuHealthReport {
    pub gpu: u32,
    pub uuid: Option<String>,
    pub health: Health,
    /// The GPU instances with a fault of their own (every other instance has the GPU's health
    /// when the GPU is unhealthy, and is healthy otherwise).
    pub instances: Vec<InstanceHealthReport>,
    /// The last [`EVENTS_KEPT`] events, oldest first.
    pub events: Vec<RecordedEvent>,
    pub last_cleared: Option<Cleared>,
    /// What was last observed.
    pub seen: Seen,
    /// Xid events seen, by Xid code (every event, not only the last few kept in `events`).
    #[serde(default)]
    pub xid_counts: BTreeMap<u64, u64>,
}

/// One GPU instance in a [`GpuHealthReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceHealthReport {
    pub gpu_instance_id: u32,
    pub health: Health,
}

impl HealthReport {
    /// Whether any GPU or GPU instance is unhealthy (degraded is not).
    #[cfg(test)]
    pub fn any_unhealthy(&self) -> bool {
        self.gpus.iter().any(|g| g.health.is_unhealthy() || g.instances.iter().any(|i| i.health.is_unhealthy()))
    }
}

impl HealthTracker {
    /// A tracker where everything is healthy; quiet faults clear after `recovery_quiet_ms`.
    pub fn new(recovery_quiet_ms: u64) -> Self {
        HealthTracker { recovery_quiet_ms, boot_id: None, gpus: BTreeMap::new(), clear_command: None }
    }

    /// A stored tracker (its stored form, see the module header), run with
    /// the quiet period `recovery_quiet_ms` (the stored one is the last run's). Another version of
    /// the stored form is refused.
    pub fn restore(text: &str, recovery_quiet_ms: u64) -> Result<HealthTracker, RestoreError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|source| RestoreError::Unreadable { source })?;
        if let Some(found) = value.get("version").and_then(serde_json::Value::as_u64)
            && found != u64::from(STATE_VERSION)
        {
            return Err(RestoreError::Version { found });
        }
        let mut tracker: HealthTracker =
            serde_json::from_value(value).map_err(|source| RestoreError::Unreadable { source })?;
        tracker.recovery_quiet_ms = recovery_quiet_ms;
        Ok(tracker)
    }

    /// Change the quiet period (e.g. a stored tracker run with another `--recovery-quiet`).
    pub fn set_recovery_quiet_ms(&mut self, ms: u64) {
        self.recovery_quiet_ms = ms;
    }

    /// The command an admin clears a GPU's faults with, without the GPU index:
    /// `tessera admin health clear` for the daemon, `tessera mig health clear` for the CLI.
    /// Waiting messages then end "… or `<command> N`"; without one, "… or an admin's clear".
    pub fn set_clear_command(&mut self, command: impl Into<String>) {
        self.clear_command = Some(command.into());
    }

    /// How a waiting message names an admin's clear of GPU `gpu`.
    fn clear_text(&self, gpu: u32) -> String {
        match &self.clear_command {
            Some(c) => format!("`{c} {gpu}`"),
            None => "an admin's clear".to_string(),
        }
    }

    /// Take an Xid event into account.
    pub fn record(&mut self, event: &XidEvent, now_ms: u64) {
        let class = classify(event.xid);
        let reason = format!("Xid {} ({}): {}", class.xid, class.name, class.action);
        let boot = self.boot_id.clone();
        let boot = boot.as_ref();
        let state = self.gpu_mut(event.gpu);
        *state.xid_counts.entry(event.xid).or_default() += 1;
        state.push_event(RecordedEvent {
            at_ms: now_ms,
            event: *event,
            class: RecordedClass { severity: class.severity, name: class.name.to_string(), recovery: class.recovery },
        });
        match (class.severity, class.recovery) {
            (_, Recovery::None) => {}
            (Severity::Unknown, _) => GpuState::raise_slot(&mut state.degraded, reason, now_ms, &state.seen, boot),
            (Severity::Instance, _) => match event.gpu_instance_id {
                Some(gi) => {
                    let mut slot = state.instances.remove(&gi);
                    GpuState::raise_slot(&mut slot, reason, now_ms, &state.seen, boot);
                    if let Some(f) = slot {
                        state.instances.insert(gi, f);
                    }
                }
                // Without MIG the whole GPU is the instance.
                None => state.raise(class.recovery, reason, now_ms, boot),
            },
            (_, needs) => {
                // Xid 154: the driver's recovery action, if already observed, decides.
                let needs = match (event.xid, state.seen.recovery_action) {
                    (154, Some(a)) => needs.max(Recovery::for_action(a)),
                    _ => needs,
                };
                state.raise(needs, reason, now_ms, boot);
            }
        }
    }

    /// Take an observation of GPU `gpu` into account (see the module header). A failed probe
    /// raises a quiet fault; a successful one clears every fault whose recovery it shows.
    pub fn observe(&mut self, gpu: u32, obs: &Observation, now_ms: u64) {
        let quiet = self.recovery_quiet_ms;
        if obs.probe_ok && obs.boot_id.is_some() {
            self.boot_id.clone_from(&obs.boot_id);
        }
        let boot = self.boot_id.clone();
        let state = self.gpu_mut(gpu);
        if !obs.probe_ok {
            // A GPU already fenced until a reset or reboot keeps that fault (a GPU off the bus
            // does not answer until it is back); otherwise the failure is a quiet fault of its own.
            let fenced = state.faults.iter().any(|f| f.needs >= Recovery::ResetGpu);
            let quiet = state.faults.iter().any(|f| f.needs == Recovery::Quiet);
            if quiet || !fenced {
                let reason = "the health probe failed: the GPU does not answer".to_string();
                state.raise(Recovery::Quiet, reason, now_ms, boot.as_ref());
            }
            return;
        }
        let mut cleared: Option<Cleared> = None;
        let mut clear = |f: &mut Fault, what: &str| -> bool {
            match f.recovered_by(obs, now_ms, quiet) {
                Some(by) => {
                    cleared = Some(Cleared { at_ms: now_ms, fault: format!("{what}{}", f.reason), by });
                    false
                }
                None => {
                    f.note(obs);
                    true
                }
            }
        };
        state.faults.retain_mut(|f| clear(f, ""));
        if let Some(f) = state.degraded.as_mut()
            && !clear(f, "")
        {
            state.degraded = None;
        }
        state.instances.retain(|gi, f| clear(f, &format!("GPU instance {gi}: ")));
        if let Some(c) = cleared {
            state.last_cleared = Some(c);
        }
        state.seen =
            Seen { reset_count: obs.reset_count, boot_id: obs.boot_id.clone(), recovery_action: obs.recovery_action };
        // The driver asks for a recovery: a fault until it is done. While it keeps asking, the
        // recovery has not happened: the fault is raised again, counted from now.
        if let Some(action) = obs.recovery_action {
            let needs = Recovery::for_action(action);
            if needs != Recovery::None {
                let reason = match state.faults.iter().find(|f| f.needs == needs) {
                    Some(f) => f.reason.clone(),
                    None => format!("the driver's recovery action is: {action}"),
                };
                state.raise(needs, reason, now_ms, boot.as_ref());
            }
        }
    }

    /// One observation of each GPU, at once: the GPUs that answered first, so the node's boot id
    /// is known before a GPU that does not answer gets its fault.
    pub fn observe_all(&mut self, observations: &[(u32, Observation)], now_ms: u64) {
        let (answered, failed): (Vec<_>, Vec<_>) = observations.iter().partition(|(_, o)| o.probe_ok);
        for (gpu, obs) in answered.into_iter().chain(failed) {
            self.observe(*gpu, obs, now_ms);
        }
    }

    /// An admin says GPU `gpu` was reset or repaired (`tessera admin health clear GPU`): every
    /// fault of the GPU counts as recovered, and the next successful probe clears it. Faults
    /// raised afterwards need their own recovery. (`_now_ms` is not used: the clear takes effect
    /// at that probe, which has its own time.)
    pub fn clear(&mut self, gpu: u32, by: &str, _now_ms: u64) {
        let Some(state) = self.gpus.get_mut(&gpu) else {
            return;
        };
        let by = format!("admin {by}");
        let all = state.faults.iter_mut().chain(state.degraded.iter_mut()).chain(state.instances.values_mut());
        for f in all {
            f.cleared_by = Some(by.clone());
        }
    }

    /// A GPU instance was destroyed and created again (GPU-instance ids are reused): it starts
    /// healthy. The parent GPU's own faults stay.
    pub fn instance_recreated(&mut self, gpu: u32, gpu_instance_id: u32, now_ms: u64) {
        if let Some(state) = self.gpus.get_mut(&gpu)
            && let Some(f) = state.instances.remove(&gpu_instance_id)
        {
            state.last_cleared = Some(Cleared {
                at_ms: now_ms,
                fault: format!("GPU instance {gpu_instance_id}: {}", f.reason),
                by: "the GPU instance was recreated".into(),
            });
        }
    }

    /// [`Self::reconcile_ids`] with the devices' indices and UUIDs.
    #[cfg(test)]
    pub fn reconcile(&mut self, devices: &[DeviceInfo]) {
        let ids: Vec<(u32, String)> = devices.iter().map(|d| (d.index, d.uuid.clone())).collect();
        self.reconcile_ids(&ids);
    }

    /// Follow GPUs to new indices by UUID (the driver may renumber them after a reboot or a
    /// hardware change), and learn the UUIDs of the GPUs at the given `(index, UUID)` pairs. A
    /// record whose index another GPU now has, and whose UUID is nowhere, is dropped.
    pub fn reconcile_ids(&mut self, ids: &[(u32, String)]) {
        let mut old = std::mem::take(&mut self.gpus);
        let mut placed: BTreeMap<u32, GpuState> = BTreeMap::new();
        let mut rest: Vec<&(u32, String)> = Vec::new();
        for pair in ids {
            let (index, uuid) = pair;
            let found = old.iter().find(|(_, s)| s.uuid.as_deref() == Some(uuid.as_str())).map(|(k, _)| *k);
            match found.and_then(|k| old.remove(&k)) {
                Some(s) => {
                    placed.insert(*index, s);
                }
                None => rest.push(pair),
            }
        }
        for (index, uuid) in rest {
            let state = match old.remove(index) {
                Some(mut s) if s.uuid.is_none() => {
                    s.uuid = Some(uuid.clone());
                    s
                }
                Some(other) => {
                    // Another GPU's record at this index: it stays only if its GPU is elsewhere.
                    old.insert(*index, other);
                    GpuState { uuid: Some(uuid.clone()), ..GpuState::default() }
                }
                None => GpuState { uuid: Some(uuid.clone()), ..GpuState::default() },
            };
            placed.entry(*index).or_insert(state);
        }
        for (index, s) in old {
            placed.entry(index).or_insert(s);
        }
        self.gpus = placed;
    }

    /// The GPU's health: unhealthy on a fatal fault, degraded on an unknown Xid or an unhealthy
    /// instance, healthy otherwise.
    pub fn gpu_health(&self, gpu: u32) -> Health {
        let Some(state) = self.gpus.get(&gpu) else {
            return Health::Healthy;
        };
        if let Some(f) = state.primary() {
            let since_ms = state.faults.iter().map(|f| f.since_ms).min().unwrap_or(f.since_ms);
            let others = state.faults.len() - 1;
            let reason =
                if others == 0 { f.reason.clone() } else { format!("{} (and {others} other fault(s))", f.reason) };
            return Health::Unhealthy {
                reason,
                since_ms,
                needs: f.needs,
                waiting_for: f.waiting_for(gpu, self.recovery_quiet_ms, &self.clear_text(gpu)),
            };
        }
        if let Some(f) = &state.degraded {
            return Health::Degraded { reason: f.reason.clone() };
        }
        if !state.instances.is_empty() {
            let ids: Vec<String> = state.instances.keys().map(ToString::to_string).collect();
            return Health::Degraded { reason: format!("GPU instance(s) {} unhealthy", ids.join(", ")) };
        }
        Health::Healthy
    }

    /// A GPU instance's health: unhealthy when its parent GPU is (whatever the instance) or when
    /// a fault was contained to it; degraded when the parent is degraded by an unknown Xid.
    pub fn instance_health(&self, gpu: u32, gpu_instance_id: u32) -> Health {
        let Some(state) = self.gpus.get(&gpu) else {
            return Health::Healthy;
        };
        if let Health::Unhealthy { reason, since_ms, needs, waiting_for } = self.gpu_health(gpu) {
            return Health::Unhealthy { reason: format!("GPU {gpu}: {reason}"), since_ms, needs, waiting_for };
        }
        if let Some(f) = state.instances.get(&gpu_instance_id) {
            let waiting_for = match &f.cleared_by {
                Some(_) => f.waiting_for(gpu, self.recovery_quiet_ms, &self.clear_text(gpu)),
                None => format!(
                    "waiting for the GPU instance to be recreated, or {} s without new errors and a successful \
                     health probe",
                    self.recovery_quiet_ms.div_ceil(1000)
                ),
            };
            return Health::Unhealthy { reason: f.reason.clone(), since_ms: f.since_ms, needs: f.needs, waiting_for };
        }
        if let Some(f) = &state.degraded {
            return Health::Degraded { reason: format!("GPU {gpu}: {}", f.reason) };
        }
        Health::Healthy
    }

    /// GPUs that are not healthy, by index.
    pub fn troubled_gpus(&self) -> Vec<u32> {
        self.gpus.iter().filter(|(_, s)| s.has_faults()).map(|(g, _)| *g).collect()
    }

    /// The GPUs the tracker knows, by index.
    #[cfg(test)]
    pub fn gpus(&self) -> Vec<u32> {
        self.gpus.keys().copied().collect()
    }

    /// Every known GPU's health, its instances' faults, its last events and what cleared its
    /// last fault.
    pub fn report(&self) -> HealthReport {
        HealthReport {
            version: STATE_VERSION,
            recovery_quiet_ms: self.recovery_quiet_ms,
            gpus: self
                .gpus
                .iter()
                .map(|(&gpu, s)| GpuHealthReport {
                    gpu,
                    uuid: s.uuid.clone(),
                    health: self.gpu_health(gpu),
                    instances: s
                        .instances
                        .keys()
                        .map(|&gi| InstanceHealthReport { gpu_instance_id: gi, health: self.instance_health(gpu, gi) })
                        .collect(),
                    events: s.events.iter().cloned().collect(),
                    last_cleared: s.last_cleared.clone(),
                    seen: s.seen.clone(),
                    xid_counts: s.xid_counts.clone(),
                })
                .collect(),
        }
    }

    fn gpu_mut(&mut self, gpu: u32) -> &mut GpuState {
        self.gpus.entry(gpu).or_default()
    }
}

#[cfg(test)]
mod tests;
