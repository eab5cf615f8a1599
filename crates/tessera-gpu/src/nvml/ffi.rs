#![allow(unsafe_code)]
//! Every raw NVML call Tessera makes that `nvml-wrapper` has no correct safe wrapper for, in one
//! place: GPU- and compute-instance create/destroy/list/info, profile info (v1 and v2), possible
//! placements (`_v2`; the wrapper's `Device::possible_placements` always returns an empty list
//! in 0.13), remaining capacity, MIG device handles, memory info (v1: the wrapper calls `_v2`),
//! UUIDs of MIG handles, the Xid event set, the GPU recovery action (field values) and GPU
//! performance monitoring (GPM: support, sample buffers, samples of a GPU or a GPU instance, the
//! metrics between two samples; `nvml-wrapper`'s safe GPM samples borrow the `Nvml`, which a
//! backend that owns its `Nvml` cannot keep).
//!
//! Rules kept here:
//! * Every symbol is looked up with `.as_ref()` on `NvmlLib`'s field before the call, so a symbol
//!   the installed driver lacks is [`Fail::Missing`], never a panic (`NvmlLib`'s own methods
//!   `expect` the symbol).
//! * Handles are wrapped in types that only this module creates from NVML's answers, and that
//!   borrow the library (`'a`), so safe code cannot hand NVML a made-up pointer or use a handle
//!   after `nvmlShutdown`. [`EventSet`] is the exception (it lives next to the `Nvml` it came
//!   from inside `NvmlBackend`, which frees it before shutting NVML down), and so is
//!   [`GpmSample`] (the same: owned by the backend, freed before shutdown).
//! * Out-buffers are Rust-owned, initialised and sized as nvml.h asks; strings are read up to
//!   their NUL within the buffer.

use std::ffi::{CStr, c_char, c_uint, c_ulonglong};
use std::marker::PhantomData;
use std::ptr;

use nvml_wrapper::Device;
use nvml_wrapper_sys::bindings::field_id::NVML_FI_DEV_GET_GPU_RECOVERY_ACTION;
use nvml_wrapper_sys::bindings::{
    NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED, NVML_DEVICE_UUID_V2_BUFFER_SIZE, NVML_GPM_METRICS_GET_VERSION,
    NVML_GPM_SUPPORT_VERSION, NvmlLib, nvmlComputeInstance_t, nvmlComputeInstanceInfo_t,
    nvmlComputeInstancePlacement_t, nvmlComputeInstanceProfileInfo_t, nvmlComputeInstanceProfileInfo_v2_t,
    nvmlDevice_t, nvmlEventData_t, nvmlEventSet_t, nvmlEventTypeXidCriticalError, nvmlFieldValue_t, nvmlGpmMetric_t,
    nvmlGpmMetric_t__bindgen_ty_1, nvmlGpmMetricId_t_NVML_GPM_METRIC_MAX, nvmlGpmMetricsGet_t, nvmlGpmSample_t,
    nvmlGpmSupport_t, nvmlGpuInstance_t, nvmlGpuInstanceInfo_t, nvmlGpuInstancePlacement_t,
    nvmlGpuInstanceProfileInfo_t, nvmlGpuInstanceProfileInfo_v2_t, nvmlMemory_t,
    nvmlReturn_enum_NVML_ERROR_ARGUMENT_VERSION_MISMATCH, nvmlReturn_enum_NVML_ERROR_FUNCTION_NOT_FOUND,
    nvmlReturn_enum_NVML_ERROR_INSUFFICIENT_SIZE, nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT,
    nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED, nvmlReturn_enum_NVML_ERROR_TIMEOUT, nvmlReturn_enum_NVML_SUCCESS,
    nvmlReturn_t, nvmlValue_t, nvmlValueType_enum_NVML_VALUE_TYPE_SIGNED_INT,
    nvmlValueType_enum_NVML_VALUE_TYPE_SIGNED_LONG_LONG, nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_INT,
    nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_LONG, nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_LONG_LONG,
    nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_SHORT,
};

/// Why a raw call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fail {
    /// The loaded library does not export the function: the driver is older than it.
    Missing(&'static str),
    /// The function returned this code.
    Code(&'static str, nvmlReturn_t),
}

impl Fail {
    /// The NVML function that failed or is missing.
    pub(crate) fn function(self) -> &'static str {
        match self {
            Fail::Missing(f) | Fail::Code(f, _) => f,
        }
    }

    /// The return code, unless the function is missing.
    pub(crate) fn code(self) -> Option<nvmlReturn_t> {
        match self {
            Fail::Missing(_) => None,
            Fail::Code(_, c) => Some(c),
        }
    }
}

pub(crate) type Raw<T> = Result<T, Fail>;

/// The function pointer of `$name`, or `Err(Fail::Missing)` from the enclosing function.
macro_rules! sym {
    ($lib:expr, $name:ident) => {
        match $lib.$name.as_ref() {
            Ok(f) => *f,
            Err(_) => return Err(Fail::Missing(stringify!($name))),
        }
    };
}

fn check(function: &'static str, code: nvmlReturn_t) -> Raw<()> {
    if code == nvmlReturn_enum_NVML_SUCCESS { Ok(()) } else { Err(Fail::Code(function, code)) }
}

/// `NVML_STRUCT_VERSION(name, ver)`: the struct's size with the version in the top byte.
fn struct_version<T>(version: u32) -> c_uint {
    u32::try_from(std::mem::size_of::<T>()).unwrap_or(0) | (version << 24)
}

