//! HTTP/1.1 on one connection: read each request head and body under the deadlines and sizes of
//! [`HttpLimits`], hand the request to the router, write the response with a `Content-Length`,
//! and keep the connection for the next request while both sides want it. Requests are served
//! one after another (pipelined ones wait their turn), in the connection's own task.
//!
//! Every reply written here is JSON, and so is every 4xx/5xx the router leaves without a JSON
//! body, except the web view's HTML pages (`text/html`: its login form answers 401 with the form).
//! An error that leaves unread request bytes behind closes the connection after a short linger,
//! so the client reads the reply instead of a reset. A server-sent event stream
//! (`text/event-stream`, the web view's `/ui/live`) is written as the router produces it, each
//! piece under the write timeout, until it ends, the client goes or the server stops; its end
//! closes the connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::response::Response;
use bytes::{Buf, BufMut, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::response::Parts;
use http::{Method, Request, StatusCode, Uri, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::{Instant, timeout_at};

use super::limiter::{Limiter, Refused, Slot};
use super::{HttpLimits, PeerInfo, code_for_status, error_json, json_error};

/// Headers one request may have; more is answered 431.
const MAX_HEADERS: usize = 100;
/// The largest response body the router may produce; a larger one becomes a 500.
const MAX_RESPONSE_BYTES: usize = 16 << 20;
/// The longest chunk-size line of a chunked body, extensions included.
const MAX_CHUNK_LINE: usize = 1024;
/// How many bytes one read asks for while a request head comes in.
const HEAD_READ: usize = 4096;
/// The most one read asks for while a body comes in.
const BODY_READ: usize = 64 * 1024;
/// After an error reply that left request bytes unread: how long, and how much, to read and
/// discard before closing, so the client is not reset before it reads the reply.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 1 << 20;
/// Refused connections being answered at once; past this, new ones are closed unanswered.
const MAX_REFUSING: usize = 64;
/// How much of a router's plain-text error is kept as the JSON message.
const MAX_MESSAGE: usize = 1024;

/// What every connection of one server shares.
#[derive(Debug)]
pub(crate) struct Shared {
    app: Router,
    limits: HttpLimits,
    limiter: Arc<Limiter>,
    stopping: watch::Receiver<bool>,
    refusing: AtomicUsize,
}

impl Shared {
    /// `stopping` turns true when the server stops accepting.
    pub(crate) fn new(app: Router, limits: HttpLimits, stopping: watch::Receiver<bool>) -> Arc<Shared> {
        let limiter = Limiter::new(limits.max_connections, limits.max_connections_per_peer);
        Arc::new(Shared { app, limits, limiter, stopping, refusing: AtomicUsize::new(0) })
    }
}

/// What the accept loop does with a new connection: the future that serves it (or answers
/// why not), or `None` when it is closed at once because too many are being refused already.
pub(crate) fn admit<S>(
    io: S,
    peer: Result<PeerInfo, std::io::Error>,
    shared: &Arc<Shared>,
) -> Option<impl Future<Output = ()> + Send + 'static>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let admitted = match peer {
        Ok(peer) => match shared.limiter.acquire(super::limiter::PeerKey::of(&peer)) {
            Ok(slot) => Ok((peer, slot)),
            Err(refused) => Err(over_limit(&peer, refused)),
        },
        Err(e) => Err(json_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!("the daemon could not read this Unix socket peer's credentials (SO_PEERCRED: {e})"),
        )),
    };
    let refusal = match admitted {
        Ok((peer, slot)) => return Some(Admitted::Serve(io, peer, slot, shared.clone()).run()),
        Err(response) => response,
    };
    let ticket = RefusalTicket::take(shared)?;
    Some(Admitted::Refuse(io, refusal, ticket).run())
}

/// An admitted connection, or one to answer with an error and close.
enum Admitted<S> {
    Serve(S, PeerInfo, Slot, Arc<Shared>),
    Refuse(S, Response, RefusalTicket),
}

impl<S: AsyncRead + AsyncWrite + Unpin> Admitted<S> {
    async fn run(self) {
        match self {
            Admitted::Serve(io, peer, _slot, shared) => {
                let mut conn = Conn::new(io, &shared);
                conn.serve(&peer).await;
            }
            Admitted::Refuse(io, response, ticket) => {
                let mut conn = Conn::new(io, &ticket.shared);
                conn.refuse(response).await;
            }
        }
    }
}

/// One of the [`MAX_REFUSING`] places for answering refused connections.
struct RefusalTicket {
    shared: Arc<Shared>,
}

