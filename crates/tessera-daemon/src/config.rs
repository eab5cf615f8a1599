//! The daemon's configuration file (TOML) and its TCP token file. Every field has a default
//! that works, so an empty file (or none) gives a daemon on the simulated node that every local
//! user can use. Every mistake is refused with the file, line and column: TOML's own (syntax,
//! types, unknown fields) and Tessera's (a value out of its range, a tenant or user that does not
//! exist, a token file others could read). Reference: `docs/config.md`; every field with its
//! default: `examples/tessera.toml`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tessera_gpu::open::BackendChoice;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// What is wrong with a config or token file: its path, and `line:column` where it is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    At { path: String, line: usize, column: usize, message: String },
    /// A problem with no place in the file (a value the file does not set).
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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
    #[serde(default)]
    pub store: StoreSection,
    /// Tenants with weights and quotas; users not mapped to one get `default`.
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
    /// User name → tenant name.
    #[serde(default)]
    pub users: BTreeMap<String, String>,
    /// Users allowed to change MIG layouts and drain GPUs (root always is).
    #[serde(default)]
    pub admins: Vec<String>,
    /// The Kubernetes node agent (`tessera kube node-agent`); `tessera serve` ignores it.
    #[serde(default)]
    pub kubernetes: KubernetesSection,
    /// The Slurm front door (`tessera slurm …`); `tessera serve` ignores it.
    #[serde(default)]
    pub slurm: SlurmSection,
}

/// `tessera slurm`: where the node's GRES files go, how Slurm is made to take them up, and where
/// the prolog keeps what a job holds (docs/slurm.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlurmSection {
    /// This node's name in Slurm; empty: the host name up to its first dot, as slurmd's default.
    pub node_name: String,
    /// The gres.conf lines of this node's slices, rewritten whole by `tessera slurm sync`
    /// (gres.conf includes it: `Include /etc/slurm/tessera-gres.conf`).
    pub gres_file: PathBuf,
    /// The slurm.conf `NodeName=` line of this node (slurm.conf includes it); none: Tessera does
    /// not write it and the node's `Gres=` is kept in step by hand (`tessera slurm gres --format node`).
    pub node_file: Option<PathBuf>,
    /// The rest of this node's `NodeName=` line (`CPUs=224 RealMemory=2000000 …`), written before
    /// `Gres=`.
    pub node_params: String,
    /// The GRES index map (which instance each Slurm GPU index is), kept across reboots.
    pub state_dir: PathBuf,
    /// Per-job files and MPS pipe directories.
    pub runtime_dir: PathBuf,
    /// Where the device files gres.conf names live (`/` on a real node; a test directory of
    /// `mknod`ed nodes otherwise).
    pub dev_root: PathBuf,
    /// `auto` (one `File=` per slice before Slurm 23.02, whose `MultipleFiles=` breaks steps with
    /// gres/mps; `MultipleFiles=` as Slurm's autodetect writes from 23.02), `single` or `multiple`.
    pub files: String,
    /// Commands run, in order, after the files change, so Slurm takes them up (Slurm 22.05 needs
    /// slurmctld and slurmd restarted: `scontrol reconfigure` keeps a node's old GRES).
    pub restart: Vec<Vec<String>>,
    /// How often `tessera slurm agent` reads the queue.
    pub agent_interval_ms: u64,
    /// The tenant Slurm jobs' holds count against.
    pub tenant: String,
    /// `nvidia-cuda-mps-control` for `--gres=mps` jobs on real GPUs.
    pub mps_control: PathBuf,
}

impl Default for SlurmSection {
    fn default() -> Self {
        SlurmSection {
            node_name: String::new(),
            gres_file: PathBuf::from("/etc/slurm/tessera-gres.conf"),
            node_file: None,
            node_params: String::new(),
            state_dir: PathBuf::from("/var/lib/tessera/slurm"),
            runtime_dir: PathBuf::from("/run/tessera/slurm"),
            dev_root: PathBuf::from("/"),
            files: "auto".to_string(),
            restart: vec![
                vec!["systemctl".to_string(), "restart".to_string(), "slurmctld".to_string()],
                vec!["systemctl".to_string(), "restart".to_string(), "slurmd".to_string()],
            ],
            agent_interval_ms: 5_000,
            tenant: "default".to_string(),
            mps_control: PathBuf::from("nvidia-cuda-mps-control"),
        }
    }
}

/// `tessera kube node-agent`: where the kubelet's sockets are, how devices are advertised, and
/// whose pods' holds are.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesSection {
    /// The kubelet's device-plugins directory (`kubelet.sock` and the plugin's sockets).
    pub device_plugin_dir: PathBuf,
    /// The kubelet's PodResources socket: which pod holds which device.
    pub pod_resources_socket: PathBuf,
    /// How often PodResources is read (holds named, released, adopted).
    pub pod_resources_interval_ms: u64,
    /// Where the CDI specification of the devices is written.
    pub cdi_dir: PathBuf,
    /// NVIDIA's device-plugin configuration file (`migStrategy`, sharing, device list
    /// strategy); none: NVIDIA's defaults.
    pub plugin_config: Option<PathBuf>,
    /// `none`, `single` or `mixed`: overrides the plugin configuration's `migStrategy`.
    pub mig_strategy: Option<String>,
    /// The tenant pods' holds are charged to.
    pub tenant: String,
    /// Run the node label workflow: apply `nvidia.com/mig.config` and the controller's desired
    /// layouts, and publish the node report, through the API server. `false`: the device plugin
    /// alone, with no API access.
    pub node_labels: bool,
    /// The API server's URL; none: the pod's service account in a cluster (as kubectl does
    /// elsewhere).
    pub api_server: Option<String>,
    /// The ConfigMap (in the agent's namespace) holding the mig-parted config file the label names
    /// a config of.
    pub mig_config_map: String,
    /// Its key.
    pub mig_config_key: String,
    /// Serve the kubelet device plugin (`nvidia.com/…` resources). `false` with `dra.enabled`:
    /// the node's GPUs are given out through DRA alone.
    pub device_plugin: bool,
    /// The DRA driver (`[kubernetes.dra]`).
    pub dra: DraSection,
}

