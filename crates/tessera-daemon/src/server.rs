//! Listening: the Unix socket (always) and TCP (when configured, with a bearer token), served
//! until SIGTERM or SIGINT.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::api::{Identity, Service, UdsPeer, router};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {what}: {source}")]
    Listen {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("another daemon is listening on {0}")]
    InUse(PathBuf),
    #[error("serving {what}: {source}")]
    Serve {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// Bind the Unix socket: refuse if a daemon answers there, remove a stale socket file, and let
/// every local user connect (their peer credentials say who they are).
pub fn bind_unix(path: &Path) -> Result<tokio::net::UnixListener, ServeError> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ServeError::InUse(path.to_path_buf()));
        }
        let _ = std::fs::remove_file(path);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|source| ServeError::Listen { what: dir.display().to_string(), source })?;
    }
    let listener = tokio::net::UnixListener::bind(path)
        .map_err(|source| ServeError::Listen { what: path.display().to_string(), source })?;
    use std::os::unix::fs::PermissionsExt as _;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666));
    Ok(listener)
}

/// Serve the API until `shutdown` resolves.
pub async fn serve(
    service: Arc<dyn Service>,
    identity: Arc<Identity>,
    unix: tokio::net::UnixListener,
    tcp: Option<tokio::net::TcpListener>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let (tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let unix_app = router(service.clone(), identity.clone(), false).into_make_service_with_connect_info::<UdsPeer>();
    let mut rx = tx.subscribe();
    let unix_task = tokio::spawn(async move {
        axum::serve(unix, unix_app)
            .with_graceful_shutdown(async move {
                let _ = rx.recv().await;
            })
            .await
    });
    let tcp_task = tcp.map(|listener| {
        let app = router(service, identity, true);
        let mut rx = tx.subscribe();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.recv().await;
                })
                .await
        })
    });
    shutdown.await;
    let _ = tx.send(());
    let join = |r: Result<std::io::Result<()>, tokio::task::JoinError>, what: &str| match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(source)) => Err(ServeError::Serve { what: what.to_string(), source }),
        Err(e) => Err(ServeError::Serve { what: what.to_string(), source: std::io::Error::other(e.to_string()) }),
    };
    join(unix_task.await, "the Unix socket")?;
    if let Some(t) = tcp_task {
        join(t.await, "TCP")?;
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    tokio::select! {
        _ = async { if let Some(t) = term.as_mut() { t.recv().await; } else { std::future::pending::<()>().await } } => {}
        _ = async { if let Some(i) = int.as_mut() { i.recv().await; } else { std::future::pending::<()>().await } } => {}
    }
}
