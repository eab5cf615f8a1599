//! NVML return codes: their names (as `TESSERA_STANDIN_FAULTS` writes them), the strings
//! `nvmlErrorString` returns, and the mapping from the simulated node's [`BackendError`].
//!
//! The strings are those of the real `libnvidia-ml.so` where a public capture shows them
//! (`nvidia-smi` and go-nvml print `nvmlErrorString` verbatim: "Insufficient Resources",
//! "In use by another client", "Driver/library version mismatch", "GPU access blocked by the
//! operating system", "Argument version mismatch"; NVIDIA's DCGM `nvml_error_strings.h` lists the
//! same table for codes 0–23). Codes 21, 22, 24 and 26–30 were not seen in a capture; their text
//! follows the wording of nvml.h and NVIDIA's Python bindings.

use std::ffi::CStr;

use nvml_wrapper_sys::bindings::*;
use tessera_gpu::BackendError;

/// An NVML return code (`nvmlReturn_t`).
pub type Ret = nvmlReturn_t;

/// The result of an NVML-semantics operation: the value, or the code the C function returns.
pub type NvmlResult<T> = Result<T, Ret>;

pub const SUCCESS: Ret = nvmlReturn_enum_NVML_SUCCESS;
pub const UNINITIALIZED: Ret = nvmlReturn_enum_NVML_ERROR_UNINITIALIZED;
pub const INVALID_ARGUMENT: Ret = nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT;
pub const NOT_SUPPORTED: Ret = nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED;
pub const NO_PERMISSION: Ret = nvmlReturn_enum_NVML_ERROR_NO_PERMISSION;
pub const NOT_FOUND: Ret = nvmlReturn_enum_NVML_ERROR_NOT_FOUND;
pub const INSUFFICIENT_SIZE: Ret = nvmlReturn_enum_NVML_ERROR_INSUFFICIENT_SIZE;
pub const TIMEOUT: Ret = nvmlReturn_enum_NVML_ERROR_TIMEOUT;
pub const GPU_IS_LOST: Ret = nvmlReturn_enum_NVML_ERROR_GPU_IS_LOST;
pub const IN_USE: Ret = nvmlReturn_enum_NVML_ERROR_IN_USE;
pub const RESET_REQUIRED: Ret = nvmlReturn_enum_NVML_ERROR_RESET_REQUIRED;
pub const INSUFFICIENT_RESOURCES: Ret = nvmlReturn_enum_NVML_ERROR_INSUFFICIENT_RESOURCES;
pub const ARGUMENT_VERSION_MISMATCH: Ret = nvmlReturn_enum_NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
pub const UNKNOWN: Ret = nvmlReturn_enum_NVML_ERROR_UNKNOWN;

