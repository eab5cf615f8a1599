//! `tessera kube node-agent`: `tessera serve` with the Kubernetes front door beside the API in
//! one process (`tessera_deviceplugin::run_agent`): the kubelet device plugin fed from the
//! engine, `Allocate` holding devices for their pods, PodResources read to name, release and
//! adopt the holds. The configuration file's `[kubernetes]` section says where the kubelet's
//! sockets are and how devices are advertised; NVIDIA's plugin configuration file, when named,
//! is read here, so a mistake in it stops the start (exit 2) at its file, line and column. With
//! `node_labels` (the default) the label workflow runs beside them (`tessera_kube::run_node_agent`
//! with the engine as its [`EngineApplier`]): `nvidia.com/mig.config`, the controller's desired
//! layouts and the node report, through the API server. With `[kubernetes.dra] enabled` the DRA
//! driver runs beside them too (`crate::kube_dra`), and `device_plugin = false` leaves the device
//! plugin out.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tessera_daemon::config::{Config, KubernetesSection};
use tessera_daemon::daemon::FrontDoor;
use tessera_deviceplugin::{AgentOptions, PluginOptions, run_agent};
use tessera_kube::{AgentSettings, EngineApplier, run_node_agent};
use tessera_kube_core::{MigStrategy, PluginConfig};

use crate::cli::{Global, KubeControllerArgs, ServeArgs};

/// The downward API's node name (the manifest sets it), for the log.
const NODE_NAME: &str = "NODE_NAME";
/// How often the kubelet's sockets and the plugin's own are checked (a kubelet restart).
const KUBELET_WATCH: Duration = Duration::from_secs(1);

/// `tessera kube node-agent`.
pub fn node_agent(g: &Global, a: ServeArgs) -> anyhow::Result<()> {
    let checking = a.check_config;
    crate::serve::serve_with(g, a, |config| door(config, checking).map(Some))
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

/// The front door the daemon runs: the agent with the `[kubernetes]` settings, and with
/// `node_labels` the label workflow (the engine applying layouts) beside it.
/// `checking` (`--check-config`): the files only, not the environment a pod gets at run time.
fn door(config: &Config, checking: bool) -> anyhow::Result<FrontDoor> {
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
    // Checked before the daemon starts: a DaemonSet without the downward API fails at once.
    let labels = if k.node_labels && !checking {
        let mut settings = AgentSettings::from_env(|v| std::env::var(v).ok())
            .context("kubernetes.node_labels is on (set it to false to run the device plugin alone)")?;
        settings.config_map.clone_from(&k.mig_config_map);
        settings.config_key.clone_from(&k.mig_config_key);
        Some((settings, k.api_server.clone()))
    } else {
        None
    };
    let dra =
        if k.dra.enabled && !checking { Some(crate::kube_dra::settings(k, |v| std::env::var(v).ok())?) } else { None };
    let device_plugin = k.device_plugin;
    Ok(Box::new(move |engine, stop| {
        Box::pin(async move {
            for w in &warnings {
                tracing::warn!("kubernetes.plugin_config: {w}");
            }
            let node = std::env::var(NODE_NAME).unwrap_or_else(|_| "this node".to_string());
            let until_stopped = |mut stop: tokio::sync::watch::Receiver<bool>| async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            let node_labels = async {
                let Some((settings, url)) = labels else { return Ok(()) };
                let client = tessera_kube::connect(url.as_deref()).await.map_err(|e| e.to_string())?;
                tracing::info!(
                    "kubernetes: node {} applies nvidia.com/mig.config from ConfigMap {}/{} (key {}) and the controller's desired layouts",
                    settings.node_name,
                    settings.namespace,
                    settings.config_map,
                    settings.config_key
                );
                run_node_agent(
                    client,
                    settings,
                    Arc::new(EngineApplier::new(engine.clone())),
                    until_stopped(stop.clone()),
                )
                .await;
                Ok::<(), String>(())
            };
            let plugin = async {
                if !device_plugin {
                    tracing::info!("kubernetes: the device plugin is off (kubernetes.device_plugin = false)");
                    until_stopped(stop.clone()).await;
                    return Ok(());
                }
                tracing::info!(
                    device_plugins = %agent.plugin.device_plugin_dir.display(),
                    pod_resources = %agent.pod_resources.display(),
                    "kubernetes: the device plugin for {node} registers in {} and reads pod resources from {}",
                    agent.plugin.device_plugin_dir.display(),
                    agent.pod_resources.display()
                );
                run_agent(engine.clone(), agent, stop.clone()).await.map_err(|e| e.to_string())
            };
            let dra = async {
                match dra {
                    Some(settings) => crate::kube_dra::run(engine.clone(), settings, stop.clone()).await,
                    None => {
                        until_stopped(stop.clone()).await;
                        Ok(())
                    }
                }
            };
            // The device plugin and the DRA driver run until the daemon stops; either failing
            // stops the agent. The label workflow ends only with the daemon (or when it cannot
            // start): then the others still run until the daemon stops.
            let doors = async { tokio::try_join!(plugin, dra).map(|_| ()) };
            let mut doors = std::pin::pin!(doors);
            tokio::select! {
                ran = &mut doors => ran,
                labels = node_labels => match labels {
                    Ok(()) => doors.await,
                    Err(e) => Err(format!("the node label workflow: {e}")),
                },
            }
        })
    }))
}

/// `tessera kube controller`: runs until SIGTERM or SIGINT, then gives the Lease up.
pub fn controller(a: &KubeControllerArgs) -> anyhow::Result<()> {
    crate::serve::init_log(a.log_format, a.log_level)?;
    let mut settings = tessera_kube::ControllerSettings::from_env(|k| std::env::var(k).ok())?;
    settings.batch_window = Duration::from_millis(a.batch_window_ms);
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
