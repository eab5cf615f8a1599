//! The CLI's client for the daemon's API: HTTP/1.1 over the Unix socket or TCP through hyper's
//! client connection (`hyper::client::conn::http1`, the HTTP stack axum serves with), one request
//! per connection, driven by a small current-thread runtime so that the synchronous CLI keeps a
//! synchronous API. Requests and replies are the typed structs of `wire.rs`; an error reply
//! becomes [`ClientError::Api`] with its status, code and message.
//!
//! Limits: a connect timeout, one deadline for the whole exchange ([`Client::timeout`]) and a cap
//! on a reply's size, counted on the decoded body whatever its framing (`Content-Length` or
//! chunked). A connection the daemon closes before its reply is complete (a restart, a crash) is
//! [`ClientError::Closed`], never a parse error.
//!
//! Where the daemon listens by default is decided here, for `tessera serve` and every client
//! command alike: [`serve_socket`] and [`default_socket`].

use std::error::Error as _;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderValue};
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::wire::{
    CancelReply, DrainReply, DrainRequest, DryRunReply, ErrorBody, GpuList, HealthClearReply, HealthReply, JobList,
    JobQuery, JobView, LayoutReply, LayoutRequest, LogChunk, LogQuery, ReleaseRequest, SubmitReply, SubmitRequest,
    WorkRequest,
};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the daemon at {target}: {source} (is `tessera serve` running? --socket and TESSERA_SOCKET choose it)"
    )]
    Connect {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the daemon at {target}: {source}")]
    Io {
        target: String,
        #[source]
        source: std::io::Error,
    },
    /// The connection ended before the reply was complete: the daemon stopped or restarted.
    #[error("the daemon at {target} closed the connection before {during} (was it restarted?)")]
    Closed {
        target: String,
        /// `replying` (nothing or part of the head came) or `finishing its reply` (part of the body).
        during: &'static str,
    },
    /// No complete reply within [`Client::timeout`].
    #[error("the daemon at {target} did not reply within {} s", timeout.as_secs_f64())]
    Timeout { target: String, timeout: Duration },
    /// The reply is larger than the client reads.
    #[error("the daemon at {target} sent a reply of more than {limit} bytes, the most the client reads")]
    TooLarge { target: String, limit: u64 },
    #[error("the daemon at {target} sent a malformed response: {detail}")]
    Protocol { target: String, detail: String },
    /// The request itself cannot be sent (a token no header can carry, a body that does not encode).
    #[error("cannot send the request to the daemon at {target}: {detail}")]
    Request { target: String, detail: String },
    /// The daemon refused the request: its status and error body.
    #[error("{message} (HTTP {status})")]
    Api { status: u16, code: String, message: String },
}

/// The largest reply the client reads (a page of logs is far smaller).
const MAX_REPLY_BYTES: u64 = 256 * 1024 * 1024;

/// How long connecting may take (a TCP peer that drops packets would otherwise hang for minutes).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The system daemon's socket: systemd's `RuntimeDirectory=tessera` (deploy/systemd/tessera.service).
pub const SYSTEM_SOCKET: &str = "/run/tessera/tessera.sock";

/// A user's own daemon's socket: `$XDG_RUNTIME_DIR/tessera/tessera.sock`, else
/// `/tmp/tessera-<uid>/tessera.sock`. Root has none: its daemon is the system one.
fn user_socket() -> Option<PathBuf> {
    let uid = tessera_host::effective_uid();
    if uid == 0 {
        return None;
    }
    Some(match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("tessera").join("tessera.sock"),
        None => PathBuf::from(format!("/tmp/tessera-{uid}/tessera.sock")),
    })
}

/// Where `tessera serve` listens unless told otherwise: [`SYSTEM_SOCKET`] as root, the user's own
/// socket (`$XDG_RUNTIME_DIR/tessera/tessera.sock`, else `/tmp/tessera-<uid>/tessera.sock`)
/// otherwise.
pub fn serve_socket() -> PathBuf {
    user_socket().unwrap_or_else(|| PathBuf::from(SYSTEM_SOCKET))
}

