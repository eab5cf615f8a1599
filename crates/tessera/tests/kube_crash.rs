//! The crash loop of the Kubernetes node agent (issue 16, item 2): the real `tessera kube
//! node-agent` (the daemon with the device plugin and the label workflow in one process) on a
//! simulated node whose MIG operations take 200 ms each, against the stand-in API server, the
//! kubelet stand-in (registration, `ListAndWatch`, `Allocate`) and the PodResources stand-in, with
//! the real `tessera kube controller` deciding layouts for pending pods. The agent is killed with
//! SIGKILL at a random moment of every round and restarted, while pods come and go: pending pods
//! ask for profiles the layout lacks (so kills land in repartitions and in the node report's
//! publication), the kubelet stand-in allocates advertised devices to them (so kills land in
//! `Allocate`), and pods end. Afterwards:
//! - every pod that was admitted got its device from exactly one successful `Allocate`, and the
//!   engine named exactly one hold after it across all restarts (none adopted twice);
//! - every live pod's device is held by the engine for that pod and no other hold, no ended pod
//!   holds anything, no provisional hold is left, no instance has two holds;
//! - the daemon's instances are the simulated node's (nothing leaked or forgotten), the
//!   kubelet is offered exactly those devices, and the node report agrees with both;
//! - the journal has no open reconfiguration;
//! - GPU 1's fault and drain, set before the first kill, are as they were.
//!
//! `KILLS` (default 6) sets the number of kills; the full run of docs/reliability.md is
//! `KILLS=100 cargo test -p tessera --test kube_crash -- --nocapture`.

mod common;
#[path = "../../tessera-kube/tests/common/mod.rs"]
mod kube_common;
#[allow(dead_code)]
#[path = "../../tessera-deviceplugin/tests/common/kubelet.rs"]
mod kubelet;
#[path = "../../tessera-deviceplugin/tests/common/podresources.rs"]
mod podresources;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Daemon;
use kube_common::apiserver::{ApiServer, Kind};
use kube_common::{NAMESPACE, node, pod, wait_for};
use kubelet::Kubelet;
use podresources::{Held, PodResourcesStandIn};
use serde_json::Value;
use tessera_kube::ReportedLayout;
use tessera_kube::annotations::{ApplyState, NODE_REPORT, NodeReport, read_annotation};

const NODE: &str = "gpu-1";
const SPEC: &str = "2xH100-80GB,numa=1,cpus=16,mig-op-ms=200";
/// The profiles pending pods ask for.
const PROFILES: [&str; 4] = ["3g.40gb", "2g.20gb", "1g.10gb", "4g.40gb"];
/// How long the end state may take to settle (a provisional hold of a failed `Allocate` is
/// released 60 s after it was made).
const SETTLE: Duration = Duration::from_secs(90);

/// A small deterministic generator (xorshift), seeded from `SEED` or the clock; the seed is
/// printed so a failing run can be repeated.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The `[kubernetes]` section: the stand-ins in `dir`, the API server at `url`.
fn kubernetes(dir: &Path, url: &str) -> String {
    format!(
        "[kubernetes]\ndevice_plugin_dir = \"{0}/device-plugins\"\npod_resources_socket = \"{0}/pod-resources.sock\"\n\
         pod_resources_interval_ms = 100\ncdi_dir = \"{0}/cdi\"\nmig_strategy = \"mixed\"\napi_server = \"{url}\"\n",
        dir.display()
    )
}

fn resource(profile: &str) -> String {
    format!("nvidia.com/mig-{profile}")
}

/// `tessera kube controller`, killed when dropped (it is not the process under test).
struct Controller(Child);

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One pod of the run.
#[derive(Debug, Clone)]
struct PodRun {
    profile: String,
    /// Its device once an `Allocate` succeeded.
    device: Option<String>,
    /// `Allocate` calls answered with devices, and refused or failed.
    allocated: u32,
    failed: u32,
    ended: bool,
}

