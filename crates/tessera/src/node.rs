//! Opening the node for the CLI: the command line's `--backend`, `--nvml-library`, `--sim` and
//! `--sim-state` handed to [`tessera_gpu::open`], which makes the choice (the daemon uses the
//! same function), and when to say on stderr which backend is in use.
//!
//! `--backend auto` (the default) uses NVML when `libnvidia-ml.so.1` loads and finds GPUs and
//! the simulated node otherwise. The simulated node is Tessera's embedded default on machines
//! without GPUs; its state lives in a file ([`default_state_path`], the same for `tessera mig`
//! and `tessera serve`), so GPU instances outlive the command that made them, as on real GPUs.
//!
//! The line "using …" goes to stderr with `-v`, or when NVML was asked for and Tessera falls
//! back to the simulated node: an `--nvml-library` that does not load, or an NVML that loads but
//! finds no GPU. A machine without NVIDIA's driver is the ordinary case and says nothing.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};
use tessera_gpu::open::{self, Fallback, OpenError, OpenOptions};
use tessera_gpu::{BackendChoice, MigBackend, SimBackend};

use crate::cli::Global;

/// The backend the commands talk to, and one line saying what it is.
#[derive(Debug)]
pub struct Node {
    pub node: tessera_gpu::Node,
    /// `NVML, driver …, N GPU(s)` or `simulated node … (state …)`.
    pub description: String,
}

impl Node {
    pub fn backend(&self) -> &dyn MigBackend {
        self.node.backend()
    }

    /// The simulated node, for commands that only make sense there.
    pub fn sim(&self, what: &str) -> anyhow::Result<&SimBackend> {
        match self.node.sim() {
            Some(s) => Ok(s),
            None => bail!("{what} works on the simulated node only (use --backend sim); this node is real GPUs"),
        }
    }

    /// The simulated node's state file, for a simulated node.
    pub fn sim_state(&self) -> Option<&Path> {
        self.node.sim().and_then(SimBackend::path)
    }
}

/// The simulated node's state file when neither `--sim-state` nor `$TESSERA_SIM_STATE` says:
/// `$XDG_STATE_HOME/tessera/sim-node.json` where `XDG_STATE_HOME` is set, else
/// `/var/lib/tessera/sim-node.json` for root (beside the daemon's state) and
/// `~/.local/state/tessera/sim-node.json` for everyone else. `tessera mig` and `tessera serve`
/// use the same file, so they drive one node.
pub fn default_state_path() -> PathBuf {
    let xdg = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty());
    if xdg.is_none() && tessera_host::effective_uid() == 0 {
        return PathBuf::from("/var/lib/tessera/sim-node.json");
    }
    state_home().join("tessera").join("sim-node.json")
}

/// `$XDG_STATE_HOME`, else `~/.local/state` (the temporary directory without a home).
pub fn state_home() -> PathBuf {
    std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local").join("state")))
        .unwrap_or_else(std::env::temp_dir)
}

/// The options the command line gives.
pub fn options(global: &Global) -> OpenOptions {
    OpenOptions {
        choice: global.backend,
        nvml_library: global.nvml_library.clone(),
        sim_spec: global.sim.clone(),
        sim_state: global.sim_state.clone().unwrap_or_else(default_state_path),
    }
}

/// Say which backend is in use, in one line on stderr (stdout stays clean for `-o json`).
fn announce(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "tessera: using {line}");
}

/// Whether to say which backend is in use (the rule in the module header).
fn worth_announcing(opened: &open::Opened, global: &Global) -> bool {
    global.verbose
        || match &opened.fallback {
            Some(Fallback::NoGpu) => true,
            Some(Fallback::NoLibrary { .. }) => global.nvml_library.is_some(),
            None => false,
        }
}

/// An [`OpenError`] in the command line's terms.
fn cli_error(e: OpenError, choice: BackendChoice) -> anyhow::Error {
    match e {
        OpenError::SpecWithNvml { .. } => {
            anyhow!("--sim describes the simulated node; it cannot be combined with --backend nvml")
        }
        OpenError::Spec { spec, source } => anyhow::Error::new(source).context(format!("--sim '{spec}'")),
        OpenError::Sim(e) => anyhow::Error::new(e),
        OpenError::Nvml { source, .. } if choice == BackendChoice::Nvml => {
            anyhow::Error::new(source).context("--backend nvml")
        }
        OpenError::Nvml { source, .. } => anyhow::Error::new(source).context("NVML"),
        OpenError::NvmlCannotList { source, .. } => {
            anyhow::Error::new(source).context("NVML loaded but cannot list the GPUs")
        }
    }
}

pub fn open(global: &Global) -> anyhow::Result<Node> {
    let opts = options(global);
    let opened = open::open(&opts).map_err(|e| cli_error(e, opts.choice))?;
    if worth_announcing(&opened, global) {
        announce(&opened.summary());
    }
    Ok(Node { node: opened.node, description: opened.description })
}