/// Where the client commands look unless told otherwise: the user's own daemon when its socket
/// exists, else the system daemon's [`SYSTEM_SOCKET`] (so a normal user reaches the node's
/// daemon with no flag).
pub fn default_socket() -> PathBuf {
    user_socket().filter(|p| is_socket(p)).unwrap_or_else(|| PathBuf::from(SYSTEM_SOCKET))
}

fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// Where the daemon listens.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp { addr: String, token: String },
}

#[derive(Debug, Clone)]
pub struct Client {
    pub endpoint: Endpoint,
    /// The deadline for one whole exchange: connecting, sending, and reading the reply.
    pub timeout: Duration,
}

/// Status and raw body of a response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

type Sender = http1::SendRequest<Full<Bytes>>;

impl Client {
    pub fn new(endpoint: Endpoint) -> Self {
        Client { endpoint, timeout: Duration::from_secs(330) }
    }

    fn target(&self) -> String {
        match &self.endpoint {
            Endpoint::Unix(p) => p.display().to_string(),
            Endpoint::Tcp { addr, .. } => addr.clone(),
        }
    }

    /// Send one request and read the whole response.
    pub fn request<B: Serialize + ?Sized>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
    ) -> Result<Response, ClientError> {
        let payload = match body {
            Some(b) => Some(serde_json::to_vec(b).map_err(|e| self.unsendable(format!("encoding its body: {e}")))?),
            None => None,
        };
        let request = self.build(method, path, payload)?;
        self.block_on(self.exchange(request, MAX_REPLY_BYTES))
    }

    fn protocol(&self, detail: String) -> ClientError {
        ClientError::Protocol { target: self.target(), detail }
    }

    fn unsendable(&self, detail: String) -> ClientError {
        ClientError::Request { target: self.target(), detail }
    }

    fn build(
        &self,
        method: &str,
        path: &str,
        payload: Option<Vec<u8>>,
    ) -> Result<http::Request<Full<Bytes>>, ClientError> {
        let method = http::Method::from_bytes(method.as_bytes())
            .map_err(|e| self.unsendable(format!("the method {method:?}: {e}")))?;
        let mut builder = http::Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, "tessera")
            .header(CONNECTION, "close")
            .header(ACCEPT, "application/json");
        if let Endpoint::Tcp { token, .. } = &self.endpoint {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                self.unsendable("the token holds characters an HTTP header cannot carry (a line break?)".into())
            })?;
            value.set_sensitive(true);
            builder = builder.header(AUTHORIZATION, value);
        }
        let body = match payload {
            Some(p) => {
                builder = builder.header(CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(p))
            }
            None => Full::new(Bytes::new()),
        };
        builder.body(body).map_err(|e| self.unsendable(format!("the path {path:?}: {e}")))
    }

    /// Run `fut` to completion on a current-thread runtime of its own (on a thread of its own
    /// when the caller is already inside a runtime, where blocking on another would panic).
    /// `SIGPIPE` is blocked on that thread meanwhile: the CLI restores its default for its own
    /// output, but a daemon that closes the connection while the request is written (refusing
    /// an oversized one, restarting) must give an error, not end the CLI without a word.
    fn block_on<T: Send>(&self, fut: impl Future<Output = Result<T, ClientError>> + Send) -> Result<T, ClientError> {
        let run = move || {
            let _sigpipe = tessera_host::signals::SigpipeBlocked::new();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()
                .map_err(|source| ClientError::Io { target: self.target(), source })?;
            rt.block_on(fut)
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            std::thread::scope(|s| s.spawn(run).join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
        } else {
            run()
        }
    }

    /// Connect, send `request`, read the reply (at most `limit` bytes), all within the timeout.
    async fn exchange(&self, request: http::Request<Full<Bytes>>, limit: u64) -> Result<Response, ClientError> {
        let work = async {
            let mut sender = self.connect().await?;
            let reply = sender.send_request(request).await.map_err(|e| self.transport(&e, "replying"))?;
            let status = reply.status().as_u16();
            // A declared length over the cap is refused before reading any of it.
            let declared = reply.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            if declared.is_some_and(|n| n > limit) {
                return Err(ClientError::TooLarge { target: self.target(), limit });
            }
            let body = Limited::new(reply.into_body(), usize::try_from(limit).unwrap_or(usize::MAX))
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<LengthLimitError>() {
                        ClientError::TooLarge { target: self.target(), limit }
                    } else if let Some(h) = e.downcast_ref::<hyper::Error>() {
                        self.transport(h, "finishing its reply")
                    } else {
                        self.protocol(format!("reading the reply: {e}"))
                    }
                })?
                .to_bytes();
            Ok(Response { status, body: body.to_vec() })
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .unwrap_or_else(|_| Err(ClientError::Timeout { target: self.target(), timeout: self.timeout }))
    }

    async fn connect(&self) -> Result<Sender, ClientError> {
        let target = self.target();
        let connect_error = |source| ClientError::Connect { target: target.clone(), source };
        let limit = CONNECT_TIMEOUT.min(self.timeout);
        let timed_out = || {
            connect_error(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no connection within {} s", limit.as_secs_f64()),
            ))
        };
        match &self.endpoint {
            Endpoint::Unix(p) => {
                let stream = tokio::time::timeout(limit, tokio::net::UnixStream::connect(p))
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(connect_error)?;
                self.handshake(stream).await
            }
            Endpoint::Tcp { addr, .. } => {
                let stream = tokio::time::timeout(limit, tokio::net::TcpStream::connect(addr.as_str()))
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(connect_error)?;
                self.handshake(stream).await
            }
        }
    }

    /// The HTTP/1 handshake on a connected stream; the connection is driven by a task of the
    /// current runtime, and its failure reaches the request's future.
    async fn handshake<S>(&self, stream: S) -> Result<Sender, ClientError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) =
            http1::handshake(TokioIo::new(stream)).await.map_err(|e| self.transport(&e, "replying"))?;
        tokio::spawn(async move {
            // Its error, if any, is the request's too, and reported there.
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// A transport failure in words: the connection ending early (a reset, a broken pipe, an
    /// incomplete message) is [`ClientError::Closed`]; a reply that is not HTTP is
    /// [`ClientError::Protocol`].
    fn transport(&self, e: &hyper::Error, during: &'static str) -> ClientError {
        let target = self.target();
        if e.is_incomplete_message() || e.is_canceled() || e.is_closed() {
            return ClientError::Closed { target, during };
        }
        let mut source = e.source();
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
                return match io.kind() {
                    BrokenPipe | ConnectionAborted | ConnectionReset | UnexpectedEof => {
                        ClientError::Closed { target, during }
                    }
                    kind => ClientError::Io { target, source: std::io::Error::new(kind, io.to_string()) },
                };
            }
            source = s.source();
        }
        ClientError::Protocol { target, detail: e.to_string() }
    }

    /// Send a request and read the typed reply, or the daemon's refusal as [`ClientError::Api`].
    pub fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        self.typed(self.request(method, path, body)?)
    }

    /// A reply as its typed body, or the daemon's refusal as [`ClientError::Api`].
    fn typed<T: DeserializeOwned>(&self, r: Response) -> Result<T, ClientError> {
        if (200..300).contains(&r.status) {
            return serde_json::from_slice(&r.body).map_err(|e| ClientError::Protocol {
                target: self.target(),
                detail: format!("the reply is not what the client expects: {e}"),
            });
        }
        match serde_json::from_slice::<ErrorBody>(&r.body) {
            Ok(b) => Err(ClientError::Api { status: r.status, code: b.error.code, message: b.error.message }),
            Err(_) => Err(ClientError::Api {
                status: r.status,
                code: "unknown".into(),
                message: String::from_utf8_lossy(&r.body).into_owned(),
            }),
        }
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call::<(), T>("GET", path, None)
    }

    fn post<B: Serialize + ?Sized, T: DeserializeOwned>(&self, path: &str, body: Option<&B>) -> Result<T, ClientError> {
        self.call("POST", path, body)
    }

    pub fn submit(&self, req: &SubmitRequest) -> Result<SubmitReply, ClientError> {
        self.post("/v1/jobs", Some(req))
    }

    /// Submits every request (a job array), at most `parallel` at a time, each on a connection
    /// of its own, all from one runtime: the cost of a process and a runtime is paid once, not
    /// per job. The answers are in the requests' order; one refused does not stop the others.
    pub fn submit_many(&self, reqs: &[SubmitRequest], parallel: usize) -> Vec<Result<SubmitReply, ClientError>> {
        let built: Vec<Result<http::Request<Full<Bytes>>, ClientError>> = reqs
            .iter()
            .map(|r| {
                let payload = serde_json::to_vec(r).map_err(|e| self.unsendable(format!("encoding its body: {e}")))?;
                self.build("POST", "/v1/jobs", Some(payload))
            })
            .collect();
        let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
        let run = async {
            let mut tasks = tokio::task::JoinSet::new();
            let mut out: Vec<Option<Result<SubmitReply, ClientError>>> = (0..built.len()).map(|_| None).collect();
            for (i, request) in built.into_iter().enumerate() {
                let request = match request {
                    Ok(r) => r,
                    Err(e) => {
                        out[i] = Some(Err(e));
                        continue;
                    }
                };
                let (client, gate) = (self.clone(), gate.clone());
                tasks.spawn(async move {
                    let _permit = gate.acquire_owned().await;
                    let reply = client.exchange(request, MAX_REPLY_BYTES).await.and_then(|r| client.typed(r));
                    (i, reply)
                });
            }
            while let Some(done) = tasks.join_next().await {
                match done {
                    Ok((i, reply)) => out[i] = Some(reply),
                    Err(e) => return Err(self.protocol(format!("a submission's task failed: {e}"))),
                }
            }
            Ok(out)
        };
        match self.block_on(run) {
            Ok(out) => out
                .into_iter()
                .map(|r| r.unwrap_or_else(|| Err(self.protocol("a submission was never sent".into()))))
                .collect(),
            // No runtime, or a task that panicked: every submission not known to be made says so.
            Err(e) => {
                let detail = e.to_string();
                reqs.iter().map(|_| Err(self.unsendable(detail.clone()))).collect()
            }
        }
    }

    /// What a submission would get now, queueing nothing.
    pub fn dry_run(&self, req: &SubmitRequest) -> Result<DryRunReply, ClientError> {
        self.post("/v1/jobs/dry-run", Some(req))
    }

    /// Admins: queue work another system runs (`POST /v1/work`); Tessera holds its slices once
    /// it runs (poll [`Client::job`]) until [`Client::release`].
    pub fn submit_work(&self, req: &WorkRequest) -> Result<SubmitReply, ClientError> {
        self.post("/v1/work", Some(req))
    }

    /// External work ended (`POST /v1/jobs/{id}/release`): the job after it, its slices free.
    pub fn release(&self, id: u64, req: &ReleaseRequest) -> Result<JobView, ClientError> {
        self.post(&format!("/v1/jobs/{id}/release"), Some(req))
    }

    /// Every job `q` matches (`q.limit` and `q.after` ignored): the pages of
    /// [`JobQuery::MAX_LIMIT`] followed to the end, in one list by increasing id.
    pub fn jobs(&self, q: &JobQuery) -> Result<JobList, ClientError> {
        let mut page = JobQuery { limit: Some(JobQuery::MAX_LIMIT), after: None, ..q.clone() };
        let mut all = self.jobs_page(&page)?;
        while let Some(after) = all.next {
            // Cursors only move forward; one that does not would loop for ever.
            if page.after.is_some_and(|before| after <= before) {
                return Err(self.protocol(format!("the listing's cursor went back to {after}")));
            }
            page.after = Some(after);
            let more = self.jobs_page(&page)?;
            all.jobs.extend(more.jobs);
            all.next = more.next;
        }
        Ok(all)
    }

    /// One page (`GET /v1/jobs`): at most `q.limit` jobs (the daemon's default page when none)
    /// after `q.after`; its `next` says where the next page starts.
    pub fn jobs_page(&self, q: &JobQuery) -> Result<JobList, ClientError> {
        self.get(&format!("/v1/jobs?{}", q.query_string()))
    }

    pub fn job(&self, id: u64) -> Result<JobView, ClientError> {
        self.get(&format!("/v1/jobs/{id}"))
    }

    pub fn cancel(&self, id: u64) -> Result<CancelReply, ClientError> {
        self.post::<(), _>(&format!("/v1/jobs/{id}/cancel"), None)
    }

    /// The job once it ends, or as it is after `timeout_ms`.
    pub fn wait(&self, id: u64, timeout_ms: u64) -> Result<JobView, ClientError> {
        self.get(&format!("/v1/jobs/{id}/wait?timeout_ms={timeout_ms}"))
    }

    /// A job's output in the order it was written, from `q.from` (or its last `q.tail` lines).
    pub fn logs(&self, id: u64, q: &LogQuery) -> Result<LogChunk, ClientError> {
        self.get(&format!("/v1/jobs/{id}/logs?{}", q.query_string()))
    }

    pub fn gpus(&self) -> Result<GpuList, ClientError> {
        self.get("/v1/gpus")
    }

    pub fn drain(&self, gpu: u32, reason: &str) -> Result<DrainReply, ClientError> {
        self.post(&format!("/v1/gpus/{gpu}/drain"), Some(&DrainRequest { reason: reason.to_owned() }))
    }

    pub fn undrain(&self, gpu: u32) -> Result<DrainReply, ClientError> {
        self.post::<(), _>(&format!("/v1/gpus/{gpu}/undrain"), None)
    }

    pub fn layout(&self, gpu: u32, req: &LayoutRequest) -> Result<LayoutReply, ClientError> {
        self.post(&format!("/v1/gpus/{gpu}/layout"), Some(req))
    }

    pub fn health(&self) -> Result<HealthReply, ClientError> {
        self.get("/v1/health")
    }

    pub fn health_clear(&self, gpu: u32) -> Result<HealthClearReply, ClientError> {
        self.post::<(), _>(&format!("/v1/gpus/{gpu}/health/clear"), None)
    }
}

