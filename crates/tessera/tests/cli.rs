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
        "version: v1\nmig-configs:\n  x:\n    - devices: all\n      mig-enabled: true\n      mig-devices:\n        \"3g.41gb\": 1\n",
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

/// A `device-filter` with a board's subsystem id (mig-parted PR #435) selects only that board;
/// the simulated node's spec names the boards and `mig gpus -o json` shows them.
#[test]
fn a_subsystem_device_filter_selects_one_board() {
    let n = Node::with_sim("1xH100-80GB:0x16C110DE+1xH100-80GB,numa=1");
    let j = json(&n.ok(&["mig", "gpus", "-o", "json"]));
    let boards: Vec<&str> =
        j["gpus"].as_array().unwrap().iter().map(|g| g["pci_subsystem_id"].as_str().unwrap()).collect();
    assert_eq!(boards, ["0x16C110DE", "0x233010DE"]);
    let file = n.file(
        "boards.yaml",
        "version: v1\nmig-configs:\n  one-board:\n    - device-filter: \"0x233010DE:0x16C110DE\"\n      \
         devices: all\n      mig-enabled: true\n      mig-devices:\n        \"1g.10gb\": 7\n",
    );
    n.ok(&["mig", "apply", "-f", file.to_str().unwrap(), "-c", "one-board"]);
    let j = json(&n.ok(&["mig", "gpus", "-o", "json"]));
    let instances: Vec<usize> =
        j["gpus"].as_array().unwrap().iter().map(|g| g["instances"].as_array().unwrap().len()).collect();
    assert_eq!(instances, [7, 0]);
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

/// mig-parted's compute-instance semantics: the counts are compute instances, grouped into GPU
/// instances as mig-parted groups them (the four examples, and one that cannot fit).
const CI_CONFIG: &str = "\
version: v1
mig-configs:
  ci:
    - devices: [0]
      mig-enabled: true
      mig-devices:
        \"1c.3g.20gb\": 3
        \"3g.20gb\": 1
    - devices: [1]
      mig-enabled: true
      mig-devices:
        \"2c.3g.20gb\": 1
        \"1c.3g.20gb\": 1
        \"1g.5gb\": 1
    - devices: [2]
      mig-enabled: true
      mig-devices:
        \"1c.7g.80gb\": 7
  too-many:
    - devices: [0]
      mig-enabled: true
      mig-devices:
        \"1c.3g.20gb\": 7
    - devices: [1, 2]
      mig-enabled: false
";

/// The GPU instances of every GPU as `mig gpus -o json` names them, by GPU.
fn device_types_by_gpu(n: &Node) -> Vec<Vec<String>> {
    let j = json(&n.ok(&["mig", "gpus", "-o", "json"]));
    j["gpus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let mut v: Vec<String> = g["instances"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["device_type"].as_str().unwrap().to_string())
                .collect();
            v.sort();
            v
        })
        .collect()
}

