//! `tessera serve`: make the state directory private, open (or, with `--init`, create) the
//! database, open the GPUs, recover from whatever happened while the daemon was down, then run
//! scheduling rounds, watch GPU health and answer the API until SIGTERM.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tessera_exec::{MpsControl, NvidiaMps, RecordingMps};
use tessera_gpu::health::Observation;
use tessera_gpu::open::{Node, OpenOptions};
use tessera_store::{DB_FILE, Store, StoreError};

use crate::api::{Identity, Service};
use crate::config::{Config, Tokens};
use tessera_sched::JobRequest;
use tessera_store::Work;

use crate::engine::{
    Action, Caller, Engine, EngineError, NodeState, Paths, Reader, Reply, ShimCommand, WorkCheck, check_work,
    highest_job_dir, process_work,
};

/// What `tessera serve` was asked to do.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub config: Config,
    /// The file `config` was read from (`None`: the defaults), for the log.
    pub config_file: Option<PathBuf>,
    /// The TCP tokens from `server.token_file`, each with its user.
    pub tokens: Tokens,
    /// How to open the GPUs: the same choice the CLI makes (`tessera_gpu::open`).
    pub backend: OpenOptions,
    /// The supervisor: usually the `tessera` binary itself, with `shim` before `--job-dir`.
    pub shim: ShimCommand,
    /// Begin a new database where there is none (or it is corrupt: the old one is moved aside).
    pub init: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Serve(#[from] crate::server::ServeError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Backend(#[from] Box<tessera_gpu::open::OpenError>),
    #[error("{0}")]
    Setup(String),
}

/// How many reads are answered at once, each on its own read-only connection to the store.
const READERS: usize = 4;

/// Readers that answer reads side by side, so that one user's long listing (ten thousand jobs,
/// in a loop) holds one of them and everyone else's `tessera jobs` is answered by another. Each
/// read takes a free reader and hands it back when done; with none free it waits for the first
/// handed back. A reader's own state is its store connection; what the engine publishes, the
/// node and the utilisation readings are shared (`Arc`s), the configuration copied.
#[derive(Debug)]
struct ReaderPool {
    free: Mutex<Vec<Reader>>,
    handed_back: std::sync::Condvar,
}

/// A reader taken from the pool; handed back when dropped (also when a read panics).
struct PooledReader {
    pool: Arc<ReaderPool>,
    reader: Option<Reader>,
}

impl ReaderPool {
    /// `n` readers of `engine` (at least one).
    fn new(engine: &Engine, n: usize) -> Result<ReaderPool, EngineError> {
        let free = (0..n.max(1)).map(|_| engine.reader()).collect::<Result<Vec<_>, _>>()?;
        Ok(ReaderPool { free: Mutex::new(free), handed_back: std::sync::Condvar::new() })
    }

    /// A free reader, waiting (blocking) for one if all are busy.
    fn take(self: &Arc<Self>) -> PooledReader {
        let mut free = self.free.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            if let Some(reader) = free.pop() {
                return PooledReader { pool: self.clone(), reader: Some(reader) };
            }
            free = self.handed_back.wait(free).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}

impl std::ops::Deref for PooledReader {
    type Target = Reader;

    fn deref(&self) -> &Reader {
        // Present from `take` until `drop`.
        self.reader.as_ref().unwrap_or_else(|| unreachable!("a pooled reader is present until dropped"))
    }
}

impl Drop for PooledReader {
    fn drop(&mut self) {
        if let Some(reader) = self.reader.take() {
            self.pool.free.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(reader);
            self.pool.handed_back.notify_one();
        }
    }
}

/// The async face of the engine: actions run on a blocking thread under the engine's lock;
/// reads on others, each with a reader of the pool, so they never wait for a round nor for
/// one another.
#[derive(Debug)]
pub struct EngineHandle {
    core: Arc<Mutex<Engine>>,
    readers: Arc<ReaderPool>,
    wake: Arc<tokio::sync::Notify>,
    changed: tokio::sync::watch::Sender<u64>,
    /// `jobs.max_exec_bytes`, for checking submissions without the engine.
    max_exec_bytes: usize,
    /// The engine's MPS control (the real program, or the simulated node's recording).
    mps: SharedMps,
}

/// The engine's MPS control, shared with front doors.
#[derive(Clone)]
struct SharedMps(Arc<dyn tessera_exec::MpsControl>);

impl std::fmt::Debug for SharedMps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MpsControl")
    }
}

