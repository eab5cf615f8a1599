//! The GPU records Tessera writes for Slurm: gres.conf lines, the node's `Gres=` value, the
//! placeholder node that lets jobs queue for profiles no node has yet, and the order of the
//! records, which is Slurm's GRES index.
//!
//! slurmd numbers a node's GPU records grouped by Type, types in order of first appearance, then
//! in file order; that number is the GRES index Slurm hands out (`IDX:`, `SLURM_JOB_GPUS`,
//! `CUDA_VISIBLE_DEVICES` without device constraint). Tessera writes the records already grouped,
//! so a record's index is its position in the file. A running job keeps its index across a slurmd
//! restart, so a new file must keep every held record at the index it had: [`order_records`]
//! finds such an order.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// A record's identity: GPU index, profile (Slurm Type) and first placement slice.
pub type SliceKey = (u32, String, u8);

/// One GPU record: a MIG device (one GPU instance with one compute instance) or a whole GPU with
/// MIG off.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SliceRecord {
    /// The GPU's index on the node.
    pub gpu: u32,
    /// The GPU's device minor (`/dev/nvidia<minor>`).
    pub gpu_minor: u32,
    pub gpu_uuid: String,
    /// The Slurm Type: the MIG profile (`1g.10gb`), or for a GPU with MIG off the caller's name
    /// for its model (`h100`).
    pub profile: String,
    /// The GPU instance's first placement slice; 0 for a whole GPU.
    pub start: u8,
    /// The GPU instance's size in placement slices.
    pub size: u8,
    /// The MIG device's UUID; `None` for a GPU with MIG off.
    pub mig_uuid: Option<String>,
    /// The GPU instance's `/dev/nvidia-caps/nvidia-cap<minor>`.
    pub gi_caps_minor: Option<u32>,
    /// The compute instance's `/dev/nvidia-caps/nvidia-cap<minor>`.
    pub ci_caps_minor: Option<u32>,
    pub numa_node: Option<u32>,
    /// The CPUs near the GPU, as a Slurm core list (`0-55`).
    pub cores: Option<String>,
}

impl SliceRecord {
    /// The record's identity: (gpu, profile, start).
    pub fn key(&self) -> SliceKey {
        (self.gpu, self.profile.clone(), self.start)
    }

    fn is_mig(&self) -> bool {
        self.mig_uuid.is_some()
    }
}

/// How a record names its device files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileStyle {
    /// `File=` the compute instance's caps file: what works on Slurm 22.05 (whose slurmctld
    /// misassigns `MultipleFiles=` records when GresTypes has mps).
    #[default]
    Single,
    /// `MultipleFiles=` the GPU, the GPU instance's and the compute instance's files, as newer
    /// Slurm's NVML autodetect names a MIG device.
    Multiple,
}

/// Why records cannot be written as gres.conf.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// Without its caps file a MIG device cannot be isolated: Slurm would hand out a count.
    #[error(
        "GPU {gpu}'s {profile} instance at slice {start} has no {which} caps minor: Slurm cannot isolate it without its \
         /dev/nvidia-caps file"
    )]
    MissingCaps { gpu: u32, profile: String, start: u8, which: &'static str },
    /// A Type gres.conf and `--gres=gpu:<type>:N` cannot carry.
    #[error("'{profile}' cannot be a Slurm GRES Type (letters, digits and '._+-' only)")]
    BadType { profile: String },
    #[error("GPU {gpu}'s core list '{cores}' is not a Slurm core list such as '0-55,112-167'")]
    BadCores { gpu: u32, cores: String },
    /// slurmd groups records by Type: written ungrouped, positions would not be indices.
    #[error(
        "record {index} ({profile}) is apart from the earlier {profile} records: records must be grouped by Type, as \
         slurmd numbers them"
    )]
    NotGrouped { index: usize, profile: String },
    #[error("GPU {gpu}'s {profile} instance at slice {start} is listed twice")]
    Duplicate { gpu: u32, profile: String, start: u8 },
}

/// Why no order keeps the held records where they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    /// A job holds an index whose record no longer exists.
    #[error("GRES index {index} is held but its record (GPU {} {} at slice {}) is gone", key.0, key.1, key.2)]
    Gone { index: u32, key: SliceKey },
    /// No grouping by Type puts every held record at its index.
    #[error("no grouping of the records by Type keeps the held GRES indices {}", show_held(held))]
    NoOrder { held: Vec<(u32, String)> },
    /// More Types than the search covers.
    #[error(
        "{types} GPU Types on one node with held records: more than the {MAX_SEARCHED_TYPES} whose orders are searched"
    )]
    TooManyTypes { types: usize },
    #[error("GPU {}'s {} instance at slice {} is listed twice", key.0, key.1, key.2)]
    Duplicate { key: SliceKey },
}

