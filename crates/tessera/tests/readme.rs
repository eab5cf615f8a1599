//! The README's "First steps" run exactly as written, by a new user who is not root (a user made
//! for the test when the suite runs as root), with nothing but the binary on their `PATH` and
//! their own `XDG_*` directories. The only line not run is the build (the test's binary stands in
//! for `target/release`); after the `tessera serve &` line the test waits for the daemon's socket,
//! as a person would glance at its start-up lines.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The lines of the README block after `<!-- first-steps -->`.
fn first_steps() -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md")).unwrap();
    let start = readme.find("<!-- first-steps -->").expect("README has a first-steps block");
    let block = &readme[start..];
    let open = block.find("```sh\n").expect("the block is a sh code block") + "```sh\n".len();
    let len = block[open..].find("```").unwrap();
    block[open..open + len].lines().map(str::to_owned).filter(|l| !l.trim().is_empty()).collect()
}

#[test]
fn the_readmes_first_steps_work_as_written() {
    let lines = first_steps();
    assert!(lines.first().is_some_and(|l| l.starts_with("cargo build")), "{lines:?}");
    let user = common::TestUser::create("tessera-readme");
    let base = tempfile::tempdir().unwrap();
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = base.path().join("home");
    let run = base.path().join("run");
    let state = base.path().join("state");
    for d in [&home, &run, &state] {
        std::fs::create_dir(d).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).unwrap();
        if let Some(u) = &user {
            std::os::unix::fs::chown(d, Some(u.uid), None).unwrap();
        }
    }
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_tessera"));
    let mut script = String::from("set -euo pipefail\n");
    for line in &lines[1..] {
        script.push_str(&format!(
            "echo \"\\$ {}\"\n",
            line.replace('\\', "\\\\").replace('"', "\\\"").replace('$', "\\$")
        ));
        script.push_str(line);
        script.push('\n');
        if line.trim_start().starts_with("tessera serve") && line.contains('&') {
            script.push_str(
                "for i in $(seq 600); do [ -S \"$XDG_RUNTIME_DIR/tessera/tessera.sock\" ] && break; sleep 0.05; done\n",
            );
        }
    }
    script.push_str("kill %1; wait %1 || true\n");
    let mut cmd = match &user {
        Some(u) => {
            let mut c = Command::new("setpriv");
            c.args([&format!("--reuid={}", u.uid), "--regid=nogroup", "--init-groups", "--", "bash", "-c", &script]);
            c
        }
        None => {
            let mut c = Command::new("bash");
            c.args(["-c", &script]);
            c
        }
    };
    let out = cmd
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", bin.parent().unwrap().display()))
        .env("HOME", &home)
        .env("XDG_RUNTIME_DIR", &run)
        .env("XDG_STATE_HOME", &state)
        .env("LANG", "C.UTF-8")
        .current_dir(&home)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let said = format!("--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}");
    assert!(out.status.success(), "the first steps failed:\n{said}");
    // What the user sees: the job's two streams in order, a cancelled job saying who did it.
    assert!(stdout.contains("out| step 1\nerr| oops\nout| step 2\n"), "{said}");
    let who = user.as_ref().map_or_else(
        || tessera_host::user_by_uid(tessera_host::effective_uid()).unwrap().unwrap().name,
        |u| u.name.clone(),
    );
    assert!(stdout.contains(&format!("by {who}")), "job 2 does not say who cancelled it:\n{said}");
    // The daemon said where it keeps state and where it listens, in the user's own places.
    assert!(stderr.contains(&state.join("tessera/daemon").display().to_string()), "{said}");
    assert!(stderr.contains(&run.join("tessera/tessera.sock").display().to_string()), "{said}");
}
