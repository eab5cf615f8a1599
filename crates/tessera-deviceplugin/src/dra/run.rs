//! The plugin as the binary runs it: [`DraDriver::new`] reads the checkpoint and the engine
//! (dropping prepared claims the engine no longer holds), [`DraDriver::published`] hands out the
//! GPUs to advertise, and [`DraDriver::run`] serves the endpoint and the registration socket
//! until shutdown, then removes both sockets (prepared claims stay prepared: their pods run on).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tessera_daemon::engine::Caller;
use tessera_exec::MpsControl;
use tessera_kube_core::dra::DraGpu;
use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;

use super::api::health::dra_resource_health_server::DraResourceHealthServer;
use super::api::registration::PluginInfo;
use super::api::registration::registration_server::RegistrationServer;
use super::api::{v1, v1beta1};
use super::checkpoint::CheckpointFile;
use super::error::DraError;
use super::health::{DeviceHealthEntry, HealthService, Published, claims_health, watch_engine};
use super::node::dra_gpus;
use super::prepare::Driver;
use super::service::{NodeService, RegistrationService};
use super::{ClaimSource, DraEngine, DraOptions, PLUGIN_TYPE, SUPPORTED_VERSIONS};
use crate::uds::{bind, file_id, remove_if_same};

/// How long the servers have to close their connections when the plugin stops.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The DRA kubelet plugin of one node.
pub struct DraDriver {
    driver: Arc<Driver>,
    published: Arc<Published>,
}

impl std::fmt::Debug for DraDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DraDriver").field("options", &self.driver.options).finish_non_exhaustive()
    }
}

impl DraDriver {
    /// The plugin for `options.driver` on `options.node_name`: holds go through `engine` as
    /// `caller` (an admin: it makes and destroys instances, and sees every hold), charged to
    /// `tenant`; allocations come from `claims`; claims' MPS control daemons through `mps`
    /// (the engine's: `EngineHandle::mps`). Reads the checkpoint (refusing one it cannot
    /// read) and the engine's state, and drops prepared claims whose holds are gone.
    pub async fn new(
        engine: Arc<dyn DraEngine>,
        caller: Caller,
        tenant: String,
        claims: Arc<dyn ClaimSource>,
        mps: Arc<dyn MpsControl>,
        options: DraOptions,
    ) -> Result<DraDriver, DraError> {
        let checkpoint = CheckpointFile::load(&options.checkpoint)?;
        let driver = Arc::new(Driver::new(engine, caller, tenant, claims, mps, options, checkpoint));
        driver.recover().await?;
        let state = driver.engine.node_state().await?;
        let health = claims_health(&state, driver.checkpoint.lock().await.claims());
        let published = Arc::new(Published {
            gpus: watch::channel(Arc::new(dra_gpus(&state))).0,
            health: watch::channel(Arc::new(health)).0,
        });
        Ok(DraDriver { driver, published })
    }

    /// The node's GPUs as the driver publishes them, kept current while [`DraDriver::run`]
    /// runs (each instance held by a prepared claim, by another job, or idle).
    pub fn published(&self) -> watch::Receiver<Arc<Vec<DraGpu>>> {
        self.published.gpus.subscribe()
    }

    /// The health of every device of every prepared claim, as `NodeWatchResources` streams it.
    pub fn health(&self) -> watch::Receiver<Arc<Vec<DeviceHealthEntry>>> {
        self.published.health.subscribe()
    }

    /// What registration tells the kubelet.
    pub fn plugin_info(&self) -> PluginInfo {
        let o = &self.driver.options;
        PluginInfo {
            r#type: PLUGIN_TYPE.to_string(),
            name: o.driver.clone(),
            endpoint: o.endpoint().display().to_string(),
            supported_versions: SUPPORTED_VERSIONS.map(String::from).to_vec(),
        }
    }

    /// Serves the DRA endpoint (`dra.sock`: `DRAPlugin` v1 and v1beta1, `DRAResourceHealth`),
    /// then the registration socket, and keeps [`DraDriver::published`] current, until
    /// `shutdown` completes; then both sockets are removed. An error: a directory or socket
    /// cannot be made, or a server failed.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), DraError> {
        let options = self.driver.options.clone();
        for dir in [&options.plugin_dir, &options.registry_dir, &options.cdi_dir] {
            std::fs::create_dir_all(dir).map_err(|source| DraError::Io { path: dir.clone(), source })?;
        }
        let (stop, stopped) = watch::channel(false);
        let watcher = tokio::spawn(watch_engine(self.driver.clone(), self.published.clone(), stopped.clone()));

