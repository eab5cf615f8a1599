//! `export` writes what `parse` + `resolve` read back: the same MIG state for every GPU.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use proptest::prelude::*;
use tessera_mig::layout::ci_placements;
use tessera_mig::{ComputeShape, GpuModel, Planner, WantedInstance, catalog};
use tessera_migparted::{
    DeviceSummary, DeviceTarget, ExportDevice, compute_instance_types, export, parse, regrouped, resolve,
};

fn planners() -> &'static [Planner<'static>] {
    static PLANNERS: OnceLock<Vec<Planner<'static>>> = OnceLock::new();
    PLANNERS.get_or_init(|| catalog().models.iter().map(Planner::new).collect())
}

/// A feasible set of GPU instances on `model`, chosen by `picks`: each pick names a profile and
/// a compute shape (one compute instance of some size, or a split into several); it is kept
/// when the GPU can still hold everything kept so far.
fn feasible_wanted(planner: &Planner<'static>, picks: &[(usize, usize)]) -> Vec<WantedInstance> {
    let model = planner.model();
    let mut kept: Vec<WantedInstance> = Vec::new();
    for &(p, c) in picks {
        let profile = &model.profiles[p % model.profiles.len()];
        let mut shapes: Vec<ComputeShape> = vec![ComputeShape::Full];
        let offered = model.compute_instance_profiles(profile.compute_slices);
        for ci in offered.iter().filter(|ci| ci.compute_slices < profile.compute_slices) {
            shapes.push(ComputeShape::Slices(ci.compute_slices));
            // As many of this size as fit, and this size with one 1-slice instance beside it.
            for sizes in [vec![ci.compute_slices; usize::from(ci.max_count)], vec![ci.compute_slices, 1]] {
                if let Some(shape @ ComputeShape::Split(s)) = ComputeShape::from_sizes(profile.compute_slices, &sizes)
                    && ci_placements(model, profile, s.as_slice()).is_ok()
                {
                    shapes.push(shape);
                }
            }
        }
        let compute = shapes[c % shapes.len()];
        let mut next = kept.clone();
        next.push(WantedInstance { profile_id: profile.id, compute });
        if planner.place(&next, &[]).is_ok() {
            kept = next;
        }
    }
    kept.sort();
    kept
}

/// What `tessera mig export` hands `export`: one (name, 1) per compute instance, as mig-parted
/// counts them (`export` must add repeated names up).
fn device_types(model: &GpuModel, wanted: &[WantedInstance]) -> Vec<(String, u32)> {
    wanted
        .iter()
        .flat_map(|w| compute_instance_types(model.profile_by_id(w.profile_id).unwrap(), w.compute))
        .map(|name| (name, 1))
        .collect()
}

/// What the export reads back as: the same GPU instances, unless mig-parted's grouping makes
/// others of the counts (then `regrouped` says which, and the CLI warns).
fn read_back(model: &GpuModel, wanted: &[WantedInstance]) -> Vec<WantedInstance> {
    let gis: Vec<(&tessera_mig::Profile, Vec<u8>)> = wanted
        .iter()
        .map(|w| {
            let p = model.profile_by_id(w.profile_id).unwrap();
            (p, w.compute.ci_sizes(p.compute_slices).unwrap())
        })
        .collect();
    regrouped(model, &gis).unwrap_or_else(|| wanted.to_vec())
}

#[derive(Debug, Clone)]
struct Gpu {
    index: u32,
    model: usize,
    enabled: bool,
    picks: Vec<(usize, usize)>,
}

