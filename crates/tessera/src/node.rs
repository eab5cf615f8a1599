//! Opening the node: which backend stands behind the commands, and where its state lives.
//!
//! Today that is the simulated node, Tessera's embedded default on machines without GPUs. Its
//! state lives in a file, so GPU instances outlive the command that made them, as on real GPUs.

use std::path::PathBuf;

use anyhow::Context as _;
use tessera_gpu::{MigBackend, NodeSpec, SimBackend};

use crate::cli::Global;

/// The backend the commands talk to, and one line saying what it is.
#[derive(Debug)]
pub struct Node {
    pub sim: SimBackend,
    pub description: String,
}

impl Node {
    pub fn backend(&self) -> &dyn MigBackend {
        &self.sim
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

pub fn open(global: &Global) -> anyhow::Result<Node> {
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
    Ok(Node { sim, description })
}
