//! How the Kubernetes door turns one container's device IDs into holds ([`pins_for`]): plain
//! devices are one exclusive hold per GPU; the replicas of one device (`<id>::<n>`) are one
//! shared hold of it, time-sliced, or under MPS with the share NVIDIA's plugin gives a replica.

use tessera_deviceplugin::door::{HoldError, PlannedHold, pins_for};
use tessera_gpu::{GpuView, MigBackend, NodeSpec, SimBackend, node_view_partial};
use tessera_kube_core::{PluginConfig, parse_config};
use tessera_mig::layout::ci_profile_of;
use tessera_sched::Sharing;

/// Each 1g.10gb time-sliced four ways, whole GPUs two ways.
const TIME_SLICED: &str = "version: v1
flags:
  migStrategy: mixed
sharing:
  timeSlicing:
    resources:
    - name: nvidia.com/mig-1g.10gb
      replicas: 4
    - name: nvidia.com/gpu
      replicas: 2
";

/// Whole GPUs under MPS four ways.
const MPS: &str = "version: v1
flags:
  migStrategy: none
sharing:
  mps:
    resources:
    - name: nvidia.com/gpu
      replicas: 4
";

/// Two H100s: with MIG on, GPU 0 cut into 1g.10gb@0, 1g.10gb@1 and 3g.40gb@4, and GPU 1 with
/// MIG off; with MIG off, both whole.
fn node(mig: bool) -> Vec<GpuView> {
    let spec = NodeSpec::parse("2xH100-80GB,numa=1").expect("spec");
    let sim = SimBackend::in_memory(&spec);
    if mig {
        for (profile, start) in [("1g.10gb", 0), ("1g.10gb", 1), ("3g.40gb", 4)] {
            let model = tessera_mig::catalog().model("H100-80GB").expect("model");
            let p = model.profile(profile).expect("profile");
            let ci = ci_profile_of(model, p, p.compute_slices).expect("compute profile");
            let gi = sim.create_gpu_instance(0, p.id, Some(start)).expect("GPU instance");
            sim.create_compute_instance(0, gi.id, ci.id).expect("compute instance");
        }
        sim.set_mig_mode(1, false).expect("MIG off");
    } else {
        for gpu in 0..2 {
            sim.set_mig_mode(gpu, false).expect("MIG off");
        }
    }
    node_view_partial(&sim).expect("node").gpus
}

/// The device IDs of a node: GPU 0's MIG devices by start (`a`, `b`, `c`), else whole GPUs
/// (`w0`, `w1`).
fn device(gpus: &[GpuView], name: &str) -> String {
    match name {
        "w0" => gpus[0].device.uuid.clone(),
        "w1" => gpus[1].device.uuid.clone(),
        _ => {
            let start = match name {
                "a" => 0,
                "b" => 1,
                _ => 4,
            };
            let i = gpus[0].instances.iter().find(|i| i.instance.start == start).expect("instance");
            i.compute_instances[0].uuid.clone()
        }
    }
}

/// `a`, `a::2`, `w1::0` as device IDs.
fn ids(gpus: &[GpuView], names: &[&str]) -> Vec<String> {
    names
        .iter()
        .map(|n| match n.split_once("::") {
            Some((d, r)) => format!("{}::{r}", device(gpus, d)),
            None => device(gpus, n),
        })
        .collect()
}

/// A hold as the table writes it: GPU, starts of its instances, sharing, device IDs.
fn summary(h: &PlannedHold) -> (u32, Vec<u8>, Sharing, Vec<String>) {
    let gpu = h.pins.first().map_or(u32::MAX, |(p, _)| p.gpu);
    (gpu, h.pins.iter().map(|(p, _)| p.start).collect(), h.sharing, h.ids.iter().cloned().collect())
}

#[test]
fn a_containers_devices_become_holds() {
    let mig = node(true);
    let whole = node(false);
    let memory = whole[0].device.memory_total_mib;
    let quarter = Sharing::Mps { active_thread_pct: 25, pinned_mem_mib: Some(memory / 4) };
    let time_sliced = parse_config(TIME_SLICED, "ts.yaml").expect("config");
    let mps = parse_config(MPS, "mps.yaml").expect("config");
    let none = PluginConfig::default();
    type Want = Vec<(u32, Vec<u8>, Sharing, Vec<&'static str>)>;
    type Case<'a> = (&'a str, &'a PluginConfig, &'a [GpuView], Vec<&'a str>, Want);
    let cases: Vec<Case> = vec![
        (
            "plain devices of one GPU: one exclusive hold",
            &time_sliced,
            &mig,
            vec!["a", "c"],
            vec![(0, vec![0, 4], Sharing::Exclusive, vec!["a", "c"])],
        ),
        (
            "replicas of one device: one time-sliced hold",
            &time_sliced,
            &mig,
            vec!["a::0", "a::2"],
            vec![(0, vec![0], Sharing::TimeSlice, vec!["a::0", "a::2"])],
        ),
        (
            "replicas of two devices: a hold each",
            &time_sliced,
            &mig,
            vec!["b::1", "a::1"],
            vec![(0, vec![0], Sharing::TimeSlice, vec!["a::1"]), (0, vec![1], Sharing::TimeSlice, vec!["b::1"])],
        ),
        (
            "a whole GPU's replica",
            &time_sliced,
            &mig,
            vec!["w1::1"],
            vec![(1, vec![0], Sharing::TimeSlice, vec!["w1::1"])],
        ),
        (
            "plain devices and replicas: exclusive first",
            &time_sliced,
            &mig,
            vec!["a::3", "c"],
            vec![(0, vec![4], Sharing::Exclusive, vec!["c"]), (0, vec![0], Sharing::TimeSlice, vec!["a::3"])],
        ),
        ("an MPS replica: NVIDIA's share", &mps, &whole, vec!["w0::1"], vec![(0, vec![0], quarter, vec!["w0::1"])]),
        (
            "two MPS replicas of one GPU: one hold, one share (as NVIDIA gives the container)",
            &mps,
            &whole,
            vec!["w0::3", "w0::0"],
            vec![(0, vec![0], quarter, vec!["w0::0", "w0::3"])],
        ),
        (
            "a replica the configuration does not share: time-sliced",
            &none,
            &mig,
            vec!["a::1"],
            vec![(0, vec![0], Sharing::TimeSlice, vec!["a::1"])],
        ),
    ];
    for (name, config, gpus, given, want) in cases {
        let holds = pins_for(&ids(gpus, &given), gpus, config).unwrap_or_else(|e| panic!("{name}: {e}"));
        let got: Vec<_> = holds.iter().map(summary).collect();
        let want: Vec<_> = want.into_iter().map(|(g, starts, s, names)| (g, starts, s, ids(gpus, &names))).collect();
        assert_eq!(got, want, "{name}");
    }
    let unknown = pins_for(&["MIG-not-here::0".to_string()], &mig, &time_sliced).expect_err("unknown");
    assert!(matches!(&unknown, HoldError::UnknownDevice(id) if id == "MIG-not-here::0"), "{unknown}");
}
