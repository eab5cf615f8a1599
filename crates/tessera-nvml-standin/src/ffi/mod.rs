//! The C ABI: every exported `nvml*` function, and the pointer helpers they share.
//!
//! This is the only place that may use `unsafe` (the crate denies it elsewhere): exporting
//! unmangled symbols and reading and writing through the caller's pointers is what an NVML
//! stand-in is. Every function here only converts: pointers to [`Handle`] numbers (never
//! dereferenced), NVML arguments to calls of [`crate::node`], and results to writes through the
//! out-pointers, each `unsafe` block with the nvml.h contract that makes it sound. A null
//! pointer is `NVML_ERROR_INVALID_ARGUMENT`; no panic crosses the boundary ([`crate::node::guard`]).
//!
//! Argument and struct types are those of `nvml_wrapper_sys::bindings` (bindgen output of nvml.h,
//! NVML API 13), and a compile-time check (the `exports!` macro) makes every export's signature equal to
//! the field of `NvmlLib` a caller loads it into, so the ABI matches by construction.
//!
//! The safety contract of every export is nvml.h's: each pointer argument is null or valid for the
//! reads and writes nvml.h documents for it (for arrays, as many elements as the accompanying
//! count or size says).
#![allow(unsafe_code)]
#![allow(clippy::missing_safety_doc)] // The contract is nvml.h's, stated once above.

mod device;
mod events;
mod gpm;
mod mig;
mod system;

use std::os::raw::{c_char, c_uint};

use nvml_wrapper_sys::bindings::NvmlLib;

pub use device::*;
pub use events::*;
pub use gpm::*;
pub use mig::*;
pub use system::*;

use crate::codes::{INSUFFICIENT_SIZE, INVALID_ARGUMENT, NvmlResult};
use crate::handles::Handle;

/// Lists every export once: as [`EXPORTS`] (the names a fault rule may use) and in a
/// compile-time check that each function's type is exactly the one `NvmlLib` loads it as.
macro_rules! exports {
    ($($name:ident),* $(,)?) => {
        /// Every function this library exports, by name.
        pub const EXPORTS: &[&str] = &[$(stringify!($name)),*];

        /// Never called: it only compiles if every export has the signature of the `NvmlLib`
        /// field of the same name (bindgen's rendering of nvml.h).
        #[allow(dead_code)]
        fn abi_check(lib: &NvmlLib) {
            fn same_type<T, E>(_: &Result<T, E>, _: T) {}
            $( same_type(&lib.$name, $name); )*
        }
    };
}

exports! {
    nvmlInit_v2,
    nvmlInitWithFlags,
    nvmlShutdown,
    nvmlErrorString,
    nvmlSystemGetDriverVersion,
    nvmlSystemGetNVMLVersion,
    nvmlSystemGetCudaDriverVersion_v2,
    nvmlDeviceGetCount_v2,
    nvmlDeviceGetHandleByIndex_v2,
    nvmlDeviceGetHandleByUUID,
    nvmlDeviceGetIndex,
    nvmlDeviceGetUUID,
    nvmlDeviceGetName,
    nvmlDeviceGetPciInfo_v3,
    nvmlDeviceGetMinorNumber,
    nvmlDeviceGetMemoryInfo,
    nvmlDeviceGetMemoryInfo_v2,
    nvmlDeviceGetCpuAffinity,
    nvmlDeviceGetCpuAffinityWithinScope,
    nvmlDeviceGetMemoryAffinity,
    nvmlDeviceGetNumaNodeId,
    nvmlDeviceGetMigMode,
    nvmlDeviceSetMigMode,
    nvmlDeviceGetGpuInstanceProfileInfo,
    nvmlDeviceGetGpuInstanceProfileInfoV,
    nvmlDeviceGetGpuInstancePossiblePlacements_v2,
    nvmlDeviceGetGpuInstanceRemainingCapacity,
    nvmlDeviceCreateGpuInstance,
    nvmlDeviceCreateGpuInstanceWithPlacement,
    nvmlGpuInstanceDestroy,
    nvmlDeviceGetGpuInstances,
    nvmlDeviceGetGpuInstanceById,
    nvmlGpuInstanceGetInfo,
    nvmlGpuInstanceGetComputeInstanceProfileInfo,
    nvmlGpuInstanceGetComputeInstanceProfileInfoV,
    nvmlGpuInstanceGetComputeInstanceRemainingCapacity,
    nvmlGpuInstanceCreateComputeInstance,
    nvmlComputeInstanceDestroy,
    nvmlGpuInstanceGetComputeInstances,
    nvmlGpuInstanceGetComputeInstanceById,
    nvmlComputeInstanceGetInfo_v2,
    nvmlDeviceGetMaxMigDeviceCount,
    nvmlDeviceGetMigDeviceHandleByIndex,
    nvmlDeviceGetDeviceHandleFromMigDeviceHandle,
    nvmlDeviceIsMigDeviceHandle,
    nvmlDeviceGetGpuInstanceId,
    nvmlDeviceGetComputeInstanceId,
    nvmlDeviceGetComputeRunningProcesses_v3,
    nvmlDeviceGetFieldValues,
    nvmlEventSetCreate,
    nvmlDeviceRegisterEvents,
    nvmlDeviceGetSupportedEventTypes,
    nvmlEventSetWait_v2,
    nvmlEventSetFree,
    nvmlGpmQueryDeviceSupport,
    nvmlGpmSampleAlloc,
    nvmlGpmSampleFree,
    nvmlGpmSampleGet,
    nvmlGpmMigSampleGet,
    nvmlGpmMetricsGet,
}

