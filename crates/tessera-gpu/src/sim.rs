//! The simulated GPU node: a [`MigBackend`] that behaves like NVML on real MIG GPUs, so the CLI,
//! the daemon and the tests can run the whole stack on a machine without GPUs.
//!
//! **State outlives the process**, as GPU instances outlive a daemon: it lives in a JSON file.
//! Every operation takes the file's exclusive lock ([`crate::statefile::lock`], waiting up to
//! [`LOCK_TIMEOUT`]), reads the state, applies the change, and writes it back atomically
//! ([`crate::statefile::write_atomic`]), so several processes can share one node. The state last
//! read or written is kept with the file's exact bytes: while the file holds the same bytes, an
//! operation neither parses nor checks it again, and one that only reads does not copy it (reads
//! are most calls: a node view, a probe, the Xid wait's polls). [`SimBackend::in_memory`] runs the
//! same code on a mutex-guarded state for fast tests.
//!
//! What is reproduced, and from where (`shared/research/mig-hardware.md`):
//! * profiles and placements from the catalog; explicit-placement creation obeys
//!   [`tessera_mig::validate`] (legal start, overlap, per-profile and per-GPU counts, the single
//!   OFA for `+me`, `+me.all` exclusivity) and fails with "Insufficient Resources" otherwise;
//! * the driver's default placement ([`default_placement`], whose header states the rule);
//! * GPU-instance ids: size classes in descending order get consecutive id ranges,
//!   `id = offset(size) + start / size` (A100: full 0, halves 1–2, quarters 3–6, eighths 7–14),
//!   the lowest free id if that one is taken;
//! * compute instances: lowest free legal placement, lowest free id, a fresh `MIG-` UUID per
//!   creation (a per-node generation counter goes into it, so a recreated instance differs);
//! * caps minors: GI = 3 + 135·minor + 9·gi, CI = GI + 1 + ci;
//! * destroy order (compute instances first), and nothing busy is destroyed (`In use`);
//! * MIG mode (`mig-hardware.md` §5, nvml.h's `nvmlDeviceSetMigMode`): with processes present
//!   the change stays pending and `InUse` is returned (activation status `IN_USE`); disabling
//!   with GPU instances present is refused. On an idle GPU, Hopper and later change at once;
//!   Ampere (the catalog's `mig_enable_requires_gpu_reset`: A100, A30) keeps the change pending
//!   until the GPU is reset (activation status `RESET_REQUIRED`): nvml.h says the call *may*
//!   reset the GPU itself, and where it does not, the caller resets it, as mig-parted does
//!   after setting every mode. The simulated node models the second case, so the caller's
//!   reset is exercised. With the spec's `gpu-reset=off` (a passthrough VM) a reset is refused
//!   (`NotSupported`) and only a reboot applies the change.
//!
//! Processes are simulated too (not part of the trait): [`SimBackend::attach_process`] marks a
//! compute instance busy, [`SimBackend::attach_gpu_process`] holds a GPU whose MIG mode is off,
//! and [`SimBackend::detach_process`] ends either.
//!
//! Faults and their recovery are simulated as well (`shared/research/mig-hardware.md`, NVIDIA's
//! Xid catalog): [`SimBackend::raise_xid`] queues an Xid event and does what the driver does
//! with it: an Xid that needs a GPU reset sets the GPU's recovery action to
//! [`RecoveryAction::GpuReset`], Xid 79 (fallen off the bus) to [`RecoveryAction::NodeReboot`]
//! and makes the GPU *lost*: every call for it, and [`MigBackend::devices`], fails with
//! [`BackendError::GpuLost`] (a GPU off the bus does not answer). [`SimBackend::reset_gpu`] is
//! `nvidia-smi -r -i N` (refused while processes use the GPU; destroys its instances, applies a
//! pending MIG mode, counts the reset, clears the recovery action) and [`SimBackend::reboot`] a
//! reboot of the node (every GPU: instances and processes gone, pending MIG modes applied, lost
//! GPUs back, recovery actions cleared, a new boot id). Both drop the Xid events of the GPUs
//! they reset that were not read yet, as the driver's event queue does not outlive a reset.
//! [`MigBackend::observe`] reports the reset count, the recovery action and the boot id.
//!
//! GPU performance monitoring (GPM) is simulated too ([`activity`]): Hopper and newer have it,
//! Ampere does not. [`SimBackend::set_activity`] and [`SimBackend::replace_activity`] declare what
//! a GPU or GPU instance does (kept in the state, integrated into cumulative counters),
//! [`SimBackend::gpm_counters`] is a sample, and [`MigBackend::gpm_sample`] the metrics between
//! two samples, with the arithmetic the stand-in NVML library uses too.

pub mod activity;
pub mod default_placement;

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::ErrorKind;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use tessera_mig::{GpuModel, Instance, Profile, catalog::ComputeInstanceProfile, validate};

use self::activity::{Activity, ActivityLine, GpmCounters, Track, gpm_supported_by};
use crate::backend::{
    BackendError, BackendKind, ComputeInstanceInfo, DeviceInfo, FailedGpu, GpmMetrics, GpuInstanceInfo,
    GpuInstanceProfileInfo, GpuObservation, GpuRef, MigBackend, MigMode, PlacementRange, ProcessInfo, RecoveryAction,
};
use crate::health::{Recovery, XidEvent, classify};
use crate::ids;
use crate::spec::NodeSpec;
use crate::statefile::{self, StateFileError};

/// How often a wait for Xid events looks at the state file again.
const XID_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// How long an operation waits for another process's lock before giving up.
pub use crate::statefile::LOCK_TIMEOUT;
/// The state file's format tag.
const FORMAT: &str = "tessera-sim-node/1";
/// GPU-instance ids the driver hands out (`gi0` … `gi14` in `mig-minors`).
const MAX_GI_IDS: u32 = 15;
/// Compute-instance ids per GPU instance (`ci0` … `ci7`).
const MAX_CI_IDS: u32 = 8;

/// The whole node's mutable state, as stored in the state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SimState {
    format: String,
    /// The node, in canonical form; devices are derived from it.
    spec: NodeSpec,
    /// Bumped for every compute instance created; part of its UUID.
    generation: u64,
    gpus: Vec<SimGpu>,
    /// Xid errors raised with [`SimBackend::raise_xid`] and not yet consumed by
    /// [`MigBackend::wait_xid_events`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pending_xids: Vec<XidEvent>,
    /// Reboots so far: the boot id is derived from it.
    #[serde(default, skip_serializing_if = "is_zero")]
    boots: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SimGpu {
    mig: MigMode,
    gpu_instances: Vec<SimGi>,
    processes: Vec<ProcessInfo>,
    /// Resets so far ([`SimBackend::reset_gpu`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    reset_count: u64,
    /// What the driver asks to be done, after a fatal Xid.
    #[serde(default = "no_action", skip_serializing_if = "is_no_action")]
    recovery_action: RecoveryAction,
    /// Fell off the bus (Xid 79): answers nothing until a reboot.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    lost: bool,
    /// What the GPU and its GPU instances do, for GPM ([`activity`]), by GPU-instance id (the
    /// whole GPU first); none: idle.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    activity: Vec<Track>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn no_action() -> RecoveryAction {
    RecoveryAction::None
}

