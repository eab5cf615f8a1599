#![allow(unsafe_code)]
//! The binary's one syscall: putting `SIGPIPE` back to its default action.
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
