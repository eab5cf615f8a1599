//! The controller against the stand-in API server: ten pending pods of mixed profiles on a
//! three-node simulated cluster become schedulable through repartitioning, with no busy instance
//! touched and a labelled node left as its config says; two replicas, one leader.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::apiserver::ApiServer;
use common::simnode::SimNode;
use common::{NAMESPACE, config_map, node, pod, pod_ref, shutdown, wait_for};
use k8s_openapi::api::core::v1::Pod;
use tessera_kube::annotations::{DESIRED_LAYOUT, MIG_CONFIG, MIG_CONFIG_STATE};
use tessera_kube::{AgentSettings, ControllerSettings, run_controller, run_node_agent};

fn settings(identity: &str) -> ControllerSettings {
    let mut s = ControllerSettings::new(NAMESPACE, identity);
    s.lease.duration = Duration::from_secs(2);
    s.renew_every = Duration::from_millis(200);
    s.batch_window = Duration::from_millis(100);
    s.resync = Duration::from_secs(1);
    s
}

/// The scheduler and kubelets of the simulated cluster: binds each pending pod to a node whose
/// simulated GPUs have every device it asks for free, and marks it running.
fn schedule(api: &ApiServer, nodes: &[(&str, Arc<SimNode>)]) {
    for p in api.pods() {
        let spec = p.spec.clone().unwrap_or_default();
        if spec.node_name.is_some() {
            continue;
        }
        let name = p.metadata.name.clone().unwrap();
        let pr = pod_ref(&name);
        let mut wants: Vec<(String, u32)> = Vec::new();
        for c in &spec.containers {
            for (r, q) in c.resources.as_ref().and_then(|r| r.requests.clone()).unwrap_or_default() {
                wants.push((r, q.0.parse().unwrap()));
            }
        }
        for (node_name, sim) in nodes {
            let mut ok = true;
            for (r, n) in &wants {
                for _ in 0..*n {
                    ok &= sim.bind(r, &pr);
                }
            }
            if !ok {
                sim.release(&pr);
                continue;
            }
            let mut bound: Pod = pod(&name, &[], Some(node_name));
            bound.spec.as_mut().unwrap().containers = spec.containers.clone();
            bound.metadata.creation_timestamp = p.metadata.creation_timestamp.clone();
            api.put(&bound);
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_pending_pods_become_schedulable_through_repartitioning_without_touching_busy_instances() {
    let api = ApiServer::start().await;
    api.put(&config_map());
    // node-a: GPU 0 has a busy 3g.20gb at 4. node-b: GPU 0 a busy 2g.10gb at 0 and an idle
    // 1g.5gb at 6. node-c: labelled all-1g.5gb, a config that does not allow on-demand changes.
    let a = SimNode::new(&["A100-40GB", "A100-40GB"]);
    a.add(0, "3g.20gb", 4, Some(pod_ref("busy-a")));
    let b = SimNode::new(&["A100-40GB", "A100-40GB"]);
    b.add(0, "2g.10gb", 0, Some(pod_ref("busy-b")));
    b.add(0, "1g.5gb", 6, None);
    let c = SimNode::new(&["A100-40GB", "A100-40GB"]);
    api.put(&node("node-a", &[]));
    api.put(&node("node-b", &[]));
    api.put(&node("node-c", &[(MIG_CONFIG, "all-1g.5gb")]));
    api.put(&pod("busy-a", &[("nvidia.com/mig-3g.20gb", 1)], Some("node-a")));
    api.put(&pod("busy-b", &[("nvidia.com/mig-2g.10gb", 1)], Some("node-b")));
    let nodes = [("node-a", a.clone()), ("node-b", b.clone()), ("node-c", c.clone())];
    let mut stops = Vec::new();
    for (name, sim) in &nodes {
        let mut s = AgentSettings::new(*name, NAMESPACE);
        s.resync = Duration::from_secs(1);
        let (stop, signal) = shutdown();
        tokio::spawn(run_node_agent(api.client().await, s, sim.clone(), signal));
        stops.push(stop);
    }
    assert!(
        wait_for(10, || api.node("node-c").metadata.labels.unwrap().get(MIG_CONFIG_STATE).map(String::as_str)
            == Some("success"))
        .await
    );
    let c_before = (c.profiles(0), c.profiles(1));

    let wanted: [(&str, &[(&str, u32)]); 10] = [
        ("p0", &[("nvidia.com/mig-3g.20gb", 1)]),
        ("p1", &[("nvidia.com/mig-3g.20gb", 1)]),
        ("p2", &[("nvidia.com/mig-2g.10gb", 1)]),
        ("p3", &[("nvidia.com/mig-2g.10gb", 1)]),
        ("p4", &[("nvidia.com/mig-2g.10gb", 1)]),
        ("p5", &[("nvidia.com/mig-1g.5gb", 1)]),
        ("p6", &[("nvidia.com/mig-1g.5gb", 2)]),
        ("p7", &[("nvidia.com/mig-4g.20gb", 1)]),
        ("p8", &[("nvidia.com/mig-1g.5gb", 1)]),
        ("p9", &[("nvidia.com/mig-2g.10gb", 1)]),
    ];
    for (name, requests) in wanted {
        api.put(&pod(name, requests, None));
    }
    let (stop_controller, signal) = shutdown();
    tokio::spawn(run_controller(api.client().await, settings("controller-1"), signal));

    let all_bound = wait_for(30, || {
        schedule(&api, &nodes);
        api.pods().iter().all(|p| p.spec.as_ref().unwrap().node_name.is_some())
    })
    .await;
    let unbound: Vec<String> = api
        .pods()
        .iter()
        .filter(|p| p.spec.as_ref().unwrap().node_name.is_none())
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    assert!(
        all_bound,
        "still pending: {unbound:?}; events: {:?}",
        api.events().iter().map(|e| e.note.clone()).collect::<Vec<_>>()
    );

    // No busy instance was destroyed, and the busy ones are where they were, held as before.
    for (name, sim) in &nodes {
        let s = sim.state();
        assert!(s.destroyed.iter().all(|(_, _, holder)| holder.is_none()), "{name} destroyed {:?}", s.destroyed);
    }
    assert!(a.state().gpus[0].instances.iter().any(|(i, h)| i.start == 4 && h == &Some(pod_ref("busy-a"))));
    assert!(b.state().gpus[0].instances.iter().any(|(i, h)| i.start == 0 && h == &Some(pod_ref("busy-b"))));
    // The labelled node kept its config's layout and got no desired layout.
    assert_eq!((c.profiles(0), c.profiles(1)), c_before);
    assert!(!api.node("node-c").metadata.annotations.unwrap_or_default().contains_key(DESIRED_LAYOUT));
    // Repartitioning happened, and was recorded.
    let events = api.events();
    assert!(events.iter().any(|e| e.reason.as_deref() == Some("Repartition")), "{events:?}");
    let mut per_reason: BTreeMap<String, usize> = BTreeMap::new();
    for e in &events {
        *per_reason.entry(e.reason.clone().unwrap_or_default()).or_default() += 1;
    }
    assert!(!per_reason.contains_key("NotRepartitioned"), "{per_reason:?}");
    for r in api.requests() {
        assert!(r.status < 400 || r.status == 404 || r.status == 409, "refused: {r:?}");
    }
    let _ = stop_controller.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_controller_replicas_one_leads_and_the_other_takes_over_when_it_leaves() {
    let api = ApiServer::start().await;
    let (stop_1, signal_1) = shutdown();
    let (stop_2, signal_2) = shutdown();
    let one = tokio::spawn(run_controller(api.client().await, settings("controller-1"), signal_1));
    let two = tokio::spawn(run_controller(api.client().await, settings("controller-2"), signal_2));
    let holder = || api.lease(NAMESPACE, "tessera-controller").and_then(|l| l.spec).and_then(|s| s.holder_identity);
    assert!(wait_for(10, || holder().is_some()).await, "nobody took the Lease");
    let first = holder().unwrap();
    // It stays with the first for several lease renewals, the other never writes it.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(holder().as_deref(), Some(first.as_str()));
    let lease = api.lease(NAMESPACE, "tessera-controller").unwrap();
    assert_eq!(lease.spec.as_ref().unwrap().lease_transitions, Some(0));
    // The leader leaves: it gives the Lease up and the other takes it at once.
    let (stop_first, other) = if first == "controller-1" { (stop_1, "controller-2") } else { (stop_2, "controller-1") };
    let _ = stop_first.send(());
    let _ = if first == "controller-1" { one.await } else { two.await };
    assert!(wait_for(2, || holder().as_deref() == Some(other)).await, "holder {:?}", holder());
    let lease = api.lease(NAMESPACE, "tessera-controller").unwrap();
    assert_eq!(lease.spec.as_ref().unwrap().lease_transitions, Some(1));
}

/// The budget: from a pending pod to its device on a node with an idle GPU in under 2 s
/// (plus the MIG operations, instant on the simulated node), with the default settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_pod_gets_its_device_on_an_idle_gpu_within_two_seconds() {
    let api = ApiServer::start().await;
    api.put(&config_map());
    api.put(&node("gpu-1", &[]));
    let sim = SimNode::new(&["A100-40GB"]);
    let (_stop_agent, signal) = shutdown();
    tokio::spawn(run_node_agent(api.client().await, AgentSettings::new("gpu-1", NAMESPACE), sim.clone(), signal));
    let (_stop, signal) = shutdown();
    tokio::spawn(run_controller(api.client().await, ControllerSettings::new(NAMESPACE, "c-1"), signal));
    assert!(wait_for(10, || api.lease(NAMESPACE, "tessera-controller").is_some()).await);
    assert!(wait_for(10, || api.node("gpu-1").metadata.annotations.is_some()).await, "no node report");

    let start = std::time::Instant::now();
    api.put(&pod("p", &[("nvidia.com/mig-2g.10gb", 1)], None));
    assert!(wait_for(5, || sim.profiles(0) == ["2g.10gb"]).await, "{:?}", sim.profiles(0));
    let elapsed = start.elapsed();
    eprintln!("pending pod to its device: {} ms", elapsed.as_millis());
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
}
