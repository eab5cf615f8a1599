//! The daemon's HTTP/1.1 layer (`server::serve`) over a real Unix socket and TCP, spoken to in
//! raw bytes: every limit is answered with a JSON error (or a silent close where there is no
//! request to answer), keep-alive and `Expect: 100-continue` work, connections are limited per
//! peer, handlers see who calls, and shutdown lets a request in flight finish.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path as UrlPath};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde_json::{Value, json};
use tessera_daemon::http::{ErrorBody, HttpLimits, PeerInfo, json_error};

/// Small limits, so every one of them is quick to reach.
fn small_limits() -> HttpLimits {
    HttpLimits {
        max_connections_per_peer: 4,
        max_connections: 16,
        header_timeout_ms: 3_000,
        idle_timeout_ms: 3_000,
        body_timeout_ms: 3_000,
        write_timeout_ms: 3_000,
        max_header_bytes: 1024,
        max_uri_bytes: 256,
        max_body_bytes: 1024,
        shutdown_grace_ms: 3_000,
    }
}

async fn whoami(Extension(peer): Extension<PeerInfo>) -> axum::Json<Value> {
    axum::Json(match peer {
        PeerInfo::Unix { uid, gid, pid } => json!({"unix": {"uid": uid, "gid": gid, "pid": pid}}),
        PeerInfo::Tcp { addr } => json!({"tcp": addr.to_string()}),
    })
}

fn app() -> Router {
    Router::new()
        .route("/whoami", get(whoami))
        .route(
            "/echo",
            post(|body: Bytes| async move {
                axum::Json(json!({"len": body.len(), "body": String::from_utf8_lossy(&body)}))
            }),
        )
        .route(
            "/slow/{ms}",
            get(|UrlPath(ms): UrlPath<u64>| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                axum::Json(json!({"slept_ms": ms}))
            }),
        )
        .route("/teapot", get(|| async { StatusCode::IM_A_TEAPOT }))
        .route("/taken", get(|| async { json_error(StatusCode::CONFLICT, "conflict", "the name is taken") }))
}

/// A running `serve` on a temporary Unix socket and 127.0.0.1, stopped when dropped.
struct Server {
    dir: tempfile::TempDir,
    sock: PathBuf,
    tcp: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    returned: std::sync::mpsc::Receiver<Instant>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(limits: HttpLimits) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("t.sock");
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (returned_tx, returned) = std::sync::mpsc::channel();
        let sock2 = sock.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            rt.block_on(async move {
                let unix = tessera_daemon::server::bind_unix(&sock2).unwrap();
                let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(tcp.local_addr().unwrap()).unwrap();
                tessera_daemon::server::serve(app(), unix, Some(tcp), limits, async {
                    let _ = stop_rx.await;
                })
                .await
                .unwrap();
                let _ = returned_tx.send(Instant::now());
            });
        });
        let tcp = addr_rx.recv().unwrap();
        Server { dir, sock, tcp, stop: Some(stop), returned, thread: Some(thread) }
    }

    fn unix(&self) -> Client<UnixStream> {
        let s = UnixStream::connect(&self.sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Client(BufReader::new(s))
    }

    fn tcp(&self) -> Client<TcpStream> {
        let s = TcpStream::connect(self.tcp).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Client(BufReader::new(s))
    }

    /// Ask `serve` to stop; when it returned.
    fn stop(&mut self) -> Instant {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let at = self.returned.recv_timeout(Duration::from_secs(20)).expect("serve did not return");
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        at
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One response, as read off the wire.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?} {}", self.status, self.headers, String::from_utf8_lossy(&self.body))
    }
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {self:?}"))
    }

    /// The JSON error body, checking the content type.
    fn error(&self) -> ErrorBody {
        assert_eq!(self.header("content-type"), Some("application/json"), "{self:?}");
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not an error body ({e}): {self:?}"))
    }
}

/// A raw HTTP client on a std socket.
struct Client<S: Read + Write>(BufReader<S>);

