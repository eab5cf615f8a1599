//! The command line: every subcommand, flag and environment variable of `tessera`.

use std::path::PathBuf;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};
use tessera_gpu::BackendChoice;

#[derive(Debug, Parser)]
#[command(
    name = "tessera",
    version,
    about = "Partition NVIDIA GPUs with MIG, place work on the slice that fits, share them fairly.",
    long_about = "Tessera partitions NVIDIA GPUs with MIG and plans layouts exactly, by the driver's own placement \
                  rules (`tessera mig`); runs people's jobs on the slice that fits, next to the right CPUs, fairly \
                  among tenants (`tessera serve`, `submit`, `jobs`); and replays real traces through the same \
                  scheduler in virtual time (`tessera sim`). Without GPUs it runs on a simulated node whose state \
                  is kept in a file."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command understands.
#[derive(Debug, Args)]
#[command(next_help_heading = "Node and connection options")]
pub struct Global {
    /// Output format.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Which GPUs to drive: NVML when its library loads and finds GPUs, else the simulated node.
    #[arg(long, global = true, env = "TESSERA_BACKEND", value_parser = backend_parser(), default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// The NVML library to load [default: libnvidia-ml.so.1 from the loader's path].
    #[arg(long = "nvml-library", global = true, env = "TESSERA_NVML_LIBRARY", value_name = "PATH")]
    pub nvml_library: Option<PathBuf>,
    /// Hardware of the simulated node, e.g. `8xH100-80GB,numa=2,cpus=224,mem=2TiB` (the
    /// default, a DGX H100) or `2xA100-40GB+1xA30,mem=512GiB`.
    #[arg(long = "sim", global = true, env = "TESSERA_SIM", value_name = "SPEC")]
    pub sim: Option<String>,
    /// File holding the simulated node's state, shared by `tessera mig` and `tessera serve`
    /// [default: $XDG_STATE_HOME/tessera/sim-node.json where XDG_STATE_HOME is set, else
    /// /var/lib/tessera/sim-node.json for root and ~/.local/state/tessera/sim-node.json for others].
    #[arg(long = "sim-state", global = true, env = "TESSERA_SIM_STATE", value_name = "PATH")]
    pub sim_state: Option<PathBuf>,
    /// Say more on stderr: which GPUs a command drives (NVML, or the simulated node and why).
    #[arg(short = 'v', long, global = true)]
    pub verbose: bool,
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

/// How the job commands reach the daemon.
#[derive(Debug, Clone, Args)]
pub struct DaemonArgs {
    /// The daemon's Unix socket [default: your own daemon's, $XDG_RUNTIME_DIR/tessera/tessera.sock, when it
    /// runs, else the system daemon's, /run/tessera/tessera.sock].
    #[arg(long, global = true, env = "TESSERA_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Reach the daemon over TCP instead, e.g. `10.0.0.5:7373`, with a token from --token-file
    /// or the environment variable TESSERA_TOKEN (never on the command line, where `ps` shows it).
    #[arg(long, global = true, env = "TESSERA_TCP", value_name = "ADDR")]
    pub tcp: Option<String>,
    /// File holding your bearer token for --tcp (readable by you alone: chmod 600).
    #[arg(long = "token-file", global = true, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
}

impl DaemonArgs {
    /// The bearer token for `--tcp`: the `--token-file`'s content, else `TESSERA_TOKEN`.
    pub fn token(&self) -> anyhow::Result<String> {
        use std::os::unix::fs::MetadataExt as _;
        if let Some(path) = &self.token_file {
            let shown = path.display();
            let meta = std::fs::metadata(path).map_err(|e| anyhow::anyhow!("--token-file {shown}: {e}"))?;
            let mode = meta.mode() & 0o777;
            if mode & 0o077 != 0 {
                anyhow::bail!(
                    "--token-file {shown} has mode {mode:04o}: others may read your token. Run `chmod 600 {shown}`"
                );
            }
            let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("--token-file {shown}: {e}"))?;
            let token = text.trim();
            if token.is_empty() {
                anyhow::bail!("--token-file {shown} is empty: put your token in it");
            }
            return Ok(token.to_string());
        }
        match std::env::var("TESSERA_TOKEN") {
            Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
            _ => anyhow::bail!("--tcp needs your token: --token-file FILE, or the environment variable TESSERA_TOKEN"),
        }
    }
}

/// `tessera serve`: the daemon. It listens on `--socket` (or the config's `server.socket`) and,
/// with the config's `server.tcp` and `server.token_file`, on TCP; `--tcp` and `--token-file`
/// are the clients' and are refused here.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Where jobs, logs and the database live [default: /var/lib/tessera as root, else $XDG_STATE_HOME/tessera/daemon].
    #[arg(long = "state-dir", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Configuration file (TOML; reference: docs/config.md) [default: /etc/tessera/tessera.toml if it exists].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Begin a new database where it is missing beside old job directories, or corrupt (the
    /// corrupt one is moved aside). Without it the daemon refuses to start and says why.
    #[arg(long)]
    pub init: bool,
    /// Check the configuration (and its token file), say what the daemon would do (`-o json`
    /// for programs), and exit: 0 when it is valid, 2 with the error at FILE:LINE:COLUMN.
    /// Starts nothing.
    #[arg(long = "check-config")]
    pub check_config: bool,
    /// The log's form on stderr: `text` (one line per event; no colours unless stderr is a
    /// terminal; under journald with syslog priorities and no time stamp) or `json` (one
    /// object per line).
    #[arg(long = "log-format", value_enum, default_value_t = LogFormat::Text, value_name = "FORMAT")]
    pub log_format: LogFormat,
    /// The least severe events logged.
    #[arg(long = "log-level", env = "TESSERA_LOG", value_enum, default_value_t = LogLevel::Info, value_name = "LEVEL")]
    pub log_level: LogLevel,
}

/// `tessera serve --log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One line per event, for people and journald.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// `tessera serve --log-level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    /// Failures only.
    Error,
    /// Failures and what an operator should look at.
    Warn,
    /// Start-up, every job's start and end, reconfigurations, health events, refused requests.
    Info,
    /// Also the daemon's routine.
    Debug,
    /// Everything.
    Trace,
}

