//! The job commands: `submit`, `jobs`, `job`, `logs`, `cancel`, `wait`, `gpus`,
//! `admin`. They talk to the daemon over its Unix socket (`--socket`, `TESSERA_SOCKET`) or TCP
//! with a token, through the typed client: no reply is read by string key.

use std::fmt::Write as _;

use anyhow::{Context as _, bail};
use serde::Serialize;
use tessera_daemon::client::{Client, ClientError, Endpoint};
use tessera_daemon::wire::{
    CancelState, DryRunReply, DryRunVerdict, GpuList, JobList, JobQuery, JobState, JobView, LayoutRequest,
    SubmitRequest,
};
use tessera_sched::{GpuRequest, JobRequest, NumaPolicy, Sharing};

use crate::Refusal;
use crate::cli::{AdminCommand, AdminHealthCommand, CancelArgs, DaemonArgs, JobsArgs, Output, SubmitArgs};
use crate::render::{Table, escape, terminal_width};
use crate::units::{
    format_duration_ms, full_time, parse_duration_ms, parse_mib, parse_since, short_duration_ms, table_time,
};

// Where the client commands look for the daemon unless told: the user's own daemon, else the
// system one (one policy, in the client).
use tessera_daemon::client::default_socket;

pub fn client(args: &DaemonArgs) -> anyhow::Result<Client> {
    if let Some(addr) = &args.tcp {
        let token = args.token()?;
        return Ok(Client::new(Endpoint::Tcp { addr: addr.clone(), token }));
    }
    Ok(Client::new(Endpoint::Unix(args.socket.clone().unwrap_or_else(default_socket))))
}

/// A daemon's refusal becomes a [`Refusal`] (exit 1, the message on stderr), in the CLI's words.
pub(crate) fn ok<T>(r: Result<T, ClientError>) -> anyhow::Result<T> {
    ok_for(r, None)
}

/// [`ok`] for a submission: the request's fields are named by the flags that set them.
fn ok_for<T>(r: Result<T, ClientError>, submit: Option<&SubmitArgs>) -> anyhow::Result<T> {
    r.map_err(|e| match e {
        ClientError::Api { status, message, .. } => {
            Refusal(format!("error: {} (HTTP {status})", in_cli_words(&message, submit))).into()
        }
        other => unreachable_daemon(other),
    })
}

/// A daemon that could not be asked: the client's sentence already names its cause, so it is
/// said once (an error chain would repeat the cause after it).
fn unreachable_daemon(e: ClientError) -> anyhow::Error {
    Refusal(format!("error: {e}")).into()
}

/// The API's request fields and the flags that set them.
const FLAG_OF_FIELD: &[(&str, &str)] = &[
    ("resources.ranks", "--ranks"),
    ("resources.cpus", "--cpus"),
    ("resources.mem_mib", "--mem"),
    ("resources.gpus_per_rank", "--gpus"),
    ("resources.gpu_numa_local", "--gpu-numa-local"),
    ("resources.sharing.mps.active_thread_pct", "--mps"),
    ("resources.sharing.mps.pinned_mem_mib", "--mps-mem"),
    ("resources.sharing", "--mps"),
    ("resources.tenant", "--tenant"),
    ("tenant", "--tenant"),
    ("resources.priority", "--priority"),
    ("priority", "--priority"),
    ("resources.runtime_estimate_ms", "--estimate"),
    ("resources.time_limit_ms", "--time-limit"),
    ("preempt_signal", "--preempt-signal"),
    ("cwd", "the working directory"),
    ("command[0]", "the command"),
    ("command", "the command"),
    ("state", "--state"),
    ("user", "--user"),
    ("rank", "--rank"),
];

/// A daemon message that starts with an API field (`resources.ranks: must be at least 1`)
/// rewritten to start with the flag that sets it (`--ranks: must be at least 1`).
fn in_cli_words(message: &str, submit: Option<&SubmitArgs>) -> String {
    let Some((field, rest)) = message.split_once(": ") else { return message.to_string() };
    let gpu_flag = submit.map(|a| {
        if a.gpu_mem.is_some() {
            "--gpu-mem"
        } else if a.profile.is_some() {
            "--profile"
        } else if a.gpus.is_some() {
            "--gpus"
        } else {
            "--compute-slices"
        }
    });
    let flag = if field == "resources.gpu" || field.starts_with("resources.gpu.") {
        gpu_flag.map(str::to_string)
    } else if let Some(name) = field.strip_prefix("env.") {
        Some(format!("--env {name}"))
    } else {
        FLAG_OF_FIELD.iter().find(|(f, _)| *f == field).map(|(_, flag)| (*flag).to_string())
    };
    match flag {
        Some(flag) => format!("{flag}: {rest}"),
        None => message.to_string(),
    }
}

