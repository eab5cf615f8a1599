//! `tessera serve`: open the store and the GPUs, recover from whatever happened while the daemon
//! was down, then run scheduling rounds and answer the API until SIGTERM.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tessera_exec::{MpsControl, NvidiaMps, RecordingMps};
use tessera_gpu::MigBackend as _;
use tessera_store::Store;

use crate::api::{Action, ApiError, Caller, Identity, Reply, Service};
use crate::config::Config;
use crate::engine::{Core, NodeBackend};

/// What `tessera serve` was asked to do.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub config: Config,
    /// The shim: usually the `tessera` binary itself, with `shim` before `--job-dir`.
    pub shim_exe: PathBuf,
    pub shim_args: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] tessera_store::StoreError),
    #[error(transparent)]
    Serve(#[from] crate::server::ServeError),
    #[error("{0}")]
    Setup(String),
}

/// The async face of the engine: actions run on a blocking thread under the core's lock.
#[derive(Debug)]
pub struct Engine {
    core: Arc<Mutex<Core>>,
    wake: Arc<tokio::sync::Notify>,
    changed: tokio::sync::watch::Sender<u64>,
}

impl Engine {
    fn new(core: Core) -> Engine {
        let (changed, _) = tokio::sync::watch::channel(0);
        Engine { core: Arc::new(Mutex::new(core)), wake: Arc::new(tokio::sync::Notify::new()), changed }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Core) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let core = self.core.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = core.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&mut guard)
        })
        .await
        .map_err(|e| ApiError::internal(format!("engine task: {e}")))
    }

    /// Scheduling rounds: on every wake-up, and every `tick` otherwise.
    async fn run_rounds(self: Arc<Self>, tick: Duration) {
        loop {
            let mut waiting = 0;
            let again = match self.round_once().await {
                Ok((changed, queued)) => {
                    waiting = queued;
                    changed
                }
                Err(e) => {
                    eprintln!("tessera serve: scheduling round failed: {e}");
                    false
                }
            };
            self.changed.send_modify(|n| *n += 1);
            if again {
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                _ = self.wake.notified() => {
                    // With nothing waiting, a submission is scheduled at once. While jobs wait
                    // (a burst, or a full node), let more land and schedule them in one round.
                    if waiting > 0 {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                _ = tokio::time::sleep(tick) => {}
            }
        }
    }

    /// One round: read under the engine lock, decide without it, act under it again.
    async fn round_once(&self) -> Result<(bool, usize), String> {
        let mut input = self.blocking(|core| core.prepare_round()).await.map_err(|e| e.to_string())??;
        let (input, decisions) = tokio::task::spawn_blocking(move || {
            let d = input.decide();
            (input, d)
        })
        .await
        .map_err(|e| format!("scheduler task: {e}"))?;
        self.blocking(move |core| (core.finish_round(input, decisions), core.queued_after_round()))
            .await
            .map_err(|e| e.to_string())
    }

    async fn wait(&self, caller: Caller, id: u64, timeout_ms: u64) -> Result<Value, ApiError> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
        let mut rx = self.changed.subscribe();
        loop {
            let c = caller.clone();
            let v = self.blocking(move |core| core.act(&c, Action::Wait { id, timeout_ms })).await??;
            let terminal =
                matches!(v["state"].as_str(), Some("succeeded" | "failed" | "cancelled" | "timed_out" | "lost"));
            if terminal || tokio::time::Instant::now() >= deadline {
                return Ok(v);
            }
            tokio::select! {
                _ = rx.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}

impl Service for Engine {
    fn handle(&self, caller: Caller, action: Action) -> Reply<'_> {
        Box::pin(async move {
            match action {
                Action::Wait { id, timeout_ms } => self.wait(caller, id, timeout_ms).await,
                other => {
                    let wakes = matches!(
                        other,
                        Action::Submit(_) | Action::Cancel { .. } | Action::Drain { .. } | Action::Layout { .. }
                    );
                    let r = self.blocking(move |core| core.act(&caller, other)).await?;
                    if wakes {
                        self.wake.notify_one();
                    }
                    r
                }
            }
        })
    }
}

fn open_backend(config: &Config, state_dir: &std::path::Path) -> Result<(NodeBackend, String), DaemonError> {
    let choice = config
        .node
        .backend
        .clone()
        .unwrap_or_else(|| if config.node.sim.is_some() { "sim".into() } else { "auto".into() });
    let sim = |why: String| -> Result<(NodeBackend, String), DaemonError> {
        let spec = config
            .node
            .sim
            .as_deref()
            .map(tessera_gpu::NodeSpec::parse)
            .transpose()
            .map_err(|e| DaemonError::Setup(format!("node.sim: {e}")))?;
        let s = tessera_gpu::SimBackend::open(&state_dir.join("sim-node.json"), spec.as_ref())
            .map_err(|e| DaemonError::Setup(e.to_string()))?;
        let line = format!("simulated node {}{why}", s.spec());
        Ok((NodeBackend::Sim(Box::new(s)), line))
    };
    match choice.as_str() {
        "sim" => sim(String::new()),
        "nvml" => {
            let n = tessera_gpu::NvmlBackend::open(None).map_err(|e| DaemonError::Setup(format!("NVML: {e}")))?;
            let line = format!("NVML, driver {}", n.driver_version());
            Ok((NodeBackend::Other(Box::new(n)), line))
        }
        _ => match tessera_gpu::NvmlBackend::open(None) {
            Ok(n) if n.devices().map(|d| !d.is_empty()).unwrap_or(false) => {
                let line = format!("NVML, driver {}", n.driver_version());
                Ok((NodeBackend::Other(Box::new(n)), line))
            }
            Ok(_) => sim("; NVML found no GPU".into()),
            Err(_) => sim("; no NVML library".into()),
        },
    }
}

/// Run the daemon until SIGTERM/SIGINT.
pub fn run(opts: ServeOptions) -> Result<(), DaemonError> {
    std::fs::create_dir_all(&opts.state_dir)
        .map_err(|e| DaemonError::Setup(format!("creating {}: {e}", opts.state_dir.display())))?;
    let store = Store::open(&opts.state_dir)?;
    let (backend, line) = open_backend(&opts.config, &opts.state_dir)?;
    let mps: Box<dyn MpsControl> = match &backend {
        NodeBackend::Sim(_) => Box::new(RecordingMps::new(opts.state_dir.join("mps-commands.jsonl"))),
        NodeBackend::Other(_) => Box::new(NvidiaMps::new("nvidia-cuda-mps-control")),
    };
    let mut core = Core::new(
        store,
        backend,
        opts.config.clone(),
        opts.state_dir.clone(),
        opts.shim_exe.clone(),
        opts.shim_args.clone(),
        mps,
    )
    .map_err(DaemonError::Setup)?;
    for note in core.recover().map_err(DaemonError::Setup)? {
        eprintln!("tessera serve: {note}");
    }
    let token = match &opts.config.server.token_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| DaemonError::Setup(format!("server.token_file {}: {e}", p.display())))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let identity = Arc::new(Identity {
        token,
        token_user: opts.config.server.token_user.clone().unwrap_or_else(|| "remote".into()),
        users_to_tenants: opts.config.users.clone(),
        admins: opts.config.admins.clone(),
    });
    // A small runtime: the work is blocking (SQLite, NVML, fork/exec) and serialised on the core.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(4)
        .thread_stack_size(512 * 1024)
        .enable_all()
        .build()
        .map_err(|e| DaemonError::Setup(format!("starting the runtime: {e}")))?;
    let tick = Duration::from_millis(opts.config.scheduler.tick_ms);
    rt.block_on(async move {
        let unix = crate::server::bind_unix(&opts.socket)?;
        let tcp = match &opts.config.server.tcp {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| crate::server::ServeError::Listen { what: addr.clone(), source })?,
            ),
            None => None,
        };
        eprintln!("tessera serve: {line}; listening on {}", opts.socket.display());
        let engine = Arc::new(Engine::new(core));
        tokio::spawn(engine.clone().run_rounds(tick));
        let service: Arc<dyn Service> = engine;
        crate::server::serve(service, identity, unix, tcp, crate::server::shutdown_signal()).await?;
        let _ = std::fs::remove_file(&opts.socket);
        Ok(())
    })
}
