//! The DRA driver's API-server side (`resource.k8s.io/v1`): publishing the node's
//! ResourceSlices and reading the ResourceClaims the kubelet asks the driver to prepare.
//!
//! What the slices hold is decided in the pure [`tessera_kube_core::dra`]; this module talks to
//! the API server: [`run_slice_publisher`] keeps the node's pool in step with the GPUs, at a
//! bounded rate, in the slice shape the API server's version takes ([`slice_shape`]), and
//! [`claim_allocation`] reads a claim's allocation into [`tessera_kube_core::dra_claim`]'s plain
//! values. The kubelet gRPC side lives in `tessera-deviceplugin`.

mod claims;
mod slices;

pub use claims::{allocation_of, claim_allocation};
pub use slices::{PublishSettings, run_slice_publisher, slice_name};

use tessera_kube_core::dra::SliceShape;

/// The `metadata.uid` of Node `name`, for the slices' owner reference: `None` (logged) when it
/// cannot be read, and the slices are then published without an owner.
pub async fn node_uid(client: &kube::Client, name: &str) -> Option<String> {
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    match nodes.get(name).await {
        Ok(node) => node.metadata.uid,
        Err(e) => {
            tracing::warn!("kubernetes: reading Node {name}: {e}; its ResourceSlices are published without an owner");
            None
        }
    }
}

/// Why the API server's version takes no slice shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// `resource.k8s.io/v1` (and its `sharedCounters`) needs Kubernetes 1.34.
    #[error(
        "the API server is Kubernetes {version}; publishing ResourceSlices needs resource.k8s.io/v1 (1.34 or later)"
    )]
    TooOld { version: String },
    /// The version's major or minor is not a number.
    #[error("the API server's version '{version}' is not major.minor numbers")]
    Unreadable { version: String },
}

/// The slice shape the API server at `major.minor` (as `/version` spells them: minor may carry a
/// suffix, `"35+"`) accepts: 1.34 keeps counter sets beside their devices, 1.35 and later want
/// counters-only slices.
pub fn slice_shape(major: &str, minor: &str) -> Result<SliceShape, VersionError> {
    let version = format!("{major}.{minor}");
    let number = |s: &str| {
        let digits: String = s.trim().chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u32>().ok()
    };
    let (Some(ma), Some(mi)) = (number(major), number(minor)) else {
        return Err(VersionError::Unreadable { version });
    };
    match (ma, mi) {
        (0, _) | (1, 0..=33) => Err(VersionError::TooOld { version }),
        (1, 34) => Ok(SliceShape::V1_34),
        _ => Ok(SliceShape::V1_35),
    }
}

/// [`slice_shape`] of what `/version` reports: the emulated version when the API server
/// emulates an older release (`--emulated-version`, which also decides which APIs it serves),
/// else its own.
pub fn slice_shape_of(info: &k8s_openapi::apimachinery::pkg::version::Info) -> Result<SliceShape, VersionError> {
    match (&info.emulation_major, &info.emulation_minor) {
        (Some(major), Some(minor)) if !major.is_empty() && !minor.is_empty() => slice_shape(major, minor),
        _ => slice_shape(&info.major, &info.minor),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_chooses_the_shape() {
        let table: &[(&str, &str, Result<SliceShape, ()>)] = &[
            ("1", "34", Ok(SliceShape::V1_34)),
            ("1", "34+", Ok(SliceShape::V1_34)),
            ("1", "35", Ok(SliceShape::V1_35)),
            ("1", "35+", Ok(SliceShape::V1_35)),
            ("1", "37", Ok(SliceShape::V1_35)),
            ("2", "0", Ok(SliceShape::V1_35)),
            ("1", "33", Err(())),
            ("1", "33+", Err(())),
            ("1", "", Err(())),
            ("", "35", Err(())),
            ("1", "x", Err(())),
        ];
        for (major, minor, want) in table {
            let got = slice_shape(major, minor).map_err(|_| ());
            assert_eq!(&got, want, "{major}.{minor}");
        }
        assert_eq!(
            slice_shape("1", "33+").unwrap_err(),
            VersionError::TooOld { version: "1.33+".into() },
            "a version too old is named"
        );
    }

    #[test]
    fn an_emulated_version_wins() {
        let info = k8s_openapi::apimachinery::pkg::version::Info {
            major: "1".into(),
            minor: "35".into(),
            emulation_major: Some("1".into()),
            emulation_minor: Some("34".into()),
            ..Default::default()
        };
        assert_eq!(slice_shape_of(&info), Ok(SliceShape::V1_34));
        let plain = k8s_openapi::apimachinery::pkg::version::Info { emulation_minor: None, ..info };
        assert_eq!(slice_shape_of(&plain), Ok(SliceShape::V1_35));
    }
}
