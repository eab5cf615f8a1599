//! End-to-end tests of the shim with real processes: `launch` starts the crate's
//! `tessera-exec-shim` binary on short `sh -c` jobs, and the tests read what the jobs saw
//! (`/proc/self/status`, `/proc/$$/numa_maps`, `/proc/$$/stat`, their environment) and what the
//! shim recorded.
//!
//! Memory policy is checked through `/proc/<pid>/numa_maps`: its second column is the policy
//! the kernel applies to each mapping, and a mapping without its own policy shows the task's,
//! so a rank bound with `MPOL_BIND` to node N shows `bind:N` and an unbound one `default`.
//!
//! Tests that need root (running as uid 65534) print why and return early when not root.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tessera_exec::{
    ExecError, JobState, LogStream, ShimState, cancel, inspect, kill_orphans, launch, tail_log, tail_stream,
};
use tessera_host::{effective_uid, format_cpulist};

mod common;
use common::*;

const PROBE: &str = r#"
grep -E '^(Cpus_allowed_list|Mems_allowed_list)' /proc/self/status
echo fds-begin; ls /proc/$$/fd; echo fds-end
read -r addr policy rest < /proc/$$/numa_maps; echo "policy=$policy"
read -r line < /proc/$$/stat; set -- ${line##*) }; echo "pid=$$ pgrp=$3 sid=$4"
env | sort
"#;

#[test]
fn ranks_get_their_cpus_memory_env_and_session() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = job_dir(&tmp, "job");
    let cpus: Vec<u32> = own_set("Cpus_allowed_list").into_iter().collect();
    let (c0, c1) = (cpus[0], *cpus.get(1).unwrap_or(&cpus[0]));
    let mems = own_set("Mems_allowed_list");
    let node = mems.iter().next().copied();
    let job = 101;
    let s = spec(
        job,
        PROBE,
        vec![
            rank(job, 0, 3, vec![c0], node),
            rank(job, 1, 3, vec![c1], None),
            // Outside every cpuset and an absent node: falls back, reported.
            rank(job, 2, 3, vec![60000, 60001], Some(4000)),
        ],
    );
    let shim_pid = launch(Path::new(SHIM), &[], &dir, &s).unwrap();
    let outcome = wait_finished(&dir, job, Duration::from_secs(20));
    assert_eq!(outcome.state, JobState::Succeeded, "{outcome:?}");
    assert_eq!(outcome.detail, "all 3 rank(s) exited with code 0");
    assert_eq!(read(&dir, "shim.pid").trim(), shim_pid.to_string());

    let r0 = read(&dir, "stdout.log");
    let r1 = read(&dir, "rank-1.stdout.log");
    let r2 = read(&dir, "rank-2.stdout.log");
    assert_eq!(field(&r0, "Cpus_allowed_list:"), Some(c0.to_string().as_str()), "{r0}");
    assert_eq!(field(&r1, "Cpus_allowed_list:"), Some(c1.to_string().as_str()), "{r1}");
    assert_eq!(field(&r2, "Cpus_allowed_list:"), Some(format_cpulist(&cpus).as_str()), "{r2}");
    match node {
        Some(n) => assert_eq!(field(&r0, "policy="), Some(format!("bind:{n}").as_str()), "{r0}"),
        None => assert_eq!(field(&r0, "policy="), Some("default"), "{r0}"),
    }
    assert_eq!(field(&r1, "policy="), Some("default"), "{r1}");
    assert_eq!(field(&r2, "policy="), Some("default"), "{r2}");

    // Own session and process group: sid == pgrp == pid.
    for (text, r) in [(&r0, 0), (&r1, 1), (&r2, 2)] {
        let line = field(text, "pid=").unwrap_or_else(|| panic!("rank {r}: {text}"));
        let nums: Vec<&str> = line.split([' ', '=']).collect();
        assert_eq!(nums[0], nums[2], "rank {r} pgrp: {line}");
        assert_eq!(nums[0], nums[4], "rank {r} sid: {line}");
        assert_eq!(Some(nums[0].parse::<u32>().unwrap()), outcome.ranks[r].pid);
    }

    // Nothing but stdin, stdout and stderr is open in a rank.
    // (`ls` lists the shell's descriptors, which has nothing else open at that moment; the
    // test harness itself may have inherited descriptors from its caller without CLOEXEC.)
    let fds: Vec<&str> = r1.lines().skip_while(|l| *l != "fds-begin").skip(1).take_while(|l| *l != "fds-end").collect();
    assert_eq!(fds, ["0", "1", "2"], "{r1}");

    // Environment: the user's plus the rank's, nothing of the shim's.
    assert_eq!(field(&r1, "USER_VAR="), Some("hello world"));
    assert_eq!(field(&r1, "RANK="), Some("1"));
    assert_eq!(field(&r1, "LOCAL_RANK="), Some("1"));
    assert_eq!(field(&r1, "WORLD_SIZE="), Some("3"));
    assert_eq!(field(&r1, "TESSERA_JOB_ID="), Some("101"));
    assert_eq!(field(&r1, "CUDA_VISIBLE_DEVICES="), Some("MIG-test-101-1"));
    assert_eq!(field(&r1, "NVIDIA_VISIBLE_DEVICES="), Some("MIG-test-101-1"));
    assert!(!r1.contains("CARGO"), "the daemon's environment leaked: {r1}");

    // Recorded binding and the notes for rank 2.
    assert_eq!(outcome.ranks[0].cpus.as_deref(), Some(c0.to_string().as_str()));
    assert_eq!(outcome.ranks[0].mem_node, node);
    assert_eq!(outcome.ranks[2].cpus.as_deref(), Some(format_cpulist(&cpus).as_str()));
    assert_eq!(outcome.ranks[2].mem_node, None);
    let notes = outcome.binding_notes.join("\n");
    assert!(notes.contains("rank 2: none of CPUs 60000-60001 is in the shim's allowed set"), "{notes}");
    assert!(notes.contains("rank 2: NUMA node 4000 is absent here"), "{notes}");
    assert!(outcome.ended_ms >= outcome.started_ms);
}