impl<S: Read + Write> Client<S> {
    fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.0.get_mut().write_all(bytes.as_ref()).unwrap();
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.0.read_line(&mut line).unwrap();
        line
    }

    /// Read one response (`head`: to a HEAD request, so without a body).
    fn reply_to(&mut self, head: bool) -> Reply {
        let status_line = self.line();
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("status line {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let line = self.line();
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                break;
            }
            let (k, v) = line.split_once(':').unwrap_or_else(|| panic!("header line {line:?}"));
            headers.push((k.to_string(), v.trim().to_string()));
        }
        let mut reply = Reply { status, headers, body: Vec::new() };
        if !head {
            let len: usize = reply.header("content-length").expect("content-length").parse().unwrap();
            reply.body.resize(len, 0);
            self.0.read_exact(&mut reply.body).unwrap();
        }
        reply
    }

    fn reply(&mut self) -> Reply {
        self.reply_to(false)
    }

    /// Whether the server closes the connection, sending nothing more.
    fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        match self.0.read_to_end(&mut rest) {
            Ok(_) => rest.is_empty(),
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset && rest.is_empty(),
        }
    }

    /// Send one request with `Connection: close` and read its reply.
    fn call(mut self, method: &str, path: &str) -> Reply {
        self.send(format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"));
        self.reply()
    }
}

/// This process's uid and gid, from a file it creates.
fn my_ids(dir: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt as _;
    let probe = dir.join("ids");
    std::fs::write(&probe, b"").unwrap();
    let meta = std::fs::metadata(&probe).unwrap();
    (meta.uid(), meta.gid())
}

struct ErrorCase {
    name: &'static str,
    request: Vec<u8>,
    status: u16,
    code: &'static str,
    /// Words the message must hold (the limit it names, mostly).
    says: &'static [&'static str],
    /// Whether the connection is closed after the reply.
    closes: bool,
}

fn case(
    name: &'static str,
    request: impl Into<Vec<u8>>,
    status: u16,
    code: &'static str,
    says: &'static [&'static str],
    closes: bool,
) -> ErrorCase {
    ErrorCase { name, request: request.into(), status, code, says, closes }
}

