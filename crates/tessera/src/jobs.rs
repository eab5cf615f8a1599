//! The job commands: `serve`, `submit`, `jobs`, `job`, `logs`, `cancel`, `wait`, `gpus`,
//! `admin`. They talk to the daemon over its Unix socket (`--socket`, `TESSERA_SOCKET`) or TCP
//! with a token, through the typed client: no reply is read by string key.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;
use tessera_daemon::client::{Client, ClientError, Endpoint};
use tessera_daemon::wire::{JobQuery, JobState, JobView, LayoutRequest, Stream, SubmitRequest};
use tessera_gpu::BackendChoice;
use tessera_sched::{GpuRequest, JobRequest, NumaPolicy, Sharing};

use crate::Refusal;
use crate::cli::{AdminCommand, AdminHealthCommand, DaemonArgs, Output, SubmitArgs};
use crate::render::Table;
use crate::units::{format_duration_ms, parse_duration_ms, parse_mib};

/// The daemon's default socket: `$XDG_RUNTIME_DIR/tessera/tessera.sock`, else
/// `/run/tessera/tessera.sock` for root and `/tmp/tessera-<uid>/tessera.sock` otherwise.
pub fn default_socket() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir).join("tessera").join("tessera.sock");
    }
    let uid = tessera_host::effective_uid();
    if uid == 0 {
        PathBuf::from("/run/tessera/tessera.sock")
    } else {
        PathBuf::from(format!("/tmp/tessera-{uid}/tessera.sock"))
    }
}

/// `tessera serve`.
pub fn serve(
    g: &crate::cli::Global,
    state_dir: Option<PathBuf>,
    config: Option<PathBuf>,
    init: bool,
) -> anyhow::Result<()> {
    let cfg = match config {
        Some(p) => tessera_daemon::config::Config::load(&p)?,
        None => {
            let etc = PathBuf::from("/etc/tessera/tessera.toml");
            if etc.exists() {
                tessera_daemon::config::Config::load(&etc)?
            } else {
                tessera_daemon::config::Config::default()
            }
        }
    };
    let state_dir = state_dir.unwrap_or_else(|| {
        if tessera_host::effective_uid() == 0 {
            PathBuf::from("/var/lib/tessera")
        } else {
            crate::node::default_state_path().parent().map_or_else(|| PathBuf::from("."), |p| p.join("daemon"))
        }
    });
    // The same backend choice as every other command; the config file fills in what the
    // command line leaves open, and `tessera_gpu::open` applies the rules (a simulated-node spec
    // without a choice means the simulated node).
    let mut backend = crate::node::options(g);
    if g.sim.is_none() {
        backend.sim_spec = cfg.node.sim.clone();
    }
    if g.backend == BackendChoice::Auto
        && let Some(choice) = cfg.backend_choice()
    {
        backend.choice = choice;
    }
    if g.sim_state.is_none() {
        backend.sim_state = state_dir.join("sim-node.json");
    }
    let socket = g.daemon.socket.clone().or_else(|| cfg.server.socket.clone()).unwrap_or_else(default_socket);
    let exe = std::env::current_exe().context("locating the tessera binary for the job supervisor")?;
    tessera_daemon::daemon::run(tessera_daemon::daemon::ServeOptions {
        state_dir,
        socket,
        config: cfg,
        backend,
        shim: tessera_daemon::engine::ShimCommand { exe, args: vec!["shim".into()] },
        init,
    })?;
    Ok(())
}

pub fn client(args: &DaemonArgs) -> anyhow::Result<Client> {
    if let Some(addr) = &args.tcp {
        let token = match (&args.token, &args.token_file) {
            (Some(t), _) => t.clone(),
            (None, Some(f)) => {
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?.trim().to_string()
            }
            (None, None) => bail!("--tcp needs a token: --token or --token-file (or TESSERA_TOKEN)"),
        };
        return Ok(Client::new(Endpoint::Tcp { addr: addr.clone(), token }));
    }
    Ok(Client::new(Endpoint::Unix(args.socket.clone().unwrap_or_else(default_socket))))
}

/// A daemon's refusal becomes a [`Refusal`] (exit 1, the message on stderr).
fn ok<T>(r: Result<T, ClientError>) -> anyhow::Result<T> {
    match r {
        Ok(v) => Ok(v),
        Err(ClientError::Api { status, message, .. }) => {
            Err(Refusal(format!("error: {message} (HTTP {status})")).into())
        }
        Err(e) => Err(e.into()),
    }
}

