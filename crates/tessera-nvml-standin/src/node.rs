//! NVML's semantics over the simulated node: the library's global state (initialisation
//! refcount, configuration, the [`SimBackend`], event sets) and one method per NVML operation,
//! taking handles as numbers and returning [`NvmlResult`]s. Everything here is safe code; the FFI
//! modules only turn pointers into [`Handle`]s and results into writes through the caller's
//! pointers.
//!
//! Checks run in NVML's order: initialised (`UNINITIALIZED`), the fault plan (a faulted call does
//! nothing), the handle (`INVALID_ARGUMENT` for one the library did not hand out or whose instance
//! is gone), a lost GPU (`GPU_IS_LOST`: in `TESSERA_STANDIN_LOST`, or fallen off the bus on the
//! simulated node after an Xid 79), a GPU without MIG (`NOT_SUPPORTED` for MIG calls), then
//! `NO_PERMISSION` for mutating calls, then the operation itself on the simulated node, whose
//! errors map by [`tessera_gpu::BackendError::kind`].
//!
//! Three behaviours of real drivers are modelled on request (see [`crate::config`]): a caller that
//! is not root (no aggregate process list of a GPU in MIG mode, no MIG mode change), MIG device
//! UUIDs that cannot be read (and the pre-R470 `MIG-GPU-<uuid>/<gi>/<ci>` names of an old
//! driver, always), and a GPU rebound by a MIG mode change (its minor number moves).

use std::collections::{BTreeMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nvml_wrapper_sys::bindings::field_id::NVML_FI_DEV_GET_GPU_RECOVERY_ACTION;
use nvml_wrapper_sys::bindings::*;
use tessera_gpu::{
    BackendError, ComputeInstanceInfo, DeviceInfo, GpuInstanceInfo, GpuInstanceProfileInfo, MigBackend, NodeSpec,
    PlacementRange, ProcessInfo, SimBackend,
};
use tessera_mig::{GpuModel, Instance, Profile};

use crate::codes::*;
use crate::config::Config;
use crate::handles::{self, Handle, HandleKey};
use crate::profiles::{self, CiSlot};
use crate::xid::XidFeed;

mod gpm;

pub use gpm::{GPM_METRIC_MAX, GPM_METRICS_GET_VERSION, GPM_SUPPORT_VERSION, GpmValues};

/// `gpuInstanceId` / `computeInstanceId` when a process or an event has none.
pub const NO_INSTANCE: u32 = 0xFFFF_FFFF;
/// The event types a GPU supports.
pub const SUPPORTED_EVENTS: u64 = nvmlEventTypeXidCriticalError as u64;
/// How often a waiting `nvmlEventSetWait_v2` looks at the Xid file and the simulated node.
const EVENT_POLL: Duration = Duration::from_millis(10);
const MIB: u64 = 1024 * 1024;

/// The library's state between `nvmlInit_v2` and the last `nvmlShutdown`.
#[derive(Debug)]
struct Lib {
    refcount: u32,
    node: Option<Node>,
}

static LIB: Mutex<Lib> = Mutex::new(Lib { refcount: 0, node: None });

fn lock() -> MutexGuard<'static, Lib> {
    LIB.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Run `f`, turning a panic into `NVML_ERROR_UNKNOWN`: nothing unwinds into C.
pub fn guard<T>(f: impl FnOnce() -> NvmlResult<T>) -> NvmlResult<T> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or(Err(UNKNOWN))
}

/// The C return value of a result.
pub fn status(r: NvmlResult<()>) -> Ret {
    r.err().unwrap_or(SUCCESS)
}

/// One call of the exported `function`: checks initialisation and the fault plan, then runs `f`
/// on the node (under the library lock, with panics caught).
pub fn call<T>(function: &str, f: impl FnOnce(&mut Node) -> NvmlResult<T>) -> NvmlResult<T> {
    guard(|| {
        let mut lib = lock();
        let node = lib.node.as_mut().ok_or(UNINITIALIZED)?;
        if let Some(e) = node.config.faults.on_call(function) {
            return Err(e);
        }
        f(node)
    })
}

/// One call of an exported function that works before `nvmlInit_v2` too: counts the call
/// against the fault plan when the library is initialised, then runs `f` without the lock.
pub fn call_any<T>(function: &str, f: impl FnOnce() -> NvmlResult<T>) -> NvmlResult<T> {
    guard(|| {
        if let Some(node) = lock().node.as_mut()
            && let Some(e) = node.config.faults.on_call(function)
        {
            return Err(e);
        }
        f()
    })
}

/// Run `f` on the node without counting a call (the polls of a waiting call).
fn with_node<T>(f: impl FnOnce(&mut Node) -> NvmlResult<T>) -> NvmlResult<T> {
    guard(|| {
        let mut lib = lock();
        let node = lib.node.as_mut().ok_or(UNINITIALIZED)?;
        f(node)
    })
}

/// Whether the library is initialised.
pub fn initialized() -> bool {
    lock().node.is_some()
}

/// `nvmlInit_v2` / `nvmlInitWithFlags`: the first call reads the configuration and opens the
/// node (a fault rule may name any of `exports`); later ones only count.
pub fn init(function: &str, exports: &[&str]) -> Ret {
    status(guard(|| {
        let mut lib = lock();
        if let Some(node) = lib.node.as_mut() {
            if let Some(e) = node.config.faults.on_call(function) {
                return Err(e);
            }
            lib.refcount += 1;
            return Ok(());
        }
        let node = Config::from_env(exports).and_then(Node::new).map_err(|e| {
            eprintln!("tessera-nvml-standin: {function} failed: {e}");
            UNKNOWN
        })?;
        lib.node = Some(node);
        lib.refcount = 1;
        Ok(())
    }))
}