fn is_no_action(a: &RecoveryAction) -> bool {
    *a == RecoveryAction::None
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SimGi {
    id: u32,
    profile_id: u32,
    start: u8,
    compute_instances: Vec<SimCi>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SimCi {
    id: u32,
    profile_id: u32,
    start: u8,
    size: u8,
    uuid: String,
}

impl SimState {
    fn fresh(spec: &NodeSpec) -> SimState {
        let mode = MigMode { current: spec.mig_enabled(), pending: spec.mig_enabled() };
        SimState {
            format: FORMAT.to_string(),
            spec: spec.clone(),
            generation: 0,
            gpus: (0..spec.gpu_count())
                .map(|_| SimGpu {
                    mig: mode,
                    gpu_instances: Vec::new(),
                    processes: Vec::new(),
                    reset_count: 0,
                    recovery_action: RecoveryAction::None,
                    lost: false,
                    activity: Vec::new(),
                })
                .collect(),
            pending_xids: Vec::new(),
            boots: 0,
        }
    }

    /// `/proc/sys/kernel/random/boot_id`'s form, derived from the node and its reboots.
    fn boot_id(&self) -> String {
        let hex = format!("{:032x}", ids::hash128(&format!("{}/boot/{}", self.spec, self.boots)));
        format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
    }
}

impl SimGpu {
    /// What a reset (or a reboot) does to the GPU: instances and processes gone, a pending MIG
    /// mode applied, the recovery action cleared.
    fn reset(&mut self) {
        self.gpu_instances.clear();
        self.processes.clear();
        self.mig.current = self.mig.pending;
        self.recovery_action = RecoveryAction::None;
    }
}

#[derive(Debug)]
enum Store {
    Memory(Mutex<SimState>),
    File { path: PathBuf, cache: Mutex<Cache> },
}

/// The state as last read from or written to the file, with the file's exact bytes then: while
/// the file holds the same bytes (every change replaces it), the state is the same.
#[derive(Default)]
struct Cache {
    loaded: Option<(Vec<u8>, SimState)>,
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache").field("bytes", &self.loaded.as_ref().map(|(b, _)| b.len())).finish()
    }
}

fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A simulated GPU node. Cheap to open; every call goes to the shared state.
#[derive(Debug)]
pub struct SimBackend {
    store: Store,
    spec: NodeSpec,
    devices: Vec<DeviceInfo>,
    models: Vec<&'static GpuModel>,
    /// The last GPM sample of each (GPU, GPU instance) taken through [`MigBackend::gpm_sample`]
    /// (this process's, as NVML's sample buffers are).
    gpm_samples: Mutex<BTreeMap<(u32, Option<u32>), GpmCounters>>,
}

/// One GPU inside an operation: what it is, and its state (`&mut SimGpu` in an operation that
/// may change it, `&SimGpu` in one that only reads).
struct Gpu<'a, S = &'a mut SimGpu> {
    dev: &'a DeviceInfo,
    model: &'static GpuModel,
    state: S,
}

impl<S: Deref<Target = SimGpu>> Gpu<'_, S> {
    fn gref(&self) -> GpuRef {
        self.dev.gpu_ref()
    }

    fn require_gpm(&self) -> Result<(), BackendError> {
        if gpm_supported_by(self.model) {
            return Ok(());
        }
        Err(BackendError::NotSupported {
            gpu: self.gref(),
            what: format!(
                "GPU performance monitoring (GPM) needs Hopper or newer; this {} is {}",
                self.model.name, self.model.architecture
            ),
        })
    }

    fn require_mig(&self, doing: &str) -> Result<(), BackendError> {
        if self.state.mig.current {
            Ok(())
        } else {
            Err(BackendError::NotSupported {
                gpu: self.gref(),
                what: format!("MIG mode is disabled, so it cannot {doing}; enable MIG first"),
            })
        }
    }

    fn profile(&self, profile_id: u32) -> Result<&'static Profile, BackendError> {
        self.model.profile_by_id(profile_id).ok_or_else(|| BackendError::InvalidArgument {
            what: format!(
                "{} has no GPU instance profile {profile_id}; the profiles of {} are {}",
                self.gref(),
                self.model.name,
                self.model.profiles.iter().map(|p| format!("{} ({})", p.id, p.name)).collect::<Vec<_>>().join(", ")
            ),
        })
    }

    fn layout(&self) -> Vec<Instance> {
        self.state.gpu_instances.iter().map(|g| Instance::new(g.profile_id, g.start)).collect()
    }

    fn gi_label(&self, gi: &SimGi) -> String {
        match self.model.profile_by_id(gi.profile_id) {
            Some(p) => format!("GPU instance {} ({}@{})", gi.id, p.name, gi.start),
            None => format!("GPU instance {} (profile {}@{})", gi.id, gi.profile_id, gi.start),
        }
    }

    fn gi_index(&self, gpu_instance_id: u32) -> Result<usize, BackendError> {
        self.state.gpu_instances.iter().position(|g| g.id == gpu_instance_id).ok_or_else(|| {
            let have: Vec<String> = self.state.gpu_instances.iter().map(|g| g.id.to_string()).collect();
            BackendError::NotFound {
                gpu: self.gref(),
                what: format!(
                    "no GPU instance {gpu_instance_id} (existing: {})",
                    if have.is_empty() { "none".to_string() } else { have.join(", ") }
                ),
            }
        })
    }

    fn gi_info(&self, gi: &SimGi) -> GpuInstanceInfo {
        let size = self.model.profile_by_id(gi.profile_id).map_or(0, |p| p.placement_size);
        GpuInstanceInfo {
            id: gi.id,
            profile_id: gi.profile_id,
            placement: PlacementRange { start: gi.start, size },
            caps_minor: Some(ids::gi_caps_minor(self.dev.minor_number, gi.id)),
        }
    }

    fn ci_info(&self, gi: &SimGi, ci: &SimCi) -> ComputeInstanceInfo {
        ComputeInstanceInfo {
            id: ci.id,
            gpu_instance_id: gi.id,
            profile_id: ci.profile_id,
            placement: PlacementRange { start: ci.start, size: ci.size },
            uuid: ci.uuid.clone(),
            caps_minor: Some(ids::ci_caps_minor(self.dev.minor_number, gi.id, ci.id)),
        }
    }

    fn processes_on(&self, gpu_instance_id: u32, compute_instance_id: Option<u32>) -> Vec<&ProcessInfo> {
        self.state
            .processes
            .iter()
            .filter(|p| {
                p.gpu_instance_id == Some(gpu_instance_id)
                    && compute_instance_id.is_none_or(|ci| p.compute_instance_id == Some(ci))
            })
            .collect()
    }
}

