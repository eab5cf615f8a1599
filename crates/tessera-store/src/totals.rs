//! The metrics' totals of history that pruning deleted, so that what `/metrics` counts from
//! history never goes down.
//!
//! The daemon's queue-wait and reconfiguration-duration histograms, its reconfiguration count
//! and its MIG-operation count are built from rows (every started job's first start, every
//! finished journal entry) that [`Store::prune`] deletes. A counter that drops reads to
//! Prometheus as a restart of the process, and `rate()` then jumps by the whole remaining count.
//! So a prune folds what it deletes into these totals in the same transaction, and the metrics
//! add the totals to what the remaining rows give ([`Store::metric_history`] reads both from one
//! snapshot). Times are kept in whole milliseconds, so a histogram's sum is exact and the same
//! whichever rows have been folded.

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, params};

use crate::error::StoreError;
use crate::row::to_sql_int;
use crate::store::Store;
use crate::types::ReconfigRecord;

/// The histograms' bucket upper bounds in ms, ascending (a `+Inf` bucket is implied), as the
/// metrics define them: a prune folds what it deletes into the same buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HistogramBounds {
    /// `tessera_queue_wait_seconds`.
    pub queue_wait_ms: &'static [u64],
    /// `tessera_reconfiguration_duration_seconds`.
    pub reconfig_ms: &'static [u64],
}

/// The `+Inf` bucket's key in [`HistogramTotal::buckets`].
pub const INF_BUCKET: u64 = u64::MAX;

/// A histogram's observations, in whole milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistogramTotal {
    /// Observations per bucket, by the bucket's upper bound in ms ([`INF_BUCKET`] for the ones
    /// above every bound); not cumulative.
    pub buckets: BTreeMap<u64, u64>,
    /// How many observations.
    pub count: u64,
    /// Their sum, in ms.
    pub sum_ms: u64,
}

impl HistogramTotal {
    /// Counts one observation of `ms` into the first bucket whose bound is at least `ms`.
    pub fn observe(&mut self, bounds_ms: &[u64], ms: u64) {
        let le = bounds_ms.iter().copied().find(|b| ms <= *b).unwrap_or(INF_BUCKET);
        *self.buckets.entry(le).or_default() += 1;
        self.count = self.count.saturating_add(1);
        self.sum_ms = self.sum_ms.saturating_add(ms);
    }

    /// Adds `other`'s observations.
    pub fn add(&mut self, other: &HistogramTotal) {
        for (le, n) in &other.buckets {
            let b = self.buckets.entry(*le).or_default();
            *b = b.saturating_add(*n);
        }
        self.count = self.count.saturating_add(other.count);
        self.sum_ms = self.sum_ms.saturating_add(other.sum_ms);
    }
}

/// The labels of `tessera_reconfigurations_total`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReconfigKey {
    pub gpu_index: u32,
    pub gpu_uuid: String,
    /// `completed`, `rolled_back` or `abandoned`.
    pub outcome: String,
}

/// The labels of `tessera_mig_operations_total`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MigOperationKey {
    pub gpu_index: u32,
    /// [`crate::MigOperation::as_str`].
    pub operation: String,
    /// `ok` or `failed`.
    pub outcome: String,
}

/// What the metrics count from history, over rows that are gone (pruned): added to what the
/// remaining rows give.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricTotals {
    /// Queue waits of started jobs, by tenant.
    pub queue_wait: BTreeMap<String, HistogramTotal>,
    /// Durations of finished reconfigurations, by outcome.
    pub reconfig_duration: BTreeMap<String, HistogramTotal>,
    /// Finished reconfigurations.
    pub reconfigurations: BTreeMap<ReconfigKey, u64>,
    /// MIG operations the journal recorded.
    pub mig_operations: BTreeMap<MigOperationKey, u64>,
}

impl MetricTotals {
    /// Whether nothing is counted.
    pub fn is_empty(&self) -> bool {
        self.queue_wait.is_empty()
            && self.reconfig_duration.is_empty()
            && self.reconfigurations.is_empty()
            && self.mig_operations.is_empty()
    }