/// A C string inside a fixed buffer, up to its NUL (or the whole buffer if there is none).
fn c_text(buf: &[c_char]) -> String {
    // `c_char` is `i8` or `u8` by platform: reinterpret each byte.
    let bytes: Vec<u8> = buf.iter().map(|&c| c.to_ne_bytes()[0]).collect();
    match CStr::from_bytes_until_nul(&bytes) {
        Ok(s) => s.to_string_lossy().into_owned(),
        Err(_) => String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// A GPU (or MIG device) handle NVML gave out, valid while `'a` borrows the library.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DeviceHandle<'a> {
    raw: nvmlDevice_t,
    _lib: PhantomData<&'a NvmlLib>,
}

impl DeviceHandle<'_> {
    /// A value identifying the handle (NVML hands out one handle per device).
    pub(crate) fn key(&self) -> usize {
        self.raw as usize
    }
}

/// The raw handle of a device opened through `nvml-wrapper`.
pub(crate) fn device_handle<'a>(device: &Device<'a>) -> DeviceHandle<'a> {
    // SAFETY: `Device::handle` is unsafe only because the raw handle could outlive the `Nvml` it
    // came from; the returned handle borrows that `Nvml` for `'a`, like `device` does.
    let raw = unsafe { device.handle() };
    DeviceHandle { raw, _lib: PhantomData }
}

/// A GPU-instance handle NVML gave out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GiHandle<'a> {
    raw: nvmlGpuInstance_t,
    _lib: PhantomData<&'a NvmlLib>,
}

/// A compute-instance handle NVML gave out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CiHandle<'a> {
    raw: nvmlComputeInstance_t,
    _lib: PhantomData<&'a NvmlLib>,
}

/// `nvmlErrorString`, if the library has it.
pub(crate) fn error_string(lib: &NvmlLib, code: nvmlReturn_t) -> Option<String> {
    let f = lib.nvmlErrorString.as_ref().ok()?;
    // SAFETY: nvmlErrorString takes any return code and returns a pointer to a static,
    // NUL-terminated string (or NULL, checked below).
    let text = unsafe { f(code) };
    if text.is_null() {
        return None;
    }
    // SAFETY: non-NULL, NUL-terminated and static per nvml.h; copied out at once.
    Some(unsafe { CStr::from_ptr(text) }.to_string_lossy().into_owned())
}

/// Total framebuffer memory in bytes (`nvmlDeviceGetMemoryInfo`, the v1 struct).
pub(crate) fn memory_total_bytes(lib: &NvmlLib, dev: DeviceHandle<'_>) -> Raw<u64> {
    let f = sym!(lib, nvmlDeviceGetMemoryInfo);
    let mut mem = nvmlMemory_t { total: 0, free: 0, used: 0 };
    // SAFETY: `dev` is a live handle; `mem` is a valid out-pointer to the v1 struct.
    check("nvmlDeviceGetMemoryInfo", unsafe { f(dev.raw, &mut mem) })?;
    Ok(mem.total)
}

/// A GPU-instance profile as `nvmlDeviceGetGpuInstanceProfileInfo[V]` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GiProfileRaw {
    pub id: u32,
    pub slice_count: u32,
    pub instance_count: u32,
    pub sm_count: u32,
    pub copy_engines: u32,
    pub decoders: u32,
    pub encoders: u32,
    pub jpegs: u32,
    pub ofas: u32,
    pub memory_mb: u64,
    /// Only from the v2 call (`MIG 1g.10gb` or `1g.10gb`).
    pub name: Option<String>,
}

/// Whether a versioned (`…V`) profile call refused the struct rather than the profile, so the
/// v1 call must be asked: nvml.h documents `INVALID_ARGUMENT` for a version it does not accept,
/// drivers have been seen to answer `ARGUMENT_VERSION_MISMATCH` (NVIDIA/go-nvml#138) and
/// `FUNCTION_NOT_FOUND` (NVIDIA/nvidia-settings#78, R510) for one. A profile the driver lacks
/// gets the same `INVALID_ARGUMENT` or `NOT_SUPPORTED` from v1, so nothing is lost by asking.
fn versioned_call_refused(code: nvmlReturn_t) -> bool {
    code == nvmlReturn_enum_NVML_ERROR_FUNCTION_NOT_FOUND
        || code == nvmlReturn_enum_NVML_ERROR_ARGUMENT_VERSION_MISMATCH
        || code == nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT
}

/// The GPU-instance profile at NVML profile *index* `index` (`NVML_GPU_INSTANCE_PROFILE_*`):
/// the v2 call (with the name) where the library has it, else v1.
pub(crate) fn gi_profile_info(lib: &NvmlLib, dev: DeviceHandle<'_>, index: u32) -> Raw<GiProfileRaw> {
    match gi_profile_info_v2(lib, dev, index) {
        Err(Fail::Missing(_)) => {}
        Err(Fail::Code(_, c)) if versioned_call_refused(c) => {}
        other => return other,
    }
    let f = sym!(lib, nvmlDeviceGetGpuInstanceProfileInfo);
    let mut info = nvmlGpuInstanceProfileInfo_t {
        id: 0,
        isP2pSupported: 0,
        sliceCount: 0,
        instanceCount: 0,
        multiprocessorCount: 0,
        copyEngineCount: 0,
        decoderCount: 0,
        encoderCount: 0,
        jpegCount: 0,
        ofaCount: 0,
        memorySizeMB: 0,
    };
    // SAFETY: `dev` is a live handle; `info` is a valid out-pointer to the v1 struct.
    check("nvmlDeviceGetGpuInstanceProfileInfo", unsafe { f(dev.raw, index, &mut info) })?;
    Ok(GiProfileRaw {
        id: info.id,
        slice_count: info.sliceCount,
        instance_count: info.instanceCount,
        sm_count: info.multiprocessorCount,
        copy_engines: info.copyEngineCount,
        decoders: info.decoderCount,
        encoders: info.encoderCount,
        jpegs: info.jpegCount,
        ofas: info.ofaCount,
        memory_mb: info.memorySizeMB,
        name: None,
    })
}

