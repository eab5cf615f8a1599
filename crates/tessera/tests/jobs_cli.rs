//! The job commands as people use them, end to end against the real daemon on a simulated
//! node: `jobs` (active by default, history with `--all`, filters, width), `job ID`, `cancel`
//! and `wait` with several jobs, sizes, `submit --dry-run`, `gpus`, errors in the CLI's words,
//! and user text printed with its control characters escaped. Tables and errors are insta
//! snapshots, with times redacted.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{Daemon, NOBODY, root};

/// The CLI with extra environment (`COLUMNS`), as the test's user: exit code, stdout, stderr.
fn tessera(socket: &Path, env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tessera"));
    c.arg("--socket").arg(socket).args(args).env_remove("TESSERA_TCP").env_remove("COLUMNS").env("TZ", "UTC");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A transcript of commands for a snapshot: each with its exit code and what it printed.
fn transcript(socket: &Path, runs: &[&[&str]]) -> String {
    let mut out = String::new();
    for args in runs {
        let (code, stdout, stderr) = tessera(socket, &[], args);
        out.push_str(&format!("$ tessera {}\nexit {code}\n{stdout}{stderr}\n", args.join(" ")));
    }
    out
}

/// Times and run lengths vary from run to run; the redactions keep each one's width.
macro_rules! snapshot {
    ($name:expr, $value:expr) => {
        insta::with_settings!({filters => vec![
            (r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} UTC", "YYYY-MM-DD hh:mm:ss.mmm UTC"),
            (r"\b\d\d:\d\d:\d\d\b", "hh:mm:ss"),
            (r"\b\d+(s|m\d\ds)\b", "N$1"),
            (r"MIG-[0-9a-f-]{36}", "MIG-<uuid>"),
            (r"GPU-[0-9a-f-]{36}", "GPU-<uuid>"),
            (r"(?m)^(directory +).*$", "$1<cwd>"),
        ]}, {
            insta::assert_snapshot!($name, $value);
        });
    };
}

/// What the command line refuses before asking the daemon: sizes without a unit or with an
/// ambiguous one, zero CPUs or ranks, unknown states (listing the valid ones), a cancel that
/// names no job.
#[test]
fn the_cli_refuses_bad_sizes_counts_and_selections_naming_the_forms() {
    let nowhere = Path::new("/nonexistent/tessera.sock");
    let runs: &[&[&str]] = &[
        &["submit", "--gpu-mem", "10", "--", "true"],
        &["submit", "--mem", "16G", "--", "true"],
        &["submit", "--mps", "25%", "--mps-mem", "4", "--", "true"],
        &["submit", "--gpu-mem", "10 giga", "--", "true"],
        &["submit", "--cpus", "0", "--", "true"],
        &["submit", "--ranks", "0", "--", "true"],
        &["jobs", "--state", "pending"],
        &["jobs", "--since", "yesterday"],
        &["cancel"],
        &["cancel", "--state", "succeeded"],
        &["wait"],
    ];
    snapshot!("cli_refusals", transcript(nowhere, runs));
}

/// `submit --help` groups what a rank gets, the job's other options, and the node and
/// connection options every command shares.
#[test]
fn submit_help_is_grouped() {
    let (code, out, _) = tessera(Path::new("/nonexistent"), &[], &["submit", "--help"]);
    assert_eq!(code, 0);
    let at = |heading: &str| out.find(heading).unwrap_or_else(|| panic!("no {heading:?} in:\n{out}"));
    let (resources, job, node) = (at("Resources (per rank):"), at("Job options:"), at("Node and connection options:"));
    assert!(resources < job && job < node, "{out}");
    let gpu_mem = at("--gpu-mem <SIZE>");
    let dry_run = at("\n      --dry-run");
    let socket = at("--socket <PATH>");
    assert!(resources < gpu_mem && gpu_mem < job, "--gpu-mem is a resource:\n{out}");
    assert!(job < dry_run && dry_run < node, "--dry-run is a job option:\n{out}");
    assert!(node < socket, "--socket is a connection option:\n{out}");
    assert!(out.contains("`10GB` gives a 1g.10gb"), "{out}");
}

fn wait_for(d: &Daemon, id: u64, state: &str) -> Value {
    let t0 = Instant::now();
    loop {
        let j = d.job(id);
        if j["state"] == state {
            return j;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "job {id} never became {state}: {j}\n{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn profile_of(j: &Value) -> String {
    j["ranks"][0]["slices"][0]["profile"].as_str().unwrap_or_default().to_string()
}

/// The whole flow of an operator's day on one node: sizes as they are written, the active
/// list and the history, one job in full, escaped user text, widths, dry runs, cancels by id
/// and by filter, waits on several jobs, the slice map, and errors in the CLI's words.
#[test]
fn jobs_job_cancel_wait_gpus_and_dry_runs_as_people_use_them() {
    let d = Daemon::start("2xH100-80GB,numa=2");
    let s = d.socket();
    let run = |env: &[(&str, &str)], args: &[&str]| tessera(&s, env, args);

    // 10 GB (decimal) fits a 1g.10gb's 9,984 MiB; 10 GiB needs a 1g.20gb.
    let decimal = d.submit(&["--gpu-mem", "10GB", "--", "true"]);
    let binary = d.submit(&["--gpu-mem", "10GiB", "--", "true"]);
    assert_eq!(d.wait(decimal)["state"], "succeeded");
    assert_eq!(d.wait(binary)["state"], "succeeded");
    assert_eq!(profile_of(&d.job(decimal)), "1g.10gb");
    assert_eq!(profile_of(&d.job(binary)), "1g.20gb");
    let j = d.job(decimal);
    assert_eq!(j["ranks"][0]["cpu_count"], 1, "{j}");

    // With both GPUs drained, new jobs wait: one whose command line would retitle and clear
    // an admin's terminal, one with a long command line.
    d.ok(&["admin", "drain", "0", "--reason", "maintenance"]);
    d.ok(&["admin", "drain", "1"]);
    let evil = d.submit(&["--profile", "1g.10gb", "--", "sh", "-c", "echo \x1b]0;pwned\x07\x1b[2J", "tab\there"]);
    let long = d.submit(&[
        "--profile",
        "3g.40gb",
        "--cpus",
        "2",
        "--mem",
        "2GiB",
        "--",
        "python3",
        "train.py",
        "--epochs",
        "100",
        "--data",
        "/datasets/imagenet/train",
        "--out",
        "/scratch/checkpoints",
    ]);
    wait_for(&d, evil, "queued");
    // The pending reason is written by the next round.
    let t0 = Instant::now();
    while d.job(long)["reason"].as_str().is_none_or(|r| !r.contains("drain")) && t0.elapsed() < Duration::from_secs(20)
    {
        std::thread::sleep(Duration::from_millis(50));
    }

    let (code, active, _) = run(&[("COLUMNS", "110")], &["jobs"]);
    assert_eq!(code, 0);
    assert!(!active.contains("succeeded"), "ended jobs only with --all:\n{active}");
    snapshot!("jobs_active", active);
    let (_, all, _) = run(&[("COLUMNS", "110")], &["jobs", "--all"]);
    snapshot!("jobs_all", all);
    let (_, since, _) = run(&[("COLUMNS", "110")], &["jobs", "--since", "1h"]);
    assert_eq!(since, all, "--since 1h: everything of the last hour");
    let (_, failed, _) = run(&[("COLUMNS", "110")], &["jobs", "--state", "failed"]);
    assert_eq!(failed.lines().count(), 1, "only the header:\n{failed}");
    for (env, width) in [(&[("COLUMNS", "60")][..], 60), (&[][..], 80), (&[("COLUMNS", "200")][..], 200)] {
        let (_, out, _) = run(env, &["jobs", "--all"]);
        for line in out.lines() {
            assert!(line.chars().count() <= width, "{env:?}: a line of {}:\n{out}", line.chars().count());
            assert!(!line.contains('\x1b'), "a raw escape reached the terminal:\n{out}");
        }
    }
    // The reason whole in JSON and in the job's own view.
    let (_, json, _) = run(&[("COLUMNS", "40")], &["-o", "json", "jobs"]);
    let list: Value = serde_json::from_str(&json).unwrap();
    let reason = list["jobs"][1]["reason"].as_str().unwrap();
    assert!(reason.len() > 40 && reason.contains("drain"), "{reason}");
    snapshot!("job_queued_in_full", d.ok(&["job", &evil.to_string()]));
    snapshot!("gpus_drained", run(&[("COLUMNS", "100")], &["gpus"]).1);
    snapshot!("dry_run_waits", transcript(&s, &[&["submit", "--dry-run", "--gpu-mem", "10GB", "--", "true"]]));

    // Cancel several by id; the job says who cancelled it.
    snapshot!("cancel_two", transcript(&s, &[&["cancel", &evil.to_string(), &long.to_string()]]));
    assert_eq!(d.job(evil)["cancelled_by"], "root");
    let shown = d.ok(&["job", &evil.to_string()]);
    assert!(shown.contains("\ncancelled  by root\n"), "{shown}");
    snapshot!(
        "cancel_refusals",
        transcript(
            &s,
            &[
                &["cancel", "999999", &decimal.to_string()],
                &["cancel", "--state", "queued"],
                &["jobs", "--tenant", "nosuch"],
                &["cancel", "--tenant", "nosuch"],
            ]
        )
    );

    // What a job would get now: an idle instance (GPU 0 keeps the 1g.10gb it made), or a
    // reconfiguration.
    d.ok(&["admin", "undrain", "0"]);
    snapshot!(
        "dry_runs",
        transcript(
            &s,
            &[
                &["submit", "--dry-run", "--gpu-mem", "10GB", "--cpus", "4", "--", "true"],
                &["submit", "--dry-run", "--profile", "7g.80gb", "--", "true"],
                &["submit", "--dry-run", "--profile", "1g.10gb", "--cpus", "100000", "--", "true"],
            ]
        )
    );
    assert_eq!(d.ok(&["-o", "json", "jobs", "--all"]).matches("\"id\"").count(), 4, "a dry run queues nothing");

    // Cancel by filter, and wait on several.
    let a = d.submit(&["--profile", "1g.10gb", "--", "sleep", "60"]);
    let b = d.submit(&["--profile", "1g.10gb", "--", "sleep", "60"]);
    wait_for(&d, a, "running");
    wait_for(&d, b, "running");
    // The slice map: each job on its instance's line, with its user.
    let map = d.ok(&["gpus"]);
    for id in [a, b] {
        let on_a_line = map.lines().any(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.contains(&id.to_string().as_str()) && w.contains(&"root") && w.contains(&"1g.10gb")
        });
        assert!(on_a_line, "job {id} and its user on its instance's line:\n{map}");
    }
    let v: Value = serde_json::from_str(&d.ok(&["-o", "json", "gpus"])).unwrap();
    let occupants: Vec<&Value> = v["gpus"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["instances"].as_array().unwrap().iter().flat_map(|i| i["occupants"].as_array().unwrap()))
        .collect();
    assert_eq!(occupants.len(), 2, "{v}");
    assert!(occupants.iter().all(|o| o["user"] == "root" && o["tenant"] == "default"), "{v}");
    let (code, out, err) = run(&[], &["cancel", "--state", "running"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.matches(": cancelling").count(), 2, "{out}");
    let (code, out, err) = run(&[], &["wait", &a.to_string(), &b.to_string()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains(&format!("job {a} ended cancelled; job {b} ended cancelled")), "{err}");
    let (code, out, _) = run(&[], &["wait", &decimal.to_string(), &binary.to_string()]);
    assert_eq!((code, out.lines().count()), (0, 2), "{out}");
    let (_, json, _) = run(&[], &["-o", "json", "wait", &decimal.to_string(), &binary.to_string()]);
    assert_eq!(serde_json::from_str::<Value>(&json).unwrap()["jobs"].as_array().map(Vec::len), Some(2));
    assert_eq!(d.job(a)["cancelled_by"], "root");

    // Errors name the flag, not the API's field.
    snapshot!(
        "submit_refusals",
        transcript(
            &s,
            &[
                &["submit", "--gpu-mem", "900GB", "--", "true"],
                &["submit", "--profile", "1g.10gb", "--mem", "64TiB", "--", "true"],
                &["submit", "--profile", "1g.10gb", "--", "/no/such/program"],
            ]
        )
    );

    // Another user's jobs are an admin's to list or cancel.
    if root() {
        let tmp = Path::new("/tmp");
        for args in [&["jobs", "--user", "root"][..], &["jobs", "--all-users"], &["cancel", "--user", "root"]] {
            let (code, _, err) = d.cli_as(NOBODY, tmp, args);
            assert_eq!(code, 1, "{args:?}");
            assert!(err.contains("admins"), "{args:?}: {err}");
        }
        assert!(d.ok(&["jobs", "--all", "--user", "root"]).contains("root"));
    }
}

/// `submit --array` makes one job per index, each with its index in its environment, and
/// `jobs` shows a page (`--limit`, `--after`, the footer naming the next page on stderr), or
/// every job with `--limit all`.
#[test]
fn job_arrays_and_paged_listings() {
    let d = Daemon::start("1xH100-80GB,numa=1");
    let s = d.socket();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().display().to_string();
    let ids: Vec<u64> = d
        .ok(&["submit", "--array", "0-4:2,7", "--profile", "1g.10gb", "--", "sh", "-c",
              &format!("echo $TESSERA_ARRAY_TASK_ID $TESSERA_ARRAY_TASK_MIN $TESSERA_ARRAY_TASK_MAX $TESSERA_ARRAY_TASK_COUNT > {out}/$TESSERA_ARRAY_TASK_ID")])
        .lines()
        .map(|l| l.trim().parse().expect("one id a line"))
        .collect();
    assert_eq!(ids.len(), 4, "indices 0, 2, 4, 7");
    for id in &ids {
        assert_eq!(d.wait(*id)["state"], "succeeded");
    }
    for i in ["0", "2", "4", "7"] {
        let text = std::fs::read_to_string(dir.path().join(i)).unwrap();
        assert_eq!(text.trim(), format!("{i} 0 7 4"));
    }
    let (code, _, err) = tessera(&s, &[], &["submit", "--array", "5-1", "--", "true"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("backwards"), "{err}");

    // Pages of two, by id, the footer naming where the next starts. An array is submitted over
    // several connections at once, so its ids need not follow its indices.
    let mut ids = ids;
    ids.sort_unstable();
    let (code, page, footer) = tessera(&s, &[], &["jobs", "--all", "--limit", "2"]);
    assert_eq!(code, 0);
    let shown = |table: &str| -> Vec<u64> {
        table.lines().skip(1).filter_map(|l| l.split_whitespace().next()?.parse().ok()).collect()
    };
    assert_eq!(shown(&page), ids[..2]);
    assert!(footer.contains(&format!("--after {}", ids[1])), "{footer}");
    let (_, rest, footer) = tessera(&s, &[], &["jobs", "--all", "--limit", "2", "--after", &ids[1].to_string()]);
    assert_eq!(shown(&rest), ids[2..]);
    assert!(footer.is_empty(), "the last page has no footer: {footer}");
    let (_, json, _) = tessera(&s, &[], &["-o", "json", "jobs", "--all", "--limit", "all"]);
    let list: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(list["jobs"].as_array().map(Vec::len), Some(4));
    assert_eq!(list["next"], Value::Null);
    let (code, _, err) = tessera(&s, &[], &["jobs", "--limit", "0"]);
    assert_eq!(code, 2, "{err}");
}
