//! The daemon's own HTTP/1.1 connection layer. `axum::serve` neither times out nor limits
//! connections, nor bounds request heads and bodies, and writes its 4xx replies empty, so any
//! local user could starve the daemon. Here every connection is read under deadlines and size
//! limits ([`HttpLimits`]), counted per peer, handed to the API [`axum::Router`] one request at
//! a time, and every error reply carries the API's JSON error body ([`ErrorBody`]).
//!
//! `server.rs` owns the listeners and the daemon's lifetime; `conn` speaks HTTP/1.1 on one
//! connection; `limiter` counts connections per peer.

pub(crate) mod conn;
pub(crate) mod limiter;

use std::fmt;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::Response;
use http::StatusCode;
use http::header::{CONTENT_TYPE, HeaderValue};
use serde::{Deserialize, Serialize};

/// Limits on connections and requests, against clients that would exhaust the daemon. The
/// daemon's config embeds it as `[server.limits]`; every field has a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpLimits {
    /// Connections one peer may hold open at once: per uid on the Unix socket, per remote IP
    /// address on TCP. The next one is answered 503 and closed. Default 64.
    pub max_connections_per_peer: usize,
    /// Connections held open at once, all peers together. Default 1024.
    pub max_connections: usize,
    /// Time to receive a whole request head (request line and headers), counted from the
    /// connection's start for its first request and from the first byte for each later one;
    /// past it a partial head is answered 408 and the connection closed. Default 10 000 ms.
    pub header_timeout_ms: u64,
    /// Time a kept-alive connection may wait for its next request; past it the connection is
    /// closed without a reply. Default 30 000 ms.
    pub idle_timeout_ms: u64,
    /// Time to receive a request's whole body once its head is in; past it the request is
    /// answered 408 and the connection closed. Default 30 000 ms.
    pub body_timeout_ms: u64,
    /// Time to write one whole response to a client that reads slowly or not at all; past it
    /// the connection is dropped. Default 30 000 ms.
    pub write_timeout_ms: u64,
    /// Bytes in a request line and its headers together, and in a chunked body's trailers;
    /// more is answered 431. Default 16 KiB.
    pub max_header_bytes: usize,
    /// Bytes in a request target (path and query); more is answered 414. Default 8 KiB.
    pub max_uri_bytes: usize,
    /// Bytes in a request body (after chunked decoding); more is answered 413, from the
    /// `Content-Length` before any of the body is read. Default 1 MiB.
    pub max_body_bytes: usize,
    /// At shutdown, how long requests in flight may take to finish before their connections
    /// are dropped. Default 5 000 ms.
    pub shutdown_grace_ms: u64,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections_per_peer: 64,
            max_connections: 1024,
            header_timeout_ms: 10_000,
            idle_timeout_ms: 30_000,
            body_timeout_ms: 30_000,
            write_timeout_ms: 30_000,
            max_header_bytes: 16 * 1024,
            max_uri_bytes: 8 * 1024,
            max_body_bytes: 1024 * 1024,
            shutdown_grace_ms: 5_000,
        }
    }
}

/// A limit that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    /// A count, size or time that must be positive is 0.
    #[error("server.limits.{field} is 0; it must be at least 1")]
    Zero {
        /// The field's name in `[server.limits]`.
        field: &'static str,
    },
    /// The request head limit leaves no room for a request line.
    #[error("server.limits.max_header_bytes is {value}; a request head needs at least {min} bytes")]
    HeadTooSmall {
        /// The configured value.
        value: usize,
        /// The smallest value accepted.
        min: usize,
    },
}

/// The smallest head limit accepted: a short request line and a `Host` header.
const MIN_HEADER_BYTES: usize = 256;

impl HttpLimits {
    /// Check that every limit can work: counts, sizes and times are positive.
    pub fn validate(&self) -> Result<(), LimitsError> {
        let positive = [
            ("max_connections_per_peer", self.max_connections_per_peer as u64),
            ("max_connections", self.max_connections as u64),
            ("header_timeout_ms", self.header_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("body_timeout_ms", self.body_timeout_ms),
            ("write_timeout_ms", self.write_timeout_ms),
            ("max_uri_bytes", self.max_uri_bytes as u64),
            ("max_body_bytes", self.max_body_bytes as u64),
        ];
        if let Some((field, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(LimitsError::Zero { field });
        }
        if self.max_header_bytes < MIN_HEADER_BYTES {
            return Err(LimitsError::HeadTooSmall { value: self.max_header_bytes, min: MIN_HEADER_BYTES });
        }
        Ok(())
    }

    pub(crate) fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }
    pub(crate) fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
    pub(crate) fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms)
    }
    pub(crate) fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }
    pub(crate) fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