impl EngineHandle {
    pub fn new(engine: Engine) -> Result<EngineHandle, EngineError> {
        let (changed, _) = tokio::sync::watch::channel(0);
        let max_exec_bytes = engine.config.jobs.max_exec_bytes;
        let readers = Arc::new(ReaderPool::new(&engine, READERS)?);
        let mps = engine.mps.clone();
        engine.publish();
        Ok(EngineHandle {
            core: Arc::new(Mutex::new(engine)),
            readers,
            wake: Arc::new(tokio::sync::Notify::new()),
            changed,
            max_exec_bytes,
            mps: SharedMps(mps),
        })
    }

    /// The engine's MPS control, for a front door that runs MPS control daemons of its own (the
    /// Kubernetes plugin's, for pods' MPS replicas): the same program, or on the simulated node
    /// the same recording.
    pub fn mps(&self) -> Arc<dyn tessera_exec::MpsControl> {
        self.mps.0.clone()
    }

    /// A submission's work checked on a blocking thread without the engine (the checks touch
    /// paths the user chose).
    async fn check(&self, caller: Caller, work: Work) -> Result<(Caller, Work, WorkCheck), EngineError> {
        let max = self.max_exec_bytes;
        tokio::task::spawn_blocking(move || {
            let checked = check_work(&work, &caller, max);
            (caller, work, checked)
        })
        .await
        .map_err(|e| EngineError::Internal(format!("submission check task: {e}")))
    }

    /// A submission: its work checked ([`EngineHandle::check`]), then queued under the engine.
    async fn submit(&self, caller: Caller, request: JobRequest, work: Work) -> Result<Reply, EngineError> {
        let (caller, work, checked) = self.check(caller, work).await?;
        self.blocking(move |core| core.submit_checked(&caller, request, work, checked).map(Reply::Submitted)).await?
    }

