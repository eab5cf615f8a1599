//! The end-to-end harness: the real `tessera serve` on a simulated node in a temporary
//! directory, the real CLI (as root or as another user), raw HTTP, and the simulated node's own
//! commands (Xids, resets) on the daemon's state file.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The user tests run jobs as, besides root: `nobody`.
pub const NOBODY: u32 = 65534;

pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub spec: String,
    child: Option<Child>,
    /// Extra arguments to `tessera serve` (e.g. `--init`), for the next spawn only.
    pub next_args: Vec<String>,
    /// `Some(driver version)`: the GPUs are "real", through NVML and the stand-in library
    /// (`crates/tessera-nvml-standin`) reporting that driver; `None`: the simulated node.
    pub nvml_driver: Option<String>,
    /// The daemon's subcommand: `serve`, or `kube node-agent`.
    pub subcommand: Vec<String>,
    /// Environment variables of every spawn (the downward API's `NODE_NAME`, say).
    pub env: Vec<(String, String)>,
}

/// Whether the tests run as root (switching users, cgroups and device nodes need it).
pub fn root() -> bool {
    tessera_host::effective_uid() == 0
}

/// `[(profile, start)]` of GPU 0 in a `gpus -o json` answer, by start.
pub fn gpu0_layout(j: &Value) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = j["gpus"][0]["instances"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| (i["profile"].as_str().unwrap_or("?").to_string(), i["start"].as_u64().unwrap_or(99)))
                .collect()
        })
        .unwrap_or_default();
    v.sort_by_key(|x| x.1);
    v
}

impl Daemon {
    /// GPU 0 as the node really has it, for a daemon over the stand-in NVML: the stand-in's
    /// simulated node (`standin-node.json`), read directly.
    pub fn standin_gpu0_layout(&self) -> Vec<(String, u64)> {
        let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(["--backend", "sim", "--sim-state"])
            .arg(self.path().join("standin-node.json"))
            .args(["mig", "gpus", "-o", "json"])
            .env_remove("TESSERA_SIM")
            .env_remove("TESSERA_SIM_STATE")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        gpu0_layout(&serde_json::from_slice(&out.stdout).unwrap())
    }

    /// A daemon with the default test config (fast ticks, short grace).
    pub fn start(spec: &str) -> Daemon {
        Daemon::with_config(spec, "")
    }

    /// A daemon whose config is the default test config followed by `extra` TOML (which may
    /// add sections; `[scheduler]` keys go in `scheduler_extra`).
    pub fn with_config(spec: &str, extra: &str) -> Daemon {
        Daemon::configured(spec, "", extra)
    }

    /// A daemon on GPUs reached through NVML (the stand-in library, reporting `driver`), with
    /// the default test config followed by `extra`.
    pub fn nvml(spec: &str, driver: &str, extra: &str) -> Daemon {
        Daemon::build(spec, Some(driver.to_string()), "", extra)
    }

    pub fn configured(spec: &str, scheduler_extra: &str, extra: &str) -> Daemon {
        Daemon::build(spec, None, scheduler_extra, extra)
    }

    /// `tessera kube node-agent` (the daemon with the kubelet device plugin), with the default
    /// test config followed by `extra` (its `[kubernetes]` section).
    pub fn node_agent(spec: &str, extra: &str) -> Daemon {
        let mut d = Daemon::unstarted_node_agent(spec, extra);
        d.spawn();
        d
    }

    fn build(spec: &str, nvml_driver: Option<String>, scheduler_extra: &str, extra: &str) -> Daemon {
        let mut d = Daemon::unstarted(spec, nvml_driver, scheduler_extra, extra);
        d.spawn();
        d
    }

    /// [`Daemon::node_agent`], not started yet (set [`Daemon::env`] first).
    pub fn unstarted_node_agent(spec: &str, extra: &str) -> Daemon {
        let mut d = Daemon::unstarted(spec, None, "", extra);
        d.subcommand = vec!["kube".into(), "node-agent".into()];
        d
    }

