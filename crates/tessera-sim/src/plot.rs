//! Line charts for the simulator's reports, drawn by plotters as SVG (for the web and diffs) and
//! PNG (for documents): one drawing function over either backend, so both files show one chart.
//!
//! Axes say what they count, in readable units: a value (y) axis fitted to its data starts at 0;
//! an axis of seconds is shown in seconds, minutes, hours or days, whichever suits its range (the
//! unit in its label), or, on a log scale, with ticks at round durations ("1 min", "1 h"); part
//! of a linear axis can be stretched to give the interesting region more room (its label says
//! by how much). plotters lays text out with a TrueType font in both formats (the SVG names the
//! family `sans-serif` and its viewer renders the text): one is loaded once per process from
//! `TESSERA_FONT` or a list of standard system paths.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::Serialize;

/// Why a chart could not be drawn or written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The chart has nothing to draw or a bad setting.
    #[error("chart '{title}': {reason}")]
    Data { title: String, reason: String },
    /// The file could not be written or the drawing failed.
    #[error("{path}: cannot write: {reason}")]
    Write { path: String, reason: String },
    /// No usable font for the charts' text.
    #[error(
        "chart text needs a TrueType font and none could be loaded (set TESSERA_FONT to a .ttf file); tried: {tried}"
    )]
    NoFont { tried: String },
}

/// One line: its legend name and its (x, y) points, drawn in order. Non-finite points (and, on
/// a log axis, points at or below 0) break the line and are not drawn.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// What an axis's values are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum Quantity {
    /// Numbers, labelled as they are (the axis label names their unit).
    #[default]
    Number,
    /// Seconds, shown in the unit that suits the axis's range.
    Seconds,
}

/// The stretched part of a linear axis: values from `from` to the axis's end take `share` of
/// its length (the rest takes the remainder), with grid lines as dense per pixel as elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stretch {
    pub from: f64,
    pub share: f64,
}

/// One axis: its label, what its values are, its scale and range.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Axis {
    /// What the axis shows, with its unit (for `Quantity::Seconds` the unit is added).
    pub label: String,
    pub quantity: Quantity,
    /// Logarithmic (base 10).
    pub log: bool,
    /// Fixed range (low, high); `None` fits the data, and a fitted linear y axis starts at 0.
    /// Lines outside a fixed range are clipped at its edge.
    pub range: Option<(f64, f64)>,
    pub stretch: Option<Stretch>,
}

impl Axis {
    /// A linear axis of numbers, fitted to the data.
    pub fn linear(label: impl Into<String>) -> Axis {
        Axis { label: label.into(), quantity: Quantity::Number, log: false, range: None, stretch: None }
    }

    /// A log10 axis of numbers, fitted to the data.
    pub fn log(label: impl Into<String>) -> Axis {
        Axis { log: true, ..Axis::linear(label) }
    }

    /// Values are seconds.
    #[must_use]
    pub fn seconds(self) -> Axis {
        Axis { quantity: Quantity::Seconds, ..self }
    }

    /// A fixed range.
    #[must_use]
    pub fn range(self, lo: f64, hi: f64) -> Axis {
        Axis { range: Some((lo, hi)), ..self }
    }

    /// Stretch the part from `from` to the end to `share` of the axis's length.
    #[must_use]
    pub fn stretch(self, from: f64, share: f64) -> Axis {
        Axis { stretch: Some(Stretch { from, share }), ..self }
    }
}

/// A line chart: one or more series over shared axes, with a legend beside the plot area.
#[derive(Debug, Clone, Serialize)]
pub struct LineChart {
    pub title: String,
    pub x: Axis,
    pub y: Axis,
    pub series: Vec<Series>,
}

/// Chart size in pixels (SVG user units and PNG pixels).
const WIDTH: u32 = 960;
const HEIGHT: u32 = 600;
/// Space around the plot area: title, tick labels and axis labels, legend.
const MARGIN: u32 = 12;
const CAPTION_SIZE: u32 = 22;
const X_LABEL_AREA: u32 = 50;
const Y_LABEL_AREA: u32 = 72;
const TEXT_SIZE: u32 = 15;
const DESC_SIZE: u32 = 17;
/// About this many pixels between two grid lines.
const TICK_SPACING_PX: f64 = 55.0;

/// Tableau 10: distinct colours, in order, cycling after ten series.
const PALETTE: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

/// A time unit for a linear axis of seconds: (seconds per unit, name in the axis label).
const TIME_UNITS: [(f64, &str); 4] = [(1.0, "seconds"), (60.0, "minutes"), (3600.0, "hours"), (86_400.0, "days")];

/// The unit for a linear axis of seconds spanning `span_s`: the largest in which the span is
/// at least 3 units, so the ticks are whole numbers of a unit people count in.
fn time_unit(span_s: f64) -> (f64, &'static str) {
    TIME_UNITS.iter().rev().find(|(s, _)| span_s >= 3.0 * s).copied().unwrap_or(TIME_UNITS[0])
}

