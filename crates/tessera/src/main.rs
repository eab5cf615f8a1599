//! `tessera`: the one user-facing binary. Each subcommand is thin and calls into the crates.
//!
//! Exit codes: 0 success; 1 a request that cannot be met (an infeasible plan, a failed assert,
//! bad input, a refused change); 2 a command line clap cannot parse.

mod cli;
mod jobs;
mod mig;
mod node;
mod render;
mod sim;
mod units;

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;

/// An outcome that is not an error but still exits non-zero (an infeasible plan, an assert
/// that does not hold): the reason goes to stderr, the rest of the output was already printed.
#[derive(Debug)]
pub struct Refusal(pub String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refusal {}

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let g = &args.global;
    if g.output == cli::Output::Csv && !matches!(args.command, cli::Command::Sim(_)) {
        eprintln!("error: -o csv is for `tessera sim`; use -o table or -o json here");
        return ExitCode::from(2);
    }
    let result = match args.command {
        cli::Command::Mig(cmd) => mig::run(g, cmd),
        cli::Command::Submit(a) => jobs::submit(g.output, &g.daemon, &a),
        cli::Command::Jobs { all, state } => jobs::jobs(g.output, &g.daemon, all, state.as_deref()),
        cli::Command::Job { id } => jobs::job(g.output, &g.daemon, id),
        cli::Command::Logs { id, rank, stderr, follow } => jobs::logs(&g.daemon, id, rank, stderr, follow),
        cli::Command::Cancel { id } => jobs::cancel(g.output, &g.daemon, id),
        cli::Command::Wait { id, timeout } => jobs::wait(g.output, &g.daemon, id, timeout.as_deref()),
        cli::Command::Gpus => jobs::gpus(g.output, &g.daemon),
        cli::Command::Admin(cmd) => jobs::admin(g.output, &g.daemon, cmd),
        cli::Command::Sim(cmd) => sim::run(g.output, cmd),
        cli::Command::Serve { state_dir, config, init } => jobs::serve(g, state_dir, config, init),
        cli::Command::Shim { job_dir, standby } => {
            // The supervisor runs on this (main) thread, with no runtime or other threads.
            let code = match job_dir {
                Some(dir) if !standby => tessera_exec::run_shim(&dir),
                _ => tessera_exec::run_standby_shim(),
            };
            return ExitCode::from(u8::try_from(code).unwrap_or(1));
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut err = std::io::stderr().lock();
            if let Some(r) = e.downcast_ref::<Refusal>() {
                let _ = writeln!(err, "{r}");
            } else {
                let _ = writeln!(err, "error: {e:#}");
            }
            ExitCode::from(1)
        }
    }
}
