//! GPUs of every kind a node may have, and who may share them: GPUs with MIG off, the driver's
//! limit on MIG devices per process, MPS shares per user, unhealthy instances, drained GPUs,
//! MIG mode switching, and jobs that must not be preempted.

mod common;

use common::*;
use tessera_sched::{
    ClusterView, Decision, GpuRequest, GpuView, JobRequest, Occupant, PendingReason, Scheduler, SchedulerConfig,
    Sharing,
};

fn sched() -> Scheduler {
    Scheduler::new(SchedulerConfig::default())
}

fn round(s: &mut Scheduler, c: &ClusterView, jobs: Vec<JobRequest>) -> Vec<Decision> {
    let q: Vec<_> = jobs.into_iter().enumerate().map(|(i, r)| queued(i as u64 + 1, r)).collect();
    s.schedule(0, c, &q, &[])
}

fn whole_gpu(index: u32, numa: Option<u32>) -> GpuView {
    let mut g = GpuView::whole(index, model("H100-80GB"));
    g.numa_node = numa;
    g
}

#[test]
fn gpus_with_mig_off_serve_whole_and_sized_requests_but_not_mig_profiles() {
    let m = model("H100-80GB");
    let full = inst(m, "7g.80gb", 0);
    let c = cluster(vec![whole_gpu(0, Some(0))]);
    for r in [
        req(GpuRequest::WholeGpu),
        req(GpuRequest::Memory { mib: 20 * 1024 }),
        req(GpuRequest::ComputeSlices { slices: 2 }),
    ] {
        let d = round(&mut sched(), &c, vec![r.clone()]);
        assert_eq!(starts(&d)[&1][0].instance, full, "{r:?}: {d:?}");
        assert!(reconfigures(&d).is_empty(), "a GPU with MIG off is never repartitioned: {d:?}");
    }
    let d = round(&mut sched(), &c, vec![req(profile("1g.10gb"))]);
    let (reason, detail) = pending(&d, 1).unwrap();
    assert_eq!(reason, PendingReason::Capacity);
    assert!(detail.contains("GPU 0 has MIG off and the request names a MIG profile"), "{detail}");
    // Two jobs, one whole GPU: the second waits, the GPU is not shared.
    let d = round(&mut sched(), &c, vec![req(GpuRequest::WholeGpu), req(GpuRequest::WholeGpu)]);
    assert_eq!(starts(&d).len(), 1);
    assert!(pending(&d, 2).unwrap().1.contains("taken this round by job(s) 1"), "{d:?}");
}

#[test]
fn a_mixed_node_gives_small_requests_mig_slices_and_multi_gpu_ranks_whole_gpus() {
    let m = model("H100-80GB");
    // GPU 0 and 1 MIG on (empty), GPU 2 and 3 MIG off; GPUs 0, 2 on node 0, 1, 3 on node 1.
    let mut mig0 = GpuView::new(0, m);
    mig0.numa_node = Some(0);
    let mut mig1 = GpuView::new(1, m);
    mig1.numa_node = Some(1);
    let c = cluster(vec![mig0, mig1, whole_gpu(2, Some(0)), whole_gpu(3, Some(1))]);
    // One slice: carved out of a MIG GPU, not a whole GPU with MIG off.
    let d = round(&mut sched(), &c, vec![req(GpuRequest::ComputeSlices { slices: 1 })]);
    assert!(reconfigures(&d).iter().any(|(g, _, _)| *g == 0), "{d:?}");
    // A rank of two whole GPUs: the two with MIG off (peer-to-peer works there).
    let mut two = req(GpuRequest::WholeGpu);
    two.gpus_per_rank = 2;
    let mut c2 = c.clone();
    for g in &mut c2.gpus[..2] {
        g.instances = vec![tessera_sched::InstanceView::idle(inst(m, "7g.80gb", 0))];
    }
    let d = round(&mut sched(), &c2, vec![two]);
    let ranks = rank_starts(&d);
    assert_eq!(ranks[&1].len(), 1);
    assert_eq!(ranks[&1][0].gpus(), vec![2, 3], "{d:?}");
}

