//! Pinned requests: a front door's hold on instances another system already gave away (the
//! kubelet allocated them to a pod). They take exactly those instances or wait naming who holds
//! them; admission refuses a pin to an instance that is not there or that another job holds.
//! A shared pin (a time-sliced or MPS replica) joins pinned holders of compatible sharing, as
//! many as the other system handed out; a job the scheduler places (exclusive or shared) never
//! gets an instance such a pin holds, and a shared pin never joins such a job.

mod common;

use common::*;
use tessera_sched::{
    GpuRequest, JobRequest, Occupant, PendingReason, PinnedInstance, Scheduler, SchedulerConfig, Sharing, admit,
};

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

/// A view of GPU 0 of `m` with one instance, occupied by pinned holds `(job, sharing)`.
fn shared_view(m: &str, profile_name: &str, occupants: &[(u64, Sharing)]) -> tessera_sched::ClusterView {
    let mut g = gpu(0, m, None, &[(profile_name, 0, None)]);
    g.instances[0].occupants =
        occupants.iter().map(|&(job, sharing)| Occupant { job, sharing, user: 1000, pinned: true }).collect();
    cluster(vec![g])
}

fn shared_pin(m: &str, profile_name: &str, sharing: Sharing) -> JobRequest {
    let mut r = pinned(profile_name, vec![pin(m, 0, profile_name, 0)]);
    r.sharing = sharing;
    r.requeue = false;
    r
}

const MPS_QUARTER: Sharing = Sharing::Mps { active_thread_pct: 25, pinned_mem_mib: Some(81_559 / 4) };

