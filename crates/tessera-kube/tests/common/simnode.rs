//! A simulated GPU node behind [`LayoutApplier`]: catalog models with MIG on, instances held by
//! pods as a kubelet would report them, changes planned by Tessera's planner. It records every
//! instance it destroys with whether a pod held it, so a test can prove no busy instance was
//! touched even if the planner's refusal were broken.

use std::sync::{Arc, Mutex, MutexGuard};

use tessera_kube::annotations::instance_label;
use tessera_kube::{Applied, ApplyError, DesiredLayout, LayoutApplier, ReportedGpu, ReportedInstance, ReportedLayout};
use tessera_kube_core::PodRef;
use tessera_kube_core::repartition::instance_resource;
use tessera_mig::{
    CurrentInstance, GpuModel, Instance, ReconfigureError, ReconfigurePlan, Step, Wanted, catalog, reconfigure,
};
use tessera_migparted::{DeviceSummary, MigConfigFile, resolve};

#[derive(Debug, Clone)]
pub struct SimGpu {
    pub model: &'static GpuModel,
    /// Instances with the pod holding each.
    pub instances: Vec<(Instance, Option<PodRef>)>,
}

#[derive(Debug, Default)]
pub struct SimState {
    pub gpus: Vec<SimGpu>,
    /// Every instance destroyed, with the pod that held it then (always `None` when correct).
    pub destroyed: Vec<(u32, Instance, Option<PodRef>)>,
    pub created: Vec<(u32, Instance)>,
}

#[derive(Debug, Default)]
pub struct SimNode {
    state: Mutex<SimState>,
}

impl SimNode {
    /// A node of these catalog models, MIG on, no instances.
    pub fn new(models: &[&str]) -> Arc<SimNode> {
        let gpus = models
            .iter()
            .map(|m| SimGpu { model: catalog().model(m).expect("a catalog model"), instances: Vec::new() })
            .collect();
        Arc::new(SimNode { state: Mutex::new(SimState { gpus, ..SimState::default() }) })
    }

    pub fn state(&self) -> MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates an instance directly (the node as found).
    pub fn add(&self, gpu: usize, profile: &str, start: u8, holder: Option<PodRef>) {
        let mut s = self.state();
        let p = s.gpus[gpu].model.profiles.iter().find(|p| p.name == profile).expect("a profile of the model").id;
        s.gpus[gpu].instances.push((Instance::new(p, start), holder));
    }

    /// The profiles on a GPU, sorted (`["1g.5gb", "3g.20gb"]`).
    pub fn profiles(&self, gpu: usize) -> Vec<String> {
        let s = self.state();
        let g = &s.gpus[gpu];
        let mut v: Vec<String> = g
            .instances
            .iter()
            .map(|(i, _)| g.model.profile_by_id(i.profile_id).expect("profile").name.clone())
            .collect();
        v.sort();
        v
    }

    /// Gives a free device of `resource` to `pod`, as the kubelet does when the scheduler binds
    /// it; false when there is none.
    pub fn bind(&self, resource: &str, pod: &PodRef) -> bool {
        let mut s = self.state();
        for g in &mut s.gpus {
            let model = g.model;
            if let Some(slot) = g
                .instances
                .iter_mut()
                .find(|(i, h)| h.is_none() && instance_resource(model, i).as_deref() == Some(resource))
            {
                slot.1 = Some(pod.clone());
                return true;
            }
        }
        false
    }

    /// The pod's devices are given back (it ended).
    pub fn release(&self, pod: &PodRef) {
        for g in &mut self.state().gpus {
            for (_, h) in &mut g.instances {
                if h.as_ref() == Some(pod) {
                    *h = None;
                }
            }
        }
    }

    fn current(g: &SimGpu) -> Vec<CurrentInstance> {
        g.instances
            .iter()
            .map(|(i, h)| CurrentInstance { instance: *i, busy: h.is_some(), gpu_instance_id: None })
            .collect()
    }

