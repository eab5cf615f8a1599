//! `tessera sim` end to end: the real binary on the openb traces in `../shared` and on native
//! CSV files it writes itself. The simulations' own correctness is tested in their crates; here
//! the command line, the output formats and the error messages.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn traces() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/traces/alibaba-gpu-v2023")
}

fn tessera(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera")).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(args: &[&str]) -> String {
    let (code, out, err) = tessera(args);
    assert_eq!(code, 0, "tessera {args:?}:\n{out}\n{err}");
    out
}

#[test]
fn gen_is_deterministic_and_its_output_is_a_valid_trace() {
    let a = ok(&["sim", "gen", "--jobs", "200", "--seed", "7", "--mix", "1x250:1,1x1000:1,2x1000:1"]);
    let b = ok(&["sim", "gen", "--jobs", "200", "--seed", "7", "--mix", "1x250:1,1x1000:1,2x1000:1"]);
    assert_eq!(a, b);
    assert_ne!(a, ok(&["sim", "gen", "--jobs", "200", "--seed", "8", "--mix", "1x250:1,1x1000:1,2x1000:1"]));
    assert!(
        a.starts_with("job_id,submit_s,duration_s,tenant,num_gpu,gpu_milli,gpu_mem_mib,cpus,mem_mib,model_class\n")
    );
    assert_eq!(a.lines().count(), 201);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jobs.csv");
    std::fs::write(&file, &a).unwrap();
    let v: Value = serde_json::from_str(&ok(&[
        "sim",
        "run",
        "--trace",
        file.to_str().unwrap(),
        "--cluster",
        "8xA100-40GB",
        "--policy",
        "whole,dynamic",
        "--seeds",
        "2",
        "-o",
        "json",
    ]))
    .unwrap();
    let policies = v["policies"].as_array().unwrap();
    assert_eq!(policies.len(), 2);
    for p in policies {
        for field in [
            "policy",
            "jct_mean_s",
            "jct_median_s",
            "wait_mean_s",
            "wait_median_s",
            "wait_p99_s",
            "makespan_s",
            "utilization",
            "unusable_fraction",
            "reconfigurations",
        ] {
            assert!(!p[field].is_null(), "{field} missing in {p}");
        }
    }
    assert_eq!(policies[0]["policy"], "whole");
    assert_eq!(policies[0]["reconfigurations"].as_f64(), Some(0.0));
}

#[test]
fn pack_reports_a_summary_per_policy_and_demand_point_in_every_format() {
    let nodes = traces().join("openb_node_list_gpu_node.csv");
    let pods = traces().join("openb_pod_list_default.csv");
    let (nodes, pods) = (nodes.to_str().unwrap(), pods.to_str().unwrap());
    let base = ["sim", "pack", "--nodes", nodes, "--pods", pods, "--policy", "bestfit,fgd", "--seeds", "42"];
    let v: Value = serde_json::from_str(&ok(&[&base[..], &["-o", "json"]].concat())).unwrap();
    let summary = v["summary"].as_array().unwrap();
    let at_130: Vec<(&str, f64)> = summary
        .iter()
        .filter(|r| r["demand"].as_f64() == Some(130.0))
        .map(|r| (r["policy"].as_str().unwrap(), r["allocation_ratio_mean"].as_f64().unwrap()))
        .collect();
    assert_eq!(at_130.len(), 2, "{at_130:?}");
    let fgd = at_130.iter().find(|(p, _)| *p == "fgd").unwrap().1;
    let bestfit = at_130.iter().find(|(p, _)| *p == "bestfit").unwrap().1;
    assert!(fgd > bestfit && fgd > 90.0, "fgd {fgd}, bestfit {bestfit}");

    let csv = ok(&[&base[..], &["-o", "csv"]].concat());
    assert!(csv.lines().next().unwrap().contains("allocation_ratio_mean"), "{csv}");
    let table = ok(&base);
    assert!(table.contains("fgd") && table.contains("130%"), "{table}");

    let dir = tempfile::tempdir().unwrap();
    let plots = dir.path().join("plots");
    let (code, _, err) = tessera(&[&base[..], &["--plots", plots.to_str().unwrap()]].concat());
    assert_eq!(code, 0, "{err}");
    let files: Vec<String> =
        std::fs::read_dir(&plots).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(files.iter().any(|f| f.ends_with(".svg")) && files.iter().any(|f| f.ends_with(".png")), "{files:?}");
}

