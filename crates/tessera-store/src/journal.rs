//! The reconfiguration journal: a plan is written before its first step, each applied step is
//! recorded as it completes, and the outcome closes the entry. After a crash, the open entries
//! ([`Store::open_reconfigs`]) tell the daemon exactly which steps were applied, so it can
//! resume or roll back. At most one entry per GPU is open at a time.

use rusqlite::{OptionalExtension, params};

use crate::error::StoreError;
use crate::jobs::json_text;
use crate::row::{RowReader, id_from_rowid, id_key, to_sql_int};
use crate::store::Store;
use crate::types::{JournalPlan, ReconfigOutcome, ReconfigRecord};

const RECONFIG_COLUMNS: &str =
    "id, gpu_uuid, gpu_index, plan, for_job, created_ms, finished_ms, outcome, outcome_detail";

impl Store {
    /// Opens a journal entry for repartitioning GPU `gpu_uuid` with `plan`, before its first
    /// step. [`StoreError::ReconfigInProgress`] if that GPU already has an open entry;
    /// [`StoreError::JobNotFound`] if `for_job` names no job.
    pub fn begin_reconfig(
        &self,
        gpu_uuid: &str,
        gpu_index: u32,
        plan: &JournalPlan,
        for_job: Option<u64>,
        at_ms: u64,
    ) -> Result<u64, StoreError> {
        let ctx = || format!("begin reconfiguration of GPU {gpu_uuid}");
        let plan_text = json_text(|| format!("plan for GPU {gpu_uuid}"), plan)?;
        let at = to_sql_int("at_ms", at_ms)?;
        let job_key = match for_job {
            Some(id) => Some(id_key(id).ok_or(StoreError::JobNotFound { id })?),
            None => None,
        };
        let tx = self.write_tx("reconfigs", ctx)?;
        let open: Option<i64> = tx
            .prepare_cached("SELECT id FROM reconfigs WHERE gpu_uuid = ?1 AND state = 'open'")
            .and_then(|mut st| st.query_row([gpu_uuid], |r| r.get(0)).optional())
            .map_err(self.db_err("reconfigs", ctx))?;
        if let Some(open) = open {
            return Err(StoreError::ReconfigInProgress { gpu_uuid: gpu_uuid.to_owned(), open: id_from_rowid(open) });
        }
        if let (Some(id), Some(key)) = (for_job, job_key) {
            let exists: Option<i64> = tx
                .prepare_cached("SELECT 1 FROM jobs WHERE id = ?1")
                .and_then(|mut st| st.query_row([key], |r| r.get(0)).optional())
                .map_err(self.db_err("jobs", ctx))?;
            if exists.is_none() {
                return Err(StoreError::JobNotFound { id });
            }
        }
        tx.prepare_cached(
            "INSERT INTO reconfigs (gpu_uuid, gpu_index, plan, for_job, state, created_ms)
             VALUES (?1, ?2, ?3, ?4, 'open', ?5)",
        )
        .and_then(|mut st| st.execute(params![gpu_uuid, gpu_index, plan_text, job_key, at]))
        .map_err(self.db_err("reconfigs", ctx))?;
        let id = id_from_rowid(tx.last_insert_rowid());
        self.commit(tx, "reconfigs", ctx)?;
        Ok(id)
    }

    /// Records that step `step_index` of reconfiguration `reconfig` was applied, with its
    /// result (a sentence, e.g. the created instance's ids). [`StoreError::ReconfigNotFound`],
    /// [`StoreError::ReconfigFinished`], or [`StoreError::StepRecorded`] if already recorded.
    pub fn step_done(&self, reconfig: u64, step_index: u32, result: &str, at_ms: u64) -> Result<(), StoreError> {
        let ctx = || format!("record step {step_index} of reconfiguration {reconfig}");
        let key = id_key(reconfig).ok_or(StoreError::ReconfigNotFound { id: reconfig })?;
        let result_text = json_text(|| format!("result of step {step_index} of reconfiguration {reconfig}"), &result)?;
        let at = to_sql_int("at_ms", at_ms)?;
        let tx = self.write_tx("reconfig_steps", ctx)?;
        self.check_open(&tx, reconfig, key)?;
        let recorded: Option<i64> = tx
            .prepare_cached("SELECT 1 FROM reconfig_steps WHERE reconfig_id = ?1 AND step_index = ?2")
            .and_then(|mut st| st.query_row(params![key, step_index], |r| r.get(0)).optional())
            .map_err(self.db_err("reconfig_steps", ctx))?;
        if recorded.is_some() {
            return Err(StoreError::StepRecorded { reconfig, step: step_index });
        }
        tx.prepare_cached(
            "INSERT INTO reconfig_steps (reconfig_id, step_index, done_at, result)
             VALUES (?1, ?2, ?3, ?4)",
        )
        .and_then(|mut st| st.execute(params![key, step_index, at, result_text]))
        .map_err(self.db_err("reconfig_steps", ctx))?;
        self.commit(tx, "reconfig_steps", ctx)
    }

    fn check_open(&self, conn: &rusqlite::Connection, reconfig: u64, key: i64) -> Result<(), StoreError> {
        let state: Option<String> = conn
            .prepare_cached("SELECT state FROM reconfigs WHERE id = ?1")
            .and_then(|mut st| st.query_row([key], |r| r.get(0)).optional())
            .map_err(self.db_err("reconfigs", || format!("read reconfiguration {reconfig}")))?;
        match state.as_deref() {
            None => Err(StoreError::ReconfigNotFound { id: reconfig }),
            Some("open") => Ok(()),
            Some(_) => Err(StoreError::ReconfigFinished { id: reconfig }),
        }
    }

