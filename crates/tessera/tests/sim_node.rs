//! The simulated node as an operator meets it: a DGX H100's host (not this machine's) for
//! admission and placement, jobs that still run here with the simulated CPUs folded onto this
//! machine's, and one node for `tessera mig` and `tessera serve`.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Daemon;

/// This process's own CPUs (`Cpus_allowed_list`).
fn own_cpus() -> BTreeSet<u32> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let list = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap();
    tessera_host::parse_cpulist(list).unwrap()
}

#[test]
fn a_realistic_job_runs_on_the_default_node_bound_to_this_machines_cpus() {
    // The default node, said in full: 224 CPUs and 2 TiB on two NUMA nodes.
    let d = Daemon::start("8xH100-80GB,numa=2,cpus=224,mem=2TiB");
    let out = d.path().join("seen");
    let script = format!(
        "echo \"$TESSERA_SIM_CPUS $TESSERA_SIM_NUMA_NODE\" > {0}; grep Cpus_allowed_list /proc/self/status >> {0}",
        out.display()
    );
    // More memory than this machine has in a NUMA node, as on a DGX.
    let id = d.submit(&["--profile", "1g.10gb", "--mem", "64GiB", "--cpus", "16", "--", "sh", "-c", &script]);
    let j = d.wait(id);
    assert_eq!(j["state"], "succeeded", "{j}\n{}", d.log());
    let seen = std::fs::read_to_string(&out).unwrap();
    let mut lines = seen.lines();
    // The job is told its CPUs and NUMA node on the simulated node: 16 of node 0's 0-111 (GPU 0
    // sits there).
    let told: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let sim_cpus = tessera_host::parse_cpulist(told[0]).unwrap();
    assert_eq!(sim_cpus.len(), 16, "{seen}");
    assert!(sim_cpus.iter().all(|c| *c < 112), "{seen}");
    assert_eq!(told[1], "0", "{seen}");
    // And runs on this machine's CPUs: simulated CPU c on the (c mod n)-th of the n it may use.
    let real: Vec<u32> = own_cpus().into_iter().collect();
    let want: BTreeSet<u32> = sim_cpus.iter().map(|c| real[*c as usize % real.len()]).collect();
    let bound = lines.next().unwrap().split_once(':').unwrap().1.trim();
    assert_eq!(tessera_host::parse_cpulist(bound).unwrap(), want, "{seen}");
    // What no DGX H100 could hold is refused at submit, naming the host.
    let (code, _, err) = d.cli(&["submit", "--profile", "1g.10gb", "--mem", "3TiB", "--", "true"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.to_lowercase().contains("mem"), "{err}");
}

/// `tessera serve` on `socket`, its state in `dir`, with the simulated node's state where
/// `XDG_STATE_HOME` says (no `--sim-state`, no `TESSERA_SIM_STATE`).
fn serve(dir: &Path, xdg: &Path, socket: &Path) -> std::process::Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["serve", "--state-dir"])
        .arg(dir.join("state"))
        .arg("--socket")
        .arg(socket)
        .arg("--config")
        .arg(dir.join("tessera.toml"))
        .env("XDG_STATE_HOME", xdg)
        .env_remove("TESSERA_SIM_STATE")
        .env_remove("TESSERA_SIM")
        .env("TESSERA_NVML_LIBRARY", "/nonexistent/libnvidia-ml.so.1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("daemon.log")).unwrap())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("serve exited ({status}):\n{}", std::fs::read_to_string(dir.join("daemon.log")).unwrap());
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "serve did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

#[test]
fn mig_apply_then_serve_drive_one_node_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let xdg = dir.path().join("xdg");
    let tessera = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(args)
            .env("XDG_STATE_HOME", &xdg)
            .env_remove("TESSERA_SIM_STATE")
            .env_remove("TESSERA_SIM")
            .env("TESSERA_NVML_LIBRARY", "/nonexistent/libnvidia-ml.so.1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "tessera {args:?}: {text}{}", String::from_utf8_lossy(&out.stderr));
        text
    };
    // The README's flow: lay the node out, then start the daemon.
    tessera(&["mig", "apply", "-c", "all-1g.10gb"]);
    assert!(xdg.join("tessera/sim-node.json").exists(), "mig apply did not use the documented default");
    // The daemon would use the same file.
    let config = dir.path().join("tessera.toml");
    std::fs::write(&config, "[scheduler]\ntick_ms = 50\n").unwrap();
    let config = config.to_str().unwrap();
    let check: serde_json::Value =
        serde_json::from_str(&tessera(&["serve", "--check-config", "-o", "json", "--config", config])).unwrap();
    assert_eq!(check["backend"]["sim_state"], xdg.join("tessera/sim-node.json").display().to_string(), "{check}");
    let socket = dir.path().join("s.sock");
    let mut daemon = serve(dir.path(), &xdg, &socket);
    let gpus = tessera(&["--socket", socket.to_str().unwrap(), "-o", "json", "gpus"]);
    let _ = daemon.kill();
    let _ = daemon.wait();
    // Eight H100s with seven 1g.10gb each, as `mig apply` left them.
    assert_eq!(gpus.matches("\"1g.10gb\"").count(), 8 * 7, "{gpus}");
    assert!(!dir.path().join("state/sim-node.json").exists(), "the daemon made a node of its own");
}