#[test]
fn exit_codes_and_signals_are_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (201, "exit 0", JobState::Succeeded, Some(0), None),
        (202, "exit 3", JobState::Failed, Some(3), None),
        (203, "kill -USR1 $$", JobState::Failed, None, Some(libc::SIGUSR1)),
    ];
    let dirs: Vec<PathBuf> = cases
        .iter()
        .map(|(job, script, ..)| {
            let dir = job_dir(&tmp, &job.to_string());
            launch(Path::new(SHIM), &[], &dir, &one_rank(*job, script)).unwrap();
            dir
        })
        .collect();
    for ((job, script, state, code, signal), dir) in cases.iter().zip(&dirs) {
        let o = wait_finished(dir, *job, Duration::from_secs(20));
        assert_eq!(o.state, *state, "{script}: {o:?}");
        assert_eq!((o.ranks[0].code, o.ranks[0].signal), (*code, *signal), "{script}");
        if *state == JobState::Failed {
            assert_eq!(o.failed_rank, Some(0));
        }
    }
    let o = wait_finished(&dirs[2], 203, Duration::from_secs(1));
    assert_eq!(o.detail, "rank 0 was killed by SIGUSR1");
    let o = wait_finished(&dirs[1], 202, Duration::from_secs(1));
    assert_eq!(o.detail, "rank 0 exited with code 3");
}

#[test]
fn time_limit_terminates_then_kills_after_grace() {
    let tmp = tempfile::tempdir().unwrap();
    let mut polite = one_rank(301, "sleep 30");
    polite.time_limit_ms = Some(300);
    let mut stubborn = one_rank(302, "trap '' TERM; sleep 30; exit 0");
    stubborn.time_limit_ms = Some(300);
    stubborn.kill_grace_ms = 400;
    let t0 = Instant::now();
    let (d1, d2) = (job_dir(&tmp, "polite"), job_dir(&tmp, "stubborn"));
    launch(Path::new(SHIM), &[], &d1, &polite).unwrap();
    launch(Path::new(SHIM), &[], &d2, &stubborn).unwrap();

    let o = wait_finished(&d1, 301, Duration::from_secs(10));
    assert_eq!(o.state, JobState::TimedOut, "{o:?}");
    assert_eq!(o.ranks[0].signal, Some(libc::SIGTERM));
    assert_eq!(o.detail, "time limit of 300 ms reached; SIGTERM to the ranks");

    let o = wait_finished(&d2, 302, Duration::from_secs(10));
    let took = t0.elapsed();
    assert_eq!(o.state, JobState::TimedOut, "{o:?}");
    assert_eq!(o.ranks[0].signal, Some(libc::SIGKILL));
    assert!(o.detail.contains("then SIGKILL after the 400 ms grace period"), "{}", o.detail);
    assert!(took >= Duration::from_millis(700) && took < Duration::from_secs(8), "{took:?}");
    let ran_ms = o.ended_ms - o.started_ms;
    assert!((700..5000).contains(&ran_ms), "ran {ran_ms} ms");
}

