//! Unit tests of the simulated node: the state file, processes and MIG mode, and details the
//! conformance suite does not pin down.

use std::sync::Arc;

use super::*;

fn spec(s: &str) -> NodeSpec {
    NodeSpec::parse(s).unwrap()
}

#[test]
fn state_persists_across_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/node.json");
    let s = spec("1xA100-40GB+1xH100-80GB,numa=2");
    let (gi, ci) = {
        let b = SimBackend::open(&path, Some(&s)).unwrap();
        assert_eq!(b.path(), Some(path.as_path()));
        let gi = b.create_gpu_instance(1, 9, Some(4)).unwrap();
        let ci = b.create_compute_instance(1, gi.id, 2).unwrap();
        b.attach_process(1, gi.id, ci.id, 77, "trainer").unwrap();
        (gi, ci)
    };
    // Reopen with the same spec, and with none (the file says which node it is).
    for reopened in [SimBackend::open(&path, Some(&s)).unwrap(), SimBackend::open(&path, None).unwrap()] {
        assert_eq!(reopened.spec(), &s);
        assert_eq!(reopened.gpu_instances(1).unwrap(), vec![gi.clone()]);
        assert_eq!(reopened.compute_instances(1, gi.id).unwrap(), vec![ci.clone()]);
        assert_eq!(reopened.processes(1).unwrap()[0].pid, 77);
        assert_eq!(reopened.devices().unwrap(), s.devices());
    }
    // The generation counter persists too: a recreated compute instance gets a new UUID.
    let b = SimBackend::open(&path, None).unwrap();
    b.detach_process(1, 77).unwrap();
    b.destroy_compute_instance(1, gi.id, ci.id).unwrap();
    let again = b.create_compute_instance(1, gi.id, 2).unwrap();
    assert_eq!(again.id, ci.id);
    assert_ne!(again.uuid, ci.uuid);
}

#[test]
fn open_without_spec_creates_the_default_node() {
    let dir = tempfile::tempdir().unwrap();
    let b = SimBackend::open(&dir.path().join("n.json"), None).unwrap();
    assert_eq!(b.spec(), &NodeSpec::default());
    assert_eq!(b.devices().unwrap().len(), 8);
    assert_eq!(b.kind(), BackendKind::Simulated);
}

#[test]
fn two_handles_share_one_node() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.json");
    let s = spec("1xH100-80GB");
    let a = SimBackend::open(&path, Some(&s)).unwrap();
    let b = SimBackend::open(&path, Some(&s)).unwrap();
    let gi = a.create_gpu_instance(0, 19, Some(6)).unwrap();
    assert_eq!(b.gpu_instances(0).unwrap(), vec![gi.clone()]);
    let ci = b.create_compute_instance(0, gi.id, 0).unwrap();
    assert_eq!(a.compute_instances(0, gi.id).unwrap(), vec![ci]);
    // b now sees the placement as taken.
    let e = b.create_gpu_instance(0, 19, Some(6)).unwrap_err();
    assert_eq!(e.kind(), "insufficient_resources");
}

