//! Honest admission: requests no idle state of the node could place are refused, naming the
//! field and the limit; everything a busy node will place later is admitted.

mod common;

use common::*;
use tessera_sched::{ClusterView, GpuRequest, GpuView, JobRequest, NumaPolicy, SchedulerConfig, admit};

/// Two H100s (MIG on, one busy with a 7g job) on two NUMA nodes of 16 CPUs and 12 GiB each.
fn node() -> ClusterView {
    let mut c = cluster(vec![
        gpu(0, "H100-80GB", Some(0), &[("7g.80gb", 0, Some(900))]),
        gpu(1, "H100-80GB", Some(1), &[("3g.40gb", 4, None)]),
    ]);
    c.host = vec![host_node(0, 0..16, 12 * 1024), host_node(1, 16..32, 12 * 1024)];
    c
}

fn with(f: impl FnOnce(&mut JobRequest)) -> JobRequest {
    let mut r = req(profile("1g.10gb"));
    f(&mut r);
    r
}

#[test]
fn impossible_requests_are_refused_naming_the_limit() {
    let cfg = SchedulerConfig::default();
    let cases: Vec<(&str, JobRequest, &str, &[&str])> = vec![
        ("cpus", with(|r| r.cpus = 1000), "cpus", &["1000 CPUs per rank", "has 16", "--no-numa"]),
        ("memory", with(|r| r.mem_mib = 32 * 1024), "mem_mib", &["32 GiB of memory per rank", "has 12 GiB"]),
        (
            "memory, any node",
            with(|r| {
                r.mem_mib = 64 * 1024;
                r.numa = NumaPolicy::Any;
            }),
            "mem_mib",
            &["64 GiB", "the host has 24 GiB"],
        ),
        ("ranks", with(|r| r.ranks = 100), "ranks", &["100 rank(s) × 1g.10gb", "even with nothing running"]),
        ("profile", req(profile("5g.99gb")), "gpu", &["unknown MIG profile '5g.99gb'"]),
        ("GPU memory", req(GpuRequest::Memory { mib: 500 * 1024 }), "gpu", &["no GPU on this node can run it"]),
        (
            "whole GPUs",
            with(|r| {
                r.gpu = GpuRequest::WholeGpu;
                r.gpus_per_rank = 3;
            }),
            "gpus_per_rank",
            &["1 rank(s) × 3 GPUs of 7g.80gb"],
        ),
    ];
    for (name, r, field, words) in cases {
        let e = admit(&r, &node(), &cfg).expect_err(name);
        assert_eq!(e.field, field, "{name}: {e}");
        for w in words {
            assert!(e.detail.contains(w), "{name}: '{w}' missing from: {}", e.detail);
        }
    }
}

#[test]
fn what_fits_once_work_ends_is_admitted() {
    let cfg = SchedulerConfig::default();
    for r in [
        req(GpuRequest::WholeGpu),
        with(|r| r.ranks = 14),
        with(|r| {
            r.gpu = GpuRequest::WholeGpu;
            r.gpus_per_rank = 2;
            r.cpus = 8;
        }),
        with(|r| r.cpus = 16),
        with(|r| r.mem_mib = 12 * 1024),
    ] {
        admit(&r, &node(), &cfg).unwrap_or_else(|e| panic!("{r:?}: {e}"));
    }
    // Without repartitioning only the layout there counts: no 7g on GPU 1.
    let fixed = SchedulerConfig { repartition: false, ..SchedulerConfig::default() };
    let mut two = req(GpuRequest::WholeGpu);
    two.ranks = 2;
    assert!(admit(&two, &node(), &fixed).is_err());
    assert!(admit(&two, &node(), &cfg).is_ok());
}

#[test]
fn mig_profiles_on_a_node_with_mig_off_and_the_driver_limit() {
    let m = model("H100-80GB");
    let mut off = cluster(vec![GpuView::whole(0, m), GpuView::whole(1, m)]);
    off.host = vec![host_node(0, 0..16, 64 * 1024)];
    let cfg = SchedulerConfig::default();
    let e = admit(&req(profile("1g.10gb")), &off, &cfg).unwrap_err();
    assert_eq!(e.field, "gpu");
    assert!(e.detail.contains("1g.10gb is a MIG profile and no GPU on this node has MIG on"), "{e}");
    assert!(admit(&req(GpuRequest::Memory { mib: 20 * 1024 }), &off, &cfg).is_ok());
    let switching = SchedulerConfig { mig_mode_switching: true, ..SchedulerConfig::default() };
    assert!(admit(&req(profile("1g.10gb")), &off, &switching).is_ok());
    // Before R570: one MIG device per process.
    let mut mig = cluster(vec![GpuView::new(0, m), GpuView::new(1, m)]);
    mig.max_mig_devices_per_process = 1;
    let mut two = req(GpuRequest::WholeGpu);
    two.gpus_per_rank = 2;
    let e = admit(&two, &mig, &cfg).unwrap_err();
    assert_eq!(e.field, "gpus_per_rank");
    assert!(
        e.detail.contains("lets one process use 1 MIG device(s)") && e.detail.contains("2 ranks of one device"),
        "{e}"
    );
    assert!(admit(&two, &mig, &switching).is_ok(), "switching MIG off makes it possible");
    let mut list = req(GpuRequest::Instances(vec![profile("1g.10gb"), profile("1g.10gb")]));
    list.ranks = 1;
    assert_eq!(admit(&list, &mig, &cfg).unwrap_err().field, "gpu");
}

