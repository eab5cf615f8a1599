//! The controller: pods pending for lack of `nvidia.com/gpu` or `nvidia.com/mig-*` repartition
//! GPUs.
//!
//! One replica leads ([`crate::lease`]). The leader watches pending pods and nodes; after a change
//! it waits a short batch window, reads the pods the scheduler marked unschedulable
//! (`PodScheduled=False`, reason `Unschedulable`) that request those resources, and every node's
//! `tessera.dev/node-report`, and calls the pure [`tessera_kube_core::decide`]. It writes each
//! changed node's `tessera.dev/desired-layout` for its node agent and records Events for what it
//! decided. While a node has not yet handled the desired layout last written to it, no new
//! decision is made: the next one sees the devices it made. A node carrying
//! `nvidia.com/mig.config` is changed only when its config is one of
//! [`ControllerSettings::on_demand_configs`].

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde::Serialize;
use tessera_kube_core::{Decision, MigConfigLabel, NodeLayoutChange, NodeState, PendingPod, Policy, decide};
use tokio::sync::Notify;

use crate::annotations::{
    DESIRED_LAYOUT, DesiredLayout, MIG_CONFIG, NODE_REPORT, NodeReport, instance_label, read_annotation,
    write_annotation,
};
use crate::client::wake_on_changes;
use crate::error::KubeError;
use crate::lease::{LeaderElector, LeaseSettings};
use crate::node_agent::required;

/// The variable listing the configs whose nodes may be repartitioned on demand.
pub const ON_DEMAND_CONFIGS: &str = "TESSERA_ON_DEMAND_CONFIGS";

/// The name of the controller in Events (`reportingController`).
pub const REPORTING_CONTROLLER: &str = "tessera.dev/controller";

/// The controller's settings.
#[derive(Debug, Clone)]
pub struct ControllerSettings {
    pub lease: LeaseSettings,
    /// How often the Lease is renewed (or tried for).
    pub renew_every: Duration,
    /// How long pods are gathered after a change before deciding.
    pub batch_window: Duration,
    /// How often the leader decides without being woken by a change.
    pub resync: Duration,
    /// mig-parted configs whose nodes may be repartitioned on demand; a node labelled with any
    /// other config is left as its label says.
    pub on_demand_configs: BTreeSet<String>,
    pub policy: Policy,
}

impl ControllerSettings {
    /// The deployment's defaults: Lease `tessera-controller` in `namespace`, 15 s, renewed every
    /// 5 s (client-go's defaults), a 500 ms batch window (pods created together, as a Job's or a
    /// Deployment's are, arrive within it).
    pub fn new(namespace: impl Into<String>, identity: impl Into<String>) -> ControllerSettings {
        ControllerSettings {
            lease: LeaseSettings {
                namespace: namespace.into(),
                name: "tessera-controller".into(),
                identity: identity.into(),
                duration: Duration::from_secs(15),
            },
            renew_every: Duration::from_secs(5),
            batch_window: Duration::from_millis(500),
            resync: Duration::from_secs(30),
            on_demand_configs: BTreeSet::new(),
            policy: Policy::default(),
        }
    }

    /// The settings from the environment the Deployment passes: `POD_NAMESPACE` (the Lease's),
    /// `POD_NAME` (this replica's identity); `var` reads one variable.
    /// `TESSERA_ON_DEMAND_CONFIGS` (optional): the mig-parted configs, comma-separated, whose
    /// labelled nodes may be repartitioned on demand.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<ControllerSettings, KubeError> {
        let mut s = ControllerSettings::new(required(&var, "POD_NAMESPACE")?, required(&var, "POD_NAME")?);
        s.on_demand_configs = var(ON_DEMAND_CONFIGS)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
        Ok(s)
    }
}

/// The pod as [`decide`] sees it, when the scheduler could not place it and it requests
/// `nvidia.com/gpu` or `nvidia.com/mig-*` devices. Each container's requests (or, without them,
/// its limits, which Kubernetes copies into requests for extended resources) are added up.
pub fn pending_pod(pod: &Pod) -> Option<PendingPod> {
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Pending") || pod.spec.as_ref()?.node_name.is_some() {
        return None;
    }
    let unschedulable = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "PodScheduled" && c.status == "False" && c.reason.as_deref() == Some("Unschedulable"));
    if !unschedulable {
        return None;
    }
    let mut requests: BTreeMap<String, u32> = BTreeMap::new();
    for c in &pod.spec.as_ref()?.containers {
        let Some(res) = &c.resources else { continue };
        let amounts = res.requests.as_ref().filter(|r| !r.is_empty()).or(res.limits.as_ref());
        for (name, q) in amounts.into_iter().flatten() {
            if name == "nvidia.com/gpu" || name.starts_with("nvidia.com/mig-") {
                // Extended resources are whole numbers (the API server refuses anything else).
                let n: u32 = q.0.trim().parse().ok()?;
                *requests.entry(name.clone()).or_default() += n;
            }
        }
    }
    if requests.is_empty() {
        return None;
    }
    Some(PendingPod {
        namespace: pod.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
        name: pod.metadata.name.clone()?,
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        created_ms: pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| u64::try_from(t.0.as_millisecond()).unwrap_or(0))
            .unwrap_or(0),
        requests,
    })
}

