//! Line charts for the simulator's reports, as SVG (for the web and diffs) and PNG (for
//! documents).
//!
//! SVG is written directly, not through plotters: plotters' text layout needs a registered font
//! even for SVG, and SVG text is laid out by the viewer anyway, so SVG works on any machine, is
//! byte-for-byte reproducible and needs no font. PNG goes through plotters' bitmap backend, whose
//! `ab_glyph` text rendering needs a TrueType font: one is loaded once per process from
//! `TESSERA_FONT` or a list of standard system paths. Both formats share the same ranges, ticks
//! and colours (`Prepared`), so the two files show the same chart.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

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
    /// No usable font for PNG text.
    #[error(
        "PNG text needs a TrueType font and none could be loaded (set TESSERA_FONT to a .ttf file); tried: {tried}"
    )]
    NoFont { tried: String },
}

/// One line: its legend name and its (x, y) points, drawn in order. Non-finite points (and, on
/// a log x axis, points with x ≤ 0) break the line and are not drawn.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A line chart: one or more series over shared axes, with a legend.
#[derive(Debug, Clone, Serialize)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// Logarithmic x axis (base 10).
    pub x_log: bool,
    /// Fixed y range (low, high); `None` fits the data with a margin. Lines outside are clipped.
    pub y_range: Option<(f64, f64)>,
}

/// Chart size in pixels (SVG user units and PNG pixels).
const WIDTH: u32 = 960;
const HEIGHT: u32 = 600;

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

/// A chart made ready to draw: ranges, ticks and each series' unbroken runs of points.
#[derive(Debug)]
struct Prepared {
    x: (f64, f64),
    y: (f64, f64),
    x_ticks: Vec<f64>,
    y_ticks: Vec<f64>,
    /// Per series (same order as the chart's): runs of drawable points.
    runs: Vec<Vec<Vec<(f64, f64)>>>,
}

fn prepare(chart: &LineChart) -> Result<Prepared, PlotError> {
    let bad = |reason: &str| PlotError::Data { title: chart.title.clone(), reason: reason.to_string() };
    if chart.series.is_empty() {
        return Err(bad("no series to draw"));
    }
    let drawable = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (!chart.x_log || x > 0.0);
    let runs: Vec<Vec<Vec<(f64, f64)>>> = chart
        .series
        .iter()
        .map(|s| s.points.split(|p| !drawable(p)).filter(|run| !run.is_empty()).map(<[(f64, f64)]>::to_vec).collect())
        .collect();
    let all = || runs.iter().flatten().flatten();
    if all().next().is_none() {
        return Err(bad(if chart.x_log {
            "no point to draw (every series is empty, or its points are not finite or have x ≤ 0 on a log axis)"
        } else {
            "no point to draw (every series is empty or its points are not finite)"
        }));
    }
    let (mut x0, mut x1) = all().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| (lo.min(p.0), hi.max(p.0)));
    if chart.x_log {
        if x0 == x1 {
            (x0, x1) = (x0 / 10.0, x1 * 10.0);
        }
    } else if x0 == x1 {
        let pad = if x0 == 0.0 { 1.0 } else { x0.abs() * 0.1 };
        (x0, x1) = (x0 - pad, x1 + pad);
    }
    let (y0, y1) = match chart.y_range {
        Some((lo, hi)) => {
            if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                return Err(bad(&format!("y_range ({lo}, {hi}) must be two finite numbers, low below high")));
            }
            (lo, hi)
        }
        None => {
            let (lo, hi) = all().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
            if lo == hi {
                let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
                (lo - pad, hi + pad)
            } else {
                let pad = (hi - lo) * 0.05;
                // Keep a zero baseline when the data starts at zero or just above it.
                let lo = if lo >= 0.0 && lo - pad < 0.0 { 0.0 } else { lo - pad };
                (lo, hi + pad)
            }
        }
    };
    if !(x1 - x0).is_finite() || !(y1 - y0).is_finite() {
        return Err(bad("the data's range is too wide to draw"));
    }
    let x_ticks = if chart.x_log { log_ticks(x0, x1) } else { linear_ticks(x0, x1) };
    Ok(Prepared { x: (x0, x1), y: (y0, y1), x_ticks, y_ticks: linear_ticks(y0, y1), runs })
}