impl RefusalTicket {
    fn take(shared: &Arc<Shared>) -> Option<RefusalTicket> {
        let taken = shared.refusing.fetch_add(1, Ordering::AcqRel);
        let ticket = RefusalTicket { shared: shared.clone() };
        (taken < MAX_REFUSING).then_some(ticket)
    }
}

impl Drop for RefusalTicket {
    fn drop(&mut self) {
        self.shared.refusing.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The 503 for a connection over a limit, naming the peer and the limit.
fn over_limit(peer: &PeerInfo, refused: Refused) -> Response {
    let message = match refused {
        Refused::PerPeer(limit) => format!(
            "{peer} already has {limit} connections open to the daemon, the most one peer may hold \
             (server.limits.max_connections_per_peer); close some and retry"
        ),
        Refused::Total(limit) => format!(
            "the daemon already holds {limit} connections, the most it accepts (server.limits.max_connections), \
             so {peer} was refused; retry shortly"
        ),
    };
    let mut response = json_error(StatusCode::SERVICE_UNAVAILABLE, "too_many_connections", message);
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// A request refused by this layer: status, code and message of its JSON reply.
#[derive(Debug)]
struct Reject {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Reject {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Reject {
        Reject { status, code, message: message.into() }
    }

    fn into_response(self) -> Response {
        json_error(self.status, self.code, self.message)
    }
}

/// How a request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(usize),
    Chunked,
}

/// A parsed request head, and the bytes that came after it.
#[derive(Debug)]
struct Head {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    framing: Framing,
    expect_continue: bool,
    keep_alive: bool,
    rest: Bytes,
}

/// What a response needs to know about its request.
struct ReplyTo {
    method: Method,
    uri: Uri,
    version: Version,
    keep_alive: bool,
}

/// After writing a response.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    KeepAlive,
    Close,
    Gone,
}

/// One connection's state: the socket, what was read but not yet used, the response head.
struct Conn<'a, S> {
    io: S,
    buf: BytesMut,
    out: Vec<u8>,
    shared: &'a Shared,
    stopping: watch::Receiver<bool>,
}

impl<'a, S: AsyncRead + AsyncWrite + Unpin> Conn<'a, S> {
    fn new(io: S, shared: &'a Shared) -> Self {
        Conn { io, buf: BytesMut::new(), out: Vec::new(), shared, stopping: shared.stopping.clone() }
    }

    /// Serve requests until either side closes, a limit is hit or the server stops.
    async fn serve(&mut self, peer: &PeerInfo) {
        let mut first = true;
        loop {
            let mut head = match self.read_head(first).await {
                Ok(Some(head)) => head,
                Ok(None) => return,
                Err(reject) => return self.refuse(reject.into_response()).await,
            };
            first = false;
            let body = match self.read_body(&mut head).await {
                Ok(Some(body)) => body,
                Ok(None) => return,
                Err(reject) => return self.refuse(reject.into_response()).await,
            };
            let reply_to = ReplyTo {
                method: head.method.clone(),
                uri: head.uri.clone(),
                version: head.version,
                keep_alive: head.keep_alive,
            };
            let mut request = Request::new(Body::from(body));
            *request.method_mut() = head.method;
            *request.uri_mut() = head.uri;
            *request.version_mut() = head.version;
            *request.headers_mut() = head.headers;
            request.extensions_mut().insert(peer.clone());
            let Ok(response) = tower::ServiceExt::oneshot(self.shared.app.clone(), request).await;
            if self.respond(response, &reply_to).await != Next::KeepAlive {
                return;
            }
        }
    }

    /// Answer with `response`, then close; unread request bytes are read and discarded for a
    /// moment first, so that closing does not reset the connection before the client reads.
    async fn refuse(&mut self, response: Response) {
        let reply_to =
            ReplyTo { method: Method::GET, uri: Uri::default(), version: Version::HTTP_11, keep_alive: false };
        if self.respond(response, &reply_to).await == Next::Gone {
            return;
        }
        let deadline = Instant::now() + LINGER;
        if timeout_at(deadline, self.io.shutdown()).await.is_err() {
            return;
        }
        let mut discarded = 0;
        while discarded < LINGER_BYTES {
            self.buf.clear();
            match timeout_at(deadline, read_some(&mut self.io, &mut self.buf, HEAD_READ)).await {
                Ok(Ok(n)) if n > 0 => discarded += n,
                _ => return,
            }
        }
    }

