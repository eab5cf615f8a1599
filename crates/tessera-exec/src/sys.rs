#![allow(unsafe_code)]
//! Every raw libc call the executor makes, in one place.
//!
//! * [`LinuxSyscalls`], the real [`Syscalls`]: `close_range`, `setsid`, `sched_setaffinity` and
//!   `set_mempolicy` (raw `syscall(2)`, with the mask length the mask has), `setgroups`,
//!   `setgid`, `setuid`, `prctl(PR_SET_PDEATHSIG)`, `getppid`, `chdir`, joining a cgroup
//!   (`open`/`write`/`close` of `cgroup.procs`), `write(2)`, `kill`, `killpg`.
//! * The one `pre_exec` hook ([`install_child_setup`], used by [`spawn_rank`],
//!   [`spawn_session_leader`] and the MPS control program): it runs
//!   [`apply_setup`](crate::syscalls::apply_setup), so every child marks inherited descriptors
//!   close-on-exec first. The closure only reads data built before the fork and calls
//!   `LinuxSyscalls`, so it allocates nothing and takes no lock, as the child of a (possibly
//!   multi-threaded) process must.
//! * The shim's signal handling ([`prepare_shim_signals`]): two `extern "C"` handlers that
//!   store into atomics and nothing else.
//! * `sched_getaffinity` of the calling process ([`own_affinity`]).
//! * The shim's output loop: `poll(2)` on the ranks' pipes ([`poll_readable`]) and `O_NONBLOCK`
//!   on their read ends ([`set_nonblocking`]).
//! * The cgroup v2 device filter: `bpf(BPF_PROG_LOAD)` and `bpf(BPF_PROG_ATTACH)`
//!   ([`load_device_filter`], [`attach_device_filter`]).

use std::ffi::CStr;
use std::io;
use std::mem::{MaybeUninit, size_of, size_of_val};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::time::Duration;

use libc::{c_int, c_ulong};

use crate::syscalls::{
    ChildPlan, ChildSetup, CpuMask, Errno, NodeMask, Syscalls, apply_setup, checked_pid, format_pid,
};

fn last_errno() -> Errno {
    // `last_os_error` reads errno; it does not allocate.
    Errno(io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))
}

fn check(rc: c_int) -> Result<(), Errno> {
    if rc < 0 { Err(last_errno()) } else { Ok(()) }
}

/// The real syscalls.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinuxSyscalls;

impl Syscalls for LinuxSyscalls {
    fn mark_fds_cloexec(&self, from: u32) -> Result<(), Errno> {
        // SAFETY: close_range only changes descriptor flags; integer arguments only.
        let rc = unsafe {
            libc::syscall(libc::SYS_close_range, from as libc::c_uint, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC)
        };
        if rc < 0 { Err(last_errno()) } else { Ok(()) }
    }

    fn setsid(&self) -> Result<(), Errno> {
        // SAFETY: setsid takes no arguments and touches no memory of ours.
        let rc = unsafe { libc::setsid() };
        check(rc)
    }

    fn set_affinity(&self, mask: &CpuMask) -> Result<(), Errno> {
        let words = mask.words();
        // SAFETY: the pointer and byte length describe the live slice `words`, which the kernel
        // only reads; pid 0 is the calling thread (the only thread of a forked child).
        let rc =
            unsafe { libc::syscall(libc::SYS_sched_setaffinity, 0 as libc::pid_t, size_of_val(words), words.as_ptr()) };
        if rc < 0 { Err(last_errno()) } else { Ok(()) }
    }

    fn set_mempolicy_bind(&self, nodes: &NodeMask) -> Result<(), Errno> {
        let words = nodes.words();
        // SAFETY: `maxnode` is at most one more than the number of bits in `words` (see
        // `NodeMask::maxnode`; the kernel decrements it first), so the kernel reads only inside
        // the live slice, and only reads it.
        let rc = unsafe {
            libc::syscall(libc::SYS_set_mempolicy, libc::MPOL_BIND, words.as_ptr(), nodes.maxnode() as c_ulong)
        };
        if rc < 0 { Err(last_errno()) } else { Ok(()) }
    }

    fn setgroups(&self, groups: &[u32]) -> Result<(), Errno> {
        // SAFETY: pointer and count describe the live slice; gid_t is u32 on Linux.
        let rc = unsafe { libc::setgroups(groups.len(), groups.as_ptr()) };
        check(rc)
    }

