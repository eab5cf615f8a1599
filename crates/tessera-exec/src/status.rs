//! The job directory's files and what they hold: [`Outcome`] (`status.json`), the rank table
//! (`ranks.json`) and log paths; plus the two ways all of them are written, both through one
//! temporary-file helper: replaced atomically ([`write_atomic`]) or created once, first writer
//! wins ([`create_once`]). (What `shim.pid` means is [`crate::claim`]'s.)
//!
//! ```text
//! <job_dir>/spec.json             JobSpec, created once by `launch` (a second launch into the
//!                                 directory is refused)
//! <job_dir>/shim.pid              the claim: the shim's pid, or `abandoned` (crate::claim),
//!                                 created once before any rank starts
//! <job_dir>/stop.json             StopRequest, created once by the first `stop`, before it
//!                                 signals the shim (later requests leave it as it is)
//! <job_dir>/ranks.json            RankTable: each rank's pid and start time, once started
//! <job_dir>/status.json           Outcome, written once, when the job has ended
//! <job_dir>/shim.log              the shim's own stdout and stderr
//! <output_dir>/stdout.log         rank 0 (stderr.log likewise); output_dir defaults to job_dir
//! <output_dir>/rank-N.stdout.log  rank N > 0 (rank-N.stderr.log likewise)
//! <output_dir>/output.index       the order both streams of every rank were written in
//!                                 (crate::logs)
//! ```

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use tessera_host::files::{self, WriteOptions};

use crate::error::ExecError;
use crate::spec::StopRequest;

pub const SPEC_FILE: &str = "spec.json";
pub const PID_FILE: &str = "shim.pid";
pub const RANKS_FILE: &str = "ranks.json";
pub const STATUS_FILE: &str = "status.json";
pub const SHIM_LOG: &str = "shim.log";
pub const STOP_FILE: &str = "stop.json";

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Every rank exited with code 0.
    Succeeded,
    /// A rank exited non-zero, was killed by a signal it was not sent by the shim, or could not
    /// be started; the others were stopped.
    Failed,
    /// The shim got SIGTERM or SIGINT (the daemon's cancel, or a stop for health) and stopped
    /// the ranks.
    Cancelled,
    /// The time limit passed and the shim stopped the ranks.
    TimedOut,
    /// The daemon stopped the job to give its resources to another ([`crate::StopReason::Preempt`]).
    Preempted,
    /// A rank was killed by the kernel's OOM killer at the job's cgroup memory limit.
    OomKilled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::TimedOut => "timed_out",
            JobState::Preempted => "preempted",
            JobState::OomKilled => "oom_killed",
        }
    }
}

/// One rank's end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RankOutcome {
    pub rank: u32,
    /// `None` if the rank was never started.
    pub pid: Option<u32>,
    /// Exit code, when it exited.
    pub code: Option<i32>,
    /// Terminating signal, when it was killed.
    pub signal: Option<i32>,
    /// CPUs it was bound to (list form), `None` if not bound.
    pub cpus: Option<String>,
    /// NUMA node its memory was bound to, `None` if not bound.
    pub mem_node: Option<u32>,
}

/// `status.json`: the job's end, written atomically by the shim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub state: JobState,
    pub ranks: Vec<RankOutcome>,
    /// The rank whose failure ended the job (states `failed` and `oom_killed` only).
    pub failed_rank: Option<u32>,
    /// One human sentence: why the job ended as it did.
    pub detail: String,
    /// Unix time in milliseconds when the shim started / wrote this.
    pub started_ms: u64,
    pub ended_ms: u64,
    /// Where the binding differs from the request (CPUs outside the cpuset, absent NUMA node),
    /// and other notes (leftover processes killed, isolation not applied, output discarded).
    pub binding_notes: Vec<String>,
    /// The stop request that ended the job (a bare `SIGTERM`/`SIGINT` to the shim reads as a
    /// cancel with `SIGTERM` and the spec's grace); `None` when no stop ended it.
    #[serde(default)]
    pub stop: Option<StopRequest>,
    /// Whether output was discarded: the output limit was reached, or a log could not be
    /// opened or written (the notes say which).
    #[serde(default)]
    pub output_truncated: bool,
}

/// A started rank, as `ranks.json` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RankProc {
    pub rank: u32,
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat` (clock ticks after boot): tells our process from a later
    /// one that reuses the pid.
    pub start_time: u64,
}

/// `ranks.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RankTable {
    pub shim_pid: u32,
    pub ranks: Vec<RankProc>,
}

