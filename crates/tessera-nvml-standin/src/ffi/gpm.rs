//! Exports: GPU performance monitoring (`nvmlGpm*`): support, sample buffers, samples of a GPU
//! or GPU instance, and the metrics between two samples ([`crate::node`]'s `gpm` module has the
//! semantics and the return codes).
//!
//! `unsafe` is allowed here because these are `#[unsafe(no_mangle)] extern "C"` exports that
//! read and write through the caller's pointers; see the parent module for the contract.
//! `nvmlGpmMetricsGet_t` is touched field by field through raw places, never as a whole struct,
//! and only its first `numMetrics` metrics: a caller built with another nvml.h has another
//! `NVML_GPM_METRIC_MAX` (98 in CUDA 12.2's, 333 in later ones), so its array may be shorter
//! than this build's.
#![allow(unsafe_code)]
#![allow(non_snake_case)] // Parameter names are nvml.h's.

use std::os::raw::c_uint;

use nvml_wrapper_sys::bindings::*;

use super::{handle, need, pointer, put};
use crate::codes::SUCCESS;
use crate::node::{GpmValues, call, status};

/// Whether the device supports GPM: `isSupportedDevice` 1 on Hopper and newer, 0 before.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlGpmQueryDeviceSupport(
    device: nvmlDevice_t,
    gpmSupport: *mut nvmlGpmSupport_t,
) -> nvmlReturn_t {
    status(call("nvmlGpmQueryDeviceSupport", |node| {
        need(gpmSupport)?;
        // SAFETY: non-null; nvml.h: `gpmSupport` is valid for reads and writes of the struct.
        let version = unsafe { (&raw const (*gpmSupport).version).read() };
        let supported = node.gpm_query_support(handle(device), version)?;
        // SAFETY: as above.
        unsafe { (&raw mut (*gpmSupport).isSupportedDevice).write(c_uint::from(supported)) };
        Ok(())
    }))
}

/// A new sample buffer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlGpmSampleAlloc(gpmSample: *mut nvmlGpmSample_t) -> nvmlReturn_t {
    status(call("nvmlGpmSampleAlloc", |node| {
        need(gpmSample)?;
        let h = node.gpm_sample_alloc();
        // SAFETY: nvml.h: `gpmSample` is valid for a write (non-null checked).
        unsafe { put(gpmSample, pointer(h)) }
    }))
}

/// Release a sample buffer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlGpmSampleFree(gpmSample: nvmlGpmSample_t) -> nvmlReturn_t {
    status(call("nvmlGpmSampleFree", |node| node.gpm_sample_free(handle(gpmSample))))
}

/// A sample of the whole GPU.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlGpmSampleGet(device: nvmlDevice_t, gpmSample: nvmlGpmSample_t) -> nvmlReturn_t {
    status(call("nvmlGpmSampleGet", |node| node.gpm_sample_get(handle(device), None, handle(gpmSample))))
}

/// A sample of one GPU instance of the GPU.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlGpmMigSampleGet(
    device: nvmlDevice_t,
    gpuInstanceId: c_uint,
    gpmSample: nvmlGpmSample_t,
) -> nvmlReturn_t {
    status(call("nvmlGpmMigSampleGet", |node| {
        node.gpm_sample_get(handle(device), Some(gpuInstanceId), handle(gpmSample))
    }))
}

/// The metrics `metrics[..numMetrics]` name, between `sample1` and `sample2`: each with its value
/// (percent) and its own return code.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlGpmMetricsGet(metricsGet: *mut nvmlGpmMetricsGet_t) -> nvmlReturn_t {
    status(call("nvmlGpmMetricsGet", |node| {
        need(metricsGet)?;
        // SAFETY: non-null; nvml.h: the struct's fields before `metrics` are valid for reads.
        let (version, count, first, second) = unsafe {
            (
                (&raw const (*metricsGet).version).read(),
                (&raw const (*metricsGet).numMetrics).read(),
                (&raw const (*metricsGet).sample1).read(),
                (&raw const (*metricsGet).sample2).read(),
            )
        };
        let values = node.gpm_metrics(version, count, handle(first), handle(second))?;
        // SAFETY: the array begins at the field `metrics`, inside the caller's struct (a raw
        // place: no reference to the whole array is made).
        let metrics = unsafe { (&raw mut (*metricsGet).metrics).cast::<nvmlGpmMetric_t>() };
        for i in 0..count as usize {
            // SAFETY: `i < numMetrics`, and nvml.h: the caller's array holds `numMetrics` entries
            // (at most NVML_GPM_METRIC_MAX, checked by `gpm_metrics`), each valid for reads and
            // writes.
            let m = unsafe { metrics.add(i) };
            // SAFETY: as above.
            let id = unsafe { (&raw const (*m).metricId).read() };
            let (code, value) = match values.value(id) {
                Ok(v) => (SUCCESS, v),
                Err(code) => (code, 0.0),
            };
            let info = GpmValues::info(id).map_or(
                nvmlGpmMetric_t__bindgen_ty_1 {
                    shortName: std::ptr::null_mut(),
                    longName: std::ptr::null_mut(),
                    unit: std::ptr::null_mut(),
                },
                // Static strings, as NVML's: nvml.h types them `char *`, callers only read them.
                |(short, long, unit)| nvmlGpmMetric_t__bindgen_ty_1 {
                    shortName: short.as_ptr().cast_mut(),
                    longName: long.as_ptr().cast_mut(),
                    unit: unit.as_ptr().cast_mut(),
                },
            );
            // SAFETY: as above: entry `i` is valid for writes.
            unsafe {
                (&raw mut (*m).nvmlReturn).write(code);
                (&raw mut (*m).value).write(value);
                (&raw mut (*m).metricInfo).write(info);
            }
        }
        Ok(())
    }))
}