fn print_json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", crate::render::escape_json(&serde_json::to_string_pretty(v)?));
    Ok(())
}

/// A size flag's value in MiB.
fn size_flag(flag: &str, text: &str) -> anyhow::Result<u64> {
    parse_mib(text).map_err(|e| anyhow::anyhow!("{flag} {e}"))
}

/// A duration flag's value in milliseconds.
fn duration_flag(flag: &str, text: &str) -> anyhow::Result<u64> {
    parse_duration_ms(text).map_err(|e| anyhow::anyhow!("{flag} {e}"))
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
        GpuRequest::Memory { mib: size_flag("--gpu-mem", m)? }
    } else if let Some(p) = &a.profile {
        GpuRequest::Profile { name: p.clone() }
    } else if a.gpus.is_some() {
        GpuRequest::WholeGpu
    } else if let Some(c) = a.compute_slices {
        GpuRequest::ComputeSlices { slices: c }
    } else {
        GpuRequest::ComputeSlices { slices: 1 }
    };
    let sharing =
        match (&a.mps, a.time_slice) {
            (Some(_), true) => bail!("--mps and --time-slice exclude each other"),
            (Some(pct), false) => {
                let p: u8 =
                    pct.trim_end_matches('%').parse().ok().filter(|p| (1..=100).contains(p)).ok_or_else(|| {
                        anyhow::anyhow!("--mps '{pct}': give the active-thread percentage, 1% to 100%")
                    })?;
                let mem = a.mps_mem.as_deref().map(|m| size_flag("--mps-mem", m)).transpose()?;
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
        mem_mib: a.mem.as_deref().map(|m| size_flag("--mem", m)).transpose()?.unwrap_or(1024),
        numa: if a.no_numa { NumaPolicy::Any } else { NumaPolicy::Local },
        tenant: a.tenant.clone().unwrap_or_default(),
        priority: a.priority,
        runtime_estimate_ms: a.estimate.as_deref().map(|t| duration_flag("--estimate", t)).transpose()?,
        time_limit_ms: a.time_limit.as_deref().map(|t| duration_flag("--time-limit", t)).transpose()?,
        requeue: !a.no_requeue,
        pin: Vec::new(),
    })
}

/// The submission the command line describes.
fn submit_request(a: &SubmitArgs) -> anyhow::Result<SubmitRequest> {
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
    Ok(SubmitRequest {
        command: a.command.clone(),
        env,
        cwd: cwd.display().to_string(),
        resources,
        preempt_signal: a.preempt_signal.clone(),
    })
}

/// `submit --array`'s indices, in the order given, each once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArrayIndices(pub Vec<u32>);

/// The most jobs one `submit --array` makes.
const MAX_ARRAY_JOBS: usize = 10_000;

/// `--array`: comma-separated indices and ranges `A-B` with an optional step `A-B:S`, as Slurm
/// writes them (Slurm's `%N`, a limit on how many run at once, is refused: Tessera has none).
pub fn parse_array(text: &str) -> Result<ArrayIndices, String> {
    if text.contains('%') {
        return Err("a limit on how many run at once (`%N`) is not supported".into());
    }
    let num = |s: &str| s.trim().parse::<u32>().map_err(|_| format!("'{}' is not an index (0 or more)", s.trim()));
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for part in text.split(',') {
        let (range, step) = match part.split_once(':') {
            Some((r, s)) => (r, num(s)?),
            None => (part, 1),
        };
        if step == 0 {
            return Err(format!("'{part}': the step must be at least 1"));
        }
        let (lo, hi) = match range.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => (num(range)?, num(range)?),
        };
        if lo > hi {
            return Err(format!("'{part}': the range runs backwards"));
        }
        let mut i = lo;
        loop {
            if seen.insert(i) {
                out.push(i);
                if out.len() > MAX_ARRAY_JOBS {
                    return Err(format!("more than {MAX_ARRAY_JOBS} jobs in one array"));
                }
            }
            match i.checked_add(step) {
                Some(n) if n <= hi => i = n,
                _ => break,
            }
        }
    }
    Ok(ArrayIndices(out))
}

