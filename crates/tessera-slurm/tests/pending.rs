//! Which pending jobs wait for slices, their pending pods (through the same `decide` the
//! Kubernetes controller runs), and the drain reason that claims a node.

use std::collections::BTreeMap;

use tessera_kube_core::repartition::{GpuMode, NodeGpu, NodeState, Policy, decide};
use tessera_slurm::{
    SlurmJob, SlurmNode, WaitingJob, claim_reason, parse_claim, parse_records, pending_requests, promised_slices,
    to_pending_pod,
};

fn job(line: &str) -> SlurmJob {
    SlurmJob::from_record(&parse_records(line).unwrap()[0]).unwrap()
}

fn node(line: &str) -> SlurmNode {
    SlurmNode::from_record(&parse_records(line).unwrap()[0]).unwrap()
}

fn pending(id: u64, rest: &str) -> SlurmJob {
    job(&format!(
        // `rest` first: its ReqNodeList=/ExcNodeList= are the ones read.
        "JobId={id} {rest} UserId=alice(1001) JobState=PENDING Reason=Resources Partition=p \
         SubmitTime=2026-12-07T17:34:18 NumNodes=1 ReqNodeList=(null) ExcNodeList=(null)"
    ))
}

fn is_mig_profile(t: &str) -> bool {
    ["1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"].contains(&t)
}

fn waiting_ids(jobs: &[SlurmJob], nodes: &[SlurmNode], this: &str) -> Vec<u64> {
    pending_requests(jobs, nodes, this, &is_mig_profile).iter().map(|w| w.job.id).collect()
}

#[test]
fn which_jobs_wait_for_slices() {
    // vm has one free 1g.10gb and no 4g; vm2 (partition q) has a free 4g.40gb.
    let nodes = vec![
        node(
            "NodeName=vm State=MIXED Partitions=p Gres=gpu:3g.40gb:1(S:0),gpu:1g.10gb:3 GresUsed=gpu:3g.40gb:1(IDX:0),gpu:1g.10gb:2(IDX:1-2)",
        ),
        node("NodeName=vm2 State=IDLE Partitions=q Gres=gpu:4g.40gb:1 GresUsed=gpu:4g.40gb:0(IDX:N/A)"),
        node("NodeName=vm3 State=IDLE+DRAIN Partitions=p Gres=gpu:2g.20gb:3 GresUsed=gpu:2g.20gb:0(IDX:N/A)"),
        node(
            "NodeName=future State=FUTURE Partitions=p Gres=gpu:1g.10gb:56,gpu:2g.20gb:24,gpu:3g.40gb:16,gpu:4g.40gb:8,gpu:7g.80gb:8",
        ),
    ];
    let cases: Vec<(SlurmJob, bool, &str)> = vec![
        (pending(1, "TresPerNode=gres:gpu:4g.40gb:1"), true, "no node in p has a 4g"),
        (pending(2, "TresPerNode=gres/gpu:4g.40gb=1"), true, "the 23.02 spelling"),
        (pending(3, "TresPerNode=gres:gpu:1g.10gb:1"), false, "vm has a free 1g: Slurm starts it"),
        (pending(4, "TresPerNode=gres:gpu:1g.10gb:2"), true, "one 1g free, two asked"),
        (pending(5, "TresPerNode=gres:gpu:2g.20gb:1"), true, "vm3 has 2g free but is drained"),
        (pending(6, "TresPerNode=gres:gpu:3g.40gb:1,gres:gpu:1g.10gb:1"), true, "the 3g is held"),
        (pending(7, "TresPerNode=gres:gpu:2"), false, "untyped: any slice serves it"),
        (pending(8, "TresPerNode=gres:mps:50"), false, "mps"),
        (pending(9, "TresPerNode=gres:gpu:4g.40gb:1,gres:mps:50"), false, "typed with mps"),
        (pending(10, "TresPerNode=gres:gpu:h100:1"), false, "not a MIG profile here"),
        (pending(11, ""), false, "no GPUs asked"),
        (pending(12, "TresPerNode=cpu=2"), false, "no GRES"),
        (
            job("JobId=13 UserId=a JobState=RUNNING Partition=p NumNodes=1 TresPerNode=gres:gpu:4g.40gb:1"),
            false,
            "running",
        ),
        (
            job("JobId=14 UserId=a JobState=PENDING Partition=p NumNodes=2 TresPerNode=gres:gpu:4g.40gb:1"),
            false,
            "two nodes",
        ),
        (
            job("JobId=15 UserId=a JobState=PENDING Partition=p NumNodes=1-2 TresPerNode=gres:gpu:4g.40gb:1"),
            false,
            "maybe two nodes",
        ),
        (
            job("JobId=16 UserId=a JobState=PENDING Partition=q NumNodes=1 TresPerNode=gres:gpu:7g.80gb:1"),
            false,
            "vm is not in q",
        ),
        (
            job("JobId=17 UserId=a JobState=PENDING Partition=q,p NumNodes=1 TresPerNode=gres:gpu:7g.80gb:1"),
            true,
            "p is one of its partitions",
        ),
        (
            job("JobId=18 UserId=a JobState=PENDING Partition=q,p NumNodes=1 TresPerNode=gres:gpu:4g.40gb:1"),
            false,
            "vm2 in q has the 4g",
        ),
        (pending(19, "ReqNodeList=vm TresPerNode=gres:gpu:7g.80gb:1"), true, "asks for vm"),
        (pending(20, "ReqNodeList=vm2 TresPerNode=gres:gpu:7g.80gb:1"), false, "asks for another node"),
        (pending(21, "ReqNodeList=vm[1-2] TresPerNode=gres:gpu:7g.80gb:1"), false, "a hostlist is not expanded"),
        (pending(22, "ExcNodeList=vm TresPerNode=gres:gpu:7g.80gb:1"), false, "excludes vm"),
        (pending(23, "ExcNodeList=vm2,vm4 TresPerNode=gres:gpu:7g.80gb:1"), true, "excludes others"),
        (pending(24, "ExcNodeList=vm TresPerNode=gres:gpu:1g.10gb:1"), false, "excludes vm"),
        (pending(25, "ExcNodeList=vm[2-4] TresPerNode=gres:gpu:7g.80gb:1"), false, "a hostlist is not expanded"),
        (
            job(
                "JobId=26 UserId=a JobState=PENDING Reason=ReqNodeNotAvail,_May_be_reserved_for_other_job Partition=p NumNodes=1 TresPerNode=gres:gpu:7g.80gb:1",
            ),
            true,
            "queued through the placeholder node",
        ),
        (
            job(
                "JobId=27 UserId=a JobState=PENDING Reason=Dependency Partition=p NumNodes=1 TresPerNode=gres:gpu:7g.80gb:1",
            ),
            false,
            "a dependency",
        ),
        (
            job(
                "JobId=28 UserId=a JobState=PENDING Reason=JobHeldUser Partition=p NumNodes=1 TresPerNode=gres:gpu:7g.80gb:1",
            ),
            false,
            "held",
        ),
        (
            job(
                "JobId=29 UserId=a JobState=PENDING Reason=QOSMaxGRESPerUser Partition=p NumNodes=1 TresPerNode=gres:gpu:7g.80gb:1",
            ),
            false,
            "a QOS limit",
        ),
        (
            job(
                "JobId=30 UserId=a JobState=PENDING Reason=Priority Partition=p NumNodes=1 TresPerNode=gres:gpu:7g.80gb:1",
            ),
            true,
            "behind others",
        ),
        (pending(31, "TresPerNode=gres:gpu:1g.10gb:0"), false, "asks for none"),
    ];
    for (j, waits, why) in &cases {
        let got = waiting_ids(std::slice::from_ref(j), &nodes, "vm");
        assert_eq!(got == vec![j.id], *waits, "job {}: {why}", j.id);
    }
    // All together, in the order given, and nothing for a node Slurm does not list.
    let jobs: Vec<SlurmJob> = cases.iter().map(|(j, _, _)| j.clone()).collect();
    let want: Vec<u64> = cases.iter().filter(|(_, w, _)| *w).map(|(j, _, _)| j.id).collect();
    assert_eq!(waiting_ids(&jobs, &nodes, "vm"), want);
    assert_eq!(waiting_ids(&jobs, &nodes, "elsewhere"), Vec::<u64>::new());
}

