//! The per-job supervisor: the body of the hidden `tessera shim --job-dir DIR` subcommand.
//!
//! [`run_shim`] installs its signal handlers, claims the job (creates `shim.pid`, see
//! [`crate::claim`]), reads `spec.json`, sets up the job's cgroup ([`crate::cgroup`]), starts
//! every rank, supervises them and writes `status.json`. It must run on the main thread of a
//! process that starts no other threads: ranks get `PR_SET_PDEATHSIG`, which fires when the
//! *thread* that forked them exits.
//!
//! **Claiming.** A shim that finds `shim.pid` already there (the daemon wrote `abandoned`, having
//! given up waiting for it) starts nothing, writes one line to `shim.log` and exits with
//! [`EXIT_ABANDONED`]; nothing else is written.
//!
//! **Starting a rank.** `std::process::Command` with the user's environment plus the rank's
//! (nothing of the shim's own), stdin `/dev/null`, stdout/stderr pipes read by the shim
//! (`output`: logs in the output directory, appended to, created `0600` and owned by
//! the job's user when the shim switches users, capped per run), and a `pre_exec` hook running
//! [`crate::syscalls::apply_child_setup`]: `setsid`, into the job's cgroups, CPU affinity,
//! `MPOL_BIND`, `setgroups`/`setgid`/`setuid` (only when the spec's uid/gid differ from the
//! shim's, which then must be root), `PR_SET_PDEATHSIG(SIGKILL)`, `chdir` to the job's cwd as
//! the user. The binding is planned first ([`crate::binding`]), within the job's cpuset when it
//! has one.
//!
//! **Waiting.** A loop whose wait is a `poll(2)` on the ranks' output pipes with a [`POLL`]
//! timeout: copy what is readable, `try_wait` (`waitpid(pid, WNOHANG)`) on each rank still
//! running, then the stop conditions. Signals only set atomics (see
//! `sys::prepare_shim_signals`), so nothing runs in a handler and no `SIGCHLD` or self-pipe
//! juggling is needed; the price is up to one poll interval of latency. The shim resets
//! `SIGCHLD` to its default on start, so an ignored `SIGCHLD` inherited from the daemon cannot
//! make the kernel reap ranks behind its back.
//!
//! **Stopping.** The first of these decides the outcome: a rank exits non-zero or by a signal
//! (`failed`, or `oom_killed` when the OOM killer did it), a rank cannot start (`failed`),
//! `SIGTERM`/`SIGINT` to the shim (a stop: `stop.json` says why, which signal and what grace;
//! without it a cancel with `SIGTERM` and the spec's grace), the time limit (`timed_out`). The
//! shim then sends the stop's signal (`SIGTERM` otherwise) to every rank's process group, and
//! `SIGKILL` once the grace has passed (or at once on a second `SIGTERM`/`SIGINT`). When every
//! rank has been reaped, a last `SIGKILL` goes to every rank's process group and then to
//! whatever is left in the job's cgroup, so nothing a rank started outlives the job (without a
//! cgroup, what left the group with its own `setsid` is out of reach). A group is only signalled
//! while its leader is unreaped, or when no other process has since taken the leader's pid
//! (checked by start time), so a recycled pid is never hit. Then the pipes are drained for at
//! most [`DRAIN`], the OOM counters read and the cgroup removed.
//!
//! **Exit code.** [`EXIT_SUCCEEDED`] when the job succeeded, [`EXIT_NOT_SUCCEEDED`] when it ended
//! otherwise (`status.json` written), [`EXIT_SHIM_ERROR`] when the shim could not claim the job
//! or write `status.json`, [`EXIT_ABANDONED`] when the job was not its to run.

use std::ffi::CString;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::binding::{Allowed, RankBinding, plan_binding};
use crate::cgroup::{JobCgroup, OomReport, cgroup_support};
use crate::claim::{Claim, try_claim};
use crate::logs::INDEX_FILE;
use crate::output::Output;
use crate::procfs;
use crate::spec::{JobSpec, StopReason, StopRequest};
use crate::status::{
    JobState, LogStream, Outcome, RANKS_FILE, RankOutcome, RankProc, RankTable, SHIM_LOG, SPEC_FILE, STATUS_FILE,
    STOP_FILE, log_path, open_index, open_log, read_json, write_json,
};
use crate::sys::{self, LinuxSyscalls};
use crate::syscalls::{ChildPlan, CpuMask, NodeMask, Syscalls, switch_needed};
use tessera_host::{format_cpulist, now_ms};

