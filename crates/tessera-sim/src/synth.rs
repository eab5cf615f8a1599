//! Synthetic workloads for scale runs: Poisson arrivals, a weighted size mix, log-normal
//! durations and Zipf-skewed tenants, all drawn from one seeded [`Rng`] so a run is reproducible
//! from its seed. Real traces (openb) are small samples; this lets the simulator go to millions of
//! jobs and to any offered load ([`interarrival_for_load`]) while keeping openb's shape
//! ([`SynthConfig::default`]).

use serde::{Deserialize, Serialize};

use crate::rng::Rng;
use crate::trace::Job;

/// What is wrong with a size mix or a generator configuration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SynthError {
    /// One item of a mix string (`parse_mix`) is malformed.
    #[error("mix item {index} '{item}': {reason} (expected GPUSxMILLI:WEIGHT, e.g. 1x500:2)")]
    MixItem { index: usize, item: String, reason: String },
    /// One size class of a configuration breaks a rule.
    #[error("size class {index} ({num_gpu}x{gpu_milli}, weight {weight}): {reason}")]
    SizeClass { index: usize, num_gpu: u32, gpu_milli: u32, weight: f64, reason: String },
    /// A scalar parameter is out of range.
    #[error("synthetic workload: {field} = {value}: {reason}")]
    Param { field: &'static str, value: String, reason: String },
}

/// One kind of job in the mix: `num_gpu` GPUs, each `gpu_milli` thousandths of a GPU, drawn with
/// probability proportional to `weight`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SizeClass {
    pub num_gpu: u32,
    pub gpu_milli: u32,
    pub weight: f64,
}

impl SizeClass {
    /// Expected GPU demand of one job of this class, in GPUs.
    pub fn gpus(&self) -> f64 {
        f64::from(self.num_gpu) * f64::from(self.gpu_milli) / 1000.0
    }
}

/// The synthetic generator's parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthConfig {
    /// How many jobs.
    pub jobs: usize,
    pub seed: u64,
    /// Mean seconds between arrivals (exponential gaps: a Poisson process).
    pub mean_interarrival_s: f64,
    /// The size mix.
    pub mix: Vec<SizeClass>,
    /// Median duration in seconds (log-normal).
    pub duration_median_s: f64,
    /// Standard deviation of ln(duration); 0 gives every job the median.
    pub duration_sigma: f64,
    /// Tenants `t0..t{n-1}`, Zipf-skewed with exponent 1: tenant `k` is drawn with probability
    /// proportional to `1/(k+1)`, so `t0` is the heaviest.
    pub tenants: u32,
    /// Drawn uniformly per job; empty gives every job `""` (the default speed curve).
    pub model_classes: Vec<String>,
}

impl Default for SynthConfig {
    /// openb's default trace (`openb_pod_list_default.csv`) in shape: the GPU pods' sizes with
    /// their counts as weights (55% whole single GPUs, 44% sharing at 810/470/320/650/230… milli,
    /// under 1% 2/4/8-GPU), its median duration (616 s, rounded to 600) with a heavy tail
    /// (sigma 1.5), 10,000 jobs a minute apart, 8 tenants, the default speed curve.
    fn default() -> Self {
        const OPENB: [(u32, u32, f64); 24] = [
            (1, 1000, 3911.0),
            (1, 810, 1078.0),
            (1, 470, 750.0),
            (1, 320, 328.0),
            (1, 650, 253.0),
            (1, 230, 140.0),
            (1, 460, 128.0),
            (1, 590, 75.0),
            (1, 160, 74.0),
            (1, 550, 72.0),
            (1, 220, 62.0),
            (1, 370, 47.0),
            (1, 110, 24.0),
            (1, 480, 19.0),
            (1, 50, 7.0),
            (1, 330, 7.0),
            (1, 350, 6.0),
            (1, 270, 4.0),
            (1, 440, 2.0),
            (1, 290, 1.0),
            (1, 140, 1.0),
            (2, 1000, 16.0),
            (4, 1000, 15.0),
            (8, 1000, 44.0),
        ];
        SynthConfig {
            jobs: 10_000,
            seed: 1,
            mean_interarrival_s: 60.0,
            mix: OPENB.iter().map(|&(num_gpu, gpu_milli, weight)| SizeClass { num_gpu, gpu_milli, weight }).collect(),
            duration_median_s: 600.0,
            duration_sigma: 1.5,
            tenants: 8,
            model_classes: Vec::new(),
        }
    }
}

