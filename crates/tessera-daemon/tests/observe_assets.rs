//! The Grafana dashboard (`deploy/grafana/tessera-dashboard.json`) and the Prometheus alert rules
//! (`deploy/prometheus/tessera-rules.yml`) read as what they are: the dashboard against Grafana's
//! dashboard JSON model (the fields Grafana needs to import it, a 24-column grid without
//! overlaps, variables defined before use), and both against the metrics `GET /metrics` really
//! serves, so a renamed or dropped metric turns this red. That every query parses and runs is
//! checked by the real Prometheus in `scripts/prometheus-test.sh`.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use tessera_daemon::metrics::render;
use tessera_daemon::wire::{
    GpuInfo, GpuList, InstanceInfo, JobCount, JobState, MetricsData, MigOperationCount, Occupant, PendingCount,
    ReconfigDone, UtilisationReading, XidCount,
};

fn repo_file(path: &str) -> String {
    let full = format!("{}/../../{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

/// Grafana's dashboard JSON model, the parts an import needs (unknown fields are Grafana's
/// many optional ones and are allowed).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Dashboard {
    title: String,
    uid: String,
    schema_version: u32,
    panels: Vec<Panel>,
    templating: Templating,
    time: TimeRange,
    #[serde(default)]
    refresh: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TimeRange {
    from: String,
    to: String,
}

#[derive(Debug, Deserialize)]
struct Templating {
    list: Vec<Variable>,
}

#[derive(Debug, Deserialize)]
struct Variable {
    name: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Panel {
    id: u32,
    #[serde(rename = "type")]
    kind: String,
    title: String,
    grid_pos: GridPos,
    #[serde(default)]
    datasource: Option<DataSourceRef>,
    #[serde(default)]
    targets: Vec<Target>,
}

#[derive(Debug, Deserialize)]
struct GridPos {
    h: u32,
    w: u32,
    x: u32,
    y: u32,
}

#[derive(Debug, Deserialize)]
struct DataSourceRef {
    #[serde(rename = "type")]
    kind: String,
    uid: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Target {
    ref_id: String,
    expr: String,
    #[serde(default)]
    datasource: Option<DataSourceRef>,
}

/// The panel types Grafana ships (those a dashboard may use without a plugin).
const PANEL_TYPES: &[&str] = &["row", "timeseries", "stat", "gauge", "table", "bargauge", "state-timeline", "text"];

/// Each metric `GET /metrics` serves, by the name a query uses, from the text's `# TYPE` lines:
/// a counter's series end `_total`, a histogram's `_bucket`, `_sum`, `_count`.
fn served_metrics() -> BTreeSet<String> {
    // A family without series is not written: give every one a series.
    let occupant = Occupant { job: 7, user: "alice".into(), tenant: "ml".into(), external: None };
    let instance = InstanceInfo {
        gpu_instance_id: Some(1),
        profile: "1g.10gb".into(),
        profile_id: 19,
        start: 0,
        size: 1,
        jobs: vec![7],
        occupants: vec![occupant],
        mig_uuid: Some("MIG-1".into()),
        healthy: true,
        gi_caps_minor: None,
        ci_caps_minor: None,
    };
    let gpu = GpuInfo {
        index: 0,
        name: "NVIDIA H100 80GB HBM3".into(),
        uuid: "GPU-0".into(),
        model: Some("H100-SXM5-80GB".into()),
        numa_node: Some(0),
        minor: Some(0),
        local_cpus: None,
        mig: true,
        drained: None,
        health: "healthy".into(),
        instances: vec![instance],
    };
    let data = MetricsData {
        hostname: "h".into(),
        gpus: GpuList { backend: "sim".into(), gpus: vec![gpu] },
        jobs: vec![JobCount { state: JobState::Running, tenant: "ml".into(), count: 1 }],
        pending: vec![PendingCount { reason: "capacity".into(), tenant: "ml".into(), count: 1 }],
        waits: vec![("ml".into(), 1000)],
        reconfigurations: vec![ReconfigDone {
            gpu: 0,
            gpu_uuid: "GPU-0".into(),
            outcome: "completed".into(),
            duration_ms: 10,
        }],
        fair_share: BTreeMap::from([("ml".to_owned(), 1.0)]),
        quotas: BTreeMap::from([("ml".to_owned(), (7, 8))]),
        xids: vec![XidCount { gpu: 0, xid: 79, count: 1 }],
        mig_operations: vec![MigOperationCount {
            gpu: 0,
            operation: "create_gpu_instance".into(),
            outcome: "ok".into(),
            count: 1,
        }],
        utilisation: vec![UtilisationReading {
            gpu: 0,
            gpu_instance_id: Some(1),
            metrics: tessera_gpu::GpmMetrics {
                interval_ms: 5000,
                sm_active: Some(0.6),
                sm_occupancy: Some(0.3),
                tensor_active: Some(0.4),
                dram_active: Some(0.5),
                fp64_active: Some(0.0),
                fp32_active: Some(0.2),
                fp16_active: Some(0.1),
            },
        }],
        ..MetricsData::default()
    };
    let mut names = BTreeSet::new();
    for line in render(&data).lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
        let mut it = rest.split(' ');
        let (Some(name), Some(kind)) = (it.next(), it.next()) else { continue };
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for s in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{s}"));
                }
            }
            _ => {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

/// The `tessera_…` metric names a PromQL expression uses.
fn metrics_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("tessera_") {
        let tail = &rest[at..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        out.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

#[test]
fn the_dashboard_is_a_grafana_dashboard_of_served_metrics() {
    let text = repo_file("deploy/grafana/tessera-dashboard.json");
    let d: Dashboard = serde_json::from_str(&text).expect("the dashboard reads as Grafana's JSON model");
    assert!(!d.title.is_empty() && !d.uid.is_empty() && d.uid.len() <= 40, "title and a uid of at most 40 characters");
    assert!(d.schema_version >= 36, "schemaVersion {} predates Grafana 9's panel model", d.schema_version);
    assert!(!d.time.from.is_empty() && !d.time.to.is_empty());
    assert!(d.refresh.is_some());
    let vars: BTreeSet<&str> = d.templating.list.iter().map(|v| v.name.as_str()).collect();
    assert!(d.templating.list.iter().any(|v| v.name == "datasource" && v.kind == "datasource"));
    let served = served_metrics();
    let mut ids = BTreeSet::new();
    let mut cells: BTreeMap<(u32, u32), u32> = BTreeMap::new();
    let mut queried = BTreeSet::new();
    for p in &d.panels {
        assert!(ids.insert(p.id), "panel id {} twice", p.id);
        assert!(PANEL_TYPES.contains(&p.kind.as_str()), "panel '{}': type {}", p.title, p.kind);
        let g = &p.grid_pos;
        assert!(g.w >= 1 && g.h >= 1 && g.x + g.w <= 24, "panel '{}' leaves the 24-column grid: {g:?}", p.title);
        for x in g.x..g.x + g.w {
            for y in g.y..g.y + g.h {
                if let Some(other) = cells.insert((x, y), p.id) {
                    panic!("panel '{}' overlaps panel {other} at ({x}, {y})", p.title);
                }
            }
        }
        if p.kind == "row" {
            assert!(p.targets.is_empty() && g.w == 24, "row '{}'", p.title);
            continue;
        }
        assert!(!p.targets.is_empty(), "panel '{}' has no query", p.title);
        let ds = p.datasource.as_ref().expect("a panel names its data source");
        assert_eq!((ds.kind.as_str(), ds.uid.as_str()), ("prometheus", "${datasource}"), "panel '{}'", p.title);
        let mut refs = BTreeSet::new();
        for t in &p.targets {
            assert!(refs.insert(t.ref_id.as_str()), "panel '{}': refId {} twice", p.title, t.ref_id);
            if let Some(ds) = &t.datasource {
                assert_eq!(ds.uid, "${datasource}");
            }
            // Every variable is the dashboard's or one of Grafana's own.
            for var in t.expr.split('$').skip(1) {
                let name: String = var.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                assert!(
                    vars.contains(name.as_str()) || name == "__rate_interval" || name == "__interval",
                    "panel '{}' uses ${name}, which is not defined",
                    p.title
                );
            }
            let names = metrics_in(&t.expr);
            assert!(!names.is_empty(), "panel '{}' queries no Tessera metric: {}", p.title, t.expr);
            for n in names {
                assert!(served.contains(&n), "panel '{}' queries {n}, which GET /metrics does not serve", p.title);
                queried.insert(n);
            }
        }
    }
    // The issue's four views: slices per GPU over time, waits, reasons, health.
    for must in [
        "tessera_gpu_compute_slices",
        "tessera_queue_wait_seconds_bucket",
        "tessera_jobs_pending",
        "tessera_gpu_health",
    ] {
        assert!(queried.contains(must), "no panel shows {must}");
    }
}

#[derive(Debug, Deserialize)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Debug, Deserialize)]
struct RuleGroup {
    name: String,
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
struct Rule {
    alert: String,
    expr: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

#[test]
fn the_alert_rules_use_served_metrics_and_cover_the_issues_alerts() {
    let rules: RuleFile = serde_saphyr::from_str(&repo_file("deploy/prometheus/tessera-rules.yml")).unwrap();
    let served = served_metrics();
    let mut alerts = BTreeSet::new();
    for g in &rules.groups {
        assert!(!g.name.is_empty());
        for r in &g.rules {
            assert!(alerts.insert(r.alert.as_str()), "alert {} twice", r.alert);
            assert!(r.labels.contains_key("severity") && r.annotations.contains_key("summary"), "alert {}", r.alert);
            let names = metrics_in(&r.expr);
            assert!(!names.is_empty(), "alert {}", r.alert);
            for n in names {
                assert!(served.contains(&n), "alert {} uses {n}, which GET /metrics does not serve", r.alert);
            }
        }
    }
    for must in ["TesseraGpuUnhealthy", "TesseraJobsWaitOnFragmentation", "TesseraReconfigurationsFail"] {
        assert!(alerts.contains(must), "no alert {must}");
    }
}
