//! The NVML backend against the risky behaviours of a real driver, as the stand-in models them
//! (crates/tessera-nvml-standin, `TESSERA_STANDIN_NON_ROOT`, `_MIG_UUID`, `_REBIND`, fault rules):
//!
//! * a caller that is not root reading processes on a GPU in MIG mode: nvml.h gives the GPU's
//!   aggregate list to privileged callers only; the backend asks each MIG device instead, and
//!   when those refuse too it says so ([`BackendError::NoPermission`]), never "no processes";
//! * MIG device UUIDs that cannot be read: no name is made up on a driver of R470 or later; a
//!   pre-R470 driver's own `MIG-GPU-<uuid>/<gi>/<ci>` names are taken as they are;
//! * `nvmlDeviceSetMigMode` rebinding the GPU: its minor number moves, and the caps minors the
//!   backend reports for new instances follow the new minor, never a stale one;
//! * a leftover MPS server keeping an instance busy: destroy fails with `IN_USE` and the error
//!   names the server and how to stop it;
//! * an instance the driver made but whose info cannot be read back (`nvmlGpuInstanceGetInfo`,
//!   `nvmlComputeInstanceGetInfo_v2` failing right after the create): destroyed again, so a failed
//!   create changes nothing, as the executor's rollback assumes (found by the daemon's DRA
//!   prepare under faults: the instance stayed, unheld, and the kubelet's retries were refused);
//! * a `…ProfileInfoV` call that refuses the struct version (`INVALID_ARGUMENT` per nvml.h,
//!   `ARGUMENT_VERSION_MISMATCH` or `FUNCTION_NOT_FOUND` as drivers were seen to answer): the
//!   backend falls back to the v1 call and loses no profile.
//!
//! The stand-in is process-global and reads its environment at `nvmlInit`, so this binary has one
//! test running every scenario in turn, each with its own `NvmlBackend`, dropped before the next.

// Only `std::env::set_var`/`remove_var` (unsafe since Rust 2024), in `configure` below.
#![allow(unsafe_code)]

use std::path::PathBuf;

use tempfile::TempDir;
use tessera_gpu::ids::{ci_caps_minor, gi_caps_minor, mig_minors_text};
use tessera_gpu::{BackendError, MigBackend, NodeSpec, NvmlBackend, SimBackend};
use tessera_nvml_standin::config::ENV_VARS;

fn configure(vars: &[(&str, String)]) {
    for name in ENV_VARS {
        // SAFETY: this binary's only test runs the scenarios one after another on one thread,
        // and no other thread reads the environment meanwhile.
        unsafe { std::env::remove_var(name) };
    }
    for (name, value) in vars {
        // SAFETY: as above.
        unsafe { std::env::set_var(name, value) };
    }
}

struct Node {
    dir: TempDir,
    spec: String,
}

impl Node {
    fn new(spec: &str) -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("mig-minors"), mig_minors_text(32)).unwrap();
        std::fs::create_dir_all(dir.path().join("sys")).unwrap();
        std::fs::create_dir_all(dir.path().join("proc")).unwrap();
        Node { dir, spec: spec.to_string() }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("node.json")
    }

    /// The simulated node behind the stand-in: what another user of the machine does.
    fn sim(&self) -> SimBackend {
        SimBackend::open(&self.state(), Some(&NodeSpec::parse(&self.spec).unwrap())).unwrap()
    }

    /// A process of the host, as `/proc/<pid>/comm` names it.
    fn process(&self, pid: u32, comm: &str) {
        let d = self.dir.path().join("proc").join(pid.to_string());
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("comm"), format!("{comm}\n")).unwrap();
    }

    fn open(&self, extra: &[(&str, &str)]) -> NvmlBackend {
        let mut vars = vec![
            ("TESSERA_STANDIN_SPEC", self.spec.clone()),
            ("TESSERA_STANDIN_STATE", self.state().display().to_string()),
        ];
        vars.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        configure(&vars);
        let lib = tessera_nvml_standin::library_path()
            .expect("the stand-in libnvidia-ml is not built: run `cargo build -p tessera-nvml-standin`");
        NvmlBackend::open(Some(&lib))
            .unwrap_or_else(|e| panic!("open NVML: {e}"))
            .with_mig_minors_path(self.dir.path().join("mig-minors"))
            .with_sysfs_root(self.dir.path().join("sys"))
            .with_proc_root(self.dir.path().join("proc"))
    }
}

#[test]
fn risky_driver_behaviours() {
    non_root_process_reads();
    mig_uuid_failures();
    mig_mode_change_rebinds_the_gpu();
    leftover_mps_server();
    versioned_profile_calls_refused();
    created_but_unreadable_instances_are_undone();
}

/// A 3g.40gb with its full compute instance on GPU 0 of an H100 node, made as root would.
fn one_instance(node: &Node) -> (u32, u32) {
    let sim = node.sim();
    let gi = sim.create_gpu_instance(0, 9, Some(0)).unwrap();
    let ci = sim.create_compute_instance(0, gi.id, 2).unwrap();
    (gi.id, ci.id)
}

