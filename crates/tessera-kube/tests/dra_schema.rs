//! The ResourceSlices `tessera_kube_core::dra` publishes read as the official
//! `resource.k8s.io/v1` type (`k8s-openapi`, Kubernetes 1.34) with nothing lost or renamed: each
//! slice's JSON, read as `ResourceSliceSpec` and written back, is the same JSON. A field the core
//! spells differently from the API (or one the API lacks) would be dropped and fail here.

use k8s_openapi::api::resource::v1::ResourceSliceSpec;
use tessera_kube_core::dra::{DraGpu, DraInstance, DraPool, InstanceUse, SliceShape, resource_slices};
use tessera_mig::{Instance, catalog};

#[test]
fn every_slice_reads_back_as_the_official_type_unchanged() {
    let h100 = catalog().model("H100-80GB").unwrap();
    let a100 = catalog().model("A100-40GB").unwrap();
    let id = |m: &tessera_mig::GpuModel, name: &str| m.profiles.iter().find(|p| p.name == name).unwrap().id;
    let gpus = vec![
        DraGpu {
            index: 0,
            uuid: "GPU-0".into(),
            model: h100,
            numa_node: Some(0),
            mig_enabled: true,
            instances: Vec::new(),
        },
        DraGpu {
            index: 1,
            uuid: "GPU-1".into(),
            model: h100,
            numa_node: Some(1),
            mig_enabled: true,
            instances: vec![
                DraInstance {
                    instance: Instance::new(id(h100, "3g.40gb"), 4),
                    mig_uuid: Some("MIG-1".into()),
                    held_by: InstanceUse::Idle,
                },
                DraInstance {
                    instance: Instance::new(id(h100, "1g.10gb"), 0),
                    mig_uuid: Some("MIG-2".into()),
                    held_by: InstanceUse::Other,
                },
            ],
        },
        DraGpu {
            index: 2,
            uuid: "GPU-2".into(),
            model: a100,
            numa_node: None,
            mig_enabled: false,
            instances: Vec::new(),
        },
    ];
    for shape in [SliceShape::V1_34, SliceShape::V1_35] {
        let pool = DraPool { driver: "gpu.tessera.dev".into(), node_name: "node-a".into(), generation: 3, shape };
        let slices = resource_slices(&pool, &gpus).unwrap();
        assert!(!slices.is_empty());
        for (i, slice) in slices.iter().enumerate() {
            let ours = serde_json::to_value(&slice.spec).unwrap();
            let official: ResourceSliceSpec = serde_json::from_value(ours.clone())
                .unwrap_or_else(|e| panic!("{shape:?} slice {i} is not a ResourceSliceSpec: {e}"));
            let back = serde_json::to_value(&official).unwrap();
            assert_eq!(back, ours, "{shape:?} slice {i} changed when read as the official type");
        }
    }
}
