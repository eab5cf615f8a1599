//! [`EngineError`]: why the engine refused or failed an action. Only the HTTP layer turns
//! these into status codes; other front doors (Kubernetes, Slurm) map them their own way.

/// A refused or failed action, with a sentence for people that names what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// No such job or GPU.
    #[error("{0}")]
    NotFound(String),
    /// The caller may not do this (another user's job, an admin's action).
    #[error("{0}")]
    Forbidden(String),
    /// The action conflicts with the state (the job has ended, an instance is busy).
    #[error("{0}")]
    Conflict(String),
    /// A field of the request is malformed.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// Well-formed, but it can never be done here (more CPUs than any NUMA node has, a MIG
    /// profile on a node with MIG off): the field and the limit.
    #[error("{field}: {message}")]
    CannotRun { field: String, message: String },
    /// Something in the daemon failed (the database, the GPUs).
    #[error("{0}")]
    Internal(String),
    /// The daemon is stopping: the engine's work for this action was cancelled with it.
    #[error("the daemon is shutting down ({0})")]
    ShuttingDown(String),
}

impl EngineError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        EngineError::Invalid { field: field.into(), message: message.into() }
    }

    pub fn cannot_run(field: impl Into<String>, message: impl Into<String>) -> Self {
        EngineError::CannotRun { field: field.into(), message: message.into() }
    }
}

impl From<tessera_store::StoreError> for EngineError {
    fn from(e: tessera_store::StoreError) -> Self {
        EngineError::Internal(format!("store: {e}"))
    }
}
