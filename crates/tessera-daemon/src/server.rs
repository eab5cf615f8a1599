//! Listening: the Unix socket (always) and TCP (when configured), each connection served by the
//! daemon's own HTTP/1.1 layer ([`crate::http`]) until shutdown, after which requests in flight
//! get a short grace to finish.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::http::conn::{Shared, admit};
use crate::http::{HttpLimits, LimitsError, PeerInfo};

/// Why the daemon cannot listen.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Binding a socket (or creating its directory) failed.
    #[error("cannot listen on {what}: {source}")]
    Listen {
        /// The socket path, directory or address.
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A live daemon already answers on the socket.
    #[error("another daemon is listening on {0}")]
    InUse(PathBuf),
    /// `[server.limits]` holds a limit that cannot work.
    #[error(transparent)]
    Limits(#[from] LimitsError),
}

/// Bind the Unix socket: refuse if a daemon answers there, remove a stale socket file, and let
/// every local user connect (their peer credentials say who they are).
pub fn bind_unix(path: &Path) -> Result<UnixListener, ServeError> {
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
    let listener =
        UnixListener::bind(path).map_err(|source| ServeError::Listen { what: path.display().to_string(), source })?;
    use std::os::unix::fs::PermissionsExt as _;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666));
    Ok(listener)
}

/// Serve `app` on the Unix socket and, when given, on TCP, until `shutdown` resolves. Each
/// request carries a [`PeerInfo`] in its extensions. At shutdown no more connections are
/// accepted, idle ones are closed, and requests in flight have `limits.shutdown_grace_ms` to
/// finish before their connections are dropped; then this returns.
pub async fn serve(
    app: axum::Router,
    unix: UnixListener,
    tcp: Option<TcpListener>,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_with_metrics(app, unix, tcp, None, limits, shutdown).await
}

/// [`serve`], and `metrics`' router (`GET /metrics` alone, no token: `server.metrics_tcp`) on
/// its own TCP listener, under the same limits and shutdown.
pub async fn serve_with_metrics(
    app: axum::Router,
    unix: UnixListener,
    tcp: Option<TcpListener>,
    metrics: Option<(TcpListener, axum::Router)>,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    limits.validate()?;
    let grace = limits.shutdown_grace();
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let (metrics_tcp, metrics_shared) = match metrics {
        Some((listener, router)) => (Some(listener), Some(Shared::new(router, limits.clone(), stopping.clone()))),
        None => (None, None),
    };
    let shared = Shared::new(app, limits, stopping);
    let mut connections = JoinSet::new();
    let mut pauses = Pauses::default();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(ended) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = ended
                    && e.is_panic()
                {
                    tracing::error!("a request handler panicked; its connection was dropped: {e}");
                }
            }
            accepted = unix.accept() => match accepted {
                Ok((stream, _)) => {
                    let peer = stream.peer_cred().map(|cred| PeerInfo::Unix {
                        uid: cred.uid(),
                        gid: cred.gid(),
                        pid: cred.pid().and_then(|pid| u32::try_from(pid).ok()),
                    });
                    if let Some(connection) = admit(stream, peer, &shared) {
                        connections.spawn(connection);
                    }
                }
                Err(e) => pauses.after(e, "the Unix socket").await,
            },
            accepted = accept_tcp(tcp.as_ref()) => match accepted {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    if let Some(connection) = admit(stream, Ok(PeerInfo::Tcp { addr }), &shared) {
                        connections.spawn(connection);
                    }
                }
                Err(e) => pauses.after(e, "TCP").await,
            },
            accepted = accept_tcp(metrics_tcp.as_ref()) => match accepted {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    if let Some(m) = &metrics_shared
                        && let Some(connection) = admit(stream, Ok(PeerInfo::Tcp { addr }), m)
                    {
                        connections.spawn(connection);
                    }
                }
                Err(e) => pauses.after(e, "the metrics TCP port").await,
            },
        }
    }
    drop((unix, tcp, metrics_tcp));
    stop.send_replace(true);
    let drained = tokio::time::timeout(grace, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            "dropping {} connection(s) still busy after the {} ms shutdown grace",
            connections.len(),
            grace.as_millis()
        );
    }
    connections.shutdown().await;
    Ok(())
}

/// A TCP connection, or never when there is no TCP listener.
async fn accept_tcp(tcp: Option<&TcpListener>) -> std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)> {
    match tcp {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// What to do when accepting fails: go on at once when the client just went away; otherwise
/// (out of descriptors or memory) pause so as not to spin, and say so at most every ten seconds.
#[derive(Debug, Default)]
struct Pauses {
    last_said: Option<Instant>,
}

impl Pauses {
    const PAUSE: Duration = Duration::from_millis(100);
    const SAY_EVERY: Duration = Duration::from_secs(10);

    async fn after(&mut self, e: std::io::Error, what: &str) {
        use std::io::ErrorKind::{ConnectionAborted, ConnectionReset, Interrupted, WouldBlock};
        if matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted | WouldBlock) {
            return;
        }
        if self.last_said.is_none_or(|t| t.elapsed() >= Self::SAY_EVERY) {
            tracing::error!("accepting a connection on {what} failed: {e}; pausing new connections briefly");
            self.last_said = Some(Instant::now());
        }
        tokio::time::sleep(Self::PAUSE).await;
    }
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
