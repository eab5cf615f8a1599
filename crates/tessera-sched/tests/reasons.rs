//! Every pending reason, provoked on purpose: the reason and the words of its detail that name
//! the real blocker. And reservations that are honest: a job that can never start holds no
//! room.

mod common;

use common::*;
use tessera_sched::{
    ClusterView, Decision, GpuRequest, JobRequest, PendingReason, RunningJob, Scheduler, SchedulerConfig, SliceQuota,
    Tenant,
};

const MIN: u64 = 60_000;

fn h100(instances: &[(&str, u8, Option<u64>)]) -> ClusterView {
    cluster(vec![gpu(0, "H100-80GB", Some(0), instances)])
}

/// One busy 1g.10gb at 0 (job 900): the rest of the GPU is free.
fn one_busy() -> (ClusterView, Vec<RunningJob>) {
    let m = model("H100-80GB");
    let c = h100(&[("1g.10gb", 0, Some(900))]);
    let mut r = req(GpuRequest::ComputeSlices { slices: 1 });
    r.runtime_estimate_ms = Some(10 * MIN);
    (c, vec![running(900, r, 0, &[(0, inst(m, "1g.10gb", 0))])])
}

struct Case {
    name: &'static str,
    config: SchedulerConfig,
    cluster: ClusterView,
    running: Vec<RunningJob>,
    /// Queued before the job under test (ids 1..), which is the last.
    ahead: Vec<JobRequest>,
    job: JobRequest,
    reason: PendingReason,
    words: &'static [&'static str],
}

fn with_host(mut c: ClusterView, cpus: u32, mem: u64) -> ClusterView {
    c.host = vec![host_node(0, 0..cpus, mem)];
    c
}

fn cases() -> Vec<Case> {
    let m = model("H100-80GB");
    let whole = || req(GpuRequest::WholeGpu);
    let one_g = || req(profile("1g.10gb"));
    let mut quota_job = req(profile("3g.40gb"));
    quota_job.tenant = "small".into();
    let mut host_cpu_job = one_g();
    host_cpu_job.cpus = 8;
    let mut host_mem_job = one_g();
    host_mem_job.mem_mib = 8 * 1024;
    let mut high = whole();
    high.priority = 5;
    let mut short = one_g();
    short.runtime_estimate_ms = Some(30 * MIN);
    let mut sick = h100(&[]);
    sick.gpus[0].healthy = false;
    sick.gpus[0].health_note = Some("Xid 79: GPU has fallen off the bus".into());
    let mut reconfiguring = h100(&[("1g.10gb", 0, Some(900))]);
    reconfiguring.gpus[0].reconfiguring = true;
    let (busy, busy_run) = one_busy();
    vec![
        Case {
            name: "capacity",
            config: SchedulerConfig::default(),
            cluster: h100(&[("7g.80gb", 0, Some(900))]),
            running: vec![running(900, whole(), 0, &[(0, inst(m, "7g.80gb", 0))])],
            ahead: vec![],
            job: one_g(),
            reason: PendingReason::Capacity,
            words: &["no room", "GPU 0 has 0 of 7 compute slices free"],
        },
        Case {
            name: "quota",
            config: SchedulerConfig {
                tenants: vec![Tenant {
                    name: "small".into(),
                    weight: 1.0,
                    quota: Some(SliceQuota { compute_slices: 2, memory_slices: 8 }),
                }],
                ..SchedulerConfig::default()
            },
            cluster: h100(&[]),
            running: vec![],
            ahead: vec![],
            job: quota_job,
            reason: PendingReason::Quota,
            words: &["tenant small", "quota 2"],
        },
        Case {
            name: "fragmentation",
            config: SchedulerConfig::default(),
            // 1g busy at 0 and 4: four free slices, but no 4g placement (it needs 0-3).
            cluster: h100(&[("1g.10gb", 0, Some(900)), ("1g.10gb", 4, Some(901))]),
            running: vec![
                running(900, one_g(), 0, &[(0, inst(m, "1g.10gb", 0))]),
                running(901, one_g(), 0, &[(0, inst(m, "1g.10gb", 4))]),
            ],
            ahead: vec![],
            job: req(profile("4g.40gb")),
            reason: PendingReason::Fragmentation,
            words: &["no legal placement for 4g.40gb", "(fragmentation)"],
        },
        Case {
            name: "reconfiguring",
            config: SchedulerConfig::default(),
            cluster: reconfiguring,
            running: vec![running(900, one_g(), 0, &[(0, inst(m, "1g.10gb", 0))])],
            ahead: vec![],
            job: one_g(),
            reason: PendingReason::Reconfiguring,
            words: &["GPU 0 is being repartitioned"],
        },
        Case {
            name: "reserved",
            config: SchedulerConfig::default(),
            cluster: busy.clone(),
            running: busy_run.clone(),
            ahead: vec![whole()],
            job: short,
            reason: PendingReason::Reserved,
            words: &["reserved for job 1", "30m would end after that"],
        },
        Case {
            name: "priority",
            config: SchedulerConfig::default(),
            cluster: h100(&[]),
            running: vec![],
            ahead: vec![high],
            job: whole(),
            reason: PendingReason::Priority,
            words: &["taken this round by higher-priority job(s) 1"],
        },
        Case {
            name: "health",
            config: SchedulerConfig::default(),
            cluster: sick,
            running: vec![],
            ahead: vec![],
            job: one_g(),
            reason: PendingReason::Health,
            words: &["only unhealthy GPU 0 (Xid 79: GPU has fallen off the bus)"],
        },
        Case {
            name: "host CPUs",
            config: SchedulerConfig::default(),
            cluster: with_host(h100(&[]), 4, 64 * 1024),
            running: vec![],
            ahead: vec![],
            job: host_cpu_job,
            reason: PendingReason::HostCpus,
            words: &["8 CPUs", "host NUMA node 0 has 4 free CPUs"],
        },
        Case {
            name: "host memory",
            config: SchedulerConfig::default(),
            cluster: with_host(h100(&[]), 16, 4 * 1024),
            running: vec![],
            ahead: vec![],
            job: host_mem_job,
            reason: PendingReason::HostMemory,
            words: &["8 GiB of memory", "host NUMA node 0 has 16 free CPUs and 4 GiB"],
        },
    ]
}

