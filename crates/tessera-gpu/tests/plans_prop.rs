//! Property: any plan the planner makes, executed on the simulated node, reaches exactly the
//! plan's target and leaves busy instances untouched, over random sequences of wishes and busy
//! marks on every model of the conformance node.

use proptest::prelude::*;
use tessera_gpu::{MigBackend, NodeSpec, SimBackend, execute_plan, gpu_view};
use tessera_mig::{Planner, Wanted, WantedInstance, catalog};

const MODELS: [&str; 4] = ["A100-40GB", "H100-80GB", "A30-24GB", "RTX-PRO-6000"];

/// One round: profile picks (indices into the model's profiles) and busy marks (by position).
type Round = (Vec<usize>, Vec<bool>);

fn rounds() -> impl Strategy<Value = Vec<Round>> {
    prop::collection::vec((prop::collection::vec(0usize..32, 1..4), prop::collection::vec(any::<bool>(), 1..8)), 2..8)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn executed_plans_reach_their_target(model_idx in 0usize..MODELS.len(), rounds in rounds()) {
        let model = catalog().model(MODELS[model_idx]).unwrap();
        let sim = SimBackend::in_memory(&NodeSpec::parse(&format!("1x{}", model.name)).unwrap());
        let planner = Planner::new(model);
        let mut next_pid = 1000u32;
        for (picks, marks) in rounds {
            // Mark instances busy or idle by attaching or detaching processes.
            for (i, inst) in gpu_view(&sim, 0).unwrap().instances.iter().enumerate() {
                let want_busy = !marks.is_empty() && marks[i % marks.len()];
                if want_busy && !inst.busy {
                    if let Some(ci) = inst.compute_instances.first() {
                        sim.attach_process(0, inst.gpu_instance_id, ci.id, next_pid, "job").unwrap();
                        next_pid += 1;
                    }
                } else if !want_busy && inst.busy {
                    for p in &inst.processes {
                        sim.detach_process(0, p.pid).unwrap();
                    }
                }
            }
            let before = gpu_view(&sim, 0).unwrap();
            let mut wanted: Vec<WantedInstance> =
                before.instances.iter().filter(|i| i.busy).map(|i| WantedInstance::from(i.instance)).collect();
            wanted.extend(picks.iter().map(|&k| WantedInstance::new(model.profiles[k % model.profiles.len()].id)));
            let Ok(plan) = planner.reconfigure(&before.current(), &Wanted::Profiles(wanted)) else {
                continue;
            };
            if let Err(e) = execute_plan(&sim, 0, &plan) {
                return Err(TestCaseError::fail(format!("plan {plan:?} failed: {e}")));
            }
            let after = gpu_view(&sim, 0).unwrap();
            prop_assert_eq!(after.layout(), plan.target.clone());
            for busy in before.instances.iter().filter(|i| i.busy) {
                let same = after.instances.iter().find(|i| i.gpu_instance_id == busy.gpu_instance_id);
                prop_assert_eq!(same, Some(busy), "busy instance {} was touched", busy.label());
            }
            prop_assert!(sim.gpu_instances(0).unwrap().len() == plan.target.len());
        }
    }
}
