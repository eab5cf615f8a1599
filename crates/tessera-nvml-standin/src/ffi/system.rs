//! Exports: initialisation, error strings and system queries.
//!
//! `unsafe` is allowed here because these are `#[unsafe(no_mangle)] extern "C"` exports that
//! write through the caller's pointers; see the parent module for the contract.
#![allow(unsafe_code)]
#![allow(non_snake_case)] // Parameter names are nvml.h's.

use std::os::raw::{c_char, c_int, c_uint};

use nvml_wrapper_sys::bindings::nvmlReturn_t;

use super::{put, put_str};
use crate::codes;
use crate::node::{self, call, call_any, status};

/// Initialise (or count one more initialisation); the first reads the configuration.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlInit_v2() -> nvmlReturn_t {
    node::init("nvmlInit_v2", super::EXPORTS)
}

/// As `nvmlInit_v2`; the flags change nothing here.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlInitWithFlags(_flags: c_uint) -> nvmlReturn_t {
    node::init("nvmlInitWithFlags", super::EXPORTS)
}

/// Count one shutdown; the last drops all state, so the next init starts afresh.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlShutdown() -> nvmlReturn_t {
    node::shutdown("nvmlShutdown")
}

/// NVIDIA's text for a return code, as a static NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlErrorString(result: nvmlReturn_t) -> *const c_char {
    codes::error_string(result).as_ptr()
}

/// `TESSERA_STANDIN_DRIVER_VERSION` (default `580.65.06`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetDriverVersion(version: *mut c_char, length: c_uint) -> nvmlReturn_t {
    status(call("nvmlSystemGetDriverVersion", |node| {
        let text = node.driver_version();
        // SAFETY: nvml.h: `version` is null or valid for `length` bytes.
        unsafe { put_str(version, length, &text) }
    }))
}

/// `<CUDA major>.<driver version>`, e.g. `13.580.65.06`; works before `nvmlInit_v2`, as NVML's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetNVMLVersion(version: *mut c_char, length: c_uint) -> nvmlReturn_t {
    status(call_any("nvmlSystemGetNVMLVersion", || {
        let text = node::nvml_version()?;
        // SAFETY: nvml.h: `version` is null or valid for `length` bytes.
        unsafe { put_str(version, length, &text) }
    }))
}

/// The CUDA version the driver branch ships (13000 for R580); works before `nvmlInit_v2`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetCudaDriverVersion_v2(cudaDriverVersion: *mut c_int) -> nvmlReturn_t {
    status(call_any("nvmlSystemGetCudaDriverVersion_v2", || {
        let v = node::cuda_driver_version()?;
        // SAFETY: nvml.h: `cudaDriverVersion` is null or valid for a write.
        unsafe { put(cudaDriverVersion, v) }
    }))
}
