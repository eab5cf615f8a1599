//! Tables for every scontrol parser: records, GRES lists, TresPerNode, jobs and nodes, with the
//! sample lines measured on Slurm 22.05.8 and malformed inputs with their error text.

use tessera_slurm::{GresCount, SlurmJob, SlurmNode, parse_gres_list, parse_records, parse_tres_per_node};

const NODE_LINE: &str = "NodeName=vm Arch=x86_64 CoresPerSocket=2 CPUAlloc=1 CPUTot=4 Gres=gpu:3g.40gb:1(S:0),gpu:1g.10gb:3 \
GresDrain=N/A GresUsed=gpu:3g.40gb:0(IDX:N/A),gpu:1g.10gb:1(IDX:1) NodeAddr=vm NodeHostName=vm OS=Linux \
RealMemory=1 State=MIXED+DRAIN ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A Partitions=p \
BootTime=2026-12-07T16:00:00 CfgTRES=cpu=4,mem=1M,billing=4 AllocTRES=cpu=1 CapWatts=n/a \
Reason=tessera: repartitioning GPU 0 for jobs 12 [root@2026-12-07T17:35:21]";

const PENDING_JOB: &str = "JobId=12 JobName=wrap UserId=alice(1001) GroupId=alice(1001) MCS_label=N/A Priority=1 \
Nice=0 Account=(null) QOS=(null) JobState=PENDING Reason=ReqNodeNotAvail,_May_be_reserved_for_other_job \
Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 RunTime=00:00:00 \
TimeLimit=UNLIMITED TimeMin=N/A SubmitTime=2026-12-07T17:34:18 EligibleTime=2026-12-07T17:34:18 \
Partition=p AllocNode:Sid=vm:1234 ReqNodeList=(null) ExcNodeList=(null) NodeList=(null) NumNodes=1 \
NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,node=1,billing=1 Socks/Node=* \
NtasksPerN:B:S:C=0:0:*:* CoreSpec=* MinCPUsNode=1 MinMemoryNode=0 MinTmpDiskNode=0 Features=(null) \
OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) Command=(null) WorkDir=/tmp/a dir \
StdErr=/tmp/a dir/slurm-12.out StdIn=/dev/null StdOut=/tmp/a dir/slurm-12.out Power= \
TresPerNode=gres:gpu:4g.40gb:1";

const RUNNING_JOB: &str = "JobId=13 JobName=wrap UserId=bob(1002) GroupId=bob(1002) JobState=RUNNING Reason=None \
Dependency=(null) SubmitTime=2026-12-07T17:30:00 Partition=p,q ReqNodeList=vm ExcNodeList=vm2 NodeList=vm \
NumNodes=1-1 NumCPUs=1 Nodes=vm CPU_IDs=0 Mem=0 GRES=gpu:1g.10gb:1(IDX:3) TresPerNode=gres/gpu:1g.10gb=1";

#[test]
fn records_split_at_keys_and_keep_spaces_in_values() {
    let records = parse_records(&format!("{NODE_LINE}\n\n{PENDING_JOB}\n")).unwrap();
    assert_eq!(records.len(), 2);
    let node = &records[0];
    assert_eq!(node.get("NodeName"), Some("vm"));
    assert_eq!(node.get("Reason"), Some("tessera: repartitioning GPU 0 for jobs 12 [root@2026-12-07T17:35:21]"));
    assert_eq!(node.get("CfgTRES"), Some("cpu=4,mem=1M,billing=4"));
    assert_eq!(node.get("GresDrain"), Some("N/A"));
    assert_eq!(node.get("Missing"), None);
    let job = &records[1];
    let cases = [
        ("WorkDir", "/tmp/a dir"),
        ("StdOut", "/tmp/a dir/slurm-12.out"),
        ("AllocNode:Sid", "vm:1234"),
        ("CPUs/Task", "1"),
        ("ReqB:S:C:T", "0:0:*:*"),
        ("Power", ""),
        ("TresPerNode", "gres:gpu:4g.40gb:1"),
        ("Reason", "ReqNodeNotAvail,_May_be_reserved_for_other_job"),
    ];
    for (key, want) in cases {
        assert_eq!(job.get(key), Some(want), "{key}");
    }
}

