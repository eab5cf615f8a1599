//! Keeping the database bounded: finished jobs, with their events and released allocations,
//! are deleted once they are older than a retention or beyond a count of the newest kept, and
//! finished reconfigurations once they are older than the retention.
//!
//! Without this the database grows with every job ever run (a job's row, its events and its
//! allocations, a few KiB) and so do every query that reads history and every backup. What is
//! never deleted: a job that is not terminal (queued, placing, running), a job an open
//! reconfiguration names (crash recovery resumes or rolls it back for that job), an open
//! reconfiguration, a live allocation, the metadata, drains and MPS daemons. Job ids stay
//! increasing after a prune: `AUTOINCREMENT` keeps the highest id ever handed out in
//! `sqlite_sequence`, whatever rows are gone.

use rusqlite::params;

use crate::error::StoreError;
use crate::row::{id_from_rowid, to_sql_int};
use crate::store::Store;
use crate::totals::{HistogramBounds, MetricTotals, job_wait};

/// What [`Store::prune`] may delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PrunePolicy {
    /// Finished jobs (and finished reconfigurations) that ended before this time (ms since the
    /// epoch) go; `None`: no age limit.
    pub ended_before_ms: Option<u64>,
    /// At most this many finished jobs are kept, the newest (highest ids); `None`: no count
    /// limit.
    pub keep_finished: Option<u64>,
    /// At most this many jobs are deleted in one call (one transaction, so the write lock is
    /// held briefly); the caller calls again while [`PruneReport::more`] says so.
    pub batch: u32,
    /// The metrics' histogram buckets: what is deleted is folded into the metric totals
    /// (`totals.rs`) in these.
    pub bounds: HistogramBounds,
}

/// What one [`Store::prune`] deleted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PruneReport {
    /// The jobs deleted, by increasing id (their directories on disk are the caller's to
    /// remove).
    pub jobs: Vec<u64>,
    /// Their events.
    pub events: u64,
    /// Their (released) allocations.
    pub allocations: u64,
    /// Finished reconfigurations deleted (with their steps).
    pub reconfigs: u64,
    /// Whether the batch was full: more may be due now.
    pub more: bool,
}

/// The terminal states, as SQL.
const TERMINAL: &str = "('succeeded', 'failed', 'cancelled', 'timed_out', 'oom_killed', 'lost')";

