//! Runs the packing experiment on the shared openb trace and prints the table, for quick checks:
//! `cargo run --release -p tessera-sim-pack --example pack -- shared fgd,bestfit 42-51 [A100-40GB] [pods file]`.

use std::path::Path;
use std::time::Instant;

use tessera_sim::trace::{read_openb_nodes, read_openb_pods};
use tessera_sim_pack::{Mode, PackConfig, Policy, parse_seeds, render_table, run, to_csv};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/traces/alibaba-gpu-v2023");
    let mode: Mode = args.first().map_or("shared", String::as_str).parse()?;
    let policies =
        args.get(1).map_or("fgd", String::as_str).split(',').map(str::parse).collect::<Result<Vec<Policy>, _>>()?;
    let seeds = parse_seeds(args.get(2).map_or("42-51", String::as_str))?;
    let gpu_model = args.get(3).cloned();
    let pods_file = args.get(4).map_or("openb_pod_list_default.csv", String::as_str);
    let nodes = read_openb_nodes(&Path::new(dir).join("openb_node_list_gpu_node.csv"))?;
    let pods = read_openb_pods(&Path::new(dir).join(pods_file))?;
    let cfg = PackConfig { mode, gpu_model, policies, seeds, max_demand_pct: 130 };
    let t = Instant::now();
    let report = run(&cfg, &nodes, &pods, &mut |_, _| {})?;
    let runs = cfg.policies.len() * cfg.seeds.len();
    if std::env::var_os("PACK_JSON").is_some() {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if std::env::var_os("PACK_CSV").is_some() {
        print!("{}", to_csv(&report));
    } else {
        println!("{}", render_table(&report));
    }
    eprintln!("{runs} runs in {:.2?} ({:.3?} per run)", t.elapsed(), t.elapsed() / runs as u32);
    Ok(())
}
