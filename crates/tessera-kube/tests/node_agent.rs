//! The node label workflow against the stand-in API server: `nvidia.com/mig.config` applied
//! incrementally with `nvidia.com/mig.config.state` reported, a busy instance in the way named
//! with its pod and the change finished when that pod ends, and the published node report.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::apiserver::{ApiServer, Kind};
use common::simnode::SimNode;
use common::{NAMESPACE, config_map, node, pod, pod_ref, shutdown, wait_for};
use tessera_kube::annotations::{
    MIG_CONFIG, MIG_CONFIG_REASON, MIG_CONFIG_STATE, NODE_REPORT, NodeReport, read_annotation,
};
use tessera_kube::{AgentSettings, run_node_agent};

fn label(api: &ApiServer, node: &str, key: &str) -> Option<String> {
    api.node(node).metadata.labels.and_then(|l| l.get(key).cloned())
}

fn annotation(api: &ApiServer, node: &str, key: &str) -> Option<String> {
    api.node(node).metadata.annotations.and_then(|a| a.get(key).cloned())
}

/// Starts the agent of `name` over `sim`; the resync is long, so only watch events drive it.
async fn agent(api: &ApiServer, name: &str, sim: Arc<SimNode>) -> tokio::sync::oneshot::Sender<()> {
    let client = api.client().await;
    let mut settings = AgentSettings::new(name, NAMESPACE);
    settings.resync = Duration::from_secs(600);
    let (stop, signal) = shutdown();
    tokio::spawn(run_node_agent(client, settings, sim, signal));
    stop
}

/// No request was refused except for the expected absences and conflicts: every object the
/// agent wrote read back as the official type.
fn all_accepted(api: &ApiServer) {
    for r in api.requests() {
        assert!(r.status < 400 || r.status == 404 || r.status == 409, "refused: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_change_is_applied_incrementally_with_its_state_reported() {
    let api = ApiServer::start().await;
    api.put(&config_map());
    api.put(&node("gpu-1", &[("nvidia.com/gpu.present", "true")]));
    api.put(&pod("train", &[("nvidia.com/mig-3g.20gb", 1)], Some("gpu-1")));
    // The node as found: a busy 3g.20gb at 4, which all-balanced keeps.
    let sim = SimNode::new(&["A100-40GB"]);
    sim.add(0, "3g.20gb", 4, Some(pod_ref("train")));
    let _stop = agent(&api, "gpu-1", sim.clone()).await;

    // The report is published before any label.
    assert!(wait_for(10, || annotation(&api, "gpu-1", NODE_REPORT).is_some()).await, "no node report");

    api.label_node("gpu-1", MIG_CONFIG, Some("all-balanced"));
    assert!(
        wait_for(10, || label(&api, "gpu-1", MIG_CONFIG_STATE).as_deref() == Some("success")).await,
        "state {:?}, reason {:?}",
        label(&api, "gpu-1", MIG_CONFIG_STATE),
        annotation(&api, "gpu-1", MIG_CONFIG_REASON)
    );
    assert_eq!(
        api.label_history("gpu-1", MIG_CONFIG_STATE),
        [None, Some("pending".to_string()), Some("success".to_string())]
    );
    assert_eq!(annotation(&api, "gpu-1", MIG_CONFIG_REASON), None);
    // Incremental: the busy instance stayed, the rest was added around it.
    assert_eq!(sim.profiles(0), ["1g.5gb", "1g.5gb", "2g.10gb", "3g.20gb"]);
    {
        let state = sim.state();
        assert!(state.destroyed.is_empty(), "destroyed {:?}", state.destroyed);
        assert_eq!(state.created.len(), 3);
    }

    // The published report follows the layout, with the holder named.
    assert!(
        wait_for(10, || {
            let n = api.node("gpu-1");
            let r: Option<NodeReport> = read_annotation("gpu-1", n.metadata.annotations.as_ref(), NODE_REPORT).unwrap();
            r.is_some_and(|r| match &r.gpus[0].layout {
                tessera_kube::ReportedLayout::Mig { instances } => {
                    instances.len() == 4 && instances.iter().filter(|i| i.holder == Some(pod_ref("train"))).count() == 1
                }
                _ => false,
            })
        })
        .await,
        "report {:?}",
        annotation(&api, "gpu-1", NODE_REPORT)
    );

    // A config the file lacks: failed, the reason names it and the configs there are.
    api.label_node("gpu-1", MIG_CONFIG, Some("all-3g.40gb"));
    assert!(wait_for(10, || label(&api, "gpu-1", MIG_CONFIG_STATE).as_deref() == Some("failed")).await);
    let reason = annotation(&api, "gpu-1", MIG_CONFIG_REASON).unwrap();
    assert!(
        reason.contains("no config named 'all-3g.40gb'") && reason.contains("all-1g.5gb, all-balanced"),
        "{reason}"
    );
    assert_eq!(sim.profiles(0), ["1g.5gb", "1g.5gb", "2g.10gb", "3g.20gb"], "nothing changed");
    all_accepted(&api);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_instance_in_the_way_fails_naming_the_pod_then_succeeds_when_it_ends() {
    let api = ApiServer::start().await;
    api.put(&config_map());
    api.put(&node("gpu-1", &[]));
    api.put(&pod("bert", &[("nvidia.com/mig-7g.40gb", 1)], Some("gpu-1")));
    api.put(&pod("other", &[], Some("gpu-2")));
    let sim = SimNode::new(&["A100-40GB"]);
    sim.add(0, "7g.40gb", 0, Some(pod_ref("bert")));
    let _stop = agent(&api, "gpu-1", sim.clone()).await;

    api.label_node("gpu-1", MIG_CONFIG, Some("all-1g.5gb"));
    assert!(wait_for(10, || label(&api, "gpu-1", MIG_CONFIG_STATE).as_deref() == Some("failed")).await);
    let reason = annotation(&api, "gpu-1", MIG_CONFIG_REASON).unwrap();
    assert_eq!(
        reason,
        "nvidia.com/mig.config=all-1g.5gb: GPU 0: instance 7g.40gb at 0 is in use by pod default/bert; \
         tried again when that pod ends"
    );
    assert_eq!(sim.profiles(0), ["7g.40gb"]);

    // Another pod changing on the node does not end the wait.
    api.put(&pod("other", &[], Some("gpu-1")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(label(&api, "gpu-1", MIG_CONFIG_STATE).as_deref(), Some("failed"));

    // The pod ends: the kubelet gives its device back, the pod object goes.
    sim.release(&pod_ref("bert"));
    api.delete(Kind::Pod, "default", "bert");
    assert!(
        wait_for(10, || label(&api, "gpu-1", MIG_CONFIG_STATE).as_deref() == Some("success")).await,
        "state {:?}, reason {:?}",
        label(&api, "gpu-1", MIG_CONFIG_STATE),
        annotation(&api, "gpu-1", MIG_CONFIG_REASON)
    );
    assert_eq!(sim.profiles(0), vec!["1g.5gb"; 7]);
    assert_eq!(annotation(&api, "gpu-1", MIG_CONFIG_REASON), None);
    assert_eq!(
        api.label_history("gpu-1", MIG_CONFIG_STATE),
        [None, Some("pending".into()), Some("failed".into()), Some("pending".into()), Some("success".into())]
    );
    let state = sim.state();
    assert_eq!(state.destroyed.len(), 1);
    assert_eq!(state.destroyed[0].2, None, "the 7g.40gb was destroyed only once idle");
    drop(state);
    all_accepted(&api);
}
