//! A small synchronous HTTP/1.1 client for the daemon's API, over the Unix socket or TCP. The
//! CLI is synchronous and talks to one local daemon, so a few dozen lines beat a client stack.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

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
    pub timeout: Duration,
}

/// Status and JSON body of a response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: Value,
}

impl Response {
    /// The error message of a 4xx/5xx body.
    pub fn error_message(&self) -> String {
        self.body["error"]["message"].as_str().map_or_else(|| self.body.to_string(), str::to_string)
    }
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

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

    fn connect(&self) -> Result<Box<dyn Stream>, ClientError> {
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
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Response, ClientError> {
        let target = self.target();
        let io = |source| ClientError::Io { target: target.clone(), source };
        let mut stream = self.connect()?;
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
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
        let mut length: Option<usize> = None;
        let mut chunked = false;
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
                } else if k.eq_ignore_ascii_case("transfer-encoding") && v.trim().eq_ignore_ascii_case("chunked") {
                    chunked = true;
                }
            }
        }
        let mut raw = Vec::new();
        if chunked {
            loop {
                let mut size_line = String::new();
                reader.read_line(&mut size_line).map_err(io)?;
                let size = usize::from_str_radix(size_line.trim(), 16).map_err(|_| ClientError::Protocol {
                    target: target.clone(),
                    detail: format!("chunk size {size_line:?}"),
                })?;
                if size == 0 {
                    break;
                }
                let mut chunk = vec![0u8; size + 2];
                reader.read_exact(&mut chunk).map_err(io)?;
                raw.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(n) = length {
            raw.resize(n, 0);
            reader.read_exact(&mut raw).map_err(io)?;
        } else {
            reader.read_to_end(&mut raw).map_err(io)?;
        }
        let body = if raw.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&raw).map_err(|e| ClientError::Protocol {
                target: target.clone(),
                detail: format!("body is not JSON: {e}"),
            })?
        };
        Ok(Response { status, body })
    }
}