#[test]
fn shared_pins_join_compatible_holders_however_many_the_scheduler_would_allow() {
    let m = "H100-80GB";
    // The scheduler allows one time-sliced job per instance; the kubelet handed out five
    // replicas: every pinned share starts on the one instance, in one round and beside a
    // running one. MPS shares of NVIDIA's size (a quarter of the GPU's memory each, more than
    // the instance's memory together) join too: the kubelet bounds them.
    let cfg = SchedulerConfig { time_slice_replicas: 1, ..SchedulerConfig::default() };
    type Case = (&'static str, &'static str, Sharing, Vec<(u64, Sharing)>, Vec<u64>);
    let cases: Vec<Case> = vec![
        ("time-sliced, fresh", "1g.10gb", Sharing::TimeSlice, vec![], vec![1, 2, 3]),
        (
            "time-sliced, beside two",
            "1g.10gb",
            Sharing::TimeSlice,
            vec![(8, Sharing::TimeSlice), (9, Sharing::TimeSlice)],
            vec![1, 2, 3],
        ),
        ("MPS, fresh", "7g.80gb", MPS_QUARTER, vec![], vec![1, 2, 3, 4]),
        ("MPS, beside one", "7g.80gb", MPS_QUARTER, vec![(9, MPS_QUARTER)], vec![1, 2, 3]),
    ];
    for (name, p, sharing, occupants, jobs) in cases {
        let view = shared_view(m, p, &occupants);
        let queue: Vec<_> = jobs.iter().map(|&j| queued(j, shared_pin(m, p, sharing))).collect();
        let mut s = Scheduler::new(cfg.clone());
        let d = s.schedule(10, &view, &queue, &[]);
        let st = starts(&d);
        for j in &jobs {
            let at: Vec<(u32, u8)> =
                st.get(j).map(|v| v.iter().map(|x| (x.gpu, x.instance.start)).collect()).unwrap_or_default();
            assert_eq!(at, [(0, 0)], "{name}: job {j}: {d:?}");
        }
        admit(&shared_pin(m, p, sharing), &view, &cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn a_shared_pin_is_refused_naming_a_holder_it_cannot_share_with() {
    let m = "H100-80GB";
    let cfg = SchedulerConfig::default();
    let cases: Vec<(&str, Sharing, (u64, Sharing), &str)> = vec![
        ("exclusive holder", Sharing::TimeSlice, (7, Sharing::Exclusive), "held by job 7 (exclusive)"),
        (
            "MPS holder",
            Sharing::TimeSlice,
            (8, Sharing::Mps { active_thread_pct: 50, pinned_mem_mib: None }),
            "held by job 8 (MPS 50%)",
        ),
        ("time-sliced holder", MPS_QUARTER, (9, Sharing::TimeSlice), "held by job 9 (time-sliced)"),
    ];
    for (name, sharing, holder, words) in cases {
        let view = shared_view(m, "7g.80gb", &[holder]);
        let r = shared_pin(m, "7g.80gb", sharing);
        let e = admit(&r, &view, &cfg).expect_err(name);
        assert_eq!(e.field, "pin", "{name}: {e}");
        assert!(e.detail.contains("GPU 0 7g.80gb@0") && e.detail.contains(words), "{name}: {}", e.detail);
        let mut s = Scheduler::new(cfg.clone());
        let d = s.schedule(10, &view, &[queued(2, r)], &[]);
        assert!(starts(&d).is_empty(), "{name}: {d:?}");
        let (reason, detail) = pending(&d, 2).expect("pending");
        assert_eq!(reason, PendingReason::Capacity, "{name}");
        assert!(detail.contains(words), "{name}: {detail}");
    }
}

#[test]
fn an_exclusive_job_never_gets_an_instance_a_shared_pin_holds() {
    let m = "H100-80GB";
    // The whole GPU is one 7g.80gb, time-sliced by two pods' holds that may not be requeued: an
    // exclusive job of the daemon's waits, with repartitioning and preemption on, and at a
    // higher priority; in the same round as the pods' holds too.
    let cfg = SchedulerConfig { preemption: true, ..SchedulerConfig::default() };
    let hold = shared_pin(m, "7g.80gb", Sharing::TimeSlice);
    let at = [(0, inst(model(m), "7g.80gb", 0))];
    let running = vec![running(5, hold.clone(), 0, &at), running(6, hold.clone(), 0, &at)];
    let view = shared_view(m, "7g.80gb", &[(5, Sharing::TimeSlice), (6, Sharing::TimeSlice)]);
    for wants in [profile("1g.10gb"), profile("7g.80gb"), GpuRequest::WholeGpu] {
        let mut r = req(wants.clone());
        r.priority = 100;
        let mut s = Scheduler::new(cfg.clone());
        let d = s.schedule(10, &view, &[queued(3, r.clone())], &running);
        assert!(starts(&d).is_empty() && reconfigures(&d).is_empty() && preempts(&d).is_empty(), "{wants:?}: {d:?}");
        let fresh = shared_view(m, "7g.80gb", &[]);
        let mut s = Scheduler::new(cfg.clone());
        let d = s.schedule(20, &fresh, &[queued(1, hold.clone()), queued(2, hold.clone()), queued(3, r)], &[]);
        let st = starts(&d);
        assert!(st.contains_key(&1) && st.contains_key(&2) && !st.contains_key(&3), "{wants:?}: {d:?}");
    }
}

#[test]
fn shared_pins_are_valid_requests() {
    let m = "H100-80GB";
    for sharing in [Sharing::TimeSlice, MPS_QUARTER] {
        shared_pin(m, "1g.10gb", sharing).validate().unwrap_or_else(|e| panic!("{sharing:?}: {e}"));
    }
    // MPS still shares one instance: not a list of them.
    let mut r = shared_pin(m, "1g.10gb", MPS_QUARTER);
    r.pin.push(pin(m, 0, "1g.10gb", 1));
    r.gpu = GpuRequest::Instances(vec![profile("1g.10gb"), profile("1g.10gb")]);
    assert_eq!(r.validate().expect_err("MPS over a list").field(), "sharing");
}

/// Where `job` started: `(gpu, start)` of its slices (none: it did not start).
fn started_at(d: &[tessera_sched::Decision], job: u64) -> Vec<(u32, u8)> {
    starts(d).get(&job).map(|v| v.iter().map(|x| (x.gpu, x.instance.start)).collect()).unwrap_or_default()
}

#[test]
fn a_job_the_scheduler_places_never_joins_pinned_holds() {
    let m = "H100-80GB";
    // GPU 0: a 3g.40gb at 0 shared by two pods' pinned holds, a free 3g.40gb at 4. The
    // scheduler's own shared jobs (a `tessera submit` time-sliced job; an MPS job of the holds'
    // own user) would join the shared one first (joining ranks best); they take the free one,
    // or, when there is none, wait. Room for more replicas than the holds: 4.
    let cfg = SchedulerConfig { time_slice_replicas: 4, ..SchedulerConfig::default() };
    let quarter = Sharing::Mps { active_thread_pct: 25, pinned_mem_mib: None };
    for (name, sharing) in [("time-sliced", Sharing::TimeSlice), ("MPS", quarter)] {
        let holds = [(5, sharing), (6, sharing)];
        let hold = shared_pin(m, "3g.40gb", sharing);
        let at = [(0, inst(model(m), "3g.40gb", 0))];
        let running = vec![running(5, hold.clone(), 0, &at), running(6, hold.clone(), 0, &at)];
        let mut job = req(profile("3g.40gb"));
        job.sharing = sharing;
        let mine = tessera_sched::QueuedJob { id: 3, request: job, submitted_ms: 3, user: 1000 };
        for (room, want) in [(true, vec![(0, 4)]), (false, vec![])] {
            let mut view = shared_view(m, "3g.40gb", &holds);
            if room {
                view.gpus[0].instances.push(tessera_sched::InstanceView::idle(inst(model(m), "3g.40gb", 4)));
            }
            let mut s = Scheduler::new(cfg.clone());
            let d = s.schedule(10, &view, std::slice::from_ref(&mine), &running);
            assert_eq!(started_at(&d, 3), want, "{name}, room {room}: {d:?}");
            // Queued in the same round as the pods' holds, which are decided first.
            let mut fresh = shared_view(m, "3g.40gb", &[]);
            if room {
                fresh.gpus[0].instances.push(tessera_sched::InstanceView::idle(inst(model(m), "3g.40gb", 4)));
            }
            let queue = vec![mine.clone(), queued(1, hold.clone()), queued(2, hold.clone())];
            let mut s = Scheduler::new(cfg.clone());
            let d = s.schedule(20, &fresh, &queue, &[]);
            assert_eq!(started_at(&d, 1), [(0, 0)], "{name}, room {room}: {d:?}");
            assert_eq!(started_at(&d, 2), [(0, 0)], "{name}, room {room}: {d:?}");
            assert_eq!(started_at(&d, 3), want, "{name}, room {room}, one round: {d:?}");
        }
    }
}

#[test]
fn a_shared_pin_never_joins_a_job_the_scheduler_placed() {
    let m = "H100-80GB";
    // Job 7, time-sliced (or MPS, the same user), placed by the scheduler, holds the instance a
    // pod's replica is pinned to: admission refuses the pin naming it, and the scheduler keeps
    // it waiting.
    let cfg = SchedulerConfig { time_slice_replicas: 4, ..SchedulerConfig::default() };
    for sharing in [Sharing::TimeSlice, MPS_QUARTER] {
        let mut view = shared_view(m, "7g.80gb", &[(7, sharing)]);
        view.gpus[0].instances[0].occupants[0].pinned = false;
        let r = shared_pin(m, "7g.80gb", sharing);
        let e = admit(&r, &view, &cfg).expect_err("joins an unpinned job");
        assert_eq!(e.field, "pin", "{sharing:?}: {e}");
        assert!(e.detail.contains("held by job 7") && e.detail.contains("not pinned"), "{sharing:?}: {}", e.detail);
        let mut s = Scheduler::new(cfg.clone());
        let d =
            s.schedule(10, &view, &[tessera_sched::QueuedJob { id: 2, request: r, submitted_ms: 2, user: 1000 }], &[]);
        assert!(starts(&d).is_empty(), "{sharing:?}: {d:?}");
        let (reason, detail) = pending(&d, 2).expect("pending");
        assert_eq!(reason, PendingReason::Capacity, "{sharing:?}");
        assert!(detail.contains("held by job 7") && detail.contains("not pinned"), "{sharing:?}: {detail}");
    }
}
