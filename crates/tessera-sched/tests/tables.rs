//! Data-driven scheduling tables: best fit, sharing, CPUs and NUMA, priorities, quotas,
//! fragmentation, repartitioning, reservations and backfill, preemption, gangs, health.

mod common;

use common::*;
use tessera_mig::Step;
use tessera_sched::{
    ClusterView, Decision, GpuRequest, HostShare, JobRequest, NumaPolicy, Occupant, PendingReason, Scheduler,
    SchedulerConfig, SliceQuota, Tenant,
};

const MIN: u64 = 60_000;

fn sched() -> Scheduler {
    Scheduler::new(SchedulerConfig::default())
}

fn no_repartition() -> Scheduler {
    Scheduler::new(SchedulerConfig { repartition: false, ..SchedulerConfig::default() })
}

fn one_round(s: &mut Scheduler, c: &ClusterView, jobs: Vec<JobRequest>) -> Vec<Decision> {
    let q: Vec<_> = jobs.into_iter().enumerate().map(|(i, r)| queued(i as u64 + 1, r)).collect();
    let d = s.schedule(0, c, &q, &[]);
    for j in &q {
        let n = d
            .iter()
            .filter(|x| matches!(x, Decision::Start { job, .. } | Decision::Pending { job, .. } if *job == j.id))
            .count();
        assert_eq!(n, 1, "job {} got {n} answers: {d:#?}", j.id);
    }
    d
}

/// H100: 4g.40gb@0, 2g.20gb@4, 1g.10gb@6, all idle; no free space to create anything in.
fn fully_cut_h100() -> ClusterView {
    cluster(vec![gpu(0, "H100-80GB", Some(0), &[("4g.40gb", 0, None), ("2g.20gb", 4, None), ("1g.10gb", 6, None)])])
}

#[test]
fn best_fit_picks_the_smallest_sufficient_free_instance() {
    use GpuRequest::*;
    let m = model("H100-80GB");
    let cases: Vec<(GpuRequest, (&str, u8))> = vec![
        (ComputeSlices { slices: 1 }, ("1g.10gb", 6)),
        (ComputeSlices { slices: 2 }, ("2g.20gb", 4)),
        (ComputeSlices { slices: 3 }, ("4g.40gb", 0)),
        (ComputeSlices { slices: 4 }, ("4g.40gb", 0)),
        (Memory { mib: 5_000 }, ("1g.10gb", 6)),
        (Memory { mib: 15_000 }, ("2g.20gb", 4)),
        (Memory { mib: 30_000 }, ("4g.40gb", 0)),
        (profile("2g.20gb"), ("2g.20gb", 4)),
    ];
    for (gpu_req, (p, start)) in cases {
        let d = one_round(&mut no_repartition(), &fully_cut_h100(), vec![req(gpu_req.clone())]);
        let s = starts(&d);
        assert_eq!(s[&1][0].instance, inst(m, p, start), "{gpu_req:?}: {d:?}");
    }
    // Nothing sufficient: whole GPU or 5 compute slices wait.
    for gpu_req in [WholeGpu, ComputeSlices { slices: 5 }, profile("3g.40gb")] {
        let d = one_round(&mut no_repartition(), &fully_cut_h100(), vec![req(gpu_req.clone())]);
        assert!(starts(&d).is_empty(), "{gpu_req:?}");
    }
}

/// A rank with several whole GPUs: one placement per GPU, all for rank 0, on distinct GPUs,
/// each with its share of the rank's CPUs from that GPU's NUMA node.
#[test]
fn a_rank_with_several_whole_gpus_gets_distinct_gpus_and_local_cpus() {
    let mut c = cluster(vec![
        gpu(0, "H100-80GB", Some(0), &[("7g.80gb", 0, None)]),
        gpu(1, "H100-80GB", Some(0), &[("7g.80gb", 0, None)]),
        gpu(2, "H100-80GB", Some(1), &[("7g.80gb", 0, None)]),
        gpu(3, "H100-80GB", Some(1), &[("7g.80gb", 0, None)]),
    ]);
    c.host = vec![host_node(0, 0..4, 64 << 10), host_node(1, 4..8, 64 << 10)];
    let mut r = req(GpuRequest::WholeGpu);
    r.gpus_per_rank = 3;
    r.cpus = 5;
    r.mem_mib = 3000;
    assert_eq!(r.instances_per_rank(), 3);
    assert_eq!((0..3).map(|u| r.unit_cpus(u)).collect::<Vec<_>>(), [2, 2, 1]);
    let d = one_round(&mut sched(), &c, vec![r.clone()]);
    let s = starts(&d);
    let placed = &s[&1];
    assert_eq!(placed.len(), 3, "{d:?}");
    let gpus: std::collections::BTreeSet<u32> = placed.iter().map(|p| p.gpu).collect();
    assert_eq!(gpus.len(), 3, "{placed:?}");
    assert_eq!(placed.iter().map(|p| p.cpus().len()).sum::<usize>(), 5, "{placed:?}");
    for p in placed {
        let local = if p.gpu < 2 { 0..4 } else { 4..8 };
        assert!(p.cpus().iter().all(|c| local.contains(c)), "CPUs local to GPU {}: {placed:?}", p.gpu);
    }
    // Five GPUs' worth cannot fit four GPUs: the job waits, all or nothing.
    r.gpus_per_rank = 5;
    r.cpus = 0;
    let d = one_round(&mut sched(), &c, vec![r]);
    assert!(starts(&d).is_empty(), "{d:?}");
    assert!(pending(&d, 1).is_some());
}

