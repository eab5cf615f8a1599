//! The daemon's read-only web view: one page per node (`GET /ui`) showing each GPU's slices as
//! its placement grid, who holds each instance, the queue with why each job waits, and recent
//! events; kept live by server-sent events (`GET /ui/live`) without a reload.
//!
//! Everything it shows comes through the same seam as the API — [`Service::act`] with
//! `Action::Gpus`, `Action::ListJobs` and `Action::Events` for the caller — so a caller sees
//! exactly what the API would show them. Who the caller is, [`Identity::caller_with`] decides,
//! as for the API: on the Unix socket the peer; on TCP a bearer token (a proxy adding it), or a
//! login session opened with a token ([`session`]). The session cookie counts here only, never
//! for the JSON API. Pages are rendered by [`page`] (pure) and sent with a strict
//! `Content-Security-Policy`: the one script and stylesheet are served from `/ui` and embedded
//! in the binary (no build step, nothing external).

pub mod page;
pub mod session;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::api::{Identity, Service};
use crate::engine::{Action, Caller, Reply};
use crate::http::PeerInfo;
use crate::wire::{EventQuery, JobQuery};
use page::View;
use session::Sessions;

/// The stylesheet, `/ui/app.css`.
const CSS: &str = include_str!("app.css");
/// The script, `/ui/app.js`: swaps in what `/ui/live` sends.
const JS: &str = include_str!("app.js");

/// What a page may load: only its own script, stylesheet and event stream; no inline script or
/// style, no frames, forms posting only here.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
                       form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// How often the live stream looks for a change.
const TICK: Duration = Duration::from_secs(1);
/// How many recent events the page shows.
const EVENTS_SHOWN: u32 = 30;

#[derive(Clone)]
struct WebState {
    service: Arc<dyn Service>,
    identity: Arc<Identity>,
    sessions: Arc<Sessions>,
    /// The node's host name, read once.
    node: Arc<str>,
}

/// The web view's routes, merged into the API's router (`api::router`): the Unix socket and
/// the TCP listener, never the metrics port.
pub fn router(service: Arc<dyn Service>, identity: Arc<Identity>) -> Router {
    let node: Arc<str> = tessera_host::hostname().unwrap_or_else(|_| "this node".into()).into();
    let state = WebState { service, identity, sessions: Arc::new(Sessions::default()), node };
    Router::new()
        .route("/ui", get(ui))
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/live", get(live))
        .route("/ui/app.js", get(|| async { asset("text/javascript; charset=utf-8", JS) }))
        .route("/ui/app.css", get(|| async { asset("text/css; charset=utf-8", CSS) }))
        .with_state(state)
}

/// Who a web request is from.
enum Who {
    /// A caller, and the id of the login session they came with, if they did.
    Known(Caller, Option<String>),
    /// A TCP request with neither a bearer token nor a live session: the login form.
    LogIn,
    /// Refused as the API refuses (a wrong bearer token, no peer credentials).
    Refused(Response),
}

fn peer(parts: &Parts) -> Option<&PeerInfo> {
    parts.extensions.get::<PeerInfo>()
}

async fn who(state: &WebState, parts: &Parts) -> Who {
    let peer = peer(parts);
    let session = match peer {
        Some(PeerInfo::Tcp { .. }) => session::cookie_id(&parts.headers)
            .and_then(|id| state.sessions.user(&id, Instant::now()).map(|user| (id, user))),
        _ => None,
    };
    if matches!(peer, Some(PeerInfo::Tcp { .. }))
        && !parts.headers.contains_key(header::AUTHORIZATION)
        && session.is_none()
    {
        return Who::LogIn;
    }
    match state.identity.caller_with(peer, &parts.headers, session.as_ref().map(|(_, user)| user)).await {
        Ok(caller) => Who::Known(caller, session.map(|(id, _)| id)),
        Err(refusal) => Who::Refused(*refusal),
    }
}

/// An HTML response with the headers every page carries.
fn html(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    secure(h);
    r
}

/// The headers that keep a page to itself: the CSP, no sniffing, no framing, no referrer to
/// other sites, no caching (it shows who holds what).
fn secure(h: &mut HeaderMap) {
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// 303 to `to`, optionally setting a cookie.
fn see_other(to: &'static str, cookie: Option<String>) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    let h = r.headers_mut();
    h.insert(header::LOCATION, HeaderValue::from_static(to));
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert(header::SET_COOKIE, c);
    }
    secure(h);
    r
}