#[test]
fn repeated_keys_keep_their_order() {
    let r = &parse_records("JobId=1 Nodes=a GRES=gpu:x:1(IDX:0) Nodes=b GRES=").unwrap()[0];
    assert_eq!(r.get("Nodes"), Some("a"));
    assert_eq!(r.get_all("Nodes"), vec!["a", "b"]);
    assert_eq!(r.get_all("GRES"), vec!["gpu:x:1(IDX:0)", ""]);
    let spaced = &parse_records("JobId=1  Reason=a b   Nodes=c ").unwrap()[0];
    assert_eq!(
        spaced.pairs,
        vec![("JobId".into(), "1".into()), ("Reason".into(), "a b".into()), ("Nodes".into(), "c".into())]
    );
}

#[test]
fn no_records_and_malformed_lines() {
    assert_eq!(parse_records("").unwrap(), vec![]);
    assert_eq!(parse_records("No jobs in the system\n").unwrap(), vec![]);
    let cases = [
        (
            "JobId=1\nslurm_load_jobs error: Invalid job id specified",
            2,
            "slurm_load_jobs error: Invalid job id specified",
        ),
        ("=1 A=2", 1, "=1 A=2"),
        ("  1JobId=3", 1, "1JobId=3"),
    ];
    for (text, line, excerpt) in cases {
        let e = parse_records(text).unwrap_err();
        assert_eq!((e.line, e.excerpt.as_str()), (line, excerpt), "{text}");
        assert_eq!(
            e.to_string(),
            format!("scontrol output line {line}: expected 'Key=value' at the start: '{excerpt}'")
        );
    }
    let long = format!("not a record {}", "x".repeat(100));
    assert_eq!(parse_records(&long).unwrap_err().excerpt.chars().count(), 60);
}

fn g(name: &str, kind: Option<&str>, count: u64, indices: Option<&[u32]>) -> GresCount {
    GresCount { name: name.into(), kind: kind.map(Into::into), count, indices: indices.map(<[u32]>::to_vec) }
}

#[test]
fn gres_lists() {
    let cases: Vec<(&str, Vec<GresCount>)> = vec![
        ("", vec![]),
        ("(null)", vec![]),
        ("N/A", vec![]),
        ("gpu:1g.10gb:3(S:0)", vec![g("gpu", Some("1g.10gb"), 3, None)]),
        ("gpu:1g.10gb:1(IDX:0-2,5)", vec![g("gpu", Some("1g.10gb"), 1, Some(&[0, 1, 2, 5]))]),
        ("gpu:2g.20gb:0(IDX:N/A)", vec![g("gpu", Some("2g.20gb"), 0, Some(&[]))]),
        ("gpu:2", vec![g("gpu", None, 2, None)]),
        ("gpu", vec![g("gpu", None, 1, None)]),
        ("gpu:h100", vec![g("gpu", Some("h100"), 1, None)]),
        ("gpu:(null):0(IDX:N/A)", vec![g("gpu", None, 0, Some(&[]))]),
        ("gpu(IDX:0,2)", vec![g("gpu", None, 2, Some(&[0, 2]))]),
        ("mps:1K", vec![g("mps", None, 1024, None)]),
        (
            "gpu:3g.40gb:1(S:0),gpu:1g.10gb:3",
            vec![g("gpu", Some("3g.40gb"), 1, None), g("gpu", Some("1g.10gb"), 3, None)],
        ),
        (
            "gpu:3g.40gb:0(IDX:N/A),gpu:1g.10gb:1(IDX:1)",
            vec![g("gpu", Some("3g.40gb"), 0, Some(&[])), g("gpu", Some("1g.10gb"), 1, Some(&[1]))],
        ),
        (
            "gpu:a:2(S:0-1),gpu:1g.10gb+me:1(IDX:0,7),mps:100",
            vec![
                g("gpu", Some("a"), 2, None),
                g("gpu", Some("1g.10gb+me"), 1, Some(&[0, 7])),
                g("mps", None, 100, None),
            ],
        ),
    ];
    for (text, want) in cases {
        assert_eq!(parse_gres_list(text).unwrap(), want, "{text}");
    }
}

#[test]
fn gres_list_errors_name_the_item() {
    let cases = [
        ("gpu:a:1,gpu:b:x", "GRES item 'gpu:b:x': 'x' is not a count"),
        ("gpu:a:1:2", "GRES item 'gpu:a:1:2': expected 'name[:type][:count]'"),
        ("gpu:a:1(IDX:3-1)", "GRES item 'gpu:a:1(IDX:3-1)': the range '3-1' runs backwards"),
        ("gpu:a:1(IDX:x)", "GRES item 'gpu:a:1(IDX:x)': 'x' is not an index or a range"),
        (
            "gpu:a:1(IDX:0-4294967295)",
            "GRES item 'gpu:a:1(IDX:0-4294967295)': the range '0-4294967295' is longer than 65536",
        ),
        ("gpu::1", "GRES item 'gpu::1': an empty Type"),
        (":a:1", "GRES item ':a:1': '' is not a GRES name"),
        (
            "gpu:a:99999999999999999999",
            "GRES item 'gpu:a:99999999999999999999': the count '99999999999999999999' is too large",
        ),
        ("gpu:a:1)", "GRES item 'gpu:a:1)': a ')' without '('"),
    ];
    for (text, want) in cases {
        assert_eq!(parse_gres_list(text).unwrap_err().to_string(), want, "{text}");
    }
}