fn list_processes(p: &[&ProcessInfo]) -> String {
    p.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
}

/// The driver's GPU-instance id for a placement: `offset(size) + start / size`, where size
/// classes in descending order take consecutive ranges; the lowest free id if that one is taken.
fn assign_gi_id(model: &GpuModel, start: u8, size: u8, taken: &[u32]) -> Option<u32> {
    let mut sizes: Vec<u8> = model.profiles.iter().map(|p| p.placement_size).filter(|&s| s > 0).collect();
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    sizes.dedup();
    let units = u32::from(model.placement_units);
    let offset: u32 = sizes.iter().filter(|&&s| s > size).map(|&s| units / u32::from(s)).sum();
    let preferred = offset + u32::from(start) / u32::from(size.max(1));
    if preferred < MAX_GI_IDS && !taken.contains(&preferred) {
        return Some(preferred);
    }
    (0..MAX_GI_IDS).find(|id| !taken.contains(id))
}

fn profile_info(model: &GpuModel, p: &Profile) -> GpuInstanceProfileInfo {
    let share = |total: Option<u64>, part: u8, whole: u8| {
        total.map(|t| t * u64::from(part) / u64::from(whole.max(1))).unwrap_or(0)
    };
    let memory_mib = model.profile_memory_mib(p);
    let sm_count = p.sm_count.unwrap_or_else(|| {
        u32::try_from(share(model.sm_count.map(u64::from), p.compute_slices, model.compute_slices)).unwrap_or(0)
    });
    let media = p.media;
    GpuInstanceProfileInfo {
        id: p.id,
        name: p.name.clone(),
        compute_slices: p.compute_slices,
        memory_slices: p.memory_slices,
        memory_mib,
        max_count: p.max_count,
        placement_size: p.placement_size,
        sm_count,
        copy_engines: media.map_or(u32::from(p.compute_slices), |m| m.copy_engines),
        decoders: media.map_or(0, |m| m.nvdec),
        encoders: media.map_or(0, |m| m.nvenc),
        jpegs: media.map_or(0, |m| m.jpeg),
        ofas: media.map_or(u32::from(p.ofa_engines), |m| m.ofa),
    }
}

fn ci_name(ci: &ComputeInstanceProfile, gi: &Profile) -> String {
    format!("{}c.{}", ci.compute_slices, gi.name)
}