/// `[kubernetes.dra]`: the Dynamic Resource Allocation driver (docs/kubernetes-dra.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DraSection {
    /// Publish the node's GPUs as ResourceSlices and serve the kubelet's DRA plugin API.
    pub enabled: bool,
    /// The driver's name (a DNS subdomain): `spec.driver` of its slices and DeviceClasses.
    pub driver: String,
    /// The plugin's own directory (its `dra.sock` and checkpoint); none:
    /// `/var/lib/kubelet/plugins/<driver>`.
    pub plugin_dir: Option<PathBuf>,
    /// The kubelet's plugin-watcher directory, where the registration socket goes.
    pub registry_dir: PathBuf,
    /// The shortest time between two publications of the node's slices; changes meanwhile
    /// are published together at its end.
    pub republish_interval_ms: u64,
}

impl Default for DraSection {
    fn default() -> Self {
        DraSection {
            enabled: false,
            driver: "gpu.tessera.dev".to_string(),
            plugin_dir: None,
            registry_dir: PathBuf::from("/var/lib/kubelet/plugins_registry"),
            republish_interval_ms: 1_000,
        }
    }
}

impl DraSection {
    /// The plugin's directory, given or derived from the driver's name.
    pub fn plugin_dir(&self) -> PathBuf {
        self.plugin_dir.clone().unwrap_or_else(|| PathBuf::from("/var/lib/kubelet/plugins").join(&self.driver))
    }
}

/// Whether `name` is a DNS subdomain (RFC 1123): what Kubernetes takes as a DRA driver's name.
fn is_dns_subdomain(name: &str) -> bool {
    let label = |l: &str| {
        (1..=63).contains(&l.len())
            && l.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    (1..=253).contains(&name.len()) && name.split('.').all(label)
}

impl Default for KubernetesSection {
    fn default() -> Self {
        KubernetesSection {
            device_plugin_dir: PathBuf::from("/var/lib/kubelet/device-plugins"),
            pod_resources_socket: PathBuf::from("/var/lib/kubelet/pod-resources/kubelet.sock"),
            pod_resources_interval_ms: 2_000,
            cdi_dir: PathBuf::from("/var/run/cdi"),
            plugin_config: None,
            mig_strategy: None,
            tenant: "default".to_string(),
            node_labels: true,
            api_server: None,
            mig_config_map: "tessera-mig-parted-config".to_string(),
            mig_config_key: "config.yaml".to_string(),
            device_plugin: true,
            dra: DraSection::default(),
        }
    }
}

/// The values `kubernetes.mig_strategy` may take (NVIDIA's `migStrategy`).
pub const MIG_STRATEGIES: [&str; 3] = ["none", "single", "mixed"];

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Unix socket path [default: `$XDG_RUNTIME_DIR/tessera/tessera.sock`, else
    /// `/run/tessera/tessera.sock` for root and `/tmp/tessera-<uid>/tessera.sock` otherwise].
    pub socket: Option<PathBuf>,
    /// Also listen on TCP here, `IP:PORT`, e.g. `127.0.0.1:7373`; requires `token_file`.
    pub tcp: Option<String>,
    /// Serve `GET /metrics` alone, without a token, on this TCP `IP:PORT` (for Prometheus).
    pub metrics_tcp: Option<String>,
    /// The TCP tokens: one `USER TOKEN` per line; a caller sending a token acts as its user.
    /// Owned by the daemon's user and private (mode 0600 or stricter).
    pub token_file: Option<PathBuf>,
    /// Connection and request limits (both listeners).
    #[serde(default)]
    pub limits: crate::http::HttpLimits,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// How many queued jobs of each tenant a round decides on: its first ones by priority, then
    /// age (Slurm's `default_queue_depth`); the rest wait behind them, unexamined, so a round
    /// costs the same with 10,000 queued as with a few hundred.
    #[serde(default = "queue_depth")]
    pub queue_depth: u32,
}
fn queue_depth() -> u32 {
    200
}
fn yes() -> bool {
    true
}
fn four() -> u32 {
    4
}
fn tick() -> u64 {
    50
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
            queue_depth: queue_depth(),
        }
    }
}

/// How jobs run.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// How long the database keeps finished jobs (docs/config.md `[store]`): the daemon prunes
/// finished jobs, their events and allocations, and finished reconfigurations older than
/// `keep_finished_ms`, and finished jobs beyond the newest `max_finished_jobs`, every
/// `prune_interval_ms`. Queued, placing and running jobs are never pruned.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// Finished jobs (and their output directories) older than this go, in ms; 0: no age limit.
    pub keep_finished_ms: u64,
    /// At most this many finished jobs are kept, the newest; 0: no count limit.
    pub max_finished_jobs: u64,
    /// How often the daemon prunes, in ms.
    pub prune_interval_ms: u64,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection { keep_finished_ms: 30 * 86_400_000, max_finished_jobs: 100_000, prune_interval_ms: 300_000 }
    }
}

/// GPU health fencing.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    pub compute_slices: u32,
    pub memory_slices: u32,
}

/// A TCP caller's local user (resolved through NSS when the token file is read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenUser {
    pub uid: u32,
    pub gid: u32,
    pub name: String,
}

/// The TCP tokens, each naming the local user its caller acts as. `Debug` never shows a token.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Vec<(Vec<u8>, TokenUser)>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").field("users", &self.users()).finish_non_exhaustive()
    }
}

