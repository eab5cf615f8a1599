//! Data-driven checks of validation, placement, reconfiguration and fragmentation.

use tessera_mig::layout::instance_label;
use tessera_mig::planner::Blocker;
use tessera_mig::{
    ComputeShape, CurrentInstance, GpuModel, Instance, PlaceError, Planner, ReconfigureError, Step, Wanted,
    WantedInstance, catalog, validate,
};

fn model(name: &str) -> &'static GpuModel {
    catalog().model(name).unwrap()
}

/// `"3g.20gb@4"` → Instance.
fn inst(m: &GpuModel, s: &str) -> Instance {
    let (name, start) = s.split_once('@').unwrap();
    Instance::new(m.profile(name).unwrap().id, start.parse().unwrap())
}

fn insts(m: &GpuModel, s: &str) -> Vec<Instance> {
    s.split_whitespace().map(|x| inst(m, x)).collect()
}

fn wants(m: &GpuModel, s: &str) -> Vec<WantedInstance> {
    s.split_whitespace().map(|n| WantedInstance::new(m.profile(n).unwrap().id)).collect()
}

fn render(m: &GpuModel, layout: &[Instance]) -> String {
    layout.iter().map(|i| instance_label(m, i)).collect::<Vec<_>>().join(" ")
}

#[test]
fn validate_names_every_violation() {
    let cases: &[(&str, &str, &[&str])] = &[
        ("A100-40GB", "3g.20gb@4 2g.10gb@0 1g.5gb@2 1g.5gb@3", &[]),
        ("A100-40GB", "3g.20gb@2", &["3g.20gb cannot start at unit 2; legal starts are {0,4}"]),
        ("A100-40GB", "4g.20gb@0 2g.10gb@2", &["4g.20gb@0 and 2g.10gb@2 overlap on placement unit(s) {2,3}"]),
        ("A100-40GB", "1g.5gb+me@0 1g.5gb+me@1", &["2 × 1g.5gb+me but at most 1 per GPU", "optical-flow engine"]),
        ("A30", "1g.6gb+me@0 2g.12gb+me@2", &["1g.6gb+me@0 and 2g.12gb+me@2 each need the GPU's optical-flow engine"]),
        (
            "RTX-PRO-6000",
            "1g.24gb+me.all@0 1g.24gb@3",
            &["1g.24gb+me.all@0 takes every media engine, so only -me profiles may share the GPU, not 1g.24gb@3"],
        ),
        ("RTX-PRO-6000", "1g.24gb+me.all@0 1g.24gb-me@3 2g.48gb-me@6", &[]),
        ("A100-40GB", "7g.40gb@0 1g.5gb@6", &["overlap"]),
    ];
    for (model_name, layout, expected) in cases {
        let m = model(model_name);
        let v: Vec<String> = validate(m, &insts(m, layout)).iter().map(ToString::to_string).collect();
        if expected.is_empty() {
            assert!(v.is_empty(), "{model_name} {layout}: {v:?}");
        }
        for e in *expected {
            assert!(v.iter().any(|x| x.contains(e)), "{model_name} {layout}: expected '{e}' in {v:?}");
        }
    }
}

#[test]
fn place_keeps_free_space_useful() {
    // (model, existing, wanted, expected resulting layout)
    let cases: &[(&str, &str, &str, &str)] = &[
        // A lone 1g goes to the end, leaving 4g@0 and 3g/2g room.
        ("A100-40GB", "", "1g.5gb", "1g.5gb@6"),
        ("A100-40GB", "", "3g.20gb", "3g.20gb@4"),
        ("A100-40GB", "", "3g.20gb 1g.5gb", "1g.5gb@0 3g.20gb@4"),
        (
            "A100-40GB",
            "",
            "1g.5gb 1g.5gb 1g.5gb 1g.5gb 1g.5gb 1g.5gb 1g.5gb",
            "1g.5gb@0 1g.5gb@1 1g.5gb@2 1g.5gb@3 1g.5gb@4 1g.5gb@5 1g.5gb@6",
        ),
        ("A100-40GB", "", "4g.20gb 3g.20gb", "4g.20gb@0 3g.20gb@4"),
        // Existing instances never move.
        ("A100-40GB", "1g.5gb@0", "3g.20gb 2g.10gb", "1g.5gb@0 2g.10gb@2 3g.20gb@4"),
        ("H100-80GB", "3g.40gb@0", "2g.20gb", "3g.40gb@0 2g.20gb@4"),
        // Two 1g.20gb take the upper half, so a 4g still fits.
        ("H100-80GB", "", "1g.20gb 1g.20gb", "1g.20gb@4 1g.20gb@6"),
        ("A30", "", "1g.6gb 2g.12gb", "2g.12gb@0 1g.6gb@2"),
        ("RTX-PRO-6000", "", "1g.24gb", "1g.24gb@0"),
    ];
    for (model_name, existing, wanted, expected) in cases {
        let m = model(model_name);
        let pl = Planner::new(m);
        let got =
            pl.place(&wants(m, wanted), &insts(m, existing)).unwrap_or_else(|e| panic!("{model_name} {wanted}: {e}"));
        assert_eq!(render(m, &got.layout), *expected, "{model_name} +{wanted}");
        assert!(validate(m, &got.layout).is_empty());
    }
}