/// The run's pods and what the kubelet (the test) believes.
struct Cluster {
    api: ApiServer,
    kubelet: Kubelet,
    pods: PodResourcesStandIn,
    runs: BTreeMap<String, PodRun>,
    /// `Allocate` calls that failed, by gRPC code (a kill: `Unavailable`/`Unknown`; a device
    /// still held by an earlier, unanswered `Allocate`: `FailedPrecondition`).
    failures: BTreeMap<String, u32>,
}

impl Cluster {
    fn live(&self) -> impl Iterator<Item = (&String, &PodRun)> {
        self.runs.iter().filter(|(_, r)| r.device.is_some() && !r.ended)
    }

    fn pending(&self) -> Vec<String> {
        self.runs.iter().filter(|(_, r)| r.device.is_none() && !r.ended).map(|(n, _)| n.clone()).collect()
    }

    /// What the kubelet's PodResources lists: the live pods with their devices.
    fn publish(&self) {
        let held = self
            .live()
            .map(|(name, r)| {
                Held::new(
                    &format!("default/{name}/main"),
                    &resource(&r.profile),
                    &[r.device.as_deref().unwrap_or_default()],
                )
            })
            .collect();
        self.pods.set(held);
    }

    fn create(&mut self, name: String, profile: &str) {
        self.api.put(&pod(&name, &[(&resource(profile), 1)], None));
        self.runs
            .insert(name, PodRun { profile: profile.to_string(), device: None, allocated: 0, failed: 0, ended: false });
    }

    fn end(&mut self, name: &str) {
        if let Some(r) = self.runs.get_mut(name) {
            r.ended = true;
        }
        self.publish();
        self.api.delete(Kind::Pod, "default", name);
    }

    /// The devices of `profile` the kubelet may give: advertised, healthy, and not a live pod's.
    fn free(&self, profile: &str) -> Vec<String> {
        let used: BTreeSet<String> = self.live().filter_map(|(_, r)| r.device.clone()).collect();
        self.kubelet.seen(|s| {
            let Some(r) = s.resources.get(&resource(profile)).filter(|r| r.streaming) else { return Vec::new() };
            r.devices()
                .unwrap_or_default()
                .iter()
                .filter(|d| d.health == "Healthy" && !used.contains(&d.id))
                .map(|d| d.id.clone())
                .collect()
        })
    }

    /// Admits the pending pods whose profile has a free device, as the kubelet does: one
    /// `Allocate`; a refusal or a failure leaves the pod pending (the kubelet asks again later).
    async fn admit(&mut self, rng: &mut Rng) {
        for name in self.pending() {
            let profile = self.runs[&name].profile.clone();
            let free = self.free(&profile);
            if free.is_empty() {
                continue;
            }
            let id = free[rng.below(free.len() as u64) as usize].clone();
            let answer = self.kubelet.allocate(&resource(&profile), &[&id]).await;
            let r = self.runs.get_mut(&name).unwrap();
            match answer {
                Ok(_) => {
                    r.allocated += 1;
                    r.device = Some(id);
                    self.publish();
                    self.api.put(&pod(&name, &[(&resource(&profile), 1)], Some(NODE)));
                }
                Err(e) => {
                    r.failed += 1;
                    *self.failures.entry(format!("{:?}", e.code())).or_default() += 1;
                }
            }
        }
    }
}

/// `kill -9 pid` after `delay`, on a thread of its own.
fn kill_after(pid: u32, delay: Duration) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    })
}

fn report(api: &ApiServer) -> Option<NodeReport> {
    read_annotation(NODE, api.node(NODE).metadata.annotations.as_ref(), NODE_REPORT).ok().flatten()
}

/// Every instance of the daemon's layout: (GPU, profile id, start) → its JSON.
fn instances(gpus: &Value) -> BTreeMap<(u64, u64, u64), Value> {
    let mut out = BTreeMap::new();
    for g in gpus["gpus"].as_array().into_iter().flatten() {
        for i in g["instances"].as_array().into_iter().flatten() {
            let key = (
                g["index"].as_u64().unwrap_or(99),
                i["profile_id"].as_u64().unwrap_or(99),
                i["start"].as_u64().unwrap_or(99),
            );
            out.insert(key, i.clone());
        }
    }
    out
}

