//! The daemon's side of a job: [`launch`] a shim, [`inspect`] a job directory (also after a
//! daemon restart), [`stop`] (and [`cancel`]), [`tail_log`], and [`kill_orphans`] for a lost
//! job.
//!
//! **No zombie, no double fork.** The shim is spawned directly (as the leader of a new session,
//! so it outlives the daemon and gets none of its terminal's signals) and a small named thread
//! (`tessera-reap-<job>`, 64 KiB stack, started before the shim: without it no shim is started
//! and the launch fails) waits for it. While the daemon lives, that thread reaps
//! the shim the moment it exits; if the daemon dies first, the shim is re-parented to init (or
//! the nearest subreaper), which reaps it. A double fork would avoid the thread but cannot be
//! done safely with `std::process::Command` from a multi-threaded daemon, and would hide the
//! shim's pid from the launcher. The cost is one sleeping thread per job the daemon launched.
//!
//! [`Launcher`] does the same with a standby shim started ahead of time (the daemon's way: a
//! launch is then a pipe write, not a fork and exec).
//!
//! **Never "launched" unless claimed.** `launch` returns the shim's pid once the shim has
//! claimed the job (created `shim.pid`, see [`crate::claim`]; by then its signal handlers are in
//! place, so an immediate [`cancel`] is recorded as `cancelled`). If the shim exits first, or
//! nothing claims the job within the ready timeout (a loaded machine, a stopped standby), it
//! calls [`abandon`](crate::abandon): when that wins the launch fails with
//! [`ExecError::NotStarted`] and no shim will ever run that directory; when a shim won after
//! all, that shim's pid is returned.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::cgroup::{JobCgroup, cgroup_support};
use crate::claim::{Claim, read_claim, try_claim};
use crate::error::ExecError;
use crate::procfs;
use crate::spec::{JobSpec, StopReason, StopRequest};
use crate::status::{
    LogStream, Outcome, PID_FILE, RANKS_FILE, RankTable, SHIM_LOG, SPEC_FILE, STATUS_FILE, STOP_FILE, ShimState,
    create_json_once, log_path, open_log, read_json,
};
use crate::sys::{self, LinuxSyscalls};
use crate::syscalls::{Syscalls, switch_needed};

/// How long [`launch`] waits for a shim to claim the job before it gives the job up (the
/// default of [`Launcher::with_ready_timeout`]).
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The most [`tail_log`] returns in one call.
pub const TAIL_CHUNK: u64 = 1 << 20;

/// The first pause between two looks at `shim.pid` while a launch waits for the claim.
const CLAIM_POLL_FIRST: Duration = Duration::from_micros(200);
/// The longest pause between two looks at `shim.pid`.
const CLAIM_POLL_MAX: Duration = Duration::from_millis(5);

/// Creates `job_dir`, writes `spec.json`, and starts `shim_exe shim_args… --job-dir <job_dir>`
/// (the directory made absolute) in a new session with stdin `/dev/null` and stdout/stderr
/// appended to `shim.log`. Returns the shim's pid.
///
/// Refuses a directory that already holds `spec.json`, `shim.pid` or `status.json` (of two
/// launches into one directory at once, exactly one gets past this), and a spec asking for
/// another user when this process is not root.
///
/// Fails with [`ExecError::NotStarted`] when no shim claimed the job (see the module docs).
pub fn launch(shim_exe: &Path, shim_args: &[&str], job_dir: &Path, spec: &JobSpec) -> Result<u32, ExecError> {
    let dir = prepare(job_dir, spec)?;
    spawn_direct(shim_exe, shim_args, &dir, spec, READY_TIMEOUT)
}

/// Checks, creates the job directory and creates `spec.json` (once: whoever creates it owns
/// the launch, everyone else gets [`ExecError::AlreadyLaunched`]); returns the directory,
/// absolute.
fn prepare(job_dir: &Path, spec: &JobSpec) -> Result<PathBuf, ExecError> {
    spec.validate()?;
    switch_needed(spec.uid, spec.gid, &spec.groups).map_err(|e| ExecError::CannotSwitchUser {
        job_id: spec.job_id,
        uid: e.uid,
        euid: e.euid,
    })?;
    fs::create_dir_all(job_dir).map_err(|e| ExecError::io("creating", job_dir, e))?;
    let dir = fs::canonicalize(job_dir).map_err(|e| ExecError::io("resolving", job_dir, e))?;
    let launched = |dir: PathBuf| ExecError::AlreadyLaunched { job_id: spec.job_id, path: dir };
    if [PID_FILE, STATUS_FILE].iter().any(|name| dir.join(name).exists()) {
        return Err(launched(dir));
    }
    if !create_json_once(&dir.join(SPEC_FILE), "job spec", spec)? {
        return Err(launched(dir));
    }
    Ok(dir)
}

