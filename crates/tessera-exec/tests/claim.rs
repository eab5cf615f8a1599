//! The claim protocol end to end: `shim.pid` is created once, by a shim (its pid) or by the
//! daemon giving the job up (`abandoned`), and whoever is second learns who won. A job the
//! daemon abandoned is never run, whatever shim turns up later.

mod common;
use common::*;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tessera_exec::{
    Claim, EXIT_ABANDONED, ExecError, JobState, Launcher, ShimState, abandon, cancel, inspect, kill_orphans, launch,
};

/// A job that would leave `marker` behind if it ever ran.
fn marker_job(job_id: u64, marker: &Path) -> tessera_exec::JobSpec {
    one_rank(job_id, &format!("touch {}", marker.display()))
}

/// Runs the shim binary on `dir` (directly, or as a standby fed `dir` on stdin) with its output
/// appended to `shim.log`, as the launcher would; returns its exit code.
fn run_shim_on(dir: &Path, standby: bool) -> i32 {
    let log = fs::OpenOptions::new().create(true).append(true).open(dir.join("shim.log")).unwrap();
    let mut cmd = Command::new(SHIM);
    if standby {
        cmd.arg("--standby").stdin(Stdio::piped());
    } else {
        cmd.arg("--job-dir").arg(dir).stdin(Stdio::null());
    }
    let mut child = cmd.stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap();
    if standby {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{}", dir.display()).unwrap();
    }
    child.wait().unwrap().code().unwrap_or(-1)
}

#[test]
fn an_abandoned_job_directory_is_never_run() {
    let tmp = tempfile::tempdir().unwrap();
    for (job, standby) in [(2001, false), (2002, true)] {
        let dir = job_dir(&tmp, &format!("job-{job}"));
        let marker = tmp.path().join(format!("ran-{job}"));
        prepare_job_dir(&dir, &marker_job(job, &marker));
        assert_eq!(inspect(&dir, job).unwrap(), ShimState::Unclaimed);
        assert!(matches!(cancel(&dir), Err(ExecError::NotRunning { .. })), "nothing to cancel yet");

        assert_eq!(abandon(&dir, job).unwrap(), Claim::Abandoned);
        assert_eq!(inspect(&dir, job).unwrap(), ShimState::Abandoned);
        assert_eq!(abandon(&dir, job).unwrap(), Claim::Abandoned, "abandoning twice is the same answer");

        // A shim that turns up now (late standby, a slow fork) takes nothing.
        assert_eq!(run_shim_on(&dir, standby), EXIT_ABANDONED, "standby: {standby}");
        assert!(!marker.exists(), "the abandoned job ran (standby: {standby})");
        let log = read(&dir, "shim.log");
        assert_eq!(log.lines().count(), 1, "{log}");
        assert!(log.contains("abandoned before this shim claimed it; nothing started"), "{log}");
        let mut names: Vec<String> =
            fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names, ["shim.log", "shim.pid", "spec.json"], "nothing else is written");
        assert_eq!(read(&dir, "shim.pid"), "abandoned\n");
        assert_eq!(inspect(&dir, job).unwrap(), ShimState::Abandoned);
        assert_eq!(kill_orphans(&dir, job).unwrap(), Vec::<u32>::new());
    }
}

#[test]
fn a_shim_that_claimed_first_wins_over_abandon() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = job_dir(&tmp, "job");
    let marker = tmp.path().join("ran");
    let pid =
        launch(Path::new(SHIM), &[], &dir, &one_rank(2101, &format!("sleep 0.3; touch {}", marker.display()))).unwrap();
    assert_eq!(abandon(&dir, 2101).unwrap(), Claim::Shim { pid });
    assert_eq!(inspect(&dir, 2101).unwrap(), ShimState::Running { shim_pid: pid });
    let o = wait_finished(&dir, 2101, Duration::from_secs(20));
    assert_eq!(o.state, JobState::Succeeded, "{o:?}");
    assert!(marker.exists());
    assert_eq!(abandon(&dir, 2101).unwrap(), Claim::Shim { pid }, "a finished job stays the shim's");

    // Not this job, or no job at all.
    assert!(matches!(abandon(&dir, 2102), Err(ExecError::WrongJob { job_id: 2102, found: 2101, .. })));
    assert!(matches!(abandon(&tmp.path().join("nope"), 1), Err(ExecError::NotAJobDir { .. })));
}

