//! What the Slurm agent's crash loop (`scripts/slurm-crash-loop.sh`) found, kept as regressions:
//! - `tessera slurm sync` killed between writing the GRES files and Slurm taking them up: the
//!   next sync must restart Slurm although the files already say what the layout is, or Slurm
//!   runs on with the old GRES and its indices no longer name the instances the map says;
//! - GRES out of step with the layout (a change's sync run while the daemon was still making it,
//!   its agent killed): `tessera slurm agent` syncs them, or the jobs waiting for the new slices
//!   wait forever (the layout has them, Slurm does not).
//!
//! Slurm here is a stand-in `scontrol` on `PATH` that reports the node's `Gres=` from the node
//! file sync wrote and no jobs; the daemon is real.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

use common::Daemon;

fn script(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn sync(d: &Daemon, dir: &Path) -> Output {
    slurm(d, dir, &["sync"])
}

fn slurm(d: &Daemon, dir: &Path, args: &[&str]) -> Output {
    let path = format!("{}:{}", dir.join("bin").display(), std::env::var("PATH").unwrap_or_default());
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg("slurm")
        .args(args)
        .arg("--config")
        .arg(dir.join("slurm.toml"))
        .arg("--socket")
        .arg(d.socket())
        .env("PATH", path)
        .output()
        .unwrap()
}

fn restarts(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("restarts")).unwrap_or_default().lines().count()
}

/// The stand-in Slurm in a new directory: `scontrol`, the restart command (the first restart is
/// killed with the sync that ran it, when `kill_first`), and the `[slurm]` configuration.
fn stand_in(kill_first: bool) -> tempfile::TempDir {
    let w = tempfile::tempdir().unwrap();
    let dir = w.path();
    if !kill_first {
        std::fs::write(dir.join("killed"), "").unwrap();
    }
    std::fs::create_dir(dir.join("bin")).unwrap();
    let node_file = dir.join("node.conf");
    // scontrol: the node answers with the Gres= of the node file (as slurmctld does once it
    // restarted with it); drains and resumes are recorded.
    script(
        &dir.join("bin/scontrol"),
        &format!(
            "#!/bin/sh\ncase \"$*\" in\n\"show node\"*) echo \"NodeName=gpu01 State=IDLE Gres=$(sed -n 's/.* Gres=//p' {nf})\";;\n\
             \"show config\") echo 'GresTypes = gpu';;\n\"show job\"*) echo 'No jobs in the system';;\nupdate*) echo \"$*\" >> {d}/updates;;\nesac\n",
            nf = node_file.display(),
            d = dir.display()
        ),
    );
    // The restart: the first one is killed with the sync that ran it (SIGKILL to its parent).
    script(
        &dir.join("restart.sh"),
        &format!(
            "#!/bin/sh\necho run >> {d}/restarts\nif [ ! -e {d}/killed ]; then touch {d}/killed; kill -9 $PPID; sleep 1; fi\n",
            d = dir.display()
        ),
    );
    std::fs::write(
        dir.join("slurm.toml"),
        format!(
            "[slurm]\nnode_name = \"gpu01\"\ngres_file = \"{d}/gres.conf\"\nnode_file = \"{nf}\"\nstate_dir = \"{d}/lib\"\n\
             runtime_dir = \"{d}/run\"\nfiles = \"single\"\nrestart = [[\"{d}/restart.sh\"]]\n",
            d = dir.display(),
            nf = node_file.display()
        ),
    )
    .unwrap();

    w
}

#[test]
fn a_sync_killed_before_slurm_restarted_leaves_the_restart_to_the_next_one() {
    let d = Daemon::start("1xH100-80GB,numa=1,cpus=4");
    d.ok(&["admin", "layout", "0", "3g.40gb@0,3g.40gb@4"]);
    let w = stand_in(true);
    let dir = w.path();
    // Killed in the restart: the files are written, Slurm did not take them up.
    let out = sync(&d, dir);
    assert_eq!(out.status.code(), None, "not killed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(restarts(dir), 1);
    assert!(std::fs::read_to_string(dir.join("gres.conf")).unwrap().contains("Type=3g.40gb"));

    // The next sync finds the files in step, and still restarts Slurm.
    let out = sync(&d, dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        restarts(dir),
        2,
        "the restart the killed sync owed was not made: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("GRES updated"), "{}", String::from_utf8_lossy(&out.stdout));

    // Once Slurm took them up, a sync has nothing to do.
    let out = sync(&d, dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("already in step"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(restarts(dir), 2);
}

#[test]
fn the_agent_syncs_gres_left_out_of_step_with_the_layout() {
    let d = Daemon::start("1xH100-80GB,numa=1,cpus=4");
    d.ok(&["admin", "layout", "0", "3g.40gb@0,3g.40gb@4"]);
    let w = stand_in(false);
    let dir = w.path();
    let out = sync(&d, dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(restarts(dir), 1);

    // The layout changes behind the GRES' back (as when a killed agent's change completes in the
    // daemon after the next agent synced).
    d.ok(&["admin", "layout", "0", "4g.40gb@0,3g.40gb@4"]);
    let out = slurm(&d, dir, &["agent", "--once"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(restarts(dir), 2, "the agent left the GRES out of step: {}", String::from_utf8_lossy(&out.stderr));
    let gres = std::fs::read_to_string(dir.join("gres.conf")).unwrap();
    assert!(gres.contains("Type=4g.40gb"), "{gres}");
    // It drained the node around the restart and resumed it.
    let updates = std::fs::read_to_string(dir.join("updates")).unwrap_or_default();
    assert!(updates.contains("state=drain") && updates.trim_end().ends_with("state=resume"), "{updates}");
}
