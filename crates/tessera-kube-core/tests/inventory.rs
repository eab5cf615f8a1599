//! What each resource advertises, as a table: MIG strategies × node layouts (a split GPU
//! instance, `+me` profiles, a non-MIG GPU), health, reconfiguration and replicas.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{config, gi, health, node, summary, views};
use tessera_gpu::MigBackend;
use tessera_gpu::SimBackend;
use tessera_kube_core::{InstanceKey, NodeInput, ResourceName, build_inventory};

/// GPU 0 of an H100 node: `1g.10gb+me@0`, `1g.10gb@1`, `2g.20gb@2`, `3g.40gb@4` split into a 2c and
/// a 1c compute instance. Returns the GPU instances in that order.
fn mixed_layout(b: &SimBackend) -> Vec<(u32, u32)> {
    vec![
        (0, gi(b, 0, "1g.10gb+me", 0, &[])),
        (0, gi(b, 0, "1g.10gb", 1, &[])),
        (0, gi(b, 0, "2g.20gb", 2, &[])),
        (0, gi(b, 0, "3g.40gb", 4, &[2, 1])),
    ]
}

/// Every MIG GPU of the node cut into seven `1g.10gb`.
fn uniform_layout(b: &SimBackend) -> Vec<(u32, u32)> {
    let n = b.devices().unwrap().len() as u32;
    (0..n).flat_map(|g| (0..7).map(move |s| (g, s))).map(|(g, s)| (g, gi(b, g, "1g.10gb", s, &[]))).collect()
}

fn nothing(_: &SimBackend) -> Vec<(u32, u32)> {
    Vec::new()
}

/// GPU 1 with MIG off, GPU 0 with the mixed layout.
fn one_off(b: &SimBackend) -> Vec<(u32, u32)> {
    b.set_mig_mode(1, false).unwrap();
    mixed_layout(b)
}

struct Case {
    name: &'static str,
    spec: &'static str,
    layout: fn(&SimBackend) -> Vec<(u32, u32)>,
    config: &'static str,
    /// Positions in the layout's GPU instances with an instance fault.
    unhealthy: &'static [usize],
    /// Positions in the layout's GPU instances about to be reconfigured.
    reconfiguring: &'static [usize],
    expect: Result<&'static [(&'static str, &'static [&'static str])], &'static str>,
}

