//! A stand-in Kubernetes API server: the real paths and object JSON for the endpoints Tessera
//! uses, over HTTP on 127.0.0.1, for `kube`'s client.
//!
//! Served: nodes get/list/watch and merge patch (`application/merge-patch+json`, RFC 7386; other
//! patch types answer 415); pods list/watch (cluster-wide and per namespace) with field selectors
//! on `metadata.name`, `metadata.namespace`, `spec.nodeName` and `status.phase`; Leases
//! get/create/replace with optimistic concurrency (`409 Conflict` on a stale
//! `resourceVersion`, `409 AlreadyExists` on a second create); ConfigMaps get; `events.k8s.io/v1`
//! Events create; pods get; `resource.k8s.io/v1` ResourceSlices (cluster-scoped) list/watch (field
//! selectors on `metadata.name`, `spec.driver`, `spec.nodeName`), get, create, replace and delete,
//! and ResourceClaims (namespaced) list, get and create (the status is the scheduler's: a create
//! drops it, tests set it with [`ApiServer::put`]); `/version`, with a settable major and minor.
//! One `resourceVersion` counter for everything; a watch from a version replays
//! every change after it (the history is kept whole), then streams `ADDED`/`MODIFIED`/`DELETED`.
//! Every object is stored as the official `k8s-openapi` type reads it, and every object a client
//! writes must read back as that type unchanged (an unknown field or a wrong type is refused with
//! `422`), so what Tessera writes is checked against the official schema.
//!
//! Not modelled: authentication and RBAC, label selectors, status subresources, admission and defaulting, strategic
//! merge and JSON patches, server-side apply, `generateName`, finalizers and graceful deletion,
//! watch bookmarks and timeouts, compaction (`410 Gone`), the scheduler and the kubelet (the
//! tests bind pods themselves).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::resource::v1::{ResourceClaim, ResourceSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, Status};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;

/// The kinds served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Node,
    Pod,
    Lease,
    ConfigMap,
    Event,
    ResourceSlice,
    ResourceClaim,
}

impl Kind {
    fn api_version(self) -> &'static str {
        match self {
            Kind::Lease => "coordination.k8s.io/v1",
            Kind::Event => "events.k8s.io/v1",
            Kind::ResourceSlice | Kind::ResourceClaim => "resource.k8s.io/v1",
            _ => "v1",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Node => "Node",
            Kind::Pod => "Pod",
            Kind::Lease => "Lease",
            Kind::ConfigMap => "ConfigMap",
            Kind::Event => "Event",
            Kind::ResourceSlice => "ResourceSlice",
            Kind::ResourceClaim => "ResourceClaim",
        }
    }

    /// Whether objects of the kind live in a namespace.
    fn namespaced(self) -> bool {
        !matches!(self, Kind::Node | Kind::ResourceSlice)
    }

    /// Reads `value` as the official type and back: the canonical JSON, or why it is refused.
    fn canonical(self, value: &Value) -> Result<Value, String> {
        fn round<T: DeserializeOwned + Serialize>(v: &Value) -> Result<Value, String> {
            let typed: T = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
            let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
            if strip_nulls(v.clone()) != back {
                return Err(format!(
                    "fields the official type does not have, or of another shape: sent {v}, read {back}"
                ));
            }
            Ok(back)
        }
        match self {
            Kind::Node => round::<Node>(value),
            Kind::Pod => round::<Pod>(value),
            Kind::Lease => round::<Lease>(value),
            Kind::ConfigMap => round::<ConfigMap>(value),
            Kind::Event => round::<Event>(value),
            Kind::ResourceSlice => round::<ResourceSlice>(value),
            Kind::ResourceClaim => round::<ResourceClaim>(value),
        }
    }

    fn fields(self) -> &'static [&'static str] {
        match self {
            Kind::Pod => &["metadata.name", "metadata.namespace", "spec.nodeName", "status.phase"],
            Kind::ResourceSlice => &["metadata.name", "spec.driver", "spec.nodeName"],
            _ => &["metadata.name", "metadata.namespace"],
        }
    }
}

