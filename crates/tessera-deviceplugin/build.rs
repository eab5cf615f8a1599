//! Generates the kubelet's device plugin API (v1beta1), PodResources API (v1), DRA plugin API
//! (v1 and v1beta1), DRA resource health API (v1alpha1 and v1) and plugin watcher registration API
//! (pluginregistration v1) from `proto/` with protox, a protobuf compiler in Rust, so building
//! needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/deviceplugin/v1beta1/api.proto",
        "proto/podresources/v1/api.proto",
        "proto/dra/v1/api.proto",
        "proto/dra/v1beta1/api.proto",
        "proto/dra-health/v1alpha1/api.proto",
        "proto/pluginregistration/v1/api.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(descriptors)?;
    // DRA resource health v1: package `v1` like PodResources v1, so generated into a directory
    // of its own (both would be `v1.rs`).
    let health_v1 = "proto/dra-health/v1/api.proto";
    println!("cargo:rerun-if-changed={health_v1}");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("dra_health_v1");
    std::fs::create_dir_all(&out)?;
    let descriptors = protox::compile([health_v1], ["proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(true).out_dir(out).compile_fds(descriptors)?;
    Ok(())
}
