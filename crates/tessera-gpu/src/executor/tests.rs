//! Unit tests of the executor: plans, re-checks, rollback and what the errors say.

use tessera_mig::{Planner, Wanted, WantedInstance, catalog};

use super::*;
use crate::testing::Wrapped;
use crate::{NodeSpec, SimBackend, gpu_view};

fn sim(spec: &str) -> SimBackend {
    SimBackend::in_memory(&NodeSpec::parse(spec).unwrap())
}

/// Create `inst` with its full compute instance; returns (GPU instance id, MIG UUID).
fn make(b: &dyn MigBackend, gpu: u32, profile_id: u32, start: u8) -> (u32, String) {
    let model = b.devices().unwrap()[gpu as usize].model().unwrap();
    let p = model.profile_by_id(profile_id).unwrap();
    let gi = b.create_gpu_instance(gpu, profile_id, Some(start)).unwrap();
    let ci_id = ci_profiles_for(model, p, ComputeShape::Full).unwrap()[0].id;
    let ci = b.create_compute_instance(gpu, gi.id, ci_id).unwrap();
    (gi.id, ci.uuid)
}

/// (profile, start, shape) of every instance, by start.
fn layout(b: &dyn MigBackend, gpu: u32) -> Vec<Instance> {
    gpu_view(b, gpu).unwrap().layout()
}

#[test]
fn a_planned_reconfiguration_runs_and_reports() {
    let b = sim("1xH100-80GB");
    make(&b, 0, 19, 6);
    make(&b, 0, 19, 5);
    let model = catalog().model("H100-80GB").unwrap();
    let view = gpu_view(&b, 0).unwrap();
    let want = Wanted::Layout(vec![Instance::new(9, 4), Instance::new(5, 0)]);
    let plan = Planner::new(model).reconfigure(&view.current(), &want).unwrap();
    let report = execute_plan(&b, 0, &plan).unwrap();
    assert_eq!(report.steps_done.len(), 4, "{report:?}");
    assert_eq!(report.steps_done[0], "destroyed 1g.10gb@5 (GPU instance 12)");
    assert_eq!(report.steps_done[1], "destroyed 1g.10gb@6 (GPU instance 13)");
    assert!(report.steps_done[2].starts_with("created 4g.40gb@0 (GPU instance 1, MIG-"), "{report:?}");
    assert!(report.steps_done[3].starts_with("created 3g.40gb@4 (GPU instance 2, MIG-"), "{report:?}");
    assert_eq!(layout(&b, 0), plan.target);
    // An empty plan does nothing.
    let again = Planner::new(model).reconfigure(&gpu_view(&b, 0).unwrap().current(), &want).unwrap();
    assert!(again.is_empty());
    assert_eq!(execute_plan(&b, 0, &again).unwrap(), ExecutionReport::default());
}

#[test]
fn compute_shapes_are_created_as_asked() {
    let b = sim("1xA100-40GB");
    let plan = ReconfigurePlan {
        steps: vec![
            Step::Create { instance: Instance { profile_id: 9, start: 4, compute: ComputeShape::Slices(1) } },
            Step::Create { instance: Instance { profile_id: 5, start: 0, compute: ComputeShape::Slices(4) } },
        ],
        target: vec![],
        unchanged: vec![],
    };
    let report = execute_plan(&b, 0, &plan).unwrap();
    assert!(report.steps_done[0].starts_with("created 1c.3g.20gb@4 "), "{report:?}");
    assert!(report.steps_done[1].starts_with("created 4g.20gb@0 "), "{report:?}");
    let shapes: Vec<ComputeShape> = layout(&b, 0).iter().map(|i| i.compute).collect();
    assert_eq!(shapes, [ComputeShape::Full, ComputeShape::Slices(1)]);
    // A shape the GPU instance does not offer, or `Other`, fails before anything is created.
    for compute in [ComputeShape::Slices(5), ComputeShape::Other] {
        let bad = ReconfigurePlan {
            steps: vec![Step::Create { instance: Instance { profile_id: 19, start: 0, compute } }],
            target: vec![],
            unchanged: vec![],
        };
        let b = sim("1xA100-40GB");
        let e = execute_plan(&b, 0, &bad).unwrap_err();
        assert_eq!(e.cause.kind(), "invalid_argument", "{e}");
        assert!(e.rolled_back && b.gpu_instances(0).unwrap().is_empty(), "{e}");
    }
}