/// A shim process this launcher started, with a thread reaping it.
struct Started {
    pid: u32,
    exited: mpsc::Receiver<String>,
}

/// Starts the reaper thread, then the shim, which it hands to the thread. A thread that cannot
/// be started fails the call before any shim exists: a shim nobody reaps or watches would leave
/// its launch waiting for a claim that may never come.
fn spawn_reaped(cmd: &mut Command, name: String) -> io::Result<(Started, Option<std::process::ChildStdin>)> {
    let (child_tx, child_rx) = mpsc::channel::<std::process::Child>();
    let (tx, rx) = mpsc::channel::<String>();
    thread::Builder::new()
        .name(name)
        .stack_size(64 * 1024)
        .spawn(move || {
            // Nothing comes when the shim could not be started.
            let Ok(mut child) = child_rx.recv() else { return };
            let status = match child.wait() {
                Ok(status) => status.to_string(),
                Err(e) => format!("wait failed: {e}"),
            };
            let _ = tx.send(status);
        })
        .map_err(|e| io::Error::new(e.kind(), format!("cannot start a thread to reap it: {e}")))?;
    let mut child = sys::spawn_session_leader(cmd)?;
    let pid = child.id();
    let stdin = child.stdin.take();
    // The thread is waiting for it; should it be gone, the shim runs on and init reaps it once
    // this process exits, and `exited` reads as disconnected.
    let _ = child_tx.send(child);
    Ok((Started { pid, exited: rx }, stdin))
}

fn spawn_direct(
    shim_exe: &Path,
    shim_args: &[&str],
    dir: &Path,
    spec: &JobSpec,
    ready_timeout: Duration,
) -> Result<u32, ExecError> {
    let log_path = dir.join(SHIM_LOG);
    let log = open_log(&log_path, None).map_err(|e| ExecError::io("opening", &log_path, e))?;
    let log2 = log.try_clone().map_err(|e| ExecError::io("duplicating", &log_path, e))?;
    let mut cmd = Command::new(shim_exe);
    cmd.args(shim_args).arg("--job-dir").arg(dir).current_dir("/").stdin(Stdio::null()).stdout(log).stderr(log2);
    let spawn_err =
        |source: io::Error| ExecError::Spawn { job_id: spec.job_id, program: shim_exe.display().to_string(), source };
    let (started, _) = spawn_reaped(&mut cmd, format!("tessera-reap-{}", spec.job_id)).map_err(spawn_err)?;
    wait_claim(dir, spec.job_id, &started, ready_timeout)
}

/// Waits until a shim has claimed the job (its signal handlers are in place by then); gives the
/// job up when the shim exits first or the time runs out (see the module docs).
///
/// Polling starts at [`CLAIM_POLL_FIRST`] (a standby claims within a millisecond or so) and
/// doubles up to [`CLAIM_POLL_MAX`].
fn wait_claim(dir: &Path, job_id: u64, started: &Started, timeout: Duration) -> Result<u32, ExecError> {
    let pid = started.pid;
    let deadline = Instant::now().checked_add(timeout);
    let mut pause = CLAIM_POLL_FIRST;
    let why = loop {
        match read_claim(dir)? {
            Some(Claim::Shim { pid }) => return Ok(pid),
            Some(Claim::Abandoned) => {
                let detail = "the job directory was abandoned before a shim claimed it".to_owned();
                return Err(ExecError::NotStarted { job_id, detail });
            }
            None => {}
        }
        if let Ok(status) = started.exited.try_recv() {
            let log_tail = fs::read_to_string(dir.join(SHIM_LOG))
                .map(|t| t.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join(" | "))
                .unwrap_or_default();
            break format!(
                "the shim (pid {pid}) exited ({status}) before it claimed the job; shim.log ends with: {log_tail}"
            );
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            break format!("no shim claimed the job within {} ms (shim pid {pid})", timeout.as_millis());
        }
        thread::sleep(deadline.map_or(pause, |d| pause.min(d.saturating_duration_since(now))));
        pause = (pause * 2).min(CLAIM_POLL_MAX);
    };
    match try_claim(dir, Claim::Abandoned)? {
        Claim::Abandoned => Err(ExecError::NotStarted { job_id, detail: why }),
        Claim::Shim { pid } => Ok(pid),
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
    ready_timeout: Duration,
    spare: std::sync::Arc<std::sync::Mutex<Option<Spare>>>,
}

impl std::fmt::Debug for Launcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launcher")
            .field("shim_exe", &self.shim_exe)
            .field("standby", &self.standby)
            .field("ready_timeout", &self.ready_timeout)
            .finish()
    }
}

