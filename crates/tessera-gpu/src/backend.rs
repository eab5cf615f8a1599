//! The backend seam: one trait shaped after NVML's MIG API, so the simulated node and the real
//! NVML backend are interchangeable behind `&dyn MigBackend`.
//!
//! The trait speaks NVML's two id spaces as NVML does: GPU-instance and compute-instance
//! *profile ids* (`nvmlGpuInstanceProfileInfo_t.id`, the numbers `nvidia-smi mig -lgip` prints),
//! and driver-assigned *instance ids* (the live key). Placements are in placement units for GPU
//! instances and in compute slices for compute instances. Every method takes `&self`;
//! implementations do their own locking so one backend can be shared across threads.
//!
//! Errors mirror NVML's return codes (`NVML_ERROR_NO_PERMISSION`, `…_NOT_SUPPORTED`,
//! `…_INSUFFICIENT_RESOURCES`, `…_IN_USE`, `…_NOT_FOUND`, `…_INVALID_ARGUMENT`, `…_GPU_IS_LOST`)
//! plus the simulated node's own state-file failures, and name the GPU by index and UUID.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tessera_mig::{GpuModel, catalog};

/// One Xid error as NVML reports it (`nvmlEventData_t` of an `nvmlEventTypeXidCriticalError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct XidEvent {
    /// NVML index of the GPU.
    pub gpu: u32,
    /// The Xid number.
    pub xid: u64,
    /// The GPU instance it is contained to, when the driver says (MIG only).
    pub gpu_instance_id: Option<u32>,
    /// The compute instance it is contained to, when the driver says (MIG only).
    pub compute_instance_id: Option<u32>,
}

impl fmt::Display for XidEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Xid {} on GPU {}", self.xid, self.gpu)?;
        match (self.gpu_instance_id, self.compute_instance_id) {
            (Some(gi), Some(ci)) => write!(f, " (GPU instance {gi}, compute instance {ci})"),
            (Some(gi), None) => write!(f, " (GPU instance {gi})"),
            _ => Ok(()),
        }
    }
}

/// Which implementation stands behind a [`MigBackend`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BackendKind {
    /// The simulated node ([`crate::SimBackend`]).
    #[serde(rename = "sim")]
    Simulated,
    /// NVIDIA's NVML library.
    #[serde(rename = "nvml")]
    Nvml,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::Simulated => "sim",
            BackendKind::Nvml => "nvml",
        })
    }
}

/// A GPU's MIG mode: what is in force now and what was last asked for.
///
/// They differ while a mode change waits for the GPU to become idle (or to be reset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MigMode {
    pub current: bool,
    pub pending: bool,
}

impl fmt::Display for MigMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = |on: bool| if on { "enabled" } else { "disabled" };
        if self.current == self.pending {
            f.write_str(word(self.current))
        } else {
            write!(f, "{} ({} pending)", word(self.current), word(self.pending))
        }
    }
}

/// One GPU as the driver describes it (`nvmlDeviceGet*`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// NVML index.
    pub index: u32,
    /// `/dev/nvidia<minor>`.
    pub minor_number: u32,
    /// `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    pub uuid: String,
    /// NVML product name (`nvmlDeviceGetName`), e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// `00000000:18:00.0`.
    pub pci_bus_id: String,
    /// PCI device id, e.g. `0x2330`.
    pub pci_device_id: u16,
    /// The board's PCI subsystem id, `(subsystem device << 16) | subsystem vendor`
    /// (`nvmlPciInfo_t.pciSubSystemId`, e.g. `0x16C110DE`); 0 when unknown. mig-parted's
    /// `device-filter` can name it to tell boards with one device id apart.
    #[serde(default)]
    pub pci_subsystem_id: u32,
    /// Host NUMA node, `None` where the platform does not say (sysfs `numa_node` = -1).
    pub numa_node: Option<u32>,
    /// Host CPUs local to the GPU.
    pub local_cpus: Vec<u32>,
    pub memory_total_mib: u64,
}

impl DeviceInfo {
    /// The catalog model of this GPU: by PCI device id, then by product name.
    pub fn model(&self) -> Option<&'static GpuModel> {
        let cat = catalog();
        cat.model_by_pci_device_id(self.pci_device_id).or_else(|| cat.model(&self.name).ok())
    }

    /// How errors name this GPU.
    pub fn gpu_ref(&self) -> GpuRef {
        GpuRef { index: self.index, uuid: Some(self.uuid.clone()) }
    }
}

