//! What a run reports: per-seed metrics over the steady-state window, their means with 95%
//! confidence intervals over seeds, and the text, CSV and chart forms.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use tessera_sim::plot::{Axis, LineChart, Series};
use tessera_sim::stats::{Estimate, jain, mean, percentile_sorted};

use crate::sim::SimOutput;

/// The jobs a run measures: by arrival order, skipping `warmup_fraction` at each end.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Window {
    pub warmup_fraction: f64,
    /// First and last measured job, by arrival order (0-based, inclusive), among GPU jobs.
    pub first_job: usize,
    pub last_job: usize,
    pub jobs: usize,
    /// Arrival times of the first and last measured job (the seed-0 arrivals), in seconds.
    pub from_s: f64,
    pub to_s: f64,
}

/// The measured jobs of `n` (by arrival order): `[floor(n·w), n − floor(n·w))`.
pub fn window_range(n: usize, warmup_fraction: f64) -> (usize, usize) {
    let w = if warmup_fraction.is_finite() { warmup_fraction.clamp(0.0, 0.49) } else { 0.0 };
    let skip = (n as f64 * w).floor() as usize;
    (skip, n.saturating_sub(skip).max(skip))
}

/// One policy under one seed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeedMetrics {
    pub seed: u64,
    pub jct_mean_s: f64,
    pub jct_median_s: f64,
    pub jct_p95_s: f64,
    pub jct_p99_s: f64,
    pub wait_mean_s: f64,
    pub wait_median_s: f64,
    pub wait_p95_s: f64,
    pub wait_p99_s: f64,
    pub makespan_s: f64,
    pub utilization: f64,
    pub busy_utilization: f64,
    pub unusable_fraction: f64,
    pub reconfigurations: u64,
    pub reconfiguration_time_s: f64,
    pub jain_index: f64,
    /// Share of the measured jobs' GPU-time per tenant.
    pub tenants: BTreeMap<String, f64>,
    /// Measured jobs that never finished (should be 0).
    pub unfinished_jobs: u64,
    pub unplaceable_jobs: u64,
}

/// Summary statistics of a sample (sorted inside).
fn summary(mut v: Vec<f64>) -> (f64, f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (mean(&v), percentile_sorted(&v, 50.0), percentile_sorted(&v, 95.0), percentile_sorted(&v, 99.0))
}

/// Metrics of one run over the window `[lo, hi)` of jobs (by arrival order).
pub(crate) fn seed_metrics(
    seed: u64,
    out: &SimOutput,
    submits: &[f64],
    tenant_of: &[u16],
    tenants: &[String],
    window: (usize, usize),
    reconfig_cost_s: f64,
) -> (SeedMetrics, Vec<f64>) {
    let (lo, hi) = window;
    let mut jct = Vec::new();
    let mut wait = Vec::new();
    let mut unfinished = 0;
    let mut gpu_s = vec![0.0; tenants.len()];
    for i in lo..hi.min(out.records.len()) {
        let r = &out.records[i];
        match (r.start, r.finish) {
            (Some(s), Some(f)) => {
                jct.push(f - submits[i]);
                wait.push(s - submits[i]);
                if let Some(g) = gpu_s.get_mut(usize::from(tenant_of[i])) {
                    *g += r.gpu_s;
                }
            }
            _ => unfinished += 1,
        }
    }
    let total: f64 = gpu_s.iter().sum();
    let shares: Vec<f64> = gpu_s.iter().map(|g| if total > 0.0 { g / total } else { 0.0 }).collect();
    let first = submits.iter().copied().fold(f64::INFINITY, f64::min);
    let last_finish = out.records.iter().filter_map(|r| r.finish).fold(first, f64::max);
    let (jm, j50, j95, j99) = summary(jct.clone());
    let (wm, w50, w95, w99) = summary(wait);
    let m = SeedMetrics {
        seed,
        jct_mean_s: jm,
        jct_median_s: j50,
        jct_p95_s: j95,
        jct_p99_s: j99,
        wait_mean_s: wm,
        wait_median_s: w50,
        wait_p95_s: w95,
        wait_p99_s: w99,
        makespan_s: if first.is_finite() { last_finish - first } else { 0.0 },
        utilization: out.utilization,
        busy_utilization: out.busy_utilization,
        unusable_fraction: out.unusable_fraction,
        reconfigurations: out.reconfigurations,
        reconfiguration_time_s: out.reconfigurations as f64 * reconfig_cost_s,
        jain_index: jain(&shares),
        tenants: tenants.iter().cloned().zip(shares).collect(),
        unfinished_jobs: unfinished,
        unplaceable_jobs: out.unplaceable,
    };
    (m, jct)
}