#[test]
fn several_jobs_in_one_round_never_share_an_exclusive_instance() {
    let jobs = vec![req(GpuRequest::ComputeSlices { slices: 1 }); 4];
    let d = one_round(&mut no_repartition(), &fully_cut_h100(), jobs);
    let s = starts(&d);
    assert_eq!(s.len(), 3, "{d:?}");
    let mut used: Vec<_> = s.values().map(|r| r[0].instance).collect();
    used.sort();
    used.dedup();
    assert_eq!(used.len(), 3);
    assert_eq!(pending(&d, 4).unwrap().0, PendingReason::Capacity);
}

/// H100 with everything busy except `free`: 1g.10gb@0 (with the given occupants),
/// 1g.10gb@1, 2g.20gb@2, 3g.40gb@4 busy.
fn one_shareable(occupants: Vec<Occupant>) -> ClusterView {
    let mut c = cluster(vec![gpu(
        0,
        "H100-80GB",
        None,
        &[("1g.10gb", 0, None), ("1g.10gb", 1, Some(901)), ("2g.20gb", 2, Some(902)), ("3g.40gb", 4, Some(903))],
    )]);
    c.gpus[0].instances[0].occupants = occupants;
    c
}

fn mps(pct: u8, pinned: Option<u64>) -> tessera_sched::Sharing {
    tessera_sched::Sharing::Mps { active_thread_pct: pct, pinned_mem_mib: pinned }
}

#[test]
fn mps_shares_within_limits_and_refuses_beyond() {
    let m = model("H100-80GB");
    let occ = vec![Occupant { job: 900, sharing: mps(60, Some(4000)), user: 0, pinned: false }];
    // (pct, pinned, starts?)
    let cases: Vec<(u8, Option<u64>, bool)> = vec![
        (40, Some(4000), true),  // 100 %, 8,000 of 9,984 MiB
        (40, None, true),        // no pinned limit reserves nothing
        (41, Some(1000), false), // 101 %
        (30, Some(6000), false), // 10,000 MiB pinned > 9,984
    ];
    for (pct, pinned, ok) in cases {
        let mut r = req(GpuRequest::ComputeSlices { slices: 1 });
        r.sharing = mps(pct, pinned);
        let d = one_round(&mut sched(), &one_shareable(occ.clone()), vec![r]);
        match ok {
            true => assert_eq!(starts(&d)[&1][0].instance, inst(m, "1g.10gb", 0), "{pct} {pinned:?}"),
            false => assert_eq!(pending(&d, 1).unwrap().0, PendingReason::Capacity, "{pct} {pinned:?}: {d:?}"),
        }
    }
    // Two MPS jobs in one round share the free instance; a third that would pass 100 % waits.
    let jobs: Vec<JobRequest> = [50u8, 50, 10]
        .iter()
        .map(|p| {
            let mut r = req(GpuRequest::ComputeSlices { slices: 1 });
            r.sharing = mps(*p, None);
            r
        })
        .collect();
    let d = one_round(&mut sched(), &one_shareable(vec![]), jobs);
    let s = starts(&d);
    assert_eq!(s.len(), 2, "{d:?}");
    assert!(s.values().all(|r| r[0].instance == inst(m, "1g.10gb", 0)));
    // An exclusive job never joins an MPS instance, and MPS never joins an exclusive one.
    let d = one_round(&mut sched(), &one_shareable(occ), vec![req(GpuRequest::ComputeSlices { slices: 1 })]);
    assert!(starts(&d).is_empty());
}

#[test]
fn time_slice_replicas() {
    let ts = |n: usize| {
        (0..n)
            .map(|i| Occupant {
                job: 800 + i as u64,
                sharing: tessera_sched::Sharing::TimeSlice,
                user: 0,
                pinned: false,
            })
            .collect::<Vec<_>>()
    };
    let ts_req = || {
        let mut r = req(GpuRequest::ComputeSlices { slices: 1 });
        r.sharing = tessera_sched::Sharing::TimeSlice;
        r
    };
    // (replicas, already there, jobs queued, expected starts)
    for (replicas, there, queued_n, want) in [(4u32, 0usize, 6usize, 4usize), (4, 3, 2, 1), (4, 4, 1, 0), (2, 0, 3, 2)]
    {
        let mut s = Scheduler::new(SchedulerConfig { time_slice_replicas: replicas, ..SchedulerConfig::default() });
        let d = one_round(&mut s, &one_shareable(ts(there)), vec![ts_req(); queued_n]);
        assert_eq!(starts(&d).len(), want, "replicas {replicas}, {there} there, {queued_n} queued: {d:?}");
    }
}

fn two_gpu_two_nodes() -> ClusterView {
    let mut c = cluster(vec![
        gpu(0, "H100-80GB", Some(0), &[("3g.40gb", 0, None), ("3g.40gb", 4, Some(900))]),
        gpu(1, "H100-80GB", Some(1), &[("3g.40gb", 0, Some(901)), ("3g.40gb", 4, None)]),
    ]);
    c.host = vec![host_node(0, 0..8, 64 * 1024), host_node(1, 8..16, 64 * 1024)];
    c
}

