//! `tessera kube node-agent`: `tessera serve` with the Kubernetes front door beside the API in
//! one process (`tessera_deviceplugin::run_agent`): the kubelet device plugin fed from the
//! engine, `Allocate` holding devices for their pods, PodResources read to name, release and
//! adopt the holds. The configuration file's `[kubernetes]` section says where the kubelet's
//! sockets are and how devices are advertised; NVIDIA's plugin configuration file, when named,
//! is read here, so a mistake in it stops the start (exit 2) at its file, line and column.

use std::time::Duration;

use anyhow::Context as _;
use tessera_daemon::config::{Config, KubernetesSection};
use tessera_daemon::daemon::FrontDoor;
use tessera_deviceplugin::{AgentOptions, PluginOptions, run_agent};
use tessera_kube_core::{MigStrategy, PluginConfig};

use crate::cli::{Global, KubeControllerArgs, ServeArgs};

/// The downward API's node name (the manifest sets it), for the log.
const NODE_NAME: &str = "NODE_NAME";
/// How often the kubelet's sockets and the plugin's own are checked (a kubelet restart).
const KUBELET_WATCH: Duration = Duration::from_secs(1);

/// `tessera kube node-agent`.
pub fn node_agent(g: &Global, a: ServeArgs) -> anyhow::Result<()> {
    crate::serve::serve_with(g, a, |config| door(config).map(Some))
}

/// NVIDIA's plugin configuration as `[kubernetes]` says: its file (or NVIDIA's defaults), then
/// `mig_strategy` over its `migStrategy`. Returns the file's warnings (fields NVIDIA ignores).
pub fn plugin_config(k: &KubernetesSection) -> anyhow::Result<(PluginConfig, Vec<String>)> {
    let mut config = match &k.plugin_config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("kubernetes.plugin_config: reading {}", path.display()))?;
            tessera_kube_core::parse_config(&text, &path.display().to_string())?
        }
        None => PluginConfig::default(),
    };
    if let Some(m) = &k.mig_strategy {
        config.mig_strategy = match m.as_str() {
            "none" => MigStrategy::None,
            "single" => MigStrategy::Single,
            // The configuration check allows only the three.
            _ => MigStrategy::Mixed,
        };
    }
    let warnings = std::mem::take(&mut config.warnings);
    Ok((config, warnings))
}

/// The front door the daemon runs: the agent with the `[kubernetes]` settings.
fn door(config: &Config) -> anyhow::Result<FrontDoor> {
    let k = &config.kubernetes;
    let (plugin, warnings) = plugin_config(k)?;
    let mut options = PluginOptions::new(plugin);
    options.device_plugin_dir.clone_from(&k.device_plugin_dir);
    options.cdi_dir.clone_from(&k.cdi_dir);
    options.watch_interval = KUBELET_WATCH;
    let agent = AgentOptions {
        plugin: options,
        pod_resources: k.pod_resources_socket.clone(),
        interval: Duration::from_millis(k.pod_resources_interval_ms),
        tenant: k.tenant.clone(),
    };
    Ok(Box::new(move |engine, stop| {
        Box::pin(async move {
            for w in &warnings {
                tracing::warn!("kubernetes.plugin_config: {w}");
            }
            let node = std::env::var(NODE_NAME).unwrap_or_else(|_| "this node".to_string());
            tracing::info!(
                device_plugins = %agent.plugin.device_plugin_dir.display(),
                pod_resources = %agent.pod_resources.display(),
                "kubernetes: the device plugin for {node} registers in {} and reads pod resources from {}",
                agent.plugin.device_plugin_dir.display(),
                agent.pod_resources.display()
            );
            run_agent(engine, agent, stop).await.map_err(|e| e.to_string())
        })
    }))
}

/// `tessera kube controller`: runs until SIGTERM or SIGINT, then gives the Lease up.
pub fn controller(a: &KubeControllerArgs) -> anyhow::Result<()> {
    crate::serve::init_log(a.log_format, a.log_level)?;
    let settings = tessera_kube::ControllerSettings::from_env(|k| std::env::var(k).ok())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let client = tessera_kube::connect(a.api_url.as_deref()).await?;
        tracing::info!("kubernetes: controller {} in namespace {}", settings.lease.identity, settings.lease.namespace);
        tessera_kube::run_controller(client, settings, tessera_daemon::server::shutdown_signal()).await;
        Ok(())
    })
}
