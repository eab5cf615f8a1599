//! The daemon's side of a job: [`launch`] a shim, [`inspect`] a job directory (also after a
//! daemon restart), [`cancel`], [`tail_log`], and [`kill_orphans`] for a lost job.
//!
//! **No zombie, no double fork.** The shim is spawned directly (as the leader of a new session,
//! so it outlives the daemon and gets none of its terminal's signals) and a small named thread
//! (`tessera-reap-<job>`, 64 KiB stack) waits for it. While the daemon lives, that thread reaps
//! the shim the moment it exits; if the daemon dies first, the shim is re-parented to init (or
//! the nearest subreaper), which reaps it. A double fork would avoid the thread but cannot be
//! done safely with `std::process::Command` from a multi-threaded daemon, and would hide the
//! shim's pid from the launcher. The cost is one sleeping thread per job the daemon launched.
//!
//! [`Launcher`] does the same with a standby shim started ahead of time (the daemon's way: a
//! launch is then a pipe write, not a fork and exec).
//!
//! `launch` returns once the shim has written `shim.pid` (by then its signal handlers are in
//! place, so an immediate [`cancel`] is recorded as `cancelled`), or fails if the shim exits
//! before that.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::error::ExecError;
use crate::procfs;
use crate::spec::JobSpec;
use crate::status::{
    LogStream, Outcome, PID_FILE, RANKS_FILE, RankTable, SHIM_LOG, SPEC_FILE, STATUS_FILE, ShimState, log_path,
    open_log, read_json, read_pid_file, write_json_unsynced,
};
use crate::sys::{self, LinuxSyscalls};
use crate::syscalls::Syscalls;

/// How long [`launch`] waits for the shim to write `shim.pid` before returning anyway.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The most [`tail_log`] returns in one call.
pub const TAIL_CHUNK: u64 = 1 << 20;

/// Creates `job_dir`, writes `spec.json`, and starts `shim_exe shim_args… --job-dir <job_dir>`
/// (the directory made absolute) in a new session with stdin `/dev/null` and stdout/stderr
/// appended to `shim.log`. Returns the shim's pid.
///
/// Refuses a directory that already holds `spec.json`, `shim.pid` or `status.json`, and a spec
/// asking for another user when this process is not root.
pub fn launch(shim_exe: &Path, shim_args: &[&str], job_dir: &Path, spec: &JobSpec) -> Result<u32, ExecError> {
    let dir = prepare(job_dir, spec)?;
    spawn_direct(shim_exe, shim_args, &dir, spec)
}

/// Checks, creates the job directory and writes `spec.json`; returns the directory, absolute.
fn prepare(job_dir: &Path, spec: &JobSpec) -> Result<PathBuf, ExecError> {
    spec.validate()?;
    let euid = tessera_host::effective_uid();
    if euid != 0 && (spec.uid != euid || spec.gid != tessera_host::effective_gid()) {
        return Err(ExecError::CannotSwitchUser { job_id: spec.job_id, uid: spec.uid, euid });
    }
    fs::create_dir_all(job_dir).map_err(|e| ExecError::io("creating", job_dir, e))?;
    let dir = fs::canonicalize(job_dir).map_err(|e| ExecError::io("resolving", job_dir, e))?;
    for name in [SPEC_FILE, PID_FILE, STATUS_FILE] {
        if dir.join(name).exists() {
            return Err(ExecError::AlreadyLaunched { job_id: spec.job_id, path: dir });
        }
    }
    write_json_unsynced(&dir.join(SPEC_FILE), "job spec", spec)?;
    Ok(dir)
}

/// A shim process this launcher started, with a thread reaping it.
struct Started {
    pid: u32,
    exited: mpsc::Receiver<String>,
}

fn spawn_reaped(cmd: &mut Command, name: String) -> io::Result<(Started, Option<std::process::ChildStdin>)> {
    let mut child = sys::spawn_session_leader(cmd)?;
    let pid = child.id();
    let stdin = child.stdin.take();
    let (tx, rx) = mpsc::channel::<String>();
    let reaper = thread::Builder::new().name(name).stack_size(64 * 1024).spawn(move || {
        let status = match child.wait() {
            Ok(status) => status.to_string(),
            Err(e) => format!("wait failed: {e}"),
        };
        let _ = tx.send(status);
    });
    if let Err(e) = reaper {
        // The child handle went with the closure; the shim runs on and init reaps it once this
        // process exits. Nothing else to do but say so.
        eprintln!("tessera-exec: no reaper thread for shim pid {pid}: {e}");
    }
    Ok((Started { pid, exited: rx }, stdin))
}