/// `nvmlShutdown`: drops everything when the count reaches zero.
pub fn shutdown(function: &str) -> Ret {
    status(guard(|| {
        let mut lib = lock();
        let node = lib.node.as_mut().ok_or(UNINITIALIZED)?;
        if let Some(e) = node.config.faults.on_call(function) {
            return Err(e);
        }
        lib.refcount = lib.refcount.saturating_sub(1);
        if lib.refcount == 0
            && let Some(node) = lib.node.take()
        {
            for set in node.event_sets.keys() {
                handles::free_event_set(*set);
            }
            for sample in node.gpm_samples.keys() {
                handles::free_gpm_sample(*sample);
            }
        }
        Ok(())
    }))
}

/// The driver version: the initialised library's, else what the environment says now (NVML
/// answers version queries before `nvmlInit_v2` too).
pub fn driver_version() -> NvmlResult<String> {
    guard(|| {
        if let Some(node) = lock().node.as_ref() {
            return Ok(node.config.driver.text.clone());
        }
        let text = std::env::var(crate::config::ENV_DRIVER_VERSION)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| crate::config::DEFAULT_DRIVER_VERSION.to_string());
        crate::config::DriverVersion::parse(&text).map(|d| d.text).map_err(|e| {
            eprintln!("tessera-nvml-standin: {e}");
            UNKNOWN
        })
    })
}

/// `nvmlSystemGetNVMLVersion`: `<CUDA major>.<driver version>`, e.g. `13.580.65.06`.
pub fn nvml_version() -> NvmlResult<String> {
    let driver = driver_version()?;
    let major = profiles::driver_major(&driver).unwrap_or(0);
    Ok(format!("{}.{driver}", profiles::cuda_version(major) / 1000))
}

/// `nvmlSystemGetCudaDriverVersion_v2`.
pub fn cuda_driver_version() -> NvmlResult<i32> {
    let driver = driver_version()?;
    Ok(profiles::cuda_version(profiles::driver_major(&driver).unwrap_or(0)))
}

/// `nvmlEventSetWait_v2`: an event for `set`, polling the Xid file and the simulated node until
/// `timeout_ms` passes.
pub fn event_wait(function: &str, set: Handle, timeout_ms: u32, data_given: bool) -> NvmlResult<Event> {
    let first = call(function, |node| {
        if !data_given {
            return Err(INVALID_ARGUMENT);
        }
        node.next_event(set)
    })?;
    if let Some(ev) = first {
        return Ok(ev);
    }
    let deadline = Instant::now() + Duration::from_millis(u64::from(timeout_ms));
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(TIMEOUT);
        }
        std::thread::sleep(EVENT_POLL.min(deadline - now));
        if let Some(ev) = with_node(|node| node.next_event(set))? {
            return Ok(ev);
        }
    }
}

/// What a device handle stands for, checked against the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceRef {
    Gpu(u32),
    Mig(MigRef),
}

/// A MIG device that exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigRef {
    pub gpu: u32,
    pub gi: GpuInstanceInfo,
    pub ci: ComputeInstanceInfo,
}

/// A GPU instance that exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GiRef {
    pub gpu: u32,
    pub info: GpuInstanceInfo,
}

/// PCI facts of a GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pci {
    /// `00000000:18:00.0`.
    pub bus_id: String,
    /// `0000:18:00.0` (nvml.h's legacy format).
    pub bus_id_legacy: String,
    pub domain: u32,
    pub bus: u32,
    pub device: u32,
    /// Device id << 16 | vendor 0x10DE.
    pub pci_device_id: u32,
    pub pci_subsystem_id: u32,
}

/// Memory of a GPU or MIG device, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    pub total: u64,
    pub used: u64,
}

/// A GPU-instance profile as `nvmlDeviceGetGpuInstanceProfileInfo*` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GiProfile {
    pub info: GpuInstanceProfileInfo,
    /// `MIG 1g.10gb`.
    pub name: String,
    /// `NVML_GPU_INSTANCE_PROFILE_CAPS_*`.
    pub capabilities: u32,
}

/// A compute-instance profile as `nvmlGpuInstanceGetComputeInstanceProfileInfo*` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CiProfile {
    pub id: u32,
    pub slice_count: u32,
    pub instance_count: u32,
    pub multiprocessor_count: u32,
    pub copy_engines: u32,
    pub decoders: u32,
    pub encoders: u32,
    pub jpegs: u32,
    pub ofas: u32,
    /// `MIG 1c.3g.40gb`.
    pub name: String,
}

/// An event ready for delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// The GPU's handle.
    pub device: Handle,
    pub event_type: u64,
    pub data: u64,
    pub gpu_instance_id: u32,
    pub compute_instance_id: u32,
}

#[derive(Debug, Default)]
struct EventSet {
    /// Event types registered, per GPU.
    registered: BTreeMap<u32, u64>,
    queue: VecDeque<Event>,
}

/// The initialised library: configuration, simulated node, event sets.
#[derive(Debug)]
pub struct Node {
    config: Config,
    sim: SimBackend,
    devices: Vec<DeviceInfo>,
    models: Vec<&'static GpuModel>,
    xids: Option<XidFeed>,
    event_sets: BTreeMap<Handle, EventSet>,
    activity: Option<crate::activity::ActivityFeed>,
    /// GPM sample buffers by handle; `None` until a sample is read into one.
    gpm_samples: BTreeMap<Handle, Option<gpm::Sample>>,
    /// Per GPU, the MIG mode last seen and how often it changed since (`TESSERA_STANDIN_REBIND`:
    /// each change rebinds the GPU and moves its minor number).
    rebinds: std::cell::RefCell<BTreeMap<u32, (bool, u32)>>,
}

/// The pre-R470 name of a MIG device (`MIG-GPU-<uuid>/<gi>/<ci>`), which that driver's
/// `nvmlDeviceGetUUID` returns (MIG user guide, "MIG Device Names").
pub fn legacy_mig_uuid(gpu_uuid: &str, gi: u32, ci: u32) -> String {
    format!("MIG-{gpu_uuid}/{gi}/{ci}")
}

