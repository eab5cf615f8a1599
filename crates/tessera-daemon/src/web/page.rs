//! The web view's pages, rendered from typed data and nothing else: no I/O, no clock, so the
//! same [`View`] always gives the same bytes (the live stream sends a page only when they
//! change). Each GPU is drawn as its placement grid in SVG, the geometry `tessera mig gpus`
//! draws: placement units across, each instance a block over `[start, start + placement size)`
//! of its profile, free units apart from stranded ones (free, but no profile can use them any
//! more, from the planner's fragmentation report). Every text from outside — job commands,
//! users, tenants, keys — goes through [`esc`]; the page carries no inline script or style, so
//! a strict `Content-Security-Policy` holds.

use std::fmt::Write as _;

use tessera_sched::GpuRequest;

use crate::wire::{GpuInfo, InstanceInfo, JobState, JobView, NodeEvent, Occupant};

/// Everything one page shows, as one caller may see it (the API's answers for that caller).
#[derive(Debug, Clone, Default)]
pub struct View {
    /// The node's host name.
    pub node: String,
    /// Who is looking.
    pub user: String,
    pub admin: bool,
    /// The caller came with a login session (show the logout button).
    pub session: bool,
    /// `nvml` or `sim`.
    pub backend: String,
    pub gpus: Vec<GpuInfo>,
    /// The live jobs the caller may see (an admin's: every user's).
    pub jobs: Vec<JobView>,
    /// Recent events, newest first.
    pub events: Vec<NodeEvent>,
    /// Reads that failed, in words (shown instead of what they would have shown).
    pub problems: Vec<String>,
}

/// How a grid is drawn: units across (wide windows), or units down (narrow ones, where a row
/// per unit leaves every block the window's width for its words). The page carries both; the
/// stylesheet shows one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Orientation {
    Across,
    Down,
}

/// Across: the width of a placement unit and the height of the blocks, in the SVG's own
/// coordinates (the SVG scales by its viewBox), and the ruler's height above them.
const UNIT: u32 = 110;
const BLOCK: u32 = 112;
const RULER: u32 = 22;
/// Down: the SVG's width, a unit's row height, and the ruler's width left of the blocks.
const DOWN_WIDTH: u32 = 360;
const ROW: u32 = 46;
const DOWN_RULER: u32 = 28;
/// Font size and line height of a block's words.
const FONT: u32 = 20;
const LINE: u32 = 24;

/// `text` safe in HTML text and in double-quoted attributes: `& < > " '` as entities, and what
/// the CLI writes out for a terminal written out here too (`\u{1b}`:
/// [`tessera_host::text::needs_escape`]), so text cannot turn into markup nor hide or reorder
/// what is around it.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if tessera_host::text::needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// One instance block of a GPU's grid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Its index in the GPU's `instances`.
    pub instance: usize,
    pub start: u8,
    pub size: u8,
}

/// A GPU's placement grid: how many units across, the instance blocks, and the units no
/// instance covers, usable or stranded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grid {
    pub units: u8,
    pub blocks: Vec<Block>,
    /// Free units a profile could still use.
    pub free: Vec<u8>,
    /// Free units no profile can use any more.
    pub stranded: Vec<u8>,
}

/// The grid of a GPU: its model's placement units (the catalog's), each instance over its
/// placement; the free units split by the planner's fragmentation report. A GPU the catalog
/// does not know is as wide as its instances.
pub fn grid(g: &GpuInfo) -> Grid {
    let model = g.model.as_deref().and_then(|m| tessera_mig::catalog().model(m).ok());
    let reach = g.instances.iter().map(|i| i.start.saturating_add(i.size)).max().unwrap_or(1);
    let units = model.map_or(reach, |m| m.placement_units.max(reach)).max(1);
    let blocks: Vec<Block> = g
        .instances
        .iter()
        .enumerate()
        .map(|(k, i)| Block { instance: k, start: i.start, size: i.size.max(1) })
        .collect();
    let covered = |u: u8| blocks.iter().any(|b| u >= b.start && u < b.start.saturating_add(b.size));
    let empty: Vec<u8> = (0..units).filter(|&u| !covered(u)).collect();
    let stranded = match model.filter(|_| g.mig) {
        Some(m) => {
            let layout: Vec<tessera_mig::Instance> =
                g.instances.iter().map(|i| tessera_mig::Instance::new(i.profile_id, i.start)).collect();
            let planner = tessera_mig::planner::planner_for(m);
            let report = match planner {
                Some(p) => p.fragmentation(&layout).ok(),
                None => tessera_mig::planner::Planner::new(m).fragmentation(&layout).ok(),
            };
            report.map(|r| r.stranded_units).unwrap_or_default()
        }
        None => Vec::new(),
    };
    let free = empty.iter().copied().filter(|u| !stranded.contains(u)).collect();
    Grid { units, blocks, free, stranded }
}

