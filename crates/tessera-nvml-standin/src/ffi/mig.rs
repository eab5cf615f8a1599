//! Exports: MIG mode, GPU instances, compute instances and MIG device handles.
//!
//! `unsafe` is allowed here because these are `#[unsafe(no_mangle)] extern "C"` exports that
//! read and write through the caller's pointers; see the parent module for the contract.
#![allow(unsafe_code)]
#![allow(non_snake_case)] // Parameter names are nvml.h's.

use std::os::raw::c_uint;

use nvml_wrapper_sys::bindings::*;

use super::{c_array, handle, need, pointer, put, put_list, struct_version};
use crate::codes::{INVALID_ARGUMENT, NvmlResult};
use crate::node::{CiProfile, GiProfile, call, status};

/// The `version` field a versioned output struct carries: v2 or v3 of `V2`/`V3`, else
/// `INVALID_ARGUMENT`, the code nvml.h documents for the `…ProfileInfoV` calls ("if … `info->version`
/// [is] invalid"; `ARGUMENT_VERSION_MISMATCH` is not among their documented codes).
///
/// # Safety
/// `info` is non-null and valid for a read of its first field, the `c_uint` version.
unsafe fn versioned<V2, V3>(info: *mut V2) -> NvmlResult<(c_uint, bool)> {
    // SAFETY: caller's contract; every versioned NVML struct starts with its version.
    let version = unsafe { info.cast::<c_uint>().read() };
    if version == struct_version::<V2>(2) {
        Ok((version, false))
    } else if version == struct_version::<V3>(3) {
        Ok((version, true))
    } else {
        Err(INVALID_ARGUMENT)
    }
}

/// The current and pending MIG mode.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMigMode(
    device: nvmlDevice_t,
    currentMode: *mut c_uint,
    pendingMode: *mut c_uint,
) -> nvmlReturn_t {
    status(call("nvmlDeviceGetMigMode", |node| {
        need(currentMode)?;
        need(pendingMode)?;
        let (current, pending) = node.mig_mode(handle(device))?;
        // SAFETY: nvml.h: both are valid for a write (non-null checked).
        unsafe {
            put(currentMode, current)?;
            put(pendingMode, pending)
        }
    }))
}

/// Ask for a MIG mode; `activationStatus` is `IN_USE` while the GPU is busy (the change stays
/// pending), as NVML reports it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceSetMigMode(
    device: nvmlDevice_t,
    mode: c_uint,
    activationStatus: *mut nvmlReturn_t,
) -> nvmlReturn_t {
    status(call("nvmlDeviceSetMigMode", |node| {
        need(activationStatus)?;
        let activation = node.set_mig_mode(handle(device), mode)?;
        // SAFETY: nvml.h: `activationStatus` is valid for a write (non-null checked).
        unsafe { put(activationStatus, activation) }
    }))
}

fn gi_profile_v1(p: &GiProfile) -> nvmlGpuInstanceProfileInfo_t {
    let i = &p.info;
    nvmlGpuInstanceProfileInfo_t {
        id: i.id,
        isP2pSupported: 0,
        sliceCount: u32::from(i.compute_slices),
        instanceCount: u32::from(i.max_count),
        multiprocessorCount: i.sm_count,
        copyEngineCount: i.copy_engines,
        decoderCount: i.decoders,
        encoderCount: i.encoders,
        jpegCount: i.jpegs,
        ofaCount: i.ofas,
        memorySizeMB: i.memory_mib,
    }
}

/// GPU-instance profile info by `NVML_GPU_INSTANCE_PROFILE_*` index.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetGpuInstanceProfileInfo(
    device: nvmlDevice_t,
    profile: c_uint,
    info: *mut nvmlGpuInstanceProfileInfo_t,
) -> nvmlReturn_t {
    status(call("nvmlDeviceGetGpuInstanceProfileInfo", |node| {
        need(info)?;
        let p = node.gi_profile_info(handle(device), profile)?;
        // SAFETY: nvml.h: `info` is valid for a write (non-null checked).
        unsafe { put(info, gi_profile_v1(&p)) }
    }))
}

