//! `tessera mig health` end to end on the simulated node: faults recover the way NVIDIA's Xid
//! catalog says (a GPU reset, a reboot, a quiet period), health is kept between runs, and the
//! command exits 1 while a GPU or instance is unhealthy. `tessera mig reset` and `tessera mig
//! reboot` are the simulated node's recoveries.

use std::path::PathBuf;
use std::process::Command;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// A simulated node in a temporary directory.
struct Node {
    dir: tempfile::TempDir,
    spec: &'static str,
}

impl Node {
    fn new(spec: &'static str) -> Node {
        Node { dir: tempfile::tempdir().unwrap(), spec }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("sim-node.json")
    }

    fn run(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
        cmd.args(args).env("TESSERA_SIM_STATE", self.state()).env("TESSERA_SIM", self.spec);
        for k in ["TESSERA_BACKEND", "TESSERA_HEALTH_STATE", "TESSERA_NVML_LIBRARY"] {
            cmd.env_remove(k);
        }
        // Never the real home: a stray default state would land in the temporary directory.
        cmd.env("XDG_STATE_HOME", self.dir.path().join("xdg"));
        let out = cmd.output().unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Run, expecting exit `code`; the output.
    fn expect(&self, code: i32, args: &[&str]) -> Run {
        let r = self.run(args);
        assert_eq!(r.code, code, "tessera {args:?}:\n{}\n{}", r.stdout, r.stderr);
        r
    }

    fn json(&self, code: i32, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let r = self.expect(code, &all);
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", r.stdout))
    }
}

/// `health[what].health` of a `mig health -o json` answer.
fn health_of<'a>(j: &'a serde_json::Value, what: &str) -> &'a serde_json::Value {
    let all = j["health"].as_array().unwrap();
    &all.iter().find(|h| h["what"] == what).unwrap_or_else(|| panic!("no {what} in {j}"))["health"]
}

#[test]
fn xid_48_waits_for_a_gpu_reset() {
    let n = Node::new("2xA100-40GB");
    let r = n.expect(0, &["mig", "health"]);
    assert!(r.stdout.contains("All 2 GPU(s) and their instances are healthy."), "{}", r.stdout);
    let r = n.expect(0, &["mig", "xid", "0", "48"]);
    assert!(r.stdout.contains("Double Bit ECC Error") && r.stdout.contains("a GPU reset"), "{}", r.stdout);
    // Unhealthy, saying what it waits for.
    let r = n.expect(1, &["mig", "health"]);
    assert!(r.stdout.contains("GPU 0: unhealthy: Xid 48 (Double Bit ECC Error)"), "{}", r.stdout);
    assert!(r.stdout.contains("waiting for a GPU reset (nvidia-smi -r -i 0)"), "{}", r.stdout);
    assert!(r.stdout.contains("or `tessera mig health clear 0`"), "this command's own clear: {}", r.stdout);
    assert!(!r.stdout.contains("tessera admin"), "not the daemon's: {}", r.stdout);
    assert!(r.stdout.contains("RECOVERY") && r.stdout.contains("a GPU reset"), "the event table: {}", r.stdout);
    assert!(r.stderr.contains("unhealthy"), "{}", r.stderr);
    assert!(n.dir.path().join("sim-node.health.json").exists(), "kept next to the simulated node's state");
    // The Xid was consumed, but the fault is remembered; waiting does not clear it.
    let r = n.expect(1, &["mig", "health", "--recovery-quiet", "0"]);
    assert!(r.stdout.contains("No Xid events pending."), "{}", r.stdout);
    assert!(r.stdout.contains("GPU 0: unhealthy"), "{}", r.stdout);
    assert!(!r.stdout.contains("GPU 1:"), "GPU 1 is healthy: {}", r.stdout);
    // An admin's clear does not help while the driver still asks for a reset.
    n.expect(0, &["mig", "health", "clear", "0", "--by", "bob"]);
    let r = n.expect(1, &["mig", "health"]);
    assert!(r.stdout.contains("GPU 0: unhealthy"), "the driver wins: {}", r.stdout);
    // A reset is refused while a process uses the GPU; then it clears the fault.
    n.expect(0, &["mig", "apply", "-c", "all-1g.5gb"]);
    n.expect(0, &["mig", "busy", "0:7"]);
    let r = n.expect(1, &["mig", "reset", "0"]);
    assert!(r.stderr.contains("in use") && r.stderr.contains("4242"), "{}", r.stderr);
    n.expect(0, &["mig", "idle", "0:7"]);
    let r = n.expect(0, &["mig", "reset", "0"]);
    assert!(r.stdout.contains("GPU 0 was reset"), "{}", r.stdout);
    let j = n.json(0, &["mig", "gpus"]);
    assert!(j["gpus"][0]["instances"].as_array().unwrap().is_empty(), "a reset destroys the instances: {j}");
    assert_eq!(j["gpus"][1]["instances"].as_array().unwrap().len(), 7, "GPU 1 keeps its instances");
    let r = n.expect(0, &["mig", "health"]);
    assert!(r.stdout.contains("All 2 GPU(s)"), "{}", r.stdout);
    let j = n.json(0, &["mig", "health"]);
    let cleared = &j["report"]["gpus"][0]["last_cleared"];
    assert!(cleared["by"].as_str().unwrap().contains("a GPU reset (reset count 0 → 1)"), "{cleared}");
}

