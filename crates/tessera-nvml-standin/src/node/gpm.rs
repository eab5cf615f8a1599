//! NVML's GPU performance monitoring (`nvmlGpm*`, nvml.h's GPM section) over the simulated
//! node's activity model ([`tessera_gpu::sim::activity`]), so the NVML backend's GPM path, and
//! the daemon's utilisation metrics over it, run without a GPU.
//!
//! * `nvmlGpmQueryDeviceSupport`: `isSupportedDevice` is 1 on Hopper and newer, 0 on Ampere
//!   (A100, A30), `SUCCESS` either way; `ARGUMENT_VERSION_MISMATCH` unless the struct's version
//!   is `NVML_GPM_SUPPORT_VERSION` (1).
//! * `nvmlGpmSampleAlloc` / `nvmlGpmSampleFree`: opaque buffers (handles, never dereferenced);
//!   freeing one the library did not hand out is `INVALID_ARGUMENT`.
//! * `nvmlGpmSampleGet` (a GPU handle; a MIG device handle is `INVALID_ARGUMENT`) and
//!   `nvmlGpmMigSampleGet` (the GPU's handle and a GPU-instance id): the activity file is read
//!   first ([`crate::activity`]), then the buffer holds the time and the cumulative counters of
//!   the GPU or GPU instance. `NOT_SUPPORTED` on a GPU without GPM, and for a GPU instance on a
//!   GPU without MIG or with MIG off; `NOT_FOUND` for a GPU-instance id that does not exist.
//! * `nvmlGpmMetricsGet`: each metric from the difference of the two samples over the time
//!   between them ([`tessera_gpu::sim::activity::GpmCounters::metrics_since`]), in percent.
//!
//! nvml.h gives no particular code for a misused `nvmlGpmMetricsGet` ("Nonzero NVML_ERROR_?"),
//! so the stand-in's choices are: a `version` other than `NVML_GPM_METRICS_GET_VERSION` (1) is
//! `ARGUMENT_VERSION_MISMATCH`; more than `NVML_GPM_METRIC_MAX` (210) metrics, a buffer the
//! library did not hand out or no sample was read into, the same buffer as both samples,
//! samples of two different GPUs or GPU instances (a GPU instance destroyed and made again
//! elsewhere is another one), or a second sample not later than the first are all
//! `INVALID_ARGUMENT`, for the whole call. Within a call, each metric has its own return code:
//! `SUCCESS` for the ids modelled ([`tessera_gpu::GpmMetric`]: SM activity and occupancy, any
//! tensor pipe, DRAM bandwidth, FP64/FP32/FP16), `NOT_SUPPORTED` (value 0) for any other id.

use std::ffi::CStr;

use nvml_wrapper_sys::bindings::{
    NVML_GPM_METRICS_GET_VERSION, NVML_GPM_SUPPORT_VERSION, nvmlGpmMetricId_t_NVML_GPM_METRIC_MAX,
};
use tessera_gpu::sim::activity::{GpmCounters, gpm_supported_by};
use tessera_gpu::{GpmMetric, GpmMetrics};

use super::{DeviceRef, Node};
use crate::codes::{ARGUMENT_VERSION_MISMATCH, INVALID_ARGUMENT, NOT_SUPPORTED, NvmlResult};
use crate::handles::{self, Handle};

/// `nvmlGpmSupport_t.version` the library accepts.
pub const GPM_SUPPORT_VERSION: u32 = NVML_GPM_SUPPORT_VERSION;
/// `nvmlGpmMetricsGet_t.version` the library accepts.
pub const GPM_METRICS_GET_VERSION: u32 = NVML_GPM_METRICS_GET_VERSION;
/// The most metrics one `nvmlGpmMetricsGet` may ask for (nvml-wrapper-sys 0.10's nvml.h).
pub const GPM_METRIC_MAX: u32 = nvmlGpmMetricId_t_NVML_GPM_METRIC_MAX;

/// What a sample was taken of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Gpu(u32),
    /// A GPU instance, with its profile and start: one destroyed and made again elsewhere under
    /// the same id is another instance.
    Instance {
        gpu: u32,
        id: u32,
        profile_id: u32,
        start: u8,
    },
}

/// A sample buffer's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Sample {
    target: Target,
    counters: GpmCounters,
}

/// The metrics between two samples, as `nvmlGpmMetricsGet` reports each one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpmValues(GpmMetrics);

impl GpmValues {
    /// One metric's value in NVML's unit (percent), or its own return code: `NOT_SUPPORTED` for
    /// an id the stand-in does not model.
    pub fn value(&self, id: u32) -> NvmlResult<f64> {
        let metric = GpmMetric::from_nvml_id(id).ok_or(NOT_SUPPORTED)?;
        self.0.get(metric).map(|v| v * 100.0).ok_or(NOT_SUPPORTED)
    }