#[test]
fn wants_add_up_per_type() {
    let nodes = vec![node("NodeName=vm State=IDLE Partitions=p")];
    let j = pending(12, "TresPerNode=gres:gpu:1g.10gb:1,gres:gpu:3g.40gb:1,gres:gpu:1g.10gb:2");
    let got = pending_requests(&[j], &nodes, "vm", &is_mig_profile);
    let want: BTreeMap<String, u32> = [("1g.10gb".to_string(), 3), ("3g.40gb".to_string(), 1)].into();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].wants, want);
}

#[test]
fn a_waiting_job_becomes_a_pending_pod_the_controller_decides() {
    let w = WaitingJob {
        job: pending(12, "TresPerNode=gres:gpu:1g.10gb:2"),
        wants: [("1g.10gb".to_string(), 2), ("3g.40gb".to_string(), 1)].into(),
    };
    let pod = to_pending_pod(&w, 1_000);
    assert_eq!(
        (pod.namespace.as_str(), pod.name.as_str(), pod.uid.as_str(), pod.created_ms),
        ("slurm", "job-12", "12", 1_000)
    );
    let want: BTreeMap<String, u32> =
        [("nvidia.com/mig-1g.10gb".to_string(), 2), ("nvidia.com/mig-3g.40gb".to_string(), 1)].into();
    assert_eq!(pod.requests, want);

    // The same decision the Kubernetes controller makes: an empty MIG H100 gets the slices.
    let state = NodeState {
        name: "vm".into(),
        gpus: vec![NodeGpu {
            index: 0,
            model: "H100-80GB".into(),
            mode: GpuMode::Mig { instances: vec![] },
            unhealthy: false,
            draining: false,
        }],
        mig_config: None,
    };
    let decision = decide(std::slice::from_ref(&pod), &[state], &Policy::default(), 2_000);
    assert!(decision.unplaceable.is_empty(), "{:?}", decision.unplaceable);
    assert_eq!(decision.changes.len(), 1);
    assert_eq!(decision.changes[0].creates.len(), 3);
    assert_eq!(decision.changes[0].for_pods, vec![pod.pod_ref()]);
    assert_eq!(decision.placed.len(), 1);
    let mut made: Vec<&str> = decision.placed[0].devices.iter().map(|d| d.resource.as_str()).collect();
    made.sort_unstable();
    assert_eq!(made, vec!["nvidia.com/mig-1g.10gb", "nvidia.com/mig-1g.10gb", "nvidia.com/mig-3g.40gb"]);
}

