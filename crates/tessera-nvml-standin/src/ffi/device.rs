//! Exports: devices (GPUs and MIG devices), their identity, memory, affinity and processes.
//!
//! `unsafe` is allowed here because these are `#[unsafe(no_mangle)] extern "C"` exports that
//! read and write through the caller's pointers; see the parent module for the contract.
#![allow(unsafe_code)]
#![allow(non_snake_case)] // Parameter names are nvml.h's.

use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_uint, c_ulong};

use nvml_wrapper_sys::bindings::*;

use super::{c_array, handle, need, pointer, put, put_list, put_str, struct_version};
use crate::codes::{INVALID_ARGUMENT, NOT_SUPPORTED, NvmlResult, SUCCESS};
use crate::node::{Memory, NO_INSTANCE, call, status};

/// Bit masks of `c_ulong` words with the given bits set; bits past `words` are dropped, as NVML
/// fills only the array it is given.
fn bitmask(bits: impl IntoIterator<Item = u32>, words: usize) -> Vec<c_ulong> {
    let mut out = vec![0 as c_ulong; words];
    for b in bits {
        let (word, bit) = ((b / c_ulong::BITS) as usize, b % c_ulong::BITS);
        if let Some(w) = out.get_mut(word) {
            *w |= 1 << bit;
        }
    }
    out
}

/// `NVML_AFFINITY_SCOPE_NODE` or `_SOCKET` (the simulated node has one NUMA node per socket).
fn check_scope(scope: nvmlAffinityScope_t) -> NvmlResult<()> {
    match scope {
        NVML_AFFINITY_SCOPE_NODE | NVML_AFFINITY_SCOPE_SOCKET => Ok(()),
        _ => Err(INVALID_ARGUMENT),
    }
}

/// Write a bitmask into a caller's array of `size` words.
///
/// # Safety
/// `set` is null or valid for writes of `size` words.
unsafe fn put_mask(set: *mut c_ulong, size: c_uint, bits: Vec<u32>) -> NvmlResult<()> {
    if size == 0 {
        return Err(INVALID_ARGUMENT);
    }
    need(set)?;
    let words = bitmask(bits, size as usize);
    // SAFETY: `set` is non-null and valid for `size` words (caller's contract); `words` has `size`.
    unsafe { std::ptr::copy_nonoverlapping(words.as_ptr(), set, words.len()) };
    Ok(())
}

/// Number of GPUs of the simulated node.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCount_v2(deviceCount: *mut c_uint) -> nvmlReturn_t {
    status(call("nvmlDeviceGetCount_v2", |node| {
        // SAFETY: nvml.h: `deviceCount` is null or valid for a write.
        unsafe { put(deviceCount, node.device_count()) }
    }))
}

/// The handle of GPU `index`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex_v2(index: c_uint, device: *mut nvmlDevice_t) -> nvmlReturn_t {
    status(call("nvmlDeviceGetHandleByIndex_v2", |node| {
        need(device)?;
        let h = node.device_by_index(index)?;
        // SAFETY: nvml.h: `device` is valid for a write (non-null checked).
        unsafe { put(device, pointer(h)) }
    }))
}

/// The handle of a GPU (`GPU-…`) or MIG device (`MIG-…`) by UUID.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetHandleByUUID(uuid: *const c_char, device: *mut nvmlDevice_t) -> nvmlReturn_t {
    status(call("nvmlDeviceGetHandleByUUID", |node| {
        need(uuid)?;
        need(device)?;
        // SAFETY: nvml.h: `uuid` is a NUL-terminated string (non-null checked).
        let text = unsafe { CStr::from_ptr(uuid) }.to_str().map_err(|_| INVALID_ARGUMENT)?;
        let h = node.device_by_uuid(text)?;
        // SAFETY: nvml.h: `device` is valid for a write (non-null checked).
        unsafe { put(device, pointer(h)) }
    }))
}

/// A GPU's index, or a MIG device's index under its GPU.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetIndex(device: nvmlDevice_t, index: *mut c_uint) -> nvmlReturn_t {
    status(call("nvmlDeviceGetIndex", |node| {
        need(index)?;
        let i = node.device_index(handle(device))?;
        // SAFETY: nvml.h: `index` is valid for a write (non-null checked).
        unsafe { put(index, i) }
    }))
}

/// `GPU-…`, or `MIG-…` for a MIG device.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetUUID(device: nvmlDevice_t, uuid: *mut c_char, length: c_uint) -> nvmlReturn_t {
    status(call("nvmlDeviceGetUUID", |node| {
        need(uuid)?;
        let text = node.uuid(handle(device))?;
        // SAFETY: nvml.h: `uuid` is valid for `length` bytes (non-null checked).
        unsafe { put_str(uuid, length, &text) }
    }))
}

