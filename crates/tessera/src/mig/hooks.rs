//! Hooks around `apply` and `restore`, run when and how mig-parted runs them
//! (`cmd/nvidia-mig-parted/apply/apply.go`, `api/hooks/v1/hooks.go`).
//!
//! Order: `apply-start`; then, only if the MIG mode differs, `pre-apply-mode` and the mode
//! change; then (without `--mode-only`), only if the MIG devices differ, `pre-apply-config` and
//! the device change; last `apply-exit`, whenever `apply-start` succeeded, even after a failure
//! (its own failure fails the run only if nothing failed before). A hook runs with exactly the
//! hook's `envs` plus one `MIG_PARTED_*` variable per flag, in its `workdir`, with its output
//! shown only with `--debug`. The callers ([`Applier`]) plan every GPU before the first hook.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use anyhow::Context as _;
use tessera_migparted::{HookEvent, HookSpec, HooksFile, hook_env};

/// The two phases of an apply (or a restore), each checked before it is changed.
pub trait Applier {
    /// Whether every selected GPU already has the wanted MIG mode.
    fn mode_applied(&mut self) -> anyhow::Result<bool>;
    /// Change the MIG mode of the GPUs that differ.
    fn apply_mode(&mut self) -> anyhow::Result<()>;
    /// Whether every selected GPU already has the wanted MIG devices.
    fn config_applied(&mut self) -> anyhow::Result<bool>;
    /// Change the MIG devices of the GPUs that differ.
    fn apply_config(&mut self) -> anyhow::Result<()>;
}

/// A hooks file ready to run: the hooks, the `MIG_PARTED_*` variables of the command's flags,
/// and whether hooks' output is shown (mig-parted's `--debug`). The default has no hooks.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    file: HooksFile,
    flags_env: BTreeMap<String, String>,
    debug: bool,
}

impl Hooks {
    pub fn new(file: HooksFile, flags_env: BTreeMap<String, String>, debug: bool) -> Self {
        Hooks { file, flags_env, debug }
    }

    /// Read the hooks file at `path` (`-k/--hooks-file`); `None`: no hooks.
    pub fn load(path: Option<&Path>, flags_env: BTreeMap<String, String>, debug: bool) -> anyhow::Result<Self> {
        let file = match path {
            None => HooksFile::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the hooks file {}", path.display()))?;
                tessera_migparted::parse_hooks(&text, &path.display().to_string())?
            }
        };
        Ok(Hooks::new(file, flags_env, debug))
    }

    /// Run the hooks of `event` in order; the first that fails ends the run.
    pub fn run(&self, event: HookEvent) -> anyhow::Result<()> {
        let hooks = self.file.hooks_for(event);
        if self.debug && !hooks.is_empty() {
            eprintln!("tessera: running the {event} hook(s) of {}", self.file.origin);
        }
        for hook in hooks {
            run_hook(hook, &hook_env(hook, &self.flags_env), self.debug).with_context(|| {
                format!(
                    "error running {event} hook ({}:{}:{}: '{}')",
                    self.file.origin, hook.pos.line, hook.pos.column, hook.command
                )
            })?;
        }
        Ok(())
    }
}

/// Apply both phases with the hooks around them, as mig-parted does (see the module's header).
pub fn apply_with_hooks(hooks: &Hooks, mode_only: bool, applier: &mut dyn Applier) -> anyhow::Result<()> {
    hooks.run(HookEvent::ApplyStart)?;
    let result = phases(hooks, mode_only, applier);
    let exit = hooks.run(HookEvent::ApplyExit);
    match (result, exit) {
        (Ok(()), exit) => exit,
        (Err(e), Ok(())) => Err(e),
        (Err(e), Err(exit)) => {
            eprintln!("tessera: {exit:#}");
            Err(e)
        }
    }
}

fn phases(hooks: &Hooks, mode_only: bool, applier: &mut dyn Applier) -> anyhow::Result<()> {
    if !applier.mode_applied()? {
        hooks.run(HookEvent::PreApplyMode)?;
        applier.apply_mode()?;
    }
    if mode_only {
        return Ok(());
    }
    if !applier.config_applied()? {
        hooks.run(HookEvent::PreApplyConfig)?;
        applier.apply_config()?;
    }
    Ok(())
}