    /// Read the next request head. `Ok(None)`: close without a reply (the client closed, the
    /// connection stayed idle too long, or the server is stopping between requests).
    async fn read_head(&mut self, first: bool) -> Result<Option<Head>, Reject> {
        let shared = self.shared;
        let limits = &shared.limits;
        let deadline = if self.buf.is_empty() {
            let start = Instant::now();
            let wait = if first { limits.header_timeout() } else { limits.idle_timeout() };
            let read = tokio::select! {
                read = timeout_at(after(start, wait), read_some(&mut self.io, &mut self.buf, HEAD_READ)) => read,
                _ = self.stopping.wait_for(|stopping| *stopping) => return Ok(None),
            };
            match read {
                Ok(Ok(n)) if n > 0 => {}
                _ => return Ok(None),
            }
            after(if first { start } else { Instant::now() }, limits.header_timeout())
        } else {
            after(Instant::now(), limits.header_timeout())
        };
        let mut scan = HeadScan::default();
        loop {
            if scan.complete(&self.buf)
                && let Some(head) = self.parse_head()?
            {
                return Ok(Some(head));
            }
            scan.check_size(&self.buf, limits)?;
            match timeout_at(deadline, read_some(&mut self.io, &mut self.buf, HEAD_READ)).await {
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) => return Ok(None),
                Err(_) => {
                    return Err(Reject::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "request_timeout",
                        format!(
                            "the request head did not arrive within {} ms (server.limits.header_timeout_ms)",
                            limits.header_timeout_ms
                        ),
                    ));
                }
            }
        }
    }

    /// Parse the complete head at the start of the buffer; `None` if it was not complete after
    /// all (empty lines before a request line).
    fn parse_head(&mut self) -> Result<Option<Head>, Reject> {
        let data = self.buf.split().freeze();
        match parse_head(&data, &self.shared.limits)? {
            Some(head) => Ok(Some(head)),
            None => {
                self.buf.extend_from_slice(&data);
                Ok(None)
            }
        }
    }

    /// Read the request's body. `Ok(None)`: the client went away.
    async fn read_body(&mut self, head: &mut Head) -> Result<Option<Bytes>, Reject> {
        let rest = std::mem::take(&mut head.rest);
        let len = match head.framing {
            Framing::Empty => {
                self.buf.extend_from_slice(&rest);
                return Ok(Some(Bytes::new()));
            }
            Framing::Length(len) if rest.len() >= len => {
                self.buf.extend_from_slice(&rest[len..]);
                return Ok(Some(rest.slice(..len)));
            }
            Framing::Length(len) => Some(len),
            Framing::Chunked => None,
        };
        self.buf.extend_from_slice(&rest);
        if head.expect_continue && self.buf.is_empty() && !self.write_continue().await {
            return Ok(None);
        }
        let deadline = after(Instant::now(), self.shared.limits.body_timeout());
        let read = match len {
            Some(len) => self.read_exact(len, deadline).await.map(|()| self.buf.split_to(len).freeze()),
            None => self.read_chunked(deadline).await,
        };
        match read {
            Ok(body) => Ok(Some(body)),
            Err(Stop::Gone) => Ok(None),
            Err(Stop::Reject(reject)) => Err(reject),
        }
    }

    /// Tell a client that waits (`Expect: 100-continue`) to send its body.
    async fn write_continue(&mut self) -> bool {
        let write = self.io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
        matches!(timeout_at(after(Instant::now(), self.shared.limits.write_timeout()), write).await, Ok(Ok(())))
    }

    /// Read until the buffer holds at least `len` bytes.
    async fn read_exact(&mut self, len: usize, deadline: Instant) -> Result<(), Stop> {
        while self.buf.len() < len {
            self.fill(len - self.buf.len(), deadline).await?;
        }
        Ok(())
    }

    /// Read at least one more byte of body.
    async fn fill(&mut self, want: usize, deadline: Instant) -> Result<(), Stop> {
        match timeout_at(deadline, read_some(&mut self.io, &mut self.buf, want)).await {
            Ok(Ok(n)) if n > 0 => Ok(()),
            Ok(_) => Err(Stop::Gone),
            Err(_) => Err(Stop::Reject(Reject::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request body did not arrive within {} ms (server.limits.body_timeout_ms)",
                    self.shared.limits.body_timeout_ms
                ),
            ))),
        }
    }

    /// Where the line at the start of the buffer ends (its LF), once it is all there; `None`
    /// when more than `max` bytes came without one.
    async fn line(&mut self, max: usize, deadline: Instant) -> Result<Option<usize>, Stop> {
        let mut scanned = 0;
        loop {
            if let Some(at) = self.buf[scanned..].iter().position(|&b| b == b'\n') {
                return Ok(Some(scanned + at));
            }
            scanned = self.buf.len();
            if scanned > max {
                return Ok(None);
            }
            self.fill(HEAD_READ, deadline).await?;
        }
    }

    /// Decode a chunked body, at most `max_body_bytes` of it; trailers are read and dropped.
    async fn read_chunked(&mut self, deadline: Instant) -> Result<Bytes, Stop> {
        let max = self.shared.limits.max_body_bytes;
        let mut body = BytesMut::new();
        loop {
            let Some(end) = self.line(MAX_CHUNK_LINE, deadline).await? else {
                return Err(Stop::Reject(bad_request(format!(
                    "a chunk-size line is longer than {MAX_CHUNK_LINE} bytes"
                ))));
            };
            let size = chunk_size(&self.buf[..end]).ok_or_else(|| {
                Stop::Reject(bad_request(format!(
                    "malformed chunk size {:?}",
                    String::from_utf8_lossy(&self.buf[..end.min(40)])
                )))
            })?;
            self.buf.advance(end + 1);
            if size == 0 {
                self.skip_trailers(deadline).await?;
                return Ok(body.freeze());
            }
            if size > max - body.len() {
                return Err(Stop::Reject(body_too_large(format!(
                    "the chunked request body is larger than {max} bytes (server.limits.max_body_bytes)"
                ))));
            }
            let mut left = size;
            while left > 0 {
                if self.buf.is_empty() {
                    self.fill(left, deadline).await?;
                }
                let take = left.min(self.buf.len());
                body.put_slice(&self.buf[..take]);
                self.buf.advance(take);
                left -= take;
            }
            // The line end after the data: CRLF, or a bare LF (then the next line follows).
            self.read_exact(2, deadline).await?;
            match &self.buf[..] {
                [b'\r', b'\n', ..] => self.buf.advance(2),
                [b'\n', ..] => self.buf.advance(1),
                _ => return Err(Stop::Reject(bad_request("chunk data is not followed by a line end"))),
            }
        }
    }

    /// Read a chunked body's trailer lines up to the empty line that ends them.
    async fn skip_trailers(&mut self, deadline: Instant) -> Result<(), Stop> {
        let max = self.shared.limits.max_header_bytes;
        let too_long = || {
            Stop::Reject(headers_too_large(format!(
                "the chunked body's trailers are longer than {max} bytes (server.limits.max_header_bytes)"
            )))
        };
        let mut total = 0;
        loop {
            let end = self.line(max - total, deadline).await?.ok_or_else(too_long)?;
            let empty = end == 0 || (end == 1 && self.buf[0] == b'\r');
            self.buf.advance(end + 1);
            if empty {
                return Ok(());
            }
            total += end + 1;
            if total > max {
                return Err(too_long());
            }
        }
    }

    /// Write `response`, its body collected, with a `Content-Length`; 4xx/5xx without a JSON
    /// body get one.
    async fn respond(&mut self, response: Response, to: &ReplyTo) -> Next {
        let (mut parts, body) = response.into_parts();
        let stopping = *self.stopping.borrow();
        let mut keep_alive = to.keep_alive && !stopping && !has_token(&parts.headers, "close");
        let status = parts.status;
        let no_body_status =
            status.is_informational() || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
        let head_only = to.method == Method::HEAD;
        if status == StatusCode::OK && !head_only && is_event_stream(&parts.headers) {
            return self.stream_events(&parts, body).await;
        }
        let mut bytes = Bytes::new();
        if !no_body_status && !head_only {
            match axum::body::to_bytes(body, MAX_RESPONSE_BYTES).await {
                Ok(b) => bytes = b,
                Err(e) => {
                    keep_alive = false;
                    bytes = into_json_error(
                        &mut parts,
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        format!(
                            "the response could not be produced (at most {MAX_RESPONSE_BYTES} bytes are sent): {e}"
                        ),
                    );
                }
            }
            if parts.status.as_u16() >= 400
                && (bytes.is_empty() || !(is_json(&parts.headers) || is_html(&parts.headers)))
            {
                let message = describe(&parts, &bytes, to);
                let status = parts.status;
                bytes = into_json_error(&mut parts, status, &code_for_status(status), message);
            }
        }
        if status.is_informational() {
            keep_alive = false;
        }
        self.out.clear();
        self.out.extend_from_slice(b"HTTP/1.1 ");
        self.out.extend_from_slice(parts.status.as_str().as_bytes());
        self.out.push(b' ');
        self.out.extend_from_slice(parts.status.canonical_reason().unwrap_or("Unknown").as_bytes());
        self.out.extend_from_slice(b"\r\n");
        for (name, value) in &parts.headers {
            let ours = name == header::CONNECTION
                || name == header::TRANSFER_ENCODING
                || name.as_str() == "keep-alive"
                || (name == header::CONTENT_LENGTH && !head_only);
            if !ours {
                self.out.extend_from_slice(name.as_str().as_bytes());
                self.out.extend_from_slice(b": ");
                self.out.extend_from_slice(value.as_bytes());
                self.out.extend_from_slice(b"\r\n");
            }
        }
        if !no_body_status && !head_only {
            self.out.extend_from_slice(b"content-length: ");
            self.out.extend_from_slice(itoa(bytes.len(), &mut [0; 20]));
            self.out.extend_from_slice(b"\r\n");
        }
        if !keep_alive {
            self.out.extend_from_slice(b"connection: close\r\n");
        } else if to.version == Version::HTTP_10 {
            self.out.extend_from_slice(b"connection: keep-alive\r\n");
        }
        self.out.extend_from_slice(b"\r\n");
        let mut all = Buf::chain(&self.out[..], &bytes[..]);
        let write = self.io.write_all_buf(&mut all);
        match timeout_at(after(Instant::now(), self.shared.limits.write_timeout()), write).await {
            Ok(Ok(())) if keep_alive => Next::KeepAlive,
            Ok(Ok(())) => Next::Close,
            _ => Next::Gone,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<'_, S> {
    /// Write a server-sent event stream: the head without a length (the connection's close ends
    /// the body), then each piece of the body as it comes, every write under the write timeout,
    /// until the body ends or fails, the client goes, or the server stops.
    async fn stream_events(&mut self, parts: &Parts, mut body: Body) -> Next {
        use http_body_util::BodyExt as _;
        self.out.clear();
        self.out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        for (name, value) in &parts.headers {
            let ours = name == header::CONNECTION
                || name == header::TRANSFER_ENCODING
                || name == header::CONTENT_LENGTH
                || name.as_str() == "keep-alive";
            if !ours {
                self.out.extend_from_slice(name.as_str().as_bytes());
                self.out.extend_from_slice(b": ");
                self.out.extend_from_slice(value.as_bytes());
                self.out.extend_from_slice(b"\r\n");
            }
        }
        self.out.extend_from_slice(b"connection: close\r\n\r\n");
        let write_timeout = self.shared.limits.write_timeout();
        if !matches!(timeout_at(after(Instant::now(), write_timeout), self.io.write_all(&self.out)).await, Ok(Ok(()))) {
            return Next::Gone;
        }
        loop {
            let frame = tokio::select! {
                frame = body.frame() => frame,
                _ = self.stopping.wait_for(|stopping| *stopping) => return Next::Close,
            };
            let Some(Ok(frame)) = frame else { return Next::Close };
            let Ok(data) = frame.into_data() else { continue };
            let write = async {
                self.io.write_all(&data).await?;
                self.io.flush().await
            };
            if !matches!(timeout_at(after(Instant::now(), write_timeout), write).await, Ok(Ok(()))) {
                return Next::Gone;
            }
        }
    }
}

/// Why a body could not be read.
enum Stop {
    Gone,
    Reject(Reject),
}

/// Read once into `buf`, making room for `want` bytes (within sane bounds) first.
async fn read_some<S: AsyncRead + Unpin>(io: &mut S, buf: &mut BytesMut, want: usize) -> std::io::Result<usize> {
    buf.reserve(want.clamp(HEAD_READ, BODY_READ));
    io.read_buf(buf).await
}

/// `start + wait`, or far in the future when that overflows (a huge configured timeout).
fn after(start: Instant, wait: Duration) -> Instant {
    start.checked_add(wait).unwrap_or_else(|| start + Duration::from_secs(100 * 365 * 86_400))
}

/// Watches a request head arrive, looking at each byte once: where the request line ends and
/// whether the empty line that ends the head is in.
#[derive(Debug, Default)]
struct HeadScan {
    scanned: usize,
    line_end: Option<usize>,
}

impl HeadScan {
    /// Whether the buffer holds a whole head (it ends with an empty line).
    fn complete(&mut self, buf: &[u8]) -> bool {
        let mut at = self.scanned.saturating_sub(2);
        self.scanned = buf.len();
        while let Some(found) = buf.get(at..).and_then(|rest| rest.iter().position(|&b| b == b'\n')) {
            let nl = at + found;
            if self.line_end.is_none() && buf[..nl].iter().any(|&b| b != b'\r' && b != b'\n') {
                self.line_end = Some(nl);
            }
            match buf.get(nl + 1..nl + 3) {
                Some([b'\n', _]) | Some([b'\r', b'\n']) => return true,
                None if buf.get(nl + 1) == Some(&b'\n') => return true,
                _ => {}
            }
            at = nl + 1;
        }
        false
    }

    /// Refuse a head that has outgrown the limits before it is complete.
    fn check_size(&self, buf: &[u8], limits: &HttpLimits) -> Result<(), Reject> {
        // The request line holds a method and `HTTP/1.1` besides the target.
        let line_limit = limits.max_uri_bytes.saturating_add(64);
        let line_too_long = match self.line_end {
            Some(end) => end > line_limit,
            None => buf.len() > line_limit,
        };
        if line_too_long {
            return Err(uri_too_long(None, limits));
        }
        if buf.len() > limits.max_header_bytes {
            return Err(head_too_large(limits));
        }
        Ok(())
    }
}

fn bad_request(message: impl Into<String>) -> Reject {
    Reject::new(StatusCode::BAD_REQUEST, "bad_request", message)
}

fn body_too_large(message: String) -> Reject {
    Reject::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", message)
}

fn headers_too_large(message: String) -> Reject {
    Reject::new(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large", message)
}

fn head_too_large(limits: &HttpLimits) -> Reject {
    headers_too_large(format!(
        "the request line and headers are longer than {} bytes (server.limits.max_header_bytes)",
        limits.max_header_bytes
    ))
}

fn uri_too_long(len: Option<usize>, limits: &HttpLimits) -> Reject {
    let size = len.map_or_else(|| "longer than".to_string(), |len| format!("{len} bytes,"));
    Reject::new(
        StatusCode::URI_TOO_LONG,
        "uri_too_long",
        format!(
            "the request target is {size} more than the {} bytes allowed (server.limits.max_uri_bytes)",
            limits.max_uri_bytes
        ),
    )
}

/// Parse a complete head at the start of `data` (which may go on with the body and further
/// requests). Header values and the target share `data`'s memory.
fn parse_head(data: &Bytes, limits: &HttpLimits) -> Result<Option<Head>, Reject> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let len = match req.parse(data) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(headers_too_large(format!("the request has more than {MAX_HEADERS} headers")));
        }
        Err(httparse::Error::Version) if speaks_other_http(data) => {
            return Err(Reject::new(
                StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                "http_version_not_supported",
                "the daemon speaks HTTP/1.0 and HTTP/1.1 only",
            ));
        }
        Err(e) => return Err(bad_request(format!("malformed request head: {e}"))),
    };
    let target = req.path.unwrap_or_default();
    if target.len() > limits.max_uri_bytes {
        return Err(uri_too_long(Some(target.len()), limits));
    }
    if len > limits.max_header_bytes {
        return Err(head_too_large(limits));
    }
    let method = Method::from_bytes(req.method.unwrap_or_default().as_bytes())
        .map_err(|_| bad_request("the request method is not a valid token"))?;
    let uri = Uri::from_maybe_shared(data.slice_ref(target.as_bytes()))
        .map_err(|e| bad_request(format!("the request target is not a valid URI: {e}")))?;
    let version = if req.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    let mut content_length = None;
    let mut chunked = false;
    let (mut close, mut keep_alive) = (false, false);
    let mut expect_continue = false;
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| bad_request(format!("the header name {:?} is not valid", h.name)))?;
        let value = HeaderValue::from_maybe_shared(data.slice_ref(h.value))
            .map_err(|_| bad_request(format!("the value of header {name} is not valid")))?;
        if name == header::CONTENT_LENGTH {
            let n = decimal(h.value).ok_or_else(|| {
                bad_request(format!("Content-Length {:?} is not a number", String::from_utf8_lossy(h.value)))
            })?;
            if content_length.is_some_and(|m| m != n) {
                return Err(bad_request("the request has Content-Length headers that disagree"));
            }
            content_length = Some(n);
        } else if name == header::TRANSFER_ENCODING {
            if chunked {
                return Err(bad_request("the request has more than one Transfer-Encoding header"));
            }
            if !trim(h.value).eq_ignore_ascii_case(b"chunked") {
                return Err(Reject::new(
                    StatusCode::NOT_IMPLEMENTED,
                    "unsupported_transfer_encoding",
                    format!(
                        "Transfer-Encoding {:?} is not supported: send a Content-Length, or Transfer-Encoding: chunked",
                        String::from_utf8_lossy(h.value)
                    ),
                ));
            }
            chunked = true;
        } else if name == header::CONNECTION {
            for token in h.value.split(|&b| b == b',').map(trim) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name == header::EXPECT {
            if !trim(h.value).eq_ignore_ascii_case(b"100-continue") {
                return Err(Reject::new(
                    StatusCode::EXPECTATION_FAILED,
                    "expectation_failed",
                    format!("Expect {:?} is not supported; only 100-continue is", String::from_utf8_lossy(h.value)),
                ));
            }
            expect_continue = version == Version::HTTP_11;
        }
        headers.append(name, value);
    }
    let framing = match (chunked, content_length) {
        (true, Some(_)) => return Err(bad_request("the request has both Content-Length and Transfer-Encoding")),
        (true, None) if version == Version::HTTP_10 => {
            return Err(bad_request("HTTP/1.0 requests cannot use Transfer-Encoding: chunked"));
        }
        (true, None) => Framing::Chunked,
        (false, None | Some(0)) => Framing::Empty,
        (false, Some(n)) => match usize::try_from(n) {
            Ok(n) if n <= limits.max_body_bytes => Framing::Length(n),
            _ => {
                return Err(body_too_large(format!(
                    "the request body is {n} bytes, more than the {} allowed (server.limits.max_body_bytes)",
                    limits.max_body_bytes
                )));
            }
        },
    };
    let keep_alive = !close && (version == Version::HTTP_11 || keep_alive);
    Ok(Some(Head {
        method,
        uri,
        version,
        headers,
        framing,
        expect_continue: expect_continue && framing != Framing::Empty,
        keep_alive,
        rest: data.slice(len..),
    }))
}