/// A duration as a tick label: "30 s", "5 min", "6 h", "2 d".
fn duration_label(s: f64) -> String {
    let (per, unit) = [(86_400.0, "d"), (3600.0, "h"), (60.0, "min"), (1.0, "s")]
        .into_iter()
        .find(|(per, _)| s >= *per)
        .unwrap_or((1.0, "s"));
    format!("{} {unit}", fmt_num(s / per))
}

/// Round durations for a log axis of seconds, as (seconds per unit, counts of that unit): a
/// dense ladder for short ranges, a sparse one (about a factor of 10 apart, in units people
/// count in) for long ones.
type Ladder = [(f64, &'static [f64]); 4];
const DENSE_DURATIONS: Ladder = [
    (1.0, &[0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0]),
    (60.0, &[1.0, 2.0, 5.0, 10.0, 20.0, 30.0]),
    (3600.0, &[1.0, 2.0, 3.0, 6.0, 12.0]),
    (86_400.0, &[1.0, 2.0, 3.0, 7.0, 14.0, 30.0, 60.0, 90.0, 180.0, 365.0, 730.0, 1825.0, 3650.0]),
];
const SPARSE_DURATIONS: Ladder = [
    (1.0, &[0.001, 0.01, 0.1, 1.0, 10.0]),
    (60.0, &[1.0, 10.0]),
    (3600.0, &[1.0, 6.0]),
    (86_400.0, &[1.0, 7.0, 30.0, 365.0, 3650.0, 36_500.0]),
];

/// Ticks of a log axis of seconds over [lo, hi] (lo > 0), each with its duration label.
fn duration_ticks(lo: f64, hi: f64) -> Vec<Tick> {
    let inside = |ladder: &Ladder| -> Vec<f64> {
        ladder
            .iter()
            .flat_map(|&(per, counts)| counts.iter().map(move |n| n * per))
            .filter(|v| *v >= lo * (1.0 - 1e-9) && *v <= hi * (1.0 + 1e-9))
            .collect()
    };
    let dense = inside(&DENSE_DURATIONS);
    let mut values = if dense.len() <= 10 { dense } else { inside(&SPARSE_DURATIONS) };
    if values.len() < 2 {
        // A range between two round durations: plain decimal ticks, still labelled as durations.
        values = log_ticks(lo, hi);
        if values.len() < 2 {
            values = linear_ticks(lo, hi, 4.0);
        }
    }
    values.into_iter().map(|v| Tick { value: v, label: duration_label(v) }).collect()
}

/// A value on an axis where a grid line and its label go.
#[derive(Debug, Clone, PartialEq)]
struct Tick {
    value: f64,
    label: String,
}

/// One axis made ready to draw, in display units (for seconds on a linear axis: the chosen unit).
#[derive(Debug, Clone)]
struct Scale {
    lo: f64,
    hi: f64,
    log: bool,
    /// Data units per display unit (seconds per minute, hour or day; otherwise 1).
    per_unit: f64,
    /// Linear pieces (value from, value to, fraction of the length from, to), in order.
    pieces: Vec<(f64, f64, f64, f64)>,
    ticks: Vec<Tick>,
    /// The axis label, with the time unit or the stretch added.
    label: String,
    /// Where a stretched part begins (a darker grid line marks it).
    stretch_at: Option<f64>,
}

impl Scale {
    /// Where `v` falls along the axis, 0 at `lo` and 1 at `hi` (outside: beyond, bounded).
    fn fraction(&self, v: f64) -> f64 {
        let t = if self.log {
            (v.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            let piece = self.pieces.iter().find(|p| v <= p.1).or(self.pieces.last()).copied();
            match piece {
                Some((v0, v1, f0, f1)) => f0 + (v - v0) / (v1 - v0) * (f1 - f0),
                None => (v - self.lo) / (self.hi - self.lo),
            }
        };
        if t.is_finite() { t.clamp(-1.0, 2.0) } else { 0.0 }
    }

    /// The label of the tick at `v` (plotters asks by value).
    fn label_of(&self, v: f64) -> String {
        let eps = if self.log { v.abs() * 1e-9 } else { (self.hi - self.lo).abs() * 1e-9 };
        self.ticks.iter().find(|t| (t.value - v).abs() <= eps).map_or_else(|| fmt_num(v), |t| t.label.clone())
    }
}

/// A chart made ready to draw: both axes and each series' unbroken runs of points, in display
/// units, clipped to the axes' ranges.
#[derive(Debug)]
struct Prepared {
    x: Scale,
    y: Scale,
    /// Per series (same order as the chart's): runs of drawable points.
    runs: Vec<Vec<Vec<(f64, f64)>>>,
}

/// Which axis: a fitted y (value) axis starts at 0, a fitted x axis spans the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    X,
    Y,
}

fn prepare(chart: &LineChart) -> Result<Prepared, PlotError> {
    let bad = |reason: String| PlotError::Data { title: chart.title.clone(), reason };
    if chart.series.is_empty() {
        return Err(bad("no series to draw".to_string()));
    }
    let drawable =
        |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (!chart.x.log || x > 0.0) && (!chart.y.log || y > 0.0);
    let runs: Vec<Vec<Vec<(f64, f64)>>> = chart
        .series
        .iter()
        .map(|s| s.points.split(|p| !drawable(p)).filter(|run| !run.is_empty()).map(<[(f64, f64)]>::to_vec).collect())
        .collect();
    let all = || runs.iter().flatten().flatten();
    if all().next().is_none() {
        return Err(bad(if chart.x.log || chart.y.log {
            "no point to draw (every series is empty, or its points are not finite or are at or below 0 on a log axis)"
                .to_string()
        } else {
            "no point to draw (every series is empty or its points are not finite)".to_string()
        }));
    }
    let extent = |f: fn(&(f64, f64)) -> f64| {
        all().map(f).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)))
    };
    let x = scale(&chart.x, Which::X, extent(|p| p.0)).map_err(|r| bad(format!("x axis: {r}")))?;
    let y = scale(&chart.y, Which::Y, extent(|p| p.1)).map_err(|r| bad(format!("y axis: {r}")))?;
    let swap = |runs: Vec<Vec<(f64, f64)>>| -> Vec<Vec<(f64, f64)>> {
        runs.into_iter().map(|r| r.into_iter().map(|(a, b)| (b, a)).collect()).collect()
    };
    let runs = runs
        .into_iter()
        .map(|series| {
            let shown: Vec<Vec<(f64, f64)>> = series
                .into_iter()
                .map(|run| run.into_iter().map(|(a, b)| (a / x.per_unit, b / y.per_unit)).collect())
                .collect();
            // Clip to the y range (interpolating x), then to the x range (interpolating y).
            let in_y = clip_runs(&shown, (y.lo, y.hi), x.log);
            swap(clip_runs(&swap(in_y), (x.lo, x.hi), y.log))
        })
        .collect();
    Ok(Prepared { x, y, runs })
}

