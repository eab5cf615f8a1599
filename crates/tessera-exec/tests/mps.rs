//! `NvidiaMps` against a fake `nvidia-cuda-mps-control` (a shell script that records its argv,
//! uid, environment and stdin), and `RecordingMps`'s JSON lines.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tessera_exec::{ExecError, MpsControl, NvidiaMps, RecordingMps};
use tessera_host::effective_uid;

/// Records one line per call in `$CUDA_MPS_PIPE_DIRECTORY/calls.log`. Answers like the real
/// program would to a few trigger values.
const FAKE: &str = r#"#!/bin/sh
input=""
if [ "$1" != "-d" ]; then input=$(cat); fi
printf 'argv=%s|uid=%s|CVD=%s|PIPE=%s|LOG=%s|stdin=%s\n' "$*" "$(id -u)" "$CUDA_VISIBLE_DEVICES" \
  "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY" "$input" >> "$CUDA_MPS_PIPE_DIRECTORY/calls.log"
case "$CUDA_VISIBLE_DEVICES" in MIG-broken*) echo "cannot start: no such device" >&2; exit 1;; esac
case "$input" in
  "set_default_active_thread_percentage 77") echo "Error: invalid percentage"; exit 0;;
  "set_default_active_thread_percentage 66") exit 3;;
esac
exit 0
"#;

fn fake_control(dir: &Path) -> PathBuf {
    let path = dir.join("nvidia-cuda-mps-control");
    fs::write(&path, FAKE).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn calls(pipe: &Path) -> Vec<String> {
    fs::read_to_string(pipe.join("calls.log")).unwrap_or_default().lines().map(str::to_owned).collect()
}

#[test]
fn nvidia_mps_starts_one_daemon_per_instance_and_pipes_commands() {
    let tmp = tempfile::tempdir().unwrap();
    let mps = NvidiaMps::new(fake_control(tmp.path()));
    let uid = effective_uid();
    let (pipe, log) = (tmp.path().join("a/pipe"), tmp.path().join("a/log"));
    mps.start("MIG-aaaa-1111", &pipe, &log, uid).unwrap();
    mps.set_default_active_thread_percentage(&pipe, 50).unwrap();
    mps.set_default_device_pinned_mem_limit(&pipe, "MIG-aaaa-1111", 8192).unwrap();
    // A second instance has its own daemon and environment.
    let (pipe2, log2) = (tmp.path().join("b/pipe"), tmp.path().join("b/log"));
    mps.start("MIG-bbbb-2222", &pipe2, &log2, uid).unwrap();
    mps.quit(&pipe).unwrap();

    let env = |p: &Path, l: &Path, uuid: &str| format!("uid={uid}|CVD={uuid}|PIPE={}|LOG={}", p.display(), l.display());
    let a = env(&pipe, &log, "MIG-aaaa-1111");
    assert_eq!(
        calls(&pipe),
        vec![
            format!("argv=-d|{a}|stdin="),
            format!("argv=|{a}|stdin=set_default_active_thread_percentage 50"),
            format!("argv=|{a}|stdin=set_default_device_pinned_mem_limit MIG-aaaa-1111 8192M"),
            format!("argv=|{a}|stdin=quit"),
        ]
    );
    assert_eq!(calls(&pipe2), vec![format!("argv=-d|{}|stdin=", env(&pipe2, &log2, "MIG-bbbb-2222"))]);
    for d in [&pipe, &log] {
        assert_eq!(fs::metadata(d).unwrap().mode() & 0o777, 0o700);
    }

    // After quit there is no daemon: commands fail without running anything.
    let err = mps.set_default_active_thread_percentage(&pipe, 10).unwrap_err();
    assert!(matches!(&err, ExecError::Mps { detail, .. } if detail.contains("no control daemon")), "{err}");
    assert_eq!(calls(&pipe).len(), 4);
}

#[test]
fn nvidia_mps_reports_failures() {
    let tmp = tempfile::tempdir().unwrap();
    let mps = NvidiaMps::new(fake_control(tmp.path()));
    let uid = effective_uid();
    let (pipe, log) = (tmp.path().join("pipe"), tmp.path().join("log"));

    let err = mps.start("MIG-broken-0", &pipe, &log, uid).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("nvidia-cuda-mps-control -d") && text.contains("cannot start: no such device"), "{text}");
    assert!(text.contains(&pipe.display().to_string()), "{text}");

    mps.start("MIG-ok-0", &pipe, &log, uid).unwrap();
    // Exit 0 but a complaint on stdout.
    let err = mps.set_default_active_thread_percentage(&pipe, 77).unwrap_err().to_string();
    assert!(err.contains("the control daemon answered: Error: invalid percentage"), "{err}");
    // Non-zero exit.
    let err = mps.set_default_active_thread_percentage(&pipe, 66).unwrap_err().to_string();
    assert!(err.contains("exit status: 3"), "{err}");
    // Refused before anything runs.
    assert!(mps.set_default_active_thread_percentage(&pipe, 0).is_err());
    assert!(mps.set_default_device_pinned_mem_limit(&pipe, "MIG-x\nquit", 1).is_err());
    assert!(mps.start("MIG-a b", &tmp.path().join("p2"), &log, uid).is_err());
    let missing = NvidiaMps::new(tmp.path().join("absent"));
    let err = missing.start("MIG-ok-1", &tmp.path().join("p3"), &log, uid).unwrap_err().to_string();
    assert!(err.contains("absent"), "{err}");
}

