//! From runs to numbers: the value of each metric at each arrived-demand point, means and 95%
//! confidence intervals over seeds, and the table, CSV and charts built from them.
//!
//! A point is read the way the artifact's analysis scripts read it
//! (`experiments/analysis/merge_alloc_discrete.py`, `merge_frag_discrete.py`,
//! `merge_frag_ratio_discrete.py`): every arrival is tagged with its arrived GPU request as a
//! whole percentage of capacity (rounded, halves to even as Python's `round`), and the value at
//! point `k` is the mean over the arrivals tagged `k` (or, if none, tagged `k-1..=k+1`).

use std::fmt::Write as _;

use serde::Serialize;
use tessera_sim::plot::{Axis, LineChart, Series};
use tessera_sim::stats::{Estimate, mean};

use crate::gpu::{GpuRules, MILLI};
use crate::sim::{Event, RunResult, Setup};
use crate::{Mode, PackConfig, Policy};

/// One policy at one arrived-demand point, over the seeds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SummaryRow {
    pub policy: String,
    /// Arrived GPU request, % of capacity.
    pub demand: u32,
    /// Allocated GPU capacity, % of capacity (MIG: the compute of the instances created).
    pub allocation_ratio_mean: f64,
    pub allocation_ratio_ci95: f64,
    /// FGD's fragmentation, % of GPU capacity.
    pub fragmentation_pct_mean: f64,
    pub fragmentation_pct_ci95: f64,
    /// FGD's fragmentation, % of idle GPU capacity.
    pub fragmentation_ratio_mean: f64,
    /// Pods failed so far.
    pub failed_pods_mean: f64,
    /// GPU request of the failed pods so far, in GPUs.
    pub failed_gpus_mean: f64,
    /// GPU request of the placed pods (before MIG rounding), % of capacity.
    pub placed_request_pct_mean: f64,
    /// Allocated capacity beyond what placed pods asked for (MIG rounding), % of the allocated.
    pub rounding_waste_pct_mean: f64,
    pub seeds: usize,
}

/// One policy's mean curves at every 1% point, for plots.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Curve {
    pub policy: String,
    pub demand: Vec<u32>,
    pub allocation_ratio: Vec<f64>,
    pub fragmentation_pct: Vec<f64>,
}

/// How one sharing request size rounds to a MIG profile.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoundingRow {
    pub gpu_milli: u32,
    pub profile: String,
    /// The profile's compute fraction, milli-GPU.
    pub profile_milli: f64,
    /// Pods of the trace with this request.
    pub pods: usize,
}

/// Everything a packing run reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PackReport {
    pub mode: Mode,
    pub gpu_model: Option<String>,
    pub total_gpus: u64,
    pub nodes: usize,
    pub seeds: Vec<u64>,
    pub policies: Vec<String>,
    pub max_demand_pct: u32,
    /// Number of typical pod shapes FGD's fragmentation is measured against.
    pub typical_pods: usize,
    /// MIG mode: how the trace's per-GPU requests round to profiles.
    pub rounding: Vec<RoundingRow>,
    /// MIG mode: share of the rounded capacity of the trace's GPU pods that they did not ask for, %.
    pub trace_rounding_waste_pct: Option<f64>,
    pub summary: Vec<SummaryRow>,
    pub curves: Vec<Curve>,
}

/// The value of each metric at one point of one run.
#[derive(Debug, Clone, Copy, Default)]
struct Point {
    alloc: f64,
    frag_pct: f64,
    frag_ratio: f64,
    failed_pods: f64,
    failed_gpus: f64,
    placed_pct: f64,
    waste_pct: f64,
}

fn bucket(arrived: u64, capacity: f64) -> i64 {
    (arrived as f64 / capacity * 100.0).round_ties_even() as i64
}