/// Resolve one axis: its range (fixed or fitted), its display unit, its pieces and ticks.
/// `data` is the data's (min, max) on this axis, in data units.
fn scale(axis: &Axis, which: Which, data: (f64, f64)) -> Result<Scale, String> {
    let (lo, hi) = match axis.range {
        Some((lo, hi)) => {
            if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                return Err(format!("range ({lo}, {hi}) must be two finite numbers, low below high"));
            }
            if axis.log && lo <= 0.0 {
                return Err(format!("range ({lo}, {hi}) of a log axis must be above 0"));
            }
            (lo, hi)
        }
        None => fit(axis.log, which, data),
    };
    if !(hi - lo).is_finite() {
        return Err("the data's range is too wide to draw".to_string());
    }
    let (per_unit, mut label) = match (axis.quantity, axis.log) {
        (Quantity::Seconds, false) => {
            let (per, name) = time_unit(hi - lo);
            (per, format!("{} ({name})", axis.label))
        }
        _ => (1.0, axis.label.clone()),
    };
    let (lo, hi) = (lo / per_unit, hi / per_unit);
    // About the plot area's length (the legend's width varies), for the grid's density.
    let length_px = match which {
        Which::X => f64::from(WIDTH) * 0.68,
        Which::Y => f64::from(HEIGHT - CAPTION_SIZE - X_LABEL_AREA - 3 * MARGIN),
    };
    let target = length_px / TICK_SPACING_PX;
    let (pieces, stretch_at, ticks) = match axis.stretch {
        None => {
            let ticks = match (axis.log, axis.quantity) {
                (true, Quantity::Seconds) => duration_ticks(lo, hi),
                (true, Quantity::Number) => numbered(log_ticks(lo, hi)),
                (false, _) => numbered(linear_ticks(lo, hi, target)),
            };
            (vec![(lo, hi, 0.0, 1.0)], None, ticks)
        }
        Some(Stretch { from, share }) => {
            if axis.log {
                return Err("only a linear axis can be stretched".to_string());
            }
            let from = from / per_unit;
            if !(from > lo && from < hi) {
                return Err(format!("the stretch from {from} must lie inside the axis's range ({lo}, {hi})"));
            }
            if !(share > 0.0 && share < 1.0) {
                return Err(format!("the stretched part's share {share} must lie between 0 and 1"));
            }
            let split = 1.0 - share;
            let mut values = linear_ticks(lo, from, target * split);
            values.extend(linear_ticks(from, hi, target * share));
            values.sort_by(f64::total_cmp);
            values.dedup_by(|a, b| (*a - *b).abs() <= (hi - lo) * 1e-9);
            let factor = (share / (hi - from)) / (split / (from - lo));
            label = format!("{label}; {}–{} stretched {factor:.1}×", fmt_num(from), fmt_num(hi));
            (vec![(lo, from, 0.0, split), (from, hi, split, 1.0)], Some(from), numbered(values))
        }
    };
    Ok(Scale { lo, hi, log: axis.log, per_unit, pieces, ticks, label, stretch_at })
}

/// A fitted range: a log axis spans the data (a decade each way around a single value); a
/// linear x axis spans the data; a linear y axis spans 0 and the data, with a margin past the
/// data's far end.
fn fit(log: bool, which: Which, (lo, hi): (f64, f64)) -> (f64, f64) {
    if log {
        return if lo == hi { (lo / 10.0, hi * 10.0) } else { (lo, hi) };
    }
    match which {
        Which::X => {
            if lo == hi {
                let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
                (lo - pad, hi + pad)
            } else {
                (lo, hi)
            }
        }
        Which::Y => {
            let (lo, hi) = (lo.min(0.0), hi.max(0.0));
            if lo == hi {
                return (0.0, 1.0);
            }
            let pad = (hi - lo) * 0.05;
            (if lo < 0.0 { lo - pad } else { lo }, if hi > 0.0 { hi + pad } else { hi })
        }
    }
}

