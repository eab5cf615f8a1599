//! Files generated from the command line itself, so they cannot drift from `--help`: shell
//! completions (`tessera completion bash|zsh|fish`, through `clap_complete`) and the man pages
//! (the hidden `tessera generate-man DIR`, through `clap_mangen`: one page per subcommand, which
//! `scripts/package.sh` compresses and installs).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::CommandFactory as _;
use clap_complete::Shell;

use crate::cli::Cli;

/// The manual every page belongs to, in its header.
const MANUAL: &str = "Tessera Manual";

/// `tessera completion SHELL`: the completion script on standard output.
pub fn completion(shell: Shell) -> anyhow::Result<()> {
    // Into memory first: the generators panic when a write fails (a closed pipe), and a
    // write error here must be an error, not a panic.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut completable(), "tessera", &mut script);
    let mut out = std::io::stdout().lock();
    out.write_all(&script).and_then(|()| out.flush()).context("writing the completion script")?;
    Ok(())
}

/// The command line as completions offer it: `clap_complete` lists hidden subcommands too, so
/// this copy leaves out the supervisor (`shim`) and the man-page generator.
fn completable() -> clap::Command {
    let full = Cli::command();
    let visible: Vec<clap::Command> = full.get_subcommands().filter(|s| !s.is_hide_set()).cloned().collect();
    clap::Command::new("tessera")
        .version(env!("CARGO_PKG_VERSION"))
        .args(full.get_arguments().cloned())
        .subcommands(visible)
}

/// `tessera generate-man DIR`: `tessera.1` and one page per visible subcommand
/// (`tessera-mig-apply.1`, …) in DIR, created if missing. Returns the files written, in order.
pub fn man_pages(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut cmd = Cli::command().disable_help_subcommand(true);
    // Building gives every subcommand its display name (`tessera-mig-apply`), which names its page.
    cmd.build();
    let source = format!("tessera {}", env!("CARGO_PKG_VERSION"));
    let mut written = Vec::new();
    let mut todo = vec![cmd];
    while let Some(cmd) = todo.pop() {
        todo.extend(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
        let page = clap_mangen::Man::new(cmd).source(source.clone()).manual(MANUAL);
        let path = page.generate_to(dir).with_context(|| format!("writing a man page into {}", dir.display()))?;
        written.push(path);
    }
    written.sort();
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every visible command has its page, hidden ones (the supervisor, this generator) none, and
    /// each page is troff naming its command.
    #[test]
    fn one_man_page_per_visible_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        let pages = man_pages(dir.path()).unwrap();
        let names: Vec<String> = pages.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        for want in ["tessera.1", "tessera-submit.1", "tessera-serve.1", "tessera-mig-apply.1", "tessera-completion.1"]
        {
            assert!(names.contains(&want.to_string()), "{want} missing from {names:?}");
        }
        for hidden in ["tessera-shim.1", "tessera-generate-man.1", "tessera-help.1"] {
            assert!(!names.contains(&hidden.to_string()), "{hidden} should not have a page");
        }
        let submit = std::fs::read_to_string(dir.path().join("tessera-submit.1")).unwrap();
        assert!(submit.starts_with(".ie \\n(.g .ds Aq"), "{}", &submit[..80]);
        assert!(submit.contains(".TH tessera-submit 1"), "{submit}");
        assert!(submit.contains("Tessera Manual"));
        assert!(submit.contains("\\-\\-gpu\\-mem"), "submit's page lists its flags");
    }

    /// Each shell's script completes the subcommands.
    #[test]
    fn completions_name_the_subcommands() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut completable(), "tessera", &mut script);
            let script = String::from_utf8(script).unwrap();
            for sub in ["submit", "serve", "mig", "completion"] {
                assert!(script.contains(sub), "{shell}: {sub} missing");
            }
            assert!(script.contains("gpu-mem"), "{shell}: submit's flags missing");
            assert!(script.contains("socket"), "{shell}: global flags missing");
            for hidden in ["generate-man", "shim"] {
                assert!(!script.contains(hidden), "{shell}: the hidden {hidden} is offered");
            }
        }
    }
}
