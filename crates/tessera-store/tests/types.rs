//! Serde round trips of every public type, and the names the API shows.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tessera_store::{
    Allocation, AllocationRecord, ExitInfo, JobEvent, JobFilter, JobRecord, JobState, ReconfigOutcome, ReconfigRecord,
};

mod common;

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(v: &T) {
    let text = serde_json::to_string(v).unwrap();
    let back: T = serde_json::from_str(&text).unwrap();
    assert_eq!(&back, v, "{text}");
}

#[test]
fn job_state_names_are_snake_case_everywhere() {
    let names = [
        (JobState::Queued, "queued"),
        (JobState::Placing, "placing"),
        (JobState::Running, "running"),
        (JobState::Succeeded, "succeeded"),
        (JobState::Failed, "failed"),
        (JobState::Cancelled, "cancelled"),
        (JobState::TimedOut, "timed_out"),
        (JobState::OomKilled, "oom_killed"),
        (JobState::Lost, "lost"),
    ];
    assert_eq!(names.len(), JobState::ALL.len());
    for (state, name) in names {
        assert_eq!(state.as_str(), name);
        assert_eq!(state.to_string(), name);
        assert_eq!(serde_json::to_value(state).unwrap(), json!(name));
        assert_eq!(name.parse::<JobState>().unwrap(), state);
        round_trip(&state);
    }
    let err = "Running".parse::<JobState>().unwrap_err();
    assert!(err.to_string().contains("\"Running\""), "{err}");
    assert!(serde_json::from_str::<JobState>("\"done\"").is_err());
}

#[test]
fn terminal_and_active_states() {
    use JobState::*;
    for s in JobState::ALL {
        let terminal = matches!(s, Succeeded | Failed | Cancelled | TimedOut | OomKilled | Lost);
        assert_eq!(s.is_terminal(), terminal, "{s}");
        assert_eq!(s.is_active(), matches!(s, Placing | Running), "{s}");
    }
    let mut sorted = JobState::ALL;
    sorted.sort();
    assert_eq!(sorted, JobState::ALL, "Ord follows the lifecycle");
}

#[test]
fn every_type_round_trips_through_json() {
    let new = common::new_job(7);
    round_trip(&new);
    let exit = ExitInfo { code: Some(3), signal: None, failed_rank: Some(1), detail: "rank 1 exited 3".into() };
    round_trip(&exit);
    round_trip(&ExitInfo::default());
    let rec = JobRecord {
        id: 42,
        user_uid: new.user_uid,
        user_name: new.user_name.clone(),
        tenant: new.request.tenant.clone(),
        priority: new.request.priority,
        request: new.request.clone(),
        work: new.work.clone(),
        submitted_ms: new.submitted_ms,
        state: JobState::Failed,
        reason: "rank failed".into(),
        started_ms: Some(5),
        ended_ms: Some(9),
        exit: Some(exit),
        job_dir: Some("/var/lib/tessera/jobs/42".into()),
        shim_pid: Some(4242),
        runs: 2,
        cancelled_by: Some("alice".into()),
    };
    round_trip(&rec);
    let v = serde_json::to_value(&rec).unwrap();
    assert_eq!(v["state"], json!("failed"));
    assert_eq!(v["exit"]["failed_rank"], json!(1));
    round_trip(&JobEvent { from: JobState::Running, to: JobState::TimedOut, reason: "time limit".into(), at_ms: 77 });
    round_trip(&JobFilter::default());
    round_trip(&JobFilter {
        states: vec![JobState::Queued, JobState::Lost],
        user_uid: Some(0),
        tenant: Some("t".into()),
        ended_since_ms: Some(5),
        after_id: Some(3),
        limit: Some(10),
    });
    let alloc = Allocation {
        gpu_uuid: "GPU-1".into(),
        gpu_index: 1,
        profile_id: 19,
        start: 6,
        gpu_instance_id: Some(13),
        compute_instance_id: Some(0),
        mig_uuid: Some("MIG-abc".into()),
        exclusive: false,
        numa_node: Some(1),
        host: vec![tessera_sched::HostShare { node: 1, cpus: vec![8, 9], mem_mib: 4096 }],
    };
    round_trip(&alloc);
    round_trip(&AllocationRecord {
        rank: 2,
        slice: 1,
        allocation: alloc,
        allocated_ms: 1,
        released_ms: Some(2),
        run: 3,
    });
    for outcome in [
        ReconfigOutcome::Completed,
        ReconfigOutcome::RolledBack,
        ReconfigOutcome::Abandoned { detail: "GPU fell off the bus".into() },
    ] {
        round_trip(&outcome);
        let v = serde_json::to_value(&outcome).unwrap();
        assert_eq!(v["outcome"], json!(outcome.as_str()));
    }
    round_trip(&ReconfigRecord {
        id: 3,
        gpu_uuid: "GPU-1".into(),
        gpu_index: 1,
        plan: common::plan(),
        for_job: Some(42),
        steps_done: vec![(0, "destroyed 1g.10gb@0".into()), (1, "created 3g.40gb@4".into())],
        created_ms: 10,
        finished_ms: None,
        outcome: None,
    });
}
