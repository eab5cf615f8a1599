//! The event loop on tiny hand-computed traces, the speed model in the loop, invariants on
//! random traces, determinism, and the trace readers end to end.

use std::path::Path;

use tessera_sim::rng::Rng;
use tessera_sim::trace::{Job, jobs_from_openb, read_jobs_csv, read_openb_pods};
use tessera_sim_time::{ClusterSpec, PolicySpec, RunConfig, RunReport, SpeedModel, run};

fn job(id: &str, submit: f64, duration: f64, milli: u32, class: &str) -> Job {
    Job {
        id: id.into(),
        submit_s: submit,
        duration_s: duration,
        tenant: "t".into(),
        num_gpu: 1,
        gpu_milli: milli,
        gpu_mem_mib: 0,
        cpus: 1.0,
        mem_mib: 0,
        model_class: class.into(),
    }
}

/// A configuration with nothing random: no jitter, no drawn classes, every job measured.
fn exact(cluster: &str, policies: &str) -> RunConfig {
    let cluster: ClusterSpec = cluster.parse().unwrap_or_else(|e| panic!("{e}"));
    let policies = policies.split(',').map(|p| p.parse().unwrap_or_else(|e| panic!("{e}"))).collect();
    let mut cfg = RunConfig::new(cluster, policies);
    cfg.seeds = vec![1];
    cfg.arrival_jitter_s = 0.0;
    cfg.assign_model_classes = false;
    cfg.warmup_fraction = 0.0;
    cfg.compact_speed = 0.0;
    cfg.expand_below = 0.0;
    cfg
}