fn gpus() -> impl Strategy<Value = Vec<Gpu>> {
    let n_models = catalog().models.len();
    prop::collection::btree_set(0u32..12, 0..6).prop_flat_map(move |indices: BTreeSet<u32>| {
        let n = indices.len();
        // Same model for the whole node half of the time (the common case), mixed otherwise.
        (
            Just(indices),
            0..n_models,
            any::<bool>(),
            prop::collection::vec(
                (0..n_models, any::<bool>(), prop::collection::vec((0usize..32, 0usize..8), 0..9)),
                n,
            ),
        )
            .prop_map(|(indices, node_model, mixed, per_gpu)| {
                indices
                    .into_iter()
                    .zip(per_gpu)
                    .map(|(index, (model, enabled, picks))| Gpu {
                        index,
                        model: if mixed { model } else { node_model },
                        enabled,
                        picks,
                    })
                    .collect()
            })
    })
}

fn config_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("current".to_string()),
        Just("all-1g.10gb".to_string()),
        Just("yes".to_string()),
        Just("1".to_string()),
        Just("a b: c".to_string()),
        Just("\"quoted\" \\ name".to_string()),
        Just("ünïcode".to_string()),
        "[a-z0-9.+-]{1,12}",
    ]
}

fn strip(targets: Vec<DeviceTarget>) -> Vec<(u32, Option<String>, bool, Vec<WantedInstance>)> {
    targets.into_iter().map(|t| (t.index, t.model.map(|m| m.name.clone()), t.mig_enabled, t.wanted)).collect()
}

fn check_round_trip(gpus: &[Gpu], name: &str) -> Result<(), TestCaseError> {
    let models = &catalog().models;
    let mut export_devices = Vec::new();
    let mut summaries = Vec::new();
    let mut expected = Vec::new();
    // A layout whose compute instances mig-parted groups into GPU instances that do not fit
    // together (two 3g.20gb of 2c + 1c each read back as three 3g.20gb) cannot be exported
    // faithfully: the CLI warns, and applying the export must be refused, never half-done.
    let mut unplaceable = false;
    for g in gpus {
        let model = &models[g.model];
        let wanted = if g.enabled { feasible_wanted(&planners()[g.model], &g.picks) } else { Vec::new() };
        export_devices.push(ExportDevice {
            index: g.index,
            mig_enabled: g.enabled,
            device_types: device_types(model, &wanted),
        });
        let pci = model.pci_device_id_values().next().unwrap_or(0xFFFF);
        summaries.push(DeviceSummary { index: g.index, pci_device_id: pci, pci_subsystem_id: 0, model: Some(model) });
        let back = read_back(model, &wanted);
        // One GPU instance per profile always reads back as it is: its compute instances are
        // already in mig-parted's order, and each prefix of a split fits.
        let ids: BTreeSet<u32> = wanted.iter().map(|w| w.profile_id).collect();
        if ids.len() == wanted.len() {
            prop_assert_eq!(&back, &wanted);
        }
        unplaceable |= planners()[g.model].place(&back, &[]).is_err();
        expected.push((g.index, Some(model.name.clone()), g.enabled, back));
    }
    let yaml = export(&export_devices, name);
    let file = parse(&yaml, "export.yaml").map_err(|e| TestCaseError::fail(format!("{e}\n{yaml}")))?;
    prop_assert_eq!(file.config_names(), vec![name]);
    let resolved = resolve(&file, name, &summaries);
    if unplaceable {
        prop_assert!(resolved.is_err(), "an export that reads back as a layout that does not fit resolved:\n{}", yaml);
        return Ok(());
    }
    let targets = resolved.map_err(|e| TestCaseError::fail(format!("{e}\n{yaml}")))?;
    prop_assert_eq!(strip(targets), expected, "{}", yaml);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn export_parses_and_resolves_to_the_same_state(gpus in gpus(), name in config_name()) {
        check_round_trip(&gpus, &name)?;
    }
}

