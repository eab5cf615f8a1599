//! Wall time and peak memory of Protocol B: the openb 30-day replay under one policy, and
//! 1,000,000 synthetic jobs on 10,000 GPUs under dynamic MIG. A plain `main` (not divan): each
//! case runs once and prints its wall time and the process's peak RSS (VmHWM) after it.
//!
//! `cargo bench -p tessera-sim-time --bench time [-- openb|scale]`

use std::path::{Path, PathBuf};
use std::time::Instant;

use tessera_sim::synth::{SynthConfig, generate, interarrival_for_load};
use tessera_sim::trace::{jobs_from_openb, read_openb_pods};
use tessera_sim_time::{ClusterSpec, PolicySpec, RunConfig, run};

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn openb_default() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("OPENB_PODS") {
        return Some(p.into());
    }
    let rel = "shared/traces/alibaba-gpu-v2023/openb_pod_list_default.csv";
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    [here.join("../..").join(rel), here.join("../../..").join(rel)].into_iter().find(|p| p.exists())
}

fn openb() -> Result<(), Box<dyn std::error::Error>> {
    let Some(path) = openb_default() else {
        println!("openb: trace not found (set OPENB_PODS); skipped");
        return Ok(());
    };
    let jobs = jobs_from_openb(&read_openb_pods(&path)?, Some(30.0));
    let cluster = ClusterSpec::resolve("load=0.7:A100-40GB", &jobs)?;
    let mut cfg = RunConfig::new(cluster, vec![PolicySpec::Dynamic]);
    cfg.seeds = vec![1];
    let t = Instant::now();
    let r = run(&cfg, &jobs, &mut |_, _| {})?;
    println!(
        "openb 30-day replay: {} GPU jobs on {} ({} GPUs), dynamic, 1 seed: {:.2} s wall, peak RSS {:.0} MiB",
        r.gpu_jobs,
        r.cluster,
        r.gpus,
        t.elapsed().as_secs_f64(),
        peak_rss_mib()
    );
    Ok(())
}

fn scale() -> Result<(), Box<dyn std::error::Error>> {
    let gpus = 10_000u32;
    let mut synth = SynthConfig { jobs: 1_000_000, seed: 7, ..SynthConfig::default() };
    synth.mean_interarrival_s = interarrival_for_load(&synth, gpus, 0.7);
    let t0 = Instant::now();
    let jobs = generate(&synth)?;
    let gen_s = t0.elapsed().as_secs_f64();
    let cluster: ClusterSpec = format!("{gpus}xA100-40GB").parse()?;
    let mut cfg = RunConfig::new(cluster, vec![PolicySpec::Dynamic]);
    cfg.seeds = vec![1];
    let t = Instant::now();
    let r = run(&cfg, &jobs, &mut |_, _| {})?;
    let p = &r.policies[0];
    println!(
        "scale: {} jobs on {} GPUs ({} nodes), dynamic, 1 seed: {:.2} s wall (+{:.2} s generating), peak RSS {:.0} MiB; \
         mean JCT {:.0} s, utilisation {:.1}%, {} reconfigurations",
        r.gpu_jobs,
        r.gpus,
        r.nodes,
        t.elapsed().as_secs_f64(),
        gen_s,
        peak_rss_mib(),
        p.jct_mean_s,
        p.utilization * 100.0,
        p.reconfigurations
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let which: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let want = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    if want("openb") {
        openb()?;
    }
    if want("scale") {
        scale()?;
    }
    Ok(())
}
