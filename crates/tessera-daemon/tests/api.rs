//! The HTTP front door against a fake engine, over a real Unix socket and TCP: bad requests get
//! a clear 4xx with a JSON body, callers are the socket peer or the token's local user (as NSS
//! knows them), every engine error has its status, and every route is documented.

use std::sync::{Arc, Mutex};

use serde_json::Value;
use tessera_daemon::api::{Action, Caller, Door, EngineError, Identity, Reply, Service, TokenUser};
use tessera_daemon::client::{Client, ClientError, Endpoint};
use tessera_daemon::config::Config;
use tessera_daemon::config::Tokens;
use tessera_daemon::wire::{DrainReply, GpuList, NodeEventList, SubmitReply};

#[derive(Default)]
struct Fake {
    seen: Mutex<Vec<Caller>>,
}

impl Service for Fake {
    fn act(
        &self,
        caller: Caller,
        action: Action,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Reply, EngineError>> + Send + '_>> {
        Box::pin(async move {
            self.seen.lock().unwrap().push(caller.clone());
            match action {
                Action::Submit(_) => Ok(Reply::Submitted(SubmitReply { id: 7 })),
                Action::GetJob { id: 404 } => Err(EngineError::NotFound("no job 404".into())),
                Action::GetJob { id: 13 } => Err(EngineError::Forbidden("job 13 belongs to another user".into())),
                Action::GetJob { id: 22 } => Err(EngineError::cannot_run("resources.cpus", "too many")),
                Action::Cancel { .. } => Err(EngineError::Conflict("job 5 has already ended".into())),
                Action::Drain { gpu, drain, .. } if caller.admin => {
                    Ok(Reply::Drain(DrainReply { gpu, drained: drain }))
                }
                Action::Drain { .. } => Err(EngineError::Forbidden("only admins drain GPUs".into())),
                // The caller's name as the backend string, so tests can see who called.
                Action::Gpus => Ok(Reply::Gpus(GpuList { backend: caller.user.clone(), gpus: Vec::new() })),
                Action::Events(q) if q.limit == Some(500) => Ok(Reply::Events(NodeEventList { events: Vec::new() })),
                Action::SubmitWork { .. } => Ok(Reply::Submitted(SubmitReply { id: 8 })),
                // What the front door made of the body, for the tests to read.
                Action::Release { id, exit, .. } => {
                    Err(EngineError::Conflict(format!("release {id}: code {:?}, detail {:?}", exit.code, exit.detail)))
                }
                other => Err(EngineError::Internal(format!("unexpected {other:?}"))),
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
        tokens: Tokens::new(vec![
            ("s3cret".into(), TokenUser { uid: 65534, gid: 65534, name: "nobody".into() }),
            ("r00t-token".into(), TokenUser { uid: 0, gid: 0, name: "root".into() }),
        ]),
        config: Arc::new(Config { users: [("nobody".to_string(), "ml".to_string())].into(), ..Config::default() }),
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
            let app = tessera_daemon::api::router(service, identity);
            tessera_daemon::server::serve(app, unix, Some(tcp), Default::default(), async {
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

fn refusal<T: std::fmt::Debug>(r: Result<T, ClientError>) -> (u16, String) {
    match r {
        Err(ClientError::Api { status, message, .. }) => (status, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
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
    let message = |b: &Value| b["error"]["message"].as_str().unwrap_or_default().to_string();
    let (s, b) = post("{not json");
    assert_eq!(s, 400, "{b}");
    assert!(message(&b).contains("body: invalid JSON"), "{b}");
    let good = r#"{"command":["true"],"cwd":"/","resources":{"gpu":"whole_gpu"}}"#;
    let (s, b) = post(&good.replace("}}", r#"},"colour":"red"}"#));
    assert_eq!(s, 400);
    assert!(message(&b).contains("unknown field `colour`"), "{b}");
    // The request is typed all the way: the scheduler's request refuses unknown fields too.
    let (s, b) = post(&good.replace(r#""gpu":"whole_gpu""#, r#""gpu":"whole_gpu","gpuz":1"#));
    assert_eq!(s, 400);
    assert!(message(&b).contains("unknown field `gpuz`"), "{b}");
    let (s, b) = post(r#"{"cwd":"/","resources":{"gpu":"whole_gpu"}}"#);
    assert_eq!(s, 400);
    assert!(message(&b).contains("missing field `command`"), "{b}");
    assert_eq!(post("").0, 400);
    assert_eq!(refusal(r.unix.job(404)).0, 404);
    assert_eq!(refusal(r.unix.job(13)).0, 403);
    let (s, m) = refusal(r.unix.job(22));
    assert_eq!((s, m.as_str()), (422, "resources.cpus: too many"));
    assert_eq!(refusal(r.unix.cancel(5)).0, 409);
    let x = r.unix.request::<()>("GET", "/v1/jobs/abc", None).unwrap();
    assert_eq!(x.status, 400);
    assert!(String::from_utf8_lossy(&x.body).contains("'abc' is not a job id"), "{:?}", x.body);
    for (path, status) in [
        ("/v1/nope", 404),
        ("/v1/jobs?bogus=1", 400),
        ("/v1/jobs?state=sleeping", 400),
        ("/v1/jobs/1/logs?stream=stdin", 400),
    ] {
        let x = r.unix.request::<()>("GET", path, None).unwrap();
        assert_eq!(x.status, status, "{path}: {}", String::from_utf8_lossy(&x.body));
        let b: Value = serde_json::from_slice(&x.body).unwrap();
        assert!(b["error"]["code"].is_string(), "{path}: {b}");
    }
    // A wrong method gets a JSON 405 too.
    let x = r.unix.request::<()>("DELETE", "/v1/jobs", None).unwrap();
    assert_eq!(x.status, 405);
    // Still up, and a good request works.
    let (s, b) = post(good);
    assert_eq!((s, b["id"].as_u64()), (201, Some(7)), "{b}");
}

#[test]
fn callers_are_the_socket_peer_or_the_token_user() {
    let r = start();
    let me = tessera_host::users::user_name(tessera_host::effective_uid());
    assert_eq!(r.unix.gpus().unwrap().backend, me);
    let tcp = |token: &str| Client::new(Endpoint::Tcp { addr: r.tcp_addr.clone(), token: token.into() });
    assert_eq!(refusal(tcp("wrong").gpus()).0, 401);
    assert_eq!(tcp("s3cret").gpus().unwrap().backend, "nobody");
    // Each token is its own user.
    assert_eq!(tcp("r00t-token").gpus().unwrap().backend, "root");
    assert_eq!(refusal(tcp("s3cre").gpus()).0, 401, "a token's prefix is no token");
    assert_eq!(refusal(tcp("s3cret").drain(0, "")).0, 403, "the token user is not an admin");
    let seen = r.fake.seen.lock().unwrap();
    let tcp_caller = seen.iter().find(|c| c.door == Door::Tcp).unwrap();
    // The token's user is a real local user: their uid and gid, not a placeholder.
    assert_eq!((tcp_caller.uid, tcp_caller.gid, tcp_caller.tenant.as_str()), (65534, 65534, "ml"));
    let sock_caller = seen.iter().find(|c| c.door == Door::Socket).unwrap();
    assert_eq!(sock_caller.uid, tessera_host::effective_uid());
}

#[test]
fn every_route_is_in_the_openapi_document() {
    let r = start();
    let x = r.unix.request::<()>("GET", "/openapi.json", None).unwrap();
    assert_eq!(x.status, 200);
    let doc: Value = serde_json::from_slice(&x.body).unwrap();
    for p in tessera_daemon::openapi::PATHS {
        assert!(doc["paths"].get(*p).is_some(), "{p} is not documented");
    }
    assert_eq!(doc["openapi"], "3.1.0");
    // The router's own routes, read from its source: each is documented, and nothing else is.
    let src = include_str!("../src/api.rs");
    let routed: std::collections::BTreeSet<&str> = src
        .split(".route(")
        .skip(1)
        .filter_map(|rest| rest.trim_start().strip_prefix('"').and_then(|r| r.split('"').next()))
        .collect();
    assert!(routed.len() >= 10, "{routed:?}");
    let documented: std::collections::BTreeSet<&str> =
        doc["paths"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(routed, documented, "routes and the OpenAPI document differ");
    let listed: std::collections::BTreeSet<&str> = tessera_daemon::openapi::PATHS.iter().copied().collect();
    assert_eq!(routed, listed, "routes and openapi::PATHS differ");
}

/// What schemathesis found where the server and the OpenAPI document disagreed, each request as
/// it sent it: `limit=501` was accepted (the document says at most 500), `"code": 116.0` was
/// refused (JSON Schema counts it an integer), and a `detail` or `key` of 1024 or 256
/// characters, within the document's `maxLength` (characters), was refused when its UTF-8 was
/// longer than that many bytes.
#[test]
fn the_server_takes_what_the_document_allows_and_refuses_what_it_does_not() {
    let r = start();
    let sock = match &r.unix.endpoint {
        Endpoint::Unix(p) => p.clone(),
        Endpoint::Tcp { .. } => unreachable!(),
    };
    let get = |path: &str| raw(&sock, &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
    let post = |path: &str, body: &str| {
        raw(
            &sock,
            &format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    let message = |b: &Value| b["error"]["message"].as_str().unwrap_or_default().to_string();

    let (s, b) = get("/v1/events?limit=501");
    assert_eq!(s, 400, "{b}");
    assert_eq!(message(&b), "limit: 501 is more than 500: ask for at most that many events");
    assert_eq!(get("/v1/events?limit=500").0, 200);

    let (s, b) = post("/v1/jobs/1/release", r#"{"signal": 2019, "succeeded": false, "code": 116.0}"#);
    assert_eq!((s, message(&b)), (409, r#"release 1: code Some(116), detail """#.to_string()), "{b}");
    // Still refused: a fraction, a number out of range, a wrong type.
    for body in
        [r#"{"succeeded": false, "code": 1.5}"#, r#"{"succeeded": false, "code": 3e9}"#, r#"{"succeeded": 1.0}"#]
    {
        let (s, b) = post("/v1/jobs/1/release", body);
        assert_eq!(s, 400, "{body}: {b}");
        assert!(message(&b).starts_with("body: invalid JSON: "), "{body}: {b}");
    }

    let detail = "é".repeat(1024);
    let (s, b) = post("/v1/jobs/1/release", &format!(r#"{{"succeeded": true, "detail": "{detail}"}}"#));
    assert_eq!(s, 409, "1024 characters, 2048 bytes: {b}");
    let (s, b) = post("/v1/jobs/1/release", &format!(r#"{{"succeeded": true, "detail": "{detail}é"}}"#));
    assert_eq!((s, message(&b)), (400, "detail: give at most 1024 characters, none of them control characters".into()));

    // External work is for admins: as root, by token over TCP, whoever runs the test.
    let work = |key: &str| {
        use std::io::{Read, Write};
        let body = format!(r#"{{"door": "x", "key": "{key}", "request": {{"gpu": "whole_gpu"}}}}"#);
        let mut s = std::net::TcpStream::connect(&r.tcp_addr).unwrap();
        write!(
            s,
            "POST /v1/work HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer r00t-token\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let status: u16 = out.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, serde_json::from_str::<Value>(out.split("\r\n\r\n").nth(1).unwrap_or("")).unwrap_or(Value::Null))
    };
    let key = "é".repeat(256);
    let (s, b) = work(&key);
    assert_eq!(s, 201, "256 characters, 512 bytes: {b}");
    let (s, b) = work(&format!("{key}é"));
    assert_eq!((s, message(&b)), (400, "key: give 1 to 256 characters, none of them control characters".into()));
}
