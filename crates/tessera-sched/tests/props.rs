//! Property tests: random clusters of catalog models with random layouts and occupancy, random
//! queues and configurations. Every round must keep the scheduler's invariants: one answer per
//! job, nothing taken twice, no busy instance touched, starts that exist and fit, CPUs and
//! quotas respected, gangs whole, and the same input giving the same output.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use common::Sim;
use proptest::prelude::*;
use tessera_mig::{Instance, Planner, Step, catalog};
use tessera_sched::{
    ClusterView, Decision, GpuRequest, GpuView, HostNuma, InstanceView, JobRequest, NumaPolicy, Occupant,
    PinnedInstance, QueuedJob, RankStart, RunningJob, Scheduler, SchedulerConfig, Sharing, SlicePlacement, SliceQuota,
    Tenant, admit, holdings, profile_memory_mib,
};

const MODELS: &[&str] = &["A30-24GB", "A100-40GB", "H100-80GB", "H200-141GB", "B200-180GB", "RTX-PRO-6000"];
const PROFILES: &[&str] = &["1g.10gb", "1g.5gb", "2g.20gb", "3g.40gb", "1g.24gb", "2g.12gb", "4g.40gb", "1g.18gb"];
const TENANTS: &[&str] = &["a", "b", "c"];

fn maximal(model: usize) -> &'static [Vec<Instance>] {
    static ALL: OnceLock<Vec<Vec<Vec<Instance>>>> = OnceLock::new();
    &ALL.get_or_init(|| {
        MODELS.iter().map(|m| Planner::new(catalog().model(m).unwrap()).maximal_layouts(None)).collect()
    })[model]
}

#[derive(Debug, Clone)]
struct GpuSpec {
    model: usize,
    layout: usize,
    keep: Vec<bool>,
    occupancy: Vec<u8>,
    healthy: bool,
    reconfiguring: bool,
    numa: Option<u32>,
}

fn gpu_spec() -> impl Strategy<Value = GpuSpec> {
    (
        0..MODELS.len(),
        any::<usize>(),
        prop::collection::vec(any::<bool>(), 12),
        prop::collection::vec(0u8..8, 12),
        prop::bool::weighted(0.9),
        prop::bool::weighted(0.1),
        prop::option::weighted(0.8, 0u32..2),
    )
        .prop_map(|(model, layout, keep, occupancy, healthy, reconfiguring, numa)| GpuSpec {
            model,
            layout,
            keep,
            occupancy,
            healthy,
            reconfiguring,
            numa,
        })
}

#[derive(Debug, Clone)]
struct JobSpec {
    gpu: u8,
    size: u32,
    profile: usize,
    ranks: u32,
    numa_local: bool,
    sharing: u8,
    pct: u8,
    cpus: u32,
    mem: u64,
    any_numa: bool,
    tenant: usize,
    priority: i32,
    estimate: Option<u64>,
}

fn job_spec() -> impl Strategy<Value = JobSpec> {
    (
        (0u8..6, 1u32..100_000, 0..PROFILES.len(), 1u32..4, prop::bool::weighted(0.15)),
        (0u8..4, 1u8..=100, 0u32..3, 0u64..4096, any::<bool>()),
        (0..TENANTS.len(), -1i32..3, prop::option::of(1u64..3_600_000)),
    )
        .prop_map(
            |(
                (gpu, size, profile, ranks, numa_local),
                (sharing, pct, cpus, mem, any_numa),
                (tenant, priority, estimate),
            )| JobSpec {
                gpu,
                size,
                profile,
                ranks,
                numa_local,
                sharing,
                pct,
                cpus,
                mem,
                any_numa,
                tenant,
                priority,
                estimate,
            },
        )
}

