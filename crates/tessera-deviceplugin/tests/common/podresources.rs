//! A PodResources stand-in: the kubelet's real v1 `PodResourcesLister` service on a Unix socket,
//! answering `List` with the containers and devices a test sets, as the kubelet's device manager
//! reports them once it allocated them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tessera_deviceplugin::podresources_api::pod_resources_lister_server::{
    PodResourcesLister, PodResourcesListerServer,
};
use tessera_deviceplugin::podresources_api::{
    AllocatableResourcesRequest, AllocatableResourcesResponse, ContainerDevices, ContainerResources,
    GetPodResourcesRequest, GetPodResourcesResponse, ListPodResourcesRequest, ListPodResourcesResponse, PodResources,
};
use tessera_deviceplugin::uds::bind;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

/// One container's devices: namespace, pod, container, resource, device IDs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub resource: String,
    pub ids: Vec<String>,
}

impl Held {
    pub fn new(key: &str, resource: &str, ids: &[&str]) -> Held {
        let mut parts = key.splitn(3, '/');
        let mut next = || parts.next().expect("namespace/pod/container").to_string();
        Held {
            namespace: next(),
            pod: next(),
            container: next(),
            resource: resource.to_string(),
            ids: ids.iter().map(|s| s.to_string()).collect(),
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Lister {
    held: Arc<Mutex<Vec<Held>>>,
    lists: Arc<Mutex<usize>>,
}

#[tonic::async_trait]
impl PodResourcesLister for Lister {
    async fn list(&self, _: Request<ListPodResourcesRequest>) -> Result<Response<ListPodResourcesResponse>, Status> {
        *self.lists.lock().unwrap_or_else(std::sync::PoisonError::into_inner) += 1;
        let held = self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let mut pods: Vec<PodResources> = Vec::new();
        for h in held {
            let container = ContainerResources {
                name: h.container.clone(),
                devices: vec![ContainerDevices {
                    resource_name: h.resource.clone(),
                    device_ids: h.ids.clone(),
                    topology: None,
                }],
                ..ContainerResources::default()
            };
            match pods.iter_mut().find(|p| p.name == h.pod && p.namespace == h.namespace) {
                Some(p) => p.containers.push(container),
                None => pods.push(PodResources { name: h.pod, namespace: h.namespace, containers: vec![container] }),
            }
        }
        Ok(Response::new(ListPodResourcesResponse { pod_resources: pods }))
    }

    async fn get_allocatable_resources(
        &self,
        _: Request<AllocatableResourcesRequest>,
    ) -> Result<Response<AllocatableResourcesResponse>, Status> {
        Ok(Response::new(AllocatableResourcesResponse::default()))
    }

    async fn get(&self, r: Request<GetPodResourcesRequest>) -> Result<Response<GetPodResourcesResponse>, Status> {
        let r = r.into_inner();
        Err(Status::not_found(format!("pod {}/{} (the stand-in answers List only)", r.pod_namespace, r.pod_name)))
    }
}

/// The stand-in, serving until dropped.
#[derive(Debug)]
pub struct PodResourcesStandIn {
    pub socket: PathBuf,
    lister: Lister,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl PodResourcesStandIn {
    /// Serves on `socket`.
    pub fn start(socket: &Path) -> PodResourcesStandIn {
        let listener = bind(socket).expect("binding the pod resources socket");
        let lister = Lister::default();
        let (stop, mut stopped) = watch::channel(false);
        let service = PodResourcesListerServer::new(lister.clone());
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await
                .expect("the pod resources stand-in's server");
        });
        PodResourcesStandIn { socket: socket.to_path_buf(), lister, stop, task }
    }

    /// What `List` answers from now on.
    pub fn set(&self, held: Vec<Held>) {
        *self.lister.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = held;
    }

    /// How many times `List` was called.
    pub fn lists(&self) -> usize {
        *self.lister.lists.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for PodResourcesStandIn {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.task.abort();
    }
}
