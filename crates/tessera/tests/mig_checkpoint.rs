//! `mig checkpoint` / `mig restore` (and `nvidia-mig-parted checkpoint|restore`) through the real
//! binary on a simulated node: a checkpoint restores exactly the placements of GPU and compute
//! instances and the MIG modes, a checkpoint in mig-parted's own form restores, a malformed one
//! or an unknown GPU is refused naming where, a busy instance in the way is refused with nothing
//! changed, hooks run, and `apply`'s refusal names the processes in the way.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

struct Node {
    dir: tempfile::TempDir,
    spec: &'static str,
}

/// A GPU instance: profile, start, compute instances as `(profile id, start, size)`.
type Gi = (String, u64, Vec<(u64, u64, u64)>);
/// A GPU: UUID, MIG on, its GPU instances.
type Gpu = (String, bool, Vec<Gi>);

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Node {
    fn new(spec: &'static str) -> Node {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_tessera"), dir.path().join("nvidia-mig-parted")).unwrap();
        Node { dir, spec }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> String {
        std::fs::write(self.path(name), text).unwrap();
        self.path(name).display().to_string()
    }

    fn exec(&self, program: &Path, args: &[&str]) -> Run {
        let out = Command::new(program)
            .args(args)
            .env("TESSERA_SIM_STATE", self.path("sim-node.json"))
            .env("TESSERA_SIM", self.spec)
            .env_remove("TESSERA_BACKEND")
            .env_remove("MIG_PARTED_CHECKPOINT_FILE")
            .env_remove("MIG_PARTED_HOOKS_FILE")
            .env_remove("MIG_PARTED_MODE_CHANGE_ONLY")
            .output()
            .unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn run(&self, args: &[&str]) -> Run {
        self.exec(Path::new(env!("CARGO_BIN_EXE_tessera")), args)
    }

    fn ok(&self, args: &[&str]) -> Run {
        let r = self.run(args);
        assert_eq!(r.code, 0, "tessera {args:?} failed:\n{}\n{}", r.stdout, r.stderr);
        r
    }

    fn apply(&self, config: &str) {
        let f = self.write("config.yaml", config);
        self.ok(&["mig", "apply", "-f", &f]);
    }

    fn gpus(&self) -> Value {
        let v: Value = serde_json::from_str(&self.ok(&["-o", "json", "mig", "gpus"]).stdout).unwrap();
        v.get("gpus").cloned().unwrap_or(v)
    }

    /// Each GPU's UUID, MIG mode and instances: `(profile, start, [(ci profile, ci start, ci size)])`.
    fn layout(&self) -> Vec<Gpu> {
        let gpus = self.gpus();
        gpus.as_array()
            .unwrap()
            .iter()
            .map(|g| {
                let mut gis: Vec<Gi> = g["instances"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| {
                        let mut cis: Vec<(u64, u64, u64)> = i["compute_instances"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|c| {
                                let p = c["placement"].as_str().unwrap();
                                let (start, size) = p.split_once(':').unwrap();
                                (c["profile_id"].as_u64().unwrap(), start.parse().unwrap(), size.parse().unwrap())
                            })
                            .collect();
                        cis.sort_unstable();
                        (i["profile"].as_str().unwrap().to_string(), i["start"].as_u64().unwrap(), cis)
                    })
                    .collect();
                gis.sort();
                (g["uuid"].as_str().unwrap().to_string(), g["mig"]["current"].as_bool().unwrap(), gis)
            })
            .collect()
    }

    /// The driver's id of the GPU instance of GPU `gpu` starting at `start`.
    fn gi_id(&self, gpu: usize, start: u64) -> u64 {
        let gpus = self.gpus();
        let i = gpus[gpu]["instances"].as_array().unwrap().iter().find(|i| i["start"] == start).unwrap();
        i["gpu_instance_id"].as_u64().unwrap()
    }
}

const FIRST: &str = r#"version: v1
mig-configs:
  first:
    - devices: [0]
      mig-enabled: true
      mig-devices: {"1c.3g.40gb": 3, "1c.2g.20gb": 1, "1g.10gb": 2}
    - devices: [1]
      mig-enabled: true
      mig-devices: {"2g.20gb": 2}
    - devices: [2]
      mig-enabled: false
      mig-devices: {}
"#;

const SECOND: &str = r#"version: v1
mig-configs:
  second:
    - devices: [0]
      mig-enabled: true
      mig-devices: {"1g.10gb": 7}
    - devices: [1]
      mig-enabled: false
      mig-devices: {}
    - devices: [2]
      mig-enabled: true
      mig-devices: {"3g.20gb": 2}
"#;

#[test]
fn restore_gives_back_exactly_the_checkpointed_placements_and_modes() {
    let n = Node::new("2xH100-80GB+1xA100-40GB");
    n.apply(FIRST);
    let before = n.layout();
    // GPU 0 holds a GPU instance with three compute instances.
    assert!(before[0].2.iter().any(|g| g.2.len() == 3), "{before:?}");
    let ckpt = n.path("ckpt.json").display().to_string();
    n.ok(&["mig", "checkpoint", "-f", &ckpt]);
    let text = std::fs::read_to_string(&ckpt).unwrap();
    assert!(text.starts_with(r#"{"Version":"v1","MigState":{"Devices":[{"UUID":"GPU-"#), "{text}");
    assert!(text.ends_with(r#""MigMode":0,"GpuInstances":null}]}}"#), "{text}");
    n.apply(SECOND);
    assert_ne!(n.layout(), before);
    let r = n.ok(&["mig", "restore", "-f", &ckpt]);
    assert!(r.stdout.contains("Restored the MIG state of 3 GPU(s)"), "{}", r.stdout);
    assert_eq!(n.layout(), before);
    // Again: nothing to do, and the same checkpoint comes out.
    let r = n.ok(&["mig", "restore", "-f", &ckpt]);
    assert!(r.stdout.contains("Nothing to change"), "{}", r.stdout);
    n.ok(&["mig", "checkpoint", "-f", &n.path("again.json").display().to_string()]);
    assert_eq!(std::fs::read_to_string(n.path("again.json")).unwrap(), text);
    // Only the compute instances of one GPU instance differ: they are redone in place.
    n.apply(&FIRST.replace(r#""1c.3g.40gb": 3"#, r#""3g.40gb": 1"#));
    assert_ne!(n.layout(), before);
    let r = n.ok(&["mig", "restore", "-f", &ckpt]);
    assert_eq!(n.layout(), before, "{}", r.stdout);
    // --mode-only restores the modes and leaves the MIG devices.
    n.apply(SECOND);
    n.ok(&["mig", "restore", "-f", &ckpt, "-m"]);
    let modes: Vec<bool> = n.layout().iter().map(|g| g.1).collect();
    assert_eq!(modes, [true, true, false]);
    assert!(n.layout()[1].2.is_empty());
}

#[test]
fn a_checkpoint_in_mig_parteds_own_form_restores() {
    let n = Node::new("1xH100-80GB,mig=off");
    let uuid = n.gpus()[0]["uuid"].as_str().unwrap().to_string();
    // As Go writes it: compact, nulls; 3g.40gb (index 2) at 4 with a 2-slice and a 1-slice
    // compute instance, a 1g.10gb (index 0) at 0 with none.
    let text = format!(
        r#"{{"Version":"v1","MigState":{{"Devices":[{{"UUID":"{uuid}","MigMode":1,"GpuInstances":[{{"ProfileID":0,"Placement":{{"Start":0,"Size":1}},"ComputeInstances":null}},{{"ProfileID":2,"Placement":{{"Start":4,"Size":4}},"ComputeInstances":[{{"ProfileID":1,"EngProfileID":0}},{{"ProfileID":0,"EngProfileID":0}}]}}]}}]}}}}"#
    );
    let f = n.write("go.json", &text);
    n.ok(&["mig", "restore", "-f", &f]);
    let got = n.layout();
    assert!(got[0].1);
    assert_eq!(got[0].2, [("1g.10gb".to_string(), 0, vec![]), ("3g.40gb".to_string(), 4, vec![(0, 2, 1), (1, 0, 2)])]);
}

#[test]
fn malformed_checkpoints_and_unknown_gpus_are_refused_naming_where() {
    let n = Node::new("1xH100-80GB");
    let uuid = n.gpus()[0]["uuid"].as_str().unwrap().to_string();
    let cases = [
        (
            format!(
                r#"{{"Version":"v1","MigState":{{"Devices":[{{"UUID":"{uuid}","MigMode":1,"GpuInstances":[{{"ProfileID":42,"Placement":{{"Start":0,"Size":1}}}}]}}]}}}}"#
            ),
            "MigState.Devices[0].GpuInstances[0].ProfileID: unknown profile index 42 on H100-80GB".to_string(),
        ),
        (
            r#"{"Version":"v1","MigState":{"Devices":[{"UUID":"GPU-nope","MigMode":true}]}}"#.to_string(),
            "bad.json: MigState.Devices[0].MigMode: expected a whole number ≥ 0, found true".to_string(),
        ),
        (
            r#"{"Version":"v1","MigState":{"Devices":[{"UUID":"GPU-nope","MigMode":0}]}}"#.to_string(),
            format!("MigState.Devices[0].UUID: this node has no GPU GPU-nope (it has {uuid})"),
        ),
    ];
    for (text, want) in cases {
        let f = n.write("bad.json", &text);
        let r = n.run(&["mig", "restore", "-f", &f]);
        assert_eq!(r.code, 1, "{text}: {}\n{}", r.stdout, r.stderr);
        assert!(r.stderr.contains(&want), "{text}\n  got:  {}\n  want: {want}", r.stderr);
    }
    let r = n.run(&["mig", "restore"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("missing required flags 'checkpoint-file'"), "{}", r.stderr);
}

#[test]
fn a_busy_instance_in_the_way_is_refused_with_nothing_changed() {
    let n = Node::new("2xH100-80GB");
    n.apply("version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: true\n      mig-devices: {\"2g.20gb\": 2}\n");
    let ckpt = n.path("ckpt.json").display().to_string();
    n.ok(&["mig", "checkpoint", "-f", &ckpt]);
    n.apply("version: v1\nmig-configs:\n  b:\n    - devices: all\n      mig-enabled: true\n      mig-devices: {\"1g.10gb\": 1}\n");
    let gi = n.gpus()[1]["instances"][0]["gpu_instance_id"].as_u64().unwrap();
    n.ok(&["mig", "busy", &format!("1:{gi}"), "--pid", "4711"]);
    let before = n.layout();
    let r = n.run(&["mig", "restore", "-f", &ckpt]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("nothing was changed"), "{}", r.stderr);
    assert!(r.stderr.contains("1g.10gb@") && r.stderr.contains("is used by pid 4711"), "{}", r.stderr);
    assert_eq!(n.layout(), before, "a GPU changed");
}

#[test]
fn restore_runs_hooks_and_the_nvidia_mig_parted_verbs() {
    let n = Node::new("1xA100-40GB,mig=off");
    let log = n.path("events.log");
    let mut hooks = "version: v1\nhooks:\n".to_string();
    for event in ["apply-start", "pre-apply-mode", "pre-apply-config", "apply-exit"] {
        hooks.push_str(&format!(
            "  {event}:\n  - command: /bin/sh\n    args: [\"-c\", \"echo {event} $MIG_PARTED_CHECKPOINT_FILE >> '{}'\"]\n",
            log.display()
        ));
    }
    let hooks = n.write("hooks.yaml", &hooks);
    let parted = n.path("nvidia-mig-parted");
    let ckpt = n.path("ckpt.json").display().to_string();
    // Checkpoint MIG off, then enable MIG with instances, then restore: mode changes, no devices.
    let r = n.exec(&parted, &["checkpoint", "-f", &ckpt]);
    assert_eq!((r.code, r.stdout.as_str()), (0, "MIG configuration checkpointed successfully\n"), "{}", r.stderr);
    n.apply("version: v1\nmig-configs:\n  on:\n    - devices: all\n      mig-enabled: true\n      mig-devices: {\"3g.20gb\": 2}\n");
    let r = n.exec(&parted, &["restore", "-f", &ckpt, "-k", &hooks]);
    assert_eq!((r.code, r.stdout.as_str()), (0, "MIG configuration restored successfully\n"), "{}", r.stderr);
    let events = std::fs::read_to_string(&log).unwrap();
    assert_eq!(events, format!("apply-start {ckpt}\npre-apply-mode {ckpt}\napply-exit {ckpt}\n"));
    assert!(!n.layout()[0].1, "MIG is still on");
    // A checkpoint with MIG on and devices: both phases' hooks.
    n.apply("version: v1\nmig-configs:\n  on:\n    - devices: all\n      mig-enabled: true\n      mig-devices: {\"3g.20gb\": 1}\n");
    let on = n.layout();
    let r = n.exec(&parted, &["checkpoint", "-f", &ckpt]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    n.apply("version: v1\nmig-configs:\n  off:\n    - devices: all\n      mig-enabled: false\n      mig-devices: {}\n");
    std::fs::remove_file(&log).unwrap();
    let r = n.exec(&parted, &["restore", "-f", &ckpt, "-k", &hooks]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let events = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        events.lines().map(|l| l.split(' ').next().unwrap()).collect::<Vec<_>>(),
        ["apply-start", "pre-apply-mode", "pre-apply-config", "apply-exit"]
    );
    assert_eq!(n.layout(), on);
    // Failures exit 1.
    let r = n.exec(&parted, &["restore", "-f", &n.path("absent.json").display().to_string()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let r = n.exec(&parted, &["checkpoint"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
}

#[test]
fn apply_refusal_names_the_processes_in_the_way() {
    let n = Node::new("2xH100-80GB");
    n.apply("version: v1\nmig-configs:\n  on:\n    - devices: all\n      mig-enabled: true\n      mig-devices: {\"7g.80gb\": 1}\n");
    let gi = n.gi_id(1, 0);
    n.ok(&["mig", "busy", &format!("1:{gi}"), "--pid", "4711"]);
    let before = n.layout();
    let off = n.write("off.yaml", "version: v1\nmig-configs:\n  off:\n    - devices: all\n      mig-enabled: false\n");
    for extra in [&[][..], &["--mode-only"][..]] {
        let mut args = vec!["mig", "apply", "-f", off.as_str()];
        args.extend_from_slice(extra);
        let r = n.run(&args);
        assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
        assert!(r.stderr.contains("GPU 1") && r.stderr.contains("pid 4711"), "{extra:?}: {}", r.stderr);
        assert!(r.stderr.contains("nothing was changed"), "{}", r.stderr);
        assert_eq!(n.layout(), before);
    }
}
