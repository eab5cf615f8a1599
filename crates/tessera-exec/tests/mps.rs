//! `NvidiaMps` against a fake `nvidia-cuda-mps-control` (a shell script that records its argv,
//! uid, gid, groups, environment and stdin), and `RecordingMps`'s JSON lines.
//!
//! Tests that switch users need root; they print why and check the refusal instead when not.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tessera_exec::{ExecError, MpsControl, NvidiaMps, RecordingMps, RunAs};
use tessera_host::{effective_gid, effective_uid};

/// Records one line per call in `$CUDA_MPS_PIPE_DIRECTORY/calls.log`. Answers like the real
/// program would to a few trigger values; `get_server_list` fails while the pipe directory
/// holds a file `dead` (as when the control daemon is gone).
const FAKE: &str = r#"#!/bin/sh
input=""
if [ "$1" != "-d" ]; then input=$(cat); fi
printf 'argv=%s|uid=%s|gid=%s|groups=%s|CVD=%s|PIPE=%s|LOG=%s|stdin=%s\n' "$*" "$(id -u)" "$(id -g)" "$(id -G)" \
  "$CUDA_VISIBLE_DEVICES" "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY" "$input" \
  >> "$CUDA_MPS_PIPE_DIRECTORY/calls.log"
case "$CUDA_VISIBLE_DEVICES" in MIG-broken*) echo "cannot start: no such device" >&2; exit 1;; esac
case "$input" in
  "set_default_active_thread_percentage 77") echo "Error: invalid percentage"; exit 0;;
  "set_default_active_thread_percentage 66") exit 3;;
  get_server_list)
    if [ -e "$CUDA_MPS_PIPE_DIRECTORY/dead" ]; then echo "Cannot find MPS control daemon process"; exit 1; fi;;
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

/// This process as a `RunAs` (no switch), and the groups `id -G` prints for it.
fn me() -> (RunAs, String) {
    let out = std::process::Command::new("id").arg("-G").output().unwrap();
    let groups = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (RunAs { uid: effective_uid(), gid: effective_gid(), groups: vec![] }, groups)
}

#[test]
fn nvidia_mps_starts_one_daemon_per_instance_and_pipes_commands() {
    let tmp = tempfile::tempdir().unwrap();
    let mps = NvidiaMps::new(fake_control(tmp.path()));
    let (user, groups) = me();
    let (pipe, log) = (tmp.path().join("a/pipe"), tmp.path().join("a/log"));
    mps.start("MIG-aaaa-1111", &pipe, &log, &user).unwrap();
    mps.set_default_active_thread_percentage(&pipe, 50).unwrap();
    mps.set_default_device_pinned_mem_limit(&pipe, "MIG-aaaa-1111", 8192).unwrap();
    // A second instance has its own daemon and environment.
    let (pipe2, log2) = (tmp.path().join("b/pipe"), tmp.path().join("b/log"));
    mps.start("MIG-bbbb-2222", &pipe2, &log2, &user).unwrap();
    mps.quit(&pipe).unwrap();

    let env = |p: &Path, l: &Path, uuid: &str| {
        format!("uid={}|gid={}|groups={groups}|CVD={uuid}|PIPE={}|LOG={}", user.uid, user.gid, p.display(), l.display())
    };
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

/// A restarted daemon asks before starting a second control daemon: running means the record
/// is there and `get_server_list` answers.
#[test]
fn nvidia_mps_is_running_asks_the_control_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let mps = NvidiaMps::new(fake_control(tmp.path()));
    let (user, _) = me();
    let (pipe, log) = (tmp.path().join("pipe"), tmp.path().join("log"));
    assert!(!mps.is_running(&pipe), "never started");
    assert!(calls(&pipe).is_empty(), "nothing is run for a pipe directory without a record");
    mps.start("MIG-run-0", &pipe, &log, &user).unwrap();
    assert!(mps.is_running(&pipe));
    assert!(calls(&pipe).last().unwrap().ends_with("|stdin=get_server_list"), "{:?}", calls(&pipe));
    // The record is there but nobody answers (the control daemon died): not running.
    fs::write(pipe.join("dead"), "").unwrap();
    assert!(!mps.is_running(&pipe));
    fs::remove_file(pipe.join("dead")).unwrap();
    mps.quit(&pipe).unwrap();
    assert!(!mps.is_running(&pipe), "quit");
}

