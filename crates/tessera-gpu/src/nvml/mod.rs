//! The NVML backend: [`NvmlBackend`], a [`MigBackend`] over NVIDIA's `libnvidia-ml.so.1`.
//!
//! The library is loaded at run time through `nvml-wrapper` (Tessera builds and runs without a
//! GPU); [`NvmlBackend::open`] fails with [`BackendError::LibraryNotFound`] when it is absent,
//! which is the CLI's cue to fall back to the simulated node. Safe `nvml-wrapper` methods are
//! used where they exist and call the function we want (device handles, UUID, name, PCI info,
//! minor number, affinity, MIG mode, processes); every other call is a raw one in `ffi.rs`, which
//! checks each symbol first, so a driver without a function gives
//! [`BackendError::NotSupported`] naming the function, never a panic.
//!
//! What the driver says wins over the catalog: profiles are read from the driver
//! (`NVML_GPU_INSTANCE_PROFILE_*` indices `0..=0x11`, unsupported ones skipped, the v2 call for
//! the name where the library has it), placements from
//! `nvmlDeviceGetGpuInstancePossiblePlacements_v2`. [`NvmlBackend::catalog_drift`] lists where
//! the two disagree. The catalog only words errors: a profile the driver lacks but the catalog
//! lists with a `min_driver` newer than the running driver is reported as "driver too old".
//!
//! Host facts NVML may not give come from sysfs (`numa_node`, `local_cpulist`) and procfs
//! (`/proc/driver/nvidia-caps/mig-minors`, `/proc/<pid>/comm`); all three roots are
//! configurable ([`NvmlBackend::with_sysfs_root`], [`NvmlBackend::with_mig_minors_path`],
//! [`NvmlBackend::with_proc_root`]).
//!
//! **Blocking.** Every method is a synchronous NVML call; creating a GPU instance can take a
//! second on real GPUs and [`MigBackend::wait_xid_events`] waits by design. Async callers (the
//! daemon) must run them under `tokio::task::spawn_blocking`. `NvmlBackend` is `Send + Sync`
//! (NVML is thread-safe; the Xid event set sits behind a `Mutex`).
//!
//! **GPM.** [`MigBackend::gpm_sample`] keeps, per GPU and GPU instance, the last sample buffer
//! (`nvmlGpmSampleAlloc`) and a spare, so each call is one `nvmlGpmSampleGet` /
//! `nvmlGpmMigSampleGet` and one `nvmlGpmMetricsGet` against the previous sample; the buffers are
//! freed before NVML shuts down, like the event set.

mod ffi;
mod host;
mod reset;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Instant;

use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, Nvml};
use nvml_wrapper_sys::bindings::{NVML_AFFINITY_SCOPE_NODE, NVML_DEVICE_MIG_ENABLE, nvmlReturn_t};
use serde::Serialize;
use tessera_mig::{GpuModel, catalog};

use self::ffi::Fail;
use self::host::MigMinors;
use crate::backend::{
    BackendError, BackendKind, ComputeInstanceInfo, DeviceInfo, FailedGpu, GpmMetric, GpmMetrics, GpuInstanceInfo,
    GpuInstanceProfileInfo, GpuObservation, GpuRef, MigBackend, MigMode, PlacementRange, ProcessInfo, RecoveryAction,
};
use crate::drift::{self, bare_profile_name, driver_older_than};
use crate::health::XidEvent;

pub use self::reset::ENV_NVIDIA_SMI;

/// NVML return codes under names usable in patterns.
mod rc {
    use nvml_wrapper_sys::bindings::{self, nvmlReturn_t};

    pub const ALREADY_INITIALIZED: nvmlReturn_t = bindings::nvmlReturn_enum_NVML_ERROR_ALREADY_INITIALIZED;
    pub const ARGUMENT_VERSION_MISMATCH: nvmlReturn_t = bindings::nvmlReturn_enum_NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    pub const CORRUPTED_INFOROM: nvmlReturn_t = bindings::nvmlReturn_enum_NVML_ERROR_CORRUPTED_INFOROM;
    pub const DEPRECATED: nvmlReturn_t = bindings::nvmlReturn_enum_NVML_ERROR_DEPRECATED;
    pub const DRIVER_NOT_LOADED: nvmlReturn_t = bindings::nvmlReturn_enum_NVML_ERROR_DRIVER_NOT_LOADED;
    pub const FREQ_NOT_SUPPORTED: nvmlReturn_t = bindings::nvmlReturn_enum_NVML_ERROR_FREQ_NOT_SUPPORTED;
    pub const FUNCTION_NOT_FOUND: nvmlReturn_t = bindings::nvmlReturn_enum_NVML_ERROR_FUNCTION_NOT_FOUND;
    pub const GPU_IS_LOST: nvmlReturn_t = bindings::nvmlReturn_enum_NVML_ERROR_GPU_IS_LOST;
    pub const GPU_NOT_FOUND: nvmlReturn_t = bindings::nvmlReturn_enum_NVML_ERROR_GPU_NOT_FOUND;
    pub const INSUFFICIENT_POWER: nvmlReturn_t = bindings::nvmlReturn_enum_NVML_ERROR_INSUFFICIENT_POWER;
    pub const INSUFFICIENT_RESOURCES: nvmlReturn_t = bindings::nvmlReturn_enum_NVML_ERROR_INSUFFICIENT_RESOURCES;
    pub const INSUFFICIENT_SIZE: nvmlReturn_t = bindings::nvmlReturn_enum_NVML_ERROR_INSUFFICIENT_SIZE;
    pub const INVALID_ARGUMENT: nvmlReturn_t = bindings::nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT;
    pub const INVALID_STATE: nvmlReturn_t = bindings::nvmlReturn_enum_NVML_ERROR_INVALID_STATE;
    pub const IN_USE: nvmlReturn_t = bindings::nvmlReturn_enum_NVML_ERROR_IN_USE;
    pub const IRQ_ISSUE: nvmlReturn_t = bindings::nvmlReturn_enum_NVML_ERROR_IRQ_ISSUE;
    pub const LIBRARY_NOT_FOUND: nvmlReturn_t = bindings::nvmlReturn_enum_NVML_ERROR_LIBRARY_NOT_FOUND;
    pub const LIB_RM_VERSION_MISMATCH: nvmlReturn_t = bindings::nvmlReturn_enum_NVML_ERROR_LIB_RM_VERSION_MISMATCH;
    pub const MEMORY: nvmlReturn_t = bindings::nvmlReturn_enum_NVML_ERROR_MEMORY;
    pub const NOT_FOUND: nvmlReturn_t = bindings::nvmlReturn_enum_NVML_ERROR_NOT_FOUND;
    pub const NOT_READY: nvmlReturn_t = bindings::nvmlReturn_enum_NVML_ERROR_NOT_READY;
    pub const NOT_SUPPORTED: nvmlReturn_t = bindings::nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED;
    pub const NO_DATA: nvmlReturn_t = bindings::nvmlReturn_enum_NVML_ERROR_NO_DATA;
    pub const NO_PERMISSION: nvmlReturn_t = bindings::nvmlReturn_enum_NVML_ERROR_NO_PERMISSION;
    pub const OPERATING_SYSTEM: nvmlReturn_t = bindings::nvmlReturn_enum_NVML_ERROR_OPERATING_SYSTEM;
    pub const RESET_REQUIRED: nvmlReturn_t = bindings::nvmlReturn_enum_NVML_ERROR_RESET_REQUIRED;
    pub const RESET_TYPE_NOT_SUPPORTED: nvmlReturn_t = bindings::nvmlReturn_enum_NVML_ERROR_RESET_TYPE_NOT_SUPPORTED;
    pub const SUCCESS: nvmlReturn_t = bindings::nvmlReturn_enum_NVML_SUCCESS;
    pub const TIMEOUT: nvmlReturn_t = bindings::nvmlReturn_enum_NVML_ERROR_TIMEOUT;
    pub const UNINITIALIZED: nvmlReturn_t = bindings::nvmlReturn_enum_NVML_ERROR_UNINITIALIZED;
    pub const UNKNOWN: nvmlReturn_t = bindings::nvmlReturn_enum_NVML_ERROR_UNKNOWN;
    pub const VGPU_ECC_NOT_SUPPORTED: nvmlReturn_t = bindings::nvmlReturn_enum_NVML_ERROR_VGPU_ECC_NOT_SUPPORTED;
}

/// The library loaded when none is given.
pub const DEFAULT_LIBRARY: &str = "libnvidia-ml.so.1";
/// Where sysfs is mounted.
pub const DEFAULT_SYSFS_ROOT: &str = "/sys";
/// Where procfs is mounted.
pub const DEFAULT_PROC_ROOT: &str = "/proc";
/// The process name of a CUDA MPS server (`/proc/<pid>/comm`).
pub const MPS_SERVER: &str = "nvidia-cuda-mps-server";

/// The first driver branch whose MIG devices have `MIG-<uuid>` names; older ones name them
/// `MIG-GPU-<GPU uuid>/<GI>/<CI>` (MIG user guide, "MIG Device Names").
const MIG_UUID_DRIVER: &str = "470";

/// Names another file than [`DEFAULT_MIG_MINORS`] for the caps minors (the daemon's tests over
/// the stand-in library, on machines without the NVIDIA driver, point it at a generated table).
pub const ENV_MIG_MINORS: &str = "TESSERA_MIG_MINORS";

/// The driver's table of `/dev/nvidia-caps` minors.
pub const DEFAULT_MIG_MINORS: &str = "/proc/driver/nvidia-caps/mig-minors";
/// The kernel's id of the current boot (it changes at every reboot).
pub const DEFAULT_BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// `NVML_GPU_INSTANCE_PROFILE_*` indices: `0` (1 slice) to `0x11` (3 slices, graphics).
const GI_PROFILE_INDICES: u32 = 0x12;
/// `NVML_COMPUTE_INSTANCE_PROFILE_*` indices: `0` (1 slice) to `8` (7 slices, NVL).
const CI_PROFILE_INDICES: u32 = 0x9;
/// NVML's "no instance" in event data and process info.
const NO_ID: u32 = u32::MAX;
/// Words of the CPU affinity mask asked for (8192 CPUs).
const CPU_MASK_WORDS: usize = 8192 / std::ffi::c_ulong::BITS as usize;
/// Words of the NUMA-node mask asked for (1024 nodes).
const NODE_MASK_WORDS: usize = 1024 / std::ffi::c_ulong::BITS as usize;
/// Most events taken out of the set in one call.
const MAX_EVENTS_PER_WAIT: usize = 4096;

/// A compute-instance profile as the driver reports it for one GPU instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComputeInstanceProfileInfo {
    /// Compute-instance profile id (what `create_compute_instance` takes).
    pub id: u32,
    /// `1c.3g.20gb`, …
    pub name: String,
    pub compute_slices: u8,
    /// Most instances of it in the GPU instance.
    pub max_count: u8,
    pub sm_count: u32,
}

/// The compute-instance profiles of one GPU-instance profile, shared from the cache.
type CiProfiles = Arc<Vec<ComputeInstanceProfileInfo>>;

/// A GPU-instance profile as the driver reported it.
#[derive(Debug, Clone)]
struct DriverProfile {
    info: GpuInstanceProfileInfo,
}

