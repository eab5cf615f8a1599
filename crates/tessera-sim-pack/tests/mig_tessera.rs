//! In MIG mode (every GPU an A100-40GB) Tessera's policy must allocate at least as much as FGD
//! adapted to MIG at 130% arrived demand on the default trace, seeds 42–51; and every GPU's layout
//! must stay valid under the placement rules.

use std::path::Path;

use tessera_sim::trace::{read_openb_nodes, read_openb_pods};
use tessera_sim_pack::{Mode, PackConfig, Policy, run};

#[test]
fn tessera_beats_fgd_mig_on_the_default_trace() {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/traces/alibaba-gpu-v2023"));
    let nodes = read_openb_nodes(&dir.join("openb_node_list_gpu_node.csv")).unwrap();
    let pods = read_openb_pods(&dir.join("openb_pod_list_default.csv")).unwrap();
    let cfg = PackConfig {
        mode: Mode::Mig,
        gpu_model: Some("A100-40GB".to_string()),
        policies: vec![Policy::Fgd, Policy::Tessera],
        seeds: (42..=51).collect(),
        max_demand_pct: 130,
    };
    let report = run(&cfg, &nodes, &pods, &mut |_, _| {}).unwrap();
    let at = |p: &str, d: u32| report.summary.iter().find(|r| r.policy == p && r.demand == d).unwrap().clone();
    let (fgd, tessera) = (at("fgd", 130), at("tessera", 130));
    eprintln!(
        "MIG A100-40GB at 130%: fgd {:.3} ± {:.3}, tessera {:.3} ± {:.3} (placed request {:.3} vs {:.3})",
        fgd.allocation_ratio_mean,
        fgd.allocation_ratio_ci95,
        tessera.allocation_ratio_mean,
        tessera.allocation_ratio_ci95,
        fgd.placed_request_pct_mean,
        tessera.placed_request_pct_mean
    );
    assert!(tessera.allocation_ratio_mean > fgd.allocation_ratio_mean);
    assert!(tessera.placed_request_pct_mean > fgd.placed_request_pct_mean);
    // Rounding to MIG profiles wastes part of what is allocated, and it is reported.
    assert!(report.trace_rounding_waste_pct.is_some_and(|w| w > 0.0));
    assert!(tessera.rounding_waste_pct_mean > 0.0);
}
