//! The syscall seam (after youki's `Syscall` trait): every call that changes a process's
//! scheduling, memory policy, session or identity, or signals a process, goes through
//! [`Syscalls`]. [`crate::sys::LinuxSyscalls`] makes the real calls; [`RecordingSyscalls`]
//! records them so tests can assert the exact masks and their order without root or NUMA
//! hardware.
//!
//! [`apply_setup`] is what every child of the crate runs between `fork` and `exec`: for a rank
//! the whole [`apply_child_setup`], for a helper (a shim, the MPS control program) descriptor
//! hygiene, its own session if asked, and the identity switch if any. It is generic over the
//! seam, so the production path (`pre_exec` with `LinuxSyscalls`) and the unit tests (with
//! `RecordingSyscalls`) run the same sequence. [`switch_needed`] decides whether a child needs
//! an identity switch at all. Everything it touches is built before the fork
//! ([`ChildPlan`]): it allocates nothing, and `LinuxSyscalls`' methods are plain syscalls, which
//! keeps it async-signal-safe.

use std::collections::BTreeSet;
use std::ffi::{CStr, CString};
use std::fmt;
use std::io;
use std::sync::Mutex;

use libc::c_ulong;

/// An `errno` value. `Copy` and allocation-free, so it can leave a `pre_exec` hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    /// As an `io::Error` (allocation-free: the OS-error representation is packed).
    pub fn into_io(self) -> io::Error {
        io::Error::from_raw_os_error(self.0)
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.into_io())
    }
}

const WORD_BITS: u32 = c_ulong::BITS;

fn words_for(ids: &BTreeSet<u32>) -> Vec<c_ulong> {
    let len = ids.iter().next_back().map_or(1, |&max| (max / WORD_BITS + 1) as usize);
    let mut words = vec![0 as c_ulong; len];
    for &id in ids {
        words[(id / WORD_BITS) as usize] |= 1 << (id % WORD_BITS);
    }
    words
}

fn ids_of(words: &[c_ulong]) -> BTreeSet<u32> {
    let mut ids = BTreeSet::new();
    for (i, &word) in words.iter().enumerate() {
        for bit in 0..WORD_BITS {
            if word & (1 << bit) != 0 {
                ids.insert(i as u32 * WORD_BITS + bit);
            }
        }
    }
    ids
}

/// A CPU set in the kernel's `sched_setaffinity` layout: bit `n % 64` of word `n / 64` is CPU
/// `n`. Only as many words as the highest CPU needs (at least one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuMask {
    words: Vec<c_ulong>,
}

impl CpuMask {
    pub fn from_ids(ids: &BTreeSet<u32>) -> Self {
        CpuMask { words: words_for(ids) }
    }
    pub fn from_words(words: Vec<c_ulong>) -> Self {
        CpuMask { words }
    }
    pub fn words(&self) -> &[c_ulong] {
        &self.words
    }
    pub fn ids(&self) -> BTreeSet<u32> {
        ids_of(&self.words)
    }
}

/// A NUMA node set in the kernel's `set_mempolicy` layout (same bit order as [`CpuMask`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeMask {
    words: Vec<c_ulong>,
}

impl NodeMask {
    pub fn single(node: u32) -> Self {
        NodeMask { words: words_for(&BTreeSet::from([node])) }
    }
    pub fn words(&self) -> &[c_ulong] {
        &self.words
    }
    /// The `maxnode` argument: one more than the number of bits, because the kernel's
    /// `get_nodes()` decrements it before reading the mask (libnuma passes `size + 1` too).
    pub fn maxnode(&self) -> u64 {
        self.words.len() as u64 * u64::from(WORD_BITS) + 1
    }
    pub fn ids(&self) -> BTreeSet<u32> {
        ids_of(&self.words)
    }
}

/// The identity a child switches to: `setgroups(groups)`, `setgid(gid)`, `setuid(uid)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the user's groups from the group database, or just `gid`).
    pub groups: Vec<u32>,
}

impl Credentials {
    /// A user's identity: their supplementary groups as given, or just `[gid]` when `groups`
    /// is empty (the one place that rule lives).
    pub fn for_user(uid: u32, gid: u32, groups: &[u32]) -> Credentials {
        let groups = if groups.is_empty() { vec![gid] } else { groups.to_vec() };
        Credentials { uid, gid, groups }
    }
}

