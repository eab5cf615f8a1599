//! Allocations of MIG slices to job ranks. A slice (spec key `(gpu_uuid, profile_id, start)`)
//! is held by at most one live exclusive allocation, or by any number of live shared ones, never
//! both. The store checks this in the allocating transaction (to name the holder); a partial
//! unique index on live exclusive allocations and a trigger enforce it in SQLite as well.

use rusqlite::{OptionalExtension, params};

use crate::error::StoreError;
use crate::jobs::json_text;
use crate::row::{RowReader, id_key, now_ms};
use crate::store::Store;
use crate::types::{Allocation, AllocationRecord, JobState, LiveAllocation, SliceAllocation};

/// The columns [`decode_allocation`] reads from index 0 on (`a.` is `allocations`).
const ALLOC_COLUMNS: &str = "a.gpu_uuid, a.gpu_index, a.profile_id, a.start, a.gpu_instance_id, \
     a.compute_instance_id, a.mig_uuid, a.exclusive, a.numa_node, a.host";

fn decode_allocation(r: &RowReader<'_, '_>, base: usize) -> Result<Allocation, StoreError> {
    Ok(Allocation {
        gpu_uuid: r.text(base, "gpu_uuid")?,
        gpu_index: r.int(base + 1, "gpu_index")?,
        profile_id: r.int(base + 2, "profile_id")?,
        start: r.int(base + 3, "start")?,
        gpu_instance_id: r.opt_int(base + 4, "gpu_instance_id")?,
        compute_instance_id: r.opt_int(base + 5, "compute_instance_id")?,
        mig_uuid: r.opt_text(base + 6, "mig_uuid")?,
        exclusive: r.boolean(base + 7, "exclusive")?,
        numa_node: r.opt_int(base + 8, "numa_node")?,
        host: r.json(base + 9, "host")?,
    })
}