/// The first driver branch whose MIG devices have `MIG-<uuid>` names.
pub const MIG_UUID_DRIVER: u32 = 470;

impl Node {
    /// Open the node the configuration describes.
    pub fn new(config: Config) -> Result<Node, String> {
        let sim = match &config.state {
            Some(path) => SimBackend::open(path, config.spec.as_ref()).map_err(|e| e.to_string())?,
            None => {
                let default = NodeSpec::default();
                SimBackend::in_memory(config.spec.as_ref().unwrap_or(&default))
            }
        };
        // The spec's devices, whether or not one of them is lost now.
        let devices = sim.device_infos().to_vec();
        let models = sim.spec().models();
        config.check_gpus(u32::try_from(devices.len()).unwrap_or(u32::MAX))?;
        let xids = config.xids.as_deref().map(XidFeed::new);
        let activity = config.activity.as_deref().map(crate::activity::ActivityFeed::new);
        Ok(Node {
            config,
            sim,
            devices,
            models,
            xids,
            event_sets: BTreeMap::new(),
            activity,
            gpm_samples: BTreeMap::new(),
            rebinds: std::cell::RefCell::new(BTreeMap::new()),
        })
    }

    /// The configured driver version.
    pub fn driver_version(&self) -> String {
        self.config.driver.text.clone()
    }

    // ----- shared checks -----

    fn backend<T>(&self, r: Result<T, BackendError>) -> NvmlResult<T> {
        r.map_err(|e| {
            let code = from_backend(&e);
            if code == UNKNOWN {
                eprintln!("tessera-nvml-standin: {e}");
            }
            code
        })
    }

    fn dev(&self, gpu: u32) -> &DeviceInfo {
        &self.devices[gpu as usize]
    }

