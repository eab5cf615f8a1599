//! `tessera top`: a live view of the daemon's node on the terminal, as `top` and `nvtop` users
//! expect: it refreshes every `--interval` (2 s), `q`, `Esc` or Ctrl-C quits, `r` refreshes at
//! once, `↑`/`↓` scroll the GPUs, a resize is followed. `--once` (or `-n N`) prints frames as
//! plain text instead, for scripts.
//!
//! This module is the shell: the daemon asked through the same client as `tessera gpus` and
//! `tessera jobs` ([`jobs::client`]), on a thread of its own so that a slow daemon never
//! delays a key; the terminal put in raw mode on the alternate screen and always put back, on
//! quitting, on an error ([`Screen`]'s drop), on a panic (a hook, before the panic's message is
//! printed) and on SIGTERM, SIGHUP, SIGINT or SIGQUIT (caught and turned into quitting). What a
//! frame shows is `view.rs`, with no I/O.

mod view;

use std::io::{IsTerminal as _, Stdout, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::crossterm::{cursor, execute, terminal};
use tessera_daemon::client::{Client, ClientError, Endpoint};
use tessera_daemon::wire::JobQuery;

use self::view::{Failure, NodeState, Snapshot};
use crate::cli::{DaemonArgs, Output, TopArgs};
use crate::jobs;
use crate::render::terminal_width;

/// How long one refresh may take before it counts as failed.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the loop looks for keys, new data and signals; the clock is redrawn every second.
const TICK: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum TopError {
    #[error(
        "standard output is not a terminal: `tessera top` draws its live view on one; `tessera top --once` (or `-n N`) prints frames as text"
    )]
    NotATerminal,
    #[error(
        "-o json is not for `tessera top`: `tessera gpus -o json` and `tessera jobs -o json` say the same for programs"
    )]
    Json,
    #[error("the terminal: {doing}: {source}")]
    Terminal {
        doing: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {what}: {source}")]
    Start {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

fn terminal_error(doing: &'static str) -> impl FnOnce(std::io::Error) -> TopError {
    move |source| TopError::Terminal { doing, source }
}

/// `tessera top`.
pub fn top(output: Output, d: &DaemonArgs, a: &TopArgs) -> anyhow::Result<()> {
    if output == Output::Json {
        return Err(TopError::Json.into());
    }
    let mut client = jobs::client(d)?;
    client.timeout = REFRESH_TIMEOUT;
    let host = host_of(&client.endpoint);
    let reader = Reader { client, all_users: true };
    let frames = if a.once { Some(1) } else { a.iterations };
    if let Some(n) = frames {
        let width = a.width.unwrap_or_else(|| u16::try_from(terminal_width()).unwrap_or(u16::MAX));
        return print_frames(reader, host, a.interval, n, width);
    }
    if !std::io::stdout().is_terminal() {
        return Err(TopError::NotATerminal.into());
    }
    live(reader, host, a.interval)
}

/// The node the daemon runs on: this one over the Unix socket, the address's host over TCP.
fn host_of(endpoint: &Endpoint) -> String {
    match endpoint {
        Endpoint::Unix(_) => tessera_host::hostname().unwrap_or_else(|_| "this node".into()),
        Endpoint::Tcp { addr, .. } => addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h).to_string(),
    }
}

/// Asks the daemon for the GPUs and the jobs not yet ended: every user's, or, when the daemon
/// refuses that (not an admin), the caller's own from then on.
#[derive(Debug)]
struct Reader {
    client: Client,
    all_users: bool,
}

impl Reader {
    fn read(&mut self) -> Result<NodeState, ClientError> {
        let gpus = self.client.gpus()?;
        let jobs = if self.all_users {
            match self.client.jobs(&JobQuery { all: true, ..JobQuery::default() }) {
                Err(ClientError::Api { status: 403, .. }) => {
                    self.all_users = false;
                    self.client.jobs(&JobQuery::default())?
                }
                other => other?,
            }
        } else {
            self.client.jobs(&JobQuery::default())?
        };
        Ok(NodeState { gpus, jobs: jobs.jobs, all_users: self.all_users, read_ms: tessera_host::now_ms() })
    }
}

fn snapshot(host: String, interval: Duration) -> Snapshot {
    Snapshot {
        host,
        state: None,
        failure: None,
        now_ms: tessera_host::now_ms(),
        interval,
        first_gpu: 0,
        tz: jiff::tz::TimeZone::system(),
    }
}

/// `--once` and `-n N`: `n` frames as text, `interval` apart, a blank line between them; a
/// daemon that cannot be asked ends it as it ends `tessera gpus`.
fn print_frames(mut reader: Reader, host: String, interval: Duration, n: u32, width: u16) -> anyhow::Result<()> {
    let mut snap = snapshot(host, interval);
    for i in 0..n {
        if i > 0 {
            std::thread::sleep(interval);
        }
        snap.state = Some(jobs::ok(reader.read())?);
        snap.now_ms = tessera_host::now_ms();
        let mut out = std::io::stdout().lock();
        if i > 0 {
            writeln!(out)?;
        }
        write!(out, "{}", view::text(&snap, width))?;
        out.flush()?;
    }
    Ok(())
}

/// What the refresh thread hands over.
type Refresh = Result<NodeState, String>;

/// Refreshes every `interval`, or at once when woken; ends when the view is gone.
fn refresh_loop(mut reader: Reader, interval: Duration, tx: mpsc::Sender<Refresh>, wake: mpsc::Receiver<()>) {
    loop {
        if tx.send(reader.read().map_err(|e| e.to_string())).is_err() {
            return;
        }
        match wake.recv_timeout(interval) {
            Ok(()) => while wake.try_recv().is_ok() {},
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// The live view, until a key or a signal says quit.
fn live(reader: Reader, host: String, interval: Duration) -> anyhow::Result<()> {
    let quit = Arc::new(AtomicBool::new(false));
    catch_signals(Arc::clone(&quit))?;
    let (tx, rx) = mpsc::channel();
    let (wake, woken) = mpsc::channel();
    std::thread::Builder::new()
        .name("top-refresh".into())
        .spawn(move || refresh_loop(reader, interval, tx, woken))
        .map_err(|source| TopError::Start { what: "the refresh thread", source })?;
    let mut screen = Screen::enter()?;
    let mut snap = snapshot(host, interval);
    let mut drawn_at: Option<Instant> = None;
    let mut dirty = true;
    while !quit.load(Ordering::Relaxed) {
        loop {
            match rx.try_recv() {
                Ok(Ok(state)) => {
                    snap.state = Some(state);
                    snap.failure = None;
                }
                Ok(Err(message)) => snap.failure = Some(Failure { at_ms: tessera_host::now_ms(), message }),
                Err(_) => break,
            }
            snap.first_gpu = snap.first_gpu.min(snap.gpu_count().saturating_sub(1));
            dirty = true;
        }
        if dirty || drawn_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            snap.now_ms = tessera_host::now_ms();
            screen.terminal.draw(|f| view::draw(f, &snap)).map_err(terminal_error("drawing"))?;
            drawn_at = Some(Instant::now());
            dirty = false;
        }
        if !event::poll(TICK).map_err(terminal_error("reading a key"))? {
            continue;
        }
        match event::read().map_err(terminal_error("reading a key"))? {
            Event::Key(k) if k.kind != KeyEventKind::Release => match k.code {
                KeyCode::Char('q') | KeyCode::Esc => break,
                KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => break,
                KeyCode::Char('r') => {
                    let _ = wake.send(());
                }
                KeyCode::Up | KeyCode::Char('k') => snap.first_gpu = snap.first_gpu.saturating_sub(1),
                KeyCode::Down | KeyCode::Char('j') => {
                    snap.first_gpu = (snap.first_gpu + 1).min(snap.gpu_count().saturating_sub(1));
                }
                KeyCode::Home | KeyCode::Char('g') => snap.first_gpu = 0,
                _ => continue,
            },
            Event::Resize(..) => {}
            _ => continue,
        }
        dirty = true;
    }
    drop(screen);
    Ok(())
}

/// How long the live loop has to end by itself after a signal before the signal's thread ends
/// the process.
const SIGNAL_GRACE: Duration = Duration::from_millis(500);

/// SIGTERM, SIGHUP, SIGINT and SIGQUIT set `quit` instead of ending the process, so the live
/// loop puts the terminal back before it exits. Should the loop not end within
/// [`SIGNAL_GRACE`] (crossterm's event poll spins without returning once the terminal has hung
/// up), this thread restores what it can and exits with the signal's status, 128 + its number.
fn catch_signals(quit: Arc<AtomicBool>) -> Result<(), TopError> {
    use tokio::signal::unix::{SignalKind, signal};
    let start = |source| TopError::Start { what: "the signal handler", source };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(start)?;
    let (mut term, mut hup, mut int, mut quit_key) = {
        let _entered = rt.enter();
        (
            signal(SignalKind::terminate()).map_err(start)?,
            signal(SignalKind::hangup()).map_err(start)?,
            signal(SignalKind::interrupt()).map_err(start)?,
            signal(SignalKind::quit()).map_err(start)?,
        )
    };
    std::thread::Builder::new()
        .name("top-signals".into())
        .spawn(move || {
            let signo = rt.block_on(async {
                tokio::select! {
                    _ = term.recv() => libc::SIGTERM,
                    _ = hup.recv() => libc::SIGHUP,
                    _ = int.recv() => libc::SIGINT,
                    _ = quit_key.recv() => libc::SIGQUIT,
                }
            });
            quit.store(true, Ordering::Relaxed);
            std::thread::sleep(SIGNAL_GRACE);
            restore();
            std::process::exit(128 + signo);
        })
        .map_err(start)?;
    Ok(())
}

/// Whether the terminal is in the live view's state (raw mode, alternate screen), so that
/// [`restore`] undoes it once, whoever calls it first.
static IN_VIEW: AtomicBool = AtomicBool::new(false);

/// The terminal as it was: raw mode off, the main screen back, the cursor shown.
fn restore() {
    if IN_VIEW.swap(false, Ordering::SeqCst) {
        let _ = terminal::disable_raw_mode();
        let _ = execute!(std::io::stdout(), terminal::LeaveAlternateScreen, cursor::Show);
    }
}

/// The terminal in the live view's state; dropping it restores the terminal.
struct Screen {
    terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl std::fmt::Debug for Screen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Screen")
    }
}

impl Screen {
    fn enter() -> Result<Screen, TopError> {
        static HOOK: std::sync::Once = std::sync::Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                previous(info);
            }));
        });
        terminal::enable_raw_mode().map_err(terminal_error("entering raw mode"))?;
        IN_VIEW.store(true, Ordering::SeqCst);
        // From here on a failure restores what was done, through `restore`.
        let entered = execute!(std::io::stdout(), terminal::EnterAlternateScreen, cursor::Hide)
            .map_err(terminal_error("entering the alternate screen"))
            .and_then(|()| {
                Terminal::new(CrosstermBackend::new(std::io::stdout())).map_err(terminal_error("reading its size"))
            });
        match entered {
            Ok(terminal) => Ok(Screen { terminal }),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}
