//! `tessera`: the one user-facing binary. Each subcommand is thin and calls into the crates.
//!
//! Exit codes: 0 success; 1 a request that cannot be met (an infeasible plan, a failed assert,
//! bad input, a refused change); 2 a command line clap cannot parse.

mod cli;
mod mig;
mod node;
mod render;

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
    let result = match args.command {
        cli::Command::Mig(cmd) => mig::run(&args.global, cmd),
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
