//! Helpers shared by the scheduler's tests: building cluster views, reading decisions, and a
//! small round-by-round simulator that carries decisions out as the daemon would.

#![allow(dead_code)]

use std::collections::BTreeMap;

use tessera_mig::{GpuModel, Instance, catalog};
use tessera_sched::{
    ClusterView, Decision, GpuRequest, GpuView, HostNuma, InstanceView, JobId, JobRequest, Occupant, PendingReason,
    QueuedJob, RankStart, RunningJob, Scheduler, Sharing, SlicePlacement,
};

pub fn model(name: &str) -> &'static GpuModel {
    catalog().model(name).unwrap()
}

pub fn pid(model: &GpuModel, profile: &str) -> u32 {
    model.profile(profile).unwrap().id
}

pub fn inst(model: &GpuModel, profile: &str, start: u8) -> Instance {
    Instance::new(pid(model, profile), start)
}

/// A GPU with instances `(profile, start, occupant)`.
pub fn gpu(index: u32, model_name: &str, numa: Option<u32>, instances: &[(&str, u8, Option<JobId>)]) -> GpuView {
    let m = model(model_name);
    let mut g = GpuView::new(index, m);
    g.numa_node = numa;
    g.instances = instances
        .iter()
        .map(|(p, s, occ)| InstanceView {
            instance: inst(m, p, *s),
            occupants: occ
                .map(|job| vec![Occupant { job, sharing: Sharing::Exclusive, user: 0, pinned: false }])
                .unwrap_or_default(),
            healthy: true,
        })
        .collect();
    g
}

pub fn cluster(gpus: Vec<GpuView>) -> ClusterView {
    ClusterView { gpus, ..ClusterView::default() }
}

pub fn host_node(node: u32, cpus: std::ops::Range<u32>, mem_mib: u64) -> HostNuma {
    HostNuma { node, free_cpus: cpus.collect(), free_mem_mib: mem_mib }
}

pub fn req(gpu: GpuRequest) -> JobRequest {
    JobRequest::new(gpu)
}

pub fn profile(name: &str) -> GpuRequest {
    GpuRequest::Profile { name: name.to_string() }
}

pub fn queued(id: JobId, request: JobRequest) -> QueuedJob {
    QueuedJob { id, request, submitted_ms: id, user: 0 }
}

/// Every start, as its slices in rank order.
pub fn starts(decisions: &[Decision]) -> BTreeMap<JobId, Vec<SlicePlacement>> {
    decisions
        .iter()
        .filter_map(|d| match d {
            Decision::Start { job, ranks } => Some((*job, ranks.iter().flat_map(|r| r.slices.clone()).collect())),
            _ => None,
        })
        .collect()
}

/// Every start, as its ranks.
pub fn rank_starts(decisions: &[Decision]) -> BTreeMap<JobId, Vec<RankStart>> {
    decisions
        .iter()
        .filter_map(|d| match d {
            Decision::Start { job, ranks } => Some((*job, ranks.clone())),
            _ => None,
        })
        .collect()
}

pub fn pending(decisions: &[Decision], id: JobId) -> Option<(PendingReason, String)> {
    decisions.iter().find_map(|d| match d {
        Decision::Pending { job, reason, detail } if *job == id => Some((*reason, detail.clone())),
        _ => None,
    })
}

pub fn reconfigures(decisions: &[Decision]) -> Vec<(u32, tessera_mig::ReconfigurePlan, JobId)> {
    decisions
        .iter()
        .filter_map(|d| match d {
            Decision::Reconfigure { gpu, plan, for_job } => Some((*gpu, plan.clone(), *for_job)),
            _ => None,
        })
        .collect()
}

pub fn preempts(decisions: &[Decision]) -> Vec<(JobId, JobId)> {
    decisions
        .iter()
        .filter_map(|d| match d {
            Decision::Preempt { job, for_job } => Some((*job, *for_job)),
            _ => None,
        })
        .collect()
}

/// A running job occupying the given instances exclusively (and the matching view entries).
pub fn running(id: JobId, request: JobRequest, started_ms: u64, at: &[(u32, Instance)]) -> RunningJob {
    let per = request.instances_per_rank().max(1);
    let ranks = at
        .chunks(per)
        .enumerate()
        .map(|(r, chunk)| RankStart {
            rank: u32::try_from(r).unwrap(),
            slices: chunk.iter().map(|(g, i)| SlicePlacement::new(*g, *i)).collect(),
        })
        .collect();
    RunningJob { id, request, started_ms, ranks, user: 0 }
}

/// Carries decisions out round by round, as the daemon would, with jobs ending after a given
/// actual runtime.
pub struct Sim {
    pub sched: Scheduler,
    pub cluster: ClusterView,
    pub queue: Vec<QueuedJob>,
    pub running: Vec<RunningJob>,
    pub now: u64,
    /// Actual runtime per job (jobs without one never end).
    pub runtime: BTreeMap<JobId, u64>,
    /// (job, tenant, start, end) of finished jobs.
    pub finished: Vec<(JobId, String, u64, u64)>,
    pub started_at: BTreeMap<JobId, u64>,
    pub preempted: Vec<JobId>,
    pub last: Vec<Decision>,
}

