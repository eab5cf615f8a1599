//! `tessera top`'s picture: one frame drawn from a [`Snapshot`] (what the daemon last said, when,
//! and whether the last refresh failed) with no I/O, so that the same function draws on the
//! terminal, prints `--once`'s text ([`text`]) and is checked against ratatui's `TestBackend`.
//!
//! Top to bottom: the header (node, backend, GPUs, jobs running and queued, the last refresh,
//! and a failed refresh's error with the age of what is still shown); one block per GPU: its
//! line (model, NUMA node, health, drain, allocated/idle/free compute slices) and its slice map
//! in the geometry `tessera mig gpus` draws ([`render::map_blocks`]), each instance a block
//! labelled with its profile over the job and user holding it; the running jobs; the queue with
//! why each job waits. Everything keeps within the width: header items wrap, tables give up room
//! as `tessera jobs` does ([`Table::fit`]), labels are cut with `…`. What the height cannot hold
//! is cut with a line saying how much more there is; the GPUs scroll ([`Snapshot::first_gpu`]).

use std::time::Duration;

use jiff::tz::TimeZone;
use ratatui::Frame;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget as _};
use tessera_daemon::wire::{GpuInfo, GpuList, InstanceInfo, JobState, JobView};
use tessera_mig::{GpuModel, Instance, catalog, planner_for};
use tessera_sched::{GpuRequest, JobRequest, Sharing};
use unicode_width::UnicodeWidthStr as _;

use crate::render::{self, Slice, Table, cut, escape};
use crate::units::short_duration_ms;

/// What the daemon said at one refresh.
#[derive(Debug, Clone)]
pub struct NodeState {
    pub gpus: GpuList,
    /// The jobs not yet ended (queued, placing, running).
    pub jobs: Vec<JobView>,
    /// Whether `jobs` is every user's; `false`: the daemon shows this user only their own.
    pub all_users: bool,
    /// When it was read (ms since the Unix epoch).
    pub read_ms: u64,
}

/// A refresh that failed, and why.
#[derive(Debug, Clone)]
pub struct Failure {
    pub at_ms: u64,
    pub message: String,
}

/// Everything one frame shows.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The node the daemon runs on.
    pub host: String,
    /// The last good refresh; `None` before the first.
    pub state: Option<NodeState>,
    /// The last refresh's failure, if it failed (a good refresh clears it).
    pub failure: Option<Failure>,
    /// The moment drawn (ms since the Unix epoch): runtimes, waits and ages count to it.
    pub now_ms: u64,
    pub interval: Duration,
    /// The first GPU shown (by position) when they do not all fit.
    pub first_gpu: usize,
    /// The zone times are shown in.
    pub tz: TimeZone,
}

impl Snapshot {
    /// How many GPUs the last good refresh showed.
    pub fn gpu_count(&self) -> usize {
        self.state.as_ref().map_or(0, |s| s.gpus.gpus.len())
    }
}

/// Draws the snapshot over the whole frame.
pub fn draw(frame: &mut Frame<'_>, snap: &Snapshot) {
    let area = frame.area();
    render(snap, area, frame.buffer_mut());
}

/// The frame as plain text, `width` columns wide and as tall as it needs to show everything
/// (`tessera top --once`): trailing blanks cut from every line.
pub fn text(snap: &Snapshot, width: u16) -> String {
    let sections = Sections::build(snap, usize::from(width));
    let height = u16::try_from(sections.full_height()).unwrap_or(u16::MAX);
    let area = Rect::new(0, 0, width, height);
    let mut buf = Buffer::empty(area);
    render_from(snap, 0, area, &mut buf);
    buffer_text(&buf)
}