fn spawn_direct(shim_exe: &Path, shim_args: &[&str], dir: &Path, spec: &JobSpec) -> Result<u32, ExecError> {
    let log_path = dir.join(SHIM_LOG);
    let log = open_log(&log_path, None).map_err(|e| ExecError::io("opening", &log_path, e))?;
    let log2 = log.try_clone().map_err(|e| ExecError::io("duplicating", &log_path, e))?;
    let mut cmd = Command::new(shim_exe);
    cmd.args(shim_args).arg("--job-dir").arg(dir).current_dir("/").stdin(Stdio::null()).stdout(log).stderr(log2);
    let spawn_err =
        |source: io::Error| ExecError::Spawn { job_id: spec.job_id, program: shim_exe.display().to_string(), source };
    let (started, _) = spawn_reaped(&mut cmd, format!("tessera-reap-{}", spec.job_id)).map_err(spawn_err)?;
    wait_ready(dir, spec.job_id, &started)
}

/// Waits until the shim has written `shim.pid` (its signal handlers are in place by then).
fn wait_ready(dir: &Path, job_id: u64, started: &Started) -> Result<u32, ExecError> {
    let pid = started.pid;
    let log_path = dir.join(SHIM_LOG);
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if read_pid_file(dir).ok().flatten() == Some(pid) {
            return Ok(pid);
        }
        if let Ok(status) = started.exited.try_recv() {
            if read_pid_file(dir).ok().flatten() == Some(pid) {
                return Ok(pid);
            }
            let log_tail = fs::read_to_string(&log_path)
                .map(|t| t.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join(" | "))
                .unwrap_or_default();
            return Err(ExecError::ShimExited { job_id, pid, status, log_tail });
        }
        if Instant::now() >= deadline {
            // Alive but slow (a loaded machine): it is running, so report it as launched.
            return Ok(pid);
        }
        thread::sleep(Duration::from_micros(200));
    }
}

/// A standby shim, already started, waiting on its stdin for a job directory.
struct Spare {
    started: Started,
    stdin: std::process::ChildStdin,
}

/// Starts shims for the daemon, keeping one standby shim ready (`shim_args… --standby`, in its
/// own session, stdin a pipe) so that a launch is a pipe write rather than a fork and exec of
/// the shim binary; the standby is replaced in the background after each use. Without a
/// standby (it died, or none could be started) it launches as [`launch`] does. A standby
/// outlives nothing: when the daemon goes, its pipe closes and it exits.
pub struct Launcher {
    shim_exe: PathBuf,
    shim_args: Vec<String>,
    standby: bool,
    spare: std::sync::Arc<std::sync::Mutex<Option<Spare>>>,
}

impl std::fmt::Debug for Launcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launcher").field("shim_exe", &self.shim_exe).field("standby", &self.standby).finish()
    }
}

impl Launcher {
    /// A launcher for `shim_exe shim_args… --job-dir DIR`; with `standby`, one standby shim
    /// is started at once (in the background).
    pub fn new(shim_exe: PathBuf, shim_args: Vec<String>, standby: bool) -> Launcher {
        let l = Launcher { shim_exe, shim_args, standby, spare: Default::default() };
        l.refill();
        l
    }

    fn refill(&self) {
        if !self.standby {
            return;
        }
        let (exe, args, slot) = (self.shim_exe.clone(), self.shim_args.clone(), self.spare.clone());
        let _ = thread::Builder::new().name("tessera-standby".into()).spawn(move || {
            let mut cmd = Command::new(&exe);
            cmd.args(&args).arg("--standby").current_dir("/").stdin(Stdio::piped()).stdout(Stdio::null());
            cmd.stderr(Stdio::null());
            if let Ok((started, Some(stdin))) = spawn_reaped(&mut cmd, "tessera-reap-standby".into())
                && let Ok(mut spare) = slot.lock()
            {
                *spare = Some(Spare { started, stdin });
            }
        });
    }

