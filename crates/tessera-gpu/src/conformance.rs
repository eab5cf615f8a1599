//! The conformance suite: one set of behavioural checks every [`MigBackend`] must pass, so the
//! simulated node and NVML (over the stand-in `libnvidia-ml`, and on real GPUs) cannot drift
//! apart.
//!
//! A backend joins by implementing [`Harness`] for a node that presents [`SPEC`] fresh: MIG on,
//! no instances, no processes. [`run_all`] runs every [`Case`] on its own fresh harness and
//! collects the failures, so one run reports them all. Cases never panic on a wrong answer;
//! they return `Err` with what was expected and what came back.

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use tessera_mig::{GpuModel, Instance, Planner, catalog};

use crate::backend::{
    BackendError, DeviceInfo, GpmMetric, GpmMetrics, GpuObservation, MigBackend, MigMode, PlacementRange,
    RecoveryAction,
};
use crate::health::{HealthTracker, Observation, Recovery, XidEvent};
use crate::ids::{ci_caps_minor, gi_caps_minor, is_uuid_with_prefix};
use crate::sim::SimBackend;
use crate::sim::activity::{Activity, gpm_supported_by};
use crate::spec::NodeSpec;

/// The node every harness must present, fresh, to every case.
pub const SPEC: &str = "1xA100-40GB+1xH100-80GB+1xA30-24GB+1xRTX-PRO-6000,numa=2,mig=on";

/// A backend under test, plus the few things only a test rig can do.
pub trait Harness {
    /// The backend under test, presenting [`SPEC`].
    fn backend(&self) -> &dyn MigBackend;
    /// Start a process in compute instance `ci` of GPU instance `gi` (it makes them busy).
    fn attach_process(&self, gpu: u32, gi: u32, ci: u32, pid: u32) -> Result<(), String>;
    /// End that process.
    fn detach_process(&self, gpu: u32, pid: u32) -> Result<(), String>;
    /// Make the GPU report an Xid error, contained to a GPU and compute instance when given.
    fn raise_xid(&self, gpu: u32, xid: u64, gi: Option<u32>, ci: Option<u32>) -> Result<(), String>;
    /// Reset the GPU (`nvidia-smi -r -i N`); an error while processes use it.
    fn reset_gpu(&self, gpu: u32) -> Result<(), String>;
    /// Reboot the node.
    fn reboot(&self) -> Result<(), String>;
    /// Make GPU `gpu` (its GPU instance `gi`, when given) do `activity` from now on, for GPM;
    /// every GPU and instance this harness was not told about is idle.
    fn set_activity(&self, gpu: u32, gi: Option<u32>, activity: &Activity) -> Result<(), String>;
}

/// One check.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    pub name: &'static str,
    pub run: fn(&dyn Harness) -> Result<(), String>,
}

/// A case that failed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseFailure {
    pub name: &'static str,
    pub message: String,
}

impl std::fmt::Display for CaseFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.name, self.message)
    }
}

/// The simulated node is a harness of itself.
impl Harness for SimBackend {
    fn backend(&self) -> &dyn MigBackend {
        self
    }

    fn attach_process(&self, gpu: u32, gi: u32, ci: u32, pid: u32) -> Result<(), String> {
        SimBackend::attach_process(self, gpu, gi, ci, pid, "conformance").map_err(|e| e.to_string())
    }

    fn detach_process(&self, gpu: u32, pid: u32) -> Result<(), String> {
        SimBackend::detach_process(self, gpu, pid).map_err(|e| e.to_string())
    }

    fn raise_xid(&self, gpu: u32, xid: u64, gi: Option<u32>, ci: Option<u32>) -> Result<(), String> {
        SimBackend::raise_xid(self, gpu, xid, gi, ci).map_err(|e| e.to_string())
    }

    fn reset_gpu(&self, gpu: u32) -> Result<(), String> {
        SimBackend::reset_gpu(self, gpu).map_err(|e| e.to_string())
    }

    fn reboot(&self) -> Result<(), String> {
        SimBackend::reboot(self).map_err(|e| e.to_string())
    }

    fn set_activity(&self, gpu: u32, gi: Option<u32>, activity: &Activity) -> Result<(), String> {
        SimBackend::set_activity(self, gpu, gi, activity).map_err(|e| e.to_string())
    }
}

/// Every case, in a stable order.
pub fn cases() -> Vec<Case> {
    vec![
        Case { name: "devices_match_catalog", run: devices_match_catalog },
        Case { name: "unknown_gpu_and_profile", run: unknown_gpu_and_profile },
        Case { name: "mig_mode_get_and_set", run: mig_mode_get_and_set },
        Case { name: "profiles_and_placements_match_catalog", run: profiles_and_placements_match_catalog },
        Case { name: "explicit_placements_list_back", run: explicit_placements_list_back },
        Case { name: "gpu_instance_ids_follow_driver_ranges", run: gpu_instance_ids_follow_driver_ranges },
        Case { name: "placement_rules_give_insufficient_resources", run: placement_rules_give_insufficient_resources },
        Case { name: "default_placement_follows_driver", run: default_placement_follows_driver },
        Case { name: "compute_instances_uuids_and_caps", run: compute_instances_uuids_and_caps },
        Case { name: "destroy_order_and_not_found", run: destroy_order_and_not_found },
        Case { name: "busy_instances_are_not_destroyed", run: busy_instances_are_not_destroyed },
        Case { name: "every_maximal_layout_round_trips", run: every_maximal_layout_round_trips },
        Case { name: "xid_events_are_delivered_once", run: xid_events_are_delivered_once },
        Case { name: "xid_health_follows_the_events", run: xid_health_follows_the_events },
        Case { name: "observe_after_a_fatal_xid_and_a_reset", run: observe_after_a_fatal_xid_and_a_reset },
        Case { name: "a_gpu_off_the_bus_is_lost_until_a_reboot", run: a_gpu_off_the_bus_is_lost_until_a_reboot },
        Case { name: "gpm_support_follows_the_architecture", run: gpm_support_follows_the_architecture },
        Case { name: "gpm_metrics_follow_the_activity", run: gpm_metrics_follow_the_activity },
        Case { name: "gpm_samples_of_what_is_not_there", run: gpm_samples_of_what_is_not_there },
    ]
}

/// Run every case on a fresh harness from `fresh`; the failures, in case order.
pub fn run_all<H: Harness>(mut fresh: impl FnMut() -> Result<H, String>) -> Vec<CaseFailure> {
    let mut failures = Vec::new();
    for case in cases() {
        let outcome = match fresh() {
            Ok(h) => catch_unwind(AssertUnwindSafe(|| (case.run)(&h)))
                .unwrap_or_else(|_| Err("the case panicked".to_string())),
            Err(e) => Err(format!("could not build a fresh harness: {e}")),
        };
        if let Err(message) = outcome {
            failures.push(CaseFailure { name: case.name, message });
        }
    }
    failures
}

/// (profile name, start, the GPU-instance id the driver gives it).
type IdSteps = &'static [(&'static str, u8, u32)];
/// (profile id, where the driver's default placement puts it; `None`: Insufficient Resources).
type CgiSteps = &'static [(u32, Option<u8>)];

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

