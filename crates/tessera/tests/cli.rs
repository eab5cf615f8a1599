//! The real `tessera` binary, end to end on a simulated node in a temporary directory, with
//! snapshots of what people see (`tests/snapshots/`). Review a changed snapshot like code.

use std::path::{Path, PathBuf};
use std::process::Command;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

struct Node {
    dir: tempfile::TempDir,
    /// `--sim SPEC` for every command, through `TESSERA_SIM`.
    spec: Option<&'static str>,
}

impl Node {
    fn new() -> Self {
        Node { dir: tempfile::tempdir().unwrap(), spec: None }
    }

    fn with_sim(spec: &'static str) -> Self {
        Node { dir: tempfile::tempdir().unwrap(), spec: Some(spec) }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("sim-node.json")
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Run `tessera ARGS` against this node.
    fn run(&self, args: &[&str]) -> Run {
        run_with_state(&self.state(), self.spec, args)
    }

    fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(r.code, 0, "tessera {args:?} failed:\n{}\n{}", r.stdout, r.stderr);
        r.stdout
    }

    fn fails(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(r.code, 1, "tessera {args:?} should fail:\n{}\n{}", r.stdout, r.stderr);
        r.stderr
    }
}

fn run_with_state(state: &Path, spec: Option<&str>, args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.args(args).env("TESSERA_SIM_STATE", state).env_remove("TESSERA_SIM");
    if let Some(spec) = spec {
        cmd.env("TESSERA_SIM", spec);
    }
    let out = cmd.env_remove("MIG_PARTED_CONFIG_FILE").env_remove("MIG_PARTED_SELECTED_CONFIG").output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Replace the temporary directory in output so snapshots are stable.
fn scrub(node: &Node, text: &str) -> String {
    text.replace(&node.dir.path().display().to_string(), "[TMP]")
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

#[test]
fn profiles_table_is_like_lgip() {
    let n = Node::new();
    insta::assert_snapshot!("profiles_a100_40gb", n.ok(&["mig", "profiles", "--gpu", "A100-40GB"]));
    insta::assert_snapshot!(
        "profiles_rtx_pro_6000",
        n.ok(&["mig", "profiles", "--gpu", "NVIDIA RTX PRO 6000 Blackwell Server Edition"])
    );
    let j = json(&n.ok(&["mig", "profiles", "--gpu", "0x2330", "-o", "json"]));
    assert_eq!(j["gpu"], "H100-80GB");
    assert_eq!(j["profiles"][4]["name"], "3g.40gb");
    assert_eq!(j["profiles"][4]["placements"], serde_json::json!([0, 4]));
}

#[test]
fn plan_prints_placements_and_fragmentation() {
    let n = Node::new();
    insta::assert_snapshot!(
        "plan_a100_mixed",
        n.ok(&["mig", "plan", "--gpu", "A100-40GB", "3g.20gb", "2g.10gb", "1g.5gb"])
    );
    let j = json(&n.ok(&["mig", "plan", "--gpu", "A100-40GB", "-o", "json", "3g.20gb", "3g.20gb"]));
    insta::assert_json_snapshot!("plan_two_3g_json", j);
    assert_eq!(j["unusable_compute_slices"], 1);
    assert_eq!(j["instances"][0]["profile"], "3g.20gb");
    assert_eq!(j["instances"][0]["profile_id"], 9);
    assert_eq!(j["instances"][1]["start"], 4);
    assert_eq!(j["instances"][1]["size"], 4);
}

#[test]
fn plan_keeps_existing_instances_and_localises_per_gpu_numa() {
    let n = Node::new();
    let j = json(&n.ok(&[
        "mig",
        "plan",
        "--gpu",
        "H100-80GB",
        "--existing",
        "1g.10gb@6",
        "-o",
        "json",
        "4g.40gb",
        "2g.20gb",
    ]));
    let layout: Vec<(String, u64, bool)> = j["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (i["profile"].as_str().unwrap().to_string(), i["start"].as_u64().unwrap(), i["new"].as_bool().unwrap())
        })
        .collect();
    assert_eq!(layout, [("4g.40gb".into(), 0, true), ("2g.20gb".into(), 4, true), ("1g.10gb".into(), 6, false)]);
    let j = json(&n.ok(&["mig", "plan", "--gpu", "H100-80GB", "--per-gpu-numa", "-o", "json", "3g.40gb"]));
    let nodes: Vec<u64> =
        j["instances"].as_array().unwrap().iter().map(|i| i["gpu_numa_node"].as_u64().unwrap()).collect();
    assert_eq!(nodes, [0, 1]);
    insta::assert_snapshot!(
        "plan_per_gpu_numa",
        n.ok(&["mig", "plan", "--gpu", "H100-80GB", "--per-gpu-numa", "2g.20gb"])
    );
}

#[test]
fn infeasible_plans_exit_1_with_reason_and_alternative() {
    let n = Node::new();
    let r = n.run(&["mig", "plan", "--gpu", "A100-40GB", "4g.20gb", "4g.20gb"]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.is_empty());
    assert_eq!(
        r.stderr.trim(),
        "not feasible on A100-40GB: two 4g.20gb both need start 0 (its only placement); 4g.20gb + 3g.20gb fits"
    );
    let r = n.run(&["mig", "plan", "--gpu", "H100-80GB", "--per-gpu-numa", "7g.80gb"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("7g.80gb spans both GPU NUMA nodes"), "{}", r.stderr);
    let r = n.run(&["mig", "plan", "--gpu", "A100-40GB", "-o", "json", "7g.40gb", "1g.5gb"]);
    assert_eq!(r.code, 1);
    let j = json(&r.stdout);
    assert_eq!(j["feasible"], false);
    assert_eq!(j["alternative"]["instances"][0]["profile"], "7g.40gb");
}

#[test]
fn unknown_names_get_suggestions() {
    let n = Node::new();
    let e = n.fails(&["mig", "profiles", "--gpu", "A100-40G"]);
    assert!(e.contains("unknown GPU model 'A100-40G' (did you mean 'A100-40GB'?)"), "{e}");
    let e = n.fails(&["mig", "plan", "--gpu", "H100-80GB", "3g.40g"]);
    assert!(e.contains("unknown MIG profile '3g.40g' for H100-80GB (did you mean '3g.40gb'?)"), "{e}");
    let e = n.fails(&["mig", "plan", "--gpu", "H100-80GB", "--existing", "3g.40gb@x", "1g.10gb"]);
    assert!(e.contains("--existing '3g.40gb@x'"), "{e}");
    let e = n.fails(&["mig", "gpus", "--sim", "4xH100-80G"]);
    assert!(e.contains("H100-80GB"), "{e}");
}

#[test]
fn layouts_lists_every_maximal_layout() {
    let n = Node::new();
    insta::assert_snapshot!(
        "layouts_a30_base",
        n.ok(&["mig", "layouts", "--gpu", "A30", "--profiles", "1g.6gb,2g.12gb,4g.24gb"])
    );
    let j = json(&n.ok(&["mig", "layouts", "--gpu", "H100-80GB", "-o", "json"]));
    assert_eq!(j["count"], 239);
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
    - devices: [0]
      mig-enabled: true
      mig-devices:
        \"1g.5gb\": 3
        \"4g.20gb\": 1
    - devices: [1]
      mig-enabled: true
      mig-devices:
        \"1g.5gb\": 7
  off:
    - devices: all
      mig-enabled: false
";

#[test]
fn apply_is_incremental_idempotent_and_leaves_busy_instances_alone() {
    let n = Node::with_sim("2xA100-40GB,numa=1");
    let cfg = n.file("mig.yaml", CONFIG);
    let cfg = cfg.to_str().unwrap();

    insta::assert_snapshot!("gpus_fresh", scrub(&n, &n.ok(&["mig", "gpus"])));
    insta::assert_snapshot!(
        "apply_small_dry_run",
        scrub(&n, &n.ok(&["mig", "apply", "-f", cfg, "-c", "small", "--dry-run"]))
    );
    // Dry run changed nothing.
    n.fails(&["mig", "assert", "-f", cfg, "-c", "small"]);
    n.ok(&["mig", "apply", "-f", cfg, "-c", "small"]);
    n.ok(&["mig", "assert", "-f", cfg, "-c", "small"]);
    // Idempotent.
    let again = n.ok(&["mig", "apply", "-f", cfg, "-c", "small"]);
    assert!(again.contains("Nothing to change"), "{again}");
    insta::assert_snapshot!("gpus_after_small", scrub(&n, &n.ok(&["mig", "gpus"])));

    // A job on GPU 0's 1g at unit 0 (GPU instance 7) blocks growing it to 3x1g + 4g.
    n.ok(&["mig", "busy", "0:7"]);
    let before = n.ok(&["mig", "export"]);
    let err = n.fails(&["mig", "apply", "-f", cfg, "-c", "grow"]);
    assert!(err.contains("nothing was changed"), "{err}");
    assert!(err.contains("1g.5gb@0 (GPU instance 7)"), "{err}");
    assert_eq!(n.ok(&["mig", "export"]), before, "a refused apply changed the node");

    // With the job on unit 6 instead, the 4g fits around it: only units 0-3 change.
    n.ok(&["mig", "idle", "0:7"]);
    n.ok(&["mig", "busy", "0:13"]);
    let plan = n.ok(&["mig", "apply", "-f", cfg, "-c", "grow", "--dry-run"]);
    insta::assert_snapshot!("apply_grow_dry_run", scrub(&n, &plan));
    let busy_uuid = |j: &serde_json::Value| {
        j["gpus"][0]["instances"].as_array().unwrap().iter().find(|i| i["gpu_instance_id"] == 13).unwrap().clone()
    };
    let uuid_before = busy_uuid(&json(&n.ok(&["mig", "-o", "json", "gpus"])))["compute_instances"][0]["uuid"].clone();
    n.ok(&["mig", "apply", "-f", cfg, "-c", "grow"]);
    n.ok(&["mig", "assert", "-f", cfg, "-c", "grow"]);
    let busy = busy_uuid(&json(&n.ok(&["mig", "-o", "json", "gpus"])));
    assert_eq!(busy["busy"], true);
    assert_eq!(busy["compute_instances"][0]["uuid"], uuid_before, "the busy instance was recreated");
    insta::assert_snapshot!("export_after_grow", n.ok(&["mig", "export"]));

    // Disabling MIG is refused while the job runs, and allowed after.
    let err = n.fails(&["mig", "apply", "-f", cfg, "-c", "off"]);
    assert!(err.contains("GPU 0") && err.contains("1g.5gb@6"), "{err}");
    n.ok(&["mig", "idle", "0:13"]);
    n.ok(&["mig", "apply", "-f", cfg, "-c", "off"]);
    n.ok(&["mig", "assert", "-f", cfg, "-c", "off"]);
}

#[test]
fn export_round_trips_through_apply() {
    let n = Node::new();
    let sim = "1xH100-80GB+1xA30,numa=2";
    n.ok(&["--sim", sim, "mig", "apply", "-c", "all-balanced"]);
    let exported = n.ok(&["--sim", sim, "mig", "export", "-c", "snapshot"]);
    let file = n.file("snap.yaml", &exported);
    n.ok(&["--sim", sim, "mig", "assert", "-f", file.to_str().unwrap(), "-c", "snapshot"]);
    // A second node applying the export ends up with the same state.
    let other = Node::new();
    other.ok(&["--sim", sim, "mig", "apply", "-f", file.to_str().unwrap(), "-c", "snapshot"]);
    assert_eq!(other.ok(&["--sim", sim, "mig", "export", "-c", "snapshot"]), exported);
}

#[test]
fn bad_config_files_point_at_the_line() {
    let n = Node::new();
    let bad_yaml = n.file("bad.yaml", "version: v1\nmig-configs:\n  x:\n    - devices: all\n     mig-enabled: true\n");
    let e = n.fails(&["mig", "apply", "-f", bad_yaml.to_str().unwrap(), "-c", "x"]);
    assert!(e.contains(&format!("{}:5:", bad_yaml.display())), "{e}");
    let bad_profile = n.file(
        "profile.yaml",
        "version: v1\nmig-configs:\n  x:\n    - devices: all\n      mig-enabled: true\n      mig-devices:\n        \"3g.40g\": 1\n",
    );
    let e = n.fails(&["mig", "apply", "-f", bad_profile.to_str().unwrap(), "-c", "x"]);
    assert!(e.contains(&format!("{}:7:9", bad_profile.display())), "{e}");
    assert!(e.contains("3g.40gb"), "{e}");
    let e = n.fails(&["mig", "apply", "-f", bad_profile.to_str().unwrap(), "-c", "y"]);
    assert!(e.contains("'y'"), "{e}");
    let missing = n.dir.path().join("nope.yaml");
    let e = n.fails(&["mig", "apply", "-f", missing.to_str().unwrap(), "-c", "x"]);
    assert!(e.contains("nope.yaml"), "{e}");
}

#[test]
fn a_state_file_for_another_node_is_refused() {
    let n = Node::new();
    n.ok(&["--sim", "1xA30", "mig", "gpus"]);
    let e = n.fails(&["--sim", "2xA30", "mig", "gpus"]);
    assert!(e.contains("sim-node.json"), "{e}");
    std::fs::write(n.state(), "{ not json").unwrap();
    let e = n.fails(&["mig", "gpus"]);
    assert!(e.contains("sim-node.json"), "{e}");
}

#[test]
fn default_node_is_a_dgx_h100() {
    let n = Node::new();
    let j = json(&n.ok(&["mig", "gpus", "-o", "json"]));
    let gpus = j["gpus"].as_array().unwrap();
    assert_eq!(gpus.len(), 8);
    assert!(gpus.iter().all(|g| g["model"] == "H100-80GB"));
    let numa: Vec<u64> = gpus.iter().map(|g| g["numa_node"].as_u64().unwrap()).collect();
    assert_eq!(numa, [0, 0, 0, 0, 1, 1, 1, 1]);
}
