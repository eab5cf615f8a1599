//! MIGBench's trace generator, regenerated: the 500-job resource-bound trace its control-plane
//! run measured HAMi and NVIDIA's DRA driver on (`anchors-2026-update.md` §2.2), from the seed.
//!
//! MIGBench (`FouoF/MIG-scheduler-benchmark`) publishes its generator
//! (`internal/workload/workload.go`) and its configuration
//! (`experiment.control-plane.saturated.yaml`), both at the runner commit of its published results,
//! `72a3905eb5e3616ebc2d7afe3d6dbac0a3e52a76`; the trace itself is only inside a binary archive.
//! This module reimplements that generator, so the trace of seed 20260914 is theirs, number for
//! number, and other seeds give traces drawn the same way:
//!
//! - **Profiles and durations** from one stream, job by job: a profile by weight
//!   (`x = Float64() × Σw`, subtracting weights in (GPC, memory) order until `x ≤ 0`), then a
//!   duration `d = trunc(exp(ln(median) + σ·NormFloat64()))` ms, at least 1. A job asks for the
//!   profile's memory and `d × computePercent` of compute work, so on its own profile it runs `d` ms.
//! - **Arrivals** from a second stream: gaps `trunc(ExpFloat64() × mean)` ms, where `mean` makes the
//!   sampled GPC-time demand `target_offered_load` times the cluster's GPCs.
//! - **Random numbers** as Go's `math/rand/v2` makes them ([`GoRand`]): the PCG-DXSM generator
//!   seeded `(seed, seed ^ 0x9e3779b97f4a7c15)` for the first stream and
//!   `(seed ^ 0xd1b54a32d192ed03, seed ^ 0x94d049bb133111eb)` for the second; `Float64` from the top
//!   53 bits; `ExpFloat64` and `NormFloat64` by Marsaglia and Tsang's ziggurat ("The Ziggurat Method
//!   for Generating Random Variables", JSS 2000), with the tables computed here from the paper's
//!   set-up (`tests/migbench.rs` checks the whole stream against a trace MIGBench published).
//!
//! Pure: no I/O, no clock.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Serialize;
use tessera_mig::GpuModel;

use crate::kube::{KubeError, KubePod};

/// Go's `math/rand/v2` with its PCG source: the same numbers from the same seeds.
#[derive(Debug, Clone)]
pub struct GoRand {
    hi: u64,
    lo: u64,
}

impl GoRand {
    /// `rand.New(rand.NewPCG(seed1, seed2))`.
    pub fn new_pcg(seed1: u64, seed2: u64) -> Self {
        GoRand { hi: seed1, lo: seed2 }
    }

    /// The next 64 bits: a 128-bit LCG step, then the DXSM output function.
    pub fn uint64(&mut self) -> u64 {
        const MUL: u128 = (2_549_297_995_355_413_924u128 << 64) | 4_865_540_595_714_422_341u128;
        const INC: u128 = (6_364_136_223_846_793_005u128 << 64) | 1_442_695_040_888_963_407u128;
        const CHEAP_MUL: u64 = 0xda94_2042_e4dd_58b5;
        let state = ((u128::from(self.hi) << 64) | u128::from(self.lo)).wrapping_mul(MUL).wrapping_add(INC);
        self.hi = (state >> 64) as u64;
        self.lo = state as u64;
        let mut hi = self.hi;
        hi ^= hi >> 32;
        hi = hi.wrapping_mul(CHEAP_MUL);
        hi ^= hi >> 48;
        hi.wrapping_mul(self.lo | 1)
    }

    /// Uniform in [0, 1): the low 53 bits over 2^53.
    pub fn float64(&mut self) -> f64 {
        (self.uint64() & ((1u64 << 53) - 1)) as f64 / (1u64 << 53) as f64
    }

    /// Exponential with rate 1 (the ziggurat's 256 strips).
    pub fn exp_float64(&mut self) -> f64 {
        // Go's tail constant, 7.69711747013104972 (the same f64); the tables use the paper's
        // 7.697117470131487 (both give the same tables in f32).
        const RE: f64 = 7.697_117_470_131_05;
        let z = ziggurat();
        loop {
            let u = self.uint64();
            let j = u as u32;
            let i = ((u >> 32) & 0xff) as usize;
            let x = f64::from(j) * f64::from(z.we[i]);
            if j < z.ke[i] {
                return x;
            }
            if i == 0 {
                return RE - self.float64().ln();
            }
            let f = self.float64() as f32;
            if z.fe[i] + f * (z.fe[i - 1] - z.fe[i]) < (-x).exp() as f32 {
                return x;
            }
        }
    }