    /// A dry run: the work checked as a submission's is, then one decision on a copy of the
    /// scheduler under the engine; nothing is queued.
    async fn dry_run(&self, caller: Caller, request: JobRequest, work: Work) -> Result<Reply, EngineError> {
        let (caller, work, checked) = self.check(caller, work).await?;
        self.blocking(move |core| core.dry_run_checked(&caller, request, work, checked).map(Reply::DryRun)).await?
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Engine) -> T + Send + 'static,
    ) -> Result<T, EngineError> {
        let core = self.core.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = core.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let out = f(&mut guard);
            guard.publish();
            out
        })
        .await
        .map_err(|e| task_failed("engine", &e))
    }

    /// Notices of change: the number moves when a round changed something or an action may
    /// have (a submission, a cancel, a release, a layout).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The node as a front door advertises it, read without the engine's lock.
    pub async fn node_state(&self) -> Result<NodeState, EngineError> {
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || readers.take().node_state()).await.map_err(|e| task_failed("reader", &e))?
    }

    /// Starts scheduling rounds on the current runtime (what `run` does), for front doors
    /// driven without the daemon's API (their tests).
    pub fn spawn_rounds(self: &Arc<Self>, tick: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.clone().run_rounds(tick))
    }

    /// A read, on a blocking thread with a free reader of the pool, never under the engine's
    /// lock.
    async fn read(&self, caller: Caller, action: Action) -> Result<Reply, EngineError> {
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || readers.take().read(&caller, action))
            .await
            .map_err(|e| task_failed("reader", &e))?
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
                // The runtime is stopping: nothing failed, and no round is due.
                Err(EngineError::ShuttingDown(_)) => return,
                Err(e) => {
                    tracing::error!("scheduling round failed: {e}");
                    false
                }
            };
            if again {
                // Waiters look again only when a round changed something.
                self.changed.send_modify(|n| *n += 1);
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
    async fn round_once(&self) -> Result<(bool, usize), EngineError> {
        let mut input = self.blocking(|core| core.prepare_round()).await??;
        let (input, decisions) = tokio::task::spawn_blocking(move || {
            let d = input.decide();
            (input, d)
        })
        .await
        .map_err(|e| task_failed("scheduler", &e))?;
        self.blocking(move |core| (core.finish_round(input, decisions), core.queued_after_round())).await
    }

    async fn wait(&self, caller: Caller, id: u64, timeout_ms: u64) -> Result<Reply, EngineError> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
        let mut rx = self.changed.subscribe();
        loop {
            let reply = self.read(caller.clone(), Action::Wait { id, timeout_ms }).await?;
            let ended = matches!(&reply, Reply::Job(j) if j.ended());
            if ended || tokio::time::Instant::now() >= deadline {
                return Ok(reply);
            }
            tokio::select! {
                _ = rx.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// An admin's layout: checked under the lock (`prepare`), planned without it, applied under it.
    async fn layout(
        &self,
        caller: Caller,
        prepare: impl FnOnce(&mut Engine) -> Result<crate::engine::LayoutInput, EngineError> + Send + 'static,
    ) -> Result<Reply, EngineError> {
        let input = self.blocking(prepare).await??;
        let plan =
            tokio::task::spawn_blocking(move || input.plan()).await.map_err(|e| task_failed("planner", &e))??;
        let reply = self.blocking(move |core| core.layout_apply(&caller, plan)).await??;
        Ok(Reply::Layout(reply))
    }
}

impl Service for EngineHandle {
    fn act(
        &self,
        caller: Caller,
        action: Action,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Reply, EngineError>> + Send + '_>> {
        Box::pin(async move {
            let wakes = action.wakes_rounds();
            let reply = match action {
                Action::Submit(body) => match process_work(body) {
                    Ok((request, work)) => self.submit(caller, request, work).await,
                    Err(e) => Err(e),
                },
                Action::SubmitWork { request, work } => self.submit(caller, request, work).await,
                Action::DryRun(body) => match process_work(body) {
                    Ok((request, work)) => self.dry_run(caller, request, work).await,
                    Err(e) => Err(e),
                },
                Action::Wait { id, timeout_ms } => self.wait(caller, id, timeout_ms).await,
                Action::Layout { gpu, request } => {
                    self.layout(caller.clone(), move |core| core.layout_prepare(&caller, gpu, request)).await
                }
                Action::Reach { gpu, wanted } => {
                    self.layout(caller.clone(), move |core| core.layout_prepare_wanted(&caller, gpu, wanted)).await
                }
                read if read.is_read() => self.read(caller, read).await,
                other => self.blocking(move |core| core.act(&caller, other)).await?,
            };
            if wakes && reply.is_ok() {
                self.wake.notify_one();
                // An action may itself end a job (a queued job cancelled, external work released).
                self.changed.send_modify(|n| *n += 1);
            }
            reply
        })
    }
}

/// An engine task that did not finish: cancelled when the runtime stops (the daemon shutting
/// down), otherwise a panic inside the engine.
fn task_failed(what: &str, e: &tokio::task::JoinError) -> EngineError {
    if e.is_cancelled() {
        EngineError::ShuttingDown(format!("{what} task cancelled"))
    } else {
        EngineError::Internal(format!("{what} task: {e}"))
    }
}

/// Makes the state directory private to the daemon (0700), refusing one another user owns.
fn private_state_dir(dir: &Path) -> Result<(), DaemonError> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let setup = |what: String| DaemonError::Setup(what);
    if let Ok(meta) = std::fs::symlink_metadata(dir) {
        if meta.file_type().is_symlink() {
            return Err(setup(format!("state directory {} is a symbolic link; give its real path", dir.display())));
        }
        if meta.uid() != tessera_host::effective_uid() {
            return Err(setup(format!(
                "state directory {} belongs to uid {}, not to the daemon's uid {}",
                dir.display(),
                meta.uid(),
                tessera_host::effective_uid()
            )));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| setup(format!("creating {}: {e}", dir.display())))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| setup(format!("making {} private: {e}", dir.display())))
}

/// A corrupt database moved aside (with its WAL and shared-memory files).
fn move_aside(state_dir: &Path) -> Result<PathBuf, DaemonError> {
    let stamp = tessera_host::now_ms();
    let db = state_dir.join(DB_FILE);
    let aside = state_dir.join(format!("{DB_FILE}.corrupt-{stamp}"));
    for suffix in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", db.display()));
        if from.exists() {
            std::fs::rename(&from, format!("{}{suffix}", aside.display()))
                .map_err(|e| DaemonError::Setup(format!("moving {} aside: {e}", from.display())))?;
        }
    }
    Ok(aside)
}