/// Whether a request line that httparse refused names an HTTP version other than 1.x.
fn speaks_other_http(data: &[u8]) -> bool {
    let line = data.split(|&b| b == b'\n').find(|l| !trim(l).is_empty()).unwrap_or_default();
    let line = trim(line);
    line.rsplit(|&b| b == b' ')
        .next()
        .is_some_and(|v| v.starts_with(b"HTTP/") && v.len() > 5 && !v.starts_with(b"HTTP/1."))
}

/// A header value's decimal number (`Content-Length`), without sign or spaces inside.
fn decimal(value: &[u8]) -> Option<u64> {
    let digits = trim(value);
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0')))
}

/// A chunk-size line's size (hex, before any `;extension`), with the line's CR.
fn chunk_size(line: &[u8]) -> Option<usize> {
    let digits = line.split(|&b| b == b';').next().map(trim).unwrap_or_default();
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    let size = digits.iter().try_fold(0u64, |n, &d| char::from(d).to_digit(16).map(|d| n << 4 | u64::from(d)))?;
    Some(usize::try_from(size).unwrap_or(usize::MAX))
}

/// `bytes` without leading and trailing spaces, tabs and CRs.
fn trim(bytes: &[u8]) -> &[u8] {
    let blank = |b: &u8| matches!(b, b' ' | b'\t' | b'\r');
    let start = bytes.iter().position(|b| !blank(b)).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !blank(b)).map_or(start, |e| e + 1);
    &bytes[start..end]
}