/// Removes `null` members, as a server reading into optional fields does.
fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            Value::Object(m.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k, strip_nulls(v))).collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(strip_nulls).collect()),
        other => other,
    }
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    let Value::Object(t) = target else { return };
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

type Key = (Kind, String, String);

#[derive(Debug, Clone, Serialize)]
struct WatchLine {
    #[serde(rename = "type")]
    type_: &'static str,
    object: Value,
}

#[derive(Debug)]
struct Watcher {
    kind: Kind,
    namespace: Option<String>,
    selector: Vec<(String, bool, String)>,
    tx: mpsc::UnboundedSender<Result<Bytes, Infallible>>,
}

/// One request as the stand-in saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub content_type: Option<String>,
    pub status: u16,
}

#[derive(Debug, Default)]
struct Store {
    version: u64,
    objects: BTreeMap<Key, Value>,
    /// Every change: (resourceVersion, kind, namespace, type, object).
    history: Vec<(u64, Kind, String, &'static str, Value)>,
    watchers: Vec<Watcher>,
    requests: Vec<Seen>,
    /// `/version`'s major and minor; `None`: 1.34.
    server_version: Option<(String, String)>,
}

impl Store {
    /// Stores `value` (canonical already), with a new resourceVersion, and tells the watchers.
    fn write(&mut self, kind: Kind, ns: &str, name: &str, mut value: Value, type_: &'static str) -> Value {
        self.version += 1;
        value["metadata"]["resourceVersion"] = Value::String(self.version.to_string());
        if type_ == "DELETED" {
            self.objects.remove(&(kind, ns.to_string(), name.to_string()));
        } else {
            self.objects.insert((kind, ns.to_string(), name.to_string()), value.clone());
        }
        self.history.push((self.version, kind, ns.to_string(), type_, value.clone()));
        let line = WatchLine { type_, object: value.clone() };
        let mut text = serde_json::to_vec(&line).unwrap_or_default();
        text.push(b'\n');
        self.watchers.retain(|w| {
            if w.kind != kind || w.namespace.as_deref().is_some_and(|n| n != ns) || !selected(&w.selector, &value) {
                return !w.tx.is_closed();
            }
            w.tx.send(Ok(Bytes::from(text.clone()))).is_ok()
        });
        value
    }
}

fn field(value: &Value, path: &str) -> String {
    let mut v = value;
    for part in path.split('.') {
        v = &v[part];
    }
    v.as_str().unwrap_or_default().to_string()
}

fn selected(selector: &[(String, bool, String)], value: &Value) -> bool {
    selector.iter().all(|(f, eq, want)| (field(value, f) == *want) == *eq)
}

fn parse_selector(kind: Kind, text: Option<&String>) -> Result<Vec<(String, bool, String)>, String> {
    let Some(text) = text.filter(|t| !t.is_empty()) else { return Ok(Vec::new()) };
    text.split(',')
        .map(|term| {
            let (f, eq, v) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (f, true, v)
            } else {
                return Err(format!("fieldSelector term '{term}' is not field=value"));
            };
            if !kind.fields().contains(&f) {
                return Err(format!("field label not supported for {}: {f}", kind.name()));
            }
            Ok((f.to_string(), eq, v.to_string()))
        })
        .collect()
}

/// The stand-in, running on 127.0.0.1 until dropped.
#[derive(Debug, Clone)]
pub struct ApiServer {
    store: Arc<Mutex<Store>>,
    url: String,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if Arc::strong_count(&self.task) == 1 {
            self.task.abort();
        }
    }
}

type Shared = Arc<Mutex<Store>>;

fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body = Status {
        code: Some(i32::from(code.as_u16())),
        message: Some(message),
        reason: Some(reason.to_string()),
        status: Some("Failure".into()),
        ..Status::default()
    };
    let mut v = serde_json::to_value(&body).unwrap_or_default();
    v["apiVersion"] = "v1".into();
    v["kind"] = "Status".into();
    (code, axum::Json(v)).into_response()
}