    /// Counts one finished (or, for its operations, open) journal entry as the metrics do.
    pub fn count_reconfig(&mut self, bounds: &HistogramBounds, r: &ReconfigRecord) {
        for (op, ok) in r.operations() {
            let key = MigOperationKey {
                gpu_index: r.gpu_index,
                operation: op.as_str().to_owned(),
                outcome: if ok { "ok" } else { "failed" }.to_owned(),
            };
            *self.mig_operations.entry(key).or_default() += 1;
        }
        let Some(outcome) = &r.outcome else { return };
        let outcome = outcome.as_str();
        let key = ReconfigKey { gpu_index: r.gpu_index, gpu_uuid: r.gpu_uuid.clone(), outcome: outcome.to_owned() };
        *self.reconfigurations.entry(key).or_default() += 1;
        let ms = r.finished_ms.unwrap_or(r.created_ms).saturating_sub(r.created_ms);
        self.reconfig_duration.entry(outcome.to_owned()).or_default().observe(bounds.reconfig_ms, ms);
    }

    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &MetricTotals) {
        for (k, h) in &other.queue_wait {
            self.queue_wait.entry(k.clone()).or_default().add(h);
        }
        for (k, h) in &other.reconfig_duration {
            self.reconfig_duration.entry(k.clone()).or_default().add(h);
        }
        for (k, n) in &other.reconfigurations {
            *self.reconfigurations.entry(k.clone()).or_default() += n;
        }
        for (k, n) in &other.mig_operations {
            *self.mig_operations.entry(k.clone()).or_default() += n;
        }
    }

    /// One row per series: (metric, label values, histogram), a counter as a histogram with
    /// only a count.
    fn rows(&self) -> Vec<(&'static str, Vec<String>, HistogramTotal)> {
        let counter = |n: u64| HistogramTotal { count: n, ..HistogramTotal::default() };
        let mut out = Vec::new();
        for (tenant, h) in &self.queue_wait {
            out.push((QUEUE_WAIT, vec![tenant.clone()], h.clone()));
        }
        for (outcome, h) in &self.reconfig_duration {
            out.push((RECONFIG_DURATION, vec![outcome.clone()], h.clone()));
        }
        for (k, n) in &self.reconfigurations {
            out.push((RECONFIGS, vec![k.gpu_index.to_string(), k.gpu_uuid.clone(), k.outcome.clone()], counter(*n)));
        }
        for (k, n) in &self.mig_operations {
            out.push((MIG_OPS, vec![k.gpu_index.to_string(), k.operation.clone(), k.outcome.clone()], counter(*n)));
        }
        out
    }

    /// Adds a stored row; `None` if it is not one this version knows.
    fn add_row(&mut self, metric: &str, labels: &[String], h: HistogramTotal) -> Option<()> {
        match (metric, labels) {
            (QUEUE_WAIT, [tenant]) => self.queue_wait.entry(tenant.clone()).or_default().add(&h),
            (RECONFIG_DURATION, [outcome]) => self.reconfig_duration.entry(outcome.clone()).or_default().add(&h),
            (RECONFIGS, [gpu, uuid, outcome]) => {
                let key =
                    ReconfigKey { gpu_index: gpu.parse().ok()?, gpu_uuid: uuid.clone(), outcome: outcome.clone() };
                *self.reconfigurations.entry(key).or_default() += h.count;
            }
            (MIG_OPS, [gpu, op, outcome]) => {
                let key =
                    MigOperationKey { gpu_index: gpu.parse().ok()?, operation: op.clone(), outcome: outcome.clone() };
                *self.mig_operations.entry(key).or_default() += h.count;
            }
            _ => return None,
        }
        Some(())
    }
}

/// Everything the metrics build from history, read in one snapshot (a prune committing
/// meanwhile can neither be counted twice nor missed).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricHistory {
    /// What pruned rows counted.
    pub totals: MetricTotals,
    /// Every remaining started job: its tenant and its wait in ms ([`Store::waits`]).
    pub waits: Vec<(String, u64)>,
    /// Every remaining finished reconfiguration, oldest first.
    pub finished_reconfigs: Vec<ReconfigRecord>,
    /// Every open reconfiguration, oldest first.
    pub open_reconfigs: Vec<ReconfigRecord>,
}

const QUEUE_WAIT: &str = "queue_wait_seconds";
const RECONFIG_DURATION: &str = "reconfiguration_duration_seconds";
const RECONFIGS: &str = "reconfigurations";
const MIG_OPS: &str = "mig_operations";

