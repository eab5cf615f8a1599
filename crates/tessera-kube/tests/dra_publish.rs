//! The DRA driver's API-server side against the stand-in API server: the node's ResourceSlices
//! in the shape the server's version takes (1.35: counters-only slices first; 1.34: combined),
//! republished with the next generation when the GPUs change and surplus slices deleted, at most
//! one write of the pool per interval with the latest snapshot winning, a generation that a
//! restart continues, a broken limit that keeps the slices before it, slices someone deleted
//! written again, nothing on a server older than 1.34; and a ResourceClaim's allocation read
//! into the core's values, with the reserving pod's user.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::apiserver::{ApiServer, Kind};
use common::{shutdown, wait_for};
use k8s_openapi::api::core::v1::{PodSecurityContext, SecurityContext};
use k8s_openapi::api::resource::v1::{ResourceClaim, ResourceSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tessera_kube::KubeError;
use tessera_kube::dra::slice_name;
use tessera_kube::{PublishSettings, claim_allocation, run_slice_publisher};
use tessera_kube_core::dra::{DraGpu, DraPool, SliceShape, resource_slices};
use tessera_kube_core::dra_claim::{AllocatedDevice, ClaimConfig, ClaimRef, ConfigSource};
use tokio::sync::watch;

const DRIVER: &str = "gpu.tessera.dev";
const NODE: &str = "node-a";

fn gpu(index: u32, uuid: &str) -> DraGpu {
    DraGpu {
        index,
        uuid: uuid.into(),
        model: tessera_mig::catalog().model("H100-80GB").expect("H100 in the catalog"),
        numa_node: Some(index),
        mig_enabled: true,
        instances: Vec::new(),
    }
}

fn gpus(uuids: &[&str]) -> Vec<DraGpu> {
    uuids.iter().enumerate().map(|(i, u)| gpu(u32::try_from(i).unwrap(), u)).collect()
}

/// A publisher running in the background.
struct Publisher {
    gpus: watch::Sender<Arc<Vec<DraGpu>>>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    async fn start(api: &ApiServer, first: Vec<DraGpu>, min_interval: Duration) -> Publisher {
        let mut settings = PublishSettings::new(DRIVER, NODE);
        settings.node_uid = Some("uid-node-a".into());
        settings.min_interval = min_interval;
        let (tx, rx) = watch::channel(Arc::new(first));
        let (stop, signal) = shutdown();
        let task = tokio::spawn(run_slice_publisher(api.client().await, settings, rx, signal));
        Publisher { gpus: tx, stop, task }
    }

    fn send(&self, gpus: Vec<DraGpu>) {
        self.gpus.send_replace(Arc::new(gpus));
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(5), self.task).await.expect("the publisher stops").unwrap();
    }
}

fn is_own(s: &ResourceSlice) -> bool {
    s.spec.driver == DRIVER && s.spec.node_name.as_deref() == Some(NODE)
}

/// This driver's slices of this node, in name order (`-0`, `-1`, ...).
fn own_slices(api: &ApiServer) -> Vec<ResourceSlice> {
    let mut slices: Vec<ResourceSlice> = api.resource_slices().into_iter().filter(is_own).collect();
    slices.sort_by_key(|s| {
        let name = s.metadata.name.clone().unwrap_or_default();
        name.rsplit('-').next().and_then(|k| k.parse::<usize>().ok()).unwrap_or(usize::MAX)
    });
    slices
}

/// Whether the node's slices are exactly the core's slices of `gpus` at `generation`, named.
fn published(api: &ApiServer, shape: SliceShape, gpus: &[DraGpu], generation: i64) -> bool {
    let pool = DraPool { driver: DRIVER.into(), node_name: NODE.into(), generation, shape };
    let want = resource_slices(&pool, gpus).expect("valid slices");
    let have = own_slices(api);
    have.len() == want.len()
        && have.iter().zip(&want).enumerate().all(|(k, (h, w))| {
            h.metadata.name.as_deref() == Some(slice_name(NODE, DRIVER, k).as_str())
                && serde_json::to_value(&h.spec).unwrap() == serde_json::to_value(&w.spec).unwrap()
        })
}

async fn wait_published(api: &ApiServer, shape: SliceShape, gpus: &[DraGpu], generation: i64) {
    let ok = wait_for(10, || published(api, shape, gpus, generation)).await;
    let seen: Vec<_> = own_slices(api).iter().map(|s| (s.metadata.name.clone(), s.spec.pool.clone())).collect();
    assert!(ok, "the slices of {} GPUs at generation {generation} were not published; there: {seen:?}", gpus.len());
}