fn non_root_process_reads() {
    let node = Node::new("1xH100-80GB");
    let (gi, ci) = one_instance(&node);
    node.sim().attach_process(0, gi, ci, 4242, "python").unwrap();
    node.process(4242, "python");

    // As root: the GPU's own list.
    let root = node.open(&[]);
    let procs = root.processes(0).unwrap();
    assert_eq!(procs.len(), 1);
    drop(root);

    // Not root: the GPU refuses, each MIG device answers, with its instance ids.
    let user = node.open(&[("TESSERA_STANDIN_NON_ROOT", "1")]);
    let procs = user.processes(0).unwrap();
    assert_eq!(procs.len(), 1, "{procs:?}");
    assert_eq!(
        (procs[0].pid, procs[0].name.as_str(), procs[0].gpu_instance_id, procs[0].compute_instance_id),
        (4242, "python", Some(gi), Some(ci))
    );
    // Busy instances are still recognised as busy, and by whom.
    let e = user.destroy_compute_instance(0, gi, ci).unwrap_err();
    assert!(matches!(e, BackendError::InUse { .. }) && e.to_string().contains("pid 4242 (python)"), "{e}");
    // And MIG mode may not be changed: nvml.h says root only.
    let e = user.set_mig_mode(0, false).unwrap_err();
    assert!(matches!(e, BackendError::NoPermission { .. }), "{e}");
    drop(user);

    // Not root, and the MIG devices refuse too: an error that says so, never "no processes".
    let user = node.open(&[
        ("TESSERA_STANDIN_NON_ROOT", "1"),
        ("TESSERA_STANDIN_FAULTS", "nvmlDeviceGetComputeRunningProcesses_v3:2+=NO_PERMISSION"),
    ]);
    let e = user.processes(0).unwrap_err();
    assert!(matches!(e, BackendError::NoPermission { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains("root") && text.contains("unknown"), "{text}");
    let e = user.destroy_gpu_instance(0, gi).unwrap_err();
    let text = e.to_string();
    assert!(text.contains("cannot be listed") && text.contains("compute instance(s) 0"), "{text}");
    drop(user);
    node.sim().detach_process(0, 4242).unwrap();
}

fn mig_uuid_failures() {
    // A current driver: the driver's `MIG-<uuid>`, nothing else.
    let node = Node::new("1xA100-40GB");
    let (gi, ci) = {
        let sim = node.sim();
        let g = sim.create_gpu_instance(0, 9, Some(0)).unwrap();
        (g.id, sim.create_compute_instance(0, g.id, 2).unwrap().id)
    };
    let b = node.open(&[]);
    let cis = b.compute_instances(0, gi).unwrap();
    assert!(cis[0].uuid.starts_with("MIG-") && !cis[0].uuid.starts_with("MIG-GPU-"), "{}", cis[0].uuid);
    drop(b);

    // The UUID cannot be read: an error naming the call, no made-up old-style name.
    let b = node.open(&[("TESSERA_STANDIN_MIG_UUID", "fail")]);
    let e = b.compute_instances(0, gi).unwrap_err();
    let text = e.to_string();
    assert!(text.contains("nvmlDeviceGetUUID") && text.contains(&format!("compute instance {ci}")), "{text}");
    assert!(!text.contains("MIG-GPU-"), "{text}");
    // The view says the GPU cannot be read rather than showing a wrong device.
    assert!(b.gpu_instances(0).is_ok(), "GPU instances need no UUID");
    drop(b);

    // A pre-R470 driver names MIG devices `MIG-GPU-<uuid>/<gi>/<ci>` itself: taken as it is.
    let gpu_uuid = node.sim().devices().unwrap()[0].uuid.clone();
    let legacy = format!("MIG-{gpu_uuid}/{gi}/{ci}");
    let b = node.open(&[("TESSERA_STANDIN_DRIVER_VERSION", "460.32.03")]);
    assert_eq!(b.compute_instances(0, gi).unwrap()[0].uuid, legacy);
    drop(b);
    // And when that old driver cannot say, the name it would have given is the one made up.
    let b = node.open(&[("TESSERA_STANDIN_DRIVER_VERSION", "460.32.03"), ("TESSERA_STANDIN_MIG_UUID", "fail")]);
    assert_eq!(b.compute_instances(0, gi).unwrap()[0].uuid, legacy);
    drop(b);
}

fn mig_mode_change_rebinds_the_gpu() {
    let node = Node::new("2xH100-80GB");
    let b = node.open(&[("TESSERA_STANDIN_REBIND", "1")]);
    let before = b.devices().unwrap()[0].minor_number;
    let gi = b.create_gpu_instance(0, 9, Some(0)).unwrap();
    assert_eq!(gi.caps_minor, Some(gi_caps_minor(before, gi.id)));
    b.destroy_gpu_instance(0, gi.id).unwrap();

    // Hopper changes mode at once: off and on again is two rebinds.
    assert!(!b.set_mig_mode(0, false).unwrap().current);
    assert!(b.set_mig_mode(0, true).unwrap().current);
    let after = b.devices().unwrap()[0].minor_number;
    assert_ne!(after, before, "the stand-in moved the minor number");
    // GPU 1 was not touched.
    assert_eq!(b.devices().unwrap()[1].minor_number, 1);

    // Instances made now carry the caps minors of the new minor number.
    let gi = b.create_gpu_instance(0, 9, Some(0)).unwrap();
    assert_eq!(gi.caps_minor, Some(gi_caps_minor(after, gi.id)), "a stale minor number was used");
    let ci = b.create_compute_instance(0, gi.id, 2).unwrap();
    assert_eq!(ci.caps_minor, Some(ci_caps_minor(after, gi.id, ci.id)));
    let listed = b.gpu_instances(0).unwrap();
    assert_eq!(listed[0].caps_minor, Some(gi_caps_minor(after, gi.id)));
    b.destroy_compute_instance(0, gi.id, ci.id).unwrap();
    b.destroy_gpu_instance(0, gi.id).unwrap();
    drop(b);
}

fn leftover_mps_server() {
    let node = Node::new("1xH100-80GB");
    let (gi, ci) = one_instance(&node);
    node.sim().attach_process(0, gi, ci, 777, "nvidia-cuda-mps-server").unwrap();
    node.process(777, "nvidia-cuda-mps-server");
    for extra in [&[][..], &[("TESSERA_STANDIN_NON_ROOT", "1")][..]] {
        let b = node.open(extra);
        let e = b.destroy_compute_instance(0, gi, ci).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, BackendError::InUse { .. }), "{e}");
        assert!(
            text.contains("pid 777 (nvidia-cuda-mps-server)") && text.contains("nvidia-cuda-mps-control"),
            "{text}"
        );
        let e = b.destroy_gpu_instance(0, gi).unwrap_err();
        assert!(e.to_string().contains("pid 777 (nvidia-cuda-mps-server)"), "{e}");
        // The layout is untouched.
        assert_eq!(b.compute_instances(0, gi).unwrap().len(), 1);
        drop(b);
    }
    node.sim().detach_process(0, 777).unwrap();
    let b = node.open(&[]);
    b.destroy_compute_instance(0, gi, ci).unwrap();
    b.destroy_gpu_instance(0, gi).unwrap();
}