/// The product name; `<GPU name> MIG <profile>` for a MIG device.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetName(device: nvmlDevice_t, name: *mut c_char, length: c_uint) -> nvmlReturn_t {
    status(call("nvmlDeviceGetName", |node| {
        need(name)?;
        let text = node.name(handle(device))?;
        // SAFETY: nvml.h: `name` is valid for `length` bytes (non-null checked).
        unsafe { put_str(name, length, &text) }
    }))
}

/// PCI location and ids (a MIG device reports its GPU's).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetPciInfo_v3(device: nvmlDevice_t, pci: *mut nvmlPciInfo_t) -> nvmlReturn_t {
    status(call("nvmlDeviceGetPciInfo_v3", |node| {
        need(pci)?;
        let p = node.pci(handle(device))?;
        let info = nvmlPciInfo_t {
            busIdLegacy: c_array(&p.bus_id_legacy),
            domain: p.domain,
            bus: p.bus,
            device: p.device,
            pciDeviceId: p.pci_device_id,
            pciSubSystemId: p.pci_subsystem_id,
            busId: c_array(&p.bus_id),
        };
        // SAFETY: nvml.h: `pci` is valid for a write (non-null checked).
        unsafe { put(pci, info) }
    }))
}

/// `/dev/nvidia<minor>`; not supported on a MIG device.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMinorNumber(device: nvmlDevice_t, minorNumber: *mut c_uint) -> nvmlReturn_t {
    status(call("nvmlDeviceGetMinorNumber", |node| {
        need(minorNumber)?;
        let m = node.minor_number(handle(device))?;
        // SAFETY: nvml.h: `minorNumber` is valid for a write (non-null checked).
        unsafe { put(minorNumber, m) }
    }))
}

/// Total memory from the model; used = what the simulated processes use.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo(device: nvmlDevice_t, memory: *mut nvmlMemory_t) -> nvmlReturn_t {
    status(call("nvmlDeviceGetMemoryInfo", |node| {
        need(memory)?;
        let Memory { total, used } = node.memory(handle(device))?;
        let info = nvmlMemory_t { total, free: total.saturating_sub(used), used };
        // SAFETY: nvml.h: `memory` is valid for a write (non-null checked).
        unsafe { put(memory, info) }
    }))
}

/// As `nvmlDeviceGetMemoryInfo`, versioned (`nvmlMemory_v2`), with no reserved memory.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo_v2(
    device: nvmlDevice_t,
    memory: *mut nvmlMemory_v2_t,
) -> nvmlReturn_t {
    status(call("nvmlDeviceGetMemoryInfo_v2", |node| {
        need(memory)?;
        // SAFETY: nvml.h: the caller set `version`, the struct's first field (non-null checked).
        let version = unsafe { memory.cast::<c_uint>().read() };
        // nvml.h lists no ARGUMENT_VERSION_MISMATCH for this call: a wrong version is an
        // invalid argument, the one documented code that fits.
        if version != struct_version::<nvmlMemory_v2_t>(2) {
            return Err(INVALID_ARGUMENT);
        }
        let Memory { total, used } = node.memory(handle(device))?;
        let info = nvmlMemory_v2_t { version, total, reserved: 0, free: total.saturating_sub(used), used };
        // SAFETY: nvml.h: `memory` is valid for a write of the versioned struct (non-null checked).
        unsafe { put(memory, info) }
    }))
}

/// Bitmask of the host CPUs local to the GPU.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCpuAffinity(
    device: nvmlDevice_t,
    cpuSetSize: c_uint,
    cpuSet: *mut c_ulong,
) -> nvmlReturn_t {
    status(call("nvmlDeviceGetCpuAffinity", |node| {
        let cpus = node.local_cpus(handle(device))?;
        // SAFETY: nvml.h: `cpuSet` is null or valid for `cpuSetSize` words.
        unsafe { put_mask(cpuSet, cpuSetSize, cpus) }
    }))
}

/// Bitmask of the host CPUs local to the GPU, for the NUMA node or socket scope (the same here).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCpuAffinityWithinScope(
    device: nvmlDevice_t,
    cpuSetSize: c_uint,
    cpuSet: *mut c_ulong,
    scope: nvmlAffinityScope_t,
) -> nvmlReturn_t {
    status(call("nvmlDeviceGetCpuAffinityWithinScope", |node| {
        check_scope(scope)?;
        let cpus = node.local_cpus(handle(device))?;
        // SAFETY: nvml.h: `cpuSet` is null or valid for `cpuSetSize` words.
        unsafe { put_mask(cpuSet, cpuSetSize, cpus) }
    }))
}

