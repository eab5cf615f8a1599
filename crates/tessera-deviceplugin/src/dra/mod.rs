//! The DRA kubelet plugin (Dynamic Resource Allocation, KEP-4381 with KEP-4815's partitionable
//! devices): the kubelet's other way to hand GPUs to pods, beside the device plugin. The
//! scheduler allocates published devices (each MIG placement of each GPU, and each whole GPU:
//! [`tessera_kube_core::dra`]) to a ResourceClaim; the kubelet then asks this plugin to prepare
//! the claim on the node, and the plugin makes the engine hold each device for the claim,
//! **making the MIG instance at the allocated placement when it does not exist**
//! (`Action::SubmitMaking`, through the daemon's reconfiguration journal), and answers with CDI
//! device IDs; unprepare gives the holds back and destroys exactly the instances it made.
//!
//! **Protocols** ([`api`], generated from `proto/` at build time): the plugin watcher's
//! `pluginregistration.Registration` on `<registry_dir>/<driver>-reg.sock` (type `DRAPlugin`,
//! the driver's name, the endpoint, the services served: `v1.DRAPlugin`, `v1beta1.DRAPlugin`,
//! `v1alpha1.DRAResourceHealth`, `v1.DRAResourceHealth`), and on the endpoint `<plugin_dir>/dra.sock` the DRA node
//! service in both versions and the resource health stream ([`service`], [`health`]).
//!
//! **Crash safety** ([`checkpoint`]). A claim is written `Preparing` (its devices, their
//! placements, and whether each instance existed before) before the engine is asked for
//! anything, and `Prepared` once held and described in its CDI spec ([`cdi`]). A restarted
//! plugin answers a prepared claim from the checkpoint; a claim left `Preparing` is finished by
//! the kubelet's retry (the kubelet retries prepare for every pod that is not running yet),
//! which finds the hold an interrupted try submitted by the claim's UID (the engine's external
//! work key, door `dra`) instead of submitting another; an unprepare undoes whatever exists. At
//! start, prepared claims whose hold the engine no longer has are dropped with a log line.
//!
//! **What it publishes** ([`DraDriver::published`]): the node's GPUs as the ResourceSlices need
//! them ([`tessera_kube_core::dra::DraGpu`]), each instance held by a claim, by another job, or
//! idle, kept current from the engine's state; another crate turns them into ResourceSlices.

/// The kubelet's DRA, DRA health and plugin registration APIs, generated at build time from
/// `proto/` by protox and tonic.
#[allow(missing_debug_implementations, clippy::all, clippy::pedantic)]
pub mod api {
    /// `k8s.io.kubelet.pkg.apis.dra.v1`: the DRA node service (Kubernetes 1.34+).
    pub mod v1 {
        tonic::include_proto!("k8s.io.kubelet.pkg.apis.dra.v1");
    }
    /// `k8s.io.kubelet.pkg.apis.dra.v1beta1`: the DRA node service without `share_id`.
    pub mod v1beta1 {
        tonic::include_proto!("k8s.io.kubelet.pkg.apis.dra.v1beta1");
    }
    /// `v1alpha1`: the DRA resource health stream (Kubernetes 1.34 to 1.36).
    pub mod health {
        tonic::include_proto!("v1alpha1");
    }
    /// `v1`: the DRA resource health stream (Kubernetes 1.37), the same messages as
    /// [`health`] under package `v1` (generated apart from PodResources v1).
    pub mod health_v1 {
        include!(concat!(env!("OUT_DIR"), "/dra_health_v1/v1.rs"));
    }
    /// `pluginregistration`: the plugin watcher's registration service.
    pub mod registration {
        tonic::include_proto!("pluginregistration");
    }
}

pub mod cdi;
pub mod checkpoint;
mod error;
pub mod health;
pub mod node;
mod prepare;
mod run;
pub mod service;
mod unprepare;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use tessera_daemon::api::Service;
use tessera_daemon::daemon::EngineHandle;
use tessera_daemon::engine::{EngineError, NodeState};
use tessera_kube_core::dra_claim::{ClaimAllocation, ClaimRef};
use tokio::sync::watch;

pub use checkpoint::{CHECKPOINT_VERSION, Checkpoint, ClaimDevice, ClaimEntry, ClaimPhase};
pub use error::{DraError, PrepareError, UnprepareError};
pub use run::DraDriver;

