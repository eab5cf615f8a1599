//! The daemon's promises, end to end, each with what a user or a job really observes: no job
//! lost or run twice across a `kill -9` at the worst moment, TCP callers act as their token's
//! user, private state, refusals at submit that name the field, a lost or corrupt database
//! refused, GPU health fencing that survives restarts, whole GPUs with MIG off, preemption
//! that requeues, MPS per user, cgroup isolation, and the wiring of every job (identity, CPUs,
//! memory policy, devices, MPS, limits) as the job itself sees it.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Daemon, NOBODY, children_with, read, root, shared_dir};
use serde_json::Value;

fn lines(p: &Path) -> usize {
    read(p).lines().count()
}

/// The kill -9 window between the launcher handing a job to a supervisor and the supervisor
/// claiming it: a stopped standby supervisor has the job's directory in its pipe when the
/// daemon is killed. The restarted daemon claims the directory itself (the job never ran), so
/// the job runs exactly once, in a fresh run directory; the old supervisor, woken up, finds
/// the directory taken and runs nothing.
#[test]
fn a_kill_9_before_a_supervisor_claims_a_job_loses_nothing_and_runs_nothing_twice() {
    let mut d = Daemon::start("1xA100-40GB,numa=1");
    let marks = shared_dir(d.path(), "marks");
    let pid = d.pid().unwrap();
    // The standby supervisor the daemon keeps ready.
    let t0 = Instant::now();
    let standby = loop {
        if let Some(p) = children_with(pid, &["shim", "--standby"]).first() {
            break *p;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "no standby supervisor");
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = std::process::Command::new("kill").args(["-STOP", &standby.to_string()]).status();
    let mark = marks.join("ran");
    let id = d.submit(&["--compute-slices", "1", "--", "sh", "-c", &format!("echo run >> {}", mark.display())]);
    // The daemon has handed the job over and waits for a claim that cannot come.
    std::thread::sleep(Duration::from_millis(700));
    assert!(d.state().join(format!("jobs/{id}/run-1/spec.json")).exists(), "the job was handed over");
    d.kill9();
    d.spawn();
    let j = d.wait(id);
    assert_eq!(j["state"], "succeeded", "{j}\n{}", d.log());
    assert_eq!(j["runs"], 2, "{j}");
    assert!(d.log().contains("no supervisor had taken it"), "{}", d.log());
    // The old standby wakes up: the directory is not its to run.
    let _ = std::process::Command::new("kill").args(["-CONT", &standby.to_string()]).status();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(lines(&mark), 1, "the job ran {} times", lines(&mark));
    assert!(!d.state().join(format!("jobs/{id}/run-1/status.json")).exists());
    assert_eq!(read(&d.state().join(format!("jobs/{id}/run-1/shim.pid"))).trim(), "abandoned");
}

/// TCP callers are the local user their token maps to: their jobs run as that user, and the
/// same user sees them over the Unix socket.
#[test]
fn tcp_callers_act_as_their_token_user() {
    if !root() {
        eprintln!("skipped: needs root to run jobs as another user");
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("tokens");
    std::fs::write(&token, "nobody s3cret-s3cret-s3cret\n").unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let d = Daemon::with_config(
        "1xA100-40GB,numa=1",
        &format!("[server]\ntcp = \"127.0.0.1:{port}\"\ntoken_file = \"{}\"\n", token.display()),
    );
    let out = shared_dir(d.path(), "out");
    let tcp = |args: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(["--tcp", &format!("127.0.0.1:{port}")])
            .env("TESSERA_TOKEN", "s3cret-s3cret-s3cret")
            .args(args)
            .current_dir("/tmp")
            .output()
            .unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let file = out.join("id");
    let (code, id, err) =
        tcp(&["submit", "--compute-slices", "1", "--", "sh", "-c", &format!("id -u > {}", file.display())]);
    assert_eq!(code, 0, "{err}");
    let id: u64 = id.trim().parse().unwrap();
    assert_eq!(d.wait(id)["state"], "succeeded");
    assert_eq!(read(&file).trim(), NOBODY.to_string(), "the job ran as the token's user");
    assert_eq!(d.job(id)["uid"], NOBODY);
    // The same user over the Unix socket: their own job.
    let shown = d.ok_as(NOBODY, Path::new("/tmp"), &["-o", "json", "job", &id.to_string()]);
    let v: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(v["user"], "nobody");
    let (code, _, err) = tcp(&["submit", "--compute-slices", "1", "--priority", "9", "--", "true"]);
    assert_eq!(code, 1);
    assert!(err.contains("priority 9 is above 0") && err.contains("HTTP 403"), "{err}");
}

/// The state directory, database, job specs and logs are private.
#[test]
fn the_state_directory_and_job_files_are_private() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let d = Daemon::start("1xA100-40GB,numa=1");
    let id = if root() {
        d.submit_as(
            NOBODY,
            Path::new("/tmp"),
            &["--compute-slices", "1", "--env", "SECRET=hunter2", "--", "echo", "hi"],
        )
    } else {
        d.submit(&["--compute-slices", "1", "--env", "SECRET=hunter2", "--", "echo", "hi"])
    };
    assert_eq!(d.wait(id)["state"], "succeeded");
    let mode = |p: &Path| {
        std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o7777
    };
    assert_eq!(mode(&d.state()), 0o700);
    assert_eq!(mode(&d.state().join("tessera.db")), 0o600);
    assert_eq!(mode(&d.state().join(format!("jobs/{id}"))), 0o700);
    let spec = d.state().join(format!("jobs/{id}/run-1/spec.json"));
    assert!(read(&spec).contains("hunter2"));
    assert_eq!(mode(&spec), 0o600);
    let log = d.state().join(format!("output/{id}/stdout.log"));
    assert_eq!(mode(&log), 0o600);
    if root() {
        assert_eq!(std::fs::metadata(&log).unwrap().uid(), NOBODY, "a job's own files are its user's");
        // And another user cannot read them.
        let o = std::process::Command::new("setpriv")
            .args(["--reuid=1", "--regid=1", "--clear-groups", "cat"])
            .arg(&spec)
            .output()
            .unwrap();
        assert!(!o.status.success());
    }
}

/// Every request that cannot run is refused at submit with the field, and the body, header and
/// priority limits hold.
#[test]
fn requests_that_cannot_run_are_refused_naming_the_field() {
    let d = Daemon::start("1xA100-40GB,numa=1");
    let job = |extra: &str, resources: &str| {
        format!(r#"{{"command":["true"],"cwd":"/","env":{{"PATH":"/usr/bin:/bin"{extra}}},"resources":{resources}}}"#)
    };
    let ok = r#"{"gpu":{"compute_slices":{"slices":1}}}"#;
    let cases: Vec<(String, u16, &str)> = vec![
        (job(r#","A=B":"x""#, ok), 400, "env.A=B: a variable name cannot contain '='"),
        (job(r#","":"x""#, ok), 400, "env: has an empty variable name"),
        (job(r#","A":"x\u0000y""#, ok), 400, "env.A: contains a NUL byte"),
        (job(&format!(r#","BIG":"{}""#, "x".repeat(200_000)), ok), 400, "env.BIG: is 200004 bytes"),
        (job("", ok).replace(r#"["true"]"#, r#"["tr\u0000ue"]"#), 400, "command[0]: contains a NUL byte"),
        (
            job("", ok).replace(r#"["true"]"#, r#"["no-such-program-anywhere"]"#),
            400,
            "command[0]: 'no-such-program-anywhere' is not in the job's PATH",
        ),
        (job("", ok).replace(r#""cwd":"/""#, r#""cwd":"/no/such/dir""#), 400, "cwd: /no/such/dir: No such file"),
        (job("", ok).replace(r#""cwd":"/""#, r#""cwd":"relative""#), 400, "cwd: 'relative' must be an absolute path"),
        (
            job("", r#"{"gpu":{"compute_slices":{"slices":1}},"cpus":1000}"#),
            422,
            "resources.cpus: it needs 1000 CPUs per rank",
        ),
        (
            job("", r#"{"gpu":{"compute_slices":{"slices":1}},"mem_mib":10737418240}"#),
            422,
            "resources.mem_mib: it needs",
        ),
        (
            job("", r#"{"gpu":{"compute_slices":{"slices":1}},"ranks":100}"#),
            422,
            "resources.ranks: it needs 100 rank(s)",
        ),
        (job("", r#"{"gpu":{"profile":{"name":"3g.40gb"}}}"#), 422, "unknown MIG profile '3g.40gb'"),
        (job("", r#"{"gpu":{"compute_slices":{"slices":1}},"priority":5}"#), 201, ""),
        (job("", r#"{"gpu":{"compute_slices":{"slices":1}},"tenant":"nope"}"#), 400, "no tenant 'nope' is configured"),
        (job("", r#"{"gpu":{"compute_slices":{"slices":1}},"ranks":0}"#), 400, "resources.ranks: must be at least 1"),
    ];
    for (body, status, words) in cases {
        let (s, v) = d.post("/v1/jobs", &body);
        assert_eq!(s, status, "{}: {v}", &body[..body.len().min(200)]);
        if status >= 400 {
            let m = v["error"]["message"].as_str().unwrap_or_default();
            assert!(m.contains(words), "'{words}' not in: {m}");
        }
    }
    // Limits with JSON bodies: a megabyte body, a huge header, a wrong method.
    let big = job(&format!(r#","BIG":"{}""#, "x".repeat(2 << 20)), ok);
    let (s, v) = d.post("/v1/jobs", &big);
    assert_eq!(s, 413, "{v}");
    assert!(v["error"]["message"].is_string(), "{v}");
    let (s, v) = d.raw(&format!(
        "GET /v1/jobs HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "y".repeat(40_000)
    ));
    assert_eq!(s, 431, "{v}");
    assert!(v["error"]["code"].is_string(), "{v}");
    let (s, v) = d.raw("DELETE /v1/gpus HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!((s, v["error"]["code"].as_str()), (405, Some("method_not_allowed")), "{v}");
    // Priorities above the ceiling are for admins only.
    if root() {
        let (code, _, err) = d.cli_as(NOBODY, Path::new("/tmp"), &["submit", "--priority", "5", "--", "true"]);
        assert_eq!(code, 1);
        assert!(err.contains("priority 5 is above 0") && err.contains("HTTP 403"), "{err}");
    }
}

/// With its database gone, the daemon refuses to start beside old job directories unless told
/// `--init`; then job ids continue above them. A corrupt database is refused too, and `--init`
/// moves it aside.
#[test]
fn a_missing_or_corrupt_database_is_refused_unless_init() {
    let mut d = Daemon::start("1xA100-40GB,numa=1");
    let mut last = 0;
    for _ in 0..3 {
        last = d.submit(&["--compute-slices", "1", "--", "true"]);
    }
    assert_eq!(d.wait(last)["state"], "succeeded");
    d.stop();
    for f in ["tessera.db", "tessera.db-wal", "tessera.db-shm"] {
        let _ = std::fs::remove_file(d.state().join(f));
    }
    let e = d.try_spawn().unwrap_err();
    assert!(e.contains("is missing, but job directories up to job 3 remain") && e.contains("--init"), "{e}");
    d.next_args = vec!["--init".into()];
    d.spawn();
    let id = d.submit(&["--compute-slices", "1", "--", "true"]);
    assert!(id > last, "new ids continue above the directories: {id}");
    assert_eq!(d.wait(id)["state"], "succeeded");
    d.stop();
    // Corrupt: a page of garbage in the middle of the file.
    let db = d.state().join("tessera.db");
    let mut bytes = std::fs::read(&db).unwrap();
    for b in bytes.iter_mut().skip(4096).take(4096) {
        *b = 0x5a;
    }
    std::fs::write(&db, &bytes).unwrap();
    let _ = std::fs::remove_file(d.state().join("tessera.db-wal"));
    let e = d.try_spawn().unwrap_err();
    assert!(e.contains("is corrupt") && e.contains("--init"), "{e}");
    d.next_args = vec!["--init".into()];
    d.spawn();
    assert!(d.log().contains("was moved to"), "{}", d.log());
    let fresh = d.submit(&["--compute-slices", "1", "--", "true"]);
    assert!(fresh > id, "{fresh} after {id}");
}

/// GPU health fencing: a fatal Xid ends the jobs on the GPU (queued again when they allow it,
/// failed naming the Xid otherwise), no new work goes there, health survives a restart, and it
/// clears only after what NVIDIA's catalog says it needs (a reset).
#[test]
fn a_failed_gpu_is_fenced_until_it_is_reset() {
    let mut d =
        Daemon::configured("2xH100-80GB,numa=1", "", "[health]\nprobe_interval_ms = 100\nstop_grace_ms = 300\n");
    let a = d.submit(&["--gpus", "1", "--", "sh", "-c", "if [ $TESSERA_RESTART_COUNT = 0 ]; then sleep 60; fi"]);
    let b = d.submit(&["--gpus", "1", "--no-requeue", "--", "sleep", "60"]);
    let ja = d.wait_state(a, "running", 30);
    d.wait_state(b, "running", 30);
    let gpu_a = ja["ranks"][0]["slices"][0]["gpu"].as_u64().unwrap();
    let gpu_b = 1 - gpu_a;
    // Xid 48 (double-bit ECC: reset the GPU) on job b's GPU.
    d.sim(&["xid", &gpu_b.to_string(), "48"]);
    let jb = d.wait(b);
    assert_eq!(jb["state"], "failed", "{jb}");
    assert!(jb["reason"].as_str().unwrap().contains("Xid 48"), "{jb}");
    // New whole-GPU work never goes to the failed GPU.
    let c = d.submit(&["--gpus", "1", "--", "true"]);
    std::thread::sleep(Duration::from_millis(600));
    let jc = d.job(c);
    assert_eq!(jc["state"], "queued", "{jc}");
    assert!(
        jc["reason"].as_str().unwrap().starts_with("capacity") || jc["reason"].as_str().unwrap().starts_with("health"),
        "{jc}"
    );
    let health: Value = serde_json::from_str(&d.ok(&["-o", "json", "admin", "health", "show"])).unwrap();
    let g = &health["gpus"][gpu_b as usize];
    assert_eq!(g["health"]["state"], "unhealthy", "{g}");
    assert_eq!(g["health"]["needs"], "reset_gpu", "{g}");
    assert_eq!(g["events"][0]["event"]["xid"], 48, "{g}");
    // Job a's GPU fails too, now with Xid 79 (off the bus): a is queued again, runs later.
    d.sim(&["xid", &gpu_a.to_string(), "79"]);
    let t0 = Instant::now();
    loop {
        let j = d.job(a);
        let events = j["events"].as_array().unwrap().clone();
        if events.iter().any(|e| e["to"] == "queued" && e["reason"].as_str().unwrap_or("").contains("Xid 79")) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "job a was not requeued: {j}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A restart forgets nothing.
    d.kill9();
    d.spawn();
    let health: Value = serde_json::from_str(&d.ok(&["-o", "json", "admin", "health", "show"])).unwrap();
    assert_eq!(health["gpus"][gpu_b as usize]["health"]["state"], "unhealthy", "{health}");
    // Quiet time is not enough for Xid 48: only a reset.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(d.job(c)["state"], "queued");
    d.sim(&["reset", &gpu_b.to_string()]);
    let jc = d.wait(c);
    assert_eq!(jc["state"], "succeeded", "{jc}\n{}", d.log());
    assert_eq!(jc["ranks"][0]["slices"][0]["gpu"], gpu_b);
    // The lost GPU comes back only with a reboot; then job a runs (again).
    d.sim(&["reboot"]);
    let ja = d.wait(a);
    assert_eq!(ja["state"], "succeeded".to_string(), "{ja}");
}

/// GPUs with MIG off run whole-GPU work as `GPU-<uuid>`; a MIG profile is refused there.
#[test]
fn gpus_with_mig_off_run_whole_gpu_jobs() {
    let d = Daemon::start("2xH100-80GB,numa=2,mig=off");
    let out = shared_dir(d.path(), "out");
    let f = out.join("env");
    let id = d.submit(&["--gpus", "1", "--", "sh", "-c", &format!("echo $CUDA_VISIBLE_DEVICES > {}", f.display())]);
    let j = d.wait(id);
    assert_eq!(j["state"], "succeeded", "{j}");
    let dev = read(&f).trim().to_string();
    assert!(dev.starts_with("GPU-"), "{dev}");
    let full = d.job(id);
    assert_eq!(full["ranks"][0]["slices"][0]["mig"], false, "{full}");
    assert_eq!(full["ranks"][0]["devices"][0], dev);
    let (code, _, err) = d.cli(&["submit", "--profile", "1g.10gb", "--", "true"]);
    assert_eq!(code, 1);
    assert!(err.contains("is a MIG profile and no GPU on this node has MIG on") && err.contains("422"), "{err}");
    // Memory-sized work takes a whole GPU; two GPUs for one rank, both visible to it.
    let id = d.submit(&["--gpu-mem", "20GiB", "--", "true"]);
    assert_eq!(d.wait(id)["state"], "succeeded");
    let id = d.submit(&["--gpus", "2", "--", "sh", "-c", &format!("echo $CUDA_VISIBLE_DEVICES > {}", f.display())]);
    assert_eq!(d.wait(id)["state"], "succeeded");
    let devs: Vec<String> = read(&f).trim().split(',').map(str::to_string).collect();
    assert_eq!(devs.len(), 2);
    assert!(devs.iter().all(|d| d.starts_with("GPU-")), "{devs:?}");
}

/// The driver decides how many MIG devices one process may use: before R570 one, so a rank
/// asking for two whole GPUs on MIG GPUs is refused with what to ask for instead; from R570 the
/// rank gets both. The daemon reads the driver through NVML (`--nvml-library`, the stand-in).
#[test]
fn the_driver_decides_how_many_mig_devices_one_process_gets() {
    let quiet = "[jobs]\nisolation = \"off\"\n";
    let old = Daemon::nvml("2xH100-80GB,numa=1", "550.54.15", quiet);
    let (code, _, err) = old.cli(&["submit", "--gpus", "2", "--", "true"]);
    assert_eq!(code, 1, "{err}\n{}", old.log());
    assert!(err.contains("422") && err.contains("R570") && err.contains("--ranks"), "{err}");
    // One device per rank is fine on the same driver.
    let id = old.submit(&["--profile", "1g.10gb", "--", "true"]);
    assert_eq!(old.wait(id)["state"], "succeeded", "{}", old.log());

    let new = Daemon::nvml("2xH100-80GB,numa=1", "570.86.10", quiet);
    let out = shared_dir(new.path(), "out");
    let f = out.join("env");
    let id = new.submit(&["--gpus", "2", "--", "sh", "-c", &format!("echo $CUDA_VISIBLE_DEVICES > {}", f.display())]);
    let j = new.wait(id);
    assert_eq!(j["state"], "succeeded", "{j}\n{}", new.log());
    let devs: Vec<String> = read(&f).trim().split(',').map(str::to_string).collect();
    assert_eq!(devs.len(), 2, "{devs:?}");
    assert!(devs.iter().all(|d| d.starts_with("MIG-")) && devs[0] != devs[1], "{devs:?}");
}

/// With MIG mode switching on, a MIG profile on a node with MIG off turns MIG on on an idle
/// GPU (journalled) and the job runs.
#[test]
fn mig_mode_switching_follows_demand() {
    let d = Daemon::configured("1xA100-40GB,numa=1,mig=off", "mig_mode_switching = true\n", "");
    let id = d.submit(&["--profile", "1g.5gb", "--", "true"]);
    let j = d.wait(id);
    assert_eq!(j["state"], "succeeded", "{j}\n{}", d.log());
    let gpus: Value = serde_json::from_str(&d.ok(&["-o", "json", "gpus"])).unwrap();
    assert_eq!(gpus["gpus"][0]["mig"], true, "{gpus}");
    // Off by default: the same request on a MIG-off node is refused.
    let plain = Daemon::start("1xA100-40GB,numa=1,mig=off");
    let (code, _, err) = plain.cli(&["submit", "--profile", "1g.5gb", "--", "true"]);
    assert_eq!(code, 1, "{err}");
}

/// Preemption requeues: the low-priority job gets its signal, a grace period, then SIGKILL; it
/// goes back to the queue (preempted in its history) and runs again with
/// TESSERA_RESTART_COUNT=1 after the high-priority job.
#[test]
fn a_preempted_job_is_requeued_and_runs_again() {
    let d = Daemon::configured("1xA100-40GB,numa=1", "preemption = true\n", "[jobs]\npreempt_grace_ms = 1000\n");
    let out = shared_dir(d.path(), "out");
    let (sig, count) = (out.join("sig"), out.join("count"));
    let script = format!(
        "echo $TESSERA_RESTART_COUNT >> {c}; trap 'echo usr1 >> {s}' USR1; \
         if [ $TESSERA_RESTART_COUNT = 0 ]; then for i in $(seq 600); do sleep 0.1; done; fi",
        c = count.display(),
        s = sig.display()
    );
    let low = d.submit(&["--gpus", "1", "--preempt-signal", "SIGUSR1", "--", "sh", "-c", &script]);
    d.wait_state(low, "running", 30);
    std::thread::sleep(Duration::from_millis(300));
    let high = d.submit(&["--gpus", "1", "--priority", "10", "--", "true"]);
    assert_eq!(d.wait(high)["state"], "succeeded");
    let j = d.wait(low);
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_eq!(j["runs"], 2, "{j}");
    assert_eq!(read(&count).lines().collect::<Vec<_>>(), ["0", "1"]);
    assert!(read(&sig).contains("usr1"), "the job got its preemption signal first");
    let j = d.job(low);
    let events = j["events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["from"] == "running"
            && e["to"] == "queued"
            && e["reason"].as_str().unwrap().contains("preempted by job")),
        "{j}"
    );
    // A job that may not be requeued is not preempted: the high one waits for it.
    let keep = d.submit(&["--gpus", "1", "--no-requeue", "--", "sleep", "2"]);
    d.wait_state(keep, "running", 30);
    let high = d.submit(&["--gpus", "1", "--priority", "10", "--", "true"]);
    let jk = d.wait(keep);
    assert_eq!(jk["state"], "succeeded", "{jk}");
    assert_eq!(jk["runs"], 1);
    assert_eq!(d.wait(high)["state"], "succeeded");
}

/// An MPS share serves one user at a time; its control daemon runs as that user, stops when
/// its last client ends, and a restarted daemon adopts a running one instead of starting
/// another.
#[test]
fn mps_control_daemons_are_per_user_and_adopted() {
    if !root() {
        eprintln!("skipped: needs root to run jobs as two users");
        return;
    }
    let mut d = Daemon::configured("1xA100-40GB,numa=1", "repartition = false\n", "");
    d.ok(&["admin", "layout", "0", "7g.40gb"]);
    let out = shared_dir(d.path(), "out");
    let env = out.join("env");
    let mine = d.submit(&[
        "--profile",
        "7g.40gb",
        "--mps",
        "20%",
        "--",
        "sh",
        "-c",
        &format!("env | grep CUDA_MPS > {}; sleep 3", env.display()),
    ]);
    d.wait_state(mine, "running", 30);
    let theirs = d.submit_as(NOBODY, Path::new("/tmp"), &["--profile", "7g.40gb", "--mps", "20%", "--", "true"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(d.job(theirs)["state"], "queued", "another user's MPS job does not join");
    // A restart while the control daemon serves: adopted, not started again.
    d.kill9();
    d.spawn();
    assert!(d.log().contains("adopted"), "{}", d.log());
    assert_eq!(d.wait(mine)["state"], "succeeded");
    assert_eq!(d.wait(theirs)["state"], "succeeded");
    let pipe_line = read(&env);
    assert!(
        pipe_line.contains("CUDA_MPS_PIPE_DIRECTORY=") && pipe_line.contains("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=20"),
        "{pipe_line}"
    );
    let ops: Vec<Value> =
        read(&d.state().join("mps-commands.jsonl")).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let starts: Vec<u64> = ops.iter().filter(|o| o["op"] == "start").map(|o| o["uid"].as_u64().unwrap()).collect();
    assert_eq!(starts, [0, u64::from(NOBODY)], "one start per user, none after the restart: {ops:?}");
    let quits = ops.iter().filter(|o| o["stdin"] == "quit").count();
    assert!(quits >= 1, "the first user's daemon was stopped when its clients were gone: {ops:?}");
}

/// Each job runs in its own cgroup: only its own GPU's device nodes open (made here with
/// mknod: an allowed one fails with ENXIO, a denied one with EPERM), and going past `--mem`
/// ends it `oom_killed`.
#[test]
fn jobs_are_isolated_by_cgroups() {
    if !root() || !Path::new("/sys/fs/cgroup").exists() {
        eprintln!("skipped: needs root and cgroups");
        return;
    }
    let dev = tempfile::tempdir().unwrap();
    let mknod = |name: &str, major: u32, minor: u32| {
        let p = dev.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        let ok = std::process::Command::new("mknod")
            .arg(&p)
            .args(["c", &major.to_string(), &minor.to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let _ = std::process::Command::new("chmod").args(["666"]).arg(&p).status();
    };
    for g in 0..2 {
        mknod(&format!("nvidia{g}"), 195, g);
    }
    mknod("nvidiactl", 195, 255);
    let d = Daemon::with_config(
        "2xH100-80GB,numa=1,mig=off",
        &format!("[node]\ndev_root = \"{}\"\n[jobs]\nisolation = \"required\"\n", dev.path().display()),
    );
    let out = shared_dir(d.path(), "out");
    let report = out.join("open");
    let script = format!(
        "for n in 0 1; do if python3 -c \"import os; os.open('{dev}/nvidia'+'$n', os.O_RDWR)\" 2>{o}.err$n; then echo $n:ok; else echo $n:$(tail -1 {o}.err$n | sed 's/.*Errno //;s/\\].*//'); fi; done > {o}",
        dev = dev.path().display(),
        o = report.display()
    );
    let id = d.submit(&["--gpus", "1", "--", "sh", "-c", &script]);
    let j = d.wait(id);
    assert_eq!(j["state"], "succeeded", "{j}");
    let mine = j["ranks"][0]["slices"][0]["gpu"].as_u64().unwrap();
    let seen = read(&report);
    let want = |g: u64| if g == mine { format!("{g}:6") } else { format!("{g}:1") };
    assert!(
        seen.contains(&want(0)) && seen.contains(&want(1)),
        "ENXIO (6) for its own GPU, EPERM (1) for the other: {seen}"
    );
    let id =
        d.submit(&["--gpus", "1", "--mem", "64MiB", "--", "python3", "-c", "b = bytearray(400 << 20); print(len(b))"]);
    let j = d.wait(id);
    assert_eq!(j["state"], "oom_killed", "{j}");
    assert!(j["reason"].as_str().unwrap().contains("oom-killed"), "{j}");
}

/// What every job sees, from inside: its user, groups, CPUs (from its GPU's NUMA node), memory
/// policy, devices, MPS variables and cgroup limits are what the daemon says it gave it. Each
/// line checks one piece of wiring; breaking it in the engine makes this test fail.
#[test]
fn a_job_sees_the_identity_cpus_memory_devices_and_limits_it_was_given() {
    wiring("auto");
}

/// The same without cgroups: affinity and the memory policy alone must give the job its CPUs
/// and node (a cgroup's cpuset would hide a missing binding).
#[test]
fn without_cgroups_a_job_still_sees_its_cpus_and_memory_node() {
    wiring("off");
}

fn wiring(isolation: &str) {
    let d = Daemon::with_config("2xA100-40GB,numa=2", &format!("[jobs]\nisolation = \"{isolation}\"\n"));
    let out = shared_dir(d.path(), "wiring");
    // A user of its own with a supplementary group (root), so identity and groups are real.
    let made = common::TestUser::create(&format!("tsr-{isolation}"));
    let who = match &made {
        Some(u) => u.uid,
        None if root() => NOBODY,
        None => tessera_host::effective_uid(),
    };
    let f = |n: &str| out.join(n);
    let script = format!(
        "id -u > {u}; id -g > {g}; id -G > {gs}; env > {e}; \
         grep -E '^(Cpus_allowed_list|Mems_allowed_list)' /proc/self/status > {s}; \
         head -c 200 /proc/self/numa_maps > {n}; cat /proc/self/cgroup > {c}",
        u = f("uid").display(),
        g = f("gid").display(),
        gs = f("groups").display(),
        e = f("env").display(),
        s = f("status").display(),
        n = f("numa").display(),
        c = f("cgroup").display()
    );
    let args = ["--compute-slices", "1", "--cpus", "1", "--mem", "256MiB", "--mps", "30%", "--", "sh", "-c", &script];
    let id = if root() { d.submit_as(who, Path::new("/tmp"), &args) } else { d.submit(&args) };
    let j = d.wait(id);
    assert_eq!(j["state"], "succeeded", "{j}\n{}", d.log());
    let rank = &j["ranks"][0];
    // Identity: the submitting user, with their own primary group and supplementary groups.
    let user = tessera_host::user_by_uid(who).unwrap().unwrap();
    assert_eq!(read(&f("uid")).trim(), who.to_string());
    assert_eq!(read(&f("gid")).trim(), user.gid.to_string());
    let groups: Vec<u32> = read(&f("groups")).split_whitespace().map(|g| g.parse().unwrap()).collect();
    let mut want_groups = user.groups.clone();
    want_groups.sort_unstable();
    let mut got_groups = groups.clone();
    got_groups.sort_unstable();
    assert_eq!(got_groups, want_groups);
    if let Some(u) = &made {
        let extra = tessera_host::users::user_by_name(&u.name).unwrap().unwrap().groups;
        assert!(
            extra.len() >= 2 && extra.iter().all(|g| groups.contains(g)),
            "supplementary groups {extra:?} in {groups:?}"
        );
    }
    // Devices and MPS.
    let env = read(&f("env"));
    let var = |k: &str| env.lines().find_map(|l| l.strip_prefix(&format!("{k}="))).map(str::to_string);
    assert_eq!(var("CUDA_VISIBLE_DEVICES").as_deref(), rank["devices"][0].as_str(), "{env}");
    assert!(var("CUDA_VISIBLE_DEVICES").unwrap().starts_with("MIG-"));
    let pipe = var("CUDA_MPS_PIPE_DIRECTORY").expect("an MPS client gets its pipe directory");
    assert!(pipe.contains(rank["devices"][0].as_str().unwrap()), "the pipe directory is its instance's: {pipe}");
    assert_eq!(var("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE").as_deref(), Some("30"));
    assert!(var("CUDA_MPS_LOG_DIRECTORY").is_some());
    assert_eq!(var("TESSERA_JOB_ID").as_deref(), Some(id.to_string().as_str()));
    assert_eq!(var("TESSERA_RESTART_COUNT").as_deref(), Some("0"));
    // CPUs: exactly the one the daemon says, from the GPU's NUMA node.
    let status = read(&f("status"));
    let cpus = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap().trim().to_string();
    assert_eq!(Some(cpus.as_str()), rank["cpus"].as_str(), "{status}");
    assert_eq!(tessera_host::parse_cpulist(&cpus).unwrap().len(), 1);
    let node = rank["numa_node"].as_u64().unwrap();
    let gpu = rank["slices"][0]["gpu"].as_u64().unwrap();
    assert_eq!(node, gpu, "2 GPUs on 2 NUMA nodes: GPU {gpu} is on node {gpu}");
    // Memory policy: bound to that node where the machine has it.
    let numa = read(&f("numa"));
    let nodes_here = read(Path::new("/sys/devices/system/node/online"));
    if tessera_host::parse_cpulist(&nodes_here).map(|s| s.contains(&(node as u32))).unwrap_or(false) {
        assert!(numa.contains(&format!("bind:{node}")), "memory bound to node {node}: {numa}");
    }
    // Its own cgroup, with its memory limit.
    let cgroup = read(&f("cgroup"));
    if root() && isolation != "off" {
        let mem_path = cgroup
            .lines()
            .find_map(|l| {
                l.split(':').nth(2).filter(|_| l.split(':').nth(1).is_some_and(|c| c.split(',').any(|x| x == "memory")))
            })
            .unwrap_or_else(|| panic!("{cgroup}"))
            .to_string();
        assert!(mem_path.contains(&format!("job-{id}-run-1")), "{cgroup}");
    }
    let _ = PathBuf::new();
}