impl Tokens {
    /// Tokens and their users, as given (the token file's reader checks them; tests make them).
    pub fn new(entries: Vec<(String, TokenUser)>) -> Tokens {
        Tokens { entries: entries.into_iter().map(|(t, u)| (t.into_bytes(), u)).collect() }
    }

    /// How many tokens there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The users that have a token, each once, sorted.
    pub fn users(&self) -> Vec<&str> {
        let set: BTreeSet<&str> = self.entries.iter().map(|(_, u)| u.name.as_str()).collect();
        set.into_iter().collect()
    }

    /// The tokens in a few words, for the log and `--check-config`:
    /// `2 tokens for 2 users (alice, bob)`.
    pub fn summary(&self) -> String {
        let users = self.users();
        let s = |n: usize| if n == 1 { "" } else { "s" };
        format!(
            "{} token{} for {} user{} ({})",
            self.len(),
            s(self.len()),
            users.len(),
            s(users.len()),
            users.join(", ")
        )
    }

    /// The user whose token `given` is. Every token is compared, each in time that depends on
    /// its own length only, so how long this takes tells nothing about which token matched or
    /// how much of one did.
    pub fn user_for(&self, given: &[u8]) -> Option<&TokenUser> {
        let mut found = None;
        for (token, user) in &self.entries {
            if constant_time_eq(given, token) {
                found = Some(user);
            }
        }
        found
    }
}

/// Whether `given` equals `expected`, in time that depends on `expected`'s length only.
fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != expected.len());
    for (i, e) in expected.iter().enumerate() {
        diff |= given.get(i).copied().unwrap_or(0) ^ e;
    }
    diff == 0
}

/// A configuration file read and checked, with its token file.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub config: Config,
    pub tokens: Tokens,
}

/// The shortest token accepted (`openssl rand -hex 32` gives 64 characters).
pub const MIN_TOKEN_CHARS: usize = 16;

/// What a numeric field counts, for saying its range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Ms,
    Mib,
    Bytes,
    Count,
}

impl Unit {
    fn show(self, v: i64) -> String {
        const KIB: i64 = 1 << 10;
        const MIB: i64 = 1 << 20;
        let scaled = |steps: &[(i64, &str)], fallback: &str| {
            steps
                .iter()
                .find(|(size, _)| v != 0 && v % size == 0)
                .map_or_else(|| format!("{v} {fallback}"), |(size, name)| format!("{} {name}", v / size))
        };
        match self {
            Unit::Ms if v != 0 && v % DAY == 0 => {
                let days = v / DAY;
                format!("{days} day{}", if days == 1 { "" } else { "s" })
            }
            Unit::Ms => scaled(&[(HOUR, "h"), (60_000, "min"), (SECOND, "s")], "ms"),
            Unit::Mib => scaled(&[(MIB, "TiB"), (KIB, "GiB")], "MiB"),
            Unit::Bytes => scaled(&[(MIB, "MiB"), (KIB, "KiB")], "bytes"),
            Unit::Count => v.to_string(),
        }
    }
}

/// The values a numeric field may take.
#[derive(Debug, Clone, Copy)]
struct Range {
    min: i64,
    max: i64,
    unit: Unit,
}

impl std::fmt::Display for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} to {}", self.unit.show(self.min), self.unit.show(self.max))
    }
}

const SECOND: i64 = 1000;
const HOUR: i64 = 3_600 * SECOND;
const DAY: i64 = 24 * HOUR;

/// A place in the file: table keys and array indices, e.g. `tenants[1].quota.compute_slices`.
#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

fn key(path: &str) -> Vec<Seg> {
    path.split('.').map(|k| Seg::Key(k.to_string())).collect()
}

