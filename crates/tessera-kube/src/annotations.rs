//! The node labels and annotations Tessera reads and writes, and the typed, versioned JSON values
//! of its own annotations: one place for every key.
//!
//! - [`NodeReport`] (`tessera.dev/node-report`): the node agent publishes its GPUs, their layouts
//!   and which pod holds each instance; the controller reads it into a
//!   [`tessera_kube_core::NodeState`].
//! - [`DesiredLayout`] (`tessera.dev/desired-layout`): the controller's layout for the node; the
//!   node agent applies it and says how it went in the report's [`DesiredStatus`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tessera_kube_core::{GpuMode, MigConfigLabel, NodeGpu, NodeLayoutChange, NodeState, PodRef};
use tessera_mig::{CurrentInstance, Instance, catalog};

/// The GPU operator's label naming the node's mig-parted config.
pub const MIG_CONFIG: &str = "nvidia.com/mig.config";
/// The GPU operator's label with the config's state: `pending`, `success` or `failed`.
pub const MIG_CONFIG_STATE: &str = "nvidia.com/mig.config.state";
/// Why the state is `pending` or `failed` (Tessera's; the GPU operator has no such annotation).
pub const MIG_CONFIG_REASON: &str = "tessera.dev/mig.config.reason";
/// The node agent's [`NodeReport`].
pub const NODE_REPORT: &str = "tessera.dev/node-report";
/// The controller's [`DesiredLayout`].
pub const DESIRED_LAYOUT: &str = "tessera.dev/desired-layout";

/// The version of [`NodeReport`] and [`DesiredLayout`] this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// Values of `nvidia.com/mig.config.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyState {
    Pending,
    Success,
    Failed,
}

impl ApplyState {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyState::Pending => "pending",
            ApplyState::Success => "success",
            ApplyState::Failed => "failed",
        }
    }
}

/// What the node agent publishes in `tessera.dev/node-report`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    /// [`FORMAT_VERSION`].
    pub version: u32,
    pub gpus: Vec<ReportedGpu>,
    /// How the last `tessera.dev/desired-layout` the agent handled went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<DesiredStatus>,
}

/// One GPU of the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedGpu {
    pub index: u32,
    /// The catalog model (`A100-SXM4-40GB`).
    pub model: String,
    #[serde(default)]
    pub unhealthy: bool,
    #[serde(default)]
    pub draining: bool,
    pub layout: ReportedLayout,
}

/// A GPU's MIG mode and what is on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum ReportedLayout {
    Mig {
        instances: Vec<ReportedInstance>,
    },
    Whole {
        /// The running pod holding the GPU.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        holder: Option<PodRef>,
        /// Held by something that is not a known pod (a Tessera job, a hold whose pod the
        /// kubelet has not listed yet).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        busy: bool,
    },
}

/// One GPU instance and the running pod holding it, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedInstance {
    pub instance: Instance,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_instance_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<PodRef>,
    /// Held by something that is not a known pod (a Tessera job, a hold whose pod the kubelet
    /// has not listed yet): busy as if a pod held it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub busy: bool,
}

/// How the node agent handled a desired layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredStatus {
    /// The [`DesiredLayout::id`].
    pub id: String,
    pub state: ApplyState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The controller's layout for a node, in `tessera.dev/desired-layout`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredLayout {
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// Unique per decision; the report's [`DesiredStatus::id`] echoes it.
    pub id: String,
    pub gpus: Vec<DesiredGpu>,
    /// The pods the new devices are meant for (`namespace/name`).
    pub for_pods: Vec<String>,
}

/// One GPU's new layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredGpu {
    pub index: u32,
    pub model: String,
    /// Turn MIG off: the GPU becomes one whole device.
    #[serde(default)]
    pub disable_mig: bool,
    /// The whole layout to reach, at explicit placements.
    pub target: Vec<Instance>,
}

impl DesiredLayout {
    /// The desired layout of one node from the decision's changes for it.
    pub fn from_changes(id: String, changes: &[&NodeLayoutChange]) -> DesiredLayout {
        let mut for_pods: Vec<String> =
            changes.iter().flat_map(|c| c.for_pods.iter().map(ToString::to_string)).collect();
        for_pods.sort();
        for_pods.dedup();
        DesiredLayout {
            version: FORMAT_VERSION,
            id,
            gpus: changes
                .iter()
                .map(|c| DesiredGpu {
                    index: c.gpu,
                    model: c.model.clone(),
                    disable_mig: c.disable_mig,
                    target: c.target.clone(),
                })
                .collect(),
            for_pods,
        }
    }
}

/// An annotation of a node that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node {node}, annotation {key}: {detail}")]
pub struct AnnotationError {
    pub node: String,
    pub key: &'static str,
    pub detail: String,
}