/// The event set Xid events arrive in, and the GPUs registered in it.
#[derive(Debug)]
struct XidListener {
    set: ffi::EventSet,
    /// (handle key, NVML index) of each registered GPU.
    registered: Vec<(usize, u32)>,
}

/// The GPM sample buffers of one GPU or GPU instance: the last sample taken (and when), and a
/// spare buffer for the next.
#[derive(Debug, Default)]
struct GpmSlot {
    last: Option<(ffi::GpmSample, Instant)>,
    spare: Option<ffi::GpmSample>,
}

impl GpmSlot {
    fn buffers(self) -> impl Iterator<Item = ffi::GpmSample> {
        self.last.map(|(s, _)| s).into_iter().chain(self.spare)
    }
}

/// NVIDIA's NVML, as a [`MigBackend`]. See the module header.
pub struct NvmlBackend {
    nvml: Nvml,
    library: String,
    driver_version: String,
    sysfs_root: PathBuf,
    proc_root: PathBuf,
    mig_minors_path: PathBuf,
    mig_minors: OnceLock<Option<MigMinors>>,
    boot_id_path: PathBuf,
    /// The `nvidia-smi` that resets GPUs ([`ENV_NVIDIA_SMI`], else `nvidia-smi`).
    nvidia_smi: std::ffi::OsString,
    /// How many GPUs NVML sees (fixed from `nvmlInit` to `nvmlShutdown`).
    device_count: OnceLock<u32>,
    /// UUID and minor number by GPU index, read once.
    statics: Mutex<BTreeMap<u32, GpuStatics>>,
    /// Driver profiles by GPU index (they do not change while the driver is loaded).
    profiles: Mutex<BTreeMap<u32, Arc<Vec<DriverProfile>>>>,
    /// Compute-instance profiles by (GPU index, GPU-instance profile id).
    ci_profiles: Mutex<BTreeMap<(u32, u32), CiProfiles>>,
    events: Mutex<Option<XidListener>>,
    /// GPM sample buffers by (GPU index, GPU instance id; `None`: the whole GPU).
    gpm: Mutex<BTreeMap<(u32, Option<u32>), GpmSlot>>,
}

impl fmt::Debug for NvmlBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NvmlBackend")
            .field("library", &self.library)
            .field("driver_version", &self.driver_version)
            .field("sysfs_root", &self.sysfs_root)
            .field("mig_minors_path", &self.mig_minors_path)
            .field("boot_id_path", &self.boot_id_path)
            .field("nvidia_smi", &self.nvidia_smi)
            .finish_non_exhaustive()
    }
}

impl Drop for NvmlBackend {
    fn drop(&mut self) {
        // The event set must go before `Nvml`'s own drop shuts NVML down.
        let listener = self.events.get_mut().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(l) = listener {
            // Nothing to do about a failure while dropping; NVML frees it at shutdown anyway.
            let _ = ffi::event_set_free(self.nvml.lib(), l.set);
        }
        // So must the GPM sample buffers.
        let slots = std::mem::take(self.gpm.get_mut().unwrap_or_else(PoisonError::into_inner));
        for buffer in slots.into_values().flat_map(GpmSlot::buffers) {
            let _ = ffi::gpm_sample_free(self.nvml.lib(), buffer);
        }
    }
}

/// The MIG device UUIDs found for compute instances, by compute instance id, and the first
/// failure met looking for them.
#[derive(Default)]
struct MigUuids {
    found: BTreeMap<u32, String>,
    failure: Option<Fail>,
}

/// What does not change about a GPU while NVML is initialised, nor across a MIG mode change
/// (which may rebind the GPU and move its minor number: [`NvmlBackend::forget_gpu`]).
#[derive(Debug, Clone)]
struct GpuStatics {
    uuid: String,
    minor: Option<u32>,
}

/// One GPU, opened for one operation.
struct Gpu<'n> {
    index: u32,
    dev: Device<'n>,
    raw: ffi::DeviceHandle<'n>,
    gref: GpuRef,
    minor: Option<u32>,
}

/// A failure of a safe `nvml-wrapper` call, in the raw calls' terms.
fn safe_fail(e: NvmlError, function: &'static str) -> Fail {
    match e {
        NvmlError::FailedToLoadSymbol(_) => Fail::Missing(function),
        other => Fail::Code(function, nvmlReturn_t::from(other)),
    }
}

/// Whether a call failed because the driver refused the profile id it was given.
fn refused_profile(f: Fail) -> bool {
    matches!(f.code(), Some(rc::INVALID_ARGUMENT | rc::NOT_SUPPORTED | rc::NOT_FOUND))
}

/// NVML's name of a return code.
pub fn return_code_name(code: u32) -> &'static str {
    match code {
        rc::SUCCESS => "NVML_SUCCESS",
        rc::UNINITIALIZED => "NVML_ERROR_UNINITIALIZED",
        rc::INVALID_ARGUMENT => "NVML_ERROR_INVALID_ARGUMENT",
        rc::NOT_SUPPORTED => "NVML_ERROR_NOT_SUPPORTED",
        rc::NO_PERMISSION => "NVML_ERROR_NO_PERMISSION",
        rc::ALREADY_INITIALIZED => "NVML_ERROR_ALREADY_INITIALIZED",
        rc::NOT_FOUND => "NVML_ERROR_NOT_FOUND",
        rc::INSUFFICIENT_SIZE => "NVML_ERROR_INSUFFICIENT_SIZE",
        rc::INSUFFICIENT_POWER => "NVML_ERROR_INSUFFICIENT_POWER",
        rc::DRIVER_NOT_LOADED => "NVML_ERROR_DRIVER_NOT_LOADED",
        rc::TIMEOUT => "NVML_ERROR_TIMEOUT",
        rc::IRQ_ISSUE => "NVML_ERROR_IRQ_ISSUE",
        rc::LIBRARY_NOT_FOUND => "NVML_ERROR_LIBRARY_NOT_FOUND",
        rc::FUNCTION_NOT_FOUND => "NVML_ERROR_FUNCTION_NOT_FOUND",
        rc::CORRUPTED_INFOROM => "NVML_ERROR_CORRUPTED_INFOROM",
        rc::GPU_IS_LOST => "NVML_ERROR_GPU_IS_LOST",
        rc::RESET_REQUIRED => "NVML_ERROR_RESET_REQUIRED",
        rc::OPERATING_SYSTEM => "NVML_ERROR_OPERATING_SYSTEM",
        rc::LIB_RM_VERSION_MISMATCH => "NVML_ERROR_LIB_RM_VERSION_MISMATCH",
        rc::IN_USE => "NVML_ERROR_IN_USE",
        rc::MEMORY => "NVML_ERROR_MEMORY",
        rc::NO_DATA => "NVML_ERROR_NO_DATA",
        rc::VGPU_ECC_NOT_SUPPORTED => "NVML_ERROR_VGPU_ECC_NOT_SUPPORTED",
        rc::INSUFFICIENT_RESOURCES => "NVML_ERROR_INSUFFICIENT_RESOURCES",
        rc::FREQ_NOT_SUPPORTED => "NVML_ERROR_FREQ_NOT_SUPPORTED",
        rc::ARGUMENT_VERSION_MISMATCH => "NVML_ERROR_ARGUMENT_VERSION_MISMATCH",
        rc::DEPRECATED => "NVML_ERROR_DEPRECATED",
        rc::NOT_READY => "NVML_ERROR_NOT_READY",
        rc::GPU_NOT_FOUND => "NVML_ERROR_GPU_NOT_FOUND",
        rc::INVALID_STATE => "NVML_ERROR_INVALID_STATE",
        rc::RESET_TYPE_NOT_SUPPORTED => "NVML_ERROR_RESET_TYPE_NOT_SUPPORTED",
        rc::UNKNOWN => "NVML_ERROR_UNKNOWN",
        _ => "an unknown NVML return code",
    }
}

/// A driver-reported count or position as the `u8` the trait uses (saturating: no MIG
/// quantity comes near 255).
fn small(v: u32) -> u8 {
    u8::try_from(v).unwrap_or(u8::MAX)
}

/// go-nvlib's name for a profile the driver gives no name for (`nvmlDeviceGetGpuInstanceProfileInfo`
/// v1): `<slices>g.<GB>gb` plus the suffix of its NVML profile index.
fn nvlib_profile_name(index: u32, slices: u32, memory_mib: u64, total_bytes: u64) -> String {
    let gb = if total_bytes == 0 {
        memory_mib.div_ceil(1024)
    } else {
        let total = total_bytes as f64;
        let fraction = (memory_mib as f64 * 1_048_576.0 / total * 8.0).ceil() / 8.0;
        (fraction * (total / 1_073_741_824.0).ceil()).round() as u64
    };
    let suffix = match index {
        0x7 | 0x8 => "+me",
        0xf | 0x10 => "+me.all",
        0xa..=0xc | 0x11 => "+gfx",
        0xd | 0xe => "-me",
        _ => "",
    };
    format!("{slices}g.{gb}gb{suffix}")
}

impl NvmlBackend {
    /// Load NVML from `library` (default [`DEFAULT_LIBRARY`], found by the dynamic loader) and
    /// initialise it.
    ///
    /// Errors: [`BackendError::LibraryNotFound`] when the library cannot be loaded (no driver:
    /// fall back to the simulated node), [`BackendError::NoPermission`] when NVML may not talk
    /// to the driver, [`BackendError::Driver`] for anything else (e.g. the kernel module is not
    /// loaded).
    pub fn open(library: Option<&Path>) -> Result<NvmlBackend, BackendError> {
        let path: &OsStr = library.map_or(OsStr::new(DEFAULT_LIBRARY), Path::as_os_str);
        let shown = path.to_string_lossy().into_owned();
        let nvml = Nvml::builder().lib_path(path).init().map_err(|e| open_error(e, &shown))?;
        if nvml.lib().nvmlShutdown.is_err() {
            // `Nvml`'s drop would call the missing nvmlShutdown and panic: leak it instead.
            std::mem::forget(nvml);
            return Err(BackendError::LibraryNotFound {
                library: shown,
                detail: "it has no nvmlShutdown, so it is not a usable NVML library".into(),
            });
        }
        let driver_version = nvml.sys_driver_version().unwrap_or_else(|_| "unknown".to_string());
        Ok(NvmlBackend {
            nvml,
            library: shown,
            driver_version,
            sysfs_root: PathBuf::from(DEFAULT_SYSFS_ROOT),
            proc_root: PathBuf::from(DEFAULT_PROC_ROOT),
            mig_minors_path: std::env::var_os(ENV_MIG_MINORS)
                .filter(|p| !p.is_empty())
                .map_or_else(|| PathBuf::from(DEFAULT_MIG_MINORS), PathBuf::from),
            mig_minors: OnceLock::new(),
            boot_id_path: PathBuf::from(DEFAULT_BOOT_ID),
            nvidia_smi: reset::nvidia_smi_program(),
            device_count: OnceLock::new(),
            statics: Mutex::new(BTreeMap::new()),
            profiles: Mutex::new(BTreeMap::new()),
            ci_profiles: Mutex::new(BTreeMap::new()),
            events: Mutex::new(None),
            gpm: Mutex::new(BTreeMap::new()),
        })
    }