fn ok<T>(r: Result<T, BackendError>, doing: &str) -> Result<T, String> {
    r.map_err(|e| format!("{doing}: unexpected error: {e}"))
}

/// Expect an error of `kind` (see [`BackendError::kind`]); return its message.
fn expect_err<T: std::fmt::Debug>(r: Result<T, BackendError>, kind: &str, doing: &str) -> Result<String, String> {
    match r {
        Ok(v) => Err(format!("{doing}: expected a {kind} error, got Ok({v:?})")),
        Err(e) if e.kind() == kind => Ok(e.to_string()),
        Err(e) => Err(format!("{doing}: expected a {kind} error, got {} ({e})", e.kind())),
    }
}

/// The GPU of the node that is a `model`.
fn gpu_of(h: &dyn Harness, model: &str) -> Result<(DeviceInfo, &'static GpuModel), String> {
    let want = catalog().model(model).map_err(|e| e.to_string())?;
    ok(h.backend().devices(), "devices")?
        .into_iter()
        .find(|d| d.model().is_some_and(|m| m.name == want.name))
        .map(|d| (d, want))
        .ok_or_else(|| format!("the node has no {model}"))
}

fn profile_id(model: &GpuModel, name: &str) -> Result<u32, String> {
    model.profile(name).map(|p| p.id).map_err(|e| e.to_string())
}

/// (profile id, start, size) of every GPU instance, sorted.
fn listed(h: &dyn Harness, gpu: u32) -> Result<Vec<(u32, u8, u8)>, String> {
    let mut v: Vec<(u32, u8, u8)> = ok(h.backend().gpu_instances(gpu), "list GPU instances")?
        .iter()
        .map(|g| (g.profile_id, g.placement.start, g.placement.size))
        .collect();
    v.sort_unstable();
    Ok(v)
}

/// Destroy every compute and GPU instance of a GPU.
fn clear(h: &dyn Harness, gpu: u32) -> Result<(), String> {
    let b = h.backend();
    for gi in ok(b.gpu_instances(gpu), "list GPU instances")? {
        for ci in ok(b.compute_instances(gpu, gi.id), "list compute instances")? {
            ok(b.destroy_compute_instance(gpu, gi.id, ci.id), "destroy compute instance")?;
        }
        ok(b.destroy_gpu_instance(gpu, gi.id), "destroy GPU instance")?;
    }
    ensure!(listed(h, gpu)?.is_empty(), "GPU {gpu} still has GPU instances after destroying them all");
    Ok(())
}

fn devices_match_catalog(h: &dyn Harness) -> Result<(), String> {
    let spec = NodeSpec::parse(SPEC).map_err(|e| e.to_string())?;
    let devices = ok(h.backend().devices(), "devices")?;
    let models = spec.models();
    ensure!(devices.len() == models.len(), "expected {} GPUs, got {}", models.len(), devices.len());
    let mut uuids = BTreeSet::new();
    let mut minors = BTreeSet::new();
    let mut buses = BTreeSet::new();
    for (i, (d, want)) in devices.iter().zip(&models).enumerate() {
        ensure!(d.index as usize == i, "device {i} reports index {}", d.index);
        ensure!(is_uuid_with_prefix(&d.uuid, "GPU-"), "GPU {i} UUID '{}' is not GPU-<uuid>", d.uuid);
        ensure!(uuids.insert(d.uuid.clone()), "GPU {i} repeats UUID {}", d.uuid);
        ensure!(minors.insert(d.minor_number), "GPU {i} repeats minor number {}", d.minor_number);
        ensure!(buses.insert(d.pci_bus_id.clone()), "GPU {i} repeats PCI bus id {}", d.pci_bus_id);
        let model = d
            .model()
            .ok_or_else(|| format!("GPU {i} ('{}', 0x{:04X}) is not in the catalog", d.name, d.pci_device_id))?;
        ensure!(model.name == want.name, "GPU {i} is a {}, expected {}", model.name, want.name);
        ensure!(
            model.pci_device_id_values().any(|id| id == d.pci_device_id),
            "GPU {i} PCI device id 0x{:04X} is not one of {}'s {:?}",
            d.pci_device_id,
            model.name,
            model.pci_device_ids
        );
        ensure!(
            model.product_names.contains(&d.name) || (model.product_names.is_empty() && d.name == model.name),
            "GPU {i} name '{}' is not one of {}'s product names {:?}",
            d.name,
            model.name,
            model.product_names
        );
        ensure!(d.memory_total_mib > 0, "GPU {i} reports no memory");
        let index = u32::try_from(i).map_err(|e| e.to_string())?;
        let numa = spec.numa_node_of(index);
        ensure!(d.numa_node == numa, "GPU {i} is on NUMA node {:?}, the node spec puts it on {numa:?}", d.numa_node);
        let cpus = spec.cpus_of_node(numa);
        ensure!(d.local_cpus == cpus, "GPU {i} local CPUs {:?}, the node spec says {cpus:?}", d.local_cpus);
    }
    Ok(())
}

fn unknown_gpu_and_profile(h: &dyn Harness) -> Result<(), String> {
    let b = h.backend();
    let n = u32::try_from(ok(b.devices(), "devices")?.len()).map_err(|e| e.to_string())?;
    expect_err(b.mig_mode(n + 7), "not_found", "MIG mode of a GPU index past the end")?;
    expect_err(b.gpu_instances(n + 7), "not_found", "GPU instances of a GPU index past the end")?;
    let (d, _) = gpu_of(h, "A100-40GB")?;
    expect_err(b.possible_placements(d.index, 999), "invalid_argument", "placements of profile 999")?;
    expect_err(b.create_gpu_instance(d.index, 999, None), "invalid_argument", "create profile 999")?;
    ensure!(listed(h, d.index)?.is_empty(), "a failed create left a GPU instance behind");
    Ok(())
}

