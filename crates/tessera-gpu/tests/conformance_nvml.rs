//! The NVML backend over FFI, against the stand-in `libnvidia-ml.so` (crates/tessera-nvml-standin),
//! which is backed by the simulated node: the whole conformance suite, the mapping of NVML
//! errors to `BackendError`, and fault injection at every create/destroy call of a plan.
//!
//! The stand-in reads its `TESSERA_STANDIN_*` configuration from the environment at `nvmlInit`,
//! and its state is process-global (reset at the last `nvmlShutdown`). So this binary has exactly
//! one test, which runs every scenario in turn: it sets the environment, opens an `NvmlBackend`,
//! and drops it before the next scenario.

// Only `std::env::set_var`/`remove_var` (unsafe since Rust 2024), in `configure` below.
#![allow(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tempfile::TempDir;
use tessera_gpu::conformance::{self, Harness, SPEC};
use tessera_gpu::ids::mig_minors_text;
use tessera_gpu::sim::activity::Activity;
use tessera_gpu::{BackendError, GpmMetric, MigBackend, NodeSpec, NvmlBackend, SimBackend, execute_plan, gpu_view};
use tessera_mig::{GpuModel, Instance, Step, Wanted, catalog};

const STANDIN_VARS: [&str; 10] = [
    "TESSERA_STANDIN_SPEC",
    "TESSERA_STANDIN_STATE",
    "TESSERA_STANDIN_FAULTS",
    "TESSERA_STANDIN_CALLS",
    "TESSERA_STANDIN_XIDS",
    "TESSERA_STANDIN_ACTIVITY",
    "TESSERA_STANDIN_DRIVER_VERSION",
    "TESSERA_STANDIN_NO_MIG",
    "TESSERA_STANDIN_LOST",
    "TESSERA_STANDIN_NO_PERMISSION",
];

/// Replace the stand-in's environment by `vars`.
fn configure(vars: &[(&str, String)]) {
    for name in STANDIN_VARS {
        // SAFETY: this binary's only test runs the scenarios one after another on one thread,
        // and no other thread of the process reads the environment meanwhile.
        unsafe { std::env::remove_var(name) };
    }
    for (name, value) in vars {
        // SAFETY: as above.
        unsafe { std::env::set_var(name, value) };
    }
}

fn library() -> PathBuf {
    tessera_nvml_standin::library_path()
        .expect("the stand-in libnvidia-ml is not built: run `cargo build -p tessera-nvml-standin`")
}

/// One node of "real" GPUs: the stand-in's files in a temp dir.
struct Node {
    dir: TempDir,
    spec: String,
}

impl Node {
    fn new(spec: &str) -> Node {
        // The stand-in rewrites its state file on every change: keep it in memory where we can.
        let dir = tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir()).expect("temp dir");
        std::fs::write(dir.path().join("mig-minors"), mig_minors_text(32)).expect("write mig-minors");
        std::fs::create_dir_all(dir.path().join("sys")).expect("fake sysfs");
        std::fs::write(dir.path().join("boot_id"), "boot-0\n").expect("fake boot id");
        Node { dir, spec: spec.to_string() }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("node.json")
    }

    fn xids(&self) -> PathBuf {
        self.dir.path().join("xids")
    }

    /// The stand-in's activity file (GPM).
    fn activity(&self) -> PathBuf {
        self.dir.path().join("activity")
    }

    /// The fake `/proc/sys/kernel/random/boot_id` the backend reads.
    fn boot_id(&self) -> PathBuf {
        self.dir.path().join("boot_id")
    }

    /// Reboot the node: the simulated node's reboot, and a new boot id.
    fn reboot(&self) -> Result<(), String> {
        self.sim()?.reboot().map_err(|e| e.to_string())?;
        let old = std::fs::read_to_string(self.boot_id()).unwrap_or_default();
        std::fs::write(self.boot_id(), format!("{}x\n", old.trim())).map_err(|e| e.to_string())
    }

    /// Open NVML over the stand-in with the node's files and `extra` environment.
    fn open(&self, extra: &[(&str, &str)]) -> Result<NvmlBackend, String> {
        let mut vars = vec![
            ("TESSERA_STANDIN_SPEC", self.spec.clone()),
            ("TESSERA_STANDIN_STATE", self.state().display().to_string()),
            ("TESSERA_STANDIN_XIDS", self.xids().display().to_string()),
            ("TESSERA_STANDIN_ACTIVITY", self.activity().display().to_string()),
        ];
        vars.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        configure(&vars);
        let b = NvmlBackend::open(Some(&library())).map_err(|e| format!("open NVML: {e}"))?;
        Ok(b.with_mig_minors_path(self.dir.path().join("mig-minors"))
            .with_sysfs_root(self.dir.path().join("sys"))
            .with_boot_id_path(self.boot_id()))
    }

    /// The same node through the simulated backend (processes are simulated there).
    fn sim(&self) -> Result<SimBackend, String> {
        let spec = NodeSpec::parse(&self.spec).map_err(|e| e.to_string())?;
        SimBackend::open(&self.state(), Some(&spec)).map_err(|e| e.to_string())
    }
}