fn gi_profile_info_v2(lib: &NvmlLib, dev: DeviceHandle<'_>, index: u32) -> Raw<GiProfileRaw> {
    let f = sym!(lib, nvmlDeviceGetGpuInstanceProfileInfoV);
    let mut info = nvmlGpuInstanceProfileInfo_v2_t {
        version: struct_version::<nvmlGpuInstanceProfileInfo_v2_t>(2),
        id: 0,
        isP2pSupported: 0,
        sliceCount: 0,
        instanceCount: 0,
        multiprocessorCount: 0,
        copyEngineCount: 0,
        decoderCount: 0,
        encoderCount: 0,
        jpegCount: 0,
        ofaCount: 0,
        memorySizeMB: 0,
        name: [0; 96],
    };
    // SAFETY: `dev` is a live handle; `info` is a valid out-pointer to the v2 struct, whose
    // `version` field says so, as nvml.h requires.
    check("nvmlDeviceGetGpuInstanceProfileInfoV", unsafe { f(dev.raw, index, &mut info) })?;
    Ok(GiProfileRaw {
        id: info.id,
        slice_count: info.sliceCount,
        instance_count: info.instanceCount,
        sm_count: info.multiprocessorCount,
        copy_engines: info.copyEngineCount,
        decoders: info.decoderCount,
        encoders: info.encoderCount,
        jpegs: info.jpegCount,
        ofas: info.ofaCount,
        memory_mb: info.memorySizeMB,
        name: Some(c_text(&info.name)).filter(|n| !n.is_empty()),
    })
}

/// Every legal placement `(start, size)` of a profile id
/// (`nvmlDeviceGetGpuInstancePossiblePlacements_v2`).
pub(crate) fn gi_possible_placements(lib: &NvmlLib, dev: DeviceHandle<'_>, profile_id: u32) -> Raw<Vec<(u32, u32)>> {
    const NAME: &str = "nvmlDeviceGetGpuInstancePossiblePlacements_v2";
    let f = sym!(lib, nvmlDeviceGetGpuInstancePossiblePlacements_v2);
    let mut count: c_uint = 0;
    // SAFETY: a NULL placements pointer asks for the count only (nvml.h); `count` is valid.
    let rc = unsafe { f(dev.raw, profile_id, ptr::null_mut(), &mut count) };
    if rc != nvmlReturn_enum_NVML_ERROR_INSUFFICIENT_SIZE {
        check(NAME, rc)?;
    }
    if count == 0 {
        return Ok(Vec::new());
    }
    // Room for more than announced, in case the answer grows between the two calls.
    let mut buf = vec![nvmlGpuInstancePlacement_t { start: 0, size: 0 }; (count as usize).max(32)];
    let mut count = c_uint::try_from(buf.len()).unwrap_or(c_uint::MAX);
    // SAFETY: `buf` holds `count` initialised elements and outlives the call.
    check(NAME, unsafe { f(dev.raw, profile_id, buf.as_mut_ptr(), &mut count) })?;
    buf.truncate(count as usize);
    Ok(buf.iter().map(|p| (p.start, p.size)).collect())
}

/// How many more GPU instances of a profile id fit (`nvmlDeviceGetGpuInstanceRemainingCapacity`).
pub(crate) fn gi_remaining_capacity(lib: &NvmlLib, dev: DeviceHandle<'_>, profile_id: u32) -> Raw<u32> {
    let f = sym!(lib, nvmlDeviceGetGpuInstanceRemainingCapacity);
    let mut count: c_uint = 0;
    // SAFETY: `dev` is a live handle; `count` is a valid out-pointer.
    check("nvmlDeviceGetGpuInstanceRemainingCapacity", unsafe { f(dev.raw, profile_id, &mut count) })?;
    Ok(count)
}

/// Create a GPU instance of a profile id, at `placement` `(start, size)` or where the driver
/// chooses.
pub(crate) fn create_gi<'a>(
    lib: &'a NvmlLib,
    dev: DeviceHandle<'a>,
    profile_id: u32,
    placement: Option<(u32, u32)>,
) -> Raw<GiHandle<'a>> {
    let mut gi: nvmlGpuInstance_t = ptr::null_mut();
    match placement {
        Some((start, size)) => {
            let f = sym!(lib, nvmlDeviceCreateGpuInstanceWithPlacement);
            let p = nvmlGpuInstancePlacement_t { start, size };
            // SAFETY: `dev` is a live handle; `p` and `gi` are valid for the call.
            check("nvmlDeviceCreateGpuInstanceWithPlacement", unsafe { f(dev.raw, profile_id, &p, &mut gi) })?;
        }
        None => {
            let f = sym!(lib, nvmlDeviceCreateGpuInstance);
            // SAFETY: `dev` is a live handle; `gi` is a valid out-pointer.
            check("nvmlDeviceCreateGpuInstance", unsafe { f(dev.raw, profile_id, &mut gi) })?;
        }
    }
    Ok(GiHandle { raw: gi, _lib: PhantomData })
}

/// The GPU instance with a driver-assigned id.
pub(crate) fn gi_by_id<'a>(lib: &'a NvmlLib, dev: DeviceHandle<'a>, id: u32) -> Raw<GiHandle<'a>> {
    let f = sym!(lib, nvmlDeviceGetGpuInstanceById);
    let mut gi: nvmlGpuInstance_t = ptr::null_mut();
    // SAFETY: `dev` is a live handle; `gi` is a valid out-pointer.
    check("nvmlDeviceGetGpuInstanceById", unsafe { f(dev.raw, id, &mut gi) })?;
    Ok(GiHandle { raw: gi, _lib: PhantomData })
}

