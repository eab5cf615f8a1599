//! The per-job supervisor: the body of the hidden `tessera shim --job-dir DIR` subcommand.
//!
//! [`run_shim`] installs its signal handlers, writes `shim.pid`, reads `spec.json`, starts
//! every rank, supervises them and writes `status.json`. It must run on the main thread of a
//! process that starts no other threads: ranks get `PR_SET_PDEATHSIG`, which fires when the
//! *thread* that forked them exits.
//!
//! **Starting a rank.** `std::process::Command` with the user's environment plus the rank's
//! (nothing of the shim's own), stdin `/dev/null`, stdout/stderr appended to the rank's logs
//! (created `0640`, owned by the job's user when the shim switches users), and a `pre_exec`
//! hook running [`crate::syscalls::apply_child_setup`]: `setsid`, CPU affinity, `MPOL_BIND`,
//! `setgroups`/`setgid`/`setuid` (only when the spec's uid/gid differ from the shim's, which
//! then must be root), `PR_SET_PDEATHSIG(SIGKILL)`, `chdir` to the job's cwd as the user. The
//! binding is planned first ([`crate::binding`]).
//!
//! **Waiting.** A polling loop (every [`POLL`]): `try_wait` (`waitpid(pid, WNOHANG)`) on each
//! rank still running, then the stop conditions. Signals only set atomics (see
//! `sys::prepare_shim_signals`), so nothing runs in a handler and no `SIGCHLD` or
//! self-pipe juggling is needed; the price is up to one poll interval of latency. The shim
//! resets `SIGCHLD` to its default on start, so an ignored `SIGCHLD` inherited from the daemon
//! cannot make the kernel reap ranks behind its back.
//!
//! **Stopping.** The first of these decides the outcome: a rank exits non-zero or by a signal
//! (`failed`), a rank cannot start (`failed`), `SIGTERM`/`SIGINT` to the shim (`cancelled`), the
//! time limit (`timed_out`). The shim then sends `SIGTERM` to every rank's process group,
//! and `SIGKILL` once `kill_grace_ms` has passed (or at once on a second `SIGTERM`/`SIGINT`).
//! When every rank has been reaped, a last `SIGKILL` goes to every rank's process group, so
//! processes a rank left behind in its group do not outlive the job (whatever left the group,
//! e.g. with its own `setsid`, is beyond a shim without cgroups). A group is only signalled
//! while its leader is unreaped, or when no other process has since taken the leader's pid
//! (checked by start time), so a recycled pid is never hit.
//!
//! **Exit code.** 0 when the job succeeded, 1 when it ended otherwise (`status.json` written),
//! 2 when `status.json` could not be written.

use std::ffi::CString;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::binding::{Allowed, RankBinding, plan_binding};
use crate::procfs;
use crate::spec::JobSpec;
use crate::status::{
    JobState, LogStream, Outcome, PID_FILE, RANKS_FILE, RankOutcome, RankProc, RankTable, SPEC_FILE, STATUS_FILE,
    log_path, open_log, read_json, write_atomic_unsynced, write_json,
};
use crate::sys::{self, LinuxSyscalls};
use crate::syscalls::{ChildPlan, CpuMask, Credentials, NodeMask, Syscalls};
use tessera_host::format_cpulist;

/// How often the shim polls its ranks, signals and clock.
pub const POLL: Duration = Duration::from_millis(10);

/// Exit code: the job succeeded.
pub const EXIT_SUCCEEDED: i32 = 0;
/// Exit code: the job ended otherwise; `status.json` says how.
pub const EXIT_NOT_SUCCEEDED: i32 = 1;
/// Exit code: the shim could not write `status.json`.
pub const EXIT_SHIM_ERROR: i32 = 2;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn say(msg: &str) {
    eprintln!("tessera-shim[{}]: {msg}", std::process::id());
}

