//! Resetting a GPU on real hardware: NVML has no public reset call, so it is
//! `nvidia-smi --gpu-reset -i N` (what the daemon ran before and mig-parted runs), its refusals
//! turned into [`BackendError`]s with nvidia-smi's own words. The program is `nvidia-smi` from
//! `PATH` unless [`ENV_NVIDIA_SMI`] names another (tests point it at a stand-in script).

use std::ffi::OsString;
use std::process::Command;

use crate::backend::{BackendError, GpuRef};

/// The environment variable naming the `nvidia-smi` program to reset GPUs with.
pub const ENV_NVIDIA_SMI: &str = "TESSERA_NVIDIA_SMI";

/// The `nvidia-smi` to run: [`ENV_NVIDIA_SMI`] when set and not empty, else `nvidia-smi`.
pub(crate) fn nvidia_smi_program() -> OsString {
    match std::env::var_os(ENV_NVIDIA_SMI) {
        Some(p) if !p.is_empty() => p,
        _ => OsString::from("nvidia-smi"),
    }
}

/// How nvidia-smi refused a reset, read from what it printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// "… is currently in use by another process" / "In use by another client".
    InUse,
    /// "Not Supported" / "Reset couldn't run …" (a passthrough VM, the primary GPU).
    NotSupported,
    Other,
}

fn classify(text: &str) -> Refusal {
    let t = text.to_ascii_lowercase();
    if t.contains("in use") || t.contains("being used") {
        Refusal::InUse
    } else if t.contains("not supported") || t.contains("couldn't run") || t.contains("could not run") {
        Refusal::NotSupported
    } else {
        Refusal::Other
    }
}

/// Run `PROGRAM --gpu-reset -i INDEX`; a refusal is `InUse`, `NotSupported` or `Driver`, each
/// with what nvidia-smi printed.
pub(crate) fn reset_with_nvidia_smi(program: &OsString, gpu: &GpuRef) -> Result<(), BackendError> {
    let shown = format!("{} --gpu-reset -i {}", program.to_string_lossy(), gpu.index);
    let out = Command::new(program)
        .args(["--gpu-reset", "-i", &gpu.index.to_string()])
        .output()
        .map_err(|source| BackendError::Io { path: std::path::PathBuf::from(program), source })?;
    if out.status.success() {
        return Ok(());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let said: Vec<&str> =
        [stdout.trim(), stderr.trim()].into_iter().filter(|s| !s.is_empty()).flat_map(str::lines).collect();
    let said = said.iter().map(|l| l.trim()).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ");
    let said = if said.is_empty() { format!("it exited with {}", out.status) } else { said };
    Err(match classify(&said) {
        Refusal::InUse => BackendError::InUse { gpu: gpu.clone(), what: format!("{shown} refused: {said}") },
        Refusal::NotSupported => {
            BackendError::NotSupported { gpu: gpu.clone(), what: format!("{shown} refused: {said}") }
        }
        Refusal::Other => BackendError::Driver {
            context: format!("{gpu}: resetting it"),
            function: shown,
            code: out.status.code().map_or_else(|| "a signal".to_string(), |c| format!("exit status {c}")),
            message: said,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvidia_smi_refusals_are_classified() {
        // nvidia-smi's texts, from NVIDIA's MIG user guide and its reset help.
        let cases = [
            (
                "GPU 00000000:07:00.0 is currently in use by another process.\n1 device is currently being used by \
                 one or more other processes",
                Refusal::InUse,
            ),
            ("In use by another client", Refusal::InUse),
            ("Reset couldn't run because GPU 00000000:00:03.0 is the primary GPU.", Refusal::NotSupported),
            ("GPU 00000000:00:03.0: Not Supported", Refusal::NotSupported),
            ("Insufficient Permissions", Refusal::Other),
        ];
        for (text, want) in cases {
            assert_eq!(classify(text), want, "{text}");
        }
    }

    #[test]
    fn a_missing_program_names_it() {
        let e = reset_with_nvidia_smi(&OsString::from("/nonexistent/nvidia-smi"), &GpuRef::index(3)).unwrap_err();
        assert_eq!(e.kind(), "io");
        assert!(e.to_string().contains("/nonexistent/nvidia-smi"), "{e}");
    }

    #[test]
    fn a_refusal_keeps_what_nvidia_smi_said() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("nvidia-smi");
        std::fs::write(&script, "#!/bin/sh\necho \"GPU 00000000:18:00.0: In use by another client\"\nexit 3\n")
            .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let gpu = GpuRef { index: 0, uuid: Some("GPU-x".into()) };
        let e = reset_with_nvidia_smi(&script.into_os_string(), &gpu).unwrap_err();
        assert_eq!(e.kind(), "in_use");
        assert!(e.to_string().contains("In use by another client"), "{e}");
        assert!(e.to_string().contains("--gpu-reset -i 0"), "{e}");
    }
}