impl Store {
    /// Records every slice of a job's ranks in one transaction: all of them or none, each
    /// with the job's current run (`runs`, read in the same transaction: the run that
    /// `queued → placing` began) and one allocation time.
    ///
    /// Refused with [`StoreError::AlreadyAllocated`] when a live exclusive allocation holds
    /// the same `(gpu_uuid, profile_id, start)`, or when a slice is exclusive and any live
    /// allocation holds it; with [`StoreError::RankAllocated`] when a rank's slice is already
    /// held; with [`StoreError::StaleState`] unless the job is placing or running (only those
    /// hold slices: leaving them releases everything, see [`Store::transition`]).
    pub fn allocate_all(&self, job: u64, slices: &[SliceAllocation]) -> Result<(), StoreError> {
        let ctx = || format!("allocate {} slice(s) to job {job}", slices.len());
        let key = id_key(job).ok_or(StoreError::JobNotFound { id: job })?;
        let tx = self.write_tx("allocations", ctx)?;
        let found: Option<(String, i64)> = tx
            .prepare_cached("SELECT state, runs FROM jobs WHERE id = ?1")
            .and_then(|mut st| st.query_row([key], |r| Ok((r.get(0)?, r.get(1)?))).optional())
            .map_err(self.db_err("jobs", ctx))?;
        let (state, run) = found.ok_or(StoreError::JobNotFound { id: job })?;
        let state: JobState = state.parse().map_err(|e| StoreError::BadRow {
            path: self.path.clone(),
            table: "jobs",
            row: key,
            detail: format!("column state: {e}"),
        })?;
        if !state.is_active() {
            return Err(StoreError::StaleState { id: job, expected: JobState::Placing, actual: state });
        }
        // One time for them all: a run's allocations are told from another run's by it.
        let at = now_ms();
        for s in slices {
            let (rank, alloc) = (s.rank, &s.allocation);
            let held: Option<i64> = tx
                .prepare_cached(
                    "SELECT 1 FROM allocations
                     WHERE job_id = ?1 AND rank = ?2 AND slice = ?3 AND released_at IS NULL",
                )
                .and_then(|mut st| st.query_row(params![key, rank, s.slice], |r| r.get(0)).optional())
                .map_err(self.db_err("allocations", ctx))?;
            if held.is_some() {
                return Err(StoreError::RankAllocated { job, rank, slice: s.slice });
            }
            let holder: Option<i64> = tx
                .prepare_cached(
                    "SELECT job_id FROM allocations
                     WHERE gpu_uuid = ?1 AND profile_id = ?2 AND start = ?3 AND released_at IS NULL
                       AND (exclusive = 1 OR ?4)
                     ORDER BY id LIMIT 1",
                )
                .and_then(|mut st| {
                    st.query_row(params![alloc.gpu_uuid, alloc.profile_id, alloc.start, alloc.exclusive], |r| r.get(0))
                        .optional()
                })
                .map_err(self.db_err("allocations", ctx))?;
            if let Some(holder) = holder {
                return Err(StoreError::AlreadyAllocated {
                    gpu_uuid: alloc.gpu_uuid.clone(),
                    profile_id: alloc.profile_id,
                    start: alloc.start,
                    holder_job: u64::try_from(holder).unwrap_or(0),
                });
            }
            let host = json_text(|| format!("host share of job {job} rank {rank}"), &alloc.host)?;
            tx.prepare_cached(
                "INSERT INTO allocations (job_id, rank, slice, gpu_uuid, gpu_index, profile_id, start,
                     gpu_instance_id, compute_instance_id, mig_uuid, exclusive, numa_node, host,
                     allocated_ms, run)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    key,
                    rank,
                    s.slice,
                    alloc.gpu_uuid,
                    alloc.gpu_index,
                    alloc.profile_id,
                    alloc.start,
                    alloc.gpu_instance_id,
                    alloc.compute_instance_id,
                    alloc.mig_uuid,
                    alloc.exclusive,
                    alloc.numa_node,
                    host,
                    at,
                    run
                ])
            })
            .map_err(self.db_err("allocations", ctx))?;
        }
        self.commit(tx, "allocations", ctx)
    }

    /// Every live allocation, by job, rank and slice.
    pub fn live_allocations(&self) -> Result<Vec<LiveAllocation>, StoreError> {
        let ctx = || "list live allocations".to_owned();
        let mut st = self
            .conn
            .prepare_cached(&format!(
                "SELECT {ALLOC_COLUMNS}, a.id, a.job_id, a.rank, a.slice, a.run FROM allocations AS a
                 WHERE a.released_at IS NULL ORDER BY a.job_id, a.rank, a.slice"
            ))
            .map_err(self.db_err("allocations", ctx))?;
        let mut rows = st.query([]).map_err(self.db_err("allocations", ctx))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(self.db_err("allocations", ctx))? {
            let row_id: i64 = row.get(10).map_err(self.db_err("allocations", ctx))?;
            let r = RowReader { row, path: &self.path, table: "allocations", row_id };
            out.push(LiveAllocation {
                job: r.int(11, "job_id")?,
                rank: r.int(12, "rank")?,
                slice: r.int(13, "slice")?,
                run: r.int(14, "run")?,
                allocation: decode_allocation(&r, 0)?,
            });
        }
        Ok(out)
    }

    /// Every allocation job `job` ever held, live and released, oldest first (empty for an
    /// unknown job).
    pub fn job_allocations(&self, job: u64) -> Result<Vec<AllocationRecord>, StoreError> {
        let Some(key) = id_key(job) else { return Ok(Vec::new()) };
        let ctx = || format!("list allocations of job {job}");
        let mut st = self
            .conn
            .prepare_cached(&format!(
                "SELECT {ALLOC_COLUMNS}, a.id, a.rank, a.slice, a.allocated_ms, a.released_at, a.run
                 FROM allocations AS a WHERE a.job_id = ?1 ORDER BY a.id"
            ))
            .map_err(self.db_err("allocations", ctx))?;
        let mut rows = st.query([key]).map_err(self.db_err("allocations", ctx))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(self.db_err("allocations", ctx))? {
            let row_id: i64 = row.get(10).map_err(self.db_err("allocations", ctx))?;
            let r = RowReader { row, path: &self.path, table: "allocations", row_id };
            out.push(AllocationRecord {
                rank: r.int(11, "rank")?,
                slice: r.int(12, "slice")?,
                allocation: decode_allocation(&r, 0)?,
                allocated_ms: r.int(13, "allocated_ms")?,
                released_ms: r.opt_int(14, "released_at")?,
                run: r.int(15, "run")?,
            });
        }
        Ok(out)
    }
}