/// One policy over all seeds: means, 95% CI half-widths (Student's t over seeds), plot data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyReport {
    pub policy: String,
    /// The static layout used (for `static` and `static:…`).
    pub layout: Option<String>,
    pub jct_mean_s: f64,
    pub jct_mean_ci95_s: f64,
    pub jct_median_s: f64,
    pub jct_median_ci95_s: f64,
    pub jct_p95_s: f64,
    pub jct_p95_ci95_s: f64,
    pub jct_p99_s: f64,
    pub jct_p99_ci95_s: f64,
    pub wait_mean_s: f64,
    pub wait_mean_ci95_s: f64,
    pub wait_median_s: f64,
    pub wait_median_ci95_s: f64,
    pub wait_p95_s: f64,
    pub wait_p95_ci95_s: f64,
    pub wait_p99_s: f64,
    pub wait_p99_ci95_s: f64,
    pub makespan_s: f64,
    pub makespan_ci95_s: f64,
    pub utilization: f64,
    pub utilization_ci95: f64,
    pub busy_utilization: f64,
    pub busy_utilization_ci95: f64,
    pub unusable_fraction: f64,
    pub unusable_fraction_ci95: f64,
    pub reconfigurations: f64,
    pub reconfigurations_ci95: f64,
    pub reconfiguration_time_s: f64,
    /// Mean share of the measured jobs' GPU-time per tenant.
    pub tenants: BTreeMap<String, f64>,
    pub jain_index: f64,
    pub jain_index_ci95: f64,
    pub unfinished_jobs: u64,
    pub unplaceable_jobs: u64,
    pub per_seed: Vec<SeedMetrics>,
    /// JCT CDF of the measured jobs, all seeds pooled: (JCT seconds, fraction ≤).
    pub jct_cdf: Vec<(f64, f64)>,
    /// Allocated compute slices / all, over the window, mean over seeds: (time s, fraction).
    pub utilization_series: Vec<(f64, f64)>,
}

/// Mean and CI of one field over seeds.
fn est(per: &[SeedMetrics], f: impl Fn(&SeedMetrics) -> f64) -> Estimate {
    Estimate::of(&per.iter().map(f).collect::<Vec<f64>>())
}

