//! What the simulated node's GPUs are doing, for GPU performance monitoring (GPM): the one model
//! both the simulated backend and the stand-in NVML library sample, so the daemon's utilisation
//! path is exercised without a GPU.
//!
//! GPM on real GPUs (Hopper and newer; nvml.h's `nvmlGpm*` functions) works on *samples*: a
//! sample holds the GPU's (or one GPU instance's) cumulative activity counters and a timestamp,
//! and a metric is the difference of two samples over the time between them
//! (`nvmlGpmMetricsGet`). The model here is the same:
//!
//! * an [`Activity`] says what a GPU or GPU instance does from some moment on: for each
//!   [`GpmMetric`], the fraction of full activity (0 to 1), held until the next declaration;
//! * a `Track` (kept in the node's state, so every process sharing the node sees it) integrates
//!   the declared activity over time into cumulative counters, in nanoseconds of full activity;
//! * a [`GpmCounters`] is a sample: the counters at one moment;
//!   [`GpmCounters::metrics_since`] is the arithmetic between two samples.
//!
//! Declarations are by GPU-instance id and need not name an instance that exists: an activity
//! describes "the work in GPU instance N", which a test may declare before it makes the instance.
//! The whole GPU (no instance id) has a track of its own; it is not derived from its instances'.
//!
//! Activity files (the stand-in's `TESSERA_STANDIN_ACTIVITY`) hold one declaration a line:
//! `GPU [GI] SM_ACTIVE SM_OCCUPANCY TENSOR_ACTIVE DRAM_ACTIVE [FP64 FP32 FP16]` (GPU and GI are
//! decimal ids, the rest fractions from 0 to 1; 5 or 8 fields without a GPU instance, 6 or 9 with
//! one); blank lines and lines starting with `#` are skipped. A file is the whole node's
//! declaration: what it does not name is idle ([`crate::SimBackend::replace_activity`]).

use serde::{Deserialize, Serialize};
use tessera_mig::GpuModel;

use crate::backend::{GpmMetric, GpmMetrics};

/// How many metrics are modelled (every [`GpmMetric`]).
pub const METRICS: usize = GpmMetric::ALL.len();

/// Parts per million of full activity: how rates are kept (integers, so the state compares
/// exactly and serializes losslessly).
const PPM: u64 = 1_000_000;

/// Whether a GPU model has GPM: Hopper and newer (the catalog's `architecture`). Ampere (A100,
/// A30) does not (`nvmlGpmQueryDeviceSupport` says no there).
pub fn gpm_supported_by(model: &GpuModel) -> bool {
    let arch = model.architecture.as_str();
    arch.starts_with("Hopper") || arch.starts_with("Blackwell")
}

/// What a GPU or GPU instance does: each metric's fraction of full activity, 0 to 1.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Activity {
    fractions: [f64; METRICS],
}

impl Activity {
    /// Nothing running.
    pub const IDLE: Activity = Activity { fractions: [0.0; METRICS] };

    /// The four activities dcgm-exporter's profiling fields show; the FP pipes idle.
    pub fn new(sm_active: f64, sm_occupancy: f64, tensor_active: f64, dram_active: f64) -> Activity {
        Activity::IDLE
            .with(GpmMetric::SmActive, sm_active)
            .with(GpmMetric::SmOccupancy, sm_occupancy)
            .with(GpmMetric::TensorActive, tensor_active)
            .with(GpmMetric::DramActive, dram_active)
    }

    /// The same, with `metric` at `fraction`.
    pub fn with(mut self, metric: GpmMetric, fraction: f64) -> Activity {
        self.fractions[metric.index()] = fraction;
        self
    }

    /// The fraction of one metric.
    pub fn get(&self, metric: GpmMetric) -> f64 {
        self.fractions[metric.index()]
    }

    /// Every fraction must be a number from 0 to 1.
    pub fn check(&self) -> Result<(), String> {
        for m in GpmMetric::ALL {
            let v = self.get(m);
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{} is {v}: an activity is a fraction from 0 to 1", m.name()));
            }
        }
        Ok(())
    }

    /// The fractions in parts per million (checked first: out of range is clamped).
    fn to_ppm(self) -> [u32; METRICS] {
        // In 0..=1 after the clamp, so the product fits a u32.
        self.fractions.map(|f| (f.clamp(0.0, 1.0) * PPM as f64).round() as u32)
    }

    fn from_ppm(ppm: [u32; METRICS]) -> Activity {
        Activity { fractions: ppm.map(|p| f64::from(p) / PPM as f64) }
    }
}

/// One declaration: GPU `gpu` (its GPU instance `gpu_instance_id`, when given) does `activity`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActivityLine {
    pub gpu: u32,
    pub gpu_instance_id: Option<u32>,
    pub activity: Activity,
}