const MIXED: &str = "version: v1\nflags:\n  migStrategy: mixed\n";
const SINGLE: &str = "version: v1\nflags:\n  migStrategy: single\n";
const NONE: &str = "version: v1\n";

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "non-MIG GPUs are nvidia.com/gpu under every strategy",
            spec: "2xH100-80GB,mig=off",
            layout: nothing,
            config: MIXED,
            unhealthy: &[],
            reconfiguring: &[],
            expect: Ok(&[("nvidia.com/gpu", &["gpu0", "gpu1"])]),
        },
        Case {
            name: "mixed: one resource per profile, +me as .me, a split GI per compute instance",
            spec: "1xH100-80GB,mig=on",
            layout: mixed_layout,
            config: MIXED,
            unhealthy: &[],
            reconfiguring: &[],
            expect: Ok(&[
                ("nvidia.com/mig-1c.3g.40gb", &["gpu0:1c.3g.40gb"]),
                ("nvidia.com/mig-1g.10gb", &["gpu0:1g.10gb"]),
                ("nvidia.com/mig-1g.10gb.me", &["gpu0:1g.10gb+me"]),
                ("nvidia.com/mig-2c.3g.40gb", &["gpu0:2c.3g.40gb"]),
                ("nvidia.com/mig-2g.20gb", &["gpu0:2g.20gb"]),
            ]),
        },
        Case {
            name: "mixed: a MIG GPU and a non-MIG GPU side by side",
            spec: "2xH100-80GB,mig=on",
            layout: one_off,
            config: MIXED,
            unhealthy: &[],
            reconfiguring: &[],
            expect: Ok(&[
                ("nvidia.com/gpu", &["gpu1"]),
                ("nvidia.com/mig-1c.3g.40gb", &["gpu0:1c.3g.40gb"]),
                ("nvidia.com/mig-1g.10gb", &["gpu0:1g.10gb"]),
                ("nvidia.com/mig-1g.10gb.me", &["gpu0:1g.10gb+me"]),
                ("nvidia.com/mig-2c.3g.40gb", &["gpu0:2c.3g.40gb"]),
                ("nvidia.com/mig-2g.20gb", &["gpu0:2g.20gb"]),
            ]),
        },
        Case {
            name: "mixed: an unhealthy instance and one about to be reconfigured",
            spec: "1xH100-80GB,mig=on",
            layout: mixed_layout,
            config: MIXED,
            unhealthy: &[1],
            reconfiguring: &[2],
            expect: Ok(&[
                ("nvidia.com/mig-1c.3g.40gb", &["gpu0:1c.3g.40gb"]),
                ("nvidia.com/mig-1g.10gb", &["gpu0:1g.10gb unhealthy"]),
                ("nvidia.com/mig-1g.10gb.me", &["gpu0:1g.10gb+me"]),
                ("nvidia.com/mig-2c.3g.40gb", &["gpu0:2c.3g.40gb"]),
                ("nvidia.com/mig-2g.20gb", &["gpu0:2g.20gb draining"]),
            ]),
        },
        Case {
            name: "single: alike MIG devices are all nvidia.com/gpu",
            spec: "1xH100-80GB,mig=on",
            layout: uniform_layout,
            config: SINGLE,
            unhealthy: &[],
            reconfiguring: &[],
            expect: Ok(&[("nvidia.com/gpu", &["gpu0:1g.10gb"; 7])]),
        },
        Case {
            name: "single: unlike MIG devices are refused, as NVIDIA's plugin does",
            spec: "1xH100-80GB,mig=on",
            layout: mixed_layout,
            config: SINGLE,
            unhealthy: &[],
            reconfiguring: &[],
            expect: Err("more than one MIG device type on the node"),
        },
        Case {
            name: "single: MIG on and off on one node is refused",
            spec: "2xH100-80GB,mig=on",
            layout: one_off,
            config: SINGLE,
            unhealthy: &[],
            reconfiguring: &[],
            expect: Err("GPU 0 has MIG on and GPU 1 has MIG off"),
        },
        Case {
            name: "single: a MIG GPU without MIG devices is refused",
            spec: "1xH100-80GB,mig=on",
            layout: nothing,
            config: SINGLE,
            unhealthy: &[],
            reconfiguring: &[],
            expect: Err("GPU 0 has MIG on but no MIG devices"),
        },
        Case {
            name: "none: a MIG GPU is one whole nvidia.com/gpu",
            spec: "1xH100-80GB,mig=on",
            layout: mixed_layout,
            config: NONE,
            unhealthy: &[],
            reconfiguring: &[],
            expect: Ok(&[("nvidia.com/gpu", &["gpu0"])]),
        },
        Case {
            name: "none: a whole GPU with an instance fault inside is still healthy; one reconfiguring drains it",
            spec: "1xH100-80GB,mig=on",
            layout: mixed_layout,
            config: NONE,
            unhealthy: &[0],
            reconfiguring: &[3],
            expect: Ok(&[("nvidia.com/gpu", &["gpu0 draining"])]),
        },
        Case {
            name: "time-slicing replicas: <id>::<n>, same name",
            spec: "2xH100-80GB,mig=off",
            layout: nothing,
            config: "version: v1\nsharing:\n  timeSlicing:\n    resources:\n    - name: nvidia.com/gpu\n      replicas: 3\n",
            unhealthy: &[],
            reconfiguring: &[],
            expect: Ok(&[("nvidia.com/gpu", &["gpu0::0", "gpu0::1", "gpu0::2", "gpu1::0", "gpu1::1", "gpu1::2"])]),
        },
        Case {
            name: "time-slicing replicas of one MIG profile, renamed by default; the rest unshared",
            spec: "1xH100-80GB,mig=on",
            layout: mixed_layout,
            config: "version: v1\nflags:\n  migStrategy: mixed\nsharing:\n  timeSlicing:\n    renameByDefault: true\n    resources:\n    - name: mig-1g.10gb\n      replicas: 2\n",
            unhealthy: &[1],
            reconfiguring: &[],
            expect: Ok(&[
                ("nvidia.com/mig-1c.3g.40gb", &["gpu0:1c.3g.40gb"]),
                ("nvidia.com/mig-1g.10gb.me", &["gpu0:1g.10gb+me"]),
                ("nvidia.com/mig-1g.10gb.shared", &["gpu0:1g.10gb::0 unhealthy", "gpu0:1g.10gb::1 unhealthy"]),
                ("nvidia.com/mig-2c.3g.40gb", &["gpu0:2c.3g.40gb"]),
                ("nvidia.com/mig-2g.20gb", &["gpu0:2g.20gb"]),
            ]),
        },
        Case {
            name: "MPS shares whole GPUs only",
            spec: "1xH100-80GB,mig=on",
            layout: uniform_layout,
            config: "version: v1\nflags:\n  migStrategy: single\nsharing:\n  mps:\n    resources:\n    - name: nvidia.com/gpu\n      replicas: 2\n",
            unhealthy: &[],
            reconfiguring: &[],
            expect: Err("MPS sharing is not supported for MIG devices"),
        },
    ]
}

