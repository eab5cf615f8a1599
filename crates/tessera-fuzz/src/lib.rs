//! Fuzz targets over every parser of outside text Tessera has: mig-parted files, node specs, the
//! daemon's request bodies and query strings, its TOML config, the simulator's traces, the
//! Kubernetes objects and the Slurm output it reads.
//!
//! Each target is one function taking arbitrary bytes and calling the real parser the way the
//! product calls it (and what the product does next with a parsed value, where that is pure).
//! A target returns nothing and never panics on its own: any panic, overflow or hang under it
//! is a bug in the parser. `fuzz/` (cargo-fuzz, nightly) drives these functions with libFuzzer;
//! `tests/corpus.rs` replays the corpora and every regression input through them on stable, so
//! `cargo test` keeps each finding fixed. No I/O: the one parser that could read a file (the
//! daemon config's `server.token_file`) is not given an input naming one.

use std::str::FromStr;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::resource::v1::ResourceClaim;
use tessera_gpu::NodeSpec;
use tessera_kube::annotations::{DESIRED_LAYOUT, DesiredLayout, NODE_REPORT, NodeReport, read_annotation};
use tessera_kube_core::dra::DraGpu;
use tessera_kube_core::dra_claim::{ClaimAllocation, ClaimRef, claim_sharing, device_target, parse_sharing};
use tessera_migparted::DeviceSummary;

/// A fuzz target: arbitrary bytes in, nothing out, no panic.
pub type Target = fn(&[u8]);

/// The targets by name (the names of `fuzz/fuzz_targets/*.rs` and `fuzz/corpus/*/`), each with
/// its function.
pub const TARGETS: &[(&str, Target)] = &[
    ("migparted_config", migparted_config),
    ("node_spec", node_spec),
    ("daemon_request", daemon_request),
    ("daemon_config", daemon_config),
    ("sim_trace", sim_trace),
    ("kube_objects", kube_objects),
    ("slurm_output", slurm_output),
];

/// The node the config resolvers run against: unlike models, so device filters and per-model
/// profiles are exercised (A30, A100-40GB, H100-80GB).
const FUZZ_NODE: &str = "1xA30+2xA100-40GB+1xH100-80GB";

/// Text as a parser of files sees it: files are read as UTF-8, and invalid bytes refused before
/// any parser runs.
fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

fn fuzz_node() -> Option<NodeSpec> {
    NodeSpec::from_str(FUZZ_NODE).ok()
}

/// mig-parted's files: the config (`tessera mig config -f`, the node agent's ConfigMap), each of
/// its configs resolved on a node and written back, the hooks file and the checkpoint.
pub fn migparted_config(data: &[u8]) {
    let Some(text) = text(data) else { return };
    if let Ok(file) = tessera_migparted::parse(text, "fuzz") {
        let _ = tessera_migparted::parse(&file.to_yaml(), "fuzz (rewritten)");
        if let Some(node) = fuzz_node() {
            let devices: Vec<DeviceSummary> = node
                .devices()
                .iter()
                .zip(node.models())
                .map(|(d, model)| DeviceSummary {
                    index: d.index,
                    pci_device_id: d.pci_device_id,
                    pci_subsystem_id: d.pci_subsystem_id,
                    model: Some(model),
                })
                .collect();
            for name in file.config_names() {
                let _ = tessera_migparted::resolve_node(&file, name, &devices);
            }
        }
    }
    let _ = tessera_migparted::parse_hooks(text, "fuzz");
    let _ = tessera_migparted::parse_checkpoint(text, "fuzz");
}

/// A node spec (`--sim-node`, `TESSERA_SIM_NODE`, the daemon's `node.sim`), and the node it
/// describes, as the simulated node builds it.
pub fn node_spec(data: &[u8]) {
    let Some(text) = text(data) else { return };
    let Ok(spec) = NodeSpec::from_str(text) else { return };
    let _ = spec.devices();
    // Every node's memory; the CPU lists of the first and last (up to 8192 CPUs each: all of
    // them every run would spend the fuzzer's time copying lists, not parsing).
    let nodes = spec.host_nodes();
    for node in nodes.clone() {
        let _ = spec.memory_of_node(node);
    }
    for node in [nodes.start, nodes.end.saturating_sub(1)] {
        let _ = spec.cpus_of_node(Some(node));
    }
    let _ = spec.cpus_of_node(None);
    for index in 0..spec.gpu_count() {
        let _ = spec.numa_node_of(index);
    }
    let _ = spec.to_string();
}

/// One HTTP request's parts as the daemon's routes parse them (`api.rs`): the bytes as every
/// route's JSON body, and (when UTF-8) as every route's query string and path segment.
pub fn daemon_request(data: &[u8]) {
    let query = std::str::from_utf8(data).unwrap_or("");
    tessera_daemon::api::parse_request_parts(data, query);
}

/// The daemon's TOML config (`tessera serve --config`, `Config::parse`: every error at a line
/// and column from the TOML spans). Inputs naming a token file are skipped: reading one is I/O.
pub fn daemon_config(data: &[u8]) {
    let Some(text) = text(data) else { return };
    let names_token_file = match toml::from_str::<tessera_daemon::config::Config>(text) {
        Ok(c) => c.server.token_file.is_some(),
        Err(_) => text.contains("token_file"),
    };
    if names_token_file {
        return;
    }
    let _ = tessera_daemon::config::Config::parse(text, "fuzz.toml");
}

