//! NVML faults across a Kubernetes prepare: `tessera kube node-agent --backend nvml` as a DRA
//! driver over the stand-in `libnvidia-ml.so`, against the stand-in API server and a kubelet
//! speaking the DRA gRPC protocol (the harness of `kube_dra.rs`). A claim for a 1g.10gb device is
//! allocated at the published first fit and prepared; the stand-in's census, taken just before
//! and just after `NodePrepareResources`, gives the NVML calls the prepare makes. Each of them is
//! then failed once, at its first and at its last call within the prepare, with each return code
//! nvml.h documents as plausible for it (every code for the calls that change the GPU; `UNKNOWN`
//! and `GPU_IS_LOST` for the rest unless `TESSERA_FAULT_SWEEP=full`). After every fault:
//! * the prepare answered (a claim error with a message, or success), never hung or crashed;
//! * the layout the daemon reports is exactly what the node has, and it is valid;
//! * the kubelet's retry of the prepare succeeds with the instance at the allocated placement
//!   (after an admin's health clear when the fault quarantined the GPU), and unprepare leaves
//!   the GPU empty again.

mod common;
#[path = "../../tessera-kube/tests/common/mod.rs"]
mod kube_common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
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
use tessera_nvml_standin::faults::{census_counts, sweep_codes};

const WAIT: Duration = Duration::from_secs(30);
const NODE: &str = "gpu-1";
const DRIVER: &str = "gpu.tessera.dev";
const SPEC: &str = "1xH100-80GB,numa=1,cpus=16";
const NVIDIA_DRIVER: &str = "580.65.06";
const WORKERS: usize = 4;

fn kubernetes(dir: &Path, url: &str) -> String {
    format!(
        "[kubernetes]\ncdi_dir = \"{0}/cdi\"\nnode_labels = false\ndevice_plugin = false\napi_server = \"{url}\"\n\
         device_plugin_dir = \"{0}/device-plugins\"\n\
         [kubernetes.dra]\nenabled = true\nplugin_dir = \"{0}/plugins/{DRIVER}\"\nregistry_dir = \"{0}/registry\"\n\
         republish_interval_ms = 100\n",
        dir.display()
    )
}

