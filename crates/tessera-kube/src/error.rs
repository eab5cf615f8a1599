//! What can go wrong talking to the Kubernetes API, and in the values read from it.

use crate::annotations::AnnotationError;

/// An error of the node agent's or the controller's Kubernetes side.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// No client could be made (no in-cluster service account and no kubeconfig, or a bad URL).
    #[error("connecting to the Kubernetes API ({target}): {source}")]
    Connect {
        target: String,
        #[source]
        source: kube::Error,
    },
    /// A request failed; `what` names the request and the object.
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    /// One of Tessera's annotations cannot be read.
    #[error(transparent)]
    Annotation(#[from] AnnotationError),
    /// A setting (flag or environment variable) is missing or wrong; the message names it.
    #[error("{0}")]
    Setting(String),
    /// The ResourceClaim of that name is another claim than the kubelet named: deleted and
    /// re-created under the same name.
    #[error("ResourceClaim {claim}: the API server's claim of that name has uid '{found}' (deleted and re-created)")]
    ClaimReplaced { claim: String, found: String },
    /// The claim has no `status.allocation`: the scheduler has not allocated it (or deallocated it).
    #[error("ResourceClaim {claim} is not allocated (no status.allocation)")]
    ClaimNotAllocated { claim: String },
    /// The claim's allocation cannot be read; `problem` says where.
    #[error("ResourceClaim {claim}: {problem}")]
    ClaimMalformed { claim: String, problem: String },
    /// A value Tessera built does not read as the official type (a bug, named).
    #[error("{what}: {source}")]
    Convert {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

impl KubeError {
    /// A failed request, named.
    pub(crate) fn api(what: impl Into<String>) -> impl FnOnce(kube::Error) -> KubeError {
        let what = what.into();
        move |source| KubeError::Api { what, source }
    }
}

/// The HTTP status of a failed API request, when the API server answered.
pub(crate) fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}
