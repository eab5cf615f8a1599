//! GPU and MIG-instance health from Xid errors: a classification table and a tracker.
//!
//! Pure: no I/O, no clock. Events come from [`crate::MigBackend::wait_xid_events`], probe
//! results from whoever checks that NVML still answers, and the time (milliseconds on any
//! monotonic clock) is passed in by the caller.
//!
//! # The Xid table
//!
//! After NVIDIA's Xid catalog (<https://docs.nvidia.com/deploy/xid-errors/>, the "Xid catalog"
//! and "resolution" columns), reduced to what a MIG manager must do:
//!
//! | severity | Xids | effect |
//! |---|---|---|
//! | [`Severity::Application`] | 8, 13, 31, 32, 43, 45, 68, 69, 109 | the job's own fault (bad address, exception, timeout, cleanup after another error); restart the job; no health change |
//! | [`Severity::Instance`] | 94 (contained ECC error) | the GPU instance named in the event is unhealthy until it is recreated or a quiet probe passes; without a GPU instance (MIG off) the GPU is |
//! | [`Severity::GpuFatal`] | 38, 48, 57, 58, 61, 62, 64, 74, 79, 92, 95, 110, 119, 120, 140, 143, 154 | the GPU and every instance on it are unhealthy (drain, reset the GPU or fix the hardware) |
//! | [`Severity::Informational`] | 56, 63, 121 | logged, no health change (63: a row remap is pending; it takes effect at the next reset) |
//! | [`Severity::Unknown`] | anything else | the GPU is *degraded*: reported, not fenced |
//!
//! NVIDIA's device plugin marks a device unhealthy for good (k8s-device-plugin#189); here every
//! fault recovers: a fatal one after a successful health probe at least
//! [`HealthTracker::recovery_quiet_ms`] after the last fatal event, an instance fault also when
//! the instance is recreated. A parent GPU's fatal error makes every instance on it unhealthy,
//! which NVIDIA's DRA driver does not do (dra-driver-nvidia-gpu#1316).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// One Xid error as NVML reports it (`nvmlEventData_t` of an `nvmlEventTypeXidCriticalError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct XidEvent {
    /// NVML index of the GPU.
    pub gpu: u32,
    /// The Xid number.
    pub xid: u64,
    /// The GPU instance it is contained to, when the driver says (MIG only).
    pub gpu_instance_id: Option<u32>,
    /// The compute instance it is contained to, when the driver says (MIG only).
    pub compute_instance_id: Option<u32>,
}

impl fmt::Display for XidEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Xid {} on GPU {}", self.xid, self.gpu)?;
        match (self.gpu_instance_id, self.compute_instance_id) {
            (Some(gi), Some(ci)) => write!(f, " (GPU instance {gi}, compute instance {ci})"),
            (Some(gi), None) => write!(f, " (GPU instance {gi})"),
            _ => Ok(()),
        }
    }
}

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

/// An Xid, what it is called and what to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct XidClass {
    pub xid: u64,
    pub name: &'static str,
    pub severity: Severity,
    pub action: &'static str,
}

const RESTART_APP: &str = "restart the application";
const RESET_GPU: &str = "drain the GPU and reset it (nvidia-smi -r)";
const HARDWARE: &str = "drain the GPU, reset it, and have the hardware checked if it recurs";