#[test]
fn xid_79_loses_the_gpu_until_a_reboot() {
    let n = Node::new("2xH100-80GB");
    n.expect(0, &["mig", "apply", "-c", "all-balanced"]);
    n.expect(0, &["mig", "xid", "1", "79"]);
    // The GPU does not answer; the other one still does.
    let r = n.expect(1, &["mig", "gpus"]);
    assert!(r.stdout.contains("GPU 0  NVIDIA H100"), "{}", r.stdout);
    assert!(r.stdout.contains("does not answer") && r.stdout.contains("is lost"), "{}", r.stdout);
    assert!(r.stderr.contains("1 GPU(s) do not answer"), "{}", r.stderr);
    let j = n.json(1, &["mig", "gpus"]);
    assert_eq!(j["gpus"].as_array().unwrap().len(), 1);
    assert_eq!(j["unreachable"][0]["gpu"]["index"], 1);
    assert_eq!(j["unreachable"][0]["error"]["kind"], "gpu_lost");
    // Unhealthy until a reboot: not after a quiet period, and a reset is impossible.
    let j = n.json(1, &["mig", "health", "--recovery-quiet", "0"]);
    let gpu1 = health_of(&j, "GPU 1");
    assert_eq!(gpu1["state"], "unhealthy");
    assert_eq!(gpu1["needs"], "reboot_node");
    assert!(gpu1["waiting_for"].as_str().unwrap().contains("node reboot"), "{gpu1}");
    assert_eq!(health_of(&j, "GPU 0")["state"], "healthy");
    let r = n.expect(1, &["mig", "reset", "1"]);
    assert!(r.stderr.contains("lost"), "{}", r.stderr);
    let r = n.expect(1, &["mig", "health", "--recovery-quiet", "0"]);
    assert!(r.stdout.contains("GPU 1: unhealthy") && r.stdout.contains("does not answer"), "{}", r.stdout);
    let r = n.expect(0, &["mig", "reboot"]);
    assert!(r.stdout.contains("rebooted"), "{}", r.stdout);
    let j = n.json(0, &["mig", "health"]);
    assert_eq!(health_of(&j, "GPU 1")["state"], "healthy");
    assert!(j["report"]["gpus"][1]["last_cleared"]["by"].as_str().unwrap().contains("reboot"), "{j}");
    let j = n.json(0, &["mig", "gpus"]);
    assert_eq!(j["gpus"].as_array().unwrap().len(), 2);
    assert!(j["gpus"][0]["instances"].as_array().unwrap().is_empty(), "a reboot destroys every instance");
}

