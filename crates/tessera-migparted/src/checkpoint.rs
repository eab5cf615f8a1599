//! mig-parted's checkpoint file (`api/checkpoint/v1/state.go`, `pkg/types/mig_state.go`): the
//! MIG state of a node's MIG-capable GPUs, read back by `restore`.
//!
//! The form is exactly what Go's `encoding/json` writes for mig-parted's `State`: compact, the
//! struct's field names in its order, empty slices as `null`, `MigMode` 0 or 1:
//! `{"Version":"v1","MigState":{"Devices":[{"UUID":"GPU-…","MigMode":1,"GpuInstances":[{"ProfileID":2,
//! "Placement":{"Start":4,"Size":4},"ComputeInstances":[{"ProfileID":2,"EngProfileID":0}]}]}]}}`.
//! A GPU instance's `ProfileID` is NVML's profile *index* (`NVML_GPU_INSTANCE_PROFILE_*`), not
//! the id `nvidia-smi` prints; a compute instance's is NVML's compute-instance profile index
//! (which NVML also reports as its id). Tessera adds one field mig-parted ignores (Go skips
//! unknown fields): each compute instance's `Placement` in compute slices, honoured by restore.
//!
//! Reading follows Go's decoder where mig-parted depends on it (unknown fields ignored, `null`
//! or a missing list is empty, field names matched case-insensitively) and is stricter where
//! mig-parted would only fail later, on the hardware: every error names the file and the JSON
//! path (`MigState.Devices[1].GpuInstances[0].ProfileID`).

use serde::Serialize;
use serde_json::{Map, Value};
use tessera_mig::catalog::ComputeInstanceProfile;
use tessera_mig::layout::{ci_placements, mask_units, unit_mask};
use tessera_mig::{GpuModel, Instance, Profile, validate};

/// The one version of the format (`checkpoint.Version`).
pub const CHECKPOINT_VERSION: &str = "v1";

/// A checkpoint: every MIG-capable GPU of a node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Checkpoint {
    pub devices: Vec<DeviceState>,
}

/// One GPU (`types.DeviceState`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceState {
    pub uuid: String,
    /// `MigMode`: 1 enabled, 0 disabled.
    pub mig_enabled: bool,
    pub gpu_instances: Vec<GpuInstanceState>,
}

/// A placement (`nvml.GpuInstancePlacement`): placement units for a GPU instance, compute
/// slices for a compute instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CkptPlacement {
    pub start: u32,
    pub size: u32,
}

/// One GPU instance (`types.GpuInstanceState`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuInstanceState {
    /// `NVML_GPU_INSTANCE_PROFILE_*` index.
    pub profile_index: u32,
    pub placement: CkptPlacement,
    /// In the order they are created.
    pub compute_instances: Vec<ComputeInstanceState>,
}

/// One compute instance (`types.ComputeInstanceState`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComputeInstanceState {
    /// `NVML_COMPUTE_INSTANCE_PROFILE_*` index.
    pub profile_index: u32,
    /// `NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_*`: 0, shared (the only one NVML offers).
    pub eng_profile_index: u32,
    /// Tessera's addition: where it is in its GPU instance. `None` in mig-parted's files.
    pub placement: Option<CkptPlacement>,
}

/// What is wrong with a checkpoint, at which JSON path of which file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {}{message}", if .path.is_empty() { String::new() } else { format!("{}: ", .path) })]
pub struct CheckpointError {
    pub origin: String,
    /// `MigState.Devices[1].GpuInstances[0].ProfileID`; empty for the file as a whole.
    pub path: String,
    pub message: String,
}

fn err(origin: &str, path: &str, message: impl Into<String>) -> CheckpointError {
    CheckpointError { origin: origin.to_string(), path: path.to_string(), message: message.into() }
}

// ---- writing -------------------------------------------------------------------------------

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GoState<'a> {
    version: &'a str,
    mig_state: GoMigState<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GoMigState<'a> {
    devices: Option<Vec<GoDevice<'a>>>,
}

