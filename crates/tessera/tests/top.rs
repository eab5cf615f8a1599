//! `tessera top` as scripts use it, against the real daemon on a simulated node: `--once` and
//! `-n N` print frames as text within `--width`, showing the GPUs' slice maps with each holder,
//! the running jobs and the queue with each job's reason as `tessera jobs -o json` gives it; the
//! live view refuses to start without a terminal; a daemon that cannot be asked is an error.
//! (The live view on a real terminal is `scripts/top-test.sh`, under tmux.)

use std::process::{Command, Stdio};

use serde_json::Value;

mod common;
use common::Daemon;

fn top(d: &Daemon, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg("--socket")
        .arg(d.socket())
        .arg("top")
        .args(args)
        .env_remove("TESSERA_TCP")
        .env_remove("COLUMNS")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn once_prints_the_slice_maps_the_running_jobs_and_the_queue() {
    let d = Daemon::start("2xH100-80GB");
    d.ok(&["admin", "layout", "0", "1g.10gb,1g.10gb,3g.40gb"]);
    d.ok(&["admin", "layout", "1", "4g.40gb@0,2g.20gb@4"]);
    d.ok(&["admin", "drain", "1", "--reason", "maintenance"]);
    let running = d.submit(&["--profile", "3g.40gb", "--", "sleep", "60"]);
    d.wait_state(running, "running", 30);
    let queued = d.submit(&["--gpus", "1", "--", "sleep", "60"]);
    let t0 = std::time::Instant::now();
    let reason = loop {
        let j = d.job(queued);
        if let Some(r) = j["reason"].as_str().filter(|r| !r.is_empty() && j["state"] == "queued") {
            break r.to_string();
        }
        assert!(t0.elapsed().as_secs() < 20, "job {queued} never waits with a reason: {j}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };

    let (code, out, err) = top(&d, &["--once", "--width", "120"]);
    assert_eq!(code, 0, "{err}");
    for line in out.lines() {
        assert!(line.chars().count() <= 120, "a line wider than --width:\n{out}");
    }
    let gpus: Value = serde_json::from_str(&d.ok(&["-o", "json", "gpus"])).unwrap();
    for g in gpus["gpus"].as_array().unwrap() {
        assert!(out.contains(&format!("GPU {}  H100-80GB", g["index"])), "{out}");
        for i in g["instances"].as_array().unwrap() {
            assert!(out.contains(&format!("[{}", i["profile"].as_str().unwrap())), "{i} not drawn:\n{out}");
        }
    }
    assert!(out.contains(&format!("[{running} root")), "job {running}'s holder is not on the map:\n{out}");
    assert!(out.contains("drained by root: maintenance"), "{out}");
    assert!(out.contains("jobs: 1 running, 1 queued"), "{out}");
    assert!(out.contains("Running (1)") && out.contains("Queued (1)"), "{out}");
    let row = out.lines().find(|l| l.trim_start().starts_with(&format!("{queued} "))).unwrap_or_default();
    assert!(row.contains(&reason[..20.min(reason.len())]), "job {queued}'s row {row:?} lacks {reason:?}:\n{out}");

    // Narrow: every line within 80 columns, the maps still whole.
    let (_, narrow, _) = top(&d, &["--once", "--width", "80"]);
    assert!(narrow.lines().all(|l| l.chars().count() <= 80), "{narrow}");
    assert!(narrow.contains("[1g.10gb]"), "{narrow}");

    // -n 2: two frames.
    let (code, two, err) = top(&d, &["-n", "2", "--interval", "100ms", "--width", "100"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(two.matches("tessera top · ").count(), 2, "{two}");

    d.ok(&["cancel", &running.to_string(), &queued.to_string()]);
}

#[test]
fn the_live_view_needs_a_terminal_and_a_daemon() {
    let d = Daemon::start("1xH100-80GB");
    let (code, out, err) = top(&d, &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("not a terminal") && err.contains("--once"), "{err}");
    let (code, _, err) = top(&d, &["-o", "json", "--once"]);
    assert_eq!(code, 1);
    assert!(err.contains("tessera gpus -o json"), "{err}");
    let (code, _, err) = top(&d, &["--interval", "10ms", "--once"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("at least 100ms"), "{err}");
    drop(d);
    let gone = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["--socket", "/nonexistent/tessera.sock", "top", "--once"])
        .output()
        .unwrap();
    assert_eq!(gone.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("cannot reach the daemon"), "{gone:?}");
}