/// The table (source: NVIDIA's Xid catalog, see the module header). Sorted by Xid.
const XIDS: &[(u64, &str, Severity, &str)] = &[
    (8, "GPU stopped processing", Severity::Application, RESTART_APP),
    (13, "Graphics Engine Exception", Severity::Application, RESTART_APP),
    (31, "GPU memory page fault", Severity::Application, RESTART_APP),
    (32, "Invalid or corrupted push buffer stream", Severity::Application, RESTART_APP),
    (38, "Driver firmware error", Severity::GpuFatal, RESET_GPU),
    (43, "GPU stopped processing", Severity::Application, RESTART_APP),
    (45, "Preemptive cleanup, due to previous errors", Severity::Application, "none: a side effect of another error"),
    (48, "Double Bit ECC Error", Severity::GpuFatal, RESET_GPU),
    (56, "Display Engine error", Severity::Informational, "none"),
    (57, "Error programming video memory interface", Severity::GpuFatal, HARDWARE),
    (58, "Unstable video memory interface detected", Severity::GpuFatal, HARDWARE),
    (61, "Internal micro-controller breakpoint/warning", Severity::GpuFatal, RESET_GPU),
    (62, "Internal micro-controller halt", Severity::GpuFatal, RESET_GPU),
    (
        63,
        "ECC page retirement or row remapping recording event",
        Severity::Informational,
        "reset the GPU when convenient so the remapping takes effect",
    ),
    (64, "ECC page retirement or row remapper recording failure", Severity::GpuFatal, HARDWARE),
    (68, "NVDEC0 Exception", Severity::Application, RESTART_APP),
    (69, "Graphics Engine class error", Severity::Application, RESTART_APP),
    (74, "NVLink Error", Severity::GpuFatal, "drain the GPU, reset it and check the NVLink connections"),
    (
        79,
        "GPU has fallen off the bus",
        Severity::GpuFatal,
        "drain the node and reboot it; check the GPU's power and seating",
    ),
    (92, "High single-bit ECC error rate", Severity::GpuFatal, HARDWARE),
    (94, "Contained ECC error", Severity::Instance, "restart the applications in the affected GPU instance"),
    (95, "Uncontained ECC error", Severity::GpuFatal, RESET_GPU),
    (109, "Context Switch Timeout Error", Severity::Application, RESTART_APP),
    (110, "Security Fault Error", Severity::GpuFatal, RESET_GPU),
    (119, "GSP RPC Timeout", Severity::GpuFatal, RESET_GPU),
    (120, "GSP Error", Severity::GpuFatal, RESET_GPU),
    (121, "C2C Link corrected error", Severity::Informational, "none"),
    (140, "Unrecovered ECC Error", Severity::GpuFatal, RESET_GPU),
    (143, "GPU Initialization Failure", Severity::GpuFatal, RESET_GPU),
    (154, "GPU Recovery Action Changed", Severity::GpuFatal, "follow the recovery action the driver logged"),
];

/// What an Xid means. Xids not in the table are [`Severity::Unknown`].
pub fn classify(xid: u64) -> XidClass {
    match XIDS.binary_search_by_key(&xid, |row| row.0) {
        Ok(i) => {
            let (xid, name, severity, action) = XIDS[i];
            XidClass { xid, name, severity, action }
        }
        Err(_) => XidClass {
            xid,
            name: "not in Tessera's Xid table",
            severity: Severity::Unknown,
            action: "look it up in NVIDIA's Xid catalog; the GPU is reported degraded, not fenced",
        },
    }
}

/// How healthy a GPU or a GPU instance is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
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
            Health::Unhealthy { reason, since_ms } => write!(f, "unhealthy since {since_ms} ms: {reason}"),
        }
    }
}

/// A fault in force: why, since when, and when it was last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fault {
    reason: String,
    since_ms: u64,
    last_ms: u64,
}

impl Fault {
    fn raise(slot: &mut Option<Fault>, reason: String, now_ms: u64) {
        match slot {
            Some(f) => {
                f.reason = reason;
                f.last_ms = f.last_ms.max(now_ms);
            }
            None => *slot = Some(Fault { reason, since_ms: now_ms, last_ms: now_ms }),
        }
    }

    fn quiet_since(&self, now_ms: u64, quiet_ms: u64) -> bool {
        now_ms.saturating_sub(self.last_ms) >= quiet_ms && now_ms >= self.last_ms
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct GpuState {
    /// A fatal Xid, a failed probe, or an instance-class Xid with no GPU instance.
    fatal: Option<Fault>,
    /// An unknown Xid.
    degraded: Option<Fault>,
    /// Unhealthy GPU instances, by GPU-instance id.
    instances: BTreeMap<u32, Fault>,
}

/// Health of every GPU and GPU instance, from Xid events and probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthTracker {
    recovery_quiet_ms: u64,
    gpus: BTreeMap<u32, GpuState>,
}

/// How long a GPU must stay quiet before a successful probe clears a fault, by default.
pub const DEFAULT_RECOVERY_QUIET_MS: u64 = 60_000;

impl Default for HealthTracker {
    fn default() -> Self {
        HealthTracker::new(DEFAULT_RECOVERY_QUIET_MS)
    }
}

impl HealthTracker {
    /// A tracker where everything is healthy; faults clear after `recovery_quiet_ms` of quiet.
    pub fn new(recovery_quiet_ms: u64) -> Self {
        HealthTracker { recovery_quiet_ms, gpus: BTreeMap::new() }
    }