#[test]
fn a_job_above_its_tenants_quota_with_nothing_held_is_refused() {
    use tessera_sched::{Decision, PendingReason, Scheduler, SliceQuota, Tenant};
    let cfg = SchedulerConfig {
        tenants: vec![Tenant {
            name: "ml".into(),
            weight: 1.0,
            quota: Some(SliceQuota { compute_slices: 2, memory_slices: 100 }),
        }],
        ..SchedulerConfig::default()
    };
    let mut three = with(|r| r.ranks = 3);
    three.tenant = "ml".into();
    let e = admit(&three, &node(), &cfg).unwrap_err();
    assert_eq!(e.field, "tenant", "{e}");
    for w in ["tenant 'ml'", "quota of 2 compute slices", "takes 3 compute slices", "3 × 1g.10gb"] {
        assert!(e.detail.contains(w), "'{w}' missing from: {e}");
    }
    // The scheduler agrees: with nothing running it would wait for its quota forever.
    let idle = cluster(vec![gpu(0, "H100-80GB", Some(0), &[]), gpu(1, "H100-80GB", Some(1), &[])]);
    let d = Scheduler::new(cfg.clone()).schedule(0, &idle, &[queued(1, three.clone())], &[]);
    assert!(matches!(d.as_slice(), [Decision::Pending { reason: PendingReason::Quota, .. }]), "{d:?}");
    // Memory slices name the memory quota; within the quota, or another tenant, it is admitted.
    let mut mem = cfg.clone();
    mem.tenants[0].quota = Some(SliceQuota { compute_slices: 100, memory_slices: 1 });
    let mut big = with(|r| r.gpu = profile("2g.20gb"));
    big.tenant = "ml".into();
    let e = admit(&big, &node(), &mem).unwrap_err();
    assert_eq!(e.field, "tenant");
    assert!(e.detail.contains("quota of 1 memory slices") && e.detail.contains("takes 2 memory slices"), "{e}");
    three.ranks = 2;
    admit(&three, &node(), &cfg).unwrap();
    three.ranks = 3;
    three.tenant = "other".into();
    admit(&three, &node(), &cfg).unwrap();
}

#[test]
fn a_gpu_numa_local_pair_needs_both_ranks_cpus_on_one_node() {
    // Each rank's 10 CPUs fit a 16-CPU node, but the pair shares one GPU and so one node.
    let cfg = SchedulerConfig::default();
    let pair = with(|r| {
        r.ranks = 2;
        r.gpu_numa_local = true;
        r.cpus = 10;
    });
    let e = admit(&pair, &node(), &cfg).unwrap_err();
    assert_eq!(e.field, "cpus", "{e}");
    for w in ["20 CPUs on one host NUMA node", "10 per rank", "has 16", "--no-numa"] {
        assert!(e.detail.contains(w), "'{w}' missing from: {e}");
    }
    let fits = with(|r| {
        r.ranks = 2;
        r.gpu_numa_local = true;
        r.cpus = 8;
    });
    admit(&fits, &node(), &cfg).unwrap();
    // The same memory limit names mem_mib.
    let mem = with(|r| {
        r.ranks = 2;
        r.gpu_numa_local = true;
        r.mem_mib = 8 * 1024;
    });
    let e = admit(&mem, &node(), &cfg).unwrap_err();
    assert_eq!(e.field, "mem_mib", "{e}");
    assert!(e.detail.contains("16 GiB of memory on one host NUMA node") && e.detail.contains("has 12 GiB"), "{e}");
}

#[test]
fn a_gang_the_host_cannot_hold_at_once_names_cpus() {
    // Four ranks of 10 CPUs: each fits a 16-CPU node, but two nodes hold only two of them.
    let cfg = SchedulerConfig::default();
    let gang = with(|r| {
        r.ranks = 4;
        r.cpus = 10;
    });
    let e = admit(&gang, &node(), &cfg).unwrap_err();
    assert_eq!(e.field, "cpus", "{e}");
    assert!(e.detail.contains("each of its 4 placements at once") && e.detail.contains("6 left"), "{e}");
}

/// Without repartitioning, a rank's narrower need gets the one instance it accepts even when
/// a wider need was listed first (a greedy pass in list order gave it to the wider need and
/// refused the job).
#[test]
fn instances_are_matched_to_needs_not_taken_in_list_order() {
    let cfg = SchedulerConfig { repartition: false, ..SchedulerConfig::default() };
    let c = cluster(vec![gpu(0, "A100-40GB", None, &[("2g.10gb", 0, None), ("1g.5gb", 6, None)])]);
    let two = req(GpuRequest::Instances(vec![GpuRequest::ComputeSlices { slices: 1 }, profile("1g.5gb")]));
    admit(&two, &c, &cfg).unwrap();
    let d = tessera_sched::Scheduler::new(cfg).schedule(0, &c, &[queued(1, two)], &[]);
    let got = starts(&d);
    assert_eq!(got.get(&1).map(Vec::len), Some(2), "{d:?}");
}
