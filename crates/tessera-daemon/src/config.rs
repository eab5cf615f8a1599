//! The daemon's configuration file (TOML). Every field has a default that works, so an empty
//! file (or none) gives a daemon on the simulated node that every local user can use.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tessera_gpu::open::BackendChoice;

/// What is wrong with a config file: its path, and `line:column` where TOML knows it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Parse { path: String, line: usize, column: usize, message: String },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub node: NodeConfig,
    #[serde(default)]
    pub scheduler: SchedulerSection,
    #[serde(default)]
    pub jobs: JobsSection,
    #[serde(default)]
    pub health: HealthSection,
    /// Tenants with weights and quotas; users not mapped to one get `default`.
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
    /// User name → tenant name.
    #[serde(default)]
    pub users: BTreeMap<String, String>,
    /// Users allowed to change MIG layouts and drain GPUs (root always is).
    #[serde(default)]
    pub admins: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Unix socket path [default: `$XDG_RUNTIME_DIR/tessera/tessera.sock`, else
    /// `/run/tessera/tessera.sock` for root and `/tmp/tessera-<uid>/tessera.sock` otherwise].
    pub socket: Option<PathBuf>,
    /// Also listen on TCP here, e.g. `127.0.0.1:7373`; requires `token_file`.
    pub tcp: Option<String>,
    /// File holding the bearer token TCP clients must send.
    pub token_file: Option<PathBuf>,
    /// The local user TCP clients act as (their jobs run as this user); required with `tcp`.
    pub token_user: Option<String>,
    /// Connection and request limits (both listeners).
    #[serde(default)]
    pub limits: crate::http::HttpLimits,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// `auto` (NVML if present, else simulated), `nvml` or `sim` ([`Config::backend_choice`]
    /// gives it typed).
    pub backend: Option<String>,
    /// Simulated node spec, e.g. `8xH100-80GB,numa=2`.
    pub sim: Option<String>,
    /// Where the NVIDIA device nodes are [default: `/dev`] (tests point it at nodes they made).
    pub dev_root: Option<PathBuf>,
    /// Where MPS pipe and log directories go [default: the socket's directory].
    pub runtime_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerSection {
    #[serde(default = "yes")]
    pub repartition: bool,
    #[serde(default = "yes")]
    pub backfill: bool,
    #[serde(default)]
    pub preemption: bool,
    #[serde(default = "four")]
    pub time_slice_replicas: u32,
    /// How often the scheduler runs when nothing wakes it, in milliseconds.
    #[serde(default = "tick")]
    pub tick_ms: u64,
    /// Grace between SIGTERM and SIGKILL when a job is cancelled or runs out of time.
    #[serde(default = "grace")]
    pub kill_grace_ms: u64,
    /// Switch idle GPUs' MIG mode when a job could never start on the modes they have.
    #[serde(default)]
    pub mig_mode_switching: bool,
}

fn yes() -> bool {
    true
}
fn four() -> u32 {
    4
}
fn tick() -> u64 {
    200
}
fn grace() -> u64 {
    5_000
}

impl Default for SchedulerSection {
    fn default() -> Self {
        SchedulerSection {
            repartition: true,
            backfill: true,
            preemption: false,
            time_slice_replicas: 4,
            tick_ms: tick(),
            kill_grace_ms: grace(),
            mig_mode_switching: false,
        }
    }
}

/// How jobs run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsSection {
    /// Where job output goes, one directory per job [default: `<state dir>/output`]. Put it on
    /// a filesystem of its own: a job filling it then cannot stop the daemon recording outcomes.
    pub output_dir: Option<PathBuf>,
    /// The most output one run of a job may write, all ranks and streams together, in MiB;
    /// beyond it output is discarded (the job runs on and its outcome is kept).
    pub output_limit_mib: u64,
    /// The highest priority a non-admin may ask for; admins may ask for any.
    pub max_priority: i32,
    /// The signal a preempted job gets first (SIGKILL follows after `preempt_grace_ms`), unless
    /// the job names its own.
    pub preempt_signal: String,
    pub preempt_grace_ms: u64,
    /// Per-job cgroups (CPUs, memory limit, GPU device nodes): `auto` where the machine has
    /// them, `required` (a job that cannot be isolated does not start), `off`.
    pub isolation: Isolation,
    /// The cgroup every job's cgroup is made under.
    pub cgroup_parent: String,
    /// The most bytes of arguments and environment a job may have (`execve` refuses above about
    /// 2 MiB; each string is limited to 128 KiB).
    pub max_exec_bytes: usize,
}

