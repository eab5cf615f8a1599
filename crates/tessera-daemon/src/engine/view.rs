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
    /// How the host CPUs and NUMA nodes above become this machine's when a job is bound.
    pub binding: HostBinding,
}

/// How a job's host CPUs and NUMA node (the scheduler's, from [`NodeFacts`]) become this
/// machine's when its ranks are bound.
///
/// On real GPUs they are this machine's own. On the simulated node the host is the spec's
/// (`8xH100-80GB,numa=2` has 224 CPUs and 2 TiB whatever runs it), and jobs still run here, so
/// the simulated ids are folded onto what the daemon itself may use: simulated CPU `c` runs on
/// the `c mod n`-th of the daemon's `n` CPUs (its affinity at start), simulated NUMA node `k`
/// binds memory to the `k mod m`-th of its `m` memory nodes. The memory limit is the job's
/// `--mem` as asked. The job is told what it was given on the simulated node in
/// `TESSERA_SIM_CPUS` (a cpulist) and `TESSERA_SIM_NUMA_NODE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostBinding {
    /// This machine's own CPU ids and NUMA nodes.
    Real,
    /// The simulated node's, folded onto these CPUs and memory nodes of this machine (either
    /// may be empty when this machine does not say: then nothing of that kind is bound).
    Simulated { cpus: Vec<u32>, mems: Vec<u32> },
}

impl HostBinding {
    /// The simulated node's host on the CPUs and memory nodes the daemon may use.
    pub fn here() -> HostBinding {
        let (allowed, notes) = tessera_exec::Allowed::here();
        for note in notes {
            tracing::info!("simulated node: {note}");
        }
        HostBinding::Simulated { cpus: allowed.cpus.into_iter().collect(), mems: allowed.mems.into_iter().collect() }
    }

    /// The CPUs of this machine that `cpus` (the scheduler's) run on.
    pub fn cpus(&self, cpus: &[u32]) -> Vec<u32> {
        match self {
            HostBinding::Real => cpus.to_vec(),
            HostBinding::Simulated { cpus: real, .. } if real.is_empty() => Vec::new(),
            HostBinding::Simulated { cpus: real, .. } => {
                let mut out: Vec<u32> = cpus.iter().map(|c| real[*c as usize % real.len()]).collect();
                out.sort_unstable();
                out.dedup();
                out
            }
        }
    }

    /// The memory node of this machine that NUMA node `node` (the scheduler's) binds to.
    pub fn mem_node(&self, node: u32) -> Option<u32> {
        match self {
            HostBinding::Real => Some(node),
            HostBinding::Simulated { mems, .. } => (!mems.is_empty()).then(|| mems[node as usize % mems.len()]),
        }
    }

    /// What a rank is told of its host share on the simulated node (nothing on real GPUs).
    pub fn env(&self, cpus: &[u32], node: Option<u32>) -> Vec<(String, String)> {
        match self {
            HostBinding::Real => Vec::new(),
            HostBinding::Simulated { .. } => {
                let mut env = vec![("TESSERA_SIM_CPUS".to_owned(), tessera_host::format_cpulist(cpus))];
                if let Some(node) = node {
                    env.push(("TESSERA_SIM_NUMA_NODE".to_owned(), node.to_string()));
                }
                env
            }
        }
    }
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
                    None => tracing::warn!("{} does not answer and was never seen before: left out", f.gpu),
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
        let (host_mem_mib, mig_per_process, binding) = match node {
            Node::Nvml(n) => {
                let nodes: Vec<u32> = host_cpus.keys().copied().collect();
                (tessera_host::memory::numa_memory_mib(&nodes), mig_per_process(n.driver_version()), HostBinding::Real)
            }
            // The simulated node's host is its spec's, never this machine's (its NUMA nodes
            // without GPUs included), and it models a current driver.
            Node::Sim(sim) => {
                let spec = sim.spec();
                host_cpus =
                    spec.host_nodes().map(|n| (n, spec.cpus_of_node((spec.numa_nodes() > 0).then_some(n)))).collect();
                let mem = spec.host_nodes().map(|n| (n, spec.memory_of_node(n))).collect();
                (mem, MIG_DEVICES_PER_PROCESS_R570, HostBinding::here())
            }
        };
        Ok((NodeFacts { gpus, host_cpus, host_mem_mib, mig_per_process, binding }, remember))
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
    /// instances (occupied by running jobs, pinned holds marked, or busy with processes Tessera
    /// did not start), and
    /// the host CPUs and memory running jobs leave free.
    pub(crate) fn cluster_view(&self, live: &NodeView, running: &[RunningJob]) -> ClusterView {
        let mut occupants: BTreeMap<(u32, u32, u8), Vec<Occupant>> = BTreeMap::new();
        for j in running {
            for s in j.slices() {
                occupants.entry((s.gpu, s.instance.profile_id, s.instance.start)).or_default().push(Occupant {
                    job: j.id,
                    sharing: j.request.sharing,
                    user: j.user,
                    pinned: !j.request.pin.is_empty(),
                });
            }
        }
        let foreign = Occupant { job: 0, sharing: Sharing::Exclusive, user: u32::MAX, pinned: false };
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

    #[test]
    fn the_simulated_host_folds_onto_this_machine() {
        // A 4-CPU machine with one memory node, under a 224-CPU simulated host on two nodes.
        let sim = HostBinding::Simulated { cpus: vec![0, 1, 2, 3], mems: vec![0] };
        let node1: Vec<u32> = (112..128).collect();
        assert_eq!(sim.cpus(&node1), [0, 1, 2, 3]);
        assert_eq!(sim.cpus(&[5, 6]), [1, 2]);
        assert_eq!((sim.mem_node(0), sim.mem_node(1)), (Some(0), Some(0)));
        let env = sim.env(&node1, Some(1));
        assert_eq!(
            env,
            [
                ("TESSERA_SIM_CPUS".to_owned(), "112-127".to_owned()),
                ("TESSERA_SIM_NUMA_NODE".to_owned(), "1".to_owned())
            ]
        );
        // Sparse real CPUs (a cpuset) and two memory nodes.
        let sparse = HostBinding::Simulated { cpus: vec![2, 3, 8], mems: vec![0, 1] };
        assert_eq!(sparse.cpus(&[0, 1, 2, 3]), [2, 3, 8]);
        assert_eq!((sparse.mem_node(0), sparse.mem_node(1), sparse.mem_node(2)), (Some(0), Some(1), Some(0)));
        // Nothing known of this machine: nothing bound.
        let unknown = HostBinding::Simulated { cpus: vec![], mems: vec![] };
        assert_eq!((unknown.cpus(&[0, 1]), unknown.mem_node(0)), (vec![], None));
        // Real GPUs: the ids are this machine's, and the job is told nothing more.
        assert_eq!((HostBinding::Real.cpus(&[7, 9]), HostBinding::Real.mem_node(1)), (vec![7, 9], Some(1)));
        assert!(HostBinding::Real.env(&[7], Some(1)).is_empty());
    }
}
