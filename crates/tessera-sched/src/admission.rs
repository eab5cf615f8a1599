//! Honest admission: whether a request could ever start on this node, decided before it is
//! queued, so that a job that can never run is refused at submit (with the limit it breaks)
//! instead of waiting forever or holding a reservation on an idle GPU.
//!
//! "Ever" means: on the node as it would be with nothing running, every GPU free to be cut as
//! the request needs (or, with repartitioning off, its current layout idle), every host CPU and
//! all host memory free, unhealthy and drained GPUs counted as they may come back. The same
//! placement code as the scheduler's decides, so what admission accepts the scheduler can
//! place once room frees up. A job whose smallest charge is above its tenant's quota is refused
//! too (the same `min_charge` the scheduler's quota check uses): no amount of waiting lets it
//! start.

use crate::cluster::{ClusterView, JobId};
use crate::placement::{
    Block, Ctx, Failure, HostNode, Planners, WGpu, WState, attempt, min_charge, needs_per_gpu, pin_conflict,
};
use crate::request::{JobRequest, Need, NumaPolicy, fmt_mib, profile_name};
use crate::scheduler::{SchedulerConfig, fmt_slices};

/// Why a request can never start here: the request field it concerns and a sentence naming
/// the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct Unsatisfiable {
    /// The request field (`gpu`, `ranks`, `cpus`, `mem_mib`, `gpus_per_rank`, `tenant`, …).
    pub field: &'static str,
    pub detail: String,
}

fn no(field: &'static str, detail: impl Into<String>) -> Unsatisfiable {
    Unsatisfiable { field, detail: detail.into() }
}

/// The node with nothing running: what admission measures a request against. `capacity.host`
/// must list every host CPU the daemon may hand out and each node's whole memory.
fn idle_view(capacity: &ClusterView, repartition: bool) -> ClusterView {
    let mut v = capacity.clone();
    for g in &mut v.gpus {
        g.healthy = true;
        g.health_note = None;
        g.drained = false;
        g.reconfiguring = false;
        if !g.mig {
            g.set_mig(false);
        } else if repartition {
            g.instances.clear();
        } else {
            for i in &mut g.instances {
                i.occupants.clear();
                i.healthy = true;
            }
        }
    }
    v
}

/// A pinned request on the node as it is now.
fn admit_pinned(req: &JobRequest, now: &ClusterView, config: &SchedulerConfig) -> Result<(), Unsatisfiable> {
    let st = WState::from_view(now);
    if let Some((_, why)) = pin_conflict(req, &st, None) {
        return Err(no("pin", why));
    }
    let (needs, first_err) = needs_per_gpu(req, &st.gpus);
    let gpu = req.pin.first().map_or(0, |p| p.gpu);
    let pinned: Vec<String> = req
        .pin
        .iter()
        .filter_map(|p| {
            let g = &st.gpus[st.pos_of(p.gpu)?];
            Some(format!("GPU {} {}", p.gpu, g.label(&tessera_mig::Instance::new(p.profile_id, p.start))))
        })
        .collect();
    let Some(pos) = st.pos_of(gpu).filter(|&g| needs.get(g).is_some_and(Option::is_some)) else {
        let e = first_err.map_or_else(|| "nothing this node offers fits it".to_string(), |e| e.to_string());
        return Err(no("pin", format!("it is pinned to {}, which cannot serve it: {e}", pinned.join(", "))));
    };
    let replicas = config.time_slice_replicas.max(1);
    let label = needs[pos]
        .as_ref()
        .map(|n| n.iter().map(|x| profile_name(st.gpus[pos].model, x.min_profile)).collect::<Vec<_>>().join(" + "))
        .unwrap_or_default();
    quota_limit(req, config, min_charge(req, &st.gpus, &needs, replicas), &label)?;
    let planners = Planners::new(&st);
    let planner_refs = planners.refs();
    let zeros = vec![0u32; st.gpus.len()];
    let ctx = Ctx {
        id: JobId::MAX,
        user: 0,
        req,
        needs: &needs,
        planners: &planner_refs,
        replicas,
        repartition: false,
        blocked: &zeros,
        budget: None,
        ignore_host: false,
    };
    attempt(&ctx, &st).map(|_| ()).map_err(|_| {
        no(
            "pin",
            format!(
                "it is pinned to {}, which does not fit what it asks ({label}, with its CPUs and memory)",
                pinned.join(", ")
            ),
        )
    })
}

