//! cgroup isolation end to end (root and a writable cgroup file system; each test prints why
//! it skips otherwise): the memory limit and OOM kills, device access by allow-list, the cpuset,
//! and nothing of a job outliving it. The hierarchy is whatever this machine has
//! (`cgroup_support`); the v2 eBPF device filter on a hybrid machine is tested in
//! `cgroup.rs`'s unit tests.

mod common;
use common::*;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tessera_exec::{
    CgroupSupport, Controller, DeviceAccess, DeviceNumber, Isolation, JobSpec, JobState, ShimState, cgroup_support,
    inspect, kill_orphans, launch,
};
use tessera_host::effective_uid;

const PARENT: &str = "tessera-test";

/// This machine's support, when the tests can use it: root, and `controllers` each in a
/// hierarchy where a directory can be made. Otherwise prints why `test` is skipped.
fn usable(test: &str, controllers: &[&str]) -> Option<CgroupSupport> {
    let skip = |why: String| {
        eprintln!("skipped {test}: {why}");
        None
    };
    if effective_uid() != 0 {
        return skip(format!("needs root (euid is {})", effective_uid()));
    }
    let support = cgroup_support();
    for name in controllers {
        let c = match *name {
            "memory" => &support.memory,
            "cpuset" => &support.cpuset,
            _ => &support.devices,
        };
        let Some(Controller { mount, .. }) = c else { return skip(format!("no {name} controller here ({support})")) };
        let probe = mount.join(PARENT);
        if let Err(e) = fs::create_dir(&probe).or_else(|e| if probe.is_dir() { Ok(()) } else { Err(e) }) {
            return skip(format!("cannot create {}: {e}", probe.display()));
        }
    }
    Some(support)
}

fn isolation(job: u64) -> Isolation {
    Isolation {
        parent: PARENT.into(),
        name: format!("job-{job}-run-1-{}", std::process::id()),
        memory_limit_bytes: None,
        cpus: vec![],
        mems: vec![],
        devices: None,
        required: true,
    }
}

/// The job's cgroup directories that exist now.
fn cgroup_dirs(support: &CgroupSupport, iso: &Isolation) -> Vec<PathBuf> {
    [&support.memory, &support.cpuset, &support.devices]
        .into_iter()
        .flatten()
        .map(|c| c.mount.join(&iso.parent).join(&iso.name))
        .chain(support.unified.iter().map(|m| m.join(&iso.parent).join(&iso.name)))
        .filter(|p| p.exists())
        .collect()
}

fn python(job: u64, code: &str, iso: Isolation) -> JobSpec {
    let mut s = one_rank(job, "");
    s.argv = vec!["python3".into(), "-c".into(), code.into()];
    s.isolation = Some(iso);
    s
}

#[test]
fn a_rank_past_its_memory_limit_is_oom_killed() {
    let Some(support) = usable("a_rank_past_its_memory_limit_is_oom_killed", &["memory"]) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let limit = 100 << 20;
    // (job, MiB allocated, state)
    let cases = [(5001, 400, JobState::OomKilled), (5002, 20, JobState::Succeeded)];
    for (job, mib, want) in cases {
        let dir = job_dir(&tmp, &job.to_string());
        let iso = Isolation { memory_limit_bytes: Some(limit), ..isolation(job) };
        let s = python(job, &format!("b = bytearray({mib} << 20)"), iso.clone());
        launch(Path::new(SHIM), &[], &dir, &s).unwrap();
        let o = wait_finished(&dir, job, Duration::from_secs(60));
        assert_eq!(o.state, want, "{mib} MiB: {o:?}");
        if want == JobState::OomKilled {
            assert_eq!(o.failed_rank, Some(0));
            assert_eq!(o.ranks[0].signal, Some(libc::SIGKILL));
            assert_eq!(o.detail, "rank 0 was killed by the OOM killer at the job's memory limit of 104857600 bytes");
        }
        assert_eq!(cgroup_dirs(&support, &iso), Vec::<PathBuf>::new(), "the cgroup is removed");
    }
}