#[test]
fn quiet_faults_an_admin_clear_and_degraded() {
    let n = Node::new("1xA100-40GB");
    let state = n.dir.path().join("elsewhere/health.json");
    let state = state.to_str().unwrap();
    n.expect(0, &["mig", "apply", "-c", "all-balanced"]);
    // An unknown Xid degrades: printed, exit 0.
    n.expect(0, &["mig", "xid", "0", "999"]);
    let r = n.expect(0, &["mig", "health", "--health-state", state]);
    assert!(r.stdout.contains("GPU 0: degraded: Xid 999"), "{}", r.stdout);
    assert!(std::path::Path::new(state).exists(), "--health-state chooses the file");
    // A contained error in a GPU instance: that instance is unhealthy.
    n.expect(0, &["mig", "xid", "0", "94", "--gi", "3", "--ci", "0"]);
    let r = n.expect(1, &["mig", "health", "--health-state", state, "--recovery-quiet", "3600"]);
    assert!(r.stdout.contains("GPU 0 GPU instance 3: unhealthy"), "{}", r.stdout);
    assert!(r.stdout.contains("recreated"), "{}", r.stdout);
    // An admin's clear counts as the recovery; the next successful probe clears.
    let j = n.json(0, &["mig", "health", "clear", "0", "--by", "alice", "--health-state", state]);
    assert_eq!(j["cleared"], true);
    assert_eq!(j["by"], "alice");
    let r = n.expect(0, &["mig", "health", "--health-state", state, "--recovery-quiet", "3600"]);
    assert!(r.stdout.contains("All 1 GPU(s)"), "{}", r.stdout);
    let r = n.expect(0, &["mig", "health", "clear", "0", "--health-state", state]);
    assert!(r.stdout.contains("no fault to clear"), "{}", r.stdout);
    // The state file is versioned; another version is refused, never misread.
    let text = std::fs::read_to_string(state).unwrap();
    std::fs::write(state, text.replace("\"version\": 1", "\"version\": 9")).unwrap();
    let r = n.expect(1, &["mig", "health", "--health-state", state]);
    assert!(r.stderr.contains("version 9"), "{}", r.stderr);
}

#[test]
fn health_json_shape() {
    let n = Node::new("1xA30");
    n.expect(0, &["mig", "xid", "0", "48"]);
    let j = n.json(1, &["mig", "health"]);
    for key in ["node", "health_state", "events", "changes", "health", "unreachable", "unhealthy", "report"] {
        assert!(j.get(key).is_some(), "no {key}: {j}");
    }
    let e = &j["events"][0];
    assert_eq!((e["gpu"].as_u64(), e["xid"].as_u64()), (Some(0), Some(48)));
    assert_eq!((e["severity"].as_str(), e["recovery"].as_str()), (Some("gpu_fatal"), Some("reset_gpu")));
    assert!(e["at_ms"].as_u64().is_some() && e["name"].is_string() && e["action"].is_string());
    let h = health_of(&j, "GPU 0");
    assert_eq!(h["state"], "unhealthy");
    assert_eq!(h["needs"], "reset_gpu");
    assert!(h["reason"].is_string() && h["since_ms"].is_u64() && h["waiting_for"].is_string(), "{h}");
    assert_eq!(j["unhealthy"], 1);
    let report = &j["report"];
    assert_eq!(report["version"], 1);
    assert_eq!(report["recovery_quiet_ms"], 60_000);
    let g = &report["gpus"][0];
    assert_eq!(g["gpu"], 0);
    assert!(g["uuid"].as_str().unwrap().starts_with("GPU-"));
    assert_eq!(g["events"][0]["class"]["recovery"], "reset_gpu");
    assert_eq!(g["seen"]["recovery_action"], "gpu_reset");
    assert_eq!(g["seen"]["reset_count"], 0);
    assert!(g["seen"]["boot_id"].is_string());
    assert!(g["instances"].as_array().unwrap().is_empty());
    assert!(g["last_cleared"].is_null());
    let j = n.json(0, &["mig", "reset", "0"]);
    assert_eq!(j["observation"]["reset_count"], 1);
    assert_eq!(j["observation"]["recovery_action"], "none");
    let j = n.json(0, &["mig", "reboot"]);
    assert!(j["boot_id"].is_string());
}

#[test]
fn reset_and_reboot_are_for_the_simulated_node_and_documented() {
    let n = Node::new("1xA30");
    let help = n.expect(0, &["mig", "reset", "--help"]).stdout;
    assert!(help.contains("nvidia-smi -r") && help.contains("Simulated node only"), "{help}");
    let help = n.expect(0, &["mig", "reboot", "--help"]).stdout;
    assert!(help.contains("boot id") && help.contains("Simulated node only"), "{help}");
    let help = n.expect(0, &["mig", "health", "--help"]).stdout;
    assert!(help.contains("--health-state") && help.contains("clear"), "{help}");
    let r =
        n.expect(1, &["--backend", "nvml", "--nvml-library", "/nonexistent/libnvidia-ml.so.1", "mig", "reset", "0"]);
    assert!(r.stderr.contains("nvml"), "{}", r.stderr);
    let r = n.expect(1, &["mig", "reset", "7"]);
    assert!(r.stderr.contains("no GPU with index 7"), "{}", r.stderr);
}

