//! The GPU catalog: every MIG-capable GPU model Tessera knows, with its profiles and placements.
//!
//! The data lives in `data/catalog.yaml`, generated from the project's researched reference
//! (`scripts/gen-catalog.py`) and embedded in the binary. It is parsed once, on first use. At run
//! time NVML is the final word; the catalog is the cross-check and the simulated node's hardware.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;

use serde::Deserialize;

/// The embedded catalog text.
pub const CATALOG_YAML: &str = include_str!("../data/catalog.yaml");

/// Errors from looking things up in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// No GPU model matches the name, product name or PCI device id.
    #[error("unknown GPU model '{query}'{}", did_you_mean(.suggestions))]
    UnknownModel { query: String, suggestions: Vec<String> },
    /// The model has no profile of that name or id.
    #[error("unknown MIG profile '{query}' for {model}{}", did_you_mean(.suggestions))]
    UnknownProfile { model: String, query: String, suggestions: Vec<String> },
    /// `PROFILE@START` with a start that is not a placement unit number.
    #[error("'{text}': the start '{start}' is not a placement unit number (write PROFILE@START, e.g. 3g.40gb@4)")]
    BadStart { text: String, start: String },
}

pub(crate) fn did_you_mean(suggestions: &[String]) -> String {
    match suggestions {
        [] => String::new(),
        [one] => format!(" (did you mean '{one}'?)"),
        many => format!(" (did you mean one of: {}?)", many.join(", ")),
    }
}

/// How much the reference data is to be trusted for a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    High,
    Medium,
    Low,
}

impl fmt::Display for Confidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Confidence::High => "high",
            Confidence::Medium => "medium",
            Confidence::Low => "low",
        })
    }
}

/// The media-engine variant of a profile, from its name suffix (go-nvlib's naming rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProfileKind {
    /// No suffix.
    Standard,
    /// `+me`: owns the GPU's single OFA (and, on A100/A30, its JPEG).
    Media,
    /// `+me.all`: owns every media engine; while it exists only `-me` profiles may be created.
    MediaAll,
    /// `-me`: no media engines at all.
    NoMedia,
    /// `+gfx`: graphics-capable (RTX PRO 6000 Blackwell).
    Graphics,
}

/// Engines owned by a GPU instance, as `nvidia-smi mig -lgip` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct MediaEngines {
    pub copy_engines: u32,
    pub nvdec: u32,
    pub nvenc: u32,
    pub jpeg: u32,
    pub ofa: u32,
}

/// A GPU-instance profile of one model.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Profile {
    /// `nvidia-smi` name, e.g. `3g.20gb` or `1g.5gb+me`.
    pub name: String,
    /// The profile ID (`nvidia-smi mig -lgip`, `nvmlGpuInstanceProfileInfo_t.id`).
    pub id: u32,
    /// The `NVML_GPU_INSTANCE_PROFILE_*` index, where known.
    #[serde(default)]
    pub nvml_index: Option<u32>,
    pub kind: ProfileKind,
    pub compute_slices: u8,
    pub memory_slices: u8,
    /// Width of the placement in placement units.
    pub placement_size: u8,
    /// Legal start units.
    pub placements: Vec<u8>,
    /// Most instances of this profile on one GPU.
    pub max_count: u8,
    #[serde(default)]
    pub memory_mib: Option<u64>,
    #[serde(default)]
    pub sm_count: Option<u32>,
    /// Optical-flow accelerators owned (the GPU has `GpuModel::ofa_engines` of them).
    pub ofa_engines: u8,
    #[serde(default)]
    pub media: Option<MediaEngines>,
    #[serde(default)]
    pub min_driver: Option<String>,
    /// Other names seen for the same profile (firmware drift).
    #[serde(default)]
    pub aka: Vec<String>,
    #[serde(default)]
    pub default_ci_profile_id: Option<u32>,
    /// The whole profile was inferred, not read.
    #[serde(default)]
    pub inferred: bool,
    #[serde(default)]
    pub inferred_fields: Vec<String>,
    #[serde(default)]
    pub note: Option<String>,
}