/// A buffer's cells as lines of text, a wide character's trailing cell skipped.
pub fn buffer_text(buf: &Buffer) -> String {
    let area = buf.area;
    let mut out = String::new();
    for y in area.top()..area.bottom() {
        let mut line = String::new();
        let mut skip = 0usize;
        for x in area.left()..area.right() {
            if skip > 0 {
                skip -= 1;
                continue;
            }
            let symbol = buf[(x, y)].symbol();
            line.push_str(symbol);
            skip = symbol.width().saturating_sub(1);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

/// Draws the snapshot into `area` of `buf`.
pub fn render(snap: &Snapshot, area: Rect, buf: &mut Buffer) {
    render_from(snap, snap.first_gpu, area, buf);
}

/// [`render`] with the GPUs from `first_gpu` on.
fn render_from(snap: &Snapshot, first_gpu: usize, area: Rect, buf: &mut Buffer) {
    let sections = Sections::build(snap, usize::from(area.width));
    let heights = sections.heights(usize::from(area.height));
    let mut y = area.y;
    let mut put = |lines: Vec<Line<'static>>, gap: bool| {
        let bottom = area.bottom();
        if gap && !lines.is_empty() {
            y = y.saturating_add(1);
        }
        let h = u16::try_from(lines.len()).unwrap_or(u16::MAX).min(bottom.saturating_sub(y));
        if h > 0 {
            Paragraph::new(lines).render(Rect::new(area.x, y, area.width, h), buf);
        }
        y = y.saturating_add(h);
    };
    put(sections.header.clone(), false);
    put(gpu_lines(&sections.gpus, first_gpu, heights.gpus), true);
    put(cut_section(&sections.running, heights.running), true);
    put(cut_section(&sections.queued, heights.queued), true);
}

/// Every line of each part at full height.
#[derive(Debug)]
struct Sections {
    header: Vec<Line<'static>>,
    /// One block per GPU.
    gpus: Vec<Vec<Line<'static>>>,
    /// A title, then (when there are jobs) a table's header and rows.
    running: Vec<Line<'static>>,
    queued: Vec<Line<'static>>,
}

/// How many lines each part gets.
#[derive(Debug, PartialEq, Eq)]
struct Heights {
    gpus: usize,
    running: usize,
    queued: usize,
}

impl Sections {
    fn build(snap: &Snapshot, width: usize) -> Sections {
        let header = header(snap, width);
        let Some(state) = &snap.state else {
            return Sections { header, gpus: Vec::new(), running: Vec::new(), queued: Vec::new() };
        };
        let mut gpus: Vec<Vec<Line<'static>>> = state.gpus.gpus.iter().map(|g| gpu_block(g, width)).collect();
        if gpus.is_empty() {
            gpus.push(vec![Line::from("no GPUs")]);
        }
        let mut running: Vec<&JobView> =
            state.jobs.iter().filter(|j| matches!(j.state, JobState::Running | JobState::Placing)).collect();
        running.sort_by_key(|j| j.id);
        let queued: Vec<&JobView> = state.jobs.iter().filter(|j| j.state == JobState::Queued).collect();
        Sections {
            header,
            gpus,
            running: running_table(&running, snap.now_ms, width),
            queued: queue_table(&queued, snap.now_ms, width),
        }
    }

    /// The GPU blocks' lines with a blank line between blocks.
    fn gpu_need(&self) -> usize {
        self.gpus.iter().map(Vec::len).sum::<usize>() + self.gpus.len().saturating_sub(1)
    }

    /// Lines to show everything, a blank line between parts.
    fn full_height(&self) -> usize {
        let gap = |n: usize| if n > 0 { n + 1 } else { 0 };
        self.header.len() + gap(self.gpu_need()) + gap(self.running.len()) + gap(self.queued.len())
    }

    /// The parts' heights within `height` lines: all of each when everything fits; else the GPUs
    /// get what the jobs leave, but at least half, and the running jobs likewise before the queue.
    fn heights(&self, height: usize) -> Heights {
        let (gpu_need, run_need, queue_need) = (self.gpu_need(), self.running.len(), self.queued.len());
        if self.full_height() <= height {
            return Heights { gpus: gpu_need, running: run_need, queued: queue_need };
        }
        let gaps = [gpu_need, run_need, queue_need].iter().filter(|n| **n > 0).count();
        let room = height.saturating_sub(self.header.len() + gaps);
        let gpus = gpu_need.min(room.saturating_sub(run_need + queue_need).max(room / 2));
        let jobs = room - gpus;
        let running = run_need.min(jobs.saturating_sub(queue_need).max(jobs / 2));
        Heights { gpus, running, queued: queue_need.min(jobs - running) }
    }
}

fn bold() -> Style {
    Style::new().add_modifier(Modifier::BOLD)
}

fn dim() -> Style {
    Style::new().fg(Color::DarkGray)
}

/// `HH:MM:SS` in the snapshot's zone.
fn clock(ms: u64, tz: &TimeZone) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(|| "--:--:--".into(), |t| t.to_zoned(tz.clone()).strftime("%H:%M:%S").to_string())
}

/// `2 s`, `500 ms`.
fn interval_text(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) { format!("{} s", ms / 1000) } else { format!("{ms} ms") }
}