#[test]
fn concurrent_handles_do_not_lose_updates() {
    let dir = tempfile::tempdir().unwrap();
    let path = Arc::new(dir.path().join("node.json"));
    let s = spec("1xH100-80GB");
    SimBackend::open(&path, Some(&s)).unwrap();
    let threads: Vec<_> = (0..7u8)
        .map(|start| {
            let path = Arc::clone(&path);
            std::thread::spawn(move || {
                let b = SimBackend::open(&path, None).unwrap();
                let gi = b.create_gpu_instance(0, 19, Some(start)).unwrap();
                b.create_compute_instance(0, gi.id, 0).unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let b = SimBackend::open(&path, None).unwrap();
    let mut starts: Vec<u8> = b.gpu_instances(0).unwrap().iter().map(|g| g.placement.start).collect();
    starts.sort_unstable();
    assert_eq!(starts, [0, 1, 2, 3, 4, 5, 6]);
}

#[test]
fn spec_mismatch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.json");
    SimBackend::open(&path, Some(&spec("2xA30"))).unwrap();
    let e = SimBackend::open(&path, Some(&spec("2xA100-40GB"))).unwrap_err();
    assert_eq!(e.kind(), "state");
    let msg = e.to_string();
    for needle in ["node.json", "'2xA30-24GB,numa=1'", "'2xA100-40GB,numa=1'", "its own state file (--sim-state PATH)"]
    {
        assert!(msg.contains(needle), "{msg} lacks {needle}");
    }
}

#[test]
fn a_replaced_file_is_noticed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.json");
    let a = SimBackend::open(&path, Some(&spec("2xA30"))).unwrap();
    std::fs::remove_file(&path).unwrap();
    SimBackend::open(&path, Some(&spec("1xH100-80GB"))).unwrap();
    let e = a.gpu_instances(0).unwrap_err();
    assert!(e.to_string().contains("replaced"), "{e}");
}

#[test]
fn corrupt_state_files_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &str, &str); 5] = [
        ("garbage.json", "this is { not json", "corrupt"),
        ("other.json", r#"{"hello": "world"}"#, "no 'format'"),
        ("future.json", r#"{"format": "tessera-sim-node/99"}"#, "unsupported format"),
        (
            "fields.json",
            r#"{"format": "tessera-sim-node/1", "spec": "1xA30", "generation": 0, "gpus": "x"}"#,
            "corrupt simulated-node state",
        ),
        (
            "overlap.json",
            r#"{"format": "tessera-sim-node/1", "spec": "1xA30", "generation": 0, "gpus": [
                {"mig": {"current": true, "pending": true}, "processes": [], "gpu_instances": [
                  {"id": 0, "profile_id": 0, "start": 0, "compute_instances": []},
                  {"id": 3, "profile_id": 14, "start": 0, "compute_instances": []}]}]}"#,
            "impossible",
        ),
    ];
    for (name, text, needle) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let e = SimBackend::open(&path, None).unwrap_err();
        let msg = e.to_string();
        assert_eq!(e.kind(), "state", "{name}: {msg}");
        assert!(msg.contains(&path.display().to_string()), "{name}: {msg}");
        assert!(msg.contains(needle), "{name}: {msg} lacks {needle}");
    }
    // A file that is not UTF-8.
    let path = dir.path().join("binary.json");
    std::fs::write(&path, [0xff, 0xfe, 0x00, 0x80]).unwrap();
    let e = SimBackend::open(&path, None).unwrap_err();
    assert_eq!(e.kind(), "state", "{e}");
    // Corruption after opening is reported by the next operation.
    let path = dir.path().join("later.json");
    let b = SimBackend::open(&path, Some(&spec("1xA30"))).unwrap();
    std::fs::write(&path, "{").unwrap();
    let e = b.mig_mode(0).unwrap_err();
    assert!(e.to_string().contains("later.json"), "{e}");
}

#[test]
fn a_path_that_cannot_be_created_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "x").unwrap();
    let e = SimBackend::open(&file.join("node.json"), None).unwrap_err();
    assert_eq!(e.kind(), "io", "{e}");
    assert!(e.to_string().contains("plain-file"), "{e}");
}

#[test]
fn mig_mode_change_stays_pending_while_the_gpu_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.json");
    let b = SimBackend::open(&path, Some(&spec("1xH100-80GB,mig=off"))).unwrap();
    assert_eq!(b.mig_mode(0).unwrap(), MigMode { current: false, pending: false });
    assert_eq!(b.attach_process(0, 0, 0, 5, "x").unwrap_err().kind(), "not_supported");
    b.attach_gpu_process(0, 5, "nvidia-persistenced").unwrap();
    let e = b.set_mig_mode(0, true).unwrap_err();
    assert_eq!(e.kind(), "in_use");
    assert!(e.to_string().contains("pid 5 (nvidia-persistenced)"), "{e}");
    // The pending mode is recorded, and outlives the process that asked.
    let again = SimBackend::open(&path, None).unwrap();
    assert_eq!(again.mig_mode(0).unwrap(), MigMode { current: false, pending: true });
    // Withdrawing the request clears it; asking again once idle applies it.
    assert_eq!(again.set_mig_mode(0, false).unwrap(), MigMode { current: false, pending: false });
    again.detach_process(0, 5).unwrap();
    assert_eq!(again.set_mig_mode(0, true).unwrap(), MigMode { current: true, pending: true });
    assert_eq!(again.attach_gpu_process(0, 6, "x").unwrap_err().kind(), "not_supported");
}