/// nvml.h's `NVML_GPU_INSTANCE_PROFILE_*` indices: what `nvmlDeviceGetGpuInstanceProfileInfo`
/// takes and mig-parted's checkpoint records (not the profile *id* `nvidia-smi` prints).
pub mod nvml_gi_index {
    pub const SLICE_1: u32 = 0;
    pub const SLICE_2: u32 = 1;
    pub const SLICE_3: u32 = 2;
    pub const SLICE_4: u32 = 3;
    pub const SLICE_7: u32 = 4;
    pub const SLICE_8: u32 = 5;
    pub const SLICE_6: u32 = 6;
    pub const SLICE_1_REV1: u32 = 7;
    pub const SLICE_2_REV1: u32 = 8;
    pub const SLICE_1_REV2: u32 = 9;
    pub const SLICE_1_GFX: u32 = 10;
    pub const SLICE_2_GFX: u32 = 11;
    pub const SLICE_4_GFX: u32 = 12;
    pub const SLICE_1_NO_ME: u32 = 13;
    pub const SLICE_2_NO_ME: u32 = 14;
    pub const SLICE_1_ALL_ME: u32 = 15;
    pub const SLICE_2_ALL_ME: u32 = 16;
}

impl Profile {
    /// The `NVML_GPU_INSTANCE_PROFILE_*` index: the catalog's `nvml_index`, else the one the
    /// profile's kind and shape imply ([`Profile::derived_nvml_index`]). `None` for a shape
    /// nvml.h has no constant for.
    pub fn nvml_profile_index(&self) -> Option<u32> {
        self.nvml_index.or_else(|| self.derived_nvml_index())
    }

    /// The index nvml.h's constants give a profile of this kind and shape: the one rule, for
    /// the models whose reference data lacks the index (GH200, B300, GB300, …).
    pub fn derived_nvml_index(&self) -> Option<u32> {
        use nvml_gi_index::*;
        Some(match (self.kind, self.compute_slices) {
            (ProfileKind::Standard, 1) if self.memory_slices >= 2 => SLICE_1_REV2,
            (ProfileKind::Standard, 1) => SLICE_1,
            (ProfileKind::Standard, 2) => SLICE_2,
            (ProfileKind::Standard, 3) => SLICE_3,
            (ProfileKind::Standard, 4) => SLICE_4,
            (ProfileKind::Standard, 6) => SLICE_6,
            (ProfileKind::Standard, 7) => SLICE_7,
            (ProfileKind::Standard, 8) => SLICE_8,
            (ProfileKind::Media, 1) => SLICE_1_REV1,
            (ProfileKind::Media, 2) => SLICE_2_REV1,
            (ProfileKind::Graphics, 1) => SLICE_1_GFX,
            (ProfileKind::Graphics, 2) => SLICE_2_GFX,
            (ProfileKind::Graphics, 4) => SLICE_4_GFX,
            (ProfileKind::NoMedia, 1) => SLICE_1_NO_ME,
            (ProfileKind::NoMedia, 2) => SLICE_2_NO_ME,
            (ProfileKind::MediaAll, 1) => SLICE_1_ALL_ME,
            (ProfileKind::MediaAll, 2) => SLICE_2_ALL_ME,
            _ => return None,
        })
    }

    /// Whether this profile owns no media engines (`-me`).
    pub fn is_no_media(&self) -> bool {
        self.kind == ProfileKind::NoMedia
    }

    /// The gigabytes in the name: `7g.269gb` → 269, `1g.5gb+me` → 5; `None` for a name without.
    pub fn name_gb(&self) -> Option<u64> {
        let after_dot = self.name.split_once('.')?.1;
        let digits: String = after_dot.chars().take_while(char::is_ascii_digit).collect();
        let rest = &after_dot[digits.len()..];
        if rest.starts_with("gb") { digits.parse().ok() } else { None }
    }
}

/// Which GPU-internal NUMA node each placement unit belongs to (mig-hardware.md §10).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GpuNuma {
    pub nodes: u8,
    pub unit_node: Vec<u8>,
    #[serde(default)]
    pub inferred: bool,
    #[serde(default)]
    pub note: Option<String>,
}

/// A compute-instance profile inside a GPU instance of a given compute-slice count.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ComputeInstanceProfile {
    pub id: u32,
    pub compute_slices: u8,
    pub max_count: u8,
    pub placements: Vec<u8>,
    pub placement_size: u8,
    #[serde(default)]
    pub default: bool,
    #[serde(default)]
    pub inferred_fields: Vec<String>,
}