    /// Read NUMA nodes and local CPUs under `root` instead of `/sys` (for tests).
    pub fn with_sysfs_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.sysfs_root = root.into();
        self
    }

    /// Read process names under `root` instead of `/proc` (for tests).
    pub fn with_proc_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.proc_root = root.into();
        self
    }

    /// Read the caps minors from `path` instead of [`DEFAULT_MIG_MINORS`]. Without the file,
    /// `caps_minor` is `None`.
    pub fn with_mig_minors_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.mig_minors_path = path.into();
        self.mig_minors = OnceLock::new();
        self
    }

    /// Read the boot id from `path` instead of [`DEFAULT_BOOT_ID`] (for tests).
    pub fn with_boot_id_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.boot_id_path = path.into();
        self
    }

    /// The driver version (`nvmlSystemGetDriverVersion`), e.g. `550.90.07`.
    pub fn driver_version(&self) -> &str {
        &self.driver_version
    }

    /// The library as it was asked for.
    pub fn library(&self) -> &str {
        &self.library
    }

    /// Where the driver's profiles and placements differ from the catalog, one line each (see
    /// [`crate::drift`]). Empty when they agree.
    pub fn catalog_drift(&self, gpu: u32) -> Result<Vec<String>, BackendError> {
        drift::catalog_drift(self, gpu, Some(&self.driver_version))
    }

    /// How many more GPU instances of a profile fit now
    /// (`nvmlDeviceGetGpuInstanceRemainingCapacity`).
    pub fn gpu_instance_remaining_capacity(&self, gpu: u32, profile_id: u32) -> Result<u32, BackendError> {
        let g = self.gpu(gpu)?;
        let doing = format!("read the remaining capacity for {}", self.profile_label(&g, profile_id));
        ffi::gi_remaining_capacity(self.lib(), g.raw, profile_id).map_err(|f| {
            if refused_profile(f) {
                self.profile_refused(&g, profile_id, f, &doing)
            } else {
                self.mig_error(&g, f, &doing)
            }
        })
    }

    /// The compute-instance profiles a GPU instance offers, as the driver reports them.
    pub fn compute_instance_profiles(
        &self,
        gpu: u32,
        gpu_instance_id: u32,
    ) -> Result<Vec<ComputeInstanceProfileInfo>, BackendError> {
        let g = self.gpu(gpu)?;
        let gi = self.gi_by_id(&g, gpu_instance_id, "list compute instance profiles")?;
        let info = self.gi_info(&g, gi)?;
        Ok(self.ci_profiles(&g, gi, &info)?.to_vec())
    }

    /// The compute-instance profile `nvidia-smi mig -cgi … -C` would create: the one spanning
    /// the whole GPU instance (its slice count equals the GPU instance's).
    pub fn default_compute_instance_profile(
        &self,
        gpu: u32,
        gpu_instance_id: u32,
    ) -> Result<ComputeInstanceProfileInfo, BackendError> {
        let g = self.gpu(gpu)?;
        let gi = self.gi_by_id(&g, gpu_instance_id, "find the default compute instance profile")?;
        let info = self.gi_info(&g, gi)?;
        let label = self.gi_label(&g, &info);
        let slices = self.gi_compute_slices(&g, info.profile_id);
        let offered = self.ci_profiles(&g, gi, &info)?;
        let full = offered.iter().filter(|c| Some(c.compute_slices) == slices).min_by_key(|c| c.id);
        full.cloned().ok_or_else(|| BackendError::NotFound {
            gpu: g.gref.clone(),
            what: format!("{label} offers no compute instance profile spanning it; it offers {}", ci_list(&offered)),
        })
    }

    /// Processes in one GPU instance, or in one compute instance of it.
    pub fn instance_processes(
        &self,
        gpu: u32,
        gpu_instance_id: u32,
        compute_instance_id: Option<u32>,
    ) -> Result<Vec<ProcessInfo>, BackendError> {
        let g = self.gpu(gpu)?;
        Ok(self
            .processes_of(&g)?
            .into_iter()
            .filter(|p| {
                p.gpu_instance_id == Some(gpu_instance_id)
                    && compute_instance_id.is_none_or(|ci| p.compute_instance_id == Some(ci))
            })
            .collect())
    }

    fn lib(&self) -> &nvml_wrapper_sys::bindings::NvmlLib {
        self.nvml.lib()
    }

    /// The error of a create whose instance was made but could not be read back, after `undo`
    /// (its destroy): the read's error when the undo worked (nothing changed), else an error that
    /// says the instance may remain.
    fn undo_create(&self, g: &Gpu<'_>, doing: &str, read: BackendError, undo: Result<(), Fail>) -> BackendError {
        match undo {
            Ok(()) => read,
            Err(f) => BackendError::Driver {
                context: format!(
                    "{}: {doing}: it was made but cannot be read back ({read}), and destroying it again failed too, so \
                     it may remain: list the GPU's instances",
                    g.gref
                ),
                function: f.function().to_string(),
                code: f.code().map_or("missing", return_code_name).to_string(),
                message: f.code().map_or_else(|| "the library lacks it".to_string(), |c| self.error_text(c)),
            },
        }
    }

    /// Drop everything read once about GPU `gpu` (UUID, minor number, profiles), after a MIG
    /// mode change or a reset may have rebound it.
    fn forget_gpu(&self, gpu: u32) {
        self.statics.lock().unwrap_or_else(PoisonError::into_inner).remove(&gpu);
        self.profiles.lock().unwrap_or_else(PoisonError::into_inner).remove(&gpu);
        self.ci_profiles.lock().unwrap_or_else(PoisonError::into_inner).retain(|(g, _), _| *g != gpu);
    }

    fn mig_minors(&self) -> Option<&MigMinors> {
        self.mig_minors.get_or_init(|| MigMinors::read(&self.mig_minors_path)).as_ref()
    }

    /// `nvmlErrorString`, else the code's name.
    fn error_text(&self, code: nvmlReturn_t) -> String {
        ffi::error_string(self.lib(), code).unwrap_or_else(|| return_code_name(code).to_string())
    }

    /// A failed call while `doing` something to GPU `gpu`, as a [`BackendError`].
    fn error(&self, fail: Fail, gpu: &GpuRef, doing: &str) -> BackendError {
        let gpu = gpu.clone();
        let code = match fail {
            Fail::Missing(function) => {
                return BackendError::NotSupported {
                    gpu,
                    what: format!(
                        "cannot {doing}: the NVML library has no {function}, so the NVIDIA driver ({}) is too old for \
                         it; upgrade the driver",
                        self.driver_version
                    ),
                };
            }
            Fail::Code(_, code) => code,
        };
        match code {
            rc::NO_PERMISSION => BackendError::NoPermission { op: format!("{doing} on {gpu}") },
            rc::NOT_SUPPORTED => BackendError::NotSupported {
                gpu,
                what: format!("the driver does not support this on it: cannot {doing}"),
            },
            rc::GPU_IS_LOST => BackendError::GpuLost { gpu },
            rc::IN_USE => BackendError::InUse { gpu, what: format!("cannot {doing}: in use by another client") },
            rc::NOT_FOUND => BackendError::NotFound { gpu, what: format!("cannot {doing}") },
            rc::INVALID_ARGUMENT => {
                BackendError::InvalidArgument { what: format!("{gpu}: cannot {doing}: the driver rejects an argument") }
            }
            rc::INSUFFICIENT_RESOURCES => BackendError::InsufficientResources {
                gpu,
                profile: doing.to_string(),
                placement: None,
                detail: "the driver has no room for it".into(),
            },
            _ => BackendError::Driver {
                context: format!("{gpu}: cannot {doing}"),
                function: fail.function().to_string(),
                code: return_code_name(code).to_string(),
                message: self.error_text(code),
            },
        }
    }

    /// Like [`Self::error`] for a MIG call: `NOT_SUPPORTED` says whether the GPU lacks MIG or
    /// has it disabled.
    fn mig_error(&self, g: &Gpu<'_>, fail: Fail, doing: &str) -> BackendError {
        if fail.code() == Some(rc::NOT_SUPPORTED) {
            return self.mig_not_supported(g, doing);
        }
        self.error(fail, &g.gref, doing)
    }

    fn mig_not_supported(&self, g: &Gpu<'_>, doing: &str) -> BackendError {
        let what = match g.dev.mig_mode() {
            Err(NvmlError::NotSupported) => self.no_mig_text(g),
            Err(NvmlError::GpuLost) => return BackendError::GpuLost { gpu: g.gref.clone() },
            Ok(m) if m.current != NVML_DEVICE_MIG_ENABLE => {
                format!("MIG mode is disabled, so it cannot {doing}; enable MIG first")
            }
            _ => format!("the driver does not support this on it: cannot {doing}"),
        };
        BackendError::NotSupported { gpu: g.gref.clone(), what }
    }

    fn no_mig_text(&self, g: &Gpu<'_>) -> String {
        match g.dev.name() {
            Ok(name) => format!("this GPU ({name}) does not support MIG"),
            Err(_) => "this GPU does not support MIG".to_string(),
        }
    }

    /// MIG must be on for `doing`.
    fn require_mig(&self, g: &Gpu<'_>, doing: &str) -> Result<(), BackendError> {
        match g.dev.mig_mode() {
            Ok(m) if m.current == NVML_DEVICE_MIG_ENABLE => Ok(()),
            Ok(_) => Err(BackendError::NotSupported {
                gpu: g.gref.clone(),
                what: format!("MIG mode is disabled, so it cannot {doing}; enable MIG first"),
            }),
            Err(e) => Err(self.mig_error(g, safe_fail(e, "nvmlDeviceGetMigMode"), doing)),
        }
    }

    fn device_count(&self) -> Result<u32, BackendError> {
        if let Some(n) = self.device_count.get() {
            return Ok(*n);
        }
        let n = self.nvml.device_count().map_err(|e| match safe_fail(e, "nvmlDeviceGetCount_v2") {
            Fail::Code(_, rc::NO_PERMISSION) => BackendError::NoPermission { op: "count the GPUs".into() },
            f => BackendError::Driver {
                context: "cannot count the GPUs".into(),
                function: f.function().to_string(),
                code: f.code().map_or("missing", return_code_name).to_string(),
                message: f.code().map_or_else(|| "the library lacks it".to_string(), |c| self.error_text(c)),
            },
        })?;
        Ok(*self.device_count.get_or_init(|| n))
    }

    /// Open GPU `index` for one operation.
    fn gpu(&self, index: u32) -> Result<Gpu<'_>, BackendError> {
        let count = self.device_count()?;
        if index >= count {
            return Err(BackendError::NotFound {
                gpu: GpuRef::index(index),
                what: format!("no GPU with index {index}; the node has {count} GPU(s)"),
            });
        }
        let dev = self
            .nvml
            .device_by_index(index)
            .map_err(|e| self.error(safe_fail(e, "nvmlDeviceGetHandleByIndex_v2"), &GpuRef::index(index), "open it"))?;
        let raw = ffi::device_handle(&dev);
        let known = self.statics.lock().unwrap_or_else(PoisonError::into_inner).get(&index).cloned();
        let statics = match known {
            Some(s) => Some(s),
            None => match dev.uuid() {
                Ok(uuid) => {
                    let s = GpuStatics { uuid, minor: dev.minor_number().ok() };
                    self.statics.lock().unwrap_or_else(PoisonError::into_inner).insert(index, s.clone());
                    Some(s)
                }
                Err(NvmlError::GpuLost) => return Err(BackendError::GpuLost { gpu: GpuRef::index(index) }),
                Err(_) => None,
            },
        };
        let (uuid, minor) = statics.map_or((None, None), |s| (Some(s.uuid), s.minor));
        Ok(Gpu { index, dev, raw, gref: GpuRef { index, uuid }, minor })
    }

    fn minor_of(&self, g: &Gpu<'_>) -> Option<u32> {
        g.minor
    }

    /// The catalog model of a GPU: by PCI device id, then by product name.
    fn model(&self, g: &Gpu<'_>) -> Option<&'static GpuModel> {
        let cat = catalog();
        let by_id = g.dev.pci_info().ok().and_then(|p| u16::try_from(p.pci_device_id >> 16).ok());
        by_id
            .and_then(|id| cat.model_by_pci_device_id(id))
            .or_else(|| g.dev.name().ok().and_then(|n| cat.model(&n).ok()))
    }

    fn device_info(&self, g: &Gpu<'_>) -> Result<DeviceInfo, BackendError> {
        let e = |fail: Fail, doing: &str| self.error(fail, &g.gref, doing);
        let uuid = match &g.gref.uuid {
            Some(u) => u.clone(),
            None => g.dev.uuid().map_err(|x| e(safe_fail(x, "nvmlDeviceGetUUID"), "read its UUID"))?,
        };
        let name = g.dev.name().map_err(|x| e(safe_fail(x, "nvmlDeviceGetName"), "read its product name"))?;
        let pci = g.dev.pci_info().map_err(|x| e(safe_fail(x, "nvmlDeviceGetPciInfo_v3"), "read its PCI info"))?;
        let minor_number =
            g.dev.minor_number().map_err(|x| e(safe_fail(x, "nvmlDeviceGetMinorNumber"), "read its minor number"))?;
        let memory = ffi::memory_total_bytes(self.lib(), g.raw).map_err(|f| e(f, "read its memory size"))?;
        Ok(DeviceInfo {
            index: g.index,
            minor_number,
            uuid,
            name,
            pci_device_id: u16::try_from(pci.pci_device_id >> 16).unwrap_or(0),
            pci_subsystem_id: pci.pci_sub_system_id.unwrap_or(0),
            numa_node: self.numa_node(g, &pci.bus_id),
            local_cpus: self.local_cpus(g, &pci.bus_id),
            pci_bus_id: pci.bus_id,
            memory_total_mib: memory / (1024 * 1024),
        })
    }

    /// `nvmlDeviceGetMemoryAffinity` when it names exactly one node, else sysfs `numa_node`.
    fn numa_node(&self, g: &Gpu<'_>, bus_id: &str) -> Option<u32> {
        if let Ok(words) = g.dev.memory_affinity(NODE_MASK_WORDS, NVML_AFFINITY_SCOPE_NODE)
            && let [node] = host::mask_bits(&words)[..]
        {
            return Some(node);
        }
        host::sysfs_numa_node(&self.sysfs_root, bus_id)
    }

    /// `nvmlDeviceGetCpuAffinity` when it names any CPU, else sysfs `local_cpulist`.
    fn local_cpus(&self, g: &Gpu<'_>, bus_id: &str) -> Vec<u32> {
        if let Ok(words) = g.dev.cpu_affinity(CPU_MASK_WORDS) {
            let cpus = host::mask_bits(&words);
            if !cpus.is_empty() {
                return cpus;
            }
        }
        host::sysfs_local_cpus(&self.sysfs_root, bus_id).unwrap_or_default()
    }

    fn mode_of(&self, g: &Gpu<'_>) -> Result<MigMode, BackendError> {
        match g.dev.mig_mode() {
            Ok(m) => Ok(MigMode {
                current: m.current == NVML_DEVICE_MIG_ENABLE,
                pending: m.pending == NVML_DEVICE_MIG_ENABLE,
            }),
            Err(NvmlError::NotSupported) => {
                Err(BackendError::NotSupported { gpu: g.gref.clone(), what: self.no_mig_text(g) })
            }
            Err(e) => Err(self.error(safe_fail(e, "nvmlDeviceGetMigMode"), &g.gref, "read its MIG mode")),
        }
    }

    /// The driver's GPU-instance profiles of a GPU, read once.
    fn driver_profiles(&self, g: &Gpu<'_>) -> Result<Arc<Vec<DriverProfile>>, BackendError> {
        if let Some(p) = self.profiles.lock().unwrap_or_else(PoisonError::into_inner).get(&g.index) {
            return Ok(Arc::clone(p));
        }
        self.require_mig(g, "list GPU instance profiles")?;
        let model = self.model(g);
        let total_bytes = ffi::memory_total_bytes(self.lib(), g.raw).unwrap_or(0);
        let mut out: Vec<DriverProfile> = Vec::new();
        for index in 0..GI_PROFILE_INDICES {
            let raw = match ffi::gi_profile_info(self.lib(), g.raw, index) {
                Ok(raw) => raw,
                Err(Fail::Code(_, rc::NOT_SUPPORTED | rc::INVALID_ARGUMENT | rc::NOT_FOUND)) => continue,
                Err(f) => {
                    return Err(self.mig_error(
                        g,
                        f,
                        &format!("read GPU instance profile index {index} (NVML_GPU_INSTANCE_PROFILE_*)"),
                    ));
                }
            };
            if out.iter().any(|p| p.info.id == raw.id) {
                continue;
            }
            let catalog_profile = model.and_then(|m| m.profile_by_id(raw.id));
            let placements: Vec<PlacementRange> = match ffi::gi_possible_placements(self.lib(), g.raw, raw.id) {
                Ok(v) => v
                    .into_iter()
                    .map(|(start, size)| PlacementRange { start: small(start), size: small(size) })
                    .collect(),
                // A driver without the v2 call: the catalog's placements, if it knows the profile.
                Err(Fail::Missing(_)) => catalog_profile.map_or_else(Vec::new, |p| {
                    p.placements.iter().map(|&start| PlacementRange { start, size: p.placement_size }).collect()
                }),
                Err(f) => {
                    return Err(self.mig_error(
                        g,
                        f,
                        &format!("list the placements of GPU instance profile {}", raw.id),
                    ));
                }
            };
            let placement_size =
                placements.first().map(|p| p.size).or(catalog_profile.map(|p| p.placement_size)).unwrap_or(0);
            let memory_slices = match (catalog_profile, model) {
                (Some(p), _) => p.memory_slices,
                (None, Some(m)) if m.placement_units > 0 => {
                    small(u32::from(placement_size) * u32::from(m.memory_slices) / u32::from(m.placement_units))
                }
                _ => placement_size,
            };
            let name = match (&raw.name, catalog_profile) {
                (Some(n), _) => bare_profile_name(n).to_string(),
                (None, Some(p)) => p.name.clone(),
                (None, None) => nvlib_profile_name(index, raw.slice_count, raw.memory_mb, total_bytes),
            };
            out.push(DriverProfile {
                info: GpuInstanceProfileInfo {
                    id: raw.id,
                    name,
                    compute_slices: small(raw.slice_count),
                    memory_slices,
                    memory_mib: raw.memory_mb,
                    max_count: small(raw.instance_count),
                    placement_size,
                    sm_count: raw.sm_count,
                    copy_engines: raw.copy_engines,
                    decoders: raw.decoders,
                    encoders: raw.encoders,
                    jpegs: raw.jpegs,
                    ofas: raw.ofas,
                },
            });
        }
        let out = Arc::new(out);
        self.profiles.lock().unwrap_or_else(PoisonError::into_inner).insert(g.index, Arc::clone(&out));
        Ok(out)
    }

    /// The profile's name for messages: `3g.20gb (profile 9)`, from the driver's list if it has
    /// been read, else the catalog, else the bare id.
    fn profile_label(&self, g: &Gpu<'_>, profile_id: u32) -> String {
        match self.profile_name(g, profile_id) {
            Some(name) => format!("{name} (profile {profile_id})"),
            None => format!("profile {profile_id}"),
        }
    }

    fn profile_name(&self, g: &Gpu<'_>, profile_id: u32) -> Option<String> {
        let cached = self.profiles.lock().unwrap_or_else(PoisonError::into_inner).get(&g.index).cloned();
        cached
            .and_then(|ps| ps.iter().find(|p| p.info.id == profile_id).map(|p| p.info.name.clone()))
            .or_else(|| self.model(g).and_then(|m| m.profile_by_id(profile_id)).map(|p| p.name.clone()))
    }

    fn gi_compute_slices(&self, g: &Gpu<'_>, profile_id: u32) -> Option<u8> {
        let from_driver = self
            .driver_profiles(g)
            .ok()
            .and_then(|ps| ps.iter().find(|p| p.info.id == profile_id).map(|p| p.info.compute_slices));
        from_driver.or_else(|| self.model(g).and_then(|m| m.profile_by_id(profile_id)).map(|p| p.compute_slices))
    }

    /// The driver refused a GPU-instance profile id: say why, in the driver's and the
    /// catalog's terms.
    fn profile_refused(&self, g: &Gpu<'_>, profile_id: u32, fail: Fail, doing: &str) -> BackendError {
        let offered = match self.driver_profiles(g) {
            Ok(p) => p,
            Err(e) => return e,
        };
        if offered.iter().any(|p| p.info.id == profile_id) {
            return self.mig_error(g, fail, doing);
        }
        let list = if offered.is_empty() {
            "none".to_string()
        } else {
            offered.iter().map(|p| format!("{} ({})", p.info.id, p.info.name)).collect::<Vec<_>>().join(", ")
        };
        let model = self.model(g);
        match model.and_then(|m| m.profile_by_id(profile_id)) {
            Some(p) => {
                let what = match &p.min_driver {
                    Some(min) if driver_older_than(&self.driver_version, min) == Some(true) => format!(
                        "the NVIDIA driver {} is too old for {} (profile {}): it needs {min} or newer; upgrade the \
                         driver",
                        self.driver_version, p.name, p.id
                    ),
                    _ => format!(
                        "the driver ({}) does not offer {} (profile {}) on this GPU, although the catalog of {} lists \
                         it; it offers {list}",
                        self.driver_version,
                        p.name,
                        p.id,
                        model.map_or("it", |m| m.name.as_str())
                    ),
                };
                BackendError::NotSupported { gpu: g.gref.clone(), what }
            }
            None => BackendError::InvalidArgument {
                what: format!("{} has no GPU instance profile {profile_id}; the driver offers {list}", g.gref),
            },
        }
    }

    fn gi_info(&self, g: &Gpu<'_>, gi: ffi::GiHandle<'_>) -> Result<GpuInstanceInfo, BackendError> {
        let raw = ffi::gi_info(self.lib(), gi).map_err(|f| self.mig_error(g, f, "read a GPU instance"))?;
        let caps_minor = self.minor_of(g).and_then(|minor| self.mig_minors()?.gpu_instance(minor, raw.id));
        Ok(GpuInstanceInfo {
            id: raw.id,
            profile_id: raw.profile_id,
            placement: PlacementRange { start: small(raw.start), size: small(raw.size) },
            caps_minor,
        })
    }

    /// `GPU instance 3 (3g.20gb@4)`, as the simulated node words it.
    fn gi_label(&self, g: &Gpu<'_>, gi: &GpuInstanceInfo) -> String {
        match self.profile_name(g, gi.profile_id) {
            Some(name) => format!("GPU instance {} ({name}@{})", gi.id, gi.placement.start),
            None => format!("GPU instance {} (profile {}@{})", gi.id, gi.profile_id, gi.placement.start),
        }
    }

    fn gi_label_of(&self, g: &Gpu<'_>, gi: ffi::GiHandle<'_>) -> String {
        match ffi::gi_info(self.lib(), gi) {
            Ok(raw) => self.gi_label(
                g,
                &GpuInstanceInfo {
                    id: raw.id,
                    profile_id: raw.profile_id,
                    placement: PlacementRange { start: small(raw.start), size: small(raw.size) },
                    caps_minor: None,
                },
            ),
            Err(_) => "the GPU instance".to_string(),
        }
    }

    /// Every GPU instance of the GPU, by id.
    fn list_gis(&self, g: &Gpu<'_>) -> Result<Vec<GpuInstanceInfo>, BackendError> {
        let profiles = self.driver_profiles(g)?;
        let mut out: Vec<GpuInstanceInfo> = Vec::new();
        for p in profiles.iter() {
            let handles = match ffi::gpu_instances(self.lib(), g.raw, p.info.id) {
                Ok(h) => h,
                Err(Fail::Code(_, rc::NOT_FOUND)) => Vec::new(),
                Err(f) => return Err(self.mig_error(g, f, "list GPU instances")),
            };
            for h in handles {
                let info = self.gi_info(g, h)?;
                if !out.iter().any(|o| o.id == info.id) {
                    out.push(info);
                }
            }
        }
        out.sort_by_key(|gi| gi.id);
        Ok(out)
    }

    /// The GPU instance with this id, or `NotFound` listing the ones that exist.
    fn gi_by_id<'n>(&'n self, g: &Gpu<'n>, id: u32, doing: &str) -> Result<ffi::GiHandle<'n>, BackendError> {
        match ffi::gi_by_id(self.lib(), g.raw, id) {
            Ok(h) => Ok(h),
            Err(Fail::Code(_, rc::NOT_FOUND | rc::INVALID_ARGUMENT)) => {
                let existing = self.list_gis(g)?;
                let ids: Vec<String> = existing.iter().map(|gi| gi.id.to_string()).collect();
                Err(BackendError::NotFound {
                    gpu: g.gref.clone(),
                    what: format!(
                        "no GPU instance {id} (existing: {}), so it cannot {doing}",
                        if ids.is_empty() { "none".to_string() } else { ids.join(", ") }
                    ),
                })
            }
            Err(f) => Err(self.mig_error(g, f, &format!("find GPU instance {id} to {doing}"))),
        }
    }

    /// Why a GPU instance could not be created: what overlaps it, how many of its kind exist,
    /// what the driver says is left.
    fn no_room_for_gi(
        &self,
        g: &Gpu<'_>,
        profile_id: u32,
        label: String,
        placement: Option<u8>,
        size: Option<u8>,
    ) -> BackendError {
        let existing = self.list_gis(g).unwrap_or_default();
        let mut why = Vec::new();
        if let (Some(start), Some(size)) = (placement, size) {
            let end = u32::from(start) + u32::from(size);
            let hits: Vec<String> = existing
                .iter()
                .filter(|gi| {
                    let (s, e) =
                        (u32::from(gi.placement.start), u32::from(gi.placement.start) + u32::from(gi.placement.size));
                    s < end && u32::from(start) < e
                })
                .map(|gi| self.gi_label(g, gi))
                .collect();
            if !hits.is_empty() {
                why.push(format!("overlaps {}", hits.join(", ")));
            }
        }
        let same = existing.iter().filter(|gi| gi.profile_id == profile_id).count();
        let max = self
            .driver_profiles(g)
            .ok()
            .and_then(|ps| ps.iter().find(|p| p.info.id == profile_id).map(|p| p.info.max_count));
        if let Some(max) = max
            && same >= usize::from(max)
        {
            why.push(format!("{same} of at most {max} instance(s) of it exist"));
        }
        if let Ok(left) = ffi::gi_remaining_capacity(self.lib(), g.raw, profile_id) {
            why.push(format!("the driver has room for {left} more of it"));
        }
        if why.is_empty() {
            why.push("the driver has no room for it".into());
        }
        BackendError::InsufficientResources { gpu: g.gref.clone(), profile: label, placement, detail: why.join("; ") }
    }

    fn gi_in_use(&self, g: &Gpu<'_>, gi: &GpuInstanceInfo) -> BackendError {
        let label = self.gi_label(g, gi);
        let holders = self.holders(g, |p| p.gpu_instance_id == Some(gi.id));
        let what = if let Ok(Some(by)) = &holders {
            format!("{label} is used by {by}")
        } else {
            let cis = self.list_cis(g, gi.id).unwrap_or_default();
            let unlisted = match &holders {
                Err(why) => format!(" (and it may be used by {why})"),
                Ok(_) => String::new(),
            };
            if !cis.is_empty() {
                let ids: Vec<String> = cis.iter().map(|c| c.id.to_string()).collect();
                format!("{label} still has compute instance(s) {}; destroy them first{unlisted}", ids.join(", "))
            } else if let Err(why) = &holders {
                format!("{label} is in use, by {why}")
            } else {
                format!("{label} is in use by another client")
            }
        };
        BackendError::InUse { gpu: g.gref.clone(), what }
    }

    /// The compute-instance profiles a GPU instance offers (the same for every GPU instance of
    /// one profile, so read once per profile).
    fn ci_profiles(
        &self,
        g: &Gpu<'_>,
        gi: ffi::GiHandle<'_>,
        info: &GpuInstanceInfo,
    ) -> Result<CiProfiles, BackendError> {
        let key = (g.index, info.profile_id);
        if let Some(p) = self.ci_profiles.lock().unwrap_or_else(PoisonError::into_inner).get(&key) {
            return Ok(Arc::clone(p));
        }
        let gi_name = self.profile_name(g, info.profile_id);
        let mut out: Vec<ComputeInstanceProfileInfo> = Vec::new();
        for index in 0..CI_PROFILE_INDICES {
            let raw = match ffi::ci_profile_info(self.lib(), gi, index) {
                Ok(raw) => raw,
                Err(Fail::Code(_, rc::NOT_SUPPORTED | rc::INVALID_ARGUMENT | rc::NOT_FOUND)) => continue,
                Err(f) => {
                    let doing = format!("read the compute instance profiles of {}", self.gi_label(g, info));
                    return Err(self.mig_error(g, f, &doing));
                }
            };
            if out.iter().any(|c| c.id == raw.id) {
                continue;
            }
            let name = match (&raw.name, &gi_name) {
                (Some(n), _) => bare_profile_name(n).to_string(),
                (None, Some(gi_name)) => format!("{}c.{gi_name}", raw.slice_count),
                (None, None) => format!("{}c", raw.slice_count),
            };
            out.push(ComputeInstanceProfileInfo {
                id: raw.id,
                name,
                compute_slices: small(raw.slice_count),
                max_count: small(raw.instance_count),
                sm_count: raw.sm_count,
            });
        }
        let out = Arc::new(out);
        self.ci_profiles.lock().unwrap_or_else(PoisonError::into_inner).insert(key, Arc::clone(&out));
        Ok(out)
    }

    /// The MIG device UUIDs of compute instances `cis` of GPU instance `gi_id`, by compute
    /// instance id, from the GPU's MIG device handles (stopping once all are found).
    fn mig_uuids(&self, g: &Gpu<'_>, gi_id: u32, cis: &[u32]) -> Result<MigUuids, BackendError> {
        let mut out = MigUuids::default();
        if cis.is_empty() {
            return Ok(out);
        }
        let lost = |f: Fail| f.code() == Some(rc::GPU_IS_LOST);
        let max = match ffi::max_mig_device_count(self.lib(), g.raw) {
            Ok(n) => n,
            Err(f) if lost(f) => return Err(BackendError::GpuLost { gpu: g.gref.clone() }),
            Err(f) => {
                out.failure = Some(f);
                return Ok(out);
            }
        };
        for i in 0..max {
            let h = match ffi::mig_device_by_index(self.lib(), g.raw, i) {
                Ok(h) => h,
                Err(f) if lost(f) => return Err(BackendError::GpuLost { gpu: g.gref.clone() }),
                // An index with no MIG device behind it.
                Err(f) if f.code() == Some(rc::NOT_FOUND) => continue,
                Err(f) => {
                    out.failure.get_or_insert(f);
                    continue;
                }
            };
            if ffi::mig_gpu_instance_id(self.lib(), h) != Ok(gi_id) {
                continue;
            }
            let Ok(ci) = ffi::mig_compute_instance_id(self.lib(), h) else {
                continue;
            };
            if !cis.contains(&ci) {
                continue;
            }
            match ffi::uuid(self.lib(), h) {
                Ok(uuid) => {
                    out.found.insert(ci, uuid);
                    if out.found.len() == cis.len() {
                        break;
                    }
                }
                Err(f) if lost(f) => return Err(BackendError::GpuLost { gpu: g.gref.clone() }),
                Err(f) => {
                    out.failure.get_or_insert(f);
                }
            }
        }
        Ok(out)
    }

    /// A compute instance's MIG device UUID, exactly as the driver names it. Only a driver older
    /// than R470, whose MIG devices are named `MIG-GPU-<GPU uuid>/<GI>/<CI>`, gets that name
    /// made up when it gives none. On any later driver a UUID that cannot be read is an error:
    /// the old form is not the device's name there, and a job given a wrong name would run on
    /// no device or the wrong one.
    fn mig_uuid(&self, g: &Gpu<'_>, uuids: &MigUuids, gi: u32, ci: u32) -> Result<String, BackendError> {
        if let Some(u) = uuids.found.get(&ci) {
            return Ok(u.clone());
        }
        if driver_older_than(&self.driver_version, MIG_UUID_DRIVER) == Some(true)
            && let Some(u) = &g.gref.uuid
        {
            return Ok(format!("MIG-{u}/{gi}/{ci}"));
        }
        let (function, code, message) = match uuids.failure {
            Some(f) => (
                f.function().to_string(),
                f.code().map_or("missing", return_code_name).to_string(),
                f.code().map_or_else(|| "the library lacks it".to_string(), |c| self.error_text(c)),
            ),
            None => (
                "nvmlDeviceGetMigDeviceHandleByIndex".to_string(),
                "no handle".to_string(),
                "no MIG device handle names this compute instance".to_string(),
            ),
        };
        Err(BackendError::Driver {
            context: format!(
                "{}: cannot read the MIG device UUID of GPU instance {gi}, compute instance {ci} (driver {}); no \
                 name is made up for it",
                g.gref, self.driver_version
            ),
            function,
            code,
            message,
        })
    }

    fn ci_raw(&self, g: &Gpu<'_>, ci: ffi::CiHandle<'_>) -> Result<ffi::InstanceInfoRaw, BackendError> {
        ffi::ci_info(self.lib(), ci).map_err(|f| self.mig_error(g, f, "read a compute instance"))
    }

    fn ci_info(
        &self,
        g: &Gpu<'_>,
        gi_id: u32,
        raw: ffi::InstanceInfoRaw,
        uuids: &MigUuids,
    ) -> Result<ComputeInstanceInfo, BackendError> {
        let caps_minor = self.minor_of(g).and_then(|minor| self.mig_minors()?.compute_instance(minor, gi_id, raw.id));
        Ok(ComputeInstanceInfo {
            id: raw.id,
            gpu_instance_id: gi_id,
            profile_id: raw.profile_id,
            placement: PlacementRange { start: small(raw.start), size: small(raw.size) },
            uuid: self.mig_uuid(g, uuids, gi_id, raw.id)?,
            caps_minor,
        })
    }

    fn list_cis(&self, g: &Gpu<'_>, gi_id: u32) -> Result<Vec<ComputeInstanceInfo>, BackendError> {
        let gi = self.gi_by_id(g, gi_id, "list its compute instances")?;
        let info = self.gi_info(g, gi)?;
        let mut raws: Vec<ffi::InstanceInfoRaw> = Vec::new();
        for p in self.ci_profiles(g, gi, &info)?.iter() {
            let handles = match ffi::compute_instances(self.lib(), gi, p.id) {
                Ok(h) => h,
                Err(Fail::Code(_, rc::NOT_FOUND)) => Vec::new(),
                Err(f) => {
                    let doing = format!("list the compute instances of {}", self.gi_label(g, &info));
                    return Err(self.mig_error(g, f, &doing));
                }
            };
            for h in handles {
                let raw = self.ci_raw(g, h)?;
                if !raws.iter().any(|c| c.id == raw.id) {
                    raws.push(raw);
                }
            }
        }
        let ids: Vec<u32> = raws.iter().map(|c| c.id).collect();
        let uuids = self.mig_uuids(g, gi_id, &ids)?;
        let mut out = raws.into_iter().map(|raw| self.ci_info(g, gi_id, raw, &uuids)).collect::<Result<Vec<_>, _>>()?;
        out.sort_by_key(|c| c.id);
        Ok(out)
    }

    /// The compute processes of a GPU. nvml.h: "In MIG mode, if device handle is provided, the
    /// API returns aggregate information, only if the caller has appropriate privileges.
    /// Per-instance information can be queried by using specific MIG device handles." So a
    /// caller that is not root gets `NO_PERMISSION` for the GPU and asks each MIG device instead;
    /// if those refuse too, the answer is [`BackendError::NoPermission`], never "no processes".
    fn processes_of(&self, g: &Gpu<'_>) -> Result<Vec<ProcessInfo>, BackendError> {
        let mut out: Vec<ProcessInfo> = match g.dev.running_compute_processes() {
            Ok(procs) => procs.into_iter().map(|p| self.process_info(p, None)).collect(),
            Err(NvmlError::NoPermission) => self.processes_per_mig_device(g)?,
            Err(e) => {
                return Err(self.error(
                    safe_fail(e, "nvmlDeviceGetComputeRunningProcesses_v3"),
                    &g.gref,
                    "list its processes",
                ));
            }
        };
        out.sort_by_key(|p| (p.pid, p.gpu_instance_id, p.compute_instance_id));
        Ok(out)
    }

    fn process_info(
        &self,
        p: nvml_wrapper::struct_wrappers::device::ProcessInfo,
        ids: Option<(u32, u32)>,
    ) -> ProcessInfo {
        let gi = p.gpu_instance_id.filter(|&id| id != NO_ID).or(ids.map(|i| i.0));
        let ci = p.compute_instance_id.filter(|&id| id != NO_ID).or(ids.map(|i| i.1));
        ProcessInfo {
            pid: p.pid,
            name: host::process_name(&self.proc_root, p.pid),
            gpu_instance_id: gi,
            compute_instance_id: ci,
            used_memory_mib: match p.used_gpu_memory {
                UsedGpuMemory::Used(bytes) => bytes / (1024 * 1024),
                UsedGpuMemory::Unavailable => 0,
            },
        }
    }

    /// The processes of every MIG device of a GPU, each with its instance ids (see
    /// [`Self::processes_of`]).
    fn processes_per_mig_device(&self, g: &Gpu<'_>) -> Result<Vec<ProcessInfo>, BackendError> {
        let denied = |why: &str| BackendError::NoPermission {
            op: format!(
                "list the processes on {} (NVML gives a GPU's process list in MIG mode to root only; {why}), so who \
                 uses its instances is unknown",
                g.gref
            ),
        };
        match g.dev.mig_mode() {
            Ok(m) if m.current == NVML_DEVICE_MIG_ENABLE => {}
            _ => return Err(denied("MIG is not on, so there are no MIG devices to ask instead")),
        }
        let max = ffi::max_mig_device_count(self.lib(), g.raw)
            .map_err(|f| self.error(f, &g.gref, "count its MIG devices to list their processes"))?;
        let mut out = Vec::new();
        for i in 0..max {
            let dev = match g.dev.mig_device_by_index(i) {
                Ok(d) => d,
                Err(NvmlError::NotFound | NvmlError::InvalidArg) => continue,
                Err(e) => {
                    return Err(self.error(
                        safe_fail(e, "nvmlDeviceGetMigDeviceHandleByIndex"),
                        &g.gref,
                        &format!("open MIG device {i} to list its processes"),
                    ));
                }
            };
            let raw = ffi::device_handle(&dev);
            let ids = match (ffi::mig_gpu_instance_id(self.lib(), raw), ffi::mig_compute_instance_id(self.lib(), raw)) {
                (Ok(gi), Ok(ci)) => Some((gi, ci)),
                _ => None,
            };
            let procs = dev.running_compute_processes().map_err(|e| match e {
                NvmlError::NoPermission => denied("its MIG devices refused their lists too"),
                e => self.error(
                    safe_fail(e, "nvmlDeviceGetComputeRunningProcesses_v3"),
                    &g.gref,
                    &format!("list the processes of MIG device {i}"),
                ),
            })?;
            out.extend(procs.into_iter().map(|p| self.process_info(p, ids)));
        }
        Ok(out)
    }

    /// Who holds an instance, for an `IN_USE` message: the processes `keep` selects, an MPS
    /// server named as such (a leftover `nvidia-cuda-mps-server` keeps its instance busy with no
    /// client left); `Ok(None)` when the list is readable and empty; `Err` says why it cannot be
    /// read (never taken for "no processes").
    fn holders(&self, g: &Gpu<'_>, keep: impl Fn(&ProcessInfo) -> bool) -> Result<Option<String>, String> {
        let procs = self.processes_of(g).map_err(|e| format!("processes that cannot be listed ({e})"))?;
        let held: Vec<&ProcessInfo> = procs.iter().filter(|p| keep(p)).collect();
        if held.is_empty() {
            return Ok(None);
        }
        let names: Vec<String> = held.iter().map(ToString::to_string).collect();
        let mut text = names.join(", ");
        if held.iter().any(|p| p.name == MPS_SERVER) {
            text.push_str(&format!(
                " (an MPS server: stop it with `echo quit | nvidia-cuda-mps-control` as the user that started it, or \
                 kill {MPS_SERVER})"
            ));
        }
        Ok(Some(text))
    }

    /// Register every GPU that reports Xid events in a new event set.
    fn listen(&self) -> Result<XidListener, BackendError> {
        let count = self.device_count()?;
        let set = ffi::event_set_create(self.lib()).map_err(|f| match f {
            Fail::Missing(function) => BackendError::NotSupported {
                gpu: GpuRef::index(0),
                what: format!(
                    "cannot watch for Xid errors: the NVML library has no {function}, so the NVIDIA driver ({}) is \
                     too old for it",
                    self.driver_version
                ),
            },
            f => self.error(f, &GpuRef::index(0), "create an NVML event set for Xid errors"),
        })?;
        let mut listener = XidListener { set, registered: Vec::new() };
        for index in 0..count {
            let g = match self.gpu(index) {
                Ok(g) => g,
                Err(BackendError::GpuLost { .. }) => continue,
                Err(e) => {
                    self.release(listener);
                    return Err(e);
                }
            };
            let supported = match ffi::supported_event_types(self.lib(), g.raw) {
                Ok(t) => t,
                Err(Fail::Code(_, rc::NOT_SUPPORTED | rc::GPU_IS_LOST)) => {
                    continue;
                }
                Err(f) => {
                    self.release(listener);
                    return Err(self.error(f, &g.gref, "read the event types it supports"));
                }
            };
            if supported & ffi::XID_EVENT == 0 {
                continue;
            }
            match ffi::register_xid_events(self.lib(), g.raw, &listener.set) {
                Ok(()) => listener.registered.push((g.raw.key(), index)),
                Err(Fail::Code(_, rc::NOT_SUPPORTED | rc::GPU_IS_LOST)) => {}
                Err(f) => {
                    self.release(listener);
                    return Err(self.error(f, &g.gref, "register for Xid events"));
                }
            }
        }
        Ok(listener)
    }

    fn release(&self, listener: XidListener) {
        // Best effort: the set is useless either way.
        let _ = ffi::event_set_free(self.lib(), listener.set);
    }

    /// The NVML index of the GPU an event came from.
    fn event_gpu(&self, listener: &XidListener, device: ffi::DeviceHandle<'_>) -> Option<u32> {
        let known = |h: ffi::DeviceHandle<'_>| listener.registered.iter().find(|(k, _)| *k == h.key()).map(|(_, i)| *i);
        if let Some(i) = known(device) {
            return Some(i);
        }
        // A MIG device handle: its parent is the registered GPU.
        if ffi::is_mig_device(self.lib(), device) == Ok(true) {
            let parent = ffi::parent_of_mig_device(self.lib(), device).ok()?;
            return known(parent).or_else(|| ffi::device_index(self.lib(), parent).ok());
        }
        if let Ok(i) = ffi::device_index(self.lib(), device) {
            return Some(i);
        }
        let parent = ffi::parent_of_mig_device(self.lib(), device).ok()?;
        known(parent).or_else(|| ffi::device_index(self.lib(), parent).ok())
    }
}