fn go(cfg: &RunConfig, jobs: &[Job]) -> RunReport {
    run(cfg, jobs, &mut |_, _| {}).unwrap_or_else(|e| panic!("{e}"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6 * b.abs().max(1.0)
}

#[test]
fn whole_gpu_fifo_two_jobs_on_one_gpu() {
    let jobs = [job("a", 0.0, 100.0, 300, ""), job("b", 10.0, 50.0, 300, "")];
    let r = go(&exact("1xA100-40GB", "whole"), &jobs);
    let p = &r.policies[0];
    // a runs 0–100; b waits 90 s and runs 100–150: JCTs 100 and 140.
    assert!(close(p.jct_mean_s, 120.0), "{}", p.jct_mean_s);
    assert!(close(p.wait_mean_s, 45.0), "{}", p.wait_mean_s);
    assert!(close(p.jct_p99_s, 100.0 + 40.0 * 0.99), "{}", p.jct_p99_s);
    assert!(close(p.makespan_s, 150.0));
    assert_eq!(p.reconfigurations, 0.0);
    // One GPU allocated for 150 s of a window from 0 to 10 s (the arrivals): fully used.
    assert!(close(p.utilization, 1.0), "{}", p.utilization);
}

#[test]
fn a_reconfiguration_delays_by_its_cost() {
    let jobs = [job("a", 0.0, 100.0, 1000, "")];
    for cost in [30.0, 1.0] {
        let mut cfg = exact("1xA100-40GB", "dynamic");
        cfg.reconfig_cost_s = cost;
        let p = &go(&cfg, &jobs).policies[0];
        assert!(close(p.jct_mean_s, 100.0 + cost), "{cost}: {}", p.jct_mean_s);
        assert!(close(p.wait_mean_s, cost));
        assert_eq!(p.reconfigurations, 1.0);
        assert!(close(p.reconfiguration_time_s, cost));
    }
    // The second job of the same size reuses the instance: no second reconfiguration.
    let jobs = [job("a", 0.0, 100.0, 1000, ""), job("b", 200.0, 100.0, 1000, "")];
    let p = &go(&exact("1xA100-40GB", "dynamic"), &jobs).policies[0];
    assert_eq!(p.reconfigurations, 1.0);
    assert!(close(p.jct_mean_s, (130.0 + 100.0) / 2.0), "{}", p.jct_mean_s);
}

#[test]
fn slices_run_at_the_speed_of_their_size() {
    let speed = SpeedModel::miso();
    // 100 milli-GPU on an A100 is a 1g.5gb: a mobilenet job runs at the 1g speed.
    let jobs = [job("a", 0.0, 100.0, 100, "mobilenet")];
    let p = &go(&exact("1xA100-40GB", "dynamic"), &jobs).policies[0];
    let want = 30.0 + 100.0 / speed.speed("mobilenet", 1.0 / 7.0);
    assert!(close(p.jct_mean_s, want), "{} vs {want}", p.jct_mean_s);
    // Static 3g+2g+2g: a 1000-milli job is capped to the largest slice, 3g, and runs slower.
    let jobs = [job("a", 0.0, 100.0, 1000, "transformer")];
    let p = &go(&exact("1xA100-40GB", "static:3g+2g+2g"), &jobs).policies[0];
    let want = 100.0 / speed.speed("transformer", 3.0 / 7.0);
    assert!(close(p.jct_mean_s, want), "{} vs {want}", p.jct_mean_s);
    assert_eq!(p.layout.as_deref(), Some("3g+2g+2g"));
}

#[test]
fn mps_co_runners_slow_each_other() {
    let speed = SpeedModel::miso();
    let jobs = [job("a", 0.0, 100.0, 500, "resnet"), job("b", 0.0, 100.0, 500, "resnet")];
    let mut cfg = exact("1xA100-40GB", "mps");
    cfg.mps_slowdown = 0.15;
    let p = &go(&cfg, &jobs).policies[0];
    // Both share the GPU at 50% of its threads from time 0: each runs at speed(0.5) / 1.15.
    let want = 100.0 * 1.15 / speed.speed("resnet", 0.5);
    assert!(close(p.jct_mean_s, want), "{} vs {want}", p.jct_mean_s);
    assert!(close(p.wait_mean_s, 0.0));
    // When one leaves, the other speeds up: a short and a long job.
    let jobs = [job("a", 0.0, 10.0, 500, "resnet"), job("b", 0.0, 100.0, 500, "resnet")];
    let p = &go(&cfg, &jobs).policies[0];
    let s = speed.speed("resnet", 0.5);
    let t_a = 10.0 * 1.15 / s;
    let t_b = t_a + (100.0 - t_a * s / 1.15) / s;
    assert!(close(p.jct_mean_s, (t_a + t_b) / 2.0), "{} vs {}", p.jct_mean_s, (t_a + t_b) / 2.0);
}

#[test]
fn gangs_take_whole_gpus_of_one_node() {
    let mut g = job("g", 0.0, 100.0, 1000, "");
    g.num_gpu = 4;
    let jobs = [g.clone(), job("s", 1.0, 100.0, 1000, "")];
    // 4 GPUs: the single job waits for the gang.
    let p = &go(&exact("4xA100-40GB", "whole"), &jobs).policies[0];
    assert!(close(p.jct_mean_s, (100.0 + 199.0) / 2.0), "{}", p.jct_mean_s);
    // A gang larger than any node can never run: counted, not simulated forever.
    let mut big = g;
    big.num_gpu = 16;
    let mut last = (0, 0);
    let r = run(&exact("2x8xA100-40GB", "whole"), &[big, job("s", 1.0, 100.0, 1000, "")], &mut |d, t| last = (d, t))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.policies[0].unplaceable_jobs, 1);
    assert_eq!(last, (2, 2), "progress ends at the total");
}

fn random_jobs(seed: u64, n: usize) -> Vec<Job> {
    let mut rng = Rng::new(seed);
    let classes = ["", "bert", "gnn", "mobilenet", "transformer"];
    let mut t = 0.0;
    (0..n)
        .map(|i| {
            t += rng.exp(30.0);
            let num_gpu = [1, 1, 1, 1, 1, 2, 4, 0][rng.below(8) as usize];
            let milli = if num_gpu == 1 { [50, 150, 300, 470, 650, 1000][rng.below(6) as usize] } else { 1000 };
            let mut j = job(&format!("j{i}"), t, 20.0 + rng.exp(400.0), milli, classes[rng.below(5) as usize]);
            j.num_gpu = num_gpu;
            j.tenant = ["a", "b", "c"][rng.below(3) as usize].into();
            j
        })
        .collect()
}

#[test]
fn every_policy_finishes_every_job_once_and_is_deterministic() {
    let all = "whole,static,static:3g+2g+2g,mps,dynamic,dynamic+mps";
    for seed in 1..=3 {
        let jobs = random_jobs(seed, 150);
        let mut cfg = exact("2x4xA100-40GB", all);
        cfg.seeds = vec![seed, seed + 10];
        cfg.arrival_jitter_s = 30.0;
        cfg.assign_model_classes = true;
        cfg.compact_speed = 0.5;
        // `run` fails on any double-booked instance, start on a reconfiguring GPU or a
        // reconfiguration that removes a busy instance.
        let a = go(&cfg, &jobs);
        for p in &a.policies {
            assert_eq!(p.unfinished_jobs, 0, "{}: unfinished", p.policy);
            assert!(p.jct_mean_s > 0.0 && p.wait_mean_s >= 0.0, "{}", p.policy);
            assert!(p.utilization <= 1.0 + 1e-9 && p.busy_utilization <= p.utilization + 1e-9, "{}", p.policy);
            assert!((0.0..=1.0).contains(&p.unusable_fraction), "{}", p.policy);
            let share: f64 = p.tenants.values().sum();
            assert!((share - 1.0).abs() < 1e-9, "{}: {share}", p.policy);
        }
        let b = go(&cfg, &jobs);
        let ja = serde_json::to_string(&a).unwrap_or_default();
        assert_eq!(ja, serde_json::to_string(&b).unwrap_or_default(), "same seed, same report");
    }
}

#[test]
fn errors_name_what_is_wrong() {
    let jobs = [job("x9", 0.0, 10.0, 500, "llama")];
    let e = run(&exact("1xA100-40GB", "whole"), &jobs, &mut |_, _| {}).unwrap_err().to_string();
    assert!(e.contains("x9") && e.contains("llama") && e.contains("transformer"), "{e}");
    let mut cpu = job("c", 0.0, 10.0, 500, "");
    cpu.num_gpu = 0;
    let e = run(&exact("1xA100-40GB", "whole"), &[cpu], &mut |_, _| {}).unwrap_err().to_string();
    assert!(e.contains("no jobs"), "{e}");
    let mut cfg = exact("1xA100-40GB", "whole");
    cfg.warmup_fraction = 0.7;
    assert!(run(&cfg, &[job("a", 0.0, 1.0, 1, "")], &mut |_, _| {}).is_err());
    let e = "static:9g".parse::<PolicySpec>().map(|p| {
        let cfg = RunConfig::new("1xA100-40GB".parse().unwrap_or_else(|e| panic!("{e}")), vec![p]);
        run(&cfg, &[job("a", 0.0, 1.0, 1, "")], &mut |_, _| {}).map(|_| ())
    });
    assert!(matches!(e, Ok(Err(_))), "{e:?}");
}

fn data(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

#[test]
fn openb_sample_replays_under_every_policy() {
    let pods = read_openb_pods(&data("openb_sample.csv")).unwrap_or_else(|e| panic!("{e}"));
    let jobs = jobs_from_openb(&pods, None);
    let cluster = ClusterSpec::resolve("load=0.8:A100-40GB", &jobs).unwrap_or_else(|e| panic!("{e}"));
    assert!(cluster.gpus() >= 8, "{cluster}");
    let policies = "whole,static,mps,dynamic,dynamic+mps".split(',').filter_map(|p| p.parse().ok()).collect();
    let mut cfg = RunConfig::new(cluster, policies);
    cfg.seeds = vec![1, 2];
    let mut calls = 0u64;
    let mut last = (0, 0);
    let r = run(&cfg, &jobs, &mut |d, t| {
        calls += 1;
        last = (d, t);
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.excluded_jobs, 5);
    assert_eq!(last.0, last.1, "progress reaches the total");
    assert!(calls > 0);
    assert!(!r.static_search.is_empty());
    let whole = &r.policies[0];
    let dynamic = &r.policies[3];
    assert!(whole.unfinished_jobs == 0 && dynamic.unfinished_jobs == 0);
    assert!(dynamic.reconfigurations > 0.0);
    assert!(!dynamic.jct_cdf.is_empty() && !dynamic.utilization_series.is_empty());
    let table = tessera_sim_time::render_table(&r);
    assert!(table.contains("dynamic+mps") && table.contains("static ("), "{table}");
    let csv = tessera_sim_time::to_csv(&r);
    assert_eq!(csv.lines().count(), 6);
    let charts = tessera_sim_time::charts(&r);
    assert_eq!(charts.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(), ["jct-cdf", "utilization"]);
    assert!(charts.iter().all(|c| c.1.series.len() == 5));
    // Utilisation is a fraction of the cluster's slices in every bucket, as in the mean.
    for p in &r.policies {
        for &(t, u) in &p.utilization_series {
            assert!((0.0..=1.0 + 1e-9).contains(&u), "{}: utilisation {u} at {t} s", p.policy);
        }
    }
    let util = &charts[1].1;
    assert!(util.y.range.is_some_and(|(lo, hi)| lo == 0.0 && hi >= 1.0), "utilisation is drawn from 0 to 1");
    assert_eq!(util.x.quantity, tessera_sim::plot::Quantity::Seconds, "time is shown in a readable unit");
}

#[test]
fn native_csv_replays() {
    let jobs = read_jobs_csv(&data("jobs.csv")).unwrap_or_else(|e| panic!("{e}"));
    let mut cfg = RunConfig::new(
        "2x4xH100-80GB".parse().unwrap_or_else(|e| panic!("{e}")),
        vec![PolicySpec::Whole, PolicySpec::Dynamic, PolicySpec::DynamicMps],
    );
    cfg.seeds = vec![1, 2, 3];
    let r = go(&cfg, &jobs);
    assert_eq!(r.gpus, 8);
    assert!(r.excluded_jobs > 0);
    for p in &r.policies {
        assert_eq!(p.unfinished_jobs, 0, "{}", p.policy);
        assert_eq!(p.per_seed.len(), 3);
        assert!(p.jct_mean_ci95_s >= 0.0);
    }
    assert_eq!(r.policies[0].tenants.len(), 3);
}

#[test]
fn mixed_clusters_use_every_model() {
    // Dynamic MIG names profiles on the first model (A100-40GB: 3g.20gb); H100 nodes read them
    // as their own (3g.40gb), so both node groups run jobs.
    let jobs: Vec<Job> = (0..40).map(|i| job(&format!("j{i}"), f64::from(i), 1000.0, 400, "")).collect();
    let r = go(&exact("1x2xA100-40GB+1x2xH100-80GB", "dynamic"), &jobs);
    let p = &r.policies[0];
    assert_eq!(p.unfinished_jobs, 0);
    // 4 GPUs × two 3g slices each = 8 at once: 40 jobs of 1000 s at 3g speed need 5 waves.
    let wave = 1000.0 / SpeedModel::miso().speed("", 3.0 / 7.0);
    assert!(p.makespan_s < 5.5 * wave + 200.0, "{} vs {wave}", p.makespan_s);
}

#[test]
fn dynamic_policy_side_fallbacks() {
    let speed = SpeedModel::miso();
    // A lone 300-milli job on an idle cluster takes a whole GPU (expansion on by default).
    let mut cfg = exact("1xA100-40GB", "dynamic");
    cfg.expand_below = 0.5;
    let p = &go(&cfg, &[job("a", 0.0, 100.0, 300, "")]).policies[0];
    assert!(close(p.jct_mean_s, 130.0), "{}", p.jct_mean_s);
    // A whole-GPU job that finds a 4g busy starts at once on a 3g (the smallest slice with at
    // least half its speed on the default curve) instead of waiting 1000 s.
    let mut cfg = exact("1xA100-40GB", "dynamic");
    cfg.compact_speed = 0.5;
    let jobs = [job("a", 0.0, 1000.0, 500, ""), job("b", 100.0, 100.0, 1000, "")];
    let p = &go(&cfg, &jobs).policies[0];
    let b = 30.0 + 100.0 / speed.speed("", 3.0 / 7.0);
    let a = 30.0 + 1000.0 / speed.speed("", 4.0 / 7.0);
    assert!(close(p.jct_mean_s, (a + b) / 2.0), "{} vs {}", p.jct_mean_s, (a + b) / 2.0);
    cfg.compact_speed = 0.0;
    let p = &go(&cfg, &jobs).policies[0];
    assert!(p.jct_mean_s > (a + 900.0) / 2.0, "without the fallback b waits for a: {}", p.jct_mean_s);
}

/// The host is modelled through the scheduler core: a 1-GPU node has 32 CPUs, so two 1g jobs
/// asking 20 CPUs each cannot run side by side, though the GPU has room for seven; with the
/// host off (0 CPUs per GPU) they do. Memory binds the same way.
#[test]
fn host_cpus_and_memory_limit_what_runs_together() {
    let mut a = job("a", 0.0, 100.0, 100, "");
    let mut b = job("b", 1.0, 100.0, 100, "");
    a.cpus = 20.0;
    b.cpus = 20.0;
    let with_host = go(&exact("1xA100-40GB", "dynamic"), &[a.clone(), b.clone()]);
    let mut off = exact("1xA100-40GB", "dynamic");
    off.host_cpus_per_gpu = 0;
    let without = go(&off, &[a.clone(), b.clone()]);
    let (w_on, w_off) = (with_host.policies[0].wait_mean_s, without.policies[0].wait_mean_s);
    assert!(w_off < 70.0, "without a host model both start after the 30 s reconfiguration: {w_off}");
    assert!(w_on > w_off + 50.0, "b waits for a's CPUs: {w_on} vs {w_off}");

    a.cpus = 1.0;
    b.cpus = 1.0;
    a.mem_mib = 100 * 1024;
    b.mem_mib = 100 * 1024;
    let mem_bound = go(&exact("1xA100-40GB", "dynamic"), &[a, b]);
    assert!(mem_bound.policies[0].wait_mean_s > 100.0, "128 GiB holds one 100 GiB job at a time");
}