fn error_cases() -> Vec<ErrorCase> {
    let big_header = format!("GET /whoami HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n", "a".repeat(1100));
    let unfinished_header = format!("GET /whoami HTTP/1.1\r\nHost: t\r\nX-Big: {}", "a".repeat(1100));
    let many_headers = format!("GET /whoami HTTP/1.1\r\n{}\r\n", "X: 1\r\n".repeat(101));
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "u".repeat(300));
    let huge_uri = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "u".repeat(5000));
    let chunk = format!("258\r\n{}\r\n", "c".repeat(600));
    let chunked_over =
        format!("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}{chunk}0\r\n\r\n");
    vec![
        case(
            "a header over max_header_bytes",
            big_header,
            431,
            "headers_too_large",
            &["1024", "max_header_bytes"],
            true,
        ),
        case(
            "a header over max_header_bytes, still unfinished",
            unfinished_header,
            431,
            "headers_too_large",
            &["1024", "max_header_bytes"],
            true,
        ),
        case("too many headers", many_headers, 431, "headers_too_large", &["100 headers"], true),
        case(
            "a target over max_uri_bytes",
            long_uri,
            414,
            "uri_too_long",
            &["301 bytes", "256", "max_uri_bytes"],
            true,
        ),
        case(
            "a target longer than the whole head limit",
            huge_uri,
            414,
            "uri_too_long",
            &["256", "max_uri_bytes"],
            true,
        ),
        case(
            "a Content-Length over max_body_bytes",
            "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n",
            413,
            "body_too_large",
            &["5000 bytes", "1024", "max_body_bytes"],
            true,
        ),
        case(
            "a Content-Length over max_body_bytes with Expect: 100-continue",
            "POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 1025\r\n\r\n",
            413,
            "body_too_large",
            &["1025 bytes", "1024"],
            true,
        ),
        case(
            "chunks adding up to more than max_body_bytes",
            chunked_over,
            413,
            "body_too_large",
            &["1024", "max_body_bytes"],
            true,
        ),
        case("a garbage request line", "HELLO\r\n\r\n", 400, "bad_request", &["malformed"], true),
        case("binary garbage", &b"\x00\x01\x02\xff\r\n\r\n"[..], 400, "bad_request", &["malformed"], true),
        case(
            "a header without a colon",
            "GET /whoami HTTP/1.1\r\nBad Header\r\n\r\n",
            400,
            "bad_request",
            &["malformed"],
            true,
        ),
        case(
            "a Content-Length that is not a number",
            "POST /echo HTTP/1.1\r\nContent-Length: 1e3\r\n\r\n",
            400,
            "bad_request",
            &["Content-Length"],
            true,
        ),
        case(
            "Content-Length and Transfer-Encoding together",
            "POST /echo HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
            "bad_request",
            &["both"],
            true,
        ),
        case(
            "an unknown Transfer-Encoding",
            "POST /echo HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            501,
            "unsupported_transfer_encoding",
            &["gzip"],
            true,
        ),
        case(
            "a malformed chunk size",
            "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            400,
            "bad_request",
            &["chunk size"],
            true,
        ),
        case(
            "an unknown expectation",
            "POST /echo HTTP/1.1\r\nExpect: 200-ok\r\nContent-Length: 2\r\n\r\nhi",
            417,
            "expectation_failed",
            &["100-continue"],
            true,
        ),
        case(
            "HTTP/2's preface",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            505,
            "http_version_not_supported",
            &["HTTP/1.1"],
            true,
        ),
        // The router's own errors, which axum leaves without a JSON body; the connection stays.
        case(
            "a wrong method",
            "POST /whoami HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            405,
            "method_not_allowed",
            &["POST", "/whoami", "GET"],
            false,
        ),
        case("an unknown path", "GET /nowhere HTTP/1.1\r\n\r\n", 404, "not_found", &["/nowhere"], false),
        case("an empty error from a handler", "GET /teapot HTTP/1.1\r\n\r\n", 418, "im_a_teapot", &["418"], false),
        case(
            "a handler's own JSON error",
            "GET /taken HTTP/1.1\r\n\r\n",
            409,
            "conflict",
            &["the name is taken"],
            false,
        ),
    ]
}

#[test]
fn every_refused_request_gets_a_json_error_naming_the_problem() {
    let server = Server::start(small_limits());
    for case in error_cases() {
        let mut c = server.unix();
        c.send(&case.request);
        let reply = c.reply();
        assert_eq!(reply.status, case.status, "{}: {reply:?}", case.name);
        let error = reply.error();
        assert_eq!(error.error.code, case.code, "{}: {reply:?}", case.name);
        for word in case.says {
            assert!(error.error.message.contains(word), "{}: {word:?} not in {:?}", case.name, error.error.message);
        }
        if case.status == 405 {
            assert_eq!(reply.header("allow"), Some("GET,HEAD"), "{}", case.name);
        }
        assert_eq!(reply.header("connection") == Some("close"), case.closes, "{}: {reply:?}", case.name);
        if case.closes {
            assert!(c.closed(), "{}: the connection stays open", case.name);
        } else {
            c.send("GET /whoami HTTP/1.1\r\n\r\n");
            assert_eq!(c.reply().status, 200, "{}: the connection is not usable after the error", case.name);
        }
    }
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let server = Server::start(small_limits());
    let mut c = server.unix();
    c.send("GET /whoami HTTP/1.1\r\nHost: t\r\n\r\n");
    let first = c.reply();
    assert_eq!(first.status, 200);
    assert_eq!(first.header("connection"), None);
    c.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(c.reply().json()["body"], "hello");
    c.send("HEAD /whoami HTTP/1.1\r\nHost: t\r\n\r\n");
    let head = c.reply_to(true);
    assert_eq!((head.status, head.header("content-length")), (200, first.header("content-length")));
    // Pipelined: two requests in one write, answered in order.
    c.send("POST /echo HTTP/1.1\r\nContent-Length: 3\r\n\r\nonePOST /echo HTTP/1.1\r\nContent-Length: 3\r\n\r\ntwo");
    assert_eq!(c.reply().json()["body"], "one");
    assert_eq!(c.reply().json()["body"], "two");
    c.send("GET /whoami HTTP/1.1\r\nConnection: close\r\n\r\n");
    let last = c.reply();
    assert_eq!((last.status, last.header("connection")), (200, Some("close")));
    assert!(c.closed());
}