    /// Standard normal (the ziggurat's 128 strips, the sign from the low word).
    pub fn norm_float64(&mut self) -> f64 {
        let z = ziggurat();
        loop {
            let u = self.uint64();
            let j = u as u32 as i32;
            let i = ((u >> 32) & 0x7f) as usize;
            let x = f64::from(j) * f64::from(z.wn[i]);
            if j.unsigned_abs() < z.kn[i] {
                return x;
            }
            if i == 0 {
                let mut x;
                loop {
                    x = -self.float64().ln() * (1.0 / NORMAL_R);
                    let y = -self.float64().ln();
                    if y + y >= x * x {
                        break;
                    }
                }
                return if j > 0 { NORMAL_R + x } else { -NORMAL_R - x };
            }
            let f = self.float64() as f32;
            if z.fn_[i] + f * (z.fn_[i - 1] - z.fn_[i]) < (-0.5 * x * x).exp() as f32 {
                return x;
            }
        }
    }
}

/// The normal ziggurat's rightmost strip edge (the paper's `dn`).
const NORMAL_R: f64 = 3.442_619_855_899;

/// The ziggurat tables: `k` (acceptance bounds), `w` (scales) and `f` (densities at the edges).
struct Ziggurat {
    kn: [u32; 128],
    wn: [f32; 128],
    fn_: [f32; 128],
    ke: [u32; 256],
    we: [f32; 256],
    fe: [f32; 256],
}

/// The tables as Marsaglia and Tsang's `zigset` computes them, in f64, then stored as u32 (cut)
/// and f32 (rounded), as Go keeps them.
fn ziggurat() -> &'static Ziggurat {
    static TABLES: OnceLock<Ziggurat> = OnceLock::new();
    TABLES.get_or_init(|| {
        let mut z =
            Ziggurat { kn: [0; 128], wn: [0.0; 128], fn_: [0.0; 128], ke: [0; 256], we: [0.0; 256], fe: [0.0; 256] };
        // Normal: 128 strips of area vn.
        let m1 = 2_147_483_648.0_f64;
        let vn = 9.912_563_035_262_17e-3_f64;
        let mut dn = NORMAL_R;
        let mut tn = dn;
        let q = vn / (-0.5 * dn * dn).exp();
        z.kn[0] = ((dn / q) * m1) as u32;
        z.kn[1] = 0;
        z.wn[0] = (q / m1) as f32;
        z.wn[127] = (dn / m1) as f32;
        z.fn_[0] = 1.0;
        z.fn_[127] = (-0.5 * dn * dn).exp() as f32;
        for i in (1..=126).rev() {
            dn = (-2.0 * (vn / dn + (-0.5 * dn * dn).exp()).ln()).sqrt();
            z.kn[i + 1] = ((dn / tn) * m1) as u32;
            tn = dn;
            z.fn_[i] = (-0.5 * dn * dn).exp() as f32;
            z.wn[i] = (dn / m1) as f32;
        }
        // Exponential: 256 strips of area ve.
        let m2 = 4_294_967_296.0_f64;
        let ve = 3.949_659_822_581_572e-3_f64;
        let mut de = 7.697_117_470_131_487_f64;
        let mut te = de;
        let q = ve / (-de).exp();
        z.ke[0] = ((de / q) * m2) as u32;
        z.ke[1] = 0;
        z.we[0] = (q / m2) as f32;
        z.we[255] = (de / m2) as f32;
        z.fe[0] = 1.0;
        z.fe[255] = (-de).exp() as f32;
        for i in (1..=254).rev() {
            de = -(ve / de + (-de).exp()).ln();
            z.ke[i + 1] = ((de / te) * m2) as u32;
            te = de;
            z.fe[i] = (-de).exp() as f32;
            z.we[i] = (de / m2) as f32;
        }
        z
    })
}

/// One profile of MIGBench's cluster model, with its weight in the workload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MigBenchProfile {
    /// The profile's name, which is also the catalog's (`3g.40gb`).
    pub name: String,
    pub gpc: u32,
    pub memory_gb: u32,
    /// A job on this profile runs `computeCoreMS / compute_percent` ms.
    pub compute_percent: u32,
    pub weight: f64,
}

/// MIGBench's workload parameters (`workload:` and `cluster.profiles` of its configuration).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MigBenchTraceSpec {
    pub jobs: usize,
    /// Sampled GPC-time demand ÷ (cluster GPCs × jobs × mean gap).
    pub target_offered_load: f64,
    pub duration_median_ms: f64,
    pub duration_sigma: f64,
    pub profiles: Vec<MigBenchProfile>,
}