/// Runs the shim for the job in `job_dir` and returns the shim's exit code (see the module
/// docs).
pub fn run_shim(job_dir: &Path) -> i32 {
    let started_ms = now_ms();
    if let Err(e) = sys::prepare_shim_signals() {
        return finish(job_dir, not_started(started_ms, format!("the shim cannot install its signal handlers: {e}")));
    }
    if let Err(e) = write_atomic_unsynced(&job_dir.join(PID_FILE), format!("{}\n", std::process::id()).as_bytes()) {
        say(&e.to_string());
        return finish(job_dir, not_started(started_ms, format!("the shim cannot write its pid file: {e}")));
    }
    let spec = match read_json::<JobSpec>(&job_dir.join(SPEC_FILE), "job spec") {
        Ok(Some(spec)) => spec,
        Ok(None) => {
            return finish(job_dir, not_started(started_ms, format!("no {SPEC_FILE} in {}", job_dir.display())));
        }
        Err(e) => return finish(job_dir, not_started(started_ms, e.to_string())),
    };
    if let Err(e) = spec.validate() {
        return finish(job_dir, not_started(started_ms, e.to_string()));
    }
    say(&format!("job {}: starting {} rank(s)", spec.job_id, spec.ranks.len()));
    let outcome = Supervisor::new(&LinuxSyscalls, job_dir, &spec, started_ms).run();
    say(&format!("job {}: {}: {}", spec.job_id, outcome.state.as_str(), outcome.detail));
    finish(job_dir, outcome)
}

/// A standby shim: started ahead of time by the daemon's [`Launcher`](crate::launch::Launcher),
/// it waits for one line on stdin naming a job directory, then moves its output to that job's
/// `shim.log`, works in the directory (which is how [`inspect`](crate::launch::inspect) knows
/// it) and runs [`run_shim`] there. Starting a job then costs a pipe write instead of a fork
/// and exec. End of input (the daemon went away) ends it quietly with 0.
pub fn run_standby_shim() -> i32 {
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line).is_err() || line.trim().is_empty() {
        return 0;
    }
    let job_dir = std::path::PathBuf::from(line.trim_end_matches('\n'));
    let log_path = job_dir.join(crate::status::SHIM_LOG);
    match crate::status::open_log(&log_path, None) {
        Ok(log) => {
            if let Err(e) = sys::redirect_output(&log) {
                say(&format!("cannot send output to {}: {e}", log_path.display()));
            }
        }
        Err(e) => say(&format!("cannot open {}: {e}", log_path.display())),
    }
    if let Err(e) = std::env::set_current_dir(&job_dir) {
        let started_ms = now_ms();
        return finish(
            &job_dir,
            not_started(started_ms, format!("the standby shim cannot enter the job directory: {e}")),
        );
    }
    run_shim(&job_dir)
}

fn not_started(started_ms: u64, detail: String) -> Outcome {
    Outcome {
        state: JobState::Failed,
        ranks: Vec::new(),
        failed_rank: None,
        detail,
        started_ms,
        ended_ms: now_ms(),
        binding_notes: Vec::new(),
    }
}

fn finish(job_dir: &Path, outcome: Outcome) -> i32 {
    match write_json(&job_dir.join(STATUS_FILE), "job outcome", &outcome) {
        Ok(()) if outcome.state == JobState::Succeeded => EXIT_SUCCEEDED,
        Ok(()) => EXIT_NOT_SUCCEEDED,
        Err(e) => {
            say(&format!("cannot record the outcome ({}: {}): {e}", outcome.state.as_str(), outcome.detail));
            EXIT_SHIM_ERROR
        }
    }
}

/// A signal's conventional name, for messages.
pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        _ => return format!("signal {sig}"),
    };
    name.to_owned()
}

/// Why the ranks are being stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Trigger {
    Failed { rank: u32, detail: String },
    Cancelled { sig: i32 },
    TimedOut,
}

#[derive(Debug)]
struct RankRun {
    rank: u32,
    binding: RankBinding,
    child: Option<Child>,
    proc: Option<RankProc>,
    code: Option<i32>,
    signal: Option<i32>,
}