pub(crate) fn policy_report(
    policy: String,
    layout: Option<String>,
    per_seed: Vec<SeedMetrics>,
    mut pooled_jct: Vec<f64>,
    series: Vec<Vec<(f64, f64)>>,
) -> PolicyReport {
    pooled_jct.sort_by(f64::total_cmp);
    let points = 200usize;
    let jct_cdf = if pooled_jct.is_empty() {
        Vec::new()
    } else {
        (0..=points)
            .map(|i| {
                let q = i as f64 / points as f64;
                (percentile_sorted(&pooled_jct, q * 100.0), q)
            })
            .collect()
    };
    let buckets = series.iter().map(Vec::len).max().unwrap_or(0);
    let utilization_series = (0..buckets)
        .map(|b| {
            let vals: Vec<(f64, f64)> = series.iter().filter_map(|s| s.get(b).copied()).collect();
            let t = vals.first().map_or(0.0, |v| v.0);
            (t, mean(&vals.iter().map(|v| v.1).collect::<Vec<f64>>()))
        })
        .collect();
    let mut tenants: BTreeMap<String, f64> = BTreeMap::new();
    for s in &per_seed {
        for (t, v) in &s.tenants {
            *tenants.entry(t.clone()).or_default() += v / per_seed.len() as f64;
        }
    }
    let e = |f: fn(&SeedMetrics) -> f64| est(&per_seed, f);
    let (jm, j50, j95, j99) = (e(|s| s.jct_mean_s), e(|s| s.jct_median_s), e(|s| s.jct_p95_s), e(|s| s.jct_p99_s));
    let (wm, w50, w95, w99) = (e(|s| s.wait_mean_s), e(|s| s.wait_median_s), e(|s| s.wait_p95_s), e(|s| s.wait_p99_s));
    let mk = e(|s| s.makespan_s);
    let ut = e(|s| s.utilization);
    let bu = e(|s| s.busy_utilization);
    let un = e(|s| s.unusable_fraction);
    let rc = e(|s| s.reconfigurations as f64);
    let rt = e(|s| s.reconfiguration_time_s);
    let ji = e(|s| s.jain_index);
    PolicyReport {
        policy,
        layout,
        jct_mean_s: jm.mean,
        jct_mean_ci95_s: jm.ci95,
        jct_median_s: j50.mean,
        jct_median_ci95_s: j50.ci95,
        jct_p95_s: j95.mean,
        jct_p95_ci95_s: j95.ci95,
        jct_p99_s: j99.mean,
        jct_p99_ci95_s: j99.ci95,
        wait_mean_s: wm.mean,
        wait_mean_ci95_s: wm.ci95,
        wait_median_s: w50.mean,
        wait_median_ci95_s: w50.ci95,
        wait_p95_s: w95.mean,
        wait_p95_ci95_s: w95.ci95,
        wait_p99_s: w99.mean,
        wait_p99_ci95_s: w99.ci95,
        makespan_s: mk.mean,
        makespan_ci95_s: mk.ci95,
        utilization: ut.mean,
        utilization_ci95: ut.ci95,
        busy_utilization: bu.mean,
        busy_utilization_ci95: bu.ci95,
        unusable_fraction: un.mean,
        unusable_fraction_ci95: un.ci95,
        reconfigurations: rc.mean,
        reconfigurations_ci95: rc.ci95,
        reconfiguration_time_s: rt.mean,
        tenants,
        jain_index: ji.mean,
        jain_index_ci95: ji.ci95,
        unfinished_jobs: per_seed.iter().map(|s| s.unfinished_jobs).max().unwrap_or(0),
        unplaceable_jobs: per_seed.iter().map(|s| s.unplaceable_jobs).max().unwrap_or(0),
        per_seed,
        jct_cdf,
        utilization_series,
    }
}

/// A static layout tried by the search, with its mean JCT on the first seed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayoutScore {
    pub layout: String,
    pub jct_mean_s: f64,
}

/// Everything a run measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunReport {
    pub cluster: String,
    pub gpus: u32,
    pub nodes: u32,
    /// Jobs given.
    pub jobs: usize,
    /// Jobs simulated (those with GPUs).
    pub gpu_jobs: usize,
    /// Jobs left out because they ask for no GPU (`num_gpu == 0`).
    pub excluded_jobs: usize,
    /// Offered load on the first GPU model ([`crate::size_for_load`]'s definition).
    pub offered_load: f64,
    pub seeds: Vec<u64>,
    pub window: Window,
    pub reconfig_cost_s: f64,
    pub mps_slowdown: f64,
    pub arrival_jitter_s: f64,
    /// What a seed varies, in words.
    pub seed_varies: String,
    /// Every layout the `static` search tried (first seed), best first.
    pub static_search: Vec<LayoutScore>,
    pub policies: Vec<PolicyReport>,
}

fn pm(v: f64, ci: f64) -> String {
    if ci > 0.0 { format!("{} ±{}", secs(v), secs(ci)) } else { secs(v) }
}

fn secs(v: f64) -> String {
    if v.abs() >= 100.0 { format!("{v:.0}") } else { format!("{v:.1}") }
}

