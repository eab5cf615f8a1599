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