/// Versioned profile info (`nvmlGpuInstanceProfileInfo_v2` or `_v3`), with the name.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetGpuInstanceProfileInfoV(
    device: nvmlDevice_t,
    profile: c_uint,
    info: *mut nvmlGpuInstanceProfileInfo_v2_t,
) -> nvmlReturn_t {
    status(call("nvmlDeviceGetGpuInstanceProfileInfoV", |node| {
        need(info)?;
        // SAFETY: non-null; nvml.h: the caller set `version`.
        let (version, v3) =
            unsafe { versioned::<nvmlGpuInstanceProfileInfo_v2_t, nvmlGpuInstanceProfileInfo_v3_t>(info) }?;
        let p = node.gi_profile_info(handle(device), profile)?;
        let b = gi_profile_v1(&p);
        if v3 {
            let out = nvmlGpuInstanceProfileInfo_v3_t {
                version,
                id: b.id,
                sliceCount: b.sliceCount,
                instanceCount: b.instanceCount,
                multiprocessorCount: b.multiprocessorCount,
                copyEngineCount: b.copyEngineCount,
                decoderCount: b.decoderCount,
                encoderCount: b.encoderCount,
                jpegCount: b.jpegCount,
                ofaCount: b.ofaCount,
                memorySizeMB: b.memorySizeMB,
                name: c_array(&p.name),
                capabilities: p.capabilities,
            };
            // SAFETY: the version says the caller's struct is a v3 (non-null checked).
            unsafe { put(info.cast::<nvmlGpuInstanceProfileInfo_v3_t>(), out) }
        } else {
            let out = nvmlGpuInstanceProfileInfo_v2_t {
                version,
                id: b.id,
                isP2pSupported: 0,
                sliceCount: b.sliceCount,
                instanceCount: b.instanceCount,
                multiprocessorCount: b.multiprocessorCount,
                copyEngineCount: b.copyEngineCount,
                decoderCount: b.decoderCount,
                encoderCount: b.encoderCount,
                jpegCount: b.jpegCount,
                ofaCount: b.ofaCount,
                memorySizeMB: b.memorySizeMB,
                name: c_array(&p.name),
            };
            // SAFETY: nvml.h: `info` is valid for a write of a v2 (non-null checked).
            unsafe { put(info, out) }
        }
    }))
}

/// Every legal placement of a profile id; with `placements` null, only their number.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetGpuInstancePossiblePlacements_v2(
    device: nvmlDevice_t,
    profileId: c_uint,
    placements: *mut nvmlGpuInstancePlacement_t,
    count: *mut c_uint,
) -> nvmlReturn_t {
    status(call("nvmlDeviceGetGpuInstancePossiblePlacements_v2", |node| {
        need(count)?;
        let list: Vec<nvmlGpuInstancePlacement_t> = node
            .possible_placements(handle(device), profileId)?
            .iter()
            .map(|p| nvmlGpuInstancePlacement_t { start: u32::from(p.start), size: u32::from(p.size) })
            .collect();
        if placements.is_null() {
            let n = c_uint::try_from(list.len()).unwrap_or(c_uint::MAX);
            // SAFETY: nvml.h: `count` is valid for a write (non-null checked).
            return unsafe { put(count, n) };
        }
        // SAFETY: nvml.h: `count` is valid for a read and write, `placements` for `*count` elements.
        unsafe { put_list(placements, count, list) }
    }))
}

/// How many more GPU instances of a profile id could be created now.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetGpuInstanceRemainingCapacity(
    device: nvmlDevice_t,
    profileId: c_uint,
    count: *mut c_uint,
) -> nvmlReturn_t {
    status(call("nvmlDeviceGetGpuInstanceRemainingCapacity", |node| {
        need(count)?;
        let n = node.gi_remaining_capacity(handle(device), profileId)?;
        // SAFETY: nvml.h: `count` is valid for a write (non-null checked).
        unsafe { put(count, n) }
    }))
}

/// Create a GPU instance where the driver would put it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceCreateGpuInstance(
    device: nvmlDevice_t,
    profileId: c_uint,
    gpuInstance: *mut nvmlGpuInstance_t,
) -> nvmlReturn_t {
    status(call("nvmlDeviceCreateGpuInstance", |node| {
        need(gpuInstance)?;
        let h = node.create_gpu_instance(handle(device), profileId, None)?;
        // SAFETY: nvml.h: `gpuInstance` is valid for a write (non-null checked).
        unsafe { put(gpuInstance, pointer(h)) }
    }))
}

/// Create a GPU instance at an explicit placement.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceCreateGpuInstanceWithPlacement(
    device: nvmlDevice_t,
    profileId: c_uint,
    placement: *const nvmlGpuInstancePlacement_t,
    gpuInstance: *mut nvmlGpuInstance_t,
) -> nvmlReturn_t {
    status(call("nvmlDeviceCreateGpuInstanceWithPlacement", |node| {
        need(placement)?;
        need(gpuInstance)?;
        // SAFETY: nvml.h: `placement` is valid for a read (non-null checked).
        let p = unsafe { placement.read() };
        let h = node.create_gpu_instance(handle(device), profileId, Some((p.start, p.size)))?;
        // SAFETY: nvml.h: `gpuInstance` is valid for a write (non-null checked).
        unsafe { put(gpuInstance, pointer(h)) }
    }))
}