    /// As [`launch`]: creates `job_dir`, writes `spec.json`, starts the job's shim and returns
    /// its pid once it has written `shim.pid`.
    pub fn launch(&self, job_dir: &Path, spec: &JobSpec) -> Result<u32, ExecError> {
        let dir = prepare(job_dir, spec)?;
        let spare = self.spare.lock().ok().and_then(|mut s| s.take());
        if let Some(mut spare) = spare {
            self.refill();
            use std::io::Write as _;
            let alive = spare.started.exited.try_recv().is_err();
            let line = format!("{}\n", dir.display());
            if alive && !line.trim_end().contains('\n') && spare.stdin.write_all(line.as_bytes()).is_ok() {
                drop(spare.stdin);
                return wait_ready(&dir, spec.job_id, &spare.started);
            }
        }
        let args: Vec<&str> = self.shim_args.iter().map(String::as_str).collect();
        spawn_direct(&self.shim_exe, &args, &dir, spec)
    }
}

fn canonical_job_dir(job_dir: &Path, job_id: u64) -> Result<PathBuf, ExecError> {
    match fs::canonicalize(job_dir) {
        Ok(dir) => Ok(dir),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(ExecError::NotAJobDir { job_id, path: job_dir.to_path_buf() })
        }
        Err(e) => Err(ExecError::io("resolving", job_dir, e)),
    }
}

fn load_spec(dir: &Path, job_id: u64) -> Result<JobSpec, ExecError> {
    let spec: JobSpec = read_json(&dir.join(SPEC_FILE), "job spec")?
        .ok_or_else(|| ExecError::NotAJobDir { job_id, path: dir.to_path_buf() })?;
    if spec.job_id != job_id {
        return Err(ExecError::WrongJob { job_id, found: spec.job_id, path: dir.to_path_buf() });
    }
    Ok(spec)
}

/// What the job directory says about job `job_id`:
///
/// * `status.json` present → [`ShimState::Finished`];
/// * else `shim.pid` names a live process whose `/proc/<pid>/cmdline` has the job directory as
///   an argument → [`ShimState::Running`] (a reused pid fails the second test);
/// * else [`ShimState::Lost`], with the processes still alive in the ranks' sessions (from
///   `ranks.json`, each rank checked by start time against pid reuse).
pub fn inspect(job_dir: &Path, job_id: u64) -> Result<ShimState, ExecError> {
    let dir = canonical_job_dir(job_dir, job_id)?;
    load_spec(&dir, job_id)?;
    if let Some(outcome) = read_json::<Outcome>(&dir.join(STATUS_FILE), "job outcome")? {
        return Ok(ShimState::Finished(outcome));
    }
    let pid = read_pid_file(&dir)?;
    // A zombie (a shim that died and is not reaped yet) is gone, not "another process".
    let alive = pid.is_some_and(|p| LinuxSyscalls.pid_alive(p) && procfs::stat(p).is_some_and(|s| s.state != 'Z'));
    if let Some(p) = pid.filter(|&p| alive && procfs::is_shim_of(p, &dir)) {
        return Ok(ShimState::Running { shim_pid: p });
    }
    // The shim may have written its status and exited while we looked.
    if let Some(outcome) = read_json::<Outcome>(&dir.join(STATUS_FILE), "job outcome")? {
        return Ok(ShimState::Finished(outcome));
    }
    let survivors = survivors(&dir)?;
    let mut detail = match pid {
        None => "the shim never wrote shim.pid, and there is no status.json".to_owned(),
        Some(p) if alive => format!("pid {p} from shim.pid is another process now (pid reused); no status.json"),
        Some(p) => format!("the shim (pid {p}) is gone and left no status.json"),
    };
    if !survivors.is_empty() {
        let list = survivors.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
        detail.push_str(&format!("; processes of the job still running: {list}"));
    }
    Ok(ShimState::Lost { detail, survivors })
}

