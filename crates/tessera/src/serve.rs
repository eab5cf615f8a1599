//! `tessera serve`: the command line and the configuration file made into the daemon's
//! options, the log set up (`--log-format`, `--log-level`), then
//! [`tessera_daemon::daemon::run`]. `--check-config` says what the daemon would do and starts
//! nothing. A configuration error exits 2 (whether checking or starting), with the file, line
//! and column.

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::Serialize;
use tessera_daemon::config::{Config, ConfigError, Loaded};
use tessera_daemon::daemon::FrontDoor;
use tessera_gpu::BackendChoice;
use tessera_gpu::open::OpenOptions;

use crate::cli::{Global, LogFormat, LogLevel, Output, ServeArgs};
use crate::units::format_duration_ms;
use tessera_daemon::client::serve_socket;

/// The configuration file read when `--config` is not given, if it exists.
pub const SYSTEM_CONFIG: &str = "/etc/tessera/tessera.toml";

/// `tessera serve`.
pub fn serve(g: &Global, a: ServeArgs) -> anyhow::Result<()> {
    serve_with(g, a, |_| Ok(None))
}

/// `tessera serve` with a front door beside the API (`tessera kube node-agent`'s), made from
/// the configuration by `door`; its error is a configuration error (exit 2), checked by
/// `--check-config` too.
pub fn serve_with(
    g: &Global,
    a: ServeArgs,
    door: impl FnOnce(&Config) -> anyhow::Result<Option<FrontDoor>>,
) -> anyhow::Result<()> {
    // A flag the daemon cannot use, or a configuration it cannot use: exit 2, like a command
    // line clap refuses (and the same whether checking or starting).
    let usage = |e: &dyn std::fmt::Display| -> ! {
        let _ = writeln!(std::io::stderr().lock(), "error: {e}");
        std::process::exit(2);
    };
    if let Err(e) = refuse_client_flags(g, &a) {
        usage(&e);
    }
    let (loaded, config_file) = match load(a.config.as_deref()) {
        Ok(l) => l,
        Err(e) => usage(&e),
    };
    let state_dir = a.state_dir.clone().unwrap_or_else(|| {
        if tessera_host::effective_uid() == 0 {
            PathBuf::from("/var/lib/tessera")
        } else {
            crate::node::default_state_path().parent().map_or_else(|| PathBuf::from("."), |p| p.join("daemon"))
        }
    });
    let backend = backend_options(g, &loaded.config);
    let socket = g.daemon.socket.clone().or_else(|| loaded.config.server.socket.clone()).unwrap_or_else(serve_socket);
    let door = match door(&loaded.config) {
        Ok(d) => d,
        Err(e) => usage(&format!("{e:#}")),
    };
    if a.check_config {
        let plan = Plan::new(config_file.as_deref(), &loaded, &state_dir, &socket, &backend);
        return match g.output {
            Output::Json => {
                println!("{}", serde_json::to_string_pretty(&plan)?);
                Ok(())
            }
            Output::Table | Output::Csv => {
                print!("{}", plan.render());
                Ok(())
            }
        };
    }
    init_log(a.log_format, a.log_level)?;
    let exe = std::env::current_exe().context("locating the tessera binary for the job supervisor")?;
    let Loaded { config, tokens } = loaded;
    let options = tessera_daemon::daemon::ServeOptions {
        state_dir,
        socket,
        config,
        config_file,
        tokens,
        backend,
        shim: tessera_daemon::engine::ShimCommand { exe, args: vec!["shim".into()] },
        init: a.init,
    };
    let ran = tessera_daemon::daemon::run_with(options, door);
    if let Err(e) = ran {
        // Said in the log's own form (a JSON line with --log-format json), then exit 1.
        tracing::error!("tessera serve stopped: {e}");
        std::process::exit(1);
    }
    Ok(())
}

/// The client's flags mean nothing to the daemon: refused, saying what to use instead.
fn refuse_client_flags(g: &Global, a: &ServeArgs) -> anyhow::Result<()> {
    if g.daemon.tcp.is_some() {
        bail!(
            "--tcp (or TESSERA_TCP) is how a client reaches a daemon over TCP; `tessera serve` listens on TCP \
             where its configuration says: server.tcp = \"IP:PORT\" with server.token_file (docs/config.md)"
        );
    }
    if g.daemon.token_file.is_some() {
        bail!(
            "--token-file is a client's token; `tessera serve` reads the tokens of every TCP user from its \
             configuration's server.token_file (docs/config.md)"
        );
    }
    if g.output != Output::Table && !a.check_config {
        bail!("-o is for `tessera serve --check-config`; the daemon's log takes --log-format text|json");
    }
    Ok(())
}