#[test]
fn cpus_come_from_the_gpus_numa_node() {
    let mut r = req(profile("3g.40gb"));
    r.cpus = 4;
    r.mem_mib = 1024;
    let d = one_round(&mut sched(), &two_gpu_two_nodes(), vec![r.clone(), r.clone()]);
    let s = starts(&d);
    assert_eq!(s.len(), 2);
    for ranks in s.values() {
        let p = &ranks[0];
        let node = if p.gpu == 0 { 0 } else { 1 };
        assert_eq!(p.numa_node, Some(node));
        assert_eq!(p.cpus().len(), 4);
        assert!(p.cpus().iter().all(|c| (node * 8..node * 8 + 8).contains(c)), "{p:?}");
    }
    // Node 0 has only 2 CPUs left: a local job cannot use GPU 0, one with numa: any can.
    let mut c = two_gpu_two_nodes();
    c.host[0].free_cpus = vec![0, 1];
    c.gpus[1].instances[1].occupants = vec![Occupant { job: 902, sharing: Default::default(), user: 0, pinned: false }];
    let d = one_round(&mut sched(), &c, vec![r.clone()]);
    let (reason, detail) = pending(&d, 1).unwrap();
    assert_eq!(reason, PendingReason::HostCpus);
    assert!(detail.contains("host NUMA node 0") && detail.contains("2 free CPUs"), "{detail}");
    let mut any = r.clone();
    any.numa = NumaPolicy::Any;
    let d = one_round(&mut sched(), &c, vec![any]);
    let p = &starts(&d)[&1][0];
    assert_eq!((p.gpu, p.numa_node), (0, Some(1)));
    assert!(p.cpus().iter().all(|c| (8..16).contains(c)));
    // Memory counts too.
    let mut c = two_gpu_two_nodes();
    c.host[0].free_mem_mib = 512;
    c.host[1].free_mem_mib = 512;
    let d = one_round(&mut sched(), &c, vec![r]);
    assert_eq!(pending(&d, 1).unwrap().0, PendingReason::HostMemory);
}

#[test]
fn cpus_are_never_given_twice() {
    let mut c = two_gpu_two_nodes();
    c.gpus[0].instances[1].occupants.clear();
    c.gpus[1].instances[0].occupants.clear();
    let mut r = req(profile("3g.40gb"));
    r.cpus = 3;
    r.numa = NumaPolicy::Any;
    let d = one_round(&mut sched(), &c, vec![r; 4]);
    let s = starts(&d);
    assert_eq!(s.len(), 4);
    let mut all: Vec<u32> = s.values().flat_map(|r| r[0].cpus().clone()).collect();
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), n);
    assert_eq!(n, 12);
}

#[test]
fn higher_priority_goes_first() {
    let c = cluster(vec![gpu(0, "H100-80GB", None, &[("1g.10gb", 0, None), ("3g.40gb", 4, Some(900))])]);
    let low = req(GpuRequest::ComputeSlices { slices: 1 });
    let mut high = low.clone();
    high.priority = 10;
    let q = vec![queued(1, low), queued(2, high)];
    let d = no_repartition().schedule(0, &c, &q, &[]);
    assert!(starts(&d).contains_key(&2), "{d:?}");
    let (reason, detail) = pending(&d, 1).unwrap();
    assert_eq!(reason, PendingReason::Priority);
    assert!(detail.contains("higher-priority job(s) 2"), "{detail}");
}

#[test]
fn fair_share_follows_weights() {
    // Seven 1g slots, tenants of weight 1 and 3 that always have work; 10-minute jobs, a round a
    // minute, for 24 hours.
    let config = SchedulerConfig {
        tenants: vec![
            Tenant { name: "light".into(), weight: 1.0, quota: None },
            Tenant { name: "heavy".into(), weight: 3.0, quota: None },
        ],
        ..SchedulerConfig::default()
    };
    let c = cluster(vec![gpu(0, "H100-80GB", None, &(0..7).map(|s| ("1g.10gb", s, None)).collect::<Vec<_>>())]);
    let mut sim = Sim::new(Scheduler::new(config), c);
    let mut next = 1u64;
    for round in 0..(24 * 60) {
        let now = round * MIN;
        for tenant in ["light", "heavy"] {
            while sim.queue.iter().filter(|q| q.request.tenant == tenant).count() < 8 {
                let mut r = req(GpuRequest::ComputeSlices { slices: 1 });
                r.tenant = tenant.into();
                r.runtime_estimate_ms = Some(10 * MIN);
                sim.submit(next, r, Some(10 * MIN));
                next += 1;
            }
        }
        sim.step(now);
    }
    let time =
        |t: &str| -> u64 { sim.finished.iter().filter(|f| f.1 == t && f.2 >= 4 * 60 * MIN).map(|f| f.3 - f.2).sum() };
    let (light, heavy) = (time("light") as f64, time("heavy") as f64);
    let ratio = heavy / light;
    eprintln!("heavy/light slice-time ratio {ratio:.3}");
    assert!((2.6..=3.4).contains(&ratio), "heavy/light slice-time = {ratio:.2} ({heavy} / {light})");
    assert!(sim.sched.usage("heavy") > sim.sched.usage("light"));
}

