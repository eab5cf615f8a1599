//! MPS control daemons for pods' MPS replicas: one `nvidia-cuda-mps-control -d` per MPS-shared
//! resource, kept in step with the advertised inventory, as NVIDIA's device plugin runs them in
//! its `mps-control-daemon` container (github.com/NVIDIA/k8s-device-plugin,
//! `cmd/mps-control-daemon/main.go`, `mps/daemon.go`, `mps/root.go`, `mps/manager.go`; read,
//! not copied).
//!
//! **What a control daemon is** ([`daemon_specs`], pure). With `sharing.mps`, each resource
//! whose devices are replicas (whole GPUs: MPS on MIG is refused earlier) gets one, NVIDIA's
//! layout under `flags.mpsRoot`: `CUDA_VISIBLE_DEVICES` = the resource's GPUs' UUIDs in index
//! order, `CUDA_MPS_PIPE_DIRECTORY=<mps_root>/<resource>/pipe` (exactly what `Allocate` mounts
//! into the pods, `tessera_kube_core::allocate`), `CUDA_MPS_LOG_DIRECTORY=<mps_root>/<resource>/log`;
//! once it runs, in NVIDIA's order, every GPU's `set_default_device_pinned_mem_limit <uuid>
//! <memory/replicas>M` (NVIDIA names the device by index; the UUID is the same device whatever
//! the order, and GPUs whose memory is unknown get none, as NVIDIA skips a zero) and
//! `set_default_active_thread_percentage <100/replicas>` (at least 1). The resource name is the
//! advertised one (`<name>.shared` with `renameByDefault`), since that is the pipe directory the
//! pods are given.
//!
//! **How they are kept** ([`MpsDaemons`], [`keep_in_step`]):
//! - started when the resource appears, and started again (quit first) when it gains a GPU the
//!   running one does not serve or its limits change; *not* when it only loses one: a GPU one
//!   of Tessera's own jobs holds whole is not advertised while it does, and quitting the
//!   control daemon would cut the pods on the other GPUs off their MPS server while no pod can
//!   be given the lost GPU anyway.
//! - quit when the resource is gone from the inventory (no pod can hold a replica of it).
//! - recorded, once its defaults are set (NVIDIA's `.started` marker), in
//!   `<mps_root>/<resource>/tessera-mps-daemon.json`: a restarted agent adopts every recorded
//!   daemon [`MpsControl::is_running`] says is up, without restarting it, and forgets the rest;
//!   one that answers but was never recorded (a start cut short) is quit and started again.
//! - left running when the agent stops. NVIDIA's `mps-control-daemon` container quits its
//!   daemons when it is stopped, but it is a container of its own, beside the plugin, which
//!   restarts without touching them; Tessera's agent is both, restarts for upgrades, and the
//!   pods' holds outlive it, so their MPS server must too. (A DaemonSet's container runtime ends
//!   every process of the agent's container when it stops; the next agent then finds the
//!   recorded daemon gone and starts it again.)
//! - checked every [`LIVENESS_CHECK`]: one no longer running is started again.
//! - a failure (a start, a default, a quit) is logged with the resource and the pipe directory,
//!   once while it stays the same, and tried again at the next snapshot or retry tick.
//!
//! **As root, for every pod.** The device plugin API never tells a plugin a pod's uid, so the
//! control daemon cannot run as the pods' user the way the daemon's own MPS jobs' daemons do
//! (one user per instance): it runs as the agent (root), and the control daemon starts one MPS
//! server per client uid, one at a time on a GPU (pods of different uids take turns), as under
//! NVIDIA's plugin. Its pipe directory is made `0755`, as NVIDIA's is, so a pod of any uid
//! reaches the control socket. `<mps_root>/shm`, which `Allocate` mounts as the pods'
//! `/dev/shm`, is created (`1777`) when missing; NVIDIA mounts a tmpfs there (`mount-shm`), and
//! the MPS server's own `/dev/shm` must be that directory too, which is the deployment's part.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tessera_exec::{ExecError, MpsControl, RunAs};
use tessera_host::files::{WriteOptions, write_atomic};
use tessera_kube_core::{Inventory, PluginConfig, PluginDevice, ResourceName, SharingStrategy};
use tokio::sync::watch;

use crate::source::NodeSnapshot;

