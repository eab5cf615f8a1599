//! The activity file (`TESSERA_STANDIN_ACTIVITY`): what the simulated GPUs and GPU instances
//! do, for GPM, in a text file a test rewrites, the way the Xid file ([`crate::xid`]) feeds
//! Xid events.
//!
//! The format is the simulated node's ([`tessera_gpu::sim::activity`]): one line
//! `GPU [GI] SM_ACTIVE SM_OCCUPANCY TENSOR_ACTIVE DRAM_ACTIVE [FP64 FP32 FP16]`, fractions from 0
//! to 1, `#` comments. The file is the whole node's declaration: a GPU or GPU instance it does
//! not name is idle, and a file that is removed after it was read declares everything idle.
//!
//! Before every GPM sample the stand-in looks at the file; when its bytes differ from what it
//! last applied, the declaration goes into the simulated node
//! ([`tessera_gpu::SimBackend::replace_activity`]) as of the file's modification time, so the
//! change counts from when it was written, not from when a sample noticed it. A bad line is
//! reported on stderr and skipped; a line naming a GPU the node lacks makes the whole file
//! refused (reported, nothing applied) until it changes again.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tessera_gpu::sim::activity::{self, ActivityLine};

/// A declaration read from the file: its lines and when it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Declaration {
    pub lines: Vec<ActivityLine>,
    /// The file's modification time (now, for a removed file).
    pub written: SystemTime,
    /// One message per bad line.
    pub errors: Vec<String>,
}

/// Watches the activity file for new declarations.
#[derive(Debug)]
pub struct ActivityFeed {
    path: PathBuf,
    /// The bytes last declared; `None` before the file was first seen.
    seen: Option<Vec<u8>>,
}

impl ActivityFeed {
    pub fn new(path: &Path) -> ActivityFeed {
        ActivityFeed { path: path.to_path_buf(), seen: None }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The declaration when the file changed since the last poll; `None` when it did not (or it
    /// does not exist and never did). An unreadable file is an `Err` (and stays unseen).
    pub fn poll(&mut self) -> Result<Option<Declaration>, String> {
        let (bytes, written) = match std::fs::read(&self.path) {
            Ok(b) => {
                let written =
                    std::fs::metadata(&self.path).and_then(|m| m.modified()).unwrap_or_else(|_| SystemTime::now());
                (b, written)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if self.seen.is_none() {
                    return Ok(None);
                }
                (Vec::new(), SystemTime::now())
            }
            Err(e) => return Err(format!("{}: {e}", self.path.display())),
        };
        if self.seen.as_deref() == Some(bytes.as_slice()) {
            return Ok(None);
        }
        let (lines, errors) = activity::parse(&String::from_utf8_lossy(&bytes));
        self.seen = Some(bytes);
        Ok(Some(Declaration { lines, written, errors }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_declared_once_and_a_removal_idles_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("activity");
        let mut feed = ActivityFeed::new(&path);
        assert_eq!(feed.poll(), Ok(None), "no file yet, never seen: nothing to declare");
        std::fs::write(&path, "0 3 0.5 0.5 0.5 0.5\nbad\n").unwrap();
        let d = feed.poll().unwrap().unwrap();
        assert_eq!(d.lines.len(), 1);
        assert_eq!((d.lines[0].gpu, d.lines[0].gpu_instance_id), (0, Some(3)));
        assert_eq!(d.errors.len(), 1);
        assert_eq!(d.written, std::fs::metadata(&path).unwrap().modified().unwrap());
        assert_eq!(feed.poll(), Ok(None), "unchanged");
        std::fs::write(&path, "0 3 0.5 0.5 0.5 0.5\nbad\n").unwrap();
        assert_eq!(feed.poll(), Ok(None), "rewritten with the same bytes");
        std::fs::write(&path, "1 0.1 0.2 0.3 0.4\n").unwrap();
        assert_eq!(feed.poll().unwrap().unwrap().lines[0].gpu, 1);
        std::fs::remove_file(&path).unwrap();
        let gone = feed.poll().unwrap().unwrap();
        assert!(gone.lines.is_empty() && gone.errors.is_empty());
        assert_eq!(feed.poll(), Ok(None));
    }
}
