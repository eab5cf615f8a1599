//! `export` writes what `parse` + `resolve` read back: the same MIG state for every GPU.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use proptest::prelude::*;
use tessera_mig::layout::device_type_name;
use tessera_mig::{ComputeShape, GpuModel, Planner, WantedInstance, catalog};
use tessera_migparted::{DeviceSummary, DeviceTarget, ExportDevice, export, parse, resolve};

fn planners() -> &'static [Planner<'static>] {
    static PLANNERS: OnceLock<Vec<Planner<'static>>> = OnceLock::new();
    PLANNERS.get_or_init(|| catalog().models.iter().map(Planner::new).collect())
}

/// A feasible set of MIG devices on `model`, chosen by `picks`: each pick names a profile (and
/// a compute split); it is kept when the GPU can still hold everything kept so far.
fn feasible_wanted(planner: &Planner<'static>, picks: &[(usize, usize)]) -> Vec<WantedInstance> {
    let model = planner.model();
    let mut kept: Vec<WantedInstance> = Vec::new();
    for &(p, c) in picks {
        let profile = &model.profiles[p % model.profiles.len()];
        let mut slices: Vec<u8> =
            model.compute_instance_profiles(profile.compute_slices).iter().map(|ci| ci.compute_slices).collect();
        slices.push(profile.compute_slices);
        slices.sort_unstable();
        slices.dedup();
        let chosen = slices[c % slices.len()];
        let compute = if chosen == profile.compute_slices { ComputeShape::Full } else { ComputeShape::Slices(chosen) };
        let mut next = kept.clone();
        next.push(WantedInstance { profile_id: profile.id, compute });
        if planner.place(&next, &[]).is_ok() {
            kept = next;
        }
    }
    kept.sort();
    kept
}

fn device_types(model: &GpuModel, wanted: &[WantedInstance]) -> Vec<(String, u32)> {
    // One (name, 1) per instance: `export` must add repeated names up.
    wanted
        .iter()
        .map(|w| {
            let p = model.profile_by_id(w.profile_id).unwrap();
            (device_type_name(p, w.compute), 1)
        })
        .collect()
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
    for g in gpus {
        let model = &models[g.model];
        let wanted = if g.enabled { feasible_wanted(&planners()[g.model], &g.picks) } else { Vec::new() };
        export_devices.push(ExportDevice {
            index: g.index,
            mig_enabled: g.enabled,
            device_types: device_types(model, &wanted),
        });
        let pci = model.pci_device_id_values().next().unwrap_or(0xFFFF);
        summaries.push(DeviceSummary { index: g.index, pci_device_id: pci, model: Some(model) });
        expected.push((g.index, Some(model.name.clone()), g.enabled, wanted));
    }
    let yaml = export(&export_devices, name);
    let file = parse(&yaml, "export.yaml").map_err(|e| TestCaseError::fail(format!("{e}\n{yaml}")))?;
    prop_assert_eq!(file.config_names(), vec![name]);
    let targets = resolve(&file, name, &summaries).map_err(|e| TestCaseError::fail(format!("{e}\n{yaml}")))?;
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
    let summaries: Vec<DeviceSummary> =
        (0..4).map(|index| DeviceSummary { index, pci_device_id: 0x20B0, model: Some(a100) }).collect();
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