/// The error for a failed `Nvml` initialisation.
fn open_error(e: NvmlError, library: &str) -> BackendError {
    match e {
        NvmlError::LibloadingError(err) => {
            BackendError::LibraryNotFound { library: library.to_string(), detail: err.to_string() }
        }
        NvmlError::FailedToLoadSymbol(detail) => BackendError::LibraryNotFound {
            library: library.to_string(),
            detail: format!("it does not export nvmlInit_v2, so it is not an NVML library ({detail})"),
        },
        NvmlError::NoPermission => BackendError::NoPermission { op: format!("initialise NVML ({library})") },
        other => {
            let code = nvmlReturn_t::from(other);
            let message = match code {
                rc::DRIVER_NOT_LOADED => "the NVIDIA kernel driver is not loaded".to_string(),
                rc::LIB_RM_VERSION_MISMATCH => {
                    "the NVML library and the kernel driver are different versions (reboot or reload the driver)"
                        .to_string()
                }
                _ => NvmlError::from(code).to_string(),
            };
            BackendError::Driver {
                context: format!("cannot initialise NVML from {library}"),
                function: "nvmlInit_v2".into(),
                code: return_code_name(code).to_string(),
                message,
            }
        }
    }
}

fn ci_list(offered: &[ComputeInstanceProfileInfo]) -> String {
    if offered.is_empty() {
        return "none".into();
    }
    offered.iter().map(|c| format!("{} ({})", c.id, c.name)).collect::<Vec<_>>().join(", ")
}