/// The file, beside a resource's pipe and log directories, that records the control daemon
/// Tessera started there (a [`DaemonSpec`] as JSON).
pub const RECORD_FILE: &str = "tessera-mps-daemon.json";

/// How often every kept control daemon is asked whether it still runs.
pub const LIVENESS_CHECK: Duration = Duration::from_secs(30);

/// One resource's control daemon: where it lives, what it serves, the defaults it is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonSpec {
    pub resource: ResourceName,
    /// `<mps_root>/<resource>/pipe`.
    pub pipe_dir: PathBuf,
    /// `<mps_root>/<resource>/log`.
    pub log_dir: PathBuf,
    /// GPU UUIDs, in GPU index order: its `CUDA_VISIBLE_DEVICES`.
    pub devices: Vec<String>,
    /// `set_default_active_thread_percentage`: 100/replicas, at least 1.
    pub active_thread_percentage: u32,
    /// `set_default_device_pinned_mem_limit` per GPU (UUID, memory/replicas MiB), in
    /// [`DaemonSpec::devices`]' order (GPUs of unknown memory have none).
    pub pinned_mem_mib: Vec<(String, u64)>,
}

impl DaemonSpec {
    /// The directory holding the pipe and log directories and the record.
    pub fn dir(&self) -> &Path {
        self.pipe_dir.parent().unwrap_or(&self.pipe_dir)
    }

    /// The control daemon's `CUDA_VISIBLE_DEVICES`: the UUIDs comma-separated.
    pub fn visible_devices(&self) -> String {
        self.devices.join(",")
    }

    /// Whether a control daemon started as `self` also serves `wanted`: the same directories
    /// and thread percentage, and every GPU `wanted` has among its own with the same limit.
    pub fn covers(&self, wanted: &DaemonSpec) -> bool {
        self.resource == wanted.resource
            && self.pipe_dir == wanted.pipe_dir
            && self.log_dir == wanted.log_dir
            && self.active_thread_percentage == wanted.active_thread_percentage
            && wanted.devices.iter().all(|d| self.devices.contains(d))
            && wanted.devices.iter().all(|d| self.pinned(d) == wanted.pinned(d))
    }

    /// The pinned-memory limit of `uuid`, if it has one.
    pub fn pinned(&self, uuid: &str) -> Option<u64> {
        self.pinned_mem_mib.iter().find(|(u, _)| u == uuid).map(|(_, mib)| *mib)
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "resource": self.resource.as_str(),
            "pipe_dir": self.pipe_dir,
            "log_dir": self.log_dir,
            "devices": self.devices,
            "active_thread_percentage": self.active_thread_percentage,
            "pinned_mem_mib": self.pinned_mem_mib.iter().map(|(u, m)| serde_json::json!([u, m])).collect::<Vec<_>>(),
        })
    }

    fn from_json(value: &serde_json::Value) -> Option<DaemonSpec> {
        let text = |k: &str| value.get(k).and_then(serde_json::Value::as_str);
        let pinned = value.get("pinned_mem_mib")?.as_array()?;
        Some(DaemonSpec {
            resource: ResourceName::parse(text("resource")?).ok()?,
            pipe_dir: PathBuf::from(text("pipe_dir")?),
            log_dir: PathBuf::from(text("log_dir")?),
            devices: value
                .get("devices")?
                .as_array()?
                .iter()
                .map(|d| d.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()?,
            active_thread_percentage: u32::try_from(value.get("active_thread_percentage")?.as_u64()?).ok()?,
            pinned_mem_mib: pinned
                .iter()
                .map(|pair| Some((pair.get(0)?.as_str()?.to_owned(), pair.get(1)?.as_u64()?)))
                .collect::<Option<_>>()?,
        })
    }
}