/// The generations of this pool's slices created or replaced after change `from`.
fn written_generations(api: &ApiServer, from: usize) -> BTreeSet<i64> {
    api.changes::<ResourceSlice>(Kind::ResourceSlice)
        .into_iter()
        .skip(from)
        .filter(|(t, s)| *t != "DELETED" && is_own(s))
        .map(|(_, s)| s.spec.pool.generation)
        .collect()
}

fn slice_writes(api: &ApiServer) -> usize {
    api.changes::<ResourceSlice>(Kind::ResourceSlice).len()
}

/// Every request the stand-in refused, but for expected absences.
fn all_accepted(api: &ApiServer) {
    for r in api.requests() {
        assert!(r.status < 400 || r.status == 404, "refused: {r:?}");
    }
}

#[tokio::test]
async fn on_1_35_counters_come_first_then_devices() {
    let api = ApiServer::start_with_version("1", "35+").await;
    let two = gpus(&["GPU-a", "GPU-b"]);
    let p = Publisher::start(&api, two.clone(), Duration::from_millis(50)).await;
    wait_published(&api, SliceShape::V1_35, &two, 1).await;
    let slices = own_slices(&api);
    assert!(slices.len() >= 2);
    for (k, s) in slices.iter().enumerate() {
        let counters = s.spec.shared_counters.as_ref().is_some_and(|c| !c.is_empty());
        let devices = s.spec.devices.as_ref().is_some_and(|d| !d.is_empty());
        assert_eq!((counters, devices), (k == 0, k > 0), "slice {k}: counters only first, then devices only");
        assert_eq!(s.spec.pool.name, NODE);
        assert_eq!(s.spec.pool.generation, 1);
        assert_eq!(s.spec.pool.resource_slice_count, i64::try_from(slices.len()).unwrap());
        let owner = &s.metadata.owner_references.as_ref().expect("owned by the Node")[0];
        assert_eq!((owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()), ("Node", NODE, "uid-node-a"));
    }
    let sets = slices[0].spec.shared_counters.as_ref().unwrap();
    assert_eq!(sets.len(), 2, "one counter set per GPU");
    p.stop().await;
    // The slices stay after the publisher stops.
    assert!(published(&api, SliceShape::V1_35, &two, 1));
    all_accepted(&api);
}

#[tokio::test]
async fn on_1_34_counters_travel_with_their_devices() {
    let api = ApiServer::start_with_version("1", "34").await;
    let two = gpus(&["GPU-a", "GPU-b"]);
    let p = Publisher::start(&api, two.clone(), Duration::from_millis(50)).await;
    wait_published(&api, SliceShape::V1_34, &two, 1).await;
    for s in own_slices(&api) {
        assert!(s.spec.shared_counters.as_ref().is_some_and(|c| !c.is_empty()), "combined: counters");
        assert!(s.spec.devices.as_ref().is_some_and(|d| !d.is_empty()), "combined: devices");
    }
    p.stop().await;
    all_accepted(&api);
}