#[test]
fn bad_input_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "job_id,submit_s,duration_s,tenant,num_gpu,gpu_milli,gpu_mem_mib,cpus,mem_mib,model_class\nj1,0,10,a,1,1500,0,1,0,\n",
    )
    .unwrap();
    let bad = bad.to_str().unwrap();
    let good_path = dir.path().join("good.csv");
    std::fs::write(&good_path, ok(&["sim", "gen", "--jobs", "20"])).unwrap();
    let good = good_path.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["sim", "run", "--trace", bad, "--cluster", "8xA100-40GB"], "line 2, column 'gpu_milli'"),
        (vec!["sim", "run", "--trace", "/nonexistent.csv", "--cluster", "8xA100-40GB"], "/nonexistent.csv"),
        (vec!["sim", "run", "--trace", good, "--cluster", "8xB100"], "--cluster"),
        (vec!["sim", "gen", "--jobs", "5", "--mix", "1x2000:1"], "--mix"),
        (vec!["sim", "gen", "--jobs", "5", "--load", "0.5"], "--load needs --gpus"),
        (vec!["sim", "pack", "--nodes", bad, "--pods", bad], "header"),
        (vec!["jobs", "-o", "csv"], "-o csv is for `tessera sim`"),
        (
            vec!["sim", "pack", "--nodes", bad, "--pods", bad, "--gpu-model", "H100-80GB"],
            "--gpu-model applies to --mode mig",
        ),
        (vec!["sim", "run", "--trace", good, "--cluster", "8xA100-40GB", "--seeds", "0"], "--seeds 0"),
        (
            vec!["sim", "run", "--trace", good, "--cluster", "8xA100-40GB", "--last-days", "3"],
            "--last-days applies to openb",
        ),
    ];
    for (args, want) in cases {
        let (code, out, err) = tessera(&args);
        assert_ne!(code, 0, "{args:?} should fail:\n{out}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let short = traces().join("openb_pod_list_multigpu20.csv");
    let (code, _, err) = tessera(&["sim", "run", "--trace", short.to_str().unwrap(), "--cluster", "8xA100-40GB"]);
    assert_ne!(code, 0);
    assert!(err.contains("first five columns"), "{err}");
    let (code, _, err) = tessera(&["sim", "run", "--trace", good, "--cluster", "8xA100-40GB", "--policy", "fifo"]);
    assert_ne!(code, 0);
    assert!(err.contains("fifo") && err.contains("dynamic"), "the error lists the policies: {err}");
}

/// The human tables, pinned: a small native trace on 4 GPUs (every policy, 2 seeds), and the
/// packing protocol on a 4-node cluster. Deterministic per seed, so any change to the simulator's
/// results or to the table layout shows up here.
#[test]
fn report_tables_are_stable() {
    let jobs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tessera-sim-time/tests/data/jobs.csv");
    insta::assert_snapshot!(
        "sim_run_small",
        ok(&["sim", "run", "--trace", jobs.to_str().unwrap(), "--cluster", "4xA100-40GB", "--seeds", "2"])
    );
    let dir = tempfile::tempdir().unwrap();
    let nodes = dir.path().join("nodes.csv");
    let pods = dir.path().join("pods.csv");
    std::fs::write(
        &nodes,
        "sn,cpu_milli,memory_mib,gpu,model\nn0,64000,262144,2,V100M16\nn1,96000,393216,8,G2\nn2,96000,393216,8,G2\nn3,32000,131072,1,T4\n",
    )
    .unwrap();
    let mut p = String::from("name,cpu_milli,memory_mib,num_gpu,gpu_milli\n");
    let shapes = [(4000, 1, 250), (8000, 1, 470), (12000, 1, 1000), (16000, 2, 1000), (6000, 1, 810), (2000, 0, 0)];
    for k in 0..30 {
        let (cpu, n, milli) = shapes[k % shapes.len()];
        p.push_str(&format!("pod-{k:03},{cpu},16384,{n},{milli}\n"));
    }
    std::fs::write(&pods, p).unwrap();
    let (nodes, pods) = (nodes.to_str().unwrap(), pods.to_str().unwrap());
    for mode in ["shared", "mig"] {
        insta::assert_snapshot!(
            format!("sim_pack_small_{mode}"),
            ok(&[
                "sim",
                "pack",
                "--nodes",
                nodes,
                "--pods",
                pods,
                "--mode",
                mode,
                "--policy",
                "bestfit,fgd,tessera",
                "--seeds",
                "1-3"
            ])
        );
    }
}

#[test]
fn kube_compares_the_device_providers_and_refuses_what_it_cannot_run() {
    let v: Value = serde_json::from_str(&ok(&[
        "sim",
        "kube",
        "--workload",
        "migbench",
        "--cluster",
        "1x2xH100-80GB",
        "--policy",
        "mig-manager:3g+2g+2g,dra",
        "--seeds",
        "2",
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(v["held_out_pods"], 500);
    let policies = v["policies"].as_array().unwrap();
    assert_eq!(policies.len(), 2);
    assert_eq!(policies[0]["config"], "2×3g+2g+2g");
    assert_eq!(policies[1]["per_seed"].as_array().unwrap().len(), 2);
    assert!(policies[1]["wait_mean_s"]["mean"].as_f64().unwrap() > 0.0);
    let table =
        ok(&["sim", "kube", "--workload", "migbench", "--cluster", "1x1xH100-80GB", "--policy", "dra", "--seeds", "1"]);
    assert!(table.contains("workload migbench on 1x1xH100-80GB") && table.contains("\ndra "), "{table}");
    // MIGBench's own generator, with the structured allocator over the published slices.
    let generated =
        ok(&["sim", "kube", "--workload", "migbench-gen", "--policy", "dra-alloc,dra-alloc-tessera", "--seeds", "1"]);
    assert!(generated.contains("workload migbench-gen on 2x4xH100-80GB"), "{generated}");
    assert!(generated.contains("\ndra-alloc ") && generated.contains("\ndra-alloc-tessera "), "{generated}");
    for (args, want) in [
        (vec!["--workload", "openb"], "--workload openb needs --trace"),
        (vec!["--workload", "k8s"], "valid workloads are openb, migbench and migbench-gen"),
        (vec!["--workload", "migbench", "--policy", "fifo"], "policy 'fifo': unknown policy"),
        (vec!["--workload", "migbench", "--cluster", "load=0.9:H100-80GB"], "give the GPUs"),
    ] {
        let mut all = vec!["sim", "kube"];
        all.extend(args);
        let (code, _, err) = tessera(&all);
        assert_eq!(code, 1, "{all:?}: {err}");
        assert!(err.contains(want), "{all:?}: {err}");
    }
}