/// What the page shows to `caller`: the API's answers for them.
async fn view(service: &dyn Service, caller: &Caller, session: bool, node: &str) -> View {
    let mut v =
        View { node: node.to_owned(), user: caller.user.clone(), admin: caller.admin, session, ..View::default() };
    match service.act(caller.clone(), Action::Gpus).await {
        Ok(Reply::Gpus(list)) => {
            v.backend = list.backend;
            v.gpus = list.gpus;
        }
        Ok(_) => v.problems.push("GPUs: the engine answered something else".into()),
        Err(e) => v.problems.push(format!("GPUs could not be read: {e}")),
    }
    // Admins see every user's live jobs, anyone else their own: as `GET /v1/jobs` shows them.
    let jobs = JobQuery { all: caller.admin, ..JobQuery::default() };
    match service.act(caller.clone(), Action::ListJobs(jobs)).await {
        Ok(Reply::Jobs(list)) => v.jobs = list.jobs,
        Ok(_) => v.problems.push("jobs: the engine answered something else".into()),
        Err(e) => v.problems.push(format!("jobs could not be read: {e}")),
    }
    let events = EventQuery { since_ms: None, limit: Some(EVENTS_SHOWN) };
    match service.act(caller.clone(), Action::Events(events)).await {
        Ok(Reply::Events(list)) => v.events = list.events,
        Ok(_) => v.problems.push("events: the engine answered something else".into()),
        Err(e) => v.problems.push(format!("events could not be read: {e}")),
    }
    v
}

/// `GET /ui`: the page, or the login form's address for a TCP caller without a session.
async fn ui(State(state): State<WebState>, parts: Parts) -> Response {
    match who(&state, &parts).await {
        Who::Known(caller, session) => {
            let v = view(&*state.service, &caller, session.is_some(), &state.node).await;
            html(StatusCode::OK, page::page(&v))
        }
        Who::LogIn => see_other("/ui/login", None),
        Who::Refused(r) => r,
    }
}

/// `GET /ui/login`: the form on TCP; on the Unix socket there is nothing to log in to.
async fn login_form(parts: Parts) -> Response {
    match peer(&parts) {
        Some(PeerInfo::Tcp { .. }) => html(StatusCode::OK, page::login(None)),
        _ => see_other("/ui", None),
    }
}

/// Whether a form post comes from another page than this daemon's own: refused, so no other
/// page (another site, or another port of the same host, which browsers count as the same
/// site) logs a browser in or out. The browser's `Sec-Fetch-Site` says so when sent (only
/// `same-origin`, or `none` for a user's own action, pass); else an `Origin` naming another
/// host than `Host`. Clients that send neither (curl, a script) are not browsers led by a page.
fn cross_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return !matches!(site.as_bytes(), b"same-origin" | b"none");
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return false };
    let origin_host = origin.parse::<Uri>().ok().and_then(|u| u.authority().map(|a| a.as_str().to_owned()));
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    origin_host.as_deref() != host
}

/// `POST /ui/login` (form field `token`): a valid token opens a session and sets its cookie;
/// anything else is the form again with an error (401), logged as the API logs refusals.
async fn login(State(state): State<WebState>, parts: Parts, body: Bytes) -> Response {
    let Some(PeerInfo::Tcp { addr }) = peer(&parts) else { return see_other("/ui", None) };
    let refuse = |status: StatusCode, why: &str| {
        tracing::warn!(peer = %addr, "refused a web login from {}: {why}", addr.ip());
        html(status, page::login(Some(why)))
    };
    if cross_site(&parts.headers) {
        return refuse(StatusCode::FORBIDDEN, "a login from another site's page is refused");
    }
    if state.identity.tokens.is_empty() {
        return refuse(StatusCode::UNAUTHORIZED, "TCP access is not configured (server.token_file)");
    }
    let token = form_value(&body, "token").unwrap_or_default();
    let token = token.trim();
    let user = if token.is_empty() { None } else { state.identity.tokens.user_for(token.as_bytes()) };
    let Some(user) = user else {
        let why = if token.is_empty() { "give a token" } else { "the token is not valid" };
        return refuse(StatusCode::UNAUTHORIZED, why);
    };
    match state.sessions.create(user.clone(), Instant::now()) {
        Ok(id) => {
            tracing::info!(user = %user.name, peer = %addr, "web view login by {} from {}", user.name, addr.ip());
            see_other("/ui", Some(session::set_cookie(&id)))
        }
        Err(e) => {
            tracing::error!("web view login by {} failed: {e}", user.name);
            html(
                StatusCode::INTERNAL_SERVER_ERROR,
                page::login(Some("the daemon could not open a session; see its log")),
            )
        }
    }
}