#[tokio::test]
async fn a_change_republishes_with_the_next_generation_and_deletes_the_surplus() {
    let api = ApiServer::start_with_version("1", "34").await;
    // Slices of another driver on this node and of this driver on another node are not ours.
    let foreign = |name: &str, driver: &str, node: &str| ResourceSlice {
        metadata: ObjectMeta { name: Some(name.into()), ..ObjectMeta::default() },
        spec: serde_json::from_value(serde_json::json!({
            "driver": driver, "nodeName": node, "pool": {"name": node, "generation": 9, "resourceSliceCount": 1}
        }))
        .unwrap(),
    };
    api.put(&foreign("other-driver", "gpu.nvidia.com", NODE));
    api.put(&foreign("other-node", DRIVER, "node-b"));

    let three = gpus(&["GPU-a", "GPU-b", "GPU-c"]);
    let one = gpus(&["GPU-a"]);
    let count = |g: &[DraGpu]| {
        let pool = DraPool { driver: DRIVER.into(), node_name: NODE.into(), generation: 1, shape: SliceShape::V1_34 };
        resource_slices(&pool, g).unwrap().len()
    };
    assert!(count(&three) > count(&one), "the test needs fewer slices for one GPU");

    let p = Publisher::start(&api, three.clone(), Duration::from_millis(50)).await;
    wait_published(&api, SliceShape::V1_34, &three, 1).await;
    p.send(one.clone());
    wait_published(&api, SliceShape::V1_34, &one, 2).await;
    assert_eq!(own_slices(&api).len(), count(&one), "the surplus slice is deleted");
    let names: BTreeSet<String> = api.resource_slices().into_iter().filter_map(|s| s.metadata.name).collect();
    assert!(names.contains("other-driver") && names.contains("other-node"), "others' slices stay: {names:?}");
    // The same GPUs again: nothing written.
    let before = slice_writes(&api);
    p.send(one.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(slice_writes(&api), before, "an unchanged snapshot writes nothing");
    p.stop().await;
    all_accepted(&api);
}

#[tokio::test]
async fn snapshots_coalesce_to_one_write_per_interval_and_the_last_wins() {
    let api = ApiServer::start_with_version("1", "35").await;
    let p = Publisher::start(&api, gpus(&["GPU-base"]), Duration::from_millis(500)).await;
    wait_published(&api, SliceShape::V1_35, &gpus(&["GPU-base"]), 1).await;
    let from = slice_writes(&api);
    let uuids: Vec<String> = (0..20).map(|i| format!("GPU-{i}")).collect();
    for u in &uuids {
        p.send(gpus(&[u]));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let last = gpus(&[uuids.last().unwrap()]);
    let reached = wait_for(5, || {
        own_slices(&api).first().is_some_and(|s| published(&api, SliceShape::V1_35, &last, s.spec.pool.generation))
    })
    .await;
    assert!(reached, "the last snapshot is published");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let generations = written_generations(&api, from);
    assert!(
        !generations.is_empty() && generations.len() <= 2,
        "20 snapshots within 100 ms at most one write per 500 ms: pool generations written {generations:?}"
    );
    let generation = own_slices(&api)[0].spec.pool.generation;
    assert!(published(&api, SliceShape::V1_35, &last, generation), "the last snapshot won");
    p.stop().await;
    all_accepted(&api);
}

#[tokio::test]
async fn a_restart_continues_the_generation() {
    let api = ApiServer::start_with_version("1", "35").await;
    let (a, b, c, d) = (gpus(&["GPU-a", "GPU-b"]), gpus(&["GPU-a"]), gpus(&["GPU-c"]), gpus(&["GPU-d", "GPU-e"]));
    let first = Publisher::start(&api, a.clone(), Duration::from_millis(50)).await;
    wait_published(&api, SliceShape::V1_35, &a, 1).await;
    first.send(b.clone());
    wait_published(&api, SliceShape::V1_35, &b, 2).await;
    first.stop().await;

    // The same GPUs after a restart: the slices there are adopted, nothing written.
    let before = slice_writes(&api);
    let second = Publisher::start(&api, b.clone(), Duration::from_millis(50)).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(slice_writes(&api), before, "a restart with the same GPUs writes nothing");
    assert!(published(&api, SliceShape::V1_35, &b, 2));
    second.send(c.clone());
    wait_published(&api, SliceShape::V1_35, &c, 3).await;
    second.stop().await;

    // Other GPUs after a restart: the next generation, never an earlier one.
    let before = slice_writes(&api);
    let third = Publisher::start(&api, d.clone(), Duration::from_millis(50)).await;
    wait_published(&api, SliceShape::V1_35, &d, 4).await;
    assert_eq!(written_generations(&api, before), BTreeSet::from([4]), "only generation 4 is written");
    third.stop().await;
    all_accepted(&api);
}

#[tokio::test]
async fn an_inventory_that_breaks_a_limit_keeps_the_slices_before_it() {
    let api = ApiServer::start_with_version("1", "35").await;
    let good = gpus(&["GPU-a"]);
    let p = Publisher::start(&api, good.clone(), Duration::from_millis(50)).await;
    wait_published(&api, SliceShape::V1_35, &good, 1).await;
    // Two GPUs with one index: their names clash (a DraError).
    let before = slice_writes(&api);
    p.send(vec![gpu(0, "GPU-x"), gpu(0, "GPU-y")]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(slice_writes(&api), before, "nothing written for the broken inventory");
    assert!(published(&api, SliceShape::V1_35, &good, 1), "the slices before it stay");
    let next = gpus(&["GPU-z"]);
    p.send(next.clone());
    wait_published(&api, SliceShape::V1_35, &next, 2).await;
    p.stop().await;
}

#[tokio::test]
async fn slices_someone_deletes_are_written_again() {
    let api = ApiServer::start_with_version("1", "35").await;
    let one = gpus(&["GPU-a"]);
    let p = Publisher::start(&api, one.clone(), Duration::from_millis(50)).await;
    wait_published(&api, SliceShape::V1_35, &one, 1).await;
    // The kubelet wipes the driver's slices (it does when it restarts).
    for s in own_slices(&api) {
        api.delete(Kind::ResourceSlice, "", s.metadata.name.as_deref().unwrap());
    }
    assert!(own_slices(&api).is_empty());
    wait_published(&api, SliceShape::V1_35, &one, 1).await;
    p.stop().await;
}

#[tokio::test]
async fn an_api_server_older_than_1_34_gets_nothing() {
    let api = ApiServer::start_with_version("1", "33").await;
    let p = Publisher::start(&api, gpus(&["GPU-a"]), Duration::from_millis(50)).await;
    let asked = wait_for(5, || api.requests().iter().any(|r| r.path == "/version")).await;
    assert!(asked, "the publisher asks the version");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(api.resource_slices().is_empty());
    assert!(!api.requests().iter().any(|r| r.path.contains("resourceslices")), "no slice request at all");
    p.stop().await;
}

fn claim_ref(name: &str, uid: &str) -> ClaimRef {
    ClaimRef { namespace: "default".into(), name: name.into(), uid: uid.into() }
}

/// A claim allocated two devices, with class and claim configuration, reserved by `pod`.
fn allocated_claim(name: &str, uid: &str, pod: Option<(&str, &str)>) -> ResourceClaim {
    let reserved: Vec<serde_json::Value> =
        pod.map(|(n, u)| serde_json::json!({"resource": "pods", "name": n, "uid": u})).into_iter().collect();
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default", "uid": uid},
        "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": "mig.tessera.dev"}}]}},
        "status": {
            "allocation": {"devices": {
                "results": [
                    {"request": "gpu", "driver": DRIVER, "pool": NODE, "device": "gpu-0-1g-10gb-p0"},
                    {"request": "gpu", "driver": DRIVER, "pool": NODE, "device": "gpu-1", "shareID": "share-1"}
                ],
                "config": [
                    {"source": "FromClass", "opaque": {"driver": DRIVER, "parameters":
                        {"apiVersion": "gpu.tessera.dev/v1", "kind": "MigDeviceConfig"}}},
                    {"source": "FromClaim", "requests": ["gpu"], "opaque": {"driver": DRIVER, "parameters":
                        {"apiVersion": "gpu.tessera.dev/v1", "kind": "MigDeviceConfig", "sharing": {"strategy": "MPS"}}}}
                ]
            }},
            "reservedFor": reserved
        }
    }))
    .expect("a ResourceClaim")
}