fn pct(v: f64, ci: f64) -> String {
    if ci > 0.0 { format!("{:.1}% ±{:.1}", v * 100.0, ci * 100.0) } else { format!("{:.1}%", v * 100.0) }
}

/// A plain-text table: one row per policy, means ± 95% CI half-widths over seeds.
pub fn render_table(r: &RunReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "cluster {} ({} GPUs, {} node{}); {} GPU jobs ({} without GPUs left out); offered load {:.0}%; seeds {:?}; \
         window: jobs {}..={} of {} ({} measured); reconfiguration {}s; MPS slowdown {:.0}% per co-runner",
        r.cluster,
        r.gpus,
        r.nodes,
        if r.nodes == 1 { "" } else { "s" },
        r.gpu_jobs,
        r.excluded_jobs,
        r.offered_load * 100.0,
        r.seeds,
        r.window.first_job,
        r.window.last_job,
        r.gpu_jobs,
        r.window.jobs,
        r.reconfig_cost_s,
        r.mps_slowdown * 100.0
    );
    let header = [
        "policy",
        "JCT mean s",
        "JCT p50 s",
        "JCT p95 s",
        "JCT p99 s",
        "wait mean s",
        "wait p50 s",
        "wait p95 s",
        "wait p99 s",
        "makespan s",
        "util",
        "busy",
        "unusable",
        "reconfigs",
        "Jain",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_string()).collect()];
    for p in &r.policies {
        let name = match &p.layout {
            Some(l) if p.policy == "static" => format!("static ({l})"),
            _ => p.policy.clone(),
        };
        rows.push(vec![
            name,
            pm(p.jct_mean_s, p.jct_mean_ci95_s),
            pm(p.jct_median_s, p.jct_median_ci95_s),
            pm(p.jct_p95_s, p.jct_p95_ci95_s),
            pm(p.jct_p99_s, p.jct_p99_ci95_s),
            pm(p.wait_mean_s, p.wait_mean_ci95_s),
            pm(p.wait_median_s, p.wait_median_ci95_s),
            pm(p.wait_p95_s, p.wait_p95_ci95_s),
            pm(p.wait_p99_s, p.wait_p99_ci95_s),
            pm(p.makespan_s, p.makespan_ci95_s),
            pct(p.utilization, p.utilization_ci95),
            pct(p.busy_utilization, p.busy_utilization_ci95),
            pct(p.unusable_fraction, p.unusable_fraction_ci95),
            format!("{:.0}", p.reconfigurations),
            format!("{:.3}", p.jain_index),
        ]);
    }
    let widths: Vec<usize> =
        (0..header.len()).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    for (i, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, v)| if c == 0 { format!("{v:<w$}", w = widths[c]) } else { format!("{v:>w$}", w = widths[c]) })
            .collect();
        let _ = writeln!(s, "{}", cells.join("  ").trim_end());
        if i == 0 {
            let _ = writeln!(s, "{}", widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  "));
        }
    }
    if let Some(best) = r.static_search.first() {
        let _ = writeln!(
            s,
            "static search: {} layouts tried on seed {}; best {} (mean JCT {})",
            r.static_search.len(),
            r.seeds.first().copied().unwrap_or(0),
            best.layout,
            secs(best.jct_mean_s)
        );
    }
    for p in &r.policies {
        if p.unfinished_jobs > 0 || p.unplaceable_jobs > 0 {
            let _ = writeln!(
                s,
                "{}: {} measured jobs never finished, {} jobs cannot run on this cluster",
                p.policy, p.unfinished_jobs, p.unplaceable_jobs
            );
        }
    }
    s
}

