#![allow(unsafe_code)]
//! Writing to a peer that may be gone without dying of `SIGPIPE`.
//!
//! The CLI puts `SIGPIPE` back to its default so `tessera jobs | head` ends quietly, as `ls`
//! does. But its writes to the daemon's socket must not kill it when the daemon has closed the
//! connection (a refusal of an oversized request, a restart): those must fail with `EPIPE` and
//! become an error that says what happened. std's plain socket writes are `send(2)` with
//! `MSG_NOSIGNAL`, but vectored ones (`writev(2)`, as hyper's client makes) raise `SIGPIPE`; a [`SigpipeBlocked`] guard blocks it on the calling thread while it lives (a signal
//! raised by a write is sent to the thread that wrote) and discards one that was raised, so those
//! writes return `EPIPE` instead of ending the process. Other threads are not affected.

use std::ptr;

/// `SIGPIPE` blocked on this thread until dropped (also on a panic); one it raised meanwhile is
/// discarded then. Keep it on the thread that made it (it is neither `Send` nor `Sync`).
#[derive(Debug)]
pub struct SigpipeBlocked {
    set: libc::sigset_t,
    old: libc::sigset_t,
    _thread_bound: std::marker::PhantomData<*const ()>,
}

impl SigpipeBlocked {
    /// Blocks `SIGPIPE` on the calling thread.
    pub fn new() -> SigpipeBlocked {
        // SAFETY: sigset_t is plain data; an all-zero value is a valid (if unspecified) set,
        // and sigemptyset initialises it before use.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` and `old` are valid, exclusively borrowed sigset_t values on our stack;
        // sigemptyset/sigaddset only write them, and pthread_sigmask changes only this thread's
        // mask (writing the previous one into `old`). None can fail for SIGPIPE and SIG_BLOCK.
        unsafe {
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGPIPE);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        }
        SigpipeBlocked { set, old, _thread_bound: std::marker::PhantomData }
    }
}

impl Default for SigpipeBlocked {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for SigpipeBlocked {
    fn drop(&mut self) {
        let now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: sigtimedwait with a zero timeout takes a pending SIGPIPE (the set holds only
        // that signal) or returns -1 at once; the info pointer may be null. pthread_sigmask
        // restores this thread's previous mask from `old`, a valid sigset_t we own.
        unsafe {
            while libc::sigtimedwait(&self.set, ptr::null_mut(), &now) == libc::SIGPIPE {}
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, ptr::null_mut());
        }
    }
}
