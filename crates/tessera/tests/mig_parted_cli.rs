//! `nvidia-mig-parted`: the real binary under mig-parted's name (a symlink in a temporary
//! directory), on a simulated node, run with the exact command lines NVIDIA's mig-manager
//! (`pkg/mig/reconfigure/reconfigure.go`) and mig-parted's systemd service
//! (`deployments/systemd/service.sh`, `nvidia-mig-parted.sh`) use: exit codes, stdout lines, the
//! node's state after each, and hooks (events, order, skipping, their exact environment).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Two Hopper GPUs: MIG mode changes take effect without a reset.
const SPEC: &str = "2xH100-80GB";

const CONFIG: &str = r#"version: v1
mig-configs:
  all-disabled:
    - devices: all
      mig-enabled: false
  all-enabled:
    - devices: all
      mig-enabled: true
      mig-devices: {}
  all-1g.10gb:
    - devices: all
      mig-enabled: true
      mig-devices:
        "1g.10gb": 7
  all-balanced:
    - devices: all
      mig-enabled: true
      mig-devices:
        "1g.10gb": 2
        "2g.20gb": 1
        "3g.40gb": 1
"#;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

/// A temporary directory with the symlink, the config file, and the simulated node's state.
struct Parted {
    dir: tempfile::TempDir,
}

impl Parted {
    fn new() -> Parted {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_tessera"), dir.path().join("nvidia-mig-parted")).unwrap();
        std::fs::write(dir.path().join("config.yaml"), CONFIG).unwrap();
        Parted { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config(&self) -> String {
        self.path("config.yaml").display().to_string()
    }

    fn write(&self, name: &str, text: &str) -> String {
        std::fs::write(self.path(name), text).unwrap();
        self.path(name).display().to_string()
    }

    /// `program ARGS` with only `env` and the node's `TESSERA_*` variables set.
    fn exec(&self, program: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("TESSERA_BACKEND", "sim")
            .env("TESSERA_SIM", SPEC)
            .env("TESSERA_SIM_STATE", self.path("sim-node.json"))
            .current_dir(self.dir.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `nvidia-mig-parted ARGS`.
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        self.exec(&self.path("nvidia-mig-parted"), args, env)
    }

    /// `tessera ARGS`.
    fn tessera(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        self.exec(Path::new(env!("CARGO_BIN_EXE_tessera")), args, env)
    }

    /// The node's state as `export -o json` gives it: `(mig-enabled, mig-devices)` of each
    /// entry of the exported config.
    fn state(&self) -> Vec<(bool, BTreeMap<String, u64>)> {
        let r = self.run(&["export", "-o", "json"], &[]);
        assert_eq!(r.code, 0, "{r:?}");
        let v: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {r:?}"));
        v["mig-configs"]["current"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let devices = e["mig-devices"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, n)| (k.clone(), n.as_u64().unwrap()))
                    .collect();
                (e["mig-enabled"].as_bool().unwrap(), devices)
            })
            .collect()
    }

    /// A hooks file whose every event appends its name to `events.log`.
    fn logging_hooks(&self) -> String {
        let log = self.path("events.log").display().to_string();
        let mut text = "version: v1\nhooks:\n".to_string();
        for event in ["apply-start", "pre-apply-mode", "pre-apply-config", "apply-exit"] {
            text.push_str(&format!(
                "  {event}:\n  - command: /bin/sh\n    args: [\"-c\", \"echo {event} >> '{log}'\"]\n"
            ));
        }
        self.write("hooks.yaml", &text)
    }

    /// The events logged since the last call (and forget them).
    fn events(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.path("events.log")).unwrap_or_default();
        let _ = std::fs::remove_file(self.path("events.log"));
        text.lines().map(str::to_string).collect()
    }
}

fn devices(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect()
}

fn expect(r: &Run, code: i32, stdout: &str) {
    assert_eq!(r.code, code, "{r:?}");
    assert_eq!(r.stdout, stdout, "{r:?}");
}