fn numbered(values: Vec<f64>) -> Vec<Tick> {
    values.into_iter().map(|v| Tick { value: v, label: fmt_num(v) }).collect()
}

/// "Nice" ticks inside [lo, hi], 1, 2 or 5 times a power of ten apart, the step nearest to
/// giving `target` intervals.
fn linear_ticks(lo: f64, hi: f64, target: f64) -> Vec<f64> {
    let raw = (hi - lo) / target.max(1.0);
    if !(raw.is_finite() && raw > 0.0) {
        return vec![lo];
    }
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .min_by(|a, b| (a.ln() - raw.ln()).abs().total_cmp(&(b.ln() - raw.ln()).abs()))
        .unwrap_or(mag);
    let first = (lo / step - 1e-9).ceil();
    (0..200)
        .map(|i| (first + f64::from(i)) * step)
        .take_while(|v| *v <= hi + step * 1e-9)
        .map(|v| if v.abs() < step * 1e-9 { 0.0 } else { v })
        .collect()
}

/// Powers of ten inside [lo, hi] (lo > 0), with 2× and 5× between them when there are few.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let mults: &[f64] = if b - a <= 2 { &[1.0, 2.0, 5.0] } else { &[1.0] };
    let step = ((b - a) / 12).max(1);
    let mut out = Vec::new();
    let mut e = a;
    while e <= b && out.len() < 60 {
        for m in mults {
            let v = m * 10f64.powi(e);
            if v >= lo * (1.0 - 1e-9) && v <= hi * (1.0 + 1e-9) {
                out.push(v);
            }
        }
        e += step;
    }
    out
}

/// A tick label: short, no float noise.
fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 {
        "0".to_string()
    } else if !(1e-3..1e6).contains(&a) {
        let s = format!("{v:e}");
        // Trim float noise in the mantissa: 2.0000000000000004e5 -> 2e5.
        match s.split_once('e') {
            Some((m, e)) => {
                let m: f64 = m.parse().unwrap_or(0.0);
                format!("{}e{e}", trim(&format!("{m:.3}")))
            }
            None => s,
        }
    } else {
        trim(&format!("{v:.4}"))
    }
}

fn trim(s: &str) -> String {
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s.to_string() }
}

/// Text as drawn: control characters dropped (plotters escapes XML's own characters).
fn clean(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).collect()
}

/// Where text fonts are looked for, after `TESSERA_FONT`.
const FONT_PATHS: [&str; 12] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/noto/NotoSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

/// The font file candidates: `TESSERA_FONT` alone when set (an explicit choice is not silently
/// replaced), else the standard paths.
fn font_candidates() -> Vec<PathBuf> {
    match std::env::var_os("TESSERA_FONT") {
        Some(p) if !p.is_empty() => vec![PathBuf::from(p)],
        _ => FONT_PATHS.iter().map(PathBuf::from).collect(),
    }
}

/// The first candidate that reads and parses as a font, with its bytes.
fn find_font(candidates: &[PathBuf]) -> Result<(PathBuf, Vec<u8>), PlotError> {
    let mut tried = Vec::new();
    for path in candidates {
        match std::fs::read(path) {
            Ok(bytes) if looks_like_a_font(&bytes) => return Ok((path.clone(), bytes)),
            Ok(_) => tried.push(format!("{} (not a TrueType/OpenType font)", path.display())),
            Err(e) => tried.push(format!("{} ({e})", path.display())),
        }
    }
    Err(PlotError::NoFont { tried: tried.join(", ") })
}

/// Whether the bytes start like a TrueType/OpenType font (or collection). Full parsing happens in
/// `register_font`, which needs `'static` bytes, so only the chosen file is handed to it.
fn looks_like_a_font(bytes: &[u8]) -> bool {
    matches!(bytes.get(..4), Some([0, 1, 0, 0] | b"OTTO" | b"true" | b"ttcf"))
}

/// Load and register the text font once per process (plotters' font table is global).
fn ensure_font() -> Result<(), PlotError> {
    static FONT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let outcome = FONT.get_or_init(|| {
        let (path, bytes) = find_font(&font_candidates()).map_err(|e| match e {
            PlotError::NoFont { tried } => tried,
            other => other.to_string(),
        })?;
        // Registered once for the life of the process, so leaking the bytes is the intended
        // `'static` lifetime, not a leak per chart.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        for family in ["sans-serif", "serif", "monospace"] {
            plotters::style::register_font(family, FontStyle::Normal, bytes)
                .map_err(|_| format!("{} (not a usable font)", path.display()))?;
        }
        Ok(path)
    });
    match outcome {
        Ok(_) => Ok(()),
        Err(tried) => Err(PlotError::NoFont { tried: tried.clone() }),
    }
}

