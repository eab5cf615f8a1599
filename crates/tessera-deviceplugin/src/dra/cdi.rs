//! The CDI specification of one prepared claim: one file per claim in the CDI directory
//! (`<kind with / as ->_<claim uid>.json`), written atomically once its devices are held and
//! removed on unprepare, so the container runtime finds exactly the prepared claims.
//!
//! Each device of the claim is a CDI device `<claim uid>-<device name>` with its device nodes
//! (its GPU's, and with MIG the GPU and compute instances' capability nodes, as the device
//! plugin gives them). The spec's common edits, which every container given any device of the
//! claim receives, carry the control nodes every CUDA container needs,
//! `NVIDIA_VISIBLE_DEVICES` and `CUDA_VISIBLE_DEVICES` naming the claim's MIG devices (or GPUs)
//! by UUID in allocation order (per-device variables would overwrite each other in a container
//! given several), and with MPS the claim's control daemon's pipe directory at CUDA's default
//! `/tmp/nvidia-mps` and its own `/dev/shm`.

use std::path::{Path, PathBuf};

use serde::Serialize;
use tessera_host::files::{WriteOptions, write_atomic};
use tessera_kube_core::allocation::{VISIBLE_DEVICES_ENV, control_device_nodes};
use tessera_kube_core::{CDI_VERSION, CdiDeviceNode, DeviceNode};

/// Where a claim's MPS pipe directory is mounted in its containers (CUDA's default).
pub const MPS_PIPE_IN_CONTAINER: &str = "/tmp/nvidia-mps";

/// A CDI specification with mounts (the device plugin's spec has none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimSpec {
    pub cdi_version: String,
    pub kind: String,
    pub devices: Vec<SpecDevice>,
    pub container_edits: Edits,
}

/// One CDI device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecDevice {
    pub name: String,
    pub container_edits: Edits,
}

/// CDI container edits.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Edits {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub device_nodes: Vec<CdiDeviceNode>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<CdiMount>,
}

/// A CDI bind mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CdiMount {
    pub host_path: String,
    pub container_path: String,
    pub options: Vec<String>,
}

/// One held device of the claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldDevice {
    /// The published device name.
    pub device: String,
    /// Its MIG device's UUID, or its GPU's.
    pub uuid: String,
    pub nodes: Vec<DeviceNode>,
}

/// The host directories of a claim's MPS control daemon its containers need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpsMounts {
    pub pipe_dir: PathBuf,
    pub shm_dir: PathBuf,
}

/// The CDI device name of `device` in claim `uid`.
pub fn cdi_device_name(uid: &str, device: &str) -> String {
    format!("{uid}-{device}")
}

/// The fully qualified CDI device ID the kubelet hands the runtime: `<kind>=<name>`.
pub fn qualified(kind: &str, name: &str) -> String {
    format!("{kind}={name}")
}

/// The claim's spec file name in the CDI directory.
pub fn spec_file_name(kind: &str, uid: &str) -> String {
    format!("{}_{uid}.json", kind.replace('/', "-"))
}

/// The claim's spec (see the module header).
pub fn claim_spec(kind: &str, uid: &str, devices: &[HeldDevice], mps: Option<&MpsMounts>) -> ClaimSpec {
    let uuids: Vec<&str> = devices.iter().map(|d| d.uuid.as_str()).collect();
    let list = uuids.join(",");
    let mut common = Edits {
        env: vec![format!("{VISIBLE_DEVICES_ENV}={list}"), format!("CUDA_VISIBLE_DEVICES={list}")],
        device_nodes: control_device_nodes().iter().map(Into::into).collect(),
        mounts: Vec::new(),
    };
    if let Some(m) = mps {
        common.env.push(format!("CUDA_MPS_PIPE_DIRECTORY={MPS_PIPE_IN_CONTAINER}"));
        common.mounts.push(bind(&m.pipe_dir, MPS_PIPE_IN_CONTAINER));
        common.mounts.push(bind(&m.shm_dir, "/dev/shm"));
    }
    ClaimSpec {
        cdi_version: CDI_VERSION.to_string(),
        kind: kind.to_string(),
        devices: devices
            .iter()
            .map(|d| SpecDevice {
                name: cdi_device_name(uid, &d.device),
                container_edits: Edits { device_nodes: d.nodes.iter().map(Into::into).collect(), ..Edits::default() },
            })
            .collect(),
        container_edits: common,
    }
}

fn bind(host: &Path, container: &str) -> CdiMount {
    CdiMount {
        host_path: host.display().to_string(),
        container_path: container.to_string(),
        options: ["rw", "nosuid", "nodev", "bind"].map(String::from).to_vec(),
    }
}

/// Writes `spec` to `dir/file` atomically (readable by the runtime: `0644`).
pub fn write_spec(dir: &Path, file: &str, spec: &ClaimSpec) -> Result<PathBuf, String> {
    let path = dir.join(file);
    let mut bytes = serde_json::to_vec_pretty(spec).map_err(|e| e.to_string())?;
    bytes.push(b'\n');
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    write_atomic(&path, &bytes, WriteOptions { mode: 0o644, sync: true })
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(path)
}

/// Removes a claim's spec file (already gone is fine).
pub fn remove_spec(path: &Path) -> Result<(), String> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("removing {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(path: &str) -> DeviceNode {
        DeviceNode { container_path: path.into(), host_path: path.into(), permissions: "rw".into() }
    }

    #[test]
    fn a_claims_spec_names_its_devices_and_their_uuids() {
        let devices = vec![
            HeldDevice {
                device: "gpu-0-1g-10gb-p3".into(),
                uuid: "MIG-a".into(),
                nodes: vec![dev("/dev/nvidia0"), dev("/dev/nvidia-caps/nvidia-cap21")],
            },
            HeldDevice { device: "gpu-1".into(), uuid: "GPU-b".into(), nodes: vec![dev("/dev/nvidia1")] },
        ];
        let mps = MpsMounts { pipe_dir: "/run/m/u1/pipe".into(), shm_dir: "/run/m/u1/shm".into() };
        let spec = claim_spec("gpu.tessera.dev/claim", "u1", &devices, Some(&mps));
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["kind"], "gpu.tessera.dev/claim");
        assert_eq!(json["devices"][0]["name"], "u1-gpu-0-1g-10gb-p3");
        assert_eq!(json["devices"][0]["containerEdits"]["deviceNodes"][1]["path"], "/dev/nvidia-caps/nvidia-cap21");
        assert_eq!(json["devices"][1]["name"], "u1-gpu-1");
        let env: Vec<&str> =
            json["containerEdits"]["env"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert!(env.contains(&"NVIDIA_VISIBLE_DEVICES=MIG-a,GPU-b"), "{env:?}");
        assert!(env.contains(&"CUDA_VISIBLE_DEVICES=MIG-a,GPU-b"), "{env:?}");
        assert!(env.contains(&"CUDA_MPS_PIPE_DIRECTORY=/tmp/nvidia-mps"), "{env:?}");
        assert_eq!(json["containerEdits"]["mounts"][0]["hostPath"], "/run/m/u1/pipe");
        assert_eq!(json["containerEdits"]["mounts"][1]["containerPath"], "/dev/shm");
        assert_eq!(qualified("gpu.tessera.dev/claim", "u1-gpu-1"), "gpu.tessera.dev/claim=u1-gpu-1");
        assert_eq!(spec_file_name("gpu.tessera.dev/claim", "u1"), "gpu.tessera.dev-claim_u1.json");
    }
}
