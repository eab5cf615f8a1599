//! Why a job waits: from the failure of its placement attempt, the one reason that names the
//! real blocker (a reservation, health, a repartition under way, host CPUs or memory, room
//! taken this round, fragmentation, quota, capacity) and a sentence with the numbers.

use super::{Round, fmt_ms, list_ids};
use crate::cluster::JobId;
use crate::job::{PendingReason, QueuedJob};
use crate::placement::{Block, Ctx, Failure};
use crate::request::{NumaPolicy, fmt_mib};

impl Round<'_> {
    /// Whether GPU `g` has as many compute slices outside instances the job cannot take or
    /// reshape as one rank needs.
    pub(super) fn room_ignoring_idle(&self, ctx: &Ctx<'_>, g: usize) -> bool {
        let gpu = &self.st.gpus[g];
        let Some(needs) = ctx.needs.get(g).and_then(Option::as_ref) else { return false };
        let need: u32 = needs.iter().map(|x| u32::from(x.min_compute)).sum();
        gpu.free_compute(ctx.id, ctx.blocked.get(g).copied().unwrap_or(0)) >= need
    }

    /// The reason a job that could not be placed waits, and a sentence saying why.
    pub(super) fn classify(
        &mut self,
        job: &QueuedJob,
        ctx: &Ctx<'_>,
        fail: &Failure,
        label: &str,
    ) -> (PendingReason, String) {
        let req = &job.request;
        // Held back by the reservation?
        if ctx.blocked.iter().any(|b| *b != 0) {
            let zeros = vec![0u32; ctx.blocked.len()];
            let free = Ctx { blocked: &zeros, ..*ctx };
            if self.try_place(&free, true).is_ok()
                && let Some(r) = &self.reservation
            {
                let gpus: Vec<String> = r.units.iter().map(|(g, _)| g.to_string()).collect();
                let why = if !self.cfg.backfill {
                    "backfill is off".to_string()
                } else {
                    match (r.at, req.expected_duration_ms()) {
                        (None, _) => "its start time is unknown, so nothing may run there ahead of it".to_string(),
                        (Some(_), None) => {
                            "this job has no runtime estimate or time limit, so it cannot backfill".into()
                        }
                        (Some(t), Some(d)) => format!(
                            "it should start in about {} and this job's {} would end after that",
                            fmt_ms(t.saturating_sub(self.now)),
                            fmt_ms(d)
                        ),
                    }
                };
                return (
                    PendingReason::Reserved,
                    format!(
                        "needs {label}; the room it fits on GPU {} is reserved for job {} ({}); {why}",
                        gpus.join(", "),
                        r.job,
                        r.label
                    ),
                );
            }
        }
        let blocks = &fail.blocks;
        let names: Vec<(String, String)> = self.st.gpus.iter().map(|g| (g.gpu.to_string(), g.health_label())).collect();
        let gpu_name = |g: usize| names[g].0.clone();
        let sick_note = |g: usize| names[g].1.clone();
        // "Only unhealthy GPUs could host it" is decided before any attempt
        // (`Round::decide_inner`), so it is not among the failures here.
        // A reconfiguration in progress that may make room.
        for (g, b) in blocks {
            if *b == Block::Reconfiguring && self.room_ignoring_idle(ctx, *g) {
                return (
                    PendingReason::Reconfiguring,
                    format!("needs {label}; GPU {} is being repartitioned and may have room after", gpu_name(*g)),
                );
            }
        }
        // A GPU has a slice for it, but its host node lacks CPUs or memory: that is the blocker.
        for (g, b) in blocks {
            if let Block::Host { node, free_cpus, free_mem, cpus, mem } = b {
                let where_ = match node {
                    Some(n) => format!("GPU {}'s host NUMA node {n}", gpu_name(*g)),
                    None => "the host".to_string(),
                };
                let policy = match req.numa {
                    NumaPolicy::Local => "numa: local",
                    NumaPolicy::Any => "numa: any",
                };
                let reason =
                    if (*free_cpus as u64) < *cpus { PendingReason::HostCpus } else { PendingReason::HostMemory };
                return (
                    reason,
                    format!(
                        "needs {label} with {cpus} CPUs and {} of memory ({policy}); {where_} has {free_cpus} free CPUs and {}",
                        fmt_mib(*mem),
                        fmt_mib(*free_mem)
                    ),
                );
            }
        }
        // An unhealthy GPU that would have room.
        let sick: Vec<String> = blocks
            .iter()
            .filter(|(g, b)| *b == Block::Unhealthy && self.room_ignoring_idle(ctx, *g))
            .map(|(g, _)| sick_note(*g))
            .collect();
        if !sick.is_empty() {
            return (
                PendingReason::Health,
                format!("needs {label}; {} unhealthy and the healthy GPUs have no room for it", sick.join(", ")),
            );
        }
        // Taken this round by jobs ahead of it?
        if self.version > 0 && !self.decided.is_empty() && self.fits_at_start(ctx) {
            let higher: Vec<JobId> = self.decided.iter().filter(|(_, p)| *p > req.priority).map(|(j, _)| *j).collect();
            if !higher.is_empty() {
                return (
                    PendingReason::Priority,
                    format!(
                        "needs {label}; the room it fits was taken this round by higher-priority job(s) {}",
                        list_ids(&higher)
                    ),
                );
            }
            let ahead: Vec<JobId> = self.decided.iter().map(|(j, _)| *j).collect();
            return (
                PendingReason::Capacity,
                format!(
                    "needs {label}; the room it fits was taken this round by job(s) {}, ahead of it in fair-share order",
                    list_ids(&ahead)
                ),
            );
        }
        // Enough free slices, but no legal placement (with repartitioning off: enough slices
        // in idle instances, but none of a shape that fits).
        for (g, b) in blocks {
            if let Block::NoRoom { free, need, idle, idle_compute, profile, repartition, .. } = b {
                let gpu = gpu_name(*g);
                if *repartition && free >= need {
                    return (
                        PendingReason::Fragmentation,
                        format!(
                            "needs {label}; GPU {gpu} has {free} free compute slices but no legal placement for {profile} (fragmentation)"
                        ),
                    );
                }
                if !*repartition && self.st.gpus[*g].mig && idle_compute >= need {
                    return (
                        PendingReason::Fragmentation,
                        format!(
                            "needs {label}; GPU {gpu} has {idle_compute} compute slices in idle instances ({}) but none fits it, and repartitioning is off (fragmentation)",
                            idle.join(", ")
                        ),
                    );
                }
            }
        }
        if blocks.iter().any(|(_, b)| *b == Block::Quota) {
            return (
                PendingReason::Quota,
                format!("needs {label}; the free instances it fits would take tenant {} past its quota", req.tenant),
            );
        }
        // The instances that fit are unhealthy (a contained Xid), and nothing else fits.
        let sick_instances: Vec<String> = blocks
            .iter()
            .filter_map(|(g, b)| match b {
                Block::NoRoom { unhealthy, .. } if !unhealthy.is_empty() => {
                    Some(format!("GPU {} {}", gpu_name(*g), unhealthy.join(", ")))
                }
                _ => None,
            })
            .collect();
        if !sick_instances.is_empty() {
            return (
                PendingReason::Health,
                format!("needs {label}; the instances that fit it are unhealthy: {}", sick_instances.join("; ")),
            );
        }
        let mut parts: Vec<String> = Vec::new();
        for (g, b) in blocks.iter().take(4) {
            let gpu = &self.st.gpus[*g];
            parts.push(match b {
                Block::NoRoom { free, idle_compute, repartition: true, .. } if idle_compute == free => {
                    format!("GPU {} has {free} of {} compute slices free", gpu.gpu, gpu.model.compute_slices)
                }
                Block::NoRoom { free, idle_compute, repartition: true, .. } => format!(
                    "GPU {} has {free} of {} compute slices free ({idle_compute} in idle instances)",
                    gpu.gpu, gpu.model.compute_slices
                ),
                Block::NoRoom { .. } if !gpu.mig => format!("GPU {} (MIG off) is in use", gpu.gpu),
                Block::NoRoom { idle_compute, .. } => format!(
                    "GPU {} has {idle_compute} compute slices in free instances and repartitioning is off",
                    gpu.gpu
                ),
                Block::Unhealthy => format!("{} is unhealthy", sick_note(*g)),
                Block::Drained => format!("GPU {} is drained", gpu.gpu),
                Block::Reconfiguring => format!("GPU {} is being repartitioned", gpu.gpu),
                Block::NoProfile => format!("GPU {} ({}) has no profile for it", gpu.gpu, gpu.model.name),
                Block::MigOff => format!("GPU {} has MIG off and the request names a MIG profile", gpu.gpu),
                Block::MigPerProcess { limit } => format!(
                    "GPU {}: the rank would see more than the {limit} MIG device(s) the driver lets one process use",
                    gpu.gpu
                ),
                Block::Plan(e) => format!("GPU {}: {e}", gpu.gpu),
                Block::Quota => format!("GPU {}: only instances beyond the tenant's quota fit", gpu.gpu),
                Block::Host { .. } => format!("GPU {}: its host NUMA node lacks CPUs or memory", gpu.gpu),
            });
        }
        if blocks.len() > 4 {
            parts.push(format!("{} more GPUs", blocks.len() - 4));
        }
        let rank =
            if req.ranks > 1 { format!(" for rank {}", fail.rank / req.gpus_per_rank.max(1)) } else { String::new() };
        (PendingReason::Capacity, format!("needs {label}; no room{rank}: {}", parts.join("; ")))
    }
}
