//! `tessera kube node-agent` end to end: the real binary on a simulated node, the kubelet
//! stand-in (registration, `ListAndWatch`, `Allocate`) and a PodResources stand-in over real Unix
//! sockets, and the CLI reading back what the engine holds.

mod common;
#[allow(dead_code)]
#[path = "../../tessera-deviceplugin/tests/common/kubelet.rs"]
mod kubelet;
#[path = "../../tessera-deviceplugin/tests/common/podresources.rs"]
mod podresources;

use std::path::Path;
use std::time::{Duration, Instant};

use common::Daemon;
use kubelet::Kubelet;
use podresources::{Held, PodResourcesStandIn};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);
const RESOURCE: &str = "nvidia.com/mig-1g.10gb";

/// The `[kubernetes]` section pointing at the stand-ins in `dir`.
fn kubernetes(dir: &Path) -> String {
    format!(
        "[kubernetes]\ndevice_plugin_dir = \"{0}/device-plugins\"\npod_resources_socket = \"{0}/pod-resources.sock\"\n\
         pod_resources_interval_ms = 100\ncdi_dir = \"{0}/cdi\"\nmig_strategy = \"mixed\"\nnode_labels = false\n",
        dir.display()
    )
}

/// The occupants (`tessera gpus -o json`) of the instance whose MIG device is `id`.
fn occupants(d: &Daemon, id: &str) -> Vec<Value> {
    let gpus: Value = serde_json::from_str(&d.ok(&["gpus", "-o", "json"])).unwrap();
    let inst = gpus["gpus"][0]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["mig_uuid"] == id)
        .unwrap_or_else(|| panic!("no instance {id} in {gpus}"))
        .clone();
    inst["occupants"].as_array().cloned().unwrap_or_default()
}

/// The key of the pod holding `id`, if one does.
fn pod_of(d: &Daemon, id: &str) -> Option<String> {
    occupants(d, id).iter().find_map(|o| {
        (o["external"]["door"] == "kubernetes").then(|| o["external"]["key"].as_str().unwrap_or_default().to_string())
    })
}

async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(start.elapsed() < WAIT, "waited {WAIT:?} for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_node_agent_holds_what_the_kubelet_allocates_for_its_pods() {
    let base = tempfile::tempdir().unwrap();
    for sub in ["device-plugins", "cdi"] {
        std::fs::create_dir(base.path().join(sub)).unwrap();
    }
    let kubelet = Kubelet::start(&base.path().join("device-plugins"));
    let pods = PodResourcesStandIn::start(&base.path().join("pod-resources.sock"));
    let mut d = Daemon::node_agent("1xH100-80GB,numa=1,cpus=16", &kubernetes(base.path()));
    d.ok(&["admin", "layout", "0", "1g.10gb@0,1g.10gb@1"]);

    // The plugin registers from the node agent and advertises the two instances.
    let ids: Vec<String> = kubelet
        .wait_for("both 1g.10gb devices", WAIT, |s| {
            let ds = s.resources.get(RESOURCE)?.devices()?;
            (ds.len() == 2).then(|| ds.iter().map(|x| x.id.clone()).collect())
        })
        .await;
    let at0 = |d: &Daemon| -> String {
        let gpus: Value = serde_json::from_str(&d.ok(&["gpus", "-o", "json"])).unwrap();
        gpus["gpus"][0]["instances"][0]["mig_uuid"].as_str().unwrap().to_string()
    };
    let d0 = at0(&d);
    assert!(ids.contains(&d0), "{ids:?} lacks {d0}");

    // Allocate: the engine holds the instance for the pod before the kubelet hears back.
    kubelet.allocate(RESOURCE, &[&d0]).await.expect("allocate");
    let key = pod_of(&d, &d0).expect("held by the kubelet's allocation");
    assert!(key.starts_with("allocated:"), "{key}");
    pods.set(vec![Held::new("ns/pod-a/main", RESOURCE, &[&d0])]);
    eventually("the hold named after its pod", || pod_of(&d, &d0).filter(|k| k == "ns/pod-a/main")).await;

    // A submission for that profile gets the other instance, never the pod's.
    let id = d.submit(&["--profile", "1g.10gb", "--", "sleep", "60"]);
    let job = d.wait_state(id, "running", 20);
    assert_ne!(job["ranks"][0]["devices"][0].as_str(), Some(d0.as_str()), "{job}");

    // An admin's layout that would destroy the pod's instance is refused, naming the pod.
    let (code, _, err) = d.cli(&["admin", "layout", "0", "7g.80gb"]);
    assert_ne!(code, 0);
    assert!(err.contains("ns/pod-a/main"), "{err}");
    d.ok(&["cancel", &id.to_string()]);
    d.wait_state(id, "cancelled", 20);

    // The daemon restarts having lost its database: the kubelet's list gives the hold back.
    d.stop();
    for file in ["tessera.db", "tessera.db-wal", "tessera.db-shm"] {
        let _ = std::fs::remove_file(d.state().join(file));
    }
    d.next_args = vec!["--init".into()];
    d.spawn();
    eventually("the pod's device adopted after the restart", || pod_of(&d, &d0).filter(|k| k == "ns/pod-a/main")).await;

    // The pod ends: the kubelet stops listing it and the hold is released.
    pods.set(Vec::new());
    eventually("the hold released", || occupants(&d, &d0).is_empty().then_some(())).await;
    d.stop();
}

#[test]
fn a_mistake_in_nvidias_plugin_config_stops_the_node_agent_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("plugin.yaml");
    std::fs::write(&plugin, "version: v1\nflags:\n  migStrategy: mixd\n").unwrap();
    let config = dir.path().join("tessera.toml");
    std::fs::write(&config, format!("[kubernetes]\nplugin_config = \"{}\"\n", plugin.display())).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["kube", "node-agent", "--check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("{}:3:", plugin.display())) && err.contains("mixd"), "{err}");
    // Without the mistake, the same file checks clean.
    std::fs::write(&plugin, "version: v1\nflags:\n  migStrategy: mixed\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["kube", "node-agent", "--check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