#[test]
fn quota_refuses_with_the_quota_reason() {
    let m = model("H100-80GB");
    let config = SchedulerConfig {
        tenants: vec![Tenant {
            name: "ml-team".into(),
            weight: 1.0,
            quota: Some(SliceQuota { compute_slices: 8, memory_slices: 16 }),
        }],
        ..SchedulerConfig::default()
    };
    let c = cluster(vec![
        gpu(0, "H100-80GB", None, &[("3g.40gb", 0, Some(900)), ("3g.40gb", 4, Some(901))]),
        gpu(1, "H100-80GB", None, &[("3g.40gb", 0, None), ("3g.40gb", 4, None)]),
    ]);
    let mut mine = req(profile("3g.40gb"));
    mine.tenant = "ml-team".into();
    let run = vec![
        running(900, mine.clone(), 0, &[(0, inst(m, "3g.40gb", 0))]),
        running(901, mine.clone(), 0, &[(0, inst(m, "3g.40gb", 4))]),
    ];
    let mut other = mine.clone();
    other.tenant = "others".into();
    let q = vec![queued(1, mine.clone()), queued(2, other)];
    let d = Scheduler::new(config.clone()).schedule(0, &c, &q, &run);
    let (reason, detail) = pending(&d, 1).unwrap();
    assert_eq!(reason, PendingReason::Quota);
    assert!(detail.contains("tenant ml-team would hold 9 compute slices, quota 8"), "{detail}");
    assert!(starts(&d).contains_key(&2));
    // With one job running it fits (3 + 3 = 6 ≤ 8), and a second in the same round does not.
    let q = vec![queued(1, mine.clone()), queued(3, mine)];
    let d = Scheduler::new(config).schedule(0, &c, &q, &run[..1]);
    assert!(starts(&d).contains_key(&1));
    assert_eq!(pending(&d, 3).unwrap().0, PendingReason::Quota, "{d:?}");
}

#[test]
fn fragmentation_reason() {
    // Busy 1g's at units 1 and 5: five compute slices free, but every 3g placement is cut.
    let c = cluster(vec![gpu(0, "H100-80GB", None, &[("1g.10gb", 1, Some(900)), ("1g.10gb", 5, Some(901))])]);
    let d = one_round(&mut sched(), &c, vec![req(profile("3g.40gb"))]);
    let (reason, detail) = pending(&d, 1).unwrap();
    assert_eq!(reason, PendingReason::Fragmentation, "{detail}");
    assert!(
        detail.contains("needs 3g.40gb; GPU 0 has 5 free compute slices but no legal placement for 3g.40gb"),
        "{detail}"
    );
    assert!(reconfigures(&d).is_empty());
    // Without repartitioning, idle 1g's that cannot be merged are fragmentation too.
    let c = cluster(vec![gpu(
        0,
        "H100-80GB",
        None,
        &[
            ("1g.10gb", 0, None),
            ("1g.10gb", 1, None),
            ("1g.10gb", 2, None),
            ("1g.10gb", 3, None),
            ("3g.40gb", 4, Some(9)),
        ],
    )]);
    let d = one_round(&mut no_repartition(), &c, vec![req(profile("3g.40gb"))]);
    let (reason, detail) = pending(&d, 1).unwrap();
    assert_eq!(reason, PendingReason::Fragmentation);
    assert!(detail.contains("repartitioning is off"), "{detail}");
}

fn idle_ones_and_busy_3g(occupied: &[u8]) -> ClusterView {
    let mut insts: Vec<(&str, u8, Option<u64>)> =
        (0..4).map(|s| ("1g.10gb", s, occupied.contains(&s).then_some(800 + u64::from(s)))).collect();
    insts.push(("3g.40gb", 4, Some(900)));
    cluster(vec![gpu(0, "H100-80GB", None, &insts)])
}

#[test]
fn repartitions_idle_instances_for_a_waiting_job_then_starts_it() {
    let m = model("H100-80GB");
    let mut sim = Sim::new(sched(), idle_ones_and_busy_3g(&[]));
    sim.submit(1, req(profile("3g.40gb")), None);
    let d = sim.step(0);
    let rc = reconfigures(&d);
    assert_eq!(rc.len(), 1, "{d:?}");
    let (gpu_idx, plan, for_job) = &rc[0];
    assert_eq!((*gpu_idx, *for_job), (0, 1));
    let destroyed: Vec<_> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Destroy { instance, .. } => Some(*instance),
            _ => None,
        })
        .collect();
    assert_eq!(destroyed.len(), 4);
    assert!(plan.steps.contains(&Step::Create { instance: inst(m, "3g.40gb", 0) }));
    assert!(plan.unchanged.contains(&inst(m, "3g.40gb", 4)));
    let (reason, detail) = pending(&d, 1).unwrap();
    assert_eq!(reason, PendingReason::Reconfiguring);
    assert!(detail.contains("destroy idle 1g.10gb@0"), "{detail}");
    // Next round the new instance is there and the job starts on it.
    let d = sim.step(1000);
    assert_eq!(starts(&d)[&1][0].instance, inst(m, "3g.40gb", 0), "{d:?}");
}

#[test]
fn never_repartitions_occupied_instances() {
    // All four 1g's busy: nothing to reshape.
    let d = one_round(&mut sched(), &idle_ones_and_busy_3g(&[0, 1, 2, 3]), vec![req(profile("3g.40gb"))]);
    assert!(reconfigures(&d).is_empty());
    assert_eq!(pending(&d, 1).unwrap().0, PendingReason::Capacity);
    // One busy 1g in the way: the other three are not destroyed for nothing.
    let d = one_round(&mut sched(), &idle_ones_and_busy_3g(&[2]), vec![req(profile("3g.40gb"))]);
    assert!(reconfigures(&d).is_empty(), "{d:?}");
    assert_eq!(pending(&d, 1).unwrap().0, PendingReason::Fragmentation);
}