fn print_json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Build the scheduler's request from the command line.
pub fn job_request(a: &SubmitArgs) -> anyhow::Result<JobRequest> {
    let chosen = [a.gpu_mem.is_some(), a.profile.is_some(), a.gpus.is_some(), a.compute_slices.is_some()]
        .iter()
        .filter(|x| **x)
        .count();
    if chosen > 1 {
        bail!("choose one of --gpu-mem, --profile, --gpus and --compute-slices");
    }
    let gpu = if let Some(m) = &a.gpu_mem {
        GpuRequest::Memory { mib: parse_mib(m).map_err(|e| anyhow::anyhow!("--gpu-mem {e}"))? }
    } else if let Some(p) = &a.profile {
        GpuRequest::Profile { name: p.clone() }
    } else if let Some(n) = a.gpus {
        if n == 0 {
            bail!("--gpus must be at least 1");
        }
        GpuRequest::WholeGpu
    } else if let Some(c) = a.compute_slices {
        GpuRequest::ComputeSlices { slices: c }
    } else {
        GpuRequest::ComputeSlices { slices: 1 }
    };
    let sharing = match (&a.mps, a.time_slice) {
        (Some(_), true) => bail!("--mps and --time-slice exclude each other"),
        (Some(pct), false) => {
            let p: u8 = pct
                .trim_end_matches('%')
                .parse()
                .ok()
                .filter(|p| (1..=100).contains(p))
                .ok_or_else(|| anyhow::anyhow!("--mps '{pct}': give the active-thread percentage, 1% to 100%"))?;
            let mem = a.mps_mem.as_deref().map(parse_mib).transpose().map_err(|e| anyhow::anyhow!("--mps-mem {e}"))?;
            Sharing::Mps { active_thread_pct: p, pinned_mem_mib: mem }
        }
        (None, true) => Sharing::TimeSlice,
        (None, false) => Sharing::Exclusive,
    };
    Ok(JobRequest {
        gpu,
        ranks: a.ranks,
        gpus_per_rank: a.gpus.unwrap_or(1),
        gpu_numa_local: a.gpu_numa_local,
        sharing,
        cpus: a.cpus,
        mem_mib: a.mem.as_deref().map(parse_mib).transpose().map_err(|e| anyhow::anyhow!("--mem {e}"))?.unwrap_or(1024),
        numa: if a.no_numa { NumaPolicy::Any } else { NumaPolicy::Local },
        tenant: a.tenant.clone().unwrap_or_default(),
        priority: a.priority,
        runtime_estimate_ms: a
            .estimate
            .as_deref()
            .map(parse_duration_ms)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--estimate {e}"))?,
        time_limit_ms: a
            .time_limit
            .as_deref()
            .map(parse_duration_ms)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--time-limit {e}"))?,
        requeue: !a.no_requeue,
    })
}

pub fn submit(output: Output, d: &DaemonArgs, a: &SubmitArgs) -> anyhow::Result<()> {
    if a.command.is_empty() {
        bail!("give the command after --, e.g. tessera submit --profile 1g.10gb -- python train.py");
    }
    let resources = job_request(a)?;
    let cwd = std::env::current_dir().context("the current directory")?;
    let mut env = std::collections::BTreeMap::new();
    for (k, v) in std::env::vars() {
        if a.export_env || k == "PATH" || k == "HOME" || k == "USER" || k == "LANG" {
            env.insert(k, v);
        }
    }
    for kv in &a.env {
        let Some((k, v)) = kv.split_once('=') else { bail!("--env '{kv}': write NAME=VALUE") };
        env.insert(k.to_string(), v.to_string());
    }
    let body = SubmitRequest {
        command: a.command.clone(),
        env,
        cwd: cwd.display().to_string(),
        resources,
        preempt_signal: a.preempt_signal.clone(),
    };
    let reply = ok(client(d)?.submit(&body))?;
    match output {
        Output::Json => print_json(&reply),
        Output::Table | Output::Csv => {
            println!("{}", reply.id);
            Ok(())
        }
    }
}