fn ok(value: Value) -> Response {
    (StatusCode::OK, axum::Json(value)).into_response()
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ListOf {
    api_version: &'static str,
    kind: String,
    metadata: ListMeta,
    items: Vec<Value>,
}

fn lock(s: &Shared) -> MutexGuard<'_, Store> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

fn list_or_watch(s: &Shared, kind: Kind, ns: Option<String>, q: &BTreeMap<String, String>) -> Response {
    let selector = match parse_selector(kind, q.get("fieldSelector")) {
        Ok(s) => s,
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", e),
    };
    if q.get("labelSelector").is_some_and(|l| !l.is_empty()) {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "the stand-in does not model labelSelector".into());
    }
    let mut store = lock(s);
    let in_scope = |k: Kind, n: &str| k == kind && ns.as_deref().is_none_or(|want| want == n);
    if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
        let from: u64 = q.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(store.version);
        let (tx, rx) = mpsc::unbounded_channel();
        for (v, k, n, t, obj) in &store.history {
            if *v > from && in_scope(*k, n) && selected(&selector, obj) {
                let mut text = serde_json::to_vec(&WatchLine { type_: t, object: obj.clone() }).unwrap_or_default();
                text.push(b'\n');
                let _ = tx.send(Ok(Bytes::from(text)));
            }
        }
        store.watchers.push(Watcher { kind, namespace: ns, selector, tx });
        let body = Body::from_stream(UnboundedReceiverStream::new(rx).map(|b| b));
        return Response::builder()
            .header("content-type", "application/json")
            .body(body)
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    }
    let items: Vec<Value> = store
        .objects
        .iter()
        .filter(|((k, n, _), v)| in_scope(*k, n) && selected(&selector, v))
        .map(|(_, v)| v.clone())
        .collect();
    let list = ListOf {
        api_version: kind.api_version(),
        kind: format!("{}List", kind.name()),
        metadata: ListMeta { resource_version: Some(store.version.to_string()), ..ListMeta::default() },
        items,
    };
    ok(serde_json::to_value(&list).unwrap_or_default())
}

fn get_one(s: &Shared, kind: Kind, ns: &str, name: &str) -> Response {
    match lock(s).objects.get(&(kind, ns.to_string(), name.to_string())) {
        Some(v) => ok(v.clone()),
        None => {
            status(StatusCode::NOT_FOUND, "NotFound", format!("{}s \"{name}\" not found", kind.name().to_lowercase()))
        }
    }
}

fn body_json(body: &Bytes) -> Result<Value, Box<Response>> {
    serde_json::from_slice(body)
        .map_err(|e| Box::new(status(StatusCode::BAD_REQUEST, "BadRequest", format!("body is not JSON: {e}"))))
}