/// The control daemons `inventory` asks for under `config` (see the module header): none
/// unless the sharing strategy is MPS; one per resource with replicated whole GPUs.
pub fn daemon_specs(config: &PluginConfig, inventory: &Inventory) -> BTreeMap<ResourceName, DaemonSpec> {
    let mut out = BTreeMap::new();
    if config.sharing.strategy() != SharingStrategy::Mps {
        return out;
    }
    let root = config.mps_root.trim_end_matches('/');
    for (resource, devices) in &inventory.resources {
        let mut gpus: Vec<&PluginDevice> = Vec::new();
        for d in devices.iter().filter(|d| d.replicas > 1 && d.mig_uuid.is_none()) {
            if !gpus.iter().any(|g| g.gpu_uuid == d.gpu_uuid) {
                gpus.push(d);
            }
        }
        let Some(replicas) = gpus.iter().map(|d| d.replicas).max() else { continue };
        gpus.sort_by_key(|d| (d.gpu_index, d.gpu_uuid.clone()));
        let pinned_mem_mib = gpus
            .iter()
            .filter_map(|d| Some((d.gpu_uuid.clone(), d.memory_mib? / u64::from(replicas))))
            .filter(|(_, mib)| *mib > 0)
            .collect();
        out.insert(
            resource.clone(),
            DaemonSpec {
                resource: resource.clone(),
                pipe_dir: PathBuf::from(format!("{root}/{resource}/pipe")),
                log_dir: PathBuf::from(format!("{root}/{resource}/log")),
                devices: gpus.iter().map(|d| d.gpu_uuid.clone()).collect(),
                active_thread_percentage: (100 / replicas).max(1),
                pinned_mem_mib,
            },
        );
    }
    out
}

/// What went wrong with one resource's control daemon.
#[derive(Debug, thiserror::Error)]
pub enum MpsDaemonError {
    /// The control program (or the simulated node's recording) refused or failed.
    #[error("MPS control daemon of {resource} ({}): {source}", .pipe_dir.display())]
    Control {
        resource: ResourceName,
        pipe_dir: PathBuf,
        #[source]
        source: Box<ExecError>,
    },
    /// A directory or the record could not be made.
    #[error("MPS control daemon of {resource} ({}): {}: {source}", .pipe_dir.display(), .path.display())]
    Io {
        resource: ResourceName,
        pipe_dir: PathBuf,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The MPS-shared resources' control daemons on this node, through the engine's MPS control
/// (the real program, or the simulated node's recording). Its calls block.
pub struct MpsDaemons {
    mps: Arc<dyn MpsControl>,
    config: PluginConfig,
    /// Who the control daemons run as: this process (root on a node).
    user: RunAs,
    /// The daemons kept (started or adopted), by resource, as started.
    running: BTreeMap<ResourceName, DaemonSpec>,
    /// The last failure logged per resource (each is logged once while it stays the same).
    failing: BTreeMap<ResourceName, String>,
}

impl std::fmt::Debug for MpsDaemons {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpsDaemons").field("running", &self.running).field("failing", &self.failing).finish()
    }
}

impl MpsDaemons {
    /// Nothing kept yet; [`MpsDaemons::adopt`] finds what a previous agent left.
    pub fn new(mps: Arc<dyn MpsControl>, config: PluginConfig) -> MpsDaemons {
        let user = RunAs { uid: tessera_host::effective_uid(), gid: tessera_host::effective_gid(), groups: Vec::new() };
        MpsDaemons { mps, config, user, running: BTreeMap::new(), failing: BTreeMap::new() }
    }

    /// The daemons kept now, by resource.
    pub fn running(&self) -> &BTreeMap<ResourceName, DaemonSpec> {
        &self.running
    }

    /// After a restart: every control daemon recorded under `mps_root`
    /// (`<mps_root>/<domain>/<name>/tessera-mps-daemon.json`) that is still up is kept as it is;
    /// the records of gone ones are removed (an unreadable record's daemon is quit). Returns
    /// the resources adopted.
    pub fn adopt(&mut self) -> Vec<ResourceName> {
        let root = PathBuf::from(self.config.mps_root.trim_end_matches('/'));
        let mut adopted = Vec::new();
        for record in record_files(&root) {
            let spec = fs::read(&record)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .and_then(|v| DaemonSpec::from_json(&v));
            let dir = record.parent().unwrap_or(&root);
            match spec {
                Some(spec) if spec.dir() == dir && self.mps.is_running(&spec.pipe_dir) => {
                    tracing::info!(
                        "kubernetes: MPS control daemon of {} ({}) adopted: still running",
                        spec.resource,
                        spec.pipe_dir.display()
                    );
                    adopted.push(spec.resource.clone());
                    self.running.insert(spec.resource.clone(), spec);
                }
                Some(spec) => {
                    tracing::info!(
                        "kubernetes: MPS control daemon of {} ({}) is gone; its record is removed",
                        spec.resource,
                        spec.pipe_dir.display()
                    );
                    remove_record(&record);
                }
                None => {
                    let pipe = dir.join("pipe");
                    tracing::warn!(
                        "kubernetes: {} cannot be read; its control daemon, if any, is quit",
                        record.display()
                    );
                    if self.mps.is_running(&pipe)
                        && let Err(e) = self.mps.quit(&pipe)
                    {
                        tracing::warn!("kubernetes: quitting the MPS control daemon at {}: {e}", pipe.display());
                    }
                    remove_record(&record);
                }
            }
        }
        adopted
    }

