//! MIG-mode changes through the real binary on the simulated node: Ampere's change waits for a
//! GPU reset that `mig apply` performs, Hopper's needs none, `--skip-reset` leaves it pending
//! (exit 0) for a later apply to reset, a process refuses the change before any GPU changes, and
//! a reset the platform refuses (`gpu-reset=off`) leaves it pending with exit 1.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

struct Node {
    dir: tempfile::TempDir,
    spec: &'static str,
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Node {
    fn new(spec: &'static str) -> Node {
        Node { dir: tempfile::tempdir().unwrap(), spec }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("sim-node.json")
    }

    fn config(&self, text: &str) -> String {
        let p = self.dir.path().join("config.yaml");
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }

    fn run(&self, args: &[&str]) -> Run {
        let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(args)
            .env("TESSERA_SIM_STATE", self.state())
            .env("TESSERA_SIM", self.spec)
            .env_remove("MIG_PARTED_SKIP_RESET")
            .env_remove("MIG_PARTED_MODE_CHANGE_ONLY")
            .output()
            .unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn ok(&self, args: &[&str]) -> Run {
        let r = self.run(args);
        assert_eq!(r.code, 0, "tessera {args:?} failed:\n{}\n{}", r.stdout, r.stderr);
        r
    }

    /// `mig gpus -o json`'s MIG mode of GPU `gpu`: (current, pending).
    fn mode(&self, gpu: usize) -> (bool, bool) {
        let v: Value = serde_json::from_str(&self.ok(&["-o", "json", "mig", "gpus"]).stdout).unwrap();
        let gpus = v.get("gpus").unwrap_or(&v);
        let m = &gpus[gpu]["mig"];
        (m["current"].as_bool().unwrap(), m["pending"].as_bool().unwrap())
    }

    /// The simulated node's reset count of GPU `gpu` (what `observe` reports).
    fn resets(&self, gpu: usize) -> u64 {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(self.state()).unwrap()).unwrap();
        v["gpus"][gpu]["reset_count"].as_u64().unwrap_or(0)
    }
}

const ALL_ON: &str =
    "version: v1\nmig-configs:\n  all-enabled:\n    - devices: all\n      mig-enabled: true\n      mig-devices: {}\n";

#[test]
fn an_a100_is_reset_by_apply_an_h100_is_not() {
    let n = Node::new("1xA100-40GB+1xH100-80GB,mig=off");
    let cfg = n.config(ALL_ON);
    n.ok(&["mig", "apply", "-f", &cfg, "--mode-only"]);
    assert_eq!(n.mode(0), (true, true));
    assert_eq!(n.mode(1), (true, true));
    assert_eq!((n.resets(0), n.resets(1)), (1, 0), "only the A100 is reset");
    // Nothing pending: a second apply resets nothing.
    n.ok(&["mig", "apply", "-f", &cfg, "--mode-only"]);
    assert_eq!((n.resets(0), n.resets(1)), (1, 0));
}

#[test]
fn skip_reset_leaves_the_a100_pending_and_the_next_apply_resets_it() {
    let n = Node::new("1xA100-40GB,mig=off");
    let cfg = n.config(ALL_ON);
    let r = n.ok(&["mig", "apply", "-f", &cfg, "--mode-only", "--skip-reset"]);
    assert!(
        r.stderr.contains("GPU 0: MIG mode enabled is pending") && r.stderr.contains("--skip-reset"),
        "{}",
        r.stderr
    );
    assert_eq!(n.mode(0), (false, true), "pending");
    let gpus = n.ok(&["mig", "gpus"]).stdout;
    assert!(gpus.contains("disabled (enabled pending)"), "{gpus}");
    assert_eq!(n.resets(0), 0);
    n.ok(&["mig", "apply", "-f", &cfg, "--mode-only"]);
    assert_eq!(n.mode(0), (true, true));
    assert_eq!(n.resets(0), 1);
}

#[test]
fn skip_reset_without_mode_only_stops_before_the_mig_devices_with_a_clear_reason() {
    let n = Node::new("1xA100-40GB,mig=off");
    let cfg = n.config(
        "version: v1\nmig-configs:\n  half:\n    - devices: all\n      mig-enabled: true\n      mig-devices:\n        \"3g.20gb\": 2\n",
    );
    let r = n.run(&["mig", "apply", "-f", &cfg, "--skip-reset"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("MIG is not enabled yet on GPU(s) 0"), "{}", r.stderr);
    assert!(r.stderr.contains("without --skip-reset"), "{}", r.stderr);
    // The cause is said once, not once per error in the chain.
    assert_eq!(r.stderr.matches("MIG is not enabled yet").count(), 1, "{}", r.stderr);
    assert_eq!(n.mode(0), (false, true), "the mode change waits, nothing else happened");
    // Without --skip-reset the same apply resets the GPU and makes the MIG devices.
    n.ok(&["mig", "apply", "-f", &cfg]);
    n.ok(&["mig", "assert", "-f", &cfg]);
}

#[test]
fn a_process_on_a_gpu_refuses_the_change_before_any_gpu_changes() {
    let n = Node::new("2xH100-80GB");
    n.ok(&["mig", "apply", "-f", &n.config(ONE_EACH), "-c", "one-each"]);
    n.ok(&["mig", "busy", "1:0", "--pid", "4242"]);
    let r = n.run(&["mig", "apply", "-f", &n.config(ALL_OFF), "--mode-only"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    // The plan refuses first, naming the busy instance (mode.rs's own refusal, which names the
    // pid, is unit-tested: `a_busy_gpu_refuses_before_any_gpu_changes`).
    assert!(r.stderr.contains("GPU 1") && r.stderr.contains("busy"), "{}", r.stderr);
    assert!(r.stderr.contains("nothing was changed"), "{}", r.stderr);
    assert_eq!(n.mode(0), (true, true), "GPU 0 was changed");
    assert_eq!(n.mode(1), (true, true));
    let v: Value = serde_json::from_str(&n.ok(&["-o", "json", "mig", "gpus"]).stdout).unwrap();
    let gpus = v.get("gpus").unwrap_or(&v);
    for g in 0..2 {
        assert_eq!(gpus[g]["instances"].as_array().map(Vec::len), Some(1), "GPU {g} lost its instance: {v}");
    }
}

const ONE_EACH: &str = "version: v1\nmig-configs:\n  one-each:\n    - devices: all\n      mig-enabled: true\n      mig-devices:\n        7g.80gb: 1\n";
const ALL_OFF: &str = "version: v1\nmig-configs:\n  all-disabled:\n    - devices: all\n      mig-enabled: false\n";

#[test]
fn a_refused_reset_reports_the_pending_gpu_and_fails() {
    let n = Node::new("1xA100-40GB,mig=off,gpu-reset=off");
    let cfg = n.config(ALL_ON);
    let r = n.run(&["mig", "apply", "-f", &cfg, "--mode-only"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("pending") && r.stderr.contains("reboot"), "{}", r.stderr);
    assert_eq!(n.mode(0), (false, true));
    // With --skip-reset the same pending state is success, as in mig-parted.
    n.ok(&["mig", "apply", "-f", &cfg, "--mode-only", "--skip-reset"]);
    // A reboot applies it.
    n.ok(&["mig", "reboot"]);
    assert_eq!(n.mode(0), (true, true));
}
