//! The NVML-semantics layer on its own, without the global state or the C ABI.

use super::*;
use crate::config::DriverVersion;

fn node_with(spec: &str, edit: impl FnOnce(&mut Config)) -> Node {
    let mut config = Config { spec: Some(NodeSpec::parse(spec).unwrap()), ..Config::default() };
    edit(&mut config);
    Node::new(config).unwrap()
}

fn node(spec: &str) -> Node {
    node_with(spec, |_| {})
}

fn gpu0() -> Handle {
    Node::gpu_handle(0)
}

fn profile_id(n: &Node, index: u32) -> u32 {
    n.gi_profile_info(gpu0(), index).unwrap().info.id
}

#[test]
fn devices_and_identity() {
    let n = node("2xA100-40GB,numa=2,cpus=8");
    assert_eq!(n.device_count(), 2);
    let h1 = n.device_by_index(1).unwrap();
    assert_eq!(h1, Node::gpu_handle(1));
    assert_eq!(n.device_by_index(2), Err(INVALID_ARGUMENT));
    let uuid = n.uuid(h1).unwrap();
    assert_eq!(n.device_by_uuid(&uuid), Ok(h1));
    assert_eq!(n.device_by_uuid("GPU-nope"), Err(NOT_FOUND));
    assert_eq!(n.device_index(h1), Ok(1));
    assert_eq!(n.name(h1).unwrap(), "NVIDIA A100-SXM4-40GB");
    let pci = n.pci(h1).unwrap();
    assert_eq!(pci.bus_id, "00000000:2A:00.0");
    assert_eq!(pci.bus_id_legacy, "0000:2A:00.0");
    assert_eq!((pci.domain, pci.bus, pci.device), (0, 0x2a, 0));
    assert_eq!(pci.pci_device_id, 0x20B0_10DE);
    assert_eq!(n.minor_number(h1), Ok(1));
    assert_eq!(n.memory(h1).unwrap(), Memory { total: n.devices[1].memory_total_mib * MIB, used: 0 });
    assert!(n.devices[1].memory_total_mib > 39 * 1024);
    assert_eq!(n.local_cpus(h1).unwrap(), [4, 5, 6, 7]);
    assert_eq!(n.numa_node(h1), Ok(Some(1)));
    assert_eq!(n.device(0), Err(INVALID_ARGUMENT), "not a handle");
    let gi_key = handles::intern(HandleKey::GpuInstance { gpu: 0, gi: 99, profile_id: 0, start: 0 });
    assert_eq!(n.device(gi_key), Err(INVALID_ARGUMENT), "a handle of another kind");
}

#[test]
fn placements_agree_with_the_simulated_node_for_every_model() {
    let spec: Vec<String> = tessera_mig::catalog().models.iter().map(|m| format!("1x{}", m.name)).collect();
    let n = node(&spec.join("+"));
    for gpu in 0..n.device_count() {
        let model = n.model(gpu);
        for p in &model.profiles {
            let ours = n.possible_placements(Node::gpu_handle(gpu), p.id).unwrap();
            assert_eq!(ours, n.sim.possible_placements(gpu, p.id).unwrap(), "{} {}", model.name, p.name);
        }
        // Every profile is reachable by its index and reports what the simulated node reports.
        let infos = n.sim.gpu_instance_profiles(gpu).unwrap();
        for p in &model.profiles {
            let index = profiles::nvml_index(p).unwrap();
            let got = n.gi_profile_info(Node::gpu_handle(gpu), index).unwrap();
            assert_eq!(Some(&got.info), infos.iter().find(|i| i.id == p.id), "{} {}", model.name, p.name);
            assert_eq!(got.name, format!("MIG {}", p.name));
        }
    }
}

