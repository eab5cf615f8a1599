//! A test-only stand-in for `libnvidia-ml.so`: NVML's C ABI over Tessera's simulated GPU node
//! ([`tessera_gpu::SimBackend`]), so the NVML backend can be driven through the same `dlopen`
//! path as on a real machine, on one without GPUs (NVIDIA's DRA driver tests its NVML path
//! against a CPU-only mock NVML the same way).
//!
//! Built as a `cdylib` (`target/<profile>/libtessera_nvml_standin.so`; [`library_path`] finds it)
//! and an `rlib` (for [`library_path`] and the safe layers' unit tests).
//!
//! * [`ffi`]: the exported `nvml*` functions ([`ffi::EXPORTS`] lists them), the only `unsafe` code;
//!   their types are checked at compile time against `nvml_wrapper_sys::bindings::NvmlLib`.
//! * [`node`]: NVML's semantics over the simulated node (global state, handle checks, errors).
//! * [`handles`]: stable opaque handles, validated by table look-up, never dereferenced.
//! * [`config`]: the `TESSERA_STANDIN_*` environment, read at `nvmlInit_v2`.
//! * [`faults`], [`xid`], [`activity`]: fault injection, Xid event injection, and what the GPUs
//!   do for GPM (`nvmlGpm*`: samples of a GPU or GPU instance, metrics between two samples).
//! * [`profiles`]: `NVML_GPU_INSTANCE_PROFILE_*` indices, names, driver gating, capacity.
//! * [`codes`]: return codes and `nvmlErrorString`'s texts.

pub mod activity;
pub mod codes;
pub mod config;
pub mod faults;
pub mod ffi;
pub mod handles;
pub mod node;
pub mod profiles;
pub mod xid;

use std::path::{Path, PathBuf};

/// The file name of the built library (`libtessera_nvml_standin.so` on Linux).
pub fn library_file_name() -> String {
    format!("{}tessera_nvml_standin{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX)
}

/// The built stand-in library, found from the running executable: a test binary lives in
/// `target/<profile>/deps/`, a binary in `target/<profile>/`; the library is in
/// `target/<profile>/` or `target/<profile>/deps/`. The newer of the two when both exist (Cargo
/// does not always copy a rebuilt library up from `deps/`). `None` when it has not been built:
/// run `cargo build -p tessera-nvml-standin`.
pub fn library_path() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    library_path_near(exe.parent()?)
}

/// [`library_path`] for an executable in `dir`.
pub fn library_path_near(dir: &Path) -> Option<PathBuf> {
    let profile_dir = if dir.file_name().is_some_and(|n| n == "deps" || n == "examples") { dir.parent()? } else { dir };
    let name = library_file_name();
    [profile_dir.join(&name), profile_dir.join("deps").join(&name)]
        .into_iter()
        .filter_map(|p| {
            let modified = std::fs::metadata(&p).ok()?.modified().ok()?;
            Some((modified, p))
        })
        .max_by_key(|(modified, _)| *modified)
        .map(|(_, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_library_next_to_the_profile_dir() {
        let dir = tempfile::tempdir().unwrap();
        let profile = dir.path().join("debug");
        let deps = profile.join("deps");
        std::fs::create_dir_all(&deps).unwrap();
        assert_eq!(library_path_near(&deps), None);
        let in_deps = deps.join(library_file_name());
        std::fs::write(&in_deps, b"x").unwrap();
        assert_eq!(library_path_near(&deps), Some(in_deps.clone()));
        assert_eq!(library_path_near(&profile), Some(in_deps.clone()));
        let top = profile.join(library_file_name());
        std::fs::write(&top, b"x").unwrap();
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        std::fs::File::options().write(true).open(&in_deps).unwrap().set_modified(old).unwrap();
        assert_eq!(library_path_near(&deps), Some(top), "the newer one wins");
    }
}
