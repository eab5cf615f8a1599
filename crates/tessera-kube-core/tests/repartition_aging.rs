//! The order pending pods are decided in: largest first until a pod has waited
//! `AGING_BOUND_MS`, oldest first after, so a stream of larger pods cannot starve a small one.
//!
//! Every case uses one H100 whose busy 4g.40gb holds units 0–3: the free half holds one
//! 3g.40gb or up to three smaller devices, never a 3g.40gb next to a 1g.10gb, so the order
//! decides who gets the room.

use std::collections::BTreeMap;

use tessera_kube_core::repartition::AGING_BOUND_MS;
use tessera_kube_core::{Decision, GpuMode, NodeGpu, NodeState, PendingPod, Policy, decide};
use tessera_mig::{CurrentInstance, Instance, catalog};

const MIG_1G10: &str = "nvidia.com/mig-1g.10gb";
const MIG_2G20: &str = "nvidia.com/mig-2g.20gb";
const MIG_3G40: &str = "nvidia.com/mig-3g.40gb";
const HOUR_MS: u64 = 60 * 60 * 1000;

/// One H100 with a busy 4g.40gb at placement 0 and nothing else.
fn half_busy() -> Vec<NodeState> {
    let h100 = catalog().model("H100-80GB").unwrap();
    let four = h100.profile("4g.40gb").unwrap().id;
    vec![NodeState {
        name: "n1".into(),
        gpus: vec![NodeGpu {
            index: 0,
            model: h100.name.clone(),
            mode: GpuMode::Mig {
                instances: vec![CurrentInstance {
                    instance: Instance::new(four, 0),
                    busy: true,
                    gpu_instance_id: None,
                }],
            },
            unhealthy: false,
            draining: false,
        }],
        mig_config: None,
    }]
}

fn pod(name: &str, created_ms: u64, resource: &str) -> PendingPod {
    PendingPod {
        namespace: "team".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        created_ms,
        requests: BTreeMap::from([(resource.to_string(), 1)]),
    }
}

fn placed(d: &Decision) -> Vec<&str> {
    d.placed.iter().map(|p| p.pod.name.as_str()).collect()
}

fn left(d: &Decision) -> Vec<&str> {
    d.unplaceable.iter().map(|u| u.pod.name.as_str()).collect()
}

#[test]
fn past_the_aging_bound_a_small_pod_goes_ahead_of_a_larger_one() {
    let now = 10 * HOUR_MS;
    struct Case {
        what: &'static str,
        pending: Vec<PendingPod>,
        placed: &'static [&'static str],
        left: &'static [&'static str],
    }
    let cases = [
        Case {
            what: "below the bound, larger first although the 1g is older",
            pending: vec![pod("small", now - HOUR_MS, MIG_1G10), pod("big", now - 1_000, MIG_3G40)],
            placed: &["big"],
            left: &["small"],
        },
        Case {
            what: "one millisecond short of the bound is still below it",
            pending: vec![pod("small", now - (AGING_BOUND_MS - 1), MIG_1G10), pod("big", now, MIG_3G40)],
            placed: &["big"],
            left: &["small"],
        },
        Case {
            what: "at the bound the 1g goes first",
            pending: vec![pod("small", now - AGING_BOUND_MS, MIG_1G10), pod("big", now, MIG_3G40)],
            placed: &["small"],
            left: &["big"],
        },
        Case {
            what: "past the bound, oldest first: the older 3g before the aged 1g",
            pending: vec![pod("small", now - 5 * HOUR_MS, MIG_1G10), pod("big", now - 6 * HOUR_MS, MIG_3G40)],
            placed: &["big"],
            left: &["small"],
        },
        Case {
            what: "past the bound, oldest first: the older 1g before the aged 3g",
            pending: vec![pod("small", now - 6 * HOUR_MS, MIG_1G10), pod("big", now - 5 * HOUR_MS, MIG_3G40)],
            placed: &["small"],
            left: &["big"],
        },
        Case {
            what: "the aged 1g first, then the room it leaves for younger pods, largest first",
            pending: vec![
                pod("small", now - AGING_BOUND_MS, MIG_1G10),
                pod("big", now, MIG_3G40),
                pod("mid", now, MIG_2G20),
            ],
            placed: &["small", "mid"],
            left: &["big"],
        },
    ];
    for c in cases {
        let d = decide(&c.pending, &half_busy(), &Policy::default(), now);
        assert_eq!(placed(&d), c.placed, "{}", c.what);
        assert_eq!(left(&d), c.left, "{}", c.what);
        assert!(d.changes.iter().all(|ch| ch.destroys.is_empty()), "{}: {:?}", c.what, d.changes);
    }
}

/// A stream of 3g.40gb pods, a new one every 10 minutes, each running until the next comes,
/// competes with one 1g.10gb pod for the same room. Largest first alone would give the room to
/// the newest 3g every time, forever; with the bound the 1g gets it at the first decision after it
/// has waited four hours, and not before.
#[test]
fn a_stream_of_larger_pods_delays_a_small_one_only_until_the_bound() {
    let step = 10 * 60 * 1000;
    let small = pod("small", 0, MIG_1G10);
    let mut served_at = None;
    for round in 1..=48u64 {
        let now = round * step;
        let pending = [small.clone(), pod(&format!("big-{round}"), now, MIG_3G40)];
        let d = decide(&pending, &half_busy(), &Policy::default(), now);
        if placed(&d).contains(&"small") {
            served_at = Some(now);
            break;
        }
        assert_eq!(placed(&d), [format!("big-{round}").as_str()], "round {round}");
    }
    assert_eq!(served_at, Some(AGING_BOUND_MS.div_ceil(step) * step), "the 1g is served at the bound");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 128, ..Default::default() })]

    /// With pods on both sides of the bound (waits in quarters of it, so ties are common), every
    /// pod is decided exactly once and the decision does not depend on the order the pods come in.
    #[test]
    fn aged_and_young_pods_are_decided_once_whatever_their_order(
        pods in proptest::collection::vec((0..4usize, 0..12u64), 1..12),
    ) {
        let now = 3 * AGING_BOUND_MS;
        let resources = [MIG_1G10, MIG_2G20, MIG_3G40, "nvidia.com/mig-7g.80gb"];
        let pending: Vec<PendingPod> = pods
            .iter()
            .enumerate()
            .map(|(i, &(r, quarters))| pod(&format!("p{i}"), now - quarters * AGING_BOUND_MS / 4, resources[r]))
            .collect();
        let d = decide(&pending, &half_busy(), &Policy::default(), now);
        let mut decided: Vec<&str> = placed(&d).into_iter().chain(left(&d)).collect();
        decided.sort_unstable();
        let mut names: Vec<&str> = pending.iter().map(|p| p.name.as_str()).collect();
        names.sort_unstable();
        proptest::prop_assert_eq!(decided, names);
        let mut reversed = pending.clone();
        reversed.reverse();
        proptest::prop_assert_eq!(&d, &decide(&reversed, &half_busy(), &Policy::default(), now));
    }
}