/// The GPU instances of one profile id (`nvmlDeviceGetGpuInstances`).
pub(crate) fn gpu_instances<'a>(lib: &'a NvmlLib, dev: DeviceHandle<'a>, profile_id: u32) -> Raw<Vec<GiHandle<'a>>> {
    let f = sym!(lib, nvmlDeviceGetGpuInstances);
    // Larger than any profile's instance count: mig-minors has 15 GPU-instance ids.
    let mut buf: Vec<nvmlGpuInstance_t> = vec![ptr::null_mut(); 32];
    let mut count = c_uint::try_from(buf.len()).unwrap_or(c_uint::MAX);
    // SAFETY: `buf` holds `count` elements, more than the profile's instance count that nvml.h
    // asks room for; it outlives the call.
    check("nvmlDeviceGetGpuInstances", unsafe { f(dev.raw, profile_id, buf.as_mut_ptr(), &mut count) })?;
    buf.truncate(count as usize);
    Ok(buf.into_iter().filter(|h| !h.is_null()).map(|raw| GiHandle { raw, _lib: PhantomData }).collect())
}

/// A GPU or compute instance's id, profile id and placement, as `nvmlGpuInstanceGetInfo` and
/// `nvmlComputeInstanceGetInfo_v2` report them (compute-instance placements in compute slices).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InstanceInfoRaw {
    pub id: u32,
    pub profile_id: u32,
    pub start: u32,
    pub size: u32,
}

pub(crate) fn gi_info(lib: &NvmlLib, gi: GiHandle<'_>) -> Raw<InstanceInfoRaw> {
    let f = sym!(lib, nvmlGpuInstanceGetInfo);
    let mut info = nvmlGpuInstanceInfo_t {
        device: ptr::null_mut(),
        id: 0,
        profileId: 0,
        placement: nvmlGpuInstancePlacement_t { start: 0, size: 0 },
    };
    // SAFETY: `gi` is a handle NVML gave out; `info` is a valid out-pointer.
    check("nvmlGpuInstanceGetInfo", unsafe { f(gi.raw, &mut info) })?;
    Ok(InstanceInfoRaw {
        id: info.id,
        profile_id: info.profileId,
        start: info.placement.start,
        size: info.placement.size,
    })
}

/// Destroy a GPU instance (`nvmlGpuInstanceDestroy`). The handle must not be used afterwards,
/// so it is taken by value.
pub(crate) fn destroy_gi(lib: &NvmlLib, gi: GiHandle<'_>) -> Raw<()> {
    let f = sym!(lib, nvmlGpuInstanceDestroy);
    // SAFETY: `gi` is a handle NVML gave out, consumed here.
    check("nvmlGpuInstanceDestroy", unsafe { f(gi.raw) })
}

/// A compute-instance profile as `nvmlGpuInstanceGetComputeInstanceProfileInfo[V]` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CiProfileRaw {
    pub id: u32,
    pub slice_count: u32,
    pub instance_count: u32,
    pub sm_count: u32,
    pub name: Option<String>,
}

/// The compute-instance profile at index `index` (`NVML_COMPUTE_INSTANCE_PROFILE_*`), shared
/// engines: v2 (with the name) where available, else v1.
pub(crate) fn ci_profile_info(lib: &NvmlLib, gi: GiHandle<'_>, index: u32) -> Raw<CiProfileRaw> {
    match ci_profile_info_v2(lib, gi, index) {
        Err(Fail::Missing(_)) => {}
        Err(Fail::Code(_, c)) if versioned_call_refused(c) => {}
        other => return other,
    }
    let f = sym!(lib, nvmlGpuInstanceGetComputeInstanceProfileInfo);
    let mut info = nvmlComputeInstanceProfileInfo_t {
        id: 0,
        sliceCount: 0,
        instanceCount: 0,
        multiprocessorCount: 0,
        sharedCopyEngineCount: 0,
        sharedDecoderCount: 0,
        sharedEncoderCount: 0,
        sharedJpegCount: 0,
        sharedOfaCount: 0,
    };
    // SAFETY: `gi` is a handle NVML gave out; `info` is a valid out-pointer to the v1 struct.
    let rc = unsafe { f(gi.raw, index, NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED, &mut info) };
    check("nvmlGpuInstanceGetComputeInstanceProfileInfo", rc)?;
    Ok(CiProfileRaw {
        id: info.id,
        slice_count: info.sliceCount,
        instance_count: info.instanceCount,
        sm_count: info.multiprocessorCount,
        name: None,
    })
}

fn ci_profile_info_v2(lib: &NvmlLib, gi: GiHandle<'_>, index: u32) -> Raw<CiProfileRaw> {
    let f = sym!(lib, nvmlGpuInstanceGetComputeInstanceProfileInfoV);
    let mut info = nvmlComputeInstanceProfileInfo_v2_t {
        version: struct_version::<nvmlComputeInstanceProfileInfo_v2_t>(2),
        id: 0,
        sliceCount: 0,
        instanceCount: 0,
        multiprocessorCount: 0,
        sharedCopyEngineCount: 0,
        sharedDecoderCount: 0,
        sharedEncoderCount: 0,
        sharedJpegCount: 0,
        sharedOfaCount: 0,
        name: [0; 96],
    };
    // SAFETY: `gi` is a handle NVML gave out; `info` is a valid out-pointer to the v2 struct,
    // whose `version` field says so.
    let rc = unsafe { f(gi.raw, index, NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED, &mut info) };
    check("nvmlGpuInstanceGetComputeInstanceProfileInfoV", rc)?;
    Ok(CiProfileRaw {
        id: info.id,
        slice_count: info.sliceCount,
        instance_count: info.instanceCount,
        sm_count: info.multiprocessorCount,
        name: Some(c_text(&info.name)).filter(|n| !n.is_empty()),
    })
}

