//! Protocol B of the trace-driven simulator: time-driven replay in virtual time through the
//! daemon's scheduler core (`tessera-sched`, unchanged), with the baselines in the same run.
//!
//! The cluster is nodes of GPUs (8 by default), each with its own [`tessera_sched::Scheduler`]
//! as the per-node daemon has, and a cluster-level dispatcher (like Slurm's controller or
//! kube-scheduler) that holds the global queue in fair-share-then-FIFO order and offers jobs to
//! nodes. Jobs run for `duration / speed(model class, slice)`; a reconfiguration keeps its GPU
//! out of use for the reconfiguration cost. Policies: [`PolicySpec`]. The method, the speed
//! model and measured results are in `docs/evaluation/time-driven.md`.
//!
//! Kubernetes: [`run_kube`] replays pods waiting for MIG devices under mig-manager's fixed layouts,
//! NVIDIA's DRA first fit and Tessera's `decide` (`docs/evaluation/kubernetes.md`); [`dra_alloc`]
//! models kube-scheduler's structured allocator over published ResourceSlices, [`migbench`]
//! regenerates MIGBench's traces from its published generator.
//!
//! Start with [`RunConfig`] and [`run`]. Everything is pure: no clock, no sleeping, no I/O; the
//! same jobs, configuration and seeds give the same report.

mod buckets;
pub mod dra_alloc;
mod error;
mod kube;
pub mod migbench;
mod report;
mod sim;
mod spec;
mod speed;

use tessera_sim::rng::Rng;
use tessera_sim::trace::Job;

pub use error::TimeError;
pub use kube::{
    KubeConfig, KubeError, KubePod, KubePolicy, KubePolicyReport, KubeReport, KubeSeedMetrics, KubeWorkload,
    MigBenchSpec, StaticSearch, migbench_pods, pods_from_jobs, render_kube_table, run_kube,
};
pub use migbench::{MigBenchTraceSpec, migbench_trace_pods, trace_stats};
pub use report::{
    LayoutScore, PolicyReport, RunReport, SeedMetrics, Window, charts, render_table, to_csv, window_range,
};
pub use spec::{
    ClusterSpec, DEFAULT_GPUS_PER_NODE, NodeGroup, PolicySpec, compute_slices_for, gpu_demand, parse_duration_s,
    resolve_layout, size_for_load, static_candidates,
};
pub use speed::{MODEL_CLASSES, SpeedModel};

use sim::{Resolved, SimJob, SimOutput, SimParams};

/// How a run is set up.
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    pub cluster: ClusterSpec,
    pub policies: Vec<PolicySpec>,
    /// One replay per seed per policy; the first seed also picks the best static layout.
    pub seeds: Vec<u64>,
    /// Seconds a GPU is out of use while it is repartitioned (MISO: 30).
    pub reconfig_cost_s: f64,
    /// MPS: each co-running client slows every client by this fraction (MISO: 0.15).
    pub mps_slowdown: f64,
    /// Fraction of jobs (by arrival) skipped at each end of the trace for the metrics.
    pub warmup_fraction: f64,
    /// Each seed moves every arrival by a uniform amount in ±this many seconds.
    pub arrival_jitter_s: f64,
    /// Jobs with an empty `model_class` get one of MISO's 8 classes drawn per seed (else the
    /// default curve).
    pub assign_model_classes: bool,
    /// `dynamic+mps`: jobs of at most this many milli-GPU share an instance under MPS.
    pub mps_max_milli: u32,
    /// Dynamic MIG: a job that finds no room for its requested slice may start at once on the
    /// smallest slice that keeps this fraction of its speed there (0 turns this off).
    pub compact_speed: f64,
    /// The dispatcher keeps one node for the first job that has been refused this long (so a
    /// large gang is not starved by smaller jobs); infinite (the default) turns this off.
    pub reserve_after_s: f64,
    /// Dynamic MIG: a single-rank job that is alone in the queue while less than this fraction of
    /// the cluster's compute is allocated first tries a whole GPU (0 turns this off).
    pub expand_below: f64,
    /// Host CPUs per GPU of a node (a DGX A100 has 256 threads for 8 GPUs: 32), split over two
    /// host NUMA nodes; each job's ranks ask the scheduler core for their CPUs and memory next
    /// to their GPU, as in the daemon. 0: the host is not modelled.
    pub host_cpus_per_gpu: u32,
    /// Host memory per GPU of a node, in MiB (a DGX A100: 1 TiB for 8 GPUs, 128 GiB).
    pub host_mem_mib_per_gpu: u64,
}

