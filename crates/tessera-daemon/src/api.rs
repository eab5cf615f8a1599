//! The HTTP/JSON front door: routes become [`Action`]s, connections become [`Caller`]s (Unix
//! socket peer credentials, or a bearer token on TCP, each resolved to a local user through
//! NSS), and [`EngineError`]s become status codes — the only place that knows them. Bodies are
//! the typed structs of `wire.rs` (unknown fields refused); every error has a JSON body.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

pub use crate::config::TokenUser;
use crate::config::{Config, Tokens};
pub use crate::engine::{Action, Caller, Door, EngineError, Reply};
use crate::http::{PeerInfo, code_for_status, json_error};
use crate::wire::{
    DrainRequest, EventQuery, JobQuery, JobState, LayoutRequest, LogCursor, LogQuery, MAX_DOOR_BYTES, MAX_KEY_CHARS,
    MAX_RELEASE_DETAIL_CHARS, RESERVED_DOORS, ReleaseRequest, Stream, SubmitRequest, WorkRequest,
};

/// The front-door seam: what answers actions — the daemon's engine, or a fake in tests. Every
/// front door (this HTTP API, and the Kubernetes and Slurm ones) calls it the same way.
pub trait Service: Send + Sync + 'static {
    fn act(
        &self,
        caller: Caller,
        action: Action,
    ) -> Pin<Box<dyn Future<Output = Result<Reply, EngineError>> + Send + '_>>;
}

