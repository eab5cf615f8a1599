//! The repartitioning decision: tables of clusters and pending pods, and properties over random
//! clusters (no busy instance destroyed, valid targets, determinism, more pods placeable).

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use tessera_kube_core::repartition::{instance_resource, wanted_for_resource};
use tessera_kube_core::{
    Decision, GpuMode, MigConfigLabel, NodeGpu, NodeRefusalKind, NodeState, PendingPod, Policy, UnplaceableReason,
    apply_changes, decide,
};
use tessera_mig::{CurrentInstance, Instance, WantedInstance, catalog, validate};

/// A GPU from a compact layout: `""` (MIG on, empty), `"1g.10gb@0*, 3g.40gb@4"` (`*`: a running
/// pod holds it), `"whole"` / `"whole*"` (MIG off).
fn gpu(index: u32, model: &str, layout: &str) -> NodeGpu {
    let mode = match layout.trim() {
        "whole" => GpuMode::Whole { busy: false },
        "whole*" => GpuMode::Whole { busy: true },
        text => {
            let m = catalog().model(model).expect("a catalog model");
            let instances = text
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(|t| {
                    let (busy, t) = match t.strip_suffix('*') {
                        Some(t) => (true, t),
                        None => (false, t),
                    };
                    let (name, start) = t.split_once('@').expect("PROFILE@START");
                    let p = m.profile(name).expect("a profile of the model");
                    CurrentInstance {
                        instance: Instance::new(p.id, start.parse().expect("a start")),
                        busy,
                        gpu_instance_id: None,
                    }
                })
                .collect();
            GpuMode::Mig { instances }
        }
    };
    NodeGpu { index, model: model.to_string(), mode, unhealthy: false, draining: false }
}

fn node(name: &str, gpus: Vec<NodeGpu>) -> NodeState {
    NodeState { name: name.to_string(), gpus, mig_config: None }
}

fn labelled(mut n: NodeState, config: &str, allows_on_demand: bool) -> NodeState {
    n.mig_config = Some(MigConfigLabel { name: config.to_string(), allows_on_demand });
    n
}

fn pod(name: &str, created_ms: u64, requests: &[(&str, u32)]) -> PendingPod {
    PendingPod {
        namespace: "team".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        created_ms,
        requests: requests.iter().map(|(r, c)| ((*r).to_string(), *c)).collect(),
    }
}

const MIG_1G10: &str = "nvidia.com/mig-1g.10gb";
const MIG_2G20: &str = "nvidia.com/mig-2g.20gb";
const MIG_3G40: &str = "nvidia.com/mig-3g.40gb";
const MIG_3G20: &str = "nvidia.com/mig-3g.20gb";
const MIG_1G5: &str = "nvidia.com/mig-1g.5gb";
const MIG_7G80: &str = "nvidia.com/mig-7g.80gb";
const GPU: &str = "nvidia.com/gpu";

fn placed_names(d: &Decision) -> Vec<String> {
    d.placed.iter().map(|p| p.pod.name.clone()).collect()
}

fn unplaceable_names(d: &Decision) -> Vec<String> {
    d.unplaceable.iter().map(|u| u.pod.name.clone()).collect()
}