/// A switch to another identity that this process may not make: it is not root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot run as uid {uid} gid {gid}: this process runs as uid {euid}, not root")]
pub(crate) struct CannotSwitch {
    pub uid: u32,
    pub gid: u32,
    pub euid: u32,
}

/// Whether running as `uid`/`gid` (with `groups`, see [`Credentials::for_user`]) needs an
/// identity switch, for a process running as `euid`/`egid`: `None` when it already is that uid
/// and gid; the credentials to switch to when it is root; refused otherwise. (Pure; see
/// [`switch_needed`].)
pub(crate) fn switch_from(
    (euid, egid): (u32, u32),
    uid: u32,
    gid: u32,
    groups: &[u32],
) -> Result<Option<Credentials>, CannotSwitch> {
    if uid == euid && gid == egid {
        return Ok(None);
    }
    if euid != 0 {
        return Err(CannotSwitch { uid, gid, euid });
    }
    Ok(Some(Credentials::for_user(uid, gid, groups)))
}

/// [`switch_from`] for this process: the one rule for whether a child (rank, MPS control
/// daemon or command) runs as `uid`/`gid` with a switch, without one, or not at all.
pub(crate) fn switch_needed(uid: u32, gid: u32, groups: &[u32]) -> Result<Option<Credentials>, CannotSwitch> {
    switch_from((tessera_host::effective_uid(), tessera_host::effective_gid()), uid, gid, groups)
}

/// Everything a rank does between `fork` and `exec`, built before the fork.
#[derive(Debug, Clone)]
pub struct ChildPlan {
    /// CPU binding; `None` inherits the shim's.
    pub cpus: Option<CpuMask>,
    /// `MPOL_BIND` node set; `None` leaves the default policy (see [`crate::binding`] for when).
    pub mem: Option<NodeMask>,
    /// Identity to switch to; `None` keeps the shim's.
    pub creds: Option<Credentials>,
    /// Working directory, entered after the identity switch (so as the user).
    pub cwd: CString,
    /// The shim's pid: after asking for `SIGKILL` on parent death the child checks that its
    /// parent is still this process (the parent could have died just before the `prctl`).
    pub parent_pid: u32,
    /// The `cgroup.procs` files of the job's cgroups (one per hierarchy used), which the child
    /// writes its own pid into; empty when the job has no cgroup.
    pub cgroups: Vec<CString>,
}

/// What a child of this crate does between `fork` and `exec`. Every spawn goes through
/// [`apply_setup`] (installed by `sys`'s one `pre_exec` hook), so none skips the descriptor
/// hygiene.
#[derive(Debug, Clone)]
pub enum ChildSetup {
    /// A rank: the whole sequence of [`apply_child_setup`].
    Rank(ChildPlan),
    /// A helper process (a shim, the MPS control program and its commands): descriptors from 3
    /// up marked close-on-exec, then `setsid` when `new_session`, then the identity switch when
    /// `creds` is given.
    Helper { new_session: bool, creds: Option<Credentials> },
}

/// Which step of [`apply_setup`] failed, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildSetupError {
    /// The syscall: "setsid", "cgroup.procs", "sched_setaffinity", "set_mempolicy", "setgroups", "setgid",
    /// "setuid", "prctl(PR_SET_PDEATHSIG)", "getppid", "chdir".
    pub step: &'static str,
    pub errno: Errno,
}