fn show_path(at: &[Seg]) -> String {
    let mut s = String::new();
    for seg in at {
        match seg {
            Seg::Key(k) if s.is_empty() => s.push_str(k),
            Seg::Key(k) => {
                s.push('.');
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// Something wrong at a place: on the key's name (`on_key`) or on its value.
#[derive(Debug)]
struct Problem {
    at: Vec<Seg>,
    on_key: bool,
    message: String,
}

impl Problem {
    fn value(at: Vec<Seg>, message: String) -> Problem {
        Problem { at, on_key: false, message }
    }
}

/// A file's text and its TOML document with spans, to say where a problem is.
struct Source<'t> {
    path: &'t str,
    text: &'t str,
    doc: Option<Spanned<DeTable<'t>>>,
}

impl Source<'_> {
    fn error(&self, p: Problem) -> ConfigError {
        match self.doc.as_ref().and_then(|d| locate(d, &p.at, p.on_key)) {
            Some(offset) => at_offset(self.path, self.text, offset, p.message),
            None => ConfigError::Invalid { path: self.path.to_string(), message: p.message },
        }
    }
}

fn at_offset(path: &str, text: &str, offset: usize, message: String) -> ConfigError {
    let (line, column) = line_col(text, offset);
    ConfigError::At { path: path.to_string(), line, column, message }
}

/// The byte offset of a key (or its value) in a parsed document.
fn locate(doc: &Spanned<DeTable<'_>>, at: &[Seg], on_key: bool) -> Option<usize> {
    let mut value: Option<&Spanned<DeValue<'_>>> = None;
    for (i, seg) in at.iter().enumerate() {
        let last = i + 1 == at.len();
        let next = match seg {
            Seg::Key(k) => {
                let table = match value {
                    None => doc.get_ref(),
                    Some(v) => v.get_ref().as_table()?,
                };
                let (name, v) = table.iter().find(|(name, _)| name.get_ref() == k)?;
                if last && on_key {
                    return Some(name.span().start);
                }
                v
            }
            Seg::Index(n) => value?.get_ref().as_array()?.get(*n)?,
        };
        value = Some(next);
    }
    value.map(|v| v.span().start)
}

impl Config {
    /// Parse a config file's text (`path` names it in errors) and check it: every value in its
    /// range, every tenant and user it names known, and the token file it names, if any, safe
    /// and valid.
    pub fn parse(text: &str, path: &str) -> Result<Loaded, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let mut message = e.message().trim_end().to_string();
            if message.starts_with("unknown field `token_user`") {
                message = "unknown field `token_user`: TCP callers now act as the user their token names; \
                           list `USER TOKEN` lines in server.token_file (docs/config.md)"
                    .to_string();
            }
            match e.span() {
                Some(s) => at_offset(path, text, s.start, message),
                None => ConfigError::Invalid { path: path.to_string(), message },
            }
        })?;
        let source = Source { path, text, doc: DeTable::parse(text).ok() };
        config.check().map_err(|p| source.error(p))?;
        let tokens = match (&config.server.token_file, &config.server.tcp) {
            (Some(file), _) => {
                let tokens = read_tokens(file).map_err(|e| match e {
                    TokenFileError::Unsafe(message) => source.error(Problem::value(key("server.token_file"), message)),
                    TokenFileError::File(e) => e,
                })?;
                if tokens.is_empty() && config.server.tcp.is_some() {
                    return Err(source.error(Problem::value(
                        key("server.token_file"),
                        format!(
                            "server.token_file {} holds no tokens, so no TCP caller could connect: add a line \
                             `USER TOKEN` (e.g. `alice $(openssl rand -hex 32)`)",
                            file.display()
                        ),
                    )));
                }
                tokens
            }
            (None, _) => Tokens::default(),
        };
        Ok(Loaded { config, tokens })
    }

    /// Read, parse and check a config file (and its token file).
    pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: shown.clone(), source })?;
        Config::parse(&text, &shown)
    }

    /// Every numeric field, where it is, its value and its range.
    fn numbers(&self) -> Vec<(Vec<Seg>, i128, Range)> {
        let n = |min: i64, max: i64, unit: Unit| Range { min, max, unit };
        let big = i128::from;
        let size = |v: usize| i128::try_from(v).unwrap_or(i128::MAX);
        let l = &self.server.limits;
        let mut out = vec![
            (key("server.limits.max_connections_per_peer"), size(l.max_connections_per_peer), n(1, 4096, Unit::Count)),
            (key("server.limits.max_connections"), size(l.max_connections), n(1, 65_536, Unit::Count)),
            (key("server.limits.header_timeout_ms"), big(l.header_timeout_ms), n(1, HOUR, Unit::Ms)),
            (key("server.limits.idle_timeout_ms"), big(l.idle_timeout_ms), n(1, HOUR, Unit::Ms)),
            (key("server.limits.body_timeout_ms"), big(l.body_timeout_ms), n(1, HOUR, Unit::Ms)),
            (key("server.limits.write_timeout_ms"), big(l.write_timeout_ms), n(1, HOUR, Unit::Ms)),
            (key("server.limits.max_header_bytes"), size(l.max_header_bytes), n(256, 1 << 20, Unit::Bytes)),
            (key("server.limits.max_uri_bytes"), size(l.max_uri_bytes), n(16, 1 << 20, Unit::Bytes)),
            (key("server.limits.max_body_bytes"), size(l.max_body_bytes), n(1 << 10, 64 << 20, Unit::Bytes)),
            (key("server.limits.shutdown_grace_ms"), big(l.shutdown_grace_ms), n(0, 600 * SECOND, Unit::Ms)),
            (
                key("scheduler.time_slice_replicas"),
                i128::from(self.scheduler.time_slice_replicas),
                n(1, 64, Unit::Count),
            ),
            (key("scheduler.tick_ms"), big(self.scheduler.tick_ms), n(1, HOUR, Unit::Ms)),
            (key("scheduler.queue_depth"), i128::from(self.scheduler.queue_depth), n(1, 1_000_000, Unit::Count)),
            (key("scheduler.kill_grace_ms"), big(self.scheduler.kill_grace_ms), n(0, HOUR, Unit::Ms)),
            (key("jobs.output_limit_mib"), big(self.jobs.output_limit_mib), n(1, 1 << 20, Unit::Mib)),
            (key("jobs.max_priority"), i128::from(self.jobs.max_priority), n(-1_000_000, 1_000_000, Unit::Count)),
            (key("jobs.preempt_grace_ms"), big(self.jobs.preempt_grace_ms), n(0, HOUR, Unit::Ms)),
            (key("jobs.max_exec_bytes"), size(self.jobs.max_exec_bytes), n(1 << 10, 2 << 20, Unit::Bytes)),
            (key("health.recovery_quiet_ms"), big(self.health.recovery_quiet_ms), n(0, DAY, Unit::Ms)),
            (key("health.probe_interval_ms"), big(self.health.probe_interval_ms), n(10, HOUR, Unit::Ms)),
            (key("health.stop_grace_ms"), big(self.health.stop_grace_ms), n(0, HOUR, Unit::Ms)),
            (key("store.keep_finished_ms"), big(self.store.keep_finished_ms), n(0, 3_650 * DAY, Unit::Ms)),
            (key("store.max_finished_jobs"), big(self.store.max_finished_jobs), n(0, 100_000_000, Unit::Count)),
            (key("store.prune_interval_ms"), big(self.store.prune_interval_ms), n(100, DAY, Unit::Ms)),
            (
                key("kubernetes.pod_resources_interval_ms"),
                big(self.kubernetes.pod_resources_interval_ms),
                n(10, 60 * SECOND, Unit::Ms),
            ),
        ];
        for (i, t) in self.tenants.iter().enumerate() {
            if let Some(q) = t.quota {
                let at = |field: &str| {
                    vec![Seg::Key("tenants".into()), Seg::Index(i), Seg::Key("quota".into()), Seg::Key(field.into())]
                };
                out.push((at("compute_slices"), i128::from(q.compute_slices), n(0, MAX_QUOTA_SLICES, Unit::Count)));
                out.push((at("memory_slices"), i128::from(q.memory_slices), n(0, MAX_QUOTA_SLICES, Unit::Count)));
            }
        }
        out
    }

    /// Each numeric field's accepted range as the reference states it, e.g.
    /// `("scheduler.tick_ms", "1 ms to 1 h")` (tenants' fields as `tenants.quota.*`).
    pub fn ranges() -> Vec<(String, String)> {
        let example = Config {
            tenants: vec![TenantConfig {
                name: "t".into(),
                weight: 1.0,
                quota: Some(QuotaConfig { compute_slices: 1, memory_slices: 1 }),
            }],
            ..Config::default()
        };
        let mut out: Vec<(String, String)> = example
            .numbers()
            .into_iter()
            .map(|(at, _, r)| (show_path(&at).replace("tenants[0]", "tenants"), r.to_string()))
            .collect();
        out.push(("tenants.weight".into(), format!("more than 0, at most {MAX_WEIGHT}")));
        out
    }

    /// Everything TOML cannot check, each problem at its place.
    fn check(&self) -> Result<(), Problem> {
        for (at, value, range) in self.numbers() {
            if value < i128::from(range.min) || value > i128::from(range.max) {
                return Err(Problem::value(
                    at.clone(),
                    format!("{} = {value} is out of range ({range})", show_path(&at)),
                ));
            }
        }
        self.check_paths()?;
        if let Some(m) = &self.server.metrics_tcp
            && m.parse::<SocketAddr>().is_err()
        {
            return Err(Problem::value(
                key("server.metrics_tcp"),
                format!("server.metrics_tcp = '{m}': give IP:PORT, e.g. 127.0.0.1:9400"),
            ));
        }
        if let Some(tcp) = &self.server.tcp {
            if tcp.parse::<SocketAddr>().is_err() {
                return Err(Problem::value(
                    key("server.tcp"),
                    format!("server.tcp = '{tcp}': give IP:PORT, e.g. 127.0.0.1:7373 or [::]:7373"),
                ));
            }
            if self.server.token_file.is_none() {
                return Err(Problem::value(
                    key("server.tcp"),
                    "server.tcp needs server.token_file: the tokens TCP callers send, each naming the local user \
                     the caller acts as"
                        .into(),
                ));
            }
        }
        if let Err(e) = crate::signals::parse_signal(&self.jobs.preempt_signal) {
            return Err(Problem::value(key("jobs.preempt_signal"), format!("jobs.preempt_signal: {e}")));
        }
        if self.jobs.cgroup_parent.is_empty()
            || !self.jobs.cgroup_parent.chars().all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c))
        {
            return Err(Problem::value(
                key("jobs.cgroup_parent"),
                format!("jobs.cgroup_parent = '{}': one name of letters, digits and . _ @ -", self.jobs.cgroup_parent),
            ));
        }
        if let Some(b) = &self.node.backend
            && b.parse::<BackendChoice>().is_err()
        {
            return Err(Problem::value(key("node.backend"), format!("node.backend = '{b}': use auto, nvml or sim")));
        }
        if let Some(spec) = &self.node.sim
            && let Err(e) = tessera_gpu::NodeSpec::parse(spec)
        {
            return Err(Problem::value(key("node.sim"), format!("node.sim = '{spec}': {e}")));
        }
        if let Some(m) = &self.kubernetes.mig_strategy
            && !MIG_STRATEGIES.contains(&m.as_str())
        {
            return Err(Problem::value(
                key("kubernetes.mig_strategy"),
                format!("kubernetes.mig_strategy = '{m}': use {}", MIG_STRATEGIES.join(", ")),
            ));
        }
        if let Some(url) = &self.kubernetes.api_server
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(Problem::value(
                key("kubernetes.api_server"),
                format!("kubernetes.api_server = '{url}': give a URL, https://HOST:PORT"),
            ));
        }
        for (name, v) in [
            ("kubernetes.mig_config_map", &self.kubernetes.mig_config_map),
            ("kubernetes.mig_config_key", &self.kubernetes.mig_config_key),
        ] {
            if v.trim().is_empty() {
                return Err(Problem::value(key(name), format!("{name} is empty: name the ConfigMap and its key")));
            }
        }
        let dra = &self.kubernetes.dra;
        if !is_dns_subdomain(&dra.driver) {
            return Err(Problem::value(
                key("kubernetes.dra.driver"),
                format!(
                    "kubernetes.dra.driver = '{}': give a DNS subdomain (lowercase letters, digits, '-' and '.'), \
                     such as gpu.tessera.dev",
                    dra.driver
                ),
            ));
        }
        if !self.kubernetes.device_plugin && !dra.enabled {
            return Err(Problem::value(
                key("kubernetes.device_plugin"),
                "kubernetes.device_plugin = false and kubernetes.dra.enabled = false: the node agent would give \
                 out no GPU; turn one on"
                    .to_string(),
            ));
        }
        if dra.republish_interval_ms == 0 || dra.republish_interval_ms > 600_000 {
            return Err(Problem::value(
                key("kubernetes.dra.republish_interval_ms"),
                format!("kubernetes.dra.republish_interval_ms = {}: give 1 to 600000 ms", dra.republish_interval_ms),
            ));
        }
        self.check_tenants()?;
        let sl = &self.slurm;
        if !["auto", "single", "multiple"].contains(&sl.files.as_str()) {
            return Err(Problem::value(
                key("slurm.files"),
                format!("slurm.files = '{}': use auto, single or multiple", sl.files),
            ));
        }
        if sl.agent_interval_ms < 100 || sl.agent_interval_ms > 3_600_000 {
            return Err(Problem::value(
                key("slurm.agent_interval_ms"),
                format!("slurm.agent_interval_ms = {}: give 100 to 3600000 ms", sl.agent_interval_ms),
            ));
        }
        if let Some(i) = sl.restart.iter().position(Vec::is_empty) {
            return Err(Problem::value(
                vec![Seg::Key("slurm".into()), Seg::Key("restart".into()), Seg::Index(i)],
                "slurm.restart: an empty command; give the program and its arguments, e.g. [\"systemctl\", \"restart\", \"slurmd\"]"
                    .to_string(),
            ));
        }
        if !sl.node_name.is_empty()
            && !sl.node_name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(Problem::value(
                key("slurm.node_name"),
                format!("slurm.node_name = '{}': a Slurm node name (letters, digits, - _ .)", sl.node_name),
            ));
        }
        if sl.node_params.contains('\n') || sl.node_params.to_ascii_lowercase().contains("gres=") {
            return Err(Problem::value(
                key("slurm.node_params"),
                "slurm.node_params: one line, without Gres= (Tessera writes the node's Gres= itself)".to_string(),
            ));
        }
        let t = &self.slurm.tenant;
        if !self.tenant_names().contains(&t.as_str()) {
            return Err(Problem::value(
                key("slurm.tenant"),
                format!("slurm.tenant = '{t}': no such tenant ({})", self.tenant_names().join(", ")),
            ));
        }
        let k = &self.kubernetes.tenant;
        if !self.tenant_names().contains(&k.as_str()) {
            return Err(Problem::value(
                key("kubernetes.tenant"),
                format!("kubernetes.tenant = '{k}': no such tenant ({})", self.tenant_names().join(", ")),
            ));
        }
        self.check_users()?;
        // What the scheduler itself requires of its configuration (the checks above cover it;
        // this keeps the scheduler's own rules authoritative).
        crate::engine::scheduler_config(self).validate().map_err(|e| Problem::value(key("tenants"), e.to_string()))?;
        Ok(())
    }

    fn check_paths(&self) -> Result<(), Problem> {
        let paths = [
            ("server.socket", &self.server.socket),
            ("server.token_file", &self.server.token_file),
            ("node.dev_root", &self.node.dev_root),
            ("node.runtime_dir", &self.node.runtime_dir),
            ("jobs.output_dir", &self.jobs.output_dir),
            ("kubernetes.plugin_config", &self.kubernetes.plugin_config),
            ("kubernetes.dra.plugin_dir", &self.kubernetes.dra.plugin_dir),
            ("slurm.node_file", &self.slurm.node_file),
        ];
        let k = &self.kubernetes;
        let kube = [
            ("kubernetes.device_plugin_dir", &k.device_plugin_dir),
            ("kubernetes.pod_resources_socket", &k.pod_resources_socket),
            ("kubernetes.cdi_dir", &k.cdi_dir),
            ("kubernetes.dra.registry_dir", &k.dra.registry_dir),
            ("slurm.gres_file", &self.slurm.gres_file),
            ("slurm.state_dir", &self.slurm.state_dir),
            ("slurm.runtime_dir", &self.slurm.runtime_dir),
            ("slurm.dev_root", &self.slurm.dev_root),
        ];
        let given = paths.into_iter().filter_map(|(name, p)| p.as_ref().map(|p| (name, p)));
        for (name, p) in given.chain(kube) {
            if !p.is_absolute() {
                return Err(Problem::value(key(name), format!("{name} = '{}': give an absolute path", p.display())));
            }
        }
        Ok(())
    }

    fn check_tenants(&self) -> Result<(), Problem> {
        let mut seen = BTreeMap::new();
        for (i, t) in self.tenants.iter().enumerate() {
            let at = |field: &str| vec![Seg::Key("tenants".into()), Seg::Index(i), Seg::Key(field.into())];
            if !valid_name(&t.name) {
                return Err(Problem::value(
                    at("name"),
                    format!(
                        "tenant name '{}': 1 to 64 letters, digits and . _ - (it shows in tables and logs)",
                        t.name
                    ),
                ));
            }
            if let Some(first) = seen.insert(t.name.as_str(), i) {
                return Err(Problem::value(
                    at("name"),
                    format!("tenant '{}' is defined twice (tenants[{first}] and tenants[{i}])", t.name),
                ));
            }
            if !(t.weight.is_finite() && t.weight > 0.0 && t.weight <= MAX_WEIGHT) {
                return Err(Problem::value(
                    at("weight"),
                    format!(
                        "tenants[{i}].weight = {} (tenant '{}') is out of range (more than 0, at most {MAX_WEIGHT})",
                        t.weight, t.name
                    ),
                ));
            }
        }
        for (user, tenant) in &self.users {
            if tenant != "default" && !seen.contains_key(tenant.as_str()) {
                return Err(Problem::value(
                    vec![Seg::Key("users".into()), Seg::Key(user.clone())],
                    format!("users.{user} = '{tenant}': no such tenant ({})", self.tenant_names().join(", ")),
                ));
            }
        }
        Ok(())
    }

    /// Users named in the file must exist on this node (through NSS, so LDAP users count).
    fn check_users(&self) -> Result<(), Problem> {
        let named = self
            .admins
            .iter()
            .enumerate()
            .map(|(i, name)| (name, vec![Seg::Key("admins".into()), Seg::Index(i)], false, "admins"))
            .chain(
                self.users
                    .keys()
                    .map(|name| (name, vec![Seg::Key("users".into()), Seg::Key(name.clone())], true, "users")),
            );
        for (name, at, on_key, list) in named {
            match tessera_host::user_by_name(name) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(Problem { at, on_key, message: format!("{list}: no user '{name}' on this node") });
                }
                Err(e) => return Err(Problem { at, on_key, message: format!("{list}: looking up '{name}': {e}") }),
            }
        }
        Ok(())
    }

    /// Every tenant a job may be charged to: `default` and the configured ones.
    pub fn tenant_names(&self) -> Vec<&str> {
        let mut names = vec!["default"];
        names.extend(self.tenants.iter().map(|t| t.name.as_str()).filter(|n| *n != "default"));
        names
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

/// The largest tenant weight accepted.
const MAX_WEIGHT: f64 = 1_000_000.0;
/// The largest quota accepted, in compute or memory slices.
const MAX_QUOTA_SLICES: i64 = 100_000;

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// Why a token file cannot be used: unsafe (said at the config's `server.token_file`), or
/// wrong inside (at its own line and column).
enum TokenFileError {
    Unsafe(String),
    File(ConfigError),
}

/// Reads a token file: `USER TOKEN` per line, `#` comments and blank lines ignored. It must be
/// a regular file of the daemon's user that nobody else may read or write.
fn read_tokens(path: &Path) -> Result<Tokens, TokenFileError> {
    use std::io::Read as _;
    use std::os::unix::fs::MetadataExt as _;
    let shown = path.display().to_string();
    let unsafe_file = |what: String| TokenFileError::Unsafe(format!("server.token_file {shown} {what}"));
    let mut file = std::fs::File::open(path).map_err(|e| unsafe_file(format!("cannot be opened: {e}")))?;
    let meta = file.metadata().map_err(|e| unsafe_file(format!("cannot be read: {e}")))?;
    if !meta.is_file() {
        return Err(unsafe_file("is not a regular file".into()));
    }
    let me = tessera_host::effective_uid();
    if meta.uid() != me {
        return Err(unsafe_file(format!(
            "belongs to {}, but the daemon runs as {}: only the daemon's user may own its tokens. \
             Run `chown {} {shown}`",
            tessera_host::users::user_name(meta.uid()),
            tessera_host::users::user_name(me),
            tessera_host::users::user_name(me),
        )));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(unsafe_file(format!(
            "has mode {mode:04o}: group and others may {} the tokens in it. Run `chmod 600 {shown}`",
            if mode & 0o044 != 0 { "read" } else { "change" }
        )));
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|source| TokenFileError::File(ConfigError::Read { path: shown.clone(), source }))?;
    parse_tokens(&text, &shown).map_err(TokenFileError::File)
}

/// A token file's text: `USER TOKEN` per line, each user known through NSS, each token at least
/// [`MIN_TOKEN_CHARS`] printable characters and given once.
fn parse_tokens(text: &str, path: &str) -> Result<Tokens, ConfigError> {
    let mut entries = Vec::new();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let mut offset = 0;
    for (n, line) in text.split('\n').enumerate() {
        let start = offset;
        offset += line.len() + 1;
        let err = |at: usize, message: String| at_offset(path, text, start + at, message);
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let words: Vec<(usize, &str)> =
            line.split_ascii_whitespace().map(|w| (w.as_ptr() as usize - line.as_ptr() as usize, w)).collect();
        let [(user_at, user), (token_at, token)] = words[..] else {
            return Err(err(
                line.len() - trimmed.len(),
                format!(
                    "write one `USER TOKEN` pair per line (found {} word{})",
                    words.len(),
                    if words.len() == 1 { "" } else { "s" }
                ),
            ));
        };
        if token.chars().count() < MIN_TOKEN_CHARS || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(err(
                token_at,
                format!(
                    "the token for {user} is too weak: use at least {MIN_TOKEN_CHARS} printable characters, \
                     e.g. `openssl rand -hex 32`"
                ),
            ));
        }
        if let Some(first) = seen.insert(token, n + 1) {
            return Err(err(token_at, format!("the same token is on line {first}: each token names one user")));
        }
        let found = tessera_host::user_by_name(user).map_err(|e| err(user_at, format!("looking up '{user}': {e}")))?;
        let Some(u) = found else {
            return Err(err(user_at, format!("no user '{user}' on this node (each token names a local user)")));
        };
        entries.push((token.to_string(), TokenUser { uid: u.uid, gid: u.gid, name: u.name }));
    }
    Ok(Tokens::new(entries))
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "x.toml").map(|l| l.config)
    }

    #[test]
    fn an_empty_file_gives_working_defaults() {
        let c = parse("").unwrap();
        assert!(c.scheduler.repartition);
        assert_eq!(c.tenant_of("alice"), "default");
        assert!(c.is_admin(0, "root"));
        assert!(!c.is_admin(1000, "alice"));
    }

    #[test]
    fn every_default_is_in_its_range() {
        assert!(Config::default().check().is_ok());
    }

    #[test]
    fn errors_name_the_file_and_position() {
        let cases: &[(&str, &str)] = &[
            ("[server]\nsockett = \"/x\"\n", "x.toml:2:1: unknown field `sockett`"),
            ("[scheduler]\nrepartition = 3\n", "x.toml:2:15: invalid type: integer `3`, expected a boolean"),
            (
                "[scheduler]\ntick_ms = 18446744073709551615\n",
                "x.toml:2:11: scheduler.tick_ms = 18446744073709551615 is out of range (1 ms to 1 h)",
            ),
            ("[scheduler]\ntick_ms = 0\n", "x.toml:2:11: scheduler.tick_ms = 0 is out of range (1 ms to 1 h)"),
            (
                "[server.limits]\nmax_body_bytes = 10\n",
                "x.toml:2:18: server.limits.max_body_bytes = 10 is out of range (1 KiB to 64 MiB)",
            ),
            (
                "[jobs]\noutput_limit_mib = 0\n",
                "x.toml:2:20: jobs.output_limit_mib = 0 is out of range (1 MiB to 1 TiB)",
            ),
            ("[server]\ntcp = \"127.0.0.1:1\"\n", "x.toml:2:7: server.tcp needs server.token_file"),
            (
                "[server]\ntcp = \"localhost\"\ntoken_file = \"/t\"\n",
                "x.toml:2:7: server.tcp = 'localhost': give IP:PORT",
            ),
            (
                "[server]\ntoken_user = \"nobody\"\n",
                "x.toml:2:1: unknown field `token_user`: TCP callers now act as the user their token names",
            ),
            ("[server]\nsocket = \"t.sock\"\n", "x.toml:2:10: server.socket = 't.sock': give an absolute path"),
            ("[jobs]\npreempt_signal = \"SIGFOO\"\n", "x.toml:2:18: jobs.preempt_signal: unknown signal"),
            ("[jobs]\nisolation = \"maybe\"\n", "x.toml:2:13: unknown variant `maybe`"),
            ("[jobs]\ncgroup_parent = \"a/b\"\n", "x.toml:2:17: jobs.cgroup_parent = 'a/b'"),
            ("[users]\nroot = \"ml\"\n", "x.toml:2:8: users.root = 'ml': no such tenant (default)"),
            (
                "[users]\nno-such-user-tessera = \"default\"\n",
                "x.toml:2:1: users: no user 'no-such-user-tessera' on this node",
            ),
            ("admins = [\"root\", \"no-such-user-tessera\"]\n", "x.toml:1:19: admins: no user 'no-such-user-tessera'"),
            (
                "[[tenants]]\nname = \"ml\"\nweight = 0\n",
                "x.toml:3:10: tenants[0].weight = 0 (tenant 'ml') is out of range",
            ),
            (
                "[[tenants]]\nname = \"ml\"\n[[tenants]]\nname = \"ml\"\n",
                "x.toml:4:8: tenant 'ml' is defined twice (tenants[0] and tenants[1])",
            ),
            ("[[tenants]]\nname = \"a b\"\n", "x.toml:2:8: tenant name 'a b'"),
            (
                "[[tenants]]\nname = \"ml\"\nquota = { compute_slices = 14, memory_slices = 4294967295 }\n",
                "x.toml:3:48: tenants[0].quota.memory_slices = 4294967295 is out of range (0 to 100000)",
            ),
            ("[node]\nbackend = \"gpu\"\n", "x.toml:2:11: node.backend = 'gpu': use auto, nvml or sim"),
            ("[node]\nsim = \"8xZ100\"\n", "x.toml:2:7: node.sim = '8xZ100': "),
            ("[[tenants]\n", "x.toml:1:"),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.starts_with(want), "{text:?}:\n got  {e}\n want {want}");
        }
    }

    #[test]
    fn tenants_and_admins() {
        let c = parse(
            "admins = [\"root\"]\n[users]\nnobody = \"ml\"\n[[tenants]]\nname = \"ml\"\nweight = 3\nquota = { compute_slices = 14, memory_slices = 16 }\n",
        )
        .unwrap();
        assert_eq!(c.tenant_of("nobody"), "ml");
        assert!(c.is_admin(1000, "root"));
        assert_eq!(c.tenants[0].quota.unwrap().compute_slices, 14);
        assert_eq!(c.tenant_names(), ["default", "ml"]);
    }

    #[test]
    fn ranges_are_said_in_their_units() {
        let cases = [
            (Unit::Ms, 1, "1 ms"),
            (Unit::Ms, 3_600_000, "1 h"),
            (Unit::Ms, 86_400_000, "1 day"),
            (Unit::Ms, 11 * 86_400_000, "11 days"),
            (Unit::Ms, 2 * 86_400_000, "2 days"),
            (Unit::Ms, 90_000, "90 s"),
            (Unit::Ms, 0, "0 ms"),
            (Unit::Mib, 1 << 20, "1 TiB"),
            (Unit::Bytes, 2 << 20, "2 MiB"),
            (Unit::Bytes, 256, "256 bytes"),
            (Unit::Count, 4096, "4096"),
        ];
        for (unit, v, want) in cases {
            assert_eq!(unit.show(v), want);
        }
    }

    #[test]
    fn tokens_are_found_by_their_whole_value() {
        let u = |name: &str| TokenUser { uid: 1, gid: 1, name: name.into() };
        let t = Tokens::new(vec![("a".repeat(20), u("alice")), ("b".repeat(20), u("bob"))]);
        assert_eq!(t.user_for("a".repeat(20).as_bytes()).map(|u| u.name.as_str()), Some("alice"));
        assert_eq!(t.user_for("b".repeat(20).as_bytes()).map(|u| u.name.as_str()), Some("bob"));
        for wrong in ["a".repeat(19), "a".repeat(21), "b".repeat(19) + "a", String::new()] {
            assert!(t.user_for(wrong.as_bytes()).is_none(), "{wrong}");
        }
        assert!(!format!("{t:?}").contains("aaaa"), "Debug shows no token: {t:?}");
        assert_eq!(t.summary(), "2 tokens for 2 users (alice, bob)");
        let one = Tokens::new(vec![("c".repeat(20), u("carol"))]);
        assert_eq!(one.summary(), "1 token for 1 user (carol)");
    }

    #[test]
    fn token_file_lines() {
        let long = "0123456789abcdef0123";
        let ok = parse_tokens(&format!("# comment\n\nroot {long}\n  nobody {long}x\n"), "tokens").unwrap();
        assert_eq!(ok.users(), ["nobody", "root"]);
        let cases = [
            ("root\n".to_string(), "tokens:1:1: write one `USER TOKEN` pair per line (found 1 word)"),
            (format!("root {long} extra\n"), "tokens:1:1: write one `USER TOKEN` pair per line (found 3 words)"),
            ("root short\n".to_string(), "tokens:1:6: the token for root is too weak"),
            (format!("root {long}\nnobody {long}\n"), "tokens:2:8: the same token is on line 1"),
            (format!("\n no-such-user-tessera {long}\n"), "tokens:2:2: no user 'no-such-user-tessera' on this node"),
        ];
        for (text, want) in cases {
            let e = parse_tokens(&text, "tokens").unwrap_err().to_string();
            assert!(e.starts_with(want), "{text:?}:\n got  {e}\n want {want}");
        }
    }
}
