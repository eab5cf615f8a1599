//! The Kubernetes replay (`docs/evaluation/kubernetes.md`) without the binary: mig-manager's
//! best static configuration, NVIDIA's DRA first fit and Tessera's `decide`, on openb's last 30
//! days or MIGBench-style traces, and prints the table (and the JSON report with `--json FILE`).
//!
//! `cargo run -p tessera-sim-time --example kube -- openb [LOAD] [SEEDS] [POLICIES] [--first-seed N] [--json FILE]`
//! `cargo run -p tessera-sim-time --example kube -- migbench [CLUSTER] [SEEDS] [POLICIES] [--first-seed N] [--json FILE]`
//! `cargo run -p tessera-sim-time --example kube -- migbench-gen [CLUSTER] [SEEDS] [POLICIES] [--first-seed N] [--json FILE]`
//!
//! `migbench-gen` draws each seed's trace with MIGBench's own generator (`tessera_sim_time::migbench`;
//! `--first-seed 20260914` with 1 seed is MIGBench's published trace) and prints its statistics
//! first. `WARMUP=0` measures every pod (MIGBench's own measure); `RECONFIG=S` sets the MIG
//! operation's seconds. Policies include `dra-alloc` and `dra-alloc-tessera` (the structured
//! allocator over the published slices), which the binary's `--policy` parses too; the
//! `migbench-gen` workload is only here.
//!
//! `SEEDS` seeds are run, from `--first-seed` (default 1): `20 --first-seed 11` is seeds 11–30, a
//! set disjoint from seeds 1–10. On MIGBench-style traces the mig-manager search's tuning trace is
//! drawn from seed 1000 + the first seed.

use tessera_sim::trace::{jobs_from_openb, read_openb_pods};
use tessera_sim_time::{
    ClusterSpec, KubeConfig, KubePolicy, KubeWorkload, MigBenchSpec, MigBenchTraceSpec, migbench_trace_pods,
    pods_from_jobs, render_kube_table, run_kube, trace_stats,
};

mod common;

use common::openb_default;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let json = flag("--json");
    let first_seed: u64 = flag("--first-seed").map_or(Ok(1), |s| s.parse())?;
    let pos: Vec<&String> = args.iter().take_while(|a| !a.starts_with("--")).collect();
    let workload = pos.first().map_or("openb", |s| s.as_str());
    let seeds: u64 = pos.get(2).map_or(Ok(5), |s| s.parse())?;
    let policies = pos.get(3).map_or("mig-manager,dra,tessera", |s| s.as_str());
    let policies = policies.split(',').map(str::parse).collect::<Result<Vec<KubePolicy>, _>>()?;
    let (cluster, workload) = match workload {
        "migbench" => {
            let spec = pos.get(1).map_or("2x4xH100-80GB", |s| s.as_str());
            (spec.parse::<ClusterSpec>()?, KubeWorkload::MigBench(MigBenchSpec::default()))
        }
        "migbench-gen" => {
            let cluster = pos.get(1).map_or("2x4xH100-80GB", |s| s.as_str()).parse::<ClusterSpec>()?;
            let model = cluster.first_model().ok_or("no GPUs")?;
            let spec = MigBenchTraceSpec::default();
            for seed in first_seed..first_seed + seeds {
                let pods = migbench_trace_pods(&spec, model, cluster.gpus(), seed)?;
                let st = trace_stats(&pods, model, cluster.gpus() * u32::from(model.compute_slices));
                println!(
                    "trace seed {seed}: {} pods {:?}, mean running time {:.0} s, arrivals over {:.0} s, offered load {:.3}",
                    st.jobs, st.by_profile, st.mean_runtime_s, st.arrival_span_s, st.offered_load
                );
            }
            (cluster, KubeWorkload::MigBenchTrace(spec))
        }
        _ => {
            let load: f64 = pos.get(1).map_or(Ok(0.9), |s| s.parse())?;
            let jobs = jobs_from_openb(&read_openb_pods(&openb_default())?, Some(30.0));
            let spec = std::env::var("CLUSTER").unwrap_or_else(|_| format!("load={load}:A100-40GB"));
            let cluster = ClusterSpec::resolve(&spec, &jobs)?;
            let model = cluster.first_model().ok_or("no GPUs")?;
            let (pods, _) = pods_from_jobs(&jobs, model)?;
            (cluster, KubeWorkload::Trace { name: "openb".into(), pods })
        }
    };
    let mut cfg = KubeConfig::new(cluster, policies);
    cfg.seeds = (first_seed..first_seed + seeds).collect();
    if let Some(x) = std::env::var("RECONFIG").ok().and_then(|v| v.parse().ok()) {
        cfg.reconfig_cost_s = x;
    }
    if let Some(x) = std::env::var("WARMUP").ok().and_then(|v| v.parse().ok()) {
        cfg.warmup_fraction = x;
    }
    let report = run_kube(&cfg, &workload)?;
    print!("{}", render_kube_table(&report));
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}
