//! Jobs and their transitions: insert, read, filter, compare-and-set state changes (each one
//! appended to `job_events` in the same transaction), runtime facts and exit status.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params};

use crate::error::StoreError;
use crate::row::{RowReader, id_from_rowid, id_key, to_sql_int};
use crate::store::Store;
use crate::types::{ExitInfo, ExternalWork, JobEvent, JobFilter, JobRecord, JobState, NewJob, Work};

/// The columns [`decode_job`] reads, in order.
const JOB_COLUMNS: &str = "id, user_uid, user_name, tenant, priority, request, work, \
     submitted_ms, state, reason, started_ms, ended_ms, exit_code, exit_signal, \
     exit_failed_rank, exit_detail, job_dir, shim_pid, runs, cancelled_by";

fn decode_job(r: &RowReader<'_, '_>) -> Result<JobRecord, StoreError> {
    let exit_detail = r.opt_text(15, "exit_detail")?;
    let exit = match exit_detail {
        Some(detail) => Some(ExitInfo {
            code: r.opt_int(12, "exit_code")?,
            signal: r.opt_int(13, "exit_signal")?,
            failed_rank: r.opt_int(14, "exit_failed_rank")?,
            detail,
        }),
        None => None,
    };
    Ok(JobRecord {
        id: r.int(0, "id")?,
        user_uid: r.int(1, "user_uid")?,
        user_name: r.text(2, "user_name")?,
        tenant: r.text(3, "tenant")?,
        priority: r.int(4, "priority")?,
        request: r.json(5, "request")?,
        work: r.json(6, "work")?,
        submitted_ms: r.int(7, "submitted_ms")?,
        state: r.state(8, "state")?,
        reason: r.text(9, "reason")?,
        started_ms: r.opt_int(10, "started_ms")?,
        ended_ms: r.opt_int(11, "ended_ms")?,
        exit,
        job_dir: r.opt_text(16, "job_dir")?,
        shim_pid: r.opt_int(17, "shim_pid")?,
        runs: r.int(18, "runs")?,
        cancelled_by: r.opt_text(19, "cancelled_by")?,
    })
}

/// `v` as JSON text (serializing a `Value` or strings cannot fail in practice; still no panic).
pub(crate) fn json_text<T: serde::Serialize>(what: impl FnOnce() -> String, v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|source| StoreError::Encode { what: what(), source })
}

/// [`Store::active_summary`]'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ActiveSummary {
    /// How many jobs are queued, and their lowest and highest ids (0 when none).
    pub queued: u64,
    pub lowest_queued: u64,
    pub highest_queued: u64,
    /// The placing and running jobs' ids, increasing.
    pub live: Vec<u64>,
}