/// Live processes in the sessions of the job's ranks.
fn survivors(dir: &Path) -> Result<Vec<u32>, ExecError> {
    let Some(table) = read_json::<RankTable>(&dir.join(RANKS_FILE), "rank table")? else { return Ok(Vec::new()) };
    let mut pids = Vec::new();
    for rank in &table.ranks {
        // A process now holding the rank's pid with another start time means the rank's
        // session is entirely gone (the kernel does not reuse a session id while it is in use).
        if procfs::stat(rank.pid).is_some_and(|s| s.start_time != rank.start_time) {
            continue;
        }
        pids.extend(procfs::session_members(rank.pid));
    }
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

/// Cancels the job: `SIGTERM` to its shim, which stops the ranks and records `cancelled`.
/// A job that has already finished is left alone (`Ok`); a job with no live shim and no status
/// is [`ExecError::NotRunning`].
pub fn cancel(job_dir: &Path) -> Result<(), ExecError> {
    let dir = fs::canonicalize(job_dir).map_err(|e| ExecError::io("resolving", job_dir, e))?;
    let pid = read_pid_file(&dir)?;
    if let Some(pid) = pid.filter(|&p| LinuxSyscalls.pid_alive(p) && procfs::is_shim_of(p, &dir)) {
        return LinuxSyscalls.kill(pid, libc::SIGTERM).map_err(|errno| ExecError::Syscall {
            syscall: "kill(SIGTERM)",
            pid,
            path: dir.clone(),
            source: errno.into_io(),
        });
    }
    if dir.join(STATUS_FILE).exists() {
        return Ok(());
    }
    let detail = match pid {
        None => "no shim.pid".to_owned(),
        Some(p) => format!("shim pid {p} is not running"),
    };
    Err(ExecError::NotRunning { path: dir, detail })
}

/// `SIGKILL` to every process still alive in the sessions of a job's ranks, for a job whose
/// shim is gone (see [`ShimState::Lost`]). Returns the pids signalled. Refuses a running job.
pub fn kill_orphans(job_dir: &Path, job_id: u64) -> Result<Vec<u32>, ExecError> {
    let dir = canonical_job_dir(job_dir, job_id)?;
    if let ShimState::Running { shim_pid } = inspect(&dir, job_id)? {
        return Err(ExecError::StillRunning { job_id, shim_pid, path: dir });
    }
    let mut killed = Vec::new();
    for pid in survivors(&dir)? {
        match LinuxSyscalls.kill(pid, libc::SIGKILL) {
            Ok(()) => killed.push(pid),
            Err(errno) if errno.0 == libc::ESRCH => {}
            Err(errno) => {
                return Err(ExecError::Syscall { syscall: "kill(SIGKILL)", pid, path: dir, source: errno.into_io() });
            }
        }
    }
    Ok(killed)
}

/// Reads rank `rank`'s stdout log from byte `from_offset`: at most [`TAIL_CHUNK`] bytes and the
/// offset to ask from next time. A log not created yet reads as empty. For `tessera logs -f`.
pub fn tail_log(job_dir: &Path, rank: u32, from_offset: u64) -> Result<(Vec<u8>, u64), ExecError> {
    tail_stream(job_dir, rank, LogStream::Stdout, from_offset)
}

/// [`tail_log`] for either stream.
pub fn tail_stream(
    job_dir: &Path,
    rank: u32,
    stream: LogStream,
    from_offset: u64,
) -> Result<(Vec<u8>, u64), ExecError> {
    let spec_path = job_dir.join(SPEC_FILE);
    let spec: JobSpec = read_json(&spec_path, "job spec")?.ok_or_else(|| {
        ExecError::io("reading", &spec_path, io::Error::new(io::ErrorKind::NotFound, "no job spec here"))
    })?;
    if spec.rank(rank).is_none() {
        return Err(ExecError::NoSuchRank { job_id: spec.job_id, rank, path: job_dir.to_path_buf() });
    }
    let path = log_path(job_dir, rank, stream);
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), from_offset)),
        Err(e) => return Err(ExecError::io("opening", path, e)),
    };
    file.seek(SeekFrom::Start(from_offset)).map_err(|e| ExecError::io("seeking in", &path, e))?;
    let mut buf = Vec::new();
    file.take(TAIL_CHUNK).read_to_end(&mut buf).map_err(|e| ExecError::io("reading", &path, e))?;
    let next = from_offset + buf.len() as u64;
    Ok((buf, next))
}
