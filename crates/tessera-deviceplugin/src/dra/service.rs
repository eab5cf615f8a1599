//! The gRPC services the kubelet calls: the plugin watcher's `Registration` on the
//! registration socket, and `DRAPlugin` in both versions on the endpoint, one implementation
//! behind both (v1beta1 only lacks `share_id`).
//!
//! Every claim of a request is prepared (or unprepared) on its own task, side by side, and every
//! claim gets its entry in the answer: a claim that fails (or whose task fails) answers its
//! error, naming the claim, the device and why; the others are not held back by it.

use std::collections::HashMap;
use std::sync::Arc;

use tessera_kube_core::dra_claim::ClaimRef;
use tonic::{Request, Response, Status};

use super::api::registration::registration_server::Registration;
use super::api::registration::{InfoRequest, PluginInfo, RegistrationStatus, RegistrationStatusResponse};
use super::api::{v1, v1beta1};
use super::checkpoint::ClaimDevice;
use super::prepare::Driver;

/// The plugin watcher's `Registration` service.
#[derive(Debug, Clone)]
pub struct RegistrationService {
    info: PluginInfo,
}

impl RegistrationService {
    /// Answers `GetInfo` with `info`.
    pub fn new(info: PluginInfo) -> RegistrationService {
        RegistrationService { info }
    }
}

#[tonic::async_trait]
impl Registration for RegistrationService {
    async fn get_info(&self, _: Request<InfoRequest>) -> Result<Response<PluginInfo>, Status> {
        Ok(Response::new(self.info.clone()))
    }

    async fn notify_registration_status(
        &self,
        request: Request<RegistrationStatus>,
    ) -> Result<Response<RegistrationStatusResponse>, Status> {
        let status = request.into_inner();
        if status.plugin_registered {
            tracing::info!("DRA: the kubelet registered {} at {}", self.info.name, self.info.endpoint);
        } else {
            tracing::error!("DRA: the kubelet did not register {}: {}", self.info.name, status.error);
        }
        Ok(Response::new(RegistrationStatusResponse {}))
    }
}

/// `DRAPlugin`, v1 and v1beta1.
#[derive(Clone)]
pub struct NodeService {
    driver: Arc<Driver>,
}

impl std::fmt::Debug for NodeService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeService").field("driver", &self.driver.options.driver).finish()
    }
}

impl NodeService {
    pub(crate) fn new(driver: Arc<Driver>) -> NodeService {
        NodeService { driver }
    }

    /// Prepares every claim, each on its own task; by claim UID.
    async fn prepare(&self, claims: Vec<ClaimRef>) -> HashMap<String, Result<Vec<ClaimDevice>, String>> {
        let tasks: Vec<_> = claims
            .into_iter()
            .map(|claim| {
                let (driver, mine) = (self.driver.clone(), claim.clone());
                let task = tokio::spawn(async move {
                    let claim = mine;
                    if claim.uid.is_empty() {
                        return Err(format!("claim {}/{}: it has no UID", claim.namespace, claim.name));
                    }
                    driver.prepare(&claim).await.map_err(|e| e.to_string())
                });
                (claim, task)
            })
            .collect();
        let mut out = HashMap::new();
        for (claim, task) in tasks {
            let result = task.await.unwrap_or_else(|e| Err(format!("claim {claim}: preparing it failed: {e}")));
            if let Err(e) = &result {
                tracing::warn!("DRA: {e}");
            }
            out.insert(claim.uid, result);
        }
        out
    }

    /// Unprepares every claim, each on its own task; by claim UID (`""`: done).
    async fn unprepare(&self, claims: Vec<ClaimRef>) -> HashMap<String, String> {
        let tasks: Vec<_> = claims
            .into_iter()
            .map(|claim| {
                let (driver, mine) = (self.driver.clone(), claim.clone());
                let task = tokio::spawn(async move { driver.unprepare(&mine).await.map_err(|e| e.to_string()) });
                (claim, task)
            })
            .collect();
        let mut out = HashMap::new();
        for (claim, task) in tasks {
            let error = match task.await {
                Ok(Ok(())) => String::new(),
                Ok(Err(e)) => e,
                Err(e) => format!("claim {claim}: unpreparing it failed: {e}"),
            };
            if !error.is_empty() {
                tracing::warn!("DRA: {error}");
            }
            out.insert(claim.uid, error);
        }
        out
    }
}

