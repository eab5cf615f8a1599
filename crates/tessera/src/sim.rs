//! `tessera sim`: the trace-driven simulator. `pack` runs FGD's packing protocol
//! (`tessera-sim-pack`), `run` replays a trace in virtual time through the daemon's scheduler
//! core (`tessera-sim-time`), `kube` replays pods waiting for MIG devices under mig-manager, NVIDIA's
//! DRA first fit and Tessera's controller (`tessera-sim-time`'s `kube` module), `gen` writes a synthetic workload in the native CSV format. This
//! module reads the files, draws the progress bar, and writes tables, JSON, CSV and plots; the
//! simulation itself is in those crates and does no I/O.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tessera_sim::plot::{LineChart, write_both};
use tessera_sim::synth::{SynthConfig, generate, interarrival_for_load, parse_mix};
use tessera_sim::trace::{Job, jobs_from_openb, read_jobs_csv, read_openb_nodes, read_openb_pods, write_jobs_csv};
use tessera_sim_time::{
    ClusterSpec, KubeConfig, KubePolicy, KubeWorkload, MigBenchSpec, PolicySpec, RunConfig, parse_duration_s,
    pods_from_jobs, render_kube_table, run_kube,
};

use crate::cli::{Output, SimCommand, TraceFormat};

pub fn run(output: Output, cmd: SimCommand) -> anyhow::Result<()> {
    match cmd {
        SimCommand::Pack { nodes, pods, mode, gpu_model, policy, seeds, max_demand, plots } => {
            let mode: tessera_sim_pack::Mode = mode.parse().map_err(|e| anyhow::anyhow!("--mode: {e}"))?;
            if mode == tessera_sim_pack::Mode::Shared && gpu_model.is_some() {
                bail!("--gpu-model applies to --mode mig (in shared mode the GPUs are the node list's own)");
            }
            let policies = policy
                .iter()
                .map(|p| p.parse::<tessera_sim_pack::Policy>().map_err(|e| anyhow::anyhow!("--policy: {e}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let seeds = tessera_sim_pack::parse_seeds(&seeds).map_err(|e| anyhow::anyhow!("--seeds: {e}"))?;
            let node_list = read_openb_nodes(&nodes)?;
            let pod_list = read_openb_pods(&pods)?;
            let cfg = tessera_sim_pack::PackConfig { mode, gpu_model, policies, seeds, max_demand_pct: max_demand };
            let bar = progress_bar("runs");
            let report = tessera_sim_pack::run(&cfg, &node_list, &pod_list, &mut |done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            })?;
            bar.finish_and_clear();
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                Output::Csv => print_text(&tessera_sim_pack::to_csv(&report)),
                Output::Table => print_text(&tessera_sim_pack::render_table(&report)),
            }
            if let Some(dir) = plots {
                write_plots(&dir, tessera_sim_pack::charts(&report))?;
            }
            Ok(())
        }
        SimCommand::Run {
            trace,
            format,
            last_days,
            cluster,
            policy,
            seeds,
            reconfig_cost,
            mps_slowdown,
            warmup,
            host_cpus_per_gpu,
            host_mem_per_gpu,
            plots,
        } => {
            let jobs = read_trace(&trace, format, last_days)?;
            let cluster = cluster_arg(&cluster, &jobs)?;
            let policies = policy
                .iter()
                .map(|p| p.parse::<PolicySpec>().map_err(|e| anyhow::anyhow!("--policy: {e}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let mut cfg = RunConfig::new(cluster, policies);
            cfg.seeds = seeds_arg(&seeds)?;
            cfg.reconfig_cost_s =
                parse_duration_s(&reconfig_cost).map_err(|e| anyhow::anyhow!("--reconfig-cost: {e}"))?;
            cfg.mps_slowdown = mps_slowdown;
            cfg.warmup_fraction = warmup;
            cfg.host_cpus_per_gpu = host_cpus_per_gpu;
            cfg.host_mem_mib_per_gpu =
                crate::units::parse_mib(&host_mem_per_gpu).map_err(|e| anyhow::anyhow!("--host-mem-per-gpu {e}"))?;
            let bar = progress_bar("jobs");
            let report = tessera_sim_time::run(&cfg, &jobs, &mut |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            })?;
            bar.finish_and_clear();
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                Output::Csv => print_text(&tessera_sim_time::to_csv(&report)),
                Output::Table => print_text(&tessera_sim_time::render_table(&report)),
            }
            if let Some(dir) = plots {
                write_plots(&dir, tessera_sim_time::charts(&report))?;
            }
            Ok(())
        }
        SimCommand::Kube {
            workload,
            trace,
            last_days,
            cluster,
            policy,
            seeds,
            reconfig_cost,
            batch_window,
            warmup,
        } => {
            let policies = policy
                .iter()
                .map(|p| p.parse::<KubePolicy>().map_err(|e| anyhow::anyhow!("--policy: {e}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let (cluster, workload) = match workload.trim() {
                "openb" => {
                    let Some(trace) = trace else { bail!("--workload openb needs --trace (an openb pod list)") };
                    let jobs = read_trace(&trace, Some(TraceFormat::Openb), last_days)?;
                    let cluster = cluster_arg(cluster.as_deref().unwrap_or("load=0.9:A100-40GB"), &jobs)?;
                    let model = cluster.first_model().context("--cluster: no GPUs")?;
                    let (pods, _) =
                        pods_from_jobs(&jobs, model).map_err(|e| anyhow::anyhow!("{}: {e}", trace.display()))?;
                    (cluster, KubeWorkload::Trace { name: "openb".into(), pods })
                }
                w @ ("migbench" | "migbench-gen") => {
                    if trace.is_some() || last_days.is_some() {
                        bail!("--workload {w} draws its traces per seed; --trace and --last-days are for openb");
                    }
                    let spec = cluster.as_deref().unwrap_or("2x4xH100-80GB");
                    if spec.trim().starts_with("load=") {
                        bail!("--cluster {spec}: {w}'s load is its own (1.40); give the GPUs, e.g. 2x4xH100-80GB");
                    }
                    let cluster = cluster_arg(spec, &[])?;
                    let workload = if w == "migbench" {
                        KubeWorkload::MigBench(MigBenchSpec::default())
                    } else {
                        KubeWorkload::MigBenchTrace(tessera_sim_time::migbench::MigBenchTraceSpec::default())
                    };
                    (cluster, workload)
                }
                other => bail!("--workload '{other}': valid workloads are openb, migbench and migbench-gen"),
            };
            let mut cfg = KubeConfig::new(cluster, policies);
            cfg.seeds = seeds_arg(&seeds)?;
            cfg.reconfig_cost_s =
                parse_duration_s(&reconfig_cost).map_err(|e| anyhow::anyhow!("--reconfig-cost: {e}"))?;
            cfg.batch_window_s = parse_duration_s(&batch_window).map_err(|e| anyhow::anyhow!("--batch-window: {e}"))?;
            cfg.warmup_fraction = warmup;
            let report = run_kube(&cfg, &workload)?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                Output::Csv => bail!("-o csv: `sim kube` writes table or json"),
                Output::Table => print_text(&render_kube_table(&report)),
            }
            Ok(())
        }
        SimCommand::Gen {
            jobs,
            seed,
            mean_interarrival,
            load,
            gpus,
            mix,
            duration_median,
            duration_sigma,
            tenants,
            model_classes,
            out,
        } => {
            let mut cfg = SynthConfig { jobs, seed, ..SynthConfig::default() };
            if let Some(m) = mix {
                cfg.mix = parse_mix(&m).map_err(|e| anyhow::anyhow!("--mix: {e}"))?;
            }
            if let Some(d) = duration_median {
                cfg.duration_median_s = parse_duration_s(&d).map_err(|e| anyhow::anyhow!("--duration-median: {e}"))?;
            }
            if let Some(s) = duration_sigma {
                cfg.duration_sigma = s;
            }
            if let Some(t) = tenants {
                cfg.tenants = t;
            }
            cfg.model_classes = model_classes;
            match (mean_interarrival, load, gpus) {
                (Some(_), Some(_), _) => bail!("give --mean-interarrival or --load, not both"),
                (Some(m), None, _) => {
                    cfg.mean_interarrival_s =
                        parse_duration_s(&m).map_err(|e| anyhow::anyhow!("--mean-interarrival: {e}"))?;
                }
                (None, Some(l), Some(g)) => cfg.mean_interarrival_s = interarrival_for_load(&cfg, g, l),
                (None, Some(_), None) => bail!("--load needs --gpus (the cluster the load is for)"),
                (None, None, _) => {}
            }
            let list = generate(&cfg)?;
            let text = write_jobs_csv(&list);
            match out {
                Some(path) => {
                    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("wrote {} jobs to {}", list.len(), path.display());
                }
                None => print!("{text}"),
            }
            Ok(())
        }
    }
}

/// Print a report, ending with a newline.
fn print_text(text: &str) {
    if text.ends_with('\n') {
        print!("{text}");
    } else {
        println!("{text}");
    }
}

/// A progress bar on stderr, hidden when stderr is not a terminal.
fn progress_bar(unit: &str) -> ProgressBar {
    let target =
        if std::io::stderr().is_terminal() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    let bar = ProgressBar::with_draw_target(None, target);
    let template = format!("{{elapsed_precise}} [{{bar:40}}] {{pos}}/{{len}} {unit} (eta {{eta}})");
    bar.set_style(ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()));
    bar
}

fn write_plots(dir: &Path, charts: Vec<(String, LineChart)>) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (stem, chart) in charts {
        let written = write_both(&chart, &dir.join(&stem))?;
        for p in written {
            eprintln!("wrote {}", p.display());
        }
    }
    Ok(())
}

fn read_trace(path: &Path, format: Option<TraceFormat>, last_days: Option<f64>) -> anyhow::Result<Vec<Job>> {
    let format = format.unwrap_or_else(|| {
        let head = std::fs::read_to_string(path).ok().and_then(|t| t.lines().next().map(str::to_string));
        if head.is_some_and(|h| h.starts_with("name,")) { TraceFormat::Openb } else { TraceFormat::Csv }
    });
    if let Some(d) = last_days
        && !(d.is_finite() && d > 0.0)
    {
        bail!("--last-days {d}: give a number of days above 0");
    }
    Ok(match format {
        TraceFormat::Openb => {
            let pods = read_openb_pods(path)?;
            let jobs = jobs_from_openb(&pods, last_days.or(Some(30.0)));
            if jobs.is_empty() {
                bail!(
                    "{}: none of its {} pods has creation and scheduling times (the multigpu* files carry \
                     only the first five columns); a time-driven run needs them",
                    path.display(),
                    pods.len()
                );
            }
            jobs
        }
        TraceFormat::Csv => {
            if last_days.is_some() {
                bail!("--last-days applies to openb traces; cut a native CSV file before");
            }
            read_jobs_csv(path)?
        }
    })
}

/// `64xA100-40GB`, `8x8xH100-80GB`, or `load=0.7:A100-40GB` (the GPU count for 70% offered
/// load of this trace, in nodes of 8; said on stderr).
fn cluster_arg(text: &str, jobs: &[Job]) -> anyhow::Result<ClusterSpec> {
    let spec = ClusterSpec::resolve(text, jobs).map_err(|e| anyhow::anyhow!("--cluster: {e}"))?;
    if text.trim().starts_with("load=") {
        eprintln!("cluster sized for {text}: {spec} ({} GPUs)", spec.gpus());
    }
    Ok(spec)
}

/// `5` (seeds 1 to 5), `42-51`, or a list `1,2,7`.
fn seeds_arg(text: &str) -> anyhow::Result<Vec<u64>> {
    if !text.contains(['-', ',']) {
        let n: u64 = text.trim().parse().map_err(|_| anyhow::anyhow!("--seeds '{text}': give N, A-B or a list"))?;
        if n == 0 || n > 10_000 {
            bail!("--seeds {n}: give 1 to 10000 seeds");
        }
        return Ok((1..=n).collect());
    }
    tessera_sim_pack::parse_seeds(text).map_err(|e| anyhow::anyhow!("--seeds: {e}"))
}