/// The driver's default name (the DeviceClass selects `device.driver == "gpu.tessera.dev"`).
pub const DEFAULT_DRIVER: &str = "gpu.tessera.dev";
/// Where the kubelet's plugin watcher looks for registration sockets.
pub const DEFAULT_REGISTRY_DIR: &str = "/var/lib/kubelet/plugins_registry";
/// Where DRA plugins keep their sockets and state: `<dir>/<driver>/`.
pub const DEFAULT_PLUGINS_DIR: &str = "/var/lib/kubelet/plugins";
/// Where the claims' MPS control daemons keep their pipe, log and shared-memory directories.
pub const DEFAULT_MPS_ROOT: &str = "/run/tessera/dra-mps";
/// The DRA service's socket, in the plugin directory.
pub const DRA_SOCKET: &str = "dra.sock";
/// The checkpoint's file, in the plugin directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.json";
/// The plugin type the plugin watcher dispatches on.
pub const PLUGIN_TYPE: &str = "DRAPlugin";
/// The services this plugin serves, as registration lists them.
pub const SUPPORTED_VERSIONS: [&str; 4] =
    ["v1.DRAPlugin", "v1beta1.DRAPlugin", "v1alpha1.DRAResourceHealth", "v1.DRAResourceHealth"];
/// The front door's name in the engine: a claim's holds are external work of door `dra`, keyed
/// by the claim's UID.
pub const DRA_DOOR: &str = "dra";

/// How the plugin runs.
#[derive(Debug, Clone)]
pub struct DraOptions {
    /// The driver's name (the devices' `driver`).
    pub driver: String,
    /// This node's name: its pool's name.
    pub node_name: String,
    /// The plugin's own directory: `dra.sock` and, by default, the checkpoint.
    pub plugin_dir: PathBuf,
    /// The plugin watcher's directory: `<driver>-reg.sock`.
    pub registry_dir: PathBuf,
    /// Where each prepared claim's CDI spec is written.
    pub cdi_dir: PathBuf,
    /// The checkpoint file.
    pub checkpoint: PathBuf,
    /// The root of the claims' MPS directories (`<root>/<claim uid>/{pipe,log,shm}`).
    pub mps_root: PathBuf,
    /// How long a prepare waits for the engine to hold a device.
    pub hold_timeout: Duration,
    /// How often the engine's state is read besides its change notices (health changes send
    /// none).
    pub poll_interval: Duration,
    /// How often the health stream repeats an unchanged list (the kubelet times out devices
    /// it has not heard of).
    pub health_resend: Duration,
}

impl DraOptions {
    /// The kubelet's default directories for `driver` on `node_name`.
    pub fn new(driver: &str, node_name: &str) -> DraOptions {
        let plugin_dir = PathBuf::from(DEFAULT_PLUGINS_DIR).join(driver);
        DraOptions {
            driver: driver.to_string(),
            node_name: node_name.to_string(),
            checkpoint: plugin_dir.join(CHECKPOINT_FILE),
            plugin_dir,
            registry_dir: PathBuf::from(DEFAULT_REGISTRY_DIR),
            cdi_dir: PathBuf::from(crate::DEFAULT_CDI_DIR),
            mps_root: PathBuf::from(DEFAULT_MPS_ROOT),
            hold_timeout: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            health_resend: Duration::from_secs(10),
        }
    }

    /// `<plugin_dir>/dra.sock`: the endpoint registration names.
    pub fn endpoint(&self) -> PathBuf {
        self.plugin_dir.join(DRA_SOCKET)
    }

    /// `<registry_dir>/<driver>-reg.sock`.
    pub fn registration_socket(&self) -> PathBuf {
        self.registry_dir.join(format!("{}-reg.sock", self.driver))
    }

    /// The CDI kind of the claims' specs: `<driver>/claim`.
    pub fn cdi_kind(&self) -> String {
        format!("{}/claim", self.driver)
    }
}

/// A boxed future, for the dyn-compatible seams below.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a claim's allocation comes from: the binary reads the ResourceClaim from the API
/// server (`status.allocation`, and the reserving pod's `runAsUser`); tests keep them in memory.
/// The error is said to the kubelet as the claim's.
pub trait ClaimSource: Send + Sync + 'static {
    fn allocation<'a>(&'a self, claim: &'a ClaimRef) -> BoxFuture<'a, Result<ClaimAllocation, String>>;
}

/// The engine as the plugin uses it: its actions ([`Service`]), the node's state (layouts,
/// device minors, holds, health), and its change notices.
pub trait DraEngine: Service {
    fn node_state(&self) -> BoxFuture<'_, Result<NodeState, EngineError>>;
    fn changes(&self) -> watch::Receiver<u64>;
}

impl DraEngine for EngineHandle {
    fn node_state(&self) -> BoxFuture<'_, Result<NodeState, EngineError>> {
        Box::pin(EngineHandle::node_state(self))
    }

    fn changes(&self) -> watch::Receiver<u64> {
        EngineHandle::changes(self)
    }
}
