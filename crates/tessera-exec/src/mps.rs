//! MPS control: one `nvidia-cuda-mps-control -d` per shared MIG instance (the daemon's jobs) or
//! per MPS-shared Kubernetes resource (the device plugin's, over several whole GPUs), behind the
//! [`MpsControl`] trait.
//!
//! * [`NvidiaMps`] runs the real control program. `start` creates the pipe and log directories
//!   and starts the control daemon with `CUDA_VISIBLE_DEVICES=<devices>` (one MIG or GPU UUID,
//!   or several comma-separated),
//!   `CUDA_MPS_PIPE_DIRECTORY` and `CUDA_MPS_LOG_DIRECTORY`; every later command is one line
//!   piped to `nvidia-cuda-mps-control` (no `-d`) with the same three variables.
//! * [`RecordingMps`], the simulated node's stand-in, appends each command and the environment
//!   it would have run with to a JSON-lines file.
//!
//! **One user per instance.** MPS servers are per uid and one server at a time owns a device,
//! so the control daemon of an instance runs *as the [`RunAs`] given to `start`* (`setgroups`,
//! `setgid`, `setuid` before `exec` when Tessera is root; refused when it is not root and the
//! user is another), and its directories are created `0700` and owned by that user. Commands
//! run as the owner of the pipe directory, with that user's groups (refused in the same way
//! when that is another user and Tessera is not root). Like every child of the crate, the
//! control program starts with every inherited descriptor from 3 up closed at `exec`
//! (`sys::install_child_setup`): the daemon's files must not leak into a long-lived process
//! that runs as the user.
//!
//! **Adoption.** [`MpsControl::is_running`] tells a restarted daemon that an instance's control
//! daemon is already up (for [`NvidiaMps`]: the record is there and `get_server_list` answers),
//! so it adopts it instead of starting a second one.
//!
//! Both implementations keep `tessera-mps.json` (the control daemon's devices and log directory) in
//! the pipe directory, so later commands, even from a restarted daemon, use the same
//! environment; a command for a pipe directory with no such file (never started, or after
//! `quit`) fails, as it would with no control daemon behind it.
//!
//! **Checking a command.** It must exit 0 within [`COMMAND_TIMEOUT`], and its output must not
//! contain `error`, `invalid`, `cannot`, `can't`, `fail`, `unknown command` or `unrecognized`
//! (case-insensitive): the control program prints its complaints on stdout and may still exit 0.
//! UUIDs are checked to be `[A-Za-z0-9-]+` (each one of a comma-separated device list, none
//! empty, none twice), so nothing can smuggle a second command into the line.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::ExecError;
use crate::status::{read_json, write_json};
use crate::syscalls::{ChildSetup, Credentials, switch_needed};

/// The file each implementation keeps in the pipe directory.
pub const MPS_STATE_FILE: &str = "tessera-mps.json";

/// How long one invocation of the control program may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Words in the control program's output that mean the command failed.
const ERROR_WORDS: [&str; 7] = ["error", "invalid", "cannot", "can't", "fail", "unknown command", "unrecognized"];

/// Who a control daemon runs as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the user's groups from the name service); empty means just `gid`.
    pub groups: Vec<u32>,
}

impl From<&tessera_host::User> for RunAs {
    fn from(user: &tessera_host::User) -> Self {
        RunAs { uid: user.uid, gid: user.gid, groups: user.groups.clone() }
    }
}