/// Destroy a GPU instance (`IN_USE` while it has compute instances or processes).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlGpuInstanceDestroy(gpuInstance: nvmlGpuInstance_t) -> nvmlReturn_t {
    status(call("nvmlGpuInstanceDestroy", |node| node.destroy_gpu_instance(handle(gpuInstance))))
}

/// The GPU instances of a profile id; `*count` gives the array's capacity on input.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetGpuInstances(
    device: nvmlDevice_t,
    profileId: c_uint,
    gpuInstances: *mut nvmlGpuInstance_t,
    count: *mut c_uint,
) -> nvmlReturn_t {
    status(call("nvmlDeviceGetGpuInstances", |node| {
        need(gpuInstances)?;
        need(count)?;
        let list: Vec<nvmlGpuInstance_t> =
            node.gpu_instances(handle(device), profileId)?.into_iter().map(pointer).collect();
        // SAFETY: nvml.h: `count` is valid for a read and write, `gpuInstances` for `*count` elements.
        unsafe { put_list(gpuInstances, count, list) }
    }))
}

/// A GPU instance by id (`NOT_FOUND` if there is none).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetGpuInstanceById(
    device: nvmlDevice_t,
    id: c_uint,
    gpuInstance: *mut nvmlGpuInstance_t,
) -> nvmlReturn_t {
    status(call("nvmlDeviceGetGpuInstanceById", |node| {
        need(gpuInstance)?;
        let h = node.gpu_instance_by_id(handle(device), id)?;
        // SAFETY: nvml.h: `gpuInstance` is valid for a write (non-null checked).
        unsafe { put(gpuInstance, pointer(h)) }
    }))
}

/// Device, id, profile id and placement of a GPU instance.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlGpuInstanceGetInfo(
    gpuInstance: nvmlGpuInstance_t,
    info: *mut nvmlGpuInstanceInfo_t,
) -> nvmlReturn_t {
    status(call("nvmlGpuInstanceGetInfo", |node| {
        need(info)?;
        let (dev, gi) = node.gpu_instance_info(handle(gpuInstance))?;
        let out = nvmlGpuInstanceInfo_t {
            device: pointer(dev),
            id: gi.id,
            profileId: gi.profile_id,
            placement: nvmlGpuInstancePlacement_t {
                start: u32::from(gi.placement.start),
                size: u32::from(gi.placement.size),
            },
        };
        // SAFETY: nvml.h: `info` is valid for a write (non-null checked).
        unsafe { put(info, out) }
    }))
}

fn ci_profile_v1(p: &CiProfile) -> nvmlComputeInstanceProfileInfo_t {
    nvmlComputeInstanceProfileInfo_t {
        id: p.id,
        sliceCount: p.slice_count,
        instanceCount: p.instance_count,
        multiprocessorCount: p.multiprocessor_count,
        sharedCopyEngineCount: p.copy_engines,
        sharedDecoderCount: p.decoders,
        sharedEncoderCount: p.encoders,
        sharedJpegCount: p.jpegs,
        sharedOfaCount: p.ofas,
    }
}

/// Compute-instance profile info by `NVML_COMPUTE_INSTANCE_PROFILE_*` index (= id); the engine
/// profile must be `SHARED`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlGpuInstanceGetComputeInstanceProfileInfo(
    gpuInstance: nvmlGpuInstance_t,
    profile: c_uint,
    engProfile: c_uint,
    info: *mut nvmlComputeInstanceProfileInfo_t,
) -> nvmlReturn_t {
    status(call("nvmlGpuInstanceGetComputeInstanceProfileInfo", |node| {
        need(info)?;
        let p = node.ci_profile_info(handle(gpuInstance), profile, engProfile)?;
        // SAFETY: nvml.h: `info` is valid for a write (non-null checked).
        unsafe { put(info, ci_profile_v1(&p)) }
    }))
}

