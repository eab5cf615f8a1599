//! The node agent's DRA driver (`[kubernetes.dra] enabled`): the kubelet plugin
//! (`tessera_deviceplugin::dra`) over the engine, its claims read from the API server and its
//! GPUs published as ResourceSlices (`tessera_kube::dra`), both through one client. The two
//! halves meet only here: the plugin's published GPUs feed the publisher.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tessera_daemon::config::KubernetesSection;
use tessera_daemon::daemon::EngineHandle;
use tessera_daemon::engine::{Caller, Door};
use tessera_deviceplugin::dra::{BoxFuture, CHECKPOINT_FILE, ClaimSource, DraDriver, DraOptions};
use tessera_kube::PublishSettings;
use tessera_kube_core::dra_claim::{ClaimAllocation, ClaimRef};
use tokio::sync::watch;

/// What the driver needs that the configuration file does not say: the node (`NODE_NAME`).
#[derive(Debug, Clone)]
pub struct DraSettings {
    pub options: DraOptions,
    pub api_server: Option<String>,
    pub tenant: String,
    pub republish: Duration,
}

/// The settings from `[kubernetes]` and the environment; an error names what is missing.
pub fn settings(k: &KubernetesSection, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<DraSettings> {
    let node = env("NODE_NAME").filter(|n| !n.is_empty()).context(
        "kubernetes.dra.enabled is on: NODE_NAME must name this node (the DaemonSet sets it from spec.nodeName)",
    )?;
    let mut options = DraOptions::new(&k.dra.driver, &node);
    options.plugin_dir = k.dra.plugin_dir();
    options.checkpoint = options.plugin_dir.join(CHECKPOINT_FILE);
    options.registry_dir.clone_from(&k.dra.registry_dir);
    options.cdi_dir.clone_from(&k.cdi_dir);
    Ok(DraSettings {
        options,
        api_server: k.api_server.clone(),
        tenant: k.tenant.clone(),
        republish: Duration::from_millis(k.dra.republish_interval_ms),
    })
}

/// Claims read from the API server.
struct ApiClaims(tessera_kube::Client);

impl ClaimSource for ApiClaims {
    fn allocation<'a>(&'a self, claim: &'a ClaimRef) -> BoxFuture<'a, Result<ClaimAllocation, String>> {
        Box::pin(async move { tessera_kube::claim_allocation(&self.0, claim).await.map_err(|e| e.to_string()) })
    }
}

/// Runs the driver until `stop` turns true: the kubelet plugin and the slice publisher.
pub async fn run(engine: Arc<EngineHandle>, s: DraSettings, stop: watch::Receiver<bool>) -> Result<(), String> {
    let client = tessera_kube::connect(s.api_server.as_deref()).await.map_err(|e| e.to_string())?;
    let caller = Caller {
        uid: tessera_host::effective_uid(),
        gid: 0,
        user: "kubernetes-dra".into(),
        tenant: s.tenant.clone(),
        admin: true,
        door: Door::Internal,
    };
    let node = s.options.node_name.clone();
    let driver_name = s.options.driver.clone();
    let mps = engine.mps();
    let driver = DraDriver::new(engine, caller, s.tenant, Arc::new(ApiClaims(client.clone())), mps, s.options)
        .await
        .map_err(|e| format!("the DRA driver cannot start: {e}"))?;
    let mut settings = PublishSettings::new(driver_name.clone(), node.clone());
    settings.node_uid = tessera_kube::dra::node_uid(&client, &node).await;
    settings.min_interval = s.republish;
    tracing::info!("kubernetes: DRA driver {driver_name} publishes node {node}'s GPUs as ResourceSlices");
    let gpus = driver.published();
    let until = |mut stop: watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let publisher = tessera_kube::run_slice_publisher(client, settings, gpus, until(stop.clone()));
    let (ran, ()) = tokio::join!(driver.run(until(stop)), publisher);
    ran.map_err(|e| format!("the DRA driver: {e}"))
}