/// One MIG-capable GPU model.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GpuModel {
    /// Tessera's short name, e.g. `A100-40GB` or `H100-80GB`.
    pub name: String,
    /// The name in the reference data.
    pub reference_name: String,
    #[serde(default)]
    pub short_names: Vec<String>,
    pub architecture: String,
    #[serde(default)]
    pub chip: Option<String>,
    /// NVML product names (`nvmlDeviceGetName`).
    #[serde(default)]
    pub product_names: Vec<String>,
    /// PCI device ids as hex strings (`0x20B0`).
    #[serde(default)]
    pub pci_device_ids: Vec<String>,
    pub placement_units: u8,
    pub memory_slices: u8,
    pub compute_slices: u8,
    pub max_gpu_instances: u8,
    #[serde(default)]
    pub memory_total_mib: Option<u64>,
    #[serde(default)]
    pub sm_count: Option<u32>,
    /// Optical-flow accelerators on the GPU: the `+me` rule is "their sum over instances fits".
    pub ofa_engines: u8,
    #[serde(default)]
    pub min_driver: Option<String>,
    #[serde(default)]
    pub mig_enable_requires_gpu_reset: Option<bool>,
    pub confidence: Confidence,
    #[serde(default)]
    pub inferred: bool,
    #[serde(default)]
    pub inferred_fields: Vec<String>,
    #[serde(default)]
    pub sources: Vec<String>,
    #[serde(default)]
    pub gpu_numa: Option<GpuNuma>,
    #[serde(default)]
    pub compute_instance_profile_sets: Vec<u8>,
    #[serde(default)]
    pub compute_instance_profiles_inferred: bool,
    pub profiles: Vec<Profile>,
    /// mig-parted's named configurations for this model (`all-1g.10gb`, `all-balanced`, …).
    #[serde(default)]
    pub named_configs: BTreeMap<String, BTreeMap<String, u32>>,
    /// The named configurations follow mig-parted's pattern but were not read for this model.
    #[serde(default)]
    pub named_configs_inferred: bool,
    #[serde(default)]
    pub notes: Vec<String>,
}

/// The profile id of [`GpuModel::whole_gpu_only`]'s one profile.
pub const WHOLE_GPU_PROFILE_ID: u32 = 0;

impl GpuModel {
    /// A GPU the catalog does not know, without MIG (an L40S, an A10, a V100 …): one profile,
    /// `whole`, the whole GPU with `memory_mib` of memory, sized like a full MIG GPU (7 compute
    /// and 8 memory slices) so that it is charged and compared as one. Schedulers use it to give
    /// such GPUs whole to jobs; it can never be partitioned.
    pub fn whole_gpu_only(name: &str, memory_mib: u64) -> GpuModel {
        GpuModel {
            name: name.to_string(),
            reference_name: name.to_string(),
            short_names: Vec::new(),
            architecture: "unknown".into(),
            chip: None,
            product_names: vec![name.to_string()],
            pci_device_ids: Vec::new(),
            placement_units: 8,
            memory_slices: 8,
            compute_slices: 7,
            max_gpu_instances: 1,
            memory_total_mib: Some(memory_mib),
            sm_count: None,
            ofa_engines: 0,
            min_driver: None,
            mig_enable_requires_gpu_reset: None,
            confidence: Confidence::Low,
            inferred: true,
            inferred_fields: Vec::new(),
            sources: vec!["not in the catalog: a GPU without MIG, used whole".into()],
            gpu_numa: None,
            compute_instance_profile_sets: Vec::new(),
            compute_instance_profiles_inferred: false,
            profiles: vec![Profile {
                name: "whole".into(),
                id: WHOLE_GPU_PROFILE_ID,
                nvml_index: None,
                kind: ProfileKind::Standard,
                compute_slices: 7,
                memory_slices: 8,
                placement_size: 8,
                placements: vec![0],
                max_count: 1,
                memory_mib: Some(memory_mib),
                sm_count: None,
                ofa_engines: 0,
                media: None,
                min_driver: None,
                aka: Vec::new(),
                default_ci_profile_id: None,
                inferred: true,
                inferred_fields: Vec::new(),
                note: Some("the whole GPU (MIG not available)".into()),
            }],
            named_configs: BTreeMap::new(),
            named_configs_inferred: false,
            notes: Vec::new(),
        }
    }

    /// The profile with this id.
    pub fn profile_by_id(&self, id: u32) -> Option<&Profile> {
        self.profiles.iter().find(|p| p.id == id)
    }