impl Default for MigBenchTraceSpec {
    /// The published control-plane run (`experiment.control-plane.saturated.yaml` at 72a3905):
    /// 500 jobs, offered load 1.40, durations log-normal with median 600 s and σ 0.8, profiles
    /// `1g.10gb` 35, `2g.20gb` 25, `3g.40gb` 25, `7g.80gb` 5.
    fn default() -> Self {
        let p = |name: &str, gpc, memory_gb, compute_percent, weight| MigBenchProfile {
            name: name.to_string(),
            gpc,
            memory_gb,
            compute_percent,
            weight,
        };
        MigBenchTraceSpec {
            jobs: 500,
            target_offered_load: 1.40,
            duration_median_ms: 600_000.0,
            duration_sigma: 0.8,
            profiles: vec![
                p("1g.10gb", 1, 10, 14, 35.0),
                p("2g.20gb", 2, 20, 28, 25.0),
                p("3g.40gb", 3, 40, 42, 25.0),
                p("7g.80gb", 7, 80, 100, 5.0),
            ],
        }
    }
}

/// The seed of MIGBench's published control-plane run.
pub const MIGBENCH_PUBLISHED_SEED: u64 = 20_260_914;

/// One job as MIGBench writes it (`resource-bound-v2`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigBenchJob {
    /// `job-000001`, …
    pub id: String,
    pub arrival_ms: i64,
    /// Compute work: duration × the profile's compute percent.
    pub compute_core_ms: i64,
    pub memory_mb: u64,
}

/// The profiles in MIGBench's order (GPC, then memory), with the weights' sum.
fn ordered(spec: &MigBenchTraceSpec) -> Result<(Vec<&MigBenchProfile>, f64), KubeError> {
    let bad = |reason: String| KubeError::Config { field: "migbench.profiles", reason };
    let mut ps: Vec<&MigBenchProfile> = spec.profiles.iter().collect();
    if ps.is_empty() {
        return Err(bad("must list at least one profile".into()));
    }
    if let Some(p) = ps.iter().find(|p| !(p.weight.is_finite() && p.weight >= 0.0)) {
        return Err(bad(format!("{}: weight {} is not 0 or more", p.name, p.weight)));
    }
    if let Some(p) = ps.iter().find(|p| p.gpc == 0 || p.compute_percent == 0 || p.memory_gb == 0) {
        return Err(bad(format!("{}: GPCs, memory and compute percent must be above 0", p.name)));
    }
    ps.sort_by_key(|p| (p.gpc, p.memory_gb));
    let total: f64 = ps.iter().map(|p| p.weight).sum();
    if total <= 0.0 {
        return Err(bad("weights sum to 0".into()));
    }
    Ok((ps, total))
}

/// The smallest profile (GPC, then memory) with at least `memory_mb`: what a job runs on.
fn profile_for_memory<'a>(ps: &[&'a MigBenchProfile], memory_mb: u64) -> Option<&'a MigBenchProfile> {
    ps.iter().copied().find(|p| u64::from(p.memory_gb) * 1024 >= memory_mb)
}

