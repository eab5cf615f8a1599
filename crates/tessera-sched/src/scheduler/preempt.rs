//! Preemption: a job of higher priority that cannot start takes room from running jobs of
//! strictly lower priority (the fewest needed, lowest priority and most recent first), which
//! are then stopped by the daemon and, unless they opted out, queued again.

use std::cmp::Reverse;
use std::collections::BTreeSet;

use tessera_mig::Instance;

use super::{Hold, HoldKind, Round};
use crate::cluster::JobId;
use crate::job::{Decision, PendingReason, QueuedJob, RunningJob};
use crate::placement::{Ctx, WState, attempt};

impl Round<'_> {
    /// The state with these running jobs gone (their instances idle, their CPUs and memory free).
    pub(super) fn without_jobs(&self, base: &WState, jobs: &[&RunningJob]) -> WState {
        let mut s = base.clone();
        let ids: BTreeSet<JobId> = jobs.iter().map(|j| j.id).collect();
        for gpu in &mut s.gpus {
            for w in &mut gpu.insts {
                w.occupants.retain(|o| !ids.contains(&o.job));
            }
        }
        for j in jobs {
            s.give_back_host(j.slices());
        }
        s
    }

    /// Preempt lower-priority running jobs to make room, if that would let `job` start.
    pub(super) fn try_preempt(&mut self, job: &QueuedJob, ctx: &Ctx<'_>, label: &str) -> bool {
        let prio = job.request.priority;
        let protected: BTreeSet<JobId> = self
            .holds
            .values()
            .chain(self.new_holds.values())
            .filter_map(|h| match &h.kind {
                HoldKind::Preempt { victims } => Some(victims.iter().copied()),
                HoldKind::Reconfigure => None,
            })
            .flatten()
            .collect();
        let mut candidates: Vec<&RunningJob> = self
            .running
            .iter()
            .filter(|r| {
                r.request.priority < prio
                    && r.request.requeue
                    && !self.victims.contains(&r.id)
                    && !protected.contains(&r.id)
            })
            .collect();
        if candidates.is_empty() {
            return false;
        }
        candidates.sort_by_key(|r| (r.request.priority, Reverse(r.started_ms), Reverse(r.id)));
        candidates.truncate(32);
        let base = self.st.clone();
        let mut freed: Vec<&RunningJob> = Vec::new();
        let mut found = false;
        for v in candidates {
            freed.push(v);
            if attempt(ctx, &self.without_jobs(&base, &freed)).is_ok() {
                found = true;
                break;
            }
        }
        if !found {
            return false;
        }
        // Keep only the victims that are needed.
        let mut i = freed.len();
        while i > 0 && freed.len() > 1 {
            i -= 1;
            let mut trial = freed.clone();
            trial.remove(i);
            if attempt(ctx, &self.without_jobs(&base, &trial)).is_ok() {
                freed = trial;
            }
        }
        let Ok((_, placed)) = attempt(ctx, &self.without_jobs(&base, &freed)) else { return false };
        let victim_ids: Vec<JobId> = freed.iter().map(|v| v.id).collect();
        // Hold what it will use: the victims' instances on the GPUs it goes to, and the idle
        // instances it picked.
        let gpus: BTreeSet<usize> = placed.ranks.iter().map(|(g, _, _)| *g).collect();
        let picked: BTreeSet<(u32, Instance)> = placed.ranks.iter().map(|(_, _, r)| (r.gpu, r.instance)).collect();
        let mut entries = Vec::new();
        for &g in &gpus {
            let gpu = &mut self.st.gpus[g];
            let id = gpu.gpu;
            for w in &mut gpu.insts {
                let victims_only = !w.occupants.is_empty() && w.occupants.iter().all(|o| victim_ids.contains(&o.job));
                let idle_pick = w.occupants.is_empty() && picked.contains(&(id, w.inst));
                if (victims_only || idle_pick) && w.held_for.is_none() && !w.planned {
                    w.held_for = Some(job.id);
                    entries.push((id, w.inst));
                }
            }
        }
        self.version += 1;
        for v in &freed {
            self.victims.insert(v.id);
            self.decisions.push(Decision::Preempt { job: v.id, for_job: job.id });
        }
        self.decided.push((job.id, prio));
        self.new_holds.insert(job.id, Hold { kind: HoldKind::Preempt { victims: victim_ids.clone() }, entries });
        let named: Vec<String> = freed.iter().map(|v| format!("{} (priority {})", v.id, v.request.priority)).collect();
        self.pending(
            job.id,
            PendingReason::Priority,
            format!("needs {label}; preempting lower-priority job(s) {} to make room", named.join(", ")),
        );
        true
    }
}