#[test]
fn connection_persistence_follows_the_version_and_connection_header() {
    let server = Server::start(small_limits());
    for (request, stays_open, says) in [
        ("GET /whoami HTTP/1.1\r\n\r\n", true, None),
        ("GET /whoami HTTP/1.1\r\nConnection: close\r\n\r\n", false, Some("close")),
        ("GET /whoami HTTP/1.1\r\nConnection: Upgrade, CLOSE\r\n\r\n", false, Some("close")),
        ("GET /whoami HTTP/1.0\r\n\r\n", false, Some("close")),
        ("GET /whoami HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true, Some("keep-alive")),
    ] {
        let mut c = server.unix();
        c.send(request);
        let reply = c.reply();
        assert_eq!((reply.status, reply.header("connection")), (200, says), "{request:?}");
        if stays_open {
            c.send("GET /whoami HTTP/1.1\r\n\r\n");
            assert_eq!(c.reply().status, 200, "{request:?}");
        } else {
            assert!(c.closed(), "{request:?}");
        }
    }
}

#[test]
fn expect_100_continue_is_answered_before_the_body_is_read() {
    let server = Server::start(small_limits());
    let mut c = server.unix();
    c.send("POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 600\r\n\r\n");
    assert_eq!(c.line(), "HTTP/1.1 100 Continue\r\n");
    assert_eq!(c.line(), "\r\n");
    c.send("b".repeat(600));
    let reply = c.reply();
    assert_eq!((reply.status, reply.json()["len"].as_u64()), (200, Some(600)));
    // A client that sends its body at once anyway gets no 100, just the reply.
    c.send("POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi");
    let reply = c.reply();
    assert_eq!((reply.status, reply.json()["body"].as_str()), (200, Some("hi")));
}

#[test]
fn chunked_bodies_are_decoded() {
    let server = Server::start(small_limits());
    let mut c = server.tcp();
    c.send("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    for part in ["5\r\nhello\r\n", "6;name=value\r\n world\r\n", "0\r\nX-Trailer: 1\r\n", "\r\n"] {
        c.send(part);
        std::thread::sleep(Duration::from_millis(20));
    }
    let reply = c.reply();
    assert_eq!((reply.status, reply.json()["body"].as_str()), (200, Some("hello world")));
    c.send("GET /whoami HTTP/1.1\r\n\r\n");
    assert_eq!(c.reply().status, 200, "the connection is usable after a chunked body");
}

#[test]
fn an_idle_connection_is_closed_silently_after_the_idle_timeout() {
    let server = Server::start(HttpLimits { idle_timeout_ms: 500, ..small_limits() });
    let mut c = server.unix();
    c.send("GET /whoami HTTP/1.1\r\n\r\n");
    assert_eq!(c.reply().status, 200);
    let start = Instant::now();
    assert!(c.closed(), "bytes came instead of a silent close");
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(400) && waited < Duration::from_secs(3), "closed after {waited:?}");
}