#[test]
fn process_bookkeeping_errors() {
    let b = SimBackend::in_memory(&spec("1xA100-40GB"));
    let gi = b.create_gpu_instance(0, 19, Some(0)).unwrap();
    assert_eq!(b.attach_process(0, gi.id, 0, 1, "x").unwrap_err().kind(), "not_found");
    assert_eq!(b.attach_process(0, 99, 0, 1, "x").unwrap_err().kind(), "not_found");
    let ci = b.create_compute_instance(0, gi.id, 0).unwrap();
    b.attach_process(0, gi.id, ci.id, 1, "x").unwrap();
    assert_eq!(b.attach_process(0, gi.id, ci.id, 1, "y").unwrap_err().kind(), "invalid_argument");
    assert_eq!(b.detach_process(0, 2).unwrap_err().kind(), "not_found");
    assert_eq!(b.attach_process(3, gi.id, ci.id, 9, "x").unwrap_err().kind(), "not_found");
    b.detach_process(0, 1).unwrap();
    assert!(b.processes(0).unwrap().is_empty());
}

#[test]
fn default_placement_gives_documented_gi_ids() {
    let b = SimBackend::in_memory(&spec("1xA100-40GB"));
    let ids: Vec<(u8, u32)> = [19, 19, 14]
        .iter()
        .map(|&p| {
            let gi = b.create_gpu_instance(0, p, None).unwrap();
            (gi.placement.start, gi.id)
        })
        .collect();
    assert_eq!(ids, [(6, 13), (4, 11), (0, 3)]);
    let e = b.create_gpu_instance(0, 9, None).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("Insufficient Resources") && msg.contains("3g.20gb (profile 9)"), "{msg}");
    assert!(msg.contains("GPU instance 13 (1g.5gb@6)"), "{msg}");
}

#[test]
fn gi_ids_fall_back_to_the_lowest_free() {
    let m = tessera_mig::catalog().model("A100-40GB").unwrap();
    assert_eq!(assign_gi_id(m, 6, 1, &[]), Some(13));
    assert_eq!(assign_gi_id(m, 6, 1, &[13]), Some(0));
    assert_eq!(assign_gi_id(m, 6, 1, &[0, 1, 13]), Some(2));
    assert_eq!(assign_gi_id(m, 6, 1, &(0..15).collect::<Vec<_>>()), None);
    let rtx = tessera_mig::catalog().model("RTX-PRO-6000").unwrap();
    assert_eq!(assign_gi_id(rtx, 6, 6, &[]), Some(2));
    assert_eq!(assign_gi_id(rtx, 0, 12, &[]), Some(0));
}

#[test]
fn profile_info_is_what_lgip_prints() {
    let b = SimBackend::in_memory(&spec("1xA100-40GB+1xB300"));
    let p = b.gpu_instance_profiles(0).unwrap();
    let three = p.iter().find(|p| p.id == 9).unwrap();
    assert_eq!(
        (three.name.as_str(), three.compute_slices, three.memory_mib, three.max_count, three.sm_count, three.ofas),
        ("3g.20gb", 3, 19968, 2, 42, 0)
    );
    // B300's catalog entry lacks memory and SM counts: memory is the 1g's slice of the 269 GiB
    // total its 7g.269gb name gives (one of 8 memory slices).
    let p = b.gpu_instance_profiles(1).unwrap();
    let one = p.iter().find(|p| p.id == 19).unwrap();
    assert_eq!(one.memory_mib, 269 * 1024 / 8);
}