/// Parse one line of an activity file; `Ok(None)` for a blank or comment line.
pub fn parse_line(line: &str) -> Result<Option<ActivityLine>, String> {
    let text = line.trim();
    if text.is_empty() || text.starts_with('#') {
        return Ok(None);
    }
    let fields: Vec<&str> = text.split_whitespace().collect();
    let bad = |why: String| {
        format!(
            "bad activity line '{text}': {why} (expected 'GPU [GI] SM_ACTIVE SM_OCCUPANCY TENSOR_ACTIVE DRAM_ACTIVE \
             [FP64 FP32 FP16]')"
        )
    };
    let id = |s: &str, what: &str| s.parse::<u32>().map_err(|_| bad(format!("{what} '{s}' is not a whole number")));
    let (gpu, gi, values) = match fields.len() {
        5 | 8 => (id(fields[0], "GPU")?, None, &fields[1..]),
        6 | 9 => (id(fields[0], "GPU")?, Some(id(fields[1], "GPU instance")?), &fields[2..]),
        n => return Err(bad(format!("{n} fields"))),
    };
    let mut activity = Activity::IDLE;
    for (m, s) in GpmMetric::ALL.iter().zip(values) {
        let v: f64 = s.parse().map_err(|_| bad(format!("{} '{s}' is not a number", m.name())))?;
        activity = activity.with(*m, v);
    }
    activity.check().map_err(bad)?;
    Ok(Some(ActivityLine { gpu, gpu_instance_id: gi, activity }))
}

/// Parse a whole activity file: the good lines, and an error for each bad one.
pub fn parse(text: &str) -> (Vec<ActivityLine>, Vec<String>) {
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    for l in text.lines() {
        match parse_line(l) {
            Ok(Some(a)) => lines.push(a),
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
    }
    (lines, errors)
}

/// The declared activity of one GPU or GPU instance, integrated over time (part of the node's
/// state).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Track {
    /// The GPU instance; `None`: the whole GPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_instance_id: Option<u32>,
    /// Each metric's rate since `since_us`, in parts per million of full activity.
    rates_ppm: [u32; METRICS],
    /// When the rates were declared, in µs since the epoch.
    since_us: u64,
    /// Each metric's activity integrated up to `since_us`, in nanoseconds of full activity.
    busy_ns: [u64; METRICS],
}

impl Track {
    /// An idle track that starts at `now_us`.
    pub fn new(gpu_instance_id: Option<u32>, now_us: u64) -> Track {
        Track { gpu_instance_id, rates_ppm: [0; METRICS], since_us: now_us, busy_ns: [0; METRICS] }
    }

    /// What it does now.
    pub fn activity(&self) -> Activity {
        Activity::from_ppm(self.rates_ppm)
    }

    /// Whether every rate is within 0..=1 (a state file may have been edited).
    pub fn is_valid(&self) -> bool {
        self.rates_ppm.iter().all(|&r| u64::from(r) <= PPM)
    }

    /// The counters at `now_us` (the declaration time when `now_us` is earlier: the clock went
    /// back, nothing is integrated).
    pub fn counters_at(&self, now_us: u64) -> GpmCounters {
        let dt = u128::from(now_us.saturating_sub(self.since_us));
        let mut busy_ns = self.busy_ns;
        for (b, r) in busy_ns.iter_mut().zip(self.rates_ppm) {
            // rate/1e6 × dt µs × 1000 ns/µs = rate × dt / 1000 ns.
            let add = u64::try_from(u128::from(r) * dt / 1000).unwrap_or(u64::MAX);
            *b = b.saturating_add(add);
        }
        GpmCounters { at_us: now_us.max(self.since_us), busy_ns }
    }

    /// From `now_us` on, it does `activity` (what it did before is integrated up to then).
    pub fn set(&mut self, activity: Activity, now_us: u64) {
        let now = self.counters_at(now_us);
        self.busy_ns = now.busy_ns;
        self.since_us = now.at_us;
        self.rates_ppm = activity.to_ppm();
    }
}

/// A GPM sample: the cumulative activity counters of a GPU or GPU instance at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpmCounters {
    /// When, in µs since the epoch.
    pub at_us: u64,
    /// Each metric's activity so far ([`GpmMetric::index`] order), in nanoseconds of full activity.
    pub busy_ns: [u64; METRICS],
}

impl GpmCounters {
    /// An idle GPU's sample at `at_us` (nothing declared yet).
    pub fn idle(at_us: u64) -> GpmCounters {
        GpmCounters { at_us, busy_ns: [0; METRICS] }
    }

