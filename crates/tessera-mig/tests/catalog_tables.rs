//! The catalog against the researched reference data: look-ups, per-model placement tables, and
//! a field-by-field cross-check with `shared/reference/mig-profiles.yaml`.

use tessera_mig::catalog::{CatalogError, ProfileKind};
use tessera_mig::{Planner, catalog};

#[test]
fn models_are_found_by_short_name_product_name_and_pci_id() {
    let cases: &[(&str, &str)] = &[
        ("A100-40GB", "A100-40GB"),
        ("a100-40gb", "A100-40GB"),
        ("NVIDIA A100-SXM4-40GB", "A100-40GB"),
        ("A100-SXM4-40GB", "A100-40GB"),
        ("0x20B0", "A100-40GB"),
        ("20b1", "A100-40GB"),
        ("0x20B010DE", "A100-40GB"),
        ("A100-80GB", "A100-80GB"),
        ("NVIDIA A100 80GB PCIe", "A100-80GB"),
        ("A30", "A30-24GB"),
        ("NVIDIA A30", "A30-24GB"),
        ("0x20B7", "A30-24GB"),
        ("H100-80GB", "H100-80GB"),
        ("H100-SXM5-80GB", "H100-80GB"),
        ("NVIDIA H100 80GB HBM3", "H100-80GB"),
        ("0x2330", "H100-80GB"),
        ("H100-PCIE-80GB", "H100-PCIE-80GB"),
        ("NVIDIA H100 PCIe", "H100-PCIE-80GB"),
        ("NVIDIA H100 NVL", "H100-94GB"),
        ("H100-94GB", "H100-94GB"),
        ("GH200", "H100-96GB"),
        ("NVIDIA GH200 480GB", "H100-96GB"),
        ("H200", "H200-141GB"),
        ("NVIDIA H200", "H200-141GB"),
        ("0x2335", "H200-141GB"),
        ("B200", "B200-180GB"),
        ("NVIDIA B200", "B200-180GB"),
        ("GB200", "GB200-186GB"),
        ("0x2941", "GB200-186GB"),
        ("RTX-PRO-6000", "RTX-PRO-6000"),
        ("NVIDIA RTX PRO 6000 Blackwell Server Edition", "RTX-PRO-6000"),
        ("0x2BB5", "RTX-PRO-6000"),
    ];
    for (query, want) in cases {
        let got = catalog().model(query).unwrap_or_else(|e| panic!("{query}: {e}"));
        assert_eq!(&got.name, want, "query {query}");
    }
}

#[test]
fn unknown_model_suggests_closest_names() {
    let err = catalog().model("A100-40G").unwrap_err();
    let CatalogError::UnknownModel { suggestions, .. } = &err else { panic!("{err:?}") };
    assert_eq!(suggestions.first().map(String::as_str), Some("A100-40GB"), "{err}");
    assert!(err.to_string().contains("did you mean"), "{err}");
    let err = catalog().model("H10-80GB").unwrap_err();
    assert!(err.to_string().contains("H100-80GB"), "{err}");
}

#[test]
fn profiles_are_found_by_name_and_id() {
    let m = catalog().model("A100-40GB").unwrap();
    assert_eq!(m.profile("3g.20gb").unwrap().id, 9);
    assert_eq!(m.profile("1g.5gb+me").unwrap().id, 20);
    assert_eq!(m.profile("MIG 1g.5gb").unwrap().id, 19);
    assert_eq!(m.profile("19").unwrap().name, "1g.5gb");
    assert_eq!(m.profile("0").unwrap().name, "7g.40gb");
    let err = m.profile("3g.20g").unwrap_err();
    assert!(err.to_string().contains("did you mean '3g.20gb'"), "{err}");
    let gb200 = catalog().model("GB200").unwrap();
    assert_eq!(gb200.profile("1g.24gb").unwrap().name, "1g.23gb", "early-firmware name (aka)");
}

/// `(name, id, placements, size, max)` as `nvidia-smi mig -lgip/-lgipp` report them, from the
/// reference tables (mig-hardware.md §3).
type Row = (&'static str, u32, &'static [u8], u8, u8);

const EIGHT_UNIT_IDS: [(u32, &[u8], u8, u8); 7] = [
    (19, &[0, 1, 2, 3, 4, 5, 6], 1, 7),
    (20, &[0, 1, 2, 3, 4, 5, 6], 1, 1),
    (15, &[0, 2, 4, 6], 2, 4),
    (14, &[0, 2, 4], 2, 3),
    (9, &[0, 4], 4, 2),
    (5, &[0], 4, 1),
    (0, &[0], 8, 1),
];