    /// Stops keeping every daemon that no longer runs (so the next
    /// [`MpsDaemons::reconcile`] starts it again); returns their resources.
    pub fn check(&mut self) -> Vec<ResourceName> {
        let gone: Vec<ResourceName> =
            self.running.iter().filter(|(_, s)| !self.mps.is_running(&s.pipe_dir)).map(|(r, _)| r.clone()).collect();
        for r in &gone {
            if let Some(spec) = self.running.remove(r) {
                tracing::warn!(
                    "kubernetes: MPS control daemon of {r} ({}) is no longer running; starting it again",
                    spec.pipe_dir.display()
                );
                remove_record(&spec.dir().join(RECORD_FILE));
            }
        }
        gone
    }

    /// Brings the control daemons in step with `inventory`: quits those of resources gone,
    /// starts those of resources new or changed (see the module header). Returns whether every
    /// step succeeded (false: try again later).
    pub fn reconcile(&mut self, inventory: &Inventory) -> bool {
        let wanted = daemon_specs(&self.config, inventory);
        let mut outcomes: Vec<(ResourceName, Result<(), MpsDaemonError>)> = Vec::new();
        let gone: Vec<ResourceName> = self.running.keys().filter(|r| !wanted.contains_key(*r)).cloned().collect();
        for r in gone {
            let quit = self.quit(&r);
            outcomes.push((r, quit));
        }
        // A resource that failed and is no longer wanted has nothing left to fail.
        self.failing.retain(|r, _| wanted.contains_key(r) || self.running.contains_key(r));
        for (r, spec) in wanted {
            if self.running.get(&r).is_some_and(|s| s.covers(&spec)) {
                continue;
            }
            let result = if self.running.contains_key(&r) {
                tracing::info!(
                    "kubernetes: {r}'s GPUs or limits changed ({}); its MPS control daemon is started again",
                    spec.visible_devices()
                );
                self.quit(&r).and_then(|()| self.start(&spec))
            } else {
                self.start(&spec)
            };
            outcomes.push((r, result));
        }
        let mut in_step = true;
        for (r, result) in outcomes {
            match result {
                Ok(()) => {
                    if self.failing.remove(&r).is_some() {
                        tracing::info!("kubernetes: MPS control daemon of {r} is in step again");
                    }
                }
                Err(e) => {
                    in_step = false;
                    let text = e.to_string();
                    if self.failing.get(&r) != Some(&text) {
                        tracing::warn!("kubernetes: {text}; tried again later");
                        self.failing.insert(r, text);
                    }
                }
            }
        }
        in_step
    }

    /// Quits `resource`'s kept daemon (nothing to do when it no longer runs) and forgets it.
    fn quit(&mut self, resource: &ResourceName) -> Result<(), MpsDaemonError> {
        let Some(spec) = self.running.get(resource) else { return Ok(()) };
        if self.mps.is_running(&spec.pipe_dir) {
            self.mps.quit(&spec.pipe_dir).map_err(|source| MpsDaemonError::Control {
                resource: resource.clone(),
                pipe_dir: spec.pipe_dir.clone(),
                source: Box::new(source),
            })?;
        }
        tracing::info!("kubernetes: MPS control daemon of {resource} ({}) quit", spec.pipe_dir.display());
        remove_record(&spec.dir().join(RECORD_FILE));
        self.running.remove(resource);
        Ok(())
    }