#[test]
fn cancel_stops_the_job_and_records_cancelled() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = job_dir(&tmp, "job");
    let s = spec(401, "sleep 30", vec![rank(401, 0, 2, vec![], None), rank(401, 1, 2, vec![], None)]);
    let pid = launch(Path::new(SHIM), &[], &dir, &s).unwrap();
    assert_eq!(inspect(&dir, 401).unwrap(), ShimState::Running { shim_pid: pid });
    wait_for("both ranks", Duration::from_secs(10), || started_ranks(&dir) == 2);
    let t0 = Instant::now();
    cancel(&dir).unwrap();
    let o = wait_finished(&dir, 401, Duration::from_secs(10));
    assert!(t0.elapsed() < Duration::from_secs(3));
    assert_eq!(o.state, JobState::Cancelled, "{o:?}");
    assert_eq!(o.detail, "cancelled (SIGTERM to the shim); SIGTERM to the ranks");
    assert!(o.ranks.iter().all(|r| r.signal == Some(libc::SIGTERM)), "{o:?}");
    // Cancelling a finished job is a no-op.
    cancel(&dir).unwrap();

    // Cancelled as soon as `launch` returns (the shim may still be starting ranks).
    let dir = job_dir(&tmp, "early");
    launch(Path::new(SHIM), &[], &dir, &spec(402, "sleep 30", vec![rank(402, 0, 1, vec![], None)])).unwrap();
    cancel(&dir).unwrap();
    let o = wait_finished(&dir, 402, Duration::from_secs(10));
    assert_eq!(o.state, JobState::Cancelled, "{o:?}");
}

#[test]
fn a_failing_rank_stops_the_others() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = job_dir(&tmp, "job");
    let script = r#"if [ "$RANK" = 1 ]; then sleep 0.2; exit 3; fi; exec sleep 30"#;
    let s = spec(501, script, vec![rank(501, 0, 2, vec![], None), rank(501, 1, 2, vec![], None)]);
    let t0 = Instant::now();
    launch(Path::new(SHIM), &[], &dir, &s).unwrap();
    let o = wait_finished(&dir, 501, Duration::from_secs(10));
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(o.state, JobState::Failed, "{o:?}");
    assert_eq!(o.failed_rank, Some(1));
    assert_eq!(o.detail, "rank 1 exited with code 3; SIGTERM to the ranks");
    assert_eq!((o.ranks[1].code, o.ranks[1].signal), (Some(3), None));
    assert_eq!((o.ranks[0].code, o.ranks[0].signal), (None, Some(libc::SIGTERM)));
}

#[test]
fn a_rank_that_cannot_start_fails_the_job() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = job_dir(&tmp, "job");
    let mut s = one_rank(601, "");
    s.argv = vec!["/nonexistent/program".into()];
    launch(Path::new(SHIM), &[], &dir, &s).unwrap();
    let o = wait_finished(&dir, 601, Duration::from_secs(10));
    assert_eq!(o.state, JobState::Failed);
    assert_eq!(o.failed_rank, Some(0));
    assert_eq!(o.ranks[0].pid, None);
    assert!(o.detail.contains("rank 0 could not start `/nonexistent/program`"), "{}", o.detail);
    assert!(o.detail.contains("No such file"), "{}", o.detail);

    // A cwd that does not exist: the failing step is named.
    let dir = job_dir(&tmp, "job2");
    let mut s = one_rank(602, "true");
    s.cwd = "/nonexistent/dir".into();
    launch(Path::new(SHIM), &[], &dir, &s).unwrap();
    let o = wait_finished(&dir, 602, Duration::from_secs(10));
    assert_eq!(o.state, JobState::Failed);
    assert!(o.detail.contains("rank 0 could not start: chdir failed"), "{}", o.detail);
}