impl SimBackend {
    /// Open the node whose state lives at `path`, creating it from `spec` (the default node when
    /// `None`) if the file does not exist. An existing file made from a different spec is an
    /// error: use another state file for another node.
    pub fn open(path: &Path, spec: Option<&NodeSpec>) -> Result<SimBackend, BackendError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(|source| BackendError::Io { path: parent.to_path_buf(), source })?;
        }
        let _lock = statefile::lock(path).map_err(|e| state_file_error(path, e))?;
        let (bytes, state) = match fs::read(path) {
            Ok(bytes) => {
                let state = parse_state(path, &bytes)?;
                if let Some(wanted) = spec
                    && *wanted != state.spec
                {
                    return Err(BackendError::State {
                        path: path.to_path_buf(),
                        detail: format!(
                            "this file simulates the node '{}', not '{wanted}'; give that node its own state file \
                             (--sim-state PATH), leave out the spec to use this node, or remove the file to start \
                             over",
                            state.spec
                        ),
                    });
                }
                (bytes, state)
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let state = SimState::fresh(spec.unwrap_or(&NodeSpec::default()));
                let bytes = write_state(path, &state)?;
                (bytes, state)
            }
            Err(source) => return Err(BackendError::Io { path: path.to_path_buf(), source }),
        };
        let spec = state.spec.clone();
        let cache = Mutex::new(Cache { loaded: Some((bytes, state)) });
        Ok(SimBackend::with_store(&spec, Store::File { path: path.to_path_buf(), cache }))
    }

    /// A node that lives only in this process (same behaviour, no file).
    pub fn in_memory(spec: &NodeSpec) -> SimBackend {
        SimBackend::with_store(spec, Store::Memory(Mutex::new(SimState::fresh(spec))))
    }

    fn with_store(spec: &NodeSpec, store: Store) -> SimBackend {
        SimBackend {
            store,
            spec: spec.clone(),
            devices: spec.devices(),
            models: spec.models(),
            gpm_samples: Mutex::new(BTreeMap::new()),
        }
    }

    /// The node this simulates.
    pub fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    /// The state file, for a file-backed node.
    pub fn path(&self) -> Option<&Path> {
        match &self.store {
            Store::File { path, .. } => Some(path),
            Store::Memory(_) => None,
        }
    }

    /// The file's current state, in `cache`: the cached one while the file holds the same bytes,
    /// else the file parsed and checked (the caller holds the file's lock).
    fn load<'c>(&self, path: &Path, cache: &'c mut Cache) -> Result<&'c mut SimState, BackendError> {
        let bytes = fs::read(path).map_err(|source| BackendError::Io { path: path.to_path_buf(), source })?;
        let loaded = match cache.loaded.take() {
            Some((old, state)) if old == bytes => (old, state),
            _ => {
                let state = parse_state(path, &bytes)?;
                if state.spec != self.spec || state.gpus.len() != self.devices.len() {
                    return Err(BackendError::State {
                        path: path.to_path_buf(),
                        detail: format!(
                            "the file was replaced: it now simulates '{}' instead of '{}'; open it again",
                            state.spec, self.spec
                        ),
                    });
                }
                (bytes, state)
            }
        };
        Ok(&mut cache.loaded.insert(loaded).1)
    }

    /// Run `f` on the locked, current state, without changing it.
    fn read<T>(&self, f: impl FnOnce(&SimState) -> Result<T, BackendError>) -> Result<T, BackendError> {
        match &self.store {
            Store::Memory(m) => f(&guard(m)),
            Store::File { path, cache } => {
                let _lock = statefile::lock(path).map_err(|e| state_file_error(path, e))?;
                let mut cache = guard(cache);
                f(self.load(path, &mut cache)?)
            }
        }
    }

    /// Run `f` on the locked, current state; write it back if `f` changed it (whether or not `f`
    /// succeeded: a refused MIG-mode change still records the pending mode).
    fn modify<T>(&self, f: impl FnOnce(&mut SimState) -> Result<T, BackendError>) -> Result<T, BackendError> {
        match &self.store {
            Store::Memory(m) => f(&mut guard(m)),
            Store::File { path, cache } => {
                let _lock = statefile::lock(path).map_err(|e| state_file_error(path, e))?;
                let mut cache = guard(cache);
                let current = self.load(path, &mut cache)?;
                let mut state = current.clone();
                let result = f(&mut state);
                if state != *current {
                    let bytes = write_state(path, &state)?;
                    cache.loaded = Some((bytes, state));
                }
                result
            }
        }
    }

    /// Run `f` on one GPU, which it may change.
    fn with_gpu<T>(
        &self,
        gpu: u32,
        f: impl FnOnce(&mut Gpu<'_>) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        self.with_gpu_gen(gpu, |g, _| f(g))
    }

    /// Run `f` on one GPU, without changing it.
    fn read_gpu<T>(
        &self,
        gpu: u32,
        f: impl FnOnce(&Gpu<'_, &SimGpu>) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        let dev = self.device(gpu)?;
        let model = self.models[dev.index as usize];
        self.read(|state| {
            let Some(g) = state.gpus.get(dev.index as usize) else {
                return Err(self.no_gpu(gpu));
            };
            if g.lost {
                return Err(BackendError::GpuLost { gpu: dev.gpu_ref() });
            }
            f(&Gpu { dev, model, state: g })
        })
    }

    /// Like [`Self::with_gpu`], with access to the node's generation counter.
    fn with_gpu_gen<T>(
        &self,
        gpu: u32,
        f: impl FnOnce(&mut Gpu<'_>, &mut u64) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        let dev = self.device(gpu)?;
        let model = self.models[dev.index as usize];
        self.modify(|state| {
            let Some(g) = state.gpus.get_mut(dev.index as usize) else {
                return Err(self.no_gpu(gpu));
            };
            if g.lost {
                return Err(BackendError::GpuLost { gpu: dev.gpu_ref() });
            }
            f(&mut Gpu { dev, model, state: g }, &mut state.generation)
        })
    }

    /// The time a GPU-instance create or destroy takes on this node (`mig-op-ms`), spent after
    /// the change is made and outside the state lock, as the driver's own work would be.
    fn driver_time<T>(&self, outcome: &Result<T, BackendError>) {
        let ms = self.spec().mig_op_ms();
        if ms > 0 && outcome.is_ok() {
            std::thread::sleep(std::time::Duration::from_millis(u64::from(ms)));
        }
    }

    fn device(&self, gpu: u32) -> Result<&DeviceInfo, BackendError> {
        self.devices.get(gpu as usize).ok_or_else(|| self.no_gpu(gpu))
    }

    fn no_gpu(&self, gpu: u32) -> BackendError {
        BackendError::NotFound {
            gpu: GpuRef::index(gpu),
            what: format!("no GPU with index {gpu}; the node has {} GPU(s)", self.devices.len()),
        }
    }

    /// Simulate a process running in compute instance `compute_instance_id` of GPU instance
    /// `gpu_instance_id`: the instance is busy until [`Self::detach_process`].
    pub fn attach_process(
        &self,
        gpu: u32,
        gpu_instance_id: u32,
        compute_instance_id: u32,
        pid: u32,
        name: &str,
    ) -> Result<(), BackendError> {
        self.with_gpu(gpu, |g| {
            g.require_mig("run a process in a MIG device (use attach_gpu_process for a non-MIG GPU)")?;
            let gi = g.gi_index(gpu_instance_id)?;
            let gi = &g.state.gpu_instances[gi];
            if !gi.compute_instances.iter().any(|c| c.id == compute_instance_id) {
                return Err(BackendError::NotFound {
                    gpu: g.gref(),
                    what: format!("no compute instance {compute_instance_id} in {}", g.gi_label(gi)),
                });
            }
            g.push_process(ProcessInfo {
                pid,
                name: name.to_string(),
                gpu_instance_id: Some(gpu_instance_id),
                compute_instance_id: Some(compute_instance_id),
                used_memory_mib: 0,
            })
        })
    }

    /// Simulate a process using a GPU whose MIG mode is off (it blocks MIG-mode changes).
    pub fn attach_gpu_process(&self, gpu: u32, pid: u32, name: &str) -> Result<(), BackendError> {
        self.with_gpu(gpu, |g| {
            if g.state.mig.current {
                return Err(BackendError::NotSupported {
                    gpu: g.gref(),
                    what: "MIG is enabled, so processes run in MIG devices; use attach_process".into(),
                });
            }
            g.push_process(ProcessInfo {
                pid,
                name: name.to_string(),
                gpu_instance_id: None,
                compute_instance_id: None,
                used_memory_mib: 0,
            })
        })
    }

    /// Simulate an Xid error on GPU `gpu`, contained to a GPU (and compute) instance when given.
    /// It is kept in the state until [`MigBackend::wait_xid_events`] consumes it, once; and the
    /// GPU does what the driver does with it ([`Self::apply_xid`]).
    pub fn raise_xid(
        &self,
        gpu: u32,
        xid: u64,
        gpu_instance_id: Option<u32>,
        compute_instance_id: Option<u32>,
    ) -> Result<(), BackendError> {
        let dev = self.device(gpu)?;
        let event = XidEvent { gpu: dev.index, xid, gpu_instance_id, compute_instance_id };
        self.modify(|state| {
            state.pending_xids.push(event);
            apply_xid(state, dev.index, xid);
            Ok(())
        })
    }

    /// What the driver does when GPU `gpu` reports Xid `xid`, without queueing the event (the
    /// stand-in NVML library delivers events its own way): an Xid that needs a GPU reset sets
    /// the recovery action to [`RecoveryAction::GpuReset`]; Xid 79 sets
    /// [`RecoveryAction::NodeReboot`] and loses the GPU until a reboot.
    pub fn apply_xid(&self, gpu: u32, xid: u64) -> Result<(), BackendError> {
        let dev = self.device(gpu)?;
        self.modify(|state| {
            apply_xid(state, dev.index, xid);
            Ok(())
        })
    }

    /// Reset GPU `gpu`, as `nvidia-smi -r -i N` does: refused with `InUse` while processes use
    /// it, `NotSupported` on a node whose GPUs cannot be reset (the spec's `gpu-reset=off`) and
    /// `GpuLost` for a GPU off the bus; otherwise its GPU and compute instances are destroyed, a
    /// pending MIG mode takes effect, the reset is counted, the recovery action is cleared, and
    /// its Xid events not read yet are dropped.
    pub fn reset_gpu(&self, gpu: u32) -> Result<(), BackendError> {
        let dev = self.device(gpu)?;
        let index = dev.index;
        let resettable = self.spec.gpu_reset();
        self.modify(|state| {
            let g = state.gpus.get_mut(index as usize).ok_or_else(|| self.no_gpu(gpu))?;
            if g.lost {
                return Err(BackendError::GpuLost { gpu: dev.gpu_ref() });
            }
            if !resettable {
                // nvidia-smi's words in a passthrough VM (NVIDIA's MIG user guide).
                return Err(BackendError::NotSupported {
                    gpu: dev.gpu_ref(),
                    what: format!(
                        "Reset couldn't run: the GPU ({}) cannot be reset on this platform (a passthrough VM \
                         whose hypervisor does not expose the reset); reboot the VM",
                        dev.pci_bus_id
                    ),
                });
            }
            if !g.processes.is_empty() {
                let procs: Vec<&ProcessInfo> = g.processes.iter().collect();
                return Err(BackendError::InUse {
                    gpu: dev.gpu_ref(),
                    what: format!("cannot reset it while it is used by {}; stop them first", list_processes(&procs)),
                });
            }
            g.reset();
            g.reset_count += 1;
            state.pending_xids.retain(|x| x.gpu != index);
            Ok(())
        })
    }

    /// Reboot the node: on every GPU, instances and processes are gone, pending MIG modes take
    /// effect, lost GPUs are back and recovery actions cleared; the boot id changes and unread
    /// Xid events are dropped.
    pub fn reboot(&self) -> Result<(), BackendError> {
        self.modify(|state| {
            for g in &mut state.gpus {
                g.reset();
                g.lost = false;
            }
            state.boots += 1;
            state.pending_xids.clear();
            Ok(())
        })
    }

    /// The node's boot id (it changes at every [`Self::reboot`]).
    pub fn boot_id(&self) -> Result<String, BackendError> {
        self.read(|state| Ok(state.boot_id()))
    }

    /// The node's GPUs as the spec describes them, whether or not they answer.
    pub fn device_infos(&self) -> &[DeviceInfo] {
        &self.devices
    }

    /// The GPUs that fell off the bus, by index.
    pub fn lost_gpus(&self) -> Result<Vec<u32>, BackendError> {
        self.read(|state| {
            Ok(state
                .gpus
                .iter()
                .enumerate()
                .filter(|(_, g)| g.lost)
                .filter_map(|(i, _)| u32::try_from(i).ok())
                .collect())
        })
    }

    /// Declare what GPU `gpu` (its GPU instance `gpu_instance_id`, when given) does from now on,
    /// for GPM: the counters integrate what was declared before up to now, then this. The
    /// instance need not exist (a declaration is by id). `InvalidArgument` for a fraction outside
    /// 0..=1 or an id the driver never gives, `NotFound` for a GPU the node lacks.
    pub fn set_activity(
        &self,
        gpu: u32,
        gpu_instance_id: Option<u32>,
        activity: &Activity,
    ) -> Result<(), BackendError> {
        self.declare_activity(Some(gpu), &[ActivityLine { gpu, gpu_instance_id, activity: *activity }], now_us())
    }

    /// Declare the whole node's activity as of `declared_at` (an activity file's modification
    /// time; never later than now, never earlier than a GPU's or instance's last change), as an
    /// activity file does: each line's GPU or GPU instance does what the line says (the last
    /// line wins where two name the same), every other one is idle. Nothing changes when a line
    /// is refused (see [`Self::set_activity`]); a declaration that changes nothing does not
    /// write the state.
    pub fn replace_activity(
        &self,
        lines: &[ActivityLine],
        declared_at: std::time::SystemTime,
    ) -> Result<(), BackendError> {
        let at = declared_at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        self.declare_activity(None, lines, at.min(now_us()))
    }

    /// Set the activity `lines` declare as of `now` (µs since the epoch); with `only` `None`,
    /// every track no line names goes idle.
    fn declare_activity(&self, only: Option<u32>, lines: &[ActivityLine], now: u64) -> Result<(), BackendError> {
        for l in lines {
            let dev = self.device(l.gpu)?;
            l.activity
                .check()
                .map_err(|e| BackendError::InvalidArgument { what: format!("{}: {e}", dev.gpu_ref()) })?;
            if let Some(gi) = l.gpu_instance_id.filter(|&gi| gi >= MAX_GI_IDS) {
                return Err(BackendError::InvalidArgument {
                    what: format!(
                        "{}: there is no GPU instance id {gi} (the driver gives 0 to {})",
                        dev.gpu_ref(),
                        MAX_GI_IDS - 1
                    ),
                });
            }
        }
        self.modify(|state| {
            for (index, g) in (0u32..).zip(state.gpus.iter_mut()) {
                if only.is_some_and(|o| o != index) {
                    continue;
                }
                let mine: Vec<&ActivityLine> = lines.iter().filter(|l| l.gpu == index).collect();
                if only.is_none() {
                    for t in &mut g.activity {
                        if !mine.iter().any(|l| l.gpu_instance_id == t.gpu_instance_id)
                            && t.activity() != Activity::IDLE
                        {
                            t.set(Activity::IDLE, now);
                        }
                    }
                }
                for l in mine {
                    match g.activity.iter_mut().find(|t| t.gpu_instance_id == l.gpu_instance_id) {
                        Some(t) if t.activity() == l.activity => {}
                        Some(t) => t.set(l.activity, now),
                        // Nothing declared yet is idle: an idle declaration changes nothing.
                        None if l.activity == Activity::IDLE => {}
                        None => {
                            let mut t = Track::new(l.gpu_instance_id, now);
                            t.set(l.activity, now);
                            g.activity.push(t);
                            g.activity.sort_by_key(|t| t.gpu_instance_id);
                        }
                    }
                }
            }
            Ok(())
        })
    }

    /// What GPU `gpu` (its GPU instance `gpu_instance_id`) was last declared to do; idle when
    /// nothing was.
    pub fn activity(&self, gpu: u32, gpu_instance_id: Option<u32>) -> Result<Activity, BackendError> {
        let dev = self.device(gpu)?;
        self.read(|state| {
            let g = state.gpus.get(dev.index as usize).ok_or_else(|| self.no_gpu(gpu))?;
            Ok(g.activity.iter().find(|t| t.gpu_instance_id == gpu_instance_id).map_or(Activity::IDLE, Track::activity))
        })
    }

    /// A GPM sample of GPU `gpu`, or of its GPU instance `gpu_instance_id`: the time and the
    /// cumulative counters ([`activity`]). `NotSupported` for a GPU without GPM (before Hopper)
    /// or a GPU instance while MIG is off, `NotFound` for a GPU instance that does not exist,
    /// `GpuLost` for a GPU off the bus.
    pub fn gpm_counters(&self, gpu: u32, gpu_instance_id: Option<u32>) -> Result<GpmCounters, BackendError> {
        self.read_gpu(gpu, |g| {
            g.require_gpm()?;
            if let Some(gi) = gpu_instance_id {
                g.require_mig("sample a GPU instance")?;
                g.gi_index(gi)?;
            }
            let now = now_us();
            Ok(g.state
                .activity
                .iter()
                .find(|t| t.gpu_instance_id == gpu_instance_id)
                .map_or(GpmCounters::idle(now), |t| t.counters_at(now)))
        })
    }

    /// End a simulated process.
    pub fn detach_process(&self, gpu: u32, pid: u32) -> Result<(), BackendError> {
        self.with_gpu(gpu, |g| match g.state.processes.iter().position(|p| p.pid == pid) {
            Some(i) => {
                g.state.processes.remove(i);
                Ok(())
            }
            None => Err(BackendError::NotFound { gpu: g.gref(), what: format!("no process with pid {pid}") }),
        })
    }
}

impl<'a> Gpu<'a, &'a mut SimGpu> {
    fn push_process(&mut self, p: ProcessInfo) -> Result<(), BackendError> {
        if let Some(old) = self.state.processes.iter().find(|q| q.pid == p.pid) {
            return Err(BackendError::InvalidArgument { what: format!("{} already runs {old}", self.gref()) });
        }
        self.state.processes.push(p);
        self.state.processes.sort_by_key(|p| p.pid);
        Ok(())
    }
}

impl MigBackend for SimBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Simulated
    }

    fn reset_gpu(&self, gpu: u32) -> Result<(), BackendError> {
        SimBackend::reset_gpu(self, gpu)
    }

    /// Every GPU; like NVML, `GpuLost` when one of them fell off the bus (use
    /// [`MigBackend::devices_partial`] to read the others).
    fn devices(&self) -> Result<Vec<DeviceInfo>, BackendError> {
        self.devices_partial()?.into_iter().map(|d| d.map_err(|f| f.error)).collect()
    }

    // The per-GPU results are collected into a list, not passed up through `?`: their size does
    // not matter.
    #[allow(clippy::result_large_err)]
    fn devices_partial(&self) -> Result<Vec<Result<DeviceInfo, FailedGpu>>, BackendError> {
        let lost = self.lost_gpus()?;
        Ok(self
            .devices
            .iter()
            .map(|d| {
                if lost.contains(&d.index) {
                    Err(FailedGpu { gpu: d.gpu_ref(), device: None, error: BackendError::GpuLost { gpu: d.gpu_ref() } })
                } else {
                    Ok(d.clone())
                }
            })
            .collect())
    }

    fn mig_mode(&self, gpu: u32) -> Result<MigMode, BackendError> {
        self.read_gpu(gpu, |g| Ok(g.state.mig))
    }

    fn set_mig_mode(&self, gpu: u32, enabled: bool) -> Result<MigMode, BackendError> {
        self.with_gpu(gpu, |g| {
            let word = if enabled { "enabled" } else { "disabled" };
            if g.state.mig.current == enabled {
                g.state.mig.pending = enabled;
                return Ok(g.state.mig);
            }
            if !enabled && !g.state.gpu_instances.is_empty() {
                let names: Vec<String> = g.state.gpu_instances.iter().map(|gi| g.gi_label(gi)).collect();
                return Err(BackendError::InUse {
                    gpu: g.gref(),
                    what: format!(
                        "cannot disable MIG while GPU instances exist: {}; destroy them first",
                        names.join(", ")
                    ),
                });
            }
            if !g.state.processes.is_empty() {
                g.state.mig.pending = enabled;
                let procs: Vec<&ProcessInfo> = g.state.processes.iter().collect();
                return Err(BackendError::InUse {
                    gpu: g.gref(),
                    what: format!(
                        "MIG mode stays {} ({word} pending): the GPU is in use by {}; stop them and set the mode again",
                        if enabled { "disabled" } else { "enabled" },
                        list_processes(&procs)
                    ),
                });
            }
            // Ampere (A100, A30) needs a GPU reset for the change; Hopper and later do not
            // (`mig-hardware.md` §5 "MIG mode"). The change waits for `reset_gpu` (or a reboot).
            if g.model.mig_enable_requires_gpu_reset == Some(true) {
                g.state.mig.pending = enabled;
            } else {
                g.state.mig = MigMode { current: enabled, pending: enabled };
            }
            Ok(g.state.mig)
        })
    }

    fn gpu_instance_profiles(&self, gpu: u32) -> Result<Vec<GpuInstanceProfileInfo>, BackendError> {
        self.read_gpu(gpu, |g| {
            g.require_mig("list GPU instance profiles")?;
            Ok(g.model.profiles.iter().map(|p| profile_info(g.model, p)).collect())
        })
    }

    fn possible_placements(&self, gpu: u32, profile_id: u32) -> Result<Vec<PlacementRange>, BackendError> {
        self.read_gpu(gpu, |g| {
            g.require_mig("list placements")?;
            let p = g.profile(profile_id)?;
            let units = u32::from(g.model.placement_units);
            Ok(p.placements
                .iter()
                .filter(|&&s| u32::from(s) + u32::from(p.placement_size) <= units)
                .map(|&start| PlacementRange { start, size: p.placement_size })
                .collect())
        })
    }

    fn create_gpu_instance(
        &self,
        gpu: u32,
        profile_id: u32,
        placement: Option<u8>,
    ) -> Result<GpuInstanceInfo, BackendError> {
        let out = self.with_gpu(gpu, |g| {
            g.require_mig("create GPU instances")?;
            let p = g.profile(profile_id)?;
            let layout = g.layout();
            let insufficient = |detail: String| BackendError::InsufficientResources {
                gpu: g.gref(),
                profile: format!("{} (profile {})", p.name, p.id),
                placement,
                detail,
            };
            let start = match placement {
                Some(start) => {
                    let mut with = layout.clone();
                    with.push(Instance::new(profile_id, start));
                    let violations = validate(g.model, &with);
                    if !violations.is_empty() {
                        let why: Vec<String> = violations.iter().map(ToString::to_string).collect();
                        return Err(insufficient(why.join("; ")));
                    }
                    start
                }
                None => default_placement::default_placement(g.model, &layout, p).ok_or_else(|| {
                    insufficient(if layout.is_empty() {
                        "no legal placement".to_string()
                    } else {
                        format!(
                            "no free legal placement next to {}",
                            g.state.gpu_instances.iter().map(|gi| g.gi_label(gi)).collect::<Vec<_>>().join(", ")
                        )
                    })
                })?,
            };
            let taken: Vec<u32> = g.state.gpu_instances.iter().map(|gi| gi.id).collect();
            let id = assign_gi_id(g.model, start, p.placement_size, &taken)
                .ok_or_else(|| insufficient(format!("all {MAX_GI_IDS} GPU instance ids are in use")))?;
            let gi = SimGi { id, profile_id, start, compute_instances: Vec::new() };
            let info = g.gi_info(&gi);
            g.state.gpu_instances.push(gi);
            g.state.gpu_instances.sort_by_key(|gi| gi.id);
            Ok(info)
        });
        self.driver_time(&out);
        out
    }

    fn create_compute_instance(
        &self,
        gpu: u32,
        gpu_instance_id: u32,
        ci_profile_id: u32,
    ) -> Result<ComputeInstanceInfo, BackendError> {
        self.with_gpu_gen(gpu, |g, generation| {
            g.require_mig("create compute instances")?;
            let gi_idx = g.gi_index(gpu_instance_id)?;
            let gi = &g.state.gpu_instances[gi_idx];
            let gi_label = g.gi_label(gi);
            let gp = g.profile(gi.profile_id)?;
            let offered = g.model.compute_instance_profiles(gp.compute_slices);
            let Some(cp) = offered.iter().find(|c| c.id == ci_profile_id) else {
                let list: Vec<String> = offered.iter().map(|c| format!("{} ({})", c.id, ci_name(c, gp))).collect();
                return Err(BackendError::InvalidArgument {
                    what: format!(
                        "{}: {gi_label} has no compute instance profile {ci_profile_id}; it offers {}",
                        g.gref(),
                        if list.is_empty() { "none".to_string() } else { list.join(", ") }
                    ),
                });
            };
            let insufficient = |detail: String| BackendError::InsufficientResources {
                gpu: g.gref(),
                profile: format!("compute instance {} (profile {}) in {gi_label}", ci_name(cp, gp), cp.id),
                placement: None,
                detail,
            };
            let same = gi.compute_instances.iter().filter(|c| c.profile_id == cp.id).count();
            if same >= usize::from(cp.max_count) {
                return Err(insufficient(format!("at most {} of this profile per GPU instance", cp.max_count)));
            }
            let used: u32 = gi.compute_instances.iter().map(|c| u32::from(c.size)).sum();
            if used + u32::from(cp.compute_slices) > u32::from(gp.compute_slices) {
                return Err(insufficient(format!("{used} of {} compute slices are already used", gp.compute_slices)));
            }
            let occupied =
                gi.compute_instances.iter().fold(0u32, |m, c| m | tessera_mig::layout::unit_mask(c.start, c.size));
            let mut starts = cp.placements.clone();
            starts.sort_unstable();
            let start = starts
                .into_iter()
                .filter(|&s| u32::from(s) + u32::from(cp.placement_size) <= u32::from(gp.compute_slices))
                .find(|&s| tessera_mig::layout::unit_mask(s, cp.placement_size) & occupied == 0)
                .ok_or_else(|| insufficient("no free placement for it among the compute slices".to_string()))?;
            let Some(id) = (0..MAX_CI_IDS).find(|id| !gi.compute_instances.iter().any(|c| c.id == *id)) else {
                return Err(insufficient(format!("all {MAX_CI_IDS} compute instance ids are in use")));
            };
            *generation += 1;
            let ci = SimCi {
                id,
                profile_id: cp.id,
                start,
                size: cp.placement_size,
                uuid: ids::mig_uuid(&g.dev.uuid, gpu_instance_id, id, *generation),
            };
            let gi = &mut g.state.gpu_instances[gi_idx];
            gi.compute_instances.push(ci);
            gi.compute_instances.sort_by_key(|c| c.id);
            let gi = &g.state.gpu_instances[gi_idx];
            let ci = gi.compute_instances.iter().find(|c| c.id == id).ok_or_else(|| g.vanished(gpu_instance_id))?;
            Ok(g.ci_info(gi, ci))
        })
    }

    fn destroy_compute_instance(
        &self,
        gpu: u32,
        gpu_instance_id: u32,
        compute_instance_id: u32,
    ) -> Result<(), BackendError> {
        self.with_gpu(gpu, |g| {
            g.require_mig("destroy compute instances")?;
            let gi_idx = g.gi_index(gpu_instance_id)?;
            let gi = &g.state.gpu_instances[gi_idx];
            let Some(ci_idx) = gi.compute_instances.iter().position(|c| c.id == compute_instance_id) else {
                return Err(BackendError::NotFound {
                    gpu: g.gref(),
                    what: format!("no compute instance {compute_instance_id} in {}", g.gi_label(gi)),
                });
            };
            let procs = g.processes_on(gpu_instance_id, Some(compute_instance_id));
            if !procs.is_empty() {
                return Err(BackendError::InUse {
                    gpu: g.gref(),
                    what: format!(
                        "compute instance {compute_instance_id} of {} ({}) is used by {}",
                        g.gi_label(gi),
                        gi.compute_instances[ci_idx].uuid,
                        list_processes(&procs)
                    ),
                });
            }
            g.state.gpu_instances[gi_idx].compute_instances.remove(ci_idx);
            Ok(())
        })
    }

    fn destroy_gpu_instance(&self, gpu: u32, gpu_instance_id: u32) -> Result<(), BackendError> {
        let out = self.with_gpu(gpu, |g| {
            g.require_mig("destroy GPU instances")?;
            let gi_idx = g.gi_index(gpu_instance_id)?;
            let gi = &g.state.gpu_instances[gi_idx];
            let procs = g.processes_on(gpu_instance_id, None);
            if !procs.is_empty() {
                return Err(BackendError::InUse {
                    gpu: g.gref(),
                    what: format!("{} is used by {}", g.gi_label(gi), list_processes(&procs)),
                });
            }
            if !gi.compute_instances.is_empty() {
                let cis: Vec<String> = gi.compute_instances.iter().map(|c| c.id.to_string()).collect();
                return Err(BackendError::InUse {
                    gpu: g.gref(),
                    what: format!(
                        "{} still has compute instance(s) {}; destroy them first",
                        g.gi_label(gi),
                        cis.join(", ")
                    ),
                });
            }
            g.state.gpu_instances.remove(gi_idx);
            Ok(())
        });
        self.driver_time(&out);
        out
    }

    fn gpu_instances(&self, gpu: u32) -> Result<Vec<GpuInstanceInfo>, BackendError> {
        self.read_gpu(gpu, |g| {
            g.require_mig("list GPU instances")?;
            Ok(g.state.gpu_instances.iter().map(|gi| g.gi_info(gi)).collect())
        })
    }

    fn compute_instances(&self, gpu: u32, gpu_instance_id: u32) -> Result<Vec<ComputeInstanceInfo>, BackendError> {
        self.read_gpu(gpu, |g| {
            g.require_mig("list compute instances")?;
            let gi = &g.state.gpu_instances[g.gi_index(gpu_instance_id)?];
            Ok(gi.compute_instances.iter().map(|ci| g.ci_info(gi, ci)).collect())
        })
    }

    fn processes(&self, gpu: u32) -> Result<Vec<ProcessInfo>, BackendError> {
        self.read_gpu(gpu, |g| Ok(g.state.processes.clone()))
    }

    /// Every pending Xid, at once, consumed: like `nvmlEventSetWait`, it waits until one is
    /// raised or `timeout_ms` has passed (returning nothing then), polling the state every
    /// [`XID_POLL`] without holding its lock in between, so a watcher loop neither spins nor
    /// keeps others out. A poll of an unchanged state file neither parses nor writes it.
    fn wait_xid_events(&self, timeout_ms: u32) -> Result<Vec<XidEvent>, BackendError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(u64::from(timeout_ms));
        loop {
            let pending = self.read(|state| Ok(!state.pending_xids.is_empty()))?;
            let events =
                if pending { self.modify(|state| Ok(std::mem::take(&mut state.pending_xids)))? } else { Vec::new() };
            let now = std::time::Instant::now();
            if !events.is_empty() || now >= deadline {
                return Ok(events);
            }
            std::thread::sleep(XID_POLL.min(deadline - now));
        }
    }

    fn observe(&self, gpu: u32) -> Result<GpuObservation, BackendError> {
        let dev = self.device(gpu)?;
        self.read(|state| {
            let boot_id = state.boot_id();
            let g = state.gpus.get(dev.index as usize).ok_or_else(|| self.no_gpu(gpu))?;
            if g.lost {
                return Err(BackendError::GpuLost { gpu: dev.gpu_ref() });
            }
            Ok(GpuObservation {
                reset_count: Some(g.reset_count),
                recovery_action: Some(g.recovery_action),
                boot_id: Some(boot_id),
            })
        })
    }

    fn gpm_supported(&self, gpu: u32) -> Result<bool, BackendError> {
        self.read_gpu(gpu, |g| Ok(gpm_supported_by(g.model)))
    }

    /// [`SimBackend::gpm_counters`], and the metrics since this backend's previous sample of the
    /// same GPU or instance ([`GpmCounters::metrics_since`], the stand-in NVML's arithmetic too).
    fn gpm_sample(&self, gpu: u32, gpu_instance_id: Option<u32>) -> Result<Option<GpmMetrics>, BackendError> {
        let key = (gpu, gpu_instance_id);
        let now = match self.gpm_counters(gpu, gpu_instance_id) {
            Ok(c) => c,
            Err(e) => {
                guard(&self.gpm_samples).remove(&key);
                return Err(e);
            }
        };
        let mut samples = guard(&self.gpm_samples);
        let Some(before) = samples.get(&key).copied() else {
            samples.insert(key, now);
            return Ok(None);
        };
        // Two samples within a microsecond: no interval yet; the earlier one stays.
        let Some(metrics) = now.metrics_since(&before) else { return Ok(None) };
        samples.insert(key, now);
        Ok(Some(metrics))
    }
}