/// Drives MPS control daemons (one per shared MIG instance, or per MPS-shared resource), each
/// named by its pipe directory.
pub trait MpsControl: Send + Sync {
    /// Starts the control daemon for `devices`, running as `user`. `devices` is its
    /// `CUDA_VISIBLE_DEVICES`: one MIG or GPU UUID, or several comma-separated
    /// (`GPU-a,GPU-b`: one control daemon serving every GPU of a resource, as NVIDIA's device
    /// plugin runs it); each must be `[A-Za-z0-9-]+`, none empty or given twice.
    fn start(&self, devices: &str, pipe_dir: &Path, log_dir: &Path, user: &RunAs) -> Result<(), ExecError>;
    /// Whether a control daemon started for `pipe_dir` is up (so a restarted daemon adopts it
    /// rather than starting another).
    fn is_running(&self, pipe_dir: &Path) -> bool;
    /// `set_default_active_thread_percentage <pct>` (1–100; applies to servers started later).
    fn set_default_active_thread_percentage(&self, pipe_dir: &Path, pct: u32) -> Result<(), ExecError>;
    /// `set_default_device_pinned_mem_limit <mig_uuid> <mib>M`.
    fn set_default_device_pinned_mem_limit(&self, pipe_dir: &Path, mig_uuid: &str, mib: u64) -> Result<(), ExecError>;
    /// `quit`: stops the control daemon (and its servers).
    fn quit(&self, pipe_dir: &Path) -> Result<(), ExecError>;
}

/// What `start` recorded in the pipe directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct MpsInstance {
    /// The control daemon's `CUDA_VISIBLE_DEVICES` (one UUID or a comma-separated list; the
    /// field keeps its first name, so records of earlier versions still read).
    mig_uuid: String,
    log_dir: PathBuf,
}

fn mps_err(command: &str, pipe_dir: &Path, detail: impl Into<String>) -> ExecError {
    ExecError::Mps { command: command.to_owned(), pipe_dir: pipe_dir.to_path_buf(), detail: detail.into() }
}

fn check_uuid(uuid: &str, command: &str, pipe_dir: &Path) -> Result<(), ExecError> {
    if uuid.is_empty() || !uuid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(mps_err(command, pipe_dir, format!("{uuid:?} is not a device UUID")));
    }
    Ok(())
}

/// Checks a `start`'s device list: one UUID, or several comma-separated, each
/// [`check_uuid`]'s, none empty or twice.
fn check_devices(devices: &str, command: &str, pipe_dir: &Path) -> Result<(), ExecError> {
    let mut seen: Vec<&str> = Vec::new();
    for uuid in devices.split(',') {
        check_uuid(uuid, command, pipe_dir).map_err(|_| {
            mps_err(command, pipe_dir, format!("{devices:?} is not a comma-separated list of device UUIDs"))
        })?;
        if seen.contains(&uuid) {
            return Err(mps_err(command, pipe_dir, format!("{uuid} is listed twice in {devices:?}")));
        }
        seen.push(uuid);
    }
    Ok(())
}

fn thread_percentage_command(pipe_dir: &Path, pct: u32) -> Result<String, ExecError> {
    let command = format!("set_default_active_thread_percentage {pct}");
    if !(1..=100).contains(&pct) {
        return Err(mps_err(&command, pipe_dir, "the percentage must be between 1 and 100"));
    }
    Ok(command)
}

fn pinned_mem_command(pipe_dir: &Path, mig_uuid: &str, mib: u64) -> Result<String, ExecError> {
    let command = format!("set_default_device_pinned_mem_limit {mig_uuid} {mib}M");
    check_uuid(mig_uuid, &command, pipe_dir)?;
    if mib == 0 {
        return Err(mps_err(&command, pipe_dir, "the limit must be at least 1 MiB"));
    }
    Ok(command)
}

fn control_env(pipe_dir: &Path, inst: &MpsInstance) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("CUDA_VISIBLE_DEVICES", inst.mig_uuid.clone()),
        ("CUDA_MPS_PIPE_DIRECTORY", pipe_dir.display().to_string()),
        ("CUDA_MPS_LOG_DIRECTORY", inst.log_dir.display().to_string()),
    ])
}

fn load_instance(pipe_dir: &Path, command: &str) -> Result<MpsInstance, ExecError> {
    read_json::<MpsInstance>(&pipe_dir.join(MPS_STATE_FILE), "MPS instance record")?.ok_or_else(|| {
        mps_err(
            command,
            pipe_dir,
            format!("no control daemon was started for this pipe directory (no {MPS_STATE_FILE})"),
        )
    })
}