/// Versioned compute-instance profile info (`_v2` or `_v3`), with the name.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlGpuInstanceGetComputeInstanceProfileInfoV(
    gpuInstance: nvmlGpuInstance_t,
    profile: c_uint,
    engProfile: c_uint,
    info: *mut nvmlComputeInstanceProfileInfo_v2_t,
) -> nvmlReturn_t {
    status(call("nvmlGpuInstanceGetComputeInstanceProfileInfoV", |node| {
        need(info)?;
        // SAFETY: non-null; nvml.h: the caller set `version`.
        let (version, v3) =
            unsafe { versioned::<nvmlComputeInstanceProfileInfo_v2_t, nvmlComputeInstanceProfileInfo_v3_t>(info) }?;
        let p = node.ci_profile_info(handle(gpuInstance), profile, engProfile)?;
        let b = ci_profile_v1(&p);
        if v3 {
            let out = nvmlComputeInstanceProfileInfo_v3_t {
                version,
                id: b.id,
                sliceCount: b.sliceCount,
                instanceCount: b.instanceCount,
                multiprocessorCount: b.multiprocessorCount,
                sharedCopyEngineCount: b.sharedCopyEngineCount,
                sharedDecoderCount: b.sharedDecoderCount,
                sharedEncoderCount: b.sharedEncoderCount,
                sharedJpegCount: b.sharedJpegCount,
                sharedOfaCount: b.sharedOfaCount,
                name: c_array(&p.name),
                capabilities: 0,
            };
            // SAFETY: the version says the caller's struct is a v3 (non-null checked).
            unsafe { put(info.cast::<nvmlComputeInstanceProfileInfo_v3_t>(), out) }
        } else {
            let out = nvmlComputeInstanceProfileInfo_v2_t {
                version,
                id: b.id,
                sliceCount: b.sliceCount,
                instanceCount: b.instanceCount,
                multiprocessorCount: b.multiprocessorCount,
                sharedCopyEngineCount: b.sharedCopyEngineCount,
                sharedDecoderCount: b.sharedDecoderCount,
                sharedEncoderCount: b.sharedEncoderCount,
                sharedJpegCount: b.sharedJpegCount,
                sharedOfaCount: b.sharedOfaCount,
                name: c_array(&p.name),
            };
            // SAFETY: nvml.h: `info` is valid for a write of a v2 (non-null checked).
            unsafe { put(info, out) }
        }
    }))
}

/// How many more compute instances of a profile id fit in the GPU instance now.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlGpuInstanceGetComputeInstanceRemainingCapacity(
    gpuInstance: nvmlGpuInstance_t,
    profileId: c_uint,
    count: *mut c_uint,
) -> nvmlReturn_t {
    status(call("nvmlGpuInstanceGetComputeInstanceRemainingCapacity", |node| {
        need(count)?;
        let n = node.ci_remaining_capacity(handle(gpuInstance), profileId)?;
        // SAFETY: nvml.h: `count` is valid for a write (non-null checked).
        unsafe { put(count, n) }
    }))
}

/// Create a compute instance of a profile id.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlGpuInstanceCreateComputeInstance(
    gpuInstance: nvmlGpuInstance_t,
    profileId: c_uint,
    computeInstance: *mut nvmlComputeInstance_t,
) -> nvmlReturn_t {
    status(call("nvmlGpuInstanceCreateComputeInstance", |node| {
        need(computeInstance)?;
        let h = node.create_compute_instance(handle(gpuInstance), profileId)?;
        // SAFETY: nvml.h: `computeInstance` is valid for a write (non-null checked).
        unsafe { put(computeInstance, pointer(h)) }
    }))
}

/// Destroy a compute instance (`IN_USE` while processes run in it).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlComputeInstanceDestroy(computeInstance: nvmlComputeInstance_t) -> nvmlReturn_t {
    status(call("nvmlComputeInstanceDestroy", |node| node.destroy_compute_instance(handle(computeInstance))))
}

/// The compute instances of a profile id; `*count` gives the array's capacity on input.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlGpuInstanceGetComputeInstances(
    gpuInstance: nvmlGpuInstance_t,
    profileId: c_uint,
    computeInstances: *mut nvmlComputeInstance_t,
    count: *mut c_uint,
) -> nvmlReturn_t {
    status(call("nvmlGpuInstanceGetComputeInstances", |node| {
        need(computeInstances)?;
        need(count)?;
        let list: Vec<nvmlComputeInstance_t> =
            node.compute_instances(handle(gpuInstance), profileId)?.into_iter().map(pointer).collect();
        // SAFETY: nvml.h: `count` is valid for a read and write, `computeInstances` for `*count` elements.
        unsafe { put_list(computeInstances, count, list) }
    }))
}

