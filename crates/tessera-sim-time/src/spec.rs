//! What a run simulates: the cluster ([`ClusterSpec`]), the policies ([`PolicySpec`]), static
//! layouts, load-based sizing ([`size_for_load`]) and durations such as `30s`.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};
use tessera_mig::{GpuModel, Instance, ProfileKind, WantedInstance};
use tessera_sim::trace::Job;

use crate::error::TimeError;

/// GPUs per node when a spec does not say.
pub const DEFAULT_GPUS_PER_NODE: u32 = 8;

/// Nodes of one GPU model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeGroup {
    pub nodes: u32,
    pub gpus_per_node: u32,
    #[serde(serialize_with = "model_name")]
    pub model: &'static GpuModel,
}

fn model_name<S: Serializer>(m: &&'static GpuModel, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&m.name)
}

/// The simulated cluster: groups of nodes, each node with its own scheduler core.
///
/// Specs: `64xA100-40GB` (64 GPUs in nodes of 8; a remainder makes one smaller node),
/// `8x8xH100-80GB` (8 nodes of 8), and mixtures joined by `+`
/// (`4x8xA100-40GB+4x8xH100-80GB`). `load=0.7:A100-40GB` sizes the cluster for a trace: see
/// [`ClusterSpec::resolve`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterSpec {
    pub groups: Vec<NodeGroup>,
}

impl ClusterSpec {
    /// A cluster of `gpus` GPUs of one model in nodes of `gpus_per_node` (the last node may be
    /// smaller).
    pub fn uniform(gpus: u32, gpus_per_node: u32, model: &'static GpuModel) -> Self {
        let per = gpus_per_node.max(1);
        let mut groups = Vec::new();
        if gpus / per > 0 {
            groups.push(NodeGroup { nodes: gpus / per, gpus_per_node: per, model });
        }
        if !gpus.is_multiple_of(per) {
            groups.push(NodeGroup { nodes: 1, gpus_per_node: gpus % per, model });
        }
        ClusterSpec { groups }
    }

    /// Parse a spec; `load=L:MODEL` sizes the cluster for `jobs` with [`size_for_load`].
    pub fn resolve(spec: &str, jobs: &[Job]) -> Result<Self, TimeError> {
        let s = spec.trim();
        if let Some(rest) = s.strip_prefix("load=") {
            let err = |reason: String| TimeError::Cluster { spec: spec.to_string(), reason };
            let (load, model) = rest
                .split_once(':')
                .ok_or_else(|| err("expected load=<fraction>:<GPU model>, e.g. load=0.7:A100-40GB".into()))?;
            let load: f64 = load.trim().parse().map_err(|_| err(format!("load '{load}' is not a number")))?;
            if !(load > 0.0 && load.is_finite()) {
                return Err(err(format!("load {load} must be above 0")));
            }
            let model = tessera_mig::catalog().model(model.trim()).map_err(|e| err(e.to_string()))?;
            let gpus = size_for_load(jobs, load, model);
            return Ok(ClusterSpec::uniform(gpus, DEFAULT_GPUS_PER_NODE, model));
        }
        s.parse()
    }

    /// All GPUs.
    pub fn gpus(&self) -> u32 {
        self.groups.iter().map(|g| g.nodes * g.gpus_per_node).sum()
    }

    /// All nodes.
    pub fn nodes(&self) -> u32 {
        self.groups.iter().map(|g| g.nodes).sum()
    }

    /// The first group's model (the one static layouts are searched on).
    pub fn first_model(&self) -> Option<&'static GpuModel> {
        self.groups.first().map(|g| g.model)
    }

    /// The most GPUs one node has.
    pub fn max_gpus_per_node(&self) -> u32 {
        self.groups.iter().map(|g| g.gpus_per_node).max().unwrap_or(0)
    }
}

impl fmt::Display for ClusterSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> =
            self.groups.iter().map(|g| format!("{}x{}x{}", g.nodes, g.gpus_per_node, g.model.name)).collect();
        f.write_str(&parts.join("+"))
    }
}

impl FromStr for ClusterSpec {
    type Err = TimeError;