/// The status code of an engine error: the one place that decides it.
pub fn status_of(e: &EngineError) -> StatusCode {
    match e {
        EngineError::NotFound(_) => StatusCode::NOT_FOUND,
        EngineError::Forbidden(_) => StatusCode::FORBIDDEN,
        EngineError::Conflict(_) => StatusCode::CONFLICT,
        EngineError::Invalid { .. } => StatusCode::BAD_REQUEST,
        EngineError::CannotRun { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        EngineError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        EngineError::ShuttingDown(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn error_response(e: &EngineError) -> Response {
    let status = status_of(e);
    json_error(status, &code_for_status(status), e.to_string())
}

fn unauthorized(message: &str) -> Response {
    json_error(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

/// Who callers are: TCP callers are the user their token names ([`Tokens`]); tenants and
/// admins as the configuration says ([`Config::tenant_of`], [`Config::is_admin`]).
#[derive(Debug, Clone)]
pub struct Identity {
    /// The TCP tokens and their users (resolved through NSS when the token file was read).
    pub tokens: Tokens,
    pub config: Arc<Config>,
}

impl Identity {
    /// Who calls the JSON API: the socket peer, or the user of a TCP caller's bearer token.
    async fn caller(&self, peer: Option<&PeerInfo>, headers: &HeaderMap) -> Result<Caller, Box<Response>> {
        self.caller_with(peer, headers, None).await
    }

    /// Who calls: the one place that decides it. On the Unix socket the peer (its credentials);
    /// on TCP the user of the bearer token sent, or else — for the web view alone, which passes
    /// `session` — the user a login session (`crate::web`) was opened for with a token. The JSON
    /// API passes `None`, so a session cookie never counts there.
    pub(crate) async fn caller_with(
        &self,
        peer: Option<&PeerInfo>,
        headers: &HeaderMap,
        session: Option<&TokenUser>,
    ) -> Result<Caller, Box<Response>> {
        match peer {
            Some(PeerInfo::Unix { uid, gid, .. }) => {
                // NSS may be slow (LDAP): not on the async workers.
                let uid = *uid;
                let user = tokio::task::spawn_blocking(move || tessera_host::users::user_name(uid))
                    .await
                    .unwrap_or_else(|_| format!("uid:{uid}"));
                Ok(Caller {
                    uid,
                    gid: *gid,
                    tenant: self.config.tenant_of(&user),
                    admin: self.config.is_admin(uid, &user),
                    user,
                    door: Door::Socket,
                })
            }
            Some(PeerInfo::Tcp { addr }) => {
                let refuse = |why: &str| {
                    tracing::warn!(peer = %addr, "refused a TCP request from {}: {why}", addr.ip());
                    Box::new(unauthorized(why))
                };
                if self.tokens.is_empty() {
                    return Err(refuse("TCP access is not configured (server.token_file)"));
                }
                let authorization = headers.get("authorization");
                if authorization.is_none()
                    && let Some(who) = session
                {
                    return Ok(self.token_caller(who));
                }
                let given = authorization
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .ok_or_else(|| refuse("send `Authorization: Bearer <token>`"))?;
                let Some(who) = self.tokens.user_for(given.trim().as_bytes()) else {
                    return Err(refuse("the bearer token is not valid"));
                };
                Ok(self.token_caller(who))
            }
            None => Err(Box::new(unauthorized("the caller could not be identified"))),
        }
    }

    /// A TCP caller acting as `who`, a token's user: their tenant and whether they are an admin
    /// as the configuration says.
    fn token_caller(&self, who: &TokenUser) -> Caller {
        Caller {
            uid: who.uid,
            gid: who.gid,
            tenant: self.config.tenant_of(&who.name),
            admin: self.config.is_admin(who.uid, &who.name),
            user: who.name.clone(),
            door: Door::Tcp,
        }
    }
}

#[derive(Clone)]
struct AppState {
    service: Arc<dyn Service>,
    identity: Arc<Identity>,
}

/// The peer the connection layer recorded.
struct Peer(Option<PeerInfo>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(parts.extensions.get::<PeerInfo>().cloned()))
    }
}

/// The metrics port's router: `GET /metrics` and nothing else, without a token (what a
/// Prometheus server scrapes; the slice map it shows is what every local user may see).
pub fn metrics_router(service: Arc<dyn Service>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let service = service.clone();
            async move {
                let caller = Caller {
                    uid: 65534,
                    gid: 65534,
                    user: "metrics".into(),
                    tenant: "default".into(),
                    admin: false,
                    door: Door::Tcp,
                };
                metrics_reply(&*service, caller).await
            }
        }),
    )
}

/// `GET /metrics`: the OpenMetrics text of [`crate::metrics::render`], for any caller that may
/// see `GET /v1/gpus`.
async fn metrics(state: &AppState, peer: Peer, headers: &HeaderMap) -> Response {
    let caller = match state.identity.caller(peer.0.as_ref(), headers).await {
        Ok(c) => c,
        Err(r) => return *r,
    };
    metrics_reply(&*state.service, caller).await
}

async fn metrics_reply(service: &dyn Service, caller: Caller) -> Response {
    match service.act(caller.clone(), Action::Metrics).await {
        Ok(Reply::Metrics(data)) => {
            ([(axum::http::header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], crate::metrics::render(&data))
                .into_response()
        }
        Ok(_) => error_response(&EngineError::Internal("the engine did not answer for metrics".into())),
        Err(e) => {
            log_refusal(&caller, "metrics", &e);
            error_response(&e)
        }
    }
}

async fn dispatch(state: &AppState, peer: Peer, headers: &HeaderMap, action: Result<Action, EngineError>) -> Response {
    let caller = match state.identity.caller(peer.0.as_ref(), headers).await {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let action = match action {
        Ok(a) => a,
        Err(e) => {
            log_refusal(&caller, "a malformed request", &e);
            return error_response(&e);
        }
    };
    let what = describe(&action);
    if let Err(e) = api_rules(&caller, &action) {
        log_refusal(&caller, &what, &e);
        return error_response(&e);
    }
    let created = matches!(action, Action::Submit(_) | Action::SubmitWork { .. });
    match state.service.act(caller.clone(), action).await {
        Ok(v) if created => (StatusCode::CREATED, axum::Json(v)).into_response(),
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => {
            log_refusal(&caller, &what, &e);
            error_response(&e)
        }
    }
}

/// What the API allows beyond the engine's own rules. External work (`POST /v1/work`) holds
/// slices while nothing Tessera runs uses them, so only admins may submit it over the API (the
/// Slurm front door runs as root); the engine lets in-process doors submit it as they choose.
fn api_rules(caller: &Caller, action: &Action) -> Result<(), EngineError> {
    match action {
        Action::SubmitWork { .. } if !caller.admin => Err(EngineError::Forbidden(format!(
            "only admins submit external work (POST /v1/work): it holds slices without running anything; {} is \
             not an admin (admins: root and the configuration's `admins`)",
            caller.user
        ))),
        _ => Ok(()),
    }
}

/// `POST /v1/work`'s body as an action: the door and key checked (each refusal names its field).
fn external_work(body: WorkRequest) -> Result<Action, EngineError> {
    let WorkRequest { request, door, key } = body;
    let door_ok = |d: &str| {
        (1..=MAX_DOOR_BYTES).contains(&d.len())
            && d.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if !door_ok(&door) {
        return Err(EngineError::invalid(
            "door",
            format!("'{}': give 1 to {MAX_DOOR_BYTES} of a-z, 0-9 and '-' (e.g. slurm)", door.escape_debug()),
        ));
    }
    if RESERVED_DOORS.contains(&door.as_str()) {
        return Err(EngineError::invalid(
            "door",
            format!(
                "'{door}' is a front door inside the daemon (reserved: {}); name your own",
                RESERVED_DOORS.join(", ")
            ),
        ));
    }
    if key.is_empty() || key.chars().count() > MAX_KEY_CHARS || key.chars().any(char::is_control) {
        return Err(EngineError::invalid(
            "key",
            format!("give 1 to {MAX_KEY_CHARS} characters, none of them control characters"),
        ));
    }
    Ok(Action::SubmitWork { request, work: tessera_store::Work::External(tessera_store::ExternalWork { door, key }) })
}

/// `GET /v1/events`'s query: a `limit` above [`EventQuery::MAX_LIMIT`] is refused, as the
/// document says, rather than quietly cut.
fn events_query(q: EventParams) -> Result<Action, EngineError> {
    if let Some(limit) = q.limit.filter(|&l| l > EventQuery::MAX_LIMIT) {
        return Err(EngineError::invalid(
            "limit",
            format!("{limit} is more than {}: ask for at most that many events", EventQuery::MAX_LIMIT),
        ));
    }
    Ok(Action::Events(EventQuery { since_ms: q.since_ms, limit: q.limit }))
}

/// `POST /v1/jobs/{id}/release`'s body as an action.
fn release(id: u64, body: ReleaseRequest) -> Result<Action, EngineError> {
    let ReleaseRequest { succeeded, code, signal, detail } = body;
    if detail.chars().count() > MAX_RELEASE_DETAIL_CHARS || detail.chars().any(char::is_control) {
        return Err(EngineError::invalid(
            "detail",
            format!("give at most {MAX_RELEASE_DETAIL_CHARS} characters, none of them control characters"),
        ));
    }
    let exit = tessera_store::ExitInfo { code, signal, failed_rank: None, detail };
    Ok(Action::Release { id, exit, succeeded })
}

/// An action in a few words for the log (never its body: a submission's environment may hold
/// secrets).
fn describe(action: &Action) -> String {
    match action {
        Action::Submit(_) | Action::SubmitWork { .. } => "submit".into(),
        Action::SubmitMaking { .. } => "submit, making its pinned instances".into(),
        Action::DestroyIdle { gpu, .. } => format!("destroy an idle instance of GPU {gpu}"),
        Action::DryRun(_) => "dry-run submit".into(),
        Action::ListJobs(_) => "list jobs".into(),
        Action::GetJob { id } => format!("show job {id}"),
        Action::Cancel { id } => format!("cancel job {id}"),
        Action::Release { id, .. } => format!("release job {id}"),
        Action::NameWork { id, .. } => format!("name job {id}'s work"),
        Action::Logs { id, .. } => format!("logs of job {id}"),
        Action::Wait { id, .. } => format!("wait for job {id}"),
        Action::Gpus => "list GPUs".into(),
        Action::Drain { gpu, drain: true, .. } => format!("drain GPU {gpu}"),
        Action::Drain { gpu, drain: false, .. } => format!("undrain GPU {gpu}"),
        Action::Layout { gpu, .. } | Action::Reach { gpu, .. } => format!("change GPU {gpu}'s layout"),
        Action::Health => "show health".into(),
        Action::Metrics => "metrics".into(),
        Action::Events(_) => "list events".into(),
        Action::HealthClear { gpu } => format!("clear GPU {gpu}'s health"),
    }
}

/// A refused request in the daemon's log: who, what, why.
fn log_refusal(caller: &Caller, what: &str, e: &EngineError) {
    let status = status_of(e).as_u16();
    let who = &caller.user;
    match e {
        EngineError::Internal(_) => {
            tracing::error!(user = %who, door = ?caller.door, status, "{what} by {who} failed: {e}");
        }
        EngineError::Forbidden(_) => {
            tracing::warn!(user = %who, door = ?caller.door, status, "refused {what} by {who}: {e}");
        }
        _ => tracing::info!(user = %who, door = ?caller.door, status, "refused {what} by {who}: {e}"),
    }
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, EngineError> {
    if body.is_empty() {
        return Err(EngineError::invalid("body", "the request has no JSON body"));
    }
    serde_json::from_slice(body).or_else(|e| {
        // JSON Schema counts `3.0` as an integer, as the OpenAPI document promises; serde does
        // not. Only a body that fails is read again, with such numbers made integers.
        let retry = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|mut v| integral_floats_as_integers(&mut v).then_some(v))
            .and_then(|v| serde_json::from_value(v).ok());
        retry.ok_or_else(|| EngineError::invalid("body", format!("invalid JSON: {e}")))
    })
}

/// Turns every number with no fractional part that fits an `i64` or a `u64` (`3.0`, `-1e3`)
/// into that integer; whether it changed any.
fn integral_floats_as_integers(v: &mut serde_json::Value) -> bool {
    use serde_json::{Number, Value};
    match v {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            // The bounds are exact powers of two: `f < 2^63` and `f < 2^64` hold for every f64
            // that fits, and no other.
            let two_63 = 2f64.powi(63);
            let int = if f.fract() != 0.0 || !f.is_finite() {
                None
            } else if (-two_63..two_63).contains(&f) {
                Some(Number::from(f as i64))
            } else if (0.0..2f64.powi(64)).contains(&f) {
                Some(Number::from(f as u64))
            } else {
                None
            };
            int.map(|i| *n = i).is_some()
        }
        Value::Array(items) => items.iter_mut().fold(false, |changed, x| integral_floats_as_integers(x) | changed),
        Value::Object(map) => map.values_mut().fold(false, |changed, x| integral_floats_as_integers(x) | changed),
        _ => false,
    }
}

fn parse_optional_body<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> Result<T, EngineError> {
    if body.is_empty() { Ok(T::default()) } else { parse_body(body) }
}

fn parse_id(raw: &str) -> Result<u64, EngineError> {
    raw.parse().map_err(|_| EngineError::invalid("id", format!("'{raw}' is not a job id (a positive integer)")))
}

fn parse_gpu(raw: &str) -> Result<u32, EngineError> {
    raw.parse().map_err(|_| EngineError::invalid("gpu", format!("'{raw}' is not a GPU index")))
}

fn query<T>(q: Result<Query<T>, axum::extract::rejection::QueryRejection>) -> Result<T, EngineError> {
    q.map(|Query(q)| q).map_err(|e| EngineError::invalid("query", e.body_text()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
    #[serde(default)]
    history: bool,
    since_ms: Option<u64>,
    user: Option<String>,
    tenant: Option<String>,
    #[serde(default)]
    all: bool,
    limit: Option<u32>,
    after: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogParams {
    rank: Option<u32>,
    stream: Option<String>,
    from: Option<String>,
    tail: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventParams {
    since_ms: Option<u64>,
    limit: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitQuery {
    timeout_ms: Option<u64>,
}

type Q<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

/// `GET /v1/jobs`'s query: the listing's filters, every `state` checked; a page of
/// [`JobQuery::DEFAULT_LIMIT`] unless `limit` says (1 to [`JobQuery::MAX_LIMIT`]).
fn job_query(q: ListQuery) -> Result<JobQuery, EngineError> {
    let limit = match q.limit {
        None => JobQuery::DEFAULT_LIMIT,
        Some(n) if (1..=JobQuery::MAX_LIMIT).contains(&n) => n,
        Some(n) => {
            return Err(EngineError::invalid(
                "limit",
                format!("{n} is not from 1 to {}: follow `next` for more", JobQuery::MAX_LIMIT),
            ));
        }
    };
    let states = match q.state {
        Some(list) => list
            .split(',')
            .map(|x| x.parse::<JobState>().map_err(|e| EngineError::invalid("state", e.to_string())))
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    Ok(JobQuery {
        states,
        history: q.history,
        since_ms: q.since_ms,
        user: q.user,
        tenant: q.tenant,
        all: q.all,
        limit: Some(limit),
        after: q.after,
    })
}

/// `GET /v1/jobs/{id}/logs`'s query: the stream and cursor parsed.
fn log_query(q: LogParams) -> Result<LogQuery, EngineError> {
    let stream = q.stream.map(|s| s.parse::<Stream>().map_err(|e| EngineError::invalid("stream", e))).transpose()?;
    let from = q.from.map(|c| c.parse::<LogCursor>().map_err(|e| EngineError::invalid("from", e))).transpose()?;
    Ok(LogQuery { rank: q.rank, stream, from, tail: q.tail })
}

/// Every parser a request meets before the engine, as the routes call them: `body` as each
/// route's JSON body and `raw_query` as each route's query string (with `id` and `gpu` path
/// segments). Only for `crates/tessera-fuzz`, which must find no panic here; no engine, no I/O.
#[doc(hidden)]
pub fn parse_request_parts(body: &[u8], raw_query: &str) {
    let body = Bytes::copy_from_slice(body);
    let _ = parse_body::<SubmitRequest>(&body);
    let _ = parse_body::<ReleaseRequest>(&body).and_then(|r| release(1, r));
    let _ = parse_body::<WorkRequest>(&body).and_then(external_work);
    let _ = parse_optional_body::<DrainRequest>(&body);
    let _ = parse_body::<LayoutRequest>(&body);
    let _ = parse_id(raw_query);
    let _ = parse_gpu(raw_query);
    let Ok(uri) = axum::http::Uri::try_from(format!("/v1?{raw_query}")) else { return };
    let _ = query(Query::<ListQuery>::try_from_uri(&uri)).and_then(job_query);
    let _ = query(Query::<LogParams>::try_from_uri(&uri)).and_then(log_query);
    let _ = query(Query::<EventParams>::try_from_uri(&uri));
    let _ = query(Query::<WaitQuery>::try_from_uri(&uri)).map(|q| q.timeout_ms.unwrap_or(30_000).min(300_000));
}

/// The API router, with the web view (`/ui`, [`crate::web`]) beside it. The connection layer
/// (`server.rs`) tells it who calls ([`PeerInfo`]).
pub fn router(service: Arc<dyn Service>, identity: Arc<Identity>) -> Router {
    let web = crate::web::router(service.clone(), identity.clone());
    let state = AppState { service, identity };
    Router::new()
        .route("/openapi.json", get(|| async { axum::Json(crate::openapi::document()) }))
        .route(
            "/v1/jobs",
            post(|State(s): State<AppState>, p: Peer, h: HeaderMap, body: Bytes| async move {
                dispatch(&s, p, &h, parse_body::<SubmitRequest>(&body).map(Action::Submit)).await
            })
            .get(|State(s): State<AppState>, p: Peer, h: HeaderMap, q: Q<ListQuery>| async move {
                let action = query(q).and_then(job_query).map(Action::ListJobs);
                dispatch(&s, p, &h, action).await
            }),
        )
        .route(
            "/v1/jobs/dry-run",
            post(|State(s): State<AppState>, p: Peer, h: HeaderMap, body: Bytes| async move {
                dispatch(&s, p, &h, parse_body::<SubmitRequest>(&body).map(Action::DryRun)).await
            }),
        )
        .route(
            "/v1/jobs/{id}",
            get(|State(s): State<AppState>, p: Peer, h: HeaderMap, Path(id): Path<String>| async move {
                dispatch(&s, p, &h, parse_id(&id).map(|id| Action::GetJob { id })).await
            }),
        )
        .route(
            "/v1/jobs/{id}/cancel",
            post(|State(s): State<AppState>, p: Peer, h: HeaderMap, Path(id): Path<String>| async move {
                dispatch(&s, p, &h, parse_id(&id).map(|id| Action::Cancel { id })).await
            }),
        )
        .route(
            "/v1/jobs/{id}/release",
            post(|State(s): State<AppState>, p: Peer, h: HeaderMap, Path(id): Path<String>, body: Bytes| async move {
                let action = parse_id(&id).and_then(|id| release(id, parse_body::<ReleaseRequest>(&body)?));
                dispatch(&s, p, &h, action).await
            }),
        )
        .route(
            "/v1/work",
            post(|State(s): State<AppState>, p: Peer, h: HeaderMap, body: Bytes| async move {
                dispatch(&s, p, &h, parse_body::<WorkRequest>(&body).and_then(external_work)).await
            }),
        )
        .route(
            "/v1/jobs/{id}/logs",
            get(
                |State(s): State<AppState>, p: Peer, h: HeaderMap, Path(id): Path<String>, q: Q<LogParams>| async move {
                    let action = parse_id(&id).and_then(|id| Ok(Action::Logs { id, query: log_query(query(q)?)? }));
                    dispatch(&s, p, &h, action).await
                },
            ),
        )
        .route(
            "/v1/jobs/{id}/wait",
            get(
                |State(s): State<AppState>, p: Peer, h: HeaderMap, Path(id): Path<String>, q: Q<WaitQuery>| async move {
                    let action = parse_id(&id).and_then(|id| {
                        let q = query(q)?;
                        Ok(Action::Wait { id, timeout_ms: q.timeout_ms.unwrap_or(30_000).min(300_000) })
                    });
                    dispatch(&s, p, &h, action).await
                },
            ),
        )
        .route(
            "/v1/gpus",
            get(|State(s): State<AppState>, p: Peer, h: HeaderMap| async move {
                dispatch(&s, p, &h, Ok(Action::Gpus)).await
            }),
        )
        .route(
            "/metrics",
            get(|State(s): State<AppState>, p: Peer, h: HeaderMap| async move { metrics(&s, p, &h).await }),
        )
        .route(
            "/v1/events",
            get(|State(s): State<AppState>, p: Peer, h: HeaderMap, q: Q<EventParams>| async move {
                let action = query(q).and_then(events_query);
                dispatch(&s, p, &h, action).await
            }),
        )
        .route(
            "/v1/gpus/{gpu}/drain",
            post(|State(s): State<AppState>, p: Peer, h: HeaderMap, Path(gpu): Path<String>, body: Bytes| async move {
                let action = parse_gpu(&gpu).and_then(|gpu| {
                    Ok(Action::Drain { gpu, drain: true, request: parse_optional_body::<DrainRequest>(&body)? })
                });
                dispatch(&s, p, &h, action).await
            }),
        )
        .route(
            "/v1/gpus/{gpu}/undrain",
            post(|State(s): State<AppState>, p: Peer, h: HeaderMap, Path(gpu): Path<String>| async move {
                let action =
                    parse_gpu(&gpu).map(|gpu| Action::Drain { gpu, drain: false, request: DrainRequest::default() });
                dispatch(&s, p, &h, action).await
            }),
        )
        .route(
            "/v1/gpus/{gpu}/layout",
            post(|State(s): State<AppState>, p: Peer, h: HeaderMap, Path(gpu): Path<String>, body: Bytes| async move {
                let action = parse_gpu(&gpu)
                    .and_then(|gpu| parse_body::<LayoutRequest>(&body).map(|request| Action::Layout { gpu, request }));
                dispatch(&s, p, &h, action).await
            }),
        )
        .route(
            "/v1/gpus/{gpu}/health/clear",
            post(|State(s): State<AppState>, p: Peer, h: HeaderMap, Path(gpu): Path<String>| async move {
                dispatch(&s, p, &h, parse_gpu(&gpu).map(|gpu| Action::HealthClear { gpu })).await
            }),
        )
        .route(
            "/v1/health",
            get(|State(s): State<AppState>, p: Peer, h: HeaderMap| async move {
                dispatch(&s, p, &h, Ok(Action::Health)).await
            }),
        )
        .fallback(|| async { json_error(StatusCode::NOT_FOUND, "not_found", "no such endpoint; see /openapi.json") })
        .with_state(state)
        .merge(web)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_engine_error_has_one_status() {
        let cases = [
            (EngineError::NotFound("x".into()), 404),
            (EngineError::Forbidden("x".into()), 403),
            (EngineError::Conflict("x".into()), 409),
            (EngineError::invalid("f", "x"), 400),
            (EngineError::cannot_run("f", "x"), 422),
            (EngineError::Internal("x".into()), 500),
        ];
        for (e, code) in cases {
            assert_eq!(status_of(&e).as_u16(), code, "{e:?}");
        }
    }
}
