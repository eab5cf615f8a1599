//! What can go wrong in the DRA kubelet plugin: starting and serving ([`DraError`]), and one
//! claim's preparation or unpreparation ([`PrepareError`], [`UnprepareError`]), whose text the
//! kubelet receives as the claim's `error` and shows on the pod, so each names the claim, the
//! device and why.

use std::path::PathBuf;

use tessera_daemon::engine::EngineError;
use tessera_kube_core::dra_claim::{ClaimError, ClaimRef};

use crate::error::PluginError;

/// The plugin cannot start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum DraError {
    /// A directory, socket or file operation failed (the path says which).
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A socket could not be served.
    #[error(transparent)]
    Socket(#[from] PluginError),
    /// The checkpoint cannot be read: what the plugin made for which claim is unknown, so it does
    /// not start (the file says what it holds; an admin decides).
    #[error("the DRA checkpoint {}: {problem}", .path.display())]
    Checkpoint { path: PathBuf, problem: String },
    /// The engine did not answer a read the plugin needs to start.
    #[error("the engine: {0}")]
    Engine(#[from] EngineError),
    /// A gRPC server stopped with an error.
    #[error("serving {}: {message}", .socket.display())]
    Serve { socket: PathBuf, message: String },
}

/// Why one claim could not be prepared (the claim's `error` in the kubelet's answer).
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The claim's allocation could not be read from the API server.
    #[error("claim {claim}: reading its allocation: {message}")]
    Allocation { claim: ClaimRef, message: String },
    /// A device the allocation names cannot be prepared on this node as it is.
    #[error("claim {claim}: device {device}: {problem}")]
    Device { claim: ClaimRef, device: String, problem: String },
    /// The allocation's opaque configuration cannot be read.
    #[error("claim {claim}: request {request}: {source}")]
    Config {
        claim: ClaimRef,
        request: String,
        #[source]
        source: ClaimError,
    },
    /// The engine refused or failed to hold a device.
    #[error("claim {claim}: device {device}: the engine: {source}")]
    Engine {
        claim: ClaimRef,
        device: String,
        #[source]
        source: EngineError,
    },
    /// The engine accepted the hold but did not give the device in time (the hold is cancelled;
    /// the kubelet's retry asks again).
    #[error("claim {claim}: device {device}: not held within {seconds} s: {reason}")]
    NotHeld { claim: ClaimRef, device: String, seconds: u64, reason: String },
    /// The checkpoint, the CDI spec or the MPS control daemon could not be written or started.
    #[error("claim {claim}: {what}: {problem}")]
    Node { claim: ClaimRef, what: String, problem: String },
}

/// Why one claim could not be unprepared (the kubelet calls again).
#[derive(Debug, thiserror::Error)]
pub enum UnprepareError {
    /// The engine refused or failed to release a hold or destroy an instance the plugin made.
    #[error("claim {claim}: {what}: the engine: {source}")]
    Engine {
        claim: ClaimRef,
        what: String,
        #[source]
        source: EngineError,
    },
    /// The checkpoint, the CDI spec or the MPS control daemon could not be changed.
    #[error("claim {claim}: {what}: {problem}")]
    Node { claim: ClaimRef, what: String, problem: String },
}
