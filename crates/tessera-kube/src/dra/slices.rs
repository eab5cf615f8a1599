//! Publishing the node's ResourceSlices: one pool per node and driver, kept in step with the
//! GPUs the caller sends, at a bounded rate, with a generation that never goes backwards.
//!
//! Why it is shaped so:
//! - **Content first, generation second.** Slices are computed by the pure
//!   [`tessera_kube_core::dra::resource_slices`]; the pool's generation is bumped only when what
//!   the slices say changes, so a snapshot that changes nothing writes nothing.
//! - **Never backwards.** The generation starts from the largest one the node's slices of this
//!   driver already carry (a restart continues it); identical slices already there are adopted
//!   as they are, without a write.
//! - **Bounded rate.** At most one write of the pool per `min_interval`; snapshots arriving
//!   meanwhile coalesce (the latest wins: a `watch` channel keeps only it).
//! - **Repaired.** The node's slices of this driver are watched; one deleted or changed by
//!   someone else (the kubelet wipes a driver's slices when it restarts) is written again.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::resource::v1::{ResourceSlice, ResourceSliceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use tessera_kube_core::dra::{self as core, DraError, DraGpu, DraPool, SliceShape};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::client::wake_on_changes;
use crate::error::{KubeError, status_code};

/// The longest wait between two tries of a failed write (or of reading `/version`).
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Who publishes, for which node, how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishSettings {
    /// `spec.driver`, e.g. `gpu.tessera.dev`.
    pub driver: String,
    /// This node (`NODE_NAME`); also the pool's name.
    pub node_name: String,
    /// The Node's `metadata.uid`: with it, every slice is owned by the Node and goes with it.
    pub node_uid: Option<String>,
    /// The shortest time between two writes of the pool (default 1 s).
    pub min_interval: Duration,
}

impl PublishSettings {
    /// `driver`'s pool on `node_name`, not owned by the Node, at most one write a second.
    pub fn new(driver: impl Into<String>, node_name: impl Into<String>) -> PublishSettings {
        PublishSettings {
            driver: driver.into(),
            node_name: node_name.into(),
            node_uid: None,
            min_interval: Duration::from_secs(1),
        }
    }

    /// The field selector of this driver's slices of this node (the API server indexes both).
    fn selector(&self) -> String {
        format!("spec.driver={},spec.nodeName={}", self.driver, self.node_name)
    }
}

/// The name of slice `k` of `driver`'s pool on `node`: `<node>-<driver, '.' as '-'>-<k>`.
pub fn slice_name(node: &str, driver: &str, k: usize) -> String {
    format!("{node}-{}-{k}", driver.replace('.', "-"))
}