/// `POST /ui/logout`: end the session and forget the cookie.
async fn logout(State(state): State<WebState>, parts: Parts) -> Response {
    if !matches!(peer(&parts), Some(PeerInfo::Tcp { .. })) {
        return see_other("/ui", None);
    }
    if cross_site(&parts.headers) {
        return html(StatusCode::FORBIDDEN, page::login(Some("a logout from another site's page is refused")));
    }
    if let Some(id) = session::cookie_id(&parts.headers) {
        state.sessions.end(&id);
    }
    see_other("/ui/login", Some(session::clear_cookie()))
}

/// The value of `name` in an `application/x-www-form-urlencoded` body.
fn form_value(body: &[u8], name: &str) -> Option<String> {
    body.split(|&b| b == b'&').find_map(|pair| {
        let mut it = pair.splitn(2, |&b| b == b'=');
        let key = percent_decode(it.next()?)?;
        (key == name).then(|| percent_decode(it.next().unwrap_or_default())).flatten()
    })
}

/// `+` as a space and `%XX` as its byte; `None` for a bad escape or bytes that are not UTF-8.
fn percent_decode(raw: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut k = 0;
    while k < raw.len() {
        match raw[k] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(raw.get(k + 1..k + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                k += 2;
            }
            b => out.push(b),
        }
        k += 1;
    }
    String::from_utf8(out).ok()
}

/// `GET /ui/live`: server-sent events. `page` carries the live part of the page ([`page::live`])
/// each time it changes, looked at every second (its id is the part's digest: a reconnecting
/// browser sends it back, as does `?since=` from the page, and gets nothing until it changes);
/// `expired` says the login session ended. Without a caller, 401 (the browser's `EventSource`
/// stops; the script reloads to the login form).
async fn live(State(state): State<WebState>, parts: Parts) -> Response {
    let (caller, session) = match who(&state, &parts).await {
        Who::Known(caller, session) => (caller, session),
        Who::LogIn => return html(StatusCode::UNAUTHORIZED, page::login(Some("log in first"))),
        Who::Refused(r) => return r,
    };
    let since = parts.headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_owned).or_else(|| {
        parts.uri.query().and_then(|q| q.split('&').find_map(|p| p.strip_prefix("since=").map(str::to_owned)))
    });
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(1);
    tokio::spawn(async move {
        let mut last = since.unwrap_or_default();
        let mut first = true;
        loop {
            if let Some(id) = &session
                && state.sessions.user(id, Instant::now()).is_none()
            {
                let _ = tx.send(Ok(Event::default().event("expired").data("the login session ended"))).await;
                return;
            }
            let v = view(&*state.service, &caller, session.is_some(), &state.node).await;
            let body = page::live(&v);
            let digest = page::digest(&body);
            if digest != last {
                let mut event = Event::default().event("page").id(&digest).data(body);
                if std::mem::take(&mut first) {
                    event = event.retry(Duration::from_secs(2));
                }
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
                last = digest;
            }
            tokio::select! {
                () = tokio::time::sleep(TICK) => {}
                () = tx.closed() => return,
            }
        }
    });
    let mut r = Sse::new(tokio_stream::wrappers::ReceiverStream::new(rx))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    secure(r.headers_mut());
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_are_decoded() {
        assert_eq!(form_value(b"token=abc%2Bdef+g&x=1", "token").as_deref(), Some("abc+def g"));
        assert_eq!(form_value(b"x=1&token=", "token").as_deref(), Some(""));
        assert_eq!(form_value(b"tokens=1", "token"), None);
        assert_eq!(form_value(b"token=%zz", "token"), None, "a bad escape is no value");
        assert_eq!(form_value(b"token=%ff", "token"), None, "not UTF-8");
    }

    #[test]
    fn posts_from_other_sites_are_told_apart() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        assert!(!cross_site(&headers(&[("host", "127.0.0.1:8080")])), "no Origin: a form without one");
        assert!(!cross_site(&headers(&[("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8080")])));
        assert!(cross_site(&headers(&[("host", "127.0.0.1:8080"), ("origin", "http://evil.example")])));
        assert!(cross_site(&headers(&[("host", "127.0.0.1:8080"), ("sec-fetch-site", "cross-site")])));
        assert!(cross_site(&headers(&[("host", "127.0.0.1:8080"), ("sec-fetch-site", "same-site")])), "another port");
        let same = [("host", "127.0.0.1:8080"), ("origin", "null"), ("sec-fetch-site", "same-origin")];
        assert!(!cross_site(&headers(&same)), "the page's own form");
    }
}