#[test]
fn every_gpu_in_one_state_exports_as_all() {
    let a100 = catalog().model("A100-40GB").unwrap();
    let devices: Vec<ExportDevice> = (0..4)
        .map(|index| ExportDevice {
            index,
            mig_enabled: true,
            device_types: vec![("3g.20gb".into(), 1), ("1c.4g.20gb".into(), 1)],
        })
        .collect();
    let yaml = export(&devices, "current");
    assert_eq!(
        yaml,
        "version: v1\nmig-configs:\n  current:\n    - devices: all\n      mig-enabled: true\n      mig-devices:\n        \"1c.4g.20gb\": 1\n        \"3g.20gb\": 1\n"
    );
    let file = parse(&yaml, "x").unwrap();
    let summaries: Vec<DeviceSummary> = (0..4)
        .map(|index| DeviceSummary { index, pci_device_id: 0x20B0, pci_subsystem_id: 0, model: Some(a100) })
        .collect();
    let targets = resolve(&file, "current", &summaries).unwrap();
    assert_eq!(targets.len(), 4);
    let four_g = a100.profile("4g.20gb").unwrap().id;
    let three_g = a100.profile("3g.20gb").unwrap().id;
    let mut want = vec![
        WantedInstance { profile_id: four_g, compute: ComputeShape::Slices(1) },
        WantedInstance { profile_id: three_g, compute: ComputeShape::Full },
    ];
    want.sort();
    assert!(targets.iter().all(|t| t.mig_enabled && t.wanted == want));
}

#[test]
fn no_gpus_exports_a_config_that_selects_nothing() {
    let yaml = export(&[], "current");
    let file = parse(&yaml, "x").unwrap();
    assert_eq!(resolve(&file, "current", &[]).unwrap(), Vec::new());
}

/// The examples, exported as mig-parted counts them, read back as the same GPU
/// instances; and a state mig-parted's grouping cannot give back, named by `regrouped`.
#[test]
fn split_gpu_instances_export_as_compute_instance_counts() {
    let a100 = catalog().model("A100-40GB").unwrap();
    let h100 = catalog().model("H100-80GB").unwrap();
    let split = |sizes: &[u8]| ComputeShape::Split(tessera_mig::layout::CiSizes::new(sizes).unwrap());
    let gi = |m: &GpuModel, name: &str, compute| WantedInstance { profile_id: m.profile(name).unwrap().id, compute };
    let cases: Vec<(&GpuModel, Vec<WantedInstance>, &str, bool)> = vec![
        (a100, vec![gi(a100, "3g.20gb", split(&[1, 1, 1]))], "\"1c.3g.20gb\": 3\n", true),
        (h100, vec![gi(h100, "7g.80gb", split(&[1; 7]))], "\"1c.7g.80gb\": 7\n", true),
        (a100, vec![gi(a100, "3g.20gb", split(&[2, 1]))], "\"1c.3g.20gb\": 1\n        \"2c.3g.20gb\": 1\n", true),
        (a100, vec![gi(a100, "3g.20gb", ComputeShape::Full); 2], "\"3g.20gb\": 2\n", true),
        // 1c in one 3g and 1c ×2 in another: three 1c, which mig-parted puts in one 3g.
        (
            a100,
            vec![gi(a100, "3g.20gb", ComputeShape::Slices(1)), gi(a100, "3g.20gb", split(&[1, 1]))],
            "\"1c.3g.20gb\": 3\n",
            false,
        ),
    ];
    for (model, wanted, counts, same) in cases {
        let devices = [ExportDevice { index: 0, mig_enabled: true, device_types: device_types(model, &wanted) }];
        let yaml = export(&devices, "current");
        assert!(yaml.ends_with(&format!("mig-devices:\n        {counts}")), "{yaml}");
        let summary = DeviceSummary {
            index: 0,
            pci_device_id: model.pci_device_id_values().next().unwrap(),
            pci_subsystem_id: 0,
            model: Some(model),
        };
        let targets = resolve(&parse(&yaml, "x").unwrap(), "current", &[summary]).unwrap();
        let mut sorted = wanted.clone();
        sorted.sort();
        assert_eq!(targets[0].wanted == sorted, same, "{yaml}");
        assert_eq!(read_back(model, &wanted), targets[0].wanted, "{yaml}");
    }
}