/// Items on as few lines as fit `width`, ` · ` between them, lines after the first indented
/// by two columns; an item wider than a line is cut.
fn wrap_items(items: Vec<Span<'static>>, width: usize) -> Vec<Line<'static>> {
    const SEP: &str = " · ";
    const INDENT: &str = "  ";
    let mut lines: Vec<Line<'static>> = Vec::new();
    let mut line: Vec<Span<'static>> = Vec::new();
    let mut used = 0usize;
    // Whether `line` holds an item yet (a continued line starts with its indent alone).
    let mut has_item = false;
    for item in items {
        let w = item.content.width();
        if has_item && used + SEP.width() + w > width {
            lines.push(Line::from(std::mem::take(&mut line)));
            line.push(Span::raw(INDENT));
            used = INDENT.width();
            has_item = false;
        }
        if has_item {
            line.push(Span::styled(SEP, dim()));
            used += SEP.width();
        }
        has_item = true;
        let content = cut(&item.content, width.saturating_sub(used).max(1)).into_owned();
        used += content.width();
        line.push(Span::styled(content, item.style));
    }
    if !line.is_empty() {
        lines.push(Line::from(line));
    }
    lines
}

/// `text` broken at spaces into lines of at most `width` columns, at most `max` of them (the
/// last cut with `…` when more is left); a word longer than a line is cut.
fn wrap_words(text: &str, width: usize, max: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        if !line.is_empty() && line.width() + 1 + word.width() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    if lines.len() > max {
        lines.truncate(max);
        if let Some(last) = lines.last_mut() {
            *last = cut(&format!("{last} …"), width).into_owned();
        }
    }
    lines.into_iter().map(|l| cut(&l, width).into_owned()).collect()
}

fn header(snap: &Snapshot, width: usize) -> Vec<Line<'static>> {
    let mut items = vec![Span::styled("tessera top", bold()), Span::raw(format!("host {}", escape(&snap.host)))];
    match &snap.state {
        Some(s) => {
            items.push(Span::raw(format!("backend {}", escape(&s.gpus.backend))));
            let n = s.gpus.gpus.len();
            items.push(Span::raw(format!("{n} GPU{}", if n == 1 { "" } else { "s" })));
            let count = |st: JobState| s.jobs.iter().filter(|j| j.state == st).count();
            let mut jobs = format!("jobs: {} running", count(JobState::Running));
            let placing = count(JobState::Placing);
            if placing > 0 {
                jobs.push_str(&format!(", {placing} placing"));
            }
            jobs.push_str(&format!(", {} queued", count(JobState::Queued)));
            if !s.all_users {
                jobs.push_str(" (yours)");
            }
            items.push(Span::styled(jobs, bold()));
            items.push(Span::raw(format!("updated {}", clock(s.read_ms, &snap.tz))));
        }
        None if snap.failure.is_none() => items.push(Span::raw("asking the daemon…")),
        None => {}
    }
    items.push(Span::raw(format!("every {}", interval_text(snap.interval))));
    items.push(Span::styled("q quit  r refresh  ↑↓ scroll", dim()));
    let mut lines = wrap_items(items, width);
    if let Some(f) = &snap.failure {
        // The age first: the daemon's error may be long and is cut after three lines.
        let shown = match &snap.state {
            Some(s) => format!(
                "showing what the daemon said at {} ({} old)",
                clock(s.read_ms, &snap.tz),
                short_duration_ms(snap.now_ms.saturating_sub(s.read_ms))
            ),
            None => "nothing to show yet".into(),
        };
        let message = format!("refresh failed at {}, {shown}: {}", clock(f.at_ms, &snap.tz), escape(&f.message));
        let style = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);
        lines.extend(wrap_words(&message, width, 3).into_iter().map(|l| Line::styled(l, style)));
    }
    lines
}