#[test]
fn infeasible_placements_say_why_and_offer_the_nearest_alternative() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "A100-40GB",
            "",
            "4g.20gb 4g.20gb",
            "two 4g.20gb both need start 0 (its only placement); 4g.20gb + 3g.20gb fits",
        ),
        (
            "A100-40GB",
            "",
            "3g.20gb 3g.20gb 1g.5gb",
            "needs 9 placement units but only 8 of 8 are free; 3g.20gb + 3g.20gb fits",
        ),
        ("A100-40GB", "", "1g.5gb+me 1g.5gb+me", "2 × 1g.5gb+me asked but at most 1 fit on one A100-40GB"),
        ("A100-40GB", "4g.20gb@0", "4g.20gb", "4g.20gb both need start 0"),
        (
            "A100-40GB",
            "1g.5gb@0 1g.5gb@4",
            "3g.20gb",
            "3g.20gb needs start 0 or 4 (size 4), but those units are taken by 1g.5gb@0, 1g.5gb@4; 2g.10gb fits next to the existing instances",
        ),
        ("H100-80GB", "", "7g.80gb 1g.10gb", "needs 8 compute slices but only 7 of 7 are free; 7g.80gb fits"),
    ];
    for (model_name, existing, wanted, expected) in cases {
        let m = model(model_name);
        let err = Planner::new(m).place(&wants(m, wanted), &insts(m, existing)).unwrap_err();
        assert!(matches!(err, PlaceError::Infeasible { .. }));
        assert!(
            err.to_string().contains(expected),
            "{model_name} {existing} + {wanted}:\n got: {err}\nwant: {expected}"
        );
    }
}

#[test]
fn place_rejects_invalid_existing_layouts_and_unknown_profiles() {
    let m = model("A100-40GB");
    let pl = Planner::new(m);
    let err = pl.place(&wants(m, "1g.5gb"), &insts(m, "3g.20gb@4 4g.20gb@0 1g.5gb@4")).unwrap_err();
    assert!(err.to_string().contains("overlap"), "{err}");
    let err = pl.place(&[WantedInstance::new(4242)], &[]).unwrap_err();
    assert_eq!(err, PlaceError::UnknownProfile { model: "A100-40GB".into(), profile_id: 4242 });
}

#[test]
fn per_gpu_numa_puts_one_instance_in_each_node() {
    let m = model("H100-80GB");
    let pl = Planner::new(m);
    for (profile, expected) in
        [("3g.40gb", "3g.40gb@0 3g.40gb@4"), ("2g.20gb", "2g.20gb@0 2g.20gb@4"), ("1g.10gb", "1g.10gb@0 1g.10gb@6")]
    {
        let got = pl.place_per_gpu_numa(m.profile(profile).unwrap().id, &[]).unwrap();
        assert_eq!(render(m, &got.layout), expected);
        let nodes: Vec<Option<u8>> = got
            .placed
            .iter()
            .map(|i| m.gpu_numa_node(i.start, m.profile_by_id(i.profile_id).unwrap().placement_size))
            .collect();
        assert_eq!(nodes, [Some(0), Some(1)]);
    }
    let err = pl.place_per_gpu_numa(m.profile("7g.80gb").unwrap().id, &[]).unwrap_err().to_string();
    assert!(err.contains("spans both GPU NUMA nodes"), "{err}");
    let err = pl.place_per_gpu_numa(m.profile("4g.40gb").unwrap().id, &[]).unwrap_err().to_string();
    assert!(err.contains("at most 1 per GPU; one 3g.40gb per GPU NUMA node fits"), "{err}");
    // Around an existing instance in node 1.
    let got = pl.place_per_gpu_numa(m.profile("1g.10gb").unwrap().id, &insts(m, "3g.40gb@4")).unwrap_err().to_string();
    assert!(got.contains("no free placement inside every node"), "{got}");
    let rtx = model("RTX-PRO-6000");
    let err = Planner::new(rtx).place_per_gpu_numa(14, &[]).unwrap_err().to_string();
    assert!(err.contains("no known GPU-internal NUMA nodes"), "{err}");
}

