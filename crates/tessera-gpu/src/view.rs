//! The read model: what is on a GPU now, joined up from the backend's separate lists (GPU
//! instances, their compute instances, processes) into the planner's terms.
//!
//! The CLI shows it, and the daemon reconciles against it: [`GpuView::current`] is exactly the
//! `current` argument of [`tessera_mig::Planner::reconfigure`], with busy instances marked and the
//! driver's GPU-instance ids attached (the live key).

use serde::Serialize;
use tessera_mig::layout::{ci_placements, shape_type_name};
use tessera_mig::{ComputeShape, CurrentInstance, GpuModel, Instance, Profile};

use crate::backend::{BackendError, ComputeInstanceInfo, DeviceInfo, FailedGpu, MigBackend, MigMode, ProcessInfo};

/// One GPU as it is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GpuView {
    pub device: DeviceInfo,
    pub mig: MigMode,
    /// The catalog model, when the GPU is one Tessera knows.
    #[serde(serialize_with = "model_name")]
    pub model: Option<&'static GpuModel>,
    /// The GPU instances, by start. Empty when MIG is off.
    pub instances: Vec<LiveInstance>,
}

fn model_name<S: serde::Serializer>(m: &Option<&'static GpuModel>, s: S) -> Result<S::Ok, S::Error> {
    match m {
        Some(m) => s.serialize_some(&m.name),
        None => s.serialize_none(),
    }
}

/// One GPU instance as it is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LiveInstance {
    /// Its spec key. `compute` is `Full` when exactly one compute instance spans the GPU
    /// instance, `Slices(c)` when exactly one smaller one exists, `Split` for several that the
    /// catalog's rules can make, and `Other` otherwise (none, or an inexpressible set).
    pub instance: Instance,
    pub gpu_instance_id: u32,
    /// Minor of the GPU instance's `/dev/nvidia-caps/nvidia-cap<minor>` (`None` where the driver
    /// does not publish `mig-minors`); each compute instance carries its own.
    pub caps_minor: Option<u32>,
    /// `3g.20gb`: from the catalog, else from the driver, else `profile#<id>`.
    pub profile_name: String,
    /// Width in placement units.
    pub placement_size: u8,
    pub compute_instances: Vec<ComputeInstanceInfo>,
    /// Processes running in it.
    pub processes: Vec<ProcessInfo>,
    /// Whether any process runs in it.
    pub busy: bool,
}

impl LiveInstance {
    /// `3g.20gb@4`, or `1c.3g.20gb@4` for a smaller compute instance, `(1c.3g.20gb ×3)@4` for a
    /// split (as `tessera_mig::layout::instance_label` writes them).
    pub fn label(&self) -> String {
        let name = shape_type_name(&self.profile_name, 0, self.instance.compute);
        match self.instance.compute {
            ComputeShape::Full | ComputeShape::Slices(_) => format!("{name}@{}", self.instance.start),
            ComputeShape::Split(_) => format!("({name})@{}", self.instance.start),
            ComputeShape::Other => format!("{}@{} (custom compute instances)", self.profile_name, self.instance.start),
        }
    }
}

impl GpuView {
    /// The instances in the planner's terms: busy marks and GPU-instance ids included.
    pub fn current(&self) -> Vec<CurrentInstance> {
        self.instances
            .iter()
            .map(|i| CurrentInstance { instance: i.instance, busy: i.busy, gpu_instance_id: Some(i.gpu_instance_id) })
            .collect()
    }

    /// The layout: every instance, by start.
    pub fn layout(&self) -> Vec<Instance> {
        self.instances.iter().map(|i| i.instance).collect()
    }
}

/// Read one GPU.
pub fn gpu_view(backend: &dyn MigBackend, gpu: u32) -> Result<GpuView, BackendError> {
    view_of(backend, crate::backend::device_by_index(backend, gpu)?)
}

/// Read every GPU of the node, by index: all or nothing (the first GPU that fails fails the
/// read). [`node_view_partial`] reads the others when one fails.
pub fn node_view(backend: &dyn MigBackend) -> Result<Vec<GpuView>, BackendError> {
    let mut devices = backend.devices()?;
    devices.sort_by_key(|d| d.index);
    devices.into_iter().map(|d| view_of(backend, d)).collect()
}