fn show_held(held: &[(u32, String)]) -> String {
    held.iter().map(|(i, t)| format!("{i} ({t})")).collect::<Vec<_>>().join(", ")
}

/// Orders of up to this many Types are searched in full; beyond it the search stops after as
/// many steps as there are orders of this many (8! = 40320).
pub const MAX_SEARCHED_TYPES: usize = 8;
const SEARCH_STEPS: usize = 40_320;

/// The header of the gres.conf Tessera writes.
pub const GRES_CONF_HEADER: &str = "# Written by tessera slurm sync: do not edit; a record's position (from 0) is its \
                                    Slurm GRES index (records grouped by Type, as slurmd numbers them).";

/// `<dev_root>/dev/<rest>`; `""` and `"/"` are the real `/dev`.
fn dev_path(dev_root: &str, rest: &str) -> String {
    format!("{}/dev/{rest}", dev_root.trim_end_matches('/'))
}

fn check_type(profile: &str) -> Result<(), LayoutError> {
    let ok = !profile.is_empty() && profile.bytes().all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b));
    if ok { Ok(()) } else { Err(LayoutError::BadType { profile: profile.to_string() }) }
}

/// gres.conf for `records`, one line per record in the order given, which must be grouped by
/// Type (see [`group_by_type`], [`order_records`]).
pub fn render_gres_conf(records: &[SliceRecord], dev_root: &str, style: FileStyle) -> Result<String, LayoutError> {
    check_grouped(records)?;
    let mut out = String::from(GRES_CONF_HEADER);
    out.push('\n');
    for r in records {
        check_type(&r.profile)?;
        let _ = write!(out, "Name=gpu Type={}", r.profile);
        let gpu_file = dev_path(dev_root, &format!("nvidia{}", r.gpu_minor));
        if r.is_mig() {
            let missing =
                |which| LayoutError::MissingCaps { gpu: r.gpu, profile: r.profile.clone(), start: r.start, which };
            let cap = |minor: u32| dev_path(dev_root, &format!("nvidia-caps/nvidia-cap{minor}"));
            let ci = r.ci_caps_minor.ok_or_else(|| missing("compute instance"))?;
            match style {
                FileStyle::Single => {
                    let _ = write!(out, " File={}", cap(ci));
                }
                FileStyle::Multiple => {
                    let gi = r.gi_caps_minor.ok_or_else(|| missing("GPU instance"))?;
                    let _ = write!(out, " MultipleFiles={gpu_file},{},{}", cap(gi), cap(ci));
                }
            }
        } else {
            let _ = write!(out, " File={gpu_file}");
        }
        if let Some(cores) = &r.cores {
            let ok = !cores.is_empty() && cores.bytes().all(|b| b.is_ascii_digit() || b == b',' || b == b'-');
            if !ok {
                return Err(LayoutError::BadCores { gpu: r.gpu, cores: cores.clone() });
            }
            let _ = write!(out, " Cores={cores}");
        }
        out.push('\n');
    }
    Ok(out)
}

fn check_grouped(records: &[SliceRecord]) -> Result<(), LayoutError> {
    let mut seen_types = BTreeSet::new();
    let mut seen_keys = BTreeSet::new();
    for (index, r) in records.iter().enumerate() {
        if !seen_keys.insert(r.key()) {
            return Err(LayoutError::Duplicate { gpu: r.gpu, profile: r.profile.clone(), start: r.start });
        }
        let continues = index > 0 && records[index - 1].profile == r.profile;
        if !continues && !seen_types.insert(r.profile.as_str()) {
            return Err(LayoutError::NotGrouped { index, profile: r.profile.clone() });
        }
    }
    Ok(())
}

/// Each Type with its count, in order of first appearance.
fn type_counts(records: &[SliceRecord]) -> Vec<(&str, u32)> {
    let mut counts: Vec<(&str, u32)> = Vec::new();
    for r in records {
        match counts.iter_mut().find(|(t, _)| *t == r.profile) {
            Some((_, n)) => *n += 1,
            None => counts.push((&r.profile, 1)),
        }
    }
    counts
}