#[derive(Serialize)]
struct GoDevice<'a> {
    #[serde(rename = "UUID")]
    uuid: &'a str,
    #[serde(rename = "MigMode")]
    mig_mode: u8,
    #[serde(rename = "GpuInstances")]
    gpu_instances: Option<Vec<GoGi>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GoPlacement {
    start: u32,
    size: u32,
}

#[derive(Serialize)]
struct GoGi {
    #[serde(rename = "ProfileID")]
    profile_id: u32,
    #[serde(rename = "Placement")]
    placement: GoPlacement,
    #[serde(rename = "ComputeInstances")]
    compute_instances: Option<Vec<GoCi>>,
}

#[derive(Serialize)]
struct GoCi {
    #[serde(rename = "ProfileID")]
    profile_id: u32,
    #[serde(rename = "EngProfileID")]
    eng_profile_id: u32,
    #[serde(rename = "Placement", skip_serializing_if = "Option::is_none")]
    placement: Option<GoPlacement>,
}

fn go_placement(p: CkptPlacement) -> GoPlacement {
    GoPlacement { start: p.start, size: p.size }
}

/// `v` as Go writes a slice: `null` when empty.
fn go_slice<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

impl Checkpoint {
    /// The file's text, as mig-parted's `json.Marshal(state)` writes it (no newline at the end).
    pub fn to_json(&self) -> String {
        let devices = self
            .devices
            .iter()
            .map(|d| GoDevice {
                uuid: &d.uuid,
                mig_mode: u8::from(d.mig_enabled),
                gpu_instances: go_slice(
                    d.gpu_instances
                        .iter()
                        .map(|gi| GoGi {
                            profile_id: gi.profile_index,
                            placement: go_placement(gi.placement),
                            compute_instances: go_slice(
                                gi.compute_instances
                                    .iter()
                                    .map(|ci| GoCi {
                                        profile_id: ci.profile_index,
                                        eng_profile_id: ci.eng_profile_index,
                                        placement: ci.placement.map(go_placement),
                                    })
                                    .collect(),
                            ),
                        })
                        .collect(),
                ),
            })
            .collect();
        let state = GoState { version: CHECKPOINT_VERSION, mig_state: GoMigState { devices: go_slice(devices) } };
        // Serializing these plain structs cannot fail.
        serde_json::to_string(&state).unwrap_or_default()
    }
}

// ---- reading -------------------------------------------------------------------------------

/// A JSON object's field as Go's decoder finds it: the exact name, else one equal to it
/// ignoring case.
fn field<'v>(obj: &'v Map<String, Value>, name: &str) -> Option<&'v Value> {
    obj.get(name).or_else(|| obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

struct Reader<'a> {
    origin: &'a str,
}