    /// Starts `spec`'s control daemon, sets its defaults and records it; a daemon that answers
    /// at its pipe directory but is not kept (a start cut short) is quit first, and one whose
    /// defaults cannot be set is quit again.
    fn start(&mut self, spec: &DaemonSpec) -> Result<(), MpsDaemonError> {
        let control = |source: ExecError| MpsDaemonError::Control {
            resource: spec.resource.clone(),
            pipe_dir: spec.pipe_dir.clone(),
            source: Box::new(source),
        };
        let io_err = |path: &Path, source: io::Error| MpsDaemonError::Io {
            resource: spec.resource.clone(),
            pipe_dir: spec.pipe_dir.clone(),
            path: path.to_path_buf(),
            source,
        };
        let shm = PathBuf::from(format!("{}/shm", self.config.mps_root.trim_end_matches('/')));
        if !shm.is_dir() {
            fs::create_dir_all(&shm).map_err(|e| io_err(&shm, e))?;
            fs::set_permissions(&shm, fs::Permissions::from_mode(0o1777)).map_err(|e| io_err(&shm, e))?;
        }
        if self.mps.is_running(&spec.pipe_dir) {
            tracing::warn!(
                "kubernetes: an MPS control daemon Tessera did not record answers at {}; quit and started again",
                spec.pipe_dir.display()
            );
            self.mps.quit(&spec.pipe_dir).map_err(control)?;
        }
        self.mps.start(&spec.visible_devices(), &spec.pipe_dir, &spec.log_dir, &self.user).map_err(control)?;
        let configured = (|| {
            fs::set_permissions(&spec.pipe_dir, fs::Permissions::from_mode(0o755))
                .map_err(|e| io_err(&spec.pipe_dir, e))?;
            for (uuid, mib) in &spec.pinned_mem_mib {
                self.mps.set_default_device_pinned_mem_limit(&spec.pipe_dir, uuid, *mib).map_err(control)?;
            }
            self.mps
                .set_default_active_thread_percentage(&spec.pipe_dir, spec.active_thread_percentage)
                .map_err(control)?;
            let record = spec.dir().join(RECORD_FILE);
            write_atomic(&record, spec.to_json().to_string().as_bytes(), WriteOptions::PRIVATE_DURABLE)
                .map_err(|e| io_err(&record, e))
        })();
        if let Err(e) = configured {
            let _ = self.mps.quit(&spec.pipe_dir);
            return Err(e);
        }
        tracing::info!(
            "kubernetes: MPS control daemon of {} started on {} ({}): {}% of the threads, pinned {}",
            spec.resource,
            spec.visible_devices(),
            spec.pipe_dir.display(),
            spec.active_thread_percentage,
            spec.pinned_mem_mib.iter().map(|(u, m)| format!("{u} {m} MiB")).collect::<Vec<_>>().join(", ")
        );
        self.running.insert(spec.resource.clone(), spec.clone());
        Ok(())
    }
}

/// `<root>/<domain>/<name>/tessera-mps-daemon.json` for every resource directory under `root`.
fn record_files(root: &Path) -> Vec<PathBuf> {
    let dirs = |p: &Path| -> Vec<PathBuf> {
        fs::read_dir(p).map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect()).unwrap_or_default()
    };
    let mut out: Vec<PathBuf> =
        dirs(root).iter().flat_map(|d| dirs(d)).map(|d| d.join(RECORD_FILE)).filter(|f| f.is_file()).collect();
    out.sort();
    out
}

fn remove_record(path: &Path) {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            tracing::warn!("kubernetes: removing {}: {e}", path.display());
        }
        _ => {}
    }
}