/// Every invariant a decision must keep, checked against its input (used by tables and properties).
fn check_invariants(nodes: &[NodeState], pending: &[PendingPod], d: &Decision) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    for ch in &d.changes {
        if !seen.insert((ch.node.clone(), ch.gpu)) {
            return Err(format!("two changes for {} GPU {}", ch.node, ch.gpu));
        }
        let n = nodes.iter().find(|n| n.name == ch.node).ok_or("change on an unknown node")?;
        let g = n.gpus.iter().find(|g| g.index == ch.gpu).ok_or("change on an unknown GPU")?;
        if let Some(c) = &n.mig_config
            && !c.allows_on_demand
        {
            return Err(format!("changed {} although its mig.config {} forbids it", n.name, c.name));
        }
        if g.unhealthy || g.draining {
            return Err(format!("changed unhealthy or draining GPU {} on {}", g.index, n.name));
        }
        let model = catalog().model(&ch.model).map_err(|e| e.to_string())?;
        let GpuMode::Mig { instances } = &g.mode else { return Err("changed a whole GPU".into()) };
        for c in instances.iter().filter(|c| c.busy) {
            if ch.destroys.contains(&c.instance) || !ch.target.contains(&c.instance) || ch.disable_mig {
                return Err(format!("busy instance {:?} on {} GPU {} not kept", c.instance, n.name, g.index));
            }
        }
        let v = validate(model, &ch.target);
        if !v.is_empty() {
            return Err(format!("target on {} GPU {} not valid: {v:?}", n.name, g.index));
        }
        // Creates and destroys lead exactly from the layout to the target.
        let mut after: BTreeSet<Instance> = instances.iter().map(|c| c.instance).collect();
        for i in &ch.destroys {
            after.remove(i);
        }
        after.extend(ch.creates.iter().copied());
        if after != ch.target.iter().copied().collect::<BTreeSet<_>>() {
            return Err(format!("creates/destroys do not reach the target on {} GPU {}", n.name, g.index));
        }
    }
    // Every pod is either placed or unplaceable, once.
    let mut decided: Vec<String> = d.placed.iter().map(|p| p.pod.uid.clone()).collect();
    decided.extend(d.unplaceable.iter().map(|u| u.pod.uid.clone()));
    decided.sort();
    let mut uids: Vec<String> = pending.iter().map(|p| p.uid.clone()).collect();
    uids.sort();
    if decided != uids {
        return Err(format!("pods decided {decided:?} but pending {uids:?}"));
    }
    // Once the changes are made, the placed pods' devices all exist, are free, and none is used twice.
    let after = apply_changes(nodes, &d.changes);
    let mut used = BTreeSet::new();
    for pl in &d.placed {
        let p = pending.iter().find(|p| p.uid == pl.pod.uid).ok_or("placed an unknown pod")?;
        let mut got: BTreeMap<String, u32> = BTreeMap::new();
        let n = after.iter().find(|n| n.name == pl.node).ok_or("placed on an unknown node")?;
        for dev in &pl.devices {
            *got.entry(dev.resource.clone()).or_default() += 1;
            let g = n.gpus.iter().find(|g| g.index == dev.gpu).ok_or("device on an unknown GPU")?;
            if g.unhealthy || g.draining {
                return Err(format!("{} got a device on unhealthy GPU {}", pl.pod, g.index));
            }
            if !used.insert((pl.node.clone(), dev.gpu, dev.instance)) {
                return Err(format!("device {:?} on {} GPU {} given twice", dev.instance, pl.node, dev.gpu));
            }
            match (&g.mode, dev.instance) {
                (GpuMode::Whole { busy: false }, None) if dev.resource == GPU => {}
                (GpuMode::Mig { instances }, Some(i)) => {
                    let c = instances.iter().find(|c| c.instance == i).ok_or("device not in the new layout")?;
                    let model = catalog().model(&g.model).map_err(|e| e.to_string())?;
                    if c.busy || instance_resource(model, &i).as_deref() != Some(dev.resource.as_str()) {
                        return Err(format!("device {i:?} of {} is busy or of another resource", pl.pod));
                    }
                }
                other => return Err(format!("device of {} does not exist: {other:?}", pl.pod)),
            }
        }
        let wanted: BTreeMap<String, u32> =
            p.requests.iter().filter(|(_, c)| **c > 0).map(|(r, c)| (r.clone(), *c)).collect();
        if got != wanted {
            return Err(format!("{} asked {wanted:?} but got {got:?}", pl.pod));
        }
    }
    Ok(())
}

/// The nodes with every node's layout fixed: what free devices alone can hold.
fn locked(nodes: &[NodeState]) -> Vec<NodeState> {
    nodes.iter().cloned().map(|n| labelled(n, "locked", false)).collect()
}

#[test]
fn one_pending_pod_on_an_idle_gpu_gets_one_new_instance() {
    let nodes = vec![node("n1", vec![gpu(0, "H100-80GB", "")])];
    let d = decide(&[pod("a", 5, &[(MIG_1G10, 1)])], &nodes, &Policy::default(), 1_005);
    check_invariants(&nodes, &[pod("a", 5, &[(MIG_1G10, 1)])], &d).unwrap();
    assert_eq!(d.changes.len(), 1);
    let ch = &d.changes[0];
    assert_eq!((ch.node.as_str(), ch.gpu, ch.destroys.len(), ch.creates.len()), ("n1", 0, 0, 1));
    assert_eq!(ch.for_pods[0].name, "a");
    assert_eq!(d.placed.len(), 1);
    assert!(d.placed[0].needs_change());
    assert_eq!(d.placed[0].waited_ms, 1_000);
}

