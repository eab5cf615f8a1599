//! The node agent's Kubernetes side: the `nvidia.com/mig.config` label workflow in the GPU
//! operator's convention, the controller's desired layouts, and the node's published report.
//!
//! The agent watches its own node and the pods bound to it. When the label names a config of the
//! mig-parted file (the ConfigMap), it sets `nvidia.com/mig.config.state=pending`, asks the
//! [`LayoutApplier`] to apply it, then sets `success`, or `failed` with the reason in
//! `tessera.dev/mig.config.reason`. A busy instance in the way is named with the pod holding it,
//! and the change is tried again when that pod ends. The applier (the daemon's engine on a real
//! node) never touches an instance a running pod holds. The agent also applies the controller's
//! `tessera.dev/desired-layout` and publishes `tessera.dev/node-report` whenever it changes.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde::Serialize;
use tessera_kube_core::PodRef;
use tessera_migparted::MigConfigFile;
use tokio::sync::Notify;

use crate::annotations::{
    ApplyState, DESIRED_LAYOUT, DesiredLayout, DesiredStatus, FORMAT_VERSION, MIG_CONFIG, MIG_CONFIG_REASON,
    MIG_CONFIG_STATE, NODE_REPORT, NodeReport, ReportedGpu, read_annotation, write_annotation,
};
use crate::client::wake_on_changes;
use crate::error::KubeError;

/// What applying a layout did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    pub created: usize,
    pub destroyed: usize,
}

/// Why a layout was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// A busy instance is in the way: the change waits for the pod holding it.
    #[error("GPU {gpu}: instance {instance} is in use{}", holder_text(.holder))]
    Blocked { gpu: u32, instance: String, holder: Option<PodRef> },
    /// Anything else (the config does not fit the node, the driver refused); the text says why.
    #[error("{0}")]
    Failed(String),
}

fn holder_text(holder: &Option<PodRef>) -> String {
    holder.as_ref().map(|p| format!(" by pod {p}")).unwrap_or_default()
}

/// What the node agent needs from the node: implemented by the daemon's engine on a real node,
/// and by simulated nodes in tests. Applying never destroys or moves an instance a running pod
/// holds; it answers [`ApplyError::Blocked`] instead.
pub trait LayoutApplier: Send + Sync + 'static {
    /// The node's GPUs, their layouts and the pods holding their instances.
    fn report(&self) -> impl Future<Output = Result<Vec<ReportedGpu>, ApplyError>> + Send;
    /// Reach the named config of the mig-parted file (the caller has checked it has the name).
    fn apply_config(
        &self,
        file: &MigConfigFile,
        name: &str,
    ) -> impl Future<Output = Result<Applied, ApplyError>> + Send;
    /// Reach the controller's layout for the GPUs it names.
    fn apply_layout(&self, desired: &DesiredLayout) -> impl Future<Output = Result<Applied, ApplyError>> + Send;
}

/// Where the agent finds its node and its config.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// This node (`NODE_NAME`, from the downward API).
    pub node_name: String,
    /// The namespace of the mig-parted ConfigMap (`POD_NAMESPACE`).
    pub namespace: String,
    /// The ConfigMap holding the mig-parted config file.
    pub config_map: String,
    /// Its key.
    pub config_key: String,
    /// How often the agent looks again without being woken by a change (a blocked change whose
    /// holder is unknown is tried again then; the report is refreshed).
    pub resync: Duration,
}

impl AgentSettings {
    /// The deployment's defaults (`deploy/kubernetes/20-mig-parted-config.yaml`).
    pub fn new(node_name: impl Into<String>, namespace: impl Into<String>) -> AgentSettings {
        AgentSettings {
            node_name: node_name.into(),
            namespace: namespace.into(),
            config_map: "tessera-mig-parted-config".into(),
            config_key: "config.yaml".into(),
            resync: Duration::from_secs(30),
        }
    }

    /// The settings from the environment the DaemonSet passes (`NODE_NAME`, `POD_NAMESPACE`,
    /// from the downward API); `var` reads one variable.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<AgentSettings, KubeError> {
        Ok(AgentSettings::new(required(&var, "NODE_NAME")?, required(&var, "POD_NAMESPACE")?))
    }
}

/// A variable the manifests set from the downward API, or an error naming it.
pub(crate) fn required(var: &impl Fn(&str) -> Option<String>, name: &str) -> Result<String, KubeError> {
    var(name).filter(|v| !v.trim().is_empty()).ok_or_else(|| {
        KubeError::Setting(format!(
            "environment variable {name} is not set: the manifests in deploy/kubernetes/ set it from the downward API"
        ))
    })
}

/// A merge patch of a node's labels and annotations; `None` removes the key.
#[derive(Debug, Serialize)]
struct MetaPatch {
    metadata: PatchedMeta,
}