#[test]
fn repartition_destroys_the_fewest_idle_instances() {
    let m = model("H100-80GB");
    // Idle 1g.10gb @0 and @1 plus 2g.20gb@2 idle: a 2g.20gb is free already; a second 2g needs
    // only the two 1g's to go.
    let c = cluster(vec![gpu(
        0,
        "H100-80GB",
        None,
        &[("1g.10gb", 0, None), ("1g.10gb", 1, None), ("2g.20gb", 2, Some(5)), ("3g.40gb", 4, Some(6))],
    )]);
    let d = one_round(&mut sched(), &c, vec![req(profile("2g.20gb"))]);
    let (_, plan, _) = &reconfigures(&d)[0];
    assert_eq!(
        plan.steps,
        vec![
            Step::Destroy { instance: inst(m, "1g.10gb", 0), gpu_instance_id: None },
            Step::Destroy { instance: inst(m, "1g.10gb", 1), gpu_instance_id: None },
            Step::Create { instance: inst(m, "2g.20gb", 0) },
        ]
    );
    // An exactly fitting free instance wins over any repartition.
    let c = cluster(vec![gpu(0, "H100-80GB", None, &[("1g.10gb", 0, None), ("2g.20gb", 2, None)])]);
    let d = one_round(&mut sched(), &c, vec![req(profile("2g.20gb"))]);
    assert_eq!(starts(&d)[&1][0].instance, inst(m, "2g.20gb", 2));
}

#[test]
fn an_empty_gpu_is_cut_for_what_waits_in_one_plan() {
    let m = model("A100-40GB");
    let c = cluster(vec![gpu(0, "A100-40GB", None, &[])]);
    let mut sim = Sim::new(sched(), c);
    for id in 1..=3 {
        sim.submit(id, req(profile(if id < 3 { "3g.20gb" } else { "1g.5gb" })), None);
    }
    let d = sim.step(0);
    // One plan for the GPU, named after the first job, serving both 3g's; the 1g.5gb does not
    // fit next to two 3g.20gb (memory slices).
    let rc = reconfigures(&d);
    assert_eq!(rc.len(), 1, "{d:?}");
    assert_eq!(rc[0].2, 1);
    assert_eq!(rc[0].1.target.len(), 2);
    assert!(rc[0].1.target.iter().all(|i| i.profile_id == pid(m, "3g.20gb")));
    for id in [1, 2] {
        let (reason, detail) = pending(&d, id).unwrap();
        assert_eq!(reason, PendingReason::Reconfiguring);
        assert!(detail.contains("create 3g.20gb@"), "{detail}");
    }
    assert_eq!(pending(&d, 3).unwrap().0, PendingReason::Capacity);
    // Both start on their own new instance next round.
    let d = sim.step(1000);
    let s = starts(&d);
    assert_eq!(s.len(), 2, "{d:?}");
    assert_ne!(s[&1][0].instance, s[&2][0].instance);
}

#[test]
fn held_instances_go_to_the_job_they_were_made_for() {
    let m = model("H100-80GB");
    let mut sim = Sim::new(sched(), idle_ones_and_busy_3g(&[]));
    sim.submit(1, req(profile("3g.40gb")), None);
    sim.step(0);
    // A higher-priority 3g arrives; the new instance is still job 1's.
    let mut high = req(profile("3g.40gb"));
    high.priority = 9;
    sim.submit(2, high, None);
    let d = sim.step(1000);
    assert_eq!(starts(&d)[&1][0].instance, inst(m, "3g.40gb", 0), "{d:?}");
    assert!(!starts(&d).contains_key(&2));
}

#[test]
fn a_gpu_being_reconfigured_is_not_used() {
    let mut c = fully_cut_h100();
    c.gpus[0].reconfiguring = true;
    let d = one_round(&mut sched(), &c, vec![req(GpuRequest::ComputeSlices { slices: 1 })]);
    assert!(starts(&d).is_empty());
    assert_eq!(pending(&d, 1).unwrap().0, PendingReason::Reconfiguring);
}

/// One H100 cut into seven 1g's: three busy until minute 10, four idle.
fn reservation_cluster() -> (ClusterView, Vec<tessera_sched::RunningJob>) {
    let m = model("H100-80GB");
    let c = cluster(vec![gpu(
        0,
        "H100-80GB",
        None,
        &(0..7).map(|s| ("1g.10gb", s, (s < 3).then_some(900 + u64::from(s)))).collect::<Vec<_>>(),
    )]);
    let mut small = req(GpuRequest::ComputeSlices { slices: 1 });
    small.runtime_estimate_ms = Some(10 * MIN);
    let run = (0..3u8).map(|s| running(900 + u64::from(s), small.clone(), 0, &[(0, inst(m, "1g.10gb", s))])).collect();
    (c, run)
}

#[test]
fn reservation_and_backfill() {
    let (c, run) = reservation_cluster();
    let small = |est: Option<u64>| {
        let mut r = req(GpuRequest::ComputeSlices { slices: 1 });
        r.runtime_estimate_ms = est;
        r
    };
    let q = vec![
        queued(1, req(GpuRequest::WholeGpu)),
        queued(2, small(Some(5 * MIN))),  // ends before minute 10: backfills
        queued(3, small(Some(30 * MIN))), // would delay the 7g
        queued(4, small(None)),           // unknown: may not backfill
    ];
    let d = sched().schedule(0, &c, &q, &run);
    let (reason, detail) = pending(&d, 1).unwrap();
    assert_eq!(reason, PendingReason::Capacity, "{detail}");
    assert!(detail.contains("reserved for it on GPU 0") && detail.contains("10m"), "{detail}");
    assert!(starts(&d).contains_key(&2), "{d:?}");
    let (reason, detail) = pending(&d, 3).unwrap();
    assert_eq!(reason, PendingReason::Reserved);
    assert!(detail.contains("reserved for job 1") && detail.contains("30m"), "{detail}");
    assert_eq!(pending(&d, 4).unwrap().0, PendingReason::Reserved);

    // Without backfill, even the short job waits.
    let mut s = Scheduler::new(SchedulerConfig { backfill: false, ..SchedulerConfig::default() });
    let d = s.schedule(0, &c, &q, &run);
    assert_eq!(pending(&d, 2).unwrap().0, PendingReason::Reserved);
    assert!(pending(&d, 2).unwrap().1.contains("backfill is off"));

    // A higher-priority job is not held back by a lower one's reservation.
    let mut urgent = small(Some(60 * MIN));
    urgent.priority = 5;
    let q2 = vec![queued(1, req(GpuRequest::WholeGpu)), queued(5, urgent)];
    let d = sched().schedule(0, &c, &q2, &run);
    assert!(starts(&d).contains_key(&5));
}