/// The node as far as it could be read: the GPUs that answered, and each GPU that failed with
/// its error.
#[derive(Debug, Serialize)]
pub struct NodeView {
    /// The GPUs read, by index.
    pub gpus: Vec<GpuView>,
    /// The GPUs that failed (lost, or refusing a call), by index.
    pub failed: Vec<FailedGpu>,
}

impl NodeView {
    /// Every GPU read, or the first failure.
    #[cfg(test)]
    pub fn complete(self) -> Result<Vec<GpuView>, BackendError> {
        match self.failed.into_iter().next() {
            Some(f) => Err(f.error),
            None => Ok(self.gpus),
        }
    }
}

/// Read every GPU of the node, by index; a GPU that fails (e.g. one that fell off the bus) is
/// reported in [`NodeView::failed`] and does not hide the others. `Err` only when the node
/// cannot be enumerated at all.
pub fn node_view_partial(backend: &dyn MigBackend) -> Result<NodeView, BackendError> {
    let mut out = NodeView { gpus: Vec::new(), failed: Vec::new() };
    for d in backend.devices_partial()? {
        match d {
            Ok(device) => {
                let gpu = device.gpu_ref();
                let kept = device.clone();
                match view_of(backend, device) {
                    Ok(v) => out.gpus.push(v),
                    Err(error) => out.failed.push(FailedGpu { gpu, device: Some(kept), error }),
                }
            }
            Err(f) => out.failed.push(f),
        }
    }
    out.gpus.sort_by_key(|v| v.device.index);
    out.failed.sort_by_key(|f| f.gpu.index);
    Ok(out)
}

/// The compute shape of a GPU instance holding `cis`: one compute instance is `Full` or
/// `Slices`, several are the `Split` of their sizes when the catalog's rules can make that split
/// (created largest first, each at its lowest free placement), and anything else (none, or a
/// split the catalog cannot make) is `Other`. Without a catalog profile, several compute
/// instances are taken as the split of their sizes.
fn shape_of(
    profile: Option<(&Profile, &GpuModel)>,
    gi_slices: Option<u8>,
    cis: &[ComputeInstanceInfo],
) -> ComputeShape {
    let sizes: Vec<u8> = cis.iter().map(|c| c.placement.size).collect();
    let Some(shape) = ComputeShape::from_sizes(gi_slices.unwrap_or(0), &sizes) else {
        return ComputeShape::Other;
    };
    match (shape, profile) {
        (ComputeShape::Split(split), Some((p, m))) if ci_placements(m, p, split.as_slice()).is_err() => {
            ComputeShape::Other
        }
        _ => shape,
    }
}

