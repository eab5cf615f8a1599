//! Security, end to end, as a second local user really observes it (issue 16, item 5): the
//! real daemon as root, two users made for the test, and every check made by acting as that
//! user (the CLI, the API on the socket through `curl`, opening files through `setpriv`), never
//! by reading mode bits alone. Each of the findings of the security review has its test here:
//! job files readable by other users, idle connections exhausting descriptors, job output
//! filling the state file system, priorities letting one user preempt another, and terminal
//! escapes in command lines reaching an admin's terminal.
//!
//! Without root (no users to make) every test says it is skipped and passes.

mod common;

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{Daemon, TestUser, read};
use serde_json::Value;

/// Two users of their own (both with the primary group `nogroup`, as `TestUser` makes them,
/// so a group-readable file of one would be readable by the other), or `None` when not root.
/// As root, making them must work (`useradd` may meet another's lock on `/etc/passwd`: a few
/// tries), so a test never passes by skipping where it could run.
fn two_users(tag: &str) -> Option<(TestUser, TestUser)> {
    if !common::root() {
        return None;
    }
    let make = |name: String| {
        (0..20)
            .find_map(|_| {
                TestUser::create(&name).or_else(|| {
                    std::thread::sleep(Duration::from_millis(250));
                    None
                })
            })
            .unwrap_or_else(|| panic!("cannot make the test user {name} (useradd)"))
    };
    Some((make(format!("tss-{tag}-a")), make(format!("tss-{tag}-b"))))
}

fn skipped(what: &str) {
    eprintln!("SKIPPED {what}: needs root to make test users and switch to them");
}