/// The GPU's catalog model, when the daemon named one the catalog knows.
fn model_of(g: &GpuInfo) -> Option<&'static GpuModel> {
    g.model.as_deref().and_then(|m| catalog().model(m).ok())
}

fn health_style(health: &str) -> Style {
    match health.split(':').next().unwrap_or_default() {
        "healthy" => Style::new().fg(Color::Green),
        "degraded" => Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
        _ => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
    }
}

/// `compute slices: 3 allocated, 4 idle, 0 free`, as `tessera_gpu_compute_slices` counts them:
/// allocated in instances jobs hold, idle in instances none holds, free in no instance (and how
/// many of those no profile could use where they are).
fn slice_counts(g: &GpuInfo, model: Option<&GpuModel>) -> String {
    let Some(m) = model else {
        let n = g.instances.len();
        return format!("{n} instance{}", if n == 1 { "" } else { "s" });
    };
    let (mut allocated, mut idle) = (0u32, 0u32);
    for i in &g.instances {
        let c = m.profile_by_id(i.profile_id).map_or(0, |p| u32::from(p.compute_slices));
        if i.jobs.is_empty() { idle += c } else { allocated += c }
    }
    let free = u32::from(m.compute_slices).saturating_sub(allocated + idle);
    let mut text = format!("compute slices: {allocated} allocated, {idle} idle, {free} free");
    if g.mig && free > 0 {
        let layout: Vec<Instance> = g.instances.iter().map(|i| Instance::new(i.profile_id, i.start)).collect();
        let unusable =
            planner_for(m).and_then(|p| p.fragmentation(&layout).ok()).map_or(0, |f| f.unusable_compute_slices);
        if unusable > 0 {
            text.push_str(&format!(" ({unusable} unusable)"));
        }
    }
    text
}

/// Who holds an instance: `12 alice` (and `+N` more sharing it), `idle`, or `unhealthy`.
fn holder(i: &InstanceInfo) -> String {
    let first = match (i.occupants.first(), i.jobs.first()) {
        (Some(o), _) => format!("{} {}", o.job, escape(&o.user)),
        (None, Some(j)) => format!("job {j}"),
        (None, None) if !i.healthy => return "unhealthy".into(),
        (None, None) => return "idle".into(),
    };
    let n = i.occupants.len().max(i.jobs.len());
    if n > 1 { format!("{first} +{}", n - 1) } else { first }
}

/// One GPU: its line, then its slice map (unit numbers, each instance's profile, its holder).
fn gpu_block(g: &GpuInfo, width: usize) -> Vec<Line<'static>> {
    let model = model_of(g);
    let mut items =
        vec![Span::styled(format!("GPU {}  {}", g.index, escape(g.model.as_deref().unwrap_or(&g.name))), bold())];
    if let Some(n) = g.numa_node {
        items.push(Span::raw(format!("NUMA {n}")));
    }
    items.push(Span::styled(escape(&g.health).into_owned(), health_style(&g.health)));
    if !g.mig {
        items.push(Span::raw("MIG off"));
    }
    if let Some(d) = &g.drained {
        let text = if d.reason.is_empty() {
            format!("drained by {}", escape(&d.by))
        } else {
            format!("drained by {}: {}", escape(&d.by), escape(&d.reason))
        };
        items.push(Span::styled(text, Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD)));
    }
    items.push(Span::raw(slice_counts(g, model)));
    let mut lines = wrap_items(items, width);
    lines.extend(slice_map_lines(g, model, width));
    lines
}