#[test]
fn a_whole_gpu_job_does_not_starve_under_a_stream_of_small_jobs() {
    // Three 1g's are busy until minute 10, four are idle; two small jobs arrive every minute.
    // The 7g belongs to a tenant that has used far more, so fair share alone would always put
    // the small jobs first.
    let (c, run) = reservation_cluster();
    let mut sim = Sim::new(sched(), c);
    for r in &run {
        sim.runtime.insert(r.id, 10 * MIN);
    }
    sim.running = run;
    sim.sched.charge("big", 1e9, 0);
    let mut big = req(GpuRequest::WholeGpu);
    big.tenant = "big".into();
    big.runtime_estimate_ms = Some(30 * MIN);
    sim.submit(1, big, Some(30 * MIN));
    let mut next = 2;
    for round in 0..240u64 {
        let now = round * MIN;
        for k in 0..2u64 {
            let est = (3 + (round * 7 + k * 5) % 18) * MIN;
            let mut r = req(GpuRequest::ComputeSlices { slices: 1 });
            r.tenant = "small".into();
            r.runtime_estimate_ms = Some(est);
            sim.submit(next, r, Some(est));
            next += 1;
        }
        sim.step(now);
        if sim.started_at.contains_key(&1) {
            break;
        }
    }
    let at = sim.started_at.get(&1).copied().expect("the 7g job started");
    let small: Vec<(u64, u64)> = sim.started_at.iter().filter(|(j, _)| **j != 1).map(|(j, t)| (*j, *t)).collect();
    eprintln!("7g started at minute {}; small starts before it: {small:?}", at / MIN);
    // It starts one round after the busy 1g's end (one round to repartition).
    assert!(at <= 12 * MIN, "the 7g waited {} minutes", at / MIN);
    // Small jobs ran meanwhile (the idle 1g's at first, then backfill), and every one that
    // started after the reservation was made ended before the 7g needed the GPU.
    assert!(small.len() >= 4, "{small:?}");
    assert!(small.iter().any(|(_, t)| *t > 0), "nothing backfilled: {small:?}");
    for (j, t) in &small {
        if *t > 0 {
            assert!(t + sim.runtime[j] <= at, "job {j} started at {t} and ran past the 7g's start {at}");
        }
    }
}

#[test]
fn preemption_when_enabled() {
    let m = model("H100-80GB");
    let c = cluster(vec![gpu(0, "H100-80GB", None, &[("7g.80gb", 0, Some(900))])]);
    let low = req(GpuRequest::WholeGpu);
    let run = vec![running(900, low, 0, &[(0, inst(m, "7g.80gb", 0))])];
    let mut high = req(profile("3g.40gb"));
    high.priority = 10;
    let q = vec![queued(1, high)];
    // Off: it waits.
    let d = sched().schedule(0, &c, &q, &run);
    assert!(preempts(&d).is_empty());
    assert_eq!(pending(&d, 1).unwrap().0, PendingReason::Capacity);
    // On: the low job is preempted, then the GPU is cut, then the job starts.
    let config = SchedulerConfig { preemption: true, ..SchedulerConfig::default() };
    let mut sim = Sim::new(Scheduler::new(config), c);
    sim.running = run;
    sim.queue = q;
    let d = sim.step(0);
    assert_eq!(preempts(&d), vec![(900, 1)]);
    let (reason, detail) = pending(&d, 1).unwrap();
    assert_eq!(reason, PendingReason::Priority);
    assert!(detail.contains("preempting lower-priority job(s) 900 (priority 0)"), "{detail}");
    let d = sim.step(1000);
    let rc = reconfigures(&d);
    assert_eq!(rc.len(), 1, "{d:?}");
    let made = rc[0].1.target.clone();
    assert_eq!(made.len(), 1);
    assert_eq!(made[0].profile_id, pid(m, "3g.40gb"));
    let d = sim.step(2000);
    assert_eq!(starts(&d)[&1][0].instance, made[0], "{d:?}");
    // Equal priority never preempts.
    let mut same = req(profile("3g.40gb"));
    same.priority = 0;
    let mut s = Scheduler::new(SchedulerConfig { preemption: true, ..SchedulerConfig::default() });
    let c = cluster(vec![gpu(0, "H100-80GB", None, &[("7g.80gb", 0, Some(900))])]);
    let run = vec![running(900, req(GpuRequest::WholeGpu), 0, &[(0, inst(m, "7g.80gb", 0))])];
    let d = s.schedule(0, &c, &[queued(1, same)], &run);
    assert!(preempts(&d).is_empty());
}