fn versioned_profile_calls_refused() {
    let node = Node::new("1xH100-80GB");
    let want: Vec<(u32, String)> = {
        let b = node.open(&[]);
        b.gpu_instance_profiles(0).unwrap().into_iter().map(|p| (p.id, p.name)).collect()
    };
    assert_eq!(want.len(), 7, "{want:?}");
    for code in ["INVALID_ARGUMENT", "ARGUMENT_VERSION_MISMATCH", "FUNCTION_NOT_FOUND"] {
        let faults = format!(
            "nvmlDeviceGetGpuInstanceProfileInfoV:1+={code},nvmlGpuInstanceGetComputeInstanceProfileInfoV:1+={code}"
        );
        let b = node.open(&[("TESSERA_STANDIN_FAULTS", faults.as_str())]);
        let got: Vec<(u32, String)> = b.gpu_instance_profiles(0).unwrap().into_iter().map(|p| (p.id, p.name)).collect();
        assert_eq!(got, want, "profiles when the V call answers {code}");
        let gi = b.create_gpu_instance(0, 9, Some(4)).unwrap();
        let ci = b.create_compute_instance(0, gi.id, 2).unwrap();
        b.destroy_compute_instance(0, gi.id, ci.id).unwrap();
        b.destroy_gpu_instance(0, gi.id).unwrap();
        drop(b);
    }
}

fn created_but_unreadable_instances_are_undone() {
    let node = Node::new("1xH100-80GB");
    let b = node.open(&[("TESSERA_STANDIN_FAULTS", "nvmlGpuInstanceGetInfo:1=UNKNOWN")]);
    let e = b.create_gpu_instance(0, 9, Some(0)).unwrap_err();
    assert!(e.to_string().contains("nvmlGpuInstanceGetInfo"), "{e}");
    assert!(node.sim().gpu_instances(0).unwrap().is_empty(), "the unreadable GPU instance was left behind");
    // The next try works.
    let gi = b.create_gpu_instance(0, 9, Some(0)).unwrap();
    drop(b);

    let b = node.open(&[("TESSERA_STANDIN_FAULTS", "nvmlComputeInstanceGetInfo_v2:1=GPU_IS_LOST")]);
    let e = b.create_compute_instance(0, gi.id, 2).unwrap_err();
    assert!(matches!(e, BackendError::GpuLost { .. }), "{e}");
    assert!(node.sim().compute_instances(0, gi.id).unwrap().is_empty(), "the unreadable compute instance was left");
    let ci = b.create_compute_instance(0, gi.id, 2).unwrap();
    b.destroy_compute_instance(0, gi.id, ci.id).unwrap();
    b.destroy_gpu_instance(0, gi.id).unwrap();
}