/// The rollback case: the last create overlaps a busy instance.
#[test]
fn a_failed_create_rolls_everything_back() {
    let b = sim("1xA100-40GB");
    let (idle_gi, _) = make(&b, 0, 19, 0);
    let (busy_gi, busy_uuid) = make(&b, 0, 14, 4);
    b.attach_process(0, busy_gi, 0, 999, "training").unwrap();
    let before = gpu_view(&b, 0).unwrap();
    let plan = ReconfigurePlan {
        steps: vec![
            Step::Destroy { instance: Instance::new(19, 0), gpu_instance_id: Some(idle_gi) },
            Step::Create { instance: Instance::new(9, 0) },
            Step::Create { instance: Instance::new(19, 5) },
        ],
        target: vec![],
        unchanged: vec![],
    };
    let e = execute_plan(&b, 0, &plan).unwrap_err();
    assert_eq!(e.gpu, 0);
    assert_eq!(e.failed_step, "step 3 of 3: create 1g.5gb@5");
    assert_eq!(e.cause.kind(), "insufficient_resources");
    assert!(e.rolled_back);
    assert!(e.changed.is_empty());
    assert_eq!(e.undone.len(), 2, "{e}");
    let msg = e.to_string();
    assert!(msg.contains("Nothing changed on the GPU"), "{msg}");
    assert!(msg.contains("Insufficient Resources"), "{msg}");
    assert!(msg.contains("destroyed 1g.5gb@0 (GPU instance 7): recreated as GPU instance 7 (MIG-"), "{msg}");
    assert!(msg.contains("created 3g.20gb@0 (GPU instance 1, MIG-"), "{msg}");
    // The GPU is exactly as before: same layout, same busy instance with the same UUID.
    let after = gpu_view(&b, 0).unwrap();
    assert_eq!(after.layout(), before.layout());
    let busy = after.instances.iter().find(|i| i.busy).unwrap();
    assert_eq!((busy.gpu_instance_id, busy.compute_instances[0].uuid.as_str()), (busy_gi, busy_uuid.as_str()));
    assert_eq!(busy.processes[0].pid, 999);
}

#[test]
fn a_failed_rollback_says_what_remains_changed() {
    let w = Wrapped::new(sim("1xA100-40GB"));
    let (gi, _) = make(&w, 0, 19, 0);
    let plan = ReconfigurePlan {
        steps: vec![
            Step::Destroy { instance: Instance::new(19, 0), gpu_instance_id: Some(gi) },
            Step::Create { instance: Instance::new(9, 0) },
        ],
        target: vec![],
        unchanged: vec![],
    };
    // Every GPU-instance creation from now on fails: the create, and the rollback's recreate.
    w.fail_gi_creates_after(0);
    let e = execute_plan(&w, 0, &plan).unwrap_err();
    assert_eq!(e.cause.kind(), "gpu_lost");
    assert!(!e.rolled_back);
    assert_eq!(e.changed.len(), 1, "{e}");
    assert!(e.changed[0].starts_with("destroyed 1g.5gb@0 (GPU instance 7): could not recreate it"), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("the GPU was left changed: destroyed 1g.5gb@0"), "{msg}");
    assert!(w.gpu_instances(0).unwrap().is_empty());
}

#[test]
fn a_failed_compute_instance_removes_its_gpu_instance() {
    let w = Wrapped::new(sim("1xH100-80GB"));
    let plan = ReconfigurePlan {
        steps: vec![Step::Create { instance: Instance::new(9, 0) }, Step::Create { instance: Instance::new(9, 4) }],
        target: vec![],
        unchanged: vec![],
    };
    w.fail_ci_creates_after(1);
    let e = execute_plan(&w, 0, &plan).unwrap_err();
    assert_eq!(e.failed_step, "step 2 of 2: create 3g.40gb@4");
    assert!(e.rolled_back, "{e}");
    assert!(w.gpu_instances(0).unwrap().is_empty());
}

#[test]
fn a_destroy_rechecks_that_the_instance_is_idle() {
    let b = sim("1xA100-40GB");
    make(&b, 0, 19, 0);
    let (gi, _) = make(&b, 0, 19, 1);
    let model = catalog().model("A100-40GB").unwrap();
    let plan = Planner::new(model)
        .reconfigure(&gpu_view(&b, 0).unwrap().current(), &Wanted::Profiles(vec![WantedInstance::new(14)]))
        .unwrap();
    // Work starts on GPU instance `gi` after the plan was made.
    b.attach_process(0, gi, 0, 31337, "late-job").unwrap();
    let before = layout(&b, 0);
    let e = execute_plan(&b, 0, &plan).unwrap_err();
    assert_eq!(e.cause.kind(), "in_use");
    let msg = e.to_string();
    assert!(msg.contains("pid 31337 (late-job)") && msg.contains("never destroyed"), "{msg}");
    assert!(e.rolled_back, "{msg}");
    assert_eq!(layout(&b, 0), before);
}

