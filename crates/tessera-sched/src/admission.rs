//! Honest admission: whether a request could ever start on this node, decided before it is
//! queued, so that a job that can never run is refused at submit (with the limit it breaks)
//! instead of waiting forever or holding a reservation on an idle GPU.
//!
//! "Ever" means: on the node as it would be with nothing running, every GPU free to be cut as
//! the request needs (or, with repartitioning off, its current layout idle), every host CPU and
//! all host memory free, unhealthy and drained GPUs counted as they may come back. The same
//! placement code as the scheduler's decides, so what admission accepts the scheduler can
//! place once room frees up.

use tessera_mig::{Planner, planner_for};

use crate::cluster::{ClusterView, InstanceView};
use crate::placement::{Block, Ctx, WState, attempt};
use crate::request::{JobRequest, Need, NumaPolicy, RequestError, fmt_mib, full_profile, profile_name};
use crate::scheduler::SchedulerConfig;

/// Why a request can never start here: the request field it concerns and a sentence naming
/// the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct Unsatisfiable {
    /// The request field (`gpu`, `ranks`, `cpus`, `mem_mib`, `gpus_per_rank`, …).
    pub field: &'static str,
    pub detail: String,
}

fn no(field: &'static str, detail: impl Into<String>) -> Unsatisfiable {
    Unsatisfiable { field, detail: detail.into() }
}

/// The node with nothing running: what admission measures a request against. `capacity.host`
/// must list every host CPU the daemon may hand out and each node's whole memory.
pub fn idle_view(capacity: &ClusterView, repartition: bool) -> ClusterView {
    let mut v = capacity.clone();
    for g in &mut v.gpus {
        g.healthy = true;
        g.health_note = None;
        g.drained = false;
        g.reconfiguring = false;
        if !g.mig {
            g.instances = full_profile(g.model)
                .map(|p| vec![InstanceView::idle(tessera_mig::Instance::new(p.id, 0))])
                .unwrap_or_default();
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

/// Whether `req` could ever start on the node `capacity` describes (see the module header).
pub fn admit(req: &JobRequest, capacity: &ClusterView, config: &SchedulerConfig) -> Result<(), Unsatisfiable> {
    req.validate().map_err(|e| no(e.field(), e.to_string()))?;
    let view = idle_view(capacity, config.repartition);
    if view.gpus.is_empty() {
        return Err(no("gpu", "this node has no GPUs"));
    }
    let st = WState::from_view(&view);
    let mut first_err: Option<RequestError> = None;
    let needs: Vec<Option<Vec<Need>>> = st
        .gpus
        .iter()
        .map(|g| match req.needs(g.model) {
            Ok(n) => Some(n),
            Err(e) => {
                first_err.get_or_insert(e);
                None
            }
        })
        .collect();
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
    host_limits(req, &st, &needs)?;
    let owned: Vec<Planner<'static>> =
        st.gpus.iter().filter(|g| planner_for(g.model).is_none()).map(|g| Planner::new(g.model)).collect();
    let mut next_owned = owned.iter();
    let planners: Vec<&Planner<'static>> =
        st.gpus.iter().filter_map(|g| planner_for(g.model).or_else(|| next_owned.next())).collect();
    let zeros = vec![0u32; st.gpus.len()];
    let ctx = Ctx {
        id: 0,
        user: 0,
        req,
        needs: &needs,
        planners: &planners,
        replicas: config.time_slice_replicas.max(1),
        repartition: config.repartition,
        blocked: &zeros,
        budget: None,
        ignore_host: false,
    };
    let fail = match attempt(&ctx, &st) {
        Ok(_) => return Ok(()),
        Err(f) => f,
    };
    if switchable {
        // Every capable GPU in the other mode (MIG on where it was off, and off where on).
        for want_mig in [true, false] {
            let mut v = view.clone();
            for g in v.gpus.iter_mut().filter(|g| g.mig_capable) {
                g.mig = want_mig;
                g.instances = if want_mig {
                    Vec::new()
                } else {
                    full_profile(g.model)
                        .map(|p| vec![InstanceView::idle(tessera_mig::Instance::new(p.id, 0))])
                        .unwrap_or_default()
                };
            }
            if attempt(&ctx, &WState::from_view(&v)).is_ok() {
                return Ok(());
            }
        }
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

/// CPUs and memory one placement unit needs against the largest host NUMA node that could
/// give them (the GPU's own, for `numa: local`), or the whole host.
fn host_limits(req: &JobRequest, st: &WState, needs: &[Option<Vec<Need>>]) -> Result<(), Unsatisfiable> {
    let cpus = u64::from(req.unit_cpus(0));
    let mem = req.unit_mem_mib(0);
    if cpus == 0 && mem == 0 {
        return Ok(());
    }
    let node_cap = |n: u32| st.host.get(&n).map_or((0u64, 0u64), |h| (h.cpus.len() as u64, h.mem));
    let total = st.host.values().fold((0u64, 0u64), |a, h| (a.0 + h.cpus.len() as u64, a.1 + h.mem));
    let local = matches!(req.numa, NumaPolicy::Local);
    // What the best GPU that fits could get.
    let mut best = (0u64, 0u64);
    for (g, n) in st.gpus.iter().zip(needs) {
        if n.is_none() {
            continue;
        }
        let cap = match (local, g.numa_node) {
            (true, Some(node)) => node_cap(node),
            _ => {
                // Any node: one node, or spread over all of them.
                total
            }
        };
        best = (best.0.max(cap.0), best.1.max(cap.1));
    }
    let per = if req.gpus_per_rank > 1 { " per GPU of a rank" } else { " per rank" };
    let hint = if local { " (numa: local; `--no-numa` takes them from any node)" } else { "" };
    let where_ = if local { "the largest host NUMA node next to a GPU that fits" } else { "the host" };
    if cpus > best.0 {
        return Err(no("cpus", format!("it needs {cpus} CPUs{per}, and {where_} has {}{hint}", best.0)));
    }
    if mem > best.1 {
        return Err(no(
            "mem_mib",
            format!("it needs {} of memory{per}, and {where_} has {}{hint}", fmt_mib(mem), fmt_mib(best.1)),
        ));
    }
    Ok(())
}