impl RunConfig {
    /// The defaults: seeds 1–5, 30 s reconfiguration, 15% MPS slowdown, 10% warm-up and
    /// cool-down, ±60 s arrival jitter, model classes drawn per seed, MPS for jobs ≤ 500 milli,
    /// compact fallback at half speed, whole-GPU expansion below half allocation, no node
    /// reservation, a DGX-A100-like host (32 CPUs and 128 GiB per GPU, two NUMA nodes).
    pub fn new(cluster: ClusterSpec, policies: Vec<PolicySpec>) -> Self {
        RunConfig {
            cluster,
            policies,
            seeds: vec![1, 2, 3, 4, 5],
            reconfig_cost_s: 30.0,
            mps_slowdown: 0.15,
            warmup_fraction: 0.1,
            arrival_jitter_s: 60.0,
            assign_model_classes: true,
            mps_max_milli: 500,
            compact_speed: 0.5,
            reserve_after_s: f64::INFINITY,
            expand_below: 0.5,
            host_cpus_per_gpu: 32,
            host_mem_mib_per_gpu: 128 * 1024,
        }
    }

    fn validate(&self) -> Result<(), TimeError> {
        let bad = |field: &'static str, reason: &str| Err(TimeError::Config { field, reason: reason.to_string() });
        if self.policies.is_empty() {
            return bad("policies", "must name at least one policy");
        }
        if self.seeds.is_empty() {
            return bad("seeds", "must list at least one seed");
        }
        if !(self.reconfig_cost_s.is_finite() && self.reconfig_cost_s >= 0.0) {
            return bad("reconfig_cost_s", "must be 0 or more seconds");
        }
        if !(self.mps_slowdown.is_finite() && self.mps_slowdown >= 0.0) {
            return bad("mps_slowdown", "must be 0 or more");
        }
        if !(self.warmup_fraction.is_finite() && (0.0..0.5).contains(&self.warmup_fraction)) {
            return bad("warmup_fraction", "must be in [0, 0.5)");
        }
        if self.reserve_after_s.is_nan() || self.reserve_after_s < 0.0 {
            return bad("reserve_after_s", "must be 0 or more seconds");
        }
        if !(self.compact_speed.is_finite() && (0.0..=1.0).contains(&self.compact_speed)) {
            return bad("compact_speed", "must be in [0, 1]");
        }
        if !(self.arrival_jitter_s.is_finite() && self.arrival_jitter_s >= 0.0) {
            return bad("arrival_jitter_s", "must be 0 or more seconds");
        }
        if self.cluster.gpus() == 0 {
            return bad("cluster", "has no GPUs");
        }
        Ok(())
    }
}

/// One seed's jobs: jittered, classes drawn, sorted by arrival.
struct Prepared {
    jobs: Vec<SimJob>,
    submits: Vec<f64>,
    tenant_of: Vec<u16>,
}

fn prepare(gpu_jobs: &[&Job], tenants: &[String], cfg: &RunConfig, seed: u64, speed: &SpeedModel) -> Prepared {
    let mut rng = Rng::new(seed);
    let mut v: Vec<(f64, usize, SimJob)> = gpu_jobs
        .iter()
        .enumerate()
        .map(|(i, j)| {
            let jitter =
                if cfg.arrival_jitter_s > 0.0 { (rng.next_f64() * 2.0 - 1.0) * cfg.arrival_jitter_s } else { 0.0 };
            let class = if j.model_class.is_empty() && cfg.assign_model_classes {
                MODEL_CLASSES[rng.below(MODEL_CLASSES.len() as u64) as usize]
            } else {
                j.model_class.as_str()
            };
            let submit = (j.submit_s + jitter).max(0.0);
            let tenant = tenants.binary_search(&j.tenant).unwrap_or(0);
            let job = SimJob {
                submit,
                duration: j.duration_s.max(1e-3),
                tenant: u16::try_from(tenant).unwrap_or(u16::MAX),
                num_gpu: j.num_gpu,
                milli: if j.num_gpu > 1 { 1000 } else { j.gpu_milli.clamp(1, 1000) },
                mem_mib: j.gpu_mem_mib,
                // Per rank: a gang's CPUs and memory are split over its GPUs.
                cpus: (j.cpus / f64::from(j.num_gpu.max(1))).ceil() as u32,
                host_mib: j.mem_mib / u64::from(j.num_gpu.max(1)),
                curve: speed.curve(class).or_else(|| speed.curve("")).unwrap_or([1.0; 5]),
            };
            (submit, i, job)
        })
        .collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let submits = v.iter().map(|x| x.0).collect();
    let tenant_of = v.iter().map(|x| x.2.tenant).collect();
    Prepared { jobs: v.into_iter().map(|x| x.2).collect(), submits, tenant_of }
}