/// How many more compute instances of a profile id fit in a GPU instance.
pub(crate) fn ci_remaining_capacity(lib: &NvmlLib, gi: GiHandle<'_>, profile_id: u32) -> Raw<u32> {
    let f = sym!(lib, nvmlGpuInstanceGetComputeInstanceRemainingCapacity);
    let mut count: c_uint = 0;
    // SAFETY: `gi` is a handle NVML gave out; `count` is a valid out-pointer.
    check("nvmlGpuInstanceGetComputeInstanceRemainingCapacity", unsafe { f(gi.raw, profile_id, &mut count) })?;
    Ok(count)
}

/// Create a compute instance of a compute-instance profile id.
pub(crate) fn create_ci<'a>(lib: &'a NvmlLib, gi: GiHandle<'a>, profile_id: u32) -> Raw<CiHandle<'a>> {
    let f = sym!(lib, nvmlGpuInstanceCreateComputeInstance);
    let mut ci: nvmlComputeInstance_t = ptr::null_mut();
    // SAFETY: `gi` is a handle NVML gave out; `ci` is a valid out-pointer.
    check("nvmlGpuInstanceCreateComputeInstance", unsafe { f(gi.raw, profile_id, &mut ci) })?;
    Ok(CiHandle { raw: ci, _lib: PhantomData })
}

/// The compute instance with a driver-assigned id inside a GPU instance.
pub(crate) fn ci_by_id<'a>(lib: &'a NvmlLib, gi: GiHandle<'a>, id: u32) -> Raw<CiHandle<'a>> {
    let f = sym!(lib, nvmlGpuInstanceGetComputeInstanceById);
    let mut ci: nvmlComputeInstance_t = ptr::null_mut();
    // SAFETY: `gi` is a handle NVML gave out; `ci` is a valid out-pointer.
    check("nvmlGpuInstanceGetComputeInstanceById", unsafe { f(gi.raw, id, &mut ci) })?;
    Ok(CiHandle { raw: ci, _lib: PhantomData })
}

/// The compute instances of one compute-instance profile id in a GPU instance.
pub(crate) fn compute_instances<'a>(lib: &'a NvmlLib, gi: GiHandle<'a>, profile_id: u32) -> Raw<Vec<CiHandle<'a>>> {
    let f = sym!(lib, nvmlGpuInstanceGetComputeInstances);
    // Larger than any profile's instance count: mig-minors has 8 compute-instance ids.
    let mut buf: Vec<nvmlComputeInstance_t> = vec![ptr::null_mut(); 16];
    let mut count = c_uint::try_from(buf.len()).unwrap_or(c_uint::MAX);
    // SAFETY: `buf` holds `count` elements, more than the profile's instance count that nvml.h
    // asks room for; it outlives the call.
    let rc = unsafe { f(gi.raw, profile_id, buf.as_mut_ptr(), &mut count) };
    check("nvmlGpuInstanceGetComputeInstances", rc)?;
    buf.truncate(count as usize);
    Ok(buf.into_iter().filter(|h| !h.is_null()).map(|raw| CiHandle { raw, _lib: PhantomData }).collect())
}

pub(crate) fn ci_info(lib: &NvmlLib, ci: CiHandle<'_>) -> Raw<InstanceInfoRaw> {
    let f = sym!(lib, nvmlComputeInstanceGetInfo_v2);
    let mut info = nvmlComputeInstanceInfo_t {
        device: ptr::null_mut(),
        gpuInstance: ptr::null_mut(),
        id: 0,
        profileId: 0,
        placement: nvmlComputeInstancePlacement_t { start: 0, size: 0 },
    };
    // SAFETY: `ci` is a handle NVML gave out; `info` is a valid out-pointer.
    check("nvmlComputeInstanceGetInfo_v2", unsafe { f(ci.raw, &mut info) })?;
    Ok(InstanceInfoRaw {
        id: info.id,
        profile_id: info.profileId,
        start: info.placement.start,
        size: info.placement.size,
    })
}

/// Destroy a compute instance; the handle is consumed.
pub(crate) fn destroy_ci(lib: &NvmlLib, ci: CiHandle<'_>) -> Raw<()> {
    let f = sym!(lib, nvmlComputeInstanceDestroy);
    // SAFETY: `ci` is a handle NVML gave out, consumed here.
    check("nvmlComputeInstanceDestroy", unsafe { f(ci.raw) })
}

/// How many MIG device handles to walk (`nvmlDeviceGetMaxMigDeviceCount`).
pub(crate) fn max_mig_device_count(lib: &NvmlLib, dev: DeviceHandle<'_>) -> Raw<u32> {
    let f = sym!(lib, nvmlDeviceGetMaxMigDeviceCount);
    let mut count: c_uint = 0;
    // SAFETY: `dev` is a live handle; `count` is a valid out-pointer.
    check("nvmlDeviceGetMaxMigDeviceCount", unsafe { f(dev.raw, &mut count) })?;
    Ok(count)
}

