//! Reading the kubelet's PodResources API (v1, `proto/podresources/v1/api.proto`, generated into
//! [`crate::podresources_api`]): which container holds which of this node's devices.

use std::path::Path;
use std::time::Duration;

use tessera_gpu::GpuView;

use crate::door::{Listed, is_device_of};
use crate::error::PluginError;
use crate::podresources_api::pod_resources_lister_client::PodResourcesListerClient;
use crate::podresources_api::{ListPodResourcesRequest, ListPodResourcesResponse};
use crate::uds::unix_channel;

/// How long the kubelet has to answer `List`.
const LIST_TIMEOUT: Duration = Duration::from_secs(10);

/// `List` on the kubelet's PodResources socket, as [`listed_devices`] reads it.
pub async fn list_pod_devices(socket: &Path, gpus: &[GpuView]) -> Result<Listed, PluginError> {
    let fail = |message: String| PluginError::PodResources { path: socket.to_path_buf(), message };
    let channel = unix_channel(socket).await?;
    let mut client = PodResourcesListerClient::new(channel);
    let reply = tokio::time::timeout(LIST_TIMEOUT, client.list(ListPodResourcesRequest {}))
        .await
        .map_err(|_| fail(format!("no answer to List within {} s", LIST_TIMEOUT.as_secs())))?
        .map_err(|s| fail(format!("List: {}", s.message())))?;
    Ok(listed_devices(&reply.into_inner(), gpus))
}

/// Every container with devices of this node (`gpus`): `<namespace>/<pod>/<container>` → its
/// device IDs, of every resource (a replica keeps its `::<n>`).
pub fn listed_devices(reply: &ListPodResourcesResponse, gpus: &[GpuView]) -> Listed {
    let mut out = Listed::new();
    for pod in &reply.pod_resources {
        for c in &pod.containers {
            let ids: Vec<&String> =
                c.devices.iter().flat_map(|d| &d.device_ids).filter(|id| is_device_of(id, gpus)).collect();
            if !ids.is_empty() {
                let key = tessera_kube_core::holds::container_key(&pod.namespace, &pod.name, &c.name);
                out.entry(key).or_default().extend(ids.into_iter().cloned());
            }
        }
    }
    out
}