#[test]
fn compute_instances_apply_assert_export_and_apply_back_as_mig_parted_counts_them() {
    use tessera_gpu::MigBackend as _;
    let n = Node::with_sim("2xA100-40GB+1xH100-80GB,numa=1");
    let cfg = n.file("ci.yaml", CI_CONFIG);
    let cfg = cfg.to_str().unwrap();
    let applied = n.ok(&["mig", "apply", "-f", cfg, "-c", "ci"]);
    assert!(applied.contains("create  1c.3g.20gb ×3 at 4:4"), "{applied}");
    assert!(applied.contains("create  1c.7g.80gb ×7 at 0:8"), "{applied}");
    let want = [vec!["1c.3g.20gb ×3", "3g.20gb"], vec!["1g.5gb", "2c.3g.20gb + 1c.3g.20gb"], vec!["1c.7g.80gb ×7"]];
    assert_eq!(device_types_by_gpu(&n), want);
    let j = json(&n.ok(&["mig", "gpus", "-o", "json"]));
    assert_eq!(j["gpus"][2]["instances"][0]["compute_instances"].as_array().unwrap().len(), 7, "{j}");
    n.ok(&["mig", "assert", "-f", cfg, "-c", "ci"]);

    let exported = n.run(&["mig", "export"]);
    assert_eq!((exported.code, exported.stderr.as_str()), (0, ""));
    for line in ["\"1c.3g.20gb\": 3", "\"3g.20gb\": 1", "\"2c.3g.20gb\": 1", "\"1c.3g.20gb\": 1", "\"1c.7g.80gb\": 7"] {
        assert!(exported.stdout.contains(line), "{line}:\n{}", exported.stdout);
    }
    let back = n.file("export.yaml", &exported.stdout);
    let back = back.to_str().unwrap();
    let again = n.ok(&["mig", "apply", "-f", back]);
    assert!(again.contains("Nothing to change"), "{again}");
    n.ok(&["mig", "assert", "-f", back]);
    assert_eq!(device_types_by_gpu(&n), want);

    // A GPU instance without a compute instance: left out of the counts, with a warning.
    {
        let sim = tessera_gpu::SimBackend::open(&n.state(), None).unwrap();
        sim.create_gpu_instance(1, 19, Some(1)).unwrap();
    }
    let exported = n.run(&["mig", "export"]);
    assert_eq!(exported.code, 0);
    assert_eq!(
        exported.stderr,
        "tessera: GPU 1: 1g.5gb@1 (GPU instance 8) has no compute instance, which \
         mig-parted's format cannot express; left out of the export\n"
    );
    assert!(exported.stdout.contains("\"1g.5gb\": 1\n"), "{}", exported.stdout);

    // Seven 1-slice compute instances make three 3g.20gb, but an A100 holds two: refused at
    // the entry's line, saying how they were grouped.
    let e = n.fails(&["mig", "apply", "-f", cfg, "-c", "too-many", "--dry-run"]);
    assert!(e.contains("ci.yaml:20:7: GPU 0 (A100-40GB): 3 × 3g.20gb asked but at most 2 fit"), "{e}");
    assert!(
        e.contains("as mig-parted groups them, the 7 compute instances make 3 GPU instances: 1c.3g.20gb ×3; 1c.3g.20gb ×3; 1c.3g.20gb"),
        "{e}"
    );
}

/// Compute instances spread so that mig-parted's grouping of their counts makes other GPU
/// instances: the export says so.
#[test]
fn an_export_that_mig_parted_would_regroup_says_so() {
    use tessera_gpu::MigBackend as _;
    let n = Node::with_sim("1xA100-40GB");
    let cfg = n.file("two.yaml", "version: v1\nmig-configs:\n  two:\n    - devices: all\n      mig-enabled: true\n      mig-devices:\n        \"1c.3g.20gb\": 1\n        \"3g.20gb\": 1\n");
    n.ok(&["mig", "apply", "-f", cfg.to_str().unwrap()]);
    {
        // The full 3g.20gb becomes two 1-slice compute instances: three 1c in all.
        let sim = tessera_gpu::SimBackend::open(&n.state(), None).unwrap();
        let one = tessera_mig::catalog().model("A100-40GB").unwrap().compute_instance_profiles(3)[0].id;
        for gi in sim.gpu_instances(0).unwrap() {
            let cis = sim.compute_instances(0, gi.id).unwrap();
            if cis.len() == 1 && cis[0].placement.size == 3 {
                sim.destroy_compute_instance(0, gi.id, cis[0].id).unwrap();
                sim.create_compute_instance(0, gi.id, one).unwrap();
                sim.create_compute_instance(0, gi.id, one).unwrap();
            }
        }
    }
    let exported = n.run(&["mig", "export"]);
    assert_eq!(exported.code, 0);
    assert!(exported.stdout.contains("\"1c.3g.20gb\": 3\n"), "{}", exported.stdout);
    assert_eq!(
        exported.stderr,
        "tessera: GPU 0: its GPU instances (1c.3g.20gb ×2; 1c.3g.20gb) export as compute-instance counts that \
         mig-parted (and `tessera mig apply`) group into other GPU instances (1c.3g.20gb ×3); applying this \
         export changes the GPU\n"
    );
}