/// `submit --array`: one request per index, with the index in its environment, sent together.
fn submit_array(
    output: Output,
    d: &DaemonArgs,
    a: &SubmitArgs,
    body: SubmitRequest,
    indices: &[u32],
) -> anyhow::Result<()> {
    let (min, max) = (indices.iter().min().copied().unwrap_or(0), indices.iter().max().copied().unwrap_or(0));
    let requests: Vec<SubmitRequest> = indices
        .iter()
        .map(|i| {
            let mut r = body.clone();
            r.env.insert("TESSERA_ARRAY_TASK_ID".into(), i.to_string());
            r.env.insert("TESSERA_ARRAY_TASK_MIN".into(), min.to_string());
            r.env.insert("TESSERA_ARRAY_TASK_MAX".into(), max.to_string());
            r.env.insert("TESSERA_ARRAY_TASK_COUNT".into(), indices.len().to_string());
            r
        })
        .collect();
    let replies = client(d)?.submit_many(&requests, 8);
    let mut ids = Vec::with_capacity(replies.len());
    let mut refused = Vec::new();
    for (i, r) in indices.iter().zip(replies) {
        match r {
            Ok(reply) => ids.push(reply.id),
            Err(e) => refused.push((*i, e)),
        }
    }
    match output {
        Output::Json => print_json(&ids)?,
        Output::Table | Output::Csv => {
            let mut out = String::with_capacity(ids.len() * 8);
            for id in &ids {
                let _ = writeln!(out, "{id}");
            }
            print!("{out}");
        }
    }
    match refused.into_iter().next() {
        None => Ok(()),
        Some((first, e)) => {
            let n = indices.len() - ids.len();
            let why = ok_for::<()>(Err(e), Some(a)).err().map(|e| e.to_string()).unwrap_or_default();
            Err(Refusal(format!("{n} of {} array jobs were not submitted; index {first}: {why}", indices.len())).into())
        }
    }
}

pub fn submit(output: Output, d: &DaemonArgs, a: &SubmitArgs) -> anyhow::Result<()> {
    let body = submit_request(a)?;
    if let Some(ArrayIndices(indices)) = &a.array {
        return submit_array(output, d, a, body, indices);
    }
    if a.dry_run {
        let reply = ok_for(client(d)?.dry_run(&body), Some(a))?;
        return match output {
            Output::Json => print_json(&reply),
            Output::Table | Output::Csv => {
                print!("{}", dry_run_text(&reply));
                Ok(())
            }
        };
    }
    let reply = ok_for(client(d)?.submit(&body), Some(a))?;
    match output {
        Output::Json => print_json(&reply),
        Output::Table | Output::Csv => {
            println!("{}", reply.id);
            Ok(())
        }
    }
}

/// `submit --dry-run`'s answer for people.
fn dry_run_text(r: &DryRunReply) -> String {
    let mut out = String::new();
    let profiles = if r.profiles.is_empty() { "-".to_string() } else { r.profiles.join("; ") };
    let _ = writeln!(out, "profile    {}", escape(&profiles));
    match r.verdict {
        DryRunVerdict::Start => {
            let _ = writeln!(out, "verdict    it would start now");
        }
        DryRunVerdict::Reconfigure => {
            let _ = writeln!(out, "verdict    it would start once GPUs are reconfigured for it");
        }
        DryRunVerdict::Wait => {
            let _ = writeln!(out, "verdict    it would wait: {}", escape(&r.reason));
        }
    }
    for rank in &r.ranks {
        let slices: Vec<String> = rank
            .slices
            .iter()
            .map(|s| {
                let what = if s.mig {
                    let gi = s.gpu_instance_id.map_or_else(|| " (new instance)".to_string(), |g| format!(" (GI {g})"));
                    format!("{}@{}{gi}", s.profile.as_deref().unwrap_or("?"), s.start)
                } else {
                    "whole GPU".to_string()
                };
                format!("GPU {} {what}", s.gpu)
            })
            .collect();
        let _ = writeln!(out, "rank {:<5} {}", rank.rank, slices.join(", "));
        let numa = rank.numa_node.map_or_else(|| "not bound".to_string(), |n| format!("NUMA node {n}"));
        let _ = writeln!(
            out,
            "           {} CPU{} ({}), {numa}, {} MiB",
            rank.cpu_count,
            if rank.cpu_count == 1 { "" } else { "s" },
            rank.cpus.as_deref().unwrap_or("not bound"),
            rank.mem_mib
        );
    }
    for g in &r.reconfigure {
        let _ = writeln!(out, "GPU {:<6} {}", g.gpu, g.steps.join(", "));
    }
    if !r.preempt.is_empty() {
        let ids: Vec<String> = r.preempt.iter().map(u64::to_string).collect();
        let _ = writeln!(out, "preempts   job {}", ids.join(", "));
    }
    out
}

/// `GPU0:1g.10gb@6` for each slice of the job's ranks.
fn placement(j: &JobView) -> String {
    let s: Vec<String> = j
        .ranks
        .iter()
        .flat_map(|r| r.slices.iter())
        .map(|x| {
            if x.mig {
                format!("GPU{}:{}@{}", x.gpu, x.profile.as_deref().unwrap_or("?"), x.start)
            } else {
                format!("GPU{}:whole", x.gpu)
            }
        })
        .collect();
    s.join(",")
}

