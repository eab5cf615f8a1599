//! `GET /metrics`: the node's slices and jobs in the OpenMetrics text format, for Prometheus.
//!
//! Rendered at each scrape from one [`MetricsData`] (the reader's view: `GET /v1/gpus` and the
//! live jobs), so every series agrees with what `tessera gpus` and `tessera jobs` say at that
//! moment. Per-GPU and per-instance series carry dcgm-exporter's label names (`gpu`, `UUID`,
//! `device`, `modelName`, `Hostname`, `GPU_I_PROFILE`, `GPU_I_ID`), so dashboards and alerts
//! written for it join on them. A holder adds `tessera_job` (not `job`: Prometheus gives that
//! label the scrape job's name), `user`, `tenant` and, for another system's work, `door` and
//! `key` (a pod's `<namespace>/<pod>/<container>`, a Slurm job's `job/<id>/<user>`); a pod's
//! hold also has dcgm-exporter's `namespace`, `pod` and `container`.
//! prometheus-client's label derive cannot name labels `UUID`, so labels are `(name, value)`
//! lists.

use std::collections::BTreeMap;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tessera_gpu::GpmMetric;
use tessera_mig::{Instance, catalog, planner_for};
use tessera_store::{HistogramBounds, HistogramTotal};

use crate::wire::{GpuInfo, MetricsData};

/// The content type of the text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(String, String)>;

/// Queue-wait buckets' upper bounds, in ms: a second to a day.
const WAIT_BUCKETS_MS: [u64; 10] =
    [1_000, 5_000, 15_000, 60_000, 300_000, 900_000, 3_600_000, 4 * 3_600_000, 12 * 3_600_000, 86_400_000];
/// Reconfiguration-duration buckets' upper bounds, in ms: a MIG change takes tens of ms to seconds.
const RECONFIG_BUCKETS_MS: [u64; 9] = [10, 50, 100, 250, 500, 1_000, 2_500, 5_000, 30_000];

/// The histograms' buckets, the one definition: the store folds pruned history into the same
/// ones (`tessera_store::Store::prune`).
pub const HISTOGRAM_BOUNDS: HistogramBounds =
    HistogramBounds { queue_wait_ms: &WAIT_BUCKETS_MS, reconfig_ms: &RECONFIG_BUCKETS_MS };

/// A histogram family built at the scrape from whole-millisecond observations (the store's
/// totals of pruned history plus the remaining rows), rendered in seconds. prometheus-client's
/// `Histogram` cannot start from totals, and summing integer ms keeps `_sum` exact whichever
/// rows were folded.
#[derive(Debug)]
struct MsHistograms {
    bounds: &'static [u64],
    series: BTreeMap<Labels, HistogramTotal>,
}

impl MsHistograms {
    fn new(bounds: &'static [u64]) -> MsHistograms {
        MsHistograms { bounds, series: BTreeMap::new() }
    }

    fn entry(&mut self, labels: Labels) -> &mut HistogramTotal {
        self.series.entry(labels).or_default()
    }

    fn observe(&mut self, labels: Labels, ms: u64) {
        let bounds = self.bounds;
        self.entry(labels).observe(bounds, ms);
    }

    /// Each bucket's upper bound in seconds with its (not cumulative) count, `+Inf` last. A
    /// stored bound these buckets do not have counts in the next one up.
    fn buckets(&self, h: &HistogramTotal) -> Vec<(f64, u64)> {
        let mut out: Vec<(f64, u64)> = self.bounds.iter().map(|b| (*b as f64 / 1000.0, 0)).collect();
        out.push((f64::INFINITY, 0));
        for (le, n) in &h.buckets {
            let i = self.bounds.iter().position(|b| le <= b).unwrap_or(self.bounds.len());
            if let Some(slot) = out.get_mut(i) {
                slot.1 += n;
            }
        }
        out
    }
}