    /// The profile at an `NVML_GPU_INSTANCE_PROFILE_*` index ([`Profile::nvml_profile_index`]).
    pub fn profile_by_nvml_index(&self, index: u32) -> Option<&Profile> {
        self.profiles.iter().find(|p| p.nvml_profile_index() == Some(index))
    }

    /// Index of the profile with this id in `profiles`.
    pub fn profile_index(&self, id: u32) -> Option<usize> {
        self.profiles.iter().position(|p| p.id == id)
    }

    /// Find a profile by name (`3g.20gb`, `1g.5gb+me`, case-insensitive, `MIG ` prefix and an
    /// `aka` name allowed) or by numeric profile id.
    pub fn profile(&self, query: &str) -> Result<&Profile, CatalogError> {
        let q = query.trim();
        let lower = q.to_ascii_lowercase();
        let lower = lower.strip_prefix("mig ").unwrap_or(&lower).trim();
        if let Some(p) = self
            .profiles
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(lower) || p.aka.iter().any(|a| a.eq_ignore_ascii_case(lower)))
        {
            return Ok(p);
        }
        if let Ok(id) = lower.parse::<u32>()
            && let Some(p) = self.profile_by_id(id)
        {
            return Ok(p);
        }
        let names: Vec<&str> = self.profiles.iter().map(|p| p.name.as_str()).collect();
        Err(CatalogError::UnknownProfile {
            model: self.name.clone(),
            query: q.to_string(),
            suggestions: closest(lower, &names),
        })
    }

    /// The NUMA node of a placement `[start, start+size)`, if it lies inside one node.
    /// An instance as users write it: a profile name or id (`3g.40gb`, `9`), or a compute split
    /// in mig-parted's terms (`1c.3g.40gb`).
    pub fn wanted_instance(&self, text: &str) -> Result<crate::WantedInstance, CatalogError> {
        let text = text.trim();
        if let Ok(p) = self.profile(text) {
            return Ok(crate::WantedInstance::new(p.id));
        }
        if let Some((c, rest)) = text.split_once("c.")
            && let Ok(slices) = c.parse::<u8>()
            && let Ok(p) = self.profile(rest)
        {
            return Ok(crate::WantedInstance { profile_id: p.id, compute: crate::ComputeShape::Slices(slices) });
        }
        self.profile(text).map(|p| crate::WantedInstance::new(p.id))
    }

    /// `PROFILE` or `PROFILE@START`: the wanted instance and its start, when given.
    pub fn instance_spec(&self, text: &str) -> Result<(crate::WantedInstance, Option<u8>), CatalogError> {
        match text.split_once('@') {
            None => Ok((self.wanted_instance(text)?, None)),
            Some((name, start)) => {
                let wanted = self.wanted_instance(name)?;
                let start = start
                    .trim()
                    .parse::<u8>()
                    .map_err(|_| CatalogError::BadStart { text: text.to_string(), start: start.trim().to_string() })?;
                Ok((wanted, Some(start)))
            }
        }
    }

    pub fn gpu_numa_node(&self, start: u8, size: u8) -> Option<u8> {
        let numa = self.gpu_numa.as_ref()?;
        let nodes: Vec<u8> = (start..start.saturating_add(size))
            .map(|u| numa.unit_node.get(usize::from(u)).copied())
            .collect::<Option<Vec<u8>>>()?;
        let first = *nodes.first()?;
        nodes.iter().all(|n| *n == first).then_some(first)
    }

    /// The compute-instance profiles of a GPU instance with `gi_compute_slices` slices.
    pub fn compute_instance_profiles(&self, gi_compute_slices: u8) -> &[ComputeInstanceProfile] {
        if !self.compute_instance_profile_sets.contains(&gi_compute_slices) {
            return &[];
        }
        catalog().compute_instance_profiles.get(&gi_compute_slices).map(Vec::as_slice).unwrap_or(&[])
    }

    /// PCI device ids as numbers.
    pub fn pci_device_id_values(&self) -> impl Iterator<Item = u16> + '_ {
        self.pci_device_ids.iter().filter_map(|s| parse_hex_u16(s))
    }

    /// The first product name, or the short name.
    pub fn display_product_name(&self) -> &str {
        self.product_names.first().map_or(self.name.as_str(), String::as_str)
    }

    /// The whole GPU's memory in MiB, as NVML reports it: the catalog's total (the reference's,
    /// or, where it has none, inferred by the generator from the full profile's name and listed
    /// in `inferred_fields`), else the most any profile reads or is named for.
    pub fn total_memory_mib(&self) -> u64 {
        self.memory_total_mib.unwrap_or_else(|| {
            self.profiles
                .iter()
                .filter_map(|p| p.memory_mib.or_else(|| p.name_gb().map(|gb| gb * 1024)))
                .max()
                .unwrap_or(0)
        })
    }

    /// A profile's memory in MiB: the catalog's figure where the reference read one; else the
    /// most MiB per memory slice among this model's read profiles times the profile's slices; else
    /// its memory-slice share of the total. An estimate never exceeds [`Self::total_memory_mib`]
    /// (the name's gigabytes are rounded up, so they would overstate it).
    pub fn profile_memory_mib(&self, p: &Profile) -> u64 {
        if let Some(mib) = p.memory_mib {
            return mib;
        }
        let total = self.total_memory_mib();
        let slices = u64::from(p.memory_slices);
        let per_slice =
            self.profiles.iter().filter_map(|q| q.memory_mib.map(|m| m / u64::from(q.memory_slices.max(1)))).max();
        let estimate = match per_slice {
            Some(per_slice) => per_slice * slices,
            None => total * slices / u64::from(self.memory_slices.max(1)),
        };
        estimate.min(total)
    }
}