/// The command line as a shell would take it back: arguments with spaces or quotes are quoted.
/// Not escaped yet: the caller escapes control characters ([`escape`]).
fn command_line(j: &JobView) -> String {
    match (&j.command, &j.external) {
        (Some(c), _) => c.iter().map(|a| shell_word(a)).collect::<Vec<_>>().join(" "),
        (None, Some(e)) => format!("({} {})", e.door, e.key),
        _ => String::new(),
    }
}

fn shell_word(arg: &str) -> std::borrow::Cow<'_, str> {
    let plain =
        !arg.is_empty() && arg.chars().all(|c| c.is_alphanumeric() || "-_./:=@%+,^".contains(c) || c.is_control());
    if plain { arg.into() } else { format!("'{}'", arg.replace('\'', "'\\''")).into() }
}

/// `--state`'s list: each a state of `allowed`; an unknown one names them all.
fn parse_states(text: Option<&str>, allowed: &[JobState]) -> anyhow::Result<Vec<JobState>> {
    let Some(text) = text else { return Ok(Vec::new()) };
    let names = || allowed.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
    text.split(',')
        .map(|x| x.trim())
        .filter(|x| !x.is_empty())
        .map(|x| {
            let st = x.parse::<JobState>().ok().filter(|s| allowed.contains(s));
            // Slurm's and Kubernetes' words for the same states.
            let ours = match x.to_ascii_lowercase().as_str() {
                "pending" | "pd" => Some("queued"),
                "completed" | "complete" | "cd" => Some("succeeded"),
                "canceled" | "ca" => Some("cancelled"),
                "timeout" | "to" => Some("timed_out"),
                "oom" | "out_of_memory" => Some("oom_killed"),
                "r" | "active" => Some("running"),
                _ => None,
            };
            let hint = ours.map(|o| format!(" (did you mean '{o}'?)")).unwrap_or_default();
            st.ok_or_else(|| anyhow::anyhow!("--state: '{x}' is not one of {}{hint}", names()))
        })
        .collect()
}

/// How many jobs `tessera jobs` shows in a table unless `--limit` says.
const DEFAULT_PAGE: u32 = 100;

/// `tessera jobs`.
pub fn jobs(output: Output, d: &DaemonArgs, a: &JobsArgs) -> anyhow::Result<()> {
    let states = parse_states(a.state.as_deref(), &JobState::ALL)?;
    let now = tessera_host::now_ms();
    let since_ms =
        a.since.as_deref().map(|s| parse_since(s, now)).transpose().map_err(|e| anyhow::anyhow!("--since {e}"))?;
    let q = JobQuery {
        states,
        history: a.all,
        since_ms,
        user: a.user.clone(),
        tenant: a.tenant.clone(),
        all: a.all_users,
        // People read a page; programs (`-o json`) get every job unless they ask for a page.
        limit: match (a.limit, output) {
            (Some(l), _) => l.0,
            (None, Output::Json) => None,
            (None, _) => Some(DEFAULT_PAGE),
        },
        after: a.after,
    };
    let c = client(d)?;
    // `--limit all`: every page, followed here; otherwise one page.
    let list = if q.limit.is_none() { ok(c.jobs(&q))? } else { ok(c.jobs_page(&q))? };
    if output == Output::Json {
        return print_json(&list);
    }
    print!("{}", jobs_table(&list.jobs, now, terminal_width()));
    if let Some(next) = list.next {
        eprintln!("(more jobs follow: `--after {next}` for the next page, `--limit all` for every one)");
    }
    Ok(())
}

/// The jobs as a table `width` columns wide: the command line and the last column (placement
/// while it runs, else why it is in its state, as squeue's NODELIST(REASON)) give up room first.
fn jobs_table(jobs: &[JobView], now: u64, width: usize) -> String {
    let mut t = Table::new(&["ID", "USER", "TENANT", "STATE", "SUBMITTED", "TIME", "COMMAND", "PLACEMENT/REASON"]);
    for j in jobs {
        let time = match (j.started_ms, j.ended_ms) {
            (Some(s), Some(e)) => short_duration_ms(e.saturating_sub(s)),
            (Some(s), None) => short_duration_ms(now.saturating_sub(s)),
            (None, _) => "-".to_string(),
        };
        let place = placement(j);
        let last = if j.state.is_active() && !place.is_empty() { place } else { j.reason.clone() };
        t.row(vec![
            j.id.to_string(),
            j.user.clone(),
            j.tenant.clone(),
            j.state.to_string(),
            table_time(j.submitted_ms, now),
            time,
            command_line(j),
            last,
        ]);
    }
    t.fit(0, width, &[6, 7])
}