/// Cut each run at the y range's edges, so lines leave the plot area where they cross it instead
/// of being flattened onto its border (the SVG does this with a clip path). On a log x axis the
/// crossing is interpolated in log10(x), as the line is drawn.
fn clip_runs(runs: &[Vec<(f64, f64)>], (y0, y1): (f64, f64), x_log: bool) -> Vec<Vec<(f64, f64)>> {
    let inside = |y: f64| (y0..=y1).contains(&y);
    let at = |a: (f64, f64), b: (f64, f64), y: f64| {
        let t = (y - a.1) / (b.1 - a.1);
        let x = if x_log { 10f64.powf(a.0.log10() + t * (b.0.log10() - a.0.log10())) } else { a.0 + t * (b.0 - a.0) };
        (x, y)
    };
    let mut out = Vec::new();
    for run in runs {
        let mut cur: Vec<(f64, f64)> = Vec::new();
        if let Some(&first) = run.first()
            && inside(first.1)
        {
            cur.push(first);
        }
        for w in run.windows(2) {
            let (a, b) = (w[0], w[1]);
            match (inside(a.1), inside(b.1)) {
                (true, true) => cur.push(b),
                (true, false) => {
                    cur.push(at(a, b, if b.1 > y1 { y1 } else { y0 }));
                    out.push(std::mem::take(&mut cur));
                }
                (false, true) => {
                    cur.push(at(a, b, if a.1 > y1 { y1 } else { y0 }));
                    cur.push(b);
                }
                (false, false) => {
                    // Crossing the whole band (one above, one below): draw the part inside.
                    if (a.1 > y1 && b.1 < y0) || (a.1 < y0 && b.1 > y1) {
                        let (ea, eb) = if a.1 > y1 { (y1, y0) } else { (y0, y1) };
                        out.push(vec![at(a, b, ea), at(a, b, eb)]);
                    }
                }
            }
        }
        if !cur.is_empty() {
            out.push(cur);
        }
    }
    out
}

/// One axis for plotters: its grid lines and labels are exactly the scale's ticks (plotters'
/// own `with_key_points` loses the value formatting its mesh needs), its mapping the scale's.
#[derive(Debug, Clone)]
struct AxisCoord(Scale);

impl Ranged for AxisCoord {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        limit.0 + (f64::from(limit.1 - limit.0) * self.0.fraction(*value)).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // Bold points carry the grid and labels; no light (minor) grid.
        if hint.weight().allow_light_points() { Vec::new() } else { self.0.ticks.iter().map(|t| t.value).collect() }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.0.lo..self.0.hi
    }
}

/// The legend's size: a row per series, as wide as its longest name.
fn legend_size<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, chart: &LineChart) -> (i32, i32) {
    let font = ("sans-serif", TEXT_SIZE).into_font();
    let longest = chart
        .series
        .iter()
        .map(|s| root.estimate_text_size(&clean(&s.name), &font.clone().into()).map_or(0, |(w, _)| w))
        .max()
        .unwrap_or(0);
    let width = (i32::try_from(longest).unwrap_or(300) + 52).clamp(90, 320);
    (width, 12 + 20 * i32::try_from(chart.series.len()).unwrap_or(i32::MAX / 40))
}