fn mig_mode_get_and_set(h: &dyn Harness) -> Result<(), String> {
    let b = h.backend();
    let on = MigMode { current: true, pending: true };
    let off = MigMode { current: false, pending: false };
    for d in ok(b.devices(), "devices")? {
        let m = ok(b.mig_mode(d.index), "get MIG mode")?;
        ensure!(m == on, "GPU {} starts with MIG {m}, expected enabled", d.index);
    }
    // Hopper and later change at once on an idle GPU.
    let (h100, _) = gpu_of(h, "H100-80GB")?;
    let got = ok(b.set_mig_mode(h100.index, false), "disable MIG on the H100")?;
    ensure!(got == off, "disabling MIG on an idle H100 returned {got}");
    ensure!(ok(b.set_mig_mode(h100.index, true), "enable MIG on the H100")? == on, "re-enabling the H100 failed");
    let (a30, m30) = gpu_of(h, "A30-24GB")?;
    let g = a30.index;
    let got = set_mode_with_reset(h, g, false)?;
    ensure!(got == off, "disabling MIG on an idle GPU gave {got}");
    ensure!(ok(b.mig_mode(g), "get MIG mode")? == off, "MIG mode does not read back as disabled");
    let me = profile_id(m30, "1g.6gb")?;
    let msg = expect_err(b.create_gpu_instance(g, me, Some(0)), "not_supported", "create with MIG disabled")?;
    ensure!(msg.contains("MIG") && msg.contains("disabled"), "the refusal does not say MIG is disabled: {msg}");
    expect_err(b.gpu_instances(g), "not_supported", "list GPU instances with MIG disabled")?;
    ensure!(ok(b.set_mig_mode(g, false), "disable MIG again")? == off, "disabling twice changed something");
    ensure!(set_mode_with_reset(h, g, true)? == on, "enabling MIG on an idle GPU did not take effect");
    ensure!(ok(b.mig_mode(g), "get MIG mode")? == on, "MIG mode does not read back as enabled");

    // Disabling with GPU instances present is refused and changes nothing.
    let (a100, m100) = gpu_of(h, "A100-40GB")?;
    let gi = ok(b.create_gpu_instance(a100.index, profile_id(m100, "3g.20gb")?, Some(4)), "create 3g.20gb@4")?;
    let msg = expect_err(b.set_mig_mode(a100.index, false), "in_use", "disable MIG with a GPU instance")?;
    ensure!(msg.contains("3g.20gb"), "the refusal does not name the instance: {msg}");
    ensure!(ok(b.mig_mode(a100.index), "get MIG mode")? == on, "a refused disable changed the MIG mode");
    ok(b.destroy_gpu_instance(a100.index, gi.id), "destroy 3g.20gb@4")?;
    ensure!(set_mode_with_reset(h, a100.index, false)? == off, "disable after destroy failed");
    ensure!(set_mode_with_reset(h, a100.index, true)? == on, "re-enable failed");
    Ok(())
}

/// Set an idle Ampere GPU's MIG mode. nvml.h: the call may reset the GPU itself; where it does
/// not, the change is pending (`pending` is the new mode, `current` the old) until a GPU reset.
/// Either way the mode after a reset is the one asked for.
fn set_mode_with_reset(h: &dyn Harness, gpu: u32, enabled: bool) -> Result<MigMode, String> {
    let b = h.backend();
    let got = ok(b.set_mig_mode(gpu, enabled), "set MIG mode")?;
    if got.current == enabled {
        return Ok(got);
    }
    ensure!(got.pending == enabled, "GPU {gpu}: setting MIG mode gave {got}, neither the change nor pending");
    ensure!(ok(b.mig_mode(gpu), "get MIG mode")? == got, "a pending MIG mode does not read back as pending");
    h.reset_gpu(gpu)?;
    ok(b.mig_mode(gpu), "get MIG mode after the reset")
}

fn profiles_and_placements_match_catalog(h: &dyn Harness) -> Result<(), String> {
    let b = h.backend();
    for d in ok(b.devices(), "devices")? {
        let model = d.model().ok_or_else(|| format!("GPU {} is not in the catalog", d.index))?;
        let reported = ok(b.gpu_instance_profiles(d.index), "list GPU instance profiles")?;
        let got: BTreeSet<(u32, String, u8, u8, u8, u8)> = reported
            .iter()
            .map(|p| (p.id, p.name.clone(), p.compute_slices, p.memory_slices, p.placement_size, p.max_count))
            .collect();
        let want: BTreeSet<(u32, String, u8, u8, u8, u8)> = model
            .profiles
            .iter()
            .map(|p| (p.id, p.name.clone(), p.compute_slices, p.memory_slices, p.placement_size, p.max_count))
            .collect();
        ensure!(
            got == want,
            "GPU {} ({}) profiles differ from the catalog:\n got  {got:?}\n want {want:?}",
            d.index,
            model.name
        );
        ensure!(reported.len() == model.profiles.len(), "GPU {} lists a profile twice", d.index);
        for p in &reported {
            ensure!(p.memory_mib > 0 && p.sm_count > 0, "GPU {} profile {} reports no memory or SMs", d.index, p.name);
        }
        for p in &model.profiles {
            let mut got = ok(b.possible_placements(d.index, p.id), "possible placements")?;
            got.sort_unstable();
            let mut want: Vec<PlacementRange> =
                p.placements.iter().map(|&start| PlacementRange { start, size: p.placement_size }).collect();
            want.sort_unstable();
            ensure!(got == want, "GPU {} {} placements {got:?}, catalog {want:?}", d.index, p.name);
        }
    }
    Ok(())
}

/// Create `layout` at explicit placements (in the given order) and check it lists back.
fn create_and_check(h: &dyn Harness, gpu: u32, model: &GpuModel, layout: &[(&str, u8)]) -> Result<(), String> {
    let b = h.backend();
    let mut want = Vec::new();
    let mut ids = BTreeSet::new();
    for (name, start) in layout {
        let p = model.profile(name).map_err(|e| e.to_string())?;
        let gi =
            ok(b.create_gpu_instance(gpu, p.id, Some(*start)), &format!("create {name}@{start} on {}", model.name))?;
        ensure!(
            gi.profile_id == p.id && gi.placement == PlacementRange { start: *start, size: p.placement_size },
            "create {name}@{start} returned {gi:?}"
        );
        ensure!(ids.insert(gi.id), "GPU instance id {} handed out twice", gi.id);
        want.push((p.id, *start, p.placement_size));
    }
    want.sort_unstable();
    let got = listed(h, gpu)?;
    ensure!(got == want, "{}: listed {got:?}, created {want:?}", model.name);
    Ok(())
}

fn explicit_placements_list_back(h: &dyn Harness) -> Result<(), String> {
    let table: [(&str, &[(&str, u8)]); 4] = [
        ("A100-40GB", &[("3g.20gb", 4), ("2g.10gb", 0), ("1g.5gb", 2), ("1g.5gb", 3)]),
        ("H100-80GB", &[("1g.10gb", 6), ("2g.20gb", 4), ("4g.40gb", 0)]),
        ("A30-24GB", &[("1g.6gb", 1), ("2g.12gb", 2), ("1g.6gb+me", 0)]),
        ("RTX-PRO-6000", &[("1g.24gb", 9), ("2g.48gb", 0), ("1g.24gb+gfx", 6)]),
    ];
    for (model, layout) in table {
        let (d, m) = gpu_of(h, model)?;
        create_and_check(h, d.index, m, layout)?;
        clear(h, d.index)?;
    }
    Ok(())
}