/// `tessera job ID`.
pub fn job(output: Output, d: &DaemonArgs, id: u64) -> anyhow::Result<()> {
    let v = ok(client(d)?.job(id))?;
    if output == Output::Json {
        return print_json(&v);
    }
    print!("{}", job_text(&v, tessera_host::now_ms()));
    Ok(())
}

/// What `tessera job ID` shows: everything, whole (user text escaped), one fact a line.
fn job_text(v: &JobView, now: u64) -> String {
    let mut out = String::new();
    let mut line = |key: &str, value: &str| {
        let _ = writeln!(out, "{key:<11}{}", escape(value));
    };
    line("job", &v.id.to_string());
    line("state", &v.state.to_string());
    line("reason", &v.reason);
    line("user", &format!("{} (uid {})", v.user, v.uid));
    line("tenant", &v.tenant);
    line("priority", &v.priority.to_string());
    line("command", &command_line(v));
    if let Some(cwd) = &v.cwd {
        line("directory", cwd);
    }
    line("submitted", &full_time(v.submitted_ms));
    match v.started_ms {
        Some(s) => line(
            "started",
            &format!("{} (after {})", full_time(s), short_duration_ms(s.saturating_sub(v.submitted_ms))),
        ),
        None if !v.ended() => {
            line("started", &format!("not yet (waiting {})", short_duration_ms(now.saturating_sub(v.submitted_ms))))
        }
        None => line("started", "never"),
    }
    match (v.ended_ms, v.started_ms) {
        (Some(e), Some(s)) => {
            line("ended", &format!("{} (ran {})", full_time(e), short_duration_ms(e.saturating_sub(s))))
        }
        (Some(e), None) => line("ended", &full_time(e)),
        (None, Some(s)) => line("ended", &format!("not yet (running {})", short_duration_ms(now.saturating_sub(s)))),
        (None, None) => {}
    }
    if v.runs > 1 {
        line("runs", &format!("{} (requeued {} time{})", v.runs, v.runs - 1, if v.runs == 2 { "" } else { "s" }));
    }
    line("asked", &asked(&v.resources));
    for r in &v.ranks {
        for s in &r.slices {
            let what = if s.mig {
                let gi = s.gpu_instance_id.map(|g| format!(" GI {g}")).unwrap_or_default();
                format!("{}@{}{gi}", s.profile.as_deref().unwrap_or("?"), s.start)
            } else {
                "whole GPU".to_string()
            };
            let uuid = s.mig_uuid.as_deref().unwrap_or(&s.gpu_uuid);
            line(&format!("rank {}", r.rank), &format!("GPU {} {what} {uuid}", s.gpu));
        }
        let numa = r.numa_node.map_or_else(|| "not bound".to_string(), |n| format!("NUMA node {n}"));
        let cpus = match r.cpus.as_deref() {
            Some(list) => {
                let n = cpu_count(list);
                format!("{n} CPU{} ({list})", if n == 1 { "" } else { "s" })
            }
            None => "CPUs not bound".to_string(),
        };
        line("", &format!("{cpus}, {numa}, {} MiB", r.mem_mib));
    }
    if let Some(e) = &v.exit {
        let status = match (e.code, e.signal) {
            (_, Some(sig)) => format!("killed by {} ({sig})", tessera_exec::shim::signal_name(sig)),
            (Some(code), None) => format!("exit code {code}"),
            (None, None) => "no exit status".to_string(),
        };
        let rank = e.failed_rank.map(|r| format!(", rank {r} failed first")).unwrap_or_default();
        line("exit", &format!("{status}{rank}: {}", e.detail));
    }
    if let Some(by) = &v.cancelled_by {
        line("cancelled", &format!("by {by}"));
    }
    line("history", &format!("{}  submitted", full_time(v.submitted_ms)));
    for ev in &v.events {
        line("", &format!("{}  {} → {}: {}", full_time(ev.at_ms), ev.from, ev.to, ev.reason));
    }
    out
}

/// How many CPUs a kernel cpulist (`0-3,8`) names.
fn cpu_count(list: &str) -> usize {
    tessera_host::parse_cpulist(list).map_or(0, |v| v.len())
}