/// The MIG device at `index` of a GPU (`NVML_ERROR_NOT_FOUND` for an empty slot).
pub(crate) fn mig_device_by_index<'a>(lib: &'a NvmlLib, dev: DeviceHandle<'a>, index: u32) -> Raw<DeviceHandle<'a>> {
    let f = sym!(lib, nvmlDeviceGetMigDeviceHandleByIndex);
    let mut mig: nvmlDevice_t = ptr::null_mut();
    // SAFETY: `dev` is a live handle; `mig` is a valid out-pointer.
    check("nvmlDeviceGetMigDeviceHandleByIndex", unsafe { f(dev.raw, index, &mut mig) })?;
    Ok(DeviceHandle { raw: mig, _lib: PhantomData })
}

/// The parent GPU of a MIG device handle.
pub(crate) fn parent_of_mig_device<'a>(lib: &'a NvmlLib, mig: DeviceHandle<'a>) -> Raw<DeviceHandle<'a>> {
    let f = sym!(lib, nvmlDeviceGetDeviceHandleFromMigDeviceHandle);
    let mut parent: nvmlDevice_t = ptr::null_mut();
    // SAFETY: `mig` is a live handle; `parent` is a valid out-pointer.
    check("nvmlDeviceGetDeviceHandleFromMigDeviceHandle", unsafe { f(mig.raw, &mut parent) })?;
    Ok(DeviceHandle { raw: parent, _lib: PhantomData })
}

/// Whether a handle is a MIG device (`nvmlDeviceIsMigDeviceHandle`).
pub(crate) fn is_mig_device(lib: &NvmlLib, dev: DeviceHandle<'_>) -> Raw<bool> {
    let f = sym!(lib, nvmlDeviceIsMigDeviceHandle);
    let mut is_mig: c_uint = 0;
    // SAFETY: `dev` is a live handle; `is_mig` is a valid out-pointer.
    check("nvmlDeviceIsMigDeviceHandle", unsafe { f(dev.raw, &mut is_mig) })?;
    Ok(is_mig != 0)
}

/// The GPU-instance id of a MIG device handle.
pub(crate) fn mig_gpu_instance_id(lib: &NvmlLib, mig: DeviceHandle<'_>) -> Raw<u32> {
    let f = sym!(lib, nvmlDeviceGetGpuInstanceId);
    let mut id: c_uint = 0;
    // SAFETY: `mig` is a live handle; `id` is a valid out-pointer.
    check("nvmlDeviceGetGpuInstanceId", unsafe { f(mig.raw, &mut id) })?;
    Ok(id)
}

/// The compute-instance id of a MIG device handle.
pub(crate) fn mig_compute_instance_id(lib: &NvmlLib, mig: DeviceHandle<'_>) -> Raw<u32> {
    let f = sym!(lib, nvmlDeviceGetComputeInstanceId);
    let mut id: c_uint = 0;
    // SAFETY: `mig` is a live handle; `id` is a valid out-pointer.
    check("nvmlDeviceGetComputeInstanceId", unsafe { f(mig.raw, &mut id) })?;
    Ok(id)
}

/// The UUID of any device handle (`GPU-…` or `MIG-…`).
pub(crate) fn uuid(lib: &NvmlLib, dev: DeviceHandle<'_>) -> Raw<String> {
    let f = sym!(lib, nvmlDeviceGetUUID);
    let mut buf: Vec<c_char> = vec![0; NVML_DEVICE_UUID_V2_BUFFER_SIZE as usize];
    // SAFETY: `dev` is a live handle; `buf` has the stated length and outlives the call.
    check("nvmlDeviceGetUUID", unsafe { f(dev.raw, buf.as_mut_ptr(), NVML_DEVICE_UUID_V2_BUFFER_SIZE) })?;
    Ok(c_text(&buf))
}

/// The NVML index of a GPU handle.
pub(crate) fn device_index(lib: &NvmlLib, dev: DeviceHandle<'_>) -> Raw<u32> {
    let f = sym!(lib, nvmlDeviceGetIndex);
    let mut index: c_uint = 0;
    // SAFETY: `dev` is a live handle; `index` is a valid out-pointer.
    check("nvmlDeviceGetIndex", unsafe { f(dev.raw, &mut index) })?;
    Ok(index)
}

/// The event types a GPU can report (`nvmlDeviceGetSupportedEventTypes`).
pub(crate) fn supported_event_types(lib: &NvmlLib, dev: DeviceHandle<'_>) -> Raw<u64> {
    let f = sym!(lib, nvmlDeviceGetSupportedEventTypes);
    let mut types: c_ulonglong = 0;
    // SAFETY: `dev` is a live handle; `types` is a valid out-pointer.
    check("nvmlDeviceGetSupportedEventTypes", unsafe { f(dev.raw, &mut types) })?;
    Ok(types)
}

/// The Xid event bit.
pub(crate) const XID_EVENT: u64 = nvmlEventTypeXidCriticalError as u64;

/// An NVML event set. Created by [`event_set_create`], freed by [`event_set_free`] (which its
/// owner calls before `nvmlShutdown`).
#[derive(Debug)]
pub(crate) struct EventSet {
    raw: nvmlEventSet_t,
}

// SAFETY: NVML is thread-safe ("it is safe to make simultaneous NVML calls from multiple
// threads", nvml.h); the set is a plain handle, used by one thread at a time behind the owner's
// `Mutex`.
unsafe impl Send for EventSet {}

pub(crate) fn event_set_create(lib: &NvmlLib) -> Raw<EventSet> {
    let f = sym!(lib, nvmlEventSetCreate);
    let mut raw: nvmlEventSet_t = ptr::null_mut();
    // SAFETY: `raw` is a valid out-pointer.
    check("nvmlEventSetCreate", unsafe { f(&mut raw) })?;
    Ok(EventSet { raw })
}