/// The slice map in `tessera mig gpus`'s geometry, each unit as wide as the width allows (at
/// most as wide as there); three lines: unit numbers, profiles, holders.
fn slice_map_lines(g: &GpuInfo, model: Option<&GpuModel>, width: usize) -> Vec<Line<'static>> {
    const INDENT: &str = "  ";
    const LABEL: &str = "unit  ";
    let (units, smallest) = match model {
        Some(m) => (m.placement_units, m.profiles.iter().map(|p| p.placement_size).min().unwrap_or(1)),
        None => (
            g.instances.iter().map(|i| i.start.saturating_add(i.size)).max().unwrap_or(0),
            g.instances.iter().map(|i| i.size).filter(|s| *s > 0).min().unwrap_or(1),
        ),
    };
    if units == 0 {
        return vec![Line::styled(format!("{INDENT}no instances"), dim())];
    }
    let room = width.saturating_sub(INDENT.len() + LABEL.len()) / usize::from(units);
    let cell = render::map_cell_width(smallest).min(room).max(2);
    let slices: Vec<Slice> =
        g.instances.iter().map(|i| Slice { start: i.start, size: i.size, label: i.profile.clone() }).collect();
    let pad = " ".repeat(INDENT.len() + LABEL.len());
    let mut profiles = vec![Span::raw(pad.clone())];
    let mut holders = vec![Span::raw(pad)];
    for b in render::map_blocks(units, cell, &slices) {
        match b.slice.map(|s| &g.instances[s]) {
            Some(i) => {
                let style = if !i.healthy {
                    Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
                } else if i.jobs.is_empty() {
                    Style::new()
                } else {
                    Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD)
                };
                profiles.push(Span::styled(render::map_block_text(&escape(&i.profile), b.width), style));
                holders.push(Span::styled(render::map_block_text(&holder(i), b.width), style));
            }
            None => {
                profiles.push(Span::styled(render::map_free_text(b.width), dim()));
                holders.push(Span::raw(" ".repeat(b.width)));
            }
        }
    }
    vec![
        Line::styled(format!("{INDENT}{LABEL}{}", render::map_units_text(units, cell)), dim()),
        Line::from(profiles),
        Line::from(holders),
    ]
}

/// A section: its title, then a table's lines (its header bold).
fn section(title: &str, count: usize, table: Option<String>) -> Vec<Line<'static>> {
    let heading = if count == 0 { format!("{title}: none") } else { format!("{title} ({count})") };
    let mut lines = vec![Line::styled(heading, bold())];
    if let Some(t) = table {
        for (n, l) in t.lines().enumerate() {
            lines.push(if n == 0 {
                Line::styled(l.to_string(), Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED))
            } else {
                Line::from(l.to_string())
            });
        }
    }
    lines
}

/// A job's slices, `3g.40gb` or `2×1g.10gb`, and the GPUs they are on, `0-1`.
fn job_slices(j: &JobView) -> (String, String) {
    let mut groups: Vec<(String, usize)> = Vec::new();
    let mut gpus = Vec::new();
    for s in j.ranks.iter().flat_map(|r| r.slices.iter()) {
        let name = if s.mig { s.profile.clone().unwrap_or_else(|| "?".into()) } else { "whole GPU".into() };
        match groups.iter_mut().find(|(n, _)| *n == name) {
            Some((_, c)) => *c += 1,
            None => groups.push((name, 1)),
        }
        gpus.push(s.gpu);
    }
    if groups.is_empty() {
        return ("-".into(), "-".into());
    }
    let text = groups.iter().map(|(n, c)| if *c > 1 { format!("{c}×{n}") } else { n.clone() }).collect::<Vec<_>>();
    (text.join(","), render::ranges(&gpus))
}

/// What a queued job asks for per rank, short: `3g.40gb`, `2×10GiB`, `whole GPU`, `1g.10gb MPS 50%`.
fn wants(r: &JobRequest) -> String {
    let gpu = match &r.gpu {
        GpuRequest::Memory { mib } if mib.is_multiple_of(1024) => format!("{}GiB", mib / 1024),
        GpuRequest::Memory { mib } => format!("{mib}MiB"),
        GpuRequest::ComputeSlices { slices } => format!("{slices} slice{}", if *slices == 1 { "" } else { "s" }),
        GpuRequest::Profile { name } => name.clone(),
        GpuRequest::WholeGpu if r.gpus_per_rank > 1 => format!("{} GPUs", r.gpus_per_rank),
        GpuRequest::WholeGpu => "whole GPU".into(),
        GpuRequest::Instances(list) => format!("{} instances", list.len()),
    };
    let sharing = match r.sharing {
        Sharing::Exclusive => String::new(),
        Sharing::Mps { active_thread_pct, .. } => format!(" MPS {active_thread_pct}%"),
        Sharing::TimeSlice => " shared".into(),
    };
    if r.ranks > 1 { format!("{}×{gpu}{sharing}", r.ranks) } else { format!("{gpu}{sharing}") }
}

