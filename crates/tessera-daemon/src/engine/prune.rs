//! Keeping the store bounded while the daemon runs: every `store.prune_interval_ms` (and at the
//! next round again while a batch was full) the finished jobs that `[store]` no longer keeps are
//! deleted with their events and allocations ([`tessera_store::Store::prune`]), and their job
//! and output directories removed. Queued, placing and running jobs are never touched, nor
//! anything crash recovery reads (open reconfigurations and the jobs they name, live
//! allocations, run directories of live jobs).

use tessera_store::{PrunePolicy, PruneReport, StoreError};

use super::Engine;

/// The most jobs one prune deletes (one transaction under the engine's lock).
const PRUNE_BATCH: u32 = 500;

impl Engine {
    /// What `[store]` says may go at `now`.
    pub(crate) fn prune_policy(&self, now: u64) -> PrunePolicy {
        let s = &self.config.store;
        PrunePolicy {
            ended_before_ms: (s.keep_finished_ms > 0).then(|| now.saturating_sub(s.keep_finished_ms)),
            keep_finished: (s.max_finished_jobs > 0).then_some(s.max_finished_jobs),
            batch: PRUNE_BATCH,
            bounds: crate::metrics::HISTOGRAM_BOUNDS,
        }
    }

    /// Prunes when it is due (see the module's header); a failure is logged and tried again at
    /// the next interval.
    pub(crate) fn prune_if_due(&mut self, now: u64) {
        if !self.prune_more && now.saturating_sub(self.pruned_ms) < self.config.store.prune_interval_ms {
            return;
        }
        self.pruned_ms = now;
        match self.prune(now) {
            Ok(r) => self.prune_more = r.more,
            Err(e) => {
                self.prune_more = false;
                tracing::warn!("pruning finished jobs: {e}");
            }
        }
    }

    /// One batch of pruning now: the rows, then the pruned jobs' directories. The directories
    /// are removed on a thread of their own, off the engine's lock (a thousand of them took
    /// seconds on a loaded machine, and submissions waited meanwhile).
    pub fn prune(&mut self, now: u64) -> Result<PruneReport, StoreError> {
        let report = self.store.prune(&self.prune_policy(now))?;
        let dirs: Vec<(u64, std::path::PathBuf)> = report
            .jobs
            .iter()
            .flat_map(|&id| [(id, self.paths.job_root(id)), (id, self.paths.output_of(id))])
            .collect();
        if !dirs.is_empty() {
            let remove = move || {
                for (id, dir) in dirs {
                    if let Err(e) = std::fs::remove_dir_all(&dir)
                        && e.kind() != std::io::ErrorKind::NotFound
                    {
                        tracing::warn!("pruned job {id}: removing {}: {e}", dir.display());
                    }
                }
            };
            if let Err(e) = std::thread::Builder::new().name("tessera-prune".into()).spawn(remove) {
                tracing::warn!("pruning: cannot start the thread that removes job directories: {e}");
            }
        }
        if !report.jobs.is_empty() || report.reconfigs > 0 {
            tracing::info!(
                jobs = report.jobs.len(),
                events = report.events,
                allocations = report.allocations,
                reconfigs = report.reconfigs,
                "pruned {} finished jobs",
                report.jobs.len()
            );
        }
        Ok(report)
    }
}