#[test]
fn profile_info_by_index() {
    let n = node("1xA100-40GB");
    let p = n.gi_profile_info(gpu0(), NVML_GPU_INSTANCE_PROFILE_1_SLICE).unwrap();
    assert_eq!((p.info.id, p.info.compute_slices, p.info.max_count), (19, 1, 7));
    assert_eq!(p.name, "MIG 1g.5gb");
    assert_eq!(n.gi_profile_info(gpu0(), NVML_GPU_INSTANCE_PROFILE_8_SLICE), Err(NOT_SUPPORTED));
    assert_eq!(n.gi_profile_info(gpu0(), NVML_GPU_INSTANCE_PROFILE_COUNT), Err(INVALID_ARGUMENT));
    let rtx = node("1xRTX-PRO-6000");
    let gfx = rtx.gi_profile_info(gpu0(), NVML_GPU_INSTANCE_PROFILE_1_SLICE_GFX).unwrap();
    assert_eq!(gfx.capabilities, NVML_GPU_INSTANCE_PROFILE_CAPS_GFX);
}

#[test]
fn driver_version_gates_profiles() {
    let n = node_with("1xA100-40GB", |c| c.driver = DriverVersion::parse("470.82.01").unwrap());
    // 1g.10gb (id 15, index 9) needs R525.
    assert_eq!(n.gi_profile_info(gpu0(), NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV2), Err(NOT_SUPPORTED));
    assert_eq!(n.create_gpu_instance(gpu0(), 15, None), Err(NOT_SUPPORTED));
    assert_eq!(n.possible_placements(gpu0(), 15), Err(NOT_SUPPORTED));
    // 1g.5gb+me needs R470: offered.
    assert_eq!(profile_id(&n, NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1), 20);
    assert_eq!(n.create_gpu_instance(gpu0(), 0xdead, None), Err(INVALID_ARGUMENT));
}

#[test]
fn default_placement_reproduces_nvidias_a100_example() {
    let n = node("1xA100-40GB");
    let mut starts = Vec::new();
    for id in [19, 19, 14] {
        let h = n.create_gpu_instance(gpu0(), id, None).unwrap();
        starts.push(n.gpu_instance_info(h).unwrap().1.placement.start);
    }
    assert_eq!(starts, [6, 4, 0]);
    assert_eq!(n.create_gpu_instance(gpu0(), 9, None), Err(INSUFFICIENT_RESOURCES));
}