#[test]
fn slow_heads_and_bodies_are_cut_off_at_their_timeouts() {
    let limits = HttpLimits { header_timeout_ms: 600, body_timeout_ms: 600, ..small_limits() };
    let server = Server::start(limits);

    // Slowloris: a header byte every 50 ms, never finishing.
    let mut slow = server.unix();
    let mut writer = slow.0.get_ref().try_clone().unwrap();
    let start = Instant::now();
    let trickle = std::thread::spawn(move || {
        for b in b"GET /whoami HTTP/1.1\r\nX-Slow: ".iter().chain(&[b'z'; 200]) {
            if writer.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let reply = slow.reply();
    let waited = start.elapsed();
    assert_eq!((reply.status, reply.error().error.code.as_str()), (408, "request_timeout"), "{reply:?}");
    assert!(reply.error().error.message.contains("header_timeout_ms"), "{reply:?}");
    assert!(waited >= Duration::from_millis(500) && waited < Duration::from_secs(3), "cut off after {waited:?}");
    assert!(slow.closed());
    trickle.join().unwrap();

    // A connection that never sends a byte is closed at the same deadline, with nothing to answer.
    let mut mute = server.unix();
    let start = Instant::now();
    assert!(mute.closed());
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(500) && waited < Duration::from_secs(3), "closed after {waited:?}");

    // A body that stops halfway.
    let mut stalled = server.unix();
    stalled.send("POST /echo HTTP/1.1\r\nContent-Length: 100\r\n\r\nonly ten b");
    let start = Instant::now();
    let reply = stalled.reply();
    let waited = start.elapsed();
    assert_eq!(reply.status, 408, "{reply:?}");
    assert!(reply.error().error.message.contains("body_timeout_ms"), "{reply:?}");
    assert!(waited >= Duration::from_millis(500) && waited < Duration::from_secs(3), "cut off after {waited:?}");
}

/// As a client: when `TESSERA_HTTP_TEST_SOCKET` is set (by the test below, running this binary
/// again as another user), ask who this is and print the reply; otherwise nothing.
#[test]
fn helper_whoami_as_another_user() {
    let Ok(sock) = std::env::var("TESSERA_HTTP_TEST_SOCKET") else { return };
    let s = UnixStream::connect(sock).unwrap();
    let reply = Client(BufReader::new(s)).call("GET", "/whoami");
    println!("REPLY {} {}", reply.status, String::from_utf8_lossy(&reply.body));
}

/// Run [`helper_whoami_as_another_user`] as uid and gid 65534; its status and body.
fn whoami_as_nobody(server: &Server) -> (u16, Value) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(server.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "helper_whoami_as_another_user", "--nocapture", "--test-threads=1"])
        .env("TESSERA_HTTP_TEST_SOCKET", &server.sock)
        .output()
        .expect("running setpriv");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find_map(|l| l.split_once("REPLY ").map(|(_, r)| r)).unwrap_or_else(|| {
        panic!("no reply from the client as uid 65534: {stdout}{}", String::from_utf8_lossy(&out.stderr))
    });
    let (status, body) = line.split_once(' ').unwrap();
    (status.parse().unwrap(), serde_json::from_str(body).unwrap())
}

#[test]
fn connections_are_limited_per_peer_and_in_total() {
    let limits = HttpLimits { max_connections_per_peer: 3, max_connections: 5, ..small_limits() };
    let server = Server::start(limits);
    let (uid, _) = my_ids(server.dir.path());

    // Unix: per uid.
    let held: Vec<_> = (0..3).map(|_| server.unix()).collect();
    let refused = server.unix().call("GET", "/whoami");
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.header("retry-after"), Some("1"));
    let message = refused.error().error.message;
    assert_eq!(refused.error().error.code, "too_many_connections");
    for word in [&format!("uid {uid} already has 3 connections"), "max_connections_per_peer"] {
        assert!(message.contains(word), "{word:?} not in {message:?}");
    }
    if uid == 0 {
        let (status, body) = whoami_as_nobody(&server);
        assert_eq!((status, &body["unix"]["uid"]), (200, &json!(65534)), "{body}");
    } else {
        eprintln!("not root: the other-uid half of this test is skipped");
    }

    // TCP: per address; then the total (3 Unix + 2 TCP) is reached, and anyone is refused.
    let held_tcp: Vec<_> = (0..2).map(|_| server.tcp()).collect();
    let refused = server.tcp().call("GET", "/whoami");
    assert_eq!(refused.status, 503, "{refused:?}");
    let message = refused.error().error.message;
    assert!(message.contains("max_connections)") && message.contains("127.0.0.1"), "{message}");

    // Every slot comes back when its connection ends.
    drop(held_tcp);
    let again: Vec<_> = (0..2).map(|_| admitted(|| server.tcp())).collect();
    let refused = server.unix().call("GET", "/whoami");
    assert!(refused.error().error.message.contains("max_connections)"), "{refused:?}");
    drop((held, again));
    let _all: Vec<_> = (0..3).map(|_| admitted(|| server.unix())).collect();
}