/// The longest the shim waits for output or anything else before it looks at its ranks,
/// signals and clock again.
pub const POLL: Duration = Duration::from_millis(10);

/// How long the shim keeps reading the ranks' pipes after the job has ended (processes that
/// escaped every kill may hold them open).
pub const DRAIN: Duration = Duration::from_millis(300);

/// Exit code: the job succeeded.
pub const EXIT_SUCCEEDED: i32 = 0;
/// Exit code: the job ended otherwise; `status.json` says how.
pub const EXIT_NOT_SUCCEEDED: i32 = 1;
/// Exit code: the shim could not claim the job or could not write `status.json`.
pub const EXIT_SHIM_ERROR: i32 = 2;
/// Exit code: the job was not this shim's to run (`shim.pid` said `abandoned`, or named
/// another shim); nothing was started and nothing but one line of `shim.log` written.
pub const EXIT_ABANDONED: i32 = 3;

/// One line to the shim's stderr (`shim.log`); a failed write (a full disk, a closed stderr)
/// is ignored rather than a panic.
fn say(msg: &str) {
    crate::diag(format_args!("tessera-shim[{}]: {msg}", std::process::id()));
}

/// Runs the shim for the job in `job_dir` and returns the shim's exit code (see the module
/// docs).
pub fn run_shim(job_dir: &Path) -> i32 {
    let started_ms = now_ms();
    let signals = sys::prepare_shim_signals();
    let me = std::process::id();
    match try_claim(job_dir, Claim::Shim { pid: me }) {
        Ok(Claim::Shim { pid }) if pid == me => {}
        Ok(Claim::Abandoned) => {
            say(&format!(
                "the job in {} was abandoned before this shim claimed it; nothing started",
                job_dir.display()
            ));
            return EXIT_ABANDONED;
        }
        Ok(Claim::Shim { pid }) => {
            say(&format!("the job in {} was claimed by shim pid {pid}; nothing started", job_dir.display()));
            return EXIT_ABANDONED;
        }
        Err(e) => {
            say(&format!("cannot claim the job: {e}"));
            return EXIT_SHIM_ERROR;
        }
    }
    if let Err(e) = signals {
        return finish(job_dir, not_started(started_ms, format!("the shim cannot install its signal handlers: {e}")));
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
    let name = format!("job {} run {}", spec.job_id, spec.run);
    say(&format!("{name}: starting {} rank(s)", spec.ranks.len()));
    let outcome = supervise(job_dir, &spec, started_ms);
    say(&format!("{name}: {}: {}", outcome.state.as_str(), outcome.detail));
    finish(job_dir, outcome)
}

/// A standby shim: started ahead of time by the daemon's [`Launcher`](crate::launch::Launcher),
/// it waits for one line on stdin naming a job directory, then moves its output to that job's
/// `shim.log`, works in the directory (which is how [`inspect`](crate::launch::inspect) knows
/// it) and runs [`run_shim`] there (which claims the job first). Starting a job then costs a
/// pipe write instead of a fork and exec. End of input (the daemon went away) ends it quietly
/// with 0.
pub fn run_standby_shim() -> i32 {
    use std::io::BufRead as _;
    use std::os::unix::ffi::OsStringExt as _;
    // The path's raw bytes (a job directory need not be UTF-8), ended by a newline.
    let mut line = Vec::new();
    if std::io::stdin().lock().read_until(b'\n', &mut line).is_err() {
        return 0;
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    if line.is_empty() {
        return 0;
    }
    let job_dir = PathBuf::from(std::ffi::OsString::from_vec(line));
    let log_path = job_dir.join(SHIM_LOG);
    match open_log(&log_path, None) {
        Ok(log) => {
            if let Err(e) = sys::redirect_output(&log) {
                say(&format!("cannot send output to {}: {e}", log_path.display()));
            }
        }
        Err(e) => say(&format!("cannot open {}: {e}", log_path.display())),
    }
    if let Err(e) = std::env::set_current_dir(&job_dir) {
        // Not claimed: the daemon gives the job up when it sees this shim gone.
        say(&format!("cannot enter the job directory {}: {e}; nothing started", job_dir.display()));
        return EXIT_SHIM_ERROR;
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
        stop: None,
        output_truncated: false,
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

/// Sets up what the ranks need around them (cgroup, output directory), then runs the job.
fn supervise(job_dir: &Path, spec: &JobSpec, started_ms: u64) -> Outcome {
    let mut notes = Vec::new();
    let cgroup = match &spec.isolation {
        None => None,
        Some(iso) => match JobCgroup::create(&cgroup_support(), iso, spec.job_id) {
            Ok((cg, more)) => {
                notes.extend(more);
                Some(cg)
            }
            Err(e) => return not_started(started_ms, e.to_string()),
        },
    };
    let log_dir = spec.log_dir(job_dir);
    if spec.output_dir.is_some()
        && let Err(e) = create_output_dir(&log_dir)
    {
        notes.push(format!("cannot create the output directory {}: {e}", log_dir.display()));
    }
    Supervisor::new(&LinuxSyscalls, job_dir, log_dir, spec, started_ms, cgroup, notes).run()
}

/// Creates the output directory when it is missing: `0711` when root (the job's user may
/// reach its own logs, not list the directory), `0700` otherwise.
fn create_output_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if dir.is_dir() {
        return Ok(());
    }
    let mode = if tessera_host::effective_uid() == 0 { 0o711 } else { 0o700 };
    std::fs::DirBuilder::new().recursive(true).mode(mode).create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
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
    Failed {
        rank: u32,
        detail: String,
    },
    /// `SIGTERM`/`SIGINT` to the shim (`via`), with the request from `stop.json`.
    Stopped {
        request: StopRequest,
        via: i32,
    },
    TimedOut,
}

/// The stop under way: the first signal and when it went out.
#[derive(Debug, Clone, Copy)]
struct Stopping {
    signal: i32,
    grace: Duration,
    at: Instant,
    /// The shim's stop-signal count then: one more means "kill now".
    stops_then: u32,
    kill_sent: bool,
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
    log_dir: PathBuf,
    spec: &'a JobSpec,
    started_ms: u64,
    ranks: Vec<RankRun>,
    notes: Vec<String>,
    output: Output,
    cgroup: Option<JobCgroup>,
}

impl<'a> Supervisor<'a> {
    fn new(
        sys: &'a dyn Syscalls,
        job_dir: &'a Path,
        log_dir: PathBuf,
        spec: &'a JobSpec,
        started_ms: u64,
        cgroup: Option<JobCgroup>,
        mut notes: Vec<String>,
    ) -> Self {
        let (mut allowed, more) = Allowed::here();
        notes.extend(more);
        // Within a cpuset the ranks get its CPUs and nodes when they join it: bind inside it.
        if let Some((cpus, mems)) = cgroup.as_ref().map(JobCgroup::cpuset) {
            if let Some(cpus) = cpus {
                allowed.cpus = cpus.clone();
            }
            if let Some(mems) = mems {
                allowed.mems = mems.clone();
            }
        }
        let ranks = spec
            .ranks
            .iter()
            .map(|r| {
                let binding = plan_binding(r, &allowed);
                notes.extend(binding.notes.iter().cloned());
                RankRun { rank: r.rank, binding, child: None, proc: None, code: None, signal: None }
            })
            .collect();
        let output = Output::new(spec.output_limit_bytes);
        Supervisor { sys, job_dir, log_dir, spec, started_ms, ranks, notes, output, cgroup }
    }

    fn run(mut self) -> Outcome {
        let start = Instant::now();
        let mut trigger = self.start_ranks();
        if self.ranks.iter().all(|r| r.proc.is_none()) {
            self.write_rank_table();
        }

        let deadline = self.spec.time_limit_ms.and_then(|ms| start.checked_add(Duration::from_millis(ms)));
        let mut stopping: Option<Stopping> = None;
        loop {
            self.reap(&mut trigger);
            if self.ranks.iter().all(|r| r.child.is_none()) {
                break;
            }
            let (stops, first_sig) = sys::stop_requests();
            let now = Instant::now();
            if trigger.is_none() {
                if stops > 0 {
                    trigger = Some(self.stop_trigger(first_sig));
                } else if deadline.is_some_and(|d| now >= d) {
                    trigger = Some(Trigger::TimedOut);
                }
            }
            match (&trigger, &mut stopping) {
                (Some(t), None) => {
                    let (signal, grace) = self.first_signal(t);
                    self.signal_groups(signal);
                    let kill_sent = signal == libc::SIGKILL;
                    stopping = Some(Stopping { signal, grace, at: now, stops_then: stops, kill_sent });
                }
                (Some(_), Some(s)) if !s.kill_sent => {
                    let grace_over = s.at.checked_add(s.grace).is_some_and(|end| now >= end);
                    if grace_over || stops > s.stops_then {
                        self.signal_groups(libc::SIGKILL);
                        s.kill_sent = true;
                    }
                }
                _ => {}
            }
            self.output.pump(POLL);
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
        if stopping.is_none() {
            for rank in leftovers {
                self.notes.push(format!("rank {rank}: killed processes it left in its process group"));
            }
        }
        // And whatever left the group but not the cgroup.
        if let Some(cg) = &self.cgroup {
            let killed = cg.kill_all();
            if !killed.is_empty() && stopping.is_none() {
                let list = killed.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
                self.notes.push(format!("killed processes left in the job's cgroup: {list}"));
            }
        }
        self.output.drain(DRAIN);
        let mut oom = OomReport::default();
        if let Some(cg) = &self.cgroup {
            oom = cg.oom();
            if let Err(e) = cg.cleanup() {
                self.notes.push(format!("cannot remove the job's cgroup: {e}"));
            }
        }
        self.outcome(trigger, stopping, oom)
    }

    /// The trigger for a stop signal: the request in `stop.json`, or a plain cancel.
    fn stop_trigger(&mut self, via: i32) -> Trigger {
        let cancel = StopRequest {
            reason: StopReason::Cancel,
            signal: libc::SIGTERM,
            grace_ms: self.spec.kill_grace_ms,
            detail: String::new(),
        };
        let request = match read_json::<StopRequest>(&self.job_dir.join(STOP_FILE), "stop request") {
            Ok(Some(r)) => match r.check() {
                Ok(()) => r,
                Err(why) => {
                    self.notes.push(format!("{STOP_FILE}: {why}; SIGTERM sent instead"));
                    StopRequest { signal: libc::SIGTERM, ..r }
                }
            },
            Ok(None) => cancel,
            Err(e) => {
                self.notes.push(format!("{e}; stopped as a plain cancel"));
                cancel
            }
        };
        Trigger::Stopped { request, via }
    }

    /// The first signal to the ranks and the grace before `SIGKILL`.
    fn first_signal(&self, trigger: &Trigger) -> (i32, Duration) {
        match trigger {
            Trigger::Stopped { request, .. } => (request.signal, Duration::from_millis(request.grace_ms)),
            _ => (libc::SIGTERM, Duration::from_millis(self.spec.kill_grace_ms)),
        }
    }

    /// Starts the ranks in order; stops at the first that cannot start (or at a stop request).
    fn start_ranks(&mut self) -> Option<Trigger> {
        let spec = self.spec;
        let creds = match switch_needed(spec.uid, spec.gid, &spec.groups) {
            Ok(creds) => creds,
            Err(e) => {
                let e = crate::ExecError::CannotSwitchUser { job_id: spec.job_id, uid: e.uid, euid: e.euid };
                return Some(Trigger::Failed { rank: spec.ranks[0].rank, detail: e.to_string() });
            }
        };
        let owner = creds.as_ref().map(|c| (c.uid, c.gid));
        let Ok(cwd) = CString::new(spec.cwd.as_os_str().as_encoded_bytes()) else {
            return Some(Trigger::Failed { rank: spec.ranks[0].rank, detail: "cwd contains a NUL byte".into() });
        };
        let procs = self.cgroup.as_ref().map(JobCgroup::procs_files).unwrap_or_default();
        let Ok(cgroups) =
            procs.iter().map(|p| CString::new(p.as_os_str().as_encoded_bytes())).collect::<Result<Vec<_>, _>>()
        else {
            return Some(Trigger::Failed {
                rank: spec.ranks[0].rank,
                detail: "a cgroup path contains a NUL byte".into(),
            });
        };
        let index_path = self.log_dir.join(INDEX_FILE);
        self.output.keep_order(open_index(&index_path, owner), index_path);
        let parent_pid = std::process::id();
        // `self.ranks` was built from `spec.ranks`, one for one and in order.
        for (i, rank_spec) in spec.ranks.iter().enumerate() {
            let rank = rank_spec.rank;
            let (stops, first_sig) = sys::stop_requests();
            if stops > 0 {
                return Some(self.stop_trigger(first_sig));
            }
            let binding = &self.ranks[i].binding;
            let plan = ChildPlan {
                cpus: binding.cpus.as_ref().map(CpuMask::from_ids),
                mem: binding.mem_node.map(NodeMask::single),
                creds: creds.clone(),
                cwd: cwd.clone(),
                parent_pid,
                cgroups: cgroups.clone(),
            };
            match self.spawn_rank(rank, &rank_spec.env, owner, plan) {
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
        &mut self,
        rank: u32,
        rank_env: &[(String, String)],
        owner: Option<(u32, u32)>,
        plan: ChildPlan,
    ) -> Result<Child, String> {
        let spec = self.spec;
        let pipe_err = |e: io::Error| format!("rank {rank}: cannot create an output pipe: {e}");
        let (out_r, out_w) = io::pipe().map_err(pipe_err)?;
        let (err_r, err_w) = io::pipe().map_err(pipe_err)?;
        let out_path = log_path(&self.log_dir, rank, LogStream::Stdout);
        let err_path = log_path(&self.log_dir, rank, LogStream::Stderr);
        // A pipe that cannot be read without blocking would let a rank's output stall the shim;
        // dropping it would break the rank's writes (SIGPIPE): the rank does not start instead.
        let nonblocking_err = |e: io::Error| format!("rank {rank}: cannot make an output pipe non-blocking: {e}");
        let out_file = open_log(&out_path, owner);
        self.output.add(rank, LogStream::Stdout, out_r, out_file, out_path).map_err(nonblocking_err)?;
        let err_file = open_log(&err_path, owner);
        let err_index = self.output.add(rank, LogStream::Stderr, err_r, err_file, err_path).map_err(nonblocking_err)?;
        let mut cmd = Command::new(&spec.argv[0]);
        cmd.args(&spec.argv[1..])
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .envs(rank_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out_w)
            .stderr(err_w);
        let spawned = sys::spawn_rank(&mut cmd, plan);
        // Our copies of the write ends go now, so the pipes end when the rank's do.
        drop(cmd);
        spawned.map_err(|e| {
            let diag = self.output.read_now(err_index);
            let step = String::from_utf8_lossy(&diag)
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix("tessera: rank setup failed at ").map(str::to_owned));
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

    /// Whether rank `rank` died the way an OOM kill looks: `SIGKILL`, or a shell's 137 for a
    /// child killed so.
    fn killed_like_oom(&self, rank: u32) -> bool {
        self.ranks
            .iter()
            .find(|r| r.rank == rank)
            .is_some_and(|r| r.signal == Some(libc::SIGKILL) || r.code == Some(128 + libc::SIGKILL))
    }

    fn outcome(mut self, trigger: Option<Trigger>, stopping: Option<Stopping>, oom: OomReport) -> Outcome {
        let facts = EndFacts {
            started: self.ranks.iter().filter(|r| r.proc.is_some()).count(),
            stopping: stopping.map(|s| (s.signal, s.grace.as_millis(), s.kill_sent)),
            oom_victim: match &trigger {
                Some(Trigger::Failed { rank, .. }) => self.killed_like_oom(*rank) && oom.blames_sigkill(),
                _ => false,
            },
            memory_limit: self.cgroup.as_ref().and_then(JobCgroup::memory_limit),
            time_limit_ms: self.spec.time_limit_ms.unwrap_or(0),
        };
        let (state, failed_rank, detail, stop) = verdict(trigger, &facts);
        if state != JobState::OomKilled
            && let Some(n) = oom.kills.filter(|&n| n > 0)
        {
            self.notes.push(format!("the OOM killer killed {n} process(es) in the job's cgroup"));
        }
        let (output_notes, output_truncated) = self.output.finish();
        self.notes.extend(output_notes);
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
            stop,
            output_truncated,
        }
    }
}

/// What, besides the trigger, decides how a job is reported.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct EndFacts {
    /// Ranks that were started.
    started: usize,
    /// The stop under way: first signal, grace in ms, whether SIGKILL followed.
    stopping: Option<(i32, u128, bool)>,
    /// Whether the failing rank died of SIGKILL while the OOM counters say the OOM killer
    /// struck in the job's cgroup.
    oom_victim: bool,
    memory_limit: Option<u64>,
    time_limit_ms: u64,
}

/// How a job ended (pure): its state, the failing rank, the one-sentence detail, and the stop
/// request to echo.
fn verdict(trigger: Option<Trigger>, facts: &EndFacts) -> (JobState, Option<u32>, String, Option<StopRequest>) {
    let stopping = match facts.stopping {
        Some((libc::SIGKILL, _, _)) => "; SIGKILL to the ranks".to_owned(),
        Some((sig, grace_ms, true)) => {
            format!("; {} to the ranks, then SIGKILL after the {grace_ms} ms grace period", signal_name(sig))
        }
        Some((sig, _, false)) => format!("; {} to the ranks", signal_name(sig)),
        None => String::new(),
    };
    match trigger {
        None => (JobState::Succeeded, None, format!("all {} rank(s) exited with code 0", facts.started), None),
        Some(Trigger::Failed { rank, .. }) if facts.oom_victim => {
            let limit = match facts.memory_limit {
                Some(bytes) => format!("the job's memory limit of {bytes} bytes"),
                None => "the job's memory limit".to_owned(),
            };
            let detail = format!("rank {rank} was killed by the OOM killer at {limit}{stopping}");
            (JobState::OomKilled, Some(rank), detail, None)
        }
        Some(Trigger::Failed { rank, detail }) => (JobState::Failed, Some(rank), format!("{detail}{stopping}"), None),
        Some(Trigger::Stopped { request, via }) => {
            let (state, what) = match request.reason {
                StopReason::Cancel => (JobState::Cancelled, "cancelled"),
                StopReason::Preempt => (JobState::Preempted, "preempted"),
                StopReason::Health => (JobState::Cancelled, "stopped for health"),
            };
            let why = if request.detail.is_empty() {
                format!("{what} ({} to the shim)", signal_name(via))
            } else {
                format!("{what}: {}", request.detail)
            };
            (state, None, format!("{why}{stopping}"), Some(request))
        }
        Some(Trigger::TimedOut) => {
            (JobState::TimedOut, None, format!("time limit of {} ms reached{stopping}", facts.time_limit_ms), None)
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
    fn verdicts() {
        let req =
            |reason, detail: &str| StopRequest { reason, signal: libc::SIGUSR1, grace_ms: 50, detail: detail.into() };
        let failed = || Some(Trigger::Failed { rank: 2, detail: "rank 2 was killed by SIGKILL".into() });
        let term = Some((libc::SIGTERM, 500, false));
        let usr1_then_kill = Some((libc::SIGUSR1, 50, true));
        let base = EndFacts { started: 3, time_limit_ms: 900, ..Default::default() };
        // (trigger, facts, state, failed rank, detail, echoed request)
        type Case = (Option<Trigger>, EndFacts, JobState, Option<u32>, &'static str, Option<StopRequest>);
        let cases: Vec<Case> = vec![
            (None, base.clone(), JobState::Succeeded, None, "all 3 rank(s) exited with code 0", None),
            (
                failed(),
                EndFacts { stopping: term, ..base.clone() },
                JobState::Failed,
                Some(2),
                "rank 2 was killed by SIGKILL; SIGTERM to the ranks",
                None,
            ),
            (
                failed(),
                EndFacts { stopping: term, oom_victim: true, memory_limit: Some(1 << 20), ..base.clone() },
                JobState::OomKilled,
                Some(2),
                "rank 2 was killed by the OOM killer at the job's memory limit of 1048576 bytes; SIGTERM to the ranks",
                None,
            ),
            (
                Some(Trigger::Stopped { request: req(StopReason::Preempt, "for job 9"), via: libc::SIGTERM }),
                EndFacts { stopping: usr1_then_kill, ..base.clone() },
                JobState::Preempted,
                None,
                "preempted: for job 9; SIGUSR1 to the ranks, then SIGKILL after the 50 ms grace period",
                Some(req(StopReason::Preempt, "for job 9")),
            ),
            (
                Some(Trigger::Stopped { request: req(StopReason::Health, ""), via: libc::SIGINT }),
                EndFacts { stopping: Some((libc::SIGKILL, 0, true)), ..base.clone() },
                JobState::Cancelled,
                None,
                "stopped for health (SIGINT to the shim); SIGKILL to the ranks",
                Some(req(StopReason::Health, "")),
            ),
            (
                Some(Trigger::Stopped { request: req(StopReason::Cancel, ""), via: libc::SIGTERM }),
                base.clone(),
                JobState::Cancelled,
                None,
                "cancelled (SIGTERM to the shim)",
                Some(req(StopReason::Cancel, "")),
            ),
            (
                Some(Trigger::TimedOut),
                EndFacts { stopping: term, ..base.clone() },
                JobState::TimedOut,
                None,
                "time limit of 900 ms reached; SIGTERM to the ranks",
                None,
            ),
        ];
        for (trigger, facts, state, rank, detail, stop) in cases {
            let got = verdict(trigger.clone(), &facts);
            assert_eq!(got, (state, rank, detail.to_owned(), stop), "{trigger:?} {facts:?}");
        }
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