#[test]
fn explicit_placements_and_instance_handles() {
    let n = node("1xH100-80GB");
    assert_eq!(n.create_gpu_instance(gpu0(), 9, Some((4, 3))), Err(INVALID_ARGUMENT), "wrong size");
    assert_eq!(n.create_gpu_instance(gpu0(), 9, Some((2, 4))), Err(INVALID_ARGUMENT), "illegal start");
    let g3 = n.create_gpu_instance(gpu0(), 9, Some((4, 4))).unwrap();
    let g4 = n.create_gpu_instance(gpu0(), 5, Some((0, 4))).unwrap();
    assert_eq!(n.create_gpu_instance(gpu0(), 19, Some((0, 1))), Err(INSUFFICIENT_RESOURCES), "overlaps the 4g");
    let (dev, info) = n.gpu_instance_info(g3).unwrap();
    assert_eq!(dev, gpu0());
    assert_eq!((info.profile_id, info.placement.start, info.placement.size), (9, 4, 4));
    assert_eq!(n.gpu_instance_by_id(gpu0(), info.id), Ok(g3));
    assert_eq!(n.gpu_instance_by_id(gpu0(), 14), Err(NOT_FOUND));
    assert_eq!(n.gpu_instances(gpu0(), 9), Ok(vec![g3]));
    assert_eq!(n.gpu_instances(gpu0(), 19), Ok(vec![]));
    assert_eq!(n.gpu_instances(gpu0(), 1234), Err(INVALID_ARGUMENT));
    assert_eq!(n.gi_remaining_capacity(gpu0(), 19), Ok(0), "4g at 0:4 and 3g at 4:4 fill the GPU");
    n.destroy_gpu_instance(g4).unwrap();
    assert_eq!(n.gi_remaining_capacity(gpu0(), 19), Ok(4));

    // Compute instances.
    assert_eq!(n.ci_profile_info(g3, 4, 0), Err(NOT_SUPPORTED), "no 7c in a 3g");
    assert_eq!(n.ci_profile_info(g3, 0, 1), Err(INVALID_ARGUMENT), "engine profile must be SHARED");
    assert_eq!(n.ci_profile_info(g3, NVML_COMPUTE_INSTANCE_PROFILE_COUNT, 0), Err(INVALID_ARGUMENT));
    let c1 = n.ci_profile_info(g3, 0, 0).unwrap();
    assert_eq!((c1.slice_count, c1.instance_count, c1.name.as_str()), (1, 3, "MIG 1c.3g.40gb"));
    assert_eq!(n.ci_remaining_capacity(g3, 0), Ok(3));
    let ci = n.create_compute_instance(g3, 0).unwrap();
    assert_eq!(n.ci_remaining_capacity(g3, 0), Ok(2));
    assert_eq!(n.ci_remaining_capacity(g3, 2), Ok(0));
    let (cdev, cgi, cinfo) = n.compute_instance_info(ci).unwrap();
    assert_eq!((cdev, cgi, cinfo.id, cinfo.placement.start), (gpu0(), g3, 0, 0));
    assert_eq!(n.compute_instances(g3, 0), Ok(vec![ci]));
    assert_eq!(n.compute_instance_by_id(g3, 0), Ok(ci));
    assert_eq!(n.compute_instance_by_id(g3, 5), Err(NOT_FOUND));

    // MIG devices.
    assert_eq!(n.max_mig_devices(gpu0()), Ok(7));
    let mig = n.mig_device_by_index(gpu0(), 0).unwrap();
    assert_eq!(n.mig_device_by_index(gpu0(), 1), Err(NOT_FOUND));
    assert_eq!(n.mig_device_by_index(gpu0(), 7), Err(INVALID_ARGUMENT));
    assert_eq!(n.is_mig_device(mig), Ok(true));
    assert_eq!(n.is_mig_device(gpu0()), Ok(false));
    assert_eq!(n.parent_of_mig_device(mig), Ok(gpu0()));
    assert_eq!(n.mig_instance_ids(mig), Ok((info.id, 0)));
    assert_eq!(n.mig_instance_ids(gpu0()), Err(NOT_SUPPORTED));
    assert_eq!(n.uuid(mig).unwrap(), cinfo.uuid);
    assert_eq!(n.device_by_uuid(&cinfo.uuid), Ok(mig));
    assert_eq!(n.name(mig).unwrap(), "NVIDIA H100 80GB HBM3 MIG 1c.3g.40gb");
    assert_eq!(n.device_index(mig), Ok(0));
    let g3_mib = n.sim.gpu_instance_profiles(0).unwrap().iter().find(|p| p.id == 9).unwrap().memory_mib;
    assert_eq!(n.memory(mig).unwrap().total, g3_mib * MIB);

    // Destroy order, and stale handles.
    assert_eq!(n.destroy_gpu_instance(g3), Err(IN_USE));
    n.destroy_compute_instance(ci).unwrap();
    assert_eq!(n.compute_instance_info(ci), Err(INVALID_ARGUMENT));
    assert_eq!(n.uuid(mig), Err(INVALID_ARGUMENT));
    n.destroy_gpu_instance(g3).unwrap();
    assert_eq!(n.gpu_instance_info(g3), Err(INVALID_ARGUMENT));
    assert_eq!(n.destroy_gpu_instance(g3), Err(INVALID_ARGUMENT));
}

