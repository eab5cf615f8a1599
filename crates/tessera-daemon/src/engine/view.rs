//! The node as the engine knows it: facts that do not change while the daemon runs
//! ([`NodeFacts`]: GPUs, their models, host CPUs and memory per NUMA node, the driver's limit on
//! MIG devices per process), the jobs holding slices (from the store, exactly as decided), and
//! each round the scheduler's [`ClusterView`] of the node.

use std::collections::BTreeMap;

use tessera_gpu::open::Node;
use tessera_gpu::view::NodeView;
use tessera_mig::{GpuModel, Instance};
use tessera_sched::{
    ClusterView, GpuView, HostNuma, InstanceView, MIG_DEVICES_PER_PROCESS_R570, Occupant, RankStart, RunningJob,
    Sharing, SlicePlacement, full_profile,
};
use tessera_store::{JobFilter, JobState};

use super::{Engine, EngineError};

/// One GPU, as found at start.
#[derive(Debug, Clone)]
pub struct GpuFact {
    pub index: u32,
    pub uuid: String,
    pub name: String,
    /// `/dev/nvidia<minor>`.
    pub minor: u32,
    pub numa_node: Option<u32>,
    /// Its catalog model, or (a GPU the catalog does not know) a whole-GPU-only model.
    pub model: &'static GpuModel,
    /// The model is the catalog's (the GPU can do MIG).
    pub catalog: bool,
}

impl GpuFact {
    /// Whether MIG is in force on this GPU, given the mode the driver reports: only a GPU the
    /// catalog knows is ever partitioned.
    pub fn mig_in_force(&self, current: bool) -> bool {
        self.catalog && current
    }
}

/// What the engine knows of the node for the daemon's life.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    pub gpus: Vec<GpuFact>,
    /// Host CPUs the daemon may hand out, per host NUMA node.
    pub host_cpus: BTreeMap<u32, Vec<u32>>,
    /// Host memory per NUMA node, in MiB.
    pub host_mem_mib: BTreeMap<u32, u64>,
    /// MIG devices one process may use: 64 from driver R570 on, 1 before.
    pub mig_per_process: u32,
}

/// MIG devices one process may use with this driver version (`mig-hardware.md`, "UUIDs and
/// CUDA enumeration").
pub fn mig_per_process(driver: &str) -> u32 {
    match driver.split('.').next().and_then(|m| m.trim().parse::<u32>().ok()) {
        Some(major) if major < 570 => 1,
        _ => MIG_DEVICES_PER_PROCESS_R570,
    }
}

impl NodeFacts {
    /// Reads the node: every GPU that answers, and the host around them. A GPU that does not
    /// answer (off the bus) is taken from `known`, what an earlier start read, so it is still
    /// reported and fenced. Returns the facts and, when every GPU answered, the devices to
    /// remember for next time.
    pub fn read(
        node: &Node,
        known: &[tessera_gpu::DeviceInfo],
    ) -> Result<(NodeFacts, Option<Vec<tessera_gpu::DeviceInfo>>), EngineError> {
        let backend = node.backend();
        let read = backend.devices_partial().map_err(|e| EngineError::Internal(format!("listing the GPUs: {e}")))?;
        let complete = read.iter().all(Result::is_ok);
        let mut devices = Vec::new();
        for r in read {
            match r {
                Ok(d) => devices.push(d),
                Err(f) => match f.device.or_else(|| known.iter().find(|k| k.index == f.gpu.index).cloned()) {
                    Some(d) => devices.push(d),
                    None => eprintln!("tessera serve: {} does not answer and was never seen before: left out", f.gpu),
                },
            }
        }
        let remember = complete.then(|| devices.clone());
        let mut gpus = Vec::new();
        let mut host_cpus: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        let mut plain: BTreeMap<(String, u64), &'static GpuModel> = BTreeMap::new();
        for d in &devices {
            let (model, catalog) = match d.model() {
                Some(m) => (m, true),
                None => {
                    let key = (d.name.clone(), d.memory_total_mib);
                    let m = *plain.entry(key).or_insert_with(|| {
                        // One per distinct GPU kind, for the daemon's life.
                        &*Box::leak(Box::new(GpuModel::whole_gpu_only(&d.name, d.memory_total_mib)))
                    });
                    (m, false)
                }
            };
            gpus.push(GpuFact {
                index: d.index,
                uuid: d.uuid.clone(),
                name: d.name.clone(),
                minor: d.minor_number,
                numa_node: d.numa_node,
                model,
                catalog,
            });
            let e = host_cpus.entry(d.numa_node.unwrap_or(0)).or_default();
            e.extend(d.local_cpus.iter().copied());
            e.sort_unstable();
            e.dedup();
        }
        let nodes: Vec<u32> = host_cpus.keys().copied().collect();
        let host_mem_mib = tessera_host::memory::numa_memory_mib(&nodes);
        // The simulated node models a current driver.
        let mig_per_process = match node {
            Node::Nvml(n) => mig_per_process(n.driver_version()),
            Node::Sim(_) => MIG_DEVICES_PER_PROCESS_R570,
        };
        Ok((NodeFacts { gpus, host_cpus, host_mem_mib, mig_per_process }, remember))
    }

