//! Stop requests: the daemon's reason, first signal and grace reach the ranks through
//! `stop.json`, and the outcome says how the job ended and echoes the request.

mod common;
use common::*;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tessera_exec::{ExecError, JobState, StopReason, StopRequest, abandon, cancel, launch, stop};

/// A preemption with SIGUSR1 and a grace: every rank's trap sees SIGUSR1 (and leaves a
/// marker), the ranks ignore it, and SIGKILL comes once the grace is over.
#[test]
fn a_preemption_signals_the_ranks_then_kills_after_the_grace() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = job_dir(&tmp, "job");
    let script = format!(r#"trap 'echo usr1 > {}/saw-$RANK' USR1; while :; do sleep 0.05; done"#, tmp.path().display());
    let s = spec(4001, &script, vec![rank(4001, 0, 2, vec![], None), rank(4001, 1, 2, vec![], None)]);
    launch(Path::new(SHIM), &[], &dir, &s).unwrap();
    wait_for("both ranks", Duration::from_secs(10), || started_ranks(&dir) == 2);
    std::thread::sleep(Duration::from_millis(200)); // the traps are set
    let request = StopRequest {
        reason: StopReason::Preempt,
        signal: libc::SIGUSR1,
        grace_ms: 600,
        detail: "preempted for job 77".into(),
    };
    let t0 = Instant::now();
    stop(&dir, &request).unwrap();
    let o = wait_finished(&dir, 4001, Duration::from_secs(20));
    let took = t0.elapsed();
    assert_eq!(o.state, JobState::Preempted, "{o:?}");
    assert_eq!(o.stop.as_ref(), Some(&request));
    assert_eq!(
        o.detail,
        "preempted: preempted for job 77; SIGUSR1 to the ranks, then SIGKILL after the 600 ms grace period"
    );
    for r in 0..2 {
        assert_eq!(read(tmp.path(), &format!("saw-{r}")), "usr1\n", "rank {r} did not see SIGUSR1");
        assert_eq!(o.ranks[r].signal, Some(libc::SIGKILL), "{o:?}");
    }
    assert!(took >= Duration::from_millis(600) && took < Duration::from_secs(10), "{took:?}");
    // A finished job is left alone.
    stop(&dir, &request).unwrap();
}