/// Microseconds since the epoch: the GPM samples' clock (the state, and so the activity
/// declarations, are shared between processes).
fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The driver's reaction to Xid `xid` on GPU `gpu` (see [`SimBackend::apply_xid`]).
fn apply_xid(state: &mut SimState, gpu: u32, xid: u64) {
    let Some(g) = state.gpus.get_mut(gpu as usize) else {
        return;
    };
    let action = match classify(xid).recovery {
        Recovery::RebootNode => RecoveryAction::NodeReboot,
        Recovery::ResetGpu => RecoveryAction::GpuReset,
        Recovery::None | Recovery::Quiet => return,
    };
    if Recovery::for_action(action) > Recovery::for_action(g.recovery_action) {
        g.recovery_action = action;
    }
    if xid == 79 {
        g.lost = true;
    }
}

impl<S: Deref<Target = SimGpu>> Gpu<'_, S> {
    fn vanished(&self, gpu_instance_id: u32) -> BackendError {
        BackendError::NotFound { gpu: self.gref(), what: format!("GPU instance {gpu_instance_id} vanished") }
    }
}

/// A state-file error in the backend's terms (the lock's timeout names the state file).
fn state_file_error(path: &Path, e: StateFileError) -> BackendError {
    match e {
        StateFileError::Io { path, source } => BackendError::Io { path, source },
        StateFileError::Locked { lock_path, waited, .. } => BackendError::State {
            path: path.to_path_buf(),
            detail: format!("locked by another process for more than {} s ({})", waited.as_secs(), lock_path.display()),
        },
    }
}