/// A GPU-instance profile as the driver reports it (`nvmlGpuInstanceProfileInfo_v3_t`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GpuInstanceProfileInfo {
    /// Profile id (`info.id`, what `nvidia-smi mig -lgip` prints).
    pub id: u32,
    /// `3g.20gb`, `1g.5gb+me`, …
    pub name: String,
    pub compute_slices: u8,
    pub memory_slices: u8,
    pub memory_mib: u64,
    /// Most instances of this profile on the GPU (`instanceCount`).
    pub max_count: u8,
    /// Width of a placement in placement units.
    pub placement_size: u8,
    pub sm_count: u32,
    pub copy_engines: u32,
    pub decoders: u32,
    pub encoders: u32,
    pub jpegs: u32,
    pub ofas: u32,
}

/// A placement: `[start, start + size)` in placement units (GPU instances) or compute slices
/// (compute instances).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PlacementRange {
    pub start: u8,
    pub size: u8,
}

impl fmt::Display for PlacementRange {
    /// `nvidia-smi`'s `start:size`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.start, self.size)
    }
}

/// A GPU instance that exists (`nvmlGpuInstanceInfo_t`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GpuInstanceInfo {
    /// Driver-assigned GPU instance id.
    pub id: u32,
    pub profile_id: u32,
    pub placement: PlacementRange,
    /// Minor of `/dev/nvidia-caps/nvidia-cap<minor>` granting access to this GPU instance;
    /// `None` where the driver does not publish `/proc/driver/nvidia-caps/mig-minors`.
    pub caps_minor: Option<u32>,
}

/// A compute instance that exists (`nvmlComputeInstanceInfo_t`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ComputeInstanceInfo {
    /// Driver-assigned compute instance id, unique within its GPU instance.
    pub id: u32,
    pub gpu_instance_id: u32,
    /// Compute-instance profile id.
    pub profile_id: u32,
    /// Placement in compute slices of the GPU instance.
    pub placement: PlacementRange,
    /// `MIG-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`: what `CUDA_VISIBLE_DEVICES` takes.
    pub uuid: String,
    /// Minor of `/dev/nvidia-caps/nvidia-cap<minor>` granting access to this compute instance;
    /// `None` where the driver does not publish `/proc/driver/nvidia-caps/mig-minors`.
    pub caps_minor: Option<u32>,
}

/// A process using a GPU (`nvmlProcessInfo_t`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub pid: u32,
    pub name: String,
    /// The GPU instance it runs in, when MIG is on.
    pub gpu_instance_id: Option<u32>,
    /// The compute instance it runs in, when MIG is on.
    pub compute_instance_id: Option<u32>,
    pub used_memory_mib: u64,
}

impl fmt::Display for ProcessInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {} ({})", self.pid, self.name)
    }
}

/// How an error names a GPU: its index, and its UUID where known.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GpuRef {
    pub index: u32,
    pub uuid: Option<String>,
}

impl GpuRef {
    /// A GPU known only by index (e.g. an index with no GPU behind it).
    pub fn index(index: u32) -> Self {
        GpuRef { index, uuid: None }
    }
}

impl fmt::Display for GpuRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.uuid {
            Some(uuid) => write!(f, "GPU {} ({uuid})", self.index),
            None => write!(f, "GPU {}", self.index),
        }
    }
}