/// Who holds an instance, in a few words: `job 5 (alice)`, `slurm 1234 (job 6)`,
/// `pod ns/pod/ctr (job 7)`; several for a shared instance; `idle` for none.
pub fn holder(i: &InstanceInfo) -> String {
    if i.occupants.is_empty() {
        return if i.jobs.is_empty() {
            "idle".into()
        } else {
            i.jobs.iter().map(|j| format!("job {j}")).collect::<Vec<_>>().join(", ")
        };
    }
    i.occupants.iter().map(occupant).collect::<Vec<_>>().join(", ")
}

fn occupant(o: &Occupant) -> String {
    match &o.external {
        Some(x) if x.door == "kubernetes" => format!("pod {} (job {})", x.key, o.job),
        Some(x) => format!("{} {} (job {})", x.door, x.key, o.job),
        None => format!("job {} ({})", o.job, o.user),
    }
}

/// The tenants of an instance's holders, each once.
fn tenants(i: &InstanceInfo) -> String {
    let mut t: Vec<&str> = i.occupants.iter().map(|o| o.tenant.as_str()).filter(|t| !t.is_empty()).collect();
    t.dedup();
    t.join(", ")
}

/// What a block shows, as one sentence: the aria-label of its block and its tooltip.
pub fn instance_label(g: &GpuInfo, i: &InstanceInfo) -> String {
    let last = i.start.saturating_add(i.size.max(1)) - 1;
    let units = if i.size <= 1 { format!("unit {}", i.start) } else { format!("units {} to {last}", i.start) };
    let gi = i.gpu_instance_id.map_or_else(|| "whole GPU".to_owned(), |id| format!("GPU instance {id}"));
    let who = match holder(i).as_str() {
        "idle" => "idle".to_owned(),
        h => format!("held by {h}"),
    };
    let tenant = match tenants(i) {
        t if t.is_empty() => String::new(),
        t => format!(", tenant {t}"),
    };
    let health = if i.healthy { "healthy" } else { "unhealthy" };
    format!("GPU {} {}, {gi}, {units}, {who}{tenant}, {health}", g.index, i.profile)
}

/// A small stable number for a tenant, choosing its colour among six.
fn tenant_hue(tenant: &str) -> u32 {
    tenant.bytes().fold(5381u32, |h, b| h.wrapping_mul(33) ^ u32::from(b)) % 6
}

