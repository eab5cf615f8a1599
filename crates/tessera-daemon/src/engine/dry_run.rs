//! `submit --dry-run`: what a job would get if it were submitted now. Admission exactly as a
//! submission has it, then one scheduling decision on the node as it is, with the job queued
//! behind the jobs already waiting — on a copy of the scheduler, so nothing is started,
//! reconfigured, charged or written.

use tessera_mig::layout::instance_label;
use tessera_sched::{Decision, JobRequest, QueuedJob, RankStart};
use tessera_store::Work;

use super::round::{Sight, decide};
use super::{Caller, Engine, EngineError, WorkCheck};
use crate::wire::{DryRunRank, DryRunReconfigure, DryRunReply, DryRunSlice, DryRunVerdict};

impl Engine {
    /// A dry run of a submission whose work was checked ([`super::check_work`]).
    pub fn dry_run_checked(
        &mut self,
        caller: &Caller,
        request: JobRequest,
        work: Work,
        checked: WorkCheck,
    ) -> Result<DryRunReply, EngineError> {
        let (request, _work) = self.admitted(caller, request, work, checked)?;
        let now = tessera_host::now_ms();
        let Sight { live, running, cluster, mut queue, .. } = self.sight()?;
        // An id no job has, after every queued one.
        let probe = queue.iter().map(|q| q.id).chain(running.iter().map(|r| r.id)).max().unwrap_or(0) + 1;
        queue.push(QueuedJob { id: probe, request: request.clone(), submitted_ms: now, user: caller.uid });
        let mut scheduler = self.scheduler.clone();
        let decisions = decide(&mut scheduler, now, &cluster, &queue, &running)
            .ok_or_else(|| EngineError::Internal("the scheduler failed on this request".into()))?;

        let mut models: Vec<&'static tessera_mig::GpuModel> = Vec::new();
        for g in &self.facts.gpus {
            if !models.iter().any(|m| m.name == g.model.name) {
                models.push(g.model);
            }
        }
        let profiles = models
            .iter()
            .filter_map(|m| {
                let wanted = request.resolve(m).ok()?;
                let names: Vec<String> =
                    wanted.iter().filter_map(|w| m.profile_by_id(w.profile_id).map(|p| p.name.clone())).collect();
                Some(format!("{}: {}", m.name, names.join(" + ")))
            })
            .collect();
        let mut reply = DryRunReply {
            verdict: DryRunVerdict::Wait,
            profiles,
            ranks: Vec::new(),
            reconfigure: Vec::new(),
            preempt: Vec::new(),
            reason: String::new(),
        };
        for d in decisions.into_iter().filter(|d| d.job() == probe) {
            match d {
                Decision::Start { ranks, .. } => {
                    reply.verdict = DryRunVerdict::Start;
                    reply.ranks = ranks.iter().map(|r| self.dry_rank(&live, r)).collect();
                }
                Decision::Reconfigure { gpu, plan, .. } => {
                    reply.verdict = DryRunVerdict::Reconfigure;
                    let model = self.facts.gpu(gpu).map(|f| f.model);
                    let label = |i: &tessera_mig::Instance| match model {
                        Some(m) => instance_label(m, i),
                        None => format!("profile {}@{}", i.profile_id, i.start),
                    };
                    let steps = super::layout::step_lines(&plan, label);
                    reply.reconfigure.push(DryRunReconfigure { gpu, steps });
                }
                Decision::SetMigMode { gpu, enabled, .. } => {
                    reply.verdict = DryRunVerdict::Reconfigure;
                    let word = if enabled { "turn MIG on" } else { "turn MIG off" };
                    reply.reconfigure.push(DryRunReconfigure { gpu, steps: vec![word.to_string()] });
                }
                Decision::Preempt { job, .. } => {
                    reply.verdict = DryRunVerdict::Reconfigure;
                    reply.preempt.push(job);
                }
                Decision::Pending { reason, detail, .. } => {
                    reply.reason = format!("{reason}: {detail}");
                }
            }
        }
        Ok(reply)
    }

    /// Where a rank of a dry run would run, with the GPU instance there now.
    fn dry_rank(&self, live: &tessera_gpu::view::NodeView, r: &RankStart) -> DryRunRank {
        let slices = r
            .slices
            .iter()
            .map(|s| {
                let fact = self.facts.gpu(s.gpu);
                let view = live.gpus.iter().find(|g| g.device.index == s.gpu);
                let mig = match (fact, view) {
                    (Some(f), Some(v)) => f.mig_in_force(v.mig.current),
                    _ => true,
                };
                let gpu_instance_id = view.filter(|_| mig).and_then(|v| {
                    v.instances
                        .iter()
                        .find(|i| {
                            i.instance.profile_id == s.instance.profile_id && i.instance.start == s.instance.start
                        })
                        .map(|i| i.gpu_instance_id)
                });
                DryRunSlice {
                    gpu: s.gpu,
                    profile: fact.and_then(|f| f.model.profile_by_id(s.instance.profile_id)).map(|p| p.name.clone()),
                    start: s.instance.start,
                    mig,
                    gpu_instance_id,
                }
            })
            .collect();
        let cpus = r.cpus();
        DryRunRank {
            rank: r.rank,
            slices,
            cpus: (!cpus.is_empty()).then(|| tessera_host::format_cpulist(&cpus)),
            cpu_count: u32::try_from(cpus.len()).unwrap_or(u32::MAX),
            numa_node: r.numa_node(),
            mem_mib: r.mem_mib(),
        }
    }
}