/// What a job asked for, per rank.
fn asked(r: &JobRequest) -> String {
    let gpu = match &r.gpu {
        GpuRequest::Memory { mib } => format!("{mib} MiB of GPU memory"),
        GpuRequest::ComputeSlices { slices } => {
            format!("{slices} compute slice{}", if *slices == 1 { "" } else { "s" })
        }
        GpuRequest::Profile { name } => name.clone(),
        GpuRequest::WholeGpu => format!("{} whole GPU{}", r.gpus_per_rank, if r.gpus_per_rank == 1 { "" } else { "s" }),
        GpuRequest::Instances(list) => format!("{} instances", list.len()),
    };
    let sharing = match r.sharing {
        Sharing::Exclusive => String::new(),
        Sharing::Mps { active_thread_pct, .. } => format!(", MPS {active_thread_pct}%"),
        Sharing::TimeSlice => ", time-sliced".to_string(),
    };
    format!(
        "{} rank{} × {gpu}{sharing}, {} CPU{}, {} MiB",
        r.ranks,
        if r.ranks == 1 { "" } else { "s" },
        r.cpus,
        if r.cpus == 1 { "" } else { "s" },
        r.mem_mib
    )
}

/// What `tessera cancel` did to one job, for `-o json`.
#[derive(Debug, Serialize)]
struct CancelOutcome {
    id: u64,
    /// `cancelled`, `cancelling`, or absent when it failed.
    state: Option<CancelState>,
    error: Option<String>,
}

/// The jobs a cancel acts on, each once, in the order given: the ids named (narrowed to those in
/// `matching` when filters were given), or every match when no id was named; and the named ids
/// left alone because they do not match.
fn cancel_targets(ids: &[u64], matching: Option<&[u64]>) -> (Vec<u64>, Vec<u64>) {
    let mut seen = std::collections::BTreeSet::new();
    let named: Vec<u64> = ids.iter().copied().filter(|id| seen.insert(*id)).collect();
    match matching {
        None => (named, Vec::new()),
        Some(m) if named.is_empty() => (m.to_vec(), Vec::new()),
        Some(m) => named.into_iter().partition(|id| m.contains(id)),
    }
}

/// `tessera cancel`: the jobs named, narrowed by every filter given (as `scancel`).
pub fn cancel(output: Output, d: &DaemonArgs, a: &CancelArgs) -> anyhow::Result<()> {
    let states = parse_states(a.state.as_deref(), &JobQuery::ACTIVE)?;
    let filtered = a.user.is_some() || a.tenant.is_some() || !states.is_empty();
    if a.ids.is_empty() && !filtered {
        bail!(
            "say which jobs to cancel: their ids, or --user, --tenant or --state (e.g. `tessera cancel --state queued`)"
        );
    }
    let c = client(d)?;
    let matching: Option<Vec<u64>> = if filtered {
        let q = JobQuery { states, user: a.user.clone(), tenant: a.tenant.clone(), ..JobQuery::default() };
        Some(ok(c.jobs(&q))?.jobs.iter().map(|j| j.id).collect())
    } else {
        None
    };
    let (targets, skipped) = cancel_targets(&a.ids, matching.as_deref());
    let mut outcomes = Vec::new();
    for id in targets {
        outcomes.push(match c.cancel(id) {
            Ok(r) => CancelOutcome { id, state: Some(r.state), error: None },
            Err(ClientError::Api { message, .. }) => CancelOutcome { id, state: None, error: Some(message) },
            Err(e) => return Err(unreachable_daemon(e)),
        });
    }
    let failed = outcomes.iter().filter(|o| o.error.is_some()).count();
    if output == Output::Json {
        print_json(&outcomes)?;
    } else {
        for o in &outcomes {
            match (&o.state, &o.error) {
                (Some(CancelState::Cancelling), _) => {
                    println!("job {}: cancelling (SIGTERM now, SIGKILL after the grace period)", o.id)
                }
                (Some(s), _) => println!("job {}: {s}", o.id),
                // The daemon's sentence names the job already ("job 7 has already ended").
                (None, Some(e)) if e.contains(&format!("job {}", o.id)) => eprintln!("error: {}", escape(e)),
                (None, Some(e)) => eprintln!("error: job {}: {}", o.id, escape(e)),
                (None, None) => {}
            }
        }
    }
    for id in &skipped {
        eprintln!("job {id}: left alone: it does not match --user, --tenant or --state");
    }
    if outcomes.is_empty() && skipped.is_empty() {
        eprintln!("no active job matches; nothing was cancelled");
    }
    if failed > 0 {
        return Err(Refusal(format!("{failed} of {} job(s) could not be cancelled", outcomes.len())).into());
    }
    Ok(())
}

