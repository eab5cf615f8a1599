//! The command line: every subcommand, flag and environment variable of `tessera`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "tessera",
    version,
    about = "Partition NVIDIA GPUs with MIG, place work on the slice that fits, share them fairly.",
    long_about = "Tessera partitions NVIDIA GPUs with MIG and plans layouts exactly, by the driver's own placement \
                  rules. Without GPUs it runs on a simulated node whose state is kept in a file."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command understands.
#[derive(Debug, Args)]
pub struct Global {
    /// Output format.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Which GPUs to drive: NVML when its library loads and finds GPUs, else the simulated node.
    #[arg(long, global = true, env = "TESSERA_BACKEND", value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// The NVML library to load [default: libnvidia-ml.so.1 from the loader's path].
    #[arg(long = "nvml-library", global = true, env = "TESSERA_NVML_LIBRARY", value_name = "PATH")]
    pub nvml_library: Option<PathBuf>,
    /// Hardware of the simulated node, e.g. `8xH100-80GB,numa=2` (the default) or `2xA100-40GB+1xA30`.
    #[arg(long = "sim", global = true, env = "TESSERA_SIM", value_name = "SPEC")]
    pub sim: Option<String>,
    /// File holding the simulated node's state [default: $XDG_STATE_HOME/tessera/sim-node.json].
    #[arg(long = "sim-state", global = true, env = "TESSERA_SIM_STATE", value_name = "PATH")]
    pub sim_state: Option<PathBuf>,
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

/// How the job commands reach the daemon.
#[derive(Debug, Clone, Args)]
pub struct DaemonArgs {
    /// The daemon's Unix socket [default: $XDG_RUNTIME_DIR/tessera/tessera.sock, else /run/tessera/tessera.sock].
    #[arg(long, global = true, env = "TESSERA_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Reach the daemon over TCP instead, e.g. `10.0.0.5:7373` (needs a token).
    #[arg(long, global = true, env = "TESSERA_TCP", value_name = "ADDR")]
    pub tcp: Option<String>,
    /// Bearer token for TCP.
    #[arg(long, global = true, env = "TESSERA_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the bearer token for TCP.
    #[arg(long = "token-file", global = true, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
}

/// `tessera submit`: what a job needs.
#[derive(Debug, Clone, Args)]
pub struct SubmitArgs {
    /// GPU memory per rank, e.g. `10GiB`: the smallest profile with at least that much.
    #[arg(long = "gpu-mem", value_name = "SIZE")]
    pub gpu_mem: Option<String>,
    /// An explicit MIG profile per rank, e.g. `3g.40gb`.
    #[arg(long, value_name = "PROFILE")]
    pub profile: Option<String>,
    /// Whole GPUs per rank (the full-size profile), like Slurm's --gres=gpu:N: the rank's process
    /// sees all N; with --ranks, each rank gets its own N.
    #[arg(long, value_name = "N")]
    pub gpus: Option<u32>,
    /// Compute slices per rank: the smallest profile with at least that many.
    #[arg(long = "compute-slices", value_name = "N")]
    pub compute_slices: Option<u8>,
    /// Share an instance through MPS with this active-thread percentage, e.g. `25%`.
    #[arg(long, value_name = "PCT")]
    pub mps: Option<String>,
    /// With --mps: the pinned device-memory limit, e.g. `8GiB`.
    #[arg(long = "mps-mem", value_name = "SIZE", requires = "mps")]
    pub mps_mem: Option<String>,
    /// Share an instance by time-slicing.
    #[arg(long = "time-slice")]
    pub time_slice: bool,
    /// CPU cores, from the GPU's NUMA node.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub cpus: u32,
    /// Host memory, e.g. `16GiB` [default: 1GiB].
    #[arg(long, value_name = "SIZE")]
    pub mem: Option<String>,
    /// Do not bind CPUs and memory to the GPU's NUMA node.
    #[arg(long = "no-numa")]
    pub no_numa: bool,
    /// Tenant to charge [default: the one your user maps to].
    #[arg(long, value_name = "TENANT")]
    pub tenant: Option<String>,
    /// Higher runs first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i32,
    /// Kill the job after this long, e.g. `1h`.
    #[arg(long = "time-limit", value_name = "DURATION")]
    pub time_limit: Option<String>,
    /// How long the job is expected to run (lets it backfill), e.g. `20m`.
    #[arg(long, value_name = "DURATION")]
    pub estimate: Option<String>,
    /// Start N processes together, each with its own instance (RANK, WORLD_SIZE, LOCAL_RANK set).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub ranks: u32,
    /// With --ranks 2: one rank per GPU-internal NUMA node of one GPU (NVIDIA's localisation).
    #[arg(long = "gpu-numa-local")]
    pub gpu_numa_local: bool,
    /// Set NAME=VALUE in the job's environment.
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Pass this shell's whole environment (default: PATH, HOME, USER, LANG only).
    #[arg(long = "export-env")]
    pub export_env: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// NVML if `libnvidia-ml.so.1` loads and finds a GPU, otherwise the simulated node.
    Auto,
    /// Real GPUs through NVML; an error if NVML cannot be used.
    Nvml,
    /// The simulated node (state in a file).
    Sim,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned tables for people.
    Table,
    /// JSON for programs.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// MIG: GPUs, profiles, plans, layouts, and mig-parted-compatible apply/assert/export.
    #[command(subcommand)]
    Mig(MigCommand),
    /// Submit a job; prints its id.
    Submit(SubmitArgs),
    /// Your jobs (all jobs with --all, for admins).
    Jobs {
        #[arg(long)]
        all: bool,
        /// Only jobs in these states, e.g. `queued,running`.
        #[arg(long, value_name = "STATES")]
        state: Option<String>,
    },
    /// One job: state, reason, placement, exit, history.
    Job { id: u64 },
    /// A job's output.
    Logs {
        id: u64,
        #[arg(long, default_value_t = 0)]
        rank: u32,
        /// Standard error instead of standard output.
        #[arg(long)]
        stderr: bool,
        /// Keep printing until the job ends.
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Cancel a job: SIGTERM, then SIGKILL after the grace period.
    Cancel { id: u64 },
    /// Wait for a job to end; exit 0 if it succeeded.
    Wait {
        id: u64,
        /// Give up after this long, e.g. `10m`.
        #[arg(long, value_name = "DURATION")]
        timeout: Option<String>,
    },
    /// The live slice map: which job runs on which instance.
    Gpus,
    /// Admins: drain GPUs and change their MIG layouts through the daemon.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Run the daemon: owns the node's GPUs and runs submitted jobs (--sim / --backend pick the GPUs).
    Serve {
        /// Where jobs, logs and the database live [default: /var/lib/tessera as root, else $XDG_STATE_HOME/tessera/daemon].
        #[arg(long = "state-dir", value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Configuration file (TOML) [default: /etc/tessera/tessera.toml if it exists].
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
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

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Place no new work on a GPU (running jobs go on).
    Drain { gpu: u32 },
    /// Place work on a drained GPU again.
    Undrain { gpu: u32 },
    /// Change a GPU's MIG layout; busy instances are never touched (the daemon names the ones in
    /// the way).
    Layout {
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
    Apply {
        #[command(flatten)]
        config: ConfigArgs,
        /// Print the plan and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Exit 0 if the node matches a mig-parted config, 1 (listing the differences) if not.
    Assert {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Print the node's current MIG state as a mig-parted config.
    Export {
        /// Name of the config in the output.
        #[arg(short = 'c', long = "config-name", default_value = "current")]
        config_name: String,
    },
    /// Health of the GPUs and their instances from NVML Xid events, classified after NVIDIA's
    /// Xid catalog. Unhealthy GPUs and instances recover once they are healthy again.
    Health {
        /// Keep watching for this many seconds, printing every change (0: report what is pending).
        #[arg(long, default_value_t = 0.0, value_name = "SECONDS")]
        watch: f64,
        /// A fatal error clears after a successful probe this long after the last one.
        #[arg(long, default_value_t = 60.0, value_name = "SECONDS")]
        recovery_quiet: f64,
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

/// mig-parted's `-f` / `-c`, with its environment variables.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// mig-parted config file (`version: v1`); without it, the built-in named configs
    /// (`all-disabled`, `all-1g.10gb`, `all-balanced`, …) are used.
    #[arg(short = 'f', long = "config-file", env = "MIG_PARTED_CONFIG_FILE", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Name of the config in the file.
    #[arg(short = 'c', long = "selected-config", env = "MIG_PARTED_SELECTED_CONFIG", value_name = "NAME")]
    pub name: String,
}