/// Whether `req` could ever start on the node `capacity` describes (see the module header).
///
/// A pinned request ([`JobRequest::pin`]) is measured against `capacity` as it is, occupants
/// included (the caller gives the node's current view): its instances must be there and free
/// (another job's hold is refused, naming the job), and must fit what it asks.
pub fn admit(req: &JobRequest, capacity: &ClusterView, config: &SchedulerConfig) -> Result<(), Unsatisfiable> {
    req.validate().map_err(|e| no(e.field(), e.to_string()))?;
    if !req.pin.is_empty() {
        return admit_pinned(req, capacity, config);
    }
    let view = idle_view(capacity, config.repartition);
    if view.gpus.is_empty() {
        return Err(no("gpu", "this node has no GPUs"));
    }
    let st = WState::from_view(&view);
    let (needs, first_err) = needs_per_gpu(req, &st.gpus);
    if needs.iter().all(Option::is_none) {
        let e = first_err.map_or_else(|| "nothing this node offers fits it".to_string(), |e| e.to_string());
        return Err(no("gpu", format!("no GPU on this node can run it: {e}")));
    }
    let label = needs
        .iter()
        .zip(&st.gpus)
        .find_map(|(n, g)| {
            n.as_ref().map(|n| n.iter().map(|x| profile_name(g.model, x.min_profile)).collect::<Vec<_>>().join(" + "))
        })
        .unwrap_or_default();
    let mig_only = needs.iter().flatten().any(|n| n.iter().any(|x| x.mig_only));
    let switchable = config.mig_mode_switching && st.gpus.iter().any(|g| g.mig_capable);
    if mig_only && !st.gpus.iter().any(|g| g.mig) && !switchable {
        return Err(no(
            "gpu",
            format!(
                "{label} is a MIG profile and no GPU on this node has MIG on; ask for whole GPUs (gpus_per_rank, \
                 `--gpus N`) or GPU memory (`--gpu-mem`) instead, or turn MIG on"
            ),
        ));
    }
    let replicas = config.time_slice_replicas.max(1);
    quota_limit(req, config, min_charge(req, &st.gpus, &needs, replicas), &label)?;
    let planners = Planners::new(&st);
    let planner_refs = planners.refs();
    let zeros = vec![0u32; st.gpus.len()];
    let ctx = Ctx {
        id: 0,
        user: 0,
        req,
        needs: &needs,
        planners: &planner_refs,
        replicas,
        repartition: config.repartition,
        blocked: &zeros,
        budget: None,
        ignore_host: false,
    };
    // The node as it is, and (with mode switching) every capable GPU in the other mode.
    let mut states = vec![st.clone()];
    if switchable {
        for want_mig in [true, false] {
            let mut v = view.clone();
            for g in v.gpus.iter_mut().filter(|g| g.mig_capable) {
                g.set_mig(want_mig);
            }
            states.push(WState::from_view(&v));
        }
    }
    let fail = match attempt(&ctx, &st) {
        Ok(_) => return Ok(()),
        Err(f) => f,
    };
    if states[1..].iter().any(|s| attempt(&ctx, s).is_ok()) {
        return Ok(());
    }
    // The GPUs could hold it and only the host's CPUs or memory stopped this one arrangement:
    // refuse only when no arrangement could fit (a bound, not a search, so nothing that could
    // run is refused).
    let gpus_only = Ctx { ignore_host: true, ..ctx };
    if states.iter().any(|s| attempt(&gpus_only, s).is_ok()) {
        return if host_cannot_hold(req, &st, &needs) { host_limit(req, &st, &fail) } else { Ok(()) };
    }
    if let Some(limit) = fail.blocks.iter().find_map(|(_, b)| match b {
        Block::MigPerProcess { limit } => Some(*limit),
        _ => None,
    }) {
        let per_rank = req.instances_per_rank();
        return Err(no(
            if req.gpus_per_rank > 1 { "gpus_per_rank" } else { "gpu" },
            format!(
                "each rank would see {per_rank} devices, but this node's driver lets one process use {limit} MIG \
                 device(s) (R570 and later allow several); ask for {} ranks of one device each (`--ranks`), or for \
                 GPUs with MIG off",
                u64::from(req.ranks) * per_rank as u64
            ),
        ));
    }
    let usable: Vec<String> = st
        .gpus
        .iter()
        .zip(&needs)
        .filter(|(_, n)| n.is_some())
        .map(|(g, _)| format!("{} ({}{})", g.gpu, g.model.name, if g.mig { "" } else { ", MIG off" }))
        .collect();
    let what = if req.gpus_per_rank > 1 {
        format!("{} rank(s) × {} GPUs of {label}", req.ranks, req.gpus_per_rank)
    } else {
        format!("{} rank(s) × {label}", req.ranks)
    };
    Err(no(
        if req.ranks > 1 {
            "ranks"
        } else if req.gpus_per_rank > 1 {
            "gpus_per_rank"
        } else {
            "gpu"
        },
        format!(
            "it needs {what} at once, and even with nothing running this node cannot hold them: the GPUs that fit are {}",
            usable.join(", ")
        ),
    ))
}