/// The number a handle pointer stands for (its address; never dereferenced).
fn handle<T>(p: *mut T) -> Handle {
    p.expose_provenance()
}

/// The pointer handed to the caller for a handle.
fn pointer<T>(h: Handle) -> *mut T {
    std::ptr::with_exposed_provenance_mut(h)
}

/// `INVALID_ARGUMENT` for a null pointer.
fn need<T>(p: *const T) -> NvmlResult<()> {
    if p.is_null() { Err(INVALID_ARGUMENT) } else { Ok(()) }
}

/// `NVML_STRUCT_VERSION(T, ver)`: the size of the struct with the version in the top byte.
const fn struct_version<T>(ver: u32) -> u32 {
    // Every versioned NVML struct is far smaller than 2^24 bytes.
    (size_of::<T>() as u32) | (ver << 24)
}

/// A fixed-size C string field: `s` truncated to leave room for the NUL.
fn c_array<const N: usize>(s: &str) -> [c_char; N] {
    let mut out = [0 as c_char; N];
    for (dst, src) in out.iter_mut().zip(s.bytes().take(N.saturating_sub(1))) {
        *dst = src as c_char;
    }
    out
}

/// Write `v` through an out-pointer.
///
/// # Safety
/// `p` is null or valid for a write of `T` (nvml.h's contract for out-parameters).
unsafe fn put<T>(p: *mut T, v: T) -> NvmlResult<()> {
    need(p)?;
    // SAFETY: non-null (checked above) and, by the caller's contract, valid and aligned for `T`.
    unsafe { p.write(v) };
    Ok(())
}

/// Copy `s` and its NUL into a caller's buffer of `length` bytes; `INSUFFICIENT_SIZE` (writing
/// nothing) when it does not fit.
///
/// # Safety
/// `buf` is null or valid for writes of `length` bytes.
unsafe fn put_str(buf: *mut c_char, length: c_uint, s: &str) -> NvmlResult<()> {
    need(buf)?;
    if (length as usize) < s.len() + 1 {
        return Err(INSUFFICIENT_SIZE);
    }
    // SAFETY: `buf` is non-null and valid for `length` >= s.len() + 1 bytes (caller's contract),
    // and `s` cannot overlap a buffer the caller owns.
    unsafe {
        std::ptr::copy_nonoverlapping(s.as_ptr().cast::<c_char>(), buf, s.len());
        buf.add(s.len()).write(0);
    }
    Ok(())
}

/// Fill a caller's array whose capacity `*count` gives: `INSUFFICIENT_SIZE` with the needed count
/// written back when it is too small, else the items and their count.
///
/// # Safety
/// `count` is null or valid for a read and a write of `c_uint`; `buf` is null or valid for writes
/// of `*count` elements.
unsafe fn put_list<T>(buf: *mut T, count: *mut c_uint, items: Vec<T>) -> NvmlResult<()> {
    need(count)?;
    let needed = c_uint::try_from(items.len()).map_err(|_| crate::codes::UNKNOWN)?;
    // SAFETY: `count` is non-null and valid for reads (caller's contract).
    let capacity = unsafe { count.read() };
    if capacity < needed {
        // SAFETY: as above, valid for writes.
        unsafe { count.write(needed) };
        return Err(INSUFFICIENT_SIZE);
    }
    if needed > 0 {
        need(buf)?;
        // SAFETY: `buf` is non-null and valid for `capacity` >= `needed` elements (caller's contract).
        unsafe { std::ptr::copy_nonoverlapping(items.as_ptr(), buf, items.len()) };
    }
    // SAFETY: `count` is valid for writes (caller's contract).
    unsafe { count.write(needed) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_arrays_truncate_and_terminate() {
        let a: [c_char; 8] = c_array("abc");
        assert_eq!(&a[..4], &[b'a' as c_char, b'b' as c_char, b'c' as c_char, 0]);
        let b: [c_char; 4] = c_array("abcdef");
        assert_eq!(b, [b'a' as c_char, b'b' as c_char, b'c' as c_char, 0]);
    }

    #[test]
    fn struct_versions_match_nvml_h() {
        use nvml_wrapper_sys::bindings::*;
        // nvml.h: nvmlMemory_v2 = 0x02000028 (pynvml spells it out).
        assert_eq!(struct_version::<nvmlMemory_v2_t>(2), 0x0200_0028);
        assert_eq!(struct_version::<nvmlGpuInstanceProfileInfo_v2_t>(2) >> 24, 2);
    }

    #[test]
    fn every_exported_function_is_listed_once() {
        let sources = [
            include_str!("system.rs"),
            include_str!("device.rs"),
            include_str!("mig.rs"),
            include_str!("events.rs"),
            include_str!("gpm.rs"),
        ];
        let mut found: Vec<String> = Vec::new();
        for src in sources {
            let mut rest = src;
            while let Some(at) = rest.find("pub unsafe extern \"C\" fn ") {
                rest = &rest[at + "pub unsafe extern \"C\" fn ".len()..];
                let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                // Each export names itself when it counts its call.
                let body_end = rest.find("\n}\n").unwrap_or(rest.len());
                let body = &rest[..body_end];
                let counted = body.contains(&format!("\"{name}\"")) || name == "nvmlErrorString";
                assert!(counted, "{name} does not pass its own name to the call counter");
                found.push(name);
            }
        }
        let mut listed: Vec<String> = EXPORTS.iter().map(|s| s.to_string()).collect();
        found.sort();
        listed.sort();
        assert_eq!(found, listed);
    }
}
