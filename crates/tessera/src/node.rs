//! Opening the node: which backend stands behind the commands, and where its state lives.
//!
//! `--backend auto` (the default) uses NVML when `libnvidia-ml.so.1` loads and finds GPUs and
//! the simulated node otherwise, and says which in one line on stderr. The simulated node is
//! Tessera's embedded default on machines without GPUs; its state lives in a file, so GPU
//! instances outlive the command that made them, as on real GPUs.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use tessera_gpu::nvml::NvmlBackend;
use tessera_gpu::{BackendError, MigBackend, NodeSpec, SimBackend};

use crate::cli::{BackendChoice, Global};

/// The backend the commands talk to.
#[derive(Debug)]
pub enum Backend {
    Sim(Box<SimBackend>),
    Nvml(Box<NvmlBackend>),
}

/// The backend, and one line saying what it is.
#[derive(Debug)]
pub struct Node {
    pub backend: Backend,
    pub description: String,
}

impl Node {
    pub fn backend(&self) -> &dyn MigBackend {
        match &self.backend {
            Backend::Sim(s) => s.as_ref(),
            Backend::Nvml(n) => n.as_ref(),
        }
    }

    /// The simulated node, for commands that only make sense there.
    pub fn sim(&self, what: &str) -> anyhow::Result<&SimBackend> {
        match &self.backend {
            Backend::Sim(s) => Ok(s.as_ref()),
            Backend::Nvml(_) => {
                bail!("{what} works on the simulated node only (use --backend sim); this node is real GPUs")
            }
        }
    }
}

/// `$TESSERA_SIM_STATE`, else `$XDG_STATE_HOME/tessera/sim-node.json`, else
/// `~/.local/state/tessera/sim-node.json`.
pub fn default_state_path() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local").join("state")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("tessera").join("sim-node.json")
}

fn open_sim(global: &Global) -> anyhow::Result<(SimBackend, String)> {
    let spec = match &global.sim {
        Some(text) => Some(NodeSpec::parse(text).with_context(|| format!("--sim '{text}'"))?),
        None => None,
    };
    let path = global.sim_state.clone().unwrap_or_else(default_state_path);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let sim = SimBackend::open(&path, spec.as_ref())?;
    let description = format!("simulated node {} (state {})", sim.spec(), path.display());
    Ok((sim, description))
}

fn nvml_description(n: &NvmlBackend) -> String {
    let gpus = n.devices().map(|d| d.len()).unwrap_or(0);
    format!("NVML, driver {}, {gpus} GPU(s)", n.driver_version())
}

/// Say which backend is in use, in one line on stderr (stdout stays clean for `-o json`).
fn announce(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "tessera: using {line}");
}

pub fn open(global: &Global) -> anyhow::Result<Node> {
    let library = global.nvml_library.as_deref();
    let choice =
        if global.sim.is_some() && global.backend == BackendChoice::Auto { BackendChoice::Sim } else { global.backend };
    match choice {
        BackendChoice::Sim => {
            let (sim, description) = open_sim(global)?;
            Ok(Node { backend: Backend::Sim(Box::new(sim)), description })
        }
        BackendChoice::Nvml => {
            if global.sim.is_some() {
                bail!("--sim describes the simulated node; it cannot be combined with --backend nvml");
            }
            let n = NvmlBackend::open(library).context("--backend nvml")?;
            let description = nvml_description(&n);
            announce(&description);
            Ok(Node { backend: Backend::Nvml(Box::new(n)), description })
        }
        BackendChoice::Auto => {
            // Fall back to the simulated node only when there is no NVML at all or no GPU;
            // a driver that loads but fails is an error worth seeing, not a reason to pretend.
            let why_not = match NvmlBackend::open(library) {
                Ok(n) => match n.devices() {
                    Ok(d) if !d.is_empty() => {
                        let description = nvml_description(&n);
                        announce(&description);
                        return Ok(Node { backend: Backend::Nvml(Box::new(n)), description });
                    }
                    Ok(_) => "NVML found no GPU".to_string(),
                    Err(e) => return Err(anyhow::Error::new(e).context("NVML loaded but cannot list the GPUs")),
                },
                Err(BackendError::LibraryNotFound { library, .. }) => format!("no NVML: {library} cannot be loaded"),
                Err(e) => return Err(anyhow::Error::new(e).context("NVML")),
            };
            let (sim, description) = open_sim(global)?;
            announce(&format!("{description}; {why_not}"));
            Ok(Node { backend: Backend::Sim(Box::new(sim)), description })
        }
    }
}