/// What went wrong in a backend call. Each variant matches an NVML return code, except `State`
/// and `Io`, which belong to the simulated node's state file, `LibraryNotFound` (NVML could not
/// be loaded at all) and `Driver` (any other NVML return code, named as NVML names it).
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// `NVML_ERROR_NO_PERMISSION`: the caller may not do this (MIG changes need root or the
    /// `mig/config` capability).
    #[error("no permission to {op}: run as root or grant the mig/config capability")]
    NoPermission { op: String },
    /// `NVML_ERROR_NOT_SUPPORTED`: e.g. a GPU without MIG, or MIG disabled.
    #[error("{gpu}: not supported: {what}")]
    NotSupported { gpu: GpuRef, what: String },
    /// `NVML_ERROR_INSUFFICIENT_RESOURCES`, worded like `nvidia-smi`.
    #[error("{gpu}: unable to create {profile}{}: Insufficient Resources ({detail})", at_placement(.placement))]
    InsufficientResources { gpu: GpuRef, profile: String, placement: Option<u8>, detail: String },
    /// `NVML_ERROR_IN_USE`: names the instance and the processes.
    #[error("{gpu}: in use: {what}")]
    InUse { gpu: GpuRef, what: String },
    /// `NVML_ERROR_NOT_FOUND`.
    #[error("{gpu}: not found: {what}")]
    NotFound { gpu: GpuRef, what: String },
    /// `NVML_ERROR_INVALID_ARGUMENT`.
    #[error("invalid argument: {what}")]
    InvalidArgument { what: String },
    /// `NVML_ERROR_GPU_IS_LOST`: the GPU fell off the bus.
    #[error("{gpu} is lost (fell off the bus or stopped responding)")]
    GpuLost { gpu: GpuRef },
    /// The simulated node's state file is unreadable, corrupt, for another node, or locked.
    #[error("simulated node state {}: {detail}", .path.display())]
    State { path: PathBuf, detail: String },
    /// An I/O error on a file the backend needs.
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The NVML library could not be loaded: there is no NVIDIA driver on this machine (or not at
    /// that path). The CLI falls back to the simulated node on this error, and on no other.
    #[error("the NVML library {library} is absent or cannot be loaded ({detail}); is the NVIDIA driver installed?")]
    LibraryNotFound { library: String, detail: String },
    /// Any other NVML return code (`NVML_ERROR_UNKNOWN`, `…_DRIVER_NOT_LOADED`, `…_TIMEOUT`,
    /// `…_RESET_REQUIRED` outside a MIG-mode change, …).
    #[error("{context}: {function} returned {code}: {message}")]
    Driver {
        /// What was being done, naming the GPU.
        context: String,
        /// The NVML function that failed.
        function: String,
        /// NVML's name of the return code, e.g. `NVML_ERROR_UNKNOWN`.
        code: String,
        /// `nvmlErrorString`'s text.
        message: String,
    },
}

fn at_placement(p: &Option<u8>) -> String {
    p.map(|s| format!(" at placement {s}")).unwrap_or_default()
}

impl BackendError {
    /// A stable, machine-readable name of the variant (`in_use`, `insufficient_resources`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            BackendError::NoPermission { .. } => "no_permission",
            BackendError::NotSupported { .. } => "not_supported",
            BackendError::InsufficientResources { .. } => "insufficient_resources",
            BackendError::InUse { .. } => "in_use",
            BackendError::NotFound { .. } => "not_found",
            BackendError::InvalidArgument { .. } => "invalid_argument",
            BackendError::GpuLost { .. } => "gpu_lost",
            BackendError::State { .. } => "state",
            BackendError::Io { .. } => "io",
            BackendError::LibraryNotFound { .. } => "library_not_found",
            BackendError::Driver { .. } => "driver",
        }
    }
}

/// Serialized as `{"kind": "in_use", "message": "GPU 0 (GPU-…): in use: …"}`.
impl Serialize for BackendError {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("BackendError", 2)?;
        s.serialize_field("kind", self.kind())?;
        s.serialize_field("message", &self.to_string())?;
        s.end()
    }
}

/// The GPU with index `gpu`, or `NotFound` naming how many GPUs the node has. Another GPU that
/// fails (e.g. one that fell off the bus) does not make this one unreadable: only this GPU's own
/// error is returned.
pub fn device_by_index(backend: &dyn MigBackend, gpu: u32) -> Result<DeviceInfo, BackendError> {
    let devices = backend.devices_partial()?;
    let n = devices.len();
    for d in devices {
        match d {
            Ok(d) if d.index == gpu => return Ok(d),
            Err(f) if f.gpu.index == gpu => return Err(f.error),
            _ => {}
        }
    }
    Err(BackendError::NotFound {
        gpu: GpuRef::index(gpu),
        what: format!("no GPU with index {gpu}; the node has {n} GPU(s)"),
    })
}