    pub fn gpu(&self, index: u32) -> Option<&GpuFact> {
        self.gpus.iter().find(|g| g.index == index)
    }

    pub fn by_uuid(&self, uuid: &str) -> Option<&GpuFact> {
        self.gpus.iter().find(|g| g.uuid == uuid)
    }

    /// (index, UUID) of every GPU.
    pub fn ids(&self) -> Vec<(u32, String)> {
        self.gpus.iter().map(|g| (g.index, g.uuid.clone())).collect()
    }

    /// The node with nothing running, for admission: every GPU in its current MIG mode, every
    /// host CPU and all memory free.
    pub fn capacity(&self, live_mig: &BTreeMap<u32, bool>) -> ClusterView {
        let gpus = self
            .gpus
            .iter()
            .map(|g| {
                let mig = g.mig_in_force(live_mig.get(&g.index).copied().unwrap_or(true));
                let mut v = if mig { GpuView::new(g.index, g.model) } else { GpuView::whole(g.index, g.model) };
                v.numa_node = g.numa_node;
                v.mig_capable = g.catalog;
                v
            })
            .collect();
        ClusterView { gpus, host: self.host_capacity(), max_mig_devices_per_process: self.mig_per_process }
    }

    /// Every host NUMA node with all its CPUs and memory free.
    fn host_capacity(&self) -> Vec<HostNuma> {
        self.host_cpus
            .iter()
            .map(|(node, cpus)| HostNuma {
                node: *node,
                free_cpus: cpus.clone(),
                free_mem_mib: self.host_mem_mib.get(node).copied().unwrap_or(0),
            })
            .collect()
    }
}

impl Engine {
    /// The jobs that hold slices (placing or running), each rank with its slices, CPUs and
    /// memory exactly as the store recorded them.
    pub(crate) fn running_jobs(&mut self) -> Result<Vec<RunningJob>, EngineError> {
        let mut by_job: BTreeMap<u64, Vec<tessera_store::LiveAllocation>> = BTreeMap::new();
        for a in self.store.live_allocations()? {
            by_job.entry(a.job).or_default().push(a);
        }
        let recs = self
            .store
            .jobs(&JobFilter { states: vec![JobState::Placing, JobState::Running], ..JobFilter::default() })?;
        let mut out = Vec::new();
        for rec in recs {
            self.requests.entry(rec.id).or_insert_with(|| (rec.request.clone(), rec.user_uid));
            let mut ranks: Vec<RankStart> = Vec::new();
            let mut allocs = by_job.remove(&rec.id).unwrap_or_default();
            allocs.sort_by_key(|a| (a.rank, a.slice));
            for a in allocs {
                let slice = SlicePlacement {
                    gpu: a.allocation.gpu_index,
                    instance: Instance::new(a.allocation.profile_id, a.allocation.start),
                    numa_node: a.allocation.numa_node,
                    host: a.allocation.host.clone(),
                };
                match ranks.last_mut() {
                    Some(r) if r.rank == a.rank => r.slices.push(slice),
                    _ => ranks.push(RankStart { rank: a.rank, slices: vec![slice] }),
                }
            }
            out.push(RunningJob {
                id: rec.id,
                request: rec.request,
                started_ms: rec.started_ms.unwrap_or(rec.submitted_ms),
                ranks,
                user: rec.user_uid,
            });
        }
        Ok(out)
    }

