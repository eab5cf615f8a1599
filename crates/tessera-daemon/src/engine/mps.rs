//! MPS control daemons: one per shared instance, run as the one user whose jobs use it (the
//! scheduler never puts two users' MPS jobs on one instance), with its own pipe and log
//! directories under the runtime directory; stopped once no live allocation uses it; recorded
//! in the store, so a restarted daemon adopts a running one instead of starting another.

use std::path::PathBuf;

use tessera_exec::RunAs;
use tessera_store::MpsServer;

use super::Engine;

impl Engine {
    /// The pipe and log directories of `device`'s control daemon for `user`, starting it (or
    /// replacing an idle one of another user) when needed.
    pub(crate) fn ensure_mps(&mut self, device: &str, user: &tessera_host::User) -> Result<(PathBuf, PathBuf), String> {
        let base = self.paths.runtime_dir.join("mps").join(device);
        let (pipe, log) = (base.join("pipe"), base.join("log"));
        let known = self.store.mps_servers().map_err(|e| e.to_string())?.into_iter().find(|m| m.mig_uuid == device);
        if let Some(m) = known {
            let running = self.mps.is_running(std::path::Path::new(&m.pipe_dir));
            if m.uid == user.uid && running {
                return Ok((PathBuf::from(m.pipe_dir), PathBuf::from(m.log_dir)));
            }
            if m.uid != user.uid && running {
                if self.mps_clients(device) > 0 {
                    return Err(format!("{device} serves MPS jobs of uid {} (one user at a time)", m.uid));
                }
                let _ = self.mps.quit(std::path::Path::new(&m.pipe_dir));
            }
            let _ = self.store.remove_mps_server(device);
        }
        if let Some(parent) = base.parent() {
            shared_dir(parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        self.mps.start(device, &pipe, &log, &RunAs::from(user)).map_err(|e| e.to_string())?;
        let record = MpsServer {
            mig_uuid: device.to_owned(),
            uid: user.uid,
            gid: user.gid,
            pipe_dir: pipe.display().to_string(),
            log_dir: log.display().to_string(),
            started_ms: tessera_host::now_ms(),
        };
        self.store.add_mps_server(&record).map_err(|e| e.to_string())?;
        Ok((pipe, log))
    }

    /// Live MPS allocations on `device` (its MIG UUID, or the GPU's UUID with MIG off).
    fn mps_clients(&self, device: &str) -> usize {
        self.store
            .live_allocations()
            .map(|all| {
                all.iter()
                    .filter(|a| !a.allocation.exclusive)
                    .filter(|a| a.allocation.mig_uuid.as_deref().unwrap_or(&a.allocation.gpu_uuid) == device)
                    .count()
            })
            .unwrap_or(usize::MAX)
    }

    /// Stops every control daemon whose instance has no clients left; returns whether any was.
    pub(crate) fn stop_idle_mps(&mut self) -> bool {
        let Ok(servers) = self.store.mps_servers() else { return false };
        let mut stopped = false;
        for m in servers {
            if self.mps_clients(&m.mig_uuid) == 0 {
                let _ = self.mps.quit(std::path::Path::new(&m.pipe_dir));
                let _ = self.store.remove_mps_server(&m.mig_uuid);
                stopped = true;
            }
        }
        stopped
    }

    /// After a restart: control daemons still up are adopted; records of gone ones dropped.
    pub(crate) fn adopt_mps(&mut self) -> Result<Vec<String>, super::EngineError> {
        let mut notes = Vec::new();
        for m in self.store.mps_servers()? {
            if self.mps.is_running(std::path::Path::new(&m.pipe_dir)) {
                notes.push(format!("MPS control daemon of {} (uid {}): adopted", m.mig_uuid, m.uid));
            } else {
                self.store.remove_mps_server(&m.mig_uuid)?;
                notes.push(format!("MPS control daemon of {} (uid {}): gone; forgotten", m.mig_uuid, m.uid));
            }
        }
        Ok(notes)
    }
}

/// A directory job users may pass through but not list or change (0711).
fn shared_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new().recursive(true).mode(0o711).create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
}