#[tokio::test]
async fn a_claims_allocation_is_read_with_its_pods_user() {
    let api = ApiServer::start().await;
    let mut train = common::pod("train", &[], Some(NODE));
    let spec = train.spec.as_mut().unwrap();
    spec.containers[0].security_context = Some(SecurityContext { run_as_user: Some(1000), ..Default::default() });
    spec.security_context = Some(PodSecurityContext { run_as_user: Some(2000), ..Default::default() });
    api.put(&train);
    let mut serve = common::pod("serve", &[], Some(NODE));
    serve.spec.as_mut().unwrap().security_context =
        Some(PodSecurityContext { run_as_user: Some(3000), ..Default::default() });
    api.put(&serve);
    api.put(&allocated_claim("c1", "uid-c1", Some(("train", "uid-train"))));
    api.put(&allocated_claim("c2", "uid-c2", Some(("serve", "uid-serve"))));
    api.put(&allocated_claim("c3", "uid-c3", Some(("gone", "uid-gone"))));
    let client = api.client().await;

    let got = claim_allocation(&client, &claim_ref("c1", "uid-c1")).await.unwrap();
    let device = |d: &str, share: Option<&str>| AllocatedDevice {
        request: "gpu".into(),
        driver: DRIVER.into(),
        pool: NODE.into(),
        device: d.into(),
        share_id: share.map(str::to_string),
    };
    assert_eq!(got.devices, vec![device("gpu-0-1g-10gb-p0", None), device("gpu-1", Some("share-1"))]);
    assert_eq!(
        got.config,
        vec![
            ClaimConfig {
                source: ConfigSource::FromClass,
                requests: Vec::new(),
                driver: DRIVER.into(),
                parameters: serde_json::json!({"apiVersion": "gpu.tessera.dev/v1", "kind": "MigDeviceConfig"}),
            },
            ClaimConfig {
                source: ConfigSource::FromClaim,
                requests: vec!["gpu".into()],
                driver: DRIVER.into(),
                parameters: serde_json::json!({
                    "apiVersion": "gpu.tessera.dev/v1", "kind": "MigDeviceConfig", "sharing": {"strategy": "MPS"}
                }),
            },
        ]
    );
    assert_eq!(got.run_as_user, Some(1000), "the first container's user wins over the pod's");
    let c2 = claim_allocation(&client, &claim_ref("c2", "uid-c2")).await.unwrap();
    assert_eq!(c2.run_as_user, Some(3000), "else the pod's");
    let c3 = claim_allocation(&client, &claim_ref("c3", "uid-c3")).await.unwrap();
    assert_eq!((c3.run_as_user, c3.devices.len()), (None, 2), "a reserving pod that cannot be read: no user");

    // Deleted and re-created under the same name: another claim.
    let e = claim_allocation(&client, &claim_ref("c1", "uid-old")).await.unwrap_err();
    assert!(matches!(e, KubeError::ClaimReplaced { .. }), "{e}");
    assert!(e.to_string().contains("default/c1"), "{e}");
    // Not allocated.
    let mut pending = allocated_claim("c4", "uid-c4", None);
    pending.status = None;
    api.put(&pending);
    let e = claim_allocation(&client, &claim_ref("c4", "uid-c4")).await.unwrap_err();
    assert!(matches!(e, KubeError::ClaimNotAllocated { .. }), "{e}");
    assert!(e.to_string().contains("default/c4"), "{e}");
    // Absent.
    let e = claim_allocation(&client, &claim_ref("c5", "uid-c5")).await.unwrap_err();
    assert!(e.to_string().contains("default/c5"), "{e}");
    all_accepted(&api);
}