fn gpu_instance_ids_follow_driver_ranges(h: &dyn Harness) -> Result<(), String> {
    // (model, [(profile, start, GPU instance id)]): NVIDIA's examples and the driver's id ranges.
    let table: [(&str, IdSteps); 4] = [
        ("A100-40GB", &[("1g.5gb", 6, 13), ("2g.10gb", 4, 5), ("4g.20gb", 0, 1)]),
        ("H100-80GB", &[("3g.40gb", 0, 1), ("3g.40gb", 4, 2)]),
        ("A30-24GB", &[("1g.6gb", 0, 3), ("1g.6gb", 1, 4), ("2g.12gb", 2, 2)]),
        ("RTX-PRO-6000", &[("1g.24gb", 0, 3), ("1g.24gb", 3, 4), ("1g.24gb", 6, 5), ("1g.24gb", 9, 6)]),
    ];
    let b = h.backend();
    for (model, steps) in table {
        let (d, m) = gpu_of(h, model)?;
        for (name, start, id) in steps {
            let gi = ok(b.create_gpu_instance(d.index, profile_id(m, name)?, Some(*start)), "create")?;
            ensure!(gi.id == *id, "{model} {name}@{start} got GPU instance id {}, the driver gives {id}", gi.id);
        }
        clear(h, d.index)?;
    }
    let (d, m) = gpu_of(h, "H100-80GB")?;
    let full = ok(b.create_gpu_instance(d.index, profile_id(m, "7g.80gb")?, Some(0)), "create 7g.80gb")?;
    ensure!(full.id == 0, "the full GPU instance got id {}, the driver gives 0", full.id);
    Ok(())
}

fn placement_rules_give_insufficient_resources(h: &dyn Harness) -> Result<(), String> {
    let b = h.backend();
    let ir = "insufficient_resources";
    let (a100, m) = gpu_of(h, "A100-40GB")?;
    let g = a100.index;
    ok(b.create_gpu_instance(g, profile_id(m, "3g.20gb")?, Some(4)), "create 3g.20gb@4")?;
    let msg = expect_err(b.create_gpu_instance(g, profile_id(m, "1g.5gb")?, Some(5)), ir, "1g.5gb@5 over 3g.20gb@4")?;
    ensure!(msg.contains("Insufficient Resources"), "message lacks 'Insufficient Resources': {msg}");
    expect_err(b.create_gpu_instance(g, profile_id(m, "3g.20gb")?, Some(2)), ir, "3g.20gb at illegal start 2")?;
    expect_err(b.create_gpu_instance(g, profile_id(m, "7g.40gb")?, Some(0)), ir, "7g.40gb next to 3g.20gb")?;
    ok(b.create_gpu_instance(g, profile_id(m, "1g.5gb+me")?, Some(0)), "create 1g.5gb+me@0")?;
    expect_err(b.create_gpu_instance(g, profile_id(m, "1g.5gb+me")?, Some(1)), ir, "a second 1g.5gb+me")?;
    ensure!(listed(h, g)?.len() == 2, "failed creations left GPU instances behind: {:?}", listed(h, g)?);

    let (h100, m) = gpu_of(h, "H100-80GB")?;
    let one = profile_id(m, "1g.10gb")?;
    for start in 0..7 {
        ok(b.create_gpu_instance(h100.index, one, Some(start)), "create 1g.10gb")?;
    }
    expect_err(b.create_gpu_instance(h100.index, one, Some(7)), ir, "an eighth 1g.10gb (start 7 is not legal)")?;

    let (rtx, m) = gpu_of(h, "RTX-PRO-6000")?;
    let g = rtx.index;
    ok(b.create_gpu_instance(g, profile_id(m, "1g.24gb+me.all")?, Some(0)), "create 1g.24gb+me.all@0")?;
    expect_err(b.create_gpu_instance(g, profile_id(m, "1g.24gb")?, Some(3)), ir, "1g.24gb next to +me.all")?;
    expect_err(b.create_gpu_instance(g, profile_id(m, "1g.24gb+me")?, Some(3)), ir, "1g.24gb+me next to +me.all")?;
    ok(b.create_gpu_instance(g, profile_id(m, "1g.24gb-me")?, Some(3)), "create 1g.24gb-me next to +me.all")?;
    let (a30, m) = gpu_of(h, "A30-24GB")?;
    ok(b.create_gpu_instance(a30.index, profile_id(m, "2g.12gb+me")?, Some(0)), "create 2g.12gb+me@0")?;
    expect_err(b.create_gpu_instance(a30.index, profile_id(m, "1g.6gb+me")?, Some(2)), ir, "two +me on an A30")?;
    Ok(())
}

fn default_placement_follows_driver(h: &dyn Harness) -> Result<(), String> {
    // NVIDIA's documented `nvidia-smi mig -cgi` examples: profile ids and where each landed
    // (`None`: Insufficient Resources).
    let table: [(&str, CgiSteps); 6] = [
        ("A100-40GB", &[(19, Some(6)), (19, Some(4)), (14, Some(0)), (9, None)]),
        ("A100-40GB", &[(9, Some(4)), (19, Some(0)), (14, Some(2)), (19, Some(1))]),
        ("A100-40GB", &[(14, Some(4)), (19, Some(6)), (19, Some(0)), (19, Some(1)), (19, Some(2)), (19, Some(3))]),
        ("A100-40GB", &[(19, Some(6)), (14, Some(4)), (5, Some(0))]),
        ("RTX-PRO-6000", &[(14, Some(0)), (14, Some(3)), (14, Some(6)), (14, Some(9))]),
        ("RTX-PRO-6000", &[(5, Some(0)), (14, Some(6)), (14, Some(9))]),
    ];
    let b = h.backend();
    for (model, steps) in table {
        let (d, _) = gpu_of(h, model)?;
        let order: Vec<String> = steps.iter().map(|(p, _)| p.to_string()).collect();
        let cgi = format!("{model} -cgi {}", order.join(","));
        for (profile, want) in steps {
            let got = b.create_gpu_instance(d.index, *profile, None);
            match (got, want) {
                (Ok(gi), Some(start)) => {
                    ensure!(
                        gi.placement.start == *start,
                        "{cgi}: profile {profile} landed at {}, the driver puts it at {start}",
                        gi.placement.start
                    )
                }
                (Err(e), None) => ensure!(
                    e.kind() == "insufficient_resources",
                    "{cgi}: profile {profile} failed with {e}, expected Insufficient Resources"
                ),
                (Ok(gi), None) => {
                    return Err(format!(
                        "{cgi}: profile {profile} was created at {}, the driver refuses it",
                        gi.placement
                    ));
                }
                (Err(e), Some(start)) => {
                    return Err(format!("{cgi}: profile {profile} failed ({e}), the driver puts it at {start}"));
                }
            }
        }
        clear(h, d.index)?;
    }
    Ok(())
}