fn view_of(backend: &dyn MigBackend, device: DeviceInfo) -> Result<GpuView, BackendError> {
    let gpu = device.index;
    // A GPU without MIG at all (NVML: NOT_SUPPORTED) is shown with MIG off, so a node that
    // mixes MIG and non-MIG GPUs can still be listed.
    let mig = match backend.mig_mode(gpu) {
        Err(BackendError::NotSupported { .. }) => MigMode { current: false, pending: false },
        other => other?,
    };
    let model = device.model();
    let mut instances = Vec::new();
    if mig.current {
        let driver_profiles = backend.gpu_instance_profiles(gpu)?;
        let processes = backend.processes(gpu)?;
        for gi in backend.gpu_instances(gpu)? {
            let catalog_profile = model.and_then(|m| m.profile_by_id(gi.profile_id));
            let driver_profile = driver_profiles.iter().find(|p| p.id == gi.profile_id);
            let profile_name = catalog_profile
                .map(|p| p.name.clone())
                .or_else(|| driver_profile.map(|p| p.name.clone()))
                .unwrap_or_else(|| format!("profile#{}", gi.profile_id));
            let gi_slices =
                driver_profile.map(|p| p.compute_slices).or_else(|| catalog_profile.map(|p| p.compute_slices));
            let mut cis = backend.compute_instances(gpu, gi.id)?;
            cis.sort_by_key(|c| c.id);
            let compute = shape_of(catalog_profile.zip(model), gi_slices, &cis);
            let procs: Vec<ProcessInfo> =
                processes.iter().filter(|p| p.gpu_instance_id == Some(gi.id)).cloned().collect();
            instances.push(LiveInstance {
                instance: Instance { profile_id: gi.profile_id, start: gi.placement.start, compute },
                gpu_instance_id: gi.id,
                caps_minor: gi.caps_minor,
                profile_name,
                placement_size: gi.placement.size,
                compute_instances: cis,
                busy: !procs.is_empty(),
                processes: procs,
            });
        }
        instances.sort_by_key(|i| (i.instance.start, i.instance.profile_id, i.gpu_instance_id));
    }
    Ok(GpuView { device, mig, model, instances })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NodeSpec, SimBackend};

    fn a100() -> SimBackend {
        SimBackend::in_memory(&NodeSpec::parse("1xA100-40GB+1xA30,mig=on").unwrap())
    }

    #[test]
    fn shapes_busy_marks_and_current() {
        let b = a100();
        // 3g@4 with its full CI; 2g@0 with one 1c CI; 1g@2 with no CI; 1g@3 with its CI, busy.
        let g3 = b.create_gpu_instance(0, 9, Some(4)).unwrap();
        b.create_compute_instance(0, g3.id, 2).unwrap();
        let g2 = b.create_gpu_instance(0, 14, Some(0)).unwrap();
        b.create_compute_instance(0, g2.id, 0).unwrap();
        let g1 = b.create_gpu_instance(0, 19, Some(2)).unwrap();
        let g1b = b.create_gpu_instance(0, 19, Some(3)).unwrap();
        let ci = b.create_compute_instance(0, g1b.id, 0).unwrap();
        b.attach_process(0, g1b.id, ci.id, 4242, "python").unwrap();

        let v = gpu_view(&b, 0).unwrap();
        assert_eq!(v.model.map(|m| m.name.as_str()), Some("A100-40GB"));
        assert!(v.mig.current);
        let summary: Vec<(String, ComputeShape, bool)> =
            v.instances.iter().map(|i| (i.label(), i.instance.compute, i.busy)).collect();
        assert_eq!(
            summary,
            [
                ("1c.2g.10gb@0".to_string(), ComputeShape::Slices(1), false),
                ("1g.5gb@2 (custom compute instances)".to_string(), ComputeShape::Other, false),
                ("1g.5gb@3".to_string(), ComputeShape::Full, true),
                ("3g.20gb@4".to_string(), ComputeShape::Full, false),
            ]
        );
        let busy = &v.instances[2];
        assert_eq!(busy.processes[0].pid, 4242);
        assert_eq!(busy.gpu_instance_id, g1b.id);
        let current = v.current();
        assert_eq!(current.len(), 4);
        assert_eq!(current[2].gpu_instance_id, Some(g1b.id));
        assert!(current[2].busy);
        assert_eq!(current[1].gpu_instance_id, Some(g1.id));
        assert_eq!(v.layout().iter().map(|i| i.start).collect::<Vec<_>>(), [0, 2, 3, 4]);
        // The planner accepts it as the current layout.
        let m = v.model.unwrap();
        let plan =
            tessera_mig::Planner::new(m).reconfigure(&current, &tessera_mig::Wanted::Layout(v.layout())).unwrap();
        assert!(plan.is_empty());
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["model"], "A100-40GB");
    }

    #[test]
    fn several_compute_instances_read_as_their_split_or_other() {
        let b = SimBackend::in_memory(&NodeSpec::parse("2xH100-80GB,mig=on").unwrap());
        let m = tessera_mig::catalog().model("H100-80GB").unwrap();
        let ci = |size: u8| m.compute_instance_profiles(7).iter().find(|c| c.compute_slices == size).unwrap().id;
        // GPU 0: 1c, 1c and 2c made in any order read as the split [2, 1, 1].
        let g = b.create_gpu_instance(0, 0, Some(0)).unwrap();
        for size in [1, 1, 2] {
            b.create_compute_instance(0, g.id, ci(size)).unwrap();
        }
        // GPU 1: 2c@0, 2c@2, 3c@4, which made largest first cannot be placed: `Other`.
        let g = b.create_gpu_instance(1, 0, Some(0)).unwrap();
        for size in [2, 2, 3] {
            b.create_compute_instance(1, g.id, ci(size)).unwrap();
        }
        let split = tessera_mig::layout::CiSizes::new(&[2, 1, 1]).unwrap();
        let v = gpu_view(&b, 0).unwrap();
        assert_eq!(v.instances[0].instance.compute, ComputeShape::Split(split));
        assert_eq!(v.instances[0].label(), "(2c.7g.80gb + 1c.7g.80gb ×2)@0");
        let v = gpu_view(&b, 1).unwrap();
        assert_eq!(v.instances[0].instance.compute, ComputeShape::Other);
    }

    #[test]
    fn gpus_unknown_to_the_catalog_are_still_listed() {
        let w = crate::testing::Wrapped {
            disguise: Some(|d| {
                d.pci_device_id = 0xbeef;
                d.name = "NVIDIA Future GPU".into();
            }),
            ..crate::testing::Wrapped::new(a100())
        };
        let g = w.inner.create_gpu_instance(0, 9, Some(0)).unwrap();
        w.inner.create_compute_instance(0, g.id, 2).unwrap();
        let g = w.inner.create_gpu_instance(0, 14, Some(4)).unwrap();
        w.inner.create_compute_instance(0, g.id, 0).unwrap();
        let v = gpu_view(&w, 0).unwrap();
        assert!(v.model.is_none());
        let labels: Vec<String> = v.instances.iter().map(LiveInstance::label).collect();
        // Names and the compute split come from the driver's profile list.
        assert_eq!(labels, ["3g.20gb@0", "1c.2g.10gb@4"]);
        assert_eq!(v.instances[0].placement_size, 4);
        assert_eq!(v.current().len(), 2);
    }

    #[test]
    fn one_failing_gpu_does_not_hide_the_others() {
        let b = SimBackend::in_memory(&NodeSpec::parse("3xA100-40GB,mig=on").unwrap());
        b.create_gpu_instance(2, 9, Some(0)).unwrap();
        b.raise_xid(1, 79, None, None).unwrap();
        // The strict read fails; the partial one reads GPUs 0 and 2 and names GPU 1.
        assert_eq!(node_view(&b).unwrap_err().kind(), "gpu_lost");
        let v = node_view_partial(&b).unwrap();
        assert_eq!(v.gpus.iter().map(|g| g.device.index).collect::<Vec<_>>(), [0, 2]);
        assert_eq!(v.gpus[1].instances.len(), 1);
        assert_eq!(v.failed.len(), 1);
        assert_eq!(v.failed[0].gpu.index, 1);
        assert!(v.failed[0].gpu.uuid.is_some());
        assert_eq!(v.failed[0].error.kind(), "gpu_lost");
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["failed"][0]["error"]["kind"], "gpu_lost");
        assert_eq!(json["failed"][0]["gpu"]["index"], 1);
        // Single-GPU reads of the others still work; the lost one says it is lost.
        assert!(gpu_view(&b, 2).is_ok());
        assert_eq!(gpu_view(&b, 1).unwrap_err().kind(), "gpu_lost");
        assert!(v.complete().is_err());
        // A call that fails after the device list (here: a GPU whose instances cannot be
        // listed) is reported too, with what was read of the device.
        let w = crate::testing::Wrapped::new(SimBackend::in_memory(&NodeSpec::parse("2xA100-40GB,mig=on").unwrap()));
        *w.fail_gi_lists.lock().unwrap() = Some(1);
        let v = node_view_partial(&w).unwrap();
        assert_eq!(v.gpus.len(), 1);
        assert_eq!(v.failed[0].gpu.index, 1);
        assert!(v.failed[0].device.is_some());
    }

    #[test]
    fn node_view_covers_mig_off_gpus_and_unknown_index() {
        let b = a100();
        b.set_mig_mode(1, false).unwrap();
        b.reset_gpu(1).unwrap();
        let all = node_view(&b).unwrap();
        assert_eq!(all.len(), 2);
        assert!(!all[1].mig.current);
        assert!(all[1].instances.is_empty());
        let e = gpu_view(&b, 7).unwrap_err();
        assert!(matches!(e, BackendError::NotFound { .. }), "{e}");
    }
}
