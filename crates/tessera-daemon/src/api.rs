//! The HTTP/JSON API: requests become [`Action`]s, callers become [`Caller`]s, and every error
//! is a JSON body with a 4xx/5xx status. Nothing here decides anything; the [`Service`] does.
//!
//! On the Unix socket the peer's credentials (`SO_PEERCRED`) say who calls; on TCP a bearer
//! token does. Bodies with unknown fields or bad JSON are refused with 400 and the reason.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub user: String,
    pub tenant: String,
    /// May change MIG layouts and drain GPUs, and see every job.
    pub admin: bool,
}

/// A failed request: the HTTP status, a stable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError { status: 400, code: "bad_request", message: message.into() }
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError { status: 401, code: "unauthorized", message: message.into() }
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError { status: 403, code: "forbidden", message: message.into() }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError { status: 404, code: "not_found", message: message.into() }
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        ApiError { status: 409, code: "conflict", message: message.into() }
    }
    pub fn unprocessable(message: impl Into<String>) -> Self {
        ApiError { status: 422, code: "unprocessable", message: message.into() }
    }
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError { status: 500, code: "internal", message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(json!({"error": {"code": self.code, "message": self.message}}))).into_response()
    }
}

/// A job submission (`POST /v1/jobs`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitBody {
    /// Program and arguments, e.g. `["python", "train.py"]`.
    pub command: Vec<String>,
    /// Environment for the job.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory (absolute).
    pub cwd: String,
    /// What the job needs: the scheduler's job request (GPU, ranks, sharing, CPUs, memory,
    /// tenant, priority, runtime estimate and limit).
    pub resources: Value,
}

/// A MIG layout change for one GPU (`POST /v1/gpus/{gpu}/layout`), for admins.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutBody {
    /// The instances the GPU should have: `3g.40gb` (wherever it fits best; matching
    /// instances are kept) or `3g.40gb@4` (at that placement; then every entry gives one), or a
    /// compute split `1c.3g.40gb`. An empty list removes every idle instance.
    pub instances: Vec<String>,
    /// Only plan: say what would change, change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// Everything the API can be asked to do. Each variant says who may do it.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Queue a job for the caller.
    Submit(SubmitBody),
    /// The caller's jobs (every job for admins, with `all`), optionally in some states.
    ListJobs { states: Vec<String>, all: bool },
    /// One job, if the caller owns it (admins: any).
    GetJob { id: u64 },
    /// Cancel a job the caller owns.
    Cancel { id: u64 },
    /// Bytes of a job's log from an offset.
    Logs { id: u64, rank: u32, stream: String, offset: u64 },
    /// Wait until a job ends, at most `timeout_ms`.
    Wait { id: u64, timeout_ms: u64 },
    /// The node's GPUs, instances and which job runs where.
    Gpus,
    /// Admins: stop placing new work on a GPU.
    Drain { gpu: u32, drain: bool },
    /// Admins: change a GPU's MIG layout; busy instances are never touched.
    Layout { gpu: u32, body: LayoutBody },
    /// Node health.
    Health,
}

/// A boxed future, so the service trait stays object-safe.
pub type Reply<'a> = Pin<Box<dyn Future<Output = Result<Value, ApiError>> + Send + 'a>>;

/// What answers actions: the daemon's engine, or a fake in tests.
pub trait Service: Send + Sync + 'static {
    fn handle(&self, caller: Caller, action: Action) -> Reply<'_>;
}

/// How a request proved who it is.
#[derive(Debug, Clone)]
pub enum Peer {
    /// Unix socket peer credentials.
    Unix { uid: u32, gid: u32 },
    /// TCP: the bearer token is checked against this.
    Tcp,
}

/// Who callers are: users, tenants, admins, and the TCP token.
#[derive(Debug, Clone)]
pub struct Identity {
    pub token: Option<String>,
    pub token_user: String,
    pub users_to_tenants: BTreeMap<String, String>,
    pub admins: Vec<String>,
}