/// `prog args` as `user`, with their real primary group and supplementary groups, in `/tmp`.
fn as_user(user: &TestUser, prog: &str, args: &[&str]) -> Output {
    let gid = tessera_host::user_by_uid(user.uid).unwrap().unwrap().gid;
    Command::new("setpriv")
        .arg(format!("--reuid={}", user.uid))
        .arg(format!("--regid={gid}"))
        .arg("--init-groups")
        .arg(prog)
        .args(args)
        .current_dir("/tmp")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// An API request on the daemon's socket as `user` (through `curl`): status and JSON body.
fn api_as(d: &Daemon, user: &TestUser, method: &str, path: &str) -> (u16, Value) {
    let url = format!("http://localhost{path}");
    let socket = d.socket();
    let o = as_user(
        user,
        "curl",
        &["-s", "-X", method, "-w", "\n%{http_code}", "--unix-socket", socket.to_str().unwrap(), &url],
    );
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    (code.trim().parse().unwrap_or(0), serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Every path under `root` (itself included), as root sees them.
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if out[i].is_dir() {
            let mut more: Vec<PathBuf> = std::fs::read_dir(&out[i]).unwrap().flatten().map(|e| e.path()).collect();
            more.sort();
            out.extend(more);
        }
        i += 1;
    }
    out
}

/// Whether `user` can open `path` (read a file, list a directory) by really trying.
fn can_open(user: &TestUser, path: &Path) -> bool {
    let p = path.to_str().unwrap();
    if path.is_dir() { as_user(user, "ls", &[p]).status.success() } else { as_user(user, "cat", &[p]).status.success() }
}

/// Finding 1 (and check 1): a second user cannot see, cancel, wait on or read the logs of
/// another's job, through the CLI or the API, nor open any of its files on disk.
#[test]
fn a_second_user_cannot_reach_another_users_job() {
    let Some((a, b)) = two_users("iso") else { return skipped("cross-user isolation") };
    let d = Daemon::start("1xA100-40GB,numa=1");
    let tmp = Path::new("/tmp");
    let secret = "hunter2-tss-secret";
    let id = d.submit_as(
        a.uid,
        tmp,
        &[
            "--compute-slices",
            "1",
            "--env",
            &format!("SECRET={secret}"),
            "--",
            "sh",
            "-c",
            "echo out-$SECRET; sleep 60",
        ],
    );
    d.wait_state(id, "running", 30);
    // A's output is there for A.
    let t0 = Instant::now();
    while !d.ok_as(a.uid, tmp, &["logs", &id.to_string()]).contains(secret) {
        assert!(t0.elapsed() < Duration::from_secs(20), "A never saw their own output");
        std::thread::sleep(Duration::from_millis(100));
    }
    let sid = id.to_string();

    // The CLI as B.
    for args in [
        vec!["job", sid.as_str()],
        vec!["cancel", sid.as_str()],
        vec!["wait", sid.as_str(), "--timeout", "1s"],
        vec!["logs", sid.as_str()],
    ] {
        let (code, out, err) = d.cli_as(b.uid, tmp, &args);
        assert_ne!(code, 0, "tessera {args:?} as B succeeded:\n{out}{err}");
        assert!(err.contains("belongs to another user"), "tessera {args:?} as B: {err}");
        assert!(!out.contains(secret) && !err.contains(secret), "{out}{err}");
    }
    for args in [
        vec!["jobs", "--all-users"],
        vec!["jobs", "--user", a.name.as_str()],
        vec!["cancel", "--user", a.name.as_str()],
    ] {
        let (code, out, err) = d.cli_as(b.uid, tmp, &args);
        assert_ne!(code, 0, "tessera {args:?} as B succeeded:\n{out}{err}");
        assert!(err.contains("only admins"), "tessera {args:?} as B: {err}");
    }
    let (_, mine, _) = d.cli_as(b.uid, tmp, &["-o", "json", "jobs", "-a"]);
    let mine: Value = serde_json::from_str(&mine).unwrap_or(Value::Null);
    assert!(!mine.to_string().contains(&format!("\"id\":{id},")), "B's listing shows A's job: {mine}");
    for args in [vec!["-o", "json", "gpus"], vec!["-o", "json", "admin", "health", "show"]] {
        let (_, out, err) = d.cli_as(b.uid, tmp, &args);
        assert!(!out.contains(secret) && !out.contains("SECRET"), "tessera {args:?} as B shows A's secret: {out}{err}");
    }

    // The API as B.
    for (method, path) in [
        ("GET", format!("/v1/jobs/{id}")),
        ("POST", format!("/v1/jobs/{id}/cancel")),
        ("GET", format!("/v1/jobs/{id}/wait?timeout_ms=100")),
        ("GET", format!("/v1/jobs/{id}/logs")),
        ("GET", "/v1/jobs?all=true".to_string()),
        ("GET", format!("/v1/jobs?user={}", a.name)),
    ] {
        let (status, v) = api_as(&d, &b, method, &path);
        assert_eq!(status, 403, "{method} {path} as B: {v}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        assert!(!v.to_string().contains(secret), "{v}");
    }
    let (status, events) = api_as(&d, &b, "GET", "/v1/events");
    assert_eq!(status, 200, "{events}");
    assert!(!events.to_string().contains(&a.name) && !events.to_string().contains(secret), "{events}");

    // The files on disk: the job's directory, spec (command, environment), output; the state
    // directory and database. B opens none of them; the paths prove the test looked.
    let mut paths = walk(&d.state().join(format!("jobs/{id}")));
    paths.extend(walk(&d.state().join(format!("output/{id}"))));
    paths.extend([d.state(), d.state().join("tessera.db"), d.state().join("jobs"), d.state().join("output")]);
    assert!(paths.iter().any(|p| p.ends_with("spec.json") && read(p).contains(secret)), "{paths:?}");
    assert!(paths.iter().any(|p| p.ends_with("stdout.log")), "{paths:?}");
    for p in &paths {
        assert!(!can_open(&b, p), "B opened {} (mode {:o})", p.display(), p.metadata().unwrap().mode());
    }
    // Even were the state directory opened to all (an operator's chmod), the job's own
    // directories and files stay closed to B.
    std::fs::set_permissions(d.state(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let opened: Vec<String> = paths[..paths.len() - 4]
        .iter()
        .filter(|p| p.is_file() || p.ends_with(id.to_string()))
        .filter(|p| can_open(&b, p))
        .map(|p| format!("{} ({:o})", p.display(), p.metadata().unwrap().mode()))
        .collect();
    std::fs::set_permissions(d.state(), std::fs::Permissions::from_mode(0o700)).unwrap();
    assert!(opened.is_empty(), "with the state directory world-readable, B opened: {opened:?}");

    // Nothing B did touched A's job.
    let j = d.job(id);
    assert_eq!(j["state"], "running", "{j}");
    assert_eq!(j["runs"], 1, "{j}");
    d.ok_as(a.uid, tmp, &["cancel", &sid]);
}

/// Check 2: a non-admin cannot change layouts, drain or undrain, or clear health; health
/// itself carries no user's data (it is public by design: GPU and instance health, Xids,
/// drains).
#[test]
fn a_non_admin_cannot_change_the_node() {
    let Some((_a, b)) = two_users("adm") else { return skipped("admin actions") };
    let d = Daemon::start("1xA100-40GB,numa=1");
    let tmp = Path::new("/tmp");
    for (args, words) in [
        (vec!["admin", "drain", "0", "--reason", "mine"], "only admins drain GPUs"),
        (vec!["admin", "undrain", "0"], "only admins drain GPUs"),
        (vec!["admin", "layout", "0", "3g.20gb"], "only admins change MIG layouts"),
        (vec!["admin", "health", "clear", "0"], "only admins clear GPU health"),
    ] {
        let (code, out, err) = d.cli_as(b.uid, tmp, &args);
        assert_ne!(code, 0, "tessera {args:?} as B succeeded:\n{out}{err}");
        assert!(err.contains(words), "tessera {args:?} as B: {err}");
    }
    for path in ["/v1/gpus/0/drain", "/v1/gpus/0/undrain", "/v1/gpus/0/health/clear"] {
        let (status, v) = api_as(&d, &b, "POST", path);
        assert_eq!(status, 403, "POST {path} as B: {v}");
    }
    // Root drains; B cannot undo it, and the layout is as it was.
    let before = d.ok(&["-o", "json", "gpus"]);
    d.ok(&["admin", "drain", "0", "--reason", "maintenance"]);
    let (code, _, _) = d.cli_as(b.uid, tmp, &["admin", "undrain", "0"]);
    assert_ne!(code, 0);
    let health: Value = serde_json::from_str(&d.ok(&["-o", "json", "admin", "health", "show"])).unwrap();
    assert!(health.to_string().contains("maintenance"), "still drained: {health}");
    d.ok(&["admin", "undrain", "0"]);
    let gpus = |s: &str| {
        let v: Value = serde_json::from_str(s).unwrap();
        v["gpus"].as_array().map(|g| g.iter().map(|g| g["instances"].clone()).collect::<Vec<_>>())
    };
    assert_eq!(gpus(&before), gpus(&d.ok(&["-o", "json", "gpus"])), "the layout changed");
}

/// Check 3: a job runs as its submitter (uid, primary group, supplementary groups), never
/// root, and in its own cgroup where the machine has cgroups.
#[test]
fn a_job_runs_as_its_submitter_in_its_cgroup() {
    let Some((a, _b)) = two_users("id") else { return skipped("job identity") };
    let d = Daemon::start("1xA100-40GB,numa=1");
    let tmp = Path::new("/tmp");
    let id = d.submit_as(
        a.uid,
        tmp,
        &["--compute-slices", "1", "--", "sh", "-c", "echo uid=$(id -u) gid=$(id -g) groups=$(id -G | tr ' ' ,); cat /proc/self/cgroup; grep -E '^(Uid|Gid|Groups):' /proc/self/status"],
    );
    let j = d.wait(id);
    assert_eq!(j["state"], "succeeded", "{j}\n{}", d.log());
    let out = d.ok_as(a.uid, tmp, &["logs", &id.to_string()]);
    let user = tessera_host::user_by_uid(a.uid).unwrap().unwrap();
    let mut groups = user.groups.clone();
    groups.sort_unstable();
    let want_groups = groups.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let line = out.lines().find(|l| l.starts_with("uid=")).unwrap_or_else(|| panic!("{out}"));
    let mut got: Vec<&str> = line.split_whitespace().collect();
    let got_groups = got.pop().unwrap().trim_start_matches("groups=");
    let mut got_groups: Vec<u32> = got_groups.split(',').map(|g| g.parse().unwrap()).collect();
    got_groups.sort_unstable();
    assert_eq!(got, [format!("uid={}", a.uid), format!("gid={}", user.gid)], "{out}");
    assert_eq!(got_groups.iter().map(u32::to_string).collect::<Vec<_>>().join(","), want_groups, "{out}");
    let extra = tessera_host::user_by_name(&a.name).unwrap().unwrap().groups;
    assert!(extra.iter().all(|g| got_groups.contains(g)), "supplementary groups {extra:?}: {out}");
    // Real, effective, saved and file-system ids: all the user's, none root's.
    for l in out.lines().filter(|l| l.starts_with("Uid:") || l.starts_with("Gid:") || l.starts_with("Groups:")) {
        assert!(!l.split_whitespace().skip(1).any(|x| x == "0"), "root in the job: {l}\n{out}");
    }
    let health: Value = serde_json::from_str(&d.ok(&["-o", "json", "admin", "health", "show"])).unwrap();
    let isolation = health["isolation"].as_str().unwrap_or_default().to_string();
    if isolation.contains("cgroup") {
        assert!(out.contains(&format!("job-{id}-run-1")), "not in its own cgroup ({isolation}): {out}");
    } else {
        eprintln!("no cgroups here ({isolation}): the cgroup part is not checked");
    }
}

/// Check 4: the TCP listener refuses a missing, wrong, empty or malformed token with 401 and
/// a message, and accepts the right one as its user.
#[test]
fn tcp_refuses_missing_wrong_and_empty_tokens() {
    if !common::root() {
        return skipped("TCP tokens (the token user must exist)");
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    let token = "s3cret-s3cret-s3cret-0123456789";
    std::fs::write(&tokens, format!("nobody {token}\n")).unwrap();
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600)).unwrap();
    let _d = Daemon::with_config(
        "1xA100-40GB,numa=1",
        &format!("[server]\ntcp = \"127.0.0.1:{port}\"\ntoken_file = \"{}\"\n", tokens.display()),
    );
    let request = |auth: Option<&str>| -> (u16, Value) {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let auth = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
        let _ = s.write_all(format!("GET /v1/jobs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\r\n").as_bytes());
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let out = String::from_utf8_lossy(&out).into_owned();
        let status = out.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, serde_json::from_str(out.split("\r\n\r\n").nth(1).unwrap_or("")).unwrap_or(Value::Null))
    };
    let wrong_same_length = "x".repeat(token.len());
    let cases = [
        None,
        Some(String::new()),
        Some("Bearer".to_string()),
        Some("Bearer ".to_string()),
        Some(format!("Bearer {wrong_same_length}")),
        Some("Bearer short".to_string()),
        Some(format!("Bearer {token}x")),
        Some(format!("Bearer {}", &token[..token.len() - 1])),
        Some(format!("Basic {token}")),
        Some(token.to_string()),
    ];
    for auth in &cases {
        let (status, v) = request(auth.as_deref());
        assert_eq!(status, 401, "Authorization {auth:?}: {v}");
        let m = v["error"]["message"].as_str().unwrap_or_default();
        assert!(!m.is_empty() && !m.contains(token), "Authorization {auth:?}: {v}");
    }
    let (status, v) = request(Some(&format!("Bearer {token}")));
    assert_eq!(status, 200, "{v}");
    // The CLI with a wrong token says so.
    let o = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["--tcp", &format!("127.0.0.1:{port}"), "jobs"])
        .env("TESSERA_TOKEN", &wrong_same_length)
        .output()
        .unwrap();
    assert!(!o.status.success() && text(&o).contains("401"), "{}", text(&o));
}

/// Check 4's timing half, as a benchmark (run it by hand with `--ignored`): the medians of
/// many requests with a wrong token of the right length and of a wrong length. Over loopback
/// HTTP one request takes tens of microseconds with jitter of the same order, while comparing
/// a 64-byte token takes tens of nanoseconds: a leak in the comparison is three orders of
/// magnitude under the noise, so as a test this could only be flaky or vacuous. The property
/// is held by the code instead (`constant_time_eq` in tessera-daemon's config.rs compares
/// every byte of every configured token whatever is given).
#[test]
#[ignore = "benchmark, not a test: a token comparison's time is far below loopback HTTP's noise"]
fn tcp_token_timing_benchmark() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    let user = tessera_host::user_by_uid(tessera_host::effective_uid()).unwrap().unwrap().name;
    let token = "t".repeat(64);
    std::fs::write(&tokens, format!("{user} {token}\n")).unwrap();
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600)).unwrap();
    let _d = Daemon::with_config(
        "1xA100-40GB,numa=1",
        &format!("[server]\ntcp = \"127.0.0.1:{port}\"\ntoken_file = \"{}\"\n", tokens.display()),
    );
    let time = |auth: &str| {
        use std::io::{Read as _, Write as _};
        let t0 = Instant::now();
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _ = s.write_all(
            format!("GET /v1/jobs HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {auth}\r\n\r\n")
                .as_bytes(),
        );
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        t0.elapsed()
    };
    let same = format!("{}u", "t".repeat(63));
    let shorter = "u".to_string();
    let mut a = Vec::new();
    let mut b = Vec::new();
    for _ in 0..2000 {
        a.push(time(&same));
        b.push(time(&shorter));
    }
    a.sort();
    b.sort();
    let (ma, mb) = (a[a.len() / 2], b[b.len() / 2]);
    eprintln!("median: wrong token of the right length {ma:?}, of a wrong length {mb:?}");
    let ratio = ma.as_secs_f64() / mb.as_secs_f64();
    assert!((0.5..2.0).contains(&ratio), "medians differ by {ratio:.2}x");
}