fn params(cfg: &RunConfig, p: &Prepared) -> SimParams {
    let (lo, hi) = window_range(p.jobs.len(), cfg.warmup_fraction);
    let from = p.submits.get(lo).copied().unwrap_or(0.0);
    let to = p.submits.get(hi.saturating_sub(1)).copied().unwrap_or(from).max(from + 1.0);
    SimParams {
        reconfig_cost_s: cfg.reconfig_cost_s,
        mps_slowdown: cfg.mps_slowdown,
        mps_max_milli: cfg.mps_max_milli,
        window: (from, to),
        compact_speed: cfg.compact_speed,
        reserve_after_s: cfg.reserve_after_s,
        expand_below: cfg.expand_below,
        host_cpus_per_gpu: cfg.host_cpus_per_gpu,
        host_mem_mib_per_gpu: cfg.host_mem_mib_per_gpu,
    }
}

/// One replay's metrics over the measurement window, after checking that the replay broke no
/// invariant (the static search's replays included).
fn checked_metrics(
    cfg: &RunConfig,
    p: &Prepared,
    tenants: &[String],
    seed: u64,
    out: &SimOutput,
) -> Result<(SeedMetrics, Vec<f64>), TimeError> {
    if let Some(v) = out.violations.first() {
        return Err(TimeError::Config { field: "scheduler", reason: format!("invariant broken: {v}") });
    }
    Ok(report::seed_metrics(
        seed,
        out,
        &p.submits,
        &p.tenant_of,
        tenants,
        window_range(p.jobs.len(), cfg.warmup_fraction),
        cfg.reconfig_cost_s,
    ))
}