#[test]
fn mig_mode_and_processes() {
    let n = node("1xH100-80GB,mig=off");
    assert_eq!(n.mig_mode(gpu0()), Ok((0, 0)));
    assert_eq!(n.max_mig_devices(gpu0()), Ok(0));
    assert_eq!(n.gi_profile_info(gpu0(), 0), Err(NOT_SUPPORTED), "MIG is off");
    assert_eq!(n.possible_placements(gpu0(), 19).map(|p| p.len()), Ok(7), "placements regardless of mode");
    assert_eq!(n.create_gpu_instance(gpu0(), 19, None), Err(NOT_SUPPORTED));
    assert_eq!(n.set_mig_mode(gpu0(), 2), Err(INVALID_ARGUMENT));
    n.sim.attach_gpu_process(0, 42, "train").unwrap();
    assert_eq!(n.set_mig_mode(gpu0(), NVML_DEVICE_MIG_ENABLE), Ok(IN_USE));
    assert_eq!(n.mig_mode(gpu0()), Ok((0, 1)), "pending");
    let procs = n.processes(gpu0()).unwrap();
    assert_eq!(procs.len(), 1);
    n.sim.detach_process(0, 42).unwrap();
    assert_eq!(n.set_mig_mode(gpu0(), NVML_DEVICE_MIG_ENABLE), Ok(SUCCESS));
    assert_eq!(n.mig_mode(gpu0()), Ok((1, 1)));

    let gi = n.create_gpu_instance(gpu0(), 19, Some((0, 1))).unwrap();
    let _ci = n.create_compute_instance(gi, 0).unwrap();
    let gi_id = n.gpu_instance_info(gi).unwrap().1.id;
    n.sim.attach_process(0, gi_id, 0, 7, "infer").unwrap();
    let mig = n.mig_device_by_index(gpu0(), 0).unwrap();
    assert_eq!(n.processes(mig).unwrap().iter().map(|p| p.pid).collect::<Vec<_>>(), [7]);
    assert_eq!(n.set_mig_mode(gpu0(), NVML_DEVICE_MIG_DISABLE), Ok(IN_USE), "instances exist");
}

#[test]
fn no_mig_lost_and_no_permission() {
    let n = node_with("3xA30", |c| {
        c.no_mig.insert(1);
        c.lost.insert(2);
        c.no_permission = true;
    });
    let g1 = Node::gpu_handle(1);
    assert_eq!(n.mig_mode(g1), Err(NOT_SUPPORTED));
    assert_eq!(n.gi_profile_info(g1, 0), Err(NOT_SUPPORTED));
    assert_eq!(n.create_gpu_instance(g1, 14, None), Err(NOT_SUPPORTED));
    assert_eq!(n.max_mig_devices(g1), Ok(0));
    assert_eq!(n.is_mig_device(g1), Ok(false));
    assert!(n.uuid(g1).is_ok(), "non-MIG calls still work");
    assert_eq!(n.device_by_index(2), Err(GPU_IS_LOST));
    assert_eq!(n.uuid(Node::gpu_handle(2)), Err(GPU_IS_LOST));
    let uuid2 = n.devices[2].uuid.clone();
    assert_eq!(n.device_by_uuid(&uuid2), Err(GPU_IS_LOST));
    assert_eq!(n.set_mig_mode(gpu0(), 1), Err(NO_PERMISSION));
    assert_eq!(n.create_gpu_instance(gpu0(), 14, None), Err(NO_PERMISSION));
    assert!(n.gi_profile_info(gpu0(), 0).is_ok(), "reads are allowed");
}

