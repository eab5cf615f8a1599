//! `tessera kube node-agent` as a DRA driver, end to end: the real binary on a simulated node,
//! against the stand-in API server (Node, ResourceClaims, ResourceSlices, `/version`) and a
//! kubelet that speaks the real plugin-watcher and DRA gRPC protocols over the plugin's Unix
//! sockets. The scheduler's part is played by the test: it allocates the device the scheduler's
//! first fit would take from the published slices, then the kubelet prepares the claim; the
//! instance is made at that placement by the engine, held for the claim, published with its
//! UUID, and destroyed again on unprepare.

mod common;
#[path = "../../tessera-kube/tests/common/mod.rs"]
mod kube_common;
#[allow(dead_code)]
#[path = "../../tessera-deviceplugin/tests/common/kubelet.rs"]
mod kubelet;

use std::path::Path;
use std::time::{Duration, Instant};

use common::Daemon;
use k8s_openapi::api::resource::v1::{ResourceClaim, ResourceSlice};
use kube_common::apiserver::ApiServer;
use kube_common::node;
use serde_json::Value;
use tessera_deviceplugin::dra::api::registration::registration_client::RegistrationClient;
use tessera_deviceplugin::dra::api::registration::{InfoRequest, RegistrationStatus};
use tessera_deviceplugin::dra::api::v1;
use tessera_deviceplugin::uds::unix_channel;

const WAIT: Duration = Duration::from_secs(30);
const NODE: &str = "gpu-1";
const DRIVER: &str = "gpu.tessera.dev";

fn kubernetes(dir: &Path, url: &str) -> String {
    format!(
        "[kubernetes]\ncdi_dir = \"{0}/cdi\"\nnode_labels = false\ndevice_plugin = false\napi_server = \"{url}\"\n\
         device_plugin_dir = \"{0}/device-plugins\"\n\
         [kubernetes.dra]\nenabled = true\nplugin_dir = \"{0}/plugins/{DRIVER}\"\nregistry_dir = \"{0}/registry\"\n\
         republish_interval_ms = 100\n",
        dir.display()
    )
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

/// The node's slices in the order the allocator visits them (by name, as the publisher numbers
/// them), once the pool is complete.
fn pool(api: &ApiServer) -> Option<Vec<ResourceSlice>> {
    let mut slices: Vec<ResourceSlice> =
        api.resource_slices().into_iter().filter(|s| s.spec.node_name.as_deref() == Some(NODE)).collect();
    slices.sort_by_key(|s| {
        let name = s.metadata.name.clone().unwrap_or_default();
        let k: u32 = name.rsplit('-').next().and_then(|k| k.parse().ok()).unwrap_or(0);
        k
    });
    let count = usize::try_from(slices.first()?.spec.pool.resource_slice_count).ok()?;
    let generation = slices[0].spec.pool.generation;
    (slices.len() == count && slices.iter().all(|s| s.spec.pool.generation == generation)).then_some(slices)
}

fn attr(device: &Value, name: &str) -> Value {
    let a = &device["attributes"][name];
    if !a["string"].is_null() { a["string"].clone() } else { a["int"].clone() }
}

/// The devices of the pool, in order, as JSON.
fn devices(slices: &[ResourceSlice]) -> Vec<Value> {
    slices
        .iter()
        .flat_map(|s| serde_json::to_value(&s.spec).unwrap()["devices"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn claim(uid: &str, device: &str) -> ResourceClaim {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "train", "namespace": "default", "uid": uid},
        "spec": {"devices": {"requests": [{"name": "slice", "exactly": {"deviceClassName": "mig-1g.10gb.gpu.tessera.dev"}}]}},
        "status": {"allocation": {"devices": {"results": [
            {"request": "slice", "driver": DRIVER, "pool": NODE, "device": device}
        ]}}}
    }))
    .unwrap()
}

