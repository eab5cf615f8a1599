//! What the examples share: where the openb trace is.

use std::path::{Path, PathBuf};

/// `$OPENB_PODS`, else `shared/traces/alibaba-gpu-v2023/openb_pod_list_default.csv` in the
/// checkout or next to it.
pub fn openb_default() -> PathBuf {
    if let Some(p) = std::env::var_os("OPENB_PODS") {
        return p.into();
    }
    let rel = "shared/traces/alibaba-gpu-v2023/openb_pod_list_default.csv";
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let near = here.join("../..").join(rel);
    if near.exists() { near } else { here.join("../../..").join(rel) }
}