/// The syscalls the executor makes. All take `&self` and return `errno` on failure.
///
/// Methods used in a `pre_exec` hook (everything but `kill`, `killpg`, `pid_alive`) must not
/// allocate or lock in the real implementation.
pub trait Syscalls: Send + Sync {
    /// `close_range(from, ~0, CLOSE_RANGE_CLOEXEC)`: every descriptor from `from` up closes at
    /// `exec`, so descriptors an embedding program opened without `O_CLOEXEC` do not leak into
    /// jobs. (Marking rather than closing keeps std's own exec-error pipe working.)
    fn mark_fds_cloexec(&self, from: u32) -> Result<(), Errno>;
    /// `setsid()`: a new session and process group led by the caller.
    fn setsid(&self) -> Result<(), Errno>;
    /// `sched_setaffinity(0, mask)`.
    fn set_affinity(&self, mask: &CpuMask) -> Result<(), Errno>;
    /// `set_mempolicy(MPOL_BIND, nodes, nodes.maxnode())`.
    fn set_mempolicy_bind(&self, nodes: &NodeMask) -> Result<(), Errno>;
    fn setgroups(&self, groups: &[u32]) -> Result<(), Errno>;
    fn setgid(&self, gid: u32) -> Result<(), Errno>;
    fn setuid(&self, uid: u32) -> Result<(), Errno>;
    /// `prctl(PR_SET_PDEATHSIG, sig)`.
    fn set_parent_death_signal(&self, sig: i32) -> Result<(), Errno>;
    /// `getppid()`.
    fn parent_pid(&self) -> u32;
    fn chdir(&self, dir: &CStr) -> Result<(), Errno>;
    /// Moves the calling process into a cgroup: writes its own pid (`getpid`, formatted with
    /// [`format_pid`] into a stack buffer) to the `cgroup.procs` file `procs`.
    fn join_cgroup(&self, procs: &CStr) -> Result<(), Errno>;
    /// Writes a diagnostic to fd 2 (best effort; in a rank that is its `stderr` log).
    fn write_diag(&self, msg: &[u8]);
    /// `kill(pid, sig)`; refuses pids 0 and 1 and pids that are not positive `pid_t`s.
    fn kill(&self, pid: u32, sig: i32) -> Result<(), Errno>;
    /// `killpg(pgid, sig)`; same refusals as `kill`.
    fn killpg(&self, pgid: u32, sig: i32) -> Result<(), Errno>;
    /// Whether a process with this pid exists (`kill(pid, 0)` succeeds or fails with `EPERM`).
    fn pid_alive(&self, pid: u32) -> bool;
}

/// The pid as a `pid_t` that names exactly one process: never 0 (own group), never negative
/// (`-1` is "every process"), never 1 (init).
pub fn checked_pid(pid: u32) -> Result<i32, Errno> {
    match i32::try_from(pid) {
        Ok(p) if p > 1 => Ok(p),
        _ => Err(Errno(libc::ESRCH)),
    }
}

/// `pid` in decimal, written into the end of `buf` (no allocation); returns the digits.
pub fn format_pid(pid: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut at = buf.len();
    let mut n = pid;
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[at..]
}

/// A rank's setup between `fork` and `exec`, in this order:
///
/// 0. descriptors from 3 up marked close-on-exec (best effort: kernels before 5.11 refuse, and
///    the shim opens nothing without `O_CLOEXEC` itself);
/// 1. `setsid` (own session and process group, so `killpg(pid)` reaches the whole rank);
/// 2. into the job's cgroups (its pid to each `cgroup.procs`): before the binding, because
///    joining a cpuset resets the affinity to the cpuset's CPUs, and before the identity
///    switch, because only root may move a process there;
/// 3. `sched_setaffinity` and 4. `set_mempolicy(MPOL_BIND)`, while still privileged;
/// 5. `setgroups`, `setgid`, `setuid` (group first: after `setuid` it would be refused);
/// 6. `prctl(PR_SET_PDEATHSIG, SIGKILL)` after the identity switch (a credential change
///    clears it), then a check that the parent is still the shim;
/// 7. `chdir` as the user.
///
/// On failure it writes `tessera: rank setup failed at <step>` to fd 2 (the rank's stderr pipe,
/// which the shim copies to its log) and returns the step; the `exec` does not happen.
pub fn apply_child_setup<S: Syscalls + ?Sized>(sys: &S, plan: &ChildPlan) -> Result<(), ChildSetupError> {
    let result = setup_steps(sys, plan);
    if let Err(e) = result {
        report(sys, b"tessera: rank setup failed at ", e);
    }
    result
}

/// What every child runs between `fork` and `exec` ([`ChildSetup`]): a rank's whole sequence,
/// or a helper's (descriptors from 3 up close-on-exec, best effort as for a rank; `setsid`;
/// `setgroups`, `setgid`, `setuid`). A helper's failure is written to fd 2 as `tessera: process
/// setup failed at <step>`.
pub fn apply_setup<S: Syscalls + ?Sized>(sys: &S, setup: &ChildSetup) -> Result<(), ChildSetupError> {
    match setup {
        ChildSetup::Rank(plan) => apply_child_setup(sys, plan),
        ChildSetup::Helper { new_session, creds } => {
            let result = helper_steps(sys, *new_session, creds.as_ref());
            if let Err(e) = result {
                report(sys, b"tessera: process setup failed at ", e);
            }
            result
        }
    }
}