/// A job whose smallest possible charge is above its tenant's quota can never start (the
/// scheduler keeps it waiting with reason `quota` even with nothing else running).
fn quota_limit(
    req: &JobRequest,
    config: &SchedulerConfig,
    least: (u64, u64),
    label: &str,
) -> Result<(), Unsatisfiable> {
    let (_, Some(q)) = config.tenant(&req.tenant) else { return Ok(()) };
    let over = if least.0 > u64::from(q.compute_slices) * 1000 {
        Some(("compute", least.0, q.compute_slices))
    } else if least.1 > u64::from(q.memory_slices) * 1000 {
        Some(("memory", least.1, q.memory_slices))
    } else {
        None
    };
    let Some((kind, charge, limit)) = over else { return Ok(()) };
    let units = req.placement_units();
    let what = if units > 1 { format!("{units} × {label}") } else { label.to_string() };
    Err(no(
        "tenant",
        format!(
            "tenant '{}' has a quota of {limit} {kind} slices, and the smallest placement of this job ({what}) \
             takes {} {kind} slices, even with nothing else running; ask for less, or for the quota to be raised",
            req.tenant,
            fmt_slices(charge)
        ),
    ))
}

/// Whether no arrangement of the job's placements could get their CPUs and memory: some
/// placement (a `gpu_numa_local` pair counts as one) fits no host NUMA node it may use, or the
/// nodes together hold fewer placements than the job has. With `numa: local` a placement takes
/// its share from its GPU's node, so each node holds whole shares; otherwise shares may spread.
fn host_cannot_hold(req: &JobRequest, st: &WState, needs: &[Option<Vec<Need>>]) -> bool {
    let pair = req.gpu_numa_local;
    let per_group = if pair { 2 } else { 1 };
    let units = req.placement_units();
    let groups = u64::from(units / per_group);
    // The smallest share a placement takes (shares differ by one when CPUs do not divide).
    let cpus = (0..units).map(|u| u64::from(req.unit_cpus(u))).min().unwrap_or(0) * u64::from(per_group);
    let mem = (0..units).map(|u| req.unit_mem_mib(u)).min().unwrap_or(0) * u64::from(per_group);
    if cpus == 0 && mem == 0 {
        return false;
    }
    let usable: Vec<&WGpu> = st.gpus.iter().zip(needs).filter(|(_, n)| n.is_some()).map(|(g, _)| g).collect();
    let local = matches!(req.numa, NumaPolicy::Local) && usable.iter().all(|g| g.numa_node.is_some());
    if local {
        let nodes: std::collections::BTreeSet<u32> = usable.iter().filter_map(|g| g.numa_node).collect();
        let holds = |n: &HostNode| {
            let by_cpus = (n.cpus.len() as u64).checked_div(cpus).unwrap_or(u64::MAX);
            let by_mem = n.mem.checked_div(mem).unwrap_or(u64::MAX);
            by_cpus.min(by_mem)
        };
        let total: u64 = nodes.iter().filter_map(|n| st.host.get(n)).map(holds).fold(0, u64::saturating_add);
        total < groups
    } else {
        let free_cpus: u64 = st.host.values().map(|n| n.cpus.len() as u64).sum();
        let free_mem: u64 = st.host.values().map(|n| n.mem).sum();
        free_cpus < cpus.saturating_mul(groups) || free_mem < mem.saturating_mul(groups)
    }
}