/// Three 1-slice compute instances in GPU 0's 3g.40gb (mig-parted's `"1c.3g.40gb": 3`), one
/// 1-slice compute instance in its own 3g.40gb on GPU 1 (mig-parted's `1c.3g.40gb`), and
/// layouts that leave capacity free in each of the ways a GPU can.
const SPLITS: &str = "\
version: v1
mig-configs:
  splits:
    - devices: [0]
      mig-enabled: true
      mig-devices:
        \"3g.40gb\": 1
        \"2g.20gb\": 1
    - devices: [1]
      mig-enabled: true
      mig-devices:
        \"1c.3g.40gb\": 1
    - devices: [2]
      mig-enabled: true
      mig-devices:
        \"1g.10gb\": 7
    - devices: [3]
      mig-enabled: true
      mig-devices:
        \"3g.40gb\": 2
    - devices: [4]
      mig-enabled: true
      mig-devices: {}
";

#[test]
fn gpus_show_compute_splits_as_export_spells_them_and_what_is_free_one_way() {
    use tessera_gpu::MigBackend as _;
    let n = Node::with_sim("5xH100-80GB,numa=1");
    let cfg = n.file("mig.yaml", SPLITS);
    n.ok(&["mig", "apply", "-f", cfg.to_str().unwrap(), "-c", "splits"]);
    {
        // GPU 0's 3g.40gb split into three 1-slice compute instances, as `nvidia-smi mig -cci`
        // would: replace its full-size compute instance.
        let sim = tessera_gpu::SimBackend::open(&n.state(), None).unwrap();
        let gi = sim.gpu_instances(0).unwrap().into_iter().find(|g| g.placement.size == 4).unwrap();
        let model = tessera_mig::catalog().model("H100-80GB").unwrap();
        let one = model.compute_instance_profiles(3).iter().find(|c| c.compute_slices == 1).unwrap().id;
        for ci in sim.compute_instances(0, gi.id).unwrap() {
            sim.destroy_compute_instance(0, gi.id, ci.id).unwrap();
        }
        for _ in 0..3 {
            sim.create_compute_instance(0, gi.id, one).unwrap();
        }
    }
    let gpus = scrub(&n, &n.ok(&["mig", "gpus"]));
    insta::assert_snapshot!("gpus_splits_and_free", gpus);
    let exported = n.run(&["mig", "export"]);
    assert_eq!(exported.code, 0, "{}", exported.stderr);
    let export = exported.stdout;
    insta::assert_snapshot!("export_splits", export);
    // mig-parted counts compute instances: the split exports as `"1c.3g.40gb": 3`, which mig-parted
    // (and `mig apply`) group back into one 3g.40gb, so the export applies and asserts as it is.
    assert_eq!(exported.stderr, "");
    let again = n.file("splits.yaml", &export);
    let plan = n.ok(&["mig", "apply", "-f", again.to_str().unwrap(), "-c", "current", "--dry-run"]);
    assert!(plan.contains("GPUs 0-4 (H100-80GB): already as configured"), "{plan}");
    n.ok(&["mig", "assert", "-f", again.to_str().unwrap(), "-c", "current"]);
    // One spelling in `mig gpus`: the split GPU instance, and the single 1-slice one; the
    // export's counts of each.
    for (name, count) in [("1c.3g.40gb ×3", "\"1c.3g.40gb\": 3"), ("1c.3g.40gb", "\"1c.3g.40gb\": 1")] {
        assert!(gpus.contains(&format!("[{name} GI")), "mig gpus lacks {name}:\n{gpus}");
        assert!(export.contains(count), "mig export lacks {count}:\n{export}");
    }
    let j = json(&n.ok(&["mig", "gpus", "-o", "json"]));
    assert_eq!(j["gpus"][0]["instances"][1]["device_type"], "1c.3g.40gb ×3", "{j}");
    // Leftover capacity in one vocabulary whatever the layout: a line per GPU, never the units
    // against slices of old.
    let free: Vec<&str> = gpus.lines().map(str::trim).filter(|l| l.starts_with("free:")).collect();
    assert_eq!(free.len(), 5, "{gpus}");
    assert!(!gpus.contains("free units") && !gpus.contains("still fits"), "{gpus}");
    assert_eq!(free[2], "free: none; unit 7 is empty but no profile can use it");
    assert_eq!(free[3], "free: 1 compute slice, but no profile fits where it is");
    assert!(
        free[4].starts_with("free: 7 compute slices (room for 1× 7g.80gb or 1× 4g.40gb or 2× 3g.40gb"),
        "{}",
        free[4]
    );
    assert_eq!(j["gpus"][3]["free"], free[3]);
}