/// MIGBench's trace for a cluster of `total_gpc` GPCs, drawn from `seed` as its generator draws it.
pub fn migbench_jobs(spec: &MigBenchTraceSpec, total_gpc: u32, seed: u64) -> Result<Vec<MigBenchJob>, KubeError> {
    let (ps, total) = ordered(spec)?;
    if spec.jobs == 0
        || total_gpc == 0
        || !(spec.target_offered_load.is_finite() && spec.target_offered_load >= 0.01)
        || !(spec.duration_median_ms.is_finite() && spec.duration_median_ms > 0.0)
        || !(spec.duration_sigma.is_finite() && spec.duration_sigma >= 0.0)
    {
        return Err(KubeError::Config {
            field: "migbench",
            reason: "needs jobs, GPCs, an offered load of at least 0.01, a median above 0 and a sigma of 0 or more"
                .into(),
        });
    }
    let mut r = GoRand::new_pcg(seed, seed ^ 0x9e37_79b9_7f4a_7c15);
    let mut jobs = Vec::with_capacity(spec.jobs);
    let mut occupied_gpc_ms = 0.0;
    for i in 0..spec.jobs {
        let mut x = r.float64() * total;
        let mut chosen = ps[ps.len() - 1];
        for p in &ps {
            x -= p.weight;
            if x <= 0.0 {
                chosen = p;
                break;
            }
        }
        let d = ((spec.duration_median_ms.ln() + spec.duration_sigma * r.norm_float64()).exp() as i64).max(1);
        let job = MigBenchJob {
            id: format!("job-{:06}", i + 1),
            arrival_ms: 0,
            compute_core_ms: d.saturating_mul(i64::from(chosen.compute_percent)),
            memory_mb: u64::from(chosen.memory_gb) * 1024,
        };
        // The generator charges each job at the smallest profile that holds its memory.
        let on = profile_for_memory(&ps, job.memory_mb).unwrap_or(chosen);
        occupied_gpc_ms += f64::from(on.gpc) * runtime_ms(&job, on) as f64;
        jobs.push(job);
    }
    let mean_gap = occupied_gpc_ms / (spec.jobs as f64 * f64::from(total_gpc)) / spec.target_offered_load;
    let mut a = GoRand::new_pcg(seed ^ 0xd1b5_4a32_d192_ed03, seed ^ 0x94d0_49bb_1331_11eb);
    let mut arrival: i64 = 0;
    for job in &mut jobs {
        arrival = arrival.saturating_add((a.exp_float64() * mean_gap) as i64);
        job.arrival_ms = arrival;
    }
    Ok(jobs)
}

/// How long `job` runs on `p`: its compute work over the profile's percent, rounded up.
fn runtime_ms(job: &MigBenchJob, p: &MigBenchProfile) -> i64 {
    let pct = i64::from(p.compute_percent);
    (job.compute_core_ms + pct - 1) / pct
}

/// MIGBench's trace as pods on `gpus` GPUs of `model`: each job asks for one device of the
/// smallest profile that holds its memory and runs `computeCoreMS / computePercent` on it.
pub fn migbench_trace_pods(
    spec: &MigBenchTraceSpec,
    model: &GpuModel,
    gpus: u32,
    seed: u64,
) -> Result<Vec<KubePod>, KubeError> {
    let (ps, _) = ordered(spec)?;
    for p in &ps {
        model.profile(&p.name).map_err(|e| KubeError::Config { field: "migbench.profiles", reason: e.to_string() })?;
    }
    let jobs = migbench_jobs(spec, gpus.saturating_mul(u32::from(model.compute_slices)), seed)?;
    jobs.iter()
        .map(|j| {
            let p = profile_for_memory(&ps, j.memory_mb).ok_or_else(|| KubeError::Pod {
                pod: j.id.clone(),
                reason: format!("no profile holds {} MB", j.memory_mb),
            })?;
            Ok(KubePod {
                id: j.id.clone(),
                submit_s: j.arrival_ms as f64 / 1000.0,
                runtime_s: runtime_ms(j, p) as f64 / 1000.0,
                profile: p.name.clone(),
                count: 1,
            })
        })
        .collect()
}

/// What a trace is, to compare with what MIGBench states about its own.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TraceStats {
    pub jobs: usize,
    /// Pods per profile.
    pub by_profile: BTreeMap<String, usize>,
    pub mean_runtime_s: f64,
    /// Last arrival minus first.
    pub arrival_span_s: f64,
    /// Compute-slice seconds of all pods ÷ (cluster slices × the arrival span).
    pub offered_load: f64,
}

/// The statistics of `pods` on a cluster of `slices` compute slices.
pub fn trace_stats(pods: &[KubePod], model: &GpuModel, slices: u32) -> TraceStats {
    let mut by_profile = BTreeMap::new();
    let mut work = 0.0;
    for p in pods {
        *by_profile.entry(p.profile.clone()).or_insert(0) += 1;
        let s = model.profile(&p.profile).map_or(0, |x| x.compute_slices);
        work += f64::from(s) * f64::from(p.count) * p.runtime_s;
    }
    let first = pods.iter().map(|p| p.submit_s).fold(f64::INFINITY, f64::min);
    let last = pods.iter().map(|p| p.submit_s).fold(f64::NEG_INFINITY, f64::max);
    let span = if pods.is_empty() { 0.0 } else { last - first };
    TraceStats {
        jobs: pods.len(),
        by_profile,
        mean_runtime_s: if pods.is_empty() {
            0.0
        } else {
            pods.iter().map(|p| p.runtime_s).sum::<f64>() / pods.len() as f64
        },
        arrival_span_s: span,
        offered_load: if span > 0.0 && slices > 0 { work / (f64::from(slices) * span) } else { 0.0 },
    }
}