#[tokio::test]
async fn the_stand_in_serves_slices_as_the_real_server_does() {
    use kube::api::{Api, DeleteParams, ListParams, PostParams};
    let api = ApiServer::start_with_version("1", "35+").await;
    let client = api.client().await;
    let info = client.apiserver_version().await.unwrap();
    assert_eq!((info.major.as_str(), info.minor.as_str(), info.git_version.as_str()), ("1", "35+", "v1.35.0"));
    let slices: Api<ResourceSlice> = Api::all(client);
    let slice = |name: &str, node: &str| ResourceSlice {
        metadata: ObjectMeta { name: Some(name.into()), ..ObjectMeta::default() },
        spec: serde_json::from_value(serde_json::json!({
            "driver": DRIVER, "nodeName": node, "pool": {"name": node, "generation": 1, "resourceSliceCount": 1}
        }))
        .unwrap(),
    };
    let code = |e: kube::Error| match e {
        kube::Error::Api(s) => s.code,
        other => panic!("not an API error: {other}"),
    };
    let created = slices.create(&PostParams::default(), &slice("s-a", NODE)).await.unwrap();
    assert_eq!(created.metadata.namespace, None, "cluster-scoped");
    slices.create(&PostParams::default(), &slice("s-b", "node-b")).await.unwrap();
    assert_eq!(code(slices.create(&PostParams::default(), &slice("s-a", NODE)).await.unwrap_err()), 409);
    assert_eq!(code(slices.get("s-x").await.unwrap_err()), 404);
    assert_eq!(code(slices.delete("s-x", &DeleteParams::default()).await.unwrap_err()), 404);
    // A replace from a stale version conflicts.
    let mut newer = created.clone();
    newer.spec.pool.generation = 2;
    slices.replace("s-a", &PostParams::default(), &newer).await.unwrap();
    assert_eq!(code(slices.replace("s-a", &PostParams::default(), &created).await.unwrap_err()), 409);
    let lp = ListParams::default().fields(&format!("spec.driver={DRIVER},spec.nodeName={NODE}"));
    let names: Vec<_> = slices.list(&lp).await.unwrap().items.into_iter().filter_map(|s| s.metadata.name).collect();
    assert_eq!(names, ["s-a"]);
    slices.delete("s-a", &DeleteParams::default()).await.unwrap();
    assert_eq!(api.resource_slices().len(), 1);
}