/// Opens the database by the rules: a fresh state directory gets a new one; a missing database
/// beside job directories, or a corrupt one, is refused with what to do, unless `init`. Job ids
/// always continue above every job directory on disk.
pub fn open_store(state_dir: &Path, output_dir: &Path, init: bool) -> Result<(Store, Vec<String>), DaemonError> {
    let mut notes = Vec::new();
    let db = state_dir.join(DB_FILE);
    let left = highest_job_dir(&state_dir.join("jobs")).max(highest_job_dir(output_dir));
    if !db.exists() && left > 0 && !init {
        return Err(DaemonError::Setup(format!(
            "the database {} is missing, but job directories up to job {left} remain in {}: the jobs they \
             held are unknown. Restore tessera.db from a backup, or start with --init to begin a new database \
             (new job ids will continue above {left}).",
            db.display(),
            state_dir.join("jobs").display()
        )));
    }
    let advice = |detail: &str| {
        DaemonError::Setup(format!(
            "the database {} is corrupt ({detail}). Stop here and restore it from a backup (or try \
             `sqlite3 {} .recover`); or start with --init to move it aside and begin a new one.",
            db.display(),
            db.display()
        ))
    };
    let store = match Store::open(state_dir) {
        Ok(s) => match s.integrity_check() {
            Ok(()) => s,
            Err(StoreError::Corrupt { detail, .. }) if init => {
                drop(s);
                let aside = move_aside(state_dir)?;
                notes.push(format!("the corrupt database ({detail}) was moved to {}", aside.display()));
                Store::open(state_dir)?
            }
            Err(StoreError::Corrupt { detail, .. }) => return Err(advice(&detail)),
            Err(e) => return Err(e.into()),
        },
        Err(StoreError::Corrupt { detail, .. }) if init => {
            let aside = move_aside(state_dir)?;
            notes.push(format!("the corrupt database ({detail}) was moved to {}", aside.display()));
            Store::open(state_dir)?
        }
        Err(StoreError::Corrupt { detail, .. }) => return Err(advice(&detail)),
        Err(e) => return Err(e.into()),
    };
    if left > 0 && store.max_job_id()? < left {
        store.ensure_ids_above(left)?;
        notes.push(format!("new job ids continue above {left}, the highest job directory on disk"));
    }
    Ok((store, notes))
}

/// The GPUs in a few words: `8 GPUs (8× NVIDIA H100 80GB HBM3)`.
fn gpu_summary(engine: &Engine) -> String {
    let mut by_name: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for g in &engine.facts.gpus {
        *by_name.entry(g.name.as_str()).or_default() += 1;
    }
    let n = engine.facts.gpus.len();
    let kinds: Vec<String> = by_name.iter().map(|(name, k)| format!("{k}× {name}")).collect();
    format!("{n} GPU{} ({})", if n == 1 { "" } else { "s" }, kinds.join(", "))
}

