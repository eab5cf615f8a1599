//! `tessera`: the one user-facing binary. Each subcommand is thin and calls into the crates.
//!
//! Exit codes: 0 success; 1 a request that cannot be met (an infeasible plan, a failed assert,
//! bad input, a refused change); 2 a command line clap cannot parse. Invoked as
//! `nvidia-mig-parted` (a symlink), it speaks mig-parted's command line instead, where every
//! failure exits 1 ([`mig_parted_main`]).
//!
//! Output that has nowhere to go ends a client command quietly, as `ls | head` ends `ls`: a
//! closed pipe through `SIGPIPE`'s default action (`sys.rs`), any other write error on stdout
//! or stderr (a terminal gone away, a full disk) through [`quiet_output_errors`], never a panic.
//! `serve` and the supervisor (`shim`) keep `SIGPIPE` ignored and write errors their own.

mod cli;
mod generate;
mod jobs;
mod kube;
mod kube_dra;
mod logs;
mod mig;
mod node;
mod render;
mod serve;
mod sim;
mod slurm;
mod sys;
mod top;
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

/// `println!`'s panic when stdout (or `eprintln!`'s when stderr) cannot be written becomes a
/// quiet exit: nothing on a broken pipe, one line on stderr otherwise (while stderr works), exit
/// 1. Every other panic is reported as before.
fn quiet_output_errors() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if let Some(why) = ["failed printing to stdout: ", "failed printing to stderr: "]
            .iter()
            .find_map(|prefix| message.strip_prefix(prefix))
        {
            if !why.starts_with("Broken pipe") && message.contains("stdout") {
                let _ = writeln!(std::io::stderr(), "tessera: cannot write the output: {why}");
            }
            std::process::exit(1);
        }
        report(info);
    }));
}

fn main() -> ExitCode {
    // From the first write (clap's `--help` included), a closed pipe ends the process quietly.
    sys::default_sigpipe();
    if invoked_as_mig_parted() {
        return mig_parted_main();
    }
    let args = match slurm::invoked_as() {
        Some(sub) => cli::Cli::parse_from(["tessera", "slurm", sub]),
        None => cli::Cli::parse(),
    };
    match args.command {
        // They must outlive a peer that closes a socket or pipe: `SIGPIPE` ignored, as Rust
        // starts every program.
        cli::Command::Serve(_) | cli::Command::Kube(_) | cli::Command::Shim { .. } => sys::ignore_sigpipe(),
        _ => quiet_output_errors(),
    }
    let g = &args.global;
    if g.output == cli::Output::Csv && !matches!(args.command, cli::Command::Sim(_)) {
        eprintln!("error: -o csv is for `tessera sim`; use -o table or -o json here");
        return ExitCode::from(2);
    }
    let result = match args.command {
        cli::Command::Mig(cmd) => mig::run(g, cmd),
        cli::Command::Submit(a) => jobs::submit(g.output, &g.daemon, &a),
        cli::Command::Jobs(a) => jobs::jobs(g.output, &g.daemon, &a),
        cli::Command::Job { id } => jobs::job(g.output, &g.daemon, id),
        cli::Command::Logs(a) => logs::logs(g.output, &g.daemon, &a),
        cli::Command::Cancel(a) => jobs::cancel(g.output, &g.daemon, &a),
        cli::Command::Wait { ids, timeout } => jobs::wait(g.output, &g.daemon, &ids, timeout.as_deref()),
        cli::Command::Gpus => jobs::gpus(g.output, &g.daemon),
        cli::Command::Top(a) => top::top(g.output, &g.daemon, &a),
        cli::Command::Admin(cmd) => jobs::admin(g.output, &g.daemon, cmd),
        cli::Command::Sim(cmd) => sim::run(g.output, cmd),
        cli::Command::Serve(a) => serve::serve(g, a),
        cli::Command::Kube(cli::KubeCommand::NodeAgent(a)) => kube::node_agent(g, a),
        cli::Command::Kube(cli::KubeCommand::Controller(a)) => kube::controller(&a),
        cli::Command::Slurm(cmd) => slurm::run(g, cmd),
        cli::Command::Completion { shell } => generate::completion(shell),
        cli::Command::GenerateMan { dir } => generate::man_pages(&dir).map(|_| ()),
        cli::Command::Shim { job_dir, standby } => {
            // The supervisor runs on this (main) thread, with no runtime or other threads.
            let code = match job_dir {
                Some(dir) if !standby => tessera_exec::run_shim(&dir),
                _ => tessera_exec::run_standby_shim(),
            };
            return ExitCode::from(u8::try_from(code).unwrap_or(1));
        }
    };
    exit_code(result)
}

/// Whether the binary was invoked as `nvidia-mig-parted` (argv[0]'s file name: a symlink).
fn invoked_as_mig_parted() -> bool {
    std::env::args_os()
        .next()
        .as_deref()
        .and_then(|arg0| std::path::Path::new(arg0).file_name())
        .is_some_and(|name| name == "nvidia-mig-parted")
}

/// `nvidia-mig-parted …`: mig-parted's command line. Every failure exits 1, a command line clap
/// cannot parse included, as mig-parted's (urfave/cli, then `log.Fatal`) do; `--help`,
/// `--version` and no verb at all print and exit 0.
fn mig_parted_main() -> ExitCode {
    use clap::CommandFactory as _;
    quiet_output_errors();
    let args = match cli::MigPartedCli::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(1) } else { ExitCode::SUCCESS };
        }
    };
    if args.command.is_none() {
        let _ = cli::MigPartedCli::command().print_help();
        return ExitCode::SUCCESS;
    }
    exit_code(mig::run_mig_parted(args))
}

/// A command's exit code, its error (if any) said on stderr.
fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut err = std::io::stderr().lock();
            if let Some(r) = e.downcast_ref::<Refusal>() {
                let _ = writeln!(err, "{r}");
            } else {
                let _ = writeln!(err, "error: {}", said_once(&e));
            }
            ExitCode::from(1)
        }
    }
}

/// An error and its causes on one line, each said once: many errors put their cause in their
/// own sentence as well as in the chain, and a user should not read "Is a directory" twice.
fn said_once(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}
