//! The Kubernetes client, and the watches that wake the node agent and the controller.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio_stream::StreamExt;

use crate::error::KubeError;

/// A client for the API server at `url`, or, without one, the pod's service account (in a
/// cluster) or the kubeconfig (`KUBECONFIG`, `~/.kube/config`) as `kubectl` finds it.
pub async fn connect(url: Option<&str>) -> Result<Client, KubeError> {
    match url {
        Some(url) => {
            let uri = url.parse().map_err(|e| KubeError::Setting(format!("--kube-api-url {url}: not a URL ({e})")))?;
            Client::try_from(kube::Config::new(uri))
                .map_err(|source| KubeError::Connect { target: url.to_string(), source })
        }
        None => Client::try_default()
            .await
            .map_err(|source| KubeError::Connect { target: "in-cluster service account or kubeconfig".into(), source }),
    }
}

/// Lists and watches the objects `api` and `field_selector` select, forever, and wakes `wake`
/// after the list and on every change: the caller reads what it needs when woken. A watch that
/// ends or fails (a `410 Gone` included) starts again from a new list.
pub(crate) async fn wake_on_changes<K>(api: Api<K>, field_selector: Option<String>, wake: Arc<Notify>)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default,
{
    let what = K::kind(&Default::default()).to_string();
    loop {
        let mut lp = ListParams::default();
        if let Some(f) = &field_selector {
            lp = lp.fields(f);
        }
        let version = match api.list(&lp).await {
            Ok(list) => list.metadata.resource_version.unwrap_or_default(),
            Err(e) => {
                tracing::warn!("listing {what}: {e}; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        wake.notify_one();
        let mut wp = WatchParams::default().timeout(290);
        if let Some(f) = &field_selector {
            wp = wp.fields(f);
        }
        let stream = match api.watch(&wp, &version).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("watching {what}: {e}; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(WatchEvent::Added(_) | WatchEvent::Modified(_) | WatchEvent::Deleted(_)) => wake.notify_one(),
                Ok(WatchEvent::Bookmark(_)) => {}
                Ok(WatchEvent::Error(e)) => {
                    tracing::debug!("watch of {what} ended: {e}");
                    break;
                }
                Err(e) => {
                    tracing::debug!("watch of {what} ended: {e}");
                    break;
                }
            }
        }
    }
}