#[test]
fn the_backend_line_only_when_asked_or_when_nvml_was_asked_for() {
    let n = Node::new();
    // The simulated node on a machine without NVIDIA's driver: the ordinary case, nothing said.
    let quiet = n.run(&["mig", "gpus"]);
    assert_eq!((quiet.code, quiet.stderr.as_str()), (0, ""), "{}", quiet.stderr);
    // -v says it.
    let v = n.run(&["-v", "mig", "gpus"]);
    assert_eq!(v.code, 0, "{}", v.stderr);
    assert!(v.stderr.starts_with("tessera: using simulated node 8xH100-80GB,numa=2"), "{}", v.stderr);
    assert_eq!(v.stderr.lines().count(), 1, "{}", v.stderr);
    // An NVML library asked for that does not load: said, with why.
    let missing = n.run(&["--nvml-library", "/nonexistent/libnvidia-ml.so.1", "mig", "gpus"]);
    assert_eq!(missing.code, 0, "{}", missing.stderr);
    assert!(
        missing.stderr.contains("using simulated node")
            && missing.stderr.contains("no NVML: /nonexistent/libnvidia-ml.so.1 cannot be loaded"),
        "{}",
        missing.stderr
    );
    // --backend nvml never falls back: an error naming it.
    let nvml = n.run(&["--backend", "nvml", "--nvml-library", "/nonexistent/libnvidia-ml.so.1", "mig", "gpus"]);
    assert_eq!(nvml.code, 1, "{}", nvml.stderr);
    assert!(nvml.stderr.contains("--backend nvml"), "{}", nvml.stderr);
}

#[test]
fn the_simulated_host_is_the_specs_never_this_machines() {
    let n = Node::new();
    let j = json(&n.ok(&["mig", "gpus", "-o", "json"]));
    assert_eq!(j["host"], serde_json::json!({"cpus": 224, "memory_mib": 2u64 << 20, "numa_nodes": 2}));
    assert_eq!(j["gpus"][0]["local_cpus"], "0-111");
    assert_eq!(j["gpus"][7]["local_cpus"], "112-223");
    let table = n.ok(&["mig", "gpus"]);
    assert!(table.contains("host: 224 CPUs and 2TiB of memory on 2 NUMA nodes (simulated"), "{table}");
    let other = Node::new();
    let j = json(&other.ok(&["--sim", "2xA30,numa=2,cpus=64,mem=512GiB", "mig", "gpus", "-o", "json"]));
    assert_eq!(j["host"], serde_json::json!({"cpus": 64, "memory_mib": 512u64 << 10, "numa_nodes": 2}));
    // Errors name the part of the spec.
    for (spec, needles) in [
        ("8xH100-80GB,mem=abc", &["--sim '8xH100-80GB,mem=abc'", "'mem=abc'", "'abc' is not a size"][..]),
        ("8xH100-80GB,cpus=0", &["'cpus=0'"][..]),
        ("8xH100-80GB,numa=2,cpus=7", &["cpus=7", "numa=2", "multiple of 2"][..]),
    ] {
        let e = Node::new().fails(&["--sim", spec, "mig", "gpus"]);
        for needle in needles {
            assert!(e.contains(needle), "{spec}: {e} lacks {needle}");
        }
    }
}

/// An error whose sentence already holds its cause says the cause once.
#[test]
fn an_error_says_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let r = run_with_state(dir.path(), None, &["mig", "gpus"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.stderr.matches("Is a directory").count(), 1, "{}", r.stderr);
}