impl Identity {
    fn caller(&self, peer: &Peer, headers: &HeaderMap) -> Result<Caller, ApiError> {
        match peer {
            Peer::Unix { uid, gid } => {
                let user = user_name(*uid);
                Ok(Caller {
                    uid: *uid,
                    gid: *gid,
                    tenant: self.users_to_tenants.get(&user).cloned().unwrap_or_else(|| "default".into()),
                    admin: *uid == 0 || self.admins.contains(&user),
                    user,
                })
            }
            Peer::Tcp => {
                let Some(expected) = &self.token else {
                    return Err(ApiError::unauthorized("TCP access is not configured (server.token_file)"));
                };
                let given = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .ok_or_else(|| ApiError::unauthorized("send `Authorization: Bearer <token>`"))?;
                if !constant_time_eq(given.trim().as_bytes(), expected.as_bytes()) {
                    return Err(ApiError::unauthorized("the bearer token is not valid"));
                }
                let user = self.token_user.clone();
                Ok(Caller {
                    uid: u32::MAX,
                    gid: u32::MAX,
                    tenant: self.users_to_tenants.get(&user).cloned().unwrap_or_else(|| "default".into()),
                    admin: self.admins.contains(&user),
                    user,
                })
            }
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The user name of a uid; `uid:N` when it has none.
pub fn user_name(uid: u32) -> String {
    tessera_host::users::user_name(uid)
}

#[derive(Clone)]
struct AppState {
    service: Arc<dyn Service>,
    identity: Arc<Identity>,
    peer_is_tcp: bool,
}

/// Unix-socket connection info: the peer's credentials.
#[derive(Debug, Clone, Copy)]
pub struct UdsPeer {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::UnixListener>> for UdsPeer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::UnixListener>) -> Self {
        match stream.io().peer_cred() {
            Ok(c) => UdsPeer { uid: Some(c.uid()), gid: Some(c.gid()) },
            Err(_) => UdsPeer { uid: None, gid: None },
        }
    }
}

async fn dispatch(state: &AppState, peer: Peerish, headers: &HeaderMap, action: Result<Action, ApiError>) -> Response {
    let peer = if state.peer_is_tcp {
        Peer::Tcp
    } else {
        match peer.0 {
            Some(UdsPeer { uid: Some(uid), gid: Some(gid) }) => Peer::Unix { uid, gid },
            _ => return ApiError::unauthorized("the socket peer's credentials could not be read").into_response(),
        }
    };
    let caller = match state.identity.caller(&peer, headers) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let action = match action {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let created = matches!(action, Action::Submit(_));
    match state.service.handle(caller, action).await {
        Ok(v) if created => (StatusCode::CREATED, axum::Json(v)).into_response(),
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the request has no JSON body"));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

fn parse_id(raw: &str) -> Result<u64, ApiError> {
    raw.parse().map_err(|_| ApiError::bad_request(format!("'{raw}' is not a job id (a positive integer)")))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
    #[serde(default)]
    all: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    #[serde(default)]
    rank: u32,
    #[serde(default)]
    offset: u64,
    stream: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitQuery {
    timeout_ms: Option<u64>,
}

/// The socket peer, when the connection came through the Unix socket.
struct Peerish(Option<UdsPeer>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peerish {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Peerish(parts.extensions.get::<axum::extract::ConnectInfo<UdsPeer>>().map(|c| c.0)))
    }
}

/// The API router. `tcp` selects bearer-token authentication instead of peer credentials.
pub fn router(service: Arc<dyn Service>, identity: Arc<Identity>, tcp: bool) -> Router {
    let state = AppState { service, identity, peer_is_tcp: tcp };
    Router::new()
        .route("/openapi.json", get(|| async { axum::Json(crate::openapi::document()) }))
        .route(
            "/v1/jobs",
            post(|State(s): State<AppState>, p: Peerish, h: HeaderMap, body: Bytes| async move {
                dispatch(&s, p, &h, parse_body::<SubmitBody>(&body).map(Action::Submit)).await
            })
            .get(
                |State(s): State<AppState>,
                 p: Peerish,
                 h: HeaderMap,
                 q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>| async move {
                    let action = q.map_err(|e| ApiError::bad_request(e.body_text())).map(|Query(q)| Action::ListJobs {
                        states: q.state.map(|s| s.split(',').map(str::to_string).collect()).unwrap_or_default(),
                        all: q.all,
                    });
                    dispatch(&s, p, &h, action).await
                },
            ),
        )
        .route(
            "/v1/jobs/{id}",
            get(|State(s): State<AppState>, p: Peerish, h: HeaderMap, Path(id): Path<String>| async move {
                dispatch(&s, p, &h, parse_id(&id).map(|id| Action::GetJob { id })).await
            }),
        )
        .route(
            "/v1/jobs/{id}/cancel",
            post(|State(s): State<AppState>, p: Peerish, h: HeaderMap, Path(id): Path<String>| async move {
                dispatch(&s, p, &h, parse_id(&id).map(|id| Action::Cancel { id })).await
            }),
        )
        .route(
            "/v1/jobs/{id}/logs",
            get(
                |State(s): State<AppState>,
                 p: Peerish,
                 h: HeaderMap,
                 Path(id): Path<String>,
                 q: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>| async move {
                    let action = parse_id(&id).and_then(|id| {
                        let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
                        let stream = q.stream.unwrap_or_else(|| "stdout".into());
                        if stream != "stdout" && stream != "stderr" {
                            return Err(ApiError::bad_request(format!("stream '{stream}': use stdout or stderr")));
                        }
                        Ok(Action::Logs { id, rank: q.rank, stream, offset: q.offset })
                    });
                    dispatch(&s, p, &h, action).await
                },
            ),
        )
        .route(
            "/v1/jobs/{id}/wait",
            get(
                |State(s): State<AppState>,
                 p: Peerish,
                 h: HeaderMap,
                 Path(id): Path<String>,
                 q: Result<Query<WaitQuery>, axum::extract::rejection::QueryRejection>| async move {
                    let action = parse_id(&id).and_then(|id| {
                        let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
                        Ok(Action::Wait { id, timeout_ms: q.timeout_ms.unwrap_or(30_000).min(300_000) })
                    });
                    dispatch(&s, p, &h, action).await
                },
            ),
        )
        .route(
            "/v1/gpus",
            get(|State(s): State<AppState>, p: Peerish, h: HeaderMap| async move {
                dispatch(&s, p, &h, Ok(Action::Gpus)).await
            }),
        )
        .route(
            "/v1/gpus/{gpu}/drain",
            post(|State(s): State<AppState>, p: Peerish, h: HeaderMap, Path(gpu): Path<String>| async move {
                let action = gpu
                    .parse()
                    .map(|gpu| Action::Drain { gpu, drain: true })
                    .map_err(|_| ApiError::bad_request(format!("'{gpu}' is not a GPU index")));
                dispatch(&s, p, &h, action).await
            }),
        )
        .route(
            "/v1/gpus/{gpu}/undrain",
            post(|State(s): State<AppState>, p: Peerish, h: HeaderMap, Path(gpu): Path<String>| async move {
                let action = gpu
                    .parse()
                    .map(|gpu| Action::Drain { gpu, drain: false })
                    .map_err(|_| ApiError::bad_request(format!("'{gpu}' is not a GPU index")));
                dispatch(&s, p, &h, action).await
            }),
        )
        .route(
            "/v1/gpus/{gpu}/layout",
            post(
                |State(s): State<AppState>, p: Peerish, h: HeaderMap, Path(gpu): Path<String>, body: Bytes| async move {
                    let action = gpu
                        .parse()
                        .map_err(|_| ApiError::bad_request(format!("'{gpu}' is not a GPU index")))
                        .and_then(|gpu| parse_body::<LayoutBody>(&body).map(|body| Action::Layout { gpu, body }));
                    dispatch(&s, p, &h, action).await
                },
            ),
        )
        .route(
            "/v1/health",
            get(|State(s): State<AppState>, p: Peerish, h: HeaderMap| async move {
                dispatch(&s, p, &h, Ok(Action::Health)).await
            }),
        )
        .fallback(|| async { ApiError::not_found("no such endpoint; see /openapi.json").into_response() })
        .with_state(state)
}