/// The simulator's trace readers (`tessera sim`): openb's node and pod CSVs, the jobs CSV, and
/// the replay's jobs made from the pods.
pub fn sim_trace(data: &[u8]) {
    let Some(text) = text(data) else { return };
    let _ = tessera_sim::trace::parse_openb_nodes(text, "fuzz");
    if let Ok(pods) = tessera_sim::trace::parse_openb_pods(text, "fuzz") {
        let _ = tessera_sim::trace::jobs_from_openb(&pods, None);
        let _ = tessera_sim::trace::jobs_from_openb(&pods, Some(1.0));
    }
    if let Ok(jobs) = tessera_sim::trace::parse_jobs_csv(text, "fuzz") {
        let _ = tessera_sim::trace::write_jobs_csv(&jobs);
    }
}

/// The Kubernetes objects Tessera reads: ResourceClaims, pending pods and node annotations as
/// the API server sends them (through k8s-openapi), NVIDIA's device-plugin config (YAML), a DRA claim's
/// allocation (its devices named back to GPUs and placements, its opaque configuration for each
/// request), quantities, resource names and the pod-hold keys.
pub fn kube_objects(data: &[u8]) {
    if let Ok(allocation) = serde_json::from_slice::<ClaimAllocation>(data) {
        claim_devices(&allocation);
    }
    // The API server's objects as k8s-openapi reads them, then as Tessera reads those: a
    // ResourceClaim's allocation (the DRA driver's prepare), a pod the controller may repartition
    // a node for, and a node's annotations (the controller reads the agent's report and its own
    // desired layout back).
    if let Ok(claim) = serde_json::from_slice::<ResourceClaim>(data) {
        let meta = &claim.metadata;
        let claim_ref = ClaimRef {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
        };
        if let Ok(allocation) = tessera_kube::dra::allocation_of(&claim_ref, &claim) {
            claim_devices(&allocation);
        }
    }
    if let Ok(pod) = serde_json::from_slice::<Pod>(data) {
        let _ = tessera_kube::pending_pod(&pod);
    }
    if let Ok(node) = serde_json::from_slice::<Node>(data) {
        let name = node.metadata.name.as_deref().unwrap_or("fuzz");
        let annotations = node.metadata.annotations.as_ref();
        if let Ok(Some(report)) = read_annotation::<NodeReport>(name, annotations, NODE_REPORT) {
            let _ = report.node_state(name, None);
        }
        let _ = read_annotation::<DesiredLayout>(name, annotations, DESIRED_LAYOUT);
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = parse_sharing(&value);
    }
    let Some(text) = text(data) else { return };
    let _ = tessera_kube_core::naming::parse_config(text, "fuzz");
    let _ = tessera_kube_core::quantity::parse_quantity(text);
    let _ = tessera_kube_core::ResourceName::parse(text);
    let _ = tessera_kube_core::holds::container_of_key(text);
    let _ = tessera_kube_core::holds::pod_of_key(text);
}

/// What the driver does next with a claim's allocation: each device named back to a GPU and
/// placement, and its sharing read from the opaque configuration for its request.
fn claim_devices(allocation: &ClaimAllocation) {
    let gpus = fuzz_gpus();
    for device in &allocation.devices {
        let _ = device_target(&device.device, &gpus);
        let _ = claim_sharing(&allocation.config, &device.driver, &device.request);
    }
}

/// The GPUs a claim's device names are read against: the fuzz node, MIG on, empty.
fn fuzz_gpus() -> Vec<DraGpu> {
    let Some(node) = fuzz_node() else { return Vec::new() };
    node.models()
        .into_iter()
        .enumerate()
        .map(|(i, model)| DraGpu {
            index: i as u32,
            uuid: format!("GPU-fuzz-{i}"),
            model,
            numa_node: None,
            mig_enabled: true,
            instances: Vec::new(),
        })
        .collect()
}

/// Slurm's output as Tessera reads it: `scontrol show job|node -o` records into jobs and nodes,
/// GRES strings in both spellings, and the drain reasons an agent claims a change with.
pub fn slurm_output(data: &[u8]) {
    let Some(text) = text(data) else { return };
    if let Ok(records) = tessera_slurm::parse_records(text) {
        for record in &records {
            if let Ok(node) = tessera_slurm::SlurmNode::from_record(record) {
                let _ = node.used_indices();
                let _ = node.free("gpu");
            }
            let _ = tessera_slurm::SlurmJob::from_record(record);
        }
    }
    let _ = tessera_slurm::parse_gres_list(text);
    let _ = tessera_slurm::parse_tres_per_node(text);
    let _ = tessera_slurm::pending::parse_claim(text);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fuzz_node_parses_so_the_resolvers_run() {
        let node = fuzz_node().expect("FUZZ_NODE parses");
        assert_eq!(node.gpu_count(), 4);
        assert_eq!(fuzz_gpus().len(), 4);
    }

    #[test]
    fn target_names_are_unique() {
        let mut names: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), TARGETS.len());
    }
}
