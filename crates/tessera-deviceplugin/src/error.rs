//! What can go wrong in the plugin's shell: sockets, registration with the kubelet, reading the
//! node, the CDI file.

use std::path::PathBuf;

use tessera_gpu::BackendError;
use tessera_gpu::statefile::StateFileError;
use tessera_kube_core::{InventoryError, ResourceName};

/// An error of the device plugin's shell.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// A file or socket operation failed (the path says which).
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// No gRPC connection to the socket (nothing listens there, or it refused).
    #[error("connecting to {}: {source}", .path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    /// The kubelet refused the registration (an unsupported version, or the resource name is
    /// taken by another plugin).
    #[error("the kubelet at {} refused to register {resource}: {message}", .kubelet.display())]
    Refused { kubelet: PathBuf, resource: ResourceName, message: String },
    /// The kubelet did not answer the registration in time.
    #[error("the kubelet at {} did not answer the registration of {resource} within {seconds} s", .kubelet.display())]
    RegisterTimeout { kubelet: PathBuf, resource: ResourceName, seconds: u64 },
    /// The node could not be read.
    #[error("reading the node: {0}")]
    Backend(#[from] BackendError),
    /// The node cannot be advertised under the configured strategy.
    #[error("advertising the node: {0}")]
    Inventory(#[from] InventoryError),
    /// The CDI specification could not be written.
    #[error("writing the CDI specification: {0}")]
    Cdi(#[from] StateFileError),
    /// The kubelet's PodResources API did not answer as it should.
    #[error("the kubelet's pod resources at {}: {message}", .path.display())]
    PodResources { path: PathBuf, message: String },
    /// The engine (the node agent's daemon) refused or failed a read.
    #[error("the engine: {0}")]
    Engine(#[from] tessera_daemon::engine::EngineError),
    /// What feeds the plugin its inventory stopped.
    #[error("the inventory source stopped")]
    SourceStopped,
}
