//! `tessera slurm gres` and `sync`: the node's GRES files from the daemon's layout.
//!
//! Slurm numbers a node's GPU records grouped by Type in order of first appearance, then in file
//! order, and a running job keeps its numbers across a restart; so the files are written
//! already grouped, in an order that keeps every index a job holds on the same instance
//! (`tessera_slurm::layout::order_records`). A change is written only while the node is drained
//! (no job can be given an index between the read of what is held and the restart), then Slurm
//! is restarted as `slurm.restart` says (22.05 keeps a node's old GRES through `scontrol
//! reconfigure`), then the drain ends.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;
use tessera_host::files::{WriteOptions, write_atomic};
use tessera_slurm::jobs::SlurmNode;
use tessera_slurm::layout::{
    FileStyle, GresMap, SliceRecord, node_gres, order_records, placeholder_node_line, render_gres_conf,
};

use super::Ctx;
use super::cores::CoreTopology;
use super::ctl::Slurm;
use super::records::slice_records;
use crate::cli::{Output, SlurmGresFormat};

/// The reason a drain by `sync` carries (what `scontrol show node` shows users).
pub const SYNC_REASON: &str = "tessera: updating GRES for a new MIG layout";

/// How long slurmd may take to register again after the restart.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(90);

/// Who drains the node around a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// `sync` drains (with [`SYNC_REASON`]) and resumes the node itself.
    Own,
    /// The caller (the agent) drained it already and resumes it.
    Caller,
}

/// What `sync` did.
#[derive(Debug, Clone, Serialize)]
pub struct SyncOutcome {
    pub node: String,
    /// The files changed and Slurm was restarted.
    pub changed: bool,
    /// GPU records written.
    pub records: usize,
    /// GRES indices running jobs hold, kept on their instances.
    pub held: Vec<u32>,
    /// The node's `Gres=`.
    pub gres: String,
}

/// The files `sync` writes, computed.
struct Planned {
    style: FileStyle,
    mps: bool,
    ordered: Vec<SliceRecord>,
    gres_text: String,
    node_line: Option<String>,
    node_gres: String,
}

/// The file style `slurm.files` asks for on this Slurm.
fn style(ctx: &Ctx, slurm: &Slurm) -> anyhow::Result<FileStyle> {
    Ok(match ctx.cfg.files.as_str() {
        "single" => FileStyle::Single,
        "multiple" => FileStyle::Multiple,
        _ => {
            let version = slurm.version()?;
            if version < (23, 2) { FileStyle::Single } else { FileStyle::Multiple }
        }
    })
}

/// The node's `Gres=` with MPS counts (100 per GPU record) when the cluster has `gres/mps`.
fn full_node_gres(ordered: &[SliceRecord], mps: bool) -> String {
    let mut gres = node_gres(ordered);
    if mps && !ordered.is_empty() {
        if !gres.is_empty() {
            gres.push(',');
        }
        gres.push_str(&format!("mps:{}", 100 * ordered.len()));
    }
    gres
}

/// gres.conf text: the GPU records, then one MPS record of 100 shares per GPU record on the
/// same file (only with one `File=` per record: Slurm types each MPS record after the GPU record
/// of its file, so `--gres=mps:50` gets one slice's shares).
fn gres_text(ctx: &Ctx, ordered: &[SliceRecord], style: FileStyle, mps: bool) -> anyhow::Result<String> {
    let root = ctx.dev_root();
    let mut text = render_gres_conf(ordered, &root, style)?;
    if mps && style == FileStyle::Single {
        for r in ordered {
            let file = match r.ci_caps_minor {
                Some(ci) if r.mig_uuid.is_some() => format!("{root}/dev/nvidia-caps/nvidia-cap{ci}"),
                _ => format!("{root}/dev/nvidia{}", r.gpu_minor),
            };
            text.push_str(&format!("Name=mps Count=100 File={file}\n"));
        }
    }
    Ok(text)
}