/// The configuration: `--config FILE`, else [`SYSTEM_CONFIG`] where it exists, else the
/// defaults; and the file it came from.
fn load(config: Option<&Path>) -> Result<(Loaded, Option<PathBuf>), ConfigError> {
    let file = match config {
        Some(p) => Some(p.to_path_buf()),
        None => Some(PathBuf::from(SYSTEM_CONFIG)).filter(|p| p.exists()),
    };
    match &file {
        Some(p) => Ok((Config::load(p)?, file)),
        None => Ok((Loaded::default(), None)),
    }
}

/// The same backend choice as every other command; the config file fills in what the command
/// line leaves open, and `tessera_gpu::open` applies the rules (a simulated-node spec without a
/// choice means the simulated node). The simulated node's state file is `tessera mig`'s
/// (`--sim-state`, else [`crate::node::default_state_path`]), never one of the daemon's own: the
/// layouts `tessera mig apply` made are the daemon's.
fn backend_options(g: &Global, cfg: &Config) -> OpenOptions {
    let mut backend = crate::node::options(g);
    if g.sim.is_none() {
        backend.sim_spec = cfg.node.sim.clone();
    }
    if g.backend == BackendChoice::Auto
        && let Some(choice) = cfg.backend_choice()
    {
        backend.choice = choice;
    }
    backend
}

/// The log on stderr: text (no colours unless stderr is a terminal; under journald each line
/// starts with its syslog priority and has no time stamp, which journald adds) or JSON lines.
pub(crate) fn init_log(format: LogFormat, level: LogLevel) -> anyhow::Result<()> {
    use tracing_subscriber::fmt;
    let level = match level {
        LogLevel::Error => tracing::Level::ERROR,
        LogLevel::Warn => tracing::Level::WARN,
        LogLevel::Info => tracing::Level::INFO,
        LogLevel::Debug => tracing::Level::DEBUG,
        LogLevel::Trace => tracing::Level::TRACE,
    };
    let builder = fmt().with_writer(std::io::stderr).with_max_level(level).with_target(false);
    // Text lines are the sentence alone (it says everything); JSON adds the event's fields
    // (`job`, `user`, `gpu`, ...) for collectors to filter on.
    let sentence = fmt::format::debug_fn(
        |w, field, value| {
            if field.name() == "message" { write!(w, "{value:?}") } else { Ok(()) }
        },
    );
    let done = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).with_span_list(false).try_init(),
        LogFormat::Text if stderr_is_journal() => builder
            .fmt_fields(sentence)
            .event_format(journald::Prefixed(fmt::format().without_time().with_target(false).with_ansi(false)))
            .try_init(),
        LogFormat::Text => builder.fmt_fields(sentence).with_ansi(std::io::stderr().is_terminal()).try_init(),
    };
    done.map_err(|e| anyhow::anyhow!("setting up the log: {e}"))
}

/// Whether stderr is connected to journald: systemd says so in `JOURNAL_STREAM` (`DEV:INODE`
/// of the stream it connected).
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd as _;
    use std::os::unix::fs::MetadataExt as _;
    let Some(stream) = std::env::var("JOURNAL_STREAM").ok() else { return false };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else { return false };
    let Ok(meta) = std::fs::File::from(fd).metadata() else { return false };
    stream == format!("{}:{}", meta.dev(), meta.ino())
}

mod journald {
    //! Text lines that journald files under their level: `<3>` error, `<4>` warning, `<6>`
    //! info, `<7>` debug (sd-daemon(3)'s prefixes).

    use tracing::{Event, Level, Subscriber};
    use tracing_subscriber::fmt::format::Writer;
    use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
    use tracing_subscriber::registry::LookupSpan;

    #[derive(Debug)]
    pub struct Prefixed<F>(pub F);

    impl<S, N, F> FormatEvent<S, N> for Prefixed<F>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
        F: FormatEvent<S, N>,
    {
        fn format_event(
            &self,
            ctx: &FmtContext<'_, S, N>,
            mut writer: Writer<'_>,
            event: &Event<'_>,
        ) -> std::fmt::Result {
            let priority = match *event.metadata().level() {
                Level::ERROR => 3,
                Level::WARN => 4,
                Level::INFO => 6,
                _ => 7,
            };
            write!(writer, "<{priority}>")?;
            self.0.format_event(ctx, writer, event)
        }
    }
}