/// Every catalog model, simulated: the whole GPU is at least its largest instance, and its total
/// is the catalog's (the reference's full-GPU memory wherever the reference has one; the catalog
/// test ties the two together). GH200-144GB, GB200 and B200 once failed this.
#[test]
fn every_simulated_model_is_at_least_its_largest_profile() {
    let models = &tessera_mig::catalog().models;
    let text: Vec<String> = models.iter().map(|m| format!("1x{}", m.name)).collect();
    let b = SimBackend::in_memory(&spec(&text.join("+")));
    let devices = b.devices().unwrap();
    assert_eq!(devices.len(), models.len());
    for (gpu, m) in models.iter().enumerate() {
        let d = &devices[gpu];
        assert_eq!(d.memory_total_mib, m.total_memory_mib(), "{}", m.name);
        if let Some(read) = m.memory_total_mib.filter(|_| !m.inferred_fields.iter().any(|f| f == "memory_total_mib")) {
            assert_eq!(d.memory_total_mib, read, "{}: the reference's total", m.name);
        }
        let profiles = b.gpu_instance_profiles(u32::try_from(gpu).unwrap()).unwrap();
        let largest = profiles.iter().max_by_key(|p| p.memory_mib).unwrap();
        assert!(
            d.memory_total_mib >= largest.memory_mib,
            "{}: {} MiB GPU, {} {} MiB",
            m.name,
            d.memory_total_mib,
            largest.name,
            largest.memory_mib
        );
        for p in &profiles {
            assert!(p.memory_mib > 0, "{} {}", m.name, p.name);
        }
        // go-nvlib names the full profile by the total rounded up to whole GiB: a driver with
        // this total would give it the catalog's name.
        let full = profiles.iter().find(|p| p.memory_slices == m.memory_slices && p.name.contains("gb")).unwrap();
        let named_gb = m.profile_by_id(full.id).and_then(tessera_mig::Profile::name_gb);
        assert_eq!(
            named_gb,
            Some(d.memory_total_mib.div_ceil(1024)),
            "{}: {} on a {} MiB GPU",
            m.name,
            full.name,
            d.memory_total_mib
        );
    }
}

#[test]
fn compute_instance_limits() {
    let b = SimBackend::in_memory(&spec("1xA100-40GB"));
    let gi = b.create_gpu_instance(0, 0, Some(0)).unwrap();
    // 7g: 3c at 0, then 3c at 4 (placements {0,4}), then a 1c fills slice 3.
    let a = b.create_compute_instance(0, gi.id, 2).unwrap();
    let c = b.create_compute_instance(0, gi.id, 2).unwrap();
    assert_eq!((a.placement.start, c.placement.start), (0, 4));
    let e = b.create_compute_instance(0, gi.id, 2).unwrap_err();
    assert!(e.to_string().contains("at most 2"), "{e}");
    let d = b.create_compute_instance(0, gi.id, 0).unwrap();
    assert_eq!(d.placement.start, 3);
    let e = b.create_compute_instance(0, gi.id, 0).unwrap_err();
    assert!(e.to_string().contains("7 of 7 compute slices"), "{e}");
}

#[test]
fn unknown_gpu_everywhere() {
    let b = SimBackend::in_memory(&spec("1xA30"));
    let e = b.create_gpu_instance(4, 0, None).unwrap_err();
    assert_eq!(e.to_string(), "GPU 4: not found: no GPU with index 4; the node has 1 GPU(s)");
    assert_eq!(b.processes(1).unwrap_err().kind(), "not_found");
    assert_eq!(b.set_mig_mode(1, true).unwrap_err().kind(), "not_found");
}