fn compute_instances_uuids_and_caps(h: &dyn Harness) -> Result<(), String> {
    let b = h.backend();
    let (d, m) = gpu_of(h, "A100-40GB")?;
    let g = d.index;
    let gi = ok(b.create_gpu_instance(g, profile_id(m, "3g.20gb")?, Some(4)), "create 3g.20gb@4")?;
    ensure!(
        gi.caps_minor == Some(gi_caps_minor(d.minor_number, gi.id)),
        "GPU instance caps minor {:?} is not 3 + 135·{} + 9·{}",
        gi.caps_minor,
        d.minor_number,
        gi.id
    );
    let full = ok(b.create_compute_instance(g, gi.id, 2), "create the 3c compute instance")?;
    ensure!(
        full.id == 0 && full.gpu_instance_id == gi.id && full.profile_id == 2,
        "unexpected compute instance {full:?}"
    );
    ensure!(full.placement == PlacementRange { start: 0, size: 3 }, "3c compute instance at {}", full.placement);
    ensure!(is_uuid_with_prefix(&full.uuid, "MIG-"), "compute instance UUID '{}' is not MIG-<uuid>", full.uuid);
    ensure!(
        full.caps_minor == Some(ci_caps_minor(d.minor_number, gi.id, full.id)),
        "compute instance caps minor {:?} is not {}",
        full.caps_minor,
        ci_caps_minor(d.minor_number, gi.id, full.id)
    );
    let listed_cis = ok(b.compute_instances(g, gi.id), "list compute instances")?;
    ensure!(listed_cis == vec![full.clone()], "listed {listed_cis:?}, created {full:?}");
    expect_err(b.create_compute_instance(g, gi.id, 0), "insufficient_resources", "a 1c next to the 3c")?;
    expect_err(b.create_compute_instance(g, gi.id, 3), "invalid_argument", "a 4c compute instance in a 3g")?;
    expect_err(b.create_compute_instance(g, 14, 0), "not_found", "a compute instance in GPU instance 14")?;

    // Three 1c compute instances in a 3g at 0: placements 0, 1, 2; ids 0, 1, 2.
    let gi0 = ok(b.create_gpu_instance(g, profile_id(m, "3g.20gb")?, Some(0)), "create 3g.20gb@0")?;
    let mut uuids: BTreeSet<String> = BTreeSet::from([full.uuid.clone()]);
    for i in 0..3u8 {
        let ci = ok(b.create_compute_instance(g, gi0.id, 0), "create a 1c compute instance")?;
        ensure!(ci.id == u32::from(i) && ci.placement == PlacementRange { start: i, size: 1 }, "1c number {i}: {ci:?}");
        ensure!(uuids.insert(ci.uuid.clone()), "MIG UUID {} handed out twice", ci.uuid);
    }
    expect_err(b.create_compute_instance(g, gi0.id, 0), "insufficient_resources", "a fourth 1c in a 3g")?;
    // A recreated compute instance reuses the id and placement but gets a new UUID.
    ok(b.destroy_compute_instance(g, gi0.id, 1), "destroy compute instance 1")?;
    let again = ok(b.create_compute_instance(g, gi0.id, 0), "recreate a 1c compute instance")?;
    ensure!(again.id == 1 && again.placement.start == 1, "recreated 1c: {again:?}");
    ensure!(uuids.insert(again.uuid.clone()), "a recreated compute instance kept its old UUID {}", again.uuid);
    Ok(())
}

fn destroy_order_and_not_found(h: &dyn Harness) -> Result<(), String> {
    let b = h.backend();
    let (d, m) = gpu_of(h, "H100-80GB")?;
    let g = d.index;
    let gi = ok(b.create_gpu_instance(g, profile_id(m, "2g.20gb")?, Some(2)), "create 2g.20gb@2")?;
    let ci = ok(b.create_compute_instance(g, gi.id, 1), "create its 2c compute instance")?;
    let msg = expect_err(b.destroy_gpu_instance(g, gi.id), "in_use", "destroy a GPU instance with a compute instance")?;
    ensure!(msg.contains(&gi.id.to_string()), "the refusal does not name GPU instance {}: {msg}", gi.id);
    ensure!(listed(h, g)?.len() == 1, "a refused destroy removed the GPU instance");
    expect_err(b.destroy_compute_instance(g, gi.id, ci.id + 1), "not_found", "destroy an unknown compute instance")?;
    expect_err(b.destroy_gpu_instance(g, gi.id + 1), "not_found", "destroy an unknown GPU instance")?;
    expect_err(b.compute_instances(g, gi.id + 1), "not_found", "list compute instances of an unknown GPU instance")?;
    ok(b.destroy_compute_instance(g, gi.id, ci.id), "destroy the compute instance")?;
    ok(b.destroy_gpu_instance(g, gi.id), "destroy the GPU instance")?;
    expect_err(b.destroy_gpu_instance(g, gi.id), "not_found", "destroy it twice")?;
    ensure!(listed(h, g)?.is_empty(), "GPU instances left: {:?}", listed(h, g)?);
    Ok(())
}

fn busy_instances_are_not_destroyed(h: &dyn Harness) -> Result<(), String> {
    let b = h.backend();
    let (d, m) = gpu_of(h, "H100-80GB")?;
    let g = d.index;
    let gi = ok(b.create_gpu_instance(g, profile_id(m, "2g.20gb")?, Some(0)), "create 2g.20gb@0")?;
    let ci = ok(b.create_compute_instance(g, gi.id, 1), "create its compute instance")?;
    h.attach_process(g, gi.id, ci.id, 4242)?;
    let procs = ok(b.processes(g), "list processes")?;
    ensure!(
        procs.len() == 1
            && procs[0].pid == 4242
            && procs[0].gpu_instance_id == Some(gi.id)
            && procs[0].compute_instance_id == Some(ci.id),
        "processes: {procs:?}"
    );
    let msg = expect_err(b.destroy_compute_instance(g, gi.id, ci.id), "in_use", "destroy a busy compute instance")?;
    ensure!(msg.contains("4242"), "the refusal does not name the process: {msg}");
    let msg = expect_err(b.destroy_gpu_instance(g, gi.id), "in_use", "destroy a busy GPU instance")?;
    ensure!(msg.contains("4242") || msg.contains("compute instance"), "the refusal does not say why: {msg}");
    expect_err(b.set_mig_mode(g, false), "in_use", "disable MIG under a process")?;
    ensure!(ok(b.mig_mode(g), "MIG mode")?.current, "MIG was disabled under a running process");
    h.detach_process(g, 4242)?;
    ensure!(ok(b.processes(g), "list processes")?.is_empty(), "the process is still listed after it ended");
    ok(b.destroy_compute_instance(g, gi.id, ci.id), "destroy the idle compute instance")?;
    ok(b.destroy_gpu_instance(g, gi.id), "destroy the idle GPU instance")?;
    Ok(())
}

fn every_maximal_layout_round_trips(h: &dyn Harness) -> Result<(), String> {
    let b = h.backend();
    for d in ok(b.devices(), "devices")? {
        let model = d.model().ok_or_else(|| format!("GPU {} is not in the catalog", d.index))?;
        let layouts = Planner::new(model).maximal_layouts(None);
        ensure!(!layouts.is_empty(), "{} has no maximal layouts", model.name);
        for layout in layouts {
            round_trip(h, d.index, model, &layout)?;
        }
    }
    Ok(())
}