/// Publishes the node's ResourceSlices until `shutdown` completes.
///
/// The slice shape follows the API server's version ([`super::slice_shape_of`]); an API server
/// older than 1.34 is logged once as an error and nothing is published. The receiver's current
/// value is published at start (create the channel with the first inventory), then every new
/// one, at most one write of the pool per `min_interval`. A snapshot whose slices break an API
/// limit ([`DraError`]) is logged and not published: the slices before it stay. A failed write
/// is tried again with a growing wait, each distinct error logged once.
///
/// **On shutdown the slices stay.** The plugin stopping is not the node or its GPUs going away:
/// a restarted publisher adopts them as they are (no write when nothing changed), and the
/// scheduler keeps its view meanwhile. Removing them is the kubelet's: it deletes a driver's
/// slices when the driver unregisters, and all of the node's when it starts (KEP-4381,
/// kubernetes#125163), which is why the publisher watches its slices and writes deleted ones
/// again (the problem of dra-driver-nvidia-gpu#330). With `node_uid` the Node owns them, so they
/// go with it.
pub async fn run_slice_publisher(
    client: Client,
    settings: PublishSettings,
    mut gpus: watch::Receiver<Arc<Vec<DraGpu>>>,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let shape = tokio::select! {
        shape = api_shape(&client) => shape,
        () = &mut shutdown => return,
    };
    let Some(shape) = shape else {
        shutdown.await;
        return;
    };
    let api: Api<ResourceSlice> = Api::all(client);
    let wake = Arc::new(Notify::new());
    let watch_task = tokio::spawn(wake_on_changes(api.clone(), Some(settings.selector()), wake.clone()));
    let min_interval = settings.min_interval;
    let mut publisher = Publisher::new(api, settings, shape);
    let mut next_write = Instant::now();
    let mut backoff = min_interval.max(Duration::from_millis(100));
    let mut last_error: Option<String> = None;
    let mut sender_gone = false;
    let mut dirty = true;
    loop {
        if dirty {
            tokio::select! {
                () = tokio::time::sleep_until(next_write) => {}
                () = &mut shutdown => break,
            }
            let started = Instant::now();
            let snapshot = gpus.borrow_and_update().clone();
            let result = tokio::select! {
                r = publisher.sync(&snapshot) => r,
                () = &mut shutdown => break,
            };
            match result {
                Ok(synced) => {
                    if last_error.take().is_some() {
                        tracing::info!("ResourceSlices of {}: writing works again", publisher.pool_name());
                    }
                    backoff = min_interval.max(Duration::from_millis(100));
                    dirty = false;
                    if synced.wrote() {
                        next_write = started + min_interval;
                    }
                    publisher.log(&synced);
                }
                Err(e) => {
                    let text = e.to_string();
                    if last_error.as_ref() != Some(&text) {
                        tracing::warn!("ResourceSlices of {}: {text}; trying again", publisher.pool_name());
                        last_error = Some(text);
                    }
                    publisher.in_sync = false;
                    next_write = Instant::now() + backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
            continue;
        }
        tokio::select! {
            changed = gpus.changed(), if !sender_gone => match changed {
                Ok(()) => dirty = true,
                Err(_) => sender_gone = true,
            },
            () = wake.notified() => {
                publisher.in_sync = false;
                dirty = true;
            }
            () = &mut shutdown => break,
        }
    }
    watch_task.abort();
}

/// The slice shape of the API server's version, asked until it answers; `None` (logged once as an
/// error) when it is too old or unreadable.
async fn api_shape(client: &Client) -> Option<SliceShape> {
    let mut backoff = Duration::from_millis(200);
    let mut last_error = None;
    loop {
        match client.apiserver_version().await {
            Ok(info) => {
                return match super::slice_shape_of(&info) {
                    Ok(shape) => Some(shape),
                    Err(e) => {
                        tracing::error!("not publishing ResourceSlices: {e}");
                        None
                    }
                };
            }
            Err(e) => {
                let text = format!("reading the API server's version: {e}");
                if last_error.as_ref() != Some(&text) {
                    tracing::warn!("{text}; trying again");
                    last_error = Some(text);
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// What one sync did.
#[derive(Debug)]
enum Synced {
    /// Nothing to do: the content is what was published, and nothing was seen to change.
    Unchanged,
    /// The slices on the server were checked and are as published.
    Checked,
    /// The snapshot breaks an API limit: nothing published for it.
    Invalid(DraError),
    /// The slices on the server already said what the new content says: taken as they are.
    Adopted { generation: i64 },
    /// Slices were written (created, replaced or deleted).
    Wrote { generation: i64, slices: usize, writes: usize },
}

impl Synced {
    fn wrote(&self) -> bool {
        matches!(self, Synced::Wrote { .. })
    }
}

/// The pool as published, and how to publish it.
struct Publisher {
    api: Api<ResourceSlice>,
    settings: PublishSettings,
    shape: SliceShape,
    /// The generation of the content below (or the largest seen on the server, before any).
    generation: Option<i64>,
    /// The slices last decided on, at generation 0 (so that only their content compares).
    content: Option<Vec<core::ResourceSlice>>,
    /// Whether the server is known to hold exactly `content` at `generation`.
    in_sync: bool,
    /// The last limit error logged, so that each is logged once.
    last_invalid: Option<String>,
}

impl Publisher {
    fn new(api: Api<ResourceSlice>, settings: PublishSettings, shape: SliceShape) -> Publisher {
        Publisher { api, settings, shape, generation: None, content: None, in_sync: false, last_invalid: None }
    }

    fn pool_name(&self) -> String {
        format!("driver {} on node {}", self.settings.driver, self.settings.node_name)
    }

    fn log(&mut self, synced: &Synced) {
        match synced {
            Synced::Unchanged | Synced::Checked => {}
            Synced::Invalid(e) => {
                let text = e.to_string();
                if self.last_invalid.as_ref() != Some(&text) {
                    tracing::error!(
                        "ResourceSlices of {}: not publishing this inventory: {text}; the slices before it stay",
                        self.pool_name()
                    );
                    self.last_invalid = Some(text);
                }
            }
            Synced::Adopted { generation } => tracing::info!(
                "ResourceSlices of {}: the slices there (pool generation {generation}) are current",
                self.pool_name()
            ),
            Synced::Wrote { generation, slices, writes } => {
                self.last_invalid = None;
                tracing::info!(
                    "ResourceSlices of {}: pool generation {generation}, {slices} slices ({writes} written or deleted)",
                    self.pool_name()
                );
            }
        }
    }

    /// The core's slices of `gpus` at `generation`.
    fn compute(&self, gpus: &[DraGpu], generation: i64) -> Result<Vec<core::ResourceSlice>, DraError> {
        let pool = DraPool {
            driver: self.settings.driver.clone(),
            node_name: self.settings.node_name.clone(),
            generation,
            shape: self.shape,
        };
        core::resource_slices(&pool, gpus)
    }

    /// The objects to hold on the server: `content` at `generation`, named, owned by the Node.
    fn objects(&self, content: &[core::ResourceSlice], generation: i64) -> Result<Vec<ResourceSlice>, KubeError> {
        let owner = self.settings.node_uid.as_ref().map(|uid| {
            vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: self.settings.node_name.clone(),
                uid: uid.clone(),
                controller: Some(true),
                block_owner_deletion: None,
            }]
        });
        content
            .iter()
            .enumerate()
            .map(|(k, slice)| {
                let name = slice_name(&self.settings.node_name, &self.settings.driver, k);
                let mut spec = slice.spec.clone();
                spec.pool.generation = generation;
                let spec: ResourceSliceSpec = serde_json::to_value(&spec)
                    .and_then(serde_json::from_value)
                    .map_err(|source| KubeError::Convert { what: format!("ResourceSlice {name}"), source })?;
                Ok(ResourceSlice {
                    metadata: ObjectMeta { name: Some(name), owner_references: owner.clone(), ..ObjectMeta::default() },
                    spec,
                })
            })
            .collect()
    }

    /// Brings the server's slices to `gpus`' (see the module's rules).
    async fn sync(&mut self, gpus: &[DraGpu]) -> Result<Synced, KubeError> {
        let content = match self.compute(gpus, 0) {
            Ok(c) => c,
            Err(e) => return Ok(Synced::Invalid(e)),
        };
        let same_content = self.content.as_ref() == Some(&content);
        if same_content && self.in_sync {
            return Ok(Synced::Unchanged);
        }
        let lp = ListParams::default().fields(&self.settings.selector());
        let existing = self
            .api
            .list(&lp)
            .await
            .map_err(KubeError::api(format!("listing the ResourceSlices of {}", self.pool_name())))?
            .items;
        let on_server = existing.iter().map(|s| s.spec.pool.generation).max();
        let mut generation = self.generation.into_iter().chain(on_server).max().unwrap_or(0);
        if !same_content {
            // New content: a new generation, unless the server holds exactly it already.
            let here = self.objects(&content, generation)?;
            let already_there = !existing.is_empty() && same_objects(&existing, &here);
            if !already_there {
                generation += 1;
            }
            self.content = Some(content.clone());
        }
        self.generation = Some(generation);
        let desired = self.objects(&content, generation)?;
        let writes = self.write(&existing, &desired).await?;
        self.in_sync = true;
        Ok(if writes == 0 && same_content {
            Synced::Checked
        } else if writes == 0 {
            Synced::Adopted { generation }
        } else {
            Synced::Wrote { generation, slices: desired.len(), writes }
        })
    }

    /// Creates or replaces every desired slice that differs, then deletes the rest; how many
    /// requests wrote.
    async fn write(&self, existing: &[ResourceSlice], desired: &[ResourceSlice]) -> Result<usize, KubeError> {
        let mut writes = 0;
        for want in desired {
            let name = want.metadata.name.clone().unwrap_or_default();
            let what = format!("writing ResourceSlice {name}");
            match existing.iter().find(|s| s.metadata.name.as_deref() == Some(name.as_str())) {
                Some(have) if same_object(have, want) => {}
                Some(have) => {
                    let mut replacement = want.clone();
                    replacement.metadata.resource_version = have.metadata.resource_version.clone();
                    self.api
                        .replace(&name, &PostParams::default(), &replacement)
                        .await
                        .map_err(KubeError::api(what))?;
                    writes += 1;
                }
                None => {
                    self.api.create(&PostParams::default(), want).await.map_err(KubeError::api(what))?;
                    writes += 1;
                }
            }
        }
        for surplus in existing.iter().filter(|s| !desired.iter().any(|d| d.metadata.name == s.metadata.name)) {
            let name = surplus.metadata.name.clone().unwrap_or_default();
            match self.api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => writes += 1,
                Err(e) if status_code(&e) == Some(404) => {}
                Err(e) => return Err(KubeError::api(format!("deleting ResourceSlice {name}"))(e)),
            }
        }
        Ok(writes)
    }
}

/// Whether a slice on the server says what `want` says (its spec and ownership).
fn same_object(have: &ResourceSlice, want: &ResourceSlice) -> bool {
    have.spec == want.spec && have.metadata.owner_references == want.metadata.owner_references
}

/// Whether the server's slices are exactly the desired ones, by name.
fn same_objects(existing: &[ResourceSlice], desired: &[ResourceSlice]) -> bool {
    existing.len() == desired.len()
        && desired.iter().all(|d| existing.iter().any(|e| e.metadata.name == d.metadata.name && same_object(e, d)))
}