#[test]
fn xids_are_kept_in_the_state_and_consumed_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.json");
    let s = spec("2xA100-40GB");
    let a = SimBackend::open(&path, Some(&s)).unwrap();
    // Nothing pending: it waits out its timeout (as nvmlEventSetWait does) and returns none.
    let t = std::time::Instant::now();
    assert!(a.wait_xid_events(60).unwrap().is_empty());
    assert!(t.elapsed() >= std::time::Duration::from_millis(60), "returned after {:?}", t.elapsed());
    // An event raised by another handle (another process) while one waits ends the wait.
    let waiter = {
        let path = path.clone();
        let s = s.clone();
        std::thread::spawn(move || SimBackend::open(&path, Some(&s)).unwrap().wait_xid_events(30_000).unwrap())
    };
    std::thread::sleep(std::time::Duration::from_millis(50));
    a.raise_xid(1, 13, None, None).unwrap();
    assert_eq!(waiter.join().unwrap().iter().map(|e| e.xid).collect::<Vec<_>>(), [13]);
    a.raise_xid(1, 94, Some(7), Some(0)).unwrap();
    a.raise_xid(0, 79, None, None).unwrap();
    let e = a.raise_xid(5, 79, None, None).unwrap_err();
    assert!(matches!(e, BackendError::NotFound { .. }), "{e}");
    // Another handle on the same file (another process) sees and consumes them.
    let b = SimBackend::open(&path, Some(&s)).unwrap();
    let got = b.wait_xid_events(0).unwrap();
    assert_eq!(
        got,
        [
            XidEvent { gpu: 1, xid: 94, gpu_instance_id: Some(7), compute_instance_id: Some(0) },
            XidEvent { gpu: 0, xid: 79, gpu_instance_id: None, compute_instance_id: None },
        ]
    );
    assert!(a.wait_xid_events(0).unwrap().is_empty(), "delivered once");
    // A state file of an older build (no pending_xids) still reads.
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("pending_xids"), "empty lists are not written");
}

#[test]
fn fatal_xids_set_the_recovery_action_and_79_loses_the_gpu() {
    let b = SimBackend::in_memory(&spec("3xA100-40GB,mig=on"));
    let fresh = b.observe(0).unwrap();
    assert_eq!(fresh.recovery_action, Some(RecoveryAction::None));
    assert_eq!(fresh.reset_count, Some(0));
    // (Xid, the recovery action it leaves)
    let table = [
        (13, RecoveryAction::None),
        (94, RecoveryAction::None),
        (999, RecoveryAction::None),
        (48, RecoveryAction::GpuReset),
        (95, RecoveryAction::GpuReset),
    ];
    for (xid, want) in table {
        let b = SimBackend::in_memory(&spec("1xA100-40GB"));
        b.raise_xid(0, xid, None, None).unwrap();
        assert_eq!(b.observe(0).unwrap().recovery_action, Some(want), "Xid {xid}");
    }
    // A reboot request is not lowered by a later reset request.
    b.raise_xid(1, 79, None, None).unwrap();
    b.raise_xid(1, 48, None, None).unwrap();
    // GPU 1 is lost: every call for it fails, the others answer.
    type Call = fn(&SimBackend) -> Result<(), BackendError>;
    let calls: &[(&str, Call)] = &[
        ("observe", |b| b.observe(1).map(drop)),
        ("mig_mode", |b| b.mig_mode(1).map(drop)),
        ("set_mig_mode", |b| b.set_mig_mode(1, false).map(drop)),
        ("profiles", |b| b.gpu_instance_profiles(1).map(drop)),
        ("placements", |b| b.possible_placements(1, 9).map(drop)),
        ("create", |b| b.create_gpu_instance(1, 9, Some(0)).map(drop)),
        ("gpu_instances", |b| b.gpu_instances(1).map(drop)),
        ("processes", |b| b.processes(1).map(drop)),
        ("devices", |b| b.devices().map(drop)),
        ("reset", |b| b.reset_gpu(1)),
    ];
    for (name, call) in calls {
        let e = call(&b).unwrap_err();
        assert_eq!(e.kind(), "gpu_lost", "{name}: {e}");
        assert!(e.to_string().contains("GPU 1"), "{name}: {e}");
    }
    assert!(b.mig_mode(0).is_ok() && b.observe(2).is_ok());
    assert_eq!(b.lost_gpus().unwrap(), [1]);
    let partial = b.devices_partial().unwrap();
    assert!(partial[0].is_ok() && partial[1].is_err() && partial[2].is_ok());
    // The events are still delivered.
    assert_eq!(b.wait_xid_events(0).unwrap().len(), 2);
    let before = b.boot_id().unwrap();
    b.reboot().unwrap();
    assert_ne!(b.boot_id().unwrap(), before);
    let obs = b.observe(1).unwrap();
    assert_eq!((obs.recovery_action, obs.boot_id), (Some(RecoveryAction::None), Some(b.boot_id().unwrap())));
    assert!(b.devices().is_ok());
}