#[test]
fn strategies_by_layout() {
    for case in cases() {
        let b = node(case.spec);
        let gis = (case.layout)(&b);
        let h = health(&case.unhealthy.iter().map(|&i| gis[i]).collect::<Vec<_>>(), &[]);
        let reconfiguring: BTreeSet<InstanceKey> =
            case.reconfiguring.iter().map(|&i| InstanceKey { gpu: gis[i].0, gpu_instance_id: gis[i].1 }).collect();
        let v = views(&b);
        let input =
            NodeInput { gpus: &v, health: &h, reconfiguring: &reconfiguring, reconfiguring_gpus: &BTreeSet::new() };
        let got = build_inventory(&config(case.config), &input);
        match (case.expect, got) {
            (Ok(want), Ok(inv)) => {
                let want: BTreeMap<String, Vec<String>> =
                    want.iter().map(|(r, ds)| (r.to_string(), ds.iter().map(ToString::to_string).collect())).collect();
                // The profile label in the summary is `gpuN/giM:profile`; the table leaves out M.
                let got: BTreeMap<String, Vec<String>> = summary(&inv)
                    .into_iter()
                    .map(|(r, ds)| {
                        let ds = ds
                            .into_iter()
                            .map(|d| match d.split_once("/gi") {
                                Some((g, rest)) => format!("{g}{}", &rest[rest.find(':').unwrap()..]),
                                None => d,
                            })
                            .collect();
                        (r, ds)
                    })
                    .collect();
                assert_eq!(got, want, "{}", case.name);
                for d in inv.resources.values().flatten() {
                    assert!(d.id.len() <= 63, "{}: {} longer than 63", case.name, d.id);
                }
            }
            (Err(want), Err(e)) => assert!(e.to_string().contains(want), "{}: {e}", case.name),
            (want, got) => panic!("{}: wanted {want:?}, got {got:?}", case.name),
        }
    }
}

#[test]
fn a_gpu_fault_makes_every_device_on_it_unhealthy() {
    let b = node("2xH100-80GB,mig=on");
    gi(&b, 0, "3g.40gb", 0, &[]);
    gi(&b, 0, "3g.40gb", 4, &[]);
    gi(&b, 1, "7g.80gb", 0, &[]);
    let inv = common::inventory(&config(MIXED), &views(&b), &health(&[], &[0]), &[]);
    let s = summary(&inv);
    assert!(s["nvidia.com/mig-3g.40gb"].iter().all(|d| d.ends_with("unhealthy")), "{s:?}");
    assert!(!s["nvidia.com/mig-7g.80gb"][0].contains("unhealthy"), "{s:?}");
}

#[test]
fn mig_devices_carry_uuids_numa_and_caps_device_nodes() {
    let b = node("2xH100-80GB,mig=on,numa=2");
    gi(&b, 1, "3g.40gb", 4, &[2, 1]);
    let v = views(&b);
    let inv = common::inventory(&config(MIXED), &v, &health(&[], &[]), &[]);
    let (_, d) = inv.resources.iter().find(|(r, _)| r.as_str() == "nvidia.com/mig-2c.3g.40gb").unwrap();
    let d = &d[0];
    let inst = &v[1].instances[0];
    let ci = inst.compute_instances.iter().find(|c| c.placement.size == 2).unwrap();
    assert_eq!(d.id, ci.uuid);
    assert_eq!(d.mig_uuid.as_deref(), Some(ci.uuid.as_str()));
    assert_eq!(d.gpu_uuid, v[1].device.uuid);
    assert_eq!(d.numa_node, Some(1));
    let paths: Vec<&str> = d.device_nodes.iter().map(|n| n.host_path.as_str()).collect();
    assert_eq!(
        paths,
        [
            format!("/dev/nvidia{}", v[1].device.minor_number),
            format!("/dev/nvidia-caps/nvidia-cap{}", inst.caps_minor.unwrap()),
            format!("/dev/nvidia-caps/nvidia-cap{}", ci.caps_minor.unwrap()),
        ]
    );
}

#[test]
fn diff_names_appeared_vanished_and_changed_resources() {
    let b = node("1xH100-80GB,mig=on");
    let before_gis = mixed_layout(&b);
    let before = common::inventory(&config(MIXED), &views(&b), &health(&[], &[]), &[]);
    // Unchanged: nothing to send.
    assert_eq!(before.diff(&before), Default::default());
    // 2g.20gb@2 goes, 1g.10gb@2 and @3 come; 1g.10gb@1 turns unhealthy.
    b.destroy_compute_instance(0, before_gis[2].1, 0).unwrap();
    b.destroy_gpu_instance(0, before_gis[2].1).unwrap();
    gi(&b, 0, "1g.20gb", 2, &[]);
    let after = common::inventory(&config(MIXED), &views(&b), &health(&[before_gis[0]], &[]), &[]);
    let d = after.diff(&before);
    let names = |v: &[ResourceName]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(names(&d.appeared), ["nvidia.com/mig-1g.20gb"]);
    assert_eq!(names(&d.vanished), ["nvidia.com/mig-2g.20gb"]);
    assert_eq!(names(&d.changed), ["nvidia.com/mig-1g.10gb.me"]);
}