/// Create `layout` at explicit placements with a full compute instance each, read it back,
/// and destroy it again.
fn round_trip(h: &dyn Harness, gpu: u32, model: &GpuModel, layout: &[Instance]) -> Result<(), String> {
    let b = h.backend();
    let name = || {
        let parts: Vec<String> = layout.iter().map(|i| tessera_mig::layout::instance_label(model, i)).collect();
        format!("{} [{}]", model.name, parts.join(", "))
    };
    let mut uuids = BTreeSet::new();
    for inst in layout {
        let p = model.profile_by_id(inst.profile_id).ok_or_else(|| format!("{}: unknown profile", name()))?;
        let gi = b
            .create_gpu_instance(gpu, inst.profile_id, Some(inst.start))
            .map_err(|e| format!("{}: create {}@{}: {e}", name(), p.name, inst.start))?;
        let ci_profile = model
            .compute_instance_profiles(p.compute_slices)
            .iter()
            .find(|c| c.compute_slices == p.compute_slices)
            .ok_or_else(|| format!("{}: {} offers no full compute instance", name(), p.name))?;
        let ci = b
            .create_compute_instance(gpu, gi.id, ci_profile.id)
            .map_err(|e| format!("{}: compute instance in {}@{}: {e}", name(), p.name, inst.start))?;
        ensure!(uuids.insert(ci.uuid.clone()), "{}: MIG UUID {} handed out twice", name(), ci.uuid);
    }
    let mut want: Vec<(u32, u8)> = layout.iter().map(|i| (i.profile_id, i.start)).collect();
    want.sort_unstable();
    let gis = ok(b.gpu_instances(gpu), "list GPU instances")?;
    let mut got: Vec<(u32, u8)> = gis.iter().map(|g| (g.profile_id, g.placement.start)).collect();
    got.sort_unstable();
    ensure!(got == want, "{}: listed {got:?}", name());
    for gi in &gis {
        let cis = ok(b.compute_instances(gpu, gi.id), "list compute instances")?;
        ensure!(cis.len() == 1, "{}: GPU instance {} has {} compute instances", name(), gi.id, cis.len());
    }
    clear(h, gpu)
}

/// Wait for Xid events until `want` of them have come (or `deadline` passes).
fn collect_xids(b: &dyn MigBackend, want: usize, deadline: Duration) -> Result<Vec<XidEvent>, String> {
    let until = Instant::now() + deadline;
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < until {
        got.extend(ok(b.wait_xid_events(200), "wait for Xid events")?);
    }
    Ok(got)
}

fn xid_events_are_delivered_once(h: &dyn Harness) -> Result<(), String> {
    let b = h.backend();
    // The first call registers for events (NVML) and drains anything pending.
    ok(b.wait_xid_events(0), "wait for Xid events (first call)")?;
    // Nothing pending: the call returns within its timeout.
    let started = Instant::now();
    let none = ok(b.wait_xid_events(100), "wait for Xid events with none pending")?;
    let waited = started.elapsed();
    ensure!(none.is_empty(), "Xid events out of nowhere: {none:?}");
    ensure!(waited < Duration::from_millis(2000), "waiting 100 ms for Xid events took {waited:?}");

    let (d, m) = gpu_of(h, "A100-40GB")?;
    let gi = ok(b.create_gpu_instance(d.index, profile_id(m, "3g.20gb")?, Some(4)), "create 3g.20gb@4")?;
    let ci = ok(b.create_compute_instance(d.index, gi.id, 2), "create its compute instance")?;
    let (h100, _) = gpu_of(h, "H100-80GB")?;
    h.raise_xid(d.index, 94, Some(gi.id), Some(ci.id))?;
    h.raise_xid(h100.index, 79, None, None)?;
    let mut got = collect_xids(b, 2, Duration::from_secs(10))?;
    got.sort_by_key(|e| (e.gpu, e.xid));
    let mut want = vec![
        XidEvent { gpu: d.index, xid: 94, gpu_instance_id: Some(gi.id), compute_instance_id: Some(ci.id) },
        XidEvent { gpu: h100.index, xid: 79, gpu_instance_id: None, compute_instance_id: None },
    ];
    want.sort_by_key(|e| (e.gpu, e.xid));
    ensure!(got == want, "Xid events: got {got:?}, raised {want:?}");
    let again = ok(b.wait_xid_events(50), "wait for Xid events again")?;
    ensure!(again.is_empty(), "Xid events delivered twice: {again:?}");
    Ok(())
}

fn xid_health_follows_the_events(h: &dyn Harness) -> Result<(), String> {
    let b = h.backend();
    ok(b.wait_xid_events(0), "wait for Xid events (first call)")?;
    let (d, m) = gpu_of(h, "H100-80GB")?;
    let g = d.index;
    let two = profile_id(m, "2g.20gb")?;
    let a = ok(b.create_gpu_instance(g, two, Some(0)), "create 2g.20gb@0")?;
    let bb = ok(b.create_gpu_instance(g, two, Some(2)), "create 2g.20gb@2")?;
    // An application error, a contained ECC error in one instance, then a fatal one.
    h.raise_xid(g, 13, Some(a.id), Some(0))?;
    h.raise_xid(g, 94, Some(a.id), Some(0))?;
    let mut t = HealthTracker::new(1000);
    for e in collect_xids(b, 2, Duration::from_secs(10))? {
        t.record(&e, 10);
    }
    ensure!(
        t.instance_health(g, a.id).is_unhealthy(),
        "Xid 94 in GPU instance {} left it {}",
        a.id,
        t.instance_health(g, a.id)
    );
    ensure!(t.instance_health(g, bb.id).is_healthy(), "Xid 94 in GPU instance {} spread to {}", a.id, bb.id);
    h.raise_xid(g, 48, None, None)?;
    for e in collect_xids(b, 1, Duration::from_secs(10))? {
        t.record(&e, 20);
    }
    ensure!(t.gpu_health(g).is_unhealthy(), "Xid 48 left GPU {g} {}", t.gpu_health(g));
    ensure!(t.instance_health(g, bb.id).is_unhealthy(), "Xid 48 on the GPU left GPU instance {} healthy", bb.id);
    // A quiet period is not a reset.
    t.observe(g, &Observation::answered(&ok(b.observe(g), "observe")?), 100_000);
    ensure!(t.gpu_health(g).is_unhealthy(), "Xid 48 recovered without a reset: {}", t.gpu_health(g));
    h.reset_gpu(g)?;
    t.observe(g, &Observation::answered(&ok(b.observe(g), "observe after the reset")?), 100_010);
    ensure!(
        t.gpu_health(g).is_healthy(),
        "a reset and a successful probe did not recover GPU {g}: {}",
        t.gpu_health(g)
    );
    Ok(())
}

/// Whether a later observation shows a reset after an earlier one: the reset count grew, or the
/// driver's recovery action went from asking back to none.
fn shows_a_reset(before: &GpuObservation, after: &GpuObservation) -> bool {
    let counted = matches!((before.reset_count, after.reset_count), (Some(a), Some(b)) if b > a);
    let driver = before.recovery_action.is_some_and(|a| a != RecoveryAction::None)
        && after.recovery_action == Some(RecoveryAction::None);
    counted || driver
}