#[test]
fn fragmentation_is_reported_in_numbers() {
    let m = model("A100-40GB");
    let pl = Planner::new(m);
    // Two 3g.20gb: one compute slice can never be used.
    let r = pl.fragmentation(&insts(m, "3g.20gb@0 3g.20gb@4")).unwrap();
    assert_eq!((r.free_compute_slices, r.usable_compute_slices, r.unusable_compute_slices), (1, 0, 1));
    assert!(r.free_units.is_empty());
    // Seven 1g: memory unit 7 is free but stranded.
    let seven = insts(m, "1g.5gb@0 1g.5gb@1 1g.5gb@2 1g.5gb@3 1g.5gb@4 1g.5gb@5 1g.5gb@6");
    let r = pl.fragmentation(&seven).unwrap();
    assert_eq!((r.free_units.clone(), r.stranded_units.clone(), r.unusable_compute_slices), (vec![7], vec![7], 0));
    // 1g in the middle of the upper half strands compute.
    let r = pl.fragmentation(&insts(m, "4g.20gb@0 1g.5gb@5")).unwrap();
    assert_eq!((r.free_compute_slices, r.usable_compute_slices, r.unusable_compute_slices), (2, 2, 0));
    let fit = |name: &str| r.fits.iter().find(|f| f.profile == name).unwrap().count;
    assert_eq!((fit("1g.5gb"), fit("2g.10gb"), fit("3g.20gb"), fit("1g.10gb")), (2, 0, 0, 1));
    // Empty GPU: everything usable.
    let r = pl.fragmentation(&[]).unwrap();
    assert_eq!((r.free_compute_slices, r.usable_compute_slices, r.unusable_compute_slices), (7, 7, 0));
    assert_eq!(r.free_units, (0..8).collect::<Vec<u8>>());
}

fn current(m: &GpuModel, s: &str) -> Vec<CurrentInstance> {
    // "3g.20gb@4!" marks a busy instance; GPU instance ids are made up.
    s.split_whitespace()
        .enumerate()
        .map(|(k, x)| {
            let busy = x.ends_with('!');
            CurrentInstance { instance: inst(m, x.trim_end_matches('!')), busy, gpu_instance_id: Some(100 + k as u32) }
        })
        .collect()
}