/// Replay `jobs` under every policy and seed of `cfg`. `progress(done, total)` counts finished
/// jobs over all replays (the static search included).
pub fn run(cfg: &RunConfig, jobs: &[Job], progress: &mut dyn FnMut(u64, u64)) -> Result<RunReport, TimeError> {
    cfg.validate()?;
    let speed = SpeedModel::miso();
    let gpu_jobs: Vec<&Job> = jobs.iter().filter(|j| j.num_gpu > 0).collect();
    if gpu_jobs.is_empty() {
        return Err(TimeError::NoJobs { reason: format!("none of the {} jobs asks for a GPU", jobs.len()) });
    }
    for j in &gpu_jobs {
        speed.check(&j.id, &j.model_class)?;
        if !(j.duration_s.is_finite() && j.duration_s > 0.0 && j.submit_s.is_finite()) {
            return Err(TimeError::Job {
                job: j.id.clone(),
                reason: "needs a finite submit time and a duration above 0".into(),
            });
        }
    }
    let mut tenants: Vec<String> = gpu_jobs.iter().map(|j| j.tenant.clone()).collect();
    tenants.sort();
    tenants.dedup();
    let first_model = cfg
        .cluster
        .first_model()
        .ok_or_else(|| TimeError::Config { field: "cluster", reason: "has no GPUs".into() })?;

    // Static search candidates.
    let needs_search = cfg.policies.iter().any(|p| matches!(p, PolicySpec::Static { layout: None }));
    let candidates = if needs_search { static_candidates(first_model) } else { Vec::new() };
    let runs = (cfg.policies.len() * cfg.seeds.len() + candidates.len()) as u64;
    let total = runs * gpu_jobs.len() as u64;
    let per_run = gpu_jobs.len() as u64;
    let mut done = 0u64;
    let mut runs_done = 0u64;
    // Finished jobs as they come, then the whole run (jobs that never ran count as done).
    let mut tick = |n: Option<u64>, progress: &mut dyn FnMut(u64, u64)| {
        match n {
            Some(n) => done += n,
            None => {
                runs_done += 1;
                done = done.max(runs_done * per_run);
            }
        }
        progress(done.min(total), total);
    };

    let prepared: Vec<Prepared> = cfg.seeds.iter().map(|s| prepare(&gpu_jobs, &tenants, cfg, *s, &speed)).collect();
    let window = {
        let p = &prepared[0];
        let (lo, hi) = window_range(p.jobs.len(), cfg.warmup_fraction);
        Window {
            warmup_fraction: cfg.warmup_fraction,
            first_job: lo,
            last_job: hi.saturating_sub(1),
            jobs: hi - lo,
            from_s: p.submits.get(lo).copied().unwrap_or(0.0),
            to_s: p.submits.get(hi.saturating_sub(1)).copied().unwrap_or(0.0),
        }
    };

    let mut static_search: Vec<LayoutScore> = Vec::new();
    let mut best_static: Option<Vec<String>> = None;
    if needs_search {
        let p = &prepared[0];
        let sp = params(cfg, p);
        let mut best: Option<(f64, Vec<String>)> = None;
        for names in &candidates {
            let pol = Resolved { spec: PolicySpec::Static { layout: None }, layout: Some(names.clone()) };
            let out = sim::simulate(&p.jobs, &tenants, &cfg.cluster, &pol, &sp, &mut |n| tick(Some(n), progress))?;
            tick(None, progress);
            let (m, _) = checked_metrics(cfg, p, &tenants, cfg.seeds[0], &out)?;
            // A layout that leaves measured jobs unfinished cannot be the best.
            let score = if m.unfinished_jobs > 0 { f64::INFINITY } else { m.jct_mean_s };
            static_search.push(LayoutScore { layout: names.join("+"), jct_mean_s: score });
            if best.as_ref().is_none_or(|(b, _)| score < *b) {
                best = Some((score, names.clone()));
            }
        }
        static_search.sort_by(|a, b| a.jct_mean_s.total_cmp(&b.jct_mean_s).then(a.layout.cmp(&b.layout)));
        best_static = best.map(|b| b.1);
    }

    let mut policies = Vec::new();
    for pol in &cfg.policies {
        let layout = match pol {
            PolicySpec::Static { layout: Some(l) } => Some(l.clone()),
            PolicySpec::Static { layout: None } => best_static.clone(),
            _ => None,
        };
        let resolved = Resolved { spec: pol.clone(), layout: layout.clone() };
        let mut per_seed = Vec::new();
        let mut pooled = Vec::new();
        let mut series = Vec::new();
        for (k, p) in prepared.iter().enumerate() {
            let sp = params(cfg, p);
            let out: SimOutput =
                sim::simulate(&p.jobs, &tenants, &cfg.cluster, &resolved, &sp, &mut |n| tick(Some(n), progress))?;
            tick(None, progress);
            let (m, jct) = checked_metrics(cfg, p, &tenants, cfg.seeds[k], &out)?;
            per_seed.push(m);
            pooled.extend(jct);
            series.push(out.util_series);
        }
        policies.push(report::policy_report(pol.to_string(), layout.map(|l| l.join("+")), per_seed, pooled, series));
    }

    let demand: f64 = gpu_jobs.iter().map(|j| gpu_demand(j, first_model) * j.duration_s).sum();
    let first = gpu_jobs.iter().map(|j| j.submit_s).fold(f64::INFINITY, f64::min);
    let last = gpu_jobs.iter().map(|j| j.submit_s).fold(f64::NEG_INFINITY, f64::max);
    let offered_load = demand / ((last - first).max(1.0) * f64::from(cfg.cluster.gpus()));
    Ok(RunReport {
        cluster: cfg.cluster.to_string(),
        gpus: cfg.cluster.gpus(),
        nodes: cfg.cluster.nodes(),
        jobs: jobs.len(),
        gpu_jobs: gpu_jobs.len(),
        excluded_jobs: jobs.len() - gpu_jobs.len(),
        offered_load,
        seeds: cfg.seeds.clone(),
        window,
        reconfig_cost_s: cfg.reconfig_cost_s,
        mps_slowdown: cfg.mps_slowdown,
        arrival_jitter_s: cfg.arrival_jitter_s,
        seed_varies: format!(
            "arrivals jittered uniformly within ±{}s{}",
            cfg.arrival_jitter_s,
            if cfg.assign_model_classes {
                "; jobs without a model class get one of MISO's 8 classes uniformly at random"
            } else {
                ""
            }
        ),
        static_search,
        policies,
    })
}