/// What a job directory says about its job (see [`crate::inspect`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ShimState {
    /// `spec.json` is there and no shim has claimed the job yet (no `shim.pid`). A daemon that
    /// finds this after a restart calls [`crate::abandon`] to settle it.
    Unclaimed,
    /// The daemon abandoned the job before any shim claimed it (`shim.pid` says `abandoned`):
    /// it never ran and never will.
    Abandoned,
    /// The shim is alive (its `/proc/<pid>/cmdline` names the job directory).
    Running { shim_pid: u32 },
    /// `status.json` is there.
    Finished(Outcome),
    /// No live shim and no `status.json`: the exit status is unknown.
    Lost {
        detail: String,
        /// Processes of the job's rank sessions that are still alive (normally none: ranks get
        /// `SIGKILL` when the shim dies, but their children do not). See [`crate::kill_orphans`].
        survivors: Vec<u32>,
    },
}

/// Which output stream of a rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

/// `stdout.log`/`stderr.log` for rank 0, `rank-N.stdout.log`/`rank-N.stderr.log` otherwise, in
/// `log_dir` (the spec's [`log_dir`](crate::JobSpec::log_dir)).
pub fn log_path(log_dir: &Path, rank: u32, stream: LogStream) -> PathBuf {
    let name = match stream {
        LogStream::Stdout => "stdout.log",
        LogStream::Stderr => "stderr.log",
    };
    if rank == 0 { log_dir.join(name) } else { log_dir.join(format!("rank-{rank}.{name}")) }
}

/// Writes `bytes` to `path` atomically and durably, private to the daemon
/// ([`tessera_host::files::write_atomic`]): a crash leaves the old file or the new one.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ExecError> {
    files::write_atomic(path, bytes, WriteOptions::PRIVATE_DURABLE).map_err(|e| ExecError::io("writing", path, e))
}

/// Creates `path` holding `bytes` unless it already exists ([`tessera_host::files::create_once`]:
/// exactly one of any number of concurrent writers wins); returns whether this call created it.
///
/// Without `fsync`: atomic against a process crash (`kill -9` of the daemon or the shim), not
/// against power loss, which ends the job's processes anyway. For `spec.json`, `shim.pid` and
/// `stop.json`, where "the first one stays" is the point.
pub(crate) fn create_once(path: &Path, bytes: &[u8]) -> Result<bool, ExecError> {
    files::create_once(path, bytes, WriteOptions::PRIVATE).map_err(|e| ExecError::io("linking", path, e))
}

fn json_bytes<T: Serialize>(path: &Path, what: &'static str, value: &T) -> Result<Vec<u8>, ExecError> {
    let mut text =
        serde_json::to_vec_pretty(value).map_err(|source| ExecError::Json { what, path: path.into(), source })?;
    text.push(b'\n');
    Ok(text)
}

/// Writes a value as pretty JSON, atomically ([`write_atomic`]).
pub(crate) fn write_json<T: Serialize>(path: &Path, what: &'static str, value: &T) -> Result<(), ExecError> {
    write_atomic(path, &json_bytes(path, what, value)?)
}

/// Creates a file holding a value as pretty JSON unless it exists ([`create_once`]); returns
/// whether this call created it.
pub(crate) fn create_json_once<T: Serialize>(path: &Path, what: &'static str, value: &T) -> Result<bool, ExecError> {
    create_once(path, &json_bytes(path, what, value)?)
}

/// Reads a JSON file; `Ok(None)` when it does not exist.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path, what: &'static str) -> Result<Option<T>, ExecError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|source| ExecError::Json {
            what,
            path: path.into(),
            source,
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ExecError::io("reading", path, e)),
    }
}

/// Opens a log for appending without following a symlink, creating it `0600` and, when
/// `owner` is given, owned by that uid/gid: the job's user's alone, never its group's (users
/// often share a primary group, and the output directory may sit outside the private state
/// directory, reachable by every user).
pub(crate) fn open_log(path: &Path, owner: Option<(u32, u32)>) -> io::Result<File> {
    open_appending(path, owner, false)
}

/// [`open_log`], readable too: for the output order index, whose header is checked.
pub(crate) fn open_index(path: &Path, owner: Option<(u32, u32)>) -> io::Result<File> {
    open_appending(path, owner, true)
}

