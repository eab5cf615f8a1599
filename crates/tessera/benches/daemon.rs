//! Daemon benchmarks (issue #4), run with `cargo bench -p tessera --bench daemon`: the real
//! `tessera serve` on a simulated node, driven over its Unix socket. Results go to
//! docs/benchmarks.md. Not a timed test: it prints what it measured.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tessera_daemon::client::{Client, Endpoint};
use tessera_daemon::wire::{JobQuery, JobRequest, JobState, SubmitRequest};
use tessera_sched::GpuRequest;

fn start(dir: &std::path::Path) -> Child {
    start_with(dir, "2xA100-40GB,numa=2")
}

fn start_with(dir: &std::path::Path, sim: &str) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["serve", "--sim", sim, "--sim-state"])
        .arg(dir.join("sim-node.json"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--socket")
        .arg(dir.join("s.sock"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tessera serve");
    let t = Instant::now();
    while std::os::unix::net::UnixStream::connect(dir.join("s.sock")).is_err() {
        assert!(t.elapsed() < Duration::from_secs(30), "daemon did not come up");
        std::thread::sleep(Duration::from_millis(2));
    }
    child
}

fn stop(mut c: Child) {
    let _ = Command::new("kill").arg(c.id().to_string()).status();
    let _ = c.wait();
}

fn body(profile: &str, cmd: &[&str]) -> SubmitRequest {
    let mut resources = JobRequest::new(GpuRequest::Profile { name: profile.into() });
    resources.cpus = 1;
    resources.mem_mib = 64;
    SubmitRequest {
        command: cmd.iter().map(|s| s.to_string()).collect(),
        env: [("PATH".to_string(), "/usr/bin:/bin".to_string())].into(),
        cwd: "/".into(),
        resources,
        preempt_signal: None,
    }
}

fn main() {
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return; // `cargo test --benches` / `--list`: nothing to run here.
    }
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = start(dir.path());
    let c = Client::new(Endpoint::Unix(dir.path().join("s.sock")));

    // 1. submit → running on a free slice (the first job of each slice creates it; warm them up).
    std::thread::sleep(Duration::from_millis(500));
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.id())).unwrap_or_default();
    let rss0 = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or("VmRSS: ?").to_string();
    println!("idle_rss_empty {}", rss0.trim_start_matches("VmRSS:").trim());
    let mut lat = Vec::new();
    for round in 0..60 {
        let id = c.submit(&body("1g.5gb", &["sleep", "0.05"])).unwrap().id;
        loop {
            std::thread::sleep(Duration::from_millis(20));
            let j = c.job(id).unwrap();
            // The daemon's own timestamps: accepted → marked running (shim up, job started).
            let running_at = j.events.iter().find(|e| e.to == JobState::Running).map(|e| e.at_ms);
            if let (s, Some(r)) = (j.submitted_ms, running_at) {
                if round >= 10 {
                    lat.push(r.saturating_sub(s) as f64);
                }
                break;
            }
        }
    }
    let p50 = tessera_sim::stats::percentile(&lat, 50.0);
    let p95 = tessera_sim::stats::percentile(&lat, 95.0);
    println!(
        "submit_to_running_ms p50={p50:.1} p95={p95:.1} (n={}, daemon timestamps: job accepted -> marked running with its shim up; 1 ms resolution)",
        lat.len()
    );

    // 2. Submissions per second over the Unix socket (GPUs drained so jobs stay queued).
    for g in 0..2 {
        c.drain(g, "bench").unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let n = 2000;
    let threads = 4;
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            let c = c.clone();
            s.spawn(move || {
                for _ in 0..n / threads {
                    c.submit(&body("7g.40gb", &["true"])).unwrap();
                }
            });
        }
    });
    let rate = n as f64 / t.elapsed().as_secs_f64();
    println!("submissions_per_s {rate:.0} ({n} submissions, {threads} client threads)");

    // 3. Idle RSS.
    std::thread::sleep(Duration::from_secs(2));
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.id())).unwrap_or_default();
    let rss = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or("VmRSS: ?").to_string();
    println!("idle_rss {} (with {n} queued jobs in the store)", rss.trim_start_matches("VmRSS:").trim());

    // 3b. Idle CPU: what the daemon burns with nothing to do (rounds on a timer, the health
    // watcher waiting for Xid events and probing), over 5 s.
    let cpu_ticks = |pid: u32| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
    };
    let hz = 100.0; // USER_HZ on Linux
    let (t0, c0) = (Instant::now(), cpu_ticks(daemon.id()));
    std::thread::sleep(Duration::from_secs(5));
    let used = (cpu_ticks(daemon.id()) - c0) as f64 / hz;
    println!("idle_cpu_pct {:.1} (with {n} queued jobs, over 5 s)", 100.0 * used / t0.elapsed().as_secs_f64());

    // 4. Restart and reconcile with the queued jobs: kill -9, start, until the API answers.
    let queued =
        c.jobs(&JobQuery { states: vec![JobState::Queued], all: true, ..JobQuery::default() }).unwrap().jobs.len();
    let _ = daemon.kill();
    let _ = daemon.wait();
    let t = Instant::now();
    daemon = start(dir.path());
    c.health().unwrap();
    let restart = t.elapsed().as_secs_f64() * 1000.0;
    println!("restart_and_reconcile_ms {restart:.0} ({queued} queued jobs; kill -9, start, recover, first API answer)");
    stop(daemon);

    // 5. Reads while a MIG operation runs: every GPU-instance create takes 3 s on this node,
    // and the round that makes one holds the engine. `jobs`, `job`, `gpus` and `health` are
    // timed from a client while it runs.
    let dir = tempfile::tempdir().unwrap();
    let daemon = start_with(dir.path(), "1xA100-40GB,mig-op-ms=3000");
    let c = Client::new(Endpoint::Unix(dir.path().join("s.sock")));
    let mut reads = Vec::new();
    let mut during = 0;
    // A 3g.20gb made on the empty GPU, then a 7g.40gb that needs it destroyed and a new one
    // made: three MIG operations.
    for profile in ["3g.20gb", "7g.40gb"] {
        let id = c.submit(&body(profile, &["sleep", "0.1"])).unwrap().id;
        let t = Instant::now();
        let mut k = 0u32;
        loop {
            let r = Instant::now();
            let job = match k % 4 {
                0 => {
                    c.jobs(&JobQuery { all: true, history: true, ..JobQuery::default() }).unwrap();
                    None
                }
                1 => Some(c.job(id).unwrap()),
                2 => {
                    c.gpus().unwrap();
                    None
                }
                _ => {
                    c.health().unwrap();
                    None
                }
            };
            reads.push(r.elapsed().as_secs_f64() * 1000.0);
            k += 1;
            if let Some(j) = job {
                if j.state == JobState::Queued || j.state == JobState::Placing {
                    during += 1;
                }
                if j.state.is_terminal() || t.elapsed() > Duration::from_secs(30) {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let p50 = tessera_sim::stats::percentile(&reads, 50.0);
    let p99 = tessera_sim::stats::percentile(&reads, 99.0);
    let max = reads.iter().copied().fold(0.0, f64::max);
    println!(
        "read_during_mig_op_ms p50={p50:.1} p99={p99:.1} max={max:.1} (n={}, {during} while the job waited for its \
         instance; mig-op-ms=3000; jobs, job, gpus, health in turn)",
        reads.len()
    );
    stop(daemon);
}