/// Every return code: value, name without the `NVML_ERROR_` prefix, and `nvmlErrorString` text.
pub const CODES: &[(Ret, &str, &CStr)] = &[
    (nvmlReturn_enum_NVML_SUCCESS, "SUCCESS", c"Success"),
    (nvmlReturn_enum_NVML_ERROR_UNINITIALIZED, "UNINITIALIZED", c"Uninitialized"),
    (nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT, "INVALID_ARGUMENT", c"Invalid Argument"),
    (nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED, "NOT_SUPPORTED", c"Not Supported"),
    (nvmlReturn_enum_NVML_ERROR_NO_PERMISSION, "NO_PERMISSION", c"Insufficient Permissions"),
    (nvmlReturn_enum_NVML_ERROR_ALREADY_INITIALIZED, "ALREADY_INITIALIZED", c"Already Initialized"),
    (nvmlReturn_enum_NVML_ERROR_NOT_FOUND, "NOT_FOUND", c"Not Found"),
    (nvmlReturn_enum_NVML_ERROR_INSUFFICIENT_SIZE, "INSUFFICIENT_SIZE", c"Insufficient Size"),
    (nvmlReturn_enum_NVML_ERROR_INSUFFICIENT_POWER, "INSUFFICIENT_POWER", c"Insufficient External Power"),
    (nvmlReturn_enum_NVML_ERROR_DRIVER_NOT_LOADED, "DRIVER_NOT_LOADED", c"Driver Not Loaded"),
    (nvmlReturn_enum_NVML_ERROR_TIMEOUT, "TIMEOUT", c"Timeout"),
    (nvmlReturn_enum_NVML_ERROR_IRQ_ISSUE, "IRQ_ISSUE", c"Interrupt Request Issue"),
    (nvmlReturn_enum_NVML_ERROR_LIBRARY_NOT_FOUND, "LIBRARY_NOT_FOUND", c"NVML Shared Library Not Found"),
    (nvmlReturn_enum_NVML_ERROR_FUNCTION_NOT_FOUND, "FUNCTION_NOT_FOUND", c"Function Not Found"),
    (nvmlReturn_enum_NVML_ERROR_CORRUPTED_INFOROM, "CORRUPTED_INFOROM", c"Corrupted infoROM"),
    (nvmlReturn_enum_NVML_ERROR_GPU_IS_LOST, "GPU_IS_LOST", c"GPU is lost"),
    (nvmlReturn_enum_NVML_ERROR_RESET_REQUIRED, "RESET_REQUIRED", c"GPU requires reset"),
    (nvmlReturn_enum_NVML_ERROR_OPERATING_SYSTEM, "OPERATING_SYSTEM", c"GPU access blocked by the operating system"),
    (nvmlReturn_enum_NVML_ERROR_LIB_RM_VERSION_MISMATCH, "LIB_RM_VERSION_MISMATCH", c"Driver/library version mismatch"),
    (nvmlReturn_enum_NVML_ERROR_IN_USE, "IN_USE", c"In use by another client"),
    (nvmlReturn_enum_NVML_ERROR_MEMORY, "MEMORY", c"Insufficient Memory"),
    (nvmlReturn_enum_NVML_ERROR_NO_DATA, "NO_DATA", c"No data"),
    (
        nvmlReturn_enum_NVML_ERROR_VGPU_ECC_NOT_SUPPORTED,
        "VGPU_ECC_NOT_SUPPORTED",
        c"The requested vgpu operation is not available on target device, because ECC is enabled",
    ),
    (nvmlReturn_enum_NVML_ERROR_INSUFFICIENT_RESOURCES, "INSUFFICIENT_RESOURCES", c"Insufficient Resources"),
    (nvmlReturn_enum_NVML_ERROR_FREQ_NOT_SUPPORTED, "FREQ_NOT_SUPPORTED", c"Frequency not supported"),
    (nvmlReturn_enum_NVML_ERROR_ARGUMENT_VERSION_MISMATCH, "ARGUMENT_VERSION_MISMATCH", c"Argument version mismatch"),
    (nvmlReturn_enum_NVML_ERROR_DEPRECATED, "DEPRECATED", c"Deprecated"),
    (nvmlReturn_enum_NVML_ERROR_NOT_READY, "NOT_READY", c"Not Ready"),
    (nvmlReturn_enum_NVML_ERROR_GPU_NOT_FOUND, "GPU_NOT_FOUND", c"GPU not found"),
    (nvmlReturn_enum_NVML_ERROR_INVALID_STATE, "INVALID_STATE", c"Invalid state"),
    (nvmlReturn_enum_NVML_ERROR_RESET_TYPE_NOT_SUPPORTED, "RESET_TYPE_NOT_SUPPORTED", c"Reset type not supported"),
    (nvmlReturn_enum_NVML_ERROR_UNKNOWN, "UNKNOWN", c"Unknown Error"),
];

/// `nvmlErrorString`: the text of a code; "Unknown Error" for a code NVML does not define.
pub fn error_string(ret: Ret) -> &'static CStr {
    CODES.iter().find(|(code, _, _)| *code == ret).map_or(c"Unknown Error", |(_, _, text)| *text)
}

/// The name of a code without prefix (`IN_USE`), `None` for a code NVML does not define.
pub fn code_name(ret: Ret) -> Option<&'static str> {
    CODES.iter().find(|(code, _, _)| *code == ret).map(|(_, name, _)| *name)
}