    fn model(&self, gpu: u32) -> &'static GpuModel {
        self.models[gpu as usize]
    }

    fn not_lost(&self, gpu: u32) -> NvmlResult<()> {
        if self.config.lost.contains(&gpu) || self.backend(self.sim.lost_gpus())?.contains(&gpu) {
            Err(GPU_IS_LOST)
        } else {
            Ok(())
        }
    }

    fn mig_capable(&self, gpu: u32) -> NvmlResult<()> {
        if self.config.no_mig.contains(&gpu) { Err(NOT_SUPPORTED) } else { Ok(()) }
    }

    fn may_change(&self) -> NvmlResult<()> {
        if self.config.no_permission { Err(NO_PERMISSION) } else { Ok(()) }
    }

    fn gpu_count(&self) -> u32 {
        u32::try_from(self.devices.len()).unwrap_or(u32::MAX)
    }

    /// A GPU handle (not a MIG device), on a GPU that is not lost.
    fn gpu(&self, h: Handle) -> NvmlResult<u32> {
        match handles::resolve(h) {
            Some(HandleKey::Device { gpu }) if gpu < self.gpu_count() => {
                self.not_lost(gpu)?;
                Ok(gpu)
            }
            _ => Err(INVALID_ARGUMENT),
        }
    }

    /// A GPU handle for a MIG operation.
    fn mig_gpu(&self, h: Handle) -> NvmlResult<u32> {
        let gpu = self.gpu(h)?;
        self.mig_capable(gpu)?;
        Ok(gpu)
    }

    /// A GPU or MIG device handle, checked against the node.
    pub fn device(&self, h: Handle) -> NvmlResult<DeviceRef> {
        match handles::resolve(h) {
            Some(HandleKey::Device { gpu }) if gpu < self.gpu_count() => {
                self.not_lost(gpu)?;
                Ok(DeviceRef::Gpu(gpu))
            }
            Some(HandleKey::MigDevice { gpu, gi, ci, uuid }) if gpu < self.gpu_count() => {
                self.not_lost(gpu)?;
                self.mig_capable(gpu).map_err(|_| INVALID_ARGUMENT)?;
                let gi = self.gpu_instance_list(gpu)?.into_iter().find(|i| i.id == gi).ok_or(INVALID_ARGUMENT)?;
                let cis = self.sim.compute_instances(gpu, gi.id).map_err(|_| INVALID_ARGUMENT)?;
                let ci = cis.into_iter().find(|c| c.id == ci && c.uuid == uuid).ok_or(INVALID_ARGUMENT)?;
                Ok(DeviceRef::Mig(MigRef { gpu, gi, ci }))
            }
            _ => Err(INVALID_ARGUMENT),
        }
    }

    /// GPU instances of a GPU; none while MIG is off.
    fn gpu_instance_list(&self, gpu: u32) -> NvmlResult<Vec<GpuInstanceInfo>> {
        match self.sim.gpu_instances(gpu) {
            Err(BackendError::NotSupported { .. }) => Ok(Vec::new()),
            r => self.backend(r),
        }
    }

    /// Every MIG device (compute instance) of a GPU, in GPU-instance id then compute-instance id order.
    fn mig_devices(&self, gpu: u32) -> NvmlResult<Vec<MigRef>> {
        let mut out = Vec::new();
        for gi in self.gpu_instance_list(gpu)? {
            for ci in self.backend(self.sim.compute_instances(gpu, gi.id))? {
                out.push(MigRef { gpu, gi: gi.clone(), ci });
            }
        }
        Ok(out)
    }

    fn gi_handle(gpu: u32, info: &GpuInstanceInfo) -> Handle {
        handles::intern(HandleKey::GpuInstance {
            gpu,
            gi: info.id,
            profile_id: info.profile_id,
            start: info.placement.start,
        })
    }

    fn ci_handle(gpu: u32, ci: &ComputeInstanceInfo) -> Handle {
        handles::intern(HandleKey::ComputeInstance { gpu, gi: ci.gpu_instance_id, ci: ci.id, uuid: ci.uuid.clone() })
    }

    fn mig_handle(gpu: u32, ci: &ComputeInstanceInfo) -> Handle {
        handles::intern(HandleKey::MigDevice { gpu, gi: ci.gpu_instance_id, ci: ci.id, uuid: ci.uuid.clone() })
    }

    /// The handle of GPU `gpu`.
    pub fn gpu_handle(gpu: u32) -> Handle {
        handles::intern(HandleKey::Device { gpu })
    }

    /// A GPU-instance handle, checked against the node.
    pub fn gpu_instance(&self, h: Handle) -> NvmlResult<GiRef> {
        let Some(HandleKey::GpuInstance { gpu, gi, profile_id, start }) = handles::resolve(h) else {
            return Err(INVALID_ARGUMENT);
        };
        if gpu >= self.gpu_count() {
            return Err(INVALID_ARGUMENT);
        }
        self.not_lost(gpu)?;
        self.mig_capable(gpu)?;
        self.gpu_instance_list(gpu)?
            .into_iter()
            .find(|i| i.id == gi && i.profile_id == profile_id && i.placement.start == start)
            .map(|info| GiRef { gpu, info })
            .ok_or(INVALID_ARGUMENT)
    }

    /// A compute-instance handle, checked against the node.
    pub fn compute_instance(&self, h: Handle) -> NvmlResult<(GiRef, ComputeInstanceInfo)> {
        let Some(HandleKey::ComputeInstance { gpu, gi, ci, uuid }) = handles::resolve(h) else {
            return Err(INVALID_ARGUMENT);
        };
        if gpu >= self.gpu_count() {
            return Err(INVALID_ARGUMENT);
        }
        self.not_lost(gpu)?;
        self.mig_capable(gpu)?;
        let gi = self.gpu_instance_list(gpu)?.into_iter().find(|i| i.id == gi).ok_or(INVALID_ARGUMENT)?;
        let cis = self.sim.compute_instances(gpu, gi.id).map_err(|_| INVALID_ARGUMENT)?;
        let info = cis.into_iter().find(|c| c.id == ci && c.uuid == uuid).ok_or(INVALID_ARGUMENT)?;
        Ok((GiRef { gpu, info: gi }, info))
    }

    // ----- devices -----

    pub fn device_count(&self) -> u32 {
        self.gpu_count()
    }

    pub fn device_by_index(&self, index: u32) -> NvmlResult<Handle> {
        if index >= self.gpu_count() {
            return Err(INVALID_ARGUMENT);
        }
        self.not_lost(index)?;
        Ok(Self::gpu_handle(index))
    }

    /// A GPU or MIG device by UUID.
    pub fn device_by_uuid(&self, uuid: &str) -> NvmlResult<Handle> {
        if let Some(d) = self.devices.iter().find(|d| d.uuid == uuid) {
            self.not_lost(d.index)?;
            return Ok(Self::gpu_handle(d.index));
        }
        if uuid.starts_with("MIG-") {
            for gpu in 0..self.gpu_count() {
                if self.not_lost(gpu).is_err() || self.mig_capable(gpu).is_err() {
                    continue;
                }
                if let Some(m) = self.mig_devices(gpu)?.into_iter().find(|m| self.mig_uuid(m) == uuid) {
                    return Ok(Self::mig_handle(gpu, &m.ci));
                }
            }
        }
        Err(NOT_FOUND)
    }

    /// `nvmlDeviceGetIndex`: the GPU's index, or a MIG device's index under its GPU.
    pub fn device_index(&self, h: Handle) -> NvmlResult<u32> {
        match self.device(h)? {
            DeviceRef::Gpu(gpu) => Ok(gpu),
            DeviceRef::Mig(m) => {
                let all = self.mig_devices(m.gpu)?;
                let i = all.iter().position(|x| x.ci.uuid == m.ci.uuid).ok_or(INVALID_ARGUMENT)?;
                u32::try_from(i).map_err(|_| UNKNOWN)
            }
        }
    }

    /// A GPU's UUID; a MIG device's (`TESSERA_STANDIN_MIG_UUID=fail`: `UNKNOWN`; a driver older
    /// than R470: the legacy `MIG-GPU-<uuid>/<gi>/<ci>` form).
    pub fn uuid(&self, h: Handle) -> NvmlResult<String> {
        Ok(match self.device(h)? {
            DeviceRef::Gpu(gpu) => self.dev(gpu).uuid.clone(),
            DeviceRef::Mig(_) if self.config.mig_uuid_fails => return Err(UNKNOWN),
            DeviceRef::Mig(m) => self.mig_uuid(&m),
        })
    }

    /// The name the driver gives a MIG device.
    fn mig_uuid(&self, m: &MigRef) -> String {
        if self.config.driver.major < MIG_UUID_DRIVER {
            legacy_mig_uuid(&self.dev(m.gpu).uuid, m.gi.id, m.ci.id)
        } else {
            m.ci.uuid.clone()
        }
    }

    /// The product name; `<GPU name> MIG <profile>` for a MIG device.
    pub fn name(&self, h: Handle) -> NvmlResult<String> {
        Ok(match self.device(h)? {
            DeviceRef::Gpu(gpu) => self.dev(gpu).name.clone(),
            DeviceRef::Mig(m) => format!("{} MIG {}", self.dev(m.gpu).name, self.mig_profile_name(&m)?),
        })
    }

    fn mig_profile_name(&self, m: &MigRef) -> NvmlResult<String> {
        let gp = self.model(m.gpu).profile_by_id(m.gi.profile_id).ok_or(UNKNOWN)?;
        let slices = self
            .model(m.gpu)
            .compute_instance_profiles(gp.compute_slices)
            .iter()
            .find(|c| c.id == m.ci.profile_id)
            .map_or(gp.compute_slices, |c| c.compute_slices);
        Ok(profiles::ci_name(slices, gp))
    }

    fn parent_gpu(&self, h: Handle) -> NvmlResult<u32> {
        Ok(match self.device(h)? {
            DeviceRef::Gpu(gpu) => gpu,
            DeviceRef::Mig(m) => m.gpu,
        })
    }

    /// PCI facts (a MIG device reports its GPU's).
    pub fn pci(&self, h: Handle) -> NvmlResult<Pci> {
        let dev = self.dev(self.parent_gpu(h)?);
        let (domain, bus, device) = parse_bus_id(&dev.pci_bus_id).ok_or(UNKNOWN)?;
        let id = (u32::from(dev.pci_device_id) << 16) | 0x10DE;
        Ok(Pci {
            bus_id: dev.pci_bus_id.clone(),
            bus_id_legacy: format!("{domain:04X}:{bus:02X}:{device:02X}.0"),
            domain,
            bus,
            device,
            pci_device_id: id,
            pci_subsystem_id: dev.pci_subsystem_id,
        })
    }

    pub fn minor_number(&self, h: Handle) -> NvmlResult<u32> {
        match self.device(h)? {
            DeviceRef::Gpu(gpu) => {
                let moves = self.rebind_count(gpu)?;
                Ok((self.dev(gpu).minor_number + moves * self.gpu_count()) % 256)
            }
            DeviceRef::Mig(_) => Err(NOT_SUPPORTED),
        }
    }

    /// How often GPU `gpu` was rebound by a MIG mode change that took effect (always 0 unless
    /// `TESSERA_STANDIN_REBIND`): each change seen moves the GPU's minor number on by the GPU
    /// count, as a driver that unbinds and rebinds the device may.
    fn rebind_count(&self, gpu: u32) -> NvmlResult<u32> {
        if !self.config.rebind || self.mig_capable(gpu).is_err() {
            return Ok(0);
        }
        let current = self.backend(self.sim.mig_mode(gpu))?.current;
        let mut seen = self.rebinds.borrow_mut();
        let entry = seen.entry(gpu).or_insert((current, 0));
        if entry.0 != current {
            *entry = (current, entry.1 + 1);
        }
        Ok(entry.1)
    }

    /// Total and used memory; a MIG device has its GPU instance's memory.
    pub fn memory(&self, h: Handle) -> NvmlResult<Memory> {
        match self.device(h)? {
            DeviceRef::Gpu(gpu) => {
                let used: u64 = self.backend(self.sim.processes(gpu))?.iter().map(|p| p.used_memory_mib).sum();
                Ok(Memory { total: self.dev(gpu).memory_total_mib * MIB, used: used * MIB })
            }
            DeviceRef::Mig(m) => {
                let profiles = self.backend(self.sim.gpu_instance_profiles(m.gpu))?;
                let total = profiles.iter().find(|p| p.id == m.gi.profile_id).map_or(0, |p| p.memory_mib);
                let used: u64 = self
                    .backend(self.sim.processes(m.gpu))?
                    .iter()
                    .filter(|p| p.gpu_instance_id == Some(m.gi.id) && p.compute_instance_id == Some(m.ci.id))
                    .map(|p| p.used_memory_mib)
                    .sum();
                Ok(Memory { total: total * MIB, used: used * MIB })
            }
        }
    }

    /// The host CPUs local to the GPU.
    pub fn local_cpus(&self, h: Handle) -> NvmlResult<Vec<u32>> {
        Ok(self.dev(self.parent_gpu(h)?).local_cpus.clone())
    }

    /// The GPU's host NUMA node, `None` when the platform does not say.
    pub fn numa_node(&self, h: Handle) -> NvmlResult<Option<u32>> {
        Ok(self.dev(self.parent_gpu(h)?).numa_node)
    }

    // ----- field values -----

    /// `nvmlDeviceGetFieldValues`: each field's value, or its own return code. Only
    /// `NVML_FI_DEV_GET_GPU_RECOVERY_ACTION` is answered (from the simulated node's recovery
    /// action, on a GPU handle); every other field is `NOT_SUPPORTED`.
    pub fn field_values(&self, h: Handle, fields: &[u32]) -> NvmlResult<Vec<NvmlResult<u32>>> {
        let gpu = match self.device(h)? {
            DeviceRef::Gpu(gpu) => Some(gpu),
            DeviceRef::Mig(_) => None,
        };
        fields
            .iter()
            .map(|&field| match (field, gpu) {
                (NVML_FI_DEV_GET_GPU_RECOVERY_ACTION, Some(gpu)) => {
                    let obs = self.backend(self.sim.observe(gpu))?;
                    Ok(obs.recovery_action.map(|a| a.to_nvml()).ok_or(NOT_SUPPORTED))
                }
                _ => Ok(Err(NOT_SUPPORTED)),
            })
            .collect()
    }

    // ----- MIG mode -----

    /// (current, pending) as `NVML_DEVICE_MIG_*`.
    pub fn mig_mode(&self, h: Handle) -> NvmlResult<(u32, u32)> {
        let gpu = self.mig_gpu(h)?;
        let m = self.backend(self.sim.mig_mode(gpu))?;
        Ok((u32::from(m.current), u32::from(m.pending)))
    }

    /// Ask for a MIG mode; the activation status, as nvml.h documents it: `IN_USE` while the
    /// GPU is busy, `RESET_REQUIRED` when the change waits for a GPU reset (Ampere; a reboot on a
    /// node spec'd `gpu-reset=off`, a passthrough VM). Either way the change stays pending.
    pub fn set_mig_mode(&self, h: Handle, mode: u32) -> NvmlResult<Ret> {
        let gpu = self.mig_gpu(h)?;
        self.may_change()?;
        // nvml.h: "Requires root user."
        if self.config.non_root {
            return Err(NO_PERMISSION);
        }
        // The mode before the change, so a change that takes effect counts as a rebind.
        self.rebind_count(gpu)?;
        let enabled = match mode {
            NVML_DEVICE_MIG_DISABLE => false,
            NVML_DEVICE_MIG_ENABLE => true,
            _ => return Err(INVALID_ARGUMENT),
        };
        match self.sim.set_mig_mode(gpu, enabled) {
            Ok(m) if m.current != enabled => Ok(RESET_REQUIRED),
            Ok(_) => Ok(SUCCESS),
            Err(BackendError::InUse { .. }) => Ok(IN_USE),
            Err(e) => self.backend(Err(e)),
        }
    }

    // ----- GPU instances -----

    fn offered_profile(&self, gpu: u32, profile_id: u32) -> NvmlResult<&'static Profile> {
        let p = self.model(gpu).profile_by_id(profile_id).ok_or(INVALID_ARGUMENT)?;
        if profiles::offered(p, self.config.driver.major) { Ok(p) } else { Err(NOT_SUPPORTED) }
    }

    /// Profile info by `NVML_GPU_INSTANCE_PROFILE_*` index.
    pub fn gi_profile_info(&self, h: Handle, index: u32) -> NvmlResult<GiProfile> {
        let gpu = self.mig_gpu(h)?;
        if index >= NVML_GPU_INSTANCE_PROFILE_COUNT {
            return Err(INVALID_ARGUMENT);
        }
        let p = profiles::profile_by_index(self.model(gpu), index).ok_or(NOT_SUPPORTED)?;
        if !profiles::offered(p, self.config.driver.major) {
            return Err(NOT_SUPPORTED);
        }
        let info = self
            .backend(self.sim.gpu_instance_profiles(gpu))?
            .into_iter()
            .find(|i| i.id == p.id)
            .ok_or(NOT_SUPPORTED)?;
        let capabilities =
            if p.kind == tessera_mig::ProfileKind::Graphics { NVML_GPU_INSTANCE_PROFILE_CAPS_GFX } else { 0 };
        Ok(GiProfile { name: profiles::gi_profile_name(p), info, capabilities })
    }

    /// Every legal placement of a profile, occupied or not (whether MIG is on or not, as nvml.h says).
    pub fn possible_placements(&self, h: Handle, profile_id: u32) -> NvmlResult<Vec<PlacementRange>> {
        let gpu = self.mig_gpu(h)?;
        let p = self.offered_profile(gpu, profile_id)?;
        let units = u32::from(self.model(gpu).placement_units);
        Ok(p.placements
            .iter()
            .filter(|&&s| u32::from(s) + u32::from(p.placement_size) <= units)
            .map(|&start| PlacementRange { start, size: p.placement_size })
            .collect())
    }

    fn layout(&self, gpu: u32) -> NvmlResult<Vec<Instance>> {
        Ok(self
            .backend(self.sim.gpu_instances(gpu))?
            .iter()
            .map(|g| Instance::new(g.profile_id, g.placement.start))
            .collect())
    }

    pub fn gi_remaining_capacity(&self, h: Handle, profile_id: u32) -> NvmlResult<u32> {
        let gpu = self.mig_gpu(h)?;
        let p = self.offered_profile(gpu, profile_id)?;
        let layout = self.layout(gpu)?;
        Ok(profiles::gi_remaining_capacity(self.model(gpu), &layout, p))
    }

    /// Create a GPU instance, at `placement` (start, size) or where the driver would put it.
    pub fn create_gpu_instance(&self, h: Handle, profile_id: u32, placement: Option<(u32, u32)>) -> NvmlResult<Handle> {
        let gpu = self.mig_gpu(h)?;
        self.may_change()?;
        let p = self.offered_profile(gpu, profile_id)?;
        let start = match placement {
            None => None,
            Some((start, size)) => {
                let units = u32::from(self.model(gpu).placement_units);
                let legal =
                    p.placements.iter().any(|&s| u32::from(s) == start) && start + u32::from(p.placement_size) <= units;
                if size != u32::from(p.placement_size) || !legal {
                    return Err(INVALID_ARGUMENT);
                }
                Some(u8::try_from(start).map_err(|_| INVALID_ARGUMENT)?)
            }
        };
        let info = self.backend(self.sim.create_gpu_instance(gpu, profile_id, start))?;
        Ok(Self::gi_handle(gpu, &info))
    }

    pub fn destroy_gpu_instance(&self, h: Handle) -> NvmlResult<()> {
        let gi = self.gpu_instance(h)?;
        self.may_change()?;
        self.backend(self.sim.destroy_gpu_instance(gi.gpu, gi.info.id))
    }

    /// The GPU instances of a profile, by id.
    pub fn gpu_instances(&self, h: Handle, profile_id: u32) -> NvmlResult<Vec<Handle>> {
        let gpu = self.mig_gpu(h)?;
        self.model(gpu).profile_by_id(profile_id).ok_or(INVALID_ARGUMENT)?;
        Ok(self
            .backend(self.sim.gpu_instances(gpu))?
            .iter()
            .filter(|g| g.profile_id == profile_id)
            .map(|g| Self::gi_handle(gpu, g))
            .collect())
    }

    pub fn gpu_instance_by_id(&self, h: Handle, id: u32) -> NvmlResult<Handle> {
        let gpu = self.mig_gpu(h)?;
        let list = self.backend(self.sim.gpu_instances(gpu))?;
        list.iter().find(|g| g.id == id).map(|g| Self::gi_handle(gpu, g)).ok_or(NOT_FOUND)
    }

    /// (GPU handle, info) of a GPU instance.
    pub fn gpu_instance_info(&self, h: Handle) -> NvmlResult<(Handle, GpuInstanceInfo)> {
        let gi = self.gpu_instance(h)?;
        Ok((Self::gpu_handle(gi.gpu), gi.info))
    }

    // ----- compute instances -----

    fn gi_profile(&self, gi: &GiRef) -> NvmlResult<&'static Profile> {
        self.model(gi.gpu).profile_by_id(gi.info.profile_id).ok_or(UNKNOWN)
    }

    fn ci_profile(
        &self,
        gi: &GiRef,
        profile_id: u32,
    ) -> NvmlResult<(&'static Profile, &'static tessera_mig::catalog::ComputeInstanceProfile)> {
        let gp = self.gi_profile(gi)?;
        let cp = self
            .model(gi.gpu)
            .compute_instance_profiles(gp.compute_slices)
            .iter()
            .find(|c| c.id == profile_id)
            .ok_or(NOT_SUPPORTED)?;
        Ok((gp, cp))
    }

    /// Compute-instance profile info by `NVML_COMPUTE_INSTANCE_PROFILE_*` index (= id).
    pub fn ci_profile_info(&self, h: Handle, profile: u32, eng_profile: u32) -> NvmlResult<CiProfile> {
        let gi = self.gpu_instance(h)?;
        if profile >= NVML_COMPUTE_INSTANCE_PROFILE_COUNT || eng_profile != NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED
        {
            return Err(INVALID_ARGUMENT);
        }
        let (gp, cp) = self.ci_profile(&gi, profile)?;
        let info =
            self.backend(self.sim.gpu_instance_profiles(gi.gpu))?.into_iter().find(|i| i.id == gp.id).ok_or(UNKNOWN)?;
        let sm = info.sm_count * u32::from(cp.compute_slices) / u32::from(gp.compute_slices.max(1));
        Ok(CiProfile {
            id: cp.id,
            slice_count: u32::from(cp.compute_slices),
            instance_count: u32::from(cp.max_count),
            multiprocessor_count: sm,
            copy_engines: info.copy_engines,
            decoders: info.decoders,
            encoders: info.encoders,
            jpegs: info.jpegs,
            ofas: info.ofas,
            name: format!("MIG {}", profiles::ci_name(cp.compute_slices, gp)),
        })
    }

    pub fn ci_remaining_capacity(&self, h: Handle, profile_id: u32) -> NvmlResult<u32> {
        let gi = self.gpu_instance(h)?;
        let (gp, cp) = self.ci_profile(&gi, profile_id)?;
        let existing: Vec<CiSlot> = self
            .backend(self.sim.compute_instances(gi.gpu, gi.info.id))?
            .iter()
            .map(|c| CiSlot { profile_id: c.profile_id, start: c.placement.start, size: c.placement.size })
            .collect();
        Ok(profiles::ci_remaining_capacity(gp.compute_slices, &existing, cp))
    }

    pub fn create_compute_instance(&self, h: Handle, profile_id: u32) -> NvmlResult<Handle> {
        let gi = self.gpu_instance(h)?;
        self.may_change()?;
        self.ci_profile(&gi, profile_id)?;
        let ci = self.backend(self.sim.create_compute_instance(gi.gpu, gi.info.id, profile_id))?;
        Ok(Self::ci_handle(gi.gpu, &ci))
    }

    pub fn destroy_compute_instance(&self, h: Handle) -> NvmlResult<()> {
        let (gi, ci) = self.compute_instance(h)?;
        self.may_change()?;
        self.backend(self.sim.destroy_compute_instance(gi.gpu, gi.info.id, ci.id))
    }

    pub fn compute_instances(&self, h: Handle, profile_id: u32) -> NvmlResult<Vec<Handle>> {
        let gi = self.gpu_instance(h)?;
        self.ci_profile(&gi, profile_id)?;
        Ok(self
            .backend(self.sim.compute_instances(gi.gpu, gi.info.id))?
            .iter()
            .filter(|c| c.profile_id == profile_id)
            .map(|c| Self::ci_handle(gi.gpu, c))
            .collect())
    }

    pub fn compute_instance_by_id(&self, h: Handle, id: u32) -> NvmlResult<Handle> {
        let gi = self.gpu_instance(h)?;
        let list = self.backend(self.sim.compute_instances(gi.gpu, gi.info.id))?;
        list.iter().find(|c| c.id == id).map(|c| Self::ci_handle(gi.gpu, c)).ok_or(NOT_FOUND)
    }

    /// (GPU handle, GPU-instance handle, info) of a compute instance.
    pub fn compute_instance_info(&self, h: Handle) -> NvmlResult<(Handle, Handle, ComputeInstanceInfo)> {
        let (gi, ci) = self.compute_instance(h)?;
        Ok((Self::gpu_handle(gi.gpu), Self::gi_handle(gi.gpu, &gi.info), ci))
    }

    // ----- MIG devices -----

    /// The model's most GPU instances; 0 while MIG is off or unsupported.
    pub fn max_mig_devices(&self, h: Handle) -> NvmlResult<u32> {
        let gpu = self.gpu(h)?;
        if self.mig_capable(gpu).is_err() || !self.backend(self.sim.mig_mode(gpu))?.current {
            return Ok(0);
        }
        Ok(u32::from(self.model(gpu).max_gpu_instances))
    }

    pub fn mig_device_by_index(&self, h: Handle, index: u32) -> NvmlResult<Handle> {
        let gpu = self.mig_gpu(h)?;
        if index >= self.max_mig_devices(h)? {
            return Err(INVALID_ARGUMENT);
        }
        self.mig_devices(gpu)?.get(index as usize).map(|m| Self::mig_handle(gpu, &m.ci)).ok_or(NOT_FOUND)
    }

    pub fn parent_of_mig_device(&self, h: Handle) -> NvmlResult<Handle> {
        match self.device(h)? {
            DeviceRef::Mig(m) => Ok(Self::gpu_handle(m.gpu)),
            DeviceRef::Gpu(_) => Err(INVALID_ARGUMENT),
        }
    }

    pub fn is_mig_device(&self, h: Handle) -> NvmlResult<bool> {
        Ok(matches!(self.device(h)?, DeviceRef::Mig(_)))
    }

    /// (GPU-instance id, compute-instance id) of a MIG device.
    pub fn mig_instance_ids(&self, h: Handle) -> NvmlResult<(u32, u32)> {
        match self.device(h)? {
            DeviceRef::Mig(m) => Ok((m.gi.id, m.ci.id)),
            DeviceRef::Gpu(_) => Err(NOT_SUPPORTED),
        }
    }

    // ----- processes -----

    /// Compute processes: all of the GPU's, or those of one MIG device.
    ///
    /// nvml.h: "In MIG mode, if device handle is provided, the API returns aggregate information,
    /// only if the caller has appropriate privileges. Per-instance information can be queried by
    /// using specific MIG device handles." So a caller that is not root
    /// (`TESSERA_STANDIN_NON_ROOT`) gets `NO_PERMISSION` for a GPU in MIG mode.
    pub fn processes(&self, h: Handle) -> NvmlResult<Vec<ProcessInfo>> {
        match self.device(h)? {
            DeviceRef::Gpu(gpu)
                if self.config.non_root
                    && self.mig_capable(gpu).is_ok()
                    && self.backend(self.sim.mig_mode(gpu))?.current =>
            {
                Err(NO_PERMISSION)
            }
            DeviceRef::Gpu(gpu) => self.backend(self.sim.processes(gpu)),
            DeviceRef::Mig(m) => Ok(self
                .backend(self.sim.processes(m.gpu))?
                .into_iter()
                .filter(|p| p.gpu_instance_id == Some(m.gi.id) && p.compute_instance_id == Some(m.ci.id))
                .collect()),
        }
    }

    // ----- events -----

    pub fn event_set_create(&mut self) -> Handle {
        let h = handles::new_event_set();
        self.event_sets.insert(h, EventSet::default());
        h
    }

    pub fn event_set_free(&mut self, set: Handle) -> NvmlResult<()> {
        self.event_sets.remove(&set).ok_or(INVALID_ARGUMENT)?;
        handles::free_event_set(set);
        Ok(())
    }

    pub fn supported_event_types(&self, h: Handle) -> NvmlResult<u64> {
        Ok(match self.device(h)? {
            DeviceRef::Gpu(_) => SUPPORTED_EVENTS,
            DeviceRef::Mig(_) => 0,
        })
    }

    pub fn register_events(&mut self, h: Handle, types: u64, set: Handle) -> NvmlResult<()> {
        if !self.event_sets.contains_key(&set) {
            return Err(INVALID_ARGUMENT);
        }
        let gpu = match self.device(h)? {
            DeviceRef::Gpu(gpu) => gpu,
            DeviceRef::Mig(_) => return Err(NOT_SUPPORTED),
        };
        if types & !u64::from(nvmlEventTypeAll) != 0 {
            return Err(INVALID_ARGUMENT);
        }
        if types & !SUPPORTED_EVENTS != 0 {
            return Err(NOT_SUPPORTED);
        }
        let s = self.event_sets.get_mut(&set).ok_or(INVALID_ARGUMENT)?;
        *s.registered.entry(gpu).or_insert(0) |= types;
        Ok(())
    }

    /// Queue new Xids on every set that registered their GPU: the lines new in the Xid file
    /// (doing to the simulated node what the driver does as each is read), then the Xids raised
    /// on the simulated node itself (`tessera mig xid`, [`SimBackend::raise_xid`], which did
    /// that already), taken from its state so each is delivered once and none piles up there.
    fn poll_xids(&mut self) {
        let mut events: Vec<tessera_gpu::XidEvent> = Vec::new();
        let lines = self.xids.as_mut().map(XidFeed::poll).unwrap_or_default();
        for ev in lines {
            let ev = match ev {
                Ok(ev) if ev.gpu < self.gpu_count() => ev,
                Ok(ev) => {
                    eprintln!("tessera-nvml-standin: Xid {} for GPU {} ignored: no such GPU", ev.xid, ev.gpu);
                    continue;
                }
                Err(e) => {
                    eprintln!("tessera-nvml-standin: {e}");
                    continue;
                }
            };
            // The driver's reaction: the recovery action, and a GPU off the bus for Xid 79.
            if let Err(e) = self.sim.apply_xid(ev.gpu, ev.xid) {
                eprintln!("tessera-nvml-standin: Xid {} on GPU {}: {e}", ev.xid, ev.gpu);
            }
            events.push(tessera_gpu::XidEvent {
                gpu: ev.gpu,
                xid: ev.xid,
                gpu_instance_id: ev.gpu_instance,
                compute_instance_id: ev.compute_instance,
            });
        }
        match self.sim.wait_xid_events(0) {
            Ok(raised) => events.extend(raised),
            Err(e) => eprintln!("tessera-nvml-standin: reading the Xids raised on the simulated node: {e}"),
        }
        for ev in events {
            let event = Event {
                device: Self::gpu_handle(ev.gpu),
                event_type: SUPPORTED_EVENTS,
                data: ev.xid,
                gpu_instance_id: ev.gpu_instance_id.unwrap_or(NO_INSTANCE),
                compute_instance_id: ev.compute_instance_id.unwrap_or(NO_INSTANCE),
            };
            for set in self.event_sets.values_mut() {
                if set.registered.get(&ev.gpu).is_some_and(|t| t & SUPPORTED_EVENTS != 0) {
                    set.queue.push_back(event);
                }
            }
        }
    }

    /// The next event of `set`, if one is pending.
    pub fn next_event(&mut self, set: Handle) -> NvmlResult<Option<Event>> {
        if !self.event_sets.contains_key(&set) {
            return Err(INVALID_ARGUMENT);
        }
        self.poll_xids();
        Ok(self.event_sets.get_mut(&set).and_then(|s| s.queue.pop_front()))
    }
}

/// `00000000:18:00.0` → (domain, bus, device).
fn parse_bus_id(s: &str) -> Option<(u32, u32, u32)> {
    let (domain, rest) = s.split_once(':')?;
    let (bus, rest) = rest.split_once(':')?;
    let (device, _function) = rest.split_once('.')?;
    Some((
        u32::from_str_radix(domain, 16).ok()?,
        u32::from_str_radix(bus, 16).ok()?,
        u32::from_str_radix(device, 16).ok()?,
    ))
}

#[cfg(test)]
mod tests;