    fn setgid(&self, gid: u32) -> Result<(), Errno> {
        // SAFETY: plain integer argument. Used in a forked child, which has one thread, so
        // glibc's cross-thread set*id broadcast has nothing to do (std's own `uid()` does this).
        let rc = unsafe { libc::setgid(gid) };
        check(rc)
    }

    fn setuid(&self, uid: u32) -> Result<(), Errno> {
        // SAFETY: as for setgid.
        let rc = unsafe { libc::setuid(uid) };
        check(rc)
    }

    fn set_parent_death_signal(&self, sig: i32) -> Result<(), Errno> {
        // SAFETY: PR_SET_PDEATHSIG takes the signal number as an integer; the other arguments
        // are unused and passed as 0.
        let rc =
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as c_ulong, 0 as c_ulong, 0 as c_ulong, 0 as c_ulong) };
        check(rc)
    }

    fn parent_pid(&self) -> u32 {
        // SAFETY: getppid takes no arguments and cannot fail.
        let pid = unsafe { libc::getppid() };
        u32::try_from(pid).unwrap_or(0)
    }

    fn chdir(&self, dir: &CStr) -> Result<(), Errno> {
        // SAFETY: `dir` is a valid NUL-terminated string that outlives the call.
        let rc = unsafe { libc::chdir(dir.as_ptr()) };
        check(rc)
    }

    fn join_cgroup(&self, procs: &CStr) -> Result<(), Errno> {
        // SAFETY: getpid takes no arguments and cannot fail.
        let pid = unsafe { libc::getpid() };
        let mut buf = [0u8; 10];
        let digits = format_pid(u32::try_from(pid).unwrap_or(0), &mut buf);
        // SAFETY: `procs` is a valid NUL-terminated string that outlives the call; the flags
        // are constants; no memory of ours is written.
        let fd = unsafe { libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(last_errno());
        }
        // SAFETY: `fd` was just opened by us; pointer and length describe the live `digits`.
        let written = unsafe { libc::write(fd, digits.as_ptr().cast(), digits.len()) };
        let write_err = if written < 0 { Some(last_errno()) } else { None };
        // SAFETY: closes the descriptor opened above, exactly once.
        unsafe { libc::close(fd) };
        match write_err {
            Some(errno) => Err(errno),
            None if written as usize != digits.len() => Err(Errno(libc::EIO)),
            None => Ok(()),
        }
    }

    fn write_diag(&self, msg: &[u8]) {
        // SAFETY: pointer and length describe the live slice; a failed write is ignored (there
        // is nowhere else to report it).
        let _ = unsafe { libc::write(libc::STDERR_FILENO, msg.as_ptr().cast(), msg.len()) };
    }

    fn kill(&self, pid: u32, sig: i32) -> Result<(), Errno> {
        let pid = checked_pid(pid)?;
        // SAFETY: `pid` names one process (never 0, -1 or 1: see `checked_pid`).
        let rc = unsafe { libc::kill(pid, sig) };
        check(rc)
    }

    fn killpg(&self, pgid: u32, sig: i32) -> Result<(), Errno> {
        let pgid = checked_pid(pgid)?;
        // SAFETY: `pgid` names one process group (never 0, -1 or 1).
        let rc = unsafe { libc::killpg(pgid, sig) };
        check(rc)
    }

    fn pid_alive(&self, pid: u32) -> bool {
        let Ok(pid) = checked_pid(pid) else { return false };
        // SAFETY: signal 0 only checks that the process exists and may be signalled.
        let rc = unsafe { libc::kill(pid, 0) };
        rc == 0 || last_errno() == Errno(libc::EPERM)
    }
}

/// Makes `cmd`'s child run `setup` between `fork` and `exec` ([`apply_setup`]): the crate's one
/// `pre_exec` hook, so no spawn path skips marking inherited descriptors close-on-exec. A setup
/// failure makes `spawn` return that step's errno (and the step is written to the child's
/// stderr). Call it once per `Command`.
pub(crate) fn install_child_setup(cmd: &mut Command, setup: ChildSetup) {
    let hook = move || apply_setup(&LinuxSyscalls, &setup).map_err(|e| e.errno.into_io());
    // SAFETY: the hook runs in the forked child before exec, where only async-signal-safe work
    // is allowed. It only reads `setup`, whose buffers were all allocated before the fork, and
    // makes raw syscalls through `LinuxSyscalls` (no allocation, no locks); building the
    // `io::Error` from an errno does not allocate either.
    unsafe { cmd.pre_exec(hook) };
}