/// Run one hook with exactly `env`, stdin empty, output shown only with `show_output`.
fn run_hook(hook: &HookSpec, env: &BTreeMap<String, String>, show_output: bool) -> anyhow::Result<()> {
    let workdir = (!hook.workdir.is_empty()).then(|| PathBuf::from(&hook.workdir));
    if let Some(dir) = &workdir
        && !dir.is_dir()
    {
        anyhow::bail!("its workdir '{}' is not a directory", dir.display());
    }
    let program = program_path(&hook.command, workdir.as_deref())?;
    let output = || if show_output { Stdio::inherit() } else { Stdio::null() };
    let mut cmd = Command::new(&program);
    cmd.args(&hook.args).env_clear().envs(env).stdin(Stdio::null()).stdout(output()).stderr(output());
    if let Some(dir) = &workdir {
        cmd.current_dir(dir);
    }
    let status = cmd.status().with_context(|| format!("cannot start {}", program.display()))?;
    if status.success() { Ok(()) } else { anyhow::bail!("{}", status_text(status)) }
}

/// The program to start: a name without '/' is looked up in this process's `PATH` (the hook's
/// environment has none unless its `envs` give one), as Go's `exec.Command` does; a relative
/// path with '/' is taken from the hook's workdir, where the hook runs.
fn program_path(command: &str, workdir: Option<&Path>) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    if command.contains('/') {
        let path = PathBuf::from(command);
        return Ok(match workdir {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path,
        });
    }
    let search = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&search) {
        let candidate = if dir.as_os_str().is_empty() { Path::new(".").join(command) } else { dir.join(command) };
        let executable =
            std::fs::metadata(&candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if executable {
            if candidate.is_relative() {
                anyhow::bail!(
                    "'{command}' is found only relative to the current directory ({}); give its absolute path",
                    candidate.display()
                );
            }
            return Ok(candidate);
        }
    }
    anyhow::bail!("executable '{command}' not found in $PATH")
}

/// `exit status 3` or `killed by signal 9`, as mig-parted's (Go's) message reads.
fn status_text(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what the orchestration asks of it.
    struct Fake {
        mode_ok: bool,
        config_ok: bool,
        fail_config: bool,
        calls: Vec<&'static str>,
    }

    impl Applier for Fake {
        fn mode_applied(&mut self) -> anyhow::Result<bool> {
            self.calls.push("mode?");
            Ok(self.mode_ok)
        }
        fn apply_mode(&mut self) -> anyhow::Result<()> {
            self.calls.push("mode!");
            Ok(())
        }
        fn config_applied(&mut self) -> anyhow::Result<bool> {
            self.calls.push("config?");
            Ok(self.config_ok)
        }
        fn apply_config(&mut self) -> anyhow::Result<()> {
            self.calls.push("config!");
            if self.fail_config { anyhow::bail!("no room") } else { Ok(()) }
        }
    }

    fn fake(mode_ok: bool, config_ok: bool, fail_config: bool) -> Fake {
        Fake { mode_ok, config_ok, fail_config, calls: Vec::new() }
    }

    #[test]
    fn phases_run_only_when_needed() {
        // (mode applied, config applied, mode only) -> calls.
        let cases: [(bool, bool, bool, &[&str]); 5] = [
            (true, true, false, &["mode?", "config?"]),
            (false, true, false, &["mode?", "mode!", "config?"]),
            (true, false, false, &["mode?", "config?", "config!"]),
            (false, false, true, &["mode?", "mode!"]),
            (true, false, true, &["mode?"]),
        ];
        for (mode_ok, config_ok, mode_only, want) in cases {
            let mut f = fake(mode_ok, config_ok, false);
            apply_with_hooks(&Hooks::default(), mode_only, &mut f).unwrap();
            assert_eq!(f.calls, want, "{mode_ok} {config_ok} {mode_only}");
        }
        let mut f = fake(true, false, true);
        let e = apply_with_hooks(&Hooks::default(), false, &mut f).unwrap_err();
        assert_eq!(e.to_string(), "no room");
    }

    #[test]
    fn program_lookup() {
        assert_eq!(program_path("/bin/sh", None).unwrap(), PathBuf::from("/bin/sh"));
        assert_eq!(program_path("./x", Some(Path::new("/tmp"))).unwrap(), PathBuf::from("/tmp/./x"));
        assert!(program_path("sh", None).unwrap().is_absolute());
        let e = program_path("no-such-program-tessera", None).unwrap_err().to_string();
        assert!(e.contains("not found in $PATH"), "{e}");
    }
}