impl Reader<'_> {
    fn object<'v>(&self, v: &'v Value, path: &str) -> Result<&'v Map<String, Value>, CheckpointError> {
        v.as_object().ok_or_else(|| err(self.origin, path, format!("expected an object, found {}", kind(v))))
    }

    /// A list field: missing or `null` is empty, as for Go.
    fn list<'v>(&self, obj: &'v Map<String, Value>, name: &str, path: &str) -> Result<&'v [Value], CheckpointError> {
        match field(obj, name) {
            None | Some(Value::Null) => Ok(&[]),
            Some(Value::Array(a)) => Ok(a),
            Some(v) => Err(err(self.origin, path, format!("expected an array or null, found {}", kind(v)))),
        }
    }

    /// A required unsigned integer field.
    fn uint(&self, obj: &Map<String, Value>, name: &str, path: &str) -> Result<u32, CheckpointError> {
        match field(obj, name) {
            None => Err(err(self.origin, path, "missing")),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| err(self.origin, path, format!("expected a whole number ≥ 0, found {v}"))),
        }
    }

    fn placement(&self, v: &Value, path: &str) -> Result<CkptPlacement, CheckpointError> {
        let o = self.object(v, path)?;
        Ok(CkptPlacement {
            start: self.uint(o, "Start", &format!("{path}.Start"))?,
            size: self.uint(o, "Size", &format!("{path}.Size"))?,
        })
    }

    fn device(&self, v: &Value, path: &str) -> Result<DeviceState, CheckpointError> {
        let o = self.object(v, path)?;
        let uuid = match field(o, "UUID") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::String(_)) => return Err(err(self.origin, &format!("{path}.UUID"), "empty")),
            Some(v) => {
                return Err(err(self.origin, &format!("{path}.UUID"), format!("expected a string, found {}", kind(v))));
            }
            None => return Err(err(self.origin, &format!("{path}.UUID"), "missing")),
        };
        let mode_path = format!("{path}.MigMode");
        let mig_enabled = match self.uint(o, "MigMode", &mode_path)? {
            0 => false,
            1 => true,
            n => {
                return Err(err(
                    self.origin,
                    &mode_path,
                    format!("{n} is not a MIG mode: 0 (disabled) or 1 (enabled)"),
                ));
            }
        };
        let gis_path = format!("{path}.GpuInstances");
        let mut gpu_instances = Vec::new();
        for (j, gi) in self.list(o, "GpuInstances", &gis_path)?.iter().enumerate() {
            gpu_instances.push(self.gpu_instance(gi, &format!("{gis_path}[{j}]"))?);
        }
        if !mig_enabled && !gpu_instances.is_empty() {
            return Err(err(self.origin, &gis_path, "a GPU with MigMode 0 (disabled) has no GPU instances"));
        }
        Ok(DeviceState { uuid, mig_enabled, gpu_instances })
    }

    fn gpu_instance(&self, v: &Value, path: &str) -> Result<GpuInstanceState, CheckpointError> {
        let o = self.object(v, path)?;
        let profile_index = self.uint(o, "ProfileID", &format!("{path}.ProfileID"))?;
        let placement_path = format!("{path}.Placement");
        let placement = match field(o, "Placement") {
            Some(p) => self.placement(p, &placement_path)?,
            None => return Err(err(self.origin, &placement_path, "missing")),
        };
        let cis_path = format!("{path}.ComputeInstances");
        let mut compute_instances = Vec::new();
        for (k, ci) in self.list(o, "ComputeInstances", &cis_path)?.iter().enumerate() {
            let ci_path = format!("{cis_path}[{k}]");
            let c = self.object(ci, &ci_path)?;
            let eng_profile_index = match field(c, "EngProfileID") {
                None | Some(Value::Null) => 0,
                Some(_) => self.uint(c, "EngProfileID", &format!("{ci_path}.EngProfileID"))?,
            };
            let placement = match field(c, "Placement") {
                None | Some(Value::Null) => None,
                Some(p) => Some(self.placement(p, &format!("{ci_path}.Placement"))?),
            };
            compute_instances.push(ComputeInstanceState {
                profile_index: self.uint(c, "ProfileID", &format!("{ci_path}.ProfileID"))?,
                eng_profile_index,
                placement,
            });
        }
        Ok(GpuInstanceState { profile_index, placement, compute_instances })
    }
}

/// Read a checkpoint file's text; `origin` names the file in errors. Each GPU may be listed once.
pub fn parse_checkpoint(text: &str, origin: &str) -> Result<Checkpoint, CheckpointError> {
    let root: Value = serde_json::from_str(text)
        .map_err(|e| err(origin, "", format!("not JSON at line {}, column {}: {e}", e.line(), e.column())))?;
    let r = Reader { origin };
    let o = r.object(&root, "")?;
    match field(o, "Version") {
        Some(Value::String(v)) if v == CHECKPOINT_VERSION => {}
        Some(v) => {
            return Err(err(
                origin,
                "Version",
                format!("{v} is not a checkpoint version this reads: \"{CHECKPOINT_VERSION}\""),
            ));
        }
        None => return Err(err(origin, "Version", format!("missing (mig-parted writes \"{CHECKPOINT_VERSION}\")"))),
    }
    let devices = match field(o, "MigState") {
        None | Some(Value::Null) => &[][..],
        Some(state) => r.list(r.object(state, "MigState")?, "Devices", "MigState.Devices")?,
    };
    let mut out = Checkpoint::default();
    for (i, d) in devices.iter().enumerate() {
        let path = format!("MigState.Devices[{i}]");
        let device = r.device(d, &path)?;
        if let Some(first) = out.devices.iter().position(|x| x.uuid == device.uuid) {
            return Err(err(
                origin,
                &format!("{path}.UUID"),
                format!("{} is listed twice (also MigState.Devices[{first}])", device.uuid),
            ));
        }
        out.devices.push(device);
    }
    Ok(out)
}

