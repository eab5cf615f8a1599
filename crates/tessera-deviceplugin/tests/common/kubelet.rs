//! A kubelet stand-in: the real v1beta1 `Registration` service on `kubelet.sock` in a
//! temporary device-plugins directory. Like the kubelet, it checks each registration, connects
//! back to the plugin's endpoint, asks its options, and consumes its `ListAndWatch` stream; it
//! calls `Allocate` and `GetPreferredAllocation` as the kubelet does at pod admission, and it can
//! restart (its socket removed and created again, registrations forgotten).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tessera_deviceplugin::api::device_plugin_client::DevicePluginClient;
use tessera_deviceplugin::api::registration_server::{Registration, RegistrationServer};
use tessera_deviceplugin::api::{self, Device, DevicePluginOptions, RegisterRequest};
use tessera_deviceplugin::uds::{bind, unix_channel};
use tessera_deviceplugin::{API_VERSION, KUBELET_SOCKET};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// What the stand-in has seen since it (re)started.
#[derive(Debug, Default)]
pub struct Seen {
    /// Every registration accepted, in order.
    pub registrations: Vec<RegisterRequest>,
    /// Each registered resource, by name (the latest registration wins, as in the kubelet).
    pub resources: BTreeMap<String, Resource>,
}

/// One registered resource.
#[derive(Debug)]
pub struct Resource {
    pub endpoint: String,
    /// What `GetDevicePluginOptions` answered.
    pub options: Option<DevicePluginOptions>,
    /// Every `ListAndWatch` message, in order.
    pub lists: Vec<Vec<Device>>,
    /// Whether the `ListAndWatch` stream is still open.
    pub streaming: bool,
    /// Why the connection back to the plugin failed, if it did.
    pub error: Option<String>,
    client: Option<DevicePluginClient<Channel>>,
    task: Option<JoinHandle<()>>,
}

impl Resource {
    /// The devices of the last `ListAndWatch` message.
    pub fn devices(&self) -> Option<&[Device]> {
        self.lists.last().map(Vec::as_slice)
    }
}

#[derive(Debug, Clone)]
struct Shared {
    dir: PathBuf,
    seen: Arc<Mutex<Seen>>,
    /// Bumped on every change of `seen`.
    version: Arc<watch::Sender<u64>>,
    /// Resource names whose registration is refused (as the kubelet refuses a name another
    /// plugin holds).
    refuse: Arc<Mutex<Vec<String>>>,
}

impl Shared {
    fn seen(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn changed(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// Connects back to a plugin endpoint and follows its `ListAndWatch` stream.
    async fn follow(self, resource: String, endpoint: String) {
        let fail = |me: &Shared, error: String| {
            if let Some(r) = me.seen().resources.get_mut(&resource) {
                r.error = Some(error);
                r.streaming = false;
            }
            me.changed();
        };
        let channel = match unix_channel(&self.dir.join(&endpoint)).await {
            Ok(c) => c,
            Err(e) => return fail(&self, e.to_string()),
        };
        let mut client = DevicePluginClient::new(channel);
        let options = match client.get_device_plugin_options(api::Empty {}).await {
            Ok(o) => o.into_inner(),
            Err(e) => return fail(&self, e.to_string()),
        };
        let mut stream = match client.list_and_watch(api::Empty {}).await {
            Ok(s) => s.into_inner(),
            Err(e) => return fail(&self, e.to_string()),
        };
        if let Some(r) = self.seen().resources.get_mut(&resource) {
            r.options = Some(options);
            r.client = Some(client);
            r.streaming = true;
        }
        self.changed();
        while let Some(message) = stream.next().await {
            match message {
                Ok(list) => {
                    if let Some(r) = self.seen().resources.get_mut(&resource) {
                        r.lists.push(list.devices);
                    }
                    self.changed();
                }
                Err(e) => return fail(&self, e.to_string()),
            }
        }
        if let Some(r) = self.seen().resources.get_mut(&resource) {
            r.streaming = false;
        }
        self.changed();
    }
}

#[tonic::async_trait]
impl Registration for Shared {
    async fn register(&self, request: Request<RegisterRequest>) -> Result<Response<api::Empty>, Status> {
        let r = request.into_inner();
        // The kubelet's checks: the version, a resource name with a domain, an endpoint.
        if r.version != API_VERSION {
            return Err(Status::invalid_argument(format!("unsupported device plugin API version {}", r.version)));
        }
        if !r.resource_name.contains('/') || r.endpoint.is_empty() || r.endpoint.contains('/') {
            return Err(Status::invalid_argument(format!("invalid registration {r:?}")));
        }
        if self.refuse.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(&r.resource_name) {
            return Err(Status::already_exists(format!("{} is registered by another plugin", r.resource_name)));
        }
        let mut seen = self.seen();
        let old = seen.resources.insert(
            r.resource_name.clone(),
            Resource {
                endpoint: r.endpoint.clone(),
                options: None,
                lists: Vec::new(),
                streaming: false,
                error: None,
                client: None,
                task: None,
            },
        );
        if let Some(task) = old.and_then(|o| o.task) {
            task.abort();
        }
        // Spawned under the lock: it reads `seen` only once this registration is recorded.
        let task = tokio::spawn(self.clone().follow(r.resource_name.clone(), r.endpoint.clone()));
        if let Some(res) = seen.resources.get_mut(&r.resource_name) {
            res.task = Some(task);
        }
        seen.registrations.push(r);
        drop(seen);
        self.changed();
        Ok(Response::new(api::Empty {}))
    }
}

/// How the stand-in restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// As the kubelet does: every file in the directory removed, then `kubelet.sock` created.
    CleanDirectory,
    /// Only `kubelet.sock` removed and created again (plugins' sockets left in place).
    SocketOnly,
}

/// The kubelet stand-in.
#[derive(Debug)]
pub struct Kubelet {
    shared: Shared,
    version: watch::Receiver<u64>,
    server: Option<(watch::Sender<bool>, JoinHandle<()>)>,
}

impl Kubelet {
    /// Serves `Registration` on `<dir>/kubelet.sock`.
    pub fn start(dir: &Path) -> Kubelet {
        let (tx, rx) = watch::channel(0);
        let shared =
            Shared { dir: dir.to_path_buf(), seen: Arc::default(), version: Arc::new(tx), refuse: Arc::default() };
        let mut k = Kubelet { shared, version: rx, server: None };
        k.serve();
        k
    }