struct Supervisor<'a> {
    sys: &'a dyn Syscalls,
    job_dir: &'a Path,
    spec: &'a JobSpec,
    started_ms: u64,
    ranks: Vec<RankRun>,
    notes: Vec<String>,
}

impl<'a> Supervisor<'a> {
    fn new(sys: &'a dyn Syscalls, job_dir: &'a Path, spec: &'a JobSpec, started_ms: u64) -> Self {
        let (allowed, mut notes) = Allowed::here();
        let ranks = spec
            .ranks
            .iter()
            .map(|r| {
                let binding = plan_binding(r, &allowed);
                notes.extend(binding.notes.iter().cloned());
                RankRun { rank: r.rank, binding, child: None, proc: None, code: None, signal: None }
            })
            .collect();
        Supervisor { sys, job_dir, spec, started_ms, ranks, notes }
    }

    fn run(mut self) -> Outcome {
        let start = Instant::now();
        let mut trigger = self.start_ranks();
        if self.ranks.iter().all(|r| r.proc.is_none()) {
            self.write_rank_table();
        }

        let deadline = self.spec.time_limit_ms.and_then(|ms| start.checked_add(Duration::from_millis(ms)));
        let grace = Duration::from_millis(self.spec.kill_grace_ms);
        let mut term_sent: Option<(Instant, u32)> = None;
        let mut kill_sent = false;
        loop {
            self.reap(&mut trigger);
            if self.ranks.iter().all(|r| r.child.is_none()) {
                break;
            }
            let (stops, first_sig) = sys::stop_requests();
            let now = Instant::now();
            if trigger.is_none() {
                if stops > 0 {
                    trigger = Some(Trigger::Cancelled { sig: first_sig });
                } else if deadline.is_some_and(|d| now >= d) {
                    trigger = Some(Trigger::TimedOut);
                }
            }
            if trigger.is_some() {
                match term_sent {
                    None => {
                        self.signal_groups(libc::SIGTERM);
                        term_sent = Some((now, stops));
                    }
                    Some((at, stops_then)) if !kill_sent => {
                        let grace_over = at.checked_add(grace).is_some_and(|end| now >= end);
                        if grace_over || stops > stops_then {
                            self.signal_groups(libc::SIGKILL);
                            kill_sent = true;
                        }
                    }
                    Some(_) => {}
                }
            }
            sleep(POLL);
        }
        // Whatever a rank left behind in its process group goes with it. (After a stop the
        // stragglers are expected; only a clean finish is worth a note.)
        let leftovers: Vec<u32> = self
            .ranks
            .iter()
            .filter_map(|r| r.proc.as_ref())
            .filter(|p| !procfs::group_members(p.pid).is_empty())
            .map(|p| p.rank)
            .collect();
        self.signal_groups(libc::SIGKILL);
        if term_sent.is_none() {
            for rank in leftovers {
                self.notes.push(format!("rank {rank}: killed processes it left in its process group"));
            }
        }
        self.outcome(trigger, term_sent.is_some(), kill_sent)
    }