/// Check 5: owners and modes as docs/operations.md says (state 0700 root, database 0600,
/// socket 0666 for every caller, job directories 0700, specs 0600, a job's output its user's).
#[test]
fn state_files_have_safe_owners_and_modes() {
    let Some((a, _b)) = two_users("mod") else { return skipped("owners and modes") };
    let d = Daemon::start("1xA100-40GB,numa=1");
    let id = d.submit_as(a.uid, Path::new("/tmp"), &["--compute-slices", "1", "--", "echo", "hi"]);
    assert_eq!(d.wait(id)["state"], "succeeded");
    let meta = |p: &Path| std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let check = |p: PathBuf, mode: u32, uid: u32| {
        let m = meta(&p);
        assert_eq!((m.mode() & 0o7777, m.uid()), (mode, uid), "{}: mode {:o} owner {}", p.display(), m.mode(), m.uid());
    };
    check(d.state(), 0o700, 0);
    check(d.state().join("tessera.db"), 0o600, 0);
    check(d.state().join(format!("jobs/{id}")), 0o700, 0);
    check(d.state().join(format!("jobs/{id}/run-1/spec.json")), 0o600, 0);
    let sock = meta(&d.socket());
    assert_eq!((sock.mode() & 0o777, sock.uid()), (0o666, 0), "the socket");
    // No file under the state directory is writable by anyone but its owner, none is setuid.
    for p in walk(&d.state()) {
        let m = std::fs::symlink_metadata(&p).unwrap();
        assert_eq!(m.mode() & 0o6022, 0, "{}: mode {:o}", p.display(), m.mode());
    }
    // A job's output is its user's alone: not its group's (users often share a primary group,
    // and `jobs.output_dir` may be outside the private state directory), and its directory
    // cannot be listed by others.
    let out = d.state().join(format!("output/{id}"));
    assert_eq!(meta(&out).mode() & 0o066, 0, "output/{id}: mode {:o}", meta(&out).mode());
    for name in ["stdout.log", "stderr.log"] {
        check(out.join(name), 0o600, a.uid);
    }
}