#[test]
fn events_from_the_xid_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("xids");
    let mut n = node_with("2xH100-80GB", |c| c.xids = Some(path.clone()));
    let set = n.event_set_create();
    let other = n.event_set_create();
    assert_eq!(n.supported_event_types(gpu0()), Ok(SUPPORTED_EVENTS));
    assert_eq!(n.register_events(gpu0(), 1 << 40, set), Err(INVALID_ARGUMENT));
    assert_eq!(n.register_events(gpu0(), u64::from(nvmlEventTypeSingleBitEccError), set), Err(NOT_SUPPORTED));
    n.register_events(gpu0(), SUPPORTED_EVENTS, set).unwrap();
    n.register_events(Node::gpu_handle(1), SUPPORTED_EVENTS, other).unwrap();
    assert_eq!(n.next_event(set), Ok(None));
    std::fs::write(&path, "0 79\n1 43 7 0\n0 48 3 1\n").unwrap();
    let first = n.next_event(set).unwrap().unwrap();
    assert_eq!(
        (first.device, first.data, first.gpu_instance_id, first.compute_instance_id),
        (gpu0(), 79, NO_INSTANCE, NO_INSTANCE)
    );
    assert_eq!(first.event_type, u64::from(nvmlEventTypeXidCriticalError));
    let second = n.next_event(set).unwrap().unwrap();
    assert_eq!((second.data, second.gpu_instance_id, second.compute_instance_id), (48, 3, 1));
    assert_eq!(n.next_event(set), Ok(None));
    let theirs = n.next_event(other).unwrap().unwrap();
    assert_eq!((theirs.device, theirs.data), (Node::gpu_handle(1), 43));
    n.event_set_free(set).unwrap();
    assert_eq!(n.next_event(set), Err(INVALID_ARGUMENT));
    assert_eq!(n.event_set_free(set), Err(INVALID_ARGUMENT));
    n.event_set_free(other).unwrap();
}

#[test]
fn xids_raised_on_the_simulated_node_are_delivered_once() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("node.json");
    let mut n = node_with("2xH100-80GB", |c| c.state = Some(state.clone()));
    let set = n.event_set_create();
    n.register_events(Node::gpu_handle(1), SUPPORTED_EVENTS, set).unwrap();
    assert_eq!(n.next_event(set), Ok(None));
    // `tessera mig xid 1 48 --gi 3 --ci 0` and `tessera mig xid 0 43`, from another process.
    let other = SimBackend::open(&state, None).unwrap();
    other.raise_xid(1, 48, Some(3), Some(0)).unwrap();
    other.raise_xid(0, 43, None, None).unwrap();
    let ev = n.next_event(set).unwrap().unwrap();
    assert_eq!((ev.device, ev.data, ev.gpu_instance_id, ev.compute_instance_id), (Node::gpu_handle(1), 48, 3, 0));
    assert_eq!(ev.event_type, u64::from(nvmlEventTypeXidCriticalError));
    // Once: GPU 0's was not registered, and neither is left in the simulated node's state.
    assert_eq!(n.next_event(set), Ok(None));
    assert!(other.wait_xid_events(0).unwrap().is_empty(), "taken from the state");
    // The driver's reaction was the simulated node's own, once.
    assert_eq!(other.observe(1).unwrap().recovery_action, Some(tessera_gpu::RecoveryAction::GpuReset));
}

#[test]
fn bad_configuration_fails_to_open() {
    let config = Config { spec: Some(NodeSpec::parse("2xA30").unwrap()), lost: [5].into(), ..Config::default() };
    assert!(Node::new(config).unwrap_err().contains("GPU 5 does not exist"));
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("node.json");
    SimBackend::open(&state, Some(&NodeSpec::parse("1xA30").unwrap())).unwrap();
    let config =
        Config { spec: Some(NodeSpec::parse("1xH100-80GB").unwrap()), state: Some(state.clone()), ..Config::default() };
    assert!(Node::new(config).unwrap_err().contains("simulates the node"));
    // Without a spec, the state file's node is used.
    let n = Node::new(Config { state: Some(state), ..Config::default() }).unwrap();
    assert_eq!(n.name(gpu0()).unwrap(), "NVIDIA A30");
}

/// nvml.h's activation statuses: an A100's change waits for a reset (`RESET_REQUIRED`, pending),
/// an H100's takes effect (`SUCCESS`).
#[test]
fn an_a100_mode_change_reports_reset_required() {
    let n = node("1xA100-40GB+1xH100-80GB,mig=off");
    assert_eq!(n.set_mig_mode(gpu0(), NVML_DEVICE_MIG_ENABLE), Ok(RESET_REQUIRED));
    assert_eq!(n.mig_mode(gpu0()), Ok((0, 1)), "pending until the reset");
    n.sim.reset_gpu(0).unwrap();
    assert_eq!(n.mig_mode(gpu0()), Ok((1, 1)));
    assert_eq!(n.set_mig_mode(Node::gpu_handle(1), NVML_DEVICE_MIG_ENABLE), Ok(SUCCESS));
    assert_eq!(n.mig_mode(Node::gpu_handle(1)), Ok((1, 1)));
}