/// About six "nice" ticks (1, 2 or 5 times a power of ten apart) inside [lo, hi].
fn linear_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let raw = (hi - lo) / 6.0;
    if !(raw.is_finite() && raw > 0.0) {
        return vec![lo];
    }
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
    let first = (lo / step).ceil();
    (0..50)
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

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Layout shared by both formats: the plot area in pixels.
struct Frame {
    left: f64,
    top: f64,
    right: f64,
    bottom: f64,
    legend_w: f64,
}

fn frame(chart: &LineChart) -> Frame {
    let longest = chart.series.iter().map(|s| s.name.chars().count()).max().unwrap_or(0) as f64;
    let legend_w = (longest * 7.5 + 50.0).clamp(90.0, 320.0);
    let w = f64::from(WIDTH);
    Frame { left: 80.0, top: 50.0, right: w - legend_w - 20.0, bottom: f64::from(HEIGHT) - 60.0, legend_w }
}

fn render_svg(chart: &LineChart, p: &Prepared) -> String {
    let f = frame(chart);
    let sx = |x: f64| {
        let t = if chart.x_log {
            (x.log10() - p.x.0.log10()) / (p.x.1.log10() - p.x.0.log10())
        } else {
            (x - p.x.0) / (p.x.1 - p.x.0)
        };
        f.left + t * (f.right - f.left)
    };
    let sy = |y: f64| f.bottom - (y - p.y.0) / (p.y.1 - p.y.0) * (f.bottom - f.top);
    let mut s = String::with_capacity(4096 + 24 * p.runs.iter().flatten().map(Vec::len).sum::<usize>());
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<defs><clipPath id="plot-area"><rect x="{:.2}" y="{:.2}" width="{:.2}" height="{:.2}"/></clipPath></defs>"#,
        f.left,
        f.top,
        f.right - f.left,
        f.bottom - f.top
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.2}" y="30" font-size="20" text-anchor="middle">{}</text>"#,
        (f.left + f.right) / 2.0,
        xml_escape(&chart.title)
    );
    // Grid, ticks and tick labels.
    for &x in &p.x_ticks {
        let px = sx(x);
        let _ = writeln!(
            s,
            r##"<line x1="{px:.2}" y1="{:.2}" x2="{px:.2}" y2="{:.2}" stroke="#e0e0e0"/><text x="{px:.2}" y="{:.2}" font-size="12" text-anchor="middle">{}</text>"##,
            f.top,
            f.bottom,
            f.bottom + 18.0,
            fmt_num(x)
        );
    }
    for &y in &p.y_ticks {
        let py = sy(y);
        let _ = writeln!(
            s,
            r##"<line x1="{:.2}" y1="{py:.2}" x2="{:.2}" y2="{py:.2}" stroke="#e0e0e0"/><text x="{:.2}" y="{:.2}" font-size="12" text-anchor="end">{}</text>"##,
            f.left,
            f.right,
            f.left - 8.0,
            py + 4.0,
            fmt_num(y)
        );
    }
    let _ = writeln!(
        s,
        r#"<rect x="{:.2}" y="{:.2}" width="{:.2}" height="{:.2}" fill="none" stroke="black"/>"#,
        f.left,
        f.top,
        f.right - f.left,
        f.bottom - f.top
    );
    // Axis labels.
    let _ = writeln!(
        s,
        r#"<text x="{:.2}" y="{:.2}" font-size="14" text-anchor="middle">{}</text>"#,
        (f.left + f.right) / 2.0,
        f64::from(HEIGHT) - 15.0,
        xml_escape(&chart.x_label)
    );
    let mid_y = (f.top + f.bottom) / 2.0;
    let _ = writeln!(
        s,
        r#"<text x="20" y="{mid_y:.2}" font-size="14" text-anchor="middle" transform="rotate(-90 20 {mid_y:.2})">{}</text>"#,
        xml_escape(&chart.y_label)
    );
    // Lines.
    for (i, (series, runs)) in chart.series.iter().zip(&p.runs).enumerate() {
        let (r, g, b) = PALETTE[i % PALETTE.len()];
        let _ = writeln!(
            s,
            r#"<g clip-path="url(#plot-area)" fill="none" stroke="rgb({r},{g},{b})" stroke-width="2"><title>{}</title>"#,
            xml_escape(&series.name)
        );
        for run in runs {
            if let [(x, y)] = run[..] {
                // A lone point (no neighbour to draw a line to) is shown as a dot.
                let _ = writeln!(s, r#"<circle cx="{:.2}" cy="{:.2}" r="3" fill="rgb({r},{g},{b})"/>"#, sx(x), sy(y));
                continue;
            }
            s.push_str(r#"<polyline points=""#);
            for (k, &(x, y)) in run.iter().enumerate() {
                let _ = write!(s, "{}{:.2},{:.2}", if k == 0 { "" } else { " " }, sx(x), sy(y));
            }
            s.push_str("\"/>\n");
        }
        s.push_str("</g>\n");
    }
    // Legend, right of the plot area.
    let lx = f.right + 15.0;
    let _ = writeln!(
        s,
        r##"<rect x="{lx:.2}" y="{:.2}" width="{:.2}" height="{:.2}" fill="white" stroke="#999999"/>"##,
        f.top,
        f.legend_w,
        10.0 + 20.0 * chart.series.len() as f64
    );
    for (i, series) in chart.series.iter().enumerate() {
        let (r, g, b) = PALETTE[i % PALETTE.len()];
        let ly = f.top + 20.0 + 20.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{:.2}" y1="{ly:.2}" x2="{:.2}" y2="{ly:.2}" stroke="rgb({r},{g},{b})" stroke-width="3"/><text x="{:.2}" y="{:.2}" font-size="12">{}</text>"#,
            lx + 8.0,
            lx + 33.0,
            lx + 40.0,
            ly + 4.0,
            xml_escape(&series.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Write `chart` as SVG to `path`. Needs no font.
pub fn write_svg(chart: &LineChart, path: &Path) -> Result<(), PlotError> {
    let p = prepare(chart)?;
    std::fs::write(path, render_svg(chart, &p))
        .map_err(|e| PlotError::Write { path: path.display().to_string(), reason: e.to_string() })
}

/// Where PNG text fonts are looked for, after `TESSERA_FONT`.
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
            Ok(bytes) if ab_glyph_ok(&bytes) => return Ok((path.clone(), bytes)),
            Ok(_) => tried.push(format!("{} (not a TrueType/OpenType font)", path.display())),
            Err(e) => tried.push(format!("{} ({e})", path.display())),
        }
    }
    Err(PlotError::NoFont { tried: tried.join(", ") })
}

/// Whether the bytes start like a TrueType/OpenType font (or collection). Full parsing happens in
/// `register_font`, which needs `'static` bytes, so only the chosen file is handed to it.
fn ab_glyph_ok(bytes: &[u8]) -> bool {
    matches!(bytes.get(..4), Some([0, 1, 0, 0] | b"OTTO" | b"true" | b"ttcf"))
}

/// Load and register the PNG font once per process (plotters' font table is global).
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

/// One axis for plotters, linear or log10, whose grid lines and labels are exactly our ticks
/// (plotters' own `with_key_points` loses the value formatting its mesh needs).
#[derive(Debug, Clone)]
struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
    ticks: Vec<f64>,
}