fn open_appending(path: &Path, owner: Option<(u32, u32)>, read: bool) -> io::Result<File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut create = OpenOptions::new();
    create.read(read).append(true).create_new(true).mode(0o600).custom_flags(libc::O_NOFOLLOW);
    match create.open(path) {
        Ok(file) => {
            file.set_permissions(fs::Permissions::from_mode(0o600))?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
            }
            Ok(file)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // A later run's, or one an older version made group-readable: private again.
            let file = OpenOptions::new().read(read).append(true).custom_flags(libc::O_NOFOLLOW).open(path)?;
            file.set_permissions(fs::Permissions::from_mode(0o600))?;
            Ok(file)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn log_names() {
        let d = Path::new("/j");
        assert_eq!(log_path(d, 0, LogStream::Stdout), Path::new("/j/stdout.log"));
        assert_eq!(log_path(d, 0, LogStream::Stderr), Path::new("/j/stderr.log"));
        assert_eq!(log_path(d, 2, LogStream::Stdout), Path::new("/j/rank-2.stdout.log"));
        assert_eq!(log_path(d, 2, LogStream::Stderr), Path::new("/j/rank-2.stderr.log"));
    }

    #[test]
    fn outcome_json_shape() {
        let o = Outcome {
            state: JobState::TimedOut,
            ranks: vec![RankOutcome {
                rank: 0,
                pid: Some(10),
                code: None,
                signal: Some(15),
                cpus: None,
                mem_node: None,
            }],
            failed_rank: None,
            detail: "x".into(),
            started_ms: 1,
            ended_ms: 2,
            binding_notes: vec![],
            stop: None,
            output_truncated: false,
        };
        let v: serde_json::Value = serde_json::to_value(&o).unwrap();
        assert_eq!(v["state"], "timed_out");
        assert_eq!(v["ranks"][0]["signal"], 15);
        let s = ShimState::Lost { detail: "gone".into(), survivors: vec![] };
        assert_eq!(serde_json::to_value(&s).unwrap()["state"], "lost");
        assert_eq!(serde_json::to_value(ShimState::Unclaimed).unwrap(), serde_json::json!({"state": "unclaimed"}));
        assert_eq!(serde_json::to_value(ShimState::Abandoned).unwrap(), serde_json::json!({"state": "abandoned"}));
        for (state, text) in [(JobState::Preempted, "preempted"), (JobState::OomKilled, "oom_killed")] {
            assert_eq!(serde_json::to_value(state).unwrap(), text);
            assert_eq!(state.as_str(), text);
        }

        // A status.json written before `stop` and `output_truncated` existed still reads.
        let mut old = v.clone();
        old.as_object_mut().unwrap().remove("stop");
        old.as_object_mut().unwrap().remove("output_truncated");
        assert_eq!(serde_json::from_value::<Outcome>(old).unwrap(), o);
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("status.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(read_json::<Outcome>(&dir.path().join("missing.json"), "outcome").unwrap().is_none());
        let err = read_json::<Outcome>(&p, "job outcome").unwrap_err().to_string();
        assert!(err.contains("status.json") && err.contains("job outcome"), "{err}");
    }

    /// Writers in one process each get their own temporary: none clobbers another's (they did
    /// when the temporary was named after the pid alone).
    #[test]
    fn concurrent_atomic_writes_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ranks.json");
        std::thread::scope(|s| {
            for t in 0..8u8 {
                let p = &p;
                s.spawn(move || {
                    for _ in 0..50 {
                        write_atomic(p, &[b'0' + t; 4]).unwrap();
                    }
                });
            }
        });
        let text = fs::read(&p).unwrap();
        assert!(text.len() == 4 && text.iter().all(|&b| b == text[0]), "{text:?}");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "a temporary was left behind");
    }

    #[test]
    fn create_once_keeps_the_first_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("stop.json");
        assert!(create_once(&p, b"first").unwrap());
        assert!(!create_once(&p, b"second").unwrap());
        assert_eq!(fs::read(&p).unwrap(), b"first");
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "a temporary was left behind");
        // A planted symlink is a taken name, not a way to write elsewhere.
        let target = dir.path().join("elsewhere");
        std::os::unix::fs::symlink(&target, dir.path().join("spec.json")).unwrap();
        assert!(!create_once(&dir.path().join("spec.json"), b"x").unwrap());
        assert!(!target.exists());

        // Many at once: exactly one wins, and its content is what stays.
        let q = dir.path().join("race.json");
        let won: Vec<u8> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8u8)
                .map(|t| {
                    let q = &q;
                    s.spawn(move || create_once(q, &[t]).unwrap().then_some(t))
                })
                .collect();
            handles.into_iter().filter_map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(won.len(), 1, "{won:?}");
        assert_eq!(fs::read(&q).unwrap(), won);
    }

    #[test]
    fn logs_are_0600_and_refuse_symlinks() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("stdout.log");
        let mut f = open_log(&p, None).unwrap();
        f.write_all(b"a").unwrap();
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        let mut f = open_log(&p, None).unwrap();
        f.write_all(b"b").unwrap();
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600, "made private again");
        assert_eq!(fs::read(&p).unwrap(), b"ab");
        let link = dir.path().join("stderr.log");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert!(open_log(&link, None).is_err());
    }
}