#[test]
fn free_devices_are_used_before_anything_changes() {
    let nodes =
        vec![node("n1", vec![gpu(0, "H100-80GB", "")]), node("n2", vec![gpu(0, "H100-80GB", "1g.10gb@6, 3g.40gb@0*")])];
    let pending = [pod("a", 1, &[(MIG_1G10, 1)])];
    let d = decide(&pending, &nodes, &Policy::default(), 10);
    check_invariants(&nodes, &pending, &d).unwrap();
    assert!(d.changes.is_empty(), "{:?}", d.changes);
    assert_eq!(d.placed[0].node, "n2");
    assert!(!d.placed[0].needs_change());
}

/// Ten pods of mixed profiles on three nodes of H100s and A100s with busy instances: all placed,
/// no busy instance touched, at most one change per GPU.
#[test]
fn ten_mixed_pods_over_three_nodes_all_become_placeable() {
    let nodes = vec![
        node(
            "h100-a",
            vec![gpu(0, "H100-80GB", "3g.40gb@4*, 1g.10gb@0*"), gpu(1, "H100-80GB", "1g.10gb@0, 1g.10gb@1")],
        ),
        node("h100-b", vec![gpu(0, "H100-80GB", "4g.40gb@0*"), gpu(1, "H100-80GB", "2g.20gb@2*")]),
        node("a100-c", vec![gpu(0, "A100-40GB", "3g.20gb@4*"), gpu(1, "A100-40GB", "")]),
    ];
    let pending = [
        pod("p0", 10, &[(MIG_3G40, 1)]),
        pod("p1", 11, &[(MIG_1G10, 2)]),
        pod("p2", 12, &[(MIG_2G20, 1)]),
        pod("p3", 13, &[(MIG_3G20, 1)]),
        pod("p4", 14, &[(MIG_1G5, 1)]),
        pod("p5", 15, &[(MIG_1G10, 1)]),
        pod("p6", 16, &[(MIG_2G20, 1), (MIG_1G10, 1)]),
        pod("p7", 17, &[(MIG_1G5, 2)]),
        pod("p8", 18, &[(MIG_3G40, 1)]),
        pod("p9", 19, &[(MIG_1G10, 1)]),
    ];
    let d = decide(&pending, &nodes, &Policy::default(), 100);
    check_invariants(&nodes, &pending, &d).unwrap();
    assert!(d.unplaceable.is_empty(), "{:?}", d.unplaceable);
    assert_eq!(d.placed.len(), 10);
    // Free devices first: the oldest pod wanting two 1g.10gb takes the two idle ones on h100-a GPU 1.
    assert_eq!((d.placed[0].pod.name.as_str(), d.placed[0].needs_change()), ("p1", false));
    // Then largest first (compute slices, then memory): both 3g.40gb pods, the 2g.20gb + 1g.10gb
    // pod (3 slices, 30 GB), then the 3g.20gb pod (3 slices, 20 GB), before any smaller one.
    let changed: Vec<&str> = d.placed.iter().filter(|p| p.needs_change()).map(|p| p.pod.name.as_str()).collect();
    assert_eq!(&changed[..4], ["p0", "p8", "p6", "p3"]);
    // And applying the changes leaves every placed pod's devices free for it: nothing more to do.
    let after = apply_changes(&nodes, &d.changes);
    let again = decide(&pending, &locked(&after), &Policy::default(), 100);
    assert_eq!(again.placed.len(), 10, "{:?}", again.unplaceable);
}

