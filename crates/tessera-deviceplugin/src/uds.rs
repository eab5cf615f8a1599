//! gRPC over Unix sockets: a client channel to a socket path, and a listener bound to one. The
//! kubelet and its plugins talk only this way; nothing here opens a TCP port.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::error::PluginError;

/// A channel to the gRPC server on the Unix socket `path`, connected now.
pub async fn unix_channel(path: &Path) -> Result<Channel, PluginError> {
    let target = path.to_path_buf();
    let connector = tower::service_fn(move |_: Uri| {
        let target = target.clone();
        async move { UnixStream::connect(&target).await.map(TokioIo::new) }
    });
    // The URI is required by the API and never used: the connector decides where to connect.
    Endpoint::from_static("http://[::]:0")
        .connect_with_connector(connector)
        .await
        .map_err(|source| PluginError::Connect { path: path.to_path_buf(), source })
}

/// Binds a listener on `path`, replacing a socket file left there by an earlier run.
pub fn bind(path: &Path) -> Result<UnixListener, PluginError> {
    let io = |source: io::Error| PluginError::Io { path: path.to_path_buf(), source };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_dir() => {
            return Err(io(io::Error::new(io::ErrorKind::AlreadyExists, "a directory is in the socket's place")));
        }
        Ok(_) => std::fs::remove_file(path).map_err(io)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    UnixListener::bind(path).map_err(io)
}

/// Which file a path is now, or `None` when nothing is there: a socket removed and created
/// again is another file, even where the file system hands out the freed inode number again (the
/// change time tells them apart).
pub fn file_id(path: &Path) -> Option<FileId> {
    std::fs::symlink_metadata(path).ok().map(|m| FileId {
        dev: m.dev(),
        ino: m.ino(),
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

/// A file's identity: its device, inode and change time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
    ctime: (i64, i64),
}

/// Removes the socket at `path` if it is still the file `id` (another process may have put its
/// own there since).
pub fn remove_if_same(path: &Path, id: Option<FileId>) {
    if id.is_some()
        && file_id(path) == id
        && let Err(e) = std::fs::remove_file(path)
    {
        tracing::warn!("removing {}: {e}", path.display());
    }
}