/// Register a GPU for Xid events in `set`.
pub(crate) fn register_xid_events(lib: &NvmlLib, dev: DeviceHandle<'_>, set: &EventSet) -> Raw<()> {
    let f = sym!(lib, nvmlDeviceRegisterEvents);
    // SAFETY: `dev` is a live handle and `set` a live event set.
    check("nvmlDeviceRegisterEvents", unsafe { f(dev.raw, XID_EVENT, set.raw) })
}

/// One event out of a set.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventRaw<'a> {
    pub device: Option<DeviceHandle<'a>>,
    pub event_type: u64,
    pub data: u64,
    pub gpu_instance_id: u32,
    pub compute_instance_id: u32,
}

/// Wait up to `timeout_ms` for the next event; `None` on timeout.
pub(crate) fn event_wait<'a>(lib: &'a NvmlLib, set: &EventSet, timeout_ms: u32) -> Raw<Option<EventRaw<'a>>> {
    let f = sym!(lib, nvmlEventSetWait_v2);
    let mut data = nvmlEventData_t {
        device: ptr::null_mut(),
        eventType: 0,
        eventData: 0,
        gpuInstanceId: u32::MAX,
        computeInstanceId: u32::MAX,
    };
    // SAFETY: `set` is a live event set; `data` is a valid out-pointer.
    let rc = unsafe { f(set.raw, &mut data, timeout_ms) };
    if rc == nvmlReturn_enum_NVML_ERROR_TIMEOUT {
        return Ok(None);
    }
    check("nvmlEventSetWait_v2", rc)?;
    Ok(Some(EventRaw {
        device: (!data.device.is_null()).then_some(DeviceHandle { raw: data.device, _lib: PhantomData }),
        event_type: data.eventType,
        data: data.eventData,
        gpu_instance_id: data.gpuInstanceId,
        compute_instance_id: data.computeInstanceId,
    }))
}

/// The GPU's recovery action, NVML's `nvmlDeviceGpuRecoveryAction_t` value
/// (`nvmlDeviceGetFieldValues` with `NVML_FI_DEV_GET_GPU_RECOVERY_ACTION`, field 230 in nvml.h):
/// `Ok(None)` when the driver does not know the field (`NOT_SUPPORTED` or `INVALID_ARGUMENT` in
/// the value's own return code) or answers with a value that is not an integer.
pub(crate) fn recovery_action(lib: &NvmlLib, dev: DeviceHandle<'_>) -> Raw<Option<u64>> {
    const NAME: &str = "nvmlDeviceGetFieldValues";
    let f = sym!(lib, nvmlDeviceGetFieldValues);
    let mut v = nvmlFieldValue_t {
        fieldId: NVML_FI_DEV_GET_GPU_RECOVERY_ACTION,
        scopeId: 0,
        timestamp: 0,
        latencyUsec: 0,
        valueType: 0,
        nvmlReturn: nvmlReturn_enum_NVML_SUCCESS,
        value: nvmlValue_t { ullVal: 0 },
    };
    // SAFETY: `dev` is a live handle; `v` is one valid, initialised `nvmlFieldValue_t`, and the
    // count says one.
    check(NAME, unsafe { f(dev.raw, 1, &mut v) })?;
    const OK: nvmlReturn_t = nvmlReturn_enum_NVML_SUCCESS;
    const NOT_SUPPORTED: nvmlReturn_t = nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED;
    const UNKNOWN_FIELD: nvmlReturn_t = nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT;
    match v.nvmlReturn {
        OK => {}
        NOT_SUPPORTED | UNKNOWN_FIELD => return Ok(None),
        code => return Err(Fail::Code(NAME, code)),
    }
    const UINT: u32 = nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_INT;
    const ULONG: u32 = nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_LONG;
    const ULONGLONG: u32 = nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_LONG_LONG;
    const USHORT: u32 = nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_SHORT;
    const INT: u32 = nvmlValueType_enum_NVML_VALUE_TYPE_SIGNED_INT;
    const LONGLONG: u32 = nvmlValueType_enum_NVML_VALUE_TYPE_SIGNED_LONG_LONG;
    // SAFETY: every member of the union is a plain number for which any bit pattern is valid,
    // and all 8 bytes were initialised above (`ullVal: 0`) before NVML wrote the member
    // `valueType` names; which member is read only decides how the bytes are interpreted.
    let value = unsafe {
        match v.valueType {
            UINT => Some(u64::from(v.value.uiVal)),
            // `c_ulong` is 32 bits on some platforms: a conversion there, not here.
            #[allow(clippy::useless_conversion)]
            ULONG => Some(u64::from(v.value.ulVal)),
            ULONGLONG => Some(v.value.ullVal),
            USHORT => Some(u64::from(v.value.usVal)),
            INT => u64::try_from(v.value.siVal).ok(),
            LONGLONG => u64::try_from(v.value.sllVal).ok(),
            _ => None,
        }
    };
    Ok(value)
}

/// Free an event set.
pub(crate) fn event_set_free(lib: &NvmlLib, set: EventSet) -> Raw<()> {
    let f = sym!(lib, nvmlEventSetFree);
    // SAFETY: `set` is a live event set, consumed here.
    check("nvmlEventSetFree", unsafe { f(set.raw) })
}

/// Whether the GPU supports GPM (`nvmlGpmQueryDeviceSupport`, `nvmlGpmSupport_t` version
/// `NVML_GPM_SUPPORT_VERSION`).
pub(crate) fn gpm_query_support(lib: &NvmlLib, dev: DeviceHandle<'_>) -> Raw<bool> {
    let f = sym!(lib, nvmlGpmQueryDeviceSupport);
    let mut support = nvmlGpmSupport_t { version: NVML_GPM_SUPPORT_VERSION, isSupportedDevice: 0 };
    // SAFETY: `dev` is a live handle; `support` is a valid out-pointer whose version is set, as
    // nvml.h asks.
    check("nvmlGpmQueryDeviceSupport", unsafe { f(dev.raw, &mut support) })?;
    Ok(support.isSupportedDevice != 0)
}