    fn from_str(spec: &str) -> Result<Self, TimeError> {
        let err = |reason: String| TimeError::Cluster { spec: spec.to_string(), reason };
        let mut groups = Vec::new();
        for part in spec.split('+') {
            let part = part.trim();
            let fields: Vec<&str> = part.splitn(3, ['x', 'X']).collect();
            let num = |s: &str| -> Result<u32, TimeError> {
                match s.trim().parse::<u32>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(err(format!("'{s}' is not a count above 0 in '{part}'"))),
                }
            };
            // A model name may itself contain an 'x' (none in the catalog do today): try the
            // three-field form only when the middle field is a number.
            let (nodes, per, model) = match fields.as_slice() {
                [n, p, m] if p.trim().parse::<u32>().is_ok() => (Some(num(n)?), num(p)?, m.to_string()),
                [n, rest @ ..] if !rest.is_empty() => (None, num(n)?, rest.join("x")),
                _ => {
                    return Err(err(format!(
                        "'{part}' is not <GPUs>x<model> or <nodes>x<GPUs per node>x<model> (e.g. 64xA100-40GB, 8x8xH100-80GB)"
                    )));
                }
            };
            let model = tessera_mig::catalog().model(model.trim()).map_err(|e| err(e.to_string()))?;
            match nodes {
                Some(n) => groups.push(NodeGroup { nodes: n, gpus_per_node: per, model }),
                None => groups.extend(ClusterSpec::uniform(per, DEFAULT_GPUS_PER_NODE, model).groups),
            }
        }
        if groups.is_empty() {
            return Err(err("no GPUs".into()));
        }
        Ok(ClusterSpec { groups })
    }
}

/// The GPU count that gives `load` offered load for `jobs` on GPUs of `model`.
///
/// Offered load = Σ over GPU jobs of (GPUs × the compute fraction of the smallest fitting slice
/// on `model` × duration) ÷ (GPUs in the cluster × the arrival span). The compute fraction is
/// what dynamic MIG allocates: `gpu_milli` rounded up to whole compute slices (470 milli-GPU →
/// 4 of 7 slices on an A100). At least 1.
pub fn size_for_load(jobs: &[Job], load: f64, model: &GpuModel) -> u32 {
    let demand: f64 = jobs.iter().filter(|j| j.num_gpu > 0).map(|j| gpu_demand(j, model) * j.duration_s).sum();
    let first = jobs.iter().map(|j| j.submit_s).fold(f64::INFINITY, f64::min);
    let last = jobs.iter().map(|j| j.submit_s).fold(f64::NEG_INFINITY, f64::max);
    let span = (last - first).max(1.0);
    if load.is_nan() || load <= 0.0 || !demand.is_finite() {
        return 1;
    }
    let gpus = (demand / (span * load)).ceil();
    if gpus >= f64::from(u32::MAX) { u32::MAX } else { (gpus as u32).max(1) }
}

/// A job's GPU demand in GPUs: its GPUs × the compute fraction of its slice on `model`.
pub fn gpu_demand(job: &Job, model: &GpuModel) -> f64 {
    let total = u32::from(model.compute_slices.max(1));
    let slices = compute_slices_for(job.gpu_milli, model);
    f64::from(job.num_gpu) * f64::from(slices) / f64::from(total)
}

/// Compute slices for a share of `milli`/1000 of a GPU of `model` (at least 1, at most all).
pub fn compute_slices_for(milli: u32, model: &GpuModel) -> u8 {
    let total = u32::from(model.compute_slices.max(1));
    let s = (u64::from(milli.min(1000)) * u64::from(total)).div_ceil(1000);
    u8::try_from(s.clamp(1, u64::from(total))).unwrap_or(model.compute_slices)
}

/// A sharing policy, named on the command line exactly as its `Display` writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySpec {
    /// Whole-GPU FIFO: no MIG, each job takes whole GPUs at full speed.
    Whole,
    /// One static MIG layout on every GPU, repartitioning off; `None`: search for the best.
    Static { layout: Option<Vec<String>> },
    /// MPS sharing of whole GPUs (no MIG).
    Mps,
    /// Tessera's dynamic MIG: repartitioning on, each job asks for its smallest fitting slice.
    Dynamic,
    /// Dynamic MIG plus MPS sharing of instances by small jobs.
    DynamicMps,
}

impl PolicySpec {
    /// Whether the core may repartition.
    pub fn repartition(&self) -> bool {
        matches!(self, PolicySpec::Dynamic | PolicySpec::DynamicMps)
    }
}

impl fmt::Display for PolicySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicySpec::Whole => f.write_str("whole"),
            PolicySpec::Static { layout: None } => f.write_str("static"),
            PolicySpec::Static { layout: Some(l) } => write!(f, "static:{}", l.join("+")),
            PolicySpec::Mps => f.write_str("mps"),
            PolicySpec::Dynamic => f.write_str("dynamic"),
            PolicySpec::DynamicMps => f.write_str("dynamic+mps"),
        }
    }
}

impl FromStr for PolicySpec {
    type Err = TimeError;