/// `tessera submit`: what a job needs.
#[derive(Debug, Clone, Args)]
pub struct SubmitArgs {
    /// GPU memory per rank: the smallest profile with at least that much. `GB` is decimal,
    /// `GiB` binary: on an H100, `10GB` gives a 1g.10gb (its 9,984 MiB hold 10 GB), `10GiB`
    /// (10,240 MiB) a 1g.20gb.
    #[arg(long = "gpu-mem", value_name = "SIZE", help_heading = RESOURCES)]
    pub gpu_mem: Option<String>,
    /// An explicit MIG profile per rank, e.g. `3g.40gb`.
    #[arg(long, value_name = "PROFILE", help_heading = RESOURCES)]
    pub profile: Option<String>,
    /// Whole GPUs per rank (the full-size profile), like Slurm's --gres=gpu:N: the rank's process
    /// sees all N; with --ranks, each rank gets its own N.
    #[arg(long, value_name = "N", value_parser = at_least_one, help_heading = RESOURCES)]
    pub gpus: Option<u32>,
    /// Compute slices per rank: the smallest profile with at least that many.
    #[arg(long = "compute-slices", value_name = "N", value_parser = at_least_one_u8, help_heading = RESOURCES)]
    pub compute_slices: Option<u8>,
    /// Share an instance through MPS with this active-thread percentage, e.g. `25%`.
    #[arg(long, value_name = "PCT", help_heading = RESOURCES)]
    pub mps: Option<String>,
    /// With --mps: the pinned device-memory limit, e.g. `8GiB` or `8GB`.
    #[arg(long = "mps-mem", value_name = "SIZE", requires = "mps", help_heading = RESOURCES)]
    pub mps_mem: Option<String>,
    /// Share an instance by time-slicing.
    #[arg(long = "time-slice", help_heading = RESOURCES)]
    pub time_slice: bool,
    /// CPU cores per rank, from the GPU's NUMA node.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = at_least_one, help_heading = RESOURCES)]
    pub cpus: u32,
    /// Host memory per rank, e.g. `16GiB` or `16GB` [default: 1GiB].
    #[arg(long, value_name = "SIZE", help_heading = RESOURCES)]
    pub mem: Option<String>,
    /// Do not bind CPUs and memory to the GPU's NUMA node.
    #[arg(long = "no-numa", help_heading = RESOURCES)]
    pub no_numa: bool,
    /// Start N processes together, each with its own instance (RANK, WORLD_SIZE, LOCAL_RANK set).
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = at_least_one, help_heading = RESOURCES)]
    pub ranks: u32,
    /// With --ranks 2: one rank per GPU-internal NUMA node of one GPU (NVIDIA's localisation).
    #[arg(long = "gpu-numa-local", help_heading = RESOURCES)]
    pub gpu_numa_local: bool,
    /// Tenant to charge [default: the one your user maps to].
    #[arg(long, value_name = "TENANT", help_heading = JOB)]
    pub tenant: Option<String>,
    /// Higher runs first (above the daemon's `jobs.max_priority`: admins only).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_name = "N", help_heading = JOB)]
    pub priority: i32,
    /// Kill the job after this long, e.g. `1h`.
    #[arg(long = "time-limit", value_name = "DURATION", help_heading = JOB)]
    pub time_limit: Option<String>,
    /// How long the job is expected to run (lets it backfill), e.g. `20m`.
    #[arg(long, value_name = "DURATION", help_heading = JOB)]
    pub estimate: Option<String>,
    /// Set NAME=VALUE in the job's environment (repeat it for several).
    #[arg(long = "env", value_name = "NAME=VALUE", help_heading = JOB)]
    pub env: Vec<String>,
    /// Pass this shell's whole environment (default: PATH, HOME, USER, LANG only).
    #[arg(long = "export-env", help_heading = JOB)]
    pub export_env: bool,
    /// Never preempt this job (and fail it, rather than queue it again, if its GPU fails).
    #[arg(long = "no-requeue", help_heading = JOB)]
    pub no_requeue: bool,
    /// The signal the job gets when preempted, before SIGKILL, e.g. `SIGUSR1` [default: the
    /// daemon's, SIGTERM].
    #[arg(long = "preempt-signal", value_name = "SIGNAL", help_heading = JOB)]
    pub preempt_signal: Option<String>,
    /// Queue nothing: show the profile, placement and CPUs the job would get now, or why it
    /// would wait or be refused.
    #[arg(long = "dry-run", help_heading = JOB)]
    pub dry_run: bool,
    /// A job array, as Slurm's `--array`: one job per index, e.g. `0-999`, `1,3,5-9` or `0-20:5`
    /// (at most 10000 jobs); each finds its index in TESSERA_ARRAY_TASK_ID (and the array's
    /// bounds in TESSERA_ARRAY_TASK_MIN, _MAX, _COUNT). Prints the ids, one a line.
    #[arg(long, value_name = "INDICES", conflicts_with = "dry_run", value_parser = crate::jobs::parse_array, help_heading = JOB)]
    pub array: Option<crate::jobs::ArrayIndices>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// A count that must be at least 1 (`--cpus`, `--ranks`, `--gpus`).
fn at_least_one(text: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("give a whole number from 1 to {}", u32::MAX)),
    }
}

/// A job id, as `tessera submit` printed it.
fn job_id(text: &str) -> Result<u64, String> {
    text.trim().parse::<u64>().map_err(|_| "a job id is a number, as `tessera submit` printed it".into())
}

/// [`at_least_one`] up to 255 (`--compute-slices`).
fn at_least_one_u8(text: &str) -> Result<u8, String> {
    at_least_one(text).and_then(|n| u8::try_from(n).map_err(|_| "give a whole number from 1 to 255".into()))
}

/// `submit --help`'s group of what a rank gets.
const RESOURCES: &str = "Resources (per rank)";
/// `submit --help`'s group of the job's other options.
const JOB: &str = "Job options";