fn plan(ctx: &Ctx, slurm: &Slurm, held: &BTreeMap<u32, SliceRecord>) -> anyhow::Result<Planned> {
    let style = style(ctx, slurm)?;
    let mps = slurm.gres_types()?.iter().any(|t| t == "mps");
    let gpus = crate::jobs::ok(ctx.client.gpus())?;
    let records = slice_records(&gpus, &CoreTopology::read());
    let ordered = order_records(records, held).map_err(|e| anyhow::anyhow!("{e}"))?;
    let gres_text = gres_text(ctx, &ordered, style, mps)?;
    let node_gres = full_node_gres(&ordered, mps);
    let node_line = ctx.cfg.node_file.as_ref().map(|_| {
        let params = ctx.cfg.node_params.trim();
        let sep = if params.is_empty() { "" } else { " " };
        format!("NodeName={}{sep}{params} Gres={node_gres}\n", ctx.node)
    });
    Ok(Planned { style, mps, ordered, gres_text, node_line, node_gres })
}

/// The map written by the last sync, if any.
pub fn read_map(ctx: &Ctx) -> anyhow::Result<Option<GresMap>> {
    let path = ctx.map_path();
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(
            serde_json::from_slice(&bytes).with_context(|| format!("reading the GRES index map {}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The records at the GRES indices Slurm has given to jobs on this node, from the last map.
fn held(ctx: &Ctx, slurm: &Slurm) -> anyhow::Result<BTreeMap<u32, SliceRecord>> {
    match slurm.node(&ctx.node)? {
        Some(node) => held_records(ctx, &node),
        None => Ok(BTreeMap::new()),
    }
}

/// The records at the GPU indices `node`'s `GresUsed` says jobs hold, from the last map; an
/// error when the map cannot say which instances they are (none, or a stale one).
pub fn held_records(ctx: &Ctx, node: &SlurmNode) -> anyhow::Result<BTreeMap<u32, SliceRecord>> {
    let indices = node.used_indices();
    if indices.is_empty() {
        return Ok(BTreeMap::new());
    }
    let Some(map) = read_map(ctx)? else {
        bail!(
            "Slurm has given GPU indices {indices:?} of node {} to jobs, but {} does not exist: Tessera \
             cannot tell which instances they are; wait until those jobs end, then sync",
            ctx.node,
            ctx.map_path().display()
        );
    };
    let held = map.held(indices.iter().copied());
    if let Some(i) = indices.iter().find(|i| !held.contains_key(i)) {
        bail!(
            "Slurm has given GPU index {i} of node {} to a job, but the GRES map has {} records: the map is not \
             the one Slurm runs with; wait until the node's jobs end, then sync",
            ctx.node,
            map.records.len()
        );
    }
    Ok(held)
}

fn current(path: &std::path::Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// `tessera slurm gres`.
pub fn print(ctx: &Ctx, format: SlurmGresFormat, output: Output) -> anyhow::Result<()> {
    let slurm = Slurm;
    if format == SlurmGresFormat::Future {
        print!("{}", future_line(ctx)?);
        return Ok(());
    }
    // What sync would write now, keeping the indices running jobs hold.
    let held = held(ctx, &slurm).unwrap_or_default();
    let p = plan(ctx, &slurm, &held)?;
    let text = match format {
        SlurmGresFormat::Gres => p.gres_text.clone(),
        SlurmGresFormat::Node => {
            let params = ctx.cfg.node_params.trim();
            let sep = if params.is_empty() { "" } else { " " };
            format!("NodeName={}{sep}{params} Gres={}\n", ctx.node, p.node_gres)
        }
        SlurmGresFormat::Future => future_line(ctx)?,
    };
    match output {
        Output::Json => {
            #[derive(Serialize)]
            struct Json<'a> {
                node: &'a str,
                style: FileStyle,
                mps: bool,
                gres: &'a str,
                records: &'a [SliceRecord],
                text: &'a str,
            }
            let j = Json {
                node: &ctx.node,
                style: p.style,
                mps: p.mps,
                gres: &p.node_gres,
                records: &p.ordered,
                text: &text,
            };
            println!("{}", serde_json::to_string_pretty(&j)?);
        }
        _ => print!("{text}"),
    }
    Ok(())
}

/// A `State=FUTURE` node offering, per profile of this node's GPU models, as many as fit on
/// all of them: Slurm then queues a job for any profile instead of refusing it at submission.
fn future_line(ctx: &Ctx) -> anyhow::Result<String> {
    let gpus = crate::jobs::ok(ctx.client.gpus())?;
    let mut types: BTreeMap<String, u32> = BTreeMap::new();
    for g in &gpus.gpus {
        let Some(model) = g.model.as_deref().and_then(|m| tessera_mig::catalog().model(m).ok()) else { continue };
        for prof in &model.profiles {
            *types.entry(prof.name.clone()).or_default() += u32::from(prof.max_count);
        }
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(1));
    let list: Vec<(String, u32)> = types.into_iter().collect();
    Ok(format!("{}\n", placeholder_node_line("tessera-mig-future", cpus, &list)))
}

/// `tessera slurm sync` (and the agent's sync after a change).
/// Whether Slurm runs with the GRES of the daemon's layout now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The files and the map say what the layout is, and Slurm took them up.
    Agrees,
    /// They do not (why); a sync may bring them in step now.
    Out(String),
    /// They do not, and a sync would be refused while jobs hold GPU indices (why).
    Blocked(String),
}

/// Where the GRES stand against the daemon's layout, given what jobs hold (`held`), with what
/// sync would write.
fn step_with(ctx: &Ctx, slurm: &Slurm, held: &BTreeMap<u32, SliceRecord>) -> anyhow::Result<(Step, Planned)> {
    let p = plan(ctx, slurm, held)?;
    let map = read_map(ctx)?;
    let map_same = map.as_ref().is_some_and(|m| m.records == p.ordered && m.node == ctx.node);
    let node_same = match (&ctx.cfg.node_file, &p.node_line) {
        (Some(f), Some(line)) => current(f).as_deref() == Some(line.as_str()),
        _ => true,
    };
    let gres_same = current(&ctx.cfg.gres_file).as_deref() == Some(p.gres_text.as_str());
    // A sync killed between writing the files and Slurm taking them up left them "in step" with
    // a Slurm still running the old ones: its marker says the restart is still owed.
    let step = if ctx.restart_pending_path().exists() {
        Step::Out(format!("a restart of Slurm is owed ({} exists)", ctx.restart_pending_path().display()))
    } else if map_same && node_same && gres_same {
        Step::Agrees
    } else if let Some(old) = map.filter(|m| !held.is_empty() && m.records.len() != p.ordered.len()) {
        Step::Blocked(super::agent::count_changes(old.records.len(), p.ordered.len()))
    } else {
        Step::Out(format!(
            "the layout's {} GPU records are not the ones {} and the GRES map say",
            p.ordered.len(),
            ctx.cfg.gres_file.display()
        ))
    };
    Ok((step, p))
}

/// Where the GRES stand against the daemon's layout now (`me`: this node as Slurm sees it).
pub fn step(ctx: &Ctx, slurm: &Slurm, me: &SlurmNode) -> anyhow::Result<Step> {
    let held = held_records(ctx, me)?;
    Ok(step_with(ctx, slurm, &held)?.0)
}

pub fn sync(ctx: &Ctx, slurm: &Slurm, drain: Drain) -> anyhow::Result<SyncOutcome> {
    // Nothing to do when the files already say what the layout is.
    let before = held(ctx, slurm)?;
    let (step, p) = step_with(ctx, slurm, &before)?;
    if step == Step::Agrees {
        return Ok(SyncOutcome {
            node: ctx.node.clone(),
            changed: false,
            records: p.ordered.len(),
            held: before.keys().copied().collect(),
            gres: p.node_gres,
        });
    }
    let known = slurm.node(&ctx.node)?.is_some();
    let own = drain == Drain::Own && known;
    if own {
        slurm.drain(&ctx.node, SYNC_REASON)?;
    }
    let result = write_and_restart(ctx, slurm);
    match result {
        Ok(outcome) => {
            if own {
                slurm.resume(&ctx.node)?;
            }
            Ok(outcome)
        }
        Err(e) => {
            // Drained on purpose: a node whose GRES files and Slurm disagree must not get jobs.
            if own {
                let _ = slurm.drain(&ctx.node, "tessera: GRES sync failed, see tessera slurm sync");
            }
            Err(e)
        }
    }
}

/// Under the drain: what is held now (no new job can be given an index any more), the files,
/// the restart, and a check that Slurm took them.
fn write_and_restart(ctx: &Ctx, slurm: &Slurm) -> anyhow::Result<SyncOutcome> {
    let held = held(ctx, slurm)?;
    let p = plan(ctx, slurm, &held)?;
    if let Some(old) = read_map(ctx)?
        && !held.is_empty()
        && old.records.len() != p.ordered.len()
    {
        bail!(
            "refused while jobs hold GPU indices {:?} of node {}: {}; sync again when they end",
            held.keys().collect::<Vec<_>>(),
            ctx.node,
            super::agent::count_changes(old.records.len(), p.ordered.len())
        );
    }
    let generation = read_map(ctx)?.map_or(1, |m| m.generation + 1);
    let map = GresMap { version: 1, node: ctx.node.clone(), generation, style: p.style, records: p.ordered.clone() };
    let shared = WriteOptions { mode: 0o644, sync: true };
    std::fs::create_dir_all(&ctx.cfg.state_dir).with_context(|| format!("creating {}", ctx.cfg.state_dir.display()))?;
    // Before the first file: from here until Slurm is seen with the new GRES, a sync that is
    // killed leaves the restart owed to the next one (which writes the same files again).
    let marker = ctx.restart_pending_path();
    write_atomic(&marker, format!("{generation}\n").as_bytes(), shared)
        .with_context(|| format!("writing {}", marker.display()))?;
    write_atomic(&ctx.cfg.gres_file, p.gres_text.as_bytes(), shared)
        .with_context(|| format!("writing {}", ctx.cfg.gres_file.display()))?;
    if let (Some(f), Some(line)) = (&ctx.cfg.node_file, &p.node_line) {
        write_atomic(f, line.as_bytes(), shared).with_context(|| format!("writing {}", f.display()))?;
    }
    // The map before the restart: indices jobs hold are the same in the old and the new order,
    // and no other index can be given out while the node is drained.
    write_atomic(&ctx.map_path(), &serde_json::to_vec_pretty(&map)?, shared)
        .with_context(|| format!("writing {}", ctx.map_path().display()))?;
    slurm.restart(&ctx.cfg.restart)?;
    let node = slurm.wait_responding(&ctx.node, REGISTER_TIMEOUT)?;
    let want = tessera_slurm::gres::parse_gres_list(&p.node_gres)?;
    // GPU records only: Slurm shows MPS shares per type (`mps:1g.10gb:300`), written as one count.
    let gpu = |g: &&tessera_slurm::gres::GresCount| g.name == "gpu";
    let counts = |list: &[tessera_slurm::gres::GresCount]| -> BTreeMap<Option<String>, u64> {
        list.iter().filter(gpu).map(|g| (g.kind.clone(), g.count)).collect()
    };
    if counts(&node.gres) != counts(&want) {
        bail!(
            "after the restart Slurm says node {} has Gres={} but {} says {}: is slurm.conf's NodeName line for it \
             the one in slurm.node_file, and did slurm.restart restart slurmctld?",
            ctx.node,
            node.gres
                .iter()
                .map(|g| format!("{}:{}:{}", g.name, g.kind.clone().unwrap_or_default(), g.count))
                .collect::<Vec<_>>()
                .join(","),
            ctx.cfg.gres_file.display(),
            p.node_gres
        );
    }
    match std::fs::remove_file(&marker) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing {}", marker.display()));
        }
        _ => {}
    }
    Ok(SyncOutcome {
        node: ctx.node.clone(),
        changed: true,
        records: p.ordered.len(),
        held: held.keys().copied().collect(),
        gres: p.node_gres,
    })
}

/// `tessera slurm sync`'s answer.
pub fn report(o: &SyncOutcome, output: Output) {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(o).unwrap_or_default()),
        _ if o.changed => println!(
            "node {}: GRES updated ({} GPU records, Gres={}); {} held indices kept",
            o.node,
            o.records,
            o.gres,
            o.held.len()
        ),
        _ => println!("node {}: GRES already in step ({} GPU records, Gres={})", o.node, o.records, o.gres),
    }
}