/// Spawns a rank: `plan` is applied by [`apply_child_setup`](crate::syscalls::apply_child_setup)
/// between `fork` and `exec`.
pub(crate) fn spawn_rank(cmd: &mut Command, plan: ChildPlan) -> io::Result<Child> {
    install_child_setup(cmd, ChildSetup::Rank(plan));
    cmd.spawn()
}

/// Spawns a process as the leader of a new session (so it survives its parent and receives no
/// terminal signals meant for the parent's session).
pub(crate) fn spawn_session_leader(cmd: &mut Command) -> io::Result<Child> {
    install_child_setup(cmd, ChildSetup::Helper { new_session: true, creds: None });
    cmd.spawn()
}

/// Points the process's stdout and stderr at `file` (a standby shim taking up a job: its output
/// goes to that job's `shim.log` from here on).
pub(crate) fn redirect_output(file: &std::fs::File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    for target in [libc::STDOUT_FILENO, libc::STDERR_FILENO] {
        // SAFETY: dup2 on two valid descriptors (`fd` is open for the borrow's lifetime, the
        // targets are the standard ones); no memory is touched.
        if unsafe { libc::dup2(fd, target) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The calling thread's CPU affinity, read with a mask that grows until the kernel accepts it.
pub(crate) fn own_affinity() -> io::Result<CpuMask> {
    let mut len = 16usize; // 1024 CPUs, glibc's cpu_set_t
    loop {
        let mut words = vec![0 as c_ulong; len];
        // SAFETY: the pointer and byte length describe `words`, which the kernel writes into
        // (at most that many bytes).
        let rc = unsafe {
            libc::syscall(libc::SYS_sched_getaffinity, 0 as libc::pid_t, size_of_val(&words[..]), words.as_mut_ptr())
        };
        if rc >= 0 {
            return Ok(CpuMask::from_words(words));
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EINVAL) && len < 1024 {
            len *= 2;
            continue;
        }
        return Err(err);
    }
}

/// Sets `O_NONBLOCK` on `fd` (the read end of a rank's pipe: the shim must never block on it).
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    // SAFETY: F_GETFL/F_SETFL on a descriptor that is open for the borrow's lifetime; integer
    // arguments only.
    let rc = unsafe {
        let flags = libc::fcntl(raw, libc::F_GETFL);
        if flags < 0 { flags } else { libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) }
    };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// `poll(2)` for input on `fds`, waiting at most `timeout`. Returns, per descriptor, whether it
/// is worth a read (readable, hung up or in error). An interrupted wait (a signal) reads as
/// "nothing ready". With no descriptors it just sleeps.
pub(crate) fn poll_readable(fds: &[RawFd], timeout: Duration) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> =
        fds.iter().map(|&fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
    let ms = c_int::try_from(timeout.as_millis()).unwrap_or(c_int::MAX);
    // SAFETY: the pointer and count describe the live vector `pfds`, which the kernel writes
    // `revents` into.
    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        return if err.raw_os_error() == Some(libc::EINTR) { Ok(vec![false; fds.len()]) } else { Err(err) };
    }
    Ok(pfds.iter().map(|p| p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0).collect())
}

const BPF_PROG_LOAD: c_int = 5;
const BPF_PROG_ATTACH: c_int = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 1 << 1;

/// The leading fields of `union bpf_attr` for `BPF_PROG_LOAD` (the kernel zero-fills the rest).
#[repr(C, align(8))]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for `BPF_PROG_ATTACH`, every field spelled out so that no padding byte (the
/// kernel reads all `size` bytes; newer kernels give `relative_fd` a meaning) is left undefined.
#[repr(C, align(8))]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
    relative_fd: u32,
    expected_revision: u64,
}

// Neither attribute struct has padding: every byte the kernel reads is a field we set.
const _: () = assert!(size_of::<ProgLoadAttr>() == 72 && size_of::<ProgAttachAttr>() == 32);