/// Parse a size mix: comma-separated `GPUSxMILLI:WEIGHT` items, e.g.
/// `1x250:3,1x500:2,1x1000:4,2x1000:1`. `:WEIGHT` may be left out (weight 1). Each item is
/// checked by the same rules as [`generate`]; errors name the bad item.
pub fn parse_mix(s: &str) -> Result<Vec<SizeClass>, SynthError> {
    let mut out = Vec::new();
    for (index, raw) in s.split(',').enumerate() {
        let item = raw.trim();
        let bad = |reason: &str| SynthError::MixItem { index, item: item.to_string(), reason: reason.to_string() };
        if item.is_empty() {
            return Err(bad("empty item"));
        }
        let (size, weight) = match item.split_once(':') {
            Some((size, w)) => (size.trim(), Some(w.trim())),
            None => (item, None),
        };
        let Some((n, m)) = size.split_once(['x', 'X']) else { return Err(bad("no 'x' between GPUs and milli-GPU")) };
        let num_gpu = n.trim().parse::<u32>().map_err(|_| bad("GPU count is not a whole number"))?;
        let gpu_milli = m.trim().parse::<u32>().map_err(|_| bad("milli-GPU is not a whole number"))?;
        let weight = match weight {
            Some(w) => w.parse::<f64>().map_err(|_| bad("weight is not a number"))?,
            None => 1.0,
        };
        let class = SizeClass { num_gpu, gpu_milli, weight };
        if let Some(reason) = class_problem(&class) {
            return Err(bad(reason));
        }
        out.push(class);
    }
    Ok(out)
}

/// Format a mix in [`parse_mix`]'s syntax (round-trips).
pub fn format_mix(mix: &[SizeClass]) -> String {
    mix.iter().map(|c| format!("{}x{}:{}", c.num_gpu, c.gpu_milli, c.weight)).collect::<Vec<_>>().join(",")
}

fn class_problem(c: &SizeClass) -> Option<&'static str> {
    if c.num_gpu == 0 {
        Some("GPU count must be at least 1 (synthetic jobs are GPU jobs)")
    } else if !(1..=1000).contains(&c.gpu_milli) {
        Some("milli-GPU must be 1–1000 (the share of one GPU)")
    } else if c.num_gpu > 1 && c.gpu_milli != 1000 {
        Some("a multi-GPU job must ask for whole GPUs (1000)")
    } else if !(c.weight.is_finite() && c.weight > 0.0) {
        Some("weight must be a finite number above 0")
    } else {
        None
    }
}

fn param(field: &'static str, value: impl ToString, reason: &str) -> SynthError {
    SynthError::Param { field, value: value.to_string(), reason: reason.to_string() }
}

fn validate(cfg: &SynthConfig) -> Result<(), SynthError> {
    if cfg.jobs == 0 {
        return Err(param("jobs", 0, "must be at least 1"));
    }
    if !(cfg.mean_interarrival_s.is_finite() && cfg.mean_interarrival_s >= 0.0) {
        return Err(param("mean_interarrival_s", cfg.mean_interarrival_s, "must be a finite number of 0 or more"));
    }
    if cfg.mix.is_empty() {
        return Err(param("mix", "[]", "needs at least one size class"));
    }
    for (index, c) in cfg.mix.iter().enumerate() {
        if let Some(reason) = class_problem(c) {
            return Err(SynthError::SizeClass {
                index,
                num_gpu: c.num_gpu,
                gpu_milli: c.gpu_milli,
                weight: c.weight,
                reason: reason.to_string(),
            });
        }
    }
    if !(cfg.duration_median_s.is_finite() && cfg.duration_median_s > 0.0) {
        return Err(param("duration_median_s", cfg.duration_median_s, "must be a finite number above 0"));
    }
    if !(cfg.duration_sigma.is_finite() && (0.0..=10.0).contains(&cfg.duration_sigma)) {
        return Err(param("duration_sigma", cfg.duration_sigma, "must be 0–10"));
    }
    if cfg.tenants == 0 {
        return Err(param("tenants", 0, "must be at least 1"));
    }
    Ok(())
}

/// Cumulative weights normalised to end at exactly 1, for inverse-CDF draws.
fn cumulative(weights: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut acc = 0.0;
    let mut cdf: Vec<f64> = weights
        .map(|w| {
            acc += w;
            acc
        })
        .collect();
    let total = acc;
    for c in &mut cdf {
        *c /= total;
    }
    if let Some(last) = cdf.last_mut() {
        *last = 1.0;
    }
    cdf
}