#[test]
fn a_reset_is_nvidia_smi_r() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.json");
    let b = SimBackend::open(&path, Some(&spec("2xA100-40GB,mig=on"))).unwrap();
    let gi = b.create_gpu_instance(0, 9, Some(4)).unwrap();
    let ci = b.create_compute_instance(0, gi.id, 2).unwrap();
    b.attach_process(0, gi.id, ci.id, 77, "trainer").unwrap();
    b.raise_xid(0, 48, None, None).unwrap();
    b.raise_xid(1, 13, None, None).unwrap();
    // Refused while a process uses the GPU, naming it.
    let e = b.reset_gpu(0).unwrap_err();
    assert_eq!(e.kind(), "in_use");
    assert!(e.to_string().contains("pid 77"), "{e}");
    b.detach_process(0, 77).unwrap();
    // A pending MIG-mode change takes effect at the reset.
    b.set_mig_mode(1, false).unwrap();
    b.reset_gpu(1).unwrap();
    b.attach_gpu_process(1, 5, "x").unwrap();
    assert!(b.set_mig_mode(1, true).is_err());
    assert_eq!(b.mig_mode(1).unwrap(), MigMode { current: false, pending: true });
    b.detach_process(1, 5).unwrap();
    b.reset_gpu(0).unwrap();
    b.reset_gpu(1).unwrap();
    assert_eq!(b.mig_mode(1).unwrap(), MigMode { current: true, pending: true });
    assert!(b.gpu_instances(0).unwrap().is_empty(), "a reset destroys the instances");
    assert!(b.mig_mode(0).unwrap().current, "and keeps MIG on");
    let obs = b.observe(0).unwrap();
    assert_eq!((obs.reset_count, obs.recovery_action), (Some(1), Some(RecoveryAction::None)));
    assert_eq!(b.observe(1).unwrap().reset_count, Some(2));
    assert!(b.wait_xid_events(0).unwrap().is_empty(), "unread events of a reset GPU are dropped");
    // The state persists; defaults are not written, so older builds' files still read.
    let reopened = SimBackend::open(&path, None).unwrap();
    assert_eq!(reopened.observe(0).unwrap().reset_count, Some(1));
    let fresh = dir.path().join("fresh.json");
    SimBackend::open(&fresh, Some(&spec("1xA30"))).unwrap();
    let text = std::fs::read_to_string(&fresh).unwrap();
    for key in ["reset_count", "recovery_action", "lost", "boots"] {
        assert!(!text.contains(key), "{key} written for a fresh node: {text}");
    }
}

