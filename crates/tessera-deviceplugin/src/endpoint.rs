//! One plugin endpoint: the `DevicePlugin` service for one resource name. `ListAndWatch`
//! streams the resource's devices from the snapshot channel; `GetPreferredAllocation` and
//! `Allocate` are `tessera-kube-core`'s decisions turned into kubelet messages.

use std::pin::Pin;
use std::sync::Arc;

use tessera_kube_core::{
    AllocError, AllocateOptions, ContainerAllocation, DeviceHealth, PluginDevice, ResourceName, allocate,
    preferred_allocation,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::api;
use crate::door::HoldError;
use crate::plugin::Holder;
use crate::source::NodeSnapshot;

/// The kubelet's name for a healthy device.
pub const HEALTHY: &str = "Healthy";
/// The kubelet's name for an unhealthy device.
pub const UNHEALTHY: &str = "Unhealthy";

/// The options every Tessera endpoint registers with: `GetPreferredAllocation` yes,
/// `PreStartContainer` no.
pub fn plugin_options() -> api::DevicePluginOptions {
    api::DevicePluginOptions { pre_start_required: false, get_preferred_allocation_available: true }
}

/// The `DevicePlugin` service of one resource.
#[derive(Debug, Clone)]
pub struct ResourceService {
    resource: ResourceName,
    snapshots: watch::Receiver<Arc<NodeSnapshot>>,
    options: Arc<AllocateOptions>,
    /// Flips to `true` when the endpoint stops: open `ListAndWatch` streams end then.
    stop: watch::Receiver<bool>,
    /// Inside the daemon: the engine holds what `Allocate` gives.
    holder: Option<Holder>,
}

impl ResourceService {
    pub fn new(
        resource: ResourceName,
        snapshots: watch::Receiver<Arc<NodeSnapshot>>,
        options: Arc<AllocateOptions>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        ResourceService { resource, snapshots, options, stop, holder: None }
    }

    /// `Allocate` holds the devices through `holder` (the engine's front door) before it answers.
    pub fn holding_through(mut self, holder: Option<Holder>) -> Self {
        self.holder = holder;
        self
    }

    /// The resource's devices in `snapshot`, as the kubelet gets them (none when the resource
    /// is gone: the endpoint is being stopped).
    fn devices(&self, snapshot: &NodeSnapshot) -> Vec<api::Device> {
        snapshot
            .inventory
            .resources
            .get(&self.resource)
            .map(|ds| ds.iter().map(to_api_device).collect())
            .unwrap_or_default()
    }

    /// Refuses a device of another resource, or one this node does not advertise at all.
    fn check_ours(&self, snapshot: &NodeSnapshot, ids: &[String]) -> Result<(), Status> {
        let ours = snapshot.inventory.resources.get(&self.resource);
        for id in ids {
            if !ours.is_some_and(|ds| ds.iter().any(|d| &d.id == id)) {
                return Err(Status::invalid_argument(match snapshot.inventory.device(id) {
                    Some((other, _)) => format!("device '{id}' is a {other} device, not a {}", self.resource),
                    None => format!("unknown device '{id}': this node does not advertise it as {}", self.resource),
                }));
            }
        }
        Ok(())
    }
}

impl ResourceService {
    /// One container: NVIDIA's answer, and (inside the daemon) the engine's holds on its
    /// devices, made before the kubelet hears of them.
    async fn allocate_one(
        &self,
        snapshot: &NodeSnapshot,
        ids: &[String],
    ) -> Result<(ContainerAllocation, Vec<u64>), Status> {
        self.check_ours(snapshot, ids)?;
        let a = allocate(ids, &snapshot.inventory, &self.options).map_err(|e| to_status(&e))?;
        let held = match &self.holder {
            Some(h) => h.door.hold(ids, &snapshot.gpus, None).await.map_err(|e| hold_status(&e))?,
            None => Vec::new(),
        };
        Ok((a, held))
    }
}

/// A device this node does not have is the kubelet's mistake (`InvalidArgument`); one the
/// engine cannot hold now (another job holds it, the GPU failed) is `FailedPrecondition`,
/// naming why.
fn hold_status(e: &HoldError) -> Status {
    match e {
        HoldError::UnknownDevice(_) => Status::invalid_argument(e.to_string()),
        HoldError::Engine(_) | HoldError::NotHeld { .. } => Status::failed_precondition(e.to_string()),
    }
}

/// A plugin device as the kubelet sees it: ID, health, and the host NUMA node (none: no
/// affinity).
pub fn to_api_device(d: &PluginDevice) -> api::Device {
    api::Device {
        id: d.id.clone(),
        health: match d.health {
            DeviceHealth::Healthy => HEALTHY,
            DeviceHealth::Unhealthy => UNHEALTHY,
        }
        .to_string(),
        topology: d.numa_node.map(|id| api::TopologyInfo { nodes: vec![api::NumaNode { id }] }),
    }
}

/// A request the kubelet should not have made is `InvalidArgument`; one the node's state refuses
/// now (an unhealthy or draining device, too few usable ones) is `FailedPrecondition`.
fn to_status(e: &AllocError) -> Status {
    use AllocError as E;
    match e {
        E::UnknownDevice { .. }
        | E::MixedResources { .. }
        | E::MustIncludeUnavailable { .. }
        | E::Duplicate { .. }
        | E::SizeBelowMustInclude { .. }
        | E::SharedRequestTooLarge { .. }
        | E::Empty => Status::invalid_argument(e.to_string()),
        E::Unhealthy { .. } | E::Draining { .. } | E::NotEnough { .. } => Status::failed_precondition(e.to_string()),
    }
}

fn to_api_allocation(a: ContainerAllocation) -> api::ContainerAllocateResponse {
    api::ContainerAllocateResponse {
        envs: a.envs.into_iter().collect(),
        mounts: a
            .mounts
            .into_iter()
            .map(|m| api::Mount { container_path: m.container_path, host_path: m.host_path, read_only: m.read_only })
            .collect(),
        devices: a
            .devices
            .into_iter()
            .map(|d| api::DeviceSpec {
                container_path: d.container_path,
                host_path: d.host_path,
                permissions: d.permissions,
            })
            .collect(),
        annotations: a.annotations.into_iter().collect(),
        cdi_devices: a.cdi_devices.into_iter().map(|name| api::CdiDevice { name }).collect(),
    }
}

type DeviceStream = Pin<Box<dyn Stream<Item = Result<api::ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl api::device_plugin_server::DevicePlugin for ResourceService {
    async fn get_device_plugin_options(
        &self,
        _: Request<api::Empty>,
    ) -> Result<Response<api::DevicePluginOptions>, Status> {
        Ok(Response::new(plugin_options()))
    }

    type ListAndWatchStream = DeviceStream;

    async fn list_and_watch(&self, _: Request<api::Empty>) -> Result<Response<DeviceStream>, Status> {
        let (tx, rx) = mpsc::channel(4);
        let mut snapshots = self.snapshots.clone();
        let mut stop = self.stop.clone();
        let this = self.clone();
        tokio::spawn(async move {
            let mut sent: Option<Vec<api::Device>> = None;
            loop {
                let devices = this.devices(&snapshots.borrow_and_update());
                // The full list at once, then again whenever it changes.
                if sent.as_ref() != Some(&devices) {
                    if tx.send(Ok(api::ListAndWatchResponse { devices: devices.clone() })).await.is_err() {
                        return;
                    }
                    sent = Some(devices);
                }
                tokio::select! {
                    changed = snapshots.changed() => if changed.is_err() { return },
                    _ = stop.wait_for(|s| *s) => return,
                    () = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_preferred_allocation(
        &self,
        request: Request<api::PreferredAllocationRequest>,
    ) -> Result<Response<api::PreferredAllocationResponse>, Status> {
        let snapshot = self.snapshots.borrow().clone();
        let mut container_responses = Vec::new();
        for (n, c) in request.into_inner().container_requests.into_iter().enumerate() {
            let size = usize::try_from(c.allocation_size).map_err(|_| {
                Status::invalid_argument(format!(
                    "container request {n}: allocation_size {} is negative",
                    c.allocation_size
                ))
            })?;
            self.check_ours(&snapshot, &c.available_device_i_ds)?;
            self.check_ours(&snapshot, &c.must_include_device_i_ds)?;
            let ids = preferred_allocation(
                &c.available_device_i_ds,
                &c.must_include_device_i_ds,
                size,
                &snapshot.inventory,
                &snapshot.gpus,
            )
            .map_err(|e| to_status(&e))?;
            container_responses.push(api::ContainerPreferredAllocationResponse { device_i_ds: ids });
        }
        Ok(Response::new(api::PreferredAllocationResponse { container_responses }))
    }

    async fn allocate(
        &self,
        request: Request<api::AllocateRequest>,
    ) -> Result<Response<api::AllocateResponse>, Status> {
        let snapshot = self.snapshots.borrow().clone();
        let mut container_responses = Vec::new();
        let mut held = Vec::new();
        for c in request.into_inner().container_requests {
            let answered = self.allocate_one(&snapshot, &c.devices_ids).await;
            match answered {
                Ok((a, ids)) => {
                    held.extend(ids);
                    container_responses.push(to_api_allocation(a));
                }
                Err(status) => {
                    // All or nothing: what this request held for earlier containers goes back.
                    if let Some(h) = &self.holder {
                        for id in held {
                            h.door.release(id, "the kubelet's Allocate failed for another container").await;
                        }
                    }
                    return Err(status);
                }
            }
        }
        if let Some(h) = &self.holder {
            // The kubelet lists the pod once this answer is in: read PodResources soon after.
            let nudge = h.nudge.clone();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                nudge.notify_one();
            });
        }
        Ok(Response::new(api::AllocateResponse { container_responses }))
    }

    async fn pre_start_container(
        &self,
        _: Request<api::PreStartContainerRequest>,
    ) -> Result<Response<api::PreStartContainerResponse>, Status> {
        // Registered with `pre_start_required = false`: there is nothing to do before a start.
        Ok(Response::new(api::PreStartContainerResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn device(numa_node: Option<i64>, health: DeviceHealth) -> PluginDevice {
        PluginDevice {
            id: "MIG-1".into(),
            health,
            numa_node,
            gpu_index: 0,
            gpu_uuid: "GPU-1".into(),
            mig_uuid: Some("MIG-1".into()),
            profile: Some("1g.10gb".into()),
            gpu_instance_id: Some(9),
            gpu_numa_node: None,
            device_nodes: Vec::new(),
            draining: false,
            replicas: 1,
            memory_mib: Some(10240),
        }
    }

    #[test]
    fn devices_carry_health_and_the_host_numa_node() {
        let table = [
            (Some(0), DeviceHealth::Healthy, "Healthy", Some(vec![0])),
            (Some(1), DeviceHealth::Unhealthy, "Unhealthy", Some(vec![1])),
            // No NUMA node: no topology at all, which the kubelet reads as "no affinity".
            (None, DeviceHealth::Healthy, "Healthy", None),
        ];
        for (numa, health, name, nodes) in table {
            let d = to_api_device(&device(numa, health));
            assert_eq!(d.health, name);
            assert_eq!(d.topology.map(|t| t.nodes.iter().map(|n| n.id).collect::<Vec<_>>()), nodes);
        }
    }

    /// The bytes the kubelet's Go code produces for these messages, from the field tags of
    /// `api.proto` (tag << 3 | wire type, then the length or varint).
    #[test]
    fn the_wire_format_is_the_kubelets() {
        let reg = api::RegisterRequest {
            version: "v1beta1".into(),
            endpoint: "e.sock".into(),
            resource_name: "a/b".into(),
            options: Some(plugin_options()),
        };
        let mut want = vec![0x0a, 7];
        want.extend(b"v1beta1");
        want.extend([0x12, 6]);
        want.extend(b"e.sock");
        want.extend([0x1a, 3]);
        want.extend(b"a/b");
        // options: field 4, holding get_preferred_allocation_available (field 2) = true.
        want.extend([0x22, 2, 0x10, 1]);
        assert_eq!(reg.encode_to_vec(), want);

        let d = to_api_device(&device(Some(1), DeviceHealth::Healthy));
        let mut want = vec![0x0a, 5];
        want.extend(b"MIG-1");
        want.extend([0x12, 7]);
        want.extend(b"Healthy");
        // topology: field 3 → nodes: field 1 → NUMANode.ID: field 1 varint 1.
        want.extend([0x1a, 4, 0x0a, 2, 0x08, 1]);
        assert_eq!(d.encode_to_vec(), want);

        let p = api::ContainerPreferredAllocationRequest {
            available_device_i_ds: vec!["x".into()],
            must_include_device_i_ds: vec!["y".into()],
            allocation_size: 2,
        };
        assert_eq!(p.encode_to_vec(), [0x0a, 1, b'x', 0x12, 1, b'y', 0x18, 2]);
        let c = api::ContainerAllocateResponse {
            cdi_devices: vec![api::CdiDevice { name: "k=x".into() }],
            ..Default::default()
        };
        assert_eq!(c.encode_to_vec(), [0x2a, 5, 0x0a, 3, b'k', b'=', b'x']);
    }
}