#[test]
fn a_labelled_node_is_left_alone_unless_its_config_allows_on_demand() {
    let pending = [pod("a", 1, &[(MIG_3G40, 1)])];
    let fixed = vec![labelled(node("n1", vec![gpu(0, "H100-80GB", "1g.10gb@0")]), "all-1g.10gb", false)];
    let d = decide(&pending, &fixed, &Policy::default(), 1);
    check_invariants(&fixed, &pending, &d).unwrap();
    assert!(d.changes.is_empty());
    let reason = d.unplaceable[0].reason.to_string();
    assert!(reason.contains("nvidia.com/mig.config=all-1g.10gb does not allow on-demand changes"), "{reason}");

    // Its free devices are still used.
    let small = [pod("b", 1, &[(MIG_1G10, 1)])];
    let d = decide(&small, &fixed, &Policy::default(), 1);
    assert_eq!(placed_names(&d), ["b"]);
    assert!(d.changes.is_empty());

    let allowed = vec![labelled(node("n1", vec![gpu(0, "H100-80GB", "1g.10gb@0")]), "dynamic", true)];
    let d = decide(&pending, &allowed, &Policy::default(), 1);
    check_invariants(&allowed, &pending, &d).unwrap();
    assert_eq!(d.changes.len(), 1);
}

#[test]
fn an_impossible_pod_is_reported_with_its_reason() {
    struct Case {
        what: &'static str,
        requests: &'static [(&'static str, u32)],
        expect: &'static str,
    }
    let nodes = vec![node("n1", vec![gpu(0, "H100-80GB", "1g.10gb@6*"), gpu(1, "A100-40GB", "whole*")])];
    let cases = [
        Case {
            what: "busy instance in the way",
            requests: &[(MIG_7G80, 1)],
            expect: "no free nvidia.com/mig-7g.80gb, and no GPU can make one without touching a busy instance (GPU 0:",
        },
        Case {
            what: "profile of no model",
            requests: &[("nvidia.com/mig-9g.99gb", 1)],
            expect: "requests.nvidia.com/mig-9g.99gb: no GPU model in Tessera's catalog has this MIG device",
        },
        Case {
            what: "profile not on this node",
            requests: &[(MIG_1G5, 1)],
            expect: "n1: no GPU here offers nvidia.com/mig-1g.5gb",
        },
        Case {
            what: "a shared resource",
            requests: &[("nvidia.com/gpu.shared", 1)],
            expect: "requests.nvidia.com/gpu.shared: not a whole-GPU or MIG resource",
        },
        Case { what: "no GPU at all", requests: &[("cpu", 4)], expect: "requests no nvidia.com/gpu" },
        Case {
            what: "more than a node holds",
            requests: &[(MIG_1G10, 100)],
            expect: "asks for 100 GPU devices but the largest node can hold at most 8",
        },
        Case {
            what: "whole GPU, none idle",
            requests: &[(GPU, 1)],
            expect: "no free nvidia.com/gpu, and no MIG GPU whose instances are all idle",
        },
    ];
    for c in cases {
        let pending = [pod("x", 1, c.requests)];
        let d = decide(&pending, &nodes, &Policy::default(), 1);
        check_invariants(&nodes, &pending, &d).unwrap();
        assert!(d.changes.is_empty(), "{}", c.what);
        let reason = d.unplaceable.first().map(|u| u.reason.to_string()).unwrap_or_default();
        assert!(reason.contains(c.expect), "{}: {reason}", c.what);
    }
}

#[test]
fn a_whole_gpu_pod_turns_an_idle_mig_gpu_whole_only_when_the_policy_allows() {
    let nodes = vec![node("n1", vec![gpu(0, "A100-40GB", "1g.5gb@0*"), gpu(1, "A100-40GB", "1g.5gb@0, 3g.20gb@4")])];
    let pending = [pod("w", 1, &[(GPU, 1)])];
    let d = decide(&pending, &nodes, &Policy::default(), 1);
    check_invariants(&nodes, &pending, &d).unwrap();
    assert!(d.changes.is_empty());
    match &d.unplaceable[0].reason {
        UnplaceableReason::NoNode { refusals } => {
            assert_eq!(refusals[0].why, NodeRefusalKind::MigModeChangeOff { gpus: "1".into() });
        }
        other => panic!("{other:?}"),
    }
    let d = decide(&pending, &nodes, &Policy { allow_mig_mode_changes: true }, 1);
    check_invariants(&nodes, &pending, &d).unwrap();
    assert_eq!(d.changes.len(), 1);
    let ch = &d.changes[0];
    assert!(ch.disable_mig && ch.needs_gpu_reset && ch.target.is_empty());
    assert_eq!((ch.gpu, ch.destroys.len()), (1, 2));
}