#[derive(Debug, Serialize)]
struct AnnotationPatch {
    metadata: PatchedAnnotations,
}

#[derive(Debug, Serialize)]
struct PatchedAnnotations {
    annotations: BTreeMap<&'static str, String>,
}

struct Controller {
    client: Client,
    nodes: Api<Node>,
    pods: Api<Pod>,
    settings: ControllerSettings,
    /// Event notes already recorded, by object uid, so a pod waiting for several rounds gets one
    /// Event per distinct note.
    noted: BTreeMap<String, String>,
    sequence: u64,
}

/// Runs the controller until `shutdown` completes, then gives the Lease up. Errors talking to
/// the API are logged and retried.
pub async fn run_controller(client: Client, settings: ControllerSettings, shutdown: impl Future<Output = ()>) {
    let wake = Arc::new(Notify::new());
    let watches = [
        tokio::spawn(wake_on_changes(
            Api::<Pod>::all(client.clone()),
            Some("status.phase=Pending".into()),
            wake.clone(),
        )),
        tokio::spawn(wake_on_changes(Api::<Node>::all(client.clone()), None, wake.clone())),
    ];
    let mut elector = LeaderElector::new(client.clone(), settings.lease.clone());
    let mut renew = tokio::time::interval(settings.renew_every);
    let mut resync = tokio::time::interval(settings.resync);
    let mut controller = Controller {
        nodes: Api::all(client.clone()),
        pods: Api::all(client.clone()),
        client,
        settings,
        noted: BTreeMap::new(),
        sequence: 0,
    };
    let me = controller.settings.lease.identity.clone();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut dirty = false;
    let mut was_leading = false;
    loop {
        tokio::select! {
            _ = renew.tick() => {
                if let Err(e) = elector.try_lead().await {
                    tracing::warn!("leader election: {e}");
                }
            }
            () = wake.notified() => dirty = true,
            _ = resync.tick() => dirty = true,
            () = &mut shutdown => break,
        }
        let leading = elector.leading();
        if leading != was_leading {
            tracing::info!("{me} {} the leader", if leading { "is now" } else { "is no longer" });
            was_leading = leading;
            dirty |= leading;
        }
        if leading && dirty {
            dirty = false;
            tokio::time::sleep(controller.settings.batch_window).await;
            if let Err(e) = controller.round().await {
                tracing::warn!("controller: {e}");
            }
        }
    }
    for w in watches {
        w.abort();
    }
    if let Err(e) = elector.release().await {
        tracing::warn!("giving the Lease up: {e}");
    }
}

impl Controller {
    /// One decision over the pending pods and the nodes as they are now.
    async fn round(&mut self) -> Result<(), KubeError> {
        let pods = self
            .pods
            .list(&ListParams::default().fields("status.phase=Pending"))
            .await
            .map_err(KubeError::api("listing pending pods"))?;
        let pending: Vec<PendingPod> = pods.items.iter().filter_map(pending_pod).collect();
        if pending.is_empty() {
            return Ok(());
        }
        let nodes = self.nodes.list(&ListParams::default()).await.map_err(KubeError::api("listing nodes"))?;
        let mut states: Vec<NodeState> = Vec::new();
        // Pods a change still in flight is making devices for: decided already.
        let mut awaited: BTreeSet<String> = BTreeSet::new();
        for node in &nodes.items {
            let Some(name) = node.metadata.name.as_deref() else { continue };
            let annotations = node.metadata.annotations.as_ref();
            let report: NodeReport = match read_annotation(name, annotations, NODE_REPORT) {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!("{e}; the node is left out");
                    continue;
                }
            };
            match read_annotation::<DesiredLayout>(name, annotations, DESIRED_LAYOUT) {
                Ok(Some(d)) if report.desired.as_ref().is_none_or(|s| s.id != d.id) => {
                    // Its agent has not handled the last desired layout yet: the node is left
                    // out, and so are the pods that change is for.
                    tracing::debug!("node {name} has not applied desired layout {} yet", d.id);
                    awaited.extend(d.for_pods);
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("{e}; it is written anew when the node is changed"),
            }
            let label = node.metadata.labels.as_ref().and_then(|l| l.get(MIG_CONFIG)).map(|config| MigConfigLabel {
                name: config.clone(),
                allows_on_demand: self.settings.on_demand_configs.contains(config),
            });
            states.push(report.node_state(name, label));
        }
        let pending: Vec<PendingPod> =
            pending.into_iter().filter(|p| !awaited.contains(&format!("{}/{}", p.namespace, p.name))).collect();
        if pending.is_empty() {
            return Ok(());
        }
        let now_ms = u64::try_from(Timestamp::now().as_millisecond()).unwrap_or(0);
        let decision = decide(&pending, &states, &self.settings.policy, now_ms);
        let uids: BTreeMap<&str, &str> = nodes
            .items
            .iter()
            .filter_map(|n| Some((n.metadata.name.as_deref()?, n.metadata.uid.as_deref()?)))
            .collect();
        self.write(&decision, &uids, now_ms).await?;
        self.record(&decision, &pods.items).await;
        // Forget the notes of pods no longer pending and of nodes gone.
        let live: BTreeSet<&str> =
            pods.items.iter().filter_map(|p| p.metadata.uid.as_deref()).chain(uids.values().copied()).collect();
        self.noted.retain(|k, _| live.contains(k.as_str()));
        Ok(())
    }