/// One instance's need; profile names come from `model` (mostly) so that most requests can run.
fn simple_gpu(kind: u8, size: u32, profile: usize, model: &tessera_mig::GpuModel) -> GpuRequest {
    match kind % 4 {
        0 => GpuRequest::Memory { mib: u64::from(size % 40_000 + 1000) },
        1 => GpuRequest::ComputeSlices { slices: u8::try_from(size % 3 + 1).unwrap() },
        2 if profile.is_multiple_of(4) => GpuRequest::Profile { name: PROFILES[profile % PROFILES.len()].to_string() },
        2 => GpuRequest::Profile { name: model.profiles[profile % model.profiles.len()].name.clone() },
        _ => GpuRequest::WholeGpu,
    }
}

fn build_request(s: &JobSpec, model: &tessera_mig::GpuModel) -> JobRequest {
    let gpu = if s.gpu >= 4 && !s.numa_local && s.sharing % 4 != 1 {
        GpuRequest::Instances(vec![
            simple_gpu(s.gpu, s.size, s.profile, model),
            simple_gpu(s.gpu + 1, s.size / 3, s.profile + 1, model),
        ])
    } else {
        simple_gpu(s.gpu, s.size, s.profile, model)
    };
    let mut r = JobRequest::new(gpu);
    r.ranks = if s.numa_local { 2 } else { s.ranks };
    r.gpu_numa_local = s.numa_local;
    r.sharing = match s.sharing % 4 {
        1 => {
            Sharing::Mps { active_thread_pct: s.pct, pinned_mem_mib: s.pct.is_multiple_of(2).then_some(s.mem * 2 + 1) }
        }
        2 => Sharing::TimeSlice,
        _ => Sharing::Exclusive,
    };
    r.cpus = s.cpus;
    r.mem_mib = s.mem;
    r.numa = if s.any_numa { NumaPolicy::Any } else { NumaPolicy::Local };
    r.tenant = TENANTS[s.tenant].to_string();
    r.priority = s.priority;
    r.runtime_estimate_ms = s.estimate;
    r
}