/// A compute instance by id (`NOT_FOUND` if there is none).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlGpuInstanceGetComputeInstanceById(
    gpuInstance: nvmlGpuInstance_t,
    id: c_uint,
    computeInstance: *mut nvmlComputeInstance_t,
) -> nvmlReturn_t {
    status(call("nvmlGpuInstanceGetComputeInstanceById", |node| {
        need(computeInstance)?;
        let h = node.compute_instance_by_id(handle(gpuInstance), id)?;
        // SAFETY: nvml.h: `computeInstance` is valid for a write (non-null checked).
        unsafe { put(computeInstance, pointer(h)) }
    }))
}

/// Device, GPU instance, id, profile id and placement (in compute slices) of a compute instance.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlComputeInstanceGetInfo_v2(
    computeInstance: nvmlComputeInstance_t,
    info: *mut nvmlComputeInstanceInfo_t,
) -> nvmlReturn_t {
    status(call("nvmlComputeInstanceGetInfo_v2", |node| {
        need(info)?;
        let (dev, gi, ci) = node.compute_instance_info(handle(computeInstance))?;
        let out = nvmlComputeInstanceInfo_t {
            device: pointer(dev),
            gpuInstance: pointer(gi),
            id: ci.id,
            profileId: ci.profile_id,
            placement: nvmlComputeInstancePlacement_t {
                start: u32::from(ci.placement.start),
                size: u32::from(ci.placement.size),
            },
        };
        // SAFETY: nvml.h: `info` is valid for a write (non-null checked).
        unsafe { put(info, out) }
    }))
}

/// The model's most GPU instances; 0 while MIG is off or unsupported.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMaxMigDeviceCount(device: nvmlDevice_t, count: *mut c_uint) -> nvmlReturn_t {
    status(call("nvmlDeviceGetMaxMigDeviceCount", |node| {
        need(count)?;
        let n = node.max_mig_devices(handle(device))?;
        // SAFETY: nvml.h: `count` is valid for a write (non-null checked).
        unsafe { put(count, n) }
    }))
}

/// MIG device `index` of a GPU: one per compute instance, in GPU-instance then compute-instance
/// id order (`NOT_FOUND` for an index below the maximum with no device).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMigDeviceHandleByIndex(
    device: nvmlDevice_t,
    index: c_uint,
    migDevice: *mut nvmlDevice_t,
) -> nvmlReturn_t {
    status(call("nvmlDeviceGetMigDeviceHandleByIndex", |node| {
        need(migDevice)?;
        let h = node.mig_device_by_index(handle(device), index)?;
        // SAFETY: nvml.h: `migDevice` is valid for a write (non-null checked).
        unsafe { put(migDevice, pointer(h)) }
    }))
}

/// The GPU of a MIG device.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetDeviceHandleFromMigDeviceHandle(
    migDevice: nvmlDevice_t,
    device: *mut nvmlDevice_t,
) -> nvmlReturn_t {
    status(call("nvmlDeviceGetDeviceHandleFromMigDeviceHandle", |node| {
        need(device)?;
        let h = node.parent_of_mig_device(handle(migDevice))?;
        // SAFETY: nvml.h: `device` is valid for a write (non-null checked).
        unsafe { put(device, pointer(h)) }
    }))
}

/// 1 for a MIG device handle, 0 for a GPU's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceIsMigDeviceHandle(device: nvmlDevice_t, isMigDevice: *mut c_uint) -> nvmlReturn_t {
    status(call("nvmlDeviceIsMigDeviceHandle", |node| {
        need(isMigDevice)?;
        let is = node.is_mig_device(handle(device))?;
        // SAFETY: nvml.h: `isMigDevice` is valid for a write (non-null checked).
        unsafe { put(isMigDevice, c_uint::from(is)) }
    }))
}

/// The GPU-instance id of a MIG device.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetGpuInstanceId(device: nvmlDevice_t, id: *mut c_uint) -> nvmlReturn_t {
    status(call("nvmlDeviceGetGpuInstanceId", |node| {
        need(id)?;
        let (gi, _) = node.mig_instance_ids(handle(device))?;
        // SAFETY: nvml.h: `id` is valid for a write (non-null checked).
        unsafe { put(id, gi) }
    }))
}

/// The compute-instance id of a MIG device.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetComputeInstanceId(device: nvmlDevice_t, id: *mut c_uint) -> nvmlReturn_t {
    status(call("nvmlDeviceGetComputeInstanceId", |node| {
        need(id)?;
        let (_, ci) = node.mig_instance_ids(handle(device))?;
        // SAFETY: nvml.h: `id` is valid for a write (non-null checked).
        unsafe { put(id, ci) }
    }))
}