/// Check 5's second half: a request cannot make the daemon read or write outside its state
/// directory: job ids with paths in them, log parameters, working directories, and a job's
/// environment (`LD_PRELOAD` reaches only the job's own processes, which run as its user).
#[test]
fn requests_cannot_reach_outside_the_state_directory() {
    let Some((a, b)) = two_users("path") else { return skipped("paths") };
    let d = Daemon::start("1xA100-40GB,numa=1");
    let tmp = Path::new("/tmp");
    let id = d.submit_as(a.uid, tmp, &["--compute-slices", "1", "--", "echo", "hi"]);
    assert_eq!(d.wait(id)["state"], "succeeded");
    for path in [
        "/v1/jobs/..%2F..%2F..%2Fetc%2Fpasswd".to_string(),
        "/v1/jobs/../../../etc/passwd".to_string(),
        "/v1/jobs/%2e%2e/logs".to_string(),
        format!("/v1/jobs/{id}%2F..%2F..%2F..%2Fetc%2Fpasswd/logs"),
        format!("/v1/jobs/{id}/logs?stream=..%2F..%2F..%2Fetc%2Fpasswd"),
        format!("/v1/jobs/{id}/logs?stream=..%2Fstdout"),
        format!("/v1/jobs/{id}/logs?rank=-1"),
        format!("/v1/jobs/{id}/logs?rank=4294967295"),
        format!("/v1/jobs/{id}/logs?from=..%2F..%2Fetc%2Fshadow"),
        format!("/v1/jobs/{id}/logs?file=%2Fetc%2Fshadow"),
        format!("/v1/jobs/{id}/logs?path=%2Fetc%2Fshadow"),
        "/v1/jobs/-1".to_string(),
        "/v1/jobs/18446744073709551616".to_string(),
    ] {
        let (status, v) = d.raw(&format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
        assert!((400..500).contains(&status), "GET {path}: {status} {v}");
        assert!(!v.to_string().contains("root:"), "GET {path}: {v}");
    }
    // Working directories B cannot enter (the state directory, a job's directory, root's home):
    // refused at submit; nothing runs in them.
    let marks = common::shared_dir(d.path(), "marks");
    for cwd in [d.state(), PathBuf::from("/root"), d.state().join(format!("jobs/{id}"))] {
        let mark = marks.join("ran-in");
        let body = format!(
            r#"{{"command":["sh","-c","pwd > {m}; ls > {m}.ls"],"cwd":"{c}","env":{{"PATH":"/usr/bin:/bin"}},"resources":{{"gpu":{{"compute_slices":{{"slices":1}}}}}}}}"#,
            m = mark.display(),
            c = cwd.display()
        );
        let out = as_user(
            &b,
            "curl",
            &[
                "-s",
                "-w",
                "\n%{http_code}",
                "--unix-socket",
                d.socket().to_str().unwrap(),
                "-H",
                "Content-Type: application/json",
                "-d",
                &body,
                "http://localhost/v1/jobs",
            ],
        );
        let out = String::from_utf8_lossy(&out.stdout).into_owned();
        // Refused at submit, checked as B (the daemon itself, root, could enter them).
        let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
        assert_eq!(code.trim(), "400", "cwd {} as B: {out}", cwd.display());
        assert!(body.contains("cwd: ") && body.contains("not searchable by uid"), "{body}");
        assert!(read(&mark).is_empty() && read(&mark.with_extension("ls")).is_empty(), "ran in {}", cwd.display());
    }
    // LD_PRELOAD and friends: only the job's processes carry them, and they are B's.
    let id = d.submit_as(
        b.uid,
        tmp,
        &[
            "--compute-slices",
            "1",
            "--env",
            "LD_PRELOAD=/nonexistent/tss-evil.so",
            "--env",
            "LD_LIBRARY_PATH=/nonexistent/tss-evil",
            "--",
            "sleep",
            "30",
        ],
    );
    d.wait_state(id, "running", 30);
    std::thread::sleep(Duration::from_millis(300));
    let mut carriers = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if env.windows(b"tss-evil".len()).any(|w| w == b"tss-evil") {
            let status = read(Path::new(&format!("/proc/{pid}/status")));
            let uids = status.lines().find(|l| l.starts_with("Uid:")).unwrap_or_default().to_string();
            carriers.push((pid, uids));
        }
    }
    assert!(!carriers.is_empty(), "the job's process carries its environment");
    for (pid, uids) in &carriers {
        assert!(
            uids.split_whitespace().skip(1).all(|u| u == b.uid.to_string()),
            "process {pid} has the job's LD_PRELOAD but is not B's: {uids}"
        );
    }
    d.ok_as(b.uid, tmp, &["cancel", &id.to_string()]);
    assert!(!d.log().contains("tss-evil"), "the daemon loaded or logged the job's LD_PRELOAD:\n{}", d.log());
}