/// Reads one of Tessera's versioned annotations from a node's annotations; `None` when absent.
pub fn read_annotation<T: serde::de::DeserializeOwned>(
    node: &str,
    annotations: Option<&BTreeMap<String, String>>,
    key: &'static str,
) -> Result<Option<T>, AnnotationError> {
    let Some(text) = annotations.and_then(|a| a.get(key)) else { return Ok(None) };
    let err = |detail: String| AnnotationError { node: node.to_string(), key, detail };
    #[derive(Deserialize)]
    struct Versioned {
        version: u32,
    }
    let v: Versioned = serde_json::from_str(text).map_err(|e| err(format!("not a versioned JSON value: {e}")))?;
    if v.version != FORMAT_VERSION {
        return Err(err(format!(
            "version {} is not the version this Tessera reads ({FORMAT_VERSION}); run the same Tessera version on the controller and the nodes",
            v.version
        )));
    }
    serde_json::from_str(text).map(Some).map_err(|e| err(e.to_string()))
}

/// Writes one of Tessera's annotations (the values are plain data: serialising cannot fail).
pub fn write_annotation<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

impl NodeReport {
    /// The node as [`tessera_kube_core::decide`] sees it. GPUs of models outside Tessera's
    /// catalog with MIG on are left to `decide`, which ignores them with the reason.
    pub fn node_state(&self, name: &str, mig_config: Option<MigConfigLabel>) -> NodeState {
        NodeState {
            name: name.to_string(),
            mig_config,
            gpus: self
                .gpus
                .iter()
                .map(|g| NodeGpu {
                    index: g.index,
                    model: catalog().model(&g.model).map(|m| m.name.clone()).unwrap_or_else(|_| g.model.clone()),
                    unhealthy: g.unhealthy,
                    draining: g.draining,
                    mode: match &g.layout {
                        ReportedLayout::Whole { holder, busy } => GpuMode::Whole { busy: *busy || holder.is_some() },
                        ReportedLayout::Mig { instances } => GpuMode::Mig {
                            instances: instances
                                .iter()
                                .map(|i| CurrentInstance {
                                    instance: i.instance,
                                    busy: i.busy || i.holder.is_some(),
                                    gpu_instance_id: i.gpu_instance_id,
                                })
                                .collect(),
                        },
                    },
                })
                .collect(),
        }
    }
}

/// A short name for an instance in messages: `3g.20gb at 4`.
pub fn instance_label(model: &str, instance: &Instance) -> String {
    let profile = catalog()
        .model(model)
        .ok()
        .and_then(|m| m.profile_by_id(instance.profile_id))
        .map(|p| p.name.clone())
        .unwrap_or_else(|| format!("profile {}", instance.profile_id));
    format!("{profile} at {}", instance.start)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::{NODE_REPORT, NodeReport, read_annotation};

    #[test]
    fn a_report_reads_back_and_another_version_or_shape_is_refused_naming_the_node() {
        let read = |text: &str| {
            let a = BTreeMap::from([(NODE_REPORT.to_string(), text.to_string())]);
            read_annotation::<NodeReport>("gpu-1", Some(&a), NODE_REPORT).map_err(|e| e.to_string())
        };
        let ok = r#"{"version":1,"gpus":[{"index":0,"model":"A100-40GB","layout":{"mode":"mig","instances":[{"instance":{"profile_id":19,"start":6},"holder":{"namespace":"ml","name":"p","uid":"u"}}]}}]}"#;
        let r = read(ok).unwrap().unwrap();
        let state = r.node_state("gpu-1", None);
        assert_eq!(state.free_devices(), BTreeMap::new(), "the one device is held");
        let idle = read(&ok.replace(r#","holder":{"namespace":"ml","name":"p","uid":"u"}"#, "")).unwrap().unwrap();
        assert_eq!(
            idle.node_state("gpu-1", None).free_devices(),
            BTreeMap::from([("nvidia.com/mig-1g.5gb".to_string(), 1)])
        );
        assert_eq!(
            read(r#"{"version":2,"gpus":[]}"#).unwrap_err(),
            "node gpu-1, annotation tessera.dev/node-report: version 2 is not the version this Tessera reads (1); \
             run the same Tessera version on the controller and the nodes"
        );
        let e = read(r#"{"version":1,"gpus":[{"index":0}]}"#).unwrap_err();
        assert!(e.starts_with("node gpu-1, annotation tessera.dev/node-report: missing field `model`"), "{e}");
        assert!(read("not json").unwrap_err().contains("not a versioned JSON value"));
        assert_eq!(read_annotation::<NodeReport>("gpu-1", None, NODE_REPORT).unwrap(), None);
    }
}
