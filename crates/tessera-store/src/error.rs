//! [`StoreError`]: everything the store can refuse or fail at, each with the path, table, job,
//! slice or journal entry it concerns.

use std::path::PathBuf;

use crate::types::JobState;

/// An error from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state directory could not be created.
    #[error("cannot create state directory {path}: {source}")]
    CreateDir {
        /// The state directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },

    /// A file could not be made private to the daemon.
    #[error("cannot make {path} private (mode 0600): {source}")]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },

    /// The lock file could not be opened or locked for a reason other than contention.
    #[error("cannot open or lock {path}: {source}")]
    LockFile {
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },

    /// Another store (another daemon) holds the state directory.
    #[error(
        "state directory is in use by another tessera daemon: {path} is locked (the file names \
         the holder's pid)"
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
    },

    /// SQLite could not open the database file.
    #[error("cannot open database {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: Box<rusqlite::Error>,
    },

    /// The file is not a (healthy) Tessera database.
    #[error("database {path} is corrupt or not a Tessera database: {detail}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },

    /// The database could not be put into the mode the store needs (WAL, foreign keys).
    #[error("cannot set up database {path}: {detail}")]
    Setup {
        /// The database file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },

    /// The database was written by a newer Tessera.
    #[error(
        "database {path} has schema version {found}, but this tessera knows versions up to \
         {supported}; run a newer tessera (or move the state directory away)"
    )]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// `PRAGMA user_version` of the file.
        found: i64,
        /// The newest version this code knows.
        supported: i64,
    },

    /// A version-1 database still has live allocations: version 1 recorded a rank's slot in a
    /// form version 2 reads differently, so it is not migrated (and is left as it was).
    #[error(
        "database {path} has schema version {found} with {live} live allocation(s) (job(s) {jobs:?}); \
         let the running jobs finish (or drain the node) with the previous tessera, then upgrade: \
         allocations made before the upgrade would be misread after it"
    )]
    LiveAllocationsAtUpgrade {
        /// The database file.
        path: PathBuf,
        /// `PRAGMA user_version` of the file.
        found: i64,
        /// How many allocations are live.
        live: u64,
        /// The jobs holding them.
        jobs: Vec<u64>,
    },

    /// A schema migration failed (and was rolled back).
    #[error("cannot migrate database {path} to schema version {version}: {source}")]
    Migrate {
        /// The database file.
        path: PathBuf,
        /// The version being migrated to.
        version: i64,
        /// Why.
        source: Box<rusqlite::Error>,
    },

    /// An SQLite statement failed.
    #[error("database {path}, table {table}: cannot {action}: {source}")]
    Db {
        /// The database file.
        path: PathBuf,
        /// The table concerned.
        table: &'static str,
        /// What was being done, with the job or journal id.
        action: String,
        /// Why.
        source: Box<rusqlite::Error>,
    },

    /// A stored row holds a value this code cannot read (corrupt or hand-edited).
    #[error("database {path}, table {table}, row {row}: {detail}")]
    BadRow {
        /// The database file.
        path: PathBuf,
        /// The table.
        table: &'static str,
        /// The row's id (rowid).
        row: i64,
        /// What is wrong.
        detail: String,
    },

    /// A value could not be encoded as JSON for storage.
    #[error("cannot encode {what} as JSON: {source}")]
    Encode {
        /// Which value (and for which job or journal entry).
        what: String,
        /// Why.
        source: serde_json::Error,
    },

    /// A number given to the store does not fit SQLite's signed 64-bit integers.
    #[error("{what} {value} is out of range (at most {max})", max = i64::MAX)]
    OutOfRange {
        /// Which argument.
        what: &'static str,
        /// Its value.
        value: u64,
    },

    /// No job with this id.
    #[error("job {id} not found")]
    JobNotFound {
        /// The job id.
        id: u64,
    },

    /// Compare-and-set failed: the job is not in the state the caller expected.
    #[error("job {id} is {actual}, not {expected}")]
    StaleState {
        /// The job id.
        id: u64,
        /// The state the caller expected.
        expected: JobState,
        /// The state it is in.
        actual: JobState,
    },

    /// The transition is not allowed by the job lifecycle.
    #[error("job {id}: illegal transition {from} -> {to}")]
    IllegalTransition {
        /// The job id.
        id: u64,
        /// From.
        from: JobState,
        /// To.
        to: JobState,
    },

    /// The slice is held: exclusively by another allocation, or the request is exclusive and
    /// someone holds it (shared or not).
    #[error(
        "slice (GPU {gpu_uuid}, profile {profile_id}, start {start}) is already allocated to job \
         {holder_job}"
    )]
    AlreadyAllocated {
        /// The GPU.
        gpu_uuid: String,
        /// The profile id.
        profile_id: u32,
        /// The placement start.
        start: u8,
        /// A job holding a conflicting live allocation.
        holder_job: u64,
    },

    /// The rank's slice already holds a live allocation.
    #[error("job {job} rank {rank} slice {slice} already holds a live allocation")]
    RankAllocated {
        /// The job id.
        job: u64,
        /// The rank.
        rank: u32,
        /// The slice's place among the rank's slices.
        slice: u32,
    },

    /// No reconfiguration journal entry with this id.
    #[error("reconfiguration {id} not found")]
    ReconfigNotFound {
        /// The journal id.
        id: u64,
    },

    /// The reconfiguration is already finished.
    #[error("reconfiguration {id} is already finished")]
    ReconfigFinished {
        /// The journal id.
        id: u64,
    },

    /// Another reconfiguration of the same GPU is still open.
    #[error("GPU {gpu_uuid} already has an open reconfiguration ({open})")]
    ReconfigInProgress {
        /// The GPU.
        gpu_uuid: String,
        /// The open journal id.
        open: u64,
    },

    /// The step was already recorded.
    #[error("reconfiguration {reconfig}: step {step} is already recorded")]
    StepRecorded {
        /// The journal id.
        reconfig: u64,
        /// The step index.
        step: u32,
    },
}