    /// Starts the ranks in order; stops at the first that cannot start (or at a stop request).
    fn start_ranks(&mut self) -> Option<Trigger> {
        let spec = self.spec;
        let euid = tessera_host::effective_uid();
        let switch = spec.uid != euid || spec.gid != tessera_host::effective_gid();
        if switch && euid != 0 {
            let rank = spec.ranks[0].rank;
            let e = crate::ExecError::CannotSwitchUser { job_id: spec.job_id, uid: spec.uid, euid };
            return Some(Trigger::Failed { rank, detail: e.to_string() });
        }
        let creds = switch.then(|| Credentials {
            uid: spec.uid,
            gid: spec.gid,
            groups: if spec.groups.is_empty() { vec![spec.gid] } else { spec.groups.clone() },
        });
        let owner = switch.then_some((spec.uid, spec.gid));
        let cwd = match CString::new(spec.cwd.as_os_str().as_encoded_bytes()) {
            Ok(c) => c,
            Err(_) => {
                return Some(Trigger::Failed { rank: spec.ranks[0].rank, detail: "cwd contains a NUL byte".into() });
            }
        };
        let parent_pid = std::process::id();
        for i in 0..self.ranks.len() {
            let rank = self.ranks[i].rank;
            if sys::stop_requests().0 > 0 {
                return Some(Trigger::Cancelled { sig: sys::stop_requests().1 });
            }
            let Some(rank_spec) = spec.rank(rank) else { continue };
            let binding = &self.ranks[i].binding;
            let plan = ChildPlan {
                cpus: binding.cpus.as_ref().map(CpuMask::from_ids),
                mem: binding.mem_node.map(NodeMask::single),
                creds: creds.clone(),
                cwd: cwd.clone(),
                parent_pid,
            };
            let result = self.spawn_rank(rank, &rank_spec.env, owner, plan);
            match result {
                Ok(child) => {
                    let pid = child.id();
                    let start_time = procfs::stat(pid).map_or(0, |s| s.start_time);
                    self.ranks[i].proc = Some(RankProc { rank, pid, start_time });
                    self.ranks[i].child = Some(child);
                    // After every start, so a shim killed mid-way still names what it started.
                    self.write_rank_table();
                }
                Err(detail) => return Some(Trigger::Failed { rank, detail }),
            }
        }
        None
    }

