//! `SigpipeBlocked`: a write to a closed socket returns EPIPE even where SIGPIPE would end the
//! process (its own test binary: a failure kills the process, which fails the test).

use std::io::{IoSlice, Write as _};
use std::os::unix::net::UnixStream;

#[test]
fn a_write_to_a_closed_socket_fails_instead_of_killing_the_process() {
    #[allow(unsafe_code)]
    // SAFETY: SIG_DFL installs no handler; this test binary has this one test.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    drop(theirs);
    // A vectored write, as hyper's client makes: `writev(2)` raises SIGPIPE (std's plain
    // `write` on a socket is a `send` with MSG_NOSIGNAL, which would prove nothing).
    let write = |stream: &mut UnixStream, bytes: &[u8]| {
        let _blocked = tessera_host::signals::SigpipeBlocked::new();
        stream.write_vectored(&[IoSlice::new(bytes)])
    };
    let err = write(&mut ours, b"hello").unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
    // Nothing is left pending to end the process once SIGPIPE is unblocked again.
    std::thread::sleep(std::time::Duration::from_millis(50));
    let again = write(&mut ours, b"again").unwrap_err();
    assert_eq!(again.kind(), std::io::ErrorKind::BrokenPipe);
}