/// Keeps `daemons` in step with every snapshot (and, while something failed, every `retry`),
/// checking them every [`LIVENESS_CHECK`]; returns when the snapshots stop. The calls run on a
/// blocking thread, one at a time.
pub async fn keep_in_step(
    mut daemons: MpsDaemons,
    mut snapshots: watch::Receiver<Arc<NodeSnapshot>>,
    retry: Duration,
    mut in_step: bool,
) {
    let start = tokio::time::Instant::now();
    let mut retry_tick = tokio::time::interval_at(start + retry, retry);
    let mut live_tick = tokio::time::interval_at(start + LIVENESS_CHECK, LIVENESS_CHECK);
    for tick in [&mut retry_tick, &mut live_tick] {
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    loop {
        let check = tokio::select! {
            changed = snapshots.changed() => {
                if changed.is_err() {
                    return;
                }
                false
            }
            _ = retry_tick.tick(), if !in_step => false,
            _ = live_tick.tick() => true,
        };
        let inventory = snapshots.borrow_and_update().inventory.clone();
        let Ok((d, ok)) = tokio::task::spawn_blocking(move || {
            if check {
                daemons.check();
            }
            let ok = daemons.reconcile(&inventory);
            (daemons, ok)
        })
        .await
        else {
            return;
        };
        daemons = d;
        in_step = ok;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_kube_core::{AllocateOptions, DeviceHealth, parse_config};

    fn gpu(index: u32, memory_mib: Option<u64>, replicas: u32) -> Vec<PluginDevice> {
        let uuid = format!("GPU-{index}");
        (0..replicas.max(1))
            .map(|n| PluginDevice {
                id: if replicas > 1 { format!("{uuid}::{n}") } else { uuid.clone() },
                health: DeviceHealth::Healthy,
                numa_node: None,
                gpu_index: index,
                gpu_uuid: uuid.clone(),
                mig_uuid: None,
                profile: None,
                gpu_instance_id: None,
                gpu_numa_node: None,
                memory_mib,
                device_nodes: Vec::new(),
                draining: false,
                replicas,
            })
            .collect()
    }

    fn inventory(resources: &[(&str, Vec<Vec<PluginDevice>>)]) -> Inventory {
        Inventory {
            resources: resources
                .iter()
                .map(|(name, gpus)| (ResourceName::parse(name).unwrap(), gpus.iter().flatten().cloned().collect()))
                .collect(),
        }
    }

    const MPS4: &str = "version: v1
flags:
  mpsRoot: /run/mps/
sharing:
  mps:
    resources:
    - name: nvidia.com/gpu
      replicas: 4
";
    const MPS3_RENAMED: &str = "version: v1
sharing:
  mps:
    renameByDefault: true
    resources:
    - name: nvidia.com/gpu
      replicas: 3
";
    const TIME_SLICED: &str = "version: v1
sharing:
  timeSlicing:
    resources:
    - name: nvidia.com/gpu
      replicas: 4
";

    /// The daemon a resource asks for: (config, inventory) → (resource, devices, pipe dir,
    /// thread percentage, pinned limits); `None`: no daemon at all.
    #[test]
    fn daemon_specs_table() {
        type Want<'a> = Option<(&'a str, &'a str, &'a str, u32, &'a [(&'a str, u64)])>;
        let cases: Vec<(&str, &str, Inventory, Want)> = vec![
            (
                "two GPUs, four replicas each: one daemon over both, a quarter each",
                MPS4,
                inventory(&[("nvidia.com/gpu", vec![gpu(1, Some(81559), 4), gpu(0, Some(81559), 4)])]),
                Some((
                    "nvidia.com/gpu",
                    "GPU-0,GPU-1",
                    "/run/mps/nvidia.com/gpu/pipe",
                    25,
                    &[("GPU-0", 20389), ("GPU-1", 20389)],
                )),
            ),
            (
                "renamed: the advertised name's directory, 100/3 rounded down",
                MPS3_RENAMED,
                inventory(&[("nvidia.com/gpu.shared", vec![gpu(0, Some(40960), 3)])]),
                Some((
                    "nvidia.com/gpu.shared",
                    "GPU-0",
                    "/run/nvidia/mps/nvidia.com/gpu.shared/pipe",
                    33,
                    &[("GPU-0", 13653)],
                )),
            ),
            (
                "memory unknown: no pinned limit for that GPU",
                MPS4,
                inventory(&[("nvidia.com/gpu", vec![gpu(0, None, 4), gpu(1, Some(1000), 4)])]),
                Some(("nvidia.com/gpu", "GPU-0,GPU-1", "/run/mps/nvidia.com/gpu/pipe", 25, &[("GPU-1", 250)])),
            ),
            ("not replicated: no daemon", MPS4, inventory(&[("nvidia.com/gpu", vec![gpu(0, Some(81559), 1)])]), None),
            ("no devices at all: no daemon", MPS4, inventory(&[]), None),
            (
                "time-slicing: no daemon",
                TIME_SLICED,
                inventory(&[("nvidia.com/gpu", vec![gpu(0, Some(81559), 4)])]),
                None,
            ),
        ];
        for (what, config, inv, want) in cases {
            let config = parse_config(config, "config.yaml").unwrap();
            let specs = daemon_specs(&config, &inv);
            let got = specs.values().next();
            match (want, got) {
                (None, None) => {}
                (Some((resource, devices, pipe, pct, pinned)), Some(spec)) => {
                    assert_eq!(specs.len(), 1, "{what}");
                    assert_eq!(spec.resource.as_str(), resource, "{what}");
                    assert_eq!(spec.visible_devices(), devices, "{what}");
                    assert_eq!(spec.pipe_dir, Path::new(pipe), "{what}");
                    assert_eq!(spec.log_dir, Path::new(pipe).with_file_name("log"), "{what}");
                    assert_eq!(spec.active_thread_percentage, pct, "{what}");
                    let pinned: Vec<(String, u64)> = pinned.iter().map(|(u, m)| (u.to_string(), *m)).collect();
                    assert_eq!(spec.pinned_mem_mib, pinned, "{what}");
                    assert_eq!(DaemonSpec::from_json(&spec.to_json()).as_ref(), Some(spec), "{what}: the record");
                }
                (want, got) => panic!("{what}: wanted {want:?}, got {got:?}"),
            }
        }
    }

    /// The pipe directory the daemon serves is the one `Allocate` mounts into the pods.
    #[test]
    fn the_pipe_directory_is_the_one_pods_are_given() {
        for config in [MPS4, MPS3_RENAMED] {
            let config = parse_config(config, "config.yaml").unwrap();
            let replicas = config.sharing.mps.as_ref().unwrap().resources[0].replicas;
            let name = config.sharing.mps.as_ref().unwrap().resources[0].rename.clone();
            let name = name.map_or("nvidia.com/gpu".to_string(), |r| r.to_string());
            let inv = inventory(&[(name.as_str(), vec![gpu(0, Some(81559), replicas)])]);
            let spec = daemon_specs(&config, &inv).into_values().next().expect("a daemon");
            let alloc = tessera_kube_core::allocate(
                &["GPU-0::1".to_string()],
                &inv,
                &AllocateOptions { config: config.clone() },
            )
            .unwrap();
            let mounted = alloc.mounts.iter().find(|m| m.container_path.ends_with("/pipe")).expect("the pipe mount");
            assert_eq!(Path::new(&mounted.host_path), spec.pipe_dir, "{name}");
            assert_eq!(alloc.envs["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"], spec.active_thread_percentage.to_string());
        }
    }

    /// The engine's recording MPS control, with starts that fail while `fail` is set.
    struct Flaky {
        inner: tessera_exec::RecordingMps,
        fail: std::sync::atomic::AtomicBool,
    }

    impl MpsControl for Flaky {
        fn start(&self, devices: &str, pipe: &Path, log: &Path, user: &RunAs) -> Result<(), ExecError> {
            if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(ExecError::Mps { command: "start".into(), pipe_dir: pipe.into(), detail: "no GPU".into() });
            }
            self.inner.start(devices, pipe, log, user)
        }
        fn is_running(&self, pipe: &Path) -> bool {
            self.inner.is_running(pipe)
        }
        fn set_default_active_thread_percentage(&self, pipe: &Path, pct: u32) -> Result<(), ExecError> {
            self.inner.set_default_active_thread_percentage(pipe, pct)
        }
        fn set_default_device_pinned_mem_limit(&self, pipe: &Path, uuid: &str, mib: u64) -> Result<(), ExecError> {
            self.inner.set_default_device_pinned_mem_limit(pipe, uuid, mib)
        }
        fn quit(&self, pipe: &Path) -> Result<(), ExecError> {
            self.inner.quit(pipe)
        }
    }

    /// Every recorded command so far: `start <devices>` or the command line.
    fn recorded(log: &Path) -> Vec<String> {
        fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                match v["op"].as_str() {
                    Some("start") => format!("start {}", v["mig_uuid"].as_str().unwrap()),
                    _ => v["stdin"].as_str().unwrap().to_string(),
                }
            })
            .collect()
    }

    /// The keeper's life: started, a GPU fewer kept, failures tried again, adopted after a
    /// restart, started again when gone, quit when the resource goes.
    #[test]
    fn daemons_are_started_kept_adopted_and_quit() {
        let tmp = tempfile::tempdir().unwrap();
        let mut config = parse_config(MPS4, "config.yaml").unwrap();
        config.mps_root = tmp.path().join("mps").display().to_string();
        let log = tmp.path().join("mps.jsonl");
        let flaky = Arc::new(Flaky {
            inner: tessera_exec::RecordingMps::new(&log),
            fail: std::sync::atomic::AtomicBool::new(true),
        });
        let both = inventory(&[("nvidia.com/gpu", vec![gpu(0, Some(800), 4), gpu(1, Some(800), 4)])]);
        let one = inventory(&[("nvidia.com/gpu", vec![gpu(1, Some(800), 4)])]);
        let resource = ResourceName::gpu();
        let pipe = tmp.path().join("mps/nvidia.com/gpu/pipe");
        let record = tmp.path().join("mps/nvidia.com/gpu").join(RECORD_FILE);

        // The start fails: nothing kept, not in step; tried again, it works.
        let mut daemons = MpsDaemons::new(flaky.clone(), config.clone());
        assert!(!daemons.reconcile(&both));
        assert!(daemons.running().is_empty() && !record.exists());
        flaky.fail.store(false, std::sync::atomic::Ordering::SeqCst);
        assert!(daemons.reconcile(&both));
        let started = vec![
            "start GPU-0,GPU-1".to_string(),
            "set_default_device_pinned_mem_limit GPU-0 200M".into(),
            "set_default_device_pinned_mem_limit GPU-1 200M".into(),
            "set_default_active_thread_percentage 25".into(),
        ];
        assert_eq!(recorded(&log), started);
        assert!(record.is_file());
        assert_eq!(fs::metadata(&pipe).unwrap().permissions().mode() & 0o777, 0o755);
        assert_eq!(fs::metadata(tmp.path().join("mps/shm")).unwrap().permissions().mode() & 0o7777, 0o1777);

        // A GPU fewer (one of Tessera's jobs holds it whole): kept as it is.
        assert!(daemons.reconcile(&one));
        assert!(daemons.reconcile(&both));
        assert_eq!(recorded(&log).len(), 4);

        // A restarted agent adopts it without a command.
        let mut daemons = MpsDaemons::new(flaky.clone(), config.clone());
        assert_eq!(daemons.adopt(), vec![resource.clone()]);
        assert!(daemons.reconcile(&both));
        assert_eq!(recorded(&log).len(), 4);

        // It dies: the check notices and the next pass starts it again.
        flaky.inner.quit(&pipe).unwrap();
        assert_eq!(daemons.check(), vec![resource.clone()]);
        assert!(daemons.reconcile(&both));
        assert_eq!(recorded(&log)[5..], started[..]);

        // The resource goes: quit, record removed; a later agent adopts nothing.
        assert!(daemons.reconcile(&Inventory::default()));
        assert_eq!(recorded(&log).last().map(String::as_str), Some("quit"));
        assert!(daemons.running().is_empty() && !record.exists() && !flaky.is_running(&pipe));
        assert!(MpsDaemons::new(flaky.clone(), config.clone()).adopt().is_empty());

        // Not running when a new agent starts (its container was ended): the record is
        // forgotten and the daemon started again.
        assert!(daemons.reconcile(&both));
        flaky.inner.quit(&pipe).unwrap();
        let mut daemons = MpsDaemons::new(flaky.clone(), config);
        assert!(daemons.adopt().is_empty() && !record.exists());
        let before = recorded(&log).len();
        assert!(daemons.reconcile(&both));
        assert_eq!(recorded(&log)[before..], started[..]);
    }

    /// Covering: a running daemon serves a smaller set of its GPUs, not a new GPU or new limits.
    #[test]
    fn covers_table() {
        let config = parse_config(MPS4, "config.yaml").unwrap();
        let spec = |gpus: Vec<Vec<PluginDevice>>| {
            daemon_specs(&config, &inventory(&[("nvidia.com/gpu", gpus)])).into_values().next().unwrap()
        };
        let both = spec(vec![gpu(0, Some(800), 4), gpu(1, Some(800), 4)]);
        let cases = [
            ("the same", spec(vec![gpu(0, Some(800), 4), gpu(1, Some(800), 4)]), true),
            ("one GPU fewer", spec(vec![gpu(1, Some(800), 4)]), true),
            ("a new GPU", spec(vec![gpu(0, Some(800), 4), gpu(2, Some(800), 4)]), false),
            ("other replicas", spec(vec![gpu(0, Some(800), 2), gpu(1, Some(800), 2)]), false),
            ("other memory", spec(vec![gpu(0, Some(400), 4)]), false),
        ];
        for (what, wanted, covered) in cases {
            assert_eq!(both.covers(&wanted), covered, "{what}");
        }
    }
}