    /// Plans every GPU's change first, then makes them all: a refusal changes nothing.
    fn apply(&self, wanted: Vec<(usize, Wanted)>) -> Result<Applied, ApplyError> {
        let mut s = self.state();
        let mut plans: Vec<(usize, ReconfigurePlan)> = Vec::new();
        for (gpu, w) in wanted {
            let g = s.gpus.get(gpu).ok_or_else(|| ApplyError::Failed(format!("the node has no GPU {gpu}")))?;
            match reconfigure(g.model, &Self::current(g), &w) {
                Ok(plan) => plans.push((gpu, plan)),
                Err(ReconfigureError::BusyInstancesBlock { blockers, .. }) => {
                    let b = &blockers[0];
                    let holder = g.instances.iter().find(|(i, _)| *i == b.instance).and_then(|(_, h)| h.clone());
                    return Err(ApplyError::Blocked {
                        gpu: u32::try_from(gpu).unwrap_or(u32::MAX),
                        instance: instance_label(&g.model.name, &b.instance),
                        holder,
                    });
                }
                Err(e) => return Err(ApplyError::Failed(format!("GPU {gpu}: {e}"))),
            }
        }
        let mut applied = Applied::default();
        for (gpu, plan) in plans {
            let index = u32::try_from(gpu).unwrap_or(u32::MAX);
            for step in plan.steps {
                match step {
                    Step::Destroy { instance, .. } => {
                        let g = &mut s.gpus[gpu];
                        let pos = g
                            .instances
                            .iter()
                            .position(|(i, _)| *i == instance)
                            .expect("the plan destroys what exists");
                        let (_, holder) = g.instances.remove(pos);
                        s.destroyed.push((index, instance, holder));
                        applied.destroyed += 1;
                    }
                    Step::Create { instance } => {
                        s.gpus[gpu].instances.push((instance, None));
                        s.created.push((index, instance));
                        applied.created += 1;
                    }
                }
            }
        }
        Ok(applied)
    }
}

impl LayoutApplier for SimNode {
    async fn report(&self) -> Result<Vec<ReportedGpu>, ApplyError> {
        let s = self.state();
        Ok(s.gpus
            .iter()
            .enumerate()
            .map(|(index, g)| {
                let mut instances: Vec<ReportedInstance> = g
                    .instances
                    .iter()
                    .map(|(i, h)| ReportedInstance {
                        instance: *i,
                        gpu_instance_id: None,
                        holder: h.clone(),
                        busy: false,
                    })
                    .collect();
                instances.sort_by_key(|i| i.instance.start);
                ReportedGpu {
                    index: u32::try_from(index).unwrap_or(u32::MAX),
                    model: g.model.name.clone(),
                    unhealthy: false,
                    draining: false,
                    layout: ReportedLayout::Mig { instances },
                }
            })
            .collect())
    }

    async fn apply_config(&self, file: &MigConfigFile, name: &str) -> Result<Applied, ApplyError> {
        let devices: Vec<DeviceSummary> = self
            .state()
            .gpus
            .iter()
            .enumerate()
            .map(|(i, g)| DeviceSummary {
                index: u32::try_from(i).unwrap_or(u32::MAX),
                pci_device_id: g
                    .model
                    .pci_device_ids
                    .first()
                    .and_then(|id| u16::from_str_radix(id.trim_start_matches("0x").get(..4).unwrap_or("0"), 16).ok())
                    .unwrap_or(0),
                pci_subsystem_id: 0,
                model: Some(g.model),
            })
            .collect();
        let targets = resolve(file, name, &devices).map_err(|e| ApplyError::Failed(e.to_string()))?;
        let mut wanted = Vec::new();
        for t in targets {
            if !t.mig_enabled {
                return Err(ApplyError::Failed(format!("GPU {}: the simulated node keeps MIG on", t.index)));
            }
            wanted.push((t.index as usize, Wanted::Profiles(t.wanted)));
        }
        self.apply(wanted)
    }

    async fn apply_layout(&self, desired: &DesiredLayout) -> Result<Applied, ApplyError> {
        let wanted = desired.gpus.iter().map(|g| (g.index as usize, Wanted::Layout(g.target.clone()))).collect();
        self.apply(wanted)
    }
}
