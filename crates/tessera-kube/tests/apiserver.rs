//! The stand-in API server keeps the rules the tests rely on: what the official types do not
//! read is refused, a stale `resourceVersion` conflicts, unmodelled patch types are refused, a
//! watch replays what came after its version.

mod common;

use common::apiserver::ApiServer;
use common::node;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use tokio_stream::StreamExt;

fn code(e: kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        other => panic!("not an API error: {other}"),
    }
}

#[tokio::test]
async fn what_the_official_type_does_not_read_is_refused() {
    let api = ApiServer::start().await;
    api.put(&node("gpu-1", &[]));
    let nodes: Api<Node> = Api::all(api.client().await);
    let cases = [
        // A label value that is not a string.
        serde_json::json!({"metadata": {"labels": {"a": 5}}}),
        // A field Node does not have.
        serde_json::json!({"metadata": {"annotationz": {"a": "b"}}}),
    ];
    for patch in cases {
        let e = nodes.patch("gpu-1", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap_err();
        assert_eq!(code(e), 422, "{patch}");
    }
    let ok = serde_json::json!({"metadata": {"labels": {"a": "5"}}});
    nodes.patch("gpu-1", &PatchParams::default(), &Patch::Merge(&ok)).await.unwrap();
    let e = nodes.patch("gpu-1", &PatchParams::default(), &Patch::Strategic(&ok)).await.unwrap_err();
    assert_eq!(code(e), 415);
    assert_eq!(code(nodes.get("gpu-2").await.unwrap_err()), 404);
}

#[tokio::test]
async fn a_lease_is_written_with_optimistic_concurrency() {
    let api = ApiServer::start().await;
    let leases: Api<Lease> = Api::namespaced(api.client().await, "ns");
    let lease = Lease {
        metadata: ObjectMeta { name: Some("l".into()), ..ObjectMeta::default() },
        spec: Some(LeaseSpec { holder_identity: Some("a".into()), ..LeaseSpec::default() }),
    };
    let created = leases.create(&PostParams::default(), &lease).await.unwrap();
    assert_eq!(code(leases.create(&PostParams::default(), &lease).await.unwrap_err()), 409);
    let mut first = created.clone();
    first.spec.as_mut().unwrap().holder_identity = Some("b".into());
    leases.replace("l", &PostParams::default(), &first).await.unwrap();
    // The same base version again: stale.
    let e = leases.replace("l", &PostParams::default(), &created).await.unwrap_err();
    assert_eq!(code(e), 409);
    assert_eq!(api.lease("ns", "l").unwrap().spec.unwrap().holder_identity.as_deref(), Some("b"));
}

#[tokio::test]
async fn a_watch_replays_the_changes_after_its_version() {
    let api = ApiServer::start().await;
    api.put(&node("gpu-1", &[]));
    let nodes: Api<Node> = Api::all(api.client().await);
    let version = nodes.get("gpu-1").await.unwrap().metadata.resource_version.unwrap();
    api.label_node("gpu-1", "x", Some("1"));
    let stream = nodes.watch(&WatchParams::default().fields("metadata.name=gpu-1"), &version).await.unwrap();
    let mut stream = std::pin::pin!(stream);
    api.label_node("gpu-1", "x", Some("2"));
    for want in ["1", "2"] {
        match stream.next().await.unwrap().unwrap() {
            WatchEvent::Modified(n) => assert_eq!(n.metadata.labels.unwrap()["x"], want),
            other => panic!("{other:?}"),
        }
    }
}