/// `tessera jobs`: which jobs.
#[derive(Debug, Clone, Args)]
pub struct JobsArgs {
    /// Ended jobs too (the history), not only those queued, placing or running.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// With history: only jobs still active or ended since then: `2h` (ago), `2026-12-01` or
    /// `2026-12-01T14:00` (local time). Implies --all.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Only jobs in these states, e.g. `queued,running` or `failed`.
    #[arg(long, value_name = "STATES")]
    pub state: Option<String>,
    /// Only this user's jobs (another user's: admins only).
    #[arg(short = 'u', long, value_name = "NAME")]
    pub user: Option<String>,
    /// Only jobs charged to this tenant (admins see every user's).
    #[arg(short = 't', long, value_name = "NAME")]
    pub tenant: Option<String>,
    /// Every user's jobs (admins only); this was `--all` before it meant history.
    #[arg(short = 'A', long = "all-users", conflicts_with = "user")]
    pub all_users: bool,
    /// At most N jobs, the lowest ids first (1 to 1000), or `all` for every one (page after page)
    /// [default: 100 in a table; all with -o json].
    #[arg(long, value_name = "N|all", value_parser = list_limit)]
    pub limit: Option<ListLimit>,
    /// Only jobs after this id: where the last page ended (its footer names it).
    #[arg(long, value_name = "ID", value_parser = job_id)]
    pub after: Option<u64>,
}

/// `jobs --limit`: a page of N jobs, or `None` for all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListLimit(pub Option<u32>);

fn list_limit(text: &str) -> Result<ListLimit, String> {
    if text.trim().eq_ignore_ascii_case("all") {
        return Ok(ListLimit(None));
    }
    match text.trim().parse::<u32>() {
        Ok(n) if (1..=1_000).contains(&n) => Ok(ListLimit(Some(n))),
        _ => Err("give a number from 1 to 1000, or `all`".into()),
    }
}

/// `tessera top`: how often, and whether to draw on the terminal or print frames as text.
#[derive(Debug, Clone, Args)]
pub struct TopArgs {
    /// How often to ask the daemon again, e.g. `2s`, `500ms` or `1` (seconds).
    #[arg(short = 'd', long, default_value = "2s", value_name = "DURATION", value_parser = top_interval)]
    pub interval: std::time::Duration,
    /// Print one frame as plain text and exit (the same as `-n 1`).
    #[arg(long, conflicts_with = "iterations")]
    pub once: bool,
    /// Print N frames as plain text, `--interval` apart, and exit (for scripts and logs).
    #[arg(short = 'n', long, value_name = "N", value_parser = at_least_one)]
    pub iterations: Option<u32>,
    /// With --once or -n: the frame's width in columns [default: COLUMNS, else the terminal's, else 80].
    #[arg(long, value_name = "COLUMNS", value_parser = clap::value_parser!(u16).range(20..))]
    pub width: Option<u16>,
}

/// `top --interval`: a duration of at least 100 ms.
fn top_interval(text: &str) -> Result<std::time::Duration, String> {
    let ms = crate::units::parse_duration_ms(text)?;
    if ms < 100 {
        return Err("must be at least 100ms".into());
    }
    Ok(std::time::Duration::from_millis(ms))
}

/// `tessera cancel`: which jobs, as `scancel` picks them (ids, and every filter given).
#[derive(Debug, Clone, Args)]
pub struct CancelArgs {
    /// The jobs to cancel; with filters, only those of them that match.
    #[arg(value_name = "ID", value_parser = job_id)]
    pub ids: Vec<u64>,
    /// Every active job of this user (another user's: admins only).
    #[arg(short = 'u', long, value_name = "NAME")]
    pub user: Option<String>,
    /// Every active job charged to this tenant (your own; an admin's: everyone's).
    #[arg(short = 't', long, value_name = "NAME")]
    pub tenant: Option<String>,
    /// Only jobs in these states: `queued`, `placing`, `running` (comma-separated).
    #[arg(long, value_name = "STATES")]
    pub state: Option<String>,
}