impl Ranged for Axis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let t = if self.log {
            (value.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            (value - self.lo) / (self.hi - self.lo)
        };
        let t = if t.is_finite() { t.clamp(-1.0, 2.0) } else { 0.0 };
        limit.0 + (f64::from(limit.1 - limit.0) * t).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // Bold points carry the grid and labels; no light (minor) grid.
        if hint.weight().allow_light_points() { Vec::new() } else { self.ticks.clone() }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

/// Draw the chart on a plotters drawing area.
fn draw_plotters<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    chart: &LineChart,
    p: &Prepared,
) -> Result<(), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let f = frame(chart);
    let mut ctx = ChartBuilder::on(root)
        .caption(&chart.title, ("sans-serif", 20))
        .margin_top(10)
        .margin_right(f.legend_w as u32 + 25)
        .margin_left(10)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(
            Axis { lo: p.x.0, hi: p.x.1, log: chart.x_log, ticks: p.x_ticks.clone() },
            Axis { lo: p.y.0, hi: p.y.1, log: false, ticks: p.y_ticks.clone() },
        )
        .map_err(|x| e(&x))?;
    let fx = |v: &f64| fmt_num(*v);
    ctx.configure_mesh()
        .x_desc(&chart.x_label)
        .y_desc(&chart.y_label)
        .label_style(("sans-serif", 12))
        .axis_desc_style(("sans-serif", 14))
        .x_label_formatter(&fx)
        .y_label_formatter(&fx)
        .bold_line_style(RGBColor(224, 224, 224))
        .draw()
        .map_err(|x| e(&x))?;
    for (i, runs) in p.runs.iter().enumerate() {
        let (r, g, b) = PALETTE[i % PALETTE.len()];
        let colour = RGBColor(r, g, b);
        for run in clip_runs(runs, p.y, chart.x_log) {
            if let [only] = run[..] {
                ctx.draw_series(std::iter::once(Circle::new(only, 3, colour.filled()))).map_err(|x| e(&x))?;
            } else {
                ctx.draw_series(LineSeries::new(run, colour.stroke_width(2))).map_err(|x| e(&x))?;
            }
        }
    }
    // The legend, drawn on the root in the right margin (plotters' own legend is clipped to the
    // plot area), laid out as in the SVG.
    let (lx, top) = (f.right as i32 + 15, f.top as i32);
    let height = 10 + 20 * chart.series.len() as i32;
    let box_style = ShapeStyle::from(RGBColor(153, 153, 153)).stroke_width(1);
    root.draw(&Rectangle::new([(lx, top), (lx + f.legend_w as i32, top + height)], WHITE.filled()))
        .map_err(|x| e(&x))?;
    root.draw(&Rectangle::new([(lx, top), (lx + f.legend_w as i32, top + height)], box_style)).map_err(|x| e(&x))?;
    for (i, series) in chart.series.iter().enumerate() {
        let (r, g, b) = PALETTE[i % PALETTE.len()];
        let y = top + 20 + 20 * i as i32;
        root.draw(&PathElement::new(vec![(lx + 8, y), (lx + 33, y)], RGBColor(r, g, b).stroke_width(3)))
            .map_err(|x| e(&x))?;
        let style = TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        root.draw(&Text::new(series.name.clone(), (lx + 40, y), style)).map_err(|x| e(&x))?;
    }
    root.present().map_err(|x| e(&x))
}

/// Write `chart` as PNG to `path` (needs a font: see the module header).
pub fn write_png(chart: &LineChart, path: &Path) -> Result<(), PlotError> {
    let p = prepare(chart)?;
    ensure_font()?;
    let write_err = |reason: String| PlotError::Write { path: path.display().to_string(), reason };
    // Fail on an unwritable path before drawing (the backend reports it only at the end).
    std::fs::File::create(path).map_err(|e| write_err(e.to_string()))?;
    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    draw_plotters(&root, chart, &p).map_err(write_err)
}

/// Write `chart` as `stem.svg` and `stem.png` (any extension of `stem` is replaced); returns the
/// two paths, SVG first.
pub fn write_both(chart: &LineChart, stem: &Path) -> Result<Vec<PathBuf>, PlotError> {
    let svg = stem.with_extension("svg");
    let png = stem.with_extension("png");
    write_svg(chart, &svg)?;
    write_png(chart, &png)?;
    Ok(vec![svg, png])
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(linear_ticks(0.0, 1.0), vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]);
        assert_eq!(linear_ticks(-3.0, 3.0), vec![-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0]);
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
}
