//! Slurm's own programs (`scontrol`), the one place Tessera runs them: what the controller
//! knows of nodes and jobs, drains and resumes, and the restart commands that make Slurm take
//! up new GRES files. `SLURM_CONF` and `PATH` come from the environment, as for any Slurm client.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tessera_slurm::jobs::{SlurmJob, SlurmNode};
use tessera_slurm::record::parse_records;

/// Runs `scontrol`.
#[derive(Debug, Default)]
pub struct Slurm;

impl Slurm {
    fn scontrol(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("scontrol")
            .args(args)
            .output()
            .with_context(|| format!("running scontrol {} (is Slurm's client installed?)", args.join(" ")))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            bail!("scontrol {} failed ({}): {}", args.join(" "), out.status, stderr.trim());
        }
        Ok(stdout)
    }

    /// Slurm's version on this node, `(major, minor)`: `slurmd -V` (`slurm-wlm 22.05.8`), which
    /// needs no configuration, else `scontrol --version` (`slurm 22.05.8`).
    pub fn version(&self) -> anyhow::Result<(u32, u32)> {
        let text = match Command::new("slurmd").arg("-V").output() {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
            _ => self.scontrol(&["--version"])?,
        };
        let v = text.split_whitespace().nth(1).unwrap_or_default();
        let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
        match (parts.next().flatten(), parts.next().flatten()) {
            (Some(major), Some(minor)) => Ok((major, minor)),
            _ => bail!("slurmd -V said '{}': no Slurm version in it", text.trim()),
        }
    }

    /// The GRES types the cluster has: `GresTypes` of `scontrol show config`, or of slurm.conf
    /// itself (`SLURM_CONF`, else `/etc/slurm/slurm.conf`) while the controller is down.
    pub fn gres_types(&self) -> anyhow::Result<Vec<String>> {
        let text = match self.scontrol(&["show", "config"]) {
            Ok(t) => t,
            Err(e) => {
                let path = std::env::var("SLURM_CONF").unwrap_or_else(|_| "/etc/slurm/slurm.conf".to_owned());
                match std::fs::read_to_string(&path) {
                    Ok(t) => t,
                    Err(read) => {
                        eprintln!("tessera slurm: no GresTypes ({e}; {path}: {read}): writing no MPS records");
                        return Ok(Vec::new());
                    }
                }
            }
        };
        // `GresTypes = gpu,mps` (scontrol) and `GresTypes=gpu,mps` (slurm.conf) alike.
        Ok(text
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once('=')?;
                k.trim().eq_ignore_ascii_case("GresTypes").then(|| v.trim().to_owned())
            })
            .filter(|v| v != "(null)")
            .map(|v| v.split(',').map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()).collect())
            .unwrap_or_default())
    }

    /// One node, `None` when the controller does not know it.
    pub fn node(&self, name: &str) -> anyhow::Result<Option<SlurmNode>> {
        let out = Command::new("scontrol")
            .args(["show", "node", "-o", "-d", name])
            .output()
            .context("running scontrol show node (is Slurm's client installed?)")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            if stderr.contains("not found") || stdout.contains("not found") {
                return Ok(None);
            }
            bail!("scontrol show node {name} failed ({}): {}", out.status, stderr.trim());
        }
        let records = parse_records(&stdout)?;
        match records.first() {
            Some(r) => Ok(Some(SlurmNode::from_record(r)?)),
            None => Ok(None),
        }
    }

    /// Every node.
    pub fn nodes(&self) -> anyhow::Result<Vec<SlurmNode>> {
        let text = self.scontrol(&["show", "node", "-o", "-d"])?;
        if text.trim().starts_with("No nodes") {
            return Ok(Vec::new());
        }
        parse_records(&text)?.iter().map(|r| SlurmNode::from_record(r).map_err(Into::into)).collect()
    }

    /// Every job the controller still knows.
    pub fn jobs(&self) -> anyhow::Result<Vec<SlurmJob>> {
        let text = self.scontrol(&["show", "job", "-o", "-d"])?;
        if text.trim().starts_with("No jobs") {
            return Ok(Vec::new());
        }
        parse_records(&text)?.iter().map(|r| SlurmJob::from_record(r).map_err(Into::into)).collect()
    }

    /// Drains `node` for new jobs with `reason` (running jobs go on).
    pub fn drain(&self, node: &str, reason: &str) -> anyhow::Result<()> {
        self.scontrol(&["update", &format!("nodename={node}"), "state=drain", &format!("reason={reason}")]).map(|_| ())
    }

    /// Ends a drain of `node`.
    pub fn resume(&self, node: &str) -> anyhow::Result<()> {
        self.scontrol(&["update", &format!("nodename={node}"), "state=resume"]).map(|_| ())
    }

    /// Runs the configured restart commands in order; the first that fails stops the rest.
    pub fn restart(&self, commands: &[Vec<String>]) -> anyhow::Result<()> {
        for cmd in commands {
            let Some((program, args)) = cmd.split_first() else { continue };
            let out = Command::new(program)
                .args(args)
                .output()
                .with_context(|| format!("slurm.restart: running {}", cmd.join(" ")))?;
            if !out.status.success() {
                bail!(
                    "slurm.restart: {} failed ({}): {}",
                    cmd.join(" "),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        Ok(())
    }

    /// Waits until `node` answers the controller again (after slurmd restarted) and returns it.
    pub fn wait_responding(&self, node: &str, timeout: Duration) -> anyhow::Result<SlurmNode> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("not known to the controller");
        loop {
            // The controller may itself be restarting: its errors are retried until the deadline.
            match self.node(node) {
                Ok(Some(n)) if responding(&n) => return Ok(n),
                Ok(Some(n)) => last = format!("state {}", n.state),
                Ok(None) => {}
                Err(e) => last = e.to_string(),
            }
            if Instant::now() >= deadline {
                bail!("node {node} did not answer the controller within {}s ({last})", timeout.as_secs());
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// Whether the controller hears from the node's slurmd and took its registration: no `*`
/// (not responding), not `UNKNOWN` (not registered since the controller started), not `INVAL`.
fn responding(n: &SlurmNode) -> bool {
    let s = n.state.to_ascii_uppercase();
    !(s.contains('*') || s.contains("NOT_RESPONDING") || s.starts_with("UNKNOWN") || s.contains("INVAL"))
}