/// One CSV row per policy with every scalar metric (header first).
pub fn to_csv(r: &RunReport) -> String {
    let mut s = String::from(
        "policy,layout,jct_mean_s,jct_mean_ci95_s,jct_median_s,jct_median_ci95_s,jct_p95_s,jct_p95_ci95_s,jct_p99_s,\
         jct_p99_ci95_s,wait_mean_s,wait_mean_ci95_s,wait_median_s,wait_median_ci95_s,wait_p95_s,wait_p95_ci95_s,\
         wait_p99_s,wait_p99_ci95_s,makespan_s,makespan_ci95_s,utilization,utilization_ci95,busy_utilization,\
         busy_utilization_ci95,unusable_fraction,unusable_fraction_ci95,reconfigurations,reconfiguration_time_s,\
         jain_index,jain_index_ci95,unfinished_jobs,unplaceable_jobs,seeds,cluster,gpus\n",
    );
    for p in &r.policies {
        let nums = [
            p.jct_mean_s,
            p.jct_mean_ci95_s,
            p.jct_median_s,
            p.jct_median_ci95_s,
            p.jct_p95_s,
            p.jct_p95_ci95_s,
            p.jct_p99_s,
            p.jct_p99_ci95_s,
            p.wait_mean_s,
            p.wait_mean_ci95_s,
            p.wait_median_s,
            p.wait_median_ci95_s,
            p.wait_p95_s,
            p.wait_p95_ci95_s,
            p.wait_p99_s,
            p.wait_p99_ci95_s,
            p.makespan_s,
            p.makespan_ci95_s,
            p.utilization,
            p.utilization_ci95,
            p.busy_utilization,
            p.busy_utilization_ci95,
            p.unusable_fraction,
            p.unusable_fraction_ci95,
            p.reconfigurations,
            p.reconfiguration_time_s,
            p.jain_index,
            p.jain_index_ci95,
        ];
        let nums: Vec<String> = nums.iter().map(|v| format!("{v:.6}")).collect();
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{}",
            p.policy,
            p.layout.as_deref().unwrap_or(""),
            nums.join(","),
            p.unfinished_jobs,
            p.unplaceable_jobs,
            r.seeds.len(),
            r.cluster,
            r.gpus
        );
    }
    s
}

/// The top of a fraction's axis: a little above 1, so a line at 1 shows above the frame.
const FRACTION_TOP: f64 = 1.04;

/// Charts of a report: `jct-cdf` (JCT CDF per policy, log x axis) and `utilization` (allocated
/// compute slices over the window, per policy), as (file stem, chart).
pub fn charts(r: &RunReport) -> Vec<(String, LineChart)> {
    let label = |p: &PolicyReport| match &p.layout {
        Some(l) if p.policy == "static" => format!("static ({l})"),
        _ => p.policy.clone(),
    };
    let cdf = LineChart {
        title: format!("Job completion time, {} ({} GPU jobs, {} seeds)", r.cluster, r.gpu_jobs, r.seeds.len()),
        x: Axis::log("job completion time (log scale)").seconds(),
        y: Axis::linear("fraction of jobs completed within").range(0.0, FRACTION_TOP),
        series: r
            .policies
            .iter()
            .map(|p| Series { name: label(p), points: p.jct_cdf.iter().copied().filter(|(x, _)| *x > 0.0).collect() })
            .collect(),
    };
    let util = LineChart {
        title: format!("Allocated compute slices over the measurement window, {}", r.cluster),
        x: Axis::linear("time since the trace's start").seconds(),
        y: Axis::linear("allocated compute slices (fraction of all)").range(0.0, FRACTION_TOP),
        series: r.policies.iter().map(|p| Series { name: label(p), points: p.utilization_series.clone() }).collect(),
    };
    vec![("jct-cdf".to_string(), cdf), ("utilization".to_string(), util)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_skips_both_ends() {
        assert_eq!(window_range(100, 0.1), (10, 90));
        assert_eq!(window_range(9, 0.1), (0, 9));
        assert_eq!(window_range(10, 0.0), (0, 10));
        assert_eq!(window_range(3, 0.9), (1, 2));
    }

    #[test]
    fn summary_table() {
        let (m, p50, p95, p99) = summary(vec![5.0, 1.0, 4.0, 2.0, 3.0]);
        assert_eq!((m, p50), (3.0, 3.0));
        assert!((p95 - 4.8).abs() < 1e-12 && (p99 - 4.96).abs() < 1e-12);
    }
}