#[derive(Debug, Clone)]
struct Scenario {
    cluster: ClusterView,
    queue: Vec<QueuedJob>,
    running: Vec<RunningJob>,
    config: SchedulerConfig,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        prop::collection::vec(gpu_spec(), 1..4),
        prop::collection::vec(job_spec(), 0..10),
        prop::collection::vec(any::<bool>(), 16),
        (0u64..200_000, 0u64..200_000),
        (any::<bool>(), any::<bool>(), any::<bool>(), 1u32..5),
        (prop::option::of((2u32..16, 2u32..16)), prop::option::of((2u32..16, 2u32..16))),
        prop::collection::vec(-1i32..3, 32),
    )
        .prop_map(|(gpus, jobs, cpu_bits, (mem0, mem1), (rp, bf, pre, replicas), (qa, qb), prios)| {
            let mut running: Vec<RunningJob> = Vec::new();
            let mut next_running = 10_000u64;
            let mut views = Vec::new();
            for (i, g) in gpus.iter().enumerate() {
                let model = catalog().model(MODELS[g.model]).unwrap();
                let layouts = maximal(g.model);
                let layout = &layouts[g.layout % layouts.len()];
                let mut v = GpuView::new(u32::try_from(i).unwrap(), model);
                v.healthy = g.healthy;
                v.reconfiguring = g.reconfiguring;
                v.numa_node = g.numa;
                for (k, inst) in layout.iter().enumerate() {
                    if !g.keep[k % g.keep.len()] {
                        continue;
                    }
                    let mut iv = InstanceView::idle(*inst);
                    let code = g.occupancy[k % g.occupancy.len()];
                    let sharing = match code {
                        3 => Some((Sharing::Exclusive, 1)),
                        4 => Some((Sharing::Mps { active_thread_pct: 30, pinned_mem_mib: Some(1000) }, 1)),
                        5 => Some((Sharing::Mps { active_thread_pct: 40, pinned_mem_mib: None }, 2)),
                        6 | 7 => Some((Sharing::TimeSlice, 1 + (k % 3))),
                        _ => None,
                    };
                    // 7: a front door's pinned holds (time-sliced replicas a pod was given).
                    let pinned = code == 7;
                    if let Some((sharing, n)) = sharing {
                        for _ in 0..n {
                            let id = next_running;
                            next_running += 1;
                            iv.occupants.push(Occupant { job: id, sharing, user: (id % 2) as u32, pinned });
                            let mut r = JobRequest::new(GpuRequest::ComputeSlices { slices: 1 });
                            r.sharing = sharing;
                            if pinned {
                                r.pin =
                                    vec![PinnedInstance { gpu: v.gpu, profile_id: inst.profile_id, start: inst.start }];
                                r.requeue = false;
                            }
                            r.tenant = TENANTS[(id as usize) % TENANTS.len()].to_string();
                            r.priority = prios[(id as usize) % prios.len()];
                            r.runtime_estimate_ms = (!id.is_multiple_of(3)).then_some(60_000 * (id % 7 + 1));
                            running.push(RunningJob {
                                id,
                                request: r,
                                started_ms: 0,
                                ranks: vec![RankStart { rank: 0, slices: vec![SlicePlacement::new(v.gpu, *inst)] }],
                                user: (id % 2) as u32,
                            });
                        }
                    }
                    v.instances.push(iv);
                }
                views.push(v);
            }
            let host = vec![
                HostNuma { node: 0, free_cpus: (0..8).filter(|c| cpu_bits[*c as usize]).collect(), free_mem_mib: mem0 },
                HostNuma {
                    node: 1,
                    free_cpus: (8..16).filter(|c| cpu_bits[*c as usize]).collect(),
                    free_mem_mib: mem1,
                },
            ];
            let first = catalog().model(MODELS[gpus[0].model]).unwrap();
            let queue = jobs
                .iter()
                .enumerate()
                .map(|(i, s)| QueuedJob {
                    id: i as u64 + 1,
                    request: build_request(s, first),
                    submitted_ms: i as u64 % 3,
                    user: (i % 2) as u32,
                })
                .collect();
            let quota = |q: Option<(u32, u32)>| q.map(|(c, m)| SliceQuota { compute_slices: c, memory_slices: m });
            let config = SchedulerConfig {
                repartition: rp,
                backfill: bf,
                preemption: pre,
                time_slice_replicas: replicas,
                tenants: vec![
                    Tenant { name: "a".into(), weight: 1.0, quota: quota(qa) },
                    Tenant { name: "b".into(), weight: 2.0, quota: quota(qb) },
                ],
                ..SchedulerConfig::default()
            };
            Scenario { cluster: ClusterView { gpus: views, host, ..ClusterView::default() }, queue, running, config }
        })
}

