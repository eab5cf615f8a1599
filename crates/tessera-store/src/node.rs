//! Node facts that must survive a restart: which GPUs an admin drained (and why), and which
//! MPS control daemons the daemon started (so a restarted daemon adopts them instead of
//! starting a second one, and stops them when their instance has no clients left). GPU health
//! is kept as one JSON document in `meta` (key `health`), written by the daemon.

use rusqlite::params;

use crate::error::StoreError;
use crate::row::{RowReader, to_sql_int};
use crate::store::Store;

/// A drained GPU: no new work goes to it until an admin undrains it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Drain {
    pub gpu_uuid: String,
    pub gpu_index: u32,
    /// Who drained it.
    pub by: String,
    pub reason: String,
    pub at_ms: u64,
}

/// An MPS control daemon the daemon started for one MIG instance, running as one user.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MpsServer {
    /// The instance it serves (its MIG UUID, or the GPU UUID with MIG off).
    pub mig_uuid: String,
    pub uid: u32,
    pub gid: u32,
    pub pipe_dir: String,
    pub log_dir: String,
    pub started_ms: u64,
}

impl Store {
    /// Drains a GPU (replacing an earlier drain's reason).
    pub fn set_drain(&self, d: &Drain) -> Result<(), StoreError> {
        let at = to_sql_int("at_ms", d.at_ms)?;
        self.conn
            .prepare_cached(
                "INSERT INTO drains (gpu_uuid, gpu_index, by_user, reason, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (gpu_uuid) DO UPDATE SET gpu_index = excluded.gpu_index,
                     by_user = excluded.by_user, reason = excluded.reason, at_ms = excluded.at_ms",
            )
            .and_then(|mut st| st.execute(params![d.gpu_uuid, d.gpu_index, d.by, d.reason, at]))
            .map(drop)
            .map_err(self.db_err("drains", || format!("drain GPU {}", d.gpu_uuid)))
    }

    /// Undrains a GPU; returns whether it was drained.
    pub fn clear_drain(&self, gpu_uuid: &str) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached("DELETE FROM drains WHERE gpu_uuid = ?1")
            .and_then(|mut st| st.execute([gpu_uuid]))
            .map(|n| n > 0)
            .map_err(self.db_err("drains", || format!("undrain GPU {gpu_uuid}")))
    }

    /// Every drained GPU.
    pub fn drains(&self) -> Result<Vec<Drain>, StoreError> {
        let ctx = || "list drained GPUs".to_owned();
        let mut st = self
            .conn
            .prepare_cached("SELECT gpu_uuid, gpu_index, by_user, reason, at_ms FROM drains ORDER BY gpu_index")
            .map_err(self.db_err("drains", ctx))?;
        let mut rows = st.query([]).map_err(self.db_err("drains", ctx))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(self.db_err("drains", ctx))? {
            let r = RowReader { row, path: &self.path, table: "drains", row_id: 0 };
            out.push(Drain {
                gpu_uuid: r.text(0, "gpu_uuid")?,
                gpu_index: r.int(1, "gpu_index")?,
                by: r.text(2, "by_user")?,
                reason: r.text(3, "reason")?,
                at_ms: r.int(4, "at_ms")?,
            });
        }
        Ok(out)
    }

    /// Records an MPS control daemon the daemon started.
    pub fn add_mps_server(&self, m: &MpsServer) -> Result<(), StoreError> {
        let at = to_sql_int("started_ms", m.started_ms)?;
        self.conn
            .prepare_cached(
                "INSERT INTO mps_servers (mig_uuid, uid, gid, pipe_dir, log_dir, started_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (mig_uuid) DO UPDATE SET uid = excluded.uid, gid = excluded.gid,
                     pipe_dir = excluded.pipe_dir, log_dir = excluded.log_dir,
                     started_ms = excluded.started_ms",
            )
            .and_then(|mut st| st.execute(params![m.mig_uuid, m.uid, m.gid, m.pipe_dir, m.log_dir, at]))
            .map(drop)
            .map_err(self.db_err("mps_servers", || format!("record the MPS control daemon of {}", m.mig_uuid)))
    }

    /// Forgets an MPS control daemon (it was stopped).
    pub fn remove_mps_server(&self, mig_uuid: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("DELETE FROM mps_servers WHERE mig_uuid = ?1")
            .and_then(|mut st| st.execute([mig_uuid]))
            .map(drop)
            .map_err(self.db_err("mps_servers", || format!("forget the MPS control daemon of {mig_uuid}")))
    }

    /// Every MPS control daemon the daemon started and has not stopped.
    pub fn mps_servers(&self) -> Result<Vec<MpsServer>, StoreError> {
        let ctx = || "list MPS control daemons".to_owned();
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT mig_uuid, uid, gid, pipe_dir, log_dir, started_ms FROM mps_servers ORDER BY mig_uuid",
            )
            .map_err(self.db_err("mps_servers", ctx))?;
        let mut rows = st.query([]).map_err(self.db_err("mps_servers", ctx))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(self.db_err("mps_servers", ctx))? {
            let r = RowReader { row, path: &self.path, table: "mps_servers", row_id: 0 };
            out.push(MpsServer {
                mig_uuid: r.text(0, "mig_uuid")?,
                uid: r.int(1, "uid")?,
                gid: r.int(2, "gid")?,
                pipe_dir: r.text(3, "pipe_dir")?,
                log_dir: r.text(4, "log_dir")?,
                started_ms: r.int(5, "started_ms")?,
            });
        }
        Ok(out)
    }
}
