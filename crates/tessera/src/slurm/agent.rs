//! `tessera slurm agent`: dynamic MIG for Slurm, one agent per node.
//!
//! One per node, beside slurmd and the node's daemon, rather than one for the cluster: a change
//! needs the node's daemon (which owns its GPUs and knows which instances jobs hold) and its
//! slurmd restarted, so a cluster agent would need root on every node anyway; and each node's
//! layout is only known exactly on that node. The queue and every node's GRES are read from
//! the controller (`scontrol`), so each agent sees the same pending jobs.
//!
//! Each pass: the pending jobs whose typed GPU requests no available node can serve now
//! (`tessera_slurm::pending::pending_requests`) become pending pods for
//! `tessera_kube_core::decide`, the same pure decision the Kubernetes controller makes, over
//! this node's layout (instances the daemon's jobs hold, or whose GRES index Slurm gave a job,
//! are busy: never destroyed or moved). When it changes a GPU, the agent drains the node with a
//! reason naming the GPUs and jobs (`scontrol show node` shows it), backs off if a node whose
//! name sorts first claimed one of the same jobs, reads again what is held under the drain,
//! changes the layout through the daemon, syncs the GRES and resumes the node.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::Context as _;
use tessera_daemon::wire::{GpuList, LayoutRequest};
use tessera_kube_core::repartition::{GpuMode, NodeGpu, NodeState, Policy, decide};
use tessera_mig::{CurrentInstance, Instance};
use tessera_slurm::jobs::SlurmNode;
use tessera_slurm::pending::{claim_reason, parse_claim, pending_requests, promised_slices, to_pending_pod};

use tessera_slurm::layout::{SliceRecord, order_records};

use super::Ctx;
use super::cores::CoreTopology;
use super::ctl::Slurm;
use super::records::slice_records;
use super::sync::{Drain, Step, held_records, step, sync};

/// The reason of the agent's drain around a sync of GRES found out of step with the layout
/// (`tessera slurm sync`'s own drain says [`super::sync::SYNC_REASON`], which the agent leaves be).
pub const RESYNC_REASON: &str = "tessera: syncing GRES with the MIG layout";

/// `tessera slurm agent`.
pub fn run(ctx: &Ctx, once: bool) -> anyhow::Result<()> {
    let slurm = Slurm;
    eprintln!("tessera slurm agent: node {}, every {} ms", ctx.node, ctx.cfg.agent_interval_ms);
    // A pass that says what the last one said (a job still waiting, an error that persists)
    // is not logged again.
    let mut last = String::new();
    loop {
        let said = match pass(ctx, &slurm) {
            Ok(Some(done)) => done,
            Ok(None) => String::new(),
            Err(e) if once => return Err(e),
            Err(e) => format!("{e:#}"),
        };
        if !said.is_empty() && said != last {
            eprintln!("tessera slurm agent: {said}");
        }
        last = said;
        if once {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(ctx.cfg.agent_interval_ms));
    }
}