#[test]
fn nvidia_mps_reports_failures() {
    let tmp = tempfile::tempdir().unwrap();
    let mps = NvidiaMps::new(fake_control(tmp.path()));
    let (user, _) = me();
    let (pipe, log) = (tmp.path().join("pipe"), tmp.path().join("log"));

    let err = mps.start("MIG-broken-0", &pipe, &log, &user).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("nvidia-cuda-mps-control -d") && text.contains("cannot start: no such device"), "{text}");
    assert!(text.contains(&pipe.display().to_string()), "{text}");
    assert!(!mps.is_running(&pipe), "a failed start leaves no record");

    mps.start("MIG-ok-0", &pipe, &log, &user).unwrap();
    // Exit 0 but a complaint on stdout.
    let err = mps.set_default_active_thread_percentage(&pipe, 77).unwrap_err().to_string();
    assert!(err.contains("the control daemon answered: Error: invalid percentage"), "{err}");
    // Non-zero exit.
    let err = mps.set_default_active_thread_percentage(&pipe, 66).unwrap_err().to_string();
    assert!(err.contains("exit status: 3"), "{err}");
    // Refused before anything runs.
    assert!(mps.set_default_active_thread_percentage(&pipe, 0).is_err());
    assert!(mps.set_default_device_pinned_mem_limit(&pipe, "MIG-x\nquit", 1).is_err());
    assert!(mps.start("MIG-a b", &tmp.path().join("p2"), &log, &user).is_err());
    let missing = NvidiaMps::new(tmp.path().join("absent"));
    let err = missing.start("MIG-ok-1", &tmp.path().join("p3"), &log, &user).unwrap_err().to_string();
    assert!(err.contains("absent"), "{err}");
}

#[test]
fn nvidia_mps_runs_the_daemon_as_the_instance_user() {
    let other = RunAs { uid: effective_uid() + 1, gid: effective_gid() + 1, groups: vec![] };
    if effective_uid() != 0 {
        eprintln!("skipped nvidia_mps_runs_the_daemon_as_the_instance_user: needs root (euid is {})", effective_uid());
        let tmp = tempfile::tempdir().unwrap();
        let mps = NvidiaMps::new(fake_control(tmp.path()));
        let err = mps.start("MIG-u", &tmp.path().join("p"), &tmp.path().join("l"), &other).unwrap_err();
        assert!(err.to_string().contains("not root"), "{err}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let mps = NvidiaMps::new(fake_control(tmp.path()));
    let (pipe, log) = (tmp.path().join("pipe"), tmp.path().join("log"));
    // Supplementary groups are set as given (setgroups), not inherited from root.
    let user = RunAs { uid: 65534, gid: 65534, groups: vec![65534, 100] };
    mps.start("MIG-user-0", &pipe, &log, &user).unwrap();
    mps.set_default_active_thread_percentage(&pipe, 25).unwrap();
    assert!(mps.is_running(&pipe));
    for d in [&pipe, &log] {
        let meta = fs::metadata(d).unwrap();
        assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o777), (65534, 65534, 0o700), "{}", d.display());
    }
    let lines = calls(&pipe);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[0].starts_with("argv=-d|uid=65534|gid=65534|groups=65534 100|"), "{lines:?}");
    // Commands run as the pipe directory's owner, with that user's own groups (no root's 0).
    let owner_groups: Vec<String> = tessera_host::user_by_uid(65534)
        .unwrap()
        .map_or(vec![65534], |u| u.groups)
        .iter()
        .map(u32::to_string)
        .collect();
    let prefix = format!("argv=|uid=65534|gid=65534|groups={}|", owner_groups.join(" "));
    assert!(lines[1..].iter().all(|l| l.starts_with(&prefix)), "{prefix} vs {lines:?}");
}

#[test]
fn recording_mps_writes_json_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let log_file = tmp.path().join("mps.jsonl");
    let mps = RecordingMps::new(&log_file);
    let (pipe, log) = (tmp.path().join("pipe"), tmp.path().join("log"));
    let (user, _) = me();
    let user = RunAs { groups: vec![user.gid, 4242], ..user };
    assert!(mps.quit(&pipe).is_err(), "no daemon yet");
    assert!(!mps.is_running(&pipe));
    mps.start("MIG-cccc", &pipe, &log, &user).unwrap();
    assert!(mps.is_running(&pipe));
    mps.set_default_active_thread_percentage(&pipe, 50).unwrap();
    mps.set_default_device_pinned_mem_limit(&pipe, "MIG-cccc", 4096).unwrap();
    mps.quit(&pipe).unwrap();
    assert!(!mps.is_running(&pipe), "quit");
    assert!(mps.quit(&pipe).is_err(), "already quit");

    let lines: Vec<serde_json::Value> =
        fs::read_to_string(&log_file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let env = serde_json::json!({
        "CUDA_MPS_LOG_DIRECTORY": log,
        "CUDA_MPS_PIPE_DIRECTORY": pipe,
        "CUDA_VISIBLE_DEVICES": "MIG-cccc",
    });
    let (uid, gid) = (user.uid, user.gid);
    let command = |stdin: &str| serde_json::json!({"op": "command", "stdin": stdin, "uid": uid, "gid": gid, "pipe_dir": pipe, "env": env});
    assert_eq!(
        lines,
        vec![
            serde_json::json!({"op": "start", "argv": ["-d"], "mig_uuid": "MIG-cccc", "uid": uid, "gid": gid,
                "groups": [gid, 4242], "pipe_dir": pipe, "log_dir": log, "env": env}),
            command("set_default_active_thread_percentage 50"),
            command("set_default_device_pinned_mem_limit MIG-cccc 4096M"),
            command("quit"),
        ]
    );
}