/// `text` cut to `max` characters, with `…` when cut.
fn fit(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Where a run of units is drawn: x, y, width, height.
fn rect(o: Orientation, start: u8, size: u8) -> (u32, u32, u32, u32) {
    let (start, size) = (u32::from(start), u32::from(size.max(1)));
    match o {
        Orientation::Across => (start * UNIT + 3, RULER, size * UNIT - 6, BLOCK),
        Orientation::Down => (DOWN_RULER, start * ROW + 2, DOWN_WIDTH - DOWN_RULER - 2, size * ROW - 4),
    }
}

/// A block's lines of words, each cut to what fits in `width` and as many as fit in
/// `height`; the holder in short (`job 5`, `2 jobs`) when the whole does not fit.
fn block_lines(i: &InstanceInfo, tenant: &str, width: u32, height: u32) -> Vec<(&'static str, String)> {
    // A glyph is about 0.55 em wide.
    let chars = (width.saturating_sub(14) * 100 / (FONT * 55)).max(3) as usize;
    let rows = (height.saturating_sub(8) / LINE).max(1) as usize;
    let gi = i.gpu_instance_id.map_or_else(|| "whole GPU".to_owned(), |id| format!("GI {id}"));
    let full = holder(i);
    let who = if full.chars().count() <= chars || i.jobs.is_empty() {
        full
    } else if let [job] = i.jobs.as_slice() {
        format!("job {job}")
    } else {
        format!("{} jobs", i.jobs.len())
    };
    let mut lines = if rows >= 3 {
        vec![("name", i.profile.clone()), ("sub", gi), ("who", who)]
    } else {
        vec![("name", format!("{} · {gi}", i.profile)), ("who", who)]
    };
    if !tenant.is_empty() {
        lines.push(("sub", tenant.to_owned()));
    }
    if !i.healthy {
        lines.insert(1, ("who", "unhealthy".to_owned()));
    }
    if rows == 1 {
        // One row: the profile, who holds it and their tenant (the GI is in the table).
        let mut one = vec![i.profile.clone(), if i.healthy { holder(i) } else { "unhealthy".into() }];
        one.extend((!tenant.is_empty()).then(|| tenant.to_owned()));
        lines = vec![("name", one.join(" · "))];
    }
    lines.truncate(rows);
    lines.into_iter().map(|(class, text)| (class, fit(&text, chars))).collect()
}

/// A GPU's grid as SVG: a unit ruler, a focusable block per instance (its data-* attributes
/// say which), free units dashed, stranded units hatched.
pub fn gpu_svg(g: &GpuInfo, o: Orientation) -> String {
    let grid = grid(g);
    let units = u32::from(grid.units);
    let (width, height) = match o {
        Orientation::Across => (units * UNIT, RULER + BLOCK + 4),
        Orientation::Down => (DOWN_WIDTH, units * ROW),
    };
    let tag = match o {
        Orientation::Across => "",
        Orientation::Down => "d",
    };
    let mut s = String::new();
    let title_id = format!("gpu{}{tag}-title", g.index);
    let busy = g.instances.iter().filter(|i| !i.jobs.is_empty()).count();
    let mut summary = format!(
        "GPU {}: {} placement units, {} instance{} ({busy} busy)",
        g.index,
        grid.units,
        g.instances.len(),
        if g.instances.len() == 1 { "" } else { "s" }
    );
    if !grid.free.is_empty() {
        let _ = write!(summary, ", free units {}", unit_list(&grid.free));
    }
    if !grid.stranded.is_empty() {
        let _ = write!(summary, ", unusable free units {}", unit_list(&grid.stranded));
    }
    let class = match o {
        Orientation::Across => "grid across",
        Orientation::Down => "grid down",
    };
    let _ = write!(
        s,
        r#"<svg class="{class}" viewBox="0 0 {width} {height}" role="group" aria-labelledby="{title_id}" data-units="{}"><title id="{title_id}">{}</title>"#,
        grid.units,
        esc(&summary)
    );
    let hatch = format!("hatch{}{tag}", g.index);
    let _ = write!(
        s,
        r#"<defs><pattern id="{hatch}" width="10" height="10" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect class="hatch-bg" width="10" height="10"/><line class="hatch" x1="0" y1="0" x2="0" y2="10"/></pattern></defs>"#,
    );
    for u in 0..grid.units {
        let (x, y, anchor) = match o {
            Orientation::Across => (u32::from(u) * UNIT + UNIT / 2, 16, "middle"),
            Orientation::Down => (DOWN_RULER - 8, u32::from(u) * ROW + ROW / 2 + 5, "end"),
        };
        let _ =
            write!(s, r#"<text class="ruler" x="{x}" y="{y}" text-anchor="{anchor}" aria-hidden="true">{u}</text>"#);
    }
    for (units, class, fill, what) in [
        (&grid.free, "free", String::new(), "free"),
        (&grid.stranded, "stranded", format!(r#" fill="url(#{hatch})""#), "free, but no profile can use it"),
    ] {
        for &u in units {
            let (x, y, w, h) = rect(o, u, 1);
            let _ = write!(
                s,
                r#"<rect class="{class}" data-unit="{u}"{fill} x="{x}" y="{y}" width="{w}" height="{h}" rx="6"><title>unit {u}: {what}</title></rect>"#,
            );
        }
    }
    for b in &grid.blocks {
        let Some(i) = g.instances.get(b.instance) else { continue };
        let (x, y, w, h) = rect(o, b.start, b.size);
        let tenant = tenants(i);
        let class = if !i.healthy {
            "inst sick".to_owned()
        } else if i.jobs.is_empty() {
            "inst idle".to_owned()
        } else {
            format!("inst busy t{}", tenant_hue(&tenant))
        };
        let label = instance_label(g, i);
        let jobs = i.jobs.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        let gi = i.gpu_instance_id.map(|id| id.to_string()).unwrap_or_default();
        let _ = write!(
            s,
            r#"<g class="{class}" tabindex="0" role="img" aria-label="{}" data-key="{tag}{}/{}" data-gpu="{}" data-gpu-index="{}" data-profile="{}" data-gi="{gi}" data-start="{}" data-size="{}" data-jobs="{jobs}" data-holder="{}"><title>{}</title><rect class="box" x="{x}" y="{y}" width="{w}" height="{h}" rx="6"/>"#,
            esc(&label),
            esc(&g.uuid),
            i.start,
            esc(&g.uuid),
            g.index,
            esc(&i.profile),
            i.start,
            i.size,
            esc(&holder(i)),
            esc(&label),
        );
        let lines = block_lines(i, &tenant, w, h);
        // A single line sits in the middle of its row; more start at the top.
        let first = if lines.len() == 1 && h < 2 * LINE + 8 { y + h / 2 + FONT / 3 } else { y + LINE + 2 };
        for (k, (class, text)) in lines.iter().enumerate() {
            let ty = first + LINE * k as u32;
            let _ =
                write!(s, r#"<text class="{class}" x="{}" y="{ty}" aria-hidden="true">{}</text>"#, x + 8, esc(text));
        }
        s.push_str("</g>");
    }
    if g.instances.is_empty() && !g.mig {
        let _ = write!(
            s,
            r#"<text class="sub" x="{}" y="{}" text-anchor="middle" aria-hidden="true">not answering</text>"#,
            width / 2,
            height / 2
        );
    }
    s.push_str("</svg>");
    s
}

/// `3, 5-6` for units.
fn unit_list(units: &[u8]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut k = 0;
    while k < units.len() {
        let start = units[k];
        let mut end = start;
        while k + 1 < units.len() && units[k + 1] == end + 1 {
            k += 1;
            end = units[k];
        }
        out.push(if start == end { start.to_string() } else { format!("{start}-{end}") });
        k += 1;
    }
    out.join(", ")
}

/// `HH:MM:SS` (UTC) of a time in ms since the epoch, in a `<time>` with the full date.
fn time(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil(days);
    let hms = format!("{:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60);
    format!(r#"<time datetime="{y:04}-{m:02}-{d:02}T{hms}Z" title="{y:04}-{m:02}-{d:02} {hms} UTC">{hms}</time>"#)
}

/// The civil date of a day since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + u64::from(m <= 2), m, d)
}

/// What a job asks for, in a few words.
fn asks(r: &GpuRequest) -> String {
    match r {
        GpuRequest::Memory { mib } if mib % 1024 == 0 => format!("{} GiB", mib / 1024),
        GpuRequest::Memory { mib } => format!("{mib} MiB"),
        GpuRequest::ComputeSlices { slices: 1 } => "1 compute slice".into(),
        GpuRequest::ComputeSlices { slices } => format!("{slices} compute slices"),
        GpuRequest::Profile { name } => name.clone(),
        GpuRequest::WholeGpu => "whole GPU".into(),
        GpuRequest::Instances(v) => v.iter().map(asks).collect::<Vec<_>>().join(" + "),
    }
}

/// A job's work in words: its command line, or the front door and key of external work.
fn work(j: &JobView) -> String {
    match (&j.command, &j.external) {
        (Some(c), _) => c.join(" "),
        (None, Some(x)) => format!("{} {}", x.door, x.key),
        (None, None) => String::new(),
    }
}

/// Where a job's ranks run: `GPU 0 3g.40gb@4`.
fn placed(j: &JobView) -> String {
    let mut at: Vec<String> = Vec::new();
    for s in j.ranks.iter().flat_map(|r| r.slices.iter()) {
        let what = s.profile.clone().unwrap_or_else(|| format!("profile {}", s.profile_id));
        at.push(if s.mig { format!("GPU {} {what}@{}", s.gpu, s.start) } else { format!("GPU {} (whole)", s.gpu) });
    }
    at.join(", ")
}

/// A table cell with its column's name for the narrow layout.
fn td(label: &str, html: &str) -> String {
    format!(r#"<td data-label="{label}">{html}</td>"#)
}

/// The part of the page that changes: GPUs, instances, jobs, events. The live stream sends it
/// whole whenever it differs from the last one sent.
pub fn live(v: &View) -> String {
    let mut s = String::new();
    for p in &v.problems {
        let _ = write!(s, r#"<p class="problem" role="alert">{}</p>"#, esc(p));
    }
    let instances: usize = v.gpus.iter().map(|g| g.instances.len()).sum();
    let busy: usize = v.gpus.iter().flat_map(|g| &g.instances).filter(|i| !i.jobs.is_empty()).count();
    let running = v.jobs.iter().filter(|j| j.state == JobState::Running).count();
    let queued: Vec<&JobView> = v.jobs.iter().filter(|j| j.state == JobState::Queued).collect();
    let _ = write!(
        s,
        r#"<p class="summary" id="summary" data-gpus="{}" data-instances="{instances}" data-running="{running}" data-queued="{}">{} GPU{} · {instances} instance{} ({busy} busy) · {running} running · {} queued</p>"#,
        v.gpus.len(),
        queued.len(),
        v.gpus.len(),
        if v.gpus.len() == 1 { "" } else { "s" },
        if instances == 1 { "" } else { "s" },
        queued.len(),
    );
    s.push_str(r#"<section aria-labelledby="h-gpus"><h2 id="h-gpus">GPUs</h2><div class="gpus">"#);
    for g in &v.gpus {
        let grid = grid(g);
        let health_class = if g.health.starts_with("healthy") {
            "ok"
        } else if g.health.starts_with("degraded") {
            "warn"
        } else {
            "bad"
        };
        let _ = write!(
            s,
            r#"<article class="gpu" data-gpu="{}" data-gpu-index="{}" data-mig="{}" data-health="{}"><h3>GPU {} <span class="model">{}</span></h3><p class="facts"><span class="badge {health_class}">{}</span> <span class="badge">MIG {}</span>"#,
            esc(&g.uuid),
            g.index,
            g.mig,
            esc(&g.health),
            g.index,
            esc(g.model.as_deref().unwrap_or(&g.name)),
            esc(&g.health),
            if g.mig { "on" } else { "off" },
        );
        if let Some(d) = &g.drained {
            let why = if d.reason.is_empty() { String::new() } else { format!(": {}", d.reason) };
            let _ = write!(s, r#" <span class="badge warn">drained by {}{}</span>"#, esc(&d.by), esc(&why));
        }
        let _ = write!(s, r#"</p><p class="uuid">{} · {}</p>"#, esc(&g.name), esc(&g.uuid));
        s.push_str(&gpu_svg(g, Orientation::Across));
        s.push_str(&gpu_svg(g, Orientation::Down));
        let mut free = Vec::new();
        if !grid.free.is_empty() {
            free.push(format!("free units {}", unit_list(&grid.free)));
        }
        if !grid.stranded.is_empty() {
            free.push(format!("unusable free units {} (no profile fits there)", unit_list(&grid.stranded)));
        }
        if !free.is_empty() {
            let _ = write!(s, r#"<p class="free-line">{}</p>"#, esc(&free.join("; ")));
        }
        s.push_str("</article>");
    }
    s.push_str("</div>");
    s.push_str(
        r#"<p class="legend" aria-hidden="true"><span><span class="sw t0"></span>held</span><span><span class="sw idle"></span>idle instance</span><span><span class="sw free"></span>free unit</span><span><span class="sw stranded"></span>unusable free unit</span><span><span class="sw sick"></span>unhealthy</span></p>"#,
    );
    s.push_str("</section>");

    s.push_str(r#"<section aria-labelledby="h-inst"><h2 id="h-inst">Instances</h2>"#);
    s.push_str(
        r#"<table class="rows" id="instances"><thead><tr><th scope="col">GPU</th><th scope="col">GI</th><th scope="col">Profile</th><th scope="col">Units</th><th scope="col">Holder</th><th scope="col">Tenant</th><th scope="col">Health</th></tr></thead><tbody>"#,
    );
    for g in &v.gpus {
        for i in &g.instances {
            let units = if i.size <= 1 {
                i.start.to_string()
            } else {
                format!("{}-{}", i.start, i.start.saturating_add(i.size) - 1)
            };
            let gi = i.gpu_instance_id.map_or_else(|| "—".to_owned(), |id| id.to_string());
            let _ = write!(
                s,
                r#"<tr data-gpu="{}" data-gi="{gi}">{}{}{}{}{}{}{}</tr>"#,
                esc(&g.uuid),
                td("GPU", &g.index.to_string()),
                td("GI", &gi),
                td("Profile", &esc(&i.profile)),
                td("Units", &units),
                td("Holder", &esc(&holder(i))),
                td("Tenant", &esc(&tenants(i))),
                td("Health", if i.healthy { "healthy" } else { "unhealthy" }),
            );
        }
    }
    s.push_str("</tbody></table></section>");

    let title = if v.admin { "Jobs" } else { "Your jobs" };
    let _ = write!(s, r#"<section aria-labelledby="h-jobs"><h2 id="h-jobs">{title}</h2>"#);
    if v.jobs.is_empty() {
        s.push_str(r#"<p class="empty">No queued or running jobs.</p>"#);
    } else {
        s.push_str(
            r#"<table class="rows" id="jobs"><thead><tr><th scope="col">Job</th><th scope="col">User</th><th scope="col">Tenant</th><th scope="col">State</th><th scope="col">Asks</th><th scope="col">Where or why it waits</th><th scope="col">Since</th><th scope="col">Work</th></tr></thead><tbody>"#,
        );
        // Running first, then the queue in order.
        let mut jobs: Vec<&JobView> = v.jobs.iter().collect();
        jobs.sort_by_key(|j| (j.state != JobState::Running, j.id));
        for j in jobs {
            let ranks = if j.resources.ranks > 1 { format!(" × {} ranks", j.resources.ranks) } else { String::new() };
            let (where_, since) = match j.state {
                JobState::Running | JobState::Placing => (placed(j), j.started_ms.unwrap_or(j.submitted_ms)),
                _ => (j.reason.clone(), j.submitted_ms),
            };
            let _ = write!(
                s,
                r#"<tr data-job="{}" data-state="{}">{}{}{}{}{}{}{}{}</tr>"#,
                j.id,
                j.state.as_str(),
                td("Job", &j.id.to_string()),
                td("User", &esc(&j.user)),
                td("Tenant", &esc(&j.tenant)),
                td("State", j.state.as_str()),
                td("Asks", &esc(&format!("{}{ranks}", asks(&j.resources.gpu)))),
                td("Where or why", &esc(&where_)),
                td("Since", &time(since)),
                td("Work", &format!("<code>{}</code>", esc(&fit(&work(j), 200)))),
            );
        }
        s.push_str("</tbody></table>");
    }
    s.push_str("</section>");

    s.push_str(r#"<section aria-labelledby="h-events"><h2 id="h-events">Recent events <small>(UTC)</small></h2>"#);
    if v.events.is_empty() {
        s.push_str(r#"<p class="empty">Nothing in the last hour.</p>"#);
    } else {
        s.push_str(r#"<ol class="events" id="events">"#);
        for e in &v.events {
            let kind =
                serde_json::to_value(e.kind).ok().and_then(|k| k.as_str().map(str::to_owned)).unwrap_or_default();
            let _ = write!(s, r#"<li data-kind="{}">{} {}</li>"#, esc(&kind), time(e.at_ms), esc(&e.text));
        }
        s.push_str("</ol>");
    }
    s.push_str("</section>");
    s
}

/// A short digest of a rendered part (FNV-1a, 64 bits, in hex): the live stream's event id, so
/// a browser that has a part gets it again only once it changes.
pub fn digest(text: &str) -> String {
    let h = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("{h:016x}")
}

/// The head every page shares: the stylesheet and script from `/ui` (the CSP allows no other).
fn head(title: &str, refresh: bool) -> String {
    let refresh = if refresh { r#"<noscript><meta http-equiv="refresh" content="5"></noscript>"# } else { "" };
    format!(
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>{}</title><link rel="stylesheet" href="/ui/app.css"><script src="/ui/app.js" defer></script>{refresh}</head>"#,
        esc(title)
    )
}

/// The whole page for a node: a header saying whose view it is, then [`live`] in `#live`,
/// which the script replaces from `/ui/live`; without script the page reloads every 5 s.
pub fn page(v: &View) -> String {
    let mut s = head(&format!("Tessera · {}", v.node), true);
    let role = if v.admin { " (admin)" } else { "" };
    let _ = write!(
        s,
        r#"<body><header><h1>Tessera <span class="node">{}</span></h1><p class="who">{} backend · viewing as <strong id="viewer">{}</strong>{role} · <span id="status" role="status">static</span></p>"#,
        esc(&v.node),
        esc(&v.backend),
        esc(&v.user),
    );
    if v.session {
        s.push_str(
            r#"<form method="post" action="/ui/logout" class="logout"><button type="submit">Log out</button></form>"#,
        );
    }
    let body = live(v);
    let _ = write!(s, r#"</header><main id="live" data-since="{}">"#, digest(&body));
    s.push_str(&body);
    s.push_str("</main></body></html>");
    s
}

/// The login form (TCP): a token field, and the error of the last try, if any.
pub fn login(error: Option<&str>) -> String {
    let mut s = head("Tessera · log in", false);
    s.push_str(r#"<body class="login"><main><h1>Tessera</h1><form method="post" action="/ui/login">"#);
    if let Some(e) = error {
        let _ = write!(s, r#"<p class="problem" role="alert" id="login-error">{}</p>"#, esc(e));
    }
    s.push_str(
        r#"<label for="token">Access token</label><input id="token" name="token" type="password" autocomplete="current-password" required autofocus><button type="submit">Log in</button><p class="hint">Your token for TCP access: the one after your user name in the daemon's <code>server.token_file</code>. The page only reads.</p></form></main></body></html>"#,
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{DrainView, NodeEventKind};

    fn instance(profile: &str, profile_id: u32, start: u8, size: u8, gi: u32) -> InstanceInfo {
        InstanceInfo {
            gpu_instance_id: Some(gi),
            profile: profile.into(),
            profile_id,
            start,
            size,
            jobs: Vec::new(),
            occupants: Vec::new(),
            mig_uuid: Some(format!("MIG-{gi}")),
            healthy: true,
            gi_caps_minor: None,
            ci_caps_minor: None,
        }
    }

    fn gpu(instances: Vec<InstanceInfo>) -> GpuInfo {
        GpuInfo {
            index: 0,
            name: "NVIDIA H100 80GB HBM3".into(),
            uuid: "GPU-0000".into(),
            model: Some("H100-80GB".into()),
            numa_node: Some(0),
            minor: Some(0),
            local_cpus: None,
            mig: true,
            drained: None,
            health: "healthy".into(),
            instances,
        }
    }

    fn profile_id(name: &str) -> u32 {
        tessera_mig::catalog().model("H100-80GB").unwrap().profile(name).unwrap().id
    }

    /// An H100 with 3g.40gb at 0 (units 0-3), 1g.10gb at 4 and a busy 1g.10gb at 5: units 6
    /// and 7 are free and usable (a 1g.20gb fits over both).
    fn mixed() -> GpuInfo {
        let mut busy = instance("1g.10gb", profile_id("1g.10gb"), 5, 1, 12);
        busy.jobs = vec![7];
        busy.occupants = vec![Occupant { job: 7, user: "alice".into(), tenant: "ml".into(), external: None }];
        gpu(vec![
            instance("3g.40gb", profile_id("3g.40gb"), 0, 4, 2),
            instance("1g.10gb", profile_id("1g.10gb"), 4, 1, 11),
            busy,
        ])
    }

    #[test]
    fn text_is_escaped_everywhere_it_goes() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(esc("a\u{1b}[2J\u{202e}b\nc"), "a\\u{1b}[2J\\u{202e}b\\u{a}c");
        let mut g = mixed();
        g.instances[2].occupants[0].user = "<img src=x onerror=alert(1)>".into();
        g.instances[2].occupants[0].tenant = "\"><script>t</script>".into();
        g.drained = Some(DrainView { by: "<b>root</b>".into(), reason: "<i>x</i>".into(), at_ms: 0 });
        let mut job = job(7, JobState::Running);
        job.command = Some(vec!["sh".into(), "-c".into(), "<script>alert(1)</script>".into()]);
        let v = View {
            node: "<node>".into(),
            user: "<u>".into(),
            gpus: vec![g],
            jobs: vec![job],
            events: vec![NodeEvent {
                at_ms: 0,
                kind: NodeEventKind::JobStarted,
                gpu: None,
                job: Some(7),
                text: "job 7 (<svg onload=x>) started".into(),
            }],
            ..View::default()
        };
        let html = page(&v);
        for raw in ["<script>alert", "<img", "<svg onload", "<b>root", "<i>x", "\"><script>t", "<node>", "<u>"] {
            assert!(!html.contains(raw), "{raw} reached the page unescaped");
        }
        assert!(html.contains("sh -c &lt;script&gt;alert(1)&lt;/script&gt;"), "the command shows as text");
        assert!(html.contains("job 7 (&lt;img src=x onerror=alert(1)&gt;)"));
        // The only script is the one from /ui.
        assert_eq!(html.matches("<script").count(), 1);
        assert!(html.contains(r#"<script src="/ui/app.js" defer></script>"#));
        assert!(!html.contains("style="), "no inline style: the CSP allows none");
    }

    fn job(id: u64, state: JobState) -> JobView {
        JobView {
            id,
            user: "alice".into(),
            uid: 1000,
            tenant: "ml".into(),
            priority: 0,
            state,
            reason: if state == JobState::Queued { "fragmentation: no 3g.40gb fits".into() } else { String::new() },
            command: Some(vec!["python".into(), "train.py".into()]),
            cwd: Some("/".into()),
            external: None,
            submitted_ms: 1_700_000_000_000,
            started_ms: None,
            ended_ms: None,
            resources: serde_json::from_value(serde_json::json!({"gpu": {"profile": {"name": "3g.40gb"}}})).unwrap(),
            runs: 0,
            ranks: Vec::new(),
            exit: None,
            events: Vec::new(),
            cancelled_by: None,
        }
    }

    #[test]
    fn an_h100_mixed_layout_is_drawn_on_its_placement_grid() {
        let g = mixed();
        let grid = grid(&g);
        assert_eq!(grid.units, 8, "an H100 has 8 placement units");
        assert_eq!(
            grid.blocks,
            vec![
                Block { instance: 0, start: 0, size: 4 },
                Block { instance: 1, start: 4, size: 1 },
                Block { instance: 2, start: 5, size: 1 },
            ]
        );
        assert_eq!((grid.free.clone(), grid.stranded.clone()), (vec![6, 7], vec![]), "a 1g.20gb fits at 6");
        let svg = gpu_svg(&g, Orientation::Across);
        assert!(svg.contains(r#"viewBox="0 0 880 138""#), "8 units of 110 across");
        // The 3g.40gb block spans units 0-3: x from 3, 4 units wide less the gaps.
        assert!(svg.contains(r#"<rect class="box" x="3" y="22" width="434" height="112" rx="6"/>"#), "{svg}");
        // The 1g.10gb at 5 starts at unit 5.
        assert!(svg.contains(r#"<rect class="box" x="553" y="22" width="104" height="112" rx="6"/>"#), "{svg}");
        assert_eq!(svg.matches(r#"tabindex="0""#).count(), 3, "each instance is focusable");
        // Down the page (narrow windows): a row of 46 per unit, every block the width.
        let down = gpu_svg(&g, Orientation::Down);
        assert!(down.contains(r#"viewBox="0 0 360 368""#), "{down}");
        assert!(down.contains(r#"<rect class="box" x="28" y="2" width="330" height="180" rx="6"/>"#), "{down}");
        assert!(down.contains(r#"<rect class="box" x="28" y="232" width="330" height="42" rx="6"/>"#), "{down}");
        assert!(
            down.contains(
                r#"<text class="name" x="36" y="259" aria-hidden="true">1g.10gb · job 7 (alice) · ml</text>"#
            ),
            "one line for a one-unit row: {down}"
        );
        assert!(svg.contains(r#"data-gpu="GPU-0000" data-gpu-index="0" data-profile="1g.10gb" data-gi="12" data-start="5" data-size="1" data-jobs="7" data-holder="job 7 (alice)""#), "{svg}");
    }

    #[test]
    fn stranded_units_are_told_apart_from_free_ones() {
        // 4g.40gb at 0 and 2g.20gb at 4 leave unit 6 and 7: a 1g.10gb still fits at 6.
        let g = gpu(vec![
            instance("4g.40gb", profile_id("4g.40gb"), 0, 4, 1),
            instance("2g.20gb", profile_id("2g.20gb"), 4, 2, 3),
            instance("1g.10gb", profile_id("1g.10gb"), 6, 1, 9),
        ]);
        let grid = grid(&g);
        // Unit 7 alone: on an H100 no profile starts at 7 (a 1g.10gb is placed at 0-6), so it
        // is stranded.
        assert_eq!((grid.free.clone(), grid.stranded.clone()), (vec![], vec![7]), "{grid:?}");
        let svg = gpu_svg(&g, Orientation::Across);
        assert!(svg.contains(r#"<rect class="stranded" data-unit="7""#), "{svg}");
        let idle = gpu(vec![]);
        let grid = super::grid(&idle);
        assert_eq!((grid.free.len(), grid.stranded.len()), (8, 0), "an empty GPU is all free");
    }

    #[test]
    fn each_block_says_everything_it_shows() {
        let g = mixed();
        assert_eq!(instance_label(&g, &g.instances[0]), "GPU 0 3g.40gb, GPU instance 2, units 0 to 3, idle, healthy");
        assert_eq!(
            instance_label(&g, &g.instances[2]),
            "GPU 0 1g.10gb, GPU instance 12, unit 5, held by job 7 (alice), tenant ml, healthy"
        );
        let mut sick = g.instances[1].clone();
        sick.healthy = false;
        sick.jobs = vec![9];
        sick.occupants = vec![Occupant {
            job: 9,
            user: "root".into(),
            tenant: "default".into(),
            external: Some(tessera_store::ExternalWork { door: "kubernetes".into(), key: "ns/pod/ctr".into() }),
        }];
        assert_eq!(
            instance_label(&g, &sick),
            "GPU 0 1g.10gb, GPU instance 11, unit 4, held by pod ns/pod/ctr (job 9), tenant default, unhealthy"
        );
        let slurm = Occupant {
            job: 4,
            user: "root".into(),
            tenant: "hpc".into(),
            external: Some(tessera_store::ExternalWork { door: "slurm".into(), key: "1234".into() }),
        };
        sick.occupants = vec![slurm];
        assert_eq!(holder(&sick), "slurm 1234 (job 4)");
        let svg = gpu_svg(&g, Orientation::Across);
        assert!(svg.contains(
            r#"aria-label="GPU 0 1g.10gb, GPU instance 12, unit 5, held by job 7 (alice), tenant ml, healthy""#
        ));
        assert!(svg.contains(r#"role="group" aria-labelledby="gpu0-title""#));
        assert!(svg.contains(r#"<title id="gpu0-title">GPU 0: 8 placement units, 3 instances (1 busy)"#), "{svg}");
    }

    #[test]
    fn the_page_lists_the_queue_with_reasons_and_the_events() {
        let mut running = job(7, JobState::Running);
        running.started_ms = Some(1_700_000_001_000);
        let v = View {
            node: "n1".into(),
            user: "alice".into(),
            gpus: vec![mixed()],
            jobs: vec![job(8, JobState::Queued), running],
            events: vec![NodeEvent {
                at_ms: 1_700_000_001_000,
                kind: NodeEventKind::Layout,
                gpu: Some(0),
                job: None,
                text: "GPU 0: layout now 3g.40gb@0".into(),
            }],
            ..View::default()
        };
        let html = live(&v);
        assert!(html.contains("fragmentation: no 3g.40gb fits"));
        assert!(html.contains(r#"data-running="1" data-queued="1""#));
        assert!(html.contains(r#"<time datetime="2023-11-14T22:13:21Z""#), "{html}");
        assert!(html.contains(r#"<li data-kind="layout">"#));
        assert!(html.find(r#"data-job="7""#) < html.find(r#"data-job="8""#), "running jobs first");
        assert_eq!(live(&v), live(&v), "the same view gives the same bytes");
        assert!(page(&View { session: true, ..v.clone() }).contains(r#"action="/ui/logout""#));
        assert!(!page(&v).contains("/ui/logout"), "no logout without a session");
    }

    #[test]
    fn the_login_form_shows_its_error_escaped() {
        let html = login(Some("the token <x> is not valid"));
        assert!(html.contains(r#"role="alert" id="login-error">the token &lt;x&gt; is not valid"#));
        assert!(html.contains(r#"<form method="post" action="/ui/login">"#));
        assert!(html.contains(r#"name="token" type="password""#));
        assert!(!login(None).contains("login-error"));
    }
}