#[test]
fn fifo_within_a_size_and_largest_first() {
    // Room for one 3g.40gb only (a busy 4g.40gb holds the other half).
    let nodes = vec![node("n1", vec![gpu(0, "H100-80GB", "4g.40gb@0*")])];
    /// What the case shows, the pods, the pods placed, the pods left.
    type Case = (&'static str, Vec<PendingPod>, &'static [&'static str], &'static [&'static str]);
    let cases: [Case; 3] = [
        (
            "older first, whatever the input order",
            vec![pod("young", 20, &[(MIG_3G40, 1)]), pod("old", 10, &[(MIG_3G40, 1)])],
            &["old"],
            &["young"],
        ),
        (
            "larger before smaller, even when younger",
            vec![pod("small", 1, &[(MIG_2G20, 1), (MIG_1G10, 1)]), pod("big", 50, &[(MIG_3G40, 1)])],
            &["big"],
            &["small"],
        ),
        (
            "same size, same time: by name",
            vec![pod("b", 5, &[(MIG_3G40, 1)]), pod("a", 5, &[(MIG_3G40, 1)])],
            &["a"],
            &["b"],
        ),
    ];
    for (what, pending, placed, left) in cases {
        let d = decide(&pending, &nodes, &Policy::default(), 100);
        check_invariants(&nodes, &pending, &d).unwrap();
        assert_eq!(placed_names(&d), placed, "{what}");
        assert_eq!(unplaceable_names(&d), left, "{what}");
    }
}

#[test]
fn the_gpu_that_strands_least_then_destroys_least_is_chosen() {
    // GPU 0: idle 1g.10gb instances everywhere (a 2g needs two destroyed); GPU 1: a busy 4g
    // leaves room for a 2g without destroying anything.
    let nodes = vec![node(
        "n1",
        vec![
            gpu(0, "H100-80GB", "1g.10gb@0, 1g.10gb@1, 1g.10gb@2, 1g.10gb@3, 1g.10gb@4, 1g.10gb@5, 1g.10gb@6"),
            gpu(1, "H100-80GB", "4g.40gb@0*"),
        ],
    )];
    let pending = [pod("a", 1, &[(MIG_2G20, 1)])];
    let d = decide(&pending, &nodes, &Policy::default(), 1);
    check_invariants(&nodes, &pending, &d).unwrap();
    assert_eq!(d.changes.len(), 1);
    assert_eq!((d.changes[0].gpu, d.changes[0].destroys.len()), (1, 0));
}

#[test]
fn resource_names_and_profiles_map_both_ways() {
    let h100 = catalog().model("H100-80GB").unwrap();
    for (resource, profile) in
        [(MIG_1G10, "1g.10gb"), ("nvidia.com/mig-1g.10gb.me", "1g.10gb+me"), (MIG_7G80, "7g.80gb")]
    {
        let w = wanted_for_resource(h100, resource).unwrap_or_else(|| panic!("{resource}"));
        assert_eq!(w, WantedInstance::new(h100.profile(profile).unwrap().id));
        let start = h100.profile(profile).unwrap().placements[0];
        assert_eq!(instance_resource(h100, &Instance::new(w.profile_id, start)).as_deref(), Some(resource));
    }
    assert_eq!(wanted_for_resource(h100, MIG_1G5), None);
}

// ---- properties ----

const MODELS: [&str; 3] = ["H100-80GB", "A100-40GB", "A100-80GB"];

/// A random valid layout: profiles tried in turn, each placed by the planner if it fits.
fn random_gpu(index: u32, model_i: usize, tries: &[(usize, bool)], whole: Option<bool>, sick: bool) -> NodeGpu {
    let name = MODELS[model_i % MODELS.len()];
    let model = catalog().model(name).unwrap();
    let mode = match whole {
        Some(busy) => GpuMode::Whole { busy },
        None => {
            let mut instances: Vec<CurrentInstance> = Vec::new();
            for &(p, busy) in tries {
                let profile = &model.profiles[p % model.profiles.len()];
                let existing: Vec<Instance> = instances.iter().map(|c| c.instance).collect();
                if let Ok(pl) = tessera_mig::place(model, &[WantedInstance::new(profile.id)], &existing) {
                    instances.push(CurrentInstance { instance: pl.placed[0], busy, gpu_instance_id: None });
                }
            }
            GpuMode::Mig { instances }
        }
    };
    NodeGpu { index, model: name.to_string(), mode, unhealthy: sick, draining: false }
}

const RESOURCES: [&str; 9] = [
    MIG_1G10,
    MIG_2G20,
    MIG_3G40,
    MIG_7G80,
    MIG_1G5,
    MIG_3G20,
    "nvidia.com/mig-4g.40gb",
    "nvidia.com/mig-1g.10gb.me",
    GPU,
];

type GpuSeed = (usize, Vec<(usize, bool)>, Option<bool>, bool);

fn cluster_strategy() -> impl Strategy<Value = (Vec<NodeState>, Vec<PendingPod>, bool)> {
    let gpu_s = (
        0..3usize,
        prop::collection::vec((0..12usize, any::<bool>()), 0..6),
        prop::option::weighted(0.15, any::<bool>()),
        prop::bool::weighted(0.1),
    );
    let node_s = (prop::collection::vec(gpu_s, 1..4), prop::option::weighted(0.3, any::<bool>()));
    let pod_s = (prop::collection::vec((0..RESOURCES.len(), 1..3u32), 1..3), 0..5u64);
    (prop::collection::vec(node_s, 1..4), prop::collection::vec(pod_s, 0..8), any::<bool>()).prop_map(
        |(nodes, pods, mode_changes)| {
            let nodes = nodes
                .into_iter()
                .enumerate()
                .map(|(n, (gpus, label)): (usize, (Vec<GpuSeed>, Option<bool>))| NodeState {
                    name: format!("node-{n}"),
                    gpus: gpus
                        .into_iter()
                        .enumerate()
                        .map(|(g, (m, tries, whole, sick))| {
                            random_gpu(u32::try_from(g).unwrap(), m, &tries, whole, sick)
                        })
                        .collect(),
                    mig_config: label.map(|allows| MigConfigLabel { name: "cfg".into(), allows_on_demand: allows }),
                })
                .collect();
            let pods = pods
                .into_iter()
                .enumerate()
                .map(|(i, (reqs, created))| PendingPod {
                    namespace: "ns".into(),
                    name: format!("pod-{i}"),
                    uid: format!("uid-{i}"),
                    created_ms: created,
                    requests: reqs.into_iter().map(|(r, c)| (RESOURCES[r].to_string(), c)).collect(),
                })
                .collect();
            (nodes, pods, mode_changes)
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// No busy instance destroyed or moved, every target valid, one change per GPU, no labelled
    /// node changed, and once the changes are made every placed pod's devices exist and are free.
    #[test]
    fn decisions_keep_every_invariant((nodes, pods, mode) in cluster_strategy()) {
        let d = decide(&pods, &nodes, &Policy { allow_mig_mode_changes: mode }, 1_000);
        if let Err(e) = check_invariants(&nodes, &pods, &d) {
            return Err(TestCaseError::fail(format!("{e}\n{d:#?}")));
        }
    }

    /// The same input gives the same decision, whatever order nodes, GPUs and pods come in.
    #[test]
    fn decisions_are_deterministic((nodes, pods, mode) in cluster_strategy()) {
        let policy = Policy { allow_mig_mode_changes: mode };
        let d = decide(&pods, &nodes, &policy, 7);
        prop_assert_eq!(&d, &decide(&pods, &nodes, &policy, 7));
        let mut shuffled = nodes.clone();
        shuffled.reverse();
        for n in &mut shuffled {
            n.gpus.reverse();
        }
        let mut pods_rev = pods.clone();
        pods_rev.reverse();
        prop_assert_eq!(&d, &decide(&pods_rev, &shuffled, &policy, 7));
    }

    /// Applying the changes makes at least as many pods placeable as the free devices alone did.
    #[test]
    fn changes_make_at_least_as_many_pods_placeable((nodes, pods, mode) in cluster_strategy()) {
        let d = decide(&pods, &nodes, &Policy { allow_mig_mode_changes: mode }, 0);
        let before = decide(&pods, &locked(&nodes), &Policy::default(), 0).placed.len();
        prop_assert!(d.placed.len() >= before, "{} placed but {} were placeable before", d.placed.len(), before);
        // And the placed pods are placeable together once the changes are made: their devices
        // all exist, free, none given twice. (A greedy re-run over the new layouts is no measure:
        // largest first, a bigger pod may now take what two smaller ones were given.)
        if let Err(e) = check_invariants(&nodes, &pods, &d) {
            return Err(TestCaseError::fail(e));
        }
    }
}