/// `tessera wait`: exit 0 only if every job succeeded. `-o json` prints the job (one id) or
/// `{"jobs": [...]}` (several).
pub fn wait(output: Output, d: &DaemonArgs, ids: &[u64], timeout: Option<&str>) -> anyhow::Result<()> {
    let limit = timeout.map(|t| duration_flag("--timeout", t)).transpose()?;
    let start = std::time::Instant::now();
    let c = client(d)?;
    let mut views = Vec::new();
    let mut problems = Vec::new();
    for &id in ids {
        let v = loop {
            let elapsed = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
            let left = limit.map(|l| l.saturating_sub(elapsed));
            let step = left.unwrap_or(60_000).min(60_000);
            let v = ok(c.wait(id, step))?;
            if v.state.is_terminal() || left == Some(0) {
                break v;
            }
        };
        if output != Output::Json {
            println!("job {id}: {} ({})", v.state, escape(&v.reason));
        }
        if v.state != JobState::Succeeded {
            problems.push(if v.state.is_terminal() {
                format!("job {id} ended {}", v.state)
            } else {
                format!("job {id} is still {} after {}", v.state, format_duration_ms(limit.unwrap_or(0)))
            });
        }
        views.push(v);
    }
    if output == Output::Json {
        if views.len() == 1 {
            print_json(&views[0])?;
        } else {
            print_json(&JobList { jobs: views, next: None })?;
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(Refusal(problems.join("; ")).into()) }
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
            print!("{}", t.fit(0, terminal_width(), &[1, 3]));
        }
    }
    Ok(())
}

/// `tessera gpus`: the daemon's slice map.
pub fn gpus(output: Output, d: &DaemonArgs) -> anyhow::Result<()> {
    let v = ok(client(d)?.gpus())?;
    if output == Output::Json {
        return print_json(&v);
    }
    print!("{}", gpus_table(&v, terminal_width()));
    Ok(())
}