/// Draw the chart on a plotters drawing area: the one drawing code for SVG and PNG.
fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, chart: &LineChart, p: &Prepared) -> Result<(), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let (legend_w, legend_h) = legend_size(root, chart);
    let mut ctx = ChartBuilder::on(root)
        .margin(MARGIN)
        .margin_top(2 * MARGIN + CAPTION_SIZE)
        .margin_right(MARGIN + 15 + u32::try_from(legend_w).unwrap_or(320))
        .x_label_area_size(X_LABEL_AREA)
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d(AxisCoord(p.x.clone()), AxisCoord(p.y.clone()))
        .map_err(|x| e(&x))?;
    let (fx, fy) = (|v: &f64| p.x.label_of(*v), |v: &f64| p.y.label_of(*v));
    ctx.configure_mesh()
        .x_desc(clean(&p.x.label))
        .y_desc(clean(&p.y.label))
        .label_style(("sans-serif", TEXT_SIZE))
        .axis_desc_style(("sans-serif", DESC_SIZE))
        .x_label_formatter(&fx)
        .y_label_formatter(&fy)
        .bold_line_style(RGBColor(225, 225, 225))
        .axis_style(BLACK)
        .draw()
        .map_err(|x| e(&x))?;
    // Where a stretched part begins: a darker grid line across the plot.
    let mark = RGBColor(150, 150, 150).stroke_width(1);
    if let Some(at) = p.x.stretch_at {
        ctx.draw_series(std::iter::once(PathElement::new(vec![(at, p.y.lo), (at, p.y.hi)], mark)))
            .map_err(|x| e(&x))?;
    }
    if let Some(at) = p.y.stretch_at {
        ctx.draw_series(std::iter::once(PathElement::new(vec![(p.x.lo, at), (p.x.hi, at)], mark)))
            .map_err(|x| e(&x))?;
    }
    for (i, runs) in p.runs.iter().enumerate() {
        let (r, g, b) = PALETTE[i % PALETTE.len()];
        let colour = RGBColor(r, g, b);
        for run in runs {
            if let [only] = run[..] {
                // A lone point (no neighbour to draw a line to) is shown as a dot.
                ctx.draw_series(std::iter::once(Circle::new(only, 3, colour.filled()))).map_err(|x| e(&x))?;
            } else {
                ctx.draw_series(LineSeries::new(run.iter().copied(), colour.stroke_width(2))).map_err(|x| e(&x))?;
            }
        }
    }
    // The plot area's frame, over the lines' ends.
    let area = ctx.plotting_area();
    let (xs, ys) = area.get_pixel_range();
    // The title, over the plot area, moved in as far as it must to stay inside the image.
    let title = clean(&chart.title);
    let font = ("sans-serif", CAPTION_SIZE).into_font();
    let half =
        root.estimate_text_size(&title, &font.clone().into()).map_or(0, |(w, _)| i32::try_from(w / 2).unwrap_or(0));
    let (lo, hi) = (half + MARGIN as i32, WIDTH as i32 - half - MARGIN as i32);
    let centre = if lo <= hi { ((xs.start + xs.end) / 2).clamp(lo, hi) } else { WIDTH as i32 / 2 };
    let style = TextStyle::from(font).pos(Pos::new(HPos::Center, VPos::Top));
    root.draw(&Text::new(title, (centre, MARGIN as i32), style)).map_err(|x| e(&x))?;
    // On the axes' own lines (one pixel left of and below the plot area).
    root.draw(&Rectangle::new([(xs.start - 1, ys.start), (xs.end - 1, ys.end)], BLACK.stroke_width(1)))
        .map_err(|x| e(&x))?;
    // The legend, right of the plot area, level with its top (plotters' own legend sits inside
    // the plot area, over the lines).
    let (lx, top) = (xs.end + 15, ys.start);
    let corners = [(lx, top), (lx + legend_w, top + legend_h)];
    root.draw(&Rectangle::new(corners, WHITE.filled())).map_err(|x| e(&x))?;
    root.draw(&Rectangle::new(corners, RGBColor(153, 153, 153).stroke_width(1))).map_err(|x| e(&x))?;
    for (i, series) in chart.series.iter().enumerate() {
        let (r, g, b) = PALETTE[i % PALETTE.len()];
        let y = top + 16 + 20 * i32::try_from(i).unwrap_or(i32::MAX / 40);
        root.draw(&PathElement::new(vec![(lx + 8, y), (lx + 33, y)], RGBColor(r, g, b).stroke_width(3)))
            .map_err(|x| e(&x))?;
        let style = TextStyle::from(("sans-serif", TEXT_SIZE).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        root.draw(&Text::new(clean(&series.name), (lx + 40, y), style)).map_err(|x| e(&x))?;
    }
    root.present().map_err(|x| e(&x))
}

/// The two formats a chart is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Svg,
    Png,
}

impl Format {
    /// The file extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Svg => "svg",
            Format::Png => "png",
        }
    }
}

/// Write `chart` to `path` in `format`: the chart is prepared and drawn by the same code for
/// both, only plotters' backend differs.
pub fn write(chart: &LineChart, path: &Path, format: Format) -> Result<(), PlotError> {
    let p = prepare(chart)?;
    ensure_font()?;
    write_prepared(chart, &p, path, format)
}

/// Draw an already prepared chart into `path` (the font is loaded).
fn write_prepared(chart: &LineChart, p: &Prepared, path: &Path, format: Format) -> Result<(), PlotError> {
    let write_err = |reason: String| PlotError::Write { path: path.display().to_string(), reason };
    match format {
        Format::Svg => {
            let mut svg = String::new();
            {
                let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
                draw(&root, chart, p).map_err(write_err)?;
            }
            std::fs::write(path, svg).map_err(|e| write_err(e.to_string()))
        }
        Format::Png => {
            // Fail on an unwritable path before drawing (the backend reports it only at the end).
            std::fs::File::create(path).map_err(|e| write_err(e.to_string()))?;
            let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
            draw(&root, chart, p).map_err(write_err)
        }
    }
}

/// Write `chart` as SVG to `path`.
pub fn write_svg(chart: &LineChart, path: &Path) -> Result<(), PlotError> {
    write(chart, path, Format::Svg)
}

/// Write `chart` as PNG to `path`.
pub fn write_png(chart: &LineChart, path: &Path) -> Result<(), PlotError> {
    write(chart, path, Format::Png)
}