/// Who is on the other end of a connection. Inserted into every request's extensions, so the
/// API layer can tell the Unix socket (peer credentials) from TCP (bearer token).
#[derive(Debug, Clone)]
pub enum PeerInfo {
    /// A Unix socket peer, from `SO_PEERCRED` at connect time.
    Unix {
        /// The peer's effective uid.
        uid: u32,
        /// The peer's effective gid.
        gid: u32,
        /// The peer's process id, where the kernel says.
        pid: Option<u32>,
    },
    /// A TCP peer.
    Tcp {
        /// The peer's address and port.
        addr: std::net::SocketAddr,
    },
}

impl fmt::Display for PeerInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerInfo::Unix { uid, .. } => write!(f, "uid {uid}"),
            PeerInfo::Tcp { addr } => write!(f, "{}", addr.ip()),
        }
    }
}

/// The JSON body of every error reply: `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The inside of an [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// A stable snake_case code for programs, e.g. `body_too_large`.
    pub code: String,
    /// A sentence for people, naming the problem and the limit.
    pub message: String,
}

/// The serialized [`ErrorBody`] for `code` and `message`.
pub(crate) fn error_json(code: &str, message: String) -> Bytes {
    let body = ErrorBody { error: ErrorDetail { code: code.to_string(), message } };
    // Serializing two strings cannot fail; should it ever, the reply still says which error.
    Bytes::from(serde_json::to_vec(&body).unwrap_or_else(|_| format!("{{\"error\":{{\"code\":\"{code}\"}}}}").into()))
}

/// A JSON error response: `status`, `Content-Type: application/json` and an [`ErrorBody`].
pub fn json_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let mut response = Response::new(Body::from(error_json(code, message.into())));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The code used when a 4xx/5xx response comes without a JSON body of its own: the names the
/// API uses where it has one, otherwise the status's reason in snake_case.
pub(crate) fn code_for_status(status: StatusCode) -> String {
    let known = match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        409 => "conflict",
        413 => "body_too_large",
        414 => "uri_too_long",
        415 => "unsupported_media_type",
        422 => "unprocessable",
        431 => "headers_too_large",
        500 => "internal",
        501 => "not_implemented",
        503 => "unavailable",
        _ => "",
    };
    if !known.is_empty() {
        return known.to_string();
    }
    let Some(reason) = status.canonical_reason() else {
        return format!("http_{}", status.as_u16());
    };
    let mut code = String::with_capacity(reason.len());
    for c in reason.chars() {
        match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' => code.push(c.to_ascii_lowercase()),
            ' ' | '-' if !code.ends_with('_') => code.push('_'),
            _ => {}
        }
    }
    if code.is_empty() { format!("http_{}", status.as_u16()) } else { code }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_a_zero_limit_is_named() {
        assert_eq!(HttpLimits::default().validate(), Ok(()));
        let limits = HttpLimits { body_timeout_ms: 0, ..HttpLimits::default() };
        assert_eq!(limits.validate(), Err(LimitsError::Zero { field: "body_timeout_ms" }));
        let limits = HttpLimits { max_header_bytes: 10, ..HttpLimits::default() };
        assert!(limits.validate().unwrap_err().to_string().contains("max_header_bytes is 10"));
    }

    #[test]
    fn codes_for_statuses() {
        for (status, code) in [
            (405, "method_not_allowed"),
            (422, "unprocessable"),
            (418, "im_a_teapot"),
            (507, "insufficient_storage"),
            (599, "http_599"),
        ] {
            assert_eq!(code_for_status(StatusCode::from_u16(status).unwrap()), code, "{status}");
        }
    }

    #[test]
    fn error_body_round_trips() {
        let bytes = error_json("uri_too_long", "the target is 9000 bytes; the limit is 8192".into());
        let body: ErrorBody = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body.error.code, "uri_too_long");
        assert_eq!(
            String::from_utf8(bytes.to_vec()).unwrap(),
            r#"{"error":{"code":"uri_too_long","message":"the target is 9000 bytes; the limit is 8192"}}"#
        );
    }
}
