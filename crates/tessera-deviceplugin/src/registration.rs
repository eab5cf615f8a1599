//! Registering an endpoint with the kubelet (`Registration.Register` on `kubelet.sock`).

use std::path::Path;
use std::time::Duration;

use tessera_kube_core::ResourceName;

use crate::api;
use crate::endpoint::plugin_options;
use crate::error::PluginError;
use crate::uds::unix_channel;

/// The device plugin API version Tessera speaks.
pub const API_VERSION: &str = "v1beta1";
/// The kubelet's registration socket, in the device-plugins directory.
pub const KUBELET_SOCKET: &str = "kubelet.sock";
/// How long the kubelet has to answer a registration.
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(5);

/// Registers `resource`, served on `endpoint` (a file name in the kubelet socket's directory),
/// with the kubelet on `kubelet`.
pub async fn register(kubelet: &Path, endpoint: &str, resource: &ResourceName) -> Result<(), PluginError> {
    let call = async {
        let mut client = api::registration_client::RegistrationClient::new(unix_channel(kubelet).await?);
        let request = api::RegisterRequest {
            version: API_VERSION.to_string(),
            endpoint: endpoint.to_string(),
            resource_name: resource.as_str().to_string(),
            options: Some(plugin_options()),
        };
        client.register(request).await.map_err(|status| PluginError::Refused {
            kubelet: kubelet.to_path_buf(),
            resource: resource.clone(),
            message: status.message().to_string(),
        })?;
        Ok(())
    };
    match tokio::time::timeout(REGISTER_TIMEOUT, call).await {
        Ok(r) => r,
        Err(_) => Err(PluginError::RegisterTimeout {
            kubelet: kubelet.to_path_buf(),
            resource: resource.clone(),
            seconds: REGISTER_TIMEOUT.as_secs(),
        }),
    }
}