/// Ampere keeps a MIG-mode change pending until the GPU is reset (counted); Hopper changes at
/// once without a reset. A process keeps either pending, and the change can be withdrawn.
#[test]
fn an_a100_mode_change_waits_for_a_reset_an_h100_does_not() {
    let b = SimBackend::in_memory(&spec("1xA100-40GB+1xH100-80GB"));
    let off = MigMode { current: false, pending: false };
    let on = MigMode { current: true, pending: true };
    // H100: at once, no reset.
    assert_eq!(b.set_mig_mode(1, false).unwrap(), off);
    assert_eq!(b.set_mig_mode(1, true).unwrap(), on);
    assert_eq!(b.observe(1).unwrap().reset_count, Some(0));
    // A100: pending until the reset, which applies it.
    assert_eq!(b.set_mig_mode(0, false).unwrap(), MigMode { current: true, pending: false });
    assert_eq!(b.mig_mode(0).unwrap(), MigMode { current: true, pending: false });
    assert_eq!(b.observe(0).unwrap().reset_count, Some(0));
    b.reset_gpu(0).unwrap();
    assert_eq!(b.mig_mode(0).unwrap(), off);
    assert_eq!(b.observe(0).unwrap().reset_count, Some(1));
    // Asking for the current mode withdraws a pending change.
    b.set_mig_mode(0, true).unwrap();
    assert_eq!(b.set_mig_mode(0, false).unwrap(), off);
    // A process keeps the change pending on either model, naming it.
    for gpu in [0, 1] {
        b.set_mig_mode(gpu, false).unwrap();
        b.reset_gpu(gpu).unwrap();
        b.attach_gpu_process(gpu, 40 + gpu, "train").unwrap();
        let e = b.set_mig_mode(gpu, true).unwrap_err();
        assert_eq!(e.kind(), "in_use");
        assert!(e.to_string().contains(&format!("pid {}", 40 + gpu)), "{e}");
        assert_eq!(b.mig_mode(gpu).unwrap(), MigMode { current: false, pending: true });
    }
}

/// `gpu-reset=off` (a passthrough VM): a reset is refused, so an A100's change stays pending
/// until a reboot.
#[test]
fn a_passthrough_gpu_refuses_a_reset_and_waits_for_a_reboot() {
    let b = SimBackend::in_memory(&spec("1xA100-40GB,gpu-reset=off"));
    assert_eq!(b.set_mig_mode(0, false).unwrap(), MigMode { current: true, pending: false });
    let e = b.reset_gpu(0).unwrap_err();
    assert_eq!(e.kind(), "not_supported");
    assert!(e.to_string().contains("Reset couldn't run") && e.to_string().contains("reboot"), "{e}");
    assert_eq!(b.mig_mode(0).unwrap(), MigMode { current: true, pending: false });
    b.reboot().unwrap();
    assert_eq!(b.mig_mode(0).unwrap(), MigMode { current: false, pending: false });
}

#[test]
fn an_unchanged_state_file_is_neither_parsed_nor_written_again() {
    let parses = || PARSES.with(std::cell::Cell::get);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.json");
    let s = spec("2xA100-40GB");
    let a = SimBackend::open(&path, Some(&s)).unwrap();
    let b = SimBackend::open(&path, None).unwrap();
    let gi = a.create_gpu_instance(0, 9, Some(4)).unwrap();
    let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    let before = (inode(&path), std::fs::read(&path).unwrap());
    // Reads, a probe and an Xid wait with nothing pending: no parse, no write.
    let n = parses();
    assert_eq!(a.gpu_instances(0).unwrap(), vec![gi.clone()]);
    a.mig_mode(1).unwrap();
    a.observe(0).unwrap();
    a.processes(0).unwrap();
    assert!(a.wait_xid_events(60).unwrap().is_empty());
    assert_eq!(parses(), n, "the writer's own state is cached");
    assert_eq!((inode(&path), std::fs::read(&path).unwrap()), before, "reads do not rewrite the file");
    // Another handle reads the file once, then no more while it is unchanged.
    b.gpu_instances(0).unwrap();
    b.gpu_instances(1).unwrap();
    assert!(b.wait_xid_events(0).unwrap().is_empty());
    assert_eq!(parses(), n + 1);
    // A change by one handle is seen by the other (its bytes differ), once.
    b.raise_xid(1, 48, None, None).unwrap();
    assert_eq!(a.wait_xid_events(0).unwrap().len(), 1);
    assert_eq!(a.observe(1).unwrap().recovery_action, Some(RecoveryAction::GpuReset));
    assert_eq!(parses(), n + 2);
    assert!(b.wait_xid_events(0).unwrap().is_empty(), "consumed once");
    // A failed change that changes nothing does not write either.
    let before = (inode(&path), std::fs::read(&path).unwrap());
    assert!(a.destroy_gpu_instance(0, 99).is_err());
    assert_eq!((inode(&path), std::fs::read(&path).unwrap()), before);
}