    fn unstarted(spec: &str, nvml_driver: Option<String>, scheduler_extra: &str, extra: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        // Job users must reach the directory (its files are the tests' own).
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let config = format!("[scheduler]\ntick_ms = 50\nkill_grace_ms = 500\n{scheduler_extra}\n{extra}\n");
        std::fs::write(dir.path().join("tessera.toml"), config).unwrap();
        Daemon {
            dir,
            spec: spec.to_string(),
            child: None,
            next_args: Vec::new(),
            nvml_driver,
            subcommand: vec!["serve".into()],
            env: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("tessera.sock")
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn sim_state(&self) -> PathBuf {
        self.state().join("sim-node.json")
    }

    fn log_file(&self) -> std::fs::File {
        std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("daemon.log")).unwrap()
    }

    /// The daemon's stderr, across restarts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts `tessera serve` and waits for its socket; panics with its log if it does not
    /// come up.
    pub fn spawn(&mut self) {
        self.try_spawn().unwrap_or_else(|e| panic!("{e}"));
    }

    /// Starts `tessera serve`; `Err` with its log when it exits or does not come up.
    pub fn try_spawn(&mut self) -> Result<(), String> {
        let _ = std::fs::remove_file(self.socket());
        let args = std::mem::take(&mut self.next_args);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
        match &self.nvml_driver {
            None => {
                cmd.args(&self.subcommand).args(["--sim", &self.spec, "--sim-state"]).arg(self.sim_state());
            }
            Some(driver) => {
                let library = tessera_nvml_standin::library_path()
                    .expect("the stand-in libnvidia-ml is not built: run ./scripts/test.sh");
                cmd.args(["--backend", "nvml", "--nvml-library"]).arg(library).args(&self.subcommand);
                cmd.env("TESSERA_STANDIN_SPEC", &self.spec)
                    .env("TESSERA_STANDIN_STATE", self.dir.path().join("standin-node.json"))
                    .env("TESSERA_STANDIN_DRIVER_VERSION", driver);
            }
        }
        let mut child = cmd
            .arg("--state-dir")
            .arg(self.state())
            .arg("--socket")
            .arg(self.socket())
            .arg("--config")
            .arg(self.dir.path().join("tessera.toml"))
            .args(&args)
            .env_remove("TESSERA_SIM")
            .env_remove("TESSERA_SIM_STATE")
            .env_remove("NODE_NAME")
            .env_remove("POD_NAMESPACE")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(self.log_file())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if std::os::unix::net::UnixStream::connect(self.socket()).is_ok() {
                self.child = Some(child);
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("the daemon exited ({status}):\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(format!("the daemon did not come up:\n{}", self.log()))
    }

    /// `kill -9` the daemon.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and wait for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }

    fn command(&self, args: &[&str], uid: Option<u32>) -> Command {
        let mut c = match uid {
            Some(u) if u != tessera_host::effective_uid() => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={u}"))
                    .arg(format!("--regid={u}"))
                    .arg("--init-groups")
                    .arg(env!("CARGO_BIN_EXE_tessera"));
                c
            }
            _ => Command::new(env!("CARGO_BIN_EXE_tessera")),
        };
        c.arg("--socket").arg(self.socket()).args(args).env_remove("TESSERA_TCP");
        c
    }

    fn run(mut c: Command) -> (i32, String, String) {
        let out: Output = c.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The CLI as the test's user, from the current directory.
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        Self::run(self.command(args, None))
    }

    /// The CLI as `uid` (root only), from `cwd`.
    pub fn cli_as(&self, uid: u32, cwd: &Path, args: &[&str]) -> (i32, String, String) {
        let mut c = self.command(args, Some(uid));
        c.current_dir(cwd);
        Self::run(c)
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.cli(args);
        assert_eq!(code, 0, "tessera {args:?}:\n{out}\n{err}\n--- daemon log ---\n{}", self.log());
        out
    }

    pub fn ok_as(&self, uid: u32, cwd: &Path, args: &[&str]) -> String {
        let (code, out, err) = self.cli_as(uid, cwd, args);
        assert_eq!(code, 0, "tessera {args:?} as uid {uid}:\n{out}\n{err}");
        out
    }

    pub fn submit(&self, args: &[&str]) -> u64 {
        self.ok(&[&["submit"], args].concat()).trim().parse().unwrap()
    }

    pub fn submit_as(&self, uid: u32, cwd: &Path, args: &[&str]) -> u64 {
        self.ok_as(uid, cwd, &[&["submit"], args].concat()).trim().parse().unwrap()
    }

    pub fn job(&self, id: u64) -> Value {
        serde_json::from_str(&self.ok(&["-o", "json", "job", &id.to_string()])).unwrap()
    }

    pub fn wait(&self, id: u64) -> Value {
        let (_, out, _) = self.cli(&["-o", "json", "wait", &id.to_string(), "--timeout", "90s"]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("wait {id}: {e}: {out}\n{}", self.log()))
    }

    /// Waits until the job is in `state` (or panics after `secs`).
    pub fn wait_state(&self, id: u64, state: &str, secs: u64) -> Value {
        let t0 = Instant::now();
        loop {
            let j = self.job(id);
            if j["state"] == state {
                return j;
            }
            assert!(t0.elapsed() < Duration::from_secs(secs), "job {id} never became {state}: {j}\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The simulated node's own commands on the daemon's state file (`tessera mig xid …`).
    pub fn sim(&self, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(["mig"])
            .args(args)
            .args(["--backend", "sim", "--sim-state"])
            .arg(self.sim_state())
            .output()
            .unwrap();
        assert!(out.status.success(), "tessera mig {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A raw HTTP request on the Unix socket: status and JSON body.
    pub fn raw(&self, request: &str) -> (u16, Value) {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(self.socket()).unwrap();
        // The daemon may answer (413, 431) and close before a large request is all sent.
        let _ = s.write_all(request.as_bytes());
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let out = String::from_utf8_lossy(&out);
        let status = out.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("");
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }

    /// `POST path` with a JSON body: status and JSON reply.
    pub fn post(&self, path: &str, body: &str) -> (u16, Value) {
        self.raw(&format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A directory every user may write in (jobs of other users leave their marks there).
pub fn shared_dir(base: &Path, name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let p = base.join(name);
    std::fs::create_dir_all(&p).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o1777)).unwrap();
    p
}

/// The processes whose parent is `ppid` and whose command line contains every word.
pub fn children_with(ppid: u32, words: &[&str]) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let stat = read(&PathBuf::from(format!("/proc/{pid}/stat")));
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { continue };
        let parent: u32 = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
        let cmd = read(&PathBuf::from(format!("/proc/{pid}/cmdline"))).replace('\0', " ");
        if parent == ppid && words.iter().all(|w| cmd.contains(w)) {
            out.push(pid);
        }
    }
    out
}

/// A local user made for a test (root only, with `useradd`), with a supplementary group of its
/// own, removed again when dropped.
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub extra_group: String,
}

impl TestUser {
    /// `None` when not root or the tools are missing.
    pub fn create(name: &str) -> Option<TestUser> {
        if !root() {
            return None;
        }
        let extra_group = format!("{name}-x");
        let run = |cmd: &str, args: &[&str]| {
            std::process::Command::new(cmd).args(args).output().is_ok_and(|o| o.status.success())
        };
        // Leftovers of an interrupted run.
        run("userdel", &[name]);
        run("groupdel", &[&extra_group]);
        if !run("groupadd", &[&extra_group])
            || !run("useradd", &["-M", "-N", "-g", "nogroup", "-G", &extra_group, "-s", "/bin/sh", name])
        {
            run("groupdel", &[&extra_group]);
            return None;
        }
        let uid = tessera_host::user_by_name(name).ok().flatten()?.uid;
        Some(TestUser { name: name.to_string(), uid, extra_group })
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("userdel").arg(&self.name).output();
        let _ = std::process::Command::new("groupdel").arg(&self.extra_group).output();
    }
}