    fn from_str(s: &str) -> Result<Self, TimeError> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "whole" => Ok(PolicySpec::Whole),
            "static" => Ok(PolicySpec::Static { layout: None }),
            "mps" => Ok(PolicySpec::Mps),
            "dynamic" => Ok(PolicySpec::Dynamic),
            "dynamic+mps" => Ok(PolicySpec::DynamicMps),
            _ => {
                if let Some(l) = t.strip_prefix("static:") {
                    let names: Vec<String> =
                        l.split('+').map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect();
                    if names.is_empty() {
                        return Err(TimeError::Policy { spec: s.to_string(), reason: "empty layout".into() });
                    }
                    for n in &names {
                        if profile_compute(n).is_none() {
                            return Err(TimeError::Policy {
                                spec: s.to_string(),
                                reason: format!("'{n}' is not a profile name like 3g or 3g.20gb"),
                            });
                        }
                    }
                    return Ok(PolicySpec::Static { layout: Some(names) });
                }
                Err(TimeError::Policy { spec: s.to_string(), reason: "unknown policy".into() })
            }
        }
    }
}

/// The compute slices a profile short name starts with (`3g`, `3g.20gb` → 3).
fn profile_compute(name: &str) -> Option<u8> {
    let head = name.split('.').next()?;
    head.strip_suffix('g')?.parse::<u8>().ok().filter(|n| *n > 0)
}

fn standard(model: &GpuModel) -> impl Iterator<Item = &tessera_mig::Profile> {
    model.profiles.iter().filter(|p| p.kind == ProfileKind::Standard)
}

/// A layout entry as its compute size only (`3g.20gb` → `3g`), for reading a layout named on one
/// GPU model on another: there `1g.10gb` may be a different profile (on an A100-40GB, the 1g
/// with twice the memory, taking two placement units), so only the compute size carries over.
pub(crate) fn compute_only(name: &str) -> String {
    profile_compute(name).map_or_else(|| name.to_string(), |c| format!("{c}g"))
}

/// The profile a layout entry names on `model`: the exact name, else the smallest standard
/// profile with that many compute slices.
fn layout_profile(model: &GpuModel, name: &str) -> Option<u32> {
    if let Ok(p) = model.profile(name)
        && p.kind == ProfileKind::Standard
    {
        return Some(p.id);
    }
    let c = profile_compute(name)?;
    standard(model).filter(|p| p.compute_slices == c).min_by_key(|p| (p.memory_slices, p.id)).map(|p| p.id)
}

/// A layout given by profile names, placed on `model` by the planner.
pub fn resolve_layout(model: &GpuModel, names: &[String]) -> Result<Vec<Instance>, TimeError> {
    let label = names.join("+");
    let mut wanted = Vec::new();
    for n in names {
        let id = layout_profile(model, n).ok_or_else(|| TimeError::Layout {
            layout: label.clone(),
            model: model.name.clone(),
            reason: format!("no standard profile '{n}'"),
        })?;
        wanted.push(WantedInstance::new(id));
    }
    tessera_mig::place(model, &wanted, &[]).map(|p| p.layout).map_err(|e| TimeError::Layout {
        layout: label,
        model: model.name.clone(),
        reason: e.to_string(),
    })
}

/// The candidate static layouts of `model`: every maximal layout of the standard profiles that
/// a compute-slice request resolves to (the fewest memory slices per compute count), one per
/// multiset of profiles, largest profiles first in each name.
pub fn static_candidates(model: &GpuModel) -> Vec<Vec<String>> {
    let mut ids: Vec<u32> = Vec::new();
    for c in 1..=model.compute_slices {
        if let Some(p) = standard(model).filter(|p| p.compute_slices == c).min_by_key(|p| (p.memory_slices, p.id)) {
            ids.push(p.id);
        }
    }
    let layouts = match tessera_mig::planner_for(model) {
        Some(p) => p.maximal_layouts(Some(&ids)),
        None => tessera_mig::Planner::new(model).maximal_layouts(Some(&ids)),
    };
    let mut out: Vec<Vec<String>> = Vec::new();
    for l in layouts {
        let mut ps: Vec<&tessera_mig::Profile> = l.iter().filter_map(|i| model.profile_by_id(i.profile_id)).collect();
        ps.sort_by_key(|p| (std::cmp::Reverse(p.compute_slices), p.memory_slices));
        let names: Vec<String> = ps.iter().map(|p| p.name.clone()).collect();
        if !out.contains(&names) {
            out.push(names);
        }
    }
    out.sort_by(|a, b| a.len().cmp(&b.len()).then(a.cmp(b)));
    out
}