    pub fn recovery_quiet_ms(&self) -> u64 {
        self.recovery_quiet_ms
    }

    /// Take an Xid event into account.
    pub fn record(&mut self, event: &XidEvent, now_ms: u64) {
        let class = classify(event.xid);
        let reason = format!("Xid {} ({}): {}", class.xid, class.name, class.action);
        match class.severity {
            Severity::Application | Severity::Informational => {}
            Severity::GpuFatal => Fault::raise(&mut self.gpu_mut(event.gpu).fatal, reason, now_ms),
            Severity::Unknown => Fault::raise(&mut self.gpu_mut(event.gpu).degraded, reason, now_ms),
            Severity::Instance => {
                let state = self.gpu_mut(event.gpu);
                match event.gpu_instance_id {
                    Some(gi) => {
                        let mut slot = state.instances.remove(&gi);
                        Fault::raise(&mut slot, reason, now_ms);
                        if let Some(f) = slot {
                            state.instances.insert(gi, f);
                        }
                    }
                    // Without MIG the whole GPU is the instance.
                    None => Fault::raise(&mut state.fatal, reason, now_ms),
                }
            }
        }
    }

    /// The result of a health probe (NVML answers for the GPU). A failed probe makes the GPU
    /// unhealthy; a successful one at least `recovery_quiet_ms` after a fault's last event
    /// clears that fault.
    pub fn probe(&mut self, gpu: u32, ok: bool, now_ms: u64) {
        let quiet = self.recovery_quiet_ms;
        if !ok {
            Fault::raise(
                &mut self.gpu_mut(gpu).fatal,
                "the health probe failed: NVML does not answer for it".into(),
                now_ms,
            );
            return;
        }
        let Some(state) = self.gpus.get_mut(&gpu) else {
            return;
        };
        if state.fatal.as_ref().is_some_and(|f| f.quiet_since(now_ms, quiet)) {
            state.fatal = None;
        }
        if state.degraded.as_ref().is_some_and(|f| f.quiet_since(now_ms, quiet)) {
            state.degraded = None;
        }
        state.instances.retain(|_, f| !f.quiet_since(now_ms, quiet));
        if *state == GpuState::default() {
            self.gpus.remove(&gpu);
        }
    }

    /// A GPU instance was destroyed and created again (GPU-instance ids are reused): it starts
    /// healthy. The parent GPU's own faults stay.
    pub fn instance_recreated(&mut self, gpu: u32, gpu_instance_id: u32, _now_ms: u64) {
        if let Some(state) = self.gpus.get_mut(&gpu) {
            state.instances.remove(&gpu_instance_id);
            if *state == GpuState::default() {
                self.gpus.remove(&gpu);
            }
        }
    }