/// `--backend`: [`tessera_gpu::open`]'s own choice, parsed by its `FromStr`, with a line of help
/// for each value.
fn backend_parser() -> impl TypedValueParser<Value = BackendChoice> {
    PossibleValuesParser::new([
        PossibleValue::new("auto")
            .help("NVML if `libnvidia-ml.so.1` loads and finds a GPU, otherwise the simulated node"),
        PossibleValue::new("nvml").help("Real GPUs through NVML; an error if NVML cannot be used"),
        PossibleValue::new("sim").help("The simulated node (state in a file)"),
    ])
    .try_map(|text| text.parse::<BackendChoice>())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned tables for people.
    Table,
    /// JSON for programs.
    Json,
    /// CSV (only `tessera sim`).
    Csv,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// MIG: GPUs, profiles, plans, layouts, and mig-parted-compatible apply/assert/export.
    #[command(subcommand)]
    Mig(MigCommand),
    /// Submit a job; prints its id (with --dry-run: what it would get now).
    Submit(SubmitArgs),
    /// Jobs: yours that are queued, placing or running (--all adds the ended ones).
    Jobs(JobsArgs),
    /// One job: times, state and reason history, placement, CPUs, exit status.
    Job {
        /// The job's id (as `tessera submit` printed it).
        #[arg(value_parser = job_id)]
        id: u64,
    },
    /// A job's output: both streams of every rank, in the order they were written.
    Logs(crate::logs::LogsArgs),
    /// Cancel jobs, by id or by filter as `scancel` does: SIGTERM, then SIGKILL after the grace
    /// period.
    Cancel(CancelArgs),
    /// Wait for jobs to end; exit 0 only if every one succeeded.
    Wait {
        /// The jobs to wait for.
        #[arg(value_name = "ID", required = true, value_parser = job_id)]
        ids: Vec<u64>,
        /// Give up after this long, e.g. `10m`.
        #[arg(long, value_name = "DURATION")]
        timeout: Option<String>,
    },
    /// The live slice map: one line per instance, with the jobs and users on it.
    Gpus,
    /// A live view of the node, refreshing: each GPU's slice map with who holds each instance,
    /// the running jobs and the queue with why each job waits (q quits).
    Top(TopArgs),
    /// Admins: drain GPUs and change their MIG layouts through the daemon.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// The trace-driven simulator: FGD's packing protocol, time-driven replay, synthetic traces.
    #[command(subcommand)]
    Sim(SimCommand),
    /// Run the daemon: owns the node's GPUs and runs submitted jobs (--sim / --backend pick the GPUs).
    Serve(ServeArgs),
    /// Kubernetes: the node agent (the daemon with the kubelet device plugin).
    #[command(subcommand)]
    Kube(KubeCommand),
    /// Slurm: GRES kept in step with the MIG layout, the job prolog and epilog, dynamic MIG.
    #[command(subcommand)]
    Slurm(SlurmCommand),
    /// Print a shell completion script.
    ///
    /// For example `tessera completion bash > ~/.local/share/bash-completion/completions/tessera`.
    /// The Debian package installs the bash, zsh and fish ones.
    Completion {
        /// The shell to complete for.
        #[arg(value_enum, value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Internal: write the man pages (one per subcommand) into DIR, for packaging.
    #[command(name = "generate-man", hide = true)]
    GenerateMan {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Internal: the per-job supervisor the daemon starts.
    #[command(hide = true)]
    Shim {
        #[arg(long = "job-dir", value_name = "DIR", required_unless_present = "standby")]
        job_dir: Option<PathBuf>,
        /// Wait for a job directory on stdin (the daemon keeps one such shim ready).
        #[arg(long, conflicts_with = "job_dir")]
        standby: bool,
    },
}

/// `tessera kube`.
#[derive(Debug, Subcommand)]
pub enum KubeCommand {
    /// The node agent: `tessera serve` (same flags, same configuration file) with the kubelet
    /// device plugin in one process. Devices the kubelet allocates are held by the daemon for
    /// their pods (never reconfigured, never given to the daemon's own jobs) until the kubelet's
    /// PodResources no longer lists them; the config's `[kubernetes]` section says where the
    /// kubelet's sockets are and how devices are advertised (docs/kubernetes.md).
    #[command(name = "node-agent")]
    NodeAgent(ServeArgs),
    /// The controller: GPUs repartitioned for pods pending for lack of `nvidia.com/gpu` or
    /// `nvidia.com/mig-*` devices, one active replica through the Lease `tessera-controller`.
    /// Reads `POD_NAMESPACE` and `POD_NAME` (the manifest sets them) and
    /// `TESSERA_ON_DEMAND_CONFIGS` (mig-parted configs whose labelled nodes may be repartitioned);
    /// talks to the API server as its pod's service account, or else as kubectl does.
    Controller(KubeControllerArgs),
}

/// `tessera slurm`: the Slurm front door (docs/slurm.md). Every command reads the configuration
/// file's `[slurm]` section and talks to the node's daemon (`tessera serve`), which owns the GPUs.
#[derive(Debug, Subcommand)]
pub enum SlurmCommand {
    /// Print this node's gres.conf lines for its current layout (one per MIG instance, its device
    /// files and NUMA-local cores), or with `--format node` the slurm.conf `Gres=` value, or with
    /// `--format future` a `State=FUTURE` node line that lets Slurm queue jobs for any profile.
    Gres(SlurmGresArgs),
    /// Rewrite this node's GRES files atomically and make Slurm take them up; refused when a
    /// running job's GRES index could not be kept.
    Sync(SlurmConfigArg),
    /// Slurm's `Prolog=` (as root): hold the job's slices in the daemon, start MPS for
    /// `--gres=mps` jobs, write what the job's tasks need.
    Prolog(SlurmConfigArg),
    /// Slurm's `Epilog=` (as root): stop the job's MPS daemons, release its slices, remove its files.
    Epilog(SlurmConfigArg),
    /// Slurm's `TaskProlog=` (as the job's user): MIG UUIDs in `CUDA_VISIBLE_DEVICES`, MPS
    /// directories, the task bound to its GPU's NUMA-local CPUs.
    #[command(name = "task-prolog")]
    TaskProlog(SlurmConfigArg),
    /// Dynamic MIG: repartition this node's idle capacity for pending jobs whose profile no
    /// idle node offers, draining the node only for the change.
    Agent(SlurmAgentArgs),
}

/// The configuration file the Slurm commands read.
#[derive(Debug, Args)]
pub struct SlurmConfigArg {
    /// Configuration file (its `[slurm]` section) [default: /etc/tessera/tessera.toml if it exists].
    #[arg(long, env = "TESSERA_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
}

/// `tessera slurm gres`.
#[derive(Debug, Args)]
pub struct SlurmGresArgs {
    #[command(flatten)]
    pub config: SlurmConfigArg,
    /// What to print.
    #[arg(long, value_enum, default_value_t = SlurmGresFormat::Gres)]
    pub format: SlurmGresFormat,
}

/// What `tessera slurm gres` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SlurmGresFormat {
    /// gres.conf lines.
    Gres,
    /// The slurm.conf `NodeName=… Gres=` line of this node.
    Node,
    /// A `State=FUTURE` node offering every profile of this node's GPUs, so Slurm queues jobs
    /// for profiles no node has yet.
    Future,
}

/// `tessera slurm agent`.
#[derive(Debug, Args)]
pub struct SlurmAgentArgs {
    #[command(flatten)]
    pub config: SlurmConfigArg,
    /// One pass, then exit.
    #[arg(long)]
    pub once: bool,
}

/// `tessera kube controller`.
#[derive(Debug, Args)]
pub struct KubeControllerArgs {
    /// The API server, instead of the pod's service account or the kubeconfig (for example
    /// `http://127.0.0.1:8001` behind `kubectl proxy`).
    #[arg(long = "kube-api-url", env = "TESSERA_KUBE_API_URL", value_name = "URL")]
    pub api_url: Option<String>,
    /// How long the controller waits after a change before deciding, so that pods created
    /// together (a Job's, a Deployment's) are decided together; 0 to 60000 ms.
    #[arg(
        long = "batch-window-ms",
        env = "TESSERA_BATCH_WINDOW_MS",
        default_value_t = 500,
        value_parser = clap::value_parser!(u64).range(0..=60_000),
        value_name = "MS"
    )]
    pub batch_window_ms: u64,
    /// The log's form on stderr (as `tessera serve`).
    #[arg(long = "log-format", value_enum, default_value_t = LogFormat::Text, value_name = "FORMAT")]
    pub log_format: LogFormat,
    /// The least severe events logged.
    #[arg(long = "log-level", value_enum, default_value_t = LogLevel::Info, value_name = "LEVEL")]
    pub log_level: LogLevel,
}