fn claim_ref(namespace: String, name: String, uid: String) -> ClaimRef {
    ClaimRef { namespace, name, uid }
}

#[tonic::async_trait]
impl v1::dra_plugin_server::DraPlugin for NodeService {
    async fn node_prepare_resources(
        &self,
        request: Request<v1::NodePrepareResourcesRequest>,
    ) -> Result<Response<v1::NodePrepareResourcesResponse>, Status> {
        let claims = request.into_inner().claims.into_iter().map(|c| claim_ref(c.namespace, c.name, c.uid)).collect();
        let claims = self
            .prepare(claims)
            .await
            .into_iter()
            .map(|(uid, result)| {
                let answer = match result {
                    Ok(devices) => v1::NodePrepareResourceResponse {
                        devices: devices
                            .into_iter()
                            .map(|d| v1::Device {
                                request_names: vec![d.request],
                                pool_name: d.pool,
                                device_name: d.device,
                                cdi_device_ids: d.cdi_id.into_iter().collect(),
                                share_id: d.share_id,
                            })
                            .collect(),
                        error: String::new(),
                    },
                    Err(error) => v1::NodePrepareResourceResponse { devices: Vec::new(), error },
                };
                (uid, answer)
            })
            .collect();
        Ok(Response::new(v1::NodePrepareResourcesResponse { claims }))
    }

    async fn node_unprepare_resources(
        &self,
        request: Request<v1::NodeUnprepareResourcesRequest>,
    ) -> Result<Response<v1::NodeUnprepareResourcesResponse>, Status> {
        let claims = request.into_inner().claims.into_iter().map(|c| claim_ref(c.namespace, c.name, c.uid)).collect();
        let claims = self
            .unprepare(claims)
            .await
            .into_iter()
            .map(|(uid, error)| (uid, v1::NodeUnprepareResourceResponse { error }))
            .collect();
        Ok(Response::new(v1::NodeUnprepareResourcesResponse { claims }))
    }
}

/// A message of one version as the same message of another: v1beta1's messages are v1's less
/// `Device.share_id` (field 5), with the same fields and tags, so v1beta1 is served by the v1
/// implementation through the wire format (a v1 `share_id` is dropped as an unknown field).
fn same_message<A: prost::Message, B: prost::Message + Default>(a: &A) -> Result<B, Status> {
    B::decode(a.encode_to_vec().as_slice()).map_err(|e| Status::internal(format!("DRA message: {e}")))
}

#[tonic::async_trait]
impl v1beta1::dra_plugin_server::DraPlugin for NodeService {
    async fn node_prepare_resources(
        &self,
        request: Request<v1beta1::NodePrepareResourcesRequest>,
    ) -> Result<Response<v1beta1::NodePrepareResourcesResponse>, Status> {
        let request: v1::NodePrepareResourcesRequest = same_message(request.get_ref())?;
        let answer =
            v1::dra_plugin_server::DraPlugin::node_prepare_resources(self, Request::new(request)).await?.into_inner();
        Ok(Response::new(same_message(&answer)?))
    }

    async fn node_unprepare_resources(
        &self,
        request: Request<v1beta1::NodeUnprepareResourcesRequest>,
    ) -> Result<Response<v1beta1::NodeUnprepareResourcesResponse>, Status> {
        let request: v1::NodeUnprepareResourcesRequest = same_message(request.get_ref())?;
        let answer =
            v1::dra_plugin_server::DraPlugin::node_unprepare_resources(self, Request::new(request)).await?.into_inner();
        Ok(Response::new(same_message(&answer)?))
    }
}