#[test]
fn activity_is_shared_through_the_state_file_and_replaced_whole() {
    use activity::{Activity, ActivityLine};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.json");
    let s = spec("1xH100-80GB+1xA100-40GB");
    let a = SimBackend::open(&path, Some(&s)).unwrap();
    let b = SimBackend::open(&path, Some(&s)).unwrap();
    let busy = Activity::new(0.5, 0.25, 0.0, 1.0);
    a.set_activity(0, Some(3), &busy).unwrap();
    a.set_activity(0, None, &Activity::new(0.1, 0.1, 0.1, 0.1)).unwrap();
    // Another handle (another process) sees the declaration.
    assert_eq!(b.activity(0, Some(3)).unwrap(), busy);
    assert_eq!(b.activity(0, Some(4)).unwrap(), Activity::IDLE);
    // Counters only grow, and a sample only reads the state (the file is not rewritten).
    let before = std::fs::read(&path).unwrap();
    let gi = a.create_gpu_instance(0, 19, Some(0)).unwrap();
    let g = gi.id;
    let with_instance = std::fs::read(&path).unwrap();
    let c1 = b.gpm_counters(0, None).unwrap();
    let c2 = b.gpm_counters(0, None).unwrap();
    assert!(c2.at_us >= c1.at_us && c2.busy_ns.iter().zip(c1.busy_ns).all(|(x, y)| *x >= y));
    assert_eq!(std::fs::read(&path).unwrap(), with_instance);
    assert_ne!(before, with_instance);
    // A whole-node declaration: what it does not name goes idle; one bad line changes nothing.
    let line = |gpu, gi, activity| ActivityLine { gpu, gpu_instance_id: gi, activity };
    let bad = [line(0, Some(g), busy), line(0, Some(15), busy)];
    assert_eq!(b.replace_activity(&bad, std::time::SystemTime::now()).unwrap_err().kind(), "invalid_argument");
    let no_gpu = [line(2, None, busy)];
    assert_eq!(b.replace_activity(&no_gpu, std::time::SystemTime::now()).unwrap_err().kind(), "not_found");
    let too_much = [line(0, None, Activity::new(1.5, 0.0, 0.0, 0.0))];
    assert_eq!(b.replace_activity(&too_much, std::time::SystemTime::now()).unwrap_err().kind(), "invalid_argument");
    assert_eq!(a.activity(0, Some(3)).unwrap(), busy);
    b.replace_activity(&[line(0, Some(g), busy)], std::time::SystemTime::now()).unwrap();
    assert_eq!(a.activity(0, Some(g)).unwrap(), busy);
    assert_eq!(a.activity(0, Some(3)).unwrap(), Activity::IDLE);
    assert_eq!(a.activity(0, None).unwrap(), Activity::IDLE);
    // The same declaration again changes nothing, so the file is not written.
    let now = std::fs::read(&path).unwrap();
    b.replace_activity(&[line(0, Some(g), busy)], std::time::SystemTime::now()).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), now);
    // Samples: an A100 has no GPM; an instance that is not there is not found.
    assert_eq!(a.gpm_counters(1, None).unwrap_err().kind(), "not_supported");
    assert_eq!(a.gpm_counters(0, Some(3)).unwrap_err().kind(), "not_found");
    assert!(a.gpm_counters(0, Some(g)).is_ok());
}

#[test]
fn an_activity_above_one_in_the_file_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.json");
    let s = spec("1xH100-80GB");
    let a = SimBackend::open(&path, Some(&s)).unwrap();
    a.set_activity(0, None, &activity::Activity::new(1.0, 0.0, 0.0, 0.0)).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("1000000"), "{text}");
    std::fs::write(&path, text.replacen("1000000", "1000001", 1)).unwrap();
    let e = a.gpm_counters(0, None).unwrap_err();
    assert!(e.to_string().contains("more than 1"), "{e}");
}
