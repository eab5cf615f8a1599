//! Identifiers the driver hands out, reproduced deterministically for the simulated node: GPU and
//! MIG device UUIDs, and the minors of the `/dev/nvidia-caps` capability device nodes.
//!
//! UUIDs come from a small 128-bit hash (two FNV-1a streams finished with SplitMix64), so the
//! same node spec always yields the same GPU UUIDs, on every platform, with no dependency.

/// Minor of `/dev/nvidia-caps/nvidia-cap<minor>` for `gpu<gpu_minor>/gi<gi_id>/access`.
///
/// Inferred from `/proc/driver/nvidia-caps/mig-minors` (`gpu0/gi0/access 3` …
/// `gpu31/gi14/ci7/access 4322`): 15 GPU-instance ids × (1 + 8 compute-instance ids) per GPU.
pub fn gi_caps_minor(gpu_minor: u32, gpu_instance_id: u32) -> u32 {
    3 + 135 * gpu_minor + 9 * gpu_instance_id
}

/// Minor of `/dev/nvidia-caps/nvidia-cap<minor>` for `gpu<gpu_minor>/gi<gi_id>/ci<ci_id>/access`.
pub fn ci_caps_minor(gpu_minor: u32, gpu_instance_id: u32, compute_instance_id: u32) -> u32 {
    gi_caps_minor(gpu_minor, gpu_instance_id) + 1 + compute_instance_id
}

/// The text of `/proc/driver/nvidia-caps/mig-minors` as the driver writes it for `gpus` GPUs
/// (`config 1`, `monitor 2`, then `gpu<minor>/gi<id>/access` and `gpu<minor>/gi<id>/ci<id>/access`
/// lines), for tests and stand-ins of a real node.
pub fn mig_minors_text(gpus: u32) -> String {
    let mut out = String::from("config 1\nmonitor 2\n");
    for gpu in 0..gpus {
        for gi in 0..15 {
            out.push_str(&format!("gpu{gpu}/gi{gi}/access {}\n", gi_caps_minor(gpu, gi)));
            for ci in 0..8 {
                out.push_str(&format!("gpu{gpu}/gi{gi}/ci{ci}/access {}\n", ci_caps_minor(gpu, gi, ci)));
            }
        }
    }
    out
}

fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = seed;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A 128-bit hash of `text`.
pub(crate) fn hash128(text: &str) -> u128 {
    let hi = splitmix(fnv1a(0xcbf2_9ce4_8422_2325, text.as_bytes()));
    let lo = splitmix(fnv1a(0x6c62_272e_07bb_0142, text.as_bytes()) ^ hi);
    (u128::from(hi) << 64) | u128::from(lo)
}

fn format_uuid(prefix: &str, v: u128) -> String {
    let hex = format!("{v:032x}");
    format!("{prefix}{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` from a seed text.
pub(crate) fn gpu_uuid(seed: &str) -> String {
    format_uuid("GPU-", hash128(seed))
}

/// `MIG-xxxxxxxx-xxxx-5xxx-yxxx-xxxxxxxxxxxx` (an RFC 4122 version-5 shaped UUID, as R470+
/// drivers print) from the parent GPU UUID, the instance ids and a generation counter.
pub(crate) fn mig_uuid(gpu_uuid: &str, gpu_instance_id: u32, compute_instance_id: u32, generation: u64) -> String {
    let v = hash128(&format!("{gpu_uuid}/{gpu_instance_id}/{compute_instance_id}/{generation}"));
    let v = (v & !(0xf_u128 << 76)) | (0x5_u128 << 76);
    let v = (v & !(0x3_u128 << 62)) | (0x2_u128 << 62);
    format_uuid("MIG-", v)
}

/// Whether `s` is `<prefix>` followed by a hyphenated 8-4-4-4-12 lower-case hex UUID.
pub fn is_uuid_with_prefix(s: &str, prefix: &str) -> bool {
    let Some(rest) = s.strip_prefix(prefix) else {
        return false;
    };
    let groups: Vec<&str> = rest.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_minors_match_mig_minors_endpoints() {
        assert_eq!(gi_caps_minor(0, 0), 3);
        assert_eq!(ci_caps_minor(0, 0, 0), 4);
        assert_eq!(ci_caps_minor(31, 14, 7), 4322);
    }

    #[test]
    fn uuids_are_deterministic_and_well_formed() {
        let a = gpu_uuid("8xH100-80GB,numa=2/0");
        assert_eq!(a, gpu_uuid("8xH100-80GB,numa=2/0"));
        assert_ne!(a, gpu_uuid("8xH100-80GB,numa=2/1"));
        assert!(is_uuid_with_prefix(&a, "GPU-"), "{a}");
        let m = mig_uuid(&a, 1, 0, 7);
        assert!(is_uuid_with_prefix(&m, "MIG-"), "{m}");
        assert_eq!(&m[4 + 14..4 + 15], "5", "{m}");
        assert!(matches!(&m[4 + 19..4 + 20], "8" | "9" | "a" | "b"), "{m}");
        assert_ne!(m, mig_uuid(&a, 1, 0, 8));
        assert!(!is_uuid_with_prefix("MIG-123", "MIG-"));
        assert!(!is_uuid_with_prefix(&a, "MIG-"));
    }
}