/// Every point 0..=max of one run; `None` where no arrival is near.
fn points(events: &[Event], capacity: f64, max: u32) -> Vec<Option<Point>> {
    let top = max as usize + 1;
    let mut groups: Vec<Vec<usize>> = vec![Vec::new(); top + 1];
    for (i, e) in events.iter().enumerate() {
        if let Ok(t) = usize::try_from(bucket(e.arrived, capacity))
            && t <= top
        {
            groups[t].push(i);
        }
    }
    (0..=max as usize)
        .map(|k| {
            let mut sel = groups[k].clone();
            if sel.is_empty() {
                sel = (k.saturating_sub(1)..=k + 1).flat_map(|t| groups[t].iter().copied()).collect();
            }
            let last = *sel.iter().max()?;
            let m = |f: &dyn Fn(&Event) -> f64| mean(&sel.iter().map(|&i| f(&events[i])).collect::<Vec<_>>());
            Some(Point {
                alloc: m(&|e| e.allocated / capacity * 100.0),
                frag_pct: m(&|e| e.frag / capacity * 100.0),
                frag_ratio: m(&|e| if e.idle > 0.0 { e.frag / e.idle * 100.0 } else { 0.0 }),
                failed_pods: f64::from(events[last].failed_pods),
                failed_gpus: events[last].failed_milli as f64 / f64::from(MILLI),
                placed_pct: m(&|e| e.requested as f64 / capacity * 100.0),
                waste_pct: m(&|e| {
                    if e.allocated > 0.0 { (e.allocated - e.requested as f64) / e.allocated * 100.0 } else { 0.0 }
                }),
            })
        })
        .collect()
}

/// The points the summary lists: every 10% and 95, 125, up to the maximum.
pub fn summary_points(max: u32) -> Vec<u32> {
    let mut p: Vec<u32> = (1..=max / 10).map(|i| i * 10).collect();
    for extra in [95, 125] {
        if extra <= max {
            p.push(extra);
        }
    }
    if !p.contains(&max) {
        p.push(max);
    }
    p.sort_unstable();
    p
}

pub(crate) fn build(cfg: &PackConfig, setup: &Setup, runs: &[(Policy, Vec<RunResult>)]) -> PackReport {
    let capacity = setup.capacity_milli as f64;
    let wanted = summary_points(cfg.max_demand_pct);
    let mut summary = Vec::new();
    let mut curves = Vec::new();
    for (policy, results) in runs {
        let per_seed: Vec<Vec<Option<Point>>> =
            results.iter().map(|r| points(&r.events, capacity, cfg.max_demand_pct)).collect();
        let at = |k: u32, f: &dyn Fn(&Point) -> f64| -> Vec<f64> {
            per_seed.iter().filter_map(|ps| ps[k as usize].as_ref().map(f)).collect()
        };
        for &k in &wanted {
            let alloc = Estimate::of(&at(k, &|p| p.alloc));
            if alloc.n == 0 {
                continue;
            }
            let frag = Estimate::of(&at(k, &|p| p.frag_pct));
            summary.push(SummaryRow {
                policy: policy.name().to_string(),
                demand: k,
                allocation_ratio_mean: alloc.mean,
                allocation_ratio_ci95: alloc.ci95,
                fragmentation_pct_mean: frag.mean,
                fragmentation_pct_ci95: frag.ci95,
                fragmentation_ratio_mean: mean(&at(k, &|p| p.frag_ratio)),
                failed_pods_mean: mean(&at(k, &|p| p.failed_pods)),
                failed_gpus_mean: mean(&at(k, &|p| p.failed_gpus)),
                placed_request_pct_mean: mean(&at(k, &|p| p.placed_pct)),
                rounding_waste_pct_mean: mean(&at(k, &|p| p.waste_pct)),
                seeds: alloc.n,
            });
        }
        let mut curve = Curve {
            policy: policy.name().to_string(),
            demand: Vec::new(),
            allocation_ratio: Vec::new(),
            fragmentation_pct: Vec::new(),
        };
        for k in 0..=cfg.max_demand_pct {
            let a = at(k, &|p| p.alloc);
            if a.is_empty() {
                continue;
            }
            curve.demand.push(k);
            curve.allocation_ratio.push(mean(&a));
            curve.fragmentation_pct.push(mean(&at(k, &|p| p.frag_pct)));
        }
        curves.push(curve);
    }
    let (rounding, waste, gpu_model) = match &setup.rules {
        GpuRules::Shared => (Vec::new(), None, None),
        GpuRules::Mig(t) => {
            let mut rows: Vec<RoundingRow> = Vec::new();
            let (mut asked, mut taken) = (0.0, 0.0);
            for p in &setup.workload.pods {
                if p.num_gpu == 0 {
                    continue;
                }
                let unit = if p.num_gpu > 1 { setup.rules.whole() } else { t.round(p.gpu_milli) };
                let prof = &t.profiles[usize::from(unit)];
                asked += f64::from(p.gpu_milli) * f64::from(p.num_gpu);
                taken += prof.milli * f64::from(p.num_gpu);
                if p.num_gpu == 1 {
                    match rows.iter_mut().find(|r| r.gpu_milli == p.gpu_milli) {
                        Some(r) => r.pods += 1,
                        None => rows.push(RoundingRow {
                            gpu_milli: p.gpu_milli,
                            profile: prof.name.clone(),
                            profile_milli: prof.milli,
                            pods: 1,
                        }),
                    }
                }
            }
            rows.sort_by_key(|r| r.gpu_milli);
            let waste = if taken > 0.0 { Some((taken - asked) / taken * 100.0) } else { None };
            (rows, waste, Some(t.model.clone()))
        }
    };
    PackReport {
        mode: cfg.mode,
        gpu_model,
        total_gpus: setup.total_gpus,
        nodes: setup.nodes.len(),
        seeds: cfg.seeds.clone(),
        policies: runs.iter().map(|(p, _)| p.name().to_string()).collect(),
        max_demand_pct: cfg.max_demand_pct,
        typical_pods: setup.typical_shapes,
        rounding,
        trace_rounding_waste_pct: waste,
        summary,
        curves,
    }
}

