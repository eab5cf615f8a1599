//! The conformance suite against the simulated node, file-backed as the CLI uses it: every case
//! on a fresh node in its own state file, all failures reported together.

use tessera_gpu::conformance::{self, SPEC};
use tessera_gpu::{NodeSpec, SimBackend};

#[test]
fn simulated_node_passes_every_case() {
    let dir = tempfile::tempdir().unwrap();
    let spec = NodeSpec::parse(SPEC).unwrap();
    let mut n = 0;
    let failures = conformance::run_all(|| {
        n += 1;
        SimBackend::open(&dir.path().join(format!("case-{n}.json")), Some(&spec)).map_err(|e| e.to_string())
    });
    assert_eq!(n, conformance::cases().len());
    let report: Vec<String> = failures.iter().map(ToString::to_string).collect();
    assert!(failures.is_empty(), "{} conformance case(s) failed:\n{}", failures.len(), report.join("\n"));
}