/// What the daemon would do with this configuration (`--check-config`).
#[derive(Debug, Serialize)]
struct Plan {
    /// The file read; `None`: no file, the defaults.
    config_file: Option<PathBuf>,
    state_dir: PathBuf,
    database: PathBuf,
    output_dir: PathBuf,
    socket: PathBuf,
    /// `None`: no TCP listener.
    tcp: Option<TcpPlan>,
    backend: BackendPlan,
    tenants: Vec<TenantPlan>,
    /// Users who may change layouts and drain GPUs, besides root.
    admins: Vec<String>,
    config: Config,
}

#[derive(Debug, Serialize)]
struct TcpPlan {
    listen: String,
    token_file: Option<PathBuf>,
    tokens: usize,
    token_users: Vec<String>,
    /// [`tessera_daemon::config::Tokens::summary`], for the text form.
    #[serde(skip)]
    summary: String,
}

#[derive(Debug, Serialize)]
struct BackendPlan {
    choice: String,
    nvml_library: Option<PathBuf>,
    sim_spec: Option<String>,
    sim_state: PathBuf,
}

#[derive(Debug, Serialize)]
struct TenantPlan {
    name: String,
    weight: f64,
    compute_slices: Option<u32>,
    memory_slices: Option<u32>,
    /// Users mapped to it (`default`: everyone not mapped elsewhere).
    users: Vec<String>,
}

impl Plan {
    fn new(
        config_file: Option<&Path>,
        loaded: &Loaded,
        state_dir: &Path,
        socket: &Path,
        backend: &OpenOptions,
    ) -> Plan {
        let c = &loaded.config;
        let mut tenants: Vec<TenantPlan> = c
            .tenant_names()
            .into_iter()
            .map(|name| {
                let t = c.tenants.iter().find(|t| t.name == name);
                TenantPlan {
                    name: name.to_string(),
                    weight: t.map_or(1.0, |t| t.weight),
                    compute_slices: t.and_then(|t| t.quota).map(|q| q.compute_slices),
                    memory_slices: t.and_then(|t| t.quota).map(|q| q.memory_slices),
                    users: c.users.iter().filter(|(_, t)| t.as_str() == name).map(|(u, _)| u.clone()).collect(),
                }
            })
            .collect();
        tenants.sort_by(|a, b| (a.name != "default", &a.name).cmp(&(b.name != "default", &b.name)));
        Plan {
            config_file: config_file.map(Path::to_path_buf),
            state_dir: state_dir.to_path_buf(),
            database: state_dir.join(tessera_store::DB_FILE),
            output_dir: c.jobs.output_dir.clone().unwrap_or_else(|| state_dir.join("output")),
            socket: socket.to_path_buf(),
            tcp: c.server.tcp.as_ref().map(|listen| TcpPlan {
                listen: listen.clone(),
                token_file: c.server.token_file.clone(),
                tokens: loaded.tokens.len(),
                token_users: loaded.tokens.users().into_iter().map(str::to_string).collect(),
                summary: loaded.tokens.summary(),
            }),
            backend: BackendPlan {
                choice: backend.choice.to_string(),
                nvml_library: backend.nvml_library.clone(),
                sim_spec: backend.sim_spec.clone(),
                sim_state: backend.sim_state.clone(),
            },
            tenants,
            admins: c.admins.clone(),
            config: c.clone(),
        }
    }