/// Creates the pipe and log directories `0700`, owned by `owner` when given.
fn prepare_dirs(pipe_dir: &Path, log_dir: &Path, owner: Option<(u32, u32)>) -> Result<(), ExecError> {
    for dir in [pipe_dir, log_dir] {
        fs::create_dir_all(dir).map_err(|e| ExecError::io("creating", dir, e))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| ExecError::io("chmod", dir, e))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(|e| ExecError::io("chown", dir, e))?;
        }
    }
    Ok(())
}

/// How errors name a control daemon's start.
const START_COMMAND: &str = "nvidia-cuda-mps-control -d";

/// What every start does first: check the devices, decide whom the control daemon runs as, make
/// its pipe and log directories theirs, and record which devices the pipe directory serves.
fn prepare_start(
    devices: &str,
    pipe_dir: &Path,
    log_dir: &Path,
    user: &RunAs,
) -> Result<(Option<Credentials>, MpsInstance), ExecError> {
    check_devices(devices, START_COMMAND, pipe_dir)?;
    let as_user = switch_for(user, START_COMMAND, pipe_dir)?;
    prepare_dirs(pipe_dir, log_dir, as_user.as_ref().map(|c| (c.uid, c.gid)))?;
    let inst = MpsInstance { mig_uuid: devices.to_owned(), log_dir: log_dir.to_path_buf() };
    write_json(&pipe_dir.join(MPS_STATE_FILE), "MPS instance record", &inst)?;
    Ok((as_user, inst))
}

/// The identity to switch to for running as `user` ([`switch_needed`]): `None` when this
/// process already is that uid and gid; refused when it is not and this process is not root.
fn switch_for(user: &RunAs, command: &str, pipe_dir: &Path) -> Result<Option<Credentials>, ExecError> {
    switch_needed(user.uid, user.gid, &user.groups).map_err(|e| mps_err(command, pipe_dir, e.to_string()))
}

/// Who commands for `pipe_dir` run as: its owner, with the owner's groups from the name
/// service (none listed, so just the directory's group, for a uid it does not know).
fn pipe_dir_owner(pipe_dir: &Path, command: &str) -> Result<RunAs, ExecError> {
    let meta = fs::metadata(pipe_dir).map_err(|e| ExecError::io("reading", pipe_dir, e))?;
    let (uid, gid) = (meta.uid(), meta.gid());
    let groups = match tessera_host::user_by_uid(uid) {
        Ok(Some(user)) => user.groups,
        Ok(None) => Vec::new(),
        Err(e) => return Err(mps_err(command, pipe_dir, e.to_string())),
    };
    Ok(RunAs { uid, gid, groups })
}

/// Runs the control program, feeding `input` on stdin, and returns its status and combined
/// output. Output readers are abandoned a second after the program exits, since `-d` leaves a
/// daemon that may hold the pipes.
fn run_control(cmd: &mut Command, input: Option<&str>, timeout: Duration) -> io::Result<(ExitStatus, String)> {
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        // A program that exits without reading gives EPIPE; its status tells the story.
        let _ = stdin.write_all(text.as_bytes());
    }
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let mut readers = 0;
    let streams: [Option<Box<dyn Read + Send>>; 2] = [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
        child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
    ];
    for mut stream in streams.into_iter().flatten() {
        let tx = tx.clone();
        let spawned = thread::Builder::new().name("tessera-mps-out".into()).stack_size(64 * 1024).spawn(move || {
            let mut buf = Vec::new();
            let _ = stream.read_to_end(&mut buf);
            let _ = tx.send(buf);
        });
        if spawned.is_ok() {
            readers += 1;
        }
    }
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(io::ErrorKind::TimedOut, format!("no answer within {} s", timeout.as_secs())));
        }
        thread::sleep(Duration::from_millis(5));
    };
    let mut output = String::new();
    for _ in 0..readers {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(buf) => output.push_str(&String::from_utf8_lossy(&buf)),
            Err(_) => break,
        }
    }
    Ok((status, output.trim().to_owned()))
}