    /// The `metricInfo` names of a modelled id: short name (nvml.h's enum name without
    /// `NVML_GPM_METRIC_`), long name and unit. The stand-in's own wording; NVML's strings are
    /// static too.
    pub fn info(id: u32) -> Option<(&'static CStr, &'static CStr, &'static CStr)> {
        Some(match GpmMetric::from_nvml_id(id)? {
            GpmMetric::SmActive => (c"SM_UTIL", c"SM activity", c"%"),
            GpmMetric::SmOccupancy => (c"SM_OCCUPANCY", c"SM occupancy", c"%"),
            GpmMetric::TensorActive => (c"ANY_TENSOR_UTIL", c"Any tensor pipe activity", c"%"),
            GpmMetric::DramActive => (c"DRAM_BW_UTIL", c"DRAM bandwidth utilization", c"%"),
            GpmMetric::Fp64Active => (c"FP64_UTIL", c"FP64 pipe activity", c"%"),
            GpmMetric::Fp32Active => (c"FP32_UTIL", c"FP32 pipe activity", c"%"),
            GpmMetric::Fp16Active => (c"FP16_UTIL", c"FP16 pipe activity", c"%"),
        })
    }
}

impl Node {
    /// Declare what the activity file says, if it changed ([`crate::activity`]).
    fn apply_activity(&mut self) {
        let Some(feed) = self.activity.as_mut() else { return };
        let declaration = match feed.poll() {
            Ok(Some(d)) => d,
            Ok(None) => return,
            Err(e) => {
                eprintln!("tessera-nvml-standin: activity file: {e}");
                return;
            }
        };
        for e in &declaration.errors {
            eprintln!("tessera-nvml-standin: {}: {e}", feed.path().display());
        }
        if let Err(e) = self.sim.replace_activity(&declaration.lines, declaration.written) {
            eprintln!("tessera-nvml-standin: {}: not applied: {e}", feed.path().display());
        }
    }

    /// `nvmlGpmQueryDeviceSupport`: whether the GPU (a MIG device: its GPU) has GPM.
    pub fn gpm_query_support(&self, h: Handle, version: u32) -> NvmlResult<bool> {
        let gpu = match self.device(h)? {
            DeviceRef::Gpu(gpu) => gpu,
            DeviceRef::Mig(m) => m.gpu,
        };
        if version != GPM_SUPPORT_VERSION {
            return Err(ARGUMENT_VERSION_MISMATCH);
        }
        Ok(gpm_supported_by(self.model(gpu)))
    }

    /// `nvmlGpmSampleAlloc`: a new, empty buffer.
    pub fn gpm_sample_alloc(&mut self) -> Handle {
        let h = handles::new_gpm_sample();
        self.gpm_samples.insert(h, None);
        h
    }

    /// `nvmlGpmSampleFree`.
    pub fn gpm_sample_free(&mut self, sample: Handle) -> NvmlResult<()> {
        self.gpm_samples.remove(&sample).ok_or(INVALID_ARGUMENT)?;
        handles::free_gpm_sample(sample);
        Ok(())
    }

    /// `nvmlGpmSampleGet` (`gpu_instance` `None`) and `nvmlGpmMigSampleGet`: read the GPU's or
    /// GPU instance's counters into `sample`.
    pub fn gpm_sample_get(&mut self, device: Handle, gpu_instance: Option<u32>, sample: Handle) -> NvmlResult<()> {
        if !self.gpm_samples.contains_key(&sample) {
            return Err(INVALID_ARGUMENT);
        }
        let gpu = self.gpu(device)?;
        if gpu_instance.is_some() {
            self.mig_capable(gpu)?;
        }
        self.apply_activity();
        let counters = self.backend(self.sim.gpm_counters(gpu, gpu_instance))?;
        let target = match gpu_instance {
            None => Target::Gpu(gpu),
            Some(id) => {
                let gi = self.gpu_instance_list(gpu)?.into_iter().find(|g| g.id == id).ok_or(INVALID_ARGUMENT)?;
                Target::Instance { gpu, id, profile_id: gi.profile_id, start: gi.placement.start }
            }
        };
        self.gpm_samples.insert(sample, Some(Sample { target, counters }));
        Ok(())
    }

    /// `nvmlGpmMetricsGet`'s checks and arithmetic (see the module header for its codes).
    pub fn gpm_metrics(&self, version: u32, num_metrics: u32, first: Handle, second: Handle) -> NvmlResult<GpmValues> {
        if version != GPM_METRICS_GET_VERSION {
            return Err(ARGUMENT_VERSION_MISMATCH);
        }
        if num_metrics > GPM_METRIC_MAX || first == second {
            return Err(INVALID_ARGUMENT);
        }
        let sample = |h: Handle| self.gpm_samples.get(&h).copied().flatten().ok_or(INVALID_ARGUMENT);
        let (a, b) = (sample(first)?, sample(second)?);
        if a.target != b.target {
            return Err(INVALID_ARGUMENT);
        }
        b.counters.metrics_since(&a.counters).map(GpmValues).ok_or(INVALID_ARGUMENT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_percent_and_unmodelled_ids_are_not_supported() {
        let mut m = GpmMetrics::default();
        m.set(GpmMetric::SmActive, Some(0.25));
        let v = GpmValues(m);
        assert_eq!(v.value(2), Ok(25.0));
        assert_eq!(v.value(3), Err(NOT_SUPPORTED), "no value given");
        assert_eq!(v.value(1), Err(NOT_SUPPORTED), "graphics activity is not modelled");
        assert_eq!(v.value(9999), Err(NOT_SUPPORTED));
        assert_eq!(GpmValues::info(10).map(|i| i.0), Some(c"DRAM_BW_UTIL"));
        assert_eq!(GpmValues::info(1), None);
        assert!(GpmMetric::ALL.iter().all(|m| GpmValues::info(m.nvml_id()).is_some()));
    }
}