/// Index drawn from a cumulative table: the first entry above `u` (`u` in [0, 1)).
fn pick(cdf: &[f64], u: f64) -> usize {
    cdf.partition_point(|&c| c <= u).min(cdf.len() - 1)
}

/// Standard normal draws by Box–Muller, both values of each pair used.
struct Normal {
    spare: Option<f64>,
}

impl Normal {
    fn next(&mut self, rng: &mut Rng) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let u1 = 1.0 - rng.next_f64(); // (0, 1]: ln is finite
        let u2 = rng.next_f64();
        let r = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
        self.spare = Some(r * s);
        r * c
    }
}

/// `s` and `n` in at least seven digits (`s0000001`), without `format!`'s overhead: a million ids
/// are a measurable share of generating a million jobs.
fn job_id(mut n: usize) -> String {
    let mut buf = [b'0'; 24];
    let mut at = buf.len();
    while n > 0 || buf.len() - at < 7 {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    at -= 1;
    buf[at] = b's';
    String::from_utf8_lossy(&buf[at..]).into_owned()
}

/// Generate the jobs: ids `s0000001`, `s0000002`, … in arrival order (sorted by `submit_s`, the
/// first at the first exponential gap after 0). Every job asks for 8 CPUs per GPU of demand
/// (rounded up, at least 1) and 4 GiB of memory per CPU; GPU memory is 0 (unknown). The same
/// configuration gives the same jobs.
pub fn generate(cfg: &SynthConfig) -> Result<Vec<Job>, SynthError> {
    validate(cfg)?;
    let mut rng = Rng::new(cfg.seed);
    let mut normal = Normal { spare: None };
    let mix_cdf = cumulative(cfg.mix.iter().map(|c| c.weight));
    let tenant_cdf = cumulative((0..cfg.tenants).map(|k| 1.0 / (f64::from(k) + 1.0)));
    let tenant_names: Vec<String> = (0..cfg.tenants).map(|k| format!("t{k}")).collect();
    let classes = cfg.model_classes.len() as u64;
    let mut jobs = Vec::with_capacity(cfg.jobs);
    let mut now = 0.0;
    for i in 0..cfg.jobs {
        now += rng.exp(cfg.mean_interarrival_s);
        let class = &cfg.mix[pick(&mix_cdf, rng.next_f64())];
        let duration_s = (cfg.duration_median_s * (cfg.duration_sigma * normal.next(&mut rng)).exp())
            .clamp(f64::MIN_POSITIVE, f64::MAX);
        let tenant = tenant_names[pick(&tenant_cdf, rng.next_f64())].clone();
        let model_class =
            if classes == 0 { String::new() } else { cfg.model_classes[rng.below(classes) as usize].clone() };
        let cpus = (class.gpus() * 8.0).ceil().max(1.0);
        jobs.push(Job {
            id: job_id(i + 1),
            submit_s: now,
            duration_s,
            tenant,
            num_gpu: class.num_gpu,
            gpu_milli: class.gpu_milli,
            gpu_mem_mib: 0,
            cpus,
            mem_mib: cpus as u64 * 4096,
            model_class,
        });
    }
    Ok(jobs)
}

/// Expected GPU demand of one job under `cfg`'s mix, in GPUs (NaN for an empty or invalid mix).
pub fn expected_gpus(cfg: &SynthConfig) -> f64 {
    let total: f64 = cfg.mix.iter().map(|c| c.weight).sum();
    cfg.mix.iter().map(|c| c.weight * c.gpus()).sum::<f64>() / total
}

/// Expected duration in seconds under `cfg`: the log-normal mean, `median × exp(sigma² / 2)`.
pub fn expected_duration_s(cfg: &SynthConfig) -> f64 {
    cfg.duration_median_s * (cfg.duration_sigma * cfg.duration_sigma / 2.0).exp()
}

/// The mean inter-arrival time (seconds) that offers `load` (1.0 = every GPU busy on average) to
/// `gpus` GPUs: `E[GPU demand] × E[duration] / (gpus × load)`. NaN when `gpus` is 0, `load` is not
/// a finite number above 0, or the mix or durations are invalid; [`generate`] rejects NaN.
pub fn interarrival_for_load(cfg: &SynthConfig, gpus: u32, load: f64) -> f64 {
    if gpus == 0 || !(load.is_finite() && load > 0.0) || cfg.mix.iter().any(|c| class_problem(c).is_some()) {
        return f64::NAN;
    }
    let v = expected_gpus(cfg) * expected_duration_s(cfg) / (f64::from(gpus) * load);
    if v.is_finite() && v > 0.0 { v } else { f64::NAN }
}
