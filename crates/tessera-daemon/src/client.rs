//! A small synchronous HTTP/1.1 client for the daemon's API, over the Unix socket or TCP. The
//! CLI is synchronous and talks to one local daemon, so a few dozen lines beat a client stack.
//! Requests and replies are the typed structs of `wire.rs`; an error reply becomes
//! [`ClientError::Api`] with its status, code and message.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::wire::{
    CancelReply, DrainReply, DrainRequest, ErrorBody, GpuList, HealthClearReply, HealthReply, JobList, JobQuery,
    JobView, LayoutReply, LayoutRequest, LogChunk, Stream, SubmitReply, SubmitRequest,
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
    #[error("the daemon at {target} sent a malformed response: {detail}")]
    Protocol { target: String, detail: String },
    /// The daemon refused the request: its status and error body.
    #[error("{message} (HTTP {status})")]
    Api { status: u16, code: String, message: String },
}

/// The largest reply the client reads (a page of logs is far smaller).
const MAX_REPLY_BYTES: u64 = 256 * 1024 * 1024;

/// Where the daemon listens.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp { addr: String, token: String },
}

#[derive(Debug, Clone)]
pub struct Client {
    pub endpoint: Endpoint,
    pub timeout: Duration,
}

/// Status and raw body of a response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

trait Conn: Read + Write {}
impl<T: Read + Write> Conn for T {}

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

    fn connect(&self) -> Result<Box<dyn Conn>, ClientError> {
        let target = self.target();
        match &self.endpoint {
            Endpoint::Unix(p) => {
                let s =
                    UnixStream::connect(p).map_err(|source| ClientError::Connect { target: target.clone(), source })?;
                s.set_read_timeout(Some(self.timeout)).map_err(|source| ClientError::Io { target, source })?;
                Ok(Box::new(s))
            }
            Endpoint::Tcp { addr, .. } => {
                let s = std::net::TcpStream::connect(addr)
                    .map_err(|source| ClientError::Connect { target: target.clone(), source })?;
                s.set_read_timeout(Some(self.timeout)).map_err(|source| ClientError::Io { target, source })?;
                Ok(Box::new(s))
            }
        }
    }

    /// Send one request and read the whole response.
    pub fn request<B: Serialize + ?Sized>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
    ) -> Result<Response, ClientError> {
        let target = self.target();
        let io = |source| ClientError::Io { target: target.clone(), source };
        let payload = match body {
            Some(b) => serde_json::to_string(b).map_err(|e| ClientError::Protocol {
                target: target.clone(),
                detail: format!("encoding the request: {e}"),
            })?,
            None => String::new(),
        };
        let mut stream = self.connect()?;
        let mut head =
            format!("{method} {path} HTTP/1.1\r\nHost: tessera\r\nConnection: close\r\nAccept: application/json\r\n");
        if let Endpoint::Tcp { token, .. } = &self.endpoint {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        if body.is_some() {
            head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", payload.len()));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).map_err(io)?;
        stream.write_all(payload.as_bytes()).map_err(io)?;
        stream.flush().map_err(io)?;
        let mut reader = BufReader::new(stream);
        let mut status_line = String::new();
        reader.read_line(&mut status_line).map_err(io)?;
        let status: u16 = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| {
            ClientError::Protocol { target: target.clone(), detail: format!("status line {status_line:?}") }
        })?;
        // The daemon always answers with a `Content-Length` (its connection layer collects
        // every body); anything else is not the daemon.
        let mut length: Option<u64> = None;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).map_err(io)? == 0 {
                break;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().ok();
                } else if k.eq_ignore_ascii_case("transfer-encoding") {
                    return Err(ClientError::Protocol {
                        target: target.clone(),
                        detail: format!("Transfer-Encoding {}: the daemon answers with a Content-Length", v.trim()),
                    });
                }
            }
        }
        let mut raw = Vec::new();
        match length {
            Some(n) if n > MAX_REPLY_BYTES => {
                return Err(ClientError::Protocol {
                    target: target.clone(),
                    detail: format!("a {n}-byte reply (at most {MAX_REPLY_BYTES})"),
                });
            }
            Some(n) => {
                raw.resize(usize::try_from(n).unwrap_or(0), 0);
                reader.read_exact(&mut raw).map_err(io)?;
            }
            None => {
                reader.take(MAX_REPLY_BYTES).read_to_end(&mut raw).map_err(io)?;
            }
        }
        Ok(Response { status, body: raw })
    }

    /// Send a request and read the typed reply, or the daemon's refusal as [`ClientError::Api`].
    pub fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let r = self.request(method, path, body)?;
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

    pub fn jobs(&self, q: &JobQuery) -> Result<JobList, ClientError> {
        let mut path = format!("/v1/jobs?all={}", q.all);
        if !q.states.is_empty() {
            let states: Vec<&str> = q.states.iter().map(|s| s.as_str()).collect();
            path.push_str(&format!("&state={}", states.join(",")));
        }
        self.get(&path)
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

    pub fn logs(&self, id: u64, rank: u32, stream: Stream, offset: u64) -> Result<LogChunk, ClientError> {
        self.get(&format!("/v1/jobs/{id}/logs?rank={rank}&stream={}&offset={offset}", stream.as_str()))
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