/// What the driver asks to be done after an uncorrectable error: NVML's
/// `nvmlDeviceGpuRecoveryAction_t` (`NVML_GPU_RECOVERY_ACTION_*`, read through
/// `nvmlDeviceGetFieldValues` with `NVML_FI_DEV_GET_GPU_RECOVERY_ACTION`, field 230).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryAction {
    /// `NVML_GPU_RECOVERY_ACTION_NONE` (0): nothing to do; new processes may use the GPU.
    None,
    /// `NVML_GPU_RECOVERY_ACTION_GPU_RESET` (1): stop every process and reset the GPU
    /// (`nvidia-smi -r`).
    GpuReset,
    /// `NVML_GPU_RECOVERY_ACTION_NODE_REBOOT` (2): the OS may be inconsistent; reboot the node.
    NodeReboot,
    /// `NVML_GPU_RECOVERY_ACTION_DRAIN_P2P` (3): stop peer-to-peer traffic to the GPU.
    DrainP2p,
    /// `NVML_GPU_RECOVERY_ACTION_DRAIN_AND_RESET` (4): drain peer-to-peer traffic, then reset.
    DrainAndReset,
}

impl RecoveryAction {
    /// The action for NVML's value; `None` (unknown) for a value this build does not know.
    pub fn from_nvml(value: u32) -> Option<RecoveryAction> {
        Some(match value {
            0 => RecoveryAction::None,
            1 => RecoveryAction::GpuReset,
            2 => RecoveryAction::NodeReboot,
            3 => RecoveryAction::DrainP2p,
            4 => RecoveryAction::DrainAndReset,
            _ => return Option::None,
        })
    }

    /// NVML's value.
    pub fn to_nvml(self) -> u32 {
        match self {
            RecoveryAction::None => 0,
            RecoveryAction::GpuReset => 1,
            RecoveryAction::NodeReboot => 2,
            RecoveryAction::DrainP2p => 3,
            RecoveryAction::DrainAndReset => 4,
        }
    }
}

impl fmt::Display for RecoveryAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecoveryAction::None => "none",
            RecoveryAction::GpuReset => "GPU reset",
            RecoveryAction::NodeReboot => "node reboot",
            RecoveryAction::DrainP2p => "drain peer-to-peer traffic",
            RecoveryAction::DrainAndReset => "drain peer-to-peer traffic and reset",
        })
    }
}

/// What [`MigBackend::observe`] sees of a GPU's recovery state. Each part is `None` where the
/// backend cannot tell (an older driver, a field NVML does not support).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct GpuObservation {
    /// How many times the GPU has been reset (the simulated node counts; NVML does not say).
    pub reset_count: Option<u64>,
    /// What the driver asks to be done (`NVML_FI_DEV_GET_GPU_RECOVERY_ACTION`).
    pub recovery_action: Option<RecoveryAction>,
    /// The node's boot (`/proc/sys/kernel/random/boot_id` for NVML): it changes at a reboot.
    pub boot_id: Option<String>,
}

/// A GPU performance monitoring (GPM) metric Tessera reads: Hopper and newer GPUs give them per
/// GPU and per MIG GPU instance (`nvmlGpmMetricsGet`), where DCGM's profiling fields need DCGM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GpmMetric {
    /// Share of SMs that were busy (`NVML_GPM_METRIC_SM_UTIL`).
    SmActive,
    /// Warps active over the theoretical maximum (`NVML_GPM_METRIC_SM_OCCUPANCY`).
    SmOccupancy,
    /// Share of time the SMs were doing any tensor operations (`NVML_GPM_METRIC_ANY_TENSOR_UTIL`).
    TensorActive,
    /// DRAM bandwidth used over the theoretical maximum (`NVML_GPM_METRIC_DRAM_BW_UTIL`).
    DramActive,
    /// Share of time the SMs were doing non-tensor FP64 math (`NVML_GPM_METRIC_FP64_UTIL`).
    Fp64Active,
    /// Share of time the SMs were doing non-tensor FP32 math (`NVML_GPM_METRIC_FP32_UTIL`).
    Fp32Active,
    /// Share of time the SMs were doing non-tensor FP16 math (`NVML_GPM_METRIC_FP16_UTIL`).
    Fp16Active,
}

impl GpmMetric {
    /// Every metric, in a fixed order (its [`Self::index`]).
    pub const ALL: [GpmMetric; 7] = [
        GpmMetric::SmActive,
        GpmMetric::SmOccupancy,
        GpmMetric::TensorActive,
        GpmMetric::DramActive,
        GpmMetric::Fp64Active,
        GpmMetric::Fp32Active,
        GpmMetric::Fp16Active,
    ];