fn looks_like_error(output: &str) -> bool {
    let lower = output.to_lowercase();
    ERROR_WORDS.iter().any(|w| lower.contains(w))
}

/// The real control program.
#[derive(Debug, Clone)]
pub struct NvidiaMps {
    /// Path of `nvidia-cuda-mps-control`.
    pub control_binary: PathBuf,
}

impl NvidiaMps {
    pub fn new(control_binary: impl Into<PathBuf>) -> Self {
        NvidiaMps { control_binary: control_binary.into() }
    }

    fn command(&self, env: &BTreeMap<&'static str, String>, as_user: Option<Credentials>) -> Command {
        let mut cmd = Command::new(&self.control_binary);
        cmd.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        cmd.envs(env.iter().map(|(k, v)| (*k, v))).current_dir("/");
        // Always: the descriptor hygiene matters even when no switch is needed.
        crate::sys::install_child_setup(&mut cmd, ChildSetup::Helper { new_session: false, creds: as_user });
        cmd
    }

    fn send(&self, pipe_dir: &Path, line: &str) -> Result<String, ExecError> {
        let inst = load_instance(pipe_dir, line)?;
        let owner = pipe_dir_owner(pipe_dir, line)?;
        let as_user = switch_for(&owner, line, pipe_dir)?;
        let mut cmd = self.command(&control_env(pipe_dir, &inst), as_user);
        let (status, output) = run_control(&mut cmd, Some(&format!("{line}\n")), COMMAND_TIMEOUT)
            .map_err(|e| mps_err(line, pipe_dir, format!("{}: {e}", self.control_binary.display())))?;
        if !status.success() {
            return Err(mps_err(line, pipe_dir, format!("{} ({status}): {output}", self.control_binary.display())));
        }
        if looks_like_error(&output) {
            return Err(mps_err(line, pipe_dir, format!("the control daemon answered: {output}")));
        }
        Ok(output)
    }
}

impl MpsControl for NvidiaMps {
    fn start(&self, devices: &str, pipe_dir: &Path, log_dir: &Path, user: &RunAs) -> Result<(), ExecError> {
        let (as_user, inst) = prepare_start(devices, pipe_dir, log_dir, user)?;
        let mut cmd = self.command(&control_env(pipe_dir, &inst), as_user);
        cmd.arg("-d");
        let (status, output) = run_control(&mut cmd, None, COMMAND_TIMEOUT)
            .map_err(|e| mps_err(START_COMMAND, pipe_dir, format!("{}: {e}", self.control_binary.display())))?;
        if !status.success() {
            let _ = fs::remove_file(pipe_dir.join(MPS_STATE_FILE));
            return Err(mps_err(
                START_COMMAND,
                pipe_dir,
                format!("{} ({status}): {output}", self.control_binary.display()),
            ));
        }
        Ok(())
    }

    fn is_running(&self, pipe_dir: &Path) -> bool {
        pipe_dir.join(MPS_STATE_FILE).exists() && self.send(pipe_dir, "get_server_list").is_ok()
    }

    fn set_default_active_thread_percentage(&self, pipe_dir: &Path, pct: u32) -> Result<(), ExecError> {
        self.send(pipe_dir, &thread_percentage_command(pipe_dir, pct)?).map(drop)
    }

    fn set_default_device_pinned_mem_limit(&self, pipe_dir: &Path, mig_uuid: &str, mib: u64) -> Result<(), ExecError> {
        self.send(pipe_dir, &pinned_mem_command(pipe_dir, mig_uuid, mib)?).map(drop)
    }