/// Create (`existing` false) or replace: the body must be the official type, named as the path.
fn write_one(s: &Shared, kind: Kind, ns: &str, name: Option<&str>, body: &Bytes) -> Response {
    let mut value = match body_json(body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let invalid = |m: String| status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", m);
    if value["apiVersion"] != kind.api_version() || value["kind"] != kind.name() {
        return invalid(format!("apiVersion/kind must be {}/{}", kind.api_version(), kind.name()));
    }
    let Some(obj_name) = value["metadata"]["name"].as_str().map(str::to_string) else {
        return invalid("metadata.name: Required value".into());
    };
    if name.is_some_and(|n| n != obj_name) {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the name of the object does not match the name on the URL".into(),
        );
    }
    if value["metadata"]["namespace"].as_str().is_some_and(|n| n != ns) {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the namespace of the object does not match the namespace on the URL".into(),
        );
    }
    if kind == Kind::Event {
        for f in ["eventTime", "reportingController", "reportingInstance", "action", "reason", "regarding"] {
            if value[f].is_null() {
                return invalid(format!("{f}: Required value"));
            }
        }
    }
    let mut store = lock(s);
    let key = (kind, ns.to_string(), obj_name.clone());
    let existing = store.objects.get(&key).cloned();
    match (name, &existing) {
        (None, Some(_)) => {
            return status(
                StatusCode::CONFLICT,
                "AlreadyExists",
                format!("{}s \"{obj_name}\" already exists", kind.name().to_lowercase()),
            );
        }
        (Some(_), None) => {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("{}s \"{obj_name}\" not found", kind.name().to_lowercase()),
            );
        }
        (Some(_), Some(old)) => {
            let sent = value["metadata"]["resourceVersion"].as_str().unwrap_or_default();
            if sent.is_empty() || sent != old["metadata"]["resourceVersion"].as_str().unwrap_or_default() {
                return status(
                    StatusCode::CONFLICT,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on {}s \"{obj_name}\": the object has been modified; please apply your changes to the latest version and try again",
                        kind.name().to_lowercase()
                    ),
                );
            }
        }
        (None, None) => {}
    }
    if kind.namespaced() {
        value["metadata"]["namespace"] = Value::String(ns.to_string());
    } else if let Some(m) = value["metadata"].as_object_mut() {
        m.remove("namespace");
    }
    if kind == Kind::ResourceClaim {
        // The status is a subresource: a create or replace keeps what was there.
        match existing.as_ref().map(|old| old["status"].clone()).filter(|s| !s.is_null()) {
            Some(status) => value["status"] = status,
            None => {
                if let Some(m) = value.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    if let Some(old) = &existing {
        value["metadata"]["uid"] = old["metadata"]["uid"].clone();
    } else {
        value["metadata"]["uid"] = Value::String(format!("uid-{}-{}", kind.name().to_lowercase(), store.version + 1));
    }
    let value = match kind.canonical(&value) {
        Ok(v) => v,
        Err(e) => return invalid(format!("{}: {e}", kind.name())),
    };
    let stored = store.write(kind, ns, &obj_name, value, if existing.is_some() { "MODIFIED" } else { "ADDED" });
    (if existing.is_some() { StatusCode::OK } else { StatusCode::CREATED }, axum::Json(stored)).into_response()
}

/// Deletes at once (no finalizers): the object as it was, or `404`.
fn delete_one(s: &Shared, kind: Kind, ns: &str, name: &str) -> Response {
    let mut store = lock(s);
    let Some(value) = store.objects.get(&(kind, ns.to_string(), name.to_string())).cloned() else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{}s \"{name}\" not found", kind.name().to_lowercase()),
        );
    };
    ok(store.write(kind, ns, name, value, "DELETED"))
}

/// `/version`, as the real server answers it.
fn version(s: &Shared) -> Response {
    let (major, minor) = lock(s).server_version.clone().unwrap_or_else(|| ("1".into(), "34".into()));
    let digits: String = minor.chars().take_while(char::is_ascii_digit).collect();
    let info = k8s_openapi::apimachinery::pkg::version::Info {
        git_version: format!("v{major}.{digits}.0"),
        major,
        minor,
        git_commit: "0000000000000000000000000000000000000000".into(),
        git_tree_state: "clean".into(),
        build_date: "2026-01-01T00:00:00Z".into(),
        go_version: "go1.25.0".into(),
        compiler: "gc".into(),
        platform: "linux/amd64".into(),
        ..Default::default()
    };
    ok(serde_json::to_value(&info).unwrap_or_default())
}

