//! Job requests: resolution to profiles on every kind of model, validation (the error names the
//! field), and the JSON form the daemon's API uses.

mod common;

use common::{model, profile, req};
use tessera_sched::{GpuRequest, JobRequest, NumaPolicy, PendingReason, RequestError, Sharing};

fn names(m: &str, r: &JobRequest) -> Vec<String> {
    let m = model(m);
    r.resolve(m).unwrap().iter().map(|w| m.profile_by_id(w.profile_id).unwrap().name.clone()).collect()
}

const GIB: u64 = 1024;

#[test]
fn resolution_table() {
    use GpuRequest::*;
    let cases: Vec<(&str, GpuRequest, &[&str])> = vec![
        // Memory: the smallest profile with at least that many MiB (exact catalog figures).
        ("H100-80GB", Memory { mib: 9984 }, &["1g.10gb"]),
        ("H100-80GB", Memory { mib: 10 * GIB }, &["1g.20gb"]), // 1g.10gb has 9,984 MiB < 10 GiB
        ("H100-80GB", Memory { mib: 30_000 }, &["3g.40gb"]),
        ("H100-80GB", Memory { mib: 41_000 }, &["7g.80gb"]),
        ("A100-40GB", Memory { mib: 4 * GIB }, &["1g.5gb"]),
        ("A100-40GB", Memory { mib: 5 * GIB }, &["1g.10gb"]),
        ("A100-80GB", Memory { mib: 10 * GIB }, &["1g.20gb"]),
        ("A30-24GB", Memory { mib: 8 * GIB }, &["2g.12gb"]),
        ("H200-141GB", Memory { mib: 16 * GIB }, &["1g.18gb"]),
        ("RTX-PRO-6000", Memory { mib: 30 * GIB }, &["2g.48gb"]),
        // No catalog figure: estimated from the model's name (34gb = 34,000 MiB).
        ("B300-269GB", Memory { mib: 30_000 }, &["1g.34gb"]),
        // Compute slices: the smallest profile with that many, fewest memory slices.
        ("A100-40GB", ComputeSlices { slices: 1 }, &["1g.5gb"]),
        ("A100-40GB", ComputeSlices { slices: 3 }, &["3g.20gb"]),
        ("A100-40GB", ComputeSlices { slices: 4 }, &["4g.20gb"]),
        ("A100-40GB", ComputeSlices { slices: 5 }, &["7g.40gb"]),
        ("H100-80GB", ComputeSlices { slices: 2 }, &["2g.20gb"]),
        ("A30-24GB", ComputeSlices { slices: 3 }, &["4g.24gb"]),
        ("RTX-PRO-6000", ComputeSlices { slices: 1 }, &["1g.24gb"]),
        // Whole GPU: the full profile.
        ("A100-40GB", WholeGpu, &["7g.40gb"]),
        ("H100-80GB", WholeGpu, &["7g.80gb"]),
        ("H200-141GB", WholeGpu, &["7g.141gb"]),
        ("A30-24GB", WholeGpu, &["4g.24gb"]),
        ("RTX-PRO-6000", WholeGpu, &["4g.96gb"]),
        // Explicit profiles, any spelling NVIDIA's tools accept.
        ("H100-80GB", Profile { name: "3g.40gb".into() }, &["3g.40gb"]),
        ("H100-80GB", Profile { name: "MIG 1G.10GB+ME".into() }, &["1g.10gb+me"]),
        ("H100-80GB", Profile { name: "9".into() }, &["3g.40gb"]),
        // Several instances for one rank.
        ("H100-80GB", Instances(vec![profile("3g.40gb"), ComputeSlices { slices: 2 }]), &["3g.40gb", "2g.20gb"]),
    ];
    for (m, gpu, want) in cases {
        let r = req(gpu.clone());
        assert_eq!(names(m, &r), want, "{m} {gpu:?}");
    }
}

#[test]
fn resolution_errors_name_the_model_and_the_closest_profiles() {
    let e = req(GpuRequest::Memory { mib: 200 * GIB }).resolve(model("A100-80GB")).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, RequestError::NoProfileFits { .. }), "{e:?}");
    assert!(text.contains("A100-80GB") && text.contains("200 GiB") && text.contains("7g.80gb"), "{text}");

    let e = req(profile("3g.41gb")).resolve(model("H100-80GB")).unwrap_err();
    assert!(e.to_string().contains("did you mean") && e.to_string().contains("3g.40gb"), "{e}");

    let e = req(GpuRequest::ComputeSlices { slices: 8 }).resolve(model("H100-80GB")).unwrap_err();
    assert!(e.to_string().contains("8 compute slices"), "{e}");

    let e = req(GpuRequest::Instances(vec![GpuRequest::WholeGpu, profile("1g.10gb")])).resolve(model("H100-80GB"));
    assert!(matches!(e, Err(RequestError::RankDoesNotFit { .. })), "{e:?}");

    // gpu_numa_local needs a profile that fits inside one GPU NUMA node.
    let mut r = req(profile("7g.80gb"));
    r.ranks = 2;
    r.gpu_numa_local = true;
    assert!(matches!(r.resolve(model("H100-80GB")), Err(RequestError::NumaLocal { .. })));
    r.gpu = profile("3g.40gb");
    assert!(r.resolve(model("H100-80GB")).is_ok());
    // …and a model with GPU NUMA nodes.
    r.gpu = profile("1g.24gb");
    assert!(matches!(r.resolve(model("RTX-PRO-6000")), Err(RequestError::NumaLocal { .. })));
}