/// The slurm.conf `Gres=` value for the node: `gpu:1g.10gb:3,gpu:3g.40gb:1`, Types in order of
/// first appearance; `""` for no records.
pub fn node_gres(records: &[SliceRecord]) -> String {
    type_counts(records).iter().map(|(t, n)| format!("gpu:{t}:{n}")).collect::<Vec<_>>().join(",")
}

/// The records grouped by Type, Types in order of first appearance, file order within a Type:
/// the order slurmd numbers them in.
pub fn group_by_type(records: &[SliceRecord]) -> Vec<SliceRecord> {
    let types = type_counts(records);
    types.iter().flat_map(|(t, _)| records.iter().filter(move |r| r.profile == *t)).cloned().collect()
}

/// How a Type ranks in the preferred order: MIG profiles by compute slices (the name's leading
/// `Ng`) ascending, memory (`.NNgb`) ascending, then name, whole GPUs last. Small slices first:
/// they are the most numerous and most often held, while dynamic changes mostly make and unmake
/// larger ones, so a change rarely has to move a held small slice's index (a running job's
/// index must stay where it is, [`order_records`]).
fn type_preference(profile: &str, whole: bool) -> (bool, u32, u32, String) {
    let (compute, memory) = profile_size(profile);
    (whole, compute, memory, profile.to_string())
}

/// (compute slices, memory GB) from a profile name like `3g.40gb+me`; 0 where the name says not.
fn profile_size(profile: &str) -> (u32, u32) {
    let leading = |s: &str, unit: &str| -> u32 {
        let digits = s.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && s[digits..].starts_with(unit) { s[..digits].parse().unwrap_or(0) } else { 0 }
    };
    let compute = leading(profile, "g");
    let memory = profile.split_once('.').map_or(0, |(_, rest)| leading(rest, "gb"));
    (compute, memory)
}

/// An order of `records`, grouped by Type, in which every index in `held` holds a record with
/// the key of the record held there before.
///
/// Among the orders that keep them, the one chosen puts Types in the first order, by the
/// preference (compute slices, memory, name: smallest first; whole GPUs last), that works —
/// without held records exactly the preferred order — and fills each Type's free positions with
/// its other records by (gpu, start). Every order of the Types is searched (a node has few), so
/// [`OrderError::NoOrder`] means none exists.
pub fn order_records(
    records: Vec<SliceRecord>,
    held: &BTreeMap<u32, SliceRecord>,
) -> Result<Vec<SliceRecord>, OrderError> {
    let mut by_key: HashMap<SliceKey, SliceRecord> = HashMap::with_capacity(records.len());
    for r in records {
        if let Some(old) = by_key.insert(r.key(), r) {
            return Err(OrderError::Duplicate { key: old.key() });
        }
    }
    for (&index, r) in held {
        if !by_key.contains_key(&r.key()) {
            return Err(OrderError::Gone { index, key: r.key() });
        }
    }
    let no_order = || OrderError::NoOrder { held: held.iter().map(|(&i, r)| (i, r.profile.clone())).collect() };
    let n = by_key.len();
    // One record held at two indices, or an index past the end: nothing keeps that.
    let held_keys: BTreeSet<SliceKey> = held.values().map(SliceRecord::key).collect();
    if held_keys.len() != held.len() || held.keys().any(|&i| i as usize >= n) {
        return Err(no_order());
    }

    // The Types in preferred order, each with its records by (gpu, start) and its held indices.
    let mut types: Vec<TypeGroup> = Vec::new();
    let mut sorted: Vec<SliceRecord> = by_key.into_values().collect();
    sorted.sort_by_key(|r| (r.gpu, r.start));
    for r in sorted {
        match types.iter_mut().find(|t| t.profile == r.profile) {
            Some(t) => t.records.push(r),
            None => types.push(TypeGroup { profile: r.profile.clone(), records: vec![r], held: Vec::new() }),
        }
    }
    for (&index, r) in held {
        if let Some(t) = types.iter_mut().find(|t| t.profile == r.profile) {
            t.held.push((index as usize, r.key()));
        }
    }
    types.sort_by_cached_key(|t| type_preference(&t.profile, t.records.iter().all(|r| !r.is_mig())));

    let mut search = Search { types: &types, held_at: held.keys().map(|&i| i as usize).collect(), steps: 0 };
    let mut chosen = Vec::with_capacity(types.len());
    let mut used = vec![false; types.len()];
    match search.first(0, &mut used, &mut chosen) {
        Found::Yes => {}
        Found::No => return Err(no_order()),
        Found::GaveUp => return Err(OrderError::TooManyTypes { types: types.len() }),
    }

    let mut out = Vec::with_capacity(n);
    for &t in &chosen {
        let group = &types[t];
        let offset = out.len();
        let mut slots: Vec<Option<SliceRecord>> = vec![None; group.records.len()];
        let mut rest = Vec::new();
        for r in &group.records {
            match group.held.iter().find(|(_, k)| *k == r.key()) {
                Some(&(index, _)) => {
                    // The search put every held index of this Type inside its block.
                    if let Some(slot) = slots.get_mut(index - offset) {
                        *slot = Some(r.clone());
                    }
                }
                None => rest.push(r.clone()),
            }
        }
        let mut rest = rest.into_iter();
        out.extend(slots.into_iter().filter_map(|slot| slot.or_else(|| rest.next())));
    }
    Ok(out)
}