/// mig-parted's coverage rules, end to end on a 4-GPU node: indices the node lacks are skipped
/// with a note (one file serves 4- and 8-GPU nodes); assert fails unless every GPU is matched by
/// an entry; apply leaves unmatched GPUs as they are; an all-zero `mig-devices` and device types
/// mig-parted rejects (`1G.10GB`, `1g.10gb `) are refused at parse time with file:line:column.
#[test]
fn mig_parted_coverage_and_parse_time_refusals() {
    let n = Node::with_sim("4xH100-80GB");
    let cfg = n.file(
        "configs.yaml",
        "version: v1\nmig-configs:\n  eight-gpu:\n    - devices: [0, 1, 2, 3]\n      mig-enabled: true\n      mig-devices:\n        \"3g.40gb\": 2\n    - devices: [4, 5, 6, 7]\n      mig-enabled: false\n  half:\n    - devices: [0, 1]\n      mig-enabled: true\n      mig-devices:\n        \"1g.10gb\": 7\n  absent-only:\n    - devices: [6]\n      mig-enabled: false\n",
    );
    let entry = "version: v1\nmig-configs:\n  x:\n    - devices: all\n      mig-enabled: true\n      mig-devices:\n";
    let zero = n.file("zero.yaml", &format!("{entry}        \"1g.10gb\": 0\n"));
    let upper = n.file("upper.yaml", &format!("{entry}        \"1G.10GB\": 1\n"));
    let space = n.file("space.yaml", &format!("{entry}        \"1g.10gb \": 1\n"));
    let (cfg, zero, upper, space) =
        (cfg.to_str().unwrap(), zero.to_str().unwrap(), upper.to_str().unwrap(), space.to_str().unwrap());
    // (arguments, exit code)
    let steps: &[(&[&str], i32)] = &[
        (&["mig", "apply", "-f", cfg, "-c", "eight-gpu"], 0),
        (&["mig", "assert", "-f", cfg, "-c", "eight-gpu"], 0),
        (&["mig", "assert", "-f", cfg, "-c", "half"], 1),
        (&["mig", "apply", "-f", cfg, "-c", "half"], 0),
        (&["mig", "assert", "-f", cfg, "-c", "half"], 1),
        (&["mig", "assert", "-f", cfg, "-c", "absent-only"], 1),
        (&["mig", "apply", "-f", zero, "-c", "x"], 1),
        (&["mig", "assert", "-f", upper, "-c", "x"], 1),
        (&["mig", "apply", "-f", space, "-c", "x"], 1),
    ];
    let mut transcript = String::new();
    for (args, code) in steps {
        let r = n.run(args);
        assert_eq!(r.code, *code, "tessera {args:?}:\n{}\n{}", r.stdout, r.stderr);
        transcript.push_str(&format!("$ tessera {}\n[exit {}]\n{}{}\n", args.join(" "), r.code, r.stdout, r.stderr));
    }
    insta::assert_snapshot!("mig_parted_coverage", scrub(&n, &transcript));
    // GPUs 2 and 3, which `half` does not select, kept eight-gpu's layout.
    let export = n.ok(&["mig", "export"]);
    assert!(export.contains("devices: [2, 3]") || export.contains("devices: [2,3]"), "{export}");
}

