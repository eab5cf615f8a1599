use serde::Deserialize;
use tessera_mig::catalog;

use super::*;

/// What mig-parted's `nvidia-mig-parted checkpoint` writes for an H100 with a 3g.40gb at 4 (two
/// compute instances) and a 1g.10gb at 0, and an H100 with MIG off: compact, nulls, Go's order.
const GO_FORM: &str = r#"{"Version":"v1","MigState":{"Devices":[{"UUID":"GPU-aaaaaaaa-0000-0000-0000-000000000000","MigMode":1,"GpuInstances":[{"ProfileID":0,"Placement":{"Start":0,"Size":1},"ComputeInstances":[{"ProfileID":0,"EngProfileID":0}]},{"ProfileID":2,"Placement":{"Start":4,"Size":4},"ComputeInstances":[{"ProfileID":1,"EngProfileID":0},{"ProfileID":0,"EngProfileID":0}]}]},{"UUID":"GPU-bbbbbbbb-0000-0000-0000-000000000000","MigMode":0,"GpuInstances":null}]}}"#;

#[test]
fn go_form_reads_and_writes_back_byte_for_byte() {
    let c = parse_checkpoint(GO_FORM, "ckpt.json").unwrap();
    assert_eq!(c.devices.len(), 2);
    assert!(c.devices[0].mig_enabled && !c.devices[1].mig_enabled);
    assert_eq!(c.devices[0].gpu_instances[1].placement, CkptPlacement { start: 4, size: 4 });
    assert_eq!(c.devices[0].gpu_instances[1].compute_instances[0].placement, None);
    assert_eq!(c.to_json(), GO_FORM);
    // No devices at all: Go writes null.
    assert_eq!(Checkpoint::default().to_json(), r#"{"Version":"v1","MigState":{"Devices":null}}"#);
}

/// mig-parted's types, as Go decodes them: only its fields (serde, like Go, skips the others).
#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
struct GoState {
    version: String,
    mig_state: GoMigState,
}
#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
struct GoMigState {
    devices: Option<Vec<GoDev>>,
}
#[derive(Debug, Deserialize, PartialEq)]
struct GoDev {
    #[serde(rename = "UUID")]
    uuid: String,
    #[serde(rename = "MigMode")]
    mig_mode: i64,
    #[serde(rename = "GpuInstances")]
    gpu_instances: Option<Vec<GoGiIn>>,
}
#[derive(Debug, Deserialize, PartialEq)]
struct GoGiIn {
    #[serde(rename = "ProfileID")]
    profile_id: i64,
    #[serde(rename = "Placement")]
    placement: GoPlacementIn,
    #[serde(rename = "ComputeInstances")]
    compute_instances: Option<Vec<GoCiIn>>,
}
#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
struct GoPlacementIn {
    start: u32,
    size: u32,
}
#[derive(Debug, Deserialize, PartialEq)]
struct GoCiIn {
    #[serde(rename = "ProfileID")]
    profile_id: i64,
    #[serde(rename = "EngProfileID")]
    eng_profile_id: i64,
}

#[test]
fn tesseras_extra_placement_reads_back_with_only_mig_parteds_fields() {
    let mut c = parse_checkpoint(GO_FORM, "ckpt.json").unwrap();
    c.devices[0].gpu_instances[1].compute_instances[0].placement = Some(CkptPlacement { start: 0, size: 2 });
    c.devices[0].gpu_instances[1].compute_instances[1].placement = Some(CkptPlacement { start: 2, size: 1 });
    let text = c.to_json();
    assert!(text.contains(r#"{"ProfileID":1,"EngProfileID":0,"Placement":{"Start":0,"Size":2}}"#), "{text}");
    let go: GoState = serde_json::from_str(&text).unwrap();
    let plain: GoState = serde_json::from_str(GO_FORM).unwrap();
    assert_eq!(go, plain);
    assert_eq!(go.version, "v1");
    let d = &go.mig_state.devices.as_ref().unwrap()[0];
    assert_eq!((d.mig_mode, d.gpu_instances.as_ref().unwrap()[1].profile_id), (1, 2));
    assert_eq!(d.gpu_instances.as_ref().unwrap()[1].placement, GoPlacementIn { start: 4, size: 4 });
    assert_eq!(d.gpu_instances.as_ref().unwrap()[1].compute_instances.as_ref().unwrap()[0].eng_profile_id, 0);
    assert_eq!(d.uuid, "GPU-aaaaaaaa-0000-0000-0000-000000000000");
    // And Tessera reads its own form back.
    assert_eq!(parse_checkpoint(&text, "x").unwrap(), c);
}

#[test]
fn go_decoding_rules_unknown_fields_missing_lists_any_case() {
    let text = r#"{"version":"v1","Extra":[1,2],"migstate":{"devices":[{"uuid":"GPU-1","migMode":1,"Other":{}}]}}"#;
    let c = parse_checkpoint(text, "x").unwrap();
    assert_eq!(c.devices[0].uuid, "GPU-1");
    assert!(c.devices[0].gpu_instances.is_empty());
    assert!(parse_checkpoint(r#"{"Version":"v1","MigState":null}"#, "x").unwrap().devices.is_empty());
}

#[test]
fn malformed_checkpoints_name_the_file_and_the_json_path() {
    let dev = |body: &str| format!(r#"{{"Version":"v1","MigState":{{"Devices":[{body}]}}}}"#);
    let gi = |body: &str| dev(&format!(r#"{{"UUID":"GPU-1","MigMode":1,"GpuInstances":[{body}]}}"#));
    let cases: Vec<(String, &str)> = vec![
        ("{".to_string(), "c.json: not JSON at line 1, column 1"),
        ("[]".to_string(), "c.json: expected an object, found an array"),
        (r#"{"Version":"v2"}"#.to_string(), "c.json: Version: \"v2\" is not a checkpoint version"),
        (r#"{"MigState":{}}"#.to_string(), "c.json: Version: missing"),
        (r#"{"Version":"v1","MigState":{"Devices":{}}}"#.to_string(), "MigState.Devices: expected an array or null"),
        (dev(r#"{"MigMode":1}"#), "c.json: MigState.Devices[0].UUID: missing"),
        (dev(r#"{"UUID":7,"MigMode":1}"#), "MigState.Devices[0].UUID: expected a string, found a number"),
        (dev(r#"{"UUID":"GPU-1"}"#), "MigState.Devices[0].MigMode: missing"),
        (dev(r#"{"UUID":"GPU-1","MigMode":2}"#), "MigState.Devices[0].MigMode: 2 is not a MIG mode"),
        (dev(r#"{"UUID":"GPU-1","MigMode":-1}"#), "MigState.Devices[0].MigMode: expected a whole number ≥ 0, found -1"),
        (
            dev(r#"{"UUID":"GPU-1","MigMode":1},{"UUID":"GPU-1","MigMode":0}"#),
            "MigState.Devices[1].UUID: GPU-1 is listed twice (also MigState.Devices[0])",
        ),
        (gi(r#"{"Placement":{"Start":0,"Size":1}}"#), "MigState.Devices[0].GpuInstances[0].ProfileID: missing"),
        (
            gi(r#"{"ProfileID":1.5,"Placement":{"Start":0,"Size":1}}"#),
            "GpuInstances[0].ProfileID: expected a whole number",
        ),
        (gi(r#"{"ProfileID":0}"#), "MigState.Devices[0].GpuInstances[0].Placement: missing"),
        (gi(r#"{"ProfileID":0,"Placement":{"Start":0}}"#), "GpuInstances[0].Placement.Size: missing"),
        (
            gi(r#"{"ProfileID":0,"Placement":{"Start":0,"Size":1},"ComputeInstances":[{"EngProfileID":0}]}"#),
            "GpuInstances[0].ComputeInstances[0].ProfileID: missing",
        ),
        (
            dev(r#"{"UUID":"GPU-1","MigMode":0,"GpuInstances":[{"ProfileID":0,"Placement":{"Start":0,"Size":1}}]}"#),
            "MigState.Devices[0].GpuInstances: a GPU with MigMode 0 (disabled) has no GPU instances",
        ),
    ];
    for (text, want) in cases {
        let e = parse_checkpoint(&text, "c.json").unwrap_err().to_string();
        assert!(e.contains(want), "{text}\n  got:  {e}\n  want: {want}");
    }
}

/// A target GPU instance: profile name, start, compute instances as `(profile id, start)`.
type Target = (String, u8, Vec<(u32, u8)>);

fn targets_of(model: &str, gis: &str) -> Result<Vec<Target>, String> {
    let text = format!(
        r#"{{"Version":"v1","MigState":{{"Devices":[{{"UUID":"GPU-1","MigMode":1,"GpuInstances":[{gis}]}}]}}}}"#
    );
    let c = parse_checkpoint(&text, "c.json").map_err(|e| e.to_string())?;
    let m = catalog().model(model).unwrap();
    let t = restore_targets("c.json", 0, &c.devices[0], m).map_err(|e| e.to_string())?;
    Ok(t.iter()
        .map(|g| {
            (g.profile.name.clone(), g.start, g.compute_instances.iter().map(|c| (c.profile.id, c.start)).collect())
        })
        .collect())
}

#[test]
fn targets_follow_nvml_indices_and_the_drivers_ci_placement() {
    // Index 2 is 3 slices (3g.40gb, id 9 on H100); compute instances in checkpoint order: a
    // 2-slice then a 1-slice land at 0 and 2.
    let t = targets_of(
        "H100-80GB",
        r#"{"ProfileID":2,"Placement":{"Start":4,"Size":4},"ComputeInstances":[{"ProfileID":1,"EngProfileID":0},{"ProfileID":0,"EngProfileID":0}]}"#,
    )
    .unwrap();
    assert_eq!(t, [("3g.40gb".to_string(), 4, vec![(1, 0), (0, 2)])]);
    // With Tessera's placements: created in placement order, so 1 slice at 0 then 2 at 1… which
    // the driver cannot do (a 2-slice compute instance starts at 0 or 2): refused, saying so.
    let e = targets_of(
        "H100-80GB",
        r#"{"ProfileID":2,"Placement":{"Start":4,"Size":4},"ComputeInstances":[{"ProfileID":0,"EngProfileID":0,"Placement":{"Start":2,"Size":1}}]}"#,
    )
    .unwrap_err();
    assert!(
        e.contains("GpuInstances[0].ComputeInstances: compute instances at slices 2:1 of 3g.40gb cannot be recreated"),
        "{e}"
    );
    assert!(e.contains("lowest free placement, which gives 0:1"), "{e}");
    // Reproducible placements in any checkpoint order.
    let t = targets_of(
        "H100-80GB",
        r#"{"ProfileID":2,"Placement":{"Start":0,"Size":4},"ComputeInstances":[{"ProfileID":0,"EngProfileID":0,"Placement":{"Start":2,"Size":1}},{"ProfileID":1,"EngProfileID":0,"Placement":{"Start":0,"Size":2}}]}"#,
    )
    .unwrap();
    assert_eq!(t[0].2, [(1, 0), (0, 2)]);
    // GH200 and B300 lack recorded indices: the rule gives them.
    assert_eq!(
        targets_of("GH200-144GB", r#"{"ProfileID":9,"Placement":{"Start":0,"Size":2}}"#).unwrap()[0].0,
        "1g.36gb"
    );
    assert_eq!(
        targets_of("B300-269GB", r#"{"ProfileID":4,"Placement":{"Start":0,"Size":8}}"#).unwrap()[0].0,
        "7g.269gb"
    );
}

#[test]
fn targets_refuse_what_the_gpu_cannot_have() {
    let cases = [
        (
            r#"{"ProfileID":42,"Placement":{"Start":0,"Size":1}}"#,
            "c.json: MigState.Devices[0].GpuInstances[0].ProfileID: unknown profile index 42 on H100-80GB",
        ),
        (
            r#"{"ProfileID":2,"Placement":{"Start":2,"Size":4}}"#,
            "GpuInstances[0].Placement.Start: 2 is not a placement of 3g.40gb on H100-80GB (0, 4)",
        ),
        (
            r#"{"ProfileID":2,"Placement":{"Start":4,"Size":2}}"#,
            "GpuInstances[0].Placement.Size: 3g.40gb is 4 units wide, not 2",
        ),
        (
            r#"{"ProfileID":2,"Placement":{"Start":0,"Size":4}},{"ProfileID":3,"Placement":{"Start":0,"Size":4}}"#,
            "c.json: MigState.Devices[0].GpuInstances: not a valid layout on H100-80GB",
        ),
        (
            r#"{"ProfileID":0,"Placement":{"Start":0,"Size":1},"ComputeInstances":[{"ProfileID":2,"EngProfileID":0}]}"#,
            "GpuInstances[0].ComputeInstances[0].ProfileID: 1g.10gb on H100-80GB has no compute instance profile index 2; it offers 0 (1 slices)",
        ),
        (
            r#"{"ProfileID":0,"Placement":{"Start":0,"Size":1},"ComputeInstances":[{"ProfileID":0,"EngProfileID":1}]}"#,
            "ComputeInstances[0].EngProfileID: 1 is not an engine profile",
        ),
        (
            r#"{"ProfileID":0,"Placement":{"Start":0,"Size":1},"ComputeInstances":[{"ProfileID":0,"EngProfileID":0},{"ProfileID":0,"EngProfileID":0}]}"#,
            "GpuInstances[0].ComputeInstances: ",
        ),
        (
            r#"{"ProfileID":2,"Placement":{"Start":0,"Size":4},"ComputeInstances":[{"ProfileID":0,"EngProfileID":0,"Placement":{"Start":0,"Size":1}},{"ProfileID":0,"EngProfileID":0}]}"#,
            "ComputeInstances[1].Placement: missing, while other compute instances",
        ),
        (
            r#"{"ProfileID":2,"Placement":{"Start":0,"Size":4},"ComputeInstances":[{"ProfileID":0,"EngProfileID":0,"Placement":{"Start":0,"Size":1}},{"ProfileID":1,"EngProfileID":0,"Placement":{"Start":0,"Size":2}}]}"#,
            "ComputeInstances[1].Placement: overlaps another compute instance (slices 0 are taken twice)",
        ),
    ];
    for (gis, want) in cases {
        let e = targets_of("H100-80GB", gis).unwrap_err();
        assert!(e.contains(want), "{gis}\n  got:  {e}\n  want: {want}");
    }
}