/// Loads a `BPF_PROG_TYPE_CGROUP_DEVICE` program (`insns`: encoded `struct bpf_insn`s). On
/// failure it loads again with a 64 KiB log buffer and returns the verifier's log with the
/// error.
pub(crate) fn load_device_filter(insns: &[[u8; 8]]) -> Result<OwnedFd, (io::Error, String)> {
    let license = c"Apache-2.0";
    let mut name = [0u8; 16];
    name[..11].copy_from_slice(b"tessera_dev");
    let load = |log: Option<&mut Vec<u8>>| -> io::Result<OwnedFd> {
        let (log_level, log_size, log_buf) = match log {
            Some(buf) => (1, buf.len() as u32, buf.as_mut_ptr() as u64),
            None => (0, 0, 0),
        };
        let attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level,
            log_size,
            log_buf,
            kern_version: 0,
            prog_flags: 0,
            prog_name: name,
            prog_ifindex: 0,
            expected_attach_type: 0,
        };
        // SAFETY: `attr` is a fully initialised `bpf_attr` prefix of the size passed; the
        // pointers in it (instructions, license, log buffer) describe live memory of the stated
        // lengths, which the kernel reads (and, for the log, writes at most `log_size` bytes).
        let fd = unsafe {
            libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, &attr as *const ProgLoadAttr, size_of::<ProgLoadAttr>())
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: on success bpf(2) returns a new descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
    };
    match load(None) {
        Ok(fd) => Ok(fd),
        Err(first) => {
            let mut log = vec![0u8; 64 * 1024];
            let again = load(Some(&mut log));
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]).into_owned();
            match again {
                Ok(fd) => Ok(fd),
                Err(_) => Err((first, text)),
            }
        }
    }
}

/// Attaches a loaded device filter to the cgroup open at `cgroup` (`BPF_CGROUP_DEVICE`,
/// `BPF_F_ALLOW_MULTI`, so filters of parent cgroups still apply). The attachment keeps the
/// program alive after its descriptor is closed, for as long as the cgroup exists.
pub(crate) fn attach_device_filter(cgroup: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    let attr = ProgAttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        replace_bpf_fd: 0,
        relative_fd: 0,
        expected_revision: 0,
    };
    // SAFETY: `attr` is a fully initialised `bpf_attr` prefix of the size passed, read by the
    // kernel; both descriptors are open for the borrows' lifetimes.
    let rc = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_PROG_ATTACH, &attr as *const ProgAttachAttr, size_of::<ProgAttachAttr>())
    };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);
static STOP_COUNT: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_stop(sig: c_int) {
    let _ = STOP_SIGNAL.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
    STOP_COUNT.fetch_add(1, Ordering::SeqCst);
}

extern "C" fn on_hangup(_sig: c_int) {}

fn set_handler(sig: c_int, handler: libc::sighandler_t) -> io::Result<()> {
    let mut sa = MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: a zeroed sigaction is a valid value (empty mask, no flags, SIG_DFL); we fill the
    // handler and mask before passing it to the kernel, which only reads it.
    let rc = unsafe {
        let p = sa.as_mut_ptr();
        (*p).sa_sigaction = handler;
        (*p).sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut (*p).sa_mask);
        libc::sigaction(sig, p, std::ptr::null_mut())
    };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// The shim's signal set-up, done first thing:
///
/// * every catchable signal but `SIGPIPE` back to its default action, and nothing blocked, so
///   no disposition the daemon had (an ignored `SIGCHLD` would make `waitpid` lose the ranks'
///   statuses; an ignored `SIGINT` would be inherited by the ranks) leaks into the job;
/// * `SIGTERM` and `SIGINT` record a stop request ([`stop_requests`]);
/// * `SIGHUP` is caught and dropped (the shim has no terminal; a stray hang-up must not kill
///   the supervisor). Caught signals revert to default in the ranks at `exec`.
pub(crate) fn prepare_shim_signals() -> io::Result<()> {
    for sig in 1..32 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP || sig == libc::SIGPIPE {
            continue;
        }
        // Some numbers are reserved by the C library (none below 32 on glibc); ignore refusals.
        let _ = set_handler(sig, libc::SIG_DFL);
    }
    set_handler(libc::SIGTERM, on_stop as extern "C" fn(c_int) as libc::sighandler_t)?;
    set_handler(libc::SIGINT, on_stop as extern "C" fn(c_int) as libc::sighandler_t)?;
    set_handler(libc::SIGHUP, on_hangup as extern "C" fn(c_int) as libc::sighandler_t)?;
    let mut set = MaybeUninit::<libc::sigset_t>::zeroed();
    // SAFETY: sigemptyset initialises the set; sigprocmask reads it. Single-threaded shim.
    let rc = unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        libc::sigprocmask(libc::SIG_SETMASK, set.as_ptr(), std::ptr::null_mut())
    };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// How many stop signals (`SIGTERM`/`SIGINT`) the shim has received, and the first one (0 if