/// A placement that failed because a GPU that fits had too few CPUs or too little memory on
/// its host NUMA node (or the host): placement's own verdict (`Block::Host`), in the words of
/// the request's `cpus` or `mem_mib` field.
fn host_limit(req: &JobRequest, st: &WState, fail: &Failure) -> Result<(), Unsatisfiable> {
    // The roomiest host block: what the best GPU that fits could get.
    let hosts: Vec<(usize, Option<u32>, usize, u64, u64, u64)> = fail
        .blocks
        .iter()
        .filter_map(|(g, b)| match b {
            Block::Host { node, free_cpus, free_mem, cpus, mem } => {
                Some((*g, *node, *free_cpus, *free_mem, *cpus, *mem))
            }
            _ => None,
        })
        .collect();
    let short_cpus = hosts.iter().filter(|h| (h.2 as u64) < h.4).max_by_key(|h| (h.2, std::cmp::Reverse(h.0)));
    let short_mem = hosts.iter().filter(|h| h.3 < h.5).max_by_key(|h| (h.3, std::cmp::Reverse(h.0)));
    let (field, &(g, node, free_cpus, free_mem, cpus, mem)) = match (short_cpus, short_mem) {
        (Some(h), _) => ("cpus", h),
        (None, Some(h)) => ("mem_mib", h),
        (None, None) => return Ok(()),
    };
    let local = matches!(req.numa, NumaPolicy::Local) && node.is_some();
    let pair = req.gpu_numa_local;
    let per = if req.gpus_per_rank > 1 { " per GPU of a rank" } else { " per rank" };
    let (need, have) = if field == "cpus" {
        let unit = u64::from(req.unit_cpus(0));
        let need = if pair {
            format!("{cpus} CPUs on one host NUMA node ({unit} per rank; `gpu_numa_local` puts both ranks on one GPU)")
        } else {
            format!("{cpus} CPUs{per}")
        };
        (need, free_cpus.to_string())
    } else {
        let unit = req.unit_mem_mib(0);
        let need = if pair {
            format!(
                "{} of memory on one host NUMA node ({} per rank; `gpu_numa_local` puts both ranks on one GPU)",
                fmt_mib(mem),
                fmt_mib(unit)
            )
        } else {
            format!("{} of memory{per}", fmt_mib(mem))
        };
        (need, fmt_mib(free_mem))
    };
    let gpu = st.gpus[g].gpu;
    let hint = if local { " (numa: local; `--no-numa` takes them from any node)" } else { "" };
    let detail = if fail.rank == 0 {
        let where_ = match node {
            Some(n) if local => format!("host NUMA node {n}, the largest next to a GPU that fits (GPU {gpu}),"),
            Some(n) => format!("host NUMA node {n}"),
            None => "the host".to_string(),
        };
        format!("it needs {need}, and {where_} has {have}{hint}")
    } else {
        // Earlier ranks took their share first: the whole gang does not fit the host at once.
        let where_ = match node {
            Some(n) => format!("host NUMA node {n} (next to GPU {gpu})"),
            None => "the host".to_string(),
        };
        format!(
            "it needs {need} for each of its {} placements at once, and even with nothing running the host runs \
             out: once {} are placed, {where_} has {have} left{hint}",
            req.placement_units(),
            fail.rank
        )
    };
    Err(no(field, detail))
}
