//! The daemon's configuration file (TOML). Every field has a default that works, so an empty
//! file (or none) gives a daemon on the simulated node that every local user can use.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

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
    /// Unix socket path [default: `<state dir>/tessera.sock`].
    pub socket: Option<PathBuf>,
    /// Also listen on TCP here, e.g. `127.0.0.1:7373`; requires `token_file`.
    pub tcp: Option<String>,
    /// File holding the bearer token TCP clients must send.
    pub token_file: Option<PathBuf>,
    /// The user TCP clients act as [default: `remote`].
    pub token_user: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// `auto` (NVML if present, else simulated), `nvml` or `sim`.
    pub backend: Option<String>,
    /// Simulated node spec, e.g. `8xH100-80GB,numa=2`.
    pub sim: Option<String>,
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
        }
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
            && !matches!(b.as_str(), "auto" | "nvml" | "sim")
        {
            return Err(invalid(format!("node.backend = '{b}': use auto, nvml or sim")));
        }
        if self.scheduler.tick_ms == 0 {
            return Err(invalid("scheduler.tick_ms must be at least 1".into()));
        }
        Ok(())
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