/// Device nodes made with mknod (no driver behind them): the allowed one opens as far as the
/// missing driver (ENXIO), the guarded one is refused by the cgroup (EPERM); a device of an
/// unguarded major still opens.
#[test]
fn guarded_devices_open_only_when_allowed() {
    let Some(support) = usable("guarded_devices_open_only_when_allowed", &["devices"]) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (allowed, denied) = (tmp.path().join("nvidia7"), tmp.path().join("nvidia8"));
    for (node, minor) in [(&allowed, "7"), (&denied, "8")] {
        let ok = Command::new("mknod").arg(node).args(["c", "195", minor]).status().unwrap().success();
        if !ok {
            eprintln!("skipped guarded_devices_open_only_when_allowed: mknod failed");
            return;
        }
    }
    let probe = format!(
        "import errno, os\nfor p in [{:?}, {:?}, '/dev/null']:\n    try:\n        os.close(os.open(p, os.O_RDWR))\n        print('ok')\n    except OSError as e:\n        print(errno.errorcode[e.errno])\n",
        allowed.display().to_string(),
        denied.display().to_string()
    );
    let access =
        DeviceAccess { guarded_majors: vec![195], allow: vec![tessera_exec::device_number(&allowed).unwrap()] };
    assert_eq!(access.allow, vec![DeviceNumber { major: 195, minor: 7 }]);
    // (job, isolation, what the three opens give)
    let with = Isolation { devices: Some(access), ..isolation(5101) };
    let cases = [(5100, None, "ENXIO\nENXIO\nok\n"), (5101, Some(with.clone()), "ENXIO\nEPERM\nok\n")];
    for (job, iso, want) in cases {
        let dir = job_dir(&tmp, &job.to_string());
        let mut s = python(job, &probe, isolation(job));
        s.isolation = iso;
        launch(Path::new(SHIM), &[], &dir, &s).unwrap();
        let o = wait_finished(&dir, job, Duration::from_secs(30));
        assert_eq!(o.state, JobState::Succeeded, "{o:?} {}", read(&dir, "stderr.log"));
        assert_eq!(read(&dir, "stdout.log"), want, "job {job} ({support})");
    }
    assert_eq!(cgroup_dirs(&support, &with), Vec::<PathBuf>::new());
}

#[test]
fn ranks_run_inside_the_cpuset() {
    let Some(support) = usable("ranks_run_inside_the_cpuset", &["cpuset"]) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let cpus: Vec<u32> = own_set("Cpus_allowed_list").into_iter().collect();
    let last = *cpus.last().unwrap();
    let mem = *own_set("Mems_allowed_list").iter().next().unwrap();
    let iso = Isolation { cpus: vec![last], mems: vec![mem], ..isolation(5201) };
    let dir = job_dir(&tmp, "job");
    let script = "grep -E '^(Cpus|Mems)_allowed_list' /proc/self/status; cat /proc/self/cgroup";
    // Rank 0 asks for nothing; rank 1 asks for every CPU and gets the cpuset's.
    let mut s = spec(5201, script, vec![rank(5201, 0, 2, vec![], None), rank(5201, 1, 2, cpus.clone(), None)]);
    s.isolation = Some(iso.clone());
    launch(Path::new(SHIM), &[], &dir, &s).unwrap();
    let o = wait_finished(&dir, 5201, Duration::from_secs(30));
    assert_eq!(o.state, JobState::Succeeded, "{o:?}");
    for log in ["stdout.log", "rank-1.stdout.log"] {
        let text = read(&dir, log);
        assert_eq!(field(&text, "Cpus_allowed_list:"), Some(last.to_string().as_str()), "{log}: {text}");
        assert_eq!(field(&text, "Mems_allowed_list:"), Some(mem.to_string().as_str()), "{log}: {text}");
        let inside = format!("/{PARENT}/{}", iso.name);
        assert!(text.lines().any(|l| l.contains("cpuset") && l.ends_with(&inside)), "{log}: {text}");
    }
    assert_eq!(o.ranks[1].cpus.as_deref(), Some(last.to_string().as_str()));
    assert_eq!(cgroup_dirs(&support, &iso), Vec::<PathBuf>::new());
}