/// `tessera ARGS` on `node` with `stdin` and extra environment variables, as mig-manager's
/// scripts call mig-parted (`MIG_PARTED_*` set, the config piped in).
fn run_mig_parted_style(node: &Node, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Run {
    use std::io::Write as _;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.args(args).env("TESSERA_SIM_STATE", node.state()).env_remove("TESSERA_SIM");
    if let Some(spec) = node.spec {
        cmd.env("TESSERA_SIM", spec);
    }
    for var in [
        "MIG_PARTED_CONFIG_FILE",
        "MIG_PARTED_SELECTED_CONFIG",
        "MIG_PARTED_MODE_CHANGE_ONLY",
        "MIG_PARTED_VALID_CONFIG",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    // A command that does not read its input closes the pipe early; that is not a failure here.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// mig-parted's CLI contract: `-f -` reads the config from standard input; `-c` may be left out
/// when the file holds exactly one config (and is required, naming the configs, when it holds
/// several); `--mode-only` (`-m`, `MIG_PARTED_MODE_CHANGE_ONLY`) applies and asserts only the MIG
/// mode; `--valid-config` (`-a`, `MIG_PARTED_VALID_CONFIG`) checks only the file and the
/// selected config, without the node. Exit codes as mig-parted's: 0, or 1 with the reason.
#[test]
fn mig_parted_cli_contract() {
    let n = Node::with_sim("2xA100-40GB");
    let one = "version: v1\nmig-configs:\n  only:\n    - devices: all\n      mig-enabled: true\n      mig-devices:\n        \"3g.20gb\": 2\n";
    let two = "version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: false\n  b:\n    - devices: all\n      mig-enabled: true\n      mig-devices:\n        \"1g.5gb\": 7\n";
    let one_path = n.file("one.yaml", one);
    let two_path = n.file("two.yaml", two);
    let (one_path, two_path) = (one_path.to_str().unwrap(), two_path.to_str().unwrap());
    let none: &[(&str, &str)] = &[];
    // (arguments, standard input, environment, exit code, text that stdout+stderr must hold)
    type Step<'a> = (&'a [&'a str], &'a str, &'a [(&'a str, &'a str)], i32, &'a str);
    let steps: &[Step] = &[
        // -f - : the config from standard input, named so in the output.
        (&["mig", "apply", "-f", "-", "-c", "only", "--dry-run"], one, none, 0, "'only' from standard input"),
        (&["mig", "apply", "-f", "-"], one, none, 0, "create  2× 3g.20gb"),
        (&["mig", "assert", "-f", "-", "-c", "only"], one, none, 0, "matches 'only' from standard input"),
        (&["mig", "assert"], one, &[("MIG_PARTED_CONFIG_FILE", "-")], 0, "matches 'only'"),
        // The implicit -c of a one-config file, and its refusal for several.
        (&["mig", "assert", "-f", one_path], "", none, 0, "matches 'only'"),
        (
            &["mig", "assert", "-f", two_path],
            "",
            none,
            1,
            "-c/--selected-config (or MIG_PARTED_SELECTED_CONFIG) is required",
        ),
        (&["mig", "assert", "-f", two_path], "", none, 1, "holds 2 configs (a, b)"),
        // --mode-only: MIG is enabled on both GPUs, as 'b' wants, whatever the instances.
        (&["mig", "assert", "-f", two_path, "-c", "b"], "", none, 1, "does not match 'b'"),
        (&["mig", "assert", "-f", two_path, "-c", "b", "--mode-only"], "", none, 0, "matches 'b'"),
        (&["mig", "assert", "-f", two_path, "-c", "b", "-m"], "", none, 0, "matches 'b'"),
        (&["mig", "assert", "-f", two_path, "-c", "a", "-m"], "", none, 1, "MIG mode is"),
        (
            &["mig", "assert", "-f", two_path, "-c", "b"],
            "",
            &[("MIG_PARTED_MODE_CHANGE_ONLY", "true")],
            0,
            "matches 'b'",
        ),
        (&["mig", "apply", "-f", two_path, "-c", "b", "-m"], "", none, 0, "Nothing to change"),
        // --valid-config: the node is not looked at.
        (&["mig", "assert", "-f", two_path, "-c", "b", "--valid-config"], "", none, 0, "'b' in"),
        (&["mig", "assert", "-f", two_path, "-c", "z", "-a"], "", none, 1, "unknown config 'z'"),
        (&["mig", "assert", "-f", two_path, "-c", "a"], "", &[("MIG_PARTED_VALID_CONFIG", "1")], 0, "is valid"),
        (
            &["mig", "assert", "-f", two_path, "-c", "b"],
            "",
            &[("MIG_PARTED_VALID_CONFIG", "false")],
            1,
            "does not match 'b'",
        ),
        (
            &["mig", "assert", "-f", "-", "-a"],
            one,
            &[("TESSERA_SIM", "bad-spec")],
            0,
            "'only' in standard input is valid",
        ),
    ];
    for (args, stdin, env, code, needle) in steps {
        let r = run_mig_parted_style(&n, args, stdin, env);
        let all = format!("{}{}", r.stdout, r.stderr);
        assert_eq!(r.code, *code, "tessera {args:?} {env:?}:\n{all}");
        assert!(all.contains(needle), "tessera {args:?} {env:?}: lacks {needle:?}:\n{all}");
    }
    // apply --mode-only enables MIG and creates nothing.
    let m = Node::with_sim("1xA100-40GB");
    let r = run_mig_parted_style(&m, &["mig", "apply", "-f", "-", "--mode-only"], one, none);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let export = run_mig_parted_style(&m, &["mig", "export"], "", none).stdout;
    assert!(export.contains("mig-enabled: true") && !export.contains("3g.20gb"), "{export}");
}