/// Watches GPU health until `stop`: Xid events as they come, every GPU probed every
/// `probe_interval`, and GPM utilisation sampled by `utilisation` at its own interval. The
/// backend calls run without the engine lock.
fn watch_health(
    core: Arc<Mutex<Engine>>,
    node: Arc<Node>,
    wake: Arc<tokio::sync::Notify>,
    probe: Duration,
    mut utilisation: crate::utilisation::Sampler,
    stop: Arc<AtomicBool>,
) {
    let mut last_probe: Option<Instant> = None;
    let gpus: Vec<u32> =
        core.lock().unwrap_or_else(std::sync::PoisonError::into_inner).facts.gpus.iter().map(|g| g.index).collect();
    while !stop.load(Ordering::Relaxed) {
        let wait = u32::try_from(probe.as_millis().min(1000)).unwrap_or(1000);
        match node.backend().wait_xid_events(wait) {
            Ok(events) if !events.is_empty() => {
                let mut c = core.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                c.health_events(&events, tessera_host::now_ms());
                drop(c);
                wake.notify_one();
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!("reading Xid events: {e}");
                std::thread::sleep(Duration::from_millis(u64::from(wait)));
            }
        }
        if last_probe.is_none_or(|t| t.elapsed() >= probe) {
            let observations: Vec<(u32, Observation)> = gpus
                .iter()
                .map(|g| {
                    let o = Observation::from_result(node.backend().observe(*g));
                    (*g, o)
                })
                .collect();
            core.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .health_observe(&observations, tessera_host::now_ms());
            wake.notify_one();
            last_probe = Some(Instant::now());
        }
        if utilisation.due() {
            utilisation.sample(node.backend(), &gpus, tessera_host::now_ms());
        }
    }
}