/// The format of a trace for `tessera sim run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TraceFormat {
    /// An Alibaba openb pod list (`openb_pod_list_*.csv`).
    Openb,
    /// Tessera's native job CSV (docs/sim-inputs.md).
    Csv,
}

#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// FGD's packing protocol (ATC'23): pods sampled per seed until the arrived GPU demand reaches
    /// --max-demand % of capacity, never departing; allocation ratio, fragmentation and failed
    /// pods at each demand point, per policy.
    Pack {
        /// The openb node list, e.g. openb_node_list_gpu_node.csv.
        #[arg(long, value_name = "FILE")]
        nodes: PathBuf,
        /// The openb pod list, e.g. openb_pod_list_default.csv.
        #[arg(long, value_name = "FILE")]
        pods: PathBuf,
        /// `shared` (milli-GPU sharing, FGD's setting) or `mig` (requests rounded to MIG profiles).
        #[arg(long, default_value = "shared")]
        mode: String,
        /// MIG mode: the GPU model every GPU becomes [default: A100-40GB].
        #[arg(long = "gpu-model", value_name = "MODEL")]
        gpu_model: Option<String>,
        /// Policies: random, bestfit, dotprod, packing, clustering, fgd, tessera.
        #[arg(long, value_delimiter = ',', default_value = "fgd")]
        policy: Vec<String>,
        /// Seeds: `42-51`, `1,2,5` or `7`.
        #[arg(long, default_value = "42-51")]
        seeds: String,
        /// Stop when the arrived GPU demand reaches this % of capacity.
        #[arg(long = "max-demand", default_value_t = 130)]
        max_demand: u32,
        /// Write plots (SVG and PNG) into this directory.
        #[arg(long, value_name = "DIR")]
        plots: Option<PathBuf>,
    },
    /// Replay a trace in virtual time through the daemon's scheduler core, each policy on the same
    /// jobs: JCT, queueing delay, makespan, utilisation, unusable capacity, reconfigurations,
    /// fairness.
    Run {
        /// The trace: an openb pod list or a native job CSV.
        #[arg(long, value_name = "FILE")]
        trace: PathBuf,
        /// The trace's format [default: from its header].
        #[arg(long, value_enum)]
        format: Option<TraceFormat>,
        /// openb: replay only the pods created in the trace's last this many days [default: 30].
        #[arg(long = "last-days", value_name = "DAYS")]
        last_days: Option<f64>,
        /// The cluster: `64xA100-40GB` (nodes of 8), `8x8xH100-80GB`, or `load=0.7:A100-40GB`
        /// (sized for 70% offered load of this trace).
        #[arg(long, value_name = "SPEC")]
        cluster: String,
        /// Policies: whole, static, static:3g+2g+2g, mps, dynamic, dynamic+mps.
        #[arg(long, value_delimiter = ',', default_value = "whole,static,static:3g+2g+2g,mps,dynamic,dynamic+mps")]
        policy: Vec<String>,
        /// Seeds: `5` (1 to 5), `42-51` or a list.
        #[arg(long, default_value = "5")]
        seeds: String,
        /// How long a GPU is out of use while it is repartitioned, e.g. `30s` (MISO) or `1s`.
        #[arg(long = "reconfig-cost", default_value = "30s")]
        reconfig_cost: String,
        /// MPS: the slowdown each co-running client causes (MISO: 0.15).
        #[arg(long = "mps-slowdown", default_value_t = 0.15)]
        mps_slowdown: f64,
        /// Fraction of jobs (by arrival) left out of the metrics at each end of the trace.
        #[arg(long, default_value_t = 0.1)]
        warmup: f64,
        /// Host CPUs per GPU of each node (split over two NUMA nodes); jobs' `cpus` ask the
        /// scheduler for CPUs next to their GPU. 0: the host is not modelled.
        #[arg(long = "host-cpus-per-gpu", default_value_t = 32)]
        host_cpus_per_gpu: u32,
        /// Host memory per GPU of each node, e.g. `128GiB`.
        #[arg(long = "host-mem-per-gpu", default_value = "128GiB")]
        host_mem_per_gpu: String,
        /// Write plots (SVG and PNG) into this directory.
        #[arg(long, value_name = "DIR")]
        plots: Option<PathBuf>,
    },
    /// Kubernetes: pods wait for MIG devices from mig-manager's best static configuration (searched
    /// on a tuning split), NVIDIA's DRA first fit, or Tessera's repartitioning controller; each
    /// on the same held-out arrivals: pod wait, utilisation, stranded capacity, MIG operations.
    Kube {
        /// `openb` (needs --trace), `migbench` (MIGBench-style traces drawn per seed) or
        /// `migbench-gen` (MIGBench's own generator, regenerated: seed 20260914 is their trace).
        #[arg(long, default_value = "openb")]
        workload: String,
        /// openb: the pod list; its first half by arrival tunes mig-manager, the second is measured.
        #[arg(long, value_name = "FILE")]
        trace: Option<PathBuf>,
        /// openb: replay only the pods created in the trace's last this many days [default: 30].
        #[arg(long = "last-days", value_name = "DAYS")]
        last_days: Option<f64>,
        /// One GPU model: `8x8xA100-40GB`, `load=0.9:A100-40GB` (openb) [default: load=0.9:A100-40GB
        /// for openb, 2x4xH100-80GB for migbench].
        #[arg(long, value_name = "SPEC")]
        cluster: Option<String>,
        /// Policies: mig-manager, mig-manager:<layout>, dra (NVIDIA's driver: first fit by name),
        /// dra-tessera (first fit over Tessera's DRA publication order), dra-alloc and
        /// dra-alloc-tessera (the structured allocator over the published slices and counters, in
        /// NVIDIA's and Tessera's order), tessera.
        #[arg(long, value_delimiter = ',', default_value = "mig-manager,dra,tessera")]
        policy: Vec<String>,
        /// Seeds: `5` (1 to 5), `42-51` or a list.
        #[arg(long, default_value = "5")]
        seeds: String,
        /// How long one MIG operation takes (a layout change, or one DRA instance's creation).
        #[arg(long = "reconfig-cost", default_value = "30s")]
        reconfig_cost: String,
        /// How often Tessera's controller decides, in virtual time.
        #[arg(long = "batch-window", default_value = "2s")]
        batch_window: String,
        /// Fraction of pods (by arrival) left out of the metrics at each end of the held-out split.
        #[arg(long, default_value_t = 0.1)]
        warmup: f64,
    },
    /// Write a synthetic workload (Poisson arrivals, a size mix, log-normal durations) in the
    /// native CSV format.
    Gen {
        #[arg(long, default_value_t = 10_000)]
        jobs: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Mean time between arrivals, e.g. `60s`.
        #[arg(long = "mean-interarrival", value_name = "DURATION")]
        mean_interarrival: Option<String>,
        /// Instead: the offered load on --gpus GPUs, e.g. 0.8.
        #[arg(long)]
        load: Option<f64>,
        #[arg(long)]
        gpus: Option<u32>,
        /// Size mix `GPUSxMILLI:WEIGHT,...`, e.g. `1x250:3,1x500:2,1x1000:4,2x1000:1`.
        #[arg(long)]
        mix: Option<String>,
        /// Median job duration on a whole GPU, e.g. `10m`.
        #[arg(long = "duration-median", value_name = "DURATION")]
        duration_median: Option<String>,
        /// Spread of the log-normal durations (sigma of the logarithm).
        #[arg(long = "duration-sigma")]
        duration_sigma: Option<f64>,
        #[arg(long)]
        tenants: Option<u32>,
        /// Model classes (speed curves) drawn per job, e.g. `resnet,bert`.
        #[arg(long = "model-classes", value_delimiter = ',')]
        model_classes: Vec<String>,
        /// Write here instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Place no new work on a GPU (running jobs go on; kept across daemon restarts).
    Drain {
        /// The GPU's index (as `tessera gpus` shows it).
        gpu: u32,
        /// Why, for others to read in `tessera gpus`.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Place work on a drained GPU again.
    Undrain {
        /// The GPU's index.
        gpu: u32,
    },
    /// Change a GPU's MIG layout; busy instances are never touched (the daemon names the ones in
    /// the way).
    Layout {
        /// The GPU's index.
        gpu: u32,
        /// The instances the GPU should have: `3g.40gb,2g.20gb` (wherever they fit best, keeping
        /// matching ones) or `3g.40gb@0,2g.20gb@4` (at those placements). `none` removes every
        /// idle instance.
        #[arg(value_name = "PROFILE[@START],...", value_delimiter = ',', required = true)]
        instances: Vec<String>,
        /// Only show the plan.
        #[arg(long)]
        dry_run: bool,
    },
    /// GPU health as the daemon tracks it.
    #[command(subcommand)]
    Health(AdminHealthCommand),
}

#[derive(Debug, Subcommand)]
pub enum AdminHealthCommand {
    /// Every GPU's health, its instances' and the last Xid events.
    Show,
    /// A GPU was reset or repaired: its faults clear at the next successful probe.
    Clear {
        /// The GPU's index.
        gpu: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum MigCommand {
    /// The node's GPUs: MIG mode, instances and a slice map.
    Gpus,
    /// GPU-instance profiles and placements (like `nvidia-smi mig -lgip` / `-lgipp`).
    ///
    /// With `--gpu MODEL`, from the catalog. Without it, as the node's driver reports them for
    /// each GPU, compared with the catalog (the driver wins).
    Profiles {
        /// GPU model: short name (`A100-40GB`), NVML name (`NVIDIA A100-SXM4-40GB`) or PCI id (`0x20B0`).
        #[arg(long, value_name = "MODEL")]
        gpu: Option<String>,
    },
    /// Plan explicit placements for profiles on a GPU model, without touching any hardware.
    ///
    /// Exit 0 when the profiles fit, 1 with the reason and the nearest alternative when not.
    Plan {
        #[arg(long, value_name = "MODEL")]
        gpu: String,
        /// Instances already on the GPU, which never move: `3g.40gb@0,1g.10gb@6`.
        #[arg(long, value_name = "PROFILE@START,...", value_delimiter = ',')]
        existing: Vec<String>,
        /// Place the profile once in each GPU-internal NUMA node (NVIDIA's NUMA localisation).
        #[arg(long)]
        per_gpu_numa: bool,
        /// Profiles to place (names or ids), e.g. `3g.40gb 2g.20gb 1g.10gb`.
        #[arg(required = true, value_name = "PROFILE")]
        profiles: Vec<String>,
    },
    /// Every maximal layout of a GPU model (no further instance fits).
    Layouts {
        #[arg(long, value_name = "MODEL")]
        gpu: String,
        /// Only these profiles (names or ids), e.g. `--profiles 1g.10gb,2g.20gb,3g.40gb`.
        #[arg(long, value_name = "PROFILE,...", value_delimiter = ',')]
        profiles: Vec<String>,
    },
    /// Apply a mig-parted config to the node: only what differs changes, at explicit placements.
    ///
    /// Every selected GPU is planned first; nothing changes unless every plan succeeds. Then, as
    /// mig-parted does: the `apply-start` hook; the MIG mode phase (its `pre-apply-mode` hook
    /// only when a mode differs); the MIG device phase (`pre-apply-config` only when devices
    /// differ; skipped with --mode-only); the `apply-exit` hook.
    Apply {
        #[command(flatten)]
        apply: ApplyArgs,
        /// Print the plan and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Exit 0 if the node matches a mig-parted config, 1 (listing the differences) if not.
    Assert {
        #[command(flatten)]
        config: ConfigArgs,
        /// Only check that the file is valid and holds the selected config; the node is not
        /// looked at (mig-parted's `--valid-config`).
        #[arg(short = 'a', long = "valid-config", env = "MIG_PARTED_VALID_CONFIG", value_parser = clap::builder::BoolishValueParser::new())]
        valid_config: bool,
    },
    /// Print the node's current MIG state as a mig-parted config (YAML; `-o json`: mig-parted's
    /// JSON).
    Export {
        #[command(flatten)]
        export: ExportArgs,
    },
    /// Write the mig-parted configs the node's GPUs support (`all-disabled`, `all-enabled`,
    /// `all-balanced`, `all-<profile>`), as mig-parted's `generate-config` does.
    GenerateConfig {
        /// Write to this file instead of standard output (mig-parted's `-f/--output-file`).
        #[arg(short = 'f', long = "output-file", env = "MIG_PARTED_OUTPUT_FILE", value_name = "FILE")]
        output_file: Option<PathBuf>,
        /// yaml or json [default: json with `-o json`, else yaml].
        #[arg(long = "output-format", env = "MIG_PARTED_OUTPUT_FORMAT", value_enum, value_name = "FORMAT")]
        output_format: Option<ExportFormat>,
    },
    /// Write the node's MIG state (each MIG-capable GPU's mode, GPU and compute instances) to a
    /// checkpoint file in mig-parted's format, replacing it atomically.
    Checkpoint {
        #[command(flatten)]
        checkpoint: CheckpointArgs,
    },
    /// Restore the MIG state a checkpoint file holds: GPUs matched by UUID, the MIG mode first,
    /// then the exact placements of GPU and compute instances.
    ///
    /// Every GPU is planned before anything changes; only what differs changes; a busy instance
    /// in the way is refused, naming its processes. Hooks run as for `apply`.
    Restore {
        #[command(flatten)]
        restore: RestoreArgs,
    },
    /// Health of the GPUs and their instances from NVML Xid events, classified after NVIDIA's
    /// Xid catalog, and probes of every GPU.
    ///
    /// Each fault recovers the way the catalog says: an Xid that needs a GPU reset (48, 95, …)
    /// clears only after a reset, Xid 79 (fallen off the bus) only after a reboot, contained and
    /// unknown Xids after a quiet period. What was seen is kept between runs in a state file.
    /// Exit 1 while a GPU or GPU instance is unhealthy (degraded is reported, exit 0).
    Health {
        /// Keep watching for this many seconds, printing every change (0: one pass).
        #[arg(long, default_value_t = 0.0, value_name = "SECONDS")]
        watch: f64,
        /// A quiet fault (unknown or contained Xid, failed probe) clears after a successful probe
        /// this long after its last error.
        #[arg(long, default_value_t = 60.0, value_name = "SECONDS")]
        recovery_quiet: f64,
        /// Where health is kept between runs [default: next to the simulated node's state, or
        /// $XDG_STATE_HOME/tessera/health.json].
        #[arg(long = "health-state", global = true, env = "TESSERA_HEALTH_STATE", value_name = "PATH")]
        health_state: Option<PathBuf>,
        #[command(subcommand)]
        command: Option<HealthCommand>,
    },
    /// Simulated node only: raise an Xid error, as the driver would report it.
    Xid {
        #[arg(value_name = "GPU")]
        gpu: u32,
        #[arg(value_name = "XID")]
        xid: u64,
        /// Contain it to this GPU instance.
        #[arg(long = "gi", value_name = "ID")]
        gpu_instance: Option<u32>,
        /// And this compute instance.
        #[arg(long = "ci", value_name = "ID", requires = "gpu_instance")]
        compute_instance: Option<u32>,
    },
    /// Simulated node only: reset a GPU, as `nvidia-smi -r -i GPU` does.
    ///
    /// Refused while processes use it. Destroys its GPU and compute instances, applies a pending
    /// MIG mode, counts the reset and clears the driver's recovery action (so a fault that waits
    /// for a GPU reset can clear). A GPU that fell off the bus needs `tessera mig reboot`.
    Reset {
        #[arg(value_name = "GPU")]
        gpu: u32,
    },
    /// Simulated node only: reboot the node.
    ///
    /// Every GPU loses its instances and processes, pending MIG modes take effect, GPUs that fell
    /// off the bus are back, recovery actions are cleared and the boot id changes.
    Reboot,
    /// Simulated node only: mark a GPU instance as in use by a (simulated) process.
    Busy {
        /// `GPU:GI`, e.g. `0:2` for GPU instance 2 of GPU 0.
        #[arg(value_name = "GPU:GI")]
        target: String,
        /// Process id to record.
        #[arg(long, default_value_t = 4242)]
        pid: u32,
    },
    /// Simulated node only: end the (simulated) processes on a GPU instance.
    Idle {
        #[arg(value_name = "GPU:GI")]
        target: String,
    },
}

/// `tessera mig health …`.
#[derive(Debug, Subcommand)]
pub enum HealthCommand {
    /// Record that a GPU was reset or repaired: its faults count as recovered, and the next
    /// successful probe (`tessera mig health`) clears them. The daemon's own is `tessera admin
    /// health clear`.
    Clear {
        #[arg(value_name = "GPU")]
        gpu: u32,
        /// Who clears it [default: the user running the command].
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
    },
}

/// `mig apply`'s flags beyond the config's: mig-parted's `-k` and `-s`, with their variables.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// mig-parted hooks file (`version: v1`, `hooks:` apply-start, pre-apply-mode,
    /// pre-apply-config, apply-exit): commands run around the change.
    #[arg(short = 'k', long = "hooks-file", env = "MIG_PARTED_HOOKS_FILE", value_name = "FILE")]
    pub hooks_file: Option<PathBuf>,
    /// Do not reset GPUs whose MIG mode change is left pending (mig-parted's `--skip-reset`).
    #[arg(short = 's', long = "skip-reset", env = "MIG_PARTED_SKIP_RESET", value_parser = clap::builder::BoolishValueParser::new())]
    pub skip_reset: bool,
}

/// mig-parted's `-f/--checkpoint-file`, which `checkpoint` and `restore` require.
#[derive(Debug, Args)]
pub struct CheckpointArgs {
    /// The checkpoint file (mig-parted's JSON).
    #[arg(short = 'f', long = "checkpoint-file", env = "MIG_PARTED_CHECKPOINT_FILE", value_name = "FILE")]
    pub file: Option<PathBuf>,
}

/// `restore`'s flags: mig-parted's, with their variables.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub checkpoint: CheckpointArgs,
    /// mig-parted hooks file: commands run around the change, as for `apply`.
    #[arg(short = 'k', long = "hooks-file", env = "MIG_PARTED_HOOKS_FILE", value_name = "FILE")]
    pub hooks_file: Option<PathBuf>,
    /// Only the MIG mode from the checkpoint file, not its MIG devices.
    #[arg(short = 'm', long = "mode-only", env = "MIG_PARTED_MODE_CHANGE_ONLY", value_parser = clap::builder::BoolishValueParser::new())]
    pub mode_only: bool,
}

/// `mig export`'s flags: mig-parted's, with their variables (`-o` is the global output format).
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Name of the config in the output (mig-parted's `-l/--config-label`).
    #[arg(
        short = 'l',
        long = "config-label",
        visible_alias = "config-name",
        short_alias = 'c',
        env = "MIG_PARTED_CONFIG_LABEL",
        default_value = "current",
        value_name = "NAME"
    )]
    pub config_label: String,
    /// yaml or json [default: json with `-o json`, else yaml].
    #[arg(long = "output-format", env = "MIG_PARTED_OUTPUT_FORMAT", value_enum, value_name = "FORMAT")]
    pub output_format: Option<ExportFormat>,
}

