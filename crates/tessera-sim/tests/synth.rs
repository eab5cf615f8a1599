//! The synthetic generator is reproducible, follows its mix, arrival rate and durations, offers
//! the load it is asked for, and refuses bad mixes and settings with messages that say which.

use tessera_sim::synth::{
    SizeClass, SynthConfig, SynthError, expected_duration_s, expected_gpus, format_mix, generate,
    interarrival_for_load, parse_mix,
};

fn cfg(jobs: usize, seed: u64) -> SynthConfig {
    SynthConfig { jobs, seed, ..SynthConfig::default() }
}

#[test]
fn same_seed_same_jobs_other_seed_other_jobs() {
    let a = generate(&cfg(2_000, 7)).unwrap();
    assert_eq!(a, generate(&cfg(2_000, 7)).unwrap());
    assert_ne!(a, generate(&cfg(2_000, 8)).unwrap());
    assert_eq!(a[0].id, "s0000001");
    assert_eq!(a[1999].id, "s0002000");
    assert!(a.windows(2).all(|w| w[0].submit_s <= w[1].submit_s), "sorted by submit time");
    assert!(a[0].submit_s > 0.0);
}

#[test]
fn jobs_are_valid_native_jobs() {
    let mut c = cfg(5_000, 3);
    c.model_classes = vec!["resnet".to_string(), "bert".to_string()];
    let jobs = generate(&c).unwrap();
    for j in &jobs {
        assert!(j.duration_s > 0.0 && j.duration_s.is_finite(), "{j:?}");
        assert!(j.num_gpu >= 1 && (1..=1000).contains(&j.gpu_milli), "{j:?}");
        assert!(j.num_gpu == 1 || j.gpu_milli == 1000, "{j:?}");
        assert!(j.cpus >= 1.0 && j.mem_mib == j.cpus as u64 * 4096, "{j:?}");
        assert!(j.model_class == "resnet" || j.model_class == "bert", "{j:?}");
    }
    let both = jobs.iter().filter(|j| j.model_class == "bert").count();
    assert!((2_200..2_800).contains(&both), "{both} bert of 5000");
    // The native CSV takes them back unchanged.
    let csv = tessera_sim::trace::write_jobs_csv(&jobs);
    assert_eq!(tessera_sim::trace::parse_jobs_csv(&csv, "synth").unwrap(), jobs);
    // No model classes: the default curve.
    assert!(generate(&cfg(100, 3)).unwrap().iter().all(|j| j.model_class.is_empty()));
}

#[test]
fn mix_proportions_follow_weights() {
    let mut c = cfg(100_000, 11);
    c.mix = parse_mix("1x250:3,1x500:2,1x1000:4,2x1000:1").unwrap();
    let jobs = generate(&c).unwrap();
    let share = |n: u32, m: u32| jobs.iter().filter(|j| j.num_gpu == n && j.gpu_milli == m).count() as f64 / 1e5;
    for (n, m, want) in [(1, 250, 0.3), (1, 500, 0.2), (1, 1000, 0.4), (2, 1000, 0.1)] {
        let got = share(n, m);
        assert!((got - want).abs() < 0.01, "{n}x{m}: {got} vs {want}");
    }
}

#[test]
fn default_mix_resembles_openb() {
    let jobs = generate(&cfg(100_000, 5)).unwrap();
    let n = jobs.len() as f64;
    let sharing = jobs.iter().filter(|j| j.num_gpu == 1 && j.gpu_milli < 1000).count() as f64 / n;
    let multi = jobs.iter().filter(|j| j.num_gpu > 1).count() as f64 / n;
    let at810 = jobs.iter().filter(|j| j.gpu_milli == 810).count() as f64 / n;
    assert!((0.42..0.46).contains(&sharing), "sharing share {sharing}");
    assert!((0.006..0.013).contains(&multi), "multi-GPU share {multi}");
    assert!((0.14..0.165).contains(&at810), "810 share {at810}");
}

#[test]
fn interarrival_and_durations_match_the_config() {
    let mut c = cfg(100_000, 13);
    c.mean_interarrival_s = 30.0;
    let jobs = generate(&c).unwrap();
    let mean_gap = jobs.last().unwrap().submit_s / jobs.len() as f64;
    assert!((mean_gap - 30.0).abs() < 0.6, "mean inter-arrival {mean_gap}");
    let mut d: Vec<f64> = jobs.iter().map(|j| j.duration_s).collect();
    d.sort_by(f64::total_cmp);
    let median = d[d.len() / 2];
    assert!((median - 600.0).abs() < 20.0, "median duration {median}");
    // ln(duration) has the configured sigma.
    let logs: Vec<f64> = d.iter().map(|x| x.ln()).collect();
    let mean = logs.iter().sum::<f64>() / logs.len() as f64;
    let sd = (logs.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / logs.len() as f64).sqrt();
    assert!((sd - 1.5).abs() < 0.02, "sigma {sd}");
}

#[test]
fn tenants_are_zipf_skewed() {
    let mut c = cfg(100_000, 17);
    c.tenants = 4;
    let jobs = generate(&c).unwrap();
    let share = |t: &str| jobs.iter().filter(|j| j.tenant == t).count() as f64 / 1e5;
    // Weights 1, 1/2, 1/3, 1/4 over their sum 25/12.
    for (t, want) in [("t0", 0.48), ("t1", 0.24), ("t2", 0.16), ("t3", 0.12)] {
        assert!((share(t) - want).abs() < 0.01, "{t}: {} vs {want}", share(t));
    }
}