// ---- against a GPU model -------------------------------------------------------------------

/// A GPU instance to restore, in the catalog's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GiTarget<'m> {
    pub profile: &'m Profile,
    /// Start in placement units.
    pub start: u8,
    /// Its compute instances in the order to create them, each where the driver puts it.
    pub compute_instances: Vec<CiTarget<'m>>,
}

/// A compute instance to restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CiTarget<'m> {
    pub profile: &'m ComputeInstanceProfile,
    /// Start in compute slices of its GPU instance.
    pub start: u8,
}

impl GiTarget<'_> {
    /// The compute instances as `(profile id, start)`, sorted: what to compare with a GPU.
    pub fn ci_key(&self) -> Vec<(u32, u8)> {
        let mut v: Vec<(u32, u8)> = self.compute_instances.iter().map(|c| (c.profile.id, c.start)).collect();
        v.sort_unstable();
        v
    }
}

fn slices_list(starts: &[(u32, u8)], sizes: &[u8]) -> String {
    starts.iter().zip(sizes).map(|((_, s), z)| format!("{s}:{z}")).collect::<Vec<_>>().join(", ")
}

/// The GPU instances of checkpointed GPU `device_no` (`MigState.Devices[device_no]`) on `model`:
/// each profile index known, each placement legal, the layout valid, each compute-instance
/// profile offered, and each compute instance where creating them in order puts it (the
/// driver takes the lowest free legal placement; with Tessera's `Placement`s they are created
/// in placement order, and a placement that order cannot reproduce is an error).
pub fn restore_targets<'m>(
    origin: &str,
    device_no: usize,
    device: &DeviceState,
    model: &'m GpuModel,
) -> Result<Vec<GiTarget<'m>>, CheckpointError> {
    let base = format!("MigState.Devices[{device_no}].GpuInstances");
    let mut out: Vec<GiTarget<'m>> = Vec::new();
    for (j, gi) in device.gpu_instances.iter().enumerate() {
        let path = format!("{base}[{j}]");
        let Some(profile) = model.profile_by_nvml_index(gi.profile_index) else {
            return Err(err(
                origin,
                &format!("{path}.ProfileID"),
                format!("unknown profile index {} on {}", gi.profile_index, model.name),
            ));
        };
        let start = u8::try_from(gi.placement.start).ok().filter(|s| profile.placements.contains(s));
        let Some(start) = start else {
            let legal: Vec<String> = profile.placements.iter().map(u8::to_string).collect();
            return Err(err(
                origin,
                &format!("{path}.Placement.Start"),
                format!(
                    "{} is not a placement of {} on {} ({})",
                    gi.placement.start,
                    profile.name,
                    model.name,
                    legal.join(", ")
                ),
            ));
        };
        if gi.placement.size != u32::from(profile.placement_size) {
            return Err(err(
                origin,
                &format!("{path}.Placement.Size"),
                format!("{} is {} units wide, not {}", profile.name, profile.placement_size, gi.placement.size),
            ));
        }
        let compute_instances = ci_targets(origin, &path, model, profile, &gi.compute_instances)?;
        out.push(GiTarget { profile, start, compute_instances });
    }
    let layout: Vec<Instance> = out.iter().map(|g| Instance::new(g.profile.id, g.start)).collect();
    if let Some(v) = validate(model, &layout).first() {
        return Err(err(origin, &base, format!("not a valid layout on {}: {v}", model.name)));
    }
    Ok(out)
}

