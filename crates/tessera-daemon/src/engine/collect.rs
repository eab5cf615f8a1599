//! What a running job's supervisor says, turned into the job's state: ended (succeeded,
//! failed, cancelled, timed out, killed at its memory limit), queued again (preempted, or its
//! GPU failed and it allows requeueing; it runs again in a fresh run directory with
//! `TESSERA_RESTART_COUNT` one higher), lost (its supervisor died without an outcome), or — a
//! launch no supervisor claimed — never started, and queued again.

use tessera_exec::{Claim, Outcome, ShimState, StopReason};
use tessera_store::{ExitInfo, JobFilter, JobRecord, JobState};

use super::{Engine, EngineError};

/// What to do with a job whose run ended.
enum Ending {
    Finish(JobState, String, ExitInfo),
    Requeue(String),
}

impl Engine {
    /// Collects the outcome of running jobs whose supervisor has ended; returns how many
    /// changed.
    pub(crate) fn collect_finished(&mut self, now: u64) -> Result<usize, EngineError> {
        let recs = self.store.jobs(&JobFilter { states: vec![JobState::Running], ..JobFilter::default() })?;
        let mut n = 0;
        for rec in recs {
            if rec.work.process().is_none() {
                continue; // external work ends when its front door releases it
            }
            let Some(dir) = rec.job_dir.clone() else { continue };
            let dir = std::path::PathBuf::from(dir);
            let state = match tessera_exec::inspect(&dir, rec.id) {
                Ok(s) => s,
                Err(e) => ShimState::Lost { detail: e.to_string(), survivors: Vec::new() },
            };
            let ending = match state {
                ShimState::Running { .. } => continue,
                ShimState::Unclaimed => match tessera_exec::abandon(&dir, rec.id) {
                    // Nobody took it, and now nobody will.
                    Ok(Claim::Abandoned) => Ending::Requeue("its supervisor never took it".into()),
                    // A supervisor took it just now: look again next round.
                    _ => continue,
                },
                ShimState::Abandoned => Ending::Requeue("its supervisor never took it".into()),
                ShimState::Finished(outcome) => self.ending_of(&rec, &outcome),
                ShimState::Lost { detail, .. } => {
                    let _ = tessera_exec::kill_orphans(&dir, rec.id);
                    let reason = format!("its supervisor died without recording an exit status: {detail}");
                    let exit = ExitInfo { code: None, signal: None, failed_rank: None, detail: reason.clone() };
                    Ending::Finish(JobState::Lost, reason, exit)
                }
            };
            self.detach_sim(&rec);
            match ending {
                Ending::Finish(to, reason, exit) => {
                    tracing::info!(
                        job = rec.id,
                        user = %rec.user_name,
                        tenant = %rec.tenant,
                        state = %to,
                        code = exit.code,
                        signal = exit.signal,
                        "job {} ended {to}: {reason}",
                        rec.id,
                    );
                    self.store.finish(rec.id, JobState::Running, to, &reason, exit, now)?
                }
                Ending::Requeue(reason) => {
                    tracing::info!(
                        job = rec.id,
                        user = %rec.user_name,
                        tenant = %rec.tenant,
                        state = "queued",
                        "job {} requeued: {reason}",
                        rec.id,
                    );
                    self.store.transition(rec.id, JobState::Running, JobState::Queued, &reason, now)?;
                }
            }
            n += 1;
        }
        Ok(n)
    }

    /// What an outcome means for the job.
    fn ending_of(&self, rec: &JobRecord, outcome: &Outcome) -> Ending {
        use tessera_exec::JobState as Exec;
        let failed = outcome.failed_rank.and_then(|r| outcome.ranks.iter().find(|x| x.rank == r));
        let first = outcome.ranks.first();
        let exit = ExitInfo {
            code: failed.or(first).and_then(|r| r.code),
            signal: failed.or(first).and_then(|r| r.signal),
            failed_rank: outcome.failed_rank,
            detail: outcome.detail.clone(),
        };
        let stop = outcome.stop.as_ref();
        match outcome.state {
            Exec::Succeeded => Ending::Finish(JobState::Succeeded, outcome.detail.clone(), exit),
            Exec::Failed => Ending::Finish(JobState::Failed, outcome.detail.clone(), exit),
            Exec::TimedOut => Ending::Finish(JobState::TimedOut, outcome.detail.clone(), exit),
            Exec::OomKilled => Ending::Finish(JobState::OomKilled, format!("oom-killed: {}", outcome.detail), exit),
            Exec::Preempted => {
                let why = stop.map_or_else(|| "preempted".to_owned(), |s| s.detail.clone());
                Ending::Requeue(format!("{why}; requeued (run {} ended)", rec.runs))
            }
            Exec::Cancelled if stop.is_some_and(|s| s.reason == StopReason::Health) => {
                let why = stop.map(|s| s.detail.clone()).unwrap_or_default();
                if rec.request.requeue {
                    Ending::Requeue(format!("its GPU failed ({why}); requeued"))
                } else {
                    let reason = format!("its GPU failed: {why} (the job does not allow requeueing)");
                    Ending::Finish(JobState::Failed, reason.clone(), ExitInfo { detail: reason, ..exit })
                }
            }
            Exec::Cancelled => Ending::Finish(JobState::Cancelled, outcome.detail.clone(), exit),
        }
    }

    /// The simulated node forgets the job's processes once it ends.
    fn detach_sim(&self, rec: &JobRecord) {
        let (Some(sim), Some(pid)) = (self.node.sim(), rec.shim_pid) else { return };
        let Ok(allocs) = self.store.job_allocations(rec.id) else { return };
        let gpus: std::collections::BTreeSet<u32> =
            allocs.iter().filter(|a| a.released_ms.is_none()).map(|a| a.allocation.gpu_index).collect();
        for gpu in gpus {
            let _ = sim.detach_process(gpu, pid);
        }
    }
}
