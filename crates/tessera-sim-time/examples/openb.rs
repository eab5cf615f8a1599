//! Replays openb's last 30 days on a cluster sized for a load, every policy, and prints the
//! table (and the JSON report with `--json FILE`).
//!
//! `cargo run --release -p tessera-sim-time --example openb -- [LOAD] [SEEDS] [RECONFIG_S] [POLICIES] [--json FILE]`

use tessera_sim::trace::{jobs_from_openb, read_openb_pods};
use tessera_sim_time::{ClusterSpec, PolicySpec, RunConfig, render_table, run};

mod common;

use common::openb_default;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().position(|a| a == "--json").and_then(|i| args.get(i + 1)).cloned();
    let pos: Vec<&String> = args.iter().take_while(|a| *a != "--json").collect();
    let load: f64 = pos.first().map_or(Ok(0.7), |s| s.parse())?;
    let seeds: u64 = pos.get(1).map_or(Ok(5), |s| s.parse())?;
    let reconfig: f64 = pos.get(2).map_or(Ok(30.0), |s| s.parse())?;
    let policies = pos.get(3).map_or("whole,static,static:3g+2g+2g,mps,dynamic,dynamic+mps", |s| s.as_str());
    let pods = read_openb_pods(&openb_default())?;
    let jobs = jobs_from_openb(&pods, Some(30.0));
    let spec = std::env::var("CLUSTER").unwrap_or_else(|_| format!("load={load}:A100-40GB"));
    let cluster = ClusterSpec::resolve(&spec, &jobs)?;
    let policies = policies.split(',').map(str::parse).collect::<Result<Vec<PolicySpec>, _>>()?;
    let mut cfg = RunConfig::new(cluster, policies);
    cfg.seeds = (1..=seeds).collect();
    cfg.reconfig_cost_s = reconfig;
    if let Some(x) = std::env::var("EXPAND").ok().and_then(|v| v.parse().ok()) {
        cfg.expand_below = x;
    }
    if let Some(r) = std::env::var("RESERVE").ok().and_then(|v| v.parse().ok()) {
        cfg.reserve_after_s = r;
    }
    if let Some(c) = std::env::var("COMPACT").ok().and_then(|v| v.parse().ok()) {
        cfg.compact_speed = c;
    }
    let t = std::time::Instant::now();
    let report = run(&cfg, &jobs, &mut |_, _| {})?;
    print!("{}", render_table(&report));
    for s in &report.static_search {
        println!("  static {}: {:.0}", s.layout, s.jct_mean_s);
    }
    println!("wall {:.1}s", t.elapsed().as_secs_f64());
    if let Some(f) = json {
        std::fs::write(f, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}
