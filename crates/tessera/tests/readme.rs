//! The README's "First steps" run exactly as written, by a new user who is not root (a user made
//! for the test when the suite runs as root), with nothing but the binary on their `PATH` and
//! their own `XDG_*` directories. The only line not run is the build (the test's binary stands in
//! for `target/release`); after the `tessera serve &` line the test waits for the daemon's socket,
//! as a person would glance at its start-up lines. Every other `tessera` command the README
//! shows is checked to name only flags its subcommand accepts.

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

/// Every `tessera …` command in the README's code blocks (a `$ ` or `sudo ` before it, `\`
/// continuations and `; tessera …` chains included), as the shell would see it.
fn readme_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md")).unwrap();
    let mut in_block = false;
    let mut lines = Vec::new();
    let mut pending = String::new();
    for line in readme.lines() {
        if line.starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if !in_block {
            continue;
        }
        let line = line.strip_prefix("$ ").unwrap_or(line);
        match line.strip_suffix('\\') {
            Some(head) => pending.push_str(head),
            None => {
                pending.push_str(line);
                lines.push(std::mem::take(&mut pending));
            }
        }
    }
    lines
        .iter()
        .flat_map(|l| {
            l.split("; tessera ").enumerate().map(|(i, s)| if i == 0 { s.to_string() } else { format!("tessera {s}") })
        })
        .map(|c| c.trim().strip_prefix("sudo ").unwrap_or(c.trim()).to_string())
        .filter(|c| c.starts_with("tessera "))
        .collect()
}

#[test]
fn every_command_the_readme_shows_names_flags_that_exist() {
    let commands = readme_commands();
    assert!(commands.len() >= 30, "the README's commands were not found: {commands:?}");
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_tessera"));
    let dir = tempfile::tempdir().unwrap();
    // `tessera` asks for help just before the job's command (`--`): clap rejects an unknown flag
    // or subcommand before it answers, and runs nothing.
    let mut script = format!(
        "tessera() {{ local a=(); while [ $# -gt 0 ] && [ \"$1\" != -- ]; do a+=(\"$1\"); shift; done; \
         {bin:?} \"${{a[@]}}\" --help >/dev/null 2>\"$OUT\" || {{ echo \"$CMD\"; cat \"$OUT\"; }}; }}\n",
    );
    for c in &commands {
        // Without its comment, its redirection (`> current.yaml`) and `&`: checked in the foreground.
        let c = c.split(" #").next().unwrap_or(c);
        let c = c.split(" > ").next().unwrap_or(c).trim_end();
        let c = c.strip_suffix('&').unwrap_or(c);
        let quoted = c.replace('\'', "'\\''");
        script.push_str(&format!("CMD='{quoted}'\n{c}\n"));
    }
    let out = Command::new("bash")
        .args(["-c", &script])
        .env("OUT", dir.path().join("stderr"))
        .env("S", dir.path())
        .current_dir(dir.path())
        .output()
        .unwrap();
    let refused = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && refused.is_empty(),
        "README commands with flags tessera does not accept:\n{refused}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