/// Write `chart` as `stem.svg` and `stem.png` (any extension of `stem` is replaced), prepared
/// once; returns the two paths, SVG first.
pub fn write_both(chart: &LineChart, stem: &Path) -> Result<Vec<PathBuf>, PlotError> {
    let p = prepare(chart)?;
    ensure_font()?;
    [Format::Svg, Format::Png]
        .into_iter()
        .map(|f| {
            let path = stem.with_extension(f.extension());
            write_prepared(chart, &p, &path, f).map(|()| path)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(x: Axis, y: Axis, points: Vec<(f64, f64)>) -> LineChart {
        LineChart { title: "t".to_string(), x, y, series: vec![Series { name: "s".to_string(), points }] }
    }

    #[test]
    fn no_font_names_every_path_tried() {
        let dir = tempfile::tempdir().unwrap();
        let not_font = dir.path().join("notes.ttf");
        std::fs::write(&not_font, b"plain text").unwrap();
        let missing = dir.path().join("missing.ttf");
        let e = find_font(&[missing.clone(), not_font.clone()]).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, PlotError::NoFont { .. }), "{msg}");
        assert!(msg.contains(&missing.display().to_string()) && msg.contains("TESSERA_FONT"), "{msg}");
        assert!(msg.contains(&format!("{} (not a TrueType/OpenType font)", not_font.display())), "{msg}");
    }

    #[test]
    fn ticks_are_round_and_inside() {
        assert_eq!(linear_ticks(0.0, 1.0, 5.0), vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]);
        assert_eq!(linear_ticks(-3.0, 3.0, 6.0), vec![-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0]);
        assert_eq!(linear_ticks(80.0, 130.0, 10.0), (0..=10).map(|i| 80.0 + 5.0 * f64::from(i)).collect::<Vec<_>>());
        assert_eq!(log_ticks(10.0, 200.0), vec![10.0, 20.0, 50.0, 100.0, 200.0]);
        assert_eq!(log_ticks(1.0, 1e6), vec![1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6]);
        assert!(log_ticks(1e-300, 1e300).len() <= 60);
        assert_eq!(fmt_num(0.6000000000000001), "0.6");
        assert_eq!(fmt_num(2e6), "2e6");
        assert_eq!(fmt_num(1234.5), "1234.5");
        assert_eq!(fmt_num(-0.0001), "-1e-4");
    }

    #[test]
    fn clipping_cuts_at_the_band() {
        let runs = vec![vec![(0.0, 0.0), (1.0, 2.0), (2.0, 0.0), (3.0, -2.0), (4.0, 2.0)]];
        let out = clip_runs(&runs, (-1.0, 1.0), false);
        assert_eq!(
            out,
            vec![
                vec![(0.0, 0.0), (0.5, 1.0)],
                vec![(1.5, 1.0), (2.0, 0.0), (2.5, -1.0)],
                vec![(3.25, -1.0), (3.75, 1.0)]
            ]
        );
    }

    /// (span in seconds, the unit chosen): a span of at least 3 units takes that unit.
    #[test]
    fn time_axis_unit_follows_the_range() {
        let cases = [
            (0.5, "seconds"),
            (179.0, "seconds"),
            (180.0, "minutes"),
            (3.0 * 3600.0 - 1.0, "minutes"),
            (3.0 * 3600.0, "hours"),
            (2.0 * 86_400.0, "hours"),
            (3.0 * 86_400.0, "days"),
            (30.0 * 86_400.0, "days"),
        ];
        for (span, unit) in cases {
            assert_eq!(time_unit(span).1, unit, "span {span} s");
        }
        // The axis shows the unit in its label and its values in that unit.
        let day = 86_400.0;
        let c = chart(
            Axis::linear("trace time").seconds(),
            Axis::linear("fraction"),
            vec![(3.0 * day, 0.5), (30.0 * day, 0.7)],
        );
        let p = prepare(&c).unwrap();
        assert_eq!(p.x.label, "trace time (days)");
        assert_eq!((p.x.lo, p.x.hi), (3.0, 30.0));
        assert_eq!(p.runs[0][0], vec![(3.0, 0.5), (30.0, 0.7)]);
        let every_two_days: Vec<String> = (2..=15).map(|d| (2 * d).to_string()).collect();
        assert_eq!(p.x.ticks.iter().map(|t| t.label.clone()).collect::<Vec<_>>(), every_two_days);
        let c = chart(Axis::linear("t").seconds(), Axis::linear("v"), vec![(0.0, 1.0), (5400.0, 2.0)]);
        assert_eq!(prepare(&c).unwrap().x.label, "t (minutes)");
    }

    #[test]
    fn log_time_ticks_are_round_durations() {
        let labels = |lo: f64, hi: f64| duration_ticks(lo, hi).into_iter().map(|t| t.label).collect::<Vec<_>>();
        assert_eq!(labels(1.0, 2e6), ["1 s", "10 s", "1 min", "10 min", "1 h", "6 h", "1 d", "7 d"]);
        assert_eq!(labels(100.0, 20_000.0), ["2 min", "5 min", "10 min", "20 min", "30 min", "1 h", "2 h", "3 h"]);
        assert_eq!(labels(1.5, 1.8).len(), 4, "a narrow range still gets ticks");
        let c = chart(Axis::log("JCT").seconds(), Axis::linear("fraction"), vec![(1.0, 0.0), (1e6, 1.0)]);
        let p = prepare(&c).unwrap();
        assert_eq!(p.x.label, "JCT", "a log axis of seconds names units at each tick");
        assert_eq!(p.x.label_of(3600.0), "1 h");
    }

    /// A fitted value axis starts at 0 whatever the data; a fixed range is kept; an x axis fits
    /// the data.
    #[test]
    fn value_axes_start_at_zero() {
        for points in [vec![(0.0, 1.2), (1.0, 15.0)], vec![(0.0, 90.0), (1.0, 99.0)], vec![(0.0, 5.0), (1.0, 5.0)]] {
            let p = prepare(&chart(Axis::linear("x"), Axis::linear("y"), points.clone())).unwrap();
            assert_eq!(p.y.lo, 0.0, "{points:?}");
            assert!(p.y.hi >= points.iter().map(|q| q.1).fold(0.0, f64::max), "{points:?}");
            assert_eq!(p.y.ticks[0].value, 0.0, "{points:?}");
        }
        let p = prepare(&chart(Axis::linear("x"), Axis::linear("y"), vec![(0.0, -2.0), (1.0, -1.0)])).unwrap();
        assert!(p.y.lo < -2.0 && p.y.hi == 0.0, "{:?}", (p.y.lo, p.y.hi));
        let p = prepare(&chart(Axis::linear("x"), Axis::linear("y").range(0.0, 1.0), vec![(50.0, 0.5), (80.0, 0.6)]))
            .unwrap();
        assert_eq!((p.x.lo, p.x.hi, p.y.lo, p.y.hi), (50.0, 80.0, 0.0, 1.0));
    }

    /// A stretched part takes its share of the axis, with grid lines as dense per pixel as the
    /// rest, and says so in the label.
    #[test]
    fn stretched_axis_gives_the_region_room() {
        let c = chart(Axis::linear("demand (%)").stretch(80.0, 0.7), Axis::linear("y"), vec![(0.0, 0.0), (130.0, 1.0)]);
        let p = prepare(&c).unwrap();
        assert!((p.x.fraction(80.0) - 0.3).abs() < 1e-12 && (p.x.fraction(105.0) - 0.65).abs() < 1e-12);
        assert_eq!(p.x.fraction(0.0), 0.0);
        assert_eq!(p.x.fraction(130.0), 1.0);
        let values: Vec<f64> = p.x.ticks.iter().map(|t| t.value).collect();
        assert!(values.contains(&80.0) && values.contains(&85.0) && values.contains(&125.0), "{values:?}");
        assert!(!values.contains(&10.0), "the squeezed part has a coarser grid: {values:?}");
        assert_eq!(p.x.label, "demand (%); 80–130 stretched 3.7×");
        for (axis, want) in [
            (Axis::linear("x").stretch(200.0, 0.5), "inside the axis's range"),
            (Axis::linear("x").stretch(50.0, 1.0), "between 0 and 1"),
            (Axis::log("x").stretch(50.0, 0.5), "only a linear axis"),
        ] {
            let e = prepare(&chart(axis, Axis::linear("y"), vec![(1.0, 0.0), (130.0, 1.0)])).unwrap_err().to_string();
            assert!(e.contains("x axis") && e.contains(want), "{e}");
        }
    }

    /// The SVG and the PNG come from the same drawing: the SVG file is plotters' SVG backend's
    /// output of `draw`, and at every vertex of its lines the bitmap `draw` makes for the PNG
    /// has that line's colour.
    #[test]
    fn svg_and_png_are_one_drawing() {
        ensure_font().unwrap();
        let c = LineChart {
            title: "one drawing".to_string(),
            x: Axis::linear("x").range(-10.0, 110.0).stretch(60.0, 0.6),
            y: Axis::linear("y"),
            series: vec![
                Series {
                    name: "rising".to_string(),
                    points: (0..=10).map(|i| (f64::from(i) * 10.0, f64::from(i) + 1.0)).collect(),
                },
                Series { name: "flat".to_string(), points: vec![(0.0, 3.5), (100.0, 3.5)] },
            ],
        };
        let p = prepare(&c).unwrap();
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
            draw(&root, &c, &p).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("one.svg");
        write_svg(&c, &file).unwrap();
        assert!(std::fs::read_to_string(&file).unwrap() == svg, "the SVG file is not plotters' drawing");
        let mut rgb = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut rgb, (WIDTH, HEIGHT)).into_drawing_area();
            draw(&root, &c, &p).unwrap();
        }
        let mut checked = 0;
        for (i, (r, g, b)) in PALETTE.iter().take(2).enumerate() {
            let stroke = format!("stroke=\"#{r:02X}{g:02X}{b:02X}\"");
            let line = svg.lines().find(|l| l.starts_with("<polyline") && l.contains(&stroke)).unwrap_or_else(|| {
                panic!("series {i} is not a polyline of colour {stroke}:\n{svg}");
            });
            let points = line.split("points=\"").nth(1).and_then(|s| s.split('"').next()).unwrap();
            for xy in points.split_whitespace() {
                let (x, y) = xy.split_once(',').unwrap();
                let (x, y): (u32, u32) = (x.parse().unwrap(), y.parse().unwrap());
                // The vertex or a pixel next to it (a thick line's end may round either way).
                let near = (0..9).any(|k| {
                    let at = (((y + k / 3 - 1) * WIDTH + x + k % 3 - 1) * 3) as usize;
                    (rgb[at], rgb[at + 1], rgb[at + 2]) == (*r, *g, *b)
                });
                assert!(near, "series {i}: the bitmap has no pixel of its colour at the SVG's vertex ({x}, {y})");
                checked += 1;
            }
        }
        assert!(checked >= 12, "{checked} vertices checked");
        assert!(svg.contains("one drawing") && svg.contains("rising") && svg.contains("stretched"), "{svg}");
    }
}
