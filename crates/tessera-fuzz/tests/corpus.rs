//! Replays every seed input (`fuzz/corpus/<target>/`) and every input a fuzzer ever crashed a
//! parser with (`fuzz/regressions/<target>/`) through its target on stable, so `cargo test`
//! keeps each finding fixed without nightly or libFuzzer. A panic in a parser fails the test
//! naming the target and the file.

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use tessera_fuzz::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The files directly under `dir`, sorted; none when it does not exist.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

/// Every input of `kind` (`corpus` or `regressions`) through its target; the failures, each
/// naming the target and the file.
fn replay(kind: &str) -> (usize, Vec<String>) {
    let mut failures = Vec::new();
    let mut count = 0;
    for (name, target) in TARGETS {
        for path in inputs(&fuzz_dir().join(kind).join(name)) {
            let data = fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            count += 1;
            if catch_unwind(AssertUnwindSafe(|| target(&data))).is_err() {
                failures.push(format!("{name}: {} panicked", path.display()));
            }
        }
    }
    (count, failures)
}

#[test]
fn every_target_has_a_seed_corpus_and_no_seed_panics() {
    for (name, _) in TARGETS {
        let dir = fuzz_dir().join("corpus").join(name);
        assert!(!inputs(&dir).is_empty(), "no seed inputs in {}", dir.display());
    }
    let (count, failures) = replay("corpus");
    assert!(failures.is_empty(), "{} of {count} seed inputs panicked:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn no_regression_input_panics() {
    let (count, failures) = replay("regressions");
    assert!(failures.is_empty(), "{} of {count} regression inputs panicked:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn every_corpus_folder_names_a_target() {
    for kind in ["corpus", "regressions"] {
        let Ok(entries) = fs::read_dir(fuzz_dir().join(kind)) else { continue };
        for entry in entries.filter_map(|e| e.ok()).filter(|e| e.path().is_dir()) {
            let folder = entry.file_name().to_string_lossy().into_owned();
            assert!(TARGETS.iter().any(|(n, _)| *n == folder), "fuzz/{kind}/{folder} names no target");
        }
    }
}

#[test]
fn every_target_has_a_cargo_fuzz_binary() {
    let manifest = fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    for (name, _) in TARGETS {
        assert!(manifest.contains(&format!("name = \"{name}\"")), "fuzz/Cargo.toml has no [[bin]] {name}");
        assert!(fuzz_dir().join("fuzz_targets").join(format!("{name}.rs")).is_file(), "no fuzz_targets/{name}.rs");
    }
}

/// The seeds for the API server's objects get past k8s-openapi into Tessera's own readers (a
/// seed the API types refused would fuzz only serde): the claim has an allocation with a device,
/// the pod is one the controller acts for, and the node's report and desired layout are read.
#[test]
fn kubernetes_object_seeds_reach_tesseras_readers() {
    use k8s_openapi::api::core::v1::{Node, Pod};
    use k8s_openapi::api::resource::v1::ResourceClaim;
    use tessera_kube::annotations::{DESIRED_LAYOUT, DesiredLayout, NODE_REPORT, NodeReport, read_annotation};
    use tessera_kube_core::dra_claim::ClaimRef;

    let seed = |name: &str| fs::read(fuzz_dir().join("corpus/kube_objects").join(name)).expect(name);
    let claim: ResourceClaim = serde_json::from_slice(&seed("resource-claim.json")).expect("a ResourceClaim");
    let claim_ref = ClaimRef {
        namespace: claim.metadata.namespace.clone().unwrap_or_default(),
        name: claim.metadata.name.clone().unwrap_or_default(),
        uid: claim.metadata.uid.clone().unwrap_or_default(),
    };
    let allocation = tessera_kube::dra::allocation_of(&claim_ref, &claim).expect("an allocated claim");
    assert_eq!(allocation.devices.len(), 1);
    assert_eq!(allocation.config.len(), 1);

    let pod: Pod = serde_json::from_slice(&seed("pending-pod.json")).expect("a Pod");
    assert!(tessera_kube::pending_pod(&pod).is_some(), "the seed pod is not one the controller acts for");

    let node: Node = serde_json::from_slice(&seed("node-annotations.json")).expect("a Node");
    let annotations = node.metadata.annotations.as_ref();
    let report: NodeReport = read_annotation("node-a", annotations, NODE_REPORT).unwrap().expect("a report");
    assert_eq!(report.node_state("node-a", None).gpus.len(), 2);
    let desired: DesiredLayout = read_annotation("node-a", annotations, DESIRED_LAYOUT).unwrap().expect("a layout");
    assert_eq!(desired.gpus.len(), 1);
}