/// The conformance harness: NVML over the stand-in, plus the simulated node on the same state
/// file for what only a test rig can do.
struct NvmlHarness {
    nvml: NvmlBackend,
    sim: SimBackend,
    node: Node,
    /// What the activity file declares, by (GPU, GPU instance).
    activity: Mutex<BTreeMap<(u32, Option<u32>), Activity>>,
}

impl NvmlHarness {
    fn new(spec: &str) -> Result<NvmlHarness, String> {
        let node = Node::new(spec);
        let sim = node.sim()?;
        let nvml = node.open(&[])?;
        Ok(NvmlHarness { nvml, sim, node, activity: Mutex::new(BTreeMap::new()) })
    }
}

impl Harness for NvmlHarness {
    fn backend(&self) -> &dyn MigBackend {
        &self.nvml
    }

    fn attach_process(&self, gpu: u32, gi: u32, ci: u32, pid: u32) -> Result<(), String> {
        self.sim.attach_process(gpu, gi, ci, pid, "conformance").map_err(|e| e.to_string())
    }

    fn detach_process(&self, gpu: u32, pid: u32) -> Result<(), String> {
        self.sim.detach_process(gpu, pid).map_err(|e| e.to_string())
    }

    fn raise_xid(&self, gpu: u32, xid: u64, gi: Option<u32>, ci: Option<u32>) -> Result<(), String> {
        let line = match (gi, ci) {
            (None, None) => format!("{gpu} {xid}\n"),
            (gi, ci) => format!("{gpu} {xid} {} {}\n", gi.unwrap_or(u32::MAX), ci.unwrap_or(u32::MAX)),
        };
        let path = self.node.xids();
        let mut f =
            OpenOptions::new().create(true).append(true).open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        f.write_all(line.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn reset_gpu(&self, gpu: u32) -> Result<(), String> {
        self.sim.reset_gpu(gpu).map_err(|e| e.to_string())
    }

    fn reboot(&self) -> Result<(), String> {
        self.node.reboot()
    }

    /// The whole declaration, rewritten into the stand-in's activity file (its lines in the
    /// 8- or 9-field form, every metric given).
    fn set_activity(&self, gpu: u32, gi: Option<u32>, activity: &Activity) -> Result<(), String> {
        let mut declared = self.activity.lock().map_err(|e| e.to_string())?;
        declared.insert((gpu, gi), *activity);
        let mut text = String::from("# GPU [GI] sm_active sm_occupancy tensor_active dram_active fp64 fp32 fp16\n");
        for ((gpu, gi), a) in declared.iter() {
            let values: Vec<String> = GpmMetric::ALL.iter().map(|m| a.get(*m).to_string()).collect();
            let target = gi.map_or(gpu.to_string(), |gi| format!("{gpu} {gi}"));
            text.push_str(&format!("{target} {}\n", values.join(" ")));
        }
        let path = self.node.activity();
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

type Check = Result<(), String>;
type Scenario = fn() -> Check;

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// The error of `r`, which must be of `kind`, as text.
fn err_of<T: std::fmt::Debug>(r: Result<T, BackendError>, kind: &str, doing: &str) -> Result<String, String> {
    match r {
        Ok(v) => Err(format!("{doing}: expected a {kind} error, got Ok({v:?})")),
        Err(e) if e.kind() == kind => Ok(e.to_string()),
        Err(e) => Err(format!("{doing}: expected a {kind} error, got {} ({e})", e.kind())),
    }
}

fn ok<T>(r: Result<T, BackendError>, doing: &str) -> Result<T, String> {
    r.map_err(|e| format!("{doing}: {e}"))
}

fn model(name: &str) -> &'static GpuModel {
    catalog().model(name).expect("catalog model")
}

fn pid_of(m: &GpuModel, name: &str) -> u32 {
    m.profile(name).expect("catalog profile").id
}

fn no_permission() -> Check {
    let node = Node::new("1xA100-40GB");
    let b = node.open(&[("TESSERA_STANDIN_NO_PERMISSION", "1")])?;
    let uuid = ok(b.devices(), "devices (reads need no permission)")?[0].uuid.clone();
    let msg = err_of(b.create_gpu_instance(0, 19, Some(0)), "no_permission", "create without permission")?;
    ensure!(msg.contains("root") && msg.contains("mig/config"), "says how to get permission: {msg}");
    ensure!(msg.contains(&format!("GPU 0 ({uuid})")) && msg.contains("1g.5gb"), "names the GPU and profile: {msg}");
    err_of(b.set_mig_mode(0, false), "no_permission", "set the MIG mode without permission")?;
    Ok(())
}

fn no_mig() -> Check {
    let node = Node::new("2xA100-40GB");
    let b = node.open(&[("TESSERA_STANDIN_NO_MIG", "0")])?;
    let uuid = ok(b.devices(), "devices")?[0].uuid.clone();
    let msg = err_of(b.mig_mode(0), "not_supported", "MIG mode of a GPU without MIG")?;
    ensure!(msg.contains("does not support MIG") && msg.contains(&uuid), "{msg}");
    let msg = err_of(b.create_gpu_instance(0, 19, Some(0)), "not_supported", "create on a GPU without MIG")?;
    ensure!(msg.contains("does not support MIG"), "{msg}");
    err_of(b.gpu_instance_profiles(0), "not_supported", "profiles of a GPU without MIG")?;
    ensure!(ok(b.mig_mode(1), "MIG mode of GPU 1")?.current, "GPU 1 keeps MIG");
    // The node can still be listed: the GPU shows MIG off.
    let v = ok(tessera_gpu::node_view(&b), "node view")?;
    ensure!(
        !v[0].mig.current && v[1].mig.current,
        "node view MIG modes: {:?}",
        v.iter().map(|g| g.mig).collect::<Vec<_>>()
    );
    Ok(())
}

fn lost() -> Check {
    let node = Node::new("2xA100-40GB");
    let b = node.open(&[("TESSERA_STANDIN_LOST", "1")])?;
    let msg = err_of(b.devices(), "gpu_lost", "devices with GPU 1 lost")?;
    ensure!(msg.contains("GPU 1") && msg.contains("fell off the bus"), "{msg}");
    err_of(b.mig_mode(1), "gpu_lost", "MIG mode of a lost GPU")?;
    err_of(b.gpu_instances(1), "gpu_lost", "GPU instances of a lost GPU")?;
    ensure!(ok(b.mig_mode(0), "MIG mode of GPU 0")?.current, "GPU 0 still answers");
    Ok(())
}

fn old_driver() -> Check {
    let node = Node::new("1xA30");
    let b = node.open(&[("TESSERA_STANDIN_DRIVER_VERSION", "460.73.01")])?;
    ensure!(b.driver_version() == "460.73.01", "driver version {}", b.driver_version());
    let m = model("A30");
    let ids: BTreeSet<u32> = ok(b.gpu_instance_profiles(0), "profiles")?.iter().map(|p| p.id).collect();
    let me = pid_of(m, "1g.6gb+me");
    let me2 = pid_of(m, "2g.12gb+me");
    ensure!(!ids.contains(&me) && !ids.contains(&me2), "an R460 driver reports +me profiles: {ids:?}");
    ensure!(ids.contains(&pid_of(m, "1g.6gb")), "profiles: {ids:?}");
    let msg = err_of(b.create_gpu_instance(0, me, Some(0)), "not_supported", "create 1g.6gb+me on R460")?;
    ensure!(msg.contains("too old") && msg.contains("460.73.01") && msg.contains("R470"), "{msg}");
    let msg = err_of(b.possible_placements(0, me2), "not_supported", "placements of 2g.12gb+me on R460")?;
    ensure!(msg.contains("too old") && msg.contains("R525"), "{msg}");
    let msg = err_of(b.create_gpu_instance(0, 999, None), "invalid_argument", "create profile 999")?;
    ensure!(msg.contains("999") && msg.contains("1g.6gb"), "lists what the driver offers: {msg}");
    let drift = ok(b.catalog_drift(0), "catalog drift")?;
    ensure!(drift.len() == 2 && drift.iter().all(|l| l.contains("older than")), "drift: {drift:?}");
    // A current driver: no drift.
    drop(b);
    let b = node.open(&[])?;
    let drift = ok(b.catalog_drift(0), "catalog drift")?;
    ensure!(drift.is_empty(), "drift with a current driver: {drift:?}");
    Ok(())
}

fn in_use() -> Check {
    let node = Node::new("1xA100-40GB");
    let sim = node.sim()?;
    let b = node.open(&[])?;
    let m = model("A100-40GB");
    let gi = ok(b.create_gpu_instance(0, pid_of(m, "1g.5gb"), Some(0)), "create 1g.5gb@0")?;
    let ci = ok(b.create_compute_instance(0, gi.id, 0), "create its compute instance")?;
    sim.attach_process(0, gi.id, ci.id, 4242, "python").map_err(|e| e.to_string())?;
    let procs = ok(b.instance_processes(0, gi.id, Some(ci.id)), "instance processes")?;
    ensure!(procs.len() == 1 && procs[0].pid == 4242, "processes: {procs:?}");
    let msg = err_of(b.destroy_compute_instance(0, gi.id, ci.id), "in_use", "destroy a busy compute instance")?;
    ensure!(msg.contains("4242") && msg.contains(&ci.uuid) && msg.contains("1g.5gb@0"), "{msg}");
    let msg = err_of(b.destroy_gpu_instance(0, gi.id), "in_use", "destroy a busy GPU instance")?;
    ensure!(msg.contains("4242") && msg.contains(&format!("GPU instance {} (1g.5gb@0)", gi.id)), "{msg}");
    let msg = err_of(b.set_mig_mode(0, false), "in_use", "disable MIG under a process")?;
    ensure!(msg.contains("1g.5gb@0"), "{msg}");
    sim.detach_process(0, 4242).map_err(|e| e.to_string())?;
    let msg = err_of(b.destroy_gpu_instance(0, gi.id), "in_use", "destroy a GPU instance with a compute instance")?;
    ensure!(msg.contains("destroy them first"), "{msg}");
    // The default compute instance spans the GPU instance.
    let gi3 = ok(b.create_gpu_instance(0, pid_of(m, "3g.20gb"), Some(4)), "create 3g.20gb@4")?;
    let def = ok(b.default_compute_instance_profile(0, gi3.id), "default compute instance profile")?;
    ensure!(def.compute_slices == 3 && def.id == 2, "default CI profile of a 3g: {def:?}");
    let offered = ok(b.compute_instance_profiles(0, gi3.id), "compute instance profiles")?;
    ensure!(offered.iter().map(|c| c.id).collect::<Vec<_>>() == [0, 1, 2], "offered: {offered:?}");
    ensure!(ok(b.gpu_instance_remaining_capacity(0, pid_of(m, "1g.5gb")), "remaining capacity")? == 3, "1g.5gb left");
    Ok(())
}

/// `tessera_gpu::open` with a real (stand-in) NVML: `Auto` takes it when it lists GPUs, also
/// with one GPU lost; it is an error, not a fallback, when NVML cannot list them.
fn open_policy() -> Check {
    use tessera_gpu::{BackendChoice, OpenError, OpenOptions};
    let node = Node::new("2xA100-40GB");
    let opts = |choice: BackendChoice, spec: Option<&str>| OpenOptions {
        choice,
        nvml_library: Some(library()),
        sim_spec: spec.map(str::to_string),
        sim_state: node.dir.path().join("sim.json"),
    };
    let env = |extra: &[(&'static str, &str)]| {
        let mut vars = vec![
            ("TESSERA_STANDIN_SPEC", node.spec.clone()),
            ("TESSERA_STANDIN_STATE", node.state().display().to_string()),
        ];
        vars.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        configure(&vars);
    };
    env(&[]);
    {
        let o = tessera_gpu::open::open(&opts(BackendChoice::Auto, None)).map_err(|e| e.to_string())?;
        ensure!(o.node.sim().is_none() && o.fallback.is_none(), "auto did not take NVML: {}", o.description);
        ensure!(o.description == "NVML, driver 580.65.06, 2 GPU(s)", "description: {}", o.description);
    }
    env(&[("TESSERA_STANDIN_LOST", "1")]);
    {
        let o = tessera_gpu::open::open(&opts(BackendChoice::Auto, None)).map_err(|e| e.to_string())?;
        ensure!(o.node.sim().is_none(), "a lost GPU made auto fall back: {}", o.description);
        ensure!(o.description.ends_with("2 GPU(s)"), "description: {}", o.description);
    }
    env(&[("TESSERA_STANDIN_FAULTS", "nvmlDeviceGetCount_v2:1+=UNKNOWN")]);
    match tessera_gpu::open::open(&opts(BackendChoice::Auto, None)) {
        Err(OpenError::NvmlCannotList { .. }) => {}
        Err(e) => return Err(format!("auto with a broken NVML: {e}")),
        Ok(o) => return Err(format!("auto with a broken NVML opened {}", o.description)),
    }
    env(&[]);
    match tessera_gpu::open::open(&opts(BackendChoice::Nvml, Some("1xA30"))) {
        Err(OpenError::SpecWithNvml { .. }) => {}
        other => return Err(format!("NVML with a simulated-node spec: {:?}", other.map(|o| o.description))),
    }
    {
        let o = tessera_gpu::open::open(&opts(BackendChoice::Auto, Some("1xA30"))).map_err(|e| e.to_string())?;
        ensure!(o.node.sim().is_some(), "a spec did not mean the simulated node: {}", o.description);
    }
    Ok(())
}

/// Faults the stand-in injects by return code, and how they are mapped.
fn driver_faults() -> Check {
    let node = Node::new("1xA100-40GB");
    let b = node.open(&[("TESSERA_STANDIN_FAULTS", "nvmlDeviceCreateGpuInstanceWithPlacement:1=UNKNOWN")])?;
    let msg = err_of(b.create_gpu_instance(0, 19, Some(6)), "driver", "create with NVML_ERROR_UNKNOWN")?;
    ensure!(
        msg.contains("nvmlDeviceCreateGpuInstanceWithPlacement")
            && msg.contains("NVML_ERROR_UNKNOWN")
            && msg.contains("GPU 0"),
        "{msg}"
    );
    drop(b);
    let b = node.open(&[("TESSERA_STANDIN_FAULTS", "nvmlDeviceSetMigMode:1=RESET_REQUIRED")])?;
    ok(
        b.set_mig_mode(0, false).map(|_| ()).or_else(|e| if e.kind() == "in_use" { Ok(()) } else { Err(e) }),
        "reset required",
    )?;
    drop(b);
    let b = node.open(&[("TESSERA_STANDIN_FAULTS", "nvmlDeviceGetMigMode:1+=GPU_IS_LOST")])?;
    let msg = err_of(b.mig_mode(0), "gpu_lost", "MIG mode with GPU_IS_LOST")?;
    ensure!(msg.contains("fell off the bus"), "{msg}");
    Ok(())
}

/// GPM calls the driver fails: a failed sample forgets the one before (the next sample starts
/// over), a failed metrics call keeps the new sample (the next one compares with it); the
/// errors name the NVML function.
fn gpm_faults() -> Check {
    let node = Node::new("1xH100-80GB,mig=off");
    let b = node.open(&[(
        "TESSERA_STANDIN_FAULTS",
        "nvmlGpmSampleGet:2=UNKNOWN,nvmlGpmMetricsGet:1=UNKNOWN,nvmlGpmQueryDeviceSupport:1=UNKNOWN",
    )])?;
    let msg = err_of(b.gpm_supported(0), "driver", "GPM support with NVML_ERROR_UNKNOWN")?;
    ensure!(msg.contains("nvmlGpmQueryDeviceSupport"), "{msg}");
    ensure!(ok(b.gpm_supported(0), "GPM support")?, "an H100 has GPM");
    ensure!(ok(b.gpm_sample(0, None), "first sample")?.is_none(), "metrics from a first sample");
    let msg = err_of(b.gpm_sample(0, None), "driver", "a sample with NVML_ERROR_UNKNOWN")?;
    ensure!(msg.contains("nvmlGpmSampleGet") && msg.contains("NVML_ERROR_UNKNOWN"), "{msg}");
    ensure!(ok(b.gpm_sample(0, None), "a sample after a failed one")?.is_none(), "the failed sample was not forgotten");
    std::thread::sleep(std::time::Duration::from_millis(120));
    let msg = err_of(b.gpm_sample(0, None), "driver", "metrics with NVML_ERROR_UNKNOWN")?;
    ensure!(msg.contains("nvmlGpmMetricsGet"), "{msg}");
    std::thread::sleep(std::time::Duration::from_millis(120));
    let m = ok(b.gpm_sample(0, None), "a sample after failed metrics")?;
    ensure!(m.is_some_and(|m| m.sm_active == Some(0.0)), "after failed metrics, an idle GPU gave {m:?}");
    Ok(())
}

/// (label, model, start: GPU instances with their compute instances' profile ids, target).
type FaultCase =
    (&'static str, &'static str, &'static [(&'static str, u8, &'static [u32])], &'static [(&'static str, u8)]);

const FAULT_CASES: &[FaultCase] = &[
    ("fill an empty GPU", "A100-40GB", &[], &[("3g.20gb", 4), ("2g.10gb", 0), ("1g.5gb", 2), ("1g.5gb", 3)]),
    (
        "merge 1g instances into a 4g",
        "A100-40GB",
        &[
            ("1g.5gb", 0, &[0]),
            ("1g.5gb", 1, &[0]),
            ("1g.5gb", 2, &[0]),
            ("1g.5gb", 3, &[0]),
            ("1g.5gb", 4, &[0]),
            ("1g.5gb", 5, &[0]),
            ("1g.5gb", 6, &[0]),
        ],
        &[("4g.20gb", 0), ("1g.5gb", 4), ("1g.5gb", 5), ("1g.5gb", 6)],
    ),
    (
        "replace a split 3g and a 1g",
        "A100-40GB",
        &[("3g.20gb", 4, &[0, 0, 0]), ("1g.5gb", 0, &[0])],
        &[("4g.20gb", 0), ("3g.20gb", 4)],
    ),
];

fn layout_of(b: &dyn MigBackend) -> Result<Vec<Instance>, String> {
    let mut l = ok(gpu_view(b, 0), "read the GPU")?.layout();
    l.sort_unstable();
    Ok(l)
}

/// Set up the start layout of a case on a fresh node (no faults).
fn set_up(node: &Node, m: &GpuModel, start: &[(&str, u8, &[u32])]) -> Check {
    let b = node.open(&[])?;
    for (name, at, cis) in start {
        let gi = ok(b.create_gpu_instance(0, pid_of(m, name), Some(*at)), &format!("set up {name}@{at}"))?;
        for ci in *cis {
            ok(b.create_compute_instance(0, gi.id, *ci), &format!("set up a compute instance in {name}@{at}"))?;
        }
    }
    Ok(())
}

/// The create/destroy calls `execute_plan` makes, in order: (function, step index).
fn plan_calls(b: &dyn MigBackend, steps: &[Step]) -> Result<Vec<(&'static str, usize)>, String> {
    let view = ok(gpu_view(b, 0), "read the GPU")?;
    let mut calls = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        match step {
            Step::Destroy { instance, gpu_instance_id } => {
                let live = view
                    .instances
                    .iter()
                    .find(|l| Some(l.gpu_instance_id) == *gpu_instance_id || l.instance == *instance)
                    .ok_or_else(|| format!("step {i}: {instance:?} is not on the GPU"))?;
                calls.extend(live.compute_instances.iter().map(|_| ("nvmlComputeInstanceDestroy", i)));
                calls.push(("nvmlGpuInstanceDestroy", i));
            }
            Step::Create { .. } => {
                calls.push(("nvmlDeviceCreateGpuInstanceWithPlacement", i));
                calls.push(("nvmlGpuInstanceCreateComputeInstance", i));
            }
        }
    }
    Ok(calls)
}

fn plan_for(b: &dyn MigBackend, m: &GpuModel, target: &[(&str, u8)]) -> Result<tessera_mig::ReconfigurePlan, String> {
    let view = ok(gpu_view(b, 0), "read the GPU")?;
    let wanted = Wanted::Layout(target.iter().map(|(n, s)| Instance::new(pid_of(m, n), *s)).collect());
    tessera_mig::planner::reconfigure(m, &view.current(), &wanted).map_err(|e| format!("plan: {e}"))
}

/// One fault: the k-th create/destroy call fails (`and_later`: it and every later call of that
/// function). The GPU must be left valid and exactly as the error says; a clean rerun completes.
fn one_fault(case: &FaultCase, k: usize, and_later: bool) -> Result<bool, String> {
    let (label, model_name, start, target) = case;
    let m = model(model_name);
    let node = Node::new(&format!("1x{model_name}"));
    set_up(&node, m, start)?;
    let (calls, before) = {
        let b = node.open(&[])?;
        let plan = plan_for(&b, m, target)?;
        (plan_calls(&b, &plan.steps)?, layout_of(&b)?)
    };
    let Some(&(function, step)) = calls.get(k) else {
        return Err(format!("{label}: only {} calls", calls.len()));
    };
    let nth = calls[..=k].iter().filter(|(f, _)| *f == function).count();
    let error = if function.contains("Create") { "INSUFFICIENT_RESOURCES" } else { "UNKNOWN" };
    let fault = format!("{function}:{nth}{}={error}", if and_later { "+" } else { "" });
    let what = format!("{label}, fault {fault} (call {} of {})", k + 1, calls.len());
    let rolled_back = {
        let b = node.open(&[("TESSERA_STANDIN_FAULTS", &fault)])?;
        let plan = plan_for(&b, m, target)?;
        let err = match execute_plan(&b, 0, &plan) {
            Ok(r) => return Err(format!("{what}: the plan succeeded: {:?}", r.steps_done)),
            Err(e) => e,
        };
        let total = plan.steps.len();
        ensure!(
            err.failed_step.starts_with(&format!("step {} of {total}:", step + 1)),
            "{what}: failed at '{}', the fault hits step {}",
            err.failed_step,
            step + 1
        );
        let after = layout_of(&b)?;
        let violations = tessera_mig::validate(m, &after);
        ensure!(violations.is_empty(), "{what}: invalid layout left behind: {after:?}: {violations:?}");
        if err.rolled_back {
            ensure!(err.changed.is_empty(), "{what}: rolled back but reports changes: {err}");
            ensure!(
                after == before,
                "{what}: reported rolled back, but the layout is {after:?}, was {before:?}: {err}"
            );
        } else {
            ensure!(!and_later || !err.changed.is_empty(), "{what}: not rolled back and no change reported: {err}");
            let report = err.changed.join("; ");
            let was: BTreeSet<&Instance> = before.iter().collect();
            let now: BTreeSet<&Instance> = after.iter().collect();
            for inst in was.symmetric_difference(&now) {
                let full = tessera_mig::layout::instance_label(m, &Instance::new(inst.profile_id, inst.start));
                let exact = tessera_mig::layout::instance_label(m, inst);
                ensure!(
                    report.contains(&full) || report.contains(&exact),
                    "{what}: {exact} changed but the error does not say so: {err}"
                );
            }
        }
        if !and_later {
            ensure!(err.rolled_back, "{what}: a one-off fault was not rolled back: {err}");
        }
        err.rolled_back
    };
    // A clean rerun from a fresh plan completes to the target.
    let b = node.open(&[])?;
    let plan = plan_for(&b, m, target)?;
    execute_plan(&b, 0, &plan).map_err(|e| format!("{what}: the rerun failed: {e}"))?;
    let mut want: Vec<Instance> = target.iter().map(|(n, s)| Instance::new(pid_of(m, n), *s)).collect();
    want.sort_unstable();
    let got = layout_of(&b)?;
    ensure!(got == want, "{what}: the rerun left {got:?}, wanted {want:?}");
    Ok(rolled_back)
}

fn fault_injection(failures: &mut Vec<String>) {
    let mut outcomes: BTreeSet<bool> = BTreeSet::new();
    for case in FAULT_CASES {
        let (label, model_name, start, target) = case;
        let calls = (|| {
            let node = Node::new(&format!("1x{model_name}"));
            set_up(&node, model(model_name), start)?;
            let b = node.open(&[])?;
            let plan = plan_for(&b, model(model_name), target)?;
            plan_calls(&b, &plan.steps).map(|c| c.len())
        })();
        let n = match calls {
            Ok(n) if n > 0 => n,
            Ok(_) => {
                failures.push(format!("fault injection, {label}: the plan has no steps"));
                continue;
            }
            Err(e) => {
                failures.push(format!("fault injection, {label}: {e}"));
                continue;
            }
        };
        for k in 0..n {
            for and_later in [false, true] {
                let name = format!("fault injection, {label}, call {}{}", k + 1, if and_later { "+" } else { "" });
                run(&name, failures, || {
                    let rolled_back = one_fault(case, k, and_later)?;
                    outcomes.insert(rolled_back);
                    Ok(())
                });
            }
        }
    }
    // Both outcomes were exercised: clean rollbacks, and rollbacks that could not finish.
    if outcomes.len() != 2 {
        failures.push(format!("fault injection: only rolled_back = {outcomes:?} happened"));
    }
}

/// Run a scenario, catching panics, and record its failure.
fn run(name: &str, failures: &mut Vec<String>, f: impl FnOnce() -> Check) {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => failures.push(format!("{name}: {e}")),
        Err(_) => failures.push(format!("{name}: panicked")),
    }
}

#[test]
fn nvml_backend_over_the_standin() {
    assert!(Path::new(&library()).exists());
    let mut failures: Vec<String> = Vec::new();

    let mut n = 0;
    let suite = conformance::run_all(|| {
        n += 1;
        NvmlHarness::new(SPEC)
    });
    assert_eq!(n, conformance::cases().len());
    failures.extend(suite.iter().map(|f| format!("conformance {f}")));

    let checks: [(&str, Scenario); 8] = [
        ("open", open_policy),
        ("NO_PERMISSION", no_permission),
        ("no MIG", no_mig),
        ("GPU lost", lost),
        ("old driver", old_driver),
        ("in use", in_use),
        ("driver faults", driver_faults),
        ("GPM faults", gpm_faults),
    ];
    for (name, check) in checks {
        run(name, &mut failures, check);
    }
    fault_injection(&mut failures);
    configure(&[]);
    assert!(failures.is_empty(), "{} NVML scenario(s) failed:\n{}", failures.len(), failures.join("\n"));
}