#[test]
fn load_helper_round_trips() {
    let base = cfg(100_000, 19);
    let gpus = 200;
    for load in [0.5, 0.9, 1.3] {
        let c = SynthConfig { mean_interarrival_s: interarrival_for_load(&base, gpus, load), ..base.clone() };
        let jobs = generate(&c).unwrap();
        let demand: f64 =
            jobs.iter().map(|j| f64::from(j.num_gpu) * f64::from(j.gpu_milli) / 1000.0 * j.duration_s).sum();
        let offered = demand / (f64::from(gpus) * jobs.last().unwrap().submit_s);
        // The log-normal tail (sigma 1.5) makes the sample mean noisy: 8%.
        assert!((offered / load - 1.0).abs() < 0.08, "asked {load}, offered {offered}");
    }
    // Exact algebra on a simple mix: 1 GPU, no spread: 600 s / (10 GPUs × 0.5) = 120 s.
    let c = SynthConfig {
        mix: vec![SizeClass { num_gpu: 1, gpu_milli: 1000, weight: 1.0 }],
        duration_sigma: 0.0,
        ..SynthConfig::default()
    };
    assert!((interarrival_for_load(&c, 10, 0.5) - 120.0).abs() < 1e-9);
    assert!((expected_gpus(&c) - 1.0).abs() < 1e-12 && (expected_duration_s(&c) - 600.0).abs() < 1e-9);
    assert!(interarrival_for_load(&c, 0, 0.5).is_nan());
    assert!(interarrival_for_load(&c, 10, 0.0).is_nan());
    assert!(interarrival_for_load(&c, 10, f64::NAN).is_nan());
    let nan = SynthConfig { mean_interarrival_s: interarrival_for_load(&c, 0, 1.0), ..c };
    assert!(generate(&nan).unwrap_err().to_string().contains("mean_interarrival_s"));
}

#[test]
fn parse_mix_accepts_the_syntax_and_round_trips() {
    let mix = parse_mix(" 1x250:3, 1X500 ,8x1000:0.5").unwrap();
    assert_eq!(
        mix,
        vec![
            SizeClass { num_gpu: 1, gpu_milli: 250, weight: 3.0 },
            SizeClass { num_gpu: 1, gpu_milli: 500, weight: 1.0 },
            SizeClass { num_gpu: 8, gpu_milli: 1000, weight: 0.5 },
        ]
    );
    assert_eq!(parse_mix(&format_mix(&mix)).unwrap(), mix);
    assert_eq!(parse_mix(&format_mix(&SynthConfig::default().mix)).unwrap(), SynthConfig::default().mix);
}

#[test]
fn parse_mix_errors_name_the_item() {
    let cases = [
        ("1x250:3,,1x500", "item 1 ''", "empty"),
        ("1x250:3,2x500:1", "item 1 '2x500:1'", "whole GPUs"),
        ("1x0", "item 0 '1x0'", "1–1000"),
        ("1x1001:1", "'1x1001:1'", "1–1000"),
        ("0x500", "'0x500'", "at least 1"),
        ("1x500:0", "'1x500:0'", "above 0"),
        ("1x500:-2", "'1x500:-2'", "above 0"),
        ("1x500:inf", "'1x500:inf'", "finite"),
        ("1x500:NaN", "'1x500:NaN'", "finite"),
        ("1x500:abc", "'1x500:abc'", "weight is not a number"),
        ("1500", "'1500'", "no 'x'"),
        ("ax500", "'ax500'", "GPU count"),
        ("1x5.5", "'1x5.5'", "milli-GPU is not a whole number"),
        ("", "item 0 ''", "empty"),
    ];
    for (input, item, reason) in cases {
        let e = parse_mix(input).unwrap_err();
        assert!(matches!(e, SynthError::MixItem { .. }), "{input}: {e:?}");
        let msg = e.to_string();
        assert!(msg.contains(item) && msg.contains(reason), "{input}: {msg}");
    }
}

#[test]
fn bad_configs_are_refused() {
    let ok = cfg(10, 1);
    let check = |c: SynthConfig, what: &str| {
        let e = generate(&c).unwrap_err().to_string();
        assert!(e.contains(what), "wanted '{what}' in: {e}");
    };
    check(SynthConfig { jobs: 0, ..ok.clone() }, "jobs = 0");
    check(SynthConfig { mix: vec![], ..ok.clone() }, "mix");
    check(SynthConfig { mean_interarrival_s: -1.0, ..ok.clone() }, "mean_interarrival_s");
    check(SynthConfig { mean_interarrival_s: f64::INFINITY, ..ok.clone() }, "mean_interarrival_s");
    check(SynthConfig { duration_median_s: 0.0, ..ok.clone() }, "duration_median_s");
    check(SynthConfig { duration_sigma: -0.1, ..ok.clone() }, "duration_sigma");
    check(SynthConfig { duration_sigma: f64::NAN, ..ok.clone() }, "duration_sigma");
    check(SynthConfig { tenants: 0, ..ok.clone() }, "tenants");
    let mut bad = ok.clone();
    bad.mix.push(SizeClass { num_gpu: 4, gpu_milli: 500, weight: 1.0 });
    check(bad, "size class 24 (4x500");
    let mut bad = ok;
    bad.mix[0].weight = f64::NAN;
    check(bad, "size class 0");
}

#[test]
fn zero_interarrival_and_zero_sigma() {
    let c = SynthConfig { mean_interarrival_s: 0.0, duration_sigma: 0.0, ..cfg(100, 2) };
    let jobs = generate(&c).unwrap();
    assert!(jobs.iter().all(|j| j.submit_s == 0.0 && j.duration_s == 600.0));
}
