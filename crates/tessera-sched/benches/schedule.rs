//! One scheduling round with 1,000 queued jobs on 8 H100s (issue #4's speed target), run with
//! `cargo bench -p tessera-sched`. Half the GPUs are cut and partly busy, half are empty; the
//! queue mixes memory, compute, profile and whole-GPU requests, MPS and time-slicing, gangs,
//! four tenants and three priorities. Each iteration starts from the same scheduler state.

use std::hint::black_box;

use tessera_mig::{Instance, catalog};
use tessera_sched::{
    ClusterView, GpuRequest, GpuView, HostNuma, InstanceView, JobRequest, NumaPolicy, Occupant, QueuedJob, RankStart,
    RunningJob, Scheduler, SchedulerConfig, Sharing, SlicePlacement, Tenant,
};

fn main() {
    divan::main();
}

fn setup() -> (ClusterView, Vec<QueuedJob>, Vec<RunningJob>) {
    let m = catalog().model("H100-80GB").unwrap();
    let id = |n: &str| m.profile(n).unwrap().id;
    let layouts: [&[(&str, u8, bool)]; 4] = [
        &[("3g.40gb", 0, true), ("2g.20gb", 4, false), ("1g.10gb", 6, true)],
        &[
            ("1g.10gb", 0, true),
            ("1g.10gb", 1, false),
            ("1g.10gb", 2, true),
            ("1g.10gb", 3, false),
            ("3g.40gb", 4, true),
        ],
        &[("4g.40gb", 0, true), ("2g.20gb", 4, true), ("1g.10gb", 6, false)],
        &[("7g.80gb", 0, true)],
    ];
    let mut running = Vec::new();
    let mut gpus = Vec::new();
    let mut next = 100_000u64;
    for g in 0..8u32 {
        let mut v = GpuView::new(g, m);
        v.numa_node = Some(g / 4);
        if let Some(layout) = layouts.get(g as usize) {
            for (p, start, busy) in layout.iter() {
                let inst = Instance::new(id(p), *start);
                let mut iv = InstanceView::idle(inst);
                if *busy {
                    let mut r = JobRequest::new(GpuRequest::Profile { name: (*p).to_string() });
                    r.tenant = format!("t{}", next % 4);
                    r.runtime_estimate_ms = Some(600_000 * (next % 5 + 1));
                    iv.occupants.push(Occupant { job: next, sharing: Sharing::Exclusive, user: 0, pinned: false });
                    running.push(RunningJob {
                        id: next,
                        request: r,
                        started_ms: 0,
                        ranks: vec![RankStart {
                            rank: 0,
                            slices: vec![SlicePlacement { numa_node: Some(g / 4), ..SlicePlacement::new(g, inst) }],
                        }],
                        user: 0,
                    });
                    next += 1;
                }
                v.instances.push(iv);
            }
        }
        gpus.push(v);
    }
    let host = (0..2)
        .map(|n| HostNuma { node: n, free_cpus: (n * 64..n * 64 + 48).collect(), free_mem_mib: 400 * 1024 })
        .collect();
    let queue = (0..1000u64)
        .map(|i| {
            let gpu = match i % 10 {
                0 | 1 => GpuRequest::Memory { mib: 8_000 + (i % 7) * 6_000 },
                2 | 3 => GpuRequest::ComputeSlices { slices: (i % 3 + 1) as u8 },
                4 | 5 => GpuRequest::Profile { name: "1g.10gb".into() },
                6 => GpuRequest::Profile { name: "3g.40gb".into() },
                7 => GpuRequest::WholeGpu,
                8 => GpuRequest::Instances(vec![
                    GpuRequest::Profile { name: "2g.20gb".into() },
                    GpuRequest::ComputeSlices { slices: 1 },
                ]),
                _ => GpuRequest::Memory { mib: 4_000 },
            };
            let mut r = JobRequest::new(gpu);
            r.ranks = if i % 20 == 3 { 2 } else { 1 };
            r.sharing = match i % 10 {
                9 if i % 20 == 9 => Sharing::Mps { active_thread_pct: 25, pinned_mem_mib: Some(2_000) },
                9 => Sharing::TimeSlice,
                _ => Sharing::Exclusive,
            };
            r.cpus = (i % 4) as u32 * 2;
            r.mem_mib = (i % 3) * 4096;
            r.numa = if i % 5 == 0 { NumaPolicy::Any } else { NumaPolicy::Local };
            r.tenant = format!("t{}", i % 4);
            r.priority = (i % 3) as i32;
            r.runtime_estimate_ms = (i % 4 != 0).then_some(60_000 * (i % 30 + 1));
            QueuedJob { id: i + 1, request: r, submitted_ms: i, user: 0 }
        })
        .collect();
    (ClusterView { gpus, host, ..ClusterView::default() }, queue, running)
}

fn config() -> SchedulerConfig {
    SchedulerConfig {
        tenants: (0..4).map(|t| Tenant { name: format!("t{t}"), weight: f64::from(t + 1), quota: None }).collect(),
        ..SchedulerConfig::default()
    }
}

/// Target: well under a second; a round per second is the daemon's pace.
#[divan::bench]
fn schedule_1000_jobs_8_h100(b: divan::Bencher) {
    let (cluster, queue, running) = setup();
    let sched = Scheduler::new(config());
    b.with_inputs(|| sched.clone())
        .bench_local_values(|mut s| s.schedule(black_box(60_000), &cluster, &queue, &running));
}

/// The same with preemption on (every blocked high-priority job looks for victims).
#[divan::bench]
fn schedule_1000_jobs_8_h100_preemption(b: divan::Bencher) {
    let (cluster, queue, running) = setup();
    let sched = Scheduler::new(SchedulerConfig { preemption: true, ..config() });
    b.with_inputs(|| sched.clone())
        .bench_local_values(|mut s| s.schedule(black_box(60_000), &cluster, &queue, &running));
}