impl MigBackend for NvmlBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Nvml
    }

    fn devices(&self) -> Result<Vec<DeviceInfo>, BackendError> {
        let count = self.device_count()?;
        (0..count).map(|i| self.gpu(i).and_then(|g| self.device_info(&g))).collect()
    }

    /// Each GPU on its own: a GPU that fails is named by index (and by UUID, if it was read
    /// before it failed).
    // The per-GPU results are collected into a list, not passed up through `?`: their size does
    // not matter.
    #[allow(clippy::result_large_err)]
    fn devices_partial(&self) -> Result<Vec<Result<DeviceInfo, FailedGpu>>, BackendError> {
        let count = self.device_count()?;
        Ok((0..count)
            .map(|i| {
                self.gpu(i).and_then(|g| self.device_info(&g)).map_err(|error| {
                    let uuid =
                        self.statics.lock().unwrap_or_else(PoisonError::into_inner).get(&i).map(|s| s.uuid.clone());
                    FailedGpu { gpu: GpuRef { index: i, uuid }, device: None, error }
                })
            })
            .collect())
    }

    /// The probe: the GPU's handle and its memory info (a call the GPU must answer), then the
    /// recovery action (`None` where the driver lacks the field) and the node's boot id. NVML
    /// has no reset counter.
    fn observe(&self, gpu: u32) -> Result<GpuObservation, BackendError> {
        let g = self.gpu(gpu)?;
        ffi::memory_total_bytes(self.lib(), g.raw).map_err(|f| self.error(f, &g.gref, "read its memory info"))?;
        let recovery_action = match ffi::recovery_action(self.lib(), g.raw) {
            Ok(v) => v.and_then(|v| u32::try_from(v).ok()).and_then(RecoveryAction::from_nvml),
            Err(
                Fail::Missing(_) | Fail::Code(_, rc::NOT_SUPPORTED | rc::INVALID_ARGUMENT | rc::FUNCTION_NOT_FOUND),
            ) => None,
            Err(f) => return Err(self.error(f, &g.gref, "read its recovery action")),
        };
        Ok(GpuObservation { reset_count: None, recovery_action, boot_id: host::boot_id(&self.boot_id_path) })
    }

    /// `nvidia-smi --gpu-reset -i N` (NVML has no public reset call); its refusals as `InUse`
    /// or `NotSupported` with nvidia-smi's words.
    fn reset_gpu(&self, gpu: u32) -> Result<(), BackendError> {
        let g = self.gpu(gpu)?;
        let reset = reset::reset_with_nvidia_smi(&self.nvidia_smi, &g.gref);
        // Tried or done, a reset may have rebound the GPU: read everything again.
        self.forget_gpu(gpu);
        reset
    }

    fn mig_mode(&self, gpu: u32) -> Result<MigMode, BackendError> {
        let g = self.gpu(gpu)?;
        self.mode_of(&g)
    }

    fn set_mig_mode(&self, gpu: u32, enabled: bool) -> Result<MigMode, BackendError> {
        let g = self.gpu(gpu)?;
        let word = if enabled { "enabled" } else { "disabled" };
        let doing = format!("set MIG mode {word}");
        let status = g.dev.set_mig_mode(enabled);
        // nvml.h: "This API may unbind or reset the device to activate the requested mode. Thus,
        // the attributes associated with the device, such as minor number, might change. The
        // caller of this API is expected to query such attributes again."
        self.forget_gpu(gpu);
        let g = self.gpu(gpu)?;
        let status = match status {
            Ok(status) => status,
            Err(e) => {
                let fail = safe_fail(e, "nvmlDeviceSetMigMode");
                return Err(match fail.code() {
                    Some(rc::NOT_SUPPORTED) => {
                        match self.mode_of(&g) {
                            // A MIG GPU that refuses: e.g. a passthrough VM that cannot reset it.
                            Ok(mode) => BackendError::NotSupported {
                                gpu: g.gref.clone(),
                                what: format!(
                                    "the driver refuses to set MIG mode {word} (now {mode}); on Ampere in a VM this \
                                     needs a VM reboot"
                                ),
                            },
                            Err(e) => e,
                        }
                    }
                    Some(rc::IN_USE | rc::RESET_REQUIRED) => self.mode_change_refused(&g, enabled, fail.code()),
                    _ => self.error(fail, &g.gref, &doing),
                });
            }
        };
        let after = self.mode_of(&g)?;
        match status {
            // RESET_REQUIRED: the change is recorded and waits for a GPU reset (the caller's
            // `reset_gpu`), or a reboot where the platform cannot reset (nvml.h).
            rc::SUCCESS | rc::RESET_REQUIRED => Ok(after),
            rc::IN_USE => Err(self.mode_change_refused(&g, enabled, Some(status))),
            other => Err(BackendError::Driver {
                context: format!("{}: MIG mode {word} did not take effect (now {after})", g.gref),
                function: "nvmlDeviceSetMigMode (activation status)".into(),
                code: return_code_name(other).to_string(),
                message: self.error_text(other),
            }),
        }
    }

    fn gpu_instance_profiles(&self, gpu: u32) -> Result<Vec<GpuInstanceProfileInfo>, BackendError> {
        let g = self.gpu(gpu)?;
        self.require_mig(&g, "list GPU instance profiles")?;
        Ok(self.driver_profiles(&g)?.iter().map(|p| p.info.clone()).collect())
    }

    fn possible_placements(&self, gpu: u32, profile_id: u32) -> Result<Vec<PlacementRange>, BackendError> {
        let g = self.gpu(gpu)?;
        let doing = format!("list the placements of {}", self.profile_label(&g, profile_id));
        match ffi::gi_possible_placements(self.lib(), g.raw, profile_id) {
            Ok(v) => Ok(v
                .into_iter()
                .map(|(start, size)| PlacementRange { start: small(start), size: small(size) })
                .collect()),
            Err(f) if refused_profile(f) => Err(self.profile_refused(&g, profile_id, f, &doing)),
            Err(f) => Err(self.mig_error(&g, f, &doing)),
        }
    }

    fn create_gpu_instance(
        &self,
        gpu: u32,
        profile_id: u32,
        placement: Option<u8>,
    ) -> Result<GpuInstanceInfo, BackendError> {
        let g = self.gpu(gpu)?;
        let label = self.profile_label(&g, profile_id);
        let doing = match placement {
            Some(start) => format!("create a GPU instance of {label} at placement {start}"),
            None => format!("create a GPU instance of {label}"),
        };
        let target = match placement {
            None => None,
            Some(start) => {
                let legal = match ffi::gi_possible_placements(self.lib(), g.raw, profile_id) {
                    Ok(v) => v,
                    Err(f) if refused_profile(f) => return Err(self.profile_refused(&g, profile_id, f, &doing)),
                    Err(f) => return Err(self.mig_error(&g, f, &doing)),
                };
                match legal.iter().find(|(s, _)| *s == u32::from(start)) {
                    Some(&range) => Some(range),
                    None => {
                        let starts: Vec<String> = legal.iter().map(|(s, _)| s.to_string()).collect();
                        return Err(BackendError::InsufficientResources {
                            gpu: g.gref.clone(),
                            profile: label,
                            placement,
                            detail: format!(
                                "{start} is not one of its legal starts ({})",
                                if starts.is_empty() { "none".to_string() } else { starts.join(", ") }
                            ),
                        });
                    }
                }
            }
        };
        match ffi::create_gi(self.lib(), g.raw, profile_id, target) {
            // The instance exists from here on: if it cannot be read back, it is destroyed again
            // so that a failed create changes nothing, as callers (the executor's rollback) assume.
            Ok(h) => self.gi_info(&g, h).map_err(|e| self.undo_create(&g, &doing, e, ffi::destroy_gi(self.lib(), h))),
            Err(f) if f.code() == Some(rc::INSUFFICIENT_RESOURCES) => {
                Err(self.no_room_for_gi(&g, profile_id, label, placement, target.map(|(_, size)| small(size))))
            }
            Err(f) if refused_profile(f) && target.is_none() => Err(self.profile_refused(&g, profile_id, f, &doing)),
            Err(f) => Err(self.mig_error(&g, f, &doing)),
        }
    }

    fn create_compute_instance(
        &self,
        gpu: u32,
        gpu_instance_id: u32,
        ci_profile_id: u32,
    ) -> Result<ComputeInstanceInfo, BackendError> {
        let g = self.gpu(gpu)?;
        let gi = self.gi_by_id(&g, gpu_instance_id, "create a compute instance in it")?;
        let fail = match ffi::create_ci(self.lib(), gi, ci_profile_id) {
            Ok(ci) => {
                let read = self
                    .ci_raw(&g, ci)
                    .and_then(|raw| Ok((raw, self.mig_uuids(&g, gpu_instance_id, &[raw.id])?)))
                    .and_then(|(raw, uuids)| self.ci_info(&g, gpu_instance_id, raw, &uuids));
                // As for GPU instances: one that cannot be read back is destroyed again.
                let doing =
                    format!("create a compute instance of profile {ci_profile_id} in GPU instance {gpu_instance_id}");
                return read.map_err(|e| self.undo_create(&g, &doing, e, ffi::destroy_ci(self.lib(), ci)));
            }
            Err(f) => f,
        };
        let info = self.gi_info(&g, gi)?;
        let label = self.gi_label(&g, &info);
        match fail {
            f if f.code() == Some(rc::INSUFFICIENT_RESOURCES) => {
                let offered = self.ci_profiles(&g, gi, &info).unwrap_or_default();
                let name = offered.iter().find(|c| c.id == ci_profile_id).map_or_else(
                    || format!("profile {ci_profile_id}"),
                    |c| format!("{} (profile {ci_profile_id})", c.name),
                );
                let mut why = Vec::new();
                if let Ok(cis) = self.list_cis(&g, gpu_instance_id)
                    && !cis.is_empty()
                {
                    let used: Vec<String> =
                        cis.iter().map(|c| format!("compute instance {} at {}", c.id, c.placement)).collect();
                    why.push(format!("it has {}", used.join(", ")));
                }
                if let Ok(left) = ffi::ci_remaining_capacity(self.lib(), gi, ci_profile_id) {
                    why.push(format!("the driver has room for {left} more of it"));
                }
                if why.is_empty() {
                    why.push("the driver has no room for it".into());
                }
                Err(BackendError::InsufficientResources {
                    gpu: g.gref.clone(),
                    profile: format!("compute instance {name} in {label}"),
                    placement: None,
                    detail: why.join("; "),
                })
            }
            f if refused_profile(f) => {
                let offered = self.ci_profiles(&g, gi, &info)?;
                if offered.iter().any(|c| c.id == ci_profile_id) {
                    return Err(self.mig_error(
                        &g,
                        f,
                        &format!("create compute instance profile {ci_profile_id} in {label}"),
                    ));
                }
                Err(BackendError::InvalidArgument {
                    what: format!(
                        "{}: {label} has no compute instance profile {ci_profile_id}; it offers {}",
                        g.gref,
                        ci_list(&offered)
                    ),
                })
            }
            f => Err(self.mig_error(&g, f, &format!("create compute instance profile {ci_profile_id} in {label}"))),
        }
    }

    fn destroy_compute_instance(
        &self,
        gpu: u32,
        gpu_instance_id: u32,
        compute_instance_id: u32,
    ) -> Result<(), BackendError> {
        let g = self.gpu(gpu)?;
        let gi = self.gi_by_id(&g, gpu_instance_id, "destroy a compute instance in it")?;
        let label = || self.gi_label_of(&g, gi);
        let ci = match ffi::ci_by_id(self.lib(), gi, compute_instance_id) {
            Ok(h) => h,
            Err(Fail::Code(_, rc::NOT_FOUND | rc::INVALID_ARGUMENT)) => {
                return Err(BackendError::NotFound {
                    gpu: g.gref.clone(),
                    what: format!("no compute instance {compute_instance_id} in {}", label()),
                });
            }
            Err(f) => {
                return Err(self.mig_error(
                    &g,
                    f,
                    &format!("find compute instance {compute_instance_id} of {}", label()),
                ));
            }
        };
        match ffi::destroy_ci(self.lib(), ci) {
            Ok(()) => Ok(()),
            Err(f) if f.code() == Some(rc::IN_USE) => {
                let uuid = self
                    .mig_uuids(&g, gpu_instance_id, &[compute_instance_id])
                    .ok()
                    .and_then(|u| u.found.get(&compute_instance_id).cloned())
                    .unwrap_or_else(|| "UUID unreadable".to_string());
                let by = match self.holders(&g, |p| {
                    p.gpu_instance_id == Some(gpu_instance_id) && p.compute_instance_id == Some(compute_instance_id)
                }) {
                    Ok(Some(by)) => by,
                    Ok(None) => "another client".to_string(),
                    Err(why) => why,
                };
                Err(BackendError::InUse {
                    gpu: g.gref.clone(),
                    what: format!("compute instance {compute_instance_id} of {} ({uuid}) is used by {by}", label()),
                })
            }
            Err(f) => {
                Err(self.mig_error(&g, f, &format!("destroy compute instance {compute_instance_id} of {}", label())))
            }
        }
    }

    fn destroy_gpu_instance(&self, gpu: u32, gpu_instance_id: u32) -> Result<(), BackendError> {
        let g = self.gpu(gpu)?;
        let gi = self.gi_by_id(&g, gpu_instance_id, "destroy it")?;
        let info = self.gi_info(&g, gi)?;
        match ffi::destroy_gi(self.lib(), gi) {
            Ok(()) => Ok(()),
            Err(f) if f.code() == Some(rc::IN_USE) => Err(self.gi_in_use(&g, &info)),
            Err(f) => Err(self.mig_error(&g, f, &format!("destroy {}", self.gi_label(&g, &info)))),
        }
    }

    fn gpu_instances(&self, gpu: u32) -> Result<Vec<GpuInstanceInfo>, BackendError> {
        let g = self.gpu(gpu)?;
        self.list_gis(&g)
    }

    fn compute_instances(&self, gpu: u32, gpu_instance_id: u32) -> Result<Vec<ComputeInstanceInfo>, BackendError> {
        let g = self.gpu(gpu)?;
        self.list_cis(&g, gpu_instance_id)
    }

    fn processes(&self, gpu: u32) -> Result<Vec<ProcessInfo>, BackendError> {
        let g = self.gpu(gpu)?;
        self.processes_of(&g)
    }

    /// On first use, an event set registered for `nvmlEventTypeXidCriticalError` on every GPU
    /// that supports it; then `nvmlEventSetWait_v2` up to `timeout_ms` for the first event and
    /// without waiting for the rest. A GPU-/compute-instance id of `0xFFFFFFFF` becomes `None`.
    fn wait_xid_events(&self, timeout_ms: u32) -> Result<Vec<XidEvent>, BackendError> {
        let mut guard = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        if guard.is_none() {
            *guard = Some(self.listen()?);
        }
        let Some(listener) = guard.as_ref() else {
            return Ok(Vec::new());
        };
        if listener.registered.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let mut timeout = timeout_ms;
        while out.len() < MAX_EVENTS_PER_WAIT {
            let event = match ffi::event_wait(self.lib(), &listener.set, timeout) {
                Ok(Some(e)) => e,
                Ok(None) => break,
                Err(f) => {
                    if !out.is_empty() {
                        // Hand over what came; the error shows again on the next call.
                        break;
                    }
                    let gpu = listener.registered.first().map_or(GpuRef::index(0), |(_, i)| GpuRef::index(*i));
                    return Err(self.error(f, &gpu, "wait for Xid events"));
                }
            };
            timeout = 0;
            if event.event_type & ffi::XID_EVENT == 0 {
                continue;
            }
            let Some(gpu) = event.device.and_then(|d| self.event_gpu(listener, d)) else {
                continue;
            };
            let id = |v: u32| (v != NO_ID).then_some(v);
            out.push(XidEvent {
                gpu,
                xid: event.data,
                gpu_instance_id: id(event.gpu_instance_id),
                compute_instance_id: id(event.compute_instance_id),
            });
        }
        Ok(out)
    }

    /// `nvmlGpmQueryDeviceSupport`; no where the library lacks GPM (a driver before R520).
    fn gpm_supported(&self, gpu: u32) -> Result<bool, BackendError> {
        let g = self.gpu(gpu)?;
        match ffi::gpm_query_support(self.lib(), g.raw) {
            Ok(supported) => Ok(supported),
            Err(Fail::Missing(_) | Fail::Code(_, rc::NOT_SUPPORTED | rc::FUNCTION_NOT_FOUND)) => Ok(false),
            Err(f) => Err(self.error(f, &g.gref, "ask whether it has GPU performance monitoring (GPM)")),
        }
    }

    /// A sample into this GPU's (instance's) spare buffer, then `nvmlGpmMetricsGet` against the
    /// previous sample; the new sample becomes the previous one, the old buffer the spare. A
    /// failed sample forgets the previous one (its buffer is freed).
    fn gpm_sample(&self, gpu: u32, gpu_instance_id: Option<u32>) -> Result<Option<GpmMetrics>, BackendError> {
        let g = self.gpu(gpu)?;
        let doing = match gpu_instance_id {
            Some(gi) => format!("sample GPU instance {gi}'s performance counters (GPM)"),
            None => "sample its performance counters (GPM)".to_string(),
        };
        let lib = self.lib();
        let mut slots = self.gpm.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = slots.entry((gpu, gpu_instance_id)).or_default();
        let buffer = match slot.spare.take() {
            Some(b) => b,
            None => ffi::gpm_sample_alloc(lib).map_err(|f| self.error(f, &g.gref, &doing))?,
        };
        let taken = Instant::now();
        if let Err(f) = ffi::gpm_sample_get(lib, g.raw, gpu_instance_id, &buffer) {
            slot.spare = Some(buffer);
            if let Some((old, _)) = slot.last.take() {
                let _ = ffi::gpm_sample_free(lib, old);
            }
            return Err(self.error(f, &g.gref, &doing));
        }
        let Some((earlier, at)) = slot.last.replace((buffer, taken)) else {
            return Ok(None);
        };
        let ids: Vec<u32> = GpmMetric::ALL.iter().map(|m| m.nvml_id()).collect();
        let got = slot.last.as_ref().map(|(later, _)| ffi::gpm_metrics_get(lib, &earlier, later, &ids));
        slot.spare = Some(earlier);
        let values = match got {
            Some(r) => r.map_err(|f| self.error(f, &g.gref, &doing))?,
            None => return Ok(None),
        };
        let interval_ms = u64::try_from(taken.duration_since(at).as_millis()).unwrap_or(u64::MAX);
        let mut metrics = GpmMetrics { interval_ms, ..GpmMetrics::default() };
        for (m, v) in GpmMetric::ALL.iter().zip(values) {
            // NVML gives percent; a ratio, as DCGM's profiling fields are.
            metrics.set(*m, v.ok().filter(|v| v.is_finite()).map(|v| v / 100.0));
        }
        Ok(Some(metrics))
    }
}

