//! The CLI restores `SIGPIPE`'s default (so `tessera jobs | head` ends quietly); the client's
//! writes to the daemon must still fail with an error when the daemon has closed the connection,
//! not end the process. Its own test binary: a failure kills the process, which fails the test.

use std::os::unix::net::UnixListener;

use tessera_daemon::client::{Client, ClientError, Endpoint};

#[test]
fn a_request_to_a_daemon_that_hung_up_is_an_error_not_a_signal() {
    #[allow(unsafe_code)]
    // SAFETY: SIG_DFL installs no handler; this test binary has this one test.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let listener = UnixListener::bind(&path).unwrap();
    // A "daemon" that takes each connection and hangs up without reading.
    std::thread::spawn(move || {
        for c in listener.incoming() {
            drop(c);
        }
    });
    let client = Client::new(Endpoint::Unix(path));
    // Far more than a socket buffer holds: the write is still going when the peer is gone.
    let body = vec![0u8; 4 << 20];
    for _ in 0..2 {
        let r: Result<serde_json::Value, ClientError> = client.call("POST", "/v1/jobs", Some(&body));
        let err = r.unwrap_err();
        assert!(matches!(err, ClientError::Closed { .. } | ClientError::Io { .. }), "{err:?}");
    }
}