/// A human table: allocation ratio per policy at 50/80/90/100/110/130% (those present), plus
/// fragmentation and failed pods at the last point.
pub fn render_table(r: &PackReport) -> String {
    let cols: Vec<u32> =
        [50, 80, 90, 100, 110, 120, 130, r.max_demand_pct].into_iter().filter(|&c| c <= r.max_demand_pct).collect();
    let mut cols: Vec<u32> = cols.into_iter().fold(Vec::new(), |mut v, c| {
        if !v.contains(&c) {
            v.push(c);
        }
        v
    });
    cols.sort_unstable();
    let last = r.max_demand_pct;
    let mut out = String::new();
    let model = r.gpu_model.as_deref().map(|m| format!(", every GPU: {m}")).unwrap_or_default();
    // What is counted: GPUs in milli-GPU sharing, compute slices with MIG (as the charts say).
    let measure = if r.mode == Mode::Mig {
        "allocated compute slices (% of all) by arrived demand (% of all compute)"
    } else {
        "GPU allocation ratio (%) by arrived GPU demand (% of capacity)"
    };
    let _ = writeln!(
        out,
        "Packing ({} mode{model}): {} GPUs on {} nodes, seeds {}, {measure}",
        r.mode,
        r.total_gpus,
        r.nodes,
        seed_text(&r.seeds)
    );
    let mut header = format!("{:<11}", "policy");
    for c in &cols {
        let _ = write!(header, " {:>7}", format!("{c}%"));
    }
    let _ = write!(header, " {:>9} {:>9} {:>8} {:>9}", "±ci95", "frag%", "failed", "fail GPU");
    if r.mode == Mode::Mig {
        let _ = write!(header, " {:>8}", "waste%");
    }
    let _ = writeln!(out, "{header}");
    for p in &r.policies {
        let mut line = format!("{p:<11}");
        for c in &cols {
            match r.summary.iter().find(|s| &s.policy == p && s.demand == *c) {
                Some(s) => {
                    let _ = write!(line, " {:>7.2}", s.allocation_ratio_mean);
                }
                None => {
                    let _ = write!(line, " {:>7}", "-");
                }
            }
        }
        if let Some(s) = r.summary.iter().find(|s| &s.policy == p && s.demand == last) {
            let _ = write!(
                line,
                " {:>9.2} {:>9.2} {:>8.1} {:>9.1}",
                s.allocation_ratio_ci95, s.fragmentation_pct_mean, s.failed_pods_mean, s.failed_gpus_mean
            );
            if r.mode == Mode::Mig {
                let _ = write!(line, " {:>8.2}", s.rounding_waste_pct_mean);
            }
        }
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(
        out,
        "(±ci95, frag% (FGD's fragmentation, % of capacity), failed pods and their GPU demand at {last}%)"
    );
    out
}

fn seed_text(seeds: &[u64]) -> String {
    match (seeds.first(), seeds.last()) {
        (Some(a), Some(b))
            if seeds.len() as u64 == b.saturating_sub(*a) + 1 && seeds.windows(2).all(|w| w[1] == w[0] + 1) =>
        {
            if a == b { a.to_string() } else { format!("{a}-{b}") }
        }
        _ => seeds.iter().map(u64::to_string).collect::<Vec<_>>().join(","),
    }
}

/// The summary rows as CSV, with a header.
pub fn to_csv(r: &PackReport) -> String {
    let mut out = String::from(
        "mode,gpu_model,policy,demand,allocation_ratio_mean,allocation_ratio_ci95,fragmentation_pct_mean,\
         fragmentation_pct_ci95,fragmentation_ratio_mean,failed_pods_mean,failed_gpus_mean,\
         placed_request_pct_mean,rounding_waste_pct_mean,seeds\n",
    );
    for s in &r.summary {
        let _ = writeln!(
            out,
            "{},{},{},{},{:.4},{:.4},{:.4},{:.4},{:.4},{:.2},{:.3},{:.4},{:.4},{}",
            r.mode,
            r.gpu_model.as_deref().unwrap_or(""),
            s.policy,
            s.demand,
            s.allocation_ratio_mean,
            s.allocation_ratio_ci95,
            s.fragmentation_pct_mean,
            s.fragmentation_pct_ci95,
            s.fragmentation_ratio_mean,
            s.failed_pods_mean,
            s.failed_gpus_mean,
            s.placed_request_pct_mean,
            s.rounding_waste_pct_mean,
            s.seeds
        );
    }
    out
}

/// Where the packing charts stretch their demand axis: the knee, where the policies part, and
/// everything after it get most of the width (FGD's results are all about this region).
const STRETCH_FROM_PCT: f64 = 80.0;
const STRETCH_SHARE: f64 = 0.7;

/// Charts: allocation and fragmentation against arrived demand, one series per policy. In MIG
/// mode capacity is counted in compute slices (an instance's compute is its slices ÷ the GPU's),
/// so the axes say so; in milli-GPU mode in GPUs.
pub fn charts(r: &PackReport) -> Vec<(String, LineChart)> {
    let mig = match (&r.mode, &r.gpu_model) {
        (Mode::Mig, Some(m)) => Some((m.clone(), tessera_mig::catalog().model(m).ok().map(|g| g.compute_slices))),
        _ => None,
    };
    let gpus = r.total_gpus;
    let (what, allocation_title, allocation_y, demand_x, fragmentation_y) = match &mig {
        Some((model, slices)) => {
            let size = match slices {
                Some(s) => format!("{gpus} GPUs × {s} compute slices"),
                None => format!("{gpus} GPUs"),
            };
            (
                format!("MIG, {model}"),
                format!("Allocated compute slices (MIG, {model}, {size})"),
                "allocated compute slices (% of all)",
                "arrived demand (% of all compute, before rounding)",
                "fragmented compute slices (% of all)",
            )
        }
        None => (
            "milli-GPU sharing".to_string(),
            format!("GPU allocation ratio (milli-GPU sharing, {gpus} GPUs)"),
            "allocated GPU (% of capacity)",
            "arrived GPU demand (% of capacity)",
            "fragmented GPU (% of capacity)",
        ),
    };
    let series = |f: &dyn Fn(&Curve) -> &Vec<f64>| -> Vec<Series> {
        r.curves
            .iter()
            .map(|c| Series {
                name: c.policy.clone(),
                points: c.demand.iter().zip(f(c)).map(|(&d, &v)| (f64::from(d), v)).collect(),
            })
            .collect()
    };
    let demand = || {
        let axis = Axis::linear(demand_x);
        if f64::from(r.max_demand_pct) > STRETCH_FROM_PCT + 10.0 {
            axis.stretch(STRETCH_FROM_PCT, STRETCH_SHARE)
        } else {
            axis
        }
    };
    vec![
        (
            "pack-allocation".to_string(),
            LineChart {
                title: allocation_title,
                x: demand(),
                y: Axis::linear(allocation_y).range(0.0, 100.0).stretch(STRETCH_FROM_PCT, STRETCH_SHARE),
                series: series(&|c| &c.allocation_ratio),
            },
        ),
        (
            "pack-fragmentation".to_string(),
            LineChart {
                title: format!("Fragmented capacity, FGD's measure ({what})"),
                x: demand(),
                y: Axis::linear(fragmentation_y),
                series: series(&|c| &c.fragmentation_pct),
            },
        ),
    ]
}