/// A GPM sample buffer (`nvmlGpmSample_t`), allocated by [`gpm_sample_alloc`] and freed by
/// [`gpm_sample_free`], which its owner calls before `nvmlShutdown`.
#[derive(Debug)]
pub(crate) struct GpmSample {
    raw: nvmlGpmSample_t,
}

// SAFETY: NVML is thread-safe (nvml.h); the buffer is a plain handle, used by one thread at a time
// behind its owner's `Mutex`.
unsafe impl Send for GpmSample {}

pub(crate) fn gpm_sample_alloc(lib: &NvmlLib) -> Raw<GpmSample> {
    let f = sym!(lib, nvmlGpmSampleAlloc);
    let mut raw: nvmlGpmSample_t = ptr::null_mut();
    // SAFETY: `raw` is a valid out-pointer.
    check("nvmlGpmSampleAlloc", unsafe { f(&mut raw) })?;
    Ok(GpmSample { raw })
}

/// Free a sample buffer.
pub(crate) fn gpm_sample_free(lib: &NvmlLib, sample: GpmSample) -> Raw<()> {
    let f = sym!(lib, nvmlGpmSampleFree);
    // SAFETY: `sample` is a live buffer, consumed here.
    check("nvmlGpmSampleFree", unsafe { f(sample.raw) })
}

/// Read a sample of the whole GPU (`nvmlGpmSampleGet`), or of its GPU instance `gpu_instance_id`
/// (`nvmlGpmMigSampleGet`), into `sample`.
pub(crate) fn gpm_sample_get(
    lib: &NvmlLib,
    dev: DeviceHandle<'_>,
    gpu_instance_id: Option<u32>,
    sample: &GpmSample,
) -> Raw<()> {
    match gpu_instance_id {
        None => {
            let f = sym!(lib, nvmlGpmSampleGet);
            // SAFETY: `dev` is a live handle and `sample` a live buffer.
            check("nvmlGpmSampleGet", unsafe { f(dev.raw, sample.raw) })
        }
        Some(gi) => {
            let f = sym!(lib, nvmlGpmMigSampleGet);
            // SAFETY: `dev` is a live handle (the GPU, not a MIG device) and `sample` a live buffer.
            check("nvmlGpmMigSampleGet", unsafe { f(dev.raw, gi, sample.raw) })
        }
    }
}

/// The metrics `ids` between two samples of one GPU or GPU instance (`nvmlGpmMetricsGet`): for
/// each id, its value (NVML's unit: percent for the utilisations) or its own return code.
pub(crate) fn gpm_metrics_get(
    lib: &NvmlLib,
    earlier: &GpmSample,
    later: &GpmSample,
    ids: &[u32],
) -> Raw<Vec<Result<f64, nvmlReturn_t>>> {
    const NAME: &str = "nvmlGpmMetricsGet";
    let f = sym!(lib, nvmlGpmMetricsGet);
    let blank = nvmlGpmMetric_t {
        metricId: 0,
        nvmlReturn: nvmlReturn_enum_NVML_SUCCESS,
        value: 0.0,
        metricInfo: nvmlGpmMetric_t__bindgen_ty_1 {
            shortName: ptr::null_mut(),
            longName: ptr::null_mut(),
            unit: ptr::null_mut(),
        },
    };
    // The struct has room for NVML_GPM_METRIC_MAX metrics (210 in nvml-wrapper-sys 0.10's nvml.h;
    // 98 in CUDA 12.2's, 333 in later ones: the library fills only `numMetrics` of them).
    let mut get = nvmlGpmMetricsGet_t {
        version: NVML_GPM_METRICS_GET_VERSION,
        numMetrics: 0,
        sample1: earlier.raw,
        sample2: later.raw,
        metrics: [blank; nvmlGpmMetricId_t_NVML_GPM_METRIC_MAX as usize],
    };
    let n = ids.len().min(get.metrics.len());
    for (slot, id) in get.metrics.iter_mut().zip(&ids[..n]) {
        slot.metricId = *id;
    }
    get.numMetrics = c_uint::try_from(n).unwrap_or(0);
    // SAFETY: `get` is a valid, initialised `nvmlGpmMetricsGet_t` with its version set, naming two
    // live sample buffers and `numMetrics` entries within its array; it outlives the call.
    check(NAME, unsafe { f(&mut get) })?;
    Ok(get.metrics[..n]
        .iter()
        .map(|m| if m.nvmlReturn == nvmlReturn_enum_NVML_SUCCESS { Ok(m.value) } else { Err(m.nvmlReturn) })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_versions_match_nvml_h() {
        // nvmlGpuInstanceProfileInfo_v2 = NVML_STRUCT_VERSION(GpuInstanceProfileInfo, 2).
        let v = struct_version::<nvmlGpuInstanceProfileInfo_v2_t>(2);
        assert_eq!(v >> 24, 2);
        assert_eq!(v & 0x00ff_ffff, std::mem::size_of::<nvmlGpuInstanceProfileInfo_v2_t>() as u32);
    }

    #[test]
    fn c_text_stops_at_nul_and_survives_none() {
        let mut buf = [0 as c_char; 8];
        for (i, b) in b"MIG 1g".iter().enumerate() {
            buf[i] = *b as c_char;
        }
        assert_eq!(c_text(&buf), "MIG 1g");
        let full = [b'a' as c_char; 4];
        assert_eq!(c_text(&full), "aaaa");
    }
}