/// The instances of GPU 0 (`tessera gpus -o json`).
fn instances(d: &Daemon) -> Vec<Value> {
    let gpus: Value = serde_json::from_str(&d.ok(&["gpus", "-o", "json"])).unwrap();
    gpus["gpus"][0]["instances"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_is_prepared_at_the_published_first_fit_and_given_back() {
    let base = tempfile::tempdir().unwrap();
    std::fs::create_dir(base.path().join("cdi")).unwrap();
    // A device-plugin kubelet too: with `device_plugin = false` nothing registers there.
    std::fs::create_dir(base.path().join("device-plugins")).unwrap();
    let device_plugins = kubelet::Kubelet::start(&base.path().join("device-plugins"));
    let api = ApiServer::start_with_version("1", "35").await;
    api.put(&node(NODE, &[("nvidia.com/gpu.present", "true")]));
    let mut daemon = Daemon::unstarted_node_agent("1xH100-80GB,numa=1,cpus=16", &kubernetes(base.path(), api.url()));
    daemon.env = vec![("NODE_NAME".into(), NODE.into())];
    daemon.spawn();

    // Published: counters first (1.35), then the devices, owned by the Node.
    let slices = eventually("the node's slices", || pool(&api)).await;
    assert!(slices[0].spec.shared_counters.is_some() && slices[0].spec.devices.is_none(), "counters first");
    let node_uid = api.node(NODE).metadata.uid.unwrap();
    assert!(slices.iter().all(|s| {
        s.metadata.owner_references.as_ref().is_some_and(|o| o.iter().any(|r| r.uid == node_uid && r.kind == "Node"))
    }));
    let generation = slices[0].spec.pool.generation;
    // The scheduler's first fit for a 1g.10gb request: the first such device in order.
    let first = devices(&slices).into_iter().find(|d| attr(d, "profile") == "1g.10gb").expect("a 1g.10gb device");
    let device = first["name"].as_str().unwrap().to_string();
    let start = attr(&first, "placementStart").as_u64().unwrap();
    assert!(attr(&first, "uuid").is_null(), "no instance yet");
    api.put(&claim("uid-train", &device));

    // The kubelet registers the plugin as the plugin watcher does.
    let registry = base.path().join("registry");
    let socket = registry.join(format!("{DRIVER}-reg.sock"));
    eventually("the registration socket", || socket.exists().then_some(())).await;
    let mut reg = RegistrationClient::new(unix_channel(&socket).await.unwrap());
    let info = reg.get_info(InfoRequest {}).await.unwrap().into_inner();
    assert_eq!((info.r#type.as_str(), info.name.as_str()), ("DRAPlugin", DRIVER));
    assert!(info.supported_versions.iter().any(|v| v == "v1.DRAPlugin"), "{:?}", info.supported_versions);
    let mut kubelet =
        v1::dra_plugin_client::DraPluginClient::new(unix_channel(Path::new(&info.endpoint)).await.unwrap());
    reg.notify_registration_status(RegistrationStatus { plugin_registered: true, error: String::new() }).await.unwrap();

    // Prepare: the instance is made at exactly the allocated placement and held for the claim.
    let the_claim = v1::Claim { namespace: "default".into(), uid: "uid-train".into(), name: "train".into() };
    let answer = kubelet
        .node_prepare_resources(v1::NodePrepareResourcesRequest { claims: vec![the_claim.clone()] })
        .await
        .unwrap()
        .into_inner();
    let prepared = &answer.claims["uid-train"];
    assert!(prepared.error.is_empty(), "{}", prepared.error);
    assert_eq!(prepared.devices.len(), 1);
    assert_eq!(
        (prepared.devices[0].pool_name.as_str(), prepared.devices[0].device_name.as_str()),
        (NODE, device.as_str())
    );
    let cdi_id = prepared.devices[0].cdi_device_ids[0].clone();
    assert!(cdi_id.starts_with(&format!("{DRIVER}/claim=")), "{cdi_id}");

    let made = instances(&daemon);
    let inst = made
        .iter()
        .find(|i| i["profile"] == "1g.10gb" && i["start"].as_u64() == Some(start))
        .unwrap_or_else(|| panic!("no 1g.10gb@{start} in {made:?}"));
    assert_eq!(made.len(), 1, "nothing else made: {made:?}");
    let holder = &inst["occupants"][0]["external"];
    assert_eq!((holder["door"].as_str(), holder["key"].as_str()), (Some("dra"), Some("uid-train")));
    let mig_uuid = inst["mig_uuid"].as_str().unwrap().to_string();
    // The container's CDI spec names the instance the engine made.
    let spec = std::fs::read_dir(base.path().join("cdi"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .find(|t| t.contains("uid-train"))
        .expect("the claim's CDI spec");
    assert!(spec.contains(&mig_uuid), "{spec}");

    // Republished with the instance's UUID, at a new generation.
    eventually("the made instance published", || {
        let slices = pool(&api)?;
        let d = devices(&slices).into_iter().find(|d| d["name"] == device.as_str())?;
        (slices[0].spec.pool.generation > generation && attr(&d, "uuid") == mig_uuid.as_str()).then_some(())
    })
    .await;

    // Unprepare: the hold ends and the instance the driver made is destroyed.
    let answer = kubelet
        .node_unprepare_resources(v1::NodeUnprepareResourcesRequest { claims: vec![the_claim] })
        .await
        .unwrap()
        .into_inner();
    assert!(answer.claims["uid-train"].error.is_empty(), "{}", answer.claims["uid-train"].error);
    assert!(instances(&daemon).is_empty(), "{:?}", instances(&daemon));
    eventually("the device published as free again", || {
        let d = devices(&pool(&api)?).into_iter().find(|d| d["name"] == device.as_str())?;
        attr(&d, "uuid").is_null().then_some(())
    })
    .await;
    // DRA alone: the device plugin never registered a resource with the kubelet.
    let registered = device_plugins.seen(|s| s.registrations.len());
    assert_eq!(registered, 0, "the device plugin ran with kubernetes.device_plugin = false");
}
