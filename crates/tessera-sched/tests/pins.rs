//! Pinned requests: a front door's hold on instances another system already gave away (the
//! kubelet allocated them to a pod). They take exactly those instances or wait naming who holds
//! them; admission refuses a pin to an instance that is not there or that another job holds.

mod common;

use common::*;
use tessera_sched::{GpuRequest, JobRequest, PendingReason, PinnedInstance, Scheduler, SchedulerConfig, admit};

fn pin(model_name: &str, gpu: u32, profile_name: &str, start: u8) -> PinnedInstance {
    PinnedInstance { gpu, profile_id: pid(model(model_name), profile_name), start }
}

fn pinned(profile_name: &str, pins: Vec<PinnedInstance>) -> JobRequest {
    let mut r = req(profile(profile_name));
    r.pin = pins;
    r
}

#[test]
fn a_pinned_job_takes_exactly_its_instance_and_is_decided_first() {
    let m = "H100-80GB";
    // Two free 1g.10gb instances; the daemon's own job (1) is queued before the pod's (2) and
    // would take the best fit, the one at 0 (the lowest start); the pod holds the one at 0.
    let view = cluster(vec![gpu(0, m, None, &[("1g.10gb", 0, None), ("1g.10gb", 1, None)])]);
    let queue = vec![queued(1, req(profile("1g.10gb"))), queued(2, pinned("1g.10gb", vec![pin(m, 0, "1g.10gb", 0)]))];
    let mut s = Scheduler::new(SchedulerConfig::default());
    let d = s.schedule(10, &view, &queue, &[]);
    let st = starts(&d);
    assert_eq!(st[&2].iter().map(|p| (p.gpu, p.instance.start)).collect::<Vec<_>>(), [(0, 0)], "{d:?}");
    assert_eq!(st[&1].iter().map(|p| (p.gpu, p.instance.start)).collect::<Vec<_>>(), [(0, 1)], "{d:?}");
    // Alone, it still takes its own instance, not the best fit.
    let d = s.schedule(20, &view, &[queued(3, pinned("1g.10gb", vec![pin(m, 0, "1g.10gb", 1)]))], &[]);
    assert_eq!(starts(&d)[&3].iter().map(|p| (p.gpu, p.instance.start)).collect::<Vec<_>>(), [(0, 1)], "{d:?}");
}

#[test]
fn a_pinned_job_waits_naming_the_holder_and_never_reshapes_or_preempts() {
    let m = "H100-80GB";
    // Its instance is held by job 7 (priority 0); room to create another 1g.10gb elsewhere.
    let view = cluster(vec![gpu(0, m, None, &[("1g.10gb", 0, Some(7))])]);
    let mut r = pinned("1g.10gb", vec![pin(m, 0, "1g.10gb", 0)]);
    r.priority = 100;
    let running = vec![running(7, req(profile("1g.10gb")), 0, &[(0, inst(model(m), "1g.10gb", 0))])];
    let cfg = SchedulerConfig { preemption: true, ..SchedulerConfig::default() };
    let mut s = Scheduler::new(cfg);
    let d = s.schedule(10, &view, &[queued(2, r)], &running);
    assert!(starts(&d).is_empty() && reconfigures(&d).is_empty() && preempts(&d).is_empty(), "{d:?}");
    let (reason, detail) = pending(&d, 2).expect("pending");
    assert_eq!(reason, PendingReason::Capacity);
    assert!(detail.contains("GPU 0 1g.10gb@0") && detail.contains("job 7"), "{detail}");
}

#[test]
fn admission_refuses_a_pin_to_a_missing_or_held_instance() {
    let m = "H100-80GB";
    let cfg = SchedulerConfig::default();
    let view = cluster(vec![gpu(0, m, None, &[("1g.10gb", 0, Some(7)), ("2g.20gb", 2, None)])]);
    let cases: Vec<(&str, JobRequest, &[&str])> = vec![
        ("held", pinned("1g.10gb", vec![pin(m, 0, "1g.10gb", 0)]), &["GPU 0 1g.10gb@0", "held by job 7"]),
        ("absent", pinned("1g.10gb", vec![pin(m, 0, "1g.10gb", 6)]), &["GPU 0 has no 1g.10gb@6"]),
        ("no GPU", pinned("1g.10gb", vec![pin(m, 3, "1g.10gb", 0)]), &["no GPU 3"]),
        ("wrong profile", pinned("1g.10gb", vec![pin(m, 0, "2g.20gb", 2)]), &["GPU 0 2g.20gb@2", "does not fit"]),
    ];
    for (name, r, words) in cases {
        let e = admit(&r, &view, &cfg).expect_err(name);
        assert_eq!(e.field, "pin", "{name}: {e}");
        for w in words {
            assert!(e.detail.contains(w), "{name}: '{w}' missing from: {}", e.detail);
        }
    }
    admit(&pinned("2g.20gb", vec![pin(m, 0, "2g.20gb", 2)]), &view, &cfg).expect("a free pinned instance");
}

#[test]
fn pins_are_checked_with_the_request() {
    let m = "H100-80GB";
    let p = pin(m, 0, "1g.10gb", 0);
    let cases: Vec<(&str, JobRequest, &str)> = vec![
        (
            "ranks",
            {
                let mut r = pinned("1g.10gb", vec![p]);
                r.ranks = 2;
                r
            },
            "one rank",
        ),
        ("count", pinned("1g.10gb", vec![p, pin(m, 0, "1g.10gb", 1)]), "names 2 instances"),
        (
            "two GPUs",
            {
                let mut r = pinned("1g.10gb", vec![p, pin(m, 1, "1g.10gb", 0)]);
                r.gpu = GpuRequest::Instances(vec![profile("1g.10gb"), profile("1g.10gb")]);
                r
            },
            "one GPU",
        ),
        (
            "twice",
            {
                let mut r = pinned("1g.10gb", vec![p, p]);
                r.gpu = GpuRequest::Instances(vec![profile("1g.10gb"), profile("1g.10gb")]);
                r
            },
            "twice",
        ),
    ];
    for (name, r, word) in cases {
        let e = r.validate().expect_err(name);
        assert_eq!(e.field(), "pin", "{name}: {e}");
        assert!(e.to_string().contains(word), "{name}: '{word}' missing from: {e}");
    }
}