/// The bug this protocol fixes: a standby shim that was stopped (SIGSTOP, or just starved)
/// when it was handed a job. The launch must not report the job launched; once the ready
/// timeout passes the launcher abandons it, and the standby, when it runs again, takes nothing.
#[test]
fn a_stopped_standby_never_runs_a_job_it_was_given_up_on() {
    let tmp = tempfile::tempdir().unwrap();
    let pid_file = tmp.path().join("standby.pid");
    let wrapper = script(
        &tmp.path().join("shim-wrapper"),
        &format!("#!/bin/sh\necho $$ > {}.tmp && mv {0}.tmp {0}\nexec {SHIM} \"$@\"\n", pid_file.display()),
    );
    let timeout = Duration::from_millis(300);
    let launcher = Launcher::new(wrapper, Vec::new(), true).with_ready_timeout(timeout);
    wait_for("the standby", Duration::from_secs(10), || pid_file.exists());
    let standby: u32 = read(tmp.path(), "standby.pid").trim().parse().unwrap();
    // Give the launcher's refill thread the moment it needs to file the standby as its spare.
    std::thread::sleep(Duration::from_millis(200));
    kill(standby, "-STOP");
    // Resumed however this test ends, so a failure leaves no stopped process behind.
    let resume = Resume(standby);

    let dir = job_dir(&tmp, "job");
    let marker = tmp.path().join("ran");
    let t0 = Instant::now();
    let err = launcher.launch(&dir, &marker_job(2201, &marker)).unwrap_err();
    assert!(t0.elapsed() >= timeout);
    let want = format!("no shim claimed the job within 300 ms (shim pid {standby})");
    assert!(matches!(&err, ExecError::NotStarted { job_id: 2201, detail } if *detail == want), "{err}");
    assert_eq!(inspect(&dir, 2201).unwrap(), ShimState::Abandoned);

    drop(resume);
    wait_for("the standby to give up", Duration::from_secs(10), || gone(standby));
    assert!(!marker.exists(), "the standby ran a job the launcher had given up");
    assert!(!dir.join("status.json").exists() && !dir.join("ranks.json").exists());
    let log = read(&dir, "shim.log");
    assert!(log.contains("abandoned before this shim claimed it; nothing started"), "{log}");
    assert_eq!(inspect(&dir, 2201).unwrap(), ShimState::Abandoned);

    // The launcher goes on with a fresh standby, and a fresh job directory runs.
    wait_for("a new standby", Duration::from_secs(10), || {
        read(tmp.path(), "standby.pid").trim().parse::<u32>().is_ok_and(|p| p != standby)
    });
    std::thread::sleep(Duration::from_millis(200));
    let dir2: PathBuf = job_dir(&tmp, "job-run-2");
    launcher.launch(&dir2, &marker_job(2201, &marker)).unwrap();
    assert_eq!(wait_finished(&dir2, 2201, Duration::from_secs(20)).state, JobState::Succeeded);
    assert!(marker.exists());
}

/// Sends `SIGCONT` to a stopped process when dropped.
struct Resume(u32);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.0.to_string()]).status();
    }
}

fn kill(pid: u32, sig: &str) {
    assert!(Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success());
}

/// `kill_orphans` on a job no shim has claimed yet abandons it first, so a shim that turns up
/// afterwards cannot start ranks whose cgroup is being torn down; a finished job is left alone.
#[test]
fn kill_orphans_settles_an_unclaimed_job_before_it_kills() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = job_dir(&tmp, "job");
    let marker = tmp.path().join("ran");
    prepare_job_dir(&dir, &marker_job(2401, &marker));
    assert_eq!(inspect(&dir, 2401).unwrap(), ShimState::Unclaimed);
    assert_eq!(kill_orphans(&dir, 2401).unwrap(), Vec::<u32>::new());
    assert_eq!(inspect(&dir, 2401).unwrap(), ShimState::Abandoned);
    assert_eq!(run_shim_on(&dir, false), EXIT_ABANDONED);
    assert!(!marker.exists(), "a shim ran the job kill_orphans was cleaning up");

    let done = job_dir(&tmp, "done");
    launch(Path::new(SHIM), &[], &done, &one_rank(2402, "true")).unwrap();
    assert_eq!(wait_finished(&done, 2402, Duration::from_secs(20)).state, JobState::Succeeded);
    assert_eq!(kill_orphans(&done, 2402).unwrap(), Vec::<u32>::new());
}

/// The shim's own messages must never panic it: with stdout and stderr on a full disk
/// (`/dev/full`, every write `ENOSPC`) it still exits with its own code.
#[test]
fn an_unwritable_stderr_does_not_panic_the_shim() {
    let full = || fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = job_dir(&tmp, "job");
    prepare_job_dir(&dir, &one_rank(2501, "true"));
    assert_eq!(abandon(&dir, 2501).unwrap(), Claim::Abandoned);
    let run = |cmd: &mut Command| cmd.stdin(Stdio::null()).stdout(full()).stderr(full()).status().unwrap().code();
    assert_eq!(run(Command::new(SHIM).arg("--job-dir").arg(&dir)), Some(EXIT_ABANDONED));
    assert_eq!(run(Command::new(SHIM).arg("--no-such-flag")), Some(2));
}
