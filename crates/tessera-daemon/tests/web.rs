//! The web view's front door against a fake engine, over a real TCP listener and Unix socket:
//! TCP callers without a token land on the login form; a wrong token is the form again (401,
//! HTML, not the API's JSON); the right one opens a session whose cookie is secure and counts for
//! `/ui` alone, never for the JSON API; the live stream is server-sent events, written as they
//! come; logout ends the session; the Unix socket's peer needs no login; the metrics port has
//! no web view.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tessera_daemon::api::{Action, Caller, Door, EngineError, Identity, Reply, Service, TokenUser};
use tessera_daemon::config::{Config, Tokens};
use tessera_daemon::wire::{GpuInfo, GpuList, InstanceInfo, JobList, NodeEventList};

const TOKEN: &str = "web-view-token-0123456789";

#[derive(Default)]
struct Fake {
    seen: Mutex<Vec<(Caller, String)>>,
}

impl Service for Fake {
    fn act(
        &self,
        caller: Caller,
        action: Action,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Reply, EngineError>> + Send + '_>> {
        Box::pin(async move {
            self.seen.lock().unwrap().push((caller.clone(), format!("{action:?}")));
            match action {
                Action::Gpus => Ok(Reply::Gpus(GpuList {
                    backend: "sim".into(),
                    gpus: vec![GpuInfo {
                        index: 0,
                        name: "NVIDIA H100 80GB HBM3".into(),
                        uuid: "GPU-web-0".into(),
                        model: Some("H100-80GB".into()),
                        numa_node: Some(0),
                        minor: Some(0),
                        local_cpus: None,
                        mig: true,
                        drained: None,
                        health: "healthy".into(),
                        instances: vec![InstanceInfo {
                            gpu_instance_id: Some(1),
                            profile: "7g.80gb".into(),
                            profile_id: 0,
                            start: 0,
                            size: 8,
                            jobs: Vec::new(),
                            occupants: Vec::new(),
                            mig_uuid: Some("MIG-web".into()),
                            healthy: true,
                            gi_caps_minor: None,
                            ci_caps_minor: None,
                        }],
                    }],
                })),
                Action::ListJobs(_) => Ok(Reply::Jobs(JobList { jobs: Vec::new(), next: None })),
                Action::Events(_) => Ok(Reply::Events(NodeEventList::default())),
                other => Err(EngineError::Internal(format!("unexpected {other:?}"))),
            }
        })
    }
}

struct Running {
    _dir: tempfile::TempDir,
    sock: std::path::PathBuf,
    tcp: String,
    metrics: String,
    fake: Arc<Fake>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("w.sock");
    let fake = Arc::new(Fake::default());
    let identity = Arc::new(Identity {
        tokens: Tokens::new(vec![(TOKEN.into(), TokenUser { uid: 65534, gid: 65534, name: "nobody".into() })]),
        config: Arc::new(Config::default()),
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let service: Arc<dyn Service> = fake.clone();
    let sock2 = sock.clone();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let unix = tessera_daemon::server::bind_unix(&sock2).unwrap();
            let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send((tcp.local_addr().unwrap().to_string(), metrics.local_addr().unwrap().to_string())).unwrap();
            let app = tessera_daemon::api::router(service.clone(), identity);
            let metrics_app = tessera_daemon::api::metrics_router(service);
            tessera_daemon::server::serve_with_metrics(
                app,
                unix,
                Some(tcp),
                Some((metrics, metrics_app)),
                Default::default(),
                async {
                    let _ = stop_rx.await;
                },
            )
            .await
            .unwrap();
        });
    });
    let (tcp, metrics) = addr_rx.recv().unwrap();
    Running { _dir: dir, sock, tcp, metrics, fake, stop: Some(stop_tx), thread: Some(thread) }
}