fn patch_node(s: &Shared, name: &str, headers: &HeaderMap, body: &Bytes) -> Response {
    let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if ct != "application/merge-patch+json" {
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!("the stand-in models only application/merge-patch+json, not '{ct}'"),
        );
    }
    let patch = match body_json(body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let mut store = lock(s);
    let key = (Kind::Node, String::new(), name.to_string());
    let Some(mut node) = store.objects.get(&key).cloned() else {
        return status(StatusCode::NOT_FOUND, "NotFound", format!("nodes \"{name}\" not found"));
    };
    merge_patch(&mut node, &patch);
    let node = match Kind::Node.canonical(&node) {
        Ok(v) => v,
        Err(e) => return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", format!("Node after the patch: {e}")),
    };
    ok(store.write(Kind::Node, "", name, node, "MODIFIED"))
}

type Q = Query<BTreeMap<String, String>>;

impl ApiServer {
    /// Starts the stand-in on a free port of 127.0.0.1, as Kubernetes `major.minor`.
    pub async fn start_with_version(major: &str, minor: &str) -> ApiServer {
        let api = ApiServer::start().await;
        api.set_version(major, minor);
        api
    }

    /// Starts the stand-in on a free port of 127.0.0.1 (as Kubernetes 1.34).
    pub async fn start() -> ApiServer {
        let store: Shared = Arc::default();
        let app =
            Router::new()
                .route("/version", get(|State(s): State<Shared>| async move { version(&s) }))
                .route(
                    "/api/v1/namespaces/{ns}/pods/{name}",
                    get(|State(s): State<Shared>, Path((ns, n)): Path<(String, String)>| async move {
                        get_one(&s, Kind::Pod, &ns, &n)
                    }),
                )
                .route(
                    "/apis/resource.k8s.io/v1/resourceslices",
                    get(|State(s): State<Shared>, Query(q): Q| async move {
                        list_or_watch(&s, Kind::ResourceSlice, None, &q)
                    })
                    .post(|State(s): State<Shared>, b: Bytes| async move {
                        write_one(&s, Kind::ResourceSlice, "", None, &b)
                    }),
                )
                .route(
                    "/apis/resource.k8s.io/v1/resourceslices/{name}",
                    get(|State(s): State<Shared>, Path(n): Path<String>| async move {
                        get_one(&s, Kind::ResourceSlice, "", &n)
                    })
                    .put(|State(s): State<Shared>, Path(n): Path<String>, b: Bytes| async move {
                        write_one(&s, Kind::ResourceSlice, "", Some(&n), &b)
                    })
                    .delete(|State(s): State<Shared>, Path(n): Path<String>| async move {
                        delete_one(&s, Kind::ResourceSlice, "", &n)
                    }),
                )
                .route(
                    "/apis/resource.k8s.io/v1/namespaces/{ns}/resourceclaims",
                    get(|State(s): State<Shared>, Path(ns): Path<String>, Query(q): Q| async move {
                        list_or_watch(&s, Kind::ResourceClaim, Some(ns), &q)
                    })
                    .post(
                        |State(s): State<Shared>, Path(ns): Path<String>, b: Bytes| async move {
                            write_one(&s, Kind::ResourceClaim, &ns, None, &b)
                        },
                    ),
                )
                .route(
                    "/apis/resource.k8s.io/v1/namespaces/{ns}/resourceclaims/{name}",
                    get(|State(s): State<Shared>, Path((ns, n)): Path<(String, String)>| async move {
                        get_one(&s, Kind::ResourceClaim, &ns, &n)
                    }),
                )
                .route(
                    "/api/v1/nodes",
                    get(|State(s): State<Shared>, Query(q): Q| async move { list_or_watch(&s, Kind::Node, None, &q) }),
                )
                .route(
                    "/api/v1/nodes/{name}",
                    get(
                        |State(s): State<Shared>, Path(n): Path<String>| async move { get_one(&s, Kind::Node, "", &n) },
                    )
                    .patch(
                        |State(s): State<Shared>, Path(n): Path<String>, h: HeaderMap, b: Bytes| async move {
                            patch_node(&s, &n, &h, &b)
                        },
                    ),
                )
                .route(
                    "/api/v1/pods",
                    get(|State(s): State<Shared>, Query(q): Q| async move { list_or_watch(&s, Kind::Pod, None, &q) }),
                )
                .route(
                    "/api/v1/namespaces/{ns}/pods",
                    get(|State(s): State<Shared>, Path(ns): Path<String>, Query(q): Q| async move {
                        list_or_watch(&s, Kind::Pod, Some(ns), &q)
                    }),
                )
                .route(
                    "/api/v1/namespaces/{ns}/configmaps/{name}",
                    get(|State(s): State<Shared>, Path((ns, n)): Path<(String, String)>| async move {
                        get_one(&s, Kind::ConfigMap, &ns, &n)
                    }),
                )
                .route(
                    "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
                    axum::routing::post(|State(s): State<Shared>, Path(ns): Path<String>, b: Bytes| async move {
                        write_one(&s, Kind::Lease, &ns, None, &b)
                    }),
                )
                .route(
                    "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}",
                    get(|State(s): State<Shared>, Path((ns, n)): Path<(String, String)>| async move {
                        get_one(&s, Kind::Lease, &ns, &n)
                    })
                    .put(
                        |State(s): State<Shared>, Path((ns, n)): Path<(String, String)>, b: Bytes| async move {
                            write_one(&s, Kind::Lease, &ns, Some(&n), &b)
                        },
                    ),
                )
                .route(
                    "/apis/events.k8s.io/v1/namespaces/{ns}/events",
                    axum::routing::post(|State(s): State<Shared>, Path(ns): Path<String>, b: Bytes| async move {
                        write_one(&s, Kind::Event, &ns, None, &b)
                    }),
                )
                .fallback(|m: Method, u: Uri| async move {
                    status(StatusCode::NOT_FOUND, "NotFound", format!("the stand-in does not serve {m} {u}"))
                })
                .layer(axum::middleware::from_fn_with_state(store.clone(), record))
                .with_state(store.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        ApiServer { store, url, task: Arc::new(task) }
    }

    /// The base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A client for it.
    pub async fn client(&self) -> kube::Client {
        tessera_kube::connect(Some(&self.url)).await.expect("a client for the stand-in")
    }

    /// Creates or replaces an object as a test's setup (the cluster's other actors).
    pub fn put<K: k8s_openapi::Resource + Serialize>(&self, object: &K) {
        let kind = match K::KIND {
            "Node" => Kind::Node,
            "Pod" => Kind::Pod,
            "Lease" => Kind::Lease,
            "ConfigMap" => Kind::ConfigMap,
            "ResourceSlice" => Kind::ResourceSlice,
            "ResourceClaim" => Kind::ResourceClaim,
            other => panic!("the stand-in does not store {other}"),
        };
        let mut value = serde_json::to_value(object).expect("object JSON");
        value["apiVersion"] = K::API_VERSION.into();
        value["kind"] = K::KIND.into();
        let name = value["metadata"]["name"].as_str().expect("metadata.name").to_string();
        let ns = if !kind.namespaced() {
            String::new()
        } else {
            value["metadata"]["namespace"].as_str().unwrap_or("default").to_string()
        };
        let mut store = lock(&self.store);
        let key = (kind, ns.clone(), name.clone());
        let existing = store.objects.get(&key).cloned();
        value["metadata"]["uid"] = match &existing {
            Some(old) => old["metadata"]["uid"].clone(),
            None => value["metadata"]["uid"]
                .as_str()
                .map_or_else(|| Value::String(format!("uid-{name}")), |u| Value::String(u.to_string())),
        };
        if kind.namespaced() {
            value["metadata"]["namespace"] = Value::String(ns.clone());
        }
        let value = kind.canonical(&value).expect("a test object of the official type");
        store.write(kind, &ns, &name, value, if existing.is_some() { "MODIFIED" } else { "ADDED" });
    }

    /// Deletes an object (a pod ending).
    pub fn delete(&self, kind: Kind, ns: &str, name: &str) {
        let mut store = lock(&self.store);
        let key = (kind, ns.to_string(), name.to_string());
        let value = store.objects.get(&key).cloned().expect("the object to delete exists");
        store.write(kind, ns, name, value, "DELETED");
    }

    fn typed<K: DeserializeOwned>(&self, kind: Kind, ns: &str, name: &str) -> Option<K> {
        let v = lock(&self.store).objects.get(&(kind, ns.to_string(), name.to_string())).cloned()?;
        Some(serde_json::from_value(v).expect("a stored object reads as its type"))
    }

    fn all<K: DeserializeOwned>(&self, kind: Kind) -> Vec<K> {
        let store = lock(&self.store);
        store
            .objects
            .iter()
            .filter(|((k, _, _), _)| *k == kind)
            .map(|(_, v)| serde_json::from_value(v.clone()).expect("a stored object reads as its type"))
            .collect()
    }

    pub fn node(&self, name: &str) -> Node {
        self.typed(Kind::Node, "", name).expect("the node exists")
    }

    pub fn pod(&self, ns: &str, name: &str) -> Option<Pod> {
        self.typed(Kind::Pod, ns, name)
    }

    pub fn pods(&self) -> Vec<Pod> {
        self.all(Kind::Pod)
    }

    pub fn lease(&self, ns: &str, name: &str) -> Option<Lease> {
        self.typed(Kind::Lease, ns, name)
    }

    pub fn events(&self) -> Vec<Event> {
        self.all(Kind::Event)
    }

    /// Every ResourceSlice, by name.
    pub fn resource_slices(&self) -> Vec<ResourceSlice> {
        self.all(Kind::ResourceSlice)
    }

    pub fn resource_claim(&self, ns: &str, name: &str) -> Option<ResourceClaim> {
        self.typed(Kind::ResourceClaim, ns, name)
    }

    /// Sets what `/version` answers (`minor` as the real server spells it, e.g. `"35+"`).
    pub fn set_version(&self, major: &str, minor: &str) {
        lock(&self.store).server_version = Some((major.to_string(), minor.to_string()));
    }

    /// Every change to objects of `kind`, in order: `ADDED`, `MODIFIED` or `DELETED`, and the
    /// object as it was written.
    pub fn changes<K: DeserializeOwned>(&self, kind: Kind) -> Vec<(&'static str, K)> {
        let store = lock(&self.store);
        store
            .history
            .iter()
            .filter(|(_, k, _, _, _)| *k == kind)
            .map(|(_, _, _, t, v)| (*t, serde_json::from_value(v.clone()).expect("a stored object reads as its type")))
            .collect()
    }

    /// The values a node's label had, change by change (repeats folded), `None` when absent.
    pub fn label_history(&self, node: &str, key: &str) -> Vec<Option<String>> {
        let store = lock(&self.store);
        let mut out: Vec<Option<String>> = Vec::new();
        for (_, kind, _, _, v) in &store.history {
            if *kind == Kind::Node && v["metadata"]["name"] == node {
                let value = v["metadata"]["labels"][key].as_str().map(str::to_string);
                if out.last() != Some(&value) {
                    out.push(value);
                }
            }
        }
        out
    }

    /// Every request served, in order.
    pub fn requests(&self) -> Vec<Seen> {
        lock(&self.store).requests.clone()
    }

    /// Sets (or, with `None`, removes) a label of a node, as `kubectl label` does.
    pub fn label_node(&self, name: &str, key: &str, value: Option<&str>) {
        let mut node = self.node(name);
        let labels = node.metadata.labels.get_or_insert_with(BTreeMap::new);
        match value {
            Some(v) => labels.insert(key.to_string(), v.to_string()),
            None => labels.remove(key),
        };
        self.put(&node);
    }
}

async fn record(State(s): State<Shared>, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let method = req.method().to_string();
    let path = req.uri().to_string();
    let content_type = req.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
    let response = next.run(req).await;
    lock(&s).requests.push(Seen { method, path, content_type, status: response.status().as_u16() });
    response
}