    /// Writes each changed node's desired layout.
    async fn write(&mut self, decision: &Decision, uids: &BTreeMap<&str, &str>, now_ms: u64) -> Result<(), KubeError> {
        let mut by_node: BTreeMap<&str, Vec<&NodeLayoutChange>> = BTreeMap::new();
        for c in &decision.changes {
            by_node.entry(c.node.as_str()).or_default().push(c);
        }
        for (node, changes) in by_node {
            self.sequence += 1;
            let id = format!("{}-{now_ms}-{}", self.settings.lease.identity, self.sequence);
            let desired = DesiredLayout::from_changes(id, &changes);
            let patch = AnnotationPatch {
                metadata: PatchedAnnotations {
                    annotations: BTreeMap::from([(DESIRED_LAYOUT, write_annotation(&desired))]),
                },
            };
            self.nodes
                .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(KubeError::api(format!("writing the desired layout of node {node}")))?;
            let note = changes.iter().map(|c| change_text(c)).collect::<Vec<_>>().join("; ");
            tracing::info!("node {node}: {note}");
            let regarding = ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(node.to_string()),
                uid: uids.get(node).map(|u| u.to_string()),
                ..ObjectReference::default()
            };
            self.event("default", regarding, "Normal", "Repartition", "Repartition", note).await;
        }
        Ok(())
    }

    /// Events on the pods: which node makes their devices, or why nothing can be done.
    async fn record(&mut self, decision: &Decision, pods: &[Pod]) {
        let reference = |uid: &str| {
            pods.iter().find(|p| p.metadata.uid.as_deref() == Some(uid)).map(|p| ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                namespace: p.metadata.namespace.clone(),
                name: p.metadata.name.clone(),
                uid: p.metadata.uid.clone(),
                ..ObjectReference::default()
            })
        };
        for p in decision.placed.iter().filter(|p| p.needs_change()) {
            let Some(r) = reference(&p.pod.uid) else { continue };
            let made: Vec<String> =
                p.devices.iter().filter(|d| d.created).map(|d| format!("{} on GPU {}", d.resource, d.gpu)).collect();
            let note = format!("node {} is being repartitioned for this pod: {}", p.node, made.join(", "));
            self.event(&p.pod.namespace, r, "Normal", "Repartitioning", "Repartition", note).await;
        }
        for u in &decision.unplaceable {
            let Some(r) = reference(&u.pod.uid) else { continue };
            let note = format!("no GPU can be repartitioned for this pod: {}", u.reason);
            self.event(&u.pod.namespace, r, "Warning", "NotRepartitioned", "Repartition", note).await;
        }
    }

    /// Records an Event (`events.k8s.io/v1`), once per object and note; a failure is logged.
    async fn event(
        &mut self,
        namespace: &str,
        regarding: ObjectReference,
        type_: &str,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let key = regarding.uid.clone().or_else(|| regarding.name.clone()).unwrap_or_default();
        if self.noted.get(&key) == Some(&note) {
            return;
        }
        let now = Timestamp::now();
        let name = format!(
            "{}.{:x}",
            regarding.name.as_deref().unwrap_or("object"),
            u64::try_from(now.as_nanosecond()).unwrap_or(0)
        );
        let event = Event {
            metadata: ObjectMeta { name: Some(name), namespace: Some(namespace.to_string()), ..ObjectMeta::default() },
            event_time: Some(MicroTime(now)),
            reporting_controller: Some(REPORTING_CONTROLLER.into()),
            reporting_instance: Some(self.settings.lease.identity.clone()),
            action: Some(action.into()),
            reason: Some(reason.into()),
            type_: Some(type_.into()),
            // The API server refuses notes longer than 1 kB.
            note: Some(truncate(&note, 1024)),
            regarding: Some(regarding),
            ..Event::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => {
                self.noted.insert(key, note);
            }
            Err(e) => tracing::warn!("recording an Event in namespace {namespace}: {e}"),
        }
    }
}

