//! The health rules, one table row each, and property tests of the recovery guarantees.

use proptest::prelude::*;

use super::*;

fn ev(gpu: u32, xid: u64, gi: Option<u32>) -> XidEvent {
    XidEvent { gpu, xid, gpu_instance_id: gi, compute_instance_id: gi.map(|_| 0) }
}

#[test]
fn the_table_is_sorted_and_classifies() {
    assert!(XIDS.windows(2).all(|w| w[0].0 < w[1].0), "XIDS must be sorted for binary search");
    use Recovery as R;
    use Severity as S;
    let table = [
        (8, S::Application, R::None),
        (13, S::Application, R::None),
        (31, S::Application, R::None),
        (43, S::Application, R::None),
        (45, S::Application, R::None),
        (109, S::Application, R::None),
        (63, S::Informational, R::None),
        (121, S::Informational, R::None),
        (94, S::Instance, R::Quiet),
        (38, S::GpuFatal, R::ResetGpu),
        (48, S::GpuFatal, R::ResetGpu),
        (61, S::GpuFatal, R::ResetGpu),
        (62, S::GpuFatal, R::ResetGpu),
        (64, S::GpuFatal, R::ResetGpu),
        (74, S::GpuFatal, R::ResetGpu),
        (92, S::GpuFatal, R::ResetGpu),
        (95, S::GpuFatal, R::ResetGpu),
        (119, S::GpuFatal, R::ResetGpu),
        (120, S::GpuFatal, R::ResetGpu),
        (140, S::GpuFatal, R::ResetGpu),
        (154, S::GpuFatal, R::ResetGpu),
        (79, S::GpuFatal, R::RebootNode),
        (12345, S::Unknown, R::Quiet),
        (0, S::Unknown, R::Quiet),
    ];
    for (xid, severity, recovery) in table {
        let c = classify(xid);
        assert_eq!((c.severity, c.recovery), (severity, recovery), "Xid {xid}");
        assert_eq!(c.xid, xid);
        assert!(!c.name.is_empty() && !c.action.is_empty());
    }
    // Every row is consistent: no fault for application and informational Xids, a fault for
    // every other.
    for &(xid, _, severity, recovery, _) in XIDS {
        let faults = !matches!(severity, S::Application | S::Informational);
        assert_eq!(recovery != R::None, faults, "Xid {xid}");
        assert_eq!(severity == S::GpuFatal, recovery >= R::ResetGpu, "Xid {xid}");
    }
    assert_eq!(classify(79).name, "GPU has fallen off the bus");
    assert_eq!(classify(48).name, "Double Bit ECC Error");
}

#[test]
fn recovery_actions_map_to_needs() {
    use RecoveryAction as A;
    let table = [
        (A::None, Recovery::None),
        (A::GpuReset, Recovery::ResetGpu),
        (A::DrainP2p, Recovery::ResetGpu),
        (A::DrainAndReset, Recovery::ResetGpu),
        (A::NodeReboot, Recovery::RebootNode),
    ];
    for (a, want) in table {
        assert_eq!(Recovery::for_action(a), want, "{a}");
        assert_eq!(RecoveryAction::from_nvml(a.to_nvml()), Some(a));
    }
    assert_eq!(RecoveryAction::from_nvml(99), None);
}

/// One step of a scenario, on GPU 0.
#[derive(Debug, Clone)]
enum Step {
    /// An Xid on the GPU.
    Xid(u64),
    /// An Xid contained to a GPU instance.
    XidIn(u64, u32),
    /// A successful probe: reset count, boot id, recovery action.
    Ok(Option<u64>, Option<&'static str>, Option<RecoveryAction>),
    /// A failed probe.
    Fail,
    /// An admin's clear.
    Clear,
    /// A GPU instance recreated.
    Recreated(u32),
}

/// What GPU 0 (and GPU instance 1) must be after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Healthy,
    Degraded,
    Unhealthy(Recovery),
    /// GPU degraded, GPU instance 1 unhealthy.
    InstanceUnhealthy,
}

fn state_of(t: &HealthTracker) -> Want {
    match (t.gpu_health(0), t.instance_health(0, 1)) {
        (Health::Unhealthy { needs, .. }, _) => Want::Unhealthy(needs),
        (Health::Degraded { .. }, Health::Unhealthy { .. }) => Want::InstanceUnhealthy,
        (Health::Degraded { .. }, _) => Want::Degraded,
        (Health::Healthy, _) => Want::Healthy,
    }
}

const Q: u64 = 1000;

use RecoveryAction as A;
use Step::*;
use Want::*;

fn ok(count: u64, boot: &'static str) -> Step {
    Ok(Some(count), Some(boot), Some(A::None))
}

