//! The Slurm side of the pending-pod decision: which pending jobs wait for MIG slices this node
//! could make, as [`PendingPod`]s, so the node agent calls
//! [`tessera_kube_core::repartition::decide`], the same function the Kubernetes controller uses;
//! and the drain reason through which the agent claims a node while it repartitions.
//!
//! A job waits for slices when it is pending, runs on one node, may run on this one, asks only for
//! typed GPUs of profiles this node's models have, and no available node it may run on has the
//! free GPUs of every Type it asks for (then Slurm starts it by itself). Untyped `gpu:N` and `mps`
//! requests never wait for slices: any slice serves them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tessera_kube_core::naming::{RESOURCE_PREFIX, ResourceName};
use tessera_kube_core::repartition::PendingPod;

use crate::jobs::{SlurmJob, SlurmNode};

/// A job waiting for slices, with what it wants of one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitingJob {
    pub job: SlurmJob,
    /// Profile (Slurm Type) → count on one node.
    pub wants: BTreeMap<String, u32>,
}

/// The namespace of the pending pods jobs become.
pub const JOB_NAMESPACE: &str = "slurm";

/// How a reason Tessera writes on a node it drains begins.
pub const CLAIM_PREFIX: &str = "tessera: repartitioning GPU ";
const CLAIM_JOBS: &str = " for jobs ";

/// Reasons (the part before the first `,`) for which a job waits whatever slices exist: a
/// dependency, a hold, a begin time, its partition, or an account or QOS limit.
fn waits_for_something_else(reason: &str) -> bool {
    let head = reason.split(',').next().unwrap_or_default();
    matches!(
        head,
        "JobHeldUser"
            | "JobHeldAdmin"
            | "BeginTime"
            | "PartitionDown"
            | "PartitionInactive"
            | "PartitionTimeLimit"
            | "PartitionNodeLimit"
            | "InvalidAccount"
            | "InvalidQOS"
    ) || head.starts_with("Dependency")
        || head.starts_with("Assoc")
        || head.starts_with("QOS")
}

/// Plain node names of a node list; `None` for a hostlist expression (`vm[1-2]`), which is not
/// expanded here.
fn plain_names(list: &str) -> Option<Vec<&str>> {
    if list.contains(['[', ']']) {
        return None;
    }
    Some(list.split(',').filter(|n| !n.is_empty()).collect())
}

/// Whether `node` is one the job may run on by its node lists; `None` when a list cannot be read.
fn may_run_on(job: &SlurmJob, node: &str) -> Option<bool> {
    let required = match &job.req_nodes {
        Some(list) => plain_names(list)?.contains(&node),
        None => true,
    };
    let excluded = match &job.exc_nodes {
        Some(list) => plain_names(list)?.contains(&node),
        None => false,
    };
    Some(required && !excluded)
}

/// The typed GPUs a job asks of each node, when it asks only for typed GPUs of accepted
/// profiles (each with a resource name); `None` otherwise.
fn typed_wants(job: &SlurmJob, profiles: &dyn Fn(&str) -> bool) -> Option<BTreeMap<String, u32>> {
    let mut wants: BTreeMap<String, u32> = BTreeMap::new();
    for g in &job.gres {
        let kind = g.kind.as_deref().filter(|k| g.name == "gpu" && profiles(k))?;
        ResourceName::mig(kind).ok()?;
        let count = u32::try_from(g.count).ok()?;
        let total = wants.entry(kind.to_string()).or_default();
        *total = total.checked_add(count)?;
    }
    wants.retain(|_, n| *n > 0);
    (!wants.is_empty()).then_some(wants)
}

/// The free slices of `this_node` that pending jobs Slurm can start there now are about to
/// take: profile → count. Pending jobs are taken in `jobs`' order (the order `scontrol` lists
/// them), each taking its typed GPUs from what the earlier ones left free, all or none. The agent
/// counts these slices busy: a slice made for a waiting job is not destroyed for another job
/// before Slurm has started the first (else two waiting jobs take one GPU's memory from each
/// other, pass after pass, and neither runs).
pub fn promised_slices(
    jobs: &[SlurmJob],
    nodes: &[SlurmNode],
    this_node: &str,
    profiles: &dyn Fn(&str) -> bool,
) -> BTreeMap<String, u32> {
    let mut promised: BTreeMap<String, u32> = BTreeMap::new();
    // Drained or not: the agent's own drain lasts only while it changes the layout.
    let Some(me) = nodes.iter().find(|n| n.name == this_node) else {
        return promised;
    };
    for job in jobs {
        if !job.is_pending() || job.num_nodes != 1 || waits_for_something_else(&job.reason) {
            continue;
        }
        if !job.partitions.iter().any(|p| me.partitions.contains(p)) || may_run_on(job, this_node) != Some(true) {
            continue;
        }
        let Some(wants) = typed_wants(job, profiles) else {
            continue;
        };
        let fits = wants.iter().all(|(kind, &count)| {
            let taken = u64::from(promised.get(kind).copied().unwrap_or(0));
            me.free(kind) >= taken + u64::from(count)
        });
        if fits {
            for (kind, count) in wants {
                *promised.entry(kind).or_default() += count;
            }
        }
    }
    promised
}

