#![allow(unsafe_code)]
//! The binary's syscalls: putting `SIGPIPE` back to its default action, and a process's CPU
//! affinity (the Slurm task prolog binds the task it runs before).
//!
//! Rust starts every program with `SIGPIPE` ignored, so a write to a closed pipe returns `EPIPE`
//! and `println!` panics ("failed printing to stdout: Broken pipe"). The client commands
//! (`tessera mig …`, `jobs`, `logs -f`, …) want what `ls | head` does: end, quietly, when the
//! reader is gone. `serve` and the supervisor (`shim`) keep it ignored: they must outlive a peer
//! that closes a socket or a pipe.

/// `SIGPIPE` back to `SIG_DFL`: the process ends at its next write to a pipe nobody reads.
pub fn default_sigpipe() {
    // SAFETY: signal(2) with SIG_DFL installs no handler (no code runs on delivery), touches no
    // memory of ours, and is called on the main thread before any other thread exists. Its only
    // failure (EINVAL for a bad signal number) cannot happen for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// `SIGPIPE` ignored again, as Rust starts every program: a write to a closed pipe or socket
/// returns `EPIPE`.
pub fn ignore_sigpipe() {
    // SAFETY: as for `default_sigpipe`: SIG_IGN installs no handler, and no other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// CPUs in the kernel's `cpu_set_t` layout: bit `n % 64` of word `n / 64` (1024 CPUs, glibc's
/// `CPU_SETSIZE`).
type CpuWords = [u64; 16];

/// The CPUs process `pid` may run on (`sched_getaffinity`).
pub fn affinity(pid: u32) -> std::io::Result<std::collections::BTreeSet<u32>> {
    let mut words: CpuWords = [0; 16];
    let pid = libc::pid_t::try_from(pid).map_err(|_| std::io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: `words` is a writable buffer of exactly the size passed, laid out as the kernel's
    // cpu_set_t (an array of unsigned longs); the kernel writes at most that many bytes.
    let rc = unsafe { libc::sched_getaffinity(pid, std::mem::size_of::<CpuWords>(), words.as_mut_ptr().cast()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut out = std::collections::BTreeSet::new();
    for (w, word) in words.iter().enumerate() {
        for bit in 0..64 {
            if word & (1 << bit) != 0 {
                out.insert(u32::try_from(w * 64 + bit).unwrap_or(u32::MAX));
            }
        }
    }
    Ok(out)
}

/// Binds process `pid` to `cpus` (`sched_setaffinity`; a process may bind another of its user).
pub fn set_affinity(pid: u32, cpus: &std::collections::BTreeSet<u32>) -> std::io::Result<()> {
    let mut words: CpuWords = [0; 16];
    for &c in cpus {
        let (w, bit) = (c as usize / 64, c % 64);
        if w >= words.len() {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        words[w] |= 1 << bit;
    }
    let pid = libc::pid_t::try_from(pid).map_err(|_| std::io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: `words` is a readable buffer of exactly the size passed, laid out as cpu_set_t;
    // the kernel only reads it.
    let rc = unsafe { libc::sched_setaffinity(pid, std::mem::size_of::<CpuWords>(), words.as_ptr().cast()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