/// Whether jobs get a cgroup of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    Auto,
    Required,
    Off,
}

impl Default for JobsSection {
    fn default() -> Self {
        JobsSection {
            output_dir: None,
            output_limit_mib: 1024,
            max_priority: 0,
            preempt_signal: "SIGTERM".into(),
            preempt_grace_ms: 30_000,
            isolation: Isolation::Auto,
            cgroup_parent: "tessera".into(),
            max_exec_bytes: 1 << 20,
        }
    }
}

/// GPU health fencing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthSection {
    /// Faults that clear on their own (unknown Xids, contained instance errors) clear after
    /// this long without events and a successful probe.
    pub recovery_quiet_ms: u64,
    /// How often every GPU is probed.
    pub probe_interval_ms: u64,
    /// A fatal Xid ends the jobs on the GPU: SIGTERM, then SIGKILL after this long.
    pub stop_grace_ms: u64,
}

impl Default for HealthSection {
    fn default() -> Self {
        HealthSection { recovery_quiet_ms: 60_000, probe_interval_ms: 5_000, stop_grace_ms: 5_000 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub name: String,
    #[serde(default = "one")]
    pub weight: f64,
    pub quota: Option<QuotaConfig>,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    pub compute_slices: u32,
    pub memory_slices: u32,
}

impl Config {
    /// Parse a config file's text; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map_or((1, 1), |s| line_col(text, s.start));
            ConfigError::Parse { path: path.to_string(), line, column, message: e.message().to_string() }
        })?;
        config.check(path)?;
        Ok(config)
    }

    /// Read and parse a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: shown.clone(), source })?;
        Config::parse(&text, &shown)
    }

    fn check(&self, path: &str) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid { path: path.to_string(), message };
        if self.server.tcp.is_some() && self.server.token_file.is_none() {
            return Err(invalid("server.tcp needs server.token_file: TCP clients must send a bearer token".into()));
        }
        if self.server.tcp.is_some() && self.server.token_user.is_none() {
            return Err(invalid(
                "server.tcp needs server.token_user: the local user TCP clients act as (their jobs run as that user)"
                    .into(),
            ));
        }
        self.server.limits.validate().map_err(|e| invalid(format!("server.limits: {e}")))?;
        if let Err(e) = crate::signals::parse_signal(&self.jobs.preempt_signal) {
            return Err(invalid(format!("jobs.preempt_signal: {e}")));
        }
        if self.jobs.output_limit_mib == 0 {
            return Err(invalid("jobs.output_limit_mib must be at least 1".into()));
        }
        if self.jobs.cgroup_parent.is_empty()
            || !self.jobs.cgroup_parent.chars().all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c))
        {
            return Err(invalid(format!(
                "jobs.cgroup_parent = '{}': one name of letters, digits and . _ @ -",
                self.jobs.cgroup_parent
            )));
        }
        if self.health.probe_interval_ms == 0 {
            return Err(invalid("health.probe_interval_ms must be at least 1".into()));
        }
        let mut seen = std::collections::BTreeSet::new();
        for t in &self.tenants {
            if !seen.insert(t.name.as_str()) {
                return Err(invalid(format!("tenant '{}' is defined twice", t.name)));
            }
            if !(t.weight.is_finite() && t.weight > 0.0) {
                return Err(invalid(format!("tenant '{}': weight must be a positive number", t.name)));
            }
        }
        for (user, tenant) in &self.users {
            if tenant != "default" && !self.tenants.iter().any(|t| &t.name == tenant) {
                return Err(invalid(format!("users.{user} = '{tenant}', but no [[tenants]] entry has that name")));
            }
        }
        if let Some(b) = &self.node.backend
            && b.parse::<BackendChoice>().is_err()
        {
            return Err(invalid(format!("node.backend = '{b}': use auto, nvml or sim")));
        }
        // What the scheduler itself requires of its configuration (checked again nowhere later).
        crate::engine::scheduler_config(self).validate().map_err(|e| invalid(e.to_string()))?;
        if self.scheduler.tick_ms == 0 {
            return Err(invalid("scheduler.tick_ms must be at least 1".into()));
        }
        Ok(())
    }

    /// `node.backend`, checked at load.
    pub fn backend_choice(&self) -> Option<BackendChoice> {
        self.node.backend.as_deref().and_then(|b| b.parse().ok())
    }

    /// The tenant a user belongs to.
    pub fn tenant_of(&self, user: &str) -> String {
        self.users.get(user).cloned().unwrap_or_else(|| "default".to_string())
    }

    /// Whether a user may change MIG layouts and drain GPUs.
    pub fn is_admin(&self, uid: u32, user: &str) -> bool {
        uid == 0 || self.admins.iter().any(|a| a == user)
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_gives_working_defaults() {
        let c = Config::parse("", "x.toml").unwrap();
        assert!(c.scheduler.repartition);
        assert_eq!(c.tenant_of("alice"), "default");
        assert!(c.is_admin(0, "root"));
        assert!(!c.is_admin(1000, "alice"));
    }

    #[test]
    fn errors_name_the_file_and_position() {
        let cases: &[(&str, &str)] = &[
            ("[server]\nsockett = \"/x\"\n", "x.toml:2:1: unknown field `sockett`"),
            ("[scheduler]\nrepartition = 3\n", "x.toml:2:15: invalid type: integer `3`, expected a boolean"),
            ("[server]\ntcp = \"127.0.0.1:1\"\n", "x.toml: server.tcp needs server.token_file"),
            ("[server]\ntcp = \"127.0.0.1:1\"\ntoken_file = \"/t\"\n", "x.toml: server.tcp needs server.token_user"),
            ("[jobs]\npreempt_signal = \"SIGFOO\"\n", "x.toml: jobs.preempt_signal: unknown signal"),
            ("[jobs]\nisolation = \"maybe\"\n", "x.toml:2:13: unknown variant `maybe`"),
            ("[jobs]\ncgroup_parent = \"a/b\"\n", "x.toml: jobs.cgroup_parent = 'a/b'"),
            ("[users]\nalice = \"ml\"\n", "x.toml: users.alice = 'ml', but no [[tenants]] entry has that name"),
            ("[[tenants]]\nname = \"ml\"\nweight = 0\n", "x.toml: tenant 'ml': weight must be a positive number"),
            ("[node]\nbackend = \"gpu\"\n", "x.toml: node.backend = 'gpu': use auto, nvml or sim"),
            ("[[tenants]\n", "x.toml:1:"),
        ];
        for (text, want) in cases {
            let e = Config::parse(text, "x.toml").unwrap_err().to_string();
            assert!(e.starts_with(want), "{text:?}: got {e}");
        }
    }

    #[test]
    fn tenants_and_admins() {
        let c = Config::parse(
            "admins = [\"alice\"]\n[users]\nbob = \"ml\"\n[[tenants]]\nname = \"ml\"\nweight = 3\nquota = { compute_slices = 14, memory_slices = 16 }\n",
            "x.toml",
        )
        .unwrap();
        assert_eq!(c.tenant_of("bob"), "ml");
        assert!(c.is_admin(1000, "alice"));
        assert_eq!(c.tenants[0].quota.unwrap().compute_slices, 14);
    }
}