fn parse_hex_u16(s: &str) -> Option<u16> {
    let t = s.trim();
    let t = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")).unwrap_or(t);
    u16::from_str_radix(t, 16).ok()
}

/// The whole catalog.
#[derive(Debug, Clone, Deserialize)]
pub struct Catalog {
    pub schema_version: u32,
    pub derived_from: String,
    /// Models of the reference that were left out, with why.
    #[serde(default)]
    pub left_out: BTreeMap<String, String>,
    pub sources: BTreeMap<String, String>,
    pub compute_instance_profiles: BTreeMap<u8, Vec<ComputeInstanceProfile>>,
    pub models: Vec<GpuModel>,
}

/// The embedded catalog, parsed on first use.
///
/// # Panics
/// Only if the embedded file does not parse, which `tests::embedded_catalog_parses` rules out
/// at build time of every release.
pub fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        #[allow(clippy::expect_used)] // The embedded file is checked by a unit test.
        serde_saphyr::from_str(CATALOG_YAML).expect("embedded catalog.yaml parses")
    })
}

impl Catalog {
    /// Find a model by short name (`A100-40GB`), NVML product name (`NVIDIA A100-SXM4-40GB`) or
    /// PCI device id (`0x20B0`, `20b0`, or mig-parted's `0x20B010DE`).
    pub fn model(&self, query: &str) -> Result<&GpuModel, CatalogError> {
        let q = normalize_model_name(query);
        let by_name = self.models.iter().find(|m| {
            normalize_model_name(&m.name) == q
                || normalize_model_name(&m.reference_name) == q
                || m.short_names.iter().any(|s| normalize_model_name(s) == q)
                || m.product_names.iter().any(|s| normalize_model_name(s) == q)
        });
        if let Some(m) = by_name {
            return Ok(m);
        }
        if let Some(id) = parse_pci_query(query)
            && let Some(m) = self.model_by_pci_device_id(id)
        {
            return Ok(m);
        }
        let mut names: Vec<&str> = Vec::new();
        for m in &self.models {
            names.push(&m.name);
            names.extend(m.short_names.iter().map(String::as_str));
            names.extend(m.product_names.iter().map(String::as_str));
        }
        Err(CatalogError::UnknownModel { query: query.trim().to_string(), suggestions: closest(&q, &names) })
    }

    /// The model with this PCI device id.
    pub fn model_by_pci_device_id(&self, device_id: u16) -> Option<&GpuModel> {
        self.models.iter().find(|m| m.pci_device_id_values().any(|d| d == device_id))
    }

    /// Every model's short name, in catalog order.
    pub fn model_names(&self) -> Vec<&str> {
        self.models.iter().map(|m| m.name.as_str()).collect()
    }
}

fn normalize_model_name(s: &str) -> String {
    let lower = s.trim().to_ascii_lowercase();
    let lower = lower.strip_prefix("nvidia").unwrap_or(&lower);
    lower.chars().map(|c| if c == ' ' || c == '_' { '-' } else { c }).collect::<String>().trim_matches('-').to_string()
}