#[derive(Debug, Default, Serialize)]
struct PatchedMeta {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<&'static str, Option<String>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<&'static str, Option<String>>,
}

/// The last attempt at the label's config.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelAttempt {
    Done,
    /// Blocked by this pod (or an unknown holder): tried again when it ends (or at the resync).
    Blocked(Option<PodRef>),
    /// Failed for a reason only a new label or config fixes.
    Failed,
}

/// The agent's memory between passes.
#[derive(Debug, Default)]
struct AgentState {
    /// The label value last attempted, and how it went.
    label: Option<(String, LabelAttempt)>,
    /// The last desired layout handled.
    desired: Option<DesiredStatus>,
}

struct Agent<A> {
    nodes: Api<Node>,
    pods: Api<Pod>,
    config_maps: Api<ConfigMap>,
    settings: AgentSettings,
    applier: Arc<A>,
    state: AgentState,
}

/// Runs the node agent's Kubernetes side until `shutdown` completes. Errors talking to the API
/// are logged and retried; the loop ends only with `shutdown`.
pub async fn run_node_agent<A: LayoutApplier>(
    client: Client,
    settings: AgentSettings,
    applier: Arc<A>,
    shutdown: impl Future<Output = ()>,
) {
    let wake = Arc::new(Notify::new());
    let node_selector = format!("metadata.name={}", settings.node_name);
    let pod_selector = format!("spec.nodeName={}", settings.node_name);
    let watches = [
        tokio::spawn(wake_on_changes(Api::<Node>::all(client.clone()), Some(node_selector), wake.clone())),
        tokio::spawn(wake_on_changes(Api::<Pod>::all(client.clone()), Some(pod_selector), wake.clone())),
    ];
    let mut agent = Agent {
        nodes: Api::all(client.clone()),
        pods: Api::all(client.clone()),
        config_maps: Api::namespaced(client, &settings.namespace),
        settings,
        applier,
        state: AgentState::default(),
    };
    let mut shutdown = std::pin::pin!(shutdown);
    let mut ticks = tokio::time::interval(agent.settings.resync);
    ticks.tick().await;
    let mut resync = false;
    loop {
        if let Err(e) = agent.pass(resync).await {
            tracing::warn!("node agent: {e}");
        }
        tokio::select! {
            () = wake.notified() => resync = false,
            _ = ticks.tick() => resync = true,
            () = &mut shutdown => break,
        }
    }
    for w in watches {
        w.abort();
    }
}

impl<A: LayoutApplier> Agent<A> {
    async fn pass(&mut self, resync: bool) -> Result<(), KubeError> {
        let name = self.settings.node_name.clone();
        let node = self.nodes.get(&name).await.map_err(KubeError::api(format!("reading node {name}")))?;
        let labels = node.metadata.labels.clone().unwrap_or_default();
        let annotations = node.metadata.annotations.clone().unwrap_or_default();

        match labels.get(MIG_CONFIG) {
            Some(config) => self.label_pass(config, resync).await?,
            None => self.state.label = None,
        }
        self.desired_pass(&annotations).await;
        self.publish(&annotations).await
    }

    /// Applies the label's config when it is new, or when what blocked it has ended.
    async fn label_pass(&mut self, config: &str, resync: bool) -> Result<(), KubeError> {
        let retry = match &self.state.label {
            Some((last, attempt)) if last == config => match attempt {
                LabelAttempt::Done | LabelAttempt::Failed => return Ok(()),
                LabelAttempt::Blocked(None) => resync,
                LabelAttempt::Blocked(Some(pod)) => !self.pod_running(pod).await?,
            },
            _ => true,
        };
        if !retry {
            return Ok(());
        }
        let name = self.settings.node_name.clone();
        self.set_state(ApplyState::Pending, None).await?;
        let attempt = match self.load_config(config).await? {
            Err(reason) => Err(ApplyError::Failed(reason)),
            Ok(file) => self.applier.apply_config(&file, config).await,
        };
        let (state, reason, outcome) = match attempt {
            Ok(applied) => {
                tracing::info!(
                    "node {name}: {MIG_CONFIG}={config} applied ({} created, {} destroyed)",
                    applied.created,
                    applied.destroyed
                );
                (ApplyState::Success, None, LabelAttempt::Done)
            }
            Err(e) => {
                let outcome = match &e {
                    ApplyError::Blocked { holder, .. } => LabelAttempt::Blocked(holder.clone()),
                    ApplyError::Failed(_) => LabelAttempt::Failed,
                };
                let retry = match &outcome {
                    LabelAttempt::Blocked(Some(_)) => "; tried again when that pod ends",
                    LabelAttempt::Blocked(None) => "; tried again at the next resync",
                    _ => "",
                };
                (ApplyState::Failed, Some(format!("{MIG_CONFIG}={config}: {e}{retry}")), outcome)
            }
        };
        if let Some(r) = &reason {
            tracing::warn!("node {name}: {r}");
        }
        self.set_state(state, reason).await?;
        self.state.label = Some((config.to_string(), outcome));
        Ok(())
    }

