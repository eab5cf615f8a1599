//! The CDI specification file for the advertised devices: rewritten atomically whenever the
//! spec changes (a runtime reading the directory sees the old file or the new one, never a torn
//! one), removed when the plugin stops.

use std::path::{Path, PathBuf};

use tessera_gpu::statefile::write_atomic;
use tessera_kube_core::{CDI_KIND, Inventory, cdi_spec};

use crate::error::PluginError;

/// The CDI spec directory container runtimes read by default.
pub const DEFAULT_CDI_DIR: &str = "/var/run/cdi";

/// The spec's file name: its kind with `/` made `-` (`tessera.dev-gpu.json`), as CDI tools name
/// theirs.
pub fn cdi_file_name() -> String {
    format!("{}.json", CDI_KIND.replace('/', "-"))
}

/// The CDI spec file and what was last written to it.
#[derive(Debug)]
pub struct CdiFile {
    path: PathBuf,
    written: Option<Vec<u8>>,
}

impl CdiFile {
    /// The spec file in `dir` (nothing is written yet).
    pub fn new(dir: &Path) -> Self {
        CdiFile { path: dir.join(cdi_file_name()), written: None }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the spec for `inventory`, unless the file already holds exactly that.
    pub fn write(&mut self, inventory: &Inventory) -> Result<(), PluginError> {
        let mut bytes = serde_json::to_vec_pretty(&cdi_spec(inventory))
            .map_err(|e| PluginError::Io { path: self.path.clone(), source: std::io::Error::other(e) })?;
        bytes.push(b'\n');
        if self.written.as_ref() == Some(&bytes) {
            return Ok(());
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| PluginError::Io { path: dir.to_path_buf(), source })?;
        }
        write_atomic(&self.path, &bytes)?;
        self.written = Some(bytes);
        Ok(())
    }

    /// Removes the file (when the plugin stops: its devices are no longer advertised).
    pub fn remove(&mut self) -> Result<(), PluginError> {
        self.written = None;
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(PluginError::Io { path: self.path.clone(), source }),
        }
    }
}