fn placement(j: &JobView) -> String {
    let s: Vec<String> = j
        .ranks
        .iter()
        .flat_map(|r| r.slices.iter())
        .map(|x| format!("GPU{}:{}@{}", x.gpu, x.profile.as_deref().unwrap_or("?"), x.start))
        .collect();
    if s.is_empty() { "-".into() } else { s.join(" ") }
}

fn command_line(j: &JobView) -> String {
    match (&j.command, &j.external) {
        (Some(c), _) => c.join(" "),
        (None, Some(e)) => format!("({} {})", e.door, e.key),
        _ => String::new(),
    }
}

pub fn jobs(output: Output, d: &DaemonArgs, all: bool, state: Option<&str>) -> anyhow::Result<()> {
    let states = state
        .map(|s| s.split(',').map(|x| x.parse::<JobState>()).collect::<Result<Vec<_>, _>>())
        .transpose()
        .map_err(|e| anyhow::anyhow!("--state: {e}"))?
        .unwrap_or_default();
    let list = ok(client(d)?.jobs(&JobQuery { states, all }))?;
    if output == Output::Json {
        return print_json(&list);
    }
    let mut t = Table::new(&["ID", "USER", "TENANT", "STATE", "PLACEMENT", "REASON", "COMMAND"]);
    for j in &list.jobs {
        t.row(vec![
            j.id.to_string(),
            j.user.clone(),
            j.tenant.clone(),
            j.state.to_string(),
            placement(j),
            j.reason.clone(),
            command_line(j),
        ]);
    }
    print!("{}", t.render(0));
    Ok(())
}

pub fn job(output: Output, d: &DaemonArgs, id: u64) -> anyhow::Result<()> {
    let v = ok(client(d)?.job(id))?;
    if output == Output::Json {
        return print_json(&v);
    }
    println!("job {}  {}  ({})", v.id, v.state, v.reason);
    println!("  user {}  tenant {}  priority {}  runs {}", v.user, v.tenant, v.priority, v.runs);
    println!("  command {}", command_line(&v));
    for r in &v.ranks {
        for s in &r.slices {
            let what =
                if s.mig { format!("{}@{}", s.profile.as_deref().unwrap_or("?"), s.start) } else { "whole GPU".into() };
            println!(
                "  rank {}: GPU {} {what} {}  cpus {}",
                r.rank,
                s.gpu,
                s.mig_uuid.as_deref().unwrap_or(&s.gpu_uuid),
                r.cpus.as_deref().unwrap_or("-"),
            );
        }
    }
    if let Some(e) = &v.exit {
        println!("  exit: {}", e.detail);
    }
    for ev in &v.events {
        println!("  {} → {}: {}", ev.from, ev.to, ev.reason);
    }
    Ok(())
}

pub fn cancel(output: Output, d: &DaemonArgs, id: u64) -> anyhow::Result<()> {
    let v = ok(client(d)?.cancel(id))?;
    match output {
        Output::Json => print_json(&v),
        Output::Table | Output::Csv => {
            println!("job {id}: {}", v.state);
            Ok(())
        }
    }
}

/// Exit status of `tessera wait`: 0 if the job succeeded, 1 otherwise.
pub fn wait(output: Output, d: &DaemonArgs, id: u64, timeout: Option<&str>) -> anyhow::Result<()> {
    let limit = timeout.map(parse_duration_ms).transpose().map_err(|e| anyhow::anyhow!("--timeout {e}"))?;
    let start = std::time::Instant::now();
    let c = client(d)?;
    loop {
        let left = limit.map(|l| l.saturating_sub(start.elapsed().as_millis() as u64));
        let step = left.unwrap_or(60_000).min(60_000);
        let v = ok(c.wait(id, step))?;
        let terminal = v.state.is_terminal();
        if terminal || left == Some(0) {
            match output {
                Output::Json => print_json(&v)?,
                Output::Table | Output::Csv => println!("job {id}: {} ({})", v.state, v.reason),
            }
            if v.state == JobState::Succeeded {
                return Ok(());
            }
            return Err(Refusal(if terminal {
                format!("job {id} ended {}", v.state)
            } else {
                format!("job {id} is still {} after {}", v.state, format_duration_ms(limit.unwrap_or(0)))
            })
            .into());
        }
    }
}

