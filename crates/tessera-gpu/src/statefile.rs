//! Files that hold state several processes share: an exclusive lock on a sibling `<file>.lock`
//! held from reading the file to writing it back, and atomic replacement (a temporary file
//! renamed over the old one), so readers see the old file or the new one, never a torn one, and
//! a process killed mid-write leaves the old one. The simulated node's state file
//! ([`crate::SimBackend`]) and the CLI's health state use it.
//!
//! No `fsync`: these files need not survive a power cut, and syncing every call would make the
//! simulated node a hundred times slower.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long [`lock`] waits for another process's lock before giving up.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a state file could not be locked or written.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// An I/O error on the file, its lock or its temporary file (the path says which).
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Another process held the lock for longer than the wait.
    #[error("{}: locked by another process for more than {} s ({})", .path.display(), .waited.as_secs(), .lock_path.display())]
    Locked { path: PathBuf, lock_path: PathBuf, waited: Duration },
}

/// An exclusive lock on a state file, held until dropped.
#[derive(Debug)]
pub struct Lock {
    /// Closing the file releases the lock.
    _file: File,
}

/// `<path><suffix>`, e.g. `node.json.lock`.
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Take the exclusive lock of the state file `path` (on `<path>.lock`, created if needed),
/// waiting up to [`LOCK_TIMEOUT`].
pub fn lock(path: &Path) -> Result<Lock, StateFileError> {
    lock_within(path, LOCK_TIMEOUT)
}

/// [`lock`], waiting up to `timeout`.
pub fn lock_within(path: &Path, timeout: Duration) -> Result<Lock, StateFileError> {
    let lock_path = sibling(path, ".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| StateFileError::Io { path: lock_path.clone(), source })?;
    let deadline = Instant::now() + timeout;
    let mut wait = Duration::from_millis(1);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(Lock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => {
                let now = Instant::now();
                if now >= deadline {
                    return Err(StateFileError::Locked { path: path.to_path_buf(), lock_path, waited: timeout });
                }
                std::thread::sleep(wait.min(deadline - now));
                wait = (wait * 2).min(Duration::from_millis(50));
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(StateFileError::Io { path: lock_path, source });
            }
        }
    }
}

/// Replace `path` with `bytes` atomically ([`tessera_host::files::write_atomic`]: a
/// temporary file of this writer's own in the same directory, renamed over `path`; nothing is
/// left behind if anything fails).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateFileError> {
    tessera_host::files::write_atomic(path, bytes, tessera_host::files::WriteOptions::SHARED)
        .map_err(|source| StateFileError::Io { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_is_exclusive_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let held = lock(&path).unwrap();
        assert!(dir.path().join("state.json.lock").exists());
        let e = lock_within(&path, Duration::from_millis(20)).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, StateFileError::Locked { .. }), "{msg}");
        assert!(msg.contains("state.json") && msg.contains("locked by another process"), "{msg}");
        drop(held);
        lock_within(&path, Duration::from_millis(20)).unwrap();
    }

    #[test]
    fn writes_replace_the_file_and_leave_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        assert_eq!(names, ["state.json"]);
        // A directory that does not exist: an error naming the temporary file, nothing left.
        let e = write_atomic(&dir.path().join("missing/state.json"), b"x").unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }
}