/// Bitmask with the GPU's host NUMA node; all zero when the platform does not say.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMemoryAffinity(
    device: nvmlDevice_t,
    nodeSetSize: c_uint,
    nodeSet: *mut c_ulong,
    scope: nvmlAffinityScope_t,
) -> nvmlReturn_t {
    status(call("nvmlDeviceGetMemoryAffinity", |node| {
        check_scope(scope)?;
        let numa = node.numa_node(handle(device))?;
        // SAFETY: nvml.h: `nodeSet` is null or valid for `nodeSetSize` words.
        unsafe { put_mask(nodeSet, nodeSetSize, numa.into_iter().collect()) }
    }))
}

/// The GPU's host NUMA node; `NOT_SUPPORTED` when the platform does not say.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetNumaNodeId(device: nvmlDevice_t, node: *mut c_uint) -> nvmlReturn_t {
    status(call("nvmlDeviceGetNumaNodeId", |n| {
        need(node)?;
        let numa = n.numa_node(handle(device))?.ok_or(NOT_SUPPORTED)?;
        // SAFETY: nvml.h: `node` is valid for a write (non-null checked).
        unsafe { put(node, numa) }
    }))
}

/// Field values: `NVML_FI_DEV_GET_GPU_RECOVERY_ACTION` from the simulated node; every other field
/// answers `NVML_ERROR_NOT_SUPPORTED` in its own `nvmlReturn`. The call itself fails only for a
/// bad argument or a GPU that is lost.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetFieldValues(
    device: nvmlDevice_t,
    valuesCount: c_int,
    values: *mut nvmlFieldValue_t,
) -> nvmlReturn_t {
    status(call("nvmlDeviceGetFieldValues", |node| {
        let count = usize::try_from(valuesCount).map_err(|_| INVALID_ARGUMENT)?;
        if count == 0 {
            return Err(INVALID_ARGUMENT);
        }
        need(values)?;
        // SAFETY: nvml.h: `values` points to `valuesCount` initialised `nvmlFieldValue_t`s, each
        // with `fieldId` (and `scopeId`) set by the caller (non-null checked; count positive).
        let slots = unsafe { std::slice::from_raw_parts_mut(values, count) };
        let fields: Vec<u32> = slots.iter().map(|v| v.fieldId).collect();
        let answers = node.field_values(handle(device), &fields)?;
        for (slot, answer) in slots.iter_mut().zip(answers) {
            slot.timestamp = 0;
            slot.latencyUsec = 0;
            match answer {
                Ok(value) => {
                    slot.valueType = nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_INT;
                    slot.nvmlReturn = SUCCESS;
                    slot.value = nvmlValue_t { uiVal: value };
                }
                Err(code) => slot.nvmlReturn = code,
            }
        }
        Ok(())
    }))
}

/// Compute processes: every one of the GPU (with its instance ids), or one MIG device's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetComputeRunningProcesses_v3(
    device: nvmlDevice_t,
    infoCount: *mut c_uint,
    infos: *mut nvmlProcessInfo_t,
) -> nvmlReturn_t {
    status(call("nvmlDeviceGetComputeRunningProcesses_v3", |node| {
        need(infoCount)?;
        let list: Vec<nvmlProcessInfo_t> = node
            .processes(handle(device))?
            .iter()
            .map(|p| nvmlProcessInfo_t {
                pid: p.pid,
                usedGpuMemory: p.used_memory_mib * 1024 * 1024,
                gpuInstanceId: p.gpu_instance_id.unwrap_or(NO_INSTANCE),
                computeInstanceId: p.compute_instance_id.unwrap_or(NO_INSTANCE),
            })
            .collect();
        // SAFETY: nvml.h: `infoCount` is valid for a read and write, `infos` for `*infoCount`
        // elements (it may be null when `*infoCount` is 0).
        unsafe { put_list(infos, infoCount, list) }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmasks() {
        let bits = c_ulong::BITS;
        assert_eq!(bitmask([0, 1], 1), [3]);
        assert_eq!(bitmask([0, 1, bits, bits + 1], 2), [3, 3]);
        assert_eq!(bitmask([bits + 1], 1), [0], "bits past the array are dropped");
        assert_eq!(bitmask(Vec::new(), 2), [0, 0]);
        assert!(check_scope(NVML_AFFINITY_SCOPE_SOCKET).is_ok());
        assert_eq!(check_scope(7), Err(INVALID_ARGUMENT));
    }
}