/// Whether a comma-separated header (`Connection`) holds `token`.
fn has_token(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| v.as_bytes().split(|&b| b == b',').any(|t| trim(t).eq_ignore_ascii_case(token.as_bytes())))
}

/// The essence of a `Content-Type` header (`text/html` of `text/html; charset=utf-8`).
fn media_type(headers: &HeaderMap) -> &[u8] {
    headers
        .get(header::CONTENT_TYPE)
        .map_or(&[][..], |v| trim(v.as_bytes().split(|&b| b == b';').next().unwrap_or_default()))
}

/// A web view page (kept as it is, errors included).
fn is_html(headers: &HeaderMap) -> bool {
    media_type(headers).eq_ignore_ascii_case(b"text/html")
}

/// A server-sent event stream.
fn is_event_stream(headers: &HeaderMap) -> bool {
    media_type(headers).eq_ignore_ascii_case(b"text/event-stream")
}

fn is_json(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        let essence = trim(v.split(|&b| b == b';').next().unwrap_or_default());
        essence.eq_ignore_ascii_case(b"application/json") || essence.ends_with(b"+json")
    })
}

/// Turn a response into a JSON error: status, content type, and the body to send.
fn into_json_error(parts: &mut Parts, status: StatusCode, code: &str, message: String) -> Bytes {
    parts.status = status;
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    error_json(code, message)
}