#[test]
fn preemption_never_counts_cpus_on_a_host_node_the_view_lacks() {
    // The low job's CPUs are on host node 1, which the view no longer has (its facts changed):
    // stopping it frees nothing the high job could use, so it must not be preempted.
    let m = model("H100-80GB");
    let mut c = cluster(vec![gpu(0, "H100-80GB", Some(0), &[("7g.80gb", 0, Some(900))])]);
    c.host = vec![host_node(0, 0..2, 64 << 10)];
    let mut low = running(900, req(GpuRequest::WholeGpu), 0, &[(0, inst(m, "7g.80gb", 0))]);
    low.ranks[0].slices[0].host = vec![HostShare { node: 1, cpus: (8..16).collect(), mem_mib: 1 << 10 }];
    let mut high = req(profile("3g.40gb"));
    high.priority = 10;
    high.cpus = 4;
    high.numa = NumaPolicy::Any;
    let mut s = Scheduler::new(SchedulerConfig { preemption: true, ..SchedulerConfig::default() });
    let d = s.schedule(0, &c, &[queued(1, high)], &[low]);
    assert!(preempts(&d).is_empty(), "{d:?}");
    assert_eq!(pending(&d, 1).unwrap().0, PendingReason::Capacity, "{d:?}");
}

#[test]
fn gangs_are_all_or_nothing() {
    let c = cluster(vec![gpu(0, "H100-80GB", None, &[("3g.40gb", 0, None), ("3g.40gb", 4, None)])]);
    let mut three = req(profile("3g.40gb"));
    three.ranks = 3;
    let mut two = three.clone();
    two.ranks = 2;
    // Three ranks cannot all start: nothing starts for it, and a later job still gets the room.
    let d = one_round(&mut no_repartition(), &c, vec![three.clone(), req(profile("3g.40gb"))]);
    assert!(!starts(&d).contains_key(&1));
    let (_, detail) = pending(&d, 1).unwrap();
    assert!(detail.contains("3 ranks × 3g.40gb"), "{detail}");
    assert!(starts(&d).contains_key(&2));
    let d = one_round(&mut no_repartition(), &c, vec![two]);
    let s = &starts(&d)[&1];
    assert_eq!(s.len(), 2);
    assert_ne!(s[0].instance, s[1].instance);
    // Across GPUs.
    let c2 = cluster(vec![
        gpu(0, "H100-80GB", None, &[("3g.40gb", 0, None), ("3g.40gb", 4, None)]),
        gpu(1, "H100-80GB", None, &[("3g.40gb", 0, None), ("3g.40gb", 4, Some(9))]),
    ]);
    let d = one_round(&mut no_repartition(), &c2, vec![three]);
    let s = &starts(&d)[&1];
    assert_eq!(s.len(), 3);
    assert_eq!(s.iter().filter(|p| p.gpu == 1).count(), 1);
}

#[test]
fn gpu_numa_local_ranks_sit_in_both_halves_of_one_gpu() {
    let m = model("H100-80GB");
    let mut r = req(profile("1g.10gb"));
    r.ranks = 2;
    r.gpu_numa_local = true;
    let c = cluster(vec![
        gpu(0, "H100-80GB", None, &[("1g.10gb", 0, None), ("1g.10gb", 1, None), ("3g.40gb", 4, Some(9))]),
        gpu(1, "H100-80GB", None, &[("1g.10gb", 0, None), ("1g.10gb", 4, None)]),
    ]);
    let d = one_round(&mut no_repartition(), &c, vec![r.clone()]);
    let s = &starts(&d)[&1];
    assert_eq!(s.len(), 2);
    assert!(s.iter().all(|p| p.gpu == 1), "{s:?}");
    let nodes: Vec<_> = s.iter().map(|p| m.gpu_numa_node(p.instance.start, 1)).collect();
    assert_eq!(nodes, vec![Some(0), Some(1)]);
    // On an empty GPU it is created that way.
    let c = cluster(vec![gpu(0, "H100-80GB", None, &[])]);
    let d = one_round(&mut sched(), &c, vec![r]);
    let (_, plan, _) = &reconfigures(&d)[0];
    let nodes: Vec<_> = plan.target.iter().map(|i| m.gpu_numa_node(i.start, 1)).collect();
    assert_eq!(nodes, vec![Some(0), Some(1)], "{plan:?}");
}

#[test]
fn several_instances_per_rank_sit_on_one_gpu() {
    let m = model("H100-80GB");
    let c = cluster(vec![
        gpu(0, "H100-80GB", None, &[("3g.40gb", 0, None), ("3g.40gb", 4, Some(9))]),
        gpu(1, "H100-80GB", None, &[("3g.40gb", 0, None), ("2g.20gb", 4, None)]),
    ]);
    let mut r = req(GpuRequest::Instances(vec![profile("3g.40gb"), GpuRequest::ComputeSlices { slices: 2 }]));
    r.cpus = 3;
    let mut c = c;
    c.host = vec![host_node(0, 0..8, 1 << 20)];
    c.gpus[1].numa_node = Some(0);
    r.numa = NumaPolicy::Any;
    let d = one_round(&mut no_repartition(), &c, vec![r]);
    let s = &starts(&d)[&1];
    assert_eq!(
        s.iter().map(|p| (p.gpu, p.instance)).collect::<Vec<_>>(),
        vec![(1, inst(m, "3g.40gb", 0)), (1, inst(m, "2g.20gb", 4))]
    );
    assert_eq!(s[0].cpus().len() + s[1].cpus().len(), 3);
}

