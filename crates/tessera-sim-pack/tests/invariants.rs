//! Property test: whatever the cluster, workload, policy and mode, no GPU is over-allocated,
//! every MIG layout stays valid, and the capacity accounted as allocated is exactly what the
//! GPUs' states say.

use proptest::prelude::*;
use tessera_mig::{catalog, validate};
use tessera_sim::trace::{Node, Pod};
use tessera_sim_pack::gpu::GpuRules;
use tessera_sim_pack::{Mode, Policy, run_one, setup};

fn node(i: usize, cpu: u64, gpus: u32, model: &str) -> Node {
    Node { name: format!("n{i:03}"), cpu_milli: cpu, memory_mib: 65536, gpus, model: model.to_string() }
}

fn pod(i: usize, cpu: u64, num_gpu: u32, gpu_milli: u32, spec: Option<&str>) -> Pod {
    Pod {
        name: format!("p{i:04}"),
        cpu_milli: cpu,
        memory_mib: 2048,
        num_gpu,
        gpu_milli,
        gpu_spec: spec.map(|s| vec![s.to_string()]).unwrap_or_default(),
        qos: String::new(),
        pod_phase: String::new(),
        creation_s: None,
        deletion_s: None,
        scheduled_s: None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn no_gpu_is_over_allocated_and_mig_layouts_stay_valid(
        node_shapes in prop::collection::vec((1u64..=8, prop::sample::select(vec![1u32, 2, 4, 8]), 0usize..2), 1..12),
        pod_shapes in prop::collection::vec((0u64..=6, 0u32..=10, 0usize..4, 0usize..3), 1..40),
        policy_idx in 0usize..Policy::ALL.len(),
        mig in any::<bool>(),
        seed in 0u64..1000,
    ) {
        let models = ["T4", "V100M16"];
        let nodes: Vec<Node> =
            node_shapes.iter().enumerate().map(|(i, &(cpu, g, m))| node(i, cpu * 8000, g, models[m])).collect();
        let pods: Vec<Pod> = pod_shapes
            .iter()
            .enumerate()
            .map(|(i, &(cpu, milli, kind, spec))| {
                let spec = [None, Some("T4"), Some("V100M16")][spec];
                match kind {
                    0 => pod(i, cpu * 1000, 0, 0, None),
                    1 => pod(i, cpu * 1000, 2, 1000, spec),
                    _ => pod(i, cpu * 1000, 1, 50 + milli * 95, spec),
                }
            })
            .collect();
        prop_assume!(pods.iter().any(|p| p.num_gpu > 0));
        let mode = if mig { Mode::Mig } else { Mode::Shared };
        let s = setup(mode, None, &nodes, &pods).unwrap();
        let policy = Policy::ALL[policy_idx];
        let r = run_one(&s, policy, seed, 130);
        let last = r.events.last().unwrap();
        let free: f64 = r.gpu_states.iter().map(|&g| s.rules.free(g)).sum();
        prop_assert!((s.capacity_milli as f64 - free - last.allocated).abs() < 1e-6);
        prop_assert!(last.requested as f64 <= last.allocated + 1e-6);
        match &s.rules {
            GpuRules::Shared => {
                prop_assert!(r.gpu_states.iter().all(|&g| g <= 1000));
                prop_assert_eq!(last.requested as f64, last.allocated);
            }
            GpuRules::Mig(t) => {
                let model = catalog().model("A100-40GB").unwrap();
                for &g in &r.gpu_states {
                    let layout = &t.layouts[usize::from(g)];
                    prop_assert!(validate(model, layout).is_empty(), "{:?}", layout);
                }
            }
        }
        // Arrived demand grows by each pod's request; failed and placed pods account for all of it.
        prop_assert_eq!(last.arrived, last.requested + last.failed_milli);
    }
}