async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> Result<T, String> {
    let start = Instant::now();
    loop {
        if let Some(t) = f() {
            return Ok(t);
        }
        if start.elapsed() > WAIT {
            return Err(format!("waited {WAIT:?} for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

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

/// The daemon's report equals the node, and the planner accepts it.
async fn reported_as_it_is(d: &Daemon, what: &str) -> Result<Vec<(String, u64)>, String> {
    let t0 = Instant::now();
    loop {
        let (code, out, err) = d.cli(&["-o", "json", "gpus"]);
        if code != 0 {
            return Err(format!("{what}: the daemon does not answer: {err}\n{}", d.log()));
        }
        let seen = common::gpu0_layout(&serde_json::from_str(&out).unwrap());
        let real = d.standin_gpu0_layout();
        if seen == real {
            if !real.is_empty() {
                let existing: Vec<String> = real.iter().map(|(p, s)| format!("{p}@{s}")).collect();
                let dir = tempfile::tempdir().unwrap();
                let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
                    .args(["--backend", "sim", "--sim-state"])
                    .arg(dir.path().join("s.json"))
                    .args(["mig", "plan", "--gpu", "H100-80GB", "--existing", &existing.join(","), "1g.10gb"])
                    .output()
                    .unwrap();
                if String::from_utf8_lossy(&out.stderr).contains("not valid") {
                    return Err(format!("{what}: invalid layout left: {existing:?}"));
                }
            }
            return Ok(real);
        }
        if t0.elapsed() > Duration::from_secs(10) {
            return Err(format!("{what}: the daemon reports {seen:?}, the node has {real:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What one run saw.
struct Prepared {
    /// The census just before and just after the first prepare (when taken).
    before: BTreeMap<String, u64>,
    after: BTreeMap<String, u64>,
}

/// One node agent with `env`, one claim prepared (retried once the fault has had its go), checked,
/// and unprepared.
async fn run(env: &[(&str, &str)], census: Option<&Path>, what: &str) -> Result<Prepared, String> {
    let base = tempfile::tempdir().unwrap();
    std::fs::create_dir(base.path().join("cdi")).unwrap();
    std::fs::create_dir(base.path().join("device-plugins")).unwrap();
    let api = ApiServer::start_with_version("1", "35").await;
    api.put(&node(NODE, &[("nvidia.com/gpu.present", "true")]));
    let mut daemon = Daemon::unstarted_node_agent(SPEC, &kubernetes(base.path(), api.url()));
    daemon.nvml_driver = Some(NVIDIA_DRIVER.into());
    // No NVIDIA driver here: the caps minors come from a generated table, as the driver's would.
    let minors = base.path().join("mig-minors");
    std::fs::write(&minors, tessera_gpu::ids::mig_minors_text(32)).unwrap();
    daemon.env = vec![("NODE_NAME".into(), NODE.into()), ("TESSERA_MIG_MINORS".into(), minors.display().to_string())];
    daemon.env.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    daemon.try_spawn().map_err(|e| format!("{what}: the node agent did not start: {e}"))?;

    let slices =
        eventually("the node's slices", || pool(&api)).await.map_err(|e| format!("{what}: {e}\n{}", daemon.log()))?;
    let first = devices(&slices)
        .into_iter()
        .find(|d| attr(d, "profile") == "1g.10gb")
        .ok_or_else(|| format!("{what}: no 1g.10gb device published"))?;
    let device = first["name"].as_str().unwrap().to_string();
    let start = attr(&first, "placementStart").as_u64().unwrap();
    api.put(&claim("uid-train", &device));

    let registry = base.path().join("registry");
    let socket = registry.join(format!("{DRIVER}-reg.sock"));
    eventually("the registration socket", || socket.exists().then_some(()))
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    let mut reg = RegistrationClient::new(unix_channel(&socket).await.map_err(|e| format!("{what}: {e}"))?);
    let info = reg.get_info(InfoRequest {}).await.map_err(|e| format!("{what}: {e}"))?.into_inner();
    let mut kubelet = v1::dra_plugin_client::DraPluginClient::new(
        unix_channel(Path::new(&info.endpoint)).await.map_err(|e| format!("{what}: {e}"))?,
    );
    reg.notify_registration_status(RegistrationStatus { plugin_registered: true, error: String::new() })
        .await
        .map_err(|e| format!("{what}: {e}"))?;

    let the_claim = v1::Claim { namespace: "default".into(), uid: "uid-train".into(), name: "train".into() };
    let before = census.map(|p| census_counts(&std::fs::read_to_string(p).unwrap_or_default())).unwrap_or_default();
    let prepare = v1::NodePrepareResourcesRequest { claims: vec![the_claim.clone()] };
    let first_try = tokio::time::timeout(WAIT, kubelet.node_prepare_resources(prepare.clone()))
        .await
        .map_err(|_| format!("{what}: prepare hung\n{}", daemon.log()))?;
    let after = census.map(|p| census_counts(&std::fs::read_to_string(p).unwrap_or_default())).unwrap_or_default();
    let ok_first = match &first_try {
        Ok(answer) => {
            let c = &answer.get_ref().claims["uid-train"];
            if !c.error.is_empty() && c.error.trim().len() < 10 {
                return Err(format!("{what}: a prepare error without a message: {:?}", c.error));
            }
            c.error.is_empty()
        }
        Err(status) if status.message().trim().is_empty() => {
            return Err(format!("{what}: a gRPC failure without a message: {status:?}"));
        }
        Err(_) => false,
    };
    reported_as_it_is(&daemon, what).await?;

    if !ok_first {
        // The fault quarantined the GPU: clear it as an admin would, then the kubelet retries.
        let mut cleared = false;
        if daemon.log().contains("is now unhealthy") {
            clear(&daemon, what)?;
            cleared = true;
        }
        let t0 = Instant::now();
        loop {
            let answer = kubelet.node_prepare_resources(prepare.clone()).await;
            let last = match answer {
                Ok(a) if a.get_ref().claims["uid-train"].error.is_empty() => break,
                Ok(a) => a.get_ref().claims["uid-train"].error.clone(),
                Err(s) => s.message().to_string(),
            };
            if !cleared && t0.elapsed() > Duration::from_secs(2) {
                // A fault taken for a lost GPU keeps it out until a reboot or an admin's clear.
                let (_, gpus, _) = daemon.cli(&["gpus"]);
                println!("{what}: the retry is refused ({last}); the GPU as the daemon reports it:\n{gpus}");
                QUARANTINED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                clear(&daemon, what)?;
                cleared = true;
            }
            if t0.elapsed() > WAIT {
                return Err(format!(
                    "{what}: the kubelet's retries never prepared the claim: {last}\n{}",
                    daemon.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let made = reported_as_it_is(&daemon, what).await?;
    if made != [("1g.10gb".to_string(), start)] {
        return Err(format!("{what}: after the prepare the GPU holds {made:?}, not 1g.10gb@{start}"));
    }
    let answer = kubelet
        .node_unprepare_resources(v1::NodeUnprepareResourcesRequest { claims: vec![the_claim] })
        .await
        .map_err(|e| format!("{what}: unprepare: {e}"))?
        .into_inner();
    if !answer.claims["uid-train"].error.is_empty() {
        return Err(format!("{what}: unprepare: {}", answer.claims["uid-train"].error));
    }
    let left = reported_as_it_is(&daemon, what).await?;
    if !left.is_empty() {
        return Err(format!("{what}: unprepare left {left:?}"));
    }
    Ok(Prepared { before, after })
}

/// `tessera admin health clear 0`, the daemon's own recovery for a GPU it holds out.
fn clear(d: &Daemon, what: &str) -> Result<(), String> {
    let (code, _, err) = d.cli(&["admin", "health", "clear", "0"]);
    if code == 0 { Ok(()) } else { Err(format!("{what}: admin health clear: {err}")) }
}

/// How many faults needed an admin's clear before the retry could prepare.
static QUARANTINED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A runtime of its own per worker, with a second thread to serve the API server while the
/// test blocks on the CLI.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

#[test]
fn every_nvml_call_of_a_dra_prepare_failed_with_each_code() {
    let t0 = Instant::now();
    let full = std::env::var("TESSERA_FAULT_SWEEP").is_ok_and(|v| v == "full");
    let dir = tempfile::tempdir().unwrap();
    let calls = dir.path().join("calls");
    let census = runtime()
        .block_on(run(&[("TESSERA_STANDIN_CALLS", calls.to_str().unwrap())], Some(&calls), "census"))
        .unwrap_or_else(|e| panic!("{e}"));
    // The calls the prepare made: (function, first, last), counted from the node agent's start.
    let mut faults = Vec::new();
    let mut functions = 0;
    for (function, &after) in &census.after {
        let before = census.before.get(function).copied().unwrap_or(0);
        if after == before {
            continue;
        }
        functions += 1;
        let mut calls = vec![before + 1, after];
        calls.dedup();
        let codes = sweep_codes(function, full);
        for nth in calls {
            for code in &codes {
                faults.push(format!("{function}:{nth}={code}"));
            }
        }
    }
    assert!(
        census.after.keys().any(|f| f.contains("CreateGpuInstance")) && functions > 3,
        "the prepare made no instance: {:?} → {:?}",
        census.before,
        census.after
    );
    let total = faults.len();
    let queue = Mutex::new(faults);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| {
                let rt = runtime();
                loop {
                    let Some(fault) = queue.lock().unwrap().pop() else { break };
                    let r = rt.block_on(run(&[("TESSERA_STANDIN_FAULTS", fault.as_str())], None, &fault));
                    if let Err(e) = r {
                        failures.lock().unwrap().push(e);
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    println!(
        "{functions} functions called by the prepare, {total} faults, {} failed, {} needed an admin's health clear, in {:.0?}",
        failures.len(),
        QUARANTINED.load(std::sync::atomic::Ordering::Relaxed),
        t0.elapsed()
    );
    assert!(failures.is_empty(), "{} of {total} faults broke a promise:\n{}", failures.len(), failures.join("\n---\n"));
}