#[test]
fn nvidia_mps_runs_the_daemon_as_the_instance_user() {
    if effective_uid() != 0 {
        eprintln!("skipped nvidia_mps_runs_the_daemon_as_the_instance_user: needs root (euid is {})", effective_uid());
        let tmp = tempfile::tempdir().unwrap();
        let mps = NvidiaMps::new(fake_control(tmp.path()));
        let err = mps.start("MIG-u", &tmp.path().join("p"), &tmp.path().join("l"), effective_uid() + 1).unwrap_err();
        assert!(err.to_string().contains("not root"), "{err}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let mps = NvidiaMps::new(fake_control(tmp.path()));
    let (pipe, log) = (tmp.path().join("pipe"), tmp.path().join("log"));
    mps.start("MIG-user-0", &pipe, &log, 65534).unwrap();
    mps.set_default_active_thread_percentage(&pipe, 25).unwrap();
    for d in [&pipe, &log] {
        assert_eq!(fs::metadata(d).unwrap().uid(), 65534);
    }
    let lines = calls(&pipe);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines.iter().all(|l| l.contains("|uid=65534|")), "{lines:?}");
}

#[test]
fn recording_mps_writes_json_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let log_file = tmp.path().join("mps.jsonl");
    let mps = RecordingMps::new(&log_file);
    let (pipe, log) = (tmp.path().join("pipe"), tmp.path().join("log"));
    assert!(mps.quit(&pipe).is_err(), "no daemon yet");
    mps.start("MIG-cccc", &pipe, &log, 1000).unwrap();
    mps.set_default_active_thread_percentage(&pipe, 50).unwrap();
    mps.set_default_device_pinned_mem_limit(&pipe, "MIG-cccc", 4096).unwrap();
    mps.quit(&pipe).unwrap();
    assert!(mps.quit(&pipe).is_err(), "already quit");

    let lines: Vec<serde_json::Value> =
        fs::read_to_string(&log_file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let env = serde_json::json!({
        "CUDA_MPS_LOG_DIRECTORY": log,
        "CUDA_MPS_PIPE_DIRECTORY": pipe,
        "CUDA_VISIBLE_DEVICES": "MIG-cccc",
    });
    assert_eq!(
        lines,
        vec![
            serde_json::json!({"op": "start", "argv": ["-d"], "mig_uuid": "MIG-cccc", "uid": 1000,
                "pipe_dir": pipe, "log_dir": log, "env": env}),
            serde_json::json!({"op": "command", "stdin": "set_default_active_thread_percentage 50",
                "pipe_dir": pipe, "env": env}),
            serde_json::json!({"op": "command", "stdin": "set_default_device_pinned_mem_limit MIG-cccc 4096M",
                "pipe_dir": pipe, "env": env}),
            serde_json::json!({"op": "command", "stdin": "quit", "pipe_dir": pipe, "env": env}),
        ]
    );
}