fn observe_after_a_fatal_xid_and_a_reset(h: &dyn Harness) -> Result<(), String> {
    let b = h.backend();
    ok(b.wait_xid_events(0), "wait for Xid events (first call)")?;
    let (d, m) = gpu_of(h, "A100-40GB")?;
    let g = d.index;
    let fresh = ok(b.observe(g), "observe a fresh GPU")?;
    ensure!(
        matches!(fresh.recovery_action, None | Some(RecoveryAction::None)),
        "a fresh GPU's recovery action is {:?}",
        fresh.recovery_action
    );
    ensure!(fresh.boot_id.as_deref().is_some_and(|id| !id.is_empty()), "no boot id: {fresh:?}");
    ensure!(fresh.reset_count.is_none_or(|c| c == 0), "a fresh GPU was reset {:?} times", fresh.reset_count);
    let gi = ok(b.create_gpu_instance(g, profile_id(m, "3g.20gb")?, Some(4)), "create 3g.20gb@4")?;
    let ci = ok(b.create_compute_instance(g, gi.id, 2), "create its compute instance")?;
    let mut t = HealthTracker::new(1000);
    t.observe(g, &Observation::answered(&fresh), 0);
    h.raise_xid(g, 48, None, None)?;
    for e in collect_xids(b, 1, Duration::from_secs(10))? {
        t.record(&e, 10);
    }
    let after = ok(b.observe(g), "observe after Xid 48")?;
    ensure!(
        after.recovery_action == Some(RecoveryAction::GpuReset),
        "after Xid 48 the driver's recovery action is {:?}, not a GPU reset",
        after.recovery_action
    );
    ensure!(after.reset_count == fresh.reset_count, "an Xid counted as a reset: {after:?}");
    t.observe(g, &Observation::answered(&after), 100_000);
    ensure!(t.gpu_health(g).is_unhealthy(), "Xid 48 recovered without a reset: {}", t.gpu_health(g));
    // A reset is refused while a process uses the GPU.
    h.attach_process(g, gi.id, ci.id, 4242)?;
    ensure!(h.reset_gpu(g).is_err(), "a GPU in use by a process was reset");
    h.detach_process(g, 4242)?;
    h.reset_gpu(g)?;
    let reset = ok(b.observe(g), "observe after the reset")?;
    ensure!(shows_a_reset(&after, &reset), "the reset does not show: {after:?} then {reset:?}");
    ensure!(reset.boot_id == fresh.boot_id, "a GPU reset changed the boot id: {fresh:?} then {reset:?}");
    ensure!(listed(h, g)?.is_empty(), "the reset left GPU instances: {:?}", listed(h, g)?);
    ensure!(ok(b.mig_mode(g), "MIG mode after the reset")?.current, "the reset turned MIG off");
    t.observe(g, &Observation::answered(&reset), 100_010);
    ensure!(t.gpu_health(g).is_healthy(), "the reset did not recover GPU {g}: {}", t.gpu_health(g));
    Ok(())
}

fn a_gpu_off_the_bus_is_lost_until_a_reboot(h: &dyn Harness) -> Result<(), String> {
    let b = h.backend();
    ok(b.wait_xid_events(0), "wait for Xid events (first call)")?;
    let (lost, _) = gpu_of(h, "H100-80GB")?;
    let (a100, m) = gpu_of(h, "A100-40GB")?;
    let (g, other) = (lost.index, a100.index);
    let before = ok(b.observe(g), "observe before")?;
    ok(b.create_gpu_instance(other, profile_id(m, "1g.5gb")?, Some(0)), "create 1g.5gb@0")?;
    let mut t = HealthTracker::new(1000);
    t.observe(g, &Observation::answered(&before), 0);
    h.raise_xid(g, 79, None, None)?;
    for e in collect_xids(b, 1, Duration::from_secs(10))? {
        t.record(&e, 10);
    }
    // The GPU does not answer; the others do.
    expect_err(b.observe(g), "gpu_lost", "observe a GPU off the bus")?;
    expect_err(b.mig_mode(g), "gpu_lost", "MIG mode of a GPU off the bus")?;
    expect_err(b.gpu_instances(g), "gpu_lost", "GPU instances of a GPU off the bus")?;
    expect_err(b.devices(), "gpu_lost", "every device, one off the bus")?;
    expect_err(crate::backend::device_by_index(b, g), "gpu_lost", "the device off the bus")?;
    ok(crate::backend::device_by_index(b, other), "another device")?;
    ok(b.observe(other), "observe another GPU")?;
    let partial = ok(b.devices_partial(), "every device, each on its own")?;
    let failed: Vec<u32> = partial.iter().filter_map(|d| d.as_ref().err().map(|f| f.gpu.index)).collect();
    ensure!(failed == [g] && partial.len() == 4, "devices one by one: failed {failed:?} of {}", partial.len());
    let view = ok(crate::view::node_view_partial(b), "read the node")?;
    ensure!(
        view.gpus.len() == 3 && view.failed.len() == 1,
        "node view: {} read, {} failed",
        view.gpus.len(),
        view.failed.len()
    );
    ensure!(view.failed[0].error.kind() == "gpu_lost", "node view: {}", view.failed[0].error);
    t.observe(g, &Observation::failed(), 20);
    ensure!(
        matches!(t.gpu_health(g), crate::health::Health::Unhealthy { needs: Recovery::RebootNode, .. }),
        "Xid 79: {}",
        t.gpu_health(g)
    );
    ensure!(h.reset_gpu(g).is_err(), "a GPU off the bus was reset");
    h.reboot()?;
    let after = ok(b.observe(g), "observe after the reboot")?;
    ensure!(
        matches!(after.recovery_action, None | Some(RecoveryAction::None)),
        "after the reboot the recovery action is {:?}",
        after.recovery_action
    );
    ensure!(
        after.boot_id.is_some() && after.boot_id != before.boot_id,
        "the reboot did not change the boot id: {:?} then {:?}",
        before.boot_id,
        after.boot_id
    );
    ensure!(ok(b.devices(), "every device after the reboot")?.len() == 4, "a GPU is missing after the reboot");
    ensure!(listed(h, other)?.is_empty(), "GPU instances survived the reboot: {:?}", listed(h, other)?);
    t.observe(g, &Observation::answered(&after), 30);
    ensure!(t.gpu_health(g).is_healthy(), "the reboot did not recover GPU {g}: {}", t.gpu_health(g));
    Ok(())
}

/// How long apart the GPM cases take their samples (NVML asks for more than 100 ms).
const GPM_INTERVAL: Duration = Duration::from_millis(250);

/// How far a GPM metric may be from the declared activity (the samples' own clocks decide the
/// interval, so the arithmetic is exact up to rounding).
const GPM_TOLERANCE: f64 = 0.02;

/// Every metric of `got` within [`GPM_TOLERANCE`] of `want`, and an interval near `GPM_INTERVAL`.
fn gpm_near(got: &GpmMetrics, want: &Activity, what: &str) -> Result<(), String> {
    for m in GpmMetric::ALL {
        let Some(v) = got.get(m) else {
            return Err(format!("{what}: no {} in {got:?}", m.name()));
        };
        let off = (v - want.get(m)).abs();
        ensure!(
            off.is_finite() && off <= GPM_TOLERANCE,
            "{what}: {} is {v}, declared {} ({got:?})",
            m.name(),
            want.get(m)
        );
    }
    let ms = GPM_INTERVAL.as_millis() as u64;
    ensure!(
        got.interval_ms >= ms - 10 && got.interval_ms < ms * 20,
        "{what}: an interval of {} ms for samples {ms} ms apart",
        got.interval_ms
    );
    Ok(())
}