pub fn logs(d: &DaemonArgs, id: u64, rank: u32, stderr: bool, follow: bool) -> anyhow::Result<()> {
    let c = client(d)?;
    let stream = if stderr { Stream::Stderr } else { Stream::Stdout };
    let mut offset = 0u64;
    let mut out = std::io::stdout().lock();
    loop {
        let v = ok(c.logs(id, rank, stream, offset))?;
        out.write_all(v.data.as_bytes())?;
        out.flush()?;
        offset = v.next_offset;
        if !follow || (v.job_ended && v.data.is_empty()) {
            return Ok(());
        }
        if v.data.is_empty() {
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// `tessera admin`: drain, undrain, layout, health.
pub fn admin(output: Output, d: &DaemonArgs, cmd: AdminCommand) -> anyhow::Result<()> {
    let c = client(d)?;
    match cmd {
        AdminCommand::Drain { gpu, reason } => {
            let v = ok(c.drain(gpu, &reason))?;
            if output == Output::Json {
                return print_json(&v);
            }
            println!("GPU {gpu} drained: no new work is placed on it");
        }
        AdminCommand::Undrain { gpu } => {
            let v = ok(c.undrain(gpu))?;
            if output == Output::Json {
                return print_json(&v);
            }
            println!("GPU {gpu} open for work again");
        }
        AdminCommand::Layout { gpu, instances, dry_run } => {
            let list: Vec<String> = instances.into_iter().filter(|i| i.as_str() != "none").collect();
            let v = ok(c.layout(gpu, &LayoutRequest { instances: list, dry_run }))?;
            if output == Output::Json {
                return print_json(&v);
            }
            let verb = if v.dry_run { "would" } else { "did" };
            if v.steps.is_empty() {
                println!("GPU {gpu}: already has that layout");
            }
            for s in &v.steps {
                println!("GPU {gpu}: {verb} {s}");
            }
            println!(
                "GPU {gpu} layout: {}",
                if v.layout.is_empty() { "no instances".to_string() } else { v.layout.join(", ") }
            );
        }
        AdminCommand::Health(AdminHealthCommand::Clear { gpu }) => {
            let v = ok(c.health_clear(gpu))?;
            if output == Output::Json {
                return print_json(&v);
            }
            println!("GPU {gpu}: {}", v.health);
        }
        AdminCommand::Health(AdminHealthCommand::Show) => {
            let v = ok(c.health())?;
            if output == Output::Json {
                return print_json(&v);
            }
            let mut t = Table::new(&["GPU", "HEALTH", "DRAINED", "LAST EVENT"]);
            for g in &v.gpus {
                let last = g
                    .events
                    .last()
                    .map(|e| format!("Xid {} ({})", e.event.xid, e.class.name))
                    .unwrap_or_else(|| "-".into());
                let drained = g.drained.as_ref().map_or_else(|| "-".into(), |d| format!("by {}", d.by));
                t.row(vec![g.index.to_string(), g.health.to_string(), drained, last]);
            }
            print!("{}", t.render(0));
        }
    }
    Ok(())
}

pub fn gpus(output: Output, d: &DaemonArgs) -> anyhow::Result<()> {
    let v = ok(client(d)?.gpus())?;
    if output == Output::Json {
        return print_json(&v);
    }
    for g in &v.gpus {
        let numa = g.numa_node.map_or_else(|| "-".into(), |n| n.to_string());
        let mig = if g.mig { "MIG on" } else { "MIG off" };
        let drained = if g.drained.is_some() { "  DRAINED" } else { "" };
        let health = if g.health == "healthy" { String::new() } else { format!("  {}", g.health) };
        println!(
            "GPU {}  {}  ({})  {mig}  NUMA {numa}{drained}{health}",
            g.index,
            g.name,
            g.model.as_deref().unwrap_or("?")
        );
        let mut t = Table::new(&["GI", "PROFILE", "PLACEMENT", "JOBS"]);
        for i in &g.instances {
            let jobs: Vec<String> = i.jobs.iter().map(u64::to_string).collect();
            t.row(vec![
                i.gpu_instance_id.map_or_else(|| "-".into(), |x| x.to_string()),
                i.profile.clone(),
                format!("{}:{}", i.start, i.size),
                if jobs.is_empty() { "idle".into() } else { jobs.join(",") },
            ]);
        }
        print!("{}", t.render(2));
        println!();
    }
    Ok(())
}