/// The stand-in keeps `NvidiaMps`'s rules about users: directories owned by the user when root,
/// commands recorded as the pipe directory's owner, another user refused when not root.
#[test]
fn recording_mps_keeps_the_user_rules() {
    let tmp = tempfile::tempdir().unwrap();
    let mps = RecordingMps::new(tmp.path().join("mps.jsonl"));
    let (pipe, log) = (tmp.path().join("pipe"), tmp.path().join("log"));
    let user = RunAs { uid: 65534, gid: 65534, groups: vec![] };
    if effective_uid() != 0 {
        eprintln!("skipped recording_mps_keeps_the_user_rules (root part): euid is {}", effective_uid());
        assert!(mps.start("MIG-dddd", &pipe, &log, &user).unwrap_err().to_string().contains("not root"));
        return;
    }
    mps.start("MIG-dddd", &pipe, &log, &user).unwrap();
    mps.set_default_active_thread_percentage(&pipe, 10).unwrap();
    assert_eq!(fs::metadata(&pipe).unwrap().uid(), 65534);
    let lines: Vec<serde_json::Value> = fs::read_to_string(tmp.path().join("mps.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!((lines[0]["uid"].as_u64(), lines[0]["groups"].clone()), (Some(65534), serde_json::json!([65534])));
    assert_eq!((lines[1]["uid"].as_u64(), lines[1]["gid"].as_u64()), (Some(65534), Some(65534)));
}

/// One control daemon over several devices (the device plugin's, one per MPS-shared resource):
/// `start` is given the UUIDs comma-separated, which become its `CUDA_VISIBLE_DEVICES` and that of
/// every later command; each device gets its own pinned-memory limit; a bad list runs nothing.
#[test]
fn one_control_daemon_serves_several_devices() {
    let tmp = tempfile::tempdir().unwrap();
    let (user, groups) = me();
    let devices = "GPU-aaaa-1111,GPU-bbbb-2222";

    let mps = NvidiaMps::new(fake_control(tmp.path()));
    let (pipe, log) = (tmp.path().join("n/pipe"), tmp.path().join("n/log"));
    mps.start(devices, &pipe, &log, &user).unwrap();
    mps.set_default_device_pinned_mem_limit(&pipe, "GPU-aaaa-1111", 20480).unwrap();
    mps.set_default_device_pinned_mem_limit(&pipe, "GPU-bbbb-2222", 10240).unwrap();
    assert!(mps.is_running(&pipe));
    let env = format!(
        "uid={}|gid={}|groups={groups}|CVD={devices}|PIPE={}|LOG={}",
        user.uid,
        user.gid,
        pipe.display(),
        log.display()
    );
    assert_eq!(
        calls(&pipe),
        vec![
            format!("argv=-d|{env}|stdin="),
            format!("argv=|{env}|stdin=set_default_device_pinned_mem_limit GPU-aaaa-1111 20480M"),
            format!("argv=|{env}|stdin=set_default_device_pinned_mem_limit GPU-bbbb-2222 10240M"),
            format!("argv=|{env}|stdin=get_server_list"),
        ]
    );

    let log_file = tmp.path().join("mps.jsonl");
    let recording = RecordingMps::new(&log_file);
    let (rpipe, rlog) = (tmp.path().join("r/pipe"), tmp.path().join("r/log"));
    recording.start(devices, &rpipe, &rlog, &user).unwrap();
    recording.set_default_active_thread_percentage(&rpipe, 25).unwrap();
    let lines: Vec<serde_json::Value> =
        fs::read_to_string(&log_file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["mig_uuid"], devices);
    for line in &lines {
        assert_eq!(line["env"]["CUDA_VISIBLE_DEVICES"], devices, "{line}");
    }

    // A list that is not one: refused before anything runs or is recorded.
    for bad in ["GPU-a,,GPU-b", "GPU-a,GPU-a", "GPU-a,GPU-b\nquit", "GPU-a GPU-b"] {
        let p = tmp.path().join("bad/pipe");
        let err = mps.start(bad, &p, &tmp.path().join("bad/log"), &user).unwrap_err();
        assert!(
            matches!(&err, ExecError::Mps { command, .. } if command == "nvidia-cuda-mps-control -d"),
            "{bad:?}: {err}"
        );
        assert!(calls(&p).is_empty() && !mps.is_running(&p), "{bad:?}");
        assert!(recording.start(bad, &p, &tmp.path().join("bad/log"), &user).is_err(), "{bad:?}");
    }
    assert_eq!(fs::read_to_string(&log_file).unwrap().lines().count(), 2);
}