/// none).
pub(crate) fn stop_requests() -> (u32, i32) {
    (STOP_COUNT.load(Ordering::SeqCst), STOP_SIGNAL.load(Ordering::SeqCst))
}

/// A duplicate of `fd` numbered `min` or above *without* `FD_CLOEXEC`, as a library that opens
/// files carelessly would leave one (std never does): for tests of the children's descriptor
/// hygiene.
#[cfg(test)]
pub(crate) fn dup_inheritable(fd: BorrowedFd<'_>, min: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD on a descriptor open for the borrow's lifetime; integer arguments only.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD, min) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: on success F_DUPFD returns a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_affinity_matches_proc_status() {
        let mask = own_affinity().unwrap();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let listed = crate::binding::status_field(&status, "Cpus_allowed_list").unwrap();
        // The test thread may have been bound differently from the process only if someone did
        // so explicitly; nobody does here.
        assert_eq!(tessera_host::format_cpulist(&mask.ids()), listed);
    }

    #[test]
    fn poll_sees_a_readable_pipe_and_sleeps_without_fds() {
        use std::io::Write;
        let (reader, mut writer) = std::io::pipe().unwrap();
        set_nonblocking(std::os::fd::AsFd::as_fd(&reader)).unwrap();
        let fd = reader.as_raw_fd();
        assert_eq!(poll_readable(&[fd], Duration::from_millis(1)).unwrap(), vec![false]);
        writer.write_all(b"x").unwrap();
        assert_eq!(poll_readable(&[fd], Duration::from_millis(1)).unwrap(), vec![true]);
        let t0 = std::time::Instant::now();
        assert!(poll_readable(&[], Duration::from_millis(20)).unwrap().is_empty());
        assert!(t0.elapsed() >= Duration::from_millis(15));
        // A non-blocking read of an empty pipe says WouldBlock instead of waiting.
        let mut r = &reader;
        let mut buf = [0u8; 4];
        assert_eq!(std::io::Read::read(&mut r, &mut buf).unwrap(), 1);
        assert_eq!(std::io::Read::read(&mut r, &mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
    }

    /// The kernel's verifier judges the device filter: a correct one loads; a broken one (it
    /// returns without setting r0) is refused, and the error carries the verifier's log.
    #[test]
    fn the_verifier_log_comes_back_with_a_refusal() {
        if tessera_host::effective_uid() != 0 {
            eprintln!("skipped the_verifier_log_comes_back_with_a_refusal: bpf(2) needs root");
            return;
        }
        use crate::devfilter::{Insn, program};
        use crate::spec::{DeviceAccess, DeviceNumber};
        let access = DeviceAccess { guarded_majors: vec![195], allow: vec![DeviceNumber { major: 195, minor: 0 }] };
        let good: Vec<[u8; 8]> = program(&access).unwrap().iter().map(|i| i.encode()).collect();
        assert!(load_device_filter(&good).is_ok());
        let (err, log) = load_device_filter(&[Insn::Exit.encode()]).unwrap_err();
        assert!(matches!(err.raw_os_error(), Some(libc::EACCES | libc::EINVAL)), "{err}");
        assert!(log.contains("R0"), "verifier log: {log:?}");
    }

    #[test]
    fn pid_alive_sees_self_and_refuses_special_pids() {
        assert!(LinuxSyscalls.pid_alive(std::process::id()));
        assert!(!LinuxSyscalls.pid_alive(0));
        assert!(!LinuxSyscalls.pid_alive(u32::MAX));
        assert_eq!(LinuxSyscalls.kill(0, 0), Err(Errno(libc::ESRCH)));
        assert_eq!(LinuxSyscalls.killpg(1, 0), Err(Errno(libc::ESRCH)));
    }
}