fn report<S: Syscalls + ?Sized>(sys: &S, prefix: &[u8], e: ChildSetupError) {
    sys.write_diag(prefix);
    sys.write_diag(e.step.as_bytes());
    sys.write_diag(b"\n");
}

fn at(step: &'static str) -> impl Fn(Errno) -> ChildSetupError {
    move |errno| ChildSetupError { step, errno }
}

/// Step 0 of every child: descriptors from 3 up close at `exec` (best effort: kernels before
/// 5.11 refuse, and this crate opens nothing without `O_CLOEXEC` itself).
fn close_inherited_fds<S: Syscalls + ?Sized>(sys: &S) {
    let _ = sys.mark_fds_cloexec(3);
}

/// `setgroups`, `setgid`, `setuid`, in that order (after `setuid` the others are refused).
fn switch_identity<S: Syscalls + ?Sized>(sys: &S, creds: &Credentials) -> Result<(), ChildSetupError> {
    sys.setgroups(&creds.groups).map_err(at("setgroups"))?;
    sys.setgid(creds.gid).map_err(at("setgid"))?;
    sys.setuid(creds.uid).map_err(at("setuid"))
}

fn helper_steps<S: Syscalls + ?Sized>(
    sys: &S,
    new_session: bool,
    creds: Option<&Credentials>,
) -> Result<(), ChildSetupError> {
    close_inherited_fds(sys);
    if new_session {
        sys.setsid().map_err(at("setsid"))?;
    }
    if let Some(creds) = creds {
        switch_identity(sys, creds)?;
    }
    Ok(())
}

fn setup_steps<S: Syscalls + ?Sized>(sys: &S, plan: &ChildPlan) -> Result<(), ChildSetupError> {
    close_inherited_fds(sys);
    sys.setsid().map_err(at("setsid"))?;
    for procs in &plan.cgroups {
        sys.join_cgroup(procs).map_err(at("cgroup.procs"))?;
    }
    if let Some(mask) = &plan.cpus {
        sys.set_affinity(mask).map_err(at("sched_setaffinity"))?;
    }
    if let Some(nodes) = &plan.mem {
        sys.set_mempolicy_bind(nodes).map_err(at("set_mempolicy"))?;
    }
    if let Some(creds) = &plan.creds {
        switch_identity(sys, creds)?;
    }
    sys.set_parent_death_signal(libc::SIGKILL).map_err(at("prctl(PR_SET_PDEATHSIG)"))?;
    if sys.parent_pid() != plan.parent_pid {
        return Err(ChildSetupError { step: "getppid", errno: Errno(libc::ESRCH) });
    }
    sys.chdir(&plan.cwd).map_err(at("chdir"))?;
    Ok(())
}

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    MarkFdsCloexec(u32),
    Setsid,
    SetAffinity(Vec<c_ulong>),
    SetMempolicyBind { mask: Vec<c_ulong>, maxnode: u64 },
    Setgroups(Vec<u32>),
    Setgid(u32),
    Setuid(u32),
    SetParentDeathSignal(i32),
    ParentPid,
    Chdir(String),
    JoinCgroup(String),
    Diag(String),
    Kill { pid: u32, sig: i32 },
    Killpg { pgid: u32, sig: i32 },
    PidAlive(u32),
}