impl Launcher {
    /// A launcher for `shim_exe shim_args… --job-dir DIR`; with `standby`, one standby shim
    /// is started at once (in the background).
    pub fn new(shim_exe: PathBuf, shim_args: Vec<String>, standby: bool) -> Launcher {
        let l = Launcher { shim_exe, shim_args, standby, ready_timeout: READY_TIMEOUT, spare: Default::default() };
        l.refill();
        l
    }

    /// How long a launch waits for a shim to claim the job before giving it up
    /// ([`READY_TIMEOUT`] unless set).
    pub fn with_ready_timeout(mut self, timeout: Duration) -> Launcher {
        self.ready_timeout = timeout;
        self
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

    /// As [`launch`]: creates `job_dir`, writes `spec.json`, hands the job to the standby shim
    /// (or starts one) and returns its pid once it has claimed the job; [`ExecError::NotStarted`]
    /// when none did within the ready timeout and the job was given up.
    pub fn launch(&self, job_dir: &Path, spec: &JobSpec) -> Result<u32, ExecError> {
        let dir = prepare(job_dir, spec)?;
        let spare = self.spare.lock().ok().and_then(|mut s| s.take());
        if let Some(mut spare) = spare {
            self.refill();
            use std::io::Write as _;
            use std::os::unix::ffi::OsStrExt as _;
            let alive = matches!(spare.started.exited.try_recv(), Err(mpsc::TryRecvError::Empty));
            // The path's own bytes (it need not be UTF-8), ended by a newline.
            let path = dir.as_os_str().as_bytes();
            let mut line = Vec::with_capacity(path.len() + 1);
            line.extend_from_slice(path);
            line.push(b'\n');
            if alive && !path.contains(&b'\n') && spare.stdin.write_all(&line).is_ok() {
                drop(spare.stdin);
                return wait_claim(&dir, spec.job_id, &spare.started, self.ready_timeout);
            }
        }
        let args: Vec<&str> = self.shim_args.iter().map(String::as_str).collect();
        spawn_direct(&self.shim_exe, &args, &dir, spec, self.ready_timeout)
    }
}

pub(crate) fn canonical_job_dir(job_dir: &Path, job_id: u64) -> Result<PathBuf, ExecError> {
    match fs::canonicalize(job_dir) {
        Ok(dir) => Ok(dir),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(ExecError::NotAJobDir { job_id, path: job_dir.to_path_buf() })
        }
        Err(e) => Err(ExecError::io("resolving", job_dir, e)),
    }
}