#[test]
fn a_stale_gpu_instance_id_falls_back_to_the_placement() {
    let b = sim("1xA100-40GB");
    let (gi, _) = make(&b, 0, 9, 4);
    let plan = ReconfigurePlan {
        steps: vec![Step::Destroy { instance: Instance::new(9, 4), gpu_instance_id: Some(gi + 5) }],
        target: vec![],
        unchanged: vec![],
    };
    let r = execute_plan(&b, 0, &plan).unwrap();
    assert_eq!(r.steps_done, [format!("destroyed 3g.20gb@4 (GPU instance {gi})")]);
    // Destroying what is not there fails and changes nothing.
    let e = execute_plan(&b, 0, &plan).unwrap_err();
    assert_eq!(e.cause.kind(), "not_found");
    assert!(e.to_string().contains("Nothing changed on the GPU: no step had been done"), "{e}");
}

#[test]
fn gpus_the_executor_cannot_work_on() {
    let plan = ReconfigurePlan {
        steps: vec![Step::Create { instance: Instance::new(19, 0) }],
        target: vec![],
        unchanged: vec![],
    };
    let b = sim("1xA100-40GB");
    let e = execute_plan(&b, 3, &plan).unwrap_err();
    assert_eq!(e.cause.kind(), "not_found");
    assert!(e.rolled_back);
    let w = Wrapped {
        disguise: Some(|d| {
            d.pci_device_id = 0xbeef;
            d.name = "NVIDIA Future GPU".into();
        }),
        ..Wrapped::new(sim("1xA100-40GB"))
    };
    let e = execute_plan(&w, 0, &plan).unwrap_err();
    assert_eq!(e.cause.kind(), "not_supported");
    assert!(e.to_string().contains("NVIDIA Future GPU"), "{e}");
    // MIG off: the first step fails, nothing changes.
    let b = sim("1xA100-40GB,mig=off");
    let e = execute_plan(&b, 0, &plan).unwrap_err();
    assert_eq!(e.cause.kind(), "not_supported");
    assert!(e.rolled_back);
}

#[test]
fn ensure_mig_mode_changes_only_what_is_needed() {
    let b = sim("1xH100-80GB,mig=off");
    assert!(!ensure_mig_mode(&b, 0, false).unwrap());
    assert!(ensure_mig_mode(&b, 0, true).unwrap());
    assert!(!ensure_mig_mode(&b, 0, true).unwrap());
    assert!(ensure_mig_mode(&b, 0, false).unwrap());
    b.attach_gpu_process(0, 12, "dcgm").unwrap();
    let e = ensure_mig_mode(&b, 0, true).unwrap_err();
    assert_eq!(e.kind(), "in_use");
    assert!(b.mig_mode(0).unwrap().pending);
    // Asking for the mode in force withdraws the pending change.
    assert!(!ensure_mig_mode(&b, 0, false).unwrap());
    assert!(!b.mig_mode(0).unwrap().pending);
}

fn split(sizes: &[u8]) -> ComputeShape {
    ComputeShape::Split(tessera_mig::layout::CiSizes::new(sizes).unwrap())
}

#[test]
fn a_split_gpu_instance_gets_every_compute_instance_largest_first() {
    let b = sim("1xH100-80GB");
    let seven = Instance { profile_id: 0, start: 0, compute: split(&[1, 2, 4]) };
    let plan = ReconfigurePlan { steps: vec![Step::Create { instance: seven }], target: vec![], unchanged: vec![] };
    let report = execute_plan(&b, 0, &plan).unwrap();
    assert!(report.steps_done[0].starts_with("created (4c.7g.80gb + 2c.7g.80gb + 1c.7g.80gb)@0 (GPU instance"));
    assert_eq!(report.steps_done[0].matches("MIG-").count(), 3, "{report:?}");
    let v = gpu_view(&b, 0).unwrap();
    let placed: Vec<(u8, u8)> =
        v.instances[0].compute_instances.iter().map(|c| (c.placement.start, c.placement.size)).collect();
    assert_eq!(placed, [(0, 4), (4, 2), (6, 1)]);
    assert_eq!(v.layout(), [seven]);
    assert_eq!(v.instances[0].label(), "(4c.7g.80gb + 2c.7g.80gb + 1c.7g.80gb)@0");
    // A split the GPU instance cannot hold fails before anything is created, saying why.
    let b = sim("1xH100-80GB");
    let bad = Instance { profile_id: 0, start: 0, compute: split(&[3, 2, 2]) };
    let plan = ReconfigurePlan { steps: vec![Step::Create { instance: bad }], target: vec![], unchanged: vec![] };
    let e = execute_plan(&b, 0, &plan).unwrap_err();
    assert_eq!(e.cause.kind(), "invalid_argument", "{e}");
    assert!(e.to_string().contains("7g.80gb cannot hold 3c.7g.80gb + 2c.7g.80gb ×2: no free placement"), "{e}");
    assert!(b.gpu_instances(0).unwrap().is_empty());
}