/// A [`Syscalls`] that records every call and changes nothing. Calls succeed unless a failure
/// was injected with [`RecordingSyscalls::fail`]; `pid_alive` answers `false` (no process is
/// alive in a recording); `parent_pid` answers what [`RecordingSyscalls::new`] got.
#[derive(Debug, Default)]
pub struct RecordingSyscalls {
    calls: Mutex<Vec<Call>>,
    failures: Mutex<Vec<(&'static str, Errno)>>,
    parent_pid: u32,
}

impl RecordingSyscalls {
    pub fn new(parent_pid: u32) -> Self {
        RecordingSyscalls { parent_pid, ..Default::default() }
    }
    /// Makes every later call of `syscall` (a name as in [`ChildSetupError::step`], or "kill",
    /// "killpg") fail with `errno`.
    pub fn fail(&self, syscall: &'static str, errno: i32) {
        lock(&self.failures).push((syscall, Errno(errno)));
    }
    /// The calls so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.calls).clone()
    }
    fn record(&self, call: Call, name: &'static str) -> Result<(), Errno> {
        lock(&self.calls).push(call);
        match lock(&self.failures).iter().find(|(n, _)| *n == name) {
            Some(&(_, errno)) => Err(errno),
            None => Ok(()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Syscalls for RecordingSyscalls {
    fn mark_fds_cloexec(&self, from: u32) -> Result<(), Errno> {
        self.record(Call::MarkFdsCloexec(from), "close_range")
    }
    fn setsid(&self) -> Result<(), Errno> {
        self.record(Call::Setsid, "setsid")
    }
    fn set_affinity(&self, mask: &CpuMask) -> Result<(), Errno> {
        self.record(Call::SetAffinity(mask.words().to_vec()), "sched_setaffinity")
    }
    fn set_mempolicy_bind(&self, nodes: &NodeMask) -> Result<(), Errno> {
        self.record(Call::SetMempolicyBind { mask: nodes.words().to_vec(), maxnode: nodes.maxnode() }, "set_mempolicy")
    }
    fn setgroups(&self, groups: &[u32]) -> Result<(), Errno> {
        self.record(Call::Setgroups(groups.to_vec()), "setgroups")
    }
    fn setgid(&self, gid: u32) -> Result<(), Errno> {
        self.record(Call::Setgid(gid), "setgid")
    }
    fn setuid(&self, uid: u32) -> Result<(), Errno> {
        self.record(Call::Setuid(uid), "setuid")
    }
    fn set_parent_death_signal(&self, sig: i32) -> Result<(), Errno> {
        self.record(Call::SetParentDeathSignal(sig), "prctl(PR_SET_PDEATHSIG)")
    }
    fn parent_pid(&self) -> u32 {
        lock(&self.calls).push(Call::ParentPid);
        self.parent_pid
    }
    fn chdir(&self, dir: &CStr) -> Result<(), Errno> {
        self.record(Call::Chdir(dir.to_string_lossy().into_owned()), "chdir")
    }
    fn join_cgroup(&self, procs: &CStr) -> Result<(), Errno> {
        self.record(Call::JoinCgroup(procs.to_string_lossy().into_owned()), "cgroup.procs")
    }
    fn write_diag(&self, msg: &[u8]) {
        lock(&self.calls).push(Call::Diag(String::from_utf8_lossy(msg).into_owned()));
    }
    fn kill(&self, pid: u32, sig: i32) -> Result<(), Errno> {
        checked_pid(pid)?;
        self.record(Call::Kill { pid, sig }, "kill")
    }
    fn killpg(&self, pgid: u32, sig: i32) -> Result<(), Errno> {
        checked_pid(pgid)?;
        self.record(Call::Killpg { pgid, sig }, "killpg")
    }
    fn pid_alive(&self, pid: u32) -> bool {
        lock(&self.calls).push(Call::PidAlive(pid));
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(cpus: &[u32], node: Option<u32>, creds: Option<Credentials>) -> ChildPlan {
        ChildPlan {
            cpus: (!cpus.is_empty()).then(|| CpuMask::from_ids(&cpus.iter().copied().collect())),
            mem: node.map(NodeMask::single),
            creds,
            cwd: CString::new("/work").unwrap(),
            parent_pid: 4242,
            cgroups: Vec::new(),
        }
    }

    #[test]
    fn pids_format_without_allocating() {
        let mut buf = [0u8; 10];
        for (pid, text) in [(0, "0"), (7, "7"), (10, "10"), (4_194_304, "4194304"), (u32::MAX, "4294967295")] {
            assert_eq!(format_pid(pid, &mut buf), text.as_bytes());
        }
    }

    #[test]
    fn cgroups_are_joined_after_setsid_and_before_binding_and_identity() {
        let sys = RecordingSyscalls::new(4242);
        let creds = Credentials { uid: 1000, gid: 1000, groups: vec![1000] };
        let mut p = plan(&[1], None, Some(creds));
        p.cgroups = vec![
            CString::new("/sys/fs/cgroup/memory/t/j/cgroup.procs").unwrap(),
            CString::new("/sys/fs/cgroup/cpuset/t/j/cgroup.procs").unwrap(),
        ];
        apply_child_setup(&sys, &p).unwrap();
        let calls = sys.calls();
        assert_eq!(
            &calls[1..5],
            &[
                Call::Setsid,
                Call::JoinCgroup("/sys/fs/cgroup/memory/t/j/cgroup.procs".into()),
                Call::JoinCgroup("/sys/fs/cgroup/cpuset/t/j/cgroup.procs".into()),
                Call::SetAffinity(vec![0b10]),
            ]
        );

        // A refused join stops the rank before anything else.
        let sys = RecordingSyscalls::new(4242);
        sys.fail("cgroup.procs", libc::ENOSPC);
        let err = apply_child_setup(&sys, &p).unwrap_err();
        assert_eq!(err, ChildSetupError { step: "cgroup.procs", errno: Errno(libc::ENOSPC) });
        assert!(!sys.calls().iter().any(|c| matches!(c, Call::SetAffinity(_) | Call::Setuid(_))));
    }

    #[test]
    fn masks_have_the_kernel_layout() {
        let m = CpuMask::from_ids(&BTreeSet::from([0, 1, 2, 3, 8, 10, 11]));
        assert_eq!(m.words(), &[0b1101_0000_1111]);
        let m = CpuMask::from_ids(&BTreeSet::from([1, 64, 129]));
        assert_eq!(m.words(), &[0b10, 0b1, 0b10]);
        assert_eq!(m.ids(), BTreeSet::from([1, 64, 129]));
        assert_eq!(CpuMask::from_ids(&BTreeSet::new()).words(), &[0]);
        let n = NodeMask::single(0);
        assert_eq!((n.words(), n.maxnode()), (&[1][..], 65));
        let n = NodeMask::single(70);
        assert_eq!((n.words(), n.maxnode()), (&[0, 1 << 6][..], 129));
    }

    #[test]
    fn child_setup_order_and_exact_masks() {
        let sys = RecordingSyscalls::new(4242);
        let creds = Credentials { uid: 65534, gid: 65534, groups: vec![65534, 100] };
        apply_child_setup(&sys, &plan(&[2, 3, 65], Some(1), Some(creds))).unwrap();
        assert_eq!(
            sys.calls(),
            vec![
                Call::MarkFdsCloexec(3),
                Call::Setsid,
                Call::SetAffinity(vec![0b1100, 0b10]),
                Call::SetMempolicyBind { mask: vec![0b10], maxnode: 65 },
                Call::Setgroups(vec![65534, 100]),
                Call::Setgid(65534),
                Call::Setuid(65534),
                Call::SetParentDeathSignal(libc::SIGKILL),
                Call::ParentPid,
                Call::Chdir("/work".into()),
            ]
        );
    }

    #[test]
    fn child_setup_without_binding_or_switch() {
        let sys = RecordingSyscalls::new(4242);
        apply_child_setup(&sys, &plan(&[], None, None)).unwrap();
        assert_eq!(
            sys.calls(),
            vec![
                Call::MarkFdsCloexec(3),
                Call::Setsid,
                Call::SetParentDeathSignal(libc::SIGKILL),
                Call::ParentPid,
                Call::Chdir("/work".into())
            ]
        );
    }

    #[test]
    fn failing_mempolicy_stops_before_exec_and_says_where() {
        let sys = RecordingSyscalls::new(4242);
        sys.fail("set_mempolicy", libc::EINVAL);
        let err = apply_child_setup(&sys, &plan(&[0], Some(0), None)).unwrap_err();
        assert_eq!(err, ChildSetupError { step: "set_mempolicy", errno: Errno(libc::EINVAL) });
        let calls = sys.calls();
        assert!(!calls.iter().any(|c| matches!(c, Call::Chdir(_) | Call::Setuid(_))));
        let diag: String =
            calls.iter().filter_map(|c| if let Call::Diag(s) = c { Some(s.as_str()) } else { None }).collect();
        assert_eq!(diag, "tessera: rank setup failed at set_mempolicy\n");
    }

    #[test]
    fn failing_setgid_never_reaches_setuid() {
        let sys = RecordingSyscalls::new(4242);
        sys.fail("setgid", libc::EPERM);
        let creds = Credentials { uid: 1000, gid: 1000, groups: vec![1000] };
        let err = apply_child_setup(&sys, &plan(&[], None, Some(creds))).unwrap_err();
        assert_eq!(err.step, "setgid");
        assert!(!sys.calls().contains(&Call::Setuid(1000)));
    }

    #[test]
    fn an_old_kernel_without_close_range_is_not_fatal() {
        let sys = RecordingSyscalls::new(4242);
        sys.fail("close_range", libc::ENOSYS);
        apply_child_setup(&sys, &plan(&[], None, None)).unwrap();
    }

    #[test]
    fn orphaned_child_refuses_to_exec() {
        let sys = RecordingSyscalls::new(1);
        let err = apply_child_setup(&sys, &plan(&[], None, None)).unwrap_err();
        assert_eq!(err.step, "getppid");
    }

    /// Every helper (a shim, the MPS control program) gets the descriptor hygiene first, with
    /// or without a session or an identity switch.
    #[test]
    fn helpers_close_inherited_fds_then_switch() {
        let creds = Credentials::for_user(1000, 100, &[]);
        // (new session, identity, the calls)
        let cases = [
            (false, None, vec![Call::MarkFdsCloexec(3)]),
            (true, None, vec![Call::MarkFdsCloexec(3), Call::Setsid]),
            (
                false,
                Some(creds.clone()),
                vec![Call::MarkFdsCloexec(3), Call::Setgroups(vec![100]), Call::Setgid(100), Call::Setuid(1000)],
            ),
        ];
        for (new_session, creds, want) in cases {
            let sys = RecordingSyscalls::new(4242);
            apply_setup(&sys, &ChildSetup::Helper { new_session, creds: creds.clone() }).unwrap();
            assert_eq!(sys.calls(), want, "{new_session} {creds:?}");
        }
        // A refused switch stops before setuid and says where.
        let sys = RecordingSyscalls::new(4242);
        sys.fail("setgid", libc::EPERM);
        let err = apply_setup(&sys, &ChildSetup::Helper { new_session: false, creds: Some(creds) }).unwrap_err();
        assert_eq!(err, ChildSetupError { step: "setgid", errno: Errno(libc::EPERM) });
        assert!(!sys.calls().contains(&Call::Setuid(1000)));
        assert!(sys.calls().contains(&Call::Diag("setgid".into())));
        // An old kernel without close_range is no reason to refuse.
        let sys = RecordingSyscalls::new(4242);
        sys.fail("close_range", libc::ENOSYS);
        apply_setup(&sys, &ChildSetup::Helper { new_session: true, creds: None }).unwrap();
    }

    #[test]
    fn one_rule_for_switching_users() {
        assert_eq!(Credentials::for_user(5, 6, &[]).groups, vec![6]);
        assert_eq!(Credentials::for_user(5, 6, &[6, 7]).groups, vec![6, 7]);
        let root = (0, 0);
        // (this process, target uid, gid, groups, answer)
        type Case = ((u32, u32), u32, u32, Vec<u32>, Result<Option<Credentials>, CannotSwitch>);
        let cases: Vec<Case> = vec![
            (root, 0, 0, vec![], Ok(None)),
            (root, 0, 5, vec![], Ok(Some(Credentials { uid: 0, gid: 5, groups: vec![5] }))),
            (root, 1000, 1000, vec![1000, 27], Ok(Some(Credentials { uid: 1000, gid: 1000, groups: vec![1000, 27] }))),
            ((1000, 1000), 1000, 1000, vec![1000, 27], Ok(None)),
            ((1000, 1000), 1001, 1000, vec![], Err(CannotSwitch { uid: 1001, gid: 1000, euid: 1000 })),
            ((1000, 1000), 1000, 0, vec![], Err(CannotSwitch { uid: 1000, gid: 0, euid: 1000 })),
        ];
        for (me, uid, gid, groups, want) in cases {
            assert_eq!(switch_from(me, uid, gid, &groups), want, "{me:?} -> {uid}/{gid}");
        }
        let err = CannotSwitch { uid: 1, gid: 2, euid: 3 }.to_string();
        assert_eq!(err, "cannot run as uid 1 gid 2: this process runs as uid 3, not root");
    }

    #[test]
    fn kill_refuses_dangerous_pids() {
        let sys = RecordingSyscalls::new(1);
        for pid in [0, 1, u32::MAX, 1 << 31] {
            assert_eq!(sys.kill(pid, libc::SIGKILL), Err(Errno(libc::ESRCH)));
            assert_eq!(sys.killpg(pid, libc::SIGKILL), Err(Errno(libc::ESRCH)));
        }
        assert!(sys.calls().is_empty());
        sys.killpg(300, libc::SIGTERM).unwrap();
        assert_eq!(sys.calls(), vec![Call::Killpg { pgid: 300, sig: libc::SIGTERM }]);
    }
}