fn running_table(jobs: &[&JobView], now: u64, width: usize) -> Vec<Line<'static>> {
    if jobs.is_empty() {
        return section("Running", 0, None);
    }
    let mut t = Table::new(&["ID", "USER", "TENANT", "STATE", "SLICES", "GPU", "TIME"]);
    for j in jobs {
        let (slices, gpus) = job_slices(j);
        let time = j.started_ms.map_or_else(|| "-".into(), |s| short_duration_ms(now.saturating_sub(s)));
        t.row(vec![j.id.to_string(), j.user.clone(), j.tenant.clone(), j.state.to_string(), slices, gpus, time]);
    }
    section("Running", jobs.len(), Some(t.fit(2, width, &[4, 1, 2])))
}

fn queue_table(jobs: &[&JobView], now: u64, width: usize) -> Vec<Line<'static>> {
    if jobs.is_empty() {
        return section("Queued", 0, None);
    }
    let mut t = Table::new(&["ID", "USER", "TENANT", "WANTS", "WAITING", "REASON"]);
    for j in jobs {
        let reason = if j.reason.is_empty() { "-".to_string() } else { j.reason.clone() };
        t.row(vec![
            j.id.to_string(),
            j.user.clone(),
            j.tenant.clone(),
            wants(&j.resources),
            short_duration_ms(now.saturating_sub(j.submitted_ms)),
            reason,
        ]);
    }
    section("Queued", jobs.len(), Some(t.fit(2, width, &[5, 3, 1, 2])))
}

