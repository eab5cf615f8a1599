//! Reproduction of FGD's published results (ATC'23 artifact, `expected_results`): the six policies
//! on the default openb trace, seeds 42–51, must match the artifact's mean GPU allocation ratio
//! within ±0.5 percentage points at every arrived-demand point from 50% to 130%, and its
//! fragmentation (% of capacity) within ±0.5 points too.

use std::collections::HashMap;
use std::path::Path;

use tessera_sim::trace::{read_openb_nodes, read_openb_pods};
use tessera_sim_pack::{Mode, PackConfig, Policy, run};

const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared");

/// `(artifact policy, metric, demand) -> mean` for the default trace.
fn reference() -> HashMap<(String, String, u32), f64> {
    let path = Path::new(SHARED).join("reference/fgd-expected-results/summary_mean_over_seeds.csv");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = HashMap::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() == 8 && f[0] == "openb_pod_list_default" {
            out.insert((f[1].to_string(), f[2].to_string(), f[3].parse().unwrap()), f[4].parse().unwrap());
        }
    }
    out
}

#[test]
fn six_policies_match_the_artifact_on_the_default_trace() {
    let dir = Path::new(SHARED).join("traces/alibaba-gpu-v2023");
    let nodes = read_openb_nodes(&dir.join("openb_node_list_gpu_node.csv")).unwrap();
    let pods = read_openb_pods(&dir.join("openb_pod_list_default.csv")).unwrap();
    let policies = [Policy::Random, Policy::DotProd, Policy::Clustering, Policy::Packing, Policy::BestFit, Policy::Fgd];
    let cfg = PackConfig {
        mode: Mode::Shared,
        gpu_model: None,
        policies: policies.to_vec(),
        seeds: (42..=51).collect(),
        max_demand_pct: 130,
    };
    let report = run(&cfg, &nodes, &pods, &mut |_, _| {}).unwrap();
    assert_eq!(report.total_gpus, 6212);
    let reference = reference();
    let mut failures = Vec::new();
    for p in policies {
        let artifact = p.artifact_name().unwrap();
        for demand in [50, 80, 90, 100, 110, 120, 130] {
            let row = report.summary.iter().find(|r| r.policy == p.name() && r.demand == demand).unwrap();
            for (metric, ours) in
                [("gpu_alloc_pct", row.allocation_ratio_mean), ("frag_gpu_pct_of_capacity", row.fragmentation_pct_mean)]
            {
                let theirs = reference[&(artifact.to_string(), metric.to_string(), demand)];
                let line = format!("{p} {metric} at {demand}%: ours {ours:.3}, artifact {theirs:.3}");
                eprintln!("{line}");
                if (ours - theirs).abs() > 0.5 {
                    failures.push(line);
                }
            }
        }
    }
    assert!(failures.is_empty(), "off by more than 0.5 points:\n{}", failures.join("\n"));
}