#[test]
fn gpm_samples_and_their_error_codes() {
    let dir = tempfile::tempdir().unwrap();
    let activity = dir.path().join("activity");
    let mut n = node_with("1xH100-80GB+1xA100-40GB+1xH100-80GB", |c| {
        c.activity = Some(activity.clone());
        c.no_mig = [2].into();
    });
    let (h100, a100, no_mig) = (gpu0(), Node::gpu_handle(1), Node::gpu_handle(2));
    assert_eq!(n.gpm_query_support(h100, GPM_SUPPORT_VERSION), Ok(true));
    assert_eq!(n.gpm_query_support(a100, GPM_SUPPORT_VERSION), Ok(false));
    assert_eq!(n.gpm_query_support(h100, 2), Err(ARGUMENT_VERSION_MISMATCH));
    let gi = n.create_gpu_instance(h100, 9, Some((4, 4))).unwrap();
    let gi_id = n.gpu_instance_info(gi).unwrap().1.id;
    let (a, b, c) = (n.gpm_sample_alloc(), n.gpm_sample_alloc(), n.gpm_sample_alloc());
    // What cannot be sampled.
    assert_eq!(n.gpm_sample_get(a100, None, a), Err(NOT_SUPPORTED), "no GPM on Ampere");
    assert_eq!(n.gpm_sample_get(h100, Some(3), a), Err(NOT_FOUND), "no GPU instance 3");
    assert_eq!(n.gpm_sample_get(no_mig, Some(0), a), Err(NOT_SUPPORTED), "a GPU without MIG has no instances");
    assert_eq!(n.gpm_sample_get(h100, None, gpu0()), Err(INVALID_ARGUMENT), "not a sample buffer");
    let ci = n.create_compute_instance(gi, 0).unwrap();
    let mig = n.mig_device_by_index(h100, 0).unwrap();
    assert_eq!(n.gpm_sample_get(mig, None, a), Err(INVALID_ARGUMENT), "a MIG device is sampled through its GPU");
    assert_eq!(n.gpm_query_support(mig, GPM_SUPPORT_VERSION), Ok(true), "a MIG device answers for its GPU");
    // The activity file, as of when it was written.
    std::fs::write(&activity, format!("0 {gi_id} 0.5 0.25 0.75 1\n0 0.1 0.1 0.1 0.1 0.2 0.3 0.4\n")).unwrap();
    n.gpm_sample_get(h100, Some(gi_id), a).unwrap();
    assert_eq!(n.gpm_metrics(GPM_METRICS_GET_VERSION, 1, a, b), Err(INVALID_ARGUMENT), "b holds no sample");
    std::thread::sleep(std::time::Duration::from_millis(150));
    n.gpm_sample_get(h100, Some(gi_id), b).unwrap();
    n.gpm_sample_get(h100, None, c).unwrap();
    let v = n.gpm_metrics(GPM_METRICS_GET_VERSION, 7, a, b).unwrap();
    for (id, want) in [(2, 50.0), (3, 25.0), (5, 75.0), (10, 100.0), (11, 0.0)] {
        let got = v.value(id).unwrap();
        assert!((got - want).abs() < 1.0, "metric {id}: {got}, declared {want}");
    }
    assert_eq!(v.value(1), Err(NOT_SUPPORTED), "graphics activity is not modelled");
    // The stand-in's codes for a misused nvmlGpmMetricsGet.
    assert_eq!(n.gpm_metrics(2, 1, a, b), Err(ARGUMENT_VERSION_MISMATCH));
    assert_eq!(n.gpm_metrics(GPM_METRICS_GET_VERSION, GPM_METRIC_MAX + 1, a, b), Err(INVALID_ARGUMENT));
    assert_eq!(n.gpm_metrics(GPM_METRICS_GET_VERSION, 1, a, a), Err(INVALID_ARGUMENT), "the same sample twice");
    assert_eq!(n.gpm_metrics(GPM_METRICS_GET_VERSION, 1, b, a), Err(INVALID_ARGUMENT), "the second is older");
    assert_eq!(n.gpm_metrics(GPM_METRICS_GET_VERSION, 1, a, c), Err(INVALID_ARGUMENT), "the GPU, not the instance");
    assert_eq!(n.gpm_metrics(GPM_METRICS_GET_VERSION, 1, gpu0(), b), Err(INVALID_ARGUMENT), "not a buffer");
    // A GPU instance destroyed and made again as another profile under the same id is another one.
    n.destroy_compute_instance(ci).unwrap();
    n.destroy_gpu_instance(gi).unwrap();
    let two = n.create_gpu_instance(h100, 14, Some((4, 2))).unwrap();
    let id = n.gpu_instance_info(two).unwrap().1.id;
    n.gpm_sample_get(h100, Some(id), a).unwrap();
    n.destroy_gpu_instance(two).unwrap();
    let one = n.create_gpu_instance(h100, 15, Some((4, 2))).unwrap();
    assert_eq!(n.gpu_instance_info(one).unwrap().1.id, id, "1g.20gb@4 gets 2g.20gb@4's id");
    std::thread::sleep(std::time::Duration::from_millis(5));
    n.gpm_sample_get(h100, Some(id), c).unwrap();
    assert_eq!(n.gpm_metrics(GPM_METRICS_GET_VERSION, 1, a, c), Err(INVALID_ARGUMENT), "another instance");
    n.destroy_gpu_instance(one).unwrap();
    // MIG off: the GPU still samples, an instance cannot.
    assert_eq!(n.set_mig_mode(h100, NVML_DEVICE_MIG_DISABLE), Ok(SUCCESS));
    assert_eq!(n.gpm_sample_get(h100, Some(gi_id), a), Err(NOT_SUPPORTED));
    n.gpm_sample_get(h100, None, a).unwrap();
    // Buffers are freed once.
    n.gpm_sample_free(a).unwrap();
    assert_eq!(n.gpm_sample_free(a), Err(INVALID_ARGUMENT));
    assert_eq!(n.gpm_sample_get(h100, None, a), Err(INVALID_ARGUMENT), "a freed buffer");
    assert_eq!(n.gpm_sample_free(gpu0()), Err(INVALID_ARGUMENT));
}

#[test]
fn an_activity_file_counts_from_when_it_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let activity = dir.path().join("activity");
    let mut n = node_with("1xH100-80GB,mig=off", |c| c.activity = Some(activity.clone()));
    let (a, b) = (n.gpm_sample_alloc(), n.gpm_sample_alloc());
    n.gpm_sample_get(gpu0(), None, a).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    // Written half-way: the second half of the interval is busy, whenever a sample notices.
    std::fs::write(&activity, "0 1 1 1 1\n").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    n.gpm_sample_get(gpu0(), None, b).unwrap();
    let sm = n.gpm_metrics(GPM_METRICS_GET_VERSION, 1, a, b).unwrap().value(2).unwrap();
    assert!((35.0..65.0).contains(&sm), "SM activity {sm}% for a GPU busy half the interval");
    // Removed: everything idle from then on.
    std::fs::remove_file(&activity).unwrap();
    assert_eq!(n.sim.activity(0, None).unwrap(), tessera_gpu::sim::activity::Activity::new(1.0, 1.0, 1.0, 1.0));
    n.gpm_sample_get(gpu0(), None, a).unwrap();
    assert_eq!(n.sim.activity(0, None).unwrap(), tessera_gpu::sim::activity::Activity::IDLE);
}