/// One line per instance (or whole GPU), each job on it with its user on a line of its own;
/// what keeps work off a GPU (a drain, a fault) in the last column, which gives up room first.
fn gpus_table(v: &GpuList, width: usize) -> String {
    let mut t = Table::new(&["GPU", "MODEL", "NUMA", "MIG", "INSTANCE", "GI", "UNITS", "JOB", "USER", "NOTE"]);
    for g in &v.gpus {
        let mut note = Vec::new();
        if let Some(dr) = &g.drained {
            note.push(if dr.reason.is_empty() {
                format!("drained by {}", dr.by)
            } else {
                format!("drained by {}: {}", dr.by, dr.reason)
            });
        }
        if g.health != "healthy" {
            note.push(g.health.clone());
        }
        let gpu_cells = |first: bool| -> Vec<String> {
            if first {
                vec![
                    g.index.to_string(),
                    g.model.clone().unwrap_or_else(|| g.name.clone()),
                    g.numa_node.map_or_else(|| "-".into(), |n| n.to_string()),
                    if g.mig { "on".into() } else { "off".into() },
                ]
            } else {
                vec![String::new(); 4]
            }
        };
        let mut first = true;
        if g.instances.is_empty() {
            let mut row = gpu_cells(true);
            row.extend(["-", "-", "-", "-", "-"].map(String::from));
            note.insert(0, "no instances".into());
            row.push(note.join("; "));
            t.row(row);
            continue;
        }
        for i in &g.instances {
            let units = if i.size <= 1 { i.start.to_string() } else { format!("{}-{}", i.start, i.start + i.size - 1) };
            let occupants: Vec<(String, String)> = if i.occupants.is_empty() {
                i.jobs.iter().map(|j| (j.to_string(), "-".to_string())).collect()
            } else {
                i.occupants.iter().map(|o| (o.job.to_string(), o.user.clone())).collect()
            };
            let mut inote = if first { note.join("; ") } else { String::new() };
            if !i.healthy {
                inote =
                    if inote.is_empty() { "instance unhealthy".into() } else { format!("instance unhealthy; {inote}") };
            }
            let (job, user) = occupants.first().cloned().unwrap_or_else(|| ("idle".into(), "-".into()));
            let mut row = gpu_cells(first);
            row.extend([
                i.profile.clone(),
                i.gpu_instance_id.map_or_else(|| "-".into(), |x| x.to_string()),
                units,
                job,
                user,
                inote,
            ]);
            t.row(row);
            for (job, user) in occupants.iter().skip(1) {
                let mut row = vec![String::new(); 7];
                row.extend([job.clone(), user.clone(), String::new()]);
                t.row(row);
            }
            first = false;
        }
    }
    t.fit(0, width, &[9, 4])
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    /// Every argument and positional of the job commands says what it is for.
    #[test]
    fn every_job_argument_has_help() {
        let cli = crate::cli::Cli::command();
        let mut missing = Vec::new();
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let builtin = matches!(a.get_id().as_str(), "help" | "version");
                if !builtin && !a.is_hide_set() && a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} {}", a.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        for name in ["submit", "jobs", "job", "logs", "cancel", "wait", "gpus", "admin", "serve", "completion"] {
            let sub = cli.find_subcommand(name).unwrap_or_else(|| panic!("no `tessera {name}`"));
            walk(sub, name, &mut missing);
        }
        assert!(missing.is_empty(), "arguments without help: {missing:?}");
    }

    /// Each job once, in the order given; filters narrow the ids named, or choose when none is.
    #[test]
    fn cancel_acts_on_each_job_once() {
        assert_eq!(cancel_targets(&[6, 7, 6], None), (vec![6, 7], vec![]));
        assert_eq!(cancel_targets(&[7, 6, 7], Some(&[6, 7, 8])), (vec![7, 6], vec![]));
        assert_eq!(cancel_targets(&[9, 6, 9], Some(&[6])), (vec![6], vec![9]));
        assert_eq!(cancel_targets(&[], Some(&[3, 4])), (vec![3, 4], vec![]));
    }

    /// One line per instance, a line more per further job sharing it; the drain's reason (an
    /// admin's text) escaped and cut to the width.
    #[test]
    fn the_slice_map_has_a_line_per_instance_and_job() {
        use tessera_daemon::wire::{DrainView, GpuInfo, InstanceInfo, Occupant};
        let inst = |gi: u32, profile: &str, start: u8, size: u8, jobs: &[(u64, &str)]| InstanceInfo {
            gpu_instance_id: Some(gi),
            profile: profile.into(),
            profile_id: 0,
            start,
            size,
            jobs: jobs.iter().map(|j| j.0).collect(),
            occupants: jobs
                .iter()
                .map(|&(job, user)| Occupant { job, user: user.into(), tenant: "t".into(), external: None })
                .collect(),
            mig_uuid: None,
            healthy: true,
            gi_caps_minor: None,
            ci_caps_minor: None,
        };
        let gpu = |index: u32, instances: Vec<InstanceInfo>, drained: Option<&str>| GpuInfo {
            index,
            name: "NVIDIA H100 80GB HBM3".into(),
            uuid: format!("GPU-{index}"),
            model: Some("H100-80GB".into()),
            numa_node: Some(index),
            minor: None,
            local_cpus: None,
            mig: true,
            drained: drained.map(|r| DrainView { by: "root".into(), reason: r.into(), at_ms: 0 }),
            health: "healthy".into(),
            instances,
        };
        let v = GpuList {
            backend: "sim".into(),
            gpus: vec![
                gpu(
                    0,
                    vec![inst(1, "3g.40gb", 0, 4, &[(7, "alice"), (9, "bob")]), inst(9, "1g.10gb", 6, 1, &[])],
                    None,
                ),
                gpu(1, Vec::new(), Some("fan \x1b[31mbroken, replace before Monday")),
            ],
        };
        let out = gpus_table(&v, 100);
        assert_eq!(
            out,
            "GPU  MODEL      NUMA  MIG  INSTANCE  GI  UNITS  JOB   USER   NOTE
0    H100-80GB  0     on   3g.40gb   1   0-3    7     alice
                                                9     bob
                           1g.10gb   9   6      idle  -
1    H100-80GB  1     on   -         -   -      -     -      no instances; drained by root: fan \\x1…
"
        );
        assert!(gpus_table(&v, 50).lines().all(|l| l.chars().count() <= 50));
    }

    #[test]
    fn api_fields_become_flags() {
        let args = |extra: &[&str]| {
            use clap::Parser as _;
            let cli = crate::cli::Cli::parse_from([&["tessera", "submit"], extra, &["--", "true"]].concat());
            match cli.command {
                crate::cli::Command::Submit(a) => a,
                _ => unreachable!("parsed as submit"),
            }
        };
        let mem = args(&["--gpu-mem", "10GB"]);
        let cases = [
            ("resources.ranks: must be at least 1", None, "--ranks: must be at least 1"),
            ("resources.cpus: 300 CPUs but a NUMA node has 112", None, "--cpus: 300 CPUs but a NUMA node has 112"),
            ("resources.mem_mib: more than any NUMA node", None, "--mem: more than any NUMA node"),
            ("resources.gpu: no profile has 900 GiB", Some(&mem), "--gpu-mem: no profile has 900 GiB"),
            ("resources.gpu: unknown profile", None, "resources.gpu: unknown profile"),
            ("env.A=B: a variable name cannot contain '='", None, "--env A=B: a variable name cannot contain '='"),
            ("cwd: /x: No such file", None, "the working directory: /x: No such file"),
            ("job 4 belongs to another user", None, "job 4 belongs to another user"),
        ];
        for (message, submit, want) in cases {
            assert_eq!(in_cli_words(message, submit), want, "{message}");
        }
    }
}
