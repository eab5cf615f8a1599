//! The real `tessera` binary driving "real GPUs" through NVML, end to end over FFI: the NVML
//! backend loads the stand-in `libnvidia-ml.so` (crates/tessera-nvml-standin), which is backed
//! by the simulated node. Faults and Xids are injected through the stand-in's environment.

use std::path::PathBuf;
use std::process::Command;

use tessera_nvml_standin::faults::{census_counts, plausible_codes};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn library() -> PathBuf {
    tessera_nvml_standin::library_path().expect(
        "the stand-in libnvidia-ml is not built: run ./scripts/test.sh or `cargo build -p tessera-nvml-standin`",
    )
}

/// A node of "real" GPUs: the stand-in's state file in a temp dir.
struct Gpus {
    dir: tempfile::TempDir,
    spec: &'static str,
}

impl Gpus {
    fn new(spec: &'static str) -> Self {
        Gpus { dir: tempfile::tempdir().unwrap(), spec }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("standin-node.json")
    }

    fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }

    /// `tessera --backend nvml ARGS` with extra stand-in environment.
    fn nvml(&self, env: &[(&str, &str)], args: &[&str]) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
        cmd.arg("--backend").arg("nvml").arg("--nvml-library").arg(library()).args(args);
        cmd.env("TESSERA_STANDIN_SPEC", self.spec).env("TESSERA_STANDIN_STATE", self.state());
        for k in [
            "TESSERA_SIM",
            "TESSERA_SIM_STATE",
            "TESSERA_BACKEND",
            "TESSERA_STANDIN_FAULTS",
            "TESSERA_STANDIN_XIDS",
            "TESSERA_STANDIN_CALLS",
        ] {
            cmd.env_remove(k);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        run(cmd)
    }

    fn ok(&self, args: &[&str]) -> String {
        let r = self.nvml(&[], args);
        assert_eq!(r.code, 0, "tessera {args:?}:\n{}\n{}", r.stdout, r.stderr);
        r.stdout
    }

    /// The same node through the simulated backend (for `mig busy`, which only the simulator has).
    fn sim(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
        cmd.arg("--backend").arg("sim").arg("--sim-state").arg(self.state()).args(args);
        cmd.env_remove("TESSERA_SIM").env_remove("TESSERA_SIM_STATE");
        let r = run(cmd);
        assert_eq!(r.code, 0, "tessera {args:?}:\n{}\n{}", r.stdout, r.stderr);
        r.stdout
    }
}

fn run(mut cmd: Command) -> Run {
    let out = cmd.output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

/// `[(profile, start)]` of GPU `gpu` from `mig gpus -o json`.
fn layout(j: &serde_json::Value, gpu: usize) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = j["gpus"][gpu]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["profile"].as_str().unwrap().to_string(), i["start"].as_u64().unwrap()))
        .collect();
    v.sort_by_key(|x| x.1);
    v
}

const CONFIG: &str = "\
version: v1
mig-configs:
  small:
    - devices: all
      mig-enabled: true
      mig-devices:
        \"1g.5gb\": 7
  grow:
    - devices: all
      mig-enabled: true
      mig-devices:
        \"1g.5gb\": 3
        \"4g.20gb\": 1
";