impl Store {
    /// Stores a new job in state `queued` and returns its id (SQLite's `AUTOINCREMENT`:
    /// increasing, never reused, even after the newest row is gone).
    pub fn insert_job(&self, job: &NewJob) -> Result<u64, StoreError> {
        let request = json_text(|| "new job's request".to_owned(), &job.request)?;
        let work = json_text(|| "new job's work".to_owned(), &job.work)?;
        let submitted = to_sql_int("submitted_ms", job.submitted_ms)?;
        let conn = &self.conn;
        conn.prepare_cached(
            "INSERT INTO jobs (user_uid, user_name, tenant, priority, request, work,
                               submitted_ms, state, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'queued', '')",
        )
        .and_then(|mut st| {
            st.execute(params![
                job.user_uid,
                job.user_name,
                job.request.tenant,
                job.request.priority,
                request,
                work,
                submitted
            ])
        })
        .map_err(self.db_err("jobs", || format!("insert job of user {}", job.user_uid)))?;
        Ok(id_from_rowid(conn.last_insert_rowid()))
    }

    /// Reads one job; `None` if there is no such id.
    pub fn job(&self, id: u64) -> Result<Option<JobRecord>, StoreError> {
        let Some(key) = id_key(id) else { return Ok(None) };
        let mut st = self
            .conn
            .prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))
            .map_err(self.db_err("jobs", || format!("read job {id}")))?;
        let mut rows = st.query([key]).map_err(self.db_err("jobs", || format!("read job {id}")))?;
        match rows.next().map_err(self.db_err("jobs", || format!("read job {id}")))? {
            Some(row) => {
                let r = RowReader { row, path: &self.path, table: "jobs", row_id: key };
                decode_job(&r).map(Some)
            }
            None => Ok(None),
        }
    }

    /// The queued jobs' ids and submission times, by increasing id: what a scheduling round
    /// needs to know each time (the requests themselves never change, so callers cache them).
    pub fn queued_ids(&self) -> Result<Vec<(u64, u64)>, StoreError> {
        let ctx = || "list queued jobs".to_owned();
        let mut st = self
            .conn
            .prepare_cached("SELECT id, submitted_ms FROM jobs WHERE state = 'queued' ORDER BY id")
            .map_err(self.db_err("jobs", ctx))?;
        let mut rows = st.query([]).map_err(self.db_err("jobs", ctx))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(self.db_err("jobs", ctx))? {
            let row_id: i64 = row.get(0).map_err(self.db_err("jobs", ctx))?;
            let r = RowReader { row, path: &self.path, table: "jobs", row_id };
            out.push((r.int(0, "id")?, r.int(1, "submitted_ms")?));
        }
        Ok(out)
    }

    /// A cheap picture of the active jobs, read from the state index alone: the queued jobs'
    /// count and lowest and highest ids, and the ids of the placing and running jobs. Equal
    /// answers mean no job was queued, cancelled, started or ended in between (ids are never
    /// reused): what a scheduling round needs to know to skip deciding again.
    pub fn active_summary(&self) -> Result<ActiveSummary, StoreError> {
        let ctx = || "summarise active jobs".to_owned();
        let queued = self
            .conn
            .prepare_cached(
                "SELECT count(*), coalesce(min(id), 0), coalesce(max(id), 0) FROM jobs WHERE state = 'queued'",
            )
            .and_then(|mut st| {
                st.query_row([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)))
            })
            .map(|(n, lo, hi)| (n.unsigned_abs(), lo.unsigned_abs(), hi.unsigned_abs()))
            .map_err(self.db_err("jobs", ctx))?;
        let mut st = self
            .conn
            .prepare_cached("SELECT id FROM jobs WHERE state IN ('placing', 'running') ORDER BY id")
            .map_err(self.db_err("jobs", ctx))?;
        let live = st
            .query_map([], |r| r.get::<_, i64>(0))
            .map_err(self.db_err("jobs", ctx))?
            .map(|r| r.map(i64::unsigned_abs))
            .collect::<Result<Vec<u64>, _>>()
            .map_err(self.db_err("jobs", ctx))?;
        Ok(ActiveSummary { queued: queued.0, lowest_queued: queued.1, highest_queued: queued.2, live })
    }

    /// Every job that has started: its tenant and how long it waited, from submission to the
    /// first time it ran (its first transition to `running`), in ms. What the metrics'
    /// queue-wait histogram counts; a job requeued later is counted once.
    pub fn waits(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let ctx = || "list waits".to_owned();
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT j.id, j.tenant, j.submitted_ms, MIN(e.at_ms) FROM jobs j \
                 JOIN job_events e ON e.job_id = j.id AND e.to_state = 'running' GROUP BY j.id ORDER BY j.id",
            )
            .map_err(self.db_err("jobs", ctx))?;
        let mut rows = st.query([]).map_err(self.db_err("jobs", ctx))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(self.db_err("jobs", ctx))? {
            let row_id: i64 = row.get(0).map_err(self.db_err("jobs", ctx))?;
            let r = RowReader { row, path: &self.path, table: "jobs", row_id };
            let (submitted, started): (u64, u64) = (r.int(2, "submitted_ms")?, r.int(3, "first start")?);
            out.push((r.text(1, "tenant")?, started.saturating_sub(submitted)));
        }
        Ok(out)
    }

    /// Jobs matching `filter`, by increasing id. With `limit` (and `after_id`, the cursor) it
    /// reads one page through an index (by user, tenant or state, each ordered by id) and decodes
    /// only the rows it returns.
    pub fn jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, StoreError> {
        let mut sql = format!("SELECT {JOB_COLUMNS} FROM jobs");
        let mut conds: Vec<String> = Vec::new();
        let mut args: Vec<Value> = Vec::new();
        // Deduplicated and ordered, so equal filters give equal SQL (and a cached statement).
        let states: BTreeSet<JobState> = filter.states.iter().copied().collect();
        if !states.is_empty() {
            let marks = vec!["?"; states.len()].join(", ");
            conds.push(format!("state IN ({marks})"));
            args.extend(states.iter().map(|s| Value::Text(s.as_str().to_owned())));
        }
        if let Some(uid) = filter.user_uid {
            conds.push("user_uid = ?".to_owned());
            args.push(Value::Integer(i64::from(uid)));
        }
        if let Some(tenant) = &filter.tenant {
            conds.push("tenant = ?".to_owned());
            args.push(Value::Text(tenant.clone()));
        }
        if let Some(since) = filter.ended_since_ms {
            conds.push("(ended_ms IS NULL OR ended_ms >= ?)".to_owned());
            args.push(Value::Integer(i64::try_from(since).unwrap_or(i64::MAX)));
        }
        if let Some(after) = filter.after_id {
            conds.push("id > ?".to_owned());
            args.push(Value::Integer(i64::try_from(after).unwrap_or(i64::MAX)));
        }
        if !conds.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conds.join(" AND "));
        }
        sql.push_str(" ORDER BY id");
        if let Some(limit) = filter.limit {
            sql.push_str(" LIMIT ?");
            args.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
        }
        let ctx = || "list jobs".to_owned();
        let mut st = self.conn.prepare_cached(&sql).map_err(self.db_err("jobs", ctx))?;
        let mut rows = st.query(rusqlite::params_from_iter(args)).map_err(self.db_err("jobs", ctx))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(self.db_err("jobs", ctx))? {
            let row_id: i64 = row.get(0).map_err(self.db_err("jobs", ctx))?;
            out.push(decode_job(&RowReader { row, path: &self.path, table: "jobs", row_id })?);
        }
        Ok(out)
    }

    /// The state of job `id` inside the current connection/transaction.
    fn state_of(&self, conn: &Connection, id: u64) -> Result<JobState, StoreError> {
        let Some(key) = id_key(id) else { return Err(StoreError::JobNotFound { id }) };
        let ctx = || format!("read state of job {id}");
        let s: Option<String> = conn
            .prepare_cached("SELECT state FROM jobs WHERE id = ?1")
            .and_then(|mut st| st.query_row([key], |r| r.get(0)).optional())
            .map_err(self.db_err("jobs", ctx))?;
        let s = s.ok_or(StoreError::JobNotFound { id })?;
        s.parse().map_err(|e| StoreError::BadRow {
            path: self.path.clone(),
            table: "jobs",
            row: key,
            detail: format!("column state: {e}"),
        })
    }

    /// Compare-and-set of the state inside an open transaction: fails if the job is not in
    /// `from`; appends the event; releases the job's allocations when it leaves the active
    /// states (queued again, or terminal); stamps `ended_ms` when terminal.
    fn apply_transition(
        &self,
        conn: &Connection,
        id: u64,
        from: JobState,
        to: JobState,
        reason: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        let Some(key) = id_key(id) else { return Err(StoreError::JobNotFound { id }) };
        let ctx = || format!("transition job {id} {from} -> {to}");
        let changed = conn
            .prepare_cached(
                "UPDATE jobs SET state = ?1, reason = ?2,
                     ended_ms = CASE WHEN ?3 THEN coalesce(ended_ms, ?4) ELSE ended_ms END,
                     runs = runs + (?1 = 'placing')
                 WHERE id = ?5 AND state = ?6",
            )
            .and_then(|mut st| st.execute(params![to.as_str(), reason, to.is_terminal(), at, key, from.as_str()]))
            .map_err(self.db_err("jobs", ctx))?;
        if changed == 0 {
            let actual = self.state_of(conn, id)?;
            return Err(StoreError::StaleState { id, expected: from, actual });
        }
        conn.prepare_cached(
            "INSERT INTO job_events (job_id, from_state, to_state, reason, at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .and_then(|mut st| st.execute(params![key, from.as_str(), to.as_str(), reason, at]))
        .map_err(self.db_err("job_events", ctx))?;
        if !to.is_active() {
            conn.prepare_cached("UPDATE allocations SET released_at = ?1 WHERE job_id = ?2 AND released_at IS NULL")
                .and_then(|mut st| st.execute(params![at, key]))
                .map_err(self.db_err("allocations", ctx))?;
        }
        Ok(())
    }

    /// Moves job `id` from `from` to `to`, compare-and-set: [`StoreError::StaleState`] if it is
    /// not in `from` (so a transition is never applied twice), [`StoreError::IllegalTransition`]
    /// if the lifecycle forbids it ([`JobState::can_transition_to`]). Sets the job's reason,
    /// appends a [`JobEvent`], and in the same transaction releases the job's live allocations
    /// when `to` is `queued` or terminal (so a finished job never leaks a slice), and stamps
    /// `ended_ms` when `to` is terminal.
    pub fn transition(
        &self,
        id: u64,
        from: JobState,
        to: JobState,
        reason: &str,
        at_ms: u64,
    ) -> Result<(), StoreError> {
        if !from.can_transition_to(to) {
            return Err(StoreError::IllegalTransition { id, from, to });
        }
        let at = to_sql_int("at_ms", at_ms)?;
        let ctx = || format!("transition job {id} {from} -> {to}");
        let tx = self.write_tx("jobs", ctx)?;
        self.apply_transition(&tx, id, from, to, reason, at)?;
        self.commit(tx, "jobs", ctx)
    }

    /// [`Store::transition`] to a terminal state and the job's exit status ([`ExitInfo`], with
    /// `ended_ms = at_ms`) in one transaction.
    /// `to` must be terminal ([`StoreError::IllegalTransition`] otherwise).
    pub fn finish(
        &self,
        id: u64,
        from: JobState,
        to: JobState,
        reason: &str,
        exit: ExitInfo,
        at_ms: u64,
    ) -> Result<(), StoreError> {
        if !to.is_terminal() || !from.can_transition_to(to) {
            return Err(StoreError::IllegalTransition { id, from, to });
        }
        let at = to_sql_int("at_ms", at_ms)?;
        let ctx = || format!("finish job {id} {from} -> {to}");
        let tx = self.write_tx("jobs", ctx)?;
        self.apply_transition(&tx, id, from, to, reason, at)?;
        self.write_exit(&tx, id, &exit, at)?;
        self.commit(tx, "jobs", ctx)
    }

    fn write_exit(&self, conn: &Connection, id: u64, exit: &ExitInfo, ended: i64) -> Result<(), StoreError> {
        let Some(key) = id_key(id) else { return Err(StoreError::JobNotFound { id }) };
        let changed = conn
            .prepare_cached(
                "UPDATE jobs SET exit_code = ?1, exit_signal = ?2, exit_failed_rank = ?3,
                     exit_detail = ?4, ended_ms = ?5
                 WHERE id = ?6",
            )
            .and_then(|mut st| st.execute(params![exit.code, exit.signal, exit.failed_rank, exit.detail, ended, key]))
            .map_err(self.db_err("jobs", || format!("set exit of job {id}")))?;
        if changed == 0 {
            return Err(StoreError::JobNotFound { id });
        }
        Ok(())
    }

    /// Sets why a queued job waits (no event is recorded). [`StoreError::StaleState`] if the
    /// job is no longer queued. Writes nothing when the reason is unchanged.
    pub fn set_pending_reason(&self, id: u64, reason: &str) -> Result<(), StoreError> {
        let Some(key) = id_key(id) else { return Err(StoreError::JobNotFound { id }) };
        let changed = self
            .conn
            .prepare_cached("UPDATE jobs SET reason = ?1 WHERE id = ?2 AND state = 'queued' AND reason <> ?1")
            .and_then(|mut st| st.execute(params![reason, key]))
            .map_err(self.db_err("jobs", || format!("set pending reason of job {id}")))?;
        if changed == 0 {
            let actual = self.state_of(&self.conn, id)?;
            if actual != JobState::Queued {
                return Err(StoreError::StaleState { id, expected: JobState::Queued, actual });
            }
        }
        Ok(())
    }

    /// Names a live job's external work anew (`door` and `key`): a front door that learned whom
    /// it holds slices for (the kubelet lists a pod only after its devices were allocated).
    /// [`StoreError::StaleState`] (expected `running`) when the job ended or runs processes.
    pub fn set_external_key(&self, id: u64, door: &str, key: &str) -> Result<(), StoreError> {
        let Some(row) = id_key(id) else { return Err(StoreError::JobNotFound { id }) };
        let work = Work::External(ExternalWork { door: door.to_string(), key: key.to_string() });
        let text = json_text(|| format!("job {id}'s work"), &work)?;
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE jobs SET work = ?1 WHERE id = ?2 AND state IN ('queued', 'placing', 'running')
                 AND json_extract(work, '$.external') IS NOT NULL",
            )
            .and_then(|mut st| st.execute(params![text, row]))
            .map_err(self.db_err("jobs", || format!("name job {id}'s work")))?;
        if changed == 0 {
            let actual = self.state_of(&self.conn, id)?;
            return Err(StoreError::StaleState { id, expected: JobState::Running, actual });
        }
        Ok(())
    }

    /// Records who asked for the job's cancellation; the first to ask is kept.
    pub fn set_cancelled_by(&self, id: u64, user: &str) -> Result<(), StoreError> {
        let Some(key) = id_key(id) else { return Err(StoreError::JobNotFound { id }) };
        let changed = self
            .conn
            .prepare_cached("UPDATE jobs SET cancelled_by = ?1 WHERE id = ?2 AND cancelled_by IS NULL")
            .and_then(|mut st| st.execute(params![user, key]))
            .map_err(self.db_err("jobs", || format!("record who cancelled job {id}")))?;
        if changed == 0 && self.job(id)?.is_none() {
            return Err(StoreError::JobNotFound { id });
        }
        Ok(())
    }

    /// Records the job directory, the supervisor's pid and the start time of a placing or
    /// running job ([`StoreError::StaleState`] with `expected: placing` otherwise).
    pub fn set_runtime(&self, id: u64, job_dir: &str, shim_pid: u32, started_ms: u64) -> Result<(), StoreError> {
        let Some(key) = id_key(id) else { return Err(StoreError::JobNotFound { id }) };
        let started = to_sql_int("started_ms", started_ms)?;
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE jobs SET job_dir = ?1, shim_pid = ?2, started_ms = ?3
                 WHERE id = ?4 AND state IN ('placing', 'running')",
            )
            .and_then(|mut st| st.execute(params![job_dir, shim_pid, started, key]))
            .map_err(self.db_err("jobs", || format!("set runtime of job {id}")))?;
        if changed == 0 {
            let actual = self.state_of(&self.conn, id)?;
            return Err(StoreError::StaleState { id, expected: JobState::Placing, actual });
        }
        Ok(())
    }

    /// Every transition of job `id`, oldest first ([`StoreError::JobNotFound`] if no such job).
    /// Submission is not an event: a job without events is queued since `submitted_ms`.
    pub fn events(&self, id: u64) -> Result<Vec<JobEvent>, StoreError> {
        let key = id_key(id).ok_or(StoreError::JobNotFound { id })?;
        let ctx = || format!("read events of job {id}");
        let tx = rusqlite::Transaction::new_unchecked(&self.conn, rusqlite::TransactionBehavior::Deferred)
            .map_err(self.db_err("job_events", ctx))?;
        self.state_of(&tx, id)?;
        let mut st = tx
            .prepare_cached(
                "SELECT id, from_state, to_state, reason, at_ms FROM job_events
                 WHERE job_id = ?1 ORDER BY id",
            )
            .map_err(self.db_err("job_events", ctx))?;
        let mut rows = st.query([key]).map_err(self.db_err("job_events", ctx))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(self.db_err("job_events", ctx))? {
            let row_id: i64 = row.get(0).map_err(self.db_err("job_events", ctx))?;
            let r = RowReader { row, path: &self.path, table: "job_events", row_id };
            out.push(JobEvent {
                from: r.state(1, "from_state")?,
                to: r.state(2, "to_state")?,
                reason: r.text(3, "reason")?,
                at_ms: r.int(4, "at_ms")?,
            });
        }
        drop(rows);
        drop(st);
        // Read-only: ending it either way is the same.
        tx.commit().map_err(self.db_err("job_events", ctx))?;
        Ok(out)
    }

    /// The highest job id ever handed out (0 for a fresh database).
    pub fn max_job_id(&self) -> Result<u64, StoreError> {
        let seq: Option<i64> = self
            .conn
            .prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'jobs'")
            .and_then(|mut st| st.query_row([], |r| r.get(0)).optional())
            .map_err(self.db_err("jobs", || "read the last job id".to_owned()))?;
        Ok(seq.map_or(0, id_from_rowid))
    }

    /// Makes every later job id greater than `id` (so new jobs never collide with job
    /// directories a lost database left on disk).
    pub fn ensure_ids_above(&self, id: u64) -> Result<(), StoreError> {
        let key = to_sql_int("job id", id)?;
        let ctx = || format!("raise the next job id above {id}");
        let tx = self.write_tx("jobs", ctx)?;
        let changed = tx
            .prepare_cached("UPDATE sqlite_sequence SET seq = max(seq, ?1) WHERE name = 'jobs'")
            .and_then(|mut st| st.execute([key]))
            .map_err(self.db_err("jobs", ctx))?;
        if changed == 0 {
            tx.prepare_cached("INSERT INTO sqlite_sequence (name, seq) VALUES ('jobs', ?1)")
                .and_then(|mut st| st.execute([key]))
                .map_err(self.db_err("jobs", ctx))?;
        }
        self.commit(tx, "jobs", ctx)
    }

    /// How many jobs are in each state (every state present, zeros included).
    pub fn count_by_state(&self) -> Result<BTreeMap<JobState, u64>, StoreError> {
        let ctx = || "count jobs by state".to_owned();
        let mut out: BTreeMap<JobState, u64> = JobState::ALL.iter().map(|&s| (s, 0)).collect();
        let mut st = self
            .conn
            .prepare_cached("SELECT state, count(*), min(id) FROM jobs GROUP BY state")
            .map_err(self.db_err("jobs", ctx))?;
        let mut rows = st.query([]).map_err(self.db_err("jobs", ctx))?;
        while let Some(row) = rows.next().map_err(self.db_err("jobs", ctx))? {
            let row_id: i64 = row.get(2).map_err(self.db_err("jobs", ctx))?;
            let r = RowReader { row, path: &self.path, table: "jobs", row_id };
            out.insert(r.state(0, "state")?, r.int(1, "count(*)")?);
        }
        Ok(out)
    }
}
