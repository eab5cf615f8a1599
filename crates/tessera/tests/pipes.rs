//! Output with nowhere to go: every client command whose reader goes away (`tessera … | head
//! -1`) ends quietly, as `ls | head` ends `ls` — killed by `SIGPIPE`, no panic, no backtrace —
//! and one whose output cannot be written (a full disk, a terminal gone away) exits 1 with one
//! line, never a panic. `serve` and the job supervisor keep `SIGPIPE` ignored.

mod common;

use std::io::{BufRead as _, BufReader};
use std::os::unix::process::ExitStatusExt as _;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::Daemon;

/// `SIGPIPE`'s number.
const SIGPIPE: i32 = 13;

/// What a run left: how it ended and its stderr.
struct Ended {
    status: ExitStatus,
    stderr: String,
}

impl Ended {
    /// No panic, no backtrace, no "Broken pipe" error.
    fn assert_quiet(&self, what: &str) {
        for bad in ["panicked", "RUST_BACKTRACE", "Broken pipe", "failed printing"] {
            assert!(!self.stderr.contains(bad), "{what}: stderr has {bad:?}:\n{}", self.stderr);
        }
    }
}

fn wait_with_deadline(mut child: std::process::Child, what: &str) -> Ended {
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("{what}: still running 30 s after its reader went away");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read as _;
        let _ = e.read_to_string(&mut stderr);
    }
    Ended { status, stderr }
}

/// `cmd` with its stdout a pipe whose reader is already gone: its first write fails.
fn into_closed_pipe(mut cmd: Command, what: &str) -> Ended {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let child = cmd.stdout(writer).stderr(Stdio::piped()).spawn().unwrap();
    drop(cmd);
    wait_with_deadline(child, what)
}

/// `cmd | head -1`: its stdout read up to the first line, then closed.
fn into_head_1(mut cmd: Command, what: &str) -> Ended {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(!first.is_empty(), "{what}: no first line");
    drop(out);
    wait_with_deadline(child, what)
}

fn tessera(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tessera"));
    c.args(args).env_remove("TESSERA_SIM").env_remove("TESSERA_TCP");
    c
}

/// Whether `pid` ignores `SIGPIPE` (`SigIgn` of `/proc/PID/status`, bit 13).
fn ignores_sigpipe(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let mask = status.lines().find_map(|l| l.strip_prefix("SigIgn:")).unwrap().trim();
    u64::from_str_radix(mask, 16).unwrap() & (1 << (SIGPIPE - 1)) != 0
}

#[test]
fn a_closed_pipe_ends_every_client_command_quietly() {
    let d = Daemon::start("2xA100-40GB,numa=1");
    let socket = d.socket();
    let socket = socket.to_str().unwrap();
    let state = d.sim_state();
    let state = state.to_str().unwrap();
    // A job that keeps writing, for `logs -f`, and one that is over, for `job`.
    let talker =
        d.submit(&["--", "sh", "-c", "i=0; while [ $i -lt 600 ]; do echo line $i; i=$((i+1)); sleep 0.05; done"]);
    let done = d.submit(&["--", "sh", "-c", "echo done"]);
    d.wait(done);
    d.wait_state(talker, "running", 30);
    // Output appears in the talker's log before `logs -f` is asked for it.
    std::thread::sleep(Duration::from_millis(500));
    let (talker, done) = (talker.to_string(), done.to_string());
    let mig = |args: &[&str]| {
        let mut c = tessera(&["--backend", "sim", "--sim-state", state]);
        c.args(args);
        c
    };
    let client = |args: &[&str]| {
        let mut c = tessera(&["--socket", socket]);
        c.args(args);
        c
    };
    let commands: Vec<(String, Box<dyn Fn() -> Command>)> = vec![
        ("mig gpus".into(), Box::new(move || mig(&["mig", "gpus"]))),
        ("mig plan".into(), Box::new(move || mig(&["mig", "plan", "--gpu", "H100-80GB", "3g.40gb", "2g.20gb"]))),
        ("mig profiles".into(), Box::new(move || mig(&["mig", "profiles", "--gpu", "A100-40GB"]))),
        ("mig health".into(), Box::new(move || mig(&["mig", "health"]))),
        ("mig export".into(), Box::new(move || mig(&["mig", "export"]))),
        (
            "job".into(),
            Box::new({
                let done = done.clone();
                move || client(&["job", &done])
            }),
        ),
        ("jobs".into(), Box::new(move || client(&["jobs", "--all"]))),
        ("gpus".into(), Box::new(move || client(&["gpus"]))),
        (
            "logs -f".into(),
            Box::new({
                let talker = talker.clone();
                move || client(&["logs", "-f", &talker])
            }),
        ),
        ("--help".into(), Box::new(|| tessera(&["--help"]))),
    ];
    for (what, cmd) in &commands {
        // Every write fails: the command ends at its first one, by SIGPIPE, as `ls` would.
        let e = into_closed_pipe(cmd(), what);
        e.assert_quiet(what);
        assert_eq!(e.status.signal(), Some(SIGPIPE), "{what}: ended {:?}, not by SIGPIPE:\n{}", e.status, e.stderr);
        // `| head -1`: killed by SIGPIPE, or done before the reader left.
        let e = into_head_1(cmd(), what);
        e.assert_quiet(what);
        assert!(
            e.status.signal() == Some(SIGPIPE) || e.status.success(),
            "{what} | head -1 ended {:?}:\n{}",
            e.status,
            e.stderr
        );
    }
    // `logs -f` on a job that keeps writing cannot have finished: only SIGPIPE ends it.
    let e = into_head_1(client(&["logs", "-f", &talker]), "logs -f");
    assert_eq!(e.status.signal(), Some(SIGPIPE), "logs -f | head -1 ended {:?}:\n{}", e.status, e.stderr);

    // The daemon and the supervisors keep SIGPIPE ignored: a peer closing a socket or pipe
    // must not kill them.
    let daemon = d.pid().unwrap();
    assert!(ignores_sigpipe(daemon), "tessera serve does not ignore SIGPIPE");
    let shims = common::children_with(daemon, &["shim"]);
    assert!(!shims.is_empty(), "no supervisor under the daemon");
    for shim in shims {
        assert!(ignores_sigpipe(shim), "the supervisor {shim} does not ignore SIGPIPE");
    }
    let _ = d.cli(&["cancel", &talker]);
}

#[test]
fn output_that_cannot_be_written_is_one_line_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("sim-node.json");
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let out = tessera(&["--sim-state", state.to_str().unwrap(), "mig", "gpus"])
        .stdout(full)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"), "{stderr}");
    assert_eq!(stderr.trim(), "tessera: cannot write the output: No space left on device (os error 28)");
}