#[test]
fn every_reason_names_its_blocker() {
    let mut seen = std::collections::BTreeSet::new();
    for case in cases() {
        let mut q: Vec<_> = case.ahead.iter().enumerate().map(|(i, r)| queued(i as u64 + 1, r.clone())).collect();
        let id = q.len() as u64 + 1;
        q.push(queued(id, case.job.clone()));
        let d = Scheduler::new(case.config.clone()).schedule(0, &case.cluster, &q, &case.running);
        let (reason, detail) =
            pending(&d, id).unwrap_or_else(|| panic!("{}: job {id} did not wait: {d:#?}", case.name));
        assert_eq!(reason, case.reason, "{}: {detail}", case.name);
        for w in case.words {
            assert!(detail.contains(w), "{}: '{w}' missing from: {detail}", case.name);
        }
        seen.insert(reason);
    }
    // The table covers every reason there is.
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), PendingReason::ALL.to_vec());
}

/// A job whose host memory no NUMA node has, even once everything ends, gets no reservation:
/// the idle GPU it would have held takes other work.
#[test]
fn a_job_that_can_never_start_holds_no_reservation() {
    let (mut c, run) = one_busy();
    c.gpus[0].instances.push(tessera_sched::InstanceView::idle(inst(model("H100-80GB"), "1g.10gb", 1)));
    c.host = vec![host_node(0, 0..16, 12 * 1024)];
    let mut huge = req(profile("3g.40gb"));
    huge.mem_mib = 32 * 1024;
    let mut small = req(profile("1g.10gb"));
    small.mem_mib = 1024;
    let q = vec![queued(1, huge), queued(2, small)];
    let mut s = Scheduler::new(SchedulerConfig::default());
    let d = s.schedule(0, &c, &q, &run);
    let (reason, detail) = pending(&d, 1).unwrap();
    assert_eq!(reason, PendingReason::HostMemory, "{detail}");
    assert!(!detail.contains("reserved"), "{detail}");
    assert!(s.reservation().is_none(), "{:?}", s.reservation());
    assert!(starts(&d).contains_key(&2), "{d:#?}");
}

/// A job that will fit once running work ends (CPUs included) keeps its reservation.
#[test]
fn a_job_that_fits_once_work_ends_reserves() {
    let (mut c, mut run) = one_busy();
    // Job 900 holds 12 of the node's 16 CPUs; the whole-GPU job needs 8.
    c.host = vec![host_node(0, 12..16, 64 * 1024)];
    run[0].ranks[0].slices[0].host = vec![tessera_sched::HostShare { node: 0, cpus: (0..12).collect(), mem_mib: 1024 }];
    let mut w = req(GpuRequest::WholeGpu);
    w.cpus = 8;
    let mut s = Scheduler::new(SchedulerConfig::default());
    let d = s.schedule(0, &c, &[queued(1, w)], &run);
    let (_, detail) = pending(&d, 1).unwrap();
    assert!(detail.contains("room is reserved for it on GPU 0") && detail.contains("10m"), "{detail}");
    assert_eq!(s.reservation().map(|r| r.job), Some(1));
    assert!(matches!(d.last(), Some(Decision::Pending { .. })));
    // Blocked by CPUs alone (the GPU has room): it reserves too, until job 900's CPUs return.
    let (mut c, mut run) = one_busy();
    c.host = vec![host_node(0, 12..16, 64 * 1024)];
    run[0].ranks[0].slices[0].host = vec![tessera_sched::HostShare { node: 0, cpus: (0..12).collect(), mem_mib: 1024 }];
    let mut three = req(profile("3g.40gb"));
    three.cpus = 8;
    let mut s = Scheduler::new(SchedulerConfig::default());
    let d = s.schedule(0, &c, &[queued(1, three)], &run);
    let (reason, detail) = pending(&d, 1).unwrap();
    assert_eq!(reason, PendingReason::HostCpus, "{detail}");
    assert!(detail.contains("room is reserved for it"), "{detail}");
}