type Scenario = (&'static str, Vec<(u64, Step, Want)>);

/// Every rule, one scenario each: (time, step, what GPU 0 must be afterwards).
fn scenarios() -> Vec<Scenario> {
    vec![
        (
            "Xid 48 (reset the GPU) does not recover after a quiet period",
            vec![
                (0, ok(0, "b1"), Healthy),
                (10, Xid(48), Unhealthy(Recovery::ResetGpu)),
                (100_000, ok(0, "b1"), Unhealthy(Recovery::ResetGpu)),
            ],
        ),
        (
            "Xid 48 recovers once the reset count grew and the probe succeeds",
            vec![(0, ok(3, "b1"), Healthy), (10, Xid(48), Unhealthy(Recovery::ResetGpu)), (20, ok(4, "b1"), Healthy)],
        ),
        (
            "a reset seen only once the probe succeeds",
            vec![
                (0, ok(0, "b1"), Healthy),
                (10, Xid(95), Unhealthy(Recovery::ResetGpu)),
                (20, Fail, Unhealthy(Recovery::ResetGpu)),
                (30, ok(1, "b1"), Healthy),
            ],
        ),
        (
            "the driver's recovery action back to none after asking counts as a reset",
            vec![
                (0, Ok(None, Some("b1"), Some(A::None)), Healthy),
                (10, Xid(140), Unhealthy(Recovery::ResetGpu)),
                (20, Ok(None, Some("b1"), Some(A::GpuReset)), Unhealthy(Recovery::ResetGpu)),
                (30, Ok(None, Some("b1"), Some(A::None)), Healthy),
            ],
        ),
        (
            "a recovery action of none that never asked is no reset",
            vec![
                (0, Ok(None, Some("b1"), Some(A::None)), Healthy),
                (10, Xid(119), Unhealthy(Recovery::ResetGpu)),
                (100_000, Ok(None, Some("b1"), Some(A::None)), Unhealthy(Recovery::ResetGpu)),
                (100_010, Ok(None, Some("b1"), None), Unhealthy(Recovery::ResetGpu)),
            ],
        ),
        (
            "a reboot counts as a reset",
            vec![(0, ok(0, "b1"), Healthy), (10, Xid(62), Unhealthy(Recovery::ResetGpu)), (20, ok(0, "b2"), Healthy)],
        ),
        (
            "Xid 79 (fallen off the bus) needs a reboot: a reset is not enough",
            vec![
                (0, ok(0, "b1"), Healthy),
                (10, Xid(79), Unhealthy(Recovery::RebootNode)),
                (20, Fail, Unhealthy(Recovery::RebootNode)),
                (30, ok(1, "b1"), Unhealthy(Recovery::RebootNode)),
                (100_000, ok(1, "b1"), Unhealthy(Recovery::RebootNode)),
                (100_010, ok(1, "b2"), Healthy),
            ],
        ),
        (
            "a reboot with the GPU still not answering keeps the fault",
            vec![
                (0, ok(0, "b1"), Healthy),
                (10, Xid(79), Unhealthy(Recovery::RebootNode)),
                (20, Fail, Unhealthy(Recovery::RebootNode)),
                (30, ok(0, "b2"), Healthy),
            ],
        ),
        (
            "an admin's clear counts as the reset; the next successful probe clears",
            vec![
                (0, ok(0, "b1"), Healthy),
                (10, Xid(48), Unhealthy(Recovery::ResetGpu)),
                (20, Clear, Unhealthy(Recovery::ResetGpu)),
                (30, Fail, Unhealthy(Recovery::ResetGpu)),
                (40, ok(0, "b1"), Healthy),
            ],
        ),
        (
            "an admin's clear counts as the reboot",
            vec![
                (0, ok(0, "b1"), Healthy),
                (10, Xid(79), Unhealthy(Recovery::RebootNode)),
                (20, Clear, Unhealthy(Recovery::RebootNode)),
                (30, ok(0, "b1"), Healthy),
            ],
        ),
        (
            "an Xid after the clear needs its own reset",
            vec![
                (0, ok(0, "b1"), Healthy),
                (10, Xid(48), Unhealthy(Recovery::ResetGpu)),
                (20, Clear, Unhealthy(Recovery::ResetGpu)),
                (30, Xid(48), Unhealthy(Recovery::ResetGpu)),
                (40, ok(0, "b1"), Unhealthy(Recovery::ResetGpu)),
                (50, ok(1, "b1"), Healthy),
            ],
        ),
        (
            "an Xid after the reset needs another reset",
            vec![
                (0, ok(0, "b1"), Healthy),
                (10, Xid(48), Unhealthy(Recovery::ResetGpu)),
                (20, ok(1, "b1"), Healthy),
                (30, Xid(48), Unhealthy(Recovery::ResetGpu)),
                (40, ok(1, "b1"), Unhealthy(Recovery::ResetGpu)),
            ],
        ),
        (
            "a fault raised before any observation takes its baseline from the first one",
            vec![
                (10, Xid(48), Unhealthy(Recovery::ResetGpu)),
                (20, ok(5, "b1"), Unhealthy(Recovery::ResetGpu)),
                (30, ok(6, "b1"), Healthy),
            ],
        ),
        (
            "a failed probe raises a quiet fault: quiet and a successful probe clear it",
            vec![
                (0, ok(0, "b1"), Healthy),
                (10, Fail, Unhealthy(Recovery::Quiet)),
                (10 + Q - 1, ok(0, "b1"), Unhealthy(Recovery::Quiet)),
                (10 + Q, ok(0, "b1"), Healthy),
            ],
        ),
        (
            "quiet is counted from the last failure",
            vec![
                (0, Fail, Unhealthy(Recovery::Quiet)),
                (900, Fail, Unhealthy(Recovery::Quiet)),
                (1500, ok(0, "b1"), Unhealthy(Recovery::Quiet)),
                (1900, ok(0, "b1"), Healthy),
            ],
        ),
        (
            "an unknown Xid degrades, not fences, and clears after a quiet period",
            vec![
                (0, ok(0, "b1"), Healthy),
                (10, Xid(999), Degraded),
                (10 + Q - 1, ok(0, "b1"), Degraded),
                (10 + Q, ok(0, "b1"), Healthy),
            ],
        ),
        (
            "a quiet fault clears at a reset too",
            vec![(0, ok(0, "b1"), Healthy), (10, Xid(999), Degraded), (20, ok(1, "b1"), Healthy)],
        ),
        (
            "Xid 94 is contained to its GPU instance and recovers when it is recreated",
            vec![(0, ok(0, "b1"), Healthy), (10, XidIn(94, 1), InstanceUnhealthy), (20, Recreated(1), Healthy)],
        ),
        (
            "Xid 94 in a GPU instance recovers after a quiet period",
            vec![
                (0, ok(0, "b1"), Healthy),
                (10, XidIn(94, 1), InstanceUnhealthy),
                (10 + Q - 1, ok(0, "b1"), InstanceUnhealthy),
                (10 + Q, ok(0, "b1"), Healthy),
            ],
        ),
        (
            "Xid 94 without a GPU instance (MIG off) makes the GPU unhealthy until quiet",
            vec![(0, ok(0, "b1"), Healthy), (10, Xid(94), Unhealthy(Recovery::Quiet)), (10 + Q, ok(0, "b1"), Healthy)],
        ),
        (
            "a parent's fatal error fences its instances; recreating one does not clear the GPU",
            vec![
                (0, ok(0, "b1"), Healthy),
                (10, Xid(48), Unhealthy(Recovery::ResetGpu)),
                (20, Recreated(1), Unhealthy(Recovery::ResetGpu)),
            ],
        ),
        (
            "application and informational Xids change nothing",
            vec![
                (0, ok(0, "b1"), Healthy),
                (10, Xid(13), Healthy),
                (20, XidIn(43, 1), Healthy),
                (30, Xid(63), Healthy),
            ],
        ),
        (
            "the driver asking for a reset is a fault without any Xid",
            vec![
                (0, ok(0, "b1"), Healthy),
                (10, Ok(Some(0), Some("b1"), Some(A::GpuReset)), Unhealthy(Recovery::ResetGpu)),
                (100_000, Ok(Some(0), Some("b1"), Some(A::GpuReset)), Unhealthy(Recovery::ResetGpu)),
                (100_010, Ok(Some(0), Some("b1"), Some(A::None)), Healthy),
            ],
        ),
        (
            "the driver asking for a reboot needs a reboot",
            vec![
                (0, ok(0, "b1"), Healthy),
                (10, Ok(Some(0), Some("b1"), Some(A::NodeReboot)), Unhealthy(Recovery::RebootNode)),
                (20, Ok(Some(1), Some("b1"), Some(A::None)), Unhealthy(Recovery::RebootNode)),
                (30, ok(1, "b2"), Healthy),
            ],
        ),
        (
            "Xid 154 follows the driver's recovery action, already known",
            vec![
                (0, Ok(Some(0), Some("b1"), Some(A::NodeReboot)), Unhealthy(Recovery::RebootNode)),
                (10, Xid(154), Unhealthy(Recovery::RebootNode)),
            ],
        ),
        (
            "Xid 154 follows the driver's recovery action, observed after",
            vec![
                (0, ok(0, "b1"), Healthy),
                (10, Xid(154), Unhealthy(Recovery::ResetGpu)),
                (20, Ok(Some(0), Some("b1"), Some(A::NodeReboot)), Unhealthy(Recovery::RebootNode)),
                (30, Ok(Some(1), Some("b1"), Some(A::None)), Unhealthy(Recovery::RebootNode)),
                (40, ok(1, "b2"), Healthy),
            ],
        ),
        (
            "a reset and a reboot fault together need the reboot",
            vec![
                (0, ok(0, "b1"), Healthy),
                (10, Xid(48), Unhealthy(Recovery::ResetGpu)),
                (20, Xid(79), Unhealthy(Recovery::RebootNode)),
                (30, ok(1, "b1"), Unhealthy(Recovery::RebootNode)),
                (40, ok(1, "b2"), Healthy),
            ],
        ),
    ]
}

fn apply_step(t: &mut HealthTracker, at: u64, step: &Step) {
    match step {
        Xid(x) => t.record(&ev(0, *x, None), at),
        XidIn(x, gi) => t.record(&ev(0, *x, Some(*gi)), at),
        Ok(count, boot, action) => t.observe(
            0,
            &Observation {
                probe_ok: true,
                reset_count: *count,
                boot_id: boot.map(str::to_string),
                recovery_action: *action,
            },
            at,
        ),
        Fail => t.observe(0, &Observation::failed(), at),
        Clear => t.clear(0, "alice", at),
        Recreated(gi) => t.instance_recreated(0, *gi, at),
    }
}

#[test]
fn every_rule_in_a_scenario() {
    let mut failures = Vec::new();
    for (name, steps) in scenarios() {
        let mut t = HealthTracker::new(Q);
        for (i, (at, step, want)) in steps.iter().enumerate() {
            apply_step(&mut t, *at, step);
            let got = state_of(&t);
            if got != *want {
                failures.push(format!("{name}: step {} ({step:?} at {at}): want {want:?}, got {got:?}", i + 1));
                break;
            }
            // A stored and reloaded tracker behaves the same.
            let json = serde_json::to_string(&t).unwrap();
            let back: HealthTracker = serde_json::from_str(&json).unwrap();
            if back != t {
                failures.push(format!("{name}: step {}: the tracker does not survive a round trip: {json}", i + 1));
                break;
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn unhealthy_says_what_it_waits_for() {
    let mut t = HealthTracker::new(60_000);
    t.set_clear_command("tessera admin health clear");
    t.observe(5, &Observation { probe_ok: true, reset_count: Some(0), boot_id: None, recovery_action: None }, 0);
    t.record(&ev(5, 48, None), 10);
    let Health::Unhealthy { reason, since_ms, needs, waiting_for } = t.gpu_health(5) else { panic!() };
    assert_eq!((since_ms, needs), (10, Recovery::ResetGpu));
    assert!(reason.contains("Double Bit ECC"), "{reason}");
    assert_eq!(waiting_for, "waiting for a GPU reset (nvidia-smi -r -i 5) or `tessera admin health clear 5`");
    assert!(t.instance_health(5, 3).to_string().contains("nvidia-smi -r -i 5"));
    t.record(&ev(6, 79, None), 10);
    let h = t.gpu_health(6);
    assert!(h.to_string().contains("waiting for a node reboot or `tessera admin health clear 6`"), "{h}");
    t.clear(6, "alice", 20);
    let h = t.gpu_health(6);
    assert!(h.to_string().contains("cleared by admin alice; waiting for a successful health probe"), "{h}");
    t.observe(7, &Observation::failed(), 0);
    let h = t.gpu_health(7);
    assert!(h.to_string().contains("does not answer") && h.to_string().contains("60 s without new errors"), "{h}");
    let shown = serde_json::to_value(t.gpu_health(5)).unwrap();
    assert_eq!(shown["state"], "unhealthy");
    assert_eq!(shown["needs"], "reset_gpu");
    assert!(shown["waiting_for"].as_str().unwrap().contains("nvidia-smi -r"));
}

#[test]
fn a_reset_that_cannot_be_seen_waits_for_a_reboot_or_a_clear() {
    use RecoveryAction as A;
    // Real GPUs through NVML: no reset count; the recovery-action field, or not even that.
    let nvml = |boot: &str, action: Option<A>| Observation {
        probe_ok: true,
        reset_count: None,
        boot_id: Some(boot.into()),
        recovery_action: action,
    };
    let waiting = |t: &HealthTracker, gpu: u32| match t.gpu_health(gpu) {
        Health::Unhealthy { waiting_for, .. } => waiting_for,
        other => panic!("GPU {gpu}: {other}"),
    };
    let mut t = HealthTracker::new(Q);
    t.set_clear_command("tessera mig health clear");
    t.observe_all(&[(0, nvml("b1", Some(A::None))), (1, nvml("b1", None))], 0);
    t.record(&ev(0, 48, None), 10);
    t.record(&ev(1, 95, None), 10);
    for gpu in [0, 1] {
        let w = waiting(&t, gpu);
        assert!(
            w.starts_with(&format!("waiting for a node reboot or `tessera mig health clear {gpu}`: ")),
            "GPU {gpu}: {w}"
        );
        assert!(w.contains("no reset count") && w.contains(&format!("nvidia-smi -r -i {gpu}")), "{w}");
    }
    assert!(t.instance_health(0, 3).to_string().contains("a node reboot or `tessera mig health clear 0`"));
    // The recovery is the same as before: a reset nobody sees leaves it unhealthy.
    t.observe_all(&[(0, nvml("b1", Some(A::None))), (1, nvml("b1", None))], Q * 10);
    assert!(t.gpu_health(0).is_unhealthy() && t.gpu_health(1).is_unhealthy());
    // Once the driver asks for a reset, the reset is seen (its action goes back to none).
    t.observe(0, &nvml("b1", Some(A::GpuReset)), Q * 11);
    assert_eq!(waiting(&t, 0), "waiting for a GPU reset (nvidia-smi -r -i 0) or `tessera mig health clear 0`");
    t.observe(0, &nvml("b1", Some(A::None)), Q * 12);
    assert!(t.gpu_health(0).is_healthy(), "{}", t.gpu_health(0));
    // A reboot clears GPU 1.
    t.observe(1, &nvml("b2", None), Q * 13);
    assert!(t.gpu_health(1).is_healthy(), "{}", t.gpu_health(1));
    // A quiet fault does not promise a GPU reset it would not see either.
    t.observe(1, &Observation::failed(), Q * 14);
    let w = waiting(&t, 1);
    assert!(w.ends_with(", a node reboot or `tessera mig health clear 1`") && !w.contains("GPU reset"), "{w}");
    // Where the reset count is seen, the quiet fault names the reset.
    let mut sim = HealthTracker::new(Q);
    sim.observe(0, &Observation { reset_count: Some(0), ..nvml("b1", Some(A::None)) }, 0);
    sim.observe(0, &Observation::failed(), 10);
    assert!(waiting(&sim, 0).ends_with(", a GPU reset or an admin's clear"), "{}", waiting(&sim, 0));
}

#[test]
fn the_clear_command_is_the_callers_and_not_stored() {
    let mut t = HealthTracker::new(Q);
    t.record(&ev(2, 79, None), 10);
    assert!(
        t.gpu_health(2).to_string().ends_with("waiting for a node reboot or an admin's clear"),
        "{}",
        t.gpu_health(2)
    );
    t.set_clear_command("tessera mig health clear");
    assert!(t.gpu_health(2).to_string().ends_with("or `tessera mig health clear 2`"), "{}", t.gpu_health(2));
    let json = serde_json::to_string(&t).unwrap();
    assert!(!json.contains("tessera mig health clear"), "{json}");
    let back = HealthTracker::restore(&json, Q).unwrap();
    assert!(back.gpu_health(2).to_string().ends_with("an admin's clear"), "{}", back.gpu_health(2));
}

#[test]
fn a_probe_result_is_an_observation() {
    let o = GpuObservation {
        reset_count: Some(3),
        recovery_action: Some(RecoveryAction::GpuReset),
        boot_id: Some("b".into()),
    };
    assert_eq!(Observation::from_result(Result::Ok(o.clone())), Observation::answered(&o));
    let lost = BackendError::GpuLost { gpu: crate::backend::GpuRef::index(1) };
    assert_eq!(Observation::from_result(Result::Err(lost)), Observation::failed());
}

#[test]
fn restore_sets_the_quiet_period_and_refuses_other_versions() {
    let mut t = HealthTracker::new(5000);
    t.record(&ev(0, 999, None), 1);
    let json = serde_json::to_string(&t).unwrap();
    let back = HealthTracker::restore(&json, 7).unwrap();
    assert_eq!(back.report().recovery_quiet_ms, 7);
    assert_eq!(back.gpu_health(0), t.gpu_health(0));
    let v2 = json.replacen("\"version\":1", "\"version\":2", 1);
    let e = HealthTracker::restore(&v2, 7).unwrap_err();
    assert!(matches!(e, RestoreError::Version { found: 2 }), "{e}");
    assert_eq!(e.to_string(), "health state version 2 is not the version this build reads (1)");
    let e = HealthTracker::restore("{not json", 7).unwrap_err();
    assert!(
        matches!(e, RestoreError::Unreadable { .. }) && e.to_string().starts_with("health state is not readable"),
        "{e}"
    );
    let e = HealthTracker::restore(r#"{"version":1,"recovery_quiet_ms":7,"gpus":[{"index":0},{"index":0}]}"#, 7)
        .unwrap_err();
    assert!(e.to_string().contains("GPU 0 twice"), "{e}");
}

#[test]
fn the_report_keeps_events_uuids_and_what_cleared() {
    let dev = |index: u32, uuid: &str| DeviceInfo {
        index,
        minor_number: index,
        uuid: uuid.into(),
        name: "NVIDIA H100 80GB HBM3".into(),
        pci_bus_id: String::new(),
        pci_device_id: 0x2330,
        pci_subsystem_id: 0,
        numa_node: None,
        local_cpus: vec![],
        memory_total_mib: 0,
    };
    let mut t = HealthTracker::new(Q);
    t.reconcile(&[dev(0, "GPU-a"), dev(1, "GPU-b")]);
    for i in 0..25 {
        t.record(&ev(1, 13, None), i);
    }
    t.observe(
        1,
        &Observation { probe_ok: true, reset_count: Some(0), boot_id: Some("b".into()), recovery_action: None },
        30,
    );
    t.record(&ev(1, 48, None), 40);
    t.record(&ev(1, 94, Some(2)), 41);
    let r = t.report();
    assert_eq!(r.version, STATE_VERSION);
    assert_eq!(
        r.gpus.iter().map(|g| (g.gpu, g.uuid.clone())).collect::<Vec<_>>(),
        [(0, Some("GPU-a".into())), (1, Some("GPU-b".into()))]
    );
    let g1 = &r.gpus[1];
    assert_eq!(g1.events.len(), EVENTS_KEPT, "the last {EVENTS_KEPT} events");
    assert_eq!(g1.events.last().unwrap().event.xid, 94);
    assert_eq!(g1.events.last().unwrap().class.recovery, Recovery::Quiet);
    assert_eq!(g1.events[EVENTS_KEPT - 2].class.name, "Double Bit ECC Error");
    assert!(g1.health.is_unhealthy());
    assert_eq!(g1.instances.len(), 1);
    assert!(r.any_unhealthy());
    assert!(r.gpus[0].health.is_healthy() && r.gpus[0].last_cleared.is_none());
    // The reset clears it, and says so.
    t.observe(
        1,
        &Observation { probe_ok: true, reset_count: Some(1), boot_id: Some("b".into()), recovery_action: None },
        50,
    );
    let r = t.report();
    assert!(!r.any_unhealthy());
    let c = r.gpus[1].last_cleared.clone().unwrap();
    assert_eq!(c.at_ms, 50);
    assert!(c.by.contains("reset count 0 → 1"), "{c:?}");
    assert_eq!(t.troubled_gpus(), Vec::<u32>::new());
    // The GPUs swap indices: their records follow the UUIDs.
    t.record(&ev(1, 48, None), 60);
    t.reconcile(&[dev(0, "GPU-b"), dev(1, "GPU-a")]);
    assert!(t.gpu_health(0).is_unhealthy() && t.gpu_health(1).is_healthy());
    assert_eq!(t.report().gpus[0].uuid.as_deref(), Some("GPU-b"));
    // A record at an index another GPU now has, whose GPU is gone, is dropped.
    t.reconcile(&[dev(0, "GPU-c"), dev(1, "GPU-a")]);
    assert!(t.gpu_health(0).is_healthy());
    assert_eq!(t.gpus(), [0, 1]);
}

#[test]
fn a_gpu_lost_from_the_start_takes_the_boot_id_from_the_others() {
    let ok = |boot: &str| Observation {
        probe_ok: true,
        reset_count: Some(0),
        boot_id: Some(boot.into()),
        recovery_action: Some(A::None),
    };
    // GPU 0 fell off the bus before the tracker ever saw it; GPU 1 answers.
    let mut t = HealthTracker::new(Q);
    t.observe_all(&[(0, Observation::failed()), (1, ok("b1"))], 0);
    t.record(&ev(0, 79, None), 10);
    t.observe_all(&[(0, Observation::failed()), (1, ok("b1"))], 20);
    assert_eq!(state_of(&t), Unhealthy(Recovery::RebootNode));
    // After the reboot, its first answer shows the new boot: both faults clear at once.
    t.observe_all(&[(0, ok("b2")), (1, ok("b2"))], 30);
    assert_eq!(state_of(&t), Healthy, "{}", t.gpu_health(0));
    // Observations of the node's boot through another GPU count for this one's faults too.
    t.record(&ev(0, 79, None), 40);
    t.observe(1, &ok("b3"), 50);
    t.observe(0, &ok("b3"), 60);
    assert_eq!(state_of(&t), Healthy);
}

#[test]
fn the_stored_form_is_versioned_and_stable() {
    let mut t = HealthTracker::new(5000);
    t.reconcile_ids(&[(0, "GPU-a".into())]);
    t.observe(
        0,
        &Observation {
            probe_ok: true,
            reset_count: Some(2),
            boot_id: Some("b1".into()),
            recovery_action: Some(RecoveryAction::None),
        },
        1,
    );
    t.record(&ev(0, 48, None), 2);
    t.record(&ev(0, 94, Some(3)), 3);
    t.record(&ev(0, 999, None), 4);
    let v = serde_json::to_value(&t).unwrap();
    assert_eq!(v["version"], 1);
    assert_eq!(v["recovery_quiet_ms"], 5000);
    let g = &v["gpus"][0];
    assert_eq!(g["index"], 0);
    assert_eq!(g["uuid"], "GPU-a");
    assert_eq!(g["faults"][0]["needs"], "reset_gpu");
    assert_eq!(g["faults"][0]["reset_count"], 2);
    assert_eq!(g["faults"][0]["boot_id"], "b1");
    assert_eq!(g["degraded"]["needs"], "quiet");
    assert_eq!(g["instances"][0]["gpu_instance_id"], 3);
    assert_eq!(g["events"][0]["event"]["xid"], 48);
    assert_eq!(g["events"][0]["class"]["severity"], "gpu_fatal");
    assert_eq!(g["seen"]["recovery_action"], "none");
    let back: HealthTracker = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(back, t);
    // A minimal document reads; another version is refused.
    let min: HealthTracker = serde_json::from_str(r#"{"version":1,"recovery_quiet_ms":7}"#).unwrap();
    assert_eq!(min, HealthTracker::new(7));
    let mut v2 = v;
    v2["version"] = 2.into();
    let e = serde_json::from_value::<HealthTracker>(v2).unwrap_err().to_string();
    assert!(e.contains("version 2"), "{e}");
    let e = serde_json::from_str::<HealthTracker>(
        r#"{"version":1,"recovery_quiet_ms":7,"gpus":[{"index":0},{"index":0}]}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("GPU 0 twice"), "{e}");
}

// ----- property tests -----

/// An operation on a two-GPU node.
#[derive(Debug, Clone)]
enum Op {
    Xid(XidEvent),
    /// GPU, probe ok, reset (count += 1), reboot (boot id changes), count known, boot known, action.
    Observe {
        gpu: u32,
        ok: bool,
        reset: bool,
        reboot: bool,
        count_known: bool,
        boot_known: bool,
        action: Option<RecoveryAction>,
    },
    Clear(u32),
    Recreated(u32, u32),
}

fn op() -> impl Strategy<Value = (Op, u64)> {
    let xid = prop::sample::select(vec![13u64, 31, 43, 45, 109, 94, 48, 79, 95, 119, 140, 154, 63, 999]);
    let gi = prop::option::of(0u32..4);
    let ev = (0u32..2, xid, gi).prop_map(|(gpu, xid, gi)| Op::Xid(ev(gpu, xid, gi)));
    let action = prop::option::of(prop::sample::select(vec![
        RecoveryAction::None,
        RecoveryAction::None,
        RecoveryAction::GpuReset,
        RecoveryAction::NodeReboot,
        RecoveryAction::DrainP2p,
        RecoveryAction::DrainAndReset,
    ]));
    let observe = (
        0u32..2,
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.8),
        action,
    )
        .prop_map(|(gpu, ok, reset, reboot, count_known, boot_known, action)| Op::Observe {
            gpu,
            ok,
            reset,
            reboot,
            count_known,
            boot_known,
            action,
        });
    let clear = (0u32..2).prop_map(Op::Clear);
    let rec = (0u32..2, 0u32..4).prop_map(|(g, gi)| Op::Recreated(g, gi));
    (prop_oneof![4 => ev, 5 => observe, 1 => clear, 1 => rec], 0u64..3000)
}

/// The hardware (each GPU's true reset count, the node's boot), and the node's boot as last
/// observed through any GPU.
#[derive(Debug, Clone, Default)]
struct Hw {
    count: [u64; 2],
    boot: u64,
    seen_boot: Option<u64>,
}

/// A reset-class or reboot-class fault the oracle knows is pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pending {
    /// Cleared by an admin: waiting for a successful probe.
    cleared: bool,
    /// The node's boot when it was raised (else the first this GPU saw after).
    boot: Option<u64>,
}

impl Pending {
    fn new(boot: Option<u64>) -> Option<Pending> {
        Some(Pending { cleared: false, boot })
    }
}

/// What the oracle knows of one GPU: what was last seen, and the reset-class and reboot-class
/// faults pending.
#[derive(Debug, Clone, Default)]
struct Oracle {
    last_count: Option<u64>,
    /// The last successful observation's recovery action.
    last_action: Option<RecoveryAction>,
    /// A non-`NONE` action was seen since the reset-class fault was raised (or just before).
    asked: bool,
    reset: Option<Pending>,
    reboot: Option<Pending>,
}

impl Oracle {
    /// A pending fault no recovery was observed for yet.
    fn waiting(p: Option<Pending>) -> bool {
        p.is_some_and(|p| !p.cleared)
    }
}

fn apply_op(t: &mut HealthTracker, hw: &mut Hw, oracle: &mut [Oracle; 2], op: &Op, now: u64) {
    match op {
        Op::Xid(e) => {
            t.record(e, now);
            let o = &mut oracle[e.gpu as usize];
            let class = classify(e.xid);
            let needs = if e.xid == 154 {
                class.recovery.max(o.last_action.map_or(Recovery::None, Recovery::for_action))
            } else {
                class.recovery
            };
            if needs == Recovery::RebootNode {
                o.reboot = Pending::new(hw.seen_boot);
            } else if needs == Recovery::ResetGpu {
                o.reset = Pending::new(hw.seen_boot);
                o.asked = o.last_action.is_some_and(|a| a != RecoveryAction::None) || o.asked;
            }
        }
        Op::Observe { gpu, ok, reset, reboot, count_known, boot_known, action } => {
            let g = *gpu as usize;
            if *reset {
                hw.count[g] += 1;
            }
            if *reboot {
                hw.boot += 1;
            }
            let (count, boot) = (hw.count[g], hw.boot);
            let obs = Observation {
                probe_ok: *ok,
                reset_count: (*ok && *count_known).then_some(count),
                boot_id: (*ok && *boot_known).then(|| format!("boot-{boot}")),
                recovery_action: if *ok { *action } else { None },
            };
            t.observe(*gpu, &obs, now);
            if !ok {
                return;
            }
            let o = &mut oracle[g];
            let grew = *count_known && o.last_count.is_some_and(|c| count > c);
            let rebooted = |p: &mut Pending| match p.boot {
                _ if !*boot_known => false,
                Some(b) => b != boot,
                None => {
                    p.boot = Some(boot);
                    false
                }
            };
            let driver_done = o.asked && obs.recovery_action == Some(RecoveryAction::None);
            if let Some(p) = o.reset.as_mut()
                && (rebooted(p) || p.cleared || grew || driver_done)
            {
                o.reset = None;
            }
            if let Some(p) = o.reboot.as_mut()
                && (rebooted(p) || p.cleared)
            {
                o.reboot = None;
            }
            if *count_known {
                o.last_count = Some(count);
            }
            if *boot_known {
                hw.seen_boot = Some(boot);
            }
            o.last_action = obs.recovery_action;
            if obs.recovery_action.is_some_and(|a| a != RecoveryAction::None) {
                o.asked = true;
            }
            match obs.recovery_action.map(Recovery::for_action) {
                Some(Recovery::RebootNode) => o.reboot = Pending::new(hw.seen_boot),
                Some(Recovery::ResetGpu) => o.reset = Pending::new(hw.seen_boot),
                _ => {}
            }
        }
        Op::Clear(g) => {
            t.clear(*g, "admin", now);
            let o = &mut oracle[*g as usize];
            for p in [o.reset.as_mut(), o.reboot.as_mut()].into_iter().flatten() {
                p.cleared = true;
            }
        }
        Op::Recreated(g, gi) => t.instance_recreated(*g, *gi, now),
    }
}

fn snapshot(t: &HealthTracker) -> Vec<Health> {
    (0..2)
        .flat_map(|g| {
            std::iter::once(t.gpu_health(g))
                .chain((0..4).map(move |gi| (g, gi)).map(|(g, gi)| t.instance_health(g, gi)))
        })
        .collect()
}

fn needs_of(h: &Health) -> Recovery {
    match h {
        Health::Unhealthy { needs, .. } => *needs,
        _ => Recovery::None,
    }
}

proptest! {
    /// The guarantee: a fault that needs a GPU reset (or a reboot) never clears until one was
    /// observed (the reset count grew, the boot id changed, the driver's recovery action went back
    /// to none after asking, or an admin cleared it), whatever the probes, events and time.
    #[test]
    fn reset_and_reboot_faults_never_clear_without_their_observation(ops in prop::collection::vec(op(), 0..60)) {
        let mut t = HealthTracker::new(1000);
        let mut hw = Hw::default();
        let mut oracle: [Oracle; 2] = Default::default();
        let mut now = 0;
        for (op, dt) in &ops {
            now += dt;
            apply_op(&mut t, &mut hw, &mut oracle, op, now);
            for g in 0..2u32 {
                let o = &oracle[g as usize];
                let h = t.gpu_health(g);
                if Oracle::waiting(o.reboot) {
                    prop_assert_eq!(needs_of(&h), Recovery::RebootNode, "GPU {} after {:?}: {}", g, op, h);
                } else if Oracle::waiting(o.reset) {
                    prop_assert!(needs_of(&h) >= Recovery::ResetGpu, "GPU {} after {:?}: {}", g, op, h);
                }
                if o.reset.is_some() || o.reboot.is_some() {
                    for gi in 0..4 {
                        prop_assert!(t.instance_health(g, gi).is_unhealthy());
                    }
                }
            }
        }
    }

    /// And the converse: once a reboot was observed with a successful probe (the baseline known),
    /// every fault clears.
    #[test]
    fn a_reboot_and_a_successful_probe_clear_everything(ops in prop::collection::vec(op(), 0..40)) {
        let mut t = HealthTracker::new(1000);
        let mut hw = Hw::default();
        let mut oracle: [Oracle; 2] = Default::default();
        let mut now = 0;
        for (op, dt) in &ops {
            now += dt;
            apply_op(&mut t, &mut hw, &mut oracle, op, now);
        }
        for (reboot, step) in [(false, 1), (true, 2)] {
            for g in 0..2 {
                let op = Op::Observe { gpu: g, ok: true, reset: reboot, reboot, count_known: true, boot_known: true, action: Some(RecoveryAction::None) };
                apply_op(&mut t, &mut hw, &mut oracle, &op, now + step);
            }
        }
        for h in snapshot(&t) {
            prop_assert!(h.is_healthy(), "{}", h);
        }
    }

    #[test]
    fn parent_fatal_makes_every_instance_unhealthy(ops in prop::collection::vec(op(), 0..30), gpu in 0u32..2, xid in prop::sample::select(vec![48u64, 79, 95, 119, 154])) {
        let mut t = HealthTracker::new(1000);
        let mut hw = Hw::default();
        let mut oracle: [Oracle; 2] = Default::default();
        let mut now = 0;
        for (op, dt) in &ops {
            now += dt;
            apply_op(&mut t, &mut hw, &mut oracle, op, now);
        }
        t.record(&ev(gpu, xid, None), now);
        prop_assert!(t.gpu_health(gpu).is_unhealthy());
        for gi in 0..15 {
            prop_assert!(t.instance_health(gpu, gi).is_unhealthy(), "instance {} of GPU {}", gi, gpu);
        }
    }

    #[test]
    fn application_xids_never_change_health(ops in prop::collection::vec(op(), 0..30), noise in prop::collection::vec((0u32..2, prop::sample::select(vec![8u64, 13, 31, 43, 45, 109, 63, 121]), prop::option::of(0u32..4)), 1..10)) {
        let mut plain = HealthTracker::new(1000);
        let mut noisy = HealthTracker::new(1000);
        let (mut hw1, mut hw2) = (Hw::default(), Hw::default());
        let (mut o1, mut o2): ([Oracle; 2], [Oracle; 2]) = Default::default();
        let mut now = 0;
        for (i, (op, dt)) in ops.iter().enumerate() {
            now += dt;
            apply_op(&mut plain, &mut hw1, &mut o1, op, now);
            apply_op(&mut noisy, &mut hw2, &mut o2, op, now);
            let (g, xid, gi) = noise[i % noise.len()];
            noisy.record(&ev(g, xid, gi), now);
            prop_assert_eq!(snapshot(&plain), snapshot(&noisy));
        }
    }

    /// The stored form round-trips whatever happened.
    #[test]
    fn the_tracker_round_trips(ops in prop::collection::vec(op(), 0..40)) {
        let mut t = HealthTracker::new(1000);
        let mut hw = Hw::default();
        let mut oracle: [Oracle; 2] = Default::default();
        let mut now = 0;
        for (op, dt) in &ops {
            now += dt;
            apply_op(&mut t, &mut hw, &mut oracle, op, now);
        }
        let json = serde_json::to_string(&t).unwrap();
        let back: HealthTracker = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&back, &t);
        prop_assert_eq!(back.report(), t.report());
    }
}

#[test]
fn xid_counts_count_every_event_by_code_and_are_kept() {
    let mut t = HealthTracker::new(1000);
    // More events than the report keeps: the counts still see every one.
    for i in 0..(EVENTS_KEPT as u64 + 5) {
        t.record(&ev(0, 13, Some(1)), i);
    }
    t.record(&ev(0, 48, None), 100);
    t.record(&ev(1, 94, Some(2)), 101);
    let back = HealthTracker::restore(&serde_json::to_string(&t).unwrap(), 1000).unwrap();
    for tracker in [&t, &back] {
        let r = tracker.report();
        let counts: Vec<_> = r.gpus.iter().map(|g| (g.gpu, g.xid_counts.clone())).collect();
        assert_eq!(
            counts,
            vec![(0, BTreeMap::from([(13, EVENTS_KEPT as u64 + 5), (48, 1)])), (1, BTreeMap::from([(94, 1)])),]
        );
    }
}