/// A second sample, [`GPM_INTERVAL`] after the previous one, which must give metrics.
fn gpm_second(b: &dyn MigBackend, gpu: u32, gi: Option<u32>, what: &str) -> Result<GpmMetrics, String> {
    ok(b.gpm_sample(gpu, gi), what)?.ok_or_else(|| format!("{what}: no metrics from a second sample"))
}

fn gpm_support_follows_the_architecture(h: &dyn Harness) -> Result<(), String> {
    let b = h.backend();
    for d in ok(b.devices(), "devices")? {
        let model = d.model().ok_or_else(|| format!("GPU {}: no catalog model", d.index))?;
        let has = ok(b.gpm_supported(d.index), "ask for GPM support")?;
        ensure!(
            has == gpm_supported_by(model),
            "GPU {} ({}, {}): GPM support {has}",
            d.index,
            model.name,
            model.architecture
        );
        if has {
            continue;
        }
        // No GPM: neither the GPU nor an instance can be sampled, and nothing else breaks.
        expect_err(b.gpm_sample(d.index, None), "not_supported", "sample a GPU without GPM")?;
        let one = model.profiles.iter().find(|p| p.compute_slices == 1).ok_or("no 1-slice profile")?;
        let gi = ok(b.create_gpu_instance(d.index, one.id, Some(0)), "create a 1-slice instance")?;
        expect_err(b.gpm_sample(d.index, Some(gi.id)), "not_supported", "sample an instance of a GPU without GPM")?;
        ok(b.gpu_instances(d.index), "list GPU instances after the refused samples")?;
    }
    for model in ["A100-40GB", "A30-24GB"] {
        let (d, _) = gpu_of(h, model)?;
        ensure!(!ok(b.gpm_supported(d.index), "ask for GPM support")?, "{model} claims GPM");
    }
    let (d, _) = gpu_of(h, "H100-80GB")?;
    ensure!(ok(b.gpm_supported(d.index), "ask for GPM support")?, "H100 has no GPM");
    Ok(())
}

fn gpm_metrics_follow_the_activity(h: &dyn Harness) -> Result<(), String> {
    let b = h.backend();
    let (d, m) = gpu_of(h, "H100-80GB")?;
    let g = d.index;
    let busy = ok(b.create_gpu_instance(g, profile_id(m, "3g.40gb")?, Some(4)), "create 3g.40gb@4")?;
    let idle = ok(b.create_gpu_instance(g, profile_id(m, "1g.10gb")?, Some(0)), "create 1g.10gb@0")?;
    let work = Activity::new(0.6, 0.3, 0.25, 0.5).with(GpmMetric::Fp32Active, 0.4);
    let whole = Activity::new(0.9, 0.45, 0.1, 0.2).with(GpmMetric::Fp64Active, 0.05);
    h.set_activity(g, Some(busy.id), &work)?;
    h.set_activity(g, None, &whole)?;
    // The first sample of each has nothing to compare with.
    for gi in [Some(busy.id), Some(idle.id), None] {
        let first = ok(b.gpm_sample(g, gi), "first sample")?;
        ensure!(first.is_none(), "the first sample of {gi:?} gave metrics: {first:?}");
    }
    std::thread::sleep(GPM_INTERVAL);
    gpm_near(&gpm_second(b, g, Some(busy.id), "sample the busy instance")?, &work, "busy instance")?;
    gpm_near(&gpm_second(b, g, Some(idle.id), "sample the idle instance")?, &Activity::IDLE, "idle instance")?;
    gpm_near(&gpm_second(b, g, None, "sample the whole GPU")?, &whole, "whole GPU")?;
    // The next interval is the time since the last sample, not since the first: the work stopped.
    h.set_activity(g, Some(busy.id), &Activity::IDLE)?;
    std::thread::sleep(GPM_INTERVAL);
    gpm_near(&gpm_second(b, g, Some(busy.id), "sample after the work stopped")?, &Activity::IDLE, "stopped")?;
    Ok(())
}

fn gpm_samples_of_what_is_not_there(h: &dyn Harness) -> Result<(), String> {
    let b = h.backend();
    let (d, m) = gpu_of(h, "H100-80GB")?;
    let g = d.index;
    expect_err(b.gpm_sample(g, Some(3)), "not_found", "sample a GPU instance that does not exist")?;
    let one = profile_id(m, "1g.10gb")?;
    let gi = ok(b.create_gpu_instance(g, one, Some(0)), "create 1g.10gb@0")?;
    h.set_activity(g, Some(gi.id), &Activity::new(1.0, 1.0, 1.0, 1.0))?;
    ensure!(ok(b.gpm_sample(g, Some(gi.id)), "first sample")?.is_none(), "metrics from a first sample");
    // The instance goes: its sample fails, and the failure forgets the earlier sample.
    ok(b.destroy_gpu_instance(g, gi.id), "destroy it")?;
    expect_err(b.gpm_sample(g, Some(gi.id)), "not_found", "sample a destroyed GPU instance")?;
    let again = ok(b.create_gpu_instance(g, one, Some(0)), "create it again")?;
    ensure!(again.id == gi.id, "the same placement got GPU instance id {}, not {}", again.id, gi.id);
    let first = ok(b.gpm_sample(g, Some(again.id)), "first sample of the new instance")?;
    ensure!(first.is_none(), "a sample spanning a destroyed instance gave metrics: {first:?}");
    // MIG off: the whole GPU can be sampled, an instance cannot.
    ok(b.destroy_gpu_instance(g, again.id), "destroy it again")?;
    let mode = set_mode_with_reset(h, g, false)?;
    ensure!(!mode.current, "MIG still on: {mode:?}");
    expect_err(b.gpm_sample(g, Some(0)), "not_supported", "sample a GPU instance with MIG off")?;
    ok(b.gpm_sample(g, None), "sample the whole GPU with MIG off")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_names_are_unique() {
        let names: BTreeSet<&str> = cases().iter().map(|c| c.name).collect();
        assert_eq!(names.len(), cases().len());
    }

    #[test]
    fn in_memory_sim_passes() {
        let spec = NodeSpec::parse(SPEC).unwrap();
        let failures = run_all(|| Ok(SimBackend::in_memory(&spec)));
        assert!(failures.is_empty(), "{}", failures.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"));
    }

    /// A backend that breaks one rule must be caught.
    #[test]
    fn a_wrong_spec_fails_cases() {
        let wrong = NodeSpec::parse("1xA100-40GB,numa=2").unwrap();
        let failures = run_all(|| Ok(SimBackend::in_memory(&wrong)));
        assert!(failures.iter().any(|f| f.name == "devices_match_catalog"), "{failures:?}");
    }
}