    /// Its position in [`Self::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// NVML's `nvmlGpmMetricId_t` (nvml.h: `NVML_GPM_METRIC_SM_UTIL` = 2, `_SM_OCCUPANCY` = 3,
    /// `_ANY_TENSOR_UTIL` = 5, `_DRAM_BW_UTIL` = 10, `_FP64_UTIL` = 11, `_FP32_UTIL` = 12,
    /// `_FP16_UTIL` = 13).
    pub fn nvml_id(self) -> u32 {
        match self {
            GpmMetric::SmActive => 2,
            GpmMetric::SmOccupancy => 3,
            GpmMetric::TensorActive => 5,
            GpmMetric::DramActive => 10,
            GpmMetric::Fp64Active => 11,
            GpmMetric::Fp32Active => 12,
            GpmMetric::Fp16Active => 13,
        }
    }

    /// The metric of an NVML id, if it is one of these.
    pub fn from_nvml_id(id: u32) -> Option<GpmMetric> {
        GpmMetric::ALL.into_iter().find(|m| m.nvml_id() == id)
    }

    /// `sm_active`, `sm_occupancy`, `tensor_active`, `dram_active`, `fp64_active`, … (the
    /// metric names' stem).
    pub fn name(self) -> &'static str {
        match self {
            GpmMetric::SmActive => "sm_active",
            GpmMetric::SmOccupancy => "sm_occupancy",
            GpmMetric::TensorActive => "tensor_active",
            GpmMetric::DramActive => "dram_active",
            GpmMetric::Fp64Active => "fp64_active",
            GpmMetric::Fp32Active => "fp32_active",
            GpmMetric::Fp16Active => "fp16_active",
        }
    }

    /// The DCGM profiling field dcgm-exporter shows for the same quantity (a ratio 0..1 there too).
    pub fn dcgm_field(self) -> &'static str {
        match self {
            GpmMetric::SmActive => "DCGM_FI_PROF_SM_ACTIVE",
            GpmMetric::SmOccupancy => "DCGM_FI_PROF_SM_OCCUPANCY",
            GpmMetric::TensorActive => "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
            GpmMetric::DramActive => "DCGM_FI_PROF_DRAM_ACTIVE",
            GpmMetric::Fp64Active => "DCGM_FI_PROF_PIPE_FP64_ACTIVE",
            GpmMetric::Fp32Active => "DCGM_FI_PROF_PIPE_FP32_ACTIVE",
            GpmMetric::Fp16Active => "DCGM_FI_PROF_PIPE_FP16_ACTIVE",
        }
    }
}

/// The GPM metrics of a GPU or one of its GPU instances over the interval between two samples
/// (`nvmlGpmMetricsGet`). Each value is a ratio from 0 to 1 (NVML reports percent; this is that
/// divided by 100, as DCGM's profiling fields are), `None` where the driver did not give that
/// metric (its own `nvmlReturn` was not `NVML_SUCCESS`).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct GpmMetrics {
    /// How long the interval between the two samples was, in milliseconds.
    pub interval_ms: u64,
    pub sm_active: Option<f64>,
    pub sm_occupancy: Option<f64>,
    pub tensor_active: Option<f64>,
    pub dram_active: Option<f64>,
    pub fp64_active: Option<f64>,
    pub fp32_active: Option<f64>,
    pub fp16_active: Option<f64>,
}

impl GpmMetrics {
    /// The value of one metric.
    pub fn get(&self, metric: GpmMetric) -> Option<f64> {
        match metric {
            GpmMetric::SmActive => self.sm_active,
            GpmMetric::SmOccupancy => self.sm_occupancy,
            GpmMetric::TensorActive => self.tensor_active,
            GpmMetric::DramActive => self.dram_active,
            GpmMetric::Fp64Active => self.fp64_active,
            GpmMetric::Fp32Active => self.fp32_active,
            GpmMetric::Fp16Active => self.fp16_active,
        }
    }

    /// Set the value of one metric.
    pub fn set(&mut self, metric: GpmMetric, value: Option<f64>) {
        let slot = match metric {
            GpmMetric::SmActive => &mut self.sm_active,
            GpmMetric::SmOccupancy => &mut self.sm_occupancy,
            GpmMetric::TensorActive => &mut self.tensor_active,
            GpmMetric::DramActive => &mut self.dram_active,
            GpmMetric::Fp64Active => &mut self.fp64_active,
            GpmMetric::Fp32Active => &mut self.fp32_active,
            GpmMetric::Fp16Active => &mut self.fp16_active,
        };
        *slot = value;
    }
}

