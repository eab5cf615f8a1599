//! The daemon's view of the node (`GET /v1/gpus`) as the records Slurm gets: one per MIG
//! instance with one compute instance (a CUDA device), one per GPU with MIG off.

use std::collections::BTreeSet;

use tessera_daemon::wire::GpuList;
use tessera_slurm::layout::SliceRecord;

use super::cores::CoreTopology;

/// The Slurm Type of a GPU with MIG off: its model, lowercase (`h100-80gb`).
pub fn whole_gpu_type(model: &str) -> String {
    model.to_ascii_lowercase().replace(' ', "_")
}

/// Every slice Slurm may hand out, in GPU and placement order.
pub fn slice_records(gpus: &GpuList, topology: &CoreTopology) -> Vec<SliceRecord> {
    let mut out = Vec::new();
    for g in &gpus.gpus {
        let cores = g
            .local_cpus
            .as_deref()
            .and_then(|l| tessera_host::parse_cpulist(l).ok())
            .and_then(|cpus: BTreeSet<u32>| topology.slurm_cores(&cpus));
        let minor = g.minor.unwrap_or(g.index);
        if g.mig {
            for i in &g.instances {
                let Some(uuid) = &i.mig_uuid else { continue };
                out.push(SliceRecord {
                    gpu: g.index,
                    gpu_minor: minor,
                    gpu_uuid: g.uuid.clone(),
                    profile: i.profile.clone(),
                    start: i.start,
                    size: i.size,
                    mig_uuid: Some(uuid.clone()),
                    gi_caps_minor: i.gi_caps_minor,
                    ci_caps_minor: i.ci_caps_minor,
                    numa_node: g.numa_node,
                    cores: cores.clone(),
                });
            }
        } else {
            out.push(SliceRecord {
                gpu: g.index,
                gpu_minor: minor,
                gpu_uuid: g.uuid.clone(),
                profile: whole_gpu_type(g.model.as_deref().unwrap_or(&g.name)),
                start: 0,
                size: 0,
                mig_uuid: None,
                gi_caps_minor: None,
                ci_caps_minor: None,
                numa_node: g.numa_node,
                cores,
            });
        }
    }
    out.sort_by_key(|r| (r.gpu, r.start));
    out
}

#[cfg(test)]
mod tests {
    use tessera_daemon::wire::{GpuInfo, InstanceInfo};

    use super::*;

    fn inst(profile: &str, start: u8, uuid: Option<&str>, ci: Option<u32>) -> InstanceInfo {
        InstanceInfo {
            gpu_instance_id: Some(1),
            profile: profile.into(),
            profile_id: 0,
            start,
            size: 1,
            jobs: Vec::new(),
            occupants: Vec::new(),
            mig_uuid: uuid.map(Into::into),
            healthy: true,
            gi_caps_minor: ci.map(|c| c - 1),
            ci_caps_minor: ci,
        }
    }

    fn gpu(index: u32, mig: bool, instances: Vec<InstanceInfo>) -> GpuInfo {
        GpuInfo {
            index,
            name: "NVIDIA H100 80GB HBM3".into(),
            uuid: format!("GPU-{index}"),
            model: Some("H100-80GB".into()),
            numa_node: Some(index),
            minor: Some(index + 4),
            local_cpus: Some(if index == 0 { "0-1".into() } else { "2-3".into() }),
            mig,
            drained: None,
            health: "healthy".into(),
            instances,
        }
    }

    #[test]
    fn one_record_per_cuda_device_and_per_whole_gpu_with_its_cores() {
        let list = GpuList {
            backend: "sim".into(),
            gpus: vec![
                gpu(
                    0,
                    true,
                    vec![
                        inst("3g.40gb", 4, Some("MIG-b"), Some(22)),
                        inst("1g.10gb", 0, Some("MIG-a"), Some(67)),
                        // A GPU instance with no (or several) compute instances is no CUDA device.
                        inst("2g.20gb", 2, None, None),
                    ],
                ),
                gpu(1, false, vec![inst("7g.80gb (whole GPU)", 0, None, None)]),
            ],
        };
        // Two CPUs per core: Slurm's cores 0 and 1.
        let topo = CoreTopology::from_cpus(&[(0, 0, 0), (1, 0, 0), (2, 0, 1), (3, 0, 1)]);
        let got = slice_records(&list, &topo);
        let seen: Vec<String> = got
            .iter()
            .map(|r| {
                format!(
                    "GPU {} (minor {}) {}@{} {:?} cap {:?} cores {:?}",
                    r.gpu, r.gpu_minor, r.profile, r.start, r.mig_uuid, r.ci_caps_minor, r.cores
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                r#"GPU 0 (minor 4) 1g.10gb@0 Some("MIG-a") cap Some(67) cores Some("0")"#,
                r#"GPU 0 (minor 4) 3g.40gb@4 Some("MIG-b") cap Some(22) cores Some("0")"#,
                r#"GPU 1 (minor 5) h100-80gb@0 None cap None cores Some("1")"#,
            ]
        );
    }
}