/// The code named `name`: `IN_USE`, `ERROR_IN_USE` or `NVML_ERROR_IN_USE`, any case.
/// `SUCCESS` is not an error and is refused.
pub fn code_by_name(name: &str) -> Option<Ret> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("NVML_").unwrap_or(&upper);
    let bare = bare.strip_prefix("ERROR_").unwrap_or(bare);
    CODES.iter().find(|(code, n, _)| *n == bare && *code != SUCCESS).map(|(code, _, _)| *code)
}

/// The NVML code for a simulated-node error, by [`BackendError::kind`].
pub fn from_backend(e: &BackendError) -> Ret {
    match e.kind() {
        "insufficient_resources" => INSUFFICIENT_RESOURCES,
        "in_use" => IN_USE,
        "not_found" => NOT_FOUND,
        "not_supported" => NOT_SUPPORTED,
        "invalid_argument" => INVALID_ARGUMENT,
        "no_permission" => NO_PERMISSION,
        "gpu_lost" => GPU_IS_LOST,
        _ => UNKNOWN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_gpu::GpuRef;

    #[test]
    fn strings_of_the_common_codes() {
        assert_eq!(error_string(SUCCESS), c"Success");
        assert_eq!(error_string(UNINITIALIZED), c"Uninitialized");
        assert_eq!(error_string(NO_PERMISSION), c"Insufficient Permissions");
        assert_eq!(error_string(INSUFFICIENT_RESOURCES), c"Insufficient Resources");
        assert_eq!(error_string(IN_USE), c"In use by another client");
        assert_eq!(error_string(ARGUMENT_VERSION_MISMATCH), c"Argument version mismatch");
        assert_eq!(error_string(UNKNOWN), c"Unknown Error");
        assert_eq!(error_string(12345), c"Unknown Error");
    }

    #[test]
    fn every_code_of_the_header_has_a_distinct_entry() {
        let mut codes: Vec<Ret> = CODES.iter().map(|c| c.0).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), CODES.len());
        // 0..=30 and 999, as in nvml.h for NVML_API_VERSION 13.
        assert_eq!(codes.len(), 32);
        assert!((0..=30).all(|c| codes.contains(&c)));
        assert!(CODES.iter().all(|(_, _, s)| !s.to_bytes().is_empty()));
    }

    #[test]
    fn names_round_trip() {
        for &(code, name, _) in CODES {
            assert_eq!(code_name(code), Some(name));
            if code != SUCCESS {
                assert_eq!(code_by_name(name), Some(code), "{name}");
            }
        }
        assert_eq!(code_by_name("nvml_error_in_use"), Some(IN_USE));
        assert_eq!(code_by_name("ERROR_TIMEOUT"), Some(TIMEOUT));
        assert_eq!(code_by_name("SUCCESS"), None);
        assert_eq!(code_by_name("BOGUS"), None);
    }

    #[test]
    fn backend_errors_map_by_kind() {
        let gpu = GpuRef::index(0);
        let cases = [
            (BackendError::NoPermission { op: "x".into() }, NO_PERMISSION),
            (BackendError::NotSupported { gpu: gpu.clone(), what: "x".into() }, NOT_SUPPORTED),
            (
                BackendError::InsufficientResources {
                    gpu: gpu.clone(),
                    profile: "p".into(),
                    placement: None,
                    detail: "d".into(),
                },
                INSUFFICIENT_RESOURCES,
            ),
            (BackendError::InUse { gpu: gpu.clone(), what: "x".into() }, IN_USE),
            (BackendError::NotFound { gpu: gpu.clone(), what: "x".into() }, NOT_FOUND),
            (BackendError::InvalidArgument { what: "x".into() }, INVALID_ARGUMENT),
            (BackendError::GpuLost { gpu }, GPU_IS_LOST),
            (BackendError::State { path: "/x".into(), detail: "d".into() }, UNKNOWN),
        ];
        for (e, want) in cases {
            assert_eq!(from_backend(&e), want, "{e}");
        }
    }
}