struct TypeGroup {
    profile: String,
    /// By (gpu, start).
    records: Vec<SliceRecord>,
    /// (index, key) of the held records of this Type.
    held: Vec<(usize, SliceKey)>,
}

enum Found {
    Yes,
    No,
    GaveUp,
}

/// A depth-first search over the orders of the Types, in preference order: the first order
/// found is the most preferred that keeps every held index.
struct Search<'a> {
    types: &'a [TypeGroup],
    held_at: BTreeSet<usize>,
    steps: usize,
}

impl Search<'_> {
    fn first(&mut self, offset: usize, used: &mut [bool], chosen: &mut Vec<usize>) -> Found {
        if chosen.len() == self.types.len() {
            return Found::Yes;
        }
        for t in 0..self.types.len() {
            if used[t] {
                continue;
            }
            self.steps += 1;
            if self.types.len() > MAX_SEARCHED_TYPES && self.steps > SEARCH_STEPS {
                return Found::GaveUp;
            }
            let group = &self.types[t];
            let end = offset + group.records.len();
            // The Type's block must hold all its held records and no other Type's.
            let own_inside = group.held.iter().all(|&(i, _)| (offset..end).contains(&i));
            let others_inside = self.held_at.range(offset..end).count() != group.held.len();
            if !own_inside || others_inside {
                continue;
            }
            used[t] = true;
            chosen.push(t);
            match self.first(end, used, chosen) {
                Found::No => {}
                done => return done,
            }
            chosen.pop();
            used[t] = false;
        }
        Found::No
    }
}

/// What Tessera last wrote for a node: the records in GRES index order (a record's index is its
/// position), kept so the next write can keep held records in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GresMap {
    /// The format's version, [`GresMap::VERSION`].
    pub version: u32,
    pub node: String,
    /// Counts the writes for this node.
    pub generation: u64,
    pub style: FileStyle,
    pub records: Vec<SliceRecord>,
}

impl GresMap {
    /// The format version this crate writes.
    pub const VERSION: u32 = 1;

    /// The GRES index of the record with `key`.
    pub fn index_of(&self, key: &SliceKey) -> Option<u32> {
        self.records.iter().position(|r| r.key() == *key).and_then(|i| u32::try_from(i).ok())
    }

    /// The record at GRES index `index`.
    pub fn record(&self, index: u32) -> Option<&SliceRecord> {
        self.records.get(index as usize)
    }

    /// The records at `indices` (those Slurm says are held), as [`order_records`] takes them;
    /// indices past the map are left out.
    pub fn held(&self, indices: impl IntoIterator<Item = u32>) -> BTreeMap<u32, SliceRecord> {
        indices.into_iter().filter_map(|i| Some((i, self.record(i)?.clone()))).collect()
    }
}

/// A slurm.conf line for a node that never registers (`State=FUTURE`) but lists every profile
/// with a count: with it Slurm accepts a job for a profile no real node has right now and
/// queues it (pending with Reason `ReqNodeNotAvail`) instead of refusing it at submission, so
/// Tessera can see the job and make the slice.
pub fn placeholder_node_line(name: &str, cpus: u32, types: &[(String, u32)]) -> String {
    let mut line = format!("NodeName={name} State=FUTURE CPUs={cpus}");
    if !types.is_empty() {
        let gres: Vec<String> = types.iter().map(|(t, n)| format!("gpu:{t}:{n}")).collect();
        let _ = write!(line, " Gres={}", gres.join(","));
    }
    line
}
