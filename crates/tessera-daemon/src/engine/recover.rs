//! After a restart (a crash, `kill -9`, a reboot): half-done reconfigurations and MIG mode
//! switches are resumed to their journalled target or abandoned; every job that was being
//! launched or ran is settled by what its run directory says — adopted when a supervisor has
//! it, queued again when none ever will (the daemon claims the directory itself, so a stopped
//! standby supervisor can never run it later), ended when it ended; MPS control daemons are
//! adopted, not started twice.

use std::path::PathBuf;

use tessera_exec::{Claim, ExecError, ShimState};
use tessera_mig::{CurrentInstance, Wanted, reconfigure};
use tessera_store::{JobFilter, JobRecord, JobState, ReconfigOutcome, Work};

use super::round::clear_plan;
use super::{Engine, EngineError};

impl Engine {
    /// Settles everything a previous daemon left; returns one line per thing done.
    pub fn recover(&mut self) -> Result<Vec<String>, EngineError> {
        let mut notes = Vec::new();
        let now = tessera_host::now_ms();
        for r in self.store.open_reconfigs()? {
            let outcome = match self.resume_reconfig(r.gpu_index, &r.plan) {
                Ok(left) => {
                    notes.push(format!("GPU {}: resumed reconfiguration {} ({left} step(s) left)", r.gpu_index, r.id));
                    ReconfigOutcome::Completed
                }
                Err(detail) => {
                    notes.push(format!("GPU {}: reconfiguration {} abandoned: {detail}", r.gpu_index, r.id));
                    ReconfigOutcome::Abandoned { detail }
                }
            };
            self.store.finish_reconfig(r.id, outcome, now)?;
        }
        let active = self
            .store
            .jobs(&JobFilter { states: vec![JobState::Placing, JobState::Running], ..JobFilter::default() })?;
        for rec in active {
            if let Some(note) = self.settle(&rec, now)? {
                notes.push(note);
            }
        }
        notes.extend(self.adopt_mps()?);
        let n = self.collect_finished(now)?;
        if n > 0 {
            notes.push(format!("{n} job(s) ended while the daemon was down"));
        }
        Ok(notes)
    }

    /// Brings a GPU to a journalled target; returns how many steps were left.
    fn resume_reconfig(&mut self, gpu: u32, plan: &tessera_store::JournalPlan) -> Result<usize, String> {
        let view = tessera_gpu::gpu_view(self.backend(), gpu).map_err(|e| e.to_string())?;
        let model = view.model.ok_or("GPU model unknown")?;
        let current: Vec<CurrentInstance> = view.current();
        let left = match plan.mig_mode {
            // A mode switch: its instances gone (if MIG was still on), then the mode.
            Some(enabled) => {
                let rest = clear_plan(&view).map_err(|e| format!("cannot resume: {e}"))?;
                if !rest.steps.is_empty() {
                    tessera_gpu::execute_plan(self.backend(), gpu, &rest)
                        .map_err(|e| format!("resuming failed: {e}"))?;
                }
                if view.mig.current != enabled {
                    self.set_mode_now(gpu, enabled)?;
                }
                rest.steps.len() + usize::from(view.mig.current != enabled)
            }
            None => {
                let rest = reconfigure(model, &current, &Wanted::Layout(plan.target.clone()))
                    .map_err(|e| format!("cannot resume: {e}"))?;
                tessera_gpu::execute_plan(self.backend(), gpu, &rest).map_err(|e| format!("resuming failed: {e}"))?;
                rest.steps.len()
            }
        };
        Ok(left)
    }

    /// One job that was placing or running when the daemon stopped.
    fn settle(&mut self, rec: &JobRecord, now: u64) -> Result<Option<String>, EngineError> {
        let id = rec.id;
        if let Work::External(_) = rec.work {
            // Its slices were allocated in one transaction: it has them all, or none.
            if rec.state == JobState::Placing {
                let held = self.store.job_allocations(id)?.iter().any(|a| a.released_ms.is_none());
                let (to, why) = if held {
                    (JobState::Running, "allocated before a daemon restart")
                } else {
                    (JobState::Queued, "requeued after a daemon restart: it had not been placed")
                };
                self.store.transition(id, JobState::Placing, to, why, now)?;
            }
            return Ok(None);
        }
        let dir = rec.job_dir.clone().map_or_else(|| self.paths.run_dir(id, rec.runs.max(1)), PathBuf::from);
        let requeue = |engine: &mut Engine, why: &str| -> Result<Option<String>, EngineError> {
            engine.store.transition(
                id,
                rec.state,
                JobState::Queued,
                &format!("requeued after a daemon restart: {why}"),
                now,
            )?;
            Ok(Some(format!("job {id}: requeued ({why})")))
        };
        let state = match tessera_exec::inspect(&dir, id) {
            Ok(s) => s,
            // The daemon died before the run directory held a spec: nothing ran.
            Err(ExecError::NotAJobDir { .. }) => return requeue(self, "it had not started"),
            Err(e) => ShimState::Lost { detail: e.to_string(), survivors: Vec::new() },
        };
        // A supervisor took the job (pid 0: and has ended): record it, and a job cut short
        // in `placing` is running.
        let take = |engine: &mut Engine, pid: u32| -> Result<(), EngineError> {
            if rec.job_dir.is_none() {
                engine.store.set_runtime(id, &dir.display().to_string(), pid, now)?;
            }
            if rec.state == JobState::Placing {
                engine.store.transition(
                    id,
                    JobState::Placing,
                    JobState::Running,
                    "adopted after a daemon restart",
                    now,
                )?;
            }
            Ok(())
        };
        let adopt = |engine: &mut Engine, pid: u32| -> Result<Option<String>, EngineError> {
            take(engine, pid)?;
            Ok(Some(format!("job {id}: adopted (supervisor pid {pid})")))
        };
        match state {
            ShimState::Running { shim_pid } => adopt(self, shim_pid),
            ShimState::Unclaimed => match tessera_exec::abandon(&dir, id) {
                Ok(Claim::Abandoned) => requeue(self, "no supervisor had taken it"),
                Ok(Claim::Shim { pid }) => adopt(self, pid),
                Err(e) => Err(EngineError::Internal(format!("job {id}: {e}"))),
            },
            ShimState::Abandoned => requeue(self, "no supervisor had taken it"),
            ShimState::Finished(_) | ShimState::Lost { .. } => {
                // Settled by the collection that follows.
                take(self, 0)?;
                Ok(None)
            }
        }
    }
}