    /// The plan for people: one line per subject.
    fn render(&self) -> String {
        let c = &self.config;
        let ms = format_duration_ms;
        let on = |b: bool| if b { "on" } else { "off" };
        let mut lines: Vec<(&str, String)> = Vec::new();
        lines.push((
            "config",
            match &self.config_file {
                Some(f) => format!("{} (valid)", f.display()),
                None => format!("none ({SYSTEM_CONFIG} does not exist): the defaults"),
            },
        ));
        lines.push((
            "state",
            format!(
                "{} (database {}, job output in {})",
                self.state_dir.display(),
                self.database.display(),
                self.output_dir.display()
            ),
        ));
        lines.push(("socket", self.socket.display().to_string()));
        lines.push((
            "tcp",
            match &self.tcp {
                Some(t) => format!(
                    "{}, {} from {}",
                    t.listen,
                    t.summary,
                    t.token_file.as_deref().map_or_else(|| "-".into(), |p| p.display().to_string())
                ),
                None => "off (no server.tcp)".into(),
            },
        ));
        let sim = format!(
            "the simulated node {} (state {})",
            self.backend.sim_spec.as_deref().unwrap_or("of the state file, else the default node"),
            self.backend.sim_state.display()
        );
        let nvml = self
            .backend
            .nvml_library
            .as_deref()
            .map_or_else(|| tessera_gpu::nvml::DEFAULT_LIBRARY.to_string(), |p| p.display().to_string());
        lines.push((
            "backend",
            match (self.backend.choice.as_str(), &self.backend.sim_spec) {
                ("sim", _) | ("auto", Some(_)) => sim,
                ("nvml", _) => format!("NVML ({nvml}); the daemon stops if it cannot be used"),
                _ => format!("NVML when {nvml} loads and finds GPUs, else {sim}"),
            },
        ));
        lines.push((
            "isolation",
            match c.jobs.isolation {
                tessera_daemon::config::Isolation::Auto => {
                    format!("per-job cgroups under {}/ where the machine has them", c.jobs.cgroup_parent)
                }
                tessera_daemon::config::Isolation::Required => {
                    format!(
                        "per-job cgroups under {}/, required (a job that cannot be isolated does not start)",
                        c.jobs.cgroup_parent
                    )
                }
                tessera_daemon::config::Isolation::Off => "off: jobs get no cgroups".into(),
            },
        ));
        let tenants: Vec<String> = self
            .tenants
            .iter()
            .map(|t| {
                let mut s = format!("{} (weight {}", t.name, t.weight);
                if let (Some(cs), Some(ms)) = (t.compute_slices, t.memory_slices) {
                    s.push_str(&format!(", quota {cs} compute / {ms} memory slices"));
                }
                match (t.name.as_str(), t.users.is_empty()) {
                    ("default", _) => s.push_str(", everyone not mapped elsewhere"),
                    (_, true) => s.push_str(", no users mapped"),
                    _ => s.push_str(&format!(", users {}", t.users.join(", "))),
                }
                s + ")"
            })
            .collect();
        lines.push(("tenants", tenants.join("; ")));
        lines.push((
            "admins",
            std::iter::once("root".to_string()).chain(self.admins.iter().cloned()).collect::<Vec<_>>().join(", "),
        ));
        let s = &c.scheduler;
        lines.push((
            "scheduler",
            format!(
                "a round every {}; repartition {}, backfill {}, preemption {}, MIG mode switching {}; \
                 {} jobs per time-sliced instance; {} between SIGTERM and SIGKILL",
                ms(s.tick_ms),
                on(s.repartition),
                on(s.backfill),
                on(s.preemption),
                on(s.mig_mode_switching),
                s.time_slice_replicas,
                ms(s.kill_grace_ms)
            ),
        ));
        let j = &c.jobs;
        lines.push((
            "jobs",
            format!(
                "output up to {} MiB per run; priority up to {} for non-admins; preempted with {} then SIGKILL \
                 after {}; {} bytes of arguments and environment",
                j.output_limit_mib,
                j.max_priority,
                j.preempt_signal,
                ms(j.preempt_grace_ms),
                j.max_exec_bytes
            ),
        ));
        let h = &c.health;
        lines.push((
            "health",
            format!(
                "every GPU probed every {}; faults that clear on their own after {} quiet; jobs on a failed GPU \
                 stopped with {} grace",
                ms(h.probe_interval_ms),
                ms(h.recovery_quiet_ms),
                ms(h.stop_grace_ms)
            ),
        ));
        let l = &c.server.limits;
        lines.push((
            "limits",
            format!(
                "{} connections per peer, {} in all; timeouts: head {}, idle {}, body {}, write {}; sizes: head {} \
                 bytes, URI {} bytes, body {} bytes; {} to finish at shutdown",
                l.max_connections_per_peer,
                l.max_connections,
                ms(l.header_timeout_ms),
                ms(l.idle_timeout_ms),
                ms(l.body_timeout_ms),
                ms(l.write_timeout_ms),
                l.max_header_bytes,
                l.max_uri_bytes,
                l.max_body_bytes,
                ms(l.shutdown_grace_ms)
            ),
        ));
        let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
        let mut out = String::new();
        for (k, v) in lines {
            out.push_str(&format!("{:<width$} {v}\n", format!("{k}:")));
        }
        out.push_str("valid; nothing was started (--check-config)\n");
        out
    }
}