#[test]
fn tres_per_node_in_both_spellings() {
    let cases: Vec<(&str, Vec<GresCount>)> = vec![
        ("", vec![]),
        ("gres:gpu:4g.40gb:1", vec![g("gpu", Some("4g.40gb"), 1, None)]),
        ("gres/gpu:1g.10gb=1", vec![g("gpu", Some("1g.10gb"), 1, None)]),
        ("gres:gpu:2", vec![g("gpu", None, 2, None)]),
        ("gres/gpu=2", vec![g("gpu", None, 2, None)]),
        ("gres/gpu", vec![g("gpu", None, 1, None)]),
        ("gres:mps:50", vec![g("mps", None, 50, None)]),
        ("cpu=2", vec![]),
        (
            "cpu=2,gres:gpu:1g.10gb:2,mem=4G,gres:gpu:3g.40gb:1",
            vec![g("gpu", Some("1g.10gb"), 2, None), g("gpu", Some("3g.40gb"), 1, None)],
        ),
        ("gres/gpu:1g.10gb=2,gres/mps=50", vec![g("gpu", Some("1g.10gb"), 2, None), g("mps", None, 50, None)]),
    ];
    for (text, want) in cases {
        assert_eq!(parse_tres_per_node(text).unwrap(), want, "{text}");
    }
    let errors = [
        ("gres/gpu:1g.10gb=x", "GRES item 'gres/gpu:1g.10gb=x': 'x' is not a count"),
        ("gres:gpu:a:b", "GRES item 'gres:gpu:a:b': 'b' is not a count"),
        ("gres/=1", "GRES item 'gres/=1': '' is not a GRES name"),
    ];
    for (text, want) in errors {
        assert_eq!(parse_tres_per_node(text).unwrap_err().to_string(), want, "{text}");
    }
}

fn job(line: &str) -> SlurmJob {
    SlurmJob::from_record(&parse_records(line).unwrap()[0]).unwrap()
}

#[test]
fn a_pending_job() {
    let j = job(PENDING_JOB);
    assert_eq!((j.id, j.user.as_str(), j.uid), (12, "alice", Some(1001)));
    assert_eq!(j.state, "PENDING");
    assert!(j.is_pending());
    assert_eq!(j.reason, "ReqNodeNotAvail,_May_be_reserved_for_other_job");
    assert_eq!(j.partitions, vec!["p"]);
    assert_eq!(j.submit, "2026-12-07T17:34:18");
    assert_eq!(j.num_nodes, 1);
    assert_eq!((j.req_nodes, j.exc_nodes), (None, None));
    assert_eq!(j.gres, vec![g("gpu", Some("4g.40gb"), 1, None)]);
    assert_eq!(j.alloc, vec![]);
}

#[test]
fn a_running_job_with_its_allocation() {
    let j = job(RUNNING_JOB);
    assert_eq!((j.id, j.user.as_str(), j.uid, j.state.as_str()), (13, "bob", Some(1002), "RUNNING"));
    assert_eq!(j.partitions, vec!["p", "q"]);
    assert_eq!(j.num_nodes, 1);
    assert_eq!((j.req_nodes.as_deref(), j.exc_nodes.as_deref()), (Some("vm"), Some("vm2")));
    assert_eq!(j.gres, vec![g("gpu", Some("1g.10gb"), 1, None)]);
    assert_eq!(j.alloc, vec![("vm".to_string(), vec![g("gpu", Some("1g.10gb"), 1, Some(&[3]))])]);

    let two =
        job("JobId=14 UserId=carol JobState=RUNNING NumNodes=1-2 Nodes=vm[1-2] CPU_IDs=0 Mem=0 GRES=gpu:a:1(IDX:0) \
         Nodes=vm3 CPU_IDs=0-1 Mem=0 GRES=");
    assert_eq!((two.user.as_str(), two.uid, two.num_nodes), ("carol", None, 2));
    assert_eq!(
        two.alloc,
        vec![("vm[1-2]".to_string(), vec![g("gpu", Some("a"), 1, Some(&[0]))]), ("vm3".to_string(), vec![])]
    );
}