impl NvmlBackend {
    /// A MIG-mode change the driver left pending or refused: say why, naming what holds it.
    fn mode_change_refused(&self, g: &Gpu<'_>, enabled: bool, code: Option<nvmlReturn_t>) -> BackendError {
        let word = if enabled { "enabled" } else { "disabled" };
        let now = self.mode_of(g).map_or_else(|_| "unknown".to_string(), |m| m.to_string());
        if !enabled
            && let Ok(gis) = self.list_gis(g)
            && !gis.is_empty()
        {
            let names: Vec<String> = gis.iter().map(|gi| self.gi_label(g, gi)).collect();
            return BackendError::InUse {
                gpu: g.gref.clone(),
                what: format!(
                    "cannot disable MIG while GPU instances exist: {}; destroy them first (MIG mode is {now})",
                    names.join(", ")
                ),
            };
        }
        if code == Some(rc::RESET_REQUIRED) {
            return BackendError::InUse {
                gpu: g.gref.clone(),
                what: format!(
                    "MIG mode {word} is pending (now {now}): it takes effect after a GPU reset (nvidia-smi -r -i {}) \
                     or a reboot",
                    g.index
                ),
            };
        }
        let by = match self.holders(g, |_| true) {
            Ok(Some(by)) => by,
            Ok(None) => "another client (nvidia-persistenced, dcgm, a monitoring agent, …)".to_string(),
            Err(why) => why,
        };
        BackendError::InUse {
            gpu: g.gref.clone(),
            what: format!(
                "MIG mode {word} is pending (now {now}): the GPU is in use by {by}; stop them and set the mode again"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn the_backend_is_send_and_sync() {
        assert_send_sync::<NvmlBackend>();
    }

    #[test]
    fn a_missing_library_is_its_own_error() {
        let e = NvmlBackend::open(Some(Path::new("/nonexistent/libnvidia-ml.so.1"))).unwrap_err();
        assert_eq!(e.kind(), "library_not_found", "{e}");
        let msg = e.to_string();
        assert!(msg.contains("/nonexistent/libnvidia-ml.so.1") && msg.contains("absent"), "{msg}");
    }

    #[test]
    fn a_library_that_is_not_nvml_is_not_found_either() {
        // libc loads but has no nvmlInit_v2.
        let e = NvmlBackend::open(Some(Path::new("libc.so.6"))).unwrap_err();
        assert_eq!(e.kind(), "library_not_found", "{e}");
        assert!(e.to_string().contains("nvmlInit_v2"), "{e}");
    }

    #[test]
    fn return_codes_have_names() {
        assert_eq!(return_code_name(rc::GPU_IS_LOST), "NVML_ERROR_GPU_IS_LOST");
        assert_eq!(return_code_name(rc::INSUFFICIENT_RESOURCES), "NVML_ERROR_INSUFFICIENT_RESOURCES");
        assert_eq!(return_code_name(12345), "an unknown NVML return code");
        assert_eq!(safe_fail(NvmlError::GpuLost, "f"), Fail::Code("f", rc::GPU_IS_LOST));
        assert_eq!(safe_fail(NvmlError::FailedToLoadSymbol("x".into()), "f"), Fail::Missing("f"));
    }

    #[test]
    fn go_nvlib_names() {
        let a100 = 40 * 1024 * 1024 * 1024u64;
        assert_eq!(nvlib_profile_name(0, 1, 4864, a100), "1g.5gb");
        assert_eq!(nvlib_profile_name(7, 1, 4864, a100), "1g.5gb+me");
        assert_eq!(nvlib_profile_name(2, 3, 19968, a100), "3g.20gb");
        assert_eq!(nvlib_profile_name(4, 7, 40192, a100), "7g.40gb");
        let h100 = 80 * 1024 * 1024 * 1024u64;
        assert_eq!(nvlib_profile_name(9, 1, 19968, h100), "1g.20gb");
        assert_eq!(nvlib_profile_name(13, 1, 100, 0), "1g.1gb-me");
    }
}