    /// The mig-parted file from the ConfigMap, or why it cannot be used for `config`.
    async fn load_config(&self, config: &str) -> Result<Result<MigConfigFile, String>, KubeError> {
        let s = &self.settings;
        let what = format!("ConfigMap {}/{}", s.namespace, s.config_map);
        let Some(cm) =
            self.config_maps.get_opt(&s.config_map).await.map_err(KubeError::api(format!("reading {what}")))?
        else {
            return Ok(Err(format!("{what} does not exist")));
        };
        let Some(text) = cm.data.as_ref().and_then(|d| d.get(&s.config_key)) else {
            return Ok(Err(format!("{what} has no key {}", s.config_key)));
        };
        let file = match tessera_migparted::parse(text, &format!("{what}, key {}", s.config_key)) {
            Ok(f) => f,
            Err(e) => return Ok(Err(e.to_string())),
        };
        if !file.configs.contains_key(config) {
            let known: Vec<&str> = file.configs.keys().map(String::as_str).collect();
            return Ok(Err(format!(
                "{what}, key {}: no config named '{config}' (it has: {})",
                s.config_key,
                known.join(", ")
            )));
        }
        Ok(Ok(file))
    }

    /// True while `pod` is bound to this node and has not ended.
    async fn pod_running(&self, pod: &PodRef) -> Result<bool, KubeError> {
        let lp = ListParams::default().fields(&format!("spec.nodeName={}", self.settings.node_name));
        let pods = self.pods.list(&lp).await.map_err(KubeError::api("listing the pods of this node"))?;
        Ok(pods.items.iter().any(|p| {
            let ended = matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"));
            p.metadata.namespace.as_deref() == Some(pod.namespace.as_str())
                && p.metadata.name.as_deref() == Some(pod.name.as_str())
                && (pod.uid.is_empty() || p.metadata.uid.as_deref() == Some(pod.uid.as_str()))
                && p.metadata.deletion_timestamp.is_none()
                && !ended
        }))
    }

    /// Applies the controller's desired layout when it is new.
    async fn desired_pass(&mut self, annotations: &BTreeMap<String, String>) {
        let node = &self.settings.node_name;
        let desired: DesiredLayout = match read_annotation(node, Some(annotations), DESIRED_LAYOUT) {
            Ok(Some(d)) => d,
            Ok(None) => return,
            Err(e) => {
                // Without an id the failure cannot be tied to a decision: log it, and let the
                // controller see the desired layout still unapplied.
                tracing::warn!("{e}");
                return;
            }
        };
        if self.state.desired.as_ref().is_some_and(|d| d.id == desired.id) {
            return;
        }
        let status = match self.applier.apply_layout(&desired).await {
            Ok(applied) => {
                tracing::info!(
                    "node {node}: desired layout {} applied ({} created, {} destroyed)",
                    desired.id,
                    applied.created,
                    applied.destroyed
                );
                DesiredStatus { id: desired.id.clone(), state: ApplyState::Success, reason: None }
            }
            Err(e) => {
                tracing::warn!("node {node}: desired layout {}: {e}", desired.id);
                DesiredStatus { id: desired.id.clone(), state: ApplyState::Failed, reason: Some(e.to_string()) }
            }
        };
        self.state.desired = Some(status);
    }

    /// Publishes the report when it differs from the node's.
    async fn publish(&self, annotations: &BTreeMap<String, String>) -> Result<(), KubeError> {
        let gpus = match self.applier.report().await {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!("node {}: reading the node's layout: {e}", self.settings.node_name);
                return Ok(());
            }
        };
        let report = NodeReport { version: FORMAT_VERSION, gpus, desired: self.state.desired.clone() };
        let text = write_annotation(&report);
        if annotations.get(NODE_REPORT) == Some(&text) {
            return Ok(());
        }
        let mut meta = PatchedMeta::default();
        meta.annotations.insert(NODE_REPORT, Some(text));
        self.patch(meta).await
    }

    async fn set_state(&self, state: ApplyState, reason: Option<String>) -> Result<(), KubeError> {
        let mut meta = PatchedMeta::default();
        meta.labels.insert(MIG_CONFIG_STATE, Some(state.as_str().to_string()));
        meta.annotations.insert(MIG_CONFIG_REASON, reason);
        self.patch(meta).await
    }

    async fn patch(&self, metadata: PatchedMeta) -> Result<(), KubeError> {
        let name = &self.settings.node_name;
        let patch = MetaPatch { metadata };
        self.nodes
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(drop)
            .map_err(KubeError::api(format!("patching node {name}")))
    }
}
