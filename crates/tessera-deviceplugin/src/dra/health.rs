//! Keeping up with the engine: one task reads the engine's state at every change notice, every
//! time the prepared claims change, and every [`DraOptions::poll_interval`] (health changes send
//! no notice), and publishes from it both the GPUs the driver advertises
//! ([`super::DraDriver::published`]) and the health of every device of every prepared claim.
//! `NodeWatchResources` ([`HealthService`]) streams that health to the kubelet: the complete
//! list at once, again whenever it changes, and at least every
//! [`DraOptions::health_resend`] with a fresh time (the kubelet counts a device it has not heard
//! of for a while as unknown).
//!
//! [`DraOptions::poll_interval`]: super::DraOptions::poll_interval
//! [`DraOptions::health_resend`]: super::DraOptions::health_resend

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tessera_daemon::engine::NodeState;
use tessera_kube_core::dra::DraGpu;
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::api::health::{
    self as api, DeviceIdentifier, HealthStatus, NodeWatchResourcesRequest, NodeWatchResourcesResponse,
};
use super::checkpoint::{ClaimEntry, ClaimPhase};
use super::node::{DeviceHealthStatus, device_health, dra_gpus, same_gpus};
use super::prepare::Driver;

/// The health of one device of a prepared claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceHealthEntry {
    pub pool: String,
    pub device: String,
    pub status: DeviceHealthStatus,
    /// Why (the fencing reason when unhealthy); may be empty.
    pub message: String,
}

/// The health of every device of every prepared claim, by claim UID then device order.
pub fn claims_health(state: &NodeState, claims: &BTreeMap<String, ClaimEntry>) -> Vec<DeviceHealthEntry> {
    claims
        .values()
        .filter(|e| e.phase == ClaimPhase::Prepared)
        .flat_map(|e| &e.devices)
        .map(|d| {
            let (status, message) = device_health(state, d.gpu, d.gpu_instance_id);
            DeviceHealthEntry { pool: d.pool.clone(), device: d.device.clone(), status, message }
        })
        .collect()
}

/// What the watcher keeps current.
#[derive(Debug)]
pub(crate) struct Published {
    pub gpus: watch::Sender<Arc<Vec<DraGpu>>>,
    pub health: watch::Sender<Arc<Vec<DeviceHealthEntry>>>,
}

impl Published {
    /// Both from one read of the engine's state; a receiver sees a change only when there is
    /// one.
    pub async fn update(&self, driver: &Driver, state: &NodeState) {
        let gpus = dra_gpus(state);
        self.gpus.send_if_modified(|current| {
            let changed = !same_gpus(current, &gpus);
            if changed {
                *current = Arc::new(gpus);
            }
            changed
        });
        let health = claims_health(state, driver.checkpoint.lock().await.claims());
        self.health.send_if_modified(|current| {
            let changed = **current != health;
            if changed {
                *current = Arc::new(health);
            }
            changed
        });
    }
}

/// Reads the engine's state and updates `published` until `stop` turns true (see the module
/// header). A failed read keeps what was published and is logged once while it lasts.
pub(crate) async fn watch_engine(driver: Arc<Driver>, published: Arc<Published>, mut stop: watch::Receiver<bool>) {
    let mut changes = driver.engine.changes();
    let mut claims = driver.changed.subscribe();
    let mut failing: Option<String> = None;
    loop {
        match driver.engine.node_state().await {
            Ok(state) => {
                if failing.take().is_some() {
                    tracing::info!("DRA: the engine's state reads again");
                }
                published.update(&driver, &state).await;
            }
            Err(e) => {
                let text = e.to_string();
                if failing.as_deref() != Some(&text) {
                    tracing::warn!("DRA: reading the engine's state: {text}; what is published stays");
                    failing = Some(text);
                }
            }
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            changed = changes.changed() => if changed.is_err() { return },
            _ = claims.changed() => {}
            () = tokio::time::sleep(driver.options.poll_interval) => {}
        }
    }
}

