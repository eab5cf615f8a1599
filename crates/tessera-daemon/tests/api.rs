//! The API layer against a fake service, over a real Unix socket and TCP: bad requests get a
//! clear 4xx, callers are identified by peer credentials or a bearer token, and the daemon
//! stays up.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tessera_daemon::api::{Action, ApiError, Caller, Identity, Reply, Service};
use tessera_daemon::client::{Client, Endpoint};

#[derive(Default)]
struct Fake {
    seen: Mutex<Vec<(Caller, String)>>,
}

impl Service for Fake {
    fn handle(&self, caller: Caller, action: Action) -> Reply<'_> {
        Box::pin(async move {
            self.seen.lock().unwrap().push((caller.clone(), format!("{action:?}")));
            match action {
                Action::Submit(b) => Ok(json!({"id": 7, "command": b.command})),
                Action::GetJob { id: 404 } => Err(ApiError::not_found("no job 404")),
                Action::GetJob { id: 13 } => Err(ApiError::forbidden("job 13 belongs to another user")),
                Action::Drain { .. } if !caller.admin => Err(ApiError::forbidden("only admins drain GPUs")),
                other => Ok(json!({"ok": format!("{other:?}"), "user": caller.user})),
            }
        })
    }
}

struct Running {
    _dir: tempfile::TempDir,
    unix: Client,
    tcp_addr: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    fake: Arc<Fake>,
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
    let sock = dir.path().join("t.sock");
    let fake = Arc::new(Fake::default());
    let identity = Arc::new(Identity {
        token: Some("s3cret".into()),
        token_user: "ci".into(),
        users_to_tenants: BTreeMap::from([("ci".to_string(), "ml".to_string())]),
        admins: vec![],
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let service: Arc<dyn Service> = fake.clone();
    let sock2 = sock.clone();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        rt.block_on(async move {
            let unix = tessera_daemon::server::bind_unix(&sock2).unwrap();
            let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(tcp.local_addr().unwrap().to_string()).unwrap();
            tessera_daemon::server::serve(service, identity, unix, Some(tcp), async {
                let _ = stop_rx.await;
            })
            .await
            .unwrap();
        });
    });
    let tcp_addr = addr_rx.recv().unwrap();
    Running {
        unix: Client::new(Endpoint::Unix(sock)),
        tcp_addr,
        stop: Some(stop_tx),
        thread: Some(thread),
        fake,
        _dir: dir,
    }
}

fn raw(sock: &std::path::Path, request: &str) -> (u16, Value) {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[test]
fn bad_requests_get_clear_4xx_and_the_daemon_stays_up() {
    let r = start();
    let sock = match &r.unix.endpoint {
        Endpoint::Unix(p) => p.clone(),
        Endpoint::Tcp { .. } => unreachable!(),
    };
    let post = |body: &str| {
        raw(
            &sock,
            &format!(
                "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    let (s, b) = post("{not json");
    assert_eq!(s, 400, "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("invalid JSON body"), "{b}");
    let (s, b) = post(r#"{"command":["true"],"cwd":"/","resources":{},"colour":"red"}"#);
    assert_eq!(s, 400);
    assert!(b["error"]["message"].as_str().unwrap().contains("unknown field `colour`"), "{b}");
    let (s, b) = post(r#"{"cwd":"/","resources":{}}"#);
    assert_eq!(s, 400);
    assert!(b["error"]["message"].as_str().unwrap().contains("missing field `command`"), "{b}");
    let (s, _) = post("");
    assert_eq!(s, 400);
    let x = r.unix.request("GET", "/v1/jobs/abc", None).unwrap();
    assert_eq!((x.status, x.error_message()), (400, "'abc' is not a job id (a positive integer)".to_string()));
    let x = r.unix.request("GET", "/v1/jobs/404", None).unwrap();
    assert_eq!(x.status, 404);
    let x = r.unix.request("GET", "/v1/jobs/13", None).unwrap();
    assert_eq!(x.status, 403);
    let x = r.unix.request("GET", "/v1/nope", None).unwrap();
    assert_eq!(x.status, 404);
    let x = r.unix.request("GET", "/v1/jobs?bogus=1", None).unwrap();
    assert_eq!(x.status, 400, "{}", x.body);
    let x = r.unix.request("GET", "/v1/jobs/1/logs?stream=stdin", None).unwrap();
    assert_eq!(x.status, 400);
    // Still up, and a good request works.
    let x =
        r.unix.request("POST", "/v1/jobs", Some(&json!({"command": ["true"], "cwd": "/", "resources": {}}))).unwrap();
    assert_eq!(x.status, 201, "{}", x.body);
    assert_eq!(x.body["id"], 7);
}

#[test]
fn callers_are_the_socket_peer_or_the_token_user() {
    let r = start();
    let x = r.unix.request("GET", "/v1/gpus", None).unwrap();
    assert_eq!(x.status, 200);
    let me = tessera_daemon::api::user_name(my_uid());
    assert_eq!(x.body["user"], me.as_str());
    let tcp = |token: &str| Client::new(Endpoint::Tcp { addr: r.tcp_addr.clone(), token: token.into() });
    let x = tcp("wrong").request("GET", "/v1/gpus", None).unwrap();
    assert_eq!(x.status, 401);
    let x = tcp("s3cret").request("GET", "/v1/gpus", None).unwrap();
    assert_eq!((x.status, x.body["user"].as_str()), (200, Some("ci")));
    let x = tcp("s3cret").request("POST", "/v1/gpus/0/drain", None).unwrap();
    assert_eq!(x.status, 403, "the token user is not an admin");
    let seen = r.fake.seen.lock().unwrap();
    assert!(seen.iter().any(|(c, _)| c.user == "ci" && c.tenant == "ml"));
}

/// The uid of this process, read from /proc (no unsafe libc call needed).
fn my_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status.lines().find(|l| l.starts_with("Uid:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn every_route_is_in_the_openapi_document() {
    let r = start();
    let x = r.unix.request("GET", "/openapi.json", None).unwrap();
    assert_eq!(x.status, 200);
    for p in tessera_daemon::openapi::PATHS {
        assert!(x.body["paths"].get(*p).is_some(), "{p} is not documented");
    }
    assert_eq!(x.body["openapi"], "3.1.0");
}