/// Each reason ends the job in its state; the request is echoed; a bare SIGTERM to the shim
/// (no stop.json) is a cancel with SIGTERM and the spec's grace.
#[test]
fn each_reason_ends_in_its_state() {
    let tmp = tempfile::tempdir().unwrap();
    let req =
        |reason, detail: &str| StopRequest { reason, signal: libc::SIGTERM, grace_ms: 300, detail: detail.into() };
    // (job, how it is stopped (None: a bare SIGTERM to the shim), state, detail)
    type Case = (u64, Option<StopRequest>, JobState, &'static str);
    let cases: Vec<Case> = vec![
        (
            4101,
            Some(req(StopReason::Cancel, "")),
            JobState::Cancelled,
            "cancelled (SIGTERM to the shim); SIGTERM to the ranks",
        ),
        (
            4102,
            Some(req(StopReason::Health, "GPU 0 lost (Xid 79)")),
            JobState::Cancelled,
            "stopped for health: GPU 0 lost (Xid 79); SIGTERM to the ranks",
        ),
        (
            4103,
            Some(req(StopReason::Preempt, "")),
            JobState::Preempted,
            "preempted (SIGTERM to the shim); SIGTERM to the ranks",
        ),
        (4104, None, JobState::Cancelled, "cancelled (SIGTERM to the shim); SIGTERM to the ranks"),
    ];
    let mut dirs = Vec::new();
    for (job, how, ..) in &cases {
        let dir = job_dir(&tmp, &job.to_string());
        let pid = launch(Path::new(SHIM), &[], &dir, &one_rank(*job, "sleep 30")).unwrap();
        wait_for("the rank", Duration::from_secs(10), || started_ranks(&dir) == 1);
        match how {
            Some(r) => stop(&dir, r).unwrap(),
            None => assert!(Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap().success()),
        }
        dirs.push(dir);
    }
    for ((job, how, state, detail), dir) in cases.iter().zip(&dirs) {
        let o = wait_finished(dir, *job, Duration::from_secs(20));
        assert_eq!((o.state, o.detail.as_str()), (*state, *detail), "job {job}");
        let echoed = how.clone().unwrap_or(StopRequest {
            reason: StopReason::Cancel,
            signal: libc::SIGTERM,
            grace_ms: 500, // the spec's kill_grace_ms
            detail: String::new(),
        });
        assert_eq!(o.stop, Some(echoed), "job {job}");
        assert_eq!(o.ranks[0].signal, Some(libc::SIGTERM), "job {job}");
    }
}

/// `cancel` is a stop with the spec's grace; a stop whose signal the kernel lacks, or for a job
/// no shim has, is refused.
#[test]
fn cancel_is_a_stop_and_bad_stops_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = job_dir(&tmp, "job");
    let mut s = one_rank(4201, "trap '' TERM; sleep 30");
    s.kill_grace_ms = 300;
    launch(Path::new(SHIM), &[], &dir, &s).unwrap();
    wait_for("the rank", Duration::from_secs(10), || started_ranks(&dir) == 1);
    let bad = StopRequest { reason: StopReason::Cancel, signal: 99, grace_ms: 0, detail: String::new() };
    assert!(matches!(stop(&dir, &bad), Err(ExecError::InvalidStop { reason, .. }) if reason.contains("signal 99")));
    cancel(&dir).unwrap();
    let o = wait_finished(&dir, 4201, Duration::from_secs(20));
    assert_eq!(o.state, JobState::Cancelled);
    assert_eq!(
        o.detail,
        "cancelled (SIGTERM to the shim); SIGTERM to the ranks, then SIGKILL after the 300 ms grace period"
    );
    assert_eq!(o.stop.map(|r| (r.reason, r.signal, r.grace_ms)), Some((StopReason::Cancel, libc::SIGTERM, 300)));

    let idle = job_dir(&tmp, "never");
    prepare_job_dir(&idle, &one_rank(4202, "true"));
    let good = StopRequest { signal: libc::SIGTERM, ..bad };
    assert!(
        matches!(stop(&idle, &good), Err(ExecError::NotRunning { detail, .. }) if detail.contains("no shim has claimed it"))
    );
    abandon(&idle, 4202).unwrap();
    assert!(matches!(stop(&idle, &good), Err(ExecError::NotRunning { detail, .. }) if detail.contains("abandoned")));
    assert!(!idle.join("stop.json").exists());
}

/// Stop requests at the same moment: every one is accepted, exactly one is recorded in
/// `stop.json` (created once), and the outcome echoes that one.
#[test]
fn concurrent_stops_record_one_request() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = job_dir(&tmp, "job");
    launch(Path::new(SHIM), &[], &dir, &one_rank(4301, "sleep 30")).unwrap();
    wait_for("the rank", Duration::from_secs(10), || started_ranks(&dir) == 1);
    let barrier = std::sync::Barrier::new(6);
    std::thread::scope(|s| {
        for i in 0..6 {
            let (dir, barrier) = (&dir, &barrier);
            s.spawn(move || {
                let request = StopRequest {
                    reason: StopReason::Cancel,
                    signal: libc::SIGTERM,
                    grace_ms: 300,
                    detail: format!("request {i}"),
                };
                barrier.wait();
                stop(dir, &request).unwrap();
            });
        }
    });
    let o = wait_finished(&dir, 4301, Duration::from_secs(20));
    let recorded: StopRequest = serde_json::from_str(&read(&dir, "stop.json")).unwrap();
    assert!(recorded.detail.starts_with("request "), "{recorded:?}");
    assert_eq!(o.stop, Some(recorded));
    assert_eq!(o.state, JobState::Cancelled);
}