/// `GPU 0 (A100-SXM4-40GB): create 1g.5gb at 6; destroy 2g.10gb at 4; for pods ns/a`.
fn change_text(c: &NodeLayoutChange) -> String {
    let list =
        |v: &[tessera_mig::Instance]| v.iter().map(|i| instance_label(&c.model, i)).collect::<Vec<_>>().join(", ");
    let mut parts = Vec::new();
    if c.disable_mig {
        parts.push("turn MIG off".to_string());
    }
    if !c.destroys.is_empty() {
        parts.push(format!("destroy {}", list(&c.destroys)));
    }
    if !c.creates.is_empty() {
        parts.push(format!("create {}", list(&c.creates)));
    }
    let pods = c.for_pods.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    format!("GPU {} ({}): {} for pods {pods}", c.gpu, c.model, parts.join("; "))
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max - 3;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Pod;

    use super::pending_pod;

    /// A pod from its JSON, as the API server sends it.
    fn pod(phase: &str, node: Option<&str>, condition: (&str, &str), resources: &str) -> Pod {
        let node = node.map_or(String::new(), |n| format!(r#""nodeName": "{n}","#));
        let text = format!(
            r#"{{"metadata": {{"name": "p", "namespace": "ml", "uid": "u1", "creationTimestamp": "2026-01-01T00:00:01Z"}},
               "spec": {{{node} "containers": [{{"name": "a", "resources": {resources}}}, {{"name": "b"}}]}},
               "status": {{"phase": "{phase}", "conditions": [{{"type": "PodScheduled", "status": "{}", "reason": "{}"}}]}}}}"#,
            condition.0, condition.1
        );
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn settings_come_from_the_downward_api_variables_and_a_missing_one_is_named() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        let s = super::ControllerSettings::from_env(env(&[("POD_NAMESPACE", "tessera-system"), ("POD_NAME", "c-1")]))
            .unwrap();
        assert_eq!((s.lease.namespace.as_str(), s.lease.identity.as_str()), ("tessera-system", "c-1"));
        let e = super::ControllerSettings::from_env(env(&[("POD_NAMESPACE", "tessera-system"), ("POD_NAME", " ")]))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "environment variable POD_NAME is not set: the manifests in deploy/kubernetes/ set it from the downward API"
        );
        let a = crate::AgentSettings::from_env(env(&[("NODE_NAME", "gpu-1"), ("POD_NAMESPACE", "t")])).unwrap();
        assert_eq!((a.node_name.as_str(), a.namespace.as_str()), ("gpu-1", "t"));
        assert!(
            crate::AgentSettings::from_env(env(&[("POD_NAMESPACE", "t")]))
                .unwrap_err()
                .to_string()
                .contains("NODE_NAME")
        );
    }

    #[test]
    fn which_pods_are_pending_for_gpu_devices_and_what_they_request() {
        let unsched = ("False", "Unschedulable");
        let mig = r#"{"requests": {"nvidia.com/mig-1g.10gb": "2", "cpu": "1"}}"#;
        type Case<'a> = (&'a str, Pod, Option<&'a [(&'a str, u32)]>);
        let cases: [Case; 7] = [
            ("unschedulable, MIG request", pod("Pending", None, unsched, mig), Some(&[("nvidia.com/mig-1g.10gb", 2)])),
            (
                "limits only (requests copied from them)",
                pod("Pending", None, unsched, r#"{"limits": {"nvidia.com/gpu": "1"}}"#),
                Some(&[("nvidia.com/gpu", 1)]),
            ),
            ("no GPU request", pod("Pending", None, unsched, r#"{"requests": {"cpu": "1"}}"#), None),
            ("not yet tried by the scheduler", pod("Pending", None, ("False", "SchedulingGated"), mig), None),
            ("scheduled", pod("Pending", Some("n1"), ("True", ""), mig), None),
            ("running", pod("Running", Some("n1"), ("True", ""), mig), None),
            (
                "other vendors' resources ignored",
                pod("Pending", None, unsched, r#"{"requests": {"amd.com/gpu": "1"}}"#),
                None,
            ),
        ];
        for (what, p, want) in cases {
            let got = pending_pod(&p);
            let want = want.map(|w| w.iter().map(|(r, n)| (r.to_string(), *n)).collect::<Vec<_>>());
            assert_eq!(got.as_ref().map(|g| g.requests.clone().into_iter().collect::<Vec<_>>()), want, "{what}");
            if let Some(g) = got {
                assert_eq!(
                    (g.namespace.as_str(), g.name.as_str(), g.uid.as_str(), g.created_ms),
                    ("ml", "p", "u1", 1_767_225_601_000)
                );
            }
        }
    }
}