fn eight_unit(names: [&'static str; 7]) -> Vec<Row> {
    names.iter().zip(EIGHT_UNIT_IDS).map(|(n, (id, pl, size, max))| (*n, id, pl, size, max)).collect()
}

fn check_table(model: &str, rows: &[Row]) {
    let m = catalog().model(model).unwrap();
    assert_eq!(m.profiles.len(), rows.len(), "{model}: profile count");
    for (name, id, placements, size, max) in rows {
        let p = m.profile(name).unwrap_or_else(|e| panic!("{model}: {e}"));
        assert_eq!(
            (p.id, p.placements.as_slice(), p.placement_size, p.max_count),
            (*id, *placements, *size, *max),
            "{model} {name}"
        );
    }
}

#[test]
fn a30_table() {
    check_table(
        "A30",
        &[
            ("1g.6gb", 14, &[0, 1, 2, 3], 1, 4),
            ("1g.6gb+me", 21, &[0, 1, 2, 3], 1, 1),
            ("2g.12gb", 5, &[0, 2], 2, 2),
            ("2g.12gb+me", 6, &[0, 2], 2, 1),
            ("4g.24gb", 0, &[0], 4, 1),
        ],
    );
}

#[test]
fn eight_unit_tables() {
    let tables: &[(&str, [&str; 7])] = &[
        ("A100-40GB", ["1g.5gb", "1g.5gb+me", "1g.10gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"]),
        ("A100-80GB", ["1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"]),
        ("H100-80GB", ["1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"]),
        ("H100-PCIE-80GB", ["1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"]),
        ("H100-94GB", ["1g.12gb", "1g.12gb+me", "1g.24gb", "2g.24gb", "3g.47gb", "4g.47gb", "7g.94gb"]),
        ("H100-96GB", ["1g.12gb", "1g.12gb+me", "1g.24gb", "2g.24gb", "3g.48gb", "4g.48gb", "7g.96gb"]),
        ("H200-141GB", ["1g.18gb", "1g.18gb+me", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb"]),
        ("GH200-144GB", ["1g.18gb", "1g.18gb+me", "1g.36gb", "2g.36gb", "3g.72gb", "4g.72gb", "7g.144gb"]),
        ("B200-180GB", ["1g.23gb", "1g.23gb+me", "1g.45gb", "2g.45gb", "3g.90gb", "4g.90gb", "7g.180gb"]),
        ("GB200-186GB", ["1g.23gb", "1g.23gb+me", "1g.47gb", "2g.47gb", "3g.93gb", "4g.93gb", "7g.186gb"]),
    ];
    for (model, names) in tables {
        check_table(model, &eight_unit(*names));
    }
}

#[test]
fn rtx_pro_6000_table_uses_a_twelve_unit_grid() {
    check_table(
        "RTX-PRO-6000",
        &[
            ("1g.24gb", 14, &[0, 3, 6, 9], 3, 4),
            ("1g.24gb+me", 21, &[0, 3, 6, 9], 3, 1),
            ("1g.24gb+gfx", 47, &[0, 3, 6, 9], 3, 4),
            ("1g.24gb+me.all", 65, &[0, 3, 6, 9], 3, 1),
            ("1g.24gb-me", 67, &[0, 3, 6, 9], 3, 4),
            ("2g.48gb", 5, &[0, 6], 6, 2),
            ("2g.48gb+gfx", 35, &[0, 6], 6, 2),
            ("2g.48gb+me.all", 64, &[0, 6], 6, 1),
            ("2g.48gb-me", 66, &[0, 6], 6, 2),
            ("4g.96gb", 0, &[0], 12, 1),
            ("4g.96gb+gfx", 32, &[0], 12, 1),
        ],
    );
    let m = catalog().model("RTX-PRO-6000").unwrap();
    assert_eq!(m.placement_units, 12);
    assert_eq!(m.profile("1g.24gb+me.all").unwrap().kind, ProfileKind::MediaAll);
    assert!(m.gpu_numa.is_none(), "GB202 is one die: no inferred GPU NUMA split");
}

#[test]
fn issue_models_are_all_covered() {
    for name in [
        "A30",
        "A100-40GB",
        "A100-80GB",
        "H100-80GB",
        "H100-PCIE-80GB",
        "H100-94GB",
        "H100-96GB",
        "H200",
        "B200",
        "GB200",
        "RTX-PRO-6000",
    ] {
        assert!(catalog().model(name).is_ok(), "{name}");
    }
}

#[test]
fn gpu_numa_nodes_split_the_grid_in_halves_and_are_marked_inferred() {
    for m in &catalog().models {
        let Some(numa) = &m.gpu_numa else { continue };
        assert_eq!(numa.nodes, 2, "{}", m.name);
        assert!(numa.inferred, "{}", m.name);
        assert_eq!(numa.unit_node.len(), usize::from(m.placement_units), "{}", m.name);
        // Every profile but the full one lies inside one node.
        for p in &m.profiles {
            for &s in &p.placements {
                let node = m.gpu_numa_node(s, p.placement_size);
                if p.placement_size == m.placement_units {
                    assert_eq!(node, None, "{} {} spans both nodes", m.name, p.name);
                } else {
                    assert!(node.is_some(), "{} {}@{s}", m.name, p.name);
                }
            }
        }
    }
}

/// Computed counts from the reference (`computed_valid_configurations`).
#[test]
fn maximal_layout_counts_match_the_reference() {
    for m in &catalog().models {
        let pl = Planner::new(m);
        if m.placement_units == 8 {
            let base: Vec<u32> = [19, 14, 9, 5, 0].to_vec();
            let with_double: Vec<u32> = [19, 15, 14, 9, 5, 0].to_vec();
            assert_eq!(pl.maximal_layouts(Some(&base)).len(), 19, "{}", m.name);
            assert_eq!(pl.maximal_layouts(Some(&with_double)).len(), 78, "{}", m.name);
            assert_eq!(pl.maximal_layouts(None).len(), 239, "{}", m.name);
        }
    }
    let a30 = catalog().model("A30").unwrap();
    assert_eq!(Planner::new(a30).maximal_layouts(Some(&[14, 5, 0])).len(), 5);
    assert_eq!(Planner::new(a30).maximal_layouts(None).len(), 17);
    let rtx = catalog().model("RTX-PRO-6000").unwrap();
    let layouts = Planner::new(rtx).maximal_layouts(Some(&[14, 5, 0]));
    let mut rendered: Vec<String> = layouts
        .iter()
        .map(|l| {
            l.iter()
                .map(|i| format!("{}@{}", &rtx.profile_by_id(i.profile_id).unwrap().name[..2], i.start))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    rendered.sort();
    assert_eq!(rendered, ["1g@0 1g@3 1g@6 1g@9", "1g@0 1g@3 2g@6", "2g@0 1g@6 1g@9", "2g@0 2g@6", "4g@0"]);
}

#[test]
fn the_nineteen_base_layouts_are_the_published_list() {
    let m = catalog().model("A100-40GB").unwrap();
    let short = |id: u32| m.profile_by_id(id).unwrap().name.split('.').next().unwrap().to_string();
    let mut got: Vec<String> = Planner::new(m)
        .maximal_layouts(Some(&[19, 14, 9, 5, 0]))
        .iter()
        .map(|l| l.iter().map(|i| format!("{}@{}", short(i.profile_id), i.start)).collect::<Vec<_>>().join(" "))
        .collect();
    got.sort();
    let mut want: Vec<&str> = vec![
        "7g@0",
        "4g@0 3g@4",
        "3g@0 3g@4",
        "4g@0 2g@4 1g@6",
        "4g@0 1g@4 1g@5 1g@6",
        "3g@0 2g@4 1g@6",
        "3g@0 1g@4 1g@5 1g@6",
        "2g@0 2g@2 3g@4",
        "2g@0 1g@2 1g@3 3g@4",
        "1g@0 1g@1 2g@2 3g@4",
        "1g@0 1g@1 1g@2 1g@3 3g@4",
        "2g@0 2g@2 2g@4 1g@6",
        "2g@0 2g@2 1g@4 1g@5 1g@6",
        "2g@0 1g@2 1g@3 2g@4 1g@6",
        "1g@0 1g@1 2g@2 2g@4 1g@6",
        "2g@0 1g@2 1g@3 1g@4 1g@5 1g@6",
        "1g@0 1g@1 2g@2 1g@4 1g@5 1g@6",
        "1g@0 1g@1 1g@2 1g@3 2g@4 1g@6",
        "1g@0 1g@1 1g@2 1g@3 1g@4 1g@5 1g@6",
    ];
    want.sort();
    assert_eq!(got, want);
}

/// Every profile of the reference that has an id and placements agrees with the catalog, field
/// by field. The reference lives beside the repository (`../shared`), as in CI.
#[test]
fn catalog_agrees_with_the_reference_data() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/reference/mig-profiles.yaml");
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("the reference data must sit beside the repository at {path} (as in CI): {e}"));
    let reference: serde_json::Value = serde_saphyr::from_str(&text).expect("reference parses");
    let mut checked = 0;
    for g in reference["gpus"].as_array().unwrap() {
        let ref_name = g["name"].as_str().unwrap();
        let Some(m) = catalog().models.iter().find(|m| m.reference_name == ref_name) else {
            assert!(
                catalog().left_out.contains_key(ref_name),
                "{ref_name} is neither in the catalog nor listed as left out"
            );
            continue;
        };
        if let Some(units) = g["placement_units"].as_u64() {
            assert_eq!(u64::from(m.placement_units), units, "{ref_name}");
        }
        let Some(profiles) = g["profiles"].as_array() else { continue };
        for rp in profiles {
            let name = rp["name"].as_str().unwrap();
            let p = m.profile(name).unwrap_or_else(|e| panic!("{ref_name}: {e}"));
            assert_eq!(u64::from(p.id), rp["id"].as_u64().unwrap(), "{ref_name} {name} id");
            let placements: Vec<u64> =
                rp["placements"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
            assert_eq!(p.placements.iter().map(|&u| u64::from(u)).collect::<Vec<_>>(), placements, "{ref_name} {name}");
            assert_eq!(u64::from(p.placement_size), rp["placement_size"].as_u64().unwrap(), "{ref_name} {name}");
            assert_eq!(u64::from(p.max_count), rp["max_count"].as_u64().unwrap(), "{ref_name} {name}");
            assert_eq!(p.memory_mib, rp["memory_mib"].as_u64(), "{ref_name} {name} memory");
            if let Some(ofa) = rp["media"]["ofa"].as_u64() {
                assert_eq!(u64::from(p.ofa_engines), ofa, "{ref_name} {name} ofa");
            }
            let inferred: Vec<&str> = rp["inferred_fields"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            for f in inferred {
                assert!(p.inferred_fields.iter().any(|x| x == f), "{ref_name} {name}: inferred mark '{f}' kept");
            }
            checked += 1;
        }
    }
    assert!(checked > 80, "only {checked} profiles checked");
}

/// Every model's whole-GPU memory: the reference's full-GPU total where it has one; where it has
/// none, inferred (and marked so) as the full profile's name in GiB. Either way the full profile's
/// name is the total rounded up to whole GiB (go-nvlib's naming rule), and no profile's memory,
/// read or estimated, exceeds the total.
#[test]
fn every_model_total_memory_is_the_references_and_holds_every_profile() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/reference/mig-profiles.yaml");
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("the reference data must sit beside the repository at {path} (as in CI): {e}"));
    let reference: serde_json::Value = serde_saphyr::from_str(&text).expect("reference parses");
    let gpus = reference["gpus"].as_array().unwrap();
    for m in &catalog().models {
        let g = gpus.iter().find(|g| g["name"] == m.reference_name.as_str()).unwrap();
        let total = m.total_memory_mib();
        let inferred = m.inferred_fields.iter().any(|f| f == "memory_total_mib");
        match g["memory_total_mib"].as_u64() {
            Some(want) => {
                assert_eq!((total, m.memory_total_mib), (want, Some(want)), "{}: the reference's total", m.name);
                assert!(!inferred, "{}: a read total is not marked inferred", m.name);
            }
            None => assert!(inferred && m.memory_total_mib.is_some(), "{}: no reference total, so inferred", m.name),
        }
        let full = m.profiles.iter().find(|p| p.memory_slices == m.memory_slices && p.name_gb().is_some()).unwrap();
        assert_eq!(full.name_gb(), Some(total.div_ceil(1024)), "{}: {} against {total} MiB", m.name, full.name);
        for p in &m.profiles {
            let mib = m.profile_memory_mib(p);
            assert!(mib > 0 && mib <= total, "{} {}: {mib} MiB against a {total} MiB GPU", m.name, p.name);
        }
    }
}

/// GB300 (in NVIDIA's default mig-parted config as device 0x31C2) is in the catalog, with the
/// low confidence and inferred marks of a model known only by its profile names.
#[test]
fn gb300_is_known_by_name_and_pci_id_and_marked_inferred() {
    for q in ["GB300", "gb300-278gb", "0x31C2", "0x31C210DE"] {
        assert_eq!(catalog().model(q).unwrap().name, "GB300-278GB", "{q}");
    }
    let m = catalog().model("GB300").unwrap();
    assert_eq!(m.confidence, catalog::Confidence::Low);
    assert!(m.inferred && m.profiles.iter().all(|p| p.inferred));
    assert!(m.inferred_fields.iter().any(|f| f == "memory_total_mib"));
    let names: Vec<&str> = m.profiles.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["1g.35gb", "1g.35gb+me", "1g.70gb", "2g.70gb", "3g.139gb", "4g.139gb", "7g.278gb"]);
    assert_eq!(m.total_memory_mib(), 278 * 1024);
    assert!(!catalog().left_out.contains_key("GB300"));
}