/// Exactly what mig-manager's reconfigure runs, in its order, from a node with MIG disabled.
#[test]
fn mig_manager_command_lines() {
    let p = Parted::new();
    let f = p.config();
    let f = f.as_str();
    let r = p.run(&["-d", "apply", "-f", f, "-c", "all-disabled"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(p.state(), [(false, devices(&[]))]);

    let c = "all-1g.10gb";
    expect(&p.run(&["assert", "--valid-config", "-f", f, "-c", c], &[]), 0, "Selected MIG configuration is valid\n");
    let r = p.run(&["assert", "--valid-config", "-f", f, "-c", "all-2g"], &[]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("unknown config 'all-2g'"), "{r:?}");

    let r = p.run(&["assert", "-f", f, "-c", c], &[]);
    expect(&r, 1, "");
    assert!(r.stderr.ends_with("Assertion failure: selected configuration not currently applied\n"), "{r:?}");
    let r = p.run(&["assert", "--mode-only", "-f", f, "-c", c], &[]);
    expect(&r, 1, "");
    assert!(r.stderr.contains("MIG mode is disabled but the config wants it enabled"), "{r:?}");

    let r = p.run(&["-d", "apply", "--mode-only", "-f", f, "-c", c], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.ends_with("MIG configuration applied successfully\n"), "{r:?}");
    assert!(r.stderr.contains("enable MIG mode"), "-d shows the plan: {r:?}");
    assert_eq!(p.state(), [(true, devices(&[]))], "--mode-only creates no MIG devices");
    expect(
        &p.run(&["-d", "assert", "--mode-only", "-f", f, "-c", c], &[]),
        0,
        "Selected MIG mode settings from configuration currently applied\n",
    );

    let r = p.run(&["-d", "apply", "-f", f, "-c", c], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.ends_with("MIG configuration applied successfully\n"), "{r:?}");
    assert_eq!(p.state(), [(true, devices(&[("1g.10gb", 7)]))]);
    expect(&p.run(&["assert", "-f", f, "-c", c], &[]), 0, "Selected MIG configuration currently applied\n");

    // Without -d, apply says only its line.
    expect(&p.run(&["apply", "-f", f, "-c", "all-balanced"], &[]), 0, "MIG configuration applied successfully\n");
    assert_eq!(p.state(), [(true, devices(&[("1g.10gb", 2), ("2g.20gb", 1), ("3g.40gb", 1)]))]);
}

/// What the systemd service runs, with only the `MIG_PARTED_*` variables that
/// `nvidia-mig-parted.sh` and `service.sh` export; the hooks file's events each time.
#[test]
fn systemd_service_command_lines() {
    let p = Parted::new();
    let hooks = p.logging_hooks();
    let checkpoint = p.path("checkpoint.json").display().to_string();
    let config = p.config();
    let disable = [("MIG_PARTED_CONFIG_FILE", config.as_str()), ("MIG_PARTED_SELECTED_CONFIG", "all-disabled")];
    expect(&p.run(&["apply"], &disable), 0, "MIG configuration applied successfully\n");
    assert_eq!(p.state(), [(false, devices(&[]))]);

    let env = [
        ("MIG_PARTED_CONFIG_FILE", config.as_str()),
        ("MIG_PARTED_HOOKS_FILE", hooks.as_str()),
        ("MIG_PARTED_CHECKPOINT_FILE", checkpoint.as_str()),
        ("MIG_PARTED_SELECTED_CONFIG", "all-1g.10gb"),
    ];
    let r = p.run(&["assert", "--mode-only"], &env);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(p.events().is_empty(), "assert runs no hooks");

    expect(&p.run(&["apply", "--mode-only", "--skip-reset"], &env), 0, "MIG configuration applied successfully\n");
    assert_eq!(p.events(), ["apply-start", "pre-apply-mode", "apply-exit"]);
    assert_eq!(p.state(), [(true, devices(&[]))]);

    expect(&p.run(&["apply", "--mode-only"], &env), 0, "MIG configuration applied successfully\n");
    assert_eq!(p.events(), ["apply-start", "apply-exit"], "nothing to change: no pre- hooks");

    expect(&p.run(&["apply"], &env), 0, "MIG configuration applied successfully\n");
    assert_eq!(p.events(), ["apply-start", "pre-apply-config", "apply-exit"]);
    assert_eq!(p.state(), [(true, devices(&[("1g.10gb", 7)]))]);

    expect(&p.run(&["apply"], &env), 0, "MIG configuration applied successfully\n");
    assert_eq!(p.events(), ["apply-start", "apply-exit"]);
    expect(&p.run(&["assert"], &env), 0, "Selected MIG configuration currently applied\n");

    // Back to disabled: destroying the devices and disabling MIG is the mode phase.
    let env_disabled = [env[0], env[1], env[2], ("MIG_PARTED_SELECTED_CONFIG", "all-disabled")];
    expect(&p.run(&["apply"], &env_disabled), 0, "MIG configuration applied successfully\n");
    assert_eq!(p.events(), ["apply-start", "pre-apply-mode", "apply-exit"]);
    assert_eq!(p.state(), [(false, devices(&[]))]);

    let r = p.run(&["export"], &env);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.starts_with("version: v1\nmig-configs:\n  current:\n"), "{r:?}");
    assert!(r.stdout.contains("mig-enabled: false"), "{r:?}");
}

/// A hook runs with exactly the hook's `envs` and one `MIG_PARTED_*` variable per flag of
/// apply, the flags winning; in its workdir, with its arguments; its output only with `-d`.
#[test]
fn hooks_run_with_exactly_mig_parteds_environment() {
    let p = Parted::new();
    let work = p.path("work");
    std::fs::create_dir(&work).unwrap();
    let hooks = p.write(
        "hooks.yaml",
        &format!(
            r#"version: v1
hooks:
  apply-start:
  - command: /usr/bin/env
    envs: {{OWN: "mine", MIG_PARTED_SELECTED_CONFIG: "not this", NUMBER: 7}}
  - command: /bin/sh
    args: ["-c", "pwd > '{dir}/cwd'; printf '%s\n' \"$0\" \"$@\" > '{dir}/argv'", "first", "two words", ""]
    workdir: "{work}"
"#,
            dir = p.dir.path().display(),
            work = work.display()
        ),
    );
    let f = p.config();
    let r = p.run(&["-d", "apply", "-f", &f, "-c", "all-enabled", "-k", &hooks, "-s"], &[("UNRELATED", "x")]);
    assert_eq!(r.code, 0, "{r:?}");
    // /usr/bin/env's output (shown with -d) is the hook's whole environment.
    let env: BTreeMap<&str, &str> = r.stdout.lines().filter_map(|l| l.split_once('=')).collect::<BTreeMap<_, _>>();
    let want: BTreeMap<&str, &str> = [
        ("MIG_PARTED_CONFIG_FILE", f.as_str()),
        ("MIG_PARTED_HOOKS_FILE", hooks.as_str()),
        ("MIG_PARTED_MODE_CHANGE_ONLY", "false"),
        ("MIG_PARTED_SELECTED_CONFIG", "all-enabled"),
        ("MIG_PARTED_SKIP_RESET", "true"),
        ("NUMBER", "7"),
        ("OWN", "mine"),
    ]
    .into();
    assert_eq!(env, want, "{r:?}");
    assert!(r.stdout.ends_with("MIG configuration applied successfully\n"), "{r:?}");
    let read = |name: &str| std::fs::read_to_string(p.path(name)).unwrap();
    assert_eq!(read("cwd"), format!("{}\n", work.display()));
    assert_eq!(read("argv"), "first\ntwo words\n\n");

    // Without -d, the hooks' output is not shown; an implied -c is the one their variable gives.
    let one = p.write(
        "one.yaml",
        "version: v1\nmig-configs:\n  only:\n    - devices: all\n      mig-enabled: true\n      mig-devices: {}\n",
    );
    let r = p.run(&["apply", "-f", &one, "-k", &hooks], &[]);
    expect(&r, 0, "MIG configuration applied successfully\n");
    let r = p.run(&["-d", "apply", "-f", &one, "-k", &hooks], &[]);
    assert!(r.stdout.contains("MIG_PARTED_SELECTED_CONFIG=only\n"), "{r:?}");
    assert!(r.stdout.contains("MIG_PARTED_SKIP_RESET=false\n"), "{r:?}");
}

/// A failing hook fails the apply with its event named; apply-exit runs after a failure but not
/// after a failed apply-start (as mig-parted); a failing apply-exit fails only a run that had
/// succeeded; a config that cannot be planned is refused before any hook runs.
#[test]
fn failing_hooks() {
    let p = Parted::new();
    let f = p.config();
    let log = p.path("events.log").display().to_string();
    let hooks_failing = |event: &str, code: u8| {
        let mut text = "version: v1\nhooks:\n".to_string();
        for e in ["apply-start", "pre-apply-mode", "pre-apply-config", "apply-exit"] {
            let exit = if e == event { format!("; exit {code}") } else { String::new() };
            text.push_str(&format!(
                "  {e}:\n  - command: /bin/sh\n    args: [\"-c\", \"echo {e} >> '{log}'{exit}\"]\n"
            ));
        }
        p.write("hooks.yaml", &text)
    };
    assert_eq!(p.run(&["apply", "-f", &f, "-c", "all-enabled"], &[]).code, 0);

    let hooks = hooks_failing("apply-start", 3);
    let r = p.run(&["apply", "-f", &f, "-c", "all-1g.10gb", "-k", &hooks], &[]);
    expect(&r, 1, "");
    assert!(r.stderr.contains("error running apply-start hook"), "{r:?}");
    assert!(r.stderr.contains("exit status 3"), "{r:?}");
    assert_eq!(p.events(), ["apply-start"]);
    assert_eq!(p.state(), [(true, devices(&[]))], "nothing changed");

    let hooks = hooks_failing("pre-apply-config", 4);
    let r = p.run(&["apply", "-f", &f, "-c", "all-1g.10gb", "-k", &hooks], &[]);
    expect(&r, 1, "");
    assert!(r.stderr.contains("error running pre-apply-config hook"), "{r:?}");
    assert_eq!(p.events(), ["apply-start", "pre-apply-config", "apply-exit"]);
    assert_eq!(p.state(), [(true, devices(&[]))], "nothing changed");

    let hooks = hooks_failing("apply-exit", 5);
    let r = p.run(&["apply", "-f", &f, "-c", "all-1g.10gb", "-k", &hooks], &[]);
    expect(&r, 1, "");
    assert!(r.stderr.contains("error running apply-exit hook"), "{r:?}");
    assert!(r.stderr.contains("exit status 5"), "{r:?}");
    assert_eq!(p.events(), ["apply-start", "pre-apply-config", "apply-exit"]);
    assert_eq!(p.state(), [(true, devices(&[("1g.10gb", 7)]))], "the change itself was made");

    // A busy instance in the way: planning fails, so no hook runs and nothing changes.
    let r = p.tessera(&["mig", "busy", "0:7"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let hooks = p.logging_hooks();
    let r = p.run(&["apply", "-f", &f, "-c", "all-disabled", "-k", &hooks], &[]);
    expect(&r, 1, "");
    assert!(r.stderr.contains("nothing was changed"), "{r:?}");
    assert!(p.events().is_empty(), "hooks ran: {r:?}");

    // A missing hook program and a bad hooks file are failures too.
    let missing = p.write("missing.yaml", "version: v1\nhooks:\n  apply-start:\n  - command: no-such-hook-program\n");
    let r = p.run(&["apply", "-f", &f, "-c", "all-1g.10gb", "-k", &missing], &[]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("executable 'no-such-hook-program' not found in $PATH"), "{r:?}");
    let bad = p.write("bad.yaml", "version: v1\nhooks:\n  pre-apply-configs: []\n");
    let r = p.run(&["apply", "-f", &f, "-c", "all-1g.10gb", "-k", &bad], &[]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("bad.yaml:3:3: unknown hook event 'pre-apply-configs'"), "{r:?}");
}

/// `export -o json` is mig-parted's JSON (its field names), `-l` names the config; the same
/// through the variables, and on `tessera mig export`.
#[test]
fn export_formats_and_labels() {
    let p = Parted::new();
    let f = p.config();
    assert_eq!(p.run(&["apply", "-f", &f, "-c", "all-balanced"], &[]).code, 0);
    let want = serde_json::json!({
        "version": "v1",
        "mig-configs": {"mine": [{"devices": "all", "mig-enabled": true,
            "mig-devices": {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1}}]}
    });
    let parse = |r: Run| -> Value {
        assert_eq!(r.code, 0, "{r:?}");
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {r:?}"))
    };
    assert_eq!(parse(p.run(&["export", "-o", "json", "-l", "mine"], &[])), want);
    assert_eq!(parse(p.run(&["export", "--output-format=json", "--config-label", "mine"], &[])), want);
    let vars = [("MIG_PARTED_OUTPUT_FORMAT", "json"), ("MIG_PARTED_CONFIG_LABEL", "mine")];
    assert_eq!(parse(p.run(&["export"], &vars)), want);
    assert_eq!(parse(p.tessera(&["mig", "export"], &vars)), want);
    assert_eq!(parse(p.tessera(&["mig", "export", "-o", "json", "-l", "mine"], &[])), want);

    let yaml = p.run(&["export"], &[]);
    assert_eq!(yaml.code, 0, "{yaml:?}");
    assert!(yaml.stdout.starts_with("version: v1\nmig-configs:\n  current:\n"), "{yaml:?}");
    assert_eq!(p.tessera(&["mig", "export"], &[]).stdout, yaml.stdout);
    let r = p.run(&["export", "-o", "yaml", "-l", "x"], &[]);
    assert!(r.stdout.contains("\n  x:\n"), "{r:?}");

    let r = p.run(&["export", "-o", "xml"], &[]);
    expect(&r, 1, "");
    assert!(r.stderr.contains("xml"), "{r:?}");
}

/// Every flag's variable, on `nvidia-mig-parted` and on `tessera mig`: set only through the
/// environment, each changes what the command does.
#[test]
fn every_flags_variable() {
    let p = Parted::new();
    let f = p.config();
    let hooks = p.logging_hooks();
    assert_eq!(p.run(&["apply", "-f", &f, "-c", "all-disabled"], &[]).code, 0);
    let file = ("MIG_PARTED_CONFIG_FILE", f.as_str());
    for tessera in [false, true] {
        let run = |verb: &str, env: &[(&str, &str)]| {
            if tessera { p.tessera(&["mig", verb], env) } else { p.run(&[verb], env) }
        };
        // MIG_PARTED_SELECTED_CONFIG and MIG_PARTED_MODE_CHANGE_ONLY.
        let mode_only = [file, ("MIG_PARTED_SELECTED_CONFIG", "all-1g.10gb"), ("MIG_PARTED_MODE_CHANGE_ONLY", "true")];
        assert_eq!(run("apply", &mode_only).code, 0);
        assert_eq!(p.state(), [(true, devices(&[]))], "tessera: {tessera}");
        // MIG_PARTED_VALID_CONFIG: the node is not looked at.
        let valid = [file, ("MIG_PARTED_SELECTED_CONFIG", "all-1g.10gb"), ("MIG_PARTED_VALID_CONFIG", "true")];
        assert_eq!(run("assert", &valid).code, 0);
        assert_eq!(run("assert", &valid[..2]).code, 1);
        assert_eq!(run("assert", &mode_only).code, 0);
        // MIG_PARTED_HOOKS_FILE and MIG_PARTED_SKIP_RESET (as the hooks see it).
        let with_hooks =
            [file, ("MIG_PARTED_SELECTED_CONFIG", "all-disabled"), ("MIG_PARTED_HOOKS_FILE", hooks.as_str())];
        assert_eq!(run("apply", &with_hooks).code, 0);
        assert_eq!(p.events(), ["apply-start", "pre-apply-mode", "apply-exit"], "tessera: {tessera}");
        assert_eq!(p.state(), [(false, devices(&[]))]);
    }
    // MIG_PARTED_DEBUG: the plan on stderr, the hooks' output shown.
    let env_hooks = p.write("env-hooks.yaml", "version: v1\nhooks:\n  apply-start:\n  - command: /usr/bin/env\n");
    let base = [file, ("MIG_PARTED_SELECTED_CONFIG", "all-disabled"), ("MIG_PARTED_HOOKS_FILE", env_hooks.as_str())];
    let quiet = p.run(&["apply"], &base);
    expect(&quiet, 0, "MIG configuration applied successfully\n");
    let r =
        p.run(&["apply"], &[base[0], base[1], base[2], ("MIG_PARTED_DEBUG", "true"), ("MIG_PARTED_SKIP_RESET", "1")]);
    assert!(r.stdout.contains("MIG_PARTED_SKIP_RESET=true\n"), "{r:?}");
    assert!(r.stderr.contains("Applying 'all-disabled'"), "{r:?}");
    // -v shows hooks' output on `tessera mig apply`.
    let r = p.tessera(&["-v", "mig", "apply"], &base);
    assert!(r.stdout.contains("MIG_PARTED_SELECTED_CONFIG=all-disabled\n"), "{r:?}");
}

/// Usage errors exit 1 under mig-parted's name (2 under `tessera`'s); help and no verb exit 0.
#[test]
fn usage_errors_and_help() {
    let p = Parted::new();
    let f = p.config();
    for args in [&["apply", "--bogus"][..], &["frobnicate"], &["apply", "-f", &f], &["export", "-o"], &["-x"]] {
        let r = p.run(args, &[]);
        assert_eq!(r.code, 1, "{args:?}: {r:?}");
        assert!(!r.stderr.is_empty(), "{args:?}: {r:?}");
    }
    let r = p.tessera(&["mig", "apply", "--bogus"], &[]);
    assert_eq!(r.code, 2, "{r:?}");
    let r = p.run(&["apply", "-f", &f], &[]);
    assert!(r.stderr.contains("-c/--selected-config (or MIG_PARTED_SELECTED_CONFIG) is required"), "{r:?}");

    // A fixed width, so the snapshot does not depend on the terminal the tests run in.
    let help = p.run(&["--help"], &[("COLUMNS", "100")]);
    assert_eq!(help.code, 0, "{help:?}");
    insta::assert_snapshot!("nvidia_mig_parted_help", help.stdout);
    let bare = p.run(&[], &[("COLUMNS", "100")]);
    assert_eq!(bare.code, 0, "{bare:?}");
    assert_eq!(bare.stdout, help.stdout);
    let r = p.run(&["apply", "--help"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    for flag in
        ["--config-file", "--selected-config", "--hooks-file", "--skip-reset", "--mode-only", "MIG_PARTED_HOOKS_FILE"]
    {
        assert!(r.stdout.contains(flag), "{flag}: {r:?}");
    }
}

/// `generate-config` as the systemd service runs it (`-f FILE`), then used as the config; its
/// `-o` and variables.
#[test]
fn generate_config_writes_the_nodes_configs() {
    let p = Parted::new();
    let out = p.path("generated.yaml").display().to_string();
    expect(&p.run(&["generate-config", "-f", &out], &[]), 0, "");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.starts_with("version: v1\nmig-configs:\n"), "{text}");
    for name in ["all-disabled", "all-enabled", "all-balanced", "all-1g.10gb", "all-7g.80gb"] {
        assert!(text.contains(&format!("\n  {name}:\n")), "{name} missing:\n{text}");
    }
    let r = p.run(&["apply", "-f", &out, "-c", "all-balanced"], &[]);
    expect(&r, 0, "MIG configuration applied successfully\n");
    assert_eq!(p.state(), [(true, devices(&[("1g.10gb", 2), ("2g.20gb", 1), ("3g.40gb", 1)]))]);

    // Standard output by default; JSON through -o or the variables, to the variable's file.
    let r = p.run(&["generate-config"], &[]);
    expect(&r, 0, &text);
    let json_out = p.path("generated.json");
    let vars = [("MIG_PARTED_OUTPUT_FORMAT", "json"), ("MIG_PARTED_OUTPUT_FILE", json_out.to_str().unwrap())];
    expect(&p.run(&["generate-config"], &vars), 0, "");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json_out).unwrap()).unwrap();
    assert_eq!(v["mig-configs"]["all-balanced"][0]["mig-devices"]["3g.40gb"], 1, "{v}");
    let r = p.run(&["generate-config", "-o", "json"], &[]);
    assert_eq!(serde_json::from_str::<Value>(&r.stdout).unwrap(), v);
    let r = p.tessera(&["mig", "generate-config", "-o", "json"], &[]);
    assert_eq!(serde_json::from_str::<Value>(&r.stdout).unwrap(), v);
    expect(&p.run(&["generate-config", "-o", "toml"], &[]), 1, "");
}