/// The message for a router error without a JSON body: its text, or what the status means.
fn describe(parts: &Parts, text: &Bytes, to: &ReplyTo) -> String {
    if let Ok(text) = std::str::from_utf8(text) {
        let text = text.trim();
        if !text.is_empty() {
            let mut end = text.len().min(MAX_MESSAGE);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            return text[..end].to_string();
        }
    }
    let path = to.uri.path();
    match parts.status {
        StatusCode::METHOD_NOT_ALLOWED => {
            let allowed = parts.headers.get(header::ALLOW).and_then(|v| v.to_str().ok()).unwrap_or_default();
            format!("{} is not allowed on {path}; allowed: {allowed}", to.method)
        }
        StatusCode::NOT_FOUND => format!("nothing is served at {path}"),
        status => format!(
            "{} {} failed: {} {}",
            to.method,
            path,
            status.as_str(),
            status.canonical_reason().unwrap_or("error")
        ),
    }
}

/// `n` in decimal, without allocating.
fn itoa(mut n: usize, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serve `request` on an in-memory connection from `peer` (an error: credentials that could
    /// not be read), the client closing its side after it; everything the server wrote.
    async fn exchange(peer: Result<PeerInfo, std::io::Error>, request: &[u8]) -> String {
        let app = Router::new()
            .route("/", axum::routing::get(|| async { "hi" }))
            .route("/none", axum::routing::get(|| async { StatusCode::NO_CONTENT }));
        let (_stop, stopping) = watch::channel(false);
        let shared = Shared::new(app, HttpLimits::default(), stopping);
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let connection = tokio::spawn(admit(server, peer, &shared).unwrap());
        client.write_all(request).await.unwrap();
        client.shutdown().await.unwrap();
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        connection.await.unwrap();
        String::from_utf8(out).unwrap()
    }

    fn local() -> Result<PeerInfo, std::io::Error> {
        Ok(PeerInfo::Unix { uid: 1000, gid: 1000, pid: None })
    }

    #[tokio::test]
    async fn edge_cases_of_the_wire_format() {
        for (request, starts, holds) in [
            (&b"\r\nGET / HTTP/1.1\r\n\r\n"[..], "HTTP/1.1 200 OK\r\n", "\r\n\r\nhi"),
            (b"GET / HTTP/1.1\nHost: x\n\n", "HTTP/1.1 200 OK\r\n", "content-length: 2\r\n"),
            (b"GET /none HTTP/1.1\r\n\r\n", "HTTP/1.1 204 No Content\r\n", "\r\n\r\n"),
            (b"GET / HTTP/1.0\r\n\r\n", "HTTP/1.1 200 OK\r\n", "connection: close\r\n"),
            (b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n", "HTTP/1.1 200 OK\r\n", "hiHTTP/1.1 200 OK\r\n"),
            (b"GET / HT", "", ""),
        ] {
            let out = exchange(local(), request).await;
            assert!(out.starts_with(starts) && out.contains(holds), "{request:?} got {out:?}");
        }
        let out = exchange(local(), b"GET /none HTTP/1.1\r\n\r\n").await;
        assert!(!out.contains("content-length"), "{out:?}");
    }

    #[tokio::test]
    async fn a_peer_without_credentials_is_refused_with_401() {
        let out = exchange(Err(std::io::Error::other("no SO_PEERCRED")), b"GET / HTTP/1.1\r\n\r\n").await;
        assert!(out.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{out:?}");
        let body: super::super::ErrorBody = serde_json::from_str(out.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body.error.code, "unauthorized");
        assert!(body.error.message.contains("no SO_PEERCRED"), "{body:?}");
    }

    #[test]
    fn head_scan_finds_the_end_across_reads() {
        let whole = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nBODY";
        for split in 1..whole.len() {
            let mut scan = HeadScan::default();
            let first = scan.complete(&whole[..split]);
            let second = scan.complete(whole);
            assert!(first || second, "split at {split}");
            assert_eq!(first, split >= 27, "split at {split}");
            assert_eq!(scan.line_end, Some(15));
        }
        let mut scan = HeadScan::default();
        assert!(scan.complete(b"GET / HTTP/1.1\n\n"));
        assert!(!HeadScan::default().complete(b"\r\nGET / HTTP/1.1\r\nHost: x\r\n"));
    }

    #[test]
    fn numbers() {
        for (raw, want) in [(&b"0"[..], Some(0)), (b" 42 ", Some(42)), (b"+1", None), (b"", None), (b"1 2", None)] {
            assert_eq!(decimal(raw), want, "{raw:?}");
        }
        assert_eq!(decimal(b"99999999999999999999"), None);
        for (raw, want) in
            [(&b"1a"[..], Some(26)), (b"0\r", Some(0)), (b"10;x=y\r", Some(16)), (b"g", None), (b"", None)]
        {
            assert_eq!(chunk_size(raw), want, "{raw:?}");
        }
        assert_eq!(chunk_size(b"ffffffffffffffff"), Some(usize::MAX));
        assert_eq!(chunk_size(b"1ffffffffffffffff"), None);
        for n in [0, 7, 10, 1234567, usize::MAX] {
            assert_eq!(itoa(n, &mut [0; 20]), n.to_string().as_bytes());
        }
    }

    #[test]
    fn other_http_versions_are_recognised() {
        assert!(speaks_other_http(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        assert!(!speaks_other_http(b"GET / FOO\r\n\r\n"));
        assert!(!speaks_other_http(b"GET / HTTP/1.2\r\n\r\n"));
    }
}