/// Run by [`the_shim_survives_its_launcher`] in a child process; does nothing otherwise.
#[test]
fn helper_launch_then_exit() {
    let Ok(dir) = std::env::var("TESSERA_EXEC_HELPER_DIR") else { return };
    let s = one_rank(701, "sleep 1; echo done");
    let pid = launch(Path::new(SHIM), &[], Path::new(&dir), &s).unwrap();
    println!("SHIM_PID={pid}");
}

#[test]
fn the_shim_survives_its_launcher() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = job_dir(&tmp, "job");
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "helper_launch_then_exit", "--nocapture", "--test-threads=1"])
        .env("TESSERA_EXEC_HELPER_DIR", &dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // libtest prints `test name ... ` on the same line, so look for the marker anywhere.
    let marker = stdout.split("SHIM_PID=").nth(1).unwrap_or_else(|| panic!("no pid in {stdout}"));
    let pid: u32 = marker.split_whitespace().next().unwrap().parse().unwrap();
    // The launcher is gone; the shim is alive, re-parented.
    assert_eq!(inspect(&dir, 701).unwrap(), ShimState::Running { shim_pid: pid });
    let o = wait_finished(&dir, 701, Duration::from_secs(20));
    assert_eq!(o.state, JobState::Succeeded, "{o:?}");
    assert_eq!(read(&dir, "stdout.log"), "done\n");
}

#[test]
fn inspect_sees_running_then_lost_and_orphans_are_reported_and_killed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = job_dir(&tmp, "job");
    let s = one_rank(801, r#"sleep 30 & echo "bg=$!"; wait"#);
    let pid = launch(Path::new(SHIM), &[], &dir, &s).unwrap();
    assert_eq!(inspect(&dir, 801).unwrap(), ShimState::Running { shim_pid: pid });
    assert!(matches!(kill_orphans(&dir, 801), Err(ExecError::StillRunning { job_id: 801, .. })));
    wait_for("the background pid", Duration::from_secs(10), || read(&dir, "stdout.log").contains("bg="));
    let bg: u32 = field(&read(&dir, "stdout.log"), "bg=").unwrap().parse().unwrap();
    wait_for("the rank table", Duration::from_secs(10), || started_ranks(&dir) == 1);

    // kill -9 the shim: the rank leader dies with it (PR_SET_PDEATHSIG), its child does not.
    Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
    wait_for("the shim to go", Duration::from_secs(10), || {
        !matches!(inspect(&dir, 801), Ok(ShimState::Running { .. }))
    });
    // The leader's SIGKILL may still be in flight on a loaded machine.
    wait_for(
        "the rank leader to die",
        Duration::from_secs(10),
        || matches!(inspect(&dir, 801), Ok(ShimState::Lost { survivors, .. }) if survivors.len() == 1),
    );
    let state = inspect(&dir, 801).unwrap();
    let ShimState::Lost { detail, survivors } = state else { panic!("{state:?}") };
    assert!(detail.contains(&format!("the shim (pid {pid}) is gone and left no status.json")), "{detail}");
    assert_eq!(survivors, vec![bg], "{detail}");
    assert!(detail.contains(&format!("processes of the job still running: {bg}")), "{detail}");

    assert_eq!(kill_orphans(&dir, 801).unwrap(), vec![bg]);
    wait_for(
        "the orphan to die",
        Duration::from_secs(10),
        || matches!(inspect(&dir, 801), Ok(ShimState::Lost { survivors, .. }) if survivors.is_empty()),
    );
    assert!(matches!(cancel(&dir), Err(ExecError::NotRunning { .. })));
}

#[test]
fn inspect_guards_against_pid_reuse_and_wrong_dirs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = job_dir(&tmp, "job");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("spec.json"), serde_json::to_vec(&one_rank(901, "true")).unwrap()).unwrap();
    // A live process that is not this job's shim (this test process).
    fs::write(dir.join("shim.pid"), format!("{}\n", std::process::id())).unwrap();
    let state = inspect(&dir, 901).unwrap();
    assert!(matches!(&state, ShimState::Lost { detail, .. } if detail.contains("pid reused")), "{state:?}");
    assert!(matches!(cancel(&dir), Err(ExecError::NotRunning { .. })));
    assert!(matches!(inspect(&dir, 902), Err(ExecError::WrongJob { job_id: 902, found: 901, .. })));
    assert!(matches!(inspect(&tmp.path().join("nope"), 1), Err(ExecError::NotAJobDir { .. })));
    fs::remove_file(dir.join("shim.pid")).unwrap();
    assert_eq!(inspect(&dir, 901).unwrap(), ShimState::Unclaimed);
}