/// The formats of mig-parted's `export` and `generate-config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Yaml,
    Json,
}

/// mig-parted's `-f` / `-c`, with its environment variables.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// mig-parted config file (`version: v1`), `-` for standard input; without it, the built-in
    /// named configs (`all-disabled`, `all-1g.10gb`, `all-balanced`, …) are used.
    #[arg(short = 'f', long = "config-file", env = "MIG_PARTED_CONFIG_FILE", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Name of the config in the file [default: the file's only config, when it has one].
    #[arg(short = 'c', long = "selected-config", env = "MIG_PARTED_SELECTED_CONFIG", value_name = "NAME")]
    pub name: Option<String>,
    /// Only the MIG mode (enabled or disabled) of each selected GPU, not its MIG devices
    /// (mig-parted's `--mode-only`).
    #[arg(short = 'm', long = "mode-only", env = "MIG_PARTED_MODE_CHANGE_ONLY", value_parser = clap::builder::BoolishValueParser::new())]
    pub mode_only: bool,
}

/// The command line of NVIDIA's `nvidia-mig-parted`, which Tessera parses when it is invoked
/// under that name (a symlink): the verbs, flags, short forms, defaults and `MIG_PARTED_*`
/// variables of mig-parted's `cmd/nvidia-mig-parted`, running the same code as `tessera mig`.
#[derive(Debug, Parser)]
#[command(
    name = "nvidia-mig-parted",
    version,
    about = "Manage MIG partitions across the full set of NVIDIA GPUs on a node (Tessera, called as nvidia-mig-parted).",
    long_about = None,
    after_help = "The node is chosen as for `tessera mig`: TESSERA_BACKEND, TESSERA_SIM, TESSERA_SIM_STATE, \
                  TESSERA_NVML_LIBRARY. Every failure exits 1, as mig-parted's do."
)]
pub struct MigPartedCli {
    /// Debug output on stderr, and each hook's own output.
    #[arg(short = 'd', long, global = true, env = "MIG_PARTED_DEBUG", value_parser = clap::builder::BoolishValueParser::new())]
    pub debug: bool,
    /// The verb; without one, the help is printed (as mig-parted does).
    #[command(subcommand)]
    pub command: Option<MigPartedCommand>,
}

