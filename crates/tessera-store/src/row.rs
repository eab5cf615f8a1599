//! Checked conversions between Rust values and SQLite's signed 64-bit integers, and a row
//! reader that turns every unexpected stored value into [`StoreError::BadRow`] (naming the
//! path, table and row) instead of a panic.

use std::path::Path;
use std::str::FromStr;

use rusqlite::Row;
use serde::de::DeserializeOwned;

use crate::error::StoreError;
use crate::types::JobState;

/// A `u64` argument as an SQLite integer, or [`StoreError::OutOfRange`].
pub(crate) fn to_sql_int(what: &'static str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::OutOfRange { what, value })
}

/// An id as an SQLite key; `None` for ids SQLite can never have handed out.
pub(crate) fn id_key(id: u64) -> Option<i64> {
    i64::try_from(id).ok().filter(|&k| k > 0)
}

/// An id SQLite handed out, as the `u64` the API uses (rowids are positive).
pub(crate) fn id_from_rowid(rowid: i64) -> u64 {
    u64::try_from(rowid).unwrap_or(0)
}

/// The wall clock (`tessera_host::now_ms`) as an SQLite integer.
pub(crate) fn now_ms() -> i64 {
    i64::try_from(tessera_host::now_ms()).unwrap_or(i64::MAX)
}

/// Reads the columns of one row of `table`, whose id is `row_id`.
pub(crate) struct RowReader<'a, 'r> {
    pub(crate) row: &'a Row<'r>,
    pub(crate) path: &'a Path,
    pub(crate) table: &'static str,
    pub(crate) row_id: i64,
}

impl RowReader<'_, '_> {
    fn bad(&self, column: &str, detail: impl std::fmt::Display) -> StoreError {
        StoreError::BadRow {
            path: self.path.to_path_buf(),
            table: self.table,
            row: self.row_id,
            detail: format!("column {column}: {detail}"),
        }
    }

    fn get<T: rusqlite::types::FromSql>(&self, idx: usize, column: &str) -> Result<T, StoreError> {
        self.row.get(idx).map_err(|e| self.bad(column, e))
    }

    pub(crate) fn text(&self, idx: usize, column: &str) -> Result<String, StoreError> {
        self.get(idx, column)
    }

    pub(crate) fn opt_text(&self, idx: usize, column: &str) -> Result<Option<String>, StoreError> {
        self.get(idx, column)
    }

    fn conv<T: TryFrom<i64>>(&self, v: i64, column: &str) -> Result<T, StoreError> {
        T::try_from(v).map_err(|_| self.bad(column, format!("{v} is out of range")))
    }

    /// An integer column converted to `T` (u64, u32, i32, u8, ...), range-checked.
    pub(crate) fn int<T: TryFrom<i64>>(&self, idx: usize, column: &str) -> Result<T, StoreError> {
        let v: i64 = self.get(idx, column)?;
        self.conv(v, column)
    }

    /// A nullable integer column converted to `T`, range-checked.
    pub(crate) fn opt_int<T: TryFrom<i64>>(&self, idx: usize, column: &str) -> Result<Option<T>, StoreError> {
        let v: Option<i64> = self.get(idx, column)?;
        v.map(|v| self.conv(v, column)).transpose()
    }

    pub(crate) fn boolean(&self, idx: usize, column: &str) -> Result<bool, StoreError> {
        match self.get::<i64>(idx, column)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(self.bad(column, format!("{v} is not 0 or 1"))),
        }
    }

    pub(crate) fn state(&self, idx: usize, column: &str) -> Result<JobState, StoreError> {
        let s = self.text(idx, column)?;
        JobState::from_str(&s).map_err(|e| self.bad(column, e))
    }

    pub(crate) fn json<T: DeserializeOwned>(&self, idx: usize, column: &str) -> Result<T, StoreError> {
        let s = self.text(idx, column)?;
        serde_json::from_str(&s).map_err(|e| self.bad(column, format!("invalid JSON: {e}")))
    }
}