/// A GPU that could not be read, and why.
#[derive(Debug, Serialize)]
pub struct FailedGpu {
    /// The GPU by index, and by UUID where it was known.
    pub gpu: GpuRef,
    /// What was read of it before the failure, if anything.
    pub device: Option<DeviceInfo>,
    pub error: BackendError,
}

impl fmt::Display for FailedGpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.error)
    }
}

/// The MIG operations Tessera needs, shaped after NVML. Object-safe; `&self` everywhere.
pub trait MigBackend: Send + Sync + fmt::Debug {
    /// Which implementation this is.
    fn kind(&self) -> BackendKind;
    /// Every GPU of the node, by index.
    fn devices(&self) -> Result<Vec<DeviceInfo>, BackendError>;
    /// The GPU's MIG mode.
    fn mig_mode(&self, gpu: u32) -> Result<MigMode, BackendError>;
    /// Ask for MIG on or off. `Ok` with the mode after the call: the change took effect
    /// (`current`), or it was accepted and waits for a GPU reset (`pending` differs from
    /// `current`: Ampere, NVML's activation status `RESET_REQUIRED`; see [`Self::reset_gpu`]).
    /// While processes use the GPU the change stays pending and `InUse` is returned, naming them.
    fn set_mig_mode(&self, gpu: u32, enabled: bool) -> Result<MigMode, BackendError>;
    /// The GPU-instance profiles, as the driver reports them.
    fn gpu_instance_profiles(&self, gpu: u32) -> Result<Vec<GpuInstanceProfileInfo>, BackendError>;
    /// Every legal placement of a profile, occupied or not
    /// (`nvmlDeviceGetGpuInstancePossiblePlacements_v2`).
    fn possible_placements(&self, gpu: u32, profile_id: u32) -> Result<Vec<PlacementRange>, BackendError>;
    /// Create a GPU instance; `placement` `None` lets the driver choose (avoid that).
    fn create_gpu_instance(
        &self,
        gpu: u32,
        profile_id: u32,
        placement: Option<u8>,
    ) -> Result<GpuInstanceInfo, BackendError>;
    /// Create a compute instance of a compute-instance profile inside a GPU instance.
    fn create_compute_instance(
        &self,
        gpu: u32,
        gpu_instance_id: u32,
        ci_profile_id: u32,
    ) -> Result<ComputeInstanceInfo, BackendError>;
    /// Destroy a compute instance; refused while processes use it.
    fn destroy_compute_instance(
        &self,
        gpu: u32,
        gpu_instance_id: u32,
        compute_instance_id: u32,
    ) -> Result<(), BackendError>;
    /// Destroy a GPU instance; refused while it has compute instances or processes.
    fn destroy_gpu_instance(&self, gpu: u32, gpu_instance_id: u32) -> Result<(), BackendError>;
    /// The GPU instances that exist, by id.
    fn gpu_instances(&self, gpu: u32) -> Result<Vec<GpuInstanceInfo>, BackendError>;
    /// The compute instances of one GPU instance, by id.
    fn compute_instances(&self, gpu: u32, gpu_instance_id: u32) -> Result<Vec<ComputeInstanceInfo>, BackendError>;
    /// Processes running on the GPU.
    fn processes(&self, gpu: u32) -> Result<Vec<ProcessInfo>, BackendError>;
    /// Xid errors reported since the last call, waiting up to `timeout_ms` for the first one
    /// when none is pending (never longer). Returns every event pending, possibly none.
    ///
    /// NVML registers for Xid events on the first call, so Xids raised before it are not seen;
    /// the simulated node keeps raised Xids until a call consumes them. The call blocks: async
    /// callers run it under `spawn_blocking`.
    fn wait_xid_events(&self, timeout_ms: u32) -> Result<Vec<XidEvent>, BackendError>;
    /// The GPU's recovery state: its reset count, the driver's recovery action and the node's
    /// boot id. An error (e.g. [`BackendError::GpuLost`]) means the GPU does not answer: a failed
    /// health probe.
    fn observe(&self, gpu: u32) -> Result<GpuObservation, BackendError>;
    /// Reset the GPU, as `nvidia-smi --gpu-reset -i N` does: its instances are gone and a
    /// pending MIG mode takes effect. Refused with `InUse` while processes use it, and with
    /// `NotSupported` where the platform does not let it be reset (a passthrough VM: a reboot
    /// of the VM is needed then). The one way anything in Tessera resets a GPU.
    fn reset_gpu(&self, gpu: u32) -> Result<(), BackendError>;
    /// Every GPU of the node, each read on its own, so one GPU that fails (lost, or refusing a
    /// call) does not hide the others. `Err` only when the node cannot be enumerated at all.
    /// The default reads [`Self::devices`], which is all or nothing.
    fn devices_partial(&self) -> Result<Vec<Result<DeviceInfo, FailedGpu>>, BackendError> {
        Ok(self.devices()?.into_iter().map(Ok).collect())
    }
    /// Whether the GPU has GPU performance monitoring (GPM: Hopper and newer,
    /// `nvmlGpmQueryDeviceSupport`). The default, for a backend without GPM: no.
    fn gpm_supported(&self, gpu: u32) -> Result<bool, BackendError> {
        let _ = gpu;
        Ok(false)
    }
    /// Take a GPM sample of GPU `gpu`, of its GPU instance `gpu_instance_id` when given
    /// (`nvmlGpmMigSampleGet`) or else of the whole GPU (`nvmlGpmSampleGet`), and return the
    /// metrics over the interval since this backend's previous sample of the same GPU or
    /// instance (`nvmlGpmMetricsGet`: the arithmetic is the driver's). `Ok(None)` for the first
    /// sample (there is no interval yet). The backend keeps the last sample of each; a failed
    /// sample forgets it. Callers space samples by more than 100 ms (NVML's own refresh).
    ///
    /// Errors: `NotSupported` on a GPU without GPM (Ampere: A100, A30), or for a GPU instance
    /// while MIG is off; `NotFound` for a GPU instance that does not exist. The default, for a
    /// backend without GPM: `NotSupported`.
    fn gpm_sample(&self, gpu: u32, gpu_instance_id: Option<u32>) -> Result<Option<GpmMetrics>, BackendError> {
        let _ = gpu_instance_id;
        Err(BackendError::NotSupported {
            gpu: GpuRef::index(gpu),
            what: format!("GPU performance monitoring (GPM) is not available through the {} backend", self.kind()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_and_mode_display() {
        assert_eq!(BackendKind::Simulated.to_string(), "sim");
        assert_eq!(BackendKind::Nvml.to_string(), "nvml");
        assert_eq!(serde_json::to_string(&BackendKind::Simulated).unwrap(), "\"sim\"");
        assert_eq!(MigMode { current: true, pending: true }.to_string(), "enabled");
        assert_eq!(MigMode { current: false, pending: true }.to_string(), "disabled (enabled pending)");
    }

    #[test]
    fn errors_name_the_gpu_and_serialize() {
        let gpu = GpuRef { index: 2, uuid: Some("GPU-1234".into()) };
        let e = BackendError::InsufficientResources {
            gpu,
            profile: "3g.20gb (profile 9)".into(),
            placement: Some(4),
            detail: "overlaps 1g.5gb@4".into(),
        };
        let msg = e.to_string();
        assert!(msg.contains("GPU 2 (GPU-1234)"), "{msg}");
        assert!(msg.contains("Insufficient Resources"), "{msg}");
        assert!(msg.contains("at placement 4"), "{msg}");
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["kind"], "insufficient_resources");
        assert_eq!(json["message"], msg);
        assert!(BackendError::GpuLost { gpu: GpuRef::index(7) }.to_string().starts_with("GPU 7 is lost"));
    }

    #[test]
    fn device_model_by_pci_id_then_name() {
        let mut d = DeviceInfo {
            index: 0,
            minor_number: 0,
            uuid: "GPU-x".into(),
            name: "NVIDIA A30".into(),
            pci_bus_id: "00000000:18:00.0".into(),
            pci_device_id: 0x2330,
            pci_subsystem_id: 0,
            numa_node: None,
            local_cpus: vec![],
            memory_total_mib: 0,
        };
        assert_eq!(d.model().map(|m| m.name.as_str()), Some("H100-80GB"));
        d.pci_device_id = 0xffff;
        assert_eq!(d.model().map(|m| m.name.as_str()), Some("A30-24GB"));
        d.name = "Some Other GPU".into();
        assert!(d.model().is_none());
    }
}