impl Sim {
    pub fn new(sched: Scheduler, cluster: ClusterView) -> Self {
        Sim {
            sched,
            cluster,
            queue: Vec::new(),
            running: Vec::new(),
            now: 0,
            runtime: BTreeMap::new(),
            finished: Vec::new(),
            started_at: BTreeMap::new(),
            preempted: Vec::new(),
            last: Vec::new(),
        }
    }

    pub fn submit(&mut self, id: JobId, request: JobRequest, runtime_ms: Option<u64>) {
        if let Some(r) = runtime_ms {
            self.runtime.insert(id, r);
        }
        self.queue.push(QueuedJob { id, request, submitted_ms: self.now, user: 0 });
    }

    fn remove_job(&mut self, id: JobId) -> Option<RunningJob> {
        let pos = self.running.iter().position(|r| r.id == id)?;
        let job = self.running.remove(pos);
        for g in &mut self.cluster.gpus {
            for i in &mut g.instances {
                i.occupants.retain(|o| o.job != id);
            }
        }
        for share in job.slices().flat_map(|s| s.host.iter()) {
            if let Some(h) = self.cluster.host.iter_mut().find(|h| h.node == share.node) {
                h.free_cpus.extend(share.cpus.iter().copied());
                h.free_cpus.sort_unstable();
                h.free_mem_mib += share.mem_mib;
            }
        }
        Some(job)
    }

    /// Advance to `now`, end due jobs, run one round and carry it out.
    pub fn step(&mut self, now: u64) -> Vec<Decision> {
        self.advance(now);
        self.round()
    }

    /// Advance to `now` and end the jobs that are due.
    pub fn advance(&mut self, now: u64) {
        self.now = now;
        let due: Vec<JobId> = self
            .running
            .iter()
            .filter(|r| self.runtime.get(&r.id).is_some_and(|d| r.started_ms + d <= now))
            .map(|r| r.id)
            .collect();
        for id in due {
            if let Some(j) = self.remove_job(id) {
                self.finished.push((id, j.request.tenant.clone(), j.started_ms, now));
            }
        }
    }

    /// Run one round at the current time and carry it out.
    pub fn round(&mut self) -> Vec<Decision> {
        let now = self.now;
        let decisions = self.sched.schedule(now, &self.cluster, &self.queue, &self.running);
        for d in &decisions {
            match d {
                Decision::Start { job, ranks } => {
                    let Some(pos) = self.queue.iter().position(|q| q.id == *job) else { continue };
                    let q = self.queue.remove(pos);
                    for r in ranks.iter().flat_map(|r| r.slices.iter()) {
                        let g = self.cluster.gpus.iter_mut().find(|g| g.gpu == r.gpu).unwrap();
                        let i = g.instances.iter_mut().find(|i| i.instance == r.instance).unwrap();
                        i.occupants.push(Occupant {
                            job: *job,
                            sharing: q.request.sharing,
                            user: q.user,
                            pinned: !q.request.pin.is_empty(),
                        });
                        for share in &r.host {
                            if let Some(h) = self.cluster.host.iter_mut().find(|h| h.node == share.node) {
                                h.free_cpus.retain(|c| !share.cpus.contains(c));
                                h.free_mem_mib -= share.mem_mib;
                            }
                        }
                    }
                    self.started_at.insert(*job, now);
                    self.running.push(RunningJob {
                        id: *job,
                        request: q.request,
                        started_ms: now,
                        ranks: ranks.clone(),
                        user: q.user,
                    });
                }
                Decision::Reconfigure { gpu, plan, .. } => {
                    let g = self.cluster.gpus.iter_mut().find(|g| g.gpu == *gpu).unwrap();
                    let old = std::mem::take(&mut g.instances);
                    g.instances = plan
                        .target
                        .iter()
                        .map(|t| {
                            old.iter().find(|o| o.instance == *t).cloned().unwrap_or_else(|| InstanceView::idle(*t))
                        })
                        .collect();
                    for o in &old {
                        if !plan.target.contains(&o.instance) {
                            assert!(o.occupants.is_empty(), "plan destroyed a busy instance");
                        }
                    }
                }
                Decision::Preempt { job, .. } => {
                    self.remove_job(*job);
                    self.preempted.push(*job);
                }
                Decision::SetMigMode { gpu, enabled, .. } => {
                    let g = self.cluster.gpus.iter_mut().find(|g| g.gpu == *gpu).unwrap();
                    assert!(g.instances.iter().all(|i| i.occupants.is_empty()), "switched a busy GPU");
                    let whole = GpuView::whole(g.gpu, g.model);
                    g.mig = *enabled;
                    g.instances = if *enabled { Vec::new() } else { whole.instances };
                }
                Decision::Pending { .. } => {}
            }
        }
        self.last = decisions.clone();
        decisions
    }
}