    fn quit(&self, pipe_dir: &Path) -> Result<(), ExecError> {
        self.send(pipe_dir, "quit")?;
        let state = pipe_dir.join(MPS_STATE_FILE);
        fs::remove_file(&state).map_err(|e| ExecError::io("removing", state, e))
    }
}

/// The simulated node's stand-in: records every command, with the identity and environment
/// [`NvidiaMps`] would give it, as one JSON object per line of `log`:
///
/// ```text
/// {"op":"start","argv":["-d"],"mig_uuid":"MIG-…","uid":1000,"gid":1000,"groups":[1000],"pipe_dir":"…","log_dir":"…","env":{…}}
/// {"op":"command","stdin":"set_default_active_thread_percentage 50","uid":1000,"gid":1000,"pipe_dir":"…","env":{…}}
/// ```
///
/// (`mig_uuid` is the device list `start` was given, one UUID or several comma-separated.)
/// It creates the directories (owned by the user, when root) and the instance record like
/// `NvidiaMps`, and refuses another user when not root, so commands out of order or for the
/// wrong user fail the same way; it runs nothing. It is running ([`MpsControl::is_running`])
/// from `start` to `quit`.
#[derive(Debug, Clone)]
pub struct RecordingMps {
    pub log: PathBuf,
}

impl RecordingMps {
    pub fn new(log: impl Into<PathBuf>) -> Self {
        RecordingMps { log: log.into() }
    }

    fn append(&self, value: &serde_json::Value) -> Result<(), ExecError> {
        let mut line = value.to_string();
        line.push('\n');
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| ExecError::io("opening", &self.log, e))?;
        file.write_all(line.as_bytes()).map_err(|e| ExecError::io("appending to", &self.log, e))
    }

    fn send(&self, pipe_dir: &Path, line: &str) -> Result<(), ExecError> {
        let inst = load_instance(pipe_dir, line)?;
        let owner = pipe_dir_owner(pipe_dir, line)?;
        switch_for(&owner, line, pipe_dir)?;
        self.append(&serde_json::json!({
            "op": "command",
            "stdin": line,
            "uid": owner.uid,
            "gid": owner.gid,
            "pipe_dir": pipe_dir,
            "env": control_env(pipe_dir, &inst),
        }))
    }
}

impl MpsControl for RecordingMps {
    fn start(&self, devices: &str, pipe_dir: &Path, log_dir: &Path, user: &RunAs) -> Result<(), ExecError> {
        let (_, inst) = prepare_start(devices, pipe_dir, log_dir, user)?;
        self.append(&serde_json::json!({
            "op": "start",
            "argv": ["-d"],
            "mig_uuid": devices,
            "uid": user.uid,
            "gid": user.gid,
            "groups": Credentials::for_user(user.uid, user.gid, &user.groups).groups,
            "pipe_dir": pipe_dir,
            "log_dir": log_dir,
            "env": control_env(pipe_dir, &inst),
        }))
    }

    fn is_running(&self, pipe_dir: &Path) -> bool {
        pipe_dir.join(MPS_STATE_FILE).exists()
    }

    fn set_default_active_thread_percentage(&self, pipe_dir: &Path, pct: u32) -> Result<(), ExecError> {
        self.send(pipe_dir, &thread_percentage_command(pipe_dir, pct)?)
    }

    fn set_default_device_pinned_mem_limit(&self, pipe_dir: &Path, mig_uuid: &str, mib: u64) -> Result<(), ExecError> {
        self.send(pipe_dir, &pinned_mem_command(pipe_dir, mig_uuid, mib)?)
    }