pub(crate) fn load_spec(dir: &Path, job_id: u64) -> Result<JobSpec, ExecError> {
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
/// * no `shim.pid` → [`ShimState::Unclaimed`] (settle it with [`abandon`](crate::abandon));
/// * `shim.pid` says `abandoned` → [`ShimState::Abandoned`];
/// * `shim.pid` names a live process whose `/proc/<pid>/cmdline` has the job directory as an
///   argument → [`ShimState::Running`] (a reused pid fails the second test);
/// * else [`ShimState::Lost`], with the processes still alive in the ranks' sessions (from
///   `ranks.json`, each rank checked by start time against pid reuse) and in the job's cgroup.
pub fn inspect(job_dir: &Path, job_id: u64) -> Result<ShimState, ExecError> {
    let dir = canonical_job_dir(job_dir, job_id)?;
    let spec = load_spec(&dir, job_id)?;
    if let Some(outcome) = read_json::<Outcome>(&dir.join(STATUS_FILE), "job outcome")? {
        return Ok(ShimState::Finished(outcome));
    }
    let pid = match read_claim(&dir)? {
        None => return Ok(ShimState::Unclaimed),
        Some(Claim::Abandoned) => return Ok(ShimState::Abandoned),
        Some(Claim::Shim { pid }) => pid,
    };
    // A zombie (a shim that died and is not reaped yet) is gone, not "another process".
    let alive = LinuxSyscalls.pid_alive(pid) && procfs::stat(pid).is_some_and(|s| s.state != 'Z');
    if alive && procfs::is_shim_of(pid, &dir) {
        return Ok(ShimState::Running { shim_pid: pid });
    }
    // The shim may have written its status and exited while we looked.
    if let Some(outcome) = read_json::<Outcome>(&dir.join(STATUS_FILE), "job outcome")? {
        return Ok(ShimState::Finished(outcome));
    }
    let survivors = survivors(&dir, &spec)?;
    let mut detail = if alive {
        format!("pid {pid} from shim.pid is another process now (pid reused); no status.json")
    } else {
        format!("the shim (pid {pid}) is gone and left no status.json")
    };
    if !survivors.is_empty() {
        let list = survivors.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
        detail.push_str(&format!("; processes of the job still running: {list}"));
    }
    Ok(ShimState::Lost { detail, survivors })
}

/// The job's cgroup as it would be on this machine, if the spec asks for one.
fn job_cgroup(spec: &JobSpec) -> Option<JobCgroup> {
    spec.isolation.as_ref().map(|iso| JobCgroup::locate(&cgroup_support(), iso, spec.job_id))
}

/// Live processes in the sessions of the job's ranks and in its cgroup.
fn survivors(dir: &Path, spec: &JobSpec) -> Result<Vec<u32>, ExecError> {
    let mut pids = job_cgroup(spec).map(|cg| cg.members()).unwrap_or_default();
    if let Some(table) = read_json::<RankTable>(&dir.join(RANKS_FILE), "rank table")? {
        for rank in &table.ranks {
            // A process now holding the rank's pid with another start time means the rank's
            // session is entirely gone (the kernel does not reuse a session id while it is in
            // use).
            if procfs::stat(rank.pid).is_some_and(|s| s.start_time != rank.start_time) {
                continue;
            }
            pids.extend(procfs::session_members(rank.pid));
        }
    }
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

/// Asks the job's shim to stop it: writes `stop.json` (atomically) with `request`, then sends
/// `SIGTERM` to the shim, which sends `request.signal` to every rank's process group, waits
/// `request.grace_ms`, then sends `SIGKILL`, and records the outcome with the request
/// ([`JobState::Preempted`](crate::JobState::Preempted) for a preemption, `cancelled`
/// otherwise). A second stop (or `SIGTERM`) while one is under way kills at once; the first
/// request stays the recorded one.
///
/// A job that has already finished is left alone (`Ok`); a job with no live shim and no
/// status is [`ExecError::NotRunning`]; a signal the kernel does not have is
/// [`ExecError::InvalidStop`].
pub fn stop(job_dir: &Path, request: &StopRequest) -> Result<(), ExecError> {
    let dir = fs::canonicalize(job_dir).map_err(|e| ExecError::io("resolving", job_dir, e))?;
    request.check().map_err(|reason| ExecError::InvalidStop { path: dir.clone(), reason })?;
    let claim = read_claim(&dir)?;
    let shim = match claim {
        Some(Claim::Shim { pid }) if LinuxSyscalls.pid_alive(pid) && procfs::is_shim_of(pid, &dir) => Some(pid),
        _ => None,
    };
    let Some(pid) = shim else {
        if dir.join(STATUS_FILE).exists() {
            return Ok(());
        }
        let detail = match claim {
            None => "no shim has claimed it (no shim.pid)".to_owned(),
            Some(Claim::Abandoned) => "it was abandoned before any shim claimed it".to_owned(),
            Some(Claim::Shim { pid }) => format!("shim pid {pid} is not running"),
        };
        return Err(ExecError::NotRunning { path: dir, detail });
    };
    // The first request is the one the shim acts on and records; a later one only hurries it
    // (its SIGTERM means "kill now"), so it leaves the first on disk: created once, so of
    // requests at the same moment exactly one is first.
    create_json_once(&dir.join(STOP_FILE), "stop request", request)?;
    match LinuxSyscalls.kill(pid, libc::SIGTERM) {
        Ok(()) => Ok(()),
        // It ended between the check and the signal.
        Err(_) if dir.join(STATUS_FILE).exists() => Ok(()),
        Err(errno) => Err(ExecError::Syscall { syscall: "kill(SIGTERM)", pid, path: dir, source: errno.into_io() }),
    }
}

/// Cancels the job: [`stop`] with [`StopReason::Cancel`], `SIGTERM` and the spec's
/// `kill_grace_ms`. A job that has already finished is left alone (`Ok`); a job with no live
/// shim and no status is [`ExecError::NotRunning`].
pub fn cancel(job_dir: &Path) -> Result<(), ExecError> {
    let spec_path = job_dir.join(SPEC_FILE);
    let grace_ms = match read_json::<JobSpec>(&spec_path, "job spec") {
        Ok(Some(spec)) => spec.kill_grace_ms,
        Ok(None) => {
            let detail = "no spec.json".to_owned();
            return Err(ExecError::NotRunning { path: job_dir.to_path_buf(), detail });
        }
        Err(e) => return Err(e),
    };
    let request = StopRequest { reason: StopReason::Cancel, signal: libc::SIGTERM, grace_ms, detail: String::new() };
    stop(job_dir, &request)
}

/// `SIGKILL` to every process still alive in the sessions of a job's ranks and in its cgroup,
/// for a job whose shim is gone (see [`ShimState::Lost`]) or that no shim will ever run
/// ([`ShimState::Abandoned`]); the cgroup is removed. Returns the pids signalled.
///
/// Refuses a running job ([`ExecError::StillRunning`]). An unclaimed job is abandoned first
/// ([`abandon`]), so no shim can claim it and start ranks while their cgroup is being removed;
/// when a shim won that race, it is refused as running. A finished job is left alone (its
/// shim killed what was left and removed the cgroup before it recorded the outcome): `Ok` with
/// no pids.
pub fn kill_orphans(job_dir: &Path, job_id: u64) -> Result<Vec<u32>, ExecError> {
    let dir = canonical_job_dir(job_dir, job_id)?;
    let spec = load_spec(&dir, job_id)?;
    match inspect(&dir, job_id)? {
        ShimState::Lost { .. } | ShimState::Abandoned => {}
        ShimState::Running { shim_pid } => return Err(ExecError::StillRunning { job_id, shim_pid, path: dir }),
        ShimState::Unclaimed => match try_claim(&dir, Claim::Abandoned)? {
            Claim::Abandoned => {}
            Claim::Shim { pid } => return Err(ExecError::StillRunning { job_id, shim_pid: pid, path: dir }),
        },
        ShimState::Finished(_) => return Ok(Vec::new()),
    }
    let mut killed = Vec::new();
    for pid in survivors(&dir, &spec)? {
        match LinuxSyscalls.kill(pid, libc::SIGKILL) {
            Ok(()) => killed.push(pid),
            Err(errno) if errno.0 == libc::ESRCH => {}
            Err(errno) => {
                return Err(ExecError::Syscall { syscall: "kill(SIGKILL)", pid, path: dir, source: errno.into_io() });
            }
        }
    }
    if let Some(cg) = job_cgroup(&spec) {
        killed.extend(cg.cleanup()?);
    }
    killed.sort_unstable();
    killed.dedup();
    Ok(killed)
}

/// Reads rank `rank`'s stdout log (in the spec's output directory) from byte `from_offset`: at
/// most [`TAIL_CHUNK`] bytes and the offset to ask from next time. A log not created yet reads
/// as empty. For `tessera logs -f`.
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
    let path = log_path(&spec.log_dir(job_dir), rank, stream);
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

/// The daemon's side of the claim: atomically marks the job directory `abandoned` unless a shim
/// claimed it first. [`Claim::Abandoned`]: the daemon won, and no shim will ever run this job
/// directory (requeue it in a fresh one). [`Claim::Shim`]: a shim had claimed it; the job is
/// (or was) running under that pid.
///
/// Fails with [`ExecError::NotAJobDir`] or [`ExecError::WrongJob`] when the directory does not
/// hold job `job_id`.
pub fn abandon(job_dir: &Path, job_id: u64) -> Result<Claim, ExecError> {
    let dir = canonical_job_dir(job_dir, job_id)?;
    load_spec(&dir, job_id)?;
    try_claim(&dir, Claim::Abandoned)
}
