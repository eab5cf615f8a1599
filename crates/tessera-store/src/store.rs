//! [`Store`]: opening the state directory (lock, pragmas, migrations), transactions, error
//! context, node metadata and the integrity check. The job, allocation and journal operations
//! are in `jobs.rs`, `alloc.rs` and `journal.rs`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OptionalExtension, Transaction, TransactionBehavior};

use crate::error::StoreError;
use crate::schema::{APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION};

/// The database file inside the state directory.
pub const DB_FILE: &str = "tessera.db";
/// The lock file inside the state directory; held (exclusive `flock`) for a [`Store`]'s life.
pub const LOCK_FILE: &str = "tessera.lock";

/// How long a statement waits for SQLite's own file locks before failing with "busy".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The daemon's durable state: one SQLite database in WAL mode in a state directory, held
/// exclusively by one process.
///
/// Every method that writes more than one statement does so in one `BEGIN IMMEDIATE`
/// transaction. Commits are durable across a crash of the process (`kill -9`); with
/// `synchronous=NORMAL` the last commits may be lost on power loss, never half-applied.
/// Methods take `&self`; the store is `Send` but not `Sync` (one thread uses it at a time).
#[derive(Debug)]
pub struct Store {
    // Field order is drop order: close the database before releasing the lock.
    pub(crate) conn: Connection,
    pub(crate) path: PathBuf,
    lock_path: PathBuf,
    /// A reader's connection ([`Store::read_only`]): it never checkpoints.
    read_only: bool,
    _lock: File,
}

impl Drop for Store {
    /// The writer folds the WAL back into the database as it closes, even while readers remain
    /// open (SQLite does so by itself only when the last connection closes, and a read-only one
    /// cannot): a stopped daemon leaves one whole database file.
    fn drop(&mut self) {
        if !self.read_only {
            let _ = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
        }
    }
}

/// Whether an SQLite error says the file is not a (healthy) database.
fn is_corruption(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt))
}

/// Error mapping while opening: corruption is [`StoreError::Corrupt`], the rest
/// [`StoreError::Open`].
fn open_err(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |e| {
        if is_corruption(&e) {
            StoreError::Corrupt { path: path.to_path_buf(), detail: e.to_string() }
        } else {
            StoreError::Open { path: path.to_path_buf(), source: Box::new(e) }
        }
    }
}

/// Takes the state directory's lock, or says who holds it.
fn take_lock(dir: &Path) -> Result<(File, PathBuf), StoreError> {
    let lock_path = dir.join(LOCK_FILE);
    let io_err = |source| StoreError::LockFile { path: lock_path.clone(), source };
    let file =
        OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&lock_path).map_err(io_err)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(StoreError::Locked { path: lock_path });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io_err(e)),
    }
    // For people: which process holds the directory.
    file.set_len(0).map_err(io_err)?;
    (&file).write_all(format!("{}\n", std::process::id()).as_bytes()).map_err(io_err)?;
    Ok((file, lock_path))
}