#[test]
fn mps_pinned_memory_must_fit_the_profile() {
    let mut r = req(GpuRequest::ComputeSlices { slices: 1 });
    r.sharing = Sharing::Mps { active_thread_pct: 50, pinned_mem_mib: Some(15_000) };
    assert_eq!(names("H100-80GB", &r), ["1g.20gb"]);
    r.gpu = profile("1g.10gb");
    assert!(r.resolve(model("H100-80GB")).is_err());
}

#[test]
fn validation_names_the_field() {
    let base = req(GpuRequest::WholeGpu);
    type Edit = fn(&mut JobRequest);
    let cases: Vec<(Edit, &str)> = vec![
        (|r| r.ranks = 0, "ranks"),
        (|r| r.ranks = 5000, "ranks"),
        (|r| r.gpus_per_rank = 0, "gpus_per_rank"),
        (
            |r| {
                r.gpu = profile("3g.40gb");
                r.gpus_per_rank = 2;
            },
            "gpus_per_rank",
        ),
        (
            |r| {
                r.ranks = 1000;
                r.gpus_per_rank = 8;
            },
            "gpus_per_rank",
        ),
        (
            |r| {
                r.gpu = profile("1g.10gb");
                r.gpu_numa_local = true;
                r.ranks = 3;
            },
            "gpu_numa_local",
        ),
        (
            |r| {
                r.gpu = GpuRequest::Instances(vec![profile("1g.10gb")]);
                r.gpu_numa_local = true;
                r.ranks = 2;
            },
            "gpu_numa_local",
        ),
        (|r| r.sharing = Sharing::Mps { active_thread_pct: 0, pinned_mem_mib: None }, "sharing.mps.active_thread_pct"),
        (
            |r| r.sharing = Sharing::Mps { active_thread_pct: 101, pinned_mem_mib: None },
            "sharing.mps.active_thread_pct",
        ),
        (|r| r.sharing = Sharing::Mps { active_thread_pct: 50, pinned_mem_mib: Some(0) }, "sharing.mps.pinned_mem_mib"),
        (
            |r| {
                r.gpu = GpuRequest::Instances(vec![profile("1g.10gb"), profile("1g.10gb")]);
                r.sharing = Sharing::Mps { active_thread_pct: 50, pinned_mem_mib: None };
            },
            "sharing",
        ),
        (|r| r.gpu = GpuRequest::Instances(vec![]), "gpu.instances"),
        (|r| r.gpu = GpuRequest::Instances(vec![GpuRequest::Instances(vec![GpuRequest::WholeGpu])]), "gpu.instances"),
        (|r| r.gpu = GpuRequest::Memory { mib: 0 }, "gpu.memory.mib"),
        (|r| r.gpu = GpuRequest::ComputeSlices { slices: 0 }, "gpu.compute_slices.slices"),
        (|r| r.gpu = profile(" "), "gpu.profile.name"),
        (|r| r.tenant = String::new(), "tenant"),
        (|r| r.time_limit_ms = Some(0), "time_limit_ms"),
        (|r| r.runtime_estimate_ms = Some(0), "runtime_estimate_ms"),
    ];
    assert!(base.validate().is_ok());
    for (edit, field) in cases {
        let mut r = base.clone();
        edit(&mut r);
        let e = r.validate().expect_err(field);
        assert_eq!(e.field(), field, "{e}");
        assert!(e.to_string().contains(field), "{e}");
    }
}

#[test]
fn json_form() {
    let r: JobRequest = serde_json::from_str(
        r#"{"gpu": {"memory": {"mib": 10240}}, "ranks": 2, "sharing": {"mps": {"active_thread_pct": 50}},
            "cpus": 4, "mem_mib": 8192, "numa": "any", "tenant": "ml-team", "priority": 5,
            "runtime_estimate_ms": 60000}"#,
    )
    .unwrap();
    assert_eq!(r.gpu, GpuRequest::Memory { mib: 10240 });
    assert_eq!(r.sharing, Sharing::Mps { active_thread_pct: 50, pinned_mem_mib: None });
    assert_eq!(r.numa, NumaPolicy::Any);
    assert_eq!(r.time_limit_ms, None);
    let back: JobRequest = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(back, r);

    let minimal: JobRequest = serde_json::from_str(r#"{"gpu": "whole_gpu"}"#).unwrap();
    assert_eq!(minimal, JobRequest::new(GpuRequest::WholeGpu));
    let list: JobRequest = serde_json::from_str(
        r#"{"gpu": {"instances": [{"profile": {"name": "3g.40gb"}}, {"compute_slices": {"slices": 1}}]}}"#,
    )
    .unwrap();
    assert_eq!(list.instances_per_rank(), 2);

    assert!(serde_json::from_str::<JobRequest>(r#"{"gpu": "whole_gpu", "gpus": 2}"#).is_err());
    assert!(serde_json::from_str::<JobRequest>(r#"{"gpu": {"memory": {"mib": 1, "extra": 2}}}"#).is_err());
    assert_eq!(serde_json::to_string(&PendingReason::Fragmentation).unwrap(), "\"fragmentation\"");
    assert_eq!(PendingReason::Reconfiguring.to_string(), "reconfiguring");
}

#[test]
fn expected_duration_is_the_estimate_capped_by_the_limit() {
    let mut r = req(GpuRequest::WholeGpu);
    assert_eq!(r.expected_duration_ms(), None);
    r.time_limit_ms = Some(100);
    assert_eq!(r.expected_duration_ms(), Some(100));
    r.runtime_estimate_ms = Some(50);
    assert_eq!(r.expected_duration_ms(), Some(50));
    r.runtime_estimate_ms = Some(500);
    assert_eq!(r.expected_duration_ms(), Some(100));
}