#[test]
fn claims_round_trip_through_scontrol() {
    assert_eq!(claim_reason(&[0, 1], &[12, 13]), "tessera: repartitioning GPU 0,1 for jobs 12,13");
    assert_eq!(claim_reason(&[3], &[]), "tessera: repartitioning GPU 3 for jobs");
    assert!(!claim_reason(&[0, 1], &[12, 13]).contains('='));
    let cases: Vec<(&str, Option<Vec<u64>>)> = vec![
        ("tessera: repartitioning GPU 0,1 for jobs 12,13", Some(vec![12, 13])),
        ("tessera: repartitioning GPU 0 for jobs 12 [root@2026-12-07T17:35:21]", Some(vec![12])),
        ("tessera: repartitioning GPU 3 for jobs", Some(vec![])),
        ("tessera: repartitioning GPU 3 for jobs [slurm@2026-12-07T17:35:21]", Some(vec![])),
        ("tessera: repartitioning GPU 0 for jobs 12,x", None),
        ("tessera: repartitioning GPU x for jobs 12", None),
        ("tessera: repartitioning GPU 0", None),
        ("maintenance [root@2026-12-07T17:35:21]", None),
        ("", None),
    ];
    for (reason, want) in cases {
        assert_eq!(parse_claim(reason), want, "{reason}");
    }
    // Through a node record, as scontrol prints it.
    let n = node(&format!(
        "NodeName=vm State=MIXED+DRAIN Reason={} [root@2026-12-07T17:35:21]",
        claim_reason(&[0], &[12, 13])
    ));
    assert_eq!(n.reason.as_deref().and_then(parse_claim), Some(vec![12, 13]));
}

/// Found by scripts/slurm-crash-loop.sh: the agent made a 2g.20gb for job 20, then, before Slurm
/// started job 20, destroyed it to make a 3g.40gb for job 18, then the other way round, pass
/// after pass. The free slices pending jobs can start on now are promised to them.
#[test]
fn free_slices_pending_jobs_can_start_on_are_promised_to_them() {
    let nodes = vec![node(
        "NodeName=vm State=MIXED Partitions=p Gres=gpu:2g.20gb:2,gpu:1g.10gb:3,gpu:3g.40gb:1 \
         GresUsed=gpu:2g.20gb:1(IDX:0),gpu:1g.10gb:0(IDX:N/A),gpu:3g.40gb:0(IDX:N/A)",
    )];
    let jobs = vec![
        pending(20, "TresPerNode=gres:gpu:2g.20gb:1"),
        pending(21, "TresPerNode=gres:gpu:2g.20gb:1"),
        pending(22, "TresPerNode=gres:gpu:1g.10gb:2"),
        pending(23, "TresPerNode=gres:gpu:1g.10gb:2"),
        pending(24, "TresPerNode=gres:gpu:3g.40gb:2"),
        pending(25, "TresPerNode=gres:gpu:3g.40gb:1,gres:gpu:1g.10gb:1"),
        pending(26, "TresPerNode=gres:gpu:2"),
        job(
            "JobId=27 UserId=a JobState=PENDING Reason=JobHeldUser Partition=p NumNodes=1 TresPerNode=gres:gpu:3g.40gb:1",
        ),
        job(
            "JobId=28 UserId=a JobState=PENDING Reason=Resources Partition=q NumNodes=1 TresPerNode=gres:gpu:3g.40gb:1",
        ),
    ];
    let promised = promised_slices(&jobs, &nodes, "vm", &is_mig_profile);
    // 20 takes the one free 2g (21 then finds none); 22 two of the three 1g (23 finds one);
    // 24 asks for more 3g than exist; 25 the 3g and the last 1g; untyped, held and other-
    // partition jobs promise nothing.
    let want: BTreeMap<String, u32> =
        [("2g.20gb".to_string(), 1), ("1g.10gb".to_string(), 3), ("3g.40gb".to_string(), 1)].into();
    assert_eq!(promised, want);
    // Only 24 waits for slices (21 and 23 each fit what is free, and run after 20 and 22): what
    // the agent decides for it leaves the promised slices be.
    assert_eq!(waiting_ids(&jobs, &nodes, "vm"), [24]);
    assert!(promised_slices(&jobs, &nodes, "vm2", &is_mig_profile).is_empty(), "not a node of the cluster");
}