#[test]
fn a_rank_on_one_numa_node_when_it_can() {
    let c = cluster(vec![whole_gpu(0, Some(0)), whole_gpu(1, Some(1)), whole_gpu(2, Some(0)), whole_gpu(3, Some(1))]);
    let mut two = req(GpuRequest::WholeGpu);
    two.gpus_per_rank = 2;
    let d = round(&mut sched(), &c, vec![two]);
    assert_eq!(rank_starts(&d)[&1][0].gpus(), vec![0, 2], "{d:?}");
}

#[test]
fn the_driver_limits_mig_devices_per_process() {
    let m = model("H100-80GB");
    let full = |i: u32| {
        let mut g = GpuView::new(i, m);
        g.instances = vec![tessera_sched::InstanceView::idle(inst(m, "7g.80gb", 0))];
        g
    };
    let mut two = req(GpuRequest::WholeGpu);
    two.gpus_per_rank = 2;
    let mut c = cluster(vec![full(0), full(1)]);
    // R570 and later: two MIG devices in one process are fine.
    let d = round(&mut sched(), &c, vec![two.clone()]);
    assert_eq!(rank_starts(&d)[&1][0].slices.len(), 2, "{d:?}");
    // Before R570: one MIG device per process.
    c.max_mig_devices_per_process = 1;
    let d = round(&mut sched(), &c, vec![two.clone()]);
    let (reason, detail) = pending(&d, 1).unwrap();
    assert_eq!(reason, PendingReason::Capacity);
    assert!(detail.contains("more than the 1 MIG device(s) the driver lets one process use"), "{detail}");
    // Nor a MIG device beside a GPU with MIG off.
    let c = ClusterView { max_mig_devices_per_process: 1, ..cluster(vec![full(0), whole_gpu(1, None)]) };
    assert!(starts(&round(&mut sched(), &c, vec![two.clone()])).is_empty());
    // Two ranks of one device each are fine before R570.
    let mut ranks = req(GpuRequest::WholeGpu);
    ranks.ranks = 2;
    let c = ClusterView { max_mig_devices_per_process: 1, ..cluster(vec![full(0), full(1)]) };
    assert_eq!(rank_starts(&round(&mut sched(), &c, vec![ranks]))[&1].len(), 2);
}

#[test]
fn an_mps_share_serves_one_user_at_a_time() {
    let m = model("H100-80GB");
    let mps = Sharing::Mps { active_thread_pct: 20, pinned_mem_mib: None };
    let mut c = cluster(vec![gpu(0, "H100-80GB", None, &[("3g.40gb", 0, None), ("3g.40gb", 4, None)])]);
    c.gpus[0].instances[0].occupants = vec![Occupant { job: 900, sharing: mps, user: 1000, pinned: false }];
    let mut mine = req(profile("3g.40gb"));
    mine.sharing = mps;
    for (user, want) in [(1000, inst(m, "3g.40gb", 0)), (1001, inst(m, "3g.40gb", 4))] {
        let q = vec![tessera_sched::QueuedJob { user, ..queued(1, mine.clone()) }];
        let d = sched().schedule(0, &c, &q, &[]);
        assert_eq!(starts(&d)[&1][0].instance, want, "user {user}: {d:?}");
    }
    // Another user with nowhere else to go waits rather than join.
    c.gpus[0].instances.truncate(1);
    let mut s = Scheduler::new(SchedulerConfig { repartition: false, ..SchedulerConfig::default() });
    let q = vec![tessera_sched::QueuedJob { user: 1001, ..queued(1, mine) }];
    let d = s.schedule(0, &c, &q, &[]);
    assert!(starts(&d).is_empty(), "{d:?}");
}