/// A reply: status, head (lowercased names), body.
struct Got {
    status: u16,
    head: String,
    body: String,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

fn parse(out: &str) -> Got {
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((out, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Got { status, head: head.to_owned(), body: body.to_owned() }
}

fn exchange(mut s: impl Read + Write, method: &str, path: &str, headers: &[String], body: &str) -> Got {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    parse(&out)
}

fn tcp(addr: &str, method: &str, path: &str, headers: &[String], body: &str) -> Got {
    exchange(std::net::TcpStream::connect(addr).unwrap(), method, path, headers, body)
}

fn login(r: &Running) -> String {
    let got = tcp(&r.tcp, "POST", "/ui/login", &[], &format!("token={TOKEN}"));
    assert_eq!(got.status, 303, "{}", got.head);
    assert_eq!(got.header("location"), Some("/ui"));
    let cookie = got.header("set-cookie").unwrap().to_owned();
    for part in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/ui"] {
        assert!(cookie.contains(part), "{cookie}");
    }
    cookie.split(';').next().unwrap().to_owned()
}

#[test]
fn tcp_callers_log_in_with_a_token_and_the_cookie_counts_for_the_page_alone() {
    let r = start();
    let got = tcp(&r.tcp, "GET", "/ui", &[], "");
    assert_eq!((got.status, got.header("location")), (303, Some("/ui/login")), "no session: to the login form");
    let form = tcp(&r.tcp, "GET", "/ui/login", &[], "");
    assert_eq!(form.status, 200);
    assert!(form.body.contains(r#"name="token""#));

    for bad in ["token=wrong-token-wrong-token", "token=", ""] {
        let got = tcp(&r.tcp, "POST", "/ui/login", &[], bad);
        assert_eq!(got.status, 401, "{bad}: {}", got.head);
        assert!(got.header("content-type").unwrap().starts_with("text/html"), "the form again, not JSON: {}", got.head);
        assert!(got.body.contains(r#"id="login-error""#), "{}", got.body);
        assert!(got.header("set-cookie").is_none());
    }
    let cross = tcp(&r.tcp, "POST", "/ui/login", &["Origin: http://evil.example".into()], &format!("token={TOKEN}"));
    assert_eq!(cross.status, 403, "a login posted from another site");

    let cookie = login(&r);
    let page = tcp(&r.tcp, "GET", "/ui", &[format!("Cookie: {cookie}")], "");
    assert_eq!(page.status, 200, "{}", page.head);
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("default-src 'none'"), "{csp}");
    assert!(page.body.contains(r#"data-gpu="GPU-web-0""#) && page.body.contains(r#"data-profile="7g.80gb""#));
    assert!(page.body.contains(r#"<strong id="viewer">nobody</strong>"#), "the token's user is the viewer");
    let (caller, _) = r.fake.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!((caller.user.as_str(), caller.uid, caller.door), ("nobody", 65534, Door::Tcp));

    // The cookie is no credential for the JSON API.
    let api = tcp(&r.tcp, "GET", "/v1/gpus", &[format!("Cookie: {cookie}")], "");
    assert_eq!(api.status, 401, "{}", api.body);
    // A forged or foreign cookie is no session.
    let forged = tcp(&r.tcp, "GET", "/ui", &[format!("Cookie: tessera_session={}", "0".repeat(64))], "");
    assert_eq!(forged.status, 303);
    // A proxy's bearer token works without a session.
    let proxied = tcp(&r.tcp, "GET", "/ui", &[format!("Authorization: Bearer {TOKEN}")], "");
    assert_eq!(proxied.status, 200);

    let out = tcp(&r.tcp, "POST", "/ui/logout", &[format!("Cookie: {cookie}")], "");
    assert_eq!((out.status, out.header("location")), (303, Some("/ui/login")));
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    let after = tcp(&r.tcp, "GET", "/ui", &[format!("Cookie: {cookie}")], "");
    assert_eq!(after.status, 303, "the session ended at logout");
}

#[test]
fn the_live_stream_sends_events_as_they_come() {
    let r = start();
    let cookie = login(&r);
    let mut s = std::net::TcpStream::connect(&r.tcp).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(format!("GET /ui/live HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\n\r\n").as_bytes()).unwrap();
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("\n\n") || !String::from_utf8_lossy(&seen).contains("event: page") {
        let n = s.read(&mut buf).expect("the first event comes while the stream stays open");
        assert!(n > 0, "the stream closed: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(started.elapsed() < Duration::from_secs(4));
    let text = String::from_utf8_lossy(&seen);
    let got = parse(&text);
    assert_eq!(got.status, 200);
    assert!(got.header("content-type").unwrap().starts_with("text/event-stream"), "{}", got.head);
    assert!(got.header("content-length").is_none(), "a stream has no length: {}", got.head);
    assert!(got.body.contains("data: ") && got.body.contains("GPU-web-0"), "{}", got.body);
    assert!(got.body.contains("\nid: "), "each page has its digest as id: {}", got.body);

    // Without a session the stream is refused.
    let got = tcp(&r.tcp, "GET", "/ui/live", &[], "");
    assert_eq!(got.status, 401);

    // An open stream does not hold the server up at shutdown (the grace is 5 s): it ends.
    let stopping = Instant::now();
    drop(r);
    assert!(stopping.elapsed() < Duration::from_secs(3), "shutdown waited {:?} for the stream", stopping.elapsed());
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
}

#[test]
fn the_socket_peer_needs_no_login_and_the_metrics_port_has_no_page() {
    let r = start();
    let unix = exchange(std::os::unix::net::UnixStream::connect(&r.sock).unwrap(), "GET", "/ui", &[], "");
    assert_eq!(unix.status, 200, "{}", unix.head);
    assert!(unix.body.contains(r#"id="live""#));
    assert!(!unix.body.contains("/ui/logout"), "no session, no logout");
    let (caller, _) = r.fake.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!((caller.door, caller.uid), (Door::Socket, tessera_host::effective_uid()));
    let login = exchange(std::os::unix::net::UnixStream::connect(&r.sock).unwrap(), "GET", "/ui/login", &[], "");
    assert_eq!((login.status, login.header("location")), (303, Some("/ui")));

    let js = tcp(&r.tcp, "GET", "/ui/app.js", &[], "");
    assert_eq!(js.status, 200);
    assert!(js.header("content-type").unwrap().starts_with("text/javascript"));
    assert_eq!(tcp(&r.metrics, "GET", "/ui", &[], "").status, 404, "the metrics port serves /metrics alone");
}
