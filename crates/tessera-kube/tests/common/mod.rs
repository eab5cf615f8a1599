//! Shared by the scenario tests: the stand-in API server, simulated nodes, and the cluster's
//! objects as the tests set them up.

#![allow(dead_code)]

pub mod apiserver;
pub mod simnode;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Node, Pod, PodCondition, PodSpec, PodStatus, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use tessera_kube_core::PodRef;

pub const NAMESPACE: &str = "tessera-system";

/// The mig-parted file of the tests' ConfigMap (A100-40GB profiles).
pub const MIG_PARTED: &str = r#"version: v1
mig-configs:
  all-1g.5gb:
    - devices: all
      mig-enabled: true
      mig-devices:
        "1g.5gb": 7
  all-balanced:
    - devices: all
      mig-enabled: true
      mig-devices:
        "1g.5gb": 2
        "2g.10gb": 1
        "3g.20gb": 1
"#;

pub fn config_map() -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some("tessera-mig-parted-config".into()),
            namespace: Some(NAMESPACE.into()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("config.yaml".to_string(), MIG_PARTED.to_string())])),
        ..ConfigMap::default()
    }
}

pub fn node(name: &str, labels: &[(&str, &str)]) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ..ObjectMeta::default()
        },
        ..Node::default()
    }
}

/// A pod requesting these devices: unschedulable (as the scheduler marks it) without a node,
/// running with one.
pub fn pod(name: &str, requests: &[(&str, u32)], node: Option<&str>) -> Pod {
    let amounts: BTreeMap<String, Quantity> =
        requests.iter().map(|(r, n)| (r.to_string(), Quantity(n.to_string()))).collect();
    let condition = match node {
        None => PodCondition {
            type_: "PodScheduled".into(),
            status: "False".into(),
            reason: Some("Unschedulable".into()),
            message: Some("0/3 nodes are available: insufficient devices.".into()),
            ..PodCondition::default()
        },
        Some(_) => PodCondition { type_: "PodScheduled".into(), status: "True".into(), ..PodCondition::default() },
    };
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            creation_timestamp: Some(Time(Timestamp::now())),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: node.map(str::to_string),
            containers: vec![Container {
                name: "main".into(),
                image: Some("registry.example/train:1".into()),
                resources: Some(ResourceRequirements {
                    requests: Some(amounts.clone()),
                    limits: Some(amounts),
                    ..ResourceRequirements::default()
                }),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some(if node.is_some() { "Running" } else { "Pending" }.into()),
            conditions: Some(vec![condition]),
            ..PodStatus::default()
        }),
    }
}

pub fn pod_ref(name: &str) -> PodRef {
    PodRef { namespace: "default".into(), name: name.into(), uid: format!("uid-{name}") }
}

/// Polls `check` every 20 ms until it holds or `seconds` pass.
pub async fn wait_for(seconds: u64, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

/// A shutdown signal for a background loop.
pub fn shutdown() -> (tokio::sync::oneshot::Sender<()>, impl std::future::Future<Output = ()> + Send + 'static) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    (tx, async move {
        let _ = rx.await;
    })
}
