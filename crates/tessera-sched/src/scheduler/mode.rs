//! MIG mode switching (`mig_mode_switching`, off by default): when a job could never start on
//! the MIG modes the GPUs have now — not even once every running job has ended — and turning
//! one idle GPU's MIG on or off would let it, the round asks the daemon to switch that GPU. One
//! GPU per round; a GPU with any occupied instance is never switched. Because a switch is only
//! made for a job that could never start otherwise, two kinds of work cannot make the node
//! flip back and forth.

use super::Round;
use crate::cluster::InstanceView;
use crate::job::{Decision, PendingReason, QueuedJob};
use crate::placement::{Ctx, WInst, WState, attempt};

impl Round<'_> {
    /// The state as it would be once everything running has ended (and nothing is held).
    fn all_idle(&self, base: &WState) -> WState {
        let mut s = base.clone();
        for gpu in &mut s.gpus {
            for w in &mut gpu.insts {
                w.occupants.clear();
                w.held_for = None;
            }
            gpu.insts.retain(|w| !w.planned);
        }
        for j in self.running.iter().chain(&self.round_started) {
            s.give_back_host(j.slices());
        }
        s
    }

    /// `base` with GPU position `g` switched to the other MIG mode: MIG on with no instances,
    /// or MIG off as one whole-GPU instance.
    fn switched(base: &WState, g: usize) -> Option<WState> {
        let mut s = base.clone();
        let gpu = &mut s.gpus[g];
        if gpu.mig {
            let whole = InstanceView::whole_gpu(gpu.model)?;
            gpu.insts = vec![WInst::from_view(gpu.model, &whole)];
            gpu.mig = false;
        } else {
            gpu.insts.clear();
            gpu.mig = true;
        }
        gpu.valid_layout = true;
        Some(s)
    }

    /// Ask for idle GPUs' MIG modes to be switched, if that lets a job that could never start
    /// otherwise start: GPUs are added in index order until the job would fit (a rank of two
    /// whole GPUs may need two switched). Returns whether it did (the job then waits
    /// `reconfiguring`).
    pub(super) fn try_switch_mode(&mut self, job: &QueuedJob, ctx: &Ctx<'_>, label: &str) -> bool {
        let zeros = vec![0u32; ctx.blocked.len()];
        let what_if = Ctx { blocked: &zeros, budget: None, ..*ctx };
        let mut hyp = self.all_idle(&self.st);
        if attempt(&what_if, &hyp).is_ok() {
            return false; // it can start on the modes there are, once work ends
        }
        let mut chosen: Vec<usize> = Vec::new();
        for g in 0..self.st.gpus.len() {
            let gpu = &self.st.gpus[g];
            let idle = gpu.insts.iter().all(|w| w.occupants.is_empty() && w.held_for.is_none() && !w.planned);
            if !gpu.mig_capable || !gpu.healthy || gpu.drained || gpu.reconfiguring || !idle {
                continue;
            }
            let Some(next) = Self::switched(&hyp, g) else { continue };
            hyp = next;
            chosen.push(g);
            if attempt(&what_if, &hyp).is_ok() {
                break;
            }
        }
        if chosen.is_empty() || attempt(&what_if, &hyp).is_err() {
            return false;
        }
        let mut named = Vec::new();
        for g in chosen {
            let (gpu_id, enabled) = (self.st.gpus[g].gpu, !self.st.gpus[g].mig);
            self.st.gpus[g].reconfiguring = true;
            self.decisions.push(Decision::SetMigMode { gpu: gpu_id, enabled, for_job: job.id });
            named.push(format!("MIG {} on GPU {gpu_id}", if enabled { "on" } else { "off" }));
        }
        self.version += 1;
        self.decided.push((job.id, job.request.priority));
        self.pending(
            job.id,
            PendingReason::Reconfiguring,
            format!("needs {label}, which no GPU's current MIG mode can give; switching {} for it", named.join(", ")),
        );
        true
    }
}