/// A GPU that stops answering, with no Xid seen: the probe fails, the GPU is unhealthy until it
/// answers again after a quiet period. Through NVML (the stand-in library), where a GPU can be
/// lost without an event.
#[test]
fn a_gpu_that_does_not_answer_is_unhealthy() {
    let library = tessera_nvml_standin::library_path()
        .expect("the stand-in libnvidia-ml is not built: run `cargo build -p tessera-nvml-standin`");
    let dir = tempfile::tempdir().unwrap();
    let health_state = dir.path().join("health.json");
    let run = |lost: &str, quiet: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
        cmd.args(["--backend", "nvml", "--nvml-library"]).arg(&library);
        cmd.args(["mig", "health", "--recovery-quiet", quiet, "--health-state"]).arg(&health_state);
        cmd.env("TESSERA_STANDIN_SPEC", "2xA100-40GB").env("TESSERA_STANDIN_STATE", dir.path().join("node.json"));
        for k in
            ["TESSERA_SIM", "TESSERA_SIM_STATE", "TESSERA_BACKEND", "TESSERA_STANDIN_XIDS", "TESSERA_STANDIN_FAULTS"]
        {
            cmd.env_remove(k);
        }
        cmd.env("TESSERA_STANDIN_LOST", lost);
        let out = cmd.output().unwrap();
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, out) = run("1", "3600");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("GPU 1: unhealthy: the health probe failed"), "{out}");
    assert!(!out.contains("GPU 0:"), "GPU 0 answers: {out}");
    let (code, out) = run("", "3600");
    assert_eq!(code, 1, "answering again is not enough before the quiet period: {out}");
    let (code, out) = run("", "0");
    assert_eq!(code, 0, "{out}");
}

/// `tessera mig health clear` while a `--watch` runs: the watch reads the clear back at its next
/// change of the state file instead of overwriting it with what it loaded at its start.
#[test]
fn a_clear_during_a_watch_is_kept() {
    let n = Node::new("1xA100-40GB");
    // An unknown Xid: degraded, and with a long quiet period only an admin's clear ends it.
    n.expect(0, &["mig", "xid", "0", "999"]);
    let r = n.expect(0, &["mig", "health", "--recovery-quiet", "3600"]);
    assert!(r.stdout.contains("GPU 0: degraded: Xid 999"), "{}", r.stdout);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.args(["mig", "health", "--watch", "3", "--recovery-quiet", "3600", "-o", "json"]);
    cmd.env("TESSERA_SIM_STATE", n.state()).env("TESSERA_SIM", n.spec);
    for k in ["TESSERA_BACKEND", "TESSERA_HEALTH_STATE", "TESSERA_NVML_LIBRARY"] {
        cmd.env_remove(k);
    }
    cmd.env("XDG_STATE_HOME", n.dir.path().join("xdg"));
    let watch = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    // Well after the watch has read the state file, well before it ends.
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let j = n.json(0, &["mig", "health", "clear", "0", "--by", "carol"]);
    assert_eq!(j["cleared"], true, "{j}");
    let out = watch.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let j: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(health_of(&j, "GPU 0")["state"], "healthy", "the watch saw the clear: {j}");
    // And the state file keeps it.
    let j = n.json(0, &["mig", "health", "--recovery-quiet", "3600"]);
    assert_eq!(health_of(&j, "GPU 0")["state"], "healthy", "{j}");
    let cleared = &j["report"]["gpus"][0]["last_cleared"];
    assert_eq!(cleared["by"], "admin carol", "{cleared}");
}

#[test]
fn durations_out_of_range_are_errors_not_panics() {
    let n = Node::new("1xA30");
    for (flag, value) in [("--watch", "1e300"), ("--watch", "-1"), ("--recovery-quiet", "1e300"), ("--watch", "NaN")] {
        let r = n.run(&["mig", "health", &format!("{flag}={value}")]);
        assert_eq!(r.code, 1, "{flag} {value}: {}", r.stderr);
        assert!(r.stderr.contains(&format!("error: {flag} ")), "{flag} {value}: {}", r.stderr);
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    }
}