impl EncodeMetric for MsHistograms {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, h) in &self.series {
            let mut e = encoder.encode_family(labels)?;
            e.encode_histogram::<NoLabelSet>(h.sum_ms as f64 / 1000.0, h.count, &self.buckets(h), None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }

    fn is_empty(&self) -> bool {
        self.series.is_empty()
    }
}

fn gauge_family(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, Gauge> {
    let f = Family::<Labels, Gauge>::default();
    registry.register(name, help, f.clone());
    f
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// The labels dcgm-exporter gives a GPU.
fn gpu_labels(host: &str, g: &GpuInfo) -> Labels {
    let index = g.index.to_string();
    let device = format!("nvidia{}", g.minor.unwrap_or(g.index));
    labels(&[("gpu", &index), ("UUID", &g.uuid), ("device", &device), ("modelName", &g.name), ("Hostname", host)])
}

/// The state word of `GpuInfo::health` (`healthy`, `degraded: …`, `unhealthy: …`).
fn health_word(health: &str) -> &str {
    health.split(':').next().unwrap_or(health).trim()
}

/// The node as OpenMetrics text.
pub fn render(data: &MetricsData) -> String {
    let mut r = Registry::default();
    let host = data.hostname.as_str();
    let gpu_info = gauge_family(&mut r, "tessera_gpu_info", "A GPU of the node (1), with its MIG mode");
    let gpu_health = gauge_family(
        &mut r,
        "tessera_gpu_health",
        "1 for the GPU's health state (healthy, degraded, unhealthy), as the daemon fences it",
    );
    let gpu_drained = gauge_family(&mut r, "tessera_gpu_drained", "1 while an admin has drained the GPU");
    let compute = gauge_family(
        &mut r,
        "tessera_gpu_compute_slices",
        "Compute slices by state: allocated (instances held by jobs), idle (instances no job holds), \
         usable (not in an instance, still usable by some profile), unusable (not in an instance, \
         usable by none: stranded)",
    );
    let memory =
        gauge_family(&mut r, "tessera_gpu_memory_slices", "Memory slices by state: allocated, idle, unpartitioned");
    let inst_info = gauge_family(&mut r, "tessera_instance_info", "A MIG instance (1)");
    let inst_health = gauge_family(&mut r, "tessera_instance_healthy", "1 when the instance is healthy, else 0");
    let held = gauge_family(&mut r, "tessera_instance_holder", "1 for each job on the instance (several when shared)");
    let instances = gauge_family(&mut r, "tessera_instances", "Instances by profile and state (allocated, idle)");
    let jobs = gauge_family(&mut r, "tessera_jobs", "Live jobs by state and tenant");
    let pending = gauge_family(
        &mut r,
        "tessera_jobs_pending",
        "Queued jobs by why they wait (capacity, quota, fragmentation, reconfiguring, reserved, \
         priority, health, host_cpus, host_memory; undecided before the first round) and tenant",
    );

    let node_compute = gauge_family(
        &mut r,
        "tessera_node_compute_slices",
        "The node's compute slices by state (the sum of tessera_gpu_compute_slices over its GPUs)",
    );
    let node_memory = gauge_family(
        &mut r,
        "tessera_node_memory_slices",
        "The node's memory slices by state (the sum of tessera_gpu_memory_slices over its GPUs)",
    );
    let mut node_totals: BTreeMap<(bool, &str), i64> = std::collections::BTreeMap::new();
    for g in &data.gpus.gpus {
        let base = gpu_labels(host, g);
        let mut l = base.clone();
        l.push(("mig".into(), if g.mig { "on" } else { "off" }.into()));
        gpu_info.get_or_create(&l).set(1);
        for state in ["healthy", "degraded", "unhealthy"] {
            let mut l = base.clone();
            l.push(("state".into(), state.into()));
            gpu_health.get_or_create(&l).set(i64::from(health_word(&g.health) == state));
        }
        gpu_drained.get_or_create(&base).set(i64::from(g.drained.is_some()));
        let model = g.model.as_deref().and_then(|m| catalog().model(m).ok());
        let (mut alloc_c, mut idle_c, mut alloc_m, mut idle_m) = (0i64, 0i64, 0i64, 0i64);
        let mut by_profile: BTreeMap<(String, &str), i64> = std::collections::BTreeMap::new();
        for i in &g.instances {
            let profile = model.and_then(|m| m.profile_by_id(i.profile_id));
            let (c, m) = profile.map_or((0, 0), |p| (i64::from(p.compute_slices), i64::from(p.memory_slices)));
            let busy = !i.jobs.is_empty();
            if busy {
                alloc_c += c;
                alloc_m += m;
            } else {
                idle_c += c;
                idle_m += m;
            }
            let name = profile.map_or_else(|| i.profile.clone(), |p| p.name.clone());
            *by_profile.entry((name.clone(), if busy { "allocated" } else { "idle" })).or_default() += 1;
            if !g.mig {
                continue;
            }
            let gi = i.gpu_instance_id.map(|v| v.to_string()).unwrap_or_default();
            let mut il = base.clone();
            il.push(("GPU_I_PROFILE".into(), name.clone()));
            il.push(("GPU_I_ID".into(), gi.clone()));
            let mut info = il.clone();
            info.push(("mig_uuid".into(), i.mig_uuid.clone().unwrap_or_default()));
            info.push(("placement_start".into(), i.start.to_string()));
            info.push(("placement_size".into(), i.size.to_string()));
            inst_info.get_or_create(&info).set(1);
            inst_health.get_or_create(&il).set(i64::from(i.healthy));
            for o in &i.occupants {
                let mut hl = il.clone();
                hl.push(("tessera_job".into(), o.job.to_string()));
                hl.push(("user".into(), o.user.clone()));
                hl.push(("tenant".into(), o.tenant.clone()));
                let (door, key) = o.external.as_ref().map_or(("", ""), |x| (x.door.as_str(), x.key.as_str()));
                hl.push(("door".into(), door.into()));
                hl.push(("key".into(), key.into()));
                // dcgm-exporter's pod labels, for a container's hold through the device plugin.
                let (namespace, pod, container) = match door {
                    tessera_kube_core::holds::DOOR => tessera_kube_core::holds::container_of_key(key),
                    _ => None,
                }
                .unwrap_or_default();
                hl.push(("namespace".into(), namespace.into()));
                hl.push(("pod".into(), pod.into()));
                hl.push(("container".into(), container.into()));
                held.get_or_create(&hl).set(1);
            }
        }
        for ((profile, state), n) in by_profile {
            let mut l = base.clone();
            l.push(("GPU_I_PROFILE".into(), profile));
            l.push(("state".into(), state.into()));
            instances.get_or_create(&l).set(n);
        }
        if let Some(m) = model {
            let total_c = i64::from(m.compute_slices);
            let total_m = i64::from(m.memory_slices);
            // With MIG off the whole GPU is one allocation or none.
            let (usable, unusable) = if g.mig {
                let layout: Vec<Instance> = g.instances.iter().map(|i| Instance::new(i.profile_id, i.start)).collect();
                planner_for(m)
                    .and_then(|p| p.fragmentation(&layout).ok())
                    .map_or((total_c - alloc_c - idle_c, 0), |f| {
                        (i64::from(f.usable_compute_slices), i64::from(f.unusable_compute_slices))
                    })
            } else {
                (0, 0)
            };
            for (state, v) in [("allocated", alloc_c), ("idle", idle_c), ("usable", usable), ("unusable", unusable)] {
                let mut l = base.clone();
                l.push(("state".into(), state.into()));
                compute.get_or_create(&l).set(v);
                *node_totals.entry((true, state)).or_default() += v;
            }
            let unpartitioned = (total_m - alloc_m - idle_m).max(0);
            for (state, v) in [("allocated", alloc_m), ("idle", idle_m), ("unpartitioned", unpartitioned)] {
                let mut l = base.clone();
                l.push(("state".into(), state.into()));
                memory.get_or_create(&l).set(v);
                *node_totals.entry((false, state)).or_default() += v;
            }
        }
    }
    for ((is_compute, state), v) in node_totals {
        let family = if is_compute { &node_compute } else { &node_memory };
        family.get_or_create(&labels(&[("state", state), ("Hostname", host)])).set(v);
    }
    // Counted from history: what pruned rows counted (the store's totals) plus the rows left.
    let mut waits = MsHistograms::new(HISTOGRAM_BOUNDS.queue_wait_ms);
    for (tenant, h) in &data.pruned.queue_wait {
        waits.entry(labels(&[("tenant", tenant), ("Hostname", host)])).add(h);
    }
    for (tenant, ms) in &data.waits {
        waits.observe(labels(&[("tenant", tenant), ("Hostname", host)]), *ms);
    }
    r.register(
        "tessera_queue_wait_seconds",
        "How long each job that started waited, from submission to its start, by tenant",
        waits,
    );
    let reconfigs = Family::<Labels, Counter>::default();
    r.register("tessera_reconfigurations", "Finished MIG reconfigurations by GPU and outcome", reconfigs.clone());
    let mut reconfig_time = MsHistograms::new(HISTOGRAM_BOUNDS.reconfig_ms);
    let reconfig_labels = |gpu: u32, uuid: &str, outcome: &str| {
        labels(&[("gpu", &gpu.to_string()), ("UUID", uuid), ("Hostname", host), ("outcome", outcome)])
    };
    for (k, n) in &data.pruned.reconfigurations {
        reconfigs.get_or_create(&reconfig_labels(k.gpu_index, &k.gpu_uuid, &k.outcome)).inc_by(*n);
    }
    for (outcome, h) in &data.pruned.reconfig_duration {
        reconfig_time.entry(labels(&[("outcome", outcome), ("Hostname", host)])).add(h);
    }
    for rc in &data.reconfigurations {
        reconfigs.get_or_create(&reconfig_labels(rc.gpu, &rc.gpu_uuid, &rc.outcome)).inc();
        reconfig_time.observe(labels(&[("outcome", &rc.outcome), ("Hostname", host)]), rc.duration_ms);
    }
    r.register(
        "tessera_reconfiguration_duration_seconds",
        "How long each finished MIG reconfiguration took, by outcome",
        reconfig_time,
    );
    // Xid events and MIG operations: counters kept by the daemon (the health tracker, the journal).
    let gpu_base = |gpu: u32| match data.gpus.gpus.iter().find(|g| g.index == gpu) {
        Some(g) => gpu_labels(host, g),
        None => labels(&[("gpu", &gpu.to_string()), ("Hostname", host)]),
    };
    let xids = Family::<Labels, Counter>::default();
    r.register(
        "tessera_gpu_xid_events",
        "Xid events by GPU and code (dcgm-exporter's DCGM_FI_DEV_XID_ERRORS is only the last code), \
         with the class the daemon fences by: severity application, informational, instance, \
         gpu-fatal or unknown",
        xids.clone(),
    );
    for x in &data.xids {
        let class = tessera_gpu::health::classify(x.xid);
        let mut l = gpu_base(x.gpu);
        l.push(("xid".into(), x.xid.to_string()));
        l.push(("severity".into(), class.severity.to_string()));
        xids.get_or_create(&l).inc_by(x.count);
    }
    let ops = Family::<Labels, Counter>::default();
    r.register(
        "tessera_mig_operations",
        "MIG operations the reconfiguration journal records, by GPU, operation (create_gpu_instance \
         and destroy_gpu_instance, each with its compute instances; set_mig_mode) and outcome (ok, failed)",
        ops.clone(),
    );
    let pruned_ops = data.pruned.mig_operations.iter().map(|(k, n)| (k.gpu_index, &k.operation, &k.outcome, *n));
    for (gpu, operation, outcome, count) in
        data.mig_operations.iter().map(|o| (o.gpu, &o.operation, &o.outcome, o.count)).chain(pruned_ops)
    {
        let mut l = gpu_base(gpu);
        l.push(("operation".into(), operation.clone()));
        l.push(("outcome".into(), outcome.clone()));
        ops.get_or_create(&l).inc_by(count);
    }
    for c in &data.jobs {
        let state = c.state.to_string();
        jobs.get_or_create(&labels(&[("state", &state), ("tenant", &c.tenant), ("Hostname", host)]))
            .set(i64::try_from(c.count).unwrap_or(i64::MAX));
    }
    // Slices held per tenant (each tenant counted once per instance it is on), and its usage.
    let held_by = gauge_family(
        &mut r,
        "tessera_tenant_slices",
        "Compute and memory slices of the instances each tenant's jobs hold now (what its quota counts)",
    );
    let mut held_slices: BTreeMap<(String, &str), i64> = std::collections::BTreeMap::new();
    for g in &data.gpus.gpus {
        let model = g.model.as_deref().and_then(|m| catalog().model(m).ok());
        for i in &g.instances {
            let Some(p) = model.and_then(|m| m.profile_by_id(i.profile_id)) else { continue };
            let tenants: std::collections::BTreeSet<&str> = i.occupants.iter().map(|o| o.tenant.as_str()).collect();
            for t in tenants {
                *held_slices.entry((t.to_owned(), "compute")).or_default() += i64::from(p.compute_slices);
                *held_slices.entry((t.to_owned(), "memory")).or_default() += i64::from(p.memory_slices);
            }
        }
    }
    for ((tenant, kind), n) in &held_slices {
        held_by.get_or_create(&labels(&[("tenant", tenant), ("kind", kind), ("Hostname", host)])).set(*n);
    }
    let quota = gauge_family(
        &mut r,
        "tessera_tenant_quota_slices",
        "Each tenant's configured quota in compute and memory slices (tenants without one have no series)",
    );
    for (tenant, (c, m)) in &data.quotas {
        for (kind, v) in [("compute", c), ("memory", m)] {
            quota.get_or_create(&labels(&[("tenant", tenant), ("kind", kind), ("Hostname", host)])).set(i64::from(*v));
        }
    }
    let usage = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    r.register(
        "tessera_fair_share_usage_slice_seconds",
        "Each tenant's decayed fair-share usage (slices times seconds), as the scheduler ranks tenants by it",
        usage.clone(),
    );
    for (tenant, slice_ms) in &data.fair_share {
        usage.get_or_create(&labels(&[("tenant", tenant), ("Hostname", host)])).set(slice_ms / 1000.0);
    }
    for p in &data.pending {
        pending
            .get_or_create(&labels(&[("reason", &p.reason), ("tenant", &p.tenant), ("Hostname", host)]))
            .set(i64::try_from(p.count).unwrap_or(i64::MAX));
    }
    render_utilisation(&mut r, data);
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &r);
    out
}

/// A gauge of a ratio 0..1.
type RatioGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// GPM utilisation (Hopper and newer): one gauge family per metric, `tessera_instance_<metric>`,
/// a ratio 0..1 over the daemon's last sample interval, with dcgm-exporter's labels: per MIG
/// instance the GPU's and `GPU_I_PROFILE`, `GPU_I_ID`; per GPU with MIG off the GPU's alone (as
/// dcgm-exporter labels a GPU without MIG). Readings of instances or GPUs `data.gpus` does not
/// show (gone since the sample) are left out; a metric the driver did not give has no series.
fn render_utilisation(r: &mut Registry, data: &MetricsData) {
    let host = data.hostname.as_str();
    let families: Vec<(GpmMetric, Family<Labels, RatioGauge>)> = GpmMetric::ALL
        .iter()
        .map(|&m| {
            let f = Family::<Labels, RatioGauge>::default();
            let help = format!(
                "{} of the MIG instance (of the GPU, MIG off) over the last sample interval, a ratio 0..1, from \
                 NVML's GPU performance monitoring (Hopper and newer); dcgm-exporter's {}",
                utilisation_words(m),
                m.dcgm_field()
            );
            r.register(format!("tessera_instance_{}", m.name()), help, f.clone());
            (m, f)
        })
        .collect();
    for reading in &data.utilisation {
        let Some(g) = data.gpus.gpus.iter().find(|g| g.index == reading.gpu) else { continue };
        let mut l = gpu_labels(host, g);
        match reading.gpu_instance_id {
            Some(id) => {
                let Some(i) = g.instances.iter().find(|i| i.gpu_instance_id == Some(id)) else { continue };
                let model = g.model.as_deref().and_then(|m| catalog().model(m).ok());
                let profile = model
                    .and_then(|m| m.profile_by_id(i.profile_id))
                    .map_or_else(|| i.profile.clone(), |p| p.name.clone());
                l.push(("GPU_I_PROFILE".into(), profile));
                l.push(("GPU_I_ID".into(), id.to_string()));
            }
            None if g.mig => continue,
            None => {}
        }
        for (m, family) in &families {
            if let Some(v) = reading.metrics.get(*m) {
                family.get_or_create(&l).set(v);
            }
        }
    }
}

/// What a GPM metric measures, for its HELP text (nvml.h's words for the `NVML_GPM_METRIC_*`).
fn utilisation_words(m: GpmMetric) -> &'static str {
    match m {
        GpmMetric::SmActive => "Share of SMs that were busy (NVML_GPM_METRIC_SM_UTIL)",
        GpmMetric::SmOccupancy => "Warps active over the theoretical maximum (NVML_GPM_METRIC_SM_OCCUPANCY)",
        GpmMetric::TensorActive => {
            "Share of time the SMs were doing any tensor operations (NVML_GPM_METRIC_ANY_TENSOR_UTIL)"
        }
        GpmMetric::DramActive => "DRAM bandwidth used over the theoretical maximum (NVML_GPM_METRIC_DRAM_BW_UTIL)",
        GpmMetric::Fp64Active => "Share of time the SMs were doing non-tensor FP64 math (NVML_GPM_METRIC_FP64_UTIL)",
        GpmMetric::Fp32Active => "Share of time the SMs were doing non-tensor FP32 math (NVML_GPM_METRIC_FP32_UTIL)",
        GpmMetric::Fp16Active => "Share of time the SMs were doing non-tensor FP16 math (NVML_GPM_METRIC_FP16_UTIL)",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::wire::GpuList;

    /// GPU 0, an H100 with a 3g.40gb at 4 held by job 9 of `door` with `key`.
    fn held_gpu(door: &str, key: &str) -> GpuList {
        let occupant = crate::wire::Occupant {
            job: 9,
            user: "alice".into(),
            tenant: "ml".into(),
            external: Some(tessera_store::ExternalWork { door: door.into(), key: key.into() }),
        };
        let instance = crate::wire::InstanceInfo {
            gpu_instance_id: Some(2),
            profile: "3g.40gb".into(),
            profile_id: 9,
            start: 4,
            size: 4,
            jobs: vec![9],
            occupants: vec![occupant],
            mig_uuid: Some("MIG-a".into()),
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
        GpuList { backend: "sim".into(), gpus: vec![gpu] }
    }

    #[test]
    fn a_pods_hold_has_dcgm_exporters_pod_labels_and_others_none() {
        let cases = [
            ("kubernetes", "ml/train-0/main", ("ml", "train-0", "main")),
            // Not yet listed by the kubelet: no pod known.
            ("kubernetes", "allocated:MIG-a", ("", "", "")),
            // Another door's key is not a pod's, whatever its shape.
            ("slurm", "job/5/alice", ("", "", "")),
        ];
        for (door, key, (namespace, pod, container)) in cases {
            let data = MetricsData { hostname: "n".into(), gpus: held_gpu(door, key), ..MetricsData::default() };
            let text = render(&data);
            let want = format!(
                "door=\"{door}\",key=\"{key}\",namespace=\"{namespace}\",pod=\"{pod}\",container=\"{container}\"}} 1"
            );
            assert!(
                text.lines().any(|l| l.starts_with("tessera_instance_holder{") && l.ends_with(&want)),
                "{door} {key}: no holder line ending {want} in:\n{text}"
            );
        }
    }

    #[test]
    fn tenants_quotas_and_usage_are_series_of_their_own() {
        let data = MetricsData {
            hostname: "gpu01".into(),
            gpus: GpuList { backend: "sim".into(), gpus: Vec::new() },
            jobs: Vec::new(),
            pending: Vec::new(),
            waits: vec![("ml".into(), 90_000)],
            reconfigurations: Vec::new(),
            fair_share: BTreeMap::from([("ml".to_owned(), 42_000.0)]),
            quotas: BTreeMap::from([("ml".to_owned(), (14, 16))]),
            xids: vec![crate::wire::XidCount { gpu: 0, xid: 79, count: 2 }],
            mig_operations: vec![crate::wire::MigOperationCount {
                gpu: 0,
                operation: "create_gpu_instance".into(),
                outcome: "failed".into(),
                count: 3,
            }],
            // A reading of a GPU `gpus` does not show (gone since the sample) is left out.
            utilisation: vec![crate::wire::UtilisationReading {
                gpu: 0,
                gpu_instance_id: Some(2),
                metrics: tessera_gpu::GpmMetrics { interval_ms: 5000, sm_active: Some(0.5), ..Default::default() },
            }],
            // Pruned history: added to what the rows left give.
            pruned: {
                let mut t = tessera_store::MetricTotals::default();
                t.queue_wait.entry("ml".into()).or_default().observe(HISTOGRAM_BOUNDS.queue_wait_ms, 500_000);
                let op = tessera_store::MigOperationKey {
                    gpu_index: 0,
                    operation: "create_gpu_instance".into(),
                    outcome: "failed".into(),
                };
                t.mig_operations.insert(op, 2);
                t
            },
        };
        let text = render(&data);
        assert!(!text.contains("tessera_instance_sm_active{"), "{text}");
        for line in [
            "tessera_tenant_quota_slices{tenant=\"ml\",kind=\"compute\",Hostname=\"gpu01\"} 14",
            "tessera_tenant_quota_slices{tenant=\"ml\",kind=\"memory\",Hostname=\"gpu01\"} 16",
            "tessera_fair_share_usage_slice_seconds{tenant=\"ml\",Hostname=\"gpu01\"} 42.0",
            "tessera_queue_wait_seconds_bucket{le=\"60.0\",tenant=\"ml\",Hostname=\"gpu01\"} 0",
            "tessera_queue_wait_seconds_bucket{le=\"300.0\",tenant=\"ml\",Hostname=\"gpu01\"} 1",
            "tessera_queue_wait_seconds_bucket{le=\"900.0\",tenant=\"ml\",Hostname=\"gpu01\"} 2",
            "tessera_queue_wait_seconds_bucket{le=\"+Inf\",tenant=\"ml\",Hostname=\"gpu01\"} 2",
            "tessera_queue_wait_seconds_sum{tenant=\"ml\",Hostname=\"gpu01\"} 590.0",
            "tessera_queue_wait_seconds_count{tenant=\"ml\",Hostname=\"gpu01\"} 2",
            "tessera_gpu_xid_events_total{gpu=\"0\",Hostname=\"gpu01\",xid=\"79\",severity=\"gpu-fatal\"} 2",
            "tessera_mig_operations_total{gpu=\"0\",Hostname=\"gpu01\",operation=\"create_gpu_instance\",outcome=\"failed\"} 5",
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line} in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn utilisation_per_instance_and_per_gpu_without_mig() {
        let metrics = tessera_gpu::GpmMetrics {
            interval_ms: 5000,
            sm_active: Some(0.625),
            sm_occupancy: Some(0.25),
            tensor_active: Some(0.5),
            dram_active: Some(0.75),
            fp64_active: None,
            fp32_active: Some(0.125),
            fp16_active: Some(0.0),
        };
        let reading = |gpu, gpu_instance_id| crate::wire::UtilisationReading { gpu, gpu_instance_id, metrics };
        let mut gpus = held_gpu("slurm", "job/5/alice");
        let mut whole = gpus.gpus[0].clone();
        (whole.index, whole.uuid, whole.minor, whole.mig, whole.instances) =
            (1, "GPU-1".into(), Some(1), false, vec![]);
        gpus.gpus.push(whole);
        let data = MetricsData {
            hostname: "n".into(),
            gpus,
            // The 3g.40gb (GPU instance 2), GPU 1 without MIG, an instance that is gone, and GPU
            // 0 as a whole (MIG is on: its instances speak for it).
            utilisation: vec![reading(0, Some(2)), reading(1, None), reading(0, Some(9)), reading(0, None)],
            ..MetricsData::default()
        };
        let text = render(&data);
        let gpu0 = "gpu=\"0\",UUID=\"GPU-0\",device=\"nvidia0\",modelName=\"NVIDIA H100 80GB HBM3\",Hostname=\"n\"";
        let gpu1 = "gpu=\"1\",UUID=\"GPU-1\",device=\"nvidia1\",modelName=\"NVIDIA H100 80GB HBM3\",Hostname=\"n\"";
        for line in [
            format!("tessera_instance_sm_active{{{gpu0},GPU_I_PROFILE=\"3g.40gb\",GPU_I_ID=\"2\"}} 0.625"),
            format!("tessera_instance_sm_occupancy{{{gpu0},GPU_I_PROFILE=\"3g.40gb\",GPU_I_ID=\"2\"}} 0.25"),
            format!("tessera_instance_tensor_active{{{gpu0},GPU_I_PROFILE=\"3g.40gb\",GPU_I_ID=\"2\"}} 0.5"),
            format!("tessera_instance_dram_active{{{gpu0},GPU_I_PROFILE=\"3g.40gb\",GPU_I_ID=\"2\"}} 0.75"),
            format!("tessera_instance_fp32_active{{{gpu0},GPU_I_PROFILE=\"3g.40gb\",GPU_I_ID=\"2\"}} 0.125"),
            format!("tessera_instance_sm_active{{{gpu1}}} 0.625"),
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line} in:\n{text}");
        }
        // One series per metric for each of the two: nothing for the gone instance or GPU 0 as a
        // whole, and no FP64 series where the driver gave none.
        assert_eq!(text.lines().filter(|l| l.starts_with("tessera_instance_sm_active{")).count(), 2, "{text}");
        assert!(!text.lines().any(|l| l.starts_with("tessera_instance_fp64_active{")), "{text}");
        for m in tessera_gpu::GpmMetric::ALL.into_iter().filter(|m| metrics.get(*m).is_some()) {
            let help = format!("# HELP tessera_instance_{} ", m.name());
            let line = text.lines().find(|l| l.starts_with(&help)).unwrap_or_else(|| panic!("no {help} in {text}"));
            assert!(line.contains(m.dcgm_field()) && line.contains("ratio 0..1"), "{line}");
        }
    }
}