/// Seconds from `30s`, `1.5m`, `2h`, `500ms` or a bare number of seconds.
pub fn parse_duration_s(value: &str) -> Result<f64, TimeError> {
    let v = value.trim();
    let err = |reason: &str| TimeError::Duration { value: value.to_string(), reason: reason.to_string() };
    let (num, unit) = match v.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&v[..i], &v[i..]),
        None => (v, "s"),
    };
    let n: f64 = num.trim().parse().map_err(|_| err("expected a number with a unit: 30s, 500ms, 2m, 1h"))?;
    if !n.is_finite() || n < 0.0 {
        return Err(err("must be 0 or more"));
    }
    let mult = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(err("unknown unit (ms, s, m, h)")),
    };
    Ok(n * mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(name: &str) -> &'static GpuModel {
        tessera_mig::catalog().model(name).unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn cluster_specs() {
        let c: ClusterSpec = "64xA100-40GB".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((c.gpus(), c.nodes()), (64, 8));
        let c: ClusterSpec = "8x8xH100-80GB".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((c.gpus(), c.nodes(), c.to_string().as_str()), (64, 8, "8x8xH100-80GB"));
        let c: ClusterSpec = "10xA100-40GB+2x4xA100-80GB".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((c.gpus(), c.nodes()), (18, 4));
        let e = "64xB999".parse::<ClusterSpec>().unwrap_err().to_string();
        assert!(e.contains("unknown GPU model"), "{e}");
        assert!("A100".parse::<ClusterSpec>().is_err());
        assert!("0xA100-40GB".parse::<ClusterSpec>().is_err());
    }

    #[test]
    fn policies_parse_and_print() {
        for p in ["whole", "static", "mps", "dynamic", "dynamic+mps", "static:3g+2g+2g"] {
            assert_eq!(p.parse::<PolicySpec>().map(|x| x.to_string()).ok().as_deref(), Some(p));
        }
        let e = "fancy".parse::<PolicySpec>().unwrap_err().to_string();
        assert!(e.contains("whole, static") && e.contains("dynamic+mps"), "{e}");
        assert!("static:3x".parse::<PolicySpec>().is_err());
    }

    #[test]
    fn layouts_resolve_and_candidates_cover_miso() {
        let a = model("A100-40GB");
        let l = resolve_layout(a, &["3g".into(), "2g.10gb".into(), "2g".into()]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(l.len(), 3);
        assert!(resolve_layout(a, &["4g".into(), "4g".into()]).is_err());
        // An H100 layout read on an A100-40GB by compute size: 1g.10gb is the 1g with 2 units
        // there, which would not fit next to a 3g; by size it is the 1-unit 1g.5gb.
        let h100_layout: Vec<String> = ["3g.40gb", "1g.10gb", "1g.10gb", "1g.10gb"].map(String::from).to_vec();
        assert!(resolve_layout(a, &h100_layout).is_err());
        let by_size: Vec<String> = h100_layout.iter().map(|n| compute_only(n)).collect();
        assert_eq!(resolve_layout(a, &by_size).map(|l| l.len()).ok(), Some(4));
        let h = model("H100-80GB");
        assert_eq!(resolve_layout(h, &["3g".into(), "2g".into(), "2g".into()]).map(|l| l.len()).ok(), Some(3));
        let c = static_candidates(a);
        let want = ["3g.20gb", "2g.10gb", "2g.10gb"].map(String::from).to_vec();
        assert!(c.contains(&want), "{c:?}");
        assert!(c.contains(&vec!["7g.40gb".to_string()]));
        // MISO's 18 partitions are 13 multisets; the planner also allows 4g+3g.
        assert_eq!(c.len(), 14, "{c:?}");
        assert!(c.contains(&["4g.20gb", "3g.20gb"].map(String::from).to_vec()));
    }

    #[test]
    fn sizing_and_durations() {
        let a = model("A100-40GB");
        let job = |s: f64, milli: u32| Job {
            id: format!("j{s}"),
            submit_s: s,
            duration_s: 100.0,
            tenant: "t".into(),
            num_gpu: 1,
            gpu_milli: milli,
            gpu_mem_mib: 0,
            cpus: 0.0,
            mem_mib: 0,
            model_class: String::new(),
        };
        // 11 jobs of 1 GPU × 100 s over 100 s: 11 GPU-s per s; at load 0.5 → 22 GPUs.
        let jobs: Vec<Job> = (0..11).map(|i| job(f64::from(i) * 10.0, 1000)).collect();
        assert_eq!(size_for_load(&jobs, 0.5, a), 22);
        // 470 milli-GPU rounds up to 4 of 7 slices.
        assert_eq!(compute_slices_for(470, a), 4);
        assert_eq!(compute_slices_for(1, a), 1);
        assert_eq!(parse_duration_s("30s").ok(), Some(30.0));
        assert_eq!(parse_duration_s("1").ok(), Some(1.0));
        assert_eq!(parse_duration_s("500ms").ok(), Some(0.5));
        assert!(parse_duration_s("-1s").is_err() && parse_duration_s("3 parsecs").is_err());
    }
}