    /// The metrics over the interval from `earlier` to this sample, each as a fraction 0..1:
    /// the activity counted between them over the time between them. `None` when this sample is
    /// not later than `earlier` (no interval to divide by).
    pub fn metrics_since(&self, earlier: &GpmCounters) -> Option<GpmMetrics> {
        let dt_us = self.at_us.checked_sub(earlier.at_us).filter(|&d| d > 0)?;
        let mut m = GpmMetrics { interval_ms: dt_us / 1000, ..GpmMetrics::default() };
        for metric in GpmMetric::ALL {
            let i = metric.index();
            let busy = self.busy_ns[i].saturating_sub(earlier.busy_ns[i]) as f64;
            m.set(metric, Some((busy / (dt_us as f64 * 1000.0)).clamp(0.0, 1.0)));
        }
        Some(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_with_and_without_an_instance() {
        let a = parse_line("0 0.5 0.25 0.125 1").unwrap().unwrap();
        assert_eq!((a.gpu, a.gpu_instance_id), (0, None));
        assert_eq!(a.activity, Activity::new(0.5, 0.25, 0.125, 1.0));
        let b = parse_line("  1\t7 0.9 0.8 0.7 0.6 0.1 0.2 0.3 ").unwrap().unwrap();
        assert_eq!((b.gpu, b.gpu_instance_id), (1, Some(7)));
        assert_eq!(b.activity.get(GpmMetric::Fp16Active), 0.3);
        assert_eq!(b.activity.get(GpmMetric::DramActive), 0.6);
        let c = parse_line("2 0.1 0.2 0.3 0.4 0.5 0.6 0.7").unwrap().unwrap();
        assert_eq!((c.gpu_instance_id, c.activity.get(GpmMetric::Fp64Active)), (None, 0.5));
        assert_eq!(parse_line(""), Ok(None));
        assert_eq!(parse_line("# GPU GI sm occ tensor dram"), Ok(None));
        for (bad, needle) in [
            ("0 0.5 0.5 0.5", "4 fields"),
            ("x 0.5 0.5 0.5 0.5", "GPU 'x'"),
            ("0 y 0.5 0.5 0.5 0.5", "GPU instance 'y'"),
            ("0 1 0.5 z 0.5 0.5", "sm_occupancy 'z'"),
            ("0 1.5 0.5 0.5 0.5", "sm_active is 1.5"),
            ("0 3 0.5 0.5 0.5 -0.1", "dram_active is -0.1"),
            ("0 NaN 0.5 0.5 0.5", "sm_active is NaN"),
        ] {
            let e = parse_line(bad).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
        let (lines, errors) = parse("0 1 1 1 1\nbad\n# c\n1 2 0 0 0 0\n");
        assert_eq!(lines.len(), 2);
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn counters_integrate_the_declared_activity() {
        let mut t = Track::new(Some(3), 1_000_000);
        // Idle for a second, then half busy for two, then fully busy for one.
        t.set(Activity::new(0.5, 0.25, 0.0, 1.0), 2_000_000);
        let a = t.counters_at(2_000_000);
        t.set(Activity::new(1.0, 1.0, 1.0, 1.0), 4_000_000);
        let b = t.counters_at(5_000_000);
        let m = b.metrics_since(&a).unwrap();
        assert_eq!(m.interval_ms, 3000);
        // (0.5×2 + 1×1) / 3, (0.25×2 + 1) / 3, 1/3, 1.
        let near = |v: Option<f64>, want: f64| v.is_some_and(|v| (v - want).abs() < 1e-9);
        assert!(near(m.sm_active, 2.0 / 3.0), "{m:?}");
        assert!(near(m.sm_occupancy, 0.5), "{m:?}");
        assert!(near(m.tensor_active, 1.0 / 3.0), "{m:?}");
        assert!(near(m.dram_active, 1.0), "{m:?}");
        assert!(near(m.fp64_active, 0.0), "{m:?}");
        // From the start: the idle second counts.
        let from_start = b.metrics_since(&GpmCounters::idle(1_000_000)).unwrap();
        assert!(near(from_start.dram_active, 0.75), "{from_start:?}");
        // No interval, or samples the wrong way round: nothing to divide by.
        assert_eq!(b.metrics_since(&b), None);
        assert_eq!(a.metrics_since(&b), None);
        // A clock that goes back integrates nothing.
        assert_eq!(t.counters_at(3_000_000).busy_ns, t.counters_at(4_000_000).busy_ns);
        assert_eq!(t.activity(), Activity::new(1.0, 1.0, 1.0, 1.0));
    }

    #[test]
    fn hopper_and_newer_have_gpm() {
        let cat = tessera_mig::catalog();
        for (model, has) in [
            ("A100-40GB", false),
            ("A30-24GB", false),
            ("H100-80GB", true),
            ("H200-141GB", true),
            ("B200-180GB", true),
            ("B300-269GB", true),
            ("RTX-PRO-6000", true),
        ] {
            assert_eq!(gpm_supported_by(cat.model(model).unwrap()), has, "{model}");
        }
    }
}