impl Store {
    /// The totals of what pruning deleted.
    pub fn metric_totals(&self) -> Result<MetricTotals, StoreError> {
        let ctx = || "read metric totals".to_owned();
        let mut st = self
            .conn
            .prepare_cached("SELECT metric, labels, count, sum_ms, buckets FROM metric_totals ORDER BY metric, labels")
            .map_err(self.db_err("metric_totals", ctx))?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })
            .map_err(self.db_err("metric_totals", ctx))?;
        let mut totals = MetricTotals::default();
        for row in rows {
            let (metric, labels, count, sum_ms, buckets) = row.map_err(self.db_err("metric_totals", ctx))?;
            let bad = |detail: String| StoreError::BadRow {
                path: self.path.clone(),
                table: "metric_totals",
                row: 0,
                detail: format!("{metric} {labels}: {detail}"),
            };
            let label_values: Vec<String> =
                serde_json::from_str(&labels).map_err(|e| bad(format!("column labels: {e}")))?;
            let buckets: BTreeMap<u64, u64> =
                serde_json::from_str(&buckets).map_err(|e| bad(format!("column buckets: {e}")))?;
            let h = HistogramTotal { buckets, count: count.unsigned_abs(), sum_ms: sum_ms.unsigned_abs() };
            totals.add_row(&metric, &label_values, h).ok_or_else(|| bad("not a series this version knows".into()))?;
        }
        Ok(totals)
    }

    /// The totals, the remaining started jobs' waits and the journal, in one read transaction.
    pub fn metric_history(&self) -> Result<MetricHistory, StoreError> {
        let ctx = || "read the metrics' history".to_owned();
        let tx = rusqlite::Transaction::new_unchecked(&self.conn, rusqlite::TransactionBehavior::Deferred)
            .map_err(self.db_err("metric_totals", ctx))?;
        let history = MetricHistory {
            totals: self.metric_totals()?,
            waits: self.waits()?,
            finished_reconfigs: self.finished_reconfigs()?,
            open_reconfigs: self.open_reconfigs()?,
        };
        tx.commit().map_err(self.db_err("metric_totals", ctx))?;
        Ok(history)
    }

    /// Adds `delta` to the stored totals, inside the caller's write transaction.
    pub(crate) fn add_metric_totals(
        &self,
        conn: &rusqlite::Connection,
        delta: &MetricTotals,
    ) -> Result<(), StoreError> {
        let ctx = || "fold pruned rows into the metric totals".to_owned();
        for (metric, labels, mut h) in delta.rows() {
            let labels = serde_json::to_string(&labels).unwrap_or_default();
            let old: Option<(i64, i64, String)> = conn
                .prepare_cached("SELECT count, sum_ms, buckets FROM metric_totals WHERE metric = ?1 AND labels = ?2")
                .and_then(|mut st| {
                    st.query_row(params![metric, labels], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional()
                })
                .map_err(self.db_err("metric_totals", ctx))?;
            if let Some((count, sum_ms, buckets)) = old {
                let buckets: BTreeMap<u64, u64> = serde_json::from_str(&buckets).map_err(|e| StoreError::BadRow {
                    path: self.path.clone(),
                    table: "metric_totals",
                    row: 0,
                    detail: format!("{metric} {labels}: column buckets: {e}"),
                })?;
                h.add(&HistogramTotal { buckets, count: count.unsigned_abs(), sum_ms: sum_ms.unsigned_abs() });
            }
            let buckets = serde_json::to_string(&h.buckets).unwrap_or_default();
            conn.prepare_cached(
                "INSERT INTO metric_totals (metric, labels, count, sum_ms, buckets) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (metric, labels) DO UPDATE SET
                     count = excluded.count, sum_ms = excluded.sum_ms, buckets = excluded.buckets",
            )
            .and_then(|mut st| {
                st.execute(params![
                    metric,
                    labels,
                    to_sql_int("metric total", h.count).unwrap_or(i64::MAX),
                    to_sql_int("metric total", h.sum_ms).unwrap_or(i64::MAX),
                    buckets
                ])
            })
            .map_err(self.db_err("metric_totals", ctx))?;
        }
        Ok(())
    }
}

/// The queue wait of a job about to be pruned, as [`Store::waits`] counts it: its tenant and
/// the time from submission to its first start; `None` if it never started.
pub(crate) fn job_wait(conn: &rusqlite::Connection, id: i64) -> rusqlite::Result<Option<(String, u64)>> {
    conn.prepare_cached(
        "SELECT j.tenant, j.submitted_ms, MIN(e.at_ms) FROM jobs j
         JOIN job_events e ON e.job_id = j.id AND e.to_state = 'running' WHERE j.id = ?1 GROUP BY j.id",
    )?
    .query_row([id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)))
    .optional()
    .map(|o| o.map(|(tenant, submitted, started)| (tenant, started.saturating_sub(submitted).max(0).unsigned_abs())))
}