/// Finding 2: idle connections cannot exhaust the daemon's descriptors: one peer holds at
/// most `max_connections_per_peer`, the next is refused with 503 while other users are still
/// served, and idle ones are closed after the header timeout.
#[test]
fn idle_connections_cannot_exhaust_the_daemon() {
    let Some((a, _b)) = two_users("idle") else { return skipped("idle connections") };
    let d = Daemon::with_config(
        "1xA100-40GB,numa=1",
        "[server.limits]\nmax_connections_per_peer = 8\nheader_timeout_ms = 3000\nidle_timeout_ms = 3000\n",
    );
    use std::io::Read as _;
    use std::os::unix::net::UnixStream;
    // Root, as the idle peer: eight idle connections, then a ninth. (First the harness's own
    // probe connection, made while the daemon came up, must have been seen closed: it holds a
    // slot until then.)
    std::thread::sleep(Duration::from_millis(500));
    let opened = Instant::now();
    let idle: Vec<UnixStream> = (0..8).map(|_| UnixStream::connect(d.socket()).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let (status, v) = d.raw("GET /v1/jobs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let closed = idle
        .iter()
        .filter(|s| {
            s.set_nonblocking(true).unwrap();
            let r = (&**s).read(&mut [0u8; 1]);
            s.set_nonblocking(false).unwrap();
            !matches!(r, Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock)
        })
        .count();
    assert_eq!(
        status,
        503,
        "the ninth connection of one peer, {:?} after the first ({closed} of the idle ones already closed): {v}\n{}",
        opened.elapsed(),
        d.log()
    );
    assert!(v["error"]["message"].is_string(), "{v}");
    // Another user is served meanwhile.
    d.ok_as(a.uid, Path::new("/tmp"), &["jobs"]);
    // The idle ones are closed by the daemon (408 or plain EOF) after the header timeout.
    let t0 = Instant::now();
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = Vec::new();
        let r = s.read_to_end(&mut buf);
        assert!(r.is_ok(), "an idle connection was not closed: {r:?}");
    }
    assert!(t0.elapsed() < Duration::from_secs(9), "idle connections lived {:?}", t0.elapsed());
    let (status, v) = d.raw("GET /v1/jobs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 200, "after the idle ones closed: {v}");
}

/// Finding 3: job output cannot fill the state file system: beyond `jobs.output_limit_mib`
/// it is dropped, the job runs on and the daemon records its end.
#[test]
fn job_output_is_bounded() {
    let Some((a, _b)) = two_users("out") else { return skipped("output limit") };
    let d = Daemon::with_config("1xA100-40GB,numa=1", "[jobs]\noutput_limit_mib = 1\n");
    let tmp = Path::new("/tmp");
    let id = d.submit_as(
        a.uid,
        tmp,
        &[
            "--compute-slices",
            "1",
            "--",
            "sh",
            "-c",
            "head -c 6000000 /dev/zero | tr '\\0' x; head -c 3000000 /dev/zero >&2; echo done-after >&2",
        ],
    );
    let j = d.wait(id);
    assert_eq!(j["state"], "succeeded", "the job ran on past its limit: {j}\n{}", d.log());
    let total: u64 = walk(&d.state().join(format!("output/{id}")))
        .iter()
        .filter(|p| p.is_file())
        .map(|p| p.metadata().unwrap().len())
        .sum();
    assert!(total <= (1 << 20) + 64 * 1024, "output on disk is {total} bytes, over the 1 MiB limit");
    assert!(total >= 512 * 1024, "output up to the limit is kept: {total} bytes");
}

/// Finding 4: priorities do not let one user preempt another's job: above
/// `jobs.max_priority` only admins may go, and at the same priority nothing is preempted.
#[test]
fn one_user_cannot_preempt_another_by_priority() {
    let Some((a, b)) = two_users("prio") else { return skipped("preemption by priority") };
    let d = Daemon::configured("1xA100-40GB,numa=1", "preemption = true\n", "");
    let tmp = Path::new("/tmp");
    let id = d.submit_as(a.uid, tmp, &["--compute-slices", "7", "--", "sleep", "60"]);
    d.wait_state(id, "running", 30);
    let (code, _, err) = d.cli_as(b.uid, tmp, &["submit", "--compute-slices", "7", "--priority", "1", "--", "true"]);
    assert_ne!(code, 0);
    assert!(err.contains("priority 1 is above 0") && err.contains("403"), "{err}");
    let theirs = d.submit_as(b.uid, tmp, &["--compute-slices", "7", "--", "true"]);
    std::thread::sleep(Duration::from_millis(1500));
    let j = d.job(id);
    assert_eq!((j["state"].as_str(), j["runs"].as_u64()), (Some("running"), Some(1)), "A's job: {j}");
    assert_eq!(d.job(theirs)["state"], "queued");
    d.ok(&["cancel", &id.to_string(), &theirs.to_string()]);
}

/// Finding 5: a command line with terminal escapes reaches an admin's terminal escaped, in
/// every listing and in the daemon's log.
#[test]
fn terminal_escapes_in_commands_never_reach_a_terminal() {
    let Some((a, _b)) = two_users("esc") else { return skipped("terminal escapes") };
    let d = Daemon::start("1xA100-40GB,numa=1");
    let tmp = Path::new("/tmp");
    let evil = "x\u{1b}]0;owned\u{7}\u{1b}[2J\u{1b}[31mred\u{9b}31m\r\u{7f}";
    let id =
        d.submit_as(a.uid, tmp, &["--compute-slices", "1", "--", "sh", "-c", "printf '%s\\n' \"$0\"; sleep 30", evil]);
    d.wait_state(id, "running", 30);
    let sid = id.to_string();
    for args in [
        vec!["jobs", "--all-users"],
        vec!["jobs", "--all-users", "-a"],
        vec!["job", sid.as_str()],
        vec!["top", "--once"],
        vec!["gpus"],
        vec!["-o", "json", "job", sid.as_str()],
        vec!["-o", "json", "jobs", "--all-users", "-a"],
    ] {
        let (code, out, err) = d.cli(&args);
        assert_eq!(code, 0, "tessera {args:?}: {out}{err}");
        let bad: Vec<char> =
            (out.clone() + &err).chars().filter(|c| (c.is_control() && *c != '\n') || *c == '\u{9b}').collect();
        assert!(bad.is_empty(), "tessera {args:?} wrote control characters {bad:?}:\n{out}{err}");
    }
    // The job's own output, read by an admin at a terminal (`script` gives `tessera logs` a
    // pseudo-terminal, which turns each newline into CR LF: escapes, BEL, CSI and DEL are what
    // must not come through).
    let bin = env!("CARGO_BIN_EXE_tessera");
    let command = format!("{bin} --socket {} logs {sid}", d.socket().display());
    let t0 = Instant::now();
    let shown = loop {
        let o = Command::new("script").args(["-qec", &command, "/dev/null"]).output().unwrap();
        let shown = String::from_utf8_lossy(&o.stdout).into_owned();
        if shown.contains("red") || t0.elapsed() > Duration::from_secs(20) {
            break shown;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(shown.contains("\\x1b]0;owned\\x07"), "the output, escaped: {shown:?}");
    let bad: Vec<char> = shown.chars().filter(|c| matches!(c, '\u{1b}' | '\u{7}' | '\u{9b}' | '\u{7f}')).collect();
    assert!(bad.is_empty(), "tessera logs wrote {bad:?} to a terminal: {shown:?}");
    // The daemon's log (the journal, or a terminal in the foreground).
    d.ok(&["cancel", &sid]);
    d.wait(id);
    let log = d.log();
    assert!(!log.contains('\u{1b}') && !log.contains('\u{9b}'), "the daemon logged raw escapes:\n{log:?}");
}