#[test]
fn unhealthy_gpus_are_not_used() {
    let m = model("H100-80GB");
    let mut c = cluster(vec![
        gpu(0, "H100-80GB", None, &[("3g.40gb", 0, None), ("3g.40gb", 4, None)]),
        gpu(1, "H100-80GB", None, &[("3g.40gb", 0, Some(9)), ("3g.40gb", 4, None)]),
    ]);
    c.gpus[0].healthy = false;
    let d = one_round(&mut sched(), &c, vec![req(profile("3g.40gb")), req(profile("3g.40gb"))]);
    let s = starts(&d);
    assert_eq!(s.len(), 1);
    assert_eq!((s[&1][0].gpu, s[&1][0].instance), (1, inst(m, "3g.40gb", 4)));
    let (reason, detail) = pending(&d, 2).unwrap();
    assert_eq!(reason, PendingReason::Health, "{detail}");
    // Only unhealthy GPUs at all.
    c.gpus.truncate(1);
    let d = one_round(&mut sched(), &c, vec![req(profile("3g.40gb"))]);
    assert_eq!(pending(&d, 1).unwrap().0, PendingReason::Health);
}

#[test]
fn requests_that_can_never_fit_say_so() {
    let c = cluster(vec![gpu(0, "A100-80GB", None, &[])]);
    let d = one_round(&mut sched(), &c, vec![req(GpuRequest::Memory { mib: 200 * 1024 })]);
    let (reason, detail) = pending(&d, 1).unwrap();
    assert_eq!(reason, PendingReason::Capacity);
    assert!(detail.contains("can never start") && detail.contains("7g.80gb"), "{detail}");
    let mut bad = req(GpuRequest::WholeGpu);
    bad.ranks = 0;
    let d = one_round(&mut sched(), &c, vec![bad]);
    assert!(pending(&d, 1).unwrap().1.contains("ranks"));
}

#[test]
fn fair_share_usage_is_charged_from_running_jobs() {
    let m = model("H100-80GB");
    let c = cluster(vec![gpu(0, "H100-80GB", None, &[("3g.40gb", 0, Some(900))])]);
    let mut r = req(profile("3g.40gb"));
    r.tenant = "a".into();
    let run = vec![running(900, r, 0, &[(0, inst(m, "3g.40gb", 0))])];
    let mut s = Scheduler::new(SchedulerConfig { fair_share_half_life_ms: u64::MAX, ..SchedulerConfig::default() });
    s.schedule(1000, &c, &[], &run);
    assert!((s.usage("a") - 3000.0).abs() < 1e-3, "{}", s.usage("a"));
    s.schedule(3000, &c, &[], &run);
    assert!((s.usage("a") - 9000.0).abs() < 1e-3, "{}", s.usage("a"));
    // A clock that goes backwards charges nothing.
    s.schedule(2000, &c, &[], &run);
    assert!((s.usage("a") - 9000.0).abs() < 1e-3);
    s.charge("b", 42.0, 3000);
    assert!((s.usage("b") - 42.0).abs() < 1e-9);
}

#[test]
fn config_validation() {
    let ok = SchedulerConfig::default();
    assert!(ok.validate().is_ok());
    let bad = SchedulerConfig {
        tenants: vec![Tenant { name: "x".into(), weight: 0.0, quota: None }],
        ..SchedulerConfig::default()
    };
    assert!(bad.validate().unwrap_err().to_string().contains("tenant 'x'"));
    let bad = SchedulerConfig { time_slice_replicas: 0, ..SchedulerConfig::default() };
    assert!(bad.validate().is_err());
    let c: SchedulerConfig = serde_json::from_str(r#"{"preemption": true}"#).unwrap();
    assert!(c.preemption && c.repartition && c.backfill && c.time_slice_replicas == 4);
    assert!(serde_json::from_str::<SchedulerConfig>(r#"{"preempt": true}"#).is_err());
}

#[test]
fn models_outside_the_catalog_work() {
    // A model the catalog does not hold (as NVML might report): its own planner is built.
    let mut odd = model("H100-80GB").clone();
    odd.name = "H100-ODD".into();
    let odd: &'static tessera_mig::GpuModel = Box::leak(Box::new(odd));
    let mut g = tessera_sched::GpuView::new(0, odd);
    g.instances = vec![tessera_sched::InstanceView::idle(inst(odd, "1g.10gb", 0))];
    let d = one_round(&mut sched(), &cluster(vec![g.clone()]), vec![req(profile("1g.10gb")), req(profile("3g.40gb"))]);
    assert_eq!(starts(&d)[&1][0].instance, inst(odd, "1g.10gb", 0));
    assert_eq!(reconfigures(&d).len(), 1);
}

#[test]
fn cluster_and_decisions_as_json() {
    let c: ClusterView = serde_json::from_str(
        r#"{"gpus": [{"gpu": 0, "model": "H100-80GB", "numa_node": 1,
                      "instances": [{"instance": {"profile_id": 9, "start": 0}}]}],
            "host": [{"node": 1, "free_cpus": [0, 1], "free_mem_mib": 1024}]}"#,
    )
    .unwrap();
    assert!(c.gpus[0].healthy && !c.gpus[0].reconfiguring);
    let back: ClusterView = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
    assert_eq!(back.gpus[0].model.name, "H100-80GB");
    assert!(serde_json::from_str::<ClusterView>(r#"{"gpus": [{"gpu": 0, "model": "H999"}]}"#).is_err());
    let mut r = req(profile("3g.40gb"));
    r.cpus = 1;
    let d = one_round(&mut sched(), &c, vec![r]);
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json[0]["decision"], "start");
    let rank = &json[0]["ranks"][0];
    assert_eq!(rank["rank"], 0);
    assert_eq!(rank["slices"][0]["host"][0], serde_json::json!({"node": 1, "cpus": [0], "mem_mib": 0}));
    assert_eq!(rank["slices"][0]["numa_node"], 1);
}