fn ci_targets<'m>(
    origin: &str,
    gi_path: &str,
    model: &'m GpuModel,
    profile: &Profile,
    cis: &[ComputeInstanceState],
) -> Result<Vec<CiTarget<'m>>, CheckpointError> {
    let base = format!("{gi_path}.ComputeInstances");
    let offered = model.compute_instance_profiles(profile.compute_slices);
    // (checkpoint position, profile, wanted placement)
    let mut wanted: Vec<(usize, &'m ComputeInstanceProfile, Option<u8>)> = Vec::new();
    for (k, ci) in cis.iter().enumerate() {
        let path = format!("{base}[{k}]");
        let Some(cp) = offered.iter().find(|c| c.id == ci.profile_index) else {
            let list: Vec<String> = offered.iter().map(|c| format!("{} ({} slices)", c.id, c.compute_slices)).collect();
            return Err(err(
                origin,
                &format!("{path}.ProfileID"),
                format!(
                    "{} on {} has no compute instance profile index {}; it offers {}",
                    profile.name,
                    model.name,
                    ci.profile_index,
                    if list.is_empty() { "none".to_string() } else { list.join(", ") }
                ),
            ));
        };
        if ci.eng_profile_index != 0 {
            return Err(err(
                origin,
                &format!("{path}.EngProfileID"),
                format!("{} is not an engine profile: only 0 (shared) exists", ci.eng_profile_index),
            ));
        }
        let at = match ci.placement {
            None => None,
            Some(p) => {
                if p.size != u32::from(cp.placement_size) {
                    return Err(err(
                        origin,
                        &format!("{path}.Placement.Size"),
                        format!(
                            "compute instance profile {} is {} slices wide, not {}",
                            cp.id, cp.placement_size, p.size
                        ),
                    ));
                }
                let start = u8::try_from(p.start).ok().filter(|s| cp.placements.contains(s));
                let Some(start) = start else {
                    return Err(err(
                        origin,
                        &format!("{path}.Placement.Start"),
                        format!(
                            "{} is not a placement of compute instance profile {} in {}",
                            p.start, cp.id, profile.name
                        ),
                    ));
                };
                Some(start)
            }
        };
        wanted.push((k, cp, at));
    }
    let placed = wanted.iter().filter(|w| w.2.is_some()).count();
    if placed != 0 && placed != wanted.len() {
        let k = wanted.iter().find(|w| w.2.is_none()).map_or(0, |w| w.0);
        return Err(err(
            origin,
            &format!("{base}[{k}].Placement"),
            "missing, while other compute instances of this GPU instance have one: give all or none",
        ));
    }
    if placed != 0 {
        wanted.sort_by_key(|w| w.2);
        let mut occupied = 0u32;
        for w in &wanted {
            let mask = unit_mask(w.2.unwrap_or(0), w.1.placement_size);
            if occupied & mask != 0 {
                return Err(err(
                    origin,
                    &format!("{base}[{}].Placement", w.0),
                    format!("overlaps another compute instance (slices {} are taken twice)", {
                        let units: Vec<String> = mask_units(occupied & mask).iter().map(u8::to_string).collect();
                        units.join(", ")
                    }),
                ));
            }
            occupied |= mask;
        }
    }
    // Where the driver puts them, created in this order: the one rule (`ci_placements`).
    let sizes: Vec<u8> = wanted.iter().map(|w| w.1.compute_slices).collect();
    let made = ci_placements(model, profile, &sizes).map_err(|e| err(origin, &base, format!("{e}")))?;
    let got: Vec<(u32, u8)> = made.iter().map(|(cp, s)| (cp.id, *s)).collect();
    let want: Vec<(u32, u8)> = wanted.iter().map(|w| (w.1.id, w.2.unwrap_or(0))).collect();
    if placed != 0 && got != want {
        return Err(err(
            origin,
            &base,
            format!(
                "compute instances at slices {} of {} cannot be recreated: the driver puts each new compute instance \
                 at the lowest free placement, which gives {}",
                slices_list(&want, &sizes),
                profile.name,
                slices_list(&got, &sizes)
            ),
        ));
    }
    if got.iter().zip(&wanted).any(|(g, w)| g.0 != w.1.id) {
        return Err(err(
            origin,
            &base,
            format!("the driver would create other compute instance profiles in {}", profile.name),
        ));
    }
    Ok(wanted.iter().zip(&made).map(|(w, (_, start))| CiTarget { profile: w.1, start: *start }).collect())
}

#[cfg(test)]
mod tests;
