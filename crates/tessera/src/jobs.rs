//! The job commands: `submit`, `jobs`, `job`, `logs`, `cancel`, `wait`, `gpus`. They talk to
//! the daemon over its Unix socket (`--socket`, `TESSERA_SOCKET`) or TCP with a token.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use tessera_daemon::client::{Client, Endpoint, Response};
use tessera_sched::{GpuRequest, JobRequest, NumaPolicy, Sharing};

use crate::Refusal;
use crate::cli::{AdminCommand, DaemonArgs, Output, SubmitArgs};
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
pub fn serve(g: &crate::cli::Global, state_dir: Option<PathBuf>, config: Option<PathBuf>) -> anyhow::Result<()> {
    let mut cfg = match config {
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
    match (g.backend, &g.sim) {
        (crate::cli::BackendChoice::Nvml, Some(_)) => {
            bail!("--sim describes the simulated node; it cannot be combined with --backend nvml")
        }
        (_, Some(spec)) => {
            cfg.node.sim = Some(spec.clone());
            cfg.node.backend = Some("sim".into());
        }
        (crate::cli::BackendChoice::Nvml, None) => cfg.node.backend = Some("nvml".into()),
        (crate::cli::BackendChoice::Sim, None) => cfg.node.backend = Some("sim".into()),
        (crate::cli::BackendChoice::Auto, None) => {}
    }
    let state_dir = state_dir.unwrap_or_else(|| {
        if tessera_host::effective_uid() == 0 {
            PathBuf::from("/var/lib/tessera")
        } else {
            crate::node::default_state_path().parent().map_or_else(|| PathBuf::from("."), |p| p.join("daemon"))
        }
    });
    let socket = g.daemon.socket.clone().or_else(|| cfg.server.socket.clone()).unwrap_or_else(default_socket);
    let shim_exe = std::env::current_exe().context("locating the tessera binary for the job supervisor")?;
    tessera_daemon::daemon::run(tessera_daemon::daemon::ServeOptions {
        state_dir,
        socket,
        config: cfg,
        shim_exe,
        shim_args: vec!["shim".into()],
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

/// The body of a successful response, or the daemon's error as a refusal.
fn ok(r: Response) -> anyhow::Result<Value> {
    if (200..300).contains(&r.status) {
        Ok(r.body)
    } else {
        Err(Refusal(format!("error: {} (HTTP {})", r.error_message(), r.status)).into())
    }
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()));
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
    let req = JobRequest {
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
    };
    Ok(req)
}

pub fn submit(output: Output, d: &DaemonArgs, a: &SubmitArgs) -> anyhow::Result<()> {
    if a.command.is_empty() {
        bail!("give the command after --, e.g. tessera submit --profile 1g.10gb -- python train.py");
    }
    let req = job_request(a)?;
    let cwd = std::env::current_dir().context("the current directory")?;
    let mut env = serde_json::Map::new();
    for (k, v) in std::env::vars() {
        if a.export_env || k == "PATH" || k == "HOME" || k == "USER" || k == "LANG" {
            env.insert(k, Value::String(v));
        }
    }
    for kv in &a.env {
        let Some((k, v)) = kv.split_once('=') else { bail!("--env '{kv}': write NAME=VALUE") };
        env.insert(k.to_string(), Value::String(v.to_string()));
    }
    let body = json!({"command": a.command, "env": env, "cwd": cwd.display().to_string(), "resources": req});
    let v = ok(client(d)?.request("POST", "/v1/jobs", Some(&body))?)?;
    match output {
        Output::Json => print_json(&v),
        Output::Table | Output::Csv => println!("{}", v["id"]),
    }
    Ok(())
}

fn job_row(j: &Value) -> Vec<String> {
    let s = |k: &str| j[k].as_str().unwrap_or("-").to_string();
    let placement = j["ranks"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|x| format!("GPU{}:{}@{}", x["gpu"], x["profile"].as_str().unwrap_or("?"), x["start"]))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "-".into());
    vec![
        j["id"].to_string(),
        s("user"),
        s("tenant"),
        s("state"),
        placement,
        s("reason"),
        j["command"]
            .as_array()
            .map(|c| c.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(" "))
            .unwrap_or_default(),
    ]
}

pub fn jobs(output: Output, d: &DaemonArgs, all: bool, state: Option<&str>) -> anyhow::Result<()> {
    let mut path = format!("/v1/jobs?all={all}");
    if let Some(s) = state {
        path.push_str(&format!("&state={s}"));
    }
    let v = ok(client(d)?.request("GET", &path, None)?)?;
    if output == Output::Json {
        print_json(&v);
        return Ok(());
    }
    let mut t = Table::new(&["ID", "USER", "TENANT", "STATE", "PLACEMENT", "REASON", "COMMAND"]);
    for j in v["jobs"].as_array().into_iter().flatten() {
        t.row(job_row(j));
    }
    print!("{}", t.render(0));
    Ok(())
}

pub fn job(output: Output, d: &DaemonArgs, id: u64) -> anyhow::Result<()> {
    let v = ok(client(d)?.request("GET", &format!("/v1/jobs/{id}"), None)?)?;
    if output == Output::Json {
        print_json(&v);
        return Ok(());
    }
    let s = |k: &str| v[k].as_str().map_or_else(|| v[k].to_string(), str::to_string);
    println!("job {}  {}  ({})", v["id"], s("state"), s("reason"));
    println!("  user {}  tenant {}  priority {}", s("user"), s("tenant"), v["priority"]);
    println!(
        "  command {}",
        v["command"]
            .as_array()
            .map(|c| c.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    );
    for r in v["ranks"].as_array().into_iter().flatten() {
        println!(
            "  rank {}: GPU {} {}@{} {}  cpus {}",
            r["rank"],
            r["gpu"],
            r["profile"].as_str().unwrap_or("?"),
            r["start"],
            r["mig_uuid"].as_str().unwrap_or("-"),
            r["cpus"].as_str().unwrap_or("-"),
        );
    }
    if let Some(e) = v.get("exit").filter(|e| !e.is_null()) {
        println!("  exit: {}", e["detail"].as_str().unwrap_or(""));
    }
    for ev in v["events"].as_array().into_iter().flatten() {
        println!(
            "  {} → {}: {}",
            ev["from"].as_str().unwrap_or("-"),
            ev["to"].as_str().unwrap_or("-"),
            ev["reason"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

pub fn cancel(output: Output, d: &DaemonArgs, id: u64) -> anyhow::Result<()> {
    let v = ok(client(d)?.request("POST", &format!("/v1/jobs/{id}/cancel"), None)?)?;
    match output {
        Output::Json => print_json(&v),
        Output::Table | Output::Csv => println!("job {id}: {}", v["state"].as_str().unwrap_or("cancelling")),
    }
    Ok(())
}

/// Exit status of `tessera wait`: 0 if the job succeeded, 1 otherwise.
pub fn wait(output: Output, d: &DaemonArgs, id: u64, timeout: Option<&str>) -> anyhow::Result<()> {
    let limit = timeout.map(parse_duration_ms).transpose().map_err(|e| anyhow::anyhow!("--timeout {e}"))?;
    let start = std::time::Instant::now();
    let c = client(d)?;
    loop {
        let left = limit.map(|l| l.saturating_sub(start.elapsed().as_millis() as u64));
        let step = left.unwrap_or(60_000).min(60_000);
        let v = ok(c.request("GET", &format!("/v1/jobs/{id}/wait?timeout_ms={step}"), None)?)?;
        let state = v["state"].as_str().unwrap_or("").to_string();
        let terminal = matches!(state.as_str(), "succeeded" | "failed" | "cancelled" | "timed_out" | "lost");
        if terminal || left == Some(0) {
            match output {
                Output::Json => print_json(&v),
                Output::Table | Output::Csv => println!("job {id}: {state} ({})", v["reason"].as_str().unwrap_or("")),
            }
            if state == "succeeded" {
                return Ok(());
            }
            return Err(Refusal(if terminal {
                format!("job {id} ended {state}")
            } else {
                format!("job {id} is still {state} after {}", format_duration_ms(limit.unwrap_or(0)))
            })
            .into());
        }
    }
}

pub fn logs(d: &DaemonArgs, id: u64, rank: u32, stderr: bool, follow: bool) -> anyhow::Result<()> {
    let c = client(d)?;
    let stream = if stderr { "stderr" } else { "stdout" };
    let mut offset = 0u64;
    let mut out = std::io::stdout().lock();
    loop {
        let v =
            ok(c.request("GET", &format!("/v1/jobs/{id}/logs?rank={rank}&stream={stream}&offset={offset}"), None)?)?;
        let data = v["data"].as_str().unwrap_or("");
        out.write_all(data.as_bytes())?;
        out.flush()?;
        offset = v["next_offset"].as_u64().unwrap_or(offset);
        let done = v["job_ended"].as_bool().unwrap_or(true);
        if !follow || (done && data.is_empty()) {
            return Ok(());
        }
        if data.is_empty() {
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// `tessera admin`: drain, undrain, layout.
pub fn admin(output: Output, d: &DaemonArgs, cmd: AdminCommand) -> anyhow::Result<()> {
    let c = client(d)?;
    let v = match &cmd {
        AdminCommand::Drain { gpu } => ok(c.request("POST", &format!("/v1/gpus/{gpu}/drain"), None)?)?,
        AdminCommand::Undrain { gpu } => ok(c.request("POST", &format!("/v1/gpus/{gpu}/undrain"), None)?)?,
        AdminCommand::Layout { gpu, instances, dry_run } => {
            let list: Vec<&String> = instances.iter().filter(|i| i.as_str() != "none").collect();
            let body = serde_json::json!({"instances": list, "dry_run": dry_run});
            ok(c.request("POST", &format!("/v1/gpus/{gpu}/layout"), Some(&body))?)?
        }
    };
    if output == Output::Json {
        print_json(&v);
        return Ok(());
    }
    match cmd {
        AdminCommand::Drain { gpu } => println!("GPU {gpu} drained: no new work is placed on it"),
        AdminCommand::Undrain { gpu } => println!("GPU {gpu} open for work again"),
        AdminCommand::Layout { gpu, .. } => {
            let steps: Vec<&str> = v["steps"].as_array().into_iter().flatten().filter_map(|s| s.as_str()).collect();
            let layout: Vec<&str> = v["layout"].as_array().into_iter().flatten().filter_map(|s| s.as_str()).collect();
            let verb = if v["dry_run"].as_bool() == Some(true) { "would" } else { "did" };
            if steps.is_empty() {
                println!("GPU {gpu}: already has that layout");
            } else {
                for s in &steps {
                    println!("GPU {gpu}: {verb} {s}");
                }
            }
            println!(
                "GPU {gpu} layout: {}",
                if layout.is_empty() { "no instances".to_string() } else { layout.join(", ") }
            );
        }
    }
    Ok(())
}

pub fn gpus(output: Output, d: &DaemonArgs) -> anyhow::Result<()> {
    let v = ok(client(d)?.request("GET", "/v1/gpus", None)?)?;
    if output == Output::Json {
        print_json(&v);
        return Ok(());
    }
    for g in v["gpus"].as_array().into_iter().flatten() {
        println!(
            "GPU {}  {}  ({})  NUMA {}{}",
            g["index"],
            g["name"].as_str().unwrap_or(""),
            g["model"].as_str().unwrap_or("?"),
            g["numa_node"],
            if g["drained"].as_bool() == Some(true) { "  DRAINED" } else { "" }
        );
        let mut t = Table::new(&["GI", "PROFILE", "PLACEMENT", "JOBS"]);
        for i in g["instances"].as_array().into_iter().flatten() {
            let jobs: Vec<String> = i["jobs"].as_array().into_iter().flatten().map(|j| j.to_string()).collect();
            t.row(vec![
                i["gpu_instance_id"].to_string(),
                i["profile"].as_str().unwrap_or("?").to_string(),
                format!("{}:{}", i["start"], i["size"]),
                if jobs.is_empty() { "idle".into() } else { jobs.join(",") },
            ]);
        }
        print!("{}", t.render(2));
        println!();
    }
    Ok(())
}