#[test]
fn the_cli_drives_nvml_end_to_end() {
    let g = Gpus::new("2xA100-40GB,numa=2");
    let cfg = g.file("mig.yaml", CONFIG);
    let r = g.nvml(&[], &["-v", "mig", "gpus"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("tessera: using NVML"), "with -v, one line says which backend: {}", r.stderr);
    let quiet = g.nvml(&[], &["mig", "gpus"]);
    assert_eq!(quiet.stderr, "", "without -v, NVML that works is used without a word");
    assert!(r.stdout.contains("NVIDIA A100-SXM4-40GB"), "{}", r.stdout);
    let plan = g.ok(&["mig", "apply", "-f", &cfg, "-c", "small", "--dry-run"]);
    assert!(plan.contains("create  7× 1g.5gb"), "{plan}");
    g.ok(&["mig", "apply", "-f", &cfg, "-c", "small"]);
    g.ok(&["mig", "assert", "-f", &cfg, "-c", "small"]);
    let j = json(&g.ok(&["mig", "gpus", "-o", "json"]));
    assert_eq!(layout(&j, 0).len(), 7);
    let uuid = j["gpus"][0]["instances"][0]["compute_instances"][0]["uuid"].as_str().unwrap().to_string();
    assert!(uuid.starts_with("MIG-"), "{uuid}");
    // Busy work on unit 6 is kept; units 0-3 become a 4g.
    g.sim(&["mig", "busy", "0:13"]);
    g.ok(&["mig", "apply", "-f", &cfg, "-c", "grow"]);
    g.ok(&["mig", "assert", "-f", &cfg, "-c", "grow"]);
    let exported = g.ok(&["mig", "export"]);
    assert!(exported.contains("\"4g.20gb\": 1"), "{exported}");
    // Driver profiles compared with the catalog.
    let profiles = g.ok(&["mig", "profiles"]);
    assert!(profiles.contains("matches"), "{profiles}");
    assert!(!profiles.contains("differs"), "{profiles}");
}

/// An apply interrupted at each step leaves a valid, accurately reported layout, and a rerun
/// completes it.
#[test]
fn an_apply_interrupted_at_any_step_is_reported_and_a_rerun_completes_it() {
    for (function, steps, before) in [
        ("nvmlDeviceCreateGpuInstanceWithPlacement", 7, None),
        ("nvmlGpuInstanceCreateComputeInstance", 7, None),
        ("nvmlGpuInstanceDestroy", 4, Some("small")),
        ("nvmlDeviceCreateGpuInstanceWithPlacement", 1, Some("small")),
    ] {
        for k in 1..=steps {
            let g = Gpus::new("1xA100-40GB");
            let cfg = g.file("mig.yaml", CONFIG);
            let target = match before {
                Some(first) => {
                    g.ok(&["mig", "apply", "-f", &cfg, "-c", first]);
                    "grow"
                }
                None => "small",
            };
            let start = layout(&json(&g.ok(&["mig", "gpus", "-o", "json"])), 0);
            let fault = format!("{function}:{k}=INSUFFICIENT_RESOURCES");
            let r = g.nvml(&[("TESSERA_STANDIN_FAULTS", &fault)], &["mig", "apply", "-f", &cfg, "-c", target]);
            assert_eq!(r.code, 1, "{fault}: the apply should fail:\n{}\n{}", r.stdout, r.stderr);
            assert!(r.stderr.contains("failed on GPU 0"), "{fault}: {}", r.stderr);
            let after = layout(&json(&g.ok(&["mig", "gpus", "-o", "json"])), 0);
            if r.stderr.contains("Nothing changed") || r.stderr.contains("rolled back") {
                assert_eq!(after, start, "{fault}: reported as rolled back but the layout changed: {}", r.stderr);
            } else {
                for (profile, startu) in &after {
                    assert!(
                        r.stderr.contains(&format!("{profile}@{startu}"))
                            || start.contains(&(profile.clone(), *startu)),
                        "{fault}: {profile}@{startu} is on the GPU but the report does not say so: {}",
                        r.stderr
                    );
                }
            }
            // The layout is valid whatever happened: the planner accepts it.
            let existing: Vec<String> = after.iter().map(|(p, s)| format!("{p}@{s}")).collect();
            if !existing.is_empty() {
                let r =
                    g.nvml(&[], &["mig", "plan", "--gpu", "A100-40GB", "--existing", &existing.join(","), "1g.5gb"]);
                assert!(!r.stderr.contains("not valid"), "{fault}: invalid layout left behind: {existing:?}");
            }
            g.ok(&["mig", "apply", "-f", &cfg, "-c", target]);
            g.ok(&["mig", "assert", "-f", &cfg, "-c", target]);
        }
    }
}

/// The NVML calls `tessera ARGS` makes on a node prepared by `before`, from the stand-in's
/// census: each function with how many times it is called.
fn census(spec: &'static str, before: Option<&str>, args: &[&str]) -> Vec<(String, u64)> {
    let g = Gpus::new(spec);
    let cfg = g.file("mig.yaml", CONFIG);
    if let Some(first) = before {
        g.ok(&["mig", "apply", "-f", &cfg, "-c", first]);
    }
    let calls = g.dir.path().join("calls");
    let args: Vec<&str> = args.iter().map(|a| if *a == "CFG" { cfg.as_str() } else { a }).collect();
    let r = g.nvml(&[("TESSERA_STANDIN_CALLS", calls.to_str().unwrap())], &args);
    assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
    census_counts(&std::fs::read_to_string(&calls).unwrap()).into_iter().collect()
}

/// Every NVML function a whole `tessera mig apply` calls (from the stand-in's census), failed at
/// its first and its last call with each plausible code: the command never crashes, the layout left is
/// valid and reported as the driver has it, and a rerun completes the work.
#[test]
fn every_nvml_function_of_an_apply_failed_with_each_code_leaves_a_known_layout() {
    let mut runs = 0;
    for (before, target) in [(None, "small"), (Some("small"), "grow")] {
        let apply = ["mig", "apply", "-f", "CFG", "-c", target];
        for (function, count) in census("1xA100-40GB", before, &apply) {
            // The first and the last call of each function: every call site an apply has is one
            // of them for some function, and a full sweep of every call costs minutes.
            let mut calls = vec![1, count];
            calls.dedup();
            for nth in calls {
                for code in plausible_codes(&function) {
                    runs += 1;
                    let fault = format!("{function}:{nth}={code}");
                    let g = Gpus::new("1xA100-40GB");
                    let cfg = g.file("mig.yaml", CONFIG);
                    if let Some(first) = before {
                        g.ok(&["mig", "apply", "-f", &cfg, "-c", first]);
                    }
                    let r = g.nvml(&[("TESSERA_STANDIN_FAULTS", &fault)], &["mig", "apply", "-f", &cfg, "-c", target]);
                    assert!(
                        (r.code == 0 || r.code == 1) && !r.stderr.contains("panicked"),
                        "{fault}: exit {}:\n{}",
                        r.code,
                        r.stderr
                    );
                    assert!(r.code == 0 || !r.stderr.trim().is_empty(), "{fault}: failed without a word");
                    // Reported as the driver has it: the NVML view equals the node's own state.
                    let seen = layout(&json(&g.ok(&["mig", "gpus", "-o", "json"])), 0);
                    let truth = layout(&json(&g.sim(&["mig", "gpus", "-o", "json"])), 0);
                    assert_eq!(seen, truth, "{fault}: NVML reports another layout than the node has");
                    let existing: Vec<String> = seen.iter().map(|(p, s)| format!("{p}@{s}")).collect();
                    if !existing.is_empty() {
                        let r = g.nvml(
                            &[],
                            &["mig", "plan", "--gpu", "A100-40GB", "--existing", &existing.join(","), "1g.5gb"],
                        );
                        assert!(!r.stderr.contains("not valid"), "{fault}: invalid layout left: {existing:?}");
                    }
                    g.ok(&["mig", "apply", "-f", &cfg, "-c", target]);
                    g.ok(&["mig", "assert", "-f", &cfg, "-c", target]);
                }
            }
        }
    }
    assert!(runs > 40, "only {runs} faults tried: the census found too few calls");
}

#[test]
fn nvml_errors_are_clear() {
    let g = Gpus::new("1xA100-40GB");
    let cfg = g.file("mig.yaml", CONFIG);
    let r = g.nvml(&[("TESSERA_STANDIN_NO_PERMISSION", "1")], &["mig", "apply", "-f", &cfg, "-c", "small"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.to_lowercase().contains("permission"), "{}", r.stderr);
    assert!(r.stderr.contains("root"), "{}", r.stderr);

    let r = g.nvml(&[("TESSERA_STANDIN_NO_MIG", "0")], &["mig", "apply", "-f", &cfg, "-c", "small"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("MIG"), "{}", r.stderr);

    let r = g.nvml(&[("TESSERA_STANDIN_LOST", "0")], &["mig", "gpus"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("lost") || r.stderr.contains("fell off the bus"), "{}", r.stderr);

    // A busy instance is refused by name, through NVML too.
    g.ok(&["mig", "apply", "-f", &cfg, "-c", "small"]);
    g.sim(&["mig", "busy", "0:7"]);
    let r = g.nvml(&[], &["mig", "apply", "-f", &cfg, "-c", "grow"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("1g.5gb@0 (GPU instance 7)"), "{}", r.stderr);
}

#[test]
fn a_missing_library_falls_back_to_the_simulated_node_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.args(["--nvml-library", "/nonexistent/libnvidia-ml.so.1", "--sim-state"])
        .arg(dir.path().join("s.json"))
        .args(["mig", "gpus", "-o", "json"]);
    cmd.env_remove("TESSERA_SIM").env_remove("TESSERA_BACKEND");
    let r = run(cmd);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", r.stderr);
    assert!(lines[0].starts_with("tessera: using simulated node"), "{}", r.stderr);
    assert!(lines[0].ends_with("; no NVML: /nonexistent/libnvidia-ml.so.1 cannot be loaded"), "{}", r.stderr);
    let j = json(&r.stdout);
    let node = j["node"].as_str().unwrap();
    assert!(node.starts_with("simulated node") && !node.contains("NVML"), "the description alone: {node}");
    // Forcing NVML without a library is an error, not a fallback.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.args(["--backend", "nvml", "--nvml-library", "/nonexistent/libnvidia-ml.so.1", "mig", "gpus"]);
    let r = run(cmd);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("nvml"), "{}", r.stderr);
}

/// Xid events from the driver: classified, attributed to the GPU or GPU instance, a parent's
/// fatal error taints every instance; health is kept between runs, and a fault recovers the way
/// NVIDIA's Xid catalog says (a GPU off the bus waits for a reboot, or an admin's clear), never
/// by waiting alone.
#[test]
fn xid_events_mark_gpus_and_instances_unhealthy_until_they_recover() {
    let g = Gpus::new("1xA100-40GB");
    let cfg = g.file("mig.yaml", CONFIG);
    g.ok(&["mig", "apply", "-f", &cfg, "-c", "grow"]);
    let xids = g.file("xids", "0 94 1 0\n");
    let health_state = g.dir.path().join("health.json").display().to_string();
    let health = |extra: &[&str], code: i32| {
        let mut args = vec!["mig", "health", "-o", "json", "--health-state", health_state.as_str()];
        args.extend_from_slice(extra);
        let r = g.nvml(&[("TESSERA_STANDIN_XIDS", xids.as_str())], &args);
        assert_eq!(r.code, code, "{}\n{}", r.stdout, r.stderr);
        json(&r.stdout)
    };
    // A contained ECC error (Xid 94) in GPU instance 1 (the 4g.20gb): only that instance.
    let j = health(&["--recovery-quiet", "60"], 1);
    assert_eq!(j["events"][0]["xid"], 94);
    assert_eq!(j["events"][0]["severity"], "instance");
    assert_eq!(j["events"][0]["recovery"], "quiet");
    let state = |j: &serde_json::Value, what: &str| {
        j["health"].as_array().unwrap().iter().find(|h| h["what"] == what).unwrap()["health"]["state"].clone()
    };
    assert_eq!(state(&j, "GPU 0"), "degraded", "one unhealthy instance degrades its GPU");
    assert_eq!(state(&j, "GPU 0 GPU instance 1"), "unhealthy");
    // The GPU fell off the bus (Xid 79): the GPU and every instance, and no recovery by waiting.
    std::fs::write(&xids, "0 79\n").unwrap();
    let j = health(&["--watch", "1.6", "--recovery-quiet", "1"], 1);
    assert_eq!(state(&j, "GPU 0"), "unhealthy");
    assert_eq!(state(&j, "GPU 0 GPU instance 1"), "unhealthy");
    let gpu0 = &j["report"]["gpus"][0];
    assert_eq!(gpu0["health"]["needs"], "reboot_node");
    assert!(gpu0["health"]["waiting_for"].as_str().unwrap().contains("node reboot"), "{gpu0}");
    // The next run finds the GPU off the bus from the start.
    let j = health(&[], 1);
    assert_eq!(j["unreachable"][0]["error"]["kind"], "gpu_lost", "the GPU does not answer");
    // The node reboots (the simulated node's reboot: NVML's boot id is the host's, so it cannot
    // tell), and an admin says so.
    std::fs::write(&xids, "").unwrap();
    g.sim(&["mig", "reboot"]);
    health(&[], 1);
    let r = g.nvml(&[], &["mig", "health", "clear", "0", "--by", "alice", "--health-state", &health_state]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("alice"), "{}", r.stdout);
    let j = health(&[], 0);
    assert_eq!(state(&j, "GPU 0"), "healthy");
    assert!(j["report"]["gpus"][0]["last_cleared"]["by"].as_str().unwrap().contains("admin alice"), "{j}");
}

/// An Xid raised on the simulated node (`tessera mig xid`) reaches NVML's event wait, once; NVML
/// reports no reset count, so the fault is seen to recover by the driver's recovery action.
#[test]
fn xids_raised_on_the_simulated_node_reach_nvml_once() {
    let g = Gpus::new("1xA100-40GB");
    g.ok(&["mig", "gpus"]);
    g.sim(&["mig", "xid", "0", "48"]);
    let health_state = g.dir.path().join("health.json").display().to_string();
    let health = |code: i32| {
        let r = g.nvml(&[], &["mig", "health", "-o", "json", "--health-state", health_state.as_str()]);
        assert_eq!(r.code, code, "{}\n{}", r.stdout, r.stderr);
        json(&r.stdout)
    };
    let j = health(1);
    let events = j["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{j}");
    assert_eq!((events[0]["gpu"].as_u64(), events[0]["xid"].as_u64()), (Some(0), Some(48)));
    let gpu0 = &j["report"]["gpus"][0];
    assert!(gpu0["seen"]["reset_count"].is_null(), "NVML has no reset count: {gpu0}");
    let waiting = gpu0["health"]["waiting_for"].as_str().unwrap();
    assert_eq!(waiting, "waiting for a GPU reset (nvidia-smi -r -i 0) or `tessera mig health clear 0`");
    // Delivered once; the fault stays until the GPU is reset.
    let j = health(1);
    assert!(j["events"].as_array().unwrap().is_empty(), "{j}");
    g.sim(&["mig", "reset", "0"]);
    let j = health(0);
    let by = j["report"]["gpus"][0]["last_cleared"]["by"].as_str().unwrap().to_string();
    assert!(by.contains("the driver's recovery action went from GPU reset back to none"), "{by}");
}