/// The verbs of `nvidia-mig-parted`.
#[derive(Debug, Subcommand)]
pub enum MigPartedCommand {
    /// Apply a MIG configuration from a config file, changing only what differs.
    Apply(ApplyArgs),
    /// Assert that a MIG configuration from a config file is applied to the node.
    Assert {
        #[command(flatten)]
        config: ConfigArgs,
        /// Only check that the config file is valid and holds the selected config.
        #[arg(short = 'a', long = "valid-config", env = "MIG_PARTED_VALID_CONFIG", value_parser = clap::builder::BoolishValueParser::new())]
        valid_config: bool,
    },
    /// Export the MIG configuration of every GPU as a config file.
    Export(MigPartedExportArgs),
    /// Checkpoint MIG state to a checkpoint file.
    Checkpoint(CheckpointArgs),
    /// Restore MIG state from a checkpoint file.
    Restore(RestoreArgs),
    /// Generate the MIG configs the node's GPUs support.
    GenerateConfig {
        /// Write to this file instead of standard output.
        #[arg(short = 'f', long = "output-file", env = "MIG_PARTED_OUTPUT_FILE", value_name = "FILE")]
        output_file: Option<PathBuf>,
        /// Format of the output.
        #[arg(
            short = 'o',
            long = "output-format",
            env = "MIG_PARTED_OUTPUT_FORMAT",
            value_enum,
            default_value = "yaml",
            value_name = "FORMAT"
        )]
        output_format: ExportFormat,
    },
}

/// `nvidia-mig-parted export`'s flags.
#[derive(Debug, Args)]
pub struct MigPartedExportArgs {
    /// Format of the output.
    #[arg(
        short = 'o',
        long = "output-format",
        env = "MIG_PARTED_OUTPUT_FORMAT",
        value_enum,
        default_value = "yaml",
        value_name = "FORMAT"
    )]
    pub output_format: ExportFormat,
    /// Name of the config in the output.
    #[arg(
        short = 'l',
        long = "config-label",
        env = "MIG_PARTED_CONFIG_LABEL",
        default_value = "current",
        value_name = "NAME"
    )]
    pub config_label: String,
}

/// The node options of [`Global`] from the environment alone (`TESSERA_*`), for the
/// `nvidia-mig-parted` name, whose command line has no place for them.
#[derive(Debug, Parser)]
#[command(name = "nvidia-mig-parted")]
struct EnvOnly {
    #[command(flatten)]
    global: Global,
}

impl Global {
    /// [`Global`] from the environment (`TESSERA_BACKEND`, `TESSERA_SIM`, …), table output.
    pub fn from_env() -> Result<Global, clap::Error> {
        EnvOnly::try_parse_from(["nvidia-mig-parted"]).map(|e| e.global)
    }
}
