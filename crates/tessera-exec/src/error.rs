//! [`ExecError`]: everything the executor can fail at, each with the job, path, pid or syscall
//! it concerns.

use std::io;
use std::path::PathBuf;

/// An executor failure.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// A file or directory operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done, e.g. "reading", "creating".
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A JSON file did not parse (or a value did not serialise).
    #[error("{path} is not a valid {what}: {source}")]
    Json {
        /// What the file should hold, e.g. "job spec".
        what: &'static str,
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The job spec cannot be run as written.
    #[error("job {job_id}: invalid spec: {reason}")]
    InvalidSpec { job_id: u64, reason: String },
    /// The job directory already holds a launched (or finished) job.
    #[error("job {job_id}: {path} already holds a launched job")]
    AlreadyLaunched { job_id: u64, path: PathBuf },
    /// A process could not be started.
    #[error("job {job_id}: cannot start `{program}`: {source}")]
    Spawn {
        job_id: u64,
        program: String,
        #[source]
        source: io::Error,
    },
    /// No shim claimed the job (it exited first, or did not claim it within the ready
    /// timeout) and the daemon's [`abandon`](crate::abandon) won: the job never ran and never
    /// will run in this job directory.
    #[error("job {job_id}: not started: {detail}")]
    NotStarted { job_id: u64, detail: String },
    /// A syscall aimed at a process failed.
    #[error("{syscall} on pid {pid} (job dir {path}): {source}")]
    Syscall {
        syscall: &'static str,
        pid: u32,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The directory holds no job (no `spec.json`).
    #[error("job {job_id}: {path} holds no job (no spec.json)")]
    NotAJobDir { job_id: u64, path: PathBuf },
    /// `spec.json` names another job than the caller expected.
    #[error("{path} holds job {found}, not job {job_id}")]
    WrongJob { job_id: u64, found: u64, path: PathBuf },
    /// The job has no live shim to signal.
    #[error("job in {path} is not running: {detail}")]
    NotRunning { path: PathBuf, detail: String },
    /// The job's shim is alive (for operations meant for a job that has none).
    #[error("job {job_id}: its shim (pid {shim_pid}) is still running (job dir {path})")]
    StillRunning { job_id: u64, shim_pid: u32, path: PathBuf },
    /// The spec asks for another user and this process is not root.
    #[error("job {job_id}: cannot run as uid {uid}: this process runs as uid {euid}, not root")]
    CannotSwitchUser { job_id: u64, uid: u32, euid: u32 },
    /// `tail_log` was asked for a rank the job does not have.
    #[error("job {job_id} has no rank {rank} (job dir {path})")]
    NoSuchRank { job_id: u64, rank: u32, path: PathBuf },
    /// A stop request cannot be carried out as written.
    #[error("job in {path}: invalid stop request: {reason}")]
    InvalidStop { path: PathBuf, reason: String },
    /// A cgroup file or directory operation failed.
    #[error("job {job_id}: cgroup: {action} {path}: {source}")]
    Cgroup {
        job_id: u64,
        /// What was being done, e.g. "creating", "writing memory.max to".
        action: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Loading or attaching the device-filter eBPF program failed.
    #[error("job {job_id}: {syscall} of the device filter for cgroup {path}: {source}{}", verifier_suffix(.verifier_log))]
    Bpf {
        job_id: u64,
        /// "bpf(BPF_PROG_LOAD)" or "bpf(BPF_PROG_ATTACH)".
        syscall: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
        /// The kernel verifier's log (empty when it gave none).
        verifier_log: String,
    },
    /// Isolation marked `required` cannot be applied here.
    #[error("job {job_id}: required isolation cannot be applied: {missing}")]
    IsolationUnavailable { job_id: u64, missing: String },
    /// A path that should be a character device is not one.
    #[error("{path} is not a character device: {detail}")]
    NotADevice { path: PathBuf, detail: String },
    /// An MPS control operation failed.
    #[error("MPS `{command}` (pipe directory {pipe_dir}): {detail}")]
    Mps { command: String, pipe_dir: PathBuf, detail: String },
}

fn verifier_suffix(log: &str) -> String {
    if log.trim().is_empty() { String::new() } else { format!("; verifier log: {}", log.trim()) }
}

impl ExecError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        ExecError::Io { action, path: path.into(), source }
    }
}