/// `0x20B0`, `20B0`, `0x20B010DE` (device + vendor, as mig-parted's `device-filter` writes it).
fn parse_pci_query(q: &str) -> Option<u16> {
    let t = q.trim();
    let hex = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")).unwrap_or(t);
    if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    match hex.len() {
        1..=4 => u16::from_str_radix(hex, 16).ok(),
        8 if hex[4..].eq_ignore_ascii_case("10de") => u16::from_str_radix(&hex[..4], 16).ok(),
        _ => None,
    }
}

/// Up to three candidates closest to `query` by edit distance (case-insensitive), best first.
pub fn closest(query: &str, candidates: &[&str]) -> Vec<String> {
    let q = query.to_ascii_lowercase();
    let mut scored: Vec<(usize, &str)> = candidates
        .iter()
        .map(|c| {
            let cl = c.to_ascii_lowercase();
            let mut d = levenshtein(&q, &cl);
            if cl.contains(&q) || q.contains(&cl) {
                d = d.min(2);
            }
            (d, *c)
        })
        .collect();
    scored.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(b.1)));
    let limit = (q.chars().count() / 2).max(3);
    // Only the best matches: a clear winner alone, ties together.
    let best = scored.first().map_or(0, |(d, _)| *d);
    let mut out: Vec<String> = Vec::new();
    for (d, c) in scored {
        if d > limit || d > best || out.len() == 3 {
            break;
        }
        if !out.iter().any(|o| o == c) {
            out.push(c.to_string());
        }
    }
    out
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_catalog_parses() {
        let c: Catalog = serde_saphyr::from_str(CATALOG_YAML).unwrap();
        assert!(c.models.len() >= 11);
    }

    #[test]
    fn every_profile_has_a_distinct_nvml_index_and_recorded_ones_follow_the_rule() {
        for m in &catalog().models {
            let mut seen = std::collections::BTreeMap::new();
            for p in &m.profiles {
                let i = p.nvml_profile_index().unwrap_or_else(|| panic!("{} {} has no NVML index", m.name, p.name));
                if let Some(recorded) = p.nvml_index {
                    assert_eq!(p.derived_nvml_index(), Some(recorded), "{} {}", m.name, p.name);
                }
                assert!(seen.insert(i, &p.name).is_none(), "{}: two profiles at index {i}", m.name);
                assert_eq!(m.profile_by_nvml_index(i).map(|q| q.id), Some(p.id), "{} {}", m.name, p.name);
            }
        }
        // The models whose reference data lacks the index: (model, index, profile).
        let cases = [
            ("GH200-144GB", nvml_gi_index::SLICE_1, "1g.18gb"),
            ("GH200-144GB", nvml_gi_index::SLICE_1_REV1, "1g.18gb+me"),
            ("GH200-144GB", nvml_gi_index::SLICE_1_REV2, "1g.36gb"),
            ("B300-269GB", nvml_gi_index::SLICE_3, "3g.135gb"),
            ("GB300-278GB", nvml_gi_index::SLICE_7, "7g.278gb"),
            ("GB300-278GB", nvml_gi_index::SLICE_2, "2g.70gb"),
        ];
        for (model, index, name) in cases {
            let m = catalog().model(model).unwrap();
            assert_eq!(m.profile_by_nvml_index(index).map(|p| p.name.as_str()), Some(name), "{model} {index}");
        }
    }

    #[test]
    fn closest_names() {
        assert_eq!(closest("3g.20g", &["1g.5gb", "3g.20gb", "4g.20gb"])[0], "3g.20gb");
        assert!(closest("zzzzzzzzzz", &["1g.5gb"]).is_empty());
    }

    #[test]
    fn gigabytes_from_profile_names() {
        let gb = |name: &str| Profile { name: name.into(), ..catalog().models[0].profiles[0].clone() }.name_gb();
        assert_eq!(gb("7g.269gb"), Some(269));
        assert_eq!(gb("1g.5gb+me"), Some(5));
        assert_eq!((gb("weird"), gb("whole"), gb("1g.tb")), (None, None, None));
    }

    #[test]
    fn pci_query_forms() {
        assert_eq!(parse_pci_query("0x20B0"), Some(0x20b0));
        assert_eq!(parse_pci_query("20b0"), Some(0x20b0));
        assert_eq!(parse_pci_query("0x20B010DE"), Some(0x20b0));
        assert_eq!(parse_pci_query("H100"), None);
    }
}