/// A connection that was served a request, trying fresh ones until one is (a closed
/// connection's slot comes back a moment after the client sees it closed).
fn admitted<S: Read + Write>(connect: impl Fn() -> Client<S>) -> Client<S> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = connect();
        c.send("GET /whoami HTTP/1.1\r\n\r\n");
        let reply = c.reply();
        if reply.status == 200 {
            return c;
        }
        assert!(Instant::now() < deadline, "never admitted: {reply:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn slots_come_back_after_errors_and_vanished_clients() {
    let limits = HttpLimits { max_connections_per_peer: 2, ..small_limits() };
    let server = Server::start(limits);
    for case in error_cases().into_iter().filter(|c| c.closes) {
        let mut c = server.unix();
        c.send(&case.request);
        assert_eq!(c.reply().status, case.status, "{}", case.name);
        assert!(c.closed(), "{}", case.name);
    }
    for partial in
        ["GET /who", "POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc", "GET /slow/300 HTTP/1.1\r\n\r\n"]
    {
        let mut c = server.unix();
        c.send(partial);
        drop(c);
    }
    let _both: Vec<_> = (0..2).map(|_| admitted(|| server.unix())).collect();
}

#[test]
fn handlers_see_who_calls() {
    let server = Server::start(small_limits());
    let (uid, gid) = my_ids(server.dir.path());
    let reply = server.unix().call("GET", "/whoami");
    assert_eq!(reply.json(), json!({"unix": {"uid": uid, "gid": gid, "pid": std::process::id()}}));
    let c = server.tcp();
    let local = c.0.get_ref().local_addr().unwrap();
    assert_eq!(c.call("GET", "/whoami").json(), json!({"tcp": local.to_string()}));
}

#[test]
fn shutdown_lets_a_request_in_flight_finish_and_closes_idle_connections() {
    let mut server = Server::start(small_limits());
    let mut busy = server.unix();
    busy.send("GET /slow/700 HTTP/1.1\r\n\r\n");
    let mut idle = server.tcp();
    idle.send("GET /whoami HTTP/1.1\r\n\r\n");
    assert_eq!(idle.reply().status, 200);
    std::thread::sleep(Duration::from_millis(200));
    let asked = Instant::now();
    let stopper = std::thread::spawn(move || {
        let returned = server.stop();
        (server, returned)
    });
    assert!(idle.closed(), "the idle connection got bytes at shutdown");
    assert!(asked.elapsed() < Duration::from_millis(400), "the idle connection waited for the request in flight");
    let reply = busy.reply();
    assert_eq!((reply.status, reply.header("connection")), (200, Some("close")), "{reply:?}");
    assert_eq!(reply.json()["slept_ms"], 700);
    let (server, returned) = stopper.join().unwrap();
    let took = returned - asked;
    assert!(took >= Duration::from_millis(350) && took < Duration::from_secs(2), "serve returned after {took:?}");
    assert!(UnixStream::connect(&server.sock).is_err(), "still accepting after shutdown");
}

#[test]
fn shutdown_drops_requests_still_running_after_the_grace() {
    let mut server = Server::start(HttpLimits { shutdown_grace_ms: 300, ..small_limits() });
    let mut busy = server.unix();
    busy.send("GET /slow/20000 HTTP/1.1\r\n\r\n");
    std::thread::sleep(Duration::from_millis(200));
    let asked = Instant::now();
    let took = server.stop() - asked;
    assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(2), "serve returned after {took:?}");
    assert!(busy.closed(), "the request past the grace was answered");
}

#[test]
fn limits_deserialize_with_defaults_and_refuse_unknown_fields() {
    let limits: HttpLimits = toml::from_str("max_body_bytes = 2048\nidle_timeout_ms = 5000").unwrap();
    assert_eq!(limits, HttpLimits { max_body_bytes: 2048, idle_timeout_ms: 5000, ..HttpLimits::default() });
    let err = toml::from_str::<HttpLimits>("max_bodies = 1").unwrap_err();
    assert!(err.to_string().contains("unknown field"), "{err}");
}