    /// Closes reconfiguration `reconfig` with its outcome.
    /// [`StoreError::ReconfigNotFound`] or [`StoreError::ReconfigFinished`].
    pub fn finish_reconfig(&self, reconfig: u64, outcome: ReconfigOutcome, at_ms: u64) -> Result<(), StoreError> {
        let ctx = || format!("finish reconfiguration {reconfig} as {}", outcome.as_str());
        let key = id_key(reconfig).ok_or(StoreError::ReconfigNotFound { id: reconfig })?;
        let at = to_sql_int("at_ms", at_ms)?;
        let detail = match &outcome {
            ReconfigOutcome::Abandoned { detail } => Some(detail.as_str()),
            ReconfigOutcome::Completed | ReconfigOutcome::RolledBack => None,
        };
        let tx = self.write_tx("reconfigs", ctx)?;
        self.check_open(&tx, reconfig, key)?;
        tx.prepare_cached(
            "UPDATE reconfigs SET state = 'finished', finished_ms = ?1, outcome = ?2,
                 outcome_detail = ?3
             WHERE id = ?4 AND state = 'open'",
        )
        .and_then(|mut st| st.execute(params![at, outcome.as_str(), detail, key]))
        .map_err(self.db_err("reconfigs", ctx))?;
        self.commit(tx, "reconfigs", ctx)
    }

    pub(crate) fn read_reconfigs(
        &self,
        where_clause: &str,
        args: &[&dyn rusqlite::ToSql],
        ctx: &dyn Fn() -> String,
    ) -> Result<Vec<ReconfigRecord>, StoreError> {
        // One snapshot for the entries and their steps; inside a caller's transaction (a
        // prune, [`Store::metric_history`]) that one.
        let tx = if self.conn.is_autocommit() {
            Some(
                rusqlite::Transaction::new_unchecked(&self.conn, rusqlite::TransactionBehavior::Deferred)
                    .map_err(self.db_err("reconfigs", ctx))?,
            )
        } else {
            None
        };
        let conn: &rusqlite::Connection = &self.conn;
        let mut out = Vec::new();
        {
            let mut st = conn
                .prepare_cached(&format!("SELECT {RECONFIG_COLUMNS} FROM reconfigs WHERE {where_clause} ORDER BY id"))
                .map_err(self.db_err("reconfigs", ctx))?;
            let mut rows = st.query(args).map_err(self.db_err("reconfigs", ctx))?;
            while let Some(row) = rows.next().map_err(self.db_err("reconfigs", ctx))? {
                let row_id: i64 = row.get(0).map_err(self.db_err("reconfigs", ctx))?;
                let r = RowReader { row, path: &self.path, table: "reconfigs", row_id };
                let outcome = match r.opt_text(7, "outcome")?.as_deref() {
                    None => None,
                    Some("completed") => Some(ReconfigOutcome::Completed),
                    Some("rolled_back") => Some(ReconfigOutcome::RolledBack),
                    Some("abandoned") => Some(ReconfigOutcome::Abandoned {
                        detail: r.opt_text(8, "outcome_detail")?.unwrap_or_default(),
                    }),
                    Some(other) => {
                        return Err(StoreError::BadRow {
                            path: self.path.clone(),
                            table: "reconfigs",
                            row: row_id,
                            detail: format!("column outcome: unknown outcome {other:?}"),
                        });
                    }
                };
                out.push(ReconfigRecord {
                    id: r.int(0, "id")?,
                    gpu_uuid: r.text(1, "gpu_uuid")?,
                    gpu_index: r.int(2, "gpu_index")?,
                    plan: r.json(3, "plan")?,
                    for_job: r.opt_int(4, "for_job")?,
                    steps_done: Vec::new(),
                    created_ms: r.int(5, "created_ms")?,
                    finished_ms: r.opt_int(6, "finished_ms")?,
                    outcome,
                });
            }
            let mut st = conn
                .prepare_cached(
                    "SELECT step_index, result FROM reconfig_steps WHERE reconfig_id = ?1
                     ORDER BY step_index",
                )
                .map_err(self.db_err("reconfig_steps", ctx))?;
            for rec in &mut out {
                let key = id_key(rec.id).unwrap_or(0);
                let mut rows = st.query([key]).map_err(self.db_err("reconfig_steps", ctx))?;
                while let Some(row) = rows.next().map_err(self.db_err("reconfig_steps", ctx))? {
                    let r = RowReader { row, path: &self.path, table: "reconfig_steps", row_id: key };
                    rec.steps_done.push((r.int(0, "step_index")?, r.json(1, "result")?));
                }
            }
        }
        if let Some(tx) = tx {
            tx.commit().map_err(self.db_err("reconfigs", ctx))?;
        }
        Ok(out)
    }

    /// Every open (unfinished) reconfiguration with the steps applied so far, oldest first:
    /// what a restarted daemon must resume or roll back.
    pub fn open_reconfigs(&self) -> Result<Vec<ReconfigRecord>, StoreError> {
        self.read_reconfigs("state = 'open'", &[], &|| "list open reconfigurations".to_owned())
    }

    /// Every finished reconfiguration, oldest first (what the metrics count by outcome).
    pub fn finished_reconfigs(&self) -> Result<Vec<ReconfigRecord>, StoreError> {
        self.read_reconfigs("state = 'finished'", &[], &|| "list finished reconfigurations".to_owned())
    }

    /// One journal entry, open or finished; `None` if there is no such id.
    pub fn reconfig(&self, id: u64) -> Result<Option<ReconfigRecord>, StoreError> {
        let Some(key) = id_key(id) else { return Ok(None) };
        let mut v = self.read_reconfigs("id = ?1", &[&key], &|| format!("read reconfiguration {id}"))?;
        Ok(v.pop())
    }
}