/// The pending jobs that wait for slices `this_node` could make (see the module's rules).
/// `profiles` says which Types are MIG profiles of this node's GPU models. Nothing waits when
/// `this_node` is not among `nodes`.
pub fn pending_requests(
    jobs: &[SlurmJob],
    nodes: &[SlurmNode],
    this_node: &str,
    profiles: &dyn Fn(&str) -> bool,
) -> Vec<WaitingJob> {
    let Some(me) = nodes.iter().find(|n| n.name == this_node) else {
        return Vec::new();
    };
    let shares_partition =
        |job: &SlurmJob, node: &SlurmNode| job.partitions.iter().any(|p| node.partitions.contains(p));
    let mut out = Vec::new();
    for job in jobs {
        if !job.is_pending() || job.num_nodes != 1 || waits_for_something_else(&job.reason) {
            continue;
        }
        if !shares_partition(job, me) || may_run_on(job, this_node) != Some(true) {
            continue;
        }
        let Some(wants) = typed_wants(job, profiles) else {
            continue;
        };
        let served_now = nodes.iter().any(|n| {
            n.is_available()
                && shares_partition(job, n)
                && may_run_on(job, &n.name) == Some(true)
                && wants.iter().all(|(kind, &count)| n.free(kind) >= u64::from(count))
        });
        if !served_now {
            out.push(WaitingJob { job: job.clone(), wants });
        }
    }
    out
}

/// The pending pod a waiting job stands for in the repartition decision: namespace `slurm`,
/// name `job-<id>`, uid `<id>`, and each wanted profile as the resource NVIDIA's device plugin
/// names it ([`ResourceName::mig`]: `1g.10gb` → `nvidia.com/mig-1g.10gb`), so the decision maps
/// it back to the same profile. `created_ms` is the job's submit time, which the shell reads in
/// the cluster's time zone.
pub fn to_pending_pod(w: &WaitingJob, created_ms: u64) -> PendingPod {
    let requests = w
        .wants
        .iter()
        .map(|(profile, &count)| {
            // `pending_requests` keeps only profiles with a resource name; another is written
            // the same way and then matches no device.
            let name = ResourceName::mig(profile)
                .map(|r| r.to_string())
                .unwrap_or_else(|_| format!("{RESOURCE_PREFIX}/mig-{profile}"));
            (name, count)
        })
        .collect();
    PendingPod {
        namespace: JOB_NAMESPACE.to_string(),
        name: format!("job-{}", w.job.id),
        uid: w.job.id.to_string(),
        created_ms,
        requests,
    }
}

fn join<T: ToString>(items: &[T]) -> String {
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

/// The drain reason with which Tessera claims a node while it repartitions GPUs for jobs:
/// `tessera: repartitioning GPU 0,1 for jobs 12,13`. It holds no `=`, which would end the
/// value in scontrol's one-line output.
pub fn claim_reason(gpus: &[u32], jobs: &[u64]) -> String {
    format!("{CLAIM_PREFIX}{}{CLAIM_JOBS}{}", join(gpus), join(jobs)).trim_end().to_string()
}

/// The job ids of a reason [`claim_reason`] wrote, the ` [user@time]` scontrol appends
/// ignored; `None` for any other reason.
pub fn parse_claim(reason: &str) -> Option<Vec<u64>> {
    let rest = reason.trim().strip_prefix(CLAIM_PREFIX)?;
    let rest = match rest.rfind(" [") {
        Some(i) if rest.ends_with(']') => &rest[..i],
        _ => rest,
    };
    let (gpus, jobs) = match rest.split_once(CLAIM_JOBS.trim_end()) {
        Some((gpus, jobs)) => (gpus, jobs.trim()),
        None => return None,
    };
    let gpus = gpus.trim();
    if !gpus.is_empty() && gpus.split(',').any(|g| g.parse::<u32>().is_err()) {
        return None;
    }
    if jobs.is_empty() {
        return Some(Vec::new());
    }
    jobs.split(',').map(|j| j.parse::<u64>().ok()).collect()
}
