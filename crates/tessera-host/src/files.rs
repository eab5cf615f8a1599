//! Files written so that a reader never sees half of one: a private temporary file next to
//! the target, then `rename(2)` (replace) or `link(2)` (create once: the first writer wins).
//! The job supervisor's files and the simulated node's and the CLI's state files use these.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// How a file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOptions {
    /// The new file's mode (the process umask applies).
    pub mode: u32,
    /// `fsync` the file (and, for a replace, its directory): durable across power loss, not
    /// only a crash.
    pub sync: bool,
}

impl WriteOptions {
    /// Private to this user (`0600`), `fsync`ed.
    pub const PRIVATE_DURABLE: WriteOptions = WriteOptions { mode: 0o600, sync: true };
    /// Private to this user (`0600`), not `fsync`ed (safe against a crash, not power loss).
    pub const PRIVATE: WriteOptions = WriteOptions { mode: 0o600, sync: false };
    /// As `File::create` makes files (`0666` less the umask), not `fsync`ed.
    pub const SHARED: WriteOptions = WriteOptions { mode: 0o666, sync: false };
}

/// Numbers this process's temporary files, so no two writers share one.
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to a new temporary file next to `path` and returns its name:
/// `.<name>.<pid>.<n>.tmp`, unique to this writer, created by us alone
/// (`O_CREAT|O_EXCL|O_NOFOLLOW`: never through a planted symlink, never into someone else's
/// file, since the directory may be writable by others). Nothing is left behind on failure.
fn write_temp(path: &Path, bytes: &[u8], opts: WriteOptions) -> io::Result<PathBuf> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
    let mut name = OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".{}.{seq}.tmp", std::process::id()));
    let tmp = dir.join(name);
    let result = (|| -> io::Result<()> {
        // A stale temporary of a dead process that had our pid is no one's any more.
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(opts.mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        file.write_all(bytes)?;
        if opts.sync { file.sync_all() } else { Ok(()) }
    })();
    match result {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Replaces `path` with `bytes` atomically: a temporary file ([`write_temp`]), `rename`, and
/// with `opts.sync` an `fsync` of the file and then its directory, so a crash leaves the old
/// file or the new one.
pub fn write_atomic(path: &Path, bytes: &[u8], opts: WriteOptions) -> io::Result<()> {
    let tmp = write_temp(path, bytes, opts)?;
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if opts.sync {
        File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()?;
    }
    Ok(())
}

/// Creates `path` holding `bytes` unless it already exists: a temporary file, then `link(2)`,
/// which fails with `EEXIST` when the name is taken, so exactly one of any number of
/// concurrent writers wins and a reader never sees a half-written file. Returns whether this
/// call created it (`false`: it was there and is left as it was).
pub fn create_once(path: &Path, bytes: &[u8], opts: WriteOptions) -> io::Result<bool> {
    let tmp = write_temp(path, bytes, opts)?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn replace_and_create_once_leave_no_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"1", WriteOptions::PRIVATE_DURABLE).unwrap();
        write_atomic(&p, b"2", WriteOptions::PRIVATE).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"2");
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        let q = dir.path().join("b");
        assert!(create_once(&q, b"first", WriteOptions::PRIVATE).unwrap());
        assert!(!create_once(&q, b"second", WriteOptions::PRIVATE).unwrap());
        assert_eq!(fs::read(&q).unwrap(), b"first");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn concurrent_writers_never_share_a_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::thread::scope(|s| {
            for t in 0..8u8 {
                let p = &p;
                s.spawn(move || {
                    for _ in 0..50 {
                        write_atomic(p, &[t; 4096], WriteOptions::SHARED).unwrap();
                    }
                });
            }
        });
        let got = fs::read(&p).unwrap();
        assert!(got.len() == 4096 && got.iter().all(|b| *b == got[0]));
    }
}
