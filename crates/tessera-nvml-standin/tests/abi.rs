//! The stand-in as a caller sees it: `libtessera_nvml_standin.so` loaded with
//! `nvml_wrapper_sys::bindings::NvmlLib::new` (the real `dlopen` + `dlsym` path) and driven
//! through the raw C functions.
//!
//! The library's state is process-global and configured from the environment, so every test
//! takes [`LOCK`], sets the `TESSERA_STANDIN_*` variables it needs, and shuts the library down
//! fully before it starts; each uses its own temporary state file.
#![allow(unsafe_code)] // Calling a C library through raw function pointers is the point.

use std::ffi::CStr;
use std::io::Write;
use std::os::raw::{c_char, c_int, c_uint, c_ulong, c_ulonglong};
use std::path::Path;
use std::ptr;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use nvml_wrapper_sys::bindings::*;
use tessera_gpu::{MigBackend, SimBackend};
use tessera_nvml_standin::config::*;

const SUCCESS: nvmlReturn_t = nvmlReturn_enum_NVML_SUCCESS;
const UNINITIALIZED: nvmlReturn_t = nvmlReturn_enum_NVML_ERROR_UNINITIALIZED;
const INVALID_ARGUMENT: nvmlReturn_t = nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT;
const NOT_SUPPORTED: nvmlReturn_t = nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED;
const NO_PERMISSION: nvmlReturn_t = nvmlReturn_enum_NVML_ERROR_NO_PERMISSION;
const NOT_FOUND: nvmlReturn_t = nvmlReturn_enum_NVML_ERROR_NOT_FOUND;
const INSUFFICIENT_SIZE: nvmlReturn_t = nvmlReturn_enum_NVML_ERROR_INSUFFICIENT_SIZE;
const TIMEOUT: nvmlReturn_t = nvmlReturn_enum_NVML_ERROR_TIMEOUT;
const GPU_IS_LOST: nvmlReturn_t = nvmlReturn_enum_NVML_ERROR_GPU_IS_LOST;
const IN_USE: nvmlReturn_t = nvmlReturn_enum_NVML_ERROR_IN_USE;
const INSUFFICIENT_RESOURCES: nvmlReturn_t = nvmlReturn_enum_NVML_ERROR_INSUFFICIENT_RESOURCES;
const VERSION_MISMATCH: nvmlReturn_t = nvmlReturn_enum_NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
const UNKNOWN: nvmlReturn_t = nvmlReturn_enum_NVML_ERROR_UNKNOWN;
const XID: c_ulonglong = nvmlEventTypeXidCriticalError as c_ulonglong;

static LOCK: Mutex<()> = Mutex::new(());

/// Call a raw NVML function of the loaded library.
macro_rules! nv {
    ($lib:expr, $f:ident($($arg:expr),* $(,)?)) => {
        // SAFETY: the stand-in exports every function these tests call (checked by
        // `every_export_resolves`), and every pointer passed is null on purpose or points to a
        // live local of the type nvml.h asks for, with the element count passed alongside.
        unsafe { $lib.$f($($arg),*) }
    };
}

/// The library, loaded once for the whole test binary.
fn lib() -> &'static NvmlLib {
    static LIB: OnceLock<NvmlLib> = OnceLock::new();
    LIB.get_or_init(|| {
        let path = tessera_nvml_standin::library_path().unwrap_or_else(|| {
            panic!(
                "{} not found next to the test binary; run `cargo build -p tessera-nvml-standin` first",
                tessera_nvml_standin::library_file_name()
            )
        });
        // SAFETY: loading the stand-in runs no initialisation code beyond Rust's own statics.
        unsafe { NvmlLib::new(&path) }.unwrap_or_else(|e| panic!("cannot load {}: {e}", path.display()))
    })
}

/// Take the test lock, shut the library down completely and set exactly `vars`.
fn setup(vars: &[(&str, &str)]) -> MutexGuard<'static, ()> {
    let guard = LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    let lib = lib();
    while nv!(lib, nvmlShutdown()) == SUCCESS {}
    for name in ENV_VARS {
        // SAFETY: tests in this binary run one at a time under LOCK and no other thread reads
        // or writes the environment meanwhile.
        unsafe { std::env::remove_var(name) };
    }
    for (name, value) in vars {
        // SAFETY: as above.
        unsafe { std::env::set_var(name, value) };
    }
    guard
}