#[test]
fn launch_refuses_reuse_and_reports_a_dead_shim() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = job_dir(&tmp, "job");
    launch(Path::new(SHIM), &[], &dir, &one_rank(1001, "true")).unwrap();
    let err = launch(Path::new(SHIM), &[], &dir, &one_rank(1001, "true")).unwrap_err();
    assert!(matches!(err, ExecError::AlreadyLaunched { job_id: 1001, .. }), "{err}");
    wait_finished(&dir, 1001, Duration::from_secs(10));

    // A shim that exits before it claims the job: the launcher gives the job up.
    let j2 = job_dir(&tmp, "j2");
    let err = launch(Path::new("/bin/false"), &[], &j2, &one_rank(1002, "true")).unwrap_err();
    assert!(
        matches!(&err, ExecError::NotStarted { job_id: 1002, detail } if detail.contains("exited (exit status: 1) before it claimed the job")),
        "{err}"
    );
    assert_eq!(inspect(&j2, 1002).unwrap(), ShimState::Abandoned);
    assert_eq!(read(&j2, "shim.pid"), "abandoned\n");

    let err = launch(Path::new("/nonexistent/shim"), &[], &job_dir(&tmp, "j3"), &one_rank(1003, "true")).unwrap_err();
    assert!(matches!(err, ExecError::Spawn { job_id: 1003, .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/shim"), "{err}");

    let mut bad = one_rank(1004, "true");
    bad.argv.clear();
    let err = launch(Path::new(SHIM), &[], &job_dir(&tmp, "j4"), &bad).unwrap_err();
    assert!(matches!(err, ExecError::InvalidSpec { job_id: 1004, .. }), "{err}");
}

#[test]
fn tail_log_follows_output() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = job_dir(&tmp, "job");
    let s = spec(
        1101,
        r#"echo "one $RANK"; sleep 0.3; echo "two $RANK"; echo oops >&2"#,
        vec![rank(1101, 0, 2, vec![], None), rank(1101, 1, 2, vec![], None)],
    );
    launch(Path::new(SHIM), &[], &dir, &s).unwrap();
    let mut got = Vec::new();
    let mut offset = 0;
    wait_for("both lines", Duration::from_secs(10), || {
        let (bytes, next) = tail_log(&dir, 1, offset).unwrap();
        assert_eq!(next, offset + bytes.len() as u64);
        got.extend(bytes);
        offset = next;
        got == b"one 1\ntwo 1\n"
    });
    wait_finished(&dir, 1101, Duration::from_secs(10));
    assert_eq!(tail_log(&dir, 0, 4).unwrap(), (b"0\ntwo 0\n".to_vec(), 12));
    assert_eq!(tail_log(&dir, 0, 12).unwrap(), (Vec::new(), 12));
    assert_eq!(tail_stream(&dir, 1, LogStream::Stderr, 0).unwrap().0, b"oops\n");
    assert!(matches!(tail_log(&dir, 5, 0), Err(ExecError::NoSuchRank { job_id: 1101, rank: 5, .. })));
}

#[test]
fn runs_as_another_user_when_root() {
    if effective_uid() != 0 {
        eprintln!("skipped runs_as_another_user_when_root: needs root (euid is {})", effective_uid());
        let tmp = tempfile::tempdir().unwrap();
        // Without root, asking for another user is refused up front.
        let mut s = one_rank(1201, "true");
        s.uid = 0;
        let err = launch(Path::new(SHIM), &[], &job_dir(&tmp, "job"), &s).unwrap_err();
        assert!(matches!(err, ExecError::CannotSwitchUser { uid: 0, .. }), "{err}");
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = job_dir(&tmp, "job");
    let mut s = spec(1201, r#"id -u; id -g; id -G; echo "pwd=$(pwd)""#, vec![rank(1201, 0, 1, vec![], None)]);
    s.uid = 65534;
    s.gid = 65534;
    launch(Path::new(SHIM), &[], &dir, &s).unwrap();
    let o = wait_finished(&dir, 1201, Duration::from_secs(10));
    assert_eq!(o.state, JobState::Succeeded, "{o:?} {}", read(&dir, "stderr.log"));
    let out = read(&dir, "stdout.log");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..2], &["65534", "65534"], "{out}");
    assert!(!lines[2].split(' ').any(|g| g == "0"), "root's group kept: {out}");
    assert_eq!(lines[3], "pwd=/");
    for name in ["stdout.log", "stderr.log"] {
        let meta = fs::metadata(dir.join(name)).unwrap();
        assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o777), (65534, 65534, 0o600), "{name}");
    }

    // The working directory is entered as the user: a root-only directory is refused.
    let private = tmp.path().join("private");
    fs::create_dir(&private).unwrap();
    fs::set_permissions(&private, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let dir = job_dir(&tmp, "job2");
    let mut s = one_rank(1202, "true");
    (s.uid, s.gid, s.cwd) = (65534, 65534, private);
    launch(Path::new(SHIM), &[], &dir, &s).unwrap();
    let o = wait_finished(&dir, 1202, Duration::from_secs(10));
    assert_eq!(o.state, JobState::Failed);
    assert!(o.detail.contains("chdir failed: Permission denied"), "{}", o.detail);
}