impl Store {
    /// Deletes what `policy` says is due, at most `policy.batch` jobs, in one transaction: the
    /// jobs first, their events and allocations with them, then finished reconfigurations that
    /// ended before the cutoff (a reconfiguration kept that names a deleted job forgets the
    /// job: `for_job` becomes NULL). Never touches a job that is not terminal or that an open
    /// reconfiguration names. A policy with neither limit deletes nothing.
    pub fn prune(&self, policy: &PrunePolicy) -> Result<PruneReport, StoreError> {
        let mut report = PruneReport::default();
        if (policy.ended_before_ms.is_none() && policy.keep_finished.is_none()) || policy.batch == 0 {
            return Ok(report);
        }
        let ctx = || "prune finished jobs".to_owned();
        let tx = self.write_tx("jobs", ctx)?;
        // The count limit as an id: every finished job at or below the one `keep_finished`
        // places from the newest goes.
        let count_cut: Option<i64> = match policy.keep_finished {
            Some(keep) => {
                let offset = i64::try_from(keep).unwrap_or(i64::MAX);
                let mut st = tx
                    .prepare_cached(&format!(
                        "SELECT id FROM jobs WHERE state IN {TERMINAL} ORDER BY id DESC LIMIT 1 OFFSET ?1"
                    ))
                    .map_err(self.db_err("jobs", ctx))?;
                let mut rows = st.query([offset]).map_err(self.db_err("jobs", ctx))?;
                match rows.next().map_err(self.db_err("jobs", ctx))? {
                    Some(r) => Some(r.get(0).map_err(self.db_err("jobs", ctx))?),
                    None => None,
                }
            }
            None => None,
        };
        let age_cut: Option<i64> = policy.ended_before_ms.map(|ms| to_sql_int("prune cutoff", ms)).transpose()?;
        // -1: matches nothing (ids and times are never negative).
        let (count_cut, age_cut) = (count_cut.unwrap_or(-1), age_cut.unwrap_or(-1));
        let ids: Vec<i64> = {
            let mut st = tx
                .prepare_cached(&format!(
                    "SELECT id FROM jobs j WHERE state IN {TERMINAL}
                       AND (id <= ?1 OR ended_ms < ?2)
                       AND NOT EXISTS (SELECT 1 FROM reconfigs r WHERE r.state = 'open' AND r.for_job = j.id)
                     ORDER BY id LIMIT ?3"
                ))
                .map_err(self.db_err("jobs", ctx))?;
            let rows = st
                .query_map(params![count_cut, age_cut, i64::from(policy.batch)], |r| r.get::<_, i64>(0))
                .map_err(self.db_err("jobs", ctx))?;
            rows.collect::<Result<_, _>>().map_err(self.db_err("jobs", ctx))?
        };
        report.more = ids.len() >= policy.batch as usize;
        // What the deleted rows counted in the metrics, kept as totals (same transaction).
        let mut gone_totals = MetricTotals::default();
        for &id in &ids {
            let wait = job_wait(&tx, id).map_err(self.db_err("jobs", ctx))?;
            report.events += tx
                .prepare_cached("DELETE FROM job_events WHERE job_id = ?1")
                .and_then(|mut st| st.execute([id]))
                .map_err(self.db_err("job_events", ctx))? as u64;
            report.allocations += tx
                .prepare_cached("DELETE FROM allocations WHERE job_id = ?1 AND released_at IS NOT NULL")
                .and_then(|mut st| st.execute([id]))
                .map_err(self.db_err("allocations", ctx))? as u64;
            tx.prepare_cached("UPDATE reconfigs SET for_job = NULL WHERE for_job = ?1 AND state = 'finished'")
                .and_then(|mut st| st.execute([id]))
                .map_err(self.db_err("reconfigs", ctx))?;
            // A terminal job has no live allocation (its transition released them); the state
            // is checked again so a row that is not terminal is never deleted.
            let gone = tx
                .prepare_cached(&format!("DELETE FROM jobs WHERE id = ?1 AND state IN {TERMINAL}"))
                .and_then(|mut st| st.execute([id]))
                .map_err(self.db_err("jobs", ctx))?;
            if gone == 1 {
                report.jobs.push(id_from_rowid(id));
                if let Some((tenant, ms)) = wait {
                    gone_totals.queue_wait.entry(tenant).or_default().observe(policy.bounds.queue_wait_ms, ms);
                }
            }
        }
        if age_cut >= 0 {
            let old = self.read_reconfigs("state = 'finished' AND finished_ms < ?1", &[&age_cut], &ctx)?;
            for r in &old {
                gone_totals.count_reconfig(&policy.bounds, r);
            }
            let old = "SELECT id FROM reconfigs WHERE state = 'finished' AND finished_ms < ?1";
            tx.prepare_cached(&format!("DELETE FROM reconfig_steps WHERE reconfig_id IN ({old})"))
                .and_then(|mut st| st.execute([age_cut]))
                .map_err(self.db_err("reconfig_steps", ctx))?;
            report.reconfigs = tx
                .prepare_cached("DELETE FROM reconfigs WHERE state = 'finished' AND finished_ms < ?1")
                .and_then(|mut st| st.execute([age_cut]))
                .map_err(self.db_err("reconfigs", ctx))? as u64;
        }
        if !gone_totals.is_empty() {
            self.add_metric_totals(&tx, &gone_totals)?;
        }
        self.commit(tx, "jobs", ctx)?;
        Ok(report)
    }

    /// How many jobs, events and allocations the database holds (for tests and the soak's
    /// figures).
    pub fn row_counts(&self) -> Result<(u64, u64, u64), StoreError> {
        let ctx = || "count rows".to_owned();
        self.conn
            .prepare_cached(
                "SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM job_events),
                        (SELECT count(*) FROM allocations)",
            )
            .and_then(|mut st| {
                st.query_row([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)))
            })
            .map(|(a, b, c)| (a.unsigned_abs(), b.unsigned_abs(), c.unsigned_abs()))
            .map_err(self.db_err("jobs", ctx))
    }
}
