//! `tessera slurm`: the Slurm front door (docs/slurm.md).
//!
//! Slurm keeps MIG slices as GRES it reads from gres.conf; Tessera's daemon owns the GPUs. These
//! commands keep the two in step: `gres`/`sync` write the node's GRES from the daemon's layout
//! (in the order slurmd numbers them, keeping a running job's index), `prolog`/`epilog`/
//! `task-prolog` turn a job's GRES indices into held slices, MIG UUIDs, NUMA-local CPUs and MPS,
//! and `agent` repartitions idle capacity for pending jobs with the same pure decision the
//! Kubernetes controller uses. Every command is a client of `tessera serve` over its socket; the
//! parsing, the GRES order and the job selection are `tessera_slurm` (pure); this module runs the
//! Slurm programs and writes the files.

mod agent;
mod cores;
mod ctl;
mod job;
mod records;
mod sync;

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tessera_daemon::client::Client;
use tessera_daemon::config::{Config, SlurmSection};

use crate::cli::{Global, SlurmCommand, SlurmConfigArg};

/// The names under which Slurm runs the binary (symlinks): `Prolog=`, `Epilog=` and
/// `TaskProlog=` take a program without arguments.
const INVOKED_AS: [(&str, &str); 3] = [
    ("tessera-slurm-prolog", "prolog"),
    ("tessera-slurm-epilog", "epilog"),
    ("tessera-slurm-task-prolog", "task-prolog"),
];

/// The `tessera slurm` subcommand argv[0] names, if the binary was invoked through one of its
/// symlinks.
pub fn invoked_as() -> Option<&'static str> {
    let arg0 = std::env::args_os().next()?;
    let name = Path::new(&arg0).file_name()?.to_str()?.to_owned();
    INVOKED_AS.iter().find(|(n, _)| *n == name).map(|(_, sub)| *sub)
}

/// What every Slurm command works with.
pub(crate) struct Ctx {
    pub cfg: SlurmSection,
    /// This node's name in Slurm.
    pub node: String,
    pub client: Client,
}

impl Ctx {
    fn new(g: &Global, arg: &SlurmConfigArg) -> anyhow::Result<Ctx> {
        let path = arg.config.clone().or_else(|| {
            let system = PathBuf::from(crate::serve::SYSTEM_CONFIG);
            system.exists().then_some(system)
        });
        let cfg = match path {
            Some(p) => Config::load(&p)?.config.slurm,
            None => SlurmSection::default(),
        };
        let node = if cfg.node_name.is_empty() { short_hostname()? } else { cfg.node_name.clone() };
        let client = crate::jobs::client(&g.daemon)?;
        Ok(Ctx { cfg, node, client })
    }

    /// `dev_root` as gres.conf paths start: empty for `/`.
    fn dev_root(&self) -> String {
        let root = self.cfg.dev_root.display().to_string();
        root.trim_end_matches('/').to_owned()
    }

    /// The GRES index map's file.
    fn map_path(&self) -> PathBuf {
        self.cfg.state_dir.join("gres-map.json")
    }

    /// The marker of a sync that wrote the files and has not yet seen Slurm take them up
    /// (present from before the first file is written until the restart is confirmed).
    fn restart_pending_path(&self) -> PathBuf {
        self.cfg.state_dir.join("restart-pending")
    }
}

/// The host name up to its first dot (slurmd's default node name).
fn short_hostname() -> anyhow::Result<String> {
    let full = tessera_host::hostname().context("reading the host name")?;
    let name = full.split('.').next().unwrap_or_default().to_owned();
    anyhow::ensure!(!name.is_empty(), "the host name is empty: set slurm.node_name");
    Ok(name)
}

/// `tessera slurm …`.
pub fn run(g: &Global, cmd: SlurmCommand) -> anyhow::Result<()> {
    match cmd {
        SlurmCommand::Gres(a) => {
            let ctx = Ctx::new(g, &a.config)?;
            sync::print(&ctx, a.format, g.output)
        }
        SlurmCommand::Sync(a) => {
            let ctx = Ctx::new(g, &a)?;
            let slurm = ctl::Slurm;
            let outcome = sync::sync(&ctx, &slurm, sync::Drain::Own)?;
            sync::report(&outcome, g.output);
            Ok(())
        }
        SlurmCommand::Prolog(a) => job::prolog(&Ctx::new(g, &a)?),
        SlurmCommand::Epilog(a) => job::epilog(&Ctx::new(g, &a)?),
        SlurmCommand::TaskProlog(a) => job::task_prolog(&Ctx::new(g, &a)?),
        SlurmCommand::Agent(a) => agent::run(&Ctx::new(g, &a.config)?, a.once),
    }
}