    fn spawn_rank(
        &self,
        rank: u32,
        rank_env: &[(String, String)],
        owner: Option<(u32, u32)>,
        plan: ChildPlan,
    ) -> Result<Child, String> {
        let spec = self.spec;
        let out_path = log_path(self.job_dir, rank, LogStream::Stdout);
        let err_path = log_path(self.job_dir, rank, LogStream::Stderr);
        let stdout =
            open_log(&out_path, owner).map_err(|e| format!("rank {rank}: cannot open {}: {e}", out_path.display()))?;
        let stderr =
            open_log(&err_path, owner).map_err(|e| format!("rank {rank}: cannot open {}: {e}", err_path.display()))?;
        let mut cmd = Command::new(&spec.argv[0]);
        cmd.args(&spec.argv[1..])
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .envs(rank_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        sys::spawn_rank(&mut cmd, plan).map_err(|e| {
            let step = std::fs::read_to_string(&err_path).ok().and_then(|t| {
                t.lines().rev().find_map(|l| l.strip_prefix("tessera: rank setup failed at ").map(str::to_owned))
            });
            match step {
                Some(step) => format!("rank {rank} could not start: {step} failed: {e}"),
                None => format!("rank {rank} could not start `{}`: {e}", spec.argv[0]),
            }
        })
    }

    fn write_rank_table(&mut self) {
        let table = RankTable {
            shim_pid: std::process::id(),
            ranks: self.ranks.iter().filter_map(|r| r.proc.clone()).collect(),
        };
        if let Err(e) = write_json(&self.job_dir.join(RANKS_FILE), "rank table", &table) {
            let note = format!("cannot write {RANKS_FILE}: {e}");
            if !self.notes.contains(&note) {
                self.notes.push(note);
            }
        }
    }

    /// Collects every rank that has ended; the first failure becomes the trigger.
    fn reap(&mut self, trigger: &mut Option<Trigger>) {
        for r in &mut self.ranks {
            let Some(child) = r.child.as_mut() else { continue };
            let status: ExitStatus = match child.try_wait() {
                Ok(Some(status)) => status,
                Ok(None) => continue,
                Err(e) => {
                    r.child = None;
                    self.notes.push(format!("rank {}: its exit status is unknown: waitpid: {e}", r.rank));
                    if trigger.is_none() {
                        *trigger = Some(Trigger::Failed {
                            rank: r.rank,
                            detail: format!("rank {}'s exit status is unknown (waitpid: {e})", r.rank),
                        });
                    }
                    continue;
                }
            };
            r.child = None;
            r.code = status.code();
            r.signal = status.signal();
            if trigger.is_none() && !status.success() {
                let detail = match (status.code(), status.signal()) {
                    (Some(code), _) => format!("rank {} exited with code {code}", r.rank),
                    (None, Some(sig)) => format!("rank {} was killed by {}", r.rank, signal_name(sig)),
                    (None, None) => format!("rank {} ended abnormally ({status})", r.rank),
                };
                *trigger = Some(Trigger::Failed { rank: r.rank, detail });
            }
        }
    }

    /// Sends `sig` to the process group of every started rank whose group is still ours;
    /// returns the ranks where it reached at least one process.
    fn signal_groups(&self, sig: i32) -> Vec<u32> {
        let mut reached = Vec::new();
        for r in &self.ranks {
            let Some(proc) = &r.proc else { continue };
            if r.child.is_none() {
                // Reaped: the pid may only be reused once the whole group is gone, so a live
                // process under that pid with another start time means our group is empty.
                if procfs::stat(proc.pid).is_some_and(|s| s.start_time != proc.start_time) {
                    continue;
                }
            }
            if self.sys.killpg(proc.pid, sig).is_ok() {
                reached.push(r.rank);
            }
        }
        reached
    }

    fn outcome(self, trigger: Option<Trigger>, term_sent: bool, kill_sent: bool) -> Outcome {
        let started = self.ranks.iter().filter(|r| r.proc.is_some()).count();
        let stopping = match (term_sent, kill_sent) {
            (true, true) => {
                format!("; SIGTERM to the ranks, then SIGKILL after the {} ms grace period", self.spec.kill_grace_ms)
            }
            (true, false) => "; SIGTERM to the ranks".to_owned(),
            _ => String::new(),
        };
        let (state, failed_rank, detail) = match trigger {
            None => (JobState::Succeeded, None, format!("all {started} rank(s) exited with code 0")),
            Some(Trigger::Failed { rank, detail }) => (JobState::Failed, Some(rank), format!("{detail}{stopping}")),
            Some(Trigger::Cancelled { sig }) => {
                (JobState::Cancelled, None, format!("cancelled ({} to the shim){stopping}", signal_name(sig)))
            }
            Some(Trigger::TimedOut) => (
                JobState::TimedOut,
                None,
                format!("time limit of {} ms reached{stopping}", self.spec.time_limit_ms.unwrap_or(0)),
            ),
        };
        let ranks = self
            .ranks
            .iter()
            .map(|r| RankOutcome {
                rank: r.rank,
                pid: r.proc.as_ref().map(|p| p.pid),
                code: r.code,
                signal: r.signal,
                cpus: r.binding.cpus.as_ref().map(format_cpulist),
                mem_node: r.binding.mem_node,
            })
            .collect();
        Outcome {
            state,
            ranks,
            failed_rank,
            detail,
            started_ms: self.started_ms,
            ended_ms: now_ms(),
            binding_notes: self.notes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names() {
        assert_eq!(signal_name(libc::SIGKILL), "SIGKILL");
        assert_eq!(signal_name(libc::SIGTERM), "SIGTERM");
        assert_eq!(signal_name(64), "signal 64");
    }

    #[test]
    fn missing_spec_is_a_failed_outcome() {
        let dir = tempfile::tempdir().unwrap();
        // Not `run_shim` (it installs process-wide signal handlers); the same path without them.
        let code = finish(dir.path(), not_started(1, "no spec.json".into()));
        assert_eq!(code, EXIT_NOT_SUCCEEDED);
        let o: Outcome = read_json(&dir.path().join(STATUS_FILE), "outcome").unwrap().unwrap();
        assert_eq!(o.state, JobState::Failed);
        assert_eq!(o.detail, "no spec.json");
        let code = finish(&dir.path().join("absent"), not_started(1, "x".into()));
        assert_eq!(code, EXIT_SHIM_ERROR);
    }
}
