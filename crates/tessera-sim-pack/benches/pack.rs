//! One packing run (one policy, one seed, the default openb trace at 130%, 6,212 GPUs): FGD and
//! best fit in milli-GPU sharing mode, FGD and Tessera in MIG mode (A100-40GB).
//! `CARGO_TARGET_DIR=/work/target-pack cargo bench -p tessera-sim-pack`

use std::path::Path;
use std::sync::OnceLock;

use tessera_sim::trace::{Node, Pod, read_openb_nodes, read_openb_pods};
use tessera_sim_pack::sim::Setup;
use tessera_sim_pack::{Mode, Policy, run_one, setup};

fn main() {
    divan::main();
}

fn trace() -> &'static (Vec<Node>, Vec<Pod>) {
    static TRACE: OnceLock<(Vec<Node>, Vec<Pod>)> = OnceLock::new();
    TRACE.get_or_init(|| {
        let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/traces/alibaba-gpu-v2023"));
        let nodes = read_openb_nodes(&dir.join("openb_node_list_gpu_node.csv")).expect("node list");
        let pods = read_openb_pods(&dir.join("openb_pod_list_default.csv")).expect("pod list");
        (nodes, pods)
    })
}

fn prepared(mode: Mode) -> Setup {
    let (nodes, pods) = trace();
    setup(mode, None, nodes, pods).expect("setup")
}

#[divan::bench(sample_count = 10)]
fn shared_fgd(b: divan::Bencher) {
    let s = prepared(Mode::Shared);
    b.bench(|| run_one(&s, Policy::Fgd, 42, 130));
}

#[divan::bench(sample_count = 10)]
fn shared_bestfit(b: divan::Bencher) {
    let s = prepared(Mode::Shared);
    b.bench(|| run_one(&s, Policy::BestFit, 42, 130));
}

#[divan::bench(sample_count = 10)]
fn shared_tessera(b: divan::Bencher) {
    let s = prepared(Mode::Shared);
    b.bench(|| run_one(&s, Policy::Tessera, 42, 130));
}

#[divan::bench(sample_count = 10)]
fn mig_fgd(b: divan::Bencher) {
    let s = prepared(Mode::Mig);
    b.bench(|| run_one(&s, Policy::Fgd, 42, 130));
}

#[divan::bench(sample_count = 10)]
fn mig_tessera(b: divan::Bencher) {
    let s = prepared(Mode::Mig);
    b.bench(|| run_one(&s, Policy::Tessera, 42, 130));
}

/// Building the setup: typical pods, shapes, and (MIG) enumerating every layout through the planner.
#[divan::bench(sample_count = 10)]
fn mig_setup() -> Setup {
    prepared(Mode::Mig)
}