fn error_string(r: nvmlReturn_t) -> String {
    let p = nv!(lib(), nvmlErrorString(r));
    // SAFETY: nvmlErrorString returns a static NUL-terminated string.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

#[track_caller]
fn ok(r: nvmlReturn_t) {
    assert_eq!(r, SUCCESS, "NVML error {r}: {}", error_string(r));
}

fn text(buf: &[c_char]) -> String {
    let bytes: Vec<u8> = buf.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8(bytes).unwrap()
}

fn device(index: u32) -> nvmlDevice_t {
    let mut d = ptr::null_mut();
    ok(nv!(lib(), nvmlDeviceGetHandleByIndex_v2(index, &mut d)));
    d
}

fn uuid(d: nvmlDevice_t) -> String {
    let mut buf = [0 as c_char; NVML_DEVICE_UUID_V2_BUFFER_SIZE as usize];
    ok(nv!(lib(), nvmlDeviceGetUUID(d, buf.as_mut_ptr(), buf.len() as c_uint)));
    text(&buf)
}

fn name(d: nvmlDevice_t) -> String {
    let mut buf = [0 as c_char; NVML_DEVICE_NAME_V2_BUFFER_SIZE as usize];
    ok(nv!(lib(), nvmlDeviceGetName(d, buf.as_mut_ptr(), buf.len() as c_uint)));
    text(&buf)
}

fn device_count() -> u32 {
    let mut n = 0;
    ok(nv!(lib(), nvmlDeviceGetCount_v2(&mut n)));
    n
}

fn create_gi(d: nvmlDevice_t, profile_id: u32, start: u32, size: u32) -> Result<nvmlGpuInstance_t, nvmlReturn_t> {
    let placement = nvmlGpuInstancePlacement_t { start, size };
    let mut gi = ptr::null_mut();
    match nv!(lib(), nvmlDeviceCreateGpuInstanceWithPlacement(d, profile_id, &placement, &mut gi)) {
        SUCCESS => Ok(gi),
        e => Err(e),
    }
}

fn gi_info(gi: nvmlGpuInstance_t) -> nvmlGpuInstanceInfo_t {
    let mut info = nvmlGpuInstanceInfo_t {
        device: ptr::null_mut(),
        id: 0,
        profileId: 0,
        placement: nvmlGpuInstancePlacement_t { start: 0, size: 0 },
    };
    ok(nv!(lib(), nvmlGpuInstanceGetInfo(gi, &mut info)));
    info
}

fn gpu_instances(d: nvmlDevice_t, profile_id: u32) -> Vec<nvmlGpuInstance_t> {
    let mut buf = vec![ptr::null_mut(); 8];
    let mut count = buf.len() as c_uint;
    ok(nv!(lib(), nvmlDeviceGetGpuInstances(d, profile_id, buf.as_mut_ptr(), &mut count)));
    buf.truncate(count as usize);
    buf
}

fn processes(d: nvmlDevice_t) -> Vec<nvmlProcessInfo_t> {
    let mut count: c_uint = 0;
    match nv!(lib(), nvmlDeviceGetComputeRunningProcesses_v3(d, &mut count, ptr::null_mut())) {
        SUCCESS => return Vec::new(),
        INSUFFICIENT_SIZE => {}
        e => panic!("process count: {}", error_string(e)),
    }
    let empty = nvmlProcessInfo_t { pid: 0, usedGpuMemory: 0, gpuInstanceId: 0, computeInstanceId: 0 };
    let mut buf = vec![empty; count as usize];
    ok(nv!(lib(), nvmlDeviceGetComputeRunningProcesses_v3(d, &mut count, buf.as_mut_ptr())));
    buf.truncate(count as usize);
    buf
}

fn state_file(dir: &Path) -> String {
    dir.join("node.json").to_string_lossy().into_owned()
}

#[test]
fn every_export_resolves() {
    let _g = setup(&[]);
    for name in tessera_nvml_standin::ffi::EXPORTS {
        let symbol = format!("{name}\0");
        // SAFETY: only looks the symbol up; it is never called through this pointer.
        let found = unsafe { lib().__library.get::<*const ()>(symbol.as_bytes()) };
        assert!(found.is_ok(), "{name} is not exported");
    }
    assert!(lib().nvmlDeviceGetMigMode.is_ok());
    assert!(lib().nvmlDeviceGetFanSpeed_v2.is_err(), "nothing beyond the contract is exported");
}

#[test]
fn init_shutdown_devices_and_strings() {
    let dir = tempfile::tempdir().unwrap();
    let state = state_file(dir.path());
    let _g = setup(&[(ENV_SPEC, "2xA100-40GB+1xH100-80GB,numa=2,cpus=128"), (ENV_STATE, &state)]);
    let l = lib();

    // Before init.
    let mut n: c_uint = 0;
    assert_eq!(nv!(l, nvmlDeviceGetCount_v2(&mut n)), UNINITIALIZED);
    assert_eq!(nv!(l, nvmlShutdown()), UNINITIALIZED);
    let mut version = [0 as c_char; NVML_SYSTEM_NVML_VERSION_BUFFER_SIZE as usize];
    ok(nv!(l, nvmlSystemGetNVMLVersion(version.as_mut_ptr(), version.len() as c_uint)));
    assert_eq!(text(&version), "13.580.65.06");

    // Error strings.
    for (code, want) in [
        (SUCCESS, "Success"),
        (UNINITIALIZED, "Uninitialized"),
        (INVALID_ARGUMENT, "Invalid Argument"),
        (NOT_SUPPORTED, "Not Supported"),
        (NO_PERMISSION, "Insufficient Permissions"),
        (NOT_FOUND, "Not Found"),
        (INSUFFICIENT_SIZE, "Insufficient Size"),
        (TIMEOUT, "Timeout"),
        (GPU_IS_LOST, "GPU is lost"),
        (IN_USE, "In use by another client"),
        (INSUFFICIENT_RESOURCES, "Insufficient Resources"),
        (VERSION_MISMATCH, "Argument version mismatch"),
        (UNKNOWN, "Unknown Error"),
        (4242, "Unknown Error"),
    ] {
        assert_eq!(error_string(code), want);
    }

    // Refcounted init and shutdown.
    ok(nv!(l, nvmlInit_v2()));
    ok(nv!(l, nvmlInitWithFlags(0)));
    assert_eq!(device_count(), 3);
    ok(nv!(l, nvmlShutdown()));
    assert_eq!(device_count(), 3, "one init is still open");
    ok(nv!(l, nvmlShutdown()));
    assert_eq!(nv!(l, nvmlDeviceGetCount_v2(&mut n)), UNINITIALIZED);
    ok(nv!(l, nvmlInit_v2()));

    // System.
    let mut driver = [0 as c_char; NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE as usize];
    ok(nv!(l, nvmlSystemGetDriverVersion(driver.as_mut_ptr(), driver.len() as c_uint)));
    assert_eq!(text(&driver), "580.65.06");
    assert_eq!(nv!(l, nvmlSystemGetDriverVersion(driver.as_mut_ptr(), 9)), INSUFFICIENT_SIZE);
    assert_eq!(nv!(l, nvmlSystemGetDriverVersion(ptr::null_mut(), 80)), INVALID_ARGUMENT);
    let mut cuda: c_int = 0;
    ok(nv!(l, nvmlSystemGetCudaDriverVersion_v2(&mut cuda)));
    assert_eq!(cuda, 13000);

    // Devices.
    let (d0, d2) = (device(0), device(2));
    assert_eq!(device(0), d0, "handles are stable");
    let mut d = ptr::null_mut();
    assert_eq!(nv!(l, nvmlDeviceGetHandleByIndex_v2(3, &mut d)), INVALID_ARGUMENT);
    assert_eq!(nv!(l, nvmlDeviceGetHandleByIndex_v2(0, ptr::null_mut())), INVALID_ARGUMENT);
    let u0 = uuid(d0);
    assert!(u0.starts_with("GPU-") && u0.len() == 40, "{u0}");
    assert_ne!(u0, uuid(device(1)));
    let cu = std::ffi::CString::new(u0.clone()).unwrap();
    ok(nv!(l, nvmlDeviceGetHandleByUUID(cu.as_ptr(), &mut d)));
    assert_eq!(d, d0);
    assert_eq!(nv!(l, nvmlDeviceGetHandleByUUID(c"GPU-0000".as_ptr(), &mut d)), NOT_FOUND);
    let mut index = 9;
    ok(nv!(l, nvmlDeviceGetIndex(d2, &mut index)));
    assert_eq!(index, 2);
    assert_eq!(name(d0), "NVIDIA A100-SXM4-40GB");
    assert_eq!(name(d2), "NVIDIA H100 80GB HBM3");
    let mut small = [0 as c_char; 8];
    assert_eq!(nv!(l, nvmlDeviceGetName(d0, small.as_mut_ptr(), 8)), INSUFFICIENT_SIZE);
    assert_eq!(nv!(l, nvmlDeviceGetUUID(d0, small.as_mut_ptr(), 8)), INSUFFICIENT_SIZE);

    let mut pci = nvmlPciInfo_t {
        busIdLegacy: [0; 16],
        domain: 9,
        bus: 9,
        device: 9,
        pciDeviceId: 0,
        pciSubSystemId: 0,
        busId: [0; 32],
    };
    ok(nv!(l, nvmlDeviceGetPciInfo_v3(d2, &mut pci)));
    assert_eq!(text(&pci.busId), "00000000:3A:00.0");
    assert_eq!(text(&pci.busIdLegacy), "0000:3A:00.0");
    assert_eq!((pci.domain, pci.bus, pci.device), (0, 0x3a, 0));
    assert_eq!(pci.pciDeviceId, 0x2330_10DE);
    let mut minor = 9;
    ok(nv!(l, nvmlDeviceGetMinorNumber(d2, &mut minor)));
    assert_eq!(minor, 2);

    let mut mem = nvmlMemory_t { total: 0, free: 0, used: 0 };
    ok(nv!(l, nvmlDeviceGetMemoryInfo(d2, &mut mem)));
    assert!(mem.total > 79 * 1024 * 1024 * 1024 && mem.free == mem.total && mem.used == 0, "{mem:?}");
    let v2 = (size_of::<nvmlMemory_v2_t>() as u32) | (2 << 24);
    let mut mem2 = nvmlMemory_v2_t { version: v2, total: 0, reserved: 9, free: 0, used: 0 };
    ok(nv!(l, nvmlDeviceGetMemoryInfo_v2(d2, &mut mem2)));
    assert_eq!((mem2.total, mem2.reserved, mem2.version), (mem.total, 0, v2));
    mem2.version = (size_of::<nvmlMemory_v2_t>() as u32) | (1 << 24);
    assert_eq!(nv!(l, nvmlDeviceGetMemoryInfo_v2(d2, &mut mem2)), INVALID_ARGUMENT);

    // Affinity: 128 cores on 2 NUMA nodes; GPUs 0 and 1 on node 0, GPU 2 on node 1.
    let mut cpus = [0 as c_ulong; 4];
    ok(nv!(l, nvmlDeviceGetCpuAffinity(d2, cpus.len() as c_uint, cpus.as_mut_ptr())));
    assert_eq!(cpus, [0, c_ulong::MAX, 0, 0]);
    ok(nv!(l, nvmlDeviceGetCpuAffinityWithinScope(d0, 2, cpus.as_mut_ptr(), NVML_AFFINITY_SCOPE_NODE)));
    assert_eq!(cpus[..2], [c_ulong::MAX, 0]);
    assert_eq!(nv!(l, nvmlDeviceGetCpuAffinity(d0, 0, cpus.as_mut_ptr())), INVALID_ARGUMENT);
    assert_eq!(nv!(l, nvmlDeviceGetCpuAffinityWithinScope(d0, 2, cpus.as_mut_ptr(), 5)), INVALID_ARGUMENT);
    let mut nodes = [9 as c_ulong; 1];
    ok(nv!(l, nvmlDeviceGetMemoryAffinity(d2, 1, nodes.as_mut_ptr(), NVML_AFFINITY_SCOPE_NODE)));
    assert_eq!(nodes, [0b10]);
    let mut numa = 9;
    ok(nv!(l, nvmlDeviceGetNumaNodeId(d2, &mut numa)));
    assert_eq!(numa, 1);

    // A pointer the library never handed out.
    let mut bogus_target = 0u64;
    let bogus: nvmlDevice_t = (&raw mut bogus_target).cast();
    assert_eq!(nv!(l, nvmlDeviceGetIndex(bogus, &mut index)), INVALID_ARGUMENT);
    assert_eq!(nv!(l, nvmlDeviceGetIndex(ptr::null_mut(), &mut index)), INVALID_ARGUMENT);
    ok(nv!(l, nvmlShutdown()));

    // A fresh init re-reads the environment: a new node (in memory this time).
    // SAFETY: serialised by LOCK (see `setup`).
    unsafe {
        std::env::remove_var(ENV_STATE);
        std::env::set_var(ENV_SPEC, "1xA30,numa=0");
    }
    ok(nv!(l, nvmlInit_v2()));
    assert_eq!(device_count(), 1);
    assert_eq!(name(device(0)), "NVIDIA A30");
    ok(nv!(l, nvmlDeviceGetMemoryAffinity(device(0), 1, nodes.as_mut_ptr(), 0)));
    assert_eq!(nodes, [0], "unknown NUMA node: empty mask");
    assert_eq!(nv!(l, nvmlDeviceGetNumaNodeId(device(0), &mut numa)), NOT_SUPPORTED);
    ok(nv!(l, nvmlShutdown()));

    // A bad spec, or a state file of another node, makes init fail.
    // SAFETY: serialised by LOCK (see `setup`).
    unsafe { std::env::set_var(ENV_SPEC, "8xH101") };
    assert_eq!(nv!(l, nvmlInit_v2()), UNKNOWN);
    // SAFETY: as above.
    unsafe {
        std::env::set_var(ENV_SPEC, "1xA30");
        std::env::set_var(ENV_STATE, &state);
    }
    assert_eq!(nv!(l, nvmlInit_v2()), UNKNOWN);
    assert_eq!(nv!(l, nvmlDeviceGetCount_v2(&mut n)), UNINITIALIZED);
}

fn profile_info_v2(d: nvmlDevice_t, index: u32) -> Result<nvmlGpuInstanceProfileInfo_v2_t, nvmlReturn_t> {
    let mut info = nvmlGpuInstanceProfileInfo_v2_t {
        version: (size_of::<nvmlGpuInstanceProfileInfo_v2_t>() as u32) | (2 << 24),
        id: 0,
        isP2pSupported: 9,
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
    match nv!(lib(), nvmlDeviceGetGpuInstanceProfileInfoV(d, index, &mut info)) {
        SUCCESS => Ok(info),
        e => Err(e),
    }
}

#[test]
fn gpu_instances_compute_instances_and_mig_devices() {
    let dir = tempfile::tempdir().unwrap();
    let state = state_file(dir.path());
    let _g = setup(&[(ENV_SPEC, "1xA100-40GB"), (ENV_STATE, &state)]);
    let l = lib();
    ok(nv!(l, nvmlInit_v2()));
    let d = device(0);

    // MIG mode and profiles.
    let (mut current, mut pending) = (9, 9);
    ok(nv!(l, nvmlDeviceGetMigMode(d, &mut current, &mut pending)));
    assert_eq!((current, pending), (NVML_DEVICE_MIG_ENABLE, NVML_DEVICE_MIG_ENABLE));
    let mut v1 = nvmlGpuInstanceProfileInfo_t {
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
    ok(nv!(l, nvmlDeviceGetGpuInstanceProfileInfo(d, NVML_GPU_INSTANCE_PROFILE_3_SLICE, &mut v1)));
    assert_eq!((v1.id, v1.sliceCount, v1.instanceCount), (9, 3, 2));
    assert!(v1.memorySizeMB > 19_000 && v1.multiprocessorCount > 0, "{v1:?}");
    let ids: Vec<Result<u32, nvmlReturn_t>> =
        (0..=NVML_GPU_INSTANCE_PROFILE_COUNT).map(|i| profile_info_v2(d, i).map(|p| p.id)).collect();
    assert_eq!(
        ids,
        [
            Ok(19),
            Ok(14),
            Ok(9),
            Ok(5),
            Ok(0),
            Err(NOT_SUPPORTED),
            Err(NOT_SUPPORTED),
            Ok(20),
            Err(NOT_SUPPORTED),
            Ok(15),
            Err(NOT_SUPPORTED),
            Err(NOT_SUPPORTED),
            Err(NOT_SUPPORTED),
            Err(NOT_SUPPORTED),
            Err(NOT_SUPPORTED),
            Err(NOT_SUPPORTED),
            Err(NOT_SUPPORTED),
            Err(INVALID_ARGUMENT),
        ]
    );
    let p = profile_info_v2(d, NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1).unwrap();
    assert_eq!((text(&p.name), p.ofaCount, p.isP2pSupported), ("MIG 1g.5gb+me".to_string(), 1, 0));
    // v3 is accepted too; any other version is refused.
    let mut v3 = nvmlGpuInstanceProfileInfo_v3_t {
        version: (size_of::<nvmlGpuInstanceProfileInfo_v3_t>() as u32) | (3 << 24),
        id: 0,
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
        capabilities: 9,
    };
    ok(nv!(l, nvmlDeviceGetGpuInstanceProfileInfoV(d, 0, (&raw mut v3).cast())));
    assert_eq!((v3.id, text(&v3.name), v3.capabilities), (19, "MIG 1g.5gb".to_string(), 0));
    let mut bad = profile_info_v2(d, 0).unwrap();
    bad.version = (size_of::<nvmlGpuInstanceProfileInfo_v2_t>() as u32) | (1 << 24);
    assert_eq!(nv!(l, nvmlDeviceGetGpuInstanceProfileInfoV(d, 0, &mut bad)), INVALID_ARGUMENT);
    bad.version = size_of::<nvmlGpuInstanceProfileInfo_v2_t>() as u32;
    assert_eq!(nv!(l, nvmlDeviceGetGpuInstanceProfileInfoV(d, 0, &mut bad)), INVALID_ARGUMENT);

    // Possible placements: count first, then fill; too small a buffer says how many.
    let mut count: c_uint = 0;
    ok(nv!(l, nvmlDeviceGetGpuInstancePossiblePlacements_v2(d, 19, ptr::null_mut(), &mut count)));
    assert_eq!(count, 7);
    let mut placements = vec![nvmlGpuInstancePlacement_t { start: 99, size: 99 }; 7];
    let mut short: c_uint = 3;
    assert_eq!(
        nv!(l, nvmlDeviceGetGpuInstancePossiblePlacements_v2(d, 19, placements.as_mut_ptr(), &mut short)),
        INSUFFICIENT_SIZE
    );
    assert_eq!(short, 7);
    ok(nv!(l, nvmlDeviceGetGpuInstancePossiblePlacements_v2(d, 19, placements.as_mut_ptr(), &mut count)));
    let starts: Vec<(u32, u32)> = placements.iter().map(|p| (p.start, p.size)).collect();
    assert_eq!(starts, [(0, 1), (1, 1), (2, 1), (3, 1), (4, 1), (5, 1), (6, 1)]);
    count = 2;
    ok(nv!(l, nvmlDeviceGetGpuInstancePossiblePlacements_v2(d, 9, placements.as_mut_ptr(), &mut count)));
    assert_eq!((count, placements[0].start, placements[1].start, placements[1].size), (2, 0, 4, 4));
    assert_eq!(
        nv!(l, nvmlDeviceGetGpuInstancePossiblePlacements_v2(d, 19, placements.as_mut_ptr(), ptr::null_mut())),
        INVALID_ARGUMENT
    );

    // NVIDIA's example: default placements for 19, 19, 14, then 9 fails.
    let mut made = Vec::new();
    for id in [19, 19, 14] {
        let mut gi = ptr::null_mut();
        ok(nv!(l, nvmlDeviceCreateGpuInstance(d, id, &mut gi)));
        made.push(gi);
    }
    let placed: Vec<u32> = made.iter().map(|&gi| gi_info(gi).placement.start).collect();
    assert_eq!(placed, [6, 4, 0]);
    let mut gi = ptr::null_mut();
    assert_eq!(nv!(l, nvmlDeviceCreateGpuInstance(d, 9, &mut gi)), INSUFFICIENT_RESOURCES);
    let mut remaining = 9;
    ok(nv!(l, nvmlDeviceGetGpuInstanceRemainingCapacity(d, 9, &mut remaining)));
    assert_eq!(remaining, 0);
    assert_eq!(gpu_instances(d, 19).len(), 2);
    let mut one = [ptr::null_mut(); 1];
    let mut cap: c_uint = 1;
    assert_eq!(nv!(l, nvmlDeviceGetGpuInstances(d, 19, one.as_mut_ptr(), &mut cap)), INSUFFICIENT_SIZE);
    assert_eq!(cap, 2);
    for gi in made {
        ok(nv!(l, nvmlGpuInstanceDestroy(gi)));
        assert_eq!(nv!(l, nvmlGpuInstanceDestroy(gi)), INVALID_ARGUMENT, "the handle is gone");
    }

    // Explicit placement: 3g at 4, then 4g at 0 — the layout the default placement missed.
    let g3 = create_gi(d, 9, 4, 4).unwrap();
    assert_eq!(create_gi(d, 5, 2, 4), Err(INVALID_ARGUMENT), "illegal start");
    let g4 = create_gi(d, 5, 0, 4).unwrap();
    assert_eq!(create_gi(d, 19, 0, 1), Err(INSUFFICIENT_RESOURCES));
    let info = gi_info(g3);
    assert_eq!((info.device, info.profileId, info.placement.start, info.placement.size), (d, 9, 4, 4));
    let mut by_id = ptr::null_mut();
    ok(nv!(l, nvmlDeviceGetGpuInstanceById(d, info.id, &mut by_id)));
    assert_eq!(by_id, g3);
    assert_eq!(nv!(l, nvmlDeviceGetGpuInstanceById(d, 14, &mut by_id)), NOT_FOUND);
    assert_eq!(gpu_instances(d, 9), [g3]);
    assert_eq!(gpu_instances(d, 5), [g4]);

    // Compute instances: a 1c and a 2c in the 3g.
    let mut cip = nvmlComputeInstanceProfileInfo_v2_t {
        version: (size_of::<nvmlComputeInstanceProfileInfo_v2_t>() as u32) | (2 << 24),
        id: 9,
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
    ok(nv!(l, nvmlGpuInstanceGetComputeInstanceProfileInfoV(g3, NVML_COMPUTE_INSTANCE_PROFILE_1_SLICE, 0, &mut cip)));
    assert_eq!((cip.id, cip.sliceCount, cip.instanceCount, text(&cip.name)), (0, 1, 3, "MIG 1c.3g.20gb".to_string()));
    assert_eq!(
        nv!(l, nvmlGpuInstanceGetComputeInstanceProfileInfoV(g3, NVML_COMPUTE_INSTANCE_PROFILE_7_SLICE, 0, &mut cip)),
        NOT_SUPPORTED
    );
    assert_eq!(nv!(l, nvmlGpuInstanceGetComputeInstanceProfileInfoV(g3, 0, 1, &mut cip)), INVALID_ARGUMENT);
    let mut cip1 = nvmlComputeInstanceProfileInfo_t {
        id: 9,
        sliceCount: 0,
        instanceCount: 0,
        multiprocessorCount: 0,
        sharedCopyEngineCount: 0,
        sharedDecoderCount: 0,
        sharedEncoderCount: 0,
        sharedJpegCount: 0,
        sharedOfaCount: 0,
    };
    ok(nv!(l, nvmlGpuInstanceGetComputeInstanceProfileInfo(g3, NVML_COMPUTE_INSTANCE_PROFILE_3_SLICE, 0, &mut cip1)));
    assert_eq!((cip1.id, cip1.sliceCount, cip1.multiprocessorCount), (2, 3, v1.multiprocessorCount));
    // The 2c first: the (inferred) compute-instance placements put it only at slice 0.
    let mut ci_b = ptr::null_mut();
    ok(nv!(l, nvmlGpuInstanceCreateComputeInstance(g3, 1, &mut ci_b)));
    let mut ci_a = ptr::null_mut();
    ok(nv!(l, nvmlGpuInstanceCreateComputeInstance(g3, 0, &mut ci_a)));
    ok(nv!(l, nvmlGpuInstanceGetComputeInstanceRemainingCapacity(g3, 0, &mut remaining)));
    assert_eq!(remaining, 0, "3 of 3 compute slices used");
    let mut ci_full = ptr::null_mut();
    ok(nv!(l, nvmlGpuInstanceCreateComputeInstance(g4, 3, &mut ci_full)));
    let mut cis = [ptr::null_mut(); 4];
    let mut n: c_uint = 4;
    ok(nv!(l, nvmlGpuInstanceGetComputeInstances(g3, 1, cis.as_mut_ptr(), &mut n)));
    assert_eq!((n, cis[0]), (1, ci_b));
    let mut by_ci_id = ptr::null_mut();
    ok(nv!(l, nvmlGpuInstanceGetComputeInstanceById(g3, 0, &mut by_ci_id)));
    assert_eq!(by_ci_id, ci_b);
    let mut ci_info = nvmlComputeInstanceInfo_t {
        device: ptr::null_mut(),
        gpuInstance: ptr::null_mut(),
        id: 9,
        profileId: 9,
        placement: nvmlComputeInstancePlacement_t { start: 9, size: 9 },
    };
    ok(nv!(l, nvmlComputeInstanceGetInfo_v2(ci_b, &mut ci_info)));
    assert_eq!(
        (
            ci_info.device,
            ci_info.gpuInstance,
            ci_info.id,
            ci_info.profileId,
            ci_info.placement.start,
            ci_info.placement.size
        ),
        (d, g3, 0, 1, 0, 2)
    );

    // MIG devices: one per compute instance, GPU-instance id then compute-instance id order.
    let mut max = 0;
    ok(nv!(l, nvmlDeviceGetMaxMigDeviceCount(d, &mut max)));
    assert_eq!(max, 7);
    let g4_id = gi_info(g4).id;
    let mut migs = Vec::new();
    for i in 0..max {
        let mut m = ptr::null_mut();
        match nv!(l, nvmlDeviceGetMigDeviceHandleByIndex(d, i, &mut m)) {
            SUCCESS => migs.push(m),
            NOT_FOUND => break,
            e => panic!("MIG device {i}: {}", error_string(e)),
        }
    }
    assert_eq!(migs.len(), 3);
    let mut m = ptr::null_mut();
    assert_eq!(nv!(l, nvmlDeviceGetMigDeviceHandleByIndex(d, 7, &mut m)), INVALID_ARGUMENT);
    let ids: Vec<(u32, u32)> = migs
        .iter()
        .map(|&m| {
            let (mut gi, mut ci) = (0, 0);
            ok(nv!(l, nvmlDeviceGetGpuInstanceId(m, &mut gi)));
            ok(nv!(l, nvmlDeviceGetComputeInstanceId(m, &mut ci)));
            (gi, ci)
        })
        .collect();
    let mut want = vec![(info.id, 0), (info.id, 1), (g4_id, 0)];
    want.sort();
    assert_eq!(ids, want);
    let mig_b = migs[ids.iter().position(|&x| x == (info.id, 0)).unwrap()];
    let mig_uuid = uuid(mig_b);
    assert!(mig_uuid.starts_with("MIG-") && mig_uuid.len() == 40, "{mig_uuid}");
    assert_eq!(name(mig_b), "NVIDIA A100-SXM4-40GB MIG 2c.3g.20gb");
    let full = migs[ids.iter().position(|&x| x == (g4_id, 0)).unwrap()];
    assert_eq!(name(full), "NVIDIA A100-SXM4-40GB MIG 4g.20gb");
    let mut is_mig = 9;
    ok(nv!(l, nvmlDeviceIsMigDeviceHandle(mig_b, &mut is_mig)));
    assert_eq!(is_mig, 1);
    ok(nv!(l, nvmlDeviceIsMigDeviceHandle(d, &mut is_mig)));
    assert_eq!(is_mig, 0);
    let mut parent = ptr::null_mut();
    ok(nv!(l, nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig_b, &mut parent)));
    assert_eq!(parent, d);
    let cu = std::ffi::CString::new(mig_uuid.clone()).unwrap();
    let mut by_uuid = ptr::null_mut();
    ok(nv!(l, nvmlDeviceGetHandleByUUID(cu.as_ptr(), &mut by_uuid)));
    assert_eq!(by_uuid, mig_b);
    let mut gi_id = 0;
    assert_eq!(nv!(l, nvmlDeviceGetGpuInstanceId(d, &mut gi_id)), NOT_SUPPORTED);

    // Destroying a GPU instance with compute instances is refused.
    assert_eq!(nv!(l, nvmlGpuInstanceDestroy(g3)), IN_USE);

    // A process attached by another user of the same state file shows up and blocks destroy.
    let other = SimBackend::open(Path::new(&state), None).unwrap();
    other.attach_process(0, info.id, 0, 4242, "trainer").unwrap();
    let procs = processes(d);
    assert_eq!(procs.len(), 1);
    assert_eq!((procs[0].pid, procs[0].gpuInstanceId, procs[0].computeInstanceId), (4242, info.id, 0));
    assert_eq!(processes(mig_b).len(), 1);
    let mig_a = migs[ids.iter().position(|&x| x == (info.id, 1)).unwrap()];
    assert!(processes(mig_a).is_empty(), "another MIG device's processes are not its own");
    let mut zero: c_uint = 0;
    assert_eq!(nv!(l, nvmlDeviceGetComputeRunningProcesses_v3(d, &mut zero, ptr::null_mut())), INSUFFICIENT_SIZE);
    assert_eq!(zero, 1);
    assert_eq!(nv!(l, nvmlComputeInstanceDestroy(ci_b)), IN_USE);
    other.detach_process(0, 4242).unwrap();
    assert!(processes(d).is_empty());

    // Tear down in order; destroyed handles are refused.
    for ci in [ci_a, ci_b, ci_full] {
        ok(nv!(l, nvmlComputeInstanceDestroy(ci)));
    }
    assert_eq!(nv!(l, nvmlComputeInstanceGetInfo_v2(ci_b, &mut ci_info)), INVALID_ARGUMENT);
    assert_eq!(nv!(l, nvmlDeviceIsMigDeviceHandle(mig_b, &mut is_mig)), INVALID_ARGUMENT);
    ok(nv!(l, nvmlGpuInstanceDestroy(g3)));
    ok(nv!(l, nvmlGpuInstanceDestroy(g4)));
    assert!(other.gpu_instances(0).unwrap().is_empty(), "the shared state file saw it all");
    ok(nv!(l, nvmlShutdown()));
}

#[test]
fn mig_mode_changes() {
    let dir = tempfile::tempdir().unwrap();
    let state = state_file(dir.path());
    let _g = setup(&[(ENV_SPEC, "1xH100-80GB,mig=off"), (ENV_STATE, &state)]);
    let l = lib();
    ok(nv!(l, nvmlInit_v2()));
    let d = device(0);
    let mut max = 9;
    ok(nv!(l, nvmlDeviceGetMaxMigDeviceCount(d, &mut max)));
    assert_eq!(max, 0, "MIG off");
    let mut gi = ptr::null_mut();
    assert_eq!(nv!(l, nvmlDeviceCreateGpuInstance(d, 19, &mut gi)), NOT_SUPPORTED);
    let other = SimBackend::open(Path::new(&state), None).unwrap();
    other.attach_gpu_process(0, 77, "render").unwrap();
    let mut activation = 9;
    ok(nv!(l, nvmlDeviceSetMigMode(d, NVML_DEVICE_MIG_ENABLE, &mut activation)));
    assert_eq!(activation, IN_USE, "busy GPU: the change stays pending");
    let (mut current, mut pending) = (9, 9);
    ok(nv!(l, nvmlDeviceGetMigMode(d, &mut current, &mut pending)));
    assert_eq!((current, pending), (0, 1));
    other.detach_process(0, 77).unwrap();
    ok(nv!(l, nvmlDeviceSetMigMode(d, NVML_DEVICE_MIG_ENABLE, &mut activation)));
    assert_eq!(activation, SUCCESS);
    ok(nv!(l, nvmlDeviceGetMigMode(d, &mut current, &mut pending)));
    assert_eq!((current, pending), (1, 1));
    assert_eq!(nv!(l, nvmlDeviceSetMigMode(d, 7, &mut activation)), INVALID_ARGUMENT);
    assert_eq!(nv!(l, nvmlDeviceSetMigMode(d, 1, ptr::null_mut())), INVALID_ARGUMENT);
    ok(nv!(l, nvmlShutdown()));
}

#[test]
fn fault_injection() {
    let dir = tempfile::tempdir().unwrap();
    let state = state_file(dir.path());
    let _g = setup(&[
        (ENV_SPEC, "1xH100-80GB"),
        (ENV_STATE, &state),
        (
            ENV_FAULTS,
            "nvmlDeviceCreateGpuInstanceWithPlacement:2=INSUFFICIENT_RESOURCES,nvmlGpuInstanceDestroy:2+=GPU_IS_LOST",
        ),
    ]);
    let l = lib();
    ok(nv!(l, nvmlInit_v2()));
    let d = device(0);
    let first = create_gi(d, 19, 0, 1).unwrap();
    assert_eq!(create_gi(d, 19, 1, 1), Err(INSUFFICIENT_RESOURCES), "the 2nd call fails");
    assert_eq!(gpu_instances(d, 19).len(), 1, "and has no effect");
    let third = create_gi(d, 19, 1, 1).unwrap();
    let fourth = create_gi(d, 19, 2, 1).unwrap();
    assert_eq!(gpu_instances(d, 19).len(), 3);
    ok(nv!(l, nvmlGpuInstanceDestroy(first)));
    assert_eq!(nv!(l, nvmlGpuInstanceDestroy(third)), GPU_IS_LOST);
    assert_eq!(nv!(l, nvmlGpuInstanceDestroy(fourth)), GPU_IS_LOST, "N+ fails every later call");
    assert_eq!(gpu_instances(d, 19).len(), 2);
    ok(nv!(l, nvmlShutdown()));

    // Counting starts again at a fresh init.
    ok(nv!(l, nvmlInit_v2()));
    ok(nv!(l, nvmlGpuInstanceDestroy(third)));
    ok(nv!(l, nvmlShutdown()));

    // A malformed plan makes init fail.
    // SAFETY: serialised by LOCK (see `setup`).
    unsafe { std::env::set_var(ENV_FAULTS, "nvmlDeviceCreateGpuInstance:1=NOPE") };
    assert_eq!(nv!(l, nvmlInit_v2()), UNKNOWN);
}

#[test]
fn xid_events() {
    let dir = tempfile::tempdir().unwrap();
    let xids = dir.path().join("xids");
    let xids_text = xids.to_string_lossy().into_owned();
    let _g = setup(&[(ENV_SPEC, "2xH100-80GB"), (ENV_XIDS, &xids_text)]);
    let l = lib();
    ok(nv!(l, nvmlInit_v2()));
    let (d0, d1) = (device(0), device(1));
    let mut supported = 0;
    ok(nv!(l, nvmlDeviceGetSupportedEventTypes(d0, &mut supported)));
    assert_eq!(supported, XID);
    let mut set = ptr::null_mut();
    ok(nv!(l, nvmlEventSetCreate(&mut set)));
    ok(nv!(l, nvmlDeviceRegisterEvents(d0, XID, set)));
    assert_eq!(nv!(l, nvmlDeviceRegisterEvents(d0, nvmlEventTypeSingleBitEccError as c_ulonglong, set)), NOT_SUPPORTED);
    let empty =
        nvmlEventData_t { device: ptr::null_mut(), eventType: 0, eventData: 0, gpuInstanceId: 0, computeInstanceId: 0 };
    let mut data = empty;
    assert_eq!(nv!(l, nvmlEventSetWait_v2(set, &mut data, 0)), TIMEOUT);
    assert_eq!(nv!(l, nvmlEventSetWait_v2(set, ptr::null_mut(), 0)), INVALID_ARGUMENT);

    std::fs::write(&xids, "0 79\n1 31\n0 43 3 0\n").unwrap();
    ok(nv!(l, nvmlEventSetWait_v2(set, &mut data, 1000)));
    assert_eq!((data.device, data.eventType, data.eventData), (d0, XID, 79));
    assert_eq!((data.gpuInstanceId, data.computeInstanceId), (0xFFFF_FFFF, 0xFFFF_FFFF));
    ok(nv!(l, nvmlEventSetWait_v2(set, &mut data, 1000)));
    assert_eq!((data.eventData, data.gpuInstanceId, data.computeInstanceId), (43, 3, 0));
    assert_eq!(nv!(l, nvmlEventSetWait_v2(set, &mut data, 50)), TIMEOUT, "GPU 1 is not registered; each line once");

    // A line written while the call waits is delivered.
    ok(nv!(l, nvmlDeviceRegisterEvents(d1, XID, set)));
    let writer = {
        let xids = xids.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            let mut f = std::fs::OpenOptions::new().append(true).open(xids).unwrap();
            f.write_all(b"1 94\n").unwrap();
        })
    };
    data = empty;
    ok(nv!(l, nvmlEventSetWait_v2(set, &mut data, 5000)));
    writer.join().unwrap();
    assert_eq!((data.device, data.eventData), (d1, 94));
    ok(nv!(l, nvmlEventSetFree(set)));
    assert_eq!(nv!(l, nvmlEventSetWait_v2(set, &mut data, 0)), INVALID_ARGUMENT);
    ok(nv!(l, nvmlShutdown()));
}

#[test]
fn no_mig_lost_no_permission_and_driver_version() {
    let _g = setup(&[(ENV_SPEC, "3xA100-40GB"), (ENV_NO_MIG, "1"), (ENV_LOST, "2"), (ENV_DRIVER_VERSION, "470.82.01")]);
    let l = lib();
    ok(nv!(l, nvmlInit_v2()));
    assert_eq!(device_count(), 3, "a lost GPU still counts");

    // Driver R470: no 1g.10gb (R525); 1g.5gb+me (R470) is there.
    let d0 = device(0);
    assert_eq!(profile_info_v2(d0, NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV2).map(|p| p.id), Err(NOT_SUPPORTED));
    assert_eq!(profile_info_v2(d0, NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1).map(|p| p.id), Ok(20));
    let mut gi = ptr::null_mut();
    assert_eq!(nv!(l, nvmlDeviceCreateGpuInstance(d0, 15, &mut gi)), NOT_SUPPORTED);
    let mut driver = [0 as c_char; 80];
    ok(nv!(l, nvmlSystemGetDriverVersion(driver.as_mut_ptr(), 80)));
    assert_eq!(text(&driver), "470.82.01");
    let mut cuda = 0;
    ok(nv!(l, nvmlSystemGetCudaDriverVersion_v2(&mut cuda)));
    assert_eq!(cuda, 11040);

    // GPU 1 is not MIG-capable.
    let d1 = device(1);
    let (mut current, mut pending) = (9, 9);
    assert_eq!(nv!(l, nvmlDeviceGetMigMode(d1, &mut current, &mut pending)), NOT_SUPPORTED);
    assert_eq!(profile_info_v2(d1, 0).map(|p| p.id), Err(NOT_SUPPORTED));
    assert_eq!(nv!(l, nvmlDeviceCreateGpuInstance(d1, 19, &mut gi)), NOT_SUPPORTED);
    let mut max = 9;
    ok(nv!(l, nvmlDeviceGetMaxMigDeviceCount(d1, &mut max)));
    assert_eq!(max, 0);
    assert_eq!(name(d1), "NVIDIA A100-SXM4-40GB");

    // GPU 2 is lost.
    let mut d = ptr::null_mut();
    assert_eq!(nv!(l, nvmlDeviceGetHandleByIndex_v2(2, &mut d)), GPU_IS_LOST);
    ok(nv!(l, nvmlShutdown()));

    // No permission: every change is refused, reads work.
    // SAFETY: serialised by LOCK (see `setup`).
    unsafe { std::env::set_var(ENV_NO_PERMISSION, "1") };
    ok(nv!(l, nvmlInit_v2()));
    let d0 = device(0);
    let mut activation = 0;
    assert_eq!(nv!(l, nvmlDeviceSetMigMode(d0, 0, &mut activation)), NO_PERMISSION);
    assert_eq!(nv!(l, nvmlDeviceCreateGpuInstance(d0, 19, &mut gi)), NO_PERMISSION);
    assert_eq!(create_gi(d0, 19, 0, 1), Err(NO_PERMISSION));
    ok(nv!(l, nvmlDeviceGetMigMode(d0, &mut current, &mut pending)));
    ok(nv!(l, nvmlShutdown()));
}

/// One `nvmlDeviceGetFieldValues` call for `fields`: the call's code and each value.
fn field_values(d: nvmlDevice_t, fields: &[u32]) -> (nvmlReturn_t, Vec<nvmlFieldValue_t>) {
    let mut values: Vec<nvmlFieldValue_t> = fields
        .iter()
        .map(|&field| nvmlFieldValue_t {
            fieldId: field,
            scopeId: 0,
            timestamp: 0,
            latencyUsec: 0,
            valueType: 99,
            nvmlReturn: UNKNOWN,
            value: nvmlValue_t { ullVal: u64::MAX },
        })
        .collect();
    let r = nv!(lib(), nvmlDeviceGetFieldValues(d, values.len() as c_int, values.as_mut_ptr()));
    (r, values)
}

/// The driver's recovery action (`NVML_FI_DEV_GET_GPU_RECOVERY_ACTION`) of GPU `d`.
fn recovery_action(d: nvmlDevice_t) -> Result<u32, nvmlReturn_t> {
    let (r, v) = field_values(d, &[field_id::NVML_FI_DEV_GET_GPU_RECOVERY_ACTION]);
    if r != SUCCESS {
        return Err(r);
    }
    if v[0].nvmlReturn != SUCCESS {
        return Err(v[0].nvmlReturn);
    }
    assert_eq!(v[0].valueType, nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_INT);
    // SAFETY: the stand-in wrote `uiVal`, as `valueType` says.
    Ok(unsafe { v[0].value.uiVal })
}

#[test]
fn recovery_action_and_a_gpu_off_the_bus() {
    let dir = tempfile::tempdir().unwrap();
    let state = state_file(dir.path());
    let xids = dir.path().join("xids");
    let xids_text = xids.to_string_lossy().into_owned();
    let _g = setup(&[(ENV_SPEC, "2xH100-80GB"), (ENV_STATE, &state), (ENV_XIDS, &xids_text)]);
    let l = lib();
    ok(nv!(l, nvmlInit_v2()));
    let (d0, d1) = (device(0), device(1));
    assert_eq!(recovery_action(d0), Ok(NVML_GPU_RECOVERY_ACTION_NONE_VALUE));
    // Other fields are not supported, each in its own return code; the call succeeds.
    let (r, v) = field_values(d0, &[field_id::NVML_FI_DEV_ECC_CURRENT, field_id::NVML_FI_DEV_GET_GPU_RECOVERY_ACTION]);
    ok(r);
    assert_eq!((v[0].nvmlReturn, v[1].nvmlReturn), (NOT_SUPPORTED, SUCCESS));
    assert_eq!(v[1].fieldId, field_id::NVML_FI_DEV_GET_GPU_RECOVERY_ACTION, "the field id is kept");
    assert_eq!(nv!(l, nvmlDeviceGetFieldValues(d0, 0, ptr::null_mut())), INVALID_ARGUMENT);
    assert_eq!(nv!(l, nvmlDeviceGetFieldValues(d0, 1, ptr::null_mut())), INVALID_ARGUMENT);
    assert_eq!(nv!(l, nvmlDeviceGetFieldValues(d0, -1, ptr::null_mut())), INVALID_ARGUMENT);

    // Xid 48 asks for a GPU reset; Xid 79 takes GPU 1 off the bus.
    let mut set = ptr::null_mut();
    ok(nv!(l, nvmlEventSetCreate(&mut set)));
    ok(nv!(l, nvmlDeviceRegisterEvents(d0, XID, set)));
    ok(nv!(l, nvmlDeviceRegisterEvents(d1, XID, set)));
    std::fs::write(&xids, "0 48\n1 79\n").unwrap();
    let mut data =
        nvmlEventData_t { device: ptr::null_mut(), eventType: 0, eventData: 0, gpuInstanceId: 0, computeInstanceId: 0 };
    ok(nv!(l, nvmlEventSetWait_v2(set, &mut data, 1000)));
    assert_eq!((data.device, data.eventData), (d0, 48));
    ok(nv!(l, nvmlEventSetWait_v2(set, &mut data, 1000)));
    assert_eq!((data.device, data.eventData), (d1, 79), "the event of a GPU that fell off the bus is delivered");
    assert_eq!(recovery_action(d0), Ok(nvmlDeviceGpuRecoveryAction_s_NVML_GPU_RECOVERY_ACTION_GPU_RESET));
    assert_eq!(recovery_action(d1), Err(GPU_IS_LOST));
    let mut d = ptr::null_mut();
    assert_eq!(nv!(l, nvmlDeviceGetHandleByIndex_v2(1, &mut d)), GPU_IS_LOST);
    assert_eq!(device_count(), 2, "a lost GPU still counts");

    // The simulated node's reset and reboot, seen through the library.
    let sim = SimBackend::open(Path::new(&state), None).unwrap();
    sim.reset_gpu(0).unwrap();
    assert_eq!(recovery_action(d0), Ok(NVML_GPU_RECOVERY_ACTION_NONE_VALUE));
    assert!(sim.reset_gpu(1).is_err(), "a GPU off the bus cannot be reset");
    sim.reboot().unwrap();
    assert_eq!(device(1), d1);
    assert_eq!(recovery_action(d1), Ok(NVML_GPU_RECOVERY_ACTION_NONE_VALUE));
    assert!(sim.observe(1).is_ok());
    ok(nv!(l, nvmlEventSetFree(set)));
    ok(nv!(l, nvmlShutdown()));
}

const NVML_GPU_RECOVERY_ACTION_NONE_VALUE: u32 = nvmlDeviceGpuRecoveryAction_s_NVML_GPU_RECOVERY_ACTION_NONE;