#[test]
fn malformed_jobs_say_what_is_wrong() {
    let cases = [
        ("JobName=x", "a job record: the record has no JobId="),
        ("JobId=x", "a job record: JobId=x: not a job id"),
        ("JobId=5 JobState=PENDING NumNodes=1", "job 5: the record has no UserId="),
        ("JobId=5 UserId=a(x) JobState=PENDING NumNodes=1", "job 5: UserId=a(x): not a uid"),
        ("JobId=5 UserId=a JobState=PENDING", "job 5: the record has no NumNodes="),
        ("JobId=5 UserId=a JobState=PENDING NumNodes=one", "job 5: NumNodes=one: not a node count"),
        ("JobId=5 UserId=a NumNodes=1", "job 5: the record has no JobState="),
        (
            "JobId=5 UserId=a JobState=PENDING NumNodes=1 TresPerNode=gres:gpu:a:b",
            "job 5: TresPerNode=: GRES item 'gres:gpu:a:b': 'b' is not a count",
        ),
        ("JobId=5 UserId=a JobState=RUNNING NumNodes=1 GRES=gpu:1", "job 5: GRES=gpu:1: before any Nodes="),
        (
            "JobId=5 UserId=a JobState=RUNNING NumNodes=1 Nodes=vm GRES=gpu:a:1(IDX:z)",
            "job 5: GRES=: GRES item 'gpu:a:1(IDX:z)': 'z' is not an index or a range",
        ),
    ];
    for (line, want) in cases {
        let e = SlurmJob::from_record(&parse_records(line).unwrap()[0]).unwrap_err();
        assert_eq!(e.to_string(), want, "{line}");
    }
}

fn node(line: &str) -> SlurmNode {
    SlurmNode::from_record(&parse_records(line).unwrap()[0]).unwrap()
}

#[test]
fn a_node_with_its_gres_and_reason() {
    let n = node(NODE_LINE);
    assert_eq!((n.name.as_str(), n.state.as_str()), ("vm", "MIXED+DRAIN"));
    assert_eq!(n.reason.as_deref(), Some("tessera: repartitioning GPU 0 for jobs 12 [root@2026-12-07T17:35:21]"));
    assert_eq!(n.partitions, vec!["p"]);
    assert_eq!(n.gres, vec![g("gpu", Some("3g.40gb"), 1, None), g("gpu", Some("1g.10gb"), 3, None)]);
    assert_eq!((n.free("1g.10gb"), n.free("3g.40gb"), n.free("7g.80gb")), (2, 1, 0));
    assert_eq!(n.used_indices(), vec![1]);
    assert!(n.is_drained());
    assert!(!n.is_available());

    let bare = node("NodeName=vm2 State=IDLE Gres=(null) Reason=(null)");
    assert_eq!((bare.reason, bare.gres, bare.gres_used, bare.partitions), (None, vec![], vec![], vec![]));
}

#[test]
fn node_availability_follows_the_state() {
    let cases = [
        ("IDLE", true, false),
        ("MIXED", true, false),
        ("ALLOCATED", true, false),
        ("IDLE+COMPLETING", true, false),
        ("MIXED+DRAIN", false, true),
        ("IDLE+DRAIN", false, true),
        ("DRAINED", false, true),
        ("DRAINING", false, true),
        ("DOWN", false, false),
        ("DOWN*", false, false),
        ("IDLE*", false, false),
        ("IDLE+NOT_RESPONDING", false, false),
        ("FUTURE", false, false),
        ("INVAL", false, false),
        ("IDLE+POWERED_DOWN", false, false),
        ("IDLE~", false, false),
        ("IDLE+CLOUD+POWERING_DOWN", false, false),
        ("IDLE+FAIL", false, false),
        ("UNKNOWN", false, false),
        ("MIXED+RESERVED", true, false),
    ];
    for (state, available, drained) in cases {
        let n = node(&format!("NodeName=n State={state}"));
        assert_eq!((n.is_available(), n.is_drained()), (available, drained), "{state}");
    }
    let errors = [
        ("State=IDLE", "a node record: the record has no NodeName="),
        ("NodeName=n", "node n: the record has no State="),
        ("NodeName=n State=IDLE Gres=gpu:a:x", "node n: Gres=: GRES item 'gpu:a:x': 'x' is not a count"),
    ];
    for (line, want) in errors {
        let e = SlurmNode::from_record(&parse_records(line).unwrap()[0]).unwrap_err();
        assert_eq!(e.to_string(), want, "{line}");
    }
}