#[cfg(test)]
thread_local! {
    /// How many times this thread parsed a state file (the cache's tests count them).
    static PARSES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The state in the file's `bytes`, checked.
fn parse_state(path: &Path, bytes: &[u8]) -> Result<SimState, BackendError> {
    #[cfg(test)]
    PARSES.with(|p| p.set(p.get() + 1));
    let corrupt = |detail: String| BackendError::State { path: path.to_path_buf(), detail };
    let text = std::str::from_utf8(bytes)
        .map_err(|_| corrupt("unreadable: not UTF-8 text, so not a Tessera simulated-node state file".into()))?;
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| corrupt(format!("corrupt: not a Tessera simulated-node state file ({e})")))?;
    match value.get("format").and_then(serde_json::Value::as_str) {
        Some(FORMAT) => {}
        Some(other) => return Err(corrupt(format!("unsupported format '{other}' (this build reads '{FORMAT}')"))),
        None => return Err(corrupt("corrupt: not a Tessera simulated-node state file (no 'format')".into())),
    }
    let state: SimState =
        serde_json::from_value(value).map_err(|e| corrupt(format!("corrupt simulated-node state: {e}")))?;
    check_state(&state).map_err(corrupt)?;
    Ok(state)
}

/// The invariants the rest of the code relies on.
fn check_state(state: &SimState) -> Result<(), String> {
    if state.gpus.len() != state.spec.gpu_count() as usize {
        return Err(format!(
            "corrupt: {} GPU entries for a node of {} GPUs ('{}')",
            state.gpus.len(),
            state.spec.gpu_count(),
            state.spec
        ));
    }
    for (i, (gpu, model)) in state.gpus.iter().zip(state.spec.models()).enumerate() {
        let layout: Vec<Instance> = gpu.gpu_instances.iter().map(|g| Instance::new(g.profile_id, g.start)).collect();
        let violations = validate(model, &layout);
        if let Some(v) = violations.first() {
            return Err(format!("corrupt: the layout of GPU {i} is impossible on {}: {v}", model.name));
        }
        if !gpu.mig.current && !gpu.gpu_instances.is_empty() {
            return Err(format!("corrupt: GPU {i} has GPU instances but MIG disabled"));
        }
        if let Some(t) = gpu.activity.iter().find(|t| !t.is_valid()) {
            return Err(format!("corrupt: an activity of GPU {i} is more than 1: {:?}", t.activity()));
        }
    }
    if let Some(x) = state.pending_xids.iter().find(|x| x.gpu >= state.spec.gpu_count()) {
        return Err(format!("corrupt: a pending {x} names a GPU the node does not have"));
    }
    Ok(())
}

/// Write the state atomically ([`statefile::write_atomic`]); the bytes written.
fn write_state(path: &Path, state: &SimState) -> Result<Vec<u8>, BackendError> {
    let mut bytes = serde_json::to_vec_pretty(state)
        .map_err(|e| BackendError::State { path: path.to_path_buf(), detail: format!("cannot serialize: {e}") })?;
    bytes.push(b'\n');
    statefile::write_atomic(path, &bytes).map_err(|e| state_file_error(path, e))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests;