/// One pass; what it changed, if anything.
fn pass(ctx: &Ctx, slurm: &Slurm) -> anyhow::Result<Option<String>> {
    let nodes = slurm.nodes()?;
    let me = nodes
        .iter()
        .find(|n| n.name == ctx.node)
        .with_context(|| format!("node {} is not in Slurm (slurm.node_name)", ctx.node))?;
    if me.is_drained() {
        let reason = me.reason.clone().unwrap_or_default();
        if parse_claim(&reason).is_none() && !reason.starts_with(RESYNC_REASON) {
            // An admin's drain, a sync at work, or a change that failed (its reason says so, and
            // an admin looks before the node gets jobs again): not ours to end.
            return Ok(None);
        }
        // A change or a resync an earlier agent began and did not finish (it was killed):
        // finish the sync, end the drain.
        sync(ctx, slurm, Drain::Caller)?;
        slurm.resume(&ctx.node)?;
        return Ok(Some(format!("finished an interrupted change ({reason})")));
    }
    // The GRES out of step with the layout: a change whose sync ran while the daemon was still
    // making it (its agent killed, the next one finishing the change), or a layout an admin
    // changed. Synced under a drain of its own, unless jobs hold indices a sync must keep.
    match step(ctx, slurm, me)? {
        Step::Agrees => {}
        Step::Out(why) => {
            // Drained with the agent's own reason, so that the next agent finishes what a kill
            // interrupts (a failure leaves it drained, as a failed change does, to be tried again).
            slurm.drain(&ctx.node, RESYNC_REASON)?;
            let outcome = sync(ctx, slurm, Drain::Caller)?;
            slurm.resume(&ctx.node)?;
            return Ok(Some(format!("GRES out of step with the layout ({why}): synced, Gres={}", outcome.gres)));
        }
        Step::Blocked(why) => {
            return Ok(Some(format!("GRES out of step with the layout; synced when the node's GPU jobs end ({why})")));
        }
    }
    let jobs = slurm.jobs()?;
    let gpus = crate::jobs::ok(ctx.client.gpus())?;
    let profiles = node_profiles(&gpus);
    let claimed_elsewhere: BTreeSet<u64> = nodes
        .iter()
        .filter(|n| n.name != ctx.node)
        .filter_map(|n| n.reason.as_deref().and_then(parse_claim))
        .flatten()
        .collect();
    let waiting: Vec<_> = pending_requests(&jobs, &nodes, &ctx.node, &|p: &str| profiles.contains(p))
        .into_iter()
        .filter(|w| !claimed_elsewhere.contains(&w.job.id))
        .collect();
    if waiting.is_empty() {
        return Ok(None);
    }
    let now = tessera_host::now_ms();
    let pods: Vec<_> = waiting.iter().map(|w| to_pending_pod(w, submit_ms(&w.job.submit).unwrap_or(now))).collect();
    // Slices pending jobs can start on now are theirs: not taken back for the jobs that wait.
    let promised = promised_slices(&jobs, &nodes, &ctx.node, &|p: &str| profiles.contains(p));
    let state = node_state(ctx, &gpus, me, &promised)?;
    let decision = decide(&pods, &[state], &Policy::default(), now);
    if decision.changes.is_empty() {
        return Ok(None);
    }
    // Slurm keeps a running job's GRES indices across the restart: a change whose records no
    // order can number so waits until the jobs holding those indices end.
    if let Err(why) = keeps_indices(ctx, &gpus, me, &decision.changes) {
        let ids: Vec<String> = decision.changes.iter().flat_map(|c| c.for_pods.iter().map(|p| p.uid.clone())).collect();
        return Ok(Some(format!(
            "jobs {} wait: changing the layout now would renumber GRES that running jobs hold ({why})",
            ids.join(",")
        )));
    }
    let gpu_ids: Vec<u32> = decision.changes.iter().map(|c| c.gpu).collect();
    let job_ids: Vec<u64> = decision
        .changes
        .iter()
        .flat_map(|c| c.for_pods.iter().filter_map(|p| p.uid.parse::<u64>().ok()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let reason = claim_reason(&gpu_ids, &job_ids);
    slurm.drain(&ctx.node, &reason)?;
    // Another node may have claimed the same jobs at the same moment: the first name wins.
    let nodes = slurm.nodes()?;
    let rival = nodes.iter().find(|n| {
        n.name < ctx.node
            && n.reason.as_deref().and_then(parse_claim).is_some_and(|j| j.iter().any(|id| job_ids.contains(id)))
    });
    if let Some(r) = rival {
        slurm.resume(&ctx.node)?;
        return Ok(Some(format!("node {} is changing for the same jobs; left them to it", r.name)));
    }
    let result = change(ctx, slurm, &pods, &promised);
    match result {
        Ok(summary) => {
            slurm.resume(&ctx.node)?;
            Ok(Some(format!("{reason}: {summary}")))
        }
        Err(e) => {
            // Layout and GRES may disagree: the node stays drained, saying why.
            let _ = slurm.drain(&ctx.node, "tessera: a MIG change failed, see tessera slurm agent's log");
            Err(e)
        }
    }
}

/// Under the drain: decide again on what is held now, change the layouts, sync the GRES.
fn change(
    ctx: &Ctx,
    slurm: &Slurm,
    pods: &[tessera_kube_core::repartition::PendingPod],
    promised: &BTreeMap<String, u32>,
) -> anyhow::Result<String> {
    let me = slurm.node(&ctx.node)?.with_context(|| format!("node {} left Slurm", ctx.node))?;
    let gpus = crate::jobs::ok(ctx.client.gpus())?;
    let state = node_state(ctx, &gpus, &me, promised)?;
    let decision = decide(pods, &[state], &Policy::default(), tessera_host::now_ms());
    let mut done = Vec::new();
    for c in &decision.changes {
        let model =
            tessera_mig::catalog().model(&c.model).with_context(|| format!("GPU {}'s model {}", c.gpu, c.model))?;
        let instances: Vec<String> = c.target.iter().map(|i| tessera_mig::layout::instance_label(model, i)).collect();
        let reply = crate::jobs::ok(ctx.client.layout(c.gpu, &LayoutRequest { instances, dry_run: false }))?;
        done.push(format!("GPU {}: {}", c.gpu, reply.steps.join(", ")));
    }
    let outcome = sync(ctx, slurm, Drain::Caller)?;
    Ok(format!("{}; Gres={}", done.join("; "), outcome.gres))
}

/// Whether the records after `changes` can be numbered keeping every GRES index Slurm gave a
/// running job (`tessera_slurm::layout::order_records`, as sync will number them).
fn keeps_indices(
    ctx: &Ctx,
    gpus: &GpuList,
    me: &SlurmNode,
    changes: &[tessera_kube_core::repartition::NodeLayoutChange],
) -> Result<(), String> {
    let current = slice_records(gpus, &CoreTopology::default());
    let changed: BTreeSet<u32> = changes.iter().map(|c| c.gpu).collect();
    let mut records: Vec<SliceRecord> = current.iter().filter(|r| !changed.contains(&r.gpu)).cloned().collect();
    for c in changes {
        let Ok(model) = tessera_mig::catalog().model(&c.model) else {
            return Err(format!("unknown model {}", c.model));
        };
        for inst in &c.target {
            let Some(p) = model.profile_by_id(inst.profile_id) else { continue };
            let kept = current.iter().find(|r| r.gpu == c.gpu && r.profile == p.name && r.start == inst.start);
            records.push(kept.cloned().unwrap_or_else(|| SliceRecord {
                gpu: c.gpu,
                gpu_minor: c.gpu,
                gpu_uuid: String::new(),
                profile: p.name.clone(),
                start: inst.start,
                size: p.placement_size,
                mig_uuid: Some(String::new()),
                gi_caps_minor: None,
                ci_caps_minor: None,
                numa_node: None,
                cores: None,
            }));
        }
    }
    let held = held_records(ctx, me).map_err(|e| e.to_string())?;
    if !held.is_empty() && records.len() != current.len() {
        return Err(count_changes(current.len(), records.len()));
    }
    order_records(records, &held).map(|_| ()).map_err(|e| e.to_string())
}

/// Why a change that alters the node's number of GPU records waits while jobs hold some.
pub fn count_changes(now: usize, after: usize) -> String {
    format!(
        "the node's GPU records would go from {now} to {after}, and Slurm requeues a running job whose node's GPU \
         count changed across the restart (22.05: gres/gpu count mismatch)"
    )
}

/// The MIG profiles this node's GPUs have.
fn node_profiles(gpus: &GpuList) -> BTreeSet<String> {
    gpus.gpus
        .iter()
        .filter_map(|g| g.model.as_deref().and_then(|m| tessera_mig::catalog().model(m).ok()))
        .flat_map(|m| m.profiles.iter().map(|p| p.name.clone()))
        .collect()
}

/// When Slurm says the job was submitted (`SubmitTime=2026-12-07T17:34:18`, local time).
fn submit_ms(text: &str) -> Option<u64> {
    let dt: jiff::civil::DateTime = text.parse().ok()?;
    let z = dt.to_zoned(jiff::tz::TimeZone::system()).ok()?;
    u64::try_from(z.timestamp().as_millisecond()).ok()
}

/// This node as the decision sees it: instances the daemon's jobs hold, unhealthy ones, ones
/// that are not one CUDA device, those whose GRES index Slurm gave a job, and as many free ones
/// of each profile as `promised` (pending jobs Slurm can start on them) are busy.
fn node_state(
    ctx: &Ctx,
    gpus: &GpuList,
    me: &SlurmNode,
    promised: &BTreeMap<String, u32>,
) -> anyhow::Result<NodeState> {
    let mut promised = promised.clone();
    let mut held_devices: BTreeSet<String> = BTreeSet::new();
    let mut held_whole: BTreeSet<u32> = BTreeSet::new();
    for r in held_records(ctx, me)?.into_values() {
        match r.mig_uuid {
            Some(u) => {
                held_devices.insert(u);
            }
            None => {
                held_whole.insert(r.gpu);
            }
        }
    }
    let mut out = Vec::new();
    for g in &gpus.gpus {
        let Some(model) = g.model.clone() else { continue };
        let mode = if g.mig {
            let instances = g
                .instances
                .iter()
                .map(|i| {
                    let mut busy = !i.jobs.is_empty()
                        || !i.healthy
                        || i.mig_uuid.as_ref().is_none_or(|u| held_devices.contains(u));
                    if !busy && let Some(n) = promised.get_mut(&i.profile).filter(|n| **n > 0) {
                        *n -= 1;
                        busy = true;
                    }
                    CurrentInstance {
                        instance: Instance::new(i.profile_id, i.start),
                        busy,
                        gpu_instance_id: i.gpu_instance_id,
                    }
                })
                .collect();
            GpuMode::Mig { instances }
        } else {
            let busy = held_whole.contains(&g.index) || g.instances.iter().any(|i| !i.jobs.is_empty());
            GpuMode::Whole { busy }
        };
        out.push(NodeGpu {
            index: g.index,
            model,
            mode,
            unhealthy: g.health.starts_with("unhealthy"),
            draining: g.drained.is_some(),
        });
    }
    Ok(NodeState { name: ctx.node.clone(), gpus: out, mig_config: None })
}
