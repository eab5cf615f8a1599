//! Reservation and backfill: the first job that cannot start for want of room gets the units
//! where it can start soonest (replaying the expected ends of running work, CPUs and memory
//! included), and others may use them only if they end before then.

use std::collections::{BTreeMap, BTreeSet};

use tessera_mig::layout::unit_mask;

use super::{Reservation, Round};
use crate::cluster::JobId;
use crate::job::QueuedJob;
use crate::placement::{Ctx, WInst, attempt};

/// When an instance is expected to be free for `job`: now (0) when idle, the latest expected
/// end of its occupants, or never (`u64::MAX`) when planned or held for another job.
pub(super) fn release_of(w: &WInst, ends: &BTreeMap<JobId, u64>, job: JobId) -> u64 {
    if !w.occupants.is_empty() {
        w.occupants.iter().map(|o| ends.get(&o.job).copied().unwrap_or(u64::MAX)).max().unwrap_or(0)
    } else if w.planned || w.held_for.is_some_and(|h| h != job) {
        u64::MAX
    } else {
        0
    }
}

impl Round<'_> {
    pub(super) fn blocked_for(&self, job: &QueuedJob) -> Vec<u32> {
        let mut out = vec![0u32; self.st.gpus.len()];
        let Some(r) = &self.reservation else { return out };
        if r.job == job.id || job.request.priority > r.priority {
            return out;
        }
        if self.backfill_ok(job, r) {
            return out;
        }
        for (gpu, mask) in &r.units {
            if let Some(g) = self.st.pos_of(*gpu) {
                out[g] |= *mask;
            }
        }
        out
    }

    pub(super) fn backfill_ok(&self, job: &QueuedJob, r: &Reservation) -> bool {
        self.cfg.backfill
            && r.at.is_some_and(|t| job.request.expected_duration_ms().is_some_and(|d| self.now.saturating_add(d) <= t))
    }

    /// When and where the job could start soonest, replaying the expected ends of running jobs.
    pub(super) fn compute_reservation(&mut self, job: &QueuedJob, ctx: &Ctx<'_>, label: &str) -> Option<Reservation> {
        let mut times: BTreeSet<u64> = BTreeSet::new();
        for gpu in &self.st.gpus {
            for w in &gpu.insts {
                times.insert(release_of(w, &self.ends, job.id));
            }
        }
        times.insert(self.now);
        times.insert(u64::MAX);
        let zeros = vec![0u32; ctx.blocked.len()];
        // CPUs and memory count too: a job the host can never hold gets no reservation (and so
        // never keeps an idle GPU from other work).
        let what_if = Ctx { blocked: &zeros, budget: None, ignore_host: false, ..*ctx };
        for t in times {
            let mut hyp = self.st.clone();
            for j in self.running.iter().chain(&self.round_started) {
                let end = self.ends.get(&j.id).copied().unwrap_or(u64::MAX);
                if end <= t || t == u64::MAX {
                    hyp.give_back_host(j.slices());
                }
            }
            for gpu in &mut hyp.gpus {
                for w in &mut gpu.insts {
                    let r = release_of(w, &self.ends, job.id);
                    if r <= t && r != u64::MAX {
                        w.occupants.clear();
                        w.held_for = None;
                    }
                }
            }
            if t == u64::MAX {
                // Unknown ends: take the GPUs as if everything there had ended.
                for gpu in &mut hyp.gpus {
                    for w in &mut gpu.insts {
                        if !w.planned && w.held_for.is_none_or(|h| h == job.id) {
                            w.occupants.clear();
                            w.held_for = None;
                        }
                    }
                }
            }
            if let Ok((_, placed)) = attempt(&what_if, &hyp) {
                let mut units: BTreeMap<u32, u32> = BTreeMap::new();
                for (g, _, r) in &placed.ranks {
                    let model = self.st.gpus[*g].model;
                    if let Some(p) = model.profile_by_id(r.instance.profile_id) {
                        *units.entry(r.gpu).or_default() |= unit_mask(r.instance.start, p.placement_size);
                    }
                }
                return Some(Reservation {
                    job: job.id,
                    priority: job.request.priority,
                    at: (t != u64::MAX).then_some(t.max(self.now)),
                    units: units.into_iter().collect(),
                    label: format!("needs {label}"),
                });
            }
        }
        None
    }
}