impl Store {
    /// Opens (creating if needed) the state directory `dir` and its database `dir/tessera.db`.
    ///
    /// Takes the exclusive lock `dir/tessera.lock` first ([`StoreError::Locked`] if another
    /// store holds it; a killed process's lock is gone with it), then sets WAL journaling,
    /// `synchronous=NORMAL`, foreign keys and a busy timeout, and migrates the schema to the
    /// current version. A file from a newer Tessera is [`StoreError::SchemaTooNew`]; a file that
    /// is not a database, or another program's database, is [`StoreError::Corrupt`]. The
    /// database and lock file are made private (mode 0600).
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir { path: dir.to_path_buf(), source })?;
        let (lock, lock_path) = take_lock(dir)?;
        let path = dir.join(DB_FILE);
        let conn = Connection::open(&path).map_err(open_err(&path))?;
        // Private to the daemon: jobs' commands and environments (secrets included) are in
        // it. SQLite creates the WAL and shared-memory files with the database's mode.
        {
            use std::os::unix::fs::PermissionsExt as _;
            for p in [path.clone(), lock_path.clone()] {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))
                    .map_err(|source| StoreError::Permissions { path: p.clone(), source })?;
            }
        }
        let store = Store { conn, path, lock_path, read_only: false, _lock: lock };
        store.configure()?;
        store.migrate()?;
        Ok(store)
    }

    /// A second, read-only connection to the same database, for answering reads while this
    /// store's owner is busy (WAL lets it read the last committed state without waiting for a
    /// writer). It shares this store's hold on the state directory's lock; writing through it
    /// fails.
    pub fn read_only(&self) -> Result<Store, StoreError> {
        let oe = open_err(&self.path);
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags).map_err(&oe)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(&oe)?;
        let lock =
            self._lock.try_clone().map_err(|source| StoreError::LockFile { path: self.lock_path.clone(), source })?;
        Ok(Store { conn, path: self.path.clone(), lock_path: self.lock_path.clone(), read_only: true, _lock: lock })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The lock file held by this store.
    pub fn lock_path(&self) -> &Path {
        &self.lock_path
    }

    fn configure(&self) -> Result<(), StoreError> {
        let oe = open_err(&self.path);
        self.conn.busy_timeout(BUSY_TIMEOUT).map_err(&oe)?;
        // The first statement that reads the file: a non-database fails here.
        let mode: String = self.conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)).map_err(&oe)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Setup {
                path: self.path.clone(),
                detail: format!("journal_mode=WAL refused (mode is {mode})"),
            });
        }
        self.conn.pragma_update(None, "synchronous", "NORMAL").map_err(&oe)?;
        self.conn.pragma_update(None, "foreign_keys", "ON").map_err(&oe)?;
        let fk: i64 = self.conn.pragma_query_value(None, "foreign_keys", |r| r.get(0)).map_err(&oe)?;
        if fk != 1 {
            return Err(StoreError::Setup { path: self.path.clone(), detail: "foreign_keys=ON refused".to_owned() });
        }
        Ok(())
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let oe = open_err(&self.path);
        let version: i64 = self.conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(&oe)?;
        let app_id: i64 = self.conn.pragma_query_value(None, "application_id", |r| r.get(0)).map_err(&oe)?;
        if app_id != 0 && app_id != APPLICATION_ID {
            return Err(StoreError::Corrupt {
                path: self.path.clone(),
                detail: format!("application_id is {app_id:#x}, not Tessera's {APPLICATION_ID:#x}"),
            });
        }
        if version > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                path: self.path.clone(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if version < 0 {
            return Err(StoreError::Corrupt {
                path: self.path.clone(),
                detail: format!("negative schema version {version}"),
            });
        }
        if version == 0 {
            let objects: i64 = self
                .conn
                .query_row("SELECT count(*) FROM sqlite_schema WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\'", [], |r| {
                    r.get(0)
                })
                .map_err(&oe)?;
            if objects > 0 {
                return Err(StoreError::Corrupt {
                    path: self.path.clone(),
                    detail: format!(
                        "schema version 0 but {objects} tables/indexes exist: another program's \
                         database"
                    ),
                });
            }
        } else if app_id != APPLICATION_ID {
            return Err(StoreError::Corrupt {
                path: self.path.clone(),
                detail: format!("schema version {version} but no Tessera application_id"),
            });
        }
        if version == SCHEMA_VERSION {
            return Ok(());
        }
        if version == 1 {
            // Version 1 kept a rank's flat slot where version 2 reads the rank: a live
            // allocation would be misread (and its job mis-placed) after the upgrade.
            let live: i64 = self
                .conn
                .query_row("SELECT count(*) FROM allocations WHERE released_at IS NULL", [], |r| r.get(0))
                .map_err(&oe)?;
            if live > 0 {
                let jobs: Vec<i64> = self
                    .conn
                    .prepare("SELECT DISTINCT job_id FROM allocations WHERE released_at IS NULL ORDER BY job_id")
                    .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
                    .map_err(&oe)?;
                return Err(StoreError::LiveAllocationsAtUpgrade {
                    path: self.path.clone(),
                    found: version,
                    live: u64::try_from(live).unwrap_or(0),
                    jobs: jobs.into_iter().filter_map(|j| u64::try_from(j).ok()).collect(),
                });
            }
        }
        // A migration may rebuild a table others refer to (SQLite's documented procedure):
        // foreign keys off around it (the pragma is a no-op inside a transaction), checked after.
        self.conn.pragma_update(None, "foreign_keys", "OFF").map_err(&oe)?;
        let result = (|| {
            for (from, sql) in MIGRATIONS.iter().enumerate().skip(usize::try_from(version).unwrap_or(0)) {
                let to = i64::try_from(from).unwrap_or(i64::MAX).saturating_add(1);
                let me = |e| StoreError::Migrate { path: self.path.clone(), version: to, source: Box::new(e) };
                let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate).map_err(&oe)?;
                tx.execute_batch(sql).map_err(me)?;
                let broken: Option<String> =
                    tx.query_row("PRAGMA foreign_key_check", [], |r| r.get::<_, String>(0)).optional().map_err(me)?;
                if let Some(table) = broken {
                    return Err(StoreError::Corrupt {
                        path: self.path.clone(),
                        detail: format!("migrating to version {to}: table {table} refers to rows that do not exist"),
                    });
                }
                tx.pragma_update(None, "application_id", APPLICATION_ID).map_err(me)?;
                tx.pragma_update(None, "user_version", to).map_err(me)?;
                tx.commit().map_err(me)?;
            }
            Ok(())
        })();
        // The migration's own error, if any, is the one to report: turning foreign keys back
        // on only matters when the migration succeeded.
        let restored = self.conn.pragma_update(None, "foreign_keys", "ON").map_err(&oe);
        result.and(restored)
    }

    /// Maps an SQLite error to [`StoreError::Db`] (or [`StoreError::Corrupt`]) with context.
    pub(crate) fn db_err(
        &self,
        table: &'static str,
        action: impl FnOnce() -> String,
    ) -> impl FnOnce(rusqlite::Error) -> StoreError {
        let path = self.path.clone();
        move |e| {
            if is_corruption(&e) {
                StoreError::Corrupt { path, detail: format!("{}: {e}", action()) }
            } else {
                StoreError::Db { path, table, action: action(), source: Box::new(e) }
            }
        }
    }

    /// Begins a write transaction (`BEGIN IMMEDIATE`); dropped without commit, it rolls back.
    pub(crate) fn write_tx(
        &self,
        table: &'static str,
        action: impl FnOnce() -> String,
    ) -> Result<Transaction<'_>, StoreError> {
        Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate).map_err(self.db_err(table, action))
    }

    /// Commits `tx`.
    pub(crate) fn commit(
        &self,
        tx: Transaction<'_>,
        table: &'static str,
        action: impl FnOnce() -> String,
    ) -> Result<(), StoreError> {
        tx.commit().map_err(self.db_err(table, action))
    }

    /// Reads a node metadata value (e.g. the node spec the daemon last ran with).
    pub fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")
            .and_then(|mut st| st.query_row([key], |r| r.get(0)).optional())
            .map_err(self.db_err("meta", || format!("read key {key:?}")))
    }

    /// Writes (inserts or replaces) a node metadata value.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .and_then(|mut st| st.execute([key, value]))
            .map(drop)
            .map_err(self.db_err("meta", || format!("write key {key:?}")))
    }

    /// Runs SQLite's `PRAGMA quick_check` over the whole file (cost grows with its size, so
    /// [`Store::open`] does not): [`StoreError::Corrupt`] with SQLite's findings if damaged.
    pub fn integrity_check(&self) -> Result<(), StoreError> {
        let findings: Vec<String> = self
            .conn
            .prepare("PRAGMA quick_check")
            .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
            .map_err(self.db_err("*", || "run quick_check".to_owned()))?;
        if matches!(findings.as_slice(), [only] if only == "ok") {
            Ok(())
        } else {
            Err(StoreError::Corrupt { path: self.path.clone(), detail: findings.join("; ") })
        }
    }
}