    /// The scheduler's view of the node: every GPU with its health, drain, MIG mode and
    /// instances (occupied by running jobs, or busy with processes Tessera did not start), and
    /// the host CPUs and memory running jobs leave free.
    pub(crate) fn cluster_view(&self, live: &NodeView, running: &[RunningJob]) -> ClusterView {
        let mut occupants: BTreeMap<(u32, u32, u8), Vec<Occupant>> = BTreeMap::new();
        for j in running {
            for s in j.slices() {
                occupants.entry((s.gpu, s.instance.profile_id, s.instance.start)).or_default().push(Occupant {
                    job: j.id,
                    sharing: j.request.sharing,
                    user: j.user,
                });
            }
        }
        let foreign = Occupant { job: 0, sharing: Sharing::Exclusive, user: u32::MAX };
        let mut gpus = Vec::new();
        for g in &live.gpus {
            let Some(fact) = self.facts.gpu(g.device.index) else { continue };
            let index = fact.index;
            let health = self.health.gpu_health(index);
            let mut v = GpuView::new(index, fact.model);
            v.numa_node = fact.numa_node;
            v.healthy = !health.is_unhealthy();
            v.health_note = match &health {
                tessera_gpu::health::Health::Unhealthy { reason, .. } => Some(reason.clone()),
                _ => None,
            };
            v.drained = self.drains.contains_key(&fact.uuid);
            v.mig = fact.mig_in_force(g.mig.current);
            v.mig_capable = fact.catalog;
            if v.mig {
                v.instances = g
                    .instances
                    .iter()
                    .map(|i| {
                        let mut occ = occupants
                            .get(&(index, i.instance.profile_id, i.instance.start))
                            .cloned()
                            .unwrap_or_default();
                        // Work Tessera did not start (another tool's process) makes it busy too.
                        if occ.is_empty() && i.busy {
                            occ.push(foreign);
                        }
                        InstanceView {
                            instance: i.instance,
                            occupants: occ,
                            healthy: !self.health.instance_health(index, i.gpu_instance_id).is_unhealthy(),
                        }
                    })
                    .collect();
            } else if let Some(full) = full_profile(fact.model) {
                let mut occ = occupants.get(&(index, full.id, 0)).cloned().unwrap_or_default();
                // MIG off: any process on the GPU that is not ours makes it busy.
                if occ.is_empty() && self.backend().processes(index).is_ok_and(|p| !p.is_empty()) {
                    occ.push(foreign);
                }
                v.instances = vec![InstanceView { occupants: occ, ..InstanceView::idle(Instance::new(full.id, 0)) }];
            }
            gpus.push(v);
        }
        // A GPU that does not answer (lost, off the bus) is shown unhealthy with what it said.
        for f in &live.failed {
            let Some(fact) = self.facts.gpu(f.gpu.index) else { continue };
            if gpus.iter().any(|g: &GpuView| g.gpu == fact.index) {
                continue;
            }
            let mut v = GpuView::new(fact.index, fact.model);
            v.numa_node = fact.numa_node;
            v.healthy = false;
            v.health_note = Some(format!("it does not answer: {}", f.error));
            v.mig = fact.catalog;
            v.mig_capable = fact.catalog;
            gpus.push(v);
        }
        let mut view = ClusterView {
            gpus,
            host: self.facts.host_capacity(),
            max_mig_devices_per_process: self.facts.mig_per_process,
        };
        // What running jobs hold is not free (the scheduler's own accounting).
        view.take_host(running.iter().flat_map(RunningJob::slices).flat_map(|s| &s.host));
        view
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mig_devices_per_process_follow_the_driver() {
        for (driver, want) in
            [("550.54.15", 1), ("565.57.01", 1), ("570.86.10", 64), ("580.65.06", 64), ("garbled", 64)]
        {
            assert_eq!(mig_per_process(driver), want, "{driver}");
        }
    }
}