/// A rank leaves a process behind that escaped its session and process group: the cgroup
/// catches it when the job ends, and the cgroup is removed.
#[test]
fn nothing_of_the_job_outlives_it() {
    let Some(support) = usable("nothing_of_the_job_outlives_it", &[]) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = job_dir(&tmp, "job");
    let iso = isolation(5301);
    let mut s = one_rank(5301, r#"setsid sleep 300 & echo "bg=$!""#);
    s.isolation = Some(iso.clone());
    launch(Path::new(SHIM), &[], &dir, &s).unwrap();
    let o = wait_finished(&dir, 5301, Duration::from_secs(30));
    assert_eq!(o.state, JobState::Succeeded, "{o:?}");
    let bg: u32 = field(&read(&dir, "stdout.log"), "bg=").unwrap().parse().unwrap();
    let note = format!("killed processes left in the job's cgroup: {bg}");
    assert!(o.binding_notes.contains(&note), "{:?}", o.binding_notes);
    wait_for("the escaped sleep to die", Duration::from_secs(5), || gone(bg));
    assert_eq!(cgroup_dirs(&support, &iso), Vec::<PathBuf>::new());
}

/// The shim dies (kill -9): the daemon sees the job lost with what is left in its cgroup, and
/// `kill_orphans` ends those processes and removes the cgroup.
#[test]
fn kill_orphans_empties_and_removes_the_cgroup() {
    let Some(support) = usable("kill_orphans_empties_and_removes_the_cgroup", &[]) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = job_dir(&tmp, "job");
    let iso = isolation(5401);
    let mut s = one_rank(5401, r#"setsid sleep 300 & echo "bg=$!"; exec sleep 300"#);
    s.isolation = Some(iso.clone());
    let pid = launch(Path::new(SHIM), &[], &dir, &s).unwrap();
    wait_for("the background pid", Duration::from_secs(10), || read(&dir, "stdout.log").contains("bg="));
    let bg: u32 = field(&read(&dir, "stdout.log"), "bg=").unwrap().parse().unwrap();
    Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
    // The rank itself dies with the shim (PR_SET_PDEATHSIG); the escaped sleep, in no session
    // of the job's, is found through the cgroup.
    wait_for(
        "the job to be lost with the escaped sleep",
        Duration::from_secs(10),
        || matches!(inspect(&dir, 5401), Ok(ShimState::Lost { survivors, .. }) if survivors == vec![bg]),
    );
    assert!(!cgroup_dirs(&support, &iso).is_empty());
    assert!(kill_orphans(&dir, 5401).unwrap().contains(&bg));
    wait_for("the escaped sleep to die", Duration::from_secs(5), || gone(bg));
    assert_eq!(cgroup_dirs(&support, &iso), Vec::<PathBuf>::new());
}

/// Required isolation that cannot be had fails the job before any rank starts, naming what
/// is missing (here a CPU no cpuset can hold; without root, root itself); optional isolation
/// runs the job without it and says so.
#[test]
fn isolation_that_cannot_be_applied_fails_the_job_only_when_required() {
    let tmp = tempfile::tempdir().unwrap();
    let marker = tmp.path().join("ran");
    for (job, required) in [(5501, true), (5502, false)] {
        let dir = job_dir(&tmp, &job.to_string());
        let iso = Isolation { cpus: vec![4000], required, ..isolation(job) };
        let mut s = one_rank(job, &format!("touch {}", marker.display()));
        s.isolation = Some(iso.clone());
        launch(Path::new(SHIM), &[], &dir, &s).unwrap();
        let o = wait_finished(&dir, job, Duration::from_secs(30));
        if required {
            assert_eq!(o.state, JobState::Failed, "{o:?}");
            let prefix = format!("job {job}: required isolation cannot be applied: ");
            assert!(o.detail.starts_with(&prefix), "{}", o.detail);
            assert!(o.detail.contains("cpuset") || o.detail.contains("need root"), "{}", o.detail);
            assert!(o.ranks.is_empty() && !marker.exists(), "{o:?}");
        } else {
            assert_eq!(o.state, JobState::Succeeded, "{o:?}");
            assert!(marker.exists());
            assert!(o.binding_notes.iter().any(|n| n.starts_with("isolation not applied: ")), "{:?}", o.binding_notes);
        }
        assert_eq!(cgroup_dirs(&cgroup_support(), &iso), Vec::<PathBuf>::new(), "nothing left behind");
    }
}
