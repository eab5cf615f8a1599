//! `without_sigpipe`: a write to a closed socket returns EPIPE even where SIGPIPE would end the
//! process (its own test binary: a failure kills the process, which fails the test).

use std::io::Write as _;
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
    let err = tessera_host::without_sigpipe(|| ours.write_all(b"hello")).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
    // Nothing is left pending to end the process once SIGPIPE is unblocked again.
    std::thread::sleep(std::time::Duration::from_millis(50));
    let again = tessera_host::without_sigpipe(|| ours.write_all(b"again")).unwrap_err();
    assert_eq!(again.kind(), std::io::ErrorKind::BrokenPipe);
}