/// The Kubernetes holds on each MIG device: device → hold keys.
fn kube_holds(gpus: &Value) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for i in instances(gpus).values() {
        let keys: Vec<String> = i["occupants"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|o| o["external"]["door"] == "kubernetes")
            .map(|o| o["external"]["key"].as_str().unwrap_or_default().to_string())
            .collect();
        out.insert(i["mig_uuid"].as_str().unwrap_or_default().to_string(), keys);
    }
    out
}

/// GPU 1's health and drain reason, as `tessera gpus` shows them.
fn gpu1(d: &Daemon) -> String {
    let gpus: Value = serde_json::from_str(&d.ok(&["gpus", "-o", "json"])).unwrap();
    let g = &gpus["gpus"][1];
    format!(
        "{} {}",
        g["health"].as_str().unwrap_or_default().split(':').next().unwrap_or_default(),
        g["drained"]["reason"].as_str().unwrap_or("-")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_node_agent_killed_at_random_loses_nothing_and_holds_nothing_twice() {
    let kills: u32 = std::env::var("KILLS").ok().and_then(|k| k.parse().ok()).unwrap_or(6);
    let seed = std::env::var("SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        u64::try_from(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() % (1 << 62),
        )
        .unwrap()
            | 1
    });
    eprintln!("kube-crash: {kills} kills, SEED={seed}");
    let mut rng = Rng(seed);

    let base = tempfile::tempdir().unwrap();
    for sub in ["device-plugins", "cdi"] {
        std::fs::create_dir(base.path().join(sub)).unwrap();
    }
    let api = ApiServer::start().await;
    api.put(&kube_common::config_map());
    api.put(&node(NODE, &[("nvidia.com/gpu.present", "true")]));
    let kubelet = Kubelet::start(&base.path().join("device-plugins"));
    let pods = PodResourcesStandIn::start(&base.path().join("pod-resources.sock"));
    let mut d = Daemon::unstarted_node_agent(SPEC, &kubernetes(base.path(), api.url()));
    d.env = vec![("NODE_NAME".into(), NODE.into()), ("POD_NAMESPACE".into(), NAMESPACE.into())];
    d.spawn();
    d.ok(&["admin", "layout", "0", "3g.40gb@0,3g.40gb@4"]);
    d.ok(&["admin", "layout", "1", "7g.80gb@0"]);
    // GPU 1: a fatal Xid and a drain, which every restart must keep.
    d.sim(&["xid", "1", "48"]);
    d.ok(&["admin", "drain", "1", "--reason", "kube-crash: keep me"]);
    assert!(wait_for(20, || gpu1(&d).starts_with("unhealthy")).await, "GPU 1 is not fenced: {}", gpu1(&d));
    let gpu1_before = gpu1(&d);
    assert!(wait_for(30, || report(&api).is_some()).await, "no node report:\n{}", d.log());

    let controller_log = base.path().join("controller.log");
    let controller = Controller(
        Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(["kube", "controller", "--kube-api-url", api.url(), "--batch-window-ms", "200"])
            .env("POD_NAMESPACE", NAMESPACE)
            .env("POD_NAME", "tessera-controller-0")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&controller_log).unwrap())
            .spawn()
            .unwrap(),
    );
    let mut c = Cluster { api, kubelet, pods, runs: BTreeMap::new(), failures: BTreeMap::new() };

    let started = Instant::now();
    let mut next_pod = 0;
    for round in 1..=kills {
        // What the round does: pods end (at most three live), a pending pod comes.
        let live: Vec<String> = c.live().map(|(n, _)| n.clone()).collect();
        if !live.is_empty() && (live.len() >= 3 || rng.below(2) == 0) {
            let name = live[rng.below(live.len() as u64) as usize].clone();
            c.end(&name);
        }
        if c.pending().len() < 2 {
            next_pod += 1;
            let profile = PROFILES[rng.below(PROFILES.len() as u64) as usize];
            c.create(format!("p{next_pod}"), profile);
        }
        // The kill: at a random moment of the round's 0.2 to 2 s.
        let delay = Duration::from_millis(200 + rng.below(1800));
        let killer = kill_after(d.pid().unwrap(), delay);
        let until = Instant::now() + delay + Duration::from_millis(100);
        while Instant::now() < until {
            c.admit(&mut rng).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        killer.join().unwrap();
        d.kill9();
        d.spawn();
        if round % 10 == 0 {
            eprintln!("kube-crash: {round} kills ({} s)", started.elapsed().as_secs());
        }
    }
    eprintln!("kube-crash: {kills} kills in {} s; settling", started.elapsed().as_secs());

    // No more kills: the pending pods are admitted (the oldest live pod ends when one waits
    // long), the provisional holds of failed `Allocate`s are released.
    let settle = Instant::now();
    let mut waiting_since = Instant::now();
    loop {
        c.admit(&mut rng).await;
        if c.pending().is_empty() {
            break;
        }
        assert!(
            settle.elapsed() < SETTLE,
            "pods {:?} still pending; controller log:\n{}\ndaemon log:\n{}",
            c.pending(),
            std::fs::read_to_string(&controller_log).unwrap_or_default(),
            d.log()
        );
        if waiting_since.elapsed() > Duration::from_secs(15) {
            let oldest = c.live().map(|(n, _)| n.clone()).next();
            if let Some(oldest) = oldest {
                c.end(&oldest);
            }
            waiting_since = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("kube-crash: every pending pod admitted {} s after the last kill", settle.elapsed().as_secs());
    drop(controller);

    // The engine's holds are exactly the live pods' devices.
    let want: BTreeMap<String, Vec<String>> = {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, r) in c.live() {
            m.entry(r.device.clone().unwrap()).or_default().push(format!("default/{name}/main"));
        }
        m
    };
    let holds_now = |d: &Daemon| -> BTreeMap<String, Vec<String>> {
        let gpus: Value = serde_json::from_str(&d.ok(&["gpus", "-o", "json"])).unwrap();
        kube_holds(&gpus).into_iter().filter(|(_, k)| !k.is_empty()).collect()
    };
    let settled = wait_for(SETTLE.as_secs(), || holds_now(&d) == want).await;
    assert!(settled, "the engine holds {:?}, the live pods are {want:?}\n{}", holds_now(&d), d.log());
    eprintln!("kube-crash: the engine's holds are the live pods' {} s after the last kill", settle.elapsed().as_secs());

    let gpus: Value = serde_json::from_str(&d.ok(&["gpus", "-o", "json"])).unwrap();
    // The daemon's layout is the node's.
    let node_state: Value = serde_json::from_str(&d.sim(&["gpus", "-o", "json"])).unwrap();
    let mine: BTreeSet<_> = instances(&gpus).keys().copied().collect();
    let theirs: BTreeSet<_> = instances(&node_state).keys().copied().collect();
    assert_eq!(mine, theirs, "the daemon's instances are not the node's");
    // The kubelet is offered exactly the node's devices.
    let devices: BTreeSet<String> =
        instances(&gpus).values().filter_map(|i| i["mig_uuid"].as_str().map(str::to_string)).collect();
    let offered = |c: &Cluster| -> BTreeSet<String> {
        c.kubelet.seen(|s| {
            s.resources
                .values()
                .filter(|r| r.streaming)
                .flat_map(|r| r.devices().unwrap_or_default().iter().map(|d| d.id.clone()))
                .collect()
        })
    };
    assert!(
        wait_for(60, || offered(&c) == devices).await,
        "the kubelet is offered {:?}, the node has {devices:?}",
        offered(&c)
    );
    eprintln!(
        "kube-crash: the kubelet offered the node's devices {} s after the last kill",
        settle.elapsed().as_secs()
    );
    // The node report agrees: the layout, its holders, no change pending.
    let agrees = |r: &NodeReport| {
        let mut layout = BTreeSet::new();
        let mut holders = BTreeSet::new();
        for g in &r.gpus {
            if let ReportedLayout::Mig { instances } = &g.layout {
                for i in instances {
                    layout.insert((u64::from(g.index), u64::from(i.instance.profile_id), u64::from(i.instance.start)));
                    if let Some(p) = &i.holder {
                        holders.insert(p.name.clone());
                    }
                }
            }
        }
        let live: BTreeSet<String> = c.live().map(|(n, _)| n.clone()).collect();
        layout == mine && holders == live && r.desired.as_ref().is_none_or(|s| s.state != ApplyState::Pending)
    };
    assert!(
        wait_for(60, || report(&c.api).is_some_and(|r| agrees(&r))).await,
        "the node report {:?} disagrees with the layout {mine:?}",
        report(&c.api)
    );
    eprintln!("kube-crash: the node report agreed {} s after the last kill", settle.elapsed().as_secs());

    // Every admitted pod: one successful Allocate, one hold ever named after it.
    let jobs: Value = serde_json::from_str(&d.ok(&["jobs", "-A", "-a", "-o", "json"])).unwrap();
    let mut named: BTreeMap<String, u32> = BTreeMap::new();
    let mut provisional: BTreeSet<String> = BTreeSet::new();
    let mut provisional_running = Vec::new();
    for j in jobs["jobs"].as_array().into_iter().flatten() {
        let Some(ext) = j.get("external").filter(|e| e["door"] == "kubernetes") else { continue };
        let key = ext["key"].as_str().unwrap_or_default();
        if key.starts_with("allocated:") {
            if j["state"] == "running" {
                provisional_running.push(key.to_string());
            }
            provisional.insert(key.to_string());
        } else {
            *named.entry(key.to_string()).or_default() += 1;
        }
    }
    assert!(provisional_running.is_empty(), "provisional holds left: {provisional_running:?}");
    let mut broken = Vec::new();
    let mut unnamed = 0;
    for (name, r) in &c.runs {
        if r.device.is_none() {
            continue;
        }
        if r.allocated != 1 {
            broken.push(format!("{name}: {} successful Allocates", r.allocated));
        }
        // Named once; or never, when the pod ended before the kubelet's list was read (then
        // its `Allocate`'s provisional hold was released after the grace).
        let n = named.get(&format!("default/{name}/main")).copied().unwrap_or(0);
        let device = r.device.clone().unwrap_or_default();
        if n > 1 {
            broken.push(format!("{name}: {n} holds named after it"));
        } else if n == 0 && !(r.ended && provisional.contains(&format!("allocated:{device}"))) {
            broken.push(format!("{name}: no hold named after it, and none for its Allocate of {device}"));
        }
        unnamed += u32::from(n == 0);
    }
    assert!(broken.is_empty(), "{broken:?}");
    assert_eq!(gpu1(&d), gpu1_before, "GPU 1's health or drain changed");

    // The journal, read once the agent stopped: no reconfiguration left open.
    d.stop();
    let store = tessera_store::Store::open(&d.state()).unwrap();
    let open = store.open_reconfigs().unwrap();
    assert!(open.is_empty(), "open reconfigurations: {open:?}");
    let finished = store.finished_reconfigs().unwrap().len();
    let admitted = c.runs.values().filter(|r| r.device.is_some()).count();
    let failed: u32 = c.runs.values().map(|r| r.failed).sum();
    let log = d.log();
    println!(
        "kube-crash: {kills} kills in {} s (SEED={seed}): {} pods, {admitted} admitted, {failed} Allocates failed and \
         asked again {:?}, {} provisional holds released after the grace ({unnamed} of pods that ended before the kubelet's list named them), {finished} reconfigurations finished, {} \
         resumed at a restart",
        started.elapsed().as_secs(),
        c.runs.len(),
        c.failures,
        log.matches("the kubelet listed no container with").count(),
        log.matches("resumed reconfiguration").count()
    );
}