#[test]
fn leftovers_in_a_rank_group_are_killed_at_the_end() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = job_dir(&tmp, "job");
    launch(Path::new(SHIM), &[], &dir, &one_rank(1301, r#"sleep 30 & echo "bg=$!""#)).unwrap();
    let o = wait_finished(&dir, 1301, Duration::from_secs(10));
    assert_eq!(o.state, JobState::Succeeded, "{o:?}");
    assert_eq!(o.binding_notes, vec!["rank 0: killed processes it left in its process group"]);
    let bg = field(&read(&dir, "stdout.log"), "bg=").unwrap().to_owned();
    wait_for("the leftover to die", Duration::from_secs(5), || {
        fs::read_to_string(format!("/proc/{bg}/stat")).map_or(true, |s| s.contains(") Z "))
    });
}

#[test]
fn a_second_cancel_kills_without_waiting_for_the_grace() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = job_dir(&tmp, "job");
    let mut s = one_rank(1401, "trap '' TERM; sleep 30; exit 0");
    s.kill_grace_ms = 60_000;
    launch(Path::new(SHIM), &[], &dir, &s).unwrap();
    wait_for("the rank", Duration::from_secs(10), || started_ranks(&dir) == 1);
    let t0 = Instant::now();
    cancel(&dir).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    cancel(&dir).unwrap();
    let o = wait_finished(&dir, 1401, Duration::from_secs(10));
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(o.state, JobState::Cancelled);
    assert_eq!(o.ranks[0].signal, Some(libc::SIGKILL));
}

#[test]
fn huge_limits_do_not_overflow() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = job_dir(&tmp, "job");
    let mut s = one_rank(1501, "exit 0");
    s.time_limit_ms = Some(u64::MAX);
    s.kill_grace_ms = u64::MAX;
    launch(Path::new(SHIM), &[], &dir, &s).unwrap();
    assert_eq!(wait_finished(&dir, 1501, Duration::from_secs(10)).state, JobState::Succeeded);
}

/// The daemon's launcher hands jobs to a standby shim: the job runs under a shim started with
/// `--standby` (not a fresh one named after the job), `inspect` recognises it by its working
/// directory, a cancel reaches it, and the next launch gets a new standby.
#[test]
fn launcher_hands_jobs_to_standby_shims() {
    let tmp = tempfile::tempdir().unwrap();
    let launcher = tessera_exec::Launcher::new(PathBuf::from(SHIM), Vec::new(), true);
    // Let the first standby come up.
    std::thread::sleep(Duration::from_millis(300));
    let dir = job_dir(&tmp, "a");
    let pid = launcher.launch(&dir, &one_rank(41, "echo standby-ok; sleep 30")).unwrap();
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(String::from_utf8_lossy(&cmdline).contains("--standby"), "{cmdline:?}");
    let canonical = fs::canonicalize(&dir).unwrap();
    assert!(matches!(inspect(&canonical, 41).unwrap(), ShimState::Running { shim_pid } if shim_pid == pid));
    wait_for("the rank's output", Duration::from_secs(10), || {
        tail_stream(&dir, 0, LogStream::Stdout, 0).is_ok_and(|(b, _)| b.starts_with(b"standby-ok"))
    });
    cancel(&dir).unwrap();
    assert_eq!(wait_finished(&dir, 41, Duration::from_secs(15)).state, JobState::Cancelled);
    assert!(read(&dir, "shim.log").contains("job 41"), "the shim's own log moved to the job");

    std::thread::sleep(Duration::from_millis(300));
    let dir = job_dir(&tmp, "b");
    let pid2 = launcher.launch(&dir, &one_rank(42, "exit 0")).unwrap();
    assert_ne!(pid, pid2);
    assert_eq!(wait_finished(&dir, 42, Duration::from_secs(15)).state, JobState::Succeeded);
    // Launching twice into one directory is refused as before.
    assert!(matches!(launcher.launch(&dir, &one_rank(42, "true")), Err(ExecError::AlreadyLaunched { .. })));
}