    fn serve(&mut self) {
        let listener = bind(&self.shared.dir.join(KUBELET_SOCKET)).expect("binding kubelet.sock");
        let (stop, mut stopped) = watch::channel(false);
        let service = RegistrationServer::new(self.shared.clone());
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await
                .expect("the kubelet stand-in's server");
        });
        self.server = Some((stop, task));
    }

    async fn stop(&mut self) {
        if let Some((stop, task)) = self.server.take() {
            let _ = stop.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        let mut seen = self.shared.seen();
        for r in seen.resources.values_mut() {
            if let Some(t) = r.task.take() {
                t.abort();
            }
        }
        *seen = Seen::default();
    }

    /// Stops: the socket removed, every registration and connection forgotten.
    pub async fn down(&mut self) {
        self.stop().await;
        std::fs::remove_file(self.shared.dir.join(KUBELET_SOCKET)).expect("removing kubelet.sock");
    }

    /// Starts again after [`Self::down`].
    pub fn up(&mut self) {
        self.serve();
        self.shared.changed();
    }

    /// Stops, forgets every registration and connection, and starts again on a new socket.
    pub async fn restart(&mut self, how: Restart) {
        self.stop().await;
        let dir = self.shared.dir.clone();
        match how {
            Restart::CleanDirectory => {
                for entry in std::fs::read_dir(&dir).expect("reading the device-plugins directory") {
                    let path = entry.expect("a directory entry").path();
                    std::fs::remove_file(&path).expect("removing a socket");
                }
            }
            Restart::SocketOnly => std::fs::remove_file(dir.join(KUBELET_SOCKET)).expect("removing kubelet.sock"),
        }
        self.serve();
        self.shared.changed();
    }

    /// Refuses every later registration of `resource`.
    pub fn refuse(&self, resource: &str) {
        self.shared.refuse.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(resource.to_string());
    }

    /// Reads what was seen.
    pub fn seen<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.shared.seen())
    }

    /// Waits until `f` returns `Some` (checked on every change), at most `timeout`; panics with
    /// `what` and the state seen otherwise.
    pub async fn wait_for<T>(&self, what: &str, timeout: Duration, mut f: impl FnMut(&Seen) -> Option<T>) -> T {
        let mut version = self.version.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            version.borrow_and_update();
            if let Some(t) = f(&self.shared.seen()) {
                return t;
            }
            if tokio::time::timeout_at(deadline, version.changed()).await.is_err() {
                panic!("waited {timeout:?} for {what}; the kubelet saw {:#?}", *self.shared.seen());
            }
        }
    }

    fn client(&self, resource: &str) -> DevicePluginClient<Channel> {
        self.seen(|s| s.resources.get(resource).and_then(|r| r.client.clone()))
            .unwrap_or_else(|| panic!("{resource} is not registered and connected"))
    }

    /// `Allocate` for one container, as the kubelet calls it.
    pub async fn allocate(&self, resource: &str, ids: &[&str]) -> Result<api::ContainerAllocateResponse, Status> {
        let request = api::AllocateRequest {
            container_requests: vec![api::ContainerAllocateRequest {
                devices_ids: ids.iter().map(|s| s.to_string()).collect(),
            }],
        };
        // Not connected (the plugin restarting): the kubelet fails the pod's admission.
        let client = self.seen(|s| s.resources.get(resource).and_then(|r| r.client.clone()));
        let mut client = client.ok_or_else(|| Status::unavailable(format!("{resource} is not registered")))?;
        let mut r = client.allocate(request).await?.into_inner();
        assert_eq!(r.container_responses.len(), 1, "one response per container");
        Ok(r.container_responses.remove(0))
    }

    /// `GetPreferredAllocation` for one container.
    pub async fn preferred(
        &self,
        resource: &str,
        available: &[&str],
        must_include: &[&str],
        size: i32,
    ) -> Result<Vec<String>, Status> {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        let request = api::PreferredAllocationRequest {
            container_requests: vec![api::ContainerPreferredAllocationRequest {
                available_device_i_ds: strings(available),
                must_include_device_i_ds: strings(must_include),
                allocation_size: size,
            }],
        };
        let mut r = self.client(resource).get_preferred_allocation(request).await?.into_inner();
        assert_eq!(r.container_responses.len(), 1, "one response per container");
        Ok(r.container_responses.remove(0).device_i_ds)
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        if let Some((stop, task)) = self.server.take() {
            let _ = stop.send(true);
            task.abort();
        }
        for r in self.shared.seen().resources.values_mut() {
            if let Some(t) = r.task.take() {
                t.abort();
            }
        }
    }
}