#[test]
fn unhealthy_instances_and_drained_gpus_get_no_work() {
    let mut c = cluster(vec![gpu(0, "H100-80GB", None, &[("1g.10gb", 0, None)])]);
    c.gpus[0].instances[0].healthy = false;
    let mut s = Scheduler::new(SchedulerConfig { repartition: false, ..SchedulerConfig::default() });
    let d = round(&mut s, &c, vec![req(profile("1g.10gb"))]);
    let (reason, detail) = pending(&d, 1).unwrap();
    assert_eq!(reason, PendingReason::Health, "{detail}");
    assert!(detail.contains("the instances that fit it are unhealthy: GPU 0 1g.10gb@0"), "{detail}");
    // Repartitioning may carve another one elsewhere on the GPU, never reuse the sick one.
    let d = round(&mut sched(), &c, vec![req(profile("1g.10gb"))]);
    assert!(starts(&d).is_empty(), "{d:?}");
    let mut c = cluster(vec![gpu(0, "H100-80GB", None, &[("1g.10gb", 0, None)])]);
    c.gpus[0].drained = true;
    let d = round(&mut sched(), &c, vec![req(profile("1g.10gb"))]);
    let (reason, detail) = pending(&d, 1).unwrap();
    assert_eq!(reason, PendingReason::Capacity);
    assert!(detail.contains("drained"), "{detail}");
}

#[test]
fn mig_modes_switch_only_when_switching_is_on_and_nothing_else_could_ever_serve() {
    let switching = || Scheduler::new(SchedulerConfig { mig_mode_switching: true, ..SchedulerConfig::default() });
    // All GPUs with MIG off, a MIG profile asked for.
    let c = cluster(vec![whole_gpu(0, None), whole_gpu(1, None)]);
    let d = round(&mut sched(), &c, vec![req(profile("1g.10gb"))]);
    assert!(!d.iter().any(|x| matches!(x, Decision::SetMigMode { .. })), "off by default: {d:?}");
    let d = round(&mut switching(), &c, vec![req(profile("1g.10gb"))]);
    assert!(d.contains(&Decision::SetMigMode { gpu: 0, enabled: true, for_job: 1 }), "{d:?}");
    assert_eq!(pending(&d, 1).unwrap().0, PendingReason::Reconfiguring);
    // A busy GPU is never switched; a job that will fit once work ends waits instead.
    let mut busy = c.clone();
    busy.gpus[0].instances[0].occupants =
        vec![Occupant { job: 900, sharing: Sharing::Exclusive, user: 0, pinned: false }];
    busy.gpus[1].instances[0].occupants =
        vec![Occupant { job: 901, sharing: Sharing::Exclusive, user: 0, pinned: false }];
    let d = round(&mut switching(), &busy, vec![req(profile("1g.10gb"))]);
    assert!(!d.iter().any(|x| matches!(x, Decision::SetMigMode { .. })), "{d:?}");
    let d = round(&mut switching(), &busy, vec![req(GpuRequest::WholeGpu)]);
    assert!(!d.iter().any(|x| matches!(x, Decision::SetMigMode { .. })), "{d:?}");
    // Before R570, a rank of two whole GPUs on a node of MIG GPUs: both switched off at once.
    let m = model("H100-80GB");
    let mut c = cluster(vec![GpuView::new(0, m), GpuView::new(1, m)]);
    c.max_mig_devices_per_process = 1;
    let mut two = req(GpuRequest::WholeGpu);
    two.gpus_per_rank = 2;
    let d = round(&mut switching(), &c, vec![two]);
    let switched: Vec<_> = d.iter().filter(|x| matches!(x, Decision::SetMigMode { enabled: false, .. })).collect();
    assert_eq!(switched.len(), 2, "{d:?}");
}

#[test]
fn jobs_that_may_not_be_requeued_are_never_preempted() {
    let m = model("H100-80GB");
    let c = cluster(vec![gpu(0, "H100-80GB", None, &[("7g.80gb", 0, Some(900))])]);
    let mut low = req(GpuRequest::WholeGpu);
    low.requeue = false;
    let run = vec![running(900, low, 0, &[(0, inst(m, "7g.80gb", 0))])];
    let mut high = req(GpuRequest::WholeGpu);
    high.priority = 10;
    let mut s = Scheduler::new(SchedulerConfig { preemption: true, ..SchedulerConfig::default() });
    let d = s.schedule(0, &c, &[queued(1, high)], &run);
    assert!(preempts(&d).is_empty(), "{d:?}");
}