/// A standby that died before it got a job is not used: the launch falls back to starting the
/// shim directly, and the job runs.
#[test]
fn launcher_falls_back_when_the_standby_is_gone() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let wrapper = tmp.path().join("shim-no-standby");
    fs::write(&wrapper, format!("#!/bin/sh\nif [ \"$1\" = --standby ]; then exit 3; fi\nexec {SHIM} \"$@\"\n"))
        .unwrap();
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    let launcher = tessera_exec::Launcher::new(wrapper, Vec::new(), true);
    std::thread::sleep(Duration::from_millis(300));
    let dir = job_dir(&tmp, "a");
    let pid = launcher.launch(&dir, &one_rank(51, "echo fallback-ok")).unwrap();
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(!String::from_utf8_lossy(&cmdline).contains("--standby"), "{cmdline:?}");
    assert_eq!(wait_finished(&dir, 51, Duration::from_secs(15)).state, JobState::Succeeded);
    assert_eq!(read(&dir, "stdout.log"), "fallback-ok\n");
}

/// Launches racing into one directory: exactly one gets it (its `spec.json` is created once),
/// the others are refused, and the job runs once.
#[test]
fn concurrent_launches_into_one_directory_start_one_job() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = job_dir(&tmp, "job");
    let marker = tmp.path().join("runs");
    let job = one_rank(1601, &format!("echo ran >> {}", marker.display()));
    let barrier = std::sync::Barrier::new(6);
    let results: Vec<Result<u32, ExecError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    launch(Path::new(SHIM), &[], &dir, &job)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
    assert!(
        results.iter().all(|r| r.is_ok() || matches!(r, Err(ExecError::AlreadyLaunched { job_id: 1601, .. }))),
        "{results:?}"
    );
    assert_eq!(wait_finished(&dir, 1601, Duration::from_secs(20)).state, JobState::Succeeded);
    assert_eq!(read(tmp.path(), "runs"), "ran\n");
}

/// A standby shim is handed the job directory's own bytes: a path that is not UTF-8 reaches it
/// intact (a lossy `display()` would name another directory).
#[test]
fn a_standby_takes_a_job_directory_whose_name_is_not_utf8() {
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let pid_file = tmp.path().join("standby.pid");
    let wrapper = script(
        &tmp.path().join("shim-wrapper"),
        &format!("#!/bin/sh\necho $$ > {}.tmp && mv {0}.tmp {0}\nexec {SHIM} \"$@\"\n", pid_file.display()),
    );
    let launcher = tessera_exec::Launcher::new(wrapper, Vec::new(), true);
    wait_for("the standby", Duration::from_secs(10), || pid_file.exists());
    let standby: u32 = read(tmp.path(), "standby.pid").trim().parse().unwrap();
    // Give the launcher's refill thread the moment it needs to file the standby as its spare.
    std::thread::sleep(Duration::from_millis(200));
    let dir = tmp.path().join(std::ffi::OsStr::from_bytes(b"job-\xff"));
    let pid = launcher.launch(&dir, &one_rank(1701, "echo non-utf8-ok")).unwrap();
    assert_eq!(pid, standby, "the standby took the job");
    assert_eq!(wait_finished(&dir, 1701, Duration::from_secs(20)).state, JobState::Succeeded);
    assert_eq!(read(&dir, "stdout.log"), "non-utf8-ok\n");
}
