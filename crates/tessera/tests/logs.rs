//! `tessera logs` end to end: the real daemon, supervisor and CLI. Both streams in the order
//! they were written, the ways to narrow and mark them, JSON lines, following a job through a
//! restart of the daemon, and what a terminal gets.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::Daemon;

/// Writes to both streams in turn, with a partial line and bytes that are not UTF-8.
const BOTH_STREAMS: &str = r#"printf 'out 1\n'; sleep 0.2; printf 'err 1\n' >&2; sleep 0.2
printf 'out partial'; sleep 0.2; printf 'err \377 2\n' >&2; sleep 0.2; printf ' rest\n'; sleep 0.2
printf 'out 3\n'; sleep 0.2; printf 'err 3\n' >&2"#;

fn tessera(d: &Daemon, args: &[&str]) -> (i32, Vec<u8>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera")).arg("--socket").arg(d.socket()).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn run_job(d: &Daemon, script: &str) -> u64 {
    let id = d.submit(&["--compute-slices", "1", "--", "sh", "-c", script]);
    d.wait(id);
    id
}

/// The text of `tessera logs ARGS…` (which must succeed).
fn logs(d: &Daemon, id: u64, args: &[&str]) -> String {
    let (code, out, err) = tessera(d, &[&["logs", &id.to_string()], args].concat());
    assert_eq!(code, 0, "logs {args:?}: {err}");
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn both_streams_come_in_the_order_written() {
    let d = Daemon::start("1xA100-40GB,numa=1");
    let id = run_job(&d, BOTH_STREAMS);
    let ids = id.to_string();
    // Not a terminal: the bytes as they are, the invalid one included.
    let (code, raw, _) = tessera(&d, &["logs", &ids]);
    assert_eq!(code, 0);
    assert_eq!(raw, b"out 1\nerr 1\nout partialerr \xff 2\n rest\nout 3\nerr 3\n");
    insta::assert_snapshot!("logs_default", logs(&d, id, &[]));
    insta::assert_snapshot!("logs_prefix", logs(&d, id, &["--prefix"]));
    insta::assert_snapshot!("logs_stderr", logs(&d, id, &["--stderr"]));
    insta::assert_snapshot!("logs_stdout_prefix", logs(&d, id, &["--stdout", "--prefix"]));
    insta::assert_snapshot!("logs_tail", logs(&d, id, &["--tail", "3", "--prefix"]));
    // A line begun before the cut (here stdout's, with a stderr line in between) comes whole.
    assert_eq!(logs(&d, id, &["--tail", "3"]), "out partial rest\nout 3\nerr 3\n");
    let json = logs(&d, id, &["-o", "json"]);
    for line in json.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let time = v["time"].as_str().unwrap_or_else(|| panic!("no time: {line}"));
        assert!(time.len() == 24 && time.ends_with('Z'), "{time}");
    }
    let json: String = json.lines().map(|l| format!("{}\n", redact_time(l))).collect();
    insta::assert_snapshot!("logs_json", json);
}

/// The line with its `"time":"…"` value replaced, keeping the fields' order.
fn redact_time(line: &str) -> String {
    let start = line.find(r#""time":""#).map(|i| i + 8).unwrap_or_else(|| panic!("no time: {line}"));
    let end = start + line[start..].find('"').unwrap();
    format!("{}TIME{}", &line[..start], &line[end..])
}

/// What a failing job said on stderr is there without asking for it.
#[test]
fn a_failing_jobs_reason_shows_by_default() {
    let d = Daemon::start("1xA100-40GB,numa=1");
    let id = run_job(&d, "echo loading data.csv; echo 'error: data.csv: No such file or directory' >&2; exit 3");
    assert_eq!(d.job(id)["state"], "failed");
    insta::assert_snapshot!("logs_failed_job", logs(&d, id, &[]));
}

/// Several ranks: `--prefix` names the rank, `--rank` picks one; a rank the job does not have
/// is refused naming it.
#[test]
fn ranks_are_marked_and_picked() {
    let d = Daemon::start("2xA100-40GB,numa=1");
    let id = d.submit(&[
        "--ranks",
        "2",
        "--compute-slices",
        "1",
        "--",
        "sh",
        "-c",
        "sleep 0.$((RANK * 5)); echo rank $RANK; echo oops $RANK >&2",
    ]);
    assert_eq!(d.wait(id)["state"], "succeeded");
    insta::assert_snapshot!("logs_ranks_prefix", logs(&d, id, &["--prefix"]));
    insta::assert_snapshot!("logs_rank_1_prefix", logs(&d, id, &["--rank", "1", "--prefix"]));
    let (code, _, err) = tessera(&d, &["logs", &id.to_string(), "--rank", "2"]);
    assert_eq!(code, 1);
    insta::assert_snapshot!("logs_no_such_rank", err.replace(&format!("job {id} "), "job ID "));
}

/// `-f` prints as the job writes and ends with the job, through a restart of the daemon.
#[test]
fn follow_goes_on_through_a_daemon_restart() {
    let mut d = Daemon::start("1xA100-40GB,numa=1");
    let script = "for i in 1 2 3 4 5 6 7 8; do echo line $i; echo warn $i >&2; sleep 0.4; done";
    let id = d.submit(&["--compute-slices", "1", "--", "sh", "-c", script]);
    d.wait_state(id, "running", 20);
    let follower = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg("--socket")
        .arg(d.socket())
        .args(["logs", &id.to_string(), "-f", "--prefix"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(900));
    d.kill9();
    std::thread::sleep(Duration::from_millis(1200));
    d.spawn();
    let out = follower.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let want: String = (1..=8).map(|i| format!("out| line {i}\nerr| warn {i}\n")).collect();
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("still following job"), "{err}");
    assert_eq!(d.job(id)["state"], "succeeded");
    // A daemon that never answered is an error at once, not a wait.
    let nowhere = d.dir.path().join("no-daemon.sock");
    let out = Command::new("timeout")
        .arg("20")
        .arg(env!("CARGO_BIN_EXE_tessera"))
        .arg("--socket")
        .arg(&nowhere)
        .args(["logs", &id.to_string(), "-f"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the daemon"), "{out:?}");
}

/// To a terminal a job's control characters are written out (`--raw` keeps them), so its
/// output cannot retitle or clear the terminal of whoever reads it.
#[test]
fn a_terminal_gets_escaped_text() {
    let d = Daemon::start("1xA100-40GB,numa=1");
    let id = run_job(&d, r#"printf 'title\033]0;owned\007 clear\033[2J\n'; printf 'bad \377\n' >&2"#);
    let on_tty = |extra: &str| {
        let cmd = format!("{} --socket {} logs {id} {extra}", env!("CARGO_BIN_EXE_tessera"), d.socket().display());
        let out = Command::new("script").args(["-qec", &cmd, "/dev/null"]).stdin(Stdio::null()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    let escaped = String::from_utf8_lossy(&on_tty("")).replace("\r\n", "\n");
    assert_eq!(escaped, "title\\x1b]0;owned\\x07 clear\\x1b[2J\nbad \\xff\n");
    let raw = on_tty("--raw");
    assert!(raw.windows(4).any(|w| w == b"\x1b[2J"), "{raw:?}");
}