fn render_steps(m: &GpuModel, steps: &[Step]) -> String {
    steps
        .iter()
        .map(|s| match s {
            Step::Destroy { instance, .. } => format!("-{}", instance_label(m, instance)),
            Step::Create { instance } => format!("+{}", instance_label(m, instance)),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn reconfigure_plans_touch_only_idle_instances() {
    // (model, current (! = busy), wanted profiles, expected steps)
    let cases: &[(&str, &str, &str, &str)] = &[
        // Already right: nothing to do (idempotent).
        ("A100-40GB", "3g.20gb@4! 2g.10gb@0", "3g.20gb 2g.10gb", ""),
        // Add next to busy work.
        ("A100-40GB", "3g.20gb@4!", "3g.20gb 1g.5gb 1g.5gb", "+1g.5gb@0 +1g.5gb@1"),
        // Replace idle instances, keep the busy one.
        ("A100-40GB", "3g.20gb@4! 1g.5gb@0 1g.5gb@1", "3g.20gb 2g.10gb", "-1g.5gb@0 -1g.5gb@1 +2g.10gb@0"),
        // Keep idle instances that the wish can use, even if not where we'd put them now.
        ("H100-80GB", "1g.10gb@5 4g.40gb@0!", "4g.40gb 1g.10gb 2g.20gb", "-1g.10gb@5 +2g.20gb@4 +1g.10gb@6"),
        ("H100-80GB", "1g.10gb@6 4g.40gb@0!", "4g.40gb 1g.10gb 2g.20gb", "+2g.20gb@4"),
        // The idle 1g at unit 5 blocks 2g@4, the only 2g placement left next to a 4g: it moves.
        ("H100-80GB", "1g.10gb@5", "1g.10gb 2g.20gb 4g.40gb", "-1g.10gb@5 +4g.40gb@0 +2g.20gb@4 +1g.10gb@6"),
        ("H100-80GB", "1g.10gb@6", "1g.10gb 2g.20gb 4g.40gb", "+4g.40gb@0 +2g.20gb@4"),
    ];
    for (model_name, cur, wanted, expected) in cases {
        let m = model(model_name);
        let pl = Planner::new(m);
        let plan = pl
            .reconfigure(&current(m, cur), &Wanted::Profiles(wants(m, wanted)))
            .unwrap_or_else(|e| panic!("{model_name} {cur} -> {wanted}: {e}"));
        assert_eq!(render_steps(m, &plan.steps), *expected, "{model_name} {cur} -> {wanted}");
        assert!(validate(m, &plan.target).is_empty());
    }
}

#[test]
fn reconfigure_names_the_busy_instances_that_block() {
    let m = model("A100-40GB");
    let pl = Planner::new(m);
    // A 7g needs the whole GPU; the busy 1g blocks it.
    let err = pl.reconfigure(&current(m, "1g.5gb@6! 3g.20gb@0"), &Wanted::Profiles(wants(m, "7g.40gb"))).unwrap_err();
    let ReconfigureError::BusyInstancesBlock { blockers, .. } = &err else { panic!("{err}") };
    assert_eq!(blockers.iter().map(|b: &Blocker| b.label.as_str()).collect::<Vec<_>>(), ["1g.5gb@6"]);
    assert!(err.to_string().contains("1g.5gb@6 (GPU instance 100)"), "{err}");
    // Busy 1g at unit 2 blocks the second 3g... no: it blocks 3g@0, so two 3g are impossible.
    let err =
        pl.reconfigure(&current(m, "1g.5gb@2!"), &Wanted::Profiles(wants(m, "3g.20gb 3g.20gb 1g.5gb"))).unwrap_err();
    assert!(matches!(err, ReconfigureError::Infeasible { .. }), "{err}");
    let err = pl.reconfigure(&current(m, "1g.5gb@2!"), &Wanted::Profiles(wants(m, "3g.20gb 3g.20gb"))).unwrap_err();
    assert!(err.to_string().contains("the wanted profiles do not include them"), "{err}");
    let err = pl.reconfigure(&current(m, "1g.5gb@2!"), &Wanted::Profiles(wants(m, "1g.5gb 4g.20gb"))).unwrap_err();
    assert!(err.to_string().contains("busy instance(s) block the wanted layout on A100-40GB: 1g.5gb@2"), "{err}");
    // An explicit layout that drops a busy instance.
    let err = pl.reconfigure(&current(m, "3g.20gb@0!"), &Wanted::Layout(insts(m, "4g.20gb@0"))).unwrap_err();
    assert!(err.to_string().contains("3g.20gb@0"), "{err}");
    // An explicit layout around busy work.
    let plan =
        pl.reconfigure(&current(m, "3g.20gb@0! 1g.5gb@4"), &Wanted::Layout(insts(m, "3g.20gb@0 3g.20gb@4"))).unwrap();
    assert_eq!(render_steps(m, &plan.steps), "-1g.5gb@4 +3g.20gb@4");
}

#[test]
fn compute_shapes_are_part_of_an_instance() {
    let m = model("A100-40GB");
    let pl = Planner::new(m);
    let three = m.profile("3g.20gb").unwrap().id;
    let wanted = vec![WantedInstance { profile_id: three, compute: ComputeShape::Slices(1) }];
    let cur = vec![CurrentInstance { instance: Instance::new(three, 4), busy: false, gpu_instance_id: Some(2) }];
    let plan = pl.reconfigure(&cur, &Wanted::Profiles(wanted)).unwrap();
    assert_eq!(render_steps(m, &plan.steps), "-3g.20gb@4 +1c.3g.20gb@4");
    let bad = Instance { profile_id: m.profile("4g.20gb").unwrap().id, start: 0, compute: ComputeShape::Slices(3) };
    let v = validate(m, &[bad]);
    assert!(v.iter().any(|x| x.to_string().contains("no compute-instance profile of 3 slice")), "{v:?}");
}