/// The `DRAResourceHealth` service.
#[derive(Debug, Clone)]
pub struct HealthService {
    health: watch::Receiver<Arc<Vec<DeviceHealthEntry>>>,
    stop: watch::Receiver<bool>,
    resend: Duration,
}

impl HealthService {
    /// Streams what `health` holds; open streams end when `stop` turns true.
    pub fn new(
        health: watch::Receiver<Arc<Vec<DeviceHealthEntry>>>,
        stop: watch::Receiver<bool>,
        resend: Duration,
    ) -> HealthService {
        HealthService { health, stop, resend }
    }
}

/// The kubelet's message for `list`, stamped `now` (Unix seconds).
pub fn health_message(list: &[DeviceHealthEntry], now: i64) -> NodeWatchResourcesResponse {
    NodeWatchResourcesResponse {
        devices: list
            .iter()
            .map(|d| api::DeviceHealth {
                device: Some(DeviceIdentifier { pool_name: d.pool.clone(), device_name: d.device.clone() }),
                health: match d.status {
                    DeviceHealthStatus::Healthy => HealthStatus::Healthy,
                    DeviceHealthStatus::Unhealthy => HealthStatus::Unhealthy,
                    DeviceHealthStatus::Unknown => HealthStatus::Unknown,
                } as i32,
                last_updated_time: now,
                health_check_timeout_seconds: 0,
                message: d.message.clone(),
            })
            .collect(),
    }
}

type HealthStream = Pin<Box<dyn Stream<Item = Result<NodeWatchResourcesResponse, Status>> + Send>>;

#[tonic::async_trait]
impl api::dra_resource_health_server::DraResourceHealth for HealthService {
    type NodeWatchResourcesStream = HealthStream;

    async fn node_watch_resources(
        &self,
        _: Request<NodeWatchResourcesRequest>,
    ) -> Result<Response<HealthStream>, Status> {
        let (tx, rx) = mpsc::channel(4);
        let (mut health, mut stop, resend) = (self.health.clone(), self.stop.clone(), self.resend);
        tokio::spawn(async move {
            loop {
                let list = health.borrow_and_update().clone();
                let now = i64::try_from(tessera_host::now_ms() / 1000).unwrap_or(i64::MAX);
                if tx.send(Ok(health_message(&list, now))).await.is_err() {
                    return;
                }
                tokio::select! {
                    changed = health.changed() => if changed.is_err() { return },
                    () = tokio::time::sleep(resend) => {}
                    _ = stop.wait_for(|s| *s) => return,
                    () = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// `v1.DRAResourceHealth` (Kubernetes 1.37): the v1alpha1 stream, each message carried over
/// unchanged (the two packages' messages have the same fields and tags).
#[tonic::async_trait]
impl super::api::health_v1::dra_resource_health_server::DraResourceHealth for HealthService {
    type NodeWatchResourcesStream =
        Pin<Box<dyn Stream<Item = Result<super::api::health_v1::NodeWatchResourcesResponse, Status>> + Send>>;

    async fn node_watch_resources(
        &self,
        _: Request<super::api::health_v1::NodeWatchResourcesRequest>,
    ) -> Result<Response<Self::NodeWatchResourcesStream>, Status> {
        use prost::Message as _;
        use tokio_stream::StreamExt as _;
        let alpha = api::dra_resource_health_server::DraResourceHealth::node_watch_resources(
            self,
            Request::new(NodeWatchResourcesRequest {}),
        )
        .await?
        .into_inner();
        let v1 = alpha.map(|m| {
            m.and_then(|m| {
                super::api::health_v1::NodeWatchResourcesResponse::decode(m.encode_to_vec().as_slice())
                    .map_err(|e| Status::internal(format!("health message: {e}")))
            })
        });
        Ok(Response::new(Box::pin(v1)))
    }
}