    fn quit(&self, pipe_dir: &Path) -> Result<(), ExecError> {
        self.send(pipe_dir, "quit")?;
        let state = pipe_dir.join(MPS_STATE_FILE);
        fs::remove_file(&state).map_err(|e| ExecError::io("removing", state, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_validated() {
        let p = Path::new("/p");
        assert_eq!(thread_percentage_command(p, 50).unwrap(), "set_default_active_thread_percentage 50");
        assert!(thread_percentage_command(p, 0).is_err());
        assert!(thread_percentage_command(p, 101).is_err());
        assert_eq!(
            pinned_mem_command(p, "MIG-1234-ab", 8192).unwrap(),
            "set_default_device_pinned_mem_limit MIG-1234-ab 8192M"
        );
        assert!(pinned_mem_command(p, "MIG-x\nquit", 1).is_err());
        assert!(pinned_mem_command(p, "MIG-x y", 1).is_err());
        assert!(pinned_mem_command(p, "MIG-x", 0).is_err());
    }

    /// The control daemon is long-lived and runs as the user: a descriptor the daemon left
    /// without `FD_CLOEXEC` must not reach it (nor its commands), switch or no switch.
    #[test]
    fn the_control_program_inherits_no_descriptors() {
        use std::os::fd::{AsFd, AsRawFd};
        let tmp = tempfile::tempdir().unwrap();
        let control = tmp.path().join("control");
        fs::write(&control, "#!/bin/sh\nls /proc/self/fd >> \"$CUDA_MPS_PIPE_DIRECTORY/fds\"\necho --- >> \"$CUDA_MPS_PIPE_DIRECTORY/fds\"\n")
            .unwrap();
        fs::set_permissions(&control, fs::Permissions::from_mode(0o755)).unwrap();
        let file = fs::File::open(tmp.path()).unwrap();
        let leaky = crate::sys::dup_inheritable(file.as_fd(), 700).unwrap();
        let number = leaky.as_raw_fd().to_string();
        let mps = NvidiaMps::new(&control);
        let me = RunAs { uid: tessera_host::effective_uid(), gid: tessera_host::effective_gid(), groups: vec![] };
        let pipe = tmp.path().join("pipe");
        mps.start("MIG-fds-0", &pipe, &tmp.path().join("log"), &me).unwrap();
        mps.set_default_active_thread_percentage(&pipe, 10).unwrap();
        drop(leaky);
        let seen = fs::read_to_string(pipe.join("fds")).unwrap();
        assert_eq!(seen.matches("---").count(), 2, "{seen}");
        assert!(!seen.lines().any(|l| l == number), "fd {number} leaked into the control program: {seen}");
    }

    /// `start`'s device list: one UUID or several comma-separated, each checked, none empty or
    /// twice (a second command cannot ride in on it).
    #[test]
    fn device_lists_are_validated() {
        let p = Path::new("/p");
        let cases: [(&str, Option<&str>); 12] = [
            ("MIG-1234-ab", None),
            ("GPU-aaaa", None),
            ("GPU-aaaa,GPU-bbbb", None),
            ("GPU-a,GPU-b,GPU-c,GPU-d", None),
            ("", Some("not a comma-separated list")),
            ("GPU-a,", Some("not a comma-separated list")),
            (",GPU-a", Some("not a comma-separated list")),
            ("GPU-a,,GPU-b", Some("not a comma-separated list")),
            ("GPU-a, GPU-b", Some("not a comma-separated list")),
            ("GPU-a,GPU-b\nquit", Some("not a comma-separated list")),
            ("GPU-a;GPU-b", Some("not a comma-separated list")),
            ("GPU-a,GPU-b,GPU-a", Some("GPU-a is listed twice")),
        ];
        for (devices, want) in cases {
            let got = check_devices(devices, START_COMMAND, p);
            match (want, got) {
                (None, Ok(())) => {}
                (Some(text), Err(e)) => assert!(e.to_string().contains(text), "{devices:?}: {e}"),
                (want, got) => panic!("{devices:?}: wanted {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn error_words() {
        assert!(looks_like_error("Cannot find MPS control daemon process"));
        assert!(looks_like_error("ERROR: invalid value"));
        assert!(!looks_like_error(""));
        assert!(!looks_like_error("50"));
    }
}
