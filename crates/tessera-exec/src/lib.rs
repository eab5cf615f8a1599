//! Running jobs: the per-job supervisor ("shim"), launch as the submitting user, CPU affinity
//! and NUMA memory binding, cgroup isolation, logs, time limits, stop requests, adoption after
//! a daemon restart, and MPS control. The executor of `docs/design/daemon.md`.
//!
//! The daemon calls [`launch()`] (or [`Launcher::launch`]) with a [`JobSpec`]; that writes
//! `<job_dir>/spec.json` and hands the job to `tessera shim --job-dir <job_dir>` (whose body is
//! [`run_shim`]) in its own session, so the job outlives the daemon. The shim claims the job
//! (`shim.pid`, [`claim`]), sets up its cgroup, starts every rank in its own session and process
//! group, bound to its CPUs and NUMA node and running as the user, copies the ranks' output to
//! their logs under a cap, enforces the time limit, carries out [`stop`] requests, stops the
//! other ranks when one fails, and writes `status.json` ([`Outcome`]) when the job ends. After a
//! restart the daemon calls [`inspect`] on each job directory: [`ShimState::Running`] (adopt),
//! [`ShimState::Finished`], [`ShimState::Lost`], or, for a job no shim took,
//! [`ShimState::Unclaimed`] (then [`abandon`] settles it) and [`ShimState::Abandoned`].
//!
//! Module map:
//! * [`spec`]: [`JobSpec`], [`RankSpec`], [`Isolation`], [`StopRequest`], [`rank_env`].
//! * [`claim`]: who owns a job directory (`shim.pid`: a pid or `abandoned`), [`abandon`].
//! * [`binding`]: CPU set and NUMA node reconciled with the shim's own cpuset (the rules).
//! * [`cgroup`]: the job's cgroup (v1 or v2 per controller): memory, cpuset, devices, killing
//!   what is left, OOM counters; `devfilter` (private): the v2 device filter's eBPF
//!   instructions.
//! * `output` (private): the ranks' output pipes, copied to their logs under a per-run cap,
//!   and the order they were written in; [`logs`]: reading them back in that order.
//! * [`syscalls`]: the [`Syscalls`] seam, [`RecordingSyscalls`], the child's set-up sequence;
//!   `sys` (private) holds every `unsafe` libc call (including `poll` and `bpf`).
//! * [`shim`]: the supervisor. [`launch`](mod@launch): the daemon's side.
//! * [`status`]: the job directory's files. [`mps`]: MPS control, one daemon per instance, run
//!   as the instance's user.

mod devfilter;
mod error;
mod output;
mod procfs;
mod sys;

pub mod binding;
pub mod cgroup;
pub mod claim;
pub mod launch;
pub mod logs;
pub mod mps;
pub mod shim;
pub mod spec;
pub mod status;
pub mod syscalls;

pub use binding::{Allowed, RankBinding, plan_binding};
pub use cgroup::{CgroupSupport, CgroupVersion, Controller, cgroup_support, device_number, nvidia_majors};
pub use claim::Claim;
pub use error::ExecError;
pub use launch::{
    Launcher, READY_TIMEOUT, abandon, cancel, inspect, kill_orphans, launch, stop, tail_log, tail_stream,
};
pub use logs::{INDEX_FILE, LogCursor, LogPiece, LogRead, LogSelect, read_output, tail_cursor};
pub use mps::{MpsControl, NvidiaMps, RecordingMps, RunAs};
pub use shim::{EXIT_ABANDONED, EXIT_NOT_SUCCEEDED, EXIT_SHIM_ERROR, EXIT_SUCCEEDED, run_shim, run_standby_shim};
pub use spec::{
    DeviceAccess, DeviceNumber, Isolation, JobSpec, MpsClient, RankSpec, StopReason, StopRequest, rank_env,
};
pub use status::{JobState, LogStream, Outcome, RankOutcome, ShimState, log_path};
pub use sys::LinuxSyscalls;
pub use syscalls::{RecordingSyscalls, Syscalls};

use std::ffi::OsString;
use std::path::PathBuf;

/// Writes one line to stderr. A failed write (a full disk, a closed or broken stderr) is
/// ignored: unlike `eprintln!`, this never panics.
pub(crate) fn diag(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{args}");
}

/// Parses the shim's own arguments (`--job-dir DIR` or `--job-dir=DIR`; anything else is an
/// error), for binaries that expose [`run_shim`] without an argument parser of their own.
pub fn parse_shim_args(args: impl IntoIterator<Item = OsString>) -> Result<PathBuf, String> {
    let mut args = args.into_iter();
    let mut dir = None;
    while let Some(arg) = args.next() {
        if arg == "--job-dir" {
            dir = Some(PathBuf::from(args.next().ok_or("--job-dir needs a directory")?));
        } else if let Some(value) = arg.to_str().and_then(|a| a.strip_prefix("--job-dir=")) {
            dir = Some(PathBuf::from(value));
        } else {
            return Err(format!("unexpected argument {arg:?}"));
        }
    }
    dir.ok_or_else(|| "usage: --job-dir DIR".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shim_args() {
        let a = |v: &[&str]| parse_shim_args(v.iter().map(OsString::from));
        assert_eq!(a(&["--job-dir", "/j"]), Ok(PathBuf::from("/j")));
        assert_eq!(a(&["--job-dir=/j"]), Ok(PathBuf::from("/j")));
        assert!(a(&[]).is_err());
        assert!(a(&["--job-dir"]).is_err());
        assert!(a(&["--other"]).is_err());
    }
}
