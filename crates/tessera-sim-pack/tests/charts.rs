//! The packing charts say what they count (compute slices in MIG mode, GPUs in milli-GPU mode),
//! start their value axes at 0, give the region from 80% demand on most of the width, and draw.

use tessera_sim::plot::write_both;
use tessera_sim::trace::{Node, Pod};
use tessera_sim_pack::{Mode, PackConfig, Policy, charts, run};

fn cluster() -> (Vec<Node>, Vec<Pod>) {
    let nodes = (0..4)
        .map(|i| Node {
            name: format!("n{i}"),
            cpu_milli: 64_000,
            memory_mib: 262_144,
            gpus: 4,
            model: "V100M16".into(),
        })
        .collect();
    let pods = (0..40)
        .map(|i| Pod {
            name: format!("p{i:03}"),
            cpu_milli: 1000,
            memory_mib: 1024,
            num_gpu: 1,
            gpu_milli: [250, 500, 1000, 300][i % 4],
            gpu_spec: Vec::new(),
            qos: String::new(),
            pod_phase: String::new(),
            creation_s: None,
            deletion_s: None,
            scheduled_s: None,
        })
        .collect();
    (nodes, pods)
}

#[test]
fn axes_name_what_each_mode_counts() {
    let (nodes, pods) = cluster();
    let dir = tempfile::tempdir().unwrap();
    // (mode, what the value axes count, what they must not say)
    for (mode, counted, never) in [(Mode::Mig, "compute slices", "GPU"), (Mode::Shared, "GPU", "slices")] {
        let cfg = PackConfig {
            mode,
            gpu_model: (mode == Mode::Mig).then(|| "A100-40GB".to_string()),
            policies: vec![Policy::Fgd, Policy::Tessera],
            seeds: vec![1],
            max_demand_pct: 130,
        };
        let report = run(&cfg, &nodes, &pods, &mut |_, _| {}).unwrap();
        let charts = charts(&report);
        assert_eq!(charts.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(), ["pack-allocation", "pack-fragmentation"]);
        for (stem, chart) in &charts {
            assert!(
                chart.y.label.contains(counted) && !chart.y.label.contains(never),
                "{mode:?} {stem}: {}",
                chart.y.label
            );
            assert!(!chart.x.label.contains(never), "{mode:?} {stem}: {}", chart.x.label);
            assert!(chart.y.range.is_none_or(|(lo, _)| lo == 0.0), "{mode:?} {stem}: the value axis starts at 0");
            assert!(
                chart.x.stretch.is_some_and(|s| s.from == 80.0 && s.share > 0.5),
                "{mode:?} {stem}: 80–130% has the room"
            );
            let written = write_both(chart, &dir.path().join(format!("{mode:?}-{stem}"))).unwrap();
            assert!(written.iter().all(|p| std::fs::metadata(p).unwrap().len() > 1000), "{written:?}");
        }
        if mode == Mode::Mig {
            assert!(charts[0].1.title.contains("7 compute slices"), "{}", charts[0].1.title);
        }
    }
}
