//! `tessera serve` as an operator configures and runs it: `--check-config` (what it would do, or
//! the mistake at file:line:column and exit 2), the client's flags refused, TCP tokens that act
//! as their own users, an unconfigured tenant refused at submit, and the daemon's log (job
//! starts and ends, refused requests; text without colours, JSON lines, journald priorities).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, NOBODY, root, shared_dir};
use serde_json::Value;

/// The repository's root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `tessera` with none of the environment the tests' caller may have set.
fn tessera() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tessera"));
    for var in [
        "TESSERA_SIM",
        "TESSERA_SIM_STATE",
        "TESSERA_BACKEND",
        "TESSERA_SOCKET",
        "TESSERA_TCP",
        "TESSERA_TOKEN",
        "TESSERA_LOG",
        "JOURNAL_STREAM",
    ] {
        c.env_remove(var);
    }
    c
}

fn run(mut c: Command) -> (i32, String, String) {
    let o = c.output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A private file (mode 0600).
fn private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

const ROOT_TOKEN: &str = "root-0123456789abcdef0123456789abcdef";
const NOBODY_TOKEN: &str = "nobody-0123456789abcdef0123456789abcdef";

/// `tessera serve --check-config` in `dir`, with the given extra arguments.
fn check_config(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let mut c = tessera();
    c.arg("--sim")
        .arg("2xA100-40GB,numa=1")
        .arg("--sim-state")
        .arg(dir.join("sim.json"))
        .args(["serve", "--check-config", "--state-dir"])
        .arg(dir.join("state"))
        .arg("--socket")
        .arg(dir.join("tessera.sock"))
        .args(args);
    run(c)
}

#[test]
fn check_config_says_what_the_daemon_would_do_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    private(&d.join("tokens"), &format!("# TCP users\nroot {ROOT_TOKEN}\nnobody {NOBODY_TOKEN}\n"));
    let config = d.join("tessera.toml");
    std::fs::write(
        &config,
        format!(
            "admins = [\"nobody\"]\n\n[server]\ntcp = \"127.0.0.1:7373\"\ntoken_file = \"{}\"\n\n\
             [scheduler]\ntick_ms = 100\npreemption = true\n\n[jobs]\nisolation = \"off\"\n\n\
             [[tenants]]\nname = \"research\"\nweight = 3\nquota = {{ compute_slices = 14, memory_slices = 16 }}\n\n\
             [[tenants]]\nname = \"teaching\"\n\n[users]\nnobody = \"research\"\n",
            d.join("tokens").display()
        ),
    )
    .unwrap();
    let (code, out, err) = check_config(d, &["--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(!d.join("state").exists() && !d.join("tessera.sock").exists(), "nothing was started");
    let shown = d.display().to_string();
    insta::with_settings!({ filters => vec![(shown.as_str(), "[DIR]")] }, {
        insta::assert_snapshot!("check_config", out);
    });
    // The same as JSON, for programs.
    let (code, out, err) = check_config(d, &["--config", config.to_str().unwrap(), "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["tcp"]["token_users"], serde_json::json!(["nobody", "root"]));
    assert_eq!(v["tenants"][1]["name"], "research");
    assert_eq!(v["config"]["scheduler"]["tick_ms"], 100);
    // The shipped example, as the package installs it.
    let example = repo().join("examples/tessera.toml");
    let (code, out, err) = check_config(d, &["--config", example.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("tcp:       off (no server.tcp)") && out.contains("valid; nothing was started"), "{out}");
}

#[test]
fn a_bad_configuration_exits_2_at_its_line_and_column_checked_or_started() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bad = d.join("bad.toml");
    std::fs::write(&bad, "[scheduler]\nbackfill = true\n\n\n\n\n\n\n\n\n\ntick_ms = 18446744073709551615\n").unwrap();
    let (code, out, err) = check_config(d, &["--config", bad.to_str().unwrap()]);
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    let shown = d.display().to_string();
    insta::with_settings!({ filters => vec![(shown.as_str(), "[DIR]")] }, {
        insta::assert_snapshot!("check_config_out_of_range", err);
    });
    // `tessera serve` itself refuses it the same way, before it makes anything.
    let mut c = tessera();
    c.args(["serve", "--sim", "1xA30", "--state-dir"]).arg(d.join("state")).arg("--config").arg(&bad);
    let (code, _, started) = run(c);
    assert_eq!((code, started), (2, err));
    assert!(!d.join("state").exists());
}

/// Every flag `serve --help` shows either works (tests start the daemon with it) or is refused
/// with what to use instead.
#[test]
fn every_flag_serve_shows_works_or_is_refused() {
    let (code, help, _) = run({
        let mut c = tessera();
        c.args(["serve", "--help"]);
        c
    });
    assert_eq!(code, 0);
    let shown: std::collections::BTreeSet<String> = help
        .split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']' || c == '=')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()).to_string())
        .collect();
    // Flags the daemon uses: this harness and the other end-to-end tests start it with each.
    let works = [
        "--state-dir",
        "--config",
        "--init",
        "--check-config",
        "--log-format",
        "--log-level",
        "--socket",
        "--backend",
        "--nvml-library",
        "--sim",
        "--sim-state",
        "--output",
        "--verbose",
        "--help",
    ];
    // The client's flags: refused, each saying what the daemon takes instead.
    let dir = tempfile::tempdir().unwrap();
    let refused: [(&[&str], &str); 3] = [
        (&["--tcp", "10.0.0.5:7373"], "server.tcp"),
        (&["--token-file", "/etc/tessera/token"], "server.token_file"),
        (&["-o", "json"], "--log-format"),
    ];
    for (args, instead) in refused {
        let mut c = tessera();
        c.arg("serve")
            .args(args)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--sim-state")
            .arg(dir.path().join("sim.json"))
            .arg("--socket")
            .arg(dir.path().join("t.sock"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // A flag that is not refused starts the daemon: give it a few seconds, then stop it.
        let mut child = c.spawn().unwrap();
        let t0 = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if t0.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert_eq!(status.and_then(|s| s.code()), Some(2), "serve {args:?} was not refused: {err}");
        assert!(err.starts_with("error: ") && err.contains(instead), "serve {args:?}: {err}");
    }
    assert!(!dir.path().join("state").exists(), "a refused serve starts nothing");
    let known: Vec<&str> = works.iter().copied().chain(["--tcp", "--token-file"]).collect();
    let unknown: Vec<&String> = shown.iter().filter(|f| !known.contains(&f.as_str())).collect();
    assert!(unknown.is_empty(), "serve --help shows flags this test does not know: {unknown:?}\n{help}");
}

/// Submitting to a tenant the configuration does not have is refused, naming those it has,
/// for admins and users alike.
#[test]
fn a_submission_to_an_unconfigured_tenant_is_refused_naming_the_configured_ones() {
    let d = Daemon::with_config(
        "1xA100-40GB,numa=1",
        "[[tenants]]\nname = \"research\"\n[[tenants]]\nname = \"teaching\"\n",
    );
    let mut asked = vec![d.cli(&["submit", "--tenant", "reserch", "--", "true"])];
    if root() {
        asked.push(d.cli_as(NOBODY, Path::new("/tmp"), &["submit", "--tenant", "reserch", "--", "true"]));
    }
    for (code, out, err) in asked {
        assert_eq!((code, out.as_str()), (1, ""), "{err}");
        assert!(err.contains("no tenant 'reserch' is configured (tenants: default, research, teaching)"), "{err}");
    }
    let id = d.submit(&["--tenant", "teaching", "--", "true"]);
    assert_eq!(d.job(id)["tenant"], "teaching");
}

/// The TCP side of a daemon with two token users.
struct Tcp {
    port: u16,
}

impl Tcp {
    fn run(&self, token: &str, args: &[&str]) -> (i32, String, String) {
        let mut c = tessera();
        c.args(["--tcp", &format!("127.0.0.1:{}", self.port)])
            .env("TESSERA_TOKEN", token)
            .args(args)
            .current_dir("/tmp");
        run(c)
    }

    fn ok(&self, token: &str, args: &[&str]) -> String {
        let (code, out, err) = self.run(token, args);
        assert_eq!(code, 0, "tessera {args:?}: {err}");
        out
    }

    fn job_ids(&self, token: &str) -> Vec<(u64, String)> {
        let v: Value = serde_json::from_str(&self.ok(token, &["-o", "json", "jobs"])).unwrap();
        v["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| (j["id"].as_u64().unwrap(), j["user"].as_str().unwrap().to_string()))
            .collect()
    }
}

/// Two tokens, two users: each runs as themself, sees only their own jobs and cannot cancel
/// the other's; the tenant is the token user's.
#[test]
fn two_tcp_tokens_act_as_two_users() {
    if !root() {
        eprintln!("skipped: needs root to run jobs as other users");
        return;
    }
    let Some(alice) = common::TestUser::create("tsr-tok-a") else {
        eprintln!("skipped: cannot make a user (useradd)");
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let keys = tempfile::tempdir().unwrap();
    let alice_token = "alice-0123456789abcdef0123456789abcdef";
    private(&keys.path().join("tokens"), &format!("{} {alice_token}\nnobody {NOBODY_TOKEN}\n", alice.name));
    let d = Daemon::with_config(
        "2xA100-40GB,numa=1",
        &format!(
            "[server]\ntcp = \"127.0.0.1:{port}\"\ntoken_file = \"{}\"\n[[tenants]]\nname = \"research\"\n[users]\nnobody = \"research\"\n",
            keys.path().join("tokens").display()
        ),
    );
    let marks = shared_dir(d.path(), "marks");
    let tcp = Tcp { port };
    let submit = |token: &str, mark: &str| -> u64 {
        let script = format!("id -u > {}; sleep 60", marks.join(mark).display());
        tcp.ok(token, &["submit", "--compute-slices", "1", "--", "sh", "-c", &script]).trim().parse().unwrap()
    };
    let theirs = submit(NOBODY_TOKEN, "nobody");
    let mine = submit(alice_token, "alice");
    d.wait_state(theirs, "running", 30);
    d.wait_state(mine, "running", 30);
    // Each job runs as its token's user, charged to that user's tenant.
    let t0 = Instant::now();
    // The shell creates a mark before it writes the uid into it: wait for the whole line.
    let written = |who: &str| std::fs::read_to_string(marks.join(who)).is_ok_and(|s| s.ends_with('\n'));
    while !(written("alice") && written("nobody")) && t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(common::read(&marks.join("nobody")).trim(), NOBODY.to_string());
    assert_eq!(common::read(&marks.join("alice")).trim(), alice.uid.to_string());
    assert_eq!(d.job(theirs)["tenant"], "research");
    assert_eq!(d.job(mine)["tenant"], "default");
    // `tessera jobs` over TCP: each sees their own.
    assert_eq!(tcp.job_ids(alice_token), [(mine, alice.name.clone())]);
    assert_eq!(tcp.job_ids(NOBODY_TOKEN), [(theirs, "nobody".to_string())]);
    // Neither may cancel the other's job.
    let (code, _, err) = tcp.run(alice_token, &["cancel", &theirs.to_string()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("belongs to another user"), "{err}");
    assert_eq!(d.job(theirs)["state"], "running");
    let said = format!("refused cancel job {theirs} by {}: job {theirs} belongs to another user", alice.name);
    assert!(d.log().contains(&said), "{said}\n{}", d.log());
    // Their own, they may.
    tcp.ok(alice_token, &["cancel", &mine.to_string()]);
    tcp.ok(NOBODY_TOKEN, &["cancel", &theirs.to_string()]);
    assert_eq!(d.wait(mine)["state"], "cancelled");
    assert_eq!(d.wait(theirs)["state"], "cancelled");
    // A wrong token is no one.
    let (code, _, err) = tcp.run("not-a-token-0123456789", &["jobs"]);
    assert_eq!(code, 1);
    assert!(err.contains("401"), "{err}");
    assert!(d.log().contains("refused a TCP request from 127.0.0.1: the bearer token is not valid"), "{}", d.log());
}

/// The lines of the daemon's log from byte `from` on.
fn lines_from(d: &Daemon, from: usize) -> Vec<String> {
    d.log().get(from..).unwrap_or_default().lines().map(str::to_string).collect()
}

/// The log says every job's start and end and every refused request; as JSON, one object per
/// line; as text, without colours when stderr is not a terminal.
#[test]
fn the_log_has_job_starts_ends_and_refusals() {
    let mut d = Daemon::start("1xA100-40GB,numa=1");
    // Text, to a file: no colour codes, and the start-up says where everything is.
    let text = d.log();
    assert!(!text.contains('\u{1b}'), "colour codes in a log that is not a terminal:\n{text}");
    for said in ["starting; config ", "state in ", "backend: simulated node", "isolation: ", "listening on "] {
        assert!(text.contains(said), "the start-up does not say '{said}':\n{text}");
    }
    assert!(text.contains(" INFO "), "levels are shown:\n{text}");
    // JSON lines.
    d.stop();
    let from = d.log().len();
    d.next_args = vec!["--log-format".into(), "json".into()];
    d.spawn();
    let id = d.submit(&["--compute-slices", "1", "--", "sh", "-c", "exit 3"]);
    assert_eq!(d.wait(id)["state"], "failed");
    let (code, _, _) = d.cli(&["submit", "--tenant", "nope", "--", "true"]);
    assert_eq!(code, 1);
    let (code, _, _) = d.cli(&["cancel", "999"]);
    assert_eq!(code, 1);
    let t0 = Instant::now();
    let events: Vec<Value> = loop {
        let lines = lines_from(&d, from);
        let events: Vec<Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
            .collect();
        let ended =
            events.iter().any(|e| e["message"].as_str().is_some_and(|m| m.starts_with(&format!("job {id} ended"))));
        if ended || t0.elapsed() > Duration::from_secs(10) {
            break events;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let find = |what: &str| {
        events
            .iter()
            .find(|e| e["message"].as_str().is_some_and(|m| m.contains(what)))
            .unwrap_or_else(|| panic!("no '{what}' in the log:\n{}", d.log()))
    };
    let me = tessera_host::users::user_name(tessera_host::effective_uid());
    let started = find(&format!("job {id} started"));
    assert_eq!(
        (&started["level"], &started["job"], &started["user"]),
        (&"INFO".into(), &id.into(), &me.as_str().into())
    );
    assert_eq!(started["tenant"], "default");
    assert!(started["slices"].as_str().is_some_and(|s| s.contains("GPU 0")), "{started}");
    assert!(started["timestamp"].is_string(), "{started}");
    let ended = find(&format!("job {id} ended failed"));
    assert_eq!((&ended["job"], &ended["code"], &ended["state"]), (&id.into(), &3.into(), &"failed".into()));
    let refused = find(&format!("refused submit by {me}: "));
    assert!(refused["message"].as_str().unwrap().contains("no tenant 'nope' is configured"), "{refused}");
    assert_eq!((&refused["user"], &refused["status"]), (&me.as_str().into(), &400.into()));
    let missing = find(&format!("refused cancel job 999 by {me}"));
    assert_eq!(missing["status"], 404);
    find("listening on");
    // The job's instance was made for it: the reconfiguration and each of its steps.
    let begun = find("reconfiguring GPU 0");
    assert_eq!((&begun["gpu"], &begun["level"]), (&0.into(), &"INFO".into()));
    let step = find("GPU 0: create");
    assert!(step["step"].is_u64() && step["journal"] == begun["journal"], "{step}");
    find("reconfigured GPU 0");
    // A health event.
    d.sim(&["xid", "0", "31"]);
    let t0 = Instant::now();
    while !d.log()[from..].contains("Xid 31") {
        assert!(t0.elapsed() < Duration::from_secs(20), "no health event in the log:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let xid: Vec<Value> = lines_from(&d, from)
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["xid"] == 31)
        .collect();
    assert_eq!((&xid[0]["level"], &xid[0]["gpu"]), (&"WARN".into(), &0.into()), "{xid:?}");
}

/// Under systemd (`JOURNAL_STREAM` names stderr) text lines carry their syslog priority and no
/// time stamp, so journald files them at their level.
#[test]
fn under_journald_lines_carry_their_priority() {
    use std::os::unix::fs::MetadataExt as _;
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("journal.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let meta = log.metadata().unwrap();
    let socket = dir.path().join("t.sock");
    let mut child = tessera()
        .args(["serve", "--sim", "1xA30", "--sim-state"])
        .arg(dir.path().join("sim.json"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--socket")
        .arg(&socket)
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !common::read(&log_path).contains("listening on") && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    let text = common::read(&log_path);
    assert!(!text.is_empty());
    for line in text.lines() {
        assert!(line.starts_with("<6> INFO ") || line.starts_with("<4> WARN "), "{line}\n{text}");
    }
}
