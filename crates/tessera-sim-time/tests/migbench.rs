//! MIGBench's generator, regenerated: the random numbers are Go's, checked against a trace MIGBench
//! published (every arrival and every job's work and memory of the sampled lines), and the
//! trace of its control-plane run has the statistics MIGBench states.

use tessera_sim_time::migbench::{
    GoRand, MIGBENCH_PUBLISHED_SEED, MigBenchTraceSpec, migbench_jobs, migbench_trace_pods, trace_stats,
};

/// MIGBench's generator before its offered-load control (the form that wrote the published v3
/// trace): one stream; the first 56 jobs arrive at 0 as `1g.10gb` (a profile is still drawn), the
/// others after gaps of `trunc(ExpFloat64() × 15,000)` ms; profile, then duration, per job.
/// Returns (arrival ms, compute work, memory MB) per job.
fn v3_trace(seed: u64) -> Vec<(i64, i64, u64)> {
    let profiles = [(35.0, 14, 10_240), (25.0, 28, 20_480), (25.0, 42, 40_960), (5.0, 100, 81_920)];
    let mut r = GoRand::new_pcg(seed, seed ^ 0x9e37_79b9_7f4a_7c15);
    let mut arrival = 0i64;
    let mut out = Vec::new();
    for i in 0..500 {
        let prefill = i < 56;
        if !prefill {
            arrival += (r.exp_float64() * 15_000.0) as i64;
        }
        let mut x = r.float64() * 90.0;
        let mut k = 3;
        for (j, p) in profiles.iter().enumerate() {
            x -= p.0;
            if x <= 0.0 {
                k = j;
                break;
            }
        }
        if prefill {
            k = 0;
        }
        let d = ((600_000f64.ln() + 0.8 * r.norm_float64()).exp() as i64).max(1);
        out.push((arrival, d * profiles[k].1, profiles[k].2));
    }
    out
}

#[test]
fn the_random_numbers_are_gos_the_published_trace_is_drawn_again() {
    let ours = v3_trace(MIGBENCH_PUBLISHED_SEED);
    let sample = include_str!("data/migbench_v3_trace_sample.jsonl");
    let mut checked = 0;
    for line in sample.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let id = v["jobID"].as_str().unwrap();
        let k: usize = id.trim_start_matches("job-").parse().unwrap();
        let theirs =
            (v["arrivalMS"].as_i64().unwrap(), v["computeCoreMS"].as_i64().unwrap(), v["memoryMB"].as_u64().unwrap());
        assert_eq!(ours[k - 1], theirs, "{id}");
        checked += 1;
    }
    // Job 500's arrival is the sum of all 444 gaps: every exponential draw is checked.
    assert_eq!(checked, 55);
}

#[test]
fn the_published_runs_trace_has_migbenchs_statistics() {
    let spec = MigBenchTraceSpec::default();
    let jobs = migbench_jobs(&spec, 56, MIGBENCH_PUBLISHED_SEED).unwrap();
    assert_eq!(jobs.len(), 500);
    assert_eq!(jobs, migbench_jobs(&spec, 56, MIGBENCH_PUBLISHED_SEED).unwrap(), "deterministic");
    // From an empty cluster: the first job arrives through the arrival process, not at 0.
    assert!(jobs[0].arrival_ms > 0);
    assert!(jobs.windows(2).all(|w| w[0].arrival_ms <= w[1].arrival_ms));
    // The offered load is the target by construction: the sampled GPC-time over the mean gap.
    let gpc = |mb: u64| match mb {
        10_240 => 1.0,
        20_480 => 2.0,
        40_960 => 3.0,
        _ => 7.0,
    };
    let pct = |mb: u64| match mb {
        10_240 => 14,
        20_480 => 28,
        40_960 => 42,
        _ => 100,
    };
    let demand: f64 = jobs
        .iter()
        .map(|j| gpc(j.memory_mb) * ((j.compute_core_ms + pct(j.memory_mb) - 1) / pct(j.memory_mb)) as f64)
        .sum();
    let mean_gap = demand / (500.0 * 56.0) / 1.40;
    let realised_gap = jobs[499].arrival_ms as f64 / 500.0;
    assert!((realised_gap / mean_gap - 1.0).abs() < 0.15, "{realised_gap} against {mean_gap}");

    let model = tessera_mig::catalog().model("H100-80GB").unwrap();
    let pods = migbench_trace_pods(&spec, model, 8, MIGBENCH_PUBLISHED_SEED).unwrap();
    let st = trace_stats(&pods, model, 56);
    assert_eq!(st.jobs, 500);
    assert_eq!(st.by_profile.values().sum::<usize>(), 500);
    assert_eq!(
        st.by_profile.keys().map(String::as_str).collect::<Vec<_>>(),
        ["1g.10gb", "2g.20gb", "3g.40gb", "7g.80gb"]
    );
    // Weights 35/25/25/5 of 90; log-normal running times, median 600 s, sigma 0.8 (mean 826 s).
    let share = |p: &str| st.by_profile[p] as f64 / 500.0;
    assert!((share("1g.10gb") - 35.0 / 90.0).abs() < 0.06 && (share("7g.80gb") - 5.0 / 90.0).abs() < 0.03);
    assert!((700.0..1000.0).contains(&st.mean_runtime_s), "{}", st.mean_runtime_s);
    assert!((1.2..1.6).contains(&st.offered_load), "{}", st.offered_load);
    // Pods run their profile's time: computeCoreMS / computePercent.
    assert!(pods.iter().zip(&jobs).all(|(p, j)| {
        (p.runtime_s * 1000.0 - ((j.compute_core_ms + pct(j.memory_mb) - 1) / pct(j.memory_mb)) as f64).abs() < 1e-6
    }));
}

#[test]
fn a_spec_that_cannot_be_drawn_names_the_problem() {
    let mut spec = MigBenchTraceSpec::default();
    spec.profiles[0].weight = -1.0;
    let e = migbench_jobs(&spec, 56, 1).unwrap_err().to_string();
    assert!(e.contains("1g.10gb") && e.contains("weight"), "{e}");
    let spec = MigBenchTraceSpec { target_offered_load: 0.0, ..MigBenchTraceSpec::default() };
    assert!(migbench_jobs(&spec, 56, 1).unwrap_err().to_string().contains("offered load"));
    let spec = MigBenchTraceSpec::default();
    let a100 = tessera_mig::catalog().model("A100-40GB").unwrap();
    let e = migbench_trace_pods(&spec, a100, 8, 1).unwrap_err().to_string();
    assert!(e.contains("migbench.profiles"), "{e}");
}