    /// The GPU's health: unhealthy on a fatal fault, degraded on an unknown Xid or an unhealthy
    /// instance, healthy otherwise.
    pub fn gpu_health(&self, gpu: u32) -> Health {
        let Some(state) = self.gpus.get(&gpu) else {
            return Health::Healthy;
        };
        if let Some(f) = &state.fatal {
            return Health::Unhealthy { reason: f.reason.clone(), since_ms: f.since_ms };
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
        if let Some(f) = &state.fatal {
            return Health::Unhealthy { reason: format!("GPU {gpu}: {}", f.reason), since_ms: f.since_ms };
        }
        if let Some(f) = state.instances.get(&gpu_instance_id) {
            return Health::Unhealthy { reason: f.reason.clone(), since_ms: f.since_ms };
        }
        if let Some(f) = &state.degraded {
            return Health::Degraded { reason: format!("GPU {gpu}: {}", f.reason) };
        }
        Health::Healthy
    }

    /// GPUs that are not healthy, by index.
    pub fn troubled_gpus(&self) -> Vec<u32> {
        self.gpus.keys().copied().collect()
    }

    fn gpu_mut(&mut self, gpu: u32) -> &mut GpuState {
        self.gpus.entry(gpu).or_default()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ev(gpu: u32, xid: u64, gi: Option<u32>) -> XidEvent {
        XidEvent { gpu, xid, gpu_instance_id: gi, compute_instance_id: gi.map(|_| 0) }
    }

    #[test]
    fn the_table_is_sorted_and_classifies() {
        assert!(XIDS.windows(2).all(|w| w[0].0 < w[1].0), "XIDS must be sorted for binary search");
        let table = [
            (13, Severity::Application),
            (31, Severity::Application),
            (43, Severity::Application),
            (45, Severity::Application),
            (109, Severity::Application),
            (94, Severity::Instance),
            (48, Severity::GpuFatal),
            (64, Severity::GpuFatal),
            (74, Severity::GpuFatal),
            (79, Severity::GpuFatal),
            (92, Severity::GpuFatal),
            (95, Severity::GpuFatal),
            (119, Severity::GpuFatal),
            (120, Severity::GpuFatal),
            (140, Severity::GpuFatal),
            (63, Severity::Informational),
            (12345, Severity::Unknown),
            (0, Severity::Unknown),
        ];
        for (xid, want) in table {
            let c = classify(xid);
            assert_eq!(c.severity, want, "Xid {xid}");
            assert_eq!(c.xid, xid);
            assert!(!c.name.is_empty() && !c.action.is_empty());
        }
        assert_eq!(classify(79).name, "GPU has fallen off the bus");
        assert_eq!(classify(48).name, "Double Bit ECC Error");
    }

    #[test]
    fn fatal_then_quiet_probe_recovers() {
        let mut t = HealthTracker::new(1000);
        t.record(&ev(0, 48, None), 100);
        assert!(matches!(t.gpu_health(0), Health::Unhealthy { since_ms: 100, .. }));
        assert!(t.instance_health(0, 3).is_unhealthy());
        assert!(t.gpu_health(1).is_healthy());
        t.probe(0, true, 500);
        assert!(t.gpu_health(0).is_unhealthy(), "too soon");
        t.record(&ev(0, 48, None), 600);
        t.probe(0, true, 1200);
        assert!(t.gpu_health(0).is_unhealthy(), "quiet is counted from the last fatal event");
        t.probe(0, true, 1600);
        assert!(t.gpu_health(0).is_healthy());
        assert!(t.instance_health(0, 3).is_healthy());
        assert!(t.troubled_gpus().is_empty());
    }

    #[test]
    fn failed_probe_is_unhealthy_until_a_quiet_success() {
        let mut t = HealthTracker::new(1000);
        t.probe(2, false, 10);
        let h = t.gpu_health(2);
        assert!(h.to_string().contains("does not answer"), "{h}");
        t.probe(2, true, 500);
        assert!(t.gpu_health(2).is_unhealthy());
        t.probe(2, true, 1010);
        assert!(t.gpu_health(2).is_healthy());
    }

    #[test]
    fn instance_fault_is_contained_and_recovers_on_recreate() {
        let mut t = HealthTracker::new(1000);
        t.record(&ev(0, 94, Some(7)), 5);
        assert!(t.instance_health(0, 7).is_unhealthy());
        assert!(t.instance_health(0, 8).is_healthy());
        assert!(matches!(t.gpu_health(0), Health::Degraded { .. }));
        t.instance_recreated(0, 7, 20);
        assert!(t.instance_health(0, 7).is_healthy());
        assert!(t.gpu_health(0).is_healthy());
        // Or after a quiet probe.
        t.record(&ev(0, 94, Some(9)), 30);
        t.probe(0, true, 1029);
        assert!(t.instance_health(0, 9).is_unhealthy());
        t.probe(0, true, 1030);
        assert!(t.instance_health(0, 9).is_healthy());
        // Without a GPU instance (MIG off) the GPU is the instance.
        t.record(&ev(1, 94, None), 40);
        assert!(t.gpu_health(1).is_unhealthy());
    }

    #[test]
    fn unknown_xids_degrade_without_fencing() {
        let mut t = HealthTracker::new(10);
        t.record(&ev(0, 999, None), 0);
        assert!(matches!(t.gpu_health(0), Health::Degraded { .. }));
        assert!(matches!(t.instance_health(0, 1), Health::Degraded { .. }));
        t.probe(0, true, 10);
        assert!(t.gpu_health(0).is_healthy());
        let shown = serde_json::to_value(Health::Unhealthy { reason: "x".into(), since_ms: 3 }).unwrap();
        assert_eq!(shown["state"], "unhealthy");
    }

    #[derive(Debug, Clone)]
    enum Op {
        Xid(XidEvent),
        Probe(u32, bool),
        Recreated(u32, u32),
    }

    fn op() -> impl Strategy<Value = (Op, u64)> {
        let xid = prop::sample::select(vec![13u64, 31, 43, 45, 109, 94, 48, 79, 95, 63, 999]);
        let gi = prop::option::of(0u32..4);
        let ev = (0u32..2, xid, gi).prop_map(|(gpu, xid, gi)| Op::Xid(ev(gpu, xid, gi)));
        let probe = (0u32..2, any::<bool>()).prop_map(|(g, ok)| Op::Probe(g, ok));
        let rec = (0u32..2, 0u32..4).prop_map(|(g, gi)| Op::Recreated(g, gi));
        (prop_oneof![4 => ev, 3 => probe, 1 => rec], 0u64..700)
    }

    fn apply(t: &mut HealthTracker, ops: &[(Op, u64)]) -> Vec<u64> {
        let mut now = 0;
        let mut times = Vec::new();
        for (op, dt) in ops {
            now += dt;
            times.push(now);
            match op {
                Op::Xid(e) => t.record(e, now),
                Op::Probe(g, ok) => t.probe(*g, *ok, now),
                Op::Recreated(g, gi) => t.instance_recreated(*g, *gi, now),
            }
        }
        times
    }

    fn snapshot(t: &HealthTracker) -> Vec<Health> {
        (0..2)
            .flat_map(|g| {
                std::iter::once(t.gpu_health(g))
                    .chain((0..4).map(move |gi| (g, gi)).map(|(g, gi)| t.instance_health(g, gi)))
            })
            .collect()
    }

    proptest! {
        #[test]
        fn parent_fatal_makes_every_instance_unhealthy(ops in prop::collection::vec(op(), 0..30), gpu in 0u32..2, xid in prop::sample::select(vec![48u64, 79, 95, 119])) {
            let mut t = HealthTracker::new(1000);
            let times = apply(&mut t, &ops);
            let now = times.last().copied().unwrap_or(0);
            t.record(&ev(gpu, xid, None), now);
            prop_assert!(t.gpu_health(gpu).is_unhealthy());
            for gi in 0..15 {
                prop_assert!(t.instance_health(gpu, gi).is_unhealthy(), "instance {} of GPU {}", gi, gpu);
            }
        }

        #[test]
        fn recovery_needs_a_quiet_successful_probe(ops in prop::collection::vec(op(), 0..40)) {
            let quiet = 1000;
            let mut t = HealthTracker::new(quiet);
            let mut now = 0;
            // Per GPU: the time of the last fatal event (GPU-level), if any is in force.
            let mut last_fatal: BTreeMap<u32, u64> = BTreeMap::new();
            for (op, dt) in &ops {
                now += dt;
                match op {
                    Op::Xid(e) => {
                        t.record(e, now);
                        let sev = classify(e.xid).severity;
                        if sev == Severity::GpuFatal || (sev == Severity::Instance && e.gpu_instance_id.is_none()) {
                            last_fatal.insert(e.gpu, now);
                        }
                    }
                    Op::Probe(g, ok) => {
                        t.probe(*g, *ok, now);
                        if !ok {
                            last_fatal.insert(*g, now);
                        } else if last_fatal.get(g).is_some_and(|&at| now - at >= quiet) {
                            last_fatal.remove(g);
                        }
                    }
                    Op::Recreated(g, gi) => t.instance_recreated(*g, *gi, now),
                }
                for g in 0..2 {
                    prop_assert_eq!(t.gpu_health(g).is_unhealthy(), last_fatal.contains_key(&g), "GPU {} at {}", g, now);
                }
            }
        }

        #[test]
        fn application_xids_never_change_health(ops in prop::collection::vec(op(), 0..30), noise in prop::collection::vec((0u32..2, prop::sample::select(vec![13u64, 31, 43, 45, 109, 63]), prop::option::of(0u32..4)), 1..10)) {
            let mut plain = HealthTracker::new(1000);
            let mut noisy = HealthTracker::new(1000);
            let mut now = 0;
            for (i, (op, dt)) in ops.iter().enumerate() {
                now += dt;
                for t in [&mut plain, &mut noisy] {
                    match op {
                        Op::Xid(e) => t.record(e, now),
                        Op::Probe(g, ok) => t.probe(*g, *ok, now),
                        Op::Recreated(g, gi) => t.instance_recreated(*g, *gi, now),
                    }
                }
                let (g, xid, gi) = noise[i % noise.len()];
                noisy.record(&ev(g, xid, gi), now);
                prop_assert_eq!(snapshot(&plain), snapshot(&noisy));
            }
        }
    }
}