/// Every invariant of one round's decisions; `Err` names the first broken one.
fn check(s: &Scenario, now: u64, d: &[Decision]) -> Result<(), String> {
    let queued: BTreeMap<u64, &QueuedJob> = s.queue.iter().map(|q| (q.id, q)).collect();
    let running: BTreeMap<u64, &RunningJob> = s.running.iter().map(|r| (r.id, r)).collect();
    // 1. One Start or Pending per queued job, none for anything else.
    let mut answers: BTreeMap<u64, usize> = BTreeMap::new();
    for x in d {
        match x {
            Decision::Start { job, .. } | Decision::Pending { job, .. } => *answers.entry(*job).or_default() += 1,
            Decision::Reconfigure { for_job, .. }
            | Decision::Preempt { for_job, .. }
            | Decision::SetMigMode { for_job, .. } => {
                if !queued.contains_key(for_job) {
                    return Err(format!("decision for unknown job {for_job}"));
                }
            }
        }
    }
    for id in queued.keys() {
        if answers.get(id) != Some(&1) {
            return Err(format!("job {id} got {:?} answers", answers.get(id)));
        }
    }
    if answers.keys().any(|id| !queued.contains_key(id)) {
        return Err("an answer for a job that is not queued".into());
    }
    let gpu = |g: u32| s.cluster.gpus.iter().find(|v| v.gpu == g);
    // 2. Starts exist, are usable, fit, and gangs are whole.
    let mut users: BTreeMap<(u32, Instance), Vec<Occupant>> = BTreeMap::new();
    for v in &s.cluster.gpus {
        for i in &v.instances {
            users.entry((v.gpu, i.instance)).or_default().extend(i.occupants.iter().copied());
        }
    }
    let mut new_on: BTreeSet<(u32, Instance)> = BTreeSet::new();
    let mut cpus_used: BTreeSet<u32> = BTreeSet::new();
    let mut mem_used: BTreeMap<u32, u64> = BTreeMap::new();
    let mut started: Vec<RunningJob> = Vec::new();
    for x in d {
        let Decision::Start { job, ranks: rank_starts } = x else { continue };
        let q = queued[job];
        let r = &q.request;
        let k = r.instances_per_rank();
        if rank_starts.len() != r.ranks as usize
            || rank_starts.iter().enumerate().any(|(i, rs)| rs.rank as usize != i || rs.slices.len() != k)
        {
            return Err(format!("job {job}: ranks {rank_starts:?} for {} ranks × {k}", r.ranks));
        }
        let ranks: Vec<SlicePlacement> = rank_starts.iter().flat_map(|rs| rs.slices.iter().cloned()).collect();
        for (n, p) in ranks.iter().enumerate() {
            let v = gpu(p.gpu).ok_or(format!("job {job} on missing GPU {}", p.gpu))?;
            if !v.healthy || v.reconfiguring {
                return Err(format!("job {job} on unusable GPU {}", p.gpu));
            }
            if !v.instances.iter().any(|i| i.instance == p.instance) {
                return Err(format!("job {job} on missing instance {:?}", p.instance));
            }
            if !r.fits_instance(v.model, n % k, &p.instance) {
                return Err(format!("job {job}: {:?} does not fit slot {}", p.instance, n % k));
            }
            if r.gpus_per_rank == 1 && p.gpu != ranks[n - n % k].gpu {
                return Err(format!("job {job}: one rank's instances on several GPUs"));
            }
            users.entry((p.gpu, p.instance)).or_default().push(Occupant {
                job: *job,
                sharing: r.sharing,
                user: q.user,
                pinned: !r.pin.is_empty(),
            });
            new_on.insert((p.gpu, p.instance));
            for c in &p.cpus() {
                if !cpus_used.insert(*c) {
                    return Err(format!("CPU {c} given twice"));
                }
                if !s.cluster.host.iter().any(|h| h.free_cpus.contains(c)) {
                    return Err(format!("CPU {c} was not free"));
                }
            }
            for share in &p.host {
                *mem_used.entry(share.node).or_default() += share.mem_mib;
            }
        }
        if r.gpu_numa_local {
            let v = gpu(ranks[0].gpu).unwrap();
            let node = |p: &SlicePlacement| {
                v.model
                    .profile_by_id(p.instance.profile_id)
                    .and_then(|pr| v.model.gpu_numa_node(p.instance.start, pr.placement_size))
            };
            if ranks[1].gpu != ranks[0].gpu || node(&ranks[0]).is_none() || node(&ranks[0]) == node(&ranks[1]) {
                return Err(format!("job {job}: NUMA-local ranks not in both halves of one GPU"));
            }
        }
        started.push(RunningJob {
            id: *job,
            request: r.clone(),
            started_ms: now,
            ranks: rank_starts.clone(),
            user: q.user,
        });
    }
    for (node, used) in &mem_used {
        let free = s.cluster.host.iter().find(|h| h.node == *node).map_or(0, |h| h.free_mem_mib);
        if *used > free {
            return Err(format!("host node {node}: {used} MiB given, {free} free"));
        }
    }
    // 3. Nothing taken twice; sharing within its limits.
    let replicas = s.config.time_slice_replicas.max(1) as usize;
    for key in &new_on {
        let occ = &users[key];
        let v = gpu(key.0).unwrap();
        let mem = v.model.profile_by_id(key.1.profile_id).map_or(0, |p| profile_memory_mib(v.model, p));
        let ok = match occ[0].sharing {
            Sharing::Exclusive => occ.len() == 1,
            Sharing::Mps { .. } => {
                let mut pct = 0u32;
                let mut pinned = 0u64;
                let mut all = true;
                for o in occ {
                    match o.sharing {
                        Sharing::Mps { active_thread_pct, pinned_mem_mib } => {
                            pct += u32::from(active_thread_pct);
                            pinned += pinned_mem_mib.unwrap_or(0);
                        }
                        _ => all = false,
                    }
                }
                all && pct <= 100 && pinned <= mem
            }
            Sharing::TimeSlice => occ.iter().all(|o| o.sharing == Sharing::TimeSlice) && occ.len() <= replicas,
        };
        if !ok {
            return Err(format!("instance {key:?} over-shared: {occ:?}"));
        }
        if occ.iter().any(|o| o.pinned != occ[0].pinned) {
            return Err(format!("instance {key:?} shared by pinned and unpinned jobs: {occ:?}"));
        }
    }
    // 4. Reconfigurations touch only idle instances, one plan per GPU, valid targets.
    let mut planned = BTreeSet::new();
    for x in d {
        let Decision::Reconfigure { gpu: g, plan, .. } = x else { continue };
        if !planned.insert(*g) {
            return Err(format!("two plans for GPU {g}"));
        }
        let v = gpu(*g).ok_or("plan for a missing GPU")?;
        if !v.healthy || v.reconfiguring {
            return Err(format!("plan for unusable GPU {g}"));
        }
        if !tessera_mig::validate(v.model, &plan.target).is_empty() {
            return Err(format!("invalid target on GPU {g}"));
        }
        for i in &v.instances {
            if i.is_busy() && !plan.target.contains(&i.instance) {
                return Err(format!("plan on GPU {g} drops busy {:?}", i.instance));
            }
        }
        for step in &plan.steps {
            if let Step::Destroy { instance, .. } = step {
                let Some(iv) = v.instances.iter().find(|i| i.instance == *instance) else {
                    return Err(format!("plan destroys missing {instance:?}"));
                };
                if iv.is_busy() || new_on.contains(&(*g, *instance)) {
                    return Err(format!("plan destroys busy or just-used {instance:?}"));
                }
            }
        }
        for (gg, inst) in &new_on {
            if gg == g && !plan.target.contains(inst) {
                return Err(format!("a start on {inst:?} that the plan removes"));
            }
        }
    }
    // 5. Quotas hold for every tenant that started something.
    let before = holdings(&s.cluster, &s.running, s.config.time_slice_replicas);
    let mut all = s.running.clone();
    all.extend(started.iter().cloned());
    let after = holdings(&s.cluster, &all, s.config.time_slice_replicas);
    for t in &s.config.tenants {
        let Some(q) = t.quota else { continue };
        if !started.iter().any(|j| j.request.tenant == t.name) {
            continue;
        }
        let h = after.get(&t.name).copied().unwrap_or_default();
        if h.compute_slices > f64::from(q.compute_slices) + 1e-9 || h.memory_slices > f64::from(q.memory_slices) + 1e-9
        {
            return Err(format!("tenant {} past its quota: {h:?} (before {:?}) vs {q:?}", t.name, before.get(&t.name)));
        }
    }
    // 6. Preemption only of lower priorities.
    for x in d {
        if let Decision::Preempt { job, for_job } = x {
            let v = running.get(job).ok_or(format!("preempting {job}, which is not running"))?;
            if v.request.priority >= queued[for_job].request.priority {
                return Err(format!("job {job} preempted for one of no higher priority"));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn every_round_keeps_the_invariants(s in scenario()) {
        let mut a = Scheduler::new(s.config.clone());
        let d1 = a.schedule(1000, &s.cluster, &s.queue, &s.running);
        if let Err(e) = check(&s, 1000, &d1) {
            return Err(TestCaseError::fail(format!("{e}\n{d1:#?}")));
        }
        // Deterministic: a second scheduler with the same history answers the same.
        let mut b = Scheduler::new(s.config.clone());
        let d2 = b.schedule(1000, &s.cluster, &s.queue, &s.running);
        prop_assert_eq!(&d1, &d2);
        prop_assert_eq!(serde_json::to_string(&d1).unwrap(), serde_json::to_string(&d2).unwrap());
        // The same input again, with the state the first round left (holds, reservation).
        let d3 = a.schedule(2000, &s.cluster, &s.queue, &s.running);
        if let Err(e) = check(&s, 2000, &d3) {
            return Err(TestCaseError::fail(format!("second round: {e}\n{d3:#?}")));
        }
    }

    /// Admission refuses only what no state of the node could run: a job the scheduler starts,
    /// or repartitions, switches a MIG mode or preempts for, in any scenario, is admitted.
    #[test]
    fn admission_never_refuses_what_a_round_acts_on(s in scenario()) {
        let d = Scheduler::new(s.config.clone()).schedule(1000, &s.cluster, &s.queue, &s.running);
        for x in &d {
            if matches!(x, Decision::Pending { .. }) {
                continue;
            }
            let job = x.job();
            let q = s.queue.iter().find(|q| q.id == job).expect("decisions are about queued jobs");
            if let Err(e) = admit(&q.request, &s.cluster, &s.config) {
                return Err(TestCaseError::fail(format!("job {job} refused ({e}) but {x:?}")));
            }
        }
    }

    #[test]
    fn rounds_carried_out_keep_the_invariants(s in scenario()) {
        let mut sim = Sim::new(Scheduler::new(s.config.clone()), s.cluster.clone());
        sim.queue = s.queue.clone();
        sim.running = s.running.clone();
        for r in &s.running {
            sim.runtime.insert(r.id, 60_000 * (r.id % 4 + 1));
        }
        for q in &s.queue {
            sim.runtime.insert(q.id, 90_000);
        }
        for round in 0..4u64 {
            let now = round * 60_000;
            sim.advance(now);
            let seen = Scenario {
                cluster: sim.cluster.clone(),
                queue: sim.queue.clone(),
                running: sim.running.clone(),
                config: s.config.clone(),
            };
            let d = sim.round();
            if let Err(e) = check(&seen, now, &d) {
                return Err(TestCaseError::fail(format!("round {round}: {e}\n{d:#?}")));
            }
        }
    }
}

/// The generated scenarios exercise starts, reconfigurations and waiting, so the properties
/// above are not vacuous.
#[test]
fn generated_scenarios_exercise_every_kind_of_decision() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..300 {
        let s = scenario().new_tree(&mut runner).unwrap().current();
        let d = Scheduler::new(s.config.clone()).schedule(1000, &s.cluster, &s.queue, &s.running);
        for x in &d {
            let k = match x {
                Decision::Start { .. } => "start".to_string(),
                Decision::Reconfigure { .. } => "reconfigure".to_string(),
                Decision::Preempt { .. } => "preempt".to_string(),
                Decision::SetMigMode { .. } => "mig-mode".to_string(),
                Decision::Pending { reason, detail, .. } => {
                    if std::env::var("SHOW").is_ok_and(|v| v == reason.as_str()) {
                        eprintln!("{detail}");
                    }
                    format!("pending:{reason}")
                }
            };
            *counts.entry(k).or_default() += 1;
        }
    }
    for kind in ["start", "reconfigure"] {
        assert!(counts.get(kind).copied().unwrap_or(0) > 0, "no {kind} in 300 scenarios: {counts:#?}");
    }
    assert!(counts.keys().any(|k| k.starts_with("pending:")), "nothing ever waits: {counts:#?}");
}
