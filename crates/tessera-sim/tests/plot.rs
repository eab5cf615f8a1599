//! Charts are written in both formats, name their series, survive awkward data and refuse to
//! draw nothing.

use tessera_sim::plot::{Axis, LineChart, PlotError, Series, write_both, write_png, write_svg};

fn chart(x_log: bool) -> LineChart {
    LineChart {
        title: "Utilisation <vs> load & 'size'".to_string(),
        x: if x_log { Axis::log("offered load") } else { Axis::linear("offered load") },
        y: Axis::linear("GPU utilisation"),
        series: vec![
            Series {
                name: "fgd".to_string(),
                points: (1..=20).map(|i| (f64::from(i) * 10.0, f64::from(i).sqrt())).collect(),
            },
            Series {
                name: "best-fit".to_string(),
                points: (1..=20).map(|i| (f64::from(i) * 10.0, f64::from(i).ln())).collect(),
            },
            Series { name: "tessera-mig".to_string(), points: vec![(10.0, 1.0), (f64::NAN, 2.0), (200.0, 3.0)] },
        ],
    }
}

/// The text of every `<text>` element of an SVG written by plotters.
fn texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| t.split_once('>')?.1.split("</text>").next())
        .map(|t| t.trim().to_string())
        .collect()
}

#[test]
fn writes_svg_and_png() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_both(&chart(false), &dir.path().join("util")).unwrap();
    assert_eq!(paths, vec![dir.path().join("util.svg"), dir.path().join("util.png")]);
    let svg = std::fs::read_to_string(&paths[0]).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
    for name in ["fgd", "best-fit", "tessera-mig", "offered load", "GPU utilisation"] {
        assert!(svg.contains(name), "SVG lacks {name}");
    }
    assert!(svg.contains("Utilisation &lt;vs&gt; load &amp; &apos;size&apos;"), "title escaped");
    let png = std::fs::read(&paths[1]).unwrap();
    assert!(png.len() > 1000, "PNG is {} bytes", png.len());
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}

#[test]
fn svg_is_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.svg"), dir.path().join("b.svg"));
    write_svg(&chart(true), &a).unwrap();
    write_svg(&chart(true), &b).unwrap();
    assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
}

#[test]
fn log_x_and_fixed_y_range() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = chart(true);
    c.series.push(Series { name: "with zero".to_string(), points: vec![(0.0, 1.0), (1.0, 1.0), (1e6, 2.0)] });
    c.y = c.y.range(0.0, 2.5);
    let paths = write_both(&c, &dir.path().join("log")).unwrap();
    let svg = std::fs::read_to_string(&paths[0]).unwrap();
    let texts = texts(&svg);
    assert!(texts.iter().any(|t| t == "1e6" || t == "100000"), "log ticks reach the data: {texts:?}");
    assert!(std::fs::metadata(&paths[1]).unwrap().len() > 1000);
}

#[test]
fn single_point_and_flat_series_draw() {
    let dir = tempfile::tempdir().unwrap();
    let c = LineChart {
        title: String::new(),
        x: Axis::linear(""),
        y: Axis::linear(""),
        series: vec![
            Series { name: "one".to_string(), points: vec![(5.0, 5.0)] },
            Series { name: "empty".to_string(), points: vec![] },
        ],
    };
    write_both(&c, &dir.path().join("one")).unwrap();
}

#[test]
fn nothing_to_draw_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.svg");
    let mut c = chart(false);
    c.series.clear();
    let e = write_svg(&c, &path).unwrap_err();
    assert!(matches!(e, PlotError::Data { .. }) && e.to_string().contains("no series"), "{e}");
    c.series = vec![Series { name: "nan".to_string(), points: vec![(f64::NAN, 1.0), (1.0, f64::INFINITY)] }];
    let e = write_png(&c, &dir.path().join("x.png")).unwrap_err();
    assert!(e.to_string().contains("no point to draw"), "{e}");
    c.series = vec![Series { name: "neg".to_string(), points: vec![(-1.0, 1.0), (0.0, 2.0)] }];
    c.x.log = true;
    assert!(write_svg(&c, &path).unwrap_err().to_string().contains("log axis"));
    let mut c = chart(false);
    c.y = c.y.range(1.0, 1.0);
    let e = write_svg(&c, &path).unwrap_err().to_string();
    assert!(e.contains("y axis: range (1, 1)") && e.contains("low below high"), "{e}");
    assert!(!path.exists(), "nothing written on error");
}

#[test]
fn unwritable_path_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing-dir").join("x.svg");
    let e = write_svg(&chart(false), &path).unwrap_err();
    assert!(matches!(e, PlotError::Write { .. }) && e.to_string().contains("missing-dir"), "{e}");
    let e = write_png(&chart(false), &path.with_extension("png")).unwrap_err();
    assert!(e.to_string().contains("missing-dir"), "{e}");
}