#[test]
fn a_split_that_fails_part_way_is_removed_and_a_destroyed_one_recreated() {
    let w = Wrapped::new(sim("1xA100-40GB"));
    let three = Instance { profile_id: 9, start: 4, compute: split(&[1, 1, 1]) };
    let plan = ReconfigurePlan { steps: vec![Step::Create { instance: three }], target: vec![], unchanged: vec![] };
    // The third compute instance fails: the GPU instance and its two others go again.
    w.fail_ci_creates_after(2);
    let e = execute_plan(&w, 0, &plan).unwrap_err();
    assert_eq!(e.failed_step, "step 1 of 1: create (1c.3g.20gb ×3)@4");
    assert!(e.rolled_back, "{e}");
    assert!(w.gpu_instances(0).unwrap().is_empty());

    // Destroyed, then a later step fails: recreated with its three compute instances.
    let b = sim("1xA100-40GB");
    execute_plan(&b, 0, &plan).unwrap();
    let gi = gpu_view(&b, 0).unwrap().instances[0].gpu_instance_id;
    let undo = ReconfigurePlan {
        steps: vec![
            Step::Destroy { instance: three, gpu_instance_id: Some(gi) },
            Step::Create { instance: Instance::new(19, 7) },
            Step::Create { instance: Instance::new(19, 7) },
        ],
        target: vec![],
        unchanged: vec![],
    };
    let e = execute_plan(&b, 0, &undo).unwrap_err();
    assert!(e.rolled_back, "{e}");
    assert_eq!(layout(&b, 0), [three]);
}

mod props {
    use proptest::prelude::*;
    use tessera_mig::layout::{CiSizes, ci_placements};
    use tessera_mig::{ComputeShape, Planner, Wanted, WantedInstance, catalog};

    use crate::{NodeSpec, SimBackend, execute_plan, gpu_view};

    /// Every compute shape a GPU instance of `profile` can hold: full, one smaller compute
    /// instance, or a split of up to seven that the catalog's placements allow.
    fn shapes(model: &tessera_mig::GpuModel, profile: &tessera_mig::Profile) -> Vec<ComputeShape> {
        let sizes: Vec<u8> = model
            .compute_instance_profiles(profile.compute_slices)
            .iter()
            .map(|c| c.compute_slices)
            .filter(|&c| c < profile.compute_slices)
            .collect();
        let mut out = vec![ComputeShape::Full];
        out.extend(sizes.iter().map(|&c| ComputeShape::Slices(c)));
        // Multisets of the smaller sizes, largest first, by depth-first extension.
        let mut stack: Vec<Vec<u8>> = sizes.iter().map(|&c| vec![c]).collect();
        while let Some(split) = stack.pop() {
            for &c in sizes.iter().filter(|&&c| c <= *split.last().unwrap_or(&u8::MAX)) {
                let mut next = split.clone();
                next.push(c);
                if ci_placements(model, profile, &next).is_ok() {
                    out.push(ComputeShape::Split(CiSizes::new(&next).unwrap()));
                    stack.push(next);
                }
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        /// Any valid layout with splits, executed on the simulated node, reads back unchanged.
        #[test]
        fn split_layouts_survive_executor_and_view(
            model_idx in 0usize..64,
            picks in prop::collection::vec((0usize..64, 0usize..64), 1..8),
        ) {
            let models = &catalog().models;
            let model = &models[model_idx % models.len()];
            let planner = Planner::new(model);
            let mut wanted: Vec<WantedInstance> = Vec::new();
            for (p, s) in picks {
                let profile = &model.profiles[p % model.profiles.len()];
                let options = shapes(model, profile);
                let mut next = wanted.clone();
                next.push(WantedInstance { profile_id: profile.id, compute: options[s % options.len()] });
                if planner.place(&next, &[]).is_ok() {
                    wanted = next;
                }
            }
            let sim = SimBackend::in_memory(&NodeSpec::parse(&format!("1x{},mig=on", model.name)).unwrap());
            let plan = planner.reconfigure(&[], &Wanted::Profiles(wanted)).unwrap();
            prop_assert!(tessera_mig::validate(model, &plan.target).is_empty());
            execute_plan(&sim, 0, &plan).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let v = gpu_view(&sim, 0).unwrap();
            prop_assert_eq!(v.layout(), plan.target.clone());
            prop_assert!(v.instances.iter().all(|i| i.instance.compute != ComputeShape::Other));
        }
    }
}