        let endpoint = options.endpoint();
        let node = NodeService::new(self.driver.clone());
        let health = HealthService::new(self.published.health.subscribe(), stopped.clone(), options.health_resend);
        let dra = serve(&endpoint, stopped.clone(), |incoming, until| {
            tonic::transport::Server::builder()
                .add_service(v1::dra_plugin_server::DraPluginServer::new(node.clone()))
                .add_service(v1beta1::dra_plugin_server::DraPluginServer::new(node))
                .add_service(DraResourceHealthServer::new(health.clone()))
                .add_service(super::api::health_v1::dra_resource_health_server::DraResourceHealthServer::new(health))
                .serve_with_incoming_shutdown(incoming, until)
        });
        let dra = match dra {
            Ok(s) => s,
            Err(e) => {
                watcher.abort();
                return Err(e);
            }
        };
        // Registered only once the endpoint answers: the kubelet connects to it right after.
        let registration = RegistrationService::new(self.plugin_info());
        let reg_socket = options.registration_socket();
        let reg = serve(&reg_socket, stopped.clone(), |incoming, until| {
            tonic::transport::Server::builder()
                .add_service(RegistrationServer::new(registration))
                .serve_with_incoming_shutdown(incoming, until)
        });
        let reg = match reg {
            Ok(s) => s,
            Err(e) => {
                let _ = stop.send(true);
                dra.close().await;
                watcher.abort();
                return Err(e);
            }
        };
        tracing::info!(
            "DRA: {} serving {} and registering at {}",
            options.driver,
            endpoint.display(),
            reg_socket.display()
        );

        tokio::pin!(shutdown);
        let (mut dra, mut reg) = (dra, reg);
        let outcome = tokio::select! {
            () = &mut shutdown => Ok(()),
            r = dra.ended() => r,
            r = reg.ended() => r,
        };
        let _ = stop.send(true);
        // The registration first: the kubelet stops calling a plugin whose socket is gone.
        reg.close().await;
        dra.close().await;
        let _ = watcher.await;
        outcome
    }
}

fn failed(socket: &Path, message: &str) -> DraError {
    DraError::Serve { socket: socket.to_path_buf(), message: message.to_string() }
}

/// One gRPC server on its socket.
struct Served {
    socket: PathBuf,
    id: Option<crate::uds::FileId>,
    /// `None` once it ended.
    task: Option<JoinHandle<Result<(), DraError>>>,
}

impl Served {
    /// Waits for the server to end by itself (it should not before shutdown): how it ended.
    async fn ended(&mut self) -> Result<(), DraError> {
        let Some(task) = self.task.as_mut() else { return std::future::pending().await };
        let result = task.await;
        self.task = None;
        result.unwrap_or_else(|e| Err(failed(&self.socket, &e.to_string())))
    }

    /// Waits (a while) for the server to close, then removes its socket if it is still ours.
    async fn close(self) {
        let Served { socket, id, task } = self;
        if let Some(mut task) = task
            && tokio::time::timeout(STOP_GRACE, &mut task).await.is_err()
        {
            task.abort();
        }
        remove_if_same(&socket, id);
    }
}

/// Binds `socket` and runs the server `make` builds on it until `stopped` turns true.
fn serve<F>(
    socket: &Path,
    stopped: watch::Receiver<bool>,
    make: impl FnOnce(UnixListenerStream, std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> F,
) -> Result<Served, DraError>
where
    F: Future<Output = Result<(), tonic::transport::Error>> + Send + 'static,
{
    let listener: UnixListener = bind(socket)?;
    let id = file_id(socket);
    let mut stopped = stopped;
    let until: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(async move {
        let _ = stopped.wait_for(|s| *s).await;
    });
    let server = make(UnixListenerStream::new(listener), until);
    let path = socket.to_path_buf();
    let task = tokio::spawn(async move { server.await.map_err(|e| failed(&path, &e.to_string())) });
    Ok(Served { socket: socket.to_path_buf(), id, task: Some(task) })
}