/// The health watcher's thread ([`EngineHandle::watch_health`]), stopped and joined when
/// dropped.
#[derive(Debug)]
pub struct HealthWatcher {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for HealthWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl EngineHandle {
    /// Starts the health watcher on a thread of its own (what `run` does): Xid events as they
    /// come, every GPU probed every `probe`, and GPM utilisation sampled at the same interval
    /// (no faster than [`crate::utilisation::MIN_INTERVAL`]) for `GET /metrics`. It runs until
    /// the returned watcher is dropped.
    pub fn watch_health(&self, probe: Duration) -> Result<HealthWatcher, DaemonError> {
        let (node, utilisation) = {
            let core = self.core.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            (core.node(), core.utilisation())
        };
        let sampler = crate::utilisation::Sampler::new(utilisation, probe);
        let stop = Arc::new(AtomicBool::new(false));
        let (core, wake, flag) = (self.core.clone(), self.wake.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("tessera-health".into())
            .spawn(move || watch_health(core, node, wake, probe, sampler, flag))
            .map_err(|e| DaemonError::Setup(format!("starting the health watcher: {e}")))?;
        Ok(HealthWatcher { stop, thread: Some(thread) })
    }
}

/// A front door that runs beside the API, in the daemon's runtime (the Kubernetes node agent's
/// device plugin): given the engine, it runs until the receiver turns `true` (the daemon is
/// stopping). Its error stops the daemon.
pub type FrontDoor = Box<
    dyn FnOnce(
            Arc<EngineHandle>,
            tokio::sync::watch::Receiver<bool>,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>
        + Send,
>;

/// How long a front door has to stop once the daemon stops.
const DOOR_STOP_GRACE: Duration = Duration::from_secs(10);

/// Run the daemon until SIGTERM/SIGINT.
pub fn run(opts: ServeOptions) -> Result<(), DaemonError> {
    run_with(opts, None)
}

/// [`run`], with a front door beside the API (see [`FrontDoor`]).
pub fn run_with(opts: ServeOptions, door: Option<FrontDoor>) -> Result<(), DaemonError> {
    private_state_dir(&opts.state_dir)?;
    let output_dir = opts.config.jobs.output_dir.clone().unwrap_or_else(|| opts.state_dir.join("output"));
    match &opts.config_file {
        Some(f) => {
            tracing::info!(
                config = %f.display(),
                "tessera {} starting; config {}",
                env!("CARGO_PKG_VERSION"),
                f.display(),
            )
        }
        None => tracing::info!("tessera {} starting; no config file: the defaults", env!("CARGO_PKG_VERSION")),
    }
    let (store, notes) = open_store(&opts.state_dir, &output_dir, opts.init)?;
    for note in notes {
        tracing::warn!("{note}");
    }
    tracing::info!(
        state_dir = %opts.state_dir.display(),
        database = %opts.state_dir.join(DB_FILE).display(),
        output_dir = %output_dir.display(),
        "state in {} (database {}, job output in {})",
        opts.state_dir.display(),
        opts.state_dir.join(DB_FILE).display(),
        output_dir.display()
    );
    {
        use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&output_dir)
            .and_then(|()| std::fs::set_permissions(&output_dir, std::fs::Permissions::from_mode(0o711)))
            .map_err(|e| DaemonError::Setup(format!("creating the output directory {}: {e}", output_dir.display())))?;
    }
    let opened = tessera_gpu::open::open(&opts.backend).map_err(Box::new)?;
    let backend_summary = opened.summary();
    let node = Arc::new(opened.node);
    let mps: Box<dyn MpsControl> = match node.as_ref() {
        Node::Sim(_) => Box::new(RecordingMps::new(opts.state_dir.join("mps-commands.jsonl"))),
        Node::Nvml(_) => Box::new(NvidiaMps::new("nvidia-cuda-mps-control")),
    };
    let runtime_dir = opts
        .config
        .node
        .runtime_dir
        .clone()
        .or_else(|| opts.socket.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("/run/tessera"));
    let paths = Paths {
        state_dir: opts.state_dir.clone(),
        output_dir,
        runtime_dir,
        dev_root: opts.config.node.dev_root.clone().unwrap_or_else(|| PathBuf::from("/dev")),
    };
    let mut engine = Engine::new(store, node, opts.config.clone(), paths, opts.shim.clone(), mps)?;
    tracing::info!(
        backend = %backend_summary,
        gpus = engine.facts.gpus.len(),
        "backend: {backend_summary}; {}",
        gpu_summary(&engine),
    );
    for note in engine.recover()? {
        tracing::info!("recovery: {note}");
    }
    let identity = Arc::new(Identity { tokens: opts.tokens.clone(), config: Arc::new(opts.config.clone()) });
    tracing::info!(isolation = %engine.cgroups, "isolation: {}", engine.cgroups);
    // A small runtime: the work is blocking (SQLite, NVML, fork/exec) and serialised on the core.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(4)
        .thread_stack_size(512 * 1024)
        .enable_all()
        .build()
        .map_err(|e| DaemonError::Setup(format!("starting the runtime: {e}")))?;
    let tick = Duration::from_millis(opts.config.scheduler.tick_ms);
    let probe = Duration::from_millis(opts.config.health.probe_interval_ms);
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
        match (&tcp, &opts.config.server.tcp) {
            (Some(_), Some(addr)) => tracing::info!(
                socket = %opts.socket.display(),
                tcp = %addr,
                token_users = opts.tokens.users().len(),
                "listening on {} and on TCP {addr}, {}",
                opts.socket.display(),
                opts.tokens.summary()
            ),
            _ => tracing::info!(
                socket = %opts.socket.display(),
                "listening on {} (TCP off: no server.tcp)",
                opts.socket.display()
            ),
        }
        let handle = Arc::new(EngineHandle::new(engine)?);
        let watcher = handle.watch_health(probe)?;
        tokio::spawn(handle.clone().run_rounds(tick));
        // The front door, if any; its failure stops the daemon as a signal would.
        let (door_stop, door_stopped) = tokio::sync::watch::channel(false);
        let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<String>();
        let door_task = door.map(|d| {
            let running = d(handle.clone(), door_stopped);
            tokio::spawn(async move {
                if let Err(e) = running.await {
                    let _ = failed_tx.send(e);
                }
            })
        });
        let door_failure = Arc::new(Mutex::new(None::<String>));
        let shutdown = {
            let door_failure = door_failure.clone();
            async move {
                tokio::select! {
                    () = crate::server::shutdown_signal() => {}
                    Ok(e) = failed_rx => {
                        tracing::error!("the front door stopped: {e}");
                        *door_failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e);
                    }
                }
            }
        };
        let service: Arc<dyn Service> = handle;
        let metrics = match &opts.config.server.metrics_tcp {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| crate::server::ServeError::Listen { what: addr.clone(), source })?;
                tracing::info!(metrics_tcp = %addr, "serving GET /metrics on TCP {addr} (no token)");
                Some((listener, crate::api::metrics_router(service.clone())))
            }
            None => None,
        };
        let app = crate::api::router(service, identity);
        let served =
            crate::server::serve_with_metrics(app, unix, tcp, metrics, opts.config.server.limits.clone(), shutdown)
                .await;
        let _ = door_stop.send(true);
        if let Some(task) = door_task
            && tokio::time::timeout(DOOR_STOP_GRACE, task).await.is_err()
        {
            tracing::warn!("the front door did not stop within {} s", DOOR_STOP_GRACE.as_secs());
        }
        drop(watcher);
        let _ = std::fs::remove_file(&opts.socket);
        served.map_err(DaemonError::from)?;
        match door_failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            Some(e) => Err(DaemonError::Setup(format!("the front door stopped: {e}"))),
            None => Ok(()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Door;
    use crate::wire::JobQuery;

    /// An engine over a simulated H100 with its state in `dir`.
    fn engine(dir: &Path) -> Engine {
        let state = dir.join("state");
        std::fs::create_dir_all(&state).unwrap();
        let spec: tessera_gpu::NodeSpec = "1xH100-80GB,numa=1,cpus=16".parse().unwrap();
        let sim = tessera_gpu::sim::SimBackend::open(&state.join("sim-node.json"), Some(&spec)).unwrap();
        let store = Store::open(&state).unwrap();
        let paths = Paths {
            state_dir: state.clone(),
            output_dir: dir.join("output"),
            runtime_dir: dir.join("run"),
            dev_root: dir.join("dev"),
        };
        let shim = ShimCommand { exe: "/nonexistent/tessera".into(), args: vec!["shim".into()] };
        let mps = Box::new(RecordingMps::new(state.join("mps.jsonl")));
        let mut e =
            Engine::new(store, Arc::new(Node::Sim(Box::new(sim))), Config::default(), paths, shim, mps).unwrap();
        e.recover().unwrap();
        e
    }

    fn alice() -> Caller {
        Caller {
            uid: 1001,
            gid: 1001,
            user: "alice".into(),
            tenant: "default".into(),
            admin: false,
            door: Door::Internal,
        }
    }

    /// Far longer than any read here takes: reaching it means the read was never answered.
    const STUCK: Duration = Duration::from_secs(60);

    /// A listing while one reader is held (as by another user's long listing) is answered by
    /// another reader; with every reader held, a read waits for the first handed back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_held_reader_does_not_hold_up_other_reads() {
        let dir = tempfile::tempdir().unwrap();
        let handle = Arc::new(EngineHandle::new(engine(dir.path())).unwrap());
        let list = || Action::ListJobs(JobQuery::default());
        let held = handle.readers.take();
        let reply = tokio::time::timeout(STUCK, handle.act(alice(), list())).await;
        assert!(matches!(reply, Ok(Ok(Reply::Jobs(_)))), "{reply:?}");

        let rest: Vec<PooledReader> = (1..READERS).map(|_| handle.readers.take()).collect();
        let waiting = {
            let handle = handle.clone();
            tokio::spawn(async move { handle.act(alice(), Action::Gpus).await })
        };
        drop(held);
        let reply = tokio::time::timeout(STUCK, waiting).await;
        assert!(matches!(reply, Ok(Ok(Ok(Reply::Gpus(_))))), "{reply:?}");
        drop(rest);
        assert_eq!(handle.readers.free.lock().unwrap().len(), READERS, "every reader handed back");
    }
}