/// A section's first `height` lines; when some are left out, the last line shown says how many.
fn cut_section(lines: &[Line<'static>], height: usize) -> Vec<Line<'static>> {
    if lines.len() <= height {
        return lines.to_vec();
    }
    if height == 0 {
        return Vec::new();
    }
    let mut out: Vec<Line<'static>> = lines[..height - 1].to_vec();
    out.push(Line::styled(format!("  … {} more", lines.len() - (height - 1)), dim()));
    out
}

/// The GPU blocks from `first` on that fit `height` lines, a blank line between them; when not
/// all are shown, the last line says which are and how to scroll.
fn gpu_lines(blocks: &[Vec<Line<'static>>], first: usize, height: usize) -> Vec<Line<'static>> {
    let total = blocks.iter().map(Vec::len).sum::<usize>() + blocks.len().saturating_sub(1);
    if first == 0 && total <= height {
        return blocks.join(&Line::default());
    }
    if height == 0 || blocks.is_empty() {
        return Vec::new();
    }
    let first = first.min(blocks.len() - 1);
    let room = height - 1;
    let mut out: Vec<Line<'static>> = Vec::new();
    let mut shown = first;
    for b in &blocks[first..] {
        let gap = usize::from(!out.is_empty());
        if out.len() + gap + b.len() > room {
            if out.is_empty() {
                out.extend(b.iter().take(room).cloned());
                shown += 1;
            }
            break;
        }
        if gap == 1 {
            out.push(Line::default());
        }
        out.extend(b.iter().cloned());
        shown += 1;
    }
    let range = if shown == first + 1 { format!("GPU {first}") } else { format!("GPUs {first}-{}", shown - 1) };
    out.push(Line::styled(format!("{range} of {} shown · ↑↓ scroll", blocks.len()), dim()));
    out
}

#[cfg(test)]
mod tests {
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use tessera_daemon::wire::{DrainView, Occupant, RankView, SliceView};

    use super::*;

    const NOW: u64 = 1_780_000_000_000;

    fn instance(profile: &str, start: u8, holders: &[(u64, &str)], healthy: bool) -> InstanceInfo {
        let m = catalog().model("H100-80GB").unwrap();
        let p = m.profile(profile).unwrap();
        InstanceInfo {
            gpu_instance_id: Some(u32::from(start) + 1),
            profile: profile.into(),
            profile_id: p.id,
            start,
            size: p.placement_size,
            jobs: holders.iter().map(|h| h.0).collect(),
            occupants: holders
                .iter()
                .map(|(job, user)| Occupant {
                    job: *job,
                    user: (*user).into(),
                    tenant: "research".into(),
                    external: None,
                })
                .collect(),
            mig_uuid: None,
            healthy,
            gi_caps_minor: None,
            ci_caps_minor: None,
        }
    }

    fn gpu(index: u32, instances: Vec<InstanceInfo>) -> GpuInfo {
        GpuInfo {
            index,
            name: "NVIDIA H100 80GB HBM3".into(),
            uuid: format!("GPU-{index}"),
            model: Some("H100-80GB".into()),
            numa_node: Some(index),
            minor: Some(index),
            local_cpus: None,
            mig: true,
            drained: None,
            health: "healthy".into(),
            instances,
        }
    }

    fn job(id: u64, user: &str, state: JobState, request: serde_json::Value, slices: &[(u32, &str)]) -> JobView {
        JobView {
            id,
            user: user.into(),
            uid: 1000,
            tenant: "research".into(),
            priority: 0,
            state,
            reason: match state {
                JobState::Queued => "capacity: no free 7g.80gb instance on any GPU (GPU 1 is drained)".into(),
                _ => "started".into(),
            },
            command: Some(vec!["python".into(), "train.py".into()]),
            cwd: None,
            external: None,
            submitted_ms: NOW - 95_000,
            started_ms: (state != JobState::Queued).then_some(NOW - 65_000),
            ended_ms: None,
            resources: serde_json::from_value(request).unwrap(),
            runs: 1,
            ranks: vec![RankView {
                rank: 0,
                devices: Vec::new(),
                cpus: None,
                cpu_count: 1,
                numa_node: None,
                mem_mib: 1024,
                slices: slices
                    .iter()
                    .map(|(g, p)| SliceView {
                        gpu: *g,
                        gpu_uuid: format!("GPU-{g}"),
                        profile: Some((*p).into()),
                        profile_id: 9,
                        start: 0,
                        mig: true,
                        gpu_instance_id: Some(1),
                        mig_uuid: None,
                        exclusive: true,
                    })
                    .collect(),
            }],
            exit: None,
            events: Vec::new(),
            cancelled_by: None,
        }
    }

    /// Two H100s: GPU 0 with a 3g.40gb held by job 12, an idle 2g.20gb and a 1g.10gb held by job
    /// 13; GPU 1 drained, a 4g.40gb whose instance is unhealthy and two idle 1g.10gb, two units
    /// free. Jobs 12 and 13 run, job 14 waits for a 7g.80gb.
    fn snapshot() -> Snapshot {
        let mut g1 = gpu(
            1,
            vec![
                instance("4g.40gb", 0, &[], false),
                instance("1g.10gb", 4, &[], true),
                instance("1g.10gb", 5, &[], true),
            ],
        );
        g1.drained = Some(DrainView { by: "root".into(), reason: "cable swap".into(), at_ms: NOW - 1000 });
        g1.health = "degraded: Xid 94 on GI 1".into();
        let gpus = GpuList {
            backend: "sim".into(),
            gpus: vec![
                gpu(
                    0,
                    vec![
                        instance("3g.40gb", 0, &[(12, "alice")], true),
                        instance("2g.20gb", 4, &[], true),
                        instance("1g.10gb", 6, &[(13, "bob")], true),
                    ],
                ),
                g1,
            ],
        };
        let jobs = vec![
            job(
                12,
                "alice",
                JobState::Running,
                serde_json::json!({"gpu": {"profile": {"name": "3g.40gb"}}}),
                &[(0, "3g.40gb")],
            ),
            job(
                13,
                "bob",
                JobState::Running,
                serde_json::json!({"gpu": {"memory": {"mib": 10240}}}),
                &[(0, "1g.10gb")],
            ),
            job(14, "carol", JobState::Queued, serde_json::json!({"gpu": {"profile": {"name": "7g.80gb"}}}), &[]),
        ];
        Snapshot {
            host: "node-7".into(),
            state: Some(NodeState { gpus, jobs, all_users: true, read_ms: NOW - 1000 }),
            failure: None,
            now_ms: NOW,
            interval: Duration::from_secs(2),
            first_gpu: 0,
            tz: TimeZone::UTC,
        }
    }

    fn drawn(snap: &Snapshot, width: u16, height: u16) -> String {
        let mut t = Terminal::new(TestBackend::new(width, height)).unwrap();
        t.draw(|f| draw(f, snap)).unwrap();
        buffer_text(t.backend().buffer())
    }

    #[test]
    fn a_frame_shows_gpus_slices_holders_jobs_and_the_queue() {
        let out = drawn(&snapshot(), 100, 30);
        insta::assert_snapshot!("top_100x30", out);
    }

    #[test]
    fn a_narrow_terminal_keeps_every_line_within_its_width() {
        let out = drawn(&snapshot(), 80, 24);
        insta::assert_snapshot!("top_80x24", out);
        for line in out.lines() {
            assert!(line.width() <= 80, "{line}");
        }
        // Both GPUs' maps fit 80 columns at full cell width: a 1g.10gb's label whole.
        assert!(out.contains("[1g.10gb]"), "{out}");
        assert!(out.contains("[13 bob ]"), "{out}");
        // Narrower still: the cells shrink, the map stays one line per row.
        let out = drawn(&snapshot(), 50, 24);
        for line in out.lines() {
            assert!(line.width() <= 50, "{line}");
        }
        assert!(out.contains("[12 alice"), "{out}");
    }

    #[test]
    fn a_failed_refresh_keeps_the_last_data_and_says_how_old_it_is() {
        let mut snap = snapshot();
        snap.failure = Some(Failure {
            at_ms: NOW,
            message: "cannot reach the daemon at /run/tessera/tessera.sock: Connection refused".into(),
        });
        snap.now_ms = NOW + 8000;
        let out = drawn(&snap, 80, 30);
        let words = out.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            words.contains(
                "refresh failed at 20:26:40, showing what the daemon said at 20:26:39 (9s old): cannot reach the daemon"
            ),
            "{out}"
        );
        assert!(words.contains("Connection refused"), "{out}");
        assert!(out.contains("[12 alice"), "the last good data stays:\n{out}");
        // Before any good refresh: the error alone.
        snap.state = None;
        let out = drawn(&snap, 80, 10);
        assert!(out.contains("nothing to show yet"), "{out}");
    }

    #[test]
    fn too_many_gpus_for_the_height_scroll_and_say_so() {
        let mut snap = snapshot();
        if let Some(s) = snap.state.as_mut() {
            let g = s.gpus.gpus[0].clone();
            s.gpus.gpus = (0..8).map(|i| GpuInfo { index: i, ..g.clone() }).collect();
        }
        let out = drawn(&snap, 80, 24);
        assert!(out.contains("of 8 shown · ↑↓ scroll"), "{out}");
        assert!(out.contains("Queued (1)"), "the queue keeps its room:\n{out}");
        assert_eq!(out.lines().count(), 24, "{out}");
        snap.first_gpu = 6;
        let out = drawn(&snap, 80, 24);
        assert!(out.contains("GPU 6  H100-80GB"), "{out}");
        assert!(!out.contains("GPU 0  H100-80GB"), "{out}");
        // --once shows them all.
        let once = text(&snap, 80);
        assert_eq!(once.matches("H100-80GB").count(), 8, "{once}");
        assert!(once.contains("capacity: no free 7g.80gb"), "{once}");
    }

    #[test]
    fn any_terminal_size_draws_without_panicking() {
        let mut empty = snapshot();
        empty.state = None;
        let mut scrolled = snapshot();
        scrolled.first_gpu = 99;
        for snap in [snapshot(), empty, scrolled] {
            for (w, h) in [(1, 1), (2, 3), (10, 2), (20, 5), (40, 8), (300, 4), (80, 200)] {
                let out = drawn(&snap, w, h);
                assert!(out.lines().count() <= usize::from(h), "{w}x{h}:\n{out}");
            }
        }
    }

    #[test]
    fn the_slice_map_has_the_geometry_of_mig_gpus() {
        // The unit and profile rows are `tessera mig gpus`'s map (`layout_map` is `slice_map`)
        // with these labels.
        let snap = snapshot();
        let out = text(&snap, 100);
        let g = &snap.state.as_ref().unwrap().gpus.gpus[0];
        let slices: Vec<Slice> =
            g.instances.iter().map(|i| Slice { start: i.start, size: i.size, label: i.profile.clone() }).collect();
        let map = render::slice_map(8, 1, &slices, 2);
        for line in map.lines() {
            assert!(out.contains(line), "{line:?} not in\n{out}");
        }
    }
}