#[cfg(test)]
mod tests {
    //! The client's failures against a tiny scripted server: each case is a reply (or none) and
    //! the error the CLI must show.

    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;
    use std::thread::JoinHandle;

    use super::*;

    /// What the scripted server does after writing its reply.
    #[derive(Debug, Clone, Copy)]
    enum Then {
        Close,
        /// Keep the connection open this long (a daemon that stalls).
        Hang(Duration),
    }

    /// Read one request (head and a `Content-Length` body) and return it as text.
    fn read_request(s: &mut impl Read) -> String {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
            buf.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&buf).into_owned();
        let length = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
            .unwrap_or(0usize);
        let mut body = vec![0u8; length];
        s.read_exact(&mut body).unwrap();
        head + &String::from_utf8_lossy(&body)
    }

    fn answer(mut s: impl Read + Write, reply: &[u8], then: Then) -> String {
        let request = read_request(&mut s);
        let _ = s.write_all(reply);
        let _ = s.flush();
        if let Then::Hang(d) = then {
            std::thread::sleep(d);
        }
        request
    }

    /// A Unix-socket server answering one connection with `reply`; it hands back the request.
    fn unix_server(reply: &'static [u8], then: Then) -> (tempfile::TempDir, Client, JoinHandle<String>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || answer(listener.accept().unwrap().0, reply, then));
        (dir, Client::new(Endpoint::Unix(path)), server)
    }

    fn get(c: &Client, limit: u64) -> Result<Response, ClientError> {
        c.block_on(c.exchange(c.build("GET", "/v1/jobs?all=false", None)?, limit))
    }

    /// Each case: the server's bytes and the message the client must give.
    #[test]
    fn replies_cut_short_oversize_or_garbled_are_named() {
        let cases: &[(&str, &[u8], u64, &str)] = &[
            (
                "nothing at all (a restart while the request was handled)",
                b"",
                1000,
                "closed the connection before replying (was it restarted?)",
            ),
            (
                "the status line only",
                b"HTTP/1.1 200 OK\r\n",
                1000,
                "closed the connection before replying (was it restarted?)",
            ),
            ("half the head", b"HTTP/1.1 200 OK\r\nContent-Len", 1000, "closed the connection before replying"),
            (
                "a body cut short",
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"jobs\":",
                1000,
                "closed the connection before finishing its reply (was it restarted?)",
            ),
            (
                "a chunked body cut short",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123",
                1000,
                "closed the connection before finishing its reply",
            ),
            (
                "a declared length over the cap",
                b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n",
                1000,
                "sent a reply of more than 1000 bytes, the most the client reads",
            ),
            (
                "a chunked body over the cap",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n01234567\r\n8\r\n01234567\r\n0\r\n\r\n",
                10,
                "sent a reply of more than 10 bytes",
            ),
            ("not HTTP", b"SSH-2.0-OpenSSH_9.2\r\n\r\n", 1000, "sent a malformed response"),
        ];
        for (what, reply, limit, want) in cases {
            let (_dir, c, server) = unix_server(reply, Then::Close);
            let err = match get(&c, *limit) {
                Ok(r) => panic!("{what}: expected an error, got HTTP {}", r.status),
                Err(e) => e.to_string(),
            };
            assert!(err.contains(want), "{what}: {err:?} does not say {want:?}");
            assert!(err.contains("d.sock"), "{what}: {err:?} names the socket");
            server.join().unwrap();
        }
    }

    /// A declared length over the cap is refused at once, without waiting for the body.
    #[test]
    fn oversize_declared_reply_is_refused_before_reading_it() {
        let (_dir, c, server) =
            unix_server(b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n", Then::Hang(Duration::from_secs(2)));
        let t = std::time::Instant::now();
        let err = get(&c, MAX_REPLY_BYTES).unwrap_err();
        assert!(matches!(err, ClientError::TooLarge { limit: MAX_REPLY_BYTES, .. }), "{err:?}");
        assert!(t.elapsed() < Duration::from_secs(1), "took {:?}", t.elapsed());
        server.join().unwrap();
    }

    #[test]
    fn a_daemon_that_never_answers_times_out() {
        let (_dir, mut c, server) = unix_server(b"", Then::Hang(Duration::from_secs(2)));
        c.timeout = Duration::from_millis(300);
        let err = c.request::<()>("GET", "/v1/health", None).unwrap_err();
        assert_eq!(err.to_string(), format!("the daemon at {} did not reply within 0.3 s", c.target()));
        server.join().unwrap();
    }

    #[test]
    fn no_daemon_says_where_it_looked() {
        let dir = tempfile::tempdir().unwrap();
        // No socket file at all, and a socket file nobody listens on.
        let missing = dir.path().join("none.sock");
        let stale = dir.path().join("stale.sock");
        drop(UnixListener::bind(&stale).unwrap());
        for path in [missing, stale] {
            let err = Client::new(Endpoint::Unix(path.clone())).gpus().unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
            assert!(text.starts_with(&format!("cannot reach the daemon at {}: ", path.display())), "{text}");
            assert!(text.contains("is `tessera serve` running?"), "{text}");
        }
        // TCP: a port that was just closed refuses.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let err = Client::new(Endpoint::Tcp { addr: port.to_string(), token: "t".into() }).gpus().unwrap_err();
        assert!(err.to_string().starts_with(&format!("cannot reach the daemon at {port}: ")), "{err}");
        assert!(err.to_string().contains("refused"), "{err}");
    }

    /// A whole exchange: the request as sent (method, path, token, JSON body), a chunked reply
    /// decoded, and a refusal read as the daemon's error body.
    #[test]
    fn requests_carry_the_token_and_body_and_replies_decode() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let ok = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\n{\"id\":4\r\n1\r\n}\r\n0\r\n\r\n";
            let body = r#"{"error":{"code":"conflict","message":"GPU 3 is busy"}}"#;
            let refused = format!("HTTP/1.1 409 Conflict\r\nContent-Length: {}\r\n\r\n{body}", body.len());
            let first = answer(listener.accept().unwrap().0, ok, Then::Close);
            let second = answer(listener.accept().unwrap().0, refused.as_bytes(), Then::Close);
            (first, second)
        });
        let c = Client::new(Endpoint::Tcp { addr, token: "s3cret".into() });
        let reply: serde_json::Value = c.call("POST", "/v1/jobs", Some(&serde_json::json!({"x": 1}))).unwrap();
        assert_eq!(reply, serde_json::json!({"id": 4}));
        let err = c.undrain(3).unwrap_err();
        assert!(
            matches!(&err, ClientError::Api { status: 409, code, message } if code == "conflict" && message == "GPU 3 is busy"),
            "{err:?}"
        );
        let (first, second) = server.join().unwrap();
        assert!(first.starts_with("POST /v1/jobs HTTP/1.1\r\n"), "{first}");
        let lower = first.to_ascii_lowercase();
        assert!(lower.contains("authorization: bearer s3cret\r\n"), "{first}");
        assert!(lower.contains("content-type: application/json\r\n"), "{first}");
        assert!(first.ends_with("\r\n\r\n{\"x\":1}"), "{first}");
        assert!(second.starts_with("POST /v1/gpus/3/undrain HTTP/1.1\r\n"), "{second}");
    }

    /// A token no header can carry is refused before anything is sent.
    #[test]
    fn a_token_with_a_line_break_is_refused() {
        let c = Client::new(Endpoint::Tcp { addr: "127.0.0.1:9".into(), token: "a\r\nX-Evil: 1".into() });
        let err = c.health().unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot send the request to the daemon at 127.0.0.1:9: the token holds characters an HTTP header cannot \
             carry (a line break?)"
        );
    }

    /// Called from inside a runtime (a test or tool that is async itself), the client still works.
    #[test]
    fn works_from_inside_a_runtime() {
        let (_dir, c, server) = unix_server(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", Then::Close);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let r = rt.block_on(async { c.request::<()>("GET", "/v1/health", None) }).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"{}"[..]));
        server.join().unwrap();
    }

    /// The default sockets: root's daemon is the system one; a user's own daemon is found when
    /// its socket exists, else the system one.
    #[test]
    fn default_sockets() {
        if tessera_host::effective_uid() == 0 {
            assert_eq!(serve_socket(), PathBuf::from(SYSTEM_SOCKET));
            assert_eq!(default_socket(), PathBuf::from(SYSTEM_SOCKET));
        } else {
            let user = user_socket().unwrap();
            assert_eq!(serve_socket(), user);
            assert_eq!(default_socket(), if is_socket(&user) { user } else { PathBuf::from(SYSTEM_SOCKET) });
        }
    }
}
